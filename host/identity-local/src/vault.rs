//! Token requests: what the vault hands out, when it refreshes, when the
//! user must consent (which starts a session, see `session`), and M2M.

use airlock_identity::Secret;
use airlock_policy::UserId;

use crate::error::{IdentityServiceError, internal};
use crate::model::{OAuth2TokenInput, TokenAnswer};
use crate::oauth::Provider;
use crate::scopes::{covers, granted};
use crate::service::Service;
use crate::session::Poll;
use crate::store::{Principal, VaultEntry};
use crate::workload::WorkloadClaims;

impl Service {
    /// GetResourceOauth2Token: a token for the workload (M2M) or its user
    /// (USER_FEDERATION), or the consent that must come first.
    pub(crate) async fn oauth2_token(
        &self,
        input: OAuth2TokenInput,
    ) -> Result<TokenAnswer, IdentityServiceError> {
        let claims = self.check_workload_token(&input.workload_identity_token)?;
        let provider = self.provider(&input.resource_credential_provider_name)?;
        let mut scopes: Vec<String> = input.scopes.clone();
        scopes.sort();
        scopes.dedup();
        if scopes
            .iter()
            .any(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(IdentityServiceError::validation(
                "scopes must be non-empty and contain no spaces or control characters",
            ));
        }
        match input.oauth2_flow.as_str() {
            "M2M" => self.m2m(&claims, provider, &scopes).await,
            "USER_FEDERATION" => {
                self.user_federation(&claims, provider, &scopes, &input)
                    .await
            }
            other => Err(IdentityServiceError::validation(format!(
                "oauth2Flow `{other}` is not supported here; use USER_FEDERATION or M2M"
            ))),
        }
    }

    /// Is `entry` usable without a refresh?
    fn fresh(&self, entry: &VaultEntry) -> bool {
        entry
            .expires_at
            .is_none_or(|t| t > self.now() + self.refresh_margin)
    }

    async fn m2m(
        &self,
        claims: &WorkloadClaims,
        provider: &Provider,
        scopes: &[String],
    ) -> Result<TokenAnswer, IdentityServiceError> {
        let name = &provider.config.name;
        let workload = Principal::Workload;
        if let Some(entry) = self
            .store
            .get_token(&claims.workload, workload, name)
            .map_err(internal)?
            && covers(&entry.scopes, scopes)
            && self.fresh(&entry)
        {
            return Ok(TokenAnswer::AccessToken(entry.access));
        }
        let tokens = provider
            .client_credentials(&self.http, scopes)
            .await
            .map_err(|f| {
                IdentityServiceError::denied(format!(
                    "provider `{name}` refused client credentials: {f}"
                ))
            })?;
        let entry = VaultEntry {
            scopes: granted(tokens.scope.as_deref(), scopes),
            access: tokens.access,
            refresh: None,
            expires_at: tokens.expires_in.map(|e| self.now() + e),
        };
        self.store
            .put_token(&claims.workload, workload, name, &entry, self.now())
            .map_err(internal)?;
        Ok(TokenAnswer::AccessToken(entry.access))
    }

    async fn user_federation(
        &self,
        claims: &WorkloadClaims,
        provider: &Provider,
        scopes: &[String],
        input: &OAuth2TokenInput,
    ) -> Result<TokenAnswer, IdentityServiceError> {
        let Some(user) = claims.user.as_ref() else {
            return Err(IdentityServiceError::validation(
                "USER_FEDERATION needs a workload access token issued for a user",
            ));
        };
        if scopes.is_empty() {
            return Err(IdentityServiceError::validation("scopes is required"));
        }
        let mut consult_vault = !input.force_authentication.unwrap_or(false);
        if let Some(uri) = &input.session_uri {
            match self.poll_session(uri, claims, user, &provider.config.name)? {
                Poll::Completed => consult_vault = true,
                Poll::Answer(status) => {
                    return Ok(TokenAnswer::SessionStatus {
                        session_uri: uri.clone(),
                        status,
                    });
                }
            }
        }
        if consult_vault
            && let Some(token) = self
                .stored_token(&claims.workload, user, provider, scopes)
                .await?
        {
            return Ok(TokenAnswer::AccessToken(token));
        }
        self.start_session(claims, user, provider, scopes, input)
            .await
    }

    /// A usable stored token covering `scopes`, refreshed when it is about to expire.
    async fn stored_token(
        &self,
        workload: &str,
        user: &UserId,
        provider: &Provider,
        scopes: &[String],
    ) -> Result<Option<Secret>, IdentityServiceError> {
        let name = &provider.config.name;
        let principal = Principal::User(user);
        let stored = || -> Result<Option<VaultEntry>, IdentityServiceError> {
            let entry = self
                .store
                .get_token(workload, principal, name)
                .map_err(internal)?;
            Ok(entry.filter(|e| covers(&e.scopes, scopes)))
        };
        match stored()? {
            None => return Ok(None),
            Some(entry) if self.fresh(&entry) => return Ok(Some(entry.access)),
            Some(_) => {}
        }
        // One refresh per grant at a time: refresh tokens may be single-use, and
        // a provider that sees one used twice may revoke the grant.
        let lock = self.refresh_lock(workload, user.as_str(), name);
        let _held = lock.lock().await;
        let Some(entry) = stored()? else {
            return Ok(None);
        };
        if self.fresh(&entry) {
            return Ok(Some(entry.access));
        }
        let Some(refresh) = entry.refresh else {
            return Ok(None);
        };
        match provider.refresh(&self.http, &refresh).await {
            Ok(tokens) => {
                let fresh = VaultEntry {
                    scopes: granted(tokens.scope.as_deref(), &entry.scopes),
                    access: tokens.access,
                    // Providers that rotate refresh tokens send a new one.
                    refresh: tokens.refresh.or(Some(refresh)),
                    expires_at: tokens.expires_in.map(|e| self.now() + e),
                };
                self.store
                    .put_token(workload, principal, name, &fresh, self.now())
                    .map_err(internal)?;
                tracing::info!(target: "airlock::identity", provider = %name, "token refreshed");
                Ok(Some(fresh.access))
            }
            Err(f) => {
                tracing::info!(target: "airlock::identity", provider = %name, error = %f.error, "refresh refused; consent needed again");
                self.store
                    .delete_token(workload, principal, name)
                    .map_err(internal)?;
                Ok(None)
            }
        }
    }
}
