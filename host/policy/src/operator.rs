//! The operator's policy, and the effective permissions of a tool under it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Grants, HostPattern, Limits, LimitsRequest, Origin, PolicyError, ProviderName, Scopes,
};

/// What the operator allows, read from a TOML file (`--policy`).
///
/// ```toml
/// allow_private_addresses = false
/// allowed_hosts = ["https://api.github.com", "https://*.googleapis.com"]
/// [limits]
/// timeout_ms = 10000
/// [providers.github]
/// scopes = ["repo", "read:user"]
/// [[routes]]
/// from = "https://api.github.com"
/// to = "http://127.0.0.1:8081"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorPolicy {
    /// Let tools reach loopback, private, link-local and metadata addresses.
    /// Off by default; local tests against 127.0.0.1 turn it on by name.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// When set, a tool may declare only hosts within these patterns.
    #[serde(default)]
    pub allowed_hosts: Option<Vec<HostPattern>>,
    /// When set, the only providers tools may use, each with its scope ceiling.
    #[serde(default)]
    pub providers: Option<BTreeMap<ProviderName, ProviderPolicy>>,
    /// Ceilings of each call, and the values a tool gets when it asks nothing.
    #[serde(default)]
    pub limits: Limits,
    /// Send requests for one origin to another (a staging or test server).
    /// Checked after the tool's grants, so a route never widens them.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// The scopes the operator allows for one provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPolicy {
    /// The most a tool may ask for.
    pub scopes: Scopes,
}

/// Requests for origin `from` go to `to` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The origin tools declare and call.
    pub from: HostPattern,
    /// Where such requests are sent.
    pub to: HostPattern,
}

/// A tool's permissions under a policy: its grants (checked against the
/// policy), its limits, and how its requests leave the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// The grants, each within the policy.
    pub grants: Grants,
    /// The limits of each call.
    pub limits: Limits,
    /// Whether restricted addresses may be reached.
    pub allow_private_addresses: bool,
    /// The operator's routes.
    pub routes: Vec<Route>,
}

impl OperatorPolicy {
    /// Parse from TOML and validate.
    pub fn from_toml(text: &str) -> Result<OperatorPolicy, String> {
        let policy: OperatorPolicy = toml::from_str(text).map_err(|e| e.to_string())?;
        policy.validate()?;
        Ok(policy)
    }

    /// Check the limits and that each route leads to one origin.
    pub fn validate(&self) -> Result<(), String> {
        self.limits.validate().map_err(|e| e.to_string())?;
        if let Some(r) = self.routes.iter().find(|r| r.to.as_origin().is_none()) {
            return Err(format!(
                "route to `{}`: a route's `to` must be one origin, not a wildcard",
                r.to
            ));
        }
        Ok(())
    }

    /// Check a tool's grants and limits against this policy. The error names
    /// the first provider, scope or host the policy does not allow.
    pub fn effective(
        &self,
        tool: &str,
        grants: &Grants,
        limits: &LimitsRequest,
    ) -> Result<Effective, PolicyError> {
        grants.validate()?;
        if let Some(providers) = &self.providers {
            for g in &grants.oauth {
                let allowed =
                    providers
                        .get(&g.provider)
                        .ok_or_else(|| PolicyError::ProviderNotAllowed {
                            tool: tool.to_string(),
                            provider: g.provider.to_string(),
                        })?;
                if !g.scopes.is_subset(&allowed.scopes) {
                    return Err(PolicyError::ScopesNotAllowed {
                        tool: tool.to_string(),
                        provider: g.provider.to_string(),
                        denied: g.scopes.difference(&allowed.scopes),
                        allowed: allowed.scopes.iter().map(str::to_string).collect(),
                    });
                }
            }
        }
        if let Some(allowed) = &self.allowed_hosts
            && let Some(h) = grants
                .all_hosts()
                .find(|h| !allowed.iter().any(|a| h.is_within(a)))
        {
            return Err(PolicyError::HostNotAllowed {
                tool: tool.to_string(),
                host: h.to_string(),
            });
        }
        Ok(Effective {
            grants: grants.clone(),
            limits: self.limits.apply(limits)?,
            allow_private_addresses: self.allow_private_addresses,
            routes: self.routes.clone(),
        })
    }
}

impl Effective {
    /// Where a request for `origin` is sent: the route's target, or itself.
    pub fn destination(&self, origin: &Origin) -> Origin {
        for r in &self.routes {
            if r.from.matches(origin)
                && let Some(to) = r.to.as_origin()
            {
                return to;
            }
        }
        origin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OAuthGrant;

    fn grants(provider: &str, scopes: &[&str], host: &str) -> Grants {
        Grants {
            hosts: vec![],
            oauth: vec![OAuthGrant {
                provider: ProviderName::parse(provider).unwrap(),
                scopes: Scopes::parse(scopes).unwrap(),
                hosts: vec![HostPattern::parse(host).unwrap()],
            }],
        }
    }

    fn strict() -> OperatorPolicy {
        let mut providers = BTreeMap::new();
        providers.insert(
            ProviderName::parse("github").unwrap(),
            ProviderPolicy {
                scopes: Scopes::parse(["repo", "read:user"]).unwrap(),
            },
        );
        OperatorPolicy {
            providers: Some(providers),
            allowed_hosts: Some(vec![HostPattern::parse("https://*.github.com").unwrap()]),
            ..Default::default()
        }
    }

    #[test]
    fn effective_accepts_grants_within_policy() {
        let e = strict().effective(
            "t",
            &grants("github", &["repo"], "https://api.github.com"),
            &Default::default(),
        );
        assert!(e.is_ok(), "{e:?}");
    }

    #[test]
    fn effective_refuses_scope_beyond_policy_naming_it() {
        let err = strict()
            .effective(
                "t",
                &grants("github", &["repo", "admin:org"], "https://api.github.com"),
                &Default::default(),
            )
            .unwrap_err();
        assert!(
            matches!(&err, PolicyError::ScopesNotAllowed { denied, .. } if denied == &["admin:org".to_string()])
        );
        assert!(err.to_string().contains("admin:org"));
    }

    #[test]
    fn effective_refuses_unknown_provider_and_host() {
        let err = strict().effective(
            "t",
            &grants("google", &["x"], "https://api.github.com"),
            &Default::default(),
        );
        assert!(matches!(err, Err(PolicyError::ProviderNotAllowed { .. })));
        let err = strict().effective(
            "t",
            &grants("github", &["repo"], "https://evil.com"),
            &Default::default(),
        );
        assert!(
            matches!(err, Err(PolicyError::HostNotAllowed { host, .. }) if host.contains("evil.com"))
        );
    }

    #[test]
    fn from_toml_reads_and_rejects_unknown_fields() {
        let p = OperatorPolicy::from_toml(
            "allow_private_addresses = true\n[providers.github]\nscopes = [\"repo\"]\n[limits]\ntimeout_ms = 500\n",
        )
        .unwrap();
        assert!(p.allow_private_addresses);
        assert_eq!(p.limits.timeout_ms, 500);
        assert_eq!(p.limits.memory_mib, Limits::default().memory_mib);
        let err = OperatorPolicy::from_toml("allow_private = true").unwrap_err();
        assert!(err.contains("allow_private"), "{err}");
    }

    #[test]
    fn validate_refuses_wildcard_route_target() {
        let err = OperatorPolicy::from_toml(
            "[[routes]]\nfrom = \"https://a.example.com\"\nto = \"https://*.example.com\"\n",
        )
        .unwrap_err();
        assert!(err.contains("must be one origin"), "{err}");
    }

    #[test]
    fn destination_follows_routes() {
        let mut p = OperatorPolicy::default();
        p.routes.push(Route {
            from: HostPattern::parse("https://api.github.com").unwrap(),
            to: HostPattern::parse("http://127.0.0.1:9999").unwrap(),
        });
        let e = p
            .effective("t", &Grants::default(), &Default::default())
            .unwrap();
        let o = Origin::from_authority(crate::Scheme::Https, "api.github.com").unwrap();
        assert_eq!(e.destination(&o).to_string(), "http://127.0.0.1:9999");
        let other = Origin::from_authority(crate::Scheme::Https, "example.com").unwrap();
        assert_eq!(e.destination(&other), other);
    }
}
