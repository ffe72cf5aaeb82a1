//! `binding-service [--config FILE]`: the Session Binding Service,
//! configured by a file, by `AIRLOCK_BINDING_*` variables, or both.

use anyhow::{Context, Result};
use clap::Parser;

use airlock_binding::BindingConfig;
use airlock_identity::{ClientConfig, IdentityClient};

/// Confirms that the signed-in user is the one who started an OAuth consent,
/// then completes it at AgentCore Identity.
#[derive(Parser)]
#[command(name = "binding-service", version)]
struct Args {
    /// The TOML configuration (`AIRLOCK_BINDING_*` variables override it);
    /// without one, the variables alone.
    #[arg(long, env = "AIRLOCK_BINDING_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Ask a running service whether it is healthy and exit 0 if so, 1 if not
    /// (a container's health check: images without a shell or curl).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "http://127.0.0.1:8080/ping")]
    ping: Option<String>,
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
    if let Some(url) = &args.ping {
        let healthy = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()?
            .get(url)
            .send()
            .await
            .map(|r| r.status().is_success());
        match healthy {
            Ok(true) => return Ok(()),
            Ok(false) => anyhow::bail!("{url}: not healthy"),
            Err(e) => anyhow::bail!("{url}: {e}"),
        }
    }
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            BindingConfig::from_toml(&text)?
        }
        None => BindingConfig::from_env()?,
    };
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
