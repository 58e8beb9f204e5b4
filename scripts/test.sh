#!/usr/bin/env bash
# Runs every test of the workspace against real servers: unit tests, the conformance suite for
# every backend (memory; PostgreSQL and MySQL/MariaDB with each seat-claim strategy; Redis
# queue), the HTTP tests, the durability test and doc tests, then fuzzes the running server from
# its OpenAPI description on each backend (scripts/fuzz.sh). This is the README's test command.
#
# It starts PostgreSQL, MariaDB and Redis when they are down (on this project's machines); run
# as root with apt-get (a fresh Debian), it first installs and sets up those that are missing
# (scripts/services.sh). It fails loudly when it cannot: a backend under test is never skipped.
# Point the tests at other servers with TICKETING_TEST_POSTGRES_URL, TICKETING_TEST_MYSQL_URL and
# TICKETING_TEST_REDIS_URL (then that server is not started).
#
# Tests build in one cargo invocation (the machine has two cores) into a target directory
# outside the clone, which later runs reuse.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ticketing-target}"

# shellcheck source=scripts/services.sh
source scripts/services.sh

ensure_postgres
ensure_mysql
ensure_redis

cargo test --workspace --all-features --all-targets
cargo test --workspace --all-features --doc
# The API fuzzed from its OpenAPI description on every backend (Schemathesis, from PyPI).
scripts/fuzz.sh
