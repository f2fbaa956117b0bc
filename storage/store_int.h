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
 *   store_write.c    appends, pending writes, write_done, FLUSHALL
 *   store_apply.c    the index batch, blind puts, live bytes per segment
 *   store_scan.c     SCAN
 *   store_expire.c   active expiry
 *   store_gc.c       garbage collection
 *   store_recover.c  replay of the log at open
 * A function one file calls in another is named st_* and declared below with
 * its contract; everything else is static to its file.
 *
 * State per key lives in a `struct kentry` of the key table while the key is
 * cached, has writes not yet applied to the index, or has requests waiting.
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
 * APPLY_SLICE keys, by the load) once it holds st->apply_keys keys (the
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

/* ---- state -------------------------------------------------------------- */

/* A value shared by the cache and the replies that return it. */
struct blob {
	unsigned refs;
	uint32_t len;
	uint8_t data[];
};

struct kentry {
	struct kentry *lru_prev, *lru_next; /* on the CLOCK list once known (cache_evict) */
	bool known;                         /* the fields below mirror the truth */
	bool exists;                        /* the key exists (maybe expired, not yet reclaimed) */
	bool in_lru;
	bool referenced;    /* used since eviction last passed it (CLOCK) */
	bool is_inline;     /* the current value lives in the index */
	uint64_t expiry_ms; /* 0 = none */
	uint32_t value_len;
	struct blob *value;             /* NULL while not loaded */
	struct log_pos pos;             /* the current record, when !is_inline */
	uint64_t idx_expiry_ms;         /* the expiry the index holds (its expiry rows) */
	bool idx_ptr;                   /* the index (with the applied batch) points into the log */
	struct log_pos idx_pos;         /* ... at this record: its bytes are counted live */
	unsigned pending;               /* writes appended but not yet applied to the index */
	struct pending_write *batch_pw; /* the key's entry in the index batch being gathered */
	struct store_req *head, *tail;  /* requests on this key; head runs */
	size_t charge;                  /* bytes counted against the cache */
	/* last, next to the key, so a lookup touches one or two cache lines */
	struct kentry *hnext; /* hash chain */
	uint64_t hash;
	uint32_t key_len;
	uint8_t key[];
};

/* One appended record, until the log settles it. */
struct pending_write {
	struct log_write w;
	struct store *st;
	struct kentry *ke;
	struct store_req *req;  /* to complete when written; NULL once acknowledged */
	struct blob *value;     /* inline PUT: the value (entry.value points into it) */
	struct idx_entry entry; /* PUT: what the index will hold */
	bool is_delete;
	bool is_drop;                    /* FLUSHALL of the shard (ke is NULL) */
	bool blind;                      /* a PUT that assumed its key absent from the index,
	                                    waiting in st->blind for st_resolve_blind */
	bool in_batch;                   /* written: the key's batch_pw, on st->applying */
	uint64_t batched_ns;             /* when it joined st->applying */
	int64_t count_delta;             /* change made to the key count */
	struct pending_write *next_free; /* free list, or st->applying */
};

/* Live bytes of one log segment (see store.h, garbage collection). */
struct seg_usage {
	uint64_t id;
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
	uint8_t *expire_at_key; /* ... (its key, malloc()ed) */
	size_t expire_at_klen, expire_at_cap;
	uint64_t expire_started_ns; /* when a walk last started from the first row */
	int lock_fd;                /* DIR/shard-NNN/LOCK, flock()ed while open */

	struct kentry **buckets; /* key table */
	size_t n_buckets, n_keys_cached;
	struct kentry *lru_head, *lru_tail; /* least recently used first */
	size_t cache_used;                  /* bytes charged by cached values */

	struct pending_write *free_writes;
	struct pending_write *applying; /* the keys of the batch, oldest first record first */
	struct pending_write *applying_tail;
	struct pending_write **blind; /* blind PUTs whose key's index state is unread */
	struct idx_probe *probes;     /* st_resolve_blind's lookups, cap_blind of them */
	size_t n_blind, cap_blind;
	uint64_t keys;          /* exact key count, pending writes included (DBSIZE) */
	uint64_t applied_keys;  /* key count of what the index holds (persisted with it) */
	uint64_t drop_lsn;      /* LSN of the newest DROP: older entries are gone */
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
	uint64_t checkpoint_lsn; /* next LSN of the log at the last index flush asked for */
	uint64_t submitted;      /* requests submitted, ever */
	uint64_t idle_mark;      /* ... as the apply timer last saw them */
};

/* ---- small helpers, inline in every file -------------------------------- */

/* The key table's hash of a key (FNV-1a, folded). */
static inline uint64_t st_hash_key(const uint8_t *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ key[i]) * 0x100000001b3ULL;
	return h ^ (h >> 29);
}

/* A new blob holding a copy of data (one reference), or NULL when out of
 * memory. */
static inline struct blob *st_blob_new(const void *data, size_t len)
{
	struct blob *b = malloc(sizeof(*b) + len);
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

/* Drops a reference to b (NULL is ignored); the last one frees it. */
static inline void st_blob_unref(struct blob *b)
{
	if (b && --b->refs == 0)
		free(b);
}

/* True if the known key exists and has not expired. */
static inline bool st_key_live(const struct kentry *ke)
{
	return ke->exists && (ke->expiry_ms == 0 || ke->expiry_ms > clock_unix_ms());
}

/* Recomputes what `ke` costs the cache (its batch entry included: keys
 * waiting for the index take the place of cached values). */
static inline void st_kentry_charge(struct store *st, struct kentry *ke)
{
	size_t c = sizeof(*ke) + ke->key_len + (ke->value ? ke->value->len : 0) +
	           (ke->batch_pw ? sizeof(struct pending_write) : 0);
	st->cache_used = st->cache_used - ke->charge + c;
	ke->charge = c;
}

/* Marks `ke` known and absent from the index (as read, or as a blind PUT
 * assumes it). */
static inline void st_kentry_set_absent(struct kentry *ke)
{
	ke->exists = false;
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

/* Fills `ke` from the index (an entry older than the newest DROP reads as
 * absent).  Returns 0, -ENOMEM or -EIO. */
int st_kentry_load(struct store *st, struct kentry *ke);

/* Called when `ke` may have become idle (no request queued, no pending
 * write): it joins the CLOCK list if it is not on it yet or, if it knows
 * nothing useful, is freed — `ke` must not be used after the call then. */
void st_kentry_release(struct store *st, struct kentry *ke);

/* Marks every cached key unknown: they are read from the index again. */
void st_forget_all_keys(struct store *st);

/* ---- store_write.c: writes ---------------------------------------------- */

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
struct seg_usage *st_usage_get(struct store *st, uint64_t id);

/* Adds `delta` to the live bytes the index holds for `segment` (never below
 * zero) and marks its row for the next index write. */
void st_usage_add(struct store *st, uint64_t segment, int64_t delta);

/* Adds the dirty usage entries to batch b (rows of deleted segments are
 * removed, and their entries dropped). */
void st_usage_flush(struct store *st, struct idx_batch *b);

/* st_seg_live of `segment` (0 for a segment without an entry). */
uint64_t st_usage_live(const struct store *st, uint64_t segment);

/* Records that the batch will move `delta` live bytes into (or out of) a
 * segment. */
static inline void st_usage_pending(struct store *st, uint64_t segment, int64_t delta)
{
	struct seg_usage *u = st_usage_get(st, segment);
	if (u != NULL)
		u->pending += delta;
}

/* idx_segments_live callback at open: sets a segment's live bytes. */
void st_usage_load(void *arg, uint64_t segment, uint64_t live);

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
 * follow).  Blocking.  Returns 0, or -errno with a message in err. */
int st_replay_log(struct store *st, const struct log_config *lc, char *err, size_t errlen);

#endif
