//! Workload identities created through the control plane (those in the
//! configuration file are not stored: the file is their source).

use rusqlite::params;

use super::{Store, StoreError};

/// A created workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkloadRow {
    pub(crate) name: String,
    pub(crate) return_urls: Vec<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl Store {
    /// Insert `row`; false when the name is taken (nothing written).
    pub(crate) fn create_workload(&self, row: &WorkloadRow) -> Result<bool, StoreError> {
        let urls =
            serde_json::to_string(&row.return_urls).map_err(|e| StoreError::new(e.to_string()))?;
        let n = self.db().execute(
            "INSERT INTO workloads (name, return_urls, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
            params![row.name, urls, row.created_at, row.updated_at],
        )?;
        Ok(n == 1)
    }

    /// Replace the return URLs of `name`; false when there is no such row.
    pub(crate) fn update_workload(
        &self,
        name: &str,
        return_urls: &[String],
        now: i64,
    ) -> Result<bool, StoreError> {
        let urls =
            serde_json::to_string(return_urls).map_err(|e| StoreError::new(e.to_string()))?;
        let n = self.db().execute(
            "UPDATE workloads SET return_urls = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, urls, now],
        )?;
        Ok(n == 1)
    }

    /// Every created workload identity.
    pub(crate) fn workloads(&self) -> Result<Vec<WorkloadRow>, StoreError> {
        let db = self.db();
        let mut query =
            db.prepare("SELECT name, return_urls, created_at, updated_at FROM workloads")?;
        let rows = query.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, urls, created_at, updated_at) = row?;
            let return_urls = serde_json::from_str(&urls)
                .map_err(|e| StoreError::new(format!("workload `{name}`: return URLs: {e}")))?;
            out.push(WorkloadRow {
                name,
                return_urls,
                created_at,
                updated_at,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::store;

    #[test]
    fn created_workloads_survive_reopening_and_a_name_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let row = WorkloadRow {
            name: "agent.weather".into(),
            return_urls: vec!["https://bind.example/b".into()],
            created_at: 10,
            updated_at: 10,
        };
        {
            let s = store(dir.path(), 1);
            assert!(s.create_workload(&row).unwrap());
            assert!(
                !s.create_workload(&WorkloadRow {
                    return_urls: vec![],
                    ..row.clone()
                })
                .unwrap()
            );
        }
        let s = store(dir.path(), 1);
        assert_eq!(s.workloads().unwrap(), vec![row.clone()]);
        let urls = vec![
            "https://a.example/".to_string(),
            "https://b.example/".to_string(),
        ];
        assert!(s.update_workload("agent.weather", &urls, 20).unwrap());
        assert!(!s.update_workload("agent.other", &urls, 20).unwrap());
        let got = &s.workloads().unwrap()[0];
        assert_eq!(
            (got.return_urls.clone(), got.created_at, got.updated_at),
            (urls, 10, 20)
        );
    }
}
