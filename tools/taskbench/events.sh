#!/usr/bin/env bash
# The `events` scenario at scale: release api + worker on a private port, database and AMQP
# prefix (named like the test stacks', so the tests' sweep removes them should this be killed),
# authentication on so that every stream is its own user, then S streams while creates go in.
# Removes its database, queues and exchanges on exit.
#   S=1000 RATE=50 SECONDS=30 B=target/release bash tools/taskbench/events.sh
set -euo pipefail
B=${B:-target/release}
OUT=${OUT:-bench-out}
S=${S:-1000}
RATE=${RATE:-50}
SECONDS_RUN=${SECONDS:-30}
mkdir -p "$OUT"
born=$(date +%s)
tag=$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')
DB="tasksync_test_${born}_${tag}"
PREFIX="test-${born}-${tag:0:8}"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f' AMQP_PREFIX="$PREFIX"
export HOST=127.0.0.1 PORT=${PORT:-38471} WORKER_HTTP_PORT=${WORKER_HTTP_PORT:-38472} RUST_LOG=warn
export JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
API="" WORKER=""
cleanup() {
  set +e
  for pid in $API $WORKER; do kill -TERM "$pid" 2>/dev/null; done
  for pid in $API $WORKER; do wait "$pid" 2>/dev/null; done
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null
  for q in $(rabbitmqctl -q --no-table-headers list_queues name | grep "^$PREFIX\."); do
    rabbitmqctl -q delete_queue "$q" >/dev/null
  done
  for x in $(rabbitmqctl -q --no-table-headers list_exchanges name | grep "^$PREFIX\."); do
    rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$x\">>), false, <<\"taskbench\">>)." >/dev/null
  done
}
trap cleanup EXIT
"$B/sync-worker" migrate > "$OUT/events-migrate.log" 2>&1
"$B/sync-worker" > "$OUT/events-worker.log" 2>&1 & WORKER=$!
"$B/api" > "$OUT/events-api.log" 2>&1 & API=$!
for i in $(seq 100); do curl -sf "127.0.0.1:$PORT/api/ready" > /dev/null && break; sleep 0.2; done
"$B/taskbench" events --base-url "http://127.0.0.1:$PORT" --subscribers "$S" --rate "$RATE" \
  --duration "$SECONDS_RUN" --drain-timeout 30 --json > "$OUT/events-$S.json"
cat "$OUT/events-$S.json"
