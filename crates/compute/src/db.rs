//! The renter's and validator's database: SN27's `database.db`, read and written in SN27's own
//! schema so that `--db ./database.db` works on a validator's existing file, and a file we create
//! works with SN27's Python tools.
//!
//! SN27 keeps the network's miner specs (`miner_details`), the requester's allocations
//! (`allocation`, whose JSON holds the SSH credentials and the deallocation key) and the penalized
//! hotkeys (`blacklist`) in one SQLite file (`compute/utils/db.py`, v1.8.3). [`ComputeDb`] opens
//! that file, creates SN27's tables where they are missing (and migrates an old `miner_details`),
//! and adds what SN27 lacks in tables of our own, prefixed `nc_`: the state of each allocation
//! (`allocating` → `active` → `pending_deallocation`, so an interrupted allocation or an
//! unconfirmed deallocation is never forgotten) and when each miner last answered. SN27's rows are
//! only ever written the way SN27 writes them, and only when the operation means it.
//!
//! Safety of the file: the database holds passwords, so it is made mode 0600; it runs in WAL mode
//! with a 5 s busy timeout so a validator and several `nicompute` processes can share it; every
//! change of more than one row is one `BEGIN IMMEDIATE` transaction; and a file that is not an
//! SQLite database, or is corrupt, is refused before anything is written to it.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bittensor::Clock;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

mod allocation;
mod api;
mod auth;
mod miners;
mod schema;
mod wandb;

pub use allocation::{
    key_fingerprint, AllocationDetails, AllocationDetailsError, AllocationListing, AllocationRecord, AllocationState,
};
pub use api::{ApiAllocation, ApiAllocationState, Delivery, DeliveryState, HealthRecord, NewDelivery, TokenRecord};
pub use miners::{MinerRecord, SyncOutcome, NO_SPECS_LIMIT};
pub use wandb::PublicationRecord;

/// How long an allocation being made is claimed by the handle that began it: within it, while
/// that process lives, no other handle takes it for an interrupted one
/// ([`ComputeDb::interrupted_unclaimed`]). Longer than any one allocate call.
pub const CLAIM_TTL: Duration = Duration::from_secs(15 * 60);

/// How long a write waits for another process's lock before giving up with [`DbError::Locked`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Why a database operation failed. Every variant names the file or the hotkey concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error("another nicompute or validator process holds a write lock on {}; try again", path.display())]
    Locked { path: PathBuf },
    #[error("{} is not a SQLite database or is corrupt; nothing was changed", path.display())]
    NotADatabase { path: PathBuf },
    #[error(
        "{} is read-only (nicompute must write to it and create {}-wal beside it); check the permissions or pass another --db",
        path.display(),
        path.display()
    )]
    ReadOnly { path: PathBuf },
    #[error("cannot open {}: {source} (check that the file and its directory are writable)", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("{}: table `{table}` is not shaped like SN27's ({detail}); nothing was changed", path.display())]
    Incompatible { path: PathBuf, table: String, detail: String },
    #[error("{hotkey} already has an allocation ({state}) in {}; deallocate it first", path.display())]
    AlreadyAllocated { path: PathBuf, hotkey: String, state: AllocationState },
    #[error("no allocation of {hotkey} is being made in {} (begin_allocation must come first)", path.display())]
    NotAllocating { path: PathBuf, hotkey: String },
    #[error("the allocation of {hotkey} is {state}, not being made; it cannot be aborted, only deallocated")]
    CannotAbort { hotkey: String, state: AllocationState },
    #[error("no allocation of {hotkey} in {}", path.display())]
    NoAllocation { path: PathBuf, hotkey: String },
    #[error(
        "the allocation details for {hotkey} carry another key than the one it was begun with; nothing was stored"
    )]
    KeyMismatch { hotkey: String },
    #[error("specs of {hotkey} are not a JSON object ({reason}); nothing was stored")]
    InvalidSpecs { hotkey: String, reason: String },
    #[error("{}: {source}", path.display())]
    Sql { path: PathBuf, source: rusqlite::Error },
}

/// An error inside a transaction body: SQL errors are classified with the file's path once the
/// body returns, so the bodies can use `?` on both kinds.
#[derive(Debug)]
enum Fail {
    Sql(rusqlite::Error),
    Db(DbError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

/// Turns an SQLite error into the variant a user can act on.
fn classify(path: &Path, e: rusqlite::Error) -> DbError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbError::Locked { path },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => DbError::NotADatabase { path },
        Some(ErrorCode::ReadOnly) => DbError::ReadOnly { path },
        Some(ErrorCode::CannotOpen) => DbError::Open { path, source: e },
        _ => DbError::Sql { path, source: e },
    }
}

/// The SN27 database plus our `nc_` tables. One connection, shared by the threads of a process
/// behind a mutex; other processes (a validator, another `nicompute`) use their own.
#[derive(Debug)]
pub struct ComputeDb {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Stamps the allocation steps (`created_ms`, `updated_ms`).
    clock: Clock,
    /// Who this handle is in `nc_allocation_claim`: `pid:random`, unique per open.
    holder: String,
    /// Counts this handle among the process's open handles of the file (see [`OpenHandle`]).
    handle: Option<OpenHandle>,
}

/// The process's open handles per database file.
///
/// POSIX record locks belong to the process, and closing *any* descriptor of a file drops all
/// of the process's locks on it. SQLite keeps its own descriptors open for that reason, but the
/// header check ([`check_header`]) opens and closes one: done while another handle of this
/// process has the file open (a server and its tests, two handles in one program), it silently
/// dropped that handle's locks, and another process could then checkpoint and truncate the WAL
/// under it (`disk I/O error`). So the header is read only by the first handle of a file in the
/// process; later ones know it is a database already.
#[derive(Debug)]
struct OpenHandle(PathBuf);

fn open_handles() -> &'static Mutex<std::collections::HashMap<PathBuf, usize>> {
    static OPEN: std::sync::OnceLock<Mutex<std::collections::HashMap<PathBuf, usize>>> = std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default)
}

impl OpenHandle {
    /// Registers a handle of `path`, running `first` (the header check) only when no other
    /// handle of this process has it open; the registry stays locked meanwhile.
    fn acquire(path: &Path, first: impl FnOnce(&Path) -> Result<(), DbError>) -> Result<Self, DbError> {
        let key = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut open = open_handles().lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key.clone()).or_insert(0);
        if *n == 0 {
            if let Err(e) = first(path) {
                open.remove(&key);
                return Err(e);
            }
        }
        *open.get_mut(&key).unwrap_or(&mut 0) += 1;
        Ok(Self(key))
    }
}

impl Drop for OpenHandle {
    fn drop(&mut self) {
        let mut open = open_handles().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.0) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.0);
            }
        }
    }
}

impl ComputeDb {
    /// Opens (or creates) the database at `path`: creates the parent directories, makes the file
    /// mode 0600, switches it to WAL, sets a 5 s busy timeout, leaves foreign keys off as SN27
    /// does, and creates or migrates the schema in one transaction.
    ///
    /// A file that is not an SQLite database, or that fails SQLite's quick integrity check when
    /// tables would be added to it, is refused with [`DbError::NotADatabase`] before anything is
    /// written to it. (The integrity check runs only when the schema must change, so a database
    /// nicompute already knows opens in milliseconds however large a validator made it.)
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DbError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| DbError::Io {
                action: "create the directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let created = create_private(&path)?;
        let opened = Self::open_existing(path.clone());
        if opened.is_err() && created {
            // Leave no empty file behind for a database we failed to set up.
            if fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                let _ = fs::remove_file(&path);
            }
        }
        opened
    }

    /// This database with `clock` stamping its allocation steps (the system clock by default).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock stamping this database's allocation steps.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn open_existing(path: PathBuf) -> Result<Self, DbError> {
        let opened = OpenHandle::acquire(&path, check_header)?;
        let mut db = Self::connect(path)?;
        db.handle = Some(opened);
        Ok(db)
    }

    fn connect(path: PathBuf) -> Result<Self, DbError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags).map_err(|e| classify(&path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| classify(&path, e))?;
        // Reading the schema reads page 1: this is where SQLite notices a file that only
        // pretends to be a database. Nothing has been written yet.
        let plan = schema::inspect(&conn, &path)?;
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(|e| classify(&path, e))? {
            return Err(DbError::ReadOnly { path });
        }
        if plan.needs_change() && plan.has_tables {
            schema::quick_check(&conn, &path)?;
        }
        restrict_mode(&path);
        let mode = enable_wal(&conn, &path)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), journal_mode = %mode, "database: WAL mode unavailable; writers will block readers");
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(|e| classify(&path, e))?;
        conn.pragma_update(None, "foreign_keys", false).map_err(|e| classify(&path, e))?;
        // Reads straight from the page cache instead of one pread and copy per page: a cold
        // `list_a` over 1,000 allocations reads about 400 pages.
        conn.pragma_update(None, "mmap_size", MMAP_SIZE).map_err(|e| classify(&path, e))?;
        if plan.needs_change() {
            schema::apply(&mut conn, &path)?;
        }
        for suffix in ["-wal", "-shm"] {
            let mut side = OsString::from(path.as_os_str());
            side.push(suffix);
            let side = PathBuf::from(side);
            if side.exists() {
                restrict_mode(&side);
            }
        }
        let holder = format!("{}:{:016x}", std::process::id(), rand::random::<u64>());
        Ok(Self { conn: Mutex::new(conn), path, clock: Clock::system(), holder, handle: None })
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-transaction rolled it back when the transaction dropped; the connection
        // itself is still sound.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, f: Fail) -> DbError {
        match f {
            Fail::Sql(e) => classify(&self.path, e),
            Fail::Db(e) => e,
        }
    }

    /// Runs `body` in one `BEGIN IMMEDIATE` transaction: the write lock is taken up front (waiting
    /// out the busy timeout), so the body never fails half-way on another writer's lock, and
    /// everything it did is rolled back if it returns an error.
    fn write<T>(&self, body: impl FnOnce(&Transaction<'_>) -> Result<T, Fail>) -> Result<T, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| classify(&self.path, e))?;
        let out = body(&tx).map_err(|f| self.fail(f))?;
        tx.commit().map_err(|e| classify(&self.path, e))?;
        Ok(out)
    }

    /// Runs read-only `body` on the connection (one consistent snapshot per statement).
    fn read<T>(&self, body: impl FnOnce(&Connection) -> Result<T, Fail>) -> Result<T, DbError> {
        let conn = self.lock();
        body(&conn).map_err(|f| self.fail(f))
    }
}

/// Most bytes of the database file SQLite maps into memory for reading.
const MMAP_SIZE: i64 = 256 << 20;

/// Switches the file to WAL. SQLite does not call the busy handler while it changes the journal
/// mode (it would risk a deadlock), so a concurrent opener, or a validator mid-transaction, makes
/// the switch fail at once with `SQLITE_BUSY` — or, while another connection is switching the
/// same new file, with a transient I/O error. We retry for as long as the busy timeout.
fn enable_wal(conn: &Connection, path: &Path) -> Result<String, DbError> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)) {
            Ok(mode) => return Ok(mode),
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure)
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(classify(path, e)),
        }
    }
}

/// Creates the file with mode 0600 if it does not exist, so the database is never readable by
/// others, not even for a moment. `true` if this call created it.
fn create_private(path: &Path) -> Result<bool, DbError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(DbError::Io { action: "create", path: path.to_path_buf(), source }),
    }
}

/// Refuses, without opening it with SQLite, a non-empty file that does not start with SQLite's
/// header (a text file, a key file, random bytes). An empty file is a new database to SQLite.
fn check_header(path: &Path) -> Result<(), DbError> {
    let io_err = |source| DbError::Io { action: "read", path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(DbError::NotADatabase { path: path.to_path_buf() });
    }
    if meta.len() == 0 {
        return Ok(());
    }
    let mut magic = [0u8; 16];
    // SQLite's header is 100 bytes; anything shorter cannot be a database.
    if meta.len() < 100 || file.read_exact(&mut magic).is_err() || &magic != SQLITE_MAGIC {
        return Err(DbError::NotADatabase { path: path.to_path_buf() });
    }
    Ok(())
}

/// Narrows the file to mode 0600 (the allocation rows hold passwords). A file owned by another
/// user (a validator running as root, say) cannot be changed by us; that is logged, not fatal.
fn restrict_mode(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = fs::metadata(path) else { return };
        if meta.permissions().mode() & 0o777 == 0o600 {
            return;
        }
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %e, "database: cannot make the file mode 0600");
        }
    }
}

/// A millisecond time as SQLite's signed integer (saturating: `u64::MAX` means "never").
fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Text from a column SN27 may have filled with TEXT, BLOB or a number (SQLite is dynamically
/// typed and Python writes whatever it was handed).
fn value_text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(_) | ValueRef::Blob(_) => value_str(v).map(Cow::into_owned),
    }
}

/// A TEXT or BLOB column's text where SQLite holds it, for text that is parsed and not kept.
/// Valid UTF-8 (the usual case) is borrowed after the fast check; only bad bytes go lossy.
fn value_str(v: ValueRef<'_>) -> Option<Cow<'_, str>> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => {
            Some(std::str::from_utf8(b).map_or_else(|_| String::from_utf8_lossy(b), Cow::Borrowed))
        }
        ValueRef::Null | ValueRef::Integer(_) | ValueRef::Real(_) => None,
    }
}

/// An integer from a column that may hold an integer, an integral real or numeric text.
fn value_int(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        // Integral reals only; the cast is exact for them within i64's range.
        ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(f as i64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// A non-negative integer column as `u64` (`None` for NULL, negatives and non-numbers).
fn value_u64(v: ValueRef<'_>) -> Option<u64> {
    value_int(v).and_then(|i| u64::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<ComputeDb>();
    }

    #[test]
    fn values_are_read_tolerantly() {
        assert_eq!(value_int(ValueRef::Integer(3)), Some(3));
        assert_eq!(value_int(ValueRef::Real(4.0)), Some(4));
        assert_eq!(value_int(ValueRef::Real(4.5)), None);
        assert_eq!(value_int(ValueRef::Text(b" 5 ")), Some(5));
        assert_eq!(value_int(ValueRef::Null), None);
        assert_eq!(value_u64(ValueRef::Integer(-1)), None);
        assert_eq!(value_text(ValueRef::Blob(b"{}")), Some("{}".into()));
        assert_eq!(value_text(ValueRef::Integer(7)), Some("7".into()));
        assert_eq!(sql_ms(u64::MAX), i64::MAX);
    }

    #[test]
    fn sqlite_errors_become_actionable_variants() {
        let path = Path::new("/x/database.db");
        let sqlite = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        let e = classify(path, sqlite(rusqlite::ffi::SQLITE_BUSY));
        assert_eq!(
            e.to_string(),
            "another nicompute or validator process holds a write lock on /x/database.db; try again"
        );
        let e = classify(path, sqlite(rusqlite::ffi::SQLITE_NOTADB));
        assert_eq!(e.to_string(), "/x/database.db is not a SQLite database or is corrupt; nothing was changed");
        assert!(matches!(classify(path, sqlite(rusqlite::ffi::SQLITE_CORRUPT)), DbError::NotADatabase { .. }));
        assert!(matches!(classify(path, sqlite(rusqlite::ffi::SQLITE_READONLY)), DbError::ReadOnly { .. }));
    }
}
