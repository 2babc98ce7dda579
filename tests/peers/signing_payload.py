"""The real SDK's extrinsic signing payload for fixed inputs, offline.

Runs bittensor 9.0.0's own substrate layer (async-substrate-interface's
`SubstrateInterface.compose_call` and `generate_signature_payload`, the code every SDK write goes
through) against a recorded runtime metadata, with the chain's answers it would ask for (genesis
hash, era birth block hash, spec and transaction versions) given on stdin instead of fetched. No
network and no node. Optionally verifies an sr25519 signature over the payload with the SDK's
Keypair, so the Rust signer can be checked without comparing random signatures.

stdin, one JSON object, or a list of them (one SDK import for all; the output is then a list):
  {"metadata_hex": "<path to a state_getMetadata result>",
   "spec_version": int, "transaction_version": int,
   "genesis_hash": "0x…", "block_hash": "0x…" (the era's birth block; the genesis hash when immortal),
   "era": null | {"period": int, "current": int}, "nonce": int, "tip": int,
   "call": {"module": str, "function": str, "args": {...}},
   "verify": {"ss58": str, "signature": "0x…"} (optional)}
stdout: {"call_data": "0x…", "payload": "0x…", "era": "0x…", "signature_valid": bool | null}
Errors: stderr, exit 2 for bad input, 1 otherwise.
"""

import json
import sys


def main() -> int:
    try:
        docs = json.load(sys.stdin)
        single = isinstance(docs, dict)
        docs = [docs] if single else docs
        metas = {d["metadata_hex"]: open(d["metadata_hex"]).read().strip() for d in docs}
    except (ValueError, KeyError, OSError, TypeError) as e:
        print(f"bad input: {e}", file=sys.stderr)
        return 2
    interfaces = {}
    out = [payload_for(d, metas[d["metadata_hex"]], interfaces) for d in docs]
    json.dump(out[0] if single else out, sys.stdout)
    return 0


def payload_for(doc: dict, meta_hex: str, interfaces: dict) -> dict:
    from async_substrate_interface.sync_substrate import SubstrateInterface
    from bittensor_wallet import Keypair
    from scalecodec.base import ScaleBytes

    # No connection: the metadata and the node's answers come from stdin. Decoding a metadata
    # takes the SDK a second or two, so one interface per metadata file serves every case.
    si = interfaces.get(doc["metadata_hex"])
    if si is None:
        SubstrateInterface.connect = lambda self, init=False: None
        si = SubstrateInterface("ws://offline.invalid", _mock=True)
        metadata = si.runtime_config.create_scale_object("MetadataVersioned", data=ScaleBytes(meta_hex))
        metadata.decode()
        si._metadata = metadata
        si.runtime_config.add_portable_registry(metadata)
        interfaces[doc["metadata_hex"]] = si
    si.runtime_version = doc["spec_version"]
    si.transaction_version = doc["transaction_version"]
    si.runtime_config.set_active_spec_version_id(doc["spec_version"])

    genesis, birth = doc["genesis_hash"], doc["block_hash"]

    def get_block_hash(block_id):
        return genesis if block_id == 0 else birth

    si.get_block_hash = get_block_hash

    c = doc["call"]
    call = si.compose_call(c["module"], c["function"], c["args"])
    era = doc.get("era")
    payload = si.generate_signature_payload(call=call, era=era, nonce=doc["nonce"], tip=doc.get("tip", 0))
    payload_bytes = bytes(payload.data)

    era_hex = "0x00"
    if era:
        era_obj = si.runtime_config.create_scale_object("Era")
        era_obj.encode(era)
        era_hex = str(era_obj.data)

    valid = None
    if doc.get("verify"):
        v = doc["verify"]
        kp = Keypair(ss58_address=v["ss58"])
        valid = bool(kp.verify(payload_bytes, bytes.fromhex(v["signature"].removeprefix("0x"))))

    return {"call_data": str(call.data), "payload": "0x" + payload_bytes.hex(), "era": era_hex, "signature_valid": valid}


if __name__ == "__main__":
    sys.exit(main())
