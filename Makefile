# childflow — plain Makefile, dependencies through pkg-config.
#   make            build/childflow
#   make check      install missing Debian packages (as root), build, run unit + sanitizer + end-to-end tests
#   make demo       build, then show childflow at work inside a closed test world
#   make bench      measure childflow against the direct path and its peers (bench/results/latest.md)
#   make install    PREFIX=/usr/local DESTDIR=
SHELL   := /bin/bash
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PKGS    := libmnl libnftnl libseccomp libsodium ldns openssl
PYTHON  ?= /usr/bin/python3

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wcast-align -Wvla -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) -D_GNU_SOURCE -Isrc $(CFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS_ALL = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# build/childflow links these from their archives (the -dev packages ship them): each dynamic
# library costs every run its symbol relocations (libcrypto alone has ~4200) and each of the five
# forked processes its lazy PLT fixups and page faults; start-up CPU fell from ~17.5 to ~13.5 ms
# (docs/performance.md).  libmnl has no archive and stays shared, as does libc.
# `make LINK=shared` links them all dynamically instead (the trade-off: with the archives, an
# OpenSSL or libnftnl security update of the host needs childflow rebuilt to take effect).
LINK ?= static
STATIC_PKGS := libnftnl libseccomp libsodium ldns openssl
ifeq ($(LINK),shared)
LDLIBS_BIN = $(LDLIBS_ALL)
else
LDLIBS_BIN = -Wl,-Bstatic $(filter-out -lmnl -ldl,$(shell pkg-config --static --libs-only-l $(STATIC_PKGS) 2>/dev/null)) \
             -Wl,-Bdynamic $(shell pkg-config --libs libmnl 2>/dev/null) -pthread -ldl
endif

SRC      := $(shell find src -name '*.c' | sort)
LIB_SRC  := $(filter-out src/main.c,$(SRC))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))

OBJ      := $(SRC:%.c=build/obj/%.o)
LIB_OBJ  := $(LIB_SRC:%.c=build/obj/%.o)
ASAN_OBJ := $(LIB_SRC:%.c=build/asan/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/unit/%)
ASAN_UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/asan-unit/%)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all check demo install uninstall clean unit unit-asan fuzz e2e deps-build deps-check deps-demo deps-bench lint lint-deps lint-cppcheck bench

all: build/childflow

build/childflow: $(OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS_BIN)

build/childflow-asan: $(ASAN_OBJ) build/asan/src/main.o
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS_ALL)

build/obj/%.o: %.c $(shell find src -name '*.h')
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

build/asan/%.o: %.c $(shell find src -name '*.h')
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -c -o $@ $<

build/unit/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS_ALL) -lcmocka

build/asan-unit/%: tests/unit/%.c $(ASAN_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(SAN_FLAGS) -o $@ $< $(ASAN_OBJ) $(LDLIBS_ALL) -lcmocka

deps-build:
	@scripts/deps.sh build
deps-check:
	@scripts/deps.sh check
deps-demo:
	@scripts/deps.sh demo
deps-bench:
	@scripts/deps.sh bench

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

unit-asan: $(ASAN_UNIT_BIN)
	@set -e; for t in $(ASAN_UNIT_BIN); do echo "== $$t (asan+ubsan)"; $$t; done

# End-to-end tests: build their own closed network world (needs root; CI is root).  Not being root
# is a failure, not a skip; so is a run that collects no test (pytest's exit code 5).  The files are
# shared out to E2E_JOBS pytest-xdist workers (whole files, each worker with a world of its own);
# E2E_JOBS=0 runs them in this process, one after the other.
# The TCP tests run a second time with --fast-tcp added to every run (CHILDFLOW_TEST_FAST_TCP=1,
# tests/e2e/cfutil.py).  Not in that set: test_load and test_robustness measure the relay's own fds
# (injected flows hold none), test_redteam_ipc's peer-credential checks (an AF_UNIX connect is
# performed by P, README "--fast-tcp") and io_uring probes (refused with --fast-tcp).
E2E_JOBS ?= 2
E2E_FAST_TCP = test_relay test_fidelity_tcp test_guard test_relay_reset_order test_review_copy_urgent \
	test_v4only test_iface
e2e: build/childflow build/childflow-asan
	@if [ "$$(id -u)" -ne 0 ]; then \
	    echo 'e2e: end-to-end tests need root (they build network namespaces): run `sudo make e2e`' >&2; exit 1; fi
	@rc=0; $(PYTHON) -m pytest -q -ra -n $(E2E_JOBS) --dist loadfile tests/e2e || rc=$$?; \
	    if [ $$rc -eq 5 ]; then echo 'e2e: pytest collected no tests' >&2; fi; \
	    frc=0; echo '== e2e: the TCP tests again with --fast-tcp'; \
	    CHILDFLOW_TEST_FAST_TCP=1 $(PYTHON) -m pytest -q -ra -n $(E2E_JOBS) --dist loadfile \
	        $(E2E_FAST_TCP:%=tests/e2e/%.py) || frc=$$?; \
	    if [ $$frc -eq 5 ]; then echo 'e2e (--fast-tcp): pytest collected no tests' >&2; fi; \
	    if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$frc

JOBS ?= $(shell nproc 2>/dev/null || echo 2)

check: deps-check
	$(MAKE) -j$(JOBS) build/childflow build/childflow-asan
	$(MAKE) -j$(JOBS) --output-sync=target lint unit unit-asan fuzz
	$(MAKE) e2e

demo: deps-demo build/childflow
	@scripts/demo.sh

# Benchmarks (not tests: they never fail on a number).  Needs root to build the closed world.
bench: deps-bench build/childflow
	$(PYTHON) bench/run.py

install: build/childflow
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 build/childflow $(DESTDIR)$(PREFIX)/bin/childflow

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/childflow

# Static analysis: cppcheck and clang-tidy (bugprone + the clang static analyzer).  The disabled
# checks are style opinions or known false positives (va_list tracking across vsnprintf).
TIDY_CHECKS := -*,bugprone-*,clang-analyzer-*,-bugprone-easily-swappable-parameters
TIDY_CHECKS := $(TIDY_CHECKS),-bugprone-reserved-identifier,-bugprone-narrowing-conversions
TIDY_CHECKS := $(TIDY_CHECKS),-clang-analyzer-valist.Uninitialized,-clang-analyzer-optin.performance.Padding
TIDY_CHECKS := $(TIDY_CHECKS),-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling
# Fuzzing (libFuzzer, clang): parsers of untrusted or user-supplied bytes.  `make check` runs each
# target briefly; `make fuzz FUZZ_SECONDS=600` runs longer.  New crashes land in build/fuzz/.
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN     := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECONDS ?= 10
FUZZ_CC      ?= clang

# The sources each target needs (the whole library when not listed): fewer to instrument, faster builds.
FUZZ_LIB_fuzz_cli := src/cli/cli.c src/util/log.c
FUZZ_LIB_fuzz_proxy := src/proxy/wire.c
FUZZ_LIB_fuzz_resolvconf := src/dns/resolvconf.c src/backend/netplan.c
FUZZ_LIB_fuzz_dns := src/dns/wire.c src/dns/names.c
FUZZ_LIB_fuzz_hosts := src/dns/hosts.c src/dns/nsswitch.c
FUZZ_LIB_fuzz_nfq := src/netlink/nfq.c
FUZZ_LIB_fuzz_fastcall := src/fasttcp/call.c
FUZZ_LIB_fuzz_rootrec := src/root/record.c
FUZZ_LIB_fuzz_match := src/capture/match.c

.SECONDEXPANSION:
build/fuzz/%: tests/fuzz/%.c $$(or $$(FUZZ_LIB_$$*),$$(LIB_SRC)) $(shell find src -name '*.h')
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu11 -D_GNU_SOURCE -Isrc -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -o $@ $< \
	    $(or $(FUZZ_LIB_$*),$(LIB_SRC)) $(LDLIBS_ALL)

# A finding fails the target (its last lines and the crash file's name are shown), never only a log line.
fuzz: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); corpus=tests/fuzz/corpus/$${n#fuzz_}; \
	    work=build/fuzz/$$n.corpus; mkdir -p $$work; echo "== $$n ($(FUZZ_SECONDS) s)"; \
	    if ! (cd build/fuzz && ../../$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
	        ../../$$work ../../$$corpus >$$n.log 2>&1); then \
	        tail -n 40 build/fuzz/$$n.log; echo "fuzz: $$n found a failing input (build/fuzz/crash-* or leak-*)" >&2; \
	        exit 1; fi; tail -n 2 build/fuzz/$$n.log; done

# cppcheck over the tree, and clang-tidy once per source file (a stamp per file, so `make -j` runs
# them in parallel and an unchanged file with unchanged headers is not analysed again).
HDRS        := $(shell find src -name '*.h')
TIDY_STAMPS := $(SRC:%.c=build/tidy/%.ok)

lint: lint-deps lint-cppcheck $(TIDY_STAMPS)

lint-deps:
	scripts/lint-deps.sh

lint-cppcheck:
	@command -v cppcheck >/dev/null || { echo 'lint: cppcheck not installed (scripts/deps.sh check installs it)'; exit 1; }
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
	    --std=c11 -D_GNU_SOURCE -Isrc --suppress=missingIncludeSystem src

build/tidy/%.ok: %.c $(HDRS) Makefile
	@command -v clang-tidy >/dev/null || { echo 'lint: clang-tidy not installed (scripts/deps.sh check installs it)'; exit 1; }
	@mkdir -p $(dir $@)
	@echo "clang-tidy $<"
	@clang-tidy --quiet --warnings-as-errors='*' -checks='$(TIDY_CHECKS)' $< -- -std=gnu11 -D_GNU_SOURCE -Isrc \
	    $(shell pkg-config --cflags $(PKGS) 2>/dev/null) 2>&1 | grep -v 'warnings\? generated' ; test $${PIPESTATUS[0]} -eq 0
	@touch $@

clean:
	rm -rf build
