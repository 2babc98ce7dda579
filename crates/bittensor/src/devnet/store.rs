//! The embedded chain's database in SQLite: its blocks (header fields and extrinsics) and its
//! storage as raw Substrate key/value pairs, versioned by block, so a read at any recent block
//! hash sees the state as that block left it — what `state_getStorage [key, hash]` means on a
//! node. A block and every storage change it made are written in one transaction; nothing else
//! writes. History older than [`KEEP_BLOCKS`] is pruned, as on a pruning node.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use parity_scale_codec::{Decode, Encode};
use rusqlite::{params, Connection, OptionalExtension};

/// How many recent blocks keep their state and bodies (a pruning node keeps a few thousand).
pub const KEEP_BLOCKS: u64 = 4096;
/// The schema this code writes; an older devnet directory is refused with what to do.
const SCHEMA_VERSION: &str = "2";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    parent BLOB NOT NULL,
    state_root BLOB NOT NULL,
    extrinsics_root BLOB NOT NULL,
    extrinsics BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS storage (
    key BLOB NOT NULL,
    block INTEGER NOT NULL,
    value BLOB,
    PRIMARY KEY (key, block)
) WITHOUT ROWID;
";

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("devnet database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("devnet database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "the devnet chain in {path} was made by an older nicompute (its state is not Substrate storage); \
         remove that directory (or `nicompute devnet down --delete`) and start again"
    )]
    Outdated { path: String },
    #[error("devnet database: {0}")]
    Corrupt(String),
}

/// One stored block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRow {
    pub number: u64,
    pub hash: [u8; 32],
    pub parent: [u8; 32],
    pub state_root: [u8; 32],
    pub extrinsics_root: [u8; 32],
    /// Each extrinsic's encoded bytes (with its length prefix), in order.
    pub extrinsics: Vec<Vec<u8>>,
}

impl BlockRow {
    /// The SCALE header: parent, `Compact<u32>` number, state root, extrinsics root, digest (empty).
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(100);
        out.extend_from_slice(&self.parent);
        parity_scale_codec::Compact(self.number as u32).encode_to(&mut out);
        out.extend_from_slice(&self.state_root);
        out.extend_from_slice(&self.extrinsics_root);
        Vec::<u8>::new().encode_to(&mut out); // digest: no logs
        out
    }
}

/// Raw storage changes: key → new value (`None` removes it).
pub type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

fn hash32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    <[u8; 32]>::try_from(v.as_slice())
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, "hash".into(), rusqlite::types::Type::Blob))
}

/// A block row with its body still encoded.
struct RawBlock {
    number: u64,
    hash: [u8; 32],
    parent: [u8; 32],
    state_root: [u8; 32],
    extrinsics_root: [u8; 32],
    body: Vec<u8>,
}

fn row_to_block(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawBlock> {
    Ok(RawBlock {
        number: r.get::<_, i64>(0)? as u64,
        hash: hash32(r.get(1)?)?,
        parent: hash32(r.get(2)?)?,
        state_root: hash32(r.get(3)?)?,
        extrinsics_root: hash32(r.get(4)?)?,
        body: r.get(5)?,
    })
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        let old: bool = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'neurons'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(open_err)?
            > 0;
        if old {
            return Err(StoreError::Outdated { path: path.display().to_string() });
        }
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?1)", [SCHEMA_VERSION])
            .map_err(open_err)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            [key, value],
        )?;
        Ok(())
    }

    fn block_where(&self, clause: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Option<BlockRow>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT number, hash, parent, state_root, extrinsics_root, extrinsics FROM blocks WHERE {clause} LIMIT 1"
        );
        let row = conn.query_row(&sql, args, row_to_block).optional()?;
        row.map(|b| {
            let extrinsics = Vec::<Vec<u8>>::decode(&mut &b.body[..])
                .map_err(|e| StoreError::Corrupt(format!("the body of block {} does not decode: {e}", b.number)))?;
            Ok(BlockRow {
                number: b.number,
                hash: b.hash,
                parent: b.parent,
                state_root: b.state_root,
                extrinsics_root: b.extrinsics_root,
                extrinsics,
            })
        })
        .transpose()
    }

    /// The best (highest) block.
    pub fn best(&self) -> Result<Option<BlockRow>, StoreError> {
        self.block_where("number = (SELECT MAX(number) FROM blocks)", &[])
    }

    pub fn block_by_number(&self, n: u64) -> Result<Option<BlockRow>, StoreError> {
        self.block_where("number = ?1", &[&(n as i64)])
    }

    pub fn block_by_hash(&self, hash: &[u8; 32]) -> Result<Option<BlockRow>, StoreError> {
        self.block_where("hash = ?1", &[&hash.as_slice()])
    }

    /// The value at `key` as block `at` left it.
    pub fn read(&self, key: &[u8], at: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT value FROM storage WHERE key = ?1 AND block <= ?2 ORDER BY block DESC LIMIT 1")?;
        let v: Option<Option<Vec<u8>>> = stmt.query_row(params![key, at as i64], |r| r.get(0)).optional()?;
        Ok(v.flatten())
    }

    /// Up to `count` keys starting with `prefix` and after `start` (exclusive), in order, that
    /// hold a value at block `at`.
    pub fn keys(&self, prefix: &[u8], count: u32, start: Option<&[u8]>, at: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT s.key FROM storage s WHERE s.key >= ?1 AND s.key > ?2 AND substr(s.key, 1, ?3) = ?1 \
             AND s.block = (SELECT MAX(block) FROM storage WHERE key = s.key AND block <= ?4) \
             AND s.value IS NOT NULL ORDER BY s.key LIMIT ?5",
        )?;
        let start = start.unwrap_or(&[]);
        let rows = stmt.query_map(params![prefix, start, prefix.len() as i64, at as i64, i64::from(count)], |r| {
            r.get::<_, Vec<u8>>(0)
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Writes a block and the storage changes it made, in one transaction.
    pub fn commit_block(&self, block: &BlockRow, changes: &Changes) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO blocks (number, hash, parent, state_root, extrinsics_root, extrinsics) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                block.number as i64,
                &block.hash[..],
                &block.parent[..],
                &block.state_root[..],
                &block.extrinsics_root[..],
                block.extrinsics.encode()
            ],
        )?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO storage (key, block, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(key, block) DO UPDATE SET value = ?3",
            )?;
            for (k, v) in changes {
                put.execute(params![k, block.number as i64, v])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the state and bodies of blocks older than `best - KEEP_BLOCKS` (block 0 stays:
    /// clients ask for the genesis hash).
    pub fn prune(&self, best: u64) -> Result<(), StoreError> {
        let Some(keep) = best.checked_sub(KEEP_BLOCKS) else { return Ok(()) };
        let conn = self.lock();
        conn.execute(
            "DELETE FROM storage WHERE block < ?1 AND EXISTS (SELECT 1 FROM storage n WHERE n.key = storage.key \
             AND n.block > storage.block AND n.block <= ?1)",
            [keep as i64],
        )?;
        conn.execute("DELETE FROM blocks WHERE number > 0 AND number < ?1", [keep as i64])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u64) -> BlockRow {
        BlockRow {
            number: n,
            hash: [n as u8; 32],
            parent: [n.saturating_sub(1) as u8; 32],
            state_root: [0; 32],
            extrinsics_root: [0; 32],
            extrinsics: vec![vec![4, 1, 2, 3]],
        }
    }

    #[test]
    fn reads_see_the_state_as_each_block_left_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(&dir.path().join("c.sqlite")).expect("open");
        let mut c = Changes::new();
        c.insert(b"ab1".to_vec(), Some(b"one".to_vec()));
        c.insert(b"ab2".to_vec(), Some(b"two".to_vec()));
        s.commit_block(&block(0), &c).expect("0");
        let mut c = Changes::new();
        c.insert(b"ab1".to_vec(), Some(b"uno".to_vec()));
        c.insert(b"ab2".to_vec(), None);
        s.commit_block(&block(1), &c).expect("1");
        assert_eq!(s.read(b"ab1", 0).expect("r"), Some(b"one".to_vec()));
        assert_eq!(s.read(b"ab1", 1).expect("r"), Some(b"uno".to_vec()));
        assert_eq!(s.read(b"ab2", 1).expect("r"), None);
        assert_eq!(s.keys(b"ab", 10, None, 0).expect("k"), vec![b"ab1".to_vec(), b"ab2".to_vec()]);
        assert_eq!(s.keys(b"ab", 10, None, 1).expect("k"), vec![b"ab1".to_vec()]);
        assert_eq!(s.keys(b"ab", 10, Some(b"ab1"), 0).expect("k"), vec![b"ab2".to_vec()]);
        assert_eq!(s.best().expect("best").expect("some").number, 1);
        assert_eq!(s.block_by_hash(&[0; 32]).expect("by hash").expect("some").extrinsics, vec![vec![4, 1, 2, 3]]);
    }
}
