//! The broker's added cost per call on a cache hit: the same tool and the
//! same request, once to a plain host and once to a host covered by an OAuth
//! grant (token from the broker's cache, added by the outbound hook). Both go
//! to the same local server. Needs node and tests/oidc (as the tests do): the
//! token in the cache comes from a real consent flow.

#![allow(missing_docs)]

use std::convert::Infallible;

use airlock_policy::{HostPattern, OperatorPolicy, Route};
use airlock_runtime::{Runtime, RuntimeConfig};
use airlock_tests::oidc::Decision;
use airlock_tests::world::{World, WorldOptions};
use criterion::{Criterion, criterion_group, criterion_main};

async fn plain_server() -> String {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"[]"),
                    )))
                });
                let _ = http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (world, origin) = rt.block_on(async {
        (
            World::start(WorldOptions::default()).await,
            plain_server().await,
        )
    });
    let runtime = Runtime::new(RuntimeConfig::default())
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

    // One real consent, so the broker's cache holds alice's token.
    rt.block_on(async {
        let report = runtime.invoke_as(&hostile, Some("alice"), brokered).await;
        let consent = report.consent.expect("consent first");
        world
            .consent(&consent.authorization_url, "alice", Decision::Approve)
            .await
            .unwrap();
        world.bind(&consent.session_uri, "alice").await.unwrap();
        let report = runtime.invoke_as(&hostile, Some("alice"), brokered).await;
        assert_eq!(report.outcome.unwrap()["results"][0]["status"], 200);
    });
    let grant = hostile.effective().grants.oauth[0].clone();
    assert!(world.broker.cached("alice", &grant).is_some());

    c.bench_function("call_fetch_plain_host", |b| {
        b.iter(|| {
            let r = rt.block_on(runtime.invoke_as(&hostile, Some("alice"), plain));
            assert_eq!(r.outcome.unwrap()["results"][0]["status"], 200);
        })
    });
    c.bench_function("call_fetch_oauth_host_cache_hit", |b| {
        b.iter(|| {
            let r = rt.block_on(runtime.invoke_as(&hostile, Some("alice"), brokered));
            assert_eq!(r.outcome.unwrap()["results"][0]["status"], 200);
        })
    });
    c.bench_function("broker_cache_lookup", |b| {
        b.iter(|| world.broker.cached("alice", &grant).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
