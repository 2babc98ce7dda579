//! The runtime the embedded chain presents itself as: finney's Subtensor runtime of spec version
//! 343, described by its own recorded metadata (V14 for `state_getMetadata`, V15 with the
//! runtime-API section for `Metadata_metadata_at_version`). Every call, event, error and storage
//! item the chain decodes or writes goes through this metadata, so a client driven by metadata
//! (the Python SDK, nicompute's own extrinsic layer) sees the same shapes it sees on finney.
//!
//! The metadata is embedded gzip-compressed (`metadata/*.scale.gz`, made from
//! `tests/fixtures/chain/metadata_{v14,at_version15}_spec343.hex`; a test checks they are the
//! same bytes) and decoded once per process.

use std::io::Read;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use crate::extrinsic::Metadata;

/// `specVersion` of the recorded runtime.
pub const SPEC_VERSION: u32 = 343;
/// `transactionVersion` of the recorded runtime.
pub const TRANSACTION_VERSION: u32 = 1;

static V14_GZ: &[u8] = include_bytes!("metadata/spec343_v14.scale.gz");
static V15_GZ: &[u8] = include_bytes!("metadata/spec343_v15.scale.gz");

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("the embedded metadata is a valid gzip stream");
    out
}

/// `"meta"` ‖ V14 metadata: what `state_getMetadata` answers.
pub fn metadata_v14_bytes() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| gunzip(V14_GZ))
}

/// `"meta"` ‖ V15 metadata: what `Metadata_metadata_at_version(15)` wraps in `Option<Vec<u8>>`.
pub fn metadata_v15_bytes() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| gunzip(V15_GZ))
}

/// The V15 metadata decoded (it holds everything V14 does, plus the runtime APIs).
pub fn metadata() -> Arc<Metadata> {
    static M: OnceLock<Arc<Metadata>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Metadata::from_bytes(metadata_v15_bytes()).expect("the embedded V15 metadata decodes")))
        .clone()
}

/// `state_getRuntimeVersion`: the recorded runtime's own answer (finney, spec 343), so clients
/// that check the API list or versions see the real values.
pub fn runtime_version() -> Value {
    json!({
        "specName": "node-subtensor",
        "implName": "node-subtensor",
        "authoringVersion": 1,
        "specVersion": SPEC_VERSION,
        "implVersion": 1,
        "apis": [
            ["0xdf6acb689907609b", 5], ["0x37e397fc7c91f5e4", 2], ["0x40fe3ad401f8959a", 6],
            ["0xfbc577b9d747efd6", 1], ["0xd2bc9897eed08f15", 3], ["0xf78b278be53f454c", 2],
            ["0xdd718d5cc53262d4", 1], ["0xab3c0572291feb8b", 1], ["0xed99c5acb25eedf5", 3],
            ["0xbc9d89904f5b923f", 1], ["0x37c8bb1350a9a2a8", 4], ["0xf3ff14d5ab527059", 3],
            ["0x582211f65bb14b89", 6], ["0xe65b00e46cedd0aa", 2], ["0x68b66ba122c93fa7", 2],
            ["0x42e62be4a39e5b60", 1], ["0x806df4ccaa9ed485", 1], ["0x8375104b299b74c5", 1],
            ["0x5d1fbfbe852f2807", 1], ["0xc6886e2f8e598b0a", 1], ["0xcbca25e39f142387", 2],
            ["0xa8b093e6508d9e9c", 1]
        ],
        "transactionVersion": TRANSACTION_VERSION,
        "systemVersion": 1,
        "stateVersion": 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../../tests/fixtures/chain/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("fixture");
        hex::decode(text.trim().trim_start_matches("0x")).expect("hex")
    }

    #[test]
    fn the_embedded_metadata_is_the_recorded_one() {
        assert_eq!(metadata_v14_bytes(), fixture("metadata_v14_spec343.hex").as_slice());
        let mut wrapped = vec![1u8];
        parity_scale_codec::Encode::encode_to(&metadata_v15_bytes().to_vec(), &mut wrapped);
        assert_eq!(wrapped, fixture("metadata_at_version15_spec343.hex"));
        let md = metadata();
        assert_eq!(md.version, 15);
        assert!(md.runtime_api("SubnetInfoRuntimeApi_get_selective_mechagraph").is_some());
    }
}
