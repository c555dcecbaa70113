#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, builds, runs unit tests and the
# end-to-end tests against a lab of simulated hosts, and removes the lab afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

ansible-free-scripts/install-deps.sh
ansible-free-scripts/build-garage.sh

# A lab left by an interrupted earlier run is removed first (found by its label).
cargo build --workspace --all-targets --quiet
export PGCTL_BIN="$PWD/target/debug/pgctl"
export PGCTL_E2E=1
export PGCTL_GARAGE_BIN=${PGCTL_CACHE:-/var/cache/pgctl}/garage-2.5.0/bin/garage
cleanup() { "$PGCTL_BIN" lab down --name pgctl-e2e --dir target/e2e/lab >/dev/null 2>&1 || true; }
cleanup
trap cleanup EXIT

# One lab per run, shared by the end-to-end tests in order: one test thread.
cargo test --workspace --all-targets -- --test-threads=1 "$@"
