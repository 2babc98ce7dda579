//! The devnet chain's state in SQLite: subnets' neurons (keys, stake, axon), and the last nonce
//! of each signer. Every change is one immediate transaction, so concurrent registrations get
//! distinct uids and a failed request changes nothing.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::keys::AccountId;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS neurons (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    hotkey BLOB NOT NULL,
    coldkey BLOB NOT NULL,
    alpha_stake INTEGER NOT NULL DEFAULT 0,
    tao_stake INTEGER NOT NULL DEFAULT 0,
    axon_block INTEGER NOT NULL DEFAULT 0,
    axon_version INTEGER NOT NULL DEFAULT 0,
    axon_ip TEXT NOT NULL DEFAULT '0',
    axon_port INTEGER NOT NULL DEFAULT 0,
    axon_ip_type INTEGER NOT NULL DEFAULT 0,
    axon_protocol INTEGER NOT NULL DEFAULT 0,
    registered_block INTEGER NOT NULL,
    last_update INTEGER NOT NULL,
    PRIMARY KEY (netuid, uid),
    UNIQUE (netuid, hotkey)
);
CREATE TABLE IF NOT EXISTS signer_nonces (hotkey BLOB PRIMARY KEY, nonce INTEGER NOT NULL);
";

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("devnet database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("devnet database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Refused(String),
}

/// One neuron row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeuronRow {
    pub netuid: u16,
    pub uid: u16,
    pub hotkey: AccountId,
    pub coldkey: AccountId,
    pub alpha_stake: u64,
    pub tao_stake: u64,
    pub axon_block: u64,
    pub axon_version: u32,
    pub axon_ip: u128,
    pub axon_port: u16,
    pub axon_ip_type: u8,
    pub axon_protocol: u8,
    pub registered_block: u64,
    pub last_update: u64,
}

/// An axon to serve.
#[derive(Debug, Clone, Copy)]
pub struct AxonUpdate {
    pub version: u32,
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
    pub protocol: u8,
}

#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

/// Largest number of neurons a devnet subnet holds.
pub const MAX_UIDS: u16 = 4096;

fn account(bytes: Vec<u8>) -> rusqlite::Result<AccountId> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, "account".into(), rusqlite::types::Type::Blob))?;
    Ok(AccountId(arr))
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Sets `key` only if absent; returns the stored value.
    pub fn meta_init(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let conn = self.lock();
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", [key, value])?;
        Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
    }

    /// Checks and advances a signer's nonce inside the same transaction as the change it guards.
    fn take_nonce(tx: &rusqlite::Transaction<'_>, hotkey: &AccountId, nonce: u64) -> Result<(), StoreError> {
        // SQLite integers are i64; a larger nonce would wrap negative and pass every check.
        let nonce_sql = i64::try_from(nonce).map_err(|_| {
            StoreError::Refused(format!("nonce {nonce} is above 2^63 - 1; devnet nonces are nanosecond timestamps"))
        })?;
        let last: Option<i64> = tx
            .query_row("SELECT nonce FROM signer_nonces WHERE hotkey = ?1", [&hotkey.0[..]], |r| r.get(0))
            .optional()?;
        if let Some(last) = last {
            if nonce_sql <= last {
                return Err(StoreError::Refused(format!(
                    "nonce {nonce} is not newer than {last}, the last one used by {hotkey} (a replayed request?)"
                )));
            }
        }
        tx.execute(
            "INSERT INTO signer_nonces (hotkey, nonce) VALUES (?1, ?2) ON CONFLICT(hotkey) DO UPDATE SET nonce = ?2",
            params![&hotkey.0[..], nonce_sql],
        )?;
        Ok(())
    }

    /// Registers a hotkey on a subnet (creating the subnet on first use). Registering an already
    /// registered hotkey returns its uid (`true` = newly registered).
    pub fn register(
        &self,
        netuid: u16,
        hotkey: &AccountId,
        coldkey: &AccountId,
        nonce: u64,
        block: u64,
    ) -> Result<(u16, bool), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::take_nonce(&tx, hotkey, nonce)?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT uid FROM neurons WHERE netuid = ?1 AND hotkey = ?2",
                params![netuid, &hotkey.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(uid) = existing {
            tx.commit()?;
            return Ok((uid as u16, false));
        }
        let n: i64 = tx.query_row("SELECT COUNT(*) FROM neurons WHERE netuid = ?1", [netuid], |r| r.get(0))?;
        if n >= i64::from(MAX_UIDS) {
            return Err(StoreError::Refused(format!("subnet {netuid} is full ({MAX_UIDS} neurons)")));
        }
        tx.execute(
            "INSERT INTO neurons (netuid, uid, hotkey, coldkey, registered_block, last_update) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![netuid, n, &hotkey.0[..], &coldkey.0[..], block as i64],
        )?;
        tx.commit()?;
        Ok((n as u16, true))
    }

    fn update_registered(
        &self,
        netuid: u16,
        hotkey: &AccountId,
        nonce: u64,
        sql: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::take_nonce(&tx, hotkey, nonce)?;
        let mut all: Vec<&dyn rusqlite::ToSql> = values.to_vec();
        let netuid_i = i64::from(netuid);
        let hk = &hotkey.0[..];
        all.push(&netuid_i);
        all.push(&hk);
        let changed = tx.execute(sql, all.as_slice())?;
        if changed == 0 {
            return Err(StoreError::Refused(format!("hotkey {hotkey} is not registered on subnet {netuid}")));
        }
        tx.commit()?;
        Ok(())
    }

    pub fn set_stake(
        &self,
        netuid: u16,
        hotkey: &AccountId,
        alpha: u64,
        tao: u64,
        nonce: u64,
    ) -> Result<(), StoreError> {
        let (a, t) = (alpha as i64, tao as i64);
        if a < 0 || t < 0 {
            return Err(StoreError::Refused("stake too large".into()));
        }
        self.update_registered(
            netuid,
            hotkey,
            nonce,
            "UPDATE neurons SET alpha_stake = ?1, tao_stake = ?2 WHERE netuid = ?3 AND hotkey = ?4",
            &[&a, &t],
        )
    }

    pub fn serve_axon(
        &self,
        netuid: u16,
        hotkey: &AccountId,
        axon: AxonUpdate,
        nonce: u64,
        block: u64,
    ) -> Result<(), StoreError> {
        let (b, v, ip, port, ty, proto) = (
            block as i64,
            i64::from(axon.version),
            axon.ip.to_string(),
            i64::from(axon.port),
            i64::from(axon.ip_type),
            i64::from(axon.protocol),
        );
        self.update_registered(
            netuid,
            hotkey,
            nonce,
            "UPDATE neurons SET axon_block = ?1, axon_version = ?2, axon_ip = ?3, axon_port = ?4, axon_ip_type = ?5, \
             axon_protocol = ?6, last_update = ?1 WHERE netuid = ?7 AND hotkey = ?8",
            &[&b, &v, &ip, &port, &ty, &proto],
        )
    }

    /// A subnet's neurons in uid order (empty when the subnet does not exist).
    pub fn neurons(&self, netuid: u16) -> Result<Vec<NeuronRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT netuid, uid, hotkey, coldkey, alpha_stake, tao_stake, axon_block, axon_version, axon_ip, axon_port, \
             axon_ip_type, axon_protocol, registered_block, last_update FROM neurons WHERE netuid = ?1 ORDER BY uid",
        )?;
        let rows = stmt.query_map([netuid], |r| {
            let ip: String = r.get(8)?;
            Ok(NeuronRow {
                netuid: r.get(0)?,
                uid: r.get(1)?,
                hotkey: account(r.get(2)?)?,
                coldkey: account(r.get(3)?)?,
                alpha_stake: r.get::<_, i64>(4)? as u64,
                tao_stake: r.get::<_, i64>(5)? as u64,
                axon_block: r.get::<_, i64>(6)? as u64,
                axon_version: r.get::<_, i64>(7)? as u32,
                axon_ip: ip.parse().unwrap_or(0),
                axon_port: r.get(9)?,
                axon_ip_type: r.get(10)?,
                axon_protocol: r.get(11)?,
                registered_block: r.get::<_, i64>(12)? as u64,
                last_update: r.get::<_, i64>(13)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// (netuid, number of neurons) for every subnet.
    pub fn subnets(&self) -> Result<Vec<(u16, u32)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT netuid, COUNT(*) FROM neurons GROUP BY netuid ORDER BY netuid")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_above_i64_are_refused_and_do_not_reset_the_sequence() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("chain.sqlite")).expect("open");
        let (hotkey, coldkey) = (AccountId([1; 32]), AccountId([2; 32]));
        store.register(27, &hotkey, &coldkey, 1_000, 1).expect("register");
        // u64::MAX as i64 is -1: it used to pass and store -1, after which any nonce passed.
        let err = store.register(27, &hotkey, &coldkey, u64::MAX, 1).expect_err("refused");
        assert!(matches!(err, StoreError::Refused(ref m) if m.contains("2^63")), "{err}");
        assert!(matches!(store.register(27, &hotkey, &coldkey, 999, 1), Err(StoreError::Refused(_))), "replay");
        store.register(27, &hotkey, &coldkey, 1_001, 1).expect("next nonce");
    }
}
