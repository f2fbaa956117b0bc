/* store_write: the store's writes (store_int.h) — a record is appended to the
 * log, the key's kentry takes its state at once, and when the log settles it
 * (write_done) it joins the index batch (store_apply.c) or is undone.  A
 * FLUSHALL is a DROP record on the same path.
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
	if (ke != NULL) {
		if (ke->batch_pw == pw) {
			ke->batch_pw = NULL;
			st_kentry_charge(st, ke);
		}
		ke->pending--;
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
		st_apply_batch(st); /* so the re-read below finds the writes that succeeded */
		st->keys -= (uint64_t)pw->count_delta;
		if (ke != NULL)
			ke->known = false; /* the index never saw it: re-read on next use */
		else
			st_forget_all_keys(st);
		st->stats.write_errors++;
	} else if (pw->is_drop) {
		st_apply_batch(st); /* what came before the drop, first */
		if (idx_drop_all(st->idx, w->pos.lsn) < 0 && st->failed == 0) {
			st->failed = -EIO;
			LOG_ERROR("shard %u: FLUSHALL could not be applied to the index: writes are"
			          " refused from now on; restart to replay the log",
			          st->cfg.shard);
		}
		st->applied_keys = 0;
		for (size_t i = 0; i < st->n_buckets; i++)
			for (struct kentry *k = st->buckets[i]; k != NULL; k = k->hnext) {
				k->idx_expiry_ms = 0;
				k->idx_ptr = false;
			}
		for (size_t i = 0; i < st->n_usage; i++) {
			st->usage[i].live = 0; /* idx_drop_all removed their rows */
			st->usage[i].pending = 0;
		}
	} else {
		st->batch_lsn = w->pos.lsn;
		st_batch_touch(st);
	}
	if (pw->req != NULL)
		st_req_complete(st, pw->req, err, NULL);
	if (err != 0 || pw->is_drop) { /* nothing for the batch to carry */
		st_pending_write_free(st, pw);
		return;
	}
	/* The record the key's live bytes were counted in: the batch's, else the
	 * index's.  GC and INFO see the write at once (st_seg_live). */
	struct pending_write *first = ke->batch_pw;
	struct log_pos pos;
	if (first != NULL ? st_entry_pos(first, &pos) : ke->idx_ptr) {
		const struct log_pos *old = first != NULL ? &pos : &ke->idx_pos;
		st_usage_pending(st, old->segment, -(int64_t)old->length);
	}
	if (st_entry_pos(pw, &pos))
		st_usage_pending(st, pos.segment, (int64_t)pos.length);
	if (first != NULL) {
		/* The key is in the batch already: its entry takes this record's
		 * state (records are written in LSN order, so this is the newer
		 * one) and the batch still holds one row per key. */
		struct blob *v = first->value;
		first->value = pw->value;
		pw->value = v;
		first->is_delete = pw->is_delete;
		first->entry = pw->entry;
		first->count_delta += pw->count_delta;
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

/* Appends `rec` on behalf of `req`.  Returns the pending write (its st and w
 * set), or NULL after completing req with the error (nothing appended). */
static struct pending_write *append_record(struct store *st, struct store_req *req,
                                           const struct fmt_record *rec)
{
	if (st->failed) {
		st_req_complete(st, req, st->failed, NULL);
		return NULL;
	}
	struct pending_write *pw = st->free_writes;
	if (pw != NULL)
		st->free_writes = pw->next_free;
	else if ((pw = calloc(1, sizeof(*pw))) == NULL) {
		st_req_complete(st, req, -ENOMEM, NULL);
		return NULL;
	}
	pw->w.done = write_done;
	int ret = log_append(st->log, rec, &pw->w);
	if (ret < 0) {
		pw->next_free = st->free_writes;
		st->free_writes = pw;
		st_req_complete(st, req, ret, NULL);
		return NULL;
	}
	pw->st = st;
	return pw;
}

/* Replies to req now under `none` durability, else once pw is written. */
static void pending_write_ack(struct store *st, struct pending_write *pw, struct store_req *req)
{
	if (st->cfg.durability == LOG_DURABILITY_NONE) {
		pw->req = NULL;
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
	                         .key = ke->key,
	                         .key_len = ke->key_len,
	                         .value = data,
	                         .value_len = data ? (uint32_t)len : 0,
	                         .expiry_ms = data ? expiry_ms : 0};
	return append_record(st, req, &rec);
}

/* Updates the key's state for the appended record pw (value: the PUT's value,
 * NULL for a DELETE).  The reply goes out now under `none` durability, else
 * once the record is written. */
static void record_settle(struct store *st, struct store_req *req, struct pending_write *pw,
                          struct blob *value, uint64_t expiry_ms)
{
	struct kentry *ke = req->key_entry;
	pw->ke = ke;
	pw->is_delete = value == NULL;
	pw->is_drop = false;
	pw->count_delta = value ? (ke->exists ? 0 : 1) : (ke->exists ? -1 : 0);
	st->keys += (uint64_t)pw->count_delta;
	ke->pending++;

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
	pending_write_ack(st, pw, req);
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

void store_drop_all(struct store *st, struct store_req *req)
{
	req->store = st;
	req->result = NULL;
	req->result_ref = NULL;
	st->inflight_reqs++;
	if (st->stopped) {
		st_req_complete(st, req, -ESHUTDOWN, NULL);
		return;
	}
	st_resolve_blind(st); /* the counts it corrects are the ones the drop zeroes */
	struct fmt_record rec = {.type = FMT_DROP};
	struct pending_write *pw = append_record(st, req, &rec);
	if (pw == NULL)
		return;
	pw->ke = NULL;
	pw->is_delete = false;
	pw->is_drop = true;
	pw->count_delta = -(int64_t)st->keys;
	st->keys = 0;
	st->drop_lsn = pw->w.pos.lsn;
	for (size_t i = 0; i < st->n_buckets; i++)
		for (struct kentry *ke = st->buckets[i]; ke != NULL; ke = ke->hnext) {
			st_blob_unref(ke->value);
			ke->value = NULL;
			ke->exists = false;
			ke->expiry_ms = 0;
			ke->value_len = 0;
			ke->known = true;
			st_kentry_charge(st, ke);
		}
	pending_write_ack(st, pw, req);
}
