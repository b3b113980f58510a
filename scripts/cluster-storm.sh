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

cargo test --workspace --test redis_cluster_shards --no-run -q
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds ($messages messages per channel per case)"
  CLUSTER_STORM_MESSAGES="$messages" cargo test --workspace --test redis_cluster_shards -q -- --test-threads 1
done
echo "== $rounds rounds without a gap, a duplicate or an unexplained reset"
