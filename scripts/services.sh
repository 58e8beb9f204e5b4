# shellcheck shell=bash
# Starts the local services this project tests against when they are down, on this project's
# machines (Debian packages on 127.0.0.1), and fails loudly when it cannot: a backend under test is
# never skipped. Sourced by scripts/test.sh and scripts/multinode.sh. A function does nothing when
# its TICKETING_TEST_*_URL points at another server, and prints nothing when its service is
# installed, up and set up.
#
# Run as root on a machine with apt-get, a function installs what is missing (one
# `apt-get update`, then only the missing packages, never removing any) and sets the service up
# as the tests expect: PostgreSQL trusts local and 127.0.0.1 connections (user postgres, no
# password); MariaDB lets root in from 127.0.0.1 with an empty password and has a database
# `test`. Otherwise it says what to install and fails.

_services_apt_updated=${_services_apt_updated:-}

wait_for() { # name, probe command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "error: $name did not come up" >&2
  exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Installs Debian packages when this script may (root, apt-get); otherwise says what to install
# and fails.
install_or_fail() { # service name, URL variable, packages...
  local name=$1 variable=$2; shift 2
  if ! is_root || ! command -v apt-get >/dev/null; then
    echo "error: $name is missing; install it (apt-get install $*, as root) or set $variable" >&2
    exit 1
  fi
  if [ -z "$_services_apt_updated" ]; then
    echo "updating the package lists"
    apt-get update -q || { echo "error: apt-get update failed" >&2; exit 1; }
    _services_apt_updated=1
  fi
  echo "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-remove "$@" \
    || { echo "error: apt-get install $* failed" >&2; exit 1; }
}

postgres_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
postgres_login() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -w -Atqc 'SELECT 1' >/dev/null 2>&1; }

# The newest PostgreSQL cluster `main` (its version), created when there is none.
postgres_cluster() {
  local dir version=""
  for dir in /etc/postgresql/*/main; do [ -d "$dir" ] && version=$(basename "$(dirname "$dir")"); done
  if [ -z "$version" ]; then
    for dir in /usr/lib/postgresql/*/bin/postgres; do [ -x "$dir" ] && version=$(basename "$(dirname "$(dirname "$dir")")"); done
    echo "creating the PostgreSQL $version cluster main" >&2
    pg_createcluster "$version" main >/dev/null
  fi
  echo "$version"
}

# Puts the two lines the tests need first in pg_hba.conf (the first matching line decides), as on
# this project's machines, and reloads.
trust_postgres() {
  local version hba
  version=$(postgres_cluster)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! is_root || grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    echo "error: PostgreSQL on 127.0.0.1:5432 refuses user postgres without a password; the tests need" \
      "'host all all 127.0.0.1/32 trust' first in $hba (run this as root to set it up) or" \
      "TICKETING_TEST_POSTGRES_URL" >&2
    exit 1
  fi
  echo "setting up PostgreSQL: trust local and 127.0.0.1 connections, as the tests expect"
  local rest
  rest=$(cat "$hba")
  # Rewritten in place, so the file keeps its owner and mode.
  printf '%s\n' '# The tests log in as postgres without a password (scripts/services.sh).' \
    'local all all trust' 'host all all 127.0.0.1/32 trust' '' "$rest" >"$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  wait_for "PostgreSQL login as postgres" postgres_login
}

ensure_postgres() {
  [ -n "${TICKETING_TEST_POSTGRES_URL:-}" ] && return 0
  local missing=()
  { command -v pg_isready && command -v psql; } >/dev/null || missing+=(postgresql-client)
  if [ ${#missing[@]} -gt 0 ] || ! postgres_up; then
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
  fi
  [ ${#missing[@]} -eq 0 ] || install_or_fail PostgreSQL TICKETING_TEST_POSTGRES_URL "${missing[@]}"
  if ! postgres_up; then
    local version
    version=$(postgres_cluster)
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for PostgreSQL postgres_up
  fi
  postgres_login || trust_postgres
}

mysql_up() { mysqladmin -h 127.0.0.1 -P 3306 -u root ping >/dev/null 2>&1; }
mysql_login() { mysql --no-defaults -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' test >/dev/null 2>&1; }

# Lets root in over TCP from 127.0.0.1 with an empty password (and over the socket as before), and
# creates the database `test` the tests connect to, as on this project's machines. Done over the
# socket as the system's root, which a fresh Debian install lets in.
open_mysql() {
  if ! is_root; then
    echo "error: MariaDB on 127.0.0.1:3306 refuses root with an empty password, or has no database" \
      "test; run this as root to set it up, or set TICKETING_TEST_MYSQL_URL" >&2
    exit 1
  fi
  echo "setting up MariaDB: root from 127.0.0.1 with an empty password, database test, as the tests expect"
  mysql --protocol=socket -u root -e "
    CREATE DATABASE IF NOT EXISTS test;
    ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
    GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" \
    || { echo "error: could not set MariaDB up over its socket as root" >&2; exit 1; }
  mysql_login || { echo "error: MariaDB still refuses root from 127.0.0.1" >&2; exit 1; }
}

ensure_mysql() {
  [ -n "${TICKETING_TEST_MYSQL_URL:-}" ] && return 0
  local missing=() daemon=/usr/sbin/mariadbd
  [ -x "$daemon" ] || daemon=/usr/sbin/mysqld
  { command -v mysqladmin && command -v mysql; } >/dev/null || missing+=(mariadb-client)
  if [ ${#missing[@]} -gt 0 ] || ! mysql_up; then
    [ -x "$daemon" ] || { missing+=(mariadb-server); daemon=/usr/sbin/mariadbd; }
  fi
  [ ${#missing[@]} -eq 0 ] || install_or_fail MariaDB TICKETING_TEST_MYSQL_URL "${missing[@]}"
  if ! mysql_up; then
    echo "starting MariaDB"
    if is_root; then
      # /run is emptied at boot, and Debian's configuration names no user to run as.
      install -d -o mysql -g mysql /run/mysqld
      start-stop-daemon --start --oknodo --background --exec "$daemon" -- --user=mysql
    else
      start-stop-daemon --start --oknodo --background --exec "$daemon"
    fi
    wait_for MariaDB mysql_up
  fi
  mysql_login || open_mysql
}

ensure_redis() {
  [ -n "${TICKETING_TEST_REDIS_URL:-}" ] && return 0
  if ! { command -v redis-server && command -v redis-cli; } >/dev/null; then
    install_or_fail Redis TICKETING_TEST_REDIS_URL redis-server
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
  fi
}
