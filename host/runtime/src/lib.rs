//! Airlock's sandboxed tool runtime.
//!
//! A [`Runtime`] owns one wasmtime engine (pooling allocator, epoch ticker)
//! and a linker that defines only what tools may import. [`Runtime::load`]
//! reads a tool's embedded manifest, checks its imports and grants against the
//! operator's policy, and compiles it to a cached `InstancePre`;
//! [`Runtime::invoke`] runs one call in a fresh instance under the tool's
//! limits. Nothing is shared between calls.

mod call;
mod imports;
mod outbound;

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_manifest::{Manifest, ManifestError};
use airlock_policy::{Effective, OperatorPolicy, PolicyError};
use serde::Serialize;
use serde::de::IgnoredAny;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

pub use call::{LogLevel, LogLine};
pub use imports::RefusedImport;
pub use outbound::{RequestOutcome, RequestRecord};

use airlock_identity::{Broker, Consent};
use call::{CallState, Caller};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "airlock:tool/tool",
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:random": wasmtime_wasi::p2::bindings::random,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
    });
}

pub use bindings::airlock::tool::types::ToolError;

/// Engine-wide settings. The defaults suit a small server.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Calls that may run at once; the pool is sized for this many instances.
    pub max_concurrent_calls: u32,
    /// The largest linear memory any tool may get, in MiB (the pool's slot size).
    pub max_memory_mib: u64,
    /// Wasm stack per call, in bytes: deep recursion beyond it traps.
    pub max_wasm_stack: usize,
    /// How often the epoch ticker runs; deadlines are whole ticks.
    pub epoch_tick: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrent_calls: 64,
            max_memory_mib: 256,
            max_wasm_stack: 512 * 1024,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

/// Why a tool was not accepted. Nothing of a refused tool is kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The `.wasm` or its manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The grants do not pass the operator's policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The component imports something its grants do not allow.
    #[error("tool `{tool}` has imports that are not granted: {}", describe_refused(.refused))]
    Import {
        /// The tool.
        tool: String,
        /// Each refused import and why.
        refused: Vec<RefusedImport>,
    },
    /// Compilation or linking failed.
    #[error("tool `{tool}` could not be compiled: {message}")]
    Compile {
        /// The tool.
        tool: String,
        /// wasmtime's message.
        message: String,
    },
}

fn describe_refused(refused: &[RefusedImport]) -> String {
    refused
        .iter()
        .map(|r| format!("`{}` ({})", r.import, r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A loaded tool: manifest, effective permissions, and its pre-linked instance.
#[derive(Clone)]
pub struct Tool {
    inner: Arc<ToolInner>,
}

struct ToolInner {
    manifest: Manifest,
    imports: Vec<String>,
    effective: Arc<Effective>,
    pre: bindings::ToolPre<CallState>,
}

impl Tool {
    /// The embedded manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The component's imports.
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }

    /// What the tool may do under the operator's policy.
    pub fn effective(&self) -> &Effective {
        &self.inner.effective
    }
}

/// Why a call did not produce output. Each variant names the limit or fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum InvokeError {
    /// The input is not JSON.
    #[error("the input is not valid JSON: {message}")]
    InputNotJson {
        /// The parser's message.
        message: String,
    },
    /// The tool reported an error.
    #[error("the tool failed: {error}")]
    Tool {
        /// The tool's error.
        error: ToolFailure,
    },
    /// The wall-clock deadline passed.
    #[error("the call ran past its deadline of {timeout_ms} ms and was stopped")]
    Timeout {
        /// The deadline.
        timeout_ms: u64,
    },
    /// The tool tried to grow memory past its cap.
    #[error("the tool exceeded its memory limit of {memory_mib} MiB and was stopped")]
    MemoryLimit {
        /// The cap.
        memory_mib: u64,
    },
    /// The wasm stack overflowed (runaway recursion).
    #[error("the tool overflowed its stack (runaway recursion) and was stopped")]
    StackOverflow,
    /// The output is over the cap.
    #[error("the tool's output is {size} bytes, over its limit of {limit} bytes")]
    OutputTooLarge {
        /// Bytes returned.
        size: usize,
        /// The cap in bytes.
        limit: usize,
    },
    /// The output is not JSON.
    #[error("the tool's output is not valid JSON: {message}")]
    OutputNotJson {
        /// The parser's message.
        message: String,
    },
    /// The guest trapped (a panic, an abort, or a wasm fault).
    #[error("the tool crashed: {message}")]
    Trap {
        /// What trapped.
        message: String,
    },
    /// All instance slots are in use.
    #[error("the host is at its limit of concurrent calls; retry shortly")]
    Busy,
    /// The user must consent at the provider before the tool can act for
    /// them. After consent (and session binding), call again.
    #[error(
        "authorization required: the user must consent to provider `{provider}` at {authorization_url}"
    )]
    AuthorizationRequired {
        /// The provider.
        provider: String,
        /// Where the user consents.
        authorization_url: String,
    },
}

/// The error a tool returned, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "message")]
pub enum ToolFailure {
    /// See the WIT `tool-error`.
    InvalidInput(String),
    /// See the WIT `tool-error`.
    Upstream(String),
    /// See the WIT `tool-error`.
    Failed(String),
}

impl std::fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolFailure::InvalidInput(m) => write!(f, "invalid input: {m}"),
            ToolFailure::Upstream(m) => write!(f, "upstream error: {m}"),
            ToolFailure::Failed(m) => f.write_str(m),
        }
    }
}

/// One call's result and its trail: logs and outgoing requests.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    /// The tool's name.
    pub tool: String,
    /// The user the call ran for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The JSON output, or why there is none.
    pub outcome: Result<serde_json::Value, InvokeError>,
    /// Lines the tool logged (capped).
    pub logs: Vec<LogLine>,
    /// Every outgoing request and what became of it.
    pub requests: Vec<RequestRecord>,
    /// Wall-clock time of the call.
    pub elapsed: Duration,
    /// The pending consent behind an `AuthorizationRequired` outcome, with
    /// its session; kept host-side (not serialized).
    #[serde(skip)]
    pub consent: Option<Consent>,
}

/// The engine, the linker and the epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    config: RuntimeConfig,
    broker: Option<Arc<Broker>>,
}

impl Runtime {
    /// Build the engine and linker and start the epoch ticker.
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_concurrent_calls.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .max_core_instances_per_component(16)
            .total_memories(n * 2)
            .max_memories_per_component(4)
            .total_tables(n * 8)
            .max_tables_per_component(16)
            .total_stacks(n)
            .max_memory_size((config.max_memory_mib as usize) << 20);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .async_stack_size(config.max_wasm_stack + (1 << 20))
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;
        start_ticker(&engine, config.epoch_tick);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(&mut linker)?;
        {
            use wasmtime_wasi::cli::WasiCli;
            use wasmtime_wasi::p2::bindings::{cli, random};
            use wasmtime_wasi::random::WasiRandom;
            random::insecure::add_to_linker::<CallState, WasiRandom>(&mut linker, |t| {
                t.wasi.random()
            })?;
            random::insecure_seed::add_to_linker::<CallState, WasiRandom>(&mut linker, |t| {
                t.wasi.random()
            })?;
            cli::exit::add_to_linker::<CallState, WasiCli>(
                &mut linker,
                wasmtime_wasi::cli::WasiCliView::cli,
            )?;
        }
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::airlock::tool::log::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )?;
        bindings::airlock::tool::types::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |s| s,
        )?;
        Ok(Runtime {
            engine,
            linker,
            config,
            broker: None,
        })
    }

    /// Broker OAuth tokens through `broker` for tools with OAuth grants.
    pub fn with_broker(mut self, broker: Arc<Broker>) -> Runtime {
        self.broker = Some(broker);
        self
    }

    /// The broker, if any.
    pub fn broker(&self) -> Option<&Arc<Broker>> {
        self.broker.as_ref()
    }

    /// Accept a tool: read its manifest, check imports and grants, compile, pre-link.
    pub fn load(&self, wasm: &[u8], policy: &OperatorPolicy) -> Result<Tool, LoadError> {
        let inspected = airlock_manifest::inspect(wasm)?;
        let manifest = inspected.manifest;
        let name = manifest.name.clone();
        imports::check(&inspected.imports, &manifest.grants).map_err(|refused| {
            LoadError::Import {
                tool: name.clone(),
                refused,
            }
        })?;
        let mut effective = policy.effective(&name, &manifest.grants, &manifest.limits)?;
        effective.limits.memory_mib = effective.limits.memory_mib.min(self.config.max_memory_mib);
        let compile = |e: wasmtime::Error| LoadError::Compile {
            tool: name.clone(),
            message: format!("{e:#}"),
        };
        let component = Component::new(&self.engine, wasm).map_err(compile)?;
        let pre = self.linker.instantiate_pre(&component).map_err(compile)?;
        let pre = bindings::ToolPre::new(pre).map_err(compile)?;
        Ok(Tool {
            inner: Arc::new(ToolInner {
                manifest,
                imports: inspected.imports,
                effective: Arc::new(effective),
                pre,
            }),
        })
    }

    /// Run one call in a fresh instance, for no user: OAuth-covered requests
    /// are refused.
    pub async fn invoke(&self, tool: &Tool, input: &str) -> CallReport {
        self.invoke_as(tool, None, input).await
    }

    /// Run one call in a fresh instance for `user` (a verified user id):
    /// requests to OAuth-covered hosts carry that user's token.
    pub async fn invoke_as(&self, tool: &Tool, user: Option<&str>, input: &str) -> CallReport {
        let started = Instant::now();
        let caller = Caller {
            user: user.map(Arc::from),
            broker: self.broker.clone(),
        };
        // Checked without building a value: the tool parses the input itself.
        let (mut outcome, logs, requests, consent) = match serde_json::from_str::<IgnoredAny>(input)
        {
            Err(e) => {
                let outcome = Err(InvokeError::InputNotJson {
                    message: e.to_string(),
                });
                (outcome, Vec::new(), Vec::new(), None)
            }
            Ok(_) => self.run(tool, input, caller).await,
        };
        // Whatever the tool made of its held-back request, the call's outcome
        // is the consent the user owes.
        if let Some(c) = &consent {
            outcome = Err(InvokeError::AuthorizationRequired {
                provider: c.provider.clone(),
                authorization_url: c.authorization_url.clone(),
            });
        }
        CallReport {
            tool: tool.inner.manifest.name.clone(),
            user: user.map(str::to_string),
            outcome,
            logs,
            requests,
            elapsed: started.elapsed(),
            consent,
        }
    }

    async fn run(
        &self,
        tool: &Tool,
        input: &str,
        caller: Caller,
    ) -> (
        Result<serde_json::Value, InvokeError>,
        Vec<LogLine>,
        Vec<RequestRecord>,
        Option<Consent>,
    ) {
        let limits = tool.inner.effective.limits;
        let state = CallState::new(
            tool.inner.effective.clone(),
            &tool.inner.manifest.name,
            caller,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let tick = self.config.epoch_tick.as_millis().max(1) as u64;
        store.set_epoch_deadline(limits.timeout_ms.div_ceil(tick) + 1);
        store.epoch_deadline_trap();
        let deadline = Duration::from_millis(limits.timeout_ms);
        let result = tokio::time::timeout(deadline, async {
            let instance = tool.inner.pre.instantiate_async(&mut store).await?;
            instance.call_invoke(&mut store, input).await
        })
        .await;
        let outcome = call::classify(result, store.data(), limits);
        let state = store.into_data();
        let requests = state.records.lock().map(|r| r.clone()).unwrap_or_default();
        let consent = state.consent.lock().ok().and_then(|mut c| c.take());
        (outcome, state.logs.lines, requests, consent)
    }

    /// The wasmtime engine, for benchmarks that compare against bare wasmtime.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// One thread per engine advances the epoch; it ends when the engine is dropped.
fn start_ticker(engine: &Engine, tick: Duration) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("airlock-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .expect("spawning the epoch thread");
}
