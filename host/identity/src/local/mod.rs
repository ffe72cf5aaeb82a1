//! A local identity service that answers AgentCore Identity's data-plane
//! calls, so that the host, its tests and `host run` use the real SDK code
//! path. It verifies SigV4, holds workload identities, OAuth2 and API key
//! providers from a config file, and a token vault in SQLite with tokens
//! sealed by AES-256-GCM. For user federation it runs the authorization code
//! flow with PKCE and `state`, and stores a token only when
//! `CompleteResourceTokenAuth` arrives for the user who started the flow.

mod api;
mod config;
mod oauth;
mod sigv4;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{
    ApiKeyProviderConfig, CallerConfig, ConfigError, JwtIssuerConfig, LocalConfig, ProviderConfig,
    TokenAuth, Vendor, WorkloadConfig,
};

use crate::secret::Secret;

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
        addr: SocketAddr,
        /// The OS's message.
        message: String,
    },
}

/// The environment variable that may hold the vault key (64 hex digits).
pub const VAULT_KEY_ENV: &str = "AIRLOCK_VAULT_KEY";

/// A running local identity service.
pub struct LocalIdentity {
    addr: SocketAddr,
    service: Arc<api::Service>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalIdentity {
    /// Open the vault and start serving on `config.listen`.
    pub async fn start(config: LocalConfig) -> Result<LocalIdentity, StartError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let key = load_key(&config)?;
        let store = store::Store::open(&config.data_dir.join("vault.db"), &key).map_err(|e| {
            StartError::Storage(format!(
                "{} ({})",
                e,
                config.data_dir.join("vault.db").display()
            ))
        })?;
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
        let service = Arc::new(api::Service::new(config, public_url, store, &key));
        let app = api::router(service.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(target: "airlock::identity", "local identity service stopped: {e}");
            }
        });
        tracing::info!(target: "airlock::identity", %addr, "local identity service listening");
        Ok(LocalIdentity {
            addr,
            service,
            shutdown: Some(tx),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

fn parse_key(text: &str, from: &str) -> Result<[u8; 32], StartError> {
    let bytes =
        hex::decode(text.trim()).map_err(|_| StartError::Key(format!("{from} is not hex")))?;
    bytes
        .try_into()
        .map_err(|_| StartError::Key(format!("{from} must be 64 hex digits (32 bytes)")))
}

fn load_key(config: &LocalConfig) -> Result<[u8; 32], StartError> {
    if let Ok(text) = std::env::var(VAULT_KEY_ENV) {
        return parse_key(&text, VAULT_KEY_ENV);
    }
    let (path, may_create): (PathBuf, bool) = match &config.vault_key_file {
        Some(p) => (p.clone(), false),
        None => (config.data_dir.join("vault.key"), true),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_key(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => create_key(&path),
        Err(e) => Err(StartError::Key(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn create_key(path: &Path) -> Result<[u8; 32], StartError> {
    use std::io::Write;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| StartError::Key(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| StartError::Key(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(hex::encode(key).as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| StartError::Key(format!("cannot write {}: {e}", path.display())))?;
    Ok(key)
}

pub(crate) type ApiKeys = HashMap<String, Secret>;
