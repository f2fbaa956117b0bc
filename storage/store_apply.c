/* store_apply: how written records reach the index (store_int.h) — the
 * index batch that drains behind the requests, the blind PUTs it settles
 * first, and the live bytes per log segment that its writes carry (GC picks
 * its victims by them).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "storage/store_int.h"

/* ---- live bytes per segment --------------------------------------------- */

/* Where (segment `id`, database `db`)'s entry is, or would be inserted, in
 * st->usage (sorted by segment, then database). */
static size_t usage_index(const struct store *st, uint64_t id, uint32_t db)
{
	size_t lo = 0, hi = st->n_usage;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct seg_usage *u = &st->usage[mid];
		if (u->id < id || (u->id == id && u->db < db))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct seg_usage *st_usage_get(struct store *st, uint64_t id, uint32_t db)
{
	size_t lo = usage_index(st, id, db);
	if (lo < st->n_usage && st->usage[lo].id == id && st->usage[lo].db == db)
		return &st->usage[lo];
	if (st->n_usage == st->cap_usage) {
		size_t cap = st->cap_usage ? st->cap_usage * 2 : 64;
		struct seg_usage *u = realloc(st->usage, cap * sizeof(*u));
		if (u == NULL)
			return NULL;
		st->usage = u;
		st->cap_usage = cap;
	}
	memmove(&st->usage[lo + 1], &st->usage[lo], (st->n_usage - lo) * sizeof(*st->usage));
	st->n_usage++;
	st->usage[lo] = (struct seg_usage){.id = id, .db = db};
	return &st->usage[lo];
}

void st_usage_add(struct store *st, uint64_t segment, uint32_t db, int64_t delta)
{
	if (st_db_of_id(st, db) < 0)
		return; /* a retired database: its bytes are dead */
	struct seg_usage *u = st_usage_get(st, segment, db);
	if (u == NULL)
		return;
	if (delta < 0 && u->live < (uint64_t)-delta)
		u->live = 0; /* a segment counted low (no row): never below zero */
	else
		u->live += (uint64_t)delta;
	u->forget = false;
	u->dirty = true;
	st->usage_dirty = true;
}

/* The key's index entry moves from what ke->idx_* say to `pos` (NULL: no log
 * pointer any more — deleted, or the value is inline). */
static void usage_move(struct store *st, struct kentry *ke, const struct log_pos *pos)
{
	uint32_t db = st_ident_db(ke->key);
	if (ke->idx_ptr)
		st_usage_add(st, ke->idx_pos.segment, db, -(int64_t)ke->idx_pos.length);
	ke->idx_ptr = pos != NULL;
	if (pos != NULL) {
		ke->idx_pos = *pos;
		st_usage_add(st, pos->segment, db, pos->length);
	}
}

void st_usage_retire(struct store *st, uint32_t db)
{
	for (size_t i = 0; i < st->n_usage; i++) {
		struct seg_usage *u = &st->usage[i];
		if (u->db != db)
			continue;
		u->live = 0;
		u->pending = 0;
		u->forget = u->dirty = true;
		st->usage_dirty = true;
	}
}

void st_usage_flush(struct store *st, struct idx_batch *b)
{
	if (!st->usage_dirty)
		return;
	size_t kept = 0;
	for (size_t i = 0; i < st->n_usage; i++) {
		struct seg_usage *u = &st->usage[i];
		if (u->dirty && u->forget)
			idx_batch_forget_live(b, u->id, u->db);
		else if (u->dirty)
			idx_batch_set_live(b, u->id, u->db, u->live);
		u->dirty = false;
		if (!u->forget)
			st->usage[kept++] = *u;
	}
	st->n_usage = kept;
	st->usage_dirty = false;
}

uint64_t st_usage_live(const struct store *st, uint64_t segment)
{
	uint64_t live = 0;
	for (size_t i = usage_index(st, segment, 0); i < st->n_usage && st->usage[i].id == segment;
	     i++)
		live += st_seg_live(&st->usage[i]);
	return live;
}

void st_usage_load(void *arg, uint64_t segment, uint32_t db, uint64_t live)
{
	struct store *st = arg;
	struct seg_usage *u = st_usage_get(st, segment, db);
	if (u == NULL)
		return;
	u->live = live;
	if (st_db_of_id(st, db) < 0) { /* a row a retirement left: remove it */
		u->live = 0;
		u->forget = u->dirty = true;
		st->usage_dirty = true;
	}
}

int st_usage_prune(struct store *st)
{
	for (size_t i = 0; i < st->n_usage; i++) {
		struct log_segment_info info;
		if (log_segment_info(st->log, st->usage[i].id, &info) == -ENOENT) {
			st->usage[i].forget = st->usage[i].dirty = true;
			st->usage_dirty = true;
		}
	}
	if (!st->usage_dirty)
		return 0;
	st_usage_flush(st, st->batch);
	int ret = idx_write(st->idx, st->batch, idx_applied_lsn(st->idx));
	idx_batch_clear(st->batch);
	return ret;
}

/* ---- blind puts ---------------------------------------------------------
 *
 * A plain PUT (no NX, XX, GET or KEEPTTL) of a key the key table does not
 * know replies the same whether the key existed or not; only the key count
 * and the live bytes of the record it replaces depend on it.  Reading the
 * index for that (a RocksDB point lookup per key) cost a bulk load of new
 * keys about a third of the server's CPU.  So such a PUT is "blind": it
 * assumes the key absent (count +1, no old record) and joins st->blind.
 * st_resolve_blind looks all of them up in one sorted MultiGet and corrects
 * what the assumption got wrong.  It runs before every index write (so the
 * index never takes a batch built on an unresolved assumption), before the
 * key count is read (DBSIZE, INFO), before a FLUSHALL, and whenever
 * APPLY_SLICE blind PUTs wait (one MultiGet stays a few milliseconds).
 *
 * The blind PUT is the first pending write of its key (only an unknown key
 * can be blind, and a key with pending writes is pinned and known), and
 * writes reach the batch in LSN order, so until it is in the batch the index
 * holds the key's state from before it, which is what the lookup reads. */

bool st_blind_put(struct store *st, const struct store_req *req)
{
	if (req->op != STORE_PUT || req->flags != 0)
		return false;
	if (st->n_blind == st->cap_blind) {
		size_t cap = st->cap_blind ? 2 * st->cap_blind : 1024;
		struct pending_write **b = realloc(st->blind, cap * sizeof(*b));
		if (b == NULL)
			return false;
		st->blind = b;
		struct idx_probe *p = realloc(st->probes, cap * sizeof(*p));
		if (p == NULL)
			return false;
		st->probes = p;
		st->cap_blind = cap;
	}
	return true;
}

void st_blind_register(struct store *st, struct kentry *ke, struct pending_write *pw)
{
	if (pw == NULL) {
		ke->known = false;
		return;
	}
	pw->blind = true;
	st->blind[st->n_blind++] = pw;
	st->stats.blind_puts++;
	if (st->n_blind >= APPLY_SLICE)
		st_resolve_blind(st); /* one MultiGet stays short */
}

/* Corrects one blind PUT whose key the index held as `e`: the key gets the
 * index state it has (the batch's rows are built from it when it is applied,
 * so the old record's live bytes and expiry row are handled there). */
static void blind_found(struct store *st, struct pending_write *pw, const struct idx_entry *e)
{
	struct kentry *ke = pw->ke;
	st->stats.blind_puts_existing++;
	/* It assumed (absent) -> (new expiry); it was (old expiry) -> (new). */
	struct count_delta fix = {-1, e->expiry_ms ? -1 : 0,
	                          e->expiry_ms ? -(int64_t)(e->expiry_ms / 1000) : 0};
	st_count_live(st, pw->db, &fix);
	pw->delta.keys += fix.keys;
	pw->delta.expires += fix.expires;
	pw->delta.expiry_sum_s += fix.expiry_sum_s;
	if (pw->in_batch && !e->is_inline) /* write_done took it for absent */
		st_usage_pending(st, e->segment, pw->db, -(int64_t)e->length);
	ke->idx_expiry_ms = e->expiry_ms;
	ke->idx_ptr = !e->is_inline;
	ke->idx_pos = (struct log_pos){
	    .segment = e->segment, .offset = e->offset, .length = e->length, .lsn = e->lsn};
}

void st_resolve_blind(struct store *st)
{
	if (st->n_blind == 0)
		return;
	for (size_t i = 0; i < st->n_blind; i++)
		st->probes[i] = (struct idx_probe){.key = st->blind[i]->ke->key,
		                                   .klen = st->blind[i]->ke->key_len};
	/* Memory first (memtables, cached filter and data blocks answer most:
	 * a new key is usually ruled out by its filter); the rest is read from
	 * the files, on the loop (counted as blocking reads). */
	int ret = idx_get_many_cached(st->idx, st->probes, st->n_blind);
	size_t n_cold = 0;
	for (size_t i = 0; ret == 0 && i < st->n_blind; i++) {
		if (st->probes[i].status != -EWOULDBLOCK)
			continue;
		struct pending_write *pw = st->blind[i];
		st->blind[i] = st->blind[n_cold];
		st->blind[n_cold] = pw;
		struct idx_probe p = st->probes[i];
		st->probes[i] = st->probes[n_cold];
		st->probes[n_cold++] = p;
	}
	if (ret == 0 && n_cold > 0) {
		st->stats.index_blocking_reads += n_cold;
		ret = idx_get_many(st->idx, st->probes, n_cold);
	}
	for (size_t i = 0; i < st->n_blind; i++) {
		struct pending_write *pw = st->blind[i];
		const struct idx_probe *p = &st->probes[i];
		pw->blind = false;
		/* A retired database's rows are gone (as in st_kentry_load). */
		if (ret == 0 && p->status == 0 && st_db_of_id(st, pw->db) >= 0)
			blind_found(st, pw, &p->e);
	}
	st->n_blind = 0;
	if (ret < 0 && st->failed == 0) {
		st->failed = -EIO;
		LOG_ERROR("shard %u: the index cannot be read (%s): the key count may be off and"
		          " writes are refused from now on; the log holds every acknowledged write,"
		          " restart to replay it",
		          st->cfg.shard, strerror(-ret));
	}
}

/* ---- the index batch ---------------------------------------------------- */

/* Adds the rows of one key's batch entry: its index row, its expiry rows
 * (from the expiry the index holds to the new one) and the live bytes moving
 * from the record the index pointed at to the new one.  Records the key
 * wrote and overwrote within the batch never reach the index. */
static void batch_add_key(struct store *st, struct pending_write *pw)
{
	struct kentry *ke = pw->ke;
	struct log_pos pos;
	bool ptr = st_entry_pos(pw, &pos);
	/* The live bytes move for real now: what write_done counted pending
	 * is taken back. */
	if (ke->idx_ptr)
		st_usage_pending(st, ke->idx_pos.segment, pw->db, (int64_t)ke->idx_pos.length);
	if (ptr)
		st_usage_pending(st, pos.segment, pw->db, -(int64_t)pos.length);
	usage_move(st, ke, ptr ? &pos : NULL);
	if (pw->is_delete) {
		idx_batch_delete(st->batch, ke->key, ke->key_len, ke->idx_expiry_ms);
		ke->idx_expiry_ms = 0;
	} else {
		idx_batch_put(st->batch, ke->key, ke->key_len, &pw->entry, ke->idx_expiry_ms);
		ke->idx_expiry_ms = pw->entry.expiry_ms;
	}
}

/* Asks RocksDB to flush its memtable (in the background) once the log has
 * CHECKPOINT_RECORDS records past the last time: that bounds what recovery
 * replays after a crash.  A busy flush is asked for again at the next write. */
static void checkpoint_due(struct store *st)
{
	uint64_t next = st->log != NULL ? log_next_lsn(st->log) : 0;
	if (next - st->checkpoint_lsn < CHECKPOINT_RECORDS)
		return;
	if (idx_request_flush(st->idx) != -EBUSY)
		st->checkpoint_lsn = next;
}

/* Writes the oldest `max` keys of the batch to the index, with applied_lsn
 * and the key count of what the index then holds, and unpins them.  Keys
 * whose newest record belongs to an open transaction (store.h,
 * "transactions") stay in the batch, in their place.
 *
 * The LSN is the one just below the first record of the oldest key left
 * waiting: every record up to it is in the index, or was overwritten there by
 * a newer record of its key.  Such a newer row is ahead of applied_lsn; replay
 * after a crash re-applies every record from there on, each against the row
 * the index holds (its count, expiry row and live bytes follow that row), so
 * it ends where the log does. */
void st_apply_keys(struct store *st, size_t max)
{
	st_resolve_blind(st);
	if (!st->batch_dirty)
		return;
	struct pending_write *rest = st->applying, *kept = NULL, *kept_tail = NULL;
	struct pending_write *written = NULL, *written_tail = NULL;
	size_t n = 0;
	while (rest != NULL && n < max) {
		struct pending_write *pw = rest;
		rest = pw->next_free;
		pw->next_free = NULL;
		if (pw->txid != 0 && st_txn_open(st, pw->txid)) {
			if (kept_tail != NULL)
				kept_tail->next_free = pw;
			else
				kept = pw;
			kept_tail = pw;
			continue;
		}
		batch_add_key(st, pw);
		st_count_applied(st, pw->db, &pw->delta);
		if (written_tail != NULL)
			written_tail->next_free = pw;
		else
			written = pw;
		written_tail = pw;
		n++;
	}
	bool walked_all = rest == NULL; /* what is left, if anything, is kept */
	if (kept_tail != NULL) {
		kept_tail->next_free = rest;
		if (rest == NULL)
			st->applying_tail = kept_tail;
		rest = kept;
	}
	st->applying = rest;
	if (rest == NULL)
		st->applying_tail = NULL;
	st->batch_records -= n;
	if (n == 0 && kept != NULL) {
		st->batch_dirty = false; /* only open transactions' keys: their finish
		                            touches the batch again */
		return;
	}
	st_usage_flush(st, st->batch);
	st_counts_flush(st, st->batch);
	uint64_t lsn = rest != NULL ? rest->w.pos.lsn - 1 : st->batch_lsn;
	if (lsn < idx_applied_lsn(st->idx))
		lsn = idx_applied_lsn(st->idx);
	int ret = idx_write(st->idx, st->batch, lsn);
	idx_batch_clear(st->batch);
	for (struct pending_write *pw = written, *next; pw != NULL; pw = next) {
		next = pw->next_free;
		st_pending_write_free(st, pw);
	}
	if (walked_all)
		st->batch_dirty = false; /* (open transactions' keys wait for their finish) */
	if (ret < 0 && st->failed == 0) {
		st->failed = -EIO;
		LOG_ERROR("shard %u: the index cannot be written: writes are refused from now on;"
		          " the log holds every acknowledged write, restart to replay it",
		          st->cfg.shard);
	}
	checkpoint_due(st);
}

void st_apply_batch(struct store *st)
{
	st_apply_keys(st, SIZE_MAX);
}

/* True when the batch should drain: too many keys wait, the oldest has
 * waited APPLY_DELAY_NS or APPLY_LAG_RECORDS records, the store is stopping,
 * or garbage collection waits for the index to hold its relocations before
 * it deletes a segment. */
bool st_apply_due(const struct store *st)
{
	if (!st->batch_dirty)
		return false;
	if (st->stopped || st->batch_records >= st->apply_keys || st->applying == NULL)
		return true; /* (no key: only live-byte rows, which cost nothing to wait for) */
	/* GC's oldest walked segment, once the log is synced past it, waits
	 * only for the index (a segment walked later waits for its turn). */
	const struct gc *g = &st->gc;
	if (g->n_waiting > 0 && g->waiting[0].lsn > idx_applied_lsn(st->idx) &&
	    g->waiting[0].lsn <= log_synced_lsn(st->log))
		return true;
	if (log_next_lsn(st->log) - st->applying->w.pos.lsn >= APPLY_LAG_RECORDS)
		return true;
	return px_now_ns() - st->applying->batched_ns >= APPLY_DELAY_NS;
}

/* An idle loop runs no hook: the timer drains the batch then, and comes
 * back when the oldest key left is due.  It drains the slice the last
 * iteration's load called for: the tick also fires on a busy loop, and a
 * full slice there (4096 rows of memtable inserts) held every connection for
 * 4-8 ms while only reads came in.
 *
 * A store that has taken no request for APPLY_IDLE_NS drains its batch
 * before it is due: waiting pays only when later writes merge into it, and
 * an idle loop has the CPU to spare now that a busy one would not have in a
 * few seconds (after a bulk load, the 100 k keys' rows went out 4 s later,
 * in the middle of the next burst of requests). */
static void apply_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	struct store *st = container_of(t, struct store, apply_timer);
	bool idle = st->submitted == st->idle_mark;
	st->idle_mark = st->submitted;
	if (st_apply_due(st))
		st_apply_keys(st, st->apply_slice);
	else if (idle)
		st_apply_keys(st, APPLY_IDLE_SLICE);
	if (!st->batch_dirty || st->stopped)
		return;
	uint64_t now = px_now_ns(), due = now;
	if (st->applying != NULL && st->applying->batched_ns + APPLY_DELAY_NS > now)
		due = st->applying->batched_ns + APPLY_DELAY_NS;
	uint64_t wait = due - now + APPLY_TICK_NS;
	if (idle)
		wait = APPLY_TICK_NS;
	else if (wait > APPLY_IDLE_NS)
		wait = APPLY_IDLE_NS; /* to see whether the store has gone idle */
	px_timer_start(st->px, &st->apply_timer, wait, 0, apply_tick);
}

void st_batch_touch(struct store *st)
{
	st->batch_dirty = true;
	if (!px_timer_armed(&st->apply_timer) && !st->stopped)
		px_timer_start(st->px, &st->apply_timer, APPLY_IDLE_NS, 0, apply_tick);
}
