//! A resource server that accepts only bearer tokens signed by the test
//! provider, for its audience, unexpired, with the `repo` scope; it records
//! what it was shown. Tests let time pass by expiring every token it has
//! seen so far (see [`ResourceServer::expire_seen`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::json;

/// One request and the token it carried.
#[derive(Debug, Clone)]
pub struct Shown {
    /// Path and query.
    pub path: String,
    /// The raw `authorization` header, if any.
    pub authorization: Option<String>,
    /// The token's `sub`, when it verified.
    pub sub: Option<String>,
    /// The token's scopes, when it verified.
    pub scopes: Vec<String>,
    /// The method.
    pub method: String,
    /// The request body.
    pub body: Vec<u8>,
}

struct Inner {
    issuer: String,
    audience: String,
    keys: JwkSet,
    expired: Mutex<HashSet<String>>,
    shown: Mutex<Vec<Shown>>,
}

/// The server.
pub struct ResourceServer {
    /// Where it listens.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
}

impl ResourceServer {
    /// Start, trusting `issuer`'s keys for tokens with `audience`.
    pub async fn start(issuer: &str, audience: &str) -> ResourceServer {
        let fetch = |url: String| async move {
            reqwest::get(&url)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        };
        let discovery = fetch(format!("{issuer}/.well-known/openid-configuration")).await;
        let keys: JwkSet =
            serde_json::from_value(fetch(discovery["jwks_uri"].as_str().unwrap().into()).await)
                .unwrap();
        let inner = Arc::new(Inner {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            keys,
            expired: Mutex::new(HashSet::new()),
            shown: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/issues", get(issues).post(create_issue))
            .route("/redirect", get(redirect))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ResourceServer { addr, inner }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Time passes: every token shown so far has expired from now on.
    pub fn expire_seen(&self) {
        let seen: Vec<String> = self
            .shown()
            .into_iter()
            .filter_map(|s| s.authorization?.strip_prefix("Bearer ").map(str::to_string))
            .collect();
        self.inner.expired.lock().unwrap().extend(seen);
    }

    /// Everything shown so far.
    pub fn shown(&self) -> Vec<Shown> {
        self.inner.shown.lock().unwrap().clone()
    }
}

impl Inner {
    fn verify(&self, headers: &HeaderMap) -> Result<Claims, &'static str> {
        let value = headers.get("authorization").ok_or("no token")?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("not a bearer token")?;
        let header = decode_header(token).map_err(|_| "not a JWT")?;
        let jwk = header
            .kid
            .as_deref()
            .and_then(|k| self.keys.find(k))
            .ok_or("unknown key")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| "bad key")?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.leeway = 0;
        if self.expired.lock().unwrap().contains(token) {
            return Err("expired token");
        }
        decode::<Claims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|_| "invalid token")
    }

    fn record(&self, path: String, headers: &HeaderMap, claims: Option<&Claims>) {
        self.record_with(path, "GET", Vec::new(), headers, claims);
    }

    fn record_with(
        &self,
        path: String,
        method: &str,
        body: Vec<u8>,
        headers: &HeaderMap,
        claims: Option<&Claims>,
    ) {
        self.shown.lock().unwrap().push(Shown {
            method: method.to_string(),
            body,
            path,
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            sub: claims.map(|c| c.sub.clone()),
            scopes: claims
                .map(|c| {
                    c.scope
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
}

fn unauthorized(reason: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            "www-authenticate",
            format!("Bearer error=\"invalid_token\", error_description=\"{reason}\""),
        )],
        axum::Json(json!({ "message": "Bad credentials" })),
    )
        .into_response()
}

async fn issues(State(s): State<Arc<Inner>>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    match s.verify(&headers) {
        Err(reason) => {
            s.record(path, &headers, None);
            unauthorized(reason)
        }
        Ok(claims) if !claims.scope.split(' ').any(|x| x == "repo") => {
            s.record(path, &headers, Some(&claims));
            (
                StatusCode::FORBIDDEN,
                axum::Json(json!({ "message": "scope repo required" })),
            )
                .into_response()
        }
        Ok(claims) => {
            s.record(path, &headers, Some(&claims));
            let sub = &claims.sub;
            axum::Json(json!([{
                "number": 1,
                "title": format!("{sub}'s issue"),
                "html_url": format!("https://github.com/{sub}/repo/issues/1"),
                "repository": { "full_name": format!("{sub}/repo") }
            }]))
            .into_response()
        }
    }
}

/// A POST: the body is recorded, so a resend after a 401 can be compared.
async fn create_issue(
    State(s): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_string();
    match s.verify(&headers) {
        Err(reason) => {
            s.record_with(path, "POST", body.to_vec(), &headers, None);
            unauthorized(reason)
        }
        Ok(claims) => {
            s.record_with(path, "POST", body.to_vec(), &headers, Some(&claims));
            (
                StatusCode::CREATED,
                axum::Json(json!({ "created": true, "bytes": body.len() })),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
struct To {
    to: String,
}

/// Sends the client elsewhere: a tool that follows must not take the token along.
async fn redirect(
    State(s): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Query(q): Query<To>,
) -> Response {
    let claims = s.verify(&headers).ok();
    s.record(uri.path().to_string(), &headers, claims.as_ref());
    Redirect::to(&q.to).into_response()
}
