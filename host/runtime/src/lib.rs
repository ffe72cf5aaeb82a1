//! Airlock's sandboxed tool runtime.
//!
//! A [`Runtime`] owns one wasmtime engine (pooling allocator, epoch ticker),
//! a linker that defines only what tools may import, and the outbound
//! transport. [`Runtime::load`] reads a tool's embedded manifest, checks its
//! imports and grants against the operator's policy, and compiles it to a
//! cached `InstancePre`; [`Runtime::invoke_as`] runs one call in a fresh
//! instance under the tool's limits. Nothing is shared between calls. Its only
//! view of identity is a [`TokenSource`].

mod adapter;
mod budget;
mod call;
mod capability;
mod compiled;
mod files;
mod outbound;
mod report;
mod scan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_credential::TokenSource;
use airlock_manifest::Manifest;
use airlock_policy::{OperatorPolicy, Permissions};
use airlock_verify::VerifiedUser;
use serde::de::IgnoredAny;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

pub use capability::{ImportMode, classes as import_classes};
pub use report::{
    CallOutcome, CallReport, HostResource, InvokeError, LoadError, LogLevel, LogLine, LogSource, RefusedImport,
    RequestOutcome, RequestRecord, ToolFailure,
};
pub use files::write_atomically;
pub use scan::{Encoding, Found, Place, Redaction, Redactor, RedactorCache, StreamRedactor};

/// Why the engine could not be built (wasmtime's configuration, the compile cache).
pub type EngineError = wasmtime::Error;

use call::CallState;
use compiled::CompileCache;
use outbound::{OnBehalf, Transport};

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

/// Bytes of each pooled linear memory kept mapped between calls: a small
/// tool's whole working set, so resident memory stays bounded by the pool.
const KEEP_RESIDENT: usize = 2 << 20;

/// Builds a [`Runtime`]. The defaults suit a small server.
#[derive(Clone)]
pub struct RuntimeBuilder {
    max_concurrent_calls: u32,
    max_memory_mib: u64,
    max_wasm_stack: usize,
    epoch_tick: Duration,
    connect_timeout: Duration,
    tokens: Option<Arc<dyn TokenSource>>,
    compile_cache: Option<std::path::PathBuf>,
    imports: ImportMode,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            max_concurrent_calls: 64,
            max_memory_mib: 256,
            max_wasm_stack: 512 * 1024,
            epoch_tick: Duration::from_millis(10),
            connect_timeout: Duration::from_secs(10),
            tokens: None,
            compile_cache: None,
            imports: ImportMode::Inert,
        }
    }
}

impl RuntimeBuilder {
    /// Calls that may run at once; the pool is sized for this many instances
    /// (default 64). A call beyond them ends as [`InvokeError::Busy`].
    pub fn max_concurrent_calls(mut self, n: u32) -> Self {
        self.max_concurrent_calls = n.max(1);
        self
    }

    /// The most memory any tool may get, in MiB (default 256): the pool's slot size.
    pub fn max_memory_mib(mut self, mib: u64) -> Self {
        self.max_memory_mib = mib.max(1);
        self
    }

    /// Wasm stack per call, in bytes (default 512 KiB): deep recursion beyond it traps.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = bytes;
        self
    }

    /// How often the epoch ticker runs (default 10 ms). A running guest
    /// yields to the executor at each tick and is stopped at the first tick
    /// past its deadline.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick;
        self
    }

    /// How long DNS, TCP and the TLS handshake of an outgoing connection may
    /// take together (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Broker OAuth tokens through `tokens` for tools with OAuth grants.
    /// Without one, requests that need a credential are refused.
    pub fn token_source(mut self, tokens: Arc<dyn TokenSource>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Keep compiled code in `dir`, one file per component and engine
    /// settings: a tool seen before is mapped from its file, not compiled.
    pub fn compile_cache(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.compile_cache = Some(dir.into());
        self
    }

    /// Refuse the interfaces otherwise linked inert (filesystem without
    /// preopens, empty environment, terminals): only components that import
    /// nothing beyond the basics and their grants load.
    pub fn strict_imports(mut self, strict: bool) -> Self {
        self.imports = if strict {
            ImportMode::Strict
        } else {
            ImportMode::Inert
        };
        self
    }

    /// Build the engine and linker and start the epoch ticker.
    pub fn build(self) -> Result<Runtime, EngineError> {
        let mut pool = PoolingAllocationConfig::default();
        let n = self.max_concurrent_calls;
        // Interpreted tools (CPython from componentize-py) hold dozens of core
        // instances and several memories and tables; Rust tools a handful.
        pool.total_component_instances(n)
            .total_core_instances(n * 32)
            .max_core_instances_per_component(64)
            .total_memories(n * 4)
            .max_memories_per_component(8)
            .total_tables(n * 32)
            .max_tables_per_component(64)
            .total_stacks(n)
            .max_memory_size((self.max_memory_mib as usize) << 20)
            // A finished call's memory is reset in place (only the pages it
            // touched, where the kernel can tell) rather than unmapped: the
            // next call takes no page faults and no cross-core TLB flush.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT >> 4)
            .pagemap_scan(Enabled::Auto);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(self.max_wasm_stack)
            .async_stack_size(self.max_wasm_stack + (1 << 20))
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;
        let compiled = match &self.compile_cache {
            Some(dir) => Some(CompileCache::open(dir, &engine).map_err(|e| {
                EngineError::new(e).context(format!("the compile cache {}", dir.display()))
            })?),
            None => None,
        };
        start_ticker(&engine, self.epoch_tick);

        let mut linker = Linker::new(&engine);
        capability::link(&mut linker, self.imports)?;
        Ok(Runtime {
            engine,
            linker,
            max_memory_mib: self.max_memory_mib,
            tokens: self.tokens,
            transport: Arc::new(Transport::new(self.connect_timeout)),
            imports: self.imports,
            redactors: Arc::new(RedactorCache::default()),
            compiled,
        })
    }
}

/// A loaded tool: manifest, permissions, and its pre-linked instance.
#[derive(Clone)]
pub struct Tool {
    inner: Arc<ToolInner>,
}

struct ToolInner {
    manifest: Manifest,
    imports: Vec<String>,
    permissions: Arc<Permissions>,
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
    pub fn permissions(&self) -> &Permissions {
        &self.inner.permissions
    }
}

/// The engine, the linker, the epoch ticker and the outbound transport.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    max_memory_mib: u64,
    tokens: Option<Arc<dyn TokenSource>>,
    transport: Arc<Transport>,
    imports: ImportMode,
    /// Each credential's scanning automaton, built once.
    redactors: Arc<RedactorCache>,
    compiled: Option<CompileCache>,
}

impl Runtime {
    /// Configure a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// Accept a tool: read its manifest, check imports and grants, compile, pre-link.
    pub fn load(&self, wasm: &[u8], policy: &OperatorPolicy) -> Result<Tool, LoadError> {
        let inspected = airlock_manifest::inspect(wasm)?;
        let manifest = inspected.manifest;
        let name = manifest.name.clone();
        capability::check(&inspected.imports, &manifest.grants, self.imports).map_err(
            |refused| LoadError::Import {
                tool: name.clone(),
                refused,
            },
        )?;
        let mut permissions = policy.permissions(&name, &manifest.grants, &manifest.limits)?;
        permissions.limits.memory_mib = permissions.limits.memory_mib.min(self.max_memory_mib);
        let compile = |e: wasmtime::Error| LoadError::Compile {
            tool: name.clone(),
            message: format!("{e:#}"),
        };
        let component = match &self.compiled {
            Some(cache) => cache.component(&self.engine, wasm),
            None => Component::new(&self.engine, wasm),
        }
        .map_err(compile)?;
        let pre = self.linker.instantiate_pre(&component).map_err(compile)?;
        let pre = bindings::ToolPre::new(pre).map_err(compile)?;
        Ok(Tool {
            inner: Arc::new(ToolInner {
                manifest,
                imports: inspected.imports,
                permissions: Arc::new(permissions),
                pre,
            }),
        })
    }

    /// Run one call in a fresh instance, for no user: requests that need a
    /// credential are refused.
    pub async fn invoke(&self, tool: &Tool, input: &str) -> CallReport {
        self.invoke_as(tool, None, input).await
    }

    /// Run one call in a fresh instance for `user`, verified by
    /// `airlock-verify`: requests to OAuth-covered hosts carry their token.
    pub async fn invoke_as(
        &self,
        tool: &Tool,
        user: Option<&VerifiedUser>,
        input: &str,
    ) -> CallReport {
        let started = Instant::now();
        let on_behalf = OnBehalf {
            user: user.cloned(),
            tokens: self.tokens.clone(),
        };
        // Checked without building a value: the tool parses the input itself.
        let mut report = match serde_json::from_str::<IgnoredAny>(input) {
            Err(e) => CallReport {
                tool: tool.inner.manifest.name.clone(),
                user: None,
                outcome: CallOutcome::Failed(InvokeError::InputNotJson {
                    message: e.to_string(),
                }),
                logs: Vec::new(),
                logs_dropped: 0,
                requests: Vec::new(),
                requests_dropped: 0,
                elapsed: Duration::ZERO,
                redactions: Vec::new(),
            },
            Ok(_) => self.run(tool, input, on_behalf).await,
        };
        report.user = user.map(|u| u.id().clone());
        report.elapsed = started.elapsed();
        report
    }

    async fn run(&self, tool: &Tool, input: &str, on_behalf: OnBehalf) -> CallReport {
        let limits = tool.inner.permissions.limits;
        let state = CallState::new(
            tool.inner.permissions.clone(),
            &tool.inner.manifest.name,
            on_behalf,
            self.transport.clone(),
            self.redactors.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // At each tick the guest yields to the executor, so a spinning guest
        // never holds a worker thread; at the first tick past the deadline it stops.
        let deadline = Instant::now() + Duration::from_millis(limits.timeout_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |cx| {
            if let Some(end) = cx.data().must_end() {
                return Err(end.into());
            }
            if Instant::now() >= deadline {
                Ok(wasmtime::UpdateDeadline::Interrupt)
            } else {
                Ok(wasmtime::UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        // Host waits (an upstream that never answers) are bounded by the same deadline.
        let result = tokio::time::timeout_at(deadline.into(), async {
            let instance = tool.inner.pre.instantiate_async(&mut store).await?;
            instance.call_invoke(&mut store, input).await
        })
        .await;
        let outcome = call::classify(result, store.data(), limits);
        store.into_data().finish(outcome)
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
