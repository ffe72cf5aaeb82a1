//! Standard streams: a tool's stdout and stderr are kept, up to a cap, for
//! the call's log; stdin is empty; exit ends the call with its code. Writes
//! past the cap are accepted and counted, never failed: a chatty tool must
//! not crash on a full buffer.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::p2::bindings::cli;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::{Capability, Granted};

pub(crate) const CAPABILITY: Capability = Capability {
    interfaces: &[
        ("wasi:cli/stdout", "0.2"),
        ("wasi:cli/stderr", "0.2"),
        ("wasi:cli/stdin", "0.2"),
        ("wasi:cli/exit", "0.2"),
    ],
    granted: Granted::Always,
    refusal: "",
    class: "granted",
};

pub(crate) fn link<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    cli::stdin::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::exit::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    Ok(())
}

/// Bytes kept per stream and call.
const MAX_OUTPUT: usize = 64 * 1024;

#[derive(Default)]
struct Inner {
    kept: Vec<u8>,
    dropped_lines: u64,
}

/// One captured stream; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Inner>>);

impl Captured {
    pub(crate) fn new() -> Captured {
        Captured::default()
    }

    fn write(&self, bytes: &[u8]) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_OUTPUT.saturating_sub(inner.kept.len());
        let (keep, drop) = bytes.split_at(room.min(bytes.len()));
        inner.kept.extend_from_slice(keep);
        if !drop.is_empty() {
            let lines = drop.iter().filter(|b| **b == b'\n').count() as u64;
            inner.dropped_lines += lines.max(1);
        }
    }

    /// What was kept, as text, and how many lines were dropped.
    pub(crate) fn take(&self) -> (String, u64) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let kept = std::mem::take(&mut inner.kept);
        (
            String::from_utf8_lossy(&kept).into_owned(),
            inner.dropped_lines,
        )
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        Captured::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_OUTPUT)
    }
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Captured::write(&self, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_counted_not_kept() {
        let c = Captured::new();
        c.write(b"first line\nsecond");
        c.write(&vec![b'x'; MAX_OUTPUT]);
        c.write(b"a\nb\nc\n");
        let (text, dropped) = c.take();
        assert_eq!(text.len(), MAX_OUTPUT);
        assert!(text.starts_with("first line\nsecond"));
        assert_eq!(dropped, 1 + 3);
    }
}
