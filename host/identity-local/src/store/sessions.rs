//! Session rows: a consent in progress, moved only as the state machine allows.

use airlock_identity::Secret;
use airlock_policy::UserId;
use rusqlite::{OptionalExtension, params};
use serde_json::json;

use super::tokens::VaultEntry;
use super::{Principal, Store, StoreError, split_scopes};
use crate::state::{Event, Status};

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

const SESSION_COLUMNS: &str =
    "uri, state, workload, user, provider, scopes, return_url, custom_state,
    status, reason, expires_at, verifier, code";

/// The associated data of a session value: everything the session decides.
pub(super) fn session_aad(s: &Session, kind: &str) -> Vec<u8> {
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
        self.write_token(
            &tx,
            &session.workload,
            Principal::User(user),
            &session.provider,
            entry,
            now,
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

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
}
