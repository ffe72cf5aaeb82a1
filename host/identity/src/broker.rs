//! The token broker: what the outbound hook asks for a user's bearer token
//! for one grant. It caches workload access tokens per user and resource
//! tokens per (user, provider, scopes), so repeated calls stay off the network.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use airlock_policy::OAuthGrant;
use http::HeaderValue;

use crate::client::{Flow, IdentityClient, IdentityError, TokenAnswer};
use crate::secret::Secret;

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

/// The user must consent before the tool's request can carry a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// The provider.
    pub provider: String,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// Where the user consents.
    pub authorization_url: String,
    /// The pending session (kept host-side: for polling, not for the agent).
    pub session_uri: String,
}

/// What the broker has for a request.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The value of the `authorization` header (marked sensitive).
    Bearer(HeaderValue),
    /// Consent first.
    Consent(Consent),
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
}

struct Cached {
    value: HeaderValue,
    fetched: Instant,
}

/// See the module docs.
pub struct Broker {
    client: IdentityClient,
    config: BrokerConfig,
    tokens: RwLock<HashMap<String, Cached>>,
    workload_tokens: Mutex<HashMap<String, (Secret, Instant)>>,
}

/// Entries a cache holds before it drops the stale ones (and, if that is not
/// enough, all): many users must not grow memory without bound.
const MAX_CACHED: usize = 10_000;

fn bounded_insert<V>(
    map: &mut HashMap<String, V>,
    key: String,
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

fn cache_key(user: &str, grant: &OAuthGrant) -> String {
    let mut key = String::with_capacity(user.len() + 64);
    key.push_str(user);
    key.push('\0');
    key.push_str(grant.provider.as_str());
    for s in grant.scopes.iter() {
        key.push('\0');
        key.push_str(s);
    }
    key
}

impl Broker {
    /// A broker over `client`.
    pub fn new(client: IdentityClient, config: BrokerConfig) -> Broker {
        Broker {
            client,
            config,
            tokens: RwLock::new(HashMap::new()),
            workload_tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A cached token, without any I/O.
    pub fn cached(&self, user: &str, grant: &OAuthGrant) -> Option<HeaderValue> {
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let hit = tokens.get(&cache_key(user, grant))?;
        (hit.fetched.elapsed() < self.config.token_ttl).then(|| hit.value.clone())
    }

    /// The bearer token for `user` and exactly the grant's scopes, or the
    /// consent the user must give first.
    pub async fn bearer(&self, user: &str, grant: &OAuthGrant) -> Result<Credential, BrokerError> {
        if let Some(value) = self.cached(user, grant) {
            return Ok(Credential::Bearer(value));
        }
        self.ask(user, grant, None).await
    }

    /// Ask about a pending consent session: the token once the user has
    /// consented and the session is bound.
    pub async fn poll(
        &self,
        user: &str,
        grant: &OAuthGrant,
        session_uri: &str,
    ) -> Result<Credential, BrokerError> {
        self.ask(user, grant, Some(session_uri)).await
    }

    /// Drop a cached token the upstream refused.
    pub fn forget(&self, user: &str, grant: &OAuthGrant) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        tokens.remove(&cache_key(user, grant));
    }

    async fn ask(
        &self,
        user: &str,
        grant: &OAuthGrant,
        session_uri: Option<&str>,
    ) -> Result<Credential, BrokerError> {
        let scopes: Vec<&str> = grant.scopes.iter().collect();
        let provider = grant.provider.as_str();
        let flow = Flow::UserFederation {
            return_url: self.config.return_url.clone(),
            custom_state: None,
            force_authentication: false,
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
                Err(IdentityError::Unauthorized { .. }) if !retried => {
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
                let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
                let ttl = self.config.token_ttl;
                bounded_insert(
                    &mut tokens,
                    cache_key(user, grant),
                    Cached {
                        value: value.clone(),
                        fetched: Instant::now(),
                    },
                    |c| c.fetched.elapsed() < ttl,
                );
                Ok(Credential::Bearer(value))
            }
            TokenAnswer::Consent {
                authorization_url,
                session_uri,
            } => Ok(Credential::Consent(Consent {
                provider: provider.to_string(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
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

    async fn workload_token(&self, user: &str) -> Result<Secret, IdentityError> {
        {
            let cache = self
                .workload_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((token, at)) = cache.get(user)
                && at.elapsed() < self.config.workload_token_ttl
            {
                return Ok(token.clone());
            }
        }
        let token = self
            .client
            .workload_token_for_user(&self.config.workload, user)
            .await?;
        let mut cache = self
            .workload_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ttl = self.config.workload_token_ttl;
        bounded_insert(
            &mut cache,
            user.to_string(),
            (token.clone(), Instant::now()),
            |(_, at)| at.elapsed() < ttl,
        );
        Ok(token)
    }

    fn drop_workload_token(&self, user: &str) {
        let mut cache = self
            .workload_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.remove(user);
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
