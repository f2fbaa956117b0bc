/* cmd_string: the string commands (GET, SET and its family, MGET, MSET,
 * MSETNX, APPEND, STRLEN, INCR family, INCRBYFLOAT, GETRANGE, SETRANGE).
 *
 * The one-key commands are CMD_KEYED: they run on the proactor of the key's
 * shard, and every read-modify-write (INCR, APPEND, SET ... GET, GETEX) is a
 * single STORE_UPDATE, so it is atomic with respect to every other command on
 * the key.  Updates keep the key's time to live, as Redis does. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

#define CMD_SET_NX         0x01
#define CMD_SET_XX         0x02
#define CMD_SET_GET        0x04
#define CMD_SET_KEEPTTL    0x08
#define CMD_SET_EX         0x10  /* relative seconds */
#define CMD_SET_PX         0x20  /* relative ms */
#define CMD_SET_EXAT       0x40  /* absolute seconds */
#define CMD_SET_PXAT       0x80  /* absolute ms */
#define CMD_SET_PERSIST    0x100 /* GETEX only */
#define CMD_SET_EXPIRY     (CMD_SET_EX | CMD_SET_PX | CMD_SET_EXAT | CMD_SET_PXAT)
#define CMD_SET_BAD_EXPIRE 0x200 /* GETEX: its update found the expire time invalid */

/* Redis's getExpireMillisecondsOrReply without the reply, so that a store
 * update may call it: the expire time text s in the unit CMD_SET_EX/PX/EXAT/
 * PXAT `unit` names, as absolute Unix ms in *out: > 0, no overflow.  Returns
 * 0; -EINVAL if s is not an integer (cmd_err_not_int); -ERANGE if it is not
 * a valid expire time (cmd_fail_invalid_expire). */
static int parse_expire_ms(const uint8_t *s, size_t len, unsigned unit, uint64_t *out)
{
	int64_t v;
	if (!resp_parse_int64(s, len, &v))
		return -EINVAL;
	bool seconds = unit & (CMD_SET_EX | CMD_SET_EXAT);
	if (v <= 0 || (seconds && v > INT64_MAX / 1000))
		return -ERANGE;
	if (seconds)
		v *= 1000;
	if (unit & (CMD_SET_EX | CMD_SET_PX)) {
		int64_t now = (int64_t)clock_unix_ms();
		if (v > INT64_MAX - now)
			return -ERANGE;
		v += now;
	}
	*out = (uint64_t)v;
	return 0;
}

/* parse_expire_ms of argv[arg]; arg 0: no expire time (*out = 0).  Returns
 * 0, or -1 after replying. */
static int expire_ms_or_fail(struct cmd_ctx *x, size_t arg, unsigned unit, uint64_t *out)
{
	*out = 0;
	if (arg == 0)
		return 0;
	int rc = parse_expire_ms(cmd_arg(x, arg), cmd_arg_len(x, arg), unit, out);
	if (rc == -EINVAL)
		cmd_fail(x, cmd_err_not_int);
	else if (rc < 0)
		cmd_fail_invalid_expire(x);
	return rc < 0 ? -1 : 0;
}

/* ---- GET --------------------------------------------------------------- */

static void get_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	if (sr->status == 0)
		resp_add_bulk(x->reply, sr->result, sr->result_len);
	else
		resp_add_null(x->reply); /* -ENOENT */
	cmd_done(x);
}

void cmd_get(struct cmd_ctx *x)
{
	x->sr.op = STORE_GET;
	cmd_submit(x, get_done);
}

/* ---- SET family -------------------------------------------------------- */

/* Without GET: +OK, or nil when NX/XX refused the write (-EEXIST); SETNX
 * says the same as :1 / :0 (Redis's ok_reply and abort_reply). */
static void set_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	bool written = sr->status == 0;
	if (x->u.set.int_reply)
		resp_add_int(x->reply, written);
	else if (written)
		resp_add_simple(x->reply, "OK");
	else
		resp_add_null(x->reply);
	cmd_done(x);
}

/* SET ... GET and GETSET: the old value (or nil) is the reply, whether or not
 * NX/XX let the write happen. */
static enum store_update_result set_get_update(struct store_req *sr, const uint8_t *old,
                                               size_t old_len, uint64_t old_expiry_ms)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	unsigned f = x->u.set.flags;
	if (old != NULL)
		resp_add_bulk(x->reply, old, old_len);
	else
		resp_add_null(x->reply);
	if (((f & CMD_SET_NX) && old != NULL) || ((f & CMD_SET_XX) && old == NULL))
		return STORE_UPDATE_KEEP;
	sr->new_value = sr->value;
	sr->new_len = sr->value_len;
	sr->new_expiry_ms =
	    (f & CMD_SET_KEEPTTL) && old != NULL ? old_expiry_ms : x->u.set.expiry_ms;
	return STORE_UPDATE_WRITE;
}

/* Updates whose answer the update callback wrote (SET ... GET). */
static void update_answered_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	cmd_done(x);
}

/* Redis's setGenericCommand, for SET, SETNX, SETEX, PSETEX and GETSET: sets
 * argv[value_arg] as the CMD_SET_* `flags` say, expiring at the time
 * argv[expire_arg] gives in the unit the flags name (0: no expire time).
 * int_reply: SETNX's :1 / :0.  Replies and finishes the request. */
static void set_generic(struct cmd_ctx *x, unsigned flags, size_t expire_arg, size_t value_arg,
                        bool int_reply)
{
	x->u.set.flags = flags;
	x->u.set.int_reply = int_reply;
	/* The expire time first, as Redis's setGenericCommand.  The length check
	 * is ringkv's own (Redis's protocol limit is enough there, but here a
	 * proto-max-bulk-len above the storage's FMT_VALUE_MAX lets longer
	 * values in); it comes last, before anything is submitted. */
	if (expire_ms_or_fail(x, expire_arg, flags & CMD_SET_EXPIRY, &x->u.set.expiry_ms) < 0 ||
	    cmd_string_length_or_fail(x, cmd_arg_len(x, value_arg)) < 0)
		return;
	x->sr.value = cmd_arg(x, value_arg);
	x->sr.value_len = cmd_arg_len(x, value_arg);
	if (flags & CMD_SET_GET) {
		/* A read-modify-write: the old value is the reply even when NX/XX
		 * refuse the write. */
		x->sr.op = STORE_UPDATE;
		x->sr.update = set_get_update;
		cmd_submit(x, update_answered_done);
		return;
	}
	x->sr.op = STORE_PUT;
	x->sr.expiry_ms = x->u.set.expiry_ms;
	x->sr.flags = (flags & CMD_SET_NX ? STORE_NX : 0) | (flags & CMD_SET_XX ? STORE_XX : 0) |
	              (flags & CMD_SET_KEEPTTL ? STORE_KEEPTTL : 0);
	cmd_submit(x, set_done);
}

/* Parses SET's or GETEX's options from argv[first] into *flags and the argv
 * index of the expire time (0: none), as Redis's
 * parseExtendedStringArgumentsOrReply.  Returns 0, or -1 after replying. */
static int parse_set_options(struct cmd_ctx *x, size_t first, bool getex, unsigned *flags,
                             size_t *expire_arg)
{
	unsigned f = 0;
	*expire_arg = 0;
	for (size_t j = first; j < cmd_argc(x); j++) {
		bool has_next = j + 1 < cmd_argc(x);
		unsigned unit = 0;
		/* Repeats are accepted and conflicts refused exactly as Redis's
		 * parseExtendedStringArgumentsOrReply does. */
		if (!getex && cmd_arg_is(x, j, "nx") && !(f & CMD_SET_XX))
			f |= CMD_SET_NX;
		else if (!getex && cmd_arg_is(x, j, "xx") && !(f & CMD_SET_NX))
			f |= CMD_SET_XX;
		else if (!getex && cmd_arg_is(x, j, "get"))
			f |= CMD_SET_GET;
		else if (!getex && cmd_arg_is(x, j, "keepttl") && !(f & CMD_SET_EXPIRY))
			f |= CMD_SET_KEEPTTL;
		else if (getex && cmd_arg_is(x, j, "persist") && !(f & CMD_SET_EXPIRY))
			f |= CMD_SET_PERSIST;
		else if (cmd_arg_is(x, j, "ex"))
			unit = CMD_SET_EX;
		else if (cmd_arg_is(x, j, "px"))
			unit = CMD_SET_PX;
		else if (cmd_arg_is(x, j, "exat"))
			unit = CMD_SET_EXAT;
		else if (cmd_arg_is(x, j, "pxat"))
			unit = CMD_SET_PXAT;
		else
			goto syntax;
		if (unit == 0)
			continue;
		if ((f & ((CMD_SET_EXPIRY & ~unit) | CMD_SET_KEEPTTL | CMD_SET_PERSIST)) ||
		    !has_next)
			goto syntax;
		f |= unit;
		*expire_arg = ++j;
	}
	*flags = f;
	return 0;
syntax:
	cmd_fail(x, cmd_err_syntax);
	return -1;
}

void cmd_set(struct cmd_ctx *x)
{
	unsigned flags;
	size_t expire_arg;
	if (parse_set_options(x, 3, false, &flags, &expire_arg) == 0)
		set_generic(x, flags, expire_arg, 2, false);
}

void cmd_setnx(struct cmd_ctx *x)
{
	set_generic(x, CMD_SET_NX, 0, 2, true);
}

void cmd_setex(struct cmd_ctx *x)
{
	set_generic(x, CMD_SET_EX, 2, 3, false);
}

void cmd_psetex(struct cmd_ctx *x)
{
	set_generic(x, CMD_SET_PX, 2, 3, false);
}

/* SET key value GET: the same reply and effect (the TTL is cleared). */
void cmd_getset(struct cmd_ctx *x)
{
	set_generic(x, CMD_SET_GET, 0, 2, false);
}

/* GETDEL: the old value, or nil. */
static void getdel_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	if (sr->status == 0 && sr->result != NULL)
		resp_add_bulk(x->reply, sr->result, sr->result_len);
	else
		resp_add_null(x->reply);
	cmd_done(x);
}

void cmd_getdel(struct cmd_ctx *x)
{
	x->sr.op = STORE_DELETE;
	x->sr.flags = STORE_GET_OLD;
	cmd_submit(x, getdel_done);
}

static enum store_update_result getex_update(struct store_req *sr, const uint8_t *old,
                                             size_t old_len, uint64_t old_expiry_ms)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	unsigned f = x->u.set.flags;
	if (old == NULL) {
		resp_add_null(x->reply);
		return STORE_UPDATE_KEEP;
	}
	/* The expire time is read only now that the key exists, as Redis's
	 * getexCommand: a missing key is nil whatever the time says.  It is the
	 * last argument: with a unit, GETEX's options are all unit-time pairs
	 * (PERSIST conflicts), and of repeated ones the last counts. */
	if (f & CMD_SET_EXPIRY) {
		size_t arg = cmd_argc(x) - 1;
		int rc = parse_expire_ms(cmd_arg(x, arg), cmd_arg_len(x, arg), f & CMD_SET_EXPIRY,
		                         &x->u.set.expiry_ms);
		if (rc == -EINVAL)
			return cmd_update_refuse(x, cmd_err_not_int);
		if (rc < 0) {
			/* Its wording names the command: getex_done replies it. */
			x->u.set.flags |= CMD_SET_BAD_EXPIRE;
			return STORE_UPDATE_KEEP;
		}
	}
	resp_add_bulk(x->reply, old, old_len);
	sr->new_value = old;
	sr->new_len = old_len;
	if (f & CMD_SET_PERSIST) {
		sr->new_expiry_ms = 0;
		return old_expiry_ms != 0 ? STORE_UPDATE_WRITE : STORE_UPDATE_KEEP;
	}
	if (!(f & CMD_SET_EXPIRY))
		return STORE_UPDATE_KEEP;
	if (x->u.set.expiry_ms <= clock_unix_ms())
		return STORE_UPDATE_DELETE; /* a time in the past deletes the key, as in Redis */
	sr->new_expiry_ms = x->u.set.expiry_ms;
	return STORE_UPDATE_WRITE;
}

static void getex_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	if (x->u.set.flags & CMD_SET_BAD_EXPIRE) {
		cmd_fail_invalid_expire(x);
		return;
	}
	cmd_done(x);
}

/* Redis 7.0's order: the options' syntax, then the key (nil if missing),
 * then the expire time's value (getex_update). */
void cmd_getex(struct cmd_ctx *x)
{
	unsigned flags;
	size_t expire_arg;
	if (parse_set_options(x, 2, true, &flags, &expire_arg) < 0)
		return;
	x->u.set.flags = flags;
	if (flags == 0) { /* a plain GET */
		cmd_get(x);
		return;
	}
	x->sr.op = STORE_UPDATE;
	x->sr.update = getex_update;
	cmd_submit(x, getex_done);
}

/* ---- MGET, MSET, MSETNX ------------------------------------------------ */

static void prepare_get(struct cmd_ctx *x, struct cmd_keyop *op)
{
	(void)x;
	op->sr.op = STORE_GET;
}

static void mget_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	resp_add_array(x->reply, f->nops);
	for (size_t i = 0; i < f->nops; i++) {
		if (f->ops[i].status == 0)
			resp_add_bulk(x->reply, f->ops[i].value, f->ops[i].value_len);
		else
			resp_add_null(x->reply);
	}
	cmd_fan_free(f);
	cmd_done(x);
}

void cmd_mget(struct cmd_ctx *x)
{
	cmd_fan_keys(x, 1, 1, true, prepare_get, mget_finish);
}

static void prepare_put(struct cmd_ctx *x, struct cmd_keyop *op)
{
	op->sr.op = STORE_PUT;
	op->sr.value = cmd_arg(x, op->arg + 1);
	op->sr.value_len = cmd_arg_len(x, op->arg + 1);
}

/* MSETNX's writes: "only if absent" for the first occurrence of each key, so
 * a key created meanwhile is not overwritten; a repeated key is then written
 * plainly (its first write runs before it), and the last value wins, as in
 * Redis. */
static void prepare_put_nx(struct cmd_ctx *x, struct cmd_keyop *op)
{
	prepare_put(x, op);
	op->sr.flags = STORE_NX;
	for (size_t a = 1; a < op->arg; a += 2)
		if (cmd_arg_len(x, a) == op->sr.key_len &&
		    memcmp(cmd_arg(x, a), op->sr.key, op->sr.key_len) == 0) {
			op->sr.flags = 0;
			break;
		}
}

static void mset_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	cmd_fan_free(f);
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

/* Checks MSET/MSETNX's pairs (the arity error, as Redis's
 * msetGenericCommand, when a value is missing) and value sizes.  Returns 0,
 * or -1 after replying. */
static int pairs_or_fail(struct cmd_ctx *x)
{
	if (cmd_argc(x) % 2 == 0) {
		cmd_fail_arity(x);
		return -1;
	}
	for (size_t i = 2; i < cmd_argc(x); i += 2)
		if (cmd_string_length_or_fail(x, cmd_arg_len(x, i)) < 0)
			return -1;
	return 0;
}

void cmd_mset(struct cmd_ctx *x)
{
	if (pairs_or_fail(x) == 0)
		cmd_fan_keys(x, 1, 2, false, prepare_put, mset_finish);
}

static void prepare_meta(struct cmd_ctx *x, struct cmd_keyop *op)
{
	(void)x;
	op->sr.op = STORE_META;
}

static void msetnx_written(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	bool all_set = true;
	for (size_t i = 0; i < f->nops; i++)
		all_set &= f->ops[i].status == 0;
	cmd_fan_free(f);
	resp_add_int(x->reply, all_set);
	cmd_done(x);
}

/* MSETNX's first round: writes only if none of the keys exists. */
static void msetnx_checked(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	bool any = false;
	for (size_t i = 0; i < f->nops; i++)
		any |= f->ops[i].status == 0;
	cmd_fan_free(f);
	if (any) {
		resp_add_int(x->reply, 0);
		cmd_done(x);
		return;
	}
	cmd_fan_keys(x, 1, 2, false, prepare_put_nx, msetnx_written);
}

void cmd_msetnx(struct cmd_ctx *x)
{
	if (pairs_or_fail(x) == 0)
		cmd_fan_keys(x, 1, 2, false, prepare_meta, msetnx_checked);
}

/* ---- APPEND, STRLEN ---------------------------------------------------- */

static enum store_update_result append_update(struct store_req *sr, const uint8_t *old,
                                              size_t old_len, uint64_t old_expiry_ms)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	const uint8_t *add = cmd_arg(x, 2);
	size_t add_len = cmd_arg_len(x, 2);
	sr->new_expiry_ms = old_expiry_ms;
	if (old == NULL) { /* a new key: the argument alone is within the limit already */
		sr->new_value = add;
		sr->new_len = add_len;
		return STORE_UPDATE_WRITE;
	}
	/* Redis's checkStringLength(old, add), here where the old length is known. */
	if (!cmd_string_fits((uint64_t)old_len + add_len))
		return cmd_update_refuse(x, cmd_err_too_big);
	uint8_t *v = malloc(old_len + add_len + 1);
	if (v == NULL)
		return cmd_update_refuse(x, cmd_err_oom);
	memcpy(v, old, old_len);
	memcpy(v + old_len, add, add_len);
	x->heap = v;
	sr->new_value = v;
	sr->new_len = old_len + add_len;
	return STORE_UPDATE_WRITE;
}

/* Updates whose reply is the new length (APPEND, SETRANGE). */
static void new_length_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	resp_add_int(x->reply, (int64_t)sr->new_len);
	cmd_done(x);
}

void cmd_append(struct cmd_ctx *x)
{
	x->sr.op = STORE_UPDATE;
	x->sr.update = append_update;
	cmd_submit(x, new_length_done);
}

static void strlen_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	resp_add_int(x->reply, sr->status == 0 ? (int64_t)sr->result_len : 0);
	cmd_done(x);
}

void cmd_strlen(struct cmd_ctx *x)
{
	x->sr.op = STORE_META;
	x->sr.flags = STORE_STRING;
	cmd_submit(x, strlen_done);
}

/* ---- INCR family ------------------------------------------------------- */

static enum store_update_result incr_update(struct store_req *sr, const uint8_t *old,
                                            size_t old_len, uint64_t old_expiry_ms)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int64_t v = 0, d = x->u.incr.delta;
	if (old != NULL && !resp_parse_int64(old, old_len, &v))
		return cmd_update_refuse(x, cmd_err_not_int);
	if ((d < 0 && v < 0 && d < INT64_MIN - v) || (d > 0 && v > 0 && d > INT64_MAX - v))
		return cmd_update_refuse(x, cmd_err_overflow);
	x->u.incr.value = v + d;
	int n = snprintf(x->u.incr.num, sizeof(x->u.incr.num), "%lld", (long long)(v + d));
	sr->new_value = (const uint8_t *)x->u.incr.num;
	sr->new_len = (size_t)n;
	sr->new_expiry_ms = old_expiry_ms;
	return STORE_UPDATE_WRITE;
}

static void incr_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	resp_add_int(x->reply, x->u.incr.value);
	cmd_done(x);
}

/* Redis's incrDecrCommand. */
static void incr_generic(struct cmd_ctx *x, int64_t delta)
{
	x->u.incr.delta = delta;
	x->sr.op = STORE_UPDATE;
	x->sr.update = incr_update;
	cmd_submit(x, incr_done);
}

void cmd_incr(struct cmd_ctx *x)
{
	incr_generic(x, 1);
}

void cmd_decr(struct cmd_ctx *x)
{
	incr_generic(x, -1);
}

void cmd_incrby(struct cmd_ctx *x)
{
	int64_t d;
	if (cmd_arg_int_or_fail(x, 2, &d) == 0)
		incr_generic(x, d);
}

void cmd_decrby(struct cmd_ctx *x)
{
	int64_t d;
	if (cmd_arg_int_or_fail(x, 2, &d) < 0)
		return;
	if (d == INT64_MIN) { /* -d does not exist; Redis words this one apart */
		cmd_fail(x, "ERR decrement would overflow");
		return;
	}
	incr_generic(x, -d);
}

#define LD_TEXT_MAX 5200 /* "%.17Lf" of the largest long double, and more */

static enum store_update_result incrbyfloat_update(struct store_req *sr, const uint8_t *old,
                                                   size_t old_len, uint64_t old_expiry_ms)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	long double v = 0, delta;
	/* Redis's order: the key's type (the store's WRONGTYPE, before this
	 * runs), the stored value, then the increment. */
	if (old != NULL && !cmd_parse_ld(old, old_len, &v))
		return cmd_update_refuse(x, cmd_err_not_float);
	if (!cmd_parse_ld(cmd_arg(x, 2), cmd_arg_len(x, 2), &delta))
		return cmd_update_refuse(x, cmd_err_not_float);
	v += delta;
	if (isnan(v) || isinf(v))
		return cmd_update_refuse(x, "ERR increment would produce NaN or Infinity");
	char *text = malloc(LD_TEXT_MAX);
	size_t n = text != NULL ? cmd_format_ld(text, LD_TEXT_MAX, v) : 0;
	if (n == 0) {
		free(text);
		return cmd_update_refuse(x, cmd_err_oom);
	}
	x->heap = text;
	sr->new_value = (const uint8_t *)text;
	sr->new_len = n;
	sr->new_expiry_ms = old_expiry_ms;
	return STORE_UPDATE_WRITE;
}

static void incrbyfloat_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	resp_add_bulk(x->reply, x->heap, sr->new_len);
	cmd_done(x);
}

void cmd_incrbyfloat(struct cmd_ctx *x)
{
	x->sr.op = STORE_UPDATE;
	x->sr.update = incrbyfloat_update;
	cmd_submit(x, incrbyfloat_done);
}

/* ---- GETRANGE, SETRANGE ------------------------------------------------ */

/* Redis's getrangeCommand on the value read (a missing key is ""). */
static void getrange_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	int64_t len = sr->status == 0 ? (int64_t)sr->result_len : 0;
	int64_t start = x->u.getrange.start, end = x->u.getrange.end;
	if (start < 0 && end < 0 && start > end) {
		resp_add_bulk(x->reply, "", 0);
		cmd_done(x);
		return;
	}
	if (start < 0)
		start = len + start;
	if (end < 0)
		end = len + end;
	if (start < 0)
		start = 0;
	if (end < 0)
		end = 0;
	if (end >= len)
		end = len - 1;
	if (start > end || len == 0)
		resp_add_bulk(x->reply, "", 0);
	else
		resp_add_bulk(x->reply, sr->result + start, (size_t)(end - start + 1));
	cmd_done(x);
}

void cmd_getrange(struct cmd_ctx *x)
{
	if (cmd_arg_int_or_fail(x, 2, &x->u.getrange.start) < 0 ||
	    cmd_arg_int_or_fail(x, 3, &x->u.getrange.end) < 0)
		return;
	x->sr.op = STORE_GET;
	cmd_submit(x, getrange_done);
}

/* Redis's order: an empty value answers the length and is never too long,
 * whatever the offset; else the length is checked, then applied. */
static enum store_update_result setrange_update(struct store_req *sr, const uint8_t *old,
                                                size_t old_len, uint64_t old_expiry_ms)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	const uint8_t *add = cmd_arg(x, 3);
	size_t add_len = cmd_arg_len(x, 3), off = (size_t)x->u.setrange.offset;
	sr->new_len = old_len; /* the reply when nothing changes */
	if (add_len == 0)
		return STORE_UPDATE_KEEP; /* Redis neither creates nor changes the key */
	/* Redis's checkStringLength comes after the type check (the store's
	 * WRONGTYPE, before this runs); offset < 2^63 and the length < 2^63:
	 * the sum does not wrap. */
	if (!cmd_string_fits((uint64_t)off + add_len))
		return cmd_update_refuse(x, cmd_err_too_big);
	size_t len = off + add_len > old_len ? off + add_len : old_len;
	uint8_t *v = malloc(len);
	if (v == NULL)
		return cmd_update_refuse(x, cmd_err_oom);
	if (old != NULL)
		memcpy(v, old, old_len);
	if (off > old_len)
		memset(v + old_len, 0, off - old_len);
	memcpy(v + off, add, add_len);
	x->heap = v;
	sr->new_value = v;
	sr->new_len = len;
	sr->new_expiry_ms = old_expiry_ms;
	return STORE_UPDATE_WRITE;
}

void cmd_setrange(struct cmd_ctx *x)
{
	if (cmd_arg_int_or_fail(x, 2, &x->u.setrange.offset) < 0)
		return;
	if (x->u.setrange.offset < 0) {
		cmd_fail(x, "ERR offset is out of range");
		return;
	}
	x->sr.op = STORE_UPDATE;
	x->sr.update = setrange_update;
	cmd_submit(x, new_length_done);
}
