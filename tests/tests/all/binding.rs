//! The Session Binding Service against the real peers: the runtime and the
//! broker start a consent, oidc-provider takes it, the local identity service
//! sends the browser to the binding service, which checks the ALB's sign-in
//! and completes the session through the AWS SDK client. The attacks the
//! binding exists for: CSRF, a swapped browser, forged sign-ins, bad links.

use std::sync::Arc;

use airlock_binding::BindingConfig;
use airlock_runtime::{CallOutcome, CallReport, Runtime, Tool};
use airlock_tests::alb::{self, ALB_ARN, ISSUER, KEY, OTHER_KEY, header_for, now, sign};
use airlock_tests::logs::captured as captured_logs;
use airlock_tests::oidc::{Browser, Decision};
use airlock_tests::peers::{PeerOptions, Peers, RETURN_URL, WORKLOAD};
use airlock_tests::{tool_bytes, user};
use serde_json::json;

const AGENT: &str = "https://agent.example.com/";
const SIGN_OUT: &str = "https://agent.example.com/sign-out";

struct Stack {
    peers: Peers,
    runtime: Runtime,
    tool: Tool,
    binding: airlock_binding::Running,
    audit: std::path::PathBuf,
    /// What signs the binding trail's checkpoints.
    audit_key: ssh_key::PublicKey,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(options: PeerOptions) -> Stack {
        captured_logs();
        let peers = Peers::start(options).await;
        let runtime = Runtime::builder()
            .token_source(peers.broker.clone())
            .build()
            .unwrap();
        let tool = runtime
            .load(&tool_bytes("github-issues"), &peers.policy())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("binding.jsonl");
        let key = ssh_key::PrivateKey::random(
            &mut ssh_key::rand_core::OsRng,
            ssh_key::Algorithm::Ed25519,
        )
        .unwrap();
        let key_file = dir.path().join("audit-key");
        std::fs::write(&key_file, key.to_openssh(ssh_key::LineEnding::LF).unwrap()).unwrap();
        let config: BindingConfig = toml::from_str(&format!(
            r#"
            listen = "127.0.0.1:0"
            metrics = "127.0.0.1:0"
            return_url = "{AGENT}"
            sign_out_url = "{SIGN_OUT}"
            [alb]
            signer_arn = "{ALB_ARN}"
            key_url = "{keys}"
            issuer = "{ISSUER}"
            [audit]
            sink = "{audit}"
            signing_key = "{key_file}"
            "#,
            keys = alb::key_endpoint().await,
            audit = audit.display(),
            key_file = key_file.display(),
        ))
        .unwrap();
        let binding = airlock_binding::start(config, peers.binder.clone())
            .await
            .unwrap();
        Stack {
            peers,
            runtime,
            tool,
            binding,
            audit,
            audit_key: key.public_key().clone(),
            _dir: dir,
        }
    }

    async fn call(&self, who: &str) -> CallReport {
        self.runtime
            .invoke_as(&self.tool, Some(&user(who)), "{}")
            .await
    }

    /// `who` calls, is asked to consent, and consents at the provider as
    /// `at_provider`: the binding link the browser lands on.
    async fn link(&self, who: &str, at_provider: &str) -> String {
        let report = self.call(who).await;
        let url = authorization_url(&report);
        let landed = Browser::new()
            .authorize(&url, at_provider, Decision::Approve, RETURN_URL)
            .await
            .unwrap();
        let landed = url::Url::parse(&landed).unwrap();
        format!(
            "http://{}/oauth2/session-binding?{}",
            self.binding.addr,
            landed.query().unwrap()
        )
    }
}

fn authorization_url(report: &CallReport) -> String {
    match &report.outcome {
        CallOutcome::ConsentRequired(consent) => consent.authorization_url.clone(),
        other => panic!("expected a consent URL, got {other:?}"),
    }
}

struct Visit {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// Open `link` with `sign_in` as the ALB's header (None: no header).
async fn open(link: &str, sign_in: Option<String>) -> Visit {
    let mut request = reqwest::Client::new().get(link);
    if let Some(h) = sign_in {
        request = request.header("x-amzn-oidc-data", h);
    }
    let response = request.send().await.unwrap();
    Visit {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

fn title(report: &CallReport) -> String {
    report.outcome.output().unwrap()["issues"][0]["title"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_consents_lands_signed_in_as_herself_and_her_next_call_has_the_data() {
    let s = Stack::start(PeerOptions::default()).await;
    let link = s.link("alice", "alice").await;
    assert_eq!(s.peers.stored_grants("alice"), 0, "nothing before binding");
    let page = open(&link, Some(header_for("alice"))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("<h1>Access granted</h1>"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<code>github-issues</code> may now act for you"),
        "the page names the tool: {}",
        page.body
    );
    assert!(
        page.body
            .contains(&format!("<a href=\"{AGENT}\">Return to your agent</a>"))
    );
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(page.headers[name], value, "{name}");
    }
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(s.peers.stored_grants("alice"), 1);

    let from = s.peers.resource.shown().len();
    assert_eq!(title(&s.call("alice").await), "alice's issue");
    let mut scopes = s.peers.resource.shown()[from].scopes.clone();
    scopes.sort();
    assert_eq!(scopes, ["repo"], "exactly the declared scope");

    // The same link again: used.
    let again = open(&link, Some(header_for("alice"))).await;
    assert_eq!(again.status, 403, "{}", again.body);
    assert!(again.body.contains("already used"), "{}", again.body);

    // /ping, metrics, and an audit trail that verifies and names each outcome.
    let ping = reqwest::get(format!("http://{}/ping", s.binding.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ping, r#"{"status":"Healthy"}"#);
    let metrics = reqwest::get(format!("http://{}/metrics", s.binding.metrics.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"airlock_binding_attempts_total{outcome="bound"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"airlock_binding_attempts_total{outcome="refused"} 1"#),
        "{metrics}"
    );
    // The start, the binding and the refused reuse: the trail covers each line.
    let lines = std::fs::read_to_string(&s.audit).unwrap().lines().count();
    assert_eq!(lines, 3);
    assert_eq!(
        airlock_audit::verify(std::slice::from_ref(&s.audit)),
        Ok(lines)
    );
    let trail = std::fs::read_to_string(&s.audit).unwrap();
    assert!(
        trail.contains(r#""kind":"binding""#) && trail.contains(r#""outcome":"bound""#),
        "{trail}"
    );
    assert!(trail.contains(r#""user":"alice""#) && trail.contains(r#""tool":"github-issues""#));
    let session = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "session_id")
        .unwrap()
        .1
        .into_owned();
    assert!(
        !trail.contains(&session),
        "the trail holds the session's hash, not the session"
    );

    // Nothing the binding service said, logged or recorded holds a token.
    let tokens: Vec<String> = s
        .peers
        .resource
        .shown()
        .iter()
        .filter_map(|r| r.authorization.clone())
        .map(|a| a.trim_start_matches("Bearer ").to_string())
        .collect();
    assert!(!tokens.is_empty());
    let logs = String::from_utf8(captured_logs().lock().unwrap().clone()).unwrap();
    for token in &tokens {
        for (what, text) in [("page", &page.body), ("trail", &trail), ("logs", &logs)] {
            assert!(
                !text.contains(token.as_str()),
                "a token in the binding service's {what}"
            );
        }
    }
    // At shutdown the trail's end is signed: a cut tail would show.
    s.binding.shutdown().await;
    let signed = airlock_audit::verify_signed(
        std::slice::from_ref(&s.audit),
        std::slice::from_ref(&s.audit_key),
    )
    .unwrap();
    assert_eq!((signed.records, signed.checkpoints), (lines + 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_mallorys_link_opened_by_alice_binds_nothing_for_either() {
    let s = Stack::start(PeerOptions::default()).await;
    // Mallory starts a flow, consents with her own provider account, and sends Alice the link.
    let link = s.link("mallory", "mallory").await;
    let page = open(&link, Some(header_for("alice"))).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("<h1>Not granted</h1>"), "{}", page.body);
    assert!(
        page.body.contains("started by someone other than you"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("you are signed in as <code>alice</code>")
    );
    assert!(
        page.body
            .contains(&format!("<a href=\"{SIGN_OUT}\">Sign out</a>"))
    );
    assert_eq!(s.peers.stored_grants("alice"), 0);
    assert_eq!(s.peers.stored_grants("mallory"), 0);
    // The link is spent: Mallory cannot finish it herself either, and is asked again.
    let page = open(&link, Some(header_for("mallory"))).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(s.peers.stored_grants("mallory"), 0);
    authorization_url(&s.call("mallory").await);
    authorization_url(&s.call("alice").await);
    s.binding.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_browser_is_refused_and_alice_can_still_finish_hers() {
    let s = Stack::start(PeerOptions::default()).await;
    // Alice's link, opened in Bob's signed-in browser (Bob consents as himself).
    let link = s.link("alice", "bob").await;
    let page = open(&link, Some(header_for("bob"))).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(s.peers.stored_grants("alice"), 0);
    assert_eq!(s.peers.stored_grants("bob"), 0);
    // Alice asks again and finishes in her own browser.
    let link = s.link("alice", "alice").await;
    let page = open(&link, Some(header_for("alice"))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(title(&s.call("alice").await), "alice's issue");
    authorization_url(&s.call("bob").await);
    s.binding.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_forged_or_stale_sign_in_binds_anything() {
    let s = Stack::start(PeerOptions::default()).await;
    let link = s.link("alice", "alice").await;
    let claims =
        json!({"sub": "alice", "email": "alice@example.com", "exp": now() + 60, "iss": ISSUER});
    let header = |kid: &str, signer: &str, exp: i64| json!({"alg": "ES256", "kid": kid, "signer": signer, "iss": ISSUER, "client": "airlock", "exp": exp});
    let kid = alb::KID;
    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 600);
    let attempts = [
        ("no header", None),
        (
            "another key",
            Some(sign(&header(kid, ALB_ARN, now() + 60), &claims, OTHER_KEY)),
        ),
        (
            "another load balancer",
            Some(sign(
                &header(
                    kid,
                    "arn:aws:elasticloadbalancing:us-east-1:999999999999:loadbalancer/app/evil/1",
                    now() + 60,
                ),
                &claims,
                KEY,
            )),
        ),
        (
            "expired",
            Some(sign(&header(kid, ALB_ARN, now() - 600), &expired, KEY)),
        ),
        (
            "a kid that is a path",
            Some(sign(
                &header("../keys/x", ALB_ARN, now() + 60),
                &claims,
                KEY,
            )),
        ),
        (
            "a kid that is a URL",
            Some(sign(
                &header("https://evil.example/key", ALB_ARN, now() + 60),
                &claims,
                KEY,
            )),
        ),
        ("not a JWT", Some("alice".to_string())),
    ];
    for (what, sign_in) in attempts {
        let page = open(&link, sign_in).await;
        assert_eq!(page.status, 401, "{what}: {}", page.body);
        assert!(page.body.contains("Not signed in"), "{what}");
        assert_eq!(s.peers.stored_grants("alice"), 0, "{what}: nothing bound");
    }
    // The session was not spent by any of them: Alice, signed in, finishes it.
    let page = open(&link, Some(header_for("alice"))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    s.binding.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_expired_and_used_links_each_get_their_page() {
    let s = Stack::start(PeerOptions::default()).await;
    let base = format!("http://{}/oauth2/session-binding", s.binding.addr);
    let alice = || Some(header_for("alice"));
    for (query, status, says) in [
        ("", 400, "not valid"),
        ("?session_id=nope", 400, "not valid"),
        (
            "?session_id=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Aa%20b",
            400,
            "not valid",
        ),
        // Unknown, as AgentCore answers it: not granted.
        (
            "?session_id=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Aunknown",
            403,
            "Not granted",
        ),
        (
            "?session_id=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Aunknown&state=%3Cscript%3E",
            403,
            "Not granted",
        ),
    ] {
        let page = open(&format!("{base}{query}"), alice()).await;
        assert_eq!(page.status, status, "{query}: {}", page.body);
        assert!(page.body.contains(says), "{query}: {}", page.body);
        assert!(
            !page.body.contains("<script>"),
            "nothing from the link is echoed"
        );
    }
    // Expired: consent given, but bound only after the session's lifetime.
    let link = s.link("alice", "alice").await;
    s.peers.let_time_pass(std::time::Duration::from_secs(601));
    let page = open(&link, alice()).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("it expired"), "{}", page.body);
    assert_eq!(s.peers.stored_grants("alice"), 0);
    // Declined at the provider: refused too (AgentCore says no more).
    let report = s.call("alice").await;
    let landed = Browser::new()
        .authorize(
            &authorization_url(&report),
            "alice",
            Decision::Deny,
            RETURN_URL,
        )
        .await
        .unwrap();
    let query = url::Url::parse(&landed)
        .unwrap()
        .query()
        .unwrap()
        .to_string();
    let page = open(&format!("{base}?{query}"), alice()).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("declined"), "{}", page.body);
    s.binding.shutdown().await;
}

#[tokio::test]
async fn the_binding_services_caller_may_complete_sessions_and_nothing_else() {
    let peers = Peers::start(PeerOptions::default()).await;
    let e = peers.binder.workload_token(WORKLOAD).await.unwrap_err();
    assert!(
        matches!(e, airlock_identity::IdentityError::AccessDenied { .. }),
        "{e}"
    );
    let e = peers
        .binder
        .workload_token_for_user(WORKLOAD, "alice")
        .await
        .unwrap_err();
    assert!(
        matches!(e, airlock_identity::IdentityError::AccessDenied { .. }),
        "{e}"
    );
    let e = peers
        .binder
        .ensure_workload(&format!("{WORKLOAD}.x"), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(e, airlock_identity::IdentityError::AccessDenied { .. }),
        "{e}"
    );
}

/// The seed's flow with every part a server on 127.0.0.1: oidc-provider as
/// the corporate IdP and as the third party, the ALB stand-in signing users
/// in and forwarding to the binding service, the identity service, and the
/// runtime with a broker whose return URL is the binding page behind the ALB.
struct Behind {
    peers: Peers,
    runtime: Runtime,
    tool: Tool,
    _alb: airlock_dev_alb::Running,
    binding: airlock_binding::Running,
    /// The binding page's URL through the ALB.
    url: String,
}

impl Behind {
    async fn start() -> Behind {
        captured_logs();
        let alb_port = airlock_tests::peers::free_port();
        let peers = Peers::start(PeerOptions {
            alb_port: Some(alb_port),
            ..Default::default()
        })
        .await;
        let url = format!("http://127.0.0.1:{alb_port}/oauth2/session-binding");
        let binding_port = airlock_tests::peers::free_port();
        let config = airlock_dev_alb::parse(&format!(
            r#"
            listen = "127.0.0.1:{alb_port}"
            [idp]
            discovery_url = "{discovery}"
            client_id = "{client}"
            client_secret = "{secret}"
            [[route]]
            path_prefix = "/oauth2/session-binding"
            target = "http://127.0.0.1:{binding_port}"
            "#,
            discovery = peers.provider.discovery_url(),
            client = airlock_tests::peers::ALB_CLIENT,
            secret = airlock_tests::peers::CLIENT_SECRET,
        ))
        .unwrap();
        let alb = airlock_dev_alb::start(config).await.unwrap();
        let binding: BindingConfig = toml::from_str(&format!(
            r#"
            listen = "127.0.0.1:{binding_port}"
            return_url = "{AGENT}"
            [alb]
            signer_arn = "{arn}"
            key_url = "{keys}"
            issuer = "{issuer}"
            [audit]
            sink = "off"
            "#,
            arn = alb.signer_arn,
            keys = alb.key_url,
            issuer = alb.issuer,
        ))
        .unwrap();
        let binding = airlock_binding::start(binding, peers.binder.clone())
            .await
            .unwrap();
        let broker = Arc::new(airlock_identity::Broker::new(
            peers.agent.clone(),
            airlock_identity::BrokerConfig::new(WORKLOAD, Some(url.clone())),
        ));
        let runtime = Runtime::builder().token_source(broker).build().unwrap();
        let tool = runtime
            .load(&tool_bytes("github-issues"), &peers.policy())
            .unwrap();
        Behind {
            peers,
            runtime,
            tool,
            _alb: alb,
            binding,
            url,
        }
    }

    async fn call(&self, who: &str) -> CallReport {
        self.runtime
            .invoke_as(&self.tool, Some(&user(who)), "{}")
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_alb_the_user_who_consents_is_the_one_signed_in() {
    let s = Behind::start().await;
    // Alice: consent at the provider, then the ALB signs her in at the IdP
    // (the same browser), and the binding page completes her session.
    let url = authorization_url(&s.call("alice").await);
    let mut alices_browser = Browser::new();
    let landed = alices_browser
        .authorize(&url, "alice", Decision::Approve, &s.url)
        .await
        .unwrap();
    let (at, status, page) = alices_browser
        .visit(&landed, "alice", Decision::Approve)
        .await
        .unwrap();
    assert!(at.starts_with(&s.url), "{at}: {status} {page}");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("<code>github-issues</code> may now act for you"),
        "{page}"
    );
    assert_eq!(title(&s.call("alice").await), "alice's issue");

    // CSRF: Mallory's link, opened in Alice's signed-in browser: nothing bound.
    let url = authorization_url(&s.call("mallory").await);
    let landed = Browser::new()
        .authorize(&url, "mallory", Decision::Approve, &s.url)
        .await
        .unwrap();
    let (_, status, page) = alices_browser
        .visit(&landed, "alice", Decision::Approve)
        .await
        .unwrap();
    assert_eq!(status, 403, "{page}");
    assert_eq!(s.peers.stored_grants("mallory"), 0);
    authorization_url(&s.call("mallory").await);

    // A header Mallory sends herself is stripped by the ALB: she is signed in
    // as herself, and the forged Alice is never seen.
    let url = authorization_url(&s.call("bob").await);
    let landed = Browser::new()
        .authorize(&url, "bob", Decision::Approve, &s.url)
        .await
        .unwrap();
    let forged = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&landed)
        .header("x-amzn-oidc-data", header_for("bob"))
        .send()
        .await
        .unwrap();
    assert!(
        forged.status().is_redirection(),
        "without the ALB's session the request goes to sign-in, header or not"
    );
    assert_eq!(s.peers.stored_grants("bob"), 0);
    s.binding.shutdown().await;
}

/// The pages in a real browser: headless Chromium through WebDriver. Alice
/// signs in and consents, lands on the binding service behind the ALB and
/// sees the success page; Mallory's link in Alice's browser and Carol's link
/// in Bob's are refused with their page. Screenshots are kept as artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_alice_is_bound_and_swapped_links_are_refused() {
    use airlock_tests::chrome::Chrome;
    let s = Behind::start().await;

    let alice = Chrome::start().await;
    alice.open(&authorization_url(&s.call("alice").await)).await;
    // Consent at the provider, then the ALB's sign-in at the IdP (the same
    // oidc-provider here), then the binding page.
    alice.approve_until("alice", &s.url).await;
    let html = alice.html().await;
    assert!(html.contains("<h1>Access granted</h1>"), "{html}");
    assert!(
        html.contains("<code>github-issues</code> may now act for you"),
        "{html}"
    );
    assert!(html.contains("<html lang=\"en\">"));
    let shot = alice.screenshot("binding-granted.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    assert_eq!(title(&s.call("alice").await), "alice's issue");

    // Mallory's link (she stops before her own binding) in Alice's browser.
    let url = authorization_url(&s.call("mallory").await);
    let link = Browser::new()
        .authorize(&url, "mallory", Decision::Approve, &s.url)
        .await
        .unwrap();
    alice.open(&link).await;
    alice.until_at(&s.url).await;
    let html = alice.html().await;
    assert!(html.contains("<h1>Not granted</h1>"), "{html}");
    alice.screenshot("binding-not-granted.png").await;
    assert_eq!(s.peers.stored_grants("mallory"), 0);

    // Carol's link opened in Bob's browser: Bob consents as himself and is refused.
    let bob = Chrome::start().await;
    bob.open(&authorization_url(&s.call("carol").await)).await;
    bob.approve_until("bob", &s.url).await;
    let html = bob.html().await;
    assert!(html.contains("<h1>Not granted</h1>"), "{html}");
    assert!(
        html.contains("you are signed in as <code>bob</code>"),
        "{html}"
    );
    assert_eq!(s.peers.stored_grants("bob"), 0);
    assert_eq!(s.peers.stored_grants("carol"), 0);
    authorization_url(&s.call("carol").await);

    // The used link again, in Alice's browser: not granted either.
    alice.open(&link).await;
    alice.until_at(&s.url).await;
    assert!(alice.html().await.contains("<h1>Not granted</h1>"));
    alice.close().await;
    bob.close().await;
    s.binding.shutdown().await;
}
