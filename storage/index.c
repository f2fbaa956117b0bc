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
#include "storage/index_int.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rocksdb/c.h>
#include <stdatomic.h>

#include "service/runtime/logging.h"
#include "storage/crc32c.h"
#include "storage/fsutil.h"

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
size_t ix_entry_encode_header(uint8_t *dst, const struct idx_entry *e)
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
bool ix_entry_decode(const uint8_t *src, size_t len, struct idx_entry *e)
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
void ix_expiry_prefix(uint8_t *dst, uint64_t expiry_ms)
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
bool ix_row_decode(uint8_t kind, const uint8_t *v, size_t vlen, struct idx_entry *e)
{
	if (kind == PREFIX_ELEM) {
		if (vlen > UINT32_MAX)
			return false;
		elem_entry(e, v, vlen);
		return true;
	}
	return ix_entry_decode(v, vlen, e);
}

void ix_put_le64(uint8_t *dst, uint64_t v)
{
	v = htole64(v);
	memcpy(dst, &v, 8);
}

/* ---- small helpers ----------------------------------------------------- */

/* True if a RocksDB error string is Status::Incomplete (a read that needed
 * I/O under kBlockCacheTier). */
bool ix_is_incomplete(const char *rerr)
{
	return strncmp(rerr, "Result incomplete", 17) == 0;
}

/* Counts the blocks RocksDB reads from files during one blocking call
 * (struct block_read_probe, index_int.h). */
void ix_probe_begin(struct block_read_probe *p)
{
	rocksdb_set_perf_level(rocksdb_enable_count);
	p->pc = rocksdb_perfcontext_create();
	p->before = p->pc ? rocksdb_perfcontext_metric(p->pc, rocksdb_block_read_count) : 0;
}

uint64_t ix_probe_take(struct block_read_probe *p)
{
	uint64_t n = 0;
	if (p->pc) {
		n = rocksdb_perfcontext_metric(p->pc, rocksdb_block_read_count) - p->before;
		rocksdb_perfcontext_destroy(p->pc);
	}
	rocksdb_set_perf_level(rocksdb_disable);
	return n;
}

void ix_probe_end(struct idx *ix, struct block_read_probe *p)
{
	ix->stats.block_cache_misses += ix_probe_take(p);
}

/* The hash that orders key rows (and SCAN cursors): CRC32C of the key. */
uint32_t idx_key_hash(const void *key, size_t klen)
{
	return crc32c(0, key, klen);
}

/* Writes a key row's head, 'k' + be32 db + be32 hash. */
void ix_key_row_head(uint8_t out[KEY_ROW_HEAD], uint32_t db, uint32_t hash)
{
	out[0] = PREFIX_KEY;
	fmt_put_be32(out + 1, db);
	fmt_put_be32(out + 5, hash);
}

/* Writes the row of ident `id` at `dst` (KEY_BUF_SIZE bytes).  Returns its
 * length, or 0 if `id` is not an ident. */
size_t ix_ident_row(uint8_t *dst, const uint8_t *ident, size_t len)
{
	struct fmt_ident id;
	if (!fmt_ident_parse(ident, len, &id))
		return 0;
	if (id.kind == FMT_IDENT_ELEM) {
		memcpy(dst, ident, len);
		return len;
	}
	ix_key_row_head(dst, id.db, idx_key_hash(id.key, id.key_len));
	if (id.key_len)
		memcpy(dst + KEY_ROW_HEAD, id.key, id.key_len);
	return KEY_ROW_HEAD + id.key_len;
}

/* Reads a metadata row with `ro`.  Returns 0 (*out set), -ENOENT, or -EIO
 * (RocksDB error or a value not `size` bytes long; *rerr set to a malloc()ed
 * message, or NULL for the wrong size). */
int ix_meta_get(struct idx *ix, const rocksdb_readoptions_t *ro, const char *name, void *out,
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
	ix_put_le64(le, v);
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

/* The options of an index (ix: with its compaction filter) or of a table
 * file built for one (ix NULL). */
rocksdb_options_t *ix_make_options(const struct idx_shared *sh, int compression, struct idx *ix)
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
		rocksdb_options_set_compaction_filter_factory(o, ix_garbage_filter_factory(ix));
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
	rocksdb_options_t *o = ix_make_options(ix->sh, rocksdb_lz4_compression, ix);
	ix->db = open_default_cf(o, ix->path, &ix->cf, &rerr);
	rocksdb_options_destroy(o);
	if (rerr && strstr(rerr, "not linked with the binary")) {
		LOG_WARN("index %s: this RocksDB lacks LZ4 (%s); the index is stored uncompressed",
		         ix->path, rerr);
		rocksdb_free(rerr);
		rerr = NULL;
		o = ix_make_options(ix->sh, rocksdb_no_compression, ix);
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
	int ret = ix_meta_get(ix, ix->ro_blocking, META_VERSION, &version, sizeof(version), &rerr);
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
	ret = ix_meta_get(ix, ix->ro_blocking, META_APPLIED_LSN, &le, sizeof(le), &rerr);
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
	                                ix->ro_scan,   ix->ro_elems,    ix->ro_expiry};
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
	char *v =
	    rocksdb_get(ix->db, ix->ro_blocking, META_DBMAP, strlen(META_DBMAP), &vlen, &rerr);
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
		LOG_ERROR("index %s: the database map row is malformed (%zu bytes)", ix->path,
		          vlen);
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
	int ret = ix_iter_error(ix, it, "reading the count rows");
	rocksdb_iter_destroy(it);
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
	op->order = ix_row_order(p, klen);
	b->arena_len += klen + vlen;
	b->n_ops++;
}

/* Adds a put (is_delete false) or delete of the expiry row of key ident
 * `id` for `expiry_ms` (!= 0): 'x' + expiry, then the ident's db and key. */
static void batch_expiry_row(struct idx_batch *b, bool is_delete, const uint8_t *ident, size_t len,
                             uint64_t expiry_ms)
{
	uint8_t prefix[9];
	ix_expiry_prefix(prefix, expiry_ms);
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
	ix_key_row_head(head, fmt_get_be32(id + 1),
	                idx_key_hash(id + FMT_KEY_IDENT_HEAD, len - FMT_KEY_IDENT_HEAD));
	uint8_t header[ENTRY_HEADER_MAX];
	size_t header_len = ix_entry_encode_header(header, e);
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

void idx_batch_delete(struct idx_batch *b, const void *ident, size_t len, uint64_t prev_expiry_ms)
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
	ix_key_row_head(head, fmt_get_be32(id + 1),
	                idx_key_hash(id + FMT_KEY_IDENT_HEAD, len - FMT_KEY_IDENT_HEAD));
	batch_add(b, true, head, KEY_ROW_HEAD, id + FMT_KEY_IDENT_HEAD, len - FMT_KEY_IDENT_HEAD,
	          NULL, 0, NULL, 0);
	if (prev_expiry_ms != 0)
		batch_expiry_row(b, true, id, len, prev_expiry_ms);
}

/* 'n' + be32 db at dst; the value, 3 x le64, at val. */
void ix_count_row(uint8_t dst[COUNT_ROW_LEN], uint32_t db)
{
	dst[0] = PREFIX_COUNT;
	fmt_put_be32(dst + 1, db);
}

void ix_count_value(uint8_t dst[COUNT_VALUE_LEN], const struct idx_count *c)
{
	ix_put_le64(dst, c->keys);
	ix_put_le64(dst + 8, c->expires);
	ix_put_le64(dst + 16, c->expiry_sum_s);
}

void idx_batch_set_count(struct idx_batch *b, uint32_t db, const struct idx_count *c)
{
	uint8_t row[COUNT_ROW_LEN], v[COUNT_VALUE_LEN];
	ix_count_row(row, db);
	if (c->keys == 0 && c->expires == 0 && c->expiry_sum_s == 0) {
		batch_add(b, true, row, sizeof(row), NULL, 0, NULL, 0, NULL, 0);
		return;
	}
	ix_count_value(v, c);
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
int ix_batch_op_cmp(const void *a, const void *b)
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
	qsort(b->ops, b->n_ops, sizeof(*b->ops), ix_batch_op_cmp);
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
void ix_segment_row(uint8_t dst[SEGMENT_ROW_LEN], uint64_t segment, uint32_t db)
{
	dst[0] = PREFIX_SEGMENT;
	fmt_put_be64(dst + 1, segment);
	fmt_put_be32(dst + 9, db);
}

void idx_batch_set_live(struct idx_batch *b, uint64_t segment, uint32_t db, uint64_t live_bytes)
{
	uint8_t row[SEGMENT_ROW_LEN], le[8];
	ix_segment_row(row, segment, db);
	ix_put_le64(le, live_bytes);
	batch_add(b, false, row, sizeof(row), NULL, 0, le, sizeof(le), NULL, 0);
}

void idx_batch_forget_live(struct idx_batch *b, uint64_t segment, uint32_t db)
{
	uint8_t row[SEGMENT_ROW_LEN];
	ix_segment_row(row, segment, db);
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
	int ret = ix_iter_error(ix, it, "reading the segment rows");
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
