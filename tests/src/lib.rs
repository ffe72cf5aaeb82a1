//! Helpers for Airlock's end-to-end tests: built tool paths, a recording
//! HTTP server, a real OAuth provider (oidc-provider under node), a resource
//! server that checks its tokens, and the local identity service wired to them.

pub mod alb;
pub mod bench;
pub mod chrome;
pub mod logs;
pub mod oidc;
pub mod peers;
pub mod resource;
pub mod s3;
pub mod serve;
pub mod standin;
pub mod sysroot;
pub mod tls;

use std::convert::Infallible;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Serve HTTP/1.1 on 127.0.0.1 inside the current tokio runtime, each
/// request answered by `answer` (no delayed ACKs: each frame goes out as it
/// is written); its address.
pub async fn serve_http<F, Fut, B>(answer: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answered = answer(req);
                    async move { Ok::<_, Infallible>(answered.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Ask `check` every 20 ms until it answers `Some`, and return that; panic
/// naming `what` after `timeout`. For anything a test waits on: no sleeps.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "not within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The target folder these tests were built in (`target/debug/deps/NAME`
/// is three levels below it).
pub fn target_root() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .expect("a test binary in target/debug/deps")
        .to_path_buf()
}

/// `POST /invocations` at `http` (`HOST:PORT`) with `tool` and `input`,
/// with `headers`; the status and the JSON answer (`Null` when there is none).
pub async fn invoke(
    http: impl Display,
    headers: &[(&str, String)],
    tool: &str,
    input: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{http}/invocations"))
        .json(&serde_json::json!({"tool": tool, "input": input}));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// The value of the metric line starting `series ` at a `/metrics` listener.
pub async fn metric(metrics: SocketAddr, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The ALB header signed for `user`, as `invoke` takes headers.
pub fn as_alb(user: &str) -> (&'static str, String) {
    ("x-amzn-oidc-data", alb::header_for(user))
}

/// A user for tests, named as a local run names one; panics on an invalid id.
pub fn user(id: &str) -> airlock_verify::VerifiedUser {
    airlock_verify::VerifiedUser::local(airlock_policy::UserId::parse(id).unwrap())
}

/// The folder holding the built tools (`host build` output), from
/// `AIRLOCK_TOOLS_DIR` or the default `tools/target/airlock`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("AIRLOCK_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/target/airlock")
        })
}

/// The path of a built tool (an example, or a fixture in
/// `airlock-fixtures` beside them). Panics with the fix when it is missing.
pub fn tool_path(name: &str) -> PathBuf {
    let file = format!("{name}.wasm");
    let example = tools_dir().join(&file);
    let path = if example.exists() {
        example
    } else {
        tools_dir().join("../airlock-fixtures").join(&file)
    };
    assert!(
        path.exists(),
        "{} is missing; build the tools first with scripts/test.sh (or scripts/build-tools.sh)",
        path.display()
    );
    path
}

/// The bytes of a built tool. Panics with the fix when it is missing.
pub fn tool_bytes(name: &str) -> Vec<u8> {
    let path = tool_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// All headers, names lower-case.
    pub headers: Vec<(String, String)>,
}

/// A local HTTP server that answers every request with a fixed JSON body and
/// records what it saw.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Start on 127.0.0.1:0 inside the current tokio runtime.
    pub async fn start(body: &'static str) -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let addr = serve_http(move |req: Request<Incoming>| {
            log.lock().unwrap().push(Seen {
                method: req.method().to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
            });
            std::future::ready(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap(),
            )
        })
        .await;
        Upstream { addr, seen }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it saw so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}
