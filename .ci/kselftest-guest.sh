#!/usr/bin/env bash
# Runs an installed uffdtest kselftest collection (`uffdtest install DIR`)
# with the kernel's own run_kselftest.sh inside a QEMU guest booting KERNEL,
# as a kernel CI lab would: a minimal busybox userland (Debian's
# busybox-static) in an initramfs, the collection under /kselftest, the
# script's output on the second serial port. Then the same checks as on
# the host (.ci/kselftest-check.sh): every launcher ok, kunit.py parse
# counts them all.
# Usage: .ci/kselftest-guest.sh KERNEL DIR   (KUNIT_DIR as for kselftest-check.sh; ACCEL=tcg|kvm, default tcg)
set -euo pipefail
kernel=$(realpath "$1")
dir=$(realpath "$2")
here=$(dirname "$(realpath "$0")")
tools=${KUNIT_DIR:-/tmp/uffdtest-kunit}
bash "$here/linux-tools.sh" "$tools"
[ -x /bin/busybox ] || apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
command -v qemu-system-x86_64 >/dev/null || apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,kselftest}
cp /bin/busybox "$root/bin/busybox"
cp -r "$dir"/. "$root/kselftest/"
cp -r "$tools"/tools/testing/selftests/run_kselftest.sh "$tools"/tools/testing/selftests/kselftest "$root/kselftest/"
# The guest's init: what a lab's rootfs gives a kselftest run (the mounts
# uffdtest's own guest init makes, src/vm/init.rs), then the kernel's
# runner, its output on ttyS1, and power off.
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# What udev would add: runner.sh writes each test's output to /dev/stdout.
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm /dev/hugepages
mount -t tmpfs tmpfs /dev/shm
mount -t hugetlbfs hugetlbfs /dev/hugepages 2>/dev/null
cd /kselftest
./run_kselftest.sh -c uffdtest 2>&1 | cat >/dev/ttyS1
echo "kselftest-guest: run_kselftest.sh exited" >/dev/ttyS1
sync
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$work/initrd.gz"

out=$dir/run_kselftest.guest.log
case ${ACCEL:-tcg} in
    kvm) accel=(-accel kvm -cpu host) ;;
    *) accel=(-accel tcg,thread=multi -cpu max,la57=off) ;;
esac
start=$SECONDS
timeout 1800 qemu-system-x86_64 "${accel[@]}" -m 2048M -machine mem-merge=off -smp 2 -nographic -no-reboot -nodefaults \
    -chardev stdio,id=console,signal=off -serial chardev:console -serial "file:$out" \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 oops=panic rdinit=/init mitigations=off 8250.nr_uarts=2 no_timer_check" \
    >"$work/console.log" 2>&1 || true
echo "kselftest-guest: the guest ran for $((SECONDS - start)) s"
if ! grep -q 'kselftest-guest: run_kselftest.sh exited' "$out"; then
    tail -40 "$work/console.log"
    echo "kselftest-guest: the guest ended before run_kselftest.sh did"
    exit 1
fi
sed -i 's/\r$//' "$out"  # the serial port's line ends
KSELFTEST_LOG=$out bash "$here/kselftest-check.sh" "$dir"
