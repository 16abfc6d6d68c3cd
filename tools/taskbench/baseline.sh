#!/usr/bin/env bash
# Baseline: release api + worker on a private port, prefix and database; every scenario in turn.
set -euo pipefail
B=${B:-target/release}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/tasksync_bench_baseline
export AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f' AMQP_PREFIX=taskbench-baseline
export HOST=127.0.0.1 PORT=38431 WORKER_HTTP_PORT=38432 RUST_LOG=warn
"$B/api" > "$OUT/api.log" 2>&1 & API=$!
# The api migrates the database and declares the topology before it is ready.
for i in $(seq 100); do curl -sf 127.0.0.1:38431/api/ready > /dev/null && break; sleep 0.2; done
"$B/sync-worker" > "$OUT/worker.log" 2>&1 & WORKER=$!
trap 'kill -TERM $API $WORKER' EXIT
for i in $(seq 50); do curl -sf 127.0.0.1:38432/ready > /dev/null && break; sleep 0.2; done
run() { name=$1; shift; "$B/taskbench" "$@" --base-url http://127.0.0.1:38431 \
          --api-pid $API --worker-pid $WORKER --json > "$OUT/$name.json"; }
run ceiling    ceiling    --connections 4  --items 500  --duration 15
run read-list  read-list  --connections 16 --duration 15   # first: the user owns exactly 1,000
run read-one   read-one   --connections 32 --duration 15
run batch-1    batch      --connections 1  --items 1000 --duration 15
run batch-4    batch      --connections 4  --items 1000 --duration 15
run batch-16   batch      --connections 16 --items 1000 --duration 15
run rest-16    rest-write --connections 16 --duration 15
run rest-32    rest-write --connections 32 --duration 15
run mixed      mixed      --connections 32 --duration 15
