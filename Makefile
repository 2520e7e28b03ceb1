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

LIB_SRC  := $(wildcard src/core/*.c src/net/*.c src/broker/*.c src/api/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SRV_SRC  := $(wildcard src/server/*.c)
SRV_OBJ  := $(SRV_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
EXAMPLE_SRC := $(wildcard examples/*.c)
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)

.PHONY: all deps run run-cluster test unit integration examples asan asan-test tsan valgrind debug bench bench-quick callgrind clean format

all: $(BUILD)/agentcastd $(BUILD)/libagentcast.a $(BENCH_BIN) $(EXAMPLE_BIN)

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
	$(CC) $(LDFLAGS_ALL) -o $@ $(SRV_OBJ) $(BUILD)/libagentcast.a $(LDLIBS_ALL)

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
	@$(MAKE) --no-print-directory asan-test
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory fuzz-test

unit: $(UNIT_BIN)
	@scripts/unit.sh $(UNIT_BIN)

# The embedding example streams runs from 4 threads through the public C API.
examples: $(EXAMPLE_BIN)
	@for e in $(EXAMPLE_BIN); do echo "== $$e"; $$e || exit 1; done

integration: $(BUILD)/agentcastd $(BENCH_BIN) examples
	@AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) AGENTCAST_BENCH=$(abspath $(BUILD)/bench) \
		scripts/integration.sh
	@AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) scripts/conformance.sh
	@AGENTCAST_BIN=$(abspath $(BUILD)/agentcastd) AGENTCAST_BENCH=$(abspath $(BUILD)/bench) \
		scripts/bench.sh smoke

asan:
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O0 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" all $(UNIT_BIN:$(BUILD)/%=build/asan/%)

asan-test: asan
	@AGENTCAST_SANITIZED=1 $(MAKE) --no-print-directory BUILD=build/asan \
		OPT="-O0 -g -fno-omit-frame-pointer" \
		SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" unit integration

# ThreadSanitizer over the one place threads meet: ac_emit()'s queue (examples/embed.c).
tsan:
	@$(MAKE) --no-print-directory BUILD=build/tsan OPT="-O1 -g" SAN="-fsanitize=thread" examples

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
