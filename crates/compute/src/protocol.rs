//! SN27's synapses, field for field (`compute/protocol.py`, v1.8.3).
//!
//! Field order is declaration order: it is the order of the JSON body the SDK sends. Dict
//! fields stay free-form JSON objects because validators and miners put varying keys in them;
//! typed views over their contents belong to the modules that use them.

use bittensor::Synapse;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

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
