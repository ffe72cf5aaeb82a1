//! Replicas on one S3 store (moto on 127.0.0.1):
//!
//! - `start`: a replica with N tools in the S3 store (text-stats renamed),
//!   with no compile cache, a cold one and a warm one; beside the floor of
//!   getting and hashing the same N objects;
//! - `propagation`: PUT a new tool on replica A's admin API, then call it on
//!   replica B until it answers, at `store_poll_secs` 1 (default 5: add 4 s
//!   to the worst case).
//!
//! `scripts/setup-test-peers.sh && scripts/build-tools.sh &&
//!  cargo run --release -p airlock-tests --example replica_bench [tools] [rounds]`

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "shared/starts.rs"]
mod starts;

use airlock_server::ServeConfig;
use airlock_server::store::s3::{S3Location, S3Store};
use airlock_server::store::{StoredTool, ToolStore};
use airlock_tests::bench::renamed;
use serde_json::json;
use sha2::Digest;

const KEY: &str = "bench-admin-key";
const BUCKET: &str = "airlock-bench";

fn config(endpoint: &str, cache: Option<&std::path::Path>, admin: bool) -> ServeConfig {
    let mut text = format!(
        "local = true\nstore = \"s3://{BUCKET}/tools\"\nstore_poll_secs = 1\nmetrics = \"127.0.0.1:0\"\n"
    );
    if let Some(cache) = cache {
        text.push_str(&format!("compile_cache = \"{}\"\n", cache.display()));
    }
    text.push_str(&format!(
        "[s3]\nendpoint_url = \"{endpoint}\"\npath_style = true\nregion = \"us-east-1\"\n[http]\nlisten = \"127.0.0.1:0\"\n[mcp]\nlisten = \"127.0.0.1:0\"\n[identity]\nlocal_user = \"alice\"\n[audit]\nsink = \"off\"\n"
    ));
    if admin {
        let sha = hex::encode(sha2::Sha256::digest(KEY.as_bytes()));
        text.push_str(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.keys]]\nname = \"bench\"\nsha256 = \"{sha}\"\n"
        ));
    }
    ServeConfig::from_toml(&text).unwrap()
}

fn main() {
    // The S3 client takes its key from the standard chain (moto checks
    // none): run again with one in the environment.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let mut args = std::env::args().skip(1);
    let tools: usize = args.next().map_or(100, |s| s.parse().expect("tools"));
    let rounds: usize = args.next().map_or(3, |s| s.parse().expect("rounds"));
    let original = airlock_tests::tool_bytes("text-stats");
    let moto = airlock_tests::s3::Moto::start().await;
    moto.bucket(BUCKET).await;
    let at = S3Location::parse(&format!("s3://{BUCKET}/tools"))
        .unwrap()
        .unwrap();
    let store = Arc::new(S3Store::with_client(moto.client(), at));
    let filled = {
        let (store, original) = (store.clone(), original.clone());
        tokio::task::spawn_blocking(move || {
            for i in 0..tools {
                let name = format!("text-stats-{i}");
                let wasm = renamed(&original, &name);
                let entry = StoredTool::new(&name, &wasm, "bench", 0, None);
                store.put(&entry, &wasm, true).unwrap();
            }
        })
    };
    filled.await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let floor = || {
        let s = store.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                for t in s.list().unwrap() {
                    std::hint::black_box(s.read(&t.digest).unwrap());
                }
                started.elapsed()
            })
            .await
            .unwrap()
        }
    };
    starts::measure(
        &format!("start of a replica with {tools} tools in S3 (moto)"),
        "GET + sha256 of the objects",
        tools,
        rounds,
        dir.path(),
        floor,
        |cache| config(&moto.endpoint, cache, false),
    )
    .await;

    // Upload on A, first answer on B.
    let a = airlock_server::start(
        config(&moto.endpoint, Some(&dir.path().join("cache-a")), true),
        None,
    )
    .await
    .unwrap();
    let b = airlock_server::start(
        config(&moto.endpoint, Some(&dir.path().join("cache-b")), false),
        None,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let (mut accepted, mut served) = (vec![], vec![]);
    for i in 0..(rounds * 4) {
        let name = format!("fresh-{i}");
        let started = Instant::now();
        let response = http
            .put(format!("http://{}/admin/tools/{name}", a.admin.unwrap()))
            .bearer_auth(KEY)
            .body(renamed(&original, &name))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        accepted.push(started.elapsed());
        loop {
            let response = http
                .post(format!("http://{}/invocations", b.http))
                .json(&json!({"tool": name, "input": {"text": "one two two"}}))
                .send()
                .await
                .unwrap();
            if response.status().as_u16() == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        served.push(started.elapsed());
    }
    println!(
        "upload on A to first answer on B (store_poll_secs 1), median of {}:",
        rounds * 4
    );
    println!(
        "  PUT accepted on A            {:>10.1?}",
        starts::median(accepted)
    );
    println!(
        "  first answer on B            {:>10.1?} (max {:.1?})",
        starts::median(served.clone()),
        served.iter().max().unwrap()
    );
    a.shutdown().await;
    b.shutdown().await;
}
