//! Files written whole: compiled code, stored tools and built tools alike.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` whole or not at all: a temp file beside it,
/// flushed, renamed over, and the folder synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A name of its own: another writer may be writing the same file.
    let mut unique = [0u8; 8];
    getrandom::fill(&mut unique).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_extension(format!("{}.tmp", hex::encode(unique)));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Renamed: the new content is what readers see, so this is a success
    // even if the folder's sync fails (then only a power cut could lose it).
    if let Some(dir) = path.parent()
        && let Err(e) = File::open(dir).and_then(|d| d.sync_all())
    {
        tracing::warn!("{}: syncing the folder: {e}", dir.display());
    }
    Ok(())
}
