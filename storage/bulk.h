/* bulk: the offline bulk writer — loads strings, hashes and sets straight
 * into a data directory's shards (layout.h) while no server runs, producing
 * the log segments (format.h) and index rows (index.h) the server would have
 * written for the same SETs, HSETs and SADDs in the same order.  Used by
 * ringkv-import --offline; docs/IMPORT.md has the user-facing description
 * and the crash-safety argument.
 *
 * Life of an import:
 *
 *   bulk_open     recovers every existing shard as the server's start-up
 *                 would (store_open, then a clean close: the log is replayed
 *                 into the index and a torn tail cut), then takes every
 *                 shard's DIR/shard-NNN/LOCK (layout_lock_shard, as the server
 *                 does) for the whole import and opens the shard indexes.
 *   bulk_put,     (many times) append records to the shard's new log
 *   bulk_coll,    segments, written sequentially with O_DIRECT through
 *   bulk_expire   io_uring in 1 MiB commits each ending with its PAD, under
 *                 temporary names (log/SSSSSSSSSSSSSSSS.seg.import) that
 *                 recovery ignores; remember each key's index entry and each
 *                 collection's elements.
 *   bulk_finish   flushes and syncs the segments; per shard (in parallel, one
 *                 thread per CPU) sorts the entries into index-row order
 *                 (duplicates: the last row wins), looks up keys that already
 *                 exist (key count, expiry rows to drop) and writes two sorted
 *                 tables (idx_sst_*): the key rows, expiry rows and the new
 *                 applied_lsn and key count; and the element rows of the
 *                 collections; then commits: renames every new segment of
 *                 every shard to its final name, syncs the log directories,
 *                 and ingests each shard's tables (idx_ingest, both at once).
 *   bulk_close    releases the locks; without a successful bulk_finish it
 *                 first deletes every temporary file, leaving the shards'
 *                 contents as they were.
 *
 * Types follow Redis as a replay of the commands would: a SET replaces a key
 * of any type; an HSET or SADD adds to a collection of its type — one written
 * earlier in the import, or one the data directory holds (read from the
 * index: its version, count, encoding and expiry carry on) — and is refused
 * (WRONGTYPE) on a key of another type.  A key whose expiry has passed counts
 * as absent.
 *
 * LSNs continue the shard's log: the first record gets applied_lsn + 1 and
 * the ingested applied_lsn is the last one written, so recovery replays
 * nothing.  A collection the import creates gets the version (LSN of its
 * first record) << 16, as a server call would, above every version the
 * shard handed out before and below every one it hands out after.  New
 * segments take the ids after the shard's last one; the server resumes
 * writing in the last new segment (it cuts and preallocates it).
 *
 * Imports go to database 0.
 *
 * Threads: every call from one thread; bulk_finish starts and joins its own.
 */
#ifndef RINGKV_BULK_H
#define RINGKV_BULK_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bulk_config {
	const char *dir;             /* data directory holding LAYOUT (layout_open first) */
	unsigned shards;             /* the directory's shard count (from layout_open) */
	unsigned databases;          /* server.databases (1..FMT_DB_MAX): existing shards are
	                                recovered with it, a new shard's map gets as many */
	uint64_t segment_size;       /* storage.segment_size: bytes, multiple of 4096, >= 1 MiB */
	uint32_t inline_max;         /* storage.inline_max: values up to this live in the index */
	uint64_t index_cache;        /* RocksDB block cache bytes during the import */
	unsigned threads;            /* bulk_finish's worker threads (>= 1) */
	volatile sig_atomic_t *stop; /* when non-NULL and set, bulk_finish gives up with
	                                -EINTR before the commit (a signal handler sets it) */
	void (*phase)(void *arg, const char *what); /* optional: bulk_finish names its
	                                               phases ("sorting", ...) */
	void *phase_arg;
};

/* What the import did, filled by bulk_finish. */
struct bulk_stats {
	uint64_t rows;        /* commands written to the log (bulk_put and bulk_coll calls
	                         that succeeded) */
	uint64_t keys;        /* distinct keys written: rows minus duplicates within the input */
	uint64_t new_keys;    /* of them, keys that did not exist before */
	uint64_t overwritten; /* of them, keys that existed before (their value replaced) */
	uint64_t extended;    /* of them, collections that existed and were added to */
	uint64_t elements;    /* element rows written (hash fields, set members) */
	uint64_t log_bytes;   /* bytes of log written, segment headers and padding included */
	uint64_t segments;    /* new segment files */
};

struct bulk;

/* Prepares an import into cfg->dir (see above).  Returns 0, or -errno with a
 * message naming the cause and the fix in `err`: -EBUSY when a process (a
 * running server, another import) holds a shard — the message names its pid.
 * On failure nothing was changed but what a server start-up would change. */
int bulk_open(struct bulk **out, const struct bulk_config *cfg, char *err, size_t errlen);

/* Appends one SET of key to the import (expiry_ms: absolute Unix time in ms,
 * 0 = none).  Returns 0; -E2BIG when the key or value is over the limits
 * (FMT_KEY_MAX; a record must fit one segment) — the row is skipped and the
 * import may go on; any other -errno is fatal (a write failed: the message in
 * `err`; call bulk_close). */
int bulk_put(struct bulk *b, const void *key, size_t klen, const void *value, size_t vlen,
             uint64_t expiry_ms, char *err, size_t errlen);

/* One element of a collection command: a hash's field and its value, or a
 * set's member (value NULL, vlen 0). */
struct bulk_elem {
	const void *elem;
	size_t elen; /* <= FMT_ELEM_MAX */
	const void *value;
	size_t vlen;
	uint8_t enc; /* FMT_ENC_* flags putting it forces on its collection (a
	                long field or value, a set member that is not an integer:
	                the caller's rule, as the server's commands mark them) */
};

/* A command that adds elements to a hash or a set: HSET, HMSET, HSETNX,
 * SADD.  The memory it points to is the caller's, read during the call. */
struct bulk_coll_cmd {
	uint8_t type; /* FMT_TYPE_HASH or FMT_TYPE_SET */
	const void *key;
	size_t klen;
	const struct bulk_elem *elems; /* n >= 1, in order: a repeated element's last
	                                  value wins */
	size_t n;
	bool only_new;      /* HSETNX: an element that exists keeps its value */
	uint64_t expiry_ms; /* != 0: the key's expiry afterwards (absolute Unix
	                       ms, as an EXPIRE after it); 0: it keeps its own */
	uint64_t big_after; /* more elements than this: FMT_ENC_BIG (Redis's
	                       hash-max-listpack-entries, set-max-intset-entries) */
};

/* Appends one collection command to the import: what the server would write
 * for it — the collection's metadata record (flags: its type; value:
 * fmt_encode_coll_meta) when it changes, then a PUT of each element put, as
 * one group in one commit (a command of many elements: several groups of at
 * most about 1 MiB, each whole).  Returns 0; or, with the reason in `err`
 * and nothing written, a refusal of the command that lets the import go on:
 * -EPROTOTYPE (the key holds another type: Redis's WRONGTYPE) or -E2BIG (a
 * key, element or value over the limits); any other -errno is fatal (call
 * bulk_close). */
int bulk_coll(struct bulk *b, const struct bulk_coll_cmd *c, char *err, size_t errlen);

/* Sets key's expiry (absolute Unix ms; 0: none, PERSIST), as EXPIRE and its
 * kin do: a collection gets a new metadata record, a string the import wrote
 * is written again with its value and the new expiry.  A key that does not
 * exist (or has expired) is left alone, as in Redis; an expiry in the past is
 * written as it is (the key is expired from then on, as Redis leaves a key
 * when it loads an AOF).  Returns 0; -EOPNOTSUPP (the key is a string the
 * data directory holds: its value would have to be read back from the old
 * log; the reason in err, nothing written, the import may go on); any other
 * -errno is fatal. */
int bulk_expire(struct bulk *b, const void *key, size_t klen, uint64_t expiry_ms, char *err,
                size_t errlen);

/* Bytes of log appended so far (for progress). */
uint64_t bulk_bytes(const struct bulk *b);

/* Finishes and commits the import (see above).  Returns 0 with *stats
 * filled; -EINTR when cfg->stop was set before the commit; or -errno with a
 * message in `err`.  After any error before the commit point the directory
 * is left as it was by bulk_close.  An error after it (an ingest failing) is
 * reported but the import stands: its segments are in place and the server's
 * recovery replays them into the index.  Call once. */
int bulk_finish(struct bulk *b, struct bulk_stats *stats, char *err, size_t errlen);

/* Deletes the import's temporary files unless bulk_finish committed it,
 * closes the indexes, releases the locks and frees b. */
void bulk_close(struct bulk *b);

/* Completes an offline import that was committed (DIR/IMPORT-COMMIT
 * written) but killed before all its segments were renamed: renames the rest,
 * under each shard's lock, and deletes the journal; the server's recovery
 * then replays the new segments into the index.  Call at server start-up
 * before the stores open.  Returns 0 (also when there is nothing to do), or
 * -errno with a message in err (-EBUSY: a shard is held by another process). */
int bulk_roll_forward(const char *dir, char *err, size_t errlen);

#endif
