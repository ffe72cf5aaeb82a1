//! The HTTP surface: AgentCore's data-plane operations (SigV4-signed, each
//! caller limited to the operations it lists) and the OAuth callback.

use std::sync::Arc;

use airlock_identity::Operation as Op;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::Service;
use crate::sigv4;

const MAX_BODY: usize = 64 * 1024;

/// An AgentCore-style error: status, `x-amzn-errortype`, JSON `message`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    /// A ValidationException's `reason`.
    reason: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn validation(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "ValidationException",
            reason: "FieldValidationFailed",
            message: m.into(),
        }
    }
    /// A request that does not fit the resource's state (AgentCore's
    /// `ValidationException` with reason `ResourceConflict`).
    pub(crate) fn not_ready(m: impl Into<String>) -> ApiError {
        ApiError {
            reason: "ResourceConflict",
            ..ApiError::validation(m)
        }
    }
    pub(crate) fn denied(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "AccessDeniedException",
            reason: "",
            message: m.into(),
        }
    }
    pub(crate) fn unauthorized(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "UnauthorizedException",
            reason: "",
            message: m.into(),
        }
    }
    pub(crate) fn not_found(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "ResourceNotFoundException",
            reason: "",
            message: m.into(),
        }
    }
    pub(crate) fn conflict(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            kind: "ConflictException",
            reason: "",
            message: m.into(),
        }
    }
    pub(crate) fn internal(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "InternalServerException",
            reason: "",
            message: m.into(),
        }
    }
    pub(crate) fn invalid_session() -> ApiError {
        ApiError::denied("Invalid or expired session")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "message": self.message });
        if self.kind == "ValidationException" {
            body["reason"] = json!(self.reason);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        response
    }
}

/// A storage or other internal failure: logged in full, answered in general.
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(target: "airlock::identity", "{e}");
    ApiError::internal("the identity service failed; see its log")
}

pub(crate) fn router(service: Arc<Service>) -> Router {
    let op = |op: Op| {
        post(
            move |State(s): State<Arc<Service>>, request: Request| async move {
                call(&s, op, request)
                    .await
                    .unwrap_or_else(IntoResponse::into_response)
            },
        )
    };
    Router::new()
        .route("/identities/GetWorkloadAccessToken", op(Op::WorkloadToken))
        .route(
            "/identities/GetWorkloadAccessTokenForUserId",
            op(Op::WorkloadTokenForUserId),
        )
        .route(
            "/identities/GetWorkloadAccessTokenForJWT",
            op(Op::WorkloadTokenForJwt),
        )
        .route("/identities/oauth2/token", op(Op::ResourceOauth2Token))
        .route("/identities/api-key", op(Op::ResourceApiKey))
        .route(
            "/identities/CompleteResourceTokenAuth",
            op(Op::CompleteResourceTokenAuth),
        )
        .route(
            "/identities/CreateWorkloadIdentity",
            op(Op::CreateWorkloadIdentity),
        )
        .route(
            "/identities/GetWorkloadIdentity",
            op(Op::GetWorkloadIdentity),
        )
        .route(
            "/identities/UpdateWorkloadIdentity",
            op(Op::UpdateWorkloadIdentity),
        )
        .route(
            "/identities/oauth2/callback/{provider}",
            get(crate::callback::callback),
        )
        .with_state(service)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkloadTokenInput {
    pub(crate) workload_name: String,
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    #[serde(default)]
    pub(crate) user_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OAuth2TokenInput {
    pub(crate) workload_identity_token: String,
    pub(crate) resource_credential_provider_name: String,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) oauth2_flow: String,
    #[serde(default)]
    pub(crate) resource_oauth2_return_url: Option<String>,
    #[serde(default)]
    pub(crate) custom_state: Option<String>,
    #[serde(default)]
    pub(crate) force_authentication: Option<bool>,
    #[serde(default)]
    pub(crate) session_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiKeyInput {
    pub(crate) workload_identity_token: String,
    pub(crate) resource_credential_provider_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CompleteInput {
    pub(crate) session_uri: String,
    pub(crate) user_identifier: UserIdentifierInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserIdentifierInput {
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    #[serde(default)]
    pub(crate) user_token: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::validation(format!("invalid request body: {e}")))
}

pub(crate) fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// Verify the signature and the caller's permission, then run the operation.
async fn call(s: &Service, op: Op, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::validation("the request body is over 64 KiB"))?;
    // Signatures are checked against real time: callers sign with it.
    let signed = sigv4::verify(
        parts.method.as_str(),
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        &parts.headers,
        &body,
        airlock_identity::Clock::unix(&airlock_identity::SystemClock),
        |akid| s.callers.get(akid).map(|c| c.secret.clone()),
    )
    .map_err(|r| ApiError::unauthorized(format!("signature refused: {}", r.0)))?;
    let caller = &s.callers[&signed.access_key_id];
    if !caller.operations.contains(op.name()) {
        return Err(ApiError::denied(format!(
            "caller {} may not call {}",
            signed.access_key_id,
            op.name()
        )));
    }
    tracing::debug!(target: "airlock::identity", op = op.name(), caller = %signed.access_key_id, "call");
    match op {
        Op::WorkloadToken | Op::WorkloadTokenForUserId | Op::WorkloadTokenForJwt => {
            s.workload_token(op, parse(&body)?).await
        }
        Op::ResourceOauth2Token => s.oauth2_token(parse(&body)?).await,
        Op::ResourceApiKey => s.api_key(parse(&body)?),
        Op::CompleteResourceTokenAuth => s.complete(parse(&body)?).await,
        Op::CreateWorkloadIdentity => s.create_workload(parse(&body)?),
        Op::GetWorkloadIdentity => s.get_workload(parse(&body)?),
        Op::UpdateWorkloadIdentity => s.update_workload(parse(&body)?),
    }
}
