#!/usr/bin/env bash
# What a sale costs: runs the load test's sale against a release server on memory, then on
# PostgreSQL + Redis, and prints purchases per second and the CPU time each process spent
# (server, PostgreSQL, Redis, the load generator), read from /proc before and after the run,
# per purchase and per HTTP request.
#
#   scripts/sale.sh [memory | pg-redis]      (default: both, one after the other)
#
# Env: USERS (2000), RUN_TIME (30s), SEATS (2000), LOADTEST_ARGS for more load-test flags, and
# SERVER_BIN to measure another server binary (an older commit's, say) with the same load test.
# The queue is opened up (max-active = seats, 500 admitted every 250 ms) so the stores, not the
# queue's pace, bound the sale; the run ends for good once every seat is sold (no one new
# arrives), so the CPU measured is the sale's. PostgreSQL + Redis use a fresh database and a fresh
# key prefix. PostgreSQL's CPU is the postmaster's own and its children's (exited ones through
# the postmaster's reaped-children times), so connections opened and closed during the run
# count. Everything shares the machine's cores: compare figures taken in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ticketing-target}"
# shellcheck source=scripts/services.sh
source scripts/services.sh

USERS=${USERS:-2000}
RUN_TIME=${RUN_TIME:-30s}
SEATS=${SEATS:-2000}
PORT=18580
BASE="http://127.0.0.1:$PORT"
ADMIN_KEY="sale-$$-$RANDOM$RANDOM"
OUT=${OUT:-loadtest-results/sale}
mkdir -p "$OUT"

cargo build --release -q -p ticketing-http -p loadtest
bin="$CARGO_TARGET_DIR/release"
server_bin=${SERVER_BIN:-$bin/ticketing-http}

server_pid=""
database=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=""
  if [ -n "$database" ]; then dropdb -h 127.0.0.1 -U postgres --if-exists --force "$database" >/dev/null 2>&1 || true; fi
  database=""
}
trap cleanup EXIT

# CPU seconds used so far by a process and every thread of it; with "tree", also by its live
# children and its reaped ones (the postmaster and its backends).
cpu() { # pid [tree]
  python3 - "$@" <<'EOF'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
def fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
def own(pid, reaped=False):
    f = fields(pid)  # f[0] is the state (field 3): utime is field 14, so f[11]
    total = int(f[11]) + int(f[12])
    if reaped:
        total += int(f[13]) + int(f[14])
    return total
pid = int(sys.argv[1])
total = own(pid, reaped=len(sys.argv) > 2)
if len(sys.argv) > 2:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(fields(entry)[1]) == pid:
                    total += own(entry)
            except (FileNotFoundError, ProcessLookupError):
                pass
print(total / tick)
EOF
}

postmaster() { head -1 "$(psql -h 127.0.0.1 -U postgres -Atqc 'SHOW data_directory')/postmaster.pid" 2>/dev/null || pgrep -o -x postgres; }

rows=()
run() { # name, store, queue
  local name=$1 store=$2 queue=$3
  if [ "$store" != memory ]; then TICKETING_STORE="$store" "$server_bin" migrate >/dev/null; fi
  TICKETING_LISTEN="127.0.0.1:$PORT" TICKETING_STORE="$store" TICKETING_QUEUE="$queue" \
    TICKETING_ADMIN_KEY="$ADMIN_KEY" TICKETING_DEMO_SEED=false TICKETING_INSECURE_DEMO_AUTH=true TICKETING_JOINS_PER_ADDRESS=off \
    TICKETING_REDIS_PREFIX="sale:$$:" RUST_LOG=warn \
    "$server_bin" >"$OUT/server-$name.log" 2>&1 &
  server_pid=$!
  wait_for "the server" curl -sf "$BASE/readyz"
  local pg redis
  pg=$(postmaster)
  redis=$(pgrep -o -x redis-server || true)
  local s0 p0 r0 l0 s1 p1 r1 l1
  s0=$(cpu "$server_pid"); p0=$(cpu "$pg" tree); r0=${redis:+$(cpu "$redis")}
  l0=$(cpu $$ tree)
  TICKETING_ADMIN_KEY="$ADMIN_KEY" "$bin/loadtest" --host "$BASE" --users "$USERS" --run-time "$RUN_TIME" \
    --seats "$SEATS" --max-active "$SEATS" --admit-batch 500 --admit-interval-ms 250 \
    --out-dir "$OUT/$name" ${LOADTEST_ARGS:-} >"$OUT/loadtest-$name.log" 2>&1 \
    || { echo "error: the load test failed on $name (see $OUT/loadtest-$name.log)" >&2; exit 1; }
  s1=$(cpu "$server_pid"); p1=$(cpu "$pg" tree); r1=${redis:+$(cpu "$redis")}
  l1=$(cpu $$ tree)
  rows+=("$(python3 - "$name" "$OUT/$name/summary.json" "$s0" "$s1" "$p0" "$p1" "${r0:-0}" "${r1:-0}" "$l0" "$l1" "$store" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
s0, s1, p0, p1, r0, r1, l0, l1 = map(float, sys.argv[3:11])
memory = sys.argv[11] == "memory"
d = json.load(open(path))
purchases = d["purchases"]
requests = sum(step["count"] for step in d["steps"].values())
# The script's tree holds the server and the load generator (and this script's own small tools).
server, pg, redis, gen = s1 - s0, p1 - p0, r1 - r0, (l1 - l0) - (s1 - s0)
if memory:
    pg = redis = 0.0  # not in the sale (other work on the machine would show up here)
stores = server + pg + redis
per = lambda cpu, n: cpu * 1000 / n if n else float("nan")
print("\t".join(map(str, [
    name, d["verdict"],
    purchases, f'{d["purchasesPerSecond"]:.0f}',
    f'{d["timeToSellOutSecs"]:.1f}' if d.get("timeToSellOutSecs") is not None else "-",
    requests, f"{per(stores, purchases):.2f}", f"{per(server, purchases):.2f}", f"{per(pg, purchases):.2f}",
    f"{per(redis, purchases):.2f}", f"{per(server, requests) * 1000:.0f}", f"{per(gen, purchases):.2f}",
])))
EOF
)")
  cleanup
}

which=${1:-both}
if [ "$which" = memory ] || [ "$which" = both ]; then
  run memory memory memory
fi
if [ "$which" = pg-redis ] || [ "$which" = both ]; then
  ensure_postgres
  ensure_redis
  database="sale_$$"
  createdb -h 127.0.0.1 -U postgres "$database"
  run pg-redis "postgres://postgres@127.0.0.1:5432/$database" "redis://127.0.0.1:6379/"
fi

echo
echo "| $USERS users, $SEATS seats, queue opened | audit | purchases | purchases/s | sell-out s | HTTP requests | CPU ms per purchase (server + stores) | server | PostgreSQL | Redis | server µs per request | load generator ms per purchase |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in "${rows[@]}"; do
  echo "| ${row//$'\t'/ | } |"
done
