//! The tools this server serves: each loaded once (manifest, imports and
//! grants checked, compiled), with its input schema compiled for validating
//! arguments before any guest code runs. The set is swapped whole: a call
//! holds the version it started with; the next call sees the new one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use airlock_policy::OperatorPolicy;
use airlock_runtime::{Runtime, Tool};
use arc_swap::ArcSwap;

use crate::authz::EntityError;
use crate::store::{StoreError, StoredTool, ToolStore, digest_of};

/// A loaded tool that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Its manifest's input schema is not a JSON Schema.
    #[error("the input schema does not compile: {0}")]
    InputSchema(Box<jsonschema::ValidationError<'static>>),
    /// It cannot be described to the authorization policies.
    #[error(transparent)]
    Entity(#[from] EntityError),
}

/// Why one tool (a file, or a stored tool) is not served.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Its file could not be read.
    #[error("{0}")]
    Read(std::io::Error),
    /// The store could not give its bytes.
    #[error("{0}")]
    Stored(StoreError),
    /// It does not load: manifest, grants, imports or compilation.
    #[error("{0}")]
    Load(Box<airlock_runtime::LoadError>),
    /// It loads but cannot be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Another tool of its name is served already.
    #[error("a tool named `{0}` is already served")]
    Duplicate(String),
}

/// Why the tools could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A tools folder could not be listed.
    #[error("tools folder {}: {error}", folder.display())]
    Folder {
        /// The folder.
        folder: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A tool in a folder is not served (or a stored one clashes).
    #[error("{at}: {error}")]
    Tool {
        /// The tool's file, or the stored tool.
        at: String,
        /// Why it is not served.
        error: ToolError,
    },
    /// The store could not list its tools.
    #[error("{0}")]
    List(StoreError),
}

/// Where a served tool came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A configured tools folder: changed there, not by uploads.
    Folder(std::path::PathBuf),
    /// The tool store.
    Store,
}

/// A tool and what serving it needs.
pub(crate) struct Served {
    pub(crate) tool: Tool,
    pub(crate) input: jsonschema::Validator,
    /// The tool as Cedar sees it.
    pub(crate) entity: cedar_policy::Entity,
    /// The sha256 of its `.wasm`.
    pub(crate) digest: String,
    pub(crate) source: Source,
    /// Its metric handles, resolved at its first call.
    pub(crate) metrics: std::sync::OnceLock<crate::metrics::ToolMetrics>,
}

impl Served {
    /// What serving a loaded tool needs.
    pub(crate) fn new(tool: Tool, digest: String, source: Source) -> Result<Served, ServeError> {
        let input = jsonschema::validator_for(&tool.manifest().input_schema)
            .map_err(|e| ServeError::InputSchema(Box::new(e)))?;
        let entity = crate::authz::tool_entity_of(&tool)?;
        Ok(Served {
            tool,
            input,
            entity,
            digest,
            source,
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// The tool's name.
    pub(crate) fn name(&self) -> &str {
        &self.tool.manifest().name
    }

    /// The argument errors of `input` (path and message), none when valid.
    pub(crate) fn argument_errors(&self, input: &serde_json::Value) -> Vec<String> {
        self.input
            .iter_errors(input)
            .take(8)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() {
                    "the arguments".to_string()
                } else {
                    at
                };
                format!("{at}: {e}")
            })
            .collect()
    }
}

/// Tools by name.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    tools: Arc<ArcSwap<BTreeMap<String, Arc<Served>>>>,
}

/// Readers of the store's objects at once, while the caller compiles.
const READERS: usize = 8;

/// Hand each of `listed`'s objects to `load`, in order, as the store reads
/// them: a few readers fetch ahead (a store's latency, not its bandwidth,
/// bounds one read) while this thread compiles the ones already read.
fn read_ahead(
    store: &dyn ToolStore,
    listed: &[StoredTool],
    mut load: impl FnMut(&StoredTool, Result<Vec<u8>, StoreError>),
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (sent, arrived) = std::sync::mpsc::sync_channel(READERS * 2);
        for _ in 0..READERS.min(listed.len()) {
            let (sent, next) = (sent.clone(), &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(stored) = listed.get(i) else { break };
                    if sent.send((i, store.read(&stored.digest))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sent);
        // Objects arrive in any order; they are loaded in the listed order.
        let mut early = BTreeMap::new();
        let mut due = 0;
        for (i, bytes) in arrived {
            early.insert(i, bytes);
            while let Some(bytes) = early.remove(&due) {
                load(&listed[due], bytes);
                due += 1;
            }
        }
    });
}

impl Registry {
    /// Load every `.wasm` in `folders` and every tool in `store`. A folder
    /// tool that does not load stops the start, naming the file and why
    /// (the operator put it there). A stored tool that does not load (its
    /// blob gone, a policy made stricter since) is skipped: the registry and,
    /// by name, each stored tool kept out (its digest, and why).
    pub(crate) fn load(
        runtime: &Runtime,
        folders: &[impl AsRef<Path>],
        store: Option<&dyn ToolStore>,
        policy: &OperatorPolicy,
    ) -> Result<(Registry, BTreeMap<String, (String, String)>), RegistryError> {
        let mut skipped = BTreeMap::new();
        let mut tools = BTreeMap::new();
        let mut add = |served: Served, from: String| match tools.entry(served.name().to_string()) {
            std::collections::btree_map::Entry::Occupied(_) => Err(RegistryError::Tool {
                at: from,
                error: ToolError::Duplicate(served.name().to_string()),
            }),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Arc::new(served));
                Ok(())
            }
        };
        for folder in folders {
            let folder = folder.as_ref();
            let entries = std::fs::read_dir(folder).map_err(|error| RegistryError::Folder {
                folder: folder.to_path_buf(),
                error,
            })?;
            let mut paths: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .collect();
            paths.sort();
            for path in paths {
                let at = path.display().to_string();
                let loaded = (|| {
                    let bytes = std::fs::read(&path).map_err(ToolError::Read)?;
                    let tool = runtime
                        .load(&bytes, policy)
                        .map_err(|e| ToolError::Load(Box::new(e)))?;
                    Ok::<_, ToolError>(Served::new(
                        tool,
                        digest_of(&bytes),
                        Source::Folder(folder.into()),
                    )?)
                })();
                match loaded {
                    Ok(served) => add(served, at)?,
                    Err(error) => return Err(RegistryError::Tool { at, error }),
                }
            }
        }
        if let Some(store) = store {
            let listed = store.list().map_err(RegistryError::List)?;
            let mut loaded = Vec::with_capacity(listed.len());
            read_ahead(store, &listed, |stored, bytes| {
                loaded.push((|| {
                    let bytes = bytes.map_err(ToolError::Stored)?;
                    let tool = runtime
                        .load(&bytes, policy)
                        .map_err(|e| ToolError::Load(Box::new(e)))?;
                    Ok::<_, ToolError>(Served::new(tool, stored.digest.clone(), Source::Store)?)
                })());
            });
            for (stored, loaded) in listed.into_iter().zip(loaded) {
                let at = format!("stored tool `{}` ({})", stored.name, stored.digest);
                // Why, as the skipped list and the log show it.
                let refused = match loaded {
                    Ok(served) => add(served, at).err().map(|e| e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(why) = refused {
                    tracing::warn!(tool = %stored.name, digest = %stored.digest, "not serving a stored tool: {why}");
                    skipped.insert(stored.name, (stored.digest, why));
                }
            }
        }
        Ok((
            Registry {
                tools: Arc::new(ArcSwap::from_pointee(tools)),
            },
            skipped,
        ))
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Served>> {
        self.tools.load().get(name).cloned()
    }

    /// Every tool, as of now.
    pub(crate) fn all(&self) -> Vec<Arc<Served>> {
        self.tools.load().values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.tools.load().len()
    }

    /// Serve `served` under its name, replacing any tool of that name.
    pub(crate) fn insert(&self, served: Served) {
        let served = Arc::new(served);
        self.tools.rcu(|tools| {
            let mut tools = BTreeMap::clone(tools);
            tools.insert(served.name().to_string(), served.clone());
            tools
        });
    }

    /// Stop serving `name`.
    pub(crate) fn remove(&self, name: &str) {
        self.tools.rcu(|tools| {
            let mut tools = BTreeMap::clone(tools);
            tools.remove(name);
            tools
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose reads take longer for earlier objects, and fail for one.
    struct Slow;

    impl ToolStore for Slow {
        fn list(&self) -> Result<Vec<StoredTool>, StoreError> {
            unreachable!()
        }
        fn read(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
            let i: u64 = digest.parse().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20 - i));
            if i == 7 {
                return Err(StoreError::new("slow", "gone"));
            }
            Ok(digest.as_bytes().to_vec())
        }
        fn put(&self, _: &StoredTool, _: &[u8], _: bool) -> Result<Option<StoredTool>, StoreError> {
            unreachable!()
        }
        fn signers(&self) -> Result<BTreeMap<String, Option<String>>, StoreError> {
            unreachable!()
        }
        fn remove(&self, _: &str) -> Result<Option<StoredTool>, StoreError> {
            unreachable!()
        }
        fn poll(&self, _: Option<&str>) -> Result<Option<(String, Vec<StoredTool>)>, StoreError> {
            unreachable!()
        }
    }

    #[test]
    fn objects_read_ahead_are_loaded_in_the_listed_order_each_with_its_own_result() {
        let listed: Vec<StoredTool> = (0..20)
            .map(|i| StoredTool {
                name: format!("t{i}"),
                digest: i.to_string(),
                size: 0,
                uploaded_by: String::new(),
                uploaded_at: 0,
                signer: None,
            })
            .collect();
        let mut seen = Vec::new();
        read_ahead(&Slow, &listed, |stored, bytes| {
            seen.push((stored.name.clone(), bytes.map(String::from_utf8).map(Result::unwrap)));
        });
        assert_eq!(seen.len(), 20, "every object, once");
        for (i, (name, bytes)) in seen.into_iter().enumerate() {
            assert_eq!(name, format!("t{i}"));
            match bytes {
                Ok(text) => assert_eq!(text, i.to_string()),
                Err(e) => assert!(i == 7 && e.to_string().contains("gone"), "{i}: {e}"),
            }
        }
    }
}
