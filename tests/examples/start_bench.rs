//! How fast a host with many stored tools is ready, and how soon an upload
//! can be called:
//!
//! - `start`: `airlock_server::start` with N distinct stored tools (text-stats
//!   renamed), without a compile cache, with a cold one, and with a warm one;
//!   beside the floor of reading and hashing the same N files;
//! - `upload`: PUT a new small tool on the admin API, then its first call
//!   over `/invocations`, end to end.
//!
//! `scripts/build-tools.sh && cargo run --release -p airlock-tests --example start_bench [tools] [rounds]`

use std::path::Path;
use std::time::Instant;

#[path = "shared/starts.rs"]
mod starts;

use airlock_server::ServeConfig;
use airlock_server::store::{FolderStore, StoredTool, ToolStore, digest_of};
use serde_json::json;
use sha2::Digest;

const KEY: &str = "bench-admin-key";

fn config(dir: &Path, cache: Option<&Path>, admin: bool) -> ServeConfig {
    let mut text = format!(
        "local = true\nstore = \"{}\"\nmetrics = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[mcp]\nlisten = \"127.0.0.1:0\"\n[identity]\nlocal_user = \"alice\"\n[audit]\nsink = \"off\"\n",
        dir.join("store").display()
    );
    if let Some(cache) = cache {
        text = format!("compile_cache = \"{}\"\n{text}", cache.display());
    }
    if admin {
        let sha = hex::encode(sha2::Sha256::digest(KEY.as_bytes()));
        text.push_str(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[admin.keys]]\nname = \"bench\"\nsha256 = \"{sha}\"\n"
        ));
    }
    ServeConfig::from_toml(&text).unwrap()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tools: usize = args.next().map_or(100, |s| s.parse().expect("tools"));
    let rounds: usize = args.next().map_or(3, |s| s.parse().expect("rounds"));
    let original = airlock_tests::tool_bytes("text-stats");
    let renamed = airlock_tests::bench::renamed;
    let dir = tempfile::tempdir().unwrap();
    let store = FolderStore::open(dir.path().join("store")).unwrap();
    for i in 0..tools {
        let name = format!("text-stats-{i}");
        let wasm = renamed(&original, &name);
        let entry = StoredTool::new(&name, &wasm, "bench", 0, None);
        store.put(&entry, &wasm, true).unwrap();
    }

    let floor = || async {
        let started = Instant::now();
        for t in store.list().unwrap() {
            let bytes =
                std::fs::read(dir.path().join(format!("store/blobs/{}.wasm", t.digest))).unwrap();
            std::hint::black_box(digest_of(&bytes));
        }
        started.elapsed()
    };
    starts::measure(
        &format!("start with {tools} stored tools"),
        "read + sha256 of the files",
        tools,
        rounds,
        dir.path(),
        floor,
        |cache| config(dir.path(), cache, false),
    )
    .await;

    // Upload to first call.
    let cache = dir.path().join("cache-upload");
    let s = airlock_server::start(config(dir.path(), Some(&cache), true), None)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let mut upload = vec![];
    let mut first_call = vec![];
    for i in 0..(rounds * 5) {
        let name = format!("fresh-{i}");
        let wasm = renamed(&original, &name);
        let started = Instant::now();
        let response = http
            .put(format!("http://{}/admin/tools/{name}", s.admin.unwrap()))
            .bearer_auth(KEY)
            .body(wasm)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let uploaded = started.elapsed();
        let response = http
            .post(format!("http://{}/invocations", s.http))
            .json(&json!({"tool": name, "input": {"text": "one two two"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        upload.push(uploaded);
        first_call.push(started.elapsed());
    }
    println!(
        "upload of a small tool ({} KiB), median of {}:",
        original.len() >> 10,
        rounds * 5
    );
    println!(
        "  PUT accepted                 {:>10.1?}",
        starts::median(upload)
    );
    println!(
        "  PUT, then first call answered {:>9.1?}",
        starts::median(first_call)
    );
    s.shutdown().await;
}
