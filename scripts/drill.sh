#!/usr/bin/env bash
# A fault drill: a sale on three server nodes (ports 8281-8283) over one PostgreSQL (booking) and
# one Redis (queue), one fault injected mid-sale, then the load test's audit as judge.
#
#   scripts/drill.sh FAULT [load-test arguments]
#
# FAULT is one of
#   redis-flush       the deployment's Redis keys deleted at once (a restart without
#                     persistence, a failover to an empty replica)
#   redis-restart     Redis shut down without saving and started again (down, then empty)
#   postgres-restart  PostgreSQL restarted (fast shutdown: open transactions are cut)
#   node-kill         the second node killed with SIGKILL (its buyers lose their server)
#   node-pause        the second node stopped with SIGSTOP for longer than the hold time, then
#                     resumed (its late writes must be refused by fences)
#   none              no fault (the baseline)
#
# Env: FAULT_AT (seconds into the sale, 8), HOLD_TTL_SECS (the nodes' hold time, 10, so that a
# pause outlives holds), PAUSE_SECS (HOLD_TTL_SECS + 5). Load-test arguments replace the default
# `--users 1000 --run-time 40s`. Prints the load test's summary, the answers of 500 seen, and
# exits with the load test's status (0 when the audit PASSES). Needs root for the restarts (on
# this project's machines); leaves PostgreSQL and Redis running.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ticketing-target}"
# shellcheck source=scripts/services.sh
source scripts/services.sh

fault=${1:-}
case "$fault" in
  redis-flush | redis-restart | postgres-restart | node-kill | node-pause | none) shift ;;
  *) echo "usage: scripts/drill.sh redis-flush|redis-restart|postgres-restart|node-kill|node-pause|none [load-test args]" >&2; exit 2 ;;
esac
FAULT_AT=${FAULT_AT:-8}
HOLD_TTL_SECS=${HOLD_TTL_SECS:-10}
PAUSE_SECS=${PAUSE_SECS:-$((HOLD_TTL_SECS + 5))}

ensure_postgres
ensure_redis
postgres="postgres://postgres@127.0.0.1:5432/postgres"
database=ticketing_drill
store="${postgres%/*}/$database"
prefix="ticketing-drill:$(date +%s):"
admin_key="drill-$(date +%s)-$RANDOM$RANDOM"
token_secret="drill-token-secret-$(date +%s)-$RANDOM$RANDOM$RANDOM$RANDOM"
ports=(8281 8282 8283)
out=loadtest-results/drill-$fault
mkdir -p "$out"

cargo build --release -q -p ticketing-http -p loadtest
bin="$CARGO_TARGET_DIR/release"
psql "$postgres" -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
TICKETING_STORE="$store" "$bin/ticketing-http" migrate >/dev/null

pids=()
stop_nodes() {
  for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  ensure_postgres >/dev/null
  ensure_redis >/dev/null
}
trap stop_nodes EXIT
hosts=()
for port in "${ports[@]}"; do
  TICKETING_LISTEN="127.0.0.1:$port" TICKETING_STORE="$store" TICKETING_QUEUE="redis://127.0.0.1:6379/" \
    TICKETING_REDIS_PREFIX="$prefix" TICKETING_ADMIN_KEY="$admin_key" TICKETING_DEMO_SEED=false \
    TICKETING_TOKEN_SECRET="$token_secret" \
    TICKETING_INSECURE_DEMO_AUTH=true TICKETING_JOINS_PER_ADDRESS=off TICKETING_HOLD_TTL_SECS="$HOLD_TTL_SECS" RUST_LOG=warn \
    "$bin/ticketing-http" >"$out/node-$port.log" 2>&1 &
  pids+=("$!")
  hosts+=("http://127.0.0.1:$port")
done
for host in "${hosts[@]}"; do wait_for "the node at $host" curl -sf "$host/readyz"; done

inject() {
  sleep "$FAULT_AT"
  echo "drill: injecting $fault at ${FAULT_AT}s"
  case "$fault" in
    redis-flush)
      # At once, as a restart or a failover loses data (deleting in batches would be a partial
      # loss: a line whose counter outlives some of its tokens cannot tell those were lost).
      redis-cli -h 127.0.0.1 EVAL "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end" \
        0 "${prefix}*" >/dev/null ;;
    redis-restart)
      redis-cli -h 127.0.0.1 shutdown nosave >/dev/null 2>&1 || true
      sleep 2
      ensure_redis >/dev/null ;;
    postgres-restart)
      pg_ctlcluster --skip-systemctl-redirect "$(postgres_cluster)" main restart -m fast ;;
    node-kill)
      kill -KILL "${pids[1]}" ;;
    node-pause)
      kill -STOP "${pids[1]}"
      sleep "$PAUSE_SECS"
      kill -CONT "${pids[1]}" ;;
    none) ;;
  esac
  echo "drill: $fault injected"
}
inject &
injector=$!

if [ "$#" -eq 0 ]; then set -- --users 1000 --run-time 40s; fi
status=0
TICKETING_ADMIN_KEY="$admin_key" "$bin/loadtest" --host "${hosts[0]}" \
  --hosts "$(IFS=,; echo "${hosts[*]}")" --out-dir "$out" "$@" >"$out/loadtest.log" 2>&1 || status=$?
wait "$injector" || true
grep -E "^(sale|holds|errors|audit)|seats paid twice|^  seats " "$out/loadtest.log" || true
echo "answers of 500 (goose's error table):"
python3 - "$out/summary.json" <<'EOF'
import json, sys
try:
    errors = json.load(open(sys.argv[1]))["errors"]["goose"]
except (OSError, KeyError, ValueError):
    print("  (no summary)"); sys.exit(0)
fives = {k: v for k, v in errors.items() if "500" in k}
print("  none" if not fives else "\n".join(f"  {v} × {k}" for k, v in fives.items()))
EOF
echo "drill $fault: load test exit $status ($([ "$status" -eq 0 ] && echo PASS || echo FAIL))"
exit "$status"
