#!/usr/bin/env bash
# Unpacks the kernel's test tooling from Debian's linux-source-6.12 into DIR
# (default /tmp/uffdtest-kunit), once: tools/testing/kunit (kunit.py parse)
# and tools/testing/selftests/{run_kselftest.sh,kselftest/} (the kselftest
# runner). Nothing of it is copied into this repository.
set -euo pipefail
dir=${1:-${KUNIT_DIR:-/tmp/uffdtest-kunit}}
if [ -f "$dir/tools/testing/kunit/kunit.py" ] && [ -f "$dir/tools/testing/selftests/run_kselftest.sh" ]; then
    exit 0
fi
tmp=$(mktemp -d)
chmod 777 "$tmp"  # apt's _apt user downloads into it
(cd "$tmp" && apt-get download -qq linux-source-6.12)
mkdir -p "$dir"
dpkg-deb --fsys-tarfile "$tmp"/linux-source-6.12_*.deb \
    | tar -xO ./usr/src/linux-source-6.12.tar.xz \
    | tar -xJ -C "$dir" --strip-components=1 linux-source-6.12/tools/testing/kunit \
        linux-source-6.12/tools/testing/selftests/run_kselftest.sh linux-source-6.12/tools/testing/selftests/kselftest
rm -rf "$tmp"
