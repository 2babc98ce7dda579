//! The allocation key made ahead of need. RSA-2048 generation takes tens of milliseconds and
//! varies widely from key to key, and nothing forces an allocation to wait for it: `a` starts
//! one the moment it starts (in parallel with the metagraph read and the checks), and the
//! long-lived processes (the shell, `nicompute serve`) keep one ready for their next allocation.
//!
//! Each preparation races two generators on two threads and hands out whichever key is done
//! first: the time to the first of two draws is far shorter and steadier than one draw's
//! (its p90 is about one draw's median). The second key is kept as the next one when the
//! process keeps keys ready, and dropped otherwise. A key lives only in memory, is handed out
//! once, and every allocation gets its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::{AllocationKey, CryptoError};

/// Generators raced for each preparation (the machines this runs on have two cores or more).
const RACERS: usize = 2;

/// Keys of one preparation: they arrive in the order they are done.
#[derive(Debug)]
struct Pending {
    keys: mpsc::UnboundedReceiver<Result<AllocationKey, CryptoError>>,
    left: usize,
}

/// At most one preparation in the making or made, not yet handed out. The allocator takes its
/// keys from [`KeyReserve::global`].
#[derive(Debug, Default)]
pub struct KeyReserve {
    slot: Mutex<Option<Pending>>,
    keep_ready: AtomicBool,
}

static GLOBAL: KeyReserve = KeyReserve::new();

impl KeyReserve {
    /// An empty reserve that makes keys only when asked.
    pub const fn new() -> Self {
        Self { slot: Mutex::new(None), keep_ready: AtomicBool::new(false) }
    }

    /// The process's reserve, the one the allocator takes its keys from.
    pub fn global() -> &'static KeyReserve {
        &GLOBAL
    }

    /// Starts making keys on their own threads, unless some are already made or in the making.
    pub fn prepare(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(start());
        }
    }

    /// With `true`, the key left over from a race is kept for the next allocation, and a new
    /// preparation starts once none is left (and one now): for processes that make more than
    /// one allocation.
    pub fn keep_ready(&self, on: bool) {
        self.keep_ready.store(on, Ordering::Relaxed);
        if on {
            self.prepare();
        }
    }

    /// The first key prepared (waiting for it if it is still in the making), or the first of a
    /// race started now. Each key is handed out once.
    pub async fn take(&self) -> Result<AllocationKey, CryptoError> {
        let pending = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut pending = pending.unwrap_or_else(start);
        let key = match pending.keys.recv().await {
            Some(key) => key,
            None => Err(CryptoError::KeyGeneration("the key generation threads ended without a key".into())),
        };
        pending.left = pending.left.saturating_sub(1);
        if self.keep_ready.load(Ordering::Relaxed) {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                // The rest of this race is the next key; a new race starts once it is used, so
                // two races never compete for the CPU.
                *slot = Some(if pending.left > 0 { pending } else { start() });
            }
        }
        key
    }

    /// Whether a key is made or in the making.
    pub fn is_prepared(&self) -> bool {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

fn start() -> Pending {
    let (tx, keys) = mpsc::unbounded_channel();
    let mut left = 0;
    for _ in 0..RACERS {
        let tx = tx.clone();
        // A thread that cannot be spawned is one racer fewer; with none, `take` reports it.
        let spawned = std::thread::Builder::new().name("rsa-keygen".into()).spawn(move || {
            // The receiver may be gone (a one-shot process took the first key): the key is
            // dropped, and AWS-LC wipes it.
            let _ = tx.send(AllocationKey::generate());
        });
        left += usize::from(spawned.is_ok());
    }
    Pending { keys, left }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_key_is_handed_out_once_and_the_next_is_started_when_asked() {
        let reserve = KeyReserve::new();
        assert!(!reserve.is_prepared());
        // Without a prepared key, take makes one.
        let a = reserve.take().await.unwrap();
        assert!(!reserve.is_prepared(), "nothing kept ready unless asked");
        reserve.keep_ready(true);
        assert!(reserve.is_prepared());
        let b = reserve.take().await.unwrap();
        assert!(reserve.is_prepared(), "the race's second key is kept for the next allocation");
        let c = reserve.take().await.unwrap();
        assert!(reserve.is_prepared(), "a new race starts once the last one is used up");
        let d = reserve.take().await.unwrap();
        let pems = [a, b, c, d].map(|k| k.public_pem().unwrap());
        for (i, x) in pems.iter().enumerate() {
            for y in &pems[i + 1..] {
                assert_ne!(x, y, "every key is handed out once");
            }
        }
        reserve.keep_ready(false);
        let _ = reserve.take().await.unwrap();
        assert!(!reserve.is_prepared());
    }
}
