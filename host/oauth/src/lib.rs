//! Airlock's authorization server façade, for MCP clients whose operator's
//! IdP cannot register them (Cognito and Entra have neither Client ID
//! Metadata Documents nor dynamic registration). It registers clients the
//! three ways MCP clients try (metadata documents, dynamic registration,
//! pre-registered ids), asks the person to allow the client, federates the
//! sign-in to the operator's OpenID provider, and issues short-lived access
//! tokens whose audience is the one resource it serves, with rotating
//! refresh tokens. Every sign-in and token is audited, never a token.
//!
//! It keeps almost no state: what it hands out and must read back is sealed
//! (AES-GCM), so replicas that share its secrets share its view; only
//! single-use marks (codes, refresh tokens, revoked families) are kept, in a
//! [`OnceStore`].

mod clients;
mod config;
mod idp;
mod keys;
mod once;
mod pages;
mod registration;
mod server;

use std::sync::Arc;

use airlock_audit::Audit;
use axum::Router;
use serde::Serialize;
use serde_json::{Value, json};

pub use clients::{Client, ClientError, Clients, DocumentClientError};
pub use config::{CimdConfig, IdpConfig, OAuthConfig, OAuthConfigError, PreRegistered};
pub use idp::IdpError;
pub use keys::{KeyError, Keys, Purpose};
pub use once::{FolderOnce, MemoryOnce, OnceError, OnceFuture, OnceStore};
pub use registration::{ClientAuth, Registration, RegistrationError, check_redirect_uris};

/// The scopes of Airlock's MCP endpoint: list the tools one may use, and
/// call them.
pub const SCOPES: [&str; 2] = ["tools:list", "tools:call"];

/// Why the façade cannot start. Names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
    /// The keys could not be made.
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// What the façade writes to the audit trail: never a token, code or secret.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Record {
    /// A person signed in at the IdP for a client.
    SignIn {
        user: String,
        client_id: String,
        scope: String,
    },
    /// The IdP's answer did not verify.
    SignInRefused { client_id: String, reason: String },
    /// An access token (and refresh token) issued.
    Token {
        user: String,
        client_id: String,
        grant: &'static str,
        scope: String,
        expires_in: u64,
    },
    /// A code or refresh token used again: refused, its family revoked.
    TokenRefused {
        user: String,
        client_id: String,
        grant: &'static str,
        reason: &'static str,
    },
    /// A client registered itself.
    Registered {
        client_name: Option<String>,
        redirect_uris: Vec<String>,
    },
}

/// The façade: its configuration, keys, clients, IdP and marks.
pub struct AuthorizationServer {
    config: OAuthConfig,
    issuer: String,
    resource: String,
    scopes: Vec<String>,
    keys: Keys,
    clients: Clients,
    idp: idp::Idp,
    once: Arc<dyn OnceStore>,
    /// With marks in memory, when they began (ms): what was issued before
    /// cannot be told used or not, so it is refused.
    remembers_since_ms: Option<u64>,
    audit: Audit,
}

impl AuthorizationServer {
    /// The façade of `config` for `resource` (the public MCP URL), its
    /// secrets read from the environment, its records into `audit`.
    pub fn new(
        config: OAuthConfig,
        resource: &str,
        audit: Audit,
    ) -> Result<AuthorizationServer, StartError> {
        config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let file = |what: &str, path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map_err(|e| StartError::Config(format!("oauth.{what} {}: {e}", path.display())))
        };
        let secrets: Vec<String> = match &config.secrets_file {
            Some(path) => file("secrets_file", path)?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            None => env(&config.secrets_env)
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default(),
        };
        if secrets.is_empty() {
            return Err(StartError::Config(format!(
                "oauth: no signing secret: set {} (or oauth.secrets_file) to the output of `openssl rand -base64 32`; several, comma separated, rotate",
                config.secrets_env
            )));
        }
        let keys = Keys::from_secrets(&secrets)?;
        let idp_secret = match (
            &config.idp.client_secret_file,
            &config.idp.client_secret_env,
        ) {
            (Some(path), _) => Some(file("idp.client_secret_file", path)?.trim().to_string()),
            (None, Some(name)) => Some(env(name).ok_or_else(|| {
                StartError::Config(format!("oauth.idp.client_secret_env: {name} is not set"))
            })?),
            (None, None) => None,
        };
        let issuer = config.issuer();
        let issuer_url = url::Url::parse(&issuer).map_err(|e| StartError::Config(e.to_string()))?;
        if issuer_url.path() != "/" {
            return Err(StartError::Config(format!(
                "oauth.issuer `{issuer}`: give the server's base URL, without a path"
            )));
        }
        let idp = idp::Idp::new(
            config.idp.clone(),
            idp_secret,
            format!("{issuer}/oauth/callback"),
        );
        let clients = Clients::new(
            config.clients.clone(),
            config.dynamic_registration,
            &config.cimd,
        )
        .map_err(|e| StartError::Config(e.to_string()))?;
        let (once, remembers_since_ms): (Arc<dyn OnceStore>, _) = match &config.once_dir {
            Some(dir) => (
                Arc::new(FolderOnce::open(dir).map_err(|e| StartError::Config(e.to_string()))?),
                None,
            ),
            None => (Arc::new(MemoryOnce::default()), Some(server::now_ms())),
        };
        Ok(AuthorizationServer {
            issuer,
            resource: resource.to_string(),
            scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
            keys,
            clients,
            idp,
            once,
            remembers_since_ms,
            audit,
            config,
        })
    }

    /// What its users' ids start with, if anything.
    pub fn user_prefix(&self) -> Option<&str> {
        self.config.idp.user_prefix.as_deref()
    }

    /// Its issuer identifier (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Its public keys, for verifying the access tokens it issues.
    pub fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        self.keys.jwks()
    }

    /// Its metadata (RFC 8414).
    pub fn metadata(&self) -> Value {
        let at = |path: &str| format!("{}{path}", self.issuer);
        let mut m = json!({
            "issuer": self.issuer,
            "authorization_endpoint": at("/oauth/authorize"),
            "token_endpoint": at("/oauth/token"),
            "jwks_uri": at("/oauth/jwks"),
            "scopes_supported": self.scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": self.clients.documents(),
        });
        if self.clients.dynamic() {
            m["registration_endpoint"] = json!(at("/oauth/register"));
        }
        m
    }

    /// Its endpoints: `/.well-known/oauth-authorization-server` and `/oauth/*`.
    pub fn router(self: Arc<Self>) -> Router {
        server::router(self)
    }
}
