//! The watched folder: `NAME.wasm` dropped in is checked like an upload and
//! served; deleting it removes the tool. Events are debounced, and a file
//! still being written fails the checks (its manifest, the last section, is
//! not there yet), so it is never loaded half-written; the finished write
//! brings another event.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use tokio_util::sync::CancellationToken;

use crate::intake::{ChangeError, Intake};
use crate::store::{StoreError, digest_of};

/// The watched folder could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// It could not be made or listed.
    #[error("watched folder {}: {error}", folder.display())]
    Folder {
        /// The folder.
        folder: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file system's notifications could not be had for it.
    #[error("watched folder {}: {error}", folder.display())]
    Notify {
        /// The folder.
        folder: PathBuf,
        /// Why.
        error: notify_debouncer_mini::notify::Error,
    },
    /// Listing the stored tools stopped before it finished.
    #[error("{0}")]
    Stopped(tokio::task::JoinError),
    /// The store could not list its tools.
    #[error("{0}")]
    Store(StoreError),
}

/// Who the store and the audit trail say put a watched tool there.
const BY: &str = "watched-folder";
const QUIET: Duration = Duration::from_millis(300);

/// Watch `folder` until `stop`; tools already there are taken in first.
pub(crate) async fn start(
    intake: Arc<Intake>,
    folder: PathBuf,
    stop: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Result<(), WatchError> {
    let in_folder = |error| WatchError::Folder {
        folder: folder.clone(),
        error,
    };
    let notify = |error| WatchError::Notify {
        folder: folder.clone(),
        error,
    };
    std::fs::create_dir_all(&folder).map_err(in_folder)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(QUIET, move |events: DebounceEventResult| match events {
        Ok(events) => {
            for e in events {
                let _ = tx.send(e.path);
            }
        }
        Err(e) => tracing::error!("watched folder: {e}"),
    })
    .map_err(notify)?;
    debouncer
        .watcher()
        .watch(&folder, RecursiveMode::NonRecursive)
        .map_err(notify)?;
    let mut present: Vec<PathBuf> = std::fs::read_dir(&folder)
        .map_err(in_folder)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    present.sort();
    for path in present {
        take(&intake, &path).await;
    }
    // Files deleted while the host was down: their tools go too.
    let store = intake.store.clone();
    let stored = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(WatchError::Stopped)?
        .map_err(WatchError::Store)?;
    for tool in stored.into_iter().filter(|t| t.uploaded_by == BY) {
        if !folder.join(format!("{}.wasm", tool.name)).exists() {
            take(&intake, &folder.join(format!("{}.wasm", tool.name))).await;
        }
    }
    // Among the server's tasks: shutdown waits for an intake in progress.
    tasks.spawn(async move {
        // The debouncer lives as long as this task.
        let _debouncer = debouncer;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                path = rx.recv() => match path {
                    Some(path) => take(&intake, &path).await,
                    None => break,
                },
            }
        }
    });
    Ok(())
}

/// Take in, replace or remove the tool `path` names.
async fn take(intake: &Arc<Intake>, path: &Path) {
    let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    // A signature arriving after its tool brings the tool in again.
    let Some(name) = file
        .strip_suffix(".wasm")
        .or_else(|| file.strip_suffix(".wasm.sig"))
    else {
        return;
    };
    let path = &path.with_file_name(format!("{name}.wasm"));
    let signature = tokio::fs::read_to_string(path.with_file_name(format!("{name}.wasm.sig")))
        .await
        .ok();
    if let Ok(meta) = tokio::fs::metadata(path).await
        && meta.len() > (intake.max_upload_kib << 10) as u64
    {
        let refused = crate::intake::UploadError::TooLarge {
            limit_kib: intake.max_upload_kib,
        };
        tracing::warn!(file = %path.display(), "watched tool refused: {}", refused.message());
        intake.refuse(name, BY, None, refused);
        return;
    }
    match tokio::fs::read(path).await {
        Ok(wasm) => {
            if intake
                .calls
                .registry
                .get(name)
                .is_some_and(|s| s.digest == digest_of(&wasm))
            {
                return;
            }
            if let Some(owner) = owner_of(intake, name).await.filter(|o| o != BY) {
                let refused = crate::intake::UploadError::UploadedElsewhere {
                    name: name.to_string(),
                    owner,
                };
                tracing::warn!(file = %path.display(), "watched tool refused: {}", refused.message());
                intake.refuse(name, BY, Some(digest_of(&wasm)), refused);
                return;
            }
            match intake.accept(name, wasm, signature, BY).await {
                Ok(_) => {}
                Err(ChangeError::Refused(r)) => tracing::warn!(
                    file = %path.display(),
                    check = r.failed_check(),
                    "watched tool refused: {}",
                    r.message()
                ),
                Err(ChangeError::Store(e)) => tracing::error!(file = %path.display(), "{e}"),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Err(ChangeError::Store(e)) = intake.remove(name, BY, Some(BY)).await {
                tracing::error!(file = %path.display(), "{e}");
            }
        }
        Err(e) => tracing::warn!(file = %path.display(), "watched folder: {e}"),
    }
}

/// Who put the stored tool `name` there, if it is stored.
async fn owner_of(intake: &Arc<Intake>, name: &str) -> Option<String> {
    let (store, name) = (intake.store.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        store
            .list()
            .ok()?
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| t.uploaded_by)
    })
    .await
    .ok()
    .flatten()
}
