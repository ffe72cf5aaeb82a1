//! Scanning a body as it streams: each chunk searched with the bytes held
//! back from the one before, never the whole body at once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::{Found, Place, Redactor, Watch};

/// A stream's redaction: each chunk scanned with the bytes held back from
/// the one before, so that a token split across chunks is still whole when
/// searched. Memory: one chunk plus the longest pattern.
pub struct StreamRedactor {
    redactor: Arc<Redactor>,
    /// Scanned bytes held back: a pattern may begin in them.
    tail: BytesMut,
}

impl StreamRedactor {
    /// A stream scanned for `redactor`'s patterns.
    pub fn new(redactor: Arc<Redactor>) -> StreamRedactor {
        StreamRedactor {
            redactor,
            tail: BytesMut::new(),
        }
    }

    /// Take `data`; the bytes now safe to pass on (either may be empty), and
    /// what was found. A chunk with no occurrence, and none begun in the bytes
    /// held from before, passes on uncopied.
    pub fn push(&mut self, data: Bytes) -> ([Bytes; 2], Found) {
        let keep = self.redactor.longest() - 1;
        if data.len() > keep && self.clean(&data, keep) {
            let held = self.tail.split().freeze();
            let cut = data.len() - keep;
            self.tail.extend_from_slice(&data[cut..]);
            return ([held, data.slice(..cut)], Found::default());
        }
        self.tail.extend_from_slice(&data);
        let found = self.redactor.redact(&mut self.tail);
        let ready = self.tail.len() - keep.min(self.tail.len());
        ([self.tail.split_to(ready).freeze(), Bytes::new()], found)
    }

    /// No pattern begins in the held bytes and continues into `data`, and
    /// none lies within `data`.
    fn clean(&self, data: &[u8], keep: usize) -> bool {
        if !self.tail.is_empty() {
            let mut junction = Vec::with_capacity(self.tail.len() + keep);
            junction.extend_from_slice(&self.tail);
            junction.extend_from_slice(&data[..keep.min(data.len())]);
            if self
                .redactor
                .search
                .find_iter(&junction)
                .any(|m| m.start() < self.tail.len())
            {
                return false;
            }
        }
        !self.redactor.finds(data)
    }

    /// The bytes held back, at the end of the stream (already scanned).
    pub fn finish(&mut self) -> Bytes {
        self.tail.split().freeze()
    }

    fn held(&self) -> usize {
        self.tail.len()
    }

    fn drop_held(&mut self) {
        self.tail.clear();
    }
}

/// A response body with every occurrence overwritten as it streams.
pub(crate) struct RedactingBody {
    inner: WasiBody,
    stream: StreamRedactor,
    /// Scanned bytes ready to go out.
    ready: std::collections::VecDeque<Bytes>,
    redactor: Arc<Redactor>,
    watch: Arc<Watch>,
    host: String,
    /// Trailers waiting for the held bytes to go out first.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl RedactingBody {
    pub(crate) fn wrap(
        inner: WasiBody,
        redactor: Arc<Redactor>,
        watch: Arc<Watch>,
        host: String,
    ) -> WasiBody {
        use http_body_util::BodyExt;
        RedactingBody {
            inner,
            stream: StreamRedactor::new(redactor.clone()),
            ready: std::collections::VecDeque::new(),
            redactor,
            watch,
            host,
            trailers: None,
            done: false,
        }
        .boxed_unsync()
    }

    fn echoed(&self) -> HttpError {
        HttpError::InternalError(Some(format!(
            "the response from {} echoed the credential; the operator's policy ends the call",
            self.host
        )))
    }
}

impl Body for RedactingBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.done {
                if this.stream.held() > 0 {
                    return Poll::Ready(Some(Ok(Frame::data(this.stream.finish()))));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.done = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let (ready, found) = this.stream.push(data);
                        if this
                            .watch
                            .record(Some(&this.host), Place::Body, None, found)
                        {
                            this.done = true;
                            this.stream.drop_held();
                            return Poll::Ready(Some(Err(this.echoed())));
                        }
                        this.ready
                            .extend(ready.into_iter().filter(|b| !b.is_empty()));
                    }
                    Err(frame) => {
                        if let Ok(mut trailers) = frame.into_trailers() {
                            let redactor = this.redactor.clone();
                            if this.watch.headers(
                                &redactor,
                                &this.host,
                                Place::Trailer,
                                &mut trailers,
                            ) {
                                this.done = true;
                                this.stream.drop_held();
                                return Poll::Ready(Some(Err(this.echoed())));
                            }
                            this.trailers = Some(trailers);
                        }
                        this.done = true;
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_empty() && self.stream.held() == 0 && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Redaction keeps every length.
        let mut hint = self.inner.size_hint();
        let tail = (self.stream.held() + self.ready.iter().map(Bytes::len).sum::<usize>()) as u64;
        hint.set_lower(hint.lower() + tail);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + tail);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "gho_16C7e42F292c6912E7710c838347Ae178B4a";

    #[test]
    fn a_stream_cut_anywhere_gives_the_same_bytes_as_one_scan() {
        let authz = format!("Bearer {TOKEN}");
        let r = Arc::new(Redactor::new(&[authz.as_bytes()]));
        let mut body = vec![b'.'; 300];
        body[100..100 + authz.len()].copy_from_slice(authz.as_bytes());
        body.extend_from_slice(&body.clone());
        let mut whole = body.clone();
        assert_eq!(r.redact(&mut whole).total(), 2);
        for first in 1..body.len() {
            for size in [first, 7, 64] {
                let mut s = StreamRedactor::new(r.clone());
                let mut out = Vec::new();
                let mut found = 0;
                let mut at = 0;
                let mut cut = first;
                while at < body.len() {
                    let end = cut.min(body.len());
                    let (ready, f) = s.push(Bytes::copy_from_slice(&body[at..end]));
                    ready.iter().for_each(|b| out.extend_from_slice(b));
                    found += f.total();
                    at = end;
                    cut = end + size;
                }
                out.extend_from_slice(&s.finish());
                assert_eq!(out, whole, "first cut {first}, then {size}");
                assert_eq!(found, 2, "first cut {first}, then {size}");
            }
        }
    }
}
