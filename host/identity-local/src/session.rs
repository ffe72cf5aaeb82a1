//! The consent session: one typed state machine, and every step that moves it.
//!
//! ```text
//! pending ──code received──▶ authorized ──binding started──▶ exchanging ──token stored──▶ completed
//!    │                          │                                │
//!    └──────── failed ──────────┴──────────── failed ────────────┴──▶ failed
//! ```
//!
//! - `start_session`: a token request that needs consent creates a pending
//!   session (state + PKCE verifier) and answers with the authorization URL.
//! - `on_callback`: the provider's redirect moves it to authorized, keeping
//!   the code sealed; the code is not exchanged yet.
//! - `complete` (CompleteResourceTokenAuth): only for the user who started
//!   it, the session moves to exchanging (once: a compare-and-set), the code
//!   is exchanged, and the token is stored as it completes. Anyone else spends
//!   it. So a swapped browser or a forged link never mints a token.
//!
//! [`Status::next`] is the one list of transitions; the store applies each as
//! a compare-and-set on the status it was read in.

use airlock_identity::Secret;
use airlock_policy::UserId;
use axum::response::Response;
use serde_json::json;

use crate::api::{ApiError, CompleteInput, OAuth2TokenInput, internal, ok};
use crate::oauth::{Provider, random_token};
use crate::service::Service;
use crate::store::{Session, VaultEntry};
use crate::vault::granted;
use crate::workload::WorkloadClaims;

const SESSION_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// Where a consent session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Waiting for the user at the provider.
    Pending,
    /// The provider sent a code; waiting for CompleteResourceTokenAuth.
    Authorized,
    /// The right user is binding it; the code is being exchanged (once).
    Exchanging,
    /// Bound and stored.
    Completed,
    /// Denied, expired, bound by the wrong user, or the exchange failed. Spent.
    Failed,
}

/// What happens to a session.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// The provider redirected back with a code.
    CodeReceived(&'a Secret),
    /// The user who started it is binding it.
    BindingStarted,
    /// The code was exchanged and the token stored.
    TokenStored,
    /// It ends without a token, for this reason.
    Failed(&'a str),
}

impl Event<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Event::CodeReceived(_) => "code received",
            Event::BindingStarted => "binding started",
            Event::TokenStored => "token stored",
            Event::Failed(_) => "failed",
        }
    }
}

impl Status {
    /// The transitions, all of them.
    pub(crate) fn next(self, event: &Event<'_>) -> Option<Status> {
        use Status::*;
        match (self, event) {
            (Pending, Event::CodeReceived(_)) => Some(Authorized),
            (Authorized, Event::BindingStarted) => Some(Exchanging),
            (Exchanging, Event::TokenStored) => Some(Completed),
            (Pending | Authorized | Exchanging, Event::Failed(_)) => Some(Failed),
            _ => None,
        }
    }

    /// Completed and failed sessions are spent: their code and verifier are wiped.
    pub(crate) fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Authorized => "authorized",
            Status::Exchanging => "exchanging",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Status {
        match s {
            "pending" => Status::Pending,
            "authorized" => Status::Authorized,
            "exchanging" => Status::Exchanging,
            "completed" => Status::Completed,
            _ => Status::Failed,
        }
    }
}

/// What polling a session says.
pub(crate) enum Poll {
    /// Bound: the vault has the token.
    Completed,
    /// `IN_PROGRESS` or `FAILED`.
    Answer(&'static str),
}

/// The provider's redirect to the callback.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct CallbackQuery {
    pub(crate) state: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) iss: Option<String>,
}

/// Why a callback did not continue to the binding URL: what the browser is shown.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CallbackError {
    /// The provider's answer is malformed, unknown, spent or expired.
    BadRequest(&'static str),
    /// The answer could not be checked right now.
    Unavailable(&'static str),
    /// Something failed on this side (details in the log only).
    Internal,
}

impl Service {
    pub(crate) async fn start_session(
        &self,
        claims: &WorkloadClaims,
        user: &UserId,
        provider: &Provider,
        scopes: &[String],
        input: &OAuth2TokenInput,
    ) -> Result<Response, ApiError> {
        let name = &provider.config.name;
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
        let now = self.now();
        let session = Session {
            uri: format!("{SESSION_URI_PREFIX}{}", random_token(24)),
            state: random_token(32),
            workload: claims.workload.clone(),
            user: user.to_string(),
            provider: name.clone(),
            scopes: scopes.to_vec(),
            return_url: return_url.to_string(),
            custom_state: input.custom_state.clone(),
            status: Status::Pending,
            reason: None,
            expires_at: now + self.session_ttl,
            verifier: Some(Secret::new(random_token(32))),
            code: None,
        };
        self.store.insert_session(&session, now).map_err(internal)?;
        let _ = self.store.prune_sessions(now);
        let url = provider.authorization_url(
            endpoints,
            scopes,
            &session.state,
            session.verifier.as_ref().expect("set above"),
            input.force_authentication.unwrap_or(false),
        );
        tracing::info!(target: "airlock::identity", provider = %name, "consent session started");
        Ok(ok(
            json!({ "authorizationUrl": url, "sessionUri": session.uri }),
        ))
    }

    /// The SDK's polling pattern: where the caller's own session stands.
    pub(crate) fn poll_session(
        &self,
        uri: &str,
        claims: &WorkloadClaims,
        user: &UserId,
        provider: &str,
    ) -> Result<Poll, ApiError> {
        let session = self.store.session(uri).map_err(internal)?;
        let Some(session) = session.filter(|s| {
            s.workload == claims.workload && s.user == user.as_str() && s.provider == provider
        }) else {
            return Err(ApiError::invalid_session());
        };
        Ok(match session.status {
            Status::Completed => Poll::Completed,
            Status::Failed => Poll::Answer("FAILED"),
            _ if session.expires_at < self.now() => Poll::Answer("FAILED"),
            _ => Poll::Answer("IN_PROGRESS"),
        })
    }

    /// The provider's redirect: keep the code (sealed) and send the browser
    /// on to the binding URL with `session_id`.
    pub(crate) async fn on_callback(
        &self,
        provider: &str,
        q: CallbackQuery,
    ) -> Result<String, CallbackError> {
        let state = q.state.ok_or(CallbackError::BadRequest(
            "The provider's answer has no state parameter.",
        ))?;
        let session = match self.store.session_by_state(&state) {
            Ok(Some(session)) if session.provider == provider => session,
            Ok(_) => return Err(CallbackError::BadRequest("Unknown authorization session.")),
            Err(e) => {
                internal(e);
                return Err(CallbackError::Internal);
            }
        };
        if session.status != Status::Pending {
            return Err(CallbackError::BadRequest(
                "This authorization session was already used.",
            ));
        }
        let spend = |reason: &str| {
            self.store
                .transition(&session, Status::Pending, Event::Failed(reason))
                .map_err(|e| {
                    internal(e);
                    CallbackError::Internal
                })
        };
        if session.expires_at < self.now() {
            spend("expired before the provider answered")?;
            return Err(CallbackError::BadRequest(
                "This authorization session has expired. Start again.",
            ));
        }
        // RFC 9207: an answer naming an issuer must name this provider's, and
        // an issuer that cannot be checked is not taken on trust.
        if let Some(iss) = &q.iss {
            let checked = match self.providers.get(provider) {
                Some(p) => p.endpoints(&self.http).await.map(|e| e.issuer.clone()),
                None => return Err(CallbackError::BadRequest("Unknown authorization session.")),
            };
            match checked {
                Ok(Some(expected)) if &expected != iss => {
                    spend("the callback's issuer is not the provider's")?;
                    return Err(CallbackError::BadRequest(
                        "The answer came from another issuer.",
                    ));
                }
                Ok(_) => {}
                Err(f) => {
                    tracing::warn!(target: "airlock::identity", provider, "cannot check the callback's issuer: {f}");
                    spend("the callback's issuer could not be checked")?;
                    return Err(CallbackError::Unavailable(
                        "The identity service could not check who answered. Start again in a moment.",
                    ));
                }
            }
        }
        let moved = match (q.code, q.error) {
            (Some(code), None) => self
                .store
                .transition(
                    &session,
                    Status::Pending,
                    Event::CodeReceived(&Secret::new(code)),
                )
                .map_err(|e| {
                    internal(e);
                    CallbackError::Internal
                })?,
            (_, Some(error)) => {
                let reason = if error == "access_denied" {
                    "the user denied consent at the provider".to_string()
                } else {
                    format!(
                        "the provider answered `{}`",
                        error
                            .chars()
                            .filter(|c| !c.is_control())
                            .take(64)
                            .collect::<String>()
                    )
                };
                spend(&reason)?
            }
            (None, None) => spend("the provider's answer has neither code nor error")?,
        };
        if !moved {
            return Err(CallbackError::BadRequest(
                "This authorization session was already used.",
            ));
        }
        let Ok(mut target) = url::Url::parse(&session.return_url) else {
            tracing::error!(target: "airlock::identity", "a session's return URL does not parse");
            return Err(CallbackError::Internal);
        };
        {
            let mut pairs = target.query_pairs_mut();
            pairs.append_pair("session_id", &session.uri);
            // customState goes back to the return URL, for the binding service's own CSRF check.
            if let Some(state) = &session.custom_state {
                pairs.append_pair("state", state);
            }
        }
        Ok(target.into())
    }

    /// CompleteResourceTokenAuth: bind the session to the signed-in user.
    pub(crate) async fn complete(&self, input: CompleteInput) -> Result<Response, ApiError> {
        if !input.session_uri.starts_with(SESSION_URI_PREFIX) || input.session_uri.len() > 1024 {
            return Err(ApiError::validation(format!(
                "sessionUri must start with {SESSION_URI_PREFIX}"
            )));
        }
        let Some(session) = self.store.session(&input.session_uri).map_err(internal)? else {
            return Err(ApiError::invalid_session());
        };
        if matches!(session.status, Status::Completed | Status::Failed) {
            // Declined, used or spent: AgentCore says no more than this.
            tracing::info!(target: "airlock::identity", reason = ?session.reason, "completion of an ended session refused");
            return Err(ApiError::invalid_session());
        }
        let fail = |from: Status, reason: &str| -> Result<(), ApiError> {
            self.store
                .transition(&session, from, Event::Failed(reason))
                .map_err(internal)?;
            Ok(())
        };
        if session.expires_at < self.now() {
            fail(session.status, "expired before it was completed")?;
            return Err(ApiError::invalid_session());
        }
        let user = match (
            &input.user_identifier.user_id,
            &input.user_identifier.user_token,
        ) {
            (Some(id), None) => UserId::parse(id)
                .map_err(|e| ApiError::validation(format!("userIdentifier.userId: {e}")))?,
            (None, Some(token)) => self
                .workload(&session.workload)?
                .jwt
                .verify(token)
                .await
                .map_err(|e| ApiError::unauthorized(e.to_string()))?
                .id()
                .clone(),
            _ => {
                return Err(ApiError::validation(
                    "userIdentifier must hold exactly one of userId and userToken",
                ));
            }
        };
        if user.as_str() != session.user {
            // Spend the session: whoever holds its URI gets no second try.
            fail(
                session.status,
                "completed by a user other than the one who started it",
            )?;
            tracing::warn!(target: "airlock::identity", "session binding refused: the signed-in user is not the user who started the flow");
            // AgentCore's answer: the same as for any session one may not complete.
            return Err(ApiError::invalid_session());
        }
        if session.status == Status::Pending {
            return Err(ApiError::not_ready(
                "the user has not finished authorizing at the provider yet",
            ));
        }
        if session.status != Status::Authorized
            || !self
                .store
                .transition(&session, Status::Authorized, Event::BindingStarted)
                .map_err(internal)?
        {
            // Another binding of this session is under way: the code is exchanged once.
            return Err(ApiError::invalid_session());
        }
        let (Some(code), Some(verifier)) = (&session.code, &session.verifier) else {
            fail(
                Status::Exchanging,
                "the session holds no authorization code",
            )?;
            return Err(ApiError::invalid_session());
        };
        let provider = self.provider(&session.provider)?;
        let tokens = match provider.exchange_code(&self.http, code, verifier).await {
            Ok(t) => t,
            Err(f) => {
                fail(
                    Status::Exchanging,
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
            expires_at: tokens.expires_in.map(|e| self.now() + e),
        };
        if !self
            .store
            .complete(&session, &user, &entry, self.now())
            .map_err(internal)?
        {
            return Err(ApiError::invalid_session());
        }
        tracing::info!(target: "airlock::identity", provider = %session.provider, "session bound; token stored");
        Ok(ok(json!({})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transitions_are_exactly_these() {
        use Status::*;
        let code = Secret::new("c");
        let events = [
            Event::CodeReceived(&code),
            Event::BindingStarted,
            Event::TokenStored,
            Event::Failed("x"),
        ];
        let mut allowed = Vec::new();
        for from in [Pending, Authorized, Exchanging, Completed, Failed] {
            for e in &events {
                if let Some(to) = from.next(e) {
                    allowed.push((from.as_str(), e.name(), to.as_str()));
                }
            }
        }
        assert_eq!(
            allowed,
            [
                ("pending", "code received", "authorized"),
                ("pending", "failed", "failed"),
                ("authorized", "binding started", "exchanging"),
                ("authorized", "failed", "failed"),
                ("exchanging", "token stored", "completed"),
                ("exchanging", "failed", "failed"),
            ]
        );
        for s in [Pending, Authorized, Exchanging, Completed, Failed] {
            assert_eq!(Status::parse(s.as_str()), s);
        }
    }
}
