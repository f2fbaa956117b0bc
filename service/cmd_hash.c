/* cmd_hash: the hash commands (HSET HSETNX HMSET HGET HMGET HDEL HLEN HSTRLEN
 * HEXISTS HKEYS HVALS HGETALL HINCRBY HINCRBYFLOAT HRANDFIELD HSCAN).
 *
 * Every one is CMD_KEYED and runs as one store call (store_txn, store.h) on
 * the key's shard: the call sees the hash and changes it alone, and what it
 * changes reaches the log as one group, so an HSET of many fields is atomic,
 * also across a crash.  A hash is stored per field (one index row each), so
 * a field costs the same whatever the hash's size.  Fields come back in the
 * store's order (by their hash), not in insertion order (docs/COMMANDS.md). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

#define HASH_LISTPACK_ENTRIES 512 /* hash-max-listpack-entries of the Redis 7.0 we follow */
#define HASH_LISTPACK_VALUE 64    /* Redis's hash-max-listpack-value */

static const char err_hash_not_int[] = "ERR hash value is not an integer";
static const char err_hash_not_float[] = "ERR hash value is not a float";
static const char err_nan_or_inf[] = "ERR increment would produce NaN or Infinity";

/* Redis converts a hash from listpack to hashtable for good once it has too
 * many fields or a long one; OBJECT ENCODING reports it (FMT_ENC_BIG). */
static void hash_note_encoding(struct store_txn *t, size_t flen, size_t vlen)
{
	struct store_key_info k;
	store_txn_key(t, 0, &k);
	if (flen > HASH_LISTPACK_VALUE || vlen > HASH_LISTPACK_VALUE ||
	    k.count > HASH_LISTPACK_ENTRIES)
		store_txn_mark(t, 0, FMT_ENC_BIG);
}

/* Sets field argv[f] to argv[f + 1].  Returns 1 (a new field), 0 or < 0. */
static int hash_put(struct cmd_ctx *x, struct store_txn *t, size_t f)
{
	int r = store_txn_put(t, 0, FMT_TYPE_HASH, cmd_arg(x, f), cmd_arg_len(x, f),
	                      cmd_arg(x, f + 1), cmd_arg_len(x, f + 1));
	if (r >= 0)
		hash_note_encoding(t, cmd_arg_len(x, f), cmd_arg_len(x, f + 1));
	return r;
}

/* ---- HSET HMSET HSETNX ------------------------------------------------- */

static void hset_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH) < 0)
		return;
	int64_t added = 0;
	for (size_t f = 2; f + 1 < cmd_argc(x); f += 2) {
		int r = hash_put(x, t, f);
		if (r < 0)
			return;
		added += r;
	}
	store_txn_touch(t, 0);
	if (x->cmd->fn == cmd_hmset)
		resp_add_simple(x->reply, "OK");
	else
		resp_add_int(x->reply, added);
}

void cmd_hset(struct cmd_ctx *x)
{
	if (cmd_argc(x) % 2 == 1) {
		cmd_fail_arity(x);
		return;
	}
	if (cmd_elems_fit_or_fail(x, 2, 2) < 0)
		return;
	cmd_call_elems(x, hset_call, 2, 2);
}

void cmd_hmset(struct cmd_ctx *x)
{
	cmd_hset(x);
}

static void hsetnx_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH) < 0)
		return;
	const uint8_t *v;
	size_t vlen;
	int r = store_txn_get(t, 0, cmd_arg(x, 2), cmd_arg_len(x, 2), &v, &vlen);
	if (r == 0) {
		resp_add_int(x->reply, 0);
		return;
	}
	if (r != -ENOENT || hash_put(x, t, 2) < 0)
		return;
	resp_add_int(x->reply, 1);
}

void cmd_hsetnx(struct cmd_ctx *x)
{
	if (cmd_elems_fit_or_fail(x, 2, 2) < 0)
		return;
	cmd_call_elems(x, hsetnx_call, 2, cmd_argc(x));
}

/* ---- HGET HMGET HSTRLEN HEXISTS HLEN ----------------------------------- */

/* The value of field argv[f]: 0 (*v set), -ENOENT, or < 0 (failed). */
static int hash_get(struct cmd_ctx *x, struct store_txn *t, size_t f, const uint8_t **v,
                    size_t *vlen)
{
	return store_txn_get(t, 0, cmd_arg(x, f), cmd_arg_len(x, f), v, vlen);
}

static void hget_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	const uint8_t *v;
	size_t vlen;
	int r = cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (r < 0)
		return;
	r = r == 0 ? -ENOENT : hash_get(x, t, 2, &v, &vlen);
	if (r == 0)
		resp_add_bulk(x->reply, v, vlen);
	else if (r == -ENOENT)
		resp_add_null(x->reply);
}

void cmd_hget(struct cmd_ctx *x)
{
	cmd_call_elems(x, hget_call, 2, cmd_argc(x));
}

static void hmget_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (exists < 0)
		return;
	resp_add_array(x->reply, cmd_argc(x) - 2);
	for (size_t f = 2; f < cmd_argc(x); f++) {
		const uint8_t *v;
		size_t vlen;
		int r = exists ? hash_get(x, t, f, &v, &vlen) : -ENOENT;
		if (r == 0)
			resp_add_bulk(x->reply, v, vlen);
		else if (r == -ENOENT)
			resp_add_null(x->reply);
		else
			return;
	}
}

void cmd_hmget(struct cmd_ctx *x)
{
	cmd_call_elems(x, hmget_call, 2, 1);
}

static void hstrlen_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	const uint8_t *v;
	size_t vlen = 0;
	int r = cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (r < 0)
		return;
	r = r == 0 ? -ENOENT : hash_get(x, t, 2, &v, &vlen);
	if (r == 0 || r == -ENOENT)
		resp_add_int(x->reply, r == 0 ? (int64_t)vlen : 0);
}

void cmd_hstrlen(struct cmd_ctx *x)
{
	cmd_call_elems(x, hstrlen_call, 2, cmd_argc(x));
}

static void hexists_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	const uint8_t *v;
	size_t vlen;
	int r = cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (r < 0)
		return;
	r = r == 0 ? -ENOENT : hash_get(x, t, 2, &v, &vlen);
	if (r == 0 || r == -ENOENT)
		resp_add_int(x->reply, r == 0);
}

void cmd_hexists(struct cmd_ctx *x)
{
	cmd_call_elems(x, hexists_call, 2, cmd_argc(x));
}

/* HLEN and SCARD: the element count. */
static void card_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	uint8_t type = x->cmd->fn == cmd_hlen ? FMT_TYPE_HASH : FMT_TYPE_SET;
	if (cmd_coll_type_or_refuse(x, t, type) < 0)
		return;
	struct store_key_info k;
	store_txn_key(t, 0, &k);
	resp_add_int(x->reply, k.exists ? (int64_t)k.count : 0);
}

void cmd_hlen(struct cmd_ctx *x)
{
	cmd_call(x, card_call);
}

void cmd_scard(struct cmd_ctx *x)
{
	cmd_call(x, card_call);
}

/* ---- HDEL -------------------------------------------------------------- */

static void hdel_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (exists < 0)
		return;
	int64_t removed = 0;
	for (size_t f = 2; exists && f < cmd_argc(x); f++) {
		int r = store_txn_del(t, 0, cmd_arg(x, f), cmd_arg_len(x, f));
		if (r < 0)
			return;
		removed += r;
	}
	resp_add_int(x->reply, removed);
}

void cmd_hdel(struct cmd_ctx *x)
{
	cmd_call_elems(x, hdel_call, 2, 1);
}

/* ---- HKEYS HVALS HGETALL ----------------------------------------------- */

static void hgetall_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = x->u.stream.active ? 1 : cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (exists < 0)
		return;
	cmd_coll_dump(x, t, exists, x->cmd->fn != cmd_hvals, x->cmd->fn != cmd_hkeys, false);
}

static void hgetall_start(struct cmd_ctx *x)
{
	memset(&x->u.stream, 0, sizeof(x->u.stream));
	cmd_call(x, hgetall_call);
}

void cmd_hkeys(struct cmd_ctx *x)
{
	hgetall_start(x);
}

void cmd_hvals(struct cmd_ctx *x)
{
	hgetall_start(x);
}

void cmd_hgetall(struct cmd_ctx *x)
{
	hgetall_start(x);
}

/* ---- HINCRBY HINCRBYFLOAT ---------------------------------------------- */

static void hincrby_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	const uint8_t *v;
	size_t vlen;
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (exists < 0)
		return;
	int r = exists ? hash_get(x, t, 2, &v, &vlen) : -ENOENT;
	int64_t value = 0, delta = x->u.incr.delta;
	if (r < 0 && r != -ENOENT)
		return;
	if (r == 0 && !resp_parse_int64(v, vlen, &value)) {
		cmd_call_refuse(x, t, err_hash_not_int);
		return;
	}
	if ((delta < 0 && value < INT64_MIN - delta) || (delta > 0 && value > INT64_MAX - delta)) {
		cmd_call_refuse(x, t, cmd_err_overflow);
		return;
	}
	value += delta;
	int n = snprintf(x->u.incr.num, sizeof(x->u.incr.num), "%lld", (long long)value);
	if (store_txn_put(t, 0, FMT_TYPE_HASH, cmd_arg(x, 2), cmd_arg_len(x, 2), x->u.incr.num,
	                  (size_t)n) < 0)
		return;
	hash_note_encoding(t, cmd_arg_len(x, 2), (size_t)n);
	store_txn_touch(t, 0);
	resp_add_int(x->reply, value);
}

void cmd_hincrby(struct cmd_ctx *x)
{
	if (cmd_arg_int_or_fail(x, 3, &x->u.incr.delta) < 0 || cmd_elems_fit_or_fail(x, 2, 0) < 0)
		return;
	cmd_call_elems(x, hincrby_call, 2, cmd_argc(x));
}

static void hincrbyfloat_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	const uint8_t *v;
	size_t vlen;
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (exists < 0)
		return;
	int r = exists ? hash_get(x, t, 2, &v, &vlen) : -ENOENT;
	long double value = 0;
	if (r < 0 && r != -ENOENT)
		return;
	if (r == 0 && !cmd_parse_ld(v, vlen, &value)) {
		cmd_call_refuse(x, t, err_hash_not_float);
		return;
	}
	value += x->u.incrbyfloat.delta;
	if (isnan(value) || isinf(value)) {
		cmd_call_refuse(x, t, err_nan_or_inf);
		return;
	}
	char *buf = x->heap;
	size_t n = cmd_format_ld(buf, CMD_LD_BUF, value);
	if (n == 0) {
		cmd_call_refuse(x, t, err_nan_or_inf);
		return;
	}
	if (store_txn_put(t, 0, FMT_TYPE_HASH, cmd_arg(x, 2), cmd_arg_len(x, 2), buf, n) < 0)
		return;
	hash_note_encoding(t, cmd_arg_len(x, 2), n);
	store_txn_touch(t, 0);
	resp_add_bulk(x->reply, buf, n);
}

void cmd_hincrbyfloat(struct cmd_ctx *x)
{
	/* Redis parses the increment first (getLongDoubleFromObjectOrReply),
	 * refusing NaN and infinities. */
	if (!cmd_parse_ld(cmd_arg(x, 3), cmd_arg_len(x, 3), &x->u.incrbyfloat.delta)) {
		cmd_fail(x, cmd_err_not_float);
		return;
	}
	if (isnan(x->u.incrbyfloat.delta) || isinf(x->u.incrbyfloat.delta)) {
		cmd_fail(x, "ERR value is NaN or Infinity");
		return;
	}
	if (cmd_elems_fit_or_fail(x, 2, 0) < 0)
		return;
	x->heap = malloc(CMD_LD_BUF);
	if (x->heap == NULL) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	cmd_call_elems(x, hincrbyfloat_call, 2, cmd_argc(x));
}

/* ---- HRANDFIELD -------------------------------------------------------- */

/* HRANDFIELD key: one random field; key count [WITHVALUES]: see
 * cmd_random_elems (shared with SRANDMEMBER). */
static void hrandfield_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = cmd_coll_type_or_refuse(x, t, FMT_TYPE_HASH);
	if (exists < 0)
		return;
	if (cmd_argc(x) == 2) {
		struct cmd_elems one;
		if (exists && cmd_random_one(t, &one) == 0) {
			size_t len;
			const uint8_t *p = cmd_elems_at(&one, 0, &len, NULL, NULL);
			resp_add_bulk(x->reply, p, len);
		} else if (!exists) {
			resp_add_null(x->reply);
		}
		if (exists)
			cmd_elems_free(&one);
		return;
	}
	cmd_random_elems(x, t, exists, x->u.random.count, x->u.random.withvalues);
}

void cmd_hrandfield(struct cmd_ctx *x)
{
	/* Redis's order: the count, then the syntax, then WITHVALUES's range. */
	if (cmd_argc(x) >= 3 && cmd_random_count_or_fail(x, 2) < 0)
		return;
	if (cmd_argc(x) > 4 || (cmd_argc(x) == 4 && !cmd_arg_is(x, 3, "withvalues"))) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	x->u.random.withvalues = cmd_argc(x) == 4;
	if (x->u.random.withvalues &&
	    (x->u.random.count < -INT64_MAX / 2 || x->u.random.count > INT64_MAX / 2)) {
		cmd_fail(x, "ERR value is out of range");
		return;
	}
	cmd_call(x, hrandfield_call);
}

/* ---- HSCAN ------------------------------------------------------------- */

void cmd_hscan(struct cmd_ctx *x)
{
	cmd_coll_scan(x, FMT_TYPE_HASH);
}
