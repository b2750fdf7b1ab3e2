# Thin entry points over the uffdtest subcommands (README.md, "make check").
#
#   make check                         the suite on the running kernel (as root)
#   make check KERNEL=path/to/bzImage  the suite in a QEMU guest booting that kernel
#   make check TREE=path/to/linux      build that tree (incrementally, O= dir kept)
#                                      and run the suite in a guest booting it
#
# ARGS go to `uffdtest run`/`uffdtest vm` (e.g. ARGS='-f zeropage --mem shmem');
# BUILD_ARGS to `uffdtest build` (e.g. BUILD_ARGS='--base tinyconfig
# --fragment ci/tiny-qemu.config'). Reports land in $(RESULTS)/check.{ktap,json,junit.xml}.
#
#   make install INSTALL_PATH=DIR      the suite as a kselftest collection in DIR (static
#                                      binaries, launchers, kselftest-list.txt, settings) for
#                                      the kernel's run_kselftest.sh; INSTALL_ARGS='--tar f.tgz'

CARGO      ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
UFFDTEST   ?= $(TARGET_DIR)/release/uffdtest
RESULTS    ?= results
ARGS       ?=
BUILD_ARGS ?=
INSTALL_PATH ?=
INSTALL_ARGS ?=
REPORTS     = -o $(RESULTS)/check.ktap --json $(RESULTS)/check.json --junit $(RESULTS)/check.junit.xml
# Build uffdtest only when it is ours; UFFDTEST=path (command line or environment) uses that binary as is.
BUILD_UFFDTEST = $(if $(filter file,$(origin UFFDTEST)),uffdtest)

.PHONY: check install uffdtest help

check: $(BUILD_UFFDTEST)
	@mkdir -p $(RESULTS)
ifneq ($(strip $(TREE)),)
	kernel=$$($(UFFDTEST) build --tree $(TREE) $(BUILD_ARGS)) && \
		$(UFFDTEST) vm --kernel "$$kernel" $(REPORTS) $(ARGS)
else ifneq ($(strip $(KERNEL)),)
	$(UFFDTEST) vm --kernel $(KERNEL) $(REPORTS) $(ARGS)
else
	$(UFFDTEST) run --build $(REPORTS) $(ARGS)
endif

install: $(BUILD_UFFDTEST)
	@test -n "$(INSTALL_PATH)" || { echo "make install: set INSTALL_PATH=DIR (a kselftest install directory)" >&2; exit 2; }
	$(UFFDTEST) install $(INSTALL_PATH) $(INSTALL_ARGS)

uffdtest:
	$(CARGO) build --release

help:
	@sed -n '1,/^$$/p' Makefile
