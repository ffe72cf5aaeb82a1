//! `host serve` under load beside native code in the same binary, measured
//! with wrk (64 connections, 2 threads) in interleaved rounds:
//!
//! - `native`: an axum route that parses `{"tool", "input"}`, runs
//!   text-stats' own code (its `stats.rs`) and answers `{"status", "result"}`;
//! - `native+alb`: the same, after verifying the ALB header;
//! - `invocations`: Airlock's `/invocations` calling the text-stats component
//!   (ALB header verified, Cedar, admission, wasm call, metrics, JSON logs);
//! - `mcp`: Airlock's MCP `tools/call`, stateless (2026-07-28), same caller;
//! - `mcp-list`: an MCP `tools/list` on the same path (the caller verified,
//!   the session guard, rmcp's per-request service, one tool's listing
//!   decided by Cedar), no call: about what MCP itself costs a request.
//!
//! `scripts/build-tools.sh && cargo run --release -p airlock-tests --example serve_bench [secs] [rounds] [target...]`
//!
//! Every answer is checked after each run: wrk's non-2xx count and the
//! server's own `airlock_calls_total` by outcome, so a fast stream of
//! refusals cannot pass for throughput.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use airlock_tests::alb::{self, ALB_ARN, ISSUER, KEY, KID};
use airlock_verify::{AlbConfig, AlbVerifier};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

// The allocator `host` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(dead_code)]
#[path = "../../tools/text-stats/src/stats.rs"]
mod stats;

const TEXT: &str = "It was the best of times, it was the worst of times, it was the age of \
wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of \
incredulity, it was the season of Light, it was the season of Darkness, it was the spring \
of hope, it was the winter of despair.";

/// This process's resident memory, in MiB (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[derive(Deserialize)]
struct Invocation {
    tool: String,
    input: stats::Input,
}

async fn native(Json(call): Json<Invocation>) -> (StatusCode, Json<Value>) {
    if call.tool != "text-stats" || call.input.top > 100 {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "bad input"})));
    }
    let result = stats::stats(&call.input.text, call.input.top as usize);
    (
        StatusCode::OK,
        Json(json!({"status": "ok", "tool": call.tool, "result": result})),
    )
}

async fn native_alb(
    State(verifier): State<Arc<AlbVerifier>>,
    headers: HeaderMap,
    body: Json<Invocation>,
) -> (StatusCode, Json<Value>) {
    let header = headers
        .get("x-amzn-oidc-data")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if verifier.verify(header, alb::now()).await.is_err() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized"})),
        );
    }
    native(body).await
}

/// A wrk script: one POST with these headers and body.
fn script(dir: &Path, name: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    for (k, v) in headers {
        lua.push_str(&format!("wrk.headers[\"{k}\"] = \"{v}\"\n"));
    }
    lua.push_str(&format!("wrk.body = [==[{body}]==]\n"));
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, lua).unwrap();
    path.display().to_string()
}

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn millis(text: &str) -> f64 {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap());
    let n: f64 = number.parse().unwrap();
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        other => panic!("wrk latency unit {other}"),
    }
}

/// Connections wrk keeps open (`WRK_CONNECTIONS`, default 64).
fn connections() -> u32 {
    std::env::var("WRK_CONNECTIONS").map_or(64, |c| c.parse().expect("WRK_CONNECTIONS"))
}

fn wrk(url: &str, script: &str, secs: u32) -> Run {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", connections()),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
            script,
            url,
        ])
        .output()
        .expect("wrk on PATH (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "{url}: not every answer was a 200:\n{text}"
    );
    let field = |prefix: &str| -> &str {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in wrk's output:\n{text}"))
            .split_whitespace()
            .next()
            .unwrap()
    };
    Run {
        rps: field("Requests/sec:").parse().unwrap(),
        p50_ms: millis(field("50%")),
        p99_ms: millis(field("99%")),
    }
}

/// `airlock_calls_total` by outcome.
async fn outcomes(metrics: std::net::SocketAddr) -> BTreeMap<String, u64> {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("airlock_calls_total{"))
        .map(|l| {
            let outcome = l
                .split("outcome=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let n = l.rsplit(' ').next().unwrap().parse().unwrap();
            (outcome.to_string(), n)
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u32 = args.next().map_or(10, |s| s.parse().expect("seconds"));
    let rounds: usize = args.next().map_or(3, |s| s.parse().expect("rounds"));
    let only: Vec<String> = args.collect();
    let dir = tempfile::tempdir().unwrap();
    let logs = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let _log = airlock_server::json_logs(logs, airlock_server::DEFAULT_LOG_FILTER);

    let keys = alb::key_endpoint().await;
    let folder = dir.path().join("tools");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(
        airlock_tests::tool_path("text-stats"),
        folder.join("text-stats.wasm"),
    )
    .unwrap();
    let policies = dir.path().join("policies.cedar");
    std::fs::write(&policies, "permit (principal, action, resource);").unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "").unwrap();
    let config = format!(
        r#"
        tools = ["{folder}"]
        policy = "{policy}"
        metrics = "127.0.0.1:0"
        [http]
        listen = "127.0.0.1:0"
        [mcp]
        listen = "127.0.0.1:0"
        [identity.alb]
        signer_arn = "{ALB_ARN}"
        key_url = "{keys}"
        issuer = "{ISSUER}"
        [authorization]
        policies = "{policies}"
        [limits]
        max_concurrent_calls = 64
        calls_per_minute = 100000000
        mcp_requests_per_minute = 100000000
        [audit]
        sink = "{audit}"
        "#,
        // One chained audit record per call, to a file, as a server keeps it.
        audit = dir.path().join("audit.jsonl").display(),
        folder = folder.display(),
        policy = policy.display(),
        policies = policies.display(),
    );
    let config = airlock_server::ServeConfig::from_toml(&config).unwrap();
    let server = airlock_server::start(config, None).await.unwrap();

    let verifier = Arc::new(AlbVerifier::new(AlbConfig {
        signer_arn: ALB_ARN.into(),
        key_url: keys.clone(),
        issuer: Some(ISSUER.into()),
        user_prefix: None,
    }));
    let app = axum::Router::new()
        .route("/native", post(native))
        .route("/native-alb", post(native_alb))
        .with_state(verifier);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let native_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // A header that stays valid for the whole run.
    let expires = alb::now() + 3600;
    let header = alb::sign(
        &json!({"alg": "ES256", "kid": KID, "signer": ALB_ARN, "iss": ISSUER, "client": "airlock", "exp": expires}),
        &json!({"sub": "alice", "email": "alice@example.com", "exp": expires, "iss": ISSUER}),
        KEY,
    );
    let input = json!({"text": TEXT, "top": 3});
    let invocation = json!({"tool": "text-stats", "input": input}).to_string();
    let mcp_call = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": "text-stats", "arguments": input,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "wrk", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
    .to_string();
    let mcp_list = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "wrk", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
    .to_string();
    let json_type = ("content-type", "application/json");
    let alb = ("x-amzn-oidc-data", header.as_str());
    let targets = [
        (
            "native",
            format!("http://{native_addr}/native"),
            script(dir.path(), "native", &[json_type], &invocation),
        ),
        (
            "native+alb",
            format!("http://{native_addr}/native-alb"),
            script(dir.path(), "native_alb", &[json_type, alb], &invocation),
        ),
        (
            "invocations",
            format!("http://{}/invocations", server.http),
            script(dir.path(), "invocations", &[json_type, alb], &invocation),
        ),
        (
            "mcp",
            format!("http://{}/mcp", server.mcp.unwrap()),
            script(
                dir.path(),
                "mcp",
                &[
                    json_type,
                    alb,
                    ("accept", "application/json, text/event-stream"),
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "text-stats"),
                ],
                &mcp_call,
            ),
        ),
        (
            "mcp-list",
            format!("http://{}/mcp", server.mcp.unwrap()),
            script(
                dir.path(),
                "mcp_list",
                &[
                    json_type,
                    alb,
                    ("accept", "application/json, text/event-stream"),
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/list"),
                ],
                &mcp_list,
            ),
        ),
    ];

    let targets: Vec<_> = targets
        .into_iter()
        .filter(|(name, _, _)| only.is_empty() || only.iter().any(|o| o == name))
        .collect();
    // Each target answers correctly once before it is timed.
    let client = reqwest::Client::new();
    let words = format!("\"words\":{}", stats::stats(TEXT, 3).words);
    for (name, url, _) in &targets {
        let mut request = client.post(url).header(json_type.0, json_type.1);
        let (body, expect) = match *name {
            "mcp" => {
                request = request
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", "text-stats");
                (mcp_call.clone(), words.as_str())
            }
            "mcp-list" => {
                request = request
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/list");
                (mcp_list.clone(), "\"text-stats\"")
            }
            _ => (invocation.clone(), words.as_str()),
        };
        if *name != "native" {
            request = request.header(alb.0, alb.1);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(
            status.is_success() && text.contains(expect),
            "{name}: {status} {text}"
        );
    }

    let metrics = server.metrics.unwrap();
    let at_rest = rss_mib();
    let mut peak: BTreeMap<&str, f64> = BTreeMap::new();
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for round in 0..rounds {
        for (name, url, script) in &targets {
            let before = outcomes(metrics).await;
            let (url, script, secs) = (url.clone(), script.clone(), secs);
            let load = tokio::task::spawn_blocking(move || wrk(&url, &script, secs));
            // The process's memory with the connections' calls in flight.
            let most = Arc::new(std::sync::Mutex::new(0f64));
            let sampler = tokio::spawn({
                let most = most.clone();
                async move {
                    loop {
                        let now = rss_mib();
                        {
                            let mut m = most.lock().unwrap();
                            *m = m.max(now);
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            });
            let run = load.await.unwrap();
            sampler.abort();
            let p = peak.entry(name).or_default();
            *p = p.max(*most.lock().unwrap());
            let after = outcomes(metrics).await;
            let not_ok: u64 = after
                .iter()
                .filter(|(k, _)| k.as_str() != "ok")
                .map(|(k, n)| n - before.get(k).copied().unwrap_or(0))
                .sum();
            assert_eq!(not_ok, 0, "{name}: calls that were not ok: {after:?}");
            eprintln!(
                "round {round} {name:12} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                run.rps, run.p50_ms, run.p99_ms
            );
            runs.entry(name).or_default().push(run);
        }
    }
    let native_rps = runs
        .get("native")
        .map_or(f64::NAN, |r| median(r.iter().map(|r| r.rps).collect()));
    println!("target        req/s (median)  p50 ms  p99 ms  vs native  RSS MiB under load");
    for (name, _, _) in &targets {
        let r = &runs[name];
        let rps = median(r.iter().map(|r| r.rps).collect());
        println!(
            "{name:12} {rps:>15.0} {:>7.2} {:>7.2} {:>10.2} {:>10.1}",
            median(r.iter().map(|r| r.p50_ms).collect()),
            median(r.iter().map(|r| r.p99_ms).collect()),
            rps / native_rps,
            peak[name]
        );
    }
    println!("RSS at rest (served, warmed up, before load): {at_rest:.1} MiB");
    server.shutdown().await;
}
