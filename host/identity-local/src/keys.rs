//! The vault's keys. One key seals; earlier keys still open what they sealed,
//! so the key can be rotated: every sealed value names the key that sealed it.
//!
//! A sealed value is `[format 1][key id: 4 bytes][nonce: 12][ciphertext + tag]`;
//! the key id is the first 4 bytes of SHA-256 over a label and the key.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

use crate::StartError;
use crate::error::StoreError;
use airlock_identity::Secret;

/// The environment variable that may hold the vault key (64 hex digits).
pub const VAULT_KEY_ENV: &str = "AIRLOCK_VAULT_KEY";
/// Earlier vault keys, comma-separated, that still open values they sealed.
pub const PREVIOUS_VAULT_KEYS_ENV: &str = "AIRLOCK_VAULT_KEY_PREVIOUS";

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 4 + 12;

struct VaultKey {
    id: [u8; 4],
    cipher: Aes256Gcm,
}

impl VaultKey {
    fn new(bytes: &[u8; 32]) -> VaultKey {
        let digest = Sha256::new()
            .chain_update(b"airlock vault key id\0")
            .chain_update(bytes)
            .finalize();
        VaultKey {
            id: [digest[0], digest[1], digest[2], digest[3]],
            cipher: Aes256Gcm::new(bytes.into()),
        }
    }
}

/// The current key and the earlier ones.
pub(crate) struct Keyring {
    current: VaultKey,
    current_bytes: [u8; 32],
    previous: Vec<VaultKey>,
}

impl Keyring {
    pub(crate) fn new(current: [u8; 32], previous: &[[u8; 32]]) -> Keyring {
        Keyring {
            current: VaultKey::new(&current),
            current_bytes: current,
            previous: previous
                .iter()
                .filter(|k| **k != current)
                .map(VaultKey::new)
                .collect(),
        }
    }

    /// A key derived from the current one for another purpose (`label` names it).
    pub(crate) fn derive(&self, label: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.current_bytes).expect("any key length");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// Whether earlier keys are configured (so values may need re-sealing).
    pub(crate) fn has_previous(&self) -> bool {
        !self.previous.is_empty()
    }

    /// Seal `value` under the current key, bound to `aad`.
    pub(crate) fn seal(&self, aad: &[u8], value: &str) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let sealed = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad,
                },
            )
            .expect("AES-GCM encryption of a small value");
        let mut out = Vec::with_capacity(HEADER + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Open a sealed value with whichever configured key sealed it.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Secret, StoreError> {
        if sealed.len() < HEADER || sealed[0] != FORMAT {
            return Err(StoreError::new(
                "a sealed value is truncated or of an unknown format",
            ));
        }
        let id = &sealed[1..5];
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                StoreError::new(format!(
                    "a value was sealed with vault key {}, which is not configured: set it as the vault key, or list it among the previous keys",
                    hex::encode(id)
                ))
            })?;
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(&sealed[5..HEADER]),
                Payload {
                    msg: &sealed[HEADER..],
                    aad,
                },
            )
            .map_err(|_| {
                StoreError::new("a sealed value does not open: the row was tampered with")
            })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| StoreError::new("a sealed value is not text"))
    }

    /// Whether `sealed` is under the current key.
    pub(crate) fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.len() >= HEADER && sealed[1..5] == self.current.id
    }
}

fn parse_key(text: &str, from: &str) -> Result<[u8; 32], StartError> {
    let bytes =
        hex::decode(text.trim()).map_err(|_| StartError::Key(format!("{from} is not hex")))?;
    bytes
        .try_into()
        .map_err(|_| StartError::Key(format!("{from} must be 64 hex digits (32 bytes)")))
}

fn read_key(path: &Path) -> Result<[u8; 32], StartError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartError::Key(format!("cannot read {}: {e}", path.display())))?;
    parse_key(&text, &path.display().to_string())
}

/// The keyring from the environment, the configured files, or a key
/// generated once as `{data_dir}/vault.key`.
pub(crate) fn load(
    data_dir: &Path,
    key_file: Option<&PathBuf>,
    previous_files: &[PathBuf],
) -> Result<Keyring, StartError> {
    let current = if let Ok(text) = std::env::var(VAULT_KEY_ENV) {
        parse_key(&text, VAULT_KEY_ENV)?
    } else if let Some(path) = key_file {
        read_key(path)?
    } else {
        let path = data_dir.join("vault.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_key(&text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(&path)?,
            Err(e) => {
                return Err(StartError::Key(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
    };
    let mut previous = Vec::new();
    if let Ok(text) = std::env::var(PREVIOUS_VAULT_KEYS_ENV) {
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            previous.push(parse_key(part, PREVIOUS_VAULT_KEYS_ENV)?);
        }
    }
    for path in previous_files {
        previous.push(read_key(path)?);
    }
    Ok(Keyring::new(current, &previous))
}

fn create_key(path: &Path) -> Result<[u8; 32], StartError> {
    use std::io::Write;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| StartError::Key(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| StartError::Key(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(hex::encode(key).as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| StartError::Key(format!("cannot write {}: {e}", path.display())))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_names_its_key_and_old_keys_still_open() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let sealed = Keyring::new(a, &[]).seal(b"row", "token-value");
        let rotated = Keyring::new(b, &[a]);
        assert_eq!(
            rotated.open(b"row", &sealed).unwrap().expose(),
            "token-value"
        );
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.is_current(&rotated.seal(b"row", "x")));
        let e = Keyring::new(b, &[])
            .open(b"row", &sealed)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not configured") && e.contains(&hex::encode(&sealed[1..5])),
            "{e}"
        );
        let e = rotated.open(b"other row", &sealed).unwrap_err().to_string();
        assert!(e.contains("tampered"), "{e}");
    }
}
