//! Host patterns (`https://api.github.com`, `https://*.example.com:8443`) and
//! the address ranges a tool never reaches unless the operator says so.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PolicyError;

/// The schemes a tool may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The port used when none is given.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// Parse `http` or `https`, case-insensitively.
    pub fn parse(s: &str) -> Option<Scheme> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }
}

/// One concrete destination: scheme, lower-case host, port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Scheme.
    pub scheme: Scheme,
    /// Host name or IP literal, lower-case, IPv6 without brackets.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
}

impl Origin {
    /// Build from parts as a request carries them (`authority` may hold a port).
    pub fn from_authority(scheme: Scheme, authority: &str) -> Result<Origin, PolicyError> {
        let (host, port) =
            split_host_port(authority).map_err(|reason| PolicyError::InvalidHost {
                input: authority.to_string(),
                reason: reason.to_string(),
            })?;
        if host.ends_with('.') {
            return Err(PolicyError::InvalidHost {
                input: authority.to_string(),
                reason: "write the host name without its trailing dot".into(),
            });
        }
        if nonstandard_ipv4(host) {
            return Err(PolicyError::InvalidHost {
                input: authority.to_string(),
                reason:
                    "an IPv4 address in another notation than four decimal numbers (e.g. 127.0.0.1)"
                        .into(),
            });
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| PolicyError::InvalidHost {
                input: authority.to_string(),
                reason: "the port is not a number from 0 to 65535".into(),
            })?,
            None => scheme.default_port(),
        };
        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `host:port`, with IPv6 in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

/// A host a tool declares: exact (`api.github.com`) or one wildcard label
/// (`*.googleapis.com`, which matches `www.googleapis.com` but not
/// `googleapis.com` nor `a.b.googleapis.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    scheme: Scheme,
    host: HostMatch,
    port: u16,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostMatch {
    Exact(String),
    /// The suffix after `*.`.
    Subdomain(String),
}

impl HostPattern {
    /// Parse `scheme://host[:port]`. No path, query, user info or bare `*`.
    pub fn parse(input: &str) -> Result<HostPattern, PolicyError> {
        let err = |reason: &str| PolicyError::InvalidHost {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = input
            .split_once("://")
            .ok_or_else(|| err("write it as https://host or http://host:port"))?;
        let scheme =
            Scheme::parse(scheme).ok_or_else(|| err("the scheme must be http or https"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(err(
                "give only scheme, host and port: no path, query or user",
            ));
        }
        let origin = Origin::from_authority(scheme, rest)?;
        let host = if let Some(suffix) = origin.host.strip_prefix("*.") {
            validate_dns_name(suffix).map_err(|r| err(&r.to_string()))?;
            if !suffix.contains('.') {
                return Err(err(
                    "a wildcard needs at least two labels after it, e.g. *.example.com",
                ));
            }
            HostMatch::Subdomain(suffix.to_string())
        } else {
            if origin.host.parse::<IpAddr>().is_err() {
                validate_dns_name(&origin.host).map_err(|r| err(&r.to_string()))?;
            }
            HostMatch::Exact(origin.host.clone())
        };
        let text = match &host {
            HostMatch::Exact(h) => Origin {
                scheme,
                host: h.clone(),
                port: origin.port,
            }
            .to_string(),
            HostMatch::Subdomain(s) => format!("{}://*.{}:{}", scheme.as_str(), s, origin.port),
        };
        Ok(HostPattern {
            scheme,
            host,
            port: origin.port,
            text,
        })
    }

    /// Whether a request to `origin` is covered.
    pub fn matches(&self, origin: &Origin) -> bool {
        if origin.scheme != self.scheme || origin.port != self.port {
            return false;
        }
        match &self.host {
            HostMatch::Exact(h) => *h == origin.host,
            HostMatch::Subdomain(suffix) => origin
                .host
                .strip_suffix(suffix.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The single origin of an exact pattern; `None` for a wildcard.
    pub fn as_origin(&self) -> Option<Origin> {
        match &self.host {
            HostMatch::Exact(h) => Some(Origin {
                scheme: self.scheme,
                host: h.clone(),
                port: self.port,
            }),
            HostMatch::Subdomain(_) => None,
        }
    }

    /// Whether every origin this pattern matches is matched by `other` too.
    pub fn is_within(&self, other: &HostPattern) -> bool {
        if self.scheme != other.scheme || self.port != other.port {
            return false;
        }
        match (&self.host, &other.host) {
            (HostMatch::Exact(h), _) => other.matches(&Origin {
                scheme: self.scheme,
                host: h.clone(),
                port: self.port,
            }),
            (HostMatch::Subdomain(a), HostMatch::Subdomain(b)) => a == b,
            (HostMatch::Subdomain(_), HostMatch::Exact(_)) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HostPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What is wrong with a host or authority; becomes the `reason` of
/// [`PolicyError::InvalidHost`], so the texts are user-facing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum HostPatternError {
    #[error("the host is empty")]
    Empty,
    #[error("an IPv6 literal lacks its `]`")]
    UnclosedIpv6,
    #[error("not an IPv6 address")]
    NotIpv6,
    #[error("junk after `]`")]
    JunkAfterBracket,
    #[error("write an IPv6 address in brackets, e.g. [::1]:8080")]
    UnbracketedIpv6,
    #[error("a host name is 1 to 253 characters")]
    NameLength,
    #[error("`{0}` is not a valid DNS label (a-z, 0-9, inner -)")]
    InvalidLabel(String),
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), HostPatternError> {
    if authority.is_empty() {
        return Err(HostPatternError::Empty);
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(HostPatternError::UnclosedIpv6)?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| HostPatternError::NotIpv6)?;
        return match after {
            "" => Ok((host, None)),
            p => p
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or(HostPatternError::JunkAfterBracket),
        };
    }
    match authority.rsplit_once(':') {
        Some((_, _)) if authority.matches(':').count() > 1 => {
            Err(HostPatternError::UnbracketedIpv6)
        }
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

/// A name whose last label is numeric is an IPv4 address to URL parsers and
/// resolvers (`2130706433`, `0x7f.1`, `127.1`, `0177.0.0.1`). Only the
/// dotted-quad form is accepted, so every check sees the address it is.
fn nonstandard_ipv4(host: &str) -> bool {
    if host.contains(':') || host.parse::<Ipv4Addr>().is_ok() {
        return false;
    }
    let last = host.rsplit('.').next().unwrap_or("");
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    !last.is_empty() && (hex || last.bytes().all(|b| b.is_ascii_digit()))
}

fn validate_dns_name(name: &str) -> Result<(), HostPatternError> {
    if name.is_empty() || name.len() > 253 {
        return Err(HostPatternError::NameLength);
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(HostPatternError::InvalidLabel(label.to_string()));
        }
    }
    Ok(())
}

/// Addresses a tool must not reach without the operator's explicit switch:
/// loopback, private, link-local (169.254.0.0/16 holds the cloud metadata
/// service), carrier-grade NAT, unspecified, multicast, documentation and
/// IPv6 unique-local ranges (fd00:ec2::254 is EC2's IPv6 metadata address).
pub fn is_restricted_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return restricted_v4(v4);
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x64 && seg[1] == 0xff9b) // NAT64 can reach private v4
                // ::/64 holds v4-compatible and SIIT (::ffff:0:a.b.c.d) forms.
                || seg[..4] == [0, 0, 0, 0]
                // Teredo (2001::/32) tunnels to an address it does not show.
                || (seg[0] == 0x2001 && seg[1] == 0)
                // 6to4 (2002::/16) carries the v4 address it reaches.
                || (seg[0] == 0x2002
                    && restricted_v4(Ipv4Addr::new(
                        (seg[1] >> 8) as u8,
                        seg[1] as u8,
                        (seg[2] >> 8) as u8,
                        seg[2] as u8,
                    )))
        }
    }
}

fn restricted_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240 // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Origin {
        let (scheme, rest) = s.split_once("://").unwrap();
        Origin::from_authority(Scheme::parse(scheme).unwrap(), rest).unwrap()
    }

    #[test]
    fn pattern_exact_matches_only_its_origin() {
        let p = HostPattern::parse("https://API.github.com").unwrap();
        assert!(p.matches(&origin("https://api.github.com")));
        assert!(p.matches(&origin("https://api.github.com:443")));
        assert!(!p.matches(&origin("http://api.github.com")));
        assert!(!p.matches(&origin("https://api.github.com:8443")));
        assert!(!p.matches(&origin("https://evil.api.github.com")));
        assert!(!p.matches(&origin("https://api.github.com.evil.com")));
        assert_eq!(p.to_string(), "https://api.github.com:443");
    }

    #[test]
    fn pattern_wildcard_matches_one_label() {
        let p = HostPattern::parse("https://*.example.com").unwrap();
        assert!(p.matches(&origin("https://a.example.com")));
        assert!(!p.matches(&origin("https://example.com")));
        assert!(!p.matches(&origin("https://a.b.example.com")));
        assert!(!p.matches(&origin("https://aexample.com")));
    }

    #[test]
    fn pattern_rejects_paths_bare_wildcards_and_bad_schemes() {
        for bad in [
            "api.github.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://user@x.com",
            "https://*",
            "https://*.com",
            "https://x.com:99999",
            "https://bad_host.com",
            "https://::1",
            "http://2130706433",
            "http://0x7f.0.0.1",
            "http://127.1",
            "http://0177.0.0.1",
            "https://api.github.com.",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn pattern_accepts_ip_literals_and_ports() {
        let p = HostPattern::parse("http://127.0.0.1:8080").unwrap();
        assert!(p.matches(&origin("http://127.0.0.1:8080")));
        let p = HostPattern::parse("http://[::1]:9000").unwrap();
        assert!(p.matches(&origin("http://[::1]:9000")));
    }

    #[test]
    fn pattern_within_compares_coverage() {
        let exact = HostPattern::parse("https://a.example.com").unwrap();
        let wild = HostPattern::parse("https://*.example.com").unwrap();
        assert!(exact.is_within(&wild));
        assert!(!wild.is_within(&exact));
        assert!(wild.is_within(&wild));
    }

    #[test]
    fn restricted_ip_covers_metadata_private_and_loopback() {
        for ip in [
            "169.254.169.254",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "::ffff:0:a9fe:a9fe", // SIIT 169.254.169.254
            "::ffff:0:7f00:1",
            "2002:a9fe:a9fe::1", // 6to4 169.254.169.254
            "2002:0a00:0001::",
            "2001:0:4136:e378::1", // Teredo
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_restricted_ip(ip.parse().unwrap()), "{ip} allowed");
        }
        for ip in [
            "93.184.216.34",
            "140.82.112.5",
            "2606:4700::1111",
            "2002:5db8:d822::1", // 6to4 of a public address
        ] {
            assert!(!is_restricted_ip(ip.parse().unwrap()), "{ip} restricted");
        }
    }
}
