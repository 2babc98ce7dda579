#!/usr/bin/env python3
"""Real bittensor Axon serving the SN27 synapses on 127.0.0.1, for interop tests.

stdin: one JSON object (secrets never go in argv), then stdin stays open:
    {"hotkey_mnemonic": str, "port": int (0 = pick a free one), "denied_hotkeys": [ss58, ...],
     "deny_reason": str (optional; the blacklist reason for denied hotkeys, default "Blacklisted hotkey";
                    "{synapse}" and "{hotkey}" are filled in, as SN27 words its version gate),
     "coldkey_ss58": str (optional, only shown in AxonInfo; default: the hotkey's ss58),
     "sn27_version": "2.2.1" (optional: allocation credentials as SN27 v2.2.1 words them, with
                    external_user_ports 27015-27018 -> 40001-40004 and "version": 221)}
stdout: exactly one line "READY <port>" once the server listens; nothing else.
Exits 0 when stdin reaches EOF or on SIGTERM/SIGINT; errors go to stderr with a non-zero exit.
"""

import asyncio
import base64
import json
import os
import signal
import socket
import sys
import threading
import time
import typing

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bittensor as bt  # noqa: E402
from bittensor_wallet import Keypair  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402

from sn27 import Allocate, Specs, fail, go_offline, read_json_object  # noqa: E402

SSH_PORT = 4444
START_TIMEOUT_S = 30.0


class _PeerWallet:
    """The axon only needs `.hotkey` (a keypair with its secret) and `.coldkeypub` (for info())."""

    def __init__(self, hotkey: Keypair, coldkeypub: Keypair):
        self.hotkey = hotkey
        self.coldkeypub = coldkeypub


def free_port() -> int:
    # The SDK asserts 1024 < port < 65535; ephemeral ports are always in that range, but check.
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if 1024 < port < 65535:
            return port
    raise RuntimeError("could not find a free port in (1024, 65535)")


def encrypt_for(public_pem: str, plaintext: bytes) -> str:
    """NI compute scheme: RSA-OAEP(SHA-256, MGF1-SHA-256, no label), standard base64."""
    key = serialization.load_pem_public_key(public_pem.encode())
    ciphertext = key.encrypt(
        plaintext,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    return base64.b64encode(ciphertext).decode()


def build_axon(config: dict) -> "bt.Axon":
    mnemonic = config.get("hotkey_mnemonic")
    if not isinstance(mnemonic, str) or not mnemonic.strip():
        raise ValueError('"hotkey_mnemonic" (string) is required')
    port = config.get("port", 0)
    if not isinstance(port, int) or isinstance(port, bool) or port < 0:
        raise ValueError('"port" must be a non-negative integer')
    if port == 0:
        port = free_port()
    elif not 1024 < port < 65535:
        raise ValueError("the SDK only accepts ports in the open range (1024, 65535)")
    else:
        # fail fast (uvicorn would die silently in its thread) if the port is taken
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError as e:
                raise ValueError(f"cannot bind 127.0.0.1:{port}: {e}") from e
    sn27_v2 = config.get("sn27_version") == "2.2.1"
    denied = config.get("denied_hotkeys", [])
    if not isinstance(denied, list) or not all(isinstance(h, str) for h in denied):
        raise ValueError('"denied_hotkeys" must be a list of ss58 strings')
    denied_set = frozenset(denied)
    deny_reason = config.get("deny_reason", "Blacklisted hotkey")
    if not isinstance(deny_reason, str):
        raise ValueError('"deny_reason" must be a string')

    try:
        hotkey = Keypair.create_from_mnemonic(mnemonic.strip())
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"hotkey_mnemonic: {e}") from None
    coldkey_ss58 = config.get("coldkey_ss58") or hotkey.ss58_address
    wallet = _PeerWallet(hotkey, Keypair(ss58_address=coldkey_ss58))

    # --- forward / blacklist / priority: the SDK compares these signatures exactly. ---
    def forward_allocate(synapse: Allocate) -> Allocate:
        if synapse.checking:
            synapse.output = {"status": True, "port": SSH_PORT}
        elif synapse.timeline > 0 and synapse.public_key:
            if sn27_v2:
                # SN27 v2.2.1's credentials: the user ports the miner mapped, its version as an int.
                ports = {str(27015 + i): 40001 + i for i in range(4)}
                info = json.dumps({"username": "root", "password": "peer-pass", "port": SSH_PORT,
                                   "external_user_ports": ports, "version": 221})
            else:
                info = json.dumps({"username": "root", "password": "peer-pass", "port": SSH_PORT, "version": "peer"})
            synapse.output = {"status": True, "info": encrypt_for(synapse.public_key, info.encode()), "port": SSH_PORT}
        elif synapse.timeline == 0:
            synapse.output = {"status": True}  # deallocation
        else:
            synapse.output = {"status": False}  # allocation without a public key
        return synapse

    async def forward_specs(synapse: Specs) -> Specs:
        # async so that a slow request does not block the axon's event loop for other requests
        if synapse.specs_input.startswith("sleep:"):
            await asyncio.sleep(float(synapse.specs_input[len("sleep:"):]))
        synapse.specs_output = json.dumps({"peer": "python", "bittensor": bt.__version__})
        return synapse

    def is_denied(synapse: bt.Synapse) -> typing.Tuple[bool, str]:
        hk = synapse.dendrite.hotkey if synapse.dendrite is not None else None
        if hk in denied_set:
            return True, deny_reason.replace("{synapse}", type(synapse).__name__).replace("{hotkey}", hk)
        return False, "ok"

    def blacklist_allocate(synapse: Allocate) -> typing.Tuple[bool, str]:
        return is_denied(synapse)

    def blacklist_specs(synapse: Specs) -> typing.Tuple[bool, str]:
        return is_denied(synapse)

    def priority_allocate(synapse: Allocate) -> float:
        return 0.0

    def priority_specs(synapse: Specs) -> float:
        return 0.0

    axon = bt.Axon(wallet=wallet, port=port, ip="127.0.0.1", external_ip="127.0.0.1", external_port=port)
    axon.attach(forward_fn=forward_allocate, blacklist_fn=blacklist_allocate, priority_fn=priority_allocate)
    axon.attach(forward_fn=forward_specs, blacklist_fn=blacklist_specs, priority_fn=priority_specs)
    axon.fast_config.host = "127.0.0.1"
    return axon


def main() -> int:
    try:
        config = read_json_object(sys.stdin)
    except ValueError as e:
        fail(str(e), 2)

    go_offline()
    try:
        axon = build_axon(config)
    except Exception as e:  # noqa: BLE001
        fail(f"cannot build the axon: {type(e).__name__}: {e}", 2)

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    axon.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not getattr(axon.fast_server, "started", False):
        if stop.is_set():
            axon.stop()
            return 0
        if time.monotonic() > deadline:
            fail(f"axon did not start listening on 127.0.0.1:{axon.port} within {START_TIMEOUT_S:.0f}s (port in use?)")
        time.sleep(0.01)

    sys.stdout.write(f"READY {axon.port}\n")
    sys.stdout.flush()

    def watch_stdin():
        try:
            while sys.stdin.read(65536):
                pass
        except Exception:  # noqa: BLE001
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.wait(0.2):
        pass
    axon.stop()
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        sys.stderr.write(f"axon.py: error: {type(e).__name__}: {e}\n")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # uvicorn / the SDK's worker threads may linger; the server is stopped, leave immediately.
    os._exit(code)
