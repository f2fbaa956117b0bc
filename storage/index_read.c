/* index_read: point reads, batched reads and scans of the index (index.h). */
#include "storage/index_int.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"

/* ---- reads ------------------------------------------------------------- */

int idx_get(struct idx *ix, const void *ident, size_t len, enum idx_read_mode mode,
            struct idx_entry *e, uint8_t **value)
{
	if (value)
		*value = NULL;
	ix->stats.gets++;
	size_t n = ix_ident_row(ix->kbuf, ident, len);
	if (n == 0)
		return -EINVAL;
	char *rerr = NULL;
	rocksdb_pinnableslice_t *ps;
	if (mode == IDX_BLOCKING) {
		struct block_read_probe probe;
		ix->stats.get_blocking++;
		ix_probe_begin(&probe);
		ps = rocksdb_get_pinned(ix->db, ix->ro_blocking, (const char *)ix->kbuf, n, &rerr);
		ix_probe_end(ix, &probe);
	} else {
		ps = rocksdb_get_pinned(ix->db, ix->ro_cached, (const char *)ix->kbuf, n, &rerr);
	}
	if (rerr) {
		int ret = -EIO;
		if (mode == IDX_CACHED_ONLY && ix_is_incomplete(rerr)) {
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
	if (mode == IDX_CACHED_ONLY && vlen == 0 && ix->kbuf[0] == PREFIX_KEY) {
		/* (never written empty: RocksDB's "may exist" answer for a file it
		 * could not open without I/O, MAX_OPEN_FILES says why) */
		ix->stats.get_would_block++;
		ret = -EWOULDBLOCK;
	} else if (!ix_row_decode(ix->kbuf[0], (const uint8_t *)v, vlen, e)) {
		LOG_ERROR("index %s: the entry of a %zu-byte ident is corrupt (%zu bytes)",
		          ix->path, len, vlen);
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
uint64_t ix_row_order(const uint8_t *row, size_t len)
{
	uint8_t first[8] = {0};
	memcpy(first, row, len < 8 ? len : 8);
	uint64_t be;
	memcpy(&be, first, 8);
	return be64toh(be);
}

int idx_get_many(struct idx *ix, struct idx_probe *probes, size_t n)
{
	return ix_get_many(ix, probes, n, IDX_BLOCKING, false, NULL);
}

int idx_get_many_cached(struct idx *ix, struct idx_probe *probes, size_t n)
{
	return ix_get_many(ix, probes, n, IDX_CACHED_ONLY, false, NULL);
}

int ix_get_many(struct idx *ix, struct idx_probe *probes, size_t n, enum idx_read_mode mode,
                bool want_values, struct ix_many_stats *stats)
{
	struct ix_many_stats local = {0};
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
		uint32_t len = (uint32_t)ix_ident_row(row, probes[i].key, probes[i].klen);
		if (len == 0) {
			ret = -EINVAL;
			goto out;
		}
		rows[i] = (struct batch_op){.order = ix_row_order(row, len),
		                            .key = row,
		                            .key_len = len,
		                            .seq = (uint32_t)i};
		off += len;
	}
	/* Sorted input lets RocksDB take the keys file by file and block by
	 * block without copying and sorting them itself. */
	qsort(rows, n, sizeof(*rows), ix_batch_op_cmp);
	for (size_t i = 0; i < n; i++) {
		keys[i] = (const char *)rows[i].key;
		key_lens[i] = rows[i].key_len;
	}
	struct block_read_probe probe;
	bool cached = mode == IDX_CACHED_ONLY;
	if (!cached)
		ix_probe_begin(&probe);
	rocksdb_batched_multi_get_cf(ix->db, cached ? ix->ro_cached : ix->ro_blocking, ix->cf, n,
	                             keys, key_lens, values, errs, true);
	local.blocks_read = cached ? 0 : ix_probe_take(&probe);
	local.gets = n;

	ret = 0;
	for (size_t i = 0; i < n; i++) {
		struct idx_probe *p = &probes[rows[i].seq];
		p->status = -ENOENT;
		p->value = NULL;
		if (errs[i] != NULL && cached && ix_is_incomplete(errs[i])) {
			local.would_block++;
			p->status = -EWOULDBLOCK;
			continue;
		}
		if (errs[i] != NULL) {
			LOG_ERROR("index %s: read failed: %s", ix->path, errs[i]);
			local.errors++;
			p->status = ret = -EIO;
			continue;
		}
		if (values[i] == NULL)
			continue;
		size_t vlen;
		const char *v = rocksdb_pinnableslice_value(values[i], &vlen);
		if (cached && vlen == 0 && rows[i].key[0] == PREFIX_KEY) {
			local.would_block++; /* (as in idx_get: never written empty) */
			p->status = -EWOULDBLOCK;
			continue;
		}
		if (!ix_row_decode(rows[i].key[0], (const uint8_t *)v, vlen, &p->e)) {
			LOG_ERROR("index %s: the entry of a %zu-byte ident is corrupt (%zu bytes)",
			          ix->path, p->klen, vlen);
			local.errors++;
			p->status = ret = -EIO;
			continue;
		}
		if (want_values && p->e.is_inline) {
			p->value = malloc(p->e.value_len ? p->e.value_len : 1);
			if (p->value == NULL) {
				p->status = -ENOMEM;
				continue;
			}
			if (p->e.value_len > 0) /* a collection's key row has no value */
				memcpy(p->value, p->e.value, p->e.value_len);
		}
		p->e.value = p->value;
		p->status = 0;
	}
	if (stats != NULL) {
		*stats = local;
	} else {
		ix->stats.gets += local.gets;
		ix->stats.get_blocking += cached ? 0 : local.gets;
		ix->stats.get_would_block += local.would_block;
		ix->stats.multi_gets++;
		ix->stats.errors += local.errors;
		ix->stats.block_cache_misses += local.blocks_read;
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
	int ret = ix_meta_get(ix, ix->ro_persisted, META_APPLIED_LSN, &le, sizeof(le), &rerr);
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
int ix_iter_error(struct idx *ix, rocksdb_iterator_t *it, const char *what)
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
	ix_key_row_head(start, db, from_hash);
	/* The bound: the first row of the next database ('l' after the last). */
	ix->scan_upper[0] = db == UINT32_MAX ? PREFIX_KEY + 1 : PREFIX_KEY;
	fmt_put_be32(ix->scan_upper + 1, db == UINT32_MAX ? 0 : db + 1);
	rocksdb_readoptions_set_iterate_upper_bound(ix->ro_scan, (const char *)ix->scan_upper,
	                                            db == UINT32_MAX ? 1 : 5);
	struct block_read_probe probe;
	ix_probe_begin(&probe);
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
		if (klen < KEY_ROW_HEAD || !ix_entry_decode((const uint8_t *)v, vlen, &e)) {
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
		ret = ix_iter_error(ix, it, "scan");
out:
	rocksdb_iter_destroy(it);
	ix_probe_end(ix, &probe);
	return ret;
}

int idx_elem_scan(struct idx *ix, const void *prefix, size_t plen, uint32_t from_hash, size_t max,
                  idx_elem_fn fn, void *arg, uint32_t *next_hash)
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
	ix_probe_begin(&probe);
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
		ret = ix_iter_error(ix, it, "element scan");
	rocksdb_iter_destroy(it);
	ix_probe_end(ix, &probe);
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
		ix_expiry_prefix(ix->expiry_upper, now_ms + 1);
	rocksdb_readoptions_set_iterate_upper_bound(ix->ro_expiry, (const char *)ix->expiry_upper,
	                                            now_ms == UINT64_MAX ? 1 : 9);
	uint8_t *from = NULL; /* the row to resume after */
	size_t from_len = 0;
	if (after != NULL) {
		from_len = EXPIRY_ROW_HEAD + after->klen;
		from = malloc(from_len);
		if (from == NULL)
			return -ENOMEM;
		ix_expiry_prefix(from, after->expiry_ms);
		fmt_put_be32(from + 9, after->db);
		if (after->klen)
			memcpy(from + EXPIRY_ROW_HEAD, after->key, after->klen);
	}
	struct block_read_probe probe;
	ix_probe_begin(&probe);
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
	ret = ix_iter_error(ix, it, "expiry walk");
	if (ret == 0)
		ret = (int)visited;
out:
	rocksdb_iter_destroy(it);
	ix_probe_end(ix, &probe);
	return ret;
}
