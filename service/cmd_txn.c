/* cmd_txn: a transaction's commit on its shards (cmd.h, "transactions";
 * the store's side: store.h, "transactions").
 *
 * The owner reports when the writes are applied (cmd_txn_appended) and
 * when they are durable (cmd_txn_durable).  Then, on the origin:
 *   - no shard: `then` at once (nothing was written);
 *   - a write failed: FINISH on every shard (the transaction will not
 *     commit; its records stay out of the index only until then), `then`
 *     with the error;
 *   - cancelled (cmd_txn_cancel: the server is stopping): nothing — it stays
 *     open on its shards, whose next start leaves its records out;
 *   - one shard: COMMIT and FINISH in one request, sent as soon as the
 *     writes are applied — the shard's log writes the COMMIT after them, so
 *     its durability is theirs — and `then` once it and the durability
 *     report are back;
 *   - several shards: COMMIT on each once every write is durable on all of
 *     them, then FINISH on each once every COMMIT is (store.h says why a
 *     shard must not finish earlier); `then` after the FINISH round.
 *
 * Ids: 24 random bits drawn per proactor thread (again when its counter
 * wraps), the proactor's number and a 32-bit counter — unique among the
 * transactions of a run, and across runs unless two draws of one proactor
 * meet while a log still holds the older one's records to replay.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "cmd.h"
#include "shard.h"

/* One shard's store_txn_end request of a transaction. */
struct cmd_txn_end {
	struct store_req req;
	struct cmd_txn *t;
	unsigned shard;
};

static _Thread_local uint64_t txid_base; /* random 24 bits, proactor 8 bits, 32 zero bits */
static _Thread_local uint32_t txid_next;

static uint64_t txid_new(void)
{
	if (txid_base == 0 || txid_next == 0) {
		uint32_t r = 0;
		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (uint32_t)(clock_unix_ms() * 2654435761u);
		r &= 0xffffffu;
		txid_base = (uint64_t)(r ? r : 1) << 40 | (uint64_t)(px_current()->id & 0xff) << 32;
		txid_next = 1;
	}
	return txid_base | txid_next++;
}

void cmd_txn_begin(struct cmd_txn *t, void (*then)(struct cmd_txn *t, int status))
{
	t->id = txid_new();
	t->origin = px_current()->id;
	t->then = then;
	t->appended = t->durable = false;
	t->status = 0;
	t->n_ends = t->pending = t->sent = 0;
	t->ends = NULL;
	atomic_init(&t->shard_bits, 0);
	t->shard_words = NULL;
	if (shard_map.shards > 64)
		t->shard_words = calloc((shard_map.shards + 63) / 64, sizeof(*t->shard_words));
	t->all_shards = shard_map.shards > 64 && t->shard_words == NULL;
}

void cmd_txn_free(struct cmd_txn *t)
{
	free(t->ends);
	free((void *)t->shard_words);
	t->ends = NULL;
	t->shard_words = NULL;
}

static bool txn_has(const struct cmd_txn *t, unsigned shard)
{
	if (t->all_shards)
		return true; /* (no room to note them) */
	const _Atomic uint64_t *w =
	    t->shard_words != NULL ? &t->shard_words[shard / 64] : &t->shard_bits;
	return atomic_load_explicit(w, memory_order_relaxed) >> (shard % 64) & 1;
}

/* The shards the transaction went to, into t->ends.  Returns 0 or -ENOMEM. */
static int txn_collect(struct cmd_txn *t)
{
	unsigned n = 0;
	for (unsigned s = 0; s < shard_map.shards; s++)
		n += txn_has(t, s);
	t->n_ends = n;
	if (n == 0)
		return 0;
	t->ends = calloc(n, sizeof(*t->ends));
	if (t->ends == NULL)
		return -ENOMEM;
	n = 0;
	for (unsigned s = 0; s < shard_map.shards; s++)
		if (txn_has(t, s))
			t->ends[n++] = (struct cmd_txn_end){.t = t, .shard = s};
	return 0;
}

static void txn_round(struct cmd_txn *t, unsigned flags);

/* On the origin, after each report and each round: sends the next round,
 * or runs `then` once there is none left. */
static void txn_next(struct cmd_txn *t)
{
	if (t->pending > 0 || !t->appended)
		return;
	if (t->n_ends == 1 && t->sent == 0 && t->status == 0) {
		txn_round(t, STORE_TXN_COMMIT | STORE_TXN_FINISH); /* (before durable) */
		return;
	}
	if (!t->durable)
		return;
	if (t->n_ends > 1 && t->sent == 0 && t->status == 0) {
		txn_round(t, STORE_TXN_COMMIT);
		return;
	}
	if (t->n_ends > 0 && !(t->sent & STORE_TXN_FINISH) && t->status != -ECANCELED) {
		txn_round(t, STORE_TXN_FINISH); /* every COMMIT is written, or none will be */
		return;
	}
	t->then(t, t->status);
}

static void end_back(void *arg)
{
	struct cmd_txn_end *e = arg;
	struct cmd_txn *t = e->t;
	if (e->req.status < 0 && t->status == 0)
		t->status = e->req.status;
	t->pending--;
	txn_next(t);
}

static void end_done(struct store_req *req)
{
	struct cmd_txn_end *e = req->arg;
	struct px *self = px_current();
	if (self->id == e->t->origin)
		end_back(e);
	else
		px_send(self, e->t->origin, end_back, e);
}

static void end_submit(void *arg)
{
	struct cmd_txn_end *e = arg;
	store_txn_end(shard_store(e->shard), &e->req);
}

/* Sends store_txn_end with `flags` to every shard of the transaction. */
static void txn_round(struct cmd_txn *t, unsigned flags)
{
	struct px *self = px_current();
	t->sent |= flags;
	t->pending = t->n_ends;
	for (unsigned i = 0; i < t->n_ends; i++) {
		struct cmd_txn_end *e = &t->ends[i];
		e->req =
		    (struct store_req){.txid = t->id, .flags = flags, .arg = e, .done = end_done};
		unsigned owner = shard_proactor(e->shard);
		if (owner == self->id)
			end_submit(e);
		else
			px_send(self, owner, end_submit, e);
	}
}

void cmd_txn_appended(struct cmd_txn *t)
{
	t->appended = true;
	int rc = txn_collect(t);
	if (rc < 0) {
		/* Without the list no shard can be told: the transaction stays
		 * open on them (its rows out of the index) until a restart
		 * decides it — uncommitted. */
		t->status = rc;
		t->n_ends = 0;
	}
	txn_next(t);
}

void cmd_txn_cancel(struct cmd_txn *t)
{
	if (t->status == 0)
		t->status = -ECANCELED;
}

void cmd_txn_durable(struct cmd_txn *t, int status)
{
	t->durable = true;
	if (status < 0 && t->status == 0)
		t->status = status;
	txn_next(t);
}
