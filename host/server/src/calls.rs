//! One tool call, the same for `/invocations` and MCP: the user's rate, the
//! tool (one the user may not list is unknown to them), the arguments (size,
//! schema), the user's permission (Cedar), a free slot (a short wait, then
//! "busy"), then the runtime; metrics and a log line.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_policy::UserId;
use airlock_credential::Consent;
use airlock_runtime::{CallOutcome, CallReport, InvokeError, RequestOutcome, Runtime};
use airlock_verify::VerifiedUser;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::audit::{Audit, BacklogFullError, Contact, Record, Reservation};
use crate::authz::{Action, Authorization};
use crate::config::ServeLimits;
use crate::request_id::RequestId;
use crate::metrics::Metrics;
use crate::registry::{Registry, Served};

/// Why a call was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AdmissionError {
    /// No such tool.
    UnknownTool(String),
    /// The user may not call it.
    Forbidden(String),
    /// The arguments are too large.
    InputTooLarge { limit_kib: usize },
    /// The arguments do not match the tool's input schema.
    InvalidArguments(Vec<String>),
    /// The user called too often.
    RateLimited { retry_after_secs: u64 },
    /// Every slot is taken.
    Busy,
    /// The audit trail is too far behind to record another call.
    AuditBacklog(BacklogFullError),
}

impl AdmissionError {
    /// A message a model or a person can act on.
    pub(crate) fn message(&self) -> String {
        match self {
            AdmissionError::UnknownTool(name) => {
                format!("there is no tool `{name}`; list the tools to see which there are")
            }
            AdmissionError::Forbidden(name) => format!("you are not allowed to call `{name}`"),
            AdmissionError::InputTooLarge { limit_kib } => {
                format!("the arguments are larger than {limit_kib} KiB")
            }
            AdmissionError::InvalidArguments(errors) => {
                format!(
                    "the arguments do not match the tool's input schema: {}",
                    errors.join("; ")
                )
            }
            AdmissionError::RateLimited { retry_after_secs } => {
                format!("too many calls; retry in {retry_after_secs} s")
            }
            AdmissionError::Busy => "the host is busy; retry in a moment".into(),
            AdmissionError::AuditBacklog(e) => format!("the host is busy: {e}"),
        }
    }
}

/// What a call that ran came to.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The tool's output.
    Output(Value),
    /// The tool failed, or a limit stopped it.
    Failed(InvokeError),
    /// The user must consent at `provider` first.
    Consent {
        provider: String,
        authorization_url: String,
    },
}

pub(crate) struct Calls {
    pub(crate) runtime: Runtime,
    pub(crate) registry: Registry,
    pub(crate) authorization: Authorization,
    pub(crate) metrics: Arc<Metrics>,
    slots: Semaphore,
    size: u32,
    limits: ServeLimits,
    rate: DefaultKeyedRateLimiter<UserId>,
    audit: Audit,
}

impl Calls {
    pub(crate) fn new(
        runtime: Runtime,
        registry: Registry,
        authorization: Authorization,
        metrics: Arc<Metrics>,
        limits: ServeLimits,
        audit: Audit,
    ) -> Calls {
        let per_minute = NonZeroU32::new(limits.calls_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst =
            NonZeroU32::new((limits.calls_per_minute / 4).max(1)).unwrap_or(NonZeroU32::MIN);
        Calls {
            runtime,
            registry,
            authorization,
            metrics,
            slots: Semaphore::new(limits.max_concurrent_calls as usize),
            size: limits.max_concurrent_calls,
            limits,
            rate: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            audit,
        }
    }

    /// Whether every slot is taken.
    pub(crate) fn busy(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// The tools `user` may list.
    pub(crate) fn visible(&self, user: &VerifiedUser) -> Vec<Arc<Served>> {
        self.registry
            .all()
            .into_iter()
            .filter(|s| {
                self.authorization
                    .allows(user, Action::List, &s.entity, None)
            })
            .collect()
    }

    /// Run `tool` for `user` with `arguments`.
    pub(crate) async fn call(
        &self,
        request_id: &RequestId,
        user: &VerifiedUser,
        tool: &str,
        arguments: Value,
    ) -> Result<Answer, AdmissionError> {
        let (served, input) = self
            .admit(user, tool, &arguments)
            .map_err(|r| self.refused(user, tool, r))?;
        // The call's record has its place before the call runs.
        let reservation = self
            .audit
            .reserve()
            .map_err(|e| self.refused(user, tool, AdmissionError::AuditBacklog(e)))?;
        let permit = tokio::time::timeout(
            Duration::from_millis(self.limits.queue_wait_ms),
            self.slots.acquire(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| self.refused(user, tool, AdmissionError::Busy))?;
        self.metrics
            .in_use
            .set(i64::from(self.size) - self.slots.available_permits() as i64);
        let started = Instant::now();
        let report = self
            .runtime
            .invoke_as(&served.tool, Some(user), &input)
            .await;
        drop(permit);
        self.metrics
            .in_use
            .set(i64::from(self.size) - self.slots.available_permits() as i64);
        Ok(self
            .settle(request_id, &served, user, report, started, reservation)
            .await)
    }

    /// The checks before a call takes a slot, in order: the user's rate, the
    /// tool (as the user may see it), the input's size and shape, Cedar.
    /// The tool and the arguments as the tool reads them.
    fn admit(
        &self,
        user: &VerifiedUser,
        tool: &str,
        arguments: &Value,
    ) -> Result<(Arc<Served>, String), AdmissionError> {
        // Every attempt counts against the user's rate, before any work.
        if let Err(wait) = self.rate.check_key(user.id()) {
            let retry = wait.wait_time_from(governor::clock::Clock::now(self.rate.clock()));
            return Err(AdmissionError::RateLimited {
                retry_after_secs: retry.as_secs().max(1),
            });
        }
        // A tool the user may not even see is, to them, no tool at all: 403
        // would tell who may not list it that it exists.
        let served = self
            .registry
            .get(tool)
            .filter(|s| {
                self.authorization
                    .allows(user, Action::List, &s.entity, None)
            })
            .ok_or_else(|| AdmissionError::UnknownTool(tool.to_string()))?;
        let input = serde_json::to_string(arguments).unwrap_or_default();
        if input.len() > self.limits.max_input_kib << 10 {
            return Err(AdmissionError::InputTooLarge {
                limit_kib: self.limits.max_input_kib,
            });
        }
        let errors = served.argument_errors(arguments);
        if !errors.is_empty() {
            return Err(AdmissionError::InvalidArguments(errors));
        }
        if !self
            .authorization
            .allows(user, Action::Call, &served.entity, Some(arguments))
        {
            return Err(AdmissionError::Forbidden(tool.to_string()));
        }
        Ok((served, input))
    }

    /// Count and log a refused call; the refusal, to answer with.
    fn refused(&self, user: &VerifiedUser, tool: &str, r: AdmissionError) -> AdmissionError {
        let outcome = match &r {
            AdmissionError::UnknownTool(_) => "unknown_tool",
            AdmissionError::Forbidden(_) => "forbidden",
            AdmissionError::InputTooLarge { .. } | AdmissionError::InvalidArguments(_) => "invalid_arguments",
            AdmissionError::RateLimited { .. } => "rate_limited",
            AdmissionError::Busy => "busy",
            AdmissionError::AuditBacklog(_) => "audit_backlog",
        };
        // A name no tool has is not a label: callers could make up any number.
        let label = if matches!(r, AdmissionError::UnknownTool(_)) {
            "-"
        } else {
            tool
        };
        self.metrics
            .calls
            .with_label_values(&[label, outcome])
            .inc();
        tracing::info!(tool = label, user = %user.id(), outcome, "call refused");
        r
    }

    /// A finished call counted, logged and recorded; the answer it gives,
    /// once its record is written.
    async fn settle(
        &self,
        request_id: &RequestId,
        served: &Served,
        user: &VerifiedUser,
        report: CallReport,
        started: Instant,
        reservation: Reservation,
    ) -> Answer {
        let outcome = self.count(served, &report, started);
        let records = self.record(request_id, served, user, &report, outcome, started);
        reservation.commit(records).await;
        match report.outcome {
            CallOutcome::Output(output) => Answer::Output(output),
            CallOutcome::ConsentRequired(c) => Answer::Consent {
                provider: c.provider,
                authorization_url: c.authorization_url,
            },
            CallOutcome::Failed(e) => Answer::Failed(e),
        }
    }

    /// A finished call's metrics; its outcome, as a label.
    fn count(&self, served: &Served, report: &CallReport, started: Instant) -> &'static str {
        let tool = served.name();
        for r in &report.requests {
            if let RequestOutcome::Sent {
                credential: Some(provider),
                ..
            } = &r.outcome
            {
                self.metrics.brokered.with_label_values(&[provider]).inc();
            }
        }
        let outcome = match &report.outcome {
            CallOutcome::Output(_) => "ok",
            CallOutcome::ConsentRequired(c) => {
                self.metrics
                    .consents
                    .with_label_values(&[tool, &c.provider])
                    .inc();
                "authorization_required"
            }
            CallOutcome::Failed(InvokeError::Busy) => "busy",
            CallOutcome::Failed(InvokeError::CredentialEchoed { .. }) => "credential_echoed",
            CallOutcome::Failed(_) => "failed",
        };
        for r in &report.redactions {
            self.metrics
                .redactions
                .with_label_values(&[tool, r.host.as_deref().unwrap_or("-")])
                .inc_by(r.count);
        }
        let handles = served.metrics.get_or_init(|| self.metrics.for_tool(tool));
        match handles.calls(&self.metrics, outcome) {
            Some(counter) => counter.inc(),
            None => self.metrics.calls.with_label_values(&[tool, outcome]).inc(),
        }
        handles.duration.observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// A finished call's log line; its audit records.
    fn record(
        &self,
        request_id: &RequestId,
        served: &Served,
        user: &VerifiedUser,
        report: &CallReport,
        outcome: &'static str,
        started: Instant,
    ) -> Vec<Record> {
        let tool = served.name();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            tool,
            user = %user.id(),
            outcome,
            elapsed_ms,
            requests = report.requests.len(),
            "call"
        );
        let mut records = vec![Record::Call {
            request_id: request_id.id.clone(),
            client_request_id: request_id.client.clone(),
            user: user.id().to_string(),
            tool: tool.to_string(),
            digest: served.digest.clone(),
            outcome,
            duration_ms: elapsed_ms,
            contacted: contacts(&report.requests),
            redactions: report.redactions.clone(),
        }];
        if let CallOutcome::ConsentRequired(Consent { provider, .. }) = &report.outcome {
            records.push(Record::Consent {
                request_id: request_id.id.clone(),
                client_request_id: request_id.client.clone(),
                user: user.id().to_string(),
                tool: tool.to_string(),
                provider: provider.clone(),
            });
        }
        records
    }
}

/// What the audit trail keeps of a request: the origin (never the path or
/// query, which may carry data), the status, the provider whose token went.
/// Hosts a call contacted, each way once, at most [`MAX_CONTACTS`]: an
/// audit record stays well under what a log line may hold.
const MAX_CONTACTS: usize = 16;

fn contacts(requests: &[airlock_runtime::RequestRecord]) -> Vec<Contact> {
    let mut out: Vec<Contact> = Vec::new();
    for c in requests.iter().map(contact) {
        if !out.contains(&c) && out.len() < MAX_CONTACTS {
            out.push(c);
        }
    }
    out
}

fn contact(r: &airlock_runtime::RequestRecord) -> Contact {
    let host = match r.url.find("://") {
        Some(i) => {
            let rest = &r.url[i + 3..];
            let end = rest.find('/').unwrap_or(rest.len());
            r.url[..i + 3 + end].to_string()
        }
        None => r.url.clone(),
    };
    let (status, provider, refused) = match &r.outcome {
        RequestOutcome::Sent {
            status, credential, ..
        } => (Some(*status), credential.clone(), None),
        RequestOutcome::AuthorizationRequired { provider } => (
            None,
            Some(provider.clone()),
            Some("authorization_required".to_string()),
        ),
        RequestOutcome::Denied { reason } => (
            None,
            None,
            Some(format!("denied: {}", reason.chars().take(200).collect::<String>())),
        ),
        RequestOutcome::Failed { .. } => (None, None, Some("failed".to_string())),
    };
    Contact {
        host,
        status,
        provider,
        refused,
    }
}
