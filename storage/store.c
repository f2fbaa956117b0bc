/* store: see store.h for the contract and store_int.h for how the store's
 * files divide the work.  This file opens, closes and reports on a store,
 * runs its end-of-iteration hook, and runs requests: store_submit queues a
 * request behind the others on its key (a call: on each of its keys), and
 * req_run carries a request that heads its queues as far as it can (a cold
 * read of the value stops it until read_done runs it again).
 *
 * Queues: a key's kentry holds the waiters of the requests on it, oldest
 * first; the head runs.  A call on several keys is queued on all of them at
 * once when it is submitted, and runs when it heads every one: requests are
 * ordered by submission on each key, so no two wait for each other
 * (deadlock-free, as VLL).  req->heads_missing counts the queues a request
 * does not head yet.
 *
 * Holds (store.h): a granted hold leaves its keys' queues empty and takes
 * the requests that were behind it into its own list per key (st_held);
 * while the key is held (kentry.held, pinned) the requests of its holder
 * queue on the key as usual and every other one joins that list.
 * store_release puts the lists back as the keys' queues and runs them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "service/runtime/logging.h"
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
	free(req->waits); /* (a call on several keys; done may submit req again) */
	free(req->more_entries);
	req->waits = NULL;
	req->more_entries = NULL;
	req->done(req);
	st_blob_unref(b);
}

static bool req_run(struct store *st, struct store_req *req);

/* The kentry of req's i-th key (a call's more_keys after key 0). */
static struct kentry *req_entry(const struct store_req *req, size_t i)
{
	return i == 0 ? req->key_entry : req->more_entries[i - 1];
}

/* req's waiter in the queue of its i-th key; NULL when that key repeats an
 * earlier one of req (it waits once per kentry). */
static struct store_waiter *req_waiter(struct store_req *req, size_t i)
{
	if (i == 0)
		return &req->wait;
	return req->waits[i - 1].req != NULL ? &req->waits[i - 1] : NULL;
}

static size_t req_nkeys(const struct store_req *req)
{
	return req->op == STORE_CALL || req->op == STORE_HOLD ? 1 + req->n_more_keys : 1;
}

/* Puts `ke`, whose head has settled, on the work list of queues_run. */
static void work_push(struct store *st, struct kentry *ke)
{
	ke->work_next = st->work;
	st->work = ke;
}

/* req has settled, heading every queue it is in: those queues move on. */
static void settled(struct store *st, struct store_req *req)
{
	for (size_t i = 0; i < req_nkeys(req); i++)
		if (req_waiter(req, i) != NULL)
			work_push(st, req_entry(req, i));
}

/* Moves every queue on the work list past its settled head, running the
 * requests behind as far as they go: one that waits for a read stops its
 * queue (read_done resumes it), a call that does not head all its queues
 * yet stops this one; a call that runs and settles puts its other queues on
 * the list.  A list, not recursion: a chain of calls may be long. */
static void queues_run(struct store *st)
{
	while (st->work != NULL) {
		struct kentry *ke = st->work;
		st->work = ke->work_next;
		for (;;) {
			struct store_waiter *w = ke->head->next;
			ke->head = w;
			if (w == NULL) {
				ke->tail = NULL;
				st_kentry_release(st, ke);
				break;
			}
			struct store_req *r = w->req;
			if (--r->heads_missing > 0 || !req_run(st, r))
				break;
			for (size_t i = 0; i < req_nkeys(r); i++)
				if (req_entry(r, i) != ke && req_waiter(r, i) != NULL)
					work_push(st, req_entry(r, i));
		}
	}
}

/* ---- reads and the request machine -------------------------------------- */

static void read_done(struct log_read *r, int err, const struct fmt_record *rec)
{
	struct store_req *req = container_of(r, struct store_req, read);
	struct store *st = req->store;
	struct kentry *ke = req->key_entry;
	if (err == 0) {
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
	} else if (!req_run(st, req)) {
		return;
	}
	settled(st, req);
	queues_run(st);
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

/* Requests that need a string: on another type they answer STORE_WRONGTYPE. */
static bool wants_string(const struct store_req *req)
{
	switch (req->op) {
	case STORE_GET:
		return !(req->flags & STORE_ANY_TYPE);
	case STORE_UPDATE:
		return true;
	case STORE_META:
		return req->flags & STORE_STRING;
	case STORE_PUT:
	case STORE_DELETE:
		return req->flags & STORE_GET_OLD;
	default:
		return false;
	}
}

/* Runs a request that heads its queues.  Returns true if it settled (the
 * next requests may run), false if it waits for a read. */
static bool hold_grant(struct store *st, struct store_req *req);

static bool req_run(struct store *st, struct store_req *req)
{
	if (req->op == STORE_CALL)
		return st_call_run(st, req); /* (false: it paused, store_txn_pause) */
	if (req->op == STORE_HOLD)
		return hold_grant(st, req);
	struct kentry *ke = req->key_entry;
	bool blind = false;
	if (!ke->known) {
		blind = st_blind_put(st, req);
		int ret = 0;
		if (blind)
			st_kentry_set_absent(ke);
		else
			ret = st_kentry_lookup(st, ke, req);
		if (ret == 1)
			return false; /* st_req_looked_up runs it again */
		if (ret < 0) {
			st_req_complete(st, req, ret, NULL);
			return true;
		}
	}
	bool live = st_key_live(ke);
	req->existed = live;
	req->result_expiry_ms = live ? ke->expiry_ms : 0;
	req->result_len = live ? ke->value_len : 0;
	req->result_type = live ? ke->type : FMT_TYPE_STRING;
	req->result_count = live ? ke->count : 0;
	req->result_enc = live ? ke->enc : 0;
	if (live && st_is_coll(ke) && wants_string(req)) {
		st_req_complete(st, req, STORE_WRONGTYPE, NULL);
		return true;
	}

	switch (req->op) {
	case STORE_META:
		st_req_complete(st, req, live ? 0 : -ENOENT, NULL);
		return true;
	case STORE_GET:
		if (!live || st_is_coll(ke)) { /* (a collection: STORE_ANY_TYPE) */
			st_req_complete(st, req, live ? 0 : -ENOENT, NULL);
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
	case STORE_EXPIRE: {
		if (!live) {
			st_req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		enum store_update_result r = req->expire(req, ke->expiry_ms);
		if (r == STORE_UPDATE_KEEP) {
			st_req_complete(st, req, 0, NULL);
		} else if (r == STORE_UPDATE_DELETE) {
			st_write_record(st, req, NULL, 0);
		} else if (st_is_coll(ke)) {
			st_write_expiry(st, req, req->new_expiry_ms); /* its metadata record */
		} else {
			if (!value_loaded(st, req))
				return false; /* the record is rewritten whole, with the new expiry */
			st_write_record(st, req, ke->value, req->new_expiry_ms);
		}
		return true;
	}
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
		if (!ke->exists || st_is_coll(ke) || ke->is_inline || ke->pos.segment != g->segment ||
		    ke->pos.offset != g->offset || ke->pos.lsn != g->lsn) {
			st_req_complete(st, req, -ENOENT, NULL);
			return true;
		}
		if (ke->batch_pw != NULL && ke->batch_pw->txid != 0 &&
		    st_txn_open(st, ke->batch_pw->txid)) {
			/* A record of an open transaction: a copy would not say so,
			 * and recovery would keep it if the transaction never
			 * commits.  The segment waits for the next walk. */
			st_req_complete(st, req, -EAGAIN, NULL);
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
	case STORE_CALL:
	case STORE_HOLD:
		break; /* (above) */
	}
	st_req_complete(st, req, -EINVAL, NULL);
	return true;
}

/* ---- holds -------------------------------------------------------------- */

/* A hold heads every queue of its keys: it leaves them, taking the
 * requests behind it along, and completes.  Returns false: nothing settled
 * (the queues are empty now, or run by their new requests). */
static bool hold_grant(struct store *st, struct store_req *req)
{
	size_t n = req_nkeys(req);
	req->held = calloc(n, sizeof(*req->held));
	if (req->held == NULL) {
		st_req_complete(st, req, -ENOMEM, NULL);
		return true;
	}
	req->n_held = 0;
	for (size_t i = 0; i < n; i++) {
		struct store_waiter *w = req_waiter(req, i);
		if (w == NULL)
			continue;
		struct kentry *ke = req_entry(req, i);
		ASSERT(ke->head == w);
		struct st_held *h = &req->held[req->n_held++];
		h->hold = req;
		h->ke = ke;
		h->head = w->next;
		h->tail = w->next != NULL ? ke->tail : NULL;
		ke->head = ke->tail = NULL;
		ke->held = h;
		ke->pins++;
	}
	st_req_complete(st, req, 0, NULL);
	return false;
}

void store_release(struct store *st, struct store_req *hold)
{
	for (size_t i = 0; i < hold->n_held; i++) {
		struct st_held *h = &hold->held[i];
		struct kentry *ke = h->ke;
		ASSERT(ke->held == h);
		ke->held = NULL;
		ke->pins--;
		if (h->head == NULL) {
			if (ke->head == NULL)
				st_kentry_release(st, ke);
			continue;
		}
		if (ke->tail != NULL) { /* (the holder's requests are done before release) */
			ke->tail->next = h->head;
			ke->tail = h->tail;
			continue;
		}
		ke->head = h->head;
		ke->tail = h->tail;
		struct store_req *r = ke->head->req;
		if (--r->heads_missing == 0 && req_run(st, r))
			settled(st, r);
	}
	free(hold->held);
	hold->held = NULL;
	hold->n_held = 0;
	queues_run(st);
}

void st_touch_key(struct store *st, const struct kentry *ke)
{
	int db = st_db_of_id(st, st_ident_db(ke->key));
	if (db >= 0)
		st->watch->touch(st->watch->arg, (unsigned)db, ke->key + FMT_KEY_IDENT_HEAD,
		                 ke->key_len - FMT_KEY_IDENT_HEAD);
}

void store_set_watch(struct store *st, const struct store_watch *w)
{
	st->watch = w;
}

/* Queues req on `ke` (one of its keys): returns true if it heads the queue. */
static bool enqueue(struct store_waiter *w, struct store_req *req,
		    struct kentry *ke)
{
	w->req = req;
	w->next = NULL;
	if (ke->held != NULL) {
		struct st_held *h = ke->held;
		if (req->holder == NULL || req->holder != h->hold->holder) {
			if (h->tail != NULL)
				h->tail->next = w;
			else
				h->head = w;
			h->tail = w;
			return false;
		}
	}
	if (ke->tail != NULL) {
		ke->tail->next = w;
		ke->tail = w;
		return false;
	}
	ke->head = ke->tail = w;
	return true;
}

/* Finds a call's other keys and queues it on each distinct one.  Returns 0
 * or -ENOMEM / -E2BIG / -EINVAL (nothing queued but key 0's kentry). */
static int enqueue_more(struct store *st, struct store_req *req)
{
	size_t n = req->n_more_keys;
	req->waits = calloc(n, sizeof(*req->waits));
	req->more_entries = calloc(n, sizeof(*req->more_entries));
	if (req->waits == NULL || req->more_entries == NULL)
		return -ENOMEM;
	uint32_t stamp = ++st->stamp;
	((struct kentry *)req->key_entry)->stamp = stamp;
	for (size_t i = 0; i < n; i++) {
		const struct store_key_ref *r = &req->more_keys[i];
		if (r->db >= st->cfg.databases)
			return -EINVAL;
		if (r->key_len > FMT_KEY_MAX)
			return -E2BIG;
		size_t len = fmt_key_ident(st->ident, st_db_id(st, r->db), r->key, r->key_len);
		struct kentry *ke = st_kentry_get(st, st->ident, len);
		if (ke == NULL)
			return -ENOMEM;
		req->more_entries[i] = ke;
	}
	for (size_t i = 0; i < n; i++) {
		struct kentry *ke = req->more_entries[i];
		if (ke->stamp == stamp)
			continue; /* a key named twice waits once (waits[i].req NULL) */
		ke->stamp = stamp;
		req->heads_missing += !enqueue(&req->waits[i], req, ke);
	}
	return 0;
}

/* Queues req on the kentry of `ident` (and a call's other keys) and runs it
 * if it heads them all. */
static void submit_ident(struct store *st, struct store_req *req, const uint8_t *ident,
                         size_t len)
{
	struct kentry *ke = st_kentry_get(st, ident, len);
	if (ke == NULL) {
		st_req_complete(st, req, -ENOMEM, NULL);
		return;
	}
	req->key_entry = ke;
	if ((req->op == STORE_CALL || req->op == STORE_HOLD) && req->n_more_keys > 0) {
		int ret = enqueue_more(st, req);
		if (ret < 0) {
			/* enqueue_more fails before it queues anything: the kentries
			 * it found are released, each once. */
			uint32_t stamp = ++st->stamp;
			ke->stamp = stamp;
			for (size_t i = 0; req->more_entries != NULL && i < req->n_more_keys; i++) {
				struct kentry *k = req->more_entries[i];
				if (k != NULL && k->stamp != stamp) {
					k->stamp = stamp;
					st_kentry_release(st, k);
				}
			}
			free(req->waits);
			free(req->more_entries);
			req->waits = NULL;
			req->more_entries = NULL;
			st_kentry_release(st, ke);
			st_req_complete(st, req, ret, NULL);
			return;
		}
	}
	req->heads_missing += !enqueue(&req->wait, req, ke);
	if (req->heads_missing > 0 || !req_run(st, req))
		return;
	settled(st, req);
	queues_run(st);
}

/* Clears what the store keeps in req; false (req completed) if the store no
 * longer takes requests. */
static bool submit_begin(struct store *st, struct store_req *req)
{
	req->store = st;
	req->result = NULL;
	req->result_ref = NULL;
	req->result_len = 0;
	req->retries = 0;
	req->lookups_missing = 0;
	req->lookup_err = 0;
	req->cold = 0;
	req->prefetched = false;
	req->n_prefetch_pins = 0;
	req->heads_missing = 0;
	req->waits = NULL;
	req->more_entries = NULL;
	req->held = NULL;
	req->n_held = 0;
	req->read.done = NULL; /* set only once the request reads the log */
	st->inflight_reqs++;
	st->submitted++;
	if (st->stopped) {
		st_req_complete(st, req, -ESHUTDOWN, NULL);
		return false;
	}
	return true;
}

void store_submit(struct store *st, struct store_req *req)
{
	if (!submit_begin(st, req))
		return;
	if (req->db >= st->cfg.databases) {
		st_req_complete(st, req, -EINVAL, NULL);
		return;
	}
	if (req->key_len > FMT_KEY_MAX || req->value_len > FMT_VALUE_MAX) {
		st_req_complete(st, req, -E2BIG, NULL);
		return;
	}
	size_t len = fmt_key_ident(st->ident, st_db_id(st, req->db), req->key, req->key_len);
	submit_ident(st, req, st->ident, len);
}

unsigned store_shard(const struct store *st)
{
	return st->cfg.shard;
}

void store_txn_end(struct store *st, struct store_req *req)
{
	if (submit_begin(st, req))
		st_txn_end(st, req);
}

void st_req_looked_up(struct store *st, struct store_req *req)
{
	if (req->lookup_err < 0) {
		st_prefetch_unpin(st, req);
		st_req_complete(st, req, req->lookup_err, NULL);
	} else if (!req_run(st, req)) {
		return;
	}
	settled(st, req);
	queues_run(st);
}

void store_call_resume(struct store *st, struct store_req *req)
{
	if (!st_call_run(st, req))
		return;
	settled(st, req);
	queues_run(st);
}

void st_submit_ident(struct store *st, struct store_req *req, const uint8_t *ident, size_t len)
{
	if (submit_begin(st, req))
		submit_ident(st, req, ident, len);
}

/* ---- the end of each loop iteration ------------------------------------- */

/* Drives GC and drains a slice of the index batch when it is due; the slice
 * is sized to the keys that joined the batch in the iteration. */
static bool store_hook(struct px *px, struct px_hook *hook)
{
	struct store *st = container_of(hook, struct store, hook);
	(void)px;
	st_lookups_submit(st);
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
	/* Past its budget the batch drains all the excess at once: writers that
	 * add more keys per iteration than a slice (a pipeline of HSETs of many
	 * fields) are held back by the index, not let grow the batch without
	 * bound. */
	size_t over = st->batch_records > st->apply_keys ? st->batch_records - st->apply_keys : 0;
	st_apply_keys(st, st->apply_slice > over ? st->apply_slice : over);
	return true; /* the next iteration drains on */
}

/* ---- open, close, stats ------------------------------------------------- */

int store_open_begin(struct store **out, struct px *px, const struct store_config *cfg, char *err,
                     size_t errlen)
{
	struct store *st = calloc(1, sizeof(*st));
	*out = st;
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
	st->ident = malloc(FMT_IDENT_MAX);
	st->ident2 = malloc(FMT_IDENT_MAX);
	st->dbs = calloc(cfg->databases ? cfg->databases : 1, sizeof(*st->dbs));
	if (cfg->databases == 0 || cfg->databases > FMT_DB_MAX) {
		snprintf(err, errlen, "server.databases must be 1..%u", FMT_DB_MAX);
		ret = -EINVAL;
		goto fail;
	}
	if (ret < 0 || st->batch == NULL || st->ident == NULL || st->ident2 == NULL ||
	    st->dbs == NULL) {
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
	ret = st_db_open(st, err, errlen);
	if (ret < 0)
		goto fail;
	if (idx_segments_live(st->idx, st_usage_load, st) < 0) {
		snprintf(err, errlen,
		         "cannot read the segment rows of %s/index (see the log above)", st->dir);
		ret = -EIO;
		goto fail;
	}
	return 0;
fail:
	return ret;
}

int store_open_finish(struct store *st, const struct store_txids *committed, char *err,
                      size_t errlen)
{
	char path[FS_PATH_MAX];
	int ret;
	st->committed = committed;
	snprintf(path, sizeof(path), "%s/log", st->dir);
	struct log_config lc = {.dir = path,
	                        .shard = st->cfg.shard,
	                        .segment_size = st->cfg.segment_size,
	                        .durability = st->cfg.durability};
	ret = st_replay_log(st, &lc, err, errlen);
	st->committed = NULL;
	if (ret < 0)
		return ret;
	for (unsigned d = 0; d < st->n_dbs; d++)
		st->dbs[d].applied = st->dbs[d].live;
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
		return -EIO;
	}
	st_lookups_init(st);
	st->hook.fn = store_hook;
	px_hook_add(st->px, &st->hook);
	px_timer_start(st->px, &st->expire_timer, EXPIRE_PERIOD_NS, EXPIRE_PERIOD_NS,
	               st_expire_tick);
	if (st->cfg.gc_live_ratio > 0)
		px_timer_start(st->px, &st->gc_timer, GC_PERIOD_NS, GC_PERIOD_NS, st_gc_tick);
	return 0;
}

int store_open(struct store **out, struct px *px, const struct store_config *cfg, char *err,
               size_t errlen)
{
	struct store *st = NULL;
	struct store_txids committed = {0};
	int ret = store_open_begin(&st, px, cfg, err, errlen);
	if (ret == 0)
		ret = store_scan_commits(st, &committed, err, errlen);
	store_txids_sort(&committed);
	if (ret == 0)
		ret = store_open_finish(st, &committed, err, errlen);
	store_txids_free(&committed);
	if (ret < 0) {
		store_close(st);
		return ret;
	}
	*out = st;
	return 0;
}

int store_checkpoint(struct store *st)
{
	st_apply_batch(st);
	return idx_request_flush(st->idx);
}

void store_db_stats(struct store *st, unsigned db, struct store_db_stats *out)
{
	st_resolve_blind(st);
	*out = db < st->cfg.databases ? st->dbs[db].live : (struct store_db_stats){0};
}

uint64_t store_key_count(struct store *st, unsigned db)
{
	struct store_db_stats d;
	store_db_stats(st, db, &d);
	return d.keys;
}

void store_get_stats(struct store *st, struct store_stats *out)
{
	st_resolve_blind(st);
	*out = st->stats;
	out->keys = 0;
	for (unsigned d = 0; d < st->cfg.databases; d++)
		out->keys += st->dbs[d].live.keys;
	out->index_batch_keys = st->batch_records;
	out->cache_bytes = st->cache_used;
	out->cache_entries = st->n_keys_cached;
	out->pending_writes = st->pw_live;
	out->txn_open = st->n_txns;
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
		out->index_block_misses = is.block_cache_misses + st->lookup_blocks_read;
		out->elem_rows_walked = is.elems_scanned;
		out->garbage_dropped = is.garbage_dropped;
		out->garbage_compactions = is.garbage_compactions;
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
	return st->inflight_reqs > 0 || st->lookups_inflight > 0 || st->batch_dirty ||
	       px_timer_armed(&st->expire_timer) || px_timer_armed(&st->gc_timer) ||
	       px_timer_armed(&st->apply_timer) || st->gc.reading ||
	       (st->log != NULL && log_busy(st->log));
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
			st_blob_unref(ke->whole);
			free(ke->sample);
			free(ke);
		}
	/* Keys of transactions still open at shutdown (never finished: their
	 * COMMIT may be missing) stay out of the index; recovery decides. */
	for (struct pending_write *pw = st->applying, *next; pw != NULL; pw = next) {
		next = pw->next_free;
		st_blob_unref(pw->value);
		free(pw);
	}
	while (st->free_writes != NULL) {
		struct pending_write *pw = st->free_writes;
		st->free_writes = pw->next_free;
		free(pw);
	}
	free(st->txns);
	free(st->buckets);
	free(st->blind);
	free(st->probes);
	free(st->usage);
	free(st->gc.buf);
	free(st->expire_at_key);
	free(st->ident);
	free(st->ident2);
	free(st->dbs);
	free(st->id_slots);
	for (unsigned i = 0; i < st->n_hints; i++)
		free(st->hints[i].prefix);
	if (st->lock_fd >= 0)
		close(st->lock_fd); /* releases the flock */
	free(st);
}
