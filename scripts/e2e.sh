#!/usr/bin/env bash
# Runs Herald's browser tests (e2e/) from a fresh Debian machine: Chromium comes from Debian's packages and
# playwright-core from npm (the lock file pins it); no browser is ever downloaded. Then it builds the server and
# runs the tests, which write their screenshot to test-output/.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "e2e: need root to run: $*" >&2
    exit 1
  fi
}

if [ ! -x /usr/bin/chromium ]; then
  echo "e2e: installing Debian's chromium"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

if ! command -v openssl >/dev/null; then
  echo "e2e: installing openssl (the HTTPS tests make their CA with it)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "e2e: installing node and npm"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
fi

echo "e2e: installing playwright-core"
(cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

echo "e2e: building the server"
cargo build -p herald

mkdir -p test-output
echo "e2e: running the browser tests"
cd e2e
# One file at a time: every test file starts its own servers and browser, and the machine has two cores.
node --test --test-concurrency=1 ./*.test.mjs
