/* index_reclaim: the shared RocksDB state, the compactor thread that runs the
 * ranges the shards hint, and the compaction filter that drops garbage rows
 * (index.h, "Garbage"). */
#include "storage/index_int.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "service/runtime/logging.h"

/* ---- shared state ------------------------------------------------------ */

/* RocksDB's bytewise order. */
static int bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* Runs the jobs of one index in `jobs` (a list, oldest first) as one range
 * spanning them all, marking them done. */
static void compact_run(struct compact_job *jobs, struct idx *ix)
{
	const uint8_t *begin = NULL, *end = NULL;
	size_t begin_len = 0, end_len = 0;
	uint32_t n = 0;
	for (struct compact_job *j = jobs; j != NULL; j = j->next) {
		if (j->ix != ix)
			continue;
		const uint8_t *b = j->keys, *e = j->keys + j->begin_len;
		if (begin == NULL || bytes_cmp(b, j->begin_len, begin, begin_len) < 0)
			begin = b, begin_len = j->begin_len;
		if (end == NULL || bytes_cmp(e, j->end_len, end, end_len) > 0)
			end = e, end_len = j->end_len;
		n++;
	}
	if (!atomic_load(&ix->closing)) {
		rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();
		rocksdb_compactoptions_set_exclusive_manual_compaction(co, 0);
		rocksdb_compact_range_opt(ix->db, co, (const char *)begin, begin_len,
		                          (const char *)end, end_len);
		rocksdb_compactoptions_destroy(co);
		atomic_fetch_add(&ix->compactions, 1);
	}
	atomic_fetch_sub(&ix->compact_pending, n);
}

static void *compactor_main(void *arg)
{
	struct idx_shared *sh = arg;
	pthread_setname_np(pthread_self(), "ringkv-compact");
	for (;;) {
		uint64_t v;
		ssize_t r = read(sh->compact_efd, &v, sizeof(v));
		if (r < 0 && errno != EINTR && errno != EAGAIN) {
			LOG_ERROR(
			    "index compactor: reading its eventfd failed: %s; garbage space comes"
			    " back with RocksDB's own compactions only",
			    strerror(errno));
			break;
		}
		struct compact_job *jobs = atomic_exchange(&sh->compact_jobs, NULL), *old = NULL;
		while (jobs != NULL) { /* oldest first */
			struct compact_job *next = jobs->next;
			jobs->next = old;
			old = jobs;
			jobs = next;
		}
		for (struct compact_job *j = old; j != NULL; j = j->next) {
			bool first = true; /* the first job of its index runs them all */
			for (struct compact_job *p = old; p != j && first; p = p->next)
				first = p->ix != j->ix;
			if (first)
				compact_run(j, j->ix);
		}
		while (old != NULL) {
			struct compact_job *next = old->next;
			free(old);
			old = next;
		}
		if (atomic_load(&sh->compact_stop))
			break;
	}
	return NULL;
}

int idx_shared_create(struct idx_shared **out, uint64_t cache_bytes, int background_threads,
                      char *err, size_t errlen)
{
	*out = NULL;
	if (background_threads < 1) {
		snprintf(err, errlen, "index: background_threads is %d; it must be at least 1",
		         background_threads);
		return -EINVAL;
	}
	struct idx_shared *sh = calloc(1, sizeof(*sh));
	if (sh == NULL)
		goto nomem;
	sh->compact_efd = -1;
	pthread_mutex_init(&sh->lookup_lock, NULL);
	pthread_cond_init(&sh->lookup_cond, NULL);
	sh->cache = rocksdb_cache_create_lru((size_t)cache_bytes);
	sh->env = rocksdb_create_default_env();
	if (sh->cache == NULL || sh->env == NULL)
		goto nomem;
	sh->compaction_threads = background_threads;
	sh->flush_threads = background_threads / 4 > 1 ? background_threads / 4 : 1;
	rocksdb_env_set_background_threads(sh->env, sh->compaction_threads);
	rocksdb_env_set_high_priority_background_threads(sh->env, sh->flush_threads);
	sh->compact_efd = eventfd(0, EFD_CLOEXEC);
	int ret =
	    sh->compact_efd < 0 ? errno : pthread_create(&sh->compactor, NULL, compactor_main, sh);
	if (ret != 0) {
		snprintf(err, errlen,
		         "index: cannot start the compactor thread: %s: check the"
		         " process's thread and file limits (ulimit -u, ulimit -n)",
		         strerror(ret));
		idx_shared_destroy(sh);
		return -ret;
	}
	sh->compactor_started = true;
	*out = sh;
	return 0;
nomem:
	idx_shared_destroy(sh);
	snprintf(err, errlen, "index: out of memory creating the block cache");
	return -ENOMEM;
}

void idx_shared_destroy(struct idx_shared *sh)
{
	if (sh == NULL)
		return;
	ix_lookup_stop(sh, sh->n_lookup_threads);
	if (sh->compactor_started) {
		atomic_store(&sh->compact_stop, true);
		uint64_t one = 1;
		if (write(sh->compact_efd, &one, sizeof(one)) == sizeof(one))
			pthread_join(sh->compactor, NULL);
		else
			pthread_detach(sh->compactor); /* cannot happen: a fresh eventfd */
	}
	if (sh->compact_efd >= 0)
		close(sh->compact_efd);
	if (sh->cache)
		rocksdb_cache_destroy(sh->cache);
	/* The default Env's pools stay: joining them would stop them for good,
	 * and a later idx_shared_create in this process would get none. */
	if (sh->env)
		rocksdb_env_destroy(sh->env);
	pthread_mutex_destroy(&sh->lookup_lock);
	pthread_cond_destroy(&sh->lookup_cond);
	free(sh);
}

/* ---- garbage ----------------------------------------------------------- */

/* One compaction's filter (index.h, "Garbage").  It judges by what the SST
 * files hold (kPersistedTier): the database map read when the compaction
 * starts, and each collection's key row, read once for the run of its
 * element rows (they are contiguous). */
struct garbage_filter {
	struct idx *ix;
	rocksdb_t *db;             /* ix->filter_db as the compaction started */
	rocksdb_readoptions_t *ro; /* kPersistedTier, its own: not shared across threads */
	uint32_t *ids;             /* the persisted map; NULL: none persisted, nothing retired */
	uint32_t n_ids;
	uint8_t *row;         /* KEY_BUF_SIZE: the key row last looked up ... */
	size_t row_len;       /* ... (0: none) */
	bool row_is_coll;     /* ... it exists and holds a collection ... */
	uint64_t row_version; /* ... of this version */
	bool row_error;       /* ... or it could not be read: keep its elements */
};

static bool filter_db_live(const struct garbage_filter *f, uint32_t db)
{
	if (f->ids == NULL)
		return true;
	for (uint32_t i = 0; i < f->n_ids; i++)
		if (f->ids[i] == db)
			return true;
	return false;
}

/* True if the element row `key` belongs to no live collection: its database
 * is retired, its key row is gone, holds a string, or another version. */
static bool filter_elem_dead(struct garbage_filter *f, const uint8_t *key, size_t klen)
{
	struct fmt_ident id;
	if (!fmt_ident_parse(key, klen, &id))
		return false; /* not ours to judge */
	if (!filter_db_live(f, id.db))
		return true;
	/* The key row, built in place of the one looked up last when it differs. */
	uint8_t head[KEY_ROW_HEAD];
	ix_key_row_head(head, id.db, idx_key_hash(id.key, id.key_len));
	size_t row_len = KEY_ROW_HEAD + id.key_len;
	if (row_len != f->row_len || memcmp(head, f->row, KEY_ROW_HEAD) != 0 ||
	    memcmp(id.key, f->row + KEY_ROW_HEAD, id.key_len) != 0) {
		memcpy(f->row, head, KEY_ROW_HEAD);
		memcpy(f->row + KEY_ROW_HEAD, id.key, id.key_len);
		f->row_len = row_len;
		char *rerr = NULL;
		size_t vlen;
		char *v = rocksdb_get(f->db, f->ro, (const char *)f->row, row_len, &vlen, &rerr);
		struct idx_entry e;
		bool decoded = v != NULL && ix_entry_decode((const uint8_t *)v, vlen, &e);
		/* A read error or a corrupt entry: judge none of its elements. */
		f->row_error = rerr != NULL || (v != NULL && !decoded);
		f->row_is_coll = decoded && e.type != FMT_TYPE_STRING;
		f->row_version = f->row_is_coll ? e.version : 0;
		rocksdb_free(rerr);
		rocksdb_free(v);
	}
	if (f->row_error)
		return false;
	return !f->row_is_coll || f->row_version != id.version;
}

static unsigned char garbage_filter_fn(void *state, int level, const char *key, size_t klen,
                                       const char *value, size_t vlen, char **new_value,
                                       size_t *new_vlen, unsigned char *value_changed)
{
	struct garbage_filter *f = state;
	const uint8_t *k = (const uint8_t *)key;
	bool dead = false;
	(void)level, (void)value, (void)vlen, (void)new_value, (void)new_vlen;
	*value_changed = 0;
	if (klen == 0)
		return 0;
	switch (k[0]) {
	case PREFIX_KEY:
		dead = klen >= KEY_ROW_HEAD && !filter_db_live(f, fmt_get_be32(k + 1));
		break;
	case PREFIX_EXPIRY:
		dead = klen >= EXPIRY_ROW_HEAD && !filter_db_live(f, fmt_get_be32(k + 9));
		break;
	case PREFIX_ELEM:
		dead = filter_elem_dead(f, k, klen);
		break;
	}
	if (dead)
		atomic_fetch_add_explicit(&f->ix->garbage_dropped, 1, memory_order_relaxed);
	return dead;
}

static void garbage_filter_free(void *state)
{
	struct garbage_filter *f = state;
	rocksdb_readoptions_destroy(f->ro);
	free(f->ids);
	free(f->row);
	free(f);
}

static const char *garbage_filter_name(void *state)
{
	(void)state;
	return "ringkv.garbage";
}

/* A filter for one compaction; NULL (no filtering) when out of memory. */
static rocksdb_compactionfilter_t *garbage_filter_create(void *state,
                                                         rocksdb_compactionfiltercontext_t *ctx)
{
	struct idx *ix = state;
	(void)ctx;
	rocksdb_t *db = atomic_load(&ix->filter_db);
	if (db == NULL)
		return NULL; /* a compaction while opening or closing: no filtering */
	struct garbage_filter *f = calloc(1, sizeof(*f));
	if (f == NULL || (f->row = malloc(KEY_BUF_SIZE)) == NULL ||
	    (f->ro = rocksdb_readoptions_create()) == NULL) {
		if (f != NULL)
			free(f->row);
		free(f);
		return NULL;
	}
	f->ix = ix;
	f->db = db;
	rocksdb_readoptions_set_read_tier(f->ro, READ_TIER_PERSISTED);
	char *rerr = NULL;
	size_t vlen;
	char *v = rocksdb_get(db, f->ro, META_DBMAP, strlen(META_DBMAP), &vlen, &rerr);
	if (v != NULL && vlen >= 8) {
		uint32_t next, cap = (uint32_t)((vlen - 8) / 4);
		f->ids = malloc((cap ? cap : 1) * sizeof(*f->ids));
		if (f->ids != NULL &&
		    !fmt_decode_dbmap((const uint8_t *)v, vlen, f->ids, cap, &f->n_ids, &next)) {
			free(f->ids); /* unreadable: treat every database as live */
			f->ids = NULL;
		}
	}
	rocksdb_free(v);
	rocksdb_free(rerr);
	rocksdb_compactionfilter_t *cf = rocksdb_compactionfilter_create(
	    f, garbage_filter_free, garbage_filter_fn, garbage_filter_name);
	rocksdb_compactionfilter_set_ignore_snapshots(cf, 1);
	return cf;
}

static void garbage_factory_free(void *state)
{
	(void)state; /* the idx, freed by its owner after the DB is closed */
}

rocksdb_compactionfilterfactory_t *ix_garbage_filter_factory(struct idx *ix)
{
	return rocksdb_compactionfilterfactory_create(ix, garbage_factory_free,
	                                              garbage_filter_create, garbage_filter_name);
}

void idx_compact_hint(struct idx *ix, const void *prefix, size_t len)
{
	if (len == 0 || len > KEY_BUF_SIZE || ix->sh == NULL || !ix->sh->compactor_started)
		return;
	/* The end: the prefix + 1, as a big-endian number (carrying leftwards). */
	size_t end_len = len;
	while (end_len > 0 && ((const uint8_t *)prefix)[end_len - 1] == 0xFF)
		end_len--;
	if (end_len == 0)
		return;
	struct compact_job *j = malloc(sizeof(*j) + len + end_len);
	if (j == NULL)
		return; /* the space still comes back, with RocksDB's own compactions */
	*j = (struct compact_job){.ix = ix, .begin_len = len, .end_len = end_len};
	memcpy(j->keys, prefix, len);
	memcpy(j->keys + len, prefix, end_len);
	j->keys[len + end_len - 1]++;
	atomic_fetch_add(&ix->compact_pending, 1);
	struct idx_shared *sh = ix->sh;
	j->next = atomic_load(&sh->compact_jobs);
	while (!atomic_compare_exchange_weak(&sh->compact_jobs, &j->next, j))
		;
	uint64_t one = 1;
	if (write(sh->compact_efd, &one, sizeof(one)) != sizeof(one))
		LOG_WARN("index %s: cannot wake the compactor (%s): garbage space comes back later",
		         ix->path, strerror(errno));
	ix->stats.compact_hints++;
}

uint64_t idx_estimate_rows(struct idx *ix)
{
	uint64_t n = 0;
	return rocksdb_property_int(ix->db, "rocksdb.estimate-num-keys", &n) == 0 ? n : 0;
}

void idx_compact_hint_db(struct idx *ix, uint32_t db)
{
	uint8_t prefix[5];
	prefix[0] = PREFIX_ELEM;
	fmt_put_be32(prefix + 1, db);
	idx_compact_hint(ix, prefix, sizeof(prefix));
	prefix[0] = PREFIX_KEY;
	idx_compact_hint(ix, prefix, sizeof(prefix));
	static const uint8_t expiry[1] = {PREFIX_EXPIRY};
	idx_compact_hint(ix, expiry, 1);
}

void idx_compact_all(struct idx *ix)
{
	rocksdb_compact_range(ix->db, NULL, 0, NULL, 0);
}
