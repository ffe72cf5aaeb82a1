//! `host serve`: the agent endpoint. Settings come from a TOML file
//! (`--config`), overridden by flags and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_credential::TokenSource;
use airlock_server::{IdentityMode, ListenerConfig, ServeConfig, StoreLocation};
use airlock_verify::{AlbConfig, JwtIssuer};
use anyhow::{Context, Result};

use crate::identity::IdentityArgs;

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The settings file (TOML); flags below override it.
    #[arg(long, env = "AIRLOCK_SERVE_CONFIG")]
    config: Option<PathBuf>,
    /// Local mode: loopback listeners, permissive policies, the local
    /// identity service in process, the example tools, and a local tool store
    /// fed by .airlock/tools (drop NAME.wasm there) by default.
    #[arg(long)]
    local: bool,
    /// Folders of `.wasm` tools (default in local mode: tools/target/airlock).
    #[arg(long = "tools", env = "AIRLOCK_TOOLS", value_delimiter = ',')]
    tools: Vec<PathBuf>,
    /// The operator's policy file (hosts, providers, limits).
    #[arg(long, env = "AIRLOCK_POLICY")]
    policy: Option<PathBuf>,
    /// The Cedar policies: who may call which tool.
    #[arg(long, env = "AIRLOCK_AUTHORIZATION")]
    authorization: Option<PathBuf>,
    /// The Cedar schema (default: the built-in one).
    #[arg(long, env = "AIRLOCK_AUTHORIZATION_SCHEMA")]
    authorization_schema: Option<PathBuf>,
    /// The HTTP listener: /invocations, /ping, /mcp (default 0.0.0.0:8080; 127.0.0.1 in local mode).
    #[arg(long, env = "AIRLOCK_LISTEN")]
    listen: Option<SocketAddr>,
    /// The MCP listener (default 0.0.0.0:8000), or `off`.
    #[arg(long, env = "AIRLOCK_MCP_LISTEN")]
    mcp_listen: Option<String>,
    /// What the HTTP listener accepts: alb, bearer, agentcore_runtime (comma separated).
    #[arg(long, env = "AIRLOCK_HTTP_ACCEPT", value_delimiter = ',', value_parser = mode)]
    http_accept: Vec<IdentityMode>,
    /// What the MCP listener accepts (e.g. `bearer` where MCP clients sign in by OAuth).
    #[arg(long, env = "AIRLOCK_MCP_ACCEPT", value_delimiter = ',', value_parser = mode)]
    mcp_accept: Vec<IdentityMode>,
    /// The metrics listener (default 0.0.0.0:9090), or `off`.
    #[arg(long, env = "AIRLOCK_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// The ALB's ARN: verify its x-amzn-oidc-data headers.
    #[arg(long, env = "AIRLOCK_ALB_ARN")]
    alb_arn: Option<String>,
    /// Where the ALB's public keys are (default: the region's key endpoint).
    #[arg(long, env = "AIRLOCK_ALB_KEY_URL")]
    alb_key_url: Option<String>,
    /// The IdP issuer the ALB's headers must name.
    #[arg(long, env = "AIRLOCK_ALB_ISSUER")]
    alb_issuer: Option<String>,
    /// A bearer-token issuer's OpenID discovery URL.
    #[arg(long, env = "AIRLOCK_JWT_DISCOVERY_URL")]
    jwt_discovery_url: Option<String>,
    /// The audiences bearer tokens must name.
    #[arg(long, env = "AIRLOCK_JWT_AUDIENCE", value_delimiter = ',')]
    jwt_audience: Vec<String>,
    /// Inside AgentCore Runtime: use the workload access token it passes in the
    /// WorkloadAccessToken header, for the user it names. Only where nothing
    /// but the runtime can reach the host.
    #[arg(long, env = "AIRLOCK_AGENTCORE_RUNTIME")]
    agentcore_runtime: bool,
    /// Where uploaded tools are kept: a folder, or s3://BUCKET/PREFIX shared by replicas.
    #[arg(long, env = "AIRLOCK_STORE", value_parser = StoreLocation::parse)]
    store: Option<StoreLocation>,
    /// The admin API's listener (needs --store and an admin key).
    #[arg(long, env = "AIRLOCK_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// The sha256 (hex) of the admin key: `printf %s KEY | sha256sum`.
    #[arg(long, env = "AIRLOCK_ADMIN_KEY_SHA256")]
    admin_key_sha256: Option<String>,
    /// A folder to watch for dropped-in tools (NAME.wasm); needs --store.
    #[arg(long, env = "AIRLOCK_WATCH")]
    watch: Option<PathBuf>,
    /// Where compiled tools are cached across restarts.
    #[arg(long, env = "AIRLOCK_COMPILE_CACHE")]
    compile_cache: Option<PathBuf>,
    /// Audit records: `stdout`, `off`, or a file (rotated by size).
    #[arg(long, env = "AIRLOCK_AUDIT")]
    audit: Option<String>,
    /// An OpenSSH ed25519 key (a mounted secret) that signs the trail's
    /// checkpoints (`host audit verify --key` checks them).
    #[arg(long, env = "AIRLOCK_AUDIT_SIGNING_KEY")]
    audit_signing_key: Option<PathBuf>,
    /// Calls running at once.
    #[arg(long, env = "AIRLOCK_MAX_CONCURRENT_CALLS")]
    max_concurrent_calls: Option<u32>,
    /// The MCP endpoint's public URL as clients reach it (https://HOST/mcp):
    /// the OAuth resource its bearer tokens are for.
    #[arg(long, env = "AIRLOCK_PUBLIC_URL")]
    public_url: Option<String>,
    /// The authorization server façade's issuer (the public base URL); with
    /// the IdP settings below it serves MCP clients' sign-in ([oauth]).
    #[arg(long, env = "AIRLOCK_OAUTH_ISSUER")]
    oauth_issuer: Option<String>,
    /// The façade's IdP: its OpenID discovery URL.
    #[arg(long, env = "AIRLOCK_OAUTH_IDP_DISCOVERY_URL")]
    oauth_idp_discovery_url: Option<String>,
    /// The façade's client id at its IdP (its secret, if any, in
    /// AIRLOCK_OAUTH_IDP_CLIENT_SECRET).
    #[arg(long, env = "AIRLOCK_OAUTH_IDP_CLIENT_ID")]
    oauth_idp_client_id: Option<String>,
    #[command(flatten)]
    identity: IdentityArgs,
}

/// A listener's accepted identity (`--http-accept`, `--mcp-accept`) that
/// clap refuses, with this text.
#[derive(Debug, thiserror::Error)]
enum IdentityModeError {
    /// None of the modes.
    #[error("`{0}` is not an identity: alb, bearer or agentcore_runtime")]
    Unknown(String),
}

fn mode(text: &str) -> Result<IdentityMode, IdentityModeError> {
    match text.trim() {
        "alb" => Ok(IdentityMode::Alb),
        "bearer" => Ok(IdentityMode::Bearer),
        "agentcore_runtime" => Ok(IdentityMode::AgentcoreRuntime),
        other => Err(IdentityModeError::Unknown(other.to_string())),
    }
}

fn listener(
    value: &Option<String>,
    default: Option<ListenerConfig>,
) -> Result<Option<ListenerConfig>> {
    match value.as_deref() {
        None => Ok(default),
        Some("off") => Ok(None),
        Some(addr) => Ok(Some(ListenerConfig {
            listen: addr.parse().with_context(|| {
                format!("`{addr}` is not an address like 0.0.0.0:8000, nor `off`")
            })?,
            accept: default.and_then(|d| d.accept),
        })),
    }
}

/// Where the façade's IdP client secret is read from, when set.
const OAUTH_IDP_SECRET_ENV: &str = "AIRLOCK_OAUTH_IDP_CLIENT_SECRET";

impl ServeArgs {
    /// The façade's settings from the flags and environment, over the file's.
    fn oauth(&self, config: &mut ServeConfig) -> Result<()> {
        let (issuer, discovery, client) = (
            &self.oauth_issuer,
            &self.oauth_idp_discovery_url,
            &self.oauth_idp_client_id,
        );
        if issuer.is_none() && discovery.is_none() && client.is_none() {
            return Ok(());
        }
        let oauth = match config.oauth.take() {
            Some(o) => o,
            None => {
                let (Some(issuer), Some(discovery), Some(client)) = (issuer, discovery, client)
                else {
                    anyhow::bail!(
                        "the authorization server façade needs its issuer, its IdP's discovery URL and its client id there: set AIRLOCK_OAUTH_ISSUER, AIRLOCK_OAUTH_IDP_DISCOVERY_URL and AIRLOCK_OAUTH_IDP_CLIENT_ID (or [oauth] in the file)"
                    );
                };
                serde_json::from_value(serde_json::json!({
                    "issuer": issuer,
                    "idp": {"discovery_url": discovery, "client_id": client},
                }))
                .context("the façade's settings")?
            }
        };
        let mut oauth: airlock_server::OAuthConfig = oauth;
        if let Some(i) = issuer {
            oauth.issuer = i.clone();
        }
        if let Some(d) = discovery {
            oauth.idp.discovery_url = d.clone();
        }
        if let Some(c) = client {
            oauth.idp.client_id = c.clone();
        }
        if std::env::var_os(OAUTH_IDP_SECRET_ENV).is_some()
            && oauth.idp.client_secret_file.is_none()
        {
            oauth.idp.client_secret_env = Some(OAUTH_IDP_SECRET_ENV.into());
        }
        config.oauth = Some(oauth);
        Ok(())
    }

    /// The configuration: the file, then the flags.
    pub(crate) fn config(&self) -> Result<ServeConfig> {
        let mut config = self.file()?;
        config.local |= self.local;
        if config.local {
            self.local_defaults(&mut config)?;
        }
        self.sources(&mut config);
        self.listeners(&mut config)?;
        self.verifiers(&mut config);
        self.storage(&mut config);
        self.admin(&mut config);
        if let Some(n) = self.max_concurrent_calls {
            config.limits.max_concurrent_calls = n;
        }
        if let Some(url) = &self.public_url {
            config.public_url = Some(url.clone());
        }
        self.oauth(&mut config)?;
        config.validate()?;
        Ok(config)
    }

    /// The `--config` file's settings (all defaults without one).
    fn file(&self) -> Result<ServeConfig> {
        let text = match &self.config {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => String::new(),
        };
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}",
                self.config
                    .as_deref()
                    .unwrap_or("--config".as_ref())
                    .display()
            )
        })
    }

    /// Local mode: loopback listeners, the example tools, a store under .airlock.
    fn local_defaults(&self, config: &mut ServeConfig) -> Result<()> {
        let loopback = |mut a: SocketAddr| {
            a.set_ip([127, 0, 0, 1].into());
            a
        };
        config.http.listen = loopback(config.http.listen);
        if let Some(m) = &mut config.mcp {
            m.listen = loopback(m.listen);
        }
        config.metrics = config.metrics.map(loopback);
        if config.tools.is_empty() && self.tools.is_empty() {
            config.tools.push(PathBuf::from("tools/target/airlock"));
        }
        if let Some(user) = &self.identity.user {
            config.identity.local_user = Some(user.clone());
        }
        // A local tool store: drop NAME.wasm into .airlock/tools and it is served.
        let local = std::env::current_dir()
            .context("the current folder")?
            .join(".airlock");
        config
            .store
            .get_or_insert_with(|| StoreLocation::Folder(local.join("store")));
        config.watch.get_or_insert_with(|| local.join("tools"));
        config
            .compile_cache
            .get_or_insert_with(|| local.join("compiled"));
        Ok(())
    }

    /// The tool folders, the operator policy and the Cedar files.
    fn sources(&self, config: &mut ServeConfig) {
        if !self.tools.is_empty() {
            config.tools = self.tools.clone();
        }
        if let Some(p) = &self.policy {
            config.policy = Some(p.clone());
        }
        if let Some(p) = &self.authorization {
            config.authorization.policies = Some(p.clone());
        }
        if let Some(p) = &self.authorization_schema {
            config.authorization.schema = Some(p.clone());
        }
    }

    /// The HTTP, MCP and metrics listeners and what each accepts.
    fn listeners(&self, config: &mut ServeConfig) -> Result<()> {
        if let Some(a) = self.listen {
            config.http.listen = a;
        }
        config.mcp = listener(&self.mcp_listen, config.mcp.take())?;
        if !self.http_accept.is_empty() {
            config.http.accept = Some(self.http_accept.clone());
        }
        if let (Some(mcp), false) = (&mut config.mcp, self.mcp_accept.is_empty()) {
            mcp.accept = Some(self.mcp_accept.clone());
        }
        config.metrics = listener(
            &self.metrics_listen,
            config.metrics.map(|listen| ListenerConfig {
                listen,
                accept: None,
            }),
        )?
        .map(|l| l.listen);
        Ok(())
    }

    /// Who callers are: the ALB's headers, bearer tokens, AgentCore Runtime.
    fn verifiers(&self, config: &mut ServeConfig) {
        if let Some(arn) = &self.alb_arn {
            let region = arn.split(':').nth(3).unwrap_or("us-east-1");
            config.identity.alb = Some(AlbConfig {
                signer_arn: arn.clone(),
                key_url: self.alb_key_url.clone().unwrap_or_else(|| {
                    format!("https://public-keys.auth.elb.{region}.amazonaws.com")
                }),
                issuer: self.alb_issuer.clone(),
                user_prefix: None,
            });
        }
        if let Some(url) = &self.jwt_discovery_url {
            config.identity.jwt_issuers.push(JwtIssuer {
                discovery_url: url.clone(),
                audiences: self.jwt_audience.clone(),
                user_prefix: None,
            });
        }
        config.identity.agentcore_runtime |= self.agentcore_runtime;
    }

    /// Where tools, compiled code and audit records are kept.
    fn storage(&self, config: &mut ServeConfig) {
        if let Some(p) = &self.store {
            config.store = Some(p.clone());
        }
        if let Some(p) = &self.watch {
            config.watch = Some(p.clone());
        }
        if let Some(p) = &self.compile_cache {
            config.compile_cache = Some(p.clone());
        }
        if let Some(k) = &self.audit_signing_key {
            config.audit.signing_key = Some(k.clone());
        }
        if let Some(a) = &self.audit {
            config.audit.sink = a.clone();
        }
    }

    /// The admin API, when a flag names its listener or key.
    fn admin(&self, config: &mut ServeConfig) {
        if self.admin_listen.is_none() && self.admin_key_sha256.is_none() {
            return;
        }
        let mut admin = config.admin.take().unwrap_or(airlock_server::AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            keys: Vec::new(),
            oidc: None,
            max_upload_kib: 32 << 10,
        });
        if let Some(a) = self.admin_listen {
            admin.listen = a;
        }
        if let Some(h) = &self.admin_key_sha256 {
            admin.keys.push(airlock_server::AdminKey {
                name: "admin".into(),
                sha256: h.clone(),
            });
        }
        config.admin = Some(admin);
    }
}

/// Serve until SIGTERM or Ctrl-C, then drain and return.
pub(crate) async fn serve(args: ServeArgs) -> Result<()> {
    let config = args.config()?;
    // The broker: the local identity service in local mode, else AgentCore
    // Identity by endpoint (`aws` or a URL).
    let identity = if config.local || args.identity.remote() {
        Some(args.identity.start(config.consent_group_of()?).await?)
    } else {
        None
    };
    let tokens = identity
        .as_ref()
        .map(|i| i.broker.clone() as Arc<dyn TokenSource>);
    let running = airlock_server::start(config, tokens).await?;
    println!(
        "{}",
        serde_json::json!({
            "http": running.http.to_string(),
            "mcp": running.mcp.map(|a| a.to_string()),
            "metrics": running.metrics.map(|a| a.to_string()),
            "admin": running.admin.map(|a| a.to_string()),
            "tools": running.tools,
        })
    );
    let stop = running.shutdown_token();
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = signal() => {}
    }
    tracing::info!("shutting down: no new connections; calls in flight finish");
    running.shutdown().await;
    drop(identity);
    Ok(())
}

pub(crate) async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
