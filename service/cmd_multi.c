/* cmd_multi: MULTI, EXEC, DISCARD, WATCH, UNWATCH — Redis's transactions.
 *
 * Queueing: after MULTI, cmd_handle hands every command that checks out
 * (known, right arity, authenticated) to cmd_multi_queue, which copies its
 * arguments into the client's queue and replies +QUEUED; one that does not
 * replies its error and makes EXEC abort (-EXECABORT).  EXEC, DISCARD,
 * MULTI, WATCH, QUIT and RESET run at once, as in Redis.
 *
 * EXEC, on the connection's proactor (the origin):
 *   1. The keys of the queued commands (the table's key positions, SELECT
 *      followed) are grouped by shard, and one STORE_HOLD per shard is
 *      taken, one shard after another in shard order (store.h, "holds"):
 *      from then on no other client's request runs on those keys.  Holds are
 *      taken in one order by every EXEC, so two never wait for each other.
 *      A transaction of one-key commands on this proactor's own shards,
 *      without WATCH, takes none (exec_is_local): dispatched in one go, it
 *      is queued on all its keys before anything else can be.
 *   2. Once every hold is granted, a watched key touched since WATCH, or one
 *      whose expiry has passed since, makes EXEC reply a null array.
 *   3. Else the queued commands run through the normal dispatch, each in a
 *      context of its own whose store requests carry the transaction as
 *      their holder, so they pass its holds.  Commands of one key
 *      (CMD_KEYED) are sent together, in order — the store keeps them in
 *      order per key; any other command waits for the ones before it and is
 *      waited for, so a command that hops between proactors (a multi-key
 *      one) sees everything before it.  Each reply is kept.
 *   4. Once every command has been handed to its store (a command that runs
 *      alone has finished), the holds are released — by messages from the
 *      origin, which follow the commands sent to the same proactor, so
 *      every command is queued on its keys before the requests the hold kept
 *      back — and the connection's later commands may run (they waited:
 *      conn.h, barrier).  The store queues order them after the
 *      transaction's commands, whose writes they see.
 *   5. When every command has finished (its writes durable as
 *      storage.durability says), the replies leave as one array.
 *
 * What this guarantees, and what not yet (docs/COMMANDS.md): no other client
 * observes or interleaves with a transaction on the keys its commands name,
 * on any shard.  Commands without keys (KEYS, SCAN, DBSIZE, RANDOMKEY,
 * FLUSHDB, FLUSHALL, SWAPDB) inside MULTI run unisolated, and a crash during
 * EXEC may leave part of it applied: each command's records are durable on
 * their own.
 *
 * Multi-key commands (MSET, MGET, DEL, SINTERSTORE, ...) whose keys are on
 * several shards run the same way, as a transaction of one command whose
 * reply is their own (cmd_isolate, called by cmd_dispatch).
 *
 * WATCH: each shard has a table of watched keys, by database number and
 * key (on the shard's proactor), and the store calls `touch` for every key a
 * write changes and `touch_db` for FLUSHDB/FLUSHALL/SWAPDB while the table
 * is not empty (store.h, store_set_watch).  A touched entry marks its
 * watcher dirty and leaves the table.  As in Redis, a flush touches only
 * the watched keys that exist: an entry knows whether its key existed when
 * it was watched (any change since would have touched it); a SWAPDB
 * touches every watched key of both databases (Redis: those that exist in
 * either; docs/COMMANDS.md).  A watcher is shared by the client and its entries
 * (reference counted): UNWATCH, EXEC, DISCARD, RESET and close mark it gone
 * and drop the client's reference; entries of a gone watcher are dropped
 * when their key is touched or when the table is swept (each time it has
 * doubled since the last sweep), so a table holds O(live entries).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "shard.h"

#define WATCH_BUCKETS_MIN 64 /* buckets of a watch table when it first gets an entry */
#define WATCH_SWEEP_MIN   64 /* entries before a table is first swept */

static const char err_exec_abort[] =
    "EXECABORT Transaction discarded because of previous errors.";

/* ---- watchers and the per-shard tables --------------------------------- */

/* What a client's WATCH keys share: shared with the shards' tables. */
struct cmd_watcher {
	atomic_uint refs;  /* the client's, plus one per table entry */
	atomic_bool dirty; /* a watched key was changed */
	atomic_bool gone;  /* the client no longer watches */
};

static void watcher_unref(struct cmd_watcher *w)
{
	if (atomic_fetch_sub(&w->refs, 1) == 1)
		free(w);
}

/* One watched key of one client. */
struct wentry {
	struct wentry *next;
	struct cmd_watcher *w;
	unsigned db;
	bool existed; /* the key existed when watched (true until known) */
	uint64_t hash;
	size_t len;
	uint8_t key[];
};

/* One shard's watched keys; used only on the shard's proactor. */
struct wtable {
	struct wentry **buckets;
	size_t n_buckets, n, sweep_at;
	unsigned shard;
	struct store_watch hooks;
};

static struct wtable *wtables; /* [shard_map.shards] */

static uint64_t key_hash(unsigned db, const uint8_t *p, size_t len)
{
	uint64_t h = (1469598103934665603ull ^ db) * 1099511628211ull;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

static bool wentry_is(const struct wentry *e, uint64_t h, unsigned db, const uint8_t *key,
                      size_t len)
{
	return e->hash == h && e->db == db && e->len == len && memcmp(e->key, key, len) == 0;
}

/* Unlinks *pp (its watcher dirty when `touched`). */
static void wentry_drop(struct wtable *t, struct wentry **pp, bool touched)
{
	struct wentry *e = *pp;
	*pp = e->next;
	if (touched)
		atomic_store(&e->w->dirty, true);
	watcher_unref(e->w);
	free(e);
	if (--t->n == 0)
		store_set_watch(shard_store(t->shard), NULL);
}

static void wtable_touch(void *arg, unsigned db, const uint8_t *key, size_t len)
{
	struct wtable *t = arg;
	uint64_t h = key_hash(db, key, len);
	struct wentry **pp = &t->buckets[h & (t->n_buckets - 1)];
	while (*pp != NULL) {
		struct wentry *e = *pp;
		if (wentry_is(e, h, db, key, len))
			wentry_drop(t, pp, true);
		else
			pp = &e->next;
	}
}

/* Drops the entries of gone watchers, and with by_db those a FLUSHALL (db
 * -1), FLUSHDB (db2 -1) or SWAPDB of db and db2 touches. */
static void wtable_filter(struct wtable *t, int db, int db2, bool by_db)
{
	for (size_t b = 0; b < t->n_buckets && t->n > 0; b++) {
		struct wentry **pp = &t->buckets[b];
		while (*pp != NULL) {
			struct wentry *e = *pp;
			bool hit = false;
			if (by_db && db2 >= 0)
				hit = (int)e->db == db || (int)e->db == db2;
			else if (by_db)
				hit = (db < 0 || (int)e->db == db) && e->existed;
			if (hit || atomic_load(&e->w->gone))
				wentry_drop(t, pp, hit);
			else
				pp = &e->next;
		}
	}
}

static void wtable_touch_db(void *arg, int db, int db2)
{
	wtable_filter(arg, db, db2, true);
}

static int wtable_grow(struct wtable *t)
{
	size_t n = t->n_buckets ? 2 * t->n_buckets : WATCH_BUCKETS_MIN;
	struct wentry **b = calloc(n, sizeof(*b));
	if (b == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_buckets; i++)
		for (struct wentry *e = t->buckets[i], *next; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	free(t->buckets);
	t->buckets = b;
	t->n_buckets = n;
	return 0;
}

/* Adds (db, key) for w.  Returns 0 or -ENOMEM. */
static int wtable_add(struct wtable *t, struct cmd_watcher *w, unsigned db, const uint8_t *key,
                      size_t len)
{
	if (t->n >= t->sweep_at) {
		wtable_filter(t, -1, -1, false); /* drops the entries of gone watchers */
		t->sweep_at = t->n * 2 > WATCH_SWEEP_MIN ? t->n * 2 : WATCH_SWEEP_MIN;
	}
	if (t->n >= t->n_buckets && wtable_grow(t) < 0)
		return -ENOMEM;
	struct wentry *e = malloc(sizeof(*e) + len);
	if (e == NULL)
		return -ENOMEM;
	e->w = w;
	e->db = db;
	e->existed = true;
	e->hash = key_hash(db, key, len);
	e->len = len;
	memcpy(e->key, key, len);
	e->next = t->buckets[e->hash & (t->n_buckets - 1)];
	t->buckets[e->hash & (t->n_buckets - 1)] = e;
	atomic_fetch_add(&w->refs, 1);
	if (t->n++ == 0)
		store_set_watch(shard_store(t->shard), &t->hooks);
	return 0;
}

/* w's entry for (db, key) learns whether the key existed (unless a change
 * has touched it meanwhile: then it is gone). */
static void wtable_existed(struct wtable *t, struct cmd_watcher *w, unsigned db,
                           const uint8_t *key, size_t len, bool existed)
{
	if (t->n == 0)
		return;
	uint64_t h = key_hash(db, key, len);
	for (struct wentry *e = t->buckets[h & (t->n_buckets - 1)]; e != NULL; e = e->next)
		if (e->w == w && wentry_is(e, h, db, key, len))
			e->existed = existed;
}

int cmd_multi_init(char *err, size_t errlen)
{
	wtables = calloc(shard_map.shards, sizeof(*wtables));
	if (wtables == NULL) {
		snprintf(err, errlen, "out of memory allocating the WATCH tables");
		return -ENOMEM;
	}
	for (unsigned s = 0; s < shard_map.shards; s++) {
		wtables[s].shard = s;
		wtables[s].sweep_at = WATCH_SWEEP_MIN;
		wtables[s].hooks = (struct store_watch){wtable_touch, wtable_touch_db, &wtables[s]};
	}
	return 0;
}

/* ---- the client's state ------------------------------------------------- */

/* A queued command as EXEC runs it: its arguments in the queue's arena. */
struct queued {
	const struct cmd_def *cmd;
	size_t argc;
	uint8_t **argv;
	size_t *argv_len;
};

/* A queued command in the arena: the record, then argc lengths, then the
 * arguments, each followed by a NUL; the next record starts 8-aligned. */
struct qrec {
	const struct cmd_def *cmd;
	size_t argc;
	size_t size; /* of the whole record, aligned */
	size_t len[];
};

/* A client's transaction (conn->daemon), made by its first MULTI or WATCH.
 * The queue is one arena (no allocation per command once it has grown),
 * lent to EXEC and given back when the EXEC ends. */
struct client_tx {
	bool in_multi;
	bool aborted; /* a command was refused while queueing: EXEC aborts */
	uint8_t *arena;
	size_t arena_len, arena_cap;
	size_t n, n_args; /* commands and their arguments in the arena */
	struct cmd_watcher *w; /* WATCH, or NULL */
	uint64_t *expiries;    /* the watched keys' expiries (EXEC fails once one passed) */
	size_t n_exp, cap_exp;
};

static struct client_tx *tx_of(struct conn *c)
{
	if (c->daemon == NULL)
		c->daemon = calloc(1, sizeof(struct client_tx));
	return c->daemon;
}

static void tx_discard(struct client_tx *tx)
{
	tx->arena_len = tx->n = tx->n_args = 0;
	tx->in_multi = false;
	tx->aborted = false;
}

static void tx_unwatch(struct client_tx *tx)
{
	if (tx->w != NULL) {
		atomic_store(&tx->w->gone, true);
		watcher_unref(tx->w);
		tx->w = NULL;
	}
	free(tx->expiries);
	tx->expiries = NULL;
	tx->n_exp = tx->cap_exp = 0;
}

void cmd_on_close(struct conn *c)
{
	struct client_tx *tx = c->daemon;
	if (tx == NULL)
		return;
	tx_discard(tx);
	tx_unwatch(tx);
	cmd_block_put(tx->arena, tx->arena_cap);
	free(tx);
	c->daemon = NULL;
}

void cmd_multi_reset(struct conn *c)
{
	struct client_tx *tx = c->daemon;
	if (tx != NULL) {
		tx_discard(tx);
		tx_unwatch(tx);
	}
}

bool cmd_in_multi(const struct conn *c)
{
	const struct client_tx *tx = c->daemon;
	return tx != NULL && tx->in_multi;
}

void cmd_multi_refused(struct conn *c)
{
	struct client_tx *tx = c->daemon;
	if (tx != NULL && tx->in_multi)
		tx->aborted = true;
}

/* ---- MULTI, queueing, DISCARD -------------------------------------------- */

void cmd_multi(struct cmd_ctx *x)
{
	struct client_tx *tx = tx_of(x->conn);
	if (tx == NULL) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	if (tx->in_multi) {
		cmd_fail(x, "ERR MULTI calls can not be nested");
		return;
	}
	tx->in_multi = true;
	tx->aborted = false;
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

bool cmd_multi_queue(struct cmd_ctx *x)
{
	struct client_tx *tx = x->conn->daemon;
	cmd_fn fn = x->cmd->fn;
	if (!tx->in_multi || fn == cmd_exec || fn == cmd_discard || fn == cmd_multi ||
	    fn == cmd_watch || fn == cmd_quit || fn == cmd_reset)
		return false;
	size_t argc = cmd_argc(x), size = sizeof(struct qrec) + argc * sizeof(size_t);
	for (size_t i = 0; i < argc; i++)
		size += cmd_arg_len(x, i) + 1;
	size = (size + 7) & ~(size_t)7;
	if (tx->arena_len + size > tx->arena_cap) {
		size_t need = tx->arena_len + size, cap;
		uint8_t *a =
		    cmd_block_get(need > 2 * tx->arena_cap ? need : 2 * tx->arena_cap, &cap);
		if (a == NULL) {
			tx->aborted = true;
			cmd_fail(x, cmd_err_oom);
			return true;
		}
		if (tx->arena_len > 0)
			memcpy(a, tx->arena, tx->arena_len);
		cmd_block_put(tx->arena, tx->arena_cap);
		tx->arena = a;
		tx->arena_cap = cap;
	}
	struct qrec *r = (struct qrec *)(tx->arena + tx->arena_len);
	r->cmd = x->cmd;
	r->argc = argc;
	r->size = size;
	uint8_t *p = (uint8_t *)(r->len + argc);
	for (size_t i = 0; i < argc; i++) {
		size_t len = cmd_arg_len(x, i);
		memcpy(p, cmd_arg(x, i), len);
		p[len] = '\0';
		r->len[i] = len;
		p += len + 1;
	}
	tx->arena_len += size;
	tx->n++;
	tx->n_args += argc;
	resp_add_simple(x->reply, "QUEUED");
	cmd_done(x);
	return true;
}

void cmd_discard(struct cmd_ctx *x)
{
	struct client_tx *tx = x->conn->daemon;
	if (tx == NULL || !tx->in_multi) {
		cmd_fail(x, "ERR DISCARD without MULTI");
		return;
	}
	tx_discard(tx);
	tx_unwatch(tx);
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

/* ---- WATCH, UNWATCH -------------------------------------------------------- */

static void watch_key(struct cmd_ctx *x);

/* On the origin: the key's expiry is known; the next key, or the reply. */
static void watch_recorded(struct cmd_ctx *x)
{
	struct client_tx *tx = x->conn->daemon;
	uint64_t exp = x->u.watch.expiry_ms;
	if (exp != 0 && tx->w == x->u.watch.w) {
		if (tx->n_exp == tx->cap_exp) {
			size_t cap = tx->cap_exp ? 2 * tx->cap_exp : 4;
			uint64_t *e = realloc(tx->expiries, cap * sizeof(*e));
			if (e == NULL) {
				cmd_fail(x, cmd_err_oom);
				return;
			}
			tx->expiries = e;
			tx->cap_exp = cap;
		}
		tx->expiries[tx->n_exp++] = exp;
	}
	if (++x->u.watch.arg < cmd_argc(x)) {
		watch_key(x);
		return;
	}
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

static void watch_meta_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	bool existed = sr->status == 0 && sr->existed;
	size_t i = x->u.watch.arg;
	wtable_existed(&wtables[x->shard], x->u.watch.w, x->db, cmd_arg(x, i), cmd_arg_len(x, i),
	               existed);
	x->u.watch.expiry_ms = existed ? sr->result_expiry_ms : 0;
	cmd_run_on_px(x, x->origin, watch_recorded);
}

/* On the key's shard: the table entry first, then whether the key exists
 * and its expiry (a write between the two marks the watcher, as it should). */
static void watch_on_shard(struct cmd_ctx *x)
{
	size_t i = x->u.watch.arg;
	if (wtable_add(&wtables[x->shard], x->u.watch.w, x->db, cmd_arg(x, i), cmd_arg_len(x, i)) <
	    0) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	memset(&x->sr, 0, offsetof(struct store_req, status));
	x->sr.op = STORE_META;
	cmd_submit_arg(x, i, watch_meta_done);
}

static void watch_key(struct cmd_ctx *x)
{
	size_t i = x->u.watch.arg;
	cmd_run_on_shard(x, shard_of_key(cmd_arg(x, i), cmd_arg_len(x, i)), watch_on_shard);
}

void cmd_watch(struct cmd_ctx *x)
{
	struct client_tx *tx = tx_of(x->conn);
	if (tx == NULL) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	if (tx->in_multi) {
		cmd_fail(x, "ERR WATCH inside MULTI is not allowed");
		return;
	}
	if (tx->w == NULL) {
		tx->w = malloc(sizeof(*tx->w));
		if (tx->w == NULL) {
			cmd_fail(x, cmd_err_oom);
			return;
		}
		atomic_init(&tx->w->refs, 1);
		atomic_init(&tx->w->dirty, false);
		atomic_init(&tx->w->gone, false);
	}
	x->u.watch.w = tx->w; /* (the client's reference keeps it while WATCH runs) */
	x->u.watch.arg = 1;
	watch_key(x);
}

void cmd_unwatch(struct cmd_ctx *x)
{
	struct client_tx *tx = x->conn->daemon;
	if (tx != NULL)
		tx_unwatch(tx);
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

/* ---- EXEC ------------------------------------------------------------------ */

/* One shard's hold of a transaction. */
struct exec_hold {
	struct cmd_exec *e;
	unsigned shard;
	struct store_req req;
	struct store_key_ref *keys; /* keys[0] is req's key, the rest its more_keys */
	size_t n;
};

/* A key of the transaction, before they are grouped by shard. */
struct exec_key {
	unsigned shard;
	struct store_key_ref ref;
};

struct cmd_exec {
	atomic_uint refs;  /* the EXEC's, plus one per release message in flight */
	size_t alloc_cap;  /* the allocation's bytes (cmd_block_get) */
	struct cmd_ctx *x; /* the EXEC */
	uint8_t *arena;    /* the client's queue, lent (struct client_tx) */
	size_t arena_cap;
	struct queued *q;  /* the commands (in this allocation, after the struct) */
	size_t n;
	struct conn_req *reqs; /* one per queued command: its reply (in this allocation) */
	size_t next;           /* the next command to dispatch */
	size_t running;        /* dispatched, not finished */
	size_t finished;
	bool pumping;          /* exec_pump is on the stack */
	bool bare;             /* one multi-key command run isolated: its reply alone */
	bool waiting_barrier;  /* a command that runs alone is running: barrier_index */
	size_t barrier_index;
	bool failed_watch;     /* the reply is a null array */
	bool released;         /* the holds are released, the barrier lifted */
	int status;            /* < 0: a hold failed, or the writes failed */
	bool has_txn;          /* an EXEC or an isolated command: it commits as one */
	bool txn_reported;     /* ... and its writes are all applied */
	struct cmd_txn txn;    /* (cmd.h, "transactions") */
	struct store_durable durable; /* its commands' writes, acknowledged early */
	struct exec_hold *holds;
	size_t n_holds, step;  /* step: holds granted (holds[0..step)) */
	struct cmd_watcher *w;
	uint64_t *expiries;
	size_t n_exp;
	/* A held run (cmd_held_start: a script) instead of a queue: */
	cmd_fn ready;           /* runs once the holds are granted */
	cmd_fn call_done;       /* runs when a command of cmd_held_call finished */
	const void *pass;       /* the holds its commands pass: its own, or the EXEC's
	                           that runs it (nested) */
	bool nested;            /* inside an EXEC: no holds, no barrier of its own */
	bool keep_barrier;      /* released to be taken again: the barrier stays */
	bool barrier_lifted;    /* cmd_held_lift let the connection go on already (a
	                           later run of the connection may own it now) */
};

/* An EXEC's state for n commands of n_args arguments in all, in one
 * allocation: the state, a reply per command (empty, in x's protocol), the
 * commands (e->q, for the caller to fill) and room for their argument
 * pointers after them.  NULL when out of memory. */
static struct cmd_exec *exec_new(struct cmd_ctx *x, size_t n, size_t n_args)
{
	size_t cap;
	struct cmd_exec *e =
	    cmd_block_get(sizeof(*e) + n * (sizeof(struct conn_req) + sizeof(struct queued)) +
	                      n_args * sizeof(uint8_t *),
	                  &cap);
	if (e == NULL)
		return NULL;
	*e = (struct cmd_exec){.x = x, .n = n, .alloc_cap = cap};
	atomic_init(&e->refs, 1);
	e->reqs = (struct conn_req *)(e + 1);
	e->q = (struct queued *)(e->reqs + n);
	for (size_t i = 0; i < n; i++)
		resp_buf_init(&e->reqs[i].reply, x->reply->proto);
	return e;
}

static void exec_free(struct cmd_exec *e)
{
	for (size_t i = 0; i < e->n; i++)
		resp_buf_free(&e->reqs[i].reply);
	cmd_block_put(e->arena, e->arena_cap);
	for (size_t i = 0; i < e->n_holds; i++)
		free(e->holds[i].keys);
	free(e->holds);
	if (e->w != NULL) {
		atomic_store(&e->w->gone, true);
		watcher_unref(e->w);
	}
	if (e->has_txn)
		cmd_txn_free(&e->txn);
	free(e->expiries);
	cmd_block_put(e, e->alloc_cap);
}

/* Calls add(arg, db, key) for every key of command q (the table's key
 * positions; SINTERCARD's numkeys; OBJECT's key).  Returns 0, or -ENOMEM
 * when add failed. */
static int queued_keys(const struct queued *q, unsigned db,
                       int (*add)(void *arg, unsigned db, const uint8_t *key, size_t len),
                       void *arg)
{
	const struct cmd_def *d = q->cmd;
	size_t first = 0, last = 0, step = 1;
	if (cmd_is_script(d)) { /* EVAL script numkeys key ... */
		int64_t numkeys;
		if (q->argc < 3 || !resp_parse_int64(q->argv[2], q->argv_len[2], &numkeys) ||
		    numkeys < 1 || (uint64_t)numkeys > q->argc - 3)
			return 0;
		first = 3;
		last = 2 + (size_t)numkeys;
	} else if (d->fn == cmd_sintercard) {
		int64_t numkeys;
		if (q->argc < 2 || !resp_parse_int64(q->argv[1], q->argv_len[1], &numkeys) ||
		    numkeys < 1 || (uint64_t)numkeys > q->argc - 2)
			return 0; /* (the command fails on its own: no key) */
		first = 2;
		last = 1 + (size_t)numkeys;
	} else if (d->fn == cmd_copy || d->fn == cmd_move) {
		return cmd_copy_keys(d, q->argc, q->argv, q->argv_len, db, add, arg);
	} else if (d->fn == cmd_object) {
		if (q->argc < 3)
			return 0;
		first = last = 2;
	} else if (d->first_key > 0) {
		first = (size_t)d->first_key;
		last = d->last_key < 0 ? (size_t)((int64_t)q->argc + d->last_key)
		                       : (size_t)d->last_key;
		step = d->key_step > 0 ? (size_t)d->key_step : 1;
	} else {
		return 0;
	}
	for (size_t i = first; i <= last && i < q->argc; i += step)
		if (add(arg, db, q->argv[i], q->argv_len[i]) < 0)
			return -ENOMEM;
	return 0;
}

struct key_list {
	struct exec_key *keys;
	size_t n, cap;
};

static int key_list_add(void *arg, unsigned db, const uint8_t *key, size_t len)
{
	struct key_list *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct exec_key *k = realloc(l->keys, cap * sizeof(*k));
		if (k == NULL)
			return -ENOMEM;
		l->keys = k;
		l->cap = cap;
	}
	l->keys[l->n++] = (struct exec_key){shard_of_key(key, len), {db, key, len}};
	return 0;
}

static int exec_key_cmp(const void *a, const void *b)
{
	const struct exec_key *x = a, *y = b;
	return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* The holds of the keys in l: one per shard, in shard order.  Returns 0 or
 * -ENOMEM (l stays the caller's to free). */
static int exec_plan_keys(struct cmd_exec *e, struct key_list *l)
{
	if (l->n == 0)
		return 0;
	qsort(l->keys, l->n, sizeof(*l->keys), exec_key_cmp); /* (order within a shard: any) */
	size_t shards = 1;
	for (size_t i = 1; i < l->n; i++)
		shards += l->keys[i].shard != l->keys[i - 1].shard;
	e->holds = calloc(shards, sizeof(*e->holds));
	if (e->holds == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < l->n;) {
		size_t j = i;
		while (j < l->n && l->keys[j].shard == l->keys[i].shard)
			j++;
		struct exec_hold *h = &e->holds[e->n_holds++];
		h->shard = l->keys[i].shard;
		h->n = j - i;
		h->keys = malloc(h->n * sizeof(*h->keys));
		if (h->keys == NULL)
			return -ENOMEM;
		for (size_t k = 0; k < h->n; k++)
			h->keys[k] = l->keys[i + k].ref;
		i = j;
	}
	return 0;
}

/* The holds: the keys of every queued command, by shard in shard order.
 * Returns 0 or -ENOMEM. */
static int exec_plan(struct cmd_exec *e, unsigned db)
{
	struct key_list l = {0};
	for (size_t i = 0; i < e->n; i++) {
		const struct queued *q = &e->q[i];
		if (q->cmd->fn == cmd_select) {
			int64_t v;
			if (resp_parse_int64(q->argv[1], q->argv_len[1], &v) && v >= 0 &&
			    v < (int64_t)cmd_databases())
				db = (unsigned)v;
			continue;
		}
		if (queued_keys(q, db, key_list_add, &l) < 0) {
			free(l.keys);
			return -ENOMEM;
		}
	}
	int rc = exec_plan_keys(e, &l);
	free(l.keys);
	return rc;
}

static void exec_hold_next(struct cmd_ctx *x);
static void exec_pump(struct cmd_exec *e);

static void exec_put(struct cmd_exec *e)
{
	if (atomic_fetch_sub(&e->refs, 1) == 1)
		exec_free(e);
}

static void exec_release_msg(void *arg)
{
	struct exec_hold *h = arg;
	store_release(shard_store(h->shard), &h->req);
	exec_put(h->e);
}

/* On the origin: releases every hold (after the commands sent to the same
 * proactors) and lets the connection's next commands run.  Once. */
static void exec_release(struct cmd_exec *e)
{
	if (e->released)
		return;
	e->released = true;
	if (e->nested)
		return; /* (no holds; the EXEC's barrier is the EXEC's) */
	struct px *self = px_current();
	for (size_t i = 0; i < e->step; i++) { /* (the granted ones) */
		struct exec_hold *h = &e->holds[i];
		unsigned owner = shard_proactor(h->shard);
		if (owner == self->id) {
			store_release(shard_store(h->shard), &h->req);
		} else {
			atomic_fetch_add(&e->refs, 1);
			px_send(self, owner, exec_release_msg, h);
		}
	}
	if (!e->keep_barrier && !e->barrier_lifted)
		conn_lift_barrier(e->x->conn);
}

/* On the origin, every command finished (or none ran): the reply; the
 * queue's arena goes back to the client for its next transaction. */
static void exec_reply(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->u.exec;
	exec_release(e);
	struct client_tx *tx = x->conn->daemon;
	if (tx != NULL && tx->arena == NULL) {
		tx->arena = e->arena;
		tx->arena_cap = e->arena_cap;
		e->arena = NULL;
	}
	if (e->status < 0) {
		int status = e->status;
		exec_put(e);
		cmd_fail_store(x, status);
		return;
	}
	if (e->failed_watch) {
		resp_add_null_array(x->reply);
	} else if (e->bare) {
		resp_buf_append(x->reply, e->reqs[0].reply.data, e->reqs[0].reply.len);
	} else {
		resp_add_array(x->reply, e->n);
		for (size_t i = 0; i < e->n; i++)
			resp_buf_append(x->reply, e->reqs[i].reply.data, e->reqs[i].reply.len);
	}
	exec_put(e);
	cmd_done(x);
}

/* On the origin, the transaction committed (or failed to): the reply. */
static void exec_committed(struct cmd_txn *t, int status)
{
	struct cmd_exec *e = (struct cmd_exec *)((char *)t - offsetof(struct cmd_exec, txn));
	if (status < 0 && e->status == 0)
		e->status = status;
	exec_reply(e->x);
}

static void exec_durable(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->u.exec;
	cmd_txn_durable(&e->txn, atomic_load(&e->durable.status));
}

static void exec_settled(struct store_durable *d)
{
	struct cmd_exec *e = (struct cmd_exec *)((char *)d - offsetof(struct cmd_exec, durable));
	cmd_run_on_px(e->x, e->x->origin, exec_durable);
}

/* Starts the transaction of an EXEC or an isolated command: its commands'
 * writes are acknowledged once applied and counted in e->durable. */
static void exec_txn_begin(struct cmd_exec *e)
{
	cmd_txn_begin(&e->txn, exec_committed);
	e->has_txn = true;
	atomic_init(&e->durable.pending, 1); /* (the EXEC's own: exec_end drops it) */
	atomic_init(&e->durable.status, 0);
	e->durable.settled = exec_settled;
}

/* On the origin, every command finished (or none ran): commits the
 * transaction, then replies (exec_committed). */
static void exec_end(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->u.exec;
	if (!e->has_txn || e->txn_reported) {
		exec_reply(x);
		return;
	}
	e->txn_reported = true;
	cmd_txn_appended(&e->txn);
	if (atomic_fetch_sub(&e->durable.pending, 1) == 1)
		exec_durable(x); /* (else exec_settled will) */
}

static void exec_hold_done(struct store_req *sr)
{
	struct cmd_ctx *x = sr->arg;
	struct cmd_exec *e = x->u.exec;
	if (sr->status < 0) {
		/* Nothing held on this shard: only the ones before it are. */
		e->status = sr->status;
		/* (a held run learns it in `ready`: cmd_held_status) */
		cmd_run_on_px(x, x->origin, e->ready != NULL ? e->ready : exec_end);
		return;
	}
	e->step++;
	exec_hold_next(x);
}

static void exec_hold_submit(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->u.exec;
	struct exec_hold *h = &e->holds[e->step];
	h->e = e;
	h->req = (struct store_req){.op = STORE_HOLD,
	                            .db = h->keys[0].db,
	                            .key = h->keys[0].key,
	                            .key_len = h->keys[0].key_len,
	                            .more_keys = h->keys + 1,
	                            .n_more_keys = h->n - 1,
	                            .holder = e,
	                            .arg = x,
	                            .done = exec_hold_done};
	store_submit(x->st, &h->req);
}

/* On the origin, every hold granted: the watch, then the commands. */
static void exec_run(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->u.exec;
	if (e->w != NULL) {
		uint64_t now = clock_unix_ms();
		bool touched = atomic_load(&e->w->dirty);
		for (size_t i = 0; i < e->n_exp && !touched; i++)
			touched = e->expiries[i] <= now;
		atomic_store(&e->w->gone, true); /* (its own writes must not count) */
		watcher_unref(e->w);
		e->w = NULL;
		if (touched) {
			e->failed_watch = true;
			exec_end(x);
			return;
		}
	}
	if (e->ready != NULL)
		e->ready(x);
	else
		exec_pump(e);
}

static void exec_hold_next(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->u.exec;
	if (e->step < e->n_holds)
		cmd_run_on_shard(x, e->holds[e->step].shard, exec_hold_submit);
	else
		cmd_run_on_px(x, x->origin, exec_run);
}

/* Runs queued command i in a context of its own. */
static void exec_dispatch(struct cmd_exec *e, size_t i)
{
	struct conn *c = e->x->conn;
	const struct queued *q = &e->q[i];
	struct conn_req *r = &e->reqs[i];
	r->conn = c;
	r->argc = q->argc;
	r->argv = q->argv;
	r->argv_len = q->argv_len;
	r->done = false;
	r->next = NULL;
	r->ctx = NULL;
	struct cmd_ctx *x = cmd_ctx_start(c, r);
	if (x == NULL) {
		resp_add_error(&r->reply, cmd_err_oom);
		e->running--;
		e->finished++;
		return;
	}
	x->cmd = q->cmd;
	x->exec = e;
	x->exec_index = i;
	x->holder = e->pass != NULL ? e->pass : e;
	x->txn = &e->txn;
	x->durable = &e->durable;
	cmd_dispatch(x);
}

/* Sends what may run now: commands of one key together, any other alone. */
/* A command of one key (it runs on its shard with one store request), or
 * one that finishes on the origin at once without the store. */
static bool runs_with_others(const struct cmd_def *d)
{
	return ((d->flags & CMD_KEYED) && d->first_key == 1 && d->last_key == 1) ||
	       d->fn == cmd_select || d->fn == cmd_ping || d->fn == cmd_echo;
}

/* The local case: no watch, and every command runs with others, on a shard
 * of this proactor.  Dispatched in one go, each is queued on its key in its
 * store before anything else can be: the store's queues then order the
 * transaction as one (store.h, "Ordering"), without holds. */
static bool exec_is_local(const struct cmd_exec *e, unsigned self)
{
	if (e->w != NULL)
		return false;
	for (size_t i = 0; i < e->n; i++) {
		const struct queued *q = &e->q[i];
		if (!runs_with_others(q->cmd))
			return false;
		if ((q->cmd->flags & CMD_KEYED) &&
		    shard_proactor(shard_of_key(q->argv[1], q->argv_len[1])) != self)
			return false;
	}
	return true;
}

static void exec_pump(struct cmd_exec *e)
{
	if (e->pumping)
		return;
	e->pumping = true;
	while (e->next < e->n && !e->waiting_barrier) {
		const struct cmd_def *d = e->q[e->next].cmd;
		bool alone = !runs_with_others(d);
		if (alone && e->running > 0)
			break;
		size_t i = e->next++;
		e->running++;
		if (alone) {
			e->waiting_barrier = true;
			e->barrier_index = i;
		}
		exec_dispatch(e, i);
	}
	e->pumping = false;
	if (e->next == e->n && !e->waiting_barrier)
		exec_release(e); /* every command is with its store */
	if (e->finished == e->n)
		exec_end(e->x);
}

void cmd_exec_sub_done(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->exec;
	size_t i = x->exec_index;
	cmd_ctx_end(x);
	if (e->call_done != NULL) {
		e->call_done(e->x);
		return;
	}
	e->running--;
	e->finished++;
	if (e->waiting_barrier && e->barrier_index == i)
		e->waiting_barrier = false;
	if (!e->pumping)
		exec_pump(e);
}

void cmd_exec(struct cmd_ctx *x)
{
	struct conn *c = x->conn;
	struct client_tx *tx = c->daemon;
	if (tx == NULL || !tx->in_multi) {
		cmd_fail(x, "ERR EXEC without MULTI");
		return;
	}
	if (tx->aborted) {
		tx_discard(tx);
		tx_unwatch(tx);
		cmd_fail(x, err_exec_abort);
		return;
	}
	size_t n = tx->n;
	struct cmd_exec *e = exec_new(x, n, tx->n_args);
	if (e == NULL) {
		tx_discard(tx);
		tx_unwatch(tx);
		cmd_fail(x, cmd_err_oom);
		return;
	}
	/* The queue (its arena) and the watch move to the EXEC. */
	e->w = tx->w;
	e->expiries = tx->expiries;
	e->n_exp = tx->n_exp;
	e->arena = tx->arena;
	e->arena_cap = tx->arena_cap;
	uint8_t **argv = (uint8_t **)(e->q + n);
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		struct qrec *r = (struct qrec *)(tx->arena + off);
		uint8_t *p = (uint8_t *)(r->len + r->argc);
		e->q[i] = (struct queued){r->cmd, r->argc, argv, r->len};
		for (size_t a = 0; a < r->argc; a++) {
			argv[a] = p;
			p += r->len[a] + 1;
		}
		argv += r->argc;
		off += r->size;
	}
	tx->arena = NULL;
	tx->arena_cap = 0;
	tx_discard(tx);
	tx->w = NULL;
	tx->expiries = NULL;
	tx->n_exp = tx->cap_exp = 0;
	x->u.exec = e;
	bool local = exec_is_local(e, x->origin);
	exec_txn_begin(e);
	if (!local && exec_plan(e, x->db) < 0) {
		exec_put(e);
		cmd_fail(x, cmd_err_oom);
		return;
	}
	c->barrier = true; /* the connection's next commands wait for the EXEC */
	e->step = 0;
	if (local)
		exec_run(x); /* (no holds: n_holds 0) */
	else
		exec_hold_next(x);
}

/* ---- multi-key commands across shards ------------------------------------- */

struct span {
	bool first_seen, several;
	unsigned shard;
};

static int span_add(void *arg, unsigned db, const uint8_t *key, size_t len)
{
	struct span *s = arg;
	unsigned shard = shard_of_key(key, len);
	(void)db;
	if (s->first_seen && shard != s->shard)
		s->several = true;
	s->first_seen = true;
	s->shard = shard;
	return 0;
}

bool cmd_isolate(struct cmd_ctx *x)
{
	if (x->exec != NULL || shard_map.shards == 1)
		return false; /* (inside EXEC the transaction's holds cover it) */
	struct queued q = {x->cmd, cmd_argc(x), x->req->argv, x->req->argv_len};
	struct span s = {0};
	queued_keys(&q, x->db, span_add, &s);
	if (!s.several)
		return false;
	struct cmd_exec *e = exec_new(x, 1, 0);
	if (e == NULL) {
		cmd_fail(x, cmd_err_oom);
		return true;
	}
	e->bare = true;
	e->q[0] = q;
	x->u.exec = e;
	exec_txn_begin(e);
	if (exec_plan(e, x->db) < 0) {
		exec_put(e);
		cmd_fail(x, cmd_err_oom);
		return true;
	}
	x->conn->barrier = true; /* (as for EXEC: later commands see it whole) */
	exec_hold_next(x);
	return true;
}

/* ---- held runs (scripts) ----------------------------------------------------- */

int cmd_keys_of(const struct cmd_def *d, size_t argc, uint8_t **argv, size_t *argv_len,
                unsigned db, int (*add)(void *arg, unsigned db, const uint8_t *key, size_t len),
                void *arg)
{
	struct queued q = {d, argc, argv, argv_len};
	return queued_keys(&q, db, add, arg);
}

int cmd_held_start(struct cmd_ctx *x, const struct store_key_ref *keys, size_t n, cmd_fn ready,
                   cmd_fn call_done, bool barrier)
{
	struct cmd_exec *e = exec_new(x, 0, 0);
	if (e == NULL)
		return -ENOMEM;
	e->ready = ready;
	e->call_done = call_done;
	x->u.exec = e;
	if (x->exec != NULL) {
		/* Inside an EXEC, whose holds cover these keys (queued_keys knows a
		 * script's): holds of its own would wait for the EXEC's forever. */
		e->nested = true;
		e->pass = x->holder;
		ready(x);
		return 0;
	}
	struct key_list l = {0};
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = key_list_add(&l, keys[i].db, keys[i].key, keys[i].key_len);
	if (rc == 0)
		rc = exec_plan_keys(e, &l);
	free(l.keys);
	if (rc < 0) {
		exec_put(e);
		return -ENOMEM;
	}
	if (barrier)
		x->conn->barrier = true; /* (as for EXEC: later commands see it whole) */
	else
		e->barrier_lifted = true; /* (not ours to lift) */
	exec_hold_next(x);
	return 0;
}

int cmd_held_status(const struct cmd_ctx *x)
{
	return x->u.exec->status;
}

bool cmd_held_nested(const struct cmd_ctx *x)
{
	return x->u.exec->nested;
}

void cmd_held_call(struct cmd_ctx *x, struct conn_req *r, const struct cmd_def *d, unsigned db,
                   struct store_durable *durable, struct cmd_txn *txn)
{
	struct cmd_exec *e = x->u.exec;
	struct conn *c = x->conn;
	r->conn = c;
	r->done = false;
	r->next = NULL;
	r->ctx = NULL;
	struct cmd_ctx *sub = cmd_ctx_start(c, r);
	if (sub == NULL) {
		resp_add_error(&r->reply, cmd_err_oom);
		e->call_done(x);
		return;
	}
	sub->cmd = d;
	sub->db = db;
	sub->exec = e;
	sub->holder = e->pass != NULL ? e->pass : e;
	sub->durable = durable;
	sub->txn = txn;
	cmd_dispatch(sub);
}

void cmd_held_end(struct cmd_ctx *x, bool lift)
{
	struct cmd_exec *e = x->u.exec;
	e->keep_barrier = !lift;
	if (!e->released)
		exec_release(e);
	else if (lift && !e->nested && !e->barrier_lifted)
		conn_lift_barrier(e->x->conn); /* (cmd_held_unhold kept it) */
	exec_put(e);
}

void cmd_held_lift(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->u.exec;
	if (e->nested || e->barrier_lifted)
		return;
	e->barrier_lifted = true;
	conn_lift_barrier(e->x->conn);
}

void cmd_held_unhold(struct cmd_ctx *x)
{
	struct cmd_exec *e = x->u.exec;
	e->keep_barrier = true;
	exec_release(e);
}
