//! Who is calling: every request is verified before anything is served,
//! by the identities its listener accepts. A request that proves nothing
//! gets a 401 that says what was missing and nothing that helps guessing.

use std::sync::Arc;

use airlock_policy::UserId;
use airlock_verify::{AlbVerifier, JwtVerifier, Secret, VerifiedUser};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::{IdentityMode, InboundConfig};
use crate::resource::{self, Resource};

const ALB_HEADER: &str = "x-amzn-oidc-data";
/// Where AgentCore Runtime hands the container the caller's workload access token.
const RUNTIME_TOKEN_HEADER: &str = "workloadaccesstoken";
/// The user id the runtime was invoked for (`runtimeUserId`).
const RUNTIME_USER_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-user-id";

/// The verifiers the configuration names.
pub(crate) struct Inbound {
    alb: Option<AlbVerifier>,
    jwt: Option<JwtVerifier>,
    runtime: bool,
    local: Option<VerifiedUser>,
}

/// `[identity]` names something that cannot be verified against.
#[derive(Debug, thiserror::Error)]
pub enum InboundConfigError {
    /// `local_user` is not a valid user id.
    #[error("identity.local_user: {0}")]
    LocalUser(airlock_policy::PolicyError),
}

/// Why a request was not served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InboundError {
    /// Nothing to verify.
    Missing,
    /// A runtime workload token without a user it is for.
    NoRuntimeUser,
    /// A kind of credential this listener does not take.
    NotAccepted(&'static str),
    /// A credential that did not verify (the reason goes to the log only).
    Refused,
}

impl Inbound {
    /// The verifiers of `config`, trusting `known` (the façade) too.
    pub(crate) fn new(
        config: &InboundConfig,
        known: Option<airlock_verify::KnownIssuer>,
    ) -> Result<Inbound, InboundConfigError> {
        let local = match &config.local_user {
            Some(name) => Some(VerifiedUser::local(
                UserId::parse(name).map_err(InboundConfigError::LocalUser)?,
            )),
            None => None,
        };
        let mut jwt = JwtVerifier::new(config.jwt_issuers.clone());
        if let Some(known) = known {
            jwt = jwt.with_known(known);
        }
        Ok(Inbound {
            alb: config.alb.clone().map(AlbVerifier::new),
            jwt: (!jwt.is_empty()).then_some(jwt),
            runtime: config.agentcore_runtime,
            local,
        })
    }

    /// The identity modes configured.
    pub(crate) fn configured(&self) -> Vec<IdentityMode> {
        if self.runtime {
            // The issuers verify the token the runtime passes on, nothing else.
            return vec![IdentityMode::AgentcoreRuntime];
        }
        let mut modes = Vec::new();
        if self.alb.is_some() {
            modes.push(IdentityMode::Alb);
        }
        if self.jwt.is_some() {
            modes.push(IdentityMode::Bearer);
        }
        if self.runtime {
            modes.push(IdentityMode::AgentcoreRuntime);
        }
        modes
    }

    /// The verified caller of a request with `headers`, by the modes in `accept`.
    pub(crate) async fn verify(
        &self,
        headers: &HeaderMap,
        accept: &[IdentityMode],
    ) -> Result<VerifiedUser, InboundError> {
        if let Some(value) = headers.get(RUNTIME_TOKEN_HEADER) {
            if !(self.runtime && accept.contains(&IdentityMode::AgentcoreRuntime)) {
                return Err(InboundError::NotAccepted("AgentCore Runtime workload tokens"));
            }
            return self.vouched_by_runtime(value, headers).await;
        }
        if let Some(value) = headers.get(ALB_HEADER) {
            let (Some(alb), true) = (&self.alb, accept.contains(&IdentityMode::Alb)) else {
                return Err(InboundError::NotAccepted("load-balancer sign-ins"));
            };
            let value = value.to_str().map_err(|_| InboundError::Refused)?;
            return alb.verify(value, now()).await.map_err(|e| {
                tracing::info!(reason = %e, "ALB header refused");
                InboundError::Refused
            });
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let (Some(jwt), true) = (&self.jwt, accept.contains(&IdentityMode::Bearer)) else {
                return Err(InboundError::NotAccepted("bearer tokens"));
            };
            return verify_bearer(jwt, value).await;
        }
        self.local.clone().ok_or(InboundError::Missing)
    }

    /// The runtime's workload token, for the user of the JWT it passed on
    /// (verified here, and required when issuers are configured; a user id
    /// the runtime names must be its `sub`) or else the user id it was
    /// invoked with.
    async fn vouched_by_runtime(
        &self,
        token: &HeaderValue,
        headers: &HeaderMap,
    ) -> Result<VerifiedUser, InboundError> {
        let token = token
            .to_str()
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or(InboundError::Refused)?;
        let named = headers
            .get(RUNTIME_USER_HEADER)
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        if let Some(jwt) = &self.jwt {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .ok_or(InboundError::NoRuntimeUser)?;
            let user = verify_bearer(jwt, bearer).await?;
            if named.is_some_and(|n| n != user.id().as_str()) {
                tracing::info!("the runtime's user id is not its token's subject");
                return Err(InboundError::Refused);
            }
            return Ok(user.with_runtime_token(token));
        }
        let user = named.ok_or(InboundError::NoRuntimeUser)?;
        VerifiedUser::vouched_by_runtime(user, token).map_err(|e| {
            tracing::info!(reason = %e, "runtime user id refused");
            InboundError::Refused
        })
    }
}

async fn verify_bearer(jwt: &JwtVerifier, value: &HeaderValue) -> Result<VerifiedUser, InboundError> {
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(InboundError::Refused)?;
    jwt.verify(token).await.map_err(|e| {
        tracing::info!(reason = %e, "bearer token refused");
        InboundError::Refused
    })
}

fn now() -> i64 {
    crate::audit::unix_now() as i64
}

impl InboundError {
    /// The 401, with the challenge of `resource` when the listener takes
    /// bearer tokens for it.
    fn response(self, resource: Option<&Resource>) -> Response {
        let refused = self == InboundError::Refused;
        let message = match self {
            InboundError::Missing => {
                "no credentials: sign in through the load balancer, or send Authorization: Bearer <token>".to_string()
            }
            InboundError::NoRuntimeUser => {
                "AgentCore Runtime named no user: invoke it with a runtime user id, or (with jwt_issuers configured, required) pass the caller's Authorization header through".to_string()
            }
            InboundError::NotAccepted(what) => format!("this endpoint does not accept {what}"),
            InboundError::Refused => "the credentials were not accepted".to_string(),
        };
        let mut response = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "unauthenticated", "message": message})),
        )
            .into_response();
        let challenge = match resource {
            Some(r) => r.challenge(refused),
            None => HeaderValue::from_static("Bearer"),
        };
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        response
    }
}

/// A listener's accepted identities and the verifiers.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) inbound: Arc<Inbound>,
    pub(crate) accept: Arc<[IdentityMode]>,
    /// The protected resource, when this listener takes bearer tokens for it.
    pub(crate) resource: Option<Arc<Resource>>,
    /// The largest request body, for reading an MCP request's method.
    pub(crate) max_body: usize,
}

/// Middleware: verify the caller, or answer 401; the verified user rides in
/// the request's extensions to the handler (and through rmcp to the MCP handler).
pub(crate) async fn authenticate(
    State(gate): State<Gate>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match gate.inbound.verify(request.headers(), &gate.accept).await {
        Ok(user) => user,
        Err(e) => return e.response(gate.resource.as_deref()),
    };
    // A token limited by scopes: the request needs each of its scopes.
    if let (Some(granted), Some(resource)) = (user.granted_scopes(), &gate.resource) {
        let granted: Vec<String> = granted.into_iter().map(str::to_string).collect();
        let has = |s: &str| granted.iter().any(|g| g == s);
        let path = request.uri().path().to_string();
        let mut needed = resource::needed(&path, None);
        // Only a call needs more than listing; read the body only then.
        if !has(resource::CALL) && path.starts_with("/mcp") {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, gate.max_body).await else {
                return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
            };
            needed = resource::needed(&path, Some(&bytes));
            request = Request::from_parts(parts, axum::body::Body::from(bytes));
        }
        if !needed.iter().all(|n| has(n)) {
            return resource.insufficient_scope(&needed);
        }
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}
