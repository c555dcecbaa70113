#!/usr/bin/env bash
# The benchmarks on a lab of this machine, ending with one table: every figure's median and
# spread over the runs, beside its baseline (the naive way measured in the same run, or the
# figure recorded when issue #15 was filed) and its goal. A tool, not a test: nothing here
# asserts on a time.
#
#   ansible-free-scripts/bench.sh [FILTER]     FILTER: a benchmark name part (image_build, failover, backup)
#   PGCTL_BENCH_RUNS=3 PGCTL_BENCH_SCALE=68 ansible-free-scripts/bench.sh
#
# Runs through test.sh (which installs what is needed); the table is also left in
# target/e2e/bench.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PGCTL_TEST_FILES=bench ansible-free-scripts/test.sh "$@"
status=$?
table=target/e2e/bench.tsv
if [ ! -s "$table" ]; then
  echo "no figures were recorded (see the output above)"
  exit 1
fi
{
  echo "| figure | median | spread | runs | baseline | goal |"
  echo "|---|---|---|---|---|---|"
  # A `|` inside a cell (docker save | docker load) would end it.
  sed 's/|/\\|/g' "$table" | awk -F '\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }'
} >target/e2e/bench.md
echo
echo "== benchmark table (target/e2e/bench.md) =="
cat target/e2e/bench.md
exit "$status"
