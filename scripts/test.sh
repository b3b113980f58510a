#!/usr/bin/env bash
# Herald's whole test suite, from a fresh clone: Rust unit, property and integration tests (real servers on
# loopback), the Debian package built, installed, checked and purged (as root), the browser client's unit tests in
# Node, and the browser tests in Debian's Chromium. Installs what it needs itself (cargo-deb through
# scripts/package.sh; Chromium and playwright-core through scripts/e2e.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace)"
cargo test --workspace --all-targets

echo "== Debian package (dpkg, systemd-analyze)"
scripts/test-package.sh

echo "== herald.js unit tests (node)"
node --test clients/js/test/

echo "== browser tests (chromium)"
scripts/e2e.sh
