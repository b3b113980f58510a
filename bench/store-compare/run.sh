#!/usr/bin/env bash
# Compares redb and fjall on Herald's disk workload (docs/BENCHMARKS.md, "Choosing the disk engine's store").
# Usage: bench/store-compare/run.sh [DIR] [N]   DIR on the disk to measure (default /var/tmp/herald-store-compare),
# N messages (default 1000000). Builds in release, outside the workspace.
set -euo pipefail
cd "$(dirname "$0")"
dir="${1:-/var/tmp/herald-store-compare}"
n="${2:-1000000}"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/store-compare"
for store in redb fjall; do
  "$bin" "$store" "$dir/$store-append" append 100000
  rm -rf "$dir/$store-append"
  log="$dir/$store-fill.log"
  mkdir -p "$dir"
  "$bin" "$store" "$dir/$store-fill" fill "$n" >"$log" &
  pid=$!
  until grep -q ready "$log"; do sleep 0.5; done
  cat "$log" | grep filled | sed "s/^/$store /"
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  "$bin" "$store" "$dir/$store-fill" open
  rm -rf "$dir/$store-fill" "$log"
done
