//! `binding-service --config FILE`: the Session Binding Service.

use anyhow::{Context, Result};
use clap::Parser;

use airlock_binding::BindingConfig;
use airlock_identity::{ClientConfig, IdentityClient};

/// Confirms that the signed-in user is the one who started an OAuth consent,
/// then completes it at AgentCore Identity.
#[derive(Parser)]
#[command(name = "binding-service", version)]
struct Args {
    /// The TOML configuration (`AIRLOCK_BINDING_*` variables override it).
    #[arg(long, env = "AIRLOCK_BINDING_CONFIG")]
    config: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config = BindingConfig::from_toml(&text)?;
    let identity = IdentityClient::from_env(&ClientConfig {
        region: config.identity.region.clone(),
        endpoint_url: config.identity.endpoint_url.clone(),
        ..Default::default()
    })
    .await;
    let running = airlock_binding::start(config, identity).await?;
    println!(
        "{}",
        serde_json::json!({
            "binding": running.addr.to_string(),
            "metrics": running.metrics.map(|a| a.to_string()),
        })
    );
    let stop = running.shutdown_token();
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = signal() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
