//! The operator's policy, and the permissions of a tool under it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Grants, HostPattern, Limits, LimitsRequest, Origin, PolicyError, ProviderName, Scheme, Scopes,
};

/// The policy setting that lets a route send https requests over plain http.
pub const DOWNGRADE_SETTING: &str = "dangerously_allow_https_to_http_routes";

/// What the operator allows, read from a TOML file (`--policy`). Denies by
/// default: a tool may declare only hosts within `allowed_hosts` and only the
/// providers and scopes under `[providers]`.
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
/// to = "https://github-staging.internal.example.com"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorPolicy {
    /// Let tools reach loopback, private, link-local and metadata addresses.
    /// Off by default; local tests against 127.0.0.1 turn it on by name.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// The hosts tools may declare (patterns; a declared host must fall within one).
    #[serde(default)]
    pub allowed_hosts: Vec<HostPattern>,
    /// Let tools declare any host (local development: `host run` without a policy file).
    #[serde(default)]
    pub allow_any_host: bool,
    /// The providers tools may use, each with its scope ceiling.
    #[serde(default)]
    pub providers: BTreeMap<ProviderName, ProviderPolicy>,
    /// Let tools use any provider and scopes (local development).
    #[serde(default)]
    pub allow_any_provider: bool,
    /// Ceilings of each call, and the values a tool gets when it asks nothing.
    #[serde(default)]
    pub limits: Limits,
    /// Send requests for one origin to another (a staging or test server).
    /// Checked after the tool's grants, so a route never widens them.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Let a route send an https origin to plain http, tokens included.
    /// Only for tests against local stand-ins.
    #[serde(default)]
    pub dangerously_allow_https_to_http_routes: bool,
    /// When an upstream echoes the credential the host sent: redact it and
    /// go on (default), or end the call naming the host.
    #[serde(default)]
    pub echoed_tokens: EchoedTokens,
}

/// What happens when a response echoes the credential its request carried.
/// Either way the guest never reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EchoedTokens {
    /// Overwrite each occurrence and let the tool go on.
    #[default]
    Redact,
    /// Overwrite, then end the call with an error naming the host.
    Fail,
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
pub struct Permissions {
    /// The grants, each within the policy.
    pub grants: Grants,
    /// The limits of each call.
    pub limits: Limits,
    /// Whether restricted addresses may be reached.
    pub allow_private_addresses: bool,
    /// The operator's routes.
    pub routes: Vec<Route>,
    /// When a response echoes the credential.
    pub echoed_tokens: EchoedTokens,
}

impl OperatorPolicy {
    /// Everything a tool declares is allowed; private addresses stay refused
    /// and the default limits apply. For local runs without a policy file.
    pub fn permissive() -> OperatorPolicy {
        OperatorPolicy {
            allow_any_host: true,
            allow_any_provider: true,
            ..OperatorPolicy::default()
        }
    }

    /// Parse from TOML and validate.
    pub fn from_toml(text: &str) -> Result<OperatorPolicy, PolicyError> {
        let policy: OperatorPolicy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Check the limits, that each route leads to one origin, and that no
    /// route downgrades https unless the operator said so by name.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.limits.validate()?;
        for r in &self.routes {
            if r.to.as_origin().is_none() {
                return Err(PolicyError::WildcardRoute(r.to.to_string()));
            }
            if r.from.scheme() == Scheme::Https
                && r.to.scheme() == Scheme::Http
                && !self.dangerously_allow_https_to_http_routes
            {
                return Err(PolicyError::DowngradingRoute {
                    from: r.from.to_string(),
                    to: r.to.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Check a tool's grants and limits against this policy. The error names
    /// the first provider, scope or host the policy does not allow, and the
    /// setting that would allow it.
    pub fn permissions(
        &self,
        tool: &str,
        grants: &Grants,
        limits: &LimitsRequest,
    ) -> Result<Permissions, PolicyError> {
        self.validate()?;
        grants.validate()?;
        if !self.allow_any_provider {
            for g in &grants.oauth {
                let allowed = self.providers.get(&g.provider).ok_or_else(|| {
                    PolicyError::ProviderNotAllowed {
                        tool: tool.to_string(),
                        provider: g.provider.to_string(),
                    }
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
        if !self.allow_any_host
            && let Some(h) = grants
                .all_hosts()
                .find(|h| !self.allowed_hosts.iter().any(|a| h.is_within(a)))
        {
            return Err(PolicyError::HostNotAllowed {
                tool: tool.to_string(),
                host: h.to_string(),
            });
        }
        Ok(Permissions {
            grants: grants.clone(),
            limits: self.limits.apply(limits)?,
            allow_private_addresses: self.allow_private_addresses,
            routes: self.routes.clone(),
            echoed_tokens: self.echoed_tokens,
        })
    }
}

impl Permissions {
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
            providers,
            allowed_hosts: vec![HostPattern::parse("https://*.github.com").unwrap()],
            ..Default::default()
        }
    }

    #[test]
    fn permissions_accepts_grants_within_policy() {
        let e = strict().permissions(
            "t",
            &grants("github", &["repo"], "https://api.github.com"),
            &Default::default(),
        );
        assert!(e.is_ok(), "{e:?}");
    }

    #[test]
    fn permissions_refuses_scope_beyond_policy_naming_it() {
        let err = strict()
            .permissions(
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
    fn permissions_refuses_unknown_provider_and_host() {
        let err = strict().permissions(
            "t",
            &grants("google", &["x"], "https://api.github.com"),
            &Default::default(),
        );
        assert!(matches!(err, Err(PolicyError::ProviderNotAllowed { .. })));
        let err = strict().permissions(
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
        assert!(err.to_string().contains("allow_private"), "{err}");
    }

    #[test]
    fn validate_refuses_wildcard_route_target() {
        let err = OperatorPolicy::from_toml(
            "[[routes]]\nfrom = \"https://a.example.com\"\nto = \"https://*.example.com\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be one origin"), "{err}");
    }

    #[test]
    fn the_default_policy_denies_hosts_and_providers_naming_the_setting() {
        let e = OperatorPolicy::default()
            .permissions(
                "t",
                &grants("github", &["repo"], "https://api.github.com"),
                &Default::default(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("[providers.github]"), "{e}");
        let plain = Grants {
            hosts: vec![HostPattern::parse("https://api.example.com").unwrap()],
            oauth: vec![],
        };
        let e = OperatorPolicy::default()
            .permissions("t", &plain, &Default::default())
            .unwrap_err();
        assert!(
            matches!(&e, PolicyError::HostNotAllowed { .. })
                && e.to_string().contains("allowed_hosts"),
            "{e}"
        );
        // A tool without hosts or grants needs nothing from the policy.
        assert!(
            OperatorPolicy::default()
                .permissions("t", &Grants::default(), &Default::default())
                .is_ok()
        );
        // Local runs opt in to everything but private addresses.
        let local = OperatorPolicy::permissive();
        assert!(local.permissions("t", &plain, &Default::default()).is_ok());
        assert!(!local.allow_private_addresses);
    }

    #[test]
    fn a_downgrading_route_needs_the_loud_setting() {
        let text =
            "[[routes]]\nfrom = \"https://api.github.com\"\nto = \"http://127.0.0.1:9999\"\n";
        let e = OperatorPolicy::from_toml(text).unwrap_err();
        assert!(
            matches!(e, PolicyError::DowngradingRoute { .. })
                && e.to_string().contains(DOWNGRADE_SETTING),
            "{e}"
        );
        // A policy built in code is checked too, when a tool is loaded under it.
        let mut p = OperatorPolicy::permissive();
        p.routes = OperatorPolicy {
            dangerously_allow_https_to_http_routes: true,
            ..OperatorPolicy::from_toml(&format!("{DOWNGRADE_SETTING} = true\n{text}")).unwrap()
        }
        .routes;
        assert!(matches!(
            p.permissions("t", &Grants::default(), &Default::default()),
            Err(PolicyError::DowngradingRoute { .. })
        ));
        // https to https elsewhere, and http to http, need nothing.
        assert!(
            OperatorPolicy::from_toml(
                "[[routes]]\nfrom = \"https://a.example.com\"\nto = \"https://b.example.com\"\n[[routes]]\nfrom = \"http://c.example.com\"\nto = \"http://127.0.0.1:1\"\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn destination_follows_routes() {
        let mut p = OperatorPolicy::permissive();
        p.dangerously_allow_https_to_http_routes = true;
        p.routes.push(Route {
            from: HostPattern::parse("https://api.github.com").unwrap(),
            to: HostPattern::parse("http://127.0.0.1:9999").unwrap(),
        });
        let e = p
            .permissions("t", &Grants::default(), &Default::default())
            .unwrap();
        let o = Origin::from_authority(crate::Scheme::Https, "api.github.com").unwrap();
        assert_eq!(e.destination(&o).to_string(), "http://127.0.0.1:9999");
        let other = Origin::from_authority(crate::Scheme::Https, "example.com").unwrap();
        assert_eq!(e.destination(&other), other);
    }
}
