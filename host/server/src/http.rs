//! The AgentCore runtime contract: `POST /invocations` runs a tool for the
//! verified caller and answers its result, its error, or the consent the
//! user owes; `GET /ping` says whether the host can take calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use airlock_verify::VerifiedUser;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::calls::{Answer, Calls, AdmissionError};
use crate::request_id::RequestId;

/// A tool call.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Invocation {
    /// The tool's name.
    tool: String,
    /// Its input (`arguments` is accepted too).
    #[serde(default, alias = "arguments")]
    input: Option<Value>,
}

pub(crate) async fn invocations(
    State(calls): State<Arc<Calls>>,
    Extension(user): Extension<VerifiedUser>,
    id: Option<Extension<RequestId>>,
    body: Result<Json<Invocation>, JsonRejection>,
) -> Response {
    let Json(invocation) = match body {
        Ok(b) => b,
        Err(e) => {
            return refused(
                e.status(),
                "invalid_request",
                format!(
                    "{}; send {{\"tool\": NAME, \"input\": {{...}}}}",
                    e.body_text()
                ),
            );
        }
    };
    let tool = invocation.tool;
    let input = invocation.input.unwrap_or_else(|| json!({}));
    let id = id.map(|Extension(id)| id).unwrap_or_default();
    match calls.call(&id, &user, &tool, input).await {
        Ok(Answer::Output(result)) => {
            // Built by hand: `json!` would copy the result.
            let body = serde_json::Map::from_iter([
                ("status".to_string(), Value::from("ok")),
                ("tool".to_string(), Value::from(tool)),
                ("result".to_string(), result),
            ]);
            Json(Value::Object(body)).into_response()
        }
        Ok(Answer::Failed(error)) => Json(json!({
            "status": "error",
            "tool": tool,
            "error": error,
            "message": error.to_string(),
        }))
        .into_response(),
        Ok(Answer::Consent {
            provider,
            authorization_url,
        }) => Json(json!({
            "status": "authorization_required",
            "tool": tool,
            "provider": provider,
            "authorization_url": authorization_url,
            "message": consent_message(&tool, &provider, &authorization_url),
        }))
        .into_response(),
        Err(r) => refusal(r),
    }
}

/// A refused call's answer: its status, code and message, and when to retry.
fn refusal(r: AdmissionError) -> Response {
    let (status, code) = match &r {
        AdmissionError::UnknownTool(_) => (StatusCode::NOT_FOUND, "unknown_tool"),
        AdmissionError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        AdmissionError::InputTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "input_too_large"),
        AdmissionError::InvalidArguments(_) => (StatusCode::BAD_REQUEST, "invalid_arguments"),
        AdmissionError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        AdmissionError::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
        AdmissionError::AuditBacklog(_) => (StatusCode::SERVICE_UNAVAILABLE, "audit_backlog"),
    };
    let mut response = refused(status, code, r.message());
    let retry = match r {
        AdmissionError::RateLimited { retry_after_secs } => Some(retry_after_secs),
        AdmissionError::Busy | AdmissionError::AuditBacklog(_) => Some(1),
        _ => None,
    };
    if let Some(secs) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// What the user must do, for a person or a model to pass on.
pub(crate) fn consent_message(tool: &str, provider: &str, url: &str) -> String {
    format!(
        "`{tool}` needs your permission to act for you at `{provider}`. Open {url} to grant it, then call the tool again."
    )
}

fn refused(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({"status": "refused", "error": code, "message": message})),
    )
        .into_response()
}

/// Health for the runtime: busy while every call slot is taken; and how
/// the shared tool store was at the last look.
pub(crate) struct Health {
    busy: AtomicBool,
    changed: AtomicI64,
    store: std::sync::Mutex<Option<Value>>,
}

impl Health {
    pub(crate) fn new() -> Health {
        Health {
            busy: AtomicBool::new(false),
            changed: AtomicI64::new(now()),
            store: std::sync::Mutex::new(None),
        }
    }

    /// What `/ping` says of the tool store from now on.
    pub(crate) fn set_store(&self, state: Value) {
        *self.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }
}

fn now() -> i64 {
    crate::audit::unix_now() as i64
}

pub(crate) async fn ping(State((calls, health)): State<(Arc<Calls>, Arc<Health>)>) -> Json<Value> {
    let busy = calls.busy();
    if health.busy.swap(busy, Ordering::AcqRel) != busy {
        health.changed.store(now(), Ordering::Release);
    }
    let mut body = json!({
        "status": if busy { "HealthyBusy" } else { "Healthy" },
        "time_of_last_update": health.changed.load(Ordering::Acquire),
    });
    // The store being out of reach does not stop calls: the replica serves what it has.
    if let Some(store) = health
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        body["store"] = store;
    }
    Json(body)
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::BacklogFullError;

    #[tokio::test]
    async fn a_call_refused_for_the_audit_backlog_is_unavailable_for_now_and_says_why() {
        let r = refusal(AdmissionError::AuditBacklog(BacklogFullError { capacity: 7 }));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "audit_backlog", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("audit trail has 7 records waiting"), "{message}");
    }
}
