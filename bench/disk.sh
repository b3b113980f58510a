#!/usr/bin/env bash
# The disk engine against the memory engine (docs/BENCHMARKS.md, "The disk engine"): the publish-disk scenarios
# of herald-bench against a release Herald on each engine and fsync policy, then the time a disk Herald takes to
# start again after `kill -9` with 10^5 and 10^6 stored messages.
#
#   bench/disk.sh [DATA_DIR_PARENT]     # default /var/tmp: put it on the disk to measure
#   RECOVERY=0 bench/disk.sh            # the publish table only
#   BIN_DIR=/some/release bench/disk.sh # that build's herald and herald-bench, not built here (to compare two)
#   ENGINES="memory disk-interval" bench/disk.sh   # those servers only (default: memory disk-interval disk-always)
#
# Writes bench/results/disk/<scenario>.<engine>.json and prints the table. With `perf` usable (root, or
# perf_event_paranoid <= 1), also how many publishes share one fsync under `always` (the server's fdatasync calls
# counted during each scenario). About 5 minutes on 2 cores, plus up to 6 for the 10^6 fill.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
who=disk.sh
parent="${1:-/var/tmp}"
release_binaries
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

# fsyncs_during COMMAND…: runs COMMAND (its output dropped) while counting the server's fdatasync calls; prints
# the count, or nothing without a usable perf.
perf_usable=0
perf stat -e syscalls:sys_enter_fdatasync -- true >/dev/null 2>&1 && perf_usable=1
fsyncs_during() {
  if [ "$perf_usable" = 1 ]; then
    perf stat -x, -e syscalls:sys_enter_fdatasync -o "$data/fsyncs" -p "$server_pid" -- "$@" >/dev/null
    awk -F, '/sys_enter_fdatasync/ {print $1}' "$data/fsyncs"
  else
    "$@" >/dev/null
  fi
}

# store_work: ns of CPU of the server's threads other than the runtime's (the disk writer's, fjall's flusher and
# compactor: the store's work behind the publishes, from each thread's schedstat) and the bytes it has had written
# to disk (dirtied, less what was deleted before it reached the disk), as "NS BYTES". Both are steadier than
# publishes/s on a shared machine: they do not depend on how fast the publishers went.
store_work() {
  local ns=0 t run
  for t in /proc/"$server_pid"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = tokio-rt-worker ] && continue
    run=$(cut -d' ' -f1 "$t/schedstat" 2>/dev/null) || run=0
    ns=$((ns + ${run:-0}))
  done
  echo "$ns $(awk '/^write_bytes/ {w = $2} /^cancelled_write_bytes/ {c = $2} END {print w - c}' /proc/"$server_pid"/io)"
}

declare -A rate fsyncs store_cost
for engine in ${ENGINES:-memory disk-interval disk-always}; do
  case $engine in
    memory) start_herald memory ;;
    disk-interval) start_herald disk interval ;;
    disk-always) start_herald disk always ;;
    *) echo "disk.sh: unknown engine $engine in ENGINES (memory, disk-interval, disk-always)" >&2; exit 2 ;;
  esac
  for scenario in publish-disk-1 publish-disk-4 publish-disk-32; do
    before=$(store_work)
    fsyncs[$scenario.$engine]=$(fsyncs_during "$bench" scenario "$scenario" --target herald \
      --url "http://127.0.0.1:$port" --server-pid "$server_pid" --out "$results")
    mv "$results/$scenario.herald.json" "$results/$scenario.$engine.json"
    rm -f "$results/$scenario.herald.md"
    rate[$scenario.$engine]=$(headline "$results/$scenario.$engine.json")
    published=$(sed -n 's/.*"published": *\([0-9]*\).*/\1/p' "$results/$scenario.$engine.json" | head -1)
    # The store's work for these publishes ends after them: the writer's thread writes what the journal holds
    # into the store at the next periodic fsync (fsync_interval_ms, 1 s), fjall flushes after that.
    [ "$engine" != memory ] && sleep 2
    # µs of CPU off the runtime's threads and bytes written to disk, each per publish.
    store_cost[$scenario.$engine]=$(echo "$before $(store_work)" |
      awk -v n="${published:-0}" 'n > 0 && NF == 4 {printf "%.2f | %.0f", ($3 - $1) / 1000 / n, ($4 - $2) / n}')
  done
  stop_server
  # What this server left for the kernel to write back is written now, not during the next one's run.
  sync
done

# cpu_us SCENARIO ENGINE: µs of server CPU per publish in that run.
cpu_us() {
  sed -n 's/.*"server_cpu": *\([0-9.]*\).*/\1/p' "$results/$1.$2.json" | head -1 |
    awk -v rate="${rate[$1.$2]}" '{printf "%.1f", $1 / rate * 1e6}'
}
echo "| publishers | memory /s | µs | disk interval /s | µs | ratio | disk always /s | µs | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for n in 1 4 32; do
  s=publish-disk-$n
  m=${rate[$s.memory]:-}
  # cell ENGINE: its publishes/s, µs per publish and ratio to memory; dashes for a server not run.
  cell() {
    local r=${rate[$s.$1]:-}
    if [ -z "$r" ]; then
      if [ "$1" = memory ]; then printf -- '- | - |'; else printf -- '- | - | - |'; fi
      return
    fi
    printf '%.0f | %s |' "$r" "$(cpu_us "$s" "$1")"
    [ "$1" = memory ] && return
    if [ -n "$m" ]; then printf ' %.2f |' "$(echo "$r / $m" | bc -l)"; else printf ' - |'; fi
  }
  echo "| $n | $(cell memory) $(cell disk-interval) $(cell disk-always)"
done
echo
echo "The store's work per publish, counted until 2 s after the publishes: µs of CPU off the runtime's threads (disk writer, fjall's flusher and compactor) | bytes written to disk"
echo "| publishers | disk interval µs | bytes | disk always µs | bytes |"
echo "| --- | --- | --- | --- | --- |"
for n in 1 4 32; do
  echo "| $n | ${store_cost[publish-disk-$n.disk-interval]:-- | -} | ${store_cost[publish-disk-$n.disk-always]:-- | -} |"
done
[ -n "${rate[publish-disk-1.disk-always]:-}" ] && printf 'always, 32 publishers against 1: %.1fx\n' \
  "$(echo "${rate[publish-disk-32.disk-always]} / ${rate[publish-disk-1.disk-always]}" | bc -l)"
for n in 1 4 32; do
  f=${fsyncs[publish-disk-$n.disk-always]:-}
  # The scenario publishes for 5 s: publishes/s × 5 over the fsyncs counted (those of the setup are few).
  [ -n "$f" ] && [ "$f" -gt 0 ] && printf 'always, %s publishers: %s fsyncs, %.1f publishes per fsync, %.0f fsyncs/s\n' \
    "$n" "$f" "$(echo "${rate[publish-disk-$n.disk-always]} * 5 / $f" | bc -l)" "$(echo "$f / 5" | bc -l)"
done
[ "${RECOVERY:-1}" = 0 ] && exit 0

# Recovery: fill a disk Herald to at least N messages (1,000 channels, history long enough to keep them all; 16
# publishers flat out in 10 s steps until the server holds N, 5 minutes at most), kill -9, time the next start
# until it listens; the count is what the restarted server holds.
echo "[default_namespace]
history_size = 100000
history_ttl_secs = 86400" >"$data/long.toml"
held() { curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "herald_history_messages" {print $2}'; }
for want in 100000 1000000; do
  start_herald disk interval "$data/long.toml"
  deadline=$((SECONDS + 300))
  while [ "$(held)" -lt "$want" ] && [ "$SECONDS" -lt "$deadline" ]; do
    "$bench" run --url "http://127.0.0.1:$port" --target herald --subscribers 0 --layout even:1000 --publishers 16 \
      --rate max --step-secs 10 --drain-secs 0 >/dev/null
  done
  filled=$(held)
  kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  bytes=$(du -sb "$data/dir" | cut -f1)
  journal=$(du -sb "$data/dir/store/journals" 2>/dev/null | cut -f1)
  own_journal=$(du -sb "$data/dir/journal" 2>/dev/null | cut -f1)
  started=$(date +%s.%N)
  HERALD_LOG=warn "$herald" serve --listen "127.0.0.1:$port" --engine disk --data-dir "$data/dir" \
    --config "$data/long.toml" 2>"$data/log" &
  server_pid=$!
  wait_listening "$who" "$server_pid" "$port" "$data/log"
  ready=$(date +%s.%N)
  n=$(held)
  printf 'recovery after kill -9 with %s messages (%s before the kill): %.2f s to listen again (%s bytes on disk, %.0f per message; fjall journal %s bytes, Herald journal %s bytes)\n' \
    "$n" "$filled" "$(echo "$ready - $started" | bc -l)" "$bytes" "$(echo "$bytes / $n" | bc -l)" "${journal:-?}" "${own_journal:-?}"
  stop_server
done
