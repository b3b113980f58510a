#!/usr/bin/env bash
# Runs Herald against the official Pusher clients, unmodified (compat/pusher/): pusher-js, the `pusher` Node SDK and
# Laravel Echo from npm (the lock file pins them), and the Python `pusher` SDK from PyPI (requirements.txt pins it,
# in a virtual environment of its own). Builds the server, then runs the tests; the cluster tests need Redis
# (HERALD_TEST_REDIS_URL, as the cargo tests) and say they are skipped without it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "pusher-compat: node and npm are needed (scripts/e2e.sh installs them on Debian)" >&2
  exit 1
fi

echo "pusher-compat: installing pusher-js, pusher and laravel-echo"
(cd compat/pusher && npm ci --no-audit --no-fund --loglevel=error)

echo "pusher-compat: installing the Python pusher SDK"
if [ ! -x compat/pusher/.venv/bin/python ]; then
  python3 -m venv compat/pusher/.venv
fi
compat/pusher/.venv/bin/pip install --quiet --disable-pip-version-check -r compat/pusher/requirements.txt

echo "pusher-compat: building the server"
cargo build -p herald

echo "pusher-compat: running the tests"
cd compat/pusher
# One file at a time: each starts its own servers. --test-force-exit (Node 20.10 and later): pusher-js's Node
# WebSocket keeps a 30 s timer after a connection the server refused (4000-4099) was closed twice, which would
# hold the run for nothing; older Node runs the same tests, only slower.
force_exit=()
if node --help | grep -q -- --test-force-exit; then force_exit=(--test-force-exit); fi
node --test --test-concurrency=1 "${force_exit[@]}" ./*.test.mjs
