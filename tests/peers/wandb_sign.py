"""SN27's wandb run signature with the real bittensor-wallet Keypair (run with the bt9.0.0 venv).

stdin, one JSON object, either
  {"op": "sign", "mnemonic": str, "run_id": str}       -> {"ss58": str, "signature": hex}
  {"op": "verify", "ss58": str, "run_id": str, "signature": hex} -> {"valid": bool}
Both are SN27's own expressions (compute/wandb/wandb.py sign_run / verify_run): the message is
the 32 raw bytes of sha256(run_id), the signature hex without 0x. The mnemonic is read from stdin,
never argv.
"""

import hashlib
import json
import sys

from bittensor_wallet import Keypair


def main():
    req = json.load(sys.stdin)
    digest = hashlib.sha256(req["run_id"].encode()).digest()
    if req["op"] == "sign":
        kp = Keypair.create_from_mnemonic(req["mnemonic"])
        print(json.dumps({"ss58": kp.ss58_address, "signature": kp.sign(digest).hex()}))
    elif req["op"] == "verify":
        try:
            valid = bool(Keypair(ss58_address=req["ss58"]).verify(digest, bytes.fromhex(req["signature"])))
        except Exception:  # SN27 treats any failure as "not valid"
            valid = False
        print(json.dumps({"valid": valid}))
    else:
        print(f"unknown op {req['op']!r}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
