//! Per-call state: the WASI context (granting nothing, stdio captured), the
//! HTTP hook, the memory budget, the log buffer, and how a call's ending is
//! classified.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use airlock_credential::{Consent, TokenSource};
use airlock_policy::{Limits, Permissions};
use airlock_verify::VerifiedUser;
use serde::Serialize;
use wasmtime::component::{ResourceTable, ResourceTableError};
use wasmtime::{ResourceLimiter, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{FieldMapError, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::ToolError;
use crate::bindings::airlock::tool::{log, types};
use crate::outbound::{Outbound, Shared, Transport};
use crate::report::{CallReport, HostResource, InvokeError, ToolFailure};
use crate::scan::{Place, RedactorCache, Watch};
use crate::stdio::Captured;

const MAX_LOG_LINES: usize = 200;
const MAX_LOG_LINE: usize = 4096;
/// Handles a call may hold at once. A tool with its 16 requests in flight
/// needs about 200; each handle may own a header map of `MAX_FIELDS_BYTES`.
pub(crate) const MAX_HANDLES: usize = 1024;
/// Bytes one header map may hold (names and values, roughly as in memory):
/// well above what proxies accept on the wire (8 KiB).
pub(crate) const MAX_FIELDS_BYTES: usize = 16 * 1024;
/// What one table element is charged against the memory budget.
const TABLE_ELEMENT_BYTES: usize = 16;

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

/// The call's log: at most `MAX_LOG_LINES` lines of `MAX_LOG_LINE` bytes;
/// what is past the caps is counted, not kept.
#[derive(Default)]
pub(crate) struct LogBuffer {
    lines: Vec<LogLine>,
    dropped: u64,
}

impl LogBuffer {
    fn push(&mut self, tool: &str, level: LogLevel, source: LogSource, mut message: String) {
        if self.lines.len() >= MAX_LOG_LINES {
            self.dropped += 1;
            if self.dropped == 1 {
                tracing::warn!(tool, "log line cap reached; further lines dropped");
            }
            return;
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        tracing::debug!(target: "airlock::tool", tool, ?level, ?source, "{message}");
        self.lines.push(LogLine {
            level,
            source,
            message,
        });
    }
}

/// One call's memory budget: its linear memories and tables together, and
/// the request bodies the host holds for it, against the tool's cap.
pub(crate) struct Budget {
    max: usize,
    used: AtomicUsize,
    hit: AtomicBool,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max,
            used: AtomicUsize::new(0),
            hit: AtomicBool::new(false),
        })
    }

    /// Take `n` bytes for the instance, or refuse and remember that the cap
    /// was hit: the trap that follows is the memory limit, not a crash.
    fn charge(&self, n: usize) -> bool {
        let taken = self.reserve(n);
        if !taken {
            self.hit.store(true, Ordering::Release);
        }
        taken
    }

    /// Take `n` bytes for something the host holds (the guest is told when
    /// this fails), or refuse.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    /// Give back `n` bytes taken by [`Budget::reserve`].
    pub(crate) fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    fn was_hit(&self) -> bool {
        self.hit.load(Ordering::Acquire)
    }
}

/// Charges every linear memory and table of the instance to the call's
/// budget, so several memories together get no more than the cap.
pub(crate) struct Limiter {
    budget: Arc<Budget>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.budget.charge(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.budget.charge(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

/// Who a call runs for and where their tokens come from.
#[derive(Clone, Default)]
pub(crate) struct OnBehalf {
    pub(crate) user: Option<VerifiedUser>,
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
}

pub(crate) struct CallState {
    pub(crate) wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: Outbound,
    pub(crate) limiter: Limiter,
    budget: Arc<Budget>,
    logs: LogBuffer,
    stdout: Captured,
    stderr: Captured,
    records: Arc<Mutex<crate::outbound::Requests>>,
    consent: Arc<Mutex<Option<Consent>>>,
    tool: String,
    /// The credentials the call sent, and what was redacted.
    watch: Arc<Watch>,
}

impl CallState {
    pub(crate) fn new(
        permissions: Arc<Permissions>,
        tool: &str,
        on_behalf: OnBehalf,
        transport: Arc<Transport>,
        redactors: Arc<RedactorCache>,
    ) -> CallState {
        let watch = Watch::new(redactors, permissions.echoed_tokens);
        let records = Arc::new(Mutex::new(crate::outbound::Requests::default()));
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
                    watch: watch.clone(),
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
            watch,
        }
    }

    /// The call's end, when its guest has earned one between host calls:
    /// checked at each epoch tick.
    pub(crate) fn must_end(&self) -> Option<crate::outbound::RefusedTooOften> {
        self.outbound
            .refused_too_often()
            .then_some(crate::outbound::RefusedTooOften(
                crate::outbound::MAX_REFUSED,
            ))
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
        if let Some(host) = self.watch.ended_by() {
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
        CallReport {
            tool: self.tool,
            user: None,
            outcome,
            logs: self.logs.lines,
            logs_dropped: self.logs.dropped,
            requests,
            requests_dropped,
            elapsed: std::time::Duration::ZERO,
            consent,
            redactions: self.watch.redactions(),
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl types::Host for CallState {}

impl CallState {
    /// Keep a line the tool wrote, scanned for credentials before anything
    /// (the debug log included) sees it.
    fn log_line(&mut self, level: LogLevel, source: LogSource, mut message: String) {
        if self.watch.sent_any() {
            self.watch.text(Place::Log, &mut message);
        }
        self.logs.push(&self.tool, level, source, message);
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.log_line(level, LogSource::Log, message);
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
        if state.watch.sent_any() {
            state.watch.text(Place::Output, &mut text);
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
    if let Some(refused) = e.downcast_ref::<crate::outbound::RefusedTooOften>() {
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
