//! MCP sessions are bounded: clients before 2026-07-28 open a session that
//! lives until it has been idle five minutes, each holding a worker. A user
//! may hold a few, all users together a few thousand; past either, a request
//! that would open one is answered 429. Every MCP request counts against the
//! user's request rate too, not only tool calls.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use airlock_policy::UserId;
use airlock_verify::VerifiedUser;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde_json::json;

const SESSION_HEADER: &str = "mcp-session-id";

/// The sessions open, by whom; and each user's request rate.
pub(crate) struct Sessions {
    manager: Arc<LocalSessionManager>,
    owners: Mutex<HashMap<String, UserId>>,
    max: usize,
    per_user: usize,
    rate: DefaultKeyedRateLimiter<UserId>,
}

impl Sessions {
    /// Sessions of `manager`, at most `max` in all and `per_user` each;
    /// `per_minute` MCP requests per user.
    pub(crate) fn new(
        manager: Arc<LocalSessionManager>,
        max: usize,
        per_user: usize,
        per_minute: u32,
    ) -> Sessions {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(per_minute.get().div_ceil(4)).unwrap_or(NonZeroU32::MIN);
        Sessions {
            manager,
            owners: Mutex::new(HashMap::new()),
            max,
            per_user,
            rate: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
        }
    }

    /// How many sessions are open (the manager drops idle ones); the
    /// owners of those it dropped are forgotten.
    async fn live(&self) -> usize {
        let live = self.manager.sessions.read().await;
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.retain(|id, _| live.keys().any(|k| k.as_ref() == id.as_str()));
        live.len()
    }
}

fn refused(retry_after: u64, message: String) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"error": "busy", "message": message})),
    )
        .into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(retry_after),
    );
    response
}

/// Middleware (after authentication): the user's request rate, and the
/// session caps for a request that would open a session.
pub(crate) async fn guard(
    State(sessions): State<Arc<Sessions>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(user) = request.extensions().get::<VerifiedUser>().map(|u| u.id().clone()) else {
        return next.run(request).await;
    };
    if let Err(wait) = sessions.rate.check_key(&user) {
        let retry = wait.wait_time_from(governor::clock::Clock::now(sessions.rate.clock()));
        return refused(
            retry.as_secs().max(1),
            "too many requests: slow down".into(),
        );
    }
    let opens = !request.headers().contains_key(SESSION_HEADER);
    if opens {
        let total = sessions.live().await;
        let mine = sessions
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|o| **o == user)
            .count();
        if total >= sessions.max {
            return refused(30, "the server holds as many MCP sessions as it may; try again shortly".into());
        }
        if mine >= sessions.per_user {
            return refused(
                30,
                format!("you hold {mine} MCP sessions, the most one user may: close one (DELETE with its Mcp-Session-Id), or let one go idle"),
            );
        }
    }
    let response = next.run(request).await;
    if opens
        && let Some(id) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        sessions
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), user);
    }
    response
}
