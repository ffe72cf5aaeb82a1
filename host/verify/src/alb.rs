//! The ALB's `x-amzn-oidc-data` header, verified as AWS documents it: ES256
//! over the segments exactly as sent (the ALB pads its base64url, which JWT
//! libraries refuse, so the token is split and checked here), the public key
//! fetched by `kid` from the regional key endpoint and cached, `signer` equal
//! to the configured ALB's ARN, `exp`, and `iss` when configured.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::VerifyError;
use crate::cache::Verified;
use crate::discovery::{http_client, without_url};
use crate::gate::Gate;
use crate::user::{Claims, Proof, VerifiedUser};

/// Base64url that accepts the ALB's padding and its absence.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Keys kept per verifier; an ALB rotates a handful.
const MAX_KEYS: usize = 64;
/// Key fetches at least this far apart (each unknown key id would fetch).
const FETCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// What an ALB header must match.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlbConfig {
    /// The ALB's ARN: the header's `signer` must be exactly this.
    pub signer_arn: String,
    /// Where the ALB's public keys are, e.g.
    /// `https://public-keys.auth.elb.us-east-1.amazonaws.com`; a key is at `{key_url}/{kid}`.
    pub key_url: String,
    /// The IdP's issuer the header's `iss` must name, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Put before each `sub` to make the user id, where another issuer's
    /// users could have the same `sub`.
    #[serde(default)]
    pub user_prefix: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: String,
    signer: String,
    #[serde(default)]
    iss: Option<String>,
}

/// Verifies `x-amzn-oidc-data` headers for one ALB.
pub struct AlbVerifier {
    config: AlbConfig,
    http: reqwest::Client,
    keys: std::sync::Mutex<HashMap<String, DecodingKey>>,
    gate: Gate,
    verified: Verified,
}

/// A key id that may go into a URL: the ALB's are UUIDs.
fn plain_key_id(kid: &str) -> bool {
    (1..=128).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl AlbVerifier {
    /// A verifier for the ALB `config` names.
    pub fn new(config: AlbConfig) -> AlbVerifier {
        AlbVerifier {
            config,
            http: http_client(),
            keys: std::sync::Mutex::new(HashMap::new()),
            gate: Gate::new(FETCH_INTERVAL),
            verified: Verified::new(),
        }
    }

    /// The user a header names, if the header is genuine and current.
    pub async fn verify(&self, token: &str, now_unix: i64) -> Result<VerifiedUser, VerifyError> {
        if let Some(user) = self.verified.get(token, now_unix) {
            return Ok(user);
        }
        let user = self.verify_signed(token, now_unix).await?;
        self.verified.put(token, &user, now_unix);
        Ok(user)
    }

    async fn verify_signed(&self, token: &str, now_unix: i64) -> Result<VerifiedUser, VerifyError> {
        let invalid = |m: &str| VerifyError::Invalid(m.to_string());
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::NotJwt);
        };
        let header: Header = B64
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(VerifyError::NotJwt)?;
        if header.alg != "ES256" {
            return Err(VerifyError::Algorithm(header.alg));
        }
        if header.signer != self.config.signer_arn {
            return Err(invalid("it was not signed by the configured load balancer"));
        }
        if let Some(expected) = &self.config.issuer
            && header.iss.as_deref() != Some(expected.as_str())
        {
            return Err(invalid("its issuer is not the configured one"));
        }
        if !plain_key_id(&header.kid) {
            return Err(VerifyError::UnknownKey);
        }
        let key = self.key(&header.kid).await?;
        // The signature covers the first two segments exactly as sent, padding included.
        let signed = &token[..token.rfind('.').expect("three segments")];
        let signature = signature.trim_end_matches('=');
        let valid =
            jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &key, Algorithm::ES256)
                .map_err(|_| invalid("its signature is malformed"))?;
        if !valid {
            return Err(invalid("its signature does not verify"));
        }
        let claims: Claims = B64
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| invalid("its claims are not JSON with a sub and exp"))?;
        claims.check_time(now_unix)?;
        VerifiedUser::with_prefix(claims, Proof::SignedIn, self.config.user_prefix.as_deref())
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, VerifyError> {
        let known = || {
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(kid)
                .cloned()
        };
        self.gate.key(kid, known, || self.fetch(kid)).await
    }

    /// The key `kid` from the key endpoint (`None`: there is none), kept.
    async fn fetch(&self, kid: &str) -> Result<Option<DecodingKey>, VerifyError> {
        let url = format!("{}/{kid}", self.config.key_url.trim_end_matches('/'));
        let unavailable = |m: String| VerifyError::Unavailable(m);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unavailable(without_url(e)))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "the key endpoint answered {}",
                response.status()
            )));
        }
        let pem = response
            .bytes()
            .await
            .map_err(|e| unavailable(without_url(e)))?;
        let key = DecodingKey::from_ec_pem(&pem)
            .map_err(|_| unavailable("the key endpoint's answer is not an EC public key".into()))?;
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(kid.to_string(), key.clone());
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_key_ids_go_into_the_key_url() {
        assert!(plain_key_id("9f2c7a1e-3b1d-4c6e-8a0f-2d5e6b7c8d9e"));
        for bad in [
            "",
            "../keys",
            "a/b",
            "https://evil.example.com/k",
            "k%2F",
            "k?x=1",
            "k.pem",
        ] {
            assert!(!plain_key_id(bad), "{bad}");
        }
    }
}
