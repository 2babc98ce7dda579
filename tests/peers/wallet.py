#!/usr/bin/env python3
"""Wallet keyfiles through the real SDK (bittensor-wallet as shipped with bittensor), for interop tests.

    wallet.py create --path P --name N --hotkey H [--overwrite]
        new 12-word coldkey (encrypted with $NICOMPUTE_TEST_PASSWORD) and hotkey (plaintext)
        -> {"coldkey_ss58", "hotkey_ss58"}
    wallet.py load --path P --name N --hotkey H
        reads coldkeypub.txt, the hotkey and the coldkey (decrypted with $NICOMPUTE_TEST_PASSWORD)
        -> {"coldkey_ss58", "coldkeypub_ss58", "hotkey_ss58", "hotkey_signature_of_hello": "0x..."}
    wallet.py verify --ss58 S --message M --signature 0x...
        sr25519 verification of the UTF-8 bytes of M -> {"valid": bool}

Secrets only come from the environment; nothing prompts (stdin is never read). One JSON line on
stdout; errors on stderr with a non-zero exit.
"""

import argparse
import contextlib
import json
import os
import sys

PASSWORD_ENV = "NICOMPUTE_TEST_PASSWORD"


def fail(message: str, code: int = 1):
    sys.stderr.write(f"wallet.py: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


@contextlib.contextmanager
def stdout_to_stderr():
    """bittensor-wallet (Rust) prints "Encrypting..."/"Decrypting..." and prompts straight to fd 1;
    keep our stdout for the JSON result only."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def password() -> str:
    pw = os.environ.get(PASSWORD_ENV)
    if not pw:
        fail(f"set the coldkey password in the environment variable {PASSWORD_ENV}", 2)
    return pw


def open_wallet(args):
    import bittensor  # noqa: F401  (the SDK as the subnet uses it; Wallet is bittensor_wallet's)
    from bittensor_wallet import Wallet

    return Wallet(name=args.name, hotkey=args.hotkey, path=os.path.abspath(os.path.expanduser(args.path)))


def cmd_create(args) -> dict:
    pw = password()
    wallet = open_wallet(args)
    if not args.overwrite:
        for f in (wallet.coldkey_file, wallet.coldkeypub_file, wallet.hotkey_file):
            if f.exists_on_device():
                fail(f"{f.path} already exists (pass --overwrite to replace it)", 2)
    with stdout_to_stderr():
        wallet.create_new_coldkey(
            n_words=12, use_password=True, overwrite=True, suppress=True,
            save_coldkey_to_env=False, coldkey_password=pw,
        )
        wallet.create_new_hotkey(
            n_words=12, use_password=False, overwrite=True, suppress=True, save_hotkey_to_env=False,
        )
    return {"coldkey_ss58": wallet.coldkeypub.ss58_address, "hotkey_ss58": wallet.hotkey.ss58_address}


def cmd_load(args) -> dict:
    pw = password()
    wallet = open_wallet(args)
    for f in (wallet.coldkey_file, wallet.coldkeypub_file, wallet.hotkey_file):
        if not f.exists_on_device():
            fail(f"{f.path} does not exist", 2)
    with stdout_to_stderr():
        coldkeypub = wallet.get_coldkeypub()
        if wallet.hotkey_file.is_encrypted():
            hotkey = wallet.get_hotkey(password=pw)  # same password, never prompt
        else:
            hotkey = wallet.get_hotkey()
        coldkey = wallet.get_coldkey(password=pw)
    signature = hotkey.sign(b"hello")
    return {
        "coldkey_ss58": coldkey.ss58_address,
        "coldkeypub_ss58": coldkeypub.ss58_address,
        "hotkey_ss58": hotkey.ss58_address,
        "hotkey_signature_of_hello": "0x" + bytes(signature).hex(),
    }


def cmd_verify(args) -> dict:
    from bittensor_wallet import Keypair

    sig = args.signature[2:] if args.signature.lower().startswith("0x") else args.signature
    try:
        sig_bytes = bytes.fromhex(sig)
    except ValueError:
        fail("--signature must be hex (0x-prefixed)", 2)
    try:
        keypair = Keypair(ss58_address=args.ss58)
    except Exception as e:  # noqa: BLE001
        fail(f"invalid --ss58: {e}", 2)
    if len(sig_bytes) != 64:
        return {"valid": False}
    try:
        # bytes, not str: a str message starting with "0x" would be hex-decoded by the SDK
        valid = bool(keypair.verify(args.message.encode(), sig_bytes))
    except Exception:  # noqa: BLE001  (e.g. a malformed signature point)
        valid = False
    return {"valid": valid}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("create", "load"):
        p = sub.add_parser(name)
        p.add_argument("--path", required=True)
        p.add_argument("--name", required=True)
        p.add_argument("--hotkey", required=True)
        if name == "create":
            p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("verify")
    p.add_argument("--ss58", required=True)
    p.add_argument("--message", required=True)
    p.add_argument("--signature", required=True)
    args = parser.parse_args()

    handler = {"create": cmd_create, "load": cmd_load, "verify": cmd_verify}[args.cmd]
    try:
        result = handler(args)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001  (KeyFileError, wrong password, bad keyfile, ...)
        fail(f"{args.cmd}: {type(e).__name__}: {e}")
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
