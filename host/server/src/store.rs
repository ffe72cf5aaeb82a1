//! Where accepted tools are kept: each `.wasm` by its sha256 digest, and a
//! small index (name -> digest, who uploaded it, when). A trait: a local
//! folder, or S3 ([`s3::S3Store`]) shared by every replica.

pub mod s3;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use airlock_runtime::write_atomically;
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

/// A store that could not read or write, or a change it refused.
#[derive(Debug, thiserror::Error)]
#[error("tool store {at}: {message}")]
pub struct StoreError {
    at: String,
    message: String,
    /// Set when the change was refused: the name's last signer.
    signer_was: Option<Option<String>>,
}

impl StoreError {
    pub(crate) fn new(at: impl std::fmt::Display, message: impl std::fmt::Display) -> StoreError {
        StoreError {
            at: at.to_string(),
            message: message.to_string(),
            signer_was: None,
        }
    }

    fn io(at: &Path, e: impl std::fmt::Display) -> StoreError {
        StoreError::new(at.display(), e)
    }

    pub(crate) fn signer_changed(at: impl std::fmt::Display, was: Option<String>) -> StoreError {
        StoreError {
            signer_was: Some(was),
            ..StoreError::new(at, "another signer's tool had this name")
        }
    }

    /// When the put was refused because another signer's code had the
    /// name (even if since removed): who that was (`None`: unsigned).
    pub fn signer_changed_from(&self) -> Option<&Option<String>> {
        self.signer_was.as_ref()
    }
}

/// The index every store keeps: the tools by name; each name's last
/// signer, kept after the tool is removed (its users' consent belongs to
/// that signer's code, so another signer's tool may not take the name); and
/// the blobs no tool names any more, since when (deleted after a grace
/// period, so that a replica that just wrote the same content is not robbed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Index {
    pub(crate) tools: BTreeMap<String, StoredTool>,
    #[serde(default)]
    pub(crate) signers: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub(crate) orphans: BTreeMap<String, u64>,
}

impl Index {
    /// An index's bytes, of this form or the earlier bare map of tools.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Index, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            Now(Index),
            Before(BTreeMap<String, StoredTool>),
        }
        Ok(match serde_json::from_slice(bytes)? {
            Any::Now(index) => index,
            Any::Before(tools) => Index {
                signers: tools
                    .iter()
                    .map(|(n, t)| (n.clone(), t.signer.clone()))
                    .collect(),
                tools,
                orphans: BTreeMap::new(),
            },
        })
    }

    fn named(&self, digest: &str) -> bool {
        self.tools.values().any(|t| t.digest == digest)
    }

    /// Keep `entry` (at `now`); the entry it replaced. With `same_signer`,
    /// refused (`Err`: the last signer) when the name was another signer's.
    pub(crate) fn put(
        &mut self,
        entry: &StoredTool,
        now: u64,
        same_signer: bool,
    ) -> Result<Option<StoredTool>, Option<String>> {
        if same_signer
            && let Some(was) = self.signers.get(&entry.name)
            && *was != entry.signer
        {
            return Err(was.clone());
        }
        self.orphans.remove(&entry.digest);
        self.signers
            .insert(entry.name.clone(), entry.signer.clone());
        let replaced = self.tools.insert(entry.name.clone(), entry.clone());
        if let Some(old) = &replaced
            && !self.named(&old.digest)
        {
            self.orphans.insert(old.digest.clone(), now);
        }
        Ok(replaced)
    }

    /// Forget the tool `name` (its signer stays); the entry removed.
    pub(crate) fn remove(&mut self, name: &str, now: u64) -> Option<StoredTool> {
        let removed = self.tools.remove(name)?;
        if !self.named(&removed.digest) {
            self.orphans.insert(removed.digest.clone(), now);
        }
        Some(removed)
    }

    /// The blobs orphaned at least `grace` seconds before `now`, still
    /// named by no tool: taken off the list, for the caller to delete.
    pub(crate) fn collectable(&mut self, now: u64, grace: u64) -> Vec<String> {
        let due: Vec<String> = self
            .orphans
            .iter()
            .filter(|(d, since)| now.saturating_sub(**since) >= grace && !self.named(d))
            .map(|(d, _)| d.clone())
            .collect();
        for d in &due {
            self.orphans.remove(d);
        }
        due
    }
}

/// How long an unnamed blob is kept before it is deleted, in seconds.
pub const ORPHAN_GRACE_SECS: u64 = 600;

pub(crate) fn now() -> u64 {
    crate::audit::unix_now()
}

/// Durable tool storage. Every write is all or nothing. Blocking: call it
/// from `spawn_blocking`.
pub trait ToolStore: Send + Sync {
    /// Every stored tool, by name.
    fn list(&self) -> Result<Vec<StoredTool>, StoreError>;
    /// The `.wasm` stored under `digest`.
    fn read(&self, digest: &str) -> Result<Vec<u8>, StoreError>;
    /// Store `wasm` as `entry` (replacing the tool of that name); the entry
    /// it replaced. With `same_signer`, refused in the same atomic change
    /// when the name was last another signer's ([`StoreError::signer_changed_from`]).
    fn put(
        &self,
        entry: &StoredTool,
        wasm: &[u8],
        same_signer: bool,
    ) -> Result<Option<StoredTool>, StoreError>;
    /// Each name's last signer, removed tools included (`None`: unsigned).
    fn signers(&self) -> Result<BTreeMap<String, Option<String>>, StoreError>;
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

/// A local folder: `blobs/<digest>.wasm` and `index.json`. Several
/// processes may share it (replicas on one mounted folder): every change
/// holds an exclusive lock on `index.lock` while it reads, changes and
/// replaces the index, and temp files have names of their own.
pub struct FolderStore {
    root: PathBuf,
    grace: u64,
    // One writer at a time in this process too (the file lock is per process).
    write: Mutex<()>,
}

const INDEX: &str = "index.json";

impl FolderStore {
    /// Open (creating) the store at `root`, clearing temp files a crash left.
    pub fn open(root: impl Into<PathBuf>) -> Result<FolderStore, StoreError> {
        FolderStore::open_with_grace(root, ORPHAN_GRACE_SECS)
    }

    /// The same, deleting unnamed blobs after `grace` seconds.
    pub fn open_with_grace(
        root: impl Into<PathBuf>,
        grace: u64,
    ) -> Result<FolderStore, StoreError> {
        let root = root.into();
        let blobs = root.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| StoreError::io(&blobs, e))?;
        // Another writer's temp file may be in use: only old ones are a crash's.
        let stale = std::time::Duration::from_secs(3600);
        for dir in [&root, &blobs] {
            for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
                let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
                let old = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age > stale);
                if path.extension().is_some_and(|x| x == "tmp") && old {
                    std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                }
            }
        }
        Ok(FolderStore {
            root,
            grace,
            write: Mutex::new(()),
        })
    }

    /// Run `change` on the index under this process's and the folder's lock,
    /// writing the index back when it changed; then delete what is due.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let lock_path = self.root.join("index.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        lock.lock().map_err(|e| StoreError::io(&lock_path, e))?;
        let mut index = self.index()?;
        let before = index.clone();
        let out = change(&mut index)?;
        let due = index.collectable(now(), self.grace);
        if index != before {
            self.write_index(&index)?;
        }
        for digest in due {
            if let Ok(path) = self.blob(&digest) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(out)
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

    fn index(&self) -> Result<Index, StoreError> {
        let path = self.root.join(INDEX);
        match std::fs::read(&path) {
            Ok(bytes) => Index::parse(&bytes).map_err(|e| StoreError::io(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::io(&self.root, e))?;
        let at = self.root.join(INDEX);
        write_atomically(&at, &bytes).map_err(|e| StoreError::io(&at, e))
    }
}

impl ToolStore for FolderStore {
    fn list(&self) -> Result<Vec<StoredTool>, StoreError> {
        Ok(self.index()?.tools.into_values().collect())
    }

    fn signers(&self) -> Result<BTreeMap<String, Option<String>>, StoreError> {
        Ok(self.index()?.signers)
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

    fn put(
        &self,
        entry: &StoredTool,
        wasm: &[u8],
        same_signer: bool,
    ) -> Result<Option<StoredTool>, StoreError> {
        let blob = self.blob(&entry.digest)?;
        self.change(|index| {
            // Under the lock: no collection can take the blob between these steps.
            if !blob.exists() {
                write_atomically(&blob, wasm).map_err(|e| StoreError::io(&blob, e))?;
            }
            index
                .put(entry, now(), same_signer)
                .map_err(|was| StoreError::signer_changed(self.root.display(), was))
        })
    }

    fn remove(&self, name: &str) -> Result<Option<StoredTool>, StoreError> {
        self.change(|index| Ok(index.remove(name, now())))
    }

    fn poll(&self, seen: Option<&str>) -> Result<Option<(String, Vec<StoredTool>)>, StoreError> {
        // A folder shared by replicas (a network file system) changes under us too.
        let path = self.root.join(INDEX);
        let (version, index) = match std::fs::read(&path) {
            Ok(bytes) => (
                digest_of(&bytes),
                Index::parse(&bytes).map_err(|e| StoreError::io(&path, e))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (NO_INDEX.to_string(), Index::default())
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        if seen == Some(version.as_str()) {
            return Ok(None);
        }
        Ok(Some((version, index.tools.into_values().collect())))
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
        let store = FolderStore::open_with_grace(dir.path(), 0).unwrap();
        assert!(
            store
                .put(&entry("a", b"one"), b"one", true)
                .unwrap()
                .is_none()
        );
        let replaced = store
            .put(&entry("a", b"two"), b"two", true)
            .unwrap()
            .unwrap();
        assert_eq!(replaced.digest, digest_of(b"one"));
        assert!(
            !dir.path()
                .join(format!("blobs/{}.wasm", digest_of(b"one")))
                .exists()
        );
        store.put(&entry("b", b"two"), b"two", true).unwrap();

        let store = FolderStore::open_with_grace(dir.path(), 0).unwrap();
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
    fn an_unnamed_blob_waits_out_its_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::open(dir.path()).unwrap();
        store.put(&entry("a", b"one"), b"one", true).unwrap();
        store.remove("a").unwrap();
        // Another replica may have just stored the same content under a new name.
        assert_eq!(store.read(&digest_of(b"one")).unwrap(), b"one");
        let mut index = store.index().unwrap();
        assert!(index.collectable(now(), ORPHAN_GRACE_SECS).is_empty());
        assert_eq!(
            index
                .collectable(now() + ORPHAN_GRACE_SECS, ORPHAN_GRACE_SECS)
                .len(),
            1
        );
        // Named again before its time: no longer an orphan.
        store.put(&entry("b", b"one"), b"one", true).unwrap();
        assert!(store.index().unwrap().orphans.is_empty());
    }

    #[test]
    fn a_name_keeps_its_signer_after_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::open(dir.path()).unwrap();
        let signed = |by: Option<&str>, wasm: &[u8]| {
            StoredTool::new("mail", wasm, "ci", 1, by.map(str::to_string))
        };
        store
            .put(&signed(Some("SHA256:ours"), b"v1"), b"v1", true)
            .unwrap();
        store.remove("mail").unwrap();
        for other in [Some("SHA256:theirs"), None] {
            let e = store.put(&signed(other, b"v2"), b"v2", true).unwrap_err();
            assert_eq!(
                e.signer_changed_from(),
                Some(&Some("SHA256:ours".to_string())),
                "{other:?}"
            );
        }
        assert!(store.list().unwrap().is_empty(), "nothing kept");
        store
            .put(&signed(Some("SHA256:ours"), b"v3"), b"v3", true)
            .unwrap();
        // Where the operator allows a change of signer, it moves on.
        store
            .put(&signed(Some("SHA256:theirs"), b"v4"), b"v4", false)
            .unwrap();
        assert_eq!(
            store.signers().unwrap()["mail"].as_deref(),
            Some("SHA256:theirs")
        );
    }

    #[test]
    fn two_writers_on_one_folder_lose_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let stores: Vec<_> = (0..2)
            .map(|_| FolderStore::open(dir.path()).unwrap())
            .collect();
        std::thread::scope(|scope| {
            for (w, store) in stores.iter().enumerate() {
                scope.spawn(move || {
                    for i in 0..20 {
                        let wasm = format!("{w}-{i}");
                        store
                            .put(&entry(&wasm, wasm.as_bytes()), wasm.as_bytes(), true)
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(stores[0].list().unwrap().len(), 40);
    }

    #[test]
    fn an_index_of_the_earlier_form_reads() {
        let before = serde_json::json!({"a": entry("a", b"one")});
        let index = Index::parse(before.to_string().as_bytes()).unwrap();
        assert_eq!(index.tools["a"].digest, digest_of(b"one"));
        assert_eq!(index.signers["a"], None);
    }

    #[test]
    fn poll_answers_only_when_the_index_changed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::open(dir.path()).unwrap();
        let (empty, tools) = store.poll(None).unwrap().unwrap();
        assert_eq!((empty.as_str(), tools.len()), (NO_INDEX, 0));
        assert!(store.poll(Some(&empty)).unwrap().is_none());
        store.put(&entry("a", b"one"), b"one", true).unwrap();
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
        store.put(&entry("a", b"one"), b"one", true).unwrap();
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
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for f in ["blobs/x.tmp", "index.tmp"] {
            std::fs::File::options()
                .write(true)
                .open(dir.path().join(f))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // Another writer's temp file, still being written: left alone.
        std::fs::write(dir.path().join("index.abc.tmp"), b"{").unwrap();
        FolderStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("blobs/x.tmp").exists());
        assert!(!dir.path().join("index.tmp").exists());
        assert!(dir.path().join("index.abc.tmp").exists());
    }
}
