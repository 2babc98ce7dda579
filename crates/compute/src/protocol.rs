//! The contract between a nicompute renter and a miner: SN27's synapses field for field
//! (`compute/protocol.py`, v1.8.3, with v2.x's additive `docker_requirement` keys), and the
//! rules both sides apply to them, written once:
//!
//! - [`refusal`]: why a miner says no — a typed [`refusal::Code`] beside the reason text SN27
//!   peers read, and the caller gates (registration, stake, version) of its 403 answers;
//! - [`keys`]: what an SSH public key must look like (`a`, `exchange-key` and the miner);
//! - [`login`]: what a username, host and port from a miner must look like before they reach a
//!   shell, and the `ssh` argument vector and printed command built from them;
//! - [`auth`] (over [`canonical`]): the signed extension by which nicompute peers authenticate
//!   allocations to each other, invisible to Python peers (spec: `docs/signed-allocations.md`);
//! - [`docker`]: SN27 v2.x's `docker_requirement` keys as the miner reads them.
//!
//! Field order is declaration order: it is the order of the JSON body the SDK sends. Dict
//! fields stay free-form JSON objects because validators and miners put varying keys in them;
//! typed views over their contents live in the submodules.

pub mod auth;
pub mod canonical;
pub mod docker;
pub mod keys;
pub mod login;
pub mod refusal;

use bittensor::Synapse;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use self::auth::Extension;

/// `Allocate`: check, allocate, deallocate, or act on a miner's container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Allocate {
    /// Lease length in days; `0` with `checking=false` deallocates.
    pub timeline: i64,
    pub device_requirement: Map<String, Value>,
    pub checking: bool,
    pub output: Map<String, Value>,
    /// The requester's RSA public key (PEM); credentials come back encrypted to it.
    pub public_key: String,
    pub docker_requirement: Map<String, Value>,
    pub docker_change: bool,
    pub docker_action: Map<String, Value>,
    /// nicompute's signed extension ([`auth`]); absent from every SN27 peer's body, ignored by
    /// the Python SDK (pydantic drops unknown keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nicompute_auth: Option<Extension>,
}

impl Default for Allocate {
    fn default() -> Self {
        Self {
            timeline: 0,
            device_requirement: Map::new(),
            checking: true,
            output: Map::new(),
            public_key: String::new(),
            docker_requirement: object(json!({
                "base_image": "ubuntu",
                "ssh_key": "",
                "ssh_port": 4444,
                "volume_path": "/tmp",
                "dockerfile": ""
            })),
            docker_change: false,
            docker_action: object(json!({"action": "", "ssh_key": "", "key_type": ""})),
            nicompute_auth: None,
        }
    }
}

impl Synapse for Allocate {
    const NAME: &'static str = "Allocate";
}

/// `Specs`: the miner's hardware description, as a JSON string in `specs_output`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Specs {
    pub specs_input: String,
    pub specs_output: String,
    /// nicompute's signed extension ([`auth`]): the miner signs its specs for nicompute renters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nicompute_auth: Option<Extension>,
}

impl Synapse for Specs {
    const NAME: &'static str = "Specs";
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_fields_in_sdk_order_with_sdk_defaults() {
        let fields = Allocate::default().to_fields();
        let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "timeline",
                "device_requirement",
                "checking",
                "output",
                "public_key",
                "docker_requirement",
                "docker_change",
                "docker_action"
            ]
        );
        assert_eq!(
            serde_json::to_string(&Allocate::default()).expect("json"),
            r#"{"timeline":0,"device_requirement":{},"checking":true,"output":{},"public_key":"","docker_requirement":{"base_image":"ubuntu","ssh_key":"","ssh_port":4444,"volume_path":"/tmp","dockerfile":""},"docker_change":false,"docker_action":{"action":"","ssh_key":"","key_type":""}}"#
        );
    }

    #[test]
    fn wrong_types_are_rejected_missing_take_defaults() {
        let mut m = Map::new();
        m.insert("timeline".into(), json!("not-an-int"));
        assert!(Allocate::from_fields(m).is_err());
        let mut m = Map::new();
        m.insert("timeline".into(), json!(90));
        let a = Allocate::from_fields(m).expect("parse");
        assert_eq!(a.timeline, 90);
        assert!(a.checking);
        assert_eq!(Specs::from_fields(Map::new()).expect("parse"), Specs::default());
    }
}
