# Sourced by table.sh, profile.sh and scaling.sh: release api + worker(s) on a private port,
# prefix and database. Starts from a fresh database; sets API and WORKER (pids; WORKERS_PIDS for
# all workers); on exit stops them and drops the database and the prefix's queues (the
# exchanges stay: rabbitmqctl cannot delete them).
#
# WORKERS (default 1) workers are started; WORK_PARTITIONS (default 1) is passed to every
# service. With SPLIT=1 and WORKERS = WORK_PARTITIONS, worker i consumes partition i only.
B=${B:-target/release}
OUT=${OUT:-bench-out}
WORKERS=${WORKERS:-1}
mkdir -p "$OUT"
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/tasksync_bench_baseline
export AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f' AMQP_PREFIX=taskbench-baseline
export HOST=127.0.0.1 PORT=38431 RUST_LOG=warn WORK_PARTITIONS=${WORK_PARTITIONS:-1}
DB=tasksync_bench_baseline
psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres
cleanup() {
  kill -TERM "$API" $WORKERS_PIDS 2>/dev/null; wait "$API" $WORKERS_PIDS 2>/dev/null || true
  psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres || true
  rabbitmqctl -q list_queues name 2>/dev/null | grep "^$AMQP_PREFIX\." | while read -r q; do
    rabbitmqctl -q delete_queue "$q" < /dev/null > /dev/null 2>&1 || true
  done
}
WORKER_HTTP_PORT=38432 "$B/api" > "$OUT/api.log" 2>&1 & API=$!
# The api migrates the database and declares the topology before it is ready.
for _ in $(seq 100); do curl -sf 127.0.0.1:38431/api/ready > /dev/null && break; sleep 0.2; done
WORKERS_PIDS=
for i in $(seq 0 $((WORKERS - 1))); do
  if [ "${SPLIT:-0}" = 1 ]; then export WORKER_PARTITIONS=$i; fi
  WORKER_HTTP_PORT=$((38432 + i)) "$B/sync-worker" > "$OUT/worker-$i.log" 2>&1 &
  WORKERS_PIDS="$WORKERS_PIDS $!"
done
WORKER=${WORKERS_PIDS# }; WORKER=${WORKER%% *}
trap cleanup EXIT
for i in $(seq 0 $((WORKERS - 1))); do
  for _ in $(seq 50); do curl -sf "127.0.0.1:$((38432 + i))/ready" > /dev/null && break; sleep 0.2; done
done
run() { name=$1; shift; "$B/taskbench" "$@" --base-url http://127.0.0.1:38431 \
          --api-pid "$API" --worker-pid "$WORKER" --json > "$OUT/$name.json"; }
