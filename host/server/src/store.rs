//! Where accepted tools are kept: each `.wasm` by its sha256 digest, and a
//! small index (name -> digest, who uploaded it, when). A trait: a local
//! folder, or S3 ([`s3::S3Store`]) shared by every replica.

pub mod s3;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One stored tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTool {
    /// The tool's name (its manifest's).
    pub name: String,
    /// The sha256 of the `.wasm`, lower-case hex.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Who uploaded it (the admin key's name).
    pub uploaded_by: String,
    /// When, Unix seconds.
    pub uploaded_at: u64,
    /// The key that signed it, when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

impl StoredTool {
    /// The entry for `wasm` kept as `name` (its digest and size computed).
    pub fn new(
        name: &str,
        wasm: &[u8],
        uploaded_by: &str,
        uploaded_at: u64,
        signer: Option<String>,
    ) -> StoredTool {
        StoredTool {
            name: name.to_string(),
            digest: digest_of(wasm),
            size: wasm.len() as u64,
            uploaded_by: uploaded_by.to_string(),
            uploaded_at,
            signer,
        }
    }
}

/// A store that could not read or write.
#[derive(Debug, thiserror::Error)]
#[error("tool store {at}: {message}")]
pub struct StoreError {
    at: String,
    message: String,
}

impl StoreError {
    pub(crate) fn new(at: impl std::fmt::Display, message: impl std::fmt::Display) -> StoreError {
        StoreError {
            at: at.to_string(),
            message: message.to_string(),
        }
    }

    fn io(at: &Path, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            at: at.display().to_string(),
            message: e.to_string(),
        }
    }
}

/// Durable tool storage. Every write is all or nothing. Blocking: call it
/// from `spawn_blocking`.
pub trait ToolStore: Send + Sync {
    /// Every stored tool, by name.
    fn list(&self) -> Result<Vec<StoredTool>, StoreError>;
    /// The `.wasm` stored under `digest`.
    fn read(&self, digest: &str) -> Result<Vec<u8>, StoreError>;
    /// Store `wasm` as `entry` (replacing the tool of that name); the entry it replaced.
    fn put(&self, entry: &StoredTool, wasm: &[u8]) -> Result<Option<StoredTool>, StoreError>;
    /// Remove the tool named `name`; the entry removed.
    fn remove(&self, name: &str) -> Result<Option<StoredTool>, StoreError>;
    /// The index's version and entries if it is not at version `seen` (any
    /// replica may have changed it), `None` if it is. Cheap when unchanged.
    fn poll(&self, seen: Option<&str>) -> Result<Option<(String, Vec<StoredTool>)>, StoreError>;
}

/// The version of an index that does not exist yet.
pub(crate) const NO_INDEX: &str = "none";

/// The sha256 of `bytes`, lower-case hex.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A local folder: `blobs/<digest>.wasm` and `index.json`.
pub struct FolderStore {
    root: PathBuf,
    // One writer at a time: the index is read, changed and replaced.
    write: Mutex<()>,
}

const INDEX: &str = "index.json";

impl FolderStore {
    /// Open (creating) the store at `root`, clearing temp files a crash left.
    pub fn open(root: impl Into<PathBuf>) -> Result<FolderStore, StoreError> {
        let root = root.into();
        let blobs = root.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| StoreError::io(&blobs, e))?;
        for dir in [&root, &blobs] {
            for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
                let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
                if path.extension().is_some_and(|x| x == "tmp") {
                    std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                }
            }
        }
        Ok(FolderStore {
            root,
            write: Mutex::new(()),
        })
    }

    fn blob(&self, digest: &str) -> Result<PathBuf, StoreError> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::io(
                &self.root,
                format!("`{digest}` is not a sha256 digest"),
            ));
        }
        Ok(self.root.join("blobs").join(format!("{digest}.wasm")))
    }

    fn index(&self) -> Result<BTreeMap<String, StoredTool>, StoreError> {
        let path = self.root.join(INDEX);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::io(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn write_index(&self, index: &BTreeMap<String, StoredTool>) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::io(&self.root, e))?;
        write_atomically(&self.root.join(INDEX), &bytes)
    }

    /// Delete blobs no entry names (after a replace or a removal).
    fn collect(&self, index: &BTreeMap<String, StoredTool>, digest: &str) {
        if index.values().all(|t| t.digest != digest)
            && let Ok(path) = self.blob(digest)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Write `bytes` to `path` whole or not at all: a temp file beside it,
/// flushed, renamed over, and the folder synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::io(path, e));
    }
    // Renamed: the new content is what readers see, so this is a success
    // even if the folder's sync fails (then only a power cut could lose it).
    if let Some(dir) = path.parent()
        && let Err(e) = File::open(dir).and_then(|d| d.sync_all())
    {
        tracing::warn!("tool store {}: syncing the folder: {e}", dir.display());
    }
    Ok(())
}

impl ToolStore for FolderStore {
    fn list(&self) -> Result<Vec<StoredTool>, StoreError> {
        Ok(self.index()?.into_values().collect())
    }

    fn read(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.blob(digest)?;
        let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
        if digest_of(&bytes) != digest {
            return Err(StoreError::io(
                &path,
                "its content does not match its digest",
            ));
        }
        Ok(bytes)
    }

    fn put(&self, entry: &StoredTool, wasm: &[u8]) -> Result<Option<StoredTool>, StoreError> {
        let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let blob = self.blob(&entry.digest)?;
        let new_blob = !blob.exists();
        if new_blob {
            write_atomically(&blob, wasm)?;
        }
        let mut index = self.index()?;
        let replaced = index.insert(entry.name.clone(), entry.clone());
        if let Err(e) = self.write_index(&index) {
            if new_blob {
                let _ = std::fs::remove_file(&blob);
            }
            return Err(e);
        }
        if let Some(old) = &replaced {
            self.collect(&index, &old.digest);
        }
        Ok(replaced)
    }

    fn remove(&self, name: &str) -> Result<Option<StoredTool>, StoreError> {
        let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.index()?;
        let Some(removed) = index.remove(name) else {
            return Ok(None);
        };
        self.write_index(&index)?;
        self.collect(&index, &removed.digest);
        Ok(Some(removed))
    }

    fn poll(&self, seen: Option<&str>) -> Result<Option<(String, Vec<StoredTool>)>, StoreError> {
        // A folder shared by replicas (a network file system) changes under us too.
        let path = self.root.join(INDEX);
        let (version, index) = match std::fs::read(&path) {
            Ok(bytes) => (
                digest_of(&bytes),
                serde_json::from_slice::<BTreeMap<String, StoredTool>>(&bytes)
                    .map_err(|e| StoreError::io(&path, e))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (NO_INDEX.to_string(), BTreeMap::new())
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        if seen == Some(version.as_str()) {
            return Ok(None);
        }
        Ok(Some((version, index.into_values().collect())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, wasm: &[u8]) -> StoredTool {
        StoredTool::new(name, wasm, "ci", 1, None)
    }

    #[test]
    fn put_replace_remove_survive_reopening_and_leave_no_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::open(dir.path()).unwrap();
        assert!(store.put(&entry("a", b"one"), b"one").unwrap().is_none());
        let replaced = store.put(&entry("a", b"two"), b"two").unwrap().unwrap();
        assert_eq!(replaced.digest, digest_of(b"one"));
        assert!(
            !dir.path()
                .join(format!("blobs/{}.wasm", digest_of(b"one")))
                .exists()
        );
        store.put(&entry("b", b"two"), b"two").unwrap();

        let store = FolderStore::open(dir.path()).unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(store.read(&digest_of(b"two")).unwrap(), b"two");
        // Shared content stays until its last name goes.
        store.remove("a").unwrap().unwrap();
        assert_eq!(store.read(&digest_of(b"two")).unwrap(), b"two");
        store.remove("b").unwrap().unwrap();
        assert!(store.remove("b").unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
            0
        );
    }

    #[test]
    fn poll_answers_only_when_the_index_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::open(dir.path()).unwrap();
        let (empty, tools) = store.poll(None).unwrap().unwrap();
        assert_eq!((empty.as_str(), tools.len()), (NO_INDEX, 0));
        assert!(store.poll(Some(&empty)).unwrap().is_none());
        store.put(&entry("a", b"one"), b"one").unwrap();
        let (v1, tools) = store.poll(Some(&empty)).unwrap().unwrap();
        assert_eq!(tools[0].name, "a");
        assert!(store.poll(Some(&v1)).unwrap().is_none());
        // Another replica's change to the shared folder.
        let other = FolderStore::open(dir.path()).unwrap();
        other.remove("a").unwrap();
        let (v2, tools) = store.poll(Some(&v1)).unwrap().unwrap();
        assert!(v2 != v1 && tools.is_empty());
    }

    #[test]
    fn a_changed_blob_or_a_path_for_a_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::open(dir.path()).unwrap();
        store.put(&entry("a", b"one"), b"one").unwrap();
        let blob = dir.path().join(format!("blobs/{}.wasm", digest_of(b"one")));
        std::fs::write(&blob, b"0ne").unwrap();
        let e = store.read(&digest_of(b"one")).unwrap_err().to_string();
        assert!(e.contains("does not match its digest"), "{e}");
        let e = store.read("../index").unwrap_err().to_string();
        assert!(e.contains("not a sha256 digest"), "{e}");
    }

    #[test]
    fn temp_files_a_crash_left_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/x.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("index.tmp"), b"{").unwrap();
        FolderStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("blobs/x.tmp").exists());
        assert!(!dir.path().join("index.tmp").exists());
    }
}
