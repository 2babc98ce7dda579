#!/usr/bin/env bash
# Benchmarks (figures for the issues' targets), beside the Python reference. Not a test.
#
#   scripts/bench.sh [all|api|auth|axon|decode|keygen|chain|chainwrite|devnet|devnetup|miner|network|renter|demo|wandb|web] [options of that benchmark]
#   (devnetup and demo: RUNS=N runs per configuration instead of 3 and 5)
#
# axon:   64 requests in flight, each freshly signed, server pinned to CPU 0 and the load
#         generator to CPU 1, 3 s warm-up + 20 s measured, against our axon and the real Python
#         9.0.0 and 10.5.0 axons; then the guard: the same load while each attack runs (slow
#         body, 1,100 partial bodies, 1 MB bodies, uuid flood, far-future nonces, 100 KB
#         headers; from another process, on CPUs 2-3 where the machine has them, else on CPU 1)
#         against our axon (miner configuration) and Python 10.5.0, each beside its clean
#         figure, with the server's peak RSS; the sr25519 verification ceiling on CPU 0; the
#         single-request round trip and `wallet show` cold start. --attacks KIND,… or
#         --no-attacks to choose; --duration/--warmup to shorten.
# auth:   nicompute's signed allocations (docs/signed-allocations.md): one request signed and
#         verified and its answer signed and verified (sr25519, canonical JSON), per allocation.
# keygen: the renter's RSA-2048 allocation key, candidates side by side with runs interleaved
#         (`rsa` serial, `rsa` p and q on two threads, AWS-LC, AWS-LC first of two as `a` does
#         it, and that race in a new process, exec to exit, as a one-shot `a` pays it; --openssl
#         adds `openssl genrsa 2048`), p50/p90/max/mean over --iterations (60).
# decode: SCALE decoding of a real 1024-neuron finney metagraph (fixture 01).
# chain:  a 256-neuron metagraph from the devnet chain, new connection each time (WS and HTTP).
# chainwrite: on the real Subtensor runtime (chopsticks, Instant blocks): `nicompute subnet register`
#         and `axon set` end to end, one process and one fresh wallet each, with the chain's own
#         block time apart; the Python SDK 9.0.0's burned_register and serve_axon on the same chain;
#         and the cold start of `nicompute wallet balance` against the RPC calls it makes.
# miner:  the real `nicompute miner run` (Docker runtime; --runtime local) on a devnet: idle RSS,
#         then 10 allocate → SSH login → deallocate cycles (--allocations N), p50/p90/max, once
#         with --warm-containers 0 and once with 1 (--warm-containers 1 for one run).
# wandb:  SN27's shared allocation state read from a local endpoint serving 100 signed validator
#         runs (2 pages of 50, 256 UIDs of stats each): shared_state end to end, p50/p90/max.
# api:    `nicompute serve`: GET /v1/resources over 1,024 miners (server on CPU 0, load on CPU 1,
#         32 connections, 10 s), an allocation through the API vs `nicompute a` (devnet, one local
#         miner, 10 runs each), webhook latency from the event's request to the receiver.
# devnet: the embedded devnet chain: submission to inclusion of a signed extrinsic (12 s block
#         time), and the real Python SDK's burned_register there (10.5.0, 9.0.0) beside 9.0.0's on
#         the real runtime (chopsticks, Batch blocks).
# devnetup: `nicompute devnet up --miners 4 --runtime local` from nothing, 3 runs per chain: the
#         embedded chain, and the real runtime with chopsticks' batch and instant block modes: wall
#         time of `up` (processes started, network set up, first sync) and its set-up by extrinsics.
# web:    the dashboard in Debian's chromium (headless, playwright-core; scripts/browser-up.sh) over
#         1,024 miners: first render of the Machines page from the navigation's start to the rows
#         painted (performance marks), cold cache and on reload (--runs N each), 1,000 rows per
#         page, and the page's files as they crossed the wire (gzip).
# network: how the devnet grows from 32 to 256 miners (NETWORK_SIZES="32 64 128 256", RUNS=10 `a`
#         runs each; scripts/bench_network.py): `devnet up --miners N --runtime local` wall time,
#         RSS and open file descriptors of all its processes, cold `list_r`, then with a quarter of
#         the miners dead (SIGKILL) or black holes (SIGSTOP): `sync --timeout 2s` beyond its
#         deadline, and `a` p50/p90. One process per miner; NETWORK_PER_PROCESS=K runs K miners
#         per process (`devnet up --miners-per-process K`) and makes a quarter of the processes
#         faulty.
# demo:   `nicompute devnet demo` end to end, 5 runs per chain (embedded; the real runtime when
#         chopsticks is installed) and runtime (local; Docker when it answers and has the image):
#         median and max of the demo's own total, and wall time per step.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
[[ $# -gt 0 ]] && shift
cargo build --release --locked -p nicompute -p nicompute-bench
bench=target/release/nicompute-bench
case "$what" in
  axon) scripts/python-peers.sh && exec "$bench" axon "$@" ;;
  auth) exec "$bench" auth "$@" ;;
  keygen) exec "$bench" keygen "$@" ;;
  decode) exec "$bench" decode "$@" ;;
  chain) exec "$bench" chain "$@" ;;
  chainwrite) scripts/python-peers.sh && scripts/chain-runtime.sh install && exec "$bench" chainwrite "$@" ;;
  devnet) scripts/python-peers.sh && scripts/chain-runtime.sh install && exec "$bench" devnet "$@" ;;
  devnetup)
    scripts/chain-runtime.sh install
    for mode in embedded runtime/batch runtime/instant; do
      chain=${mode%%/*}
      args=(--chain "$chain")
      [[ $mode == runtime/* ]] && args+=(--block-mode "${mode#*/}")
      for _ in $(seq "${RUNS:-3}"); do
        dir=$(mktemp -d)
        start=$(date +%s.%N)
        target/release/nicompute devnet up --dir "$dir" --runtime local --miners 4 "${args[@]}" --json >"$dir.json" 2>/dev/null
        end=$(date +%s.%N)
        echo "$start $end $dir.json"
        target/release/nicompute devnet down --dir "$dir" --delete >/dev/null 2>&1
      done | python3 -c '
import json, os, statistics, sys
walls, setups = [], []
for line in sys.stdin:
    start, end, path = line.split()
    with open(path) as f:
        doc = json.load(f)
    os.remove(path)
    assert doc["healthy"], doc
    walls.append(float(end) - float(start))
    s = doc["setup"]
    setups.append(s["fund"] + s["register"] + s["stake"] + s["permit"])
print(f"devnet up --miners 4, {sys.argv[1]}: {len(walls)} runs, wall median {statistics.median(walls):.2f} s, max {max(walls):.2f} s; "
      f"of which the set-up by extrinsics median {statistics.median(setups):.2f} s")
' "$mode"
    done
    ;;
  miner) exec "$bench" miner "$@" ;;
  network) exec python3 scripts/bench_network.py ;;
  renter) scripts/python-peers.sh && exec "$bench" renter "$@" ;;
  wandb) exec "$bench" wandb "$@" ;;
  api) exec "$bench" api "$@" ;;
  web) scripts/browser-up.sh && exec "$bench" web "$@" ;;
  demo)
    scripts/chain-runtime.sh install || echo "demo/runtime: chopsticks could not be installed; the real runtime's demo will fail" >&2
    for chain in embedded runtime; do
    for runtime in local docker; do
      if [[ $runtime == docker ]] && ! docker image inspect nicompute/sshd:bookworm >/dev/null 2>&1; then
        echo "demo/$chain/docker: skipped (no Docker daemon with the nicompute/sshd:bookworm image)" >&2
        continue
      fi
      for _ in $(seq "${RUNS:-5}"); do
        target/release/nicompute devnet demo --runtime "$runtime" --chain "$chain" --json 2>/dev/null
      done | python3 -c '
import json, statistics, sys
dec, text, runs = json.JSONDecoder(), sys.stdin.read(), []
i = 0
while i < len(text):
    if text[i].isspace():
        i += 1
        continue
    doc, i = dec.raw_decode(text, i)
    runs.append(doc)
ok = all(r["ok"] for r in runs)
secs = sorted(r["seconds"] for r in runs)
steps = {}
for r in runs:
    for s in r["steps"]:
        words, name, skip = s["command"].split(), [], False
        for w in words:
            if skip:
                skip = False
            elif w in ("--config", "--dir"):
                skip = True
            elif w == "--":
                name.append("-- …")
                break
            else:
                name.append("HOTKEY" if len(w) == 48 and w.startswith("5") else w)
        steps.setdefault(" ".join(name), []).append(s["seconds"])
print(f"demo/{sys.argv[1]}: {len(runs)} runs, all ok: {ok}; total median {statistics.median(secs):.2f} s, max {secs[-1]:.2f} s")
for name, v in steps.items():
    print(f"  {name[:60]:<60} median {statistics.median(v)*1000:7.0f} ms")
' "$chain/$runtime"
    done
    done
    ;;
  all)
    scripts/python-peers.sh
    "$bench" decode
    "$bench" auth
    "$bench" chain
    "$bench" miner
    "$bench" renter
    "$bench" axon
    "$bench" wandb
    "$bench" api
    scripts/browser-up.sh
    "$bench" web
    scripts/chain-runtime.sh install
    "$bench" chainwrite
    "$bench" devnet
    ;;
  *) echo "usage: scripts/bench.sh [all|api|auth|axon|decode|chain|chainwrite|devnet|devnetup|miner|network|renter|demo|wandb|web] [options]" >&2; exit 2 ;;
esac
