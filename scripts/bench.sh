#!/usr/bin/env bash
# Benchmarks (figures for the issues' targets), beside the Python reference. Not a test.
#
#   scripts/bench.sh [nicompute-bench axon options, e.g. --duration 20]
#
# Axon throughput: 64 requests in flight, each freshly signed, server pinned to CPU 0 and the
# load generator to CPU 1, 3 s warm-up + 20 s measured, against our axon and the real Python
# 9.0.0 and 10.5.0 axons; then the single-request round trip and `wallet show` cold start.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/python-peers.sh
cargo build --release --locked -p nicompute -p nicompute-bench
exec target/release/nicompute-bench axon "$@"
