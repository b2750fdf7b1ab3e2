#!/usr/bin/env bash
# Checks a KTAP log written by `uffdtest run` against two independent parsers:
# the kernel's own kunit.py (`parse`, from Debian's linux-source-6.12) must read
# it without errors and count what our closing line counts, and prove (Perl's
# TAP harness) must read it without parse errors and agree on pass/fail.
# Usage: .ci/ktap-check.sh LOG   (KUNIT_DIR caches the unpacked kunit_tool)
set -euo pipefail
log=$(realpath "$1")  # kunit.py chdirs to the kernel tree's root
# kunit.py insists on living under tools/testing/kunit; linux-tools.sh unpacks it there once.
dir=${KUNIT_DIR:-/tmp/uffdtest-kunit}
bash "$(dirname "$0")/linux-tools.sh" "$dir"
kunit=$dir/tools/testing/kunit

# Ours: the plain closing line `N passed, N failed, N skipped`.
read -r pass fail skip < <(sed -nE 's/^([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\1 \2 \3/p' "$log" | tail -1)
[ -n "${pass:-}" ] || { echo "ktap-check: no 'N passed, N failed, N skipped' line in $log"; exit 1; }
echo "ktap-check: uffdtest says passed=$pass failed=$fail skipped=$skip"

# kunit.py: `Testing complete. Ran N tests: passed: P, failed: F, crashed: C, skipped: S, errors: E`
# (zero counts are left out). Its exit code is 1 on any failed test, so judge by the counts.
out=$(python3 "$kunit/kunit.py" parse "$log" 2>&1 || true)
line=$(grep -E 'Testing complete\.' <<<"$out" | tail -1)
echo "ktap-check: kunit.py: ${line#*] }"
count() { sed -nE "s/.*[ ,]$1: ([0-9]+).*/\1/p" <<<"$line"; }
k_pass=$(count passed); k_fail=$(count failed); k_crash=$(count crashed); k_skip=$(count skipped); k_err=$(count errors)
k_fail=$(( ${k_fail:-0} + ${k_crash:-0} ))
if [ -z "$line" ] || [ "${k_err:-0}" != 0 ] || [ "${k_pass:-0}" != "$pass" ] || [ "$k_fail" != "$fail" ] || [ "${k_skip:-0}" != "$skip" ]; then
    echo "$out" | tail -40
    echo "ktap-check: kunit.py disagrees (or reported parse errors)"
    exit 1
fi

# prove: one TAP test per test binary; no parse errors, and FAIL exactly when we failed.
pout=$(prove -e cat "$log" 2>&1 || true)
echo "ktap-check: prove: $(grep -E '^Result:' <<<"$pout")"
if grep -q 'Parse errors' <<<"$pout"; then
    echo "$pout"
    echo "ktap-check: prove found parse errors"
    exit 1
fi
want=PASS; [ "$fail" = 0 ] || want=FAIL
grep -q "^Result: $want" <<<"$pout" || { echo "$pout"; echo "ktap-check: prove's verdict is not $want"; exit 1; }
echo "ktap-check: both parsers accept $log"
