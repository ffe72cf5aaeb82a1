//! `host push`: a tool author's upload to a running host's admin API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use base64::Engine;

/// Upload `wasm` (and `wasm.sig` when present) to the admin API at `to`.
pub(crate) fn push(wasm: &Path, to: &str) -> Result<ExitCode> {
    let key = std::env::var("AIRLOCK_ADMIN_KEY").context(
        "set AIRLOCK_ADMIN_KEY to the admin key (it is never taken on the command line)",
    )?;
    let bytes = super::read(wasm)?;
    let name = airlock_manifest::inspect(&bytes)
        .with_context(|| format!("{} is not a tool", wasm.display()))?
        .manifest
        .name;
    let signature = match std::fs::read(super::sidecar(wasm)) {
        Ok(sig) => Some(base64::engine::general_purpose::STANDARD.encode(sig)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading the signature"),
    };
    let url = format!("{}/admin/tools/{name}", to.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = rt.block_on(async {
        let mut request = reqwest::Client::new()
            .put(&url)
            .bearer_auth(key)
            .body(bytes);
        if let Some(sig) = signature {
            request = request.header("x-airlock-signature", sig);
        }
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {}", airlock_verify::without_url(e)))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        Ok::<_, anyhow::Error>((status, body))
    })?;
    if status.is_success() {
        println!("{body}");
        eprintln!("pushed {name} ({})", body["digest"].as_str().unwrap_or("?"));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{name} refused ({status}): {}",
            body["message"].as_str().unwrap_or("no reason given")
        );
        Ok(ExitCode::from(1))
    }
}
