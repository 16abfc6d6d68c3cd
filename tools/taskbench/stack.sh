# Sourced by table.sh and profile.sh: release api + worker on a private port, prefix and database.
# Starts from a fresh database; sets API and WORKER (pids); on exit stops both and drops the
# database and the queues (the prefix's exchanges stay: rabbitmqctl cannot delete them).
B=${B:-target/release}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/tasksync_bench_baseline
export AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f' AMQP_PREFIX=taskbench-baseline
export HOST=127.0.0.1 PORT=38431 WORKER_HTTP_PORT=38432 RUST_LOG=warn
DB=tasksync_bench_baseline
psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres
cleanup() {
  kill -TERM "$API" "$WORKER" 2>/dev/null; wait "$API" "$WORKER" 2>/dev/null || true
  psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres || true
  for q in ops.work ops.parked ops.retry.1.1000ms ops.retry.2.5000ms ops.retry.3.25000ms; do
    rabbitmqctl -q delete_queue "$AMQP_PREFIX.$q" > /dev/null 2>&1 || true
  done
}
"$B/api" > "$OUT/api.log" 2>&1 & API=$!
# The api migrates the database and declares the topology before it is ready.
for _ in $(seq 100); do curl -sf 127.0.0.1:38431/api/ready > /dev/null && break; sleep 0.2; done
"$B/sync-worker" > "$OUT/worker.log" 2>&1 & WORKER=$!
trap cleanup EXIT
for _ in $(seq 50); do curl -sf 127.0.0.1:38432/ready > /dev/null && break; sleep 0.2; done
run() { name=$1; shift; "$B/taskbench" "$@" --base-url http://127.0.0.1:38431 \
          --api-pid "$API" --worker-pid "$WORKER" --json > "$OUT/$name.json"; }
