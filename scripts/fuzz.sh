#!/usr/bin/env bash
# Fuzzes the running server from its own OpenAPI description with Schemathesis (from PyPI), on
# every backend the HTTP tests use: the in-memory stores, PostgreSQL + Redis, and MySQL / MariaDB.
# Every check is on (5xx, schema and status conformance, content types, headers, data that the
# schema allows being refused and data it refuses being accepted), with the example, coverage,
# fuzzing and stateful phases, a valid queue token and the admin key; the seed is fixed so a run
# is repeatable. Fails on any failure. Part of the README's test command (scripts/test.sh).
#
# Env: FUZZ_EXAMPLES (40 per operation and phase), TICKETING_TEST_POSTGRES_URL,
# TICKETING_TEST_MYSQL_URL, TICKETING_TEST_REDIS_URL (as scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ticketing-target}"
examples=${FUZZ_EXAMPLES:-40}
schemathesis_version="4.32.5"

venv="$HOME/.cache/ticketing-schemathesis-$schemathesis_version"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$schemathesis_version"
fi

cargo build -q -p ticketing-http
bin="$CARGO_TARGET_DIR/debug/ticketing-http"
postgres_url="${TICKETING_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
mysql_url="${TICKETING_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
redis_url="${TICKETING_TEST_REDIS_URL:-redis://127.0.0.1:6379/}"
admin_key="fuzz-$RANDOM$RANDOM"
out=$(mktemp -d)
server=""
stop_server() { [ -z "$server" ] || { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }; server=""; }
trap 'stop_server; rm -rf "$out"' EXIT

# $1: a database URL; prints it with its database replaced by $2.
with_database() { python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$1" "$2"; }

fresh_postgres() {
  psql "$postgres_url" -q -c "DROP DATABASE IF EXISTS ticketing_fuzz WITH (FORCE)" -c "CREATE DATABASE ticketing_fuzz"
  with_database "$postgres_url" ticketing_fuzz
}

fresh_mysql() {
  echo "DROP DATABASE IF EXISTS ticketing_fuzz; CREATE DATABASE ticketing_fuzz;" | mysql --no-defaults
  with_database "$mysql_url" ticketing_fuzz
}

mysql() {
  local args
  mapfile -t args < <(python3 - "$mysql_url" <<'EOF'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(f"--host={p.hostname or '127.0.0.1'}")
print(f"--port={p.port or 3306}")
print(f"--user={u.unquote(p.username or 'root')}")
if p.password:
    print(f"--password={u.unquote(p.password)}")
EOF
  )
  command mysql "$@" "${args[@]}"
}

# $1: a name; then the server's environment (VAR=value ...).
fuzz() {
  local name=$1
  shift
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # A long request timeout: the fuzzer may create a concert of many schedules of many seats (the
  # admin route allows up to 100 x 100,000), which takes seconds to write.
  env "$@" TICKETING_LISTEN="127.0.0.1:$port" TICKETING_ADMIN_KEY="$admin_key" RUST_LOG=warn \
    TICKETING_REQUEST_TIMEOUT_MS=300000 \
    "$bin" >"$out/$name-server.log" 2>&1 &
  server=$!
  local base="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
  local concert token
  concert=$(curl -sf "$base/api/v1/concerts" | python3 -c 'import sys, json; print(json.load(sys.stdin)[0]["concertId"])')
  token=$(curl -sf -X POST "$base/api/v1/queue/tokens" -H 'content-type: application/json' \
    -d "{\"userId\":\"fuzz\",\"concertId\":\"$concert\"}" | python3 -c 'import sys, json; print(json.load(sys.stdin)["token"])')
  echo "fuzz: $name"
  # The client waits as long as the server may take, and a slow answer is not a failure: a
  # generated concert of 100,000 seats takes about 11 s to write on MariaDB here (seen), past the
  # fuzzer's default 10 s timeout and response-time check (creating a concert is an operator's
  # one-off step, not a request of the sale).
  if ! "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "$base/openapi.json" \
    --checks all --phases examples,coverage,fuzzing,stateful --max-examples "$examples" --seed 1 \
    --request-timeout 300 --max-response-time 300 \
    -H "Authorization: Bearer $token" -H "X-Admin-Key: $admin_key" --no-color >"$out/$name.log" 2>&1; then
    cat "$out/$name.log"
    echo "fuzz: $name FAILED (server log: $(tail -5 "$out/$name-server.log"))" >&2
    exit 1
  fi
  grep -E "generated|passed" "$out/$name.log" | tail -1
  stop_server
}

# FUZZ_ONLY=memory|postgres-redis|mysql runs one backend (by hand; the test command runs all).
only=${FUZZ_ONLY:-}
if [ -z "$only" ] || [ "$only" = memory ]; then
  fuzz memory
fi
if [ -n "$only" ] && [ "$only" != postgres-redis ] && [ "$only" != mysql ]; then exit 0; fi
if [ -z "$only" ] || [ "$only" = postgres-redis ]; then
  pg=$(fresh_postgres)
  TICKETING_STORE="$pg" "$bin" migrate >/dev/null
  fuzz postgres-redis TICKETING_STORE="$pg" TICKETING_QUEUE="$redis_url" \
    TICKETING_REDIS_PREFIX="fuzz-$RANDOM:" TICKETING_INSECURE_DEMO_AUTH=true
fi
if [ -n "$only" ] && [ "$only" != mysql ]; then exit 0; fi
my=$(fresh_mysql)
TICKETING_STORE="$my" "$bin" migrate >/dev/null
fuzz mysql TICKETING_STORE="$my" TICKETING_QUEUE="$my" TICKETING_SEAT_CLAIM=named-lock TICKETING_INSECURE_DEMO_AUTH=true
echo "fuzz: ${only:-every backend} passed"
