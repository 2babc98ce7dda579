#!/usr/bin/env bash
# Benchmarks (figures for the issues' targets), beside the Python reference. Not a test.
#
#   scripts/bench.sh [all|axon|decode|chain|miner] [options of that benchmark]
#
# axon:   64 requests in flight, each freshly signed, server pinned to CPU 0 and the load
#         generator to CPU 1, 3 s warm-up + 20 s measured, against our axon and the real Python
#         9.0.0 and 10.5.0 axons; then the single-request round trip and `wallet show` cold start.
# decode: SCALE decoding of a real 1024-neuron finney metagraph (fixture 01).
# chain:  a 256-neuron metagraph from the devnet chain, new connection each time (WS and HTTP).
# miner:  the real `nicompute miner run` (Docker runtime; --runtime local) on a devnet: idle RSS,
#         then 10 allocate → SSH login → deallocate cycles (--allocations N), p50/p90/max.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
[[ $# -gt 0 ]] && shift
cargo build --release --locked -p nicompute -p nicompute-bench
bench=target/release/nicompute-bench
case "$what" in
  axon) scripts/python-peers.sh && exec "$bench" axon "$@" ;;
  decode) exec "$bench" decode "$@" ;;
  chain) exec "$bench" chain "$@" ;;
  miner) exec "$bench" miner "$@" ;;
  renter) scripts/python-peers.sh && exec "$bench" renter "$@" ;;
  all)
    scripts/python-peers.sh
    "$bench" decode
    "$bench" chain
    "$bench" miner
    "$bench" renter
    "$bench" axon
    ;;
  *) echo "usage: scripts/bench.sh [all|axon|decode|chain|miner|renter] [options]" >&2; exit 2 ;;
esac
