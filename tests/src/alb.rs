//! A stand-in for an ALB's `authenticate-oidc`: it signs `x-amzn-oidc-data`
//! headers as the ALB does (ES256, base64url segments *with* padding) and
//! serves its public keys by `kid` as the regional key endpoint does.

use std::net::SocketAddr;

use airlock_dev_alb::HeaderSigner;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

/// The test ALB's ARN.
pub const ALB_ARN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/airlock/50dc6c495c0c9188";
/// Its key id (a UUID, as the ALB's are).
pub const KID: &str = "9f2c7a1e-3b1d-4c6e-8a0f-2d5e6b7c8d9e";
/// The IdP's issuer the ALB names.
pub const ISSUER: &str = "https://idp.example.com";

/// The ALB's signing key.
pub const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgezYWRtTejluK2Gan
DYnSA06SswF8cGFnzO6xvaj2tZ6hRANCAAQDKMd+DdMjEtkRrfhJ8GhiEaOuq6ks
FuIXmJvXnJT2PvQWYIx+eReTWsg6YHGkN3Ghc1Tja6TuFOVPK+Y3F9pL
-----END PRIVATE KEY-----
";
/// Its public key, as the key endpoint serves it.
pub const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAyjHfg3TIxLZEa34SfBoYhGjrqup
LBbiF5ib15yU9j70FmCMfnkXk1rIOmBxpDdxoXNU42uk7hTlTyvmNxfaSw==
-----END PUBLIC KEY-----
";
/// Another key (an attacker's), never served.
pub const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgITkKEru+mPwNQfZv
h1c5h4gGohvgY61+82e6pIlznTShRANCAAQ+Mdrif1RWQN7YT/A4r/HXyjhIpMCO
bpLDvb6S/8qhKGPXCqFv5Mv8CFgXfv5xj9ndIbkaM4XLlxCGVFi2tckd
-----END PRIVATE KEY-----
";

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A header as the ALB signs it for `sub`, valid for a minute.
pub fn header_for(sub: &str) -> String {
    sign(
        &json!({"alg": "ES256", "kid": KID, "signer": ALB_ARN, "iss": ISSUER, "client": "airlock", "exp": now() + 60}),
        &json!({"sub": sub, "email": format!("{sub}@example.com"), "exp": now() + 60, "iss": ISSUER}),
        KEY,
    )
}

/// Sign `header`.`claims` with `key` (PEM) the ALB's way (padded segments),
/// by the same writer as the ALB stand-in.
pub fn sign(header: &Value, claims: &Value, key: &str) -> String {
    HeaderSigner::from_pkcs8_pem(key)
        .expect("a test key")
        .sign(header, claims)
}

/// The regional key endpoint: `GET /{kid}` answers the PEM for [`KID`].
pub async fn key_endpoint() -> String {
    key_endpoint_counting().await.0
}

/// The same, and how many requests it answered.
pub async fn key_endpoint_counting() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let app = Router::new().route(
        "/{kid}",
        get(move |Path(kid): Path<String>| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if kid == KID {
                    PUBLIC_KEY.into_response()
                } else {
                    StatusCode::NOT_FOUND.into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), served)
}
