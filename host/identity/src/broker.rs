//! The token broker: what the outbound hook asks for a user's bearer token
//! for one grant. It caches workload access tokens per user and resource
//! tokens per (user, provider, scopes), so repeated calls stay off the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use airlock_credential::{Consent, Credential, CredentialError, TokenFuture, TokenSource};
use airlock_policy::{OAuthGrant, ProviderName, Scopes, UserId};
use airlock_verify::{Proof, VerifiedUser};
use http::HeaderValue;

use crate::client::{Flow, IdentityClient, IdentityError, TokenAnswer};
use crate::clock::{Clock, SystemClock};
use airlock_verify::Secret;

/// How the broker talks to the identity service.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This host's workload identity.
    pub workload: String,
    /// The session binding URL consent sends browsers to.
    pub return_url: Option<String>,
    /// How long a resource token is reused before asking the vault again.
    pub token_ttl: Duration,
    /// How long a workload access token is reused.
    pub workload_token_ttl: Duration,
}

impl BrokerConfig {
    /// Defaults: tokens reused for 5 minutes, workload tokens for 10.
    pub fn new(workload: impl Into<String>, return_url: Option<String>) -> BrokerConfig {
        BrokerConfig {
            workload: workload.into(),
            return_url,
            token_ttl: Duration::from_secs(300),
            workload_token_ttl: Duration::from_secs(600),
        }
    }
}

/// Why there is no credential.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The identity service refused or failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The consent session failed: denied, expired, or bound by another user.
    #[error(
        "the authorization for provider `{provider}` failed (denied, expired, or completed by another user); start again"
    )]
    SessionFailed {
        /// The provider.
        provider: String,
    },
    /// The consent session is still waiting for the user.
    #[error("the authorization for provider `{provider}` is still waiting for the user")]
    SessionPending {
        /// The provider.
        provider: String,
    },
    /// The vault's token cannot be sent in a header.
    #[error("the token for provider `{provider}` is not a valid header value")]
    MalformedToken {
        /// The provider.
        provider: String,
    },
    /// Even when asked to authenticate again, the identity service handed
    /// back the token the upstream had just refused.
    #[error(
        "the identity service keeps handing out a token provider `{provider}`'s API refused; revoke the grant there and consent again"
    )]
    StaleToken {
        /// The provider.
        provider: String,
    },
}

/// One cached token of a user.
struct CachedGrant {
    provider: ProviderName,
    scopes: Scopes,
    value: HeaderValue,
    fetched: SystemTime,
}

impl CachedGrant {
    fn is_for(&self, grant: &OAuthGrant) -> bool {
        self.provider == grant.provider && self.scopes == grant.scopes
    }
}

/// See the module docs.
pub struct Broker {
    client: IdentityClient,
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    /// Per user, their few grants: typed keys, no joined strings.
    tokens: RwLock<HashMap<UserId, Vec<CachedGrant>>>,
    workload_tokens: Mutex<HashMap<UserId, (Secret, SystemTime)>>,
}

/// Users a cache holds before it drops the stale entries (and, if that is
/// not enough, all): many users must not grow memory without bound.
const MAX_CACHED: usize = 10_000;

fn bounded_insert<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    live: impl Fn(&V) -> bool,
) {
    if map.len() >= MAX_CACHED && !map.contains_key(&key) {
        map.retain(|_, v| live(v));
        if map.len() >= MAX_CACHED {
            map.clear();
        }
    }
    map.insert(key, value);
}

impl Broker {
    /// A broker over `client`, on the system clock.
    pub fn new(client: IdentityClient, config: BrokerConfig) -> Broker {
        Broker::with_clock(client, config, Arc::new(SystemClock))
    }

    /// A broker whose cache lifetimes follow `clock`.
    pub fn with_clock(
        client: IdentityClient,
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
    ) -> Broker {
        Broker {
            client,
            config,
            clock,
            tokens: RwLock::new(HashMap::new()),
            workload_tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A cached token, without any I/O. A user AgentCore Runtime vouched for
    /// has no cache: their id was not verified here, so it may not pick tokens.
    pub fn cached(&self, user: &VerifiedUser, grant: &OAuthGrant) -> Option<HeaderValue> {
        if matches!(user.proof(), Proof::Runtime(_)) {
            return None;
        }
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let hit = tokens.get(user.id())?.iter().find(|c| c.is_for(grant))?;
        (self.clock.since(hit.fetched) < self.config.token_ttl).then(|| hit.value.clone())
    }

    /// The bearer token for `user` and exactly the grant's scopes, or the
    /// consent the user must give first.
    pub async fn bearer(
        &self,
        user: &VerifiedUser,
        grant: &OAuthGrant,
    ) -> Result<Credential, BrokerError> {
        if let Some(value) = self.cached(user, grant) {
            return Ok(Credential::Bearer(value));
        }
        self.ask(user, grant, None, false).await
    }

    /// Ask about a pending consent session: the token once the user has
    /// consented and the session is bound.
    pub async fn poll(
        &self,
        user: &VerifiedUser,
        grant: &OAuthGrant,
        session_uri: &str,
    ) -> Result<Credential, BrokerError> {
        self.ask(user, grant, Some(session_uri), false).await
    }

    /// The upstream refused `rejected`: drop it and ask the vault again. A
    /// vault that hands back the same value (a revoked token that never
    /// expires) is asked to authenticate the user again, which ends in consent.
    pub async fn rejected(
        &self,
        user: &VerifiedUser,
        grant: &OAuthGrant,
        rejected: &HeaderValue,
    ) -> Result<Credential, BrokerError> {
        self.forget(user, grant);
        match self.ask(user, grant, None, false).await? {
            Credential::Bearer(value) if value == *rejected => {
                self.forget(user, grant);
                match self.ask(user, grant, None, true).await? {
                    Credential::Bearer(value) if value == *rejected => {
                        self.forget(user, grant);
                        Err(BrokerError::StaleToken {
                            provider: grant.provider.to_string(),
                        })
                    }
                    other => Ok(other),
                }
            }
            other => Ok(other),
        }
    }

    /// Drop a cached token the upstream refused.
    pub fn forget(&self, user: &VerifiedUser, grant: &OAuthGrant) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if let Some(grants) = tokens.get_mut(user.id()) {
            grants.retain(|c| !c.is_for(grant));
        }
    }

    async fn ask(
        &self,
        user: &VerifiedUser,
        grant: &OAuthGrant,
        session_uri: Option<&str>,
        force_authentication: bool,
    ) -> Result<Credential, BrokerError> {
        let scopes: Vec<&str> = grant.scopes.iter().collect();
        let provider = grant.provider.as_str();
        let flow = Flow::UserFederation {
            return_url: self.config.return_url.clone(),
            custom_state: None,
            force_authentication,
            session_uri: session_uri.map(str::to_string),
        };
        let mut retried = false;
        let answer = loop {
            let workload_token = self.workload_token(user).await?;
            match self
                .client
                .oauth2_token(&workload_token, provider, &scopes, &flow)
                .await
            {
                // A workload token the service no longer accepts: get a new one, once.
                Err(IdentityError::Unauthorized { .. })
                    if !retried && !matches!(user.proof(), Proof::Runtime(_)) =>
                {
                    retried = true;
                    self.drop_workload_token(user);
                }
                other => break other?,
            }
        };
        match answer {
            TokenAnswer::Token(token) => {
                let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| BrokerError::MalformedToken {
                        provider: provider.to_string(),
                    })?;
                value.set_sensitive(true);
                self.remember(user, grant, value.clone());
                Ok(Credential::Bearer(value))
            }
            TokenAnswer::Consent {
                authorization_url,
                session_uri,
            } => Ok(Credential::Consent(Consent {
                provider: provider.to_string(),
                authorization_url,
                session_uri,
            })),
            TokenAnswer::InProgress { .. } => Err(BrokerError::SessionPending {
                provider: provider.to_string(),
            }),
            TokenAnswer::Failed { .. } => Err(BrokerError::SessionFailed {
                provider: provider.to_string(),
            }),
        }
    }

    fn remember(&self, user: &VerifiedUser, grant: &OAuthGrant, value: HeaderValue) {
        if matches!(user.proof(), Proof::Runtime(_)) {
            return;
        }
        let entry = CachedGrant {
            provider: grant.provider.clone(),
            scopes: grant.scopes.clone(),
            value,
            fetched: self.clock.now(),
        };
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if let Some(grants) = tokens.get_mut(user.id()) {
            grants.retain(|c| !c.is_for(grant));
            grants.push(entry);
            return;
        }
        let (ttl, clock) = (self.config.token_ttl, &self.clock);
        bounded_insert(&mut tokens, user.id().clone(), vec![entry], |grants| {
            grants.iter().any(|c| clock.since(c.fetched) < ttl)
        });
    }

    async fn workload_token(&self, user: &VerifiedUser) -> Result<Secret, IdentityError> {
        if let Proof::Runtime(token) = user.proof() {
            return Ok(token.clone());
        }
        {
            let cache = self
                .workload_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((token, at)) = cache.get(user.id())
                && self.clock.since(*at) < self.config.workload_token_ttl
            {
                return Ok(token.clone());
            }
        }
        // As the user was verified: by user id, or with their own token.
        let token = match user.proof() {
            Proof::SignedIn | Proof::Local => {
                self.client
                    .workload_token_for_user(&self.config.workload, user.id().as_str())
                    .await?
            }
            Proof::Jwt(jwt) => {
                self.client
                    .workload_token_for_jwt(&self.config.workload, jwt)
                    .await?
            }
            Proof::Runtime(token) => return Ok(token.clone()),
        };
        let mut cache = self
            .workload_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (ttl, clock) = (self.config.workload_token_ttl, &self.clock);
        bounded_insert(
            &mut cache,
            user.id().clone(),
            (token.clone(), clock.now()),
            |(_, at)| clock.since(*at) < ttl,
        );
        Ok(token)
    }

    fn drop_workload_token(&self, user: &VerifiedUser) {
        let mut cache = self
            .workload_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.remove(user.id());
    }
}

impl TokenSource for Broker {
    fn bearer<'a>(&'a self, user: &'a VerifiedUser, grant: &'a OAuthGrant) -> TokenFuture<'a> {
        Box::pin(async move {
            Broker::bearer(self, user, grant)
                .await
                .map_err(CredentialError::new)
        })
    }

    fn rejected<'a>(
        &'a self,
        user: &'a VerifiedUser,
        grant: &'a OAuthGrant,
        rejected: &'a HeaderValue,
    ) -> TokenFuture<'a> {
        Box::pin(async move {
            Broker::rejected(self, user, grant, rejected)
                .await
                .map_err(CredentialError::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_stay_bounded_dropping_stale_entries_first() {
        let mut map: HashMap<String, u32> = HashMap::new();
        for i in 0..MAX_CACHED as u32 {
            map.insert(format!("k{i}"), i);
        }
        // Odd values are stale: they go, the even ones stay.
        bounded_insert(&mut map, "new".into(), 0, |v| v % 2 == 0);
        assert_eq!(map.len(), MAX_CACHED / 2 + 1);
        assert!(map.contains_key("k0") && !map.contains_key("k1"));
        // All live and full: cleared, then the new entry.
        let mut full: HashMap<String, u32> = (0..MAX_CACHED as u32)
            .map(|i| (format!("k{i}"), i))
            .collect();
        bounded_insert(&mut full, "new".into(), 1, |_| true);
        assert_eq!(full.len(), 1);
        // Replacing an existing key never evicts.
        let mut same: HashMap<String, u32> = (0..MAX_CACHED as u32)
            .map(|i| (format!("k{i}"), i))
            .collect();
        bounded_insert(&mut same, "k5".into(), 9, |_| false);
        assert_eq!(same.len(), MAX_CACHED);
    }
}
