#!/bin/sh
# End-to-end demonstration of the gate on a real kernel tree: too slow for
# every CI run (two kernel builds and several guest boots), so it is a script
# to run by hand. See ci/README.md for a recorded run.
#
#   ci/demo.sh SRC WORK [step...]
#
# SRC   an unpacked kernel tree, e.g. /usr/src/linux-source-6.12 (Debian's
#       linux-source-6.12 package); it is copied, never modified.
# WORK  a scratch directory: WORK/linux (a git repository of the copy, with
#       a demo branch), WORK/out (the O= build dir), WORK/results.
# Steps (default: all, in this order):
#   setup    copy SRC, commit it as the base, add 5 commits on top: 4 harmless
#            ones and, third, one that makes UFFDIO_COPY accept mode bit 5
#   build    full build of the base (timed), then an incremental build after a
#            one-file change (timed)
#   run      run the selected cases on the base and on the bad kernel in QEMU
#   compare  uffdtest compare base candidate
#   bisect   git bisect start demo base; git bisect run uffdtest bisect ...
#
# Environment: UFFDTEST (default: target/release/uffdtest, built if missing),
# FILTERS (the cases run; default below), BISECT_FILTER (the case that
# decides each bisect step), JOBS (make -j; default all cores), VM_ARGS
# (more `uffdtest vm` options; default `--timeout 30`: a tinyconfig kernel
# without PCI cannot power off through ACPI, so the guest halts and the
# harness ends it after that much silence).
set -eu

[ $# -ge 2 ] || { sed -n '2,/^set -eu/p' "$0" | sed 's/^# \{0,1\}//; /^set -eu/d' >&2; exit 2; }
SRC=$(realpath "$1")
WORK=$2
shift 2
STEPS=${*:-setup build run compare bisect}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"
WORK=$(realpath "$WORK")
TREE=$WORK/linux
OUT=$WORK/out
RES=$WORK/results
mkdir -p "$RES"
FILTERS=${FILTERS:--f unknown_mode -f misaligned -f zero_len}
BISECT_FILTER=${BISECT_FILTER:-copy_unknown_mode_bits}
VM_ARGS=${VM_ARGS:---timeout 30}
UFFDTEST=${UFFDTEST:-${CARGO_TARGET_DIR:-$HERE/target}/release/uffdtest}
[ -x "$UFFDTEST" ] || (cd "$HERE" && cargo build --release)
BUILD="--tree $TREE --out $OUT --base tinyconfig --fragment $HERE/ci/tiny-qemu.config ${JOBS:+-j $JOBS}"
git_demo() { git -C "$TREE" -c user.name=uffdtest-demo -c user.email=demo@uffdtest.invalid "$@"; }
say() { printf '\n### %s\n' "$*"; }

step_setup() {
	if [ -d "$TREE/.git" ]; then
		say "setup: $TREE exists, keeping it"
		git_demo log --oneline base..demo
		return
	fi
	say "setup: copy $SRC to $TREE and commit it"
	cp -a "$SRC" "$TREE"
	# Debian's linux-source .gitignore ignores the whole top level (it only
	# tracks debian/); drop that block so the tree can be committed.
	python3 - "$TREE/.gitignore" <<-'EOF'
		import sys
		p = sys.argv[1]; s = open(p).read()
		i = s.find('#\n# Debian packaging')
		open(p, 'w').write(s[:i] if i >= 0 else s)
	EOF
	git_demo init -q -b demo
	git_demo add -A
	git_demo commit -q -m "Linux 6.12 (Debian linux-source-6.12) base"
	git_demo tag base
	edit() { # file python-expression-on-s message
		python3 -c "p='$TREE/$1'; s=open(p).read(); s2=$2; assert s2!=s, 'edit did nothing'; open(p,'w').write(s2)"
		git_demo commit -q -am "$3"
	}
	edit mm/userfaultfd.c "s.replace('static __always_inline ssize_t mfill_atomic(', '/* The common loop of UFFDIO_COPY, ZEROPAGE, CONTINUE and POISON. */\nstatic __always_inline ssize_t mfill_atomic(', 1)" \
		"mm/userfaultfd: say what mfill_atomic() is for"
	edit fs/userfaultfd.c "s.replace('static int userfaultfd_copy(', '/* UFFDIO_COPY: fill missing pages from user memory. */\nstatic int userfaultfd_copy(', 1)" \
		"userfaultfd: comment userfaultfd_copy()"
	edit fs/userfaultfd.c "s.replace('if (uffdio_copy.mode & ~(UFFDIO_COPY_MODE_DONTWAKE|UFFDIO_COPY_MODE_WP))', 'if (uffdio_copy.mode & ~(UFFDIO_COPY_MODE_DONTWAKE|UFFDIO_COPY_MODE_WP|(1ULL << 5)))', 1)" \
		"userfaultfd: reserve UFFDIO_COPY mode bit 5 (the deliberate regression: unknown bit now accepted)"
	edit fs/userfaultfd.c "s.replace('static int userfaultfd_zeropage(', '/* UFFDIO_ZEROPAGE: map the zero page (or a zeroed one). */\nstatic int userfaultfd_zeropage(', 1)" \
		"userfaultfd: comment userfaultfd_zeropage()"
	edit Documentation/admin-guide/mm/userfaultfd.rst "s.replace('Userfaultfd\n===========', 'Userfaultfd\n===========\n\n.. (uffdtest demo commit)', 1)" \
		"Documentation: userfaultfd: demo commit"
	git_demo log --oneline base..demo
}

step_build() {
	git_demo checkout -q base
	say "build: full build of the base (fresh O= dir $OUT)"
	rm -rf "$OUT"
	start=$(date +%s)
	# shellcheck disable=SC2086
	"$UFFDTEST" build $BUILD
	echo "full build: $(( $(date +%s) - start )) s wall"
	cp "$OUT/arch/x86/boot/bzImage" "$RES/bzImage.base"
	say "build: again with nothing changed"
	start=$(date +%s)
	# shellcheck disable=SC2086
	"$UFFDTEST" build $BUILD
	echo "no-op rebuild: $(( $(date +%s) - start )) s wall"
	say "build: incremental, at the bad commit (demo~2: fs/userfaultfd.c and mm/userfaultfd.c changed)"
	git_demo checkout -q demo~2
	start=$(date +%s)
	# shellcheck disable=SC2086
	"$UFFDTEST" build $BUILD
	echo "incremental build: $(( $(date +%s) - start )) s wall"
	cp "$OUT/arch/x86/boot/bzImage" "$RES/bzImage.candidate"
	git_demo checkout -q demo
}

step_run() {
	for k in base candidate; do
		say "run: the selected cases on $k ($FILTERS)"
		# shellcheck disable=SC2086
		"$UFFDTEST" vm --kernel "$RES/bzImage.$k" $FILTERS $VM_ARGS -o "$RES/$k.ktap" --json "$RES/$k.json" \
			--junit "$RES/$k.junit.xml" --console-log "$RES/$k.console.log" >/dev/null || true
		tail -n 2 "$RES/$k.ktap"
	done
}

step_compare() {
	say "compare: base → candidate"
	rc=0
	"$UFFDTEST" compare "$RES/base.json" "$RES/candidate.json" || rc=$?
	"$UFFDTEST" compare "$RES/base.json" "$RES/candidate.json" --format md -o "$RES/report.md" >/dev/null || true
	echo "compare exit: $rc"
}

step_bisect() {
	say "bisect: git bisect start demo base; git bisect run uffdtest bisect -f $BISECT_FILTER"
	git_demo bisect reset -q >/dev/null 2>&1 || true
	git_demo bisect start demo base
	# shellcheck disable=SC2086
	(cd "$TREE" && git bisect run "$UFFDTEST" bisect --tree . --out "$OUT" --base tinyconfig \
		--fragment "$HERE/ci/tiny-qemu.config" ${JOBS:+-j $JOBS} --results "$RES/bisect" -f "$BISECT_FILTER" -- $VM_ARGS)
	git_demo bisect log | tee "$RES/bisect.log"
	git_demo bisect reset >/dev/null
}

for s in $STEPS; do
	"step_$s"
done
