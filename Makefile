# agentcast build. `make` builds the daemon and the library; `make run` and `make test`
# first install whatever is missing (scripts/deps.sh).
#
# Variants: BUILD=build (default, -O2 -g); `make asan` builds build/asan with
# AddressSanitizer + UndefinedBehaviorSanitizer; `make debug` builds build/debug with -O0.

CC       ?= cc
BUILD    ?= build
OPT      ?= -O2 -g
SAN      ?=
PKGS     := libuv jansson openssl hiredis libcurl

CFLAGS_ALL := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
              -fno-strict-aliasing -Iinclude -Isrc -I$(BUILD)/gen $(OPT) $(SAN) \
              $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(CFLAGS)
LDLIBS_ALL := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm -lpthread
LDFLAGS_ALL := $(SAN) $(LDFLAGS)
# The daemon alone links libsystemd, for sd_notify() (Type=notify readiness).
DAEMON_LIBS := $(shell pkg-config --libs libsystemd 2>/dev/null || echo -lsystemd)

LIB_SRC  := $(wildcard src/core/*.c src/net/*.c src/broker/*.c src/api/*.c src/gateway/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SRV_SRC  := $(wildcard src/server/*.c)
SRV_OBJ  := $(SRV_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
EXAMPLE_SRC := $(wildcard examples/*.c)
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)

# What `make install` adds to the plain build (not in the sanitizer variants): the shared
# library and the manual page (see "install" below).
AC_VERSION_STR := $(shell sed -n 's/^\#define AC_VERSION "\(.*\)"/\1/p' include/agentcast.h)
SOVERSION := 0
SHLIB     := libagentcast.so.$(AC_VERSION_STR)
INSTALL_EXTRA := $(if $(SAN),,$(BUILD)/$(SHLIB) $(BUILD)/agentcastd.8)

.PHONY: all deps run run-cluster test unit integration examples asan asan-test tsan valgrind debug bench bench-quick callgrind soak clean format

all: $(BUILD)/agentcastd $(BUILD)/libagentcast.a $(BENCH_BIN) $(EXAMPLE_BIN) $(INSTALL_EXTRA)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

# The Redis broker's Lua script, compiled in as a C string.
$(BUILD)/gen/redis_lua.h: src/broker/redis.lua
	@mkdir -p $(dir $@)
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@

$(BUILD)/obj/src/broker/redis.o: $(BUILD)/gen/redis_lua.h

$(BUILD)/libagentcast.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/agentcastd: $(SRV_OBJ) $(BUILD)/libagentcast.a
	$(CC) $(LDFLAGS_ALL) -o $@ $(SRV_OBJ) $(BUILD)/libagentcast.a $(LDLIBS_ALL) $(DAEMON_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libagentcast.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/libagentcast.a $(LDLIBS_ALL) -lcmocka

$(BUILD)/examples/%: examples/%.c $(BUILD)/libagentcast.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/libagentcast.a $(LDLIBS_ALL)

$(BUILD)/bench/%: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LDLIBS_ALL)

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@ARGS="$(ARGS)" scripts/run.sh

# Two nodes on one Redis, on 127.0.0.1:8080 and :8081 (scripts/cluster.sh).
run-cluster: deps
	@$(MAKE) --no-print-directory all
	@ARGS="$(ARGS)" scripts/cluster.sh

# Every test: unit and integration on the -O2 build, then both again under ASan+UBSan.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit integration
	@$(MAKE) --no-print-directory install-test
	@$(MAKE) --no-print-directory asan-test
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory fuzz-test

unit: $(UNIT_BIN)
	@scripts/unit.sh $(UNIT_BIN)

# The embedding example streams runs from 4 threads through the public C API.
examples: $(EXAMPLE_BIN)
	@for e in $(EXAMPLE_BIN); do echo "== $$e"; $$e || exit 1; done
	@echo "== $(BUILD)/examples/embed --threads 4"; $(BUILD)/examples/embed --threads 4

# The suites run once per --threads value in INTEGRATION_THREADS (one event loop, then four
# on however many cores there are); the ASan pass runs them at 4.
INTEGRATION_THREADS ?= 1 4
integration: $(BUILD)/agentcastd $(BENCH_BIN) examples
	@for n in $(INTEGRATION_THREADS); do echo "== integration: --threads $$n"; \
		AGENTCAST_THREADS=$$n AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) \
		AGENTCAST_BENCH=$(abspath $(BUILD)/bench) scripts/integration.sh || exit 1; \
		AGENTCAST_THREADS=$$n AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) \
		scripts/conformance.sh || exit 1; done
	@AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) scripts/python-test.sh
	@AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) AGENTCAST_BENCH=$(abspath $(BUILD)/bench) \
		scripts/bench.sh smoke

# The Python SDK (clients/python): mypy --strict and pytest against the daemon.
.PHONY: python-test
python-test: $(BUILD)/agentcastd
	@AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) scripts/python-test.sh

asan:
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O0 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" all $(UNIT_BIN:$(BUILD)/%=build/asan/%)

asan-test: asan
	@AGENTCAST_SANITIZED=1 $(MAKE) --no-print-directory BUILD=build/asan \
		OPT="-O0 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" INTEGRATION_THREADS=4 \
		unit integration

# ThreadSanitizer over the places threads meet: ac_emit()'s queue (examples/embed.c), the
# loop-to-loop inbox (test_inbox: producers on loops of their own) and a connection moved
# between loops (test_handoff: plain and TLS).
# Then the daemon itself built with TSan runs the integration suite's core files at
# --threads 4 (hand-offs, parked loops, cross-loop publishes, shutdown).
TSAN_TESTS := test_inbox test_handoff
TSAN_SUITE := multicore delivery agent_socket runs resume shutdown stats
tsan:
	@$(MAKE) --no-print-directory BUILD=build/tsan OPT="-O1 -g" SAN="-fsanitize=thread" examples
	@$(MAKE) --no-print-directory BUILD=build/tsan OPT="-O1 -g" SAN="-fsanitize=thread" \
		$(TSAN_TESTS:%=build/tsan/tests/%) build/tsan/agentcastd
	@for t in $(TSAN_TESTS); do TSAN_OPTIONS=halt_on_error=1 build/tsan/tests/$$t || exit 1; done
	@cd tests && [ -d node_modules/ws ] || npm ci --no-audit --no-fund --loglevel=error
	@AGENTCAST_THREADS=4 AGENTCAST_SANITIZED=1 TSAN_OPTIONS="halt_on_error=1 exitcode=66" \
		AGENTCAST_BIN=$(abspath build/tsan/agentcastd) timeout --kill-after=10 900 \
		node --test --test-reporter=spec --test-concurrency=1 --test-timeout=120000 \
		$(TSAN_SUITE:%=tests/integration/%.test.mjs)

# The integration suite with the daemon under valgrind memcheck (slow; not part of test).
valgrind: deps
	@$(MAKE) --no-print-directory debug
	@AGENTCAST_BIN=$(abspath scripts/valgrind-daemon.sh) AGENTCAST_SANITIZED=1 \
		INTEGRATION_TEST_TIMEOUT_MS=900000 \
		INTEGRATION_SUITE_TIMEOUT=5400 scripts/integration.sh

debug:
	@$(MAKE) --no-print-directory BUILD=build/debug OPT="-O0 -g" all

bench: deps all
	@scripts/bench.sh

bench-quick: deps all
	@BENCH_QUICK=1 scripts/bench.sh

# A bounded soak (scripts/soak.mjs, SOAK_SECONDS=600 by default; not part of test): churn,
# bursts, slow clients and resumes at a steady rate; RSS and queued bytes charted in bench/soak/.
soak: deps all
	@AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) node scripts/soak.mjs

# Instructions per event under valgrind --tool=callgrind (bench/README.md).
callgrind: deps all
	@scripts/callgrind.sh

# The bench tools share bench/lg_util.h.
$(BENCH_BIN): $(wildcard bench/*.h)

format:
	clang-format -i $(LIB_SRC) $(SRV_SRC) $(UNIT_SRC) $(BENCH_SRC) $(EXAMPLE_SRC) include/*.h src/*/*.h

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(SRV_OBJ:.o=.d)

# libFuzzer targets (tests/fuzz/): clang with ASan+UBSan into build/fuzz, each run for
# FUZZ_SECONDS on a working copy of its seed corpus (tests/fuzz/run.sh); fuzz-test is the
# 30-second run of `make test`. Both fail on any crash, leak or broken invariant.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := http ws publish jwt jscan

.PHONY: fuzz fuzz-build fuzz-test

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang OPT="-O1 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" \
		$(FUZZ_TARGETS:%=build/fuzz/fuzz_%)

fuzz: fuzz-build
	@tests/fuzz/run.sh $(FUZZ_SECONDS) build/fuzz $(FUZZ_TARGETS)

fuzz-test:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=30

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(BUILD)/libagentcast.a
	$(CC) $(CFLAGS_ALL) -fsanitize=fuzzer -MMD -MP -MF $@.d $(LDFLAGS_ALL) -o $@ $< \
		$(BUILD)/libagentcast.a $(LDLIBS_ALL)

-include $(wildcard $(BUILD)/fuzz_*.d)

# ---- install ---------------------------------------------------------------------------
# make install PREFIX=/usr/local DESTDIR=/tmp/stage (and make uninstall, same variables).
# The shared library is built from -fPIC objects of its own (build/pic/) and exports only
# the public ac_* API (dist/agentcast.map); the manual page is written by the daemon from
# the flag table that also prints --help (agentcastd --help-man).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR    ?= $(PREFIX)/share/agentcast
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(PREFIX)/lib/systemd/system
PIC_OBJ    := $(LIB_SRC:%.c=$(BUILD)/pic/%.o)
CLIENT_FILES := clients/js/agentcast.js clients/js/agentcast.d.ts clients/js/README.md \
                clients/js/package.json
WEB_FILES  := $(wildcard web/*)
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@DATADIR@|$(DATADIR)|g' \
	-e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@VERSION@|$(AC_VERSION_STR)|g'

.PHONY: install uninstall install-test shared

shared: $(BUILD)/$(SHLIB)

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fPIC -MMD -MP -c $< -o $@

$(BUILD)/pic/src/broker/redis.o: $(BUILD)/gen/redis_lua.h

$(BUILD)/$(SHLIB): $(PIC_OBJ) dist/agentcast.map
	$(CC) -shared $(LDFLAGS_ALL) -Wl,-soname,libagentcast.so.$(SOVERSION) \
		-Wl,--version-script=dist/agentcast.map -Wl,-z,defs -o $@ $(PIC_OBJ) $(LDLIBS_ALL)
	ln -sf $(SHLIB) $(BUILD)/libagentcast.so.$(SOVERSION)
	ln -sf libagentcast.so.$(SOVERSION) $(BUILD)/libagentcast.so

$(BUILD)/agentcastd.8: $(BUILD)/agentcastd
	$(BUILD)/agentcastd --help-man > $@.tmp && mv $@.tmp $@

install: $(BUILD)/agentcastd $(BUILD)/libagentcast.a $(BUILD)/$(SHLIB) $(BUILD)/agentcastd.8
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DATADIR)/web $(DESTDIR)$(DATADIR)/clients/js \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/agentcast
	install -m 0755 $(BUILD)/agentcastd $(DESTDIR)$(BINDIR)/agentcastd
	install -m 0644 $(BUILD)/libagentcast.a $(DESTDIR)$(LIBDIR)/libagentcast.a
	install -m 0755 $(BUILD)/$(SHLIB) $(DESTDIR)$(LIBDIR)/$(SHLIB)
	ln -sf $(SHLIB) $(DESTDIR)$(LIBDIR)/libagentcast.so.$(SOVERSION)
	ln -sf libagentcast.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libagentcast.so
	install -m 0644 include/agentcast.h $(DESTDIR)$(INCLUDEDIR)/agentcast.h
	$(SUBST) dist/agentcast.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/agentcast.pc
	install -m 0644 $(BUILD)/agentcastd.8 $(DESTDIR)$(MANDIR)/man8/agentcastd.8
	install -m 0644 $(WEB_FILES) $(DESTDIR)$(DATADIR)/web/
	install -m 0644 $(CLIENT_FILES) $(DESTDIR)$(DATADIR)/clients/js/
	$(SUBST) dist/agentcastd.service.in > $(DESTDIR)$(UNITDIR)/agentcastd.service
	$(SUBST) dist/agentcast.conf.in > $(DESTDIR)$(DATADIR)/agentcast.conf.example
	@# An operator's configuration is never overwritten.
	[ -e $(DESTDIR)$(SYSCONFDIR)/agentcast/agentcast.conf ] || \
		install -m 0644 $(DESTDIR)$(DATADIR)/agentcast.conf.example \
			$(DESTDIR)$(SYSCONFDIR)/agentcast/agentcast.conf
	@if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null 2>&1; then ldconfig; fi

# Leaves the configuration in $(SYSCONFDIR)/agentcast (an operator's file).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/agentcastd $(DESTDIR)$(LIBDIR)/libagentcast.a \
		$(DESTDIR)$(LIBDIR)/$(SHLIB) $(DESTDIR)$(LIBDIR)/libagentcast.so.$(SOVERSION) \
		$(DESTDIR)$(LIBDIR)/libagentcast.so $(DESTDIR)$(LIBDIR)/pkgconfig/agentcast.pc \
		$(DESTDIR)$(INCLUDEDIR)/agentcast.h $(DESTDIR)$(MANDIR)/man8/agentcastd.8 \
		$(DESTDIR)$(UNITDIR)/agentcastd.service
	rm -rf $(DESTDIR)$(DATADIR)

# make install into a temporary folder, then use what it installed (scripts/install-test.sh).
install-test: $(BUILD)/agentcastd $(BUILD)/libagentcast.a $(BUILD)/$(SHLIB) $(BUILD)/agentcastd.8
	@scripts/install-test.sh

-include $(PIC_OBJ:.o=.d)
