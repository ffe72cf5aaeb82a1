//! `alb-dev`: a DEVELOPMENT stand-in for an AWS Application Load Balancer
//! whose listener rules run `authenticate-oidc`. For running the whole stack
//! on one machine and for tests; never put it in front of real users.
//!
//! What it does, as the ALB does: a request to an authenticated route without
//! a session is sent to the OpenID provider (authorization code flow); the
//! provider returns to `/oauth2/idpresponse`, where the code is exchanged, the
//! ID token verified and the user's claims read from the userinfo endpoint;
//! a session cookie (`AWSELBAuthSessionCookie-0`) then stands for the user.
//! Each request is forwarded with `x-amzn-oidc-data` (ES256 over base64url
//! segments WITH padding, `kid`, `signer`, `iss`, `client`, `exp`, as the ALB
//! signs it), `x-amzn-oidc-identity` and `x-amzn-oidc-accesstoken`; those
//! headers are stripped from what the client sent. The public key is served
//! at `/keys/{kid}`, the shape of the regional key endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub mod signer;

pub use signer::HeaderSigner;

const COOKIE: &str = "AWSELBAuthSessionCookie-0";
const MAX_BODY: usize = 10 << 20;
const OIDC_HEADERS: [&str; 3] = [
    "x-amzn-oidc-data",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-accesstoken",
];

/// The stand-in's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    listen: SocketAddr,
    /// How browsers reach it (default: from the bound address).
    #[serde(default)]
    public_url: Option<String>,
    /// The ARN it signs as (`signer`).
    #[serde(default = "default_arn")]
    signer_arn: String,
    /// Session lifetime, seconds (the ALB's default is 7 days).
    #[serde(default = "default_session")]
    session_secs: u64,
    /// The OpenID provider users sign in at.
    idp: Idp,
    /// Longest path prefix wins.
    #[serde(rename = "route")]
    routes: Vec<Route>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Idp {
    discovery_url: String,
    client_id: String,
    client_secret: String,
    #[serde(default = "default_scope")]
    scope: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    path_prefix: String,
    target: String,
    /// `authenticate-oidc` on this route (default true).
    #[serde(default = "yes")]
    authenticate: bool,
}

fn default_arn() -> String {
    "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/alb-dev/0000000000000000"
        .into()
}
fn default_session() -> u64 {
    3600
}
fn default_scope() -> String {
    "openid email profile".into()
}
fn yes() -> bool {
    true
}

struct Session {
    claims: Value,
    access_token: String,
    until: Instant,
}

struct Pending {
    back_to: String,
    nonce: String,
    verifier: String,
    until: Instant,
}

struct App {
    config: Config,
    public_url: String,
    signer: HeaderSigner,
    kid: String,
    public_pem: String,
    http: reqwest::Client,
    discovery: Value,
    id_tokens: airlock_verify::JwtVerifier,
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// A running stand-in.
pub struct Running {
    /// Where browsers reach it.
    pub public_url: String,
    /// The key endpoint (`{key_url}/{kid}`), for `[identity.alb] key_url`.
    pub key_url: String,
    /// The ARN it signs as.
    pub signer_arn: String,
    /// The IdP's issuer (the header's `iss`).
    pub issuer: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parse a TOML configuration.
pub fn parse(text: &str) -> Result<Config> {
    let config: Config = toml::from_str(text).context("alb-dev config")?;
    if config.routes.is_empty() {
        bail!("alb-dev config: add at least one [[route]] (path_prefix, target)");
    }
    Ok(config)
}

/// Bind, read the IdP's discovery document, make a signing key, and serve.
pub async fn start(config: Config) -> Result<Running> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let http = airlock_verify::http_client();
    let discovery: Value = airlock_verify::fetch_json(&http, &config.idp.discovery_url)
        .await
        .context("the IdP's discovery document")?;
    let signer = HeaderSigner::generate()?;
    let public_pem = signer.public_key_pem();
    let kid = signer.kid();
    let id_tokens = airlock_verify::JwtVerifier::new(vec![airlock_verify::JwtIssuer {
        discovery_url: config.idp.discovery_url.clone(),
        audiences: vec![config.idp.client_id.clone()],
        user_prefix: None,
    }]);
    let issuer = discovery["issuer"].as_str().unwrap_or_default().to_string();
    let app = Arc::new(App {
        public_url: public_url.clone(),
        signer,
        kid,
        public_pem,
        http,
        discovery,
        id_tokens,
        sessions: Mutex::default(),
        pending: Mutex::default(),
        config,
    });
    let router = Router::new()
        .route("/keys/{kid}", get(public_key))
        .route("/oauth2/idpresponse", get(idp_response))
        .route("/oauth2/sign-out", get(sign_out))
        .fallback(forward)
        .with_state(app.clone());
    tracing::warn!(%addr, "alb-dev: a development stand-in for an ALB; never for real users");
    let task = tokio::spawn(airlock_listen::serve(
        listener,
        router,
        airlock_listen::Limits::default(),
        std::future::pending(),
    ));
    Ok(Running {
        key_url: format!("{public_url}/keys"),
        public_url,
        signer_arn: app.config.signer_arn.clone(),
        issuer,
        task,
    })
}

/// 43 characters: long enough for a PKCE verifier too.
fn random() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the system's random source");
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn public_key(State(app): State<Arc<App>>, Path(kid): Path<String>) -> Response {
    if kid == app.kid {
        app.public_pem.clone().into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

fn endpoint(app: &App, name: &str) -> Result<String, String> {
    app.discovery[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the IdP's discovery document has no {name}"))
}

/// `authenticate-oidc`, then forward.
async fn forward(State(app): State<Arc<App>>, request: Request) -> Response {
    let Some(route) = route_for(&app, request.uri().path()) else {
        return (StatusCode::NOT_FOUND, "no route\n").into_response();
    };
    let session = session_of(&app, request.headers());
    if route.authenticate && session.is_none() {
        return match start_sign_in(&app, back_to(request.uri())) {
            Ok(r) => r,
            Err(e) => (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
        };
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response();
    };
    let target = format!(
        "{}{}",
        route.target.trim_end_matches('/'),
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut headers = forwarded_headers(&parts.headers);
    if route.authenticate
        && let Some((claims, access_token)) = session
    {
        add_identity(&app, &mut headers, &claims, access_token);
    }
    let upstream = app
        .http
        .request(parts.method, &target)
        .headers(headers)
        .body(body)
        .send()
        .await;
    match upstream {
        Ok(upstream) => relay(upstream).await,
        Err(e) => {
            tracing::warn!(
                "target {}: {}",
                route.target,
                airlock_verify::without_url(e)
            );
            (StatusCode::BAD_GATEWAY, "the target did not answer\n").into_response()
        }
    }
}

/// The route for `path`: the longest path prefix that matches.
fn route_for(app: &App, path: &str) -> Option<Route> {
    app.config
        .routes
        .iter()
        .filter(|r| path.starts_with(&r.path_prefix))
        .max_by_key(|r| r.path_prefix.len())
        .cloned()
}

/// The live session the request's cookie names: its claims and access token.
fn session_of(app: &App, headers: &HeaderMap) -> Option<(Value, String)> {
    let id = cookie(headers)?;
    let sessions = app.sessions.lock().unwrap_or_else(|p| p.into_inner());
    sessions
        .get(&id)
        .filter(|s| s.until > Instant::now())
        .map(|s| (s.claims.clone(), s.access_token.clone()))
}

/// The client's headers to pass on: never its own OIDC headers (only ours
/// say who signed in), hop-by-hop ones or its `host`.
fn forwarded_headers(received: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in received {
        let n = name.as_str();
        if OIDC_HEADERS.contains(&n) || hop_by_hop(n) || n == "host" {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// The signed-in user's headers, as the ALB adds them.
fn add_identity(app: &App, headers: &mut HeaderMap, claims: &Value, access_token: String) {
    let data = sign_claims(app, claims);
    let identity = claims["sub"].as_str().unwrap_or_default().to_string();
    for (name, value) in [
        ("x-amzn-oidc-data", data),
        ("x-amzn-oidc-identity", identity),
        ("x-amzn-oidc-accesstoken", access_token),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

/// The target's answer, passed back without its hop-by-hop headers.
async fn relay(upstream: reqwest::Response) -> Response {
    let status = upstream.status();
    let mut out = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    let body = upstream.bytes().await.unwrap_or_else(|_| Bytes::new());
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = out;
    response
}

fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

/// Where to send the browser after sign-in: this request's path and query,
/// never another origin (an absolute-form request line, or `//host`).
fn back_to(uri: &axum::http::Uri) -> String {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\") {
        path.to_string()
    } else {
        "/".to_string()
    }
}

/// Sessions and sign-ins in flight kept at most: past it, expired ones go,
/// then the oldest.
const MAX_ENTRIES: usize = 10_000;

/// Keep `value` under `key`, dropping expired entries and then the
/// soonest to expire while the map is full.
fn keep<V>(map: &mut HashMap<String, V>, key: String, value: V, until: impl Fn(&V) -> Instant) {
    if map.len() >= MAX_ENTRIES {
        let now = Instant::now();
        map.retain(|_, v| until(v) > now);
        while map.len() >= MAX_ENTRIES {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, v)| until(v))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
    }
    map.insert(key, value);
}

fn start_sign_in(app: &App, back_to: String) -> Result<Response, String> {
    let authorize = endpoint(app, "authorization_endpoint")?;
    let (state, nonce, verifier) = (random(), random(), random());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut url =
        url::Url::parse(&authorize).map_err(|e| format!("the authorization endpoint: {e}"))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &app.config.idp.client_id)
        .append_pair(
            "redirect_uri",
            &format!("{}/oauth2/idpresponse", app.public_url),
        )
        .append_pair("scope", &app.config.idp.scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut pending = app.pending.lock().unwrap_or_else(|p| p.into_inner());
    pending.retain(|_, p| p.until > Instant::now());
    keep(
        &mut pending,
        state,
        Pending {
            back_to,
            nonce,
            verifier,
            until: Instant::now() + Duration::from_secs(600),
        },
        |p| p.until,
    );
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Deserialize)]
struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

async fn idp_response(State(app): State<Arc<App>>, Query(q): Query<Callback>) -> Response {
    match signed_in(&app, q).await {
        Ok(r) => r,
        Err(message) => {
            tracing::warn!("sign-in failed: {message}");
            (
                StatusCode::UNAUTHORIZED,
                format!("sign-in failed: {message}\n"),
            )
                .into_response()
        }
    }
}

async fn signed_in(app: &App, q: Callback) -> Result<Response, String> {
    if let Some(e) = q.error {
        return Err(format!("the IdP answered {e}"));
    }
    let state = q.state.ok_or("no state")?;
    let pending = app
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&state)
        .filter(|p| p.until > Instant::now())
        .ok_or("unknown or expired state")?;
    let code = q.code.ok_or("no code")?;
    let tokens = redeem_code(app, &code, &pending.verifier).await?;
    let id_token = tokens["id_token"].as_str().ok_or("no id_token")?;
    let access_token = tokens["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_string();
    let user = app
        .id_tokens
        .verify(id_token)
        .await
        .map_err(|e| format!("the ID token: {e}"))?;
    if id_token_nonce(id_token).as_deref() != Some(pending.nonce.as_str()) {
        return Err("the ID token's nonce is not this sign-in's".into());
    }
    let claims = user_claims(app, &access_token, user.id().as_str()).await?;
    let id = random();
    keep(
        &mut app.sessions.lock().unwrap_or_else(|p| p.into_inner()),
        id.clone(),
        Session {
            claims,
            access_token,
            until: Instant::now() + Duration::from_secs(app.config.session_secs),
        },
        |s| s.until,
    );
    let mut response = Redirect::to(&pending.back_to).into_response();
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| e.to_string())?,
    );
    Ok(response)
}

/// The IdP's tokens for `code` (with its PKCE `verifier`).
async fn redeem_code(app: &App, code: &str, verifier: &str) -> Result<Value, String> {
    let token_url = endpoint(app, "token_endpoint")?;
    let redirect_uri = format!("{}/oauth2/idpresponse", app.public_url);
    let answer = app
        .http
        .post(&token_url)
        .basic_auth(
            &app.config.idp.client_id,
            Some(&app.config.idp.client_secret),
        )
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .map_err(airlock_verify::without_url)?;
    let status = answer.status();
    let tokens: Value = answer.json().await.map_err(airlock_verify::without_url)?;
    if !status.is_success() {
        // The OAuth error code and description: no secret in either.
        return Err(format!(
            "the token endpoint refused the code: {status} {} {}",
            tokens["error"].as_str().unwrap_or(""),
            tokens["error_description"].as_str().unwrap_or("")
        ));
    }
    Ok(tokens)
}

/// The `nonce` claim of an ID token (already verified).
fn id_token_nonce(id_token: &str) -> Option<String> {
    id_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
        .and_then(|c| c["nonce"].as_str().map(str::to_string))
}

/// The claims of user `sub`: as the ALB, from the userinfo endpoint; just
/// `sub` when it has none or names someone else.
async fn user_claims(app: &App, access_token: &str, sub: &str) -> Result<Value, String> {
    let claims: Value = match app.discovery["userinfo_endpoint"].as_str() {
        Some(url) => app
            .http
            .get(url)
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(airlock_verify::without_url)?
            .json()
            .await
            .map_err(airlock_verify::without_url)?,
        None => json!({}),
    };
    if claims["sub"].as_str() != Some(sub) {
        return Ok(json!({ "sub": sub }));
    }
    Ok(claims)
}

async fn sign_out(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers) {
        app.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
    let mut response = (StatusCode::OK, "signed out\n").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("AWSELBAuthSessionCookie-0=; Path=/; Max-Age=0"),
    );
    response
}

/// `x-amzn-oidc-data`: header.payload.signature, each base64url WITH padding.
fn sign_claims(app: &App, claims: &Value) -> String {
    let exp = now() + 120;
    let header = json!({
        "alg": "ES256",
        "kid": app.kid,
        "signer": app.config.signer_arn,
        "iss": app.discovery["issuer"],
        "client": app.config.idp.client_id,
        "exp": exp,
    });
    let mut payload = claims.clone();
    payload["exp"] = json!(exp);
    payload["iss"] = app.discovery["issuer"].clone();
    app.signer.sign(&header, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_sign_in_the_browser_goes_back_to_a_path_here_never_elsewhere() {
        let to = |uri: &str| back_to(&uri.parse::<axum::http::Uri>().unwrap());
        assert_eq!(
            to("/oauth2/session-binding?session_id=x"),
            "/oauth2/session-binding?session_id=x"
        );
        assert_eq!(to("http://evil.example/steal?x=1"), "/steal?x=1");
        assert_eq!(to("//evil.example/x"), "/");
        assert_eq!(to("*"), "/");
    }

    #[test]
    fn the_maps_of_sessions_stay_bounded() {
        let mut map = HashMap::new();
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 50 {
            keep(
                &mut map,
                i.to_string(),
                now + Duration::from_secs(i as u64),
                |t| *t,
            );
        }
        assert_eq!(map.len(), MAX_ENTRIES);
        assert!(
            map.contains_key(&(MAX_ENTRIES + 49).to_string()),
            "the newest is kept"
        );
        assert!(!map.contains_key("0"), "the soonest to expire went");
    }
}
