//! The HTTP surface: AgentCore's data-plane operations and the OAuth callback.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::{LocalConfig, valid_provider_name, valid_workload_name};
use super::oauth::{JwtVerifier, Provider, http_client, random_token};
use super::store::{NewSession, SessionStatus, Store, VaultEntry};
use super::{ApiKeys, sigv4};
use crate::client::Operation as Op;
use crate::secret::Secret;

const SESSION_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
const MAX_BODY: usize = 64 * 1024;

struct Workload {
    allowed_return_urls: Vec<String>,
    jwt: JwtVerifier,
}

pub(crate) struct Service {
    callers: HashMap<String, (String, Option<BTreeSet<String>>)>,
    workloads: HashMap<String, Workload>,
    providers: HashMap<String, Provider>,
    api_keys: ApiKeys,
    store: Store,
    public_url: String,
    token_key: [u8; 32],
    session_ttl: i64,
    workload_token_ttl: i64,
    refresh_margin: i64,
    http: reqwest::Client,
    refresh_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An AgentCore-style error: status, `x-amzn-errortype`, JSON `message`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn validation(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "ValidationException",
            message: m.into(),
        }
    }
    fn denied(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "AccessDeniedException",
            message: m.into(),
        }
    }
    fn unauthorized(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "UnauthorizedException",
            message: m.into(),
        }
    }
    fn not_found(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "ResourceNotFoundException",
            message: m.into(),
        }
    }
    fn internal(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "InternalServerException",
            message: m.into(),
        }
    }
    fn invalid_session() -> ApiError {
        ApiError::denied("Invalid or expired session")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "message": self.message });
        if self.kind == "ValidationException" {
            body["reason"] = json!("FieldValidationFailed");
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        response
    }
}

pub(crate) fn router(service: Arc<Service>) -> Router {
    let op = |op: Op| {
        post(
            move |State(s): State<Arc<Service>>, request: Request| async move {
                s.call(op, request)
                    .await
                    .unwrap_or_else(IntoResponse::into_response)
            },
        )
    };
    Router::new()
        .route("/identities/GetWorkloadAccessToken", op(Op::WorkloadToken))
        .route(
            "/identities/GetWorkloadAccessTokenForUserId",
            op(Op::WorkloadTokenForUserId),
        )
        .route(
            "/identities/GetWorkloadAccessTokenForJWT",
            op(Op::WorkloadTokenForJwt),
        )
        .route("/identities/oauth2/token", op(Op::ResourceOauth2Token))
        .route("/identities/api-key", op(Op::ResourceApiKey))
        .route(
            "/identities/CompleteResourceTokenAuth",
            op(Op::CompleteResourceTokenAuth),
        )
        .route("/identities/oauth2/callback/{provider}", get(callback))
        .with_state(service)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadTokenInput {
    workload_name: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    user_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OAuth2TokenInput {
    workload_identity_token: String,
    resource_credential_provider_name: String,
    #[serde(default)]
    scopes: Vec<String>,
    oauth2_flow: String,
    #[serde(default)]
    resource_oauth2_return_url: Option<String>,
    #[serde(default)]
    custom_state: Option<String>,
    #[serde(default)]
    force_authentication: Option<bool>,
    #[serde(default)]
    session_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiKeyInput {
    workload_identity_token: String,
    resource_credential_provider_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompleteInput {
    session_uri: String,
    user_identifier: UserIdentifierInput,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserIdentifierInput {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    user_token: Option<String>,
}

struct WorkloadClaims {
    workload: String,
    user: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::validation(format!("invalid request body: {e}")))
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

impl Service {
    pub(crate) fn new(
        config: LocalConfig,
        public_url: String,
        store: Store,
        key: &[u8; 32],
    ) -> Service {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(b"airlock workload access token v1");
        let token_key: [u8; 32] = mac.finalize().into_bytes().into();
        Service {
            callers: config
                .callers
                .iter()
                .map(|c| {
                    (
                        c.access_key_id.clone(),
                        (c.secret_access_key.clone(), c.operations.clone()),
                    )
                })
                .collect(),
            workloads: config
                .workloads
                .iter()
                .map(|w| {
                    (
                        w.name.clone(),
                        Workload {
                            allowed_return_urls: w.allowed_return_urls.clone(),
                            jwt: JwtVerifier::new(w.jwt_issuers.clone()),
                        },
                    )
                })
                .collect(),
            providers: config
                .oauth2_providers
                .iter()
                .map(|p| (p.name.clone(), Provider::new(p.clone())))
                .collect(),
            api_keys: config
                .api_key_providers
                .iter()
                .filter_map(|p| Some((p.name.clone(), p.api_key().ok()?)))
                .collect(),
            store,
            public_url,
            token_key,
            session_ttl: config.session_ttl_secs as i64,
            workload_token_ttl: config.workload_token_ttl_secs as i64,
            refresh_margin: config.refresh_margin_secs as i64,
            http: http_client(),
            refresh_locks: Default::default(),
        }
    }

    pub(crate) fn stored_grants(&self, user: &str) -> u64 {
        self.store.count_tokens_for_user(user).unwrap_or(0)
    }

    async fn call(&self, op: Op, request: Request) -> Result<Response, ApiError> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| ApiError::validation("the request body is over 64 KiB"))?;
        let signed = sigv4::verify(
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
            &body,
            now(),
            |akid| self.callers.get(akid).map(|(secret, _)| secret.clone()),
        )
        .map_err(|r| ApiError::unauthorized(format!("signature refused: {}", r.0)))?;
        let (_, allowed) = &self.callers[&signed.access_key_id];
        if allowed.as_ref().is_some_and(|ops| !ops.contains(op.name())) {
            return Err(ApiError::denied(format!(
                "caller {} may not call {}",
                signed.access_key_id,
                op.name()
            )));
        }
        tracing::debug!(target: "airlock::identity", op = op.name(), caller = %signed.access_key_id, "call");
        match op {
            Op::WorkloadToken | Op::WorkloadTokenForUserId | Op::WorkloadTokenForJwt => {
                self.workload_token(op, parse(&body)?).await
            }
            Op::ResourceOauth2Token => self.oauth2_token(parse(&body)?).await,
            Op::ResourceApiKey => self.api_key(parse(&body)?),
            Op::CompleteResourceTokenAuth => self.complete(parse(&body)?).await,
        }
    }

    fn workload(&self, name: &str) -> Result<&Workload, ApiError> {
        if !valid_workload_name(name) {
            return Err(ApiError::validation(
                "workloadName must be 3-255 of A-Z a-z 0-9 _ . -",
            ));
        }
        self.workloads.get(name).ok_or_else(|| {
            ApiError::not_found(format!("workload identity `{name}` does not exist"))
        })
    }

    async fn workload_token(
        &self,
        op: Op,
        input: WorkloadTokenInput,
    ) -> Result<Response, ApiError> {
        let workload = self.workload(&input.workload_name)?;
        let user = match op {
            Op::WorkloadTokenForUserId => {
                let user = input
                    .user_id
                    .ok_or_else(|| ApiError::validation("userId is required"))?;
                if !(1..=128).contains(&user.len()) {
                    return Err(ApiError::validation("userId must be 1-128 characters"));
                }
                Some(user)
            }
            Op::WorkloadTokenForJwt => {
                let token = input
                    .user_token
                    .ok_or_else(|| ApiError::validation("userToken is required"))?;
                Some(
                    workload
                        .jwt
                        .verify(&self.http, &token)
                        .await
                        .map_err(ApiError::unauthorized)?,
                )
            }
            _ => None,
        };
        let token = self.issue_workload_token(&input.workload_name, user.as_deref());
        Ok(ok(json!({ "workloadAccessToken": token.expose() })))
    }

    fn issue_workload_token(&self, workload: &str, user: Option<&str>) -> Secret {
        let payload = json!({ "w": workload, "u": user, "exp": now() + self.workload_token_ttl });
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Secret::new(format!("v1.{payload}.{tag}"))
    }

    fn check_workload_token(&self, token: &str) -> Result<WorkloadClaims, ApiError> {
        let invalid = || ApiError::unauthorized("the workload access token is invalid or expired");
        let mut parts = token.split('.');
        let (Some("v1"), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| invalid())?;
        let payload: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(invalid)?;
        if payload["exp"].as_i64().is_none_or(|exp| exp < now()) {
            return Err(invalid());
        }
        let workload = payload["w"].as_str().ok_or_else(invalid)?.to_string();
        if !self.workloads.contains_key(&workload) {
            return Err(invalid());
        }
        Ok(WorkloadClaims {
            workload,
            user: payload["u"].as_str().map(str::to_string),
        })
    }

    fn provider(&self, name: &str) -> Result<&Provider, ApiError> {
        if !valid_provider_name(name) {
            return Err(ApiError::validation(
                "resourceCredentialProviderName must be 1-128 of A-Z a-z 0-9 _ -",
            ));
        }
        self.providers.get(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "OAuth2 credential provider `{name}` does not exist"
            ))
        })
    }

    async fn oauth2_token(&self, input: OAuth2TokenInput) -> Result<Response, ApiError> {
        let claims = self.check_workload_token(&input.workload_identity_token)?;
        let provider = self.provider(&input.resource_credential_provider_name)?;
        let mut scopes: Vec<String> = input.scopes.clone();
        scopes.sort();
        scopes.dedup();
        if scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err(ApiError::validation(
                "scopes must be non-empty and contain no spaces",
            ));
        }
        match input.oauth2_flow.as_str() {
            "M2M" => self.m2m(&claims, provider, &scopes).await,
            "USER_FEDERATION" => {
                self.user_federation(&claims, provider, &scopes, &input)
                    .await
            }
            other => Err(ApiError::validation(format!(
                "oauth2Flow `{other}` is not supported here; use USER_FEDERATION or M2M"
            ))),
        }
    }

    async fn m2m(
        &self,
        claims: &WorkloadClaims,
        provider: &Provider,
        scopes: &[String],
    ) -> Result<Response, ApiError> {
        let name = &provider.config.name;
        // The workload's own tokens live under the empty user id (user ids are 1-128 characters).
        if let Some(entry) = self
            .store
            .get_token(&claims.workload, "", name)
            .map_err(internal)?
            && covers(&entry.scopes, scopes)
            && entry
                .expires_at
                .is_none_or(|e| e > now() + self.refresh_margin)
        {
            return Ok(ok(json!({ "accessToken": entry.access.expose() })));
        }
        let tokens = provider
            .client_credentials(&self.http, scopes)
            .await
            .map_err(|f| {
                ApiError::denied(format!("provider `{name}` refused client credentials: {f}"))
            })?;
        let entry = VaultEntry {
            scopes: granted(tokens.scope.as_deref(), scopes),
            access: tokens.access,
            refresh: None,
            expires_at: tokens.expires_in.map(|e| now() + e),
        };
        self.store
            .put_token(&claims.workload, "", name, &entry, now())
            .map_err(internal)?;
        Ok(ok(json!({ "accessToken": entry.access.expose() })))
    }

    async fn user_federation(
        &self,
        claims: &WorkloadClaims,
        provider: &Provider,
        scopes: &[String],
        input: &OAuth2TokenInput,
    ) -> Result<Response, ApiError> {
        let Some(user) = claims.user.as_deref() else {
            return Err(ApiError::validation(
                "USER_FEDERATION needs a workload access token issued for a user",
            ));
        };
        if scopes.is_empty() {
            return Err(ApiError::validation("scopes is required"));
        }
        let name = &provider.config.name;
        let mut consult_vault = !input.force_authentication.unwrap_or(false);
        if let Some(uri) = &input.session_uri {
            let session = self.store.session(uri).map_err(internal)?;
            let Some(session) = session
                .filter(|s| s.workload == claims.workload && s.user == user && &s.provider == name)
            else {
                return Err(ApiError::invalid_session());
            };
            match session.status {
                SessionStatus::Completed => consult_vault = true,
                SessionStatus::Failed => {
                    return Ok(ok(json!({ "sessionUri": uri, "sessionStatus": "FAILED" })));
                }
                _ if session.expires_at < now() => {
                    return Ok(ok(json!({ "sessionUri": uri, "sessionStatus": "FAILED" })));
                }
                _ => {
                    return Ok(ok(
                        json!({ "sessionUri": uri, "sessionStatus": "IN_PROGRESS" }),
                    ));
                }
            }
        }
        if consult_vault
            && let Some(token) = self
                .stored_token(&claims.workload, user, provider, scopes)
                .await?
        {
            return Ok(ok(json!({ "accessToken": token.expose() })));
        }
        let Some(return_url) = input.resource_oauth2_return_url.as_deref() else {
            return Err(ApiError::validation(
                "the user must consent, and resourceOauth2ReturnUrl is missing",
            ));
        };
        let workload = self.workload(&claims.workload)?;
        if !workload.allowed_return_urls.iter().any(|u| u == return_url) {
            return Err(ApiError::validation(format!(
                "resourceOauth2ReturnUrl is not among the workload's allowed return URLs: {return_url}"
            )));
        }
        let endpoints = provider
            .endpoints(&self.http)
            .await
            .map_err(|f| ApiError::internal(format!("provider `{name}`: {f}")))?;
        let state = random_token(32);
        let verifier = Secret::new(random_token(32));
        let uri = format!("{SESSION_URI_PREFIX}{}", random_token(24));
        let t = now();
        self.store
            .insert_session(&NewSession {
                uri: &uri,
                state: &state,
                workload: &claims.workload,
                user,
                provider: name,
                scopes,
                return_url,
                custom_state: input.custom_state.as_deref(),
                verifier: &verifier,
                now: t,
                expires_at: t + self.session_ttl,
            })
            .map_err(internal)?;
        let _ = self.store.prune_sessions(t);
        let url = provider.authorization_url(
            endpoints,
            &self.callback_url(name),
            scopes,
            &state,
            &verifier,
            input.force_authentication.unwrap_or(false),
        );
        tracing::info!(target: "airlock::identity", provider = %name, "consent session started");
        Ok(ok(json!({ "authorizationUrl": url, "sessionUri": uri })))
    }

    /// A usable stored token covering `scopes`, refreshed when it is about to expire.
    async fn stored_token(
        &self,
        workload: &str,
        user: &str,
        provider: &Provider,
        scopes: &[String],
    ) -> Result<Option<Secret>, ApiError> {
        let name = &provider.config.name;
        let stored = || -> Result<Option<VaultEntry>, ApiError> {
            let entry = self
                .store
                .get_token(workload, user, name)
                .map_err(internal)?;
            Ok(entry.filter(|e| covers(&e.scopes, scopes)))
        };
        let fresh = |e: &VaultEntry| e.expires_at.is_none_or(|t| t > now() + self.refresh_margin);
        match stored()? {
            None => return Ok(None),
            Some(entry) if fresh(&entry) => return Ok(Some(entry.access)),
            Some(_) => {}
        }
        // One refresh per grant at a time: refresh tokens may be single-use, and
        // a provider that sees one used twice may revoke the grant.
        let lock = self.refresh_lock(workload, user, name);
        let _held = lock.lock().await;
        let Some(entry) = stored()? else {
            return Ok(None);
        };
        if fresh(&entry) {
            return Ok(Some(entry.access));
        }
        let Some(refresh) = entry.refresh else {
            return Ok(None);
        };
        match provider.refresh(&self.http, &refresh).await {
            Ok(tokens) => {
                let fresh = VaultEntry {
                    scopes: tokens
                        .scope
                        .as_deref()
                        .map(|s| granted(Some(s), scopes))
                        .unwrap_or(entry.scopes),
                    access: tokens.access,
                    // Providers that rotate refresh tokens send a new one.
                    refresh: tokens.refresh.or(Some(refresh)),
                    expires_at: tokens.expires_in.map(|e| now() + e),
                };
                self.store
                    .put_token(workload, user, name, &fresh, now())
                    .map_err(internal)?;
                tracing::info!(target: "airlock::identity", provider = %name, "token refreshed");
                Ok(Some(fresh.access))
            }
            Err(f) => {
                tracing::info!(target: "airlock::identity", provider = %name, error = %f.error, "refresh refused; consent needed again");
                self.store
                    .delete_token(workload, user, name)
                    .map_err(internal)?;
                Ok(None)
            }
        }
    }

    fn refresh_lock(
        &self,
        workload: &str,
        user: &str,
        provider: &str,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.refresh_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .entry(format!("{workload}\0{user}\0{provider}"))
            .or_default()
            .clone()
    }

    fn api_key(&self, input: ApiKeyInput) -> Result<Response, ApiError> {
        self.check_workload_token(&input.workload_identity_token)?;
        let name = &input.resource_credential_provider_name;
        let key = self.api_keys.get(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "API key credential provider `{name}` does not exist"
            ))
        })?;
        Ok(ok(json!({ "apiKey": key.expose() })))
    }

    async fn complete(&self, input: CompleteInput) -> Result<Response, ApiError> {
        if !input.session_uri.starts_with(SESSION_URI_PREFIX) || input.session_uri.len() > 1024 {
            return Err(ApiError::validation(format!(
                "sessionUri must start with {SESSION_URI_PREFIX}"
            )));
        }
        let Some(session) = self.store.session(&input.session_uri).map_err(internal)? else {
            return Err(ApiError::invalid_session());
        };
        match (session.status, &session.reason) {
            (SessionStatus::Failed, Some(reason)) => {
                return Err(ApiError::denied(format!(
                    "Invalid or expired session: {reason}"
                )));
            }
            (SessionStatus::Completed | SessionStatus::Failed, _) => {
                return Err(ApiError::invalid_session());
            }
            _ => {}
        }
        if session.expires_at < now() {
            self.fail(
                &session.uri,
                session.status,
                "expired before it was completed",
            )?;
            return Err(ApiError::invalid_session());
        }
        let user = match (
            &input.user_identifier.user_id,
            &input.user_identifier.user_token,
        ) {
            (Some(id), None) => id.clone(),
            (None, Some(token)) => {
                let workload = self.workload(&session.workload)?;
                workload
                    .jwt
                    .verify(&self.http, token)
                    .await
                    .map_err(ApiError::unauthorized)?
            }
            _ => {
                return Err(ApiError::validation(
                    "userIdentifier must hold exactly one of userId and userToken",
                ));
            }
        };
        if user != session.user {
            // Spend the session: whoever holds its URI gets no second try.
            self.fail(
                &session.uri,
                session.status,
                "completed by a user other than the one who started it",
            )?;
            tracing::warn!(target: "airlock::identity", "session binding refused: the signed-in user is not the user who started the flow");
            return Err(ApiError::denied(
                "the signed-in user is not the user who started this authorization; the session is now spent",
            ));
        }
        if session.status == SessionStatus::Pending {
            return Err(ApiError::validation(
                "the user has not finished authorizing at the provider yet",
            ));
        }
        if session.status != SessionStatus::Authorized
            || !self
                .store
                .transition(
                    &session.uri,
                    SessionStatus::Authorized,
                    SessionStatus::Exchanging,
                    None,
                    None,
                )
                .map_err(internal)?
        {
            // Another binding of this session is under way: the code is exchanged once.
            return Err(ApiError::invalid_session());
        }
        let (Some(code), Some(verifier)) = (&session.code, &session.verifier) else {
            return Err(ApiError::internal("the session has no authorization code"));
        };
        let provider = self.provider(&session.provider)?;
        let tokens = match provider
            .exchange_code(
                &self.http,
                code,
                verifier,
                &self.callback_url(&session.provider),
            )
            .await
        {
            Ok(t) => t,
            Err(f) => {
                self.fail(
                    &session.uri,
                    SessionStatus::Exchanging,
                    &format!("the provider refused the code: {}", f.error),
                )?;
                return Err(ApiError::denied(format!(
                    "the provider refused the authorization code: {f}"
                )));
            }
        };
        let entry = VaultEntry {
            scopes: granted(tokens.scope.as_deref(), &session.scopes),
            access: tokens.access,
            refresh: tokens.refresh,
            expires_at: tokens.expires_in.map(|e| now() + e),
        };
        if !self
            .store
            .complete(&session, &entry, now())
            .map_err(internal)?
        {
            return Err(ApiError::invalid_session());
        }
        tracing::info!(target: "airlock::identity", provider = %session.provider, "session bound; token stored");
        Ok(ok(json!({})))
    }

    fn fail(&self, uri: &str, from: SessionStatus, reason: &str) -> Result<(), ApiError> {
        self.store
            .transition(uri, from, SessionStatus::Failed, None, Some(reason))
            .map_err(internal)?;
        Ok(())
    }

    pub(crate) fn callback_url(&self, provider: &str) -> String {
        format!("{}/identities/oauth2/callback/{provider}", self.public_url)
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(target: "airlock::identity", "{e}");
    ApiError::internal(e.to_string())
}

fn covers(have: &[String], want: &[String]) -> bool {
    want.iter().all(|w| have.contains(w))
}

/// The scopes the provider says it granted, or what was asked when it is silent.
fn granted(said: Option<&str>, asked: &[String]) -> Vec<String> {
    match said {
        Some(s) => {
            let mut v: Vec<String> = s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            v.sort();
            v.dedup();
            v
        }
        None => asked.to_vec(),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

fn page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>Authorization</title><p>{}</p>",
        message.replace('&', "&amp;").replace('<', "&lt;")
    );
    let mut r = (status, Html(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The provider sends the browser here with `code` and `state`. The code is
/// kept sealed, not exchanged: the exchange waits for the binding.
async fn callback(
    State(s): State<Arc<Service>>,
    Path(provider): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(state) = q.state else {
        return page(
            StatusCode::BAD_REQUEST,
            "The provider's answer has no state parameter.",
        );
    };
    let session = match s.store.session_by_state(&state) {
        Ok(Some(session)) if session.provider == provider => session,
        Ok(_) => return page(StatusCode::BAD_REQUEST, "Unknown authorization session."),
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, &internal(e).message),
    };
    if session.status != SessionStatus::Pending {
        return page(
            StatusCode::BAD_REQUEST,
            "This authorization session was already used.",
        );
    }
    let spend = |reason: &str| {
        s.store.transition(
            &session.uri,
            SessionStatus::Pending,
            SessionStatus::Failed,
            None,
            Some(reason),
        )
    };
    if session.expires_at < now() {
        let _ = spend("expired before the provider answered");
        return page(
            StatusCode::BAD_REQUEST,
            "This authorization session has expired. Start again.",
        );
    }
    if let (Some(iss), Some(p)) = (&q.iss, s.providers.get(&provider))
        && let Ok(endpoints) = p.endpoints(&s.http).await
        && endpoints
            .issuer
            .as_ref()
            .is_some_and(|expected| expected != iss)
    {
        let _ = spend("the callback's issuer is not the provider's");
        return page(
            StatusCode::BAD_REQUEST,
            "The answer came from another issuer.",
        );
    }
    let moved = match (q.code, q.error) {
        (Some(code), None) => s.store.transition(
            &session.uri,
            SessionStatus::Pending,
            SessionStatus::Authorized,
            Some(&Secret::new(code)),
            None,
        ),
        (_, Some(error)) => {
            let reason = if error == "access_denied" {
                "the user denied consent at the provider".to_string()
            } else {
                format!(
                    "the provider answered `{}`",
                    error.chars().take(64).collect::<String>()
                )
            };
            spend(&reason)
        }
        (None, None) => spend("the provider's answer has neither code nor error"),
    };
    match moved {
        Ok(true) => {}
        Ok(false) => {
            return page(
                StatusCode::BAD_REQUEST,
                "This authorization session was already used.",
            );
        }
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, &internal(e).message),
    }
    let Ok(mut target) = url::Url::parse(&session.return_url) else {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The return URL is invalid.",
        );
    };
    {
        let mut q = target.query_pairs_mut();
        q.append_pair("session_id", &session.uri);
        // customState goes back to the return URL, for the binding service's own CSRF check.
        if let Some(state) = &session.custom_state {
            q.append_pair("state", state);
        }
    }
    Redirect::to(target.as_str()).into_response()
}
