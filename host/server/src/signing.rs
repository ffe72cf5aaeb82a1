//! Tool signatures: an SSH signature (`ssh-keygen -Y sign`'s format, namespace
//! `airlock-tool`) over the `.wasm`'s bytes, by an ed25519 key in OpenSSH
//! format, carried beside the tool (`NAME.wasm.sig`, or a header on upload).
//! `wasmsign2` signs core modules' sections, not components, so the signature
//! is detached.

use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The namespace every Airlock tool signature is made in.
pub const NAMESPACE: &str = "airlock-tool";

/// A signature that does not let a tool in, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not an SSH signature at all.
    #[error("the signature is not an SSH signature (make one with `host sign`)")]
    Malformed,
    /// Made for something else.
    #[error("the signature was made for `{0}`, not for Airlock tools (`{NAMESPACE}`)")]
    Namespace(String),
    /// By a key the operator does not trust.
    #[error("signed by {0}, which is not a trusted key")]
    Untrusted(String),
    /// The bytes changed after signing, or the signature is forged.
    #[error("the signature by {0} does not match this .wasm: it changed after signing")]
    Mismatch(String),
    /// Required and missing.
    #[error("this host takes signed tools only: sign it with `host sign` and send the signature")]
    Missing,
}

/// A trusted keys file that cannot be used; names the line.
#[derive(Debug, thiserror::Error)]
pub enum TrustedKeysError {
    /// The line is not an OpenSSH public key.
    #[error("line {line}: not an OpenSSH public key: {error}")]
    NotOpenSsh {
        /// The line's number, from 1.
        line: usize,
        /// Why it does not parse.
        error: ssh_key::Error,
    },
    /// The key is of another algorithm than ed25519.
    #[error("line {0}: only ed25519 keys are trusted")]
    NotEd25519(usize),
}

/// A key could not be made, or a tool not signed. Causes are in the text,
/// not also a source, so `{:#}` reports print them once.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// No new key could be generated.
    #[error("{0}")]
    Generate(ssh_key::Error),
    /// A key could not be written in OpenSSH format.
    #[error("{0}")]
    Encode(ssh_key::Error),
    /// The private key does not parse.
    #[error("not an OpenSSH private key (encrypted keys are not supported): {0}")]
    NotOpenSsh(ssh_key::Error),
    /// A passphrase protects the private key.
    #[error("the key is encrypted; use an unencrypted ed25519 key")]
    Encrypted,
    /// Signing, or armoring the signature, failed.
    #[error("{0}")]
    Sign(ssh_key::Error),
}

/// The keys an operator trusts, one OpenSSH public key per line.
#[derive(Debug, Clone, Default)]
pub struct Trusted {
    keys: Vec<PublicKey>,
}

impl Trusted {
    /// Read `ssh-ed25519 AAAA... comment` lines (blank lines and `#` comments skipped).
    pub fn parse(text: &str) -> Result<Trusted, TrustedKeysError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_openssh(line)
                .map_err(|error| TrustedKeysError::NotOpenSsh { line: i + 1, error })?;
            if key.algorithm() != Algorithm::Ed25519 {
                return Err(TrustedKeysError::NotEd25519(i + 1));
            }
            keys.push(key);
        }
        Ok(Trusted { keys })
    }

    /// Whether any key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted signer of `wasm` by `signature` (armored), by fingerprint.
    pub fn verify(&self, signature: &str, wasm: &[u8]) -> Result<String, SignatureError> {
        let sig: SshSig = signature.parse().map_err(|_| SignatureError::Malformed)?;
        if sig.namespace() != NAMESPACE {
            return Err(SignatureError::Namespace(sig.namespace().to_string()));
        }
        let signer = PublicKey::from(sig.public_key().clone());
        let fingerprint = signer.fingerprint(HashAlg::Sha256).to_string();
        let Some(key) = self.keys.iter().find(|k| k.key_data() == sig.public_key()) else {
            return Err(SignatureError::Untrusted(fingerprint));
        };
        key.verify(NAMESPACE, wasm, &sig)
            .map_err(|_| SignatureError::Mismatch(fingerprint.clone()))?;
        Ok(fingerprint)
    }
}

/// A new ed25519 key: the private key (OpenSSH format) and its public line.
pub fn keygen(comment: &str) -> Result<(String, String), SigningError> {
    let mut key =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(SigningError::Generate)?;
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(SigningError::Encode)?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(SigningError::Encode)?;
    Ok((private.to_string(), public))
}

/// Sign `wasm` with `private` (an OpenSSH private key): the armored signature.
pub fn sign(private: &str, wasm: &[u8]) -> Result<String, SigningError> {
    let key = PrivateKey::from_openssh(private).map_err(SigningError::NotOpenSsh)?;
    if key.is_encrypted() {
        return Err(SigningError::Encrypted);
    }
    key.sign(NAMESPACE, HashAlg::Sha512, wasm)
        .and_then(|s| s.to_pem(LineEnding::LF))
        .map_err(SigningError::Sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bytes_verify_and_every_change_is_caught() {
        let (private, public) = keygen("ci").unwrap();
        let (other, other_public) = keygen("someone").unwrap();
        let trusted = Trusted::parse(&format!("# ours\n{public}\n")).unwrap();
        let wasm = b"\0asm component bytes".to_vec();
        let sig = sign(&private, &wasm).unwrap();
        let who = trusted.verify(&sig, &wasm).unwrap();
        assert!(who.starts_with("SHA256:"), "{who}");

        let mut changed = wasm.clone();
        changed[5] ^= 1;
        assert!(matches!(
            trusted.verify(&sig, &changed),
            Err(SignatureError::Mismatch(_))
        ));
        let theirs = sign(&other, &wasm).unwrap();
        assert!(matches!(
            trusted.verify(&theirs, &wasm),
            Err(SignatureError::Untrusted(_))
        ));
        assert_eq!(
            trusted.verify("junk", &wasm),
            Err(SignatureError::Malformed)
        );
        let key = PrivateKey::from_openssh(&private).unwrap();
        let git = key
            .sign("git", HashAlg::Sha512, &wasm)
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(
            trusted.verify(&git, &wasm),
            Err(SignatureError::Namespace("git".into()))
        );
        assert!(
            Trusted::parse(&other_public)
                .unwrap()
                .verify(&theirs, &wasm)
                .is_ok()
        );
        assert!(Trusted::parse("ssh-rsa AAAA").is_err());
    }
}
