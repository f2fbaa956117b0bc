/* cmd_copy: the commands that copy a key to another name or database —
 * RENAME, RENAMENX, COPY (DB, REPLACE) and MOVE — for every key type.
 *
 * The source is read, then the destination written (and, for RENAME and
 * MOVE, the source deleted), all while both keys are held (store.h,
 * "holds"), so no other client sees or changes either key in between:
 *
 *   hold    keys on one shard outside a held run: one STORE_HOLD of both,
 *           taken by the job; keys on two shards: cmd_isolate held them
 *           before the handler ran; inside EXEC or a script: the run's holds
 *   read    STORE_GET of the source (a string's value, a collection's type,
 *           encoding and expiry), then for a collection one call that reads
 *           every element into memory
 *   write   one call on the destination's shard: the destination's check
 *           (NX, COPY without REPLACE, MOVE), the new value, and — on one
 *           shard — the source's deletion in the same group of records, so
 *           a crash keeps the whole rename or none of it
 *   delete  keys on two shards: the source's deletion, a record of its own
 *           (a crash in between keeps both keys: never neither)
 *
 * A string's value cannot be read inside a call (it may be in the log),
 * which is why the read is a request of its own.  A collection is copied
 * element by element: O(N), where Redis renames in O(1) and copies in O(N)
 * (docs/COMMANDS.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cmd.h"
#include "shard.h"

enum copy_kind { COPY_RENAME, COPY_RENAMENX, COPY_COPY, COPY_MOVE };

struct copy_job {
	struct cmd_ctx *x;
	enum copy_kind kind;
	bool replace; /* COPY REPLACE */
	struct store_key_ref src, dst;
	unsigned src_shard, dst_shard;
	bool own_hold;         /* the job holds both keys (one shard, no held run) */
	bool held;             /* ... and the hold was granted */
	const void *holder;    /* what the job's requests pass */
	struct store_req hold; /* own_hold: the hold of src and dst */
	struct store_req req;  /* the step running */
	/* the source, as read */
	uint8_t type, enc;
	uint64_t expiry_ms;
	uint8_t *value; /* a string's (malloc'd) */
	size_t value_len;
	struct cmd_elems elems; /* a collection's */
	int result;             /* the integer reply (RENAME: +OK when 1) */
	const char *err;        /* an error to reply, or NULL */
	int status;             /* a store failure, or 0 */
};

static void job_free(struct copy_job *j)
{
	free(j->value);
	cmd_elems_free(&j->elems);
	free(j);
}

static void copy_reply(struct cmd_ctx *x)
{
	struct copy_job *j = x->heap;
	x->heap = NULL;
	int status = j->status, result = j->result;
	const char *err = j->err;
	enum copy_kind kind = j->kind;
	job_free(j);
	if (status < 0) {
		cmd_fail_store(x, status);
		return;
	}
	if (err != NULL) {
		cmd_fail(x, err);
		return;
	}
	if (kind == COPY_RENAME)
		resp_add_simple(x->reply, "OK");
	else
		resp_add_int(x->reply, result);
	cmd_done(x);
}

/* The end, on the source's shard: the job's hold goes, then the reply. */
static void copy_finish(struct cmd_ctx *x)
{
	struct copy_job *j = x->heap;
	if (j->held) {
		store_release(x->st, &j->hold);
		j->held = false;
	}
	cmd_run_on_px(x, x->origin, copy_reply);
}

/* The end: through the source's shard only to release the job's own hold. */
static void finish_on_source(struct copy_job *j)
{
	if (j->own_hold)
		cmd_run_on_shard(j->x, j->src_shard, copy_finish);
	else
		cmd_run_on_px(j->x, j->x->origin, copy_reply);
}

/* Submits j->req (prepared) on x's shard, passing the job's holds. */
static void job_submit(struct copy_job *j, const struct store_key_ref *key,
                       void (*done)(struct store_req *sr))
{
	struct cmd_ctx *x = j->x;
	j->req.db = key->db;
	j->req.key = key->key;
	j->req.key_len = key->key_len;
	j->req.arg = j;
	j->req.done = done;
	j->req.holder = j->holder;
	j->req.durable = x->durable;
	cmd_txn_mark(x->txn, &j->req);
	store_submit(x->st, &j->req);
}

/* A step's request failed (or answered what ends the command). */
static bool step_failed(struct copy_job *j, struct store_req *sr)
{
	if (sr->status == 0 || sr->status == -ENOENT)
		return false;
	j->status = sr->status;
	finish_on_source(j);
	return true;
}

/* ---- delete (keys on two shards) --------------------------------------- */

static void delete_done(struct store_req *sr)
{
	struct copy_job *j = sr->arg;
	if (step_failed(j, sr))
		return;
	finish_on_source(j);
}

static void delete_source(struct cmd_ctx *x)
{
	struct copy_job *j = x->heap;
	j->req = (struct store_req){.op = STORE_DELETE};
	job_submit(j, &j->src, delete_done);
}

/* ---- write ------------------------------------------------------------- */

/* Key 0 the destination; key 1 the source when both are on one shard and it
 * goes (RENAME, MOVE). */
static void write_call(struct store_req *sr, struct store_txn *t)
{
	struct copy_job *j = sr->arg;
	struct store_key_info dst;
	store_txn_key(t, 0, &dst);
	bool keep_existing = j->kind == COPY_RENAMENX || j->kind == COPY_MOVE ||
	                     (j->kind == COPY_COPY && !j->replace);
	if (dst.exists && keep_existing) {
		j->result = 0;
		return;
	}
	int ret;
	if (j->type == FMT_TYPE_STRING) {
		ret = store_txn_put_string(t, 0, j->value, j->value_len, j->expiry_ms);
	} else {
		ret = store_txn_delete_key(t, 0);
		for (size_t i = 0; i < j->elems.n && ret >= 0; i++) {
			size_t len, vlen;
			const uint8_t *v;
			const uint8_t *p = cmd_elems_at(&j->elems, i, &len, &v, &vlen);
			ret = store_txn_put(t, 0, j->type, p, len, v, vlen);
		}
		if (ret >= 0) {
			store_txn_mark(t, 0, j->enc);
			ret = store_txn_expire(t, 0, j->expiry_ms);
		}
	}
	if (ret >= 0 && sr->n_more_keys == 1)
		ret = store_txn_delete_key(t, 1);
	if (ret < 0) {
		store_txn_abort_error(t, ret);
		return;
	}
	j->result = 1;
}

static void write_done(struct store_req *sr)
{
	struct copy_job *j = sr->arg;
	if (step_failed(j, sr))
		return;
	bool source_goes = j->kind == COPY_RENAME || j->kind == COPY_RENAMENX;
	if (j->result == 1 && source_goes && j->dst_shard != j->src_shard) {
		cmd_run_on_shard(j->x, j->src_shard, delete_source);
		return;
	}
	finish_on_source(j);
}

static void write_destination(struct cmd_ctx *x)
{
	struct copy_job *j = x->heap;
	bool source_goes = j->kind != COPY_COPY;
	j->req = (struct store_req){.op = STORE_CALL, .call = write_call};
	if (source_goes && j->dst_shard == j->src_shard) {
		j->req.more_keys = &j->src;
		j->req.n_more_keys = 1;
	}
	job_submit(j, &j->dst, write_done);
}

/* ---- read -------------------------------------------------------------- */

static void collect_call(struct store_req *sr, struct store_txn *t)
{
	struct copy_job *j = sr->arg;
	cmd_elems_read(t, 0, &j->elems);
}

static void collect_done(struct store_req *sr)
{
	struct copy_job *j = sr->arg;
	if (step_failed(j, sr))
		return;
	cmd_run_on_shard(j->x, j->dst_shard, write_destination);
}

static bool same_key(const struct copy_job *j)
{
	return j->src.db == j->dst.db && j->src.key_len == j->dst.key_len &&
	       memcmp(j->src.key, j->dst.key, j->src.key_len) == 0;
}

static void read_done(struct store_req *sr)
{
	struct copy_job *j = sr->arg;
	if (step_failed(j, sr))
		return;
	if (sr->status == -ENOENT) {
		if (j->kind == COPY_RENAME || j->kind == COPY_RENAMENX)
			j->err = "ERR no such key";
		j->result = 0;
		finish_on_source(j);
		return;
	}
	if (same_key(j)) { /* RENAME key key (COPY and MOVE refused it before) */
		j->result = j->kind == COPY_RENAME;
		finish_on_source(j);
		return;
	}
	j->type = sr->result_type;
	j->expiry_ms = sr->result_expiry_ms;
	if (j->type == FMT_TYPE_STRING) {
		j->value = malloc(sr->result_len ? sr->result_len : 1);
		if (j->value == NULL) {
			j->status = -ENOMEM;
			finish_on_source(j);
			return;
		}
		memcpy(j->value, sr->result, sr->result_len);
		j->value_len = sr->result_len;
		cmd_run_on_shard(j->x, j->dst_shard, write_destination);
		return;
	}
	j->enc = sr->result_enc;
	j->req = (struct store_req){.op = STORE_CALL, .call = collect_call};
	job_submit(j, &j->src, collect_done);
}

static void read_source(struct cmd_ctx *x)
{
	struct copy_job *j = x->heap;
	j->req = (struct store_req){.op = STORE_GET, .flags = STORE_ANY_TYPE};
	job_submit(j, &j->src, read_done);
}

static void hold_done(struct store_req *sr)
{
	struct copy_job *j = sr->arg;
	if (sr->status < 0) {
		j->status = sr->status;
		finish_on_source(j);
		return;
	}
	j->held = true;
	read_source(j->x);
}

/* On the source's shard. */
static void copy_start(struct cmd_ctx *x)
{
	struct copy_job *j = x->heap;
	if (!j->own_hold) {
		read_source(x);
		return;
	}
	j->hold = (struct store_req){.op = STORE_HOLD,
	                             .db = j->src.db,
	                             .key = j->src.key,
	                             .key_len = j->src.key_len,
	                             .more_keys = &j->dst,
	                             .n_more_keys = 1,
	                             .holder = j,
	                             .arg = j,
	                             .done = hold_done};
	store_submit(x->st, &j->hold);
}

static void copy_run(struct cmd_ctx *x, enum copy_kind kind, bool replace, unsigned dst_db)
{
	struct copy_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	size_t dst_arg = kind == COPY_MOVE ? 1 : 2;
	*j = (struct copy_job){
	    .x = x,
	    .kind = kind,
	    .replace = replace,
	    .src = {.db = x->db, .key = cmd_arg(x, 1), .key_len = cmd_arg_len(x, 1)},
	    .dst = {.db = dst_db, .key = cmd_arg(x, dst_arg), .key_len = cmd_arg_len(x, dst_arg)}};
	cmd_elems_init(&j->elems, false);
	j->src_shard = shard_of_key(j->src.key, j->src.key_len);
	j->dst_shard = shard_of_key(j->dst.key, j->dst.key_len);
	/* Keys on two shards come held (cmd_isolate), as do those of EXEC and
	 * scripts (x->holder): only keys of one shard outside them need a hold. */
	j->own_hold = x->holder == NULL;
	j->holder = j->own_hold ? (const void *)j : x->holder;
	x->heap = j;
	cmd_run_on_shard(x, j->src_shard, copy_start);
}

void cmd_rename(struct cmd_ctx *x)
{
	copy_run(x, COPY_RENAME, false, x->db);
}

void cmd_renamenx(struct cmd_ctx *x)
{
	copy_run(x, COPY_RENAMENX, false, x->db);
}

/* A database argument of COPY (DB) or MOVE, as Redis reads it.  Returns 0,
 * or -1 after replying. */
static int db_arg_or_fail(struct cmd_ctx *x, size_t i, bool int_range_error, unsigned *out)
{
	int64_t v;
	if (!resp_parse_int64(cmd_arg(x, i), cmd_arg_len(x, i), &v)) {
		cmd_fail(x, cmd_err_not_int);
		return -1;
	}
	if (int_range_error && (v < INT32_MIN || v > INT32_MAX)) {
		cmd_fail(x, "ERR value is out of range, value must between -2147483648 and "
		            "2147483647");
		return -1;
	}
	if (v < 0 || v >= (int64_t)cmd_databases()) {
		cmd_fail(x, "ERR DB index is out of range");
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

void cmd_copy(struct cmd_ctx *x)
{
	unsigned db = x->db;
	bool replace = false;
	for (size_t i = 3; i < cmd_argc(x); i++) {
		if (cmd_arg_is(x, i, "replace")) {
			replace = true;
		} else if (cmd_arg_is(x, i, "db") && i + 1 < cmd_argc(x)) {
			if (db_arg_or_fail(x, ++i, false, &db) < 0)
				return;
		} else {
			cmd_fail(x, cmd_err_syntax);
			return;
		}
	}
	if (db == x->db && cmd_arg_len(x, 1) == cmd_arg_len(x, 2) &&
	    memcmp(cmd_arg(x, 1), cmd_arg(x, 2), cmd_arg_len(x, 1)) == 0) {
		cmd_fail(x, "ERR source and destination objects are the same");
		return;
	}
	copy_run(x, COPY_COPY, replace, db);
}

void cmd_move(struct cmd_ctx *x)
{
	unsigned db;
	if (db_arg_or_fail(x, 2, true, &db) < 0)
		return;
	if (db == x->db) {
		cmd_fail(x, "ERR source and destination objects are the same");
		return;
	}
	copy_run(x, COPY_MOVE, false, db);
}

int cmd_copy_keys(const struct cmd_def *d, size_t argc, uint8_t **argv, size_t *argv_len,
                  unsigned db, int (*add)(void *arg, unsigned db, const uint8_t *key, size_t len),
                  void *arg)
{
	unsigned dst_db = db;
	size_t dst_arg = d->fn == cmd_move ? 1 : 2;
	if (argc < 3)
		return 0;
	int64_t v;
	if (d->fn == cmd_move) {
		if (!resp_parse_int64(argv[2], argv_len[2], &v) || v < 0 ||
		    v >= (int64_t)cmd_databases())
			return 0; /* (the command fails on its own) */
		dst_db = (unsigned)v;
	} else if (d->fn == cmd_copy) {
		for (size_t i = 3; i + 1 < argc; i++)
			if (argv_len[i] == 2 && strncasecmp((const char *)argv[i], "db", 2) == 0 &&
			    resp_parse_int64(argv[i + 1], argv_len[i + 1], &v) && v >= 0 &&
			    v < (int64_t)cmd_databases())
				dst_db = (unsigned)v;
	}
	if (add(arg, db, argv[1], argv_len[1]) < 0 ||
	    add(arg, dst_db, argv[dst_arg], argv_len[dst_arg]) < 0)
		return -ENOMEM;
	return 0;
}
