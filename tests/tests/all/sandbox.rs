//! The sandbox against real tools and hostile fixtures, through the library API.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use airlock_manifest::ManifestError;
use airlock_policy::{HostPattern, OperatorPolicy, Route};
use airlock_runtime::{
    CallOutcome,
    CallReport, HostResource, InvokeError, LoadError, LogSource, RequestOutcome, Runtime, Tool,
    ToolFailure,
};
use airlock_tests::{Upstream, tool_bytes};
use serde_json::{Value, json};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::builder().max_concurrent_calls(32).build().unwrap())
}

/// `host run`'s policy without a policy file: tools get what they declare.
fn local() -> OperatorPolicy {
    OperatorPolicy::permissive()
}

fn load(name: &str, policy: &OperatorPolicy) -> Tool {
    runtime()
        .load(&tool_bytes(name), policy)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn route(from: &str, to: &str) -> Route {
    Route {
        from: HostPattern::parse(from).unwrap(),
        to: HostPattern::parse(to).unwrap(),
    }
}

/// The hostile fixture with api.example.com routed to a local plain-http
/// server (which needs the loud downgrade switch).
fn hostile_via(upstream: &Upstream, allow_private: bool) -> Tool {
    let policy = OperatorPolicy {
        allow_private_addresses: allow_private,
        dangerously_allow_https_to_http_routes: true,
        routes: vec![route("https://api.example.com", &upstream.origin())],
        ..local()
    };
    load("hostile", &policy)
}

/// Run `attack` three times at once, more than the test runtime's two
/// workers, and a healthy call beside them: the healthy call must succeed,
/// and fast, whatever the attacks do. Returns the first attack's report.
async fn attack_beside_healthy(tool: &Tool, attack: Value) -> CallReport {
    let healthy = load("text-stats", &local());
    let attacks: Vec<_> = (0..3)
        .map(|_| {
            let (tool, attack) = (tool.clone(), attack.to_string());
            tokio::spawn(async move { runtime().invoke(&tool, &attack).await })
        })
        .collect();
    // Let the attacks get going, then run the healthy call as a task on the
    // same workers, as a server's request handler is. The clock starts
    // before the pause: a blocked executor delays the timer too.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let ok = tokio::spawn(async move {
        runtime()
            .invoke(&healthy, r#"{"text": "still serving"}"#)
            .await
    })
    .await
    .unwrap();
    let latency = started.elapsed();
    assert_eq!(
        ok.outcome.output().expect("the healthy call beside an attack")["words"],
        2
    );
    let deadline = Duration::from_millis(tool.permissions().limits.timeout_ms);
    assert!(
        latency < deadline / 4,
        "the healthy call took {latency:?} beside attacks with a {deadline:?} deadline"
    );
    let mut reports = Vec::new();
    for a in attacks {
        reports.push(a.await.unwrap());
    }
    reports.swap_remove(0)
}

fn results(report: &airlock_runtime::CallReport) -> Vec<Value> {
    report.outcome.output().expect("the tool returned")["results"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_stats_runs_with_real_input() {
    let tool = load("text-stats", &local());
    let report = runtime()
        .invoke(
            &tool,
            r#"{"text": "To be, or not to be.\nThat is it.", "top": 1}"#,
        )
        .await;
    let out = report.outcome.unwrap_output();
    assert_eq!(out["words"], 9);
    assert_eq!(out["lines"], 2);
    assert_eq!(out["top_words"], json!([{"word": "be", "count": 2}]));
    assert!(report.requests.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_stats_reports_typed_input_errors() {
    let tool = load("text-stats", &local());
    let report = runtime()
        .invoke(&tool, r#"{"text": "a", "top": 1000}"#)
        .await;
    assert!(
        matches!(report.outcome, CallOutcome::Failed(InvokeError::Tool { error: ToolFailure::InvalidInput(m) }) if m.contains("at most 100"))
    );
    let report = runtime().invoke(&tool, r#"{"txt": "a"}"#).await;
    assert!(
        matches!(report.outcome, CallOutcome::Failed(InvokeError::Tool { error: ToolFailure::InvalidInput(m) }) if m.contains("txt"))
    );
    let report = runtime().invoke(&tool, "not json").await;
    assert!(matches!(
        report.outcome,
        CallOutcome::Failed(InvokeError::InputNotJson { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_rates_calls_its_declared_api() {
    let upstream = Upstream::start(
        r#"{"amount":1.0,"base":"EUR","date":"2026-11-27","rates":{"USD":1.0512}}"#,
    )
    .await;
    let policy = OperatorPolicy {
        allow_private_addresses: true,
        dangerously_allow_https_to_http_routes: true,
        routes: vec![route("https://api.frankfurter.dev", &upstream.origin())],
        ..local()
    };
    let tool = load("exchange-rates", &policy);
    let report = runtime()
        .invoke(&tool, r#"{"amount": 100, "from": "eur", "to": "usd"}"#)
        .await;
    assert_eq!(
        report.outcome.unwrap_output(),
        json!({"amount": 105.12, "currency": "USD", "rate": 1.0512, "date": "2026-11-27"})
    );
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/latest?base=EUR&symbols=USD");
    assert!(seen[0].headers.iter().all(|(k, _)| k != "authorization"));
    assert_eq!(
        report.requests[0].url,
        "https://api.frankfurter.dev/v1/latest"
    );
    assert!(matches!(
        &report.requests[0].outcome,
        RequestOutcome::Sent {
            status: 200,
            routed_to: Some(_),
            credential: None,
            retried: false,
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_issues_declares_grant_and_gets_no_token_without_broker() {
    let upstream = Upstream::start("[]").await;
    let policy = OperatorPolicy {
        allow_private_addresses: true,
        dangerously_allow_https_to_http_routes: true,
        routes: vec![route("https://api.github.com", &upstream.origin())],
        ..local()
    };
    let tool = load("github-issues", &policy);
    let grant = &tool.permissions().grants.oauth[0];
    assert_eq!(grant.provider.as_str(), "github");
    assert_eq!(grant.scopes.iter().collect::<Vec<_>>(), ["repo"]);
    let report = runtime().invoke(&tool, r#"{"limit": 5}"#).await;
    assert!(
        matches!(&report.outcome, CallOutcome::Failed(InvokeError::Tool { error: ToolFailure::Upstream(m) }) if m.contains("HttpRequestDenied"))
    );
    assert!(
        matches!(&report.requests[0].outcome, RequestOutcome::Denied { reason } if reason.contains("identity broker"))
    );
    assert!(
        upstream.requests().is_empty(),
        "nothing may leave without the credential"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_is_stopped_at_deadline() {
    let tool = load("hostile", &local());
    let report = attack_beside_healthy(&tool, json!({"attack": "loop"})).await;
    assert_eq!(
        report.outcome.unwrap_failed(),
        InvokeError::Timeout { timeout_ms: 1000 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_stopped_at_cap() {
    let tool = load("hostile", &local());
    let report = attack_beside_healthy(&tool, json!({"attack": "memory"})).await;
    assert_eq!(
        report.outcome.unwrap_failed(),
        InvokeError::MemoryLimit { memory_mib: 32 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_is_stopped() {
    let tool = load("hostile", &local());
    let report = attack_beside_healthy(&tool, json!({"attack": "recurse"})).await;
    assert_eq!(report.outcome.unwrap_failed(), InvokeError::StackOverflow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_flood_is_refused() {
    let tool = load("hostile", &local());
    let report = attack_beside_healthy(&tool, json!({"attack": "flood"})).await;
    assert!(
        matches!(report.outcome, CallOutcome::Failed(InvokeError::OutputTooLarge { limit: 65536, size }) if size > 4_000_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_host_is_denied() {
    let tool = load("hostile", &local());
    let report = attack_beside_healthy(
        &tool,
        json!({"attack": "fetch", "url": "https://evil.example.net/steal"}),
    )
    .await;
    assert_eq!(results(&report)[0]["error"], "Http(\"HttpRequestDenied\")");
    assert!(
        matches!(&report.requests[0].outcome, RequestOutcome::Denied { reason } if reason.contains("evil.example.net"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_address_is_refused_even_when_declared() {
    let tool = load("hostile", &local());
    let report = attack_beside_healthy(
        &tool,
        json!({"attack": "fetch", "url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await;
    assert_eq!(
        results(&report)[0]["error"],
        "Http(\"DestinationIpProhibited\")"
    );
    assert!(
        matches!(&report.requests[0].outcome, RequestOutcome::Denied { reason } if reason.contains("169.254.169.254"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_after_dns_is_refused_without_switch() {
    let tool = load("hostile", &local());
    let report = attack_beside_healthy(
        &tool,
        json!({"attack": "fetch", "url": "http://localhost:9/"}),
    )
    .await;
    assert_eq!(
        results(&report)[0]["error"],
        "Http(\"DestinationIpProhibited\")"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_route_needs_explicit_switch() {
    let upstream = Upstream::start(r#"{"hello": "tool"}"#).await;
    let denied = hostile_via(&upstream, false);
    let report = attack_beside_healthy(
        &denied,
        json!({"attack": "fetch", "url": "https://api.example.com/x"}),
    )
    .await;
    assert_eq!(
        results(&report)[0]["error"],
        "Http(\"DestinationIpProhibited\")"
    );
    assert!(upstream.requests().is_empty());

    let allowed = hostile_via(&upstream, true);
    let report = runtime()
        .invoke(
            &allowed,
            &json!({"attack": "fetch", "url": "https://api.example.com/x"}).to_string(),
        )
        .await;
    assert_eq!(results(&report)[0]["status"], 200);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_authorization_header_is_forbidden() {
    let upstream = Upstream::start("{}").await;
    let tool = hostile_via(&upstream, true);
    let report = attack_beside_healthy(
        &tool,
        json!({"attack": "set_authorization", "url": "https://api.example.com/"}),
    )
    .await;
    let error = results(&report)[0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("Forbidden"), "{error}");
    assert!(upstream.requests().is_empty(), "the request must not leave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_request_cap_is_enforced() {
    let upstream = Upstream::start("{}").await;
    let tool = hostile_via(&upstream, true);
    let report = runtime()
        .invoke(
            &tool,
            &json!({"attack": "fetch", "url": "https://api.example.com/", "times": 5}).to_string(),
        )
        .await;
    let results = results(&report);
    assert_eq!(results.iter().filter(|r| r["status"] == 200).count(), 3);
    assert_eq!(results[3]["error"], "Http(\"HttpRequestDenied\")");
    assert_eq!(upstream.requests().len(), 3);
    assert!(
        matches!(&report.requests[4].outcome, RequestOutcome::Denied { reason } if reason.contains("limit of 3"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_get_fresh_instances() {
    // Each call bumps a counter in its instance and holds the instance for
    // a while: a reused or shared instance would read more than 1.
    let runtime = Runtime::builder().max_concurrent_calls(24).build().unwrap();
    let tool = runtime.load(&tool_bytes("hostile"), &local()).unwrap();
    let runtime = std::sync::Arc::new(runtime);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (runtime, tool) = (runtime.clone(), tool.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = runtime
                    .invoke(&tool, r#"{"attack": "counter", "spin_ms": 40}"#)
                    .await;
                (
                    started,
                    Instant::now(),
                    r.outcome.unwrap_output()["results"][0].clone(),
                )
            })
        })
        .collect();
    let mut spans = Vec::new();
    for c in calls {
        let (from, to, counter) = c.await.unwrap();
        assert_eq!(counter, 1, "an instance was reused or shared");
        spans.push((from, to));
    }
    // The calls did overlap: sequential ones could not tell sharing apart.
    let overlap = (0..spans.len())
        .any(|i| (i + 1..spans.len()).any(|j| spans[j].0 < spans[i].1 && spans[i].0 < spans[j].1));
    assert!(overlap, "no two calls overlapped");
}

/// What a standard toolchain's std imports (files, environment, terminals)
/// is linked inert: from inside the guest, nothing is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_toolchains_imports_are_linked_inert_and_grant_nothing() {
    let tool = load("hostile-fs", &local());
    let imports = tool.imports().join(" ");
    for wanted in [
        "wasi:filesystem/preopens",
        "wasi:cli/environment",
        "wasi:cli/terminal",
    ] {
        assert!(
            imports.contains(wanted),
            "the fixture imports {wanted}: {imports}"
        );
    }
    let report = runtime().invoke(&tool, r#"{"probe": "all"}"#).await;
    let out = report.outcome.output().unwrap_or_else(|| panic!("{}", report.outcome));
    // (The guest's libc may call its working directory "/"; it opens nothing.)
    for attempt in ["read_passwd", "list_root", "list_cwd", "write_tmp"] {
        assert!(
            out[attempt]["error"].is_string(),
            "{attempt} must fail inside the guest: {out}"
        );
    }
    assert_eq!(out["env"], 0, "no environment variables");
    assert_eq!(out["args"], 0, "no arguments");
    assert!(!std::path::Path::new("/tmp/airlock-escape").exists());
    let logs: Vec<&str> = report.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        logs.contains(&"a line on stdout"),
        "stdout lines reach the call's log: {logs:?}"
    );
    assert!(logs.contains(&"a line on stderr"), "{logs:?}");

    // WASI 0.2's exit carries success or failure only: exit(3) is a failure (1).
    let report = runtime()
        .invoke(&tool, r#"{"probe": "exit", "code": 3}"#)
        .await;
    assert_eq!(report.outcome, CallOutcome::Failed(InvokeError::Exited { code: 1 }));
    assert!(
        report
            .outcome
            .unwrap_failed()
            .to_string()
            .contains("exited with status 1"),
        "a clear outcome"
    );
    let report = runtime()
        .invoke(&tool, r#"{"probe": "exit", "code": 0}"#)
        .await;
    assert_eq!(
        report.outcome,
        CallOutcome::Failed(InvokeError::Exited { code: 0 }),
        "no result is still no result"
    );
}

#[test]
fn strict_imports_refuse_the_inert_interfaces_naming_each() {
    let strict = Runtime::builder()
        .max_concurrent_calls(2)
        .strict_imports(true)
        .build()
        .unwrap();
    let err = strict
        .load(&tool_bytes("hostile-fs"), &local())
        .err()
        .unwrap();
    let LoadError::Import { refused, .. } = &err else {
        panic!("expected an import refusal, got {err}");
    };
    let named: Vec<&str> = refused.iter().map(|r| r.import.as_str()).collect();
    for wanted in [
        "wasi:filesystem/preopens",
        "wasi:filesystem/types",
        "wasi:cli/environment",
    ] {
        assert!(
            named.iter().any(|n| n.starts_with(wanted)),
            "{wanted} is named: {named:?}"
        );
    }
    assert!(refused.iter().all(|r| r.reason.contains("strict")));
    // Strict mode still loads what imports only the basics.
    strict.load(&tool_bytes("text-stats"), &local()).unwrap();
}

/// Load a component written in WAT, with text-stats' manifest (no hosts), and return the refusal.
fn refusal_of(wat: &str) -> String {
    let component = wat::parse_str(wat).unwrap();
    let manifest = airlock_manifest::inspect(&tool_bytes("text-stats"))
        .unwrap()
        .manifest;
    let wasm = airlock_manifest::embed(&component, &manifest).unwrap();
    runtime()
        .load(&wasm, &local())
        .err()
        .expect("the component must be refused")
        .to_string()
}

#[test]
fn sockets_importing_component_is_refused_naming_the_import() {
    let message = refusal_of(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#);
    assert!(
        message.contains("wasi:sockets/tcp@0.2.0") && message.contains("no sockets"),
        "{message}"
    );
}

#[test]
fn http_import_without_declared_hosts_is_refused() {
    let message =
        refusal_of(r#"(component (import "wasi:http/outgoing-handler@0.2.12" (instance)))"#);
    assert!(
        message.contains("wasi:http/outgoing-handler") && message.contains("declares no hosts"),
        "{message}"
    );
}

#[test]
fn wasm_without_manifest_is_refused() {
    let raw =
        airlock_tests::tools_dir().join("../airlock-wasm/wasm32-wasip2/release/text_stats.wasm");
    let bytes = std::fs::read(&raw).unwrap_or_else(|e| panic!("{}: {e}", raw.display()));
    let err = runtime().load(&bytes, &local()).err().unwrap();
    assert!(
        matches!(err, LoadError::Manifest(ManifestError::Missing)),
        "{err}"
    );
    assert!(err.to_string().contains("host build"));
}

#[test]
fn corrupt_wasm_is_refused() {
    let mut bytes = tool_bytes("text-stats");
    let mid = bytes.len() / 2;
    bytes.truncate(mid);
    let err = runtime().load(&bytes, &local()).err().unwrap();
    assert!(
        matches!(err, LoadError::Manifest(ManifestError::Corrupt(_))),
        "{err}"
    );
    let err = runtime()
        .load(b"MZ\x90\x00 not wasm at all", &local())
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::Manifest(ManifestError::NotWasm)),
        "{err}"
    );
}

#[test]
fn core_module_is_refused() {
    let module = wat::parse_str("(module (func (export \"invoke\")))").unwrap();
    let err = runtime().load(&module, &local()).err().unwrap();
    assert!(
        matches!(err, LoadError::Manifest(ManifestError::CoreModule)),
        "{err}"
    );
    assert!(err.to_string().contains("not a component"));
}

#[test]
fn operator_policy_caps_scopes_at_load() {
    let policy =
        OperatorPolicy::from_toml("[providers.github]\nscopes = [\"read:user\"]\n").unwrap();
    let err = runtime()
        .load(&tool_bytes("github-issues"), &policy)
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(matches!(err, LoadError::Policy(_)));
    assert!(
        message.contains("\"repo\"") && message.contains("github-issues"),
        "{message}"
    );
}

/// A component whose instance has two linear memories: `grown_mib` grown by
/// `invoke`, `initial_mib` in the second from the start. It returns `{}`.
fn two_memories(grown_mib: u32, initial_mib: u32) -> Vec<u8> {
    let pages = |mib: u32| mib * 16;
    let wat = format!(
        r#"(component
          (core module $m
            (memory (export "memory") 1)
            (global $heap (mut i32) (i32.const 1024))
            (func (export "realloc") (param i32 i32 i32 i32) (result i32)
              (local $p i32)
              (local.set $p (global.get $heap))
              (global.set $heap (i32.add (global.get $heap) (local.get 3)))
              (local.get $p))
            (func (export "invoke") (param i32 i32) (result i32)
              (if (i32.eq (memory.grow (i32.const {grow})) (i32.const -1)) (then unreachable))
              (i32.store8 (i32.const 32) (i32.const 0))
              (i32.store (i32.const 36) (i32.const 16))
              (i32.store (i32.const 40) (i32.const 2))
              (i32.const 32))
            (data (i32.const 16) "{{}}"))
          (core module $other (memory (export "memory") {initial}))
          (core instance $i (instantiate $m))
          (core instance $j (instantiate $other))
          (type $tool-error (variant (case "invalid-input" string) (case "upstream" string) (case "failed" string)))
          (export $te "tool-error" (type $tool-error))
          (func (export "invoke") (param "input" string) (result (result string (error $te)))
            (canon lift (core func $i "invoke") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))"#,
        grow = pages(grown_mib),
        initial = pages(initial_mib),
    );
    let component = wat::parse_str(&wat).unwrap();
    let manifest = airlock_manifest::inspect(&tool_bytes("text-stats"))
        .unwrap()
        .manifest;
    airlock_manifest::embed(&component, &manifest).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_cap_counts_every_linear_memory_together() {
    // text-stats' manifest asks for 16 MiB.
    let within = runtime().load(&two_memories(6, 6), &local()).unwrap();
    assert_eq!(within.permissions().limits.memory_mib, 16);
    assert_eq!(
        runtime().invoke(&within, "{}").await.outcome.unwrap_output(),
        json!({})
    );
    // Each memory under the cap, both together over it.
    let over = runtime().load(&two_memories(10, 10), &local()).unwrap();
    assert_eq!(
        runtime().invoke(&over, "{}").await.outcome.unwrap_failed(),
        InvokeError::MemoryLimit { memory_mib: 16 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guests_never_starve_the_executor() {
    // Twice as many spinning calls as worker threads, each with a 1 s deadline.
    let runtime = std::sync::Arc::new(Runtime::builder().max_concurrent_calls(8).build().unwrap());
    let hostile = runtime.load(&tool_bytes("hostile"), &local()).unwrap();
    let healthy = runtime.load(&tool_bytes("text-stats"), &local()).unwrap();
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let (runtime, hostile) = (runtime.clone(), hostile.clone());
            tokio::spawn(async move { runtime.invoke(&hostile, r#"{"attack": "loop"}"#).await })
        })
        .collect();
    // A timer (what a /ping handler waits on) and a healthy call, each on
    // the same two workers, still run promptly.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ping = started.elapsed() - Duration::from_millis(100);
    let started = Instant::now();
    let runtime2 = runtime.clone();
    let ok = tokio::spawn(async move { runtime2.invoke(&healthy, r#"{"text": "a b"}"#).await })
        .await
        .unwrap();
    let call = started.elapsed();
    assert_eq!(ok.outcome.unwrap_output()["words"], 2);
    assert!(
        ping < Duration::from_millis(200),
        "a 100 ms timer was {ping:?} late"
    );
    assert!(
        call < Duration::from_millis(250),
        "a healthy call took {call:?}"
    );
    // And the spinners still end at their deadline, as timeouts.
    for s in spinners {
        let report = s.await.unwrap();
        assert_eq!(
            report.outcome.unwrap_failed(),
            InvokeError::Timeout { timeout_ms: 1000 }
        );
        assert!(
            report.elapsed < Duration::from_millis(1500),
            "{:?}",
            report.elapsed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_memory_a_guest_can_make_the_host_hold_is_capped() {
    let tool = load("hostile", &local());
    // One header map may hold 16 KiB.
    let report = runtime()
        .invoke(
            &tool,
            r#"{"attack": "fields", "count": 1, "value_size": 20000}"#,
        )
        .await;
    assert_eq!(
        report.outcome.unwrap_failed(),
        InvokeError::ResourceLimit {
            resource: HostResource::HeaderBytes,
            limit: 16384
        }
    );
    // Many maps: the call stops at the handle cap, as a typed limit.
    let report = runtime()
        .invoke(
            &tool,
            r#"{"attack": "fields", "count": 5000, "value_size": 8000}"#,
        )
        .await;
    assert_eq!(
        report.outcome.unwrap_failed(),
        InvokeError::ResourceLimit {
            resource: HostResource::Handles,
            limit: 1024
        }
    );
    // Within both, the same attack is just a tool's business.
    let report = runtime()
        .invoke(
            &tool,
            r#"{"attack": "fields", "count": 100, "value_size": 8000}"#,
        )
        .await;
    assert_eq!(results(&report)[0]["created"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_busy() {
    let runtime = std::sync::Arc::new(Runtime::builder().max_concurrent_calls(1).build().unwrap());
    let hostile = runtime.load(&tool_bytes("hostile"), &local()).unwrap();
    let healthy = runtime.load(&tool_bytes("text-stats"), &local()).unwrap();
    let spinner = {
        let (runtime, hostile) = (runtime.clone(), hostile.clone());
        tokio::spawn(async move { runtime.invoke(&hostile, r#"{"attack": "loop"}"#).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let report = runtime.invoke(&healthy, r#"{"text": "a"}"#).await;
    assert_eq!(report.outcome.unwrap_failed(), InvokeError::Busy);
    assert!(matches!(
        spinner.await.unwrap().outcome,
        CallOutcome::Failed(InvokeError::Timeout { .. })
    ));
    // The slot is free again.
    let report = runtime.invoke(&healthy, r#"{"text": "a"}"#).await;
    assert_eq!(report.outcome.unwrap_output()["words"], 1);
}

/// A TCP server that accepts and reads but never answers; it reports when
/// each connection is closed by the other side.
async fn silent_server() -> (String, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = tx.send(Instant::now());
            });
        }
    });
    (addr.to_string(), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_ends_at_the_deadline_and_its_connection_with_the_call() {
    let (addr, mut closed) = silent_server().await;
    let policy = OperatorPolicy {
        allow_private_addresses: true,
        dangerously_allow_https_to_http_routes: true,
        routes: vec![route("https://api.example.com", &format!("http://{addr}"))],
        ..local()
    };
    let tool = load("hostile", &policy);
    let report = runtime()
        .invoke(
            &tool,
            r#"{"attack": "fetch", "url": "https://api.example.com/slow"}"#,
        )
        .await;
    let ended = Instant::now();
    assert_eq!(
        report.outcome.unwrap_failed(),
        InvokeError::Timeout { timeout_ms: 1000 }
    );
    assert!(
        report.elapsed < Duration::from_millis(2000),
        "{:?}",
        report.elapsed
    );
    // The connection does not outlive the call.
    let at = tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the upstream connection was left open after the call")
        .unwrap();
    assert!(at.saturating_duration_since(ended) < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_finishes_is_cut_by_the_connect_timeout() {
    let (addr, _closed) = silent_server().await;
    let runtime = Runtime::builder()
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let policy = OperatorPolicy {
        allow_private_addresses: true,
        routes: vec![route("https://api.example.com", &format!("https://{addr}"))],
        ..local()
    };
    let tool = runtime.load(&tool_bytes("hostile"), &policy).unwrap();
    let report = runtime
        .invoke(
            &tool,
            r#"{"attack": "fetch", "url": "https://api.example.com/x"}"#,
        )
        .await;
    // The tool gets a typed error in time to answer, instead of running into its deadline.
    assert_eq!(
        results(&report)[0]["error"],
        "Http(\"ConnectionTimeout\")",
        "{report:?}"
    );
    assert!(matches!(
        &report.requests[0].outcome,
        RequestOutcome::Failed { error } if error.contains("ConnectionTimeout")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_are_kept_with_the_log() {
    let tool = load("hostile", &local());
    let report = runtime()
        .invoke(
            &tool,
            r#"{"attack": "chatter", "lines": 2, "size": 3, "printed": 2}"#,
        )
        .await;
    let lines: Vec<(LogSource, &str)> = report
        .logs
        .iter()
        .map(|l| (l.source, l.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (LogSource::Log, "0000 xxx"),
            (LogSource::Log, "0001 xxx"),
            (LogSource::Stdout, "out 0"),
            (LogSource::Stdout, "out 1"),
            (LogSource::Stderr, "err 0"),
            (LogSource::Stderr, "err 1"),
        ]
    );
    assert_eq!(report.logs_dropped, 0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["logs"][2]["source"], "stdout");
    assert!(json.get("logs_dropped").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_200_lines_of_4_kib_and_counts_the_rest() {
    let tool = load("hostile", &local());
    let report = runtime()
        .invoke(
            &tool,
            r#"{"attack": "chatter", "lines": 250, "size": 5000, "printed": 3}"#,
        )
        .await;
    assert!(report.outcome.output().is_some(), "{:?}", report.outcome);
    assert_eq!(report.logs.len(), 200);
    assert!(report.logs.iter().all(|l| l.message.len() == 4096));
    assert!(report.logs[199].message.starts_with("0199 "));
    // 50 log lines and 6 printed ones over the cap, reported, not lost silently.
    assert_eq!(report.logs_dropped, 56);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["logs_dropped"], 56);
}

/// A keep-alive HTTP server answering `{}` that counts the connections it accepted.
async fn counting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (origin, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_an_origin_are_reused_within_and_across_calls() {
    let (origin, accepted) = counting_server().await;
    let policy = OperatorPolicy {
        allow_private_addresses: true,
        dangerously_allow_https_to_http_routes: true,
        routes: vec![route("https://api.example.com", &origin)],
        ..local()
    };
    let tool = load("hostile", &policy);
    let fetch = r#"{"attack": "fetch", "url": "https://api.example.com/x", "times": 3}"#;
    for _ in 0..3 {
        let report = runtime().invoke(&tool, fetch).await;
        assert!(
            results(&report).iter().all(|r| r["status"] == 200),
            "{report:?}"
        );
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "nine requests in three calls, one connection"
    );
}

/// A guest that loops on requests the policy refuses, each with a long URL,
/// does not make the host hold its URLs: the call ends once the refusals
/// pass their cap, the records kept are few and short, and a healthy call
/// beside it is served. (Before the cap, one such call held gigabytes and
/// ran three times past its deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_in_a_loop_end_the_call_at_a_cap_with_bounded_records() {
    let tool = load("hostile", &local());
    let url = format!("https://not-declared.example/{}", "a".repeat(40_000));
    let report = attack_beside_healthy(
        &tool,
        json!({"attack": "fetch", "url": url, "times": 1_000_000}),
    )
    .await;
    assert!(
        matches!(
            report.outcome,
            CallOutcome::Failed(InvokeError::ResourceLimit {
                resource: airlock_runtime::HostResource::RefusedRequests,
                limit: 64
            })
        ),
        "{:?}",
        report.outcome
    );
    assert!(
        report.requests.len() <= 64,
        "{} records",
        report.requests.len()
    );
    for r in &report.requests {
        assert!(
            r.url.len() <= 520,
            "a record keeps {} bytes of URL",
            r.url.len()
        );
        assert!(matches!(&r.outcome, RequestOutcome::Denied { reason } if reason.len() <= 520));
    }
}
