/* index: one shard's key index — a RocksDB instance (DIR/shard-NNN/index/)
 * mapping each user key to where its current value is: a pointer into the
 * shard's log (log.h) or, for a small value, the value itself; plus the key's
 * expiry.  Its on-disk format is defined here and nowhere else.
 *
 * The log is the write-ahead log, so RocksDB's own WAL is disabled on every
 * write.  A batch is applied only after its log records are written, together
 * with `applied_lsn` (every record up to it has its effect in the index) and
 * the key count of the rows it then holds, in one atomic WriteBatch.  After a crash RocksDB reopens at
 * its last flushed state, which is consistent (one column family, every batch
 * whole in one memtable); recovery reads applied_lsn and replays the log from
 * applied_lsn + 1.
 *
 * RocksDB rows, in one column family (keys compare bytewise; sizes in bytes,
 * n = the user key's length).  Their first bytes order the kinds
 * 'k' < 'm' < 's' < 'x', so each kind is one contiguous range:
 *
 *   key row, one per key
 *     offset  size  field
 *     0       1     'k' (0x6B)
 *     1       4     CRC32C of the user key, big-endian: rows sort by hash, so a
 *                   SCAN cursor is a hash and survives restarts
 *     5       n     user key
 *     value: the entry (below)
 *
 *   expiry row, one per key with an expiry (the expiry index)
 *     offset  size  field
 *     0       1     'x' (0x78)
 *     1       8     expiry_ms, big-endian (rows sort by expiry, then key)
 *     9       n     user key
 *     value: empty
 *
 *   segment row, one per log segment whose live bytes have been counted
 *   (GC accounting; 0 included), removed when the segment is deleted
 *     offset  size  field
 *     0       1     's' (0x73)
 *     1       8     segment id, big-endian
 *     value: le64, bytes of the segment's records that key rows point at
 *     (written in the same batches as the key rows, so it is exact after a
 *     crash; a segment without a row counts as 0 live bytes, which only makes
 *     GC visit it early — GC checks every record against the key rows)
 *
 *   metadata rows (ASCII keys)
 *     "m:version"       value: le32, IDX_FORMAT_VERSION (written once, when an
 *                       empty index is initialised)
 *     "m:applied_lsn"   value: le64 } written with every idx_write and
 *     "m:key_count"     value: le64 } idx_drop_all, and in an idx_sst table
 *
 * idx_drop_all deletes the whole 'k', 'x' and 's' ranges; an idx_sst table
 * (the offline import) holds key rows, expiry rows (and tombstones of the
 * expiry rows it replaces), segment rows and the two written metadata rows.
 *
 * Entry (the value of a key row):
 *
 *   offset  size  field
 *   0       1     bits 0..3: entry encoding version (1); bit 4: INLINE;
 *                 bit 5: EXPIRY; bits 6..7: zero
 *   1       var   expiry_ms, unsigned LEB128; present only with EXPIRY
 *           var   lsn of the record that set the value, LEB128
 *           var   value_len, LEB128
 *   INLINE: value_len bytes, the value; they end the entry
 *   else:   var segment, var offset, var length (LEB128, struct log_pos);
 *           they end the entry
 *
 * Invariants: an entry with expiry_ms != 0 has exactly one 'x' row, with its
 * expiry, and every 'x' row belongs to such an entry (kept by callers passing
 * the previous expiry to idx_batch_put/idx_batch_delete); m:key_count is the
 * number of key rows (kept by callers); the index holds the effects of every
 * log record with LSN <= m:applied_lsn, and a key's row may already hold a
 * newer record of that key (the store writes its batch in slices: replay
 * re-applies every record after applied_lsn against the row it finds, so it
 * ends where the log does).  An index without m:version is accepted only
 * when it is empty (it is then initialised); any version other than
 * IDX_FORMAT_VERSION is refused at open.
 *
 * Threads: an idx handle and its batches belong to one thread (the shard's
 * proactor); only struct idx_shared (block cache, background threads) is used
 * by all shards.  Calls may block (disk reads, a stalled write, RocksDB's
 * mutex) except idx_get with IDX_CACHED_ONLY, which never waits for I/O.
 */
#ifndef RINGKV_INDEX_H
#define RINGKV_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDX_FORMAT_VERSION 1 /* "m:version"; idx_open refuses any other */

/* One LRU block cache and the background thread pools (RocksDB's process-wide
 * default Env) shared by every shard's index. */
struct idx_shared;

/* Creates the shared cache of `cache_bytes` (data, index and filter blocks of
 * all shards) and sizes the background pools: `background_threads` (>= 1)
 * compaction threads and max(1, background_threads / 4) flush threads.
 * Returns 0, or -EINVAL / -ENOMEM with a message in `err`. */
int idx_shared_create(struct idx_shared **out, uint64_t cache_bytes, int background_threads,
                      char *err, size_t errlen);

/* Frees the shared state.  Call after every idx using it is closed. */
void idx_shared_destroy(struct idx_shared *sh);

/* Where a key's current value is. */
struct idx_entry {
	uint64_t expiry_ms;   /* absolute Unix time in ms, 0 = none */
	uint64_t lsn;         /* LSN of the log record that set this value */
	uint32_t value_len;   /* length of the value */
	bool is_inline;       /* the value is stored in the index */
	const uint8_t *value; /* inline: the value_len bytes (see idx_get for
	                         their owner); NULL otherwise */
	uint64_t segment;     /* not inline: the record's position in the log */
	uint64_t offset;      /* (the fields of struct log_pos) */
	uint32_t length;
};

struct idx;

/* Opens (creating it and missing parent directories) the index at `path`,
 * using sh's cache and threads.  Blocking: call at start-up.  Returns 0, or
 * -errno with a message in `err` that names the cause and the fix (another
 * process holds the directory, an unknown format version, a directory that is
 * not a ringkv index, a RocksDB error). */
int idx_open(struct idx **out, struct idx_shared *sh, const char *path, char *err, size_t errlen);

/* Flushes the memtables (so the next open replays little of the log), closes
 * and frees the index.  Batches are not freed. */
void idx_close(struct idx *ix);

/* applied_lsn and the key count as of the last idx_write / idx_drop_all (or
 * as recovered by idx_open). */
uint64_t idx_applied_lsn(const struct idx *ix);
uint64_t idx_key_count(const struct idx *ix);

enum idx_read_mode {
	IDX_CACHED_ONLY, /* memtables and block cache only: never blocks on I/O */
	IDX_BLOCKING,    /* may read SST files */
};

/* Looks `key` up.  Returns 0 with *e filled; -ENOENT (absent); -EWOULDBLOCK
 * (IDX_CACHED_ONLY and the answer is not in memory); -EINVAL (klen above
 * FMT_KEY_MAX); -ENOMEM; -EIO (a RocksDB error or a corrupt entry; logged).
 * When `value` is not NULL, *value is set: for an inline entry, a malloc()ed
 * copy of the value that the caller frees with free() (e->value points to
 * it); otherwise NULL.  With value == NULL an inline entry's e->value is
 * NULL. */
int idx_get(struct idx *ix, const void *key, size_t klen, enum idx_read_mode mode,
            struct idx_entry *e, uint8_t **value);

/* One key of idx_get_many: key and klen in, status and e out. */
struct idx_probe {
	const void *key;
	size_t klen;
	int status;         /* 0 (e filled), -ENOENT or -EIO (logged) */
	struct idx_entry e; /* e.value is NULL: inline values are not copied */
};

/* Looks n keys up at once, like idx_get with IDX_BLOCKING (it may read SST
 * files), in one RocksDB batched MultiGet: the keys go in row order, so
 * neighbours share the filter partition, index block and cache lookups that
 * n idx_get calls would each repeat.  Returns 0 when every probe has its
 * answer, -EIO when some probe's status is -EIO, -EINVAL (a key above
 * FMT_KEY_MAX; nothing looked up) or -ENOMEM (nothing looked up). */
int idx_get_many(struct idx *ix, struct idx_probe *probes, size_t n);

/* A batch of changes, built on the index's thread and applied by idx_write.
 * It copies keys and values, so they may be freed right after each call. */
struct idx_batch;

/* Returns an empty batch, or NULL when out of memory. */
struct idx_batch *idx_batch_new(void);

/* Sets key's entry to *e (e->value is read for an inline entry).
 * prev_expiry_ms must be the expiry of the entry this one replaces — as the
 * index holds it, or as set by an earlier put of the same key in this batch —
 * or 0 if there is none: it names the expiry row to remove. */
void idx_batch_put(struct idx_batch *b, const void *key, size_t klen, const struct idx_entry *e,
                   uint64_t prev_expiry_ms);

/* Deletes key's entry; prev_expiry_ms as for idx_batch_put. */
void idx_batch_delete(struct idx_batch *b, const void *key, size_t klen, uint64_t prev_expiry_ms);

/* Empties the batch for reuse. */
void idx_batch_clear(struct idx_batch *b);
void idx_batch_free(struct idx_batch *b);

/* Applies the batch, with applied_lsn and key_count (the new absolute values),
 * atomically; RocksDB's WAL disabled, not synced.  Changes to one row take
 * effect in the order they were added (the last one wins); rows are handed to
 * RocksDB sorted, each once.  The batch is empty on return either way.
 * Returns 0 or -EIO (logged, also when the batch ran out of memory; the index
 * then holds none of the batch). */
int idx_write(struct idx *ix, struct idx_batch *b, uint64_t applied_lsn, uint64_t key_count);

/* Deletes every key, expiry and segment row (FLUSHALL) and sets applied_lsn, with key
 * count 0, in one atomic write.  Returns 0 or -EIO (logged). */
int idx_drop_all(struct idx *ix, uint64_t applied_lsn);

/* applied_lsn as persisted in SST files, i.e. what idx_open would recover
 * after a crash now (GC waits on it before deleting a relocated segment).
 * Blocking read.  Returns 0 if it cannot be read (logged). */
uint64_t idx_persisted_lsn(struct idx *ix);

/* Sets the live-byte count of a log segment ('s' row) / removes the row of a
 * deleted segment, in the batch. */
void idx_batch_set_live(struct idx_batch *b, uint64_t segment, uint64_t live_bytes);
void idx_batch_forget_segment(struct idx_batch *b, uint64_t segment);

/* Calls fn for every segment row, in segment order.  Blocking.  Returns 0 or
 * -EIO (logged). */
int idx_segments_live(struct idx *ix, void (*fn)(void *arg, uint64_t segment, uint64_t live),
                      void *arg);

/* Asks RocksDB to flush the memtable in the background and returns at once.
 * Returns 0 (requested), -EALREADY (the memtable is empty), -EBUSY (a flush
 * is still running or L0 awaits compaction: requesting now could block this
 * thread; ask again later) or -EIO (logged). */
int idx_request_flush(struct idx *ix);

/* Visits a key: e->value (inline) points into RocksDB memory valid only
 * during the call.  A non-zero return stops the walk (this key counts as
 * visited). */
typedef int (*idx_visit_fn)(void *arg, const void *key, size_t klen, const struct idx_entry *e);

/* The hash that orders key rows: CRC32C of the user key. */
uint32_t idx_key_hash(const void *key, size_t klen);

/* Visits keys in hash order from the first with hash >= from_hash: at least
 * `max` (>= 1) of them when there are, then the rest of the last one's hash
 * group (so a resumption never splits a group), expired ones included.
 * Blocking reads, bounded by max plus a group.  Returns 1 when keys may remain
 * (*next_hash is where to resume; a visitor's non-zero return also ends the
 * call, and its group is visited again next time), 0 when the walk reached
 * the last key, or -EINVAL (max 0) / -EIO (logged).  Because the cursor is a
 * hash, a walk survives restarts and visits every key that exists for its
 * whole duration at least once. */
int idx_scan(struct idx *ix, uint32_t from_hash, size_t max, idx_visit_fn fn, void *arg,
             uint32_t *next_hash);

/* Visits an expired key: its key and its expiry (the entry's expiry_ms).  A
 * non-zero return stops the walk. */
typedef int (*idx_expired_fn)(void *arg, const void *key, size_t klen, uint64_t expiry_ms);

/* Where an expiry walk resumes: after the row of (expiry_ms, key). */
struct idx_expiry_pos {
	uint64_t expiry_ms;
	const void *key;
	size_t klen;
};

/* Visits up to `max` keys whose expiry is <= now_ms, earliest expiry first
 * (ties in key order), by the expiry index: from the first, or when `after`
 * is not NULL from the first row after that one.  Blocking reads, bounded by
 * max.  Keys deleted in batches not yet written are visited again (a caller
 * walking past them resumes after the last row it visited).  Returns the
 * number visited, -EINVAL (after->klen above FMT_KEY_MAX), -ENOMEM or -EIO
 * (logged). */
int idx_expired(struct idx *ix, uint64_t now_ms, const struct idx_expiry_pos *after, size_t max,
                idx_expired_fn fn, void *arg);

struct idx_stats {
	uint64_t gets;               /* idx_get calls */
	uint64_t get_blocking;       /* of them with IDX_BLOCKING */
	uint64_t get_would_block;    /* IDX_CACHED_ONLY calls that returned -EWOULDBLOCK */
	uint64_t multi_gets;         /* idx_get_many calls (their keys count in gets) */
	uint64_t block_cache_misses; /* blocks read from files by blocking gets, scans and
	                                expiry walks (RocksDB perf context) */
	uint64_t writes;             /* idx_write and idx_drop_all calls applied */
	uint64_t errors;             /* calls that returned -EIO */
	uint64_t scanned;            /* keys visited by idx_scan */
	uint64_t expired_visited;    /* keys visited by idx_expired */
	uint64_t flush_requests;     /* flushes idx_request_flush started */
	/* read from RocksDB by idx_get_stats */
	uint64_t memtable_bytes;     /* active and unflushed memtables */
	uint64_t sst_bytes;          /* SST files */
	uint64_t table_reader_bytes; /* table readers outside the block cache */
	uint64_t block_cache_bytes;  /* the shared cache's usage (all shards) */
};

/* Fills *out: the counters, and sizes queried from RocksDB (0 when one cannot
 * be read). */
void idx_get_stats(struct idx *ix, struct idx_stats *out);


/* ---- bulk load (the offline import, storage/bulk.h) -------------------- */

/* A sorted RocksDB table file (SstFileWriter) holding key rows, expiry rows
 * segment rows and the metadata rows, built for idx_ingest.  Owned by one
 * thread. */
struct idx_sst;

/* Starts the file `path` (created or truncated) with ix's table options.
 * Returns 0, or -EIO / -ENOMEM with a message in `err`. */
int idx_sst_open(struct idx_sst **out, struct idx *ix, const char *path, char *err,
                 size_t errlen);

/* Adds key's row with entry *e (e->value read for an inline entry).  Keys
 * must come in row order — idx_key_hash ascending, then the key bytes
 * compared as memcmp with a shorter prefix first — each key once.
 * prev_expiry_ms is the expiry of the entry the index holds for the key now
 * (0 if none): its expiry row is deleted, the new one added, as
 * idx_batch_put does.  Returns 0, -EINVAL (out of order), -ENOMEM or -EIO,
 * with a message in `err`. */
int idx_sst_put(struct idx_sst *s, const void *key, size_t klen, const struct idx_entry *e,
                uint64_t prev_expiry_ms, char *err, size_t errlen);

/* A segment row to write: the segment's new live-byte count. */
struct idx_seg_live {
	uint64_t segment;
	uint64_t live;
};

/* Writes the metadata rows (applied_lsn, key_count: the index's new absolute
 * values), the segment rows live[0..n_live) (any order, each segment once)
 * and the expiry rows, and closes the file.  Returns 0 or -errno with a
 * message in `err`. */
int idx_sst_finish(struct idx_sst *s, uint64_t applied_lsn, uint64_t key_count,
                   struct idx_seg_live *live, size_t n_live, char *err, size_t errlen);

/* Frees the builder (an unfinished file is left for the caller to delete). */
void idx_sst_free(struct idx_sst *s);

/* Ingests a file built by idx_sst_finish into ix (RocksDB moves it into the
 * index directory): its key, expiry and segment rows and metadata become
 * visible in
 * one atomic step, and idx_applied_lsn / idx_key_count return its values.
 * Returns 0, or -EIO with a message in `err` (the index is then unchanged). */
int idx_ingest(struct idx *ix, const char *path, uint64_t applied_lsn, uint64_t key_count,
               char *err, size_t errlen);

#endif
