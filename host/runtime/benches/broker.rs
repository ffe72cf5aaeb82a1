//! The broker's added cost per call on a cache hit: the same tool and the
//! same request, once to a plain host and once to a host covered by an OAuth
//! grant (token from the broker's cache, added by the outbound hook). Both go
//! to the same local server, beside the same request made natively by a
//! pooled hyper client. Needs node and tests/oidc (as the tests do): the
//! token in the cache comes from a real consent flow.

#![allow(missing_docs)]

use airlock_runtime::Runtime;
use airlock_tests::bench::{BROKERED, PLAIN, answering_server, policy_to};
use airlock_tests::peers::{PeerOptions, Peers};
use airlock_tests::user;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (peers, origin) = rt.block_on(async {
        (
            Peers::start(PeerOptions::default()).await,
            answering_server().await,
        )
    });
    let runtime = Runtime::builder()
        .token_source(peers.broker.clone())
        .build()
        .unwrap();
    let hostile = runtime
        .load(&airlock_tests::tool_bytes("hostile"), &policy_to(&origin))
        .unwrap();
    let (brokered, plain) = (BROKERED, PLAIN);
    let alice = user("alice");

    // One real consent, so the broker's cache holds alice's token.
    rt.block_on(async {
        let report = runtime.invoke_as(&hostile, Some(&alice), brokered).await;
        let consent = report.outcome.consent().cloned().expect("consent first");
        peers.approve(&consent, &alice).await;
        let report = runtime.invoke_as(&hostile, Some(&alice), brokered).await;
        assert_eq!(report.outcome.unwrap_output()["results"][0]["status"], 200);
    });
    let grant = hostile.permissions().grants.oauth[0].clone();
    assert!(peers.broker.cached("hostile", &alice, &grant).is_some());

    c.bench_function("call_fetch_plain_host", |b| {
        b.iter(|| {
            let r = rt.block_on(runtime.invoke_as(&hostile, Some(&alice), plain));
            assert_eq!(r.outcome.unwrap_output()["results"][0]["status"], 200);
        })
    });
    c.bench_function("call_fetch_oauth_host_cache_hit", |b| {
        b.iter(|| {
            let r = rt.block_on(runtime.invoke_as(&hostile, Some(&alice), brokered));
            assert_eq!(r.outcome.unwrap_output()["results"][0]["status"], 200);
        })
    });
    // The baseline: the request alone, from native code, on a kept connection.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let url: hyper::Uri = format!("{origin}/issues").parse().unwrap();
    c.bench_function("native_hyper_request", |b| {
        b.iter(|| {
            rt.block_on(async {
                let request = hyper::Request::get(url.clone())
                    .header("authorization", "Bearer a-token-of-some-length")
                    .body(http_body_util::Empty::new())
                    .unwrap();
                let response = client.request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
            })
        })
    });
    c.bench_function("broker_cache_lookup", |b| {
        b.iter(|| peers.broker.cached("hostile", &alice, &grant).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
