/* store_expire: active expiry (store_int.h) — expired keys are found through
 * the index's expiry rows, ordered by time, without reading any value, and
 * deleted through the normal write path (STORE_DELETE with STORE_IF_EXPIRED),
 * so the key count stays exact.
 */
#include <stdlib.h>
#include <string.h>

#include "storage/store_int.h"

/* An expiry delete with its copy of the key's ident. */
struct expire_req {
	struct store_req req;
	uint8_t ident[]; /* copied: the index's buffer is gone after the visit */
};

static void expire_done(struct store_req *req)
{
	struct store *st = req->store;
	if (req->status == 0)
		st->stats.expired++;
	st->expiring--;
	free(container_of(req, struct expire_req, req));
}

/* Deletes an expired key, unless the key table knows better: a key whose
 * delete or rewrite waits in the index batch keeps its old expiry row until
 * the batch goes out, and the walk must not stop there (it resumes after the
 * last row visited: without that, a pass kept finding the same EXPIRE_BATCH
 * rows whose deletes were pending, and reclaimed EXPIRE_BATCH keys per batch
 * delay). */
static int expire_visit(void *arg, uint32_t db, const void *key, size_t klen,
                        uint64_t expiry_ms)
{
	struct store *st = arg;
	if (st->expiring >= EXPIRE_INFLIGHT_MAX)
		return 1;
	if (klen > st->expire_at_cap) {
		uint8_t *b = realloc(st->expire_at_key, klen);
		if (b == NULL)
			return 1;
		st->expire_at_key = b;
		st->expire_at_cap = klen;
	}
	size_t len = fmt_key_ident(st->ident, db, key, klen);
	const struct kentry *ke = st_kentry_find(st, st->ident, len);
	bool settled = st_db_of_id(st, db) < 0 || /* a retired database's: garbage */
	               (ke != NULL && ke->known &&
	                (!ke->exists || ke->expiry_ms == 0 || ke->expiry_ms > clock_unix_ms()));
	if (!settled) {
		struct expire_req *x = calloc(1, sizeof(*x) + len);
		if (x == NULL)
			return 1;
		memcpy(x->ident, st->ident, len);
		x->req.op = STORE_DELETE;
		x->req.flags = STORE_IF_EXPIRED;
		x->req.done = expire_done;
		st->expiring++;
		st_submit_ident(st, &x->req, x->ident, len);
	}
	if (klen > 0) /* (the empty key: expire_at_key may still be NULL) */
		memcpy(st->expire_at_key, key, klen);
	st->expire_at_klen = klen;
	st->expire_at_db = db;
	st->expire_at_ms = expiry_ms;
	st->expire_resume = true;
	return 0;
}

/* One pass: up to EXPIRE_BATCH expired rows after the last one visited; the
 * next iteration goes on while rows remain.  Rows that expire later sort
 * after the walk's position, so once at the end it waits there for them;
 * every EXPIRE_RESTART_NS it starts over from the first row, for what it
 * passed (a delete that failed, an expiry set in the past).  Starting over
 * every tick would walk again, ten times a second, every row whose delete
 * waits in the index batch. */
static void expire_pass(void *arg)
{
	struct store *st = arg;
	if (st->stopped || st->failed)
		return;
	uint64_t now = px_now_ns();
	if (!st->expire_resume)
		st->expire_started_ns = now;
	struct idx_expiry_pos at = {st->expire_at_ms, st->expire_at_db, st->expire_at_key,
	                            st->expire_at_klen};
	int n = idx_expired(st->idx, clock_unix_ms(), st->expire_resume ? &at : NULL, EXPIRE_BATCH,
	                    expire_visit, st);
	if (n < 0 || st->expiring >= EXPIRE_INFLIGHT_MAX)
		return; /* the next tick goes on */
	if (n >= EXPIRE_BATCH) {
		px_send(st->px, st->px->id, expire_pass, st); /* more: next iteration */
		return;
	}
	if (now - st->expire_started_ns >= EXPIRE_RESTART_NS)
		st->expire_resume = false;
}

void st_expire_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	struct store *st = container_of(t, struct store, expire_timer);
	expire_pass(st);
	st_hints_run(st); /* (the same period suits the compaction hints) */
}
