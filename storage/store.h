/* store: one shard's key-value store — the log (log.h) holds every record,
 * the index (index.h) says where each key's current value is, a bounded
 * cache keeps hot values, and writes not yet in the index are served from
 * the cache's pinned entries.  How it does so: store_int.h; the measurements
 * behind its tuning: docs/DECISIONS.md, "Storage".
 *
 * Every call is made on the shard's proactor; every request completes through
 * its `done` callback on a later iteration (never inside the call that
 * submitted it).
 *
 * Ordering: requests on the same key run in submission order — a request
 * that must wait for I/O (a cold read, a read-modify-write) holds back later
 * requests on that key until it finishes.  So a client's pipelined INCR then
 * GET always sees its own increment.
 *
 * Durability: a write's `done` runs after its log record is written as
 * storage.durability says (fsync / write), or at once for `none`.  Requests
 * submitted after a write see it at once, though the index gets it up to
 * seconds later (written behind, one row per key however often it was
 * written meanwhile).  A crash loses nothing the log holds: at open every
 * record after the index's applied_lsn is replayed into it.
 *
 * Key count: exact whenever it is read.  Like Redis's DBSIZE it includes keys
 * that have expired but have not been reclaimed yet.
 *
 * Expiry: an expired key is never returned (checked on every read).  Active
 * expiry reclaims expired keys in the background without reading them, each
 * deleted through the normal write path, so the count stays exact.
 *
 * Garbage collection (gc_live_ratio > 0): a sealed log segment whose live
 * fraction (the bytes of the records the index points at, exact across
 * crashes) is below gc_live_ratio has its live records rewritten at the end
 * of the log, each only if its key still points at it (so a concurrent
 * overwrite or delete simply wins), and is then deleted — only once the index
 * pointing at the new copies is persisted by RocksDB and the log holding them
 * is on stable storage, so no crash recovers an index pointing into a deleted
 * segment.  The log stays under about (live bytes) / gc_live_ratio plus the
 * segment being written and the ones awaiting deletion.
 */
#ifndef RINGKV_STORE_H
#define RINGKV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "service/runtime/proactor.h"
#include "storage/index.h"
#include "storage/log.h"

struct store_config {
	const char *dir;            /* DIR/shard-NNN; created if missing */
	unsigned shard;
	uint64_t segment_size;      /* log segment bytes */
	enum log_durability durability;
	uint32_t inline_max;        /* values up to this size live in the index */
	uint64_t cache_bytes;       /* this shard's share of storage.cache_size */
	struct idx_shared *shared;  /* block cache and background threads of all shards */
	double gc_live_ratio;       /* rewrite sealed segments whose live fraction is below
				       this (0 < r < 1); 0 = no garbage collection */
};

enum store_op {
	STORE_GET,    /* value and expiry of key */
	STORE_META,   /* exists / expiry / length, without reading the value */
	STORE_PUT,    /* set value (flags: NX, XX, KEEPTTL, GET) */
	STORE_DELETE, /* delete key; result: whether it existed */
	STORE_EXPIRE, /* set expiry_ms on an existing key (0 = persist) */
	STORE_UPDATE, /* read-modify-write through req->update */
	STORE_RELOCATE, /* internal: garbage collection moves a value (never submitted by
			   callers) */
};

#define STORE_NX 0x1      /* PUT only if the key does not exist */
#define STORE_XX 0x2      /* PUT only if the key exists */
#define STORE_KEEPTTL 0x4 /* PUT keeps the existing expiry */
#define STORE_GET_OLD 0x8 /* PUT/DELETE also return the previous value */
#define STORE_IF_EXPIRED 0x10 /* DELETE only a key whose expiry has passed */

/* What a read-modify-write decides, given the current value. */
enum store_update_result {
	STORE_UPDATE_WRITE,  /* write new_value (and new_expiry_ms) */
	STORE_UPDATE_DELETE, /* delete the key */
	STORE_UPDATE_KEEP,   /* change nothing (e.g. an error reply) */
};

struct store;
struct store_req;

/* Decides a read-modify-write on the proactor.  old is NULL when the key does
 * not exist.  To write, set req->new_value / new_len (memory owned by the
 * caller, valid until done) and req->new_expiry_ms. */
typedef enum store_update_result (*store_update_fn)(struct store_req *req, const uint8_t *old,
						     size_t old_len, uint64_t old_expiry_ms);

/* One request.  Owned by the caller (embed it in the command's context) and
 * untouched by the caller from store_submit() until done runs. */
struct store_req {
	/* set by the caller */
	enum store_op op;
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value;      /* PUT: the new value (caller-owned until done) */
	size_t value_len;
	uint64_t expiry_ms;        /* PUT, EXPIRE: absolute Unix ms, 0 = none */
	unsigned flags;            /* STORE_NX | STORE_XX | STORE_KEEPTTL | STORE_GET_OLD */
	store_update_fn update;    /* UPDATE */
	void *arg;                 /* the caller's */
	void (*done)(struct store_req *req);

	/* set by the store before done */
	int status;                /* 0; -ENOENT (no such key); -EEXIST (NX/XX refused);
				      -EIO, -ENOSPC, -E2BIG (write failed, nothing changed) */
	bool existed;              /* the key existed before the request (false for a
				      plain PUT of a key not cached: it does not ask) */
	const uint8_t *result;     /* GET, GET_OLD: the value; valid only inside done */
	size_t result_len;         /* META: the value's length */
	uint64_t result_expiry_ms; /* GET, META: the key's expiry, 0 = none */

	/* UPDATE: set by the update function */
	const uint8_t *new_value;
	size_t new_len;
	uint64_t new_expiry_ms;

	/* private to the store */
	struct store_req *next_waiting; /* later request on the same key */
	struct log_read read;            /* a cold read of the value */
	struct store *store;
	void *key_entry;                 /* the key's entry in the store's key table */
	void *result_ref;                /* keeps `result` alive until done has run */
	unsigned retries;                /* index re-reads after a moved value */
};

struct store_stats {
	uint64_t keys;             /* exact key count */
	uint64_t log_bytes;        /* bytes in log segments */
	uint64_t cache_hits, cache_misses;
	uint64_t index_blocking_reads; /* index entries not in the block cache, read blocking */
	uint64_t index_block_misses;   /* index blocks read from SST files */
	uint64_t index_bytes;          /* index memtables and SST files */
	uint64_t disk_reads;       /* log reads */
	uint64_t commits;          /* log commits (group commits) */
	uint64_t records;          /* records in them: records / commits = batching */
	uint64_t fsyncs;
	uint64_t write_errors;     /* commits that failed */
	uint64_t expired;          /* keys deleted by active expiry */
	uint64_t live_bytes;       /* bytes of log records the index points at */
	uint64_t gc_runs;          /* segments garbage collection walked */
	uint64_t gc_records_moved; /* live records it rewrote */
	uint64_t gc_bytes_moved;   /* their value bytes */
	uint64_t gc_segments_deleted; /* segments it deleted */
	uint64_t segments_recycled;   /* ... of which kept as the log's spare (log.h) */
	uint64_t spare_bytes_zeroed;  /* zeroes written to prepare spare segments */
	uint64_t tail_bytes_zeroed;   /* ... and ahead of the commits (log.h) */
	uint64_t blind_puts;          /* PUTs that did not read the index first (store_int.h) */
	uint64_t blind_puts_existing; /* ... of which the key turned out to exist */
	uint64_t index_writes_merged; /* writes folded into a newer one of their key before
	                                 the index got them (store_int.h) */
	uint64_t index_batch_keys;    /* keys whose writes wait for the index now */
	uint64_t records_replayed;    /* log records recovery replayed when the store opened */
};

struct store;

/* Opens the shard: the index, then the log replayed from the index's
 * applied_lsn.  Blocking: call at start-up on the shard's proactor.  Returns
 * 0, or -errno with a message naming the cause and the fix. */
int store_open(struct store **out, struct px *px, const struct store_config *cfg, char *err,
	       size_t errlen);

/* Submits a request; its done runs on a later iteration. */
void store_submit(struct store *st, struct store_req *req);

#define STORE_PREFETCH_MAX 32 /* keys store_prefetch looks at per call */

/* A hint: requests on these keys are about to be submitted (the next
 * commands of a pipeline).  Starts loading what store_submit will touch for
 * them (the key table's bucket, the key's entry and its cached value) so the
 * cache misses of a batch overlap instead of following each other.  Changes
 * nothing; keys the table does not hold cost only their bucket.  At most
 * STORE_PREFETCH_MAX keys are looked at. */
void store_prefetch(struct store *st, const uint8_t *const *keys, const size_t *lens, size_t n);

/* SCAN: visits about `count` keys from `cursor` (0 = start) in hash order,
 * calling fn for each live key with its expiry, and sets *next to the cursor
 * to pass next time, 0 when the walk is complete.  Cursors are hashes, so
 * they stay valid across writes and restarts, and every key that exists for
 * the whole walk is visited at least once (a key may be visited twice).  Keys
 * deleted, expired or dropped are skipped.  One caveat: with durability
 * `none` a key written in the last milliseconds (acknowledged, its log write
 * still in flight) is missed by a call whose range has passed it.  Reads the index
 * blocking, bounded by `count`.  Returns 0 or -EIO. */
int store_scan(struct store *st, uint64_t cursor, size_t count,
	       void (*fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms),
	       void *arg, uint64_t *next);

/* FLUSHALL of this shard: every key is deleted, durably, through a DROP
 * record in the log.  Requests that were waiting for a disk read when it was
 * submitted see the keys as deleted.  req->done runs as for a write. */
void store_drop_all(struct store *st, struct store_req *req);

/* Asks the index to persist its memtables in the background (a RocksDB
 * flush), so a restart replays less of the log.  Returns at once: 0, or
 * -EALREADY (nothing to flush), -EBUSY (a flush is still running), -EIO. */
int store_checkpoint(struct store *st);

uint64_t store_key_count(struct store *st);
void store_get_stats(struct store *st, struct store_stats *out);

/* Stops accepting requests and finishes what is in flight; store_busy()
 * turns false when store_close() may be called. */
void store_stop(struct store *st);
bool store_busy(const struct store *st);
void store_close(struct store *st);

#endif
