#!/usr/bin/env bash
# Alternates servers on one herald-bench scenario, round after round, and prints each run's figures: how two builds
# of Herald (or Herald and Nchan, or the floor) compare on a machine whose speed drifts from minute to minute.
#
#   bench/alternate.sh SCENARIO ROUNDS LABEL=WHAT...
#     WHAT: a directory holding a release `herald` (two builds: copy each one's binary aside first), `nchan`, or
#           `floor` (`herald-bench floor`, for the cpu-* scenarios)
#   bench/alternate.sh publish-1000 3 main=/tmp/bin-main new=/tmp/bin-new nchan=nchan
#
#   env: ENV_<LABEL>="K=V ..."  extra environment for that Herald (e.g. ENV_one="TOKIO_WORKER_THREADS=1")
#        STEPS=1                every step of the load, not only the last
#        CLIENT=plain           subscribers on herald-bench's bare WebSocket client
#        BENCH=path             the herald-bench to drive the load (default: the release build of this checkout)
#
# Herald runs with `connection_queue = 4096` as in compare.sh; each run starts a fresh server on loopback.
# Printed per run: acknowledged publishes/s, deliveries/s, server CPU (cores), µs of server CPU per publish and
# per delivery, delivery latency p50/p99 ms, and the scenario's headline. The JSON of each run stays in the
# directory named at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/servers.sh
if [ $# -lt 3 ]; then sed -n '2,18p' "$0" >&2; exit 2; fi
if printf '%s\n' "$@" | grep -q '=nchan$'; then install_nchan alternate; fi
scenario=$1 rounds=$2
shift 2
bench=${BENCH:-${CARGO_TARGET_DIR:-target}/release/herald-bench}
[ -x "$bench" ] || { echo "alternate: no herald-bench at $bench (cargo build --release -p herald-bench)" >&2; exit 1; }
work=$(mktemp -d)
echo 'connection_queue = 4096' > "$work/herald.toml"
prepare_nchan "$work/nchan" 8091
refuse_taken_ports alternate 7171 8091 7095
trap stop_server EXIT

for round in $(seq "$rounds"); do
  for spec in "$@"; do
    label=${spec%%=*} what=${spec#*=}
    case $what in
      nchan)
        start_nchan_in alternate "$work/nchan" 8091
        port=8091 target=nchan ;;
      floor)
        "$bench" floor --listen 127.0.0.1:7095 2>"$work/floor.log" &
        server_pid=$! port=7095 target=floor
        wait_listening alternate "$server_pid" "$port" "$work/floor.log" ;;
      *)
        extra="ENV_$label"
        # shellcheck disable=SC2086 # ENV_<label> is a list of K=V words
        env ${!extra:-} "$what/herald" serve --listen 127.0.0.1:7171 --config "$work/herald.toml" 2>"$work/$label.log" &
        server_pid=$! port=7171 target=herald
        wait_listening alternate "$server_pid" "$port" "$work/$label.log" ;;
    esac
    out="$work/$label.$round"
    mkdir -p "$out"
    "$bench" scenario "$scenario" --target "$target" --url "http://127.0.0.1:$port" --server-pid "$server_pid" \
      --out "$out" ${CLIENT:+--client "$CLIENT"} > "$out/stdout" 2>&1 || { echo "$label round $round failed:"; tail -3 "$out/stdout"; }
    stop_server
    sleep 1
    python3 - "$out" "$label" "$round" "${STEPS:-0}" <<'PY'
import glob, json, sys
out, label, rnd, every = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
files = glob.glob(out + "/*.json")
if not files:
    sys.exit(0)
r = json.load(open(files[0]))
print(f"{label} round {rnd}: {r['metric']} {r['headline'] if r['headline'] is None else format(r['headline'], '.6g')}  gaps {r['gaps']} duplicates {r['duplicates']} errors {r['errors']}")
steps = r["load"].get("steps", [])
for s in steps if every else steps[-1:]:
    cpu, pubs, dels, lat = s["server_cpu"], s["publish_rate"], s["deliveries_per_sec"], s["latency_ms"]
    per = lambda rate: f"{cpu / rate * 1e6:.2f}" if rate else "-"
    print(f"   rate {s['rate'] or 'flat out'}: {pubs:.0f} publishes/s, {dels:.0f} deliveries/s, CPU {cpu:.2f},"
          f" µs/publish {per(pubs)}, µs/delivery {per(dels)}, p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
PY
  done
done
echo "results: $work"
