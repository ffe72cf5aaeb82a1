//! What signing in costs each call once signed in: verifying the caller's
//! credential, for an access token of Airlock's authorization server (a
//! bearer JWT, EdDSA) beside the ALB's `x-amzn-oidc-data` (ES256, padded
//! segments). Each on a token seen before (the verified-token cache hits, as
//! on every call after a client's first) and on a token never seen (the
//! signature checked: a client's first call, or a cache turned over).
//!
//! `cargo bench -p airlock-verify --bench verify`

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use airlock_dev_alb::HeaderSigner;
use airlock_verify::{AlbConfig, AlbVerifier, JwtVerifier, KnownIssuer};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const ALB_ARN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/airlock/50dc6c495c0c9188";
const ISSUER: &str = "https://idp.example.com";

/// The ALB's key endpoint for `signer`: its PEM at `/{kid}`.
async fn key_endpoint(signer: &HeaderSigner) -> String {
    let (kid, pem) = (signer.kid(), signer.public_key_pem());
    let app = axum::Router::new().route(
        &format!("/{kid}"),
        axum::routing::get(move || std::future::ready(pem.clone())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

const RESOURCE: &str = "https://airlock.example.com/mcp";
const FACADE: &str = "https://airlock.example.com";
/// More distinct tokens than the verified-token cache holds: each comes
/// round again only after the cache was emptied.
const DISTINCT: usize = 10_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let keys =
        airlock_oauth::Keys::from_secrets(&["a-bench-secret-of-at-least-thirty-two-bytes".into()])
            .unwrap();
    let bearer = JwtVerifier::new(Vec::new()).with_known(KnownIssuer {
        issuer: FACADE.into(),
        audience: RESOURCE.into(),
        keys: keys.jwks(),
        user_prefix: None,
    });
    let access = |i: usize| {
        keys.sign(
            &json!({"iss": FACADE, "sub": format!("user-{i}"), "aud": RESOURCE,
            "exp": now + 3600, "iat": now, "jti": i.to_string(), "scope": "tools:list tools:call"}),
        )
    };
    let signer = HeaderSigner::generate().unwrap();
    let key_url = rt.block_on(key_endpoint(&signer));
    let header = AlbVerifier::new(AlbConfig {
        signer_arn: ALB_ARN.into(),
        key_url,
        issuer: Some(ISSUER.into()),
        user_prefix: None,
    });
    let signed_in = |i: usize| {
        signer.sign(
            &json!({"alg": "ES256", "kid": signer.kid(), "signer": ALB_ARN, "iss": ISSUER, "client": "airlock", "exp": now + 3600}),
            &json!({"sub": format!("user-{i}"), "email": "u@example.com", "exp": now + 3600, "iss": ISSUER}),
        )
    };
    let bearers: Vec<String> = (0..DISTINCT).map(access).collect();
    let headers: Vec<String> = (0..DISTINCT).map(signed_in).collect();
    // The ALB's key is fetched once, before measuring.
    rt.block_on(header.verify(&headers[0], now)).unwrap();
    rt.block_on(bearer.verify(&bearers[0])).unwrap();

    let mut group = c.benchmark_group("verify a caller");
    group.bench_function("bearer (Airlock's access token), seen before", |b| {
        b.iter(|| rt.block_on(bearer.verify(&bearers[0])).unwrap())
    });
    group.bench_function("ALB header, seen before", |b| {
        b.iter(|| rt.block_on(header.verify(&headers[0], now)).unwrap())
    });
    let mut i = 0;
    group.bench_function("bearer (Airlock's access token), never seen", |b| {
        b.iter(|| {
            i = (i + 1) % DISTINCT;
            rt.block_on(bearer.verify(&bearers[i])).unwrap()
        })
    });
    let mut i = 0;
    group.bench_function("ALB header, never seen", |b| {
        b.iter(|| {
            i = (i + 1) % DISTINCT;
            rt.block_on(header.verify(&headers[i], now)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
