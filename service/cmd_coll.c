/* cmd_coll: what the collection commands share — running a command as one
 * store call (cmd_call), the type check every collection command opens with,
 * element lists held in memory (for SINTER & co., random picks and replies
 * built before their length is known), random elements (HRANDFIELD,
 * SRANDMEMBER, SPOP) and HSCAN/SSCAN. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "service/runtime/logging.h"
#include "shard.h"
#include "storage/format.h"

#include <inttypes.h>

/* The proactor of the request's key (x->shard: set by cmd_run_on_shard). */
static unsigned shard_proactor_of(const struct cmd_ctx *x)
{
	return shard_proactor(x->shard);
}

const char cmd_err_wrongtype[] = "WRONGTYPE Operation against a key holding the wrong kind of value";

#define RANDOM_IN_MEMORY 1024   /* collections up to this size are read whole for random picks */
#define RANDOM_SUB_STRATEGY_MUL 3 /* read whole when count * this > size (Redis's rule) */

/* ---- running a command as a store call -------------------------------- */

static void call_done(struct store_req *sr)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	if (cmd_store_ok_or_fail(x) < 0)
		return;
	cmd_done(x);
}

void cmd_call(struct cmd_ctx *x, store_call_fn fn)
{
	x->sr.op = STORE_CALL;
	x->sr.call = fn;
	cmd_submit(x, call_done);
}

void cmd_call_elems(struct cmd_ctx *x, store_call_fn fn, size_t first, size_t step)
{
	size_t argc = cmd_argc(x);
	if (first < argc && step > 0) {
		x->sr.prefetch = x->req->argv + first;
		x->sr.prefetch_lens = x->req->argv_len + first;
		x->sr.prefetch_step = step;
		x->sr.n_prefetch = (argc - first + step - 1) / step;
	}
	cmd_call(x, fn);
}

void cmd_call_refuse(struct cmd_ctx *x, struct store_txn *t, const char *msg)
{
	store_txn_abort(t);
	x->err = msg;
}

int cmd_coll_type_or_refuse(struct cmd_ctx *x, struct store_txn *t, uint8_t type)
{
	return cmd_key_type_or_refuse(x, t, 0, type);
}

int cmd_key_type_or_refuse(struct cmd_ctx *x, struct store_txn *t, size_t k, uint8_t type)
{
	struct store_key_info info;
	store_txn_key(t, k, &info);
	if (!info.exists)
		return 0;
	if (info.type != type) {
		cmd_call_refuse(x, t, cmd_err_wrongtype);
		return -1;
	}
	return 1;
}

int cmd_elems_fit_or_fail(struct cmd_ctx *x, size_t first, size_t step)
{
	for (size_t i = first; i < cmd_argc(x); i += step ? step : cmd_argc(x)) {
		if (cmd_arg_len(x, i) > FMT_ELEM_MAX) {
			cmd_failf(x, "ERR element of %zu bytes is too long: ringkv keeps hash fields"
			             " and set members of at most %u bytes",
			          cmd_arg_len(x, i), FMT_ELEM_MAX);
			return -1;
		}
	}
	return 0;
}

/* ---- element lists ------------------------------------------------------ */

/* Elements and values live back to back in one arena; an open-addressing
 * table of their indexes answers "is it there" when `indexed`. */
struct cmd_elem {
	size_t off;     /* of the element in the arena; its value follows it */
	uint32_t len, vlen;
	uint32_t hash;  /* FNV-1a of the element */
};

static uint32_t elem_hash(const uint8_t *p, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

void cmd_elems_init(struct cmd_elems *l, bool indexed)
{
	*l = (struct cmd_elems){.indexed = indexed};
}

void cmd_elems_free(struct cmd_elems *l)
{
	free(l->arena);
	free(l->items);
	free(l->slots);
	*l = (struct cmd_elems){0};
}

const uint8_t *cmd_elems_at(const struct cmd_elems *l, size_t i, size_t *len, const uint8_t **v,
                            size_t *vlen)
{
	const struct cmd_elem *e = &l->items[i];
	*len = e->len;
	if (v != NULL) {
		*v = l->arena + e->off + e->len;
		*vlen = e->vlen;
	}
	return l->arena + e->off;
}

static bool elem_equal(const struct cmd_elems *l, size_t i, const uint8_t *p, size_t len,
                       uint32_t h)
{
	const struct cmd_elem *e = &l->items[i];
	return e->hash == h && e->len == len && memcmp(l->arena + e->off, p, len) == 0;
}

/* The slot of (p, len) in the table: where it is, or the empty one to take. */
static size_t elems_slot(const struct cmd_elems *l, const uint8_t *p, size_t len, uint32_t h)
{
	size_t mask = l->cap_slots - 1;
	for (size_t s = h & mask;; s = (s + 1) & mask)
		if (l->slots[s] == 0 || elem_equal(l, l->slots[s] - 1, p, len, h))
			return s;
}

static int elems_rehash(struct cmd_elems *l)
{
	size_t cap = l->cap_slots ? l->cap_slots * 2 : 64;
	size_t *slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	free(l->slots);
	l->slots = slots;
	l->cap_slots = cap;
	for (size_t i = 0; i < l->n; i++) {
		const struct cmd_elem *e = &l->items[i];
		l->slots[elems_slot(l, l->arena + e->off, e->len, e->hash)] = i + 1;
	}
	return 0;
}

bool cmd_elems_has(const struct cmd_elems *l, const uint8_t *p, size_t len)
{
	if (!l->indexed || l->cap_slots == 0)
		return false;
	return l->slots[elems_slot(l, p, len, elem_hash(p, len))] != 0;
}

int cmd_elems_add(struct cmd_elems *l, const uint8_t *p, size_t len, const uint8_t *v,
                  size_t vlen)
{
	uint32_t h = elem_hash(p, len);
	if (l->indexed) {
		if ((l->n + 1) * 2 > l->cap_slots && elems_rehash(l) < 0)
			return -ENOMEM;
		if (l->slots[elems_slot(l, p, len, h)] != 0)
			return 0;
	}
	if (l->n == l->cap_items) {
		size_t cap = l->cap_items ? l->cap_items * 2 : 16;
		struct cmd_elem *items = realloc(l->items, cap * sizeof(*items));
		if (items == NULL)
			return -ENOMEM;
		l->items = items;
		l->cap_items = cap;
	}
	/* The arena is allocated by the first item, even an empty string: an
	 * item's bytes are never a NULL pointer. */
	if (l->arena == NULL || l->arena_cap - l->arena_len < len + vlen) {
		size_t cap = l->arena_cap ? l->arena_cap : 1024;
		while (cap - l->arena_len < len + vlen)
			cap *= 2;
		uint8_t *a = realloc(l->arena, cap);
		if (a == NULL)
			return -ENOMEM;
		l->arena = a;
		l->arena_cap = cap;
	}
	struct cmd_elem *e = &l->items[l->n];
	*e = (struct cmd_elem){.off = l->arena_len, .len = (uint32_t)len, .vlen = (uint32_t)vlen,
	                       .hash = h};
	if (len)
		memcpy(l->arena + l->arena_len, p, len);
	if (vlen)
		memcpy(l->arena + l->arena_len + len, v, vlen);
	l->arena_len += len + vlen;
	if (l->indexed)
		l->slots[elems_slot(l, p, len, h)] = l->n + 1;
	l->n++;
	return 1;
}

static int elems_visit(void *arg, const uint8_t *e, size_t elen, const uint8_t *v, size_t vlen)
{
	return cmd_elems_add(arg, e, elen, v, vlen) < 0 ? -ENOMEM : 0;
}

int cmd_elems_read(struct store_txn *t, size_t k, struct cmd_elems *l)
{
	uint64_t next;
	int ret = store_txn_scan(t, k, 0, SIZE_MAX, elems_visit, l, &next);
	if (ret == -ENOMEM)
		store_txn_abort_error(t, -ENOMEM);
	return ret < 0 ? -1 : 0;
}

void cmd_elems_reply(struct cmd_ctx *x, const struct cmd_elems *l, bool values, bool as_set)
{
	if (values)
		resp_add_map(x->reply, l->n);
	else if (as_set)
		resp_add_set(x->reply, l->n);
	else
		resp_add_array(x->reply, l->n);
	for (size_t i = 0; i < l->n; i++) {
		size_t len, vlen;
		const uint8_t *v;
		const uint8_t *p = cmd_elems_at(l, i, &len, &v, &vlen);
		resp_add_bulk(x->reply, p, len);
		if (values)
			resp_add_bulk(x->reply, v, vlen);
	}
}

/* ---- random elements --------------------------------------------------- */

/* xorshift64*, seeded per proactor from the clock: only randomness of picks,
 * never of anything stored. */
static _Thread_local uint64_t rng_state;

uint64_t cmd_random(void)
{
	if (rng_state == 0)
		rng_state = clock_unix_us() ^ (uint64_t)(uintptr_t)&rng_state ^ 0x9E3779B97F4A7C15ULL;
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

int cmd_random_count_or_fail(struct cmd_ctx *x, size_t i)
{
	int64_t v;
	if (cmd_arg_int_or_fail(x, i, &v) < 0)
		return -1;
	if (v == INT64_MIN) { /* Redis's range is -LONG_MAX..LONG_MAX */
		cmd_fail(x, "ERR value is out of range, value must between -9223372036854775807 and"
		            " 9223372036854775807");
		return -1;
	}
	x->u.random.count = v;
	return 0;
}

struct pick_one {
	struct cmd_elems *into;
	bool found;
};

static int pick_visit(void *arg, const uint8_t *e, size_t elen, const uint8_t *v, size_t vlen)
{
	struct pick_one *p = arg;
	if (p->found)
		return 1;
	p->found = true;
	return cmd_elems_add(p->into, e, elen, v, vlen) < 0 ? -ENOMEM : 1;
}

/* Adds one element of key 0 at a random place to `into` (not indexed: the
 * same element may be added twice).  The element is the first whose hash is
 * at or after a random one, wrapping to the first: as fair as the hashes are
 * evenly spread.  Returns 0, or -1 when the call failed. */
static int pick_random(struct store_txn *t, struct cmd_elems *into)
{
	struct pick_one p = {.into = into};
	uint64_t next, from = cmd_random() & UINT32_MAX;
	int ret = store_txn_scan(t, 0, from, 1, pick_visit, &p, &next);
	if (ret >= 0 && !p.found)
		ret = store_txn_scan(t, 0, 0, 1, pick_visit, &p, &next);
	if (ret == -ENOMEM)
		store_txn_abort_error(t, -ENOMEM);
	return ret < 0 ? -1 : 0;
}

int cmd_random_one(struct store_txn *t, struct cmd_elems *out)
{
	cmd_elems_init(out, false);
	if (pick_random(t, out) < 0)
		return -1;
	if (out->n == 0) { /* a collection that exists has an element: the store erred */
		store_txn_abort_error(t, -EIO);
		return -1;
	}
	return 0;
}

/* Picks `count` random elements of key 0 (of `size`): distinct when uniq
 * (then count < size), else independent.  Fills `out` (indexed when uniq). */
int cmd_random_pick(struct store_txn *t, uint64_t size, uint64_t count, bool uniq,
                    struct cmd_elems *out)
{
	cmd_elems_init(out, uniq);
	if (size <= RANDOM_IN_MEMORY || (uniq && count * RANDOM_SUB_STRATEGY_MUL > size)) {
		/* Read whole, then pick by index: exact and fair. */
		struct cmd_elems all;
		cmd_elems_init(&all, false);
		if (cmd_elems_read(t, 0, &all) < 0) {
			cmd_elems_free(&all);
			return -1;
		}
		size_t n = all.n;
		for (uint64_t i = 0; i < count && n > 0; i++) {
			size_t j = (size_t)(cmd_random() % n), len, vlen;
			const uint8_t *v;
			const uint8_t *p = cmd_elems_at(&all, j, &len, &v, &vlen);
			if (cmd_elems_add(out, p, len, v, vlen) < 0) {
				cmd_elems_free(&all);
				store_txn_abort_error(t, -ENOMEM);
				return -1;
			}
			if (uniq) { /* Fisher-Yates: the picked one leaves the pool */
				struct cmd_elem e = all.items[j];
				all.items[j] = all.items[--n];
				all.items[n] = e;
			}
		}
		cmd_elems_free(&all);
		return 0;
	}
	/* Large: a seek per pick; distinct picks retry on a repeat (count is
	 * below a third of size here, so few do). */
	while (out->n < count)
		if (pick_random(t, out) < 0)
			return -1;
	return 0;
}

void cmd_random_elems(struct cmd_ctx *x, struct store_txn *t, int exists, int64_t l,
                      bool withvalues)
{
	struct store_key_info k;
	store_txn_key(t, 0, &k);
	uint64_t count = l >= 0 ? (uint64_t)l : (uint64_t)-l;
	bool uniq = l >= 0;
	if (!exists || count == 0) {
		resp_add_array(x->reply, 0);
		return;
	}
	if (!uniq && count > CMD_RANDOM_REPLY_MAX) {
		cmd_call_refuse(x, t, "ERR the count asks for more elements than one reply may hold");
		return;
	}
	struct cmd_elems picked;
	bool whole = uniq && count >= k.count;
	if (whole) {
		cmd_elems_init(&picked, false);
		if (cmd_elems_read(t, 0, &picked) < 0) {
			cmd_elems_free(&picked);
			return;
		}
	} else if (cmd_random_pick(t, k.count, count, uniq, &picked) < 0) {
		cmd_elems_free(&picked);
		return;
	}
	bool pairs = withvalues && x->reply->proto >= 3; /* RESP3: [field, value] arrays */
	resp_add_array(x->reply, withvalues && !pairs ? 2 * picked.n : picked.n);
	for (size_t i = 0; i < picked.n; i++) {
		size_t len, vlen;
		const uint8_t *v;
		const uint8_t *p = cmd_elems_at(&picked, i, &len, &v, &vlen);
		if (pairs)
			resp_add_array(x->reply, 2);
		resp_add_bulk(x->reply, p, len);
		if (withvalues)
			resp_add_bulk(x->reply, v, vlen);
	}
	cmd_elems_free(&picked);
}

/* ---- whole collections, streamed when large --------------------------- */

#define STREAM_MIN_ELEMS 8192      /* a collection this large is streamed */
#define STREAM_PART_ELEMS 4096     /* elements per part (at least) */
#define STREAM_BACKLOG (1u << 20)  /* unsent bytes past which the next part waits */
#define STREAM_WAIT_NS 1000000ULL  /* ... and is tried again this often */

struct dump_walk {
	struct resp_buf *out;
	uint64_t n;   /* elements written */
	bool keys, values;
};

static int dump_visit(void *arg, const uint8_t *e, size_t elen, const uint8_t *v, size_t vlen)
{
	struct dump_walk *d = arg;
	if (d->keys)
		resp_add_bulk(d->out, e, elen);
	if (d->values)
		resp_add_bulk(d->out, v, vlen);
	d->n++;
	return 0;
}

/* The header of `n` elements. */
static void dump_header(struct resp_buf *b, uint64_t n, bool keys, bool values, bool as_set)
{
	if (keys && values)
		resp_add_map(b, n);
	else if (as_set)
		resp_add_set(b, n);
	else
		resp_add_array(b, n);
}

/* Replaces the header at [at, body) of b with one of `n` elements, moving
 * the elements after it. */
static void dump_fix_header(struct resp_buf *b, size_t at, size_t body, uint64_t n, bool keys,
                            bool values, bool as_set)
{
	struct resp_buf h;
	resp_buf_init(&h, b->proto);
	dump_header(&h, n, keys, values, as_set); /* fits h's inline bytes */
	size_t tail = b->len - body;
	if (h.len > body - at)
		resp_buf_append(b, h.data, h.len - (body - at)); /* room to grow into */
	memmove(b->data + at + h.len, b->data + body, tail);
	memcpy(b->data + at, h.data, h.len);
	b->len = at + h.len + tail;
	resp_buf_free(&h);
}

static void stream_resume(struct cmd_ctx *x)
{
	store_call_resume(x->st, &x->sr);
}

static void stream_wait_tick(struct px *px, struct px_timer *timer);

/* On the origin: the part goes out; the walk goes on once the client has
 * read most of what it was sent (a slow reader paces it; one that left
 * cancels it). */
static void stream_deliver(struct cmd_ctx *x)
{
	size_t pending = conn_req_stream(x->req, &x->u.stream.part);
	if (pending == SIZE_MAX)
		x->u.stream.cancel = true;
	else if (pending > STREAM_BACKLOG) {
		px_timer_start(px_current(), &x->u.stream.wait, STREAM_WAIT_NS, 0, stream_wait_tick);
		return;
	}
	cmd_run_on_px(x, shard_proactor_of(x), stream_resume);
}

static void stream_wait_tick(struct px *px, struct px_timer *timer)
{
	(void)px;
	stream_deliver(container_of(timer, struct cmd_ctx, u.stream.wait));
}

static void stream_part_msg(void *arg)
{
	stream_deliver(arg);
}

void cmd_coll_dump(struct cmd_ctx *x, struct store_txn *t, int exists, bool keys, bool values,
                   bool as_set)
{
	struct store_key_info k;
	store_txn_key(t, 0, &k);
	uint64_t next;
	if (!x->u.stream.active) {
		if (!exists || k.count < STREAM_MIN_ELEMS || x->exec != NULL) {
			/* Small: built whole, in place after a header of the count
			 * the metadata gives, which the walk's own count replaces
			 * if they differ (the reply cannot disagree with itself). */
			struct resp_buf *r = x->reply;
			size_t at = r->len;
			uint64_t count = exists ? k.count : 0;
			dump_header(r, count, keys, values, as_set);
			size_t body = r->len;
			struct dump_walk d = {.out = r, .keys = keys, .values = values};
			if (exists && store_txn_scan(t, 0, 0, SIZE_MAX, dump_visit, &d, &next) < 0) {
				r->len = at;
				return;
			}
			if (d.n != count)
				dump_fix_header(r, at, body, d.n, keys, values, as_set);
			return;
		}
		x->u.stream.active = true;
		x->u.stream.remaining = k.count;
		x->u.stream.cursor = 0;
		resp_buf_init(&x->u.stream.part, x->reply->proto);
		dump_header(&x->u.stream.part, k.count, keys, values, as_set);
	}
	if (x->u.stream.cancel) {
		resp_buf_free(&x->u.stream.part);
		return; /* nobody reads the rest */
	}
	struct dump_walk d = {.out = &x->u.stream.part, .keys = keys, .values = values};
	if (store_txn_scan(t, 0, x->u.stream.cursor, STREAM_PART_ELEMS, dump_visit, &d, &next) < 0) {
		resp_buf_free(&x->u.stream.part);
		return;
	}
	x->u.stream.remaining -= d.n < x->u.stream.remaining ? d.n : x->u.stream.remaining;
	x->u.stream.cursor = next;
	if (next != 0) {
		store_txn_pause(t);
		px_send(px_current(), x->origin, stream_part_msg, x);
		return;
	}
	/* The last part is the reply's end, finished as any reply. */
	if (x->u.stream.remaining != 0)
		LOG_ERROR("a streamed reply announced %" PRIu64 " more elements than the"
		          " collection had: the client will wait for them",
		          x->u.stream.remaining);
	resp_buf_append(x->reply, x->u.stream.part.data, x->u.stream.part.len);
	resp_buf_free(&x->u.stream.part);
}

/* ---- HSCAN SSCAN ------------------------------------------------------- */

struct coll_scan {
	struct cmd_ctx *x;
	struct resp_buf items;
	size_t n;
	bool values;
};

static int coll_scan_visit(void *arg, const uint8_t *e, size_t elen, const uint8_t *v,
                           size_t vlen)
{
	struct coll_scan *s = arg;
	struct cmd_ctx *x = s->x;
	if (x->u.cscan.pattern != NULL &&
	    !cmd_glob_match(x->u.cscan.pattern, x->u.cscan.pattern_len, e, elen, false))
		return 0;
	resp_add_bulk(&s->items, e, elen);
	if (s->values)
		resp_add_bulk(&s->items, v, vlen);
	s->n += s->values ? 2 : 1; /* the reply's elements: a field and its value */
	return 0;
}

static void coll_scan_call(struct store_req *sr, struct store_txn *t)
{
	struct cmd_ctx *x = cmd_of_sr(sr);
	int exists = cmd_coll_type_or_refuse(x, t, x->u.cscan.type);
	if (exists < 0)
		return;
	if (!exists) { /* Redis: a missing key answers before the options are read */
		resp_add_array(x->reply, 2);
		resp_add_bulk_str(x->reply, "0");
		resp_add_array(x->reply, 0);
		return;
	}
	const char *err = cmd_scan_options(x, 3, false, &x->u.cscan.pattern,
	                                   &x->u.cscan.pattern_len, &x->u.cscan.count, NULL);
	if (err != NULL) {
		cmd_call_refuse(x, t, err);
		return;
	}
	struct store_key_info k;
	store_txn_key(t, 0, &k);
	struct coll_scan s = {.x = x, .values = x->u.cscan.type == FMT_TYPE_HASH};
	resp_buf_init(&s.items, x->reply->proto);
	/* A compact collection (listpack, intset) is returned whole in one call,
	 * cursor 0, as Redis does; a large one COUNT at a time. */
	bool whole = !(k.enc & FMT_ENC_BIG);
	uint64_t next = 0, from = whole ? 0 : x->u.cscan.cursor;
	if (store_txn_scan(t, 0, from, whole ? SIZE_MAX : x->u.cscan.count, coll_scan_visit, &s,
	                   &next) < 0) {
		resp_buf_free(&s.items);
		return;
	}
	resp_add_array(x->reply, 2);
	resp_add_bulk_int(x->reply, whole ? 0 : (int64_t)next); /* a 32-bit hash: fits */
	resp_add_array(x->reply, s.n);
	resp_buf_append(x->reply, s.items.data, s.items.len);
	resp_buf_free(&s.items);
}

void cmd_coll_scan(struct cmd_ctx *x, uint8_t type)
{
	if (cmd_scan_cursor_or_fail(x, 2, &x->u.cscan.cursor) < 0)
		return;
	x->u.cscan.type = type;
	cmd_call(x, coll_scan_call);
}
