//! Token requests: what the vault hands out, when it refreshes, when the
//! user must consent (which starts a session, see `session`), and M2M.

use airlock_identity::Secret;
use airlock_policy::UserId;
use axum::response::Response;
use serde_json::json;

use crate::api::{ApiError, OAuth2TokenInput, internal, ok};
use crate::oauth::Provider;
use crate::service::Service;
use crate::session::Poll;
use crate::store::{Principal, VaultEntry};
use crate::workload::WorkloadClaims;

impl Service {
    pub(crate) async fn oauth2_token(&self, input: OAuth2TokenInput) -> Result<Response, ApiError> {
        let claims = self.check_workload_token(&input.workload_identity_token)?;
        let provider = self.provider(&input.resource_credential_provider_name)?;
        let mut scopes: Vec<String> = input.scopes.clone();
        scopes.sort();
        scopes.dedup();
        if scopes
            .iter()
            .any(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(ApiError::validation(
                "scopes must be non-empty and contain no spaces or control characters",
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
    ) -> Result<Response, ApiError> {
        let name = &provider.config.name;
        let workload = Principal::Workload;
        if let Some(entry) = self
            .store
            .get_token(&claims.workload, workload, name)
            .map_err(internal)?
            && covers(&entry.scopes, scopes)
            && self.fresh(&entry)
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
            expires_at: tokens.expires_in.map(|e| self.now() + e),
        };
        self.store
            .put_token(&claims.workload, workload, name, &entry, self.now())
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
        let Some(user) = claims.user.as_ref() else {
            return Err(ApiError::validation(
                "USER_FEDERATION needs a workload access token issued for a user",
            ));
        };
        if scopes.is_empty() {
            return Err(ApiError::validation("scopes is required"));
        }
        let mut consult_vault = !input.force_authentication.unwrap_or(false);
        if let Some(uri) = &input.session_uri {
            match self.poll_session(uri, claims, user, &provider.config.name)? {
                Poll::Completed => consult_vault = true,
                Poll::Answer(status) => {
                    return Ok(ok(json!({ "sessionUri": uri, "sessionStatus": status })));
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
    ) -> Result<Option<Secret>, ApiError> {
        let name = &provider.config.name;
        let principal = Principal::User(user);
        let stored = || -> Result<Option<VaultEntry>, ApiError> {
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

fn covers(have: &[String], want: &[String]) -> bool {
    want.iter().all(|w| have.contains(w))
}

/// What a stored grant covers: the scopes asked for at consent and those the
/// provider says it granted. Providers separate scopes with spaces (RFC 6749)
/// or commas (GitHub), and some answer with expanded names (Google's `email`
/// as `.../auth/userinfo.email`); keeping the asked names means the same
/// request is covered next time instead of starting a new consent. A grant
/// the user narrowed at the provider shows up as the upstream's 403, never as
/// a token with more power than the provider gave.
pub(crate) fn granted(said: Option<&str>, asked: &[String]) -> Vec<String> {
    let mut all: Vec<String> = asked.to_vec();
    if let Some(said) = said {
        all.extend(
            said.split([' ', ','])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn granted_scopes_accept_commas_spaces_and_expanded_names() {
        // GitHub: comma-separated.
        let g = granted(Some("repo,read:user"), &v(&["read:user", "repo"]));
        assert!(covers(&g, &v(&["read:user", "repo"])), "{g:?}");
        assert_eq!(g, v(&["read:user", "repo"]));
        // RFC 6749: space-separated, and "repo, user" with both.
        assert!(covers(
            &granted(Some("a b"), &v(&["a", "b"])),
            &v(&["a", "b"])
        ));
        assert!(covers(&granted(Some("a, b"), &v(&["a"])), &v(&["b"])));
        // Google: `email` answered as its URL; the asked name still covers.
        let g = granted(
            Some("openid https://www.googleapis.com/auth/userinfo.email"),
            &v(&["email", "openid"]),
        );
        assert!(covers(&g, &v(&["email", "openid"])), "{g:?}");
        // Silent providers: what was asked.
        assert_eq!(granted(None, &v(&["repo"])), v(&["repo"]));
    }
}
