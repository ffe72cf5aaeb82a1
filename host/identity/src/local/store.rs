//! The token vault and the consent sessions, in SQLite. Tokens, refresh
//! tokens, authorization codes and PKCE verifiers are sealed with AES-256-GCM;
//! the associated data names the row, so a sealed value moved to another
//! user's row does not open.

use std::path::Path;
use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rusqlite::{Connection, OptionalExtension, params};

use crate::secret::Secret;

/// A storage failure (never carries a value from the vault).
#[derive(Debug, thiserror::Error)]
#[error("token vault: {0}")]
pub(crate) struct StoreError(String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// A stored grant.
#[derive(Debug)]
pub(crate) struct VaultEntry {
    pub(crate) scopes: Vec<String>,
    pub(crate) access: Secret,
    pub(crate) refresh: Option<Secret>,
    /// Unix seconds; `None` when the provider gave no lifetime.
    pub(crate) expires_at: Option<i64>,
}

/// Where a consent session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionStatus {
    /// Waiting for the user at the provider.
    Pending,
    /// The provider sent a code; waiting for CompleteResourceTokenAuth.
    Authorized,
    /// The right user is binding it; the code is being exchanged (once).
    Exchanging,
    /// Bound and stored.
    Completed,
    /// Denied, bound by the wrong user, or failed exchange. Spent.
    Failed,
}

impl SessionStatus {
    fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "pending",
            SessionStatus::Authorized => "authorized",
            SessionStatus::Exchanging => "exchanging",
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> SessionStatus {
        match s {
            "pending" => SessionStatus::Pending,
            "authorized" => SessionStatus::Authorized,
            "exchanging" => SessionStatus::Exchanging,
            "completed" => SessionStatus::Completed,
            _ => SessionStatus::Failed,
        }
    }
}

/// A consent session.
pub(crate) struct Session {
    pub(crate) uri: String,
    pub(crate) workload: String,
    pub(crate) user: String,
    pub(crate) provider: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) return_url: String,
    pub(crate) custom_state: Option<String>,
    pub(crate) status: SessionStatus,
    pub(crate) reason: Option<String>,
    pub(crate) expires_at: i64,
    pub(crate) verifier: Option<Secret>,
    pub(crate) code: Option<Secret>,
}

pub(crate) struct NewSession<'a> {
    pub(crate) uri: &'a str,
    pub(crate) state: &'a str,
    pub(crate) workload: &'a str,
    pub(crate) user: &'a str,
    pub(crate) provider: &'a str,
    pub(crate) scopes: &'a [String],
    pub(crate) return_url: &'a str,
    pub(crate) custom_state: Option<&'a str>,
    pub(crate) verifier: &'a Secret,
    pub(crate) now: i64,
    pub(crate) expires_at: i64,
}

pub(crate) struct Store {
    db: Mutex<Connection>,
    cipher: Aes256Gcm,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS vault (
    workload TEXT NOT NULL, user TEXT NOT NULL, provider TEXT NOT NULL,
    scopes TEXT NOT NULL, access BLOB NOT NULL, refresh BLOB, expires_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workload, user, provider)
);
CREATE TABLE IF NOT EXISTS sessions (
    uri TEXT PRIMARY KEY, state TEXT NOT NULL UNIQUE,
    workload TEXT NOT NULL, user TEXT NOT NULL, provider TEXT NOT NULL,
    scopes TEXT NOT NULL, return_url TEXT NOT NULL, custom_state TEXT,
    verifier BLOB, code BLOB, status TEXT NOT NULL, reason TEXT,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
);
";

impl Store {
    pub(crate) fn open(path: &Path, key: &[u8; 32]) -> Result<Store, StoreError> {
        let db = Connection::open(path)?;
        db.execute_batch(SCHEMA)?;
        Ok(Store {
            db: Mutex::new(db),
            cipher: Aes256Gcm::new(key.into()),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written row: each
        // write is one statement or one transaction.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seal(&self, aad: &str, value: &str) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a small value");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    fn open_sealed(&self, aad: &str, sealed: &[u8]) -> Result<Secret, StoreError> {
        if sealed.len() < 12 {
            return Err(StoreError("a sealed value is truncated".into()));
        }
        let (nonce, body) = sealed.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                StoreError(
                    "a sealed value does not open: wrong vault key, or the row was tampered with"
                        .into(),
                )
            })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| StoreError("a sealed value is not text".into()))
    }

    fn vault_aad(workload: &str, user: &str, provider: &str, kind: &str) -> String {
        format!("vault\0{workload}\0{user}\0{provider}\0{kind}")
    }

    fn session_aad(uri: &str, kind: &str) -> String {
        format!("session\0{uri}\0{kind}")
    }

    pub(crate) fn get_token(
        &self,
        workload: &str,
        user: &str,
        provider: &str,
    ) -> Result<Option<VaultEntry>, StoreError> {
        let row = self
            .db()
            .query_row(
                "SELECT scopes, access, refresh, expires_at FROM vault WHERE workload = ?1 AND user = ?2 AND provider = ?3",
                params![workload, user, provider],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((scopes, access, refresh, expires_at)) = row else {
            return Ok(None);
        };
        let access = self.open_sealed(
            &Self::vault_aad(workload, user, provider, "access"),
            &access,
        )?;
        let refresh = refresh
            .map(|r| self.open_sealed(&Self::vault_aad(workload, user, provider, "refresh"), &r))
            .transpose()?;
        Ok(Some(VaultEntry {
            scopes: split_scopes(&scopes),
            access,
            refresh,
            expires_at,
        }))
    }

    pub(crate) fn put_token(
        &self,
        workload: &str,
        user: &str,
        provider: &str,
        entry: &VaultEntry,
        now: i64,
    ) -> Result<(), StoreError> {
        let access = self.seal(
            &Self::vault_aad(workload, user, provider, "access"),
            entry.access.expose(),
        );
        let refresh = entry.refresh.as_ref().map(|r| {
            self.seal(
                &Self::vault_aad(workload, user, provider, "refresh"),
                r.expose(),
            )
        });
        self.db().execute(
            "INSERT INTO vault (workload, user, provider, scopes, access, refresh, expires_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (workload, user, provider) DO UPDATE SET
               scopes = excluded.scopes, access = excluded.access, refresh = excluded.refresh,
               expires_at = excluded.expires_at, updated_at = excluded.updated_at",
            params![workload, user, provider, entry.scopes.join(" "), access, refresh, entry.expires_at, now],
        )?;
        Ok(())
    }

    pub(crate) fn delete_token(
        &self,
        workload: &str,
        user: &str,
        provider: &str,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "DELETE FROM vault WHERE workload = ?1 AND user = ?2 AND provider = ?3",
            params![workload, user, provider],
        )?;
        Ok(())
    }

    /// How many grants the vault holds for a user (any workload, any provider).
    pub(crate) fn count_tokens_for_user(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self.db().query_row(
            "SELECT COUNT(*) FROM vault WHERE user = ?1",
            params![user],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    pub(crate) fn insert_session(&self, s: &NewSession<'_>) -> Result<(), StoreError> {
        let verifier = self.seal(&Self::session_aad(s.uri, "verifier"), s.verifier.expose());
        self.db().execute(
            "INSERT INTO sessions (uri, state, workload, user, provider, scopes, return_url, custom_state,
                                   verifier, code, status, reason, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, 'pending', NULL, ?10, ?11)",
            params![
                s.uri, s.state, s.workload, s.user, s.provider, s.scopes.join(" "), s.return_url,
                s.custom_state, verifier, s.now, s.expires_at
            ],
        )?;
        Ok(())
    }

    fn session_where(&self, column: &str, value: &str) -> Result<Option<Session>, StoreError> {
        let sql = format!(
            "SELECT uri, workload, user, provider, scopes, return_url, status, reason, expires_at, verifier, code,
                    custom_state
             FROM sessions WHERE {column} = ?1"
        );
        let row = self
            .db()
            .query_row(&sql, params![value], |r| {
                let session = Session {
                    uri: r.get(0)?,
                    workload: r.get(1)?,
                    user: r.get(2)?,
                    provider: r.get(3)?,
                    scopes: split_scopes(&r.get::<_, String>(4)?),
                    return_url: r.get(5)?,
                    status: SessionStatus::parse(&r.get::<_, String>(6)?),
                    reason: r.get(7)?,
                    expires_at: r.get(8)?,
                    custom_state: r.get(11)?,
                    verifier: None,
                    code: None,
                };
                let sealed: (Option<Vec<u8>>, Option<Vec<u8>>) = (r.get(9)?, r.get(10)?);
                Ok((session, sealed))
            })
            .optional()?;
        let Some((mut session, (verifier, code))) = row else {
            return Ok(None);
        };
        let uri = session.uri.clone();
        session.verifier = verifier
            .map(|v| self.open_sealed(&Self::session_aad(&uri, "verifier"), &v))
            .transpose()?;
        session.code = code
            .map(|c| self.open_sealed(&Self::session_aad(&uri, "code"), &c))
            .transpose()?;
        Ok(Some(session))
    }

    pub(crate) fn session(&self, uri: &str) -> Result<Option<Session>, StoreError> {
        self.session_where("uri", uri)
    }

    pub(crate) fn session_by_state(&self, state: &str) -> Result<Option<Session>, StoreError> {
        self.session_where("state", state)
    }

    /// Move a session from `from` to `to`; false when it was not in `from`
    /// (someone else got there first). Failing or completing wipes the
    /// verifier and code.
    pub(crate) fn transition(
        &self,
        uri: &str,
        from: SessionStatus,
        to: SessionStatus,
        code: Option<&Secret>,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sealed_code = code.map(|c| self.seal(&Self::session_aad(uri, "code"), c.expose()));
        let wipe = matches!(to, SessionStatus::Completed | SessionStatus::Failed);
        let n = self.db().execute(
            "UPDATE sessions SET status = ?3, reason = COALESCE(?4, reason),
                 code = CASE WHEN ?5 THEN NULL ELSE COALESCE(?6, code) END,
                 verifier = CASE WHEN ?5 THEN NULL ELSE verifier END
             WHERE uri = ?1 AND status = ?2",
            params![uri, from.as_str(), to.as_str(), reason, wipe, sealed_code],
        )?;
        Ok(n == 1)
    }

    /// Store the token and complete the session in one transaction.
    pub(crate) fn complete(
        &self,
        session: &Session,
        entry: &VaultEntry,
        now: i64,
    ) -> Result<bool, StoreError> {
        let access = self.seal(
            &Self::vault_aad(
                &session.workload,
                &session.user,
                &session.provider,
                "access",
            ),
            entry.access.expose(),
        );
        let refresh = entry.refresh.as_ref().map(|r| {
            self.seal(
                &Self::vault_aad(
                    &session.workload,
                    &session.user,
                    &session.provider,
                    "refresh",
                ),
                r.expose(),
            )
        });
        let mut db = self.db();
        let tx = db.transaction()?;
        let n = tx.execute(
            "UPDATE sessions SET status = 'completed', code = NULL, verifier = NULL
             WHERE uri = ?1 AND status = 'exchanging'",
            params![session.uri],
        )?;
        if n != 1 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO vault (workload, user, provider, scopes, access, refresh, expires_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (workload, user, provider) DO UPDATE SET
               scopes = excluded.scopes, access = excluded.access, refresh = excluded.refresh,
               expires_at = excluded.expires_at, updated_at = excluded.updated_at",
            params![
                session.workload, session.user, session.provider, entry.scopes.join(" "),
                access, refresh, entry.expires_at, now
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Forget sessions that ended long ago (a day after they expired).
    pub(crate) fn prune_sessions(&self, now: i64) -> Result<(), StoreError> {
        self.db().execute(
            "DELETE FROM sessions WHERE expires_at < ?1",
            params![now - 86_400],
        )?;
        Ok(())
    }
}

fn split_scopes(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_sealed_to_their_row_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        let key = [7u8; 32];
        let entry = VaultEntry {
            scopes: vec!["repo".into()],
            access: Secret::new("at-secret-value"),
            refresh: Some(Secret::new("rt-secret-value")),
            expires_at: Some(100),
        };
        {
            let store = Store::open(&path, &key).unwrap();
            store.put_token("w", "alice", "github", &entry, 1).unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(dir.path().join("vault.db-wal")).unwrap_or_default();
        for bytes in [&raw, &wal] {
            assert!(
                !bytes.windows(15).any(|w| w == b"at-secret-value"),
                "plaintext token on disk"
            );
        }
        let store = Store::open(&path, &key).unwrap();
        let got = store.get_token("w", "alice", "github").unwrap().unwrap();
        assert_eq!(got.access.expose(), "at-secret-value");
        assert_eq!(got.refresh.unwrap().expose(), "rt-secret-value");

        // Alice's sealed token copied into Bob's row does not open.
        store.put_token("w", "bob", "github", &entry, 1).unwrap();
        store
            .db()
            .execute(
                "UPDATE vault SET access = (SELECT access FROM vault WHERE user = 'alice') WHERE user = 'bob'",
                [],
            )
            .unwrap();
        assert!(store.get_token("w", "bob", "github").is_err());

        // Another key opens nothing.
        drop(store);
        let other = Store::open(&path, &[8u8; 32]).unwrap();
        assert!(
            other
                .get_token("w", "alice", "github")
                .unwrap_err()
                .to_string()
                .contains("wrong vault key")
        );
    }
}
