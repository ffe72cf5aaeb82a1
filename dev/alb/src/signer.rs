//! `x-amzn-oidc-data` as the ALB signs it: ES256 over base64url segments
//! WITH padding (which standard JWT libraries refuse), the signature over the
//! segments exactly as sent. The stand-in and the tests sign with this one
//! writer, so both produce what the ALB produces.

use anyhow::{Context, Result, anyhow};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A P-256 key that signs headers the ALB's way.
pub struct HeaderSigner {
    key: EcdsaKeyPair,
}

impl HeaderSigner {
    /// A new random key.
    pub fn generate() -> Result<HeaderSigner> {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| anyhow!("generating the signing key"))?;
        Ok(HeaderSigner { key })
    }

    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<HeaderSigner> {
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let der = STANDARD
            .decode(body.trim())
            .context("the key's PEM is not base64")?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|e| anyhow!("not a PKCS#8 P-256 key: {e}"))?;
        Ok(HeaderSigner { key })
    }

    fn public_der(&self) -> Vec<u8> {
        self.key
            .public_key()
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .expect("a P-256 public key encodes as DER")
    }

    /// The public key as the regional key endpoint serves it (PEM).
    pub fn public_key_pem(&self) -> String {
        let body = STANDARD.encode(self.public_der());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// A plain key id derived from the public key, as the ALB's are plain.
    pub fn kid(&self) -> String {
        hex::encode(&Sha256::digest(self.public_der())[..16])
    }

    /// `header.payload.signature`, each segment base64url WITH padding.
    pub fn sign(&self, header: &Value, payload: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE.encode(header.to_string()),
            URL_SAFE.encode(payload.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("signing with a P-256 key");
        format!("{input}.{}", URL_SAFE.encode(signature.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signed_headers_have_padded_segments_and_verify_over_the_segments_as_sent() {
        let signer = HeaderSigner::generate().unwrap();
        // A payload whose JSON length is not a multiple of three pads.
        let token = signer.sign(&json!({"alg": "ES256"}), &json!({"sub": "al"}));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().any(|p| p.ends_with('=')), "{token}");
        let input = &token[..token.rfind('.').unwrap()];
        let signature = URL_SAFE.decode(parts[2]).unwrap();
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            signer.key.public_key().as_ref(),
        );
        public.verify(input.as_bytes(), &signature).unwrap();
    }

    #[test]
    fn a_pem_key_signs_and_a_bad_one_is_named() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgezYWRtTejluK2Gan\nDYnSA06SswF8cGFnzO6xvaj2tZ6hRANCAAQDKMd+DdMjEtkRrfhJ8GhiEaOuq6ks\nFuIXmJvXnJT2PvQWYIx+eReTWsg6YHGkN3Ghc1Tja6TuFOVPK+Y3F9pL\n-----END PRIVATE KEY-----\n";
        let signer = HeaderSigner::from_pkcs8_pem(pem).unwrap();
        assert!(
            signer
                .public_key_pem()
                .contains("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAyjHfg3TIxLZ")
        );
        let bad = HeaderSigner::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert!(bad.err().unwrap().to_string().contains("PKCS#8"));
    }
}
