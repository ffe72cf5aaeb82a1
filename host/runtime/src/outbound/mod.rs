//! The outbound HTTP hook: every request a tool sends passes here, in three
//! steps: the pure [`check`](check::check) (may it leave, where to, with
//! which grant), the credential step (the user's token from the token
//! source, or the consent they owe), and the [`Transport`].
//!
//! The token is added to the request the host sends; the guest's own request
//! object never holds it. A credentialed request's body is held (charged to
//! the call's memory budget) so an upstream 401 can be answered by one resend
//! with a fresh token, or end in consent when the token source has none.

mod check;
mod transport;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_credential::{Consent, Credential, TokenSource};
use airlock_policy::Permissions;
use airlock_verify::VerifiedUser;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, HOST, IF_RANGE, PROXY_AUTHORIZATION, RANGE,
    TRANSFER_ENCODING,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

use crate::budget::Budget;
use crate::report::{RequestOutcome, RequestRecord};
use crate::scan::{Place, RedactingBody, EchoWatch};
use check::{Context, DeniedError, Plan};
pub(crate) use transport::Transport;
use transport::TransportError;

const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest body a credentialed request may have: it is held for a resend.
const MAX_HELD_BODY: usize = 1 << 20;
/// Writes to an outgoing body are buffered one chunk at a time, at most this big.
const BODY_CHUNK: usize = 64 * 1024;

/// Who a call runs for and where their tokens come from.
#[derive(Clone, Default)]
pub(crate) struct OnBehalf {
    pub(crate) user: Option<VerifiedUser>,
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
}

/// The per-call hook state.
pub(crate) struct Outbound {
    permissions: Arc<Permissions>,
    /// The tool's name: whose consent a token must come from.
    tool: Arc<str>,
    records: Arc<Mutex<Requests>>,
    on_behalf: OnBehalf,
    consent: Arc<Mutex<Option<Consent>>>,
    transport: Arc<Transport>,
    budget: Arc<Budget>,
    echo_watch: Arc<EchoWatch>,
    sent: u64,
    /// Requests the policy refused so far.
    refused: u64,
}

/// What a call shares with its hook: where records, consent and
/// redactions go, and its memory budget.
pub(crate) struct Shared {
    pub(crate) records: Arc<Mutex<Requests>>,
    pub(crate) consent: Arc<Mutex<Option<Consent>>>,
    pub(crate) budget: Arc<Budget>,
    pub(crate) echo_watch: Arc<EchoWatch>,
}

impl Outbound {
    pub(crate) fn new(
        permissions: Arc<Permissions>,
        tool: Arc<str>,
        on_behalf: OnBehalf,
        transport: Arc<Transport>,
        shared: Shared,
    ) -> Outbound {
        Outbound {
            permissions,
            tool,
            records: shared.records,
            on_behalf,
            consent: shared.consent,
            transport,
            budget: shared.budget,
            echo_watch: shared.echo_watch,
            sent: 0,
            refused: 0,
        }
    }
}

fn describe(request: &Request<WasiBody>) -> (String, String) {
    let uri = request.uri();
    let url = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or(""),
        // Host and port only: `user:password@` never reaches a report or a log.
        uri.authority()
            .map(|a| a.as_str().rsplit('@').next().unwrap_or(""))
            .unwrap_or(""),
        uri.path()
    );
    (request.method().to_string(), url)
}

/// Request records kept per call; past these, requests are counted only.
pub(crate) const MAX_RECORDS: usize = 64;
/// The longest URL or reason a record keeps, in bytes.
const MAX_RECORD_TEXT: usize = 512;
/// Requests the policy may refuse in one call before the call ends: a guest
/// looping on refused requests only burns the host's time.
pub(crate) const MAX_REFUSED: u64 = 64;

/// A call's request records: the first [`MAX_RECORDS`], and how many more.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub(crate) kept: Vec<RequestRecord>,
    pub(crate) dropped: u64,
}

/// A call ended for asking too often for what the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("more than {0} requests refused by policy")]
pub(crate) struct TooManyRefusalsError(pub(crate) u64);

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push('…');
    }
    text
}

/// The call's records, one per request.
#[derive(Clone)]
struct Recorder {
    records: Arc<Mutex<Requests>>,
    what: (String, String),
}

impl Recorder {
    fn record(&self, outcome: RequestOutcome) {
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if r.kept.len() >= MAX_RECORDS {
            r.dropped += 1;
            return;
        }
        let outcome = match outcome {
            RequestOutcome::Denied { reason } => RequestOutcome::Denied {
                reason: cut(reason, MAX_RECORD_TEXT),
            },
            other => other,
        };
        r.kept.push(RequestRecord {
            method: self.what.0.clone(),
            url: cut(self.what.1.clone(), MAX_RECORD_TEXT),
            outcome,
        });
    }

    fn denied(&self, reason: String) -> HttpError {
        tracing::info!(target: "airlock::outbound", %reason, "request denied");
        self.record(RequestOutcome::Denied { reason });
        HttpError::HttpRequestDenied
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl Outbound {
    /// Whether the policy refused more requests than a call may ask for.
    pub(crate) fn refused_too_often(&self) -> bool {
        self.refused > MAX_REFUSED
    }
}

impl WasiHttpHooks for Outbound {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(|name| {
            name == AUTHORIZATION
                || name == PROXY_AUTHORIZATION
                || DEFAULT_FORBIDDEN_HEADERS.contains(name)
        })
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }

    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let recorder = Recorder {
            records: self.records.clone(),
            what: describe(&request),
        };
        let cx = Context {
            permissions: &self.permissions,
            sent: self.sent,
            has_user: self.on_behalf.user.is_some(),
            has_tokens: self.on_behalf.tokens.is_some(),
        };
        let checked = check::check(request.method(), request.uri(), request.headers(), cx);
        self.sent += 1;
        if checked.is_err() {
            self.refused += 1;
            if self.refused > MAX_REFUSED {
                // Past the cap nothing more is recorded, and the call ends at
                // the next epoch tick (`refused_too_often`): a guest looping on
                // refusals would hold its slot to the deadline and grow its records.
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        }
        let plan = match checked {
            Ok(plan) => plan,
            Err(DeniedError::Policy(reason)) => {
                let e = recorder.denied(reason);
                return Box::new(async { Err(e) });
            }
            Err(d @ DeniedError::Address(_)) => {
                recorder.denied(d.reason().to_string());
                return Box::new(async { Err(HttpError::DestinationIpProhibited) });
            }
        };
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(FIRST_BYTE_TIMEOUT)
            .min(FIRST_BYTE_TIMEOUT);
        let send = Sending {
            permissions: self.permissions.clone(),
            tool: self.tool.clone(),
            transport: self.transport.clone(),
            plan,
            first_byte,
        };
        let on_behalf = self.on_behalf.clone();
        let consent = self.consent.clone();
        let budget = self.budget.clone();
        let echo_watch = self.echo_watch.clone();
        Box::new(async move {
            let result = match send.plan.grant {
                None => send.bare(request, &recorder).await,
                Some(grant) => {
                    let on = Credentialed {
                        on_behalf: &on_behalf,
                        budget: &budget,
                        consent: &consent,
                        echo_watch: &echo_watch,
                    };
                    send.credentialed(request, grant, on, &recorder).await
                }
            };
            result.map(|response| {
                let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                    Box::new(async { Ok(()) });
                (response, done)
            })
        })
    }
}

/// What a credentialed request needs beside itself.
struct Credentialed<'a> {
    on_behalf: &'a OnBehalf,
    budget: &'a Budget,
    consent: &'a Mutex<Option<Consent>>,
    echo_watch: &'a Arc<EchoWatch>,
}

/// One allowed request on its way.
struct Sending {
    tool: Arc<str>,
    permissions: Arc<Permissions>,
    transport: Arc<Transport>,
    plan: Plan,
    first_byte: Duration,
}

impl Sending {
    fn routed_to(&self) -> Option<String> {
        self.plan.routed.then(|| self.plan.destination.to_string())
    }

    async fn transmit(
        &self,
        mut request: Request<WasiBody>,
    ) -> Result<Response<WasiBody>, TransportError> {
        if self.plan.routed {
            let host = HeaderValue::from_str(&self.plan.destination.authority())
                .map_err(|_| TransportError::Failed(HttpError::HttpRequestUriInvalid))?;
            request.headers_mut().insert(HOST, host);
        }
        self.transport
            .send(
                &self.plan.destination,
                self.permissions.allow_private_addresses,
                request,
                self.first_byte,
            )
            .await
    }

    fn conclude(
        &self,
        result: Result<Response<WasiBody>, TransportError>,
        credential: Option<String>,
        retried: bool,
        recorder: &Recorder,
    ) -> Result<Response<WasiBody>, HttpError> {
        recorder.record(match &result {
            Ok(response) => RequestOutcome::Sent {
                status: response.status().as_u16(),
                routed_to: self.routed_to(),
                credential,
                retried,
            },
            Err(TransportError::Prohibited(reason)) => RequestOutcome::Denied {
                reason: reason.clone(),
            },
            Err(TransportError::Failed(e)) => RequestOutcome::Failed {
                error: format!("{e:?}"),
            },
        });
        result.map_err(TransportError::into_error)
    }

    async fn bare(
        &self,
        request: Request<WasiBody>,
        recorder: &Recorder,
    ) -> Result<Response<WasiBody>, HttpError> {
        let result = self.transmit(request).await;
        self.conclude(result, None, false, recorder)
    }

    /// The credential step: the user's token on the request the host sends,
    /// one resend after a 401, or the consent the user owes.
    async fn credentialed(
        &self,
        request: Request<WasiBody>,
        grant: usize,
        on: Credentialed<'_>,
        recorder: &Recorder,
    ) -> Result<Response<WasiBody>, HttpError> {
        let Credentialed {
            on_behalf,
            budget,
            consent,
            echo_watch,
        } = on;
        let host = request.uri().host().unwrap_or_default().to_string();
        let grant = &self.permissions.grants.oauth[grant];
        let provider = grant.provider.to_string();
        let (Some(tokens), Some(user)) = (&on_behalf.tokens, &on_behalf.user) else {
            return Err(recorder.denied("no token source or user for a credentialed request".into()));
        };
        let hold = |c: Consent| {
            recorder.record(RequestOutcome::AuthorizationRequired {
                provider: provider.clone(),
            });
            consent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_or_insert(c);
            HttpError::HttpRequestDenied
        };
        let bearer = match tokens.bearer(&self.tool, user, grant).await {
            Ok(Credential::Bearer(value)) => value,
            Ok(Credential::Consent(c)) => return Err(hold(c)),
            Err(e) => {
                return Err(recorder.denied(format!("no credential for provider `{provider}`: {e}")));
            }
        };
        let (parts, body) = request.into_parts();
        let (body, _held) = hold_body(body, budget, recorder).await?;
        let build = |value: &HeaderValue| {
            let mut r = Request::from_parts(parts.clone(), full(body.clone()));
            r.headers_mut().insert(AUTHORIZATION, value.clone());
            // Only a body as sent can be scanned for an echoed token, and
            // only whole: a range could return it in pieces shorter than any pattern.
            r.headers_mut()
                .insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
            r.headers_mut().remove(RANGE);
            r.headers_mut().remove(IF_RANGE);
            r
        };
        let mut sent = vec![bearer.clone()];
        let mut result = self.transmit(build(&bearer)).await;
        let mut retried = false;
        if matches!(&result, Ok(r) if r.status() == StatusCode::UNAUTHORIZED) {
            match tokens.rejected(&self.tool, user, grant, &bearer).await {
                Ok(Credential::Bearer(value)) => {
                    retried = true;
                    result = self.transmit(build(&value)).await;
                    sent.push(value);
                }
                // The grant is gone (revoked, unrefreshable): consent again.
                Ok(Credential::Consent(c)) => return Err(hold(c)),
                // The tool sees the 401.
                Err(e) => {
                    tracing::info!(target: "airlock::outbound", %provider, "no token after a 401: {e}");
                }
            }
        }
        let response = self.conclude(result, Some(provider), retried, recorder)?;
        shield(response, &sent, echo_watch, &host)
    }
}

/// The response to a credentialed request as the guest may read it: every
/// echo of the credentials it went out with overwritten, in its headers now
/// and in its body as it streams.
fn shield(
    mut response: Response<WasiBody>,
    sent: &[HeaderValue],
    echo_watch: &Arc<EchoWatch>,
    host: &str,
) -> Result<Response<WasiBody>, HttpError> {
    let values: Vec<&HeaderValue> = sent.iter().collect();
    let redactor = echo_watch.redactor(&values);
    // A coded body cannot be scanned: refused, though `identity` was asked
    // for. Every coding of every line counts, and transfer codings too.
    let codings = |name| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty() && c != "identity")
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let coded = codings(CONTENT_ENCODING)
        .into_iter()
        .chain(
            codings(TRANSFER_ENCODING)
                .into_iter()
                .filter(|c| c != "chunked"),
        )
        .next();
    if let Some(coding) = coded {
        tracing::warn!(target: "airlock::scan", host, %coding, "a credentialed response was encoded; refused unread");
        return Err(HttpError::HttpResponseContentCoding(Some(coding)));
    }
    // Part of a body (the request asked for no range) could hold part of a token.
    if response.status() == StatusCode::PARTIAL_CONTENT {
        tracing::warn!(target: "airlock::scan", host, "a credentialed response was partial; refused unread");
        return Err(HttpError::HttpProtocolError);
    }
    if echo_watch.headers(&redactor, host, Place::Header, response.headers_mut()) {
        return Err(HttpError::InternalError(Some(format!(
            "the response from {host} echoed the credential; the operator's policy ends the call"
        ))));
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        RedactingBody::wrap(body, redactor, echo_watch.clone(), host.to_string()),
    ))
}

/// Bytes of a held body, charged to the call's budget until dropped.
struct Held<'a> {
    budget: &'a Budget,
    bytes: usize,
}

/// A credentialed request's body, held in memory and charged to the call,
/// so that a 401 can be answered by one resend.
async fn hold_body<'a>(
    body: WasiBody,
    budget: &'a Budget,
    recorder: &Recorder,
) -> Result<(Bytes, Held<'a>), HttpError> {
    let body = match Limited::new(body, MAX_HELD_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            recorder.denied(format!(
                "the body of a credentialed request is over {} KiB, or failed",
                MAX_HELD_BODY >> 10
            ));
            return Err(HttpError::HttpRequestBodySize(Some(MAX_HELD_BODY as u64)));
        }
    };
    match Held::take(budget, body.len()) {
        Some(held) => Ok((body, held)),
        None => {
            recorder.denied(format!(
                "holding the request's {} byte body would exceed the call's memory limit",
                body.len()
            ));
            Err(HttpError::HttpRequestBodySize(Some(body.len() as u64)))
        }
    }
}

impl<'a> Held<'a> {
    fn take(budget: &'a Budget, bytes: usize) -> Option<Held<'a>> {
        budget.reserve(bytes).then_some(Held { budget, bytes })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

fn full(body: Bytes) -> WasiBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}
