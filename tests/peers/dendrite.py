#!/usr/bin/env python3
"""Real bittensor Dendrite querying one axon with SN27 synapses, for interop tests.

stdin: one JSON object (secrets never go in argv):
    {"hotkey_mnemonic": str,
     "axon": {"ip": str, "port": int, "hotkey": ss58, "coldkey": ss58 (optional)},
     "external_ip": str (optional, default 192.0.2.10; sent as bt_header_dendrite_ip),
     "calls": [{"synapse": "Allocate"|"Specs"|"Unknown", "fields": {...}, "timeout": float,
                "replay": bool (optional)}]}
stdout: one JSON document {"results": [...]}, one entry per call, in order:
    normal call: {"status_code", "status_message", "is_success", "deserialized", "synapse"}
    replay:      {"first_status", "first_message", "second_status", "second_message"}
All calls go through one bt.Dendrite (one uuid, increasing nonces).
"""

import asyncio
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aiohttp  # noqa: E402
import bittensor as bt  # noqa: E402
from bittensor_wallet import Keypair  # noqa: E402

from sn27 import DEFAULT_EXTERNAL_IP, Allocate, Specs, fail, go_offline  # noqa: E402


class Unknown(bt.Synapse):
    """A synapse no SN27 axon serves (expect 404)."""


SYNAPSES = {"Allocate": Allocate, "Specs": Specs, "Unknown": Unknown}


def jsonable(value):
    if isinstance(value, bt.Synapse):
        return value.model_dump(mode="json")
    return value


async def plain_call(dendrite, axon_info, synapse, timeout: float) -> dict:
    synapse = await dendrite.call(target_axon=axon_info, synapse=synapse, timeout=timeout, deserialize=False)
    return {
        "status_code": synapse.dendrite.status_code,
        "status_message": synapse.dendrite.status_message,
        "is_success": synapse.is_success,
        "deserialized": jsonable(synapse.deserialize()),
        "synapse": synapse.model_dump(mode="json"),
    }


async def replay_call(dendrite, axon_info, synapse, timeout: float) -> dict:
    """Sign one request the way Dendrite.call does, then POST the very same bytes twice."""
    name = synapse.__class__.__name__
    synapse = dendrite.preprocess_synapse_for_request(axon_info, synapse, timeout)
    headers = dict(synapse.to_headers())
    headers["Content-Type"] = "application/json"
    body = json.dumps(synapse.model_dump()).encode()  # what aiohttp's json= would send
    url = f"http://{axon_info.ip}:{axon_info.port}/{name}"
    out = {}
    async with aiohttp.ClientSession() as session:
        for which in ("first", "second"):
            async with session.post(
                url, headers=headers, data=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                text = await response.text()
                try:
                    message = json.loads(text).get("message")
                except (ValueError, AttributeError):
                    message = None
                out[f"{which}_status"] = response.status
                out[f"{which}_message"] = message
    return out


def parse_input(doc: dict):
    mnemonic = doc.get("hotkey_mnemonic")
    if not isinstance(mnemonic, str) or not mnemonic.strip():
        raise ValueError('"hotkey_mnemonic" (string) is required')
    axon = doc.get("axon")
    if not isinstance(axon, dict):
        raise ValueError('"axon" (object with ip, port, hotkey) is required')
    for key, typ in (("ip", str), ("port", int), ("hotkey", str)):
        if not isinstance(axon.get(key), typ) or isinstance(axon.get(key), bool):
            raise ValueError(f'"axon.{key}" must be a {typ.__name__}')
    calls = doc.get("calls")
    if not isinstance(calls, list):
        raise ValueError('"calls" must be a list')
    checked = []
    for i, call in enumerate(calls):
        if not isinstance(call, dict):
            raise ValueError(f"calls[{i}] must be an object")
        cls = SYNAPSES.get(call.get("synapse"))
        if cls is None:
            raise ValueError(f'calls[{i}].synapse must be one of {sorted(SYNAPSES)}')
        fields = call.get("fields", {})
        if not isinstance(fields, dict):
            raise ValueError(f"calls[{i}].fields must be an object")
        timeout = call.get("timeout", 12.0)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"calls[{i}].timeout must be a positive number")
        try:
            synapse = cls(**fields)
        except Exception as e:  # noqa: BLE001 (pydantic ValidationError)
            raise ValueError(f"calls[{i}]: cannot build {cls.__name__} from fields: {e}") from e
        checked.append((synapse, float(timeout), bool(call.get("replay", False))))
    return mnemonic.strip(), axon, checked


async def run(doc: dict) -> dict:
    mnemonic, axon, calls = parse_input(doc)
    go_offline(doc.get("external_ip") or DEFAULT_EXTERNAL_IP)
    try:
        keypair = Keypair.create_from_mnemonic(mnemonic)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"hotkey_mnemonic: {e}") from None
    axon_info = bt.AxonInfo(
        version=bt.core.settings.version_as_int,
        ip=axon["ip"],
        port=axon["port"],
        ip_type=6 if ":" in axon["ip"] else 4,
        hotkey=axon["hotkey"],
        coldkey=axon.get("coldkey") or axon["hotkey"],
        protocol=4,
        placeholder1=0,
        placeholder2=0,
    )
    dendrite = bt.Dendrite(wallet=keypair)
    results = []
    try:
        for synapse, timeout, replay in calls:
            if replay:
                results.append(await replay_call(dendrite, axon_info, synapse, timeout))
            else:
                results.append(await plain_call(dendrite, axon_info, synapse, timeout))
    finally:
        await dendrite.aclose_session()
    return {"results": results}


def main() -> int:
    try:
        doc = json.loads(sys.stdin.read())
    except ValueError as e:
        fail(f"invalid JSON on stdin: {e}", 2)
    if not isinstance(doc, dict):
        fail("stdin JSON must be an object", 2)
    try:
        out = asyncio.run(run(doc))
    except ValueError as e:
        fail(str(e), 2)
    except Exception as e:  # noqa: BLE001
        fail(f"{type(e).__name__}: {e}")
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
