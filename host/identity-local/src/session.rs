//! The consent session: every step that moves it through its state machine
//! (`state`).
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
//! `Status::next` is the one list of transitions; the store applies each as
//! a compare-and-set on the status it was read in.

use airlock_identity::Secret;
use airlock_policy::UserId;

use crate::error::{IdentityServiceError, internal};
use crate::model::{
    CallbackQuery, CompleteInput, OAuth2TokenInput, TokenAnswer, UserIdentifierInput,
};
use crate::oauth::{Provider, random_token};
use crate::scopes::granted;
use crate::service::Service;
use crate::state::{Event, Status};
use crate::store::{Session, VaultEntry};
use crate::workload::WorkloadClaims;

const SESSION_URI_PREFIX: &str = airlock_identity::session_uri::PREFIX;

/// What polling a session says.
pub(crate) enum Poll {
    /// Bound: the vault has the token.
    Completed,
    /// `IN_PROGRESS` or `FAILED`.
    Answer(&'static str),
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

impl CallbackError {
    /// A failure on this side: logged in full, shown to the browser in general.
    fn logged(e: impl std::fmt::Display) -> CallbackError {
        internal(e);
        CallbackError::Internal
    }
}

/// The browser may not reuse an authorization session.
const ALREADY_USED: CallbackError =
    CallbackError::BadRequest("This authorization session was already used.");

/// An answer whose state names no session of this provider.
const UNKNOWN_SESSION: CallbackError = CallbackError::BadRequest("Unknown authorization session.");

impl Service {
    /// A token request that needs consent: a new pending session, and the
    /// authorization URL to send the user to.
    pub(crate) async fn start_session(
        &self,
        claims: &WorkloadClaims,
        user: &UserId,
        provider: &Provider,
        scopes: &[String],
        input: &OAuth2TokenInput,
    ) -> Result<TokenAnswer, IdentityServiceError> {
        let name = &provider.config.name;
        let Some(return_url) = input.resource_oauth2_return_url.as_deref() else {
            return Err(IdentityServiceError::validation(
                "the user must consent, and resourceOauth2ReturnUrl is missing",
            ));
        };
        let workload = self.workload(&claims.workload)?;
        if !workload.allowed_return_urls.iter().any(|u| u == return_url) {
            return Err(IdentityServiceError::validation(format!(
                "resourceOauth2ReturnUrl is not among the workload's allowed return URLs: {return_url}"
            )));
        }
        let endpoints = provider
            .endpoints(&self.http)
            .await
            .map_err(|f| IdentityServiceError::internal(format!("provider `{name}`: {f}")))?;
        let now = self.now();
        let verifier = Secret::new(random_token(32));
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
            verifier: Some(verifier.clone()),
            code: None,
        };
        self.store.insert_session(&session, now).map_err(internal)?;
        let _ = self.store.prune_sessions(now);
        let url = provider.authorization_url(
            endpoints,
            scopes,
            &session.state,
            &verifier,
            input.force_authentication.unwrap_or(false),
        );
        tracing::info!(target: "airlock::identity", provider = %name, "consent session started");
        Ok(TokenAnswer::ConsentNeeded {
            authorization_url: url,
            session_uri: session.uri,
        })
    }

    /// The SDK's polling pattern: where the caller's own session stands.
    pub(crate) fn poll_session(
        &self,
        uri: &str,
        claims: &WorkloadClaims,
        user: &UserId,
        provider: &str,
    ) -> Result<Poll, IdentityServiceError> {
        let session = self.store.session(uri).map_err(internal)?;
        let Some(session) = session.filter(|s| {
            s.workload == claims.workload && s.user == user.as_str() && s.provider == provider
        }) else {
            return Err(IdentityServiceError::invalid_session());
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
        let session = self.pending_session(provider, &state)?;
        if session.expires_at < self.now() {
            self.spend_pending(&session, "expired before the provider answered")?;
            return Err(CallbackError::BadRequest(
                "This authorization session has expired. Start again.",
            ));
        }
        if let Some(iss) = &q.iss {
            self.check_callback_issuer(&session, provider, iss).await?;
        }
        if !self.record_callback_answer(&session, q.code, q.error)? {
            return Err(ALREADY_USED);
        }
        binding_url(&session)
    }

    /// The still pending session of `provider` that `state` names.
    fn pending_session(&self, provider: &str, state: &str) -> Result<Session, CallbackError> {
        let session = match self.store.session_by_state(state) {
            Ok(Some(session)) if session.provider == provider => session,
            Ok(_) => return Err(UNKNOWN_SESSION),
            Err(e) => return Err(CallbackError::logged(e)),
        };
        if session.status != Status::Pending {
            return Err(ALREADY_USED);
        }
        Ok(session)
    }

    /// End a pending session without a token; false when it had moved on.
    fn spend_pending(&self, session: &Session, reason: &str) -> Result<bool, CallbackError> {
        self.store
            .transition(session, Status::Pending, Event::Failed(reason))
            .map_err(CallbackError::logged)
    }

    /// RFC 9207: an answer naming an issuer must name this provider's, and
    /// an issuer that cannot be checked is not taken on trust. Either way
    /// the session is spent.
    async fn check_callback_issuer(
        &self,
        session: &Session,
        provider: &str,
        iss: &str,
    ) -> Result<(), CallbackError> {
        let checked = match self.providers.get(provider) {
            Some(p) => p.endpoints(&self.http).await.map(|e| e.issuer.clone()),
            None => return Err(UNKNOWN_SESSION),
        };
        match checked {
            Ok(Some(expected)) if expected != iss => {
                self.spend_pending(session, "the callback's issuer is not the provider's")?;
                Err(CallbackError::BadRequest(
                    "The answer came from another issuer.",
                ))
            }
            Ok(_) => Ok(()),
            Err(f) => {
                tracing::warn!(target: "airlock::identity", provider, "cannot check the callback's issuer: {f}");
                self.spend_pending(session, "the callback's issuer could not be checked")?;
                Err(CallbackError::Unavailable(
                    "The identity service could not check who answered. Start again in a moment.",
                ))
            }
        }
    }

    /// Keep the code (the session moves to authorized), or spend the session
    /// on an error or an empty answer. False when another answer got there first.
    fn record_callback_answer(
        &self,
        session: &Session,
        code: Option<String>,
        error: Option<String>,
    ) -> Result<bool, CallbackError> {
        match (code, error) {
            (Some(code), None) => self
                .store
                .transition(
                    session,
                    Status::Pending,
                    Event::CodeReceived(&Secret::new(code)),
                )
                .map_err(CallbackError::logged),
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
                self.spend_pending(session, &reason)
            }
            (None, None) => {
                self.spend_pending(session, "the provider's answer has neither code nor error")
            }
        }
    }

    /// CompleteResourceTokenAuth: bind the session to the signed-in user.
    pub(crate) async fn complete(&self, input: CompleteInput) -> Result<(), IdentityServiceError> {
        let session = self.session_to_complete(&input.session_uri)?;
        let user = self
            .completing_user(&input.user_identifier, &session)
            .await?;
        if user.as_str() != session.user {
            // Spend the session: whoever holds its URI gets no second try.
            self.fail_session(
                &session,
                session.status,
                "completed by a user other than the one who started it",
            )?;
            tracing::warn!(target: "airlock::identity", "session binding refused: the signed-in user is not the user who started the flow");
            // AgentCore's answer: the same as for any session one may not complete.
            return Err(IdentityServiceError::invalid_session());
        }
        if session.status == Status::Pending {
            return Err(IdentityServiceError::not_ready(
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
            return Err(IdentityServiceError::invalid_session());
        }
        self.exchange_and_store(&session, &user).await
    }

    /// The session `uri` names, if it may still be completed; an expired one is spent.
    fn session_to_complete(&self, uri: &str) -> Result<Session, IdentityServiceError> {
        if !uri.starts_with(SESSION_URI_PREFIX) || uri.len() > airlock_identity::session_uri::MAX_LEN {
            return Err(IdentityServiceError::validation(format!(
                "sessionUri must start with {SESSION_URI_PREFIX}"
            )));
        }
        let Some(session) = self.store.session(uri).map_err(internal)? else {
            return Err(IdentityServiceError::invalid_session());
        };
        if matches!(session.status, Status::Completed | Status::Failed) {
            // Declined, used or spent: AgentCore says no more than this.
            tracing::info!(target: "airlock::identity", reason = ?session.reason, "completion of an ended session refused");
            return Err(IdentityServiceError::invalid_session());
        }
        if session.expires_at < self.now() {
            self.fail_session(&session, session.status, "expired before it was completed")?;
            return Err(IdentityServiceError::invalid_session());
        }
        Ok(session)
    }

    /// Who is completing: a user id as given, or the user a JWT from one of
    /// the session's workload's issuers names.
    async fn completing_user(
        &self,
        who: &UserIdentifierInput,
        session: &Session,
    ) -> Result<UserId, IdentityServiceError> {
        match (&who.user_id, &who.user_token) {
            (Some(id), None) => UserId::parse(id).map_err(|e| {
                IdentityServiceError::validation(format!("userIdentifier.userId: {e}"))
            }),
            (None, Some(token)) => Ok(self
                .workload(&session.workload)?
                .jwt
                .verify(token)
                .await
                .map_err(|e| IdentityServiceError::unauthorized(e.to_string()))?
                .id()
                .clone()),
            _ => Err(IdentityServiceError::validation(
                "userIdentifier must hold exactly one of userId and userToken",
            )),
        }
    }

    /// The session is exchanging (this call won it): exchange the code once,
    /// and store the token as the session completes.
    async fn exchange_and_store(
        &self,
        session: &Session,
        user: &UserId,
    ) -> Result<(), IdentityServiceError> {
        let (Some(code), Some(verifier)) = (&session.code, &session.verifier) else {
            self.fail_session(
                session,
                Status::Exchanging,
                "the session holds no authorization code",
            )?;
            return Err(IdentityServiceError::invalid_session());
        };
        let provider = self.provider(&session.provider)?;
        let tokens = match provider.exchange_code(&self.http, code, verifier).await {
            Ok(t) => t,
            Err(f) => {
                self.fail_session(
                    session,
                    Status::Exchanging,
                    &format!("the provider refused the code: {}", f.error),
                )?;
                return Err(IdentityServiceError::denied(format!(
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
            .complete(session, user, &entry, self.now())
            .map_err(internal)?
        {
            return Err(IdentityServiceError::invalid_session());
        }
        tracing::info!(target: "airlock::identity", provider = %session.provider, "session bound; token stored");
        Ok(())
    }

    /// End a session in status `from` without a token, for `reason`.
    fn fail_session(
        &self,
        session: &Session,
        from: Status,
        reason: &str,
    ) -> Result<(), IdentityServiceError> {
        self.store
            .transition(session, from, Event::Failed(reason))
            .map_err(internal)?;
        Ok(())
    }
}

/// The binding URL: the session's return URL with `session_id`, and the
/// caller's `customState` as `state` for the binding service's own CSRF check.
fn binding_url(session: &Session) -> Result<String, CallbackError> {
    let Ok(mut target) = url::Url::parse(&session.return_url) else {
        tracing::error!(target: "airlock::identity", "a session's return URL does not parse");
        return Err(CallbackError::Internal);
    };
    {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("session_id", &session.uri);
        if let Some(state) = &session.custom_state {
            pairs.append_pair("state", state);
        }
    }
    Ok(target.into())
}
