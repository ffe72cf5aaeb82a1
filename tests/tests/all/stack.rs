//! The seed's whole flow, every part a real process on 127.0.0.1, started by
//! the one command a person uses (`scripts/stack.sh`): oidc-provider as the
//! corporate IdP and the third party, the API, the local identity service,
//! the binding service behind the ALB stand-in, and `host serve` with its
//! authorization server façade. The agent is the official Python MCP SDK's
//! stock OAuth client (`tests/mcp/oauth_client.py`), which signs in by
//! itself; the person is headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use airlock_tests::chrome::Chrome;
use airlock_tests::peers::free_port;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The target folder this test was built in (its binaries are beside it).
fn target() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/stack-HASH
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

struct Stack {
    child: Child,
    ready: Value,
    dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        for bin in ["host", "binding-service", "alb-dev", "dev-resource-server"] {
            assert!(
                target().join("debug").join(bin).exists(),
                "{bin} is not built: cargo test --workspace builds it (or cargo build --workspace --bins)"
            );
        }
        let mut child = Command::new(root().join("scripts/stack.sh"))
            .env("AIRLOCK_STACK_NO_BUILD", "1")
            .env("CARGO_TARGET_DIR", target())
            .env("AIRLOCK_STACK_DIR", dir.path().join("stack"))
            .env("AIRLOCK_STACK_IDP_PORT", free_port().to_string())
            .env("AIRLOCK_STACK_IDENTITY_PORT", free_port().to_string())
            .env("AIRLOCK_STACK_BINDING_PORT", free_port().to_string())
            .env("AIRLOCK_STACK_ALB_PORT", free_port().to_string())
            .env("AIRLOCK_STACK_HTTP_PORT", free_port().to_string())
            .env("AIRLOCK_STACK_MCP_PORT", free_port().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(90), out.next_line())
            .await
            .expect("the stack starts within 90 s")
            .unwrap();
        let Some(line) = line else {
            let mut err = String::new();
            let _ =
                tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut err)
                    .await;
            panic!("the stack did not start: {err}");
        };
        Stack {
            child,
            ready: serde_json::from_str(&line).unwrap(),
            dir,
        }
    }

    /// The stack's logs, for a failure's message.
    fn logs(&self) -> String {
        let dir = self.dir.path().join("stack");
        let mut logs = String::new();
        for name in ["idp", "api", "identity", "binding", "alb", "host"] {
            let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            logs.push_str(&format!("\n--- {name}.log (last lines) ---\n"));
            for line in tail.into_iter().rev() {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        logs
    }

    async fn stop(mut self) {
        // The script stops its processes on TERM.
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the stack stops on TERM")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_runs_the_whole_flow_a_person_and_an_agent_go_through() {
    let stack = Stack::start().await;
    let alb = stack.ready["alb"].as_str().unwrap().to_string();
    let mcp = stack.ready["mcp"].as_str().unwrap().to_string();
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/callback");
    let mut agent = Command::new(root().join("tests/mcp/.venv/bin/python"))
        .arg(root().join("tests/mcp/oauth_client.py"))
        .args([&mcp, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the MCP client's venv (scripts/setup-test-peers.sh)");
    let mut stdin = agent.stdin.take().unwrap();
    let mut lines = BufReader::new(agent.stdout.take().unwrap()).lines();
    let alice = Chrome::start().await;
    let mut seen = Vec::new();
    let mut data = None;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the agent answers")
        .unwrap()
    {
        seen.push(line.clone());
        if let Some(url) = line.strip_prefix("AUTHORIZE ") {
            // The client's sign-in: Airlock's consent page, then the IdP's.
            alice.open(url).await;
            alice.approve_until("alice", &callback).await;
        } else if let Some(url) = line.strip_prefix("CONSENT ") {
            // Consent at the provider, the ALB's sign-in, the binding page.
            alice.open(url).await;
            alice
                .approve_until("alice", &format!("{alb}/oauth2/session-binding"))
                .await;
            let html = alice.html().await;
            assert!(html.contains("<h1>Access granted</h1>"), "{html}");
            assert!(html.contains("<code>github-issues</code>"), "{html}");
            alice.screenshot("stack-granted.png").await;
            stdin.write_all(b"\n").await.unwrap();
            stdin.flush().await.unwrap();
        } else if let Some(title) = line.strip_prefix("DATA ") {
            data = Some(title.to_string());
        }
    }
    let status = agent.wait().await.unwrap();
    let mut err = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(agent.stderr.as_mut().unwrap(), &mut err).await;
    assert!(status.success(), "{seen:?} {err}{}", stack.logs());
    let data = data.unwrap_or_else(|| panic!("no data: {seen:?}{}", stack.logs()));
    assert_eq!(data, "alice's issue");
    assert!(
        seen.iter().any(|l| l.starts_with("CONSENT ")),
        "consent was asked: {seen:?}"
    );
    alice.close().await;
    stack.stop().await;
}
