//! Replicas that share one tool store serve one set of tools: each reads the
//! store's index every few seconds (a conditional read, nearly free when
//! nothing changed) and serves what it lists, so an upload to any replica
//! reaches the others within one period. Content is checked against its
//! digest and loaded under this replica's policy; compiled code stays per
//! replica. When the store cannot be read the replica keeps serving what it
//! has and says so on `/ping`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::intake::Intake;
use crate::audit::{Record, unix_now};
use crate::http::Health;
use crate::registry::{Served, Source};
use crate::store::StoredTool;

/// Poll the store every `every` until `stop`.
pub(crate) fn start(
    intake: Arc<Intake>,
    every: Duration,
    health: Arc<Health>,
    stop: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    // Among the server's tasks: shutdown waits for a poll in progress, so no
    // record of it is written after the host has gone.
    tasks.spawn(async move {
        let mut seen: Option<String> = None;
        let mut refused: BTreeMap<String, String> = BTreeMap::new();
        let mut last_ok = unix_now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            // Changes made here hold the same lock: the index read below is
            // never older than what the registry already serves.
            let _one = intake.changing.lock().await;
            let store = intake.store.clone();
            let since = seen.clone();
            let polled = tokio::task::spawn_blocking(move || store.poll(since.as_deref())).await;
            let error = match polled {
                Ok(Ok(None)) => None,
                Ok(Ok(Some((version, listed)))) => {
                    refused = apply(&intake, listed).await;
                    seen = Some(version);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("reading the store stopped: {e}")),
            };
            match &error {
                None => last_ok = unix_now(),
                Some(e) => tracing::warn!("tool store: {e}; serving the tools already loaded"),
            }
            health.set_store(json!({
                "reachable": error.is_none(),
                "last_read": last_ok,
                "error": error,
                "refused": refused,
            }));
        }
    });
}

/// Serve what `listed` holds: new and changed tools loaded, tools gone
/// removed. Tools of the configured folders are left alone. The tools that
/// could not be served, and why.
async fn apply(intake: &Arc<Intake>, listed: Vec<StoredTool>) -> BTreeMap<String, String> {
    let registry = &intake.calls.registry;
    let mut refused = BTreeMap::new();
    let names: BTreeSet<String> = listed.iter().map(|t| t.name.clone()).collect();
    for entry in listed {
        match registry.get(&entry.name) {
            Some(s) if s.source == Source::Store && s.digest == entry.digest => continue,
            Some(s) if matches!(s.source, Source::Folder(_)) => {
                refused.insert(
                    entry.name.clone(),
                    "a configured tools folder serves a tool of this name".to_string(),
                );
                continue;
            }
            _ => {}
        }
        let (a, digest, name) = (intake.clone(), entry.digest.clone(), entry.name.clone());
        // Reading and compiling are blocking and CPU-bound: off the async workers.
        let loaded = tokio::task::spawn_blocking(move || {
            let bytes = a.store.read(&digest).map_err(|e| e.to_string())?;
            let tool = a
                .calls
                .runtime
                .load(&bytes, &a.policy)
                .map_err(|e| e.to_string())?;
            if tool.manifest().name != name {
                return Err(format!(
                    "the index names it `{name}`, its manifest `{}`",
                    tool.manifest().name
                ));
            }
            Served::new(tool, digest, Source::Store).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("loading stopped: {e}")));
        let record = |served: bool, reason: Option<String>| Record::Sync {
            tool: entry.name.clone(),
            digest: entry.digest.clone(),
            served,
            reason,
        };
        match loaded {
            Ok(served) => {
                registry.insert(served);
                intake.audit.record(record(true, None));
                tracing::info!(tool = %entry.name, digest = %entry.digest, "serving a tool from the shared store");
            }
            Err(e) => {
                // The version served before (if any) stays: it was checked.
                intake.audit.record(record(false, Some(e.clone())));
                tracing::warn!(tool = %entry.name, digest = %entry.digest, "not serving a stored tool: {e}");
                refused.insert(entry.name, e);
            }
        }
    }
    for served in registry.all() {
        if served.source == Source::Store && !names.contains(served.name()) {
            registry.remove(served.name());
            intake.audit.record(Record::Sync {
                tool: served.name().to_string(),
                digest: served.digest.clone(),
                served: false,
                reason: Some("removed from the store".into()),
            });
            tracing::info!(tool = %served.name(), "no longer in the shared store");
        }
    }
    refused
}
