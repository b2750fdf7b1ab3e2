#!/usr/bin/env bash
# Runs an installed uffdtest kselftest collection (`uffdtest install DIR`)
# with the kernel's own run_kselftest.sh, then reads its output with the
# kernel's kunit.py parse: every uffdtest launcher must pass (or skip), and
# kunit.py must count them all with no error.
# Usage: .ci/kselftest-check.sh DIR   (KUNIT_DIR: where .ci/linux-tools.sh unpacked the kernel's tools;
#        KSELFTEST_LOG: check that log of an earlier run instead, e.g. a guest's from kselftest-guest.sh)
set -euo pipefail
dir=$(realpath "$1")
tools=${KUNIT_DIR:-/tmp/uffdtest-kunit}
bash "$(dirname "$0")/linux-tools.sh" "$tools"
rc=0
if [ -n "${KSELFTEST_LOG:-}" ]; then
    out=$KSELFTEST_LOG
    rc="(in the guest)"
else
    cp -r "$tools"/tools/testing/selftests/run_kselftest.sh "$tools"/tools/testing/selftests/kselftest "$dir"/
    out=$dir/run_kselftest.log
    # A pipe, not a file: runner.sh's writers would overwrite each other's lines in a plain file.
    "$dir"/run_kselftest.sh -c uffdtest 2>&1 | cat > "$out" || rc=$?
fi
n=$(grep -c '^uffdtest:' "$dir"/kselftest-list.txt)
ok=$(grep -cE '^ok [0-9]+ selftests: uffdtest: ' "$out" || true)
notok=$(grep -cE '^not ok [0-9]+ selftests: uffdtest: ' "$out" || true)
read -r pass fail skip < <(sed -nE 's/^# ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\1 \2 \3/p' "$out" \
    | awk '{p+=$1; f+=$2; s+=$3} END {print p+0, f+0, s+0}')
echo "kselftest-check: run_kselftest.sh exited $rc: $ok of $n launchers ok, $notok not ok; their cases: $pass passed, $fail failed, $skip skipped"
kout=$(python3 "$tools/tools/testing/kunit/kunit.py" parse "$out" 2>&1 || true)
line=$(grep -E 'Testing complete\.' <<<"$kout" | tail -1)
echo "kselftest-check: kunit.py: ${line#*] }"
if [ "$ok" != "$n" ] || [ "$notok" != 0 ]; then
    grep -E '^(not )?ok ' "$out"
    echo "kselftest-check: not every launcher passed"
    exit 1
fi
if ! grep -qE "Ran $n tests: passed: $n\$|Ran $n tests: passed: [0-9]+, skipped: [0-9]+\$" <<<"$line"; then
    echo "$kout" | tail -30
    echo "kselftest-check: kunit.py did not count $n passing tests"
    exit 1
fi
echo "kselftest-check: run_kselftest.sh and kunit.py accept $dir"
