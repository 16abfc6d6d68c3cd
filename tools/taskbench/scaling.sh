#!/usr/bin/env bash
# docs/scaling.md: the same loads against 1 and 2 workers, and against 1 and 3 work partitions,
# each configuration on a fresh release stack (stack.sh). Figures in $OUT/scale-*.json.
#   bash tools/taskbench/scaling.sh            # after cargo build --release
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
configuration() { # name workers partitions split
  (
    export WORKERS=$2 WORK_PARTITIONS=$3 SPLIT=$4
    . tools/taskbench/stack.sh
    run "scale-$1-batch" batch --connections 4 --items 1000 --duration "$SECONDS_PER_RUN"
    run "scale-$1-rest" rest-write --connections 32 --duration "$SECONDS_PER_RUN"
  )
}
configuration w1-k1 1 1 0
configuration w2-k1 2 1 0
configuration w1-k3 1 3 0
configuration w3-k3 3 3 1
