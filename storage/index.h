/* index: one shard's index — a RocksDB instance (DIR/shard-NNN/index/)
 * holding, for every key of every database, where its current value is (a
 * pointer into the shard's log, log.h, or for a small string the value
 * itself), its type and expiry; for a collection its metadata, and one row per
 * element.  Its on-disk format is defined here and nowhere else.
 *
 * Callers name rows by idents (format.h): a key ident's row is a key row, an
 * element ident's row an element row.
 *
 * The log is the write-ahead log, so RocksDB's own WAL is disabled on every
 * write.  A batch is applied only after its log records are written, together
 * with `applied_lsn` (the highest LSN whose effects the index holds) and the
 * key counts it changed, in one atomic WriteBatch.  After a crash RocksDB
 * reopens at its last flushed state, which is consistent (one column family,
 * every batch whole in one memtable); recovery reads applied_lsn and replays
 * the log from applied_lsn + 1.
 *
 * RocksDB rows, in one column family (keys compare bytewise; integers in row
 * keys big-endian, in values little-endian unless said; n = the user key's
 * length; each kind of row is one contiguous range, 'e' < 'k' < 'm' < 'n' <
 * 's' < 'x'):
 *
 *   element row: the element ident itself (format.h): 'e', db id, key length,
 *     key, version, CRC32C of the element, element.  So the elements of one
 *     collection are contiguous and ordered by their hash.
 *     value: the element's value, raw (empty for a set member)
 *
 *   key row
 *     offset  size  field
 *     0       1     'k'
 *     1       4     stored database id (DBMAP, format.h)
 *     5       4     CRC32C of the user key: a database's rows sort by hash, so
 *                   a SCAN cursor is a hash and survives restarts
 *     9       n     user key
 *     value: the entry (below)
 *
 *   expiry row, one per key with an expiry (the expiry index)
 *     offset  size  field
 *     0       1     'x'
 *     1       8     expiry_ms (rows sort by expiry, then database and key)
 *     9       4     stored database id
 *     13      n     user key
 *     value: empty
 *
 *   count row, one per stored database id that has keys
 *     offset  size  field
 *     0       1     'n'
 *     1       4     stored database id
 *     value: le64 keys (key rows), le64 expires (key rows with an expiry),
 *            le64 the sum of their expiry times in seconds (INFO avg_ttl)
 *
 *   segment row, one per (log segment, database id) whose records key rows
 *   point at (GC accounting)
 *     offset  size  field
 *     0       1     's'
 *     1       8     segment id
 *     9       4     stored database id
 *     value: le64, bytes of the segment's records that key rows of that
 *     database point at (written in the same batches as the key rows, so
 *     exact after a crash; a segment without a row counts as 0 live bytes,
 *     which only makes GC visit it early — GC checks every record against the
 *     key rows)
 *
 *   metadata rows (ASCII keys)
 *     "m:version"       value: le32, IDX_FORMAT_VERSION
 *     "m:applied_lsn"   value: le64
 *     "m:dbmap"         value: the shard's map of databases to stored ids, as
 *                       a DBMAP record's value (format.h); absent until the
 *                       store first writes it
 *
 * Entry (the value of a key row):
 *
 *   offset  size  field
 *   0       1     bits 0..3: entry encoding version (2); bit 4: INLINE;
 *                 bit 5: EXPIRY; bits 6..7: zero
 *   1       1     type (enum fmt_value_type)
 *   2       var   expiry_ms, unsigned LEB128; present only with EXPIRY
 *           var   lsn of the record that set the entry, LEB128
 *   string:
 *           var   value_len, LEB128
 *     INLINE: value_len bytes, the value; they end the entry
 *     else:   var segment, var offset, var length (LEB128, struct log_pos);
 *             they end the entry
 *   hash, set (never INLINE):
 *           var   version, var element count (LEB128), then 1 byte of
 *                 encoding flags (FMT_ENC_*); they end the entry
 *
 * Invariants: an entry with expiry_ms != 0 has exactly one 'x' row, with its
 * expiry, and every 'x' row belongs to such an entry (kept by callers passing
 * the previous expiry to idx_batch_put/idx_batch_delete); a count row holds
 * what its database's key rows are (kept by callers); the index holds the
 * effects of every log record with LSN <= m:applied_lsn and of none after.
 * An index without m:version is accepted only when it is empty (it is then
 * initialised); any version other than IDX_FORMAT_VERSION is refused at open.
 *
 * Garbage.  Whole-key operations never walk elements: deleting, expiring or
 * overwriting a collection removes its key row only, and FLUSHDB / FLUSHALL /
 * SWAPDB change the database map only.  Rows left behind — element rows whose
 * key row is gone or has another version, and rows of a stored database id
 * the map no longer has — are dropped by a compaction filter as RocksDB
 * compacts the files that hold them (idx_compact_hint asks it to).  The filter
 * judges by what the SST files hold (kPersistedTier), never by the memtables:
 * a row it drops is garbage in every state the index can recover to.  That
 * rests on one rule of the callers: an element row reaches the index no
 * earlier than its key row's metadata of the same or a later version (the
 * store applies a command's records metadata first).
 *
 * Threads: an idx handle and its batches belong to one thread (the shard's
 * proactor); only struct idx_shared (block cache, background threads, the
 * compactor thread) is used by all shards, and the compaction filter runs on
 * RocksDB's threads and the compactor's.  Calls
 * may block (disk reads, a stalled write, RocksDB's mutex) except idx_get with
 * IDX_CACHED_ONLY, which never waits for I/O.
 */
#ifndef RINGKV_INDEX_H
#define RINGKV_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDX_FORMAT_VERSION 2 /* "m:version"; idx_open refuses any other */

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

/* A row's entry.  For a key row: its type and expiry, and where a string's
 * value is or a collection's metadata.  For an element row: only is_inline
 * (true), value and value_len are set. */
struct idx_entry {
	uint8_t type;         /* key row: enum fmt_value_type */
	uint64_t expiry_ms;   /* absolute Unix time in ms, 0 = none */
	uint64_t lsn;         /* LSN of the log record that set this entry */
	uint32_t value_len;   /* string, element: length of the value */
	bool is_inline;       /* the value is stored in the index (always for a
	                         collection's metadata and an element: no log
	                         pointer) */
	const uint8_t *value; /* inline: the value_len bytes (see idx_get for
	                         their owner); NULL otherwise */
	uint64_t segment;     /* string not inline: the record's position in the log */
	uint64_t offset;      /* (the fields of struct log_pos) */
	uint32_t length;
	uint64_t version;     /* hash, set: the collection's version */
	uint64_t count;       /* hash, set: its elements */
	uint8_t enc;          /* hash, set: FMT_ENC_* */
};

/* A stored database's counts (its count row). */
struct idx_count {
	uint64_t keys;         /* key rows */
	uint64_t expires;      /* of them with an expiry */
	uint64_t expiry_sum_s; /* sum of those expiry times, Unix seconds */
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

/* applied_lsn as of the last idx_write (or as recovered by idx_open). */
uint64_t idx_applied_lsn(const struct idx *ix);

/* The database map as the index holds it: ids[0..*n) (at most `cap`) and
 * next_id.  Blocking.  Returns 0, -ENOENT (never written: a new index), or
 * -EIO (logged; also for a malformed row or one with more than cap ids). */
int idx_dbmap(struct idx *ix, uint32_t *ids, uint32_t cap, uint32_t *n, uint32_t *next_id);

/* Calls fn for every count row.  Blocking.  Returns 0 or -EIO (logged). */
int idx_counts(struct idx *ix, void (*fn)(void *arg, uint32_t db, const struct idx_count *c),
               void *arg);

enum idx_read_mode {
	IDX_CACHED_ONLY, /* memtables and block cache only: never blocks on I/O */
	IDX_BLOCKING,    /* may read SST files */
};

/* Looks an ident up.  Returns 0 with *e filled; -ENOENT (absent);
 * -EWOULDBLOCK (IDX_CACHED_ONLY and the answer is not in memory); -EINVAL (not
 * an ident); -ENOMEM; -EIO (a RocksDB error or a corrupt entry; logged).
 * When `value` is not NULL, *value is set: for an inline entry, a malloc()ed
 * copy of the value that the caller frees with free() (e->value points to
 * it); otherwise NULL.  With value == NULL an inline entry's e->value is
 * NULL. */
int idx_get(struct idx *ix, const void *ident, size_t len, enum idx_read_mode mode,
            struct idx_entry *e, uint8_t **value);

/* One ident of idx_get_many: ident and len in, status and e out. */
struct idx_probe {
	const void *key; /* the ident */
	size_t klen;
	int status;         /* 0 (e filled), -ENOENT, -EIO (logged), or -EWOULDBLOCK
	                       (idx_get_many_cached) */
	struct idx_entry e; /* e.value is NULL: inline values are not copied (idx_get_many) */
	uint8_t *value;     /* the lookup threads' copy of an inline value (index_lookup.c) */
};

/* Looks n idents up at once, like idx_get with IDX_BLOCKING (it may read SST
 * files), in one RocksDB batched MultiGet: the rows go in order, so
 * neighbours share the filter partition, index block and cache lookups that
 * n idx_get calls would each repeat.  Returns 0 when every probe has its
 * answer, -EIO when some probe's status is -EIO, -EINVAL (not an ident;
 * nothing looked up) or -ENOMEM (nothing looked up). */
int idx_get_many(struct idx *ix, struct idx_probe *probes, size_t n);

/* idx_get_many from memory only (IDX_CACHED_ONLY): a probe whose answer needs
 * a read of the files gets status -EWOULDBLOCK.  Never waits for I/O. */
int idx_get_many_cached(struct idx *ix, struct idx_probe *probes, size_t n);

/* ---- lookups off the loop ------------------------------------------------
 *
 * A proactor never waits for a disk read of the index: a lookup that misses
 * the block cache (idx_get with IDX_CACHED_ONLY says -EWOULDBLOCK) goes to
 * the lookup threads of the shared state, which read it (a MultiGet when
 * several are queued for one index) and hand the answers back in lists, one
 * per owner, through the owner's deliver function — called on a lookup
 * thread, so it only passes the list on (a message to the owner's proactor).
 * The submitter keeps each lookup, its ident and its index alive until it is
 * delivered. */
struct idx_lookup;

struct idx_lookup_owner {
	void (*deliver)(struct idx_lookup *list, void *arg); /* on a lookup thread */
	void *arg;
};

struct idx_lookup {
	struct idx *ix;                       /* in */
	const void *key;                      /* in: the ident ... */
	size_t klen;                          /* ... and its length */
	const struct idx_lookup_owner *owner; /* in: who gets the answer */
	int status;           /* out: 0 (e filled), -ENOENT, -EIO (logged), -ENOMEM, -EINVAL */
	struct idx_entry e;   /* out: an inline entry's e.value is `value` */
	uint8_t *value;       /* out: an inline entry's value, malloc()ed: the receiver frees it */
	uint64_t blocks_read; /* out: index blocks read from files for this lookup's batch
	                         (counted on one lookup of the batch) */
	struct idx_lookup *next; /* the list it is submitted and delivered in */
};

/* Starts `threads` lookup threads (1..IDX_LOOKUP_THREADS_MAX) on sh.  Until
 * then (and in tools that never start them) idx_lookups_on is false and
 * callers read blocking.  Returns 0, or -errno with a message in `err`.
 * idx_shared_destroy stops them; every submitted lookup must have been
 * delivered by then. */
#define IDX_LOOKUP_THREADS_MAX 256
int idx_lookup_start(struct idx_shared *sh, unsigned threads, char *err, size_t errlen);

/* True once idx_lookup_start has run on ix's shared state. */
bool idx_lookups_on(const struct idx *ix);

/* Queues the n lookups of `list` (linked by next, `last` the last one) for
 * the lookup threads.  Never waits for I/O: it takes the queue's lock for a
 * few pointer writes, and wakes a thread. */
void idx_lookup_submit(struct idx_shared *sh, struct idx_lookup *list, struct idx_lookup *last,
                       size_t n);

/* The shared state of ix (for idx_lookup_submit). */
struct idx_shared *idx_shared_of(const struct idx *ix);

/* A batch of changes, built on the index's thread and applied by idx_write.
 * It copies keys and values, so they may be freed right after each call. */
struct idx_batch;

/* Returns an empty batch, or NULL when out of memory. */
struct idx_batch *idx_batch_new(void);

/* Sets the row of `ident` to *e: a key row's entry, or an element row's
 * value (e->value, e->value_len).  For a key row, prev_expiry_ms must be the
 * expiry of the entry this one replaces — as the index holds it, or as set by
 * an earlier put of the same row in this batch — or 0 if there is none: it
 * names the expiry row to remove.  Element rows ignore it. */
void idx_batch_put(struct idx_batch *b, const void *ident, size_t len, const struct idx_entry *e,
                   uint64_t prev_expiry_ms);

/* Deletes the row of `ident`; prev_expiry_ms as for idx_batch_put. */
void idx_batch_delete(struct idx_batch *b, const void *ident, size_t len,
                      uint64_t prev_expiry_ms);

/* Sets a stored database's count row (all zero: removes it). */
void idx_batch_set_count(struct idx_batch *b, uint32_t db, const struct idx_count *c);

/* Sets the database map (format.h's DBMAP). */
void idx_batch_set_dbmap(struct idx_batch *b, const uint32_t *ids, uint32_t n, uint32_t next_id);

/* Empties the batch for reuse. */
void idx_batch_clear(struct idx_batch *b);
void idx_batch_free(struct idx_batch *b);

/* Applies the batch, with applied_lsn (the new absolute value), atomically;
 * RocksDB's WAL disabled, not synced.  Changes to one row take effect in the
 * order they were added (the last one wins); rows are handed to RocksDB
 * sorted, each once.  The batch is empty on return either way.  Returns 0 or
 * -EIO (logged, also when the batch ran out of memory; the index then holds
 * none of the batch). */
int idx_write(struct idx *ix, struct idx_batch *b, uint64_t applied_lsn);

/* applied_lsn as persisted in SST files, i.e. what idx_open would recover
 * after a crash now (GC waits on it before deleting a relocated segment).
 * Blocking read.  Returns 0 if it cannot be read (logged). */
uint64_t idx_persisted_lsn(struct idx *ix);

/* Sets the live-byte count of (log segment, stored database id) / removes
 * the row, in the batch. */
void idx_batch_set_live(struct idx_batch *b, uint64_t segment, uint32_t db, uint64_t live_bytes);
void idx_batch_forget_live(struct idx_batch *b, uint64_t segment, uint32_t db);

/* Calls fn for every segment row, in (segment, db) order.  Blocking.  Returns
 * 0 or -EIO (logged). */
int idx_segments_live(struct idx *ix,
                      void (*fn)(void *arg, uint64_t segment, uint32_t db, uint64_t live),
                      void *arg);

/* Asks RocksDB to flush the memtable in the background and returns at once.
 * Returns 0 (requested), -EALREADY (the memtable is empty), -EBUSY (a flush
 * is still running or L0 awaits compaction: requesting now could block this
 * thread; ask again later) or -EIO (logged). */
int idx_request_flush(struct idx *ix);

/* Says that the rows under `prefix` (or every row of a stored database id:
 * idx_compact_hint_db) are likely garbage: the shared compactor thread
 * compacts that range of the index soon (the hints of one index that wait
 * meanwhile, as one range spanning them) and the compaction filter drops
 * them.  Call only once the index has persisted what makes them garbage
 * (idx_persisted_lsn).  Returns at once (a lock-free push and an eventfd
 * write); a failure is logged and only delays reclaiming the space until
 * RocksDB compacts those files on its own. */
void idx_compact_hint(struct idx *ix, const void *prefix, size_t len);

/* RocksDB's estimate of the rows the index holds (garbage included); 0 when
 * it cannot tell. */
uint64_t idx_estimate_rows(struct idx *ix);
void idx_compact_hint_db(struct idx *ix, uint32_t db);

/* Visits a key: e->value (inline) points into RocksDB memory valid only
 * during the call.  A non-zero return stops the walk (this key counts as
 * visited). */
typedef int (*idx_visit_fn)(void *arg, const void *key, size_t klen, const struct idx_entry *e);

/* The hash that orders key rows: CRC32C of the user key. */
uint32_t idx_key_hash(const void *key, size_t klen);

/* Visits the keys of stored database `db` in hash order from the first with
 * hash >= from_hash: at least `max` (>= 1) of them when there are, then the
 * rest of the last one's hash group (so a resumption never splits a group),
 * expired ones included.  Blocking reads, bounded by max plus a group.
 * Returns 1 when keys may remain (*next_hash is where to resume; a visitor's
 * non-zero return also ends the call, and its group is visited again next
 * time), 0 when the walk reached the last key, or -EINVAL (max 0) / -EIO
 * (logged).  Because the cursor is a hash, a walk survives restarts and
 * visits every key that exists for its whole duration at least once. */
int idx_scan(struct idx *ix, uint32_t db, uint32_t from_hash, size_t max, idx_visit_fn fn,
             void *arg, uint32_t *next_hash);

/* Visits an element: the element, its value (RocksDB memory valid only during
 * the call) and its hash.  A non-zero return stops the walk. */
typedef int (*idx_elem_fn)(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
                           size_t vlen, uint32_t hash);

/* As idx_scan, for the element rows of one collection: `prefix` is the part
 * every element ident of it starts with (fmt_elem_prefix_len bytes), the
 * walk goes in element-hash order from from_hash.  Returns 1 (more may
 * remain, *next_hash set), 0 (the end) or -EINVAL / -EIO (logged). */
int idx_elem_scan(struct idx *ix, const void *prefix, size_t plen, uint32_t from_hash,
                  size_t max, idx_elem_fn fn, void *arg, uint32_t *next_hash);

/* Visits an expired key: its stored database, key and expiry (the entry's
 * expiry_ms).  A non-zero return stops the walk. */
typedef int (*idx_expired_fn)(void *arg, uint32_t db, const void *key, size_t klen,
                              uint64_t expiry_ms);

/* Where an expiry walk resumes: after the row of (expiry_ms, db, key). */
struct idx_expiry_pos {
	uint64_t expiry_ms;
	uint32_t db;
	const void *key;
	size_t klen;
};

/* Visits up to `max` keys whose expiry is <= now_ms, earliest expiry first
 * (ties in database and key order), by the expiry index: from the first, or
 * when `after` is not NULL from the first row after that one.  Blocking
 * reads, bounded by max.  Keys deleted in batches not yet written are visited
 * again (a caller walking past them resumes after the last row it visited).
 * Returns the number visited, -EINVAL (after->klen above FMT_KEY_MAX),
 * -ENOMEM or -EIO (logged). */
int idx_expired(struct idx *ix, uint64_t now_ms, const struct idx_expiry_pos *after, size_t max,
                idx_expired_fn fn, void *arg);

struct idx_stats {
	uint64_t gets;               /* idx_get calls */
	uint64_t get_blocking;       /* of them with IDX_BLOCKING */
	uint64_t get_would_block;    /* IDX_CACHED_ONLY calls that returned -EWOULDBLOCK */
	uint64_t multi_gets;         /* idx_get_many calls (their keys count in gets) */
	uint64_t block_cache_misses; /* blocks read from files by blocking gets, scans and
	                                expiry walks (RocksDB perf context) */
	uint64_t writes;             /* idx_write calls applied */
	uint64_t errors;             /* calls that returned -EIO */
	uint64_t scanned;            /* keys visited by idx_scan */
	uint64_t elems_scanned;      /* elements visited by idx_elem_scan */
	uint64_t expired_visited;    /* keys visited by idx_expired */
	uint64_t flush_requests;     /* flushes idx_request_flush started */
	uint64_t compact_hints;      /* idx_compact_hint calls */
	uint64_t garbage_dropped;    /* rows the compaction filter dropped (any thread) */
	uint64_t garbage_compactions; /* ranges the compactor ran for the hints */
	/* read from RocksDB by idx_get_stats */
	uint64_t memtable_bytes;     /* active and unflushed memtables */
	uint64_t sst_bytes;          /* SST files */
	uint64_t table_reader_bytes; /* table readers outside the block cache */
	uint64_t block_cache_bytes;  /* the shared cache's usage (all shards) */
};

/* Fills *out: the counters, and sizes queried from RocksDB (0 when one cannot
 * be read). */
void idx_get_stats(struct idx *ix, struct idx_stats *out);

/* Runs a full manual compaction (tests and tools: blocking, may take long);
 * the compaction filter drops every garbage row it can judge. */
void idx_compact_all(struct idx *ix);


/* ---- bulk load (the offline import, storage/bulk.h) -------------------- */

/* A sorted RocksDB table file (SstFileWriter) holding rows built for
 * idx_ingest.  Owned by one thread.  Rows must be added in row order: a
 * file holds either element rows (idx_sst_put_elem) or key rows
 * (idx_sst_put, then idx_sst_finish's rows). */
struct idx_sst;

/* Starts the file `path` (created or truncated) with ix's table options.
 * Returns 0, or -EIO / -ENOMEM with a message in `err`. */
int idx_sst_open(struct idx_sst **out, struct idx *ix, const char *path, char *err,
                 size_t errlen);

/* Adds a key row: the row of key ident `ident` with entry *e (e->value read
 * for an inline entry).  Rows must come in row order — one database, then
 * idx_key_hash ascending, then the key bytes compared as memcmp with a shorter
 * prefix first — each key once.  prev_expiry_ms is the expiry of the entry the
 * index holds for the key now (0 if none): its expiry row is deleted, the new
 * one added, as idx_batch_put does.  Returns 0, -EINVAL (out of order, not a
 * key ident), -ENOMEM or -EIO, with a message in `err`. */
int idx_sst_put(struct idx_sst *s, const void *ident, size_t len, const struct idx_entry *e,
                uint64_t prev_expiry_ms, char *err, size_t errlen);

/* Adds an element row (element ident, value) in ident order.  Returns as
 * idx_sst_put. */
int idx_sst_put_elem(struct idx_sst *s, const void *ident, size_t len, const void *value,
                     size_t vlen, char *err, size_t errlen);

/* A segment row to write: the segment's new live-byte count. */
struct idx_seg_live {
	uint64_t segment;
	uint64_t live;
};

/* Closes a file of element rows. */
int idx_sst_finish_elems(struct idx_sst *s, char *err, size_t errlen);

/* Writes the metadata rows (applied_lsn, the map when `map_ids` is not
 * NULL), the count row of stored database `db`, its segment rows
 * live[0..n_live) (any order, each segment once) and the expiry rows, and
 * closes the file.  Returns 0 or -errno with a message in `err`. */
int idx_sst_finish(struct idx_sst *s, uint64_t applied_lsn, const uint32_t *map_ids,
                   uint32_t map_n, uint32_t map_next, uint32_t db, const struct idx_count *count,
                   struct idx_seg_live *live, size_t n_live, char *err, size_t errlen);

/* Frees the builder (an unfinished file is left for the caller to delete). */
void idx_sst_free(struct idx_sst *s);

/* Ingests files built by idx_sst_finish / idx_sst_finish_elems into ix
 * (RocksDB moves them into the index directory): their rows become visible in
 * one atomic step, and idx_applied_lsn returns applied_lsn.  Returns 0, or
 * -EIO with a message in `err` (the index is then unchanged). */
int idx_ingest(struct idx *ix, const char *const *paths, size_t n, uint64_t applied_lsn,
               char *err, size_t errlen);

#endif
