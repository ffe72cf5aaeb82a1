//! `host serve` in process: the AgentCore runtime contract, inbound
//! identities and their forgeries, per-user authorization, saturation, and
//! a consent round trip, all over real HTTP on 127.0.0.1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_tests::alb::{self, ALB_ARN, ISSUER};
use airlock_tests::peers::{PeerOptions, Peers};
use airlock_tests::serve::Serve;
use serde_json::{Value, json};

/// Alice may do anything; others may list and call exchange-rates only; no
/// one may ask text-stats for more than ten words.
const POLICIES: &str = r#"
permit (principal == Airlock::User::"alice", action, resource);
permit (
  principal,
  action in [Airlock::Action::"list", Airlock::Action::"call"],
  resource == Airlock::Tool::"exchange-rates"
);
forbid (principal, action == Airlock::Action::"call", resource == Airlock::Tool::"text-stats")
  when { context has arguments && context.arguments has top && context.arguments.top > 10 };
"#;

/// A server behind the test ALB (both listeners) serving the example tools
/// and the hostile fixture, with the Cedar policies above and an operator
/// policy allowing the tools' hosts and providers plus `policy`.
fn serve(dir: &Path, key_url: &str, policy: &str) -> Serve {
    let schema = airlock_server::DEFAULT_SCHEMA.replace(
        "type Arguments = {};",
        "type Arguments = { \"top\"?: Long };",
    );
    Serve::new(dir)
        .built_tools(&["text-stats", "exchange-rates", "github-issues", "hostile"])
        .policy(&format!(
            "allow_any_host = true\nallow_any_provider = true\n{policy}"
        ))
        .cedar(POLICIES)
        .cedar_schema(&schema)
        .alb(key_url)
        .set("http.accept", vec!["alb"])
        .set("mcp.accept", vec!["alb"])
}

/// The same, its MCP listener taking bearer tokens from `discovery_url` for `audience`.
fn serve_bearer(dir: &Path, key_url: &str, discovery_url: &str, audience: &str) -> Serve {
    serve(dir, key_url, "")
        .jwt_issuer_prefixed(discovery_url, audience, "idp:")
        .set("mcp.accept", vec!["bearer"])
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn invoke(
    server: &airlock_server::Running,
    header: Option<(&str, String)>,
    tool: &str,
    input: Value,
) -> (u16, Value) {
    let headers: Vec<_> = header.into_iter().collect();
    airlock_tests::invoke(server.http, &headers, tool, input).await
}

fn as_alb(user: &str) -> Option<(&'static str, String)> {
    Some(airlock_tests::as_alb(user))
}

async fn metrics(server: &airlock_server::Running) -> String {
    http()
        .get(format!("http://{}/metrics", server.metrics.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Each listener's router is a plain service: built, called, no socket bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_answers_from_its_routers_without_a_socket() {
    use tower_service::Service;
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let app = airlock_server::build(serve(dir.path(), &keys, "").config(), None)
        .await
        .unwrap();
    let mut router = app.http_router().unwrap();
    let request = |path: &str, header: Option<(&str, String)>| {
        let mut r = http::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json");
        if let Some((name, value)) = header {
            r = r.header(name, value);
        }
        r.body(axum::body::Body::from(
            json!({"tool": "text-stats", "input": {"text": "a b a"}}).to_string(),
        ))
        .unwrap()
    };
    let answer = router.call(request("/invocations", as_alb("alice"))).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["result"]["words"], 3, "{body}");
    let answer = router.call(request("/invocations", None)).await.unwrap();
    assert_eq!(answer.status(), 401, "no identity, no call");
    let ping = http::Request::get("/ping")
        .header("host", "127.0.0.1")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(router.call(ping).await.unwrap().status(), 200);
}

/// The MCP, metrics and admin listeners' routers, called without a socket:
/// MCP refuses a caller without the ALB's header, the admin API anyone
/// without its key, and the metrics count the calls served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_router_answers_without_a_socket() {
    use tower_service::Service;
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let store = dir.path().join("store");
    let app = airlock_server::build(
        serve(dir.path(), &keys, "")
            .set("store", store.display().to_string())
            .admin_key("ci", "router-test-key")
            .config(),
        None,
    )
    .await
    .unwrap();
    let body = |value: Value| axum::body::Body::from(value.to_string());
    let read = |answer: http::Response<axum::body::Body>| async move {
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    };

    let mut mcp = app.mcp_listener_router().unwrap().expect("an MCP listener is configured");
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let request = |header: Option<(&str, String)>| {
        let mut r = http::Request::post("/mcp")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some((name, value)) = header {
            r = r.header(name, value);
        }
        r.body(body(list.clone())).unwrap()
    };
    let answer = mcp.call(request(None)).await.unwrap();
    assert_eq!(answer.status(), 401, "no identity, no listing");

    let mut admin = app.admin_router().expect("an admin listener is configured");
    let tools = |key: Option<&str>| {
        let mut r = http::Request::get("/admin/tools").header("host", "127.0.0.1");
        if let Some(key) = key {
            r = r.header("authorization", format!("Bearer {key}"));
        }
        r.body(axum::body::Body::empty()).unwrap()
    };
    assert_eq!(admin.call(tools(None)).await.unwrap().status(), 401);
    assert_eq!(admin.call(tools(Some("not-the-key"))).await.unwrap().status(), 403);
    let answer = admin.call(tools(Some("router-test-key"))).await.unwrap();
    assert_eq!(answer.status(), 200);
    let listed = read(answer).await;
    assert!(listed.contains("\"text-stats\""), "{listed}");

    let mut http_router = app.http_router().unwrap();
    let call = http::Request::post("/invocations")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header(as_alb("alice").unwrap().0, as_alb("alice").unwrap().1)
        .body(body(json!({"tool": "text-stats", "input": {"text": "a b a"}})))
        .unwrap();
    assert_eq!(http_router.call(call).await.unwrap().status(), 200);
    let mut metrics = app.metrics_router().expect("a metrics listener is configured");
    let scrape = http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let text = read(metrics.call(scrape).await.unwrap()).await;
    assert!(
        text.contains(r#"airlock_calls_total{outcome="ok",tool="text-stats"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_and_ping_follow_the_runtime_contract() {
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let s = serve(dir.path(), &keys, "").start(None).await;
    let ping: Value = http()
        .get(format!("http://{}/ping", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping["status"], "Healthy");
    assert!(ping["time_of_last_update"].as_i64().unwrap() > 1_700_000_000);

    let (status, body) = invoke(
        &s,
        as_alb("alice"),
        "text-stats",
        json!({"text": "a b a", "top": 1}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["result"]["words"], 3);
    assert_eq!(
        body["result"]["top_words"],
        json!([{"word": "a", "count": 2}])
    );
    // A tool error is an answer, not a failure of the endpoint.
    let (status, body) = invoke(&s, as_alb("alice"), "hostile", json!({"attack": "flood"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"]["kind"], "output_too_large", "{body}");
    // Refusals name what is wrong.
    let (status, body) = invoke(&s, as_alb("alice"), "no-such-tool", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_tool"))
    );
    let (status, body) = invoke(&s, as_alb("alice"), "text-stats", json!({"txt": "a"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_arguments"))
    );
    assert!(body["message"].as_str().unwrap().contains("text"), "{body}");
    let response = http()
        .post(format!("http://{}/invocations", s.http))
        .header("x-amzn-oidc-data", alb::header_for("alice"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().contains_key("x-request-id"));
    let text = metrics(&s).await;
    assert!(
        text.contains(r#"airlock_calls_total{outcome="ok",tool="text-stats"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("airlock_call_duration_seconds_bucket"),
        "{text}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_misplaced_identities_get_401_and_run_nothing() {
    let peers = Peers::start(PeerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let s = serve_bearer(
        dir.path(),
        &keys,
        &peers.provider.discovery_url(),
        "airlock-login",
    )
    .start(None)
    .await;
    let now = alb::now();
    let head = |extra: Value| {
        let mut h = json!({"alg": "ES256", "kid": alb::KID, "signer": ALB_ARN, "iss": ISSUER, "exp": now + 60});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    let claims = json!({"sub": "alice", "exp": now + 60});
    let evil = "arn:aws:elasticloadbalancing:us-east-1:999999999999:loadbalancer/app/evil/1";
    let alice_jwt = peers.id_token("alice").await;
    let attacks: Vec<(&str, Option<(&str, String)>)> = vec![
        ("no header", None),
        (
            "another key",
            Some((
                "x-amzn-oidc-data",
                alb::sign(&head(json!({})), &claims, alb::OTHER_KEY),
            )),
        ),
        (
            "another load balancer",
            Some((
                "x-amzn-oidc-data",
                alb::sign(&head(json!({"signer": evil})), &claims, alb::KEY),
            )),
        ),
        (
            "expired",
            Some((
                "x-amzn-oidc-data",
                alb::sign(
                    &head(json!({})),
                    &json!({"sub": "alice", "exp": now - 5}),
                    alb::KEY,
                ),
            )),
        ),
        (
            "alg none",
            Some(("x-amzn-oidc-data", {
                let signed = alb::sign(&head(json!({"alg": "none"})), &claims, alb::KEY);
                format!("{}.", &signed[..signed.rfind('.').unwrap()])
            })),
        ),
        (
            "a kid with a path",
            Some((
                "x-amzn-oidc-data",
                alb::sign(&head(json!({"kid": "../keys/other"})), &claims, alb::KEY),
            )),
        ),
        (
            "a kid that is a URL",
            Some((
                "x-amzn-oidc-data",
                alb::sign(
                    &head(json!({"kid": "http://169.254.169.254/latest"})),
                    &claims,
                    alb::KEY,
                ),
            )),
        ),
        // The HTTP listener takes only the ALB's header: a valid bearer token is refused there.
        (
            "a bearer token on the ALB-only port",
            Some(("authorization", format!("Bearer {}", alice_jwt.expose()))),
        ),
    ];
    for (what, header) in attacks {
        let (status, body) = invoke(&s, header, "text-stats", json!({"text": "x"})).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], "unauthenticated", "{what}");
        let message = body["message"].as_str().unwrap();
        assert!(
            !message.contains("signature") && !message.contains("kid"),
            "{what}: {message}"
        );
    }
    // The MCP listener takes bearer tokens only.
    let mcp = format!("http://{}/mcp", s.mcp.unwrap());
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let post = |header: (&'static str, String)| {
        http()
            .post(&mcp)
            .header("accept", "application/json, text/event-stream")
            .header(header.0, header.1)
            .json(&initialize)
            .send()
    };
    let on_mcp = post(("x-amzn-oidc-data", alb::header_for("alice")))
        .await
        .unwrap();
    assert_eq!(
        on_mcp.status(),
        401,
        "an ALB header on the bearer-only port"
    );
    // A JWT for another audience, and one from another issuer.
    let other_audience = {
        let dir = tempfile::tempdir().unwrap();
        serve_bearer(
            dir.path(),
            &keys,
            &peers.provider.discovery_url(),
            "some-other-app",
        )
        .start(None)
        .await
    };
    let response = http()
        .post(format!("http://{}/mcp", other_audience.mcp.unwrap()))
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {}", alice_jwt.expose()))
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "a JWT for another audience");
    let foreign = alb::sign(
        &head(json!({"typ": "JWT"})),
        &json!({"sub": "alice", "exp": now + 60, "iss": ISSUER, "aud": "airlock-login"}),
        alb::KEY,
    );
    let response = post(("authorization", format!("Bearer {foreign}")))
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "a JWT from another issuer");
    // The genuine ones pass where they are accepted.
    let response = post(("authorization", format!("Bearer {}", alice_jwt.expose())))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = invoke(&s, as_alb("alice"), "text-stats", json!({"text": "x"})).await;
    assert_eq!(status, 200);
    // Nothing ran for any refused request.
    let text = metrics(&s).await;
    assert!(
        text.contains(r#"airlock_calls_total{outcome="ok",tool="text-stats"} 1"#),
        "{text}"
    );
    assert_eq!(text.matches("airlock_calls_total{").count(), 1, "{text}");
    other_audience.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_call_what_is_decided_per_user_and_by_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let s = serve(dir.path(), &keys, "").start(None).await;
    let (status, _) = invoke(
        &s,
        as_alb("alice"),
        "text-stats",
        json!({"text": "a", "top": 3}),
    )
    .await;
    assert_eq!(status, 200);
    // An argument-based rule: no more than ten words, for anyone.
    let (status, body) = invoke(
        &s,
        as_alb("alice"),
        "text-stats",
        json!({"text": "a", "top": 50}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert!(
        !body["message"].as_str().unwrap().contains("policy"),
        "{body}"
    );
    // Every spelling of a number over ten is refused before the guest runs
    // (the input schema counts 11.0 and 1e2 as integers; Cedar read them as absent).
    for top in [json!(11.0), json!(1e2)] {
        let (status, body) = invoke(
            &s,
            as_alb("alice"),
            "text-stats",
            json!({"text": "a", "top": top}),
        )
        .await;
        assert_eq!(status, 403, "top = {top}: {body}");
    }
    let text = metrics(&s).await;
    assert!(
        !text.contains(r#"airlock_calls_total{outcome="ok",tool="text-stats"} 2"#),
        "a refused call ran: {text}"
    );
    // Bob may not call text-stats, and does not see it.
    // To bob it is no tool at all: the same answer as a name no tool has.
    let (status, body) = invoke(&s, as_alb("bob"), "text-stats", json!({"text": "a"})).await;
    let (_, none) = invoke(&s, as_alb("bob"), "no-such-tool", json!({"text": "a"})).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], none["error"]);
    let list = |user: &str| {
        let header = alb::header_for(user);
        let mcp = format!("http://{}/mcp", s.mcp.unwrap());
        async move { mcp_list(&mcp, ("x-amzn-oidc-data", header)).await }
    };
    assert_eq!(list("bob").await, ["exchange-rates"]);
    let alice = list("alice").await;
    assert!(
        alice.contains(&"text-stats".to_string()) && alice.contains(&"hostile".to_string()),
        "{alice:?}"
    );
    s.shutdown().await;
}

/// tools/list over MCP in the stateless 2026-07-28 way: one POST, no session.
async fn mcp_list(url: &str, header: (&str, String)) -> Vec<String> {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let response = http()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .header(header.0, header.1)
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let json_text = text
        .lines()
        .find_map(|l| l.strip_prefix("data: ").filter(|d| d.starts_with('{')))
        .unwrap_or(&text)
        .to_string();
    let body: Value = serde_json::from_str(&json_text).unwrap_or_else(|e| panic!("{e}: {text}"));
    body["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturation_keeps_ping_and_answers_busy_without_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let s = Arc::new(
        serve(dir.path(), &keys, "")
            .set("limits.max_concurrent_calls", 2)
            .set("limits.queue_wait_ms", 100)
            .start(None)
            .await,
    );
    // Twice the pool in spinning guests, and as many healthy calls.
    let mut calls = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        calls.push(tokio::spawn(async move {
            let (tool, input) = if i % 2 == 0 {
                ("hostile", json!({"attack": "loop"}))
            } else {
                ("text-stats", json!({"text": "still serving"}))
            };
            invoke(&s, as_alb("alice"), tool, input).await
        }));
    }
    // While every slot is taken, /ping still answers, and says so.
    let ping = &format!("http://{}/ping", s.http);
    airlock_tests::eventually(
        Duration::from_secs(10),
        "ping says HealthyBusy",
        move || async move {
            let ping: Value = http().get(ping).send().await.ok()?.json().await.ok()?;
            (ping["status"] == "HealthyBusy").then_some(())
        },
    )
    .await;
    let mut busy = 0;
    for c in calls {
        let (status, body) = c.await.unwrap();
        assert!(status == 200 || status == 429, "{status} {body}");
        if status == 429 {
            assert_eq!(body["error"], "busy");
            busy += 1;
        }
    }
    assert!(busy >= 2, "the excess was told it is busy ({busy})");
    // Free again: healthy and answering.
    let (status, body) = invoke(&s, as_alb("alice"), "text-stats", json!({"text": "a b"})).await;
    assert_eq!((status, &body["result"]["words"]), (200, &json!(2)));
    let ping: Value = http()
        .get(format!("http://{}/ping", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping["status"], "Healthy");
    Arc::try_unwrap(s).ok().unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_must_consent_gets_the_url_and_then_the_data() {
    let peers = Peers::start(PeerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let routes = format!(
        "allow_private_addresses = true\ndangerously_allow_https_to_http_routes = true\n[[routes]]\nfrom = \"https://api.github.com\"\nto = \"{}\"\n",
        peers.resource.origin()
    );
    let s = serve(dir.path(), &keys, &routes)
        .start(Some(peers.broker.clone()))
        .await;
    let (status, body) = invoke(&s, as_alb("alice"), "github-issues", json!({})).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("authorization_required")),
        "{body}"
    );
    let url = body["authorization_url"].as_str().unwrap();
    assert!(body["message"].as_str().unwrap().contains(url));
    let session = peers
        .consent(url, "alice", airlock_tests::oidc::Decision::Approve)
        .await
        .unwrap();
    peers.bind(&session, "alice").await.unwrap();
    let (status, body) = invoke(&s, as_alb("alice"), "github-issues", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["issues"][0]["title"], "alice's issue");
    let text = metrics(&s).await;
    assert!(
        text.contains(r#"airlock_consent_prompts_total{provider="github",tool="github-issues"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"airlock_brokered_requests_total{provider="github"} 1"#),
        "{text}"
    );
    s.shutdown().await;
    // The trail has the start, the prompt and both calls, chains, and holds
    // no token: not the one the API saw, not the user's sign-in.
    let audit = dir.path().join("audit.jsonl");
    assert_eq!(
        airlock_server::audit::verify(std::slice::from_ref(&audit)),
        Ok(4)
    );
    let trail = std::fs::read_to_string(&audit).unwrap();
    assert!(trail.contains(r#""kind":"consent""#), "{trail}");
    assert!(
        trail.contains(r#""status":200,"provider":"github""#),
        "{trail}"
    );
    let shown = peers.resource.shown();
    let bearer = shown[0].authorization.as_deref().unwrap();
    let token = bearer.strip_prefix("Bearer ").unwrap();
    assert!(token.len() > 20);
    assert!(!trail.contains(token), "a token in the audit trail");
    let signed_in = alb::header_for("alice");
    let signature = signed_in.rsplit('.').next().unwrap();
    assert!(!trail.contains(signature), "the sign-in in the audit trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_speaks_the_revision_the_client_negotiates() {
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let s = serve(dir.path(), &keys, "").start(None).await;
    let mcp = format!("http://{}/mcp", s.mcp.unwrap());
    let post = |body: Value, version: Option<&'static str>| {
        let mut request = http()
            .post(&mcp)
            .header("accept", "application/json, text/event-stream")
            .header("x-amzn-oidc-data", alb::header_for("alice"))
            .json(&body);
        if let Some(v) = version {
            request = request
                .header("mcp-protocol-version", v)
                .header("mcp-method", body["method"].as_str().unwrap().to_string());
        }
        async move {
            let text = request.send().await.unwrap().text().await.unwrap();
            let data = text
                .lines()
                .find_map(|l| l.strip_prefix("data: ").filter(|d| d.starts_with('{')))
                .unwrap_or(&text)
                .to_string();
            serde_json::from_str::<Value>(&data).unwrap_or_else(|e| panic!("{e}: {text}"))
        }
    };
    for version in ["2025-06-18", "2025-11-25"] {
        let answer = post(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}),
            None,
        )
        .await;
        assert_eq!(answer["result"]["protocolVersion"], version, "{answer}");
        assert!(answer["result"]["capabilities"]["tools"].is_object());
    }
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let discovered = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {"_meta": meta}}),
        Some("2026-07-28"),
    )
    .await;
    let versions = discovered["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-06-18"),
        "{discovered}"
    );
    s.shutdown().await;
}

/// Inside AgentCore Runtime the host takes the workload token the runtime
/// hands over as it is. A made-up token with someone's user id must not pick
/// that user's cached tokens: the id was not verified here, the token is.
/// The runtime is then the only way in: nothing else is accepted beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_workload_tokens_are_used_as_they_are_and_pick_no_one_elses_tokens() {
    let peers = Peers::start(PeerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = |dir: &Path| {
        Serve::new(dir)
            .built_tools(&["text-stats", "github-issues"])
            .policy(&format!(
                "allow_any_host = true\nallow_any_provider = true\nallow_private_addresses = true\ndangerously_allow_https_to_http_routes = true\n[[routes]]\nfrom = \"https://api.github.com\"\nto = \"{}\"\n",
                peers.resource.origin()
            ))
            .cedar("permit (principal, action, resource);")
            .set("identity.agentcore_runtime", true)
            .set("audit.sink", "off")
    };
    let s = runtime(dir.path()).start(Some(peers.broker.clone())).await;
    let as_runtime_at =
        |at: std::net::SocketAddr, token: &str, user: Option<&str>, bearer: Option<&str>| {
            let mut request = http()
                .post(format!("http://{at}/invocations"))
                .header("WorkloadAccessToken", token)
                .json(&json!({"tool": "github-issues", "input": {}}));
            if let Some(user) = user {
                request = request.header("X-Amzn-Bedrock-AgentCore-Runtime-User-Id", user);
            }
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer);
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.text().await.unwrap())
            }
        };

    // The token the runtime minted for alice is used as it is: she consents
    // once, and her next call has the data.
    let minted = peers
        .agent
        .workload_token_for_user(airlock_tests::peers::WORKLOAD, "alice")
        .await
        .unwrap();
    let (status, body) = as_runtime_at(s.http, minted.expose(), Some("alice"), None).await;
    assert!(!body.contains("alice's issue"), "{status} {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let url = body["authorization_url"].as_str().expect("a consent URL");
    let session = peers
        .consent(url, "alice", airlock_tests::oidc::Decision::Approve)
        .await
        .unwrap();
    peers.bind(&session, "alice").await.unwrap();
    let (status, body) = as_runtime_at(s.http, minted.expose(), Some("alice"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("alice's issue"), "{body}");

    // A made-up workload token naming alice gets none of her data.
    let (status, body) = as_runtime_at(s.http, "made-up", Some("alice"), None).await;
    assert!(!body.contains("alice's issue"), "{status} {body}");
    assert!(!body.contains("made-up"), "{body}");

    // No user named: 401 saying what the runtime must pass.
    let (status, body) = as_runtime_at(s.http, minted.expose(), None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("runtime user id"), "{body}");
    // Neither listener takes anything but the runtime's token.
    for url in [
        format!("http://{}/invocations", s.http),
        format!("http://{}/mcp", s.mcp.unwrap()),
    ] {
        let response = http()
            .post(&url)
            .header("x-amzn-oidc-data", alb::header_for("alice"))
            .json(&json!({"tool": "github-issues", "input": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{url}");
    }
    s.shutdown().await;

    // Beside the ALB, the runtime's headers would stand in for a sign-in: refused.
    let mixed = runtime(dir.path()).alb("http://127.0.0.1:9").to_toml();
    let e = airlock_server::ServeConfig::from_toml(&mixed)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the only way in"), "{e}");

    // With an issuer configured, the caller's token is required and the
    // runtime's user id must be its subject.
    let dir = tempfile::tempdir().unwrap();
    let s = runtime(dir.path())
        .jwt_issuer(&peers.provider.discovery_url(), "airlock-login")
        .start(Some(peers.broker.clone()))
        .await;
    let alice = peers.id_token("alice").await;
    let (status, body) = as_runtime_at(s.http, minted.expose(), Some("alice"), None).await;
    assert_eq!(status, 401, "no token passed on: {body}");
    let (status, body) =
        as_runtime_at(s.http, minted.expose(), Some("bob"), Some(alice.expose())).await;
    assert_eq!(status, 401, "bob's id with alice's token: {body}");
    let (status, body) =
        as_runtime_at(s.http, minted.expose(), Some("alice"), Some(alice.expose())).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("alice's issue"), "{body}");
    s.shutdown().await;
}

/// Sessions of clients before 2026-07-28 are capped per user and in all,
/// and every MCP request counts against the user's rate, not only calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sessions_are_capped_per_user_and_every_request_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let keys = alb::key_endpoint().await;
    let s = serve(dir.path(), &keys, "")
        .set("limits.max_sessions_per_user", 2)
        .set("limits.mcp_requests_per_minute", 60)
        .start(None)
        .await;
    let mcp = format!("http://{}/mcp", s.mcp.unwrap());
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let open = |user: &'static str| {
        let request = http()
            .post(&mcp)
            .header("accept", "application/json, text/event-stream")
            .header("x-amzn-oidc-data", alb::header_for(user))
            .json(&initialize);
        async move {
            let response = request.send().await.unwrap();
            let session = response
                .headers()
                .get("mcp-session-id")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), session)
        }
    };
    let (status, first) = open("alice").await;
    assert_eq!(status, 200);
    let first = first.expect("a session");
    assert_eq!(open("alice").await.0, 200);
    assert_eq!(open("alice").await.0, 429, "a third session for one user");
    assert_eq!(open("bob").await.0, 200, "another user's own");
    // One closed: there is room again.
    let closed = http()
        .delete(&mcp)
        .header("x-amzn-oidc-data", alb::header_for("alice"))
        .header("mcp-session-id", &first)
        .send()
        .await
        .unwrap();
    assert!(closed.status().is_success(), "{}", closed.status());
    assert_eq!(open("alice").await.0, 200);
    // Listing as fast as it can, carol meets her rate: 60 a minute, 15 at once.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let response = http()
            .post(&mcp)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .header("x-amzn-oidc-data", alb::header_for("carol"))
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}}}}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
    s.shutdown().await;
}
