/* index: the shard's RocksDB key index (format and contracts: index.h).
 *
 * RocksDB is used through its C API only.  Facts of RocksDB 7.8 this file
 * relies on (checked against /usr/include/rocksdb and by experiment):
 *   - ReadTier: kReadAllTier 0, kBlockCacheTier 1, kPersistedTier 2,
 *     kMemtableTier 3 (options.h).
 *   - A kBlockCacheTier read that would need I/O fails with Status::Incomplete,
 *     which the C API reports as the string "Result incomplete: no blocking io".
 *   - kPersistedTier skips the memtables once a WAL-disabled write was made
 *     (DBImpl::has_unpersisted_data_), so it reads what SST files hold.
 *   - FlushOptions.allow_write_stall is false and the C API cannot set it: a
 *     flush request waits while flushing would stall writes (an immutable
 *     memtable already waiting, or L0 at its compaction trigger), so
 *     idx_request_flush does not ask then.
 *   - A compression type missing from the build fails DB::Open with "... is
 *     not linked with the binary"; the open is retried without compression.
 *   - rocksdb_readoptions_set_iterate_upper_bound keeps a pointer to the
 *     caller's bytes, not a copy: a bound must outlive the iterators.
 *   - "rocksdb.num-files-at-level<N>" is a string property only.
 *   - The C API has no Statistics ticker getter (only a text dump), so block
 *     cache misses are counted with the calling thread's perf context.
 *   - The C API has no setter for memtable_insert_with_hint_prefix_extractor;
 *     rocksdb_get_options_from_string sets it by name.  Without a hint the
 *     skip list reuses the previous insert's position only when the new key
 *     is its immediate neighbour (InlineSkipList::Insert, no partial splice
 *     fix); with one it walks up from there only as far as needed.  The
 *     hints are shared by the point and the range-deletion skip lists of a
 *     memtable: a range deletion whose start key is in the extractor's
 *     domain corrupts them (a debug-build assertion in FindSpliceForLevel).
 */
#include "storage/index.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>

#include "service/runtime/logging.h"
#include "storage/crc32c.h"
#include "storage/fsutil.h"
#include "storage/format.h"

/* RocksDB key prefixes and metadata keys (index.h). */
#define PREFIX_ELEM       FMT_IDENT_ELEM /* 'e': the element ident is the row */
#define PREFIX_KEY        FMT_IDENT_KEY  /* 'k' */
#define PREFIX_COUNT      'n'
#define PREFIX_EXPIRY     'x'
#define PREFIX_EXPIRY_END "y"
#define PREFIX_SEGMENT    's'
#define META_VERSION      "m:version"
#define META_APPLIED_LSN  "m:applied_lsn"
#define META_DBMAP        "m:dbmap"

/* Entry flags byte. */
#define ENTRY_VERSION      2u
#define ENTRY_VERSION_MASK 0x0Fu
#define ENTRY_INLINE       0x10u
#define ENTRY_EXPIRY       0x20u
#define ENTRY_RESERVED     0xC0u
#define ENTRY_HEADER_MAX   (2 + 6 * 10 + 1) /* flags, type, at most six 10-byte varints,
                                               encoding flags */

/* ReadTier values (rocksdb/options.h). */
#define READ_TIER_ALL         0
#define READ_TIER_BLOCK_CACHE 1
#define READ_TIER_PERSISTED   2

/* Per-shard RocksDB tuning. */
/* Memtable size: a smaller skip list is cheaper to insert into (fewer levels
 * and cache misses per insert); redis-benchmark SET -P 16 over 100 k keys
 * cost 4.4 us of server CPU per request with 8 MiB against 5.5 with 32. */
#define WRITE_BUFFER_BYTES    (8u << 20)
#define MAX_WRITE_BUFFERS     3
#define MAX_OPEN_FILES        256
#define L0_COMPACTION_TRIGGER 4
#define BLOOM_BITS_PER_KEY    10
#define MEMTABLE_BLOOM_RATIO  0.1
#define METADATA_BLOCK_BYTES  4096 /* index and filter partition size */
#define INFO_LOG_FILES        3
#define INFO_LOG_BYTES        (8u << 20)
#define INSERT_HINT_OPTION    "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.2"

#define KEY_BUF_SIZE FMT_IDENT_MAX /* the longest RocksDB key: an element row */
#define KEY_ROW_HEAD 9              /* 'k' + be32 db id + be32 hash of the user key */
#define EXPIRY_ROW_HEAD 13          /* 'x' + be64 expiry + be32 db id */
#define SEGMENT_ROW_LEN 13          /* 's' + be64 segment + be32 db id */
#define COUNT_ROW_LEN 5             /* 'n' + be32 db id */
#define COUNT_VALUE_LEN 24

/* A range of one index to compact (idx_compact_hint): begin, then end. */
struct compact_job {
	struct compact_job *next;
	struct idx *ix;
	size_t begin_len, end_len;
	uint8_t keys[];
};

struct idx_shared {
	rocksdb_cache_t *cache; /* LRU block cache of every shard */
	rocksdb_env_t *env;     /* RocksDB's default Env: the background pools */
	int compaction_threads; /* LOW pool size */
	int flush_threads;      /* HIGH pool size */
	/* The compactor: one thread running the ranges the shards ask for
	 * (rocksdb_compact_range waits for the compaction, and
	 * rocksdb_suggest_compact_range marks no file of L0 or of the last
	 * level, where garbage usually is).  Jobs are pushed lock-free and the
	 * thread woken through an eventfd. */
	pthread_t compactor;
	bool compactor_started;
	int compact_efd;
	_Atomic(struct compact_job *) compact_jobs; /* pushed, newest first */
	atomic_bool compact_stop;
};

struct idx {
	rocksdb_t *db;
	rocksdb_column_family_handle_t *cf;  /* the default column family (batched MultiGet) */
	struct idx_shared *sh;
	char *path;                          /* for messages; owned */
	rocksdb_readoptions_t *ro_cached;    /* kBlockCacheTier */
	rocksdb_readoptions_t *ro_blocking;  /* kReadAllTier */
	rocksdb_readoptions_t *ro_persisted; /* kPersistedTier */
	rocksdb_readoptions_t *ro_scan;      /* key rows of a database, below scan_upper,
	                                        no cache fill */
	rocksdb_readoptions_t *ro_elems;     /* element rows of a collection, below
	                                        elem_upper */
	rocksdb_readoptions_t *ro_expiry;    /* 'x' rows, below expiry_upper */
	rocksdb_writeoptions_t *wo;          /* WAL disabled */
	rocksdb_compactionfilterfactory_t *filter; /* drops garbage rows (compaction filter) */
	uint64_t applied_lsn;                /* as of the last write */
	struct idx_stats stats;              /* counters; sizes filled on demand */
	_Atomic uint64_t garbage_dropped;    /* by the compaction filter's threads */
	_Atomic uint64_t compactions;        /* ranges the compactor ran */
	_Atomic uint32_t compact_pending;    /* jobs of this index not yet done */
	atomic_bool closing;                 /* the compactor skips its jobs */
	_Atomic(rocksdb_t *) filter_db;      /* db once open, NULL while RocksDB opens or
	                                        closes it (it may compact then, on its
	                                        threads): filters read key rows through it */
	uint8_t expiry_upper[9];             /* ro_expiry's bound (the C API keeps a
	                                        pointer to the bounds, not a copy) */
	uint8_t scan_upper[5];               /* ro_scan's: the next database's key rows */
	uint8_t *elem_upper;                 /* ro_elems's: KEY_BUF_SIZE bytes */
	uint8_t kbuf[KEY_BUF_SIZE];          /* a RocksDB key being built */
};

/* One put or delete of a batch.  Its row key, then its value, are arena bytes
 * [off, off + key_len + value_len). */
struct batch_op {
	uint64_t order; /* the row key's first 8 bytes, big-endian, zero-padded: decides
	                   most comparisons without reading the arena */
	size_t off;
	const uint8_t *key; /* arena + off, set by batch_build (the arena may move before) */
	uint32_t key_len;
	uint32_t value_len;
	uint32_t seq; /* position in the batch: of two ops on one row the later wins */
	bool is_delete;
};

/* The changes are collected here, not in a RocksDB WriteBatch, so that
 * idx_write can hand them to RocksDB in row order with each row once: the
 * memtable's skip list then reuses the previous insert's position, which
 * costs far fewer key comparisons and cache misses than random order. */
struct idx_batch {
	rocksdb_writebatch_t *wb; /* built by idx_write; empty between writes */
	struct batch_op *ops;
	size_t n_ops, cap_ops;
	uint8_t *arena; /* row keys and values of ops */
	size_t arena_len, arena_cap;
	bool oom; /* an op could not be stored: idx_write fails */
};

/* ---- encoding ---------------------------------------------------------- */

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Reads a LEB128 varint from [*p, end).  Returns false if it is truncated or
 * longer than 64 bits. */
static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		if (shift == 63 && b > 1)
			return false;
		r |= (uint64_t)(b & 0x7F) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return true;
		}
	}
	return false;
}

/* Writes e's entry header (everything but an inline value) at `dst`, which
 * has ENTRY_HEADER_MAX bytes.  Returns its length. */
static size_t entry_encode_header(uint8_t *dst, const struct idx_entry *e)
{
	bool coll = e->type != FMT_TYPE_STRING;
	uint8_t *p = dst + 2;
	dst[0] = (uint8_t)(ENTRY_VERSION | (e->is_inline && !coll ? ENTRY_INLINE : 0) |
	                   (e->expiry_ms ? ENTRY_EXPIRY : 0));
	dst[1] = e->type;
	if (e->expiry_ms)
		p = put_varint(p, e->expiry_ms);
	p = put_varint(p, e->lsn);
	if (coll) {
		p = put_varint(p, e->version);
		p = put_varint(p, e->count);
		*p++ = e->enc;
		return (size_t)(p - dst);
	}
	p = put_varint(p, e->value_len);
	if (!e->is_inline) {
		p = put_varint(p, e->segment);
		p = put_varint(p, e->offset);
		p = put_varint(p, e->length);
	}
	return (size_t)(p - dst);
}

/* Decodes an entry; an inline e->value points into `src`.  Returns false if
 * it is malformed. */
static bool entry_decode(const uint8_t *src, size_t len, struct idx_entry *e)
{
	const uint8_t *p = src + 2, *end = src + len;
	uint64_t value_len, v[3];
	if (len < 2 || (src[0] & ENTRY_VERSION_MASK) != ENTRY_VERSION ||
	    (src[0] & ENTRY_RESERVED) != 0 || src[1] > FMT_TYPE_MAX)
		return false;
	*e = (struct idx_entry){.type = src[1], .is_inline = (src[0] & ENTRY_INLINE) != 0};
	if ((src[0] & ENTRY_EXPIRY) && (!get_varint(&p, end, &e->expiry_ms) || e->expiry_ms == 0))
		return false;
	if (!get_varint(&p, end, &e->lsn))
		return false;
	if (e->type != FMT_TYPE_STRING) {
		if (e->is_inline || !get_varint(&p, end, &e->version) ||
		    !get_varint(&p, end, &e->count) || end - p != 1)
			return false;
		e->enc = *p;
		e->is_inline = true; /* in memory: "no log pointer" (index.h, idx_entry) */
		return true;
	}
	if (!get_varint(&p, end, &value_len) || value_len > UINT32_MAX)
		return false;
	e->value_len = (uint32_t)value_len;
	if (e->is_inline) {
		if ((size_t)(end - p) != value_len)
			return false;
		e->value = p;
		return true;
	}
	for (int i = 0; i < 3; i++)
		if (!get_varint(&p, end, &v[i]))
			return false;
	if (p != end || v[2] > UINT32_MAX)
		return false;
	e->segment = v[0];
	e->offset = v[1];
	e->length = (uint32_t)v[2];
	return true;
}

/* 'x' + be64 expiry, the expiry row's prefix, at `dst` (9 bytes). */
static void expiry_prefix(uint8_t *dst, uint64_t expiry_ms)
{
	dst[0] = PREFIX_EXPIRY;
	fmt_put_be64(dst + 1, expiry_ms);
}

/* An element row's entry: the value only. */
static void elem_entry(struct idx_entry *e, const void *value, size_t vlen)
{
	*e = (struct idx_entry){.is_inline = true, .value = value, .value_len = (uint32_t)vlen};
}

/* Decodes the value of a row of kind `kind` ('k' entry or 'e' value). */
static bool row_decode(uint8_t kind, const uint8_t *v, size_t vlen, struct idx_entry *e)
{
	if (kind == PREFIX_ELEM) {
		if (vlen > UINT32_MAX)
			return false;
		elem_entry(e, v, vlen);
		return true;
	}
	return entry_decode(v, vlen, e);
}

static void put_le64(uint8_t *dst, uint64_t v)
{
	v = htole64(v);
	memcpy(dst, &v, 8);
}

/* ---- small helpers ----------------------------------------------------- */

/* True if a RocksDB error string is Status::Incomplete (a read that needed
 * I/O under kBlockCacheTier). */
static bool is_incomplete(const char *rerr)
{
	return strncmp(rerr, "Result incomplete", 17) == 0;
}

/* Counts the blocks RocksDB reads from files during one blocking call, via
 * the calling thread's perf context (counting is switched on only around
 * the call). */
struct block_read_probe {
	rocksdb_perfcontext_t *pc; /* the calling thread's context; NULL if unavailable */
	uint64_t before;
};

static void probe_begin(struct block_read_probe *p)
{
	rocksdb_set_perf_level(rocksdb_enable_count);
	p->pc = rocksdb_perfcontext_create();
	p->before = p->pc ? rocksdb_perfcontext_metric(p->pc, rocksdb_block_read_count) : 0;
}

static void probe_end(struct idx *ix, struct block_read_probe *p)
{
	if (p->pc) {
		ix->stats.block_cache_misses +=
		    rocksdb_perfcontext_metric(p->pc, rocksdb_block_read_count) - p->before;
		rocksdb_perfcontext_destroy(p->pc);
	}
	rocksdb_set_perf_level(rocksdb_disable);
}

/* The hash that orders key rows (and SCAN cursors): CRC32C of the key. */
uint32_t idx_key_hash(const void *key, size_t klen)
{
	return crc32c(0, key, klen);
}

/* Writes a key row's head, 'k' + be32 db + be32 hash. */
static void key_row_head(uint8_t out[KEY_ROW_HEAD], uint32_t db, uint32_t hash)
{
	out[0] = PREFIX_KEY;
	fmt_put_be32(out + 1, db);
	fmt_put_be32(out + 5, hash);
}

/* Writes the row of ident `id` at `dst` (KEY_BUF_SIZE bytes).  Returns its
 * length, or 0 if `id` is not an ident. */
static size_t ident_row(uint8_t *dst, const uint8_t *ident, size_t len)
{
	struct fmt_ident id;
	if (!fmt_ident_parse(ident, len, &id))
		return 0;
	if (id.kind == FMT_IDENT_ELEM) {
		memcpy(dst, ident, len);
		return len;
	}
	key_row_head(dst, id.db, idx_key_hash(id.key, id.key_len));
	if (id.key_len)
		memcpy(dst + KEY_ROW_HEAD, id.key, id.key_len);
	return KEY_ROW_HEAD + id.key_len;
}

/* Reads a metadata row with `ro`.  Returns 0 (*out set), -ENOENT, or -EIO
 * (RocksDB error or a value not `size` bytes long; *rerr set to a malloc()ed
 * message, or NULL for the wrong size). */
static int meta_get(struct idx *ix, const rocksdb_readoptions_t *ro, const char *name, void *out,
                    size_t size, char **rerr)
{
	size_t vlen;
	*rerr = NULL;
	char *v = rocksdb_get(ix->db, ro, name, strlen(name), &vlen, rerr);
	if (*rerr)
		return -EIO;
	if (v == NULL)
		return -ENOENT;
	int ret = vlen == size ? 0 : -EIO;
	if (ret == 0)
		memcpy(out, v, size);
	rocksdb_free(v);
	return ret;
}

static void batch_put_meta(rocksdb_writebatch_t *wb, const char *name, uint64_t v)
{
	uint8_t le[8];
	put_le64(le, v);
	rocksdb_writebatch_put(wb, name, strlen(name), (const char *)le, sizeof(le));
}

/* Writes wb (WAL disabled), then updates the in-memory metadata.  Returns 0
 * or -EIO (logged). */
static int write_batch(struct idx *ix, rocksdb_writebatch_t *wb, uint64_t applied_lsn)
{
	char *rerr = NULL;
	batch_put_meta(wb, META_APPLIED_LSN, applied_lsn);
	rocksdb_write(ix->db, ix->wo, wb, &rerr);
	rocksdb_writebatch_clear(wb);
	if (rerr) {
		LOG_ERROR("index %s: write up to LSN %" PRIu64 " failed: %s", ix->path, applied_lsn,
		          rerr);
		rocksdb_free(rerr);
		ix->stats.errors++;
		return -EIO;
	}
	ix->applied_lsn = applied_lsn;
	ix->stats.writes++;
	return 0;
}


static int iter_error(struct idx *ix, rocksdb_iterator_t *it, const char *what);

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
			LOG_ERROR("index compactor: reading its eventfd failed: %s; garbage space comes"
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
	sh->cache = rocksdb_cache_create_lru((size_t)cache_bytes);
	sh->env = rocksdb_create_default_env();
	if (sh->cache == NULL || sh->env == NULL)
		goto nomem;
	sh->compaction_threads = background_threads;
	sh->flush_threads = background_threads / 4 > 1 ? background_threads / 4 : 1;
	rocksdb_env_set_background_threads(sh->env, sh->compaction_threads);
	rocksdb_env_set_high_priority_background_threads(sh->env, sh->flush_threads);
	sh->compact_efd = eventfd(0, EFD_CLOEXEC);
	int ret = sh->compact_efd < 0 ? errno : pthread_create(&sh->compactor, NULL, compactor_main, sh);
	if (ret != 0) {
		snprintf(err, errlen, "index: cannot start the compactor thread: %s: check the"
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
	free(sh);
}

/* ---- open and close ---------------------------------------------------- */

/* Returns o with memtable insert hints per 2-byte row key prefix (row kind
 * and, for key rows, the hash's first byte): the memtable keeps the position
 * of the previous insert of each prefix and starts the next insert's search
 * from there, walking up only as far as needed.  idx_write inserts a batch
 * in row order, so each insert costs about log(distance to the previous one)
 * comparisons instead of log(rows).  Two bytes, not one, because RocksDB 7.8
 * shares the hints between the memtable's point and range-deletion skip
 * lists (MemTable::Add), which corrupts them.  The index writes no range
 * deletion today (FLUSHALL changes the database map instead); one added
 * must keep its start key shorter than 2 bytes, outside the extractor's
 * domain, so that it takes no hint.  The C
 * API has no setter for this option, so it is set by name; if this RocksDB
 * does not know it, o is returned unchanged (slower inserts only). */
static rocksdb_options_t *with_insert_hints(rocksdb_options_t *o)
{
	char *rerr = NULL;
	rocksdb_options_t *hinted = rocksdb_options_create();
	rocksdb_get_options_from_string(o, INSERT_HINT_OPTION, hinted, &rerr);
	if (rerr != NULL) {
		LOG_WARN("index: RocksDB refuses %s (%s): memtable inserts run without hints",
		         INSERT_HINT_OPTION, rerr);
		rocksdb_free(rerr);
		rocksdb_options_destroy(hinted);
		return o;
	}
	rocksdb_options_destroy(o);
	return hinted;
}

static rocksdb_compactionfilterfactory_t *garbage_filter_factory(struct idx *ix);

/* The options of an index (ix: with its compaction filter) or of a table
 * file built for one (ix NULL). */
static rocksdb_options_t *make_options(const struct idx_shared *sh, int compression,
                                       struct idx *ix)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
	rocksdb_block_based_options_set_block_cache(t, sh->cache);
	rocksdb_block_based_options_set_filter_policy(
	    t, rocksdb_filterpolicy_create_bloom_full(BLOOM_BITS_PER_KEY));
	/* Index and filter blocks live in the shared cache too, so its size
	 * bounds the index's memory however large the key space grows.  They
	 * are partitioned: a lookup (every write of a key not in the store's
	 * cache asks whether it exists) needs one small filter partition per
	 * file, found through a pinned top level, not a file's whole filter
	 * block; with whole blocks, once they no longer all fit in the cache
	 * each miss re-read megabytes (a write of a new key went from 8 to
	 * 200 us past 1 M keys with an 8 MiB cache; partitioned: 12 us at 4 M). */
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(t, 1);
	rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(t, 1);
	rocksdb_block_based_options_set_index_type(
	    t, rocksdb_block_based_table_index_type_two_level_index_search);
	rocksdb_block_based_options_set_partition_filters(t, 1);
	rocksdb_block_based_options_set_metadata_block_size(t, METADATA_BLOCK_BYTES);
	rocksdb_block_based_options_set_pin_top_level_index_and_filter(t, 1);
	rocksdb_options_set_block_based_table_factory(o, t);
	rocksdb_block_based_options_destroy(t);

	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_set_env(o, sh->env);
	rocksdb_options_set_compression(o, compression);
	rocksdb_options_set_write_buffer_size(o, WRITE_BUFFER_BYTES);
	rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, MEMTABLE_BLOOM_RATIO);
	rocksdb_options_set_memtable_whole_key_filtering(o, 1);
	rocksdb_options_set_max_write_buffer_number(o, MAX_WRITE_BUFFERS);
	rocksdb_options_set_max_open_files(o, MAX_OPEN_FILES);
	rocksdb_options_set_level0_file_num_compaction_trigger(o, L0_COMPACTION_TRIGGER);
	rocksdb_options_set_level_compaction_dynamic_level_bytes(o, 1);
	rocksdb_options_set_max_background_jobs(
	    o, sh->compaction_threads > 2 ? sh->compaction_threads : 2);
	rocksdb_options_set_keep_log_file_num(o, INFO_LOG_FILES);
	rocksdb_options_set_max_log_file_size(o, INFO_LOG_BYTES);
	if (ix != NULL) /* the options own the factory from now on (a shared_ptr) */
		rocksdb_options_set_compaction_filter_factory(o, garbage_filter_factory(ix));
	return with_insert_hints(o);
}

/* rocksdb_open, also returning the default column family's handle in *cf:
 * RocksDB 7.8's C API has no other way to get it, and the batched MultiGet
 * (idx_get_many) takes one. */
static rocksdb_t *open_default_cf(rocksdb_options_t *o, const char *path,
                                  rocksdb_column_family_handle_t **cf, char **rerr)
{
	const char *names[1] = {"default"};
	const rocksdb_options_t *cf_opts[1] = {o};
	return rocksdb_open_column_families(o, path, 1, names, cf_opts, cf, rerr);
}

/* Opens the RocksDB, LZ4-compressed if the library has LZ4.  Returns 0 or
 * -EIO with a message in err. */
static int open_db(struct idx *ix, char *err, size_t errlen)
{
	char *rerr = NULL;
	rocksdb_options_t *o = make_options(ix->sh, rocksdb_lz4_compression, ix);
	ix->db = open_default_cf(o, ix->path, &ix->cf, &rerr);
	rocksdb_options_destroy(o);
	if (rerr && strstr(rerr, "not linked with the binary")) {
		LOG_WARN("index %s: this RocksDB lacks LZ4 (%s); the index is stored uncompressed",
		         ix->path, rerr);
		rocksdb_free(rerr);
		rerr = NULL;
		o = make_options(ix->sh, rocksdb_no_compression, ix);
		ix->db = open_default_cf(o, ix->path, &ix->cf, &rerr);
		rocksdb_options_destroy(o);
	}
	if (rerr == NULL)
		return 0;
	if (strstr(rerr, "lock") || strstr(rerr, "LOCK"))
		snprintf(err, errlen,
		         "index %s is in use (%s): stop the other ringkv process using this data"
		         " directory, or point storage.dir elsewhere",
		         ix->path, rerr);
	else
		snprintf(err, errlen,
		         "index %s: RocksDB cannot open it (%s): check the directory's permissions"
		         " and free space; if it is damaged, restore the data directory from a"
		         " backup",
		         ix->path, rerr);
	rocksdb_free(rerr);
	ix->db = NULL;
	return -EIO;
}

/* True if the database holds no row at all (error: -EIO, *rerr set). */
static int db_is_empty(struct idx *ix, char **rerr)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_blocking);
	rocksdb_iter_seek_to_first(it);
	int empty = !rocksdb_iter_valid(it);
	*rerr = NULL;
	rocksdb_iter_get_error(it, rerr);
	rocksdb_iter_destroy(it);
	return *rerr ? -EIO : empty;
}

/* Writes the metadata of a new index and flushes it.  Returns 0 or -EIO with
 * *rerr set. */
static int init_metadata(struct idx *ix, char **rerr)
{
	uint32_t version = htole32(IDX_FORMAT_VERSION);
	rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
	rocksdb_writebatch_put(wb, META_VERSION, strlen(META_VERSION), (const char *)&version,
	                       sizeof(version));
	batch_put_meta(wb, META_APPLIED_LSN, 0);
	*rerr = NULL;
	rocksdb_write(ix->db, ix->wo, wb, rerr);
	rocksdb_writebatch_destroy(wb);
	if (*rerr == NULL) {
		rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
		rocksdb_flushoptions_set_wait(fo, 1);
		rocksdb_flush(ix->db, fo, rerr);
		rocksdb_flushoptions_destroy(fo);
	}
	return *rerr ? -EIO : 0;
}

/* Checks the format version (initialising a new index) and loads
 * applied_lsn and the key count.  Returns 0 or -errno with a message. */
static int load_metadata(struct idx *ix, char *err, size_t errlen)
{
	char *rerr = NULL;
	uint32_t version;
	uint64_t le;
	int ret = meta_get(ix, ix->ro_blocking, META_VERSION, &version, sizeof(version), &rerr);
	if (ret == -ENOENT) {
		ret = db_is_empty(ix, &rerr);
		if (ret == 0) {
			snprintf(err, errlen,
			         "%s holds a database that is not a ringkv index (no %s row): point"
			         " storage.dir at a ringkv data directory, or move this one aside",
			         ix->path, META_VERSION);
			return -EPROTO;
		}
		if (ret > 0)
			ret = init_metadata(ix, &rerr);
		if (ret < 0)
			goto rocks_err;
		return 0;
	}
	if (ret < 0)
		goto rocks_err;
	if (le32toh(version) == 1) {
		snprintf(err, errlen,
		         "index %s is in on-disk format version 1 (ringkv 0.1: strings in one"
		         " database); this ringkv reads version %d (databases, hashes, sets): keep"
		         " serving it with ringkv 0.1, or move the data directory aside and load"
		         " its data again with ringkv-import",
		         ix->path, IDX_FORMAT_VERSION);
		return -EPROTO;
	}
	if (le32toh(version) != IDX_FORMAT_VERSION) {
		snprintf(err, errlen,
		         "index %s is in on-disk format version %" PRIu32 "; this ringkv reads"
		         " version %d: run a ringkv that matches the data, or point storage.dir at"
		         " another directory",
		         ix->path, le32toh(version), IDX_FORMAT_VERSION);
		return -EPROTO;
	}
	ret = meta_get(ix, ix->ro_blocking, META_APPLIED_LSN, &le, sizeof(le), &rerr);
	if (ret < 0)
		goto rocks_err;
	ix->applied_lsn = le64toh(le);
	return 0;
rocks_err:
	snprintf(err, errlen,
	         "index %s: cannot read its metadata (%s): restore the data directory from a"
	         " backup",
	         ix->path, rerr ? rerr : "a row is missing or has the wrong size");
	rocksdb_free(rerr);
	return -EIO;
}

static void free_handle(struct idx *ix)
{
	atomic_store(&ix->filter_db, NULL);
	if (ix->cf)
		rocksdb_column_family_handle_destroy(ix->cf);
	if (ix->db)
		rocksdb_close(ix->db);
	rocksdb_readoptions_t *ros[] = {ix->ro_cached, ix->ro_blocking, ix->ro_persisted,
	                                ix->ro_scan, ix->ro_elems, ix->ro_expiry};
	for (size_t i = 0; i < sizeof(ros) / sizeof(ros[0]); i++)
		if (ros[i])
			rocksdb_readoptions_destroy(ros[i]);
	if (ix->wo)
		rocksdb_writeoptions_destroy(ix->wo);
	free(ix->elem_upper);
	free(ix->path);
	free(ix);
}

int idx_open(struct idx **out, struct idx_shared *sh, const char *path, char *err, size_t errlen)
{
	*out = NULL;
	struct idx *ix = calloc(1, sizeof(*ix));
	if (ix == NULL || (ix->path = strdup(path)) == NULL ||
	    (ix->elem_upper = malloc(KEY_BUF_SIZE)) == NULL) {
		if (ix != NULL)
			free(ix->path);
		free(ix);
		snprintf(err, errlen, "index %s: out of memory", path);
		return -ENOMEM;
	}
	ix->sh = sh;
	int ret = fs_make_dirs(path);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create index directory %s: %s: check its permissions",
		         path, strerror(-ret));
		goto fail;
	}
	ret = open_db(ix, err, errlen);
	if (ret < 0)
		goto fail;
	atomic_store(&ix->filter_db, ix->db);

	ix->ro_cached = rocksdb_readoptions_create();
	ix->ro_blocking = rocksdb_readoptions_create();
	ix->ro_persisted = rocksdb_readoptions_create();
	ix->ro_scan = rocksdb_readoptions_create();
	ix->ro_elems = rocksdb_readoptions_create();
	ix->ro_expiry = rocksdb_readoptions_create();
	ix->wo = rocksdb_writeoptions_create();
	rocksdb_readoptions_set_read_tier(ix->ro_cached, READ_TIER_BLOCK_CACHE);
	rocksdb_readoptions_set_read_tier(ix->ro_blocking, READ_TIER_ALL);
	rocksdb_readoptions_set_read_tier(ix->ro_persisted, READ_TIER_PERSISTED);
	rocksdb_readoptions_set_fill_cache(ix->ro_scan, 0);
	rocksdb_writeoptions_disable_WAL(ix->wo, 1);

	ret = load_metadata(ix, err, errlen);
	if (ret < 0)
		goto fail;
	LOG_INFO("index %s: applied_lsn %" PRIu64, path, ix->applied_lsn);
	*out = ix;
	return 0;
fail:
	free_handle(ix);
	return ret;
}

void idx_close(struct idx *ix)
{
	if (ix == NULL)
		return;
	/* The compactor's jobs of this index: the one running is cut short, the
	 * others skipped; a job holds the handle until it is done. */
	atomic_store(&ix->closing, true);
	rocksdb_disable_manual_compaction(ix->db);
	while (atomic_load(&ix->compact_pending) > 0)
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	char *rerr = NULL;
	rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
	rocksdb_flushoptions_set_wait(fo, 1);
	rocksdb_flush(ix->db, fo, &rerr);
	rocksdb_flushoptions_destroy(fo);
	if (rerr) {
		LOG_WARN("index %s: flush at close failed (%s); the next start replays more of the"
		         " log",
		         ix->path, rerr);
		rocksdb_free(rerr);
	}
	free_handle(ix);
}

uint64_t idx_applied_lsn(const struct idx *ix)
{
	return ix->applied_lsn;
}

int idx_dbmap(struct idx *ix, uint32_t *ids, uint32_t cap, uint32_t *n, uint32_t *next_id)
{
	char *rerr = NULL;
	size_t vlen;
	char *v = rocksdb_get(ix->db, ix->ro_blocking, META_DBMAP, strlen(META_DBMAP), &vlen, &rerr);
	if (rerr) {
		LOG_ERROR("index %s: cannot read the database map: %s", ix->path, rerr);
		rocksdb_free(rerr);
		ix->stats.errors++;
		return -EIO;
	}
	if (v == NULL)
		return -ENOENT;
	bool ok = fmt_decode_dbmap((const uint8_t *)v, vlen, ids, cap, n, next_id);
	rocksdb_free(v);
	if (!ok) {
		LOG_ERROR("index %s: the database map row is malformed (%zu bytes)", ix->path, vlen);
		ix->stats.errors++;
		return -EIO;
	}
	return 0;
}

static uint64_t get_le64_at(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

int idx_counts(struct idx *ix, void (*fn)(void *arg, uint32_t db, const struct idx_count *c),
               void *arg)
{
	static const char begin[1] = {PREFIX_COUNT};
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_blocking);
	rocksdb_iter_seek(it, begin, 1);
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if (klen == 0 || k[0] != PREFIX_COUNT)
			break;
		if (klen != COUNT_ROW_LEN || vlen != COUNT_VALUE_LEN) {
			LOG_WARN("index %s: ignoring a malformed count row", ix->path);
			continue;
		}
		struct idx_count c = {get_le64_at(v), get_le64_at(v + 8), get_le64_at(v + 16)};
		fn(arg, fmt_get_be32(k + 1), &c);
	}
	int ret = iter_error(ix, it, "reading the count rows");
	rocksdb_iter_destroy(it);
	return ret;
}

/* ---- reads ------------------------------------------------------------- */

int idx_get(struct idx *ix, const void *ident, size_t len, enum idx_read_mode mode,
            struct idx_entry *e, uint8_t **value)
{
	if (value)
		*value = NULL;
	ix->stats.gets++;
	size_t n = ident_row(ix->kbuf, ident, len);
	if (n == 0)
		return -EINVAL;
	char *rerr = NULL;
	rocksdb_pinnableslice_t *ps;
	if (mode == IDX_BLOCKING) {
		struct block_read_probe probe;
		ix->stats.get_blocking++;
		probe_begin(&probe);
		ps = rocksdb_get_pinned(ix->db, ix->ro_blocking, (const char *)ix->kbuf, n, &rerr);
		probe_end(ix, &probe);
	} else {
		ps = rocksdb_get_pinned(ix->db, ix->ro_cached, (const char *)ix->kbuf, n, &rerr);
	}
	if (rerr) {
		int ret = -EIO;
		if (mode == IDX_CACHED_ONLY && is_incomplete(rerr)) {
			ix->stats.get_would_block++;
			ret = -EWOULDBLOCK;
		} else {
			LOG_ERROR("index %s: read failed: %s", ix->path, rerr);
			ix->stats.errors++;
		}
		rocksdb_free(rerr);
		return ret;
	}
	if (ps == NULL)
		return -ENOENT;
	size_t vlen;
	const char *v = rocksdb_pinnableslice_value(ps, &vlen);
	int ret = 0;
	if (!row_decode(ix->kbuf[0], (const uint8_t *)v, vlen, e)) {
		LOG_ERROR("index %s: the entry of a %zu-byte ident is corrupt (%zu bytes)", ix->path,
		          len, vlen);
		ix->stats.errors++;
		ret = -EIO;
	} else if (e->is_inline && value) {
		*value = malloc(e->value_len ? e->value_len : 1);
		if (*value == NULL)
			ret = -ENOMEM;
		else if (e->value_len > 0) /* a collection's key row has no value */
			memcpy(*value, e->value, e->value_len);
		e->value = *value;
	} else {
		e->value = NULL;
	}
	rocksdb_pinnableslice_destroy(ps);
	return ret;
}

/* A row key's first 8 bytes, big-endian, zero-padded (batch_op.order). */
static uint64_t row_order(const uint8_t *row, size_t len)
{
	uint8_t first[8] = {0};
	memcpy(first, row, len < 8 ? len : 8);
	uint64_t be;
	memcpy(&be, first, 8);
	return be64toh(be);
}

static int batch_op_cmp(const void *a, const void *b);

int idx_get_many(struct idx *ix, struct idx_probe *probes, size_t n)
{
	if (n == 0)
		return 0;
	size_t arena_len = 0;
	for (size_t i = 0; i < n; i++) {
		if (probes[i].klen > FMT_IDENT_MAX || probes[i].klen < FMT_KEY_IDENT_HEAD)
			return -EINVAL;
		arena_len += KEY_ROW_HEAD + probes[i].klen; /* a key row is 4 bytes longer */
	}
	uint8_t *arena = malloc(arena_len);
	struct batch_op *rows = malloc(n * sizeof(*rows)); /* seq: the probe's index */
	const char **keys = malloc(n * sizeof(*keys));
	size_t *key_lens = malloc(n * sizeof(*key_lens));
	rocksdb_pinnableslice_t **values = calloc(n, sizeof(*values));
	char **errs = calloc(n, sizeof(*errs));
	int ret = -ENOMEM;
	if (!arena || !rows || !keys || !key_lens || !values || !errs)
		goto out;

	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t *row = arena + off;
		uint32_t len = (uint32_t)ident_row(row, probes[i].key, probes[i].klen);
		if (len == 0) {
			ret = -EINVAL;
			goto out;
		}
		rows[i] = (struct batch_op){
		    .order = row_order(row, len), .key = row, .key_len = len, .seq = (uint32_t)i};
		off += len;
	}
	/* Sorted input lets RocksDB take the keys file by file and block by
	 * block without copying and sorting them itself. */
	qsort(rows, n, sizeof(*rows), batch_op_cmp);
	for (size_t i = 0; i < n; i++) {
		keys[i] = (const char *)rows[i].key;
		key_lens[i] = rows[i].key_len;
	}
	struct block_read_probe probe;
	probe_begin(&probe);
	rocksdb_batched_multi_get_cf(ix->db, ix->ro_blocking, ix->cf, n, keys, key_lens, values,
	                             errs, true);
	probe_end(ix, &probe);
	ix->stats.gets += n;
	ix->stats.get_blocking += n;
	ix->stats.multi_gets++;

	ret = 0;
	for (size_t i = 0; i < n; i++) {
		struct idx_probe *p = &probes[rows[i].seq];
		p->status = -ENOENT;
		if (errs[i] != NULL) {
			LOG_ERROR("index %s: read failed: %s", ix->path, errs[i]);
			ix->stats.errors++;
			p->status = ret = -EIO;
			continue;
		}
		if (values[i] == NULL)
			continue;
		size_t vlen;
		const char *v = rocksdb_pinnableslice_value(values[i], &vlen);
		if (!row_decode(rows[i].key[0], (const uint8_t *)v, vlen, &p->e)) {
			LOG_ERROR("index %s: the entry of a %zu-byte ident is corrupt (%zu bytes)",
			          ix->path, p->klen, vlen);
			ix->stats.errors++;
			p->status = ret = -EIO;
			continue;
		}
		p->e.value = NULL;
		p->status = 0;
	}
out:
	for (size_t i = 0; values != NULL && i < n; i++)
		if (values[i] != NULL)
			rocksdb_pinnableslice_destroy(values[i]);
	for (size_t i = 0; errs != NULL && i < n; i++)
		rocksdb_free(errs[i]);
	free(errs);
	free(values);
	free(key_lens);
	free(keys);
	free(rows);
	free(arena);
	return ret;
}

uint64_t idx_persisted_lsn(struct idx *ix)
{
	char *rerr = NULL;
	uint64_t le;
	int ret = meta_get(ix, ix->ro_persisted, META_APPLIED_LSN, &le, sizeof(le), &rerr);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0) {
		LOG_ERROR("index %s: cannot read the persisted applied_lsn: %s", ix->path,
		          rerr ? rerr : "wrong size");
		rocksdb_free(rerr);
		ix->stats.errors++;
		return 0;
	}
	return le64toh(le);
}

/* Returns 0, or -EIO (logged) if the iterator met an error. */
static int iter_error(struct idx *ix, rocksdb_iterator_t *it, const char *what)
{
	char *rerr = NULL;
	rocksdb_iter_get_error(it, &rerr);
	if (rerr == NULL)
		return 0;
	LOG_ERROR("index %s: %s failed: %s", ix->path, what, rerr);
	rocksdb_free(rerr);
	ix->stats.errors++;
	return -EIO;
}

int idx_scan(struct idx *ix, uint32_t db, uint32_t from_hash, size_t max, idx_visit_fn fn,
             void *arg, uint32_t *next_hash)
{
	*next_hash = 0;
	if (max == 0)
		return -EINVAL;
	uint8_t start[KEY_ROW_HEAD];
	key_row_head(start, db, from_hash);
	/* The bound: the first row of the next database ('l' after the last). */
	ix->scan_upper[0] = db == UINT32_MAX ? PREFIX_KEY + 1 : PREFIX_KEY;
	fmt_put_be32(ix->scan_upper + 1, db == UINT32_MAX ? 0 : db + 1);
	rocksdb_readoptions_set_iterate_upper_bound(ix->ro_scan, (const char *)ix->scan_upper,
	                                            db == UINT32_MAX ? 1 : 5);
	struct block_read_probe probe;
	probe_begin(&probe);
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_scan);
	rocksdb_iter_seek(it, (const char *)start, sizeof(start));
	int ret = 0;
	size_t visited = 0;
	uint32_t hash = 0;
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		const char *v = rocksdb_iter_value(it, &vlen);
		struct idx_entry e;
		if (klen < KEY_ROW_HEAD || !entry_decode((const uint8_t *)v, vlen, &e)) {
			LOG_ERROR("index %s: scan met a corrupt entry (%zu-byte key)", ix->path,
			          klen);
			ix->stats.errors++;
			ret = -EIO;
			goto out;
		}
		uint32_t h = fmt_get_be32(k + 5);
		if (visited >= max && h != hash) {
			*next_hash = h; /* a hash boundary: resume here */
			ret = 1;
			break;
		}
		hash = h;
		visited++;
		if (fn(arg, k + KEY_ROW_HEAD, klen - KEY_ROW_HEAD, &e) != 0) {
			*next_hash = h; /* the group is visited again: at least once holds */
			ret = 1;
			break;
		}
	}
	ix->stats.scanned += visited;
	if (ret == 0)
		ret = iter_error(ix, it, "scan");
out:
	rocksdb_iter_destroy(it);
	probe_end(ix, &probe);
	return ret;
}

int idx_elem_scan(struct idx *ix, const void *prefix, size_t plen, uint32_t from_hash,
                  size_t max, idx_elem_fn fn, void *arg, uint32_t *next_hash)
{
	*next_hash = 0;
	if (max == 0 || plen < FMT_ELEM_IDENT_HEAD - 4 || plen + 4 > KEY_BUF_SIZE)
		return -EINVAL;
	/* Start: prefix + be32 from_hash; bound: the prefix of the next version
	 * (prefix's last 8 bytes are the version: +1 carries within them). */
	memcpy(ix->kbuf, prefix, plen);
	fmt_put_be32(ix->kbuf + plen, from_hash);
	memcpy(ix->elem_upper, prefix, plen);
	uint64_t version = fmt_get_be64(ix->elem_upper + plen - 8);
	if (version == UINT64_MAX)
		return -EINVAL;
	fmt_put_be64(ix->elem_upper + plen - 8, version + 1);
	rocksdb_readoptions_set_iterate_upper_bound(ix->ro_elems, (const char *)ix->elem_upper,
	                                            plen);
	struct block_read_probe probe;
	probe_begin(&probe);
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_elems);
	rocksdb_iter_seek(it, (const char *)ix->kbuf, plen + 4);
	int ret = 0;
	size_t visited = 0;
	uint32_t hash = 0;
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if (klen < plen + 4 || memcmp(k, prefix, plen) != 0)
			break; /* (the bound stops first; a shorter row cannot be ours) */
		uint32_t h = fmt_get_be32(k + plen);
		if (visited >= max && h != hash) {
			*next_hash = h;
			ret = 1;
			break;
		}
		hash = h;
		visited++;
		if (fn(arg, k + plen + 4, klen - plen - 4, v, vlen, h) != 0) {
			*next_hash = h;
			ret = 1;
			break;
		}
	}
	ix->stats.elems_scanned += visited;
	if (ret == 0)
		ret = iter_error(ix, it, "element scan");
	rocksdb_iter_destroy(it);
	probe_end(ix, &probe);
	return ret;
}

int idx_expired(struct idx *ix, uint64_t now_ms, const struct idx_expiry_pos *after, size_t max,
                idx_expired_fn fn, void *arg)
{
	static const char lower[1] = {PREFIX_EXPIRY};
	if (after != NULL && after->klen > FMT_KEY_MAX)
		return -EINVAL;
	if (max > INT_MAX)
		max = INT_MAX;
	if (now_ms == UINT64_MAX)
		memcpy(ix->expiry_upper, PREFIX_EXPIRY_END, 1);
	else
		expiry_prefix(ix->expiry_upper, now_ms + 1);
	rocksdb_readoptions_set_iterate_upper_bound(ix->ro_expiry, (const char *)ix->expiry_upper,
	                                            now_ms == UINT64_MAX ? 1 : 9);
	uint8_t *from = NULL; /* the row to resume after */
	size_t from_len = 0;
	if (after != NULL) {
		from_len = EXPIRY_ROW_HEAD + after->klen;
		from = malloc(from_len);
		if (from == NULL)
			return -ENOMEM;
		expiry_prefix(from, after->expiry_ms);
		fmt_put_be32(from + 9, after->db);
		if (after->klen)
			memcpy(from + EXPIRY_ROW_HEAD, after->key, after->klen);
	}
	struct block_read_probe probe;
	probe_begin(&probe);
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_expiry);
	if (after != NULL) {
		rocksdb_iter_seek(it, (const char *)from, from_len);
		size_t klen;
		const char *k = rocksdb_iter_valid(it) ? rocksdb_iter_key(it, &klen) : NULL;
		if (k != NULL && klen == from_len && memcmp(k, from, from_len) == 0)
			rocksdb_iter_next(it); /* the row visited last time */
		free(from);
	} else {
		rocksdb_iter_seek(it, lower, sizeof(lower));
	}
	int ret = 0;
	size_t visited = 0;
	bool stopped = false;
	for (; rocksdb_iter_valid(it) && visited < max && !stopped; rocksdb_iter_next(it)) {
		size_t klen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen < EXPIRY_ROW_HEAD) {
			LOG_ERROR("index %s: a corrupt expiry row (%zu bytes)", ix->path, klen);
			ix->stats.errors++;
			ret = -EIO;
			goto out;
		}
		visited++;
		stopped = fn(arg, fmt_get_be32(k + 9), k + EXPIRY_ROW_HEAD, klen - EXPIRY_ROW_HEAD,
		             fmt_get_be64(k + 1)) != 0;
	}
	ix->stats.expired_visited += visited;
	ret = iter_error(ix, it, "expiry walk");
	if (ret == 0)
		ret = (int)visited;
out:
	rocksdb_iter_destroy(it);
	probe_end(ix, &probe);
	return ret;
}

/* ---- batches and writes ------------------------------------------------ */

struct idx_batch *idx_batch_new(void)
{
	struct idx_batch *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	b->wb = rocksdb_writebatch_create();
	if (b->wb == NULL) {
		free(b);
		return NULL;
	}
	return b;
}

/* Makes room for one more op of `bytes` arena bytes.  Returns false (and
 * marks the batch failed) when out of memory. */
static bool batch_reserve(struct idx_batch *b, size_t bytes)
{
	if (b->n_ops == b->cap_ops) {
		size_t cap = b->cap_ops ? b->cap_ops * 2 : 256;
		struct batch_op *ops = realloc(b->ops, cap * sizeof(*ops));
		if (ops == NULL)
			goto oom;
		b->ops = ops;
		b->cap_ops = cap;
	}
	if (b->arena_cap - b->arena_len < bytes) {
		size_t cap = b->arena_cap ? b->arena_cap : 16384;
		while (cap - b->arena_len < bytes)
			cap *= 2;
		uint8_t *arena = realloc(b->arena, cap);
		if (arena == NULL)
			goto oom;
		b->arena = arena;
		b->arena_cap = cap;
	}
	return true;
oom:
	b->oom = true;
	return false;
}

/* Adds a put (or, with is_delete, a delete) of the row key k1 + k2 with the
 * value v1 + v2 (empty for a delete). */
static void batch_add(struct idx_batch *b, bool is_delete, const void *k1, size_t k1len,
                      const void *k2, size_t k2len, const void *v1, size_t v1len, const void *v2,
                      size_t v2len)
{
	size_t klen = k1len + k2len, vlen = v1len + v2len;
	if (!batch_reserve(b, klen + vlen))
		return;
	struct batch_op *op = &b->ops[b->n_ops];
	uint8_t *p = b->arena + b->arena_len;
	op->off = b->arena_len;
	op->key_len = (uint32_t)klen;
	op->value_len = (uint32_t)vlen;
	op->seq = (uint32_t)b->n_ops;
	op->is_delete = is_delete;
	memcpy(p, k1, k1len);
	if (k2len)
		memcpy(p + k1len, k2, k2len);
	if (v1len)
		memcpy(p + klen, v1, v1len);
	if (v2len)
		memcpy(p + klen + v1len, v2, v2len);
	op->order = row_order(p, klen);
	b->arena_len += klen + vlen;
	b->n_ops++;
}

/* Adds a put (is_delete false) or delete of the expiry row of key ident
 * `id` for `expiry_ms` (!= 0): 'x' + expiry, then the ident's db and key. */
static void batch_expiry_row(struct idx_batch *b, bool is_delete, const uint8_t *ident,
                             size_t len, uint64_t expiry_ms)
{
	uint8_t prefix[9];
	expiry_prefix(prefix, expiry_ms);
	batch_add(b, is_delete, prefix, sizeof(prefix), ident + 1, len - 1, NULL, 0, NULL, 0);
}

void idx_batch_put(struct idx_batch *b, const void *ident, size_t len, const struct idx_entry *e,
                   uint64_t prev_expiry_ms)
{
	const uint8_t *id = ident;
	if (len < FMT_KEY_IDENT_HEAD || len > FMT_IDENT_MAX) {
		b->oom = true; /* a caller's bug: the write fails whole, logged */
		return;
	}
	if (id[0] == PREFIX_ELEM) {
		batch_add(b, false, id, len, NULL, 0, e->value, e->value_len, NULL, 0);
		return;
	}
	uint8_t head[KEY_ROW_HEAD];
	key_row_head(head, fmt_get_be32(id + 1),
	             idx_key_hash(id + FMT_KEY_IDENT_HEAD, len - FMT_KEY_IDENT_HEAD));
	uint8_t header[ENTRY_HEADER_MAX];
	size_t header_len = entry_encode_header(header, e);
	bool inline_value = e->is_inline && e->type == FMT_TYPE_STRING;
	batch_add(b, false, head, KEY_ROW_HEAD, id + FMT_KEY_IDENT_HEAD, len - FMT_KEY_IDENT_HEAD,
	          header, header_len, e->value, inline_value ? e->value_len : 0);

	if (prev_expiry_ms == e->expiry_ms)
		return;
	if (prev_expiry_ms != 0)
		batch_expiry_row(b, true, id, len, prev_expiry_ms);
	if (e->expiry_ms != 0)
		batch_expiry_row(b, false, id, len, e->expiry_ms);
}

void idx_batch_delete(struct idx_batch *b, const void *ident, size_t len,
                      uint64_t prev_expiry_ms)
{
	const uint8_t *id = ident;
	if (len < FMT_KEY_IDENT_HEAD || len > FMT_IDENT_MAX) {
		b->oom = true;
		return;
	}
	if (id[0] == PREFIX_ELEM) {
		batch_add(b, true, id, len, NULL, 0, NULL, 0, NULL, 0);
		return;
	}
	uint8_t head[KEY_ROW_HEAD];
	key_row_head(head, fmt_get_be32(id + 1),
	             idx_key_hash(id + FMT_KEY_IDENT_HEAD, len - FMT_KEY_IDENT_HEAD));
	batch_add(b, true, head, KEY_ROW_HEAD, id + FMT_KEY_IDENT_HEAD, len - FMT_KEY_IDENT_HEAD,
	          NULL, 0, NULL, 0);
	if (prev_expiry_ms != 0)
		batch_expiry_row(b, true, id, len, prev_expiry_ms);
}

/* 'n' + be32 db at dst; the value, 3 x le64, at val. */
static void count_row(uint8_t dst[COUNT_ROW_LEN], uint32_t db)
{
	dst[0] = PREFIX_COUNT;
	fmt_put_be32(dst + 1, db);
}

static void count_value(uint8_t dst[COUNT_VALUE_LEN], const struct idx_count *c)
{
	put_le64(dst, c->keys);
	put_le64(dst + 8, c->expires);
	put_le64(dst + 16, c->expiry_sum_s);
}

void idx_batch_set_count(struct idx_batch *b, uint32_t db, const struct idx_count *c)
{
	uint8_t row[COUNT_ROW_LEN], v[COUNT_VALUE_LEN];
	count_row(row, db);
	if (c->keys == 0 && c->expires == 0 && c->expiry_sum_s == 0) {
		batch_add(b, true, row, sizeof(row), NULL, 0, NULL, 0, NULL, 0);
		return;
	}
	count_value(v, c);
	batch_add(b, false, row, sizeof(row), NULL, 0, v, sizeof(v), NULL, 0);
}

void idx_batch_set_dbmap(struct idx_batch *b, const uint32_t *ids, uint32_t n, uint32_t next_id)
{
	size_t size = fmt_dbmap_size(n);
	uint8_t *v = malloc(size);
	if (v == NULL) {
		b->oom = true;
		return;
	}
	fmt_encode_dbmap(v, ids, n, next_id);
	batch_add(b, false, META_DBMAP, strlen(META_DBMAP), NULL, 0, v, size, NULL, 0);
	free(v);
}

void idx_batch_clear(struct idx_batch *b)
{
	rocksdb_writebatch_clear(b->wb);
	b->n_ops = 0;
	b->arena_len = 0;
	b->oom = false;
}

void idx_batch_free(struct idx_batch *b)
{
	if (b == NULL)
		return;
	rocksdb_writebatch_destroy(b->wb);
	free(b->ops);
	free(b->arena);
	free(b);
}

/* Compares two ops' row keys bytewise (RocksDB's order); 0 only for the same
 * row. */
static int batch_row_cmp(const struct batch_op *x, const struct batch_op *y)
{
	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
	int c = memcmp(x->key, y->key, n);
	if (c != 0)
		return c;
	return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* Row order, then batch order. */
static int batch_op_cmp(const void *a, const void *b)
{
	const struct batch_op *x = a, *y = b;
	int c = batch_row_cmp(x, y);
	if (c != 0)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Fills b->wb with the ops in row order, each row once (its last op in the
 * batch: a later put or delete of a row replaces an earlier one, and nothing
 * can read the batch's intermediate states). */
static void batch_build(struct idx_batch *b)
{
	for (size_t i = 0; i < b->n_ops; i++)
		b->ops[i].key = b->arena + b->ops[i].off;
	qsort(b->ops, b->n_ops, sizeof(*b->ops), batch_op_cmp);
	for (size_t i = 0; i < b->n_ops; i++) {
		const struct batch_op *op = &b->ops[i];
		if (i + 1 < b->n_ops && batch_row_cmp(op, &b->ops[i + 1]) == 0)
			continue;
		const char *k = (const char *)op->key;
		if (op->is_delete)
			rocksdb_writebatch_delete(b->wb, k, op->key_len);
		else
			rocksdb_writebatch_put(b->wb, k, op->key_len, k + op->key_len,
			                       op->value_len);
	}
}

int idx_write(struct idx *ix, struct idx_batch *b, uint64_t applied_lsn)
{
	if (b->oom) {
		LOG_ERROR("index %s: out of memory building the write up to LSN %" PRIu64
		          ": free memory (lower storage.cache_size) and restart to replay the log",
		          ix->path, applied_lsn);
		idx_batch_clear(b);
		ix->stats.errors++;
		return -EIO;
	}
	batch_build(b);
	int ret = write_batch(ix, b->wb, applied_lsn);
	idx_batch_clear(b);
	return ret;
}

/* 's' + be64 segment id + be32 db at `dst`. */
static void segment_row(uint8_t dst[SEGMENT_ROW_LEN], uint64_t segment, uint32_t db)
{
	dst[0] = PREFIX_SEGMENT;
	fmt_put_be64(dst + 1, segment);
	fmt_put_be32(dst + 9, db);
}

void idx_batch_set_live(struct idx_batch *b, uint64_t segment, uint32_t db, uint64_t live_bytes)
{
	uint8_t row[SEGMENT_ROW_LEN], le[8];
	segment_row(row, segment, db);
	put_le64(le, live_bytes);
	batch_add(b, false, row, sizeof(row), NULL, 0, le, sizeof(le), NULL, 0);
}

void idx_batch_forget_live(struct idx_batch *b, uint64_t segment, uint32_t db)
{
	uint8_t row[SEGMENT_ROW_LEN];
	segment_row(row, segment, db);
	batch_add(b, true, row, sizeof(row), NULL, 0, NULL, 0, NULL, 0);
}

int idx_segments_live(struct idx *ix,
                      void (*fn)(void *arg, uint64_t segment, uint32_t db, uint64_t live),
                      void *arg)
{
	static const char begin[1] = {PREFIX_SEGMENT};
	rocksdb_iterator_t *it = rocksdb_create_iterator(ix->db, ix->ro_blocking);
	rocksdb_iter_seek(it, begin, 1);
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if (klen == 0 || k[0] != PREFIX_SEGMENT)
			break;
		if (klen != SEGMENT_ROW_LEN || vlen != 8) {
			LOG_WARN("index %s: ignoring a malformed segment row", ix->path);
			continue;
		}
		fn(arg, fmt_get_be64(k + 1), fmt_get_be32(k + 9), get_le64_at(v));
	}
	int ret = iter_error(ix, it, "reading the segment rows");
	rocksdb_iter_destroy(it);
	return ret;
}

/* The number of L0 files, or -1.  (A string property: the integer interface
 * does not serve "rocksdb.num-files-at-level<N>".) */
static int64_t level0_files(struct idx *ix)
{
	char *v = rocksdb_property_value(ix->db, "rocksdb.num-files-at-level0");
	if (v == NULL)
		return -1;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	bool ok = errno == 0 && end != v && *end == '\0' && n <= INT64_MAX;
	rocksdb_free(v);
	return ok ? (int64_t)n : -1;
}

int idx_request_flush(struct idx *ix)
{
	uint64_t active = 0, immutable = 0;
	int64_t l0 = level0_files(ix);
	if (rocksdb_property_int(ix->db, "rocksdb.num-entries-active-mem-table", &active) != 0 ||
	    rocksdb_property_int(ix->db, "rocksdb.num-immutable-mem-table", &immutable) != 0 ||
	    l0 < 0) {
		LOG_ERROR("index %s: cannot read the memtable and L0 properties", ix->path);
		ix->stats.errors++;
		return -EIO;
	}
	if (active == 0)
		return -EALREADY;
	if (immutable > 0 || l0 >= L0_COMPACTION_TRIGGER)
		return -EBUSY;
	char *rerr = NULL;
	rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
	rocksdb_flushoptions_set_wait(fo, 0);
	rocksdb_flush(ix->db, fo, &rerr);
	rocksdb_flushoptions_destroy(fo);
	if (rerr) {
		LOG_ERROR("index %s: flush request failed: %s", ix->path, rerr);
		rocksdb_free(rerr);
		ix->stats.errors++;
		return -EIO;
	}
	ix->stats.flush_requests++;
	return 0;
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
	uint8_t *row;              /* KEY_BUF_SIZE: the key row last looked up ... */
	size_t row_len;            /* ... (0: none) */
	bool row_is_coll;          /* ... it exists and holds a collection ... */
	uint64_t row_version;      /* ... of this version */
	bool row_error;            /* ... or it could not be read: keep its elements */
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
	key_row_head(head, id.db, idx_key_hash(id.key, id.key_len));
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
		bool decoded = v != NULL && entry_decode((const uint8_t *)v, vlen, &e);
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

static rocksdb_compactionfilterfactory_t *garbage_filter_factory(struct idx *ix)
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

/* ---- statistics -------------------------------------------------------- */

static uint64_t property(struct idx *ix, const char *name)
{
	uint64_t v = 0;
	return rocksdb_property_int(ix->db, name, &v) == 0 ? v : 0;
}

void idx_get_stats(struct idx *ix, struct idx_stats *out)
{
	*out = ix->stats;
	out->garbage_dropped = atomic_load_explicit(&ix->garbage_dropped, memory_order_relaxed);
	out->garbage_compactions = atomic_load_explicit(&ix->compactions, memory_order_relaxed);
	out->memtable_bytes = property(ix, "rocksdb.cur-size-all-mem-tables");
	out->sst_bytes = property(ix, "rocksdb.total-sst-files-size");
	out->table_reader_bytes = property(ix, "rocksdb.estimate-table-readers-mem");
	out->block_cache_bytes = rocksdb_cache_get_usage(ix->sh->cache);
}

/* ---- bulk load --------------------------------------------------------- */

#define SST_XROW_CHUNK (1u << 20) /* bytes per arena chunk of expiry-row keys */

/* One expiry row to write at idx_sst_finish. */
struct sst_xrow {
	uint64_t expiry_ms;
	const uint8_t *key; /* db id and user key, in the builder's arena */
	uint32_t klen;
	bool is_delete; /* a tombstone for the replaced entry's row */
};

struct sst_chunk {
	struct sst_chunk *next;
	size_t used;
	uint8_t data[];
};

struct idx_sst {
	rocksdb_sstfilewriter_t *w;
	rocksdb_envoptions_t *env_opts;
	rocksdb_options_t *opts;
	char *path;                 /* owned */
	uint8_t last[KEY_BUF_SIZE]; /* the previous row, to check the order */
	uint8_t row[KEY_BUF_SIZE];  /* a row being built */
	size_t last_len;            /* 0 before the first row */
	struct sst_xrow *xrows;     /* expiry rows to write, unsorted */
	size_t n_xrows, cap_xrows;
	struct sst_chunk *chunks; /* arena of expiry-row keys; newest first */
	uint8_t *vbuf;            /* entry being encoded */
	size_t vcap;
};

/* Opens the writer with `compression`.  Returns the RocksDB error (malloc()ed)
 * or NULL. */
static char *sst_try_open(struct idx_sst *s, struct idx *ix, int compression)
{
	char *rerr = NULL;
	if (s->w)
		rocksdb_sstfilewriter_destroy(s->w);
	if (s->opts)
		rocksdb_options_destroy(s->opts);
	s->opts = make_options(ix->sh, compression, NULL);
	s->w = rocksdb_sstfilewriter_create(s->env_opts, s->opts);
	rocksdb_sstfilewriter_open(s->w, s->path, &rerr);
	return rerr;
}

int idx_sst_open(struct idx_sst **out, struct idx *ix, const char *path, char *err, size_t errlen)
{
	*out = NULL;
	struct idx_sst *s = calloc(1, sizeof(*s));
	if (s == NULL || (s->path = strdup(path)) == NULL ||
	    (s->env_opts = rocksdb_envoptions_create()) == NULL) {
		idx_sst_free(s);
		snprintf(err, errlen, "out of memory starting %s", path);
		return -ENOMEM;
	}
	char *rerr = sst_try_open(s, ix, rocksdb_lz4_compression);
	if (rerr && strstr(rerr, "not linked with the binary")) {
		rocksdb_free(rerr);
		rerr = sst_try_open(s, ix, rocksdb_no_compression);
	}
	if (rerr) {
		snprintf(err, errlen, "cannot create %s: %s (check free space and permissions)",
		         path, rerr);
		rocksdb_free(rerr);
		idx_sst_free(s);
		return -EIO;
	}
	*out = s;
	return 0;
}

/* Copies key into the arena; NULL when out of memory. */
static const uint8_t *sst_keep_key(struct idx_sst *s, const void *key, size_t klen)
{
	struct sst_chunk *c = s->chunks;
	if (c == NULL || SST_XROW_CHUNK - c->used < klen) {
		size_t size = klen > SST_XROW_CHUNK ? klen : SST_XROW_CHUNK;
		c = malloc(sizeof(*c) + size);
		if (c == NULL)
			return NULL;
		c->used = 0;
		c->next = s->chunks;
		s->chunks = c;
	}
	uint8_t *p = c->data + c->used;
	if (klen)
		memcpy(p, key, klen);
	c->used += klen;
	return p;
}

static int sst_add_xrow(struct idx_sst *s, const void *key, size_t klen, uint64_t expiry_ms,
                        bool is_delete)
{
	if (s->n_xrows == s->cap_xrows) {
		size_t cap = s->cap_xrows ? s->cap_xrows * 2 : 1024;
		struct sst_xrow *x = realloc(s->xrows, cap * sizeof(*x));
		if (x == NULL)
			return -ENOMEM;
		s->xrows = x;
		s->cap_xrows = cap;
	}
	const uint8_t *k = sst_keep_key(s, key, klen);
	if (k == NULL)
		return -ENOMEM;
	s->xrows[s->n_xrows++] = (struct sst_xrow){
	    .expiry_ms = expiry_ms, .key = k, .klen = (uint32_t)klen, .is_delete = is_delete};
	return 0;
}

/* Checks that `row` follows the previous row of the file.  Returns 0 or
 * -EINVAL with a message. */
static int sst_check_order(struct idx_sst *s, const uint8_t *row, size_t row_len, char *err,
                           size_t errlen)
{
	if (s->last_len) {
		size_t n = row_len < s->last_len ? row_len : s->last_len;
		int c = memcmp(s->last, row, n);
		if (c > 0 || (c == 0 && s->last_len >= row_len)) {
			snprintf(err, errlen, "%s: rows out of order (a bug in the caller)", s->path);
			return -EINVAL;
		}
	}
	memcpy(s->last, row, row_len);
	s->last_len = row_len;
	return 0;
}

static int sst_put_row(struct idx_sst *s, const uint8_t *row, size_t row_len, const void *v,
                       size_t vlen, char *err, size_t errlen)
{
	char *rerr = NULL;
	rocksdb_sstfilewriter_put(s->w, (const char *)row, row_len, v, vlen, &rerr);
	if (rerr) {
		snprintf(err, errlen, "writing %s: %s", s->path, rerr);
		rocksdb_free(rerr);
		return -EIO;
	}
	return 0;
}

int idx_sst_put(struct idx_sst *s, const void *ident, size_t len, const struct idx_entry *e,
                uint64_t prev_expiry_ms, char *err, size_t errlen)
{
	const uint8_t *id = ident;
	uint8_t *row = s->row;
	size_t row_len = len >= 1 && id[0] == FMT_IDENT_KEY ? ident_row(row, id, len) : 0;
	if (row_len == 0) {
		snprintf(err, errlen, "%s: a key of %zu bytes is over the limit", s->path,
		         len > FMT_KEY_IDENT_HEAD ? len - FMT_KEY_IDENT_HEAD : 0);
		return -EINVAL;
	}
	int ret = sst_check_order(s, row, row_len, err, errlen);
	if (ret < 0)
		return ret;
	bool inline_value = e->is_inline && e->type == FMT_TYPE_STRING;
	size_t need = ENTRY_HEADER_MAX + (inline_value ? e->value_len : 0);
	if (need > s->vcap) {
		uint8_t *v = realloc(s->vbuf, need);
		if (v == NULL)
			goto nomem;
		s->vbuf = v;
		s->vcap = need;
	}
	size_t vlen = entry_encode_header(s->vbuf, e);
	if (inline_value && e->value_len) {
		memcpy(s->vbuf + vlen, e->value, e->value_len);
		vlen += e->value_len;
	}
	ret = sst_put_row(s, row, row_len, s->vbuf, vlen, err, errlen);
	if (ret < 0)
		return ret;
	if (prev_expiry_ms != e->expiry_ms) {
		if (prev_expiry_ms != 0 && sst_add_xrow(s, id + 1, len - 1, prev_expiry_ms, true) < 0)
			goto nomem;
		if (e->expiry_ms != 0 && sst_add_xrow(s, id + 1, len - 1, e->expiry_ms, false) < 0)
			goto nomem;
	}
	return 0;
nomem:
	snprintf(err, errlen, "out of memory writing %s", s->path);
	return -ENOMEM;
}

int idx_sst_put_elem(struct idx_sst *s, const void *ident, size_t len, const void *value,
                     size_t vlen, char *err, size_t errlen)
{
	struct fmt_ident id;
	if (!fmt_ident_parse(ident, len, &id) || id.kind != FMT_IDENT_ELEM) {
		snprintf(err, errlen, "%s: not an element ident (a bug in the caller)", s->path);
		return -EINVAL;
	}
	int ret = sst_check_order(s, ident, len, err, errlen);
	return ret < 0 ? ret : sst_put_row(s, ident, len, value, vlen, err, errlen);
}

int idx_sst_finish_elems(struct idx_sst *s, char *err, size_t errlen)
{
	char *rerr = NULL;
	rocksdb_sstfilewriter_finish(s->w, &rerr);
	if (rerr) {
		snprintf(err, errlen, "writing %s: %s (check free space)", s->path, rerr);
		rocksdb_free(rerr);
		return -EIO;
	}
	return 0;
}

/* Expiry-row order: expiry, then the key as RocksDB compares it. */
static int xrow_cmp(const void *a, const void *b)
{
	const struct sst_xrow *x = a, *y = b;
	if (x->expiry_ms != y->expiry_ms)
		return x->expiry_ms < y->expiry_ms ? -1 : 1;
	size_t n = x->klen < y->klen ? x->klen : y->klen;
	int c = n ? memcmp(x->key, y->key, n) : 0;
	if (c != 0)
		return c;
	return x->klen < y->klen ? -1 : x->klen > y->klen;
}

static int seg_live_cmp(const void *a, const void *b)
{
	const struct idx_seg_live *x = a, *y = b;
	return x->segment < y->segment ? -1 : x->segment > y->segment;
}

int idx_sst_finish(struct idx_sst *s, uint64_t applied_lsn, const uint32_t *map_ids,
                   uint32_t map_n, uint32_t map_next, uint32_t db, const struct idx_count *count,
                   struct idx_seg_live *live, size_t n_live, char *err, size_t errlen)
{
	/* Row order: every 'k' row (added), then "m:applied_lsn" < "m:dbmap",
	 * the 'n' row, the 's' rows, then the 'x' rows. */
	char *rerr = NULL;
	uint8_t le[8];
	put_le64(le, applied_lsn);
	rocksdb_sstfilewriter_put(s->w, META_APPLIED_LSN, strlen(META_APPLIED_LSN),
	                          (const char *)le, sizeof(le), &rerr);
	if (rerr == NULL && map_ids != NULL) {
		uint8_t *v = malloc(fmt_dbmap_size(map_n));
		if (v == NULL) {
			snprintf(err, errlen, "out of memory writing %s", s->path);
			return -ENOMEM;
		}
		fmt_encode_dbmap(v, map_ids, map_n, map_next);
		rocksdb_sstfilewriter_put(s->w, META_DBMAP, strlen(META_DBMAP), (const char *)v,
		                          fmt_dbmap_size(map_n), &rerr);
		free(v);
	}
	if (rerr == NULL) {
		uint8_t row[COUNT_ROW_LEN], v[COUNT_VALUE_LEN];
		count_row(row, db);
		count_value(v, count);
		rocksdb_sstfilewriter_put(s->w, (const char *)row, sizeof(row), (const char *)v,
		                          sizeof(v), &rerr);
	}
	if (n_live > 1)
		qsort(live, n_live, sizeof(*live), seg_live_cmp);
	for (size_t i = 0; i < n_live && rerr == NULL; i++) {
		uint8_t srow[SEGMENT_ROW_LEN];
		segment_row(srow, live[i].segment, db);
		put_le64(le, live[i].live);
		rocksdb_sstfilewriter_put(s->w, (const char *)srow, sizeof(srow), (const char *)le,
		                          sizeof(le), &rerr);
	}
	if (s->n_xrows > 1)
		qsort(s->xrows, s->n_xrows, sizeof(*s->xrows), xrow_cmp);
	uint8_t *row = s->row;
	for (size_t i = 0; i < s->n_xrows && rerr == NULL; i++) {
		const struct sst_xrow *x = &s->xrows[i];
		expiry_prefix(row, x->expiry_ms);
		if (x->klen)
			memcpy(row + 9, x->key, x->klen); /* db id and user key */
		if (x->is_delete)
			rocksdb_sstfilewriter_delete(s->w, (const char *)row, 9 + x->klen, &rerr);
		else
			rocksdb_sstfilewriter_put(s->w, (const char *)row, 9 + x->klen, "", 0,
			                          &rerr);
	}
	if (rerr == NULL)
		rocksdb_sstfilewriter_finish(s->w, &rerr);
	if (rerr) {
		snprintf(err, errlen, "writing %s: %s (check free space)", s->path, rerr);
		rocksdb_free(rerr);
		return -EIO;
	}
	return 0;
}

void idx_sst_free(struct idx_sst *s)
{
	if (s == NULL)
		return;
	if (s->w)
		rocksdb_sstfilewriter_destroy(s->w);
	if (s->opts)
		rocksdb_options_destroy(s->opts);
	if (s->env_opts)
		rocksdb_envoptions_destroy(s->env_opts);
	while (s->chunks) {
		struct sst_chunk *c = s->chunks;
		s->chunks = c->next;
		free(c);
	}
	free(s->xrows);
	free(s->vbuf);
	free(s->path);
	free(s);
}

int idx_ingest(struct idx *ix, const char *const *paths, size_t n, uint64_t applied_lsn,
               char *err, size_t errlen)
{
	char *rerr = NULL;
	rocksdb_ingestexternalfileoptions_t *o = rocksdb_ingestexternalfileoptions_create();
	rocksdb_ingestexternalfileoptions_set_move_files(o, 1);
	rocksdb_ingest_external_file(ix->db, paths, n, o, &rerr);
	rocksdb_ingestexternalfileoptions_destroy(o);
	if (rerr) {
		snprintf(err, errlen, "index %s: ingesting %s%s failed: %s", ix->path, paths[0],
		         n > 1 ? " and more" : "", rerr);
		rocksdb_free(rerr);
		ix->stats.errors++;
		return -EIO;
	}
	ix->applied_lsn = applied_lsn;
	ix->stats.writes++;
	return 0;
}
