//! The attacks of issue 14, each against the real renter code and a real miner (in this
//! process, local runtime): a proxy on the path that rewrites the request (a login key and
//! credentials sent to the attacker) or the answer (another host key), a malicious miner whose
//! credentials carry an option-injecting username and whose signed host key is not one, and an
//! SSH server that shows another host key than the one its miner signed — refused by the
//! built-in client and by OpenSSH with the allocation's own `known_hosts` file — and the
//! built-in client's bounds on output and time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bittensor::axon::{Axon, AxonConfig, HandlerError, Request};
use bittensor::dendrite::{AxonTarget, Dendrite};
use bittensor::{Keypair, Synapse};
use compute::allocator::signed::{self, Authenticity};
use compute::allocator::{self, AllocateOptions, Candidate, MemoryStore};
use compute::crypto::{AllocationKey, Credentials, CredentialsVersion};
use compute::known_hosts;
use compute::miner::offer::Offer;
use compute::miner::MinerHandle;
use compute::protocol::auth::{self, Binding};
use compute::protocol::refusal::{Code, Refusal};
use compute::protocol::{Allocate, Specs as SpecsSynapse};
use compute::runtime::local::LocalRuntime;
use compute::runtime::ContainerRuntime;
use compute::specs::{GpuRequirement, Requirement};
use compute::sshexec::{self, HostKeyCheck, SshError};
use russh::keys::{Algorithm, PrivateKey};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{command, fixture_key, seed_key, simulated_specs, ssh_tools, H100, T};

fn renter() -> Keypair {
    fixture_key("dendrite_hotkey")
}

struct Live {
    miner: MinerHandle,
    runtime: Arc<LocalRuntime>,
    hotkey: String,
    _dir: tempfile::TempDir,
}

impl Live {
    fn target(&self) -> AxonTarget {
        AxonTarget { ip: "127.0.0.1".into(), port: self.miner.axon_addr().port(), hotkey: self.hotkey.clone() }
    }
}

/// A nicompute miner on the local runtime, admitting the renter's hotkey.
async fn live_miner(seed: u8, require_signed: bool) -> Live {
    use compute::miner::{self, policy::PolicyConfig, MetagraphSource, MinerConfig};
    let dir = tempfile::tempdir().expect("tmp");
    let runtime = Arc::new(LocalRuntime::new(dir.path().join("local")).expect("runtime"));
    let ssh_port = runtime.reserve(std::net::Ipv4Addr::LOCALHOST.into(), 0).await.expect("port");
    let stakes: HashMap<String, f32> = [(renter().ss58(), 5000.0)].into_iter().collect();
    let cfg = MinerConfig {
        keypair: seed_key(seed),
        netuid: 27,
        axon: AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..Default::default() },
        ssh_port,
        ssh_bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        runtime: runtime.clone(),
        state_dir: dir.path().join("state"),
        specs: simulated_specs(H100).await,
        policy: PolicyConfig { min_stake_tao: 1024.0, ..PolicyConfig::default() },
        metagraph: MetagraphSource::Static(stakes),
        offer: Offer { require_signed, ..Offer::default() },
        warm_containers: true,
    };
    let miner = miner::spawn(cfg).await.expect("miner");
    Live { miner, runtime, hotkey: seed_key(seed).ss58(), _dir: dir }
}

fn h100() -> Requirement {
    Requirement::sn27(Some(GpuRequirement { count: 1, memory_mib: 80 * 1024, kind: "h100".into() }))
}

fn candidate(hotkey: &str, port: u16) -> Candidate {
    Candidate {
        hotkey: hotkey.to_owned(),
        target: AxonTarget { ip: "127.0.0.1".into(), port, hotkey: hotkey.to_owned() },
        specs: None,
        signs: false,
    }
}

fn opts() -> AllocateOptions {
    AllocateOptions {
        deadline: Duration::from_secs(10),
        allocate_timeout: T,
        ssh_wait: Duration::from_secs(10),
        ..AllocateOptions::default()
    }
}

fn quiet(_: allocator::Stage) {}

// ---- a proxy on the path ----

type Rewrite = fn(&mut Value);

/// An HTTP/1.1 proxy in front of `upstream`: every request body goes through `on_request` and
/// every answer body through `on_answer` (bodies with a Content-Length, as the dendrite and the
/// axon send them), the Content-Length rewritten to match.
async fn proxy(upstream: u16, on_request: Rewrite, on_answer: Rewrite) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let (mut client, mut server) = (BufReader::new(client), BufReader::new(server));
                loop {
                    let Some((head, body)) = read_message(&mut client).await else { return };
                    if write_message(server.get_mut(), &head, &body, on_request).await.is_err() {
                        return;
                    }
                    let Some((head, body)) = read_message(&mut server).await else { return };
                    if write_message(client.get_mut(), &head, &body, on_answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One HTTP message: its head lines (without the line ends) and its body.
async fn read_message(r: &mut BufReader<TcpStream>) -> Option<(Vec<String>, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let len = head
        .iter()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.ok()?;
    Some((head, body))
}

async fn write_message(w: &mut TcpStream, head: &[String], body: &[u8], rewrite: Rewrite) -> std::io::Result<()> {
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            rewrite(&mut v);
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Err(_) => body.to_vec(),
    };
    let mut out = String::new();
    for line in head {
        if line.split_once(':').is_some_and(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes()).await?;
    w.write_all(&body).await
}

fn unchanged(_: &mut Value) {}

/// The attacker's allocation key and login key, fixed for the rewrite functions.
fn attacker_pem() -> &'static str {
    static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PEM.get_or_init(|| AllocationKey::generate().expect("rsa").public_pem().expect("pem"))
}

const ATTACKER_SSH: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x evil";

/// What the review's proxy did: the credentials and the login to the attacker.
fn steal(v: &mut Value) {
    if v.get("timeline").and_then(Value::as_i64).unwrap_or(0) > 0 && v["checking"] == json!(false) {
        v["public_key"] = json!(attacker_pem());
        v["docker_requirement"]["ssh_key"] = json!(ATTACKER_SSH);
    }
}

/// Another host key in the miner's answer: the renter would pin the attacker's machine.
fn swap_host_key(v: &mut Value) {
    if let Some(ext) = v.get_mut(auth::FIELD).and_then(Value::as_object_mut) {
        if ext.contains_key("host_key") {
            ext.insert("host_key".into(), json!(ATTACKER_SSH));
        }
    }
}

/// A GPU name with terminal escapes, slipped into a signed specs answer.
fn hostile_specs(v: &mut Value) {
    if let Some(s) = v.get("specs_output").and_then(Value::as_str) {
        let s = s.replace("H100", "H100\u{1b}]0;pwned\u{7}\u{1b}[2J");
        v["specs_output"] = json!(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_rewriting_the_login_key_gets_nothing_and_the_miner_starts_nothing() {
    let live = live_miner(61, false).await;
    let via = proxy(live.target().port, steal, unchanged).await;
    let dendrite = Dendrite::new(renter());
    let store = MemoryStore::default();
    let own = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPf1jT0XWy0OzXyB3w7gYxgQbWf0dH1cB1ZkWm0cJm5i renter";
    let o = AllocateOptions { ssh_key: Some(own.to_owned()), ..opts() };
    let err = allocator::allocate_hotkey(&dendrite, candidate(&live.hotkey, via), &h100(), &o, &store, &quiet)
        .await
        .expect_err("a rewritten request must not allocate");
    let text = format!("{err:?}");
    assert!(text.contains("does not verify"), "the miner says why: {text}");
    assert!(live.runtime.list().await.expect("list").is_empty(), "the miner started nothing for the attacker");

    // The same request unsigned (a Python renter's, today's main's) is what the attack used: a
    // miner that requires signatures refuses it, typed.
    let strict = live_miner(62, true).await;
    let via = proxy(strict.target().port, steal, unchanged).await;
    let a = Allocate {
        timeline: 1,
        checking: false,
        public_key: AllocationKey::generate().expect("rsa").public_pem().expect("pem"),
        device_requirement: h100().to_json().as_object().cloned().unwrap_or_default(),
        ..Allocate::default()
    };
    let target = AxonTarget { port: via, ..strict.target() };
    let r = dendrite.call(&target, a, T).await;
    let no = Refusal::read(&r.synapse.output).expect("a refusal");
    assert_eq!(no.code, Some(Code::SignatureRequired), "{:?}", r.synapse.output);
    assert!(r.synapse.output.get("info").is_none(), "no credentials for the attacker");
    assert!(strict.runtime.list().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_rewriting_the_answer_is_caught_and_the_machine_released() {
    let live = live_miner(63, false).await;
    let dendrite = Dendrite::new(renter());

    // A signed specs answer with an escape-laden GPU name: forged.
    let via = proxy(live.target().port, unchanged, hostile_specs).await;
    let target = AxonTarget { port: via, ..live.target() };
    let (r, authenticity) = signed::call(&dendrite, &target, SpecsSynapse::default(), T).await;
    assert!(r.is_success());
    assert!(matches!(authenticity, Authenticity::Forged(_)), "{authenticity:?}");
    assert!(authenticity.accept(false).is_err(), "a forged answer is never accepted");
    // Straight to the miner, the same call is signed.
    let (_, authenticity) = signed::call(&dendrite, &live.target(), SpecsSynapse::default(), T).await;
    assert!(matches!(authenticity, Authenticity::Signed { .. }), "{authenticity:?}");

    // An allocation whose answer names another host key: refused, and released on the miner.
    let via = proxy(live.target().port, unchanged, swap_host_key).await;
    let store = MemoryStore::default();
    let err = allocator::allocate_hotkey(&dendrite, candidate(&live.hotkey, via), &h100(), &opts(), &store, &quiet)
        .await
        .expect_err("a swapped host key must not be pinned");
    assert!(format!("{err:?}").contains("does not verify"), "{err:?}");
    assert!(live.runtime.list().await.expect("list").is_empty(), "the renter released what the miner started");
}

// ---- a malicious miner ----

/// How the malicious miner misbehaves.
#[derive(Clone, Copy)]
enum Evil {
    /// Credentials whose username is an OpenSSH option.
    Username,
    /// A signed "host key" that would add a line to known_hosts.
    HostKey,
}

/// A miner that answers checks yes and allocations with credentials encrypted to the renter
/// and an answer signed with its real hotkey — carrying `evil`. Counts the releases it gets.
async fn malicious_miner(seed: u8, evil: Evil) -> (bittensor::axon::AxonHandle, Arc<AtomicUsize>) {
    let kp = Arc::new(seed_key(seed));
    let releases = Arc::new(AtomicUsize::new(0));
    let counted = releases.clone();
    let axon = Axon::new(seed_key(seed)).attach(move |req: Request<Allocate>| {
        let (kp, releases) = (kp.clone(), counted.clone());
        async move {
            let mut s = req.synapse;
            let ext = s.nicompute_auth.take();
            let mut host_key =
                Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x".to_owned());
            s.output.insert("status".into(), json!(true));
            if !s.checking && s.timeline > 0 {
                let username = match evil {
                    Evil::Username => "-oProxyCommand=touch pwned #",
                    Evil::HostKey => "root",
                };
                let creds = Credentials {
                    username: username.into(),
                    password: SecretString::from("p".to_owned()),
                    port: 4444,
                    version: CredentialsVersion::Number(183),
                    external_user_ports: None,
                };
                let info = creds.encrypt_for(&s.public_key).map_err(|e| HandlerError::Internal(e.to_string()))?;
                s.output.insert("info".into(), json!(info));
                if let Evil::HostKey = evil {
                    host_key = Some(format!(
                        "{} x\n@cert-authority * {}",
                        host_key.as_deref().unwrap_or(""),
                        host_key.as_deref().unwrap_or("")
                    ));
                }
            } else if !s.checking {
                releases.fetch_add(1, Ordering::SeqCst);
            }
            s.output.insert("port".into(), json!(4444));
            if let Some(e) = ext {
                let ss58 = req.caller.hotkey.to_ss58();
                let me = kp.ss58();
                let b = Binding { dendrite: &ss58, axon: &me, nonce: req.caller.nonce, uuid: &req.caller.uuid };
                let digest = auth::verify_request(&e, "Allocate", &s.to_fields(), &b, &req.caller.hotkey)
                    .map_err(|e| HandlerError::Internal(e.to_string()))?;
                let mut fields = serde_json::Map::new();
                fields.insert("output".into(), Value::Object(s.output.clone()));
                s.nicompute_auth = Some(
                    auth::sign_response(&kp, "Allocate", &fields, &b, &digest, host_key.as_deref())
                        .map_err(|e| HandlerError::Internal(e.to_string()))?,
                );
            }
            Ok(s)
        }
    });
    let handle = axon
        .spawn(AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..Default::default() })
        .await
        .expect("axon");
    (handle, releases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_sending_an_option_as_username_is_refused_and_released() {
    let (axon, releases) = malicious_miner(64, Evil::Username).await;
    let dendrite = Dendrite::new(renter());
    let store = MemoryStore::default();
    let hotkey = seed_key(64).ss58();
    let err = allocator::allocate_hotkey(
        &dendrite,
        candidate(&hotkey, axon.local_addr().port()),
        &h100(),
        &opts(),
        &store,
        &quiet,
    )
    .await
    .expect_err("the credentials must be refused");
    let text = format!("{err:?}");
    assert!(text.contains("not a plain login name"), "{text}");
    assert!(store.get(&hotkey).and_then(|r| r.record).is_none(), "nothing usable is recorded");
    assert_eq!(releases.load(Ordering::SeqCst), 1, "the allocation is given back");
    axon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_signing_a_host_key_that_is_not_one_is_refused() {
    let (axon, releases) = malicious_miner(65, Evil::HostKey).await;
    let dendrite = Dendrite::new(renter());
    let store = MemoryStore::default();
    let hotkey = seed_key(65).ss58();
    let err = allocator::allocate_hotkey(
        &dendrite,
        candidate(&hotkey, axon.local_addr().port()),
        &h100(),
        &opts(),
        &store,
        &quiet,
    )
    .await
    .expect_err("a multi-line host key must not reach known_hosts");
    let text = format!("{err:?}");
    assert!(text.contains("host key"), "{text}");
    assert_eq!(releases.load(Ordering::SeqCst), 1, "the allocation is given back");
    axon.shutdown().await;
}

// ---- the pinned host key ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_refuses_a_machine_showing_another_host_key_than_the_signed_one() {
    let live = live_miner(66, false).await;
    let dendrite = Dendrite::new(renter());
    let store = MemoryStore::default();
    let rec = allocator::allocate_hotkey(
        &dendrite,
        candidate(&live.hotkey, live.target().port),
        &h100(),
        &opts(),
        &store,
        &quiet,
    )
    .await
    .expect("allocated");
    assert!(rec.authenticated, "a nicompute miner signs its answer");
    let pinned = rec.host_key.clone().expect("the signed host key");
    let other = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)
        .expect("key")
        .public_key()
        .to_openssh()
        .expect("openssh");
    let login = |check: HostKeyCheck| sshexec::Login {
        host: rec.ip.clone(),
        port: rec.port,
        user: rec.username.clone(),
        identity: None,
        password: Some(SecretString::from(rec.password.expose_secret().to_owned())),
        connect_timeout: Duration::from_secs(10),
        host_key: check,
        command_timeout: Duration::from_secs(20),
        max_output: sshexec::DEFAULT_MAX_OUTPUT,
    };
    // The built-in client: the signed key logs in, another is refused before any password.
    let ok = sshexec::exec(&login(HostKeyCheck::Pinned(pinned.clone())), "echo pinned").await.expect("login");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "pinned");
    match sshexec::exec(&login(HostKeyCheck::Pinned(other.clone())), "echo no").await {
        Err(SshError::HostKeyChanged { .. }) => {}
        other => panic!("expected a host key refusal, got {other:?}"),
    }

    // A machine cannot make the built-in client buffer without end or wait forever.
    let bounded = sshexec::Login {
        max_output: 64 * 1024,
        command_timeout: Duration::from_secs(2),
        ..login(HostKeyCheck::Pinned(pinned.clone()))
    };
    match sshexec::exec(&bounded, "head -c 1000000 /dev/zero").await {
        Err(SshError::OutputTooLarge { limit }) => assert_eq!(limit, 64 * 1024),
        other => panic!("expected the output bound, got {other:?}"),
    }
    match sshexec::exec(&bounded, "sleep 30").await {
        Err(SshError::TimedOut(t)) => assert_eq!(t, Duration::from_secs(2)),
        other => panic!("expected the time bound, got {other:?}"),
    }

    // OpenSSH with the allocation's own known_hosts file and StrictHostKeyChecking=yes.
    if !ssh_tools(false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("known_hosts");
    let alias = known_hosts::alias(&live.hotkey);
    let run_ssh = |key: &str| {
        known_hosts::pin(&file, &alias, key).expect("pin");
        command("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no"])
            .args(["-o", &format!("UserKnownHostsFile={}", file.display()), "-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", &format!("HostKeyAlias={alias}"), "-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "HostKeyAlgorithms=ssh-ed25519"])
            .args(["-l", &rec.username, "-p", &rec.port.to_string(), "--", &rec.ip, "true"])
            .output()
            .expect("ssh")
    };
    let right = run_ssh(&pinned);
    let right_err = String::from_utf8_lossy(&right.stderr);
    assert!(!right_err.contains("Host key verification failed"), "the pinned key is accepted: {right_err}");
    assert!(right_err.contains("Permission denied"), "it gets as far as authentication: {right_err}");
    let wrong = run_ssh(&other);
    let wrong_err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(255));
    assert!(wrong_err.contains("Host key verification failed"), "{wrong_err}");
}

// ---- one contract: every refusal a real miner gives, as the real renter reads it ----

/// A miner whose `Allocate` answers are `output` as given (signed when asked signed): what a
/// renter must make of answers that are not definite.
async fn scripted_miner(seed: u8, output: Value) -> bittensor::axon::AxonHandle {
    let kp = Arc::new(seed_key(seed));
    let axon = Axon::new(seed_key(seed)).attach(move |req: Request<Allocate>| {
        let (kp, output) = (kp.clone(), output.clone());
        async move {
            let mut s = req.synapse;
            let ext = s.nicompute_auth.take();
            s.output = output.as_object().cloned().unwrap_or_default();
            if let Some(e) = ext {
                let (ss58, me) = (req.caller.hotkey.to_ss58(), kp.ss58());
                let b = Binding { dendrite: &ss58, axon: &me, nonce: req.caller.nonce, uuid: &req.caller.uuid };
                let digest = auth::verify_request(&e, "Allocate", &s.to_fields(), &b, &req.caller.hotkey)
                    .map_err(|e| HandlerError::Internal(e.to_string()))?;
                let mut fields = serde_json::Map::new();
                fields.insert("output".into(), Value::Object(s.output.clone()));
                s.nicompute_auth = auth::sign_response(&kp, "Allocate", &fields, &b, &digest, None).ok();
            }
            Ok(s)
        }
    });
    axon.spawn(AxonConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..Default::default() }).await.expect("axon")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_a_real_miner_reads_back_typed_on_the_renter() {
    use compute::allocator::{DeallocOutcome, Liveness, Verdict};
    let live = live_miner(67, false).await;
    let dendrite = Dendrite::new(renter());
    let code_of = |r: &bittensor::dendrite::Response<Allocate>| Refusal::read(&r.synapse.output).and_then(|n| n.code);
    let owner = AllocationKey::generate().expect("rsa").public_pem().expect("pem");
    let stranger = AllocationKey::generate().expect("rsa").public_pem().expect("pem");
    let requirement = h100().to_json().as_object().cloned().unwrap_or_default();

    // no_allocation: the renter reads it as a definite "gone".
    let gone = allocator::liveness(&dendrite, &live.target(), &owner, T, true).await.expect("an answer");
    assert!(matches!(gone, Liveness::Gone(_)), "{gone:?}");
    // requirement_mismatch: an RTX 4090 asked of an H100.
    let rtx = Requirement::sn27(Some(GpuRequirement { count: 1, memory_mib: 24 * 1024, kind: "4090".into() }));
    let err = allocator::allocate_hotkey(
        &dendrite,
        candidate(&live.hotkey, live.target().port),
        &rtx,
        &opts(),
        &MemoryStore::default(),
        &quiet,
    )
    .await
    .expect_err("mismatch");
    assert!(err.explain.iter().any(|e| matches!(&e.verdict, Verdict::Refused(_))), "{:?}", err.explain);
    // not_offered: an image this miner does not offer.
    let o = AllocateOptions { image: Some("evil/miner:latest".into()), ..opts() };
    let err = allocator::allocate_hotkey(
        &dendrite,
        candidate(&live.hotkey, live.target().port),
        &h100(),
        &o,
        &MemoryStore::default(),
        &quiet,
    )
    .await
    .expect_err("not offered");
    assert!(format!("{:?}", err.explain).contains("not offered"), "{:?}", err.explain);
    let mut a =
        Allocate { timeline: 1, checking: true, device_requirement: requirement.clone(), ..Allocate::default() };
    a.docker_requirement.insert("image".into(), json!("evil/miner:latest"));
    let (r, _) = signed::call(&dendrite, &live.target(), a, T).await;
    assert_eq!(code_of(&r), Some(Code::NotOffered));
    // bad_request: allocating without a public key.
    let a = Allocate { timeline: 1, checking: false, device_requirement: requirement.clone(), ..Allocate::default() };
    let (r, _) = signed::call(&dendrite, &live.target(), a, T).await;
    assert_eq!(code_of(&r), Some(Code::BadRequest));

    // Allocated by `owner`: already_allocated for a check, not_holder for a stranger.
    let a = Allocate {
        timeline: 1,
        checking: false,
        public_key: owner.clone(),
        device_requirement: requirement.clone(),
        ..Allocate::default()
    };
    let (r, auth) = signed::call(&dendrite, &live.target(), a, T).await;
    assert_eq!(r.synapse.output.get("status"), Some(&json!(true)), "{:?}", r.synapse.output);
    assert!(matches!(auth, Authenticity::Signed { host_key: Some(_) }), "{auth:?}");
    let a = Allocate { timeline: 1, checking: true, device_requirement: requirement.clone(), ..Allocate::default() };
    let (r, _) = signed::call(&dendrite, &live.target(), a, T).await;
    assert_eq!(code_of(&r), Some(Code::AlreadyAllocated));
    let running = allocator::liveness(&dendrite, &live.target(), &owner, T, true).await.expect("an answer");
    assert!(matches!(running, Liveness::Running { host_key: Some(_) }), "{running:?}");
    let not_mine = allocator::liveness(&dendrite, &live.target(), &stranger, T, true).await.expect("an answer");
    assert!(matches!(not_mine, Liveness::Gone(_)), "{not_mine:?}");
    let store = MemoryStore::default();
    let out = allocator::deallocate(&dendrite, &live.target(), &live.hotkey, &stranger, &store, T, true).await;
    assert!(matches!(out, DeallocOutcome::NotHolder(_)), "{out:?}");
    // bad_request from the holder: an action the miner does not know.
    let mut a = Allocate {
        timeline: 0,
        checking: false,
        docker_change: true,
        public_key: owner.clone(),
        ..Allocate::default()
    };
    a.docker_action.insert("action".into(), json!("explode"));
    let (r, _) = signed::call(&dendrite, &live.target(), a, T).await;
    assert_eq!(code_of(&r), Some(Code::BadRequest), "{:?}", r.synapse.output);
    let out = allocator::deallocate(&dendrite, &live.target(), &live.hotkey, &owner, &store, T, true).await;
    assert_eq!(out, DeallocOutcome::Released);

    // cannot_tell and a fault are no answer: `reconcile --prune` keeps the row on them.
    for (seed, output) in [
        (68, json!({"status": false, "code": "cannot_tell", "reason": "the miner cannot tell"})),
        (69, json!({"status": false, "code": "miner_fault", "reason": "docker is down"})),
        (70, json!({"status": false, "reason": "not allocated (really: docker ps failed)"})),
    ] {
        let axon = scripted_miner(seed, output.clone()).await;
        let target =
            AxonTarget { ip: "127.0.0.1".into(), port: axon.local_addr().port(), hotkey: seed_key(seed).ss58() };
        let r = allocator::liveness(&dendrite, &target, &owner, T, true).await;
        assert!(r.is_err(), "{output} must not read as gone: {r:?}");
        axon.shutdown().await;
    }
    // SN27's bare no (its miners give it only for "no such allocation") and a typed absence are.
    for (seed, output) in [(71, json!({"status": false})), (72, json!({"status": false, "code": "no_allocation"}))] {
        let axon = scripted_miner(seed, output.clone()).await;
        let target =
            AxonTarget { ip: "127.0.0.1".into(), port: axon.local_addr().port(), hotkey: seed_key(seed).ss58() };
        let r = allocator::liveness(&dendrite, &target, &owner, T, false).await;
        assert!(matches!(r, Ok(Liveness::Gone(_))), "{output}: {r:?}");
        axon.shutdown().await;
    }
}
