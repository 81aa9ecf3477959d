#!/usr/bin/env bash
# Runs the crate's tests (every binary, even after a failure) and ends with one summary:
# tests run, passed, failed and skipped per tier, why each skip, the total time.
#
#   e2e/test.sh [ARGS...]   ARGS go to `cargo test` (make test passes --lib --bins --tests)
#
# The output is kept in target/test.log; tests that skip for a missing part write a line
# to $VIGIE_TEST_SKIPS (target/test-skips.tsv). Under `make test` (VIGIE_E2E_DOCKER=1,
# VIGIE_E2E_K8S=1, VIGIE_E2E_BROWSER=1) a missing part fails its test instead, with the
# install hint.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p target
log=target/test.log
export VIGIE_TEST_SKIPS=$root/target/test-skips.tsv
rm -f "$VIGIE_TEST_SKIPS"
free_gib() { df -P --block-size=1G . | awk 'NR == 2 { print $4 }'; }
echo "test.sh: $(free_gib) GiB free before the tests"
started=$(date +%s)
${CARGO:-cargo} test --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
elapsed=$(($(date +%s) - started))
echo "test.sh: $(free_gib) GiB free after the tests"
python3 "$root/e2e/test_summary.py" "$log" "$VIGIE_TEST_SKIPS" "$elapsed" || status=1
exit "$status"
