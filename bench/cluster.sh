#!/usr/bin/env bash
# Three Herald nodes on one Redis against three Herald nodes on a 3-shard Redis Cluster, same machine, same run:
# acknowledged publishes/s and deliveries/s, and from Redis's own counters what one publish costs each Redis
# (CPU, script time, bytes sent, Pub/Sub subscriptions it serves, cluster bus messages). Issue 16, "Measured".
#
#   bench/cluster.sh                 # both topologies, every load, 2 rounds (about 5 minutes)
#   ROUNDS=3 bench/cluster.sh        # more rounds
#   LOADS="publish fanout" bench/cluster.sh
#   REPLICAS=1 bench/cluster.sh      # the cluster with one replica per primary (6 redis-servers)
#
# The loads (herald-bench run, 12 publisher connections flat out; subscribers and publishers spread over the
# three nodes in turn, so every channel has subscribers on every node):
# - publish: nobody subscribed, 1,000 channels: the publish path alone (one script per publish, on the
#   channel's shard);
# - fanout: 3,000 WebSocket subscribers on 100 channels (30 each, 10 on each node): every publish is announced
#   to the 3 nodes (one Pub/Sub message each) and delivered 30 times;
# - fanout-1000: 3,000 WebSocket subscribers on 1,000 channels (3 each, one on each node): the same with many
#   channels per node.
# Each load is a warm-up step and a measured step of 4 s each; per-publish costs count both, and the drain.
#
# It starts its OWN redis-servers (one plain on 6400, the cluster's on 6401-6403, and 6404-6406 with
# REPLICAS=1; no persistence) and Herald nodes (7191-7193), never the shared Redis on 6379, and stops and
# removes all of it on exit. Builds Herald and herald-bench in release (in $CARGO_TARGET_DIR if set), writes
# bench/results/cluster/<topology>-<load>-<round>.{json,md} and bench/results/cluster/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
root=$(pwd)
results="$root/bench/results/cluster"
rounds=${ROUNDS:-2}
read -r -a loads <<<"${LOADS:-publish fanout fanout-1000}"
replicas=${REPLICAS:-0}
single_port=6400
cluster_ports=(6401 6402 6403)
if [ "$replicas" = 1 ]; then cluster_ports+=(6404 6405 6406); fi
herald_ports=(7191 7192 7193)
target="${CARGO_TARGET_DIR:-$root/target}"

install_redis cluster

echo "== building Herald and herald-bench (release)"
cargo build --release -q -p herald -p herald-bench
bench="$target/release/herald-bench"
herald="$target/release/herald"

bus_ports=()
for port in "${cluster_ports[@]}"; do bus_ports+=($((port + 10000))); done
refuse_taken_ports cluster "$single_port" "${cluster_ports[@]}" "${bus_ports[@]}" "${herald_ports[@]}"

work=$(mktemp -d)
redis_pids=()
herald_pids=()
stop_heralds() {
  for pid in "${herald_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${herald_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  herald_pids=()
}
stop_redis() {
  for pid in "${redis_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${redis_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  redis_pids=()
}
trap 'stop_heralds; stop_redis; rm -rf "$work"' EXIT

# start_redis port [cluster]: a redis-server of this script's own, no persistence, in its own directory.
start_redis() {
  local port=$1 dir="$work/redis-$1"
  mkdir -p "$dir"
  local args=(--port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --logfile "$dir/log")
  if [ "${2:-}" = cluster ]; then
    args+=(--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
      --cluster-require-full-coverage no --repl-diskless-sync-delay 0)
  fi
  redis-server "${args[@]}" &
  redis_pids+=($!)
  wait_listening cluster "$!" "$port" "$dir/log"
}

start_cluster() {
  for port in "${cluster_ports[@]}"; do start_redis "$port" cluster; done
  local seeds=()
  for port in "${cluster_ports[@]}"; do seeds+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas "$replicas" --cluster-yes >"$work/create.log"
  # Every node sees every slot served (and every replica synced) before anyone publishes.
  for _ in $(seq 300); do
    local ok=1
    for port in "${cluster_ports[@]}"; do
      local info
      info=$(redis-cli -p "$port" CLUSTER INFO)
      if ! grep -q cluster_state:ok <<<"$info" || ! grep -q cluster_slots_ok:16384 <<<"$info"; then ok=0; fi
      if redis-cli -p "$port" INFO replication | grep -q master_link_status:down; then ok=0; fi
    done
    if [ $ok = 1 ]; then return 0; fi
    sleep 0.1
  done
  echo "cluster: the cluster did not settle; see $work/create.log" >&2
  exit 1
}

# Herald as compare.sh runs it (a deeper per-connection queue), one prefix per topology.
cat > "$work/herald.toml" <<TOML
connection_queue = 4096
redis_prefix = "herald-bench-cluster:"
TOML

start_heralds() {
  local url=$1
  for port in "${herald_ports[@]}"; do
    "$herald" serve --engine redis --redis-url "$url" --listen "127.0.0.1:$port" --config "$work/herald.toml" \
      2>"$work/herald-$port.log" &
    herald_pids+=($!)
    wait_listening cluster "$!" "$port" "$work/herald-$port.log"
  done
}

# The ports of the primaries (what the loads cost is measured on them; replicas only receive the stream).
primaries() {
  for port in "$@"; do
    if redis-cli -p "$port" INFO replication | grep -q role:master; then echo "$port"; fi
  done
}

# info_field port section field: one field of INFO.
info_field() { redis-cli -p "$1" INFO "$2" | tr -d '\r' | awk -F: -v f="$3" '$1 == f { print $2 }'; }
cpu() { echo "$(info_field "$1" cpu used_cpu_user) + $(info_field "$1" cpu used_cpu_sys)" | bc -l; }
# cmdstat port command field: calls or usec of one command (0 when never called).
cmdstat() {
  redis-cli -p "$1" INFO commandstats | tr -d '\r' |
    awk -F'[:,=]' -v c="cmdstat_$2" -v f="$3" '$1 == c { for (i = 2; i < NF; i += 2) if ($i == f) print $(i + 1) }' |
    grep . || echo 0
}
bus_sent() { redis-cli -p "$1" CLUSTER INFO 2>/dev/null | tr -d '\r' | awk -F: '$1 == "cluster_stats_messages_sent" { print $2 }' | grep . || echo 0; }
# The most Pub/Sub subscriptions (classic and sharded) Herald's connections held on a Redis during the load.
sample_subscriptions() {
  local port=$1 out=$2 most=0
  echo 0 >"$out"
  while :; do
    local now
    now=$(redis-cli -p "$port" CLIENT LIST 2>/dev/null | grep -oE ' (sub|ssub)=[0-9]+' | awk -F= '{ s += $2 } END { print s + 0 }') || break
    if [ "${now:-0}" -gt "$most" ]; then most=$now; echo "$most" >"$out"; fi
    sleep 0.5
  done
}

# measure topology load round ports…: one herald-bench load against the three nodes, with each primary's
# counters read around it; appends a row per primary to the topology's table.
measure() {
  local topology=$1 load=$2 round=$3
  shift 3
  local ports=("$@") urls=() pids
  for port in "${herald_ports[@]}"; do urls+=("http://127.0.0.1:$port"); done
  pids=$(IFS=,; echo "${herald_pids[*]}")
  declare -A cpu0 bus0 sampler
  for port in "${ports[@]}"; do
    redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
    cpu0[$port]=$(cpu "$port")
    bus0[$port]=$(bus_sent "$port")
    sample_subscriptions "$port" "$work/subs-$port" &
    sampler[$port]=$!
  done
  local subscribers layout
  case $load in
    publish) subscribers=0 layout=even:1000 ;;
    fanout) subscribers=3000 layout=even:100 ;;
    fanout-1000) subscribers=3000 layout=even:1000 ;;
    *) echo "cluster: no load $load" >&2; exit 1 ;;
  esac
  local stem="$results/$topology-$load-$round"
  echo "== $topology, $load, round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$bench" run --url "$(IFS=,; echo "${urls[*]}")" --server-pid "$pids" --subscribers "$subscribers" \
    --layout "$layout" --publishers 12 --rate max,max --warmup --step-secs 4 --drain-secs 5 \
    --json "$stem.json" >"$stem.md"
  for port in "${ports[@]}"; do kill "${sampler[$port]}" 2>/dev/null || true; wait "${sampler[$port]}" 2>/dev/null || true; done
  # The measured step (the second): publishes/s, deliveries/s, Herald's CPU (3 nodes together).
  local step
  step=$(jq -r '.gaps as $gaps | .steps[1] |
    "\(.publish_rate) \(.deliveries_per_sec) \(.server_cpu) \(.latency_ms.p99) \(.kept_up) \($gaps)"' "$stem.json")
  read -r publish_rate deliveries herald_cpu p99 kept_up gaps <<<"$step"
  printf '| %s | %s | %s | %.0f | %.0f | %.0f%% | %s | %s | %s |\n' "$topology" "$load" "$round" "$publish_rate" \
    "$deliveries" "$(echo "$herald_cpu * 100" | bc -l)" "$p99" "$kept_up" "$gaps" >>"$work/loads.md"
  for port in "${ports[@]}"; do
    local publishes scripts script_usec cpu_used bytes subs bus
    publishes=$(($(cmdstat "$port" publish calls) + $(cmdstat "$port" spublish calls)))
    scripts=$(cmdstat "$port" evalsha calls)
    script_usec=$(cmdstat "$port" evalsha usec)
    cpu_used=$(echo "$(cpu "$port") - ${cpu0[$port]}" | bc -l)
    bytes=$(info_field "$port" stats total_net_output_bytes)
    subs=$(cat "$work/subs-$port")
    bus=$(($(bus_sent "$port") - ${bus0[$port]}))
    awk -v t="$topology" -v l="$load" -v r="$round" -v p="$port" -v n="$publishes" -v s="$scripts" \
      -v su="$script_usec" -v c="$cpu_used" -v b="$bytes" -v subs="$subs" -v bus="$bus" 'BEGIN {
        per = n > 0 ? n : 1
        printf "| %s | %s | %s | %s | %d | %.1f | %.1f | %.0f | %d | %.2f |\n", t, l, r, p, n, c * 1e6 / per,
          (s > 0 ? su / s : 0), b / per, subs, bus / per
      }' >>"$work/shards.md"
  done
}

mkdir -p "$results"
rm -f "$results"/*.json "$results"/*.md
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== commit $commit, $(nproc) cores, load average $load_before, cluster replicas per primary: $replicas"
for round in $(seq "$rounds"); do
  start_redis "$single_port"
  start_heralds "redis://127.0.0.1:$single_port"
  for load in "${loads[@]}"; do measure single "$load" "$round" "$single_port"; done
  stop_heralds
  stop_redis

  start_cluster
  seeds=()
  for port in "${cluster_ports[@]}"; do seeds+=("127.0.0.1:$port"); done
  start_heralds "redis+cluster://$(IFS=,; echo "${seeds[*]}")"
  mapfile -t shard_ports < <(primaries "${cluster_ports[@]}")
  for load in "${loads[@]}"; do measure cluster "$load" "$round" "${shard_ports[@]}"; done
  stop_heralds
  stop_redis
  rm -rf "$work"/redis-*
done

{
  echo "3 Herald nodes on 1 Redis (single) against a 3-shard Redis Cluster ($replicas replica(s) per primary), commit $commit,"
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average at the start: $load_before, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "| topology | load | round | publishes/s | deliveries/s | Herald CPU (3 nodes) | p99 ms | kept up | gaps |"
  echo "|---|---|---:|---:|---:|---:|---:|:--:|---:|"
  cat "$work/loads.md"
  echo
  echo "Per Redis primary, over the whole load (warm-up, measured step, drain); per publish = per PUBLISH/SPUBLISH it ran:"
  echo
  echo "| topology | load | round | port | publishes | CPU µs / publish | µs / script (EVALSHA) | bytes out / publish | Pub/Sub subscriptions held | bus messages / publish |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  cat "$work/shards.md"
} >"$results/summary.md"
echo
cat "$results/summary.md"
