//! Airlock's agent endpoint. An agent sends a tool call for a signed-in
//! user; the host verifies who the user is (the ALB's header, a bearer JWT,
//! or a named user in local mode), decides whether that user may call that
//! tool (Cedar), runs it with the user's brokered tokens, and answers with
//! the result, a tool error, or the consent the user owes.
//!
//! - The AgentCore runtime contract on the HTTP listener (8080):
//!   `POST /invocations`, `GET /ping`, and MCP at `/mcp`.
//! - MCP (streamable HTTP, `rmcp`) on the runtime's MCP listener (8000).
//! - Prometheus metrics at `/metrics` on their own listener (9090).

mod admin;
mod build;
pub mod audit;
mod authz;
mod logs;
mod calls;
mod config;
mod http;
mod inbound;
mod intake;
mod mcp;
mod metrics;
mod registry;
mod request_id;
mod resource;
mod sessions;
pub mod signing;
pub mod store;
mod sync;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airlock_credential::TokenSource;
use airlock_policy::OperatorPolicy;
use airlock_runtime::Runtime;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

pub use airlock_oauth::OAuthConfig;
pub use authz::DEFAULT_SCHEMA;
pub use build::build;
pub use logs::json_logs;

/// The log filter `host serve` uses unless `AIRLOCK_LOG` says otherwise: the SDK's per-request
/// session lines (a stateless MCP request is a session) would outnumber the call records.
pub const DEFAULT_LOG_FILTER: &str = "info,rmcp=warn";
pub use config::{
    AdminConfig, AdminKey, AdminOidc, AuditConfig, AuthorizationConfig, ConfigError, IdentityMode,
    InboundConfig, ListenerConfig, ServeConfig, ServeLimits, SignaturesConfig, StoreLocation,
    StoreLocationError,
};

use calls::Calls;
use http::Health;
use inbound::{Gate, Inbound};

/// Why the server did not start. Each names the setting or file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file the configuration names could not be read.
    #[error("{what} {}: {error}", path.display())]
    Read {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// A file was read and is not valid: the operator policy, the Cedar
    /// policies or schema, the trusted keys.
    #[error("{what} {}: {error}", path.display())]
    Invalid {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong and how to fix it.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Without policies, the deny-all set could not be built.
    #[error(transparent)]
    Authorization(authz::AuthorizationError),
    /// The audit trail's signing key could not be loaded.
    #[error("audit.signing_key: {0}")]
    AuditKey(airlock_audit::LoadCheckpointKeyError),
    /// The audit trail could not be opened.
    #[error("audit {sink}: {error}")]
    Audit {
        /// The sink the configuration names.
        sink: String,
        /// Why it could not be opened.
        error: std::io::Error,
    },
    /// The wasm engine could not be built.
    #[error("the wasm engine: {0:#}")]
    Engine(airlock_runtime::EngineError),
    /// The tool store could not be opened.
    #[error(transparent)]
    Store(store::StoreError),
    /// The tools could not be loaded.
    #[error(transparent)]
    Tools(registry::RegistryError),
    /// Loading the tools stopped before it finished.
    #[error("loading the tools stopped: {0}")]
    ToolsStopped(tokio::task::JoinError),
    /// The authorization server façade could not start.
    #[error(transparent)]
    AuthorizationServer(#[from] airlock_oauth::StartError),
    /// `public_url` or the authorization servers are not usable.
    #[error(transparent)]
    Resource(resource::ResourceError),
    /// `[identity]` could not be set up.
    #[error(transparent)]
    Identity(inbound::InboundConfigError),
    /// A listener accepts callers `[identity]` does not configure.
    #[error("the listener on {listen} accepts {mode:?}, which [identity] does not configure")]
    Accepts {
        /// The listener's address.
        listen: SocketAddr,
        /// The mode it accepts.
        mode: config::IdentityMode,
    },
    /// The watched folder could not be watched.
    #[error(transparent)]
    Watch(watch::WatchError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS's error.
        error: std::io::Error,
    },
}

/// A running server.
pub struct Running {
    /// Where the HTTP listener (`/invocations`, `/ping`, `/mcp`) is.
    pub http: SocketAddr,
    /// Where the MCP listener is, if any.
    pub mcp: Option<SocketAddr>,
    /// Where the metrics listener is, if any.
    pub metrics: Option<SocketAddr>,
    /// Where the admin listener is, if any.
    pub admin: Option<SocketAddr>,
    /// How many tools are served.
    pub tools: usize,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    drain: Duration,
    audit: audit::Audit,
}

impl Running {
    /// Stop accepting connections, let calls in flight finish (within the
    /// drain bound), and return.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(self.drain, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                secs = self.drain.as_secs(),
                "calls still running after the drain bound; stopping them"
            );
            self.tasks.abort_all();
        }
        // The trail's last records are signed before the host goes.
        self.audit.checkpoint();
    }

    /// A token that, once cancelled, starts the shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

fn open_audit(config: &AuditConfig) -> Result<audit::Audit, StartError> {
    let signing = match &config.signing_key {
        Some(setting) => {
            let key = audit::CheckpointKey::load(setting).map_err(StartError::AuditKey)?;
            Some((key, config.checkpoint_every))
        }
        None => None,
    };
    audit::Audit::open_signed(
        &config.sink,
        config.rotate_mib << 20,
        "host",
        env!("CARGO_PKG_VERSION"),
        signing,
    )
    .map(|trail| trail.with_capacity(config.backlog))
    .map_err(|error| StartError::Audit {
        sink: config.sink.clone(),
        error,
    })
}

fn read(path: &std::path::Path, what: &'static str) -> Result<String, StartError> {
    std::fs::read_to_string(path).map_err(|error| StartError::Read {
        what,
        path: path.to_path_buf(),
        error,
    })
}

/// The error for a file at `path` that was read and is not valid.
fn invalid<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(E) -> StartError {
    move |error| StartError::Invalid {
        what,
        path: path.to_path_buf(),
        error: Box::new(error),
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Listen { addr, error })
}

/// Load the tools and policies, bind the listeners and serve. `tokens`
/// brokers OAuth tokens (AgentCore Identity, or the local service).
pub async fn start(
    config: ServeConfig,
    tokens: Option<Arc<dyn TokenSource>>,
) -> Result<Running, StartError> {
    build(config, tokens).await?.run().await
}

/// Everything `host serve` serves, built from its config: the policies
/// parsed, the store opened, the tools loaded; no listener bound. Each
/// listener's router comes from its method, testable without sockets.
pub struct App {
    config: ServeConfig,
    calls: Arc<Calls>,
    metrics: Arc<metrics::Metrics>,
    health: Arc<Health>,
    audit: audit::Audit,
    inbound: Arc<Inbound>,
    resource: Option<Arc<resource::Resource>>,
    /// What anyone may read: the resource's metadata and the façade's endpoints.
    public: Router,
    origins: resource::Origins,
    sessions: Arc<sessions::Sessions>,
    mcp: StreamableHttpService<mcp::Mcp, LocalSessionManager>,
    /// Uploads, the watched folder and the store's changes: one set of checks.
    intake: Option<Arc<intake::Intake>>,
    shutdown: CancellationToken,
}

impl App {
    /// The HTTP listener's router: `/invocations`, `/mcp` and `/ping`, and
    /// the public OAuth paths.
    pub fn http_router(&self) -> Result<Router, StartError> {
        let limits = self.config.limits;
        let app = self
            .authenticated(
                Router::new()
                    .route("/invocations", post(http::invocations))
                    .with_state(self.calls.clone())
                    .merge(self.mcp_router()),
                &self.config.http,
            )?
            .merge(self.ping())
            .merge(self.public.clone())
            .layer(DefaultBodyLimit::max(limits.max_body_kib << 10));
        Ok(self.guarded(app))
    }

    /// The MCP listener's router, if one is configured.
    pub fn mcp_listener_router(&self) -> Result<Option<Router>, StartError> {
        let Some(mcp) = &self.config.mcp else {
            return Ok(None);
        };
        let app = self
            .authenticated(self.mcp_router(), mcp)?
            .merge(self.ping())
            .merge(self.public.clone());
        Ok(Some(self.guarded(app)))
    }

    /// The metrics listener's router, if one is configured.
    pub fn metrics_router(&self) -> Option<Router> {
        self.config.metrics?;
        let m = self.metrics.clone();
        Some(Router::new().route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                        m.render(),
                    )
                }
            }),
        ))
    }

    /// The admin listener's router, if one is configured (it needs a store).
    pub fn admin_router(&self) -> Option<Router> {
        let config = self.config.admin.as_ref()?;
        let intake = self.intake.as_ref()?;
        let oidc = config.oidc.clone().map(|o| {
            let issuer = airlock_verify::JwtIssuer {
                discovery_url: o.discovery_url,
                audiences: o.audiences,
                user_prefix: None,
            };
            (airlock_verify::JwtVerifier::new(vec![issuer]), o.group)
        });
        Some(self.guarded(admin::router(Arc::new(admin::Admin {
            intake: intake.clone(),
            keys: config.keys.clone(),
            oidc,
        }))))
    }

    /// Bind the configured listeners, start the store's poll and the
    /// watched folder, and serve until [`Running::shutdown`].
    pub async fn run(self) -> Result<Running, StartError> {
        let limits = self.config.limits;
        let mut tasks = tokio::task::JoinSet::new();
        let listen = airlock_listen::Limits {
            header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
            max_connections: limits.max_connections,
        };
        // Every router is built before anything is bound or spawned.
        let http_app = self.http_router()?;
        let mcp_app = self.mcp_listener_router()?;
        let metrics_app = self.metrics_router();
        let admin_app = self.admin_router();
        let mut bound = Vec::new();
        let http = bind(self.config.http.listen).await?;
        let http_addr = http.local_addr().map_err(|error| StartError::Listen {
            addr: self.config.http.listen,
            error,
        })?;
        bound.push((http, http_app));
        let mut addr_of = async |at: Option<SocketAddr>, app: Option<Router>| {
            let (Some(at), Some(app)) = (at, app) else {
                return Ok(None);
            };
            let listener = bind(at).await?;
            let addr = listener.local_addr().ok();
            bound.push((listener, app));
            Ok::<_, StartError>(addr)
        };
        let mcp_addr = addr_of(self.config.mcp.as_ref().map(|m| m.listen), mcp_app).await?;
        let metrics_addr = addr_of(self.config.metrics, metrics_app).await?;
        let admin_addr = addr_of(self.config.admin.as_ref().map(|a| a.listen), admin_app).await?;
        if let Some(intake) = &self.intake
            && self.config.store_poll_secs > 0
        {
            sync::start(
                intake.clone(),
                Duration::from_secs(self.config.store_poll_secs),
                self.health.clone(),
                self.shutdown.clone(),
                &mut tasks,
            );
        }
        if let (Some(folder), Some(intake)) = (&self.config.watch, &self.intake) {
            watch::start(intake.clone(), folder.clone(), self.shutdown.clone(), &mut tasks)
                .await
                .map_err(StartError::Watch)?;
        }
        for (listener, app) in bound {
            let stop = self.shutdown.clone();
            let app = app.layer(axum::middleware::from_fn(request_id::request_id));
            tasks.spawn(airlock_listen::serve(listener, app, listen, async move {
                stop.cancelled_owned().await
            }));
        }
        let tools = self.calls.registry.len();
        tracing::info!(http = %http_addr, mcp = ?mcp_addr, metrics = ?metrics_addr, tools, "serving");
        Ok(Running {
            http: http_addr,
            mcp: mcp_addr,
            metrics: metrics_addr,
            admin: admin_addr,
            tools,
            shutdown: self.shutdown,
            tasks,
            drain: Duration::from_secs(limits.drain_secs),
            audit: self.audit,
        })
    }

    /// `/ping`, for any caller.
    fn ping(&self) -> Router {
        Router::new().route(
            "/ping",
            get(http::ping).with_state((self.calls.clone(), self.health.clone())),
        )
    }

    /// MCP after authentication: each request counts, and sessions are capped.
    fn mcp_router(&self) -> Router {
        Router::new()
            .nest_service("/mcp", self.mcp.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.sessions.clone(),
                sessions::guard,
            ))
    }

    /// Host and Origin checked first, on every listener but metrics.
    fn guarded(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            self.origins.clone(),
            resource::guard,
        ))
    }

    /// `router` for callers `listener` accepts, verified.
    fn authenticated(&self, router: Router, listener: &ListenerConfig) -> Result<Router, StartError> {
        let accept = listener
            .accept
            .clone()
            .unwrap_or_else(|| self.inbound.configured());
        if let Some(mode) = accept.iter().find(|m| !self.inbound.configured().contains(m)) {
            return Err(StartError::Accepts {
                listen: listener.listen,
                mode: *mode,
            });
        }
        let resource = accept
            .contains(&config::IdentityMode::Bearer)
            .then(|| self.resource.clone())
            .flatten();
        let gate = Gate {
            inbound: self.inbound.clone(),
            accept: accept.into(),
            resource,
            max_body: self.config.limits.max_body_kib << 10,
        };
        Ok(router.layer(axum::middleware::from_fn_with_state(
            gate,
            inbound::authenticate,
        )))
    }
}
