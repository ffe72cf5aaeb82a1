//! The outbound HTTP hook: every request a tool sends passes here.
//!
//! Order of checks: request count, forbidden headers, scheme and origin against
//! the tool's grants, the operator's route, DNS, then the resolved addresses
//! against the restricted ranges. Only then is a connection opened, to the
//! address that was checked (no second lookup a rebinding DNS could answer
//! differently). For a host covered by an OAuth grant, the broker's bearer
//! token for this user and exactly the declared scopes is added to the request
//! the host sends; the guest's own request object never holds it. An upstream
//! 401 drops the cached token and the request is sent once more.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_identity::{Broker, Consent, Credential};
use airlock_policy::{Access, Effective, OAuthGrant, Origin, Scheme, is_restricted_ip};
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, PROXY_AUTHORIZATION};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies of credentialed requests are held so a 401 can be retried.
const MAX_RETRY_BODY: usize = 1 << 20;

use crate::call::Caller;

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

/// The per-call hook state.
pub(crate) struct Outbound {
    effective: Arc<Effective>,
    records: Arc<Mutex<Vec<RequestRecord>>>,
    caller: Caller,
    consent: Arc<Mutex<Option<Consent>>>,
    sent: u64,
}

impl Outbound {
    pub(crate) fn new(
        effective: Arc<Effective>,
        records: Arc<Mutex<Vec<RequestRecord>>>,
        caller: Caller,
        consent: Arc<Mutex<Option<Consent>>>,
    ) -> Outbound {
        Outbound {
            effective,
            records,
            caller,
            consent,
            sent: 0,
        }
    }

    /// The broker and user for an OAuth-covered request, or why there are none.
    fn brokered(&self, grant: &OAuthGrant) -> Result<Brokered, String> {
        let Some(broker) = self.caller.broker.clone() else {
            return Err(format!(
                "the tool's oauth grant for provider `{}` needs the identity broker, which this host does not run",
                grant.provider
            ));
        };
        let Some(user) = self.caller.user.clone() else {
            return Err(format!(
                "the tool's oauth grant for provider `{}` needs a signed-in user; this call has none",
                grant.provider
            ));
        };
        // An index into the shared grants: no per-request copy of the grant.
        let grant = self
            .effective
            .grants
            .oauth
            .iter()
            .position(|g| std::ptr::eq(g, grant))
            .expect("the grant comes from these grants");
        Ok(Brokered {
            broker,
            user,
            effective: self.effective.clone(),
            grant,
        })
    }

    fn check(&mut self, request: &Request<WasiBody>) -> Result<Plan, String> {
        if self.sent >= self.effective.limits.max_requests {
            return Err(format!(
                "the call's limit of {} outgoing requests is reached",
                self.effective.limits.max_requests
            ));
        }
        self.sent += 1;
        if request.headers().contains_key(AUTHORIZATION)
            || request.headers().contains_key(PROXY_AUTHORIZATION)
        {
            return Err(
                "tools may not set authorization headers; the host adds credentials".into(),
            );
        }
        let uri = request.uri();
        let scheme = uri.scheme_str().and_then(Scheme::parse).ok_or_else(|| {
            format!(
                "scheme `{}` is not http or https",
                uri.scheme_str().unwrap_or("")
            )
        })?;
        let authority = uri.authority().ok_or("the request has no host")?;
        if authority.as_str().contains('@') {
            return Err("user info in the URL is not allowed".into());
        }
        let origin =
            Origin::from_authority(scheme, authority.as_str()).map_err(|e| e.to_string())?;
        let access = self
            .effective
            .grants
            .access(&origin)
            .ok_or_else(|| format!("{origin} is not among the hosts the tool declares"))?;
        let oauth = match access {
            Access::Plain => None,
            Access::OAuth(grant) => Some(self.brokered(grant)?),
        };
        let destination = self.effective.destination(&origin);
        Ok(Plan {
            routed: destination != origin,
            destination,
            oauth,
        })
    }

    fn record(&self, request: &Request<WasiBody>, outcome: RequestOutcome) {
        record(&self.records, describe(request), outcome);
    }
}

struct Plan {
    destination: Origin,
    routed: bool,
    oauth: Option<Brokered>,
}

struct Brokered {
    broker: Arc<Broker>,
    user: Arc<str>,
    effective: Arc<Effective>,
    grant: usize,
}

fn describe(request: &Request<WasiBody>) -> (String, String) {
    let uri = request.uri();
    let url = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    );
    (request.method().to_string(), url)
}

fn record(
    records: &Mutex<Vec<RequestRecord>>,
    (method, url): (String, String),
    outcome: RequestOutcome,
) {
    if let Ok(mut r) = records.lock() {
        r.push(RequestRecord {
            method,
            url,
            outcome,
        });
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(|name| {
            name == AUTHORIZATION
                || name == PROXY_AUTHORIZATION
                || DEFAULT_FORBIDDEN_HEADERS.contains(name)
        })
    }

    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let plan = match self.check(&request) {
            Ok(plan) => plan,
            Err(reason) => {
                tracing::info!(target: "airlock::outbound", %reason, "request denied");
                self.record(&request, RequestOutcome::Denied { reason });
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        };
        let what = describe(&request);
        let records = self.records.clone();
        let allow_private = self.effective.allow_private_addresses;
        let consent = self.consent.clone();
        Box::new(async move {
            let routed_to = plan.routed.then(|| plan.destination.to_string());
            let Some(Brokered {
                broker,
                user,
                effective,
                grant,
            }) = plan.oauth
            else {
                let result = send(
                    &plan.destination,
                    allow_private,
                    plan.routed,
                    request,
                    options,
                )
                .await;
                let outcome = outcome_of(&result, routed_to, None, false);
                record(&records, what, outcome);
                return result.map_err(Refusal::into_error);
            };
            let grant = &effective.grants.oauth[grant];
            let provider = grant.provider.to_string();
            let refuse = |reason: String| {
                tracing::info!(target: "airlock::outbound", %reason, "request held back");
                record(&records, what.clone(), RequestOutcome::Denied { reason });
                Err(HttpError::HttpRequestDenied)
            };
            let hold = |c: Consent| {
                record(
                    &records,
                    what.clone(),
                    RequestOutcome::AuthorizationRequired {
                        provider: provider.clone(),
                    },
                );
                if let Ok(mut slot) = consent.lock() {
                    slot.get_or_insert(c);
                }
                Err(HttpError::HttpRequestDenied)
            };
            let bearer = match broker.bearer(&user, grant).await {
                Ok(Credential::Bearer(value)) => value,
                Ok(Credential::Consent(c)) => return hold(c),
                Err(e) => return refuse(format!("no credential for provider `{provider}`: {e}")),
            };
            // Held in memory so that a 401 can be answered by one retry.
            let (parts, body) = request.into_parts();
            let body = match Limited::new(body, MAX_RETRY_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return refuse(format!(
                        "the body of a credentialed request is over {} KiB or failed",
                        MAX_RETRY_BODY >> 10
                    ));
                }
            };
            let build = |value: HeaderValue| {
                let mut r = Request::from_parts(parts.clone(), full(body.clone()));
                r.headers_mut().insert(AUTHORIZATION, value);
                r
            };
            let mut result = send(
                &plan.destination,
                allow_private,
                plan.routed,
                build(bearer),
                options,
            )
            .await;
            let mut retried = false;
            if matches!(&result, Ok((r, _)) if r.status() == http::StatusCode::UNAUTHORIZED) {
                broker.forget(&user, grant);
                match broker.bearer(&user, grant).await {
                    Ok(Credential::Bearer(value)) => {
                        retried = true;
                        result = send(
                            &plan.destination,
                            allow_private,
                            plan.routed,
                            build(value),
                            options,
                        )
                        .await;
                    }
                    // The vault no longer holds a usable grant: consent again.
                    Ok(Credential::Consent(c)) => return hold(c),
                    // The tool sees the 401.
                    Err(_) => {}
                }
            }
            record(
                &records,
                what,
                outcome_of(&result, routed_to, Some(provider), retried),
            );
            result.map_err(Refusal::into_error)
        })
    }
}

fn full(body: Bytes) -> WasiBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

type Sent = Result<
    (
        Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    Refusal,
>;

fn outcome_of(
    result: &Sent,
    routed_to: Option<String>,
    credential: Option<String>,
    retried: bool,
) -> RequestOutcome {
    match result {
        Ok((response, _)) => RequestOutcome::Sent {
            status: response.status().as_u16(),
            routed_to,
            credential,
            retried,
        },
        Err(Refusal::Denied(reason)) => RequestOutcome::Denied {
            reason: reason.clone(),
        },
        Err(Refusal::Failed(e)) => RequestOutcome::Failed {
            error: format!("{e:?}"),
        },
    }
}

impl Refusal {
    fn into_error(self) -> HttpError {
        match self {
            Refusal::Denied(_) => HttpError::DestinationIpProhibited,
            Refusal::Failed(e) => e,
        }
    }
}

enum Refusal {
    Denied(String),
    Failed(HttpError),
}

async fn send(
    destination: &Origin,
    allow_private: bool,
    routed: bool,
    mut request: Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Sent {
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(CONNECT_TIMEOUT)
        .min(CONNECT_TIMEOUT);
    let first_byte = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(FIRST_BYTE_TIMEOUT)
        .min(FIRST_BYTE_TIMEOUT);

    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        connect_timeout,
        tokio::net::lookup_host((destination.host.as_str(), destination.port)),
    )
    .await
    .map_err(|_| Refusal::Failed(HttpError::DnsTimeout))?
    .map_err(|_| {
        Refusal::Failed(HttpError::DnsError {
            rcode: Some("lookup failed".into()),
            info_code: None,
        })
    })?
    .collect();
    if addrs.is_empty() {
        return Err(Refusal::Failed(HttpError::DestinationNotFound));
    }
    // All or nothing: a name that resolves to any restricted address is refused.
    if !allow_private && let Some(addr) = addrs.iter().find(|a| is_restricted_ip(a.ip())) {
        return Err(Refusal::Denied(format!(
            "{destination} resolves to {}, a private, loopback, link-local or metadata address",
            addr.ip()
        )));
    }

    let stream = connect(&addrs, connect_timeout).await?;
    let io: Box<dyn IoStream> = match destination.scheme {
        Scheme::Http => Box::new(stream),
        Scheme::Https => Box::new(tls(destination, stream).await?),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Refusal::Failed(HttpError::from(e)))?;

    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    *request.uri_mut() =
        http::Uri::try_from(path).map_err(|_| Refusal::Failed(HttpError::HttpRequestUriInvalid))?;
    if routed {
        let host = HeaderValue::from_str(&destination.authority())
            .map_err(|_| Refusal::Failed(HttpError::HttpRequestUriInvalid))?;
        request.headers_mut().insert(HOST, host);
    }

    let conn = async move { conn.await.map_err(HttpError::from) };
    let response = tokio::time::timeout(first_byte, async {
        let conn = tokio::spawn(conn);
        let response = sender.send_request(request).await;
        (response, conn)
    })
    .await
    .map_err(|_| Refusal::Failed(HttpError::ConnectionReadTimeout))?;
    let (response, conn) = response;
    let response = response.map_err(|e| Refusal::Failed(HttpError::from(e)))?;
    let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
    let io = async move {
        conn.await
            .map_err(|e| HttpError::InternalError(Some(e.to_string())))?
    };
    Ok((response, Box::new(io)))
}

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> IoStream for T {}

async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Refusal> {
    let mut last = HttpError::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(Refusal::Failed(last))
}

async fn tls(
    destination: &Origin,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Refusal> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
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
    });
    let name = rustls::pki_types::ServerName::try_from(destination.host.clone())
        .map_err(|_| Refusal::Failed(HttpError::TlsProtocolError))?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, stream)
        .await
        .map_err(|e| Refusal::Failed(HttpError::Tls(e)))
}
