//! The token broker: what the outbound hook asks for a user's bearer token
//! for one tool and one grant. Each tool acts as its own workload identity
//! (named from the tool, or from the consent group the operator put it in),
//! so a user's consent to one tool is never used by another that declares
//! the same grant. It caches workload access tokens per (workload, user) and
//! resource tokens per (workload, user, provider, scopes), so repeated calls
//! stay off the network.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use airlock_credential::{
    Consent, Credential, CredentialError, EnrollFuture, TokenFuture, TokenSource,
};
use airlock_policy::{OAuthGrant, ProviderName, Scopes, UserId};
use airlock_verify::{Proof, VerifiedUser};
use http::HeaderValue;

use crate::client::{Flow, IdentityClient, IdentityError, TokenAnswer};
use crate::clock::{Clock, SystemClock};
use airlock_verify::Secret;

/// How the broker talks to the identity service.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This host's workload identity: the prefix of its tools' identities.
    pub workload: String,
    /// Tools that share consent, explicitly: tool name -> group name. A
    /// tool in no group has an identity of its own.
    pub consent_groups: BTreeMap<String, String>,
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
            consent_groups: BTreeMap::new(),
            return_url,
            token_ttl: Duration::from_secs(300),
            workload_token_ttl: Duration::from_secs(600),
        }
    }

    /// The workload identity `tool` acts as: `WORKLOAD.TOOL`, or
    /// `WORKLOAD.group.GROUP` for a tool in a consent group (tool names have
    /// no dot, so neither can be taken for the other).
    pub fn workload_for(&self, tool: &str) -> String {
        match self.consent_groups.get(tool) {
            Some(group) => format!("{}.group.{group}", self.workload),
            None => format!("{}.{tool}", self.workload),
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
    /// The vault's token is empty, or cannot be sent in a header.
    #[error("the token for provider `{provider}` is empty or not a valid header value")]
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
    workload: String,
    provider: ProviderName,
    scopes: Scopes,
    value: HeaderValue,
    fetched: SystemTime,
}

impl CachedGrant {
    fn is_for(&self, workload: &str, grant: &OAuthGrant) -> bool {
        self.workload == workload && self.provider == grant.provider && self.scopes == grant.scopes
    }
}

/// One cached workload access token of a user.
struct CachedWorkloadToken {
    workload: String,
    token: Secret,
    fetched: SystemTime,
}

/// See the module docs.
pub struct Broker {
    client: IdentityClient,
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    /// Per user, their few grants: typed keys, no joined strings.
    tokens: RwLock<HashMap<UserId, Vec<CachedGrant>>>,
    workload_tokens: Mutex<HashMap<UserId, Vec<CachedWorkloadToken>>>,
    /// Workload identities known to exist with this host's return URL.
    enrolled: RwLock<HashSet<String>>,
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
            enrolled: RwLock::new(HashSet::new()),
        }
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Make sure `tool`'s workload identity exists, allowing this host's
    /// return URL; returns its name. Asked once per workload and process.
    pub async fn enroll(&self, tool: &str) -> Result<String, IdentityError> {
        let workload = self.config.workload_for(tool);
        self.enrolled_workload(workload).await
    }

    /// The workload a call acts as, enrolled. Under AgentCore Runtime the
    /// runtime's own workload token is used as it is: nothing to enroll.
    async fn workload_of(
        &self,
        workload: String,
        user: &VerifiedUser,
    ) -> Result<String, IdentityError> {
        if matches!(user.proof(), Proof::Runtime(_)) {
            return Ok(workload);
        }
        self.enrolled_workload(workload).await
    }

    async fn enrolled_workload(&self, workload: String) -> Result<String, IdentityError> {
        let known = self
            .enrolled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&workload);
        if !known {
            let urls: Vec<String> = self.config.return_url.iter().cloned().collect();
            if self.client.ensure_workload(&workload, &urls).await? {
                tracing::info!(target: "airlock::identity", %workload, "workload identity enrolled");
            }
            self.enrolled
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(workload.clone());
        }
        Ok(workload)
    }

    /// A cached token, without any I/O. A user AgentCore Runtime vouched for
    /// has no cache: their id was not verified here, so it may not pick tokens.
    pub fn cached(
        &self,
        tool: &str,
        user: &VerifiedUser,
        grant: &OAuthGrant,
    ) -> Option<HeaderValue> {
        self.cached_for(&self.config.workload_for(tool), user, grant)
    }

    fn cached_for(
        &self,
        workload: &str,
        user: &VerifiedUser,
        grant: &OAuthGrant,
    ) -> Option<HeaderValue> {
        if matches!(user.proof(), Proof::Runtime(_)) {
            return None;
        }
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let hit = tokens
            .get(user.id())?
            .iter()
            .find(|c| c.is_for(workload, grant))?;
        (self.clock.since(hit.fetched) < self.config.token_ttl).then(|| hit.value.clone())
    }

    /// The bearer token for `tool` acting for `user` with exactly the
    /// grant's scopes, or the consent the user must give that tool first.
    pub async fn bearer(
        &self,
        tool: &str,
        user: &VerifiedUser,
        grant: &OAuthGrant,
    ) -> Result<Credential, BrokerError> {
        let workload = self.config.workload_for(tool);
        if let Some(value) = self.cached_for(&workload, user, grant) {
            return Ok(Credential::Bearer(value));
        }
        let workload = self.workload_of(workload, user).await?;
        self.ask(tool, &workload, user, grant, None, false).await
    }

    /// Ask about a pending consent session: the token once the user has
    /// consented and the session is bound.
    pub async fn poll(
        &self,
        tool: &str,
        user: &VerifiedUser,
        grant: &OAuthGrant,
        session_uri: &str,
    ) -> Result<Credential, BrokerError> {
        let workload = self
            .workload_of(self.config.workload_for(tool), user)
            .await?;
        self.ask(tool, &workload, user, grant, Some(session_uri), false)
            .await
    }

    /// The upstream refused `rejected`: drop it and ask the vault again. A
    /// vault that hands back the same value (a revoked token that never
    /// expires) is asked to authenticate the user again, which ends in consent.
    pub async fn rejected(
        &self,
        tool: &str,
        user: &VerifiedUser,
        grant: &OAuthGrant,
        rejected: &HeaderValue,
    ) -> Result<Credential, BrokerError> {
        let workload = self
            .workload_of(self.config.workload_for(tool), user)
            .await?;
        let w = workload.as_str();
        self.forget_for(w, user, grant);
        match self.ask(tool, w, user, grant, None, false).await? {
            Credential::Bearer(value) if value == *rejected => {
                self.forget_for(w, user, grant);
                match self.ask(tool, w, user, grant, None, true).await? {
                    Credential::Bearer(value) if value == *rejected => {
                        self.forget_for(w, user, grant);
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
    pub fn forget(&self, tool: &str, user: &VerifiedUser, grant: &OAuthGrant) {
        self.forget_for(&self.config.workload_for(tool), user, grant);
    }

    fn forget_for(&self, workload: &str, user: &VerifiedUser, grant: &OAuthGrant) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if let Some(grants) = tokens.get_mut(user.id()) {
            grants.retain(|c| !c.is_for(workload, grant));
        }
    }

    async fn ask(
        &self,
        tool: &str,
        workload: &str,
        user: &VerifiedUser,
        grant: &OAuthGrant,
        session_uri: Option<&str>,
        force_authentication: bool,
    ) -> Result<Credential, BrokerError> {
        let scopes: Vec<&str> = grant.scopes.iter().collect();
        let provider = grant.provider.as_str();
        let flow = Flow::UserFederation {
            return_url: self.config.return_url.clone(),
            // Handed back to the return URL: the binding page names the tool.
            custom_state: Some(tool.to_string()),
            force_authentication,
            session_uri: session_uri.map(str::to_string),
        };
        let mut retried = false;
        let answer = loop {
            let workload_token = self.workload_token(workload, user).await?;
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
                    self.drop_workload_token(workload, user);
                }
                other => break other?,
            }
        };
        match answer {
            TokenAnswer::Token(token) => {
                // An empty token is no credential (and nothing to watch for in answers).
                if token.expose().trim().is_empty() {
                    return Err(BrokerError::MalformedToken {
                        provider: provider.to_string(),
                    });
                }
                let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| BrokerError::MalformedToken {
                        provider: provider.to_string(),
                    })?;
                value.set_sensitive(true);
                self.remember(workload, user, grant, value.clone());
                Ok(Credential::Bearer(value))
            }
            TokenAnswer::Consent {
                authorization_url,
                session_uri,
            } => Ok(Credential::Consent(Consent {
                tool: tool.to_string(),
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

    fn remember(
        &self,
        workload: &str,
        user: &VerifiedUser,
        grant: &OAuthGrant,
        value: HeaderValue,
    ) {
        if matches!(user.proof(), Proof::Runtime(_)) {
            return;
        }
        let entry = CachedGrant {
            workload: workload.to_string(),
            provider: grant.provider.clone(),
            scopes: grant.scopes.clone(),
            value,
            fetched: self.clock.now(),
        };
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if let Some(grants) = tokens.get_mut(user.id()) {
            grants.retain(|c| !c.is_for(workload, grant));
            grants.push(entry);
            return;
        }
        let (ttl, clock) = (self.config.token_ttl, &self.clock);
        bounded_insert(&mut tokens, user.id().clone(), vec![entry], |grants| {
            grants.iter().any(|c| clock.since(c.fetched) < ttl)
        });
    }

    async fn workload_token(
        &self,
        workload: &str,
        user: &VerifiedUser,
    ) -> Result<Secret, IdentityError> {
        if let Proof::Runtime(token) = user.proof() {
            return Ok(token.clone());
        }
        {
            let cache = self
                .workload_tokens
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = cache
                .get(user.id())
                .and_then(|ts| ts.iter().find(|t| t.workload == workload))
                && self.clock.since(hit.fetched) < self.config.workload_token_ttl
            {
                return Ok(hit.token.clone());
            }
        }
        // As the user was verified: by user id, or with their own token.
        let token = match user.proof() {
            Proof::SignedIn | Proof::Local => {
                self.client
                    .workload_token_for_user(workload, user.id().as_str())
                    .await?
            }
            Proof::Jwt(jwt) => self.client.workload_token_for_jwt(workload, jwt).await?,
            Proof::Runtime(token) => return Ok(token.clone()),
        };
        let entry = CachedWorkloadToken {
            workload: workload.to_string(),
            token: token.clone(),
            fetched: self.clock.now(),
        };
        let mut cache = self
            .workload_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(tokens) = cache.get_mut(user.id()) {
            tokens.retain(|t| t.workload != workload);
            tokens.push(entry);
            return Ok(token);
        }
        let (ttl, clock) = (self.config.workload_token_ttl, &self.clock);
        bounded_insert(&mut cache, user.id().clone(), vec![entry], |tokens| {
            tokens.iter().any(|t| clock.since(t.fetched) < ttl)
        });
        Ok(token)
    }

    fn drop_workload_token(&self, workload: &str, user: &VerifiedUser) {
        let mut cache = self
            .workload_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(tokens) = cache.get_mut(user.id()) {
            tokens.retain(|t| t.workload != workload);
        }
    }
}

impl TokenSource for Broker {
    fn bearer<'a>(
        &'a self,
        tool: &'a str,
        user: &'a VerifiedUser,
        grant: &'a OAuthGrant,
    ) -> TokenFuture<'a> {
        Box::pin(async move {
            Broker::bearer(self, tool, user, grant)
                .await
                .map_err(CredentialError::new)
        })
    }

    fn rejected<'a>(
        &'a self,
        tool: &'a str,
        user: &'a VerifiedUser,
        grant: &'a OAuthGrant,
        rejected: &'a HeaderValue,
    ) -> TokenFuture<'a> {
        Box::pin(async move {
            Broker::rejected(self, tool, user, grant, rejected)
                .await
                .map_err(CredentialError::new)
        })
    }

    fn enroll<'a>(&'a self, tool: &'a str) -> EnrollFuture<'a> {
        Box::pin(async move {
            Broker::enroll(self, tool)
                .await
                .map(drop)
                .map_err(CredentialError::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tool_has_its_own_workload_unless_grouped() {
        let mut config = BrokerConfig::new("agent", None);
        config
            .consent_groups
            .insert("mail-read".into(), "mail".into());
        config
            .consent_groups
            .insert("mail-send".into(), "mail".into());
        assert_eq!(config.workload_for("weather"), "agent.weather");
        assert_eq!(config.workload_for("mail-read"), "agent.group.mail");
        assert_eq!(config.workload_for("mail-send"), "agent.group.mail");
        // A tool named like the group is not in it.
        assert_eq!(config.workload_for("mail"), "agent.mail");
        assert_ne!(config.workload_for("group"), "agent.group.mail");
    }

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
