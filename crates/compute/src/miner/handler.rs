//! The miner's answers: SN27's five `Allocate` cases and `Specs`, each "no" with a typed code,
//! and for a request that carries nicompute's signed extension, the request verified and the
//! answer signed (with the container's SSH host key where there is one).
//!
//! | request | answer |
//! |---|---|
//! | `checking`, `timeline > 0` | yes when the machine is free, meets the requirement and offers what `docker_requirement` asks |
//! | `checking`, `timeline = 0` | yes when the caller's allocation runs (its host key signed); a definite no (`no_allocation`, `not_holder`) or `cannot_tell` |
//! | `docker_change` | restart, pause, unpause/resume, exchange_key, by the key holder; yes once done (host key signed) |
//! | `timeline > 0` | allocate: credentials encrypted to `public_key`, the host key signed |
//! | `timeline = 0` | deallocate, by the key holder |

use std::time::Duration;

use bittensor::axon::Request;
use bittensor::{Clock, Synapse};
use rand::distributions::{Alphanumeric, DistString};
use russh::keys::{Algorithm, PrivateKey};
use secrecy::SecretString;
use serde_json::{json, Map, Value};

use super::state::{Allocation, Phase};
use super::{end, Miner, COMPUTE_VERSION_INT};
use crate::crypto::{allocation_key_b64, Credentials, CredentialsVersion};
use crate::protocol::auth::{self, Binding};
use crate::protocol::refusal::{Code, Refusal};
use crate::protocol::{docker, keys, Allocate, Specs as SpecsSynapse};
use crate::runtime::{ContainerSpec, ContainerState, RuntimeError};
use crate::specs::{self, Requirement};

/// One decision of the handler.
enum Reply {
    /// `"status": true`, the encrypted credentials of a new allocation, the host key to sign.
    Yes {
        info: Option<String>,
        host_key: Option<String>,
    },
    No(Refusal),
}

fn no(code: Code, reason: impl Into<String>) -> Reply {
    Reply::No(Refusal::new(code, reason))
}

fn yes() -> Reply {
    Reply::Yes { info: None, host_key: None }
}

/// The `Allocate` synapse: the extension checked, SN27's case answered, the answer signed.
pub(super) async fn allocate(m: &Miner, req: Request<Allocate>) -> Allocate {
    let mut s = req.synapse;
    let caller = req.caller;
    let caller_ss58 = caller.hotkey.to_ss58();
    let binding = Binding { dendrite: &caller_ss58, axon: &m.ss58, nonce: caller.nonce, uuid: &caller.uuid };
    let ext = s.nicompute_auth.take();
    let (reply, digest) = match &ext {
        Some(e) => match auth::verify_request(e, "Allocate", &s.to_fields(), &binding, &caller.hotkey) {
            Ok(d) => (decide(m, &s, &caller_ss58).await, Some(d)),
            Err(e) => {
                tracing::info!(caller = %caller_ss58, error = %e, "refused a request whose signed extension does not verify");
                (no(Code::BadSignature, e.to_string()), None)
            }
        },
        None if m.offer.require_signed => (
            no(
                Code::SignatureRequired,
                "this miner serves only requests signed with nicompute's extension (allocate with nicompute)",
            ),
            None,
        ),
        None => (decide(m, &s, &caller_ss58).await, None),
    };
    let host_key = match &reply {
        Reply::Yes { host_key, .. } => host_key.clone(),
        Reply::No(_) => None,
    };
    let mut out = Map::new();
    match reply {
        Reply::Yes { info, .. } => {
            out.insert("status".into(), json!(true));
            if let Some(info) = info {
                out.insert("info".into(), json!(info));
            }
        }
        Reply::No(r) => r.write(&mut out),
    }
    out.insert("port".into(), json!(m.ssh_port));
    s.output = out;
    if let Some(digest) = digest {
        let mut fields = Map::new();
        fields.insert("output".into(), Value::Object(s.output.clone()));
        match auth::sign_response(&m.keypair, "Allocate", &fields, &binding, &digest, host_key.as_deref()) {
            Ok(ext) => s.nicompute_auth = Some(ext),
            Err(e) => tracing::error!(error = %e, "cannot sign the answer"),
        }
    }
    s
}

/// The `Specs` synapse: the miner's specs, signed for a renter that signed its request.
pub(super) fn specs(m: &Miner, req: Request<SpecsSynapse>) -> SpecsSynapse {
    let mut s = req.synapse;
    let ext = s.nicompute_auth.take();
    s.specs_output = m.specs_json.clone();
    if let Some(e) = ext {
        let caller_ss58 = req.caller.hotkey.to_ss58();
        let b = Binding { dendrite: &caller_ss58, axon: &m.ss58, nonce: req.caller.nonce, uuid: &req.caller.uuid };
        if let Ok(digest) = auth::verify_request(&e, "Specs", &s.to_fields(), &b, &req.caller.hotkey) {
            let mut fields = Map::new();
            fields.insert("specs_output".into(), Value::String(s.specs_output.clone()));
            s.nicompute_auth = auth::sign_response(&m.keypair, "Specs", &fields, &b, &digest, None).ok();
        }
    }
    s
}

/// SN27's five cases.
async fn decide(m: &Miner, s: &Allocate, requester: &str) -> Reply {
    let key = if s.public_key.is_empty() { None } else { Some(allocation_key_b64(&s.public_key)) };
    let current = match m.store.current() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "miner state unreadable");
            return no(Code::MinerFault, "the miner's state is unavailable");
        }
    };
    let holds_key = |a: &Allocation| key.as_deref() == Some(a.key_b64.as_str());
    match (s.checking, s.timeline > 0, s.docker_change) {
        // Is this machine free, does it meet the requirement, does it offer what is asked?
        (true, true, _) => {
            if current.is_some() {
                return no(Code::AlreadyAllocated, "already allocated");
            }
            if let Err(r) = requirement(m, s) {
                return Reply::No(r);
            }
            match docker::read(&s.docker_requirement).and_then(|d| m.offer.resolve(&d)) {
                Ok(_) => yes(),
                Err(r) => Reply::No(r),
            }
        }
        // Is the caller's allocation still here?
        (true, false, _) => liveness(m, current.as_ref(), &holds_key).await,
        // Restart, pause, unpause, exchange_key: the key holder only. A caller without the key
        // is refused before waiting for the allocation lock, so it cannot queue behind one.
        (false, _, true) => {
            if let Some(r) = not_holder(current.as_ref(), &holds_key) {
                return r;
            }
            let _guard = m.busy.lock().await;
            let now = m.store.current().ok().flatten();
            match now {
                Some(a) if holds_key(&a) => {
                    let action = s.docker_action.get("action").and_then(Value::as_str).unwrap_or("");
                    match docker_action(m, &a, action, &s.docker_action).await {
                        Ok(()) => Reply::Yes { info: None, host_key: a.host_key.clone() },
                        Err(r) => Reply::No(r),
                    }
                }
                other => not_holder(other.as_ref(), &holds_key).unwrap_or_else(|| no(Code::NotHolder, NOT_HOLDER)),
            }
        }
        // Allocate.
        (false, true, false) => start_allocation(m, s, requester, key).await,
        // Deallocate: the key holder only, checked before waiting for the allocation lock.
        (false, false, false) => {
            if let Some(r) = not_holder(current.as_ref(), &holds_key) {
                return r;
            }
            let _guard = m.busy.lock().await;
            let now = m.store.current().ok().flatten();
            let Some(a) = now.filter(&holds_key) else {
                return no(Code::NoAllocation, "no allocation for this key");
            };
            match end(m, &a).await {
                Ok(()) => yes(),
                Err(e) => {
                    tracing::error!(allocation = %a.allocation_id, error = %e, "deallocation failed");
                    no(Code::MinerFault, "the miner could not remove the container; its operator's log has the details")
                }
            }
        }
    }
}

const NOT_HOLDER: &str = "not the holder of the allocation key";

/// `Some(no)` unless `current` is an allocation the caller holds.
fn not_holder(current: Option<&Allocation>, holds_key: &(dyn Fn(&Allocation) -> bool + Sync)) -> Option<Reply> {
    match current {
        None => Some(no(Code::NoAllocation, "no allocation")),
        Some(a) if !holds_key(a) => Some(no(Code::NotHolder, NOT_HOLDER)),
        Some(_) => None,
    }
}

fn requirement(m: &Miner, s: &Allocate) -> Result<Requirement, Refusal> {
    let req = Requirement::from_json(&Value::Object(s.device_requirement.clone()))
        .map_err(|e| Refusal::new(Code::BadRequest, format!("unreadable device_requirement: {}", e.0)))?;
    specs::check(&req, &m.specs).map_err(|mismatch| Refusal::new(Code::RequirementMismatch, mismatch.to_string()))?;
    Ok(req)
}

/// The check with `timeline = 0`: a definite answer, or `cannot_tell` when the runtime cannot
/// say (a renter must not forget an allocation on that).
async fn liveness(m: &Miner, current: Option<&Allocation>, holds_key: &(dyn Fn(&Allocation) -> bool + Sync)) -> Reply {
    if let Some(r) = not_holder(current, holds_key) {
        return r;
    }
    let Some(a) = current else { return no(Code::NoAllocation, "no allocation") };
    if a.phase != Phase::Running {
        return no(Code::CannotTell, "the allocation is still starting");
    }
    match m.runtime.list().await {
        Err(e) => {
            tracing::error!(error = %e, "cannot list the containers to answer a check");
            no(Code::CannotTell, format!("the miner cannot tell: {}", plain(&e)))
        }
        Ok(list)
            if list.iter().any(|c| Some(&c.id) == a.container_id.as_ref() && c.state != ContainerState::Stopped) =>
        {
            Reply::Yes { info: None, host_key: a.host_key.clone() }
        }
        Ok(_) => no(Code::NoAllocation, "the allocation's container is gone"),
    }
}

/// What a caller may read about a runtime failure; the detail (Docker's own text, paths, ids)
/// goes to the miner's log only.
fn plain(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Unavailable(_) => "the miner's container runtime is unavailable; try again later",
        RuntimeError::NotFound(_) => "the allocation's container is gone",
        RuntimeError::PortInUse { .. } => {
            "a port of the allocation is taken on the miner's host; its operator must free it"
        }
        RuntimeError::Failed(_) => "the miner's container runtime failed; its operator's log has the details",
    }
}

async fn docker_action(m: &Miner, a: &Allocation, action: &str, fields: &Map<String, Value>) -> Result<(), Refusal> {
    let id = a
        .container_id
        .as_deref()
        .ok_or_else(|| Refusal::new(Code::CannotTell, "the allocation has no container yet"))?;
    let r = match action {
        "restart" => m.runtime.restart(id).await,
        "pause" => m.runtime.pause(id).await,
        "unpause" | "resume" => m.runtime.unpause(id).await,
        "exchange_key" => {
            let key = fields.get("ssh_key").and_then(Value::as_str).unwrap_or("");
            let key = keys::validate_public_key(key)
                .map_err(|e| Refusal::new(Code::BadRequest, format!("exchange_key: {e}")))?;
            let key_type = fields.get("key_type").and_then(Value::as_str).unwrap_or("user");
            if !matches!(key_type, "user" | "terminal" | "") {
                return Err(Refusal::new(Code::BadRequest, "unknown key_type (user or terminal)"));
            }
            m.runtime.set_authorized_keys(id, &[key]).await
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(Refusal::new(
                Code::BadRequest,
                format!("unknown docker action '{shown}' (restart, pause, unpause, resume, exchange_key)"),
            ));
        }
    };
    r.map_err(|e| {
        tracing::error!(allocation = %a.allocation_id, action, error = %e, "container action failed");
        Refusal::new(Code::MinerFault, plain(&e))
    })
}

async fn start_allocation(m: &Miner, s: &Allocate, requester: &str, key: Option<String>) -> Reply {
    let port = m.ssh_port;
    let Some(key_b64) = key else { return no(Code::BadRequest, "public_key is required to allocate") };
    // One allocation at a time: a concurrent request is refused, not queued.
    let Ok(_guard) = m.busy.try_lock() else { return no(Code::Busy, "another allocation is in progress") };
    let req = match requirement(m, s) {
        Ok(r) => r,
        Err(r) => return Reply::No(r),
    };
    let asked = match docker::read(&s.docker_requirement) {
        Ok(d) => d,
        Err(r) => return Reply::No(r),
    };
    let resolved = match m.offer.resolve(&asked) {
        Ok(r) => r,
        Err(r) => return Reply::No(r),
    };
    // A host key of its own per allocation: its public half goes to the renter, signed.
    let host_key = match PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot generate an SSH host key");
            return no(Code::MinerFault, "the miner cannot make an SSH host key");
        }
    };
    let host_public = host_key.public_key().to_openssh().ok();
    let ttl = ttl_of(s, asked.ttl_seconds);
    let started_ms = Clock::system().now_ms();
    let allocation = Allocation {
        allocation_id: uuid_like(),
        key_b64,
        container_id: None,
        requester: requester.to_owned(),
        started_ms,
        expires_ms: started_ms.saturating_add(ttl.as_millis() as u64),
        phase: Phase::Starting,
        host_key: host_public.clone(),
    };
    match m.store.begin(&allocation) {
        Ok(true) => {}
        Ok(false) => return no(Code::AlreadyAllocated, "already allocated"),
        Err(e) => {
            tracing::error!(error = %e, "miner state unwritable");
            return no(Code::MinerFault, "the miner's state is unavailable");
        }
    }
    let password = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 20);
    let mut spec =
        ContainerSpec::new(&allocation.allocation_id, SecretString::from(password.clone()), port, m.ssh_bind_ip);
    spec.authorized_keys = asked.ssh_key.into_iter().collect();
    spec.cpu_count = req.cpu_count.and_then(|c| u32::try_from(c).ok());
    spec.memory_bytes = req.ram_bytes;
    spec.gpus = m.specs.gpu.count > 0 && !m.specs.simulated;
    spec.image = resolved.image;
    spec.env = resolved.env;
    spec.ssh_container_port = resolved.ssh_container_port;
    spec.user_ports = resolved.user_ports;
    spec.host_key = Some(host_key);
    let started = m.runtime.start(&spec).await;
    // Whatever happened, the warm container may have been used: make the next one, once the
    // renter's first login is done (its host keys cost a second of CPU that would compete with
    // the start of this one).
    super::warm_up(m, super::WARM_AFTER_ALLOCATION);
    let container = match started {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(allocation = %allocation.allocation_id, error = %e, "allocation failed to start");
            let _ = m.store.clear(&allocation.allocation_id);
            return no(Code::MinerFault, format!("the machine could not start: {}", plain(&e)));
        }
    };
    let creds = Credentials {
        username: "root".into(),
        password: SecretString::from(password),
        port,
        version: CredentialsVersion::Number(COMPUTE_VERSION_INT),
        external_user_ports: Some(container.user_ports.clone()),
    };
    let info = match creds.encrypt_for(&s.public_key) {
        Ok(i) => i,
        Err(e) => {
            let _ = m.runtime.remove(&container.id).await;
            let _ = m.store.clear(&allocation.allocation_id);
            return no(Code::BadRequest, format!("cannot encrypt the credentials for this public_key: {e}"));
        }
    };
    if let Err(e) = m.store.running(&allocation.allocation_id, &container.id) {
        tracing::error!(error = %e, "miner state unwritable");
        let _ = m.runtime.remove(&container.id).await;
        let _ = m.store.clear(&allocation.allocation_id);
        return no(Code::MinerFault, "the miner's state is unavailable");
    }
    m.changed.notify_one();
    tracing::info!(allocation = %allocation.allocation_id, requester, ttl_s = ttl.as_secs(), "allocated");
    Reply::Yes { info: Some(info), host_key: host_public }
}

/// `timeline` days (SN27), or our CLI's finer `docker_requirement.ttl_seconds` when given.
fn ttl_of(s: &Allocate, ttl_seconds: Option<u64>) -> Duration {
    match ttl_seconds {
        Some(secs) => Duration::from_secs(secs),
        None => Duration::from_secs(u64::try_from(s.timeline).unwrap_or(0).saturating_mul(86_400)),
    }
}

fn uuid_like() -> String {
    let mut b = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
