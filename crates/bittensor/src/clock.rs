//! Wall-clock time in one place. Allocation expiry, specs ages, publication times and devnet
//! blocks are Unix milliseconds, synapse nonces and the axon's replay windows Unix nanoseconds;
//! whatever stores or compares them asks a [`Clock`]: the system's by default, a manual one in
//! tests (and replays of recorded traffic) that must say what time it is. (Durations and deadlines
//! use `tokio::time::Instant`, which tests pause and advance on their own.)

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time, as Unix milliseconds or nanoseconds. Cheap to clone; clones of a manual clock share
/// its time.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: nanoseconds set by hand.
    manual: Option<Arc<AtomicU64>>,
}

const NS_PER_MS: u64 = 1_000_000;

impl Clock {
    /// The system's wall clock (also the default).
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `start_ms` until [`Clock::set_ms`] or [`Clock::advance`] moves it.
    pub fn manual(start_ms: u64) -> Self {
        Self::manual_ns(start_ms.saturating_mul(NS_PER_MS))
    }

    /// A manual clock reading `start_ns` (nanoseconds: recorded synapse nonces).
    pub fn manual_ns(start_ns: u64) -> Self {
        Self { manual: Some(Arc::new(AtomicU64::new(start_ns))) }
    }

    /// Milliseconds since the Unix epoch (0 for a system clock set before 1970).
    pub fn now_ms(&self) -> u64 {
        self.now_ns() / NS_PER_MS
    }

    /// Nanoseconds since the Unix epoch (the SDK's `time.time_ns()`; 0 before 1970).
    pub fn now_ns(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
        }
    }

    /// Sets a manual clock; the system clock cannot be set, and is left alone.
    pub fn set_ms(&self, ms: u64) {
        self.set_ns(ms.saturating_mul(NS_PER_MS));
    }

    /// [`Clock::set_ms`] in nanoseconds.
    pub fn set_ns(&self, ns: u64) {
        if let Some(t) = &self.manual {
            t.store(ns, Ordering::SeqCst);
        }
    }

    /// Moves a manual clock forward by `by`; the system clock moves by itself and is left alone.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            t.fetch_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            Some(t) => write!(f, "Clock(manual at {} ms)", t.load(Ordering::SeqCst) / NS_PER_MS),
            None => f.write_str("Clock(system)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clocks_move_only_when_told_and_clones_share_the_time() {
        let c = Clock::manual(1_000);
        let shared = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        c.advance(Duration::from_secs(2));
        assert_eq!(shared.now_ms(), 3_000);
        shared.set_ms(5);
        assert_eq!(c.now_ms(), 5);
        assert_eq!(format!("{c:?}"), "Clock(manual at 5 ms)");
    }

    #[test]
    fn the_system_clock_is_now_and_cannot_be_set() {
        let c = Clock::system();
        let before = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        c.set_ms(5);
        c.advance(Duration::from_secs(3600));
        let now = c.now_ms();
        assert!(now >= before && now < before + 60_000, "{now} vs {before}");
    }
}
