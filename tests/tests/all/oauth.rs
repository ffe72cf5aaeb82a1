//! Brokered OAuth end to end: the runtime, the broker and the AWS SDK client,
//! the local identity service, oidc-provider as the third party, and a
//! resource server that checks the provider's tokens. All on 127.0.0.1.

use std::sync::Arc;

use airlock_identity::{BrokerError, Credential, IdentityError};
use airlock_runtime::{CallOutcome, CallReport, RequestOutcome, Runtime, Tool};
use airlock_tests::logs::captured as captured_logs;
use airlock_tests::oidc::Decision;
use airlock_tests::peers::{PROVIDER, PeerOptions, Peers};
use airlock_tests::{Upstream, tool_bytes, user};
use serde_json::{Value, json};

fn runtime(peers: &Peers) -> Runtime {
    captured_logs();
    Runtime::builder()
        .token_source(peers.broker.clone())
        .build()
        .unwrap()
}

fn load(runtime: &Runtime, peers: &Peers, name: &str) -> Tool {
    runtime
        .load(&tool_bytes(name), &peers.policy())
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn consent_needed(report: &CallReport) -> (String, String) {
    match &report.outcome {
        CallOutcome::ConsentRequired(consent) => {
            assert_eq!(consent.provider, PROVIDER);
            assert!(!consent.session_uri.is_empty(), "the session is kept host-side");
            (consent.authorization_url.clone(), consent.session_uri.clone())
        }
        other => panic!("expected authorization required, got {other:?}"),
    }
}

/// Call, consent at the provider as `user`, bind as `user`: the user's token is stored.
async fn grant(peers: &Peers, runtime: &Runtime, tool: &Tool, who: &str) {
    grant_with(peers, runtime, tool, who, "{}").await;
}

/// The same, calling the tool with `input`.
async fn grant_with(peers: &Peers, runtime: &Runtime, tool: &Tool, who: &str, input: &str) {
    let who = user(who);
    let report = runtime.invoke_as(tool, Some(&who), input).await;
    consent_needed(&report);
    peers.approve(report.outcome.consent().unwrap(), &who).await;
}

/// The hostile tool's plain use of its grant.
const FETCH_ISSUES: &str = r#"{"attack": "fetch", "url": "https://api.github.com/issues"}"#;
const FETCH_ECHO: &str = r#"{"attack": "fetch", "url": "https://api.github.com/echo"}"#;

fn title(report: &CallReport) -> String {
    let output = report
        .outcome
        .output()
        .unwrap_or_else(|| panic!("call failed: {}", report.outcome));
    output["issues"][0]["title"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_flow_consent_binding_and_a_second_call() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");

    let first = runtime.invoke_as(&tool, Some(&user("alice")), "{}").await;
    let (url, session) = consent_needed(&first);
    assert!(session.starts_with("urn:ietf:params:oauth:request_uri:"));
    assert!(matches!(
        first.requests[0].outcome,
        RequestOutcome::AuthorizationRequired { .. }
    ));
    assert!(peers.resource.shown().is_empty(), "nothing reached the API");
    let asked = url::Url::parse(&url).unwrap();
    let scope = asked
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(
        scope, "repo offline_access",
        "declared scopes and the provider's extra only"
    );
    assert!(
        asked
            .query_pairs()
            .any(|(k, v)| k == "code_challenge_method" && v == "S256")
    );

    let landed = peers
        .consent(&url, "alice", Decision::Approve)
        .await
        .unwrap();
    assert_eq!(
        landed, session,
        "the browser comes back with the session id"
    );
    assert_eq!(
        peers.stored_grants("alice"),
        0,
        "nothing stored before binding"
    );
    // The agent's SigV4 identity may not bind sessions; only the binding service's may.
    let e = peers
        .agent
        .complete_session(&session, &airlock_identity::UserRef::UserId("alice".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::AccessDenied { .. }), "{e}");
    peers.bind(&session, "alice").await.unwrap();
    assert_eq!(peers.stored_grants("alice"), 1);

    // The SDK's polling pattern: the pending session now yields the token.
    let grant = tool.permissions().grants.oauth[0].clone();
    assert!(matches!(
        peers
            .broker
            .poll("github-issues", &user("alice"), &grant, &session)
            .await
            .unwrap(),
        Credential::Bearer(_)
    ));

    let second = runtime.invoke_as(&tool, Some(&user("alice")), "{}").await;
    assert_eq!(title(&second), "alice's issue");
    assert_eq!(
        second.user.as_ref().map(|u| u.as_str()),
        Some("alice"),
        "the report names the user"
    );
    match &second.requests[0].outcome {
        RequestOutcome::Sent {
            status, credential, ..
        } => {
            assert_eq!(*status, 200);
            assert_eq!(credential.as_deref(), Some(PROVIDER));
        }
        other => panic!("{other:?}"),
    }
    let shown = peers.resource.shown();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].sub.as_deref(), Some("alice"));
    assert_eq!(
        shown[0].scopes,
        vec!["repo".to_string()],
        "never more than declared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_completed_by_another_user_is_refused_and_spent() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");

    // Bob, holding Alice's session id, tries to bind it to himself.
    let report = runtime.invoke_as(&tool, Some(&user("alice")), "{}").await;
    let (url, session) = consent_needed(&report);
    peers
        .consent(&url, "alice", Decision::Approve)
        .await
        .unwrap();
    // Refused as AgentCore refuses it: by type, its message says no more.
    let e = peers.bind(&session, "bob").await.unwrap_err();
    assert!(matches!(&e, IdentityError::AccessDenied { .. }), "{e}");
    // The session is spent: Alice cannot complete it either.
    let e = peers.bind(&session, "alice").await.unwrap_err();
    assert!(matches!(&e, IdentityError::AccessDenied { .. }), "{e}");
    assert_eq!(peers.stored_grants("alice"), 0);
    assert_eq!(peers.stored_grants("bob"), 0);

    // Browser swapping: Mallory starts a flow and lures Alice into consenting
    // with it; Alice's browser lands at the binding service, signed in as Alice.
    let report = runtime.invoke_as(&tool, Some(&user("mallory")), "{}").await;
    let (url, session) = consent_needed(&report);
    peers
        .consent(&url, "alice", Decision::Approve)
        .await
        .unwrap();
    let e = peers.bind(&session, "alice").await.unwrap_err();
    assert!(matches!(&e, IdentityError::AccessDenied { .. }), "{e}");
    assert_eq!(peers.stored_grants("alice"), 0);
    assert_eq!(peers.stored_grants("mallory"), 0);
    let again = runtime.invoke_as(&tool, Some(&user("mallory")), "{}").await;
    consent_needed(&again);
    assert!(peers.resource.shown().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_replayed_and_expired_sessions_are_refused() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");

    // Capture the provider's redirect to the callback, to replay it.
    let report = runtime.invoke_as(&tool, Some(&user("alice")), "{}").await;
    let (url, session) = consent_needed(&report);
    let callback_prefix = peers.identity.as_ref().unwrap().callback_url(PROVIDER);
    let callback = airlock_tests::oidc::Browser::new()
        .authorize(&url, "alice", Decision::Approve, &callback_prefix)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(http.get(&callback).send().await.unwrap().status(), 303);
    let replay = http.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("already used"));

    peers.bind(&session, "alice").await.unwrap();
    let e = peers.bind(&session, "alice").await.unwrap_err();
    assert!(
        matches!(&e, IdentityError::AccessDenied { message, .. } if message.contains("Invalid or expired session")),
        "{e}"
    );
    let e = peers
        .bind("urn:ietf:params:oauth:request_uri:made-up", "alice")
        .await
        .unwrap_err();
    assert!(matches!(&e, IdentityError::AccessDenied { .. }), "{e}");

    // A session that outlives its lifetime (600 s).
    let report = runtime.invoke_as(&tool, Some(&user("carol")), "{}").await;
    let (url, session) = consent_needed(&report);
    peers.let_time_pass(std::time::Duration::from_secs(601));
    let e = peers
        .consent(&url, "carol", Decision::Approve)
        .await
        .unwrap_err();
    assert!(e.contains("expired"), "{e}");
    let e = peers.bind(&session, "carol").await.unwrap_err();
    assert!(matches!(&e, IdentityError::AccessDenied { .. }), "{e}");
    assert_eq!(peers.stored_grants("carol"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_is_a_clear_outcome() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");
    let report = runtime.invoke_as(&tool, Some(&user("alice")), "{}").await;
    let (url, session) = consent_needed(&report);
    let landed = peers.consent(&url, "alice", Decision::Deny).await.unwrap();
    assert_eq!(landed, session);
    let grant = tool.permissions().grants.oauth[0].clone();
    let polled = peers
        .broker
        .poll("github-issues", &user("alice"), &grant, &session)
        .await
        .unwrap_err();
    assert!(
        matches!(polled, BrokerError::SessionFailed { .. }),
        "{polled}"
    );
    let e = peers.bind(&session, "alice").await.unwrap_err();
    assert!(matches!(&e, IdentityError::AccessDenied { .. }), "{e}");
    assert_eq!(peers.stored_grants("alice"), 0);
    // Calling again asks again.
    consent_needed(&runtime.invoke_as(&tool, Some(&user("alice")), "{}").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tool_never_obtains_the_token() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let echo = Upstream::start(r#"{"echo": true}"#).await;
    let mut policy = peers.policy();
    policy.routes.push(airlock_policy::Route {
        from: airlock_policy::HostPattern::parse("https://api.example.com").unwrap(),
        to: airlock_policy::HostPattern::parse(&echo.origin()).unwrap(),
    });
    let hostile = runtime.load(&tool_bytes("hostile"), &policy).unwrap();
    // Alice consented to the hostile tool: it acts for her, and still never holds her token.
    grant_with(&peers, &runtime, &hostile, "alice", FETCH_ISSUES).await;

    let attacks = [
        json!({"attack": "read_own_headers", "url": "https://api.github.com/issues"}),
        json!({"attack": "fetch", "url": "https://api.github.com/issues"}),
        json!({"attack": "set_authorization", "url": "https://api.github.com/issues"}),
        json!({"attack": "follow_redirect", "url": "https://api.github.com/redirect?to=https://api.example.com/collect"}),
        json!({"attack": "fetch", "url": "https://api.example.com/elsewhere"}),
    ];
    let mut received = String::new();
    for attack in &attacks {
        let report = runtime
            .invoke_as(&hostile, Some(&user("alice")), &attack.to_string())
            .await;
        received.push_str(&serde_json::to_string(&report).unwrap());
        received.push_str(&format!("{:?}", report));
    }
    // The requests to the covered host did carry Alice's token...
    let tokens: Vec<String> = peers
        .resource
        .shown()
        .iter()
        .filter_map(|s| s.authorization.clone())
        .collect();
    assert!(tokens.len() >= 3, "{tokens:?}");
    assert!(tokens.iter().all(|t| t.starts_with("Bearer ")));
    // ...and the guest's own request object never held it.
    let own: Value = {
        let r = runtime
            .invoke_as(&hostile, Some(&user("alice")), &attacks[0].to_string())
            .await;
        r.outcome.unwrap_output()["results"][0].clone()
    };
    assert_eq!(own["response"]["status"], 200, "{own}");
    assert!(
        own["after"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| !h.as_str().unwrap().starts_with("authorization")),
        "{own}"
    );
    // Nothing the guest received, nothing in any report, log line or error holds a token.
    let logs = String::from_utf8(captured_logs().lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("session bound; token stored"),
        "the log capture works"
    );
    for token in &tokens {
        let raw = token.trim_start_matches("Bearer ");
        assert!(!received.contains(raw), "the guest or a report saw a token");
        assert!(!logs.contains(raw), "a log line holds a token");
    }
    // The other host never saw any authorization.
    let elsewhere = echo.requests();
    assert_eq!(elsewhere.len(), 2, "{elsewhere:?}");
    for seen in elsewhere {
        assert!(
            seen.headers
                .iter()
                .all(|(k, v)| k != "authorization" && !v.contains("Bearer")),
            "{seen:?}"
        );
    }
}

/// Alice's grant (with or without a refresh token) used once, then left to
/// expire (an hour passes) while the host still caches it.
async fn used_then_expired(refresh_tokens: bool) -> (Peers, Runtime, Tool) {
    let peers = Peers::start(PeerOptions {
        refresh_margin: 0,
        refresh_tokens,
        ..Default::default()
    })
    .await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");
    grant(&peers, &runtime, &tool, "alice").await;
    assert_eq!(
        title(&runtime.invoke_as(&tool, Some(&user("alice")), "{}").await),
        "alice's issue"
    );
    peers.let_time_pass(std::time::Duration::from_secs(3601));
    (peers, runtime, tool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_after_the_upstream_401() {
    let (peers, runtime, tool) = used_then_expired(true).await;
    let report = runtime.invoke_as(&tool, Some(&user("alice")), "{}").await;
    assert_eq!(title(&report), "alice's issue");
    assert!(
        matches!(
            report.requests[0].outcome,
            RequestOutcome::Sent {
                status: 200,
                retried: true,
                ..
            }
        ),
        "{:?}",
        report.requests
    );
    let shown = peers.resource.shown();
    let statuses: Vec<Option<&str>> = shown.iter().map(|s| s.sub.as_deref()).collect();
    // First call verified; the stale token refused; the refreshed one verified.
    assert_eq!(statuses, vec![Some("alice"), None, Some("alice")]);
    assert_eq!(
        shown[1].authorization, shown[0].authorization,
        "the cached token went first"
    );
    assert_ne!(
        shown[2].authorization, shown[0].authorization,
        "then a refreshed one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_without_refresh_asks_for_consent_again() {
    let (peers, runtime, tool) = used_then_expired(false).await;
    // The cached token gets a 401; the vault has nothing to refresh with.
    let report = runtime.invoke_as(&tool, Some(&user("alice")), "{}").await;
    consent_needed(&report);
    assert!(matches!(
        report.requests[0].outcome,
        RequestOutcome::AuthorizationRequired { .. }
    ));
    assert_eq!(peers.resource.shown().len(), 2, "one good call, one 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_tokens_and_pending_sessions_survive_a_restart() {
    let mut peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");
    grant(&peers, &runtime, &tool, "alice").await;
    // Bob's consent is under way when the service goes down.
    let report = runtime.invoke_as(&tool, Some(&user("bob")), "{}").await;
    let (bob_url, bob_session) = consent_needed(&report);

    peers.restart_identity().await;
    // A fresh host (empty caches) must find Alice's grant in the vault.
    let fresh = Runtime::builder()
        .token_source(Arc::new(airlock_identity::Broker::new(
            peers.agent.clone(),
            airlock_identity::BrokerConfig::new(
                airlock_tests::peers::WORKLOAD,
                Some(airlock_tests::peers::RETURN_URL.into()),
            ),
        )))
        .build()
        .unwrap();
    let tool = load(&fresh, &peers, "github-issues");
    assert_eq!(
        title(&fresh.invoke_as(&tool, Some(&user("alice")), "{}").await),
        "alice's issue"
    );
    assert_eq!(peers.stored_grants("alice"), 1);

    peers
        .consent(&bob_url, "bob", Decision::Approve)
        .await
        .unwrap();
    peers.bind(&bob_session, "bob").await.unwrap();
    assert_eq!(
        title(&fresh.invoke_as(&tool, Some(&user("bob")), "{}").await),
        "bob's issue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_users_at_once_each_get_their_own_token() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");
    let users: Vec<String> = (0..50).map(|i| format!("user{i:02}")).collect();
    let grants = users.iter().map(|u| grant(&peers, &runtime, &tool, u));
    futures_join_all(grants).await;

    let calls = users.iter().map(|u| async {
        let report = runtime.invoke_as(&tool, Some(&user(u)), "{}").await;
        (u.clone(), report)
    });
    let results = futures_join_all(calls).await;
    for (user, report) in &results {
        assert_eq!(title(report), format!("{user}'s issue"));
    }
    let shown = peers.resource.shown();
    assert_eq!(shown.len(), 50);
    let mut tokens: Vec<_> = shown
        .iter()
        .map(|s| s.authorization.clone().unwrap())
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 50, "fifty distinct tokens");
}

/// join_all without another dependency: spawn-free, polls all together.
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut slots: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut futures: Vec<Option<_>> = futures.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, slot) in futures.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        slots[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().map(|s| s.unwrap()).collect()
}

/// A policy sending api.github.com to `origin` (a plain-http stand-in on 127.0.0.1).
fn github_at(origin: &str) -> airlock_policy::OperatorPolicy {
    airlock_policy::OperatorPolicy {
        allow_private_addresses: true,
        dangerously_allow_https_to_http_routes: true,
        routes: vec![airlock_policy::Route {
            from: airlock_policy::HostPattern::parse("https://api.github.com").unwrap(),
            to: airlock_policy::HostPattern::parse(origin).unwrap(),
        }],
        ..airlock_policy::OperatorPolicy::permissive()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_that_never_expires_ends_in_consent_not_in_401s() {
    // GitHub OAuth-app tokens carry no expiry: the vault would hand the
    // revoked one back forever.
    let standin = airlock_tests::standin::GithubLike::start("alice").await;
    let peers = Peers::start(PeerOptions {
        provider_toml: Some(standin.provider_toml(PROVIDER)),
        ..Default::default()
    })
    .await;
    let runtime = runtime(&peers);
    let tool = runtime
        .load(&tool_bytes("github-issues"), &github_at(&standin.origin))
        .unwrap();
    let alice = user("alice");
    let first = runtime.invoke_as(&tool, Some(&alice), "{}").await;
    consent_needed(&first);
    peers.approve(first.outcome.consent().unwrap(), &alice).await;
    assert_eq!(
        title(&runtime.invoke_as(&tool, Some(&alice), "{}").await),
        "alice's issue"
    );

    standin.revoke_all();
    for _ in 0..2 {
        let report = runtime.invoke_as(&tool, Some(&alice), "{}").await;
        let (url, _) = consent_needed(&report);
        assert!(
            url.contains("prompt=consent"),
            "asked again with forceAuthentication: {url}"
        );
        assert!(matches!(
            report.requests[0].outcome,
            RequestOutcome::AuthorizationRequired { .. }
        ));
    }
    // Consent again: a new token, and the tool works again.
    let report = runtime.invoke_as(&tool, Some(&alice), "{}").await;
    peers
        .approve(report.outcome.consent().unwrap(), &alice)
        .await;
    assert_eq!(
        title(&runtime.invoke_as(&tool, Some(&alice), "{}").await),
        "alice's issue"
    );
    assert_eq!(standin.issued(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_and_connect_never_carry_the_token() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let echo = Upstream::start(r#"{"echo": true}"#).await;
    let hostile = runtime
        .load(&tool_bytes("hostile"), &github_at(&echo.origin()))
        .unwrap();
    // Consent given to the hostile tool (at the echo server, which takes any token).
    let consent = asked_consent(&runtime, &hostile, &user("alice"), FETCH_ECHO).await;
    peers.approve(&consent, &user("alice")).await;
    let before = echo.requests().len();
    for method in ["TRACE", "CONNECT"] {
        let attack =
            json!({"attack": "fetch", "url": "https://api.github.com/echo", "method": method});
        let report = runtime
            .invoke_as(&hostile, Some(&user("alice")), &attack.to_string())
            .await;
        assert_eq!(
            report.outcome.unwrap_output()["results"][0]["error"],
            "Http(\"HttpRequestDenied\")"
        );
        assert!(
            matches!(&report.requests[0].outcome, RequestOutcome::Denied { reason } if reason.contains(method)),
            "{:?}",
            report.requests
        );
    }
    assert_eq!(echo.requests().len(), before, "{:?}", echo.requests());
    // The same route does carry the token on a GET: the refusal is the method's.
    runtime
        .invoke_as(&hostile, Some(&user("alice")), FETCH_ECHO)
        .await;
    let seen = echo.requests();
    assert_eq!(seen.len(), before + 1);
    assert!(
        seen[before]
            .headers
            .iter()
            .any(|(k, _)| k == "authorization")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_is_sent_again_with_the_refreshed_token_after_a_401() {
    let peers = Peers::start(PeerOptions {
        refresh_margin: 0,
        ..Default::default()
    })
    .await;
    let runtime = runtime(&peers);
    let hostile = runtime
        .load(&tool_bytes("hostile"), &peers.policy())
        .unwrap();
    grant_with(&peers, &runtime, &hostile, "alice", FETCH_ISSUES).await;
    // The broker now caches the token, which then expires at the provider.
    let report = runtime
        .invoke_as(&hostile, Some(&user("alice")), FETCH_ISSUES)
        .await;
    assert_eq!(report.outcome.unwrap_output()["results"][0]["status"], 200);
    peers.let_time_pass(std::time::Duration::from_secs(3601));
    let body =
        "{\"title\": \"a new issue\", \"body\": \"".to_string() + &"x".repeat(10_000) + "\"}";
    let post = json!({"attack": "fetch", "url": "https://api.github.com/issues", "method": "POST", "body": body});
    let report = runtime
        .invoke_as(&hostile, Some(&user("alice")), &post.to_string())
        .await;
    assert_eq!(report.outcome.unwrap_output()["results"][0]["status"], 201);
    assert!(matches!(
        report.requests[0].outcome,
        RequestOutcome::Sent {
            status: 201,
            retried: true,
            ..
        }
    ));
    let posts: Vec<_> = peers
        .resource
        .shown()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "refused once, then accepted");
    assert_eq!(posts[0].sub, None);
    assert_eq!(posts[1].sub.as_deref(), Some("alice"));
    assert_ne!(posts[0].authorization, posts[1].authorization);
    assert_eq!(posts[0].body, body.as_bytes(), "the whole body went first");
    assert_eq!(posts[1].body, body.as_bytes(), "and the same body again");
}

/// The provider's redirect back to the identity service's callback for
/// alice's pending consent, not yet followed.
async fn callback_url(peers: &Peers, runtime: &Runtime, tool: &Tool) -> String {
    let report = runtime.invoke_as(tool, Some(&user("alice")), "{}").await;
    let (url, _) = consent_needed(&report);
    let prefix = peers.identity.as_ref().unwrap().callback_url(PROVIDER);
    airlock_tests::oidc::Browser::new()
        .authorize(&url, "alice", Decision::Approve, &prefix)
        .await
        .unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_whose_issuer_cannot_be_checked_is_refused() {
    let mut peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");
    let callback = callback_url(&peers, &runtime, &tool).await;
    assert!(callback.contains("iss="), "{callback}");
    // A fresh identity service (nothing cached) while the provider is down:
    // the `iss` it was sent cannot be compared with the provider's issuer.
    peers.restart_identity().await;
    peers.provider.stop();
    let response = no_redirects().get(&callback).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let page = response.text().await.unwrap();
    assert!(page.contains("could not check who answered"), "{page}");
    assert_eq!(peers.stored_grants("alice"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_page_shows_no_internals() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let tool = load(&runtime, &peers, "github-issues");
    let callback = callback_url(&peers, &runtime, &tool).await;
    // The vault breaks under the service.
    rusqlite::Connection::open(peers.data_dir().join("vault.db"))
        .unwrap()
        .execute_batch("DROP TABLE sessions;")
        .unwrap();
    let response = no_redirects().get(&callback).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let csp = response.headers()["content-security-policy"].clone();
    let page = response.text().await.unwrap();
    assert!(page.contains("Something went wrong on our side"), "{page}");
    for internal in ["sessions", "sqlite", "vault", "table"] {
        assert!(
            !page.to_lowercase().contains(internal),
            "{internal}: {page}"
        );
    }
    assert_eq!(csp, "default-src 'none'");
}

/// github-issues' code as another tool: its own name and, if given, scopes.
fn variant(runtime: &Runtime, peers: &Peers, name: &str, scopes: Option<&[&str]>) -> Tool {
    let wasm = tool_bytes("github-issues");
    let manifest = airlock_manifest::inspect(&wasm).unwrap().manifest;
    let mut value = serde_json::to_value(&manifest).unwrap();
    value["name"] = json!(name);
    if let Some(scopes) = scopes {
        value["grants"]["oauth"][0]["scopes"] = json!(scopes);
    }
    let manifest: airlock_manifest::Manifest = serde_json::from_value(value).unwrap();
    let wasm = airlock_manifest::embed(
        &airlock_manifest::without_manifest(&wasm).unwrap(),
        &manifest,
    )
    .unwrap();
    runtime
        .load(&wasm, &peers.policy())
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The tokens the API saw since `from`, as (sub, authorization).
fn tokens_seen(peers: &Peers, from: usize) -> Vec<(String, String)> {
    peers.resource.shown()[from..]
        .iter()
        .map(|s| {
            (
                s.sub.clone().unwrap_or_default(),
                s.authorization.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_belongs_to_the_tool_not_to_whoever_declares_the_same_grant() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let a = load(&runtime, &peers, "github-issues");
    // The same code, the same grant: a newly uploaded tool, say.
    let b = variant(&runtime, &peers, "issues-elsewhere", None);
    let alice = user("alice");

    grant(&peers, &runtime, &a, "alice").await;
    assert_eq!(
        title(&runtime.invoke_as(&a, Some(&alice), "{}").await),
        "alice's issue"
    );
    let before_b = peers.resource.shown().len();
    let asked = runtime.invoke_as(&b, Some(&alice), "{}").await;
    let (url, _) = consent_needed(&asked);
    assert_eq!(asked.outcome.consent().unwrap().tool, "issues-elsewhere");
    assert!(
        tokens_seen(&peers, before_b).is_empty(),
        "tool B reached the API with nothing of alice's"
    );
    assert!(url.starts_with(&peers.provider.issuer), "{url}");

    // Bob is asked for tool A too, and never gets alice's token.
    let bob = user("bob");
    let asked = runtime.invoke_as(&a, Some(&bob), "{}").await;
    consent_needed(&asked);
    assert!(tokens_seen(&peers, before_b).is_empty());
    peers.approve(asked.outcome.consent().unwrap(), &bob).await;
    assert_eq!(
        title(&runtime.invoke_as(&a, Some(&bob), "{}").await),
        "bob's issue"
    );
    let alice_tokens: Vec<String> = tokens_seen(&peers, 0)
        .into_iter()
        .filter(|(sub, _)| sub == "alice")
        .map(|(_, t)| t)
        .collect();
    for (sub, token) in tokens_seen(&peers, before_b) {
        assert_eq!(sub, "bob", "only bob's token is used for bob");
        assert!(
            !alice_tokens.contains(&token),
            "alice's token went out for bob"
        );
    }

    // Alice's consent to B is a grant of its own; A's is untouched.
    peers
        .approve(&asked_consent(&runtime, &b, &alice, "{}").await, &alice)
        .await;
    assert_eq!(
        title(&runtime.invoke_as(&b, Some(&alice), "{}").await),
        "alice's issue"
    );
    assert_eq!(peers.stored_grants("alice"), 2, "one grant per tool");
    // Each tool has its own workload identity, named from the tool.
    for tool in ["github-issues", "issues-elsewhere"] {
        let name = format!("{}.{tool}", airlock_tests::peers::WORKLOAD);
        assert!(
            !peers.agent.ensure_workload(&name, &[]).await.unwrap(),
            "{name} exists already"
        );
    }
}

async fn asked_consent(
    runtime: &Runtime,
    tool: &Tool,
    who: &airlock_identity::VerifiedUser,
    input: &str,
) -> airlock_identity::Consent {
    let report = runtime.invoke_as(tool, Some(who), input).await;
    consent_needed(&report);
    report.outcome.consent().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_the_operator_groups_share_consent_and_no_others_do() {
    let peers = Peers::start(PeerOptions::default()).await;
    let mut config = airlock_identity::BrokerConfig::new(
        airlock_tests::peers::WORKLOAD,
        Some(airlock_tests::peers::RETURN_URL.to_string()),
    );
    for tool in ["github-issues", "issues-elsewhere"] {
        config.consent_groups.insert(tool.into(), "issues".into());
    }
    let broker = Arc::new(airlock_identity::Broker::new(peers.agent.clone(), config));
    let runtime = Runtime::builder().token_source(broker).build().unwrap();
    let a = load(&runtime, &peers, "github-issues");
    let b = variant(&runtime, &peers, "issues-elsewhere", None);
    let c = variant(&runtime, &peers, "issues-ungrouped", None);
    let alice = user("alice");
    grant(&peers, &runtime, &a, "alice").await;
    assert_eq!(
        title(&runtime.invoke_as(&b, Some(&alice), "{}").await),
        "alice's issue",
        "a tool in the same group uses the group's consent"
    );
    consent_needed(&runtime.invoke_as(&c, Some(&alice), "{}").await);
    assert_eq!(peers.stored_grants("alice"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tools_with_different_scopes_of_one_provider_do_not_take_turns_at_consent() {
    let peers = Peers::start(PeerOptions::default()).await;
    let runtime = runtime(&peers);
    let narrow = load(&runtime, &peers, "github-issues");
    let wide = variant(
        &runtime,
        &peers,
        "issues-wide",
        Some(&["repo", "read:user"]),
    );
    let alice = user("alice");
    grant(&peers, &runtime, &narrow, "alice").await;
    grant(&peers, &runtime, &wide, "alice").await;
    let from = peers.resource.shown().len();
    for tool in [&narrow, &wide, &narrow, &wide] {
        assert_eq!(
            title(&runtime.invoke_as(tool, Some(&alice), "{}").await),
            "alice's issue",
            "no consent asked again"
        );
    }
    let scopes: Vec<Vec<String>> = peers.resource.shown()[from..]
        .iter()
        .map(|s| {
            let mut s = s.scopes.clone();
            s.sort();
            s
        })
        .collect();
    assert!(
        scopes[0].contains(&"repo".to_string()) && !scopes[0].contains(&"read:user".to_string())
    );
    assert!(scopes[1].contains(&"read:user".to_string()), "{scopes:?}");
    assert_eq!(scopes[0], scopes[2]);
    assert_eq!(scopes[1], scopes[3]);
}
