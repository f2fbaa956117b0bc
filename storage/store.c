/* store: see store.h for the contract.
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
 * read for it meanwhile.  The batch drains a slice per loop iteration
 * (APPLY_SLICE_MIN..APPLY_SLICE keys, by the load) once it holds
 * st->apply_keys keys, its oldest has waited APPLY_DELAY_NS or
 * APPLY_LAG_RECORDS records, GC waits for it, or the store stops; each
 * slice is one RocksDB write with applied_lsn just below the oldest record
 * still waiting (apply_keys explains why replay after a crash is still
 * exact).  Live bytes per segment move when a row is written; what the
 * batch will move is kept beside them (seg_usage.pending) so GC and INFO see
 * every written record.
 * If a log write fails the batch is written first, then the kentry is marked
 * unknown (the index never saw the write, so the next request re-reads it)
 * and the count is restored.
 *
 * When the index entry is not in RocksDB's block cache the lookup is retried
 * as a blocking read on the loop (counted in index_blocking_reads): the index
 * is small next to the values, so misses are rare once it is warm.
 */
#include "store.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "service/runtime/clock.h"
#include "service/runtime/logging.h"
#include "storage/fsutil.h"
#include "storage/layout.h"

#define STORE_READ_RETRIES 3         /* re-reads of the index when GC moved a value */
#define APPLY_KEY_BYTES 512          /* memory of a key waiting for the index (kentry and
					 pending write): the shard's cache budget in them ... */
#define APPLY_KEYS_MAX 131072         /* ... but at most this many make the index drain ... */
#define APPLY_DELAY_NS 4000000000ULL  /* ... or the age of the oldest: it is written behind */
#define APPLY_LAG_RECORDS 1000000ULL  /* ... or the log records written since the oldest
					 (what a crash would leave to replay) */
#define APPLY_SLICE 4096              /* keys written to the index per iteration draining
					 at most, and blind PUTs resolved at a time */
#define APPLY_SLICE_MIN 256           /* ... at least; in between, 4x the keys that joined
					 the batch in the iteration (a slice stalls the
					 loop: a light load gets short ones) */
#define APPLY_TICK_NS 1000000ULL      /* an idle store drains a slice this often */
#define APPLY_IDLE_NS 20000000ULL     /* a store that took no request for this long drains
					 its batch without waiting for it to be due ... */
#define APPLY_IDLE_SLICE 1024         /* ... this many keys a tick */
#define CHECKPOINT_RECORDS 1000000ULL /* log records between index flushes at most: what a
					 crash leaves to replay (about 1-3 s; RocksDB flushes
					 on its own only when a memtable fills, which a hot
					 keyspace's merged rows may take minutes to do) */
#define EXPIRE_PERIOD_NS 100000000ULL /* active expiry runs this often ... */
#define EXPIRE_BATCH 128              /* ... taking at most this many keys a pass */
#define EXPIRE_INFLIGHT_MAX 1024      /* expiry deletes in flight at most */
#define EXPIRE_RESTART_NS 5000000000ULL /* a walk that reached the end starts over from the
					 first expiry row at most this often (else it goes
					 on from where it stopped) */
#define CACHE_EVICT_SKIPS 64          /* entries eviction passes over per call at most */
#define GC_PERIOD_NS 100000000ULL     /* garbage collection looks for work this often */
#define GC_CHUNK (1u << 20)           /* bytes of a segment read at a time */
#define GC_SUBMIT_PER_STEP 64         /* relocations started per loop iteration at most */
#define GC_EXAMINE_PER_STEP 1024      /* records looked at per loop iteration at most */
#define GC_INFLIGHT_MAX 256           /* relocations in flight at most ... */
#define GC_INFLIGHT_BYTES (8u << 20)  /* ... and their value bytes */
#define GC_WAITING_MAX 16             /* walked segments waiting to be deleted */
#define GC_RETRY_NS 5000000000ULL     /* after a failed walk, wait this long */
#define GC_PERSIST_WAIT_NS 1000000000ULL /* a walked segment waits this long for the index
					    to persist on its own before GC asks for a
					    flush (each flush makes a small SST file) */

/* A value shared by the cache and the replies that return it. */
struct blob {
	unsigned refs;
	uint32_t len;
	uint8_t data[];
};

struct kentry {
	struct kentry *lru_prev, *lru_next; /* on the CLOCK list once known (cache_evict) */
	bool known;                 /* the fields below mirror the truth */
	bool exists;                /* the key exists (maybe expired, not yet reclaimed) */
	bool in_lru;
	bool referenced;            /* used since eviction last passed it (CLOCK) */
	bool is_inline;             /* the current value lives in the index */
	uint64_t expiry_ms;         /* 0 = none */
	uint32_t value_len;
	struct blob *value;         /* NULL while not loaded */
	struct log_pos pos;         /* the current record, when !is_inline */
	uint64_t idx_expiry_ms;     /* the expiry the index holds (its expiry rows) */
	bool idx_ptr;               /* the index (with the applied batch) points into the log */
	struct log_pos idx_pos;     /* ... at this record: its bytes are counted live */
	unsigned pending;           /* writes appended but not yet applied to the index */
	struct pending_write *batch_pw; /* the key's entry in the index batch being gathered */
	struct store_req *head, *tail; /* requests on this key; head runs */
	size_t charge;              /* bytes counted against the cache */
	/* last, next to the key, so a lookup touches one or two cache lines */
	struct kentry *hnext;       /* hash chain */
	uint64_t hash;
	uint32_t key_len;
	uint8_t key[];
};

/* One appended record, until the log settles it. */
struct pending_write {
	struct log_write w;
	struct store *st;
	struct kentry *ke;
	struct store_req *req;    /* to complete when written; NULL once acknowledged */
	struct blob *value;       /* inline PUT: the value (entry.value points into it) */
	struct idx_entry entry;   /* PUT: what the index will hold */
	bool is_delete;
	bool is_drop;             /* FLUSHALL of the shard (ke is NULL) */
	bool blind;               /* a PUT that assumed its key absent from the index,
				     waiting in st->blind for resolve_blind */
	bool in_batch;            /* written: the key's batch_pw, on st->applying */
	uint64_t batched_ns;      /* when it joined st->applying */
	int64_t count_delta;      /* change made to the key count */
	struct pending_write *next_free; /* free list, or st->applying */
};

/* Live bytes of one log segment (see store.h, garbage collection). */
struct seg_usage {
	uint64_t id;
	uint64_t live;  /* bytes of records the index points at */
	int64_t pending; /* change to `live` that the index batch will make: written
			    records count as live at once for GC and INFO */
	bool dirty;     /* changed since the index last got it */
	bool forget;    /* the segment is deleted: remove its row */
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
	bool active;               /* a victim is being walked */
	bool reading;              /* a read of it is in flight */
	bool failed;               /* a relocation or read failed: keep the victim */
	struct log_segment_info victim;
	struct log_raw_read read;
	uint8_t *buf;              /* FMT_BLOCK-aligned, buf_cap bytes */
	uint64_t buf_cap;
	uint64_t buf_off, buf_len; /* segment bytes [buf_off, buf_off + buf_len) are in buf */
	uint64_t pos;              /* offset of the next record to look at */
	unsigned inflight;         /* relocations submitted, not done */
	uint64_t inflight_bytes;
	uint64_t retry_at_ns;      /* no new walk before this (after a failure) */
	uint64_t write_errors;     /* stats.write_errors when the walk began */
	size_t segments_seen;      /* the log's segment count when GC last looked */
	struct gc_waiting waiting[GC_WAITING_MAX];
	unsigned n_waiting;
};

/* A relocation request with its copy of the record's key and value. */
struct gc_req {
	struct store_req req;
	uint64_t segment, offset, lsn; /* the record it moves */
	uint8_t data[];                /* key, then value */
};

struct store {
	struct px *px;
	struct store_config cfg;
	char dir[4096];
	struct idx *idx;
	struct log *log;
	struct idx_batch *batch;   /* the rows of the slice being written (apply_keys) */
	uint64_t batch_lsn;        /* highest LSN in the batch */
	bool batch_dirty;
	size_t batch_records;      /* keys in the batch (st->applying) */
	size_t apply_keys;         /* ... that make it drain */
	size_t batch_joined;       /* keys that joined it this loop iteration */
	size_t apply_slice;        /* the slice the last iteration's load called for */
	struct px_timer apply_timer; /* drains the batch when no hook runs (apply_tick) */
	struct px_hook hook;
	struct px_timer expire_timer;
	unsigned expiring;         /* active-expiry deletes in flight */
	bool expire_resume;        /* the next pass goes on after expire_at, not from the start */
	uint64_t expire_at_ms;     /* the expiry row the last pass visited last ... */
	uint8_t *expire_at_key;    /* ... (its key, malloc()ed) */
	size_t expire_at_klen, expire_at_cap;
	uint64_t expire_started_ns; /* when a walk last started from the first row */
	int lock_fd;               /* DIR/shard-NNN/LOCK, flock()ed while open */

	struct kentry **buckets;   /* key table */
	size_t n_buckets, n_keys_cached;
	struct kentry *lru_head, *lru_tail; /* least recently used first */
	size_t cache_used;         /* bytes charged by cached values */

	struct pending_write *free_writes;
	struct pending_write *applying; /* the keys of the batch, oldest first record first */
	struct pending_write *applying_tail;
	struct pending_write **blind;   /* blind PUTs whose key's index state is unread */
	struct idx_probe *probes;       /* resolve_blind's lookups, cap_blind of them */
	size_t n_blind, cap_blind;
	uint64_t keys;             /* exact key count, pending writes included (DBSIZE) */
	uint64_t applied_keys;     /* key count of what the index holds (persisted with it) */
	uint64_t drop_lsn;         /* LSN of the newest DROP: older entries are gone */
	unsigned inflight_reqs;    /* submitted, done not yet run */
	bool stopped;
	int failed;                /* the index could not be written: writes refused */
	struct seg_usage *usage;   /* live bytes per segment, sorted by id */
	size_t n_usage, cap_usage;
	bool usage_dirty;          /* some entry is dirty */
	struct gc gc;
	struct px_timer gc_timer;
	struct store_stats stats;
	struct replay *replay;     /* during recovery only: the batch being replayed */
	uint64_t checkpoint_lsn;   /* next LSN of the log at the last index flush asked for */
	uint64_t submitted;        /* requests submitted, ever */
	uint64_t idle_mark;        /* ... as the apply timer last saw them */
};

/* ---- small helpers ----------------------------------------------------- */

static uint64_t hash_key(const uint8_t *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ key[i]) * 0x100000001b3ULL;
	return h ^ (h >> 29);
}

static struct blob *blob_new(const void *data, size_t len)
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

static struct blob *blob_ref(struct blob *b)
{
	if (b)
		b->refs++;
	return b;
}

static void blob_unref(struct blob *b)
{
	if (b && --b->refs == 0)
		free(b);
}

static bool key_live(const struct kentry *ke)
{
	return ke->exists && (ke->expiry_ms == 0 || ke->expiry_ms > clock_unix_ms());
}

/* ---- live bytes per segment --------------------------------------------- */

/* The usage entry of segment `id`, created (zero) if missing; NULL only when
 * out of memory (the count is then lost, which only makes GC visit the
 * segment early). */
/* Where segment `id`'s entry is, or would be inserted, in st->usage. */
static size_t usage_index(const struct store *st, uint64_t id)
{
	size_t lo = 0, hi = st->n_usage;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (st->usage[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct seg_usage *usage_get(struct store *st, uint64_t id)
{
	size_t lo = usage_index(st, id);
	if (lo < st->n_usage && st->usage[lo].id == id)
		return &st->usage[lo];
	if (st->n_usage == st->cap_usage) {
		size_t cap = st->cap_usage ? st->cap_usage * 2 : 64;
		struct seg_usage *u = realloc(st->usage, cap * sizeof(*u));
		if (u == NULL)
			return NULL;
		st->usage = u;
		st->cap_usage = cap;
	}
	memmove(&st->usage[lo + 1], &st->usage[lo], (st->n_usage - lo) * sizeof(*st->usage));
	st->n_usage++;
	st->usage[lo] = (struct seg_usage){.id = id};
	return &st->usage[lo];
}

static void usage_add(struct store *st, uint64_t segment, int64_t delta)
{
	struct seg_usage *u = usage_get(st, segment);
	if (u == NULL)
		return;
	if (delta < 0 && u->live < (uint64_t)-delta)
		u->live = 0; /* a segment counted low (no row): never below zero */
	else
		u->live += (uint64_t)delta;
	u->forget = false;
	u->dirty = true;
	st->usage_dirty = true;
}

/* The key's index entry moves from what ke->idx_* say to `pos` (NULL: no log
 * pointer any more — deleted, or the value is inline). */
static void usage_move(struct store *st, struct kentry *ke, const struct log_pos *pos)
{
	if (ke->idx_ptr)
		usage_add(st, ke->idx_pos.segment, -(int64_t)ke->idx_pos.length);
	ke->idx_ptr = pos != NULL;
	if (pos != NULL) {
		ke->idx_pos = *pos;
		usage_add(st, pos->segment, pos->length);
	}
}

/* Adds the dirty usage entries to batch b (rows of deleted segments are
 * removed). */
static void usage_flush(struct store *st, struct idx_batch *b)
{
	if (!st->usage_dirty)
		return;
	size_t kept = 0;
	for (size_t i = 0; i < st->n_usage; i++) {
		struct seg_usage *u = &st->usage[i];
		if (u->dirty && u->forget)
			idx_batch_forget_segment(b, u->id);
		else if (u->dirty)
			idx_batch_set_live(b, u->id, u->live);
		u->dirty = false;
		if (!u->forget)
			st->usage[kept++] = *u;
	}
	st->n_usage = kept;
	st->usage_dirty = false;
}

/* Live bytes of a segment counting the written records the index batch has
 * not applied yet. */
static uint64_t seg_live(const struct seg_usage *u)
{
	return u->pending < 0 && u->live < (uint64_t)-u->pending ? 0 : u->live + (uint64_t)u->pending;
}

static uint64_t usage_live(const struct store *st, uint64_t segment)
{
	size_t i = usage_index(st, segment);
	return i < st->n_usage && st->usage[i].id == segment ? seg_live(&st->usage[i]) : 0;
}

/* Records that the batch will move `delta` live bytes into (or out of) a
 * segment. */
static void usage_pending(struct store *st, uint64_t segment, int64_t delta)
{
	struct seg_usage *u = usage_get(st, segment);
	if (u != NULL)
		u->pending += delta;
}

/* The record of `pw` (NULL for a delete or an inline value), as a position. */
static bool entry_pos(const struct pending_write *pw, struct log_pos *pos)
{
	if (pw->is_delete || pw->entry.is_inline)
		return false;
	*pos = (struct log_pos){.segment = pw->entry.segment,
				.offset = pw->entry.offset,
				.length = pw->entry.length,
				.lsn = pw->entry.lsn};
	return true;
}

static void usage_load(void *arg, uint64_t segment, uint64_t live)
{
	struct store *st = arg;
	struct seg_usage *u = usage_get(st, segment);
	if (u != NULL)
		u->live = live;
}

/* ---- the key table and the cache --------------------------------------- */

static void lru_remove(struct store *st, struct kentry *ke)
{
	if (!ke->in_lru)
		return;
	if (ke->lru_prev)
		ke->lru_prev->lru_next = ke->lru_next;
	else
		st->lru_head = ke->lru_next;
	if (ke->lru_next)
		ke->lru_next->lru_prev = ke->lru_prev;
	else
		st->lru_tail = ke->lru_prev;
	ke->in_lru = false;
}

static void table_unlink(struct store *st, struct kentry *ke)
{
	struct kentry **pp = &st->buckets[ke->hash & (st->n_buckets - 1)];
	while (*pp != ke)
		pp = &(*pp)->hnext;
	*pp = ke->hnext;
	st->n_keys_cached--;
}

static void kentry_free(struct store *st, struct kentry *ke)
{
	lru_remove(st, ke);
	table_unlink(st, ke);
	st->cache_used -= ke->charge;
	blob_unref(ke->value);
	free(ke);
}

/* Recomputes what `ke` costs the cache (its batch entry included: keys
 * waiting for the index take the place of cached values). */
static void kentry_charge(struct store *st, struct kentry *ke)
{
	size_t c = sizeof(*ke) + ke->key_len + (ke->value ? ke->value->len : 0) +
		   (ke->batch_pw ? sizeof(struct pending_write) : 0);
	st->cache_used = st->cache_used - ke->charge + c;
	ke->charge = c;
}

/* Drops least recently used idle kentries until the cache fits its budget. */
static void lru_append(struct store *st, struct kentry *ke)
{
	ke->lru_prev = st->lru_tail;
	ke->lru_next = NULL;
	if (st->lru_tail)
		st->lru_tail->lru_next = ke;
	else
		st->lru_head = ke;
	st->lru_tail = ke;
	ke->in_lru = true;
}

/* Second chance (CLOCK): an entry used since eviction last passed it, or busy
 * (requests queued, writes pending), goes to the back instead of being freed;
 * so a request touches no list, only its entry's `referenced` bit.  A call
 * moves at most CACHE_EVICT_SKIPS entries to the back (the budget is soft:
 * when everything is busy, later calls continue). */
static void cache_evict(struct store *st)
{
	unsigned skips = 0;
	while (st->cache_used > st->cfg.cache_bytes && st->lru_head != NULL) {
		struct kentry *ke = st->lru_head;
		if (ke->referenced || ke->head != NULL || ke->pending > 0) {
			if (++skips > CACHE_EVICT_SKIPS)
				return;
			ke->referenced = false;
			lru_remove(st, ke);
			lru_append(st, ke);
			continue;
		}
		kentry_free(st, ke);
	}
}

/* Called when `ke` may have become idle: it joins the CLOCK list if it is not
 * on it yet or, if it knows nothing useful, is freed. */
static void kentry_release(struct store *st, struct kentry *ke)
{
	if (ke->head != NULL || ke->pending > 0)
		return;
	if (!ke->known) {
		kentry_free(st, ke);
		return;
	}
	if (!ke->in_lru)
		lru_append(st, ke);
	cache_evict(st);
}

static int table_grow(struct store *st)
{
	size_t n = st->n_buckets ? st->n_buckets * 2 : 1024;
	struct kentry **b = calloc(n, sizeof(*b));
	if (b == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < st->n_buckets; i++)
		for (struct kentry *ke = st->buckets[i], *next; ke != NULL; ke = next) {
			next = ke->hnext;
			ke->hnext = b[ke->hash & (n - 1)];
			b[ke->hash & (n - 1)] = ke;
		}
	free(st->buckets);
	st->buckets = b;
	st->n_buckets = n;
	return 0;
}

/* The kentry of a key, or NULL; the LRU order is left alone. */
static struct kentry *kentry_find(struct store *st, const uint8_t *key, size_t len)
{
	uint64_t h = hash_key(key, len);
	for (struct kentry *ke = st->buckets[h & (st->n_buckets - 1)]; ke != NULL; ke = ke->hnext)
		if (ke->hash == h && ke->key_len == len && memcmp(ke->key, key, len) == 0)
			return ke;
	return NULL;
}

/* Finds or creates the kentry of a key and marks it used.
 * NULL only when out of memory. */
static struct kentry *kentry_get(struct store *st, const uint8_t *key, size_t len)
{
	uint64_t h = hash_key(key, len);
	for (struct kentry *ke = st->buckets[h & (st->n_buckets - 1)]; ke != NULL; ke = ke->hnext)
		if (ke->hash == h && ke->key_len == len && memcmp(ke->key, key, len) == 0) {
			ke->referenced = true;
			return ke;
		}
	if (st->n_keys_cached >= st->n_buckets && table_grow(st) < 0)
		return NULL;
	struct kentry *ke = calloc(1, sizeof(*ke) + len);
	if (ke == NULL)
		return NULL;
	ke->hash = h;
	ke->key_len = (uint32_t)len;
	memcpy(ke->key, key, len);
	ke->hnext = st->buckets[h & (st->n_buckets - 1)];
	st->buckets[h & (st->n_buckets - 1)] = ke;
	st->n_keys_cached++;
	kentry_charge(st, ke);
	return ke;
}

/* Marks `ke` known and absent from the index (as read, or as a blind PUT
 * assumes it). */
static void kentry_set_absent(struct kentry *ke)
{
	ke->exists = false;
	ke->idx_expiry_ms = 0;
	ke->idx_ptr = false;
	ke->known = true;
}

/* Fills `ke` from the index.  Returns 0 or -EIO. */
static int kentry_load(struct store *st, struct kentry *ke)
{
	struct idx_entry e;
	uint8_t *inline_value = NULL;
	int ret = idx_get(st->idx, ke->key, ke->key_len, IDX_CACHED_ONLY, &e, &inline_value);
	if (ret == -EWOULDBLOCK) {
		st->stats.index_blocking_reads++;
		ret = idx_get(st->idx, ke->key, ke->key_len, IDX_BLOCKING, &e, &inline_value);
	}
	if (ret == 0 && e.lsn < st->drop_lsn) {
		/* Dropped by a FLUSHALL that the index has not applied yet; the
		 * entry's expiry row is still there until it is (and the drop
		 * zeroes every segment's live bytes). */
		free(inline_value);
		ke->exists = false;
		ke->idx_expiry_ms = e.expiry_ms;
		ke->idx_ptr = false;
		ke->known = true;
		return 0;
	}
	if (ret == -ENOENT) {
		kentry_set_absent(ke);
		return 0;
	}
	if (ret < 0)
		return -EIO;
	blob_unref(ke->value);
	ke->value = NULL;
	if (e.is_inline) {
		ke->value = blob_new(inline_value, e.value_len);
		free(inline_value);
		if (ke->value == NULL)
			return -ENOMEM;
	}
	ke->exists = true;
	ke->is_inline = e.is_inline;
	ke->expiry_ms = e.expiry_ms;
	ke->idx_expiry_ms = e.expiry_ms;
	ke->value_len = e.value_len;
	ke->pos = (struct log_pos){
		.segment = e.segment, .offset = e.offset, .length = e.length, .lsn = e.lsn};
	ke->idx_ptr = !e.is_inline;
	ke->idx_pos = ke->pos;
	ke->known = true;
	kentry_charge(st, ke);
	return 0;
}

/* ---- completing requests ----------------------------------------------- */

static void run_done(void *arg)
{
	struct store_req *req = arg;
	struct blob *b = req->result_ref;
	req->result_ref = NULL;
	req->store->inflight_reqs--;
	req->done(req);
	blob_unref(b);
}

/* Makes `b` the value the request returns, kept alive until done has run. */
static void req_set_result(struct store_req *req, struct blob *b)
{
	blob_unref(req->result_ref);
	req->result_ref = blob_ref(b);
	req->result = b->data;
	req->result_len = b->len;
}

/* Schedules req->done for the next iteration, returning `result` if not NULL
 * (else whatever req_set_result set earlier). */
static void req_complete(struct store *st, struct store_req *req, int status, struct blob *result)
{
	req->status = status;
	if (result != NULL)
		req_set_result(req, result);
	px_send(st->px, st->px->id, run_done, req);
}

static bool req_run(struct store *st, struct store_req *req);

/* The head request of `ke` has settled: start the next ones. */
static void queue_advance(struct store *st, struct kentry *ke)
{
	for (;;) {
		ke->head = ke->head->next_waiting;
		if (ke->head == NULL) {
			ke->tail = NULL;
			kentry_release(st, ke);
			return;
		}
		if (!req_run(st, ke->head))
			return; /* waiting for I/O: read_done advances the queue */
	}
}

/* ---- writes ------------------------------------------------------------ */

/* Returns a settled pending write to the free list and unpins its key. */
static void pending_write_free(struct store *st, struct pending_write *pw)
{
	struct kentry *ke = pw->ke;
	blob_unref(pw->value);
	pw->value = NULL;
	pw->in_batch = false;
	pw->next_free = st->free_writes;
	st->free_writes = pw;
	if (ke != NULL) {
		if (ke->batch_pw == pw) {
			ke->batch_pw = NULL;
			kentry_charge(st, ke);
		}
		ke->pending--;
		kentry_release(st, ke);
	}
}

/* ---- blind puts ---------------------------------------------------------
 *
 * A plain PUT (no NX, XX, GET or KEEPTTL) of a key the key table does not
 * know replies the same whether the key existed or not; only the key count
 * and the live bytes of the record it replaces depend on it.  Reading the
 * index for that (a RocksDB point lookup per key) cost a bulk load of new
 * keys about a third of the server's CPU.  So such a PUT is "blind": it
 * assumes the key absent (count +1, no old record) and joins st->blind.
 * resolve_blind looks all of them up in one sorted MultiGet and corrects
 * what the assumption got wrong.  It runs before every index write (so the
 * index never takes a batch built on an unresolved assumption), before the
 * key count is read (DBSIZE, INFO), before a FLUSHALL, and whenever
 * APPLY_SLICE blind PUTs wait (one MultiGet stays a few milliseconds).
 *
 * The blind PUT is the first pending write of its key (only an unknown key
 * can be blind, and a key with pending writes is pinned and known), and
 * writes reach the batch in LSN order, so until it is in the batch the index
 * holds the key's state from before it, which is what the lookup reads. */

/* True if req may run blind; makes room for it in st->blind. */
static bool blind_put(struct store *st, const struct store_req *req)
{
	if (req->op != STORE_PUT || req->flags != 0)
		return false;
	if (st->n_blind == st->cap_blind) {
		size_t cap = st->cap_blind ? 2 * st->cap_blind : 1024;
		struct pending_write **b = realloc(st->blind, cap * sizeof(*b));
		if (b == NULL)
			return false;
		st->blind = b;
		struct idx_probe *p = realloc(st->probes, cap * sizeof(*p));
		if (p == NULL)
			return false;
		st->probes = p;
		st->cap_blind = cap;
	}
	return true;
}

static void resolve_blind(struct store *st);

/* Files the blind PUT's pending write (NULL: nothing was appended, so the
 * assumption is withdrawn and the key is read from the index on next use). */
static void blind_register(struct store *st, struct kentry *ke, struct pending_write *pw)
{
	if (pw == NULL) {
		ke->known = false;
		return;
	}
	pw->blind = true;
	st->blind[st->n_blind++] = pw;
	st->stats.blind_puts++;
	if (st->n_blind >= APPLY_SLICE)
		resolve_blind(st); /* one MultiGet stays short */
}

/* Corrects one blind PUT whose key the index held as `e`: the key gets the
 * index state it has (the batch's rows are built from it when it is applied,
 * so the old record's live bytes and expiry row are handled there). */
static void blind_found(struct store *st, struct pending_write *pw, const struct idx_entry *e)
{
	struct kentry *ke = pw->ke;
	st->stats.blind_puts_existing++;
	st->keys--;
	pw->count_delta--;
	if (pw->in_batch && !e->is_inline) /* write_done took it for absent */
		usage_pending(st, e->segment, -(int64_t)e->length);
	ke->idx_expiry_ms = e->expiry_ms;
	ke->idx_ptr = !e->is_inline;
	ke->idx_pos = (struct log_pos){
	    .segment = e->segment, .offset = e->offset, .length = e->length, .lsn = e->lsn};
}

/* Looks up the keys of every blind PUT and settles what they assumed. */
static void resolve_blind(struct store *st)
{
	if (st->n_blind == 0)
		return;
	for (size_t i = 0; i < st->n_blind; i++)
		st->probes[i] = (struct idx_probe){.key = st->blind[i]->ke->key,
						   .klen = st->blind[i]->ke->key_len};
	int ret = idx_get_many(st->idx, st->probes, st->n_blind);
	for (size_t i = 0; i < st->n_blind; i++) {
		struct pending_write *pw = st->blind[i];
		const struct idx_probe *p = &st->probes[i];
		pw->blind = false;
		/* An entry older than a FLUSHALL the index has not applied yet is
		 * gone (as in kentry_load). */
		if (ret == 0 && p->status == 0 && p->e.lsn >= st->drop_lsn)
			blind_found(st, pw, &p->e);
	}
	st->n_blind = 0;
	if (ret < 0 && st->failed == 0) {
		st->failed = -EIO;
		LOG_ERROR("shard %u: the index cannot be read (%s): the key count may be off and"
			  " writes are refused from now on; the log holds every acknowledged write,"
			  " restart to replay it",
			  st->cfg.shard, strerror(-ret));
	}
}

/* Adds the rows of one key's batch entry: its index row, its expiry rows
 * (from the expiry the index holds to the new one) and the live bytes moving
 * from the record the index pointed at to the new one.  Records the key
 * wrote and overwrote within the batch never reach the index. */
static void batch_add_key(struct store *st, struct pending_write *pw)
{
	struct kentry *ke = pw->ke;
	struct log_pos pos;
	bool ptr = entry_pos(pw, &pos);
	/* The live bytes move for real now: what write_done counted pending
	 * is taken back. */
	if (ke->idx_ptr)
		usage_pending(st, ke->idx_pos.segment, (int64_t)ke->idx_pos.length);
	if (ptr)
		usage_pending(st, pos.segment, -(int64_t)pos.length);
	usage_move(st, ke, ptr ? &pos : NULL);
	if (pw->is_delete) {
		idx_batch_delete(st->batch, ke->key, ke->key_len, ke->idx_expiry_ms);
		ke->idx_expiry_ms = 0;
	} else {
		idx_batch_put(st->batch, ke->key, ke->key_len, &pw->entry, ke->idx_expiry_ms);
		ke->idx_expiry_ms = pw->entry.expiry_ms;
	}
}

/* Asks RocksDB to flush its memtable (in the background) once the log has
 * CHECKPOINT_RECORDS records past the last time: that bounds what recovery
 * replays after a crash.  A busy flush is asked for again at the next write. */
static void checkpoint_due(struct store *st)
{
	uint64_t next = st->log != NULL ? log_next_lsn(st->log) : 0;
	if (next - st->checkpoint_lsn < CHECKPOINT_RECORDS)
		return;
	if (idx_request_flush(st->idx) != -EBUSY)
		st->checkpoint_lsn = next;
}

/* Writes the oldest `max` keys of the batch to the index, with applied_lsn
 * and the key count of what the index then holds, and unpins them.
 *
 * The LSN is the one just below the first record of the oldest key left
 * waiting: every record up to it is in the index, or was overwritten there by
 * a newer record of its key.  Such a newer row is ahead of applied_lsn; replay
 * after a crash re-applies every record from there on, each against the row
 * the index holds (its count, expiry row and live bytes follow that row), so
 * it ends where the log does. */
static void apply_keys(struct store *st, size_t max)
{
	resolve_blind(st);
	if (!st->batch_dirty)
		return;
	struct pending_write *rest = st->applying;
	size_t n = 0;
	for (; rest != NULL && n < max; rest = rest->next_free, n++) {
		batch_add_key(st, rest);
		st->applied_keys += (uint64_t)rest->count_delta;
	}
	usage_flush(st, st->batch);
	uint64_t lsn = rest != NULL ? rest->w.pos.lsn - 1 : st->batch_lsn;
	if (lsn < idx_applied_lsn(st->idx))
		lsn = idx_applied_lsn(st->idx);
	int ret = idx_write(st->idx, st->batch, lsn, st->applied_keys);
	idx_batch_clear(st->batch);
	for (struct pending_write *pw = st->applying, *next; pw != rest; pw = next) {
		next = pw->next_free;
		pending_write_free(st, pw);
	}
	st->applying = rest;
	st->batch_records -= n;
	if (rest == NULL) {
		st->applying_tail = NULL;
		st->batch_dirty = false;
	}
	if (ret < 0 && st->failed == 0) {
		st->failed = -EIO;
		LOG_ERROR("shard %u: the index cannot be written: writes are refused from now on;"
			  " the log holds every acknowledged write, restart to replay it",
			  st->cfg.shard);
	}
	checkpoint_due(st);
}

/* Writes the whole batch to the index. */
static void apply_batch(struct store *st)
{
	apply_keys(st, SIZE_MAX);
}

/* True when the batch should drain: too many keys wait, the oldest has
 * waited APPLY_DELAY_NS or APPLY_LAG_RECORDS records, the store is stopping,
 * or garbage collection waits for the index to hold its relocations before
 * it deletes a segment. */
static bool apply_due(const struct store *st)
{
	if (!st->batch_dirty)
		return false;
	if (st->stopped || st->batch_records >= st->apply_keys || st->applying == NULL)
		return true; /* (no key: only live-byte rows, which cost nothing to wait for) */
	/* GC's oldest walked segment, once the log is synced past it, waits
	 * only for the index (a segment walked later waits for its turn). */
	const struct gc *g = &st->gc;
	if (g->n_waiting > 0 && g->waiting[0].lsn > idx_applied_lsn(st->idx) &&
	    g->waiting[0].lsn <= log_synced_lsn(st->log))
		return true;
	if (log_next_lsn(st->log) - st->applying->w.pos.lsn >= APPLY_LAG_RECORDS)
		return true;
	return px_now_ns() - st->applying->batched_ns >= APPLY_DELAY_NS;
}

/* An idle loop runs no hook: the timer drains the batch then, and comes
 * back when the oldest key left is due.  It drains the slice the last
 * iteration's load called for: the tick also fires on a busy loop, and a
 * full slice there (4096 rows of memtable inserts) held every connection for
 * 4-8 ms while only reads came in.
 *
 * A store that has taken no request for APPLY_IDLE_NS drains its batch
 * before it is due: waiting pays only when later writes merge into it, and
 * an idle loop has the CPU to spare now that a busy one would not have in a
 * few seconds (after a bulk load, the 100 k keys' rows went out 4 s later,
 * in the middle of the next burst of requests). */
static void apply_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	struct store *st = container_of(t, struct store, apply_timer);
	bool idle = st->submitted == st->idle_mark;
	st->idle_mark = st->submitted;
	if (apply_due(st))
		apply_keys(st, st->apply_slice);
	else if (idle)
		apply_keys(st, APPLY_IDLE_SLICE);
	if (!st->batch_dirty || st->stopped)
		return;
	uint64_t now = px_now_ns(), due = now;
	if (st->applying != NULL && st->applying->batched_ns + APPLY_DELAY_NS > now)
		due = st->applying->batched_ns + APPLY_DELAY_NS;
	uint64_t wait = due - now + APPLY_TICK_NS;
	if (idle)
		wait = APPLY_TICK_NS;
	else if (wait > APPLY_IDLE_NS)
		wait = APPLY_IDLE_NS; /* to see whether the store has gone idle */
	px_timer_start(st->px, &st->apply_timer, wait, 0, apply_tick);
}

/* Marks the batch as holding something: it goes out within APPLY_DELAY_NS,
 * or once the store is idle. */
static void batch_touch(struct store *st)
{
	st->batch_dirty = true;
	if (!px_timer_armed(&st->apply_timer) && !st->stopped)
		px_timer_start(st->px, &st->apply_timer, APPLY_IDLE_NS, 0, apply_tick);
}

/* Marks every cached key unknown: they are read from the index again. */
static void forget_all_keys(struct store *st)
{
	for (size_t i = 0; i < st->n_buckets; i++)
		for (struct kentry *ke = st->buckets[i]; ke != NULL; ke = ke->hnext)
			ke->known = false;
}

/* Starts loading what write_done will touch for the records completed after
 * w (the log completes a commit's records in list order): the batch entry of
 * the next one's key, the key entry of the one after, and the record after
 * that.  Each was requested one call earlier, so these loads hit and the
 * misses of a commit's records overlap instead of following each other. */
static void write_prefetch(const struct log_write *w)
{
	const struct log_write *n1 = w->next;
	if (n1 == NULL)
		return;
	const struct kentry *k1 = container_of(n1, struct pending_write, w)->ke;
	if (k1 != NULL && k1->batch_pw != NULL) {
		const char *first = (const char *)k1->batch_pw;
		for (size_t off = 0; off < sizeof(struct pending_write); off += 64)
			__builtin_prefetch(first + off, 1);
	}
	const struct log_write *n2 = n1->next;
	if (n2 == NULL)
		return;
	const struct kentry *k2 = container_of(n2, struct pending_write, w)->ke;
	if (k2 != NULL)
		for (size_t off = 0; off < offsetof(struct kentry, hnext); off += 64)
			__builtin_prefetch((const char *)k2 + off, 1);
	if (n2->next != NULL)
		__builtin_prefetch(container_of(n2->next, struct pending_write, w));
}

/* The log settled a record.  A written one joins the index batch; its key
 * stays pinned in the cache until the hook has written that batch, so no
 * lookup can read the index before it holds the write. */
static void write_done(struct log_write *w, int err)
{
	struct pending_write *pw = container_of(w, struct pending_write, w);
	struct store *st = pw->st;
	struct kentry *ke = pw->ke;
	write_prefetch(w);
	if (err != 0) {
		apply_batch(st); /* so the re-read below finds the writes that succeeded */
		st->keys -= (uint64_t)pw->count_delta;
		if (ke != NULL)
			ke->known = false; /* the index never saw it: re-read on next use */
		else
			forget_all_keys(st);
		st->stats.write_errors++;
	} else if (pw->is_drop) {
		apply_batch(st); /* what came before the drop, first */
		if (idx_drop_all(st->idx, w->pos.lsn) < 0 && st->failed == 0) {
			st->failed = -EIO;
			LOG_ERROR("shard %u: FLUSHALL could not be applied to the index: writes are"
				  " refused from now on; restart to replay the log",
				  st->cfg.shard);
		}
		st->applied_keys = 0;
		for (size_t i = 0; i < st->n_buckets; i++)
			for (struct kentry *k = st->buckets[i]; k != NULL; k = k->hnext) {
				k->idx_expiry_ms = 0;
				k->idx_ptr = false;
			}
		for (size_t i = 0; i < st->n_usage; i++) {
			st->usage[i].live = 0; /* idx_drop_all removed their rows */
			st->usage[i].pending = 0;
		}
	} else {
		st->batch_lsn = w->pos.lsn;
		batch_touch(st);
	}
	if (pw->req != NULL)
		req_complete(st, pw->req, err, NULL);
	if (err != 0 || pw->is_drop) { /* nothing for the batch to carry */
		pending_write_free(st, pw);
		return;
	}
	/* The record the key's live bytes were counted in: the batch's, else the
	 * index's.  GC and INFO see the write at once (seg_live). */
	struct pending_write *first = ke->batch_pw;
	struct log_pos pos;
	if (first != NULL ? entry_pos(first, &pos) : ke->idx_ptr) {
		const struct log_pos *old = first != NULL ? &pos : &ke->idx_pos;
		usage_pending(st, old->segment, -(int64_t)old->length);
	}
	if (entry_pos(pw, &pos))
		usage_pending(st, pos.segment, (int64_t)pos.length);
	if (first != NULL) {
		/* The key is in the batch already: its entry takes this record's
		 * state (records are written in LSN order, so this is the newer
		 * one) and the batch still holds one row per key. */
		struct blob *v = first->value;
		first->value = pw->value;
		pw->value = v;
		first->is_delete = pw->is_delete;
		first->entry = pw->entry;
		first->count_delta += pw->count_delta;
		st->stats.index_writes_merged++;
		pending_write_free(st, pw);
		return;
	}
	pw->in_batch = true;
	pw->batched_ns = px_now_ns();
	ke->batch_pw = pw;
	kentry_charge(st, ke);
	st->batch_records++;
	st->batch_joined++;
	pw->next_free = NULL;
	if (st->applying_tail != NULL)
		st->applying_tail->next_free = pw;
	else
		st->applying = pw;
	st->applying_tail = pw;
}

/* Appends `rec` on behalf of `req`.  Returns the pending write (its st and w
 * set), or NULL after completing req with the error (nothing appended). */
static struct pending_write *append_record(struct store *st, struct store_req *req,
					   const struct fmt_record *rec)
{
	if (st->failed) {
		req_complete(st, req, st->failed, NULL);
		return NULL;
	}
	struct pending_write *pw = st->free_writes;
	if (pw != NULL)
		st->free_writes = pw->next_free;
	else if ((pw = calloc(1, sizeof(*pw))) == NULL) {
		req_complete(st, req, -ENOMEM, NULL);
		return NULL;
	}
	pw->w.done = write_done;
	int ret = log_append(st->log, rec, &pw->w);
	if (ret < 0) {
		pw->next_free = st->free_writes;
		st->free_writes = pw;
		req_complete(st, req, ret, NULL);
		return NULL;
	}
	pw->st = st;
	return pw;
}

/* Replies to req now under `none` durability, else once pw is written. */
static void pending_write_ack(struct store *st, struct pending_write *pw, struct store_req *req)
{
	if (st->cfg.durability == LOG_DURABILITY_NONE) {
		pw->req = NULL;
		req_complete(st, req, 0, NULL);
	} else {
		pw->req = req;
	}
}

/* Appends a PUT (data != NULL) or DELETE of req's key.  Returns the pending
 * write, or NULL after completing req with the error (nothing appended). */
static struct pending_write *record_append(struct store *st, struct store_req *req,
					   const void *data, size_t len, uint64_t expiry_ms)
{
	struct kentry *ke = req->key_entry;
	struct fmt_record rec = {.type = data ? FMT_PUT : FMT_DELETE,
				 .key = ke->key,
				 .key_len = ke->key_len,
				 .value = data,
				 .value_len = data ? (uint32_t)len : 0,
				 .expiry_ms = data ? expiry_ms : 0};
	return append_record(st, req, &rec);
}

/* Updates the key's state for the appended record pw (value: the PUT's value,
 * NULL for a DELETE).  The reply goes out now under `none` durability, else
 * once the record is written. */
static void record_settle(struct store *st, struct store_req *req, struct pending_write *pw,
			  struct blob *value, uint64_t expiry_ms)
{
	struct kentry *ke = req->key_entry;
	pw->ke = ke;
	pw->is_delete = value == NULL;
	pw->is_drop = false;
	pw->count_delta = value ? (ke->exists ? 0 : 1) : (ke->exists ? -1 : 0);
	st->keys += (uint64_t)pw->count_delta;
	ke->pending++;

	struct blob *replaced = ke->value;
	ke->value = blob_ref(value); /* before the unref: EXPIRE passes the cached blob */
	blob_unref(replaced);
	ke->exists = value != NULL;
	ke->expiry_ms = value ? expiry_ms : 0;
	ke->value_len = value ? value->len : 0;
	ke->is_inline = value && value->len <= st->cfg.inline_max;
	ke->pos = pw->w.pos;
	kentry_charge(st, ke);
	if (value) {
		pw->value = ke->is_inline ? blob_ref(value) : NULL;
		pw->entry = (struct idx_entry){.expiry_ms = expiry_ms,
					       .lsn = pw->w.pos.lsn,
					       .value_len = value->len,
					       .is_inline = ke->is_inline,
					       .value = ke->is_inline ? value->data : NULL,
					       .segment = pw->w.pos.segment,
					       .offset = pw->w.pos.offset,
					       .length = pw->w.pos.length};
	}
	pending_write_ack(st, pw, req);
}

/* Appends a PUT of `value` (NULL: a DELETE) of req's key and updates the
 * key's state.  Returns the pending write, or NULL if nothing was appended
 * (req is completed with the error). */
static struct pending_write *write_record(struct store *st, struct store_req *req,
					  struct blob *value, uint64_t expiry_ms)
{
	struct pending_write *pw = record_append(st, req, value ? value->data : NULL,
						 value ? value->len : 0, expiry_ms);
	if (pw != NULL)
		record_settle(st, req, pw, value, expiry_ms);
	return pw;
}

/* Writes `len` bytes at `data` as req's key's new value.  When the cached
 * value has that size and nothing else holds it (no reply, no batch entry),
 * it is rewritten in place once the append succeeded: an overwrite of a key
 * then costs no malloc and no free of a cold block.  Returns as write_record. */
static struct pending_write *write_value(struct store *st, struct store_req *req,
					 const void *data, size_t len, uint64_t expiry_ms)
{
	struct blob *old = ((struct kentry *)req->key_entry)->value;
	const uint8_t *d = data;
	bool reuse = old != NULL && old->refs == 1 && old->len == len &&
		     (d + len <= old->data || d >= old->data + len); /* (an update's own bytes) */
	struct blob *v = NULL;
	if (!reuse && (v = blob_new(data, len)) == NULL) {
		req_complete(st, req, -ENOMEM, NULL);
		return NULL;
	}
	struct pending_write *pw = record_append(st, req, data, len, expiry_ms);
	if (pw != NULL) {
		if (reuse) {
			memcpy(old->data, data, len);
			v = blob_ref(old);
		}
		record_settle(st, req, pw, v, expiry_ms);
	}
	blob_unref(v);
	return pw;
}

/* ---- reads and the request machine ------------------------------------- */

static void read_done(struct log_read *r, int err, const struct fmt_record *rec)
{
	struct store_req *req = container_of(r, struct store_req, read);
	struct store *st = req->store;
	struct kentry *ke = req->key_entry;
	if (err == 0 && rec->lsn < st->drop_lsn) {
		ke->exists = false; /* a FLUSHALL came after the read was issued */
	} else if (err == 0) {
		ke->value = blob_new(rec->value, rec->value_len);
		if (ke->value == NULL)
			err = -ENOMEM;
		kentry_charge(st, ke);
	} else if ((err == -ENOENT || err == -EAGAIN) && req->retries++ < STORE_READ_RETRIES) {
		/* Moved by GC, or no SQE: look it up again.  A key with writes
		 * the index has not applied is known better than the index. */
		if (ke->pending == 0)
			ke->known = false;
		err = 0;
	}
	if (err != 0) {
		req_complete(st, req, err == -ENOMEM ? -ENOMEM : -EIO, NULL);
		queue_advance(st, ke);
		return;
	}
	if (req_run(st, req))
		queue_advance(st, ke);
}

/* Makes sure the value of req's key is loaded.  Returns true if it is, false
 * if a read was started (req_run runs again when it is done). */
static bool value_loaded(struct store *st, struct store_req *req)
{
	struct kentry *ke = req->key_entry;
	if (ke->value != NULL) {
		if (req->read.done == NULL) /* not the re-run after its own read */
			st->stats.cache_hits++;
		return true;
	}
	st->stats.cache_misses++;
	st->stats.disk_reads++;
	req->read.done = read_done;
	req->read.pos = ke->pos;
	req->read.key = ke->key;
	req->read.key_len = ke->key_len;
	log_read(st->log, &req->read);
	return false;
}

/* Runs the head request of its key.  Returns true if it settled (the next
 * request on the key may run), false if it waits for a read. */
static bool req_run(struct store *st, struct store_req *req)
{
	struct kentry *ke = req->key_entry;
	bool blind = false;
	if (!ke->known) {
		blind = blind_put(st, req);
		int ret = 0;
		if (blind)
			kentry_set_absent(ke);
		else
			ret = kentry_load(st, ke);
		if (ret < 0) {
			req_complete(st, req, ret, NULL);
			return true;
		}
	}
	bool live = key_live(ke);
	req->existed = live;
	req->result_expiry_ms = live ? ke->expiry_ms : 0;
	req->result_len = live ? ke->value_len : 0;

	switch (req->op) {
	case STORE_META:
		req_complete(st, req, live ? 0 : -ENOENT, NULL);
		return true;
	case STORE_GET:
		if (!live) {
			req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		if (!value_loaded(st, req))
			return false;
		req_complete(st, req, 0, ke->value);
		return true;
	case STORE_PUT: {
		if (((req->flags & STORE_NX) && live) || ((req->flags & STORE_XX) && !live)) {
			req_complete(st, req, -EEXIST, NULL);
			return true;
		}
		if ((req->flags & STORE_GET_OLD) && live) {
			if (!value_loaded(st, req))
				return false;
			req_set_result(req, ke->value); /* the reply carries the old value */
		}
		uint64_t expiry = (req->flags & STORE_KEEPTTL) && live ? ke->expiry_ms : req->expiry_ms;
		struct pending_write *pw = write_value(st, req, req->value, req->value_len, expiry);
		if (blind)
			blind_register(st, ke, pw);
		return true;
	}
	case STORE_DELETE: {
		if (!ke->exists || ((req->flags & STORE_IF_EXPIRED) && live)) {
			req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		if ((req->flags & STORE_GET_OLD) && live) {
			if (!value_loaded(st, req))
				return false;
			req_set_result(req, ke->value);
		}
		write_record(st, req, NULL, 0);
		return true;
	}
	case STORE_EXPIRE:
		if (!live) {
			req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		if (!value_loaded(st, req))
			return false; /* the record is rewritten whole, with the new expiry */
		write_record(st, req, ke->value, req->expiry_ms);
		return true;
	case STORE_UPDATE: {
		if (live && !value_loaded(st, req))
			return false;
		enum store_update_result r =
			req->update(req, live ? ke->value->data : NULL, live ? ke->value->len : 0,
				    live ? ke->expiry_ms : 0);
		if (r == STORE_UPDATE_KEEP) {
			req_complete(st, req, 0, NULL);
		} else if (r == STORE_UPDATE_DELETE) {
			if (ke->exists)
				write_record(st, req, NULL, 0);
			else
				req_complete(st, req, -ENOENT, NULL);
		} else {
			write_value(st, req, req->new_value, req->new_len, req->new_expiry_ms);
		}
		return true;
	}
	case STORE_RELOCATE: {
		/* Garbage collection: move the value only if the key's entry is
		 * still the record being collected (expired or not: a clock
		 * stepping back must not find the value gone). */
		struct gc_req *g = container_of(req, struct gc_req, req);
		if (!ke->exists || ke->is_inline || ke->pos.segment != g->segment ||
		    ke->pos.offset != g->offset || ke->pos.lsn != g->lsn) {
			req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		/* The value stays cached like any write's: reads are served
		 * from it until the record is written. */
		struct blob *v = blob_new(req->value, req->value_len);
		if (v == NULL) {
			req_complete(st, req, -ENOMEM, NULL);
			return true;
		}
		write_record(st, req, v, ke->expiry_ms);
		blob_unref(v);
		return true;
	}
	}
	req_complete(st, req, -EINVAL, NULL);
	return true;
}

/* Three passes, so each waits at most for the slowest load of the one
 * before: the buckets, then the entries at their heads, then (found entries)
 * the cached value and the batch entry that a write replaces. */
void store_prefetch(struct store *st, const uint8_t *const *keys, const size_t *lens, size_t n)
{
	struct kentry **slot[STORE_PREFETCH_MAX];
	uint64_t hash[STORE_PREFETCH_MAX];
	if (n > STORE_PREFETCH_MAX)
		n = STORE_PREFETCH_MAX;
	for (size_t i = 0; i < n; i++) {
		hash[i] = hash_key(keys[i], lens[i]);
		slot[i] = &st->buckets[hash[i] & (st->n_buckets - 1)];
		__builtin_prefetch(slot[i]);
	}
	for (size_t i = 0; i < n; i++) {
		const char *ke = (const char *)*slot[i];
		if (ke != NULL) /* the whole entry: a request touches all its lines */
			for (size_t off = 0; off < sizeof(struct kentry) + 16; off += 64)
				__builtin_prefetch(ke + off);
	}
	for (size_t i = 0; i < n; i++)
		for (struct kentry *ke = *slot[i]; ke != NULL; ke = ke->hnext)
			if (ke->hash == hash[i]) {
				if (ke->value != NULL)
					__builtin_prefetch(ke->value);
				if (ke->batch_pw != NULL)
					__builtin_prefetch(ke->batch_pw);
				break;
			}
}

void store_submit(struct store *st, struct store_req *req)
{
	req->store = st;
	req->next_waiting = NULL;
	req->result = NULL;
	req->result_ref = NULL;
	req->result_len = 0;
	req->retries = 0;
	req->read.done = NULL; /* set only once the request reads the log */
	st->inflight_reqs++;
	st->submitted++;
	if (st->stopped) {
		req_complete(st, req, -ESHUTDOWN, NULL);
		return;
	}
	if (req->key_len > FMT_KEY_MAX || req->value_len > FMT_VALUE_MAX) {
		req_complete(st, req, -E2BIG, NULL);
		return;
	}
	struct kentry *ke = kentry_get(st, req->key, req->key_len);
	if (ke == NULL) {
		req_complete(st, req, -ENOMEM, NULL);
		return;
	}
	req->key_entry = ke;
	if (ke->tail != NULL) {
		ke->tail->next_waiting = req;
		ke->tail = req;
		return;
	}
	ke->head = ke->tail = req;
	if (req_run(st, req))
		queue_advance(st, ke);
}

/* ---- applying to the index --------------------------------------------- */

static bool gc_step(struct store *st);
static void gc_next(void *arg);

static bool store_hook(struct px *px, struct px_hook *hook)
{
	struct store *st = container_of(hook, struct store, hook);
	(void)px;
	bool work = gc_step(st);
	log_expect_recycled(st->log, st->gc.active || st->gc.n_waiting > 0);
	size_t segments = log_get_stats(st->log)->segments;
	if (segments != st->gc.segments_seen && !st->gc.active) {
		/* A segment was sealed: a fast writer need not wait for the tick. */
		st->gc.segments_seen = segments;
		gc_next(st);
	}
	size_t slice = 4 * st->batch_joined;
	st->batch_joined = 0;
	st->apply_slice = slice < APPLY_SLICE_MIN ? APPLY_SLICE_MIN
						  : slice > APPLY_SLICE ? APPLY_SLICE : slice;
	if (!apply_due(st))
		return work; /* written behind */
	apply_keys(st, st->apply_slice);
	return true; /* the next iteration drains on */
}

void store_drop_all(struct store *st, struct store_req *req)
{
	req->store = st;
	req->result = NULL;
	req->result_ref = NULL;
	st->inflight_reqs++;
	if (st->stopped) {
		req_complete(st, req, -ESHUTDOWN, NULL);
		return;
	}
	resolve_blind(st); /* the counts it corrects are the ones the drop zeroes */
	struct fmt_record rec = {.type = FMT_DROP};
	struct pending_write *pw = append_record(st, req, &rec);
	if (pw == NULL)
		return;
	pw->ke = NULL;
	pw->is_delete = false;
	pw->is_drop = true;
	pw->count_delta = -(int64_t)st->keys;
	st->keys = 0;
	st->drop_lsn = pw->w.pos.lsn;
	for (size_t i = 0; i < st->n_buckets; i++)
		for (struct kentry *ke = st->buckets[i]; ke != NULL; ke = ke->hnext) {
			blob_unref(ke->value);
			ke->value = NULL;
			ke->exists = false;
			ke->expiry_ms = 0;
			ke->value_len = 0;
			ke->known = true;
			kentry_charge(st, ke);
		}
	pending_write_ack(st, pw, req);
}

/* ---- SCAN -------------------------------------------------------------- */

struct scan_ctx {
	struct store *st;
	uint64_t now_ms;
	void (*fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms);
	void *arg;
};

static int scan_visit(void *arg, const void *key, size_t klen, const struct idx_entry *e)
{
	struct scan_ctx *c = arg;
	if (e->lsn < c->st->drop_lsn)
		return 0; /* dropped by a FLUSHALL the index has not applied yet */
	uint64_t expiry = e->expiry_ms;
	struct kentry *ke = kentry_find(c->st, key, klen);
	if (ke != NULL && ke->known) { /* pending writes are newer than the index */
		if (!ke->exists)
			return 0;
		expiry = ke->expiry_ms;
	}
	if (expiry == 0 || expiry > c->now_ms)
		c->fn(c->arg, key, klen, expiry);
	return 0;
}

int store_scan(struct store *st, uint64_t cursor, size_t count,
	       void (*fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms),
	       void *arg, uint64_t *next)
{
	struct scan_ctx c = {.st = st, .now_ms = clock_unix_ms(), .fn = fn, .arg = arg};
	uint32_t next_hash;
	*next = 0;
	if (cursor > UINT32_MAX)
		return 0; /* not a cursor this store made: nothing after it */
	apply_batch(st); /* the index then holds every written record */
	int ret = idx_scan(st->idx, (uint32_t)cursor, count ? count : 10, scan_visit, &c,
			   &next_hash);
	if (ret < 0)
		return -EIO;
	*next = ret == 1 ? next_hash : 0; /* a resumption is past hash 0's group: never 0 */
	return 0;
}

/* ---- active expiry ----------------------------------------------------- */

struct expire_req {
	struct store_req req;
	uint8_t key[]; /* copied: the index's buffer is gone after the visit */
};

static void expire_done(struct store_req *req)
{
	struct store *st = req->store;
	if (req->status == 0)
		st->stats.expired++;
	st->expiring--;
	free(container_of(req, struct expire_req, req));
}

/* Deletes an expired key, unless the key table knows better: a key whose
 * delete or rewrite waits in the index batch keeps its old expiry row until
 * the batch goes out, and the walk must not stop there (it resumes after the
 * last row visited: without that, a pass kept finding the same EXPIRE_BATCH
 * rows whose deletes were pending, and reclaimed EXPIRE_BATCH keys per batch
 * delay). */
static int expire_visit(void *arg, const void *key, size_t klen, uint64_t expiry_ms)
{
	struct store *st = arg;
	if (st->expiring >= EXPIRE_INFLIGHT_MAX)
		return 1;
	if (klen > st->expire_at_cap) {
		uint8_t *b = realloc(st->expire_at_key, klen);
		if (b == NULL)
			return 1;
		st->expire_at_key = b;
		st->expire_at_cap = klen;
	}
	const struct kentry *ke = kentry_find(st, key, klen);
	bool settled = ke != NULL && ke->known &&
		       (!ke->exists || ke->expiry_ms == 0 || ke->expiry_ms > clock_unix_ms());
	if (!settled) {
		struct expire_req *x = calloc(1, sizeof(*x) + klen);
		if (x == NULL)
			return 1;
		memcpy(x->key, key, klen);
		x->req.op = STORE_DELETE;
		x->req.flags = STORE_IF_EXPIRED;
		x->req.key = x->key;
		x->req.key_len = klen;
		x->req.done = expire_done;
		st->expiring++;
		store_submit(st, &x->req);
	}
	memcpy(st->expire_at_key, key, klen);
	st->expire_at_klen = klen;
	st->expire_at_ms = expiry_ms;
	st->expire_resume = true;
	return 0;
}

/* One pass: up to EXPIRE_BATCH expired rows after the last one visited; the
 * next iteration goes on while rows remain.  Rows that expire later sort
 * after the walk's position, so once at the end it waits there for them;
 * every EXPIRE_RESTART_NS it starts over from the first row, for what it
 * passed (a delete that failed, an expiry set in the past).  Starting over
 * every tick would walk again, ten times a second, every row whose delete
 * waits in the index batch. */
static void expire_pass(void *arg)
{
	struct store *st = arg;
	if (st->stopped || st->failed)
		return;
	uint64_t now = px_now_ns();
	if (!st->expire_resume)
		st->expire_started_ns = now;
	struct idx_expiry_pos at = {st->expire_at_ms, st->expire_at_key, st->expire_at_klen};
	int n = idx_expired(st->idx, clock_unix_ms(), st->expire_resume ? &at : NULL, EXPIRE_BATCH,
			    expire_visit, st);
	if (n < 0 || st->expiring >= EXPIRE_INFLIGHT_MAX)
		return; /* the next tick goes on */
	if (n >= EXPIRE_BATCH) {
		px_send(st->px, st->px->id, expire_pass, st); /* more: next iteration */
		return;
	}
	if (now - st->expire_started_ns >= EXPIRE_RESTART_NS)
		st->expire_resume = false;
}

static void expire_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	expire_pass(container_of(t, struct store, expire_timer));
}

/* ---- garbage collection ------------------------------------------------ */

static void gc_read_done(struct log_raw_read *r, int res);

/* Reads the victim from `at` (at least `need` bytes, else GC_CHUNK) into the
 * GC buffer. */
static void gc_read(struct store *st, uint64_t at, uint64_t need)
{
	struct gc *g = &st->gc;
	uint64_t start = at & ~(uint64_t)(FMT_BLOCK - 1);
	uint64_t end = at + (need > GC_CHUNK ? need : GC_CHUNK);
	end = (end + FMT_BLOCK - 1) & ~(uint64_t)(FMT_BLOCK - 1);
	if (end > g->victim.fill)
		end = g->victim.fill; /* commits end on block boundaries */
	if (end - start > g->buf_cap) {
		uint8_t *b;
		if (posix_memalign((void **)&b, FMT_BLOCK, end - start) != 0) {
			g->failed = true;
			g->pos = g->victim.fill;
			return;
		}
		free(g->buf);
		g->buf = b;
		g->buf_cap = end - start;
	}
	g->read = (struct log_raw_read){.segment = g->victim.id,
					.offset = start,
					.len = (uint32_t)(end - start),
					.buf = g->buf,
					.done = gc_read_done};
	g->buf_len = 0;
	g->reading = true;
	log_read_raw(st->log, &g->read);
}

static void gc_read_done(struct log_raw_read *r, int res)
{
	struct gc *g = container_of(r, struct gc, read);
	struct store *st = container_of(g, struct store, gc);
	g->reading = false;
	if (res == -EAGAIN)
		return; /* the next step reads again */
	if (res < 0) {
		g->failed = true; /* logged by the log */
		g->pos = g->victim.fill;
	} else {
		g->buf_off = r->offset;
		g->buf_len = (uint64_t)res;
	}
	gc_step(st);
}

static void gc_reloc_done(struct store_req *req)
{
	struct store *st = req->store;
	struct gc *g = &st->gc;
	g->inflight--;
	g->inflight_bytes -= req->value_len;
	if (req->status == 0) {
		st->stats.gc_records_moved++;
		st->stats.gc_bytes_moved += req->value_len;
	} else if (req->status != -ENOENT) {
		g->failed = true; /* a write failed: the victim stays */
	}
	free(container_of(req, struct gc_req, req));
	gc_step(st);
}

/* Starts moving the PUT record `rec` found at `offset` of the victim.
 * Returns false when out of memory. */
static bool gc_relocate(struct store *st, const struct fmt_record *rec, uint64_t offset)
{
	struct gc *g = &st->gc;
	struct gc_req *x = malloc(sizeof(*x) + rec->key_len + rec->value_len);
	if (x == NULL)
		return false;
	memset(&x->req, 0, sizeof(x->req));
	memcpy(x->data, rec->key, rec->key_len);
	if (rec->value_len)
		memcpy(x->data + rec->key_len, rec->value, rec->value_len);
	x->segment = g->victim.id;
	x->offset = offset;
	x->lsn = rec->lsn;
	x->req.op = STORE_RELOCATE;
	x->req.key = x->data;
	x->req.key_len = rec->key_len;
	x->req.value = x->data + rec->key_len;
	x->req.value_len = rec->value_len;
	x->req.done = gc_reloc_done;
	g->inflight++;
	g->inflight_bytes += rec->value_len;
	store_submit(st, &x->req);
	return true;
}

/* True when the PUT record `rec` at `offset` of the victim is certainly
 * dead: its key's entry is in the key table, known, and points elsewhere.
 * Requests queued on the key run before any relocation and can only move it
 * further away, so the record stays dead.  Otherwise (the key is not cached,
 * or it points here) the relocation request decides, as it must read the
 * index or move the value.  Most records of a victim are overwritten ones:
 * this keeps them off the request path (an allocation, a copy of the value,
 * a message) — a walk of an overwritten 256 MiB segment cost the writers
 * about 0.9 µs per SET while it ran. */
static bool gc_record_dead(struct store *st, const struct fmt_record *rec, uint64_t offset)
{
	const struct kentry *ke = kentry_find(st, rec->key, rec->key_len);
	if (ke == NULL || !ke->known)
		return false;
	return !ke->exists || ke->is_inline || ke->pos.segment != st->gc.victim.id ||
	       ke->pos.offset != offset || ke->pos.lsn != rec->lsn;
}

static void gc_next(void *arg);

/* The walk of the victim is over: queue it for deletion, or give up on it. */
static void gc_finish(struct store *st)
{
	struct gc *g = &st->gc;
	g->active = false;
	if (g->failed && st->stopped)
		return; /* shutdown cut the walk short; the next start walks it again */
	if (g->failed) {
		LOG_WARN("shard %u: garbage collection of log segment %016" PRIx64 " failed; it is"
			 " kept and retried later",
			 st->cfg.shard, g->victim.id);
		g->retry_at_ns = px_now_ns() + GC_RETRY_NS;
		return;
	}
	g->waiting[g->n_waiting++] = (struct gc_waiting){.segment = g->victim.id,
							 .lsn = log_next_lsn(st->log) - 1,
							 .since_ns = px_now_ns(),
							 .write_errors = g->write_errors};
	px_send(st->px, st->px->id, gc_next, st); /* the next victim, without waiting a tick */
}

/* The PUT records of the victim decoded but not yet decided (gc_step): their
 * keys are prefetched together, so the key table's cache misses overlap. */
struct gc_batch {
	struct fmt_record rec[STORE_PREFETCH_MAX]; /* pointing into gc.buf */
	uint64_t pos[STORE_PREFETCH_MAX];
	size_t n;
};

/* Decides the batched records: dead ones are skipped, the others get a
 * relocation request.  Returns false when out of memory: the walk then goes
 * back to the first record not handled. */
static bool gc_batch_run(struct store *st, struct gc_batch *b, unsigned *submitted)
{
	if (b->n == 0 || st->stopped) {
		b->n = 0; /* (stopped: the walk is cut short and the segment kept) */
		return true;
	}
	const uint8_t *keys[STORE_PREFETCH_MAX];
	size_t lens[STORE_PREFETCH_MAX];
	for (size_t i = 0; i < b->n; i++) {
		keys[i] = b->rec[i].key;
		lens[i] = b->rec[i].key_len;
	}
	store_prefetch(st, keys, lens, b->n);
	for (size_t i = 0; i < b->n; i++) {
		if (gc_record_dead(st, &b->rec[i], b->pos[i]))
			continue;
		if (!gc_relocate(st, &b->rec[i], b->pos[i])) {
			st->gc.pos = b->pos[i];
			b->n = 0;
			return false;
		}
		(*submitted)++;
	}
	b->n = 0;
	return true;
}

/* Walks the victim as far as the in-flight limits allow.  Returns true if it
 * made progress. */
static bool gc_step(struct store *st)
{
	struct gc *g = &st->gc;
	if (!g->active || g->reading)
		return false;
	struct gc_batch b;
	b.n = 0;
	unsigned submitted = 0, examined = 0;
	bool progress = false;
	while (g->pos < g->victim.fill && !st->stopped) {
		if (g->inflight >= GC_INFLIGHT_MAX || g->inflight_bytes >= GC_INFLIGHT_BYTES) {
			gc_batch_run(st, &b, &submitted);
			/* A relocation's completion continues: the loop may sleep (it
			 * spun here for seconds while `fsync` commits carried the
			 * relocations). */
			return progress || submitted > 0;
		}
		if (submitted >= GC_SUBMIT_PER_STEP || examined >= GC_EXAMINE_PER_STEP) {
			gc_batch_run(st, &b, &submitted);
			return true; /* the next iteration continues */
		}
		uint64_t avail = g->buf_off + g->buf_len > g->pos ? g->buf_off + g->buf_len - g->pos : 0;
		if (g->pos < g->buf_off || avail < FMT_RECORD_HEADER) {
			if (gc_batch_run(st, &b, &submitted)) /* (before the read reuses the buffer) */
				gc_read(st, g->pos, FMT_RECORD_HEADER);
			return true;
		}
		const uint8_t *h = g->buf + (g->pos - g->buf_off);
		struct fmt_record rec;
		enum fmt_status fs = fmt_decode_record(h, avail, g->victim.epoch32, &rec);
		if (fs == FMT_SHORT) {
			uint32_t klen, vlen;
			memcpy(&klen, h + 24, 4);
			memcpy(&vlen, h + 28, 4);
			uint64_t need = fmt_record_size(le32toh(klen), le32toh(vlen));
			if (g->pos + need <= g->victim.fill && need > avail) {
				if (gc_batch_run(st, &b, &submitted))
					gc_read(st, g->pos, need);
				return true;
			}
		}
		if (fs != FMT_OK) {
			LOG_ERROR("shard %u: log segment %016" PRIx64 " offset %" PRIu64 ": %s; garbage"
				  " collection skips this segment",
				  st->cfg.shard, g->victim.id, g->pos, fmt_status_str(fs));
			g->failed = true;
			g->pos = g->victim.fill;
			break;
		}
		progress = true;
		if (rec.type == FMT_PAD) {
			g->pos += FMT_RECORD_HEADER + rec.value_len;
			continue;
		}
		examined++;
		if (rec.type == FMT_PUT) {
			b.rec[b.n] = rec;
			b.pos[b.n++] = g->pos;
		}
		g->pos += fmt_record_size(rec.key_len, rec.value_len);
		if (b.n == STORE_PREFETCH_MAX && !gc_batch_run(st, &b, &submitted))
			return true; /* out of memory: try again next iteration */
	}
	if (!gc_batch_run(st, &b, &submitted))
		return true;
	if (st->stopped)
		g->failed = true; /* the walk is cut short: keep the segment */
	if (g->inflight == 0 && !g->reading) {
		gc_finish(st);
		progress = true;
	}
	return progress;
}

/* Deletes the walked segments whose relocations are durable in both the log
 * and the persisted index; asks the index to persist when that is what they
 * wait for. */
static void gc_reap(struct store *st)
{
	struct gc *g = &st->gc;
	if (g->n_waiting == 0)
		return;
	uint64_t persisted = idx_persisted_lsn(st->idx);
	uint64_t synced = log_synced_lsn(st->log);
	bool urgent = g->n_waiting >= GC_WAITING_MAX / 2 ||
		      px_now_ns() - g->waiting[0].since_ns > GC_PERSIST_WAIT_NS;
	if (urgent && g->waiting[g->n_waiting - 1].lsn > idx_applied_lsn(st->idx))
		apply_batch(st); /* written behind: a flush must find the relocations */
	unsigned kept = 0;
	bool want_flush = false, want_sync = false;
	for (unsigned i = 0; i < g->n_waiting; i++) {
		struct gc_waiting w = g->waiting[i];
		if (w.write_errors != st->stats.write_errors)
			continue; /* not safe to delete: a later walk will redo it */
		if (w.lsn > persisted || w.lsn > synced) {
			want_flush |= w.lsn > persisted && idx_applied_lsn(st->idx) >= w.lsn;
			want_sync |= w.lsn > synced;
			g->waiting[kept++] = w;
			continue;
		}
		int ret = log_delete_segment(st->log, w.segment);
		if (ret == -EBUSY) {
			g->waiting[kept++] = w;
			continue;
		}
		if (ret < 0 && ret != -ENOENT)
			LOG_WARN("shard %u: cannot delete log segment %016" PRIx64 ": %s",
				 st->cfg.shard, w.segment, strerror(-ret));
		struct seg_usage *u = usage_get(st, w.segment);
		if (u != NULL) {
			u->forget = u->dirty = true;
			st->usage_dirty = true;
			batch_touch(st);
		}
		st->stats.gc_segments_deleted++;
		LOG_DEBUG("shard %u: garbage collection deleted log segment %016" PRIx64,
			  st->cfg.shard, w.segment);
	}
	g->n_waiting = kept;
	if (want_flush && urgent)
		idx_request_flush(st->idx); /* -EBUSY/-EALREADY: the next tick asks again */
	if (want_sync)
		log_sync_now(st->log);
}

/* Picks the sealed segment with the lowest live fraction under the ratio. */
static void gc_pick(struct store *st)
{
	struct gc *g = &st->gc;
	size_t cap = log_get_stats(st->log)->segments;
	uint64_t *ids = malloc((cap ? cap : 1) * sizeof(*ids));
	if (ids == NULL)
		return; /* the next tick tries again */
	size_t n = log_segments(st->log, ids, cap);
	double best_ratio = st->cfg.gc_live_ratio;
	struct log_segment_info best = {0};
	bool found = false;
	for (size_t i = 0; i < n; i++) {
		struct log_segment_info info;
		if (log_segment_info(st->log, ids[i], &info) < 0 || !info.sealed)
			continue;
		bool waiting = false;
		for (unsigned k = 0; k < g->n_waiting; k++)
			waiting |= g->waiting[k].segment == info.id;
		if (waiting)
			continue;
		uint64_t data = info.fill > FMT_SEG_HEADER_SIZE ? info.fill - FMT_SEG_HEADER_SIZE : 0;
		double ratio = data ? (double)usage_live(st, info.id) / (double)data : 0.0;
		if (ratio < best_ratio) {
			best_ratio = ratio;
			best = info;
			found = true;
		}
	}
	free(ids);
	if (!found)
		return;
	g->active = true;
	g->failed = false;
	g->victim = best;
	g->write_errors = st->stats.write_errors;
	g->pos = FMT_SEG_HEADER_SIZE;
	g->buf_off = g->buf_len = 0;
	st->stats.gc_runs++;
	LOG_DEBUG("shard %u: garbage collection walks log segment %016" PRIx64 " (%.0f%% live)",
		  st->cfg.shard, best.id, best_ratio * 100);
	gc_step(st);
}

/* Deletes what may be deleted, then starts the next walk if there is one. */
static void gc_next(void *arg)
{
	struct store *st = arg;
	if (st->stopped || st->failed)
		return;
	gc_reap(st);
	if (!st->gc.active && st->gc.n_waiting < GC_WAITING_MAX && px_now_ns() >= st->gc.retry_at_ns)
		gc_pick(st);
}

static void gc_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	gc_next(container_of(t, struct store, gc_timer));
}

/* ---- recovery ---------------------------------------------------------- */

#define REPLAY_BATCH 65536    /* replayed records written to the index at a time */
#define REPLAY_BUCKETS 65536  /* power of two, for the keys replayed */
#define REPLAY_KEYS_MAX 1048576 /* keys remembered across batches at most */

/* A key met by the replay: its state before its first record (read from the
 * index in one MultiGet for a batch's new keys), then as the records leave
 * it.  Once a batch is written the index holds that state too, so a key is
 * read once per replay (while at most REPLAY_KEYS_MAX are remembered). */
struct replay_key {
	struct replay_key *next;
	bool unread;          /* its state before the batch is still to be read */
	bool exists, is_inline;
	uint64_t segment, expiry_ms;
	uint32_t length;
	uint32_t key_len;
	uint8_t key[];
};

/* A replayed record, kept until its batch is written. */
struct replay_rec {
	struct replay_key *k;
	uint8_t type;
	uint32_t value_len;
	uint64_t lsn, expiry_ms;
	struct log_pos pos;
	uint8_t *value;       /* a copy of an inline value, else NULL */
};

/* Recovery writes the replayed records in batches of REPLAY_BATCH, the
 * previous entries of their new keys read in one MultiGet: one RocksDB read
 * and write per record (each write with its applied_lsn, key count and
 * segment rows) made a replay cost about 11 µs a record, 22 s for 2 M
 * records. */
struct replay {
	struct replay_key *buckets[REPLAY_BUCKETS];
	size_t n_keys;
	struct replay_rec recs[REPLAY_BATCH];
	struct idx_probe probes[REPLAY_BATCH]; /* each key points into its replay_key */
	size_t n;             /* records in the batch */
};

/* Drops the batch's records, and the keys too when `keys` (only once the
 * index holds what they say, or on failure). */
static void replay_forget(struct replay *rp, bool keys)
{
	for (size_t i = 0; i < rp->n; i++)
		free(rp->recs[i].value);
	rp->n = 0;
	if (!keys)
		return;
	rp->n_keys = 0;
	for (size_t i = 0; i < REPLAY_BUCKETS; i++)
		while (rp->buckets[i] != NULL) {
			struct replay_key *k = rp->buckets[i];
			rp->buckets[i] = k->next;
			free(k);
		}
}

/* The batch's entry for `key`, created unread. */
static struct replay_key *replay_key_get(struct replay *rp, const uint8_t *key, size_t len)
{
	struct replay_key **pp = &rp->buckets[hash_key(key, len) & (REPLAY_BUCKETS - 1)];
	for (; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->key_len == len && memcmp((*pp)->key, key, len) == 0)
			return *pp;
	struct replay_key *k = malloc(sizeof(*k) + len);
	if (k == NULL)
		return NULL;
	*k = (struct replay_key){.unread = true, .key_len = (uint32_t)len};
	memcpy(k->key, key, len);
	*pp = k;
	rp->n_keys++;
	return k;
}

/* Applies one record of the batch to st->batch, the key count and the live
 * bytes, reading and updating its key's state. */
static void replay_apply(struct store *st, const struct replay_rec *r)
{
	struct replay_key *k = r->k;
	bool existed = k->exists;
	uint64_t old_expiry = existed ? k->expiry_ms : 0;
	if (existed && !k->is_inline)
		usage_add(st, k->segment, -(int64_t)k->length);
	if (r->type == FMT_PUT) {
		struct idx_entry e = {.expiry_ms = r->expiry_ms,
				      .lsn = r->lsn,
				      .value_len = r->value_len,
				      .is_inline = r->value_len <= st->cfg.inline_max,
				      .value = r->value,
				      .segment = r->pos.segment,
				      .offset = r->pos.offset,
				      .length = r->pos.length};
		idx_batch_put(st->batch, k->key, k->key_len, &e, old_expiry);
		if (!e.is_inline)
			usage_add(st, r->pos.segment, r->pos.length);
		st->keys += !existed;
		k->exists = true;
		k->is_inline = e.is_inline;
		k->segment = r->pos.segment;
		k->length = r->pos.length;
		k->expiry_ms = r->expiry_ms;
	} else if (existed) {
		idx_batch_delete(st->batch, k->key, k->key_len, old_expiry);
		st->keys--;
		k->exists = false;
	}
}

/* Reads the batch's keys from the index, applies its records in order and
 * writes them, with applied_lsn at the last. */
static int replay_write(struct store *st)
{
	struct replay *rp = st->replay;
	if (rp->n == 0)
		return 0;
	size_t n_probes = 0;
	for (size_t i = 0; i < rp->n; i++) {
		struct replay_key *k = rp->recs[i].k;
		if (k->unread) {
			k->unread = false;
			rp->probes[n_probes++] = (struct idx_probe){.key = k->key, .klen = k->key_len};
		}
	}
	int ret = idx_get_many(st->idx, rp->probes, n_probes);
	for (size_t i = 0; i < n_probes && ret == 0; i++) {
		const struct idx_probe *p = &rp->probes[i];
		struct replay_key *k = container_of((const uint8_t *)p->key, struct replay_key, key);
		if (p->status == 0)
			*k = (struct replay_key){.next = k->next,
						 .exists = true,
						 .is_inline = p->e.is_inline,
						 .segment = p->e.segment,
						 .length = p->e.length,
						 .expiry_ms = p->e.expiry_ms,
						 .key_len = k->key_len};
	}
	if (ret == 0) {
		for (size_t i = 0; i < rp->n; i++)
			replay_apply(st, &rp->recs[i]);
		usage_flush(st, st->batch);
		ret = idx_write(st->idx, st->batch, rp->recs[rp->n - 1].lsn, st->keys);
	}
	idx_batch_clear(st->batch);
	replay_forget(rp, ret < 0 || rp->n_keys >= REPLAY_KEYS_MAX);
	return ret;
}

/* Recovery: adds one replayed record to the batch (replay_write). */
static int replay_record(void *arg, const struct fmt_record *rec, const struct log_pos *pos)
{
	struct store *st = arg;
	struct replay *rp = st->replay;
	if (rec->type == FMT_DROP) {
		int ret = replay_write(st); /* everything before the DROP first */
		if (ret < 0)
			return ret;
		replay_forget(rp, true); /* the keys it remembers are gone */
		st->keys = 0;
		for (size_t i = 0; i < st->n_usage; i++)
			st->usage[i].live = 0; /* idx_drop_all removes their rows */
		return idx_drop_all(st->idx, rec->lsn);
	}
	struct replay_key *k = replay_key_get(rp, rec->key, rec->key_len);
	if (k == NULL)
		return -ENOMEM;
	struct replay_rec *r = &rp->recs[rp->n];
	*r = (struct replay_rec){.k = k,
				 .type = (uint8_t)rec->type,
				 .value_len = rec->value_len,
				 .lsn = rec->lsn,
				 .expiry_ms = rec->expiry_ms,
				 .pos = *pos};
	if (rec->type == FMT_PUT && rec->value_len <= st->cfg.inline_max) {
		r->value = malloc(rec->value_len ? rec->value_len : 1);
		if (r->value == NULL)
			return -ENOMEM;
		memcpy(r->value, rec->value, rec->value_len);
	}
	st->stats.records_replayed++;
	if (++rp->n >= REPLAY_BATCH)
		return replay_write(st);
	return 0;
}

/* Drops the usage rows of segments the log no longer has (deleted by GC
 * before a crash let the row survive). */
static int usage_prune(struct store *st)
{
	for (size_t i = 0; i < st->n_usage; i++) {
		struct log_segment_info info;
		if (log_segment_info(st->log, st->usage[i].id, &info) == -ENOENT) {
			st->usage[i].forget = st->usage[i].dirty = true;
			st->usage_dirty = true;
		}
	}
	if (!st->usage_dirty)
		return 0;
	usage_flush(st, st->batch);
	int ret = idx_write(st->idx, st->batch, idx_applied_lsn(st->idx), st->keys);
	idx_batch_clear(st->batch);
	return ret;
}

int store_open(struct store **out, struct px *px, const struct store_config *cfg, char *err,
	       size_t errlen)
{
	struct store *st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	st->px = px;
	st->cfg = *cfg;
	st->lock_fd = -1;
	snprintf(st->dir, sizeof(st->dir), "%s", cfg->dir);
	st->cfg.dir = st->dir;
	int ret = table_grow(st);
	st->batch = idx_batch_new();
	if (ret < 0 || st->batch == NULL) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	if (mkdir(st->dir, 0755) != 0 && errno != EEXIST) {
		ret = -errno;
		snprintf(err, errlen, "cannot create %s: %s", st->dir, strerror(errno));
		goto fail;
	}
	ret = layout_lock_shard(st->dir, &st->lock_fd, "stop it first, or point storage.dir elsewhere",
	                        err, errlen);
	if (ret < 0)
		goto fail;
	char path[FS_PATH_MAX];
	snprintf(path, sizeof(path), "%s/index", st->dir);
	ret = idx_open(&st->idx, cfg->shared, path, err, errlen);
	if (ret < 0)
		goto fail;
	st->keys = idx_key_count(st->idx);
	if (idx_segments_live(st->idx, usage_load, st) < 0) {
		snprintf(err, errlen, "cannot read the segment rows of %s/index (see the log above)",
			 st->dir);
		ret = -EIO;
		goto fail;
	}

	snprintf(path, sizeof(path), "%s/log", st->dir);
	struct log_config lc = {.dir = path,
				.shard = cfg->shard,
				.segment_size = cfg->segment_size,
				.durability = cfg->durability};
	st->replay = calloc(1, sizeof(*st->replay));
	if (st->replay == NULL) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	ret = log_open(&st->log, px, &lc, idx_applied_lsn(st->idx) + 1, replay_record, st, err,
		       errlen);
	if (ret == 0 && (ret = replay_write(st)) < 0)
		snprintf(err, errlen, "cannot write the index of %s while replaying the log: %s"
			 " (see the log above)", st->dir, strerror(-ret));
	replay_forget(st->replay, true);
	free(st->replay);
	st->replay = NULL;
	if (ret < 0)
		goto fail;
	st->applied_keys = st->keys;
	st->batch_lsn = idx_applied_lsn(st->idx);
	st->checkpoint_lsn = log_next_lsn(st->log);
	st->apply_slice = APPLY_SLICE;
	st->apply_keys = st->cfg.cache_bytes / APPLY_KEY_BYTES;
	if (st->apply_keys > APPLY_KEYS_MAX)
		st->apply_keys = APPLY_KEYS_MAX;
	if (st->apply_keys < APPLY_SLICE)
		st->apply_keys = APPLY_SLICE;
	if (usage_prune(st) < 0) {
		snprintf(err, errlen, "cannot write the index of %s (see the log above)", st->dir);
		ret = -EIO;
		goto fail;
	}
	st->hook.fn = store_hook;
	px_hook_add(px, &st->hook);
	px_timer_start(px, &st->expire_timer, EXPIRE_PERIOD_NS, EXPIRE_PERIOD_NS, expire_tick);
	if (cfg->gc_live_ratio > 0)
		px_timer_start(px, &st->gc_timer, GC_PERIOD_NS, GC_PERIOD_NS, gc_tick);
	*out = st;
	return 0;
fail:
	store_close(st);
	return ret;
}

int store_checkpoint(struct store *st)
{
	apply_batch(st);
	return idx_request_flush(st->idx);
}

uint64_t store_key_count(struct store *st)
{
	resolve_blind(st);
	return st->keys;
}

void store_get_stats(struct store *st, struct store_stats *out)
{
	resolve_blind(st);
	*out = st->stats;
	out->keys = st->keys;
	out->index_batch_keys = st->batch_records;
	if (st->log != NULL) {
		const struct log_stats *ls = log_get_stats(st->log);
		out->log_bytes = ls->log_bytes;
		out->commits = ls->commits;
		out->records = ls->records;
		out->fsyncs = ls->fsyncs;
		out->write_errors = ls->write_errors;
		out->segments_recycled = ls->segments_recycled;
		out->spare_bytes_zeroed = ls->spare_bytes_zeroed;
		out->tail_bytes_zeroed = ls->tail_bytes_zeroed;
	}
	if (st->idx != NULL) {
		struct idx_stats is;
		idx_get_stats(st->idx, &is);
		out->index_block_misses = is.block_cache_misses;
		out->index_bytes = is.memtable_bytes + is.sst_bytes;
	}
	out->live_bytes = 0;
	for (size_t i = 0; i < st->n_usage; i++)
		out->live_bytes += seg_live(&st->usage[i]);
}

void store_stop(struct store *st)
{
	st->stopped = true;
	if (px_timer_armed(&st->expire_timer))
		px_timer_stop(st->px, &st->expire_timer);
	if (px_timer_armed(&st->gc_timer))
		px_timer_stop(st->px, &st->gc_timer);
	if (px_timer_armed(&st->apply_timer))
		px_timer_stop(st->px, &st->apply_timer);
	if (st->log != NULL)
		log_stop(st->log);
}

bool store_busy(const struct store *st)
{
	return st->inflight_reqs > 0 || st->batch_dirty || px_timer_armed(&st->expire_timer) ||
	       px_timer_armed(&st->gc_timer) || px_timer_armed(&st->apply_timer) ||
	       st->gc.reading ||
	       (st->log != NULL && log_busy(st->log));
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	if (st->hook.fn != NULL)
		px_hook_remove(st->px, &st->hook);
	log_close(st->log);
	if (st->idx != NULL)
		idx_close(st->idx);
	if (st->batch != NULL)
		idx_batch_free(st->batch);
	for (size_t i = 0; i < st->n_buckets; i++)
		for (struct kentry *ke = st->buckets[i], *next; ke != NULL; ke = next) {
			next = ke->hnext;
			blob_unref(ke->value);
			free(ke);
		}
	while (st->free_writes != NULL) {
		struct pending_write *pw = st->free_writes;
		st->free_writes = pw->next_free;
		free(pw);
	}
	free(st->buckets);
	free(st->blind);
	free(st->probes);
	free(st->usage);
	free(st->gc.buf);
	free(st->expire_at_key);
	if (st->lock_fd >= 0)
		close(st->lock_fd); /* releases the flock */
	free(st);
}
