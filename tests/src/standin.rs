//! A stand-in that answers like GitHub's OAuth apps and API, for the vendor
//! quirks oidc-provider does not have: tokens without expiry and without
//! refresh tokens, scopes granted as a comma-separated list, JSON only on
//! `Accept: application/json`, errors sent with status 200, and revocation
//! by the user at any time. As [`Flavor::AzureV1`] it sends `expires_in` as a
//! string, as Azure AD's v1 endpoints do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

/// The client secret the stand-in expects.
pub const CLIENT_SECRET: &str = "standin-client-secret";

/// Whose answers the stand-in imitates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Flavor {
    /// GitHub OAuth apps.
    #[default]
    Github,
    /// Azure AD v1: `"expires_in": "3600"`, a string.
    AzureV1,
}

#[derive(Default)]
struct Inner {
    flavor: Flavor,
    refuse_next_code: bool,
    asked_without_json: u32,
    /// code -> (login, scopes asked)
    codes: HashMap<String, (String, String)>,
    /// token -> login, while not revoked
    tokens: HashMap<String, String>,
    issued: u32,
    next_login: String,
    api_calls: Vec<(String, u16)>,
}

/// A running stand-in.
pub struct GithubLike {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Deserialize)]
struct Authorize {
    redirect_uri: String,
    state: String,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct TokenForm {
    code: Option<String>,
    client_secret: Option<String>,
}

impl GithubLike {
    /// Start on 127.0.0.1:0; users who consent sign in as `login`.
    pub async fn start(login: &str) -> GithubLike {
        GithubLike::start_as(Flavor::Github, login).await
    }

    /// The same, answering like `flavor`.
    pub async fn start_as(flavor: Flavor, login: &str) -> GithubLike {
        let inner = Arc::new(Mutex::new(Inner {
            flavor,
            next_login: login.to_string(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/issues", get(issues))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GithubLike {
            origin: format!("http://{addr}"),
            inner,
        }
    }

    /// The identity service's `[[oauth2_provider]]` for it, named `name`.
    pub fn provider_toml(&self, name: &str) -> String {
        format!(
            r#"
            [[oauth2_provider]]
            name = "{name}"
            client_id = "standin-client"
            client_secret = "{CLIENT_SECRET}"
            authorization_endpoint = "{o}/login/oauth/authorize"
            token_endpoint = "{o}/login/oauth/access_token"
            token_auth = "client_secret_post"
            "#,
            o = self.origin
        )
    }

    /// The user revokes every token the app holds (GitHub's "Revoke access").
    pub fn revoke_all(&self) {
        self.inner.lock().unwrap().tokens.clear();
    }

    /// The next code exchange is refused as GitHub does: 200 and an `error`.
    pub fn refuse_next_code(&self) {
        self.inner.lock().unwrap().refuse_next_code = true;
    }

    /// Token requests that did not ask for JSON.
    pub fn asked_without_json(&self) -> u32 {
        self.inner.lock().unwrap().asked_without_json
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> u32 {
        self.inner.lock().unwrap().issued
    }

    /// The API's answers so far: (token's login or "-", status).
    pub fn api_calls(&self) -> Vec<(String, u16)> {
        self.inner.lock().unwrap().api_calls.clone()
    }
}

/// Consent is immediate: straight back to the redirect URI with a code.
async fn authorize(State(s): State<Arc<Mutex<Inner>>>, Query(q): Query<Authorize>) -> Response {
    let mut inner = s.lock().unwrap();
    let code = format!("code{}", inner.codes.len() + 1);
    let login = inner.next_login.clone();
    inner
        .codes
        .insert(code.clone(), (login, q.scope.unwrap_or_default()));
    let mut to = url::Url::parse(&q.redirect_uri).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q.state);
    Redirect::to(to.as_str()).into_response()
}

/// GitHub's answer: no expiry, no refresh token, scopes joined by commas,
/// form-encoded unless JSON is asked for.
async fn access_token(
    State(s): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    let mut inner = s.lock().unwrap();
    if f.client_secret.as_deref() != Some(CLIENT_SECRET) {
        return (StatusCode::UNAUTHORIZED, "bad client").into_response();
    }
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !json {
        inner.asked_without_json += 1;
    }
    let refused = std::mem::take(&mut inner.refuse_next_code);
    let Some((login, scope)) = f
        .code
        .and_then(|c| inner.codes.remove(&c))
        .filter(|_| !refused)
    else {
        // GitHub's way: status 200, an error in the body.
        return axum::Json(json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired."
        }))
        .into_response();
    };
    inner.issued += 1;
    let token = format!("gho_standin{:04}", inner.issued);
    inner.tokens.insert(token.clone(), login);
    let scope = scope.split(' ').collect::<Vec<_>>().join(",");
    if inner.flavor == Flavor::AzureV1 {
        return axum::Json(json!({
            "access_token": token, "token_type": "Bearer", "scope": scope,
            "expires_in": "3599", "ext_expires_in": "3599"
        }))
        .into_response();
    }
    if json {
        axum::Json(json!({"access_token": token, "token_type": "bearer", "scope": scope}))
            .into_response()
    } else {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("access_token", &token)
            .append_pair("scope", &scope)
            .append_pair("token_type", "bearer")
            .finish();
        (
            [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
            body,
        )
            .into_response()
    }
}

/// The API: the token's user's issues, or 401 for an unknown or revoked token.
async fn issues(State(s): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let mut inner = s.lock().unwrap();
    let login = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| inner.tokens.get(t).cloned());
    let Some(login) = login else {
        inner.api_calls.push(("-".into(), 401));
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Bad credentials"})),
        )
            .into_response();
    };
    inner.api_calls.push((login.clone(), 200));
    axum::Json(json!([{
        "number": 7,
        "title": format!("{login}'s issue"),
        "html_url": format!("https://github.com/{login}/repo/issues/7"),
        "repository": { "full_name": format!("{login}/repo") }
    }]))
    .into_response()
}
