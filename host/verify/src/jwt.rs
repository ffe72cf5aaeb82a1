//! User JWTs from trusted issuers: signature by the issuer's current keys
//! (refetched once when an unknown key id appears), issuer, audience, expiry.

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::cache::{self, Verified};
use crate::discovery::{Discovery, fetch_json, http_client};
use crate::{Claims, Proof, Secret, VerifiedUser};

/// An identity provider trusted for user JWTs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// OpenID discovery URL (`.../.well-known/openid-configuration`).
    pub discovery_url: String,
    /// Accepted `aud` values; at least one.
    pub audiences: Vec<String>,
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
}

/// Verifies user JWTs against a set of trusted issuers.
pub struct JwtVerifier {
    known: Option<KnownIssuer>,
    issuers: Vec<JwtIssuer>,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<HashMap<String, (String, JwkSet)>>,
    verified: Verified,
}

impl JwtVerifier {
    /// A verifier trusting `issuers`.
    pub fn new(issuers: Vec<JwtIssuer>) -> JwtVerifier {
        JwtVerifier {
            known: None,
            issuers,
            http: http_client(),
            keys: tokio::sync::Mutex::new(HashMap::new()),
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
        let mut last = VerifyError::Invalid("no trusted issuer accepted it".into());
        for issuer in &self.issuers {
            let (iss, jwks) = match self.jwks(issuer, false).await {
                Ok(k) => k,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let find = |set: &JwkSet| header.kid.as_deref().and_then(|kid| set.find(kid).cloned());
            let mut key = find(&jwks);
            if key.is_none() && header.kid.is_some() {
                // The issuer may have rotated its keys: fetch once more.
                if let Ok((_, fresh)) = self.jwks(issuer, true).await {
                    key = find(&fresh);
                }
            }
            let Some(jwk) = key.or_else(|| (jwks.keys.len() == 1).then(|| jwks.keys[0].clone()))
            else {
                last = VerifyError::UnknownKey;
                continue;
            };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                last = VerifyError::Unavailable("the issuer's key is unusable".into());
                continue;
            };
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[iss.as_str()]);
            validation.set_audience(&issuer.audiences);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_nbf = true;
            match decode::<Claims>(token, &decoding, &validation) {
                Ok(data) => {
                    return VerifiedUser::new(data.claims, Proof::Jwt(Secret::new(token)));
                }
                Err(e) => last = VerifyError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    async fn jwks(
        &self,
        issuer: &JwtIssuer,
        refresh: bool,
    ) -> Result<(String, JwkSet), VerifyError> {
        let mut keys = self.keys.lock().await;
        if !refresh && let Some(k) = keys.get(&issuer.discovery_url) {
            return Ok(k.clone());
        }
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
        keys.insert(issuer.discovery_url.clone(), (iss.clone(), jwks.clone()));
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
    VerifiedUser::new(data.claims, Proof::SignedIn).map(VerifiedUser::scoped)
}
