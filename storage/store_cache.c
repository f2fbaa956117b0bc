/* store_cache: the store's key table and its value cache (store_int.h).
 *
 * The key table is a chained hash table of struct kentry, doubled when it
 * holds as many entries as buckets.  The cache is the set of known kentries
 * on the CLOCK list, charged by their key, value and batch entry
 * (st_kentry_charge); eviction frees idle ones from the front until
 * cache_used fits cfg.cache_bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/pool.h"
#include "storage/store_int.h"

#include <pthread.h>

/* ---- small blobs (store_int.h) ------------------------------------------- */

_Thread_local struct blob_cache st_blob_cache;

static pthread_key_t blob_key;
static pthread_once_t blob_once = PTHREAD_ONCE_INIT;

/* Thread-exit destructor: frees the thread's list. */
static void blob_cache_free(void *unused)
{
	(void)unused;
	void *b;
	while ((b = freelist_pop(&st_blob_cache.list, BLOB_SMALL)) != NULL)
		free(b);
}

static void blob_key_init(void)
{
	if (pthread_key_create(&blob_key, blob_cache_free) != 0)
		blob_key = (pthread_key_t)-1;
}

void st_blob_cache_register(void)
{
	st_blob_cache.registered = true;
	pthread_once(&blob_once, blob_key_init);
	/* (a thread whose key could not be made keeps its list to the end: at
	 * most BLOB_CACHE_MAX small blobs) */
	if (blob_key != (pthread_key_t)-1)
		pthread_setspecific(blob_key, &st_blob_cache);
}

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
	st_blob_unref(ke->value);
	st_blob_unref(ke->whole);
	free(ke->sample);
	free(ke);
}

/* Puts `ke` at the back of the CLOCK list (the front is evicted first). */
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

/* Second chance (CLOCK): an entry used since eviction last passed it goes to
 * the back instead of being freed; so a request touches no list, only its
 * entry's `referenced` bit.  A busy entry (requests queued, writes pending,
 * pinned, elements hanging on it) leaves the list: st_kentry_release puts it
 * back once idle.  A call moves at most CACHE_EVICT_SKIPS entries to the
 * back (the budget is soft: busy entries count but cannot be evicted). */
static void cache_evict(struct store *st)
{
	unsigned skips = 0;
	while (st->cache_used > st->cfg.cache_bytes && st->lru_head != NULL) {
		struct kentry *ke = st->lru_head;
		if (ke->head != NULL || ke->pending > 0 || ke->pins > 0 || ke->n_elems > 0) {
			lru_remove(st, ke);
			continue;
		}
		if (ke->referenced) {
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

/* st_kentry_release without the eviction it may allow. */
static void kentry_park(struct store *st, struct kentry *ke)
{
	if (ke->head != NULL || ke->pending > 0 || ke->pins > 0 || ke->n_elems > 0)
		return;
	if (!ke->known) {
		kentry_free(st, ke);
		return;
	}
	if (!ke->in_lru)
		lru_append(st, ke);
}

void st_kentry_release(struct store *st, struct kentry *ke)
{
	kentry_park(st, ke);
	cache_evict(st);
}

void st_kentry_drop(struct store *st, struct kentry *ke)
{
	if (ke->head != NULL || ke->pending > 0 || ke->pins > 0 || ke->n_elems > 0)
		return;
	kentry_free(st, ke);
}

void st_kentry_release2(struct store *st, struct kentry *a, struct kentry *b)
{
	kentry_park(st, a);
	kentry_park(st, b);
	cache_evict(st);
}

int st_table_grow(struct store *st)
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

struct kentry *st_kentry_find(struct store *st, const uint8_t *key, size_t len)
{
	uint64_t h = st_hash_key(key, len);
	for (struct kentry *ke = st->buckets[h & (st->n_buckets - 1)]; ke != NULL; ke = ke->hnext)
		if (ke->hash == h && ke->key_len == len && memcmp(ke->key, key, len) == 0)
			return ke;
	return NULL;
}

struct kentry *st_kentry_get(struct store *st, const uint8_t *key, size_t len)
{
	uint64_t h = st_hash_key(key, len);
	for (struct kentry *ke = st->buckets[h & (st->n_buckets - 1)]; ke != NULL; ke = ke->hnext)
		if (ke->hash == h && ke->key_len == len && memcmp(ke->key, key, len) == 0) {
			ke->referenced = true;
			return ke;
		}
	if (st->n_keys_cached >= st->n_buckets && st_table_grow(st) < 0)
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
	st_kentry_charge(st, ke);
	return ke;
}

/* Sets ke from the index's answer: ret 0 (*e, with the inline value's copy
 * `inline_value`, which this frees) or -ENOENT.  A key of a database retired
 * meanwhile (FLUSHDB, FLUSHALL) is absent whatever the index said. */
static int kentry_fill(struct store *st, struct kentry *ke, int ret, const struct idx_entry *e,
                       uint8_t *inline_value)
{
	if (ret == -ENOENT || st_db_of_id(st, st_ident_db(ke->key)) < 0) {
		free(inline_value);
		st_kentry_set_absent(ke);
		return 0;
	}
	if (ret < 0) {
		free(inline_value);
		return ret == -ENOMEM ? -ENOMEM : -EIO;
	}
	st_blob_unref(ke->value);
	ke->value = NULL;
	st_blob_unref(ke->whole); /* (of what the kentry knew before: reloaded now) */
	ke->whole = NULL;
	free(ke->sample);
	ke->sample = NULL;
	bool coll = !st_is_elem(ke) && e->type != FMT_TYPE_STRING;
	if (e->is_inline && !coll) {
		ke->value = st_blob_new(inline_value, e->value_len);
		if (ke->value == NULL) {
			free(inline_value);
			return -ENOMEM;
		}
	}
	free(inline_value);
	ke->exists = true;
	ke->type = st_is_elem(ke) ? FMT_TYPE_STRING : e->type;
	ke->is_inline = e->is_inline || coll;
	ke->expiry_ms = e->expiry_ms;
	ke->idx_expiry_ms = e->expiry_ms;
	ke->value_len = e->value_len;
	ke->version = e->version;
	ke->count = e->count;
	ke->enc = e->enc;
	ke->pos = (struct log_pos){
	    .segment = e->segment, .offset = e->offset, .length = e->length, .lsn = e->lsn};
	ke->idx_ptr = !ke->is_inline;
	ke->idx_pos = ke->pos;
	ke->known = true;
	st_kentry_charge(st, ke);
	return 0;
}

/* The index's answer from memory: 0 with ke set, -EWOULDBLOCK when it needs
 * a read of the index's files, or an error. */
static int kentry_load_cached(struct store *st, struct kentry *ke)
{
	if (st_db_of_id(st, st_ident_db(ke->key)) < 0)
		return kentry_fill(st, ke, -ENOENT, NULL, NULL); /* retired: garbage rows */
	struct idx_entry e;
	uint8_t *inline_value = NULL;
	int ret = idx_get(st->idx, ke->key, ke->key_len, IDX_CACHED_ONLY, &e, &inline_value);
	if (ret == -EWOULDBLOCK)
		return ret;
	return kentry_fill(st, ke, ret, &e, inline_value);
}

int st_kentry_load(struct store *st, struct kentry *ke)
{
	int ret = kentry_load_cached(st, ke);
	if (ret != -EWOULDBLOCK)
		return ret;
	st->stats.index_blocking_reads++;
	struct idx_entry e;
	uint8_t *inline_value = NULL;
	ret = idx_get(st->idx, ke->key, ke->key_len, IDX_BLOCKING, &e, &inline_value);
	return kentry_fill(st, ke, ret, &e, inline_value);
}

/* ---- lookups off the loop ------------------------------------------------ */

/* A key's index entry being read by the lookup threads for a request. */
struct st_lookup {
	struct idx_lookup l; /* the index's part (its list links these) */
	struct store *st;
	struct kentry *ke; /* kept: it heads a queue (req waits in it) */
	struct store_req *req;
};

/* Probes: a lookup first tries the block cache on the loop (a RocksDB read
 * that gives up at the first block not cached), which answers at once when
 * the cache holds the entry's blocks and costs a filter check and an index
 * seek for nothing when it does not -- a quarter of the loop's CPU with the
 * index ten times its cache (perf, GETs of 20 M keys, 128 MiB of block
 * cache), where the lookup threads then make the same read again.  So the
 * loop counts how often its probes answer, PROBE_WINDOW at a time; after a
 * window of mostly misses it probes one lookup in PROBE_SAMPLE only (the
 * others go straight to the threads) until a window of sampled probes
 * answers often again. */
#define PROBE_WINDOW 256
#define PROBE_SAMPLE 16
#define PROBE_WORTH  4 /* probes pay while one in this many answers */

static bool probe_due(struct store *st)
{
	if (!st->probe.rare)
		return true;
	if (++st->probe.skip < PROBE_SAMPLE)
		return false;
	st->probe.skip = 0;
	return true;
}

static void probe_note(struct store *st, bool answered)
{
	st->probe.tries++;
	st->probe.hits += answered;
	if (st->probe.tries < PROBE_WINDOW)
		return;
	st->probe.rare = st->probe.hits * PROBE_WORTH < st->probe.tries;
	st->probe.tries = st->probe.hits = 0;
}

int st_kentry_lookup(struct store *st, struct kentry *ke, struct store_req *req)
{
	if (ke->loading)
		return 1; /* the same request names the key twice: one lookup */
	if (!st->lookups_async)
		return st_kentry_load(st, ke); /* (counted in index_blocking_reads) */
	if (probe_due(st)) {
		int ret = kentry_load_cached(st, ke);
		probe_note(st, ret != -EWOULDBLOCK);
		if (ret != -EWOULDBLOCK)
			return ret;
	} else if (st_db_of_id(st, st_ident_db(ke->key)) < 0) {
		return kentry_fill(st, ke, -ENOENT, NULL, NULL); /* retired: garbage rows */
	} else {
		st->stats.index_probes_skipped++;
	}
	struct st_lookup *sl = malloc(sizeof(*sl));
	if (sl == NULL)
		return -ENOMEM;
	sl->l = (struct idx_lookup){
	    .ix = st->idx, .key = ke->key, .klen = ke->key_len, .owner = &st->lookup_owner};
	sl->st = st;
	sl->ke = ke;
	sl->req = req;
	ke->loading = true;
	req->lookups_missing++;
	if (st->lookup_out_last != NULL)
		st->lookup_out_last->next = &sl->l;
	else
		st->lookup_out = &sl->l;
	st->lookup_out_last = &sl->l;
	st->n_lookup_out++;
	st->lookups_inflight++;
	st->stats.index_async_reads++;
	return 1;
}

void st_lookups_submit(struct store *st)
{
	if (st->lookup_out == NULL)
		return;
	idx_lookup_submit(idx_shared_of(st->idx), st->lookup_out, st->lookup_out_last,
	                  st->n_lookup_out);
	st->lookup_out = st->lookup_out_last = NULL;
	st->n_lookup_out = 0;
}

/* On the store's proactor: a list of answers. */
static void lookups_back(void *arg)
{
	struct idx_lookup *l = arg;
	struct store *st = container_of(l, struct st_lookup, l)->st;
	while (l != NULL) {
		struct idx_lookup *next = l->next;
		struct st_lookup *sl = container_of(l, struct st_lookup, l);
		struct kentry *ke = sl->ke;
		struct store_req *req = sl->req;
		st->lookups_inflight--;
		st->lookup_blocks_read += l->blocks_read;
		ke->loading = false;
		int ret = 0;
		if (ke->known) /* (cannot happen: its queue waited) keep the newer state */
			free(l->value);
		else
			ret = kentry_fill(st, ke, l->status, &l->e, l->value);
		free(sl);
		if (st_is_elem(ke))
			ret = 0; /* a prefetched element (st_call_run): the call
			          * reads it again if it failed */
		if (ret < 0 && req->lookup_err == 0)
			req->lookup_err = ret;
		if (--req->lookups_missing == 0)
			st_req_looked_up(st, req);
		l = next;
	}
}

/* On a lookup thread: the list goes to the store's proactor. */
static void lookups_deliver(struct idx_lookup *list, void *arg)
{
	struct store *st = arg;
	pool_run_on(st->px->pool, st->px->id, lookups_back, list);
}

void st_lookups_init(struct store *st)
{
	st->lookup_owner = (struct idx_lookup_owner){.deliver = lookups_deliver, .arg = st};
	st->lookups_async = st->px->pool != NULL && idx_lookups_on(st->idx);
}

void st_forget_all_keys(struct store *st)
{
	for (size_t i = 0; i < st->n_buckets; i++)
		for (struct kentry *ke = st->buckets[i]; ke != NULL; ke = ke->hnext)
			ke->known = false;
}

/* Three passes, so each waits at most for the slowest load of the one
 * before: the buckets, then the entries at their heads, then (found entries)
 * the cached value and the batch entry that a write replaces. */
void st_prefetch_hashes(struct store *st, const uint64_t *hash, size_t n)
{
	struct kentry **slot[STORE_PREFETCH_MAX];
	if (n > STORE_PREFETCH_MAX)
		n = STORE_PREFETCH_MAX;
	for (size_t i = 0; i < n; i++) {
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

void store_prefetch_elems(struct store *st, unsigned db, const uint8_t *const *keys,
                          const size_t *lens, const uint8_t *const *elems, const size_t *elens,
                          uint32_t writes, size_t n)
{
	uint64_t hash[STORE_PREFETCH_MAX];
	uint8_t ident[STORE_PREFETCH_IDENT];
	size_t m = 0;
	if (db >= st->cfg.databases)
		return;
	uint32_t id = st_db_id(st, db);
	for (size_t i = 0; i < n && i < STORE_PREFETCH_MAX; i++) {
		if (FMT_ELEM_IDENT_HEAD + lens[i] + elens[i] > sizeof(ident))
			continue;
		size_t len = fmt_key_ident(ident, id, keys[i], lens[i]);
		const struct kentry *ke = st_kentry_find(st, ident, len);
		if (ke == NULL || !ke->known || !ke->exists || !st_is_coll(ke) ||
		    (ke->whole != NULL && !(writes >> i & 1)))
			continue;
		len = fmt_elem_ident(ident, id, keys[i], lens[i], ke->version, elems[i], elens[i]);
		hash[m++] = st_hash_key(ident, len);
	}
	st_prefetch_hashes(st, hash, m);
}

void store_prefetch(struct store *st, unsigned db, const uint8_t *const *keys,
                    const size_t *lens, size_t n)
{
	uint64_t hash[STORE_PREFETCH_MAX];
	if (n > STORE_PREFETCH_MAX)
		n = STORE_PREFETCH_MAX;
	if (db >= st->cfg.databases)
		return;
	uint8_t head[FMT_KEY_IDENT_HEAD];
	fmt_key_ident(head, st_db_id(st, db), NULL, 0);
	uint64_t h0 = st_hash_update(ST_HASH_SEED, head, sizeof(head));
	for (size_t i = 0; i < n; i++)
		hash[i] = st_hash_finish(st_hash_update(h0, keys[i], lens[i]));
	st_prefetch_hashes(st, hash, n);
}
