//! An upstream that echoes the credential back never hands it to the tool:
//! the hostile fixture calls an echo server that reflects the
//! `authorization` header as sent, in a response header, base64 (both
//! alphabets, any alignment), percent-encoded, JSON-escaped, split into
//! chunks of 1 and 7 bytes and across a 64 KiB boundary at every offset;
//! the tool's output and logs never hold it and the report records each
//! redaction. A tool that puts the token together from two answers is caught
//! at its output and its log. A large answer without the token passes byte
//! for byte; an encoded (gzip) answer is refused unread; the `fail` policy
//! ends the call naming the host.

use std::convert::Infallible;
use std::sync::Arc;

use airlock_credential::{Credential, TokenFuture, TokenSource};
use airlock_policy::{EchoedTokens, OperatorPolicy};
use airlock_runtime::{CallOutcome, CallReport, Encoding, InvokeError, Place, Runtime};
use airlock_tests::{tool_bytes, user};
use base64::Engine as _;
use bytes::Bytes;
use http::HeaderValue;
use hyper::body::Frame;
use serde_json::{Value, json};

/// A token source that has one fresh random token for everyone.
struct Fixed(HeaderValue);

impl TokenSource for Fixed {
    fn bearer<'a>(
        &'a self,
        _tool: &'a str,
        _user: &'a airlock_verify::VerifiedUser,
        _grant: &'a airlock_policy::OAuthGrant,
    ) -> TokenFuture<'a> {
        Box::pin(std::future::ready(Ok(Credential::Bearer(self.0.clone()))))
    }

    fn rejected<'a>(
        &'a self,
        tool: &'a str,
        user: &'a airlock_verify::VerifiedUser,
        grant: &'a airlock_policy::OAuthGrant,
        _rejected: &'a HeaderValue,
    ) -> TokenFuture<'a> {
        self.bearer(tool, user, grant)
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).unwrap();
    // A token with characters encoders escape: `+`, `/`, `=`.
    format!(
        "ya29.{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

const BOUNDARY: usize = 64 * 1024;

/// What the echo server sends for `path`, given the `authorization` it got,
/// as the frames it writes.
fn answer(path: &str, authz: &str, token: &str) -> (Vec<(String, String)>, Vec<Vec<u8>>) {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let reflected =
        format!("GET /echo HTTP/1.1\r\nhost: api.github.com\r\nauthorization: {authz}\r\n");
    let one = |body: String| (vec![], vec![body.into_bytes()]);
    match path.trim_start_matches('/') {
        "body" => one(format!("you sent: {reflected}")),
        "header" => (vec![("x-echo".into(), authz.into())], vec![b"ok".to_vec()]),
        "base64" => one(STANDARD.encode(&reflected)),
        "base64-offset" => one(format!(
            "data={}",
            STANDARD.encode(format!("xy{reflected}"))
        )),
        "base64url" => {
            one(URL_SAFE_NO_PAD.encode(json!({"headers": {"authorization": authz}}).to_string()))
        }
        "percent" => one(format!(
            "https://api.github.com/cb?auth={}",
            percent_encoding::utf8_percent_encode(authz, percent_encoding::NON_ALPHANUMERIC)
        )),
        "json" => one(json!({"headers": {"authorization": authz, "path": "/a/b\"c"}}).to_string()),
        "half-1" => one(token[..token.len() / 2].to_string()),
        "half-2" => one(token[token.len() / 2..].to_string()),
        "large" => (vec![], vec![large()]),
        "gzip" => (
            vec![("content-encoding".into(), "gzip".into())],
            vec![b"\x1f\x8b...".to_vec()],
        ),
        "coded-lines" => (
            vec![
                ("content-encoding".into(), "identity".into()),
                ("content-encoding".into(), "gzip".into()),
            ],
            vec![b"\x1f\x8b...".to_vec()],
        ),
        "percent-lower" => one(format!("auth={}", lower_hex(authz))),
        "json-u" => one(format!("{{\"auth\": \"{}\"}}", u_escaped(authz, true))),
        "json-u-lower" => one(format!("{{\"auth\": \"{}\"}}", u_escaped(authz, false))),
        "split-header" => {
            let half = authz.len() / 2;
            (
                vec![
                    ("x-split".into(), authz[..half].into()),
                    ("x-split".into(), authz[half..].into()),
                ],
                vec![b"ok".to_vec()],
            )
        }
        "header-name" => (vec![(token.to_lowercase(), "1".into())], vec![b"ok".to_vec()]),
        "partial" => one(token[..token.len() / 2].to_string()),
        p if p.starts_with("chunks-") => {
            let size: usize = p["chunks-".len()..].parse().unwrap();
            let body = format!("echo {{{reflected}}} done");
            (
                vec![],
                body.as_bytes().chunks(size).map(<[u8]>::to_vec).collect(),
            )
        }
        p if p.starts_with("boundary-") => {
            let offset: usize = p["boundary-".len()..].parse().unwrap();
            let body = boundary_body(authz, offset);
            (
                vec![],
                vec![body[..BOUNDARY].to_vec(), body[BOUNDARY..].to_vec()],
            )
        }
        other => one(format!("no such echo: {other}")),
    }
}

/// `text` percent-encoded, the escapes' hex in lower case, its letters as they are.
fn lower_hex(text: &str) -> String {
    let upper = percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let mut out = String::new();
    let mut rest = upper.as_str();
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        out.push('%');
        out.push_str(&rest[at + 1..at + 3].to_lowercase());
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

/// Every character of `text` as a JSON `\uXXXX` escape.
fn u_escaped(text: &str, upper: bool) -> String {
    text.chars()
        .map(|c| {
            if upper {
                format!("\\u{:04X}", c as u32)
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect()
}

/// 64 KiB of filler with `authz` laid across the boundary: its first
/// `offset` bytes before it.
fn boundary_body(authz: &str, offset: usize) -> Vec<u8> {
    let mut body = vec![b'.'; BOUNDARY - offset];
    body.extend_from_slice(authz.as_bytes());
    body.extend(std::iter::repeat_n(b'.', 1000));
    body
}

/// A megabyte of text that is not the token.
fn large() -> Vec<u8> {
    let mut state = 0x2545F4914F6CDD1Du64;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/= \n"
                [(state % 67) as usize]
        })
        .collect()
}

fn fnv1a(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    format!("{hash:016x}")
}

/// `bytes` with `authz` overwritten the way the host does.
fn marked(bytes: &[u8], authz: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = bytes
        .windows(authz.len())
        .position(|w| w == authz.as_bytes())
        .unwrap();
    for (i, b) in out[at..at + authz.len()].iter_mut().enumerate() {
        *b = b"REDACTED"[i % 8];
    }
    out
}

/// The echo server: answers each path with its frames, one write each.
async fn echo_server(token: String) -> String {
    let addr = airlock_tests::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let authz = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let (headers, frames) = answer(req.uri().path(), &authz, &token);
        let mut response = hyper::Response::new(Frames::new(frames));
        if req.uri().path() == "/partial" {
            *response.status_mut() = hyper::StatusCode::PARTIAL_CONTENT;
        }
        for (k, v) in headers {
            response.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        std::future::ready(response)
    })
    .await;
    format!("http://{addr}")
}

/// A body that writes each frame on its own poll (so each is its own write).
struct Frames(tokio::sync::mpsc::Receiver<Bytes>);

impl Frames {
    fn new(frames: Vec<Vec<u8>>) -> Frames {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for f in frames {
                if tx.send(Bytes::from(f)).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        Frames(rx)
    }
}

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(|b| Ok(Frame::data(b))))
    }
}

struct Setup {
    runtime: Runtime,
    tool: airlock_runtime::Tool,
    token: String,
    authz: String,
}

async fn setup(echoed: EchoedTokens) -> Setup {
    setup_with(echoed, random_token()).await
}

async fn setup_with(echoed: EchoedTokens, token: String) -> Setup {
    let authz = format!("Bearer {token}");
    let origin = echo_server(token.clone()).await;
    let runtime = Runtime::builder()
        .token_source(Arc::new(Fixed(HeaderValue::from_str(&authz).unwrap())))
        .build()
        .unwrap();
    let policy = OperatorPolicy {
        echoed_tokens: echoed,
        ..airlock_tests::bench::policy_to(&origin)
    };
    let tool = runtime.load(&tool_bytes("hostile"), &policy).unwrap();
    Setup {
        runtime,
        tool,
        token,
        authz,
    }
}

impl Setup {
    async fn call(&self, attack: Value) -> CallReport {
        self.runtime
            .invoke_as(&self.tool, Some(&user("alice")), &attack.to_string())
            .await
    }

    /// Everything the tool returned and logged: never the token, in any form the server used.
    fn assert_clean(&self, report: &CallReport) {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let seen = format!("{:?} {:?}", report.outcome, report.logs);
        let half = &self.token[..self.token.len() / 2 + 4];
        for form in [
            self.token.clone(),
            half.to_string(),
            STANDARD.encode(&self.token)[..16].to_string(),
            URL_SAFE_NO_PAD.encode(&self.token)[..16].to_string(),
            percent_encoding::utf8_percent_encode(&self.token, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ] {
            assert!(!seen.contains(&form), "the tool saw `{form}`: {seen}");
        }
        // The encodings of the whole exchange the server wrote.
        for path in ["base64", "base64-offset", "base64url"] {
            let (_, frames) = answer(path, &self.authz, &self.token);
            let sent = String::from_utf8(frames.concat()).unwrap();
            let sent = sent.trim_start_matches("data=");
            assert!(!seen.contains(sent), "the tool saw the {path} echo");
        }
    }
}

fn redacted(report: &CallReport, place: Place, encoding: Encoding) -> u64 {
    report
        .redactions
        .iter()
        .filter(|r| r.place == place && r.encoding == encoding)
        .map(|r| r.count)
        .sum()
}

fn fetch(path: &str) -> Value {
    json!({"attack": "fetch", "url": format!("https://api.github.com/{path}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_echo_of_the_token_is_overwritten_before_the_tool_reads_it() {
    let s = setup(EchoedTokens::Redact).await;
    let cases = [
        ("body", Place::Body, Encoding::Raw),
        ("header", Place::Header, Encoding::Raw),
        ("base64", Place::Body, Encoding::Base64),
        ("base64-offset", Place::Body, Encoding::Base64),
        ("base64url", Place::Body, Encoding::Base64Url),
        ("percent", Place::Body, Encoding::Percent),
        ("json", Place::Body, Encoding::Raw),
        ("chunks-1", Place::Body, Encoding::Raw),
        ("chunks-7", Place::Body, Encoding::Raw),
    ];
    for (path, place, encoding) in cases {
        let report = s.call(fetch(path)).await;
        let out = report
            .outcome
            .output()
            .unwrap_or_else(|| panic!("{path}: {}", report.outcome));
        assert_eq!(out["results"][0]["status"], 200, "{path}: {out}");
        s.assert_clean(&report);
        // Where both base64 alphabets give the same text, it counts as standard.
        let also = match encoding {
            Encoding::Base64Url => redacted(&report, place, Encoding::Base64),
            _ => 0,
        };
        assert!(
            redacted(&report, place, encoding) + also >= 1,
            "{path}: {:?}",
            report.redactions
        );
        let r = &report.redactions[0];
        assert_eq!(r.host.as_deref(), Some("api.github.com"), "{path}");
        if place == Place::Header {
            assert_eq!(r.header.as_deref(), Some("x-echo"));
            let headers = out["results"][0]["headers"].to_string();
            assert!(headers.contains("x-echo: REDACTED"), "{headers}");
        } else {
            assert!(
                out["results"][0]["body"]
                    .as_str()
                    .unwrap()
                    .contains("REDACTED"),
                "{path}: {out}"
            );
        }
    }
    // The JSON echo stays JSON, its other fields untouched.
    let report = s.call(fetch("json")).await;
    let body: Value = serde_json::from_str(
        report.outcome.unwrap_output()["results"][0]["body"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["headers"]["path"], "/a/b\"c");
    assert!(
        body["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("REDACTED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_split_across_a_64_kib_boundary_at_every_offset_is_caught() {
    let s = setup(EchoedTokens::Redact).await;
    for offset in 0..=s.authz.len() {
        let attack = json!({
            "attack": "window",
            "url": format!("https://api.github.com/boundary-{offset}"),
            "from": BOUNDARY - 64,
            "to": BOUNDARY + 64,
        });
        let report = s.call(attack).await;
        let out = &report.outcome.output().unwrap()["results"][0];
        s.assert_clean(&report);
        // The whole body as the tool read it: the token overwritten, every other byte as sent.
        let expected = marked(&boundary_body(&s.authz, offset), &s.authz);
        assert_eq!(out["length"], expected.len(), "offset {offset}");
        assert_eq!(out["fnv1a"], fnv1a(&expected), "offset {offset}: {out}");
        assert_eq!(
            redacted(&report, Place::Body, Encoding::Raw),
            1,
            "offset {offset}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_without_the_token_passes_byte_for_byte() {
    let s = setup(EchoedTokens::Redact).await;
    let attack =
        json!({"attack": "window", "url": "https://api.github.com/large", "from": 0, "to": 64});
    let report = s.call(attack).await;
    let out = &report.outcome.output().unwrap()["results"][0];
    let sent = large();
    assert_eq!(out["length"], sent.len());
    assert_eq!(out["fnv1a"], fnv1a(&sent));
    assert!(report.redactions.is_empty(), "{:?}", report.redactions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_put_together_from_two_answers_is_caught_at_the_output_and_the_log() {
    // The host's own debug log included: a tool's line reaches it only scanned.
    let logs = airlock_tests::logs::captured();
    let s = setup(EchoedTokens::Redact).await;
    let attack = json!({"attack": "reassemble", "urls": [
        "https://api.github.com/half-1", "https://api.github.com/half-2"
    ]});
    let report = s.call(attack).await;
    s.assert_clean(&report);
    // Neither half is the token: the answers pass as sent.
    assert_eq!(redacted(&report, Place::Body, Encoding::Raw), 0);
    let whole = report.outcome.output().unwrap()["results"][0]["reassembled"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(whole.len(), s.token.len());
    assert!(whole.starts_with("REDACTED"), "{whole}");
    assert_eq!(
        redacted(&report, Place::Output, Encoding::Raw),
        1,
        "{:?}",
        report.redactions
    );
    assert_eq!(
        redacted(&report, Place::Log, Encoding::Raw),
        1,
        "{:?}",
        report.redactions
    );
    assert!(report.logs[0].message.contains("put together: REDACTED"));
    assert!(report.redactions.iter().all(|r| r.host.is_none()));
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("put together: REDACTED"),
        "the tool's line was logged"
    );
    assert!(
        !text.contains(&s.token),
        "the token in the host's debug log"
    );
}

/// The forms a first scan missed: lower-case hex escapes of a mixed-case
/// token, `\uXXXX` JSON escapes, a value split over two header lines, a
/// header named with the token, a coding on a second line, a partial answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rarer_encodings_split_headers_and_partial_answers_are_caught_too() {
    // A token a header name can hold (no `/`), still with `+` and `.` to escape.
    let token = format!("{}+", random_token().replace('/', "+"));
    let s = setup_with(EchoedTokens::Redact, token).await;
    assert!(s.token.chars().any(|c| c.is_ascii_uppercase()), "a mixed-case token");
    for (path, encoding) in [
        ("percent-lower", Encoding::Percent),
        ("json-u", Encoding::Json),
        ("json-u-lower", Encoding::Json),
    ] {
        let report = s.call(fetch(path)).await;
        s.assert_clean(&report);
        assert!(redacted(&report, Place::Body, encoding) >= 1, "{path}: {:?}", report.redactions);
        let (_, frames) = answer(path, &s.authz, &s.token);
        let sent = String::from_utf8(frames.concat()).unwrap();
        let seen = format!("{:?}", report.outcome);
        assert!(!seen.contains(&sent[10..40]), "{path}: the tool saw the echo: {seen}");
    }
    let report = s.call(fetch("split-header")).await;
    s.assert_clean(&report);
    let headers = report.outcome.output().unwrap()["results"][0]["headers"].to_string();
    let half = &s.authz[s.authz.len() / 2..];
    assert!(!headers.contains(half), "{headers}");
    assert!(redacted(&report, Place::Header, Encoding::Raw) >= 1, "{:?}", report.redactions);
    let report = s.call(fetch("header-name")).await;
    let headers = report.outcome.output().unwrap()["results"][0]["headers"].to_string();
    assert!(!headers.to_lowercase().contains(&s.token.to_lowercase()), "{headers}");
    assert!(!report.redactions.is_empty());
    for (path, says) in [("coded-lines", "ContentCoding"), ("partial", "Protocol")] {
        let report = s.call(fetch(path)).await;
        s.assert_clean(&report);
        let error = report.outcome.output().unwrap()["results"][0]["error"].to_string();
        assert!(error.contains(says), "{path}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_answer_is_refused_unread_and_the_fail_policy_ends_the_call() {
    let s = setup(EchoedTokens::Redact).await;
    let report = s.call(fetch("gzip")).await;
    let error = report.outcome.output().unwrap()["results"][0]["error"].to_string();
    assert!(error.contains("ContentCoding"), "{error}");

    let s = setup(EchoedTokens::Fail).await;
    for path in ["body", "header", "chunks-7"] {
        let report = s.call(fetch(path)).await;
        s.assert_clean(&report);
        match &report.outcome {
            CallOutcome::Failed(e @ InvokeError::CredentialEchoed { host }) => {
                assert_eq!(host, "api.github.com");
                assert!(e.to_string().contains("api.github.com"));
            }
            other => panic!("{path}: {other:?}"),
        }
        assert!(!report.redactions.is_empty());
    }
    // An answer without the token is not affected.
    let report = s.call(fetch("nothing-here")).await;
    assert!(report.outcome.output().is_some(), "{:?}", report.outcome);
}
