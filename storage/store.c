/* store: see store.h for the contract and store_int.h for how the store's
 * files divide the work.  This file opens, closes and reports on a store,
 * runs its end-of-iteration hook, and runs requests: store_submit queues a
 * request behind the others on its key, and req_run carries the head request
 * of a key as far as it can (a cold read of the value stops it until
 * read_done runs it again).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/fsutil.h"
#include "storage/layout.h"
#include "storage/store_int.h"

/* ---- completing requests ------------------------------------------------ */

void st_run_done(void *arg)
{
	struct store_req *req = arg;
	struct blob *b = req->result_ref;
	req->result_ref = NULL;
	req->store->inflight_reqs--;
	req->done(req);
	st_blob_unref(b);
}

static bool req_run(struct store *st, struct store_req *req);

/* The head request of `ke` has settled: start the next ones. */
static void queue_advance(struct store *st, struct kentry *ke)
{
	for (;;) {
		ke->head = ke->head->next_waiting;
		if (ke->head == NULL) {
			ke->tail = NULL;
			st_kentry_release(st, ke);
			return;
		}
		if (!req_run(st, ke->head))
			return; /* waiting for I/O: read_done advances the queue */
	}
}

/* ---- reads and the request machine -------------------------------------- */

static void read_done(struct log_read *r, int err, const struct fmt_record *rec)
{
	struct store_req *req = container_of(r, struct store_req, read);
	struct store *st = req->store;
	struct kentry *ke = req->key_entry;
	if (err == 0 && rec->lsn < st->drop_lsn) {
		ke->exists = false; /* a FLUSHALL came after the read was issued */
	} else if (err == 0) {
		ke->value = st_blob_new(rec->value, rec->value_len);
		if (ke->value == NULL)
			err = -ENOMEM;
		st_kentry_charge(st, ke);
	} else if ((err == -ENOENT || err == -EAGAIN) && req->retries++ < STORE_READ_RETRIES) {
		/* Moved by GC, or no SQE: look it up again.  A key with writes
		 * the index has not applied is known better than the index. */
		if (ke->pending == 0)
			ke->known = false;
		err = 0;
	}
	if (err != 0) {
		st_req_complete(st, req, err == -ENOMEM ? -ENOMEM : -EIO, NULL);
		queue_advance(st, ke);
		return;
	}
	if (req_run(st, req))
		queue_advance(st, ke);
}

/* Makes sure the value of req's key is loaded.  Returns true if it is, false
 * if a read was started (req_run runs again when it is done). */
static bool value_loaded(struct store *st, struct store_req *req)
{
	struct kentry *ke = req->key_entry;
	if (ke->value != NULL) {
		if (req->read.done == NULL) /* not the re-run after its own read */
			st->stats.cache_hits++;
		return true;
	}
	st->stats.cache_misses++;
	st->stats.disk_reads++;
	req->read.done = read_done;
	req->read.pos = ke->pos;
	req->read.key = ke->key;
	req->read.key_len = ke->key_len;
	log_read(st->log, &req->read);
	return false;
}

/* Runs the head request of its key.  Returns true if it settled (the next
 * request on the key may run), false if it waits for a read. */
static bool req_run(struct store *st, struct store_req *req)
{
	struct kentry *ke = req->key_entry;
	bool blind = false;
	if (!ke->known) {
		blind = st_blind_put(st, req);
		int ret = 0;
		if (blind)
			st_kentry_set_absent(ke);
		else
			ret = st_kentry_load(st, ke);
		if (ret < 0) {
			st_req_complete(st, req, ret, NULL);
			return true;
		}
	}
	bool live = st_key_live(ke);
	req->existed = live;
	req->result_expiry_ms = live ? ke->expiry_ms : 0;
	req->result_len = live ? ke->value_len : 0;

	switch (req->op) {
	case STORE_META:
		st_req_complete(st, req, live ? 0 : -ENOENT, NULL);
		return true;
	case STORE_GET:
		if (!live) {
			st_req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		if (!value_loaded(st, req))
			return false;
		st_req_complete(st, req, 0, ke->value);
		return true;
	case STORE_PUT: {
		if (((req->flags & STORE_NX) && live) || ((req->flags & STORE_XX) && !live)) {
			st_req_complete(st, req, -EEXIST, NULL);
			return true;
		}
		if ((req->flags & STORE_GET_OLD) && live) {
			if (!value_loaded(st, req))
				return false;
			st_req_set_result(req, ke->value); /* the reply carries the old value */
		}
		uint64_t expiry =
		    (req->flags & STORE_KEEPTTL) && live ? ke->expiry_ms : req->expiry_ms;
		struct pending_write *pw =
		    st_write_value(st, req, req->value, req->value_len, expiry);
		if (blind)
			st_blind_register(st, ke, pw);
		return true;
	}
	case STORE_DELETE: {
		if (!ke->exists || ((req->flags & STORE_IF_EXPIRED) && live)) {
			st_req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		if ((req->flags & STORE_GET_OLD) && live) {
			if (!value_loaded(st, req))
				return false;
			st_req_set_result(req, ke->value);
		}
		st_write_record(st, req, NULL, 0);
		return true;
	}
	case STORE_EXPIRE:
		if (!live) {
			st_req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		if (!value_loaded(st, req))
			return false; /* the record is rewritten whole, with the new expiry */
		st_write_record(st, req, ke->value, req->expiry_ms);
		return true;
	case STORE_UPDATE: {
		if (live && !value_loaded(st, req))
			return false;
		enum store_update_result r =
		    req->update(req, live ? ke->value->data : NULL, live ? ke->value->len : 0,
		                live ? ke->expiry_ms : 0);
		if (r == STORE_UPDATE_KEEP) {
			st_req_complete(st, req, 0, NULL);
		} else if (r == STORE_UPDATE_DELETE) {
			if (ke->exists)
				st_write_record(st, req, NULL, 0);
			else
				st_req_complete(st, req, -ENOENT, NULL);
		} else {
			st_write_value(st, req, req->new_value, req->new_len, req->new_expiry_ms);
		}
		return true;
	}
	case STORE_RELOCATE: {
		/* Garbage collection: move the value only if the key's entry is
		 * still the record being collected (expired or not: a clock
		 * stepping back must not find the value gone). */
		struct gc_req *g = container_of(req, struct gc_req, req);
		if (!ke->exists || ke->is_inline || ke->pos.segment != g->segment ||
		    ke->pos.offset != g->offset || ke->pos.lsn != g->lsn) {
			st_req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		/* The value stays cached like any write's: reads are served
		 * from it until the record is written. */
		struct blob *v = st_blob_new(req->value, req->value_len);
		if (v == NULL) {
			st_req_complete(st, req, -ENOMEM, NULL);
			return true;
		}
		st_write_record(st, req, v, ke->expiry_ms);
		st_blob_unref(v);
		return true;
	}
	}
	st_req_complete(st, req, -EINVAL, NULL);
	return true;
}

void store_submit(struct store *st, struct store_req *req)
{
	req->store = st;
	req->next_waiting = NULL;
	req->result = NULL;
	req->result_ref = NULL;
	req->result_len = 0;
	req->retries = 0;
	req->read.done = NULL; /* set only once the request reads the log */
	st->inflight_reqs++;
	st->submitted++;
	if (st->stopped) {
		st_req_complete(st, req, -ESHUTDOWN, NULL);
		return;
	}
	if (req->key_len > FMT_KEY_MAX || req->value_len > FMT_VALUE_MAX) {
		st_req_complete(st, req, -E2BIG, NULL);
		return;
	}
	struct kentry *ke = st_kentry_get(st, req->key, req->key_len);
	if (ke == NULL) {
		st_req_complete(st, req, -ENOMEM, NULL);
		return;
	}
	req->key_entry = ke;
	if (ke->tail != NULL) {
		ke->tail->next_waiting = req;
		ke->tail = req;
		return;
	}
	ke->head = ke->tail = req;
	if (req_run(st, req))
		queue_advance(st, ke);
}

/* ---- the end of each loop iteration ------------------------------------- */

/* Drives GC and drains a slice of the index batch when it is due; the slice
 * is sized to the keys that joined the batch in the iteration. */
static bool store_hook(struct px *px, struct px_hook *hook)
{
	struct store *st = container_of(hook, struct store, hook);
	(void)px;
	bool work = st_gc_step(st);
	log_expect_recycled(st->log, st->gc.active || st->gc.n_waiting > 0);
	size_t segments = log_get_stats(st->log)->segments;
	if (segments != st->gc.segments_seen && !st->gc.active) {
		/* A segment was sealed: a fast writer need not wait for the tick. */
		st->gc.segments_seen = segments;
		st_gc_next(st);
	}
	size_t slice = 4 * st->batch_joined;
	st->batch_joined = 0;
	st->apply_slice = slice < APPLY_SLICE_MIN ? APPLY_SLICE_MIN
	                  : slice > APPLY_SLICE   ? APPLY_SLICE
	                                          : slice;
	if (!st_apply_due(st))
		return work; /* written behind */
	st_apply_keys(st, st->apply_slice);
	return true; /* the next iteration drains on */
}

/* ---- open, close, stats ------------------------------------------------- */

int store_open(struct store **out, struct px *px, const struct store_config *cfg, char *err,
               size_t errlen)
{
	struct store *st = calloc(1, sizeof(*st));
	if (st == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	st->px = px;
	st->cfg = *cfg;
	st->lock_fd = -1;
	snprintf(st->dir, sizeof(st->dir), "%s", cfg->dir);
	st->cfg.dir = st->dir;
	int ret = st_table_grow(st);
	st->batch = idx_batch_new();
	if (ret < 0 || st->batch == NULL) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	if (mkdir(st->dir, 0755) != 0 && errno != EEXIST) {
		ret = -errno;
		snprintf(err, errlen, "cannot create %s: %s", st->dir, strerror(errno));
		goto fail;
	}
	ret = layout_lock_shard(st->dir, &st->lock_fd,
	                        "stop it first, or point storage.dir elsewhere", err, errlen);
	if (ret < 0)
		goto fail;
	char path[FS_PATH_MAX];
	snprintf(path, sizeof(path), "%s/index", st->dir);
	ret = idx_open(&st->idx, cfg->shared, path, err, errlen);
	if (ret < 0)
		goto fail;
	st->keys = idx_key_count(st->idx);
	if (idx_segments_live(st->idx, st_usage_load, st) < 0) {
		snprintf(err, errlen,
		         "cannot read the segment rows of %s/index (see the log above)", st->dir);
		ret = -EIO;
		goto fail;
	}

	snprintf(path, sizeof(path), "%s/log", st->dir);
	struct log_config lc = {.dir = path,
	                        .shard = cfg->shard,
	                        .segment_size = cfg->segment_size,
	                        .durability = cfg->durability};
	ret = st_replay_log(st, &lc, err, errlen);
	if (ret < 0)
		goto fail;
	st->applied_keys = st->keys;
	st->batch_lsn = idx_applied_lsn(st->idx);
	st->checkpoint_lsn = log_next_lsn(st->log);
	st->apply_slice = APPLY_SLICE;
	st->apply_keys = st->cfg.cache_bytes / APPLY_KEY_BYTES;
	if (st->apply_keys > APPLY_KEYS_MAX)
		st->apply_keys = APPLY_KEYS_MAX;
	if (st->apply_keys < APPLY_SLICE)
		st->apply_keys = APPLY_SLICE;
	if (st_usage_prune(st) < 0) {
		snprintf(err, errlen, "cannot write the index of %s (see the log above)", st->dir);
		ret = -EIO;
		goto fail;
	}
	st->hook.fn = store_hook;
	px_hook_add(px, &st->hook);
	px_timer_start(px, &st->expire_timer, EXPIRE_PERIOD_NS, EXPIRE_PERIOD_NS, st_expire_tick);
	if (cfg->gc_live_ratio > 0)
		px_timer_start(px, &st->gc_timer, GC_PERIOD_NS, GC_PERIOD_NS, st_gc_tick);
	*out = st;
	return 0;
fail:
	store_close(st);
	return ret;
}

int store_checkpoint(struct store *st)
{
	st_apply_batch(st);
	return idx_request_flush(st->idx);
}

uint64_t store_key_count(struct store *st)
{
	st_resolve_blind(st);
	return st->keys;
}

void store_get_stats(struct store *st, struct store_stats *out)
{
	st_resolve_blind(st);
	*out = st->stats;
	out->keys = st->keys;
	out->index_batch_keys = st->batch_records;
	if (st->log != NULL) {
		const struct log_stats *ls = log_get_stats(st->log);
		out->log_bytes = ls->log_bytes;
		out->commits = ls->commits;
		out->records = ls->records;
		out->fsyncs = ls->fsyncs;
		out->write_errors = ls->write_errors;
		out->segments_recycled = ls->segments_recycled;
		out->spare_bytes_zeroed = ls->spare_bytes_zeroed;
		out->tail_bytes_zeroed = ls->tail_bytes_zeroed;
	}
	if (st->idx != NULL) {
		struct idx_stats is;
		idx_get_stats(st->idx, &is);
		out->index_block_misses = is.block_cache_misses;
		out->index_bytes = is.memtable_bytes + is.sst_bytes;
	}
	out->live_bytes = 0;
	for (size_t i = 0; i < st->n_usage; i++)
		out->live_bytes += st_seg_live(&st->usage[i]);
}

void store_stop(struct store *st)
{
	st->stopped = true;
	if (px_timer_armed(&st->expire_timer))
		px_timer_stop(st->px, &st->expire_timer);
	if (px_timer_armed(&st->gc_timer))
		px_timer_stop(st->px, &st->gc_timer);
	if (px_timer_armed(&st->apply_timer))
		px_timer_stop(st->px, &st->apply_timer);
	if (st->log != NULL)
		log_stop(st->log);
}

bool store_busy(const struct store *st)
{
	return st->inflight_reqs > 0 || st->batch_dirty || px_timer_armed(&st->expire_timer) ||
	       px_timer_armed(&st->gc_timer) || px_timer_armed(&st->apply_timer) ||
	       st->gc.reading || (st->log != NULL && log_busy(st->log));
}

void store_close(struct store *st)
{
	if (st == NULL)
		return;
	if (st->hook.fn != NULL)
		px_hook_remove(st->px, &st->hook);
	log_close(st->log);
	if (st->idx != NULL)
		idx_close(st->idx);
	if (st->batch != NULL)
		idx_batch_free(st->batch);
	for (size_t i = 0; i < st->n_buckets; i++)
		for (struct kentry *ke = st->buckets[i], *next; ke != NULL; ke = next) {
			next = ke->hnext;
			st_blob_unref(ke->value);
			free(ke);
		}
	while (st->free_writes != NULL) {
		struct pending_write *pw = st->free_writes;
		st->free_writes = pw->next_free;
		free(pw);
	}
	free(st->buckets);
	free(st->blind);
	free(st->probes);
	free(st->usage);
	free(st->gc.buf);
	free(st->expire_at_key);
	if (st->lock_fd >= 0)
		close(st->lock_fd); /* releases the flock */
	free(st);
}
