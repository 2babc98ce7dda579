//! The allocation key made ahead of need. RSA-2048 generation takes a hundred milliseconds or
//! more, and nothing forces an allocation to wait for it: `a` starts one the moment it starts
//! (in parallel with the metagraph read and the checks), and the long-lived processes (the
//! shell, `nicompute serve`) keep one ready for their next allocation. A key lives only in
//! memory, is handed out once, and a new one is made for every allocation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{AllocationKey, CryptoError};

type Pending = oneshot::Receiver<Result<AllocationKey, CryptoError>>;

/// At most one key in the making or made, not yet handed out. The allocator takes its keys from
/// [`KeyReserve::global`].
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

    /// Starts making a key on its own thread, unless one is already made or in the making.
    pub fn prepare(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(start());
        }
    }

    /// With `true`, a new key is started as soon as one is handed out (and one now), so that the
    /// next allocation finds it ready: for processes that make more than one allocation.
    pub fn keep_ready(&self, on: bool) {
        self.keep_ready.store(on, Ordering::Relaxed);
        if on {
            self.prepare();
        }
    }

    /// The key prepared (waiting for it if it is still in the making), or a fresh one made now.
    /// Each key is handed out once.
    pub async fn take(&self) -> Result<AllocationKey, CryptoError> {
        let pending = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        let key = match pending.unwrap_or_else(start).await {
            Ok(key) => key,
            Err(_) => Err(CryptoError::KeyGeneration("the key generation thread ended without a key".into())),
        };
        // The next one starts after this one is done, so the two never compete for the CPU.
        if self.keep_ready.load(Ordering::Relaxed) {
            self.prepare();
        }
        key
    }

    /// Whether a key is made or in the making.
    pub fn is_prepared(&self) -> bool {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

fn start() -> Pending {
    let (tx, rx) = oneshot::channel();
    // A thread that cannot be spawned drops `tx`: `take` reports it.
    let _ = std::thread::Builder::new().name("rsa-keygen".into()).spawn(move || {
        let _ = tx.send(AllocationKey::generate());
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;

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
        assert!(reserve.is_prepared(), "the next key is started after one is handed out");
        let c = reserve.take().await.unwrap();
        let moduli = [a.key.n(), b.key.n(), c.key.n()];
        assert_ne!(moduli[0], moduli[1]);
        assert_ne!(moduli[1], moduli[2]);
        assert_ne!(moduli[0], moduli[2]);
        reserve.keep_ready(false);
        let _ = reserve.take().await.unwrap();
        assert!(!reserve.is_prepared());
    }
}
