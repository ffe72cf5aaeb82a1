//! MCP clients signing in on their own: Airlock as an OAuth protected
//! resource (RFC 9728 metadata, challenges, audience) and its authorization
//! server façade federating to oidc-provider (the operator's IdP in Cognito's
//! place). The official Python and TypeScript SDKs' stock OAuth clients sign
//! in with headless Chromium as the person, then list, call, meet a tool's
//! consent and get the data; every refusal runs nothing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use airlock_tests::chrome::Chrome;
use airlock_tests::oidc::{Browser, Decision};
use airlock_tests::peers::{CLIENT_SECRET, FACADE_CLIENT, PeerOptions, Peers, free_port};
use airlock_tests::serve::Serve;
use airlock_tests::tls::Https;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const SECRET: &str = "a-test-signing-secret-of-32-bytes-or-more-0001";

/// `host serve` with the façade on its MCP listener, tokens from it only.
struct Signed {
    peers: Peers,
    server: airlock_server::Running,
    serve: Serve,
    issuer: String,
    mcp: String,
    documents: Https,
    dir: tempfile::TempDir,
}

fn mcp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp")
}

impl Signed {
    async fn start() -> Signed {
        Signed::start_with(|s| s).await
    }

    async fn start_with(tweak: impl FnOnce(Serve) -> Serve) -> Signed {
        let port = free_port();
        let peers = Peers::start(PeerOptions {
            facade_port: Some(port),
            ..PeerOptions::default()
        })
        .await;
        let documents = Https::start().await;
        let dir = tempfile::tempdir().unwrap();
        let issuer = format!("http://127.0.0.1:{port}");
        let serve = Serve::new(dir.path());
        let secrets = serve.file("oauth-secrets", SECRET);
        let idp_secret = serve.file("idp-secret", CLIENT_SECRET);
        let serve = serve
            .built_tools(&["text-stats", "github-issues"])
            .policy(&format!(
                "allow_any_host = true\nallow_any_provider = true\nallow_private_addresses = true\ndangerously_allow_https_to_http_routes = true\n[[routes]]\nfrom = \"https://api.github.com\"\nto = \"{}\"\n",
                peers.resource.origin()
            ))
            .cedar("permit (principal, action, resource);")
            .set("mcp.listen", format!("127.0.0.1:{port}"))
            .set("public_url", format!("{issuer}/mcp"))
            .set("oauth.issuer", issuer.as_str())
            .set("oauth.secrets_file", secrets.display().to_string())
            .set("oauth.idp.discovery_url", peers.provider.discovery_url())
            .set("oauth.idp.client_id", FACADE_CLIENT)
            .set("oauth.idp.client_secret_file", idp_secret.display().to_string())
            .set("oauth.idp.scopes", vec!["openid"])
            .set("oauth.cimd.dangerously_allow_private_addresses", true)
            .set(
                "oauth.cimd.extra_root_certificates",
                vec![documents.ca.display().to_string()],
            );
        let serve = tweak(serve);
        let server = serve.start(Some(peers.broker.clone())).await;
        Signed {
            peers,
            server,
            serve,
            mcp: format!("{issuer}/mcp"),
            issuer,
            documents,
            dir,
        }
    }

    /// Stop the server and start it again on the same addresses.
    async fn restart(self) -> Signed {
        let Signed {
            peers,
            server,
            serve,
            issuer,
            mcp,
            documents,
            dir,
        } = self;
        server.shutdown().await;
        let server = serve.start(Some(peers.broker.clone())).await;
        Signed {
            peers,
            server,
            serve,
            issuer,
            mcp,
            documents,
            dir,
        }
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap()
    }

    /// Register a public client dynamically; its id.
    async fn register(&self, redirect: &str) -> String {
        let response = reqwest::Client::new()
            .post(format!("{}/oauth/register", self.issuer))
            .json(&json!({"client_name": "test", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Sign `user` in for `client_id` as a browser would (the façade's
    /// consent, the IdP's login and consent); the URL the client got back.
    async fn sign_in(&self, client_id: &str, redirect: &str, verifier: &str, user: &str) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        let mut authorize = url::Url::parse(&format!("{}/oauth/authorize", self.issuer)).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair("state", "s1")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &self.mcp);
        Browser::new()
            .authorize(authorize.as_str(), user, Decision::Approve, redirect)
            .await
            .unwrap()
    }

    async fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/oauth/token", self.issuer))
            .form(form)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// `code`, sent back to `redirect` for `client`, exchanged for tokens.
    async fn redeem(&self, client: &str, redirect: &str, code: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", client),
            ("code_verifier", VERIFIER),
        ])
        .await
    }

    /// A tools/list with `token`: the status and the challenge, if any.
    async fn list_with(&self, token: &str) -> (u16, Option<String>) {
        let response = reqwest::Client::new()
            .post(&self.mcp)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .bearer_auth(token)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}))
            .send()
            .await
            .unwrap();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (response.status().as_u16(), challenge)
    }

    /// How many tool calls ran, by the metrics.
    async fn calls_run(&self) -> usize {
        let text = reqwest::get(format!("http://{}/metrics", self.server.metrics.unwrap()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("airlock_calls_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize
    }
}

fn code_of(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap_or_else(|| panic!("no code in {url}"))
        .1
        .into_owned()
}

const VERIFIER: &str = "a-pkce-verifier-of-at-least-forty-three-characters-0001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_and_the_401_lead_a_client_to_the_facade() {
    let s = Signed::start().await;
    let http = reqwest::Client::new();
    let response = http.post(&s.mcp).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", s.issuer);
    assert_eq!(
        challenge,
        format!("Bearer resource_metadata=\"{metadata_url}\", scope=\"tools:list tools:call\"")
    );
    for url in [
        metadata_url,
        format!("{}/.well-known/oauth-protected-resource", s.issuer),
    ] {
        let m: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(m["resource"], s.mcp.as_str(), "{url}");
        assert_eq!(m["authorization_servers"], json!([s.issuer]));
        assert_eq!(m["scopes_supported"], json!(["tools:list", "tools:call"]));
        assert_eq!(m["bearer_methods_supported"], json!(["header"]));
    }
    let m: Value = http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            s.issuer
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], s.issuer.as_str());
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert!(m["registration_endpoint"].is_string());
    // Every listener that takes bearer tokens challenges the same way.
    let response = http
        .post(format!("http://{}/invocations", s.server.http))
        .json(&json!({"tool": "text-stats", "input": {"text": "a"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"].to_str().unwrap(),
        challenge
    );
    assert_eq!(s.calls_run().await, 0);
}

/// Run an MCP client; answer `AUTHORIZE <url>` in a fresh Chromium as
/// `user` (the façade's consent page, then the IdP's; a browser already
/// signed in at the IdP would sign in as whoever that was), and
/// `CONSENT <url>` by consenting at the provider and binding the session;
/// its lines.
async fn drive(s: &Signed, mut client: Command, user: &str, callback: &str) -> Vec<String> {
    let chrome = Chrome::start().await;
    let mut child = client
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("AUTHORIZE ") {
                chrome.open(url).await;
                chrome
                    .until_at(&format!("{}/oauth/authorize", s.issuer))
                    .await;
                let page = chrome.html().await;
                assert!(page.contains("Allow this client?"), "{page}");
                chrome.screenshot("oauth-consent.png").await;
                chrome.approve_until(user, callback).await;
            }
            if let Some(url) = line.strip_prefix("CONSENT ") {
                let session = s.peers.consent(url, user, Decision::Approve).await.unwrap();
                s.peers.bind(&session, user).await.unwrap();
                stdin.write_all(b"\n").await.unwrap();
            }
            seen.push(line);
        }
    })
    .await;
    let mut err = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut err).await;
    assert!(read.is_ok(), "the client did not finish: {seen:?}\n{err}");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{seen:?}\n{err}");
    chrome.close().await;
    seen
}

fn said<'a>(lines: &'a [String], key: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

fn check_run(lines: &[String], user: &str) {
    let tools: Value = serde_json::from_str(said(lines, "TOOLS")).unwrap();
    assert_eq!(tools, json!(["github-issues", "text-stats"]));
    let stats: Value = serde_json::from_str(said(lines, "STATS")).unwrap();
    assert_eq!(stats["words"], 3);
    assert!(lines.iter().any(|l| l.starts_with("CONSENT ")), "{lines:?}");
    assert_eq!(said(lines, "DATA"), format!("{user}'s issue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_oauth_clients_sign_in_by_themselves_and_get_a_tools_data() {
    let s = Signed::start().await;
    let python = mcp_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/setup-test-peers.sh to install the MCP clients"
    );

    // Python, known by its client ID metadata document.
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/callback");
    let document = s.documents.url("/clients/python.json");
    s.documents.put(
        "/clients/python.json",
        &json!({"client_id": document, "client_name": "Python SDK test client",
                "redirect_uris": [callback], "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"], "token_endpoint_auth_method": "none"}),
    );
    let mut client = Command::new(&python);
    client
        .arg(mcp_dir().join("oauth_client.py"))
        .args([&s.mcp, &port.to_string(), &document]);
    let lines = drive(&s, client, "erin", &callback).await;
    check_run(&lines, "erin");
    assert_eq!(said(&lines, "CLIENT"), document, "known by its document");

    // Python, registered dynamically.
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/callback");
    let mut client = Command::new(&python);
    client
        .arg(mcp_dir().join("oauth_client.py"))
        .args([&s.mcp, &port.to_string()]);
    let lines = drive(&s, client, "fred", &callback).await;
    check_run(&lines, "fred");
    assert!(said(&lines, "CLIENT").starts_with("dyn."));

    // TypeScript, registered dynamically.
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/callback");
    let mut client = Command::new("node");
    client
        .arg(mcp_dir().join("oauth_client.mjs"))
        .args([&s.mcp, &port.to_string()]);
    let lines = drive(&s, client, "gwen", &callback).await;
    check_run(&lines, "gwen");

    // Every sign-in and token is in the trail, no token is.
    let trail = s.audit();
    for user in ["erin", "fred", "gwen"] {
        assert!(
            trail.contains(&format!("\"kind\":\"sign_in\",\"user\":\"{user}\"")),
            "{trail}"
        );
        assert!(
            trail.contains(&format!("\"kind\":\"token\",\"user\":\"{user}\"")),
            "{trail}"
        );
    }
    assert!(!trail.contains("eyJ"), "a JWT in the audit trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_audience_expired_or_from_another_issuer_run_nothing() {
    let s = Signed::start().await;
    let redirect = "http://127.0.0.1:9/cb";
    let client = s.register(redirect).await;
    let code = code_of(&s.sign_in(&client, redirect, VERIFIER, "alice").await);
    let (status, tokens) = s.redeem(&client, redirect, &code).await;
    assert_eq!(status, 200, "{tokens}");
    let good = tokens["access_token"].as_str().unwrap();
    assert_eq!(s.list_with(good).await.0, 200);

    // Tokens signed with the façade's own key, each wrong in one way.
    let header = jsonwebtoken::decode_header(good).unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(good.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], s.mcp.as_str());
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let refused = [
        (
            "another audience",
            with_claim(&claims, "aud", json!("https://other.example/mcp")),
        ),
        ("expired", with_claim(&claims, "exp", json!(1_000_000_000))),
        (
            "another issuer",
            with_claim(&claims, "iss", json!("https://evil.example")),
        ),
        ("an ID token, not an access token", claims.clone()),
    ];
    for (what, claims) in refused {
        let typ = if what.starts_with("an ID token") {
            "JWT"
        } else {
            "at+jwt"
        };
        let token = sign_like_the_facade(typ, &claims);
        let (status, challenge) = s.list_with(&token).await;
        assert_eq!(status, 401, "{what}");
        assert!(
            challenge
                .as_deref()
                .unwrap()
                .contains("error=\"invalid_token\""),
            "{what}: {challenge:?}"
        );
    }
    // And one signed by a key the façade never had.
    let forged = jsonwebtoken::encode(
        &{
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            h.typ = Some("at+jwt".into());
            h.kid = header.kid.clone();
            h
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(airlock_tests::alb::OTHER_KEY.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(s.list_with(&forged).await.0, 401, "forged");
    assert_eq!(s.calls_run().await, 0);
}

fn with_claim(claims: &Value, name: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[name] = value;
    c
}

/// A token signed with the façade's own key (derived from its secret as
/// the façade derives it), of type `typ`, with `claims`.
fn sign_like_the_facade(typ: &str, claims: &Value) -> String {
    airlock_oauth::Keys::from_secrets(&[SECRET.to_string()])
        .unwrap()
        .sign_typed(typ, claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_and_a_reused_refresh_token_are_refused_and_their_family_revoked() {
    let s = Signed::start().await;
    let redirect = "http://127.0.0.1:9/cb";
    let client = s.register(redirect).await;
    let redeem = |code: String| {
        let client = client.clone();
        let s = &s;
        async move { s.redeem(&client, redirect, &code).await }
    };
    let refresh = |token: String| {
        let client = client.clone();
        let s = &s;
        async move {
            s.token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &token),
                ("client_id", &client),
            ])
            .await
        }
    };
    // A code redeemed twice: the second is refused, and what the first bought goes.
    let code = code_of(&s.sign_in(&client, redirect, VERIFIER, "alice").await);
    let (status, first) = redeem(code.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = redeem(code).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant")),
        "{again}"
    );
    let (status, body) = refresh(first["refresh_token"].as_str().unwrap().into()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    // A refresh token rotates; the old one used again revokes the family.
    let code = code_of(&s.sign_in(&client, redirect, VERIFIER, "bob").await);
    let (_, tokens) = redeem(code).await;
    let r1 = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, rotated) = refresh(r1.clone()).await;
    assert_eq!(status, 200, "{rotated}");
    let r2 = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    assert_eq!(
        s.list_with(rotated["access_token"].as_str().unwrap())
            .await
            .0,
        200
    );
    let (status, reused) = refresh(r1).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, after) = refresh(r2).await;
    assert_eq!(
        (status, after["error"].as_str()),
        (400, Some("invalid_grant")),
        "the family is revoked"
    );
    // A wrong verifier, another client, another redirect: each refused.
    let code = code_of(&s.sign_in(&client, redirect, VERIFIER, "carol").await);
    let other = s.register(redirect).await;
    for (what, form) in [
        ("verifier", vec![("code_verifier", "x".repeat(43))]),
        ("client", vec![("client_id", other.clone())]),
        (
            "redirect",
            vec![("redirect_uri", "http://127.0.0.1:9/other".to_string())],
        ),
    ] {
        let mut fields: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("redirect_uri", redirect.into()),
            ("client_id", client.clone()),
            ("code_verifier", VERIFIER.into()),
        ];
        for (k, v) in form {
            fields.retain(|(f, _)| *f != k);
            fields.push((k, v));
        }
        let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = s.token(&borrowed).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{what}: {body}"
        );
    }
    let trail = s.audit();
    assert!(trail.contains("\"kind\":\"token_refused\""), "{trail}");
    assert!(!trail.contains(&code), "a code in the audit trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_once_dir_a_restart_refuses_the_refresh_tokens_it_cannot_judge() {
    let s = Signed::start().await;
    let redirect = "http://127.0.0.1:9/cb";
    let client = s.register(redirect).await;
    let code = code_of(&s.sign_in(&client, redirect, VERIFIER, "alice").await);
    let (status, before) = s.redeem(&client, redirect, &code).await;
    assert_eq!(status, 200, "{before}");
    // Marks were in memory: after a restart nobody knows whether this
    // refresh token was used (and rotated) already, so it is refused.
    let s = s.restart().await;
    let (status, body) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", before["refresh_token"].as_str().unwrap()),
            ("client_id", &client),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{body}"
    );
    // A new sign-in's tokens refresh as before.
    let code = code_of(&s.sign_in(&client, redirect, VERIFIER, "alice").await);
    let (status, after) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", &client),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(status, 200, "{after}");
    let (status, body) = s
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", after["refresh_token"].as_str().unwrap()),
            ("client_id", &client),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_registered_client_is_sent_nowhere_before_the_person_decides() {
    let s = Signed::start().await;
    let phish = "https://phish.example/cb";
    let client = s.register(phish).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (param, value) in [
        ("response_type", "token"),
        ("code_challenge_method", "plain"),
        ("resource", "https://elsewhere.example/mcp"),
    ] {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", s.issuer)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &client)
                .append_pair("redirect_uri", phish);
            for (k, v) in [
                ("response_type", "code"),
                (
                    "code_challenge",
                    "a-pkce-challenge-of-at-least-forty-three-characters",
                ),
                ("code_challenge_method", "S256"),
            ] {
                if k != param {
                    q.append_pair(k, v);
                }
            }
            q.append_pair(param, value);
        }
        let response = no_redirects.get(url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{param}={value}");
        assert!(response.headers().get("location").is_none(), "{param}");
    }
    // The consent page itself says the client is unverified, whole address shown.
    let mut url = url::Url::parse(&format!("{}/oauth/authorize", s.issuer)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", &client)
        .append_pair("redirect_uri", phish)
        .append_pair("response_type", "code")
        .append_pair(
            "code_challenge",
            "a-pkce-challenge-of-at-least-forty-three-characters",
        )
        .append_pair("code_challenge_method", "S256");
    let page = no_redirects
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("not verified by this server"), "{page}");
    assert!(page.contains(phish), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_documents_with_another_redirect_or_at_private_addresses_are_refused() {
    let s = Signed::start().await;
    let document = s.documents.url("/clients/c.json");
    s.documents.put(
        "/clients/c.json",
        &json!({"client_id": document, "client_name": "C", "redirect_uris": ["http://127.0.0.1:9/cb"]}),
    );
    let authorize = |client_id: &str, redirect: &str| {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", s.issuer)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect)
            .append_pair(
                "code_challenge",
                &URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER)),
            )
            .append_pair("code_challenge_method", "S256");
        let url = url.to_string();
        async move {
            let response = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
                .get(url)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, page) = authorize(&document, "http://127.0.0.1:9/cb").await;
    assert_eq!(status, 200, "the document's own redirect: {page}");
    assert!(page.contains("Allow this client?"));
    let (status, page) = authorize(&document, "http://127.0.0.1:9/elsewhere").await;
    assert_eq!(status, 400, "a redirect the document does not list: {page}");
    assert!(page.contains("did not register"), "{page}");
    // A document whose client_id is not its URL.
    s.documents.put("/clients/liar.json", &json!({"client_id": "https://other.example/c.json", "redirect_uris": ["http://127.0.0.1:9/cb"]}));
    let (status, page) = authorize(
        &s.documents.url("/clients/liar.json"),
        "http://127.0.0.1:9/cb",
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("not the URL it was fetched from"), "{page}");

    // With the development switch off, loopback and private addresses are never fetched.
    let strict = Signed::start_with(|serve| {
        serve.set("oauth.cimd.dangerously_allow_private_addresses", false)
    })
    .await;
    strict.documents.put("/clients/c.json", &json!({"client_id": strict.documents.url("/clients/c.json"), "redirect_uris": ["http://127.0.0.1:9/cb"]}));
    for (id, says) in [
        (strict.documents.url("/clients/c.json"), "port, 443"),
        (
            "https://localhost/clients/c.json".to_string(),
            "could not be fetched",
        ),
        (
            "https://127.0.0.1:1/c.json".to_string(),
            "private or metadata address",
        ),
        (
            "https://169.254.169.254/latest/c.json".to_string(),
            "private or metadata address",
        ),
    ] {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", strict.issuer)).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", &id)
            .append_pair("redirect_uri", "http://127.0.0.1:9/cb");
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 400, "{id}");
        let page = response.text().await.unwrap();
        assert!(page.contains(says), "{id}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_call_scope_lists_but_calls_nothing_and_is_told_every_scope() {
    let s = Signed::start().await;
    let redirect = "http://127.0.0.1:9/cb";
    let client = s.register(redirect).await;
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER));
    let mut authorize = url::Url::parse(&format!("{}/oauth/authorize", s.issuer)).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "tools:list")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = Browser::new()
        .authorize(authorize.as_str(), "alice", Decision::Approve, redirect)
        .await
        .unwrap();
    let (_, tokens) = s
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code_of(&back)),
            ("client_id", &client),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(tokens["scope"], "tools:list");
    let token = tokens["access_token"].as_str().unwrap();
    let post = |body: Value| {
        reqwest::Client::new()
            .post(&s.mcp)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", body["method"].as_str().unwrap())
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}});
    let listed =
        post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}))
            .await
            .unwrap();
    assert_eq!(listed.status(), 200, "{}", listed.text().await.unwrap());
    let called = post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "text-stats", "arguments": {"text": "a"}, "_meta": meta}}))
    .await
    .unwrap();
    assert_eq!(called.status(), 403);
    assert_eq!(
        called.headers()["www-authenticate"].to_str().unwrap(),
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"tools:list tools:call\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            s.issuer
        )
    );
    assert_eq!(s.calls_run().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_answers_only_loopback_hosts_and_origins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Serve::new(dir.path())
        .set("local", true)
        .set("identity.local_user", "alice")
        .built_tools(&["text-stats"])
        .start(None)
        .await;
    let call = |host: &str, origin: Option<&str>| {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/invocations", s.http))
            .header("host", host)
            .json(&json!({"tool": "text-stats", "input": {"text": "a b"}}));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let port = s.http.port();
    // A DNS-rebinding page: its own name, now resolving to 127.0.0.1.
    assert_eq!(
        call(
            &format!("evil.example:{port}"),
            Some(&format!("http://evil.example:{port}"))
        )
        .await,
        403
    );
    assert_eq!(call(&format!("evil.example:{port}"), None).await, 403);
    assert_eq!(
        call(&format!("127.0.0.1:{port}"), Some("http://evil.example")).await,
        403
    );
    assert_eq!(call(&format!("127.0.0.1:{port}"), None).await, 200);
    assert_eq!(
        call(
            &format!("localhost:{port}"),
            Some(&format!("http://localhost:{port}"))
        )
        .await,
        200
    );
    // The same on the MCP listener.
    let response = reqwest::Client::new()
        .post(format!("http://{}/mcp", s.mcp.unwrap()))
        .header("host", "evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}
