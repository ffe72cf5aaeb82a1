//! The token vault and the consent sessions, in SQLite. Tokens, refresh
//! tokens, authorization codes and PKCE verifiers are sealed (see `keys`);
//! the associated data of each sealed value is every field that gives it
//! meaning (the row's workload, principal, provider, scopes, expiry; a
//! session's user, state, return URL, ...), so a value copied to another row,
//! or a row whose user, scopes or expiry was edited, does not open.

mod sessions;
mod tokens;
mod workloads;

use std::path::Path;
use std::sync::Mutex;

use airlock_identity::Secret;
use airlock_policy::UserId;
use rusqlite::{Connection, params};

use crate::error::StoreError;
use crate::keys::Keyring;

pub(crate) use sessions::Session;
use sessions::session_aad;
pub(crate) use tokens::VaultEntry;
use tokens::vault_aad;
pub(crate) use workloads::WorkloadRow;

/// Whose token a vault row holds: a user's (user federation) or the
/// workload's own (client credentials). Typed, so neither can pose as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principal<'a> {
    User(&'a UserId),
    Workload,
}

impl Principal<'_> {
    fn columns(&self) -> (&'static str, &str) {
        match self {
            Principal::User(u) => ("user", u.as_str()),
            Principal::Workload => ("workload", ""),
        }
    }
}

pub(crate) struct Store {
    db: Mutex<Connection>,
    keys: Keyring,
}

const VERSION: i64 = 2;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS vault (
    workload TEXT NOT NULL,
    principal TEXT NOT NULL CHECK (principal IN ('user', 'workload')),
    user TEXT NOT NULL, provider TEXT NOT NULL,
    scopes TEXT NOT NULL, access BLOB NOT NULL, refresh BLOB, expires_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workload, principal, user, provider)
);
CREATE TABLE IF NOT EXISTS sessions (
    uri TEXT PRIMARY KEY, state TEXT NOT NULL UNIQUE,
    workload TEXT NOT NULL, user TEXT NOT NULL, provider TEXT NOT NULL,
    scopes TEXT NOT NULL, return_url TEXT NOT NULL, custom_state TEXT,
    verifier BLOB, code BLOB, status TEXT NOT NULL, reason TEXT,
    created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workloads (
    name TEXT PRIMARY KEY, return_urls TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
";

impl Store {
    pub(crate) fn open(path: &Path, keys: Keyring) -> Result<Store, StoreError> {
        let db = Connection::open(path)?;
        let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = db.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'vault'",
            [],
            |r| r.get(0),
        )?;
        if version != VERSION && tables > 0 {
            return Err(StoreError::new(format!(
                "{} was written by an earlier version of Airlock (format {version}, this one reads {VERSION}); move it aside and consent again",
                path.display()
            )));
        }
        db.execute_batch(SCHEMA)?;
        db.execute_batch(&format!("PRAGMA user_version = {VERSION};"))?;
        Ok(Store {
            db: Mutex::new(db),
            keys,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written row: each
        // write is one statement or one transaction.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seal again, under the current key, every value an earlier key sealed.
    /// Returns how many values moved.
    pub(crate) fn reseal(&self) -> Result<usize, StoreError> {
        Ok(self.reseal_vault()? + self.reseal_sessions()?)
    }

    /// The vault rows, in one transaction: a row's access and refresh tokens
    /// move together, so no row is left half under each key.
    fn reseal_vault(&self) -> Result<usize, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut moved = 0;
        for row in vault_rows(&tx)? {
            let stale = !self.keys.is_current(&row.access)
                || row
                    .refresh
                    .as_ref()
                    .is_some_and(|r| !self.keys.is_current(r));
            if !stale {
                continue;
            }
            let VaultRow {
                workload,
                principal,
                user,
                provider,
                scopes,
                access,
                refresh,
                expires_at,
            } = row;
            let p = (principal.as_str(), user.as_str());
            let aad = |kind| vault_aad(&workload, p, &provider, &scopes, expires_at, kind);
            let reseal = |kind, sealed: &[u8]| -> Result<Vec<u8>, StoreError> {
                Ok(self
                    .keys
                    .seal(&aad(kind), self.keys.open(&aad(kind), sealed)?.expose()))
            };
            let access = reseal("access", &access)?;
            let refresh = refresh.map(|r| reseal("refresh", &r)).transpose()?;
            tx.execute(
                "UPDATE vault SET access = ?5, refresh = ?6
                 WHERE workload = ?1 AND principal = ?2 AND user = ?3 AND provider = ?4",
                params![workload, principal, user, provider, access, refresh],
            )?;
            moved += 1;
        }
        tx.commit()?;
        Ok(moved)
    }

    /// The sessions' verifiers and codes, one session at a time: each is
    /// read through `session`, which opens it with whichever key sealed it.
    fn reseal_sessions(&self) -> Result<usize, StoreError> {
        let mut moved = 0;
        let uris: Vec<SealedSession> = {
            let db = self.db();
            let mut stmt = db.prepare("SELECT uri, verifier, code FROM sessions")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        for (uri, verifier, code) in uris {
            let stale = [verifier, code]
                .iter()
                .flatten()
                .any(|v| !self.keys.is_current(v));
            let Some(s) = stale.then(|| self.session(&uri)).transpose()?.flatten() else {
                continue;
            };
            let seal = |kind, v: &Option<Secret>| {
                v.as_ref()
                    .map(|v| self.keys.seal(&session_aad(&s, kind), v.expose()))
            };
            self.db().execute(
                "UPDATE sessions SET verifier = ?2, code = ?3 WHERE uri = ?1",
                params![uri, seal("verifier", &s.verifier), seal("code", &s.code)],
            )?;
            moved += 1;
        }
        Ok(moved)
    }

    #[cfg(test)]
    pub(crate) fn execute(&self, sql: &str) {
        self.db().execute_batch(sql).unwrap();
    }
}

/// A vault row as stored, its values still sealed.
struct VaultRow {
    workload: String,
    principal: String,
    user: String,
    provider: String,
    scopes: String,
    access: Vec<u8>,
    refresh: Option<Vec<u8>>,
    expires_at: Option<i64>,
}

/// Every vault row, read inside `tx` so that resealing sees one snapshot.
fn vault_rows(tx: &rusqlite::Transaction<'_>) -> Result<Vec<VaultRow>, StoreError> {
    let mut stmt = tx.prepare(
        "SELECT workload, principal, user, provider, scopes, access, refresh, expires_at FROM vault",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(VaultRow {
                workload: r.get(0)?,
                principal: r.get(1)?,
                user: r.get(2)?,
                provider: r.get(3)?,
                scopes: r.get(4)?,
                access: r.get(5)?,
                refresh: r.get(6)?,
                expires_at: r.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A session's URI and its sealed verifier and code.
type SealedSession = (String, Option<Vec<u8>>, Option<Vec<u8>>);

fn split_scopes(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Shared by the unit tests of the store's parts.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::state::Status;

    pub(crate) fn store(dir: &Path, key: u8) -> Store {
        Store::open(&dir.join("vault.db"), Keyring::new([key; 32], &[])).unwrap()
    }

    pub(crate) fn entry() -> VaultEntry {
        VaultEntry {
            scopes: vec!["repo".into()],
            access: Secret::new("at-secret-value"),
            refresh: Some(Secret::new("rt-secret-value")),
            expires_at: Some(100),
        }
    }

    pub(crate) fn session(uri: &str, user: &str) -> Session {
        Session {
            uri: uri.into(),
            state: format!("state-{uri}"),
            workload: "w".into(),
            user: user.into(),
            provider: "github".into(),
            scopes: vec!["repo".into()],
            return_url: "http://127.0.0.1:9/binding".into(),
            custom_state: None,
            status: Status::Pending,
            reason: None,
            expires_at: 1000,
            verifier: Some(Secret::new("verifier-secret-value")),
            code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn rotation_reseals_under_the_new_key_and_the_old_key_can_go() {
        let dir = tempfile::tempdir().unwrap();
        let alice = UserId::parse("alice").unwrap();
        {
            let s = store(dir.path(), 1);
            s.put_token("w", Principal::User(&alice), "github", &entry(), 1)
                .unwrap();
            s.insert_session(&session("urn:r", "alice"), 1).unwrap();
        }
        {
            let s = Store::open(
                &dir.path().join("vault.db"),
                Keyring::new([2; 32], &[[1; 32]]),
            )
            .unwrap();
            assert_eq!(s.reseal().unwrap(), 2, "the token row and the session");
            assert_eq!(s.reseal().unwrap(), 0, "nothing left under the old key");
        }
        let s = store(dir.path(), 2);
        let got = s
            .get_token("w", Principal::User(&alice), "github")
            .unwrap()
            .unwrap();
        assert_eq!(got.access.expose(), "at-secret-value");
        assert!(s.session("urn:r").unwrap().unwrap().verifier.is_some());
    }

    #[test]
    fn a_vault_from_an_earlier_format_is_named_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE vault (workload TEXT);")
            .unwrap();
        let e = Store::open(&path, Keyring::new([1; 32], &[]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("earlier version") && e.contains("move it aside"),
            "{e}"
        );
    }
}
