/* cmd_set: the set commands (SADD SREM SCARD SISMEMBER SMISMEMBER SMEMBERS
 * SRANDMEMBER SPOP SMOVE SINTER SINTERCARD SINTERSTORE SUNION SUNIONSTORE
 * SDIFF SDIFFSTORE SSCAN).
 *
 * One-key commands run as one store call on the key's shard (cmd_hash.c says
 * what that gives).  The commands of several keys read every source set
 * whole into memory and compute there (cmd_set_op): when all their keys live
 * on one shard, inside a single call over all of them — atomic, the
 * destination written in the same group — else gathered from each shard
 * (one call per shard, run in parallel) onto the connection's proactor, and
 * a *STORE's destination written by one more call on its shard afterwards
 * (not atomic across shards: docs/COMMANDS.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "shard.h"

#define SET_INTSET_ENTRIES 512 /* Redis's set-max-intset-entries */

/* Redis keeps a set of integers in an intset until it has a member that is
 * not one, or too many; OBJECT ENCODING reports it (FMT_ENC_BIG). */
static bool is_intset_member(const uint8_t *p, size_t len)
{
	int64_t v;
	return cmd_canonical_int(p, len, &v);
}

static void set_note_encoding(struct store_txn *t, size_t k, const uint8_t *p, size_t len)
{
	struct store_key_info info;
	store_txn_key(t, k, &info);
	if (!is_intset_member(p, len) || info.count > SET_INTSET_ENTRIES)
		store_txn_mark(t, k, FMT_ENC_BIG);
}

/* Adds member p to set k.  Returns 1 (added), 0 (there) or < 0. */
static int set_add(struct store_txn *t, size_t k, const uint8_t *p, size_t len)
{
	int r = store_txn_put(t, k, FMT_TYPE_SET, p, len, NULL, 0);
	if (r >= 0)
		set_note_encoding(t, k, p, len);
	return r;
}

/* ---- SADD SREM SISMEMBER SMISMEMBER ------------------------------------ */

static void sadd_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_coll_type_or_refuse(x, t, FMT_TYPE_SET) < 0)
		return;
	int64_t added = 0;
	for (size_t i = 2; i < cmd_argc(x); i++) {
		int r = set_add(t, 0, cmd_arg(x, i), cmd_arg_len(x, i));
		if (r < 0)
			return;
		added += r;
	}
	resp_add_int(x->reply, added);
}

void cmd_sadd(struct cmd_ctx *x)
{
	if (cmd_elems_fit_or_fail(x, 2, 1) < 0)
		return;
	cmd_call_elems(x, sadd_call, 2, 1);
}

static void srem_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_SET);
	if (exists < 0)
		return;
	int64_t removed = 0;
	for (size_t i = 2; exists && i < cmd_argc(x); i++) {
		int r = store_txn_del(t, 0, cmd_arg(x, i), cmd_arg_len(x, i));
		if (r < 0)
			return;
		removed += r;
	}
	resp_add_int(x->reply, removed);
}

void cmd_srem(struct cmd_ctx *x)
{
	cmd_call_elems(x, srem_call, 2, 1);
}

/* 1 if argv[i] is a member of key 0, 0 if not, < 0 if the call failed. */
static int is_member(struct cmd_ctx *x, struct store_txn *t, size_t i)
{
	const uint8_t *v;
	size_t vlen;
	int r = store_txn_get(t, 0, cmd_arg(x, i), cmd_arg_len(x, i), &v, &vlen);
	return r == 0 ? 1 : r == -ENOENT ? 0 : r;
}

static void sismember_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_SET);
	if (exists < 0)
		return;
	bool many = x->cmd->fn == cmd_smismember;
	if (many)
		resp_add_array(x->reply, cmd_argc(x) - 2);
	for (size_t i = 2; i < cmd_argc(x); i++) {
		int r = exists ? is_member(x, t, i) : 0;
		if (r < 0)
			return;
		resp_add_int(x->reply, r);
	}
}

void cmd_sismember(struct cmd_ctx *x)
{
	cmd_call_elems(x, sismember_call, 2, 1);
}

void cmd_smismember(struct cmd_ctx *x)
{
	cmd_call_elems(x, sismember_call, 2, 1);
}

/* ---- SMEMBERS SRANDMEMBER SPOP ----------------------------------------- */

static void smembers_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = x->u.stream.active ? 1 : cmd_coll_type_or_refuse(x, t, FMT_TYPE_SET);
	if (exists < 0)
		return;
	cmd_coll_dump(x, t, exists, true, false, true);
}

void cmd_smembers(struct cmd_ctx *x)
{
	memset(&x->u.stream, 0, sizeof(x->u.stream));
	cmd_call(x, smembers_call);
}

/* One random member as a bulk string (nil for a missing key). */
static void random_member(struct cmd_ctx *x, struct store_txn *t, int exists)
{
	struct cmd_elems one;
	if (!exists) {
		resp_add_null(x->reply);
		return;
	}
	if (cmd_random_one(t, &one) < 0 || one.n == 0) {
		cmd_elems_free(&one);
		return;
	}
	size_t len;
	const uint8_t *p = cmd_elems_at(&one, 0, &len, NULL, NULL);
	resp_add_bulk(x->reply, p, len);
	cmd_elems_free(&one);
}

static int popped_visit(void *arg, const uint8_t *e, size_t elen, const uint8_t *v, size_t vlen)
{
	return cmd_elems_add(arg, e, elen, v, vlen) < 0 ? -ENOMEM : 0;
}

/* Removes `count` random members of key 0 (fewer than it has) into
 * `popped`; returns 0, or -1 when the call failed. */
static int pop_members(struct store_txn *t, uint64_t count, struct cmd_elems *popped)
{
	for (uint64_t i = 0; i < count; i++) {
		int ret = store_txn_pop(t, 0, cmd_random(), popped_visit, popped);
		if (ret < 0)
			return -1;
		if (ret == 0) { /* it had more than count */
			store_txn_abort_error(t, -EIO);
			return -1;
		}
	}
	return 0;
}

static void srandmember_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_SET);
	if (exists < 0)
		return;
	if (cmd_argc(x) == 2)
		random_member(x, t, exists);
	else
		cmd_random_elems(x, t, exists, x->u.random.count, false);
}

void cmd_srandmember(struct cmd_ctx *x)
{
	if (cmd_argc(x) > 3) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	if (cmd_argc(x) == 3 && cmd_random_count_or_fail(x, 2) < 0)
		return;
	cmd_call(x, srandmember_call);
}

static void spop_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_SET);
	if (exists < 0)
		return;
	if (cmd_argc(x) == 2) {
		struct cmd_elems one;
		cmd_elems_init(&one, false);
		if (!exists)
			resp_add_null(x->reply);
		else if (pop_members(t, 1, &one) == 0) {
			size_t len;
			const uint8_t *p = cmd_elems_at(&one, 0, &len, NULL, NULL);
			resp_add_bulk(x->reply, p, len);
		}
		cmd_elems_free(&one);
		return;
	}
	struct store_key_info k;
	store_txn_key(t, 0, &k);
	uint64_t count = (uint64_t)x->u.random.count;
	if (!exists || count == 0) {
		resp_add_set(x->reply, 0);
		return;
	}
	struct cmd_elems picked;
	bool whole = count >= k.count;
	if (whole) {
		cmd_elems_init(&picked, false);
		if (cmd_elems_read(t, 0, &picked) < 0) {
			cmd_elems_free(&picked);
			return;
		}
		if (store_txn_delete_key(t, 0) < 0) {
			cmd_elems_free(&picked);
			return;
		}
	} else {
		cmd_elems_init(&picked, false);
		if (pop_members(t, count, &picked) < 0) {
			cmd_elems_free(&picked);
			return;
		}
	}
	cmd_elems_reply(x, &picked, false, true);
	cmd_elems_free(&picked);
}

void cmd_spop(struct cmd_ctx *x)
{
	if (cmd_argc(x) > 3) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	if (cmd_argc(x) == 3) {
		/* Redis's getRangeLongFromObjectOrReply: one message for both. */
		int64_t v;
		if (!resp_parse_int64(cmd_arg(x, 2), cmd_arg_len(x, 2), &v) || v < 0) {
			cmd_fail(x, "ERR value is out of range, must be positive");
			return;
		}
		x->u.random.count = v;
	}
	cmd_call(x, spop_call);
}

/* ---- SSCAN ------------------------------------------------------------- */

void cmd_sscan(struct cmd_ctx *x)
{
	cmd_coll_scan(x, FMT_TYPE_SET);
}

/* ---- the operations of several sets ------------------------------------ */

enum set_op {
	SET_OP_INTER,
	SET_OP_UNION,
	SET_OP_DIFF,
	SET_OP_MOVE,
};

/* One source key of an operation, as read on its shard. */
struct set_source {
	size_t arg;          /* its argv index */
	unsigned shard;
	int state;           /* 1 a set, 0 missing, -1 of another type */
	struct cmd_elems members;
};

/* An operation in progress: its sources, then the destination. */
struct set_job {
	struct cmd_ctx *x;
	enum set_op op;
	size_t dest_arg;     /* *STORE, SMOVE: the destination's argv index; 0 = none */
	size_t limit;        /* SINTERCARD: 0 = none */
	bool card;           /* SINTERCARD: reply the count only */
	size_t n;            /* sources */
	struct set_source *src;
	size_t parts_pending;
	struct cmd_elems result;
	const char *err;     /* an error reply decided (WRONGTYPE, ...) */
	int status;          /* a store failure, or 0 */
	struct store_req *reqs; /* the per-shard calls of the gather */
	struct store_key_ref *refs;
};

/* Reads source i (key index k of the call) into j->src[i].  Returns 0, or -1
 * when the call failed. */
static int read_source(struct set_job *j, struct store_txn *t, size_t i, size_t k)
{
	struct set_source *s = &j->src[i];
	struct store_key_info info;
	store_txn_key(t, k, &info);
	s->state = !info.exists ? 0 : info.type == FMT_TYPE_SET ? 1 : -1;
	cmd_elems_init(&s->members, j->op != SET_OP_UNION);
	if (s->state == 1 && cmd_elems_read(t, k, &s->members) < 0)
		return -1;
	return 0;
}

/* As Redis 7.0: a key of another type among the sources is an error; a
 * missing one is an empty set, which makes an intersection empty.  Returns
 * the error to reply, or NULL; *empty says the result is empty for sure. */
static const char *check_sources(const struct set_job *j, bool *empty)
{
	*empty = false;
	for (size_t i = 0; i < j->n; i++) {
		if (j->src[i].state < 0)
			return cmd_err_wrongtype;
		if (j->src[i].state == 0 && j->op == SET_OP_INTER)
			*empty = true;
	}
	return NULL;
}

/* Computes j->result from the sources (all read).  Returns 0 or -ENOMEM. */
static int compute(struct set_job *j)
{
	cmd_elems_init(&j->result, true);
	if (j->op == SET_OP_INTER) {
		size_t smallest = 0;
		for (size_t i = 1; i < j->n; i++)
			if (j->src[i].members.n < j->src[smallest].members.n)
				smallest = i;
		const struct cmd_elems *base = &j->src[smallest].members;
		for (size_t e = 0; e < base->n; e++) {
			size_t len;
			const uint8_t *p = cmd_elems_at(base, e, &len, NULL, NULL);
			bool in_all = true;
			for (size_t i = 0; i < j->n && in_all; i++)
				in_all = i == smallest || cmd_elems_has(&j->src[i].members, p, len);
			if (!in_all)
				continue;
			if (cmd_elems_add(&j->result, p, len, NULL, 0) < 0)
				return -ENOMEM;
			if (j->limit && j->result.n >= j->limit)
				break;
		}
		return 0;
	}
	for (size_t i = 0; i < j->n; i++) {
		if (j->op == SET_OP_DIFF && i > 0)
			break;
		const struct cmd_elems *m = &j->src[i].members;
		for (size_t e = 0; e < m->n; e++) {
			size_t len;
			const uint8_t *p = cmd_elems_at(m, e, &len, NULL, NULL);
			bool skip = false;
			for (size_t o = 1; j->op == SET_OP_DIFF && o < j->n && !skip; o++)
				skip = cmd_elems_has(&j->src[o].members, p, len);
			if (!skip && cmd_elems_add(&j->result, p, len, NULL, 0) < 0)
				return -ENOMEM;
		}
	}
	return 0;
}

/* Replaces the destination (key k of the call) with the result: deleted when
 * it is empty, as Redis does. */
static int store_result(struct set_job *j, struct store_txn *t, size_t k)
{
	if (store_txn_delete_key(t, k) < 0)
		return -1;
	for (size_t e = 0; e < j->result.n; e++) {
		size_t len;
		const uint8_t *p = cmd_elems_at(&j->result, e, &len, NULL, NULL);
		if (set_add(t, k, p, len) < 0)
			return -1;
	}
	return 0;
}

/* The reply of a finished SINTER/SUNION/SDIFF/SINTERCARD/ *STORE. */
static void reply_result(struct set_job *j)
{
	struct cmd_ctx *x = j->x;
	if (j->card)
		resp_add_int(x->reply, (int64_t)j->result.n);
	else if (j->dest_arg)
		resp_add_int(x->reply, (int64_t)j->result.n);
	else
		cmd_elems_reply(x, &j->result, false, true);
}

static void job_free(struct set_job *j)
{
	for (size_t i = 0; i < j->n; i++)
		cmd_elems_free(&j->src[i].members);
	cmd_elems_free(&j->result);
	free(j->src);
	free(j->reqs);
	free(j->refs);
	free(j);
}

/* SMOVE within one call: key 0 the source, key 1 the destination. */
static void smove_in_call(struct set_job *j, struct store_txn *t)
{
	struct cmd_ctx *x = j->x;
	struct store_key_info src, dst;
	store_txn_key(t, 0, &src);
	store_txn_key(t, 1, &dst);
	const uint8_t *m = cmd_arg(x, 3);
	size_t mlen = cmd_arg_len(x, 3);
	/* Redis: a missing source answers 0 before any type is checked. */
	if (!src.exists) {
		resp_add_int(x->reply, 0);
		return;
	}
	if (src.type != FMT_TYPE_SET || (dst.exists && dst.type != FMT_TYPE_SET)) {
		cmd_call_refuse(x, t, cmd_err_wrongtype);
		return;
	}
	bool same = cmd_arg_len(x, 1) == cmd_arg_len(x, 2) &&
	            memcmp(cmd_arg(x, 1), cmd_arg(x, 2), cmd_arg_len(x, 1)) == 0;
	int r = same ? is_member(x, t, 3) : store_txn_del(t, 0, m, mlen);
	if (r < 0)
		return;
	if (r == 1 && !same && set_add(t, 1, m, mlen) < 0)
		return;
	resp_add_int(x->reply, r);
}

/* The whole operation in one call, every key on this shard: sources are
 * keys 0..n-1, the destination key n. */
static void set_op_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	struct set_job *j = x->heap;
	if (j->op == SET_OP_MOVE) {
		smove_in_call(j, t);
		return;
	}
	for (size_t i = 0; i < j->n; i++)
		if (read_source(j, t, i, i) < 0)
			return;
	bool empty;
	const char *err = check_sources(j, &empty);
	if (err != NULL) {
		cmd_call_refuse(x, t, err);
		return;
	}
	if (!empty && compute(j) < 0) {
		store_txn_abort_error(t, -ENOMEM);
		return;
	}
	if (empty)
		cmd_elems_init(&j->result, false);
	if (j->dest_arg && store_result(j, t, j->n) < 0)
		return;
	reply_result(j);
}

static void set_op_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	struct set_job *j = x->heap;
	x->heap = NULL;
	job_free(j);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	cmd_done(x);
}

/* ---- across shards: gather, compute on the origin, store --------------- */

static void gather_call(struct store_req *sr, struct store_txn *t)
{
	struct set_job *j = sr->arg;
	size_t k = 0;
	for (size_t i = 0; i < j->n; i++)
		if (&j->reqs[j->src[i].shard] == sr && read_source(j, t, i, k++) < 0)
			return;
}

static void gather_finish(struct set_job *j);

static void gather_back(void *arg)
{
	struct set_job *j = arg;
	if (--j->parts_pending == 0)
		gather_finish(j);
}

static void gather_done(struct store_req *sr)
{
	struct set_job *j = sr->arg;
	if (sr->status < 0 && sr->status != -ENOENT && j->status == 0)
		j->status = sr->status;
	struct px *self = px_current();
	if (self->id == j->x->origin)
		gather_back(j);
	else
		px_send(self, j->x->origin, gather_back, j);
}

static void gather_part_msg(void *arg)
{
	struct store_req *sr = arg;
	struct set_job *j = sr->arg;
	cmd_store_submit(j->x, shard_store((unsigned)(sr - j->reqs)), sr);
}

static void dest_call(struct store_req *sr, struct store_txn *t)
{
	struct set_job *j = sr->arg;
	if (store_result(j, t, 0) == 0)
		reply_result(j);
}

static void dest_done(struct store_req *sr)
{
	struct set_job *j = sr->arg;
	struct cmd_ctx *x = j->x;
	int status = sr->status;
	job_free(j);
	x->heap = NULL;
	if (status < 0 && status != -ENOENT) {
		cmd_fail_store(x, status);
		return;
	}
	cmd_done(x);
}

static void dest_msg(void *arg)
{
	struct store_req *sr = arg;
	struct set_job *j = sr->arg;
	cmd_store_submit(j->x,
	                 shard_store(shard_of_key(cmd_arg(j->x, j->dest_arg),
	                                          cmd_arg_len(j->x, j->dest_arg))),
	                 sr);
}

/* On the origin, every source read: reply, or write the destination. */
static void gather_finish(struct set_job *j)
{
	struct cmd_ctx *x = j->x;
	bool empty = false;
	const char *err = j->status == 0 ? check_sources(j, &empty) : NULL;
	if (j->status == 0 && err == NULL && !empty && compute(j) < 0)
		j->status = -ENOMEM;
	if (empty)
		cmd_elems_init(&j->result, false);
	if (j->status < 0 || err != NULL) {
		int status = j->status;
		job_free(j);
		x->heap = NULL;
		if (err != NULL)
			cmd_fail(x, err);
		else
			cmd_fail_store(x, status);
		return;
	}
	if (!j->dest_arg) {
		reply_result(j);
		job_free(j);
		x->heap = NULL;
		cmd_done(x);
		return;
	}
	/* The destination, by one more call on its shard (reusing reqs[0]). */
	struct store_req *sr = &j->reqs[0];
	memset(sr, 0, sizeof(*sr));
	sr->op = STORE_CALL;
	sr->call = dest_call;
	sr->db = x->db;
	sr->key = cmd_arg(x, j->dest_arg);
	sr->key_len = cmd_arg_len(x, j->dest_arg);
	sr->arg = j;
	sr->done = dest_done;
	unsigned px = shard_proactor(shard_of_key(sr->key, sr->key_len));
	if (px == px_current()->id)
		dest_msg(sr);
	else
		px_send(px_current(), px, dest_msg, sr);
}

/* Starts the gather: one call per shard holding sources, with its keys. */
static int gather_start(struct set_job *j)
{
	struct cmd_ctx *x = j->x;
	unsigned shards = shard_map.shards;
	j->reqs = calloc(shards, sizeof(*j->reqs));
	j->refs = calloc(j->n, sizeof(*j->refs));
	if (j->reqs == NULL || j->refs == NULL)
		return -ENOMEM;
	/* refs: the sources grouped by shard, in argv order within a shard. */
	size_t r = 0;
	for (unsigned s = 0; s < shards; s++) {
		struct store_req *sr = &j->reqs[s];
		size_t first = r;
		for (size_t i = 0; i < j->n; i++)
			if (j->src[i].shard == s)
				j->refs[r++] = (struct store_key_ref){
				    .db = x->db, .key = cmd_arg(x, j->src[i].arg),
				    .key_len = cmd_arg_len(x, j->src[i].arg)};
		if (r == first)
			continue;
		sr->op = STORE_CALL;
		sr->call = gather_call;
		sr->db = x->db;
		sr->key = j->refs[first].key;
		sr->key_len = j->refs[first].key_len;
		sr->more_keys = &j->refs[first + 1];
		sr->n_more_keys = r - first - 1;
		sr->arg = j;
		sr->done = gather_done;
		j->parts_pending++;
	}
	struct px *self = px_current();
	for (unsigned s = 0; s < shards; s++) {
		if (j->reqs[s].call == NULL)
			continue;
		unsigned px = shard_proactor(s);
		if (px == self->id)
			gather_part_msg(&j->reqs[s]);
		else
			px_send(self, px, gather_part_msg, &j->reqs[s]);
	}
	return 0;
}

/* Runs `op` over the sources argv[first..first+n) (and the destination
 * argv[dest_arg] when not 0). */
static void set_op(struct cmd_ctx *x, enum set_op op, size_t first, size_t n, size_t dest_arg,
                   size_t limit, bool card)
{
	struct set_job *j = calloc(1, sizeof(*j));
	if (j == NULL || (j->src = calloc(n, sizeof(*j->src))) == NULL) {
		free(j);
		cmd_fail(x, cmd_err_oom);
		return;
	}
	*j = (struct set_job){.x = x, .op = op, .dest_arg = dest_arg, .limit = limit, .card = card,
	                      .n = n, .src = j->src};
	bool one_shard = true;
	unsigned shard = dest_arg ? shard_of_key(cmd_arg(x, dest_arg), cmd_arg_len(x, dest_arg))
	                          : shard_of_key(cmd_arg(x, first), cmd_arg_len(x, first));
	for (size_t i = 0; i < n; i++) {
		j->src[i].arg = first + i;
		j->src[i].shard = shard_of_key(cmd_arg(x, first + i), cmd_arg_len(x, first + i));
		one_shard &= j->src[i].shard == shard;
		cmd_elems_init(&j->src[i].members, false);
	}
	cmd_elems_init(&j->result, false);
	x->heap = j;
	if (one_shard) {
		/* Every key on one shard: one call over all of them, atomic. */
		j->refs = calloc(n + 1, sizeof(*j->refs));
		if (j->refs == NULL) {
			x->heap = NULL;
			job_free(j);
			cmd_fail(x, cmd_err_oom);
			return;
		}
		for (size_t i = 1; i < n; i++)
			j->refs[i - 1] = (struct store_key_ref){
			    .db = x->db, .key = cmd_arg(x, first + i), .key_len = cmd_arg_len(x, first + i)};
		size_t extra = n - 1;
		if (dest_arg)
			j->refs[extra++] = (struct store_key_ref){
			    .db = x->db, .key = cmd_arg(x, dest_arg), .key_len = cmd_arg_len(x, dest_arg)};
		x->sr.op = STORE_CALL;
		x->sr.call = set_op_call;
		x->sr.key = cmd_arg(x, first);
		x->sr.key_len = cmd_arg_len(x, first);
		x->sr.more_keys = j->refs;
		x->sr.n_more_keys = extra;
		x->sr.done = set_op_done;
		x->sr.db = x->db;
		cmd_run_on_shard(x, shard, cmd_submit_prepared);
		return;
	}
	if (op == SET_OP_MOVE) {
		x->heap = NULL;
		job_free(j);
		cmd_smove_across(x);
		return;
	}
	if (gather_start(j) < 0) {
		x->heap = NULL;
		job_free(j);
		cmd_fail(x, cmd_err_oom);
	}
}

void cmd_sinter(struct cmd_ctx *x)
{
	set_op(x, SET_OP_INTER, 1, cmd_argc(x) - 1, 0, 0, false);
}

void cmd_sunion(struct cmd_ctx *x)
{
	set_op(x, SET_OP_UNION, 1, cmd_argc(x) - 1, 0, 0, false);
}

void cmd_sdiff(struct cmd_ctx *x)
{
	set_op(x, SET_OP_DIFF, 1, cmd_argc(x) - 1, 0, 0, false);
}

void cmd_sinterstore(struct cmd_ctx *x)
{
	set_op(x, SET_OP_INTER, 2, cmd_argc(x) - 2, 1, 0, false);
}

void cmd_sunionstore(struct cmd_ctx *x)
{
	set_op(x, SET_OP_UNION, 2, cmd_argc(x) - 2, 1, 0, false);
}

void cmd_sdiffstore(struct cmd_ctx *x)
{
	set_op(x, SET_OP_DIFF, 2, cmd_argc(x) - 2, 1, 0, false);
}

void cmd_sintercard(struct cmd_ctx *x)
{
	int64_t numkeys, limit = 0;
	if (!resp_parse_int64(cmd_arg(x, 1), cmd_arg_len(x, 1), &numkeys) || numkeys <= 0) {
		cmd_fail(x, "ERR numkeys should be greater than 0");
		return;
	}
	if ((uint64_t)numkeys > cmd_argc(x) - 2) {
		cmd_fail(x, "ERR Number of keys can't be greater than number of args");
		return;
	}
	for (size_t i = 2 + (size_t)numkeys; i < cmd_argc(x); i += 2) {
		if (cmd_arg_is(x, i, "limit") && i + 1 < cmd_argc(x)) {
			if (!resp_parse_int64(cmd_arg(x, i + 1), cmd_arg_len(x, i + 1), &limit) ||
			    limit < 0) {
				cmd_fail(x, "ERR LIMIT can't be negative");
				return;
			}
		} else {
			cmd_fail(x, cmd_err_syntax);
			return;
		}
	}
	set_op(x, SET_OP_INTER, 2, (size_t)numkeys, 0, (size_t)limit, true);
}

void cmd_smove(struct cmd_ctx *x)
{
	if (cmd_elems_fit_or_fail(x, 3, 0) < 0)
		return;
	set_op(x, SET_OP_MOVE, 1, 1, 2, 0, false);
}

/* ---- SMOVE across shards ----------------------------------------------- */

/* The source and the destination on two shards: (1) the destination's type
 * is read, (2) the member leaves the source, (3) it joins the destination.
 * Between the steps another client may act on either key (docs/COMMANDS.md:
 * the transactions work makes this atomic); if (3) then finds the
 * destination of another type, the member goes back to the source and the
 * reply is WRONGTYPE, so no member is lost. */
static void smove_step(struct cmd_ctx *x);

static void smove_dst_type_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	struct store_key_info k;
	store_txn_key(t, 0, &k);
	x->u.smove.dst_wrongtype = k.exists && k.type != FMT_TYPE_SET;
}

static void smove_src_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	struct store_key_info k;
	store_txn_key(t, 0, &k);
	if (!k.exists) {
		x->u.smove.result = 0;
		return;
	}
	if (k.type != FMT_TYPE_SET || x->u.smove.dst_wrongtype) {
		cmd_call_refuse(x, t, cmd_err_wrongtype);
		return;
	}
	int r = store_txn_del(t, 0, cmd_arg(x, 3), cmd_arg_len(x, 3));
	if (r >= 0)
		x->u.smove.result = r;
}

static void smove_dst_add_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_coll_type_or_refuse(x, t, FMT_TYPE_SET) < 0)
		return;
	set_add(t, 0, cmd_arg(x, 3), cmd_arg_len(x, 3));
}

static void smove_undo_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_coll_type_or_refuse(x, t, FMT_TYPE_SET) >= 0)
		set_add(t, 0, cmd_arg(x, 3), cmd_arg_len(x, 3));
	x->err = cmd_err_wrongtype; /* the reply whatever the undo found */
}

static void smove_step_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0) {
		if (x->u.smove.step == 3 && x->err == cmd_err_wrongtype) {
			/* (3) refused: undo (2) on the source, then reply WRONGTYPE. */
			x->err = NULL;
			x->u.smove.step = 4;
			resp_buf_reset(x->reply);
			cmd_run_on_px(x, x->origin, smove_step);
		}
		return;
	}
	x->u.smove.step++;
	if (x->u.smove.step == 3 && x->u.smove.result == 0) {
		resp_add_int(x->reply, 0);
		cmd_done(x);
		return;
	}
	if (x->u.smove.step > 3) {
		resp_add_int(x->reply, 1);
		cmd_done(x);
		return;
	}
	cmd_run_on_px(x, x->origin, smove_step);
}

/* Runs step x->u.smove.step on the shard of its key. */
static void smove_on_shard(struct cmd_ctx *x)
{
	static const store_call_fn calls[] = {NULL, smove_dst_type_call, smove_src_call,
	                                      smove_dst_add_call, smove_undo_call};
	size_t key_arg = x->u.smove.step == 2 || x->u.smove.step == 4 ? 1 : 2;
	memset(&x->sr, 0, offsetof(struct store_req, status));
	x->sr.op = STORE_CALL;
	x->sr.call = calls[x->u.smove.step];
	cmd_submit_arg(x, key_arg, smove_step_done);
}

static void smove_step(struct cmd_ctx *x)
{
	size_t key_arg = x->u.smove.step == 2 || x->u.smove.step == 4 ? 1 : 2;
	cmd_run_on_shard(x, shard_of_key(cmd_arg(x, key_arg), cmd_arg_len(x, key_arg)),
	                 smove_on_shard);
}

void cmd_smove_across(struct cmd_ctx *x)
{
	x->u.smove.step = 1;
	x->u.smove.dst_wrongtype = false;
	x->u.smove.result = 0;
	smove_step(x);
}
