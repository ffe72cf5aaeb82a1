//! The `host` binary as a tool author uses it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .output()
        .expect("running host")
}

fn built(name: &str) -> String {
    airlock_tests::tool_path(name).display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn run_prints_tool_output_as_json() {
    let out = host(&[
        "run",
        &built("text-stats"),
        "--input",
        r#"{"text": "one two two", "top": 1}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["words"], 3);
    assert_eq!(value["top_words"][0]["word"], "two");
}

#[test]
fn run_builds_a_tool_folder_first() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/text-stats");
    let out = host(&[
        "run",
        folder.to_str().unwrap(),
        "--input",
        r#"{"text": "a b"}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["words"], 2);
}

#[test]
fn run_exits_1_with_typed_error_when_call_fails() {
    let out = host(&["run", &built("hostile"), "--input", r#"{"attack": "loop"}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("deadline of 1000 ms"),
        "{}",
        text(&out.stderr)
    );

    let out = host(&[
        "run",
        &built("hostile"),
        "--json",
        "--input",
        r#"{"attack": "memory"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"]["failed"]["kind"], "memory_limit");
}

#[test]
fn run_exits_2_naming_a_refused_import() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = airlock_manifest::inspect(&airlock_tests::tool_bytes("text-stats"))
        .unwrap()
        .manifest;
    let component =
        wat::parse_str(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#).unwrap();
    let wasm = dir.path().join("sockets.wasm");
    std::fs::write(
        &wasm,
        airlock_manifest::embed(&component, &manifest).unwrap(),
    )
    .unwrap();
    let out = host(&["run", wasm.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("wasi:sockets/tcp@0.2.0") && err.contains("no sockets"),
        "{err}"
    );
}

#[test]
fn run_shows_a_standard_toolchains_stdout_and_names_an_exit() {
    let out = host(&["run", &built("hostile-fs"), "-i", r#"{"probe": "all"}"#]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("a line on stdout"),
        "{}",
        text(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(value["read_passwd"]["error"].is_string(), "{value}");
    let out = host(&[
        "run",
        &built("hostile-fs"),
        "-i",
        r#"{"probe": "exit", "code": 3}"#,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exited with status 1 instead of returning"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_names_a_missing_file_and_bad_route() {
    let out = host(&["run", "/nonexistent/tool.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/tool.wasm"));
    let out = host(&[
        "run",
        &built("text-stats"),
        "--route",
        "https://a.example.com",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("FROM=TO"));
}

#[test]
fn inspect_prints_manifest_imports_and_permissions() {
    let out = host(&["inspect", &built("github-issues")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["manifest"]["name"], "github-issues");
    assert_eq!(
        view["permissions"]["grants"]["oauth"][0]["scopes"],
        serde_json::json!(["repo"])
    );
    assert_eq!(view["permissions"]["limits"]["max_requests"], 2);
    let imports: Vec<&str> = view["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler")),
        "{imports:?}"
    );
}

/// A section with id `id` holding `body`, as bytes.
fn section(id: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    let mut n = body.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n == 0 { byte } else { byte | 0x80 });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A custom section named `airlock-manifest` holding `data`.
fn manifest_section(data: &[u8]) -> Vec<u8> {
    let name = b"airlock-manifest";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(data);
    section(0, &body)
}

#[test]
fn inspect_refuses_two_manifests_and_ignores_one_in_a_nested_module() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(built("text-stats")).unwrap();
    let json = airlock_manifest::inspect(&original)
        .unwrap()
        .manifest
        .to_json();
    // A second manifest appended after the first: which one holds is ambiguous.
    let twice = dir.path().join("twice.wasm");
    let mut bytes = original.clone();
    bytes.extend(manifest_section(&json));
    std::fs::write(&twice, bytes).unwrap();
    let out = host(&["inspect", twice.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("more than one `airlock-manifest` section"),
        "{}",
        text(&out.stderr)
    );
    // A manifest inside a nested core module is not the component's.
    let nested = dir.path().join("nested.wasm");
    let mut module = wat::parse_str("(module)").unwrap();
    module.extend(manifest_section(&json));
    let mut component = wat::parse_str("(component)").unwrap();
    // A component's section 1 holds a core module.
    component.extend(section(1, &module));
    std::fs::write(&nested, component).unwrap();
    let out = host(&["inspect", nested.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("has no `airlock-manifest` section"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_describes_commands() {
    let out = host(&["--help"]);
    let help = text(&out.stdout);
    for word in ["run", "inspect", "build"] {
        assert!(help.contains(word), "{help}");
    }
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 answering each request with `body`;
/// returns its origin and the request heads it saw.
fn serve(body: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            log.lock().unwrap().push(head);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (origin, seen)
}

#[test]
fn run_exchange_rates_against_a_routed_local_api() {
    let (origin, seen) =
        serve(r#"{"amount":1.0,"base":"GBP","date":"2026-11-27","rates":{"JPY":190.5}}"#);
    let route = format!("https://api.frankfurter.dev={origin}");
    let input = r#"{"amount": 2, "from": "GBP", "to": "JPY"}"#;
    // An https origin routed to plain http needs its own loud switch.
    let out = host(&[
        "run",
        &built("exchange-rates"),
        "--route",
        &route,
        "--input",
        input,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--dangerously-allow-https-to-http-routes"),
        "{}",
        text(&out.stderr)
    );
    let out = host(&[
        "run",
        &built("exchange-rates"),
        "--route",
        &route,
        "--dangerously-allow-https-to-http-routes",
        "--input",
        input,
    ]);
    assert_eq!(out.status.code(), Some(1), "loopback must need the switch");
    assert!(
        text(&out.stderr).contains("DestinationIpProhibited"),
        "{}",
        text(&out.stderr)
    );
    assert!(seen.lock().unwrap().is_empty());

    let out = host(&[
        "run",
        &built("exchange-rates"),
        "--route",
        &route,
        "--dangerously-allow-https-to-http-routes",
        "--allow-private-addresses",
        "--input",
        input,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["amount"], 381.0);
    assert_eq!(value["currency"], "JPY");
    let seen = seen.lock().unwrap();
    assert!(
        seen[0].starts_with("GET /v1/latest?base=GBP&symbols=JPY "),
        "{}",
        seen[0]
    );
}

#[test]
fn run_github_issues_is_refused_its_request_without_the_broker() {
    let (origin, seen) = serve("[]");
    let route = format!("https://api.github.com={origin}");
    let out = host(&[
        "run",
        &built("github-issues"),
        "--route",
        &route,
        "--dangerously-allow-https-to-http-routes",
        "--allow-private-addresses",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("identity broker") && err.contains("HttpRequestDenied"),
        "{err}"
    );
    assert!(seen.lock().unwrap().is_empty());
}

/// `host run TOOL --user carol --wait` against the in-process identity
/// service, with oidc-provider as GitHub: without --wait, exit 3 and the URL;
/// with it, the user consents in a "browser", the local binding page (naming
/// the tool) completes the session, and the call returns the data. The
/// token never appears in what the host printed.
async fn consent_then_data(tool: &str) {
    use airlock_tests::oidc::{Browser, Decision, OidcProvider};
    use airlock_tests::peers::{RESOURCE, free_port, provider_json, provider_toml};
    use airlock_tests::resource::ResourceServer;
    use tokio::io::AsyncBufReadExt;

    let identity_port = free_port();
    let binding_port = free_port();
    let provider = OidcProvider::start(&provider_json(identity_port, 3600));
    let resource = ResourceServer::start(&provider.issuer, RESOURCE).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("identity.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{identity_port}\"\ndata_dir = \"{}\"\n{}",
            dir.path().join("identity").display(),
            provider_toml(&provider.discovery_url())
        ),
    )
    .unwrap();
    let route = format!("https://api.github.com={}", resource.origin());
    let binding_addr = format!("127.0.0.1:{binding_port}");
    let args = |wait: bool| {
        let mut a = vec![
            "run".to_string(),
            built(tool),
            "--user".into(),
            "carol".into(),
            "--identity-config".into(),
            config.display().to_string(),
            "--binding-addr".into(),
            binding_addr.clone(),
            "--route".into(),
            route.clone(),
            "--dangerously-allow-https-to-http-routes".into(),
            "--allow-private-addresses".into(),
        ];
        if wait {
            a.extend(["--wait".into(), "60".into()]);
        }
        a
    };

    // Without --wait: exit 3 and the URL.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args(false))
        .env("AIRLOCK_COMPILE_CACHE", compile_cache())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("authorization required"),
        "{}",
        text(&out.stderr)
    );

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args(true))
        .env("AIRLOCK_COMPILE_CACHE", compile_cache())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    let url = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("host printed the URL");
        stderr.push_str(&line);
        stderr.push('\n');
        if line.starts_with(&provider.issuer) {
            break line;
        }
    };
    let binding = format!("http://{binding_addr}/binding");
    let landed = Browser::new()
        .authorize(&url, "carol", Decision::Approve, &binding)
        .await
        .unwrap();
    let page = reqwest::get(&landed).await.unwrap().text().await.unwrap();
    assert!(
        page.contains(&format!(
            "Authorized: <code>{tool}</code> may now act for you"
        )),
        "the page names the tool: {page}"
    );
    while let Some(line) = lines.next_line().await.unwrap() {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{stderr}");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["issues"][0]["title"], "carol's issue");
    let printed = format!("{}{stderr}", text(&out.stdout));
    for shown in resource.shown() {
        let token = shown.authorization.unwrap_or_default();
        let token = token.trim_start_matches("Bearer ");
        assert!(
            !token.is_empty() && !printed.contains(token),
            "the token was printed"
        );
    }

    // A new process finds the grant in the vault: no consent this time.
    let again = tokio::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args(false))
        .output()
        .await
        .unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    stderr.push_str(&text(&again.stderr));
    let shown = resource.shown();
    assert_eq!(shown.len(), 2);
    for s in &shown {
        let token = s
            .authorization
            .as_deref()
            .unwrap()
            .trim_start_matches("Bearer ");
        assert!(!stderr.contains(token), "a token on stderr");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_a_user_waits_for_consent_then_calls_again() {
    consent_then_data("github-issues").await;
}

/// The JavaScript tool (componentize-js from npm): its `fetch` goes through
/// the host's outbound hook, which brokers carol's token exactly as for Rust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_tool_acts_for_a_user_with_a_brokered_token() {
    consent_then_data("js-github-issues").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["run", &built("js-github-issues"), "-i", r#"{"limit": 0}"#])
        .env("AIRLOCK_COMPILE_CACHE", compile_cache())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid input: limit is 0; use 1 to 100"),
        "{}",
        text(&out.stderr)
    );
}

/// A compile cache that outlives the test run: interpreters inside large
/// components compile slowly in a debug build.
fn compile_cache() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("test-compile-cache")
}

/// `--identity-endpoint`: the client takes region and credentials from the
/// standard AWS chain (here the environment) and the binding is someone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_remote_identity_endpoint_with_credentials_from_the_environment() {
    use airlock_tests::oidc::Decision;
    use airlock_tests::peers::{AGENT_SECRET, PeerOptions, Peers, RETURN_URL, WORKLOAD};

    let peers = Peers::start(PeerOptions::default()).await;
    let endpoint = peers.identity.as_ref().unwrap().endpoint_url();
    let route = format!("https://api.github.com={}", peers.resource.origin());
    let run = |secret: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_host"))
            .args([
                "run",
                &built("github-issues"),
                "--user",
                "dave",
                "--identity-endpoint",
                &endpoint,
                "--workload",
                WORKLOAD,
                "--return-url",
                RETURN_URL,
                "--route",
                &route,
                "--dangerously-allow-https-to-http-routes",
                "--allow-private-addresses",
            ])
            .env("AWS_ACCESS_KEY_ID", "AKIDAGENT")
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
    };
    let out = run("wrong-secret-wrong-secret").await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("signature does not match"),
        "{}",
        text(&out.stderr)
    );

    let out = run(AGENT_SECRET).await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let url = stderr
        .split_whitespace()
        .find(|w| w.starts_with(&peers.provider.issuer))
        .expect("the authorization URL");
    let session = peers.consent(url, "dave", Decision::Approve).await.unwrap();
    peers.bind(&session, "dave").await.unwrap();

    let out = run(AGENT_SECRET).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["issues"][0]["title"], "dave's issue");
}

#[test]
fn audit_verify_says_ok_or_names_the_broken_line() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut prev = "0".repeat(64);
    let mut lines = Vec::new();
    for seq in 0..3 {
        let line = format!(
            r#"{{"seq":{seq},"time_ms":1,"prev":"{prev}","kind":"remove","by":"ci","tool":"t{seq}","digest":"d"}}"#
        );
        prev = hex::encode(sha2::Sha256::digest(line.as_bytes()));
        lines.push(line);
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = host(&["audit", "verify", path.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok, 3 records");

    // The same records as the deployed archive holds them: gzip, in any order.
    let object = dir.path().join("object.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, [&lines[2], &lines[0], &lines[1]].map(|l| format!("{l}\n")).concat().as_bytes()).unwrap();
    std::fs::write(&object, gz.finish().unwrap()).unwrap();
    let out = host(&["audit", "verify", "--archive", object.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.starts_with("ok, 1 chains\n  3 records"), "{said}");

    lines[1] = lines[1].replace("\"t1\"", "\"t7\"");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let out = host(&["audit", "verify", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("line 2") && said.contains("edited"), "{said}");
}

#[test]
fn identity_service_names_a_config_it_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\n").unwrap();
    let out = host(&["identity-service", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("list the [[caller]]s"), "{err}");
    std::fs::write(&path, "listen = \"nowhere\"\n").unwrap();
    let out = host(&["identity-service", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("identity.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pack_embeds_a_manifest_into_any_component_and_a_build_section_builds_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    // A component from "another toolchain": text-stats, its manifest stripped.
    let bare =
        airlock_manifest::without_manifest(&airlock_tests::tool_bytes("text-stats")).unwrap();
    std::fs::write(dir.path().join("raw.wasm"), &bare).unwrap();
    std::fs::write(
        dir.path().join("tool.toml"),
        "name = \"packed-stats\"\nversion = \"1.2.3\"\ndescription = \"Word counts, packed.\"\n",
    )
    .unwrap();
    let schemas = serde_json::json!({
        "input": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        "output": {"type": "object"},
    });
    std::fs::write(dir.path().join("schemas.json"), schemas.to_string()).unwrap();
    let path = |p: &str| dir.path().join(p).display().to_string();
    let out = host(&[
        "pack",
        &path("raw.wasm"),
        "--manifest",
        &path("tool.toml"),
        "--schemas",
        &path("schemas.json"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let packed = std::fs::read(dir.path().join("packed-stats.wasm")).unwrap();
    let manifest = airlock_manifest::inspect(&packed).unwrap().manifest;
    assert_eq!(
        (manifest.name.as_str(), manifest.version.as_str()),
        ("packed-stats", "1.2.3")
    );
    assert_eq!(manifest.input_schema, schemas["input"]);
    // Packing again replaces the manifest rather than refusing a second one.
    let out = host(&[
        "pack",
        &path("packed-stats.wasm"),
        "--manifest",
        &path("tool.toml"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again =
        airlock_manifest::inspect(&std::fs::read(dir.path().join("packed-stats.wasm")).unwrap())
            .unwrap()
            .manifest;
    assert_eq!(
        again.input_schema,
        serde_json::json!({"type": "object"}),
        "open schemas by default"
    );

    // A folder whose tool.toml says how it is built: host run builds and runs it.
    let folder = dir.path().join("tool");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("tool.toml"),
        format!(
            "name = \"packed-stats\"\nversion = \"1.2.3\"\ndescription = \"Word counts, packed.\"\n[build]\ncommand = \"cp {} out.wasm\"\noutput = \"out.wasm\"\nschemas = \"../schemas.json\"\n",
            path("raw.wasm")
        ),
    )
    .unwrap();
    let out = host(&[
        "run",
        folder.to_str().unwrap(),
        "-i",
        r#"{"text": "a b a"}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["words"], 3, "{value}");
    assert!(folder.join("target/airlock/packed-stats.wasm").exists());
    // A failing build command is named.
    std::fs::write(
        folder.join("tool.toml"),
        "name = \"packed-stats\"\nversion = \"1.2.3\"\ndescription = \"x\"\n[build]\ncommand = \"exit 7\"\noutput = \"out.wasm\"\n",
    )
    .unwrap();
    let out = host(&["build", folder.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`exit 7`"),
        "{}",
        text(&out.stderr)
    );
}

/// The Python tool (componentize-py from PyPI, built by scripts/build-tools.sh)
/// under `host run`: data, a typed invalid-input error, and its log line.
#[test]
fn a_python_tool_runs_checks_its_input_and_logs() {
    let cache = compile_cache();
    let run = |input: &str| {
        Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["run", &built("py-text-stats"), "-i", input])
            .env("AIRLOCK_COMPILE_CACHE", &cache)
            .output()
            .unwrap()
    };
    let out = run(r#"{"text": "b a b\nc", "top": 1}"#);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"words": 4, "lines": 2, "top_words": [{"word": "b", "count": 2}]})
    );
    assert!(
        text(&out.stderr).contains("counted 4 words"),
        "{}",
        text(&out.stderr)
    );
    let out = run(r#"{"text": 5}"#);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid input: `text` must be a string"),
        "{}",
        text(&out.stderr)
    );
}

fn imports_of(wasm: &str) -> Vec<String> {
    let out = host(&["inspect", wasm]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    view["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// `host build` takes the standard route first: stable cargo, no build-std,
/// no unstable flag, where rustc has the target's std. The guest SDK needs
/// nothing more, and the component (which imports what a prebuilt std does,
/// linked inert) runs with its manifest.
#[test]
fn a_rust_tool_builds_with_stable_cargo_where_rustc_has_the_wasm_std() {
    let rustc = airlock_tests::sysroot::stable_rustc_with_a_prebuilt_wasm_std();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("text-stats.wasm");
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/text-stats");
    let out = Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "build",
            folder.to_str().unwrap(),
            "--out",
            wasm.to_str().unwrap(),
        ])
        .env("RUSTC", &rustc)
        .env(
            "AIRLOCK_TOOLS_TARGET_DIR",
            airlock_tests::target_root().join("test-stable-tools"),
        )
        .env_remove("RUSTC_BOOTSTRAP")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("with cargo with rustc's own wasm32-wasip2 std"),
        "{}",
        text(&out.stderr)
    );
    let wasm = wasm.display().to_string();

    let out = host(&[
        "run",
        &wasm,
        "--input",
        r#"{"text": "one two two", "top": 1}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["words"], 3);
    assert_eq!(value["top_words"][0]["word"], "two");

    // The prebuilt std's imports, linked inert (`host run` above ran it).
    let standard = imports_of(&wasm);
    for inert in ["wasi:cli/environment", "wasi:filesystem/preopens"] {
        assert!(
            standard.iter().any(|i| i.starts_with(inert)),
            "{inert} missing: {standard:?}"
        );
    }
    let from_source = imports_of(&built("text-stats"));
    let added: Vec<&String> = standard
        .iter()
        .filter(|i| !from_source.contains(i))
        .collect();
    eprintln!("imports the prebuilt std adds: {added:?}");
}
