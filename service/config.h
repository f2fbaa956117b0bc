/* config: ringkv's configuration — config.yaml read with libyaml, plus
 * command-line overrides.
 *
 * The file has four sections (server, storage, uring, log); every option, its
 * type, range and default is listed once, in the option table of config.c,
 * and documented in the repository's config.yaml.  Unknown keys, wrong types,
 * out-of-range values and malformed YAML are rejected with
 * "FILE:LINE:COLUMN: section.key: reason" (1-based line and column).
 *
 * Sizes accept a plain integer of bytes or a suffix k, kb, m, mb, g, gb
 * (powers of 1024, case-insensitive): "64mb".  Booleans: true/false, yes/no,
 * on/off.  Durations are integers with their unit in the key's name (_us, _ms,
 * _s).
 */
#ifndef RINGKV_CONFIG_H
#define RINGKV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cfg_durability {
	CFG_DURABILITY_FSYNC = 0, /* ack after write + fdatasync */
	CFG_DURABILITY_WRITE = 1, /* ack after the O_DIRECT write; fdatasync every second */
	CFG_DURABILITY_NONE = 2,  /* ack on append */
};

struct cfg_server {
	char bind[256];              /* listen address(es), space separated; default 127.0.0.1 */
	int port;                    /* TCP port, 1..65535; default 6379 */
	int threads;                 /* proactors; 0 = one per online CPU; 0..1024 */
	bool pin_threads;            /* pin proactor i to CPU i mod online CPUs */
	int max_clients;             /* 1..1000000; default 10000 */
	int databases;               /* SELECT 0..databases-1; 1..65536; default 16 */
	char requirepass[512];       /* "" = no AUTH required */
	int timeout_s;               /* idle client timeout, 0 = off */
	int tcp_backlog;             /* listen(2) backlog; default 511 */
	uint64_t max_bulk_len;       /* bytes, default 512mb (Redis proto-max-bulk-len) */
	int max_multibulk_len;       /* arguments per command, default 1048576 */
	uint64_t max_inline_len;     /* bytes, default 64kb (Redis PROTO_INLINE_MAX_SIZE) */
	uint64_t output_buffer_limit; /* bytes of pending replies before disconnect, default 64mb */
	int msg_queue_size;          /* slots per cross-proactor queue, power of two, 16..65536 */
	int busy_reply_threshold_ms; /* a script running longer is busy (SCRIPT KILL); default 5000 */
};

struct cfg_storage {
	char dir[4096];              /* data directory; default ./data */
	enum cfg_durability durability; /* default fsync */
	uint64_t segment_size;       /* log segment bytes, 1mb..64gb, multiple of 4kb; default 256mb */
	uint64_t inline_max;         /* values up to this many bytes live in the index; 0..4096, default 64 */
	uint64_t cache_size;         /* hot-value cache bytes, all shards; 0 = auto (default) */
	uint64_t index_cache_size;   /* RocksDB block cache bytes, shared; 0 = auto (default) */
	double gc_live_ratio;        /* segments below this live ratio are rewritten; 0.05..0.95, default 0.5 */
	int index_threads;           /* threads reading the index off the loop, 0 = auto; 0..256 */
};

struct cfg_uring {
	int entries;                 /* SQ entries per proactor ring, power of two, 64..32768 */
	int busy_poll_us;            /* spin this long before sleeping (adaptively), 0..10000; default 10 */
	int buf_ring_entries;        /* provided receive buffers per proactor, power of two, 0 = plain recv */
	uint64_t buf_size;           /* bytes per provided receive buffer, 512..1mb; default 16kb */
};

struct cfg_log {
	int level;                   /* enum log_level; written as error|warn|info|debug */
	char file[4096];             /* "" = stderr */
};

struct cfg {
	struct cfg_server server;
	struct cfg_storage storage;
	struct cfg_uring uring;
	struct cfg_log log;
};

/* Fills `cfg` with every option's default. */
void cfg_defaults(struct cfg *cfg);

/* Reads `path` over the values already in `cfg` (keys absent from the file
 * keep their value).  Returns 0, or -1 with a one-line message
 * "PATH:LINE:COL: reason" in `err` (also for a file that cannot be opened:
 * "PATH: No such file or directory").  On error `cfg` may be partly updated. */
int cfg_load_file(struct cfg *cfg, const char *path, char *err, size_t errlen);

/* Applies one override "section.key=value", e.g. "server.port=7000", with the
 * same type and range checks as the file.  Returns 0, or -1 with
 * "--set section.key=value: reason" in `err`. */
int cfg_set(struct cfg *cfg, const char *assignment, char *err, size_t errlen);

/* Returns the current value of "section.key" as text in `out` (sizes in
 * bytes, booleans yes/no, enums by name), or -1 if there is no such option.
 * Used by CONFIG GET and by --check-config's dump. */
int cfg_get(const struct cfg *cfg, const char *name, char *out, size_t outlen);

/* Calls fn(name, value_text, arg) for every option, in table order. */
void cfg_foreach(const struct cfg *cfg, void (*fn)(const char *name, const char *value, void *arg),
		 void *arg);

const char *cfg_durability_name(enum cfg_durability d);

/* `auto` cache sizes: shares of the memory this process may use (the
 * machine's, or its cgroup's limit when lower), at least CFG_AUTO_MIN. */
#define CFG_AUTO_VALUE_DIVISOR 4 /* storage.cache_size: a quarter */
#define CFG_AUTO_INDEX_DIVISOR 8 /* storage.index_cache_size: an eighth */
#define CFG_AUTO_MIN           (16ull << 20)

/* The memory the auto sizes share (bytes; 0 if unknown), and where it comes
 * from ("the machine's memory", "the cgroup's memory limit") in `source`. */
uint64_t cfg_memory(char *source, size_t len);

/* Replaces the auto (0) cache sizes of cfg by their shares; when note is
 * not NULL, writes the line the server logs at start about them. */
void cfg_resolve_auto(struct cfg *cfg, char *note, size_t len);

#endif
