#!/usr/bin/env bash
# The real Subtensor runtime on this machine, for tests and for trying nicompute's chain writes.
#
#   scripts/chain-runtime.sh install                 # chopsticks from the project's lockfile (npm ci)
#   scripts/chain-runtime.sh [start] [--port 9944] [--block-mode Instant|Batch|Manual] [--fund SS58]…
#
# `install` puts @acala-network/chopsticks (pinned in tools/chain-runtime/package-lock.json) into
# tools/chain-runtime/node_modules (git-ignored); it does nothing when that install is current.
# `start` (the default) installs if needed, then runs chopsticks in the foreground on 127.0.0.1
# with the project's copy of the RAO runtime's chain spec (tests/fixtures/chain/raonet.json: the
# real compiled Subtensor runtime, spec 218), a timestamp aligned to the 12 s slot (the runtime
# refuses to build blocks otherwise), and funds the dev accounts //Alice … //Ferdie with
# 1,000,000 TAO each through chopsticks' dev_setStorage (a development shortcut; there is no
# faucet on a real chain), and every `--fund` address likewise (your own coldkey). //Alice is also
# made the Sudo key. Ctrl-C stops it.
#
# Then, for example:
#   nicompute --subtensor.chain_endpoint ws://127.0.0.1:9944 --netuid 1 wallet balance --ss58 5Grw…
#
# Needs Node.js 20 or later (chopsticks asks for 22 and works on 20 with an engine warning) and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tools/chain-runtime
entry=$dir/node_modules/@acala-network/chopsticks/chopsticks.cjs
stamp=$dir/node_modules/.installed-lock-sha256

need_node() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "chain-runtime: Node.js and npm are needed (Node 20 or later); install them first (e.g. apt-get install nodejs npm)" >&2
    exit 1
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if (( major < 20 )); then
    echo "chain-runtime: Node.js $(node --version) is too old; chopsticks needs 20 or later" >&2
    exit 1
  fi
}

install() {
  need_node
  local want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [[ -f $entry && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return 0
  fi
  echo "chain-runtime: installing chopsticks from $dir/package-lock.json (npm ci)" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" >"$stamp"
}

start() {
  local port=9944 mode=Instant fund=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --port) port="$2"; shift 2 ;;
      --block-mode) mode="$2"; shift 2 ;;
      --fund) fund+=("$2"); shift 2 ;;
      *) echo "chain-runtime: unknown option $1 (use --port N, --block-mode Instant|Batch|Manual, --fund SS58)" >&2; exit 2 ;;
    esac
  done
  install
  local ts=$(( $(date +%s) * 1000 / 12000 * 12000 ))
  echo "chain-runtime: starting the RAO runtime (spec 218) on ws://127.0.0.1:$port, block mode $mode" >&2
  node "$entry" --genesis tests/fixtures/chain/raonet.json --host 127.0.0.1 --port "$port" \
    --build-block-mode "$mode" --timestamp "$ts" &
  local pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
  # Fund the dev accounts once the RPC answers (Node's own fetch: no curl needed).
  node - "$port" "${fund[@]}" <<'EOF'
const port = process.argv[2];
const extra = process.argv.slice(3);
const dev = {
  Alice: "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
  Bob: "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",
  Charlie: "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y",
  Dave: "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy",
  Eve: "5HGjWAeFDfFCWPsjFQdVV2Msvz2XtMktvgocEZcCj68kUMaw",
  Ferdie: "5CiPPseXPECbkjWCa6MnjNokrgYjMqmKndv2rSnekmSK2DjL",
};
const call = async (method, params) => {
  const r = await fetch(`http://127.0.0.1:${port}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const j = await r.json();
  if (j.error) throw new Error(`${method}: ${j.error.message}`);
  return j.result;
};
(async () => {
  for (let i = 0; ; i++) {
    try { await call("system_chain", []); break; } catch (e) {
      if (i > 600) { console.error("chain-runtime: the RPC did not come up"); process.exit(1); }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const account = [...Object.values(dev), ...extra].map((a) => [[a], { providers: 1, data: { free: "1000000000000000" } }]);
  await call("dev_setStorage", [{ System: { Account: account }, Sudo: { Key: dev.Alice } }]);
  await call("dev_newBlock", []);
  console.error(`chain-runtime: ready on ws://127.0.0.1:${port}; funded 1,000,000 TAO each: ` +
    [...Object.entries(dev).map(([n, a]) => `//${n} ${a}`), ...extra].join(", "));
})().catch((e) => { console.error(`chain-runtime: ${e.message}`); process.exit(1); });
EOF
  wait $pid
}

case "${1:-start}" in
  install) install ;;
  start) shift || true; start "$@" ;;
  --*) start "$@" ;;
  *) echo "usage: scripts/chain-runtime.sh [install | start [--port N] [--block-mode Instant|Batch|Manual]]" >&2; exit 2 ;;
esac
