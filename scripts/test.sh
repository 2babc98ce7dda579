#!/usr/bin/env bash
# The full test suite: what CI runs and what a developer runs before pushing.
#
#   scripts/test.sh
#
# Builds (once, cached under target/) the Python venvs holding the real bittensor SDK (9.0.0 and
# 10.5.0) and wandb (0.19.0) used as interop peers, then: format check, clippy with warnings denied,
# and every test (unit, golden, property/fuzz, live interop with the real SDK, Docker end to
# end, and the chain writes against the real Subtensor runtime under chopsticks). Starts a Docker
# daemon if none answers (installing docker.io where missing), builds the miner's SSH image
# without a registry, installs chopsticks from its lockfile (scripts/chain-runtime.sh), and
# Debian's chromium with playwright-core for the dashboard's browser test (scripts/browser-up.sh).
# Interop, Docker, real-runtime and browser tests must run here, never skip:
# NICOMPUTE_REQUIRE_PEERS=1, NICOMPUTE_REQUIRE_DOCKER=1, NICOMPUTE_REQUIRE_RUNTIME=1 and
# NICOMPUTE_REQUIRE_BROWSER=1 turn a missing one into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "Python peers (real bittensor SDK 9.0.0 and 10.5.0, wandb 0.19.0)"
scripts/python-peers.sh

step "Docker daemon, SSH client tools and the miner's base image"
scripts/docker-up.sh
scripts/build-ssh-image.sh

step "The real Subtensor runtime (chopsticks, from tools/chain-runtime/package-lock.json)"
scripts/chain-runtime.sh install

step "The browser for the dashboard's tests (Debian's chromium, playwright-core from tests/browser/package-lock.json)"
scripts/browser-up.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
export NICOMPUTE_REQUIRE_PEERS=1 NICOMPUTE_REQUIRE_DOCKER=1 NICOMPUTE_REQUIRE_RUNTIME=1 NICOMPUTE_REQUIRE_BROWSER=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  # Without nextest's test groups, one thread keeps the Docker (and real-runtime) tests from overlapping.
  cargo test --workspace --locked --no-fail-fast -- --test-threads=1
fi
cargo test --workspace --locked --doc
