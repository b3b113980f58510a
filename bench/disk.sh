#!/usr/bin/env bash
# The disk engine against the memory engine (docs/BENCHMARKS.md, "The disk engine"): the publish-disk scenarios
# of herald-bench against a release Herald on each engine and fsync policy, then the time a disk Herald takes to
# start again after `kill -9` with 10^5 and 10^6 stored messages.
#
#   bench/disk.sh [DATA_DIR_PARENT]     # default /var/tmp: put it on the disk to measure
#
# Writes bench/results/disk/<scenario>.<engine>.json and prints the table. About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
who=disk.sh
parent="${1:-/var/tmp}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p herald -p herald-bench
herald="$target/release/herald"
bench="$target/release/herald-bench"
port=7081
results=bench/results/disk
mkdir -p "$results"
refuse_taken_ports "$who" "$port"
data="$(mktemp -d "$parent/herald-disk-bench.XXXXXX")"
trap 'stop_server; rm -rf "$data"' EXIT

# start_herald ENGINE [FSYNC] [CONFIG]: a Herald on $port with a fresh data dir.
start_herald() {
  local engine=$1 fsync=${2:-interval} config=${3:-}
  rm -rf "$data/dir"
  local args=(serve --listen "127.0.0.1:$port" --engine "$engine" --data-dir "$data/dir")
  [ -n "$config" ] && args+=(--config "$config")
  HERALD_FSYNC="$fsync" HERALD_LOG=warn "$herald" "${args[@]}" 2>"$data/log" &
  server_pid=$!
  wait_listening "$who" "$server_pid" "$port" "$data/log"
}

declare -A rate
for engine in memory disk-interval disk-always; do
  case $engine in
    memory) start_herald memory ;;
    disk-interval) start_herald disk interval ;;
    disk-always) start_herald disk always ;;
  esac
  for scenario in publish-disk-1 publish-disk-4 publish-disk-32; do
    "$bench" scenario "$scenario" --target herald --url "http://127.0.0.1:$port" --server-pid "$server_pid" \
      --out "$results" >/dev/null
    mv "$results/$scenario.herald.json" "$results/$scenario.$engine.json"
    rm -f "$results/$scenario.herald.md"
    rate[$scenario.$engine]=$(sed -n 's/.*"headline": *\([0-9.]*\).*/\1/p' "$results/$scenario.$engine.json" | head -1)
  done
  stop_server
done

echo "| publishers | memory | disk interval | ratio | disk always | ratio |"
echo "| --- | --- | --- | --- | --- | --- |"
for n in 1 4 32; do
  m=${rate[publish-disk-$n.memory]} i=${rate[publish-disk-$n.disk-interval]} a=${rate[publish-disk-$n.disk-always]}
  printf '| %s | %.0f | %.0f | %.2f | %.0f | %.2f |\n' "$n" "$m" "$i" "$(echo "$i / $m" | bc -l)" "$a" "$(echo "$a / $m" | bc -l)"
done
printf 'always, 32 publishers against 1: %.1fx\n' \
  "$(echo "${rate[publish-disk-32.disk-always]} / ${rate[publish-disk-1.disk-always]}" | bc -l)"

# Recovery: publish flat out long enough for about N messages (1,000 channels, history long enough to keep them
# all), kill -9, time the next start until it listens; the count is what the restarted server holds.
echo "[default_namespace]
history_size = 100000
history_ttl_secs = 86400" >"$data/long.toml"
for secs in 6 60; do
  start_herald disk interval "$data/long.toml"
  "$bench" run --url "http://127.0.0.1:$port" --target herald --subscribers 0 --layout even:1000 --publishers 8 \
    --rate max --step-secs "$secs" --drain-secs 0 >/dev/null
  kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  bytes=$(du -sb "$data/dir" | cut -f1)
  started=$(date +%s.%N)
  HERALD_LOG=warn "$herald" serve --listen "127.0.0.1:$port" --engine disk --data-dir "$data/dir" \
    --config "$data/long.toml" 2>"$data/log" &
  server_pid=$!
  wait_listening "$who" "$server_pid" "$port" "$data/log"
  ready=$(date +%s.%N)
  n=$(curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "herald_history_messages" {print $2}')
  printf 'recovery after kill -9 with %s messages: %.2f s to listen again (%s bytes on disk, %.0f per message)\n' \
    "$n" "$(echo "$ready - $started" | bc -l)" "$bytes" "$(echo "$bytes / $n" | bc -l)"
  stop_server
done
