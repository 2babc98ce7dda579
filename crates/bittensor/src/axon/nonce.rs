//! Replay protection: the SDK's nonce rules, bounded in memory, optionally durable across
//! restarts, with a clock tests can control.
//!
//! Per caller lane (`hotkey` + `uuid`) the axon remembers the last verified nonce. A first
//! request on a lane must be newer than `now − 4 s − min(timeout, 300 s)`; later ones must be
//! strictly greater than the stored nonce. The nonce is stored only after the signature
//! verified, and check-and-store is atomic so two copies of one request racing each other cannot
//! both pass (the Python axon has that race).
//!
//! Hardenings over the SDK, all invisible to honest clients:
//! - the client's `timeout` (an unsigned header) widens the first-contact window by at most
//!   [`MAX_WINDOW_TIMEOUT_S`], and the window applies whatever version the client claims;
//! - a nonce more than [`MAX_FUTURE_SKEW_NS`] ahead of our clock is refused, and a uuid longer
//!   than [`MAX_UUID_LEN`] too;
//! - so every entry can be forgotten once its nonce is older than the widest window
//!   ([`WINDOW_MAX_NS`]): a replay of it would fail the first-contact rule anyway. Entries are
//!   kept in expiry order and a few are dropped on every commit: no scan under the lock;
//! - the store is bounded: at most [`ReplayLimits::max_lanes_per_hotkey`] lanes per hotkey (a
//!   hotkey over it loses its oldest lane and its *floor* rises to that lane's nonce, so the
//!   forgotten lane's requests still cannot be replayed), at most [`ReplayLimits::max_lanes`] in
//!   all and [`ReplayLimits::max_hotkeys`] hotkeys (beyond those, new lanes are refused until
//!   old ones expire);
//! - with a [`ReplayJournal`], changes are saved every [`SAVE_INTERVAL`] and at a clean stop.
//!   After a crash the last interval's nonces may be lost, so every nonce up to the last save
//!   plus the interval plus the future skew is refused after it: a captured request is never
//!   accepted twice across a restart, at the price of refusing callers for up to ~30 s after a
//!   crash.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use blake2::digest::consts::U8;
use blake2::{Blake2b, Digest};

pub use super::journal::{ReplayBatch, ReplayError, ReplayJournal, ReplaySnapshot, SavedLane};
use crate::keys::AccountId;

/// The fixed part of the first-contact window (the SDK's `ALLOWED_DELTA`).
pub const ALLOWED_DELTA_NS: u64 = 4_000_000_000;
/// The most the client's `timeout` may widen the window, seconds.
pub const MAX_WINDOW_TIMEOUT_S: f64 = 300.0;
/// The widest first-contact window: older nonces are refused on first contact, so entries older
/// than this are forgotten.
pub const WINDOW_MAX_NS: u64 = ALLOWED_DELTA_NS + 300_000_000_000;
/// How far ahead of our clock a nonce may be (the callers' clock skew).
pub const MAX_FUTURE_SKEW_NS: u64 = 30_000_000_000;
/// The longest uuid accepted (the SDK's are 36 characters).
pub const MAX_UUID_LEN: usize = 64;
/// How often a journaled store saves its changes.
pub const SAVE_INTERVAL: Duration = Duration::from_millis(100);
/// Expired entries dropped per commit, at most.
const PRUNE_PER_COMMIT: usize = 8;
/// The lane id that stands for a hotkey's floor in a journal.
pub const FLOOR_LANE: u64 = i64::MAX as u64;

/// How much the store may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Lanes (uuids) in all.
    pub max_lanes: usize,
    /// Lanes of one hotkey; beyond it the hotkey's oldest lane is forgotten.
    pub max_lanes_per_hotkey: usize,
    /// Hotkeys with lanes or a floor.
    pub max_hotkeys: usize,
}

impl Default for ReplayLimits {
    /// 65,536 lanes (about 10 MB), 1,024 per hotkey, 4,096 hotkeys (a subnet has 256 UIDs).
    fn default() -> Self {
        Self { max_lanes: 65_536, max_lanes_per_hotkey: 1_024, max_hotkeys: 4_096 }
    }
}

/// How full the store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayStats {
    pub lanes: usize,
    pub hotkeys: usize,
    /// Lanes forgotten because their hotkey had too many (its floor rose).
    pub evicted: u64,
    /// New lanes refused because the store was full.
    pub refused_full: u64,
}

/// A lane's id: 63 bits of a hash of its uuid (stable across builds, so a journal outlives
/// upgrades; a collision only makes the two lanes share one, stricter, sequence).
pub fn lane_id(uuid: &str) -> u64 {
    let digest = Blake2b::<U8>::digest(uuid.as_bytes());
    let id = u64::from_le_bytes(digest.into()) >> 1;
    if id == FLOOR_LANE {
        id - 1
    } else {
        id
    }
}

#[derive(Debug, Clone, Copy)]
struct Lane {
    nonce: u64,
    seq: u64,
}

#[derive(Debug, Default)]
struct HotkeyLanes {
    lanes: HashMap<u64, Lane>,
    /// Lanes by first insertion, for eviction.
    order: BTreeMap<u64, u64>,
    /// Nonces at or below this are refused on new lanes (lanes forgotten for the cap).
    floor: u64,
    floor_seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    hotkeys: HashMap<AccountId, HotkeyLanes>,
    /// `(forget at, seq)` → `(hotkey, lane or FLOOR_LANE)`.
    expiry: BTreeMap<(u64, u64), (AccountId, u64)>,
    lanes: usize,
    seq: u64,
    /// After a crash: nonces at or below this are refused everywhere.
    restart_floor: u64,
    /// Unsaved changes: `Some(nonce)` to write, `None` to delete.
    dirty: HashMap<(AccountId, u64), Option<u64>>,
    closed: bool,
    stats: ReplayStats,
}

/// The per-axon store of last verified nonces.
#[derive(Debug)]
pub struct NonceStore {
    limits: ReplayLimits,
    inner: Mutex<Inner>,
    journal: Option<Box<dyn ReplayJournal>>,
    /// One save at a time, so saves land in order.
    saving: Mutex<()>,
}

impl Default for NonceStore {
    fn default() -> Self {
        Self::with_limits(ReplayLimits::default())
    }
}

fn too_old_since_last() -> String {
    "Nonce is too old, a newer one was last processed".into()
}

fn window_ns(timeout: Option<f64>) -> u64 {
    let t = timeout.unwrap_or(0.0);
    let t = if t.is_finite() { t.clamp(0.0, MAX_WINDOW_TIMEOUT_S) } else { MAX_WINDOW_TIMEOUT_S };
    ALLOWED_DELTA_NS + (t * 1e9) as u64
}

impl NonceStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(limits: ReplayLimits) -> Self {
        Self { limits, inner: Mutex::default(), journal: None, saving: Mutex::new(()) }
    }

    /// A store restored from `journal`, which then receives every change ([`Self::save`]).
    pub fn journaled(limits: ReplayLimits, journal: Box<dyn ReplayJournal>, now_ns: u64) -> Result<Self, ReplayError> {
        let snap = journal.load().map_err(|e| ReplayError::Load(e.to_string()))?;
        let store = Self { limits, inner: Mutex::default(), journal: None, saving: Mutex::new(()) };
        {
            let mut inner = store.lock();
            let horizon = now_ns.saturating_sub(WINDOW_MAX_NS);
            let mut lanes: Vec<SavedLane> = snap.lanes.into_iter().filter(|l| l.nonce > horizon).collect();
            // Oldest first, so a hotkey over its cap keeps its newest lanes.
            lanes.sort_by_key(|l| l.nonce);
            for l in lanes {
                if l.lane == FLOOR_LANE {
                    store.raise_floor(&mut inner, l.hotkey, l.nonce);
                } else if store.insert_lane(&mut inner, l.hotkey, l.lane, l.nonce).is_err() {
                    // No room: the hotkey's floor covers the lane instead.
                    store.raise_floor(&mut inner, l.hotkey, l.nonce);
                }
            }
            if let (false, Some(saved)) = (snap.clean, snap.saved_at_ns) {
                inner.restart_floor = saved.saturating_add(SAVE_INTERVAL.as_nanos() as u64 + MAX_FUTURE_SKEW_NS);
                tracing::warn!(
                    refuse_until_s = inner.restart_floor.saturating_sub(now_ns) as f64 / 1e9,
                    "axon: the last run did not stop cleanly; requests signed before the crash (+30 s) are refused"
                );
            }
            inner.dirty.clear();
        }
        let store = Self { journal: Some(journal), ..store };
        // From now on the journal says "not stopped cleanly" until the final save says otherwise.
        store.save(now_ns, false)?;
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether changes go to a journal.
    pub fn is_journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// The SDK's checks, before the signature is verified. `Err` is the 401 message text.
    pub fn check(
        &self,
        hotkey: &AccountId,
        uuid: &str,
        nonce: u64,
        timeout: Option<f64>,
        now_ns: u64,
    ) -> Result<(), String> {
        if uuid.len() > MAX_UUID_LEN {
            return Err(format!("uuid is longer than {MAX_UUID_LEN} characters"));
        }
        if nonce > now_ns.saturating_add(MAX_FUTURE_SKEW_NS) {
            return Err(format!(
                "Nonce is {:.1} seconds ahead of the axon's clock (at most {} s is accepted): check the caller's clock",
                (nonce - now_ns) as f64 / 1e9,
                MAX_FUTURE_SKEW_NS / 1_000_000_000
            ));
        }
        let inner = self.lock();
        if nonce <= inner.restart_floor {
            return Err("Nonce is older than the axon's last restart allows; send a new request".into());
        }
        let hk = inner.hotkeys.get(hotkey);
        match hk.and_then(|h| h.lanes.get(&lane_id(uuid))) {
            Some(lane) if nonce <= lane.nonce => Err(too_old_since_last()),
            Some(_) => Ok(()),
            None => {
                let window = window_ns(timeout);
                if nonce <= now_ns.saturating_sub(window) {
                    let age = (now_ns as f64 - nonce as f64) / 1e9;
                    return Err(format!(
                        "Nonce is too old: acceptable delta is {:.2} seconds but request was {:.2} seconds old",
                        window as f64 / 1e9,
                        age
                    ));
                }
                if hk.is_some_and(|h| nonce <= h.floor) {
                    return Err(too_old_since_last());
                }
                Ok(())
            }
        }
    }

    /// Stores a verified nonce, re-checking atomically that no newer or equal one got in first.
    pub fn commit(&self, hotkey: &AccountId, uuid: &str, nonce: u64, now_ns: u64) -> Result<(), String> {
        let lane = lane_id(uuid);
        let mut inner = self.lock();
        if inner.closed {
            return Err("the axon is stopping; send the request again shortly".into());
        }
        if nonce <= inner.restart_floor {
            return Err(too_old_since_last());
        }
        self.prune(&mut inner, now_ns, PRUNE_PER_COMMIT);
        let known = inner.hotkeys.get(hotkey).and_then(|h| h.lanes.get(&lane)).copied();
        match known {
            Some(old) => {
                if nonce <= old.nonce {
                    return Err(too_old_since_last());
                }
                let Inner { hotkeys, expiry, .. } = &mut *inner;
                if let Some(l) = hotkeys.get_mut(hotkey).and_then(|h| h.lanes.get_mut(&lane)) {
                    l.nonce = nonce;
                }
                expiry.remove(&(old.nonce.saturating_add(WINDOW_MAX_NS), old.seq));
                expiry.insert((nonce.saturating_add(WINDOW_MAX_NS), old.seq), (*hotkey, lane));
            }
            None => {
                if inner.hotkeys.get(hotkey).is_some_and(|h| nonce <= h.floor) {
                    return Err(too_old_since_last());
                }
                if let Err(e) = self.insert_lane(&mut inner, *hotkey, lane, nonce) {
                    // Maybe expired entries free room; try harder once before refusing.
                    self.prune(&mut inner, now_ns, 256);
                    if self.insert_lane(&mut inner, *hotkey, lane, nonce).is_err() {
                        inner.stats.refused_full += 1;
                        return Err(e);
                    }
                }
            }
        }
        if self.journal.is_some() {
            inner.dirty.insert((*hotkey, lane), Some(nonce));
        }
        Ok(())
    }

    /// Adds a lane, evicting the hotkey's oldest one if it is at its cap.
    fn insert_lane(&self, inner: &mut Inner, hotkey: AccountId, lane: u64, nonce: u64) -> Result<(), String> {
        let per_hotkey = inner.hotkeys.get(&hotkey).map_or(0, |h| h.lanes.len());
        if per_hotkey == 0 && !inner.hotkeys.contains_key(&hotkey) && inner.hotkeys.len() >= self.limits.max_hotkeys {
            return Err(format!(
                "the axon remembers nonces of {} hotkeys, its limit; retry in a few minutes",
                self.limits.max_hotkeys
            ));
        }
        if per_hotkey >= self.limits.max_lanes_per_hotkey {
            self.evict_oldest(inner, hotkey);
        } else if inner.lanes >= self.limits.max_lanes {
            return Err(format!(
                "the axon remembers {} uuids, its limit; retry in a few minutes",
                self.limits.max_lanes
            ));
        }
        inner.seq += 1;
        let seq = inner.seq;
        let h = inner.hotkeys.entry(hotkey).or_default();
        h.lanes.insert(lane, Lane { nonce, seq });
        h.order.insert(seq, lane);
        inner.expiry.insert((nonce.saturating_add(WINDOW_MAX_NS), seq), (hotkey, lane));
        inner.lanes += 1;
        Ok(())
    }

    /// Forgets the hotkey's oldest lane; its floor rises so the lane's requests stay refused.
    fn evict_oldest(&self, inner: &mut Inner, hotkey: AccountId) {
        let Some(h) = inner.hotkeys.get_mut(&hotkey) else { return };
        let Some((_, lane)) = h.order.pop_first() else { return };
        let Some(old) = h.lanes.remove(&lane) else { return };
        inner.expiry.remove(&(old.nonce.saturating_add(WINDOW_MAX_NS), old.seq));
        inner.lanes -= 1;
        inner.stats.evicted += 1;
        if self.journal.is_some() {
            inner.dirty.insert((hotkey, lane), None);
        }
        self.raise_floor(inner, hotkey, old.nonce);
    }

    fn raise_floor(&self, inner: &mut Inner, hotkey: AccountId, nonce: u64) {
        if !inner.hotkeys.contains_key(&hotkey) && inner.hotkeys.len() >= self.limits.max_hotkeys {
            // No room for another hotkey: cover it with the store-wide floor instead.
            inner.restart_floor = inner.restart_floor.max(nonce);
            return;
        }
        inner.seq += 1;
        let seq = inner.seq;
        let h = inner.hotkeys.entry(hotkey).or_default();
        if nonce <= h.floor {
            return;
        }
        let old = (h.floor.saturating_add(WINDOW_MAX_NS), h.floor_seq);
        let had_floor = h.floor > 0;
        h.floor = nonce;
        h.floor_seq = seq;
        if had_floor {
            inner.expiry.remove(&old);
        }
        inner.expiry.insert((nonce.saturating_add(WINDOW_MAX_NS), seq), (hotkey, FLOOR_LANE));
        if self.journal.is_some() {
            inner.dirty.insert((hotkey, FLOOR_LANE), Some(nonce));
        }
    }

    /// Drops up to `max` entries whose nonce is older than the widest window.
    fn prune(&self, inner: &mut Inner, now_ns: u64, max: usize) {
        for _ in 0..max {
            let Some((&(at, seq), &(hotkey, lane))) = inner.expiry.first_key_value() else { return };
            if at > now_ns {
                return;
            }
            inner.expiry.pop_first();
            let Some(h) = inner.hotkeys.get_mut(&hotkey) else { continue };
            if lane == FLOOR_LANE {
                if h.floor_seq == seq {
                    h.floor = 0;
                }
            } else if h.lanes.get(&lane).is_some_and(|l| l.seq == seq) {
                h.lanes.remove(&lane);
                h.order.remove(&seq);
                inner.lanes -= 1;
            }
            if h.lanes.is_empty() && h.floor == 0 {
                inner.hotkeys.remove(&hotkey);
            }
            // The journal forgets the same entries by nonce at the next save.
        }
    }

    /// Saves the changes since the last save; `clean` marks a clean stop, after which commits
    /// are refused. A store without a journal does nothing.
    pub fn save(&self, now_ns: u64, clean: bool) -> Result<(), ReplayError> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let _one = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let dirty = {
            let mut inner = self.lock();
            if clean {
                inner.closed = true;
            }
            std::mem::take(&mut inner.dirty)
        };
        let mut batch = ReplayBatch {
            forget_through_ns: now_ns.saturating_sub(WINDOW_MAX_NS),
            now_ns,
            clean,
            ..ReplayBatch::default()
        };
        for (&(hotkey, lane), change) in &dirty {
            match change {
                Some(nonce) => batch.upserts.push(SavedLane { hotkey, lane, nonce: *nonce }),
                None => batch.deletes.push((hotkey, lane)),
            }
        }
        journal.save(&batch).map_err(|e| {
            // Keep the changes for the next save, unless a newer change replaced them meanwhile.
            let mut inner = self.lock();
            for (k, v) in dirty {
                inner.dirty.entry(k).or_insert(v);
            }
            ReplayError::Save(e.to_string())
        })
    }

    pub fn stats(&self) -> ReplayStats {
        let inner = self.lock();
        ReplayStats { lanes: inner.lanes, hotkeys: inner.hotkeys.len(), ..inner.stats }
    }

    pub fn len(&self) -> usize {
        self.lock().lanes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn hk(n: u8) -> AccountId {
        AccountId([n; 32])
    }

    #[test]
    fn first_contact_window_is_4s_plus_timeout() {
        let store = NonceStore::new();
        let now = 1_000 * S;
        assert!(store.check(&hk(1), "k", now - 15 * S, Some(12.0), now).is_ok());
        let err = store.check(&hk(1), "k", now - 17 * S, Some(12.0), now).unwrap_err();
        assert!(err.starts_with("Nonce is too old: acceptable delta is 16.00 seconds"), "{err}");
        assert!(store.check(&hk(1), "k", now - 5 * S, None, now).is_err());
        // A huge client timeout does not open the window beyond the cap.
        assert!(store.check(&hk(1), "k", now - 400 * S, Some(1e9), now).is_err());
    }

    #[test]
    fn stored_nonce_must_increase() {
        let store = NonceStore::new();
        let now = 1_000 * S;
        store.commit(&hk(1), "k", now, now).expect("first");
        assert!(store.check(&hk(1), "k", now, Some(12.0), now).is_err());
        assert!(store.commit(&hk(1), "k", now, now).is_err());
        assert!(store.check(&hk(1), "k", now + 1, Some(12.0), now).is_ok());
        // Other lanes are independent.
        assert!(store.check(&hk(1), "other", now, Some(12.0), now).is_ok());
        assert!(store.check(&hk(2), "k", now, Some(12.0), now).is_ok());
    }

    #[test]
    fn far_future_nonces_and_long_uuids_are_refused() {
        let store = NonceStore::new();
        let now = 1_000 * S;
        assert!(store.check(&hk(1), "k", now + 29 * S, None, now).is_ok());
        let err = store.check(&hk(1), "k", u64::MAX, None, now).unwrap_err();
        assert!(err.contains("ahead of the axon's clock"), "{err}");
        assert!(store.check(&hk(1), &"u".repeat(64), now, None, now).is_ok());
        assert!(store.check(&hk(1), &"u".repeat(65), now, None, now).is_err());
    }

    #[test]
    fn entries_expire_incrementally_and_the_store_stays_within_its_limits() {
        let limits = ReplayLimits { max_lanes: 10, max_lanes_per_hotkey: 4, max_hotkeys: 3 };
        let store = NonceStore::with_limits(limits);
        let now = 1_000 * S;
        // One hotkey floods uuids: it keeps 4 lanes, and its evicted ones stay refused.
        for i in 0..100u64 {
            store.commit(&hk(1), &format!("u{i}"), now + i, now).expect("own lanes rotate");
        }
        assert_eq!(store.stats().lanes, 4);
        assert_eq!(store.stats().evicted, 96);
        let replay = store.check(&hk(1), "u0", now, Some(12.0), now);
        assert!(replay.is_err(), "an evicted lane's request is still a replay");
        assert!(store.check(&hk(1), "new", now + 200, Some(12.0), now).is_ok(), "fresh nonces pass");
        // Two more hotkeys fill the store (10 lanes); a fourth hotkey does not fit.
        for i in 0..4u64 {
            store.commit(&hk(2), &format!("u{i}"), now + i, now).expect("fits");
        }
        for i in 0..2u64 {
            store.commit(&hk(3), &format!("u{i}"), now + i, now).expect("fits");
        }
        assert!(store.commit(&hk(3), "u9", now + 9, now).is_err(), "store full");
        assert!(store.commit(&hk(4), "u0", now, now).is_err(), "too many hotkeys");
        assert_eq!(store.stats().refused_full, 2);
        // After the widest window everything expires, a few entries per commit.
        let later = now + WINDOW_MAX_NS + 1_000;
        for i in 0..10u64 {
            store.commit(&hk(5), &format!("x{i}"), later + i, later).expect("room after expiry");
        }
        assert!(store.stats().lanes <= 10);
        assert!(store.stats().hotkeys <= 3);
    }
}
