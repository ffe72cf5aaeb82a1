//! The OAuth callback, the browser's part of the HTTP surface: the provider
//! sends the browser here with `code` and `state`; the session moves on (see
//! `session`) and the browser continues to the binding URL. What the browser
//! is shown otherwise is a small page that names what went wrong and nothing
//! internal.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::model::CallbackQuery;
use crate::service::Service;
use crate::session::CallbackError;

pub(crate) async fn callback(
    State(s): State<Arc<Service>>,
    Path(provider): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    match s.on_callback(&provider, q).await {
        Ok(target) => Redirect::to(&target).into_response(),
        Err(CallbackError::BadRequest(m)) => page(StatusCode::BAD_REQUEST, m),
        Err(CallbackError::Unavailable(m)) => page(StatusCode::BAD_GATEWAY, m),
        Err(CallbackError::Internal) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side. Start again; if it keeps failing, tell the operator.",
        ),
    }
}

fn page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>Authorization</title><main><h1>Authorization not completed</h1><p>{}</p></main></html>",
        message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    );
    let mut r = (status, Html(body)).into_response();
    let headers = r.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}
