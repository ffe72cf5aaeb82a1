//! The admin API, on its own listener with its own credential: upload,
//! list and remove tools. Uploads go through [`Intake`]'s checks.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::AdminKey;
use crate::intake::{ChangeError, Intake, UploadError};
use crate::registry::Source;
use crate::signing::SignatureError;

/// The admin API's state: the intake and who may use it.
pub(crate) struct Admin {
    pub(crate) intake: Arc<Intake>,
    pub(crate) keys: Vec<AdminKey>,
    /// Admins by a bearer JWT and a group.
    pub(crate) oidc: Option<(airlock_verify::JwtVerifier, String)>,
}

impl UploadError {
    fn status(&self) -> StatusCode {
        match self {
            UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::NotComponent(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UploadError::NameMismatch { .. } => StatusCode::BAD_REQUEST,
            UploadError::Pinned { .. }
            | UploadError::SignerChanged { .. }
            | UploadError::UploadedElsewhere { .. } => StatusCode::CONFLICT,
            UploadError::Signature(_) => StatusCode::FORBIDDEN,
            UploadError::Policy(_) => StatusCode::FORBIDDEN,
            UploadError::Manifest(_) | UploadError::Imports(_) | UploadError::Compile(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            UploadError::Identity(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

}

impl ChangeError {
    fn into_response(self) -> Response {
        match self {
            ChangeError::Refused(refused) => {
                let mut response = problem(refused.status(), "refused", &refused.message());
                if let Ok(v) = header::HeaderValue::from_str(refused.failed_check()) {
                    response.headers_mut().insert("x-airlock-check", v);
                }
                response
            }
            ChangeError::Store(e) => {
                tracing::error!("tool store: {e}");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store",
                    "the tool store failed; nothing was changed",
                )
            }
        }
    }
}

/// The admin key a request presented, by name.
#[derive(Clone)]
struct Operator(String);

fn key_matches(key: &AdminKey, presented: &str) -> bool {
    hex::encode(Sha256::digest(presented.as_bytes())).eq_ignore_ascii_case(&key.sha256)
}

async fn authenticate(
    State(admin): State<Arc<Admin>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(presented) = presented else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send Authorization: Bearer <admin key>",
        );
    };
    let operator = match admin.keys.iter().find(|k| key_matches(k, presented)) {
        Some(key) => Some(key.name.clone()),
        None => match &admin.oidc {
            // Not a key: a sign-in of someone in the admin group, or nothing.
            Some((verifier, group)) => match verifier.verify(presented).await {
                Ok(user) if user.claims().groups.iter().any(|g| g == group) => {
                    Some(format!("oidc:{}", user.id()))
                }
                Ok(user) => {
                    tracing::info!(user = %user.id(), "admin API: signed in, not in the admin group");
                    None
                }
                Err(_) => None,
            },
            None => None,
        },
    };
    match operator {
        Some(operator) => {
            request.extensions_mut().insert(Operator(operator));
            next.run(request).await
        }
        None => problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "that is not an admin credential of this host",
        ),
    }
}

fn problem(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "message": message})),
    )
        .into_response()
}

/// The admin routes.
pub(crate) fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/admin/tools", get(list))
        .route(
            "/admin/tools/{name}",
            axum::routing::put(upload).delete(remove),
        )
        .layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(admin)
}

async fn list(State(admin): State<Arc<Admin>>) -> Response {
    let store = admin.intake.store.clone();
    // The tools served are listed either way; without the store's records
    // the answer says why, and is not a success.
    let (stored, unread) = match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(Ok(stored)) => (stored, None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(e) => (Vec::new(), Some(format!("reading the store stopped: {e}"))),
    };
    let tools: Vec<_> = admin
        .intake
        .calls
        .registry
        .all()
        .iter()
        .map(|s| {
            let kept = stored.iter().find(|t| t.name == s.name());
            json!({
                "name": s.name(),
                "version": s.tool.manifest().version,
                "digest": s.digest,
                "source": match &s.source {
                    Source::Folder(f) => f.display().to_string(),
                    Source::Store => "store".to_string(),
                },
                "uploaded_by": kept.map(|t| t.uploaded_by.clone()),
                "uploaded_at": kept.map(|t| t.uploaded_at),
                "signer": kept.and_then(|t| t.signer.clone()),
            })
        })
        .collect();
    match unread {
        None => axum::Json(json!({ "tools": tools })).into_response(),
        Some(e) => {
            tracing::warn!("admin list: the tool store could not be read: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "error": format!("the tool store could not be read ({e}): the tools served are listed without their upload records"),
                    "tools": tools,
                })),
            )
                .into_response()
        }
    }
}

async fn upload(
    State(admin): State<Arc<Admin>>,
    axum::Extension(Operator(operator)): axum::Extension<Operator>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let limit = admin.intake.max_upload_kib;
    let Ok(wasm) = axum::body::to_bytes(body, (limit << 10) + 1).await else {
        let refused = UploadError::TooLarge { limit_kib: limit };
        return admin
            .intake
            .refuse(&name, &operator, None, refused)
            .into_response();
    };
    let wasm = wasm.to_vec();
    // The armored signature, base64 so that it fits in one header line.
    let signature = match headers.get("x-airlock-signature") {
        None => None,
        Some(v) => match base64::engine::general_purpose::STANDARD
            .decode(v.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(s) => Some(s),
            None => {
                let refused = UploadError::Signature(SignatureError::Malformed);
                return admin
                    .intake
                    .refuse(&name, &operator, None, refused)
                    .into_response();
            }
        },
    };
    match admin.intake.accept(&name, wasm, signature, &operator).await {
        Ok((entry, replaced)) => {
            let status = if replaced.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                axum::Json(json!({
                    "name": entry.name,
                    "digest": entry.digest,
                    "replaced": replaced.map(|r| r.digest),
                })),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn remove(
    State(admin): State<Arc<Admin>>,
    axum::Extension(Operator(operator)): axum::Extension<Operator>,
    Path(name): Path<String>,
) -> Response {
    match admin.intake.remove(&name, &operator, None).await {
        Ok(Some(removed)) => {
            axum::Json(json!({"name": name, "removed": removed.digest})).into_response()
        }
        Ok(None) => problem(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no stored tool is named `{name}`"),
        ),
        Err(e) => e.into_response(),
    }
}
