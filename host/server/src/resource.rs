//! Airlock as an OAuth 2.1 protected resource, the way MCP clients expect:
//! its metadata (RFC 9728) at the path and root well-known URLs, a 401 that
//! says where the metadata is and which scopes to ask for, a 403 naming every
//! scope a call needs (`insufficient_scope`), and, on every listener, the
//! `Host` and `Origin` a browser page cannot forge its way past (DNS
//! rebinding, cross-site requests riding a sign-in cookie).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use url::Url;

/// The scopes Airlock's tokens carry (the façade's, `airlock_oauth::SCOPES`).
pub(crate) const LIST: &str = "tools:list";
pub(crate) const CALL: &str = "tools:call";

/// `public_url` or the authorization servers cannot describe the resource.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// `public_url` is not a URL.
    #[error("public_url `{url}`: {error}")]
    Syntax {
        /// As configured.
        url: String,
        /// Why it does not parse.
        error: url::ParseError,
    },
    /// Neither HTTPS nor HTTP on loopback.
    #[error("public_url `{0}`: use https (http only on loopback, for development)")]
    Insecure(String),
    /// Not the MCP endpoint's URL: no path, or a query or fragment.
    #[error("public_url `{0}`: the MCP endpoint's URL, with its path (…/mcp) and no query")]
    NotEndpoint(String),
    /// No authorization server to name in the metadata.
    #[error(
        "public_url needs an authorization server: configure [oauth] (the façade) or authorization_servers"
    )]
    NoAuthorizationServer,
}

/// The protected resource: the public MCP URL and who issues its tokens.
pub(crate) struct Resource {
    url: String,
    metadata_url: String,
    metadata_path: String,
    authorization_servers: Vec<String>,
}

impl Resource {
    /// The resource at `public_url`, its tokens from `authorization_servers`.
    pub(crate) fn new(
        public_url: &str,
        authorization_servers: Vec<String>,
    ) -> Result<Resource, ResourceError> {
        let url = Url::parse(public_url).map_err(|error| ResourceError::Syntax {
            url: public_url.to_string(),
            error,
        })?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(ResourceError::Insecure(public_url.to_string()));
        }
        if url.query().is_some() || url.fragment().is_some() || url.path() == "/" {
            return Err(ResourceError::NotEndpoint(public_url.to_string()));
        }
        if authorization_servers.is_empty() {
            return Err(ResourceError::NoAuthorizationServer);
        }
        let path = url.path().trim_end_matches('/').to_string();
        let metadata_path = format!("/.well-known/oauth-protected-resource{path}");
        Ok(Resource {
            metadata_url: format!("{}{metadata_path}", url.origin().ascii_serialization()),
            url: public_url.trim_end_matches('/').to_string(),
            metadata_path,
            authorization_servers,
        })
    }

    /// The resource identifier (the public MCP URL).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The origin browsers show for it.
    pub(crate) fn origin(&self) -> String {
        Url::parse(&self.url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }

    fn metadata(&self) -> Value {
        json!({
            "resource": self.url,
            "authorization_servers": self.authorization_servers,
            "scopes_supported": [LIST, CALL],
            "bearer_methods_supported": ["header"],
            "resource_name": "Airlock",
        })
    }

    /// The 401's challenge: where the metadata is, the scopes to ask for,
    /// and `invalid_token` when a token was sent and refused.
    pub(crate) fn challenge(&self, refused: bool) -> HeaderValue {
        let error = if refused {
            "error=\"invalid_token\", "
        } else {
            ""
        };
        HeaderValue::from_str(&format!(
            "Bearer {error}resource_metadata=\"{}\", scope=\"{LIST} {CALL}\"",
            self.metadata_url
        ))
        .expect("a URL is a valid header value")
    }

    /// The 403 for a token without every scope in `needed`.
    pub(crate) fn insufficient_scope(&self, needed: &[&str]) -> Response {
        let challenge = format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
            needed.join(" "),
            self.metadata_url
        );
        let mut response = (
            StatusCode::FORBIDDEN,
            axum::Json(json!({
                "error": "insufficient_scope",
                "message": format!("this needs the scopes {}: sign in again granting them", needed.join(" ")),
            })),
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).expect("scopes and URLs are valid header values"),
        );
        response
    }

    /// The metadata's routes, served without authentication.
    pub(crate) fn router(self: Arc<Self>) -> Router {
        let path = self.metadata_path.clone();
        let serve = get(|State(r): State<Arc<Resource>>| async move { axum::Json(r.metadata()) });
        let router = Router::new().route("/.well-known/oauth-protected-resource", serve.clone());
        let router = if path == "/.well-known/oauth-protected-resource" {
            router
        } else {
            router.route(&path, serve)
        };
        router.with_state(self)
    }
}

/// The scopes a request needs: `tools:list` for anything, and `tools:call`
/// to run a tool (`/invocations`, or MCP's `tools/call` in `body`).
pub(crate) fn needed(path: &str, body: Option<&[u8]>) -> Vec<&'static str> {
    if path.starts_with("/invocations") {
        return vec![LIST, CALL];
    }
    let calls = body
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .is_some_and(|v| {
            let call = |m: &Value| m["method"] == "tools/call";
            match &v {
                Value::Array(batch) => batch.iter().any(call),
                one => call(one),
            }
        });
    if calls { vec![LIST, CALL] } else { vec![LIST] }
}

/// Which `Host` and `Origin` a listener answers.
#[derive(Clone)]
pub(crate) struct Origins {
    /// Local mode: loopback names only, for both.
    pub(crate) local: bool,
    /// Browser origins allowed (`scheme://host[:port]`).
    pub(crate) origins: Arc<[String]>,
    /// Host names allowed; empty: any (behind a load balancer).
    pub(crate) hosts: Arc<[String]>,
}

fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() {
                name
            } else {
                host
            }
        }
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// Middleware: refuse a `Host` or `Origin` this listener does not answer
/// (403, nothing run). Requests without `Origin` (not from a browser page)
/// pass the origin check.
pub(crate) async fn guard(State(o): State<Origins>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.to_ascii_lowercase());
    let host_ok = match &host {
        Some(h) if o.local => loopback_host(h),
        Some(h) => {
            o.hosts.is_empty()
                || o.hosts
                    .iter()
                    .any(|a| a == h || h.split(':').next() == Some(a))
        }
        None => !o.local,
    };
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("?"));
    let origin_ok = match origin {
        None => true,
        Some(origin) if o.local => Url::parse(origin)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| loopback_host(h) && (u.scheme() == "http" || u.scheme() == "https"))
            })
            .unwrap_or(false),
        Some(origin) => o.origins.iter().any(|a| a.eq_ignore_ascii_case(origin)),
    };
    if host_ok && origin_ok {
        return next.run(request).await;
    }
    let what = if host_ok { "Origin" } else { "Host" };
    tracing::info!(host = ?host, origin = ?origin, "refused: {what} not served here");
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({
            "error": "forbidden_origin",
            "message": format!("this server does not answer requests with this {what}"),
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_challenges_name_the_public_url() {
        let r = Resource::new(
            "https://airlock.example.com/mcp",
            vec!["https://airlock.example.com".into()],
        )
        .unwrap();
        assert_eq!(r.metadata()["resource"], "https://airlock.example.com/mcp");
        assert_eq!(
            r.challenge(false),
            "Bearer resource_metadata=\"https://airlock.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"tools:list tools:call\""
        );
        assert!(
            r.challenge(true)
                .to_str()
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\"")
        );
        let denied = r.insufficient_scope(&[LIST, CALL]);
        assert_eq!(denied.status(), 403);
        assert!(
            denied.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("error=\"insufficient_scope\", scope=\"tools:list tools:call\"")
        );
        for bad in [
            "http://airlock.example.com/mcp",
            "https://a.example.com/",
            "https://a.example.com/mcp?x=1",
        ] {
            assert!(
                Resource::new(bad, vec!["https://a".into()]).is_err(),
                "{bad}"
            );
        }
        assert!(Resource::new("https://a.example.com/mcp", vec![]).is_err());
        assert!(
            Resource::new(
                "http://127.0.0.1:8000/mcp",
                vec!["http://127.0.0.1:8000".into()]
            )
            .is_ok()
        );
    }

    #[test]
    fn a_tool_call_needs_the_call_scope_wherever_it_comes() {
        assert_eq!(needed("/invocations", None), [LIST, CALL]);
        assert_eq!(needed("/mcp", Some(br#"{"method":"tools/list"}"#)), [LIST]);
        assert_eq!(
            needed("/mcp", Some(br#"{"method":"tools/call"}"#)),
            [LIST, CALL]
        );
        assert_eq!(
            needed(
                "/mcp",
                Some(br#"[{"method":"ping"},{"method":"tools/call"}]"#)
            ),
            [LIST, CALL]
        );
        assert_eq!(needed("/mcp", Some(b"not json")), [LIST]);
    }

    #[test]
    fn loopback_hosts_are_told_apart_from_lookalikes() {
        for good in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost:3000",
            "[::1]:8000",
            "localhost",
        ] {
            assert!(loopback_host(good), "{good}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "10.0.0.1:80",
            "[::2]:1",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }
}
