//! The service's state: callers, workloads, providers, the vault, the clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use airlock_identity::{Clock, Secret};
use airlock_verify::JwtVerifier;

use crate::config::{LocalConfig, valid_provider_name, valid_workload_name};
use crate::error::IdentityServiceError;
use crate::oauth::Provider;
use crate::store::Store;

/// A SigV4 caller and the operations it may call.
pub(crate) struct Caller {
    pub(crate) secret: String,
    pub(crate) operations: BTreeSet<String>,
}

pub(crate) struct Workload {
    pub(crate) allowed_return_urls: Vec<String>,
    pub(crate) jwt: Arc<JwtVerifier>,
    /// Created through the control plane (stored), not from the file.
    pub(crate) created: Option<(i64, i64)>,
}

/// A refresh in progress, per (workload, user, provider).
pub(crate) type RefreshLocks =
    std::sync::Mutex<HashMap<(String, String, String), Arc<tokio::sync::Mutex<()>>>>;

pub(crate) struct Service {
    pub(crate) callers: HashMap<String, Caller>,
    pub(crate) workloads: RwLock<HashMap<String, Arc<Workload>>>,
    /// The JWT issuers of every created workload identity.
    pub(crate) created_jwt: Arc<JwtVerifier>,
    pub(crate) providers: HashMap<String, Provider>,
    pub(crate) api_keys: HashMap<String, Secret>,
    pub(crate) store: Store,
    pub(crate) public_url: String,
    pub(crate) token_key: [u8; 32],
    pub(crate) session_ttl: i64,
    pub(crate) workload_token_ttl: i64,
    pub(crate) refresh_margin: i64,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) refresh_locks: RefreshLocks,
}

/// Where a provider sends the browser back with the code.
fn callback_url(public_url: &str, provider: &str) -> String {
    format!("{public_url}/identities/oauth2/callback/{provider}")
}

impl Service {
    pub(crate) fn new(
        config: LocalConfig,
        public_url: String,
        store: Store,
        token_key: [u8; 32],
        clock: Arc<dyn Clock>,
    ) -> Service {
        let created_jwt = Arc::new(JwtVerifier::new(
            config.created_workloads.jwt_issuers.clone(),
        ));
        let mut workloads: HashMap<String, Arc<Workload>> = HashMap::new();
        match store.workloads() {
            Ok(rows) => {
                for row in rows {
                    workloads.insert(
                        row.name,
                        Arc::new(Workload {
                            allowed_return_urls: row.return_urls,
                            jwt: created_jwt.clone(),
                            created: Some((row.created_at, row.updated_at)),
                        }),
                    );
                }
            }
            Err(e) => {
                tracing::error!(target: "airlock::identity", "created workload identities not loaded: {e}")
            }
        }
        // The file's workloads win over stored ones of the same name.
        for w in &config.workloads {
            workloads.insert(
                w.name.clone(),
                Arc::new(Workload {
                    allowed_return_urls: w.allowed_return_urls.clone(),
                    jwt: Arc::new(JwtVerifier::new(w.jwt_issuers.clone())),
                    created: None,
                }),
            );
        }
        Service {
            callers: config
                .callers
                .iter()
                .map(|c| {
                    (
                        c.access_key_id.clone(),
                        Caller {
                            secret: c.secret_access_key.clone(),
                            operations: c.operations.clone().unwrap_or_default(),
                        },
                    )
                })
                .collect(),
            workloads: RwLock::new(workloads),
            created_jwt,
            providers: config
                .oauth2_providers
                .iter()
                .map(|p| {
                    let callback = callback_url(&public_url, &p.name);
                    (p.name.clone(), Provider::new(p.clone(), callback))
                })
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
            http: airlock_verify::http_client(),
            clock,
            refresh_locks: Default::default(),
        }
    }

    /// Unix seconds on the service's clock.
    pub(crate) fn now(&self) -> i64 {
        self.clock.unix()
    }

    pub(crate) fn stored_grants(&self, user: &str) -> u64 {
        self.store.count_tokens_for_user(user).unwrap_or(0)
    }

    pub(crate) fn workload(&self, name: &str) -> Result<Arc<Workload>, IdentityServiceError> {
        if !valid_workload_name(name) {
            return Err(IdentityServiceError::validation(
                "workloadName must be 3-255 of A-Z a-z 0-9 _ . -",
            ));
        }
        self.workloads
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| {
                IdentityServiceError::not_found(format!(
                    "workload identity `{name}` does not exist"
                ))
            })
    }

    pub(crate) fn has_workload(&self, name: &str) -> bool {
        self.workloads
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    pub(crate) fn provider(&self, name: &str) -> Result<&Provider, IdentityServiceError> {
        if !valid_provider_name(name) {
            return Err(IdentityServiceError::validation(
                "resourceCredentialProviderName must be 1-128 of A-Z a-z 0-9 _ -",
            ));
        }
        self.providers.get(name).ok_or_else(|| {
            IdentityServiceError::not_found(format!(
                "OAuth2 credential provider `{name}` does not exist"
            ))
        })
    }

    pub(crate) fn callback_url(&self, provider: &str) -> String {
        callback_url(&self.public_url, provider)
    }

    pub(crate) fn refresh_lock(
        &self,
        workload: &str,
        user: &str,
        provider: &str,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.refresh_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .entry((workload.to_string(), user.to_string(), provider.to_string()))
            .or_default()
            .clone()
    }
}
