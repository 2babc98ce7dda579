//! The priority stage: when more requests want a handler than it may run at once, the ones
//! with the highest priority (the SDK's `priority_fn`, e.g. the caller's stake) go first, and a
//! request that cannot start within its timeout gets 408, as the SDK's priority pool does.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

#[derive(Debug)]
struct Waiter {
    priority: f64,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// Highest priority first; among equals, first come first served.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.total_cmp(&other.priority).then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    seq: u64,
    queue: BinaryHeap<Waiter>,
}

/// Admits at most `slots` handlers at once, in priority order.
#[derive(Debug, Clone)]
pub struct PriorityGate {
    slots: usize,
    state: Arc<Mutex<State>>,
}

/// A running handler's slot; dropping it admits the next waiter.
#[derive(Debug)]
pub struct Permit {
    state: Arc<Mutex<State>>,
}

impl PriorityGate {
    pub fn new(slots: usize) -> Self {
        Self { slots: slots.max(1), state: Arc::default() }
    }

    /// Waits for a slot; `None` if none came within `timeout`.
    pub async fn acquire(&self, priority: f64, timeout: Duration) -> Option<Permit> {
        let rx = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.running < self.slots && st.queue.is_empty() {
                st.running += 1;
                return Some(Permit { state: self.state.clone() });
            }
            let (tx, rx) = oneshot::channel();
            st.seq += 1;
            let seq = st.seq;
            st.queue.push(Waiter { priority, seq, wake: tx });
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Some(Permit { state: self.state.clone() }),
            // Timed out: our waiter stays queued until a release finds its receiver gone and
            // skips it; the slot count is untouched.
            _ => None,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Hand the slot straight to the best live waiter, or free it.
        while let Some(w) = st.queue.pop() {
            if w.wake.send(()).is_ok() {
                return;
            }
        }
        st.running -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn higher_priority_goes_first_and_waiters_time_out() {
        let gate = PriorityGate::new(1);
        let first = gate.acquire(0.0, Duration::from_secs(1)).await.expect("free slot");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for p in [1.0, 5.0, 3.0] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire(p, Duration::from_secs(5)).await.expect("admitted");
                order.lock().expect("lock").push(p);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gate.acquire(9.0, Duration::from_millis(20)).await.is_none(), "times out");
        drop(first);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().expect("lock"), vec![5.0, 3.0, 1.0]);
        assert!(gate.acquire(0.0, Duration::from_millis(50)).await.is_some(), "slot freed");
    }
}
