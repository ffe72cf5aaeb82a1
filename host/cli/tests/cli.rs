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
    assert_eq!(report["outcome"]["Err"]["kind"], "memory_limit");
}

#[test]
fn run_exits_2_naming_a_refused_import() {
    let out = host(&["run", &built("hostile-fs")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("wasi:filesystem") && err.contains("no filesystem"),
        "{err}"
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
fn inspect_prints_manifest_imports_and_effective_permissions() {
    let out = host(&["inspect", &built("github-issues")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["manifest"]["name"], "github-issues");
    assert_eq!(
        view["effective"]["grants"]["oauth"][0]["scopes"],
        serde_json::json!(["repo"])
    );
    assert_eq!(view["effective"]["limits"]["max_requests"], 2);
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
    let out = host(&[
        "run",
        &built("exchange-rates"),
        "--route",
        &route,
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
