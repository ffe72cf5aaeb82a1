//! `host serve` as a process: the official MCP client SDKs (Python `mcp`
//! and TypeScript `@modelcontextprotocol/sdk`, pinned in tests/mcp) connect,
//! list, call the pure tool, call the OAuth tool and are sent to consent,
//! and get the data once the user consented at oidc-provider; and a
//! SIGTERM lets calls in flight finish and exits 0.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use airlock_tests::alb;
use airlock_tests::oidc::Decision;
use airlock_tests::peers::{AGENT_SECRET, PeerOptions, Peers, RETURN_URL, WORKLOAD};
use airlock_tests::serve::Serve;
use airlock_tests::{as_alb, eventually};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Local mode's identity service takes a fixed port: one local host at a time.
static LOCAL_MODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn mcp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp")
}

/// Start `host serve` with `config` (in its folder) and extra `args`; its addresses.
async fn serve(config: &Serve, args: &[&str]) -> (Child, Value) {
    serve_file(&config.write(), config.dir(), args).await
}

/// Start `host serve` with the configuration at `path`, in `dir`.
async fn serve_file(path: &Path, dir: &Path, args: &[&str]) -> (Child, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(args)
        // Whatever the host writes beside itself (the local identity's data) stays in `dir`.
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "AKIDAGENT")
        .env("AWS_SECRET_ACCESS_KEY", AGENT_SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Audit records share stdout (the default sink); the addresses follow them.
    let addrs = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).await.unwrap() > 0,
            "serve printed no addresses"
        );
        let value: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("serve printed {line:?}"));
        if value.get("http").is_some() {
            break value;
        }
        assert!(value.get("seq").is_some(), "serve printed {line:?}");
    };
    (child, addrs)
}

/// The example tools, an operator policy sending api.github.com to the
/// resource server, Cedar policies allowing everyone, and the test ALB.
async fn setup(dir: &Path, resource: &str) -> Serve {
    Serve::new(dir)
        .built_tools(&["text-stats", "github-issues", "hostile"])
        .policy(&format!(
            "allow_any_host = true\nallow_any_provider = true\nallow_private_addresses = true\ndangerously_allow_https_to_http_routes = true\n[[routes]]\nfrom = \"https://api.github.com\"\nto = \"{resource}\"\n"
        ))
        .cedar("permit (principal, action, resource);")
        .alb(&alb::key_endpoint().await)
        .set("audit.sink", "stdout")
}

/// Run a client; answer each `CONSENT <url>` by consenting as `user` at the
/// provider and binding the session; return its lines.
async fn drive(peers: &Peers, mut client: Command, user: &str) -> Vec<String> {
    let mut child = client
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("CONSENT ") {
                let session = peers.consent(url, user, Decision::Approve).await.unwrap();
                peers.bind(&session, user).await.unwrap();
                stdin.write_all(b"done\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            seen.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .unwrap_or_else(|_| panic!("the client hung after {seen:?}"));
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{seen:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    seen
}

fn value_of<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_mcp_clients_list_call_consent_and_get_the_data() {
    let peers = Peers::start(PeerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), &peers.resource.origin()).await;
    let endpoint = peers.identity.as_ref().unwrap().endpoint_url();
    let (mut server, addrs) = serve(
        &config,
        &[
            "--identity-endpoint",
            &endpoint,
            "--workload",
            WORKLOAD,
            "--return-url",
            RETURN_URL,
        ],
    )
    .await;
    let mcp = format!("http://{}/mcp", addrs["mcp"].as_str().unwrap());
    let python = mcp_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/setup-test-peers.sh to install the MCP clients"
    );
    let stats =
        json!({"characters": 5, "words": 3, "lines": 1, "top_words": [{"word": "a", "count": 2}]});
    // One user per client: each consents once.
    let runs: [(&str, &str, &str, &str); 4] = [
        ("python, 2026-07-28", "erin", "auto", "CONSENT"),
        (
            "python, 2025-11-25 with URL elicitation",
            "fred",
            "legacy",
            "ELICITATION-ERROR",
        ),
        ("python, no elicitation", "gwen", "plain", "RESULT-WITH-URL"),
        (
            "typescript, 2025-11-25 with URL elicitation",
            "hugo",
            "node",
            "ELICITATION-ERROR",
        ),
    ];
    for (what, user, mode, consent_kind) in runs {
        let header = alb::header_for(user);
        let client = if mode == "node" {
            let mut c = Command::new("node");
            c.arg(mcp_dir().join("client.mjs")).args([&mcp, &header]);
            c
        } else {
            let mut c = Command::new(&python);
            c.arg(mcp_dir().join("client.py"))
                .args([&mcp, &header, mode]);
            c
        };
        let lines = drive(&peers, client, user).await;
        let version = value_of(&lines, "VERSION");
        match mode {
            "auto" => assert_eq!(version, "2026-07-28", "{what}"),
            "node" => assert!(version.ends_with("2025-11-25"), "{what}: {version}"),
            _ => assert_eq!(version, "2025-11-25", "{what}"),
        }
        let tools: Value = serde_json::from_str(value_of(&lines, "TOOLS")).unwrap();
        assert_eq!(
            tools,
            json!(["github-issues", "hostile", "text-stats"]),
            "{what}"
        );
        let got: Value = serde_json::from_str(value_of(&lines, "STATS")).unwrap();
        assert_eq!(got, stats, "{what}");
        assert!(
            lines.iter().any(|l| l.starts_with(consent_kind)),
            "{what}: {lines:?}"
        );
        assert_eq!(
            value_of(&lines, "DATA"),
            format!("{user}'s issue"),
            "{what}"
        );
    }
    server.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_calls_in_flight_finish_refuses_new_ones_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "http://127.0.0.1:9").await;
    let (mut server, addrs) = serve(&config, &[]).await;
    let metrics: std::net::SocketAddr = addrs["metrics"].as_str().unwrap().parse().unwrap();
    let url = format!("http://{}/invocations", addrs["http"].as_str().unwrap());
    let call = |input: Value| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(&url)
                .header("x-amzn-oidc-data", alb::header_for("alice"))
                .json(&json!({"tool": "hostile", "input": input}))
                .send()
                .await
        }
    };
    // A call that runs for its whole second, holding its slot.
    let in_flight = tokio::spawn(call(json!({"attack": "loop"})));
    eventually(
        Duration::from_secs(10),
        "the call holds its slot",
        || async {
            (airlock_tests::metric(metrics, "airlock_pool_in_use").await? == 1.0).then_some(())
        },
    )
    .await;
    let pid = server.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    // New connections are refused while the call finishes.
    eventually(Duration::from_secs(5), "new calls refused", || async {
        call(json!({"attack": "ok"})).await.is_err().then_some(())
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "new calls were refused only once the call in flight had ended"
    );
    let finished = in_flight
        .await
        .unwrap()
        .expect("the call in flight got its answer");
    assert_eq!(finished.status(), 200);
    let body: Value = finished.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "timeout", "{body}");
    let status = tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("the server exits after draining")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_sign_and_push_to_a_host_that_takes_signed_tools_only() {
    let _one = LOCAL_MODE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let host = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_host"))
            .args(args)
            .env("AIRLOCK_ADMIN_KEY", "push-key")
            .output()
            .unwrap()
    };
    let key = dir.path().join("signer");
    let made = host(&["keygen", key.to_str().unwrap()]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let public = std::fs::read_to_string(dir.path().join("signer.pub")).unwrap();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    std::fs::write(dir.path().join("trusted"), &public).unwrap();
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let config = Serve::new(dir.path())
        .set("local", true)
        .tools(&dir.path().join("empty"))
        .set("store", at("store"))
        .set("identity.local_user", "alice")
        .admin_key("author", "push-key")
        .set("audit.sink", "off")
        .set("signatures.trusted_keys", at("trusted"))
        .set("signatures.required", true);
    let (mut child, addrs) = serve(&config, &[]).await;
    let admin = format!("http://{}", addrs["admin"].as_str().unwrap());
    let tool = dir.path().join("exchange-rates.wasm");
    std::fs::copy(airlock_tests::tool_path("exchange-rates"), &tool).unwrap();

    let pushed = host(&["push", tool.to_str().unwrap(), "--to", &admin]);
    assert_eq!(pushed.status.code(), Some(1));
    let said = String::from_utf8_lossy(&pushed.stderr);
    assert!(said.contains("signed tools only"), "{said}");

    let signed = host(&[
        "sign",
        tool.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let pushed = host(&["push", tool.to_str().unwrap(), "--to", &admin]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let listed: Value = reqwest::Client::new()
        .get(format!("{admin}/admin/tools"))
        .bearer_auth("push-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fingerprint = listed["tools"][0]["signer"].as_str().unwrap();
    assert!(fingerprint.starts_with("SHA256:"), "{listed}");
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/invocations",
            addrs["http"].as_str().unwrap()
        ))
        .json(&json!({"tool": "exchange-rates", "input": {"base": "EUR"}}))
        .send()
        .await
        .unwrap();
    assert_ne!(response.status().as_u16(), 404, "pushed and served");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_serves_what_is_dropped_into_its_tool_folder() {
    let _one = LOCAL_MODE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let tools = dir.path().join("examples");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::copy(
        airlock_tests::tool_path("text-stats"),
        tools.join("text-stats.wasm"),
    )
    .unwrap();
    let (mut child, addrs) = serve_file(
        &dir.path().join("empty.toml"),
        dir.path(),
        &[
            "--local",
            "--user",
            "alice",
            "--tools",
            tools.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--mcp-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--audit",
            "off",
        ],
    )
    .await;
    let call = || async {
        reqwest::Client::new()
            .post(format!(
                "http://{}/invocations",
                addrs["http"].as_str().unwrap()
            ))
            .json(&json!({"tool": "exchange-rates", "input": {"base": "EUR"}}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(call().await, 404);
    // The local store's drop-in folder, beside where the host runs.
    let inbox = dir.path().join(".airlock/tools");
    assert!(inbox.is_dir(), "created at start");
    std::fs::copy(
        airlock_tests::tool_path("exchange-rates"),
        inbox.join("exchange-rates.wasm"),
    )
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "served from the drop-in folder",
        || async { (call().await != 404).then_some(()) },
    )
    .await;
    assert!(dir.path().join(".airlock/store/index.json").exists());
    child.kill().await.unwrap();
}

const REPLICA_KEY: &str = "replica-admin-key-7c2e";

async fn call(http: &str, user: &str, tool: &str, input: Value) -> (u16, Value) {
    airlock_tests::invoke(http, &[as_alb(user)], tool, input).await
}

async fn ping(http: &str) -> Value {
    reqwest::get(format!("http://{http}/ping"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Wait up to 20 s until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(Duration::from_secs(20), what, || {
        let checked = check();
        async move { checked.await.then_some(()) }
    })
    .await
}

/// Two `host serve` replicas on one S3 store (moto) and one identity
/// service: an upload to A is served by B; a consent started through A is
/// honoured by B; a corrupted object is refused by both and named on
/// `/ping`; A killed mid-call costs B nothing; with the bucket gone, B keeps
/// serving what it has and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_s3_store_serve_as_one() {
    use sha2::Digest;
    let peers = Peers::start(PeerOptions::default()).await;
    let mut moto = airlock_tests::s3::Moto::start().await;
    moto.bucket("airlock-tools").await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = peers.identity.as_ref().unwrap().endpoint_url();
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let mut config = setup(&home, &peers.resource.origin())
            .await
            .set("store", "s3://airlock-tools/replicas")
            .set("store_poll_secs", 1)
            .set("compile_cache", home.join("compiled").display().to_string())
            .set("s3.endpoint_url", moto.endpoint.as_str())
            .set("s3.path_style", true)
            .set("s3.region", "us-east-1")
            .admin_key("ci", REPLICA_KEY);
        // Only the store's tools: no folder.
        config = config.set("tools", Vec::<String>::new());
        replicas.push(
            serve(
                &config,
                &[
                    "--identity-endpoint",
                    &endpoint,
                    "--workload",
                    WORKLOAD,
                    "--return-url",
                    RETURN_URL,
                ],
            )
            .await,
        );
    }
    let addr = |i: usize, key: &str| replicas[i].1[key].as_str().unwrap().to_string();
    let (a_http, a_admin, b_http) = (addr(0, "http"), addr(0, "admin"), addr(1, "http"));
    // The containers' health check.
    let host_ping = |http: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["ping", &format!("http://{http}/ping")])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(host_ping(&b_http), Some(0));

    // An upload to A reaches B.
    let stats = json!({"text": "one two two"});
    assert_eq!(
        call(&b_http, "alice", "text-stats", stats.clone()).await.0,
        404
    );
    let uploaded = std::time::Instant::now();
    for name in ["text-stats", "github-issues"] {
        let response = reqwest::Client::new()
            .put(format!("http://{a_admin}/admin/tools/{name}"))
            .bearer_auth(REPLICA_KEY)
            .body(airlock_tests::tool_bytes(name))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            201,
            "{}",
            response.text().await.unwrap()
        );
    }
    let after_upload = uploaded.elapsed();
    // B takes them up one by one: wait for both.
    until("B serves the tools uploaded to A", || async {
        call(&b_http, "alice", "github-issues", json!({})).await.0 == 200
            && call(&b_http, "alice", "text-stats", stats.clone()).await.0 == 200
    })
    .await;
    let (status, body) = call(&b_http, "alice", "text-stats", stats.clone()).await;
    assert_eq!(
        (status, &body["result"]["words"]),
        (200, &json!(3)),
        "{body}"
    );
    eprintln!(
        "uploads to A took {after_upload:?}; B served them {:?} after the first began",
        uploaded.elapsed()
    );

    // A consent started through A is honoured by B.
    let (status, body) = call(&a_http, "alice", "github-issues", json!({})).await;
    assert_eq!(body["status"], "authorization_required", "{status} {body}");
    let session = peers
        .consent(
            body["authorization_url"].as_str().unwrap(),
            "alice",
            Decision::Approve,
        )
        .await
        .unwrap();
    peers.bind(&session, "alice").await.unwrap();
    let (status, body) = call(&b_http, "alice", "github-issues", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["issues"][0]["title"], "alice's issue",
        "{body}"
    );

    // A corrupted object: the index names content the bucket does not hold.
    let s3 = moto.client();
    let digest = hex::encode(sha2::Sha256::digest(b"the real tool"));
    s3.put_object()
        .bucket("airlock-tools")
        .key(format!("replicas/blobs/{digest}.wasm"))
        .body(b"a swapped tool".to_vec().into())
        .send()
        .await
        .unwrap();
    let index = s3
        .get_object()
        .bucket("airlock-tools")
        .key("replicas/index.json")
        .send()
        .await
        .unwrap();
    let mut entries: Value =
        serde_json::from_slice(&index.body.collect().await.unwrap().into_bytes()).unwrap();
    entries["tools"]["swapped"] = json!({"name": "swapped", "digest": digest, "size": 13, "uploaded_by": "ci", "uploaded_at": 1});
    s3.put_object()
        .bucket("airlock-tools")
        .key("replicas/index.json")
        .body(serde_json::to_vec(&entries).unwrap().into())
        .send()
        .await
        .unwrap();
    until("B names the swapped tool on /ping", || async {
        ping(&b_http).await["store"]["refused"]["swapped"]
            .as_str()
            .is_some_and(|e| e.contains("does not match its digest"))
    })
    .await;
    assert_eq!(call(&b_http, "alice", "swapped", json!({})).await.0, 404);
    assert_eq!(call(&a_http, "alice", "swapped", json!({})).await.0, 404);

    // A dies mid-call; B serves on, the consent with it.
    let (mut a, _) = replicas.remove(0);
    let in_flight = tokio::spawn({
        let a_http = a_http.clone();
        async move {
            reqwest::Client::new()
                .post(format!("http://{a_http}/invocations"))
                .header("x-amzn-oidc-data", alb::header_for("alice"))
                .json(&json!({"tool": "github-issues", "input": {}}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    let _ = in_flight.await.unwrap();
    assert_eq!(host_ping(&a_http), Some(1));
    let (status, body) = call(&b_http, "alice", "github-issues", json!({})).await;
    assert_eq!(status, 200, "{body}");

    // The bucket out of reach: B says so and serves what it has.
    moto.stop();
    until("B's /ping says the store is out of reach", || async {
        ping(&b_http).await["store"]["reachable"] == json!(false)
    })
    .await;
    let body = ping(&b_http).await;
    assert_eq!(body["status"], "Healthy", "{body}");
    assert!(
        body["store"]["error"]
            .as_str()
            .unwrap()
            .contains("s3://airlock-tools/replicas/"),
        "{body}"
    );
    let (status, body) = call(&b_http, "alice", "text-stats", stats).await;
    assert_eq!(
        (status, &body["result"]["words"]),
        (200, &json!(3)),
        "{body}"
    );
}
