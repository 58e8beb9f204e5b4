#!/usr/bin/env bash
# A soak: sale after sale against one server node over PostgreSQL (booking) and Redis (queue) for
# SOAK_SECS (600), each sale a load-test run on its own concert, and the server's resident memory
# read from /proc before and after. Not part of CI (it takes ten minutes); its figures go in the
# README.
#
#   scripts/soak.sh [load-test arguments for each sale]
#
# Env: SOAK_SECS (600), SALE_SECS (each run's --run-time, 60). Load-test arguments replace the
# default `--users 1000 --seats 1000`. The first sale warms the server up; RSS is compared from its
# end to the end of the last, and printed after every sale. Prints one line per sale and a verdict; exits 0 when every audit
# PASSED, no request broke the contract or got a 5xx, and RSS grew by at most 10 % once warm.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ticketing-target}"
# shellcheck source=scripts/services.sh
source scripts/services.sh

SOAK_SECS=${SOAK_SECS:-600}
SALE_SECS=${SALE_SECS:-60}
ensure_postgres
ensure_redis
postgres="postgres://postgres@127.0.0.1:5432/postgres"
database=ticketing_soak
store="${postgres%/*}/$database"
prefix="ticketing-soak:$(date +%s):"
admin_key="soak-$(date +%s)-$RANDOM$RANDOM"
port=8291
host="http://127.0.0.1:$port"
out=loadtest-results/soak
rm -rf "$out"
mkdir -p "$out"

cargo build --release -q -p ticketing-http -p loadtest
bin="$CARGO_TARGET_DIR/release"
psql "$postgres" -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
TICKETING_STORE="$store" "$bin/ticketing-http" migrate >/dev/null

TICKETING_LISTEN="127.0.0.1:$port" TICKETING_STORE="$store" TICKETING_QUEUE="redis://127.0.0.1:6379/" \
  TICKETING_REDIS_PREFIX="$prefix" TICKETING_ADMIN_KEY="$admin_key" TICKETING_DEMO_SEED=false \
  TICKETING_TOKEN_SECRET="soak-token-secret-$RANDOM$RANDOM$RANDOM$RANDOM$RANDOM" \
  TICKETING_INSECURE_DEMO_AUTH=true TICKETING_JOINS_PER_ADDRESS=off RUST_LOG=warn "$bin/ticketing-http" >"$out/node.log" 2>&1 &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
wait_for "the node at $host" curl -sf "$host/readyz"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server/status"; }
if [ "$#" -eq 0 ]; then set -- --users 1000 --seats 1000; fi

start=$(date +%s)
sale=0
failed=0
warm_rss=""
echo "RSS at start: $(rss_kib) KiB"
while :; do
  sale=$((sale + 1))
  status=0
  TICKETING_ADMIN_KEY="$admin_key" "$bin/loadtest" --host "$host" --run-time "${SALE_SECS}s" \
    --out-dir "$out/sale-$sale" --quiet --no-print-metrics "$@" >"$out/sale-$sale.log" 2>&1 || status=$?
  if ! kill -0 "$server" 2>/dev/null; then
    echo "soak: the server died during sale $sale (see $out/node.log)"
    exit 1
  fi
  rss=$(rss_kib)
  line=$(python3 - "$out/sale-$sale/summary.json" <<'EOF'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("no summary")
    sys.exit(1)
e = s["errors"]
print(f'{s["verdict"]} purchases {s["purchases"]} contract violations {e["contractViolations"]} '
      f'server errors {e["serverErrors"]}')
bad = s["verdict"] != "PASS" or e["contractViolations"] or e["serverErrors"]
sys.exit(1 if bad else 0)
EOF
  ) || status=1
  [ "$status" -eq 0 ] || failed=$((failed + 1))
  echo "sale $sale at $(( $(date +%s) - start )) s: $line; RSS $rss KiB"
  [ -n "$warm_rss" ] || warm_rss=$rss
  [ $(( $(date +%s) - start )) -lt "$SOAK_SECS" ] || break
done
end_rss=$(rss_kib)
growth=$(python3 -c "print(f'{($end_rss - $warm_rss) * 100 / $warm_rss:.1f}')")
echo "soak: $sale sales in $(( $(date +%s) - start )) s; RSS warm $warm_rss KiB, end $end_rss KiB ($growth %); $failed sales with a failed audit or errors"
if [ "$failed" -eq 0 ] && python3 -c "import sys; sys.exit(0 if $growth <= 10 else 1)"; then
  echo "soak: PASS"
else
  echo "soak: FAIL"
  exit 1
fi
