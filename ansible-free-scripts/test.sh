#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, builds, runs unit tests and the
# end-to-end tests against a lab of simulated hosts, and removes the lab afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

ansible-free-scripts/install-deps.sh
ansible-free-scripts/build-garage.sh

cargo build --workspace --all-targets --quiet
export PGCTL_BIN="$PWD/target/debug/pgctl"
export PGCTL_E2E=1
export PGCTL_GARAGE_BIN=${PGCTL_CACHE:-/var/cache/pgctl}/garage-2.5.0/bin/garage
# Labs of the e2e tests (name, directory); each test removes its own, this catches leftovers.
cleanup() {
  for lab in pgctl-e2e:ground pgctl-e2e-cluster:pgctl-e2e-cluster pgctl-e2e-consul:pgctl-e2e-consul pgctl-e2e-backup:pgctl-e2e-backup pgctl-e2e-restore:pgctl-e2e-restore pgctl-e2e-walg:pgctl-e2e-walg; do
    "$PGCTL_BIN" lab down --name "${lab%%:*}" --dir "target/e2e/${lab#*:}/lab" >/dev/null 2>&1 || true
  done
}
cleanup
trap cleanup EXIT

# Each e2e test file makes its own lab; one test thread, so they run one after another.
rm -f target/e2e/report.txt
set +e
cargo test --workspace --all-targets -- --test-threads=1 "$@" 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e
echo
echo "== measurements and skipped tests =="
cat target/e2e/report.txt 2>/dev/null || echo "(none)"
skipped=$(grep -c '^SKIPPED' target/e2e/report.txt 2>/dev/null || true)
awk -v skipped="${skipped:-0}" '/^test result:/ { passed += $4; failed += $6 }
  END { printf "tests: %d passed, %d failed, %d skipped\n", passed - skipped, failed, skipped }' target/test-output.log
exit "$status"
