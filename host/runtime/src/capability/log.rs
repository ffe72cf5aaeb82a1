//! `airlock:tool/log` (and the `types` it shares with the tool): lines a tool
//! logs, kept in the call's report, capped in size and count.

use wasmtime::component::{HasSelf, Linker};

use super::{Capability, Granted};
use crate::bindings::airlock::tool::{log, types};
use crate::report::{LogLevel, LogLine, LogSource};

pub(crate) use log::Host;
pub(crate) use types::Host as TypesHost;

const MAX_LOG_LINES: usize = 200;
const MAX_LOG_LINE: usize = 4096;

pub(crate) const CAPABILITY: Capability = Capability {
    interfaces: &[("airlock:tool/log", "0.1"), ("airlock:tool/types", "0.1")],
    granted: Granted::Always,
    refusal: "",
    class: "granted",
};

pub(crate) fn link<T: log::Host + types::Host + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasSelf<T>>(linker, |s| s)?;
    types::add_to_linker::<T, HasSelf<T>>(linker, |s| s)
}

/// The call's log: at most `MAX_LOG_LINES` lines of `MAX_LOG_LINE` bytes;
/// what is past the caps is counted, not kept.
#[derive(Default)]
pub(crate) struct LogBuffer {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) dropped: u64,
}

impl LogBuffer {
    pub(crate) fn push(
        &mut self,
        tool: &str,
        level: LogLevel,
        source: LogSource,
        mut message: String,
    ) {
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
