//! The service's settings: a TOML file, with `AIRLOCK_BINDING_*` variables
//! overriding single values (for containers configured by environment).

use std::net::SocketAddr;

use airlock_verify::AlbConfig;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Where the binding page listens (default 0.0.0.0:8080).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The binding page's path: the workload identity's allowed return URL
    /// ends in it (default `/oauth2/session-binding`).
    #[serde(default = "default_path")]
    pub path: String,
    /// Prometheus `/metrics`, on its own listener.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// The ALB whose sign-in the service trusts.
    pub alb: AlbConfig,
    /// The "return to your agent" link on every page (an absolute http(s) URL).
    #[serde(default)]
    pub return_url: Option<String>,
    /// Where a user signed in as the wrong person signs out.
    #[serde(default)]
    pub sign_out_url: Option<String>,
    /// AgentCore Identity: region and endpoint (credentials from the AWS chain).
    #[serde(default)]
    pub identity: IdentityEndpoint,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// Where AgentCore Identity is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityEndpoint {
    /// AWS region (default: from the AWS chain).
    #[serde(default)]
    pub region: Option<String>,
    /// An endpoint other than AWS's (the local identity service).
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

/// Where audit records go: `stdout` (default), a file path, or `off`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `stdout`, `off`, or a file (rotated by size).
    #[serde(default = "default_sink")]
    pub sink: String,
    /// A file sink rotates past this size.
    #[serde(default = "default_rotate")]
    pub rotate_mib: u64,
    /// An OpenSSH ed25519 private key that signs a checkpoint every
    /// `checkpoint_every` records and at shutdown.
    #[serde(default)]
    pub signing_key: Option<std::path::PathBuf>,
    /// Records between signed checkpoints.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    100
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sink: default_sink(),
            rotate_mib: default_rotate(),
            signing_key: None,
            checkpoint_every: default_checkpoint_every(),
        }
    }
}

fn default_listen() -> SocketAddr {
    "0.0.0.0:8080".parse().expect("a valid address")
}
fn default_path() -> String {
    "/oauth2/session-binding".into()
}
fn default_sink() -> String {
    "stdout".into()
}
fn default_rotate() -> u64 {
    64
}

pub use airlock_policy::ConfigError;

/// A mistake in this file.
fn config_error(message: impl Into<String>) -> ConfigError {
    ConfigError::new("binding service", message)
}

impl BindingConfig {
    /// Parse a TOML file's text, then apply `AIRLOCK_BINDING_*` variables.
    pub fn from_toml(text: &str) -> Result<BindingConfig, ConfigError> {
        let mut config: BindingConfig =
            toml::from_str(text).map_err(|e| config_error(e.to_string()))?;
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// The variables alone (no file): `AIRLOCK_BINDING_ALB_ARN`,
    /// `AIRLOCK_BINDING_ALB_KEY_URL` and `AIRLOCK_BINDING_ALB_ISSUER` at least.
    pub fn from_env() -> Result<BindingConfig, ConfigError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<BindingConfig, ConfigError> {
        let mut config: BindingConfig =
            toml::from_str("[alb]\nsigner_arn = \"\"\nkey_url = \"\"\n")
                .map_err(|e| config_error(e.to_string()))?;
        config.apply_env(get)?;
        config.validate()?;
        Ok(config)
    }

    /// Override single values from variables (`get` reads one).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("AIRLOCK_BINDING_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|e| config_error(format!("AIRLOCK_BINDING_LISTEN `{v}`: {e}")))?;
        }
        let set = |target: &mut Option<String>, key: &str| {
            if let Some(v) = get(key) {
                *target = Some(v);
            }
        };
        set(&mut self.return_url, "AIRLOCK_BINDING_RETURN_URL");
        set(&mut self.sign_out_url, "AIRLOCK_BINDING_SIGN_OUT_URL");
        set(&mut self.identity.region, "AWS_REGION");
        set(&mut self.identity.endpoint_url, "AIRLOCK_IDENTITY_ENDPOINT");
        if let Some(v) = get("AIRLOCK_BINDING_ALB_ARN") {
            self.alb.signer_arn = v;
        }
        if let Some(v) = get("AIRLOCK_BINDING_ALB_KEY_URL") {
            self.alb.key_url = v;
        }
        if let Some(v) = get("AIRLOCK_BINDING_ALB_ISSUER") {
            self.alb.issuer = Some(v);
        }
        if let Some(v) = get("AIRLOCK_BINDING_METRICS_LISTEN") {
            self.metrics =
                Some(v.parse().map_err(|e| {
                    config_error(format!("AIRLOCK_BINDING_METRICS_LISTEN `{v}`: {e}"))
                })?);
        }
        if let Some(v) = get("AIRLOCK_AUDIT") {
            self.audit.sink = v;
        }
        if let Some(v) = get("AIRLOCK_AUDIT_SIGNING_KEY") {
            self.audit.signing_key = Some(v.into());
        }
        Ok(())
    }

    /// Check what can be checked before starting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(config_error(m));
        if !self.path.starts_with('/') || self.path.contains(['?', '#']) {
            return err(format!(
                "path `{}` must be a path starting with /",
                self.path
            ));
        }
        if self.alb.signer_arn.is_empty() {
            return err("alb.signer_arn (AIRLOCK_BINDING_ALB_ARN) is empty: name the ALB whose sign-in is trusted".into());
        }
        if !(self.alb.key_url.starts_with("https://") || self.alb.key_url.starts_with("http://")) {
            return err(format!(
                "alb.key_url (AIRLOCK_BINDING_ALB_KEY_URL) `{}` is not an http(s) URL",
                self.alb.key_url
            ));
        }
        for (name, url) in [
            ("return_url", &self.return_url),
            ("sign_out_url", &self.sign_out_url),
        ] {
            if let Some(url) = url {
                let ok = url::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
                if !ok {
                    return err(format!("{name} `{url}` must be an absolute http(s) URL"));
                }
            }
        }
        if self.audit.rotate_mib == 0 {
            return err("audit.rotate_mib must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALB: &str = "[alb]\nsigner_arn = \"arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/a/b\"\nkey_url = \"https://public-keys.auth.elb.us-east-1.amazonaws.com\"\n";

    #[test]
    fn mistakes_are_named() {
        let parse = |extra: &str| {
            let mut c: BindingConfig = toml::from_str(&format!("{extra}\n{ALB}"))?;
            c.apply_env(|_| None).unwrap();
            Ok::<_, toml::de::Error>(c.validate())
        };
        assert!(parse("").unwrap().is_ok());
        let e = parse("path = \"binding\"")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("path `binding`"), "{e}");
        let e = parse("return_url = \"javascript:alert(1)\"")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("return_url"), "{e}");
        assert!(parse("paht = \"/x\"").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_example_config_parses() {
        let mut c: BindingConfig =
            toml::from_str(include_str!("../../examples/binding.toml")).unwrap();
        c.apply_env(|_| None).unwrap();
        c.validate().unwrap();
        assert_eq!(c.path, "/oauth2/session-binding");
    }

    #[test]
    fn variables_alone_configure_it_and_a_missing_one_is_named() {
        let vars = |skip: &'static str| {
            move |k: &str| {
                let v = match k {
                    "AIRLOCK_BINDING_ALB_ARN" => {
                        "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/a/b"
                    }
                    "AIRLOCK_BINDING_ALB_KEY_URL" => {
                        "https://public-keys.auth.elb.us-east-1.amazonaws.com"
                    }
                    "AIRLOCK_BINDING_ALB_ISSUER" => "https://idp.example.com",
                    "AIRLOCK_BINDING_METRICS_LISTEN" => "0.0.0.0:9090",
                    _ => return None,
                };
                (k != skip).then(|| v.to_string())
            }
        };
        let c = BindingConfig::from_vars(vars("")).unwrap();
        assert_eq!(c.alb.issuer.as_deref(), Some("https://idp.example.com"));
        assert_eq!(c.metrics.map(|m| m.port()), Some(9090));
        let e = BindingConfig::from_vars(vars("AIRLOCK_BINDING_ALB_ARN")).unwrap_err();
        assert!(e.to_string().contains("AIRLOCK_BINDING_ALB_ARN"), "{e}");
        let e = BindingConfig::from_vars(vars("AIRLOCK_BINDING_ALB_KEY_URL")).unwrap_err();
        assert!(e.to_string().contains("AIRLOCK_BINDING_ALB_KEY_URL"), "{e}");
    }

    #[test]
    fn variables_override_the_file() {
        let mut c: BindingConfig = toml::from_str(ALB).unwrap();
        c.apply_env(|k| match k {
            "AIRLOCK_BINDING_LISTEN" => Some("127.0.0.1:9".into()),
            "AIRLOCK_BINDING_RETURN_URL" => Some("https://agent.example.com/".into()),
            "AIRLOCK_AUDIT" => Some("off".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.return_url.as_deref(), Some("https://agent.example.com/"));
        assert_eq!(c.audit.sink, "off");
        let e = c
            .apply_env(|k| (k == "AIRLOCK_BINDING_LISTEN").then(|| "nowhere".into()))
            .unwrap_err();
        assert!(e.to_string().contains("AIRLOCK_BINDING_LISTEN"));
    }
}
