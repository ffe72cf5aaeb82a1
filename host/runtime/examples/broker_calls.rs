//! Runs COUNT calls of the hostile fixture's `fetch` to a plain host or to an
//! OAuth-covered host whose token is cached, for instruction counts under
//! `valgrind --tool=callgrind` (repeatable where wall-clock time is noisy).
//! The difference per call between two counts is the broker's added work.
//!
//! `cargo run --release -p airlock-runtime --example broker_calls -- plain|oauth COUNT`

use std::convert::Infallible;

use airlock_policy::{HostPattern, OperatorPolicy, Route};
use airlock_runtime::{Runtime, RuntimeConfig};
use airlock_tests::oidc::Decision;
use airlock_tests::world::{World, WorldOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "plain".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let world = World::start(WorldOptions::default()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"[]"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        // One slot: valgrind cannot map the default pool's reservations.
        let runtime = Runtime::new(RuntimeConfig {
            max_concurrent_calls: 1,
            max_memory_mib: 64,
            ..Default::default()
        })
        .unwrap()
        .with_broker(world.broker.clone());
        let route = |from: &str| Route {
            from: HostPattern::parse(from).unwrap(),
            to: HostPattern::parse(&origin).unwrap(),
        };
        let policy = OperatorPolicy {
            allow_private_addresses: true,
            routes: vec![
                route("https://api.github.com"),
                route("https://api.example.com"),
            ],
            ..Default::default()
        };
        let hostile = runtime
            .load(&airlock_tests::tool_bytes("hostile"), &policy)
            .unwrap();
        let brokered = r#"{"attack": "fetch", "url": "https://api.github.com/issues"}"#;
        let plain = r#"{"attack": "fetch", "url": "https://api.example.com/issues"}"#;
        // The same setup for both kinds: one consent, one brokered and one plain call.
        let report = runtime.invoke_as(&hostile, Some("alice"), brokered).await;
        let consent = report.consent.expect("consent first");
        world
            .consent(&consent.authorization_url, "alice", Decision::Approve)
            .await
            .unwrap();
        world.bind(&consent.session_uri, "alice").await.unwrap();
        for input in [brokered, plain] {
            let r = runtime.invoke_as(&hostile, Some("alice"), input).await;
            assert_eq!(r.outcome.unwrap()["results"][0]["status"], 200);
        }
        let input = if kind == "oauth" { brokered } else { plain };
        for _ in 0..count {
            let r = runtime.invoke_as(&hostile, Some("alice"), input).await;
            assert_eq!(r.outcome.unwrap()["results"][0]["status"], 200);
        }
        eprintln!("{count} {kind} calls done");
    });
}
