#!/bin/sh
# Gate a kernel patch series on userfaultfd behaviour: build the base and the
# patched kernel, run the suite on both in QEMU, compare, and exit non-zero on
# any regression or new kernel splat.
#
#   ci/gate.sh --tree LINUX --base REF --patched REF     [options] [-- run filters]
#   ci/gate.sh --tree LINUX --base REF --series FILE.mbox [options] [-- run filters]
#
# Options:
#   --work DIR      where sources, O= build dirs and results live
#                   (default: .uffdtest-gate; keep it between runs, e.g. as a CI
#                   cache, and rebuilds are incremental)
#   --base-config TARGET   make target for the base config (default: defconfig)
#   --config FILE   a complete .config to start from instead
#   --fragment FILE extra config fragment after qemu/uffd.config (repeatable)
#   --uffdtest BIN  the uffdtest binary (default: build it with cargo)
#   --base-repeat N run the base N times over (`uffdtest vm --repeat N`): a
#                   case with mixed outcomes there is flaky and not judged
# Filters after `--` go to `uffdtest vm` (e.g. `-- -f zeropage --mem shmem`).
#
# Writes to $WORK/results/: base.{ktap,json,junit.xml,console.log,vm.log},
# the same for candidate, bzImage.{base,candidate}, report.md (for a CI
# comment), report.txt, report.json. Exit: 0 no regression, 1 regression or new splat, 2 usage,
# 3 the base could not be built or run (nothing to compare against).
set -eu

usage() { sed -n '2,/^set -eu/p' "$0" | sed 's/^# \{0,1\}//; /^set -eu/d' >&2; exit 2; }
die() { echo "gate: $*" >&2; exit "${2:-2}"; }

TREE= BASE= PATCHED= SERIES= WORK=.uffdtest-gate UFFDTEST= BUILD_ARGS= BUILD_DIR= IN_PLACE= BASE_REPEAT=1
while [ $# -gt 0 ]; do
	case "$1" in
	--tree) TREE=$2; shift 2 ;;
	--base) BASE=$2; shift 2 ;;
	--patched) PATCHED=$2; shift 2 ;;
	--series) SERIES=$2; shift 2 ;;
	--work) WORK=$2; shift 2 ;;
	--build-dir) BUILD_DIR=$2; shift 2 ;;
	--in-place) IN_PLACE=1; shift ;;
	--base-config) BUILD_ARGS="$BUILD_ARGS --base $2"; shift 2 ;;
	--config) BUILD_ARGS="$BUILD_ARGS --config $(realpath "$2")"; shift 2 ;;
	--fragment) BUILD_ARGS="$BUILD_ARGS --fragment $(realpath "$2")"; shift 2 ;;
	--uffdtest) UFFDTEST=$2; shift 2 ;;
	--base-repeat) BASE_REPEAT=$2; shift 2 ;;
	-h|--help) usage ;;
	--) shift; break ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[ -n "$TREE" ] && [ -n "$BASE" ] || die "--tree and --base are required (see --help)"
[ -n "$PATCHED" ] || [ -n "$SERIES" ] || die "give --patched REF or --series FILE"
[ -z "$PATCHED" ] || [ -z "$SERIES" ] || die "give --patched or --series, not both"
git -C "$TREE" rev-parse --git-dir >/dev/null 2>&1 || die "$TREE is not a git checkout"
BASE_SHA=$(git -C "$TREE" rev-parse --verify "$BASE^{commit}") || die "no commit $BASE in $TREE"
if [ -n "$PATCHED" ]; then
	PATCHED_SHA=$(git -C "$TREE" rev-parse --verify "$PATCHED^{commit}") || die "no commit $PATCHED in $TREE"
fi
if [ -n "$SERIES" ]; then
	[ -f "$SERIES" ] || die "no series file $SERIES"
	SERIES=$(realpath "$SERIES")
fi

HERE=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$UFFDTEST" ]; then
	(cd "$HERE" && cargo build --release --quiet) || die "building uffdtest failed" 3
	UFFDTEST="${CARGO_TARGET_DIR:-$HERE/target}/release/uffdtest"
fi
mkdir -p "$WORK/results"
WORK=$(realpath "$WORK")
RES=$WORK/results
BUILD_DIR=$(realpath -m "${BUILD_DIR:-$WORK/build}")

if [ -n "$IN_PLACE" ]; then
	SRC=$(realpath "$TREE")
	[ -z "$(git -C "$SRC" status --porcelain --untracked-files=no)" ] ||
		die "--in-place needs a clean checkout: $SRC has local changes"
	ORIG=$(git -C "$SRC" symbolic-ref -q --short HEAD || git -C "$SRC" rev-parse HEAD)
	# (set -e holds in the trap too: am --abort fails when no am is in progress.)
	trap 'git -C "$SRC" am --abort >/dev/null 2>&1 || true; git -C "$SRC" checkout --quiet "$ORIG"' EXIT
else
	# One worktree of the kernel repository for both kernels: a checkout only
	# touches the files the series changes, so the O= dir rebuilds just those.
	SRC=$WORK/src
	[ -d "$SRC" ] || git -C "$TREE" worktree add --quiet --detach "$SRC" "$BASE_SHA"
fi
checkout() {
	git -C "$SRC" am --abort >/dev/null 2>&1 || true
	git -C "$SRC" checkout --quiet --detach "$1"
}

build_and_run() { # name: builds $SRC into $BUILD_DIR, runs, writes $RES/<name>.*
	name=$1; shift
	echo "gate: building $name ($(git -C "$SRC" log -1 --format='%h %s'))" >&2
	start=$(date +%s)
	# shellcheck disable=SC2086
	image=$("$UFFDTEST" build --tree "$SRC" --out "$BUILD_DIR" $BUILD_ARGS) || return 3
	cp "$image" "$RES/bzImage.$name"
	echo "gate: $name built in $(( $(date +%s) - start ))s" >&2
	rc=0
	"$UFFDTEST" vm --kernel "$RES/bzImage.$name" -o "$RES/$name.ktap" --json "$RES/$name.json" \
		--junit "$RES/$name.junit.xml" --console-log "$RES/$name.console.log" "$@" \
		>"$RES/$name.vm.log" 2>&1 || rc=$?
	echo "gate: $name ran (uffdtest vm exit $rc): $(tail -n 1 "$RES/$name.ktap" 2>/dev/null)" >&2
	[ -s "$RES/$name.json" ] || [ -s "$RES/$name.ktap" ] || return 3
}

checkout "$BASE_SHA"
build_and_run base --repeat "$BASE_REPEAT" "$@" || die "the base ($BASE) could not be built or run; see $RES/base.vm.log and $BUILD_DIR/uffdtest-build.log" 3

checkout "$BASE_SHA"
if [ -n "$SERIES" ]; then
	git -C "$SRC" -c user.name=uffdtest-gate -c user.email=gate@uffdtest.invalid am --quiet --3way "$SERIES" ||
		die "the series does not apply to $BASE (git am failed)" 3
else
	checkout "$PATCHED_SHA"
fi
cand_rc=0
build_and_run candidate "$@" || cand_rc=$?

pick() { if [ -s "$RES/$1.json" ]; then echo "$RES/$1.json"; else echo "$RES/$1.ktap"; fi; }
if [ "$cand_rc" -ne 0 ]; then
	msg="the candidate could not be built or booted; see $RES/candidate.vm.log and $BUILD_DIR/uffdtest-build.log"
	printf '### ❌ uffdtest: %s\n' "$msg" >"$RES/report.md"
	echo "gate: $msg" >&2
	exit 1
fi
rc=0
"$UFFDTEST" compare "$(pick base)" "$(pick candidate)" --format md -o "$RES/report.md" >/dev/null || rc=$?
"$UFFDTEST" compare "$(pick base)" "$(pick candidate)" --format json -o "$RES/report.json" >/dev/null || true
"$UFFDTEST" compare "$(pick base)" "$(pick candidate)" | tee "$RES/report.txt" || true
[ "$rc" -le 1 ] || die "compare failed (exit $rc)" 3
exit "$rc"
