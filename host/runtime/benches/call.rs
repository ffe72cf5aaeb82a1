//! One call's overhead for the pure tool: Airlock's invoke (fresh store,
//! instantiate from the cached InstancePre, limits, call, output checks, drop)
//! beside bare wasmtime instantiating and calling the same component.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use airlock_policy::OperatorPolicy;
use airlock_runtime::Runtime;
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::component::{Component, Linker, ResourceTable, Val};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const INPUT: &str = r#"{"text": "the quick brown fox jumps over the lazy dog", "top": 3}"#;

struct Bare {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn bench(c: &mut Criterion) {
    let bytes = airlock_tests::tool_bytes("text-stats");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let runtime = Runtime::builder().build().unwrap();
    let tool = runtime.load(&bytes, &OperatorPolicy::default()).unwrap();
    assert!(rt.block_on(runtime.invoke(&tool, INPUT)).outcome.is_ok());
    c.bench_function("airlock_invoke_text_stats", |b| {
        b.iter(|| rt.block_on(runtime.invoke(&tool, INPUT)).outcome.unwrap())
    });

    // Baselines: bare wasmtime, sync call, the same imports satisfied; once
    // on a default engine and once on Airlock's pooled engine.
    for (name, engine) in [
        ("bare_wasmtime_default", Engine::default()),
        ("bare_wasmtime_pooled", runtime.engine().clone()),
    ] {
        let mut linker: Linker<Bare> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        linker.instance("airlock:tool/types@0.1.0").unwrap();
        let component = Component::new(&engine, &bytes).unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        c.bench_function(&format!("{name}_text_stats"), |b| {
            b.iter(|| {
                let mut store = Store::new(
                    &engine,
                    Bare {
                        ctx: WasiCtx::builder().build(),
                        table: ResourceTable::new(),
                    },
                );
                store.set_epoch_deadline(1 << 40);
                let instance = pre.instantiate(&mut store).unwrap();
                let func = instance.get_func(&mut store, "invoke").unwrap();
                let mut results = [Val::Bool(false)];
                func.call(&mut store, &[Val::String(INPUT.into())], &mut results)
                    .unwrap();
                results
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
