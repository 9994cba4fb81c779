# umig - one Makefile for the VMM, the migration engine, the guests and the tests.
#
#   make            build build/umig and every guest in build/guest-tests/
#   make check      install missing Debian packages, build, run the test suite
#                   (the unit and integration suites, then the test-VM suites)
#   make check-vm   only the suites that run inside the test VM (tests/vm/)
#   make demo       install missing Debian packages, build, run a migration demo
#   make deps       install missing Debian packages (needs root)
#   make bench      run the comparison benchmark (bench/run)
#   make fuzz       build the libFuzzer harnesses (tests/fuzz/) with clang and
#                   run each for FUZZ_SECS seconds (default 60), one at a time
#
# Options: V=1 verbose, WERROR=0 warnings are not errors,
#          SANITIZE=1 build with ASan+UBSan (into build/san/),
#          FUZZ=1 build with clang, libFuzzer, ASan+UBSan (into build/fuzz/).

CC      ?= gcc
V       ?= 0
WERROR  ?= 1
SANITIZE ?= 0

ifeq ($(FUZZ),1)
# Only `make fuzz` needs clang; `make check` never does.
CC      := clang-14
BUILD   := build/fuzz
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
FUZZFLAGS := -fsanitize=fuzzer-no-link -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
else ifeq ($(SANITIZE),1)
BUILD   := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   := build
SANFLAGS :=
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN    += -Werror
endif

CFLAGS  := -std=gnu11 -O2 -g $(WARN) -D_GNU_SOURCE -Iinclude -Itcp -Irdma -MD -MP $(SANFLAGS) \
	   $(FUZZFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := $(SANFLAGS)
LIBS    := -lunicorn -luring -ljansson -lxxhash -lgnutls -llz4 -lzstd -lpthread -lm

# The RDMA transport (rdma/) is built when libibverbs and librdmacm are
# there (RDMA=0 leaves it out, RDMA=1 insists); without it umig says so in
# `umig caps` and when --transport rdma is asked for.
RDMA ?= $(shell pkg-config --exists libibverbs librdmacm 2>/dev/null && echo 1 || echo 0)
ifeq ($(RDMA),1)
CFLAGS  += -DUMIG_HAVE_RDMA
LIBS    += -lrdmacm -libverbs
RDMA_SRCS := rdma/ep.c rdma/rdma.c rdma/pull.c
endif

# Debian packages the build, the tests, the demo and bench/ need
# (qemu-system-x86: bench/guest-speed's TCG anchor only).
DEB_PKGS := gcc make libc6-dev pkg-config libunicorn-dev libcmocka-dev \
	    liburing-dev libjansson-dev libxxhash-dev libgnutls28-dev liblz4-dev libzstd-dev \
	    iproute2 jq python3 libibverbs-dev librdmacm-dev gnutls-bin \
	    qemu-system-x86
# ... and those only `make fuzz` needs (libFuzzer is in the clang runtime).
FUZZ_DEB_PKGS := clang-14 libclang-rt-14-dev

# The engine, as a static library the tests link against (sorted).
LIB_SRCS := \
	src/admit.c \
	src/beatgap.c \
	src/bitmap.c \
	src/buf.c \
	src/caps.c \
	src/caps-rdma.c \
	src/codec-auto.c \
	src/codec.c \
	src/control.c \
	src/cpustate.c \
	src/delta.c \
	src/devices.c \
	src/dev-clock.c \
	src/dev-exit.c \
	src/dev-host.c \
	src/dev-heartbeat.c \
	src/dev-serial.c \
	src/dirty.c \
	src/loader.c \
	src/log.c \
	src/mem.c \
	src/mig-codec.c \
	src/mig-common.c \
	src/mig-converge.c \
	src/mig-complete.c \
	src/mig-ctl.c \
	src/mig-discard.c \
	src/mig-downtime.c \
	src/mig-dst.c \
	src/mig-handover.c \
	src/mig-handshake.c \
	src/mig-keepalive.c \
	src/mig-options.c \
	src/mig-pages.c \
	src/mig-place.c \
	src/mig-huge.c \
	src/mig-postcopy-dst.c \
	src/mig-postcopy-src.c \
	src/mig-precopy.c \
	src/mig-receive.c \
	src/mig-recover.c \
	src/mig-src.c \
	src/mig-state.c \
	src/mig-switchover.c \
	src/prepage.c \
	src/proto.c \
	src/snapshot.c \
	src/state.c \
	src/uffd.c \
	src/util.c \
	src/vcpu.c \
	src/vcpu-cpuid.c \
	src/vcpu-kvm.c \
	src/vcpu-kvm-regs.c \
	src/vcpu-unicorn.c \
	src/vcpu-unicorn-tlb.c \
	src/vm.c \
	src/xport.c \
	rdma/frame.c \
	rdma/prefetch.c \
	tcp/conn.c \
	tcp/tcp.c \
	tcp/tls.c \
	tcp/uring.c \
	$(RDMA_SRCS)

# One file per verb, plus main (sorted).
CLI_SRCS := \
	src/cli-caps.c \
	src/cli-common.c \
	src/cli-ctl.c \
	src/cli-incoming.c \
	src/cli-keygen.c \
	src/cli-migrate.c \
	src/cli-restore.c \
	src/cli-run.c \
	src/main.c

GUESTS := dirty hello idle memverify regtorture smc spin
GUEST_RT_SRCS := guest-tests/rt/start.S guest-tests/rt/rt.c

# Benchmark programs, built with everything (bench/ scripts run them).
BENCHES := codec-speed floors tls-speed

TESTS := $(sort $(basename $(notdir $(wildcard tests/test-*.c))))
# One libFuzzer harness per file, tests/fuzz/fuzz-NAME.c, seeds in
# tests/fuzz/corpus/NAME/: a new decoder's harness is one new file.
FUZZ_TARGETS := $(sort $(basename $(notdir $(wildcard tests/fuzz/fuzz-*.c))))
FUZZ_SECS ?= 60

LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
LIBUMIG  := $(BUILD)/libumig.a
UMIG     := $(BUILD)/umig
GUEST_ELFS := $(GUESTS:%=build/guest-tests/%.elf)
TEST_BINS  := $(TESTS:%=$(BUILD)/tests/%)
BENCH_BINS := $(BENCHES:%=$(BUILD)/bench/%)
# bench/guest-speed's QEMU TCG anchor: a multiboot (ELF32) kernel, no libc.
TCG_ANCHOR := build/bench/tcg-anchor.elf
FUZZ_BINS  := $(FUZZ_TARGETS:%=$(BUILD)/%)

.PHONY: all check check-vm demo deps fuzz-deps bench clean tests fuzz fuzz-build vm-prepare
all: $(UMIG) $(GUEST_ELFS) $(BENCH_BINS) $(TCG_ANCHOR)

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

# Rebuild everything when the flags change (SANITIZE, WERROR, EXTRA_CFLAGS).
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CFLAGS) $(LDFLAGS) $(LIBS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS) $(LDFLAGS) $(LIBS)' > $@
FORCE:

$(LIBUMIG): $(LIB_OBJS)
	@[ "$(V)" = 1 ] || echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

$(UMIG): $(CLI_OBJS) $(LIBUMIG)
	@[ "$(V)" = 1 ] || echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJS) $(LIBUMIG) $(LIBS)

# --- guests: freestanding x86-64, linked at 1 MiB, never sanitized ---------
GUEST_CFLAGS := -std=gnu11 -O2 -g -ffreestanding -fno-pic -fno-pie \
	-fno-stack-protector -fno-asynchronous-unwind-tables -mno-red-zone \
	-fcf-protection=none -Wall -Wextra -Werror -Iinclude -Iguest-tests/rt
GUEST_LDFLAGS := -nostdlib -static -no-pie -Wl,-T,guest-tests/rt/guest.ld \
	-Wl,--build-id=none -Wl,-z,noexecstack

build/guest-tests/%.elf: guest-tests/%.c $(GUEST_RT_SRCS) guest-tests/rt/rt.h \
		guest-tests/rt/guest.ld include/umig/guest-abi.h include/umig/pagefill.h
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  GUEST   $@"
	$(Q)$(CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ $(GUEST_RT_SRCS) $<

# --- benchmark programs ---------------------------------------------------
$(TCG_ANCHOR): bench/tcg-anchor.S
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  GUEST   $@"
	$(Q)$(CC) -m32 -nostdlib -static -no-pie -Wl,-Ttext=0x100000 -Wl,--build-id=none \
		-Wl,-z,noexecstack -o $@ $<

$(BUILD)/bench/%: bench/%.c $(LIBUMIG) $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  BENCH   $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBUMIG) $(LIBS)

# --- tests ------------------------------------------------------------------
T_HELPERS := $(BUILD)/tests/t-util.o $(BUILD)/tests/t-rig.o
$(BUILD)/tests/%: tests/%.c tests/t-util.h tests/t-rig.h $(T_HELPERS) $(LIBUMIG) $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -Itests -o $@ $< $(T_HELPERS) $(LIBUMIG) $(LIBS) -lcmocka

$(BUILD)/tests/t-util.o $(BUILD)/tests/t-rig.o: $(BUILD)/tests/%.o: tests/%.c tests/%.h $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -Itests -c $< -o $@

# --- the test VM (tests/vm/): suites that need Soft-RoCE or /dev/kvm ---------
# Each file tests/vm/suites/NAME is a suite; build/tests/test-vm-NAME runs it
# in the VM for tests/run.  VM_PROGS are the C programs the suites run there,
# built here: the guest sees this tree read-only and cannot build.
VM_SUITES  := $(sort $(notdir $(wildcard tests/vm/suites/*)))
VM_PROGS   := kvm-api uffd-check
VM_BINS    := $(VM_PROGS:%=$(BUILD)/tests/vm/%)
VM_RUNNERS := $(VM_SUITES:%=$(BUILD)/tests/test-vm-%)

$(BUILD)/tests/vm/%: tests/vm/%.c $(BUILD)/.flags
	@mkdir -p $(dir $@)
	@[ "$(V)" = 1 ] || echo "  VMTEST  $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lpthread

$(BUILD)/tests/test-vm-%: tests/vm/suites/% Makefile
	@mkdir -p $(dir $@)
	$(Q)printf '#!/bin/sh\n# tests/vm/suites/%s in the test VM (made by the Makefile)\ncd "%s" && exec tests/vm/run-suite --build %s %s\n' \
		'$*' '$(CURDIR)' '$(BUILD)' '$*' > $@ && chmod +x $@

tests: all $(TEST_BINS) $(VM_BINS) $(VM_RUNNERS)

# Packages, kernel and initramfs of the test VM, fetched outside the test
# time limit; if that cannot be done the VM suites skip and say why.
vm-prepare:
	$(Q)tests/vm/run-suite --prepare || echo "umig: the test VM is not available; its suites will skip"

# --- fuzzing (FUZZ=1 builds; `make fuzz` sets it) -------------------------------
$(BUILD)/fuzz-%: tests/fuzz/fuzz-%.c tests/fuzz/fuzz-vm.h $(LIBUMIG) $(BUILD)/.flags
	@[ "$(V)" = 1 ] || echo "  FUZZ    $@"
	$(Q)$(CC) $(CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $@ $< $(LIBUMIG) $(LIBS)

fuzz-build: $(FUZZ_BINS)

fuzz:
	$(Q)$(MAKE) --no-print-directory fuzz-deps
	$(Q)$(MAKE) --no-print-directory FUZZ=1 fuzz-build
	$(Q)tests/fuzz/run --secs $(FUZZ_SECS) $(FUZZ_TARGETS:%=build/fuzz/%)

check:
	$(Q)$(MAKE) --no-print-directory deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)$(MAKE) --no-print-directory vm-prepare
	$(Q)UMIG_BIN=$(UMIG) UMIG_GUESTS=build/guest-tests tests/run $(TEST_BINS) $(VM_RUNNERS)

check-vm:
	$(Q)$(MAKE) --no-print-directory deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)$(MAKE) --no-print-directory vm-prepare
	$(Q)UMIG_BIN=$(UMIG) UMIG_GUESTS=build/guest-tests tests/run $(VM_RUNNERS)

demo:
	$(Q)$(MAKE) --no-print-directory deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)UMIG_BIN=$(UMIG) tests/demo

bench:
	$(Q)bench/run $(BENCH_ARGS)

fuzz-deps:
	$(Q)$(MAKE) --no-print-directory deps DEB_PKGS="$(DEB_PKGS) $(FUZZ_DEB_PKGS)"

deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "umig: missing Debian packages:$$missing" >&2; \
			echo "umig: run 'make deps' as root, or: apt-get install$$missing" >&2; exit 1; \
		fi; \
		echo "umig: installing$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
