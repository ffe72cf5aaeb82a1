//! The façade's keys, each derived from one of the operator's secrets (HKDF-
//! SHA256): an Ed25519 key that signs access tokens (published as JWKS), an
//! AES-256-GCM key that seals what the façade hands out and must read back
//! (pending requests, codes, refresh tokens, registered clients), and an HMAC
//! key for dynamically registered clients' secrets. The first secret signs
//! and seals; every one verifies and opens, so a secret is rotated out by
//! putting a new one first and removing the old one a token lifetime later.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// PKCS#8 (RFC 8410) for an Ed25519 private key: this prefix, then the seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// What a sealed value is for: a value sealed for one purpose never opens
/// as another (the purpose is the cipher's associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An authorization request waiting for the person's consent.
    Request,
    /// The façade's state at the IdP, bound to the browser.
    IdpState,
    /// An authorization code for a client.
    Code,
    /// A refresh token.
    Refresh,
    /// A dynamically registered client.
    Client,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Request => b"airlock-oauth request",
            Purpose::IdpState => b"airlock-oauth idp-state",
            Purpose::Code => b"airlock-oauth code",
            Purpose::Refresh => b"airlock-oauth refresh",
            Purpose::Client => b"airlock-oauth client",
        }
    }
}

/// Why the keys could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No secret at all.
    #[error(
        "no signing secret: set oauth.secrets (or AIRLOCK_OAUTH_SECRETS), e.g. `openssl rand -base64 32`"
    )]
    None,
    /// A secret too short to derive keys from.
    #[error(
        "signing secret {index} is {len} bytes; use at least 32 random bytes (`openssl rand -base64 32`)"
    )]
    Short {
        /// Its place in the list (0 = the one that signs).
        index: usize,
        /// Its length.
        len: usize,
    },
}

struct Generation {
    kid: String,
    signing: EncodingKey,
    verifying: DecodingKey,
    jwk: Jwk,
    seal: Aes256Gcm,
    mac: [u8; 32],
}

/// The façade's keys, newest first.
pub struct Keys {
    generations: Vec<Generation>,
}

impl Keys {
    /// Keys from the operator's secrets, the signing one first.
    pub fn from_secrets(secrets: &[String]) -> Result<Keys, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::None);
        }
        let mut generations = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            let secret = secret.trim().as_bytes();
            if secret.len() < 32 {
                return Err(KeyError::Short {
                    index,
                    len: secret.len(),
                });
            }
            generations.push(Generation::derive(secret));
        }
        Ok(Keys { generations })
    }

    /// The public keys, for `/jwks` and the resource server.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.generations.iter().map(|g| g.jwk.clone()).collect(),
        }
    }

    /// `claims` as an access token signed by the newest key (`typ: at+jwt`,
    /// RFC 9068).
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        self.sign_typed("at+jwt", claims)
    }

    /// `claims` signed by the newest key as a token of type `typ`. Only
    /// access tokens are issued; other types show they are refused.
    pub fn sign_typed<T: Serialize>(&self, typ: &str, claims: &T) -> String {
        let newest = &self.generations[0];
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(newest.kid.clone());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(&header, claims, &newest.signing)
            .expect("an Ed25519 key signs any serializable claims")
    }

    /// The key that verifies tokens with key id `kid`.
    pub fn verifying(&self, kid: &str) -> Option<&DecodingKey> {
        self.generations
            .iter()
            .find(|g| g.kid == kid)
            .map(|g| &g.verifying)
    }

    /// `value` sealed for `purpose` by the newest key: `KID.NONCE+CIPHERTEXT`.
    pub fn seal<T: Serialize>(&self, purpose: Purpose, value: &T) -> String {
        let newest = &self.generations[0];
        let plain = serde_json::to_vec(value).expect("sealed values serialize");
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let sealed = newest
            .seal
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: purpose.label(),
                },
            )
            .expect("AES-GCM seals any length the façade uses");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{}.{}", &newest.kid[..8], URL_SAFE_NO_PAD.encode(out))
    }

    /// What `text` holds, if one of the keys sealed it for `purpose`.
    pub fn open<T: DeserializeOwned>(&self, purpose: Purpose, text: &str) -> Option<T> {
        let (kid, body) = text.split_once('.')?;
        let generation = self.generations.iter().find(|g| g.kid.starts_with(kid))?;
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = generation
            .seal
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: purpose.label(),
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// The secret of the registered client `client_id` (never stored).
    pub fn client_secret(&self, client_id: &str) -> String {
        self.generations[0].client_secret(client_id)
    }

    /// Whether `secret` is `client_id`'s, by any key (constant time).
    pub fn client_secret_matches(&self, client_id: &str, secret: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.generations.iter().any(|g| {
            let expected = g.client_secret(client_id);
            expected.len() == secret.len()
                && bool::from(expected.as_bytes().ct_eq(secret.as_bytes()))
        })
    }
}

impl Generation {
    fn derive(secret: &[u8]) -> Generation {
        let hkdf = Hkdf::<Sha256>::new(Some(b"airlock-oauth v1"), secret);
        let expand = |info: &[u8]| {
            let mut out = [0u8; 32];
            hkdf.expand(info, &mut out)
                .expect("32 bytes is a valid HKDF-SHA256 length");
            out
        };
        let seed = expand(b"token signing");
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let signing = EncodingKey::from_ed_der(&pkcs8);
        let mut jwk =
            Jwk::from_encoding_key(&signing, Algorithm::EdDSA).expect("an Ed25519 key has a JWK");
        let public = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p) => p.x.clone(),
            _ => unreachable!("an Ed25519 JWK is an octet key pair"),
        };
        let kid = hex::encode(&Sha256::digest(public.as_bytes())[..16]);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        let verifying = DecodingKey::from_jwk(&jwk).expect("the JWK made from the key decodes");
        Generation {
            kid,
            signing,
            verifying,
            jwk,
            seal: Aes256Gcm::new_from_slice(&expand(b"sealing")).expect("a 32-byte AES key"),
            mac: expand(b"client secrets"),
        }
    }

    fn client_secret(&self, client_id: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.mac).expect("any HMAC key length");
        mac.update(client_id.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn keys(secrets: &[&str]) -> Keys {
        Keys::from_secrets(&secrets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const A: &str = "a-secret-of-at-least-thirty-two-bytes-0001";
    const B: &str = "b-secret-of-at-least-thirty-two-bytes-0002";

    #[test]
    fn sealed_values_open_only_for_their_purpose_and_by_their_keys() {
        let k = keys(&[A]);
        let sealed = k.seal(Purpose::Code, &json!({"sub": "alice"}));
        assert_eq!(
            k.open::<Value>(Purpose::Code, &sealed),
            Some(json!({"sub": "alice"}))
        );
        assert_eq!(k.open::<Value>(Purpose::Refresh, &sealed), None);
        assert_eq!(keys(&[B]).open::<Value>(Purpose::Code, &sealed), None);
        // A rotated-in key still opens what the old one sealed.
        assert!(
            keys(&[B, A])
                .open::<Value>(Purpose::Code, &sealed)
                .is_some()
        );
        // One flipped character and it opens nothing.
        let mut tampered = sealed.into_bytes();
        let at = tampered.len() - 3;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(k.open::<Value>(Purpose::Code, &tampered), None);
    }

    #[test]
    fn tokens_verify_by_the_published_keys_and_rotation_keeps_old_ones() {
        let old = keys(&[A]);
        let token = old.sign(&json!({"sub": "alice", "exp": 4_000_000_000u64}));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let rotated = keys(&[B, A]);
        assert_eq!(rotated.jwks().keys.len(), 2);
        let jwk = rotated
            .jwks()
            .find(header.kid.as_deref().unwrap())
            .cloned()
            .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
            .unwrap();
        // The same secret always derives the same key id.
        assert_eq!(keys(&[A]).jwks().keys[0].common.key_id, jwk.common.key_id);
    }

    #[test]
    fn client_secrets_are_derived_and_checked_in_constant_time() {
        let k = keys(&[A]);
        let secret = k.client_secret("client-1");
        assert!(k.client_secret_matches("client-1", &secret));
        assert!(!k.client_secret_matches("client-2", &secret));
        assert!(keys(&[B, A]).client_secret_matches("client-1", &secret));
    }

    #[test]
    fn short_or_missing_secrets_are_refused_naming_the_fix() {
        assert!(
            Keys::from_secrets(&[])
                .err()
                .unwrap()
                .to_string()
                .contains("openssl rand")
        );
        let e = Keys::from_secrets(&["short".into()])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at least 32"), "{e}");
    }
}
