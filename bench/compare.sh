#!/usr/bin/env bash
# Herald and Nchan side by side: every scenario of herald-bench against each server in turn, driven by the same
# load generator (herald-bench), then one table of Herald/Nchan ratios.
#
#   bench/compare.sh                 # all scenarios (about 10 minutes on 2 cores)
#   bench/compare.sh fanout-ws idle-ws   # some of them
#
# Installs nginx and Debian's libnginx-mod-nchan when missing, builds Herald and herald-bench in release,
# starts a fresh server for every run (so memory figures start from the same empty process) on loopback
# only, and writes bench/results/<scenario>.<target>.{json,md} and bench/results/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
root=$(pwd)
results="$root/bench/results"
herald_port=7171
nchan_port=8091

if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  echo "== installing nginx and libnginx-mod-nchan"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
fi

echo "== building Herald and herald-bench (release)"
cargo build --release -q -p herald -p herald-bench
bench="$root/target/release/herald-bench"
herald="$root/target/release/herald"

mkdir -p "$results"
rm -f "$results"/*.json "$results"/*.md
work=$(mktemp -d)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

# Herald with its defaults, except a deeper per-connection queue: at the top of a ramp a subscriber may fall
# a few hundred messages behind, which Nchan (no such bound) would absorb instead of disconnecting it.
cat > "$work/herald.toml" <<TOML
connection_queue = 4096
TOML
mkdir -p "$work/nchan/logs"
sed "s#@PREFIX@#$work/nchan#g; s#@PORT@#$nchan_port#g" bench/nchan/nginx.conf.template > "$work/nchan/nginx.conf"

# Something already on a port would be measured instead of the server just started: refuse to go on.
refuse_taken_ports compare "$herald_port" "$nchan_port"

start_herald() {
  "$herald" serve --listen "127.0.0.1:$herald_port" --config "$work/herald.toml" 2>"$work/herald.log" &
  server_pid=$!
  wait_listening compare "$server_pid" "$herald_port" "$work/herald.log"
}

start_nchan() {
  nginx -p "$work/nchan" -c "$work/nchan/nginx.conf" 2>>"$work/nchan/logs/stderr.log" &
  server_pid=$!
  wait_listening compare "$server_pid" "$nchan_port" "$work/nchan/logs/stderr.log"
}

if [ $# -gt 0 ]; then scenarios=("$@"); else mapfile -t scenarios < <("$bench" scenarios | awk '{print $1}'); fi
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== commit $commit, $(nproc) cores, load average $load_before"
for scenario in "${scenarios[@]}"; do
  for target in herald nchan; do
    echo "== $scenario against $target"
    "start_$target"
    url="http://127.0.0.1:$([ "$target" = herald ] && echo $herald_port || echo $nchan_port)"
    "$bench" scenario "$scenario" --target "$target" --url "$url" --server-pid "$server_pid" --out "$results"
    stop_server
    sleep 1
  done
done

{
  echo "Herald vs Nchan, commit $commit, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average at the start: $load_before"
  echo
  "$bench" summarize "$results"
} > "$work/summary.md"
mv "$work/summary.md" "$results/summary.md"
echo
cat "$results/summary.md"
