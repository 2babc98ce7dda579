#!/usr/bin/env python3
"""SN27 register.py's check phase with the real bittensor Dendrite, timed (nicompute-bench renter).

register.py's `allocate_container` asks every candidate at once whether it could allocate:

    responses = dendrite.query(axon_candidates, Allocate(timeline=timeline,
                               device_requirement=device_requirement, checking=True))

with no timeout argument, so the SDK's default (12 s) applies, and `query` returns only when every
axon answered or timed out. This script does exactly that over the given axons and reports how
long `dendrite.query` took and how many said yes (`response and response["status"] is True`, as
register.py counts them). Nothing else of register.py (metagraph, database) is timed.

stdin: one JSON object (secrets never go in argv):
    {"hotkey_mnemonic": str,
     "axons": [{"ip": str, "port": int, "hotkey": ss58}, ...],
     "timeline": int (optional, default 90, as `a`),
     "gpu_type": str (optional, default "h100"),
     "gpu_size_mib": int (optional, default 81920: 80 GB as register.py's prompt turns it into MB),
     "timeout": float (optional; absent = the SDK's default, as register.py),
     "external_ip": str (optional, default 192.0.2.10)}
stdout: one JSON line {"elapsed_s", "asked", "yes", "answered", "timed_out", "failed",
                       "status_codes": {code: count}}
"""

import json
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bittensor as bt  # noqa: E402
from bittensor_wallet import Keypair  # noqa: E402

from sn27 import DEFAULT_EXTERNAL_IP, Allocate, fail, go_offline  # noqa: E402


def parse_input(doc: dict):
    mnemonic = doc.get("hotkey_mnemonic")
    if not isinstance(mnemonic, str) or not mnemonic.strip():
        raise ValueError('"hotkey_mnemonic" (string) is required')
    axons = doc.get("axons")
    if not isinstance(axons, list) or not axons:
        raise ValueError('"axons" must be a non-empty list of {ip, port, hotkey}')
    for i, axon in enumerate(axons):
        if not isinstance(axon, dict):
            raise ValueError(f"axons[{i}] must be an object")
        for key, typ in (("ip", str), ("port", int), ("hotkey", str)):
            if not isinstance(axon.get(key), typ) or isinstance(axon.get(key), bool):
                raise ValueError(f'"axons[{i}].{key}" must be a {typ.__name__}')
    timeout = doc.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
        raise ValueError('"timeout" must be a positive number')
    return mnemonic.strip(), axons, timeout


def main() -> int:
    try:
        doc = json.loads(sys.stdin.read())
    except ValueError as e:
        fail(f"invalid JSON on stdin: {e}", 2)
    if not isinstance(doc, dict):
        fail("stdin JSON must be an object", 2)
    try:
        mnemonic, axons, timeout = parse_input(doc)
        keypair = Keypair.create_from_mnemonic(mnemonic)
    except ValueError as e:
        fail(str(e), 2)
    except Exception as e:  # noqa: BLE001 (bad mnemonic)
        fail(f"hotkey_mnemonic: {e}", 2)

    go_offline(doc.get("external_ip") or DEFAULT_EXTERNAL_IP)
    axon_infos = [
        bt.AxonInfo(
            version=bt.core.settings.version_as_int,
            ip=a["ip"],
            port=a["port"],
            ip_type=6 if ":" in a["ip"] else 4,
            hotkey=a["hotkey"],
            coldkey=a["hotkey"],
            protocol=4,
            placeholder1=0,
            placeholder2=0,
        )
        for a in axons
    ]
    # register.py's device_requirement for `a --gpu_type T --gpu_size S`.
    device_requirement = {
        "cpu": {"count": 1},
        "gpu": {},
        "hard_disk": {"capacity": 1073741824},
        "ram": {"capacity": 1073741824},
    }
    device_requirement["gpu"] = {
        "count": 1,
        "capacity": int(doc.get("gpu_size_mib", 81920)),
        "type": str(doc.get("gpu_type", "h100")),
    }
    timeline = int(doc.get("timeline", 90))

    dendrite = bt.dendrite(wallet=keypair)
    synapse = Allocate(timeline=timeline, device_requirement=device_requirement, checking=True)
    kwargs = {} if timeout is None else {"timeout": float(timeout)}
    started = time.perf_counter()
    responses = dendrite.query(axon_infos, synapse, **kwargs)
    elapsed = time.perf_counter() - started

    # The statuses come from the history (query deserializes, so responses are the output dicts).
    history = dendrite.synapse_history[-len(axon_infos):]
    codes: dict = {}
    for s in history:
        code = str(s.dendrite.status_code)
        codes[code] = codes.get(code, 0) + 1
    yes = sum(1 for r in responses if r and r.get("status") is True)
    answered = sum(1 for s in history if str(s.dendrite.status_code) == "200")
    timed_out = sum(1 for s in history if str(s.dendrite.status_code) == "408")
    out = {
        "elapsed_s": elapsed,
        "asked": len(axon_infos),
        "yes": yes,
        "answered": answered,
        "timed_out": timed_out,
        "failed": len(axon_infos) - answered - timed_out,
        "status_codes": codes,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
