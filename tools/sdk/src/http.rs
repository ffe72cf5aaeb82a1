//! Outbound HTTP through `wasi:http`, for hosts the tool's manifest declares.
//!
//! The host checks every request against the manifest and adds credentials
//! for hosts covered by an OAuth grant; a tool never sets `authorization`.

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body decoded as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Body(e.to_string()))
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL could not be parsed.
    InvalidUrl(String),
    /// The host refused to build the request, e.g. a forbidden header.
    Refused(String),
    /// The request failed; the `wasi:http` error code, e.g. `HttpRequestDenied`.
    Http(String),
    /// Reading or decoding the body failed.
    Body(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            Error::Refused(m) => write!(f, "request refused: {m}"),
            Error::Http(m) => write!(f, "HTTP request failed: {m}"),
            Error::Body(m) => write!(f, "response body: {m}"),
        }
    }
}

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        crate::Error::Upstream(e.to_string())
    }
}

/// `GET url`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, Error> {
    send("GET", url, headers, None)
}

/// Send one request and read the whole response.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, Error> {
    let (scheme, authority, path) = split_url(url)?;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(&name.to_string(), &value.as_bytes().to_vec())
            .map_err(|e| Error::Refused(format!("header {name}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let set = |ok: Result<(), ()>, what: &str| ok.map_err(|()| Error::InvalidUrl(what.to_string()));
    set(request.set_method(&method), "method")?;
    set(request.set_scheme(Some(&scheme)), "scheme")?;
    set(request.set_authority(Some(authority)), "authority")?;
    set(request.set_path_with_query(Some(path)), "path")?;

    let outgoing_body = request
        .body()
        .map_err(|()| Error::Refused("request body already taken".into()))?;
    // Hand the request over first: the host reads the body while it is
    // written, so a body larger than the host's buffer cannot stall.
    let pending = outgoing_handler::handle(request, None).map_err(|e| Error::Http(code(&e)))?;
    if let Some(bytes) = body {
        let stream = outgoing_body
            .write()
            .map_err(|()| Error::Refused("request body stream".into()))?;
        for chunk in bytes.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                // A refused request closes its body: report why it was refused.
                pending.subscribe().block();
                if let Some(Ok(Err(refused))) = pending.get() {
                    return Err(Error::Http(code(&refused)));
                }
                return Err(Error::Body(stream_error(e)));
            }
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing_body, None).map_err(|e| Error::Http(code(&e)))?;

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(Error::Http(code(&e))),
        Some(Err(())) => return Err(Error::Http("response already taken".into())),
        None => return Err(Error::Http("response not ready".into())),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|()| Error::Body("response body already taken".into()))?;
    let body = read_body(&incoming)?;
    drop(incoming);
    Ok(Response { status, headers, body })
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, Error> {
    let stream = incoming
        .stream()
        .map_err(|()| Error::Body("body stream already taken".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(Error::Body(stream_error(e))),
        }
    }
    Ok(body)
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "closed".into(),
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
    }
}

/// The error code's variant name, e.g. `HttpRequestDenied`, as tools report it.
fn code(e: &ErrorCode) -> String {
    let debug = format!("{e:?}");
    let debug = debug.strip_prefix("ErrorCode::").unwrap_or(&debug);
    let end = debug.find(|c: char| !c.is_alphanumeric()).unwrap_or(debug.len());
    debug[..end].to_string()
}

fn split_url(url: &str) -> Result<(Scheme, &str, &str), Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::InvalidUrl(format!("{url}: no scheme")))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.to_string()),
    };
    let split = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(Error::InvalidUrl(format!("{url}: no host")));
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}
