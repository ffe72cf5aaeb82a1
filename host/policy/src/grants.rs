//! What a tool asks for: plain hosts, and OAuth grants (provider, scopes, and
//! the hosts the token is for).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{HostPattern, Origin, PolicyError, Scheme};

/// A credential provider's name, as configured in the identity service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ProviderName(String);

impl ProviderName {
    /// Validate `[A-Za-z0-9_-]{1,128}` (AgentCore's rule).
    pub fn parse(s: &str) -> Result<ProviderName, PolicyError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(ProviderName(s.to_string()))
        } else {
            Err(PolicyError::InvalidProvider(s.to_string()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProviderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ProviderName::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A set of OAuth scopes, kept sorted so that equal sets compare and print alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Validate each scope: non-empty, no whitespace, no control characters.
    pub fn parse<I: IntoIterator<Item = S>, S: AsRef<str>>(
        scopes: I,
    ) -> Result<Scopes, PolicyError> {
        let mut set = BTreeSet::new();
        for s in scopes {
            let s = s.as_ref();
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(PolicyError::InvalidScope(s.to_string()));
            }
            set.insert(s.to_string());
        }
        Ok(Scopes(set))
    }

    /// Whether every scope here is in `other`.
    pub fn is_subset(&self, other: &Scopes) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes here that are not in `other`.
    pub fn difference(&self, other: &Scopes) -> Vec<String> {
        self.0.difference(&other.0).cloned().collect()
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Scopes::parse(Vec::<String>::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One OAuth grant: the host adds the user's token from `provider`, limited to
/// `scopes`, to requests for `hosts`, and to no other request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthGrant {
    /// The credential provider, e.g. `github`.
    pub provider: ProviderName,
    /// The smallest scopes that suffice, e.g. `["repo"]`.
    pub scopes: Scopes,
    /// The API hosts the token is for, e.g. `["https://api.github.com"]`.
    pub hosts: Vec<HostPattern>,
}

/// Everything a tool may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Hosts the tool may call without credentials.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// OAuth grants.
    #[serde(default)]
    pub oauth: Vec<OAuthGrant>,
}

/// How a request to an origin may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// As the tool wrote it, with no credential added.
    Plain,
    /// With the user's token for this grant.
    OAuth(&'a OAuthGrant),
}

impl Grants {
    /// Check the grants hang together: every OAuth grant names hosts, only
    /// https ones, and no host is covered by two grants (of one provider or two).
    pub fn validate(&self) -> Result<(), PolicyError> {
        for g in &self.oauth {
            if g.hosts.is_empty() {
                return Err(PolicyError::GrantWithoutHosts(g.provider.to_string()));
            }
            if let Some(h) = g.hosts.iter().find(|h| h.scheme() != Scheme::Https) {
                return Err(PolicyError::CleartextGrant {
                    provider: g.provider.to_string(),
                    host: h.to_string(),
                });
            }
        }
        for (i, a) in self.oauth.iter().enumerate() {
            for b in &self.oauth[i + 1..] {
                for ha in &a.hosts {
                    let Some(hb) = b
                        .hosts
                        .iter()
                        .find(|hb| ha.is_within(hb) || hb.is_within(ha))
                    else {
                        continue;
                    };
                    let host = if ha.is_within(hb) { ha } else { hb }.to_string();
                    return Err(if a.provider == b.provider {
                        PolicyError::OverlappingGrants {
                            provider: a.provider.to_string(),
                            host,
                        }
                    } else {
                        PolicyError::AmbiguousGrant {
                            host,
                            first: a.provider.to_string(),
                            second: b.provider.to_string(),
                        }
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether the tool declares any host at all (and so needs `wasi:http`).
    pub fn has_hosts(&self) -> bool {
        !self.hosts.is_empty() || self.oauth.iter().any(|g| !g.hosts.is_empty())
    }

    /// How a request to `origin` may go out, or `None` to deny it. An OAuth
    /// grant wins over a plain host, so a token host is never called bare by
    /// mistake of declaration order.
    pub fn access(&self, origin: &Origin) -> Option<Access<'_>> {
        if let Some(g) = self
            .oauth
            .iter()
            .find(|g| g.hosts.iter().any(|h| h.matches(origin)))
        {
            return Some(Access::OAuth(g));
        }
        self.hosts
            .iter()
            .any(|h| h.matches(origin))
            .then_some(Access::Plain)
    }

    /// Every host pattern, OAuth ones included.
    pub fn all_hosts(&self) -> impl Iterator<Item = &HostPattern> {
        self.hosts
            .iter()
            .chain(self.oauth.iter().flat_map(|g| g.hosts.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(provider: &str, scopes: &[&str], hosts: &[&str]) -> OAuthGrant {
        OAuthGrant {
            provider: ProviderName::parse(provider).unwrap(),
            scopes: Scopes::parse(scopes).unwrap(),
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
        }
    }

    fn origin(host: &str) -> Origin {
        Origin::from_authority(Scheme::Https, host).unwrap()
    }

    #[test]
    fn validate_refuses_cleartext_grants() {
        let cleartext = Grants {
            hosts: vec![],
            oauth: vec![grant("github", &["repo"], &["http://api.github.com"])],
        };
        let e = cleartext.validate().unwrap_err();
        assert!(matches!(e, PolicyError::CleartextGrant { .. }), "{e}");
        assert!(e.to_string().contains("https"), "{e}");
    }

    #[test]
    fn validate_refuses_two_grants_of_one_provider_on_one_host() {
        let twice = Grants {
            hosts: vec![],
            oauth: vec![
                grant("github", &["repo"], &["https://api.github.com"]),
                grant("github", &["admin:org"], &["https://*.github.com"]),
            ],
        };
        let e = twice.validate().unwrap_err();
        assert!(
            matches!(&e, PolicyError::OverlappingGrants { provider, .. } if provider == "github"),
            "{e}"
        );
        assert!(e.to_string().contains("merge them"), "{e}");
    }

    #[test]
    fn scopes_subset_and_difference() {
        let small = Scopes::parse(["repo"]).unwrap();
        let big = Scopes::parse(["repo", "read:user"]).unwrap();
        assert!(small.is_subset(&big));
        assert!(!big.is_subset(&small));
        assert_eq!(big.difference(&small), vec!["read:user".to_string()]);
        assert_eq!(
            Scopes::parse(["b", "a", "b"])
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn scopes_reject_blank_spaces_and_control_characters() {
        assert!(Scopes::parse([""]).is_err());
        assert!(Scopes::parse(["repo user"]).is_err());
        assert!(Scopes::parse(["repo\0admin"]).is_err());
        assert!(Scopes::parse(["repo\u{7f}"]).is_err());
    }

    #[test]
    fn provider_names_follow_agentcore_rule() {
        assert!(ProviderName::parse("github-oauth_2").is_ok());
        assert!(ProviderName::parse("").is_err());
        assert!(ProviderName::parse("git hub").is_err());
        assert!(ProviderName::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn access_prefers_oauth_and_denies_undeclared() {
        let grants = Grants {
            hosts: vec![
                HostPattern::parse("https://api.github.com").unwrap(),
                HostPattern::parse("https://cdn.example.com").unwrap(),
            ],
            oauth: vec![grant("github", &["repo"], &["https://api.github.com"])],
        };
        assert!(
            matches!(grants.access(&origin("api.github.com")), Some(Access::OAuth(g)) if g.provider.as_str() == "github")
        );
        assert_eq!(
            grants.access(&origin("cdn.example.com")),
            Some(Access::Plain)
        );
        assert_eq!(grants.access(&origin("evil.com")), None);
    }

    #[test]
    fn validate_refuses_hostless_and_overlapping_grants() {
        let hostless = Grants {
            hosts: vec![],
            oauth: vec![grant("github", &["repo"], &[])],
        };
        assert_eq!(
            hostless.validate(),
            Err(PolicyError::GrantWithoutHosts("github".into()))
        );
        let overlap = Grants {
            hosts: vec![],
            oauth: vec![
                grant("google", &["a"], &["https://*.googleapis.com"]),
                grant("other", &["b"], &["https://www.googleapis.com"]),
            ],
        };
        assert!(matches!(
            overlap.validate(),
            Err(PolicyError::AmbiguousGrant { .. })
        ));
    }
}
