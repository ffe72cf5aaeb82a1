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

use crate::clients::{Client, ClientError};
use crate::keys::Purpose;
use crate::pages;
use crate::registration::{ClientAuth, Registration};
use crate::{AuthorizationServer, Record};

mod authorize;
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
        .route("/oauth/authorize", get(authorize::authorize))
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

/// A refusal shown on the façade's own page: the client's redirect URI
/// is not (yet) one to send the browser to.
struct PageError {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> PageError {
        PageError {
            status,
            title,
            message: message.into(),
        }
    }

    fn bad_request(title: &'static str, message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, title, message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        pages::error(self.status, self.title, &self.message)
    }
}

/// An OAuth error for the client, sent to its redirect URI.
struct RedirectError {
    error: &'static str,
    description: String,
}

impl RedirectError {
    fn new(error: &'static str, description: impl Into<String>) -> RedirectError {
        RedirectError {
            error,
            description: description.into(),
        }
    }
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
    let idp_state = match returning_sign_in(&s, &headers, &q) {
        Ok(idp_state) => idp_state,
        Err(page) => return page.into_response(),
    };
    let grant = match signed_in(&s, &idp_state, &q).await {
        Ok(grant) => grant,
        Err(r) => {
            let request = &idp_state.request;
            return to_client(
                &s,
                &request.redirect_uri,
                request.state.as_deref(),
                r.error,
                &r.description,
            );
        }
    };
    let request = idp_state.request;
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
    match redirect_with_code(&s, &request, &sealed) {
        Ok(response) => response,
        Err(page) => page.into_response(),
    }
}

/// The sign-in the IdP sent this browser back from: its state sealed here,
/// unexpired, and bound to this browser.
fn returning_sign_in(
    s: &AuthorizationServer,
    headers: &HeaderMap,
    q: &CallbackQuery,
) -> Result<IdpState, PageError> {
    let Some(idp_state) = q
        .state
        .as_deref()
        .and_then(|st| s.keys.open::<IdpState>(Purpose::IdpState, st))
        .filter(|st| st.exp >= now())
    else {
        return Err(PageError::bad_request(
            "This sign-in has expired",
            "The sign-in's state is missing, changed or expired.",
        ));
    };
    // The browser that comes back is the one that left (no swapped sign-in).
    if !cookie(headers, BIND_COOKIE).is_some_and(|b| digest(&b) == idp_state.bind) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Signed in from another browser",
            "This sign-in was started in another browser.",
        ));
    }
    Ok(idp_state)
}

/// Who signed in and what they allowed, once the IdP's answer verifies; a
/// refused answer is audited.
async fn signed_in(
    s: &AuthorizationServer,
    idp_state: &IdpState,
    q: &CallbackQuery,
) -> Result<Grant, RedirectError> {
    let not_completed = || RedirectError::new("access_denied", "the sign-in was not completed");
    if q.error.is_some() {
        return Err(not_completed());
    }
    let Some(code) = q.code.as_deref() else {
        return Err(not_completed());
    };
    let request = &idp_state.request;
    let user = s
        .idp
        .sign_in(
            code,
            &idp_state.verifier,
            q.iss.as_deref(),
            &idp_state.nonce,
        )
        .await
        .map_err(|e| {
            tracing::warn!(client = %request.client_id, "sign-in refused: {e}");
            s.audit.record(Record::SignInRefused {
                client_id: request.client_id.clone(),
                reason: e.to_string(),
            });
            RedirectError::new("access_denied", "the sign-in could not be verified")
        })?;
    let claims = user.claims();
    Ok(Grant {
        sub: user.id().as_str().to_string(),
        email: claims.email.clone(),
        email_verified: claims.email_verified,
        groups: claims.groups.clone(),
        scopes: request.scopes.clone(),
        resource: request.resource.clone(),
        signed_in: now(),
    })
}

/// The redirect taking the sealed `code` (with the client's state and our
/// issuer) to the client; the sign-in is over, so its binding cookie goes.
fn redirect_with_code(
    s: &AuthorizationServer,
    request: &Request,
    code: &str,
) -> Result<Response, PageError> {
    let Ok(mut url) = Url::parse(&request.redirect_uri) else {
        return Err(PageError::bad_request(
            "Invalid redirect",
            "The client's redirect URI is not a URL.",
        ));
    };
    {
        let mut pairs = url.query_pairs_mut();
        pairs.append_pair("code", code);
        if let Some(state) = &request.state {
            pairs.append_pair("state", state);
        }
        pairs.append_pair("iss", &s.issuer);
    }
    let mut response = Redirect::to(url.as_str()).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(s, BIND_COOKIE, "", 0));
    Ok(response)
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
