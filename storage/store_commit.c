/* store_commit: transactions (store.h, "transactions"; format.h,
 * "Transactions") — the transactions open on a shard, the COMMIT records
 * that end them, and the committed ids recovery gathers from every log
 * before it replays any.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/fsutil.h"
#include "storage/store_int.h"

/* ---- open transactions -------------------------------------------------- */

/* Puts txid in the set (not there yet; room for it). */
static void txn_insert(struct store *st, uint64_t txid)
{
	size_t i = st_txn_slot(st, txid);
	while (st->txns[i] != 0)
		i = (i + 1) & (st->cap_txns - 1);
	st->txns[i] = txid;
	st->n_txns++;
}

/* Doubles the set (16 slots the first time).  Returns 0 or -ENOMEM. */
static int txn_grow(struct store *st)
{
	size_t cap = st->cap_txns ? st->cap_txns * 2 : 16;
	uint64_t *old = st->txns, *t = calloc(cap, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	size_t old_cap = st->cap_txns;
	st->txns = t;
	st->cap_txns = cap;
	st->n_txns = 0;
	for (size_t i = 0; i < old_cap; i++)
		if (old[i] != 0)
			txn_insert(st, old[i]);
	free(old);
	return 0;
}

int st_txn_note(struct store *st, const struct store_req *req)
{
	if (req->txn_shards != NULL) {
		_Atomic uint64_t *w = &req->txn_shards[st->cfg.shard / 64];
		uint64_t bit = (uint64_t)1 << (st->cfg.shard % 64);
		if (!(atomic_load_explicit(w, memory_order_relaxed) & bit))
			atomic_fetch_or_explicit(w, bit, memory_order_relaxed);
	}
	if (st_txn_open(st, req->txid))
		return 0;
	if (2 * (st->n_txns + 1) > st->cap_txns && txn_grow(st) < 0)
		return -ENOMEM;
	txn_insert(st, req->txid);
	return 0;
}

void st_txn_finish(struct store *st, uint64_t txid)
{
	if (st->n_txns == 0)
		return;
	size_t mask = st->cap_txns - 1, i = st_txn_slot(st, txid);
	while (st->txns[i] != txid) {
		if (st->txns[i] == 0)
			return; /* not open here */
		i = (i + 1) & mask;
	}
	/* Backward-shift deletion: later entries of the run move into the hole
	 * when their probe would pass it, so lookups never meet a false end. */
	for (size_t j = (i + 1) & mask; st->txns[j] != 0; j = (j + 1) & mask) {
		size_t home = st_txn_slot(st, st->txns[j]);
		if (((j - home) & mask) >= ((j - i) & mask)) {
			st->txns[i] = st->txns[j];
			i = j;
		}
	}
	st->txns[i] = 0;
	st->n_txns--;
	st_batch_touch(st); /* its keys may go to the index now */
}

void st_txn_finish_all(struct store *st)
{
	if (st->n_txns == 0)
		return;
	memset(st->txns, 0, st->cap_txns * sizeof(*st->txns));
	st->n_txns = 0;
	st_batch_touch(st);
}

/* ---- ending a transaction ----------------------------------------------- */

void st_txn_end(struct store *st, struct store_req *req)
{
	bool here = st_txn_open(st, req->txid);
	if (!(req->flags & STORE_TXN_COMMIT) || !here) {
		/* Nothing of it here to commit: a COMMIT would say nothing. */
		if (req->flags & STORE_TXN_FINISH)
			st_txn_finish(st, req->txid);
		st_req_complete(st, req, 0, NULL);
		return;
	}
	struct fmt_record rec = {.type = FMT_COMMIT, .txid = req->txid};
	struct pending_write *pw = st_append(st, req, &rec);
	if (pw == NULL)
		return; /* (req completed with the error) */
	pw->commit = true;
	pw->txid = req->txid;
	pw->finish = (req->flags & STORE_TXN_FINISH) != 0;
	st_pw_ack(st, pw, req);
}

/* ---- committed ids (recovery) ------------------------------------------- */

int store_txids_add(struct store_txids *s, uint64_t txid)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		uint64_t *ids = realloc(s->ids, cap * sizeof(*ids));
		if (ids == NULL)
			return -ENOMEM;
		s->ids = ids;
		s->cap = cap;
	}
	s->ids[s->n++] = txid;
	return 0;
}

static int cmp_txid(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void store_txids_sort(struct store_txids *s)
{
	if (s->n < 2)
		return;
	qsort(s->ids, s->n, sizeof(*s->ids), cmp_txid);
	size_t kept = 1;
	for (size_t i = 1; i < s->n; i++)
		if (s->ids[i] != s->ids[kept - 1])
			s->ids[kept++] = s->ids[i];
	s->n = kept;
}

bool store_txids_has(const struct store_txids *s, uint64_t txid)
{
	size_t lo = 0, hi = s != NULL ? s->n : 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->ids[mid] < txid)
			lo = mid + 1;
		else if (s->ids[mid] > txid)
			hi = mid;
		else
			return true;
	}
	return false;
}

void store_txids_free(struct store_txids *s)
{
	free(s->ids);
	*s = (struct store_txids){0};
}

static int scan_commit(void *arg, const struct fmt_record *rec, const struct log_pos *pos)
{
	(void)pos;
	if (rec->type != FMT_COMMIT)
		return 0;
	return store_txids_add(arg, rec->txid);
}

int store_scan_commits(struct store *st, struct store_txids *committed, char *err, size_t errlen)
{
	char path[FS_PATH_MAX];
	snprintf(path, sizeof(path), "%s/log", st->dir);
	int ret = log_scan(path, st->cfg.shard, idx_applied_lsn(st->idx) + 1, scan_commit,
	                   committed, err, errlen);
	if (ret == -ENOMEM)
		snprintf(err, errlen, "out of memory reading the COMMIT records of %s", path);
	return ret;
}
