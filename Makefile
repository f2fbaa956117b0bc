# ringkv — the only build entry point.
#
#   make                 build everything into $(BUILD)/ (server, bench, test programs)
#   make run             install missing dependencies, build, start the server with config.yaml
#   make test            install missing dependencies, build and run every test (tests/run.sh),
#                        also under ASan/UBSan and TSan; ends with "N passed, N failed, N skipped"
#   make SANITIZE=address,undefined   or   SANITIZE=thread   sanitizer builds (use BUILD=...)
#   make WERROR=1        warnings are errors (CI)
#   make format          clang-format every source file
#   make check-layers    the layer rule between service/runtime, storage, net, the daemon and
#                        tools, checked on every #include (docs/ARCHITECTURE.md, "Layers")
#   make fuzz            build and run the libFuzzer targets (tests/fuzz/; the last section)

BUILD    ?= build
OPT      ?= -O2
WARN      = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   ?=
CFLAGS   += -std=gnu11 $(OPT) -g -pthread -D_GNU_SOURCE $(WARN) -MMD -MP -I. -I/usr/include/lua5.1
LDFLAGS  ?=
LDLIBS    = -lrocksdb -luring -lyaml -llua5.1-cjson -llua5.1-bitop -llua5.1 -lpthread -lm
CONFIG   ?= config.yaml

ifneq ($(WERROR),)
CFLAGS   += -Werror
endif
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
endif

# The runtime is the ground floor; storage and net stand on it; the daemon
# files stand on all three (docs/ARCHITECTURE.md, "Layers").
RUNTIME_SRC = $(wildcard service/runtime/*.c)
STORAGE_SRC = $(wildcard storage/*.c)
NET_SRC     = $(wildcard net/*.c)
# Daemon modules: config, shard (key -> slot -> shard), the command table and
# its handlers (service/cmd*.c).
DAEMON_SRC  = service/config.c $(wildcard service/shard.c service/cmd*.c)
SERVER_SRC  = service/server.c
BENCH_SRC   = tools/bench/ringkv_bench.c tools/bench/bench_msg.c tools/bench/bench_store.c \
              tools/bench/bench_resp.c tools/bench/bench_resp_gen.c tools/bench/bench_resp_loop.c \
              tools/bench/bench_resp_stats.c
# ringkv-import: main (import.c) and its modules, which its unit tests link too.
IMPORT_MOD  = tools/import/input.c tools/import/online.c tools/import/progress.c
IMPORT_SRC  = tools/import/import.c $(IMPORT_MOD)
UNIT_SRC    = $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIB_OBJ     = $(call obj,$(RUNTIME_SRC) $(STORAGE_SRC) $(NET_SRC) $(DAEMON_SRC))
# Programs link the modules through an archive, so each takes only the modules
# it uses (a storage test does not need the command handlers).
LIB         = $(BUILD)/libringkv.a
SERVER      = $(BUILD)/ringkv-server
BENCH       = $(BUILD)/ringkv-bench
IMPORT      = $(BUILD)/ringkv-import
UNIT_BIN    = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all tests deps run test format clean check-layers
all: $(SERVER) $(BENCH) $(IMPORT) tests
tests: $(UNIT_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@echo "  AR      $@"
	@rm -f $@
	@$(AR) rcs $@ $^

$(SERVER): $(call obj,$(SERVER_SRC)) $(LIB)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BENCH): $(call obj,$(BENCH_SRC)) $(LIB)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(IMPORT): $(call obj,$(IMPORT_SRC)) $(LIB)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/test_import_%: $(BUILD)/obj/tests/unit/test_import_%.o $(call obj,$(IMPORT_MOD)) $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lhiredis

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lhiredis

deps:
	@tools/deps.sh

run: deps
	@$(MAKE) --no-print-directory $(SERVER)
	$(SERVER) --config $(CONFIG)

test: deps
	@tests/run.sh

check-layers:
	@tools/check-layers.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- fuzzing: libFuzzer targets (tests/fuzz/; clang-14 with libFuzzer) ----------------------
#
#   make fuzz-build                  every target into $(BUILD)/fuzz/fuzz_TARGET
#   make fuzz [FUZZ_SECONDS=60]      build, then run each target that long on a temporary copy
#                                    of its seeds (tests/fuzz/corpus/TARGET); fails on any crash
#   make fuzz FUZZ_TARGETS="cmd log" only those targets
#
# make test runs each target for a few seconds (tests/run.sh).  The targets and the modules
# they link are built with -fsanitize=fuzzer(-no-link),address,undefined into $(BUILD)/fuzz/.
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS   = -std=gnu11 -g -O1 -pthread -D_GNU_SOURCE $(WARN) -MMD -MP -I. -I/usr/include/lua5.1 \
                -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ifneq ($(WERROR),)
FUZZ_CFLAGS  += -Werror
endif
FUZZ_SRC      = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS ?= $(patsubst tests/fuzz/fuzz_%.c,%,$(FUZZ_SRC))
FUZZ_BIN      = $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
FUZZ_MAIN_OBJ = $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(FUZZ_SRC))
FUZZ_LIB      = $(BUILD)/fuzz/libringkv.a
FUZZ_LIB_OBJ  = $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(RUNTIME_SRC) $(STORAGE_SRC) $(NET_SRC) \
                  $(DAEMON_SRC) tools/import/input.c)

.PHONY: fuzz fuzz-build
.SECONDARY: $(FUZZ_MAIN_OBJ)
fuzz-build: $(FUZZ_BIN)

fuzz:
	@FUZZ_CC=$(FUZZ_CC) tests/fuzz/fuzz.sh --check
	@$(MAKE) --no-print-directory fuzz-build
	@tests/fuzz/fuzz.sh $(BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  FUZZCC  $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	@echo "  AR      $@"
	@rm -f $@
	@$(AR) rcs $@ $^

$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	@echo "  FUZZLD  $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)

-include $(shell find $(BUILD)/fuzz/obj -name '*.d' 2>/dev/null)
