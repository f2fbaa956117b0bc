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

BUILD    ?= build
OPT      ?= -O2
WARN      = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS   ?=
CFLAGS   += -std=gnu11 $(OPT) -g -pthread -D_GNU_SOURCE $(WARN) -MMD -MP -I.
LDFLAGS  ?=
LDLIBS    = -lrocksdb -luring -lyaml -lpthread -lm
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
BENCH_SRC   = tools/bench/ringkv_bench.c tools/bench/bench_msg.c tools/bench/bench_store.c
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

# make fuzz: libFuzzer target for the RESP parser (tests/fuzz/; needs clang-14 with
# libFuzzer; not part of make test).  Run: $(BUILD)/fuzz/fuzz_resp -max_total_time=60
FUZZ_CC ?= clang-14
.PHONY: fuzz
fuzz: $(BUILD)/fuzz/fuzz_resp
$(BUILD)/fuzz/fuzz_resp: tests/fuzz/fuzz_resp.c net/resp.c net/resp.h
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	@$(FUZZ_CC) -std=gnu11 -g -O1 -D_GNU_SOURCE $(WARN) -I. \
		-fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_resp.c net/resp.c -o $@
