#!/usr/bin/env bash
# A Herald node on the Redis engine through a short Redis fault ("blip"): 5,000 WebSocket subscribers over 50
# channels (100 each), channels holding 1,500 messages of history (more than connection_queue, 1024), a low
# steady publish rate, then the blip. herald-bench reports the slow-consumer disconnects, history and catch-up
# reads (Herald's /metrics), the subscribers' reconnects, gaps and duplicates, and the time from Redis being
# back until every subscriber has received a message published after it ("everyone is live again").
#
#   bench/redis-blip.sh                  # both kinds of blip, one after the other (about 2 minutes)
#   bench/redis-blip.sh pubsub-kill      # Redis drops Herald's Pub/Sub connection, keeps running
#   bench/redis-blip.sh restart          # Redis shuts down and starts again, its data kept (AOF)
#
# The blips, both without losing any data, so that the subscribers truly missed nothing:
# - pubsub-kill: `CLIENT KILL TYPE pubsub` — what a network blip, a proxy or a failover does to the one
#   long-lived Pub/Sub connection; commands (publishes, history reads) never stop working.
# - restart: `SHUTDOWN NOSAVE` (which still writes the append-only file out) and the same redis-server
#   started again on the same port and directory: a Redis restart or upgrade, during which publishes fail.
#
# It starts its OWN redis-server (port 6391, on 127.0.0.1, data in a temp dir, AOF on, no RDB snapshots) and
# Herald (port 7181), a fresh pair per blip; never the shared Redis on 6379. Installs Debian's redis-server
# when missing, builds Herald and herald-bench in release (in $CARGO_TARGET_DIR if set), stops and removes
# everything it started on exit, and writes bench/results/redis-blip.<blip>.{json,md} (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
root=$(pwd)
results="$root/bench/results"
redis_port=6391
herald_port=7181
target="${CARGO_TARGET_DIR:-$root/target}"

install_redis redis-blip

echo "== building Herald and herald-bench (release)"
cargo build --release -q -p herald -p herald-bench
bench="$target/release/herald-bench"
herald="$target/release/herald"

refuse_taken_ports redis-blip "$redis_port" "$herald_port"

work=$(mktemp -d)
herald_pid=""
stop_all() {
  if [ -n "$herald_pid" ]; then
    kill "$herald_pid" 2>/dev/null || true
    wait "$herald_pid" 2>/dev/null || true
    herald_pid=""
  fi
  if [ -s "$work/redis/redis.pid" ]; then
    kill "$(cat "$work/redis/redis.pid")" 2>/dev/null || true
    for _ in $(seq 50); do [ -e "$work/redis/redis.pid" ] || break; sleep 0.1; done
  fi
}
trap 'stop_all; rm -rf "$work"' EXIT

# Starts (or restarts) Redis; the same command serves the restart blip, through the script written below.
cat > "$work/start-redis.sh" <<SH
#!/bin/sh
set -e
redis-server --port $redis_port --bind 127.0.0.1 --dir "$work/redis" --save '' --appendonly yes \
  --daemonize yes --pidfile "$work/redis/redis.pid" --logfile "$work/redis/redis.log"
for i in \$(seq 100); do
  [ "\$(redis-cli -p $redis_port ping 2>/dev/null)" = PONG ] && exit 0
  sleep 0.05
done
echo "redis-blip: Redis did not answer on port $redis_port" >&2
exit 1
SH
# The restart blip: SHUTDOWN NOSAVE writes the AOF out and exits; wait for the process to be gone, start again.
cat > "$work/restart-redis.sh" <<SH
#!/bin/sh
set -e
pid=\$(cat "$work/redis/redis.pid")
redis-cli -p $redis_port shutdown nosave >/dev/null 2>&1 || true
while kill -0 "\$pid" 2>/dev/null; do sleep 0.02; done
exec sh "$work/start-redis.sh"
SH

# connection_queue at its default, a history deeper than it: a replayed history overflows every queue.
cat > "$work/herald.toml" <<TOML
connection_queue = 1024

[default_namespace]
history_size = 2000
TOML

start_pair() {
  rm -rf "$work/redis" && mkdir -p "$work/redis"
  sh "$work/start-redis.sh"
  HERALD_ENGINE=redis HERALD_REDIS_URL="redis://127.0.0.1:$redis_port" \
    "$herald" serve --listen "127.0.0.1:$herald_port" --config "$work/herald.toml" 2>"$work/herald.log" &
  herald_pid=$!
  wait_listening redis-blip "$herald_pid" "$herald_port" "$work/herald.log"
}

if [ $# -gt 0 ]; then blips=("$@"); else blips=(pubsub-kill restart); fi
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
echo "== commit $commit, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(redis-server --version | cut -d' ' -f1-3)"
mkdir -p "$results"
for blip in "${blips[@]}"; do
  case "$blip" in
    pubsub-kill) command="redis-cli -p $redis_port client kill type pubsub >/dev/null" ;;
    restart) command="sh $work/restart-redis.sh" ;;
    *) echo "redis-blip: no blip $blip (pubsub-kill or restart)" >&2; exit 1 ;;
  esac
  echo "== $blip"
  start_pair
  "$bench" redis-blip --url "http://127.0.0.1:$herald_port" --label "$blip" --blip-command "$command" \
    --subscribers 5000 --channels 50 --history 1500 --rate 100 --json "$results/redis-blip.$blip.json"
  # What Herald's log says of the blip (the node's catch-up reads are in /metrics too, failed ones included).
  count() { grep -c "$1" "$work/herald.log" || true; }
  echo "- Herald's log: $(count 'redis pub/sub lost') Pub/Sub connection(s) lost, $(count 'redis pub/sub connected') made" \
    "(the first at start), $(count 'catch-up after a pub/sub drop failed') node catch-up read(s) failed and were retried" \
    | tee -a "$results/redis-blip.$blip.md"
  stop_all
  sleep 1
done
