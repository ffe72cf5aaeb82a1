//! The HTTP surface: AgentCore's data-plane operations (SigV4-signed, each
//! caller limited to the operations it lists) and the OAuth callback.

use std::sync::Arc;

use airlock_identity::Operation as Op;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::IdentityServiceError;
use crate::model::{TokenAnswer, WorkloadDescription};
use crate::service::Service;
use crate::sigv4;

mod callback;

const MAX_BODY: usize = 64 * 1024;

/// AgentCore's answer to a refused call: the exception's status, its name in
/// `x-amzn-errortype`, and a JSON body with `message` (and, for a
/// ValidationException, `reason`).
impl IntoResponse for IdentityServiceError {
    fn into_response(self) -> Response {
        let status = match &self {
            IdentityServiceError::Validation { .. } => StatusCode::BAD_REQUEST,
            IdentityServiceError::AccessDenied(_) => StatusCode::FORBIDDEN,
            IdentityServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IdentityServiceError::ResourceNotFound(_) => StatusCode::NOT_FOUND,
            IdentityServiceError::Conflict(_) => StatusCode::CONFLICT,
            IdentityServiceError::InternalServer(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut body = json!({ "message": self.message() });
        if let Some(reason) = self.reason() {
            body["reason"] = json!(reason.as_str());
        }
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            "x-amzn-errortype",
            HeaderValue::from_static(self.exception()),
        );
        response
    }
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
            get(callback::callback),
        )
        .with_state(service)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, IdentityServiceError> {
    serde_json::from_slice(body)
        .map_err(|e| IdentityServiceError::validation(format!("invalid request body: {e}")))
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// Verify the signature and the caller's permission, then run the operation.
async fn call(s: &Service, op: Op, request: Request) -> Result<Response, IdentityServiceError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| IdentityServiceError::validation("the request body is over 64 KiB"))?;
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
    .map_err(|r| IdentityServiceError::unauthorized(format!("signature refused: {}", r.0)))?;
    let caller = &s.callers[&signed.access_key_id];
    if !caller.operations.contains(op.name()) {
        return Err(IdentityServiceError::denied(format!(
            "caller {} may not call {}",
            signed.access_key_id,
            op.name()
        )));
    }
    tracing::debug!(target: "airlock::identity", op = op.name(), caller = %signed.access_key_id, "call");
    let answer = match op {
        Op::WorkloadToken | Op::WorkloadTokenForUserId | Op::WorkloadTokenForJwt => {
            let token = s.workload_token(op, parse(&body)?).await?;
            json!({ "workloadAccessToken": token.expose() })
        }
        Op::ResourceOauth2Token => token_answer(s.oauth2_token(parse(&body)?).await?),
        Op::ResourceApiKey => json!({ "apiKey": s.api_key(parse(&body)?)?.expose() }),
        Op::CompleteResourceTokenAuth => {
            s.complete(parse(&body)?).await?;
            json!({})
        }
        Op::CreateWorkloadIdentity => describe(s.create_workload(parse(&body)?)?),
        Op::GetWorkloadIdentity => describe(s.get_workload(parse(&body)?)?),
        Op::UpdateWorkloadIdentity => describe(s.update_workload(parse(&body)?)?),
    };
    Ok(ok(answer))
}

/// GetResourceOauth2Token's answer: a token, or where consent stands.
fn token_answer(answer: TokenAnswer) -> Value {
    match answer {
        TokenAnswer::AccessToken(token) => json!({ "accessToken": token.expose() }),
        TokenAnswer::ConsentNeeded {
            authorization_url,
            session_uri,
        } => json!({ "authorizationUrl": authorization_url, "sessionUri": session_uri }),
        TokenAnswer::SessionStatus {
            session_uri,
            status,
        } => json!({ "sessionUri": session_uri, "sessionStatus": status }),
    }
}

/// A workload identity, as the control plane's operations answer.
fn describe(w: WorkloadDescription) -> Value {
    json!({
        "name": w.name,
        "workloadIdentityArn": w.arn,
        "allowedResourceOauth2ReturnUrls": w.allowed_return_urls,
        "createdTime": w.created,
        "lastUpdatedTime": w.updated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: IdentityServiceError) -> (StatusCode, String, String) {
        let r = e.into_response();
        let kind = r.headers()["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .to_string();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), MAX_BODY).await.unwrap();
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn errors_answer_as_agentcore_does() {
        let cases = [
            (
                IdentityServiceError::validation("m"),
                400,
                "ValidationException",
                r#"{"message":"m","reason":"FieldValidationFailed"}"#,
            ),
            (
                IdentityServiceError::not_ready("m"),
                400,
                "ValidationException",
                r#"{"message":"m","reason":"ResourceConflict"}"#,
            ),
            (
                IdentityServiceError::invalid_session(),
                403,
                "AccessDeniedException",
                r#"{"message":"Invalid or expired session"}"#,
            ),
            (
                IdentityServiceError::unauthorized("m"),
                401,
                "UnauthorizedException",
                r#"{"message":"m"}"#,
            ),
            (
                IdentityServiceError::not_found("m"),
                404,
                "ResourceNotFoundException",
                r#"{"message":"m"}"#,
            ),
            (
                IdentityServiceError::conflict("m"),
                409,
                "ConflictException",
                r#"{"message":"m"}"#,
            ),
            (
                crate::error::internal("disk full at /secret/path"),
                500,
                "InternalServerException",
                r#"{"message":"the identity service failed; see its log"}"#,
            ),
        ];
        for (e, status, kind, body) in cases {
            assert_eq!(
                answer(e).await,
                (
                    StatusCode::from_u16(status).unwrap(),
                    kind.into(),
                    body.into()
                )
            );
        }
    }
}
