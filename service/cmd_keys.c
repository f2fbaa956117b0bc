/* cmd_keys: the keyspace commands (DEL UNLINK EXISTS TOUCH TYPE, the EXPIRE
 * and TTL families, PERSIST, SCAN, KEYS, DBSIZE, FLUSHDB/FLUSHALL,
 * RANDOMKEY).
 *
 * SCAN cursor: shard << 32 | the store's hash cursor in that shard
 * (store_scan), so a cursor stays valid across writes and restarts of a
 * directory with the same shard count.  KEYS walks every shard in bounded
 * steps (KEYS_STEP keys per loop iteration) so one proactor is never stalled
 * for long. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "shard.h"

#define CMD_EXPIRE_NX 0x1
#define CMD_EXPIRE_XX 0x2
#define CMD_EXPIRE_GT 0x4
#define CMD_EXPIRE_LT 0x8

#define KEYS_STEP    1024 /* keys KEYS visits per loop iteration on one proactor */
#define RANDOM_STEPS 64   /* store_scan calls RANDOMKEY makes per loop iteration */

/* ---- DEL UNLINK EXISTS TOUCH ------------------------------------------- */

static void prepare_delete(struct cmd_ctx *x, struct cmd_keyop *op)
{
	(void)x;
	op->sr.op = STORE_DELETE;
}

static void prepare_meta(struct cmd_ctx *x, struct cmd_keyop *op)
{
	(void)x;
	op->sr.op = STORE_META;
}

/* Replies the number of keys that existed (and were deleted, for DEL). */
static void count_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	int64_t n = 0;
	for (size_t i = 0; i < f->nops; i++)
		n += f->ops[i].status == 0 && f->ops[i].existed;
	cmd_fan_free(f);
	resp_add_int(x->reply, n);
	cmd_done(x);
}

void cmd_del(struct cmd_ctx *x)
{
	cmd_fan_keys(x, 1, 1, false, prepare_delete, count_finish);
}

void cmd_exists(struct cmd_ctx *x)
{
	cmd_fan_keys(x, 1, 1, false, prepare_meta, count_finish);
}

void cmd_touch(struct cmd_ctx *x)
{
	cmd_fan_keys(x, 1, 1, false, prepare_meta, count_finish);
}

/* ---- TYPE, TTL family -------------------------------------------------- */

const char *cmd_type_name(uint8_t type)
{
	switch (type) {
	case FMT_TYPE_HASH:
		return "hash";
	case FMT_TYPE_SET:
		return "set";
	default:
		return "string";
	}
}

static void type_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	resp_add_simple(x->reply, sr->status == 0 ? cmd_type_name(sr->result_type) : "none");
	cmd_done(x);
}

void cmd_type(struct cmd_ctx *x)
{
	x->sr.op = STORE_META;
	cmd_submit(x, type_done);
}

enum ttl_kind { TTL_S, TTL_MS, EXPIRETIME_S, EXPIRETIME_MS };

static void ttl_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	enum ttl_kind kind = (enum ttl_kind)x->u.ttl.kind;
	uint64_t when = sr->result_expiry_ms;
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	if (sr->status == -ENOENT) {
		resp_add_int(x->reply, -2);
	} else if (when == 0) {
		resp_add_int(x->reply, -1);
	} else {
		/* Redis's ttlGenericCommand: seconds are rounded, absolute or not. */
		uint64_t now = clock_unix_ms();
		int64_t ms = kind == EXPIRETIME_S || kind == EXPIRETIME_MS ? (int64_t)when
		             : when > now                                  ? (int64_t)(when - now)
		                                                           : 0;
		resp_add_int(x->reply,
		             kind == TTL_MS || kind == EXPIRETIME_MS ? ms : (ms + 500) / 1000);
	}
	cmd_done(x);
}

static void ttl_generic(struct cmd_ctx *x, enum ttl_kind kind)
{
	x->u.ttl.kind = kind;
	x->sr.op = STORE_META;
	cmd_submit(x, ttl_done);
}

void cmd_ttl(struct cmd_ctx *x)
{
	ttl_generic(x, TTL_S);
}

void cmd_pttl(struct cmd_ctx *x)
{
	ttl_generic(x, TTL_MS);
}

void cmd_expiretime(struct cmd_ctx *x)
{
	ttl_generic(x, EXPIRETIME_S);
}

void cmd_pexpiretime(struct cmd_ctx *x)
{
	ttl_generic(x, EXPIRETIME_MS);
}

/* ---- EXPIRE family, PERSIST -------------------------------------------- */

/* Redis's expireGenericCommand, from the key's current state (it exists:
 * else the store answers -ENOENT, and the reply is 0). */
static enum store_update_result expire_decide(struct store_req *sr, uint64_t old_expiry_ms)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	unsigned f = x->u.expire.flags;
	int64_t when = (int64_t)x->u.expire.when_ms;
	x->u.expire.result = 0;
	if ((f & CMD_EXPIRE_NX) && old_expiry_ms != 0)
		return STORE_UPDATE_KEEP;
	if ((f & CMD_EXPIRE_XX) && old_expiry_ms == 0)
		return STORE_UPDATE_KEEP;
	/* GT: a key without expiry counts as an infinite TTL. */
	if ((f & CMD_EXPIRE_GT) && (old_expiry_ms == 0 || when <= (int64_t)old_expiry_ms))
		return STORE_UPDATE_KEEP;
	if ((f & CMD_EXPIRE_LT) && old_expiry_ms != 0 && when >= (int64_t)old_expiry_ms)
		return STORE_UPDATE_KEEP;
	x->u.expire.result = 1;
	if (when <= (int64_t)clock_unix_ms())
		return STORE_UPDATE_DELETE; /* already expired: deleted, as in Redis */
	sr->new_expiry_ms = (uint64_t)when;
	return STORE_UPDATE_WRITE;
}

/* EXPIRE family and PERSIST: 1 if the key's expiry changed, else 0. */
static void expire_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	resp_add_int(x->reply, x->u.expire.result);
	cmd_done(x);
}

/* EXPIRE key time [NX|XX|GT|LT ...]: `seconds` for the unit, `absolute` for
 * the *AT forms. */
static void expire_generic(struct cmd_ctx *x, bool seconds, bool absolute)
{
	unsigned f = 0;
	for (size_t j = 3; j < cmd_argc(x); j++) {
		if (cmd_arg_is(x, j, "nx"))
			f |= CMD_EXPIRE_NX;
		else if (cmd_arg_is(x, j, "xx"))
			f |= CMD_EXPIRE_XX;
		else if (cmd_arg_is(x, j, "gt"))
			f |= CMD_EXPIRE_GT;
		else if (cmd_arg_is(x, j, "lt"))
			f |= CMD_EXPIRE_LT;
		else {
			cmd_failf(x, "ERR Unsupported option %s", (const char *)cmd_arg(x, j));
			return;
		}
	}
	if ((f & CMD_EXPIRE_NX) && (f & (CMD_EXPIRE_XX | CMD_EXPIRE_GT | CMD_EXPIRE_LT))) {
		cmd_fail(x, "ERR NX and XX, GT or LT options at the same time are not compatible");
		return;
	}
	if ((f & CMD_EXPIRE_GT) && (f & CMD_EXPIRE_LT)) {
		cmd_fail(x, "ERR GT and LT options at the same time are not compatible");
		return;
	}
	int64_t when;
	if (cmd_arg_int_or_fail(x, 2, &when) < 0)
		return;
	int64_t base = absolute ? 0 : (int64_t)clock_unix_ms();
	if (seconds) {
		if (when > INT64_MAX / 1000 || when < INT64_MIN / 1000)
			goto invalid;
		when *= 1000;
	}
	if (when > INT64_MAX - base)
		goto invalid;
	when += base;
	x->u.expire.flags = f;
	x->u.expire.when_ms = when > 0 ? (uint64_t)when : 1; /* 1: the past, never "none" */
	x->u.expire.result = 0;
	x->sr.op = STORE_EXPIRE;
	x->sr.expire = expire_decide;
	cmd_submit(x, expire_done);
	return;
invalid:
	cmd_fail_invalid_expire(x);
}

void cmd_expire(struct cmd_ctx *x)
{
	expire_generic(x, true, false);
}

void cmd_pexpire(struct cmd_ctx *x)
{
	expire_generic(x, false, false);
}

void cmd_expireat(struct cmd_ctx *x)
{
	expire_generic(x, true, true);
}

void cmd_pexpireat(struct cmd_ctx *x)
{
	expire_generic(x, false, true);
}

static enum store_update_result persist_decide(struct store_req *sr, uint64_t old_expiry_ms)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	x->u.expire.result = old_expiry_ms != 0;
	if (!x->u.expire.result)
		return STORE_UPDATE_KEEP;
	sr->new_expiry_ms = 0;
	return STORE_UPDATE_WRITE;
}

void cmd_persist(struct cmd_ctx *x)
{
	x->u.expire.result = 0;
	x->sr.op = STORE_EXPIRE;
	x->sr.expire = persist_decide;
	cmd_submit(x, expire_done);
}

/* ---- SCAN -------------------------------------------------------------- */

static void scan_visit(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms,
                       uint8_t type)
{
	struct cmd_ctx *x = arg;
	(void)expiry_ms;
	x->u.scan.visited++;
	if (x->u.scan.type >= 0 && x->u.scan.type != type)
		return;
	if (x->u.scan.pattern != NULL &&
	    !cmd_glob_match(x->u.scan.pattern, x->u.scan.pattern_len, key, klen, false))
		return;
	resp_add_bulk(&x->u.scan.keys, key, klen);
	x->u.scan.found++;
}

static void scan_reply(struct cmd_ctx *x, uint64_t cursor)
{
	resp_add_array(x->reply, 2);
	resp_add_bulk_int(x->reply, (int64_t)cursor);
	resp_add_array(x->reply, x->u.scan.found);
	resp_buf_append(x->reply, x->u.scan.keys.data, x->u.scan.keys.len);
	resp_buf_free(&x->u.scan.keys);
	cmd_done(x);
}

/* Runs on the proactor of x->shard: walks on from x->u.scan.cursor, moving to
 * the next shards while fewer than COUNT keys were visited. */
static void scan_step(struct cmd_ctx *x)
{
	size_t want = x->u.scan.count - x->u.scan.visited;
	uint64_t next;
	int ret = store_scan(x->st, x->db, x->u.scan.cursor, want, scan_visit, x, &next);
	if (ret < 0) {
		resp_buf_free(&x->u.scan.keys);
		cmd_fail_store(x, ret);
		return;
	}
	if (next != 0) {
		scan_reply(x, (uint64_t)x->shard << 32 | next);
		return;
	}
	unsigned shard = x->shard + 1;
	if (shard >= shard_map.shards) {
		scan_reply(x, 0);
		return;
	}
	if (x->u.scan.visited >= x->u.scan.count) {
		scan_reply(x, (uint64_t)shard << 32);
		return;
	}
	x->u.scan.cursor = 0;
	cmd_run_on_shard(x, shard, scan_step);
}

/* The type SCAN's TYPE option names: FMT_TYPE_*, or -2 for a name no key's
 * type has (Redis 7.0 then finds nothing). */
static int scan_type(const uint8_t *name, size_t len)
{
	static const char *const names[] = {"string", "hash", "set"};
	for (int t = 0; t <= FMT_TYPE_MAX; t++)
		if (len == strlen(names[t]) && strncasecmp((const char *)name, names[t], len) == 0)
			return t;
	return -2;
}

void cmd_scan(struct cmd_ctx *x)
{
	uint64_t cursor;
	const uint8_t *type_name;
	if (cmd_scan_cursor_or_fail(x, 1, &cursor) < 0)
		return;
	const char *err = cmd_scan_options(x, 2, true, &x->u.scan.pattern, &x->u.scan.pattern_len,
	                                   &x->u.scan.count, &type_name);
	if (err != NULL) {
		cmd_fail(x, err);
		return;
	}
	x->u.scan.type = -1;
	for (size_t i = 2; type_name != NULL && i + 1 < cmd_argc(x); i += 2)
		if (cmd_arg(x, i + 1) == type_name)
			x->u.scan.type = scan_type(type_name, cmd_arg_len(x, i + 1));
	x->u.scan.found = 0;
	x->u.scan.visited = 0;
	x->u.scan.cursor = cursor & UINT32_MAX;
	resp_buf_init(&x->u.scan.keys, x->reply->proto);
	unsigned shard = (unsigned)(cursor >> 32);
	if (x->u.scan.type == -2 || (cursor >> 32) >= shard_map.shards) {
		scan_reply(x, 0); /* a type no key has, or a cursor past the last shard */
		return;
	}
	cmd_run_on_shard(x, shard, scan_step);
}

/* ---- KEYS -------------------------------------------------------------- */

static void keys_visit(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms,
                       uint8_t type)
{
	struct cmd_part *p = arg;
	struct cmd_ctx *x = p->fan->x;
	(void)expiry_ms, (void)type;
	bool all = cmd_arg_len(x, 1) == 1 && cmd_arg(x, 1)[0] == '*'; /* Redis's shortcut */
	if (!all && !cmd_glob_match(cmd_arg(x, 1), cmd_arg_len(x, 1), key, klen, false))
		return;
	resp_add_bulk(&p->text, key, klen);
	p->count++;
}

static void keys_part_msg(void *arg);

/* Walks this proactor's shards from (p->shard, p->cursor), KEYS_STEP keys at
 * a time, giving the loop back between steps. */
static void keys_part(struct cmd_part *p)
{
	if (p->shard >= shard_map.shards) {
		cmd_part_done(p);
		return;
	}
	uint64_t next;
	int ret = store_scan(shard_store(p->shard), p->fan->x->db, p->cursor, KEYS_STEP, keys_visit,
	                     p, &next);
	if (ret < 0) {
		p->status = ret;
		cmd_part_done(p);
		return;
	}
	p->cursor = next;
	if (next == 0)
		p->shard += shard_map.threads;
	struct px *self = px_current();
	px_send(self, self->id, keys_part_msg, p);
}

static void keys_part_msg(void *arg)
{
	keys_part(arg);
}

static void keys_start(struct cmd_part *p)
{
	p->shard = p->px;
	p->cursor = 0;
	keys_part(p);
}

static void keys_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	size_t total = 0;
	for (size_t i = 0; i < f->nparts; i++)
		total += f->parts[i].count;
	resp_add_array(x->reply, total);
	for (size_t i = 0; i < f->nparts; i++)
		resp_buf_append(x->reply, f->parts[i].text.data, f->parts[i].text.len);
	cmd_fan_free(f);
	cmd_done(x);
}

void cmd_keys(struct cmd_ctx *x)
{
	cmd_fan_all(x, keys_start, keys_finish);
}

/* ---- DBSIZE ------------------------------------------------------------ */

static void dbsize_part(struct cmd_part *p)
{
	for (unsigned s = p->px; s < shard_map.shards; s += shard_map.threads)
		p->num += (int64_t)store_key_count(shard_store(s), p->fan->x->db);
	cmd_part_done(p);
}

static void dbsize_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	int64_t n = 0;
	for (size_t i = 0; i < f->nparts; i++)
		n += f->parts[i].num;
	resp_add_int(x->reply, n);
	cmd_fan_free(f);
	cmd_done(x);
}

void cmd_dbsize(struct cmd_ctx *x)
{
	cmd_fan_all(x, dbsize_part, dbsize_finish);
}

/* ---- FLUSHDB / FLUSHALL / SWAPDB -------------------------------------- */

/* One store_flush or store_swap_db per shard of the part's proactor. */
struct flush_req {
	struct store_req sr;
	struct cmd_part *part;
};

static void flush_done(struct store_req *sr)
{
	struct flush_req *fr = (struct flush_req *)sr;
	struct cmd_part *p = fr->part;
	if (sr->status < 0 && p->status == 0)
		p->status = sr->status;
	if (--p->pending == 0)
		cmd_part_done(p);
}

static void flush_part(struct cmd_part *p)
{
	size_t n = 0;
	for (unsigned s = p->px; s < shard_map.shards; s += shard_map.threads)
		n++;
	if (n == 0) {
		cmd_part_done(p);
		return;
	}
	struct flush_req *reqs = calloc(n, sizeof(*reqs));
	if (reqs == NULL) {
		p->status = -ENOMEM;
		cmd_part_done(p);
		return;
	}
	p->scratch = reqs;
	p->pending = n;
	size_t i = 0;
	struct cmd_ctx *x = p->fan->x;
	for (unsigned s = p->px; s < shard_map.shards; s += shard_map.threads, i++) {
		reqs[i].part = p;
		reqs[i].sr.done = flush_done;
		if (x->cmd->fn == cmd_swapdb)
			store_swap_db(shard_store(s), x->u.swapdb.a, x->u.swapdb.b, &reqs[i].sr);
		else
			store_flush(shard_store(s), x->cmd->fn == cmd_flushall ? -1 : (int)x->db,
			            &reqs[i].sr);
	}
}

static void flush_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	cmd_fan_free(f);
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

void cmd_flushall(struct cmd_ctx *x)
{
	/* ASYNC and SYNC are the same here: the flush is one durable log record
	 * per shard, O(1); the keys are reclaimed in the background. */
	if (cmd_argc(x) > 2 ||
	    (cmd_argc(x) == 2 && !cmd_arg_is(x, 1, "async") && !cmd_arg_is(x, 1, "sync"))) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	cmd_fan_all(x, flush_part, flush_finish);
}

void cmd_flushdb(struct cmd_ctx *x)
{
	cmd_flushall(x);
}

/* Redis's getIntFromObjectOrReply for one of SWAPDB's indexes. */
static int db_index_or_fail(struct cmd_ctx *x, size_t i, const char *which, unsigned *out)
{
	int64_t v;
	if (!resp_parse_int64(cmd_arg(x, i), cmd_arg_len(x, i), &v) || v < INT32_MIN ||
	    v > INT32_MAX) {
		cmd_failf(x, "ERR invalid %s DB index", which);
		return -1;
	}
	*out = v < 0 ? UINT32_MAX : (unsigned)v;
	return 0;
}

void cmd_swapdb(struct cmd_ctx *x)
{
	/* Both indexes are read before either is checked against the range. */
	if (db_index_or_fail(x, 1, "first", &x->u.swapdb.a) < 0 ||
	    db_index_or_fail(x, 2, "second", &x->u.swapdb.b) < 0)
		return;
	if (x->u.swapdb.a >= cmd_databases() || x->u.swapdb.b >= cmd_databases()) {
		cmd_fail(x, "ERR DB index is out of range");
		return;
	}
	cmd_fan_all(x, flush_part, flush_finish);
}

/* ---- RANDOMKEY --------------------------------------------------------- */

static void random_visit(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms,
                         uint8_t type)
{
	struct cmd_ctx *x = arg;
	(void)expiry_ms, (void)type;
	if (x->u.randomkey.found)
		return;
	resp_add_bulk(x->reply, key, klen);
	x->u.randomkey.found = true;
}

static void random_step(struct cmd_ctx *x);

/* Moves the walk to the next shard (or replies nil when every shard was
 * tried). */
static void random_next_shard(struct cmd_ctx *x)
{
	if (--x->u.randomkey.shards_left == 0) {
		resp_add_null(x->reply);
		cmd_done(x);
		return;
	}
	x->u.randomkey.start = x->u.randomkey.cursor = cmd_random() & UINT32_MAX;
	x->u.randomkey.wrapped = false;
	cmd_run_on_shard(x, (x->shard + 1) % shard_map.shards, random_step);
}

/* On the proactor of x->shard: the first live key at or after a random hash,
 * wrapping around the shard once. */
static void random_step(struct cmd_ctx *x)
{
	for (unsigned i = 0; i < RANDOM_STEPS; i++) {
		if (store_key_count(x->st, x->db) == 0) {
			random_next_shard(x);
			return;
		}
		uint64_t next;
		int ret =
		    store_scan(x->st, x->db, x->u.randomkey.cursor, 8, random_visit, x, &next);
		if (ret < 0) {
			cmd_fail_store(x, ret);
			return;
		}
		if (x->u.randomkey.found) {
			cmd_done(x);
			return;
		}
		if (next == 0) {
			if (x->u.randomkey.wrapped) {
				random_next_shard(x);
				return;
			}
			x->u.randomkey.wrapped = true;
		} else if (x->u.randomkey.wrapped && next >= x->u.randomkey.start) {
			random_next_shard(x);
			return;
		}
		x->u.randomkey.cursor = next;
	}
	cmd_continue(x, random_step);
}

void cmd_randomkey(struct cmd_ctx *x)
{
	x->u.randomkey.found = false;
	x->u.randomkey.shards_left = shard_map.shards;
	x->u.randomkey.start = x->u.randomkey.cursor = cmd_random() & UINT32_MAX;
	x->u.randomkey.wrapped = false;
	cmd_run_on_shard(x, (unsigned)(cmd_random() % shard_map.shards), random_step);
}

/* ---- OBJECT ------------------------------------------------------------ */

#define STRING_EMBSTR_MAX 44 /* Redis's OBJ_ENCODING_EMBSTR_SIZE_LIMIT */

/* Redis's encoding name for a value of `type` (OBJECT ENCODING): a string's
 * from its bytes (Redis's after a SET; APPEND and SETRANGE make Redis say
 * "raw" where ringkv goes by length: docs/COMMANDS.md), a collection's from
 * its one-way conversion flag. */
static const char *encoding_name(uint8_t type, uint8_t enc, const uint8_t *v, size_t len)
{
	int64_t n;
	switch (type) {
	case FMT_TYPE_HASH:
		return enc & FMT_ENC_BIG ? "hashtable" : "listpack";
	case FMT_TYPE_SET:
		return enc & FMT_ENC_BIG ? "hashtable" : "intset";
	default:
		if (cmd_canonical_int(v, len, &n))
			return "int";
		return len <= STRING_EMBSTR_MAX ? "embstr" : "raw";
	}
}

static void object_encoding(struct cmd_ctx *x);
static void object_freq(struct cmd_ctx *x);
static void object_refcount(struct cmd_ctx *x);

static void object_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	if (sr->status == -ENOENT) {
		resp_add_null(x->reply);
	} else if (x->sub->fn == object_encoding) {
		resp_add_bulk_str(x->reply,
		                  encoding_name(sr->result_type, sr->result_enc, sr->result,
		                                sr->result != NULL ? sr->result_len : 0));
	} else if (x->sub->fn == object_freq) {
		cmd_fail(x, "ERR An LFU maxmemory policy is not selected, access frequency not"
		            " tracked. Please note that when switching between policies at runtime"
		            " LRU and LFU data will take some time to adjust.");
		return;
	} else {
		resp_add_int(x->reply, x->sub->fn == object_refcount ? 1 : 0); /* IDLETIME: 0 */
	}
	cmd_done(x);
}

static void object_on_shard(struct cmd_ctx *x)
{
	x->sr.op = STORE_GET;
	x->sr.flags = STORE_ANY_TYPE;
	x->sr.db = x->db;
	x->sr.key = cmd_arg(x, 2);
	x->sr.key_len = cmd_arg_len(x, 2);
	x->sr.done = object_done;
	cmd_store_submit(x, x->st, &x->sr);
}

static void object_encoding(struct cmd_ctx *x)
{
	cmd_run_on_shard(x, shard_of_key(cmd_arg(x, 2), cmd_arg_len(x, 2)), object_on_shard);
}

static void object_freq(struct cmd_ctx *x)
{
	object_encoding(x);
}

static void object_idletime(struct cmd_ctx *x)
{
	object_encoding(x);
}

static void object_refcount(struct cmd_ctx *x)
{
	object_encoding(x);
}

static const char *const object_help[] = {
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
    NULL,
};

static void object_help_cmd(struct cmd_ctx *x)
{
	cmd_reply_help(x, object_help);
}

const struct cmd_def cmd_object_subcommands[] = {
    {"encoding", object_encoding, 3, CMD_READONLY, 2, 2, 1, "generic", "2.2.3",
     "Inspect the internal encoding of a Redis object", NULL, "object"},
    {"freq", object_freq, 3, CMD_READONLY, 2, 2, 1, "generic", "4.0.0",
     "Get the logarithmic access frequency counter of a Redis object", NULL, "object"},
    {"help", object_help_cmd, 2, CMD_LOADING | CMD_STALE, 0, 0, 0, "generic", "6.2.0",
     "Show helpful text about the different subcommands", NULL, "object"},
    {"idletime", object_idletime, 3, CMD_READONLY, 2, 2, 1, "generic", "2.2.3",
     "Get the time since a Redis object was last accessed", NULL, "object"},
    {"refcount", object_refcount, 3, CMD_READONLY, 2, 2, 1, "generic", "2.2.3",
     "Get the number of references to the value of the key", NULL, "object"},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
};

void cmd_object(struct cmd_ctx *x)
{
	cmd_run_subcommand(x, cmd_object_subcommands);
}
