//! Signed checkpoints. The chain alone shows an edit, but whoever can write
//! the file can recompute every hash. So every so many records, and when the
//! service stops, a checkpoint record carries an ed25519 signature (an SSH
//! signature, namespace `airlock-audit`) over its own sequence number and
//! the hash of the record before it, which commits to the whole chain up to
//! there. `host audit verify --key` checks each one with the public key,
//! that each start names a checkpoint the files hold (the chain before it
//! was not dropped), and that no record follows the last checkpoint (the
//! tail was not cut, or the service did not stop cleanly).

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The signatures' namespace.
pub const NAMESPACE: &str = "airlock-audit";

/// What a checkpoint signs: its place in the chain.
pub(crate) fn message(seq: u64, prev: &str) -> Vec<u8> {
    format!("airlock-audit checkpoint v1\nseq {seq}\nprev {prev}\n").into_bytes()
}

/// The text of a checkpoint key is not a usable key. Its causes are in the
/// text (not also a source, so `{:#}` reports print them once).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointKeyError {
    /// Not an OpenSSH private key, or a damaged one.
    #[error("not an OpenSSH private key: {0}")]
    NotOpenSsh(ssh_key::Error),
    /// A passphrase protects it; the service cannot ask for one.
    #[error("the audit signing key is encrypted; use an unencrypted ed25519 key")]
    Encrypted,
}

/// The key a setting names could not be loaded. Says where it came from,
/// never the key's text.
#[derive(Debug, thiserror::Error)]
pub enum LoadCheckpointKeyError {
    /// The setting holds the key itself, and it is not usable.
    #[error("the key given inline: {0}")]
    Inline(CheckpointKeyError),
    /// The file the setting names could not be read.
    #[error("{}: {error}", path.display())]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file the setting names holds no usable key.
    #[error("{}: {error}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with its key.
        error: CheckpointKeyError,
    },
}

/// The key that signs checkpoints.
pub struct CheckpointKey {
    key: PrivateKey,
    fingerprint: String,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl CheckpointKey {
    /// An unencrypted OpenSSH ed25519 private key (`host keygen` makes one).
    pub fn from_openssh(text: &str) -> Result<CheckpointKey, CheckpointKeyError> {
        let key = PrivateKey::from_openssh(text).map_err(CheckpointKeyError::NotOpenSsh)?;
        if key.is_encrypted() {
            return Err(CheckpointKeyError::Encrypted);
        }
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        Ok(CheckpointKey { key, fingerprint })
    }

    /// The key a setting names: a file's path, or the key itself (as ECS
    /// hands a secret to a container, in an environment variable).
    pub fn load(setting: &std::path::Path) -> Result<CheckpointKey, LoadCheckpointKeyError> {
        let text = setting.to_string_lossy();
        if text.trim_start().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
            return CheckpointKey::from_openssh(&text).map_err(LoadCheckpointKeyError::Inline);
        }
        let text = std::fs::read_to_string(setting).map_err(|error| {
            LoadCheckpointKeyError::Unreadable {
                path: setting.to_path_buf(),
                error,
            }
        })?;
        CheckpointKey::from_openssh(&text).map_err(|error| LoadCheckpointKeyError::Invalid {
            path: setting.to_path_buf(),
            error,
        })
    }

    /// Its public key's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The armored signature of the checkpoint at `seq` after `prev`.
    pub(crate) fn sign(&self, seq: u64, prev: &str) -> Result<String, ssh_key::Error> {
        self.key
            .sign(NAMESPACE, HashAlg::Sha512, &message(seq, prev))
            .and_then(|s| s.to_pem(LineEnding::LF))
    }
}

/// Whether `signature` (armored) is one of `keys`' over the checkpoint at
/// `seq` after `prev`.
pub(crate) fn verifies(keys: &[PublicKey], signature: &str, seq: u64, prev: &str) -> bool {
    let Ok(sig) = signature.parse::<SshSig>() else {
        return false;
    };
    sig.namespace() == NAMESPACE
        && keys
            .iter()
            .filter(|k| k.key_data() == sig.public_key())
            .any(|k| k.verify(NAMESPACE, &message(seq, prev), &sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_read_from_its_file_or_as_ecs_passes_it_inline_and_never_echoed() {
        use ssh_key::rand_core::OsRng;
        let key = PrivateKey::random(&mut OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        let text = key.to_openssh(LineEnding::LF).unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit");
        std::fs::write(&path, &text).unwrap();
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        assert_eq!(CheckpointKey::load(&path).unwrap().fingerprint(), fingerprint);
        let inline = std::path::PathBuf::from(text.clone());
        assert_eq!(CheckpointKey::load(&inline).unwrap().fingerprint(), fingerprint);
        // A damaged key: named, its text not repeated.
        let damaged = text.replace("\n", "\nAAAA");
        let e = CheckpointKey::load(std::path::Path::new(&damaged))
            .unwrap_err()
            .to_string();
        assert!(e.contains("inline") && !e.contains(&text[40..80]), "{e}");
        let e = CheckpointKey::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
