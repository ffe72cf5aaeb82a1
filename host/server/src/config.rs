//! `host serve`'s settings: a TOML file for the whole, flags and environment
//! variables (in the CLI) for each listener and the common ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use airlock_verify::{AlbConfig, JwtIssuer};
use serde::Deserialize;

/// How a listener's callers prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// The ALB's `x-amzn-oidc-data` header.
    Alb,
    /// `Authorization: Bearer <JWT>` from a configured issuer.
    Bearer,
    /// Inside AgentCore Runtime: the `WorkloadAccessToken` it hands over.
    AgentcoreRuntime,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The AgentCore runtime contract (`/invocations`, `/ping`) and MCP (`/mcp`).
    #[serde(default = "default_http")]
    pub http: ListenerConfig,
    /// MCP on the runtime's MCP port (`/mcp`); `None` to serve it only on `http`.
    #[serde(default = "default_mcp")]
    pub mcp: Option<ListenerConfig>,
    /// Prometheus metrics (`/metrics`), on their own listener.
    #[serde(default = "default_metrics")]
    pub metrics: Option<SocketAddr>,
    /// How callers are verified.
    #[serde(default)]
    pub identity: InboundConfig,
    /// Folders of `.wasm` tools to serve.
    #[serde(default)]
    pub tools: Vec<PathBuf>,
    /// The operator's policy file (hosts, providers, limits); denies by default.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Who may call which tool.
    #[serde(default)]
    pub authorization: AuthorizationConfig,
    /// Admission: concurrency, waiting, sizes, rate.
    #[serde(default)]
    pub limits: ServeLimits,
    /// Local mode: served on loopback, permissive policies, and a user named
    /// on the command line when asked for. Never for a shared server.
    #[serde(default)]
    pub local: bool,
    /// Where uploaded tools are kept (by digest, with an index): a folder,
    /// or `s3://BUCKET/PREFIX`, shared by every replica.
    #[serde(default)]
    pub store: Option<StoreLocation>,
    /// How to reach an `s3://` store.
    #[serde(default)]
    pub s3: crate::store::s3::S3Config,
    /// How often each replica reads the store's index (a conditional read)
    /// and serves what another replica changed; 0: never.
    #[serde(default = "default_store_poll_secs")]
    pub store_poll_secs: u64,
    /// How long the store keeps a blob no tool names before deleting it, in
    /// seconds: another replica may have just written the same content.
    #[serde(default = "default_orphan_grace_secs")]
    pub orphan_grace_secs: u64,
    /// A folder to watch: a `NAME.wasm` dropped there is checked like an
    /// upload and served; deleting it removes the tool. Needs `store`.
    #[serde(default)]
    pub watch: Option<PathBuf>,
    /// Where compiled code is cached, so that a restart loads tools without
    /// compiling them again.
    #[serde(default)]
    pub compile_cache: Option<PathBuf>,
    /// The admin API (upload, list, remove tools), on its own listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Signed tools.
    #[serde(default)]
    pub signatures: SignaturesConfig,
    /// Refuse the interfaces otherwise linked inert (filesystem without
    /// preopens, empty environment, terminals): only tools importing nothing
    /// beyond the basics and their grants load.
    #[serde(default)]
    pub strict_imports: bool,
    /// Tools that share consent: group name -> tool names. A user's consent
    /// to one of them serves all of them; every other tool asks for its own.
    #[serde(default)]
    pub consent_groups: BTreeMap<String, Vec<String>>,
    /// The MCP endpoint's public URL, as clients reach it
    /// (`https://airlock.example.com/mcp`): the OAuth resource bearer tokens
    /// are for, named in its metadata (RFC 9728) and in every 401.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The authorization servers the resource metadata names (default: the
    /// façade's issuer). Point it at an IdP that registers MCP clients itself.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Browser origins allowed to call besides `public_url`'s; a request
    /// from any other page is refused (it could ride a sign-in cookie).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Host names the listeners answer (default: any, as behind a load
    /// balancer; local mode: loopback names only, always).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The authorization server façade, for MCP clients whose IdP cannot
    /// register them (Cognito, Entra): served at `public_url`'s origin.
    #[serde(default)]
    pub oauth: Option<airlock_oauth::OAuthConfig>,
}

fn default_store_poll_secs() -> u64 {
    5
}

fn default_orphan_grace_secs() -> u64 {
    crate::store::ORPHAN_GRACE_SECS
}

/// A tool store setting that names neither a folder nor a bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreLocationError {
    /// A URL of another scheme than `s3://`.
    #[error("`{0}`: a tool store is a folder or s3://BUCKET/PREFIX")]
    Scheme(String),
    /// An `s3://` URL that is not usable.
    #[error(transparent)]
    S3(#[from] crate::store::s3::S3LocationError),
}

/// Where the tool store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local folder (or one every replica mounts).
    Folder(PathBuf),
    /// A bucket and prefix.
    S3(crate::store::s3::S3Location),
}

impl StoreLocation {
    /// `s3://BUCKET[/PREFIX]`, or a folder.
    pub fn parse(text: &str) -> Result<StoreLocation, StoreLocationError> {
        match crate::store::s3::S3Location::parse(text) {
            Some(at) => Ok(StoreLocation::S3(at?)),
            None if text.contains("://") => Err(StoreLocationError::Scheme(text.to_string())),
            None => Ok(StoreLocation::Folder(PathBuf::from(text))),
        }
    }
}

impl<'de> Deserialize<'de> for StoreLocation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        StoreLocation::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Which signatures uploads (and dropped-in tools) need.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturesConfig {
    /// A file of trusted OpenSSH ed25519 public keys, one per line.
    #[serde(default)]
    pub trusted_keys: Option<PathBuf>,
    /// Refuse every tool not signed by a trusted key.
    #[serde(default)]
    pub required: bool,
    /// Let a tool be replaced by one another key signed (or unsigned by signed).
    #[serde(default)]
    pub allow_signer_change: bool,
}

/// The admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind (keep it off the agents' network).
    pub listen: SocketAddr,
    /// The admin keys, by the sha256 of each.
    #[serde(default)]
    pub keys: Vec<AdminKey>,
    /// Or admins signed in at an OpenID issuer, in a group.
    #[serde(default)]
    pub oidc: Option<AdminOidc>,
    /// The largest upload, in KiB.
    #[serde(default = "default_max_upload_kib")]
    pub max_upload_kib: usize,
}

/// Admins by an OpenID issuer's bearer JWTs and a group claim (`groups` or
/// `cognito:groups`). Keep its audience apart from the agents' issuers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminOidc {
    /// OpenID discovery URL.
    pub discovery_url: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// The group an admin must be in.
    pub group: String,
}

/// One admin key: a name for the audit trail, and `printf %s KEY | sha256sum`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKey {
    /// Who holds it, as the audit trail names them.
    pub name: String,
    /// The sha256 of the key, hex.
    pub sha256: String,
}

/// The largest upload unless `admin.max_upload_kib` says otherwise, in KiB.
pub const DEFAULT_MAX_UPLOAD_KIB: usize = 32 << 10;

fn default_max_upload_kib() -> usize {
    DEFAULT_MAX_UPLOAD_KIB
}

/// Where audit records go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `stdout`, `off`, or a file path (rotated by size).
    #[serde(default = "default_audit_sink")]
    pub sink: String,
    /// Rotate the file past this many MiB.
    #[serde(default = "default_rotate_mib")]
    pub rotate_mib: u64,
    /// An OpenSSH ed25519 private key (`host keygen`) that signs a
    /// checkpoint every `checkpoint_every` records and at shutdown, so that
    /// `host audit verify --key` can tell a rewritten trail.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// Records between signed checkpoints.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Records that may wait for the trail's writer; past that, calls are
    /// refused (503) until it catches up, never run unrecorded.
    #[serde(default = "default_backlog")]
    pub backlog: usize,
}

fn default_backlog() -> usize {
    airlock_audit::DEFAULT_BACKLOG
}

fn default_checkpoint_every() -> u64 {
    100
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            signing_key: None,
            checkpoint_every: default_checkpoint_every(),
            backlog: default_backlog(),
            sink: default_audit_sink(),
            rotate_mib: default_rotate_mib(),
        }
    }
}

fn default_audit_sink() -> String {
    "stdout".into()
}

fn default_rotate_mib() -> u64 {
    64
}

/// One listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Which identities it accepts (default: every one configured).
    #[serde(default)]
    pub accept: Option<Vec<IdentityMode>>,
}

fn default_http() -> ListenerConfig {
    ListenerConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        accept: None,
    }
}

fn default_mcp() -> Option<ListenerConfig> {
    Some(ListenerConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
        accept: None,
    })
}

fn default_metrics() -> Option<SocketAddr> {
    Some(SocketAddr::from(([0, 0, 0, 0], 9090)))
}

/// How callers are verified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// The ALB in front (`authenticate-oidc`).
    #[serde(default)]
    pub alb: Option<AlbConfig>,
    /// Issuers whose bearer JWTs are accepted.
    #[serde(default)]
    pub jwt_issuers: Vec<JwtIssuer>,
    /// Inside AgentCore Runtime, which verifies callers itself: take the
    /// workload access token it passes in `WorkloadAccessToken` as it is, for
    /// the user of the bearer JWT it passes on (when `jwt_issuers` are set) or
    /// else the user id it was invoked with. Only where nothing but the
    /// runtime can reach the host.
    #[serde(default)]
    pub agentcore_runtime: bool,
    /// Local mode only: every caller is this user.
    #[serde(default)]
    pub local_user: Option<String>,
}

/// Who may call which tool: Cedar.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// The Cedar policies. Without them every call is refused, except in local mode.
    #[serde(default)]
    pub policies: Option<PathBuf>,
    /// The Cedar schema the policies are checked against (default: the built-in one).
    #[serde(default)]
    pub schema: Option<PathBuf>,
}

/// Admission and sizes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeLimits {
    /// Calls running at once (the instance pool's size).
    pub max_concurrent_calls: u32,
    /// How long a call may wait for a free slot before it is answered "busy".
    pub queue_wait_ms: u64,
    /// The largest request body, in KiB.
    pub max_body_kib: usize,
    /// The largest tool input (arguments), in KiB.
    pub max_input_kib: usize,
    /// Calls per user per minute (a burst of a quarter of it).
    pub calls_per_minute: u32,
    /// How long shutdown waits for calls in flight, in seconds.
    pub drain_secs: u64,
    /// How long a client has to send its request headers, in seconds.
    pub header_read_timeout_secs: u64,
    /// Connections open at once on each listener.
    pub max_connections: usize,
    /// MCP sessions (of clients before 2026-07-28) open at once, in all.
    pub max_sessions: usize,
    /// MCP sessions one user may hold open.
    pub max_sessions_per_user: usize,
    /// MCP requests per user per minute, of any kind (a burst of a quarter of it).
    pub mcp_requests_per_minute: u32,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_concurrent_calls: 64,
            queue_wait_ms: 200,
            max_body_kib: 1024,
            max_input_kib: 256,
            calls_per_minute: 600,
            drain_secs: 30,
            header_read_timeout_secs: 10,
            max_connections: 4096,
            max_sessions: 4096,
            max_sessions_per_user: 16,
            mcp_requests_per_minute: 1200,
        }
    }
}

pub use airlock_policy::ConfigError;

/// A mistake in this file.
fn config_error(message: impl Into<String>) -> ConfigError {
    ConfigError::new("serve", message)
}

/// The issuer a discovery URL names, compared as issuers are: without its
/// well-known suffix or a trailing slash, scheme and host in lower case.
fn issuer_of(discovery_url: &str) -> String {
    let base = [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ]
    .iter()
    .find_map(|w| discovery_url.strip_suffix(w))
    .unwrap_or(discovery_url);
    match url::Url::parse(base) {
        Ok(u) => u.as_str().trim_end_matches('/').to_string(),
        Err(_) => base.trim_end_matches('/').to_string(),
    }
}

/// Whether two discovery URLs are the same issuer's.
fn same_issuer(a: &str, b: &str) -> bool {
    issuer_of(a) == issuer_of(b)
}

/// Consent groups are named like tools.
fn valid_name(name: &str) -> bool {
    airlock_policy::ToolName::is_valid(name)
}

impl ServeConfig {
    /// Users from two issuers are one user (for Cedar, the rate limit, the
    /// broker's caches) when their `sub` is the same: refused unless they are
    /// the same issuer, or one of them puts a `user_prefix` before its ids.
    fn check_user_namespaces(&self) -> Result<(), ConfigError> {
        let mut spaces: Vec<(String, String, String)> = Vec::new();
        if let Some(alb) = &self.identity.alb {
            let issuer = match &alb.issuer {
                Some(i) => i.trim_end_matches('/').to_string(),
                None => format!("load balancer {}", alb.signer_arn),
            };
            spaces.push(("[identity.alb]".into(), issuer, alb.user_prefix.clone().unwrap_or_default()));
        }
        for i in &self.identity.jwt_issuers {
            spaces.push((
                format!("[[identity.jwt_issuers]] {}", i.discovery_url),
                issuer_of(&i.discovery_url),
                i.user_prefix.clone().unwrap_or_default(),
            ));
        }
        if let Some(o) = &self.oauth {
            spaces.push((
                "[oauth.idp]".into(),
                issuer_of(&o.idp.discovery_url),
                o.idp.user_prefix.clone().unwrap_or_default(),
            ));
        }
        for (i, a) in spaces.iter().enumerate() {
            if let Some(b) = spaces[i + 1..].iter().find(|b| b.2 == a.2 && b.1 != a.1) {
                return Err(config_error(format!(
                    "{} ({}) and {} ({}) could each name a user with the same `sub`, who would then be one user for policies, rate limits and tokens: give one of them a user_prefix (e.g. \"partner:\"), or set [identity.alb] issuer if both are the same IdP",
                    a.0, a.1, b.0, b.1
                )));
            }
        }
        Ok(())
    }

    /// Each grouped tool's consent group (tool -> group).
    pub fn consent_group_of(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut of = BTreeMap::new();
        for (group, tools) in &self.consent_groups {
            if !valid_name(group) {
                return Err(config_error(format!(
                    "consent_groups `{group}`: name groups like tools, 1 to 64 of a-z 0-9 -"
                )));
            }
            for tool in tools {
                if !valid_name(tool) {
                    return Err(config_error(format!(
                        "consent_groups `{group}`: `{tool}` is not a tool name (1 to 64 of a-z 0-9 -)"
                    )));
                }
                if let Some(other) = of.insert(tool.clone(), group.clone()) {
                    return Err(config_error(format!(
                        "consent_groups: `{tool}` is in both `{other}` and `{group}`; a tool's consent belongs to one group"
                    )));
                }
            }
        }
        Ok(of)
    }

    /// Parse a TOML file's text.
    pub fn from_toml(text: &str) -> Result<ServeConfig, ConfigError> {
        let config: ServeConfig = toml::from_str(text).map_err(|e| config_error(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Check that something can verify callers and that local-only settings
    /// appear only in local mode.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_sign_in()?;
        self.check_agentcore_runtime()?;
        self.check_intake()?;
        self.check_user_namespaces()?;
        self.consent_group_of()?;
        if self.limits.max_concurrent_calls == 0 || self.limits.calls_per_minute == 0 {
            return Err(config_error(
                "limits.max_concurrent_calls and limits.calls_per_minute must be at least 1",
            ));
        }
        if self.audit.backlog == 0 {
            return Err(config_error(
                "audit.backlog must be at least 1: with no room for a record, every call would be refused",
            ));
        }
        Ok(())
    }

    /// Something verifies callers, and clients that sign in by OAuth are told where.
    fn check_sign_in(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(config_error(m.to_string()));
        if self.identity.local_user.is_some() && !self.local {
            return err(
                "identity.local_user trusts whoever connects: it is allowed only in local mode (--local)",
            );
        }
        if self.oauth.is_some() && self.public_url.is_none() {
            return err(
                "[oauth] issues tokens for the MCP endpoint: set public_url to its URL as clients reach it (https://HOST/mcp)",
            );
        }
        if let Some(oauth) = &self.oauth {
            oauth.validate().map_err(|e| config_error(e.to_string()))?;
        }
        if self.public_url.is_some()
            && self.oauth.is_none()
            && self.authorization_servers.is_empty()
        {
            return err(
                "public_url needs an authorization server for clients to sign in at: configure [oauth] or authorization_servers",
            );
        }
        if self.identity.alb.is_none()
            && self.identity.jwt_issuers.is_empty()
            && self.identity.local_user.is_none()
            && !self.identity.agentcore_runtime
            && self.oauth.is_none()
        {
            return err(
                "no way to verify callers: configure [identity.alb] (behind an ALB), [[identity.jwt_issuers]] (bearer tokens), identity.agentcore_runtime (inside AgentCore Runtime), or run with --local --user NAME",
            );
        }
        Ok(())
    }

    /// Inside AgentCore Runtime, the runtime's headers are the only way in.
    fn check_agentcore_runtime(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(config_error(m.to_string()));
        if self.identity.agentcore_runtime && self.local {
            return err(
                "identity.agentcore_runtime takes the caller's word from request headers: it is for a host inside AgentCore Runtime, not local mode",
            );
        }
        if self.identity.agentcore_runtime {
            // Beside any other way in, two request headers would stand in for a sign-in.
            if self.identity.alb.is_some() || self.oauth.is_some() || self.public_url.is_some() {
                return err(
                    "identity.agentcore_runtime is the only way in inside AgentCore Runtime: remove [identity.alb], [oauth] and public_url (jwt_issuers stay: they verify the caller's token the runtime passes on)",
                );
            }
            let listeners = std::iter::once(&self.http).chain(self.mcp.as_ref());
            if let Some(l) = listeners
                .filter_map(|l| l.accept.as_ref().map(|a| (l.listen, a)))
                .find(|(_, a)| a.iter().any(|m| *m != IdentityMode::AgentcoreRuntime))
            {
                return Err(config_error(format!(
                    "the listener on {} accepts {:?}: inside AgentCore Runtime every listener accepts agentcore_runtime only",
                    l.0, l.1
                )));
            }
        }
        Ok(())
    }

    /// Signed uploads, the watched folder and the admin API: each needs what it relies on.
    fn check_intake(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(config_error(m.to_string()));
        if self.signatures.required && self.signatures.trusted_keys.is_none() {
            return err(
                "signatures.required needs signatures.trusted_keys: a file of the OpenSSH public keys to trust",
            );
        }
        if self.watch.is_some() && self.store.is_none() {
            return err(
                "a watched folder's tools are kept in the tool store: set `store` to a folder or s3://BUCKET/PREFIX",
            );
        }
        match &self.admin {
            Some(admin) => self.check_admin(admin),
            None => Ok(()),
        }
    }

    fn check_admin(&self, admin: &AdminConfig) -> Result<(), ConfigError> {
        let err = |m: &str| Err(config_error(m.to_string()));
        if self.store.is_none() {
            return err(
                "the admin API keeps uploads in the tool store: set `store` to a folder or s3://BUCKET/PREFIX",
            );
        }
        if let Some(oidc) = &admin.oidc {
            // An agent holds its users' tokens: one that also opens the admin API
            // would let any agent of an admin upload tools.
            let shared = self.identity.jwt_issuers.iter().any(|i| {
                same_issuer(&i.discovery_url, &oidc.discovery_url)
                    && i.audiences.iter().any(|a| oidc.audiences.contains(a))
            });
            if oidc.audiences.is_empty() || shared {
                return err(
                    "admin.oidc needs audiences of its own: not empty, and none that [[identity.jwt_issuers]] accepts from the same issuer (agents hold those tokens)",
                );
            }
        }
        if admin.keys.is_empty() && admin.oidc.is_none() {
            return err(
                "the admin API takes no credential: add [[admin.keys]] (a name and the sha256 of the key) or [admin.oidc]",
            );
        }
        if let Some(k) = admin
            .keys
            .iter()
            .find(|k| k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(config_error(format!(
                "admin key `{}`: sha256 must be 64 hex digits (printf %s KEY | sha256sum)",
                k.name
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_needs_a_way_to_verify_callers_and_local_users_need_local_mode() {
        let e = ServeConfig::from_toml("").unwrap_err().to_string();
        assert!(e.contains("no way to verify callers"), "{e}");
        let e = ServeConfig::from_toml("[identity]\nlocal_user = \"alice\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only in local mode"), "{e}");
        let e = ServeConfig::from_toml("local = true\n[identity]\nagentcore_runtime = true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not local mode"), "{e}");
        ServeConfig::from_toml("[identity]\nagentcore_runtime = true").unwrap();
        let admin = |aud: &str| {
            format!(
                "store = \"/s\"\n[admin]\nlisten = \"127.0.0.1:1\"\n[admin.oidc]\ndiscovery_url = \"https://idp/d\"\naudiences = [\"{aud}\"]\ngroup = \"g\"\n[[identity.jwt_issuers]]\ndiscovery_url = \"https://idp/d\"\naudiences = [\"agents\"]\n"
            )
        };
        let e = ServeConfig::from_toml(&admin("agents"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("audiences of its own"), "{e}");
        // The same issuer spelled another way is still the same issuer.
        let respelled = admin("agents").replacen(
            "discovery_url = \"https://idp/d\"",
            "discovery_url = \"HTTPS://IDP/d/.well-known/openid-configuration\"",
            1,
        );
        let e = ServeConfig::from_toml(&respelled).unwrap_err().to_string();
        assert!(e.contains("audiences of its own"), "{e}");
        // OIDC alone is a credential: no admin key needed.
        ServeConfig::from_toml(&admin("airlock-admin")).unwrap();
        let c = ServeConfig::from_toml("local = true\n[identity]\nlocal_user = \"alice\"").unwrap();
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.mcp.unwrap().listen.port(), 8000);
        let e = ServeConfig::from_toml("locale = true")
            .unwrap_err()
            .to_string();
        assert!(e.contains("locale"), "{e}");
    }

    #[test]
    fn an_audit_backlog_with_no_room_is_refused_and_the_default_has_room() {
        let base = "local = true\n[identity]\nlocal_user = \"alice\"\n";
        let e = ServeConfig::from_toml(&format!("{base}[audit]\nbacklog = 0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit.backlog must be at least 1"), "{e}");
        let c = ServeConfig::from_toml(base).unwrap();
        assert_eq!(c.audit.backlog, airlock_audit::DEFAULT_BACKLOG);
    }

    #[test]
    fn the_example_config_parses_once_its_placeholder_key_is_replaced() {
        let example = include_str!("../../../examples/serve.toml");
        // As shipped it is refused: no one runs with a known admin key.
        let e = ServeConfig::from_toml(example).unwrap_err().to_string();
        assert!(e.contains("sha256 must be 64 hex digits"), "{e}");
        let digest = "5f".repeat(32);
        let c = ServeConfig::from_toml(
            &example.replace("REPLACE-with-printf-%s-KEY-|-sha256sum", &digest),
        )
        .unwrap();
        assert_eq!(c.consent_group_of().unwrap()["mail-send"], "mail");
        assert_eq!(c.http.accept.unwrap(), [IdentityMode::Alb]);
        assert_eq!(c.identity.jwt_issuers.len(), 1);
        assert_eq!(c.limits.max_concurrent_calls, 64);
        assert!(c.store.is_some() && c.watch.is_some() && c.compile_cache.is_some());
        assert_eq!(c.admin.as_ref().unwrap().keys[0].name, "release-pipeline");
        assert!(c.signatures.required);
        let keys = include_str!("../../../examples/trusted_keys");
        assert!(crate::signing::Trusted::parse(keys).unwrap().is_empty());
    }

    #[test]
    fn two_issuers_may_not_share_user_ids_unless_prefixed_or_the_same() {
        let both = |alb_issuer: &str, prefix: &str| {
            format!(
                "[identity.alb]\nsigner_arn = \"arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/a/1\"\nkey_url = \"https://keys\"\nissuer = \"{alb_issuer}\"\n[[identity.jwt_issuers]]\ndiscovery_url = \"https://partner.example.com/.well-known/openid-configuration\"\naudiences = [\"airlock\"]\n{prefix}"
            )
        };
        let e = ServeConfig::from_toml(&both("https://idp.example.com", "")).unwrap_err().to_string();
        assert!(e.contains("user_prefix"), "{e}");
        ServeConfig::from_toml(&both("https://idp.example.com", "user_prefix = \"partner:\"")).unwrap();
        // The same IdP behind the ALB and for bearer tokens: one namespace.
        ServeConfig::from_toml(&both("https://partner.example.com/", "")).unwrap();
    }

    #[test]
    fn a_tool_shares_consent_with_one_group_at_most() {
        let parse = |groups: &str| {
            ServeConfig::from_toml(&format!(
                "local = true\nconsent_groups = {groups}\n[identity]\nlocal_user = \"alice\""
            ))
            .map(|c| c.consent_group_of().unwrap())
        };
        let of = parse(r#"{ a = ["x", "y"], b = ["z"] }"#).unwrap();
        assert_eq!(
            (of["x"].as_str(), of["y"].as_str(), of["z"].as_str()),
            ("a", "a", "b")
        );
        let e = parse(r#"{ a = ["x"], b = ["x"] }"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x` is in both `a` and `b`"), "{e}");
        let e = parse(r#"{ "A.B" = ["x"] }"#).unwrap_err().to_string();
        assert!(e.contains("consent_groups `A.B`"), "{e}");
        let e = parse(r#"{ a = ["Not A Tool"] }"#).unwrap_err().to_string();
        assert!(e.contains("`Not A Tool` is not a tool name"), "{e}");
    }
}
