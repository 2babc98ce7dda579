//! What the renter shares on wandb, as the local database remembers it: SN27's `wandb_runs`
//! (the validator run's id per hotkey, so the same run is updated every time, as SN27 does) and
//! our `nc_wandb_publication` (per list — `allocated` or `penalized` — whether the last change
//! still has to be published, when it last was, and the last error).
//!
//! A publication is marked pending in the same moment the local change is made and cleared only
//! when wandb confirmed it, so a failed or interrupted publication is retried by the next
//! command that publishes (or `reconcile`) and never lost.

use rusqlite::{params, OptionalExtension};

use super::{sql_ms, value_text, value_u64, ComputeDb, DbError};

/// The state of one published list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationRecord {
    /// `allocated` or `penalized`.
    pub list: String,
    /// A local change has not reached wandb yet.
    pub pending: bool,
    pub last_attempt_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    pub last_error: Option<String>,
}

impl ComputeDb {
    /// The wandb run id SN27 stored for `hotkey`.
    pub fn wandb_run_id(&self, hotkey: &str) -> Result<Option<String>, DbError> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT run_id FROM wandb_runs WHERE hotkey = ?1", [hotkey], |r| {
                    Ok(value_text(r.get_ref(0)?))
                })
                .optional()?
                .flatten())
        })
    }

    /// Stores `hotkey`'s run id (SN27's `INSERT OR REPLACE`).
    pub fn set_wandb_run_id(&self, hotkey: &str, run_id: &str) -> Result<(), DbError> {
        self.write(|tx| {
            tx.execute("INSERT OR REPLACE INTO wandb_runs (hotkey, run_id) VALUES (?1, ?2)", [hotkey, run_id])?;
            Ok(())
        })
    }

    /// Marks `list` as changed locally and not yet published.
    pub fn mark_publication_pending(&self, list: &str) -> Result<(), DbError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO nc_wandb_publication (list, pending) VALUES (?1, 1) \
                 ON CONFLICT(list) DO UPDATE SET pending = 1",
                [list],
            )?;
            Ok(())
        })
    }

    /// Records an attempt to publish `list`: success clears `pending` and the error.
    pub fn record_publication(&self, list: &str, result: Result<(), &str>, now_ms: u64) -> Result<(), DbError> {
        let now = sql_ms(now_ms);
        self.write(|tx| {
            match result {
                Ok(()) => tx.execute(
                    "INSERT INTO nc_wandb_publication (list, pending, last_attempt_ms, last_success_ms, last_error) \
                     VALUES (?1, 0, ?2, ?2, NULL) ON CONFLICT(list) DO UPDATE SET pending = 0, \
                     last_attempt_ms = ?2, last_success_ms = ?2, last_error = NULL",
                    params![list, now],
                )?,
                Err(e) => tx.execute(
                    "INSERT INTO nc_wandb_publication (list, pending, last_attempt_ms, last_error) \
                     VALUES (?1, 1, ?2, ?3) ON CONFLICT(list) DO UPDATE SET pending = 1, \
                     last_attempt_ms = ?2, last_error = ?3",
                    params![list, now, e],
                )?,
            };
            Ok(())
        })
    }

    /// Every list's publication state, by name.
    pub fn publications(&self) -> Result<Vec<PublicationRecord>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT list, pending, last_attempt_ms, last_success_ms, last_error FROM nc_wandb_publication ORDER BY list",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(PublicationRecord {
                    list: value_text(r.get_ref(0)?).unwrap_or_default(),
                    pending: r.get::<_, Option<i64>>(1)?.unwrap_or(0) != 0,
                    last_attempt_ms: value_u64(r.get_ref(2)?),
                    last_success_ms: value_u64(r.get_ref(3)?),
                    last_error: value_text(r.get_ref(4)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_and_publication_state_persist() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("database.db");
        let db = ComputeDb::open(&path).expect("open");
        assert_eq!(db.wandb_run_id("5Hk").expect("read"), None);
        db.set_wandb_run_id("5Hk", "abc123").expect("set");
        db.set_wandb_run_id("5Hk", "def456").expect("replace");
        assert_eq!(db.wandb_run_id("5Hk").expect("read").as_deref(), Some("def456"));

        db.mark_publication_pending("allocated").expect("mark");
        db.record_publication("allocated", Err("wandb unreachable"), 10).expect("fail");
        let p = &db.publications().expect("list")[0];
        assert!(p.pending);
        assert_eq!(p.last_error.as_deref(), Some("wandb unreachable"));
        assert_eq!(p.last_success_ms, None);
        drop(db);

        let db = ComputeDb::open(&path).expect("reopen");
        assert!(db.publications().expect("list")[0].pending, "a failed publication stays pending across runs");
        db.record_publication("allocated", Ok(()), 20).expect("ok");
        let p = &db.publications().expect("list")[0];
        assert!(!p.pending);
        assert_eq!((p.last_attempt_ms, p.last_success_ms, p.last_error.clone()), (Some(20), Some(20), None));
    }
}
