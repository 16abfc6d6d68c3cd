#!/usr/bin/env bash
# schemathesis against a live api + sync-worker on the local Postgres and RabbitMQ: every
# operation of /api/openapi.json, with the checks not_a_server_error, status_code_conformance,
# content_type_conformance and response_schema_conformance; zero failures expected.
#
# The two services run on private ports with their own database and AMQP prefix, named like the
# test stacks' (tasksync_test_<secs>_<tag>, test-<secs>-<tag>.) so that the tests' sweep removes
# them should this script be killed before its own cleanup; the EXIT trap stops both processes
# and drops the database, queues and exchanges, also on failure. Authentication is on (a token
# minted by `api token`), the rate limit off. Bounded: SCHEMATHESIS_MAX_EXAMPLES cases per
# operation and phase, and a wall-clock cap of SCHEMATHESIS_TIMEOUT seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
PIKA_VERSION=1.3.2
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
TIME_CAP=${SCHEMATHESIS_TIMEOUT:-420}
VENV=target/schemathesis-venv
LOGS=target/schemathesis
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

log() { printf '\n== %s\n' "$*"; }

log "schemathesis $SCHEMATHESIS_VERSION in $VENV"
if ! "$VENV/bin/st" --version 2>/dev/null | grep -qx "st, version $SCHEMATHESIS_VERSION" ||
  ! "$VENV/bin/python" -c "import pika; assert pika.__version__ == '$PIKA_VERSION'" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "pika==$PIKA_VERSION"
fi
ST="$PWD/$VENV/bin/st"
"$ST" --version

log "build api and sync-worker (debug)"
cargo build --locked -q -p api -p sync-worker
API=target/debug/api
WORKER=target/debug/sync-worker

free_port() {
  "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
born=$(date +%s)
tag=$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')
DB="tasksync_test_${born}_${tag}"
PREFIX="test-${born}-${tag:0:8}"
PORT=$(free_port)
mkdir -p "$LOGS"
rm -f "$LOGS"/junit-*.xml "$LOGS"/har-*.json

export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export AMQP_PREFIX="$PREFIX"
export HOST=127.0.0.1 PORT
export WORKER_HTTP_PORT=$(free_port)
export JWT_SECRET=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))')
export RATE_LIMIT_RPS=0
export LOG_FORMAT=text RUST_LOG=warn
unset JWT_PUBLIC_KEY_FILE JWT_JWKS_URL JWT_ISSUER JWT_AUDIENCE

api_pid=""
worker_pid=""
cleanup() {
  local status=$?
  set +e
  for pid in $api_pid $worker_pid; do kill -TERM "$pid" 2>/dev/null; done
  for pid in $api_pid $worker_pid; do wait "$pid" 2>/dev/null; done
  psql -q -h 127.0.0.1 -U postgres -d postgres \
    -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null
  "$VENV/bin/python" - "$PREFIX" <<'PY'
import subprocess, sys, urllib.parse, os, pika
prefix = sys.argv[1] + "."
def names(what):
    out = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", "--timeout", "10", what, "name"],
                         capture_output=True, text=True, check=True).stdout
    return [n.strip() for n in out.splitlines() if n.strip().startswith(prefix)]
queues, exchanges = names("list_queues"), names("list_exchanges")
channel = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"])).channel()
for q in queues: channel.queue_delete(q)
for e in exchanges: channel.exchange_delete(e)
print(f"removed database, {len(queues)} queues and {len(exchanges)} exchanges of {sys.argv[1]}")
PY
  if [ "$status" -ne 0 ]; then
    echo "--- api log (tail)"; tail -n 40 "$LOGS/api.log"
    echo "--- worker log (tail)"; tail -n 40 "$LOGS/worker.log"
  fi
  exit "$status"
}
trap cleanup EXIT

log "start sync-worker and api on 127.0.0.1:$PORT (database $DB, prefix $PREFIX)"
"$WORKER" migrate >"$LOGS/migrate.log" 2>&1
"$WORKER" >"$LOGS/worker.log" 2>&1 &
worker_pid=$!
"$API" >"$LOGS/api.log" 2>&1 &
api_pid=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 120); do
  curl -fs "$BASE/api/ready" >/dev/null && break
  sleep 0.5
done
curl -fsS "$BASE/api/ready" && echo

TOKEN=$("$API" token --sub schemathesis --ttl 3600)

log "schemathesis: every operation but the event stream, $MAX_EXAMPLES examples each, at most $TIME_CAP s"
started=$(date +%s)
# GET /api/events (operation get_events) is left out: a successful answer is an endless
# text/event-stream, which schemathesis would read until its request timeout and report as a
# failure. Its answers (the stream, 400 for a bad Last-Event-ID or since, 401, 429, 503) are
# tested in Rust: tests/tests/sync/events.rs, and the document/router agreement in
# tests/tests/openapi.rs covers it like every route.
# From a copy of the document: schemathesis leaves out the operation at its schema's own URL,
# and GET /api/openapi.json is one of the api's operations. Run from $LOGS, where schemathesis
# keeps its cache (.schemathesis/) and reports.
curl -fsS "$BASE/api/openapi.json" -o "$LOGS/openapi.json"
(
  cd "$LOGS"
  timeout "$TIME_CAP" "$ST" run openapi.json --url "$BASE" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    --header "Authorization: Bearer $TOKEN" \
    --workers 2 \
    --request-timeout 10 \
    --exclude-operation-id get_events \
    --report junit,har --report-dir . \
    ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"}
)
echo "schemathesis took $(($(date +%s) - started)) s"
