//! `host run --user`: the broker for a local call. By default it starts the
//! local identity service in process and serves a local session binding page;
//! with `--identity-endpoint` it uses a remote AgentCore Identity instead.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_identity::{
    Broker, BrokerConfig, BrokerError, ClientConfig, Consent, Credential, IdentityClient,
    Operation, UserRef,
};
use airlock_identity_local::{CallerConfig, LocalConfig, LocalIdentity, WorkloadConfig};
use airlock_policy::OAuthGrant;
use airlock_verify::VerifiedUser;
use anyhow::{Context, Result, bail};

/// Default local config location.
const DEFAULT_CONFIG: &str = ".airlock/identity.toml";
const LOCAL_WORKLOAD: &str = "airlock-local";

#[derive(clap::Args)]
pub(crate) struct IdentityArgs {
    /// Run the call for this user. Tools with OAuth grants need one; in local
    /// mode the user is whoever runs the command.
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// The local identity service's config (TOML; default .airlock/identity.toml if present).
    #[arg(long, env = "AIRLOCK_IDENTITY_CONFIG")]
    identity_config: Option<PathBuf>,
    /// Use this AgentCore Identity endpoint instead of the local service
    /// (`aws` for AWS's own; region and credentials from the AWS chain).
    #[arg(long, value_name = "URL|aws", env = "AIRLOCK_IDENTITY_ENDPOINT")]
    identity_endpoint: Option<String>,
    /// The workload identity (default: the config's first, or `airlock-local`).
    #[arg(long, env = "AIRLOCK_WORKLOAD")]
    workload: Option<String>,
    /// The session binding URL consent returns to (remote mode; local mode serves its own).
    #[arg(long, env = "AIRLOCK_RETURN_URL")]
    return_url: Option<String>,
    /// Where the local session binding page listens.
    #[arg(long, default_value = "127.0.0.1:8791")]
    binding_addr: SocketAddr,
    /// When consent is needed, wait up to SECS for it, then call again.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "300")]
    pub(crate) wait: Option<u64>,
}

/// What runs for the length of the command.
pub(crate) struct Identity {
    pub(crate) broker: Arc<Broker>,
    _local: Option<LocalIdentity>,
    _binding: Option<tokio::task::JoinHandle<()>>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random source");
    hex::encode(b)
}

fn client(endpoint: &str, akid: &str, secret: &str) -> IdentityClient {
    IdentityClient::from_config(&ClientConfig::fixed(endpoint, akid, secret))
}

impl IdentityArgs {
    /// Whether a remote AgentCore Identity endpoint is named.
    pub(crate) fn remote(&self) -> bool {
        self.identity_endpoint.is_some()
    }

    /// Start the broker (and the local service when no endpoint is named).
    /// `consent_groups`: tool -> the group whose consent it shares.
    pub(crate) async fn start(&self, consent_groups: BTreeMap<String, String>) -> Result<Identity> {
        match &self.identity_endpoint {
            Some(endpoint) => self.start_remote(endpoint, consent_groups).await,
            None => self.start_local(consent_groups).await,
        }
    }

    /// A broker over a remote AgentCore Identity (`aws` or a URL).
    async fn start_remote(
        &self,
        endpoint: &str,
        consent_groups: BTreeMap<String, String>,
    ) -> Result<Identity> {
        let config = ClientConfig {
            endpoint_url: (endpoint != "aws").then(|| endpoint.to_string()),
            ..Default::default()
        };
        let client = IdentityClient::from_env(&config).await;
        let workload = self
            .workload
            .clone()
            .context("--identity-endpoint needs --workload (the workload identity's name)")?;
        let mut broker_config = BrokerConfig::new(workload, self.return_url.clone());
        broker_config.consent_groups = consent_groups;
        let broker = Broker::new(client, broker_config);
        Ok(Identity {
            broker: Arc::new(broker),
            _local: None,
            _binding: None,
        })
    }

    /// The local identity service in process, its broker, and (with `--user`)
    /// the session binding page.
    async fn start_local(&self, consent_groups: BTreeMap<String, String>) -> Result<Identity> {
        let (path, mut config) = self.local_config()?;
        let (host_key, binder_key) = add_own_callers(&mut config);
        let return_url = format!("http://{}/binding", self.binding_addr);
        let workload = self.local_workload(&mut config, &return_url);
        let local = LocalIdentity::start(config)
            .await
            .map_err(|e| match &path {
                Some(p) => anyhow::anyhow!("{}: {e}", p.display()),
                None => anyhow::anyhow!("{e}"),
            })?;
        let endpoint = local.endpoint_url();
        let mut broker_config = BrokerConfig::new(workload, Some(return_url));
        broker_config.consent_groups = consent_groups;
        let broker = Broker::new(client(&endpoint, "AKIDHOSTRUN", &host_key), broker_config);
        let binding = match &self.user {
            Some(user) => Some(
                serve_binding(
                    self.binding_addr,
                    client(&endpoint, "AKIDHOSTBIND", &binder_key),
                    user.clone(),
                )
                .await?,
            ),
            None => None,
        };
        Ok(Identity {
            broker: Arc::new(broker),
            _local: Some(local),
            _binding: binding,
        })
    }

    /// The local service's config file (if any, for error messages) and its settings.
    fn local_config(&self) -> Result<(Option<PathBuf>, LocalConfig)> {
        let path = self.identity_config.clone().or_else(|| {
            let p = PathBuf::from(DEFAULT_CONFIG);
            p.exists().then_some(p)
        });
        let config = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                LocalConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => LocalConfig::parse("").expect("defaults parse"),
        };
        Ok((path, config))
    }

    /// The workload to act as, allowed to return to `return_url`.
    fn local_workload(&self, config: &mut LocalConfig, return_url: &str) -> String {
        let workload = match (&self.workload, config.workloads.first()) {
            (Some(w), _) => w.clone(),
            (None, Some(w)) => w.name.clone(),
            (None, None) => LOCAL_WORKLOAD.to_string(),
        };
        match config.workloads.iter_mut().find(|w| w.name == workload) {
            Some(w) => {
                if !w.allowed_return_urls.iter().any(|u| u == return_url) {
                    w.allowed_return_urls.push(return_url.to_string());
                }
            }
            None => config.workloads.push(WorkloadConfig {
                name: workload.clone(),
                allowed_return_urls: vec![return_url.to_string()],
                jwt_issuers: Vec::new(),
            }),
        }
        workload
    }
}

/// Adds this process's own callers and returns their secrets (host, binder).
fn add_own_callers(config: &mut LocalConfig) -> (String, String) {
    // Fresh secrets that never leave this process. The host may do
    // everything but bind sessions; the binding page only that.
    let (host_key, binder_key) = (random_hex(24), random_hex(24));
    config.callers.push(CallerConfig {
        access_key_id: "AKIDHOSTRUN".into(),
        secret_access_key: host_key.clone(),
        operations: Some(
            Operation::ALL
                .iter()
                .filter(|o| **o != Operation::CompleteResourceTokenAuth)
                .map(|o| o.name().to_string())
                .collect(),
        ),
    });
    config.callers.push(CallerConfig {
        access_key_id: "AKIDHOSTBIND".into(),
        secret_access_key: binder_key.clone(),
        operations: Some(["CompleteResourceTokenAuth".to_string()].into()),
    });
    (host_key, binder_key)
}

/// The local stand-in for the session binding service: in `host run` the
/// signed-in user is the one named by `--user`.
async fn serve_binding(
    addr: SocketAddr,
    client: IdentityClient,
    user: String,
) -> Result<tokio::task::JoinHandle<()>> {
    use axum::extract::Query;
    use axum::response::Html;
    #[derive(serde::Deserialize)]
    struct Q {
        session_id: String,
        /// The tool the consent is for, as the host sent it (`customState`).
        #[serde(default)]
        state: Option<String>,
    }
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("the local session binding page cannot listen on {addr} (see --binding-addr)")
    })?;
    let app = axum::Router::new().route(
        "/binding",
        axum::routing::get(move |Query(q): Query<Q>| {
            let client = client.clone();
            let user = user.clone();
            async move {
                match client
                    .complete_session(&q.session_id, &UserRef::UserId(user))
                    .await
                {
                    Ok(()) => Html(match &q.state {
                        Some(tool) => format!(
                            "<!doctype html><p>Authorized: <code>{}</code> may now act for you. Return to your terminal.",
                            escape(tool)
                        ),
                        None => "<!doctype html><p>Authorized. Return to your terminal.".into(),
                    }),
                    Err(e) => Html(format!(
                        "<!doctype html><p>Authorization failed: {}",
                        escape(&e.to_string())
                    )),
                }
            }
        }),
    );
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Poll the pending session until the token is there, it failed, or time is up.
pub(crate) async fn wait_for_consent(
    broker: &Broker,
    user: &VerifiedUser,
    grant: &OAuthGrant,
    consent: &Consent,
    wait: Duration,
) -> Result<()> {
    let started = Instant::now();
    loop {
        match broker
            .poll(&consent.tool, user, grant, &consent.session_uri)
            .await
        {
            Ok(Credential::Bearer(_)) => return Ok(()),
            Ok(Credential::Consent(_)) => bail!("the identity service asked for consent again"),
            Err(BrokerError::SessionPending { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if started.elapsed() >= wait {
            bail!(
                "no consent within {} s; run again when the user has consented",
                wait.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
