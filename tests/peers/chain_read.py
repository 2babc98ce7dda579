"""What the real SDK reads back from a chain: registrations, neurons (axon and prometheus),
balances and stakes, through bittensor's own `Subtensor` calls.

stdin, one JSON object:
  {"endpoint": "ws://127.0.0.1:PORT", "netuid": int,
   "hotkeys": [ss58, ...], "balances": [ss58, ...], "stakes": [[coldkey_ss58, hotkey_ss58], ...]}
stdout:
  {"hotkeys": {ss58: {"registered": bool, "neuron": null | {"uid", "hotkey", "coldkey",
       "axon": {"ip", "port", "version", "ip_type", "is_serving"},
       "prometheus": {"ip", "port", "version", "ip_type"}}}},
   "balances": {ss58: rao},
   "stakes": [{"coldkey", "hotkey", "alpha": int, "get_stake_rao": int | null, "get_stake_error": str | null}]}
Calls: Subtensor.is_hotkey_registered, get_neuron_for_pubkey_and_subnet, get_balance; for stakes the
`SubtensorModule.Alpha(hotkey, coldkey, netuid)` storage that `get_stake` starts from (through the
SDK's own `substrate.query`), and `get_stake` itself, whose error is reported rather than raised: on
the RAO runtime (spec 218) the shares are plain integers and 9.0.0's `get_stake`, written for the
later fixed-point shares, fails on them.

chopsticks accepts `state_call` data only `0x`-prefixed, and the SDK 9.0.0's legacy runtime call
(behind get_neuron_for_pubkey_and_subnet) sends it bare; a node accepts both, so the prefix is
added here on the way out and nothing else is touched.
Errors: stderr, exit 2 for bad input, 1 otherwise.
"""

import json
import sys


def main() -> int:
    try:
        doc = json.load(sys.stdin)
        endpoint, netuid = doc["endpoint"], int(doc["netuid"])
    except (ValueError, KeyError, TypeError) as e:
        print(f"bad input: {e}", file=sys.stderr)
        return 2

    import bittensor as bt
    from sdk_compat import patch_state_call_0x

    patch_state_call_0x()
    bt.logging.off()
    st = bt.Subtensor(network=endpoint)
    out = {"hotkeys": {}, "balances": {}, "stakes": []}
    for hk in doc.get("hotkeys", []):
        registered = bool(st.is_hotkey_registered(hk, netuid))
        neuron = None
        if registered:
            n = st.get_neuron_for_pubkey_and_subnet(hk, netuid)
            if n is not None and not n.is_null:
                a, p = n.axon_info, n.prometheus_info
                neuron = {
                    "uid": n.uid,
                    "hotkey": n.hotkey,
                    "coldkey": n.coldkey,
                    "axon": {"ip": a.ip, "port": a.port, "version": a.version, "ip_type": a.ip_type,
                             "is_serving": a.is_serving},
                    "prometheus": {"ip": p.ip, "port": p.port, "version": p.version, "ip_type": p.ip_type},
                }
        out["hotkeys"][hk] = {"registered": registered, "neuron": neuron}
    for ck in doc.get("balances", []):
        out["balances"][ck] = st.get_balance(ck).rao
    for ck, hk in doc.get("stakes", []):
        alpha = st.substrate.query("SubtensorModule", "Alpha", [hk, ck, netuid]).value
        entry = {"coldkey": ck, "hotkey": hk, "alpha": alpha, "get_stake_rao": None, "get_stake_error": None}
        try:
            entry["get_stake_rao"] = st.get_stake(ck, hk, netuid).rao
        except Exception as e:  # noqa: BLE001
            entry["get_stake_error"] = f"{type(e).__name__}: {e}"
        out["stakes"].append(entry)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
