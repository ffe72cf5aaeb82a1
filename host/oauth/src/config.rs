//! The façade's settings (`[oauth]` in `host serve`'s file). Secrets never
//! come from the file itself: the signing secrets from `secrets_file` or the
//! variable `secrets_env`, the IdP client's secret likewise.

use std::path::PathBuf;

use serde::Deserialize;

use crate::registration::{RegistrationError, check_redirect_uris};

/// The authorization server façade.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// Its issuer: the public base URL MCP clients reach it at
    /// (`https://airlock.example.com`); `/oauth/authorize`, `/oauth/token` and the
    /// rest are under it.
    pub issuer: String,
    /// The operator's OpenID provider, where people sign in.
    pub idp: IdpConfig,
    /// The variable holding the secrets keys are derived from, comma
    /// separated, the signing one first (at least 32 random bytes each).
    #[serde(default = "default_secrets_env")]
    pub secrets_env: String,
    /// Or a file holding them, one per line (a mounted secret); it wins.
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// Dynamic client registration (RFC 7591): on unless switched off.
    #[serde(default = "yes")]
    pub dynamic_registration: bool,
    /// Client ID Metadata Documents.
    #[serde(default)]
    pub cimd: CimdConfig,
    /// Clients the operator registered beforehand.
    #[serde(default)]
    pub clients: Vec<PreRegistered>,
    /// How long an access token lives, in seconds.
    #[serde(default = "default_access_secs")]
    pub access_token_secs: u64,
    /// How long a sign-in lasts through refreshes, in hours; then the
    /// person signs in at the IdP again.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// A folder for single-use marks (codes, refresh tokens): one every
    /// replica mounts. Without it they are kept in memory (one replica).
    #[serde(default)]
    pub once_dir: Option<PathBuf>,
}

/// The operator's OpenID provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// Its OpenID discovery URL.
    pub discovery_url: String,
    /// The façade's client id there.
    pub client_id: String,
    /// The variable holding that client's secret (none: a public client).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Or a file holding it.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for.
    #[serde(default = "default_idp_scopes")]
    pub scopes: Vec<String>,
    /// Put before each `sub` to make the user id, where another issuer's
    /// users could have the same `sub`.
    #[serde(default)]
    pub user_prefix: Option<String>,
}

/// Client ID Metadata Documents: a client id that is the HTTPS URL of a
/// JSON document naming the client and its redirect URIs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CimdConfig {
    /// Accept them.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also fetch documents from loopback and private addresses. Only for
    /// tests and development: it lets a client id make the server fetch
    /// from inside the network.
    #[serde(default)]
    pub dangerously_allow_private_addresses: bool,
    /// More CA certificates (PEM files) to trust for the fetch.
    #[serde(default)]
    pub extra_root_certificates: Vec<PathBuf>,
}

impl Default for CimdConfig {
    fn default() -> Self {
        CimdConfig {
            enabled: true,
            dangerously_allow_private_addresses: false,
            extra_root_certificates: Vec::new(),
        }
    }
}

/// A client registered by the operator (VS Code asks its user for one
/// where a server offers no registration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreRegistered {
    /// Its client id.
    pub client_id: String,
    /// A name to show people.
    #[serde(default)]
    pub name: Option<String>,
    /// Its redirect URIs, exactly.
    pub redirect_uris: Vec<String>,
    /// The sha256 (hex) of its secret; none for a public client.
    #[serde(default)]
    pub client_secret_sha256: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_secrets_env() -> String {
    "AIRLOCK_OAUTH_SECRETS".into()
}

fn default_access_secs() -> u64 {
    600
}

fn default_session_hours() -> u64 {
    12
}

fn default_idp_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into()]
}

/// A fault in `[oauth]` found without the network; names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthConfigError {
    /// `issuer` is not a URL.
    #[error("oauth.issuer `{issuer}`: {error}")]
    IssuerSyntax {
        /// The issuer as given.
        issuer: String,
        /// Why it does not parse.
        error: url::ParseError,
    },
    /// `issuer` has a query or fragment.
    #[error("oauth.issuer `{0}`: an issuer has no query or fragment")]
    IssuerQueryOrFragment(String),
    /// `issuer` is neither HTTPS nor HTTP on loopback.
    #[error("oauth.issuer `{0}`: use https (http only on loopback, for development)")]
    IssuerInsecure(String),
    /// `access_token_secs` is out of range.
    #[error("oauth.access_token_secs: between 60 and 3600")]
    AccessTokenSecs,
    /// `session_hours` is out of range.
    #[error("oauth.session_hours: between 1 and 720")]
    SessionHours,
    /// A configured client's redirect URIs are not acceptable.
    #[error("oauth.clients `{client_id}`: {error}")]
    ClientRedirectUris {
        /// The client.
        client_id: String,
        /// What is wrong with them.
        error: RegistrationError,
    },
    /// A configured client id has a form kept for other kinds of client.
    #[error(
        "oauth.clients `{0}`: that form of client id is kept for metadata documents and dynamic clients"
    )]
    ReservedClientId(String),
    /// Every way for a client to be known is switched off.
    #[error(
        "oauth: no client can register: keep dynamic_registration or cimd.enabled on, or list [[oauth.clients]]"
    )]
    NoClients,
}

impl OAuthConfig {
    /// Check what can be checked without the network; the first fault, named.
    pub fn validate(&self) -> Result<(), OAuthConfigError> {
        let issuer =
            url::Url::parse(&self.issuer).map_err(|error| OAuthConfigError::IssuerSyntax {
                issuer: self.issuer.clone(),
                error,
            })?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(OAuthConfigError::IssuerQueryOrFragment(self.issuer.clone()));
        }
        let loopback = matches!(issuer.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
            return Err(OAuthConfigError::IssuerInsecure(self.issuer.clone()));
        }
        if !(60..=3600).contains(&self.access_token_secs) {
            return Err(OAuthConfigError::AccessTokenSecs);
        }
        if !(1..=24 * 30).contains(&self.session_hours) {
            return Err(OAuthConfigError::SessionHours);
        }
        for c in &self.clients {
            check_redirect_uris(&c.redirect_uris).map_err(|error| {
                OAuthConfigError::ClientRedirectUris {
                    client_id: c.client_id.clone(),
                    error,
                }
            })?;
            if c.client_id.starts_with("https://") || c.client_id.starts_with("dyn.") {
                return Err(OAuthConfigError::ReservedClientId(c.client_id.clone()));
            }
        }
        if !self.dynamic_registration && !self.cimd.enabled && self.clients.is_empty() {
            return Err(OAuthConfigError::NoClients);
        }
        Ok(())
    }

    /// The issuer without a trailing slash, as tokens and metadata name it.
    pub fn issuer(&self) -> String {
        self.issuer.trim_end_matches('/').to_string()
    }
}
