#!/usr/bin/env bash
# Herald and a peer side by side: every scenario of a family of herald-bench against each server in turn,
# driven by the same load generator (herald-bench), then one table of Herald/peer ratios.
#
#   bench/compare.sh                     # Herald's API against Nchan, all scenarios (about 14 minutes on 2 cores);
#                                        # the cpu-* ones also against `herald-bench floor`, the machine's floor
#   bench/compare.sh fanout-ws idle-ws   # some of them
#   bench/compare.sh --pusher            # the Pusher Channels protocol: Herald against Soketi (about 3 minutes)
#   bench/compare.sh --client plain cpu-ws-2k   # subscribers on herald-bench's bare WebSocket client instead of
#                                        # herald-client (WebSocket scenarios only), results in bench/results/plain
#                                        # (bench/crosscheck.sh runs both generators side by side)
#
# Installs what the peer needs when missing (nginx and Debian's libnginx-mod-nchan; Soketi from npm, pinned by
# bench/soketi/package-lock.json), builds Herald and herald-bench in release, starts a fresh server for every
# run (so memory figures start from the same empty process) on loopback only, and writes
# bench/results/<scenario>.<target>.{json,md} and bench/results/summary.md (pusher-summary.md for --pusher).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
root=$(pwd)
results="$root/bench/results"
herald_port=7171
nchan_port=8091
soketi_port=6001
floor_port=7095

family=native
client=herald-client
while [ $# -gt 0 ]; do
  case $1 in
    --pusher) family=pusher ;;
    --client) client=$2; shift ;;
    *) break ;;
  esac
  shift
done
if [ "$client" != herald-client ]; then results="$results/$client"; fi
if [ "$family" = native ]; then
  targets=(herald nchan)
  summary=summary.md
  install_nchan compare
else
  targets=(herald-pusher soketi)
  summary=pusher-summary.md
  echo "== installing Soketi (npm, pinned)"
  (cd bench/soketi && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== building Herald and herald-bench (release)"
cargo build --release -q -p herald -p herald-bench
release="${CARGO_TARGET_DIR:-$root/target}/release"
bench="$release/herald-bench"
herald="$release/herald"

mkdir -p "$results"
# Only this family's results: the other family's stay.
rm -f "$results"/*."${targets[0]}".* "$results"/*."${targets[1]}".* "$results"/*.floor.* "$results/$summary"
work=$(mktemp -d)
trap 'stop_server; rm -rf "$work"' EXIT

# Herald with its defaults, except a deeper per-connection queue: at the top of a ramp a subscriber may fall
# a few hundred messages behind, which Nchan (no such bound) would absorb instead of disconnecting it.
# The Pusher scenarios' app (crates/herald-bench/src/pusher.rs) is configured in both Herald and Soketi.
cat > "$work/herald.toml" <<TOML
connection_queue = 4096

[[pusher.apps]]
id = "herald-bench"
key = "herald-bench-key"
secret = "herald-bench-secret"

# pusher-idle opens 10,000 connections of one app: above the default per-app limit's margin.
[pusher.limits]
max_connections = 20000
TOML
# Soketi on loopback only, its cluster discovery included (it binds a UDP port even when alone), with the same
# app and no rate limits.
cat > "$work/soketi.json" <<JSON
{ "host": "127.0.0.1", "port": $soketi_port, "metrics.host": "127.0.0.1", "metrics.port": $((soketi_port + 1)),
  "cluster.address": "127.0.0.1", "cluster.hostname": "127.0.0.1", "cluster.port": $((soketi_port + 2)),
  "cluster.broadcast": "127.255.255.255",
  "appManager.array.apps": [{ "id": "herald-bench", "key": "herald-bench-key", "secret": "herald-bench-secret",
    "enabled": true, "enableClientMessages": false, "maxConnections": -1, "maxBackendEventsPerSecond": -1,
    "maxClientEventsPerSecond": -1, "maxReadRequestsPerSecond": -1, "webhooks": [] }] }
JSON
prepare_nchan "$work/nchan" "$nchan_port"

# Something already on a port would be measured instead of the server just started: refuse to go on.
refuse_taken_ports compare "$herald_port" "$nchan_port" "$soketi_port" "$floor_port"

start_herald() {
  "$herald" serve --listen "127.0.0.1:$herald_port" --config "$work/herald.toml" 2>"$work/herald.log" &
  server_pid=$!
  wait_listening compare "$server_pid" "$herald_port" "$work/herald.log"
}

start_nchan() { start_nchan_in compare "$work/nchan" "$nchan_port"; }

start_herald-pusher() { start_herald; }

start_floor() {
  "$bench" floor --listen "127.0.0.1:$floor_port" 2>"$work/floor.log" &
  server_pid=$!
  wait_listening compare "$server_pid" "$floor_port" "$work/floor.log"
}

start_soketi() {
  "$root/bench/soketi/node_modules/.bin/soketi" start --config="$work/soketi.json" >"$work/soketi.log" 2>&1 &
  server_pid=$!
  wait_listening compare "$server_pid" "$soketi_port" "$work/soketi.log"
}

port_of() {
  case $1 in
    herald | herald-pusher) echo "$herald_port" ;;
    nchan) echo "$nchan_port" ;;
    soketi) echo "$soketi_port" ;;
    floor) echo "$floor_port" ;;
  esac
}

if [ $# -gt 0 ]; then
  scenarios=("$@")
else
  mapfile -t scenarios < <("$bench" scenarios --family "$family" | awk '{print $1}')
fi
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== commit $commit, $(nproc) cores, load average $load_before"
# The scenarios measured against the floor too (µs of server CPU per delivery, read as "× floor").
mapfile -t floor_scenarios < <("$bench" scenarios --family "$family" --floor | awk '{print $1}')
for scenario in "${scenarios[@]}"; do
  these=("${targets[@]}")
  if printf '%s\n' "${floor_scenarios[@]}" | grep -qx "$scenario"; then these+=(floor); fi
  for target in "${these[@]}"; do
    echo "== $scenario against $target"
    "start_$target"
    url="http://127.0.0.1:$(port_of "$target")"
    "$bench" scenario "$scenario" --target "$target" --url "$url" --server-pid "$server_pid" --client "$client" \
      --out "$results"
    stop_server
    sleep 1
  done
done

{
  echo "${targets[0]} vs ${targets[1]}, subscribers on $client, commit $commit, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average at the start: $load_before"
  echo
  "$bench" summarize "$results" --family "$family"
} > "$work/$summary"
mv "$work/$summary" "$results/$summary"
echo
cat "$results/$summary"
