#!/usr/bin/env python3
"""Self-test of the peer scripts against each other (Python <-> Python, no Rust involved).

    python3 tests/peers/selftest.py [VENV_DIR]      (default: target/python-peers)

For every (axon venv, dendrite venv) pair among bt9.0.0 / bt10.5.0 it starts axon.py, runs
dendrite.py with the interop cases and checks the outcome; then it round-trips wallet.py
create/load/verify in each venv (and loads each wallet with the other venv, reporting only).
Needs only the Python standard library in the interpreter running it; the SDK venvs are built by
scripts/python-peers.sh. Exit status 0 when every check passed.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.environ.get("NICOMPUTE_SHARED_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
VERSIONS = ("bt9.0.0", "bt10.5.0")

failures = []


def check(cond: bool, what: str) -> None:
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def load_keys() -> dict:
    for path in (os.path.join(ROOT, "tests/fixtures/http/keys.json"), os.path.join(FIXTURES, "http/keys.json")):
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    sys.exit("keys.json not found")


def read_fixture(rel: str) -> str:
    for base in (os.path.join(ROOT, "tests/fixtures"), FIXTURES):
        path = os.path.join(base, rel)
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
    sys.exit(f"fixture {rel} not found")


def rsa_decrypt(py: str, private_pem: str, b64: str) -> dict:
    code = (
        "import sys,json,base64\n"
        "from cryptography.hazmat.primitives import hashes, serialization\n"
        "from cryptography.hazmat.primitives.asymmetric import padding\n"
        "d=json.load(sys.stdin)\n"
        "k=serialization.load_pem_private_key(d['pem'].encode(), password=None)\n"
        "p=k.decrypt(base64.b64decode(d['b64']), padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),"
        " algorithm=hashes.SHA256(), label=None))\n"
        "print(p.decode())\n"
    )
    out = subprocess.run([py, "-c", code], input=json.dumps({"pem": private_pem, "b64": b64}),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def cross(venvs: str, axon_v: str, dend_v: str, keys: dict) -> None:
    tag = f"[axon {axon_v} <- dendrite {dend_v}]"
    axon_py = os.path.join(venvs, axon_v, "bin/python")
    dend_py = os.path.join(venvs, dend_v, "bin/python")
    axon = subprocess.Popen(
        [axon_py, os.path.join(HERE, "axon.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        axon.stdin.write(json.dumps({
            "hotkey_mnemonic": keys["axon_hotkey"]["mnemonic"],
            "port": 0,
            "denied_hotkeys": [keys["denied_hotkey"]["ss58"]],
        }) + "\n")
        axon.stdin.flush()
        line = axon.stdout.readline()
        check(line.startswith("READY "), f"{tag} axon prints READY <port> (got {line!r})")
        if not line.startswith("READY "):
            return
        port = int(line.split()[1])
        target = {"ip": "127.0.0.1", "port": port, "hotkey": keys["axon_hotkey"]["ss58"]}
        public_pem = read_fixture("rsa/public.pem")
        calls = [
            {"synapse": "Allocate", "fields": {"timeline": 90, "checking": True}, "timeout": 12},
            {"synapse": "Allocate", "fields": {"timeline": 90, "checking": False, "public_key": public_pem},
             "timeout": 12},
            {"synapse": "Allocate", "fields": {"timeline": 0, "checking": False}, "timeout": 12},
            {"synapse": "Specs", "fields": {"specs_input": ""}, "timeout": 12},
            {"synapse": "Specs", "fields": {"specs_input": "sleep:3"}, "timeout": 1},
            {"synapse": "Unknown", "fields": {}, "timeout": 12},
            {"synapse": "Specs", "fields": {}, "timeout": 12, "replay": True},
        ]
        doc = {"hotkey_mnemonic": keys["dendrite_hotkey"]["mnemonic"], "axon": target, "calls": calls}
        res = run_dendrite(dend_py, doc)
        r = res["results"]
        check(r[0]["status_code"] == 200 and r[0]["is_success"] and r[0]["deserialized"] == {"status": True, "port": 4444},
              f"{tag} Allocate check -> 200 {r[0]['deserialized']}")
        check(r[0]["synapse"]["timeline"] == 90, f"{tag} Allocate echo keeps timeline")
        ok = r[1]["status_code"] == 200 and r[1]["deserialized"].get("status") is True
        plain = rsa_decrypt(dend_py, read_fixture("rsa/private.pem"), r[1]["deserialized"]["info"]) if ok else None
        check(ok and plain == {"username": "root", "password": "peer-pass", "port": 4444, "version": "peer"},
              f"{tag} Allocate with RSA key -> 200, info decrypts to {plain}")
        check(r[2]["status_code"] == 200 and r[2]["deserialized"] == {"status": True}, f"{tag} deallocate -> 200")
        specs = json.loads(r[3]["deserialized"]) if r[3]["status_code"] == 200 else None
        check(specs is not None and specs["peer"] == "python" and specs["bittensor"] == axon_v[2:],
              f"{tag} Specs -> 200 {specs}")
        check(r[4]["status_code"] == 408 and not r[4]["is_success"], f"{tag} Specs sleep:3 timeout 1 -> {r[4]['status_code']} {r[4]['status_message']}")
        check(r[5]["status_code"] == 404, f"{tag} Unknown -> {r[5]['status_code']} {r[5]['status_message']}")
        check(r[6]["first_status"] == 200 and r[6]["second_status"] == 401,
              f"{tag} replay -> {r[6]['first_status']}, {r[6]['second_status']} {r[6]['second_message']!r}")

        denied = run_dendrite(dend_py, {"hotkey_mnemonic": keys["denied_hotkey"]["mnemonic"], "axon": target,
                                        "calls": [{"synapse": "Specs", "fields": {}, "timeout": 12}]})["results"][0]
        check(denied["status_code"] == 403, f"{tag} denied hotkey -> {denied['status_code']} {denied['status_message']}")
        wrong = dict(target, hotkey=keys["denied_hotkey"]["ss58"])
        wr = run_dendrite(dend_py, {"hotkey_mnemonic": keys["dendrite_hotkey"]["mnemonic"], "axon": wrong,
                                    "calls": [{"synapse": "Allocate", "fields": {}, "timeout": 12}]})["results"][0]
        check(wr["status_code"] == 401, f"{tag} wrong axon hotkey -> {wr['status_code']} {wr['status_message']}")
    finally:
        axon.stdin.close()  # EOF => clean exit
        try:
            rc = axon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            axon.kill()
            rc = None
        rest = axon.stdout.read()
        check(rc == 0 and rest == "", f"{tag} axon exits 0 on stdin EOF with nothing more on stdout (rc={rc}, rest={rest!r})")


def run_dendrite(py: str, doc: dict) -> dict:
    out = subprocess.run([py, os.path.join(HERE, "dendrite.py")], input=json.dumps(doc),
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        raise RuntimeError(f"dendrite.py exited {out.returncode}")
    return json.loads(out.stdout)


def wallet_cmd(py: str, *args: str, env: dict) -> dict:
    out = subprocess.run([py, os.path.join(HERE, "wallet.py"), *args], capture_output=True, text=True,
                         env=env, stdin=subprocess.DEVNULL, timeout=120)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"}
    return json.loads(out.stdout)


def wallets(venvs: str) -> None:
    env = dict(os.environ, NICOMPUTE_TEST_PASSWORD="peer-test-password")
    with tempfile.TemporaryDirectory() as tmp:
        made = {}
        for v in VERSIONS:
            py = os.path.join(venvs, v, "bin/python")
            created = wallet_cmd(py, "create", "--path", tmp, "--name", f"w{v}", "--hotkey", "hk", env=env)
            check("coldkey_ss58" in created, f"[wallet {v}] create -> {created}")
            loaded = wallet_cmd(py, "load", "--path", tmp, "--name", f"w{v}", "--hotkey", "hk", env=env)
            check(loaded.get("coldkey_ss58") == created.get("coldkey_ss58") == loaded.get("coldkeypub_ss58")
                  and loaded.get("hotkey_ss58") == created.get("hotkey_ss58"), f"[wallet {v}] load round trip")
            bad = wallet_cmd(py, "load", "--path", tmp, "--name", f"w{v}", "--hotkey", "hk",
                             env=dict(env, NICOMPUTE_TEST_PASSWORD="wrong"))
            check("error" in bad, f"[wallet {v}] wrong password fails: {bad}")
            made[v] = loaded
        for v in VERSIONS:
            py = os.path.join(venvs, v, "bin/python")
            for src, loaded in made.items():
                sig = loaded.get("hotkey_signature_of_hello")
                if not sig:
                    continue
                good = wallet_cmd(py, "verify", "--ss58", loaded["hotkey_ss58"], "--message", "hello",
                                  "--signature", sig, env=env)
                check(good == {"valid": True}, f"[wallet {v}] verifies {src}'s signature")
                other = wallet_cmd(py, "verify", "--ss58", loaded["coldkey_ss58"], "--message", "hello",
                                   "--signature", sig, env=env)
                check(other == {"valid": False}, f"[wallet {v}] rejects it under another key")
                if src != v:  # informational: keyfile format compatibility across bittensor-wallet versions
                    x = wallet_cmd(py, "load", "--path", tmp, "--name", f"w{src}", "--hotkey", "hk", env=env)
                    print(f"info [wallet {v}] loading the {src} wallet: {x if 'error' in x else 'ok'}")


def main() -> int:
    venvs = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/python-peers")
    keys = load_keys()
    for axon_v in VERSIONS:
        for dend_v in VERSIONS:
            cross(venvs, axon_v, dend_v, keys)
    wallets(venvs)
    print(f"\n{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
