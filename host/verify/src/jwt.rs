//! User JWTs from trusted issuers: signature by the issuer's current keys,
//! issuer, audience, expiry. The token's unverified `iss` picks which
//! trusted issuer's keys to try before anything is fetched; keys are
//! refetched for an unknown key id through a [`Gate`] (one fetch at a time,
//! never sooner than an interval after the last), and no lock is held while
//! fetching.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::cache::{self, Verified};
use crate::discovery::{Discovery, fetch_json, http_client};
use crate::gate::Gate;

/// Key refetches at least this far apart per issuer.
const FETCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// What a discovery URL ends with after its issuer (OpenID, RFC 8414).
const WELL_KNOWN: [&str; 2] = [
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
];
use crate::{Claims, Proof, Secret, VerifiedUser};

/// An identity provider trusted for user JWTs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// OpenID discovery URL (`.../.well-known/openid-configuration`).
    pub discovery_url: String,
    /// Accepted `aud` values; at least one.
    pub audiences: Vec<String>,
    /// Put before each `sub` to make the user id, where another issuer's
    /// users could have the same `sub` (`partner:`).
    #[serde(default)]
    pub user_prefix: Option<String>,
}

/// Why a token did not verify. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Nothing is trusted.
    #[error("no JWT issuer is trusted here; add a jwt_issuer with its discovery URL and audiences")]
    NoIssuer,
    /// Not a JWT at all.
    #[error("the user token is not a JWT")]
    NotJwt,
    /// A signature algorithm outside the asymmetric ones.
    #[error("the user token's algorithm {0} is not accepted")]
    Algorithm(String),
    /// The key id is not among the issuer's keys, even after a refetch.
    #[error("the user token's key id is not among the issuer's keys")]
    UnknownKey,
    /// The issuer's keys or discovery document could not be fetched.
    #[error("the issuer's keys are unavailable: {0}")]
    Unavailable(String),
    /// Signature, issuer, audience, expiry or subject is wrong.
    #[error("the user token is not valid: {0}")]
    Invalid(String),
}

/// An issuer whose keys are given rather than fetched: Airlock's own
/// authorization server. Its access tokens (`typ: at+jwt`) name a person it
/// signed in at the operator's IdP, for one audience, with scopes.
#[derive(Debug, Clone)]
pub struct KnownIssuer {
    /// Its issuer identifier.
    pub issuer: String,
    /// The one audience its tokens are for (the resource).
    pub audience: String,
    /// Its public keys.
    pub keys: JwkSet,
    /// Put before each `sub` to make the user id.
    pub user_prefix: Option<String>,
}

/// Verifies user JWTs against a set of trusted issuers.
pub struct JwtVerifier {
    known: Option<KnownIssuer>,
    issuers: Vec<Trusted>,
    http: reqwest::Client,
    verified: Verified,
}

/// A trusted issuer and what was fetched of it.
struct Trusted {
    config: JwtIssuer,
    /// Its issuer identifier as its discovery URL implies it, before any fetch.
    implied: Option<String>,
    /// Its issuer identifier and keys, once fetched.
    fetched: std::sync::Mutex<Option<(String, JwkSet)>>,
    gate: Gate,
}

impl Trusted {
    fn fetched(&self) -> Option<(String, JwkSet)> {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether tokens claiming `iss` are this issuer's to check.
    fn claims(&self, iss: &str) -> bool {
        match self.fetched() {
            Some((issuer, _)) => issuer == iss,
            None => self.implied.as_deref().is_none_or(|i| i == iss),
        }
    }
}

impl JwtVerifier {
    /// A verifier trusting `issuers`.
    pub fn new(issuers: Vec<JwtIssuer>) -> JwtVerifier {
        let issuers = issuers
            .into_iter()
            .map(|config| Trusted {
                implied: WELL_KNOWN
                    .iter()
                    .find_map(|w| config.discovery_url.strip_suffix(w))
                    .map(str::to_string),
                config,
                fetched: std::sync::Mutex::new(None),
                gate: Gate::new(FETCH_INTERVAL),
            })
            .collect();
        JwtVerifier {
            known: None,
            issuers,
            http: http_client(),
            verified: Verified::new(),
        }
    }

    /// Trust `known` too.
    pub fn with_known(mut self, known: KnownIssuer) -> JwtVerifier {
        self.known = Some(known);
        self
    }

    /// Whether any issuer is trusted.
    pub fn is_empty(&self) -> bool {
        self.known.is_none() && self.issuers.is_empty()
    }

    /// The user (`sub`) of a valid token from one of the trusted issuers:
    /// signature by the issuer's key, an asymmetric algorithm, `iss`, `aud`,
    /// `exp` and `nbf`.
    pub async fn verify(&self, token: &str) -> Result<VerifiedUser, VerifyError> {
        let now = cache::now_unix();
        if let Some(user) = self.verified.get(token, now) {
            return Ok(user);
        }
        let user = self.verify_signed(token).await?;
        self.verified.put(token, &user, now);
        Ok(user)
    }

    async fn verify_signed(&self, token: &str) -> Result<VerifiedUser, VerifyError> {
        if self.is_empty() {
            return Err(VerifyError::NoIssuer);
        }
        let header = decode_header(token).map_err(|_| VerifyError::NotJwt)?;
        if let Some(known) = &self.known
            && unverified_issuer(token).as_deref() == Some(known.issuer.as_str())
        {
            return verify_known(known, token, &header);
        }
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(VerifyError::Algorithm(format!("{:?}", header.alg)));
        }
        let iss = unverified_issuer(token)
            .ok_or_else(|| VerifyError::Invalid("it names no issuer".into()))?;
        let mut last = VerifyError::Invalid("no trusted issuer accepted it".into());
        for issuer in self.issuers.iter().filter(|i| i.claims(&iss)) {
            let (name, jwk) = match self.key(issuer, header.kid.as_deref()).await {
                Ok(k) => k,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                last = VerifyError::Unavailable("the issuer's key is unusable".into());
                continue;
            };
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[name.as_str()]);
            validation.set_audience(&issuer.config.audiences);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_nbf = true;
            match decode::<Claims>(token, &decoding, &validation) {
                Ok(data) => {
                    return VerifiedUser::with_prefix(
                        data.claims,
                        Proof::Jwt(Secret::new(token)),
                        issuer.config.user_prefix.as_deref(),
                    );
                }
                Err(e) => last = VerifyError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    /// The issuer's name and its key `kid` (or its one key when the token
    /// names none), fetching through the issuer's gate when unknown.
    async fn key(
        &self,
        issuer: &Trusted,
        kid: Option<&str>,
    ) -> Result<(String, jsonwebtoken::jwk::Jwk), VerifyError> {
        let find = || {
            let (name, set) = issuer.fetched()?;
            let jwk = match kid {
                Some(kid) => set.find(kid).cloned()?,
                None if set.keys.len() == 1 => set.keys[0].clone(),
                None => return None,
            };
            Some((name, jwk))
        };
        let slot = kid.unwrap_or("");
        issuer
            .gate
            .key(slot, find, || async {
                let fetched = self.jwks(&issuer.config).await?;
                *issuer.fetched.lock().unwrap_or_else(|p| p.into_inner()) = Some(fetched);
                Ok(find())
            })
            .await
    }

    /// The issuer's identifier and current keys, from the network.
    async fn jwks(&self, issuer: &JwtIssuer) -> Result<(String, JwkSet), VerifyError> {
        let unavailable = |e: crate::FetchError| VerifyError::Unavailable(e.to_string());
        let d: Discovery = fetch_json(&self.http, &issuer.discovery_url)
            .await
            .map_err(unavailable)?;
        let (Some(iss), Some(jwks_uri)) = (d.issuer, d.jwks_uri) else {
            return Err(VerifyError::Unavailable(format!(
                "{} names no issuer or jwks_uri",
                issuer.discovery_url
            )));
        };
        let jwks: JwkSet = fetch_json(&self.http, &jwks_uri)
            .await
            .map_err(unavailable)?;
        Ok((iss, jwks))
    }
}

/// The `iss` a token claims, before anything is verified: it only chooses
/// which keys to verify with.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

fn verify_known(
    known: &KnownIssuer,
    token: &str,
    header: &jsonwebtoken::Header,
) -> Result<VerifiedUser, VerifyError> {
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(VerifyError::Invalid(
            "not an access token (typ at+jwt)".into(),
        ));
    }
    let jwk = header
        .kid
        .as_deref()
        .and_then(|kid| known.keys.find(kid))
        .ok_or(VerifyError::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| VerifyError::Unavailable("the issuer's key is unusable".into()))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[known.issuer.as_str()]);
    validation.set_audience(&[known.audience.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    let data = decode::<Claims>(token, &key, &validation)
        .map_err(|e| VerifyError::Invalid(e.to_string()))?;
    VerifiedUser::with_prefix(data.claims, Proof::SignedIn, known.user_prefix.as_deref())
        .map(VerifiedUser::scoped)
}
