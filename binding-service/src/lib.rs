//! The Session Binding Service. After a user consents at a provider, the
//! browser lands here with the session's id. The service checks who is
//! signed in (the ALB's `x-amzn-oidc-data`, verified exactly as `host serve`
//! verifies it) and asks AgentCore Identity to complete the session for that
//! user (`CompleteResourceTokenAuth`). The identity service stores the token
//! only if that user started the flow: a link sent to someone else (CSRF) or
//! opened in another person's browser (swapping) binds nothing.
//!
//! It holds no token and may call that one operation only. It runs no tools.

mod config;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use airlock_audit::Audit;
use airlock_identity::{IdentityClient, IdentityError, UserRef};
use airlock_verify::{AlbVerifier, VerifiedUser, VerifyError};
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{IntCounterVec, Opts, Registry, TextEncoder};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub use config::{BindingConfig, ConfigError};
use pages::Page;

/// What one binding attempt came to, for metrics, logs, audit and the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Bound: the token is stored for the user.
    Bound,
    /// No verified sign-in came with the request.
    NotSignedIn,
    /// The link's session id is not a session id.
    Malformed,
    /// The identity service refused it: expired, declined at the provider,
    /// used, or started by another user (AgentCore does not say which).
    Refused,
    /// The session is unknown.
    Expired,
    /// The user has not finished at the provider.
    NotFinished,
    /// The identity service could not be asked.
    Unavailable,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Bound => "bound",
            Outcome::NotSignedIn => "not_signed_in",
            Outcome::Malformed => "malformed",
            Outcome::Refused => "refused",
            Outcome::Expired => "expired",
            Outcome::NotFinished => "not_finished",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// The audit record of one attempt: never the session id itself (it is a
/// handle to a pending grant), only its hash.
#[derive(Serialize)]
#[serde(tag = "kind", rename = "binding")]
struct Attempt<'a> {
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_sha256: Option<String>,
    outcome: Outcome,
}

struct App {
    config: BindingConfig,
    alb: AlbVerifier,
    identity: IdentityClient,
    audit: Audit,
    attempts: IntCounterVec,
    registry: Registry,
}

/// A running service.
pub struct Running {
    /// The binding page's address.
    pub addr: SocketAddr,
    /// Prometheus metrics' address, when configured.
    pub metrics: Option<SocketAddr>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    audit: Audit,
}

impl Running {
    /// Stop accepting, finish what is in flight, sign the trail's last
    /// checkpoint, and return.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        self.audit.checkpoint();
    }

    /// A token that, once cancelled, stops the service.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The audit trail could not be opened.
    #[error("audit {sink}: {message}")]
    Audit {
        /// The sink.
        sink: String,
        /// Why.
        message: String,
    },
}

/// Bind the listeners and serve until the shutdown token is cancelled.
/// `identity` is the AgentCore client whose credentials may call
/// `CompleteResourceTokenAuth` and nothing else.
pub async fn start(config: BindingConfig, identity: IdentityClient) -> Result<Running, StartError> {
    config.validate()?;
    let audit_error = |message: String| StartError::Audit {
        sink: config.audit.sink.clone(),
        message,
    };
    let signing = match &config.audit.signing_key {
        Some(setting) => {
            let key = airlock_audit::CheckpointKey::load(setting)
                .map_err(|e| audit_error(format!("signing key: {e}")))?;
            Some((key, config.audit.checkpoint_every))
        }
        None => None,
    };
    let audit = Audit::open_signed(
        &config.audit.sink,
        config.audit.rotate_mib << 20,
        "binding-service",
        env!("CARGO_PKG_VERSION"),
        signing,
    )
    .map_err(|e| audit_error(e.to_string()))?;
    let registry = Registry::new();
    let attempts = IntCounterVec::new(
        Opts::new(
            "airlock_binding_attempts_total",
            "Session binding attempts by outcome.",
        ),
        &["outcome"],
    )
    .expect("a valid metric");
    registry
        .register(Box::new(attempts.clone()))
        .expect("registered once");
    let app = Arc::new(App {
        alb: AlbVerifier::new(config.alb.clone()),
        identity,
        audit,
        attempts,
        registry,
        config,
    });
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let router = Router::new()
        .route(&app.config.path, get(bind))
        .route("/ping", get(ping))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app.clone());
    let listener = listen(app.config.listen).await?;
    let addr = listener.local_addr().map_err(|e| StartError::Listen {
        addr: app.config.listen,
        message: e.to_string(),
    })?;
    tasks.push(serve(listener, router, stop.clone()));
    let mut metrics = None;
    if let Some(at) = app.config.metrics {
        let listener = listen(at).await?;
        metrics = listener.local_addr().ok();
        let router = Router::new()
            .route("/metrics", get(export))
            .with_state(app.clone());
        tasks.push(serve(listener, router, stop.clone()));
    }
    tracing::info!(%addr, path = %app.config.path, "session binding service listening");
    Ok(Running {
        addr,
        metrics,
        stop,
        tasks,
        audit: app.audit.clone(),
    })
}

async fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen {
            addr,
            message: e.to_string(),
        })
}

fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(airlock_listen::serve(
        listener,
        router,
        airlock_listen::Limits::default(),
        async move { stop.cancelled().await },
    ))
}

/// The link's parameters. Unknown ones are ignored, as a provider or the
/// identity service may add their own.
#[derive(Default)]
struct Link {
    session_id: Option<String>,
    /// The tool the consent is for, as the host sent it (`customState`).
    state: Option<String>,
}

impl Link {
    fn parse(query: Option<&str>) -> Link {
        let mut link = Link::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "session_id" => link.session_id = Some(v.into_owned()),
                "state" => link.state = Some(v.into_owned()),
                _ => {}
            }
        }
        link
    }
}

async fn bind(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let request_id = request_id();
    let link = Link::parse(query.as_deref());
    // Shown to the user only as the tool's name: a name or nothing.
    let tool = link.state.as_deref().filter(|t| tool_name(t));
    let user = signed_in(&app, &headers).await;
    let session = link.session_id.as_deref();
    let outcome = match (&user, session) {
        (Err(_), _) => Outcome::NotSignedIn,
        (Ok(_), None) => Outcome::Malformed,
        (Ok(_), Some(s)) if !session_id(s) => Outcome::Malformed,
        (Ok(user), Some(s)) => complete(&app, s, user).await,
    };
    let user_id = user.as_ref().ok().map(|u| u.id().as_str());
    app.audit.record(Attempt {
        request_id: &request_id,
        user: user_id,
        tool,
        session_sha256: session.map(|s| hex::encode(Sha256::digest(s.as_bytes()))),
        outcome,
    });
    app.attempts.with_label_values(&[outcome.name()]).inc();
    match (&user, outcome) {
        (Err(why), _) => {
            tracing::info!(%request_id, outcome = outcome.name(), reason = %why, "binding refused")
        }
        (Ok(u), _) => {
            tracing::info!(%request_id, outcome = outcome.name(), user = %u.id().as_str(), "binding attempt")
        }
    }
    Page {
        outcome,
        tool,
        user: user_id,
        return_url: app.config.return_url.as_deref(),
        sign_out_url: app.config.sign_out_url.as_deref(),
    }
    .into_response()
}

/// Why a binding request has no signed-in user; the log's reason.
#[derive(Debug, thiserror::Error)]
enum SignInError {
    /// The ALB sent no (readable) sign-in header.
    #[error("no x-amzn-oidc-data header")]
    NoHeader,
    /// The header did not verify.
    #[error("{0}")]
    Refused(VerifyError),
}

/// The signed-in user, from the ALB's header only.
async fn signed_in(app: &App, headers: &HeaderMap) -> Result<VerifiedUser, SignInError> {
    let token = headers
        .get("x-amzn-oidc-data")
        .and_then(|v| v.to_str().ok())
        .ok_or(SignInError::NoHeader)?;
    app.alb
        .verify(token, unix_now())
        .await
        .map_err(SignInError::Refused)
}

/// Complete the session for `user`, and what that came to.
async fn complete(app: &App, session: &str, user: &VerifiedUser) -> Outcome {
    let answer = app
        .identity
        .complete_session(session, &UserRef::UserId(user.id().as_str().to_string()))
        .await;
    match answer {
        Ok(()) => Outcome::Bound,
        Err(e) => outcome(&e),
    }
}

/// The page for a refused completion, by AgentCore's exception type and
/// fields alone. AgentCore answers a session that expired, was declined or
/// used, or was started by someone else, all with `AccessDeniedException`:
/// one page says so for all of them.
fn outcome(e: &IdentityError) -> Outcome {
    match e {
        IdentityError::AccessDenied { .. } => Outcome::Refused,
        IdentityError::NotFound { .. } => Outcome::Expired,
        IdentityError::Validation {
            reason: Some(r), ..
        } if r == "ResourceConflict" => Outcome::NotFinished,
        IdentityError::Validation { .. } => Outcome::Malformed,
        e => {
            tracing::error!("CompleteResourceTokenAuth failed: {e}");
            Outcome::Unavailable
        }
    }
}

fn session_id(s: &str) -> bool {
    airlock_identity::session_uri::is_well_formed(s)
}

fn tool_name(s: &str) -> bool {
    airlock_policy::ToolName::is_valid(s)
}

async fn ping() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"Healthy"}"#,
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn export(State(app): State<Arc<App>>) -> Response {
    match TextEncoder::new().encode_to_string(&app.registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// On every answer: never cached, never framed, nothing loaded, no referrer.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "b{:x}-{}",
        airlock_audit::unix_now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn unix_now() -> i64 {
    (airlock_audit::unix_now_ms() / 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_identity::Operation;

    #[test]
    fn each_refusal_gets_its_page_by_type_and_reason_alone() {
        let op = Operation::CompleteResourceTokenAuth;
        let m = || "whatever the service says".to_string();
        let denied = IdentityError::AccessDenied { op, message: m() };
        assert_eq!(outcome(&denied), Outcome::Refused);
        let unknown = IdentityError::NotFound { op, message: m() };
        assert_eq!(outcome(&unknown), Outcome::Expired);
        let validation = |reason: Option<&str>| IdentityError::Validation {
            op,
            message: "the user has not finished authorizing".into(),
            reason: reason.map(str::to_string),
        };
        assert_eq!(
            outcome(&validation(Some("ResourceConflict"))),
            Outcome::NotFinished
        );
        assert_eq!(
            outcome(&validation(Some("FieldValidationFailed"))),
            Outcome::Malformed
        );
        assert_eq!(
            outcome(&validation(None)),
            Outcome::Malformed,
            "English is not read"
        );
        let theirs = IdentityError::Unauthorized { op, message: m() };
        assert_eq!(outcome(&theirs), Outcome::Unavailable);
    }

    #[test]
    fn session_ids_follow_agentcores_pattern_and_nothing_else() {
        assert!(session_id("urn:ietf:params:oauth:request_uri:abc-._~XYZ09"));
        for bad in [
            "",
            "urn:ietf:params:oauth:request_uri:",
            "urn:ietf:params:oauth:request_uri:a b",
            "urn:ietf:params:oauth:request_uri:a/b",
            "urn:ietf:params:oauth:request_uri:<script>",
            "https://evil.example/urn:ietf:params:oauth:request_uri:a",
        ] {
            assert!(!session_id(bad), "{bad}");
        }
        let long = format!("{}{}", airlock_identity::session_uri::PREFIX, "a".repeat(1024));
        assert!(!session_id(&long));
    }

    #[test]
    fn only_a_tool_name_is_shown_as_one() {
        assert!(tool_name("github-issues"));
        for bad in ["", "-x", "A", "<b>", "a b", &"a".repeat(65)] {
            assert!(!tool_name(bad), "{bad}");
        }
    }
}
