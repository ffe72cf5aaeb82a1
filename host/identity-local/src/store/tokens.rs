//! Vault rows: a user's or the workload's token for one provider.

use airlock_identity::Secret;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::{Principal, Store, StoreError, split_scopes};

/// A stored grant.
#[derive(Debug)]
pub(crate) struct VaultEntry {
    pub(crate) scopes: Vec<String>,
    pub(crate) access: Secret,
    pub(crate) refresh: Option<Secret>,
    /// Unix seconds; `None` when the provider gave no lifetime.
    pub(crate) expires_at: Option<i64>,
}

/// The associated data of a vault value: the whole row's meaning.
pub(super) fn vault_aad(
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

impl Store {
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

    /// Seal `entry` for its row and write it through `db` (the store's
    /// connection, or a transaction that completes a session with it).
    pub(super) fn write_token(
        &self,
        db: &Connection,
        workload: &str,
        principal: Principal<'_>,
        provider: &str,
        entry: &VaultEntry,
        now: i64,
    ) -> Result<(), StoreError> {
        let p = principal.columns();
        let scopes = entry.scopes.join(" ");
        let aad = |kind| vault_aad(workload, p, provider, &scopes, entry.expires_at, kind);
        let access = self.keys.seal(&aad("access"), entry.access.expose());
        let refresh = entry
            .refresh
            .as_ref()
            .map(|r| self.keys.seal(&aad("refresh"), r.expose()));
        db.execute(
            "INSERT INTO vault (workload, principal, user, provider, scopes, access, refresh, expires_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (workload, principal, user, provider) DO UPDATE SET
               scopes = excluded.scopes, access = excluded.access, refresh = excluded.refresh,
               expires_at = excluded.expires_at, updated_at = excluded.updated_at",
            params![workload, p.0, p.1, provider, scopes, access, refresh, entry.expires_at, now],
        )?;
        Ok(())
    }

    pub(crate) fn put_token(
        &self,
        workload: &str,
        principal: Principal<'_>,
        provider: &str,
        entry: &VaultEntry,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write_token(&self.db(), workload, principal, provider, entry, now)
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use airlock_policy::UserId;

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
}
