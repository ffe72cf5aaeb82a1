//! The tools this server serves: each loaded once (manifest, imports and
//! grants checked, compiled), with its input schema compiled for validating
//! arguments before any guest code runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use airlock_policy::OperatorPolicy;
use airlock_runtime::{Runtime, Tool};

/// A tool and what serving it needs.
pub(crate) struct Served {
    pub(crate) tool: Tool,
    pub(crate) input: jsonschema::Validator,
    /// The tool as Cedar sees it.
    pub(crate) entity: cedar_policy::Entity,
}

impl Served {
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
    tools: Arc<BTreeMap<String, Arc<Served>>>,
}

impl Registry {
    /// Load every `.wasm` in `folders`. A tool that does not load stops the
    /// start, naming the file and why: nothing half-served.
    pub(crate) fn load(
        runtime: &Runtime,
        folders: &[impl AsRef<Path>],
        policy: &OperatorPolicy,
    ) -> Result<Registry, String> {
        let mut tools = BTreeMap::new();
        for folder in folders {
            let folder = folder.as_ref();
            let entries = std::fs::read_dir(folder)
                .map_err(|e| format!("tools folder {}: {e}", folder.display()))?;
            let mut paths: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .collect();
            paths.sort();
            for path in paths {
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let tool = runtime
                    .load(&bytes, policy)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let name = tool.manifest().name.clone();
                let input =
                    jsonschema::validator_for(&tool.manifest().input_schema).map_err(|e| {
                        format!("{}: the input schema does not compile: {e}", path.display())
                    })?;
                let entity = crate::authz::tool_entity_of(&tool)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if tools
                    .insert(
                        name.clone(),
                        Arc::new(Served {
                            tool,
                            input,
                            entity,
                        }),
                    )
                    .is_some()
                {
                    return Err(format!(
                        "{}: a tool named `{name}` is already served",
                        path.display()
                    ));
                }
            }
        }
        Ok(Registry {
            tools: Arc::new(tools),
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Served>> {
        self.tools.get(name).cloned()
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Served>> {
        self.tools.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.tools.len()
    }
}
