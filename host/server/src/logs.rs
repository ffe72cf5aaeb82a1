//! `host serve`'s log: JSON lines, one request id on each, written by a
//! thread of their own so that a call never waits on the log's pipe or file.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines waiting for the writer; when it is full, callers wait for room:
/// a busy log slows calls down and loses no line.
const BUFFERED_LINES: usize = 16 * 1024;

/// Log JSON lines to `writer` at `filter` (`AIRLOCK_LOG` when set) from now
/// on. The lines still buffered are written when the guard is dropped: hold
/// it until the process ends.
pub fn json_logs(writer: impl std::io::Write + Send + 'static, filter: &str) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("airlock-log")
        .finish(writer);
    let filter = EnvFilter::try_from_env("AIRLOCK_LOG").unwrap_or_else(|_| filter.into());
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .init();
    guard
}
