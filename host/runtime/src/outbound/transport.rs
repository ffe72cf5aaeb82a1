//! Sending an allowed request: connections pooled per origin, each opened
//! to an address checked after DNS (no second lookup a rebinding DNS could
//! answer differently), with one deadline over DNS, TCP and TLS.
//!
//! Two pools: connections opened for tools that may reach private addresses
//! are never handed to tools that may not.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use airlock_policy::{Origin, Scheme, is_restricted_ip};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 8;
/// The read buffer of a connection: bounds a response's head and the host
/// memory each connection holds.
const MAX_READ_BUF: usize = 64 * 1024;

/// Why a request was not sent, or its exchange failed.
#[derive(Debug)]
pub(crate) enum TransportError {
    /// After DNS, the destination is a restricted address.
    Prohibited(String),
    /// The connection or the exchange failed.
    Failed(HttpError),
}

impl TransportError {
    pub(crate) fn into_error(self) -> HttpError {
        match self {
            TransportError::Prohibited(_) => HttpError::DestinationIpProhibited,
            TransportError::Failed(e) => e,
        }
    }
}

/// A connection failure, carried through the pool's error to its caller.
#[derive(Debug, Clone)]
pub(crate) enum ConnectError {
    Prohibited(String),
    DnsFailed,
    NotFound,
    Refused(String),
    Timeout,
    Tls(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Prohibited(m) => f.write_str(m),
            ConnectError::DnsFailed => f.write_str("DNS lookup failed"),
            ConnectError::NotFound => f.write_str("the host has no address"),
            ConnectError::Refused(m) => write!(f, "connection failed: {m}"),
            ConnectError::Timeout => f.write_str("connecting timed out"),
            ConnectError::Tls(m) => write!(f, "TLS failed: {m}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl ConnectError {
    fn into_failure(self) -> TransportError {
        match self {
            ConnectError::Prohibited(m) => TransportError::Prohibited(m),
            ConnectError::DnsFailed => TransportError::Failed(HttpError::DnsError {
                rcode: Some("lookup failed".into()),
                info_code: None,
            }),
            ConnectError::NotFound => TransportError::Failed(HttpError::DestinationNotFound),
            ConnectError::Refused(_) => TransportError::Failed(HttpError::ConnectionRefused),
            ConnectError::Timeout => TransportError::Failed(HttpError::ConnectionTimeout),
            ConnectError::Tls(_) => TransportError::Failed(HttpError::TlsProtocolError),
        }
    }
}

/// The pools.
pub(crate) struct Transport {
    public: Client<Connector, WasiBody>,
    private: Client<Connector, WasiBody>,
}

impl Transport {
    pub(crate) fn new(connect_timeout: Duration) -> Transport {
        let client = |allow_private| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(IDLE_TIMEOUT)
                .pool_max_idle_per_host(MAX_IDLE_PER_ORIGIN)
                .http1_max_buf_size(MAX_READ_BUF)
                // Host is set by wasi-http, or by the hook for a routed request.
                .set_host(false)
                .build(Connector {
                    allow_private,
                    timeout: connect_timeout,
                })
        };
        Transport {
            public: client(false),
            private: client(true),
        }
    }

    /// Send `request` to `destination` and wait for the response head, at
    /// most `first_byte` after connecting.
    pub(crate) async fn send(
        &self,
        destination: &Origin,
        allow_private: bool,
        mut request: Request<WasiBody>,
        first_byte: Duration,
    ) -> Result<Response<WasiBody>, TransportError> {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        *request.uri_mut() = Uri::try_from(format!("{destination}{path}"))
            .map_err(|_| TransportError::Failed(HttpError::HttpRequestUriInvalid))?;
        let client = if allow_private {
            &self.private
        } else {
            &self.public
        };
        let response = tokio::time::timeout(first_byte, client.request(request))
            .await
            .map_err(|_| TransportError::Failed(HttpError::ConnectionReadTimeout))?
            .map_err(failure)?;
        Ok(response.map(|body| body.map_err(HttpError::from).boxed_unsync()))
    }
}

fn failure(e: hyper_util::client::legacy::Error) -> TransportError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return c.clone().into_failure();
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            let code = if h.is_timeout() {
                HttpError::ConnectionReadTimeout
            } else if h.is_incomplete_message() {
                HttpError::HttpResponseIncomplete
            } else if h.is_closed() || h.is_canceled() {
                HttpError::ConnectionTerminated
            } else {
                HttpError::HttpProtocolError
            };
            return TransportError::Failed(code);
        }
        source = s.source();
    }
    TransportError::Failed(HttpError::InternalError(Some(e.to_string())))
}

/// Opens connections: DNS, the address check, TCP, TLS, within one deadline.
#[derive(Clone)]
pub(crate) struct Connector {
    allow_private: bool,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            tokio::time::timeout(this.timeout, this.connect(uri))
                .await
                .unwrap_or(Err(ConnectError::Timeout))
                .map(TokioIo::new)
        })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<Stream, ConnectError> {
        let scheme = uri
            .scheme_str()
            .and_then(Scheme::parse)
            .ok_or(ConnectError::NotFound)?;
        let authority = uri.authority().ok_or(ConnectError::NotFound)?;
        let destination = Origin::from_authority(scheme, authority.as_str())
            .map_err(|_| ConnectError::NotFound)?;
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((destination.host.as_str(), destination.port))
                .await
                .map_err(|_| ConnectError::DnsFailed)?
                .collect();
        if addrs.is_empty() {
            return Err(ConnectError::NotFound);
        }
        // All or nothing: a name that resolves to any restricted address is refused.
        if !self.allow_private
            && let Some(addr) = addrs.iter().find(|a| is_restricted_ip(a.ip()))
        {
            return Err(ConnectError::Prohibited(format!(
                "{destination} resolves to {}, a private, loopback, link-local or metadata address",
                addr.ip()
            )));
        }
        let mut last = ConnectError::Refused("no address answered".into());
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = ConnectError::Refused(e.to_string()),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        match destination.scheme {
            Scheme::Http => Ok(Stream::Plain(tcp)),
            Scheme::Https => {
                let name = rustls::pki_types::ServerName::try_from(destination.host.clone())
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(tls_config())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// A connection, plain or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
