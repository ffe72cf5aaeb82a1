//! Compiled code kept on disk: one file per component and engine settings,
//! named by the sha256 of both, and mapped straight from the file on the next
//! load (no compile, no decompression, no copy).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A folder of compiled components for one engine.
pub(crate) struct CompileCache {
    dir: PathBuf,
    /// The engine's compile settings and wasmtime's version, hashed: code
    /// compiled under other settings has another name.
    engine: Sha256,
}

impl CompileCache {
    /// Keep `engine`'s compiled code in `dir`, made if missing.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<CompileCache> {
        std::fs::create_dir_all(dir)?;
        let mut settings = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut settings);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            engine: settings.0,
        })
    }

    /// Where `wasm`'s compiled code is kept.
    pub(crate) fn path(&self, wasm: &[u8]) -> PathBuf {
        let mut key = self.engine.clone();
        key.update(wasm);
        self.dir
            .join(format!("{}.cwasm", hex::encode(key.finalize())))
    }

    /// `wasm` compiled: mapped from its file when there is one that loads,
    /// else compiled and kept. A file that does not load (cut short, written
    /// by another version) is compiled again and replaced.
    // The one unsafe call of the workspace: wasmtime's own cache made the
    // same call inside wasmtime, after decompressing and copying the code
    // on every load.
    #[allow(unsafe_code)]
    pub(crate) fn component(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
        let path = self.path(wasm);
        if path.exists() {
            // SAFETY: only this cache writes here, each file whole and then
            // renamed into place (`write_atomically`), so a mapped file is never changed under
            // the engine; wasmtime checks the header, its version and the
            // engine's settings, and refuses a file that does not match.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "compiling again: the cached code does not load: {e:#}"
                ),
            }
        }
        let component = Component::new(engine, wasm)?;
        let kept = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|code| crate::write_atomically(&path, &code));
        if let Err(e) = kept {
            // The tool still loads; the next start compiles it again.
            tracing::warn!(dir = %self.dir.display(), "compiled code not cached: {e}");
        }
        Ok(component)
    }
}

/// Feeds a `Hash` into sha256: the engine's settings as bytes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
