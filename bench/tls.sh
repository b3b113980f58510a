#!/usr/bin/env bash
# What TLS and HTTP/2 cost: idle SSE memory per subscriber and server CPU per delivery of an SSE fan-out, for
# Herald over plain HTTP/1.1 (its direct SSE writer), over TLS + HTTP/1.1, over TLS + HTTP/2 with one stream per
# connection (a client per subscriber) and with 100 streams per connection (a browser's tabs), and, for
# reference, Nchan behind nginx's own TLS + HTTP/2 with one stream per connection.
#
#   bench/tls.sh                 # 2,000 subscribers per run (about 3 minutes)
#   SUBSCRIBERS=5000 bench/tls.sh
#
# Same load generator (herald-bench run) for every target; a fresh server per run; a test CA made with openssl
# (the load generator trusts it through BENCH_CA_FILE). Results: bench/results/tls/<variant>.json and
# bench/results/tls/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
root=$(pwd)
results="$root/bench/results/tls"
port=7172
subscribers=${SUBSCRIBERS:-2000}

install_nchan tls

echo "== building Herald and herald-bench (release)"
cargo build --release -q -p herald -p herald-bench
target_dir=${CARGO_TARGET_DIR:-$root/target}
bench="$target_dir/release/herald-bench"
herald="$target_dir/release/herald"

mkdir -p "$results"
rm -f "$results"/*.json "$results"/*.md
work=$(mktemp -d)
trap 'stop_server; rm -rf "$work"' EXIT
refuse_taken_ports tls "$port"

# A test CA and a certificate for localhost signed by it.
(
  cd "$work"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req "${ec[@]}" -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
    -extfile server.ext 2>/dev/null
)

start_herald() { # config lines…
  printf '%s\n' "connection_queue = 4096" "$@" >"$work/herald.toml"
  "$herald" serve --listen "127.0.0.1:$port" --config "$work/herald.toml" 2>"$work/herald.log" &
  server_pid=$!
  wait_listening tls "$server_pid" "$port" "$work/herald.log"
}

start_nchan_tls() {
  mkdir -p "$work/nchan/logs"
  sed "s#@PREFIX@#$work/nchan#g; s#@PORT@#$port#g" bench/nchan/nginx.conf.template |
    sed "s#listen 127.0.0.1:$port backlog=4096;#listen 127.0.0.1:$port ssl http2 backlog=4096; ssl_certificate $work/server.pem; ssl_certificate_key $work/server.key;#" \
      >"$work/nchan/nginx.conf"
  nginx -p "$work/nchan" -c "$work/nchan/nginx.conf" 2>>"$work/nchan/logs/stderr.log" &
  server_pid=$!
  wait_listening tls "$server_pid" "$port" "$work/nchan/logs/stderr.log"
}

tls_files=("tls_cert_file = \"$work/server.pem\"" "tls_key_file = \"$work/server.key\"")
# variant  target  scheme  start…  (BENCH_* for the load generator are set per variant below)
run_variant() {
  local name=$1 target=$2 url=$3
  echo "== $name"
  "$bench" run --target "$target" --url "$url" --server-pid "$server_pid" --transport sse \
    --subscribers "$subscribers" --settle-secs 2 --idle-secs 5 --rate 5,10,20 --step-secs 3 --warmup \
    --json "$results/$name.json" >"$results/$name.md"
  stop_server
  sleep 1
}

start_herald
run_variant herald-http1 herald "http://127.0.0.1:$port"

export BENCH_CA_FILE="$work/ca.pem"
start_herald "${tls_files[@]}" "http2 = false"
BENCH_HTTP2=off run_variant herald-tls-http1 herald "https://localhost:$port"

start_herald "${tls_files[@]}"
run_variant herald-tls-h2 herald "https://localhost:$port"

start_herald "${tls_files[@]}"
BENCH_HTTP2_STREAMS=100 run_variant herald-tls-h2-100-streams herald "https://localhost:$port"

start_nchan_tls
run_variant nchan-tls-h2 nchan "https://localhost:$port"

echo "== summary"
{
  echo "| variant | idle RSS per subscriber, KiB | deliveries/s, server CPU, µs per delivery (each step after the warm-up) |"
  echo "|---|---|---|"
  for f in "$results"/*.json; do
    python3 - "$f" <<'PY'
import json, sys, os
r = json.load(open(sys.argv[1]))
name = os.path.basename(sys.argv[1])[:-5]
mem = (r.get("memory") or {}).get("rss_per_connection_bytes")
cells = []
for s in r.get("steps", []):
    if s.get("warmup") or not s.get("deliveries_per_sec"):
        continue
    per = s["server_cpu"] / s["deliveries_per_sec"] * 1e6
    cells.append(f"{s['deliveries_per_sec']:,.0f}/s, {s['server_cpu'] * 100:.0f}%, {per:.1f} µs")
memory = f"{mem / 1024:.1f}" if mem is not None else "–"
print(f"| {name} | {memory} | {'; '.join(cells)} |")
PY
  done
} | tee "$results/summary.md"
