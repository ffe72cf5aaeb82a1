//! The binary as a container runs it: configured by variables alone, and
//! its own health check.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_binding-service");

fn with_vars(command: &mut Command, skip: &str) {
    for (k, v) in [
        ("AIRLOCK_BINDING_LISTEN", "127.0.0.1:0"),
        (
            "AIRLOCK_BINDING_ALB_ARN",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/airlock/1",
        ),
        ("AIRLOCK_BINDING_ALB_KEY_URL", "http://127.0.0.1:9/keys"),
        ("AIRLOCK_BINDING_ALB_ISSUER", "https://idp.example.com"),
        ("AIRLOCK_AUDIT", "off"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if k != skip {
            command.env(k, v);
        }
    }
    command.env_remove("AIRLOCK_BINDING_CONFIG");
}

#[test]
fn variables_alone_start_it_and_ping_says_whether_it_is_healthy() {
    let mut command = Command::new(BIN);
    with_vars(&mut command, "");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addrs: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("{line:?}"));
    let ping = format!("http://{}/ping", addrs["binding"].as_str().unwrap());
    let healthy = Command::new(BIN).args(["--ping", &ping]).output().unwrap();
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = Command::new(BIN).args(["--ping", &ping]).output().unwrap();
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains(&ping));
}

#[test]
fn a_missing_variable_is_named() {
    let mut command = Command::new(BIN);
    with_vars(&mut command, "AIRLOCK_BINDING_ALB_ARN");
    let out = command.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AIRLOCK_BINDING_ALB_ARN"), "{err}");
}
