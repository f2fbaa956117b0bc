/* store_int.h: the store's private state, its tuning constants and the
 * functions its files share.  The contract is store.h; the measurements
 * behind the constants are in docs/DECISIONS.md, "Storage".  Only
 * storage/store*.c include this file.
 *
 * Files, one concern each:
 *   store.c          open, close, stats, the end-of-iteration hook, store_submit
 *                    and the request machine (req_run, cold reads)
 *   store_cache.c    the key table (struct kentry), the CLOCK value cache,
 *                    store_prefetch
 *   store_write.c    appends, pending writes, write_done
 *   store_db.c       databases: the map of database numbers to stored ids,
 *                    FLUSHDB / FLUSHALL / SWAPDB, key counts per database
 *   store_txn.c      calls (STORE_CALL): collections, several keys at once
 *   store_apply.c    the index batch, blind puts, live bytes per segment
 *   store_scan.c     SCAN
 *   store_expire.c   active expiry
 *   store_gc.c       garbage collection
 *   store_recover.c  replay of the log at open
 *   store_commit.c   transactions: the open ones, COMMIT records, the
 *                    committed ids recovery reads (store.h, "transactions")
 * A function one file calls in another is named st_* and declared below with
 * its contract; everything else is static to its file.
 *
 * Rows are named by idents (format.h): a key of a database ('k', its stored
 * id, the key) or an element of a collection ('e', ..., the collection's
 * version, the element).  State per row lives in a `struct kentry` of the
 * key table, keyed by the ident, while the row is cached, has writes not yet
 * applied to the index, or (a key) has requests waiting.  Requests queue on
 * key kentries only; an element kentry is touched only by a call that heads
 * its key's queue.
 * A kentry that is `known` mirrors the truth: the index plus every pending
 * write.  Known kentries sit on a CLOCK list (a use only sets a bit) and idle
 * ones are dropped, least recently passed first, when the cache is over
 * budget.
 *
 * A write: log_append() the record; update the kentry at once (later
 * requests on the key see the new value: "reads see the pending batch");
 * release the key's queue; when the log reports the record written, the key
 * joins the index batch (st->applying, oldest first record first), or, if it
 * is there already, its entry there takes the newer record: a key written N
 * times while it waits reaches RocksDB once (index_writes_merged).  The key
 * stays pinned and known until its row is written, so the index is never
 * read for it meanwhile.  If a log write fails the batch is written first,
 * then the kentry is marked unknown (the index never saw the write, so the
 * next request re-reads it) and the count is restored.
 *
 * The index batch drains a slice per loop iteration (APPLY_SLICE_MIN ..
 * APPLY_SLICE keys, by the load, and at least what exceeds st->apply_keys:
 * the batch never outgrows its budget by more than an iteration's writes)
 * once it holds st->apply_keys keys (the
 * shard's cache budget at APPLY_KEY_BYTES each, at most APPLY_KEYS_MAX), its
 * oldest key has waited APPLY_DELAY_NS or APPLY_LAG_RECORDS log records, the
 * store has taken no request for APPLY_IDLE_NS, GC waits for it, or the store
 * stops; it is written whole before a SCAN, a checkpoint or a FLUSHALL.  Each
 * slice is one sorted RocksDB write with applied_lsn just below the oldest
 * record still waiting (st_apply_keys explains why replay after a crash is
 * still exact) and the key count of what the index then holds.  Live bytes
 * per segment move when a row is written; what the batch will move is kept
 * beside them (seg_usage.pending) so GC and INFO see every written record.
 * The index is flushed every CHECKPOINT_RECORDS log records, which bounds
 * what recovery replays: the log from applied_lsn, in batches of
 * REPLAY_BATCH records, each new key's previous entry read once per replay
 * (store_recover.c).
 *
 * Blind puts: a plain PUT (no NX/XX/GET/KEEPTTL) of a key the key table does
 * not hold does not read the index to learn whether the key existed, but
 * assumes it new.  One sorted MultiGet settles the assumption (count, live
 * bytes of the replaced record, its expiry row) for every APPLY_SLICE such
 * PUTs, before the index batch is written, before the count or the stats are
 * read and before a FLUSHALL (store_apply.c, "blind puts").
 *
 * When an index entry is not in RocksDB's block cache, the lookup is retried
 * as a blocking read on the loop (counted in index_blocking_reads).
 *
 * Active expiry: every EXPIRE_PERIOD_NS the index's expiry rows (ordered by
 * time) yield up to EXPIRE_BATCH expired keys, each deleted through the
 * normal write path (STORE_IF_EXPIRED); a full batch is followed by another
 * on the next iteration.
 *
 * Garbage collection: every GC_PERIOD_NS, and whenever a segment is sealed,
 * the sealed segment with the lowest live fraction under gc_live_ratio is
 * walked with sequential reads of GC_CHUNK bytes; each PUT record in it that
 * the key table does not already know to be dead goes through the normal
 * request path as a STORE_RELOCATE, which rewrites the value at the end of
 * the log only if the key's current entry is still that record.  The segment
 * is deleted once every relocation is in an index state RocksDB has persisted
 * (the store asks for a flush after GC_PERSIST_WAIT_NS) and in a log prefix
 * on stable storage.  Work per iteration is bounded (GC_SUBMIT_PER_STEP
 * relocations started, GC_EXAMINE_PER_STEP records looked at, GC_INFLIGHT_MAX
 * relocations in flight).
 */
#ifndef RINGKV_STORE_INT_H
#define RINGKV_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/clock.h"
#include "service/runtime/proactor.h"
#include "service/runtime/freelist.h"
#include "storage/format.h"
#include "storage/index.h"
#include "storage/log.h"
#include "storage/store.h"

/* ---- tuning ------------------------------------------------------------- */

#define STORE_READ_RETRIES 3  /* re-reads of the index when GC moved a value */
#define CACHE_EVICT_SKIPS  64 /* entries eviction passes over per call at most */

/* The index batch drains once it holds the shard's cache budget in keys at
 * APPLY_KEY_BYTES each (the memory of a waiting key: its kentry and pending
 * write), but at most APPLY_KEYS_MAX; or once its oldest key has waited
 * APPLY_DELAY_NS (it is written behind) or APPLY_LAG_RECORDS log records
 * have been written since that key's (what a crash would leave to replay). */
#define APPLY_KEY_BYTES   512
#define APPLY_KEYS_MAX    131072
#define APPLY_DELAY_NS    4000000000ULL
#define APPLY_LAG_RECORDS 1000000ULL

/* Keys written to the index per iteration while it drains: at most
 * APPLY_SLICE (also the blind PUTs resolved at a time), at least
 * APPLY_SLICE_MIN, in between 4x the keys that joined the batch in the
 * iteration (a slice stalls the loop: a light load gets short ones). */
#define APPLY_SLICE     4096
#define APPLY_SLICE_MIN 256

/* An idle loop runs no hook: a timer drains a slice every APPLY_TICK_NS.  A
 * store that took no request for APPLY_IDLE_NS drains its batch without
 * waiting for it to be due, APPLY_IDLE_SLICE keys a tick. */
#define APPLY_TICK_NS    1000000ULL
#define APPLY_IDLE_NS    20000000ULL
#define APPLY_IDLE_SLICE 1024

/* Log records between index flushes at most: what a crash leaves to replay.
 * RocksDB flushes on its own only when a memtable fills, which a hot
 * keyspace's merged rows may take minutes to do. */
#define CHECKPOINT_RECORDS 1000000ULL

/* Active expiry runs every EXPIRE_PERIOD_NS, taking at most EXPIRE_BATCH keys
 * a pass and keeping at most EXPIRE_INFLIGHT_MAX deletes in flight.  A walk
 * that reached the end starts over from the first expiry row at most every
 * EXPIRE_RESTART_NS (else it goes on from where it stopped). */
#define EXPIRE_PERIOD_NS    100000000ULL
#define EXPIRE_BATCH        128
#define EXPIRE_INFLIGHT_MAX 1024
#define EXPIRE_RESTART_NS   5000000000ULL

#define GC_PERIOD_NS        100000000ULL  /* garbage collection looks for work this often */
#define GC_CHUNK            (1u << 20)    /* bytes of a segment read at a time */
#define GC_SUBMIT_PER_STEP  64            /* relocations started per loop iteration at most */
#define GC_EXAMINE_PER_STEP 1024          /* records looked at per loop iteration at most */
#define GC_INFLIGHT_MAX     256           /* relocations in flight at most ... */
#define GC_INFLIGHT_BYTES   (8u << 20)    /* ... and their value bytes */
#define GC_WAITING_MAX      16            /* walked segments waiting to be deleted */
#define GC_RETRY_NS         5000000000ULL /* after a failed walk, wait this long */
/* A walked segment waits this long for the index to persist on its own
 * before GC asks for a flush (each flush makes a small SST file). */
#define GC_PERSIST_WAIT_NS 1000000000ULL

#define REPLAY_BATCH    65536   /* replayed records written to the index at a time */
#define REPLAY_BUCKETS  65536   /* power of two, for the keys replayed */
#define REPLAY_KEYS_MAX 1048576 /* keys remembered across batches at most */

/* A collection of at least this many elements, deleted, expired or
 * overwritten, asks the index to compact its element rows once the deletion
 * is persisted (st_hint_garbage), so their space comes back soon.  Smaller
 * ones add their elements to a tally; once it reaches GARBAGE_BATCH_ELEMS and
 * a quarter of the index's rows, the whole element range is hinted (so a
 * compaction rewrites at most about 4 rows per garbage row it drops). */
#define GARBAGE_HINT_ELEMS 1024
#define GARBAGE_BATCH_ELEMS 65536
#define DEAD_COMPACT_MIN 1024
#define GARBAGE_HINTS_MAX  256 /* hints waiting for persistence at most */

/* ---- state -------------------------------------------------------------- */

/* A key of a granted hold, and the requests of others that wait for its
 * release, oldest first. */
struct st_held {
	struct store_req *hold; /* the granted STORE_HOLD */
	struct kentry *ke;
	struct store_waiter *head, *tail;
};

/* A value shared by the cache and the replies that return it. */
struct blob {
	unsigned refs;
	uint32_t len;
	uint8_t data[];
};

/* Elements of a big collection drawn at a random place, for SPOP to take
 * from one by one instead of seeking the index for each (store_txn.c,
 * "Samples").  Every entry is a current element, as its row has it. */
struct st_sample {
	uint64_t version; /* of the collection: another version ignores it */
	uint32_t n;       /* entries left: their offsets are off[0..n) */
	uint32_t len;     /* bytes of data */
	uint32_t next;    /* the hash the next sample's walk starts from */
	uint32_t *off;    /* into data, per entry: be32 elen, be32 vlen, elem, value */
	uint8_t data[];
};

struct kentry {
	struct kentry *lru_prev, *lru_next; /* on the CLOCK list once known (cache_evict) */
	bool known;                         /* the fields below mirror the truth */
	bool exists;                        /* the row exists (a key maybe expired, not yet
	                                       reclaimed) */
	bool in_lru;
	bool loading;       /* its index entry is being read off the loop (st_kentry_lookup) */
	bool referenced;    /* used since eviction last passed it (CLOCK) */
	bool is_inline;     /* the current value lives in the index (always for a
	                       collection's metadata and for elements) */
	uint8_t type;       /* a key: FMT_TYPE_* */
	uint8_t enc;        /* a collection: FMT_ENC_* */
	uint64_t expiry_ms; /* 0 = none */
	uint32_t value_len;
	struct blob *value;             /* a string's or an element's; NULL while not loaded */
	struct blob *whole;             /* a small collection: a copy of all its elements
	                                   (store_txn.c, "Whole copies"), or NULL */
	struct st_sample *sample;       /* a big set being popped, or NULL */
	struct log_pos pos;             /* a string's current record, when !is_inline */
	uint64_t version;               /* a collection: its elements' idents carry it */
	uint64_t count;                 /* a collection: its elements */
	uint64_t idx_expiry_ms;         /* the expiry the index holds (its expiry rows) */
	bool idx_ptr;                   /* the index (with the applied batch) points into the log */
	uint32_t elems_hi;              /* a key: see elems_lo */
	struct log_pos idx_pos;         /* ... at this record: its bytes are counted live */
	unsigned pending;               /* writes appended but not yet applied to the index */
	unsigned pins;                  /* calls holding it (an element a call uses) */
	uint32_t stamp;                 /* scratch of the call or submit that runs now */
	uint32_t txn_row;               /* the running call's row of it, + 1 (store_txn.c) */
	uint32_t mark;                  /* scratch of an element walk (store_txn.c) */
	uint32_t dead;                  /* a collection: elements deleted since its range
	                                   was last compacted (st_coll_deletes) */
	struct pending_write *batch_pw; /* the key's entry in the index batch being gathered */
	struct store_waiter *head, *tail; /* requests on this key; head runs */
	/* Elements whose state differs from the index (writes pending, or
	 * changed by the running call) hang on their key, so a walk of the
	 * collection sees them: */
	struct kentry *elems;           /* a key: the first of them */
	unsigned n_elems;               /* ... how many (each pins the key) */
	uint32_t elems_lo;              /* ... their hashes lie on the arc from elems_lo up
	                                   to elems_hi, wrapping (a bound, kept until the
	                                   list empties) */
	struct kentry *parent;          /* an element on its key's list, or NULL */
	struct kentry *sib_prev, *sib_next; /* ... its neighbours there */
	struct kentry *work_next;       /* on the store's work list (store.c, queues_run) */
	struct st_held *held;           /* held by a granted STORE_HOLD: its entry for the
	                                   key (store.c, holds), or NULL */
	size_t charge;                  /* bytes counted against the cache */
	/* last, next to the key, so a lookup touches one or two cache lines */
	struct kentry *hnext; /* hash chain */
	uint64_t hash;
	uint32_t key_len;
	uint8_t key[];
};

/* A change to a database's counts (struct store_db_stats). */
struct count_delta {
	int64_t keys, expires, expiry_sum_s;
};

/* One appended record, until the log settles it. */
struct pending_write {
	struct log_write w;
	struct store *st;
	struct kentry *ke;
	struct store_req *req;  /* to complete when written; NULL once acknowledged */
	struct store_durable *durable; /* early acknowledged: counts it (store.h) */
	struct blob *value;     /* inline PUT: the value (entry.value points into it) */
	struct idx_entry entry; /* PUT: what the index will hold */
	bool is_delete;
	struct dbmap_change *dbmap;      /* a DBMAP record (ke is NULL): the change */
	uint32_t db;                     /* a key's stored database id */
	bool blind;                      /* a PUT that assumed its key absent from the index,
	                                    waiting in st->blind for st_resolve_blind */
	bool in_batch;                   /* written: the key's batch_pw, on st->applying */
	uint64_t txid;                   /* the transaction of its record (in the batch: of
	                                    the key's newest record), 0: none */
	bool commit;                     /* a COMMIT record (ke is NULL): of txid ... */
	bool finish;                     /* ... which finishes once it is written */
	uint64_t batched_ns;             /* when it joined st->applying */
	struct count_delta delta;        /* change made to the db's counts */
	struct pending_write *next_free; /* free list, or st->applying */
};

/* Live bytes of one log segment held by one database's keys (store.h,
 * garbage collection): a FLUSHDB zeroes its database's share at once. */
struct seg_usage {
	uint64_t id;     /* the segment */
	uint32_t db;     /* the stored database id */
	uint64_t live;   /* bytes of records the index points at */
	int64_t pending; /* change to `live` that the index batch will make: written
	                    records count as live at once for GC and INFO */
	bool dirty;      /* changed since the index last got it */
	bool forget;     /* the segment is deleted: remove its row */
};

/* A segment walked by garbage collection, waiting to be deleted. */
struct gc_waiting {
	uint64_t segment;
	uint64_t lsn;          /* every relocation out of it has an LSN <= this */
	uint64_t since_ns;     /* when the walk ended */
	uint64_t write_errors; /* the store's count when its walk began: if it changed,
	                          a relocation may have failed after it was acknowledged
	                          (durability none), so the segment is not deleted */
};

/* Garbage collection of one shard. */
struct gc {
	bool active;  /* a victim is being walked */
	bool reading; /* a read of it is in flight */
	bool failed;  /* a relocation or read failed: keep the victim */
	struct log_segment_info victim;
	struct log_raw_read read;
	uint8_t *buf; /* FMT_BLOCK-aligned, buf_cap bytes */
	uint64_t buf_cap;
	uint64_t buf_off, buf_len; /* segment bytes [buf_off, buf_off + buf_len) are in buf */
	uint64_t pos;              /* offset of the next record to look at */
	unsigned inflight;         /* relocations submitted, not done */
	uint64_t inflight_bytes;
	uint64_t retry_at_ns;  /* no new walk before this (after a failure) */
	uint64_t write_errors; /* stats.write_errors when the walk began */
	size_t segments_seen;  /* the log's segment count when GC last looked */
	struct gc_waiting waiting[GC_WAITING_MAX];
	unsigned n_waiting;
};

/* A relocation request with its copy of the record's key and value. */
struct gc_req {
	struct store_req req;
	uint64_t segment, offset, lsn; /* the record it moves */
	uint8_t data[];                /* key, then value */
};

struct replay; /* the batch being replayed (store_recover.c) */

/* A database of the shard: its stored id and counts. */
struct db_slot {
	uint32_t id;                    /* stored id (format.h, DBMAP) */
	struct store_db_stats live;     /* with every pending write */
	struct store_db_stats applied;  /* what the index's count row holds (with the
	                                   applied batch) */
	bool dirty;                     /* `applied` changed since the index got it */
};

/* A DBMAP record's change, until it reaches the index. */
struct dbmap_change {
	uint32_t n, next_id;
	uint32_t *ids;      /* the new map */
	uint32_t *retired;  /* ids it retires */
	uint32_t n_retired;
};

/* A compaction hint waiting for the deletion it follows to be persisted. */
struct garbage_hint {
	uint64_t lsn;       /* the deletion's record */
	uint8_t *prefix;    /* malloc'd: an element ident prefix, or NULL for ... */
	size_t len;
	uint32_t db;        /* ... a retired database id */
};

/* One shard's store.  Every field belongs to the shard's proactor. */
struct store {
	struct px *px;
	struct store_config cfg;
	char dir[4096];
	struct idx *idx;
	struct log *log;
	struct idx_batch *batch; /* the rows of the slice being written (st_apply_keys) */
	uint64_t batch_lsn;      /* highest LSN in the batch */
	bool batch_dirty;
	size_t batch_records;        /* keys in the batch (st->applying) */
	size_t apply_keys;           /* ... that make it drain */
	size_t batch_joined;         /* keys that joined it this loop iteration */
	size_t apply_slice;          /* the slice the last iteration's load called for */
	struct px_timer apply_timer; /* drains the batch when no hook runs (apply_tick) */
	struct px_hook hook;
	struct px_timer expire_timer;
	unsigned expiring;      /* active-expiry deletes in flight */
	bool expire_resume;     /* the next pass goes on after expire_at, not from the start */
	uint64_t expire_at_ms;  /* the expiry row the last pass visited last ... */
	uint32_t expire_at_db;  /* ... (its stored database id) ... */
	uint8_t *expire_at_key; /* ... (its key, malloc()ed) */
	size_t expire_at_klen, expire_at_cap;
	uint64_t expire_started_ns; /* when a walk last started from the first row */
	int lock_fd;                /* DIR/shard-NNN/LOCK, flock()ed while open */

	struct kentry **buckets; /* key table */
	size_t n_buckets, n_keys_cached;
	struct kentry *lru_head, *lru_tail; /* least recently used first */
	size_t cache_used;                  /* bytes charged by cached values */

	struct pending_write *free_writes;
	uint64_t pw_live; /* pending writes handed out by st_pw_get, not yet back */
	struct pending_write *applying; /* the keys of the batch, oldest first record first */
	struct pending_write *applying_tail;
	struct pending_write **blind; /* blind PUTs whose key's index state is unread */
	struct idx_probe *probes;     /* st_resolve_blind's lookups, cap_blind of them */
	size_t n_blind, cap_blind;
	struct db_slot *dbs;     /* [n_dbs] by database number */
	unsigned n_dbs;          /* databases the map holds: cfg.databases are served,
	                            the rest kept for a later, larger count */
	uint32_t next_id;        /* stored ids below it are used (DBMAP) */
	uint32_t *id_slots;      /* stored id -> database number + 1 (0 = empty), open
	                            addressing, cap_id_slots entries */
	uint32_t cap_id_slots;
	bool dbmap_dirty;        /* the index has not got the map yet (a new index) */
	uint8_t *ident;          /* scratch: an ident being built (FMT_IDENT_MAX bytes) */
	uint8_t *ident2;         /* ... a second one (an element walk's prefix) */
	uint32_t stamp;          /* the last kentry stamp handed out */
	struct kentry *work;     /* queues whose head settled (store.c, queues_run) */
	const struct store_watch *watch; /* WATCH's hooks, or NULL (store.h) */
	struct garbage_hint hints[GARBAGE_HINTS_MAX];
	unsigned n_hints;
	uint64_t garbage_elems; /* left by small collections since the last hint */
	unsigned inflight_reqs; /* submitted, done not yet run */
	bool stopped;
	int failed;              /* the index could not be written: writes refused */
	struct seg_usage *usage; /* live bytes per segment, sorted by id */
	size_t n_usage, cap_usage;
	bool usage_dirty; /* some entry is dirty */
	struct gc gc;
	struct px_timer gc_timer;
	struct store_stats stats;
	struct replay *replay;   /* during recovery only: the batch being replayed */
	const struct store_txids *committed; /* ... and the transactions it keeps */
	uint64_t *txns;                      /* open transactions (store.h): their ids, a hash set
	                                        (linear probing, 0 = empty slot, cap_txns a power
	                                        of 2, at most half full) */
	size_t n_txns, cap_txns;
	uint64_t checkpoint_lsn; /* next LSN of the log at the last index flush asked for */
	uint64_t submitted;      /* requests submitted, ever */
	uint64_t idle_mark;      /* ... as the apply timer last saw them */
	/* Index lookups off the loop (store_cache.c): gathered during an
	 * iteration, submitted by the hook, answered by a message. */
	bool lookups_async; /* the lookup threads run: never read blocking */
	struct {            /* whether trying the block cache first pays (store_cache.c) */
		unsigned tries, hits; /* in the current window */
		unsigned skip;        /* lookups since the last sampled probe */
		bool rare;            /* the last window mostly missed: sample only */
	} probe;
	struct idx_lookup_owner lookup_owner;
	struct idx_lookup *lookup_out, *lookup_out_last; /* not submitted yet */
	size_t n_lookup_out;
	unsigned lookups_inflight;   /* submitted or gathered, not answered */
	uint64_t lookup_blocks_read; /* index blocks they read from files */
};

/* ---- small helpers, inline in every file -------------------------------- */

/* The key table's hash of an ident (FNV-1a, folded), also computed in
 * pieces: st_hash_finish(st_hash_update(st_hash_update(ST_HASH_SEED, a), b))
 * is the hash of a followed by b. */
#define ST_HASH_SEED 0xcbf29ce484222325ULL
static inline uint64_t st_hash_update(uint64_t h, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}
static inline uint64_t st_hash_finish(uint64_t h)
{
	return h ^ (h >> 29);
}
static inline uint64_t st_hash_key(const uint8_t *key, size_t len)
{
	return st_hash_finish(st_hash_update(ST_HASH_SEED, key, len));
}

/* Small blobs (header and data up to BLOB_SMALL bytes: counters, short
 * strings) are recycled through a list per thread, at most BLOB_CACHE_MAX
 * of them: a pipeline of writes makes and drops one per write, in bursts
 * that glibc's thread cache (7 a size) does not hold (DECISIONS.md, "Small
 * blobs").  Every blob of BLOB_SMALL bytes or less is allocated with
 * BLOB_SMALL (st_blob_alloc), so any of them can join the list; a thread's
 * list is freed when the thread ends. */
#define BLOB_SMALL     64
#define BLOB_CACHE_MAX 16384 /* 1 MiB a thread */
struct blob_cache {
	struct freelist list; /* blocks of BLOB_SMALL bytes */
	bool registered;      /* the thread-exit destructor knows this thread */
};
extern _Thread_local struct blob_cache st_blob_cache;
void st_blob_cache_register(void); /* store_cache.c: frees the list at thread exit */

/* Memory for a blob of len data bytes (refs and len unset), or NULL. */
static inline struct blob *st_blob_alloc(size_t len)
{
	size_t size = sizeof(struct blob) + len;
	if (size > BLOB_SMALL)
		return malloc(size);
	struct blob *b = freelist_pop(&st_blob_cache.list, BLOB_SMALL);
	return b != NULL ? b : malloc(BLOB_SMALL);
}

/* A new blob holding a copy of data (one reference), or NULL when out of
 * memory. */
static inline struct blob *st_blob_new(const void *data, size_t len)
{
	struct blob *b = st_blob_alloc(len);
	if (b == NULL)
		return NULL;
	b->refs = 1;
	b->len = (uint32_t)len;
	if (len)
		memcpy(b->data, data, len);
	return b;
}

/* Takes a reference to b (NULL passes through). */
static inline struct blob *st_blob_ref(struct blob *b)
{
	if (b)
		b->refs++;
	return b;
}

/* Drops a reference to b (NULL is ignored); the last one frees it (a small
 * one onto the thread's list). */
static inline void st_blob_unref(struct blob *b)
{
	if (b == NULL || --b->refs != 0)
		return;
	if (sizeof(*b) + b->len > BLOB_SMALL || st_blob_cache.list.n >= BLOB_CACHE_MAX) {
		free(b);
		return;
	}
	if (!st_blob_cache.registered)
		st_blob_cache_register();
	freelist_push(&st_blob_cache.list, b, BLOB_SMALL);
}

/* True if the known key exists and has not expired. */
static inline bool st_key_live(const struct kentry *ke)
{
	return ke->exists && (ke->expiry_ms == 0 || ke->expiry_ms > clock_unix_ms());
}

/* True for an element's kentry (its ident is an element ident). */
static inline bool st_is_elem(const struct kentry *ke)
{
	return ke->key[0] == FMT_IDENT_ELEM;
}

/* The stored database id an ident names. */
static inline uint32_t st_ident_db(const uint8_t *ident)
{
	return fmt_get_be32(ident + 1);
}

/* True for a key of a collection type (its metadata has no log value). */
static inline bool st_is_coll(const struct kentry *ke)
{
	return ke->type != FMT_TYPE_STRING;
}

/* The change a key row makes to its database's counts going from (old_exists,
 * old_expiry) to (new_exists, new_expiry). */
static inline struct count_delta st_count_delta(bool old_exists, uint64_t old_expiry,
                                                bool new_exists, uint64_t new_expiry)
{
	bool oe = old_exists && old_expiry, ne = new_exists && new_expiry;
	return (struct count_delta){
	    .keys = (int64_t)new_exists - (int64_t)old_exists,
	    .expires = (int64_t)ne - (int64_t)oe,
	    .expiry_sum_s = (ne ? (int64_t)(new_expiry / 1000) : 0) -
	                    (oe ? (int64_t)(old_expiry / 1000) : 0)};
}

static inline size_t st_sample_size(const struct st_sample *s)
{
	return s != NULL ? sizeof(*s) + s->len : 0;
}

/* Recomputes what `ke` costs the cache (its batch entry included: keys
 * waiting for the index take the place of cached values). */
static inline void st_kentry_charge(struct store *st, struct kentry *ke)
{
	size_t c = sizeof(*ke) + ke->key_len + (ke->value ? ke->value->len : 0) +
	           (ke->whole ? ke->whole->len : 0) + st_sample_size(ke->sample) +
	           (ke->batch_pw ? sizeof(struct pending_write) : 0);
	st->cache_used = st->cache_used - ke->charge + c;
	ke->charge = c;
}

/* Marks `ke` known and absent from the index (as read, or as a blind PUT
 * assumes it). */
static inline void st_kentry_set_absent(struct kentry *ke)
{
	ke->exists = false;
	ke->type = FMT_TYPE_STRING;
	ke->count = 0;
	ke->idx_expiry_ms = 0;
	ke->idx_ptr = false;
	ke->known = true;
}

/* Live bytes of a segment counting the written records the index batch has
 * not applied yet. */
static inline uint64_t st_seg_live(const struct seg_usage *u)
{
	return u->pending < 0 && u->live < (uint64_t)-u->pending ? 0
	                                                         : u->live + (uint64_t)u->pending;
}

/* The record of `pw` (NULL for a delete or an inline value), as a position. */
static inline bool st_entry_pos(const struct pending_write *pw, struct log_pos *pos)
{
	if (pw->is_delete || pw->entry.is_inline)
		return false;
	*pos = (struct log_pos){.segment = pw->entry.segment,
	                        .offset = pw->entry.offset,
	                        .length = pw->entry.length,
	                        .lsn = pw->entry.lsn};
	return true;
}

/* ---- store.c: completing requests --------------------------------------- */

/* px_send callback: runs req->done, then drops the reference that kept
 * req->result alive.  Only st_req_complete schedules it. */
void st_run_done(void *arg);

/* Makes `b` the value the request returns, kept alive until done has run. */
static inline void st_req_set_result(struct store_req *req, struct blob *b)
{
	st_blob_unref(req->result_ref);
	req->result_ref = st_blob_ref(b);
	req->result = b->data;
	req->result_len = b->len;
}

/* Schedules req->done for the next iteration, returning `result` if not NULL
 * (else whatever st_req_set_result set earlier).  req is the store's until
 * done runs. */
static inline void st_req_complete(struct store *st, struct store_req *req, int status,
                                   struct blob *result)
{
	req->status = status;
	if (result != NULL)
		st_req_set_result(req, result);
	px_send(st->px, st->px->id, st_run_done, req);
}

/* ---- store_cache.c: the key table and the cache ------------------------- */

/* Doubles the key table (1024 buckets the first time).  Returns 0 or
 * -ENOMEM (the table is unchanged). */
int st_table_grow(struct store *st);

/* The kentry of a key, or NULL; the CLOCK order is left alone. */
struct kentry *st_kentry_find(struct store *st, const uint8_t *key, size_t len);

/* Finds or creates (unknown, charged) the kentry of a key and marks it used.
 * NULL only when out of memory. */
struct kentry *st_kentry_get(struct store *st, const uint8_t *key, size_t len);

/* Fills `ke` from the index (a key of a retired database id reads as
 * absent).  Returns 0, -ENOMEM or -EIO. */
int st_kentry_load(struct store *st, struct kentry *ke);

/* Makes ke known for req without waiting on the loop: 0 when it is known now
 * (from memory, or read blocking when the lookup threads are off), 1 when
 * its entry is being read by the lookup threads (req->lookups_missing counts
 * it; st_req_looked_up runs when the last is back), or -ENOMEM / -EIO. */
int st_kentry_lookup(struct store *st, struct kentry *ke, struct store_req *req);
void st_lookups_init(struct store *st);   /* at open, once the index is open */
void st_lookups_submit(struct store *st); /* the iteration's lookups, to the threads */
void st_req_looked_up(struct store *st, struct store_req *req); /* store.c */

/* Called when `ke` may have become idle (no request queued, no pending
 * write): it joins the CLOCK list if it is not on it yet or, if it knows
 * nothing useful, is freed; then the cache evicts down to its budget.  No
 * idle kentry may be used after the call: any of them may have been evicted
 * (st_kentry_release2 releases two at once for that reason). */
void st_kentry_release(struct store *st, struct kentry *ke);
void st_kentry_release2(struct store *st, struct kentry *a, struct kentry *b);

/* Frees an idle `ke` at once (what it knows is held elsewhere: an element
 * its collection's whole copy has). */
void st_kentry_drop(struct store *st, struct kentry *ke);

/* store_prefetch's work, given the key table hashes of the idents. */
void st_prefetch_hashes(struct store *st, const uint64_t *hash, size_t n);

/* Marks every cached key unknown: they are read from the index again. */
void st_forget_all_keys(struct store *st);

/* ---- store_write.c: writes ---------------------------------------------- */

/* A pending write from the free list (or calloc), cleared, for one record;
 * NULL when out of memory.  st_pw_put_back returns one that was not used. */
struct pending_write *st_pw_get(struct store *st);
void st_pw_put_back(struct store *st, struct pending_write *pw);

/* Appends `rec` on behalf of `req`.  Returns the pending write (st, w set),
 * or NULL after completing req with the error (nothing appended). */
struct pending_write *st_append(struct store *st, struct store_req *req,
                                const struct fmt_record *rec);

/* Replies to req now under `none` durability, else once pw is written. */
void st_pw_ack(struct store *st, struct pending_write *pw, struct store_req *req);

/* The index entry of collection key `ke` as a record at `lsn` sets it. */
void st_meta_entry(struct idx_entry *e, const struct kentry *ke, uint64_t lsn);

/* Sets the expiry of req's key, a collection, by rewriting its metadata
 * record.  Returns as st_write_record. */
struct pending_write *st_write_expiry(struct store *st, struct store_req *req,
                                      uint64_t expiry_ms);

/* Returns a settled pending write to the free list and unpins its key (which
 * may free the kentry: st_kentry_release). */
void st_pending_write_free(struct store *st, struct pending_write *pw);

/* Appends a PUT of `value` (NULL: a DELETE) of req's key and updates the
 * key's state.  Returns the pending write, or NULL if nothing was appended
 * (req is completed with the error).  The reply goes out now under `none`
 * durability, else once the record is written. */
struct pending_write *st_write_record(struct store *st, struct store_req *req, struct blob *value,
                                      uint64_t expiry_ms);

/* Writes `len` bytes at `data` as req's key's new value (rewriting the cached
 * blob in place when nothing else holds it).  Returns as st_write_record. */
struct pending_write *st_write_value(struct store *st, struct store_req *req, const void *data,
                                     size_t len, uint64_t expiry_ms);

/* ---- store_apply.c: the index batch, blind puts, live bytes ------------- */

/* The usage entry of segment `id`, created (zero) if missing; NULL only when
 * out of memory (the count is then lost, which only makes GC visit the
 * segment early). */
struct seg_usage *st_usage_get(struct store *st, uint64_t id, uint32_t db);

/* Adds `delta` to the live bytes the index holds for `segment` and stored
 * database `db` (never below zero; nothing for a retired db) and marks its
 * row for the next index write. */
void st_usage_add(struct store *st, uint64_t segment, uint32_t db, int64_t delta);

/* Adds the dirty usage entries to batch b (rows of deleted segments are
 * removed, and their entries dropped). */
void st_usage_flush(struct store *st, struct idx_batch *b);

/* st_seg_live of `segment`, all databases (0 for a segment without an
 * entry). */
uint64_t st_usage_live(const struct store *st, uint64_t segment);

/* Records that the batch will move `delta` live bytes into (or out of) a
 * segment. */
int st_db_of_id(const struct store *st, uint32_t id);
static inline void st_usage_pending(struct store *st, uint64_t segment, uint32_t db,
                                    int64_t delta)
{
	if (st_db_of_id(st, db) < 0)
		return; /* a retired database: its bytes are dead */
	struct seg_usage *u = st_usage_get(st, segment, db);
	if (u != NULL)
		u->pending += delta;
}

/* Zeroes the live bytes of every segment held by stored id `db` (retired)
 * and marks their rows for removal. */
void st_usage_retire(struct store *st, uint32_t db);

/* idx_segments_live callback at open: sets a segment's live bytes. */
void st_usage_load(void *arg, uint64_t segment, uint32_t db, uint64_t live);

/* At open: drops the usage rows of segments the log no longer has (deleted
 * by GC before a crash let the row survive).  Returns 0 or -EIO (logged). */
int st_usage_prune(struct store *st);

/* True if req may run blind (a plain PUT); makes room for it in st->blind
 * (false when out of memory: it then reads the index). */
bool st_blind_put(struct store *st, const struct store_req *req);

/* Files the blind PUT's pending write (NULL: nothing was appended, so the
 * assumption is withdrawn and the key is read from the index on next use).
 * May resolve every blind PUT at once (st_resolve_blind). */
void st_blind_register(struct store *st, struct kentry *ke, struct pending_write *pw);

/* Looks up the keys of every blind PUT and settles what they assumed (the
 * key count, live bytes, expiry rows).  A failed read refuses writes from
 * then on (st->failed). */
void st_resolve_blind(struct store *st);

/* Writes the oldest `max` keys of the batch to the index and unpins them
 * (blind PUTs are resolved first).  A failed write refuses writes from then
 * on (st->failed). */
void st_apply_keys(struct store *st, size_t max);

/* Writes the whole batch to the index. */
void st_apply_batch(struct store *st);

/* True when the batch should drain now (see the top of this file). */
bool st_apply_due(const struct store *st);

/* Marks the batch as holding something: it goes out within APPLY_DELAY_NS,
 * or once the store is idle. */
void st_batch_touch(struct store *st);

/* ---- store.c: queues -------------------------------------------------- */

/* WATCH: key `ke` has changed (store.h, store_set_watch). */
void st_touch_key(struct store *st, const struct kentry *ke);
static inline void st_touch(struct store *st, const struct kentry *ke)
{
	if (st->watch != NULL)
		st_touch_key(st, ke);
}

/* Submits req (its key named by an ident of the store's own: relocations,
 * expiry deletes).  As store_submit otherwise. */
void st_submit_ident(struct store *st, struct store_req *req, const uint8_t *ident, size_t len);

/* ---- store_db.c: databases ---------------------------------------------- */

/* The database number whose stored id is `id` (in st_db_of_id, declared
 * above), or -1: a retired or unknown id. */

/* The stored id of database number `db` (db < cfg.databases). */
static inline uint32_t st_db_id(const struct store *st, unsigned db)
{
	return st->dbs[db].id;
}

/* Applies d to stored id db's counts: `live` (pending writes included) or
 * `applied` (what the index holds; marks its row dirty).  Nothing for a
 * retired id. */
void st_count_live(struct store *st, uint32_t db, const struct count_delta *d);
void st_count_applied(struct store *st, uint32_t db, const struct count_delta *d);

/* Adds the dirty count rows, and the map when it is dirty, to batch b. */
void st_counts_flush(struct store *st, struct idx_batch *b);

/* At open, before the replay: loads the map and the counts from the index
 * (a new index gets databases 0..n-1 as ids 0..n-1, a map with fewer
 * databases than configured gets new ids for the rest).  Returns 0 or -EIO
 * with a message. */
int st_db_open(struct store *st, char *err, size_t errlen);

/* Sets the map to change->ids (the counts of retired ids dropped, their live
 * bytes zeroed, swapped databases' counts following their ids).  Used when a
 * DBMAP is appended and when one is replayed. */
void st_dbmap_set(struct store *st, const struct dbmap_change *change);

/* Recovery met a DBMAP record at `lsn`: sets the map and writes it (with
 * what it retires) to the index.  Returns 0 or -EIO. */
int st_dbmap_replay(struct store *st, const struct dbmap_change *c, uint64_t lsn);

/* A DBMAP record was written: everything before it goes to the index, then
 * the map itself with the retired ids' rows removed, and the retired ids'
 * rows are hinted for compaction once persisted. */
void st_dbmap_written(struct store *st, struct pending_write *pw);

/* Parses a DBMAP record's value into a change against the current map
 * (malloc'd; NULL when out of memory or malformed). */
struct dbmap_change *st_dbmap_parse(struct store *st, const uint8_t *value, size_t len);
void st_dbmap_free(struct dbmap_change *c);

/* Queues a compaction hint for the garbage a deletion at `lsn` left: the
 * element rows of a collection (prefix: fmt_elem_prefix_len bytes), or a
 * whole retired database (prefix NULL, db).  Given to the index once the
 * index has persisted the deletion (st_hints_run, from the GC tick). */
void st_hint_garbage(struct store *st, uint64_t lsn, const uint8_t *prefix, size_t len,
                     uint32_t db);
void st_hints_run(struct store *st);

/* A collection (`key`: its key ident; `version`, `count` as they were) was
 * deleted, expired or overwritten at `lsn`: its elements are garbage, hinted
 * per GARBAGE_HINT_ELEMS / GARBAGE_BATCH_ELEMS. */
void st_coll_garbage(struct store *st, uint64_t lsn, const uint8_t *key, size_t key_len,
                     uint64_t version, uint64_t count);

/* `n` elements of collection `ke` were deleted at `lsn` (HDEL, SREM, SPOP,
 * ...).  The index keeps a tombstone and the deleted row until a compaction,
 * and every walk from a random place (SPOP, SRANDMEMBER) steps over them;
 * once DEAD_COMPACT_MIN of them are as many as the live elements, the
 * collection's range is hinted for compaction (amortized O(1) per delete). */
void st_coll_deletes(struct store *st, struct kentry *ke, uint64_t lsn, uint32_t n);

/* ---- store_txn.c: calls ------------------------------------------------- */

/* Runs a STORE_CALL that heads every queue of its keys.  Returns true if it
 * settled (its writes appended, or req completed), false if the call paused
 * (store_txn_pause: it keeps its queues until store_call_resume). */
bool st_call_run(struct store *st, struct store_req *req);
/* Releases the element entries st_call_run pinned for req's call. */
void st_prefetch_unpin(struct store *st, struct store_req *req);

/* Puts element kentry e on its key's list of elements that differ from the
 * index (pinning the key), or takes it off (it is released). */
void st_elem_link(struct store *st, struct kentry *parent, struct kentry *e);
void st_elem_unlink(struct store *st, struct kentry *e);

/* ---- store_expire.c, store_gc.c, store_recover.c ------------------------ */

/* The expiry timer's callback: one pass of active expiry. */
void st_expire_tick(struct px *px, struct px_timer *t);

/* Walks the GC victim as far as the in-flight limits allow.  Returns true if
 * it made progress (the loop has work). */
bool st_gc_step(struct store *st);

/* Deletes the walked segments that may be deleted, then starts the next walk
 * if there is one (a px_send callback too: arg is the store). */
void st_gc_next(void *arg);

/* The GC timer's callback: st_gc_next. */
void st_gc_tick(struct px *px, struct px_timer *t);

/* Opens the log of lc->dir into st->log, replaying every record from the
 * index's applied_lsn + 1 into the index (st->keys and the live bytes
 * follow), but those of transactions not in st->committed.  Blocking.
 * Returns 0, or -errno with a message in err. */
int st_replay_log(struct store *st, const struct log_config *lc, char *err, size_t errlen);

/* ---- store_commit.c: transactions ---------------------------------------- */

/* Where txid's probe starts in st->txns. */
static inline size_t st_txn_slot(const struct store *st, uint64_t txid)
{
	return (size_t)((txid * 0x9E3779B97F4A7C15ull) >> 32) & (st->cap_txns - 1);
}

/* Transaction txid is open on this shard (it wrote here, not finished). */
static inline bool st_txn_open(const struct store *st, uint64_t txid)
{
	if (st->n_txns == 0)
		return false;
	for (size_t i = st_txn_slot(st, txid); st->txns[i] != 0; i = (i + 1) & (st->cap_txns - 1))
		if (st->txns[i] == txid)
			return true;
	return false;
}

/* Tags pw as a record of req's transaction (if any) and notes the
 * transaction open.  Returns 0, or -ENOMEM (nothing noted: the caller fails
 * the write before appending). */
int st_txn_note(struct store *st, const struct store_req *req);

/* The transaction is finished: the index may take its rows. */
void st_txn_finish(struct store *st, uint64_t txid);

/* Finishes every open transaction (a failed log write: store_write.c). */
void st_txn_finish_all(struct store *st);

/* store_txn_end, once the store has taken req (submit_begin). */
void st_txn_end(struct store *st, struct store_req *req);

#endif
