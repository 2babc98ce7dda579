//! Where the replay state survives restarts: the [`ReplayJournal`] trait a [`NonceStore`]
//! saves into, and what it saves. The axon knows no storage; the miner keeps its journal in its
//! SQLite state (`compute::miner::state::SqliteReplayJournal`).
//!
//! [`NonceStore`]: super::NonceStore

use std::fmt::Debug;

use crate::keys::AccountId;

/// One saved entry: a lane's last nonce, or (lane [`FLOOR_LANE`](super::FLOOR_LANE)) a hotkey's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedLane {
    pub hotkey: AccountId,
    pub lane: u64,
    pub nonce: u64,
}

/// What a journal holds at start-up.
#[derive(Debug, Clone, Default)]
pub struct ReplaySnapshot {
    pub lanes: Vec<SavedLane>,
    /// When the last save happened; `None` for a new journal.
    pub saved_at_ns: Option<u64>,
    /// Whether the last save was a clean stop's (nothing can have been lost after it).
    pub clean: bool,
}

/// Changes to save, in order: upserts, deletions, then everything with a nonce at or below
/// `forget_through_ns` may go.
#[derive(Debug, Clone, Default)]
pub struct ReplayBatch {
    pub upserts: Vec<SavedLane>,
    pub deletes: Vec<(AccountId, u64)>,
    pub forget_through_ns: u64,
    pub now_ns: u64,
    pub clean: bool,
}

/// Where a store's state survives restarts (the miner keeps it in its SQLite state).
pub trait ReplayJournal: Send + Sync + Debug {
    fn load(&self) -> Result<ReplaySnapshot, Box<dyn std::error::Error + Send + Sync>>;
    fn save(&self, batch: &ReplayBatch) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("cannot read the saved replay state: {0} (check the state directory's file and its permissions)")]
    Load(String),
    #[error("cannot save the replay state: {0} (is the state directory's disk full or read-only?)")]
    Save(String),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::axon::nonce::{NonceStore, ReplayLimits, MAX_FUTURE_SKEW_NS, SAVE_INTERVAL};

    const S: u64 = 1_000_000_000;

    fn hk(n: u8) -> AccountId {
        AccountId([n; 32])
    }

    /// A journal in memory: what the SQLite one does, without SQLite (its own tests are in the
    /// miner's state module).
    type Saved = (HashMap<(AccountId, u64), u64>, Option<u64>, bool);

    #[derive(Debug, Default)]
    struct MemJournal(Mutex<Saved>);

    impl ReplayJournal for Arc<MemJournal> {
        fn load(&self) -> Result<ReplaySnapshot, Box<dyn std::error::Error + Send + Sync>> {
            let g = self.0.lock().expect("lock");
            let lanes = g.0.iter().map(|(&(hotkey, lane), &nonce)| SavedLane { hotkey, lane, nonce }).collect();
            Ok(ReplaySnapshot { lanes, saved_at_ns: g.1, clean: g.2 })
        }
        fn save(&self, b: &ReplayBatch) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let mut g = self.0.lock().expect("lock");
            for l in &b.upserts {
                g.0.insert((l.hotkey, l.lane), l.nonce);
            }
            for k in &b.deletes {
                g.0.remove(k);
            }
            g.0.retain(|_, n| *n > b.forget_through_ns);
            g.1 = Some(b.now_ns);
            g.2 = b.clean;
            Ok(())
        }
    }

    #[test]
    fn a_journal_carries_nonces_across_restarts_and_a_crash_raises_a_floor() {
        let journal = Arc::new(MemJournal::default());
        let now = 1_000 * S;
        let store = NonceStore::journaled(ReplayLimits::default(), Box::new(journal.clone()), now).expect("open");
        store.commit(&hk(1), "u", now, now).expect("commit");
        store.save(now, true).expect("clean stop");
        assert!(store.commit(&hk(1), "u", now + 1, now).is_err(), "no commits after the clean stop");

        // Clean restart: the lane is back, the replay refused, a new request passes.
        let store = NonceStore::journaled(ReplayLimits::default(), Box::new(journal.clone()), now + S).expect("reopen");
        assert!(store.check(&hk(1), "u", now, Some(12.0), now + S).is_err(), "replay after restart");
        assert!(store.check(&hk(1), "u", now + S, Some(12.0), now + S).is_ok());
        store.commit(&hk(1), "v", now + S, now + S).expect("commit");
        // Crash: no save after this commit. Everything up to the last save + interval + skew
        // is refused on restart, on known and new lanes alike.
        let store =
            NonceStore::journaled(ReplayLimits::default(), Box::new(journal), now + 2 * S).expect("after crash");
        let floor = now + S + SAVE_INTERVAL.as_nanos() as u64 + MAX_FUTURE_SKEW_NS;
        assert!(store.check(&hk(1), "v", now + S, Some(12.0), now + 2 * S).is_err(), "lost commit's replay");
        assert!(store.check(&hk(2), "w", floor, Some(12.0), floor).is_err());
        assert!(store.check(&hk(2), "w", floor + 1, Some(12.0), floor).is_ok());
    }
}
