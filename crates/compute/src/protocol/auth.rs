//! Signed allocations between nicompute peers (spec: `docs/signed-allocations.md`).
//!
//! SN27's synapses declare no hash fields, so the SDK's request signature covers a constant body
//! hash: anyone on the path can rewrite `public_key` or `docker_requirement.ssh_key` in a signed
//! request, and nothing signs a response. nicompute peers close that with one extra body field,
//! `nicompute_auth` ([`Extension`]), which the Python SDK ignores (pydantic drops unknown keys)
//! and SN27 miners never return:
//!
//! - the renter signs the request's allocation-relevant fields together with what binds them to
//!   this one request — the nonce and uuid the SDK signature already covers, its own hotkey and
//!   the axon's — so a signature cannot be lifted onto another request, another miner, or a
//!   replay (the axon refuses a reused nonce);
//! - the miner verifies it when present (and may refuse requests without it), and signs its
//!   answer — the response fields, the container's SSH host key, and a digest of the request it
//!   answers — with its hotkey; the renter verifies that against the hotkey the metagraph names.
//!
//! Both messages are a fixed prefix and the [`canonical`](super::canonical) JSON of an object,
//! signed with sr25519 under the `substrate` context (what every Bittensor key signs with).

use bittensor::{AccountId, Keypair, Signature};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::canonical::{self, NotCanonical};
use super::keys;

/// The extension's body key.
pub const FIELD: &str = "nicompute_auth";
/// The one version of the scheme.
pub const VERSION: u32 = 1;
/// The prefix of a signed request message.
pub const REQUEST_PREFIX: &[u8] = b"nicompute/request/v1\n";
/// The prefix of a signed response message.
pub const RESPONSE_PREFIX: &[u8] = b"nicompute/response/v1\n";

/// `nicompute_auth`: a signature, and in a miner's answer the container's SSH host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// [`VERSION`].
    pub v: u32,
    /// `0x` + 128 hex digits: sr25519 over the request or response message.
    pub sig: String,
    /// The SSH host key (OpenSSH public key line) the allocation's machine presents (answers to
    /// allocations, checks and container actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

/// What binds a signature to one request: the values the SDK's own request signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The renter's hotkey (SS58).
    pub dendrite: &'a str,
    /// The miner's hotkey (SS58): the axon the request is for.
    pub axon: &'a str,
    pub nonce: u64,
    pub uuid: &'a str,
}

/// Why a signed message could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("nicompute_auth version {0} is not supported (this nicompute speaks {VERSION})")]
    Version(u32),
    #[error("the nicompute_auth signature is not 0x followed by 128 hex digits")]
    Encoding,
    #[error("the nicompute_auth signature does not verify: the signed fields were changed on the way, or another key signed them")]
    Mismatch,
    #[error("cannot sign this synapse: {0}")]
    NotCanonical(#[from] NotCanonical),
    #[error("the host key in the miner's answer is not an OpenSSH public key: {0}")]
    HostKey(keys::KeyError),
    #[error("{0} has no signed form")]
    Unsupported(String),
}

/// The request fields a signature covers, per synapse: everything that decides what the miner
/// does and to whom the credentials go (not `output`, which a request leaves empty).
pub fn request_fields(synapse: &str) -> Option<&'static [&'static str]> {
    match synapse {
        "Allocate" => Some(&[
            "timeline",
            "device_requirement",
            "checking",
            "public_key",
            "docker_requirement",
            "docker_change",
            "docker_action",
        ]),
        "Specs" => Some(&["specs_input"]),
        _ => None,
    }
}

/// The response fields a miner's signature covers, per synapse.
pub fn response_fields(synapse: &str) -> Option<&'static [&'static str]> {
    match synapse {
        "Allocate" => Some(&["output"]),
        "Specs" => Some(&["specs_output"]),
        _ => None,
    }
}

fn pick(
    synapse: &str,
    names: Option<&'static [&'static str]>,
    fields: &Map<String, Value>,
) -> Result<Value, AuthError> {
    let names = names.ok_or_else(|| AuthError::Unsupported(synapse.to_owned()))?;
    Ok(Value::Object(names.iter().map(|n| ((*n).to_owned(), fields.get(*n).cloned().unwrap_or(Value::Null))).collect()))
}

fn message(prefix: &[u8], body: &Value) -> Result<Vec<u8>, AuthError> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(&canonical::to_vec(body)?);
    Ok(out)
}

/// The request message: [`REQUEST_PREFIX`] and the canonical JSON of
/// `{"axon", "dendrite", "fields": {…}, "nonce", "synapse", "uuid"}`.
pub fn request_message(synapse: &str, fields: &Map<String, Value>, b: &Binding<'_>) -> Result<Vec<u8>, AuthError> {
    let body = json!({
        "synapse": synapse,
        "axon": b.axon,
        "dendrite": b.dendrite,
        "nonce": b.nonce,
        "uuid": b.uuid,
        "fields": pick(synapse, request_fields(synapse), fields)?,
    });
    message(REQUEST_PREFIX, &body)
}

/// The response message: [`RESPONSE_PREFIX`] and the canonical JSON of `{"axon", "dendrite",
/// "fields": {…}, "host_key", "nonce", "request": hex SHA-256 of the request message,
/// "synapse", "uuid"}`.
pub fn response_message(
    synapse: &str,
    fields: &Map<String, Value>,
    b: &Binding<'_>,
    request_digest: &[u8; 32],
    host_key: Option<&str>,
) -> Result<Vec<u8>, AuthError> {
    let body = json!({
        "synapse": synapse,
        "axon": b.axon,
        "dendrite": b.dendrite,
        "nonce": b.nonce,
        "uuid": b.uuid,
        "request": hex(request_digest),
        "fields": pick(synapse, response_fields(synapse), fields)?,
        "host_key": host_key,
    });
    message(RESPONSE_PREFIX, &body)
}

/// SHA-256 of a request message: what the response signature names.
pub fn digest(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_version(ext: &Extension) -> Result<Signature, AuthError> {
    if ext.v != VERSION {
        return Err(AuthError::Version(ext.v));
    }
    Signature::from_hex(&ext.sig).map_err(|_| AuthError::Encoding)
}

/// The renter's side: signs the request `fields` of `synapse` for `b`. The extension to send
/// and the request digest the answer must name.
pub fn sign_request(
    keypair: &Keypair,
    synapse: &str,
    fields: &Map<String, Value>,
    b: &Binding<'_>,
) -> Result<(Extension, [u8; 32]), AuthError> {
    let msg = request_message(synapse, fields, b)?;
    let ext = Extension { v: VERSION, sig: keypair.sign(&msg).to_hex(), host_key: None };
    Ok((ext, digest(&msg)))
}

/// The miner's side: checks a request's extension against its caller's hotkey. The request
/// digest for the answer.
pub fn verify_request(
    ext: &Extension,
    synapse: &str,
    fields: &Map<String, Value>,
    b: &Binding<'_>,
    caller: &AccountId,
) -> Result<[u8; 32], AuthError> {
    let sig = check_version(ext)?;
    let msg = request_message(synapse, fields, b)?;
    if caller.verify(&msg, &sig) {
        Ok(digest(&msg))
    } else {
        Err(AuthError::Mismatch)
    }
}

/// The miner's side: signs its answer `fields` (and `host_key`) to the request with `digest`.
pub fn sign_response(
    keypair: &Keypair,
    synapse: &str,
    fields: &Map<String, Value>,
    b: &Binding<'_>,
    request_digest: &[u8; 32],
    host_key: Option<&str>,
) -> Result<Extension, AuthError> {
    let msg = response_message(synapse, fields, b, request_digest, host_key)?;
    Ok(Extension { v: VERSION, sig: keypair.sign(&msg).to_hex(), host_key: host_key.map(str::to_owned) })
}

/// The renter's side: checks a miner's answer against the miner's hotkey from the metagraph.
/// The host key it vouches for, if any (checked to be an OpenSSH public key line).
pub fn verify_response(
    ext: &Extension,
    synapse: &str,
    fields: &Map<String, Value>,
    b: &Binding<'_>,
    request_digest: &[u8; 32],
    miner: &AccountId,
) -> Result<Option<String>, AuthError> {
    let sig = check_version(ext)?;
    let msg = response_message(synapse, fields, b, request_digest, ext.host_key.as_deref())?;
    if !miner.verify(&msg, &sig) {
        return Err(AuthError::Mismatch);
    }
    match &ext.host_key {
        None => Ok(None),
        Some(k) => keys::validate_public_key(k).map(Some).map_err(AuthError::HostKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(public_key: &str) -> Map<String, Value> {
        let v = json!({
            "timeline": 1, "device_requirement": {"cpu": {"count": 1}}, "checking": false, "output": {},
            "public_key": public_key, "docker_requirement": {"ssh_key": "ssh-ed25519 AAAA"}, "docker_change": false,
            "docker_action": {"action": ""}
        });
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_request_signature_covers_the_fields_and_the_binding() {
        let renter = Keypair::from_seed(&[1; 32]).expect("key");
        let miner = Keypair::from_seed(&[2; 32]).expect("key");
        let (r, m) = (renter.ss58(), miner.ss58());
        let b = Binding { dendrite: &r, axon: &m, nonce: 42, uuid: "u" };
        let (ext, digest) = sign_request(&renter, "Allocate", &fields("PEM"), &b).expect("sign");
        assert_eq!(verify_request(&ext, "Allocate", &fields("PEM"), &b, &renter.account_id()), Ok(digest));
        // A rewritten public key, another nonce, another miner, another signer: all refused.
        assert_eq!(
            verify_request(&ext, "Allocate", &fields("EVIL"), &b, &renter.account_id()),
            Err(AuthError::Mismatch)
        );
        let replayed = Binding { nonce: 43, ..b };
        assert!(verify_request(&ext, "Allocate", &fields("PEM"), &replayed, &renter.account_id()).is_err());
        let elsewhere = Binding { axon: &r, ..b };
        assert!(verify_request(&ext, "Allocate", &fields("PEM"), &elsewhere, &renter.account_id()).is_err());
        assert!(verify_request(&ext, "Allocate", &fields("PEM"), &b, &miner.account_id()).is_err());
        // `output` is not a request field: changing it changes nothing.
        let mut f = fields("PEM");
        f.insert("output".into(), json!({"x": 1}));
        assert!(verify_request(&ext, "Allocate", &f, &b, &renter.account_id()).is_ok());
    }

    #[test]
    fn a_response_signature_covers_output_host_key_and_request() {
        let miner = Keypair::from_seed(&[2; 32]).expect("key");
        let m = miner.ss58();
        let b = Binding { dendrite: "renter", axon: &m, nonce: 7, uuid: "u" };
        let out =
            json!({"output": {"status": true, "info": "abc", "port": 4444}}).as_object().cloned().unwrap_or_default();
        let host = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd1qDMYkGqYYsvIHQVkfzWkHDdjVuWvAH9ZpSg7lk1x";
        let ext = sign_response(&miner, "Allocate", &out, &b, &[9; 32], Some(host)).expect("sign");
        assert_eq!(
            verify_response(&ext, "Allocate", &out, &b, &[9; 32], &miner.account_id()),
            Ok(Some(host.to_owned()))
        );
        assert!(verify_response(&ext, "Allocate", &out, &b, &[8; 32], &miner.account_id()).is_err(), "another request");
        let mut swapped = ext.clone();
        swapped.host_key = Some(host.replace("AAAAIGd1", "AAAAIGd2"));
        assert!(verify_response(&swapped, "Allocate", &out, &b, &[9; 32], &miner.account_id()).is_err());
        let mut other = out.clone();
        other.insert("output".into(), json!({"status": true, "info": "abd", "port": 4444}));
        assert!(verify_response(&ext, "Allocate", &other, &b, &[9; 32], &miner.account_id()).is_err());
        let mut bad = ext;
        bad.v = 2;
        assert_eq!(
            verify_response(&bad, "Allocate", &out, &b, &[9; 32], &miner.account_id()),
            Err(AuthError::Version(2))
        );
    }
}
