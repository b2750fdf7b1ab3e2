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

CARGO      ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
UFFDTEST   ?= $(TARGET_DIR)/release/uffdtest
RESULTS    ?= results
ARGS       ?=
BUILD_ARGS ?=
REPORTS     = -o $(RESULTS)/check.ktap --json $(RESULTS)/check.json --junit $(RESULTS)/check.junit.xml
# Build uffdtest only when it is ours; UFFDTEST=path (command line or environment) uses that binary as is.
BUILD_UFFDTEST = $(if $(filter file,$(origin UFFDTEST)),uffdtest)

.PHONY: check uffdtest help

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

uffdtest:
	$(CARGO) build --release

help:
	@sed -n '1,/^$$/p' Makefile
