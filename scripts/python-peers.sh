#!/usr/bin/env bash
# Builds (once) and caches the pinned Python virtual environments that hold the real
# bittensor SDK, used as the peer in the interop tests and the benchmark.
#
#   scripts/python-peers.sh [DIR]     (default: target/python-peers)
#
# Creates DIR/bt9.0.0 and DIR/bt10.5.0 from the freeze files kept with the HTTP fixtures, and
# DIR/wandb0.19.0 (the wandb SDK SN27 pins) from the one kept with the wandb fixtures.
# A venv is reused when its stamp matches the freeze file it was built from.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/target/python-peers}"
mkdir -p "$dir"
py="${PYTHON:-python3}"

build() {
  local name="$1" freeze="$2" module="${3:-bittensor}"
  local venv="$dir/$name"
  local stamp="$venv/.nicompute-stamp"
  local want
  want="$(sha256sum "$freeze" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$venv/bin/python" -c "import $module" >/dev/null 2>&1; then
    echo "python peer $name: cached at $venv" >&2
    return
  fi
  echo "python peer $name: building venv at $venv (about a minute)..." >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$freeze"
  "$venv/bin/python" -c "import $module" >/dev/null
  echo "$want" >"$stamp"
  echo "python peer $name: ready" >&2
}

build bt9.0.0 "$root/tests/fixtures/http/requirements-bt9.0.0.freeze.txt"
build bt10.5.0 "$root/tests/fixtures/http/requirements-bt10.5.0.freeze.txt"
build wandb0.19.0 "$root/tests/fixtures/wandb/requirements-wandb0.19.0.freeze.txt" wandb
