#!/usr/bin/env bash
# Side-by-side: the kernel's C uffd-stress against `uffdtest stress`, same
# memory type, size and bounces, interleaved (C, ours, C, ours...) so both
# see the same machine load. Prints per-run wall times, the medians and
# ratio = median(ours) / median(C) per memory type (≤ 1.0: we are no slower).
#
# The C program is built OUTSIDE this repository from a kernel source tree
# (Debian: apt-get install linux-source-6.12 && tar xf
# /usr/src/linux-source-6.12.tar.xz); nothing of it is copied here.
#
# Usage: ci/stress-compare.sh [-k KSRC] [-o OUTDIR] [-n RUNS] [-b BOUNCES]
#                             [-s MiB] [-m "anon shmem hugetlb"] [-u UFFDTEST]
# Needs root (hugetlb, EVENT_* features) and gcc, make.
set -euo pipefail

KSRC=/work/linux-source-6.12
OUT=/work/cstress
RUNS=5
BOUNCES=32
MIB=64
MEMS="anon shmem hugetlb"
UFFDTEST=""
while getopts "k:o:n:b:s:m:u:h" o; do
	case $o in
	k) KSRC=$OPTARG ;; o) OUT=$OPTARG ;; n) RUNS=$OPTARG ;; b) BOUNCES=$OPTARG ;;
	s) MIB=$OPTARG ;; m) MEMS=$OPTARG ;; u) UFFDTEST=$OPTARG ;;
	*) sed -n '2,15p' "$0"; exit 2 ;;
	esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
case $OUT in "$repo"|"$repo"/*) echo "refusing to build inside the repository: -o $OUT" >&2; exit 2 ;; esac

build_c() {
	local sm=$KSRC/tools/testing/selftests/mm
	[ -f "$sm/uffd-stress.c" ] || { echo "no $sm/uffd-stress.c: pass -k <linux source tree>" >&2; exit 2; }
	mkdir -p "$OUT"
	if [ ! -x "$OUT/uffd-stress" ] || [ "$sm/uffd-stress.c" -nt "$OUT/uffd-stress" ]; then
		# The selftests include the tree's uapi headers first, as their
		# Makefile does (-isystem tools/include/uapi via KHDR_INCLUDES).
		gcc -O2 -Wall -D_GNU_SOURCE -I"$KSRC/tools/testing/selftests" \
			-isystem "$KSRC/tools/include/uapi" \
			-o "$OUT/uffd-stress" "$sm/uffd-stress.c" "$sm/uffd-common.c" "$sm/vm_util.c" \
			-lpthread -lm
	fi
}

build_ours() {
	if [ -z "$UFFDTEST" ]; then
		(cd "$repo" && cargo build --release --quiet)
		UFFDTEST=${CARGO_TARGET_DIR:-$repo/target}/release/uffdtest
	fi
}

# Wall time of one command in seconds (fails the script if it fails).
walltime() {
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null 2>"$OUT/last.err" || { echo "FAILED: $*" >&2; cat "$OUT/last.err" >&2; exit 1; }
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

build_c
build_ours
echo "# C: $OUT/uffd-stress  ours: $UFFDTEST  size=${MIB}MiB bounces=$BOUNCES runs=$RUNS"
echo "# load: $(cut -d' ' -f1-3 /proc/loadavg)  cpus: $(nproc)"
printf '%-10s %10s %10s %7s\n' mem "C(s)" "ours(s)" ratio
for mem in $MEMS; do
	: >"$OUT/$mem.c"; : >"$OUT/$mem.ours"
	for _ in $(seq "$RUNS"); do
		walltime "$OUT/uffd-stress" "$mem" "$MIB" "$BOUNCES" >>"$OUT/$mem.c"
		walltime "$UFFDTEST" stress --mem "$mem" --size "${MIB}M" --bounces "$BOUNCES" --quiet >>"$OUT/$mem.ours"
	done
	c=$(median <"$OUT/$mem.c"); o=$(median <"$OUT/$mem.ours")
	printf '%-10s %10.3f %10.3f %7.3f   (C: %s | ours: %s)\n' "$mem" "$c" "$o" "$(echo "$o / $c" | bc -l)" \
		"$(tr '\n' ' ' <"$OUT/$mem.c")" "$(tr '\n' ' ' <"$OUT/$mem.ours")"
done
