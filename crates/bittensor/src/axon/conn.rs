//! Connection admission: who may hold one of the axon's connections, and for how long.
//!
//! The axon is the one part of a miner the whole internet reaches, so one client must not be able
//! to take every connection. Each connection holds a slot in a [`Table`] with two caps: a global
//! one (`max_connections`) and one per source address (`max_connections_per_ip`; IPv6 counts per
//! /64, the block one host usually holds). New connections are always accepted from the kernel
//! and refused here, so a flood never leaves an honest client waiting in the backlog behind it.
//! When a cap is reached, an idle connection (open, but not inside a request: a keep-alive between
//! requests, or one that never sent a byte) is reclaimed first, oldest first, and only then is the
//! newcomer refused. A connection that is inside a request is never reclaimed: the request
//! deadline ([`super::AxonConfig::request_timeout`]) bounds it instead.
//!
//! [`Tracked`] wraps the socket to see when the first byte of a request arrives: that instant is
//! both the end of the connection's idleness and the start of the request's deadline.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Not inside a request: reclaimable.
const IDLE: u8 = 0;
/// The first bytes of a request arrived; the handler has not started yet.
const READING: u8 = 1;
/// The handler runs (or its response is being written).
const BUSY: u8 = 2;
/// Reclaimed: told to close after whatever it is doing.
const CLOSING: u8 = 3;

/// What the per-address cap counts: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum IpKey {
    V4(u32),
    V6(u64),
}

impl IpKey {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => IpKey::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(u32::from(v4)),
                None => IpKey::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// One connection's slot.
#[derive(Debug)]
pub(super) struct Slot {
    ip: IpKey,
    state: AtomicU8,
    /// Nanoseconds since the table's epoch: when it became idle, or when its request began.
    since_ns: AtomicU64,
    epoch: Instant,
    reclaim: Notify,
}

impl Slot {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Bytes arrived: if the connection was idle, a request has begun now.
    fn on_read(&self) {
        if self.state.load(Ordering::Relaxed) == IDLE
            && self.state.compare_exchange(IDLE, READING, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.since_ns.store(self.now_ns(), Ordering::Release);
        }
    }

    /// The handler starts; returns when the request's first byte arrived (its deadline's start).
    pub(super) fn begin_request(&self) -> Instant {
        match self.state.compare_exchange(READING, BUSY, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => self.epoch + Duration::from_nanos(self.since_ns.load(Ordering::Acquire)),
            Err(CLOSING) => Instant::now(),
            Err(_) => {
                // Bytes read before the previous response finished (pipelining): starts now.
                self.state.store(BUSY, Ordering::Release);
                Instant::now()
            }
        }
    }

    /// The response is out of the handler: idle again until the next request's first byte.
    pub(super) fn end_request(&self) {
        self.since_ns.store(self.now_ns(), Ordering::Release);
        let _ = self.state.compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Resolves when the table wants this connection closed.
    pub(super) async fn reclaimed(&self) {
        self.reclaim.notified().await;
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Open connections, reclaimed ones included until they end.
    total: usize,
    /// Reclaimed connections that have not ended yet.
    closing: usize,
    per_ip: HashMap<IpKey, usize>,
    slots: HashMap<u64, Arc<Slot>>,
}

/// Every open connection of one axon.
#[derive(Debug)]
pub(super) struct Table {
    max_total: usize,
    max_per_ip: usize,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// Notified when the last connection ends (shutdown waits on it).
    emptied: Notify,
}

/// A connection's claim on the table; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Ticket {
    table: Arc<Table>,
    id: u64,
    pub(super) slot: Arc<Slot>,
}

impl Table {
    pub(super) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            epoch: Instant::now(),
            inner: Mutex::default(),
            emptied: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection from `ip`, reclaiming an idle one if a cap is reached;
    /// `None` refuses the connection.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let key = IpKey::of(ip);
        let mut inner = self.lock();
        let from_ip = inner.per_ip.get(&key).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            // Only this address's own idle connections make room for it.
            if !reclaim_oldest_idle(&mut inner, Some(key)) {
                return None;
            }
        } else if inner.total - inner.closing >= self.max_total && !reclaim_oldest_idle(&mut inner, None) {
            return None;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let slot = Arc::new(Slot {
            ip: key,
            state: AtomicU8::new(IDLE),
            since_ns: AtomicU64::new(self.epoch.elapsed().as_nanos() as u64),
            epoch: self.epoch,
            reclaim: Notify::new(),
        });
        inner.total += 1;
        *inner.per_ip.entry(key).or_insert(0) += 1;
        inner.slots.insert(id, slot.clone());
        Some(Ticket { table: self.clone(), id, slot })
    }

    pub(super) fn open(&self) -> usize {
        self.lock().total
    }

    /// Waits until every connection has ended, at most `limit`.
    pub(super) async fn drained(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let wait = self.emptied.notified();
            if self.open() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                return;
            }
        }
    }
}

/// Marks the longest-idle connection (of `ip`, if given) closing and tells it so.
fn reclaim_oldest_idle(inner: &mut Inner, ip: Option<IpKey>) -> bool {
    // A scan, but only when a cap is reached, over at most `max_connections` slots.
    let victim = inner
        .slots
        .values()
        .filter(|s| ip.is_none_or(|k| s.ip == k) && s.state.load(Ordering::Acquire) == IDLE)
        .min_by_key(|s| s.since_ns.load(Ordering::Relaxed))
        .cloned();
    let Some(victim) = victim else { return false };
    if victim.state.compare_exchange(IDLE, CLOSING, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        // A request began on it meanwhile; it keeps its slot.
        return false;
    }
    inner.closing += 1;
    victim.reclaim.notify_one();
    true
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        inner.slots.remove(&self.id);
        inner.total -= 1;
        if self.slot.state.load(Ordering::Acquire) == CLOSING {
            inner.closing -= 1;
        }
        if let Some(n) = inner.per_ip.get_mut(&self.slot.ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_ip.remove(&self.slot.ip);
            }
        }
        if inner.total == 0 {
            self.table.emptied.notify_waiters();
        }
    }
}

/// The socket, reporting the first byte of each request to its slot.
#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) stream: TcpStream,
    pub(super) slot: Arc<Slot>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        assert_eq!(IpKey::of(ip("2001:db8::1")), IpKey::of(ip("2001:db8::ffff:1")));
        assert_ne!(IpKey::of(ip("2001:db8::1")), IpKey::of(ip("2001:db8:0:1::1")));
        assert_eq!(IpKey::of(ip("::ffff:10.0.0.1")), IpKey::of(ip("10.0.0.1")));
    }

    #[test]
    fn caps_reclaim_idle_connections_first_and_never_busy_ones() {
        let t = Table::new(3, 2);
        let a1 = t.admit(ip("10.0.0.1")).expect("first");
        let a2 = t.admit(ip("10.0.0.1")).expect("second");
        a1.slot.on_read();
        a1.slot.begin_request();
        a2.slot.on_read();
        a2.slot.begin_request();
        // Both of 10.0.0.1's connections are inside requests: a third from it is refused.
        assert!(t.admit(ip("10.0.0.1")).is_none());
        a2.slot.end_request();
        // One is idle now: it is reclaimed for the newcomer.
        let a3 = t.admit(ip("10.0.0.1")).expect("reclaimed an idle one");
        assert_eq!(a2.slot.state.load(Ordering::Acquire), CLOSING);
        assert_eq!(a1.slot.state.load(Ordering::Acquire), BUSY);
        drop(a2);
        let b1 = t.admit(ip("10.0.0.2")).expect("room");
        b1.slot.on_read();
        // The global cap (3) is reached; the longest-idle connection (a3, never used) goes.
        let b2 = t.admit(ip("10.0.0.2")).expect("global cap: idle reclaimed");
        assert_eq!(a3.slot.state.load(Ordering::Acquire), CLOSING);
        b2.slot.on_read();
        // a3 has not ended yet, but it no longer counts against the cap it was reclaimed for.
        assert!(t.admit(ip("10.0.0.3")).is_none(), "nothing idle left to reclaim");
        drop(a3);
        assert_eq!(t.open(), 3);
    }
}
