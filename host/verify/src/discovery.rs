//! OpenID Connect / RFC 8414 discovery documents and the HTTP client that
//! fetches them.

use std::time::Duration;

use serde::Deserialize;

/// The fields of a discovery document Airlock uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Discovery {
    /// The issuer identifier.
    pub issuer: Option<String>,
    /// Where users authorize.
    pub authorization_endpoint: Option<String>,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: Option<String>,
    /// The issuer's signing keys.
    pub jwks_uri: Option<String>,
    /// Whether authorization responses carry `iss` (RFC 9207).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// A document could not be fetched or read. Names the URL, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct FetchError {
    /// What was fetched.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// A request built elsewhere could not be sent, or its answer not read. The
/// text is the reqwest error and its causes on one line, without the URL
/// (whose query may carry data); the causes are in the text, so the reqwest
/// error is not also given as the source.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer: connecting, TLS, timeout or the request itself failed.
    #[error("{}", one_line(.0))]
    Request(reqwest::Error),
    /// An answer came, but its body could not be read.
    #[error("{}", one_line(.0))]
    Body(reqwest::Error),
}

/// The HTTP client for identity providers: no redirects, bounded time.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .expect("the TLS backend initialises")
}

/// GET `url` and parse its JSON body.
pub async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, FetchError> {
    let fail = |reason: String| FetchError {
        url: url.to_string(),
        reason,
    };
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| fail(without_url(e)))?;
    if !response.status().is_success() {
        return Err(fail(format!("answered {}", response.status())));
    }
    response
        .json()
        .await
        .map_err(|e| fail(format!("not the expected JSON: {e}")))
}

/// Send a request built elsewhere (the `oauth2` crate's) with `http`; the
/// answer whole. A failure names no URL, whose query may carry data.
pub async fn send(
    http: &reqwest::Client,
    request: ::http::Request<Vec<u8>>,
) -> Result<::http::Response<Vec<u8>>, SendError> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| SendError::Request(e.without_url()))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| SendError::Body(e.without_url()))?
        .to_vec();
    let mut answer = ::http::Response::new(body);
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer.headers_mut().remove(::http::header::CONTENT_LENGTH);
    Ok(answer)
}

/// A reqwest error and its sources in one line, without the URL (whose
/// query may carry data).
pub fn without_url(e: reqwest::Error) -> String {
    one_line(&e.without_url())
}

/// `e` and its sources, joined by `: `.
fn one_line(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
