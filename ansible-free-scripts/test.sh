#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, checks every shell script
# (with the shellcheck tool), builds, runs the unit tests, then each test file of tests/ on
# its own, one after another in a fixed order (the end-to-end ones make their own lab and
# remove it; one test thread, so one e2e test runs at a time). Closes with each file's wall
# time and the line `tests: N passed, N failed, N skipped`.
#
#   ansible-free-scripts/test.sh [FILTER...]     FILTER goes to every test binary (a test name part)
#   PGCTL_TEST_FILES="ground cluster" ansible-free-scripts/test.sh    only these files of tests/
set -euo pipefail
cd "$(dirname "$0")/.."

ansible-free-scripts/install-deps.sh
ansible-free-scripts/build-garage.sh
# WAL-G and Consul from the Go module proxy (cached after the first run): their e2e tests run.
ansible-free-scripts/build-go-tools.sh

# The tests write their scratch directories and report under target/e2e whatever
# CARGO_TARGET_DIR is; the binaries are where cargo puts them.
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
mkdir -p target/e2e
log=target/test-output.log
report=target/e2e/report.txt
: >"$log"
rm -f "$report" target/e2e/bench.tsv target/e2e/bench.md

# Every shell script: *.sh, and files without an extension whose first line is a sh/bash shebang.
shell_scripts() {
  find images ansible-free-scripts compose-templates cli/src .ci -type f 2>/dev/null | sort | while IFS= read -r f; do
    case ${f##*/} in
      *.sh) echo "$f" ;;
      *.*) ;;
      *) if head -n 1 "$f" | grep -Eq '^#!.*[/ ](ba|da)?sh( |$)'; then echo "$f"; fi ;;
    esac
  done
}
mapfile -t scripts < <(shell_scripts)
echo "== shellcheck: ${#scripts[@]} shell scripts =="
shellcheck_failed=0
if [ ${#scripts[@]} -eq 0 ] || ! shellcheck "${scripts[@]}"; then
  shellcheck_failed=1
else
  echo "shellcheck: no findings"
fi

cargo build --workspace --all-targets --quiet
export PGCTL_BIN="$TARGET/debug/pgctl"
export PGCTL_E2E=1
export PGCTL_GARAGE_BIN=${PGCTL_CACHE:-/var/cache/pgctl}/garage-2.5.0/bin/garage
# The lab picks its stack (Consul + WAL-G when these binaries are there) from this directory.
export PGCTL_ARTIFACTS=${PGCTL_ARTIFACTS:-${PGCTL_CACHE:-/var/cache/pgctl}/artifacts}
# Labs of the e2e tests (name, directory); each test removes its own, this catches leftovers.
cleanup() {
  for lab in pgctl-e2e:ground pgctl-e2e-cluster:pgctl-e2e-cluster pgctl-e2e-nodes:pgctl-e2e-nodes pgctl-e2e-migrate:pgctl-e2e-migrate pgctl-e2e-dr:pgctl-e2e-dr pgctl-e2e-consul:pgctl-e2e-consul pgctl-e2e-backup:pgctl-e2e-backup pgctl-e2e-restore:pgctl-e2e-restore pgctl-e2e-walg:pgctl-e2e-walg \
             pgctl-bench-consul:pgctl-bench-consul pgctl-bench-etcd:pgctl-bench-etcd pgctl-bench-walg:pgctl-bench-walg pgctl-bench-pgbackrest:pgctl-bench-pgbackrest pgctl-bench-push:pgctl-bench-push; do
    "$PGCTL_BIN" lab down --name "${lab%%:*}" --dir "target/e2e/${lab#*:}/lab" >/dev/null 2>&1 || true
  done
}
cleanup
trap cleanup EXIT

passed=0 failed=0 skipped=0 status=0
times=()
# run LABEL CARGO-TEST-ARGS...: one timed `cargo test`, its counts added to the totals. Tests
# that reported themselves SKIPPED (target/e2e/report.txt) count as skipped, not passed; so do
# ignored ones. A run that fails without a failed test (a build error, a crash) counts as one
# failure.
run() {
  local label=$1 start=$SECONDS lines skips rc p f i
  shift
  lines=$(wc -l <"$log")
  skips=$(grep -c '^SKIPPED' "$report" 2>/dev/null || true)
  echo "== $label =="
  set +e
  cargo test "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  set -e
  read -r p f i < <(tail -n +"$((lines + 1))" "$log" |
    awk '/^test result:/ { p += $4; f += $6; i += $8 } END { print p + 0, f + 0, i + 0 }')
  skips=$(($(grep -c '^SKIPPED' "$report" 2>/dev/null || true) - ${skips:-0}))
  if [ "$rc" -ne 0 ]; then
    status=1
    [ "$f" -gt 0 ] || f=1
  fi
  p=$((p - skips))
  i=$((i + skips))
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + i))
  times+=("$(printf '  %-10s %6d s   %d passed, %d failed, %d skipped' "$label" $((SECONDS - start)) "$p" "$f" "$i")")
}

run unit --workspace --exclude pgctl-tests --all-targets -- "$@"

# The files of tests/ in a fixed order (quick checks first, then the labs); a file listed in
# tests/Cargo.toml but not here runs last, so none is forgotten. Benchmarks (bench) run only
# when named: PGCTL_TEST_FILES=bench.
order=(gitlab_ci amcheck image ground cluster nodes migrate consul walg backup restore timescaledb)
declared=$(awk '/^\[\[test\]\]/ { t = 1; next } t && /^name *=/ { gsub(/^name *= *"|".*$/, ""); print; t = 0 }' tests/Cargo.toml)
for name in $declared; do
  case " ${order[*]} bench " in
    *" $name "*) ;;
    *) order+=("$name") ;;
  esac
done
if [ -n "${PGCTL_TEST_FILES:-}" ]; then
  read -r -a order <<<"$PGCTL_TEST_FILES"
fi
# The PostgreSQL 13 image migrate upgrades from and the 17 image it upgrades the cluster to
# (Debian bullseye's and trixie's packages, bases made with mmdebstrap) are mostly downloads:
# they are built in the background while the files before migrate run, and migrate waits for
# them (its own builds then find every step cached).
prebuild_pid=""
if [[ " ${order[*]} " == *" migrate "* ]]; then
  (
    nice -n 10 "$PGCTL_BIN" image build --source debian --suite bullseye --tag pgctl/postgres:13-debian-bullseye \
      --without timescaledb,walg,consul >target/e2e/prebuild-pg13.log 2>&1
    nice -n 10 "$PGCTL_BIN" image build --source debian --suite trixie --tag pgctl/postgres:17-debian-trixie \
      --artifacts "$PGCTL_ARTIFACTS" --without timescaledb >target/e2e/prebuild-pg17.log 2>&1
  ) &
  prebuild_pid=$!
fi
for name in "${order[@]}"; do
  if [ "$name" = migrate ] && [ -n "$prebuild_pid" ]; then
    wait "$prebuild_pid" || echo "a background image build failed (target/e2e/prebuild-pg13.log, prebuild-pg17.log); migrate builds it"
    prebuild_pid=""
  fi
  run "$name" -p pgctl-tests --test "$name" -- --include-ignored --test-threads=1 "$@"
done

echo
echo "== measurements and skipped tests =="
cat "$report" 2>/dev/null || echo "(none)"
echo
echo "== wall time per test file =="
printf '%s\n' "${times[@]}"
if [ "$shellcheck_failed" -ne 0 ]; then
  echo "shellcheck: findings above (counted as one failed test)"
  failed=$((failed + 1)) status=1
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
