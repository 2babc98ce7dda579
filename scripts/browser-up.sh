#!/usr/bin/env bash
# The browser the dashboard's tests and the web benchmark drive: Debian's chromium (apt-get,
# where missing) and playwright-core from tests/browser/package-lock.json (npm ci into
# tests/browser/node_modules, git-ignored; nothing is downloaded at test time, and playwright
# never fetches a browser of its own: the scripts launch /usr/bin/chromium).
#
#   scripts/browser-up.sh
#
# Does nothing when both are there and the install matches the lockfile. Needs Node.js 20 or
# later and npm (.ci/run installs them), and root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/browser
stamp=$dir/node_modules/.installed-lock-sha256

if [[ ! -x /usr/bin/chromium ]]; then
  echo "browser-up: installing Debian's chromium" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "browser-up: Node.js and npm are needed (Node 20 or later); install them first (e.g. apt-get install nodejs npm)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if (( major < 20 )); then
  echo "browser-up: Node.js $(node --version) is too old; playwright-core needs 20 or later" >&2
  exit 1
fi

want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
if [[ ! -f $dir/node_modules/playwright-core/package.json || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "browser-up: installing playwright-core from $dir/package-lock.json (npm ci)" >&2
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" >"$stamp"
fi
echo "browser-up: $(/usr/bin/chromium --version 2>/dev/null | head -1), playwright-core $(node -p "require('./$dir/node_modules/playwright-core/package.json').version")" >&2
