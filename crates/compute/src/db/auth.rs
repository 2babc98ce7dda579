//! What the renter remembers of nicompute's signed extension: which miners have answered with a
//! valid signature (`nc_miner_auth`), so that an answer without one from them later is taken
//! for what it is — an answer stripped or forged on the path — and the SSH host key each signed
//! allocation pins (in the allocation's `details`, beside SN27's keys).

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension};

use super::allocation::AllocationDetails;
use super::{sql_ms, value_text, ComputeDb, DbError};

impl ComputeDb {
    /// Records that `hotkey` answered with a valid signature now.
    pub fn mark_signer(&self, hotkey: &str) -> Result<(), DbError> {
        let now = sql_ms(self.clock().now_ms());
        self.write(|tx| Ok(write_signer(tx, hotkey, now)?))
    }

    /// The miners that have signed an answer before: their answers must be signed.
    pub fn signers(&self) -> Result<HashSet<String>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT hotkey FROM nc_miner_auth")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<HashSet<_>>>()?;
            Ok(rows)
        })
    }

    /// Whether `hotkey` has signed an answer before.
    pub fn is_signer(&self, hotkey: &str) -> Result<bool, DbError> {
        self.read(|conn| {
            Ok(conn
                .query_row("SELECT 1 FROM nc_miner_auth WHERE hotkey = ?1", [hotkey], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    /// Forgets that `hotkey` signs (its operator moved to a miner without the extension).
    pub fn forget_signer(&self, hotkey: &str) -> Result<bool, DbError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM nc_miner_auth WHERE hotkey = ?1", [hotkey])? > 0))
    }

    /// Replaces the pinned host key of `hotkey`'s allocation (a key the miner signed after it
    /// recreated the machine). `false` when there is no readable allocation row.
    pub fn set_host_key(&self, hotkey: &str, host_key: &str) -> Result<bool, DbError> {
        self.write(|tx| {
            let text: Option<Option<String>> = tx
                .query_row("SELECT details FROM allocation WHERE hotkey = ?1", [hotkey], |r| {
                    Ok(value_text(r.get_ref(0)?))
                })
                .optional()?;
            let Some(mut details) = text.flatten().and_then(|t| AllocationDetails::from_json(&t).ok()) else {
                return Ok(false);
            };
            details.host_key = Some(host_key.to_owned());
            tx.execute("UPDATE allocation SET details = ?2 WHERE hotkey = ?1", params![hotkey, details.to_json()])?;
            Ok(true)
        })
    }
}

/// `mark_signer`'s row, in a transaction the caller holds.
pub(super) fn write_signer(tx: &rusqlite::Transaction<'_>, hotkey: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO nc_miner_auth (hotkey, first_signed_ms, last_signed_ms) VALUES (?1, ?2, ?2) \
         ON CONFLICT(hotkey) DO UPDATE SET last_signed_ms = excluded.last_signed_ms",
        params![hotkey, now],
    )?;
    Ok(())
}
