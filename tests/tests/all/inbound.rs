//! Inbound identities: the ALB's `x-amzn-oidc-data` header as the ALB signs
//! it, and the headers an attacker would try instead.

use airlock_tests::alb::{self, ALB_ARN, ISSUER, KEY, KID, OTHER_KEY};
use airlock_verify::{AlbConfig, AlbVerifier, Proof, VerifyError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde_json::{Value, json};

async fn verifier() -> AlbVerifier {
    AlbVerifier::new(AlbConfig {
        signer_arn: ALB_ARN.into(),
        key_url: alb::key_endpoint().await,
        issuer: Some(ISSUER.into()),
        user_prefix: None,
    })
}

#[tokio::test]
async fn a_header_as_the_alb_signs_it_names_its_user() {
    let v = verifier().await;
    let header = alb::header_for("alice");
    assert!(header.contains('='), "the ALB pads its segments: {header}");
    let user = v.verify(&header, alb::now()).await.unwrap();
    assert_eq!(user.id().as_str(), "alice");
    assert_eq!(user.claims().email.as_deref(), Some("alice@example.com"));
    assert_eq!(user.proof(), &Proof::SignedIn);
}

/// The ALB's header fields with `extra` changed.
fn head(extra: Value) -> Value {
    let mut h = json!({"alg": "ES256", "kid": KID, "signer": ALB_ARN, "iss": ISSUER, "exp": alb::now() + 60});
    for (k, v) in extra.as_object().unwrap() {
        h[k] = v.clone();
    }
    h
}

#[tokio::test]
async fn forged_expired_and_confused_headers_are_refused() {
    let v = verifier().await;
    let now = alb::now();
    let claims = json!({"sub": "alice", "exp": now + 60});
    let evil_alb = "arn:aws:elasticloadbalancing:us-east-1:999999999999:loadbalancer/app/evil/50dc6c495c0c9188";
    let unsigned = {
        let signed = alb::sign(&head(json!({"alg": "none"})), &claims, KEY);
        format!("{}.", &signed[..signed.rfind('.').unwrap()])
    };
    // HS256 keyed with the ES256 public key (algorithm confusion).
    let confused = {
        let input = format!(
            "{}.{}",
            URL_SAFE.encode(head(json!({"alg": "HS256"})).to_string()),
            URL_SAFE.encode(claims.to_string())
        );
        let key = jsonwebtoken::EncodingKey::from_secret(alb::PUBLIC_KEY.as_bytes()).unwrap();
        let mac =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{input}.{mac}")
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "another key",
            alb::sign(&head(json!({})), &claims, OTHER_KEY),
        ),
        (
            "another load balancer",
            alb::sign(&head(json!({"signer": evil_alb})), &claims, KEY),
        ),
        (
            "another issuer",
            alb::sign(
                &head(json!({"iss": "https://evil.example.com"})),
                &claims,
                KEY,
            ),
        ),
        (
            "expired",
            alb::sign(
                &head(json!({})),
                &json!({"sub": "alice", "exp": now - 1}),
                KEY,
            ),
        ),
        (
            "without expiry",
            alb::sign(&head(json!({})), &json!({"sub": "alice"}), KEY),
        ),
        (
            "not valid yet",
            alb::sign(
                &head(json!({})),
                &json!({"sub": "alice", "exp": now + 60, "nbf": now + 30}),
                KEY,
            ),
        ),
        ("alg none", unsigned),
        ("HS256 with the public key", confused),
        (
            "a kid with path characters",
            alb::sign(&head(json!({"kid": "../../etc/passwd"})), &claims, KEY),
        ),
        (
            "a kid that is a URL",
            alb::sign(
                &head(json!({"kid": "https://evil.example.com/key"})),
                &claims,
                KEY,
            ),
        ),
        (
            "an unknown kid",
            alb::sign(
                &head(json!({"kid": "00000000-0000-0000-0000-000000000000"})),
                &claims,
                KEY,
            ),
        ),
        ("a changed claim", {
            let signed = alb::header_for("alice");
            let parts: Vec<&str> = signed.split('.').collect();
            let forged = URL_SAFE.encode(json!({"sub": "admin", "exp": now + 60}).to_string());
            format!("{}.{forged}.{}", parts[0], parts[2])
        }),
        ("not a JWT", "hello".into()),
    ];
    for (what, header) in cases {
        let e = v.verify(&header, now).await.unwrap_err();
        assert!(!matches!(e, VerifyError::Unavailable(_)), "{what}: {e}");
        assert!(!e.to_string().contains(KEY), "{what}");
    }
}

/// A header verified once is remembered, but only those exact bytes, and
/// never past its expiry.
#[tokio::test]
async fn a_remembered_header_still_expires_and_nothing_else_matches_it() {
    let v = verifier().await;
    let now = alb::now();
    let header = alb::sign(
        &head(json!({"exp": now + 5})),
        &json!({"sub": "alice", "exp": now + 5}),
        KEY,
    );
    assert_eq!(v.verify(&header, now).await.unwrap().id().as_str(), "alice");
    assert_eq!(
        v.verify(&header, now + 4).await.unwrap().id().as_str(),
        "alice"
    );
    let e = v.verify(&header, now + 5).await.unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    let fresh = alb::header_for("alice");
    v.verify(&fresh, now).await.unwrap();
    let parts: Vec<&str> = fresh.split('.').collect();
    let as_admin = URL_SAFE.encode(json!({"sub": "admin", "exp": now + 60}).to_string());
    let mut signature = parts[2].to_string();
    signature.replace_range(..1, if signature.starts_with('A') { "B" } else { "A" });
    for forged in [
        format!("{}.{as_admin}.{}", parts[0], parts[2]),
        format!("{}.{}.{signature}", parts[0], parts[1]),
        format!("{fresh}."),
    ] {
        assert!(v.verify(&forged, now).await.is_err(), "{forged}");
    }
}

/// Made-up key ids cost no one else anything: fifty headers naming keys
/// that do not exist, at once, fetch at most once, and a genuine header is
/// verified meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_key_ids_make_one_fetch_not_one_each() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    let (key_url, served) = alb::key_endpoint_counting().await;
    let v = Arc::new(AlbVerifier::new(AlbConfig {
        signer_arn: ALB_ARN.into(),
        key_url,
        issuer: Some(ISSUER.into()),
        user_prefix: None,
    }));
    v.verify(&alb::header_for("alice"), alb::now())
        .await
        .unwrap();
    assert_eq!(served.load(Ordering::SeqCst), 1, "the genuine key, once");
    let claims = json!({"sub": "mallory", "exp": alb::now() + 60});
    let mut attacks = Vec::new();
    for i in 0..50 {
        let (v, claims) = (v.clone(), claims.clone());
        attacks.push(tokio::spawn(async move {
            let forged = alb::sign(
                &head(json!({"kid": format!("made-up-{i}")})),
                &claims,
                OTHER_KEY,
            );
            v.verify(&forged, alb::now()).await
        }));
    }
    let genuine = v.verify(&alb::header_for("bob"), alb::now()).await;
    assert_eq!(genuine.unwrap().id().as_str(), "bob");
    for a in attacks {
        assert!(a.await.unwrap().is_err());
    }
    assert!(
        served.load(Ordering::SeqCst) <= 2,
        "{} fetches for fifty made-up key ids",
        served.load(Ordering::SeqCst) - 1
    );
}

/// The same for bearer JWTs: an issuer's keys are fetched once for fifty
/// tokens with unknown key ids, and a token that claims an untrusted issuer
/// sends the verifier nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_with_made_up_key_ids_or_issuers_fetch_at_most_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fetches = Arc::new(AtomicUsize::new(0));
    let count = fetches.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let issuer = origin.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                count.fetch_add(1, Ordering::SeqCst);
                let doc = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
                async move { axum::Json(doc) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(|| async { axum::Json(json!({"keys": []})) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let v = Arc::new(airlock_verify::JwtVerifier::new(vec![
        airlock_verify::JwtIssuer {
            discovery_url: format!("{origin}/.well-known/openid-configuration"),
            audiences: vec!["app".into()],
            user_prefix: None,
        },
    ]));
    let token = |iss: &str, kid: String| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid);
        jsonwebtoken::encode(
            &header,
            &json!({"iss": iss, "sub": "mallory", "aud": "app", "exp": alb::now() + 60}),
            &jsonwebtoken::EncodingKey::from_ec_pem(OTHER_KEY.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    // Another issuer: refused before any fetch.
    assert!(
        v.verify(&token("https://evil.example", "k".into()))
            .await
            .is_err()
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
    let mut attacks = Vec::new();
    for i in 0..50 {
        let (v, t) = (v.clone(), token(&origin, format!("made-up-{i}")));
        attacks.push(tokio::spawn(async move { v.verify(&t).await }));
    }
    for a in attacks {
        assert!(a.await.unwrap().is_err());
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "one fetch for fifty made-up key ids"
    );
}
