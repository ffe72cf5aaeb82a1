//! Per-call state: the WASI context (granting nothing, stdio captured), the
//! HTTP hook, the memory budget, the log buffer, and how a call's ending is
//! classified.

use std::sync::{Arc, Mutex};

use airlock_credential::Consent;
use airlock_policy::{Limits, Permissions};
use wasmtime::Trap;
use wasmtime::component::{ResourceTable, ResourceTableError};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::{FieldMapError, WasiHttpCtx};

use crate::ToolError;
use crate::budget::{Budget, Limiter};
use crate::capability::log::LogBuffer;
use crate::capability::stdio::Captured;
use crate::outbound::{
    MAX_REFUSED, OnBehalf, Outbound, TooManyRefusalsError, Requests, Shared, Transport,
};
use crate::report::{CallOutcome, CallReport, HostResource, InvokeError, LogLevel, LogSource, ToolFailure};
use crate::scan::{Place, RedactorCache, EchoWatch};

/// Handles a call may hold at once. A tool with its 16 requests in flight
/// needs about 200; each handle may own a header map of `MAX_FIELDS_BYTES`.
pub(crate) const MAX_HANDLES: usize = 1024;
/// Bytes one header map may hold (names and values, roughly as in memory):
/// well above what proxies accept on the wire (8 KiB).
pub(crate) const MAX_FIELDS_BYTES: usize = 16 * 1024;

/// A call's store data: what its host functions work on.
pub(crate) struct CallState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) outbound: Outbound,
    pub(crate) limiter: Limiter,
    budget: Arc<Budget>,
    logs: LogBuffer,
    stdout: Captured,
    stderr: Captured,
    records: Arc<Mutex<Requests>>,
    consent: Arc<Mutex<Option<Consent>>>,
    tool: String,
    /// The credentials the call sent, and what was redacted.
    echo_watch: Arc<EchoWatch>,
}

impl CallState {
    pub(crate) fn new(
        permissions: Arc<Permissions>,
        tool: &str,
        on_behalf: OnBehalf,
        transport: Arc<Transport>,
        redactors: Arc<RedactorCache>,
    ) -> CallState {
        let echo_watch = EchoWatch::new(redactors, permissions.echoed_tokens);
        let records = Arc::new(Mutex::new(Requests::default()));
        let consent = Arc::new(Mutex::new(None));
        let budget = Budget::new((permissions.limits.memory_mib as usize) << 20);
        let (stdout, stderr) = (Captured::new(), Captured::new());
        // No args, no env, no preopens, no sockets: the builder grants nothing
        // by default. Output is kept, bounded, in the call's log.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        CallState {
            wasi,
            table,
            http,
            outbound: Outbound::new(
                permissions,
                Arc::from(tool),
                on_behalf,
                transport,
                Shared {
                    records: records.clone(),
                    consent: consent.clone(),
                    budget: budget.clone(),
                    echo_watch: echo_watch.clone(),
                },
            ),
            limiter: Limiter {
                budget: budget.clone(),
            },
            budget,
            logs: LogBuffer::default(),
            stdout,
            stderr,
            records,
            consent,
            tool: tool.to_string(),
            echo_watch,
        }
    }

    /// The call's end, when its guest has earned one between host calls:
    /// checked at each epoch tick.
    pub(crate) fn must_end(&self) -> Option<TooManyRefusalsError> {
        self.outbound
            .refused_too_often()
            .then_some(TooManyRefusalsError(MAX_REFUSED))
    }

    /// The call's report, once the instance is done.
    pub(crate) fn finish(mut self, outcome: Result<serde_json::Value, InvokeError>) -> CallReport {
        for (source, level) in [
            (LogSource::Stdout, LogLevel::Info),
            (LogSource::Stderr, LogLevel::Warn),
        ] {
            let captured = match source {
                LogSource::Stdout => &self.stdout,
                _ => &self.stderr,
            };
            let (text, dropped) = captured.take();
            for line in text.lines() {
                self.log_line(level, source, line.to_string());
            }
            self.logs.dropped += dropped;
        }
        let mut outcome = outcome;
        if let Some(host) = self.echo_watch.ended_by() {
            outcome = Err(InvokeError::CredentialEchoed { host });
        }
        let (requests, requests_dropped) = {
            let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut r.kept), r.dropped)
        };
        let consent = self
            .consent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Whatever the tool made of its held-back request, the call's outcome
        // is the consent the user owes.
        let outcome = match (consent, outcome) {
            (Some(c), _) => CallOutcome::ConsentRequired(c),
            (None, Ok(v)) => CallOutcome::Output(v),
            (None, Err(e)) => CallOutcome::Failed(e),
        };
        CallReport {
            tool: self.tool,
            user: None,
            outcome,
            logs: self.logs.lines,
            logs_dropped: self.logs.dropped,
            requests,
            requests_dropped,
            elapsed: std::time::Duration::ZERO,
            redactions: self.echo_watch.redactions(),
        }
    }
}

impl CallState {
    /// Keep a line the tool wrote, scanned for credentials before anything
    /// (the debug log included) sees it.
    pub(crate) fn log_line(&mut self, level: LogLevel, source: LogSource, mut message: String) {
        if self.echo_watch.sent_any() {
            self.echo_watch.text(Place::Log, &mut message);
        }
        self.logs.push(&self.tool, level, source, message);
    }
}

type CallResult = Result<wasmtime::Result<Result<String, ToolError>>, tokio::time::error::Elapsed>;

/// Turn how a call ended into its outcome, naming the limit that stopped it.
pub(crate) fn classify(
    result: CallResult,
    state: &CallState,
    limits: Limits,
) -> Result<serde_json::Value, InvokeError> {
    let returned = match result {
        Err(_) => {
            return Err(InvokeError::Timeout {
                timeout_ms: limits.timeout_ms,
            });
        }
        Ok(Err(e)) => return Err(classify_error(&e, state, limits)),
        Ok(Ok(returned)) => returned,
    };
    // What the tool returns leaves the host: no credential in it, however
    // the tool came by one (two halves from two answers, put together).
    let scan = |mut text: String| {
        if state.echo_watch.sent_any() {
            state.echo_watch.text(Place::Output, &mut text);
        }
        text
    };
    let output = scan(returned.map_err(|e| InvokeError::Tool {
        error: match e {
            ToolError::InvalidInput(m) => ToolFailure::InvalidInput(scan(m)),
            ToolError::Upstream(m) => ToolFailure::Upstream(scan(m)),
            ToolError::Failed(m) => ToolFailure::Failed(scan(m)),
        },
    })?);
    let limit = (limits.output_kib as usize) << 10;
    if output.len() > limit {
        return Err(InvokeError::OutputTooLarge {
            size: output.len(),
            limit,
        });
    }
    serde_json::from_str(&output).map_err(|e| InvokeError::OutputNotJson {
        message: e.to_string(),
    })
}

fn classify_error(e: &wasmtime::Error, state: &CallState, limits: Limits) -> InvokeError {
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return InvokeError::Exited { code: exit.0 };
    }
    if state.budget.was_hit() {
        return InvokeError::MemoryLimit {
            memory_mib: limits.memory_mib,
        };
    }
    if let Some(ResourceTableError::Full) = e.downcast_ref::<ResourceTableError>() {
        return InvokeError::ResourceLimit {
            resource: HostResource::Handles,
            limit: MAX_HANDLES as u64,
        };
    }
    if let Some(refused) = e.downcast_ref::<TooManyRefusalsError>() {
        return InvokeError::ResourceLimit {
            resource: HostResource::RefusedRequests,
            limit: refused.0,
        };
    }
    if let Some(FieldMapError::TotalSizeTooBig) = e.downcast_ref::<FieldMapError>() {
        return InvokeError::ResourceLimit {
            resource: HostResource::HeaderBytes,
            limit: MAX_FIELDS_BYTES as u64,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => InvokeError::Timeout {
            timeout_ms: limits.timeout_ms,
        },
        Some(Trap::StackOverflow) => InvokeError::StackOverflow,
        Some(trap) => InvokeError::Trap {
            message: trap.to_string(),
        },
        // wasmtime's own type for a full instance pool, wherever in the chain.
        None if e.chain().any(|c| {
            c.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
        }) =>
        {
            InvokeError::Busy
        }
        None => InvokeError::Trap {
            message: format!("{e:#}"),
        },
    }
}
