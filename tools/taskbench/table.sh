#!/usr/bin/env bash
# The performance table (docs/performance.md): every scenario in turn against a release api + worker
# on a private port, prefix and database.
set -euo pipefail
. "$(dirname "$0")/stack.sh"
run ceiling    ceiling    --connections 4  --items 500  --duration 15
run read-list  read-list  --connections 16 --duration 15   # first: the user owns exactly 1,000
run read-one   read-one   --connections 32 --duration 15
run batch-1    batch      --connections 1  --items 1000 --duration 15
run batch-4    batch      --connections 4  --items 1000 --duration 15
run batch-16   batch      --connections 16 --items 1000 --duration 15
run rest-16    rest-write --connections 16 --duration 15
run rest-32    rest-write --connections 32 --duration 15
run mixed      mixed      --connections 32 --duration 15
