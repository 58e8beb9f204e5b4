# Starts the local services this project tests against when they are down, on this project's
# machines (Debian packages on 127.0.0.1), and fails loudly when it cannot: a backend under test is
# never skipped. Sourced by scripts/test.sh and scripts/multinode.sh. A function does nothing when
# its TICKETING_TEST_*_URL points at another server.

wait_for() { # name, probe command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "error: $name did not come up" >&2
  exit 1
}

ensure_postgres() {
  [ -n "${TICKETING_TEST_POSTGRES_URL:-}" ] && return 0
  if ! command -v pg_isready >/dev/null; then
    echo "error: PostgreSQL client tools are missing; install PostgreSQL (apt-get install postgresql) or set TICKETING_TEST_POSTGRES_URL" >&2
    exit 1
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q
  fi
}

ensure_mysql() {
  [ -n "${TICKETING_TEST_MYSQL_URL:-}" ] && return 0
  if ! command -v mysqladmin >/dev/null; then
    echo "error: MariaDB/MySQL is missing; install it (apt-get install mariadb-server) or set TICKETING_TEST_MYSQL_URL" >&2
    exit 1
  fi
  if ! mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; then
    echo "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_for MariaDB mysqladmin -h 127.0.0.1 -P 3306 -u root ping
  fi
}

ensure_redis() {
  [ -n "${TICKETING_TEST_REDIS_URL:-}" ] && return 0
  if ! command -v redis-cli >/dev/null; then
    echo "error: Redis is missing; install it (apt-get install redis-server) or set TICKETING_TEST_REDIS_URL" >&2
    exit 1
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
  fi
}
