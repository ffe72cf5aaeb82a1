//! The façade's endpoints. A person's way through: `/oauth/authorize` (the
//! client's request checked; the consent page) -> `/oauth/consent` (allowed:
//! off to the IdP, bound to this browser) -> `/oauth/callback` (the IdP's
//! answer checked, the person known; a code for the client) -> the client's
//! redirect URI. The client then redeems the code at `/oauth/token` for an
//! access token for the resource, and refreshes it there.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::clients::{Client, ClientAuth, ClientError, Registration};
use crate::keys::Purpose;
use crate::pages;
use crate::{AuthorizationServer, Record};

mod token;

const REQUEST_SECS: u64 = 600;
const CODE_SECS: u64 = 60;
/// How far replicas' clocks may differ, for how long marks are kept.
const CLOCK_SKEW_SECS: u64 = 300;
const CSRF_COOKIE: &str = "airlock_oauth_csrf";
const BIND_COOKIE: &str = "airlock_oauth_bind";

pub(crate) fn router(server: Arc<AuthorizationServer>) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/consent", post(consent))
        .route("/oauth/callback", get(callback))
        .route("/oauth/token", post(token::token))
        .route("/oauth/register", post(register))
        .route("/oauth/jwks", get(jwks))
        .with_state(server)
}

pub(crate) fn now_ms() -> u64 {
    airlock_audit::unix_now_ms()
}

fn now() -> u64 {
    airlock_audit::unix_now()
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

async fn metadata(State(s): State<Arc<AuthorizationServer>>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    (headers, axum::Json(s.metadata())).into_response()
}

async fn jwks(State(s): State<Arc<AuthorizationServer>>) -> Response {
    axum::Json(s.keys.jwks()).into_response()
}

/// An authorization request as the client sent it.
#[derive(Debug, Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
}

/// A checked request, sealed into the consent page and the IdP's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    scopes: Vec<String>,
    resource: String,
    exp: u64,
    /// The sha256 of the consent page's CSRF value.
    csrf: String,
}

/// What the façade keeps at the IdP (`state`), bound to the browser.
#[derive(Debug, Serialize, Deserialize)]
struct IdpState {
    request: Request,
    verifier: String,
    nonce: String,
    /// The sha256 of the browser's binding cookie.
    bind: String,
    exp: u64,
}

/// An authorization code, sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Code {
    pub(crate) jti: String,
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) code_challenge: String,
    pub(crate) grant: Grant,
    pub(crate) exp: u64,
    /// When it was issued, in milliseconds (see `Refresh`).
    #[serde(default)]
    pub(crate) issued_ms: u64,
}

/// Who signed in and what they allowed; carried by codes and refresh tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub(crate) sub: String,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: Option<bool>,
    pub(crate) groups: Vec<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) resource: String,
    /// When the person signed in at the IdP.
    pub(crate) signed_in: u64,
}

/// A refresh token, sealed. `family` is shared by every token of one
/// sign-in; a reused one revokes the family.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refresh {
    jti: String,
    family: String,
    client_id: String,
    grant: Grant,
    exp: u64,
    /// When it was issued, in milliseconds: with marks kept in memory, a
    /// server that started later cannot know whether it was used, so it is
    /// refused.
    #[serde(default)]
    issued_ms: u64,
}

fn redirect_uri_matches(registered: &str, used: &str) -> bool {
    if registered == used {
        return true;
    }
    // RFC 8252 §7.3: a loopback IP redirect may use any port.
    let (Ok(a), Ok(b)) = (Url::parse(registered), Url::parse(used)) else {
        return false;
    };
    let loopback = |u: &Url| matches!(u.host_str(), Some("127.0.0.1" | "[::1]"));
    a.scheme() == "http"
        && loopback(&a)
        && a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
}

/// Send the client an error at its (checked) redirect URI.
fn to_client(
    s: &AuthorizationServer,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return pages::error(StatusCode::BAD_REQUEST, "Invalid request", description);
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error);
        q.append_pair("error_description", description);
        if let Some(state) = state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", &s.issuer);
    }
    Redirect::to(url.as_str()).into_response()
}

fn set_cookie(s: &AuthorizationServer, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if s.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/oauth; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are URL-safe base64")
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

async fn authorize(
    State(s): State<Arc<AuthorizationServer>>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let refuse = |title: &str, message: &str| pages::error(StatusCode::BAD_REQUEST, title, message);
    // Until the client and its redirect URI check out, errors stay here.
    let Some(client_id) = q.client_id.as_deref() else {
        return refuse(
            "Invalid request",
            "The request names no client (client_id).",
        );
    };
    let client = match s.clients.get(&s.keys, client_id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, "authorization request from an unusable client");
            return refuse("Unknown client", &e.to_string());
        }
    };
    let redirect_uri = match (&q.redirect_uri, client.redirect_uris.as_slice()) {
        (Some(used), registered) if registered.iter().any(|r| redirect_uri_matches(r, used)) => {
            used.clone()
        }
        (None, [only]) => only.clone(),
        (Some(_), _) => {
            return refuse(
                "Invalid redirect",
                "The client asked to send the answer to an address it did not register.",
            );
        }
        (None, _) => return refuse("Invalid request", "The request names no redirect_uri."),
    };
    let state = q.state.as_deref();
    // Only a configured client's redirect is trusted before the person has
    // seen the page: anyone can register one, and the façade must not
    // forward a browser there unasked.
    let trusted = client.kind == "configured";
    let back = |error: &str, description: &str| {
        if trusted {
            to_client(&s, &redirect_uri, state, error, description)
        } else {
            refuse("Invalid request", description)
        }
    };
    if q.response_type.as_deref() != Some("code") {
        return back(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = q
        .code_challenge
        .clone()
        .filter(|c| (43..=128).contains(&c.len()))
    else {
        return back(
            "invalid_request",
            "PKCE is required: send code_challenge (S256)",
        );
    };
    if q.code_challenge_method.as_deref() != Some("S256") {
        return back("invalid_request", "code_challenge_method must be S256");
    }
    if let Some(resource) = &q.resource
        && resource.trim_end_matches('/') != s.resource.trim_end_matches('/')
    {
        return back(
            "invalid_target",
            "tokens here are for this server's MCP endpoint only",
        );
    }
    let scopes: Vec<String> = match &q.scope {
        Some(scope) => {
            let asked: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
            // Scopes other servers know (openid, offline_access) are not ours to grant: ignored.
            let ours: Vec<String> = asked.into_iter().filter(|a| s.scopes.contains(a)).collect();
            if ours.is_empty() {
                return back(
                    "invalid_scope",
                    &format!("ask for some of: {}", s.scopes.join(" ")),
                );
            }
            ours
        }
        None => s.scopes.clone(),
    };
    let csrf = random();
    let request = Request {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.clone(),
        state: q.state.clone(),
        code_challenge: challenge,
        scopes: scopes.clone(),
        resource: s.resource.clone(),
        exp: now() + REQUEST_SECS,
        csrf: digest(&csrf),
    };
    let sealed = s.keys.seal(Purpose::Request, &request);
    let mut page = pages::consent(&pages::Consent {
        client_name: client.name.as_deref(),
        client_id: &client.id,
        kind: client.kind,
        redirect_uri: &redirect_uri,
        scopes: &scopes,
        request: &sealed,
        csrf: &csrf,
    });
    page.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&s, CSRF_COOKIE, &csrf, REQUEST_SECS),
    );
    page
}

#[derive(Debug, Deserialize)]
struct ConsentForm {
    request: String,
    csrf: String,
    decision: String,
}

async fn consent(
    State(s): State<Arc<AuthorizationServer>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ConsentForm>,
) -> Response {
    let expired = || {
        pages::error(
            StatusCode::BAD_REQUEST,
            "This request has expired",
            "The sign-in request expired or was changed.",
        )
    };
    let Some(request) = s.keys.open::<Request>(Purpose::Request, &form.request) else {
        return expired();
    };
    if request.exp < now() {
        return expired();
    }
    // The form came from the page this browser was shown.
    let from_this_browser =
        cookie(&headers, CSRF_COOKIE).is_some_and(|c| c == form.csrf && digest(&c) == request.csrf);
    if !from_this_browser {
        return pages::error(
            StatusCode::FORBIDDEN,
            "Not approved here",
            "This approval did not come from the page this browser was shown.",
        );
    }
    if form.decision != "allow" {
        return to_client(
            &s,
            &request.redirect_uri,
            request.state.as_deref(),
            "access_denied",
            "the person did not allow it",
        );
    }
    let (verifier, nonce, bind) = (random(), random(), random());
    let idp_state = IdpState {
        request,
        verifier: verifier.clone(),
        nonce: nonce.clone(),
        bind: digest(&bind),
        exp: now() + REQUEST_SECS,
    };
    let state = s.keys.seal(Purpose::IdpState, &idp_state);
    match s.idp.authorization_url(&state, &nonce, &verifier).await {
        Ok(url) => {
            let mut response = Redirect::to(&url).into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(&s, BIND_COOKIE, &bind, REQUEST_SECS),
            );
            h.append(header::SET_COOKIE, set_cookie(&s, CSRF_COOKIE, "", 0));
            response
        }
        Err(e) => {
            tracing::warn!("sign-in: {e}");
            pages::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "The sign-in service could not be reached.",
            )
        }
    }
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(s): State<Arc<AuthorizationServer>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(idp_state) = q
        .state
        .as_deref()
        .and_then(|st| s.keys.open::<IdpState>(Purpose::IdpState, st))
        .filter(|st| st.exp >= now())
    else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "The sign-in's state is missing, changed or expired.",
        );
    };
    // The browser that comes back is the one that left (no swapped sign-in).
    if !cookie(&headers, BIND_COOKIE).is_some_and(|b| digest(&b) == idp_state.bind) {
        return pages::error(
            StatusCode::FORBIDDEN,
            "Signed in from another browser",
            "This sign-in was started in another browser.",
        );
    }
    let request = idp_state.request;
    let back = |error: &str, description: &str| {
        to_client(
            &s,
            &request.redirect_uri,
            request.state.as_deref(),
            error,
            description,
        )
    };
    if q.error.is_some() {
        return back("access_denied", "the sign-in was not completed");
    }
    let Some(code) = q.code.as_deref() else {
        return back("access_denied", "the sign-in was not completed");
    };
    let user = match s
        .idp
        .sign_in(
            code,
            &idp_state.verifier,
            q.iss.as_deref(),
            &idp_state.nonce,
        )
        .await
    {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(client = %request.client_id, "sign-in refused: {e}");
            s.audit.record(Record::SignInRefused {
                client_id: request.client_id.clone(),
                reason: e.to_string(),
            });
            return back("access_denied", "the sign-in could not be verified");
        }
    };
    let claims = user.claims();
    let grant = Grant {
        sub: user.id().as_str().to_string(),
        email: claims.email.clone(),
        email_verified: claims.email_verified,
        groups: claims.groups.clone(),
        scopes: request.scopes.clone(),
        resource: request.resource.clone(),
        signed_in: now(),
    };
    s.audit.record(Record::SignIn {
        user: grant.sub.clone(),
        client_id: request.client_id.clone(),
        scope: grant.scopes.join(" "),
    });
    let sealed = s.keys.seal(
        Purpose::Code,
        &Code {
            jti: random(),
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            grant,
            exp: now() + CODE_SECS,
            issued_ms: now_ms(),
        },
    );
    let Ok(mut url) = Url::parse(&request.redirect_uri) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The client's redirect URI is not a URL.",
        );
    };
    {
        let mut pairs = url.query_pairs_mut();
        pairs.append_pair("code", &sealed);
        if let Some(state) = &request.state {
            pairs.append_pair("state", state);
        }
        pairs.append_pair("iss", &s.issuer);
    }
    let mut response = Redirect::to(url.as_str()).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(&s, BIND_COOKIE, "", 0));
    response
}

/// An OAuth error at the token or registration endpoint.
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        }
        response
    }
}


async fn register(State(s): State<Arc<AuthorizationServer>>, body: axum::body::Bytes) -> Response {
    let registration: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                format!("not client metadata: {e}"),
            )
            .into_response();
        }
    };
    match s.clients.register(&s.keys, registration) {
        Ok((client, secret)) => {
            let method = match client.auth {
                ClientAuth::None => "none",
                ClientAuth::ClientSecretBasic => "client_secret_basic",
                ClientAuth::ClientSecretPost => "client_secret_post",
            };
            let mut answer = json!({
                "client_id": client.id,
                "client_id_issued_at": now(),
                "redirect_uris": client.redirect_uris,
                "token_endpoint_auth_method": method,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            });
            if let Some(name) = &client.name {
                answer["client_name"] = json!(name);
            }
            if let Some(secret) = secret {
                answer["client_secret"] = json!(secret);
                answer["client_secret_expires_at"] = json!(0);
            }
            s.audit.record(Record::Registered {
                client_name: client.name.clone(),
                redirect_uris: client.redirect_uris.clone(),
            });
            let mut response = (StatusCode::CREATED, axum::Json(answer)).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(ClientError::Disabled(what)) => OAuthError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            format!("{what} is switched off"),
        )
        .into_response(),
        Err(e) => {
            let error = if e.to_string().starts_with("redirect_uri") {
                "invalid_redirect_uri"
            } else {
                "invalid_client_metadata"
            };
            OAuthError::new(StatusCode::BAD_REQUEST, error, e.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_may_change_port_and_nothing_else() {
        let registered = "http://127.0.0.1:3000/callback";
        assert!(redirect_uri_matches(
            registered,
            "http://127.0.0.1:41234/callback"
        ));
        assert!(!redirect_uri_matches(
            registered,
            "http://127.0.0.1:41234/other"
        ));
        assert!(!redirect_uri_matches(
            registered,
            "http://127.0.0.2:3000/callback"
        ));
        assert!(!redirect_uri_matches(
            "https://app.example.com/cb",
            "https://app.example.com:444/cb"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost:3000/cb",
            "http://localhost:4000/cb"
        ));
    }
}
