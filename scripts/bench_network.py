#!/usr/bin/env python3
"""`scripts/bench.sh network`: how the devnet's figures grow with its size (issue 18).

For each size N (NETWORK_SIZES, default "32 64 128 256"): `nicompute devnet up --miners N
--runtime local` from nothing (embedded chain), timed from exec to exit; then, from /proc, the
resident memory (VmRSS) and open file descriptors of every devnet process (the chain and the N
miner processes); cold `list_r` over the network (median of 10 runs); a quarter of the miners is
then made faulty, half of them dead (SIGKILL: the port refuses) and half black holes (SIGSTOP: the
kernel still accepts the connection, nobody answers; with NETWORK_PER_PROCESS=K above 1, `devnet up
--miners-per-process K` and a quarter of the processes, all their members at once), and we time `sync --timeout 2s` from exec
to exit (its excess over the deadline is the figure, median of 3) and `a --gpu_type h100 --gpu_size 80` (RUNS runs, each released
with `d`). The stopped miners are resumed and the devnet taken down at the end, whatever happens.
Prints one line per size and a Markdown table.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.abspath("target/release/nicompute")
SIZES = [int(n) for n in os.environ.get("NETWORK_SIZES", "32 64 128 256").split()]
# Miners per process (`devnet up --miners-per-process`): 1, each its own process, is the default.
PER_PROCESS = int(os.environ.get("NETWORK_PER_PROCESS", "1"))
RUNS = int(os.environ.get("RUNS", "10"))
SYNC_TIMEOUT = 2.0
SYNC_RUNS = 3


def cli(config, *args, check=True):
    t = time.monotonic()
    p = subprocess.run([BIN, "--config", config, *args], capture_output=True, text=True)
    took = time.monotonic() - t
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {p.stdout[-2000:]} {p.stderr[-2000:]}")
    return p, took


def proc_figures(pids):
    """Sum of VmRSS (counts the binary's shared text once per process), sum of PSS (each shared
    page divided among its sharers: the memory the processes really take), open fds."""
    rss_kb, pss_kb, fds = 0, 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss_kb += int(line.split()[1])
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss_kb += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except FileNotFoundError:
            pass
    return rss_kb, pss_kb, fds


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def one(n):
    home = tempfile.mkdtemp(prefix="nicompute-bench-network-")
    d = os.path.join(home, "devnet")
    env = dict(os.environ, HOME=home)
    stopped = []
    try:
        t = time.monotonic()
        p = subprocess.run(
            [BIN, "devnet", "up", "--dir", d, "--runtime", "local", "--miners", str(n),
             "--miners-per-process", str(PER_PROCESS), "--json"],
            capture_output=True, text=True, env=env,
        )
        up = time.monotonic() - t
        if p.returncode != 0:
            raise RuntimeError(f"devnet up --miners {n} failed: {p.stdout[-3000:]} {p.stderr[-3000:]}")
        doc = json.loads(p.stdout)
        status = doc  # `up` flattens the status document into its own
        assert status["healthy"], "devnet not healthy"
        config = status["config"]
        pids = [m["pid"] for m in status["miners"] if m.get("pid")]
        chain = status["chain_process"]["pid"]
        assert len(pids) == n, f"{len(pids)} miner pids for {n} miners"
        # The miner processes, each once (a group's members share one).
        miners = list(dict.fromkeys(pids))
        rss_miners, pss_miners, fds_miners = proc_figures(miners)
        rss_chain, _, fds_chain = proc_figures([chain])

        list_r = []
        for _ in range(3):
            cli(config, "list_r")
        for _ in range(10):
            list_r.append(cli(config, "list_r")[1])

        # A quarter of the miners faulty: dead and black holes, spread over the network (with
        # groups, a quarter of the processes, all their members at once).
        faulty = miners[1::4][: max(1, len(miners) // 4)]
        faulty_miners = sum(pids.count(p) for p in faulty)
        for i, pid in enumerate(faulty):
            if i % 2:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            else:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        syncs = [cli(config, "sync", "--timeout", f"{SYNC_TIMEOUT}s", "--json")[1] for _ in range(SYNC_RUNS)]
        sync = statistics.median(syncs)

        a = []
        for _ in range(RUNS):
            p, took = cli(config, "a", "--gpu_type", "h100", "--gpu_size", "80", "--no-ssh-key", "--json")
            a.append(took)
            hotkey = json.loads(p.stdout)["hotkey"]
            cli(config, "d", hotkey, "-y", "--json")
        return {
            "miners": n,
            "up_s": up,
            "rss_miners_mb": rss_miners / 1024,
            "rss_per_miner_mb": rss_miners / 1024 / len(miners),
            "pss_miners_mb": pss_miners / 1024,
            "rss_chain_mb": rss_chain / 1024,
            "fds": fds_miners + fds_chain,
            "list_r_ms": statistics.median(list_r) * 1000,
            "sync_excess_ms": (sync - SYNC_TIMEOUT) * 1000,
            "faulty": faulty_miners,
            "processes": len(miners),
            "a_p50_ms": statistics.median(a) * 1000,
            "a_p90_ms": pct(a, 0.9) * 1000,
        }
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        subprocess.run([BIN, "devnet", "down", "--dir", d, "--delete"], capture_output=True, env=env)
        shutil.rmtree(home, ignore_errors=True)


def main():
    rows = []
    for n in SIZES:
        r = one(n)
        rows.append(r)
        print(
            f"network of {n} miners in {r['processes']} processes: devnet up {r['up_s']:.1f} s; RSS miners {r['rss_miners_mb']:.0f} MB "
            f"({r['rss_per_miner_mb']:.1f} MB per process; PSS {r['pss_miners_mb']:.0f} MB), chain {r['rss_chain_mb']:.0f} MB; {r['fds']} fds; "
            f"list_r {r['list_r_ms']:.1f} ms; sync with {r['faulty']} dead/black-holed: deadline "
            f"+{r['sync_excess_ms']:.0f} ms; a p50 {r['a_p50_ms']:.0f} ms, p90 {r['a_p90_ms']:.0f} ms",
            flush=True,
        )
    print()
    print(f"miners per process: {PER_PROCESS}")
    print("| miners | devnet up | RSS, all miners (per process) | PSS, all miners | chain RSS | fds | list_r cold | sync, 25% faulty: deadline + | a p50 / p90 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['miners']} | {r['up_s']:.1f} s | {r['rss_miners_mb']:.0f} MB ({r['rss_per_miner_mb']:.1f} MB) | "
            f"{r['pss_miners_mb']:.0f} MB | {r['rss_chain_mb']:.0f} MB | {r['fds']} | {r['list_r_ms']:.1f} ms | {r['sync_excess_ms']:.0f} ms | "
            f"{r['a_p50_ms']:.0f} / {r['a_p90_ms']:.0f} ms |"
        )
    print("targets at 256: devnet up < 60 s, all miners < 4 GB RSS, sync deadline + < 100 ms, a p50 < 300 ms")


if __name__ == "__main__":
    sys.exit(main())
