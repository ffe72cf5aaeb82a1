//! The identity client (AWS SDK) against the local identity service: SigV4,
//! caller permissions, typed errors, retries, JWT users, M2M and API keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use airlock_identity::{
    ClientConfig, Flow, IdentityClient, IdentityError, Secret, TokenAnswer, UserRef,
};
use airlock_tests::oidc::Decision;
use airlock_tests::peers::{AGENT_SECRET, PROVIDER, PeerOptions, Peers, RETURN_URL, WORKLOAD};

fn client(endpoint: &str, akid: &str, secret: &str, attempts: u32) -> IdentityClient {
    IdentityClient::from_config(&ClientConfig {
        max_attempts: Some(attempts),
        initial_backoff: Some(Duration::from_millis(5)),
        ..ClientConfig::fixed(endpoint, akid, secret)
    })
}

/// Ask for a token, expect consent, consent at the provider as `user`: the session.
async fn consented(peers: &Peers, token: &Secret, user: &str) -> String {
    let answer = ask(peers, token).await;
    let TokenAnswer::Consent {
        authorization_url,
        session_uri,
    } = answer
    else {
        panic!("expected consent, got {answer:?}");
    };
    peers
        .consent(&authorization_url, user, Decision::Approve)
        .await
        .unwrap();
    session_uri
}

/// A workload access token for `user`, as the agent gets it.
async fn token_for(peers: &Peers, user: &str) -> Secret {
    peers
        .agent
        .workload_token_for_user(WORKLOAD, user)
        .await
        .unwrap()
}

/// The request the tests repeat: the `repo` grant for the token's user.
async fn ask(peers: &Peers, token: &Secret) -> TokenAnswer {
    peers
        .agent
        .oauth2_token(token, PROVIDER, &["repo"], &federation(RETURN_URL))
        .await
        .unwrap()
}

fn federation(return_url: &str) -> Flow {
    Flow::UserFederation {
        return_url: Some(return_url.into()),
        custom_state: None,
        force_authentication: false,
        session_uri: None,
    }
}

#[tokio::test]
async fn signatures_and_caller_permissions_are_enforced() {
    let peers = Peers::start(PeerOptions::default()).await;
    let endpoint = peers.identity.as_ref().unwrap().endpoint_url();

    let forged = client(&endpoint, "AKIDAGENT", "not-the-agent-secret-0000", 1);
    let e = forged
        .workload_token_for_user(WORKLOAD, "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IdentityError::Unauthorized { message, .. } if message.contains("signature does not match")),
        "{e}"
    );
    let stranger = client(&endpoint, "AKIDNOBODY", AGENT_SECRET, 1);
    let e = stranger
        .workload_token_for_user(WORKLOAD, "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IdentityError::Unauthorized { message, .. } if message.contains("unknown access key")),
        "{e}"
    );

    // The binding service can complete sessions and nothing else.
    let e = peers
        .binder
        .workload_token_for_user(WORKLOAD, "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IdentityError::AccessDenied { message, .. } if message.contains("may not call GetWorkloadAccessTokenForUserId")),
        "{e}"
    );
    assert!(
        peers
            .agent
            .workload_token_for_user(WORKLOAD, "alice")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn mistakes_come_back_as_typed_errors() {
    let peers = Peers::start(PeerOptions::default()).await;
    let agent = &peers.agent;
    let e = agent
        .workload_token_for_user("no-such-workload", "alice")
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::NotFound { .. }), "{e}");
    let e = agent
        .workload_token_for_user(WORKLOAD, &"x".repeat(129))
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Validation { .. }), "{e}");

    let token = token_for(&peers, "alice").await;
    let e = agent
        .oauth2_token(&token, "nope", &["repo"], &federation(RETURN_URL))
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::NotFound { .. }), "{e}");
    let e = agent
        .oauth2_token(
            &token,
            PROVIDER,
            &["repo"],
            &federation("https://evil.example/steal"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IdentityError::Validation { message, .. } if message.contains("allowed return URLs")),
        "{e}"
    );
    let tampered = Secret::new(format!("{}x", token.expose()));
    let e = agent
        .oauth2_token(&tampered, PROVIDER, &["repo"], &federation(RETURN_URL))
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Unauthorized { .. }), "{e}");
    // A workload token without a user cannot act for one.
    let own = agent.workload_token(WORKLOAD).await.unwrap();
    let e = agent
        .oauth2_token(&own, PROVIDER, &["repo"], &federation(RETURN_URL))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IdentityError::Validation { message, .. } if message.contains("issued for a user")),
        "{e}"
    );
    // No error message carries the token.
    assert!(!e.to_string().contains(token.expose()));
}

#[tokio::test]
async fn api_keys_and_client_credentials_for_the_workload() {
    let peers = Peers::start(PeerOptions::default()).await;
    let own = peers.agent.workload_token(WORKLOAD).await.unwrap();
    let key = peers.agent.api_key(&own, "weather").await.unwrap();
    assert_eq!(key.expose(), "weather-api-key-for-tests");
    let e = peers.agent.api_key(&own, "other").await.unwrap_err();
    assert!(matches!(e, IdentityError::NotFound { .. }), "{e}");

    let first = peers
        .agent
        .oauth2_token(&own, PROVIDER, &["repo"], &Flow::M2M)
        .await
        .unwrap();
    let second = peers
        .agent
        .oauth2_token(&own, PROVIDER, &["repo"], &Flow::M2M)
        .await
        .unwrap();
    let (TokenAnswer::Token(a), TokenAnswer::Token(b)) = (first, second) else {
        panic!("client credentials give a token");
    };
    assert_eq!(a, b, "the second answer comes from the vault");
    assert_eq!(
        peers
            .identity
            .as_ref()
            .unwrap()
            .stored_workload_grants(WORKLOAD),
        1,
        "kept under the workload"
    );
    assert_eq!(peers.stored_grants(""), 0, "not under any user");
}

#[tokio::test]
async fn a_user_jwt_gets_a_workload_token_and_binds_its_own_session() {
    let peers = Peers::start(PeerOptions::default()).await;
    let agent = &peers.agent;
    let alice_jwt = peers.id_token("alice").await;
    let token = agent
        .workload_token_for_jwt(WORKLOAD, &alice_jwt)
        .await
        .unwrap();
    let session_uri = consented(&peers, &token, "alice").await;

    // Bob's JWT cannot bind Alice's session.
    let bob_jwt = peers.id_token("bob").await;
    let e = peers
        .binder
        .complete_session(&session_uri, &UserRef::UserToken(bob_jwt))
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::AccessDenied { .. }), "{e}");
    assert_eq!(peers.stored_grants("alice"), 0);

    // A second flow, bound with Alice's own JWT.
    let session_uri = consented(&peers, &token, "alice").await;
    peers
        .binder
        .complete_session(&session_uri, &UserRef::UserToken(alice_jwt.clone()))
        .await
        .unwrap();
    assert!(matches!(ask(&peers, &token).await, TokenAnswer::Token(_)));

    // A JWT with a forged signature gets nothing.
    let mut parts: Vec<String> = alice_jwt.expose().split('.').map(str::to_string).collect();
    parts[2] = parts[2].chars().rev().collect();
    let forged = Secret::new(parts.join("."));
    let e = agent
        .workload_token_for_jwt(WORKLOAD, &forged)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Unauthorized { .. }), "{e}");
}

/// A stand-in endpoint that throttles the first `throttle` calls.
async fn throttling_endpoint(throttle: u32) -> (String, Arc<AtomicU32>) {
    let seen = Arc::new(AtomicU32::new(0));
    let count = seen.clone();
    let app = axum::Router::new().route(
        "/identities/GetWorkloadAccessTokenForUserId",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n < throttle {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("x-amzn-errortype", "ThrottlingException")],
                        r#"{"message":"Rate exceeded"}"#,
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        [("content-type", "application/json")],
                        r#"{"workloadAccessToken":"wat"}"#,
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_then_reported() {
    let (endpoint, seen) = throttling_endpoint(2).await;
    let c = client(&endpoint, "AKID", "secret-secret-secret", 4);
    let token = c.workload_token_for_user(WORKLOAD, "alice").await.unwrap();
    assert_eq!(token.expose(), "wat");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "two throttled attempts, then success"
    );

    let (endpoint, seen) = throttling_endpoint(u32::MAX).await;
    let c = client(&endpoint, "AKID", "secret-secret-secret", 3);
    let e = c
        .workload_token_for_user(WORKLOAD, "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(e, IdentityError::Throttled { attempts: 3, .. }),
        "{e}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 3, "bounded");

    // Nothing listening: unavailable, not a hang.
    let c = client("http://127.0.0.1:9", "AKID", "secret-secret-secret", 1);
    let e = c
        .workload_token_for_user(WORKLOAD, "alice")
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Unavailable { .. }), "{e}");
}

#[tokio::test]
async fn force_authentication_asks_again_even_with_a_stored_token() {
    let peers = Peers::start(PeerOptions::default()).await;
    let agent = &peers.agent;
    let token = token_for(&peers, "erin").await;
    let session_uri = consented(&peers, &token, "erin").await;
    peers.bind(&session_uri, "erin").await.unwrap();
    assert!(matches!(ask(&peers, &token).await, TokenAnswer::Token(_)));
    let forced = Flow::UserFederation {
        return_url: Some(RETURN_URL.into()),
        custom_state: Some("opaque".into()),
        force_authentication: true,
        session_uri: None,
    };
    let TokenAnswer::Consent {
        authorization_url, ..
    } = agent
        .oauth2_token(&token, PROVIDER, &["repo"], &forced)
        .await
        .unwrap()
    else {
        panic!("forceAuthentication must ask for consent again");
    };
    let prompts: Vec<String> = url::Url::parse(&authorization_url)
        .unwrap()
        .query_pairs()
        .filter(|(k, _)| k == "prompt")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(prompts, vec!["consent"]);
    // customState comes back on the return URL beside the session id.
    let landed = airlock_tests::oidc::Browser::new()
        .authorize(&authorization_url, "erin", Decision::Approve, RETURN_URL)
        .await
        .unwrap();
    let back: std::collections::BTreeMap<String, String> = url::Url::parse(&landed)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(back["state"], "opaque");
    assert!(back["session_id"].starts_with("urn:ietf:params:oauth:request_uri:"));
    // A scope beyond the stored grant also needs consent.
    assert!(matches!(
        agent
            .oauth2_token(
                &token,
                PROVIDER,
                &["repo", "admin:org"],
                &federation(RETURN_URL)
            )
            .await
            .unwrap(),
        TokenAnswer::Consent { .. }
    ));
}

#[tokio::test]
async fn a_missing_or_malformed_vault_key_stops_the_start_with_its_path() {
    use airlock_identity_local::{LocalConfig, LocalIdentity};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vault.key");
    let config = |extra: &str| {
        LocalConfig::from_toml(&format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{extra}\n[[caller]]\naccess_key_id = \"A\"\nsecret_access_key = \"0123456789abcdef\"\noperations = [\"GetResourceApiKey\"]",
            dir.path().display()
        ))
        .unwrap()
    };
    let with_key = config(&format!("vault_key_file = \"{}\"", key.display()));
    let e = LocalIdentity::start(with_key.clone())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("vault.key") && e.contains("cannot read"), "{e}");
    std::fs::write(&key, "not hex").unwrap();
    let e = LocalIdentity::start(with_key.clone())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is not hex"), "{e}");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    let started = LocalIdentity::start(with_key).await.unwrap();
    started.stop().await;
    // The default key file is created once, owner-only, and reused.
    let other = tempfile::tempdir().unwrap();
    let cfg = LocalConfig::from_toml(&format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[caller]]\naccess_key_id = \"A\"\nsecret_access_key = \"0123456789abcdef\"\noperations = [\"GetResourceApiKey\"]",
        other.path().display()
    ))
    .unwrap();
    LocalIdentity::start(cfg.clone())
        .await
        .unwrap()
        .stop()
        .await;
    let generated = std::fs::read_to_string(other.path().join("vault.key")).unwrap();
    assert_eq!(generated.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(other.path().join("vault.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    LocalIdentity::start(cfg).await.unwrap().stop().await;
    assert_eq!(
        std::fs::read_to_string(other.path().join("vault.key")).unwrap(),
        generated
    );
}

#[tokio::test]
async fn two_bindings_of_one_session_at_once_exchange_the_code_once() {
    let peers = Peers::start(PeerOptions {
        refresh_margin: 0,
        ..Default::default()
    })
    .await;
    let token = token_for(&peers, "frank").await;
    let session = consented(&peers, &token, "frank").await;
    let (a, b) = tokio::join!(peers.bind(&session, "frank"), peers.bind(&session, "frank"));
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one binding wins: {a:?} {b:?}"
    );
    // The winner's token is stored and not revoked by a second use of the code.
    let answer = ask(&peers, &token).await;
    let TokenAnswer::Token(access) = answer else {
        panic!("{answer:?}");
    };
    let shown = reqwest::Client::new()
        .get(format!("{}/issues", peers.resource.origin()))
        .bearer_auth(access.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    // A second use of a code makes the provider revoke the grant, refresh
    // token included: after expiry the refresh must still work.
    peers.let_time_pass(Duration::from_secs(3601));
    let answer = ask(&peers, &token).await;
    let TokenAnswer::Token(refreshed) = answer else {
        panic!("the refresh token was revoked: {answer:?}");
    };
    assert_ne!(refreshed, access);
}

#[tokio::test]
async fn concurrent_requests_for_an_expired_token_refresh_it_once() {
    let peers = Peers::start(PeerOptions {
        refresh_margin: 0,
        ..Default::default()
    })
    .await;
    let token = token_for(&peers, "gina").await;
    let session = consented(&peers, &token, "gina").await;
    peers.bind(&session, "gina").await.unwrap();
    peers.let_time_pass(Duration::from_secs(3601));
    let one = || ask(&peers, &token);
    let answers = tokio::join!(one(), one(), one(), one(), one());
    let answers = [answers.0, answers.1, answers.2, answers.3, answers.4];
    let tokens: Vec<Secret> = answers
        .into_iter()
        .map(|a| match a {
            TokenAnswer::Token(t) => t,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "one refresh, one new token for all"
    );
}

#[tokio::test]
async fn github_style_comma_separated_scopes_cover_their_request() {
    let standin = airlock_tests::standin::GithubLike::start("dora").await;
    let peers = Peers::start(PeerOptions {
        provider_toml: Some(standin.provider_toml(PROVIDER)),
        ..Default::default()
    })
    .await;
    let token = token_for(&peers, "dora").await;
    let two = |scopes: &'static [&'static str]| {
        let (agent, token) = (&peers.agent, &token);
        async move {
            agent
                .oauth2_token(token, PROVIDER, scopes, &federation(RETURN_URL))
                .await
                .unwrap()
        }
    };
    let TokenAnswer::Consent {
        authorization_url,
        session_uri,
    } = two(&["read:user", "repo"]).await
    else {
        panic!("consent first");
    };
    let landed = peers
        .consent(&authorization_url, "dora", Decision::Approve)
        .await
        .unwrap();
    assert_eq!(landed, session_uri);
    peers.bind(&session_uri, "dora").await.unwrap();
    // The stand-in granted "read:user,repo": the same request is covered, as is a narrower one.
    for scopes in [&["read:user", "repo"][..], &["repo"][..]] {
        let answer = two(scopes).await;
        assert!(
            matches!(answer, TokenAnswer::Token(_)),
            "{scopes:?}: {answer:?}"
        );
    }
    assert_eq!(standin.issued(), 1, "one consent, one token");
    assert_eq!(
        standin.asked_without_json(),
        0,
        "GitHub answers JSON only when asked"
    );
}

/// Peers whose `github` provider is `standin`, and the agent's token for `user`.
async fn with_standin(standin: &airlock_tests::standin::GithubLike, user: &str) -> (Peers, Secret) {
    let peers = Peers::start(PeerOptions {
        provider_toml: Some(standin.provider_toml(PROVIDER)),
        ..Default::default()
    })
    .await;
    let token = token_for(&peers, user).await;
    (peers, token)
}

#[tokio::test]
async fn a_public_client_exchanges_its_code_with_pkce_alone() {
    let mut peers = Peers::start(PeerOptions::default()).await;
    let discovery = peers.provider.discovery_url();
    peers
        .restart_identity_with(|c| {
            let p = &mut c.oauth2_providers[0];
            p.client_id = "airlock-public".into();
            p.client_secret = None;
            p.token_auth = airlock_identity_local::TokenAuth::None;
            p.discovery_url = Some(discovery);
        })
        .await;
    let token = token_for(&peers, "jan").await;
    let session = consented(&peers, &token, "jan").await;
    peers.bind(&session, "jan").await.unwrap();
    assert!(matches!(ask(&peers, &token).await, TokenAnswer::Token(_)));
}

#[tokio::test]
async fn an_error_sent_with_status_200_is_read_as_the_error_it_is() {
    let standin = airlock_tests::standin::GithubLike::start("hal").await;
    let (peers, token) = with_standin(&standin, "hal").await;
    let session = consented(&peers, &token, "hal").await;
    standin.refuse_next_code();
    let e = peers.bind(&session, "hal").await.unwrap_err();
    assert!(
        matches!(&e, IdentityError::AccessDenied { message, .. }
            if message.contains("bad_verification_code") && message.contains("incorrect or expired")),
        "{e}"
    );
    assert_eq!(standin.issued(), 0);
}

#[tokio::test]
async fn a_lifetime_sent_as_a_string_still_expires_the_token() {
    let standin = airlock_tests::standin::GithubLike::start_as(
        airlock_tests::standin::Flavor::AzureV1,
        "ivy",
    )
    .await;
    let (peers, token) = with_standin(&standin, "ivy").await;
    let session = consented(&peers, &token, "ivy").await;
    peers.bind(&session, "ivy").await.unwrap();
    assert!(matches!(ask(&peers, &token).await, TokenAnswer::Token(_)));
    // "expires_in": "3599" was read: an hour later the token is gone, and
    // with no refresh token the user is asked again.
    peers.let_time_pass(Duration::from_secs(3600));
    assert!(matches!(
        ask(&peers, &token).await,
        TokenAnswer::Consent { .. }
    ));
}

#[tokio::test]
async fn a_malformed_discovery_document_is_a_clear_error_not_a_crash() {
    let discovery = airlock_tests::Upstream::start(
        r#"{"issuer": "https://idp.example.com", "authorization_endpoint": "not a url", "token_endpoint": "https://idp.example.com/token"}"#,
    )
    .await;
    let peers = Peers::start(PeerOptions {
        provider_toml: Some(format!(
            "[[oauth2_provider]]\nname = \"{PROVIDER}\"\nclient_id = \"c\"\nclient_secret = \"s\"\ndiscovery_url = \"{}/.well-known/openid-configuration\"",
            discovery.origin()
        )),
        ..Default::default()
    })
    .await;
    let token = token_for(&peers, "erin").await;
    for _ in 0..2 {
        let e = peers
            .agent
            .oauth2_token(&token, PROVIDER, &["repo"], &federation(RETURN_URL))
            .await
            .unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("authorization_endpoint") && message.contains("not a url"),
            "{message}"
        );
    }
    // The service is still there for everything else.
    assert!(peers.agent.workload_token(WORKLOAD).await.is_ok());
}

#[tokio::test]
async fn user_ids_with_control_characters_are_refused() {
    let peers = Peers::start(PeerOptions::default()).await;
    for bad in ["alice\0admin", "alice\nbob", "\u{1b}[2Jalice"] {
        let e = peers
            .agent
            .workload_token_for_user(WORKLOAD, bad)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, IdentityError::Validation { message, .. } if message.contains("control characters")),
            "{bad:?}: {e}"
        );
    }
    let token = token_for(&peers, "alice").await;
    let session = consented(&peers, &token, "alice").await;
    let e = peers.bind(&session, "alice\0").await.unwrap_err();
    assert!(matches!(&e, IdentityError::Validation { .. }), "{e}");
    // Refused as malformed, not as the wrong user: the session is not spent.
    peers.bind(&session, "alice").await.unwrap();
}

#[tokio::test]
async fn the_vault_key_rotates_by_configuration() {
    let mut peers = Peers::start(PeerOptions::default()).await;
    let token = token_for(&peers, "fay").await;
    let session = consented(&peers, &token, "fay").await;
    peers.bind(&session, "fay").await.unwrap();
    let TokenAnswer::Token(stored) = ask(&peers, &token).await else {
        panic!("stored");
    };
    let old = peers.data_dir().join("vault.key");
    let new = peers.data_dir().join("new.key");
    std::fs::write(&new, "5a".repeat(32)).unwrap();
    // The old key becomes a previous one: values open, and are sealed anew.
    let (o, n) = (old.clone(), new.clone());
    peers
        .restart_identity_with(|c| {
            c.vault_key_file = Some(n);
            c.previous_vault_key_files = vec![o];
        })
        .await;
    let token = token_for(&peers, "fay").await;
    assert_eq!(
        ask(&peers, &token).await,
        TokenAnswer::Token(stored.clone())
    );
    // After one start the old key can go.
    peers
        .restart_identity_with(|c| c.previous_vault_key_files.clear())
        .await;
    let token = token_for(&peers, "fay").await;
    assert_eq!(ask(&peers, &token).await, TokenAnswer::Token(stored));
    // The old key alone opens nothing any more.
    peers
        .restart_identity_with(|c| c.vault_key_file = Some(old))
        .await;
    let token = token_for(&peers, "fay").await;
    let e = peers
        .agent
        .oauth2_token(&token, PROVIDER, &["repo"], &federation(RETURN_URL))
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Unavailable { .. }), "{e}");
}

#[tokio::test]
async fn the_control_plane_makes_each_tools_workload_identity_once_and_keeps_it() {
    let mut peers = Peers::start(PeerOptions::default()).await;
    let name = format!("{WORKLOAD}.weather");
    let other_url = "http://127.0.0.1:9/other-binding".to_string();
    // Unknown to the data plane until created.
    let e = peers
        .agent
        .workload_token_for_user(&name, "alice")
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::NotFound { .. }), "{e}");
    assert!(
        peers
            .agent
            .ensure_workload(&name, &[RETURN_URL.to_string()])
            .await
            .unwrap(),
        "created"
    );
    assert!(
        !peers
            .agent
            .ensure_workload(&name, &[RETURN_URL.to_string()])
            .await
            .unwrap(),
        "the second time there is nothing to do"
    );
    // A return URL it lacks is added; the earlier one stays.
    assert!(
        peers
            .agent
            .ensure_workload(&name, std::slice::from_ref(&other_url))
            .await
            .unwrap()
    );
    assert!(
        !peers
            .agent
            .ensure_workload(&name, &[RETURN_URL.to_string(), other_url.clone()])
            .await
            .unwrap()
    );
    // It serves the data plane, and a consent can start with its return URL.
    let token = peers
        .agent
        .workload_token_for_user(&name, "alice")
        .await
        .unwrap();
    let answer = peers
        .agent
        .oauth2_token(&token, PROVIDER, &["repo"], &federation(&other_url))
        .await
        .unwrap();
    assert!(matches!(answer, TokenAnswer::Consent { .. }), "{answer:?}");

    // It survives a restart of the identity service.
    peers.restart_identity().await;
    assert!(
        !peers
            .agent
            .ensure_workload(&name, &[RETURN_URL.to_string(), other_url])
            .await
            .unwrap()
    );
    assert!(
        peers
            .agent
            .workload_token_for_user(&name, "alice")
            .await
            .is_ok()
    );

    // The binding service's caller may not create identities; a bad name is named.
    let e = peers
        .binder
        .ensure_workload(&format!("{WORKLOAD}.sneaky"), &[])
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::AccessDenied { .. }), "{e}");
    let e = peers.agent.ensure_workload("a b", &[]).await.unwrap_err();
    assert!(
        matches!(&e, IdentityError::Validation { message, .. } if message.contains("3-255")),
        "{e}"
    );
    let e = peers
        .agent
        .ensure_workload(
            &format!("{WORKLOAD}.bad-url"),
            &["javascript:alert(1)".into()],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Validation { .. }), "{e}");
    // The configured workload is the file's: its URLs are not changed by API.
    let e = peers
        .agent
        .ensure_workload(WORKLOAD, &["http://127.0.0.1:9/elsewhere".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, IdentityError::Validation { message, .. } if message.contains("configuration file")),
        "{e}"
    );
}
