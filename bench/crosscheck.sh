#!/usr/bin/env bash
# The fan-out figures with two load generators, so that the headline does not depend on the generator (issue 20,
# "Also"): the same scenario, against Herald, Nchan and the floor, with the subscribers on herald-client (Herald's
# envelopes parsed and their `data` written back out, Nchan's raw bodies taken as they come) and on herald-bench's
# bare WebSocket client (`--client plain`: frame headers read, the payload found by a scan, alike for every
# server), alternating, round after round.
#
#   bench/crosscheck.sh                       # cpu-ws-2k, 2 rounds (about 2 minutes)
#   ROUNDS=3 bench/crosscheck.sh cpu-ws-2k cpu-ws-10k
#   ROUNDS=2 bench/crosscheck.sh --summary cpu-ws-2k   # tabulate the kept results again, run nothing
#
# Each round is one bench/compare.sh run per generator; their results are kept in
# bench/results/crosscheck/<round>-<generator>/ and tabulated in bench/results/crosscheck/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out="$root/bench/results/crosscheck"
rounds=${ROUNDS:-2}
summary_only=0
if [ "${1:-}" = --summary ]; then summary_only=1; shift; fi
if [ $# -gt 0 ]; then scenarios=("$@"); else scenarios=(cpu-ws-2k); fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if [ $summary_only = 0 ]; then rm -rf "$out"; fi
mkdir -p "$out"
for round in $(seq "$rounds"); do
  [ $summary_only = 0 ] || break
  for client in herald-client plain; do
    echo "== round $round, subscribers on $client (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    bench/compare.sh --client "$client" "${scenarios[@]}"
    from="$root/bench/results"
    if [ "$client" != herald-client ]; then from="$from/$client"; fi
    mkdir -p "$out/$round-$client"
    for scenario in "${scenarios[@]}"; do cp "$from/$scenario".*.json "$out/$round-$client/"; done
  done
done

{
  echo "Subscribers on herald-client against herald-bench's plain WebSocket client, $rounds round(s), commit"
  if [ $summary_only = 0 ]; then
    echo "$(git describe --always --dirty 2>/dev/null || echo unknown), $(nproc) cores, load average at the start: $load_before, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  else
    echo "$(git describe --always --dirty 2>/dev/null || echo unknown) (tabulated again from the kept results)"
  fi
  echo
  echo "| scenario | server | generator | round | µs server CPU / delivery | deliveries/s | p99 ms | server CPU | generator CPU | µs generator CPU / delivery |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
  for scenario in "${scenarios[@]}"; do
    for target in herald nchan floor; do
      for client in herald-client plain; do
        for round in $(seq "$rounds"); do
          file="$out/$round-$client/$scenario.$target.json"
          [ -e "$file" ] || continue
          jq -r --arg r "$round" --arg t "$target" --arg c "$client" '
            (.load.steps | map(select(.warmup | not)) | first) as $s
            | "| \(.scenario) | \($t) | \($c) | \($r) | \(.headline // 0 | . * 100 | round / 100)"
              + " | \($s.deliveries_per_sec | round) | \($s.latency_ms.p99) | \($s.server_cpu * 100 | round)%"
              + " | \($s.bench_cpu * 100 | round)%"
              + " | \(if $s.deliveries_per_sec > 0 then $s.bench_cpu / $s.deliveries_per_sec * 1e8 | round / 100 else 0 end) |"' "$file"
        done
      done
    done
  done
} >"$out/summary.md"
echo
cat "$out/summary.md"
