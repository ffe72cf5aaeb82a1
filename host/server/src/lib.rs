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
pub mod audit;
mod authz;
mod calls;
mod config;
mod http;
mod inbound;
mod mcp;
mod metrics;
mod registry;
mod resource;
mod sessions;
pub mod signing;
pub mod store;
mod sync;
mod watch;

use std::net::SocketAddr;
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

/// The log filter `host serve` uses unless `AIRLOCK_LOG` says otherwise: the SDK's per-request
/// session lines (a stateless MCP request is a session) would outnumber the call records.
pub const DEFAULT_LOG_FILTER: &str = "info,rmcp=warn";
pub use config::{
    AdminConfig, AdminKey, AdminOidc, AuditConfig, AuthorizationConfig, ConfigError, IdentityMode,
    InboundConfig, ListenerConfig, ServeConfig, ServeLimits, SignaturesConfig, StoreLocation,
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
    /// A file could not be read or is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS's message.
        message: String,
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
            let key = audit::CheckpointKey::load(setting)
                .map_err(|e| StartError::Invalid(format!("audit.signing_key: {e}")))?;
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
    .map_err(|e| StartError::Invalid(format!("audit {}: {e}", config.sink)))
}

fn read(path: &std::path::Path, what: &str) -> Result<String, StartError> {
    std::fs::read_to_string(path)
        .map_err(|e| StartError::Invalid(format!("{what} {}: {e}", path.display())))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Listen {
            addr,
            message: e.to_string(),
        })
}

/// Load the tools and policies, bind the listeners and serve. `tokens`
/// brokers OAuth tokens (AgentCore Identity, or the local service).
pub async fn start(
    config: ServeConfig,
    tokens: Option<Arc<dyn TokenSource>>,
) -> Result<Running, StartError> {
    config.validate()?;
    let policy = match &config.policy {
        Some(path) => OperatorPolicy::from_toml(&read(path, "policy file")?)
            .map_err(|e| StartError::Invalid(format!("policy file {}: {e}", path.display())))?,
        None if config.local => OperatorPolicy::permissive(),
        None => OperatorPolicy::default(),
    };
    let authorization = match &config.authorization.policies {
        Some(path) => {
            let schema = match &config.authorization.schema {
                Some(s) => Some(read(s, "Cedar schema")?),
                None => None,
            };
            authz::Authorization::new(&read(path, "Cedar policies")?, schema.as_deref())
                .map_err(|e| StartError::Invalid(format!("{}: {e}", path.display())))?
        }
        None if config.local => authz::Authorization::permit_all(),
        None => {
            tracing::warn!(
                "no authorization policies: every call is refused (set authorization.policies)"
            );
            authz::Authorization::new("", None).map_err(StartError::Invalid)?
        }
    };
    let limits = config.limits;
    let mut builder = Runtime::builder()
        .max_concurrent_calls(limits.max_concurrent_calls)
        .strict_imports(config.strict_imports);
    if let Some(tokens) = &tokens {
        builder = builder.token_source(tokens.clone());
    }
    if let Some(dir) = &config.compile_cache {
        builder = builder.compile_cache(dir);
    }
    let runtime = builder
        .build()
        .map_err(|e| StartError::Invalid(format!("the wasm engine: {e:#}")))?;
    let store: Option<Arc<dyn store::ToolStore>> = match &config.store {
        Some(StoreLocation::Folder(path)) => Some(Arc::new(
            store::FolderStore::open_with_grace(path, config.orphan_grace_secs)
                .map_err(|e| StartError::Invalid(e.to_string()))?,
        )),
        Some(StoreLocation::S3(at)) => Some(Arc::new(
            store::s3::S3Store::open(at.clone(), &config.s3)
                .await
                .map_err(|e| StartError::Invalid(e.to_string()))?
                .with_grace(config.orphan_grace_secs),
        )),
        None => None,
    };
    // Compiling is CPU-bound: off the async workers.
    let (runtime, registry) = {
        let (folders, store, policy) = (config.tools.clone(), store.clone(), policy.clone());
        tokio::task::spawn_blocking(move || {
            let registry = registry::Registry::load(&runtime, &folders, store.as_deref(), &policy);
            (runtime, registry)
        })
        .await
        .map_err(|e| StartError::Invalid(format!("loading the tools stopped: {e}")))?
    };
    let (registry, skipped) = registry.map_err(StartError::Invalid)?;
    let audit = open_audit(&config.audit)?;
    let metrics = Arc::new(metrics::Metrics::new(limits.max_concurrent_calls));
    let calls = Arc::new(Calls::new(
        runtime,
        registry.clone(),
        authorization,
        metrics.clone(),
        limits,
        audit.clone(),
    ));
    let facade = match &config.oauth {
        Some(oauth) => Some(Arc::new(
            airlock_oauth::AuthorizationServer::new(
                oauth.clone(),
                config.public_url.as_deref().unwrap_or_default(),
                audit.clone(),
            )
            .map_err(|e| StartError::Invalid(e.to_string()))?,
        )),
        None => None,
    };
    let resource = match &config.public_url {
        Some(url) => {
            let servers = if config.authorization_servers.is_empty() {
                facade.iter().map(|f| f.issuer().to_string()).collect()
            } else {
                config.authorization_servers.clone()
            };
            Some(Arc::new(
                resource::Resource::new(url, servers).map_err(StartError::Invalid)?,
            ))
        }
        None => None,
    };
    let known = match (&facade, &resource) {
        (Some(f), Some(r)) => Some(airlock_verify::KnownIssuer {
            issuer: f.issuer().to_string(),
            audience: r.url().to_string(),
            keys: f.jwks(),
            user_prefix: f.user_prefix().map(str::to_string),
        }),
        _ => None,
    };
    let inbound = Arc::new(Inbound::new(&config.identity, known).map_err(StartError::Invalid)?);
    let origins = resource::Origins {
        local: config.local,
        origins: resource
            .iter()
            .map(|r| r.origin())
            .chain(
                config
                    .allowed_origins
                    .iter()
                    .map(|o| o.trim_end_matches('/').to_string()),
            )
            .collect(),
        hosts: config
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    };
    // What anyone may read: the resource's metadata and the façade's endpoints.
    let public = {
        let mut router = Router::new();
        if let Some(r) = &resource {
            router = router.merge(r.clone().router());
        }
        if let Some(f) = &facade {
            router = router.merge(f.clone().router());
        }
        // Forms and registrations are small; anyone may send them.
        router.layer(DefaultBodyLimit::max(64 << 10))
    };
    let guarded = |router: Router| {
        router.layer(axum::middleware::from_fn_with_state(
            origins.clone(),
            resource::guard,
        ))
    };
    let shutdown = CancellationToken::new();
    let health = Arc::new(Health::new());
    // Stored tools that could not be loaded: named on /ping and in the trail.
    if store.is_some() {
        for (tool, (digest, reason)) in &skipped {
            audit.record(audit::Record::Sync {
                tool: tool.clone(),
                digest: digest.clone(),
                served: false,
                reason: Some(reason.clone()),
            });
        }
        let refused: std::collections::BTreeMap<&String, &String> =
            skipped.iter().map(|(t, (_, why))| (t, why)).collect();
        health.set_store(serde_json::json!({
            "reachable": true,
            "last_read": audit::unix_now(),
            "error": null,
            "refused": refused,
        }));
    }

    let gate = |listener: &ListenerConfig| -> Result<Gate, StartError> {
        let accept = listener
            .accept
            .clone()
            .unwrap_or_else(|| inbound.configured());
        if let Some(mode) = accept.iter().find(|m| !inbound.configured().contains(m)) {
            return Err(StartError::Invalid(format!(
                "the listener on {} accepts {mode:?}, which [identity] does not configure",
                listener.listen
            )));
        }
        let resource = accept
            .contains(&config::IdentityMode::Bearer)
            .then(|| resource.clone())
            .flatten();
        Ok(Gate {
            inbound: inbound.clone(),
            accept: accept.into(),
            resource,
            max_body: limits.max_body_kib << 10,
        })
    };
    let session_manager = Arc::new(LocalSessionManager::default());
    let mcp_service = {
        let calls = calls.clone();
        let mut mcp_config = StreamableHttpServerConfig::default()
            .with_cancellation_token(shutdown.child_token())
            .with_max_request_body_bytes(limits.max_body_kib << 10)
            // A plain JSON answer when nothing is streamed; rmcp switches to SSE by itself
            // when a call sends a request (consent) before its result.
            .with_json_response(true);
        if !config.local {
            // Behind a load balancer the Host varies; callers are verified instead.
            mcp_config = mcp_config.disable_allowed_hosts();
        }
        StreamableHttpService::new(
            move || {
                Ok(mcp::Mcp {
                    calls: calls.clone(),
                })
            },
            session_manager.clone(),
            mcp_config,
        )
    };
    let sessions = Arc::new(sessions::Sessions::new(
        session_manager,
        limits.max_sessions,
        limits.max_sessions_per_user,
        limits.mcp_requests_per_minute,
    ));
    // MCP after authentication: each request counts, and sessions are capped.
    let mcp_router = || {
        Router::new()
            .nest_service("/mcp", mcp_service.clone())
            .layer(axum::middleware::from_fn_with_state(sessions.clone(), sessions::guard))
    };
    let authenticated = |router: Router, gate: Gate| {
        router.layer(axum::middleware::from_fn_with_state(
            gate,
            inbound::authenticate,
        ))
    };
    let mut tasks = tokio::task::JoinSet::new();
    let listen = airlock_listen::Limits {
        header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
        max_connections: limits.max_connections,
    };
    let serve =
        |tasks: &mut tokio::task::JoinSet<()>, listener: tokio::net::TcpListener, app: Router| {
            let stop = shutdown.clone();
            tasks.spawn(airlock_listen::serve(listener, app, listen, async move {
                stop.cancelled_owned().await
            }));
        };

    let http_app = authenticated(
        Router::new()
            .route("/invocations", post(http::invocations))
            .with_state(calls.clone())
            .merge(mcp_router()),
        gate(&config.http)?,
    )
    .route(
        "/ping",
        get(http::ping).with_state((calls.clone(), health.clone())),
    )
    .merge(public.clone())
    .layer(DefaultBodyLimit::max(limits.max_body_kib << 10));
    let http_app = guarded(http_app).layer(axum::middleware::from_fn(http::request_id));
    let http_listener = bind(config.http.listen).await?;
    let http_addr = http_listener.local_addr().map_err(|e| StartError::Listen {
        addr: config.http.listen,
        message: e.to_string(),
    })?;

    let mut mcp_addr = None;
    let mut mcp_bound = None;
    if let Some(mcp) = &config.mcp {
        let app = authenticated(mcp_router(), gate(mcp)?)
            .route(
                "/ping",
                get(http::ping).with_state((calls.clone(), health.clone())),
            )
            .merge(public.clone());
        let app = guarded(app).layer(axum::middleware::from_fn(http::request_id));
        let listener = bind(mcp.listen).await?;
        mcp_addr = listener.local_addr().ok();
        mcp_bound = Some((listener, app));
    }
    let mut metrics_addr = None;
    let mut metrics_bound = None;
    if let Some(addr) = config.metrics {
        let m = metrics.clone();
        let app = Router::new().route(
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
        );
        let listener = bind(addr).await?;
        metrics_addr = listener.local_addr().ok();
        metrics_bound = Some((listener, app));
    }
    let trusted = match &config.signatures.trusted_keys {
        Some(path) => signing::Trusted::parse(&read(path, "trusted keys file")?)
            .map_err(|e| StartError::Invalid(format!("{}: {e}", path.display())))?,
        None => signing::Trusted::default(),
    };
    // Uploads and the watched folder: one set of checks, one store.
    let intake = store.as_ref().map(|store| {
        Arc::new(admin::Admin {
            calls: calls.clone(),
            policy: Arc::new(policy.clone()),
            store: store.clone(),
            audit: audit.clone(),
            keys: config
                .admin
                .as_ref()
                .map(|a| a.keys.clone())
                .unwrap_or_default(),
            oidc: config.admin.as_ref().and_then(|a| a.oidc.clone()).map(|o| {
                let issuer = airlock_verify::JwtIssuer {
                    discovery_url: o.discovery_url,
                    audiences: o.audiences,
                    user_prefix: None,
                };
                (airlock_verify::JwtVerifier::new(vec![issuer]), o.group)
            }),
            max_upload_kib: config
                .admin
                .as_ref()
                .map_or(config::DEFAULT_MAX_UPLOAD_KIB, |a| a.max_upload_kib),
            trusted: trusted.clone(),
            require_signature: config.signatures.required,
            allow_signer_change: config.signatures.allow_signer_change,
            tokens: tokens.clone(),
            changing: tokio::sync::Mutex::new(()),
        })
    });
    let mut admin_addr = None;
    if let (Some(admin), Some(intake)) = (&config.admin, &intake) {
        let app = guarded(admin::router(intake.clone()))
            .layer(axum::middleware::from_fn(http::request_id));
        let listener = bind(admin.listen).await?;
        admin_addr = listener.local_addr().ok();
        serve(&mut tasks, listener, app);
    }
    if let Some(intake) = &intake
        && config.store_poll_secs > 0
    {
        sync::start(
            intake.clone(),
            Duration::from_secs(config.store_poll_secs),
            health.clone(),
            shutdown.clone(),
            &mut tasks,
        );
    }
    if let (Some(folder), Some(intake)) = (&config.watch, &intake) {
        watch::start(intake.clone(), folder.clone(), shutdown.clone(), &mut tasks)
            .await
            .map_err(StartError::Invalid)?;
    }
    serve(&mut tasks, http_listener, http_app);
    if let Some((listener, app)) = mcp_bound {
        serve(&mut tasks, listener, app);
    }
    if let Some((listener, app)) = metrics_bound {
        serve(&mut tasks, listener, app);
    }
    tracing::info!(http = %http_addr, mcp = ?mcp_addr, metrics = ?metrics_addr, tools = registry.len(), "serving");
    Ok(Running {
        http: http_addr,
        mcp: mcp_addr,
        metrics: metrics_addr,
        admin: admin_addr,
        tools: registry.len(),
        shutdown,
        tasks,
        drain: Duration::from_secs(limits.drain_secs),
        audit,
    })
}
