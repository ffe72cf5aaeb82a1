//! The setup the broker's measurements share (criterion bench and the
//! callgrind example): the hostile fixture's `fetch` to an OAuth-covered host
//! and to a plain host, both routed to one server that answers `[]`.

use airlock_policy::{HostPattern, OperatorPolicy, Route};

/// A fetch to the host the fixture's OAuth grant covers.
pub const BROKERED: &str = r#"{"attack": "fetch", "url": "https://api.github.com/issues"}"#;
/// The same fetch to a plain host.
pub const PLAIN: &str = r#"{"attack": "fetch", "url": "https://api.example.com/issues"}"#;

/// Start a server on 127.0.0.1 that answers every request with `[]`; its origin.
pub async fn answering_server() -> String {
    let addr = crate::serve_http(|_req| {
        std::future::ready(hyper::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"[]"),
        )))
    })
    .await;
    format!("http://{addr}")
}

/// A policy sending both hosts to `origin`.
pub fn policy_to(origin: &str) -> OperatorPolicy {
    let route = |from: &str| Route {
        from: HostPattern::parse(from).unwrap(),
        to: HostPattern::parse(origin).unwrap(),
    };
    OperatorPolicy {
        allow_private_addresses: true,
        dangerously_allow_https_to_http_routes: true,
        routes: vec![
            route("https://api.github.com"),
            route("https://api.example.com"),
        ],
        ..OperatorPolicy::permissive()
    }
}

/// text-stats (or any tool `host build` made) under another name: the same
/// code, another tool.
pub fn renamed(original: &[u8], name: &str) -> Vec<u8> {
    let manifest = airlock_manifest::inspect(original).unwrap().manifest;
    // `host build` appends the manifest as the last section: cut it off.
    let data = manifest.to_json();
    let body = 1 + airlock_manifest::SECTION.len() + data.len();
    let header = 1 + leb_len(body);
    let component = &original[..original.len() - header - body];
    assert_eq!(
        airlock_manifest::embed(component, &manifest).unwrap(),
        original,
        "the manifest is not the last section"
    );
    let mut manifest = manifest;
    manifest.name = name.to_string();
    airlock_manifest::embed(component, &manifest).unwrap()
}

fn leb_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}
