//! The service's side of OAuth2, on the `oauth2` crate: the authorization
//! URL with PKCE (S256) and state, the code exchange with the verifier,
//! refresh and client credentials, each with the configured client
//! authentication. Endpoints come from a preset, discovery or the config,
//! each checked before use. Vendor quirks are smoothed in `quirks` before
//! the crate reads an answer.

use airlock_identity::Secret;
use airlock_verify::{Discovery, fetch_json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use tokio::sync::OnceCell;

use crate::config::{ProviderConfig, TokenAuth, Vendor, endpoint_url};
use crate::quirks;

/// A client with its authorization and token endpoints set.
type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// A provider once its endpoints are resolved: the OAuth client for them,
/// and the issuer for checking the callback's `iss` (RFC 9207), when known.
pub(crate) struct Endpoints {
    client: Client,
    pub(crate) issuer: Option<String>,
}

/// What the provider's token endpoint answered.
pub(crate) struct Tokens {
    pub(crate) access: Secret,
    pub(crate) refresh: Option<Secret>,
    pub(crate) expires_in: Option<i64>,
    /// The scopes granted, as the provider wrote them (see `scopes::granted`).
    pub(crate) scope: Option<String>,
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

impl OAuthFailure {
    fn configuration(description: String) -> OAuthFailure {
        OAuthFailure {
            error: "configuration".into(),
            description,
        }
    }
}

type TokenError = RequestTokenError<quirks::HttpFailure, BasicErrorResponse>;

impl From<TokenError> for OAuthFailure {
    fn from(e: TokenError) -> OAuthFailure {
        let (error, description) = match e {
            RequestTokenError::ServerResponse(r) => (
                r.error().as_ref().to_string(),
                r.error_description().cloned().unwrap_or_default(),
            ),
            RequestTokenError::Request(e) => ("unreachable".into(), format!("token endpoint: {e}")),
            RequestTokenError::Parse(e, _) => (
                "invalid_response".into(),
                format!(
                    "the token endpoint's answer is not a token response: {}",
                    e.inner()
                ),
            ),
            RequestTokenError::Other(m) => ("invalid_response".into(), m),
        };
        OAuthFailure {
            error,
            description: description.chars().take(200).collect(),
        }
    }
}

/// One configured provider, with its endpoints resolved on first use.
pub(crate) struct Provider {
    pub(crate) config: ProviderConfig,
    redirect: String,
    endpoints: OnceCell<Endpoints>,
}

pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source");
    URL_SAFE_NO_PAD.encode(buf)
}

impl Provider {
    /// A provider whose authorization answers come back to `redirect`.
    pub(crate) fn new(config: ProviderConfig, redirect: String) -> Provider {
        Provider {
            config,
            redirect,
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
                    let value = value.ok_or_else(|| {
                        OAuthFailure::configuration(format!("provider `{}` has no {field}", c.name))
                    })?;
                    endpoint_url(&value).map_err(|reason| {
                        OAuthFailure::configuration(format!(
                            "provider `{}`: {field} `{}` {reason}",
                            c.name,
                            value.chars().take(200).collect::<String>()
                        ))
                    })
                };
                let authorization = endpoint("authorization_endpoint", authorization)?;
                let token = endpoint("token_endpoint", token)?;
                let redirect = RedirectUrl::new(self.redirect.clone())
                    .map_err(|e| OAuthFailure::configuration(format!("the callback URL: {e}")))?;
                let mut client = BasicClient::new(ClientId::new(c.client_id.clone()))
                    .set_auth_uri(AuthUrl::from_url(authorization))
                    .set_token_uri(TokenUrl::from_url(token))
                    .set_redirect_uri(redirect)
                    .set_auth_type(match c.token_auth {
                        TokenAuth::ClientSecretBasic => AuthType::BasicAuth,
                        TokenAuth::ClientSecretPost | TokenAuth::None => AuthType::RequestBody,
                    });
                if c.token_auth != TokenAuth::None {
                    let secret = c
                        .client_secret()
                        .map_err(|e| OAuthFailure::configuration(e.message))?;
                    client =
                        client.set_client_secret(ClientSecret::new(secret.expose().to_string()));
                }
                Ok(Endpoints { client, issuer })
            })
            .await
    }

    /// The authorization request URL: the grant's scopes and the provider's
    /// extra ones, state, the PKCE challenge, the configured parameters, and
    /// `prompt=consent` when authentication is forced.
    pub(crate) fn authorization_url(
        &self,
        endpoints: &Endpoints,
        scopes: &[String],
        state: &str,
        verifier: &Secret,
        force: bool,
    ) -> String {
        let mut all: Vec<&str> = scopes.iter().map(String::as_str).collect();
        for s in &self.config.extra_scopes {
            if !all.contains(&s.as_str()) {
                all.push(s);
            }
        }
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            verifier.expose().to_string(),
        ));
        let state = state.to_string();
        let mut request = endpoints
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(all.into_iter().map(|s| Scope::new(s.to_string())))
            .set_pkce_challenge(challenge);
        for (k, v) in &self.config.authorization_params {
            if !(force && k == "prompt") {
                request = request.add_extra_param(k.as_str(), v.as_str());
            }
        }
        if force {
            request = request.add_extra_param("prompt", "consent");
        }
        request.url().0.to_string()
    }

    pub(crate) async fn exchange_code(
        &self,
        http: &reqwest::Client,
        code: &Secret,
        verifier: &Secret,
    ) -> Result<Tokens, OAuthFailure> {
        let endpoints = self.endpoints(http).await?;
        let answer = endpoints
            .client
            .exchange_code(AuthorizationCode::new(code.expose().to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose().to_string()))
            .request_async(&quirks::client(http))
            .await?;
        Ok(tokens(answer))
    }

    pub(crate) async fn refresh(
        &self,
        http: &reqwest::Client,
        refresh: &Secret,
    ) -> Result<Tokens, OAuthFailure> {
        let endpoints = self.endpoints(http).await?;
        let refresh = RefreshToken::new(refresh.expose().to_string());
        let answer = endpoints
            .client
            .exchange_refresh_token(&refresh)
            .request_async(&quirks::client(http))
            .await?;
        Ok(tokens(answer))
    }

    pub(crate) async fn client_credentials(
        &self,
        http: &reqwest::Client,
        scopes: &[String],
    ) -> Result<Tokens, OAuthFailure> {
        let endpoints = self.endpoints(http).await?;
        let answer = endpoints
            .client
            .exchange_client_credentials()
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())))
            .request_async(&quirks::client(http))
            .await?;
        Ok(tokens(answer))
    }
}

fn tokens(answer: BasicTokenResponse) -> Tokens {
    Tokens {
        access: Secret::new(answer.access_token().secret().as_str()),
        refresh: answer
            .refresh_token()
            .map(|r| Secret::new(r.secret().as_str())),
        expires_in: answer
            .expires_in()
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        scope: answer
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(extra: &str) -> Provider {
        let text = format!(
            "[[caller]]\naccess_key_id = \"A\"\nsecret_access_key = \"0123456789abcdef\"\noperations = [\"GetResourceOauth2Token\"]\n[[oauth2_provider]]\nname = \"p\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{extra}"
        );
        let config = crate::LocalConfig::from_toml(&text).unwrap();
        Provider::new(config.oauth2_providers[0].clone(), "http://cb".into())
    }

    #[tokio::test]
    async fn presets_and_explicit_endpoints_need_no_discovery() {
        let http = airlock_verify::http_client();
        let github = provider("vendor = \"github\"");
        let e = github.endpoints(&http).await.unwrap();
        assert_eq!(
            e.client.auth_uri().as_str(),
            "https://github.com/login/oauth/authorize"
        );
        assert_eq!(
            e.client.token_uri().as_str(),
            "https://github.com/login/oauth/access_token"
        );
        let custom = provider(
            "vendor = \"microsoft\"\ntoken_endpoint = \"https://login.example.com/t\"\nauthorization_params = { prompt = \"select_account\", login_hint = \"a@b\" }\nextra_scopes = [\"offline_access\"]",
        );
        let e = custom.endpoints(&http).await.unwrap();
        assert!(
            e.client
                .auth_uri()
                .as_str()
                .starts_with("https://login.microsoftonline.com/")
        );
        assert_eq!(e.client.token_uri().as_str(), "https://login.example.com/t");
        let verifier = Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let query = |force| {
            let url = custom.authorization_url(e, &["a".into()], "st", &verifier, force);
            url::Url::parse(&url)
                .unwrap()
                .query_pairs()
                .into_owned()
                .collect::<Vec<(String, String)>>()
        };
        let q = query(false);
        let get = |q: &[(String, String)], k: &str| {
            let v: Vec<&str> = q
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(v.len(), 1, "{k} once: {q:?}");
            v[0].to_string()
        };
        // RFC 7636 appendix B: this verifier's S256 challenge.
        assert_eq!(
            get(&q, "code_challenge"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(get(&q, "code_challenge_method"), "S256");
        assert_eq!(get(&q, "redirect_uri"), "http://cb");
        assert_eq!(get(&q, "state"), "st");
        assert_eq!(get(&q, "response_type"), "code");
        assert_eq!(get(&q, "client_id"), "c");
        assert_eq!(get(&q, "scope"), "a offline_access");
        assert_eq!(get(&q, "prompt"), "select_account");
        assert_eq!(get(&q, "login_hint"), "a@b");
        // Forced authentication replaces the configured prompt.
        assert_eq!(get(&query(true), "prompt"), "consent");
    }
}
