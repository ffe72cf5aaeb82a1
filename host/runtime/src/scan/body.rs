//! A response body scanned as it streams (`airlock-scan`'s stream redactor
//! over wasi-http's body), each find recorded in the call's echo_watch.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use airlock_scan::{Redactor, StreamRedactor};
use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

use super::{Place, EchoWatch};

/// A response body with every occurrence overwritten as it streams.
pub(crate) struct RedactingBody {
    inner: WasiBody,
    stream: StreamRedactor,
    /// Scanned bytes ready to go out.
    ready: std::collections::VecDeque<Bytes>,
    redactor: Arc<Redactor>,
    echo_watch: Arc<EchoWatch>,
    host: String,
    /// Trailers waiting for the held bytes to go out first.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl RedactingBody {
    pub(crate) fn wrap(
        inner: WasiBody,
        redactor: Arc<Redactor>,
        echo_watch: Arc<EchoWatch>,
        host: String,
    ) -> WasiBody {
        use http_body_util::BodyExt;
        RedactingBody {
            inner,
            stream: StreamRedactor::new(redactor.clone()),
            ready: std::collections::VecDeque::new(),
            redactor,
            echo_watch,
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
                            .echo_watch
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
                            if this.echo_watch.headers(
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
