//! `host serve` configurations for tests, built in one place: a [`Serve`]
//! starts from what every test wants (listeners on 127.0.0.1:0, metrics,
//! an audit file in the test's folder) and each call adds one setting. The
//! result is the TOML an operator writes, started in process
//! ([`Serve::start`]) or written for a `host serve` process ([`Serve::write`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_server::{Running, ServeConfig};
use serde_json::{Value, json};
use toml::Table;

use crate::alb::{ALB_ARN, ISSUER};

/// A `host serve` configuration under construction.
#[derive(Clone)]
pub struct Serve {
    dir: PathBuf,
    table: Table,
}

impl Serve {
    /// Listeners for `/invocations` and MCP and metrics on 127.0.0.1:0, the
    /// audit trail in `dir/audit.jsonl`, nothing served yet.
    pub fn new(dir: &Path) -> Serve {
        let serve = Serve {
            dir: dir.to_path_buf(),
            table: Table::new(),
        };
        serve
            .set("metrics", "127.0.0.1:0")
            .set("http.listen", "127.0.0.1:0")
            .set("mcp.listen", "127.0.0.1:0")
            .set("audit.sink", dir.join("audit.jsonl").display().to_string())
    }

    /// Set one value by its dotted path (`limits.queue_wait_ms`).
    pub fn set(mut self, path: &str, value: impl Into<toml::Value>) -> Serve {
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().expect("a path names a key");
        let mut table = &mut self.table;
        for key in keys {
            table = table
                .entry(key)
                .or_insert_with(|| toml::Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("`{key}` in `{path}` is not a table"));
        }
        table.insert(last.to_string(), value.into());
        self
    }

    /// Append a table to an array of tables (`identity.jwt_issuers`).
    pub fn push(mut self, path: &str, value: Value) -> Serve {
        let value: toml::Value = toml::Value::try_from(value).expect("a TOML table");
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().expect("a path names a key");
        let mut table = &mut self.table;
        for key in keys {
            table = table
                .entry(key)
                .or_insert_with(|| toml::Value::Table(Table::new()))
                .as_table_mut()
                .unwrap();
        }
        table
            .entry(last)
            .or_insert_with(|| toml::Value::Array(Vec::new()))
            .as_array_mut()
            .unwrap_or_else(|| panic!("`{path}` is not an array"))
            .push(value);
        self
    }

    /// The test's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write `text` to `dir/name`; its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Serve a folder of tools.
    pub fn tools(self, folder: &Path) -> Serve {
        let mut tools = self
            .table
            .get("tools")
            .and_then(|t| t.as_array().cloned())
            .unwrap_or_default();
        tools.push(folder.display().to_string().into());
        self.set("tools", tools)
    }

    /// Serve these built tools, copied into `dir/tools`.
    pub fn built_tools(self, names: &[&str]) -> Serve {
        let folder = self.dir.join("tools");
        std::fs::create_dir_all(&folder).unwrap();
        for name in names {
            std::fs::copy(crate::tool_path(name), folder.join(format!("{name}.wasm"))).unwrap();
        }
        self.tools(&folder)
    }

    /// The operator's policy (TOML), written to `dir/policy.toml`.
    pub fn policy(self, text: &str) -> Serve {
        let path = self.file("policy.toml", text);
        self.set("policy", path.display().to_string())
    }

    /// Cedar policies, written to `dir/policies.cedar`.
    pub fn cedar(self, policies: &str) -> Serve {
        let path = self.file("policies.cedar", policies);
        self.set("authorization.policies", path.display().to_string())
    }

    /// A Cedar schema, written to `dir/schema.cedarschema`.
    pub fn cedar_schema(self, schema: &str) -> Serve {
        let path = self.file("schema.cedarschema", schema);
        self.set("authorization.schema", path.display().to_string())
    }

    /// Callers verified by the test ALB's header, its keys at `key_url`.
    pub fn alb(self, key_url: &str) -> Serve {
        self.set("identity.alb.signer_arn", ALB_ARN)
            .set("identity.alb.key_url", key_url)
            .set("identity.alb.issuer", ISSUER)
    }

    /// Bearer JWTs from the issuer at `discovery_url` for `audience`.
    pub fn jwt_issuer(self, discovery_url: &str, audience: &str) -> Serve {
        self.push(
            "identity.jwt_issuers",
            json!({"discovery_url": discovery_url, "audiences": [audience]}),
        )
    }

    /// The same, its users' ids starting with `prefix` (beside the test ALB,
    /// another issuer: its `sub`s are another namespace).
    pub fn jwt_issuer_prefixed(self, discovery_url: &str, audience: &str, prefix: &str) -> Serve {
        self.push(
            "identity.jwt_issuers",
            json!({"discovery_url": discovery_url, "audiences": [audience], "user_prefix": prefix}),
        )
    }

    /// The admin API on 127.0.0.1:0 taking `key` (held by `name`).
    pub fn admin_key(self, name: &str, key: &str) -> Serve {
        use sha2::Digest;
        self.set("admin.listen", "127.0.0.1:0").push(
            "admin.keys",
            json!({"name": name, "sha256": hex::encode(sha2::Sha256::digest(key.as_bytes()))}),
        )
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.table).unwrap()
    }

    /// The configuration as `host serve` reads it; panics naming the fault.
    pub fn config(&self) -> ServeConfig {
        let text = self.to_toml();
        ServeConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Start in process, with `tokens` as the broker when given.
    pub async fn start(&self, tokens: Option<Arc<dyn airlock_credential::TokenSource>>) -> Running {
        airlock_server::start(self.config(), tokens)
            .await
            .unwrap_or_else(|e| panic!("host serve did not start: {e}\n{}", self.to_toml()))
    }

    /// Write `dir/serve.toml` for a `host serve` process; its path.
    pub fn write(&self) -> PathBuf {
        self.file("serve.toml", &self.to_toml())
    }
}
