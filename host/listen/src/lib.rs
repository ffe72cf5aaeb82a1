//! How Airlock's services serve HTTP, one way for all of them (`host serve`,
//! the identity service, the binding service, the ALB stand-in): a client
//! must send its request headers within a deadline (a slow one cannot hold a
//! connection open), open connections are capped (past the cap new ones are
//! closed at once), an answer given before its request's body was read closes
//! the connection and says so, and on shutdown the listener closes while
//! connections in flight finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as _, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// Serve `router` on `listener` until `shutdown` completes, then stop
/// accepting and return once the connections in flight are done.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let router = router.layer(axum::middleware::from_fn(close_unless_read));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                max = limits.max_connections,
                "connection refused: too many open"
            );
            continue;
        };
        // Streamed answers (MCP's SSE) go out at once, not after a delayed ACK.
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// hyper drops a connection after an answer given before the request's body
/// arrived (it cannot tell where the next request starts), yet the answer's
/// head still says keep-alive: a client reusing the connection loses its next
/// request. Such answers (refusals that never look at the body) say
/// `Connection: close`, so the client opens a new one.
async fn close_unless_read(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(Tracked {
            inner,
            read: read.clone(),
        })
    });
    let mut response = next.run(request).await;
    if !read.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: Limits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let (addr, _stop) = start(Limits {
            header_read_timeout: Duration::from_millis(200),
            ..Limits::default()
        })
        .await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection was closed by the server");
        // A prompt client is served.
        assert_eq!(reqwest::get(format!("http://{addr}/")).await.unwrap().text().await.unwrap(), "ok");
    }

    /// Reads one response head (the tests' answers have empty bodies).
    async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await {
                Ok(Ok(1)) => head.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&head).to_lowercase()
    }

    #[tokio::test]
    async fn an_answer_given_before_the_body_arrived_closes_the_connection_and_says_so() {
        // A refusal (an auth challenge, say) ignores the body. If the body
        // has not arrived when the answer goes out, hyper closes the
        // connection after it; a client told to keep it alive would send its
        // next request into a closed connection and lose it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/",
            axum::routing::post(|| async { axum::http::StatusCode::UNAUTHORIZED }),
        );
        tokio::spawn(serve(listener, router, Limits::default(), std::future::pending()));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n")
            .await
            .unwrap();
        let first = read_head(&mut client).await;
        assert!(first.starts_with("http/1.1 401"), "{first}");
        if !first.contains("connection: close") {
            // Told the connection stays open: it must.
            let sent = client
                .write_all(b"helloPOST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
                .await;
            let second = match sent {
                Ok(()) => read_head(&mut client).await,
                Err(e) => e.to_string(),
            };
            assert!(
                second.starts_with("http/1.1 401"),
                "the first answer kept the connection alive but the server closed it: {first:?} then {second:?}"
            );
        }
        // A request whose body is read keeps its connection.
        let router = Router::new().route("/", axum::routing::post(|body: String| async move { body }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, router, Limits::default(), std::future::pending()));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let head = read_head(&mut client).await;
        assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"), "{head}");
    }

    #[tokio::test]
    async fn past_the_cap_new_connections_are_closed_and_shutdown_stops_accepting() {
        let (addr, stop) = start(Limits {
            max_connections: 1,
            ..Limits::default()
        })
        .await;
        let _held = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::task::yield_now().await;
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut buf)).await;
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "served past the cap");
        drop(_held);
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
