//! Drop-in tools over the admin API: each refusal names its check and leaves
//! nothing behind; an accepted tool is served at once, swapped under calls in
//! flight, removed, and reloaded after a restart; the audit trail chains it all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_tests::alb;
use airlock_tests::as_alb;
use airlock_tests::serve::Serve;
use serde_json::{Value, json};

const KEY: &str = "test-admin-key-3f9a1c";

fn key_sha256() -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(KEY.as_bytes()))
}

struct Setup {
    dir: tempfile::TempDir,
    serve: Serve,
}

impl Setup {
    async fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let pinned = dir.path().join("pinned");
        std::fs::create_dir_all(&pinned).unwrap();
        std::fs::copy(
            airlock_tests::tool_path("text-stats"),
            pinned.join("text-stats.wasm"),
        )
        .unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        let serve = Serve::new(dir.path())
            .tools(&pinned)
            .set("store", at("store"))
            // Unnamed blobs go at once: the tests see what is kept.
            .set("orphan_grace_secs", 0)
            .set("compile_cache", at("compiled"))
            .set("watch", at("inbox"))
            // Any host; no provider but github, and that with `read:user` only.
            .policy("allow_any_host = true\n[providers.github]\nscopes = [\"read:user\"]\n")
            .cedar(r#"permit (principal == Airlock::User::"alice", action, resource);"#)
            .set("limits.max_concurrent_calls", 32)
            .set("limits.queue_wait_ms", 10000)
            .admin_key("ci", KEY)
            .set("admin.max_upload_kib", 1024)
            .set("audit.sink", at("audit/audit.jsonl"))
            .alb(&alb::key_endpoint().await);
        Setup { dir, serve }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn audit(&self) -> PathBuf {
        self.dir.path().join("audit/audit.jsonl")
    }

    async fn start(&self) -> airlock_server::Running {
        self.serve.start(None).await
    }

    /// Start with a token source: tools that act for users are enrolled in it.
    async fn start_with(
        &self,
        tokens: Option<std::sync::Arc<dyn airlock_credential::TokenSource>>,
    ) -> airlock_server::Running {
        self.serve.start(tokens).await
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn put(
    s: &airlock_server::Running,
    name: &str,
    wasm: Vec<u8>,
    key: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = http()
        .put(format!("http://{}/admin/tools/{name}", s.admin.unwrap()))
        .body(wasm);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let check = response
        .headers()
        .get("x-airlock-check")
        .map(|v| v.to_str().unwrap().to_string());
    let status = response.status().as_u16();
    (status, check, response.json().await.unwrap_or(Value::Null))
}

async fn listed(s: &airlock_server::Running) -> Value {
    http()
        .get(format!("http://{}/admin/tools", s.admin.unwrap()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn invoke(
    s: &airlock_server::Running,
    request_id: &str,
    tool: &str,
    input: Value,
) -> (u16, Value) {
    let headers = [as_alb("alice"), ("x-request-id", request_id.to_string())];
    airlock_tests::invoke(s.http, &headers, tool, input).await
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// text-stats' manifest under another name, as JSON (for a hand-made component).
fn manifest_named(name: &str) -> Vec<u8> {
    let mut m = airlock_manifest::inspect(&airlock_tests::tool_bytes("text-stats"))
        .unwrap()
        .manifest;
    m.name = name.to_string();
    m.to_json()
}

/// `wasm` with one more custom section: another digest, the same tool.
fn with_section(wasm: Vec<u8>, name: &str, payload: &[u8]) -> Vec<u8> {
    airlock_manifest::with_custom_section(&wasm, name, payload)
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_name_their_check_and_leave_nothing_behind() {
    let setup = Setup::new().await;
    let s = setup.start().await;
    let (status, _, _) = put(&s, "text-stats", vec![], Some(KEY)).await;
    assert_eq!(status, 415, "an empty body is not a component");
    let before = snapshot(&setup.store());
    let listed_before = listed(&s).await;
    let manifestless = wat::parse_str("(component)").unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "big",
            vec![0; 1025 << 10],
            413,
            "size",
            "larger than 1024 KiB",
        ),
        (
            "junk",
            b"MZ\x90\x00 not wasm".to_vec(),
            415,
            "component",
            "WebAssembly",
        ),
        (
            "core",
            wat::parse_str("(module)").unwrap(),
            415,
            "component",
            "not a component",
        ),
        ("bare", manifestless.clone(), 422, "manifest", "manifest"),
        (
            "bad",
            with_section(manifestless, "airlock-manifest", b"{\"name\": 7}"),
            422,
            "manifest",
            "invalid manifest",
        ),
        (
            "other-name",
            airlock_tests::tool_bytes("exchange-rates"),
            400,
            "name",
            "PUT /admin/tools/exchange-rates",
        ),
        (
            "text-stats",
            airlock_tests::tool_bytes("text-stats"),
            409,
            "name",
            "configured tools folder",
        ),
        (
            "sockets",
            with_section(
                wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#)
                    .unwrap(),
                "airlock-manifest",
                &manifest_named("sockets"),
            ),
            422,
            "imports",
            "no sockets",
        ),
        (
            "github-issues",
            airlock_tests::tool_bytes("github-issues"),
            403,
            "policy",
            "repo",
        ),
        (
            "hostile",
            airlock_tests::tool_bytes("hostile"),
            403,
            "policy",
            "github",
        ),
    ];
    let mut checks = vec!["component".to_string()];
    for (name, wasm, status, check, says) in cases {
        checks.push(check.to_string());
        let (got, got_check, body) = put(&s, name, wasm, Some(KEY)).await;
        assert_eq!(
            (got, got_check.as_deref()),
            (status, Some(check)),
            "{name}: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{name}: {message}");
        assert_eq!(
            snapshot(&setup.store()),
            before,
            "{name} left something behind"
        );
        assert_eq!(
            listed(&s).await,
            listed_before,
            "{name} changed what is served"
        );
    }
    let (status, _) = invoke(&s, "r1", "exchange-rates", json!({})).await;
    assert_eq!(status, 404);
    // Each refusal is in the audit trail with its check; the trail verifies.
    let refused: Vec<_> = records(&setup.audit())
        .into_iter()
        .filter(|r| r["kind"] == "upload" && r["accepted"] == false)
        .map(|r| r["check"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refused, checks, "one record per refusal, with its check");
    let trail = records(&setup.audit());
    assert_eq!(
        airlock_server::audit::verify(&[setup.audit()]),
        Ok(trail.len())
    );
    assert_eq!(trail[0]["kind"], "start");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_takes_only_its_own_key() {
    let setup = Setup::new().await;
    let s = setup.start().await;
    let wasm = || airlock_tests::tool_bytes("exchange-rates");
    let (status, _, body) = put(&s, "exchange-rates", wasm(), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = put(&s, "exchange-rates", wasm(), Some("not-the-key")).await;
    assert_eq!(status, 403, "{body}");
    // The digest the configuration holds: whoever reads the config has it,
    // and it must not stand in for the key.
    let configured = setup.serve.config().admin.unwrap().keys[0].sha256.clone();
    assert_eq!(configured, key_sha256());
    let (status, _, body) = put(&s, "exchange-rates", wasm(), Some(&configured)).await;
    assert_eq!(status, 403, "the key's hash is not the key: {body}");
    // An end user's sign-in, as a bearer token or as the ALB header.
    let (status, _, body) = put(
        &s,
        "exchange-rates",
        wasm(),
        Some(&alb::header_for("alice")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let response = http()
        .put(format!(
            "http://{}/admin/tools/exchange-rates",
            s.admin.unwrap()
        ))
        .header("x-amzn-oidc-data", alb::header_for("alice"))
        .body(wasm())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = http()
        .get(format!("http://{}/admin/tools", s.admin.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // The admin API is not on the agents' listener.
    let response = http()
        .put(format!("http://{}/admin/tools/exchange-rates", s.http))
        .header("x-amzn-oidc-data", alb::header_for("alice"))
        .bearer_auth(KEY)
        .body(wasm())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(snapshot(&setup.store()).len(), 0, "nothing stored");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_served_at_once_swapped_under_calls_in_flight_removed_and_reloaded() {
    let setup = Setup::new().await;
    // The hostile fixture's counter spins; it declares github, so allow it.
    std::fs::write(
        setup.dir.path().join("policy.toml"),
        "allow_any_host = true\nallow_any_provider = true\n",
    )
    .unwrap();
    let s = setup.start().await;
    let v1 = airlock_tests::tool_bytes("hostile");
    let v2 = with_section(v1.clone(), "test-version", b"2");
    let (status, _, body) = put(&s, "hostile", v1.clone(), Some(KEY)).await;
    assert_eq!(status, 201, "{body}");
    let d1 = body["digest"].as_str().unwrap().to_string();
    let (status, body) = invoke(&s, "first", "hostile", json!({"attack": "ok"})).await;
    assert_eq!(status, 200, "served without a restart: {body}");

    // Twenty slow calls in flight on v1, then v2 arrives.
    let s = std::sync::Arc::new(s);
    let mut inflight = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        inflight.push(tokio::spawn(async move {
            invoke(
                &s,
                &format!("inflight-{i}"),
                "hostile",
                json!({"attack": "counter", "spin_ms": 5000}),
            )
            .await
        }));
    }
    // Every one of them holds its slot (and so its version) before v2 comes.
    let metrics = s.metrics.unwrap();
    airlock_tests::eventually(
        Duration::from_secs(30),
        "twenty calls in flight",
        || async {
            let holding = airlock_tests::metric(metrics, "airlock_pool_in_use").await?;
            (holding == 20.0).then_some(())
        },
    )
    .await;
    let (status, _, body) = put(&s, "hostile", v2.clone(), Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replaced"], d1.as_str());
    let d2 = body["digest"].as_str().unwrap().to_string();
    for i in 0..3 {
        let (status, body) = invoke(
            &s,
            &format!("after-{i}"),
            "hostile",
            json!({"attack": "ok"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    for call in inflight {
        // Finished, on whichever outcome its deadline allowed.
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let calls: Vec<_> = records(&setup.audit())
        .into_iter()
        .filter(|r| r["kind"] == "call")
        .collect();
    let digest_of = |prefix: &str| -> Vec<String> {
        calls
            .iter()
            .filter(|r| r["client_request_id"].as_str().unwrap().starts_with(prefix))
            .map(|r| r["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        digest_of("inflight-"),
        vec![d1.clone(); 20],
        "each finished on v1"
    );
    assert_eq!(
        digest_of("after-"),
        vec![d2.clone(); 3],
        "later calls on v2"
    );

    // Removed: no longer served, no longer stored.
    let response = http()
        .delete(format!("http://{}/admin/tools/hostile", s.admin.unwrap()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (status, _) = invoke(&s, "gone", "hostile", json!({"attack": "ok"})).await;
    assert_eq!(status, 404);
    assert!(
        !snapshot(&setup.store())
            .keys()
            .any(|p| p.ends_with(format!("{d2}.wasm")))
    );
    let response = http()
        .delete(format!(
            "http://{}/admin/tools/text-stats",
            s.admin.unwrap()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        409,
        "a folder tool is not removed by the API"
    );

    // Uploaded again, then the host restarts: it is still served.
    let (status, _, _) = put(&s, "hostile", v2, Some(KEY)).await;
    assert_eq!(status, 201);
    std::sync::Arc::try_unwrap(s).ok().unwrap().shutdown().await;
    let s = setup.start().await;
    // Compiled code was kept for the next start.
    assert!(!snapshot(&setup.dir.path().join("compiled")).is_empty());
    let (status, body) = invoke(&s, "restarted", "hostile", json!({"attack": "ok"})).await;
    assert_eq!(status, 200, "{body}");
    let listed = listed(&s).await;
    let hostile = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "hostile")
        .unwrap();
    assert_eq!(
        (hostile["digest"].as_str(), hostile["uploaded_by"].as_str()),
        (Some(d2.as_str()), Some("ci"))
    );
    s.shutdown().await;
    // The trail across both runs chains over every record it holds, and has
    // each event of this test; no record carries the admin key.
    let trail = records(&setup.audit());
    assert_eq!(
        airlock_server::audit::verify(&[setup.audit()]),
        Ok(trail.len())
    );
    let of = |kind: &str| -> Vec<&Value> { trail.iter().filter(|r| r["kind"] == kind).collect() };
    assert_eq!(of("start").len(), 2, "one start record per start");
    let uploads: Vec<_> = of("upload")
        .iter()
        .map(|r| (r["tool"].as_str(), r["accepted"].as_bool()))
        .collect();
    assert_eq!(
        uploads,
        vec![(Some("hostile"), Some(true)); 3],
        "{uploads:?}"
    );
    let removals: Vec<_> = of("remove").iter().map(|r| r["tool"].as_str()).collect();
    assert_eq!(removals, [Some("hostile")]);
    let mut call_ids: Vec<&str> = of("call")
        .iter()
        .map(|r| r["client_request_id"].as_str().unwrap())
        .collect();
    call_ids.sort();
    let mut expected: Vec<String> = ["first", "restarted"]
        .into_iter()
        .map(String::from)
        .chain((0..20).map(|i| format!("inflight-{i}")))
        .chain((0..3).map(|i| format!("after-{i}")))
        .collect();
    expected.sort();
    assert_eq!(call_ids, expected, "one call record per call");
    // The client's id stands beside the server's, never in its place.
    for r in of("call") {
        let id = r["request_id"].as_str().unwrap();
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{r}"
        );
    }
    assert!(
        !std::fs::read_to_string(setup.audit())
            .unwrap()
            .contains(KEY)
    );
}

/// A bounded fuzz run over the upload checks: random bytes, truncations and
/// flipped bytes of a real tool, and manifests with junk in them. Every
/// input is accepted or refused with a named check; nothing panics or 500s;
/// what is stored is exactly what was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_uploads_are_each_accepted_or_refused_with_a_reason() {
    let setup = Setup::new().await;
    let s = setup.start().await;
    let good = airlock_tests::tool_bytes("exchange-rates");
    // A small deterministic generator (xorshift), so a failure replays.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let manifest =
        r#"{"name":"exchange-rates","version":"0.1.0","description":"x","input_schema":{}}"#;
    let mut accepted = 0;
    for i in 0..160 {
        let wasm = match i % 4 {
            0 => (0..(next() % 4096)).map(|_| next() as u8).collect(),
            1 => good[..(next() as usize % good.len())].to_vec(),
            2 => {
                let mut w = good.clone();
                for _ in 0..(1 + next() % 8) {
                    let at = next() as usize % w.len();
                    w[at] ^= 1 << (next() % 8);
                }
                w
            }
            _ => {
                let mut m = manifest.as_bytes().to_vec();
                let at = next() as usize % m.len();
                m[at] = next() as u8;
                with_section(
                    wat::parse_str("(component)").unwrap(),
                    "airlock-manifest",
                    &m,
                )
            }
        };
        let (status, check, body) = put(&s, "exchange-rates", wasm, Some(KEY)).await;
        match status {
            200 | 201 => accepted += 1,
            400..=499 => {
                assert!(check.is_some(), "input {i}: {status} {body}");
                assert!(
                    !body["message"].as_str().unwrap_or("").is_empty(),
                    "input {i}"
                );
            }
            _ => panic!("input {i}: {status} {body}"),
        }
    }
    let served = listed(&s).await["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "exchange-rates");
    assert_eq!(served, accepted > 0);
    let blobs = snapshot(&setup.store().join("blobs")).len();
    assert_eq!(
        blobs,
        usize::from(accepted > 0),
        "only the last accepted version is kept"
    );
    let (status, _) = invoke(&s, "alive", "text-stats", json!({"text": "still here"})).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

async fn served(s: &airlock_server::Running) -> Vec<String> {
    listed(s).await["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// Wait (up to 10 s) until `name` is served or not.
async fn until_served(s: &airlock_server::Running, name: &str, wanted: bool) {
    let what = format!("`{name}` served: {wanted}");
    airlock_tests::eventually(Duration::from_secs(10), &what, || async {
        (served(s).await.iter().any(|n| n == name) == wanted).then_some(())
    })
    .await
}

/// Wait (up to 10 s) until the audit trail holds `count` refusals of `tool`
/// by `check`.
async fn until_refused(setup: &Setup, tool: &str, check: &str, count: usize) {
    let what = format!("{count} refusals of `{tool}` by `{check}`");
    airlock_tests::eventually(Duration::from_secs(10), &what, || async {
        let refused = records(&setup.audit())
            .iter()
            .filter(|r| {
                r["kind"] == "upload"
                    && r["accepted"] == false
                    && r["tool"] == tool
                    && r["check"] == check
            })
            .count();
        (refused >= count).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_dropped_in_the_watched_folder_is_served_never_half_written() {
    use std::io::Write;
    let setup = Setup::new().await;
    let inbox = setup.dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    // Put there while the host was down: taken in at start.
    std::fs::copy(
        airlock_tests::tool_path("text-stats"),
        inbox.join("ignored.txt"),
    )
    .unwrap();
    let s = setup.start().await;
    let wasm = airlock_tests::tool_bytes("exchange-rates");

    // Written in two halves, a second apart: the first half is never served.
    let path = inbox.join("exchange-rates.wasm");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&wasm[..wasm.len() / 2]).unwrap();
    file.flush().unwrap();
    // The half is read and refused (its manifest, the last section, is missing).
    until_refused(&setup, "exchange-rates", "component", 1).await;
    assert!(!served(&s).await.iter().any(|n| n == "exchange-rates"));
    file.write_all(&wasm[wasm.len() / 2..]).unwrap();
    drop(file);
    until_served(&s, "exchange-rates", true).await;
    let (status, body) = invoke(&s, "dropped", "exchange-rates", json!({"base": "EUR"})).await;
    assert_ne!(status, 404, "{body}");

    // A file whose name is not its tool's: refused, not served.
    std::fs::write(inbox.join("rates.wasm"), &wasm).unwrap();
    until_refused(&setup, "rates", "name", 1).await;
    assert!(!served(&s).await.iter().any(|n| n == "rates"));

    // Deleted: no longer served.
    std::fs::remove_file(&path).unwrap();
    until_served(&s, "exchange-rates", false).await;
    let refusals: Vec<_> = records(&setup.audit())
        .into_iter()
        .filter(|r| r["kind"] == "upload" && r["accepted"] == false)
        .map(|r| {
            (
                r["tool"].as_str().unwrap().to_string(),
                r["check"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (tool, check) in [("exchange-rates", "component"), ("rates", "name")] {
        assert!(
            refusals.contains(&(tool.to_string(), check.to_string())),
            "{tool} refused by {check}: {refusals:?}"
        );
    }
    assert!(
        refusals
            .iter()
            .all(|(t, _)| t == "exchange-rates" || t == "rates"),
        "nothing else refused: {refusals:?}"
    );
    s.shutdown().await;

    // Dropped while the host is down: served once it starts.
    std::fs::write(&path, &wasm).unwrap();
    let s = setup.start().await;
    assert!(served(&s).await.iter().any(|n| n == "exchange-rates"));
    s.shutdown().await;
    // Deleted while the host is down: gone once it starts.
    std::fs::remove_file(&path).unwrap();
    let s = setup.start().await;
    assert!(!served(&s).await.iter().any(|n| n == "exchange-rates"));
    // A tool uploaded through the API is not replaced by a file of its name.
    let (status, _, body) = put(&s, "exchange-rates", wasm.clone(), Some(KEY)).await;
    assert_eq!(status, 201, "{body}");
    let uploaded = body["digest"].as_str().unwrap().to_string();
    std::fs::write(&path, with_section(wasm.clone(), "test-version", b"2")).unwrap();
    until_refused(&setup, "exchange-rates", "name", 1).await;
    let listed = listed(&s).await;
    let rates = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "exchange-rates")
        .unwrap();
    assert_eq!(
        rates["digest"].as_str(),
        Some(uploaded.as_str()),
        "{listed}"
    );
    s.shutdown().await;
    if let Err(e) = airlock_server::audit::verify(&[setup.audit()]) {
        panic!("the audit trail verifies: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_unsigned_untrusted_tampered_and_another_signer_are_refused() {
    use airlock_server::signing::{keygen, sign};
    use base64::Engine;
    let mut setup = Setup::new().await;
    let (ours, our_public) = keygen("ours").unwrap();
    let (colleague, colleague_public) = keygen("colleague").unwrap();
    let (stranger, _) = keygen("stranger").unwrap();
    let trusted = setup.dir.path().join("trusted");
    std::fs::write(&trusted, format!("{our_public}\n{colleague_public}\n")).unwrap();
    setup.serve = setup
        .serve
        .clone()
        .set("signatures.trusted_keys", trusted.display().to_string())
        .set("signatures.required", true);
    let s = setup.start().await;
    let wasm = airlock_tests::tool_bytes("exchange-rates");
    let put_signed = |wasm: Vec<u8>, signature: Option<String>| {
        let request = http()
            .put(format!(
                "http://{}/admin/tools/exchange-rates",
                s.admin.unwrap()
            ))
            .bearer_auth(KEY)
            .body(wasm);
        let request = match signature {
            Some(sig) => request.header(
                "x-airlock-signature",
                base64::engine::general_purpose::STANDARD.encode(sig),
            ),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body["message"].as_str().unwrap_or("").to_string())
        }
    };
    let before = snapshot(&setup.store());
    let refusals = [
        (
            put_signed(wasm.clone(), None).await,
            403,
            "signed tools only",
        ),
        (
            put_signed(wasm.clone(), Some(sign(&stranger, &wasm).unwrap())).await,
            403,
            "not a trusted key",
        ),
        (
            {
                // One byte changed where it still parses: only the signature can tell.
                let signed = with_section(wasm.clone(), "note", b"release 1");
                let tampered = with_section(wasm.clone(), "note", b"release 7");
                put_signed(tampered, Some(sign(&ours, &signed).unwrap())).await
            },
            403,
            "changed after signing",
        ),
        (
            put_signed(wasm.clone(), Some("not a signature".into())).await,
            403,
            "not an SSH signature",
        ),
    ];
    for ((status, message), want, says) in refusals {
        assert_eq!(status, want, "{message}");
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(snapshot(&setup.store()), before, "nothing kept");

    let (status, message) = put_signed(wasm.clone(), Some(sign(&ours, &wasm).unwrap())).await;
    assert_eq!(status, 201, "{message}");
    // Another trusted key may not replace it; the same one may.
    let v2 = with_section(wasm.clone(), "test-version", b"2");
    let (status, message) = put_signed(v2.clone(), Some(sign(&colleague, &v2).unwrap())).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("only the same signer"), "{message}");
    let (status, message) = put_signed(v2.clone(), Some(sign(&ours, &v2).unwrap())).await;
    assert_eq!(status, 200, "{message}");
    // Removed, the name still belongs to its signer: consent given to our
    // code must not pass to the colleague's by a delete and an upload.
    let response = http()
        .delete(format!(
            "http://{}/admin/tools/exchange-rates",
            s.admin.unwrap()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let v3 = with_section(wasm.clone(), "test-version", b"3");
    let (status, message) = put_signed(v3.clone(), Some(sign(&colleague, &v3).unwrap())).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("only the same signer"), "{message}");
    let (status, message) = put_signed(v3.clone(), Some(sign(&ours, &v3).unwrap())).await;
    assert_eq!(status, 201, "{message}");
    s.shutdown().await;
}

/// Admins may also be people signed in at the operator's IdP, in its admin
/// group: the group is read from the verified token, never from a header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_signed_in_at_the_idp_in_the_admin_group_may_upload_no_one_else() {
    use airlock_tests::peers::{ADMIN_GROUP, PeerOptions, Peers};
    let peers = Peers::start(PeerOptions::default()).await;
    let mut setup = Setup::new().await;
    setup.serve = setup
        .serve
        .clone()
        .set("admin.oidc.discovery_url", peers.provider.discovery_url())
        .set("admin.oidc.audiences", vec!["airlock-login"])
        .set("admin.oidc.group", ADMIN_GROUP);
    let s = setup.start().await;
    let wasm = || airlock_tests::tool_bytes("exchange-rates");
    let root = peers.id_token("root").await;
    let alice = peers.id_token("alice").await;
    let (status, _, body) = put(&s, "exchange-rates", wasm(), Some(alice.expose())).await;
    assert_eq!(status, 403, "signed in, not an admin: {body}");
    // A forged token claiming the group: signed by a key the IdP never had.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"sub": "mallory", "groups": [ADMIN_GROUP], "aud": "airlock-login",
                "iss": peers.provider.issuer, "exp": alb::now() + 600}),
        &jsonwebtoken::EncodingKey::from_ec_pem(alb::OTHER_KEY.as_bytes()).unwrap(),
    )
    .unwrap();
    let (status, _, body) = put(&s, "exchange-rates", wasm(), Some(&forged)).await;
    assert_eq!(status, 403, "{body}");
    assert!(snapshot(&setup.store()).is_empty(), "nothing stored");
    let (status, _, body) = put(&s, "exchange-rates", wasm(), Some(root.expose())).await;
    assert_eq!(status, 201, "{body}");
    let upload = records(&setup.audit())
        .into_iter()
        .find(|r| r["kind"] == "upload" && r["accepted"] == true)
        .unwrap();
    assert_eq!(upload["by"], "oidc:root");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_acts_for_users_gets_its_own_identity_or_is_not_kept() {
    use airlock_identity::{Broker, BrokerConfig, ClientConfig, IdentityClient};
    use std::sync::Arc;
    let setup = Setup::new().await;
    std::fs::write(
        setup.dir.path().join("policy.toml"),
        "allow_any_host = true\n[providers.github]\nscopes = [\"repo\"]\n",
    )
    .unwrap();
    // An identity service that cannot be reached: the upload is refused, nothing kept.
    let down = IdentityClient::from_config(&ClientConfig {
        max_attempts: Some(1),
        ..ClientConfig::fixed("http://127.0.0.1:1", "AKIDDOWN", "0123456789abcdef")
    });
    let broker = Arc::new(Broker::new(down, BrokerConfig::new("airlock-agent", None)));
    let s = setup.start_with(Some(broker)).await;
    let before = snapshot(&setup.store());
    let (status, check, body) = put(
        &s,
        "github-issues",
        airlock_tests::tool_bytes("github-issues"),
        Some(KEY),
    )
    .await;
    assert_eq!(
        (status, check.as_deref()),
        (503, Some("identity")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("workload identity"),
        "{body}"
    );
    assert_eq!(snapshot(&setup.store()), before, "nothing kept");
    assert!(!served(&s).await.contains(&"github-issues".to_string()));
    // A tool that acts for no one needs no identity.
    let (status, _, body) = put(
        &s,
        "exchange-rates",
        airlock_tests::tool_bytes("exchange-rates"),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    s.shutdown().await;

    // With the identity service up, the upload creates the tool's identity.
    let peers = airlock_tests::peers::Peers::start(Default::default()).await;
    let s = setup.start_with(Some(peers.broker.clone())).await;
    let (status, _, body) = put(
        &s,
        "github-issues",
        airlock_tests::tool_bytes("github-issues"),
        Some(KEY),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let workload = format!("{}.github-issues", airlock_tests::peers::WORKLOAD);
    assert!(
        !peers.agent.ensure_workload(&workload, &[]).await.unwrap(),
        "{workload} was created at upload"
    );
    let audit = std::fs::read_to_string(setup.audit()).unwrap();
    assert!(
        audit.contains("\"check\":\"identity\""),
        "the refusal is audited"
    );
}

/// A stored tool that no longer loads (its blob gone, or a policy made
/// stricter since it was accepted) does not stop the start: it is skipped,
/// named on /ping and in the audit trail, and the rest is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_tool_that_no_longer_loads_is_skipped_and_named_not_fatal() {
    let setup = Setup::new().await;
    let s = setup.start().await;
    for name in ["exchange-rates", "hostile"] {
        let (status, _, body) = put(&s, name, airlock_tests::tool_bytes(name), Some(KEY)).await;
        // hostile declares github, which this policy does not allow.
        assert!(
            status == 201 || name == "hostile",
            "{name}: {status} {body}"
        );
    }
    let listed = listed(&s).await;
    let digest = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "exchange-rates")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    s.shutdown().await;
    // The blob is gone while the host is down.
    std::fs::remove_file(setup.store().join(format!("blobs/{digest}.wasm"))).unwrap();
    let s = setup.start().await;
    let ping: Value = reqwest::get(format!("http://{}/ping", s.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let why = ping["store"]["refused"]["exchange-rates"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains(&digest[..16]) || why.contains("No such file"),
        "{ping}"
    );
    let (status, _) = invoke(&s, "after", "text-stats", json!({"text": "still served"})).await;
    assert_eq!(status, 200, "the folder tool is served");
    let (status, _) = invoke(&s, "gone", "exchange-rates", json!({})).await;
    assert_eq!(status, 404);
    // A store that cannot be read is said so, not listed as blank records.
    std::fs::write(setup.store().join("index.json"), "not an index").unwrap();
    let answer = http()
        .get(format!("http://{}/admin/tools", s.admin.unwrap()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("tool store could not be read"), "{body}");
    assert!(body["tools"].as_array().unwrap().iter().any(|t| t["name"] == "text-stats"), "{body}");
    s.shutdown().await;
    let skipped: Vec<_> = records(&setup.audit())
        .into_iter()
        .filter(|r| r["kind"] == "sync" && r["served"] == false)
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["tool"], "exchange-rates");
    assert_eq!(skipped[0]["digest"], digest.as_str());
}
