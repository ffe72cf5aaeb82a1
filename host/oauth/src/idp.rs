//! The operator's OpenID provider, where people sign in: the authorization
//! code flow with PKCE and a nonce (the `oauth2` crate), the callback's `iss`
//! checked (RFC 9207), and the ID token verified by `airlock-verify`, the one
//! place that turns a token into a user.

use airlock_verify::{Discovery, JwtIssuer, JwtVerifier, VerifiedUser, fetch_json};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::config::IdpConfig;

/// The token response's extra field OpenID Connect adds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenField {
    /// The ID token.
    #[serde(default)]
    pub id_token: Option<String>,
}

impl oauth2::ExtraTokenFields for IdTokenField {}

type TokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

type IdpClient = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why a sign-in at the IdP failed. Safe to log; never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// Its discovery document or endpoints are unusable.
    #[error("the identity provider: {0}")]
    Unavailable(String),
    /// The callback's `iss` is not the IdP's (a mix-up).
    #[error("the sign-in came back from another issuer")]
    MixUp,
    /// The code exchange failed.
    #[error("the identity provider refused the code: {0}")]
    Exchange(String),
    /// No ID token, or one that did not verify.
    #[error("the identity provider's ID token: {0}")]
    IdToken(String),
}

struct Resolved {
    client: IdpClient,
    issuer: String,
    iss_parameter: bool,
}

/// The IdP the façade signs people in at.
pub struct Idp {
    config: IdpConfig,
    secret: Option<String>,
    redirect: String,
    http: reqwest::Client,
    resolved: OnceCell<Resolved>,
    id_tokens: JwtVerifier,
}

impl Idp {
    /// The IdP of `config`, its answers coming back to `redirect`.
    pub fn new(config: IdpConfig, secret: Option<String>, redirect: String) -> Idp {
        let id_tokens = JwtVerifier::new(vec![JwtIssuer {
            discovery_url: config.discovery_url.clone(),
            audiences: vec![config.client_id.clone()],
            user_prefix: None,
        }]);
        Idp {
            config,
            secret,
            redirect,
            http: airlock_verify::http_client(),
            resolved: OnceCell::new(),
            id_tokens,
        }
    }

    async fn resolved(&self) -> Result<&Resolved, IdpError> {
        self.resolved
            .get_or_try_init(|| async {
                let d: Discovery = fetch_json(&self.http, &self.config.discovery_url)
                    .await
                    .map_err(|e| IdpError::Unavailable(e.to_string()))?;
                let missing = |what: &str| {
                    IdpError::Unavailable(format!("{} names no {what}", self.config.discovery_url))
                };
                let issuer = d.issuer.ok_or_else(|| missing("issuer"))?;
                let auth = d
                    .authorization_endpoint
                    .ok_or_else(|| missing("authorization_endpoint"))?;
                let token = d.token_endpoint.ok_or_else(|| missing("token_endpoint"))?;
                let bad = |e: url::ParseError| IdpError::Unavailable(e.to_string());
                let mut client = oauth2::Client::new(ClientId::new(self.config.client_id.clone()))
                    .set_auth_uri(AuthUrl::new(auth).map_err(bad)?)
                    .set_token_uri(TokenUrl::new(token).map_err(bad)?)
                    .set_redirect_uri(RedirectUrl::new(self.redirect.clone()).map_err(bad)?)
                    .set_auth_type(AuthType::BasicAuth);
                if let Some(secret) = &self.secret {
                    client = client.set_client_secret(ClientSecret::new(secret.clone()));
                }
                Ok(Resolved {
                    client,
                    issuer,
                    iss_parameter: d.authorization_response_iss_parameter_supported,
                })
            })
            .await
    }

    /// Where to send the person: the IdP's authorization URL with `state`,
    /// `nonce` and the PKCE challenge of `verifier`.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, IdpError> {
        let resolved = self.resolved().await?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            verifier.to_string(),
        ));
        let state = state.to_string();
        let (url, _) = resolved
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(self.config.scopes.iter().map(|s| Scope::new(s.clone())))
            .add_extra_param("nonce", nonce)
            .set_pkce_challenge(challenge)
            .url();
        Ok(url.to_string())
    }

    /// The person the IdP signed in: `iss` (when the IdP sends it, or must)
    /// checked, the code exchanged with the PKCE verifier, and the ID token
    /// verified, its nonce `nonce`.
    pub async fn sign_in(
        &self,
        code: &str,
        verifier: &str,
        iss: Option<&str>,
        nonce: &str,
    ) -> Result<VerifiedUser, IdpError> {
        let resolved = self.resolved().await?;
        match iss {
            Some(iss) if iss != resolved.issuer => return Err(IdpError::MixUp),
            None if resolved.iss_parameter => return Err(IdpError::MixUp),
            _ => {}
        }
        let http = self.http.clone();
        let send = move |request: oauth2::HttpRequest| {
            let http = http.clone();
            async move {
                airlock_verify::send(&http, request)
                    .await
                    .map_err(|e| TokenRequestError(e.to_string()))
            }
        };
        let answer = resolved
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&send)
            .await
            .map_err(|e| {
                IdpError::Exchange(match e {
                    RequestTokenError::ServerResponse(r) => r.error().as_ref().to_string(),
                    RequestTokenError::Request(e) => e.to_string(),
                    RequestTokenError::Parse(e, _) => format!("unreadable answer: {}", e.inner()),
                    RequestTokenError::Other(m) => m,
                })
            })?;
        let id_token = answer.extra_fields().id_token.as_deref().ok_or_else(|| {
            IdpError::IdToken("none in the answer (is `openid` among idp.scopes?)".into())
        })?;
        let user = self
            .id_tokens
            .verify(id_token)
            .await
            .map_err(|e| IdpError::IdToken(e.to_string()))?;
        if user.claims().nonce.as_deref() != Some(nonce) {
            return Err(IdpError::IdToken("its nonce is not this sign-in's".into()));
        }
        Ok(user)
    }
}

/// A request to the IdP's token endpoint that could not be sent.
#[derive(Debug)]
struct TokenRequestError(String);

impl std::fmt::Display for TokenRequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenRequestError {}
