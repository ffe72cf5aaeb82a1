//! The local identity service's configuration file (TOML).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use airlock_identity::{Operation, Secret};

/// An identity provider trusted for user JWTs.
pub use airlock_verify::JwtIssuer as JwtIssuerConfig;

/// The whole file. Every table is checked by [`LocalConfig::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Address to listen on (default 127.0.0.1:8790; port 0 picks one).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Base URL browsers and providers reach the service at (default: from
    /// the bound address). Callback URLs are `{public_url}/identities/oauth2/callback/{provider}`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Folder of the vault database (and of the generated key, see `vault_key_file`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// File holding the 32-byte vault key as 64 hex digits. When neither it
    /// nor `AIRLOCK_VAULT_KEY` is set, `{data_dir}/vault.key` is used and
    /// created (mode 0600) on first start.
    #[serde(default)]
    pub vault_key_file: Option<PathBuf>,
    /// Earlier vault key files: values they sealed still open, and are sealed
    /// again under the current key at start. Rotate by making the old key
    /// file a previous one and setting a new `vault_key_file`; remove it
    /// after one start. (`AIRLOCK_VAULT_KEY_PREVIOUS` holds them as hex.)
    #[serde(default)]
    pub previous_vault_key_files: Vec<PathBuf>,
    /// How long a consent session may wait for the user, in seconds.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// Lifetime of workload access tokens, in seconds.
    #[serde(default = "default_workload_token_ttl")]
    pub workload_token_ttl_secs: u64,
    /// A stored token this close to expiry is refreshed before it is handed out.
    #[serde(default = "default_refresh_margin")]
    pub refresh_margin_secs: u64,
    /// SigV4 callers: who may call which operations.
    #[serde(default, rename = "caller")]
    pub callers: Vec<CallerConfig>,
    /// Workload identities.
    #[serde(default, rename = "workload")]
    pub workloads: Vec<WorkloadConfig>,
    /// What workload identities created through the control plane
    /// (`CreateWorkloadIdentity`, one per tool) accept.
    #[serde(default)]
    pub created_workloads: CreatedWorkloads,
    /// OAuth2 credential providers.
    #[serde(default, rename = "oauth2_provider")]
    pub oauth2_providers: Vec<ProviderConfig>,
    /// API key credential providers.
    #[serde(default, rename = "api_key_provider")]
    pub api_key_providers: Vec<ApiKeyProviderConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8790))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".airlock/identity")
}
fn default_session_ttl() -> u64 {
    600
}
fn default_workload_token_ttl() -> u64 {
    3600
}
fn default_refresh_margin() -> u64 {
    30
}

/// A SigV4 caller (an IAM principal, in AWS terms).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Operations this caller may call, by API name; required. The agent
    /// needs the token operations, the session binding service only
    /// `CompleteResourceTokenAuth`.
    #[serde(default)]
    pub operations: Option<BTreeSet<String>>,
}

impl std::fmt::Debug for CallerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerConfig")
            .field("access_key_id", &self.access_key_id)
            .field("operations", &self.operations)
            .finish_non_exhaustive()
    }
}

/// A workload identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Name, 3-255 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Return URLs (session binding URLs) a token request may name.
    #[serde(default)]
    pub allowed_return_urls: Vec<String>,
    /// Identity providers whose JWTs `GetWorkloadAccessTokenForJWT` and
    /// `CompleteResourceTokenAuth` accept for this workload.
    #[serde(default, rename = "jwt_issuer")]
    pub jwt_issuers: Vec<JwtIssuerConfig>,
}

/// Settings of workload identities created through the control plane.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedWorkloads {
    /// Identity providers whose JWTs `GetWorkloadAccessTokenForJWT` and
    /// `CompleteResourceTokenAuth` accept for them.
    #[serde(default, rename = "jwt_issuer")]
    pub jwt_issuers: Vec<JwtIssuerConfig>,
}

/// Presets for well-known providers' endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// Endpoints from `discovery_url` or given explicitly.
    #[default]
    Custom,
    /// GitHub OAuth apps.
    Github,
    /// Google.
    Google,
    /// Microsoft Entra ID (the `common` tenant unless endpoints are given).
    Microsoft,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// HTTP Basic.
    #[default]
    ClientSecretBasic,
    /// In the form body.
    ClientSecretPost,
    /// A public client: the client id in the form body, no secret (PKCE
    /// protects the code exchange).
    None,
}

/// An OAuth2 credential provider.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name, `[a-zA-Z0-9_-]`, at most 128; tools' grants name it.
    pub name: String,
    /// Endpoint preset.
    #[serde(default)]
    pub vendor: Vendor,
    /// Client id registered at the provider.
    pub client_id: String,
    /// Client secret.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// OpenID or RFC 8414 discovery URL.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Authorization endpoint (overrides discovery and preset).
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Token endpoint (overrides discovery and preset).
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// Token endpoint client authentication.
    #[serde(default)]
    pub token_auth: TokenAuth,
    /// Scopes added to every authorization request, e.g. `offline_access`
    /// for refresh tokens. They never reach the tool's token scope check.
    #[serde(default)]
    pub extra_scopes: Vec<String>,
    /// Extra query parameters of the authorization request, e.g. `prompt = "consent"`.
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("vendor", &self.vendor)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An API key credential provider.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyProviderConfig {
    /// Name.
    pub name: String,
    /// The key.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

impl std::fmt::Debug for ApiKeyProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyProviderConfig")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

pub use airlock_policy::ConfigError;

/// A mistake in this file.
fn config_error(message: impl Into<String>) -> ConfigError {
    ConfigError::new("identity service", message)
}

pub(crate) fn valid_workload_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub(crate) fn valid_provider_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

impl LocalConfig {
    /// Parse and validate a TOML file's text.
    pub fn from_toml(text: &str) -> Result<LocalConfig, ConfigError> {
        let config = LocalConfig::parse(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parse without validating, for callers that complete the config first
    /// (`host run` adds its own callers); [`LocalIdentity::start`](super::LocalIdentity::start) validates.
    pub fn parse(text: &str) -> Result<LocalConfig, ConfigError> {
        toml::from_str(text).map_err(|e| config_error(e.to_string()))
    }

    /// Check names, duplicates, URLs and that every secret is present.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.public_url {
            check_url("public_url", url)?;
        }
        self.validate_callers()?;
        self.validate_workloads()?;
        check_issuers("[created_workloads]", &self.created_workloads.jwt_issuers)?;
        // OAuth2 and API key providers share one namespace: a grant names either.
        let mut providers = BTreeSet::new();
        self.validate_oauth2_providers(&mut providers)?;
        self.validate_api_key_providers(&mut providers)
    }

    /// At least one caller; each unique, with a real secret and known operations.
    fn validate_callers(&self) -> Result<(), ConfigError> {
        if self.callers.is_empty() {
            return Err(config_error(
                "no [[caller]]: add one with access_key_id and secret_access_key",
            ));
        }
        let mut seen = BTreeSet::new();
        for c in &self.callers {
            if c.access_key_id.is_empty() || c.secret_access_key.len() < 16 {
                return Err(config_error(format!(
                    "[[caller]] `{}`: access_key_id must be set and secret_access_key at least 16 characters",
                    c.access_key_id
                )));
            }
            if !seen.insert(c.access_key_id.as_str()) {
                return Err(config_error(format!(
                    "[[caller]] `{}` appears twice",
                    c.access_key_id
                )));
            }
            c.validate_operations()?;
        }
        Ok(())
    }

    /// Each workload unique and well named, with checked return URLs and issuers.
    fn validate_workloads(&self) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for w in &self.workloads {
            if !valid_workload_name(&w.name) {
                return Err(config_error(format!(
                    "[[workload]] `{}`: names are 3-255 of A-Z a-z 0-9 _ . -",
                    w.name
                )));
            }
            if !seen.insert(w.name.as_str()) {
                return Err(config_error(format!(
                    "[[workload]] `{}` appears twice",
                    w.name
                )));
            }
            for url in &w.allowed_return_urls {
                check_url(
                    &format!("[[workload]] `{}` allowed_return_urls", w.name),
                    url,
                )?;
            }
            check_issuers(&format!("[[workload]] `{}`", w.name), &w.jwt_issuers)?;
        }
        Ok(())
    }

    /// `names` collects provider names, to be shared with API key providers.
    fn validate_oauth2_providers<'a>(
        &'a self,
        names: &mut BTreeSet<&'a str>,
    ) -> Result<(), ConfigError> {
        for p in &self.oauth2_providers {
            let at = format!("[[oauth2_provider]] `{}`", p.name);
            if !valid_provider_name(&p.name) {
                return Err(config_error(format!(
                    "{at}: names are 1-128 of A-Z a-z 0-9 _ -"
                )));
            }
            if !names.insert(p.name.as_str()) {
                return Err(config_error(format!(
                    "{at} appears twice (provider names are shared with API key providers)"
                )));
            }
            p.validate(&at)?;
        }
        Ok(())
    }

    /// `names` holds the OAuth2 providers' names: an API key provider may not reuse one.
    fn validate_api_key_providers<'a>(
        &'a self,
        names: &mut BTreeSet<&'a str>,
    ) -> Result<(), ConfigError> {
        for p in &self.api_key_providers {
            let at = format!("[[api_key_provider]] `{}`", p.name);
            if !valid_provider_name(&p.name) {
                return Err(config_error(format!(
                    "{at}: names are 1-128 of A-Z a-z 0-9 _ -"
                )));
            }
            if !names.insert(p.name.as_str()) {
                return Err(config_error(format!(
                    "{at} appears twice (provider names are shared with OAuth2 providers)"
                )));
            }
            p.api_key().map_err(|e| e.at(&at))?;
        }
        Ok(())
    }
}

impl CallerConfig {
    /// The operations must be listed, and each must be one the service has.
    fn validate_operations(&self) -> Result<(), ConfigError> {
        let Some(operations) = &self.operations else {
            return Err(config_error(format!(
                "[[caller]] `{}`: list the operations it may call, e.g. operations = [\"GetWorkloadAccessTokenForUserId\", \"GetResourceOauth2Token\"]; a session binding service gets only [\"CompleteResourceTokenAuth\"]",
                self.access_key_id
            )));
        };
        for op in operations {
            if !Operation::ALL.iter().any(|o| o.name() == op) {
                let known: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
                return Err(config_error(format!(
                    "[[caller]] `{}`: unknown operation `{op}`; known: {}",
                    self.access_key_id,
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }
}

impl ProviderConfig {
    /// Everything but the name: client id, secret (or its absence for a
    /// public client), URLs, and some way to find both endpoints. `at` names
    /// the provider in messages.
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.client_id.is_empty() {
            return Err(config_error(format!("{at}: client_id is empty")));
        }
        if self.token_auth == TokenAuth::None {
            if self.client_secret.is_some() || self.client_secret_env.is_some() {
                return Err(config_error(format!(
                    "{at}: token_auth = \"none\" is a public client; remove client_secret"
                )));
            }
        } else {
            self.client_secret().map_err(|e| e.at(at))?;
        }
        for (field, url) in [
            ("discovery_url", &self.discovery_url),
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
        ] {
            if let Some(url) = url {
                check_url(&format!("{at} {field}"), url)?;
            }
        }
        let explicit = self.authorization_endpoint.is_some() && self.token_endpoint.is_some();
        if self.vendor == Vendor::Custom && self.discovery_url.is_none() && !explicit {
            return Err(config_error(format!(
                "{at}: set discovery_url, or authorization_endpoint and token_endpoint, or a vendor preset"
            )));
        }
        Ok(())
    }

    /// The client secret, from the file or the environment variable it names.
    pub(crate) fn client_secret(&self) -> Result<Secret, ConfigError> {
        from_value_or_env(
            &self.client_secret,
            &self.client_secret_env,
            "client_secret",
        )
    }
}

impl ApiKeyProviderConfig {
    /// The key, from the file or the environment variable it names.
    pub(crate) fn api_key(&self) -> Result<Secret, ConfigError> {
        from_value_or_env(&self.api_key, &self.api_key_env, "api_key")
    }
}

fn check_issuers(at: &str, issuers: &[JwtIssuerConfig]) -> Result<(), ConfigError> {
    for j in issuers {
        check_url(&format!("{at} jwt_issuer"), &j.discovery_url)?;
        if j.audiences.is_empty() {
            return Err(config_error(format!(
                "{at} jwt_issuer {}: audiences is empty",
                j.discovery_url
            )));
        }
    }
    Ok(())
}

pub(crate) fn check_url(what: &str, url: &str) -> Result<(), ConfigError> {
    endpoint_url(url)
        .map(drop)
        .map_err(|reason| config_error(format!("{what}: `{url}` {reason}")))
}

/// An endpoint must be an absolute http(s) URL with a host, wherever it came
/// from: the file, a preset or discovery (`oauth` checks the latter two).
pub(crate) fn endpoint_url(value: &str) -> Result<url::Url, &'static str> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err("is not an absolute http(s) URL"),
    }
}

/// A secret given in the file or named by an environment variable; the
/// error names the field, never the value.
fn from_value_or_env(
    value: &Option<String>,
    env: &Option<String>,
    field: &str,
) -> Result<Secret, ConfigError> {
    match (value, env) {
        (Some(_), Some(_)) => Err(config_error(format!("set {field} or {field}_env, not both"))),
        (Some(v), None) => Ok(Secret::new(v.as_str())),
        (None, Some(var)) => std::env::var(var)
            .map(Secret::new)
            .map_err(|_| config_error(format!("{field}_env names `{var}`, which is not set"))),
        (None, None) => Err(config_error(format!("{field} (or {field}_env) is missing"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [[caller]]
        access_key_id = "AKIDLOCAL"
        secret_access_key = "0123456789abcdef0123"
        operations = ["GetWorkloadAccessTokenForUserId", "GetResourceOauth2Token"]
    "#;

    #[test]
    fn minimal_config_has_defaults() {
        let c = LocalConfig::from_toml(BASE).unwrap();
        assert_eq!(c.listen.port(), 8790);
        assert_eq!(c.session_ttl_secs, 600);
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../../examples/identity.toml");
        let mut c = LocalConfig::parse(text).unwrap();
        assert_eq!(c.oauth2_providers[0].vendor, Vendor::Github);
        c.callers = LocalConfig::from_toml(BASE).unwrap().callers;
        // Valid once the secret's variable is set; named when it is not.
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("GITHUB_CLIENT_SECRET"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("", "no [[caller]]"),
            (
                &format!("{BASE}[[workload]]\nname = \"x\""),
                "[[workload]] `x`",
            ),
            (
                &format!(
                    "{BASE}[[oauth2_provider]]\nname = \"p\"\nclient_id = \"c\"\nclient_secret = \"s\""
                ),
                "set discovery_url",
            ),
            (
                &format!(
                    "{BASE}[[oauth2_provider]]\nname = \"p\"\nvendor = \"github\"\nclient_id = \"c\""
                ),
                "client_secret (or client_secret_env) is missing",
            ),
            (
                &format!(
                    "{BASE}[[oauth2_provider]]\nname = \"p\"\nvendor = \"github\"\nclient_id = \"c\"\nclient_secret_env = \"AIRLOCK_TEST_UNSET_VAR\""
                ),
                "`AIRLOCK_TEST_UNSET_VAR`, which is not set",
            ),
            (
                &format!(
                    "{BASE}[[api_key_provider]]\nname = \"k\"\napi_key = \"x\"\n[[api_key_provider]]\nname = \"k\"\napi_key = \"y\""
                ),
                "appears twice",
            ),
            (
                "[[caller]]\naccess_key_id = \"A\"\nsecret_access_key = \"0123456789abcdef\"\noperations = [\"Nope\"]",
                "unknown operation `Nope`",
            ),
            (&format!("{BASE}bogus = 1"), "unknown field `bogus`"),
            (
                &format!(
                    "{BASE}[[oauth2_provider]]\nname = \"p\"\nvendor = \"github\"\nclient_id = \"c\"\nclient_secret = \"s\"\ntoken_auth = \"none\""
                ),
                "public client; remove client_secret",
            ),
            (
                "[[caller]]\naccess_key_id = \"A\"\nsecret_access_key = \"0123456789abcdef\"",
                "list the operations it may call",
            ),
        ];
        for (text, expected) in cases {
            let e = LocalConfig::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
