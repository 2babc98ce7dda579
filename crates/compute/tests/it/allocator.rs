//! The renter's allocator against in-process miners (local runtime, static metagraph): the
//! parallel check under one deadline with black holes and dead ports among the candidates,
//! fallback to the next "yes", errors that explain themselves, the record kept through an
//! interrupted allocation, deallocation outcomes, specs sync and the still-allocated probe.

// Timings are reported on stderr for the reader, never asserted.
#![allow(clippy::print_stderr)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::subtensor::metagraph::{Axon, Metagraph, Neuron, Prometheus, StakeSource};
use bittensor::Keypair;
use compute::allocator::{
    self, AllocateFailure, AllocateOptions, Allocated, AllocationStore, Candidate, DeallocOutcome, Explain,
    MemoryStore, RowState, Stage, StoreError, Verdict,
};
use compute::crypto::AllocationKey;
use compute::db::DbError;
use compute::miner::MinerHandle;
use compute::protocol::Allocate;
use compute::runtime::local::LocalRuntime;
use compute::runtime::ContainerRuntime;
use compute::specs::{GpuRequirement, Requirement, Specs};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::harness::{
    fixture_key, keygen, local_miner, on_path, seed_key, simulated_specs, ssh_run, ssh_tools, ClosedPort, Login, H100,
    RTX4090, T,
};

/// A port that refuses connections, held until `held` is dropped.
fn dead_port(held: &mut Vec<ClosedPort>) -> u16 {
    let c = ClosedPort::new();
    let port = c.port();
    held.push(c);
    port
}

fn dendrite_key() -> Keypair {
    fixture_key("dendrite_hotkey")
}

fn key(n: u8) -> Keypair {
    seed_key(n)
}

fn h100_80gb() -> Requirement {
    Requirement::sn27(Some(GpuRequirement { count: 1, memory_mib: 80 * 1024, kind: "h100".into() }))
}

struct Live {
    miner: Option<MinerHandle>,
    runtime: Arc<LocalRuntime>,
    hotkey: String,
    port: u16,
    ssh_port: u16,
    specs: Specs,
    _dir: tempfile::TempDir,
}

impl Live {
    fn target(&self) -> AxonTarget {
        AxonTarget { ip: "127.0.0.1".into(), port: self.port, hotkey: self.hotkey.clone() }
    }
}

async fn live_miner(seed: u8, gpu: &str) -> Live {
    let dir = tempfile::tempdir().expect("tmp");
    let runtime = Arc::new(LocalRuntime::new(dir.path().join("local")).expect("runtime"));
    let stakes: HashMap<String, f32> = [(dendrite_key().ss58(), 5000.0)].into_iter().collect();
    let specs = simulated_specs(gpu).await;
    let (miner, ssh_port) =
        local_miner(key(seed), specs.clone(), stakes, runtime.clone(), dir.path().join("state")).await;
    let port = miner.axon_addr().port();
    Live { miner: Some(miner), runtime, hotkey: key(seed).ss58(), port, ssh_port, specs, _dir: dir }
}

/// A TCP listener that accepts connections and never answers; the task owns the sockets.
async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

/// A metagraph of (hotkey, port, serving) neurons on 127.0.0.1.
fn metagraph(entries: &[(String, u16, bool)]) -> Metagraph {
    let neurons = entries
        .iter()
        .enumerate()
        .map(|(uid, (hotkey, port, serving))| Neuron {
            uid: uid as u16,
            hotkey: hotkey.clone(),
            coldkey: hotkey.clone(),
            active: true,
            validator_permit: false,
            stake_tao: 0.0,
            alpha_stake_tao: 0.0,
            tao_stake_tao: 0.0,
            lite_stake_rao: 0,
            total_stake_rao: 0,
            alpha_stake_rao: 0,
            tao_stake_rao: 0,
            last_update: 0,
            emission: 0.0,
            incentive: 0.0,
            consensus: 0.0,
            dividends: 0.0,
            validator_trust: 0.0,
            rank: 0,
            trust: 0,
            pruning_score: 0,
            axon: Axon {
                ip: if *serving { "127.0.0.1".into() } else { "0.0.0.0".into() },
                port: *port,
                ip_type: 4,
                version: 0,
                protocol: 4,
                block: 1,
                serving: *serving,
            },
            prometheus: Prometheus { ip: "0.0.0.0".into(), port: 0, ip_type: 0, version: 0, block: 0 },
        })
        .collect();
    Metagraph { netuid: 27, block: 1, block_hash: "0x00".into(), stake_source: StakeSource::NeuronLite, neurons }
}

fn verdict_of<'a>(explain: &'a [Explain], hotkey: &str) -> &'a Verdict {
    let found: Vec<&Explain> = explain.iter().filter(|e| e.hotkey == hotkey).collect();
    assert_eq!(found.len(), 1, "{hotkey} appears once in {explain:#?}");
    &found[0].verdict
}

fn quiet(_: Stage) {}

/// A check as the renter sends it: is the machine free and does it meet an 80 GB H100 requirement?
async fn says_yes(d: &Dendrite, target: &AxonTarget) -> bool {
    let device_requirement = match h100_80gb().to_json() {
        Value::Object(m) => m,
        _ => panic!("requirement is an object"),
    };
    let a = Allocate { timeline: 1, checking: true, device_requirement, ..Allocate::default() };
    let r = d.call(target, a, T).await;
    r.synapse.output.get("status").and_then(Value::as_bool).unwrap_or(false)
}

/// Allocates `target` directly with a key of its own, as another renter would.
async fn occupy(d: &Dendrite, target: &AxonTarget) -> AllocationKey {
    let other = AllocationKey::generate().expect("rsa");
    let a = Allocate {
        timeline: 1,
        checking: false,
        public_key: other.public_pem().expect("pem"),
        device_requirement: match h100_80gb().to_json() {
            Value::Object(m) => m,
            _ => panic!("requirement is an object"),
        },
        ..Allocate::default()
    };
    let r = d.call(target, a, T).await;
    assert_eq!(r.synapse.output.get("status"), Some(&json!(true)), "{:?}", r.synapse.output);
    other
}

fn committed(store: &MemoryStore, hotkey: &str) -> Allocated {
    let row = store.get(hotkey).expect("row");
    assert_eq!(row.state, RowState::Committed);
    row.record.expect("record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_yes_wins_among_black_holes_dead_ports_mismatches_and_penalized() {
    let d = Dendrite::new(dendrite_key());
    let good = [live_miner(1, H100).await, live_miner(2, H100).await];
    let wrong_gpu = live_miner(3, RTX4090).await;
    let h100 = good[0].specs.clone();

    // (hotkey, port, serving) for the metagraph; (hotkey, specs) for the candidate builder.
    let mut neurons: Vec<(String, u16, bool)> = Vec::new();
    let mut miner_specs: Vec<(String, Option<Specs>)> = Vec::new();
    for m in good.iter().chain([&wrong_gpu]) {
        neurons.push((m.hotkey.clone(), m.port, true));
        miner_specs.push((m.hotkey.clone(), Some(m.specs.clone())));
    }
    let mut holes = Vec::new();
    let mut hole_keys = Vec::new();
    for n in 0..8u8 {
        let (port, task) = black_hole().await;
        holes.push(task);
        let hk = key(10 + n).ss58();
        neurons.push((hk.clone(), port, true));
        miner_specs.push((hk.clone(), Some(h100.clone())));
        hole_keys.push(hk);
    }
    let mut dead_keys = Vec::new();
    let mut closed = Vec::new();
    for n in 0..8u8 {
        let hk = key(30 + n).ss58();
        neurons.push((hk.clone(), dead_port(&mut closed), true));
        miner_specs.push((hk.clone(), Some(h100.clone())));
        dead_keys.push(hk);
    }
    // Penalized (its port is a black hole: asking it would show), no specs, not serving, unknown.
    let (penalized_port, penalized_task) = black_hole().await;
    holes.push(penalized_task);
    let penalized = key(50).ss58();
    neurons.push((penalized.clone(), penalized_port, true));
    miner_specs.push((penalized.clone(), Some(h100.clone())));
    let no_specs = key(51).ss58();
    neurons.push((no_specs.clone(), dead_port(&mut closed), true));
    miner_specs.push((no_specs.clone(), None));
    let not_serving = key(52).ss58();
    neurons.push((not_serving.clone(), 0, false));
    miner_specs.push((not_serving.clone(), Some(h100.clone())));
    let unknown = key(53).ss58();
    miner_specs.push((unknown.clone(), Some(h100.clone())));

    let mg = metagraph(&neurons);
    let penalties: HashSet<String> = [penalized.clone()].into_iter().collect();
    let req = h100_80gb();
    let (cands, excluded) = allocator::candidates(&miner_specs, &mg, &penalties, &req);
    assert_eq!(cands.len(), 18, "2 live + 8 black holes + 8 dead ports");
    assert_eq!(excluded.len(), 5);

    let (user_pub, _keydir) = ssh_public_key();
    let deadline = Duration::from_secs(20);
    let opts = AllocateOptions {
        timeline_days: 1,
        ttl: Some(Duration::from_secs(3600)),
        ssh_key: Some(user_pub),
        deadline,
        check_timeout: deadline,
        ssh_wait: Duration::from_secs(10),
        ..AllocateOptions::default()
    };
    let store = Arc::new(MemoryStore::new());
    let stages = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    // Spawned: the allocation future is Send (the CLI may run it on any runtime).
    let task = {
        let (d, store, stages, req, opts) = (d.clone(), store.clone(), stages.clone(), req.clone(), opts.clone());
        tokio::spawn(async move {
            let progress = move |s: Stage| stages.lock().expect("lock").push(s);
            allocator::allocate(&d, cands, excluded, &req, &opts, store.as_ref(), &progress).await
        })
    };
    let a = task.await.expect("join").expect("allocated");
    let elapsed = started.elapsed();
    eprintln!(
        "allocated {} in {elapsed:?}: first yes after {:?}, allocate {:?}, ssh {:?}, attempts {}",
        a.hotkey, a.timings.check, a.timings.allocate, a.timings.ssh, a.timings.attempts
    );

    // The first yes was taken at once: no waiting for the black holes' timeouts.
    assert!(a.timings.check < deadline, "{:?}", a.timings);
    assert_eq!(a.timings.attempts, 1);
    let winner = good.iter().find(|m| m.hotkey == a.hotkey).expect("a live H100 miner won");
    let other = good.iter().find(|m| m.hotkey != a.hotkey).expect("the other");

    // Credentials: decrypted, for the winner's SSH port, reachable.
    assert_eq!(a.username, "root");
    assert!(a.password.expose_secret().len() >= 10);
    assert_eq!((a.ip.as_str(), a.port), ("127.0.0.1", winner.ssh_port));
    assert_eq!(a.resource, "NVIDIA H100 80GB HBM3");
    assert!(a.ssh_ready, "the SSH banner was read");
    assert!(a.ssh_key_injected);
    assert_eq!(a.version.to_string(), "183");
    assert!(!format!("{a:?}").contains(a.password.expose_secret()), "Debug redacts the password");

    // The store holds the committed record, made with the key the miner recognizes.
    let rec = committed(&store, &a.hotkey);
    assert_eq!(rec.regkey_pem, a.regkey_pem);
    assert_eq!(rec.password.expose_secret(), a.password.expose_secret());
    assert_eq!(store.rows().len(), 1);
    assert_eq!(allocator::still_allocated(&d, &winner.target(), &a.regkey_pem, T).await, Ok(true));

    // Every candidate has its verdict.
    assert_eq!(a.explain.len(), miner_specs.len(), "{:#?}", a.explain);
    assert_eq!(verdict_of(&a.explain, &a.hotkey), &Verdict::Allocated);
    let v = verdict_of(&a.explain, &other.hotkey);
    assert!(matches!(v, Verdict::Available | Verdict::Unanswered), "{v:?}");
    for hk in &hole_keys {
        assert_eq!(verdict_of(&a.explain, hk), &Verdict::Unanswered, "black holes were not waited for");
    }
    for hk in &dead_keys {
        let v = verdict_of(&a.explain, hk);
        assert!(matches!(v, Verdict::Error(m) if m.contains("503")) || *v == Verdict::Unanswered, "{v:?}");
    }
    let v = verdict_of(&a.explain, &wrong_gpu.hotkey);
    assert!(matches!(v, Verdict::SpecMismatch(m) if m.starts_with("gpu.type")), "{v:?}");
    assert_eq!(verdict_of(&a.explain, &penalized), &Verdict::Penalized);
    assert_eq!(verdict_of(&a.explain, &no_specs), &Verdict::NoSpecs);
    assert_eq!(verdict_of(&a.explain, &not_serving), &Verdict::NotServing);
    assert_eq!(verdict_of(&a.explain, &unknown), &Verdict::NotInMetagraph);
    let answered = a.explain.iter().find(|e| e.hotkey == a.hotkey).and_then(|e| e.answer_ms);
    assert!(answered.is_some());

    let stages = stages.lock().expect("lock").clone();
    assert_eq!(stages.first(), Some(&Stage::Checking { candidates: 18 }));
    assert!(stages.contains(&Stage::Allocating { hotkey: a.hotkey.clone(), attempt: 1 }));
    assert!(stages.contains(&Stage::WaitingForSsh { ip: "127.0.0.1".into(), port: winner.ssh_port }));
    assert_eq!(stages.last(), Some(&Stage::Done));

    // The renter's key logs in (when the OpenSSH client is here).
    login_with_key(&_keydir, winner.ssh_port);

    let out = allocator::deallocate(&d, &winner.target(), &a.hotkey, &a.regkey_pem, store.as_ref(), T, true).await;
    assert_eq!(out, DeallocOutcome::Released);
    assert!(store.rows().is_empty());
    assert!(winner.runtime.list().await.expect("list").is_empty());
    for h in holes {
        h.abort();
    }
}

/// An ed25519 key pair made with ssh-keygen when it exists, else a syntactically valid line.
fn ssh_public_key() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    if on_path("ssh-keygen") {
        return (keygen(dir.path(), "id").public, dir);
    }
    eprintln!("no ssh-keygen: using a fixed public key line, the key login is not tried");
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHj0M9FfQ6mHq3T0Yl2m3Ke2mX3zAhJw3eJX1r9B4s6r test".into(), dir)
}

fn login_with_key(dir: &tempfile::TempDir, port: u16) {
    let path = dir.path().join("id");
    if !path.exists() || !ssh_tools(false) {
        return;
    }
    let out = ssh_run(port, Login::Key(&path), "echo via-key");
    assert!(out.as_deref().is_ok_and(|o| o.contains("via-key")), "{out:?}");
}

/// A [`MemoryStore`] with the failures a test needs: `before_begin` runs before each `begin`
/// (another renter taking the miner, say), and `commit_fails` makes every commit fail as a full
/// disk would.
struct Hooked {
    inner: MemoryStore,
    before_begin: Box<dyn Fn(&str) + Send + Sync>,
    commit_fails: bool,
    commits: AtomicUsize,
}

impl Hooked {
    fn new(before_begin: impl Fn(&str) + Send + Sync + 'static, commit_fails: bool) -> Self {
        Self {
            inner: MemoryStore::new(),
            before_begin: Box::new(before_begin),
            commit_fails,
            commits: AtomicUsize::new(0),
        }
    }
}

impl AllocationStore for Hooked {
    fn begin(&self, hotkey: &str, regkey_pem: &str, expires_ms: u64, ssh_key_injected: bool) -> Result<(), StoreError> {
        (self.before_begin)(hotkey);
        self.inner.begin(hotkey, regkey_pem, expires_ms, ssh_key_injected)
    }
    fn commit(&self, hotkey: &str, record: &Allocated) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        if self.commit_fails {
            let source = std::io::Error::other("disk full");
            return Err(DbError::Io { action: "write", path: "database.db".into(), source }.into());
        }
        self.inner.commit(hotkey, record)
    }
    fn abort(&self, hotkey: &str) -> Result<(), StoreError> {
        self.inner.abort(hotkey)
    }
    fn mark_pending(&self, hotkey: &str, error: &str) {
        self.inner.mark_pending(hotkey, error)
    }
    fn finish(&self, hotkey: &str) {
        self.inner.finish(hotkey)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yes_that_is_taken_before_the_allocation_falls_back_to_the_next_yes() {
    let d = Dendrite::new(dendrite_key());
    let miners = [live_miner(1, H100).await, live_miner(2, H100).await];
    let mg = metagraph(&miners.iter().map(|m| (m.hotkey.clone(), m.port, true)).collect::<Vec<_>>());
    let specs: Vec<(String, Option<Specs>)> =
        miners.iter().map(|m| (m.hotkey.clone(), Some(m.specs.clone()))).collect();
    let req = h100_80gb();
    let (cands, excluded) = allocator::candidates(&specs, &mg, &HashSet::new(), &req);
    // Another renter takes the first miner the allocator begins with, between its "yes" to the
    // check and the allocate request.
    let stolen = Arc::new(Mutex::new(None::<String>));
    let (targets, taker, took): (HashMap<String, AxonTarget>, _, _) =
        (miners.iter().map(|m| (m.hotkey.clone(), m.target())).collect(), d.clone(), stolen.clone());
    let store = Hooked::new(
        move |hotkey| {
            let mut stolen = took.lock().expect("lock");
            if stolen.is_none() {
                *stolen = Some(hotkey.to_owned());
                let (d, t) = (taker.clone(), targets[hotkey].clone());
                tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(occupy(&d, &t)));
            }
        },
        false,
    );
    let opts = AllocateOptions { timeline_days: 1, ssh_wait: Duration::from_secs(10), ..AllocateOptions::default() };
    let a = allocator::allocate(&d, cands, excluded, &req, &opts, &store, &quiet).await.expect("allocated");
    let stolen = stolen.lock().expect("lock").clone().expect("one was taken");
    assert_ne!(a.hotkey, stolen, "the next yes was used");
    assert_eq!(a.timings.attempts, 2);
    assert_eq!(verdict_of(&a.explain, &stolen), &Verdict::Taken);
    assert_eq!(verdict_of(&a.explain, &a.hotkey), &Verdict::Allocated);
    assert!(store.inner.get(&stolen).is_none(), "the refused intent was aborted");
    assert_eq!(store.inner.get(&a.hotkey).map(|r| r.state), Some(RowState::Committed));
    assert!(a.ssh_ready);
    assert!(!a.ssh_key_injected);
    let winner = miners.iter().find(|m| m.hotkey == a.hotkey).expect("winner");
    let out = allocator::deallocate(&d, &winner.target(), &a.hotkey, &a.regkey_pem, &store, T, true).await;
    assert_eq!(out, DeallocOutcome::Released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_matching_and_everyone_refusing_are_explained() {
    let d = Dendrite::new(dendrite_key());
    let store = MemoryStore::new();
    let req = h100_80gb();

    // No candidate meets the requirement: nothing is asked.
    let small = [live_miner(3, RTX4090).await, live_miner(4, RTX4090).await];
    let neurons: Vec<_> = small.iter().map(|m| (m.hotkey.clone(), m.port, true)).collect();
    let specs: Vec<_> = small.iter().map(|m| (m.hotkey.clone(), Some(m.specs.clone()))).collect();
    let (cands, excluded) = allocator::candidates(&specs, &metagraph(&neurons), &HashSet::new(), &req);
    assert!(cands.is_empty());
    let err = allocator::allocate(&d, cands, excluded, &req, &AllocateOptions::default(), &store, &quiet)
        .await
        .expect_err("nothing matches");
    assert_eq!(err.failure, AllocateFailure::NoCandidate { considered: 2 });
    assert_eq!(err.to_string(), "no candidate meets the requirement (2 miners considered)");
    assert_eq!(err.explain.len(), 2);
    assert!(err.explain.iter().all(|e| matches!(&e.verdict, Verdict::SpecMismatch(m) if m.contains("RTX 4090"))));

    // Everyone refuses or stays silent: one busy, two dead ports, one black hole.
    let busy = live_miner(1, H100).await;
    let _other_renter = occupy(&d, &busy.target()).await;
    let (hole_port, hole) = black_hole().await;
    let mut neurons = vec![(busy.hotkey.clone(), busy.port, true), (key(60).ss58(), hole_port, true)];
    let mut closed = Vec::new();
    neurons.push((key(61).ss58(), dead_port(&mut closed), true));
    neurons.push((key(62).ss58(), dead_port(&mut closed), true));
    let specs: Vec<_> = neurons.iter().map(|n| (n.0.clone(), Some(busy.specs.clone()))).collect();
    let (cands, excluded) = allocator::candidates(&specs, &metagraph(&neurons), &HashSet::new(), &req);
    assert_eq!(cands.len(), 4);
    let opts = AllocateOptions {
        timeline_days: 1,
        deadline: Duration::from_secs(2),
        check_timeout: Duration::from_secs(2),
        ..AllocateOptions::default()
    };
    let err = allocator::allocate(&d, cands, excluded, &req, &opts, &store, &quiet).await.expect_err("none");
    assert!(matches!(err.failure, AllocateFailure::NoneAvailable { asked: 4, .. }), "{:?}", err.failure);
    assert_eq!(
        err.to_string(),
        "all 4 candidates refused or did not answer within 2 s (1 taken, 1 timed out, 2 error)"
    );
    assert_eq!(verdict_of(&err.explain, &busy.hotkey), &Verdict::Taken);
    assert_eq!(verdict_of(&err.explain, &key(60).ss58()), &Verdict::TimedOut);
    assert!(matches!(verdict_of(&err.explain, &key(61).ss58()), Verdict::Error(m) if m.contains("unavailable")));
    assert!(store.rows().is_empty(), "nothing was begun");
    hole.abort();

    // Invalid options are refused before anything is sent: timeline 0 would deallocate.
    let cand = Candidate::from_metagraph(&busy.hotkey, &metagraph(&neurons), None).expect("candidate");
    let bad = AllocateOptions { timeline_days: 0, ..AllocateOptions::default() };
    let err = allocator::allocate_hotkey(&d, cand, &req, &bad, &store, &quiet).await.expect_err("invalid");
    assert!(matches!(err.failure, AllocateFailure::InvalidOptions(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_releases_refuses_a_wrong_key_and_keeps_unreachable_ones_pending() {
    let d = Dendrite::new(dendrite_key());
    let mut m = live_miner(1, H100).await;
    let mg = metagraph(&[(m.hotkey.clone(), m.port, true)]);
    let store = MemoryStore::new();
    let req = h100_80gb();
    let opts = AllocateOptions { timeline_days: 1, ssh_wait: Duration::ZERO, ..AllocateOptions::default() };
    let cand = || Candidate::from_metagraph(&m.hotkey, &mg, Some(m.specs.clone())).expect("candidate");

    let a = allocator::allocate_hotkey(&d, cand(), &req, &opts, &store, &quiet).await.expect("allocated");
    assert!(!a.ssh_ready, "ssh_wait 0: not tried");
    let stranger = AllocationKey::generate().expect("rsa").public_pem().expect("pem");
    let out = allocator::deallocate(&d, &m.target(), &m.hotkey, &stranger, &store, T, true).await;
    assert!(matches!(&out, DeallocOutcome::NotHolder(r) if r.contains("not the holder")), "{out:?}");
    assert_eq!(store.get(&m.hotkey).map(|r| r.state), Some(RowState::Committed), "left as is");
    let out = allocator::deallocate(&d, &m.target(), &m.hotkey, &a.regkey_pem, &store, T, true).await;
    assert_eq!(out, DeallocOutcome::Released);
    assert!(store.get(&m.hotkey).is_none());
    assert!(says_yes(&d, &m.target()).await, "free again");

    // Allocated, then the miner goes away: the release stays pending.
    let a = allocator::allocate_hotkey(&d, cand(), &req, &opts, &store, &quiet).await.expect("allocated");
    if let Some(miner) = m.miner.take() {
        miner.shutdown().await;
    }
    let out =
        allocator::deallocate(&d, &m.target(), &m.hotkey, &a.regkey_pem, &store, Duration::from_secs(3), true).await;
    assert!(matches!(&out, DeallocOutcome::Unreachable(e) if e.contains("503")), "{out:?}");
    match store.get(&m.hotkey).map(|r| r.state) {
        Some(RowState::Pending(e)) => assert!(e.contains("not confirmed"), "{e}"),
        other => panic!("expected a pending row, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_that_cannot_be_recorded_is_released_on_the_miner() {
    let d = Dendrite::new(dendrite_key());
    let m = live_miner(1, H100).await;
    let mg = metagraph(&[(m.hotkey.clone(), m.port, true)]);
    // The miner allocates; the renter cannot record it.
    let store = Hooked::new(|_| {}, true);
    let req = h100_80gb();
    let cand = Candidate::from_metagraph(&m.hotkey, &mg, Some(m.specs.clone())).expect("candidate");
    let opts = AllocateOptions { timeline_days: 1, ..AllocateOptions::default() };
    let err = allocator::allocate_hotkey(&d, cand, &req, &opts, &store, &quiet).await.expect_err("not recorded");
    assert_eq!(store.commits.load(Ordering::SeqCst), 1, "the miner did allocate");
    assert!(matches!(err.failure, AllocateFailure::AttemptsFailed { attempts: 1, .. }), "{:?}", err.failure);
    match verdict_of(&err.explain, &m.hotkey) {
        Verdict::Error(e) => {
            assert!(
                e.contains("recording it locally failed (cannot write database.db: disk full)")
                    && e.contains("released it again"),
                "{e}"
            )
        }
        v => panic!("{v:?}"),
    }
    assert!(store.inner.rows().is_empty(), "the intent was aborted after the release");
    assert!(m.runtime.list().await.expect("list").is_empty(), "no machine left running");
    assert!(says_yes(&d, &m.target()).await, "the miner is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_specs_asks_every_serving_axon() {
    let d = Dendrite::new(dendrite_key());
    let miners = [live_miner(1, H100).await, live_miner(2, RTX4090).await, live_miner(3, H100).await];
    let mut neurons: Vec<_> = miners.iter().map(|m| (m.hotkey.clone(), m.port, true)).collect();
    let dead = key(70).ss58();
    let mut closed = Vec::new();
    neurons.insert(1, (dead.clone(), dead_port(&mut closed), true));
    neurons.push((key(71).ss58(), 0, false));
    let mg = metagraph(&neurons);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let progress = {
        let seen = seen.clone();
        move |done: usize, total: usize| seen.lock().expect("lock").push((done, total))
    };
    let signers = HashSet::new();
    let results =
        allocator::sync_specs(&d, &mg, Instant::now() + Duration::from_secs(10), 2, &signers, &progress).await;
    let hotkeys: Vec<&str> = results.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        hotkeys,
        [miners[0].hotkey.as_str(), dead.as_str(), miners[1].hotkey.as_str(), miners[2].hotkey.as_str()]
    );
    for (i, gpu) in [(0, "NVIDIA H100 80GB HBM3"), (2, "NVIDIA GeForce RTX 4090"), (3, "NVIDIA H100 80GB HBM3")] {
        let synced = results[i].1.as_ref().expect("specs");
        assert!(synced.signed, "a nicompute miner signs its specs");
        let specs = Specs::from_json(&synced.json).expect("parse");
        assert_eq!(specs.gpu.details[0].name, gpu);
    }
    assert!(
        matches!(&results[1].1, Err(allocator::SpecsError::NoAnswer(e)) if e.0.contains("503")),
        "{:?}",
        results[1].1
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen.last(), Some(&(4, 4)));
}

/// One deadline for the whole sync: a black hole holding the only slot until the deadline
/// leaves the other miner unasked, which is reported as such (and not as the miner's failure).
/// Which of two black holes takes the slot first is the scheduler's choice: one of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_specs_has_one_deadline_and_says_who_was_not_asked() {
    let d = Dendrite::new(dendrite_key());
    let ((port_a, _a), (port_b, _b)) = (black_hole().await, black_hole().await);
    let mg = metagraph(&[(key(72).ss58(), port_a, true), (key(73).ss58(), port_b, true)]);
    let deadline = Instant::now() + Duration::from_millis(300);
    let results = allocator::sync_specs(&d, &mg, deadline, 1, &HashSet::new(), &|_, _| {}).await;
    let unanswered = results.iter().filter(|(_, r)| matches!(r, Err(allocator::SpecsError::NoAnswer(_)))).count();
    let not_asked: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| match r {
            Err(e @ allocator::SpecsError::NotSent) => Some(e.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!((unanswered, not_asked.len()), (1, 1), "{results:?}");
    assert!(not_asked[0].contains("raise --concurrency"), "{}", not_asked[0]);
    // With a slot each, a black hole beside a live miner does not keep it from answering.
    let live = live_miner(1, H100).await;
    let mg = metagraph(&[(key(72).ss58(), port_a, true), (live.hotkey.clone(), live.port, true)]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let results = allocator::sync_specs(&d, &mg, deadline, 2, &HashSet::new(), &|_, _| {}).await;
    assert!(matches!(&results[0].1, Err(allocator::SpecsError::NoAnswer(_))), "{:?}", results[0].1);
    assert!(results[1].1.is_ok(), "{:?}", results[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn still_allocated_tells_the_holder_only() {
    let d = Dendrite::new(dendrite_key());
    let m = live_miner(1, H100).await;
    let mg = metagraph(&[(m.hotkey.clone(), m.port, true)]);
    let store = MemoryStore::new();
    let cand = Candidate::from_metagraph(&m.hotkey, &mg, None).expect("candidate");
    assert_eq!(cand.resource(), "unknown");
    // The lease is reckoned from the allocator's clock: exactly one day after "now".
    let clock = bittensor::Clock::manual(1_700_000_000_000);
    let opts =
        AllocateOptions { timeline_days: 1, ssh_wait: Duration::from_secs(10), clock, ..AllocateOptions::default() };
    let a = allocator::allocate_hotkey(&d, cand, &h100_80gb(), &opts, &store, &quiet).await.expect("allocated");
    assert_eq!(a.expires_ms, 1_700_000_000_000 + 86_400_000);
    assert_eq!(store.get(&a.hotkey).map(|r| r.expires_ms), Some(a.expires_ms), "and recorded so");
    let target = m.target();
    assert_eq!(allocator::still_allocated(&d, &target, &a.regkey_pem, T).await, Ok(true));
    let stranger = AllocationKey::generate().expect("rsa").public_pem().expect("pem");
    assert_eq!(allocator::still_allocated(&d, &target, &stranger, T).await, Ok(false));
    assert_eq!(
        allocator::deallocate(&d, &target, &a.hotkey, &a.regkey_pem, &store, T, a.authenticated).await,
        DeallocOutcome::Released
    );
    assert_eq!(allocator::still_allocated(&d, &target, &a.regkey_pem, T).await, Ok(false));
    let closed = ClosedPort::new();
    let dead = AxonTarget { ip: "127.0.0.1".into(), port: closed.port(), hotkey: m.hotkey.clone() };
    assert!(allocator::still_allocated(&d, &dead, &a.regkey_pem, Duration::from_secs(3)).await.is_err());
    // Not in the metagraph / not serving: no candidate.
    assert_eq!(Candidate::from_metagraph(&key(80).ss58(), &mg, None), Err(Verdict::NotInMetagraph));
}
