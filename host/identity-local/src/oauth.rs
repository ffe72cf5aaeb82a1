//! The service's side of OAuth2: endpoints (preset, explicit or discovered,
//! each checked before use), the code exchange with PKCE, refresh, and client
//! credentials.

use airlock_identity::Secret;
use airlock_verify::{Discovery, fetch_json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::config::{ProviderConfig, TokenAuth, Vendor};

/// A provider's endpoints once resolved, each an http(s) URL with a host.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) authorization: url::Url,
    pub(crate) token: url::Url,
    /// For checking the `iss` callback parameter (RFC 9207), when known.
    pub(crate) issuer: Option<String>,
}

/// What the provider's token endpoint answered.
pub(crate) struct Tokens {
    pub(crate) access: Secret,
    pub(crate) refresh: Option<Secret>,
    pub(crate) expires_in: Option<i64>,
    pub(crate) scope: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Why the provider did not give a token. `error` is the OAuth error code.
#[derive(Debug)]
pub(crate) struct OAuthFailure {
    pub(crate) error: String,
    pub(crate) description: String,
}

impl std::fmt::Display for OAuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if !self.description.is_empty() {
            write!(f, " ({})", self.description)?;
        }
        Ok(())
    }
}

/// One configured provider, with its endpoints resolved on first use.
pub(crate) struct Provider {
    pub(crate) config: ProviderConfig,
    endpoints: OnceCell<Endpoints>,
}

pub(crate) fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source");
    URL_SAFE_NO_PAD.encode(buf)
}

impl Provider {
    pub(crate) fn new(config: ProviderConfig) -> Provider {
        Provider {
            config,
            endpoints: OnceCell::new(),
        }
    }

    pub(crate) async fn endpoints(
        &self,
        http: &reqwest::Client,
    ) -> Result<&Endpoints, OAuthFailure> {
        self.endpoints
            .get_or_try_init(|| async {
                let c = &self.config;
                let (mut authorization, mut token, mut issuer) = preset(c.vendor);
                if let Some(url) = &c.discovery_url {
                    let d: Discovery = fetch_json(http, url).await.map_err(|e| OAuthFailure {
                        error: "discovery".into(),
                        description: e.to_string(),
                    })?;
                    authorization = d.authorization_endpoint.or(authorization);
                    token = d.token_endpoint.or(token);
                    issuer = d.issuer.or(issuer);
                }
                if let Some(a) = &c.authorization_endpoint {
                    authorization = Some(a.clone());
                }
                if let Some(t) = &c.token_endpoint {
                    token = Some(t.clone());
                }
                let endpoint = |field: &str, value: Option<String>| {
                    let value = value.ok_or_else(|| OAuthFailure {
                        error: "configuration".into(),
                        description: format!("provider `{}` has no {field}", c.name),
                    })?;
                    endpoint_url(&value).map_err(|reason| OAuthFailure {
                        error: "configuration".into(),
                        description: format!(
                            "provider `{}`: {field} `{}` {reason}",
                            c.name,
                            value.chars().take(200).collect::<String>()
                        ),
                    })
                };
                Ok(Endpoints {
                    authorization: endpoint("authorization_endpoint", authorization)?,
                    token: endpoint("token_endpoint", token)?,
                    issuer,
                })
            })
            .await
    }

    /// The authorization request URL.
    pub(crate) fn authorization_url(
        &self,
        endpoints: &Endpoints,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
        verifier: &Secret,
        force: bool,
    ) -> String {
        let mut url = endpoints.authorization.clone();
        let mut all: Vec<&str> = scopes.iter().map(String::as_str).collect();
        for s in &self.config.extra_scopes {
            if !all.contains(&s.as_str()) {
                all.push(s);
            }
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &all.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", &pkce_challenge(verifier.expose()))
                .append_pair("code_challenge_method", "S256");
            for (k, v) in &self.config.authorization_params {
                if !(force && k == "prompt") {
                    q.append_pair(k, v);
                }
            }
            if force {
                q.append_pair("prompt", "consent");
            }
        }
        url.to_string()
    }

    async fn token_request(
        &self,
        http: &reqwest::Client,
        mut form: Vec<(&str, String)>,
    ) -> Result<Tokens, OAuthFailure> {
        let endpoints = self.endpoints(http).await?;
        let secret = self.config.client_secret().map_err(|m| OAuthFailure {
            error: "configuration".into(),
            description: m,
        })?;
        let mut request = http
            .post(endpoints.token.clone())
            .header(http::header::ACCEPT, "application/json");
        match self.config.token_auth {
            TokenAuth::ClientSecretBasic => {
                // RFC 6749 2.3.1: form-encode id and secret before Basic.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request =
                    request.basic_auth(enc(&self.config.client_id), Some(enc(secret.expose())));
            }
            TokenAuth::ClientSecretPost => {
                form.push(("client_id", self.config.client_id.clone()));
                form.push(("client_secret", secret.expose().to_string()));
            }
        }
        let response = request.form(&form).send().await.map_err(|e| OAuthFailure {
            error: "unreachable".into(),
            description: format!("token endpoint: {}", e.without_url()),
        })?;
        let status = response.status();
        let body: TokenResponse = response.json().await.map_err(|_| OAuthFailure {
            error: "invalid_response".into(),
            description: format!(
                "the token endpoint answered {status} without a JSON token response"
            ),
        })?;
        if let Some(error) = body.error {
            return Err(OAuthFailure {
                error,
                description: body
                    .error_description
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
        let Some(access) = body.access_token.filter(|_| status.is_success()) else {
            return Err(OAuthFailure {
                error: "invalid_response".into(),
                description: format!(
                    "the token endpoint answered {status} without an access token"
                ),
            });
        };
        let expires_in = match body.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Ok(Tokens {
            access: Secret::new(access),
            refresh: body.refresh_token.map(Secret::new),
            expires_in,
            scope: body.scope,
        })
    }

    pub(crate) async fn exchange_code(
        &self,
        http: &reqwest::Client,
        code: &Secret,
        verifier: &Secret,
        redirect_uri: &str,
    ) -> Result<Tokens, OAuthFailure> {
        self.token_request(
            http,
            vec![
                ("grant_type", "authorization_code".into()),
                ("code", code.expose().to_string()),
                ("redirect_uri", redirect_uri.to_string()),
                ("code_verifier", verifier.expose().to_string()),
            ],
        )
        .await
    }

    pub(crate) async fn refresh(
        &self,
        http: &reqwest::Client,
        refresh: &Secret,
    ) -> Result<Tokens, OAuthFailure> {
        self.token_request(
            http,
            vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", refresh.expose().to_string()),
            ],
        )
        .await
    }

    pub(crate) async fn client_credentials(
        &self,
        http: &reqwest::Client,
        scopes: &[String],
    ) -> Result<Tokens, OAuthFailure> {
        self.token_request(
            http,
            vec![
                ("grant_type", "client_credentials".into()),
                ("scope", scopes.join(" ")),
            ],
        )
        .await
    }
}

fn preset(vendor: Vendor) -> (Option<String>, Option<String>, Option<String>) {
    let s = |a: &str, t: &str| (Some(a.to_string()), Some(t.to_string()), None);
    match vendor {
        Vendor::Custom => (None, None, None),
        Vendor::Github => s(
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
        ),
        Vendor::Google => s(
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
        ),
        Vendor::Microsoft => s(
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        ),
    }
}

/// An endpoint must be an absolute http(s) URL with a host, wherever it came from.
pub(crate) fn endpoint_url(value: &str) -> Result<url::Url, &'static str> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err("is not an absolute http(s) URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(extra: &str) -> Provider {
        let text = format!(
            "[[caller]]\naccess_key_id = \"A\"\nsecret_access_key = \"0123456789abcdef\"\noperations = [\"GetResourceOauth2Token\"]\n[[oauth2_provider]]\nname = \"p\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{extra}"
        );
        let config = crate::LocalConfig::from_toml(&text).unwrap();
        Provider::new(config.oauth2_providers[0].clone())
    }

    #[tokio::test]
    async fn presets_and_explicit_endpoints_need_no_discovery() {
        let http = airlock_verify::http_client();
        let github = provider("vendor = \"github\"");
        let e = github.endpoints(&http).await.unwrap();
        assert_eq!(
            e.authorization.as_str(),
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(
            e.token.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        let custom =
            provider("vendor = \"microsoft\"\ntoken_endpoint = \"https://login.example.com/t\"");
        let e = custom.endpoints(&http).await.unwrap();
        assert!(
            e.authorization
                .as_str()
                .starts_with("https://login.microsoftonline.com/")
        );
        assert_eq!(e.token.as_str(), "https://login.example.com/t");
        let url = custom.authorization_url(
            e,
            "http://cb",
            &["a".into()],
            "st",
            &Secret::new("v"),
            false,
        );
        let url = url::Url::parse(&url).unwrap();
        let q: std::collections::BTreeMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge"], pkce_challenge("v"));
        assert_eq!(q["redirect_uri"], "http://cb");
        assert_eq!(q["state"], "st");
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
