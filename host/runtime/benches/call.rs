//! One call's overhead for the pure tool: Airlock's invoke (fresh store,
//! instantiate from the cached InstancePre, limits, call, output checks, drop)
//! beside bare wasmtime instantiating and calling the same component; once
//! with a small input, and once with a 2.7 MB text that keeps the guest busy
//! for several epoch ticks (where Airlock yields to the executor at each);
//! the same tool written in Python (componentize-py), side by side; and the
//! OAuth tool in Rust and in JavaScript (componentize-js) up to its first
//! request, which the host holds for consent.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::sync::Arc;

use airlock_credential::{Consent, Credential, TokenFuture, TokenSource};
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

/// Every user still owes consent: the call ends at its first request,
/// without network.
struct OwesConsent;

impl TokenSource for OwesConsent {
    fn bearer<'a>(
        &'a self,
        tool: &'a str,
        _user: &'a airlock_verify::VerifiedUser,
        grant: &'a airlock_policy::OAuthGrant,
    ) -> TokenFuture<'a> {
        Box::pin(std::future::ready(Ok(Credential::Consent(Consent {
            tool: tool.to_string(),
            provider: grant.provider.to_string(),
            authorization_url: "https://consent.invalid/".into(),
            session_uri: "urn:session".into(),
        }))))
    }

    fn rejected<'a>(
        &'a self,
        tool: &'a str,
        user: &'a airlock_verify::VerifiedUser,
        grant: &'a airlock_policy::OAuthGrant,
        _rejected: &'a http::HeaderValue,
    ) -> TokenFuture<'a> {
        self.bearer(tool, user, grant)
    }
}

/// What every group runs on: the executor, a pooled runtime, text-stats
/// loaded, and the small and large inputs.
struct Setup {
    rt: tokio::runtime::Runtime,
    runtime: Runtime,
    bytes: Vec<u8>,
    tool: airlock_runtime::Tool,
    large: String,
}

fn bench(c: &mut Criterion) {
    let bytes = airlock_tests::tool_bytes("text-stats");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::builder().build().unwrap();
    let tool = runtime.load(&bytes, &OperatorPolicy::default()).unwrap();
    let large = format!(
        r#"{{"text": "{}"}}"#,
        "lorem ipsum dolor sit amet ".repeat(100_000)
    );
    let setup = Setup {
        rt,
        runtime,
        bytes,
        tool,
        large,
    };
    airlock_calls(c, &setup);
    per_language(c, &setup);
    per_language_oauth(c, &setup);
    bare_wasmtime(c, &setup);
}

fn airlock_calls(c: &mut Criterion, s: &Setup) {
    let Setup {
        rt,
        runtime,
        tool,
        large,
        ..
    } = s;
    for (size, input) in [("", INPUT), ("_2_7mb", large.as_str())] {
        assert!(rt.block_on(runtime.invoke(tool, input)).outcome.output().is_some());
        let mut group = c.benchmark_group(format!("text_stats{size}"));
        if !size.is_empty() {
            group.sample_size(20);
        }
        group.bench_function("airlock_invoke", |b| {
            b.iter(|| rt.block_on(runtime.invoke(tool, input)).outcome.unwrap_output())
        });
        group.finish();
    }
}

fn per_language(c: &mut Criterion, s: &Setup) {
    let Setup {
        rt,
        runtime,
        bytes,
        tool,
        ..
    } = s;
    // The same tool in Rust and in Python (componentize-py: CPython inside),
    // each a fresh instance per call on the same pooled engine.
    let py_bytes = airlock_tests::tool_bytes("py-text-stats");
    println!(
        "component sizes: text-stats {} bytes, py-text-stats {} bytes",
        bytes.len(),
        py_bytes.len()
    );
    let py = runtime.load(&py_bytes, &OperatorPolicy::default()).unwrap();
    let rust_out = rt.block_on(runtime.invoke(tool, INPUT)).outcome.unwrap_output();
    let py_out = rt.block_on(runtime.invoke(&py, INPUT)).outcome.unwrap_output();
    assert_eq!(rust_out["words"], py_out["words"], "the twins agree");
    let mut group = c.benchmark_group("per_language");
    group.bench_function("rust_text_stats", |b| {
        b.iter(|| rt.block_on(runtime.invoke(tool, INPUT)).outcome.unwrap_output())
    });
    group.bench_function("python_text_stats", |b| {
        b.iter(|| rt.block_on(runtime.invoke(&py, INPUT)).outcome.unwrap_output())
    });
    group.finish();
}

fn per_language_oauth(c: &mut Criterion, s: &Setup) {
    let rt = &s.rt;
    // The OAuth tool in Rust and in JavaScript (componentize-js: StarlingMonkey
    // inside), each up to its first request, which waits for consent.
    let oauth = Runtime::builder()
        .token_source(Arc::new(OwesConsent))
        .build()
        .unwrap();
    let js_bytes = airlock_tests::tool_bytes("js-github-issues");
    let gh_bytes = airlock_tests::tool_bytes("github-issues");
    println!(
        "component sizes: github-issues {} bytes, js-github-issues {} bytes",
        gh_bytes.len(),
        js_bytes.len()
    );
    let alice = airlock_tests::user("alice");
    let mut group = c.benchmark_group("per_language_oauth");
    for (name, bytes) in [
        ("rust_github_issues", &gh_bytes),
        ("js_github_issues", &js_bytes),
    ] {
        let tool = oauth
            .load(bytes, &OperatorPolicy::permissive())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let report = rt.block_on(oauth.invoke_as(&tool, Some(&alice), "{}"));
        assert!(
            report.outcome.consent().is_some(),
            "{name} reached its request: {report:?}"
        );
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(oauth.invoke_as(&tool, Some(&alice), "{}")))
        });
    }
    group.finish();
}

fn bare_wasmtime(c: &mut Criterion, s: &Setup) {
    let Setup {
        runtime,
        bytes,
        large,
        ..
    } = s;
    // Baselines: bare wasmtime, sync call, the same imports satisfied; once
    // on a default engine and once on Airlock's pooled engine.
    for (name, engine) in [
        ("bare_wasmtime_default", Engine::default()),
        ("bare_wasmtime_pooled", runtime.engine().clone()),
    ] {
        let mut linker: Linker<Bare> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        linker.instance("airlock:tool/types@0.1.0").unwrap();
        let component = Component::new(&engine, bytes).unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        for (size, input) in [("", INPUT), ("_2_7mb", large.as_str())] {
            let mut group = c.benchmark_group(format!("text_stats{size}"));
            if !size.is_empty() {
                group.sample_size(20);
            }
            group.bench_function(name, |b| {
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
                    func.call(&mut store, &[Val::String(input.into())], &mut results)
                        .unwrap();
                    results
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
