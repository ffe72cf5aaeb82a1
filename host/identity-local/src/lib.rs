//! A local identity service that answers AgentCore Identity's data-plane
//! calls, so that the host, its tests and `host run` use the real SDK code
//! path. For development and tests only: plain HTTP, one node, SQLite. In
//! production use Amazon Bedrock AgentCore Identity itself.
//!
//! It verifies SigV4, holds workload identities, OAuth2 and API key
//! providers from a config file, and a token vault in SQLite with tokens
//! sealed by AES-256-GCM. For user federation it runs the authorization code
//! flow with PKCE and `state`, and stores a token only when
//! `CompleteResourceTokenAuth` arrives for the user who started the flow.

mod api;
mod config;
mod control;
mod error;
mod keys;
mod model;
mod oauth;
mod quirks;
mod scopes;
mod service;
mod session;
mod sigv4;
mod state;
mod store;
mod vault;
mod workload;

use std::sync::Arc;

use airlock_identity::{Clock, SystemClock};

pub use config::{
    ApiKeyProviderConfig, CallerConfig, ConfigError, CreatedWorkloads, JwtIssuerConfig,
    LocalConfig, ProviderConfig, TokenAuth, Vendor, WorkloadConfig,
};
pub use keys::{PREVIOUS_VAULT_KEYS_ENV, VAULT_KEY_ENV};

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The vault key is missing or malformed.
    #[error("vault key: {0}")]
    Key(String),
    /// The data folder or database could not be opened.
    #[error("{0}")]
    Storage(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS's message.
        message: String,
    },
}

/// A running local identity service.
pub struct LocalIdentity {
    addr: std::net::SocketAddr,
    service: Arc<service::Service>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalIdentity {
    /// Open the vault and start serving on `config.listen`.
    pub async fn start(config: LocalConfig) -> Result<LocalIdentity, StartError> {
        LocalIdentity::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// The same, with token and session expiry on `clock` (tests move it forward).
    pub async fn start_with_clock(
        config: LocalConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<LocalIdentity, StartError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let keys = keys::load(
            &config.data_dir,
            config.vault_key_file.as_ref(),
            &config.previous_vault_key_files,
        )?;
        let path = config.data_dir.join("vault.db");
        let rotating = keys.has_previous();
        let derived = keys.derive(b"airlock workload access token v1");
        let store = store::Store::open(&path, keys)
            .map_err(|e| StartError::Storage(format!("{e} ({})", path.display())))?;
        if rotating {
            let moved = store
                .reseal()
                .map_err(|e| StartError::Storage(format!("{e} ({})", path.display())))?;
            tracing::info!(target: "airlock::identity", moved, "vault values sealed again under the current key");
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| StartError::Listen {
                addr: config.listen,
                message: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| StartError::Listen {
            addr: config.listen,
            message: e.to_string(),
        })?;
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
            .trim_end_matches('/')
            .to_string();
        let service = Arc::new(service::Service::new(
            config, public_url, store, derived, clock,
        ));
        let app = api::router(service.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(airlock_listen::serve(
            listener,
            app,
            airlock_listen::Limits::default(),
            async {
                let _ = rx.await;
            },
        ));
        tracing::info!(target: "airlock::identity", %addr, "local identity service listening");
        Ok(LocalIdentity {
            addr,
            service,
            shutdown: Some(tx),
            task,
        })
    }

    /// The endpoint URL for the SDK.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The redirect URI to register at a provider.
    pub fn callback_url(&self, provider: &str) -> String {
        self.service.callback_url(provider)
    }

    /// How many grants the vault holds for a user, across workloads and providers.
    pub fn stored_grants(&self, user: &str) -> u64 {
        self.service.stored_grants(user)
    }

    /// How many grants the vault holds for a workload itself (client credentials).
    pub fn stored_workload_grants(&self, workload: &str) -> u64 {
        self.service
            .store
            .count_workload_tokens(workload)
            .unwrap_or(0)
    }

    /// Stop serving and close the vault.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for LocalIdentity {
    fn drop(&mut self) {
        self.task.abort();
    }
}
