//! From a config to an [`App`]: each step reads what it must and returns
//! data or a typed [`StartError`]; nothing is bound.

use super::*;

/// Read what `config` names and build the [`App`]; binds nothing.
pub async fn build(
    config: ServeConfig,
    tokens: Option<Arc<dyn TokenSource>>,
) -> Result<App, StartError> {
    config.validate()?;
    let policy = operator_policy(&config)?;
    let authorization = authorization(&config)?;
    let trusted = trusted_keys(&config)?;
    let runtime = runtime(&config, tokens.as_ref())?;
    let store = open_store(&config).await?;
    let (runtime, registry, skipped) = load_tools(runtime, &config, &store, &policy).await?;
    let audit = open_audit(&config.audit)?;
    let limits = config.limits;
    let metrics = Arc::new(metrics::Metrics::new(limits.max_concurrent_calls));
    let calls = Arc::new(Calls::new(
        runtime,
        registry,
        authorization,
        metrics.clone(),
        limits,
        audit.clone(),
    ));
    let facade = match &config.oauth {
        Some(oauth) => Some(Arc::new(airlock_oauth::AuthorizationServer::new(
            oauth.clone(),
            config.public_url.as_deref().unwrap_or_default(),
            audit.clone(),
        )?)),
        None => None,
    };
    let resource = resource(&config, facade.as_deref())?;
    let known = known_issuer(facade.as_deref(), resource.as_deref());
    let inbound = Arc::new(Inbound::new(&config.identity, known).map_err(StartError::Identity)?);
    let health = Arc::new(Health::new());
    if store.is_some() {
        report_skipped(&audit, &health, &skipped);
    }
    let shutdown = CancellationToken::new();
    let session_manager = Arc::new(LocalSessionManager::default());
    let mcp = mcp_service(&config, &calls, session_manager.clone(), &shutdown);
    let sessions = Arc::new(sessions::Sessions::new(
        session_manager,
        limits.max_sessions,
        limits.max_sessions_per_user,
        limits.mcp_requests_per_minute,
    ));
    let intake = store.map(|store| {
        Arc::new(intake::Intake {
            calls: calls.clone(),
            policy: Arc::new(policy),
            store,
            audit: audit.clone(),
            max_upload_kib: config
                .admin
                .as_ref()
                .map_or(config::DEFAULT_MAX_UPLOAD_KIB, |a| a.max_upload_kib),
            trusted,
            require_signature: config.signatures.required,
            allow_signer_change: config.signatures.allow_signer_change,
            tokens,
            changing: tokio::sync::Mutex::new(()),
        })
    });
    Ok(App {
        origins: origins(&config, resource.as_deref()),
        public: public_router(resource.as_ref(), facade.as_ref()),
        config,
        calls,
        metrics,
        health,
        audit,
        inbound,
        resource,
        sessions,
        mcp,
        intake,
        shutdown,
    })
}

/// The operator policy: the file, or in local mode anything goes, or nothing.
fn operator_policy(config: &ServeConfig) -> Result<OperatorPolicy, StartError> {
    Ok(match &config.policy {
        Some(path) => OperatorPolicy::from_toml(&read(path, "policy file")?)
            .map_err(invalid("policy file", path))?,
        None if config.local => OperatorPolicy::permissive(),
        None => OperatorPolicy::default(),
    })
}

/// The Cedar policies and schema; without them, local mode permits every
/// call and any other mode refuses every call.
fn authorization(config: &ServeConfig) -> Result<authz::Authorization, StartError> {
    match &config.authorization.policies {
        Some(path) => {
            let schema = match &config.authorization.schema {
                Some(s) => Some(read(s, "Cedar schema")?),
                None => None,
            };
            authz::Authorization::new(&read(path, "Cedar policies")?, schema.as_deref())
                .map_err(invalid("Cedar policies", path))
        }
        None if config.local => Ok(authz::Authorization::permit_all()),
        None => {
            tracing::warn!(
                "no authorization policies: every call is refused (set authorization.policies)"
            );
            authz::Authorization::new("", None).map_err(StartError::Authorization)
        }
    }
}

/// Whose signatures uploads may carry.
fn trusted_keys(config: &ServeConfig) -> Result<signing::Trusted, StartError> {
    match &config.signatures.trusted_keys {
        Some(path) => signing::Trusted::parse(&read(path, "trusted keys file")?)
            .map_err(invalid("trusted keys file", path)),
        None => Ok(signing::Trusted::default()),
    }
}

fn runtime(
    config: &ServeConfig,
    tokens: Option<&Arc<dyn TokenSource>>,
) -> Result<Runtime, StartError> {
    let mut builder = Runtime::builder()
        .max_concurrent_calls(config.limits.max_concurrent_calls)
        .strict_imports(config.strict_imports);
    if let Some(tokens) = tokens {
        builder = builder.token_source(tokens.clone());
    }
    if let Some(dir) = &config.compile_cache {
        builder = builder.compile_cache(dir);
    }
    builder.build().map_err(StartError::Engine)
}

async fn open_store(config: &ServeConfig) -> Result<Option<Arc<dyn store::ToolStore>>, StartError> {
    Ok(match &config.store {
        Some(StoreLocation::Folder(path)) => Some(Arc::new(
            store::FolderStore::open_with_grace(path, config.orphan_grace_secs)
                .map_err(StartError::Store)?,
        )),
        Some(StoreLocation::S3(at)) => Some(Arc::new(
            store::s3::S3Store::open(at.clone(), &config.s3)
                .await
                .map_err(StartError::Store)?
                .with_grace(config.orphan_grace_secs),
        )),
        None => None,
    })
}

/// Stored tools kept out at start, by name: their digest, and why.
type Skipped = std::collections::BTreeMap<String, (String, String)>;

/// Compile the folders' and the store's tools (CPU-bound: off the async
/// workers); the runtime comes back with them.
async fn load_tools(
    runtime: Runtime,
    config: &ServeConfig,
    store: &Option<Arc<dyn store::ToolStore>>,
    policy: &OperatorPolicy,
) -> Result<(Runtime, registry::Registry, Skipped), StartError> {
    let (folders, store, policy) = (config.tools.clone(), store.clone(), policy.clone());
    let (runtime, loaded) = tokio::task::spawn_blocking(move || {
        let loaded = registry::Registry::load(&runtime, &folders, store.as_deref(), &policy);
        (runtime, loaded)
    })
    .await
    .map_err(StartError::ToolsStopped)?;
    let (registry, skipped) = loaded.map_err(StartError::Tools)?;
    Ok((runtime, registry, skipped))
}

/// The protected resource's metadata, naming the configured authorization
/// servers or else the façade.
fn resource(
    config: &ServeConfig,
    facade: Option<&airlock_oauth::AuthorizationServer>,
) -> Result<Option<Arc<resource::Resource>>, StartError> {
    let Some(url) = &config.public_url else {
        return Ok(None);
    };
    let servers = if config.authorization_servers.is_empty() {
        facade.iter().map(|f| f.issuer().to_string()).collect()
    } else {
        config.authorization_servers.clone()
    };
    let resource = resource::Resource::new(url, servers).map_err(StartError::Resource)?;
    Ok(Some(Arc::new(resource)))
}

/// The façade's own tokens, for this resource, verified with its keys.
fn known_issuer(
    facade: Option<&airlock_oauth::AuthorizationServer>,
    resource: Option<&resource::Resource>,
) -> Option<airlock_verify::KnownIssuer> {
    let (f, r) = (facade?, resource?);
    Some(airlock_verify::KnownIssuer {
        issuer: f.issuer().to_string(),
        audience: r.url().to_string(),
        keys: f.jwks(),
        user_prefix: f.user_prefix().map(str::to_string),
    })
}

/// The Hosts and Origins browsers may reach the listeners with.
fn origins(config: &ServeConfig, resource: Option<&resource::Resource>) -> resource::Origins {
    let configured = config
        .allowed_origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_string());
    resource::Origins {
        local: config.local,
        origins: resource.iter().map(|r| r.origin()).chain(configured).collect(),
        hosts: config
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    }
}

/// What anyone may read: the resource's metadata and the façade's endpoints.
fn public_router(
    resource: Option<&Arc<resource::Resource>>,
    facade: Option<&Arc<airlock_oauth::AuthorizationServer>>,
) -> Router {
    let mut router = Router::new();
    if let Some(r) = resource {
        router = router.merge(r.clone().router());
    }
    if let Some(f) = facade {
        router = router.merge(f.clone().router());
    }
    // Forms and registrations are small; anyone may send them.
    router.layer(DefaultBodyLimit::max(64 << 10))
}

/// Stored tools that could not be loaded: named on /ping and in the trail.
fn report_skipped(audit: &audit::Audit, health: &Health, skipped: &Skipped) {
    for (tool, (digest, reason)) in skipped {
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

/// rmcp's streamable HTTP service over the calls.
fn mcp_service(
    config: &ServeConfig,
    calls: &Arc<Calls>,
    session_manager: Arc<LocalSessionManager>,
    shutdown: &CancellationToken,
) -> StreamableHttpService<mcp::Mcp, LocalSessionManager> {
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .with_max_request_body_bytes(config.limits.max_body_kib << 10)
        // A plain JSON answer when nothing is streamed; rmcp switches to SSE by itself
        // when a call sends a request (consent) before its result.
        .with_json_response(true);
    if !config.local {
        // Behind a load balancer the Host varies; callers are verified instead.
        mcp_config = mcp_config.disable_allowed_hosts();
    }
    let calls = calls.clone();
    StreamableHttpService::new(
        move || {
            Ok(mcp::Mcp {
                calls: calls.clone(),
            })
        },
        session_manager,
        mcp_config,
    )
}
