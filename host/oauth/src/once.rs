//! What may happen only once: an authorization code redeemed, a refresh
//! token used, a token family revoked. Everything else the façade hands out
//! is sealed and carries its own state, so this is all it keeps; a store every
//! replica shares (a folder they mount, or any store with a conditional
//! create) makes replicas agree.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A boxed future, as the trait's methods return.
pub type OnceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, OnceError>> + Send + 'a>>;

/// The store could not answer: the façade refuses rather than guess.
#[derive(Debug, thiserror::Error)]
#[error("the façade's once-store: {0}")]
pub struct OnceError(pub String);

/// Marks that can be set once. Keys are short and URL-safe.
pub trait OnceStore: Send + Sync {
    /// Set `key`, kept at least `keep`; `true` the first time, `false` after.
    fn claim<'a>(&'a self, key: &'a str, keep: Duration) -> OnceFuture<'a, bool>;
    /// Whether `key` is set.
    fn is_set<'a>(&'a self, key: &'a str) -> OnceFuture<'a, bool>;
}

/// In this process only: for one replica, and tests.
#[derive(Default)]
pub struct MemoryOnce {
    marks: Mutex<Marks>,
}

#[derive(Default)]
struct Marks {
    until: HashMap<String, SystemTime>,
    /// Swept again when there are this many: twice what the last sweep
    /// left, so sweeping costs each claim a constant share.
    sweep_at: usize,
}

impl OnceStore for MemoryOnce {
    fn claim<'a>(&'a self, key: &'a str, keep: Duration) -> OnceFuture<'a, bool> {
        Box::pin(async move {
            let now = SystemTime::now();
            let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            if marks.until.len() >= marks.sweep_at.max(4096) {
                marks.until.retain(|_, until| *until > now);
                marks.sweep_at = marks.until.len() * 2;
            }
            match marks.until.get(key) {
                Some(until) if *until > now => Ok(false),
                _ => {
                    marks.until.insert(key.to_string(), now + keep);
                    Ok(true)
                }
            }
        })
    }

    fn is_set<'a>(&'a self, key: &'a str) -> OnceFuture<'a, bool> {
        Box::pin(async move {
            let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            Ok(marks
                .until
                .get(key)
                .is_some_and(|until| *until > SystemTime::now()))
        })
    }
}

/// A folder (one every replica mounts, for several): a mark is a file made
/// with `O_EXCL`, which exactly one creator wins. Marks older than what they
/// were kept for are swept now and then.
pub struct FolderOnce {
    dir: PathBuf,
}

impl FolderOnce {
    /// Marks in `dir`, made if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FolderOnce, OnceError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| OnceError(format!("{}: {e}", dir.display())))?;
        Ok(FolderOnce { dir })
    }

    fn path(&self, key: &str) -> Result<PathBuf, OnceError> {
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(OnceError(format!("`{key}` is not a mark name")));
        }
        Ok(self.dir.join(key))
    }

    /// Marks past their time go, away from the async workers.
    fn sweep(dir: &std::path::Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let until = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
            if until.is_some_and(|u| u < now) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl OnceStore for FolderOnce {
    fn claim<'a>(&'a self, key: &'a str, keep: Duration) -> OnceFuture<'a, bool> {
        Box::pin(async move {
            let path = self.path(key)?;
            let until = (SystemTime::now() + keep)
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let dir = self.dir.clone();
            let claimed = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                {
                    Ok(mut file) => {
                        file.write_all(until.to_string().as_bytes())?;
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(|e| OnceError(e.to_string()))?
            .map_err(|e| OnceError(format!("{}: {e}", dir.display())))?;
            if claimed && rand_tick() {
                let dir = self.dir.clone();
                tokio::task::spawn_blocking(move || FolderOnce::sweep(&dir));
            }
            Ok(claimed)
        })
    }

    fn is_set<'a>(&'a self, key: &'a str) -> OnceFuture<'a, bool> {
        Box::pin(async move {
            let path = self.path(key)?;
            match tokio::fs::metadata(&path).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(OnceError(format!("{}: {e}", path.display()))),
            }
        })
    }
}

/// True about once in 256 calls: when to sweep.
fn rand_tick() -> bool {
    let mut b = [0u8; 1];
    getrandom::fill(&mut b).is_ok() && b[0] == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn once_only(store: &dyn OnceStore) {
        let keep = Duration::from_secs(60);
        assert!(!store.is_set("code-1").await.unwrap());
        assert!(store.claim("code-1", keep).await.unwrap());
        assert!(!store.claim("code-1", keep).await.unwrap());
        assert!(store.is_set("code-1").await.unwrap());
        assert!(store.claim("code-2", keep).await.unwrap());
    }

    #[tokio::test]
    async fn marks_in_memory_expire_and_are_swept_as_they_grow() {
        let m = MemoryOnce::default();
        assert!(m.claim("a", Duration::ZERO).await.unwrap());
        assert!(!m.is_set("a").await.unwrap());
        assert!(m.claim("a", Duration::from_secs(60)).await.unwrap());
        for i in 0..5000 {
            assert!(m.claim(&format!("k{i}"), Duration::ZERO).await.unwrap());
        }
        let marks = m.marks.lock().unwrap();
        assert!(marks.until.len() < 5000, "{}", marks.until.len());
        assert!(marks.until.contains_key("a"));
    }

    #[tokio::test]
    async fn a_mark_is_set_once_in_memory_and_in_a_folder() {
        once_only(&MemoryOnce::default()).await;
        let dir = tempfile::tempdir().unwrap();
        once_only(&FolderOnce::open(dir.path()).unwrap()).await;
        // Two stores on one folder (two replicas) agree.
        let other = FolderOnce::open(dir.path()).unwrap();
        assert!(
            !other
                .claim("code-1", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            other
                .claim("../escape", Duration::from_secs(1))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn many_claims_at_once_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FolderOnce::open(dir.path()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.claim("race", Duration::from_secs(60)).await.unwrap()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1);
    }
}
