#!/usr/bin/env bash
# Three server processes on ports 8181-8183 against one PostgreSQL (booking) and one Redis
# (queue), the load test spread over all three (goose user i talks to node i mod 3), then the
# audit of the sale. Exits with the load test's status: 0 on PASS, 1 on FAIL, 2 when it could
# not run.
#
#   scripts/multinode.sh                                   # 2,000 users for 60 s
#   scripts/multinode.sh --users 5000 --run-time 30s --seats 2000
#
# Arguments replace the default `--users 2000 --run-time 60s` and go to the load test as they
# are. Each run gets a fresh database (ticketing_multinode) and a fresh Redis key prefix.
# Results: loadtest-results/multinode/ (summary.json, report.html) and the nodes' logs there.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ticketing-target}"

# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_postgres
ensure_redis

postgres="${TICKETING_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
redis="${TICKETING_TEST_REDIS_URL:-redis://127.0.0.1:6379/}"
database=ticketing_multinode
store="${postgres%/*}/$database"
prefix="ticketing-multinode:$(date +%s):"
admin_key="multinode-$(date +%s)-$RANDOM$RANDOM"
ports=(8181 8182 8183)
out=loadtest-results/multinode
mkdir -p "$out"

cargo build --release -p ticketing-http -p loadtest
bin="$CARGO_TARGET_DIR/release"

psql "$postgres" -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
TICKETING_STORE="$store" "$bin/ticketing-http" migrate

pids=()
stop_nodes() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop_nodes EXIT

hosts=()
for port in "${ports[@]}"; do
  TICKETING_LISTEN="127.0.0.1:$port" TICKETING_STORE="$store" TICKETING_QUEUE="$redis" \
    TICKETING_REDIS_PREFIX="$prefix" TICKETING_ADMIN_KEY="$admin_key" TICKETING_DEMO_SEED=false \
    TICKETING_INSECURE_DEMO_AUTH=true TICKETING_JOINS_PER_ADDRESS=off \
    "$bin/ticketing-http" >"$out/node-$port.log" 2>&1 &
  pids+=("$!")
  hosts+=("http://127.0.0.1:$port")
done
for host in "${hosts[@]}"; do
  wait_for "the node at $host" curl -sf "$host/readyz"
done
echo "three nodes up: ${hosts[*]} (PostgreSQL $store, Redis $redis prefix $prefix)"

if [ "$#" -eq 0 ]; then set -- --users 2000 --run-time 60s; fi
status=0
TICKETING_ADMIN_KEY="$admin_key" "$bin/loadtest" --host "${hosts[0]}" \
  --hosts "$(IFS=,; echo "${hosts[*]}")" --out-dir "$out" "$@" || status=$?
exit "$status"
