"""The real SDK's own flows against a chain, as a user runs them on finney: a wallet, then
`Subtensor(network=<endpoint>)`, `burned_register`, `serve_axon`,
`get_neuron_for_pubkey_and_subnet` and `metagraph(netuid)` — for nicompute's devnet (the embedded
chain or the real runtime under chopsticks). Works under bittensor 9.0.0 and 10.5.0.

stdin, one JSON object:
  {"endpoint": "ws://127.0.0.1:PORT", "netuid": int, "wallet_path": str, "wallet_name": str,
   "steps": ["keys" | "register" | "serve" | "neuron" | "metagraph", ...],
   "axon": {"ip": str, "port": int}            (for "serve"),
   "state_call_0x": bool                       (optional: add the 0x prefix chopsticks requires)}
stdout, one JSON object:
  {"coldkey": ss58, "hotkey": ss58,
   "register": {"ok", "message", "seconds"}, "serve": {"ok", "message", "seconds"},
   "neuron": {"is_null", "uid", "hotkey", "coldkey", "axon": {"ip", "port", "version", "ip_type", "is_serving"}},
   "metagraph": {"n", "block", "hotkeys", "coldkeys", "S", "validator_permit", "axons": [{"ip", "port", "is_serving"}], "seconds"}}
A step that raises gives {"error": "Type: message"} in its place instead (the SDK's own failure,
for the caller to check), so one run reports every step.

The wallet (coldkey and hotkey without passwords, created when missing) lives at
wallet_path/wallet_name; "keys" alone creates it and reports its addresses, so the caller can fund
the coldkey before "register". bittensor-wallet prints new mnemonics on the process's stdout
(from Rust); that output is moved to stderr.
chopsticks takes `state_call` data only 0x-prefixed and the SDK 9.0.0 sends it bare (a node
accepts both); "state_call_0x" adds the prefix on the way out and changes nothing else.
Errors in the input: stderr, exit 2.
"""

import json
import os
import sys
import time


def result(r):
    """bool (9.0.0), ExtrinsicResponse or (success, message) (10.5.0) → {ok, message}."""
    if isinstance(r, bool):
        return {"ok": r, "message": ""}
    if hasattr(r, "success"):
        return {"ok": bool(r.success), "message": str(getattr(r, "message", ""))}
    if isinstance(r, (tuple, list)) and r:
        return {"ok": bool(r[0]), "message": str(r[1]) if len(r) > 1 else ""}
    return {"ok": bool(r), "message": repr(r)}


def timed(f):
    t = time.monotonic()
    try:
        out = f()
    except Exception as e:  # noqa: BLE001 - the SDK's failure is the result
        return {"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - t}
    out["seconds"] = time.monotonic() - t
    return out


def main() -> int:
    try:
        doc = json.load(sys.stdin)
        endpoint, netuid = doc["endpoint"], int(doc["netuid"])
        path, name, steps = doc["wallet_path"], doc["wallet_name"], list(doc["steps"])
    except (ValueError, KeyError, TypeError) as e:
        print(f"bad input: {e}", file=sys.stderr)
        return 2

    import bittensor as bt
    from bittensor_wallet import Wallet

    bt.logging.off()
    if doc.get("state_call_0x"):
        from sdk_compat import patch_state_call_0x

        patch_state_call_0x()

    wallet = Wallet(name=name, path=path, hotkey="default")
    stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        wallet.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False)
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        os.close(stdout)
    out = {"coldkey": wallet.coldkeypub.ss58_address, "hotkey": wallet.hotkey.ss58_address}
    if steps == ["keys"]:
        json.dump(out, sys.stdout)
        return 0

    st = bt.Subtensor(network=endpoint)
    for step in steps:
        if step == "register":
            out["register"] = timed(lambda: result(st.burned_register(wallet, netuid)))
        elif step == "serve":
            ip, port = doc["axon"]["ip"], int(doc["axon"]["port"])
            axon = bt.Axon(wallet=wallet, ip=ip, port=port, external_ip=ip, external_port=port)
            out["serve"] = timed(lambda: result(st.serve_axon(netuid, axon)))
        elif step == "neuron":
            def neuron():
                n = st.get_neuron_for_pubkey_and_subnet(wallet.hotkey.ss58_address, netuid)
                if n is None or n.is_null:
                    return {"is_null": True}
                a = n.axon_info
                return {"is_null": False, "uid": n.uid, "hotkey": n.hotkey, "coldkey": n.coldkey,
                        "axon": {"ip": a.ip, "port": a.port, "version": a.version, "ip_type": a.ip_type,
                                 "is_serving": a.is_serving}}
            out["neuron"] = timed(neuron)
        elif step == "metagraph":
            def metagraph():
                mg = st.metagraph(netuid)
                return {"n": int(mg.n), "block": int(mg.block), "hotkeys": list(mg.hotkeys),
                        "coldkeys": list(mg.coldkeys), "S": [float(s) for s in mg.S],
                        "validator_permit": [bool(p) for p in mg.validator_permit],
                        "axons": [{"ip": a.ip, "port": a.port, "is_serving": a.is_serving} for a in mg.axons]}
            out["metagraph"] = timed(metagraph)
        else:
            print(f"bad input: unknown step {step!r}", file=sys.stderr)
            return 2
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
