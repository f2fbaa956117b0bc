/* store_write: the store's writes (store_int.h) — a record is appended to the
 * log, the row's kentry takes its state at once, and when the log settles it
 * (write_done) it joins the index batch (store_apply.c) or is undone.  A
 * DBMAP record (store_db.c) and a call's group of records (store_txn.c) take
 * the same path.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "storage/store_int.h"

void st_pending_write_free(struct store *st, struct pending_write *pw)
{
	struct kentry *ke = pw->ke;
	st_blob_unref(pw->value);
	pw->value = NULL;
	pw->in_batch = false;
	pw->next_free = st->free_writes;
	st->free_writes = pw;
	st->pw_live--;
	if (ke != NULL) {
		if (ke->batch_pw == pw) {
			ke->batch_pw = NULL;
			st_kentry_charge(st, ke);
		}
		ke->pending--;
		if (ke->pending == 0 && ke->parent != NULL && ke->pins == 0)
			st_elem_unlink(st, ke); /* the index holds the element now */
		else
			st_kentry_release(st, ke);
	}
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
		/* So the re-read below finds the writes that succeeded, those of
		 * open transactions too: a log that fails writes is no place to
		 * keep them all-or-nothing (docs/COMMANDS.md, failures). */
		st_txn_finish_all(st);
		st_apply_batch(st);
		struct count_delta undo = {-pw->delta.keys, -pw->delta.expires,
		                           -pw->delta.expiry_sum_s};
		st_count_live(st, pw->db, &undo);
		if (ke != NULL) {
			ke->known = false; /* the index never saw it: re-read on next use */
		} else if (pw->dbmap != NULL && st->failed == 0) {
			/* The map already changed in memory and no record says so:
			 * only a restart (replaying what was written) agrees again. */
			st->failed = -EIO;
			LOG_ERROR("shard %u: a FLUSHDB/FLUSHALL/SWAPDB record could not be written:"
			          " writes are refused from now on; restart to replay the log",
			          st->cfg.shard);
		}
		st->stats.write_errors++;
	} else if (pw->dbmap != NULL) {
		st_dbmap_written(st, pw);
	} else {
		st->batch_lsn = w->pos.lsn;
		st_batch_touch(st);
	}
	if (pw->req != NULL)
		st_req_complete(st, pw->req, err, NULL);
	if (pw->durable != NULL) {
		struct store_durable *d = pw->durable;
		pw->durable = NULL;
		if (err != 0)
			atomic_store(&d->status, err < 0 ? err : -EIO);
		if (atomic_fetch_sub(&d->pending, 1) == 1)
			d->settled(d);
	}
	if (pw->commit) {
		if (err == 0)
			st->stats.txn_commits++;
		if (err == 0 && pw->finish)
			st_txn_finish(st, pw->txid);
	}
	if (err != 0 || pw->dbmap != NULL || pw->commit) { /* nothing for the batch to carry */
		st_dbmap_free(pw->dbmap);
		pw->dbmap = NULL;
		st_pending_write_free(st, pw);
		return;
	}
	/* The record the key's live bytes were counted in: the batch's, else the
	 * index's.  GC and INFO see the write at once (st_seg_live). */
	struct pending_write *first = ke->batch_pw;
	struct log_pos pos;
	if (first != NULL ? st_entry_pos(first, &pos) : ke->idx_ptr) {
		const struct log_pos *old = first != NULL ? &pos : &ke->idx_pos;
		st_usage_pending(st, old->segment, pw->db, -(int64_t)old->length);
	}
	if (st_entry_pos(pw, &pos))
		st_usage_pending(st, pos.segment, pw->db, (int64_t)pos.length);
	if (first != NULL) {
		/* The key is in the batch already: its entry takes this record's
		 * state (records are written in LSN order, so this is the newer
		 * one) and the batch still holds one row per key. */
		struct blob *v = first->value;
		first->value = pw->value;
		pw->value = v;
		first->is_delete = pw->is_delete;
		first->entry = pw->entry;
		first->txid = pw->txid;
		first->delta.keys += pw->delta.keys;
		first->delta.expires += pw->delta.expires;
		first->delta.expiry_sum_s += pw->delta.expiry_sum_s;
		st->stats.index_writes_merged++;
		st_pending_write_free(st, pw);
		return;
	}
	pw->in_batch = true;
	pw->batched_ns = px_now_ns();
	ke->batch_pw = pw;
	st_kentry_charge(st, ke);
	st->batch_records++;
	st->batch_joined++;
	pw->next_free = NULL;
	if (st->applying_tail != NULL)
		st->applying_tail->next_free = pw;
	else
		st->applying = pw;
	st->applying_tail = pw;
}

struct pending_write *st_pw_get(struct store *st)
{
	struct pending_write *pw = st->free_writes;
	if (pw != NULL) {
		st->free_writes = pw->next_free;
		__builtin_prefetch(st->free_writes, 1); /* the next one's link, for the next write */
	}
	else if ((pw = calloc(1, sizeof(*pw))) == NULL)
		return NULL;
	if (++st->pw_live > st->stats.pending_writes_peak)
		st->stats.pending_writes_peak = st->pw_live;
	pw->w.done = write_done;
	pw->st = st;
	pw->ke = NULL;
	pw->req = NULL;
	pw->durable = NULL;
	pw->value = NULL;
	pw->dbmap = NULL;
	pw->is_delete = false;
	pw->blind = false;
	pw->txid = 0;
	pw->commit = pw->finish = false;
	pw->delta = (struct count_delta){0};
	return pw;
}

void st_pw_put_back(struct store *st, struct pending_write *pw)
{
	pw->next_free = st->free_writes;
	st->free_writes = pw;
	st->pw_live--;
}

struct pending_write *st_append(struct store *st, struct store_req *req,
                                const struct fmt_record *rec)
{
	if (st->failed) {
		st_req_complete(st, req, st->failed, NULL);
		return NULL;
	}
	struct pending_write *pw = st_pw_get(st);
	bool tagged = req->txid != 0 && (rec->type == FMT_PUT || rec->type == FMT_DELETE);
	if (pw == NULL || (tagged && st_txn_note(st, req) < 0)) {
		if (pw != NULL)
			st_pw_put_back(st, pw);
		st_req_complete(st, req, -ENOMEM, NULL);
		return NULL;
	}
	struct fmt_record r = *rec;
	if (tagged)
		r.txid = req->txid; /* (a COMMIT carries its own) */
	int ret = log_append(st->log, &r, &pw->w);
	if (ret < 0) {
		st_pw_put_back(st, pw);
		st_req_complete(st, req, ret, NULL);
		return NULL;
	}
	pw->txid = tagged ? r.txid : 0;
	return pw;
}

void st_pw_ack(struct store *st, struct pending_write *pw, struct store_req *req)
{
	if (st->cfg.durability == LOG_DURABILITY_NONE) {
		pw->req = NULL;
		st_req_complete(st, req, 0, NULL);
	} else if (req->durable != NULL) { /* early acknowledgement (store.h) */
		pw->req = NULL;
		pw->durable = req->durable;
		atomic_fetch_add(&pw->durable->pending, 1);
		st_req_complete(st, req, 0, NULL);
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
	                         .flags = FMT_TYPE_STRING,
	                         .key = ke->key,
	                         .key_len = ke->key_len,
	                         .value = data,
	                         .value_len = data ? (uint32_t)len : 0,
	                         .expiry_ms = data ? expiry_ms : 0};
	return st_append(st, req, &rec);
}

void st_meta_entry(struct idx_entry *e, const struct kentry *ke, uint64_t lsn)
{
	*e = (struct idx_entry){.type = ke->type,
	                        .expiry_ms = ke->expiry_ms,
	                        .lsn = lsn,
	                        .is_inline = true,
	                        .version = ke->version,
	                        .count = ke->count,
	                        .enc = ke->enc};
}

/* A collection `ke` (its version and count as before the write that is
 * replacing or deleting it at `lsn`) leaves its elements as garbage. */
static void coll_gone(struct store *st, const struct kentry *ke, uint64_t lsn)
{
	if (ke->exists && st_is_coll(ke))
		st_coll_garbage(st, lsn, ke->key, ke->key_len, ke->version, ke->count);
}

/* Updates the key's state for the appended record pw (value: the PUT's value,
 * NULL for a DELETE).  The reply goes out now under `none` durability, else
 * once the record is written. */
static void record_settle(struct store *st, struct store_req *req, struct pending_write *pw,
                          struct blob *value, uint64_t expiry_ms)
{
	struct kentry *ke = req->key_entry;
	if (req->op != STORE_RELOCATE)
		st_touch(st, ke);
	pw->ke = ke;
	pw->is_delete = value == NULL;
	pw->db = st_ident_db(ke->key);
	pw->delta = st_count_delta(ke->exists, ke->expiry_ms, value != NULL, value ? expiry_ms : 0);
	st_count_live(st, pw->db, &pw->delta);
	ke->pending++;
	coll_gone(st, ke, pw->w.pos.lsn);
	ke->type = FMT_TYPE_STRING;
	ke->enc = 0;
	ke->count = 0;

	struct blob *replaced = ke->value;
	ke->value = st_blob_ref(value); /* before the unref: EXPIRE passes the cached blob */
	st_blob_unref(replaced);
	ke->exists = value != NULL;
	ke->expiry_ms = value ? expiry_ms : 0;
	ke->value_len = value ? value->len : 0;
	ke->is_inline = value && value->len <= st->cfg.inline_max;
	ke->pos = pw->w.pos;
	st_kentry_charge(st, ke);
	if (value) {
		pw->value = ke->is_inline ? st_blob_ref(value) : NULL;
		pw->entry = (struct idx_entry){.expiry_ms = expiry_ms,
		                               .lsn = pw->w.pos.lsn,
		                               .value_len = value->len,
		                               .is_inline = ke->is_inline,
		                               .value = ke->is_inline ? value->data : NULL,
		                               .segment = pw->w.pos.segment,
		                               .offset = pw->w.pos.offset,
		                               .length = pw->w.pos.length};
	}
	st_pw_ack(st, pw, req);
}

struct pending_write *st_write_record(struct store *st, struct store_req *req, struct blob *value,
                                      uint64_t expiry_ms)
{
	struct pending_write *pw =
	    record_append(st, req, value ? value->data : NULL, value ? value->len : 0, expiry_ms);
	if (pw != NULL)
		record_settle(st, req, pw, value, expiry_ms);
	return pw;
}

/* Writes `len` bytes at `data` as req's key's new value.  When the cached
 * value has that size and nothing else holds it (no reply, no batch entry),
 * it is rewritten in place once the append succeeded: an overwrite of a key
 * then costs no malloc and no free of a cold block.  Returns as st_write_record. */
struct pending_write *st_write_value(struct store *st, struct store_req *req, const void *data,
                                     size_t len, uint64_t expiry_ms)
{
	struct blob *old = ((struct kentry *)req->key_entry)->value;
	const uint8_t *d = data;
	bool reuse = old != NULL && old->refs == 1 && old->len == len &&
	             (d + len <= old->data || d >= old->data + len); /* (an update's own bytes) */
	struct blob *v = NULL;
	if (!reuse && (v = st_blob_new(data, len)) == NULL) {
		st_req_complete(st, req, -ENOMEM, NULL);
		return NULL;
	}
	struct pending_write *pw = record_append(st, req, data, len, expiry_ms);
	if (pw != NULL) {
		if (reuse) {
			memcpy(old->data, data, len);
			v = st_blob_ref(old);
		}
		record_settle(st, req, pw, v, expiry_ms);
	}
	st_blob_unref(v);
	return pw;
}

struct pending_write *st_write_expiry(struct store *st, struct store_req *req,
                                      uint64_t expiry_ms)
{
	struct kentry *ke = req->key_entry;
	uint8_t meta[FMT_COLL_META_SIZE];
	fmt_encode_coll_meta(meta, &(struct fmt_coll_meta){ke->version, ke->count, ke->enc});
	struct fmt_record rec = {.type = FMT_PUT,
	                         .flags = ke->type,
	                         .key = ke->key,
	                         .key_len = ke->key_len,
	                         .value = meta,
	                         .value_len = sizeof(meta),
	                         .expiry_ms = expiry_ms};
	struct pending_write *pw = st_append(st, req, &rec);
	if (pw == NULL)
		return NULL;
	st_touch(st, ke);
	pw->ke = ke;
	pw->db = st_ident_db(ke->key);
	pw->delta = st_count_delta(true, ke->expiry_ms, true, expiry_ms);
	st_count_live(st, pw->db, &pw->delta);
	ke->pending++;
	ke->expiry_ms = expiry_ms;
	st_meta_entry(&pw->entry, ke, pw->w.pos.lsn);
	st_pw_ack(st, pw, req);
	return pw;
}
