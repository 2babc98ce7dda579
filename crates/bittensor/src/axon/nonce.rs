//! Replay protection: the SDK's nonce rules, with a clock tests can control.
//!
//! Per `"{hotkey}:{uuid}"` the axon remembers the last verified nonce. A first request must be
//! newer than `now − 4 s − timeout`; later ones must be strictly greater than the stored nonce.
//! The nonce is stored only after the signature verified, and check-and-store is atomic so two
//! copies of one request racing each other cannot both pass (the Python axon has that race).
//!
//! Two deliberate hardenings over the SDK, both invisible to honest clients: the client-supplied
//! `timeout` widens the first-contact window by at most [`MAX_WINDOW_TIMEOUT_S`], and the window
//! applies whatever `bt_header_dendrite_version` says (that header is not signed, so the SDK's
//! "no window before 7.2.0" branch lets a replayer skip the window). Together they bound how long
//! an entry must be kept, so the store can forget old entries instead of growing forever.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The fixed part of the first-contact window (the SDK's `ALLOWED_DELTA`).
pub const ALLOWED_DELTA_NS: u64 = 4_000_000_000;
/// The most the client's `timeout` may widen the window, seconds.
pub const MAX_WINDOW_TIMEOUT_S: f64 = 300.0;
/// Entries kept before old ones are pruned.
const PRUNE_AT: usize = 100_000;

/// Wall-clock nanoseconds since the Unix epoch (the SDK's `time.time_ns()`).
pub trait Clock: Send + Sync + Debug {
    fn now_ns(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }
}

/// A clock that reads a value set by hand (tests, replays of recorded traffic).
#[derive(Debug, Default)]
pub struct ManualClock(pub std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn new(ns: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(ns))
    }
    pub fn set(&self, ns: u64) {
        self.0.store(ns, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The per-axon store of last verified nonces.
#[derive(Debug, Default)]
pub struct NonceStore {
    map: Mutex<HashMap<String, u64>>,
}

impl NonceStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The SDK's checks, before the signature is verified. `Err` is the 401 message text.
    pub fn check(&self, key: &str, nonce: u64, timeout: Option<f64>, now_ns: u64) -> Result<(), String> {
        let stored = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied();
        match stored {
            None => {
                let window = window_ns(timeout);
                if u128::from(nonce) <= u128::from(now_ns).saturating_sub(window) {
                    let age = (now_ns as f64 - nonce as f64) / 1e9;
                    return Err(format!(
                        "Nonce is too old: acceptable delta is {:.2} seconds but request was {:.2} seconds old",
                        window as f64 / 1e9,
                        age
                    ));
                }
                Ok(())
            }
            Some(last) if nonce <= last => Err("Nonce is too old, a newer one was last processed".into()),
            Some(_) => Ok(()),
        }
    }

    /// Stores a verified nonce, re-checking atomically that no newer or equal one got in first.
    pub fn commit(&self, key: &str, nonce: u64, now_ns: u64) -> Result<(), String> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&last) = map.get(key) {
            if nonce <= last {
                return Err("Nonce is too old, a newer one was last processed".into());
            }
        }
        if map.len() >= PRUNE_AT {
            let horizon = now_ns.saturating_sub(window_ns(Some(MAX_WINDOW_TIMEOUT_S)) as u64);
            map.retain(|_, v| *v > horizon);
        }
        map.insert(key.to_owned(), nonce);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn window_ns(timeout: Option<f64>) -> u128 {
    let t = timeout.unwrap_or(0.0);
    let t = if t.is_finite() { t.clamp(0.0, MAX_WINDOW_TIMEOUT_S) } else { MAX_WINDOW_TIMEOUT_S };
    u128::from(ALLOWED_DELTA_NS) + (t * 1e9) as u128
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn first_contact_window_is_4s_plus_timeout() {
        let store = NonceStore::new();
        let now = 1_000 * S;
        assert!(store.check("k", now - 15 * S, Some(12.0), now).is_ok());
        let err = store.check("k", now - 17 * S, Some(12.0), now).unwrap_err();
        assert!(err.starts_with("Nonce is too old: acceptable delta is 16.00 seconds"), "{err}");
        assert!(store.check("k", now - 5 * S, None, now).is_err());
        // A huge client timeout does not open the window beyond the cap.
        assert!(store.check("k", now - 400 * S, Some(1e9), now).is_err());
    }

    #[test]
    fn stored_nonce_must_increase() {
        let store = NonceStore::new();
        let now = 1_000 * S;
        store.commit("k", now, now).expect("first");
        assert!(store.check("k", now, Some(12.0), now).is_err());
        assert!(store.commit("k", now, now).is_err());
        assert!(store.check("k", now + 1, Some(12.0), now).is_ok());
        // Other endpoints are independent.
        assert!(store.check("other", now, Some(12.0), now).is_ok());
    }
}
