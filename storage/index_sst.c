/* index_sst: SST files built for a bulk load, and their ingestion (index.h,
 * "Bulk load"). */
#include "storage/index_int.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	s->opts = ix_make_options(ix->sh, compression, NULL);
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
			snprintf(err, errlen, "%s: rows out of order (a bug in the caller)",
			         s->path);
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
	size_t row_len = len >= 1 && id[0] == FMT_IDENT_KEY ? ix_ident_row(row, id, len) : 0;
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
	size_t vlen = ix_entry_encode_header(s->vbuf, e);
	if (inline_value && e->value_len) {
		memcpy(s->vbuf + vlen, e->value, e->value_len);
		vlen += e->value_len;
	}
	ret = sst_put_row(s, row, row_len, s->vbuf, vlen, err, errlen);
	if (ret < 0)
		return ret;
	if (prev_expiry_ms != e->expiry_ms) {
		if (prev_expiry_ms != 0 &&
		    sst_add_xrow(s, id + 1, len - 1, prev_expiry_ms, true) < 0)
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

int idx_sst_finish(struct idx_sst *s, uint64_t applied_lsn, const uint32_t *map_ids, uint32_t map_n,
                   uint32_t map_next, uint32_t db, const struct idx_count *count,
                   struct idx_seg_live *live, size_t n_live, char *err, size_t errlen)
{
	/* Row order: every 'k' row (added), then "m:applied_lsn" < "m:dbmap",
	 * the 'n' row, the 's' rows, then the 'x' rows. */
	char *rerr = NULL;
	uint8_t le[8];
	ix_put_le64(le, applied_lsn);
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
		ix_count_row(row, db);
		ix_count_value(v, count);
		rocksdb_sstfilewriter_put(s->w, (const char *)row, sizeof(row), (const char *)v,
		                          sizeof(v), &rerr);
	}
	if (n_live > 1)
		qsort(live, n_live, sizeof(*live), seg_live_cmp);
	for (size_t i = 0; i < n_live && rerr == NULL; i++) {
		uint8_t srow[SEGMENT_ROW_LEN];
		ix_segment_row(srow, live[i].segment, db);
		ix_put_le64(le, live[i].live);
		rocksdb_sstfilewriter_put(s->w, (const char *)srow, sizeof(srow), (const char *)le,
		                          sizeof(le), &rerr);
	}
	if (s->n_xrows > 1)
		qsort(s->xrows, s->n_xrows, sizeof(*s->xrows), xrow_cmp);
	uint8_t *row = s->row;
	for (size_t i = 0; i < s->n_xrows && rerr == NULL; i++) {
		const struct sst_xrow *x = &s->xrows[i];
		ix_expiry_prefix(row, x->expiry_ms);
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

int idx_ingest(struct idx *ix, const char *const *paths, size_t n, uint64_t applied_lsn, char *err,
               size_t errlen)
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
