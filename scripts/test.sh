#!/usr/bin/env bash
# Herald's whole test suite, from a fresh clone: Rust unit, property and integration tests (real servers on
# loopback), the Debian package built, installed, checked and purged (as root), the browser client's unit tests in
# Node, and the browser tests in Debian's Chromium. Installs what it needs itself (pebble for the ACME test;
# cargo-deb through scripts/package.sh; Chromium and playwright-core through scripts/e2e.sh; the Pusher clients
# and SDKs through scripts/pusher-compat.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "test: need root to run: $*" >&2
    exit 1
  fi
}

# tests/acme.rs has Debian's ACME test server issue Herald's certificate on loopback.
if ! command -v pebble >/dev/null || ! command -v pebble-challtestsrv >/dev/null; then
  echo "== installing Debian's pebble (ACME test server)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pebble
fi
export HERALD_TEST_PEBBLE=1

echo "== cargo test (workspace)"
cargo test --workspace --all-targets

echo "== Debian package (dpkg, systemd-analyze)"
scripts/test-package.sh

echo "== herald.js unit tests (node)"
node --test clients/js/test/

echo "== the official Pusher clients against Herald (node, python)"
scripts/pusher-compat.sh

echo "== browser tests (chromium)"
scripts/e2e.sh
