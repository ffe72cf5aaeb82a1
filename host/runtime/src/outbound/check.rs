//! The pure decision on one outgoing request: may it leave, where does it
//! go, and does it carry a credential. No I/O; table-tested below.

use std::net::IpAddr;

use airlock_policy::{Access, Origin, Permissions, Scheme, is_restricted_ip};
use http::header::{AUTHORIZATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, Method, Uri};

/// What the call knows besides the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) permissions: &'a Permissions,
    /// Requests this call sent before this one.
    pub(crate) sent: u64,
    /// Whether the call runs for a verified user.
    pub(crate) has_user: bool,
    /// Whether the host brokers tokens.
    pub(crate) has_tokens: bool,
}

/// How an allowed request leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Where it is sent: the declared origin, or the operator's route target.
    pub(crate) destination: Origin,
    /// Whether an operator route changed the destination.
    pub(crate) routed: bool,
    /// The OAuth grant (index into the tool's grants) whose token it carries.
    pub(crate) grant: Option<usize>,
}

/// Why a request may not leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeniedError {
    /// By the tool's grants or the call's limits (`HttpRequestDenied`).
    Policy(String),
    /// The destination is a restricted address (`DestinationIpProhibited`).
    Address(String),
}

impl DeniedError {
    pub(crate) fn reason(&self) -> &str {
        match self {
            DeniedError::Policy(r) | DeniedError::Address(r) => r,
        }
    }
}

/// Decide on one request.
pub(crate) fn check(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    cx: Context<'_>,
) -> Result<Plan, DeniedError> {
    let deny = |m: String| Err(DeniedError::Policy(m));
    let p = cx.permissions;
    if cx.sent >= p.limits.max_requests {
        return deny(format!(
            "the call's limit of {} outgoing requests is reached",
            p.limits.max_requests
        ));
    }
    if headers.contains_key(AUTHORIZATION) || headers.contains_key(PROXY_AUTHORIZATION) {
        return deny("tools may not set authorization headers; the host adds credentials".into());
    }
    let Some(scheme) = uri.scheme_str().and_then(Scheme::parse) else {
        return deny(format!(
            "scheme `{}` is not http or https",
            uri.scheme_str().unwrap_or("")
        ));
    };
    let Some(authority) = uri.authority() else {
        return deny("the request has no host".into());
    };
    if authority.as_str().contains('@') {
        return deny("user info in the URL is not allowed".into());
    }
    // No DNS name is longer; a longer one would only be copied into records.
    if authority.host().len() > 253 {
        return deny(format!(
            "a host name of {} bytes is not a DNS name (at most 253)",
            authority.host().len()
        ));
    }
    let origin = Origin::from_authority(scheme, authority.as_str())
        .map_err(|e| DeniedError::Policy(e.to_string()))?;
    let Some(access) = p.grants.access(&origin) else {
        return deny(format!("{origin} is not among the hosts the tool declares"));
    };
    let grant = match access {
        Access::Plain => None,
        Access::OAuth(g) => {
            if !cx.has_tokens {
                return deny(format!(
                    "the tool's oauth grant for provider `{}` needs the identity broker, which this host does not run: with `host run`, give `--user NAME` (the local identity service) or `--identity-endpoint URL` (AgentCore)",
                    g.provider
                ));
            }
            if !cx.has_user {
                return deny(format!(
                    "the tool's oauth grant for provider `{}` needs a signed-in user; this call has none (with `host run`, give `--user NAME`)",
                    g.provider
                ));
            }
            // TRACE echoes the request, token included; CONNECT opens a tunnel.
            if *method == Method::TRACE || *method == Method::CONNECT {
                return deny(format!(
                    "{method} is not allowed on a request that carries a credential"
                ));
            }
            p.grants.oauth.iter().position(|x| std::ptr::eq(x, g))
        }
    };
    let destination = p.destination(&origin);
    if !p.allow_private_addresses
        && let Ok(ip) = destination.host.parse::<IpAddr>()
        && is_restricted_ip(ip)
    {
        return Err(DeniedError::Address(format!(
            "{destination} is a private, loopback, link-local or metadata address"
        )));
    }
    Ok(Plan {
        routed: destination != origin,
        destination,
        grant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_policy::{HostPattern, OperatorPolicy};

    fn permissions(allow_private: bool) -> Permissions {
        let manifest_grants = airlock_policy::Grants {
            hosts: vec![
                HostPattern::parse("https://api.example.com").unwrap(),
                HostPattern::parse("http://plain.example.com:8080").unwrap(),
                HostPattern::parse("http://127.0.0.1:9000").unwrap(),
                HostPattern::parse("http://[::1]:9000").unwrap(),
                HostPattern::parse("https://*.cdn.example.com").unwrap(),
                HostPattern::parse("https://staging.example.com").unwrap(),
            ],
            oauth: vec![airlock_policy::OAuthGrant {
                provider: airlock_policy::ProviderName::parse("github").unwrap(),
                scopes: airlock_policy::Scopes::parse(["repo"]).unwrap(),
                hosts: vec![HostPattern::parse("https://api.github.com").unwrap()],
            }],
        };
        let mut policy = OperatorPolicy::permissive();
        policy.allow_private_addresses = allow_private;
        policy.routes.push(airlock_policy::Route {
            from: HostPattern::parse("https://staging.example.com").unwrap(),
            to: HostPattern::parse("https://10.0.0.7").unwrap(),
        });
        policy
            .permissions("t", &manifest_grants, &Default::default())
            .unwrap()
    }

    /// Allowed with a token, allowed bare, or denied: by policy or by address.
    #[derive(Debug, PartialEq, Eq)]
    enum Want {
        Token,
        Bare,
        Policy(&'static str),
        Address,
    }

    fn decide(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        p: &Permissions,
        sent: u64,
        user: bool,
    ) -> Result<Want, String> {
        let uri: Uri = url.parse().unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let cx = Context {
            permissions: p,
            sent,
            has_user: user,
            has_tokens: true,
        };
        match check(&method.parse().unwrap(), &uri, &map, cx) {
            Ok(plan) if plan.grant.is_some() => Ok(Want::Token),
            Ok(_) => Ok(Want::Bare),
            Err(DeniedError::Address(_)) => Ok(Want::Address),
            Err(DeniedError::Policy(reason)) => Err(reason),
        }
    }

    #[test]
    fn the_outbound_decision_matrix() {
        use Want::*;
        let strict = permissions(false);
        let local = permissions(true);
        // method, URL, headers, permissions, requests sent before, has a user, decision
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a Permissions,
            u64,
            bool,
            Want,
        );
        let cases: &[Case] = &[
            // The declared origins, as declared.
            (
                "GET",
                "https://api.github.com/user",
                &[],
                &strict,
                0,
                true,
                Token,
            ),
            (
                "GET",
                "https://api.example.com/x",
                &[],
                &strict,
                0,
                true,
                Bare,
            ),
            (
                "GET",
                "http://plain.example.com:8080/",
                &[],
                &strict,
                0,
                false,
                Bare,
            ),
            (
                "GET",
                "https://a.cdn.example.com/",
                &[],
                &strict,
                0,
                false,
                Bare,
            ),
            // Upper case is the same host; the token goes along.
            (
                "GET",
                "HTTPS://API.GITHUB.COM/user",
                &[],
                &strict,
                0,
                true,
                Token,
            ),
            // Scheme downgrade, other port, other subdomain depth, suffix tricks.
            (
                "GET",
                "http://api.github.com/user",
                &[],
                &strict,
                0,
                true,
                Policy("not among the hosts"),
            ),
            (
                "GET",
                "https://api.github.com:8443/user",
                &[],
                &strict,
                0,
                true,
                Policy("not among the hosts"),
            ),
            (
                "GET",
                "https://a.b.cdn.example.com/",
                &[],
                &strict,
                0,
                true,
                Policy("not among the hosts"),
            ),
            (
                "GET",
                "https://api.github.com.evil.com/",
                &[],
                &strict,
                0,
                true,
                Policy("not among the hosts"),
            ),
            (
                "GET",
                "https://evilapi.github.com/",
                &[],
                &strict,
                0,
                true,
                Policy("not among the hosts"),
            ),
            // A trailing dot is refused by name, not matched by accident.
            (
                "GET",
                "https://api.github.com./user",
                &[],
                &strict,
                0,
                true,
                Policy("trailing dot"),
            ),
            // User info in the authority.
            (
                "GET",
                "https://user:pw@api.github.com/",
                &[],
                &strict,
                0,
                true,
                Policy("user info"),
            ),
            (
                "GET",
                "https://api.github.com@evil.com/",
                &[],
                &strict,
                0,
                true,
                Policy("user info"),
            ),
            // Guest credentials.
            (
                "GET",
                "https://api.github.com/",
                &[("authorization", "Bearer x")],
                &strict,
                0,
                true,
                Policy("authorization"),
            ),
            (
                "GET",
                "https://api.example.com/",
                &[("proxy-authorization", "Basic x")],
                &strict,
                0,
                true,
                Policy("authorization"),
            ),
            // TRACE and CONNECT never carry a token; bare hosts may TRACE.
            (
                "TRACE",
                "https://api.github.com/",
                &[],
                &strict,
                0,
                true,
                Policy("TRACE"),
            ),
            (
                "CONNECT",
                "https://api.github.com/",
                &[],
                &strict,
                0,
                true,
                Policy("CONNECT"),
            ),
            (
                "TRACE",
                "https://api.example.com/",
                &[],
                &strict,
                0,
                true,
                Bare,
            ),
            // No user, or over the request cap.
            (
                "GET",
                "https://api.github.com/",
                &[],
                &strict,
                0,
                false,
                Policy("signed-in user"),
            ),
            (
                "GET",
                "https://api.example.com/",
                &[],
                &strict,
                16,
                true,
                Policy("limit of 16"),
            ),
            // IP literals in every notation: only dotted quads and bracketed IPv6
            // are addresses; the rest are refused before any lookup.
            (
                "GET",
                "http://127.0.0.1:9000/",
                &[],
                &strict,
                0,
                false,
                Address,
            ),
            ("GET", "http://127.0.0.1:9000/", &[], &local, 0, false, Bare),
            ("GET", "http://[::1]:9000/", &[], &strict, 0, false, Address),
            ("GET", "http://[::1]:9000/", &[], &local, 0, false, Bare),
            (
                "GET",
                "http://2130706433:9000/",
                &[],
                &local,
                0,
                false,
                Policy("another notation"),
            ),
            (
                "GET",
                "http://0x7f.0.0.1:9000/",
                &[],
                &local,
                0,
                false,
                Policy("another notation"),
            ),
            (
                "GET",
                "http://0177.0.0.1:9000/",
                &[],
                &local,
                0,
                false,
                Policy("another notation"),
            ),
            (
                "GET",
                "http://127.1:9000/",
                &[],
                &local,
                0,
                false,
                Policy("another notation"),
            ),
            (
                "GET",
                "http://[::ffff:127.0.0.1]:9000/",
                &[],
                &strict,
                0,
                false,
                Policy("not among the hosts"),
            ),
            (
                "GET",
                "http://[::ffff:7f00:1]:9000/",
                &[],
                &strict,
                0,
                false,
                Policy("not among the hosts"),
            ),
            (
                "GET",
                "http://169.254.169.254/latest/meta-data/",
                &[],
                &strict,
                0,
                false,
                Policy("not among the hosts"),
            ),
            // A route to a private address needs the operator's switch.
            (
                "GET",
                "https://staging.example.com/",
                &[],
                &strict,
                0,
                false,
                Address,
            ),
            (
                "GET",
                "https://staging.example.com/",
                &[],
                &local,
                0,
                false,
                Bare,
            ),
        ];
        for (method, url, headers, p, sent, user, want) in cases {
            match (want, decide(method, url, headers, p, *sent, *user)) {
                // Each denial names what refused it; the table checks a word of it.
                (Policy(word), Err(reason)) => {
                    assert!(
                        reason.contains(word),
                        "{method} {url}: {reason:?} lacks {word:?}"
                    )
                }
                (_, got) => assert_eq!(got.as_ref(), Ok(want), "{method} {url}"),
            }
        }
    }

    #[test]
    fn mapped_ipv6_to_a_private_v4_is_an_address_when_declared() {
        let grants = airlock_policy::Grants {
            hosts: vec![HostPattern::parse("http://[::ffff:a9fe:a9fe]").unwrap()],
            oauth: vec![],
        };
        let p = OperatorPolicy::permissive()
            .permissions("t", &grants, &Default::default())
            .unwrap();
        let uri: Uri = "http://[::ffff:a9fe:a9fe]/latest".parse().unwrap();
        let cx = Context {
            permissions: &p,
            sent: 0,
            has_user: false,
            has_tokens: false,
        };
        assert!(matches!(
            check(&Method::GET, &uri, &HeaderMap::new(), cx),
            Err(DeniedError::Address(r)) if r.contains("metadata")
        ));
    }
}
