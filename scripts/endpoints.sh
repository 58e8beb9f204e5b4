#!/usr/bin/env bash
# Single-endpoint throughput of a release server: token issue (a new user each request), status
# poll (one token waiting behind a full capacity) and a 50-seat list (one active token), each
# with wrk for a fixed time, against the demo concert.
#
#   scripts/endpoints.sh [memory | pg-redis]      (default: both, one after the other)
#
# Env: BIN (the server binary; default: builds and uses target/release/ticketing-http),
# DURATION (10s), CONNECTIONS (50), THREADS (2). PostgreSQL + Redis use a fresh database and a
# fresh key prefix, dropped afterwards. Needs wrk (installed with apt-get when run as root).
# The load generator shares the machine with the server and the stores: compare figures taken
# in one run, not across machines.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ticketing-target}"
# shellcheck source=scripts/services.sh
source scripts/services.sh

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
PORT=18480
BASE="http://127.0.0.1:$PORT"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
  else
    echo "error: wrk is missing (apt-get install wrk)" >&2
    exit 1
  fi
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p ticketing-http
  BIN="$CARGO_TARGET_DIR/release/ticketing-http"
fi

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

server_pid=""
database=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=""
  if [ -n "$database" ]; then dropdb -h 127.0.0.1 -U postgres --if-exists "$database" >/dev/null 2>&1 || true; fi
  database=""
}
trap cleanup EXIT

run() { # name, store, queue
  local name=$1 store=$2 queue=$3
  TICKETING_LISTEN="127.0.0.1:$PORT" TICKETING_STORE="$store" TICKETING_QUEUE="$queue" \
    TICKETING_INSECURE_DEMO_AUTH=true TICKETING_JOINS_PER_ADDRESS=off TICKETING_REDIS_PREFIX="endpoints:$$:" TICKETING_MAX_ACTIVE=1 RUST_LOG=warn \
    "$BIN" >"/tmp/endpoints-$name.log" 2>&1 &
  server_pid=$!
  wait_for "the server" curl -sf "$BASE/healthz"
  local concert waiting active schedule
  concert=$(curl -sf "$BASE/api/v1/concerts" | json "d[0]['concertId']")
  # One place (TICKETING_MAX_ACTIVE=1): the browser takes it, the poller then waits throughout.
  active=$(curl -sf -H 'content-type: application/json' -d "{\"userId\":\"browser\",\"concertId\":\"$concert\"}" \
    "$BASE/api/v1/queue/tokens" | json "d['token']")
  for _ in $(seq 1 50); do
    [ "$(curl -sf -H "authorization: Bearer $active" "$BASE/api/v1/queue/tokens/current" | json "d['status']")" = ACTIVE ] && break
    sleep 0.2
  done
  waiting=$(curl -sf -H 'content-type: application/json' -d "{\"userId\":\"poller\",\"concertId\":\"$concert\"}" \
    "$BASE/api/v1/queue/tokens" | json "d['token']")
  schedule=$(curl -sf -H "authorization: Bearer $active" "$BASE/api/v1/concerts/$concert/schedules" | json "d[0]['scheduleId']")
  local lua
  lua=$(mktemp)
  cat >"$lua" <<EOF
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"userId":"u%d-%d","concertId":"$concert"}', math.random(1, 1000000000), counter)
  return wrk.format("POST", "/api/v1/queue/tokens", {["Content-Type"] = "application/json"}, body)
end
EOF
  local issue poll seats
  issue=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$lua" "$BASE" | awk '/Requests\/sec/ {print $2}')
  poll=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "authorization: Bearer $waiting" \
    "$BASE/api/v1/queue/tokens/current" | awk '/Requests\/sec/ {print $2}')
  seats=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "authorization: Bearer $active" \
    "$BASE/api/v1/schedules/$schedule/seats" | awk '/Requests\/sec/ {print $2}')
  rm -f "$lua"
  printf '%-10s token issue %10s req/s   status poll %10s req/s   50-seat list %10s req/s\n' \
    "$name" "$issue" "$poll" "$seats"
  cleanup
}

which=${1:-both}
if [ "$which" = memory ] || [ "$which" = both ]; then
  run memory memory memory
fi
if [ "$which" = pg-redis ] || [ "$which" = both ]; then
  ensure_postgres
  ensure_redis
  database="endpoints_$$"
  createdb -h 127.0.0.1 -U postgres "$database"
  run pg-redis "postgres://postgres@127.0.0.1:5432/$database" "redis://127.0.0.1:6379/"
fi
