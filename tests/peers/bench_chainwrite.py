"""The real SDK's chain writes, timed, for `nicompute-bench chainwrite`: `Subtensor.burned_register`
and `serve_extrinsic` (what `Subtensor.serve_axon` runs) of bittensor 9.0.0 against a chain, one
funded wallet per call, waiting for inclusion as nicompute does by default.

stdin: {"endpoint": "ws://…", "netuid": int, "ip": str, "port": int,
        "wallets": [{"coldkey_mnemonic": str, "hotkey_mnemonic": str}, ...]}
stdout: {"import_s": float, "connect_s": float, "register_s": [float], "serve_s": [float],
         "register_ok": [bool], "serve_ok": [bool]}
Each figure is the SDK call alone, in a warm process (connected, metadata loaded). Wallets are
written unencrypted to a temporary directory (throwaway keys). As in chain_read.py, `state_call`
data gets its `0x` (chopsticks needs it; 9.0.0's legacy runtime call behind
get_neuron_for_pubkey_and_subnet sends it bare). Errors: stderr, exit 1.
"""

import json
import sys
import tempfile
import time


def main() -> int:
    doc = json.load(sys.stdin)
    t0 = time.perf_counter()
    import bittensor as bt
    from bittensor.core.extrinsics.serving import serve_extrinsic
    from bittensor_wallet import Wallet

    import_s = time.perf_counter() - t0
    from sdk_compat import patch_state_call_0x

    patch_state_call_0x()
    bt.logging.off()
    t0 = time.perf_counter()
    st = bt.Subtensor(network=doc["endpoint"])
    connect_s = time.perf_counter() - t0
    out = {"import_s": import_s, "connect_s": connect_s, "register_s": [], "serve_s": [], "register_ok": [],
           "serve_ok": []}
    with tempfile.TemporaryDirectory() as path:
        wallets = []
        for i, w in enumerate(doc["wallets"]):
            wallet = Wallet(name=f"w{i}", hotkey="default", path=path)
            wallet.regenerate_coldkey(mnemonic=w["coldkey_mnemonic"], use_password=False, overwrite=True,
                                      suppress=True)
            wallet.regenerate_hotkey(mnemonic=w["hotkey_mnemonic"], use_password=False, overwrite=True,
                                     suppress=True)
            wallets.append(wallet)
        for wallet in wallets:
            t0 = time.perf_counter()
            ok = st.burned_register(wallet=wallet, netuid=doc["netuid"], wait_for_inclusion=True,
                                    wait_for_finalization=False)
            out["register_s"].append(time.perf_counter() - t0)
            out["register_ok"].append(bool(ok))
        for i, wallet in enumerate(wallets):
            t0 = time.perf_counter()
            ok = serve_extrinsic(st, wallet, ip=doc["ip"], port=doc["port"] + i, protocol=4, netuid=doc["netuid"],
                                 wait_for_inclusion=True, wait_for_finalization=False)
            out["serve_s"].append(time.perf_counter() - t0)
            out["serve_ok"].append(bool(ok))
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
