//! What a load or a call comes to: typed refusals, typed outcomes, and the
//! call's trail (logs, outgoing requests).

use std::time::Duration;

use airlock_credential::Consent;
use airlock_manifest::ManifestError;
use airlock_policy::{PolicyError, UserId};
use airlock_scan::Encoding;
use serde::Serialize;

/// Why a tool was not accepted. Nothing of a refused tool is kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The `.wasm` or its manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The grants do not pass the operator's policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The component imports something its grants do not allow.
    #[error("tool `{tool}` has imports that are not granted: {}", describe_refused(.refused))]
    Import {
        /// The tool.
        tool: String,
        /// Each refused import and why.
        refused: Vec<RefusedImport>,
    },
    /// Compilation or linking failed.
    #[error("tool `{tool}` could not be compiled: {message}")]
    Compile {
        /// The tool.
        tool: String,
        /// wasmtime's message.
        message: String,
    },
}

/// Why an import is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedImport {
    /// The import, e.g. `wasi:filesystem/preopens@0.2.6`.
    pub import: String,
    /// Why, and what to do instead.
    pub reason: &'static str,
}

fn describe_refused(refused: &[RefusedImport]) -> String {
    refused
        .iter()
        .map(|r| format!("`{}` ({})", r.import, r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A host-side resource a call holds, each capped per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostResource {
    /// Handles in the call's resource table (requests, responses, streams,
    /// header maps, pollables).
    Handles,
    /// Bytes in one header map.
    HeaderBytes,
    /// Requests the policy refused in one call.
    RefusedRequests,
}

impl std::fmt::Display for HostResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostResource::Handles => "open handles (requests, header maps, streams)",
            HostResource::HeaderBytes => "bytes in one header map",
            HostResource::RefusedRequests => "requests refused by policy",
        })
    }
}

/// Why a call did not produce output. Each variant names the limit or fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum InvokeError {
    /// The input is not JSON.
    #[error("the input is not valid JSON: {message}")]
    InputNotJson {
        /// The parser's message.
        message: String,
    },
    /// The tool reported an error.
    #[error("the tool failed: {error}")]
    Tool {
        /// The tool's error.
        error: ToolFailure,
    },
    /// The wall-clock deadline passed.
    #[error("the call ran past its deadline of {timeout_ms} ms and was stopped")]
    Timeout {
        /// The deadline.
        timeout_ms: u64,
    },
    /// The tool's linear memories and tables together, with the request
    /// bodies the host holds for it, grew past its cap.
    #[error("the tool exceeded its memory limit of {memory_mib} MiB and was stopped")]
    MemoryLimit {
        /// The cap.
        memory_mib: u64,
    },
    /// The tool held more of a host resource than one call may.
    #[error("the tool exceeded the host's limit of {limit} {resource} per call and was stopped")]
    ResourceLimit {
        /// Which resource.
        resource: HostResource,
        /// The cap.
        limit: u64,
    },
    /// The wasm stack overflowed (runaway recursion).
    #[error("the tool overflowed its stack (runaway recursion) and was stopped")]
    StackOverflow,
    /// The output is over the cap.
    #[error("the tool's output is {size} bytes, over its limit of {limit} bytes")]
    OutputTooLarge {
        /// Bytes returned.
        size: usize,
        /// The cap in bytes.
        limit: usize,
    },
    /// The output is not JSON.
    #[error("the tool's output is not valid JSON: {message}")]
    OutputNotJson {
        /// The parser's message.
        message: String,
    },
    /// The guest trapped (a panic, an abort, or a wasm fault).
    #[error("the tool crashed: {message}")]
    Trap {
        /// What trapped.
        message: String,
    },
    /// The guest called `exit` instead of returning (what a standard
    /// toolchain's `std::process::exit` or `sys.exit` does).
    #[error("the tool exited with status {code} instead of returning a result")]
    Exited {
        /// The exit status.
        code: i32,
    },
    /// All instance slots are in use.
    #[error("the host is at its limit of concurrent calls; retry shortly")]
    Busy,
    /// An upstream echoed the credential the host sent it, and the
    /// operator's policy (`echoed_tokens = "fail"`) ends such calls. The
    /// tool never read it.
    #[error(
        "the response from {host} echoed the credential the host sent; the operator's policy ends the call (the tool did not see it)"
    )]
    CredentialEchoed {
        /// The host whose response held it.
        host: String,
    },
}

/// The error a tool returned, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum ToolFailure {
    /// See the WIT `tool-error`.
    InvalidInput(String),
    /// See the WIT `tool-error`.
    Upstream(String),
    /// See the WIT `tool-error`.
    Failed(String),
}

impl std::fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolFailure::InvalidInput(m) => write!(f, "invalid input: {m}"),
            ToolFailure::Upstream(m) => write!(f, "upstream error: {m}"),
            ToolFailure::Failed(m) => f.write_str(m),
        }
    }
}

/// One call's result and its trail: logs and outgoing requests.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    /// The tool's name.
    pub tool: String,
    /// The user the call ran for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// The JSON output, the consent the user owes first, or why there is neither.
    pub outcome: CallOutcome,
    /// Lines the tool logged, and what it wrote to stdout and stderr (capped).
    pub logs: Vec<LogLine>,
    /// Lines (or output bytes) past the caps, dropped.
    #[serde(skip_serializing_if = "is_zero")]
    pub logs_dropped: u64,
    /// Outgoing requests and what became of each (the first ones, capped).
    pub requests: Vec<RequestRecord>,
    /// Requests past the cap of records, counted only.
    #[serde(skip_serializing_if = "is_zero")]
    pub requests_dropped: u64,
    /// Wall-clock time of the call.
    pub elapsed: Duration,
    /// Credentials an upstream echoed (or the tool put in its output or
    /// logs), overwritten before anyone read them: where, how, how often.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redactions: Vec<Redaction>,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// The tool's JSON output.
    Output(serde_json::Value),
    /// The user must consent at the provider before the tool can act for
    /// them; after consent (and session binding), call again. The session
    /// stays host-side: it is not serialized.
    ConsentRequired(Consent),
    /// Why there is no output.
    Failed(InvokeError),
}

impl CallOutcome {
    /// The output, if the tool gave one.
    pub fn output(&self) -> Option<&serde_json::Value> {
        match self {
            CallOutcome::Output(v) => Some(v),
            _ => None,
        }
    }

    /// Why the call failed, if it did.
    pub fn failure(&self) -> Option<&InvokeError> {
        match self {
            CallOutcome::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The consent the user owes, if the call is waiting for one.
    pub fn consent(&self) -> Option<&Consent> {
        match self {
            CallOutcome::ConsentRequired(c) => Some(c),
            _ => None,
        }
    }

    /// The output; panics, naming how the call ended instead.
    pub fn unwrap_output(self) -> serde_json::Value {
        match self {
            CallOutcome::Output(v) => v,
            other => panic!("the call gave no output: {other:?}"),
        }
    }

    /// Why the call failed; panics, naming how the call ended instead.
    pub fn unwrap_failed(self) -> InvokeError {
        match self {
            CallOutcome::Failed(e) => e,
            other => panic!("the call did not fail: {other:?}"),
        }
    }
}

impl Serialize for CallOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        match self {
            CallOutcome::Output(v) => map.serialize_entry("output", v)?,
            CallOutcome::ConsentRequired(c) => map.serialize_entry(
                "consent_required",
                &serde_json::json!({"provider": c.provider, "authorization_url": c.authorization_url}),
            )?,
            CallOutcome::Failed(e) => map.serialize_entry("failed", e)?,
        }
        map.end()
    }
}

impl std::fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallOutcome::Output(v) => write!(f, "{v}"),
            CallOutcome::ConsentRequired(c) => write!(
                f,
                "authorization required: the user must consent to provider `{}` at {}",
                c.provider, c.authorization_url
            ),
            CallOutcome::Failed(e) => write!(f, "{e}"),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// `airlock:tool/log`.
    Log,
    /// The tool's standard output.
    Stdout,
    /// The tool's standard error.
    Stderr,
}

/// One line a tool logged or printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Severity (`info` for stdout, `warn` for stderr).
    pub level: LogLevel,
    /// Where it came from.
    #[serde(skip_serializing_if = "is_log")]
    pub source: LogSource,
    /// The text, cut at 4 KiB.
    pub message: String,
}

fn is_log(s: &LogSource) -> bool {
    *s == LogSource::Log
}

/// What happened to one outgoing request: the call's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// Origin and path as the tool wrote them; the query is left out, it may carry data.
    pub url: String,
    /// The outcome.
    pub outcome: RequestOutcome,
}

/// The outcome of one outgoing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RequestOutcome {
    /// Sent; the upstream answered with this status.
    Sent {
        /// HTTP status.
        status: u16,
        /// Where it went, when an operator route sent it elsewhere.
        #[serde(skip_serializing_if = "Option::is_none")]
        routed_to: Option<String>,
        /// The OAuth provider whose token the host added.
        #[serde(skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
        /// The first answer was 401; the host fetched the token again and resent.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        retried: bool,
    },
    /// Held back: the user must consent at the provider first.
    AuthorizationRequired {
        /// The provider.
        provider: String,
    },
    /// Refused by policy before anything left the host.
    Denied {
        /// Which rule refused it.
        reason: String,
    },
    /// Allowed, but the connection or exchange failed.
    Failed {
        /// What failed.
        error: String,
    },
}

/// Where an echoed token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// A response header.
    Header,
    /// The response body.
    Body,
    /// A response trailer.
    Trailer,
    /// The tool's output or error.
    Output,
    /// A line the tool logged or printed.
    Log,
}

/// One kind of redaction in a call: where, how encoded, how often. Never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redaction {
    /// The host whose response held it (none for output and logs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Where.
    pub place: Place,
    /// The header's name, for a header or trailer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// How it was encoded.
    pub encoding: Encoding,
    /// Occurrences.
    pub count: u64,
}
