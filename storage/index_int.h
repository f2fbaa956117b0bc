/* index_int.h: what index.c, index_read.c, index_reclaim.c and index_sst.c
 * share (the rows' constants, the handles, the row encoders).  Private to
 * those files; the contract is index.h. */
#ifndef RINGKV_STORAGE_INDEX_INT_H
#define RINGKV_STORAGE_INDEX_INT_H

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/format.h"
#include "storage/index.h"

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
#define ENTRY_HEADER_MAX                                                                           \
	(2 + 6 * 10 + 1) /* flags, type, at most six 10-byte varints,                              \
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
/* Every SST file stays open (-1): a read limited to the block cache
 * (READ_TIER_BLOCK_CACHE, the loop's lookups) of a file not in RocksDB's
 * table cache comes back OK with an empty value in RocksDB 7.8 (Debian 12),
 * instead of Incomplete (facebook/rocksdb#12443, fixed in 9.1): a key's row
 * read as corrupt, a set member as present.  With every file open, no read
 * misses the table cache. */
#define MAX_OPEN_FILES        (-1)
#define L0_COMPACTION_TRIGGER 4
#define BLOOM_BITS_PER_KEY    10
#define MEMTABLE_BLOOM_RATIO  0.1
#define METADATA_BLOCK_BYTES  4096 /* index and filter partition size */
#define INFO_LOG_FILES        3
#define INFO_LOG_BYTES        (8u << 20)
#define INSERT_HINT_OPTION    "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.2"

#define KEY_BUF_SIZE    FMT_IDENT_MAX /* the longest RocksDB key: an element row */
#define KEY_ROW_HEAD    9             /* 'k' + be32 db id + be32 hash of the user key */
#define EXPIRY_ROW_HEAD 13            /* 'x' + be64 expiry + be32 db id */
#define SEGMENT_ROW_LEN 13            /* 's' + be64 segment + be32 db id */
#define COUNT_ROW_LEN   5             /* 'n' + be32 db id */
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
	/* The lookup threads (index_lookup.c): a FIFO under a mutex, filled a
	 * list at a time by the proactors and drained a batch at a time. */
	pthread_mutex_t lookup_lock;
	pthread_cond_t lookup_cond;
	struct idx_lookup *lookup_head, *lookup_tail;
	unsigned lookup_idle; /* threads waiting on lookup_cond */
	bool lookup_stop;
	unsigned n_lookup_threads; /* started; 0: lookups are off */
	pthread_t *lookup_threads;
};

struct idx {
	rocksdb_t *db;
	rocksdb_column_family_handle_t *cf; /* the default column family (batched MultiGet) */
	struct idx_shared *sh;
	char *path;                                /* for messages; owned */
	rocksdb_readoptions_t *ro_cached;          /* kBlockCacheTier */
	rocksdb_readoptions_t *ro_blocking;        /* kReadAllTier */
	rocksdb_readoptions_t *ro_persisted;       /* kPersistedTier */
	rocksdb_readoptions_t *ro_scan;            /* key rows of a database, below scan_upper,
	                                              no cache fill */
	rocksdb_readoptions_t *ro_elems;           /* element rows of a collection, below
	                                              elem_upper */
	rocksdb_readoptions_t *ro_expiry;          /* 'x' rows, below expiry_upper */
	rocksdb_writeoptions_t *wo;                /* WAL disabled */
	rocksdb_compactionfilterfactory_t *filter; /* drops garbage rows (compaction filter) */
	uint64_t applied_lsn;                      /* as of the last write */
	struct idx_stats stats;                    /* counters; sizes filled on demand */
	_Atomic uint64_t garbage_dropped;          /* by the compaction filter's threads */
	_Atomic uint64_t compactions;              /* ranges the compactor ran */
	_Atomic uint32_t compact_pending;          /* jobs of this index not yet done */
	atomic_bool closing;                       /* the compactor skips its jobs */
	_Atomic(rocksdb_t *) filter_db;            /* db once open, NULL while RocksDB opens or
	                                              closes it (it may compact then, on its
	                                              threads): filters read key rows through it */
	uint8_t expiry_upper[9];                   /* ro_expiry's bound (the C API keeps a
	                                              pointer to the bounds, not a copy) */
	uint8_t scan_upper[5];                     /* ro_scan's: the next database's key rows */
	uint8_t *elem_upper;                       /* ro_elems's: KEY_BUF_SIZE bytes */
	uint8_t kbuf[KEY_BUF_SIZE];                /* a RocksDB key being built */
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

/* Counts the blocks RocksDB reads from files during one blocking call, via
 * the calling thread's perf context (counting is switched on only around
 * the call). */
struct block_read_probe {
	rocksdb_perfcontext_t *pc; /* the calling thread's context; NULL if unavailable */
	uint64_t before;
};

/* Row and entry encoding, metadata and probes (index.c). */
size_t ix_entry_encode_header(uint8_t *dst, const struct idx_entry *e);
bool ix_entry_decode(const uint8_t *src, size_t len, struct idx_entry *e);
/* idx_get_many's work, usable from any thread: copies inline values into
 * probe->value (when want_values) and counts into *stats instead of
 * ix->stats (when stats is not NULL). */
struct ix_many_stats {
	uint64_t gets, errors, blocks_read, would_block;
};
int ix_get_many(struct idx *ix, struct idx_probe *probes, size_t n, enum idx_read_mode mode,
                bool want_values, struct ix_many_stats *stats);

bool ix_row_decode(uint8_t kind, const uint8_t *v, size_t vlen, struct idx_entry *e);
void ix_expiry_prefix(uint8_t *dst, uint64_t expiry_ms);
size_t ix_ident_row(uint8_t *dst, const uint8_t *ident, size_t len);
void ix_key_row_head(uint8_t out[KEY_ROW_HEAD], uint32_t db, uint32_t hash);
void ix_put_le64(uint8_t *dst, uint64_t v);
void ix_segment_row(uint8_t dst[SEGMENT_ROW_LEN], uint64_t segment, uint32_t db);
void ix_count_row(uint8_t dst[COUNT_ROW_LEN], uint32_t db);
void ix_count_value(uint8_t dst[COUNT_VALUE_LEN], const struct idx_count *c);
rocksdb_options_t *ix_make_options(const struct idx_shared *sh, int compression, struct idx *ix);
bool ix_is_incomplete(const char *rerr);
int ix_meta_get(struct idx *ix, const rocksdb_readoptions_t *ro, const char *name, void *out,
                size_t size, char **rerr);
void ix_probe_begin(struct block_read_probe *p);
void ix_probe_end(struct idx *ix, struct block_read_probe *p);
uint64_t ix_probe_take(struct block_read_probe *p);           /* the blocks read; any thread */
void ix_lookup_stop(struct idx_shared *sh, unsigned started); /* joins the lookup threads */
int ix_batch_op_cmp(const void *a, const void *b);

/* Reads (index_read.c). */
uint64_t ix_row_order(const uint8_t *row, size_t len);
int ix_iter_error(struct idx *ix, rocksdb_iterator_t *it, const char *what);

/* The compaction filter (index_reclaim.c). */
rocksdb_compactionfilterfactory_t *ix_garbage_filter_factory(struct idx *ix);

#endif
