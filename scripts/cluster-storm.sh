#!/usr/bin/env bash
# The long form of tests/redis_cluster_shards.rs: the same cases (fan-out over three shards and three Herald
# nodes, a primary killed with and without redis_wait_replicas = 1, a live reshard of watched slots, a whole
# shard down), each publisher sending many more messages, round after round, stopping at the first failure.
# Every case counts gaps, duplicates and resets per subscriber and must see none (or the documented reset).
#
#   scripts/cluster-storm.sh                     # 5 rounds of 2,000 messages per channel per case
#   ROUNDS=20 MESSAGES=5000 scripts/cluster-storm.sh
#
# Each case starts its own Redis Cluster (6 redis-server processes on spare ports, in a temp folder, never the
# shared Redis on 6379) and tears it down. Needs redis-server and redis-cli ≥ 7.0. Uses $CARGO_TARGET_DIR if set.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-5}"
messages="${MESSAGES:-2000}"

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "cluster-storm: $tool is not installed" >&2; exit 1; }
done

logs="${TMPDIR:-/tmp}/cluster-storm.$$"
mkdir -p "$logs"
cargo test --workspace --test redis_cluster_shards --no-run -q
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds ($messages messages per channel per case)"
  # Every Herald node's log goes to the round's file (SHOW_NODE_LOG), so a failure can be read afterwards.
  if ! CLUSTER_STORM_MESSAGES="$messages" SHOW_NODE_LOG=1 cargo test --workspace --test redis_cluster_shards -q \
      -- --test-threads 1 --nocapture >"$logs/round-$round.log" 2>&1; then
    grep -E "^test .*FAILED|panicked" "$logs/round-$round.log" || true
    echo "== round $round failed: the nodes' logs are in $logs/round-$round.log" >&2
    exit 1
  fi
done
rm -rf "$logs"
echo "== $rounds rounds without a gap, a duplicate or an unexplained reset"
