//! `alb-dev --config FILE`: a DEVELOPMENT stand-in for an ALB with
//! `authenticate-oidc` (see the library). Never for real users.

use anyhow::{Context, Result};
use clap::Parser;

/// Start the stand-in (development only).
#[derive(Parser)]
#[command(name = "alb-dev", version)]
struct Args {
    /// The TOML configuration.
    #[arg(long)]
    config: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let running = airlock_dev_alb::start(airlock_dev_alb::parse(&text)?).await?;
    println!(
        "{}",
        serde_json::json!({
            "alb": running.public_url,
            "key_url": running.key_url,
            "signer_arn": running.signer_arn,
            "issuer": running.issuer,
        })
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
