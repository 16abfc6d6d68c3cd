#!/usr/bin/env bash
# What bounds a scenario: runs one taskbench scenario against a release api + worker (stack.sh) and,
# over the same window, measures the CPU every process spent (api, worker, RabbitMQ, Postgres,
# taskbench itself) and samples the api's and the worker's stacks with perf.
#
#   tools/taskbench/profile.sh NAME SCENARIO [taskbench flags...]
#   e.g. tools/taskbench/profile.sh rest-32 rest-write --connections 32 --duration 15
#
# Writes $OUT/NAME.json (the report), $OUT/NAME.cpu (CPU seconds per process and per request or
# operation) and, when perf and inferno are installed, $OUT/NAME-{api,worker}.folded and .svg.
set -euo pipefail
name=$1; shift
. "$(dirname "$0")/stack.sh"
ticks() { # utime+stime (+ reaped children) of the given pids, in clock ticks
  local sum=0 p f
  for p in "$@"; do
    f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    f=${f##*) }   # the fields after the command name
    read -r -a a <<< "$f"
    sum=$((sum + a[11] + a[12] + a[13] + a[14]))
  done
  echo "$sum"
}
pids_of() { pgrep -d ' ' "$@" || true; }
snapshot() {
  echo "api $(ticks "$API")"
  echo "worker $(ticks "$WORKER")"
  echo "rabbitmq $(ticks $(pids_of -x beam.smp))"
  echo "postgres $(ticks $(pids_of -u postgres))"
  echo "machine $(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)"
}
# First run: the CPU each process spends over a window in the middle of the load, nothing else
# attached (perf's own stack copying would slow the services down).
"$B/taskbench" "$@" --base-url http://127.0.0.1:38431 --api-pid "$API" --worker-pid "$WORKER" \
  --json > "$OUT/$name.json" & BENCH=$!
sleep 3   # past the seeding and the ramp-up
before=$(snapshot; echo "taskbench $(ticks "$BENCH")"); t0=$(date +%s.%N)
sleep 8
after=$(snapshot; echo "taskbench $(ticks "$BENCH")"); t1=$(date +%s.%N)
wait "$BENCH"
hz=$(getconf CLK_TCK)
python3 - "$OUT/$name.json" "$t0" "$t1" "$hz" > "$OUT/$name.cpu" <<PY
import json, sys
report = json.load(open(sys.argv[1]))
t = float(sys.argv[3]) - float(sys.argv[2]); hz = int(sys.argv[4])
before = dict(l.split() for l in """$before""".splitlines())
after = dict(l.split() for l in """$after""".splitlines())
rate = report.get("requests_per_s") or 0
ops = (report.get("ops") or {}).get("applied_per_s") or 0
print(f"window {t:.1f} s; requests/s {rate:.0f}; applied ops/s {ops:.0f}")
for k in ["api", "worker", "rabbitmq", "postgres", "taskbench", "machine"]:
    cores = (int(after[k]) - int(before[k])) / hz / t
    line = f"{k:10} {cores:5.2f} cores"
    if rate: line += f"  {cores * 1e6 / rate:8.0f} µs per request"
    if ops: line += f"  {cores * 1e6 / ops:8.1f} µs per applied op"
    print(line)
PY
# Second run, the same load: where the api's and the worker's CPU goes.
if command -v perf > /dev/null; then
  "$B/taskbench" "$@" --base-url http://127.0.0.1:38431 > /dev/null & BENCH=$!
  sleep 3
  perf record -q -F 99 --call-graph dwarf,16384 -o "$OUT/$name-api.perf" -p "$API" -- sleep 8 & P1=$!
  perf record -q -F 99 --call-graph dwarf,16384 -o "$OUT/$name-worker.perf" -p "$WORKER" -- sleep 8 & P2=$!
  wait "$P1" "$P2" "$BENCH"
fi
if command -v perf > /dev/null && command -v inferno-collapse-perf > /dev/null; then
  for side in api worker; do
    perf script -i "$OUT/$name-$side.perf" 2> /dev/null | inferno-collapse-perf > "$OUT/$name-$side.folded"
    inferno-flamegraph --title "$name: $side" < "$OUT/$name-$side.folded" > "$OUT/$name-$side.svg"
  done
fi
cat "$OUT/$name.cpu"
