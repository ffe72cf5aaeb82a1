//! Per-call state: the WASI context (granting nothing), the HTTP hook, the
//! memory limiter, the log buffer, and how a call's ending is classified.

use std::sync::{Arc, Mutex};

use airlock_policy::{Effective, Limits};
use serde::Serialize;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::airlock::tool::{log, types};
use crate::outbound::{Outbound, RequestRecord};
use crate::{InvokeError, ToolError, ToolFailure};
use airlock_identity::{Broker, Consent};

const MAX_LOG_LINES: usize = 200;
const MAX_LOG_LINE: usize = 4096;
const MAX_TABLE_ELEMENTS: usize = 100_000;

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

/// One line a tool logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Severity.
    pub level: LogLevel,
    /// The text, cut at 4 KiB.
    pub message: String,
}

#[derive(Default)]
pub(crate) struct LogBuffer {
    pub(crate) lines: Vec<LogLine>,
    dropped: usize,
}

/// Refuses memory growth past the tool's cap and remembers that it did, so
/// the resulting trap is reported as a memory limit rather than a crash.
pub(crate) struct Limiter {
    pub(crate) max_bytes: usize,
    pub(crate) hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

pub(crate) struct CallState {
    pub(crate) wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: Outbound,
    pub(crate) limiter: Limiter,
    pub(crate) logs: LogBuffer,
    pub(crate) records: Arc<Mutex<Vec<RequestRecord>>>,
    pub(crate) consent: Arc<Mutex<Option<Consent>>>,
    tool: String,
}

/// Who a call runs for and who brokers their tokens.
#[derive(Clone, Default)]
pub(crate) struct Caller {
    pub(crate) user: Option<Arc<str>>,
    pub(crate) broker: Option<Arc<Broker>>,
}

impl CallState {
    pub(crate) fn new(effective: Arc<Effective>, tool: &str, caller: Caller) -> CallState {
        let records = Arc::new(Mutex::new(Vec::new()));
        let consent = Arc::new(Mutex::new(None));
        let max_bytes = (effective.limits.memory_mib as usize) << 20;
        CallState {
            // No args, no env, no preopens, no sockets: the builder grants nothing by default.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: Outbound::new(effective, records.clone(), caller, consent.clone()),
            limiter: Limiter {
                max_bytes,
                hit: false,
            },
            logs: LogBuffer::default(),
            records,
            consent,
            tool: tool.to_string(),
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

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, mut message: String) {
        if self.logs.lines.len() >= MAX_LOG_LINES {
            self.logs.dropped += 1;
            if self.logs.dropped == 1 {
                tracing::warn!(tool = %self.tool, "log line cap reached; further lines dropped");
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
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        tracing::debug!(target: "airlock::tool", tool = %self.tool, ?level, "{message}");
        self.logs.lines.push(LogLine { level, message });
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
    let output = returned.map_err(|e| InvokeError::Tool {
        error: match e {
            ToolError::InvalidInput(m) => ToolFailure::InvalidInput(m),
            ToolError::Upstream(m) => ToolFailure::Upstream(m),
            ToolError::Failed(m) => ToolFailure::Failed(m),
        },
    })?;
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
    if state.limiter.hit {
        return InvokeError::MemoryLimit {
            memory_mib: limits.memory_mib,
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
        None => {
            let message = format!("{e:#}");
            if message.contains("maximum concurrent") || message.contains("pooling allocator") {
                InvokeError::Busy
            } else {
                InvokeError::Trap { message }
            }
        }
    }
}
