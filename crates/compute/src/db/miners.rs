//! The network's miners as a renter or validator knows them: SN27's `miner_details` (each
//! miner's last reported specs and how many specs requests in a row went unanswered), our
//! `nc_miner_seen` (when it last answered, when its specs last changed, its last error), and
//! SN27's `blacklist` of penalized hotkeys.
//!
//! SN27 shows specs with no age and no liveness, so a machine that went offline months ago still
//! looks available; `nc_miner_seen` is what lets `list_r` say how old each line is.

use rusqlite::{params, Row};
use serde_json::Value;

use super::{sql_ms, value_int, value_str, value_text, value_u64, ComputeDb, DbError};
use crate::specs::Specs;

/// Unanswered specs requests in a row after which a miner's specs are blanked (SN27's cap).
pub const NO_SPECS_LIMIT: u32 = 5;

/// One `miner_details` row with what we know of the miner's liveness.
#[derive(Debug, Clone, PartialEq)]
pub struct MinerRecord {
    /// `miner_details.id` (SN27 has used the uid here in some versions; it is not relied upon).
    pub id: i64,
    pub hotkey: String,
    /// The specs JSON as stored (`None` when read by [`ComputeDb::miner_specs`]).
    pub details_raw: Option<String>,
    /// The parsed specs; `None` for `{}`, empty, unparsable or all-zero specs.
    pub specs: Option<Specs>,
    /// Consecutive unanswered specs requests, at most [`NO_SPECS_LIMIT`].
    pub no_specs_count: u32,
    /// When the miner last answered a specs request (not known for rows only SN27 wrote).
    pub last_seen_ms: Option<u64>,
    /// When its specs were last stored.
    pub specs_updated_ms: Option<u64>,
    /// The last failure, until the next answer.
    pub last_error: Option<String>,
    pub last_failure_ms: Option<u64>,
    /// Consecutive failures we recorded (not capped).
    pub failures: u32,
}

fn miner(r: &Row<'_>) -> rusqlite::Result<MinerRecord> {
    let mut record = miner_specs(r)?;
    record.details_raw = value_text(r.get_ref(2)?);
    Ok(record)
}

/// [`miner`] without keeping the stored text: the specs are parsed where SQLite holds them.
fn miner_specs(r: &Row<'_>) -> rusqlite::Result<MinerRecord> {
    let specs = value_str(r.get_ref(2)?)
        .filter(|t| !t.trim().is_empty())
        .and_then(|t| Specs::from_json(&t).ok())
        .filter(|s| !s.is_empty());
    let small = |v: Option<i64>| v.and_then(|i| u32::try_from(i).ok()).unwrap_or(0);
    Ok(MinerRecord {
        id: r.get(0)?,
        hotkey: value_text(r.get_ref(1)?).unwrap_or_default(),
        details_raw: None,
        specs,
        no_specs_count: small(value_int(r.get_ref(3)?)),
        last_seen_ms: value_u64(r.get_ref(4)?),
        specs_updated_ms: value_u64(r.get_ref(5)?),
        last_error: value_text(r.get_ref(6)?),
        last_failure_ms: value_u64(r.get_ref(7)?),
        failures: small(value_int(r.get_ref(8)?)),
    })
}

const MINER_SELECT: &str = "SELECT d.id, d.hotkey, d.details, d.no_specs_count, s.last_seen_ms, \
     s.specs_updated_ms, s.last_error, s.last_failure_ms, s.failures \
     FROM miner_details d LEFT JOIN nc_miner_seen s ON s.hotkey = d.hotkey \
     WHERE d.hotkey IS NOT NULL ORDER BY d.id";

/// One miner's outcome of a `sync`, for [`ComputeDb::record_sync`].
#[derive(Debug, Clone, Copy)]
pub enum SyncOutcome<'a> {
    /// It answered with these specs (JSON object text), signed or not.
    Specs { hotkey: &'a str, json: &'a str, signed: bool },
    /// It did not answer usable specs; `error` says why.
    NoSpecs { hotkey: &'a str, error: &'a str },
}

/// Whether `details_json` is a non-empty JSON object (`false`: empty, which counts as no
/// answer); an error if it is not an object at all.
fn specs_object(hotkey: &str, details_json: &str) -> Result<bool, DbError> {
    let invalid = |reason: String| DbError::InvalidSpecs { hotkey: hotkey.into(), reason };
    match serde_json::from_str::<Value>(details_json) {
        Ok(Value::Object(obj)) => Ok(!obj.is_empty()),
        Ok(other) => Err(invalid(format!("a JSON {}", json_kind(&other)))),
        Err(e) => Err(invalid(e.to_string())),
    }
}

fn write_specs(tx: &rusqlite::Transaction<'_>, hotkey: &str, details_json: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO miner_details (hotkey, details, no_specs_count) VALUES (?1, ?2, 0) \
         ON CONFLICT(hotkey) DO UPDATE SET details = excluded.details, no_specs_count = 0",
        params![hotkey, details_json],
    )?;
    tx.execute(
        "INSERT INTO nc_miner_seen (hotkey, last_seen_ms, specs_updated_ms, last_error, failures) \
         VALUES (?1, ?2, ?2, NULL, 0) ON CONFLICT(hotkey) DO UPDATE SET \
         last_seen_ms = excluded.last_seen_ms, specs_updated_ms = excluded.specs_updated_ms, \
         last_error = NULL, failures = 0",
        params![hotkey, now],
    )?;
    Ok(())
}

fn write_no_specs(tx: &rusqlite::Transaction<'_>, hotkey: &str, error: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO miner_details (hotkey, details, no_specs_count) VALUES (?1, '{}', 1) \
         ON CONFLICT(hotkey) DO UPDATE SET \
         no_specs_count = MIN(COALESCE(miner_details.no_specs_count, 0) + 1, ?2), \
         details = CASE WHEN COALESCE(miner_details.no_specs_count, 0) + 1 >= ?2 THEN '{}' \
                   ELSE miner_details.details END",
        params![hotkey, NO_SPECS_LIMIT],
    )?;
    tx.execute(
        "INSERT INTO nc_miner_seen (hotkey, last_error, last_failure_ms, failures) VALUES (?1, ?2, ?3, 1) \
         ON CONFLICT(hotkey) DO UPDATE SET last_error = excluded.last_error, \
         last_failure_ms = excluded.last_failure_ms, failures = nc_miner_seen.failures + 1",
        params![hotkey, error, now],
    )?;
    Ok(())
}

impl ComputeDb {
    /// Stores the specs `hotkey` answered with, by SN27's rule (insert, or replace `details`;
    /// `no_specs_count` back to 0), and marks the miner seen at `now_ms`. `details_json` must be
    /// a JSON object: a validator sharing the file `json.loads` every row, and one bad row makes
    /// it drop them all. An empty object counts as no answer, as in SN27 (`if response:`), and is
    /// recorded with [`Self::record_no_specs`].
    pub fn upsert_specs(&self, hotkey: &str, details_json: &str, now_ms: u64) -> Result<(), DbError> {
        if !specs_object(hotkey, details_json)? {
            return self.record_no_specs(hotkey, "empty specs", now_ms);
        }
        self.write(|tx| Ok(write_specs(tx, hotkey, details_json, sql_ms(now_ms))?))
    }

    /// Records that `hotkey` did not answer a specs request (`error` says why): SN27's
    /// `no_specs_count` goes up by one, capped at [`NO_SPECS_LIMIT`], and a new miner gets a row
    /// with `{}`.
    ///
    /// Deviation from SN27 v1.8.3, on purpose: SN27 means to blank `details` only once the count
    /// reaches 5, but its SQL's `ELSE excluded.details` takes the *new* value, `'{}'`, so one
    /// missed request wipes a miner's specs. We keep the last known specs until the 5th
    /// consecutive failure and blank them then; [`Self::upsert_specs`] resets the count.
    pub fn record_no_specs(&self, hotkey: &str, error: &str, now_ms: u64) -> Result<(), DbError> {
        self.write(|tx| Ok(write_no_specs(tx, hotkey, error, sql_ms(now_ms))?))
    }

    /// A whole `sync`'s outcome in one transaction (one commit, one fsync, instead of one per
    /// miner and one more per signer: at 256 miners, half a second): each answer as
    /// [`Self::upsert_specs`] records it (and as `mark_signer` when it was signed), each failure
    /// as [`Self::record_no_specs`]. Nothing is written if any specs are invalid.
    pub fn record_sync(&self, outcomes: &[SyncOutcome<'_>], now_ms: u64) -> Result<(), DbError> {
        let mut checked = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            checked.push(match *o {
                SyncOutcome::Specs { hotkey, json, signed } => match specs_object(hotkey, json)? {
                    true => (hotkey, Some(json), "", signed),
                    false => (hotkey, None, "empty specs", signed),
                },
                SyncOutcome::NoSpecs { hotkey, error } => (hotkey, None, error, false),
            });
        }
        let now = sql_ms(now_ms);
        self.write(|tx| {
            for (hotkey, json, error, signed) in &checked {
                match json {
                    Some(json) => write_specs(tx, hotkey, json, now)?,
                    None => write_no_specs(tx, hotkey, error, now)?,
                }
                if *signed {
                    super::auth::write_signer(tx, hotkey, now)?;
                }
            }
            Ok(())
        })
    }

    /// Every `miner_details` row, by id, with liveness where we have it. Rows whose hotkey is
    /// NULL are skipped.
    pub fn miner_details(&self) -> Result<Vec<MinerRecord>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(MINER_SELECT)?;
            let rows = stmt.query_map([], miner)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// [`Self::miner_details`] without the stored specs text (`details_raw` is `None`): what the
    /// listings and the candidate filter use, a thousand rows of JSON not copied to be dropped.
    pub fn miner_specs(&self) -> Result<Vec<MinerRecord>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(MINER_SELECT)?;
            let rows = stmt.query_map([], miner_specs)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// The `last_error` of every `miner_details` row that has one, by id, without reading the
    /// specs: what `list_r` needs for its note on refusals, at a fraction of
    /// [`Self::miner_details`]'s cost.
    pub fn miner_last_errors(&self) -> Result<Vec<(String, String)>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT d.hotkey, s.last_error FROM miner_details d JOIN nc_miner_seen s ON s.hotkey = d.hotkey \
                 WHERE d.hotkey IS NOT NULL AND s.last_error IS NOT NULL ORDER BY d.id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((value_text(r.get_ref(0)?).unwrap_or_default(), value_text(r.get_ref(1)?).unwrap_or_default()))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Adds `hotkeys` to SN27's `blacklist` (as SN27 does: hotkey only, existing ones left as
    /// they are), in one transaction. Returns those that were not already there, in order.
    pub fn penalize<S: AsRef<str>>(&self, hotkeys: &[S]) -> Result<Vec<String>, DbError> {
        self.write(|tx| {
            let mut stmt = tx.prepare("INSERT INTO blacklist (hotkey) VALUES (?1) ON CONFLICT(hotkey) DO NOTHING")?;
            let mut added = Vec::new();
            for hotkey in hotkeys {
                if stmt.execute([hotkey.as_ref()])? > 0 {
                    added.push(hotkey.as_ref().to_string());
                }
            }
            Ok(added)
        })
    }

    /// Removes `hotkeys` from the `blacklist`, in one transaction. Returns those that were there.
    pub fn depenalize<S: AsRef<str>>(&self, hotkeys: &[S]) -> Result<Vec<String>, DbError> {
        self.write(|tx| {
            let mut stmt = tx.prepare("DELETE FROM blacklist WHERE hotkey = ?1")?;
            let mut removed = Vec::new();
            for hotkey in hotkeys {
                if stmt.execute([hotkey.as_ref()])? > 0 {
                    removed.push(hotkey.as_ref().to_string());
                }
            }
            Ok(removed)
        })
    }

    /// The penalized hotkeys, by `blacklist.id`.
    pub fn penalized(&self) -> Result<Vec<String>, DbError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT hotkey FROM blacklist WHERE hotkey IS NOT NULL ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok(value_text(r.get_ref(0)?).unwrap_or_default()))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
