#!/usr/bin/env bash
# Herald's whole test suite, from a fresh clone: Rust unit, property and integration tests (real servers on
# loopback), the browser client's unit tests in Node, and the browser tests in Debian's Chromium.
# Installs what it needs itself (Chromium and playwright-core, through scripts/e2e.sh; the Pusher clients and SDKs,
# through scripts/pusher-compat.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace)"
cargo test --workspace --all-targets

echo "== herald.js unit tests (node)"
node --test clients/js/test/

echo "== the official Pusher clients against Herald (node, python)"
scripts/pusher-compat.sh

echo "== browser tests (chromium)"
scripts/e2e.sh
