#!/usr/bin/env bash
# Issue 15's ratio: the disk engine's publishes/s with `fsync = "interval"` over the memory engine's, measured in
# pairs a few seconds apart (docs/BENCHMARKS.md, "The ratio in pairs"). Both servers run side by side (the idle
# one costs nothing), and for each of publish-disk-1, -4 and -32 they take turns ROUNDS times (default 5), which
# one goes first alternating, 2 s between runs (the disk engine's store is written behind its journal at the next
# periodic fsync, 1 s, and should not run into the memory engine's turn). Each pair gives a ratio; the table
# shows their median and range. bench/disk.sh runs all of one engine's scenarios before the other's, so a machine
# whose speed drifts (this one's varies by 2x within minutes) moves its ratios; a pair seconds apart shares it.
#
#   bench/disk-ratio.sh [DATA_DIR_PARENT]   # default /var/tmp: put it on the disk to measure
#   ROUNDS=9 bench/disk-ratio.sh            # more pairs (about 40 s each round, 2 min for 5 at each size)
#   BIN_DIR=/some/release bench/disk-ratio.sh   # that build's herald and herald-bench, not built here
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
who=disk-ratio.sh
parent="${1:-/var/tmp}"
rounds="${ROUNDS:-5}"
release_binaries
memory_port=7083
disk_port=7084
refuse_taken_ports "$who" "$memory_port" "$disk_port"
data="$(mktemp -d "$parent/herald-disk-ratio.XXXXXX")"
memory_pid=""
disk_pid=""
stop_both() {
  for pid in $memory_pid $disk_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap 'stop_both; rm -rf "$data"' EXIT

HERALD_LOG=warn "$herald" serve --listen "127.0.0.1:$memory_port" --engine memory 2>"$data/memory.log" &
memory_pid=$!
HERALD_FSYNC=interval HERALD_LOG=warn "$herald" serve --listen "127.0.0.1:$disk_port" --engine disk \
  --data-dir "$data/dir" 2>"$data/disk.log" &
disk_pid=$!
wait_listening "$who" "$memory_pid" "$memory_port" "$data/memory.log"
wait_listening "$who" "$disk_pid" "$disk_port" "$data/disk.log"

# rate ENGINE SCENARIO: acknowledged publishes/s of one run against that engine's server, then 2 s of rest.
rate() {
  local port=$memory_port pid=$memory_pid
  [ "$1" = disk ] && port=$disk_port pid=$disk_pid
  "$bench" scenario "$2" --target herald --url "http://127.0.0.1:$port" --server-pid "$pid" --out "$data/out" >/dev/null
  headline "$data/out/$2.herald.json"
  sleep 2
}

# median VALUE…
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "| publishers | disk interval / memory, median | range | pairs | memory /s, median | disk interval /s, median |"
echo "| --- | --- | --- | --- | --- | --- |"
for n in 1 4 32; do
  scenario=publish-disk-$n
  ratios=()
  memory_rates=()
  disk_rates=()
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then
      m=$(rate memory "$scenario")
      d=$(rate disk "$scenario")
    else
      d=$(rate disk "$scenario")
      m=$(rate memory "$scenario")
    fi
    memory_rates+=("$m")
    disk_rates+=("$d")
    ratios+=("$(echo "$d / $m" | bc -l)")
  done
  range=$(printf '%s\n' "${ratios[@]}" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f–%.2f", lo, hi}')
  printf '| %s | %.2f | %s | %s | %.0f | %.0f |\n' "$n" "$(median "${ratios[@]}")" "$range" "$rounds" \
    "$(median "${memory_rates[@]}")" "$(median "${disk_rates[@]}")"
done
