//! Each request's id: the server's own, on the response, on every log line
//! of the request, and in its audit records.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// A request's id, for log lines written outside its span (MCP handlers)
/// and the audit trail: always the server's own, and the client's
/// `x-request-id` beside it (never in its place: a client could make its
/// record look like another's).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestId {
    pub(crate) id: String,
    pub(crate) client: Option<String>,
}

/// Middleware: a request id on the response and on every log line of the request.
pub(crate) async fn request_id(mut request: Request, next: Next) -> Response {
    let client = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_string);
    let id = new_id();
    request.extensions_mut().insert(RequestId {
        id: id.clone(),
        client: client.clone(),
    });
    let span = tracing::info_span!("request", request_id = %id, client_request_id = client.as_deref().unwrap_or(""), method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

fn new_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source");
    hex::encode(b)
}
