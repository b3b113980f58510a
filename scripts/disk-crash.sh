#!/usr/bin/env bash
# The long form of tests/disk.rs's crash tests: a disk-engine Herald (fsync = "always") killed with SIGKILL at a
# random moment of a publish storm, ROUNDS times; after each restart, every message that was acknowledged (201)
# must be readable at its offset with its data. Bounded: ROUNDS rounds of at most a few seconds each.
#
#   scripts/disk-crash.sh [ROUNDS] [DATA_DIR_PARENT]     # defaults: 50, /var/tmp
#   BIN_DIR=/some/release scripts/disk-crash.sh          # that build's herald, not built here
#   FSYNC=interval scripts/disk-crash.sh                 # fsync = "interval" (an hour apart): a SIGKILL of the
#                                                        # process must lose no acknowledged message either
#
# Needs curl and jq. Prints one line per round and exits 1 at the first lost message.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-50}"
parent="${2:-/var/tmp}"
target="${CARGO_TARGET_DIR:-target}"
[ -z "${BIN_DIR:-}" ] && cargo build --release -q -p herald
herald="${BIN_DIR:-$target/release}/herald"
port=7082
work="$(mktemp -d "$parent/herald-disk-crash.XXXXXX")"
server_pid=""
publishers=()
cleanup() {
  for pid in "${publishers[@]}" $server_pid; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
printf '[default_namespace]\nhistory_size = 100000\nhistory_ttl_secs = 86400\n' >"$work/herald.toml"

start() {
  HERALD_FSYNC="${FSYNC:-always}" HERALD_FSYNC_INTERVAL_MS=3600000 HERALD_LOG=warn "$herald" serve --listen "127.0.0.1:$port" --engine disk \
    --data-dir "$work/data" --config "$work/herald.toml" 2>>"$work/log" &
  server_pid=$!
  for _ in $(seq 100); do
    if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "disk-crash: the server did not start; its log:" >&2
  tail -n 20 "$work/log" >&2
  exit 1
}

# publisher P: publishes {"i": "<P>-<k>"} until the server is gone, logging "<offset> <P>-<k>" per 201.
publisher() {
  local p=$1 k=0
  while true; do
    k=$((k + 1))
    answer=$(curl -s -m 5 -X POST "http://127.0.0.1:$port/v1/channels/storm/messages" \
      -H 'Content-Type: application/json' -d "{\"data\":{\"i\":\"$p-$k\"}}" -w '\n%{http_code}') || return 0
    [ "$(tail -n1 <<<"$answer")" = 201 ] || return 0
    echo "$(head -n1 <<<"$answer" | jq -r .offset) $p-$k" >>"$work/acked.$p"
  done
}

for round in $(seq "$rounds"); do
  start
  rm -f "$work"/acked.*
  publishers=()
  for p in 1 2 3 4 5 6 7 8; do publisher "$p" & publishers+=($!); done
  sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.3 + (r % 300) / 100 }')"
  kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null || true
  for pid in "${publishers[@]}"; do wait "$pid" 2>/dev/null || true; done
  start
  # Every retained message, page by page.
  : >"$work/stored"
  cursor=""
  while true; do
    page=$(curl -sf "http://127.0.0.1:$port/v1/channels/storm/messages?limit=1000${cursor:+&since=$cursor}")
    [ "$(jq '.messages | length' <<<"$page")" = 0 ] && break
    jq -r '.messages[] | "\(.offset) \(.data.i)"' <<<"$page" >>"$work/stored"
    cursor=$(jq -r .cursor <<<"$page")
  done
  acked=$(cat "$work"/acked.* 2>/dev/null | sort -u | wc -l)
  missing=$(cat "$work"/acked.* 2>/dev/null | sort -u | comm -23 - <(sort -u "$work/stored") | head -5)
  if [ -n "$missing" ]; then
    echo "round $round: acknowledged but not readable at its offset:" >&2
    echo "$missing" >&2
    exit 1
  fi
  echo "round $round: $acked acknowledged this round, all readable; $(wc -l <"$work/stored") stored in all"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
done
echo "disk-crash: $rounds rounds, no acknowledged message lost"
