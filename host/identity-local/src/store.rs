//! The token vault and the consent sessions, in SQLite. Tokens, refresh
//! tokens, authorization codes and PKCE verifiers are sealed (see `keys`);
//! the associated data of each sealed value is every field that gives it
//! meaning (the row's workload, principal, provider, scopes, expiry; a
//! session's user, state, return URL, ...), so a value copied to another row,
//! or a row whose user, scopes or expiry was edited, does not open.

use std::path::Path;
use std::sync::Mutex;

use airlock_identity::Secret;
use airlock_policy::UserId;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use crate::keys::Keyring;
use crate::session::{Event, Status};

/// A storage failure (never carries a value from the vault).
#[derive(Debug, thiserror::Error)]
#[error("token vault: {0}")]
pub(crate) struct StoreError(String);

impl StoreError {
    pub(crate) fn new(m: impl Into<String>) -> StoreError {
        StoreError(m.into())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

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

/// A stored grant.
#[derive(Debug)]
pub(crate) struct VaultEntry {
    pub(crate) scopes: Vec<String>,
    pub(crate) access: Secret,
    pub(crate) refresh: Option<Secret>,
    /// Unix seconds; `None` when the provider gave no lifetime.
    pub(crate) expires_at: Option<i64>,
}

/// A consent session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) uri: String,
    pub(crate) state: String,
    pub(crate) workload: String,
    pub(crate) user: String,
    pub(crate) provider: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) return_url: String,
    pub(crate) custom_state: Option<String>,
    pub(crate) status: Status,
    pub(crate) reason: Option<String>,
    pub(crate) expires_at: i64,
    pub(crate) verifier: Option<Secret>,
    pub(crate) code: Option<Secret>,
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
";

const UPSERT_TOKEN: &str = "
INSERT INTO vault (workload, principal, user, provider, scopes, access, refresh, expires_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (workload, principal, user, provider) DO UPDATE SET
  scopes = excluded.scopes, access = excluded.access, refresh = excluded.refresh,
  expires_at = excluded.expires_at, updated_at = excluded.updated_at";

const SESSION_COLUMNS: &str =
    "uri, state, workload, user, provider, scopes, return_url, custom_state,
    status, reason, expires_at, verifier, code";

/// The associated data of a vault value: the whole row's meaning.
fn vault_aad(
    workload: &str,
    principal: (&str, &str),
    provider: &str,
    scopes: &str,
    expires_at: Option<i64>,
    kind: &str,
) -> Vec<u8> {
    json!([
        "vault",
        workload,
        principal.0,
        principal.1,
        provider,
        scopes,
        expires_at,
        kind
    ])
    .to_string()
    .into_bytes()
}

/// The associated data of a session value: everything the session decides.
fn session_aad(s: &Session, kind: &str) -> Vec<u8> {
    json!([
        "session",
        s.uri,
        s.state,
        s.workload,
        s.user,
        s.provider,
        s.scopes.join(" "),
        s.return_url,
        s.custom_state,
        s.expires_at,
        kind
    ])
    .to_string()
    .into_bytes()
}

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

    pub(crate) fn get_token(
        &self,
        workload: &str,
        principal: Principal<'_>,
        provider: &str,
    ) -> Result<Option<VaultEntry>, StoreError> {
        let p = principal.columns();
        let row = self
            .db()
            .query_row(
                "SELECT scopes, access, refresh, expires_at FROM vault
                 WHERE workload = ?1 AND principal = ?2 AND user = ?3 AND provider = ?4",
                params![workload, p.0, p.1, provider],
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
        let aad = |kind| vault_aad(workload, p, provider, &scopes, expires_at, kind);
        let access = self.keys.open(&aad("access"), &access)?;
        let refresh = refresh
            .map(|r| self.keys.open(&aad("refresh"), &r))
            .transpose()?;
        Ok(Some(VaultEntry {
            scopes: split_scopes(&scopes),
            access,
            refresh,
            expires_at,
        }))
    }

    fn sealed_entry(
        &self,
        workload: &str,
        p: (&str, &str),
        provider: &str,
        entry: &VaultEntry,
    ) -> (String, Vec<u8>, Option<Vec<u8>>) {
        let scopes = entry.scopes.join(" ");
        let aad = |kind| vault_aad(workload, p, provider, &scopes, entry.expires_at, kind);
        let access = self.keys.seal(&aad("access"), entry.access.expose());
        let refresh = entry
            .refresh
            .as_ref()
            .map(|r| self.keys.seal(&aad("refresh"), r.expose()));
        (scopes, access, refresh)
    }

    pub(crate) fn put_token(
        &self,
        workload: &str,
        principal: Principal<'_>,
        provider: &str,
        entry: &VaultEntry,
        now: i64,
    ) -> Result<(), StoreError> {
        let p = principal.columns();
        let (scopes, access, refresh) = self.sealed_entry(workload, p, provider, entry);
        self.db().execute(
            UPSERT_TOKEN,
            params![
                workload,
                p.0,
                p.1,
                provider,
                scopes,
                access,
                refresh,
                entry.expires_at,
                now
            ],
        )?;
        Ok(())
    }

    pub(crate) fn delete_token(
        &self,
        workload: &str,
        principal: Principal<'_>,
        provider: &str,
    ) -> Result<(), StoreError> {
        let p = principal.columns();
        self.db().execute(
            "DELETE FROM vault WHERE workload = ?1 AND principal = ?2 AND user = ?3 AND provider = ?4",
            params![workload, p.0, p.1, provider],
        )?;
        Ok(())
    }

    /// How many grants the vault holds for a user (any workload, any provider).
    pub(crate) fn count_tokens_for_user(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self.db().query_row(
            "SELECT COUNT(*) FROM vault WHERE principal = 'user' AND user = ?1",
            params![user],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// How many grants the vault holds for a workload itself.
    pub(crate) fn count_workload_tokens(&self, workload: &str) -> Result<u64, StoreError> {
        Ok(self.db().query_row(
            "SELECT COUNT(*) FROM vault WHERE principal = 'workload' AND workload = ?1",
            params![workload],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Store a new pending session with its sealed PKCE verifier.
    pub(crate) fn insert_session(&self, s: &Session, now: i64) -> Result<(), StoreError> {
        let verifier = s
            .verifier
            .as_ref()
            .map(|v| self.keys.seal(&session_aad(s, "verifier"), v.expose()));
        self.db().execute(
            "INSERT INTO sessions (uri, state, workload, user, provider, scopes, return_url, custom_state,
                                   verifier, code, status, reason, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, NULL, ?11, ?12)",
            params![
                s.uri, s.state, s.workload, s.user, s.provider, s.scopes.join(" "), s.return_url,
                s.custom_state, verifier, Status::Pending.as_str(), now, s.expires_at
            ],
        )?;
        Ok(())
    }

    fn session_where(&self, column: &str, value: &str) -> Result<Option<Session>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE {column} = ?1");
        let row = self
            .db()
            .query_row(&sql, params![value], |r| {
                let session = Session {
                    uri: r.get(0)?,
                    state: r.get(1)?,
                    workload: r.get(2)?,
                    user: r.get(3)?,
                    provider: r.get(4)?,
                    scopes: split_scopes(&r.get::<_, String>(5)?),
                    return_url: r.get(6)?,
                    custom_state: r.get(7)?,
                    status: Status::parse(&r.get::<_, String>(8)?),
                    reason: r.get(9)?,
                    expires_at: r.get(10)?,
                    verifier: None,
                    code: None,
                };
                let sealed: (Option<Vec<u8>>, Option<Vec<u8>>) = (r.get(11)?, r.get(12)?);
                Ok((session, sealed))
            })
            .optional()?;
        let Some((mut session, (verifier, code))) = row else {
            return Ok(None);
        };
        session.verifier = verifier
            .map(|v| self.keys.open(&session_aad(&session, "verifier"), &v))
            .transpose()?;
        session.code = code
            .map(|c| self.keys.open(&session_aad(&session, "code"), &c))
            .transpose()?;
        Ok(Some(session))
    }

    pub(crate) fn session(&self, uri: &str) -> Result<Option<Session>, StoreError> {
        self.session_where("uri", uri)
    }

    pub(crate) fn session_by_state(&self, state: &str) -> Result<Option<Session>, StoreError> {
        self.session_where("state", state)
    }

    /// Apply `event` to a session in status `from`, as the state machine
    /// allows; false when it was no longer in `from` (someone else got there
    /// first). Ending a session wipes its verifier and code.
    pub(crate) fn transition(
        &self,
        session: &Session,
        from: Status,
        event: Event<'_>,
    ) -> Result<bool, StoreError> {
        let to = from.next(&event).ok_or_else(|| {
            StoreError::new(format!(
                "a session cannot go from {} on {}",
                from.as_str(),
                event.name()
            ))
        })?;
        let (code, reason) = match &event {
            Event::CodeReceived(code) => (
                Some(self.keys.seal(&session_aad(session, "code"), code.expose())),
                None,
            ),
            Event::Failed(reason) => (None, Some(*reason)),
            _ => (None, None),
        };
        let n = self.db().execute(
            "UPDATE sessions SET status = ?3, reason = COALESCE(?4, reason),
                 code = CASE WHEN ?5 THEN NULL ELSE COALESCE(?6, code) END,
                 verifier = CASE WHEN ?5 THEN NULL ELSE verifier END
             WHERE uri = ?1 AND status = ?2",
            params![
                session.uri,
                from.as_str(),
                to.as_str(),
                reason,
                to.is_final(),
                code
            ],
        )?;
        Ok(n == 1)
    }

    /// Store the token and complete the session in one transaction.
    pub(crate) fn complete(
        &self,
        session: &Session,
        user: &UserId,
        entry: &VaultEntry,
        now: i64,
    ) -> Result<bool, StoreError> {
        let to = Status::Exchanging
            .next(&Event::TokenStored)
            .expect("the state machine completes an exchange");
        let principal = Principal::User(user);
        let p = principal.columns();
        let (scopes, access, refresh) =
            self.sealed_entry(&session.workload, p, &session.provider, entry);
        let mut db = self.db();
        let tx = db.transaction()?;
        let n = tx.execute(
            "UPDATE sessions SET status = ?2, code = NULL, verifier = NULL
             WHERE uri = ?1 AND status = ?3",
            params![session.uri, to.as_str(), Status::Exchanging.as_str()],
        )?;
        if n != 1 {
            return Ok(false);
        }
        tx.execute(
            UPSERT_TOKEN,
            params![
                session.workload,
                p.0,
                p.1,
                session.provider,
                scopes,
                access,
                refresh,
                entry.expires_at,
                now
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

    /// Seal again, under the current key, every value an earlier key sealed,
    /// in one transaction. Returns how many values moved.
    pub(crate) fn reseal(&self) -> Result<usize, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut moved = 0;
        let rows: Vec<VaultRow> = {
            let mut stmt = tx.prepare(
                "SELECT workload, principal, user, provider, scopes, access, refresh, expires_at FROM vault",
            )?;
            stmt.query_map([], |r| {
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
            .collect::<Result<_, _>>()?
        };
        for VaultRow {
            workload,
            principal,
            user,
            provider,
            scopes,
            access,
            refresh,
            expires_at,
        } in rows
        {
            let stale = !self.keys.is_current(&access)
                || refresh.as_ref().is_some_and(|r| !self.keys.is_current(r));
            if !stale {
                continue;
            }
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
        drop(db);
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

/// A session's URI and its sealed verifier and code.
type SealedSession = (String, Option<Vec<u8>>, Option<Vec<u8>>);

fn split_scopes(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, key: u8) -> Store {
        Store::open(&dir.join("vault.db"), Keyring::new([key; 32], &[])).unwrap()
    }

    fn entry() -> VaultEntry {
        VaultEntry {
            scopes: vec!["repo".into()],
            access: Secret::new("at-secret-value"),
            refresh: Some(Secret::new("rt-secret-value")),
            expires_at: Some(100),
        }
    }

    fn session(uri: &str, user: &str) -> Session {
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

    #[test]
    fn tokens_are_sealed_to_their_whole_row_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        {
            let s = store(dir.path(), 7);
            s.put_token("w", Principal::User(&alice), "github", &entry(), 1)
                .unwrap();
        }
        let raw = std::fs::read(dir.path().join("vault.db")).unwrap();
        let wal = std::fs::read(dir.path().join("vault.db-wal")).unwrap_or_default();
        for bytes in [&raw, &wal] {
            assert!(
                !bytes.windows(15).any(|w| w == b"at-secret-value"),
                "plaintext token on disk"
            );
        }
        let s = store(dir.path(), 7);
        let got = s
            .get_token("w", Principal::User(&alice), "github")
            .unwrap()
            .unwrap();
        assert_eq!(got.access.expose(), "at-secret-value");
        assert_eq!(got.refresh.unwrap().expose(), "rt-secret-value");

        // Alice's sealed token copied into Bob's row does not open.
        s.put_token("w", Principal::User(&bob), "github", &entry(), 1)
            .unwrap();
        s.execute("UPDATE vault SET access = (SELECT access FROM vault WHERE user = 'alice') WHERE user = 'bob'");
        assert!(s.get_token("w", Principal::User(&bob), "github").is_err());
        // Nor does a row whose scopes or expiry were widened.
        for tamper in [
            "UPDATE vault SET scopes = 'admin:org repo' WHERE user = 'alice'",
            "UPDATE vault SET scopes = 'repo', expires_at = 99999999999 WHERE user = 'alice'",
        ] {
            s.put_token("w", Principal::User(&alice), "github", &entry(), 1)
                .unwrap();
            s.execute(tamper);
            let e = s
                .get_token("w", Principal::User(&alice), "github")
                .unwrap_err()
                .to_string();
            assert!(e.contains("tampered"), "{tamper}: {e}");
        }
        // The workload's own row is not a user's, whatever the user column says.
        s.put_token("w", Principal::Workload, "github", &entry(), 1)
            .unwrap();
        s.execute(
            "UPDATE vault SET principal = 'user', user = 'mallory' WHERE principal = 'workload'",
        );
        let mallory = UserId::parse("mallory").unwrap();
        assert!(
            s.get_token("w", Principal::User(&mallory), "github")
                .is_err()
        );

        // Another key opens nothing, and says which key it would need.
        drop(s);
        let other = store(dir.path(), 8);
        s_err_names_key(&other, &bob);
    }

    fn s_err_names_key(s: &Store, user: &UserId) {
        let e = s
            .get_token("w", Principal::User(user), "github")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not configured"), "{e}");
    }

    #[test]
    fn a_sessions_secrets_are_bound_to_its_user_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 7);
        s.insert_session(&session("urn:a", "alice"), 1).unwrap();
        let read = s.session("urn:a").unwrap().unwrap();
        assert_eq!(read.verifier.unwrap().expose(), "verifier-secret-value");
        let read = s.session("urn:a").unwrap().unwrap();
        assert!(
            s.transition(
                &read,
                Status::Pending,
                Event::CodeReceived(&Secret::new("the-code"))
            )
            .unwrap()
        );
        assert_eq!(
            s.session("urn:a").unwrap().unwrap().code.unwrap().expose(),
            "the-code"
        );
        for tamper in [
            "UPDATE sessions SET user = 'mallory'",
            "UPDATE sessions SET user = 'alice', scopes = 'repo admin:org'",
            "UPDATE sessions SET scopes = 'repo', return_url = 'https://evil.example.com/'",
            "UPDATE sessions SET return_url = 'http://127.0.0.1:9/binding', expires_at = 99999999999",
        ] {
            s.execute(tamper);
            assert!(s.session("urn:a").is_err(), "{tamper}");
        }
    }

    #[test]
    fn two_transitions_from_one_status_at_once_let_exactly_one_win() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(store(dir.path(), 7));
        for n in 0..20 {
            let uri = format!("urn:{n}");
            s.insert_session(&session(&uri, "frank"), 1).unwrap();
            let pending = s.session(&uri).unwrap().unwrap();
            assert!(
                s.transition(
                    &pending,
                    Status::Pending,
                    Event::CodeReceived(&Secret::new("c"))
                )
                .unwrap()
            );
            // Both bindings read the session while it is authorized...
            let read = s.session(&uri).unwrap().unwrap();
            assert_eq!(read.status, Status::Authorized);
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (s, read, barrier) = (s.clone(), read.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        s.transition(&read, Status::Authorized, Event::BindingStarted)
                            .unwrap()
                    })
                })
                .collect();
            let won: Vec<bool> = racers.into_iter().map(|r| r.join().unwrap()).collect();
            // ...and only one may go on to exchange the code.
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
            assert_eq!(s.session(&uri).unwrap().unwrap().status, Status::Exchanging);
        }
        // Transitions the machine does not list are refused outright.
        let done = s.session("urn:0").unwrap().unwrap();
        assert!(
            s.transition(&done, Status::Exchanging, Event::BindingStarted)
                .is_err()
        );
    }

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
