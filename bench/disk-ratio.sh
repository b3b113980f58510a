#!/usr/bin/env bash
# Issue 15's ratio: the disk engine's publishes/s with `fsync = "interval"` over the memory engine's, measured in
# pairs a few seconds apart (docs/BENCHMARKS.md, "The ratio in pairs"). The servers run side by side (an idle one
# costs nothing), and for each of publish-disk-1, -4 and -32 they take turns ROUNDS times (default 5), the memory
# engine's run first and last in turn, 2 s between runs (the disk engine's store is written behind its journal at
# the next periodic fsync, 1 s, and should not run into the next server's turn). Each pair gives a ratio; the table
# shows their median and range. bench/disk.sh runs all of one engine's scenarios before the other's, so a machine
# whose speed drifts (this one's varies by 2x within minutes) moves its ratios; a pair seconds apart shares it.
#
#   bench/disk-ratio.sh [DATA_DIR_PARENT]   # default /var/tmp: put it on the disk to measure
#   ROUNDS=9 bench/disk-ratio.sh            # more pairs (a round of the three sizes takes about 50 s, 75 with AGAINST)
#   BIN_DIR=/some/release bench/disk-ratio.sh   # that build's herald and herald-bench, not built here
#   AGAINST=/other/release bench/disk-ratio.sh  # also that build's disk engine, a third server in the same rounds:
#                                               # its ratio, and its publishes/s over the first build's, pair by pair
#
# Two disk builds compared this way share each round's machine and memory-engine figure: a change of a few per
# cent that two separate runs of this script cannot tell from the machine's drift shows in every pair. The two
# disk builds always run one right after the other (memory, disk, AGAINST, then AGAINST, disk, memory), so the
# AGAINST-over-disk column is the closest comparison; AGAINST's own ratio pairs it with a memory run one run away.
set -euo pipefail
# Build directories named relative to where the script was started from, not to the repository.
[ -n "${BIN_DIR:-}" ] && BIN_DIR="$(realpath "$BIN_DIR")"
[ -n "${AGAINST:-}" ] && AGAINST="$(realpath "$AGAINST")"
cd "$(dirname "$0")/.."
source bench/servers.sh
who=disk-ratio.sh
parent="${1:-/var/tmp}"
rounds="${ROUNDS:-5}"
release_binaries
memory_port=7083
disk_port=7084
against_port=7085
refuse_taken_ports "$who" "$memory_port" "$disk_port"
[ -n "${AGAINST:-}" ] && refuse_taken_ports "$who" "$against_port"
data="$(mktemp -d "$parent/herald-disk-ratio.XXXXXX")"
memory_pid=""
disk_pid=""
against_pid=""
stop_all() {
  for pid in $memory_pid $disk_pid $against_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap 'stop_all; rm -rf "$data"' EXIT

# serve_disk HERALD PORT NAME: that build's disk engine with `fsync = "interval"` in the background, its data in
# $data/NAME and its log in $data/NAME.log (where `rate` looks when a run gives no figure).
serve_disk() {
  HERALD_FSYNC=interval HERALD_LOG=warn "$1" serve --listen "127.0.0.1:$2" --engine disk --data-dir "$data/$3" \
    2>"$data/$3.log" &
}

HERALD_LOG=warn "$herald" serve --listen "127.0.0.1:$memory_port" --engine memory 2>"$data/memory.log" &
memory_pid=$!
serve_disk "$herald" "$disk_port" disk
disk_pid=$!
wait_listening "$who" "$memory_pid" "$memory_port" "$data/memory.log"
wait_listening "$who" "$disk_pid" "$disk_port" "$data/disk.log"
if [ -n "${AGAINST:-}" ]; then
  serve_disk "$AGAINST/herald" "$against_port" against
  against_pid=$!
  wait_listening "$who" "$against_pid" "$against_port" "$data/against.log"
fi

# rate ENGINE SCENARIO: acknowledged publishes/s of one run against that engine's server, then 2 s of rest.
rate() {
  local port=$memory_port pid=$memory_pid
  [ "$1" = disk ] && port=$disk_port pid=$disk_pid
  [ "$1" = against ] && port=$against_port pid=$against_pid
  local out="$data/out/$2.herald.json" figure
  rm -f "$out"
  "$bench" scenario "$2" --target herald --url "http://127.0.0.1:$port" --server-pid "$pid" --out "$data/out" >/dev/null
  figure=$(headline "$out" 2>/dev/null || true)
  if [ -z "$figure" ]; then
    echo "$who: no figure from the $1 server's run of $2; the end of its log:" >&2
    tail -5 "$data/$1.log" >&2
    exit 1
  fi
  echo "$figure"
  sleep 2
}

# median VALUE…
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# spread VALUE…: the lowest and highest, as "lo–hi".
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f–%.2f", lo, hi}'; }

header="| publishers | disk interval / memory, median | range | pairs | memory /s, median | disk interval /s, median |"
rule="| --- | --- | --- | --- | --- | --- |"
if [ -n "${AGAINST:-}" ]; then
  header="$header AGAINST / memory, median | range | AGAINST / disk, median | range |"
  rule="$rule --- | --- | --- | --- |"
fi
echo "$header"
echo "$rule"
for n in 1 4 32; do
  scenario=publish-disk-$n
  ratios=()
  memory_rates=()
  disk_rates=()
  against_ratios=()
  over_disk=()
  for r in $(seq "$rounds"); do
    # The memory engine's run first or last in turn, the builds compared always next to each other.
    if [ $((r % 2)) = 1 ]; then
      m=$(rate memory "$scenario")
      d=$(rate disk "$scenario")
      [ -n "${AGAINST:-}" ] && a=$(rate against "$scenario")
    else
      [ -n "${AGAINST:-}" ] && a=$(rate against "$scenario")
      d=$(rate disk "$scenario")
      m=$(rate memory "$scenario")
    fi
    memory_rates+=("$m")
    disk_rates+=("$d")
    ratios+=("$(echo "$d / $m" | bc -l)")
    if [ -n "${AGAINST:-}" ]; then
      against_ratios+=("$(echo "$a / $m" | bc -l)")
      over_disk+=("$(echo "$a / $d" | bc -l)")
    fi
  done
  row=$(printf '| %s | %.2f | %s | %s | %.0f | %.0f |' "$n" "$(median "${ratios[@]}")" "$(spread "${ratios[@]}")" \
    "$rounds" "$(median "${memory_rates[@]}")" "$(median "${disk_rates[@]}")")
  if [ -n "${AGAINST:-}" ]; then
    row="$row$(printf ' %.2f | %s | %.2f | %s |' "$(median "${against_ratios[@]}")" "$(spread "${against_ratios[@]}")" \
      "$(median "${over_disk[@]}")" "$(spread "${over_disk[@]}")")"
  fi
  echo "$row"
done
