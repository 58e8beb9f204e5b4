#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, the conformance suite for every backend, the
# HTTP tests, property tests and doc tests. This is the README's test command.
#
# It builds all test targets in one cargo invocation (the machine has two cores) into a target
# directory outside the clone, which later runs reuse.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ticketing-target}"

cargo test --workspace --all-features --all-targets
cargo test --workspace --all-features --doc
