/* store_txn: calls (store.h, "calls") — a request that heads the queue of
 * each of its keys runs a function over them, synchronously, through the
 * store_txn_* functions; what it changed is appended as one group.
 *
 * A call changes the kentries it touches at once (its own reads see its
 * writes), after saving each one's state the first time (its row, below).
 * When the call returns, every row whose state differs from the saved one
 * becomes a record: the keys' metadata first, then the elements, all in one
 * commit (log_reserve) — so the index, which takes records in LSN order,
 * never holds an element of a collection whose metadata it has not got
 * (index.h, "Garbage"), and recovery applies the whole group or none of it.
 * If the call fails, or the group cannot be appended, every row gets its
 * saved state back and nothing was written.
 *
 * A key's row is a collection's metadata, or a string put whole by
 * store_txn_put_string (RENAME and COPY of a string: its value was read
 * before the call, as a call cannot wait for the log); its record is the
 * string's PUT, in the log like any other.
 *
 * Element kentries a call uses are pinned until it ends.  An element whose
 * state differs from the index (changed by the call, or its write not yet in
 * the index) hangs on its key's list (kentry.elems), so a walk of the
 * collection (store_txn_scan) merges them with the index's rows.
 *
 * Whole copies: a collection of at most WHOLE_MAX elements, read whole
 * (HGETALL, SMEMBERS, a random pick, ...), or read again while its kentry
 * is cached and it has at most WHOLE_LOAD elements, keeps a copy of its
 * elements on its kentry (kentry.whole): every element as its index row has
 * it, in the index's order, behind the collection's version.  It is made by
 * a walk while no element of the collection differs from the index
 * (kentry.n_elems == 0), or empty by the call that creates the collection (a
 * new version has no rows yet, so that copy costs no walk), and from then on
 * follows every change a call makes (whole_patch: a new copy with the
 * element put or deleted; the row's saved state keeps the old one for a
 * rollback), so it answers reads, walks and the first look at an
 * element a call writes, instead of the index: a RocksDB seek per read costs
 * ten times a lookup in memory.  A collection grown past WHOLE_PATCH
 * elements drops its copy at its next change (a patch costs its size); a
 * new version of the key (deleted, expired, overwritten) ignores it.  A call
 * that read from a copy holds a reference to it until it ends (txn.held), so
 * what it got stays valid after a patch.
 *
 * Samples: SPOP takes its element from the key's sample (kentry.sample):
 * up to SAMPLE_MAX elements read by one walk (all of a collection that
 * small), of which each pop removes one at random, so a pop costs a seek of
 * the index once per SAMPLE_MAX pops instead of once per pop — Redis's SPOP
 * costs a lookup in memory.  The first walk starts at a random hash, each
 * next one where the last ended: a window that was popped is deleted rows
 * until the index batch and compactions are through with them, which a
 * walk from a random hash would cross again and again (a set popped empty
 * made its pops ten times slower towards the end).  Every entry is a
 * current element with its current value: a call that deletes an element
 * or changes a value, deletes or overwrites the key, or rolls back drops
 * the sample (an element added meanwhile is only not in it), so a pop
 * trusts an entry without reading the element's row.  As a random pick it
 * is as fair as the hashes are spread; pops from one sample come from one
 * window of hashes, which says nothing about the elements themselves.
 *
 * Versions: a collection created by a call gets version (the LSN the log
 * gives next) << 16 | (the call's creations so far).  A call that writes
 * anything advances the next LSN, so no later call can hand out a version
 * again, across restarts too; a call that writes nothing may, but its
 * versions reached neither the log nor the index.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "storage/crc32c.h"
#include "storage/store_int.h"

#define TXN_VERSION_SHIFT 16 /* collections a call may create: 65536 */
#define TXN_INLINE 8         /* rows, pins and records a call keeps without malloc */
#define SCAN_PENDING_MAX 64  /* a walk applies the index batch first beyond this */
#define WHOLE_MAX 512        /* collections up to this size keep a whole copy */
#define WHOLE_LOAD 64        /* ... made by any read up to this size */
#define WHOLE_PATCH 64       /* ... and kept through changes up to this size */
#define WHOLE_HEAD 12        /* a copy: be64 version, be32 elements */
#define WHOLE_ENTRY_HEAD 12  /* an element: be32 hash, be32 length, be32 value length */

#define SAMPLE_MAX        256   /* elements of a sample (SPOP) */
#define SAMPLE_BYTES      16384 /* ... and their bytes, at most about */
#define SAMPLE_ENTRY_HEAD 8     /* a sample's element: be32 length, be32 value length */

/* A row's state as the call found it. */
struct kstate {
	bool known, exists, is_inline;
	uint8_t type, enc;
	uint64_t expiry_ms, version, count;
	uint32_t value_len;
	struct blob *value; /* a reference */
	struct blob *whole; /* a reference */
	struct log_pos pos;
};

/* A row the call changed: its kentry and its state before. */
struct txn_row {
	struct kentry *ke;
	struct kstate before;
	struct kentry *key; /* an element: its key's kentry; a key: itself */
};

struct store_txn {
	struct store *st;
	struct store_req *req;
	size_t nkeys;
	struct kentry **keys; /* by key index; a repeated key: the same kentry */
	struct txn_row *rows; /* row_inline until it outgrows it */
	size_t n_rows, cap_rows;
	struct kentry **pinned; /* elements used: pinned until the call ends */
	size_t n_pinned, cap_pinned;
	struct txn_row row_inline[TXN_INLINE];
	struct kentry *pinned_inline[TXN_INLINE];
	struct blob **held;    /* by key index: the whole copy read from, referenced */
	uint64_t cold;         /* keys 0..63 the call had to load (not cached) */
	struct blob *held_few[TXN_INLINE];
	uint32_t stamp;        /* kentry.stamp of the rows pinned by this call */
	uint64_t version_base; /* (next LSN) << TXN_VERSION_SHIFT */
	uint32_t created;      /* collections created so far */
	int error;             /* < 0: the call failed */
	bool aborted;          /* abort: nothing is written */
	bool paused;           /* store_txn_pause: run the call again later */
};

/* ---- rows and undo ------------------------------------------------------ */

static void kstate_save(struct kstate *s, const struct kentry *ke)
{
	*s = (struct kstate){.known = ke->known,
	                     .exists = ke->exists,
	                     .is_inline = ke->is_inline,
	                     .type = ke->type,
	                     .enc = ke->enc,
	                     .expiry_ms = ke->expiry_ms,
	                     .version = ke->version,
	                     .count = ke->count,
	                     .value_len = ke->value_len,
	                     .value = st_blob_ref(ke->value),
	                     .whole = st_blob_ref(ke->whole),
	                     .pos = ke->pos};
}

/* Puts the saved state back (the reference to its value moves back too). */
static void kstate_restore(struct store *st, struct kentry *ke, struct kstate *s)
{
	st_blob_unref(ke->value);
	ke->known = s->known;
	ke->exists = s->exists;
	ke->is_inline = s->is_inline;
	ke->type = s->type;
	ke->enc = s->enc;
	ke->expiry_ms = s->expiry_ms;
	ke->version = s->version;
	ke->count = s->count;
	ke->value_len = s->value_len;
	ke->value = s->value;
	ke->pos = s->pos;
	s->value = NULL;
	st_blob_unref(ke->whole);
	ke->whole = s->whole;
	s->whole = NULL;
	free(ke->sample); /* (it may hold what the call added: see "Samples") */
	ke->sample = NULL;
	st_kentry_charge(st, ke);
}

static void fail(struct store_txn *t, int err)
{
	if (t->error == 0)
		t->error = err;
}

/* Saves ke's state before its first change in the call.  Returns 0 or
 * -ENOMEM (the call then fails). */
static int row_save(struct store_txn *t, struct kentry *ke, struct kentry *key)
{
	if (ke->stamp == t->stamp && ke->txn_row != 0)
		return 0;
	if (t->n_rows == t->cap_rows) {
		size_t cap = 2 * t->cap_rows;
		struct txn_row *r = malloc(cap * sizeof(*r));
		if (r == NULL) {
			fail(t, -ENOMEM);
			return -ENOMEM;
		}
		memcpy(r, t->rows, t->n_rows * sizeof(*r));
		if (t->rows != t->row_inline)
			free(t->rows);
		t->rows = r;
		t->cap_rows = cap;
	}
	struct txn_row *r = &t->rows[t->n_rows++];
	r->ke = ke;
	r->key = key;
	kstate_save(&r->before, ke);
	ke->stamp = t->stamp;
	ke->txn_row = (uint32_t)t->n_rows;
	return 0;
}

/* Pins an element for the rest of the call.  Returns 0 or -ENOMEM. */
static int pin(struct store_txn *t, struct kentry *e)
{
	if (e->stamp == t->stamp)
		return 0;
	if (t->n_pinned == t->cap_pinned) {
		size_t cap = 2 * t->cap_pinned;
		struct kentry **p = malloc(cap * sizeof(*p));
		if (p == NULL) {
			fail(t, -ENOMEM);
			return -ENOMEM;
		}
		memcpy(p, t->pinned, t->n_pinned * sizeof(*p));
		if (t->pinned != t->pinned_inline)
			free(t->pinned);
		t->pinned = p;
		t->cap_pinned = cap;
	}
	e->stamp = t->stamp;
	e->txn_row = 0;
	e->pins++;
	t->pinned[t->n_pinned++] = e;
	return 0;
}

/* ---- whole copies ------------------------------------------------------- */

static bool is_coll_live(const struct kentry *ke)
{
	return st_key_live(ke) && st_is_coll(ke);
}

/* The element hash of element kentry e (its ident's bytes 17 + n). */
static uint32_t elem_hash_of(const struct kentry *e, size_t klen)
{
	return fmt_get_be32(e->key + FMT_ELEM_IDENT_HEAD - 4 + klen);
}

static void whole_drop(struct store *st, struct kentry *ke)
{
	if (ke->whole == NULL)
		return;
	st_blob_unref(ke->whole);
	ke->whole = NULL;
	st_kentry_charge(st, ke);
}

static void sample_drop(struct store *st, struct kentry *ke)
{
	if (ke->sample == NULL)
		return;
	free(ke->sample);
	ke->sample = NULL;
	st_kentry_charge(st, ke);
}

/* A sample all popped keeps only where the next one's walk starts. */
static void sample_spent(struct store *st, struct kentry *ke)
{
	struct st_sample *sm = realloc(ke->sample, sizeof(*sm));
	if (sm == NULL)
		return; /* (kept whole: it still says where to go on) */
	sm->len = 0;
	sm->off = NULL;
	ke->sample = sm;
	st_kentry_charge(st, ke);
}

/* The copy of collection ke, when it is of its version; NULL otherwise. */
static const struct blob *whole_of(const struct kentry *ke)
{
	const struct blob *w = ke->whole;
	if (w == NULL || !is_coll_live(ke) || fmt_get_be64(w->data) != ke->version)
		return NULL;
	return w;
}

/* The key index k's copy, referenced by the call until it ends. */
static const struct blob *whole_hold(struct store_txn *t, size_t k)
{
	const struct blob *w = whole_of(t->keys[k]);
	if (w != NULL && t->held[k] != w) {
		st_blob_unref(t->held[k]);
		t->held[k] = st_blob_ref(t->keys[k]->whole);
	}
	return w;
}

/* A copy being made: the rows of a walk, appended in order. */
struct whole_build {
	uint8_t *buf;
	size_t len, cap;
	uint32_t n;
	bool failed; /* out of memory: no copy */
};

static void build_add(struct whole_build *b, const uint8_t *elem, size_t elen,
                      const uint8_t *value, size_t vlen, uint32_t hash)
{
	size_t need = b->len + WHOLE_ENTRY_HEAD + elen + vlen;
	if (b->failed)
		return;
	if (need > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1024;
		while (cap < need)
			cap *= 2;
		uint8_t *p = realloc(b->buf, cap);
		if (p == NULL) {
			b->failed = true;
			return;
		}
		b->buf = p;
		b->cap = cap;
	}
	uint8_t *p = b->buf + b->len;
	fmt_put_be32(p, hash);
	fmt_put_be32(p + 4, (uint32_t)elen);
	fmt_put_be32(p + 8, (uint32_t)vlen);
	if (elen)
		memcpy(p + WHOLE_ENTRY_HEAD, elem, elen);
	if (vlen)
		memcpy(p + WHOLE_ENTRY_HEAD + elen, value, vlen);
	b->len = need;
	b->n++;
}

/* Makes the built rows ke's copy (they were all of its elements). */
static void build_finish(struct store *st, struct kentry *ke, struct whole_build *b)
{
	if (!b->failed && b->n == ke->count) {
		struct blob *w = st_blob_alloc(WHOLE_HEAD + b->len);
		if (w != NULL) {
			w->refs = 1;
			w->len = (uint32_t)(WHOLE_HEAD + b->len);
			fmt_put_be64(w->data, ke->version);
			fmt_put_be32(w->data + 8, b->n);
			if (b->len)
				memcpy(w->data + WHOLE_HEAD, b->buf, b->len);
			st_blob_unref(ke->whole);
			ke->whole = w;
			st_kentry_charge(st, ke);
		}
	}
	free(b->buf);
}

/* Walks copy w from the first element whose hash is >= from: fn as for
 * store_txn_scan, at least `max` of them and whole runs of equal hashes;
 * *next is the hash to go on from, 0 at the end. */
static int whole_walk(const struct blob *w, uint32_t from, size_t max, store_elem_fn fn,
                      void *arg, uint64_t *next)
{
	const uint8_t *p = w->data + WHOLE_HEAD, *end = w->data + w->len;
	size_t delivered = 0;
	uint32_t last = 0;
	*next = 0;
	while (p < end) {
		uint32_t h = fmt_get_be32(p), elen = fmt_get_be32(p + 4), vlen = fmt_get_be32(p + 8);
		const uint8_t *elem = p + WHOLE_ENTRY_HEAD;
		p += WHOLE_ENTRY_HEAD + elen + vlen;
		if (h < from)
			continue;
		if (delivered >= max && h != last) {
			*next = h;
			return 0;
		}
		last = h;
		delivered++;
		int r = fn(arg, elem, elen, elem + elen, vlen);
		if (r != 0)
			return r;
	}
	return 0;
}

/* Finds (elem, elen) in copy w: 0 with its value, or -ENOENT. */
static int whole_find(const struct blob *w, const void *elem, size_t elen, const uint8_t **v,
                      size_t *vlen)
{
	uint32_t hash = crc32c(0, elem, elen);
	const uint8_t *p = w->data + WHOLE_HEAD, *end = w->data + w->len;
	while (p < end) {
		uint32_t h = fmt_get_be32(p), el = fmt_get_be32(p + 4), vl = fmt_get_be32(p + 8);
		if (h > hash)
			break;
		if (h == hash && el == elen && memcmp(p + WHOLE_ENTRY_HEAD, elem, elen) == 0) {
			*v = p + WHOLE_ENTRY_HEAD + el;
			*vlen = vl;
			return 0;
		}
		p += WHOLE_ENTRY_HEAD + el + vl;
	}
	return -ENOENT;
}

/* Element e of collection ke has just changed (put or deleted): ke's copy,
 * if it has one of its version, is replaced by one with the change (or
 * dropped past WHOLE_PATCH elements, or when out of memory). */
static void whole_patch(struct store *st, struct kentry *ke, const struct kentry *e)
{
	const struct blob *w = whole_of(ke);
	if (w == NULL || ke->count > WHOLE_PATCH) {
		whole_drop(st, ke);
		return;
	}
	size_t klen = ke->key_len - FMT_KEY_IDENT_HEAD;
	const uint8_t *elem = e->key + FMT_ELEM_IDENT_HEAD + klen;
	size_t elen = e->key_len - FMT_ELEM_IDENT_HEAD - klen;
	uint32_t hash = elem_hash_of(e, klen);
	size_t vlen = e->exists ? e->value_len : 0;
	struct blob *nw = st_blob_alloc(w->len + WHOLE_ENTRY_HEAD + elen + vlen);
	if (nw == NULL) {
		whole_drop(st, ke);
		return;
	}
	/* The entries before e's place, e (if it exists), the entries after. */
	const uint8_t *p = w->data + WHOLE_HEAD, *end = w->data + w->len;
	uint8_t *q = nw->data + WHOLE_HEAD;
	uint32_t n = 0;
	bool placed = false;
	while (p < end || !placed) {
		uint32_t h = 0, el = 0, vl = 0;
		int c = 1; /* the entry at p against e: > 0 once past e's place */
		if (p < end) {
			h = fmt_get_be32(p), el = fmt_get_be32(p + 4), vl = fmt_get_be32(p + 8);
			c = h != hash ? (h > hash ? 1 : -1) : 0;
			if (c == 0) {
				int m = memcmp(p + WHOLE_ENTRY_HEAD, elem, el < elen ? el : elen);
				c = m != 0 ? m : (el > elen) - (el < elen);
			}
		}
		if (c >= 0 && !placed) {
			placed = true;
			if (e->exists) {
				fmt_put_be32(q, hash);
				fmt_put_be32(q + 4, (uint32_t)elen);
				fmt_put_be32(q + 8, (uint32_t)vlen);
				if (elen)
					memcpy(q + WHOLE_ENTRY_HEAD, elem, elen);
				if (vlen)
					memcpy(q + WHOLE_ENTRY_HEAD + elen, e->value->data, vlen);
				q += WHOLE_ENTRY_HEAD + elen + vlen;
				n++;
			}
			if (c == 0) { /* e's old entry: replaced */
				p += WHOLE_ENTRY_HEAD + el + vl;
				continue;
			}
		}
		if (p >= end)
			break;
		size_t sz = WHOLE_ENTRY_HEAD + el + vl;
		memcpy(q, p, sz);
		q += sz;
		p += sz;
		n++;
	}
	nw->refs = 1;
	nw->len = (uint32_t)(q - nw->data);
	fmt_put_be64(nw->data, ke->version);
	fmt_put_be32(nw->data + 8, n);
	st_blob_unref(ke->whole); /* (a call that read it holds its own reference) */
	ke->whole = nw;
	st_kentry_charge(st, ke);
}

/* ---- the element list of a key ------------------------------------------ */

/* True if hash h is within key ke's bound of its listed elements' hashes: an
 * arc of the circle of hashes, from elems_lo up to elems_hi (wrapping). */
static bool elems_bound_has(const struct kentry *ke, uint32_t h)
{
	return (uint32_t)(h - ke->elems_lo) <= (uint32_t)(ke->elems_hi - ke->elems_lo);
}

void st_elem_link(struct store *st, struct kentry *parent, struct kentry *e)
{
	(void)st;
	if (e->parent != NULL)
		return;
	uint32_t h = elem_hash_of(e, parent->key_len - FMT_KEY_IDENT_HEAD);
	if (parent->n_elems == 0)
		parent->elems_lo = parent->elems_hi = h;
	else if (!elems_bound_has(parent, h)) {
		/* The bound grows by the shorter way round (pops go up from
		 * where a sample began, and wrap: the bound follows them). */
		if ((uint32_t)(h - parent->elems_lo) <= (uint32_t)(parent->elems_hi - h))
			parent->elems_hi = h;
		else
			parent->elems_lo = h;
	}
	e->parent = parent;
	e->sib_prev = NULL;
	e->sib_next = parent->elems;
	if (parent->elems != NULL)
		parent->elems->sib_prev = e;
	parent->elems = e;
	parent->n_elems++;
}

void st_elem_unlink(struct store *st, struct kentry *e)
{
	struct kentry *parent = e->parent;
	if (parent == NULL) {
		st_kentry_release(st, e);
		return;
	}
	if (e->sib_prev != NULL)
		e->sib_prev->sib_next = e->sib_next;
	else
		parent->elems = e->sib_next;
	if (e->sib_next != NULL)
		e->sib_next->sib_prev = e->sib_prev;
	e->parent = e->sib_prev = e->sib_next = NULL;
	parent->n_elems--;
	if (whole_of(parent) != NULL && e->pending == 0 && e->pins == 0) {
		st_kentry_drop(st, e); /* the copy has it: no need to cache it twice */
		st_kentry_release(st, parent);
		return;
	}
	/* Both at once: releasing one alone could evict (free) the other. */
	st_kentry_release2(st, parent, e);
}

/* ---- reading ------------------------------------------------------------ */

void store_txn_key(struct store_txn *t, size_t k, struct store_key_info *out)
{
	const struct kentry *ke = t->keys[k];
	bool live = st_key_live(ke);
	*out = (struct store_key_info){.exists = live,
	                               .type = live ? ke->type : FMT_TYPE_STRING,
	                               .enc = live ? ke->enc : 0,
	                               .count = live ? ke->count : 0,
	                               .expiry_ms = live ? ke->expiry_ms : 0,
	                               .value_len = live ? ke->value_len : 0};
}

/* The element ident of (key ke, elem) in st->ident; returns its length, or 0
 * when the element is too long. */
static size_t elem_ident(struct store *st, const struct kentry *ke, const void *elem, size_t elen)
{
	if (elen > FMT_ELEM_MAX)
		return 0;
	return fmt_elem_ident(st->ident, st_ident_db(ke->key), ke->key + FMT_KEY_IDENT_HEAD,
	                      ke->key_len - FMT_KEY_IDENT_HEAD, ke->version, elem, elen);
}

/* The element's kentry, pinned (maybe not known); NULL when the call failed. */
static struct kentry *elem_pin(struct store_txn *t, struct kentry *ke, const void *elem,
                               size_t elen)
{
	struct store *st = t->st;
	size_t len = elem_ident(st, ke, elem, elen);
	if (len == 0) {
		fail(t, -E2BIG);
		return NULL;
	}
	struct kentry *e = st_kentry_get(st, st->ident, len);
	if (e == NULL || pin(t, e) < 0) {
		fail(t, -ENOMEM);
		return NULL;
	}
	return e;
}

/* Makes element e known, existing with the value its index row has (read
 * from a whole copy or a sample).  Returns 0, or -1 when the call failed. */
static int elem_set_row(struct store_txn *t, struct kentry *e, const uint8_t *v, size_t vlen)
{
	struct blob *b = st_blob_new(v, vlen);
	if (b == NULL) {
		fail(t, -ENOMEM);
		return -1;
	}
	e->value = b;
	e->value_len = (uint32_t)vlen;
	e->exists = true;
	e->is_inline = true;
	e->type = FMT_TYPE_STRING;
	e->expiry_ms = 0;
	e->idx_expiry_ms = 0;
	e->idx_ptr = false;
	e->known = true;
	st_kentry_charge(t->st, e);
	return 0;
}

/* The element's kentry, known and pinned; NULL when the call failed. */
static struct kentry *elem_get(struct store_txn *t, struct kentry *ke, const void *elem,
                               size_t elen)
{
	struct store *st = t->st;
	struct kentry *e = elem_pin(t, ke, elem, elen);
	if (e == NULL || e->known)
		return e;
	if (ke->version >= t->version_base) {
		st_kentry_set_absent(e); /* created by this call: nothing stored yet */
		return e;
	}
	const struct blob *w = whole_of(ke);
	if (w != NULL) { /* (an element the key table does not know: as the index has it) */
		const uint8_t *v;
		size_t vlen;
		if (whole_find(w, elem, elen, &v, &vlen) < 0) {
			st_kentry_set_absent(e);
			return e;
		}
		return elem_set_row(t, e, v, vlen) == 0 ? e : NULL;
	}
	st->stats.elem_reads++;
	int ret = st_kentry_load(st, e);
	if (ret < 0) {
		fail(t, ret);
		return NULL;
	}
	return e;
}

/* A walk that only makes the copy. */
static int whole_load_visit(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
                            size_t vlen)
{
	(void)arg, (void)elem, (void)elen, (void)value, (void)vlen;
	return 0;
}

int store_txn_get(struct store_txn *t, size_t k, const void *elem, size_t elen,
                  const uint8_t **v, size_t *vlen)
{
	struct kentry *ke = t->keys[k];
	if (t->error < 0)
		return t->error;
	if (!is_coll_live(ke))
		return -ENOENT;
	if (elen > FMT_ELEM_MAX)
		return -ENOENT; /* too long to have been stored */
	/* A copy for point reads only of a collection read again while cached:
	 * a cold one costs a seek for the copy where the element costs a get. */
	bool warm = k < 64 && !(t->cold & (1ull << k));
	if (warm && ke->whole == NULL && ke->n_elems == 0 && ke->count <= WHOLE_LOAD &&
	    ke->version < t->version_base) {
		uint64_t next;
		int ret = store_txn_scan(t, k, 0, SIZE_MAX, whole_load_visit, NULL, &next);
		if (ret < 0)
			return ret;
	}
	const struct blob *w = whole_hold(t, k);
	if (w != NULL)
		return whole_find(w, elem, elen, v, vlen);
	struct kentry *e = elem_get(t, ke, elem, elen);
	if (e == NULL)
		return t->error;
	if (!e->exists)
		return -ENOENT;
	*v = e->value != NULL ? e->value->data : (const uint8_t *)"";
	*vlen = e->value_len;
	return 0;
}

/* ---- changing ----------------------------------------------------------- */

int store_txn_put(struct store_txn *t, size_t k, uint8_t type, const void *elem, size_t elen,
                  const void *value, size_t vlen)
{
	struct store *st = t->st;
	struct kentry *ke = t->keys[k];
	if (t->error < 0 || t->aborted)
		return t->error < 0 ? t->error : -ECANCELED;
	if (row_save(t, ke, ke) < 0)
		return t->error;
	if (!st_key_live(ke)) {
		/* A new collection (over nothing, or over an expired key whose
		 * elements stay behind as garbage under their old version). */
		if (t->created >= (1u << TXN_VERSION_SHIFT)) {
			fail(t, -E2BIG);
			return t->error;
		}
		st_blob_unref(ke->value);
		ke->value = NULL;
		ke->value_len = 0;
		whole_drop(st, ke);
		sample_drop(st, ke);
		ke->exists = true;
		ke->known = true;
		ke->type = type;
		ke->enc = 0;
		ke->count = 0;
		ke->expiry_ms = 0;
		ke->is_inline = true;
		ke->version = t->version_base | t->created++;
		struct whole_build none = {0}; /* its copy: empty, no row of the new
		                                  version can be in the index */
		build_finish(st, ke, &none);
	}
	struct kentry *e = elem_get(t, ke, elem, elen);
	if (e == NULL)
		return t->error;
	if (e->exists && e->value_len == vlen &&
	    (vlen == 0 || (e->value != NULL && memcmp(e->value->data, value, vlen) == 0)))
		return 0; /* the same value: nothing to write (a set member added again) */
	if (row_save(t, e, ke) < 0)
		return t->error;
	struct blob *b = st_blob_new(value, vlen);
	if (b == NULL) {
		fail(t, -ENOMEM);
		return t->error;
	}
	int added = !e->exists;
	if (!added)
		sample_drop(st, ke); /* (its entry may have the old value) */
	st_blob_unref(e->value);
	e->value = b;
	e->value_len = (uint32_t)vlen;
	e->exists = true;
	e->is_inline = true;
	st_kentry_charge(st, e);
	st_elem_link(st, ke, e);
	ke->count += (uint64_t)added;
	whole_patch(st, ke, e);
	return added;
}

/* Deletes element e (existing) of collection ke; returns 1 or < 0. */
static int elem_remove(struct store_txn *t, struct kentry *ke, struct kentry *e)
{
	struct store *st = t->st;
	if (row_save(t, ke, ke) < 0 || row_save(t, e, ke) < 0)
		return t->error;
	st_blob_unref(e->value);
	e->value = NULL;
	e->value_len = 0;
	e->exists = false;
	st_kentry_charge(st, e);
	st_elem_link(st, ke, e);
	ke->count--;
	whole_patch(st, ke, e);
	return 1;
}

int store_txn_del(struct store_txn *t, size_t k, const void *elem, size_t elen)
{
	struct kentry *ke = t->keys[k];
	if (t->error < 0 || t->aborted)
		return t->error < 0 ? t->error : -ECANCELED;
	if (!is_coll_live(ke) || elen > FMT_ELEM_MAX)
		return 0;
	struct kentry *e = elem_get(t, ke, elem, elen);
	if (e == NULL)
		return t->error;
	if (!e->exists)
		return 0;
	sample_drop(t->st, ke);
	return elem_remove(t, ke, e);
}

int store_txn_delete_key(struct store_txn *t, size_t k)
{
	struct kentry *ke = t->keys[k];
	if (t->error < 0 || t->aborted)
		return t->error < 0 ? t->error : -ECANCELED;
	if (!st_key_live(ke))
		return 0;
	if (row_save(t, ke, ke) < 0)
		return t->error;
	st_blob_unref(ke->value);
	ke->value = NULL;
	ke->value_len = 0;
	whole_drop(t->st, ke);
	sample_drop(t->st, ke);
	ke->exists = false;
	ke->type = FMT_TYPE_STRING;
	ke->count = 0;
	ke->enc = 0;
	ke->expiry_ms = 0;
	st_kentry_charge(t->st, ke);
	return 1;
}

int store_txn_put_string(struct store_txn *t, size_t k, const void *value, size_t vlen,
                         uint64_t expiry_ms)
{
	struct store *st = t->st;
	struct kentry *ke = t->keys[k];
	if (t->error < 0 || t->aborted)
		return t->error < 0 ? t->error : -ECANCELED;
	if (vlen > FMT_VALUE_MAX) {
		fail(t, -E2BIG);
		return t->error;
	}
	if (row_save(t, ke, ke) < 0)
		return t->error;
	struct blob *b = st_blob_new(value, vlen);
	if (b == NULL) {
		fail(t, -ENOMEM);
		return t->error;
	}
	st_blob_unref(ke->value);
	whole_drop(st, ke);
	sample_drop(st, ke);
	ke->value = b;
	ke->value_len = (uint32_t)vlen;
	ke->exists = true;
	ke->known = true;
	ke->type = FMT_TYPE_STRING;
	ke->enc = 0;
	ke->count = 0;
	ke->expiry_ms = expiry_ms;
	ke->is_inline = vlen <= st->cfg.inline_max;
	st_kentry_charge(st, ke);
	return 0;
}

int store_txn_expire(struct store_txn *t, size_t k, uint64_t expiry_ms)
{
	struct kentry *ke = t->keys[k];
	if (t->error < 0 || t->aborted)
		return t->error < 0 ? t->error : -ECANCELED;
	if (!is_coll_live(ke))
		return 0;
	if (ke->expiry_ms != expiry_ms) {
		if (row_save(t, ke, ke) < 0)
			return t->error;
		ke->expiry_ms = expiry_ms;
	}
	return 1;
}

void store_txn_touch(struct store_txn *t, size_t k)
{
	st_touch(t->st, t->keys[k]);
}

void store_txn_mark(struct store_txn *t, size_t k, uint8_t enc)
{
	struct kentry *ke = t->keys[k];
	if (t->error < 0 || t->aborted || !is_coll_live(ke) || (ke->enc | enc) == ke->enc)
		return;
	if (row_save(t, ke, ke) == 0)
		ke->enc |= enc;
}

void store_txn_abort(struct store_txn *t)
{
	t->aborted = true;
}

void store_txn_pause(struct store_txn *t)
{
	t->paused = true;
}

void store_txn_abort_error(struct store_txn *t, int err)
{
	t->aborted = true;
	fail(t, err < 0 ? err : -EIO);
}

/* ---- walking a collection ----------------------------------------------- */

struct walk {
	struct store_txn *t;
	struct kentry *ke;        /* the collection's key */
	struct whole_build *build; /* the walk also makes the copy, or NULL */
	uint32_t mark;            /* kentry.mark of the elements visited from the index */
	store_elem_fn fn;
	void *arg;
	size_t max, delivered;    /* elements to give fn at least; given so far */
	uint32_t last_hash;       /* of the last element given */
	bool at_limit;            /* stopped at the first hash past `max` elements */
	int stopped;              /* fn's non-zero return */
	int error;                /* < 0: a failure */
};

/* An index row of the collection: its kentry, when known, is newer. */
static int walk_visit(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
                      size_t vlen, uint32_t hash)
{
	struct walk *w = arg;
	struct store *st = w->t->st;
	if (w->delivered >= w->max && hash != w->last_hash) {
		w->at_limit = true; /* (idx_elem_scan returns 1, next_hash = hash) */
		return 1;
	}
	if (w->build != NULL) /* (no element differs from the index: taken as it is) */
		build_add(w->build, elem, elen, value, vlen, hash);
	struct kentry *e = NULL;
	if (w->ke->n_elems > 0 && elems_bound_has(w->ke, hash)) {
		size_t len = fmt_elem_ident(st->ident2, st_ident_db(w->ke->key),
		                            w->ke->key + FMT_KEY_IDENT_HEAD,
		                            w->ke->key_len - FMT_KEY_IDENT_HEAD, w->ke->version,
		                            elem, elen);
		e = st_kentry_find(st, st->ident2, len);
	}
	if (e != NULL && e->known) {
		e->mark = w->mark;
		if (!e->exists)
			return 0;
		value = e->value != NULL ? e->value->data : (const uint8_t *)"";
		vlen = e->value_len;
	}
	w->delivered++;
	w->last_hash = hash;
	w->stopped = w->fn(w->arg, elem, elen, value, vlen);
	return w->stopped;
}

static int scan(struct store_txn *t, size_t k, uint64_t cursor, size_t max, store_elem_fn fn,
                void *arg, uint64_t *next, bool once);

int store_txn_scan(struct store_txn *t, size_t k, uint64_t cursor, size_t max, store_elem_fn fn,
                   void *arg, uint64_t *next)
{
	return scan(t, k, cursor, max, fn, arg, next, false);
}

/* store_txn_scan; `once`: a walk made once in many calls (a sample), which
 * merges the pending elements instead of applying them first. */
static int scan(struct store_txn *t, size_t k, uint64_t cursor, size_t max, store_elem_fn fn,
                void *arg, uint64_t *next, bool once)
{
	struct store *st = t->st;
	struct kentry *ke = t->keys[k];
	*next = 0;
	if (t->error < 0)
		return t->error;
	if (!is_coll_live(ke) || cursor > UINT32_MAX)
		return 0;
	const struct blob *whole = whole_hold(t, k);
	if (whole != NULL)
		return whole_walk(whole, (uint32_t)cursor, max, fn, arg, next);
	/* Elements whose writes the index has not got yet are merged with its
	 * rows, one by one; many of them (SPOP, SREM in a burst: the batch may
	 * hold 100 k keys) would make every walk a long one, so they go to the
	 * index first. */
	if (ke->n_elems > SCAN_PENDING_MAX && !once)
		st_apply_batch(st);
	size_t klen = ke->key_len - FMT_KEY_IDENT_HEAD;
	size_t plen = fmt_elem_prefix_len(klen);
	fmt_elem_ident(st->ident2, st_ident_db(ke->key), ke->key + FMT_KEY_IDENT_HEAD, klen,
	               ke->version, NULL, 0);
	uint8_t *prefix = malloc(plen);
	if (prefix == NULL) {
		fail(t, -ENOMEM);
		return t->error;
	}
	memcpy(prefix, st->ident2, plen);
	struct walk w = {.t = t, .ke = ke, .mark = ++st->stamp, .fn = fn, .arg = arg, .max = max};
	uint32_t next_hash = 0, from = (uint32_t)cursor;
	int ret = 0;
	/* A walk of all of a small collection that matches the index makes its
	 * copy as it goes. */
	struct whole_build build = {0};
	if (cursor == 0 && ke->n_elems == 0 && ke->count <= WHOLE_MAX && max >= ke->count &&
	    ke->version < t->version_base)
		w.build = &build;
	/* `max` counts the elements given to fn (walk_visit stops the walk at
	 * the first new hash past it): rows the key table knows to be deleted
	 * are walked past, in the same iterator. */
	if (ke->version < t->version_base) { /* (one this call created has no rows yet) */
		ret = idx_elem_scan(st->idx, prefix, plen, from, SIZE_MAX, walk_visit, &w,
		                    &next_hash);
		/* A sample's walk that found nothing while many elements wait
		 * for the index (a set just filled, or popped nearly empty): they
		 * go to it, and the walk again, rather than a walk of them all
		 * per sample. */
		if (ret == 0 && once && w.delivered == 0 && ke->n_elems > SCAN_PENDING_MAX) {
			st_apply_batch(st);
			w.mark = ++st->stamp;
			ret = idx_elem_scan(st->idx, prefix, plen, from, SIZE_MAX, walk_visit, &w,
			                    &next_hash);
		}
	}
	free(prefix);
	if (w.build != NULL) {
		if (ret == 0 && !w.stopped && ke->n_elems == 0)
			build_finish(st, ke, &build); /* (frees the rows) */
		else
			free(build.buf);
	}
	if (ret < 0) {
		fail(t, -EIO);
		return t->error;
	}
	if (w.stopped)
		return w.stopped;
	/* The elements the index does not have yet (or has older), in the same
	 * window of hashes: [cursor, next_hash), or to the end.  A sample may
	 * leave them out when it has others: the list may be a burst of pops'
	 * deletes, 100 k long. */
	for (struct kentry *e = once && w.delivered > 0 ? NULL : ke->elems; e != NULL;
	     e = e->sib_next) {
		if (e->mark == w.mark || !e->exists || !e->known ||
		    fmt_get_be64(e->key + 9 + klen) != ke->version)
			continue;
		uint32_t h = elem_hash_of(e, klen);
		if (h < cursor || (ret == 1 && h >= next_hash))
			continue;
		const uint8_t *elem = e->key + FMT_ELEM_IDENT_HEAD + klen;
		size_t elen = e->key_len - FMT_ELEM_IDENT_HEAD - klen;
		int r = fn(arg, elem, elen, e->value != NULL ? e->value->data : (const uint8_t *)"",
		           e->value_len);
		if (r != 0)
			return r;
	}
	*next = ret == 1 ? next_hash : 0;
	return 0;
}

/* ---- samples (SPOP) ----------------------------------------------------- */

/* A sample being read: the entries, and where the walk stops. */
struct sample_fill {
	struct whole_build b; /* (its hash field unused: entries as a sample has them) */
	size_t want;          /* SAMPLE_MAX, or all of a smaller collection */
	uint32_t stop_at;     /* the wrapped walk stops at this hash (where the first began) */
	uint32_t last;        /* full: it stopped at the element of this hash */
	bool wrapped;         /* the second walk, from hash 0 on */
	bool full;            /* it stopped at `want` or SAMPLE_BYTES */
};

static int sample_visit(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
                        size_t vlen)
{
	struct sample_fill *f = arg;
	if (f->wrapped && crc32c(0, elem, elen) >= f->stop_at)
		return 1; /* (the first walk has it) */
	build_add(&f->b, elem, elen, value, vlen, 0);
	if (f->b.failed)
		return 1;
	if (f->b.n < f->want && f->b.len < SAMPLE_BYTES)
		return 0;
	f->full = true;
	f->last = crc32c(0, elem, elen);
	return 1;
}

/* Reads key k's sample from hash `from` on, wrapping to the first element
 * (all of a collection of at most SAMPLE_MAX elements).  Returns 0 (the
 * sample may be empty if the collection is), or < 0: the call failed. */
static int sample_fill(struct store_txn *t, size_t k, uint32_t from)
{
	struct store *st = t->st;
	struct kentry *ke = t->keys[k];
	/* SAMPLE_MAX elements, or all of a smaller collection: the walk then
	 * stops at the last of them, not at the end (the rows pops left behind
	 * are deleted ones). */
	struct sample_fill f = {.stop_at = from,
	                        .want = ke->count < SAMPLE_MAX ? ke->count : SAMPLE_MAX};
	uint64_t next;
	int ret = scan(t, k, from, SAMPLE_MAX, sample_visit, &f, &next, true);
	if (ret == 0 && from > 0) {
		f.wrapped = true;
		ret = scan(t, k, 0, SAMPLE_MAX, sample_visit, &f, &next, true);
	}
	if (ret < 0 || f.b.failed) {
		free(f.b.buf);
		if (ret >= 0)
			fail(t, -ENOMEM);
		return t->error;
	}
	/* The offsets, then the entries (hash field dropped). */
	size_t offs = (size_t)f.b.n * sizeof(uint32_t);
	struct st_sample *sm = malloc(sizeof(*sm) + offs + f.b.len);
	if (sm == NULL) {
		free(f.b.buf);
		fail(t, -ENOMEM);
		return t->error;
	}
	sm->version = ke->version;
	sm->n = f.b.n;
	sm->off = (uint32_t *)sm->data;
	uint8_t *q = sm->data + offs;
	for (size_t p = 0, i = 0; p < f.b.len; i++) {
		uint32_t elen = fmt_get_be32(f.b.buf + p + 4), vlen = fmt_get_be32(f.b.buf + p + 8);
		size_t sz = SAMPLE_ENTRY_HEAD + elen + vlen;
		sm->off[i] = (uint32_t)(q - sm->data);
		memcpy(q, f.b.buf + p + 4, sz);
		q += sz;
		p += WHOLE_ENTRY_HEAD + elen + vlen;
	}
	sm->len = (uint32_t)(q - sm->data);
	/* The next walk goes on after this one (a window that was popped is
	 * all deleted rows, which a walk from a random hash would cross). */
	sm->next = f.full ? f.last + 1 : from;
	free(f.b.buf);
	sample_drop(st, ke);
	ke->sample = sm;
	st_kentry_charge(st, ke);
	return 0;
}

int store_txn_pop(struct store_txn *t, size_t k, uint64_t rnd, store_elem_fn fn, void *arg)
{
	struct store *st = t->st;
	struct kentry *ke = t->keys[k];
	if (t->error < 0 || t->aborted)
		return t->error < 0 ? t->error : -ECANCELED;
	if (!is_coll_live(ke))
		return 0;
	for (unsigned fills = 0;;) {
		struct st_sample *sm = ke->sample;
		if (sm == NULL || sm->n == 0 || sm->version != ke->version) {
			/* A collection that exists has an element: a second empty
			 * read says the store is wrong. */
			if (fills++ == 2) {
				fail(t, -EIO);
				return t->error;
			}
			bool goes_on = sm != NULL && sm->version == ke->version && fills == 1;
			if (sample_fill(t, k, goes_on ? sm->next : (uint32_t)rnd) < 0)
				return t->error;
			rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
			continue;
		}
		uint32_t i = (uint32_t)((rnd >> 32) % sm->n);
		const uint8_t *p = sm->data + sm->off[i];
		sm->off[i] = sm->off[--sm->n];
		uint32_t elen = fmt_get_be32(p), vlen = fmt_get_be32(p + 4);
		const uint8_t *elem = p + SAMPLE_ENTRY_HEAD, *value = elem + elen;
		struct kentry *e = elem_pin(t, ke, elem, elen);
		/* (an entry is as its row is: no read needed) */
		if (e == NULL || (!e->known && elem_set_row(t, e, value, vlen) < 0))
			return t->error;
		if (!e->exists) /* (cannot be: "Samples"; an entry gone is passed over) */
			continue;
		int r = fn(arg, elem, elen, value, vlen);
		if (r < 0) {
			fail(t, r);
			return t->error;
		}
		int ret = elem_remove(t, ke, e); /* (whole_patch leaves the sample alone) */
		if (ke->sample != NULL && ke->sample->n == 0)
			sample_spent(st, ke);
		return ret;
	}
}

/* ---- running a call ----------------------------------------------------- */

/* Gives every row its saved state back. */
static void rollback(struct store_txn *t)
{
	for (size_t i = t->n_rows; i-- > 0;)
		kstate_restore(t->st, t->rows[i].ke, &t->rows[i].before);
}

/* True if the row's state differs from the saved one in what the index
 * holds. */
static bool row_changed(const struct txn_row *r)
{
	const struct kentry *ke = r->ke;
	const struct kstate *b = &r->before;
	if (ke->exists != b->exists)
		return true;
	if (!ke->exists)
		return false;
	if (st_is_elem(ke) || ke->type == FMT_TYPE_STRING)
		return true; /* (a put: the value may be the same, the record is cheap;
		                a key's row is a string's only after store_txn_put_string) */
	return ke->type != b->type || ke->version != b->version || ke->count != b->count ||
	       ke->enc != b->enc || ke->expiry_ms != b->expiry_ms;
}

/* One record of the group. */
struct txn_rec {
	struct txn_row *row;
	struct fmt_record rec;
	uint8_t meta[FMT_COLL_META_SIZE];
};

/* Appends the group and hands its records to the write path; completes req
 * (with the group's last record, or at once).  Returns 0, or < 0 with
 * nothing appended (the caller rolls back). */
static int commit(struct store_txn *t)
{
	struct store *st = t->st;
	size_t n = 0;
	if (t->n_rows == 0) {
		st_req_complete(st, t->req, 0, NULL);
		return 0;
	}
	struct txn_rec recs_inline[TXN_INLINE];
	struct pending_write *pws_inline[TXN_INLINE];
	bool small = t->n_rows <= TXN_INLINE;
	struct txn_rec *recs = small ? recs_inline : malloc(t->n_rows * sizeof(*recs));
	struct pending_write **pws = small ? pws_inline : malloc(t->n_rows * sizeof(*pws));
	int ret = recs == NULL || pws == NULL ? -ENOMEM : 0;
	uint64_t bytes = 0;
	/* Keys first (an emptied collection is deleted, as Redis does), then
	 * elements whose key still holds their version. */
	for (int pass = 0; pass < 2 && ret == 0; pass++) {
		for (size_t i = 0; i < t->n_rows; i++) {
			struct txn_row *r = &t->rows[i];
			struct kentry *ke = r->ke;
			if (st_is_elem(ke) != (pass == 1))
				continue;
			if (pass == 0 && ke->exists && st_is_coll(ke) && ke->count == 0) {
				ke->exists = false;
				ke->type = FMT_TYPE_STRING;
				ke->expiry_ms = 0;
			}
			if (pass == 1) {
				size_t klen = r->key->key_len - FMT_KEY_IDENT_HEAD;
				if (!r->key->exists || r->key->type == FMT_TYPE_STRING ||
				    fmt_get_be64(ke->key + 9 + klen) != r->key->version)
					continue; /* garbage already: its key moved on */
			}
			if (!row_changed(r))
				continue;
			struct txn_rec *x = &recs[n++];
			x->row = r;
			x->rec = (struct fmt_record){.type = ke->exists ? FMT_PUT : FMT_DELETE,
			                             .key = ke->key,
			                             .key_len = ke->key_len,
			                             .txid = t->req->txid};
			if (ke->exists && pass == 0 && ke->type == FMT_TYPE_STRING) {
				x->rec.flags = FMT_TYPE_STRING;
				x->rec.value = ke->value->data;
				x->rec.value_len = ke->value_len;
				x->rec.expiry_ms = ke->expiry_ms;
			} else if (ke->exists && pass == 0) {
				fmt_encode_coll_meta(x->meta, &(struct fmt_coll_meta){
				                                  ke->version, ke->count, ke->enc});
				x->rec.flags = ke->type;
				x->rec.value = x->meta;
				x->rec.value_len = sizeof(x->meta);
				x->rec.expiry_ms = ke->expiry_ms;
			} else if (ke->exists) {
				x->rec.value = ke->value != NULL ? ke->value->data : NULL;
				x->rec.value_len = ke->value_len;
			}
			bytes += fmt_rec_size(&x->rec);
		}
	}
	if (ret == 0 && n == 0) {
		if (!small) {
			free(recs);
			free(pws);
		}
		st_req_complete(st, t->req, 0, NULL);
		return 0;
	}
	size_t got = 0;
	for (; ret == 0 && got < n; got++)
		if ((pws[got] = st_pw_get(st)) == NULL)
			ret = -ENOMEM;
	if (ret == 0 && st->failed)
		ret = st->failed;
	if (ret == 0 && t->req->txid != 0)
		ret = st_txn_note(st, t->req);
	if (ret == 0)
		ret = log_reserve(st->log, bytes);
	if (ret < 0) {
		for (size_t i = 0; i < got && pws != NULL; i++)
			if (pws[i] != NULL)
				st_pw_put_back(st, pws[i]);
		if (!small) {
			free(recs);
			free(pws);
		}
		return ret;
	}
	for (size_t i = 0; i < n; i++) {
		struct txn_row *r = recs[i].row;
		struct kentry *ke = r->ke;
		struct pending_write *pw = pws[i];
		if (log_append(st->log, &recs[i].rec, &pw->w) < 0) {
			/* log_reserve made room for exactly these: a bug, and half a
			 * group is in the log.  Stop writing rather than go on. */
			LOG_ERROR("shard %u: a call's records did not fit the room reserved for them;"
			          " writes are refused from now on, restart to replay the log",
			          st->cfg.shard);
			st->failed = -EIO;
			for (size_t j = i; j < n; j++)
				st_pw_put_back(st, pws[j]);
			for (size_t j = 0; j < i; j++)
				pws[j]->req = NULL;
			break;
		}
		st_touch(st, r->key);
		pw->ke = ke;
		pw->txid = t->req->txid;
		pw->is_delete = !ke->exists;
		pw->db = st_ident_db(ke->key);
		ke->pending++;
		if (st_is_elem(ke)) {
			if (!ke->exists && r->before.exists && r->key->exists)
				st_coll_deletes(st, r->key, pw->w.pos.lsn, 1);
			pw->value = ke->exists ? st_blob_ref(ke->value) : NULL;
			pw->entry = (struct idx_entry){
			    .is_inline = true,
			    .value = pw->value != NULL ? pw->value->data : NULL,
			    .value_len = ke->exists ? ke->value_len : 0};
			st_elem_link(st, r->key, ke);
		} else {
			if (ke->exists && ke->type == FMT_TYPE_STRING) {
				ke->pos = pw->w.pos;
				pw->value = ke->is_inline ? st_blob_ref(ke->value) : NULL;
				pw->entry = (struct idx_entry){
				    .expiry_ms = ke->expiry_ms,
				    .lsn = pw->w.pos.lsn,
				    .value_len = ke->value_len,
				    .is_inline = ke->is_inline,
				    .value = ke->is_inline ? ke->value->data : NULL,
				    .segment = pw->w.pos.segment,
				    .offset = pw->w.pos.offset,
				    .length = pw->w.pos.length};
			} else {
				st_meta_entry(&pw->entry, ke, pw->w.pos.lsn);
			}
			pw->delta = st_count_delta(r->before.exists, r->before.expiry_ms, ke->exists,
			                           ke->expiry_ms);
			st_count_live(st, pw->db, &pw->delta);
			const struct kstate *b = &r->before;
			if (b->exists && b->type != FMT_TYPE_STRING &&
			    (!ke->exists || ke->type == FMT_TYPE_STRING || ke->version != b->version))
				st_coll_garbage(st, pw->w.pos.lsn, ke->key, ke->key_len, b->version,
				                b->count);
		}
		if (i + 1 < n)
			pw->req = NULL;
		else
			st_pw_ack(st, pw, t->req);
	}
	if (!small) {
		free(recs);
		free(pws);
	}
	return 0;
}

/* The end of a call: the saved states' references are dropped, pinned
 * elements unpinned (one whose state is the index's again leaves its key's
 * list). */
static void txn_end(struct store_txn *t)
{
	for (size_t i = 0; i < t->n_rows; i++) {
		st_blob_unref(t->rows[i].before.value);
		st_blob_unref(t->rows[i].before.whole);
		t->rows[i].ke->txn_row = 0;
	}
	for (size_t k = 0; k < t->nkeys; k++)
		st_blob_unref(t->held[k]);
	if (t->held != t->held_few)
		free(t->held);
	for (size_t i = 0; i < t->n_pinned; i++) {
		struct kentry *e = t->pinned[i];
		e->pins--;
		e->stamp = 0;
		if (e->pending == 0 && e->pins == 0 && e->parent != NULL)
			st_elem_unlink(t->st, e);
		else
			st_kentry_release(t->st, e);
	}
	if (t->rows != t->row_inline)
		free(t->rows);
	if (t->pinned != t->pinned_inline)
		free(t->pinned);
}

/* Starts the lookups of the elements of key ke that req names and that a
 * point read would get from the index (not known, no whole copy coming):
 * the call then finds them known.  Each (known already or not) stays pinned
 * until the request has settled (st_prefetch_unpin), so that a small cache
 * cannot evict it between its answer and the call.  Nothing fails here: an element it could not
 * start is read by the call as before. */
static void prefetch_elems(struct store *st, struct store_req *req, struct kentry *ke)
{
	if (!st->lookups_async || !is_coll_live(ke) || whole_of(ke) != NULL)
		return;
	bool cold = req->cold & 1;
	if (!cold && ke->n_elems == 0 && ke->count <= WHOLE_LOAD)
		return; /* store_txn_get reads it whole (one seek) */
	size_t n_few = sizeof(req->prefetch_pin_few) / sizeof(req->prefetch_pin_few[0]);
	req->prefetch_pins = req->prefetch_pin_few;
	if (req->n_prefetch > n_few) {
		req->prefetch_pins = malloc(req->n_prefetch * sizeof(*req->prefetch_pins));
		if (req->prefetch_pins == NULL) {
			req->prefetch_pins = req->prefetch_pin_few;
			return;
		}
	}
	for (size_t i = 0; i < req->n_prefetch; i++) {
		const uint8_t *elem = req->prefetch[i * req->prefetch_step];
		size_t elen = req->prefetch_lens[i * req->prefetch_step];
		size_t len = elen <= FMT_ELEM_MAX ? elem_ident(st, ke, elem, elen) : 0;
		if (len == 0)
			continue;
		struct kentry *e = st_kentry_get(st, st->ident, len);
		if (e == NULL)
			break;
		if (e->loading) { /* named twice: pinned once */
			st_kentry_release(st, e);
			continue;
		}
		/* Pinned even when known or answered from memory: a small cache
		 * would otherwise evict it at once. */
		e->pins++;
		if (e->known || st_kentry_lookup(st, e, req) >= 0) {
			req->prefetch_pins[req->n_prefetch_pins++] = e;
			continue;
		}
		e->pins--;
		st_kentry_release(st, e);
	}
	if (req->n_prefetch_pins == 0 && req->prefetch_pins != req->prefetch_pin_few) {
		free(req->prefetch_pins);
		req->prefetch_pins = req->prefetch_pin_few;
	}
}

void st_prefetch_unpin(struct store *st, struct store_req *req)
{
	if (req->n_prefetch_pins == 0)
		return;
	for (size_t i = 0; i < req->n_prefetch_pins; i++) {
		struct kentry *e = req->prefetch_pins[i];
		e->pins--;
		st_kentry_release(st, e);
	}
	if (req->prefetch_pins != req->prefetch_pin_few)
		free(req->prefetch_pins);
	req->n_prefetch_pins = 0;
}

static bool call_run(struct store *st, struct store_req *req);

/* The call, once it heads its keys' queues; true when it has settled (the
 * elements it had pinned are let go then), false while it waits. */
bool st_call_run(struct store *st, struct store_req *req)
{
	bool settled = call_run(st, req);
	if (settled)
		st_prefetch_unpin(st, req);
	return settled;
}

static bool call_run(struct store *st, struct store_req *req)
{
	size_t nkeys = 1 + req->n_more_keys;
	struct kentry *few[TXN_INLINE];
	struct kentry **keys = nkeys <= TXN_INLINE ? few : malloc(nkeys * sizeof(*keys));
	if (keys == NULL) {
		st_req_complete(st, req, -ENOMEM, NULL);
		return true;
	}
	keys[0] = req->key_entry;
	for (size_t i = 1; i < nkeys; i++)
		keys[i] = req->more_entries[i - 1];
	/* Cold keys are looked up first; the call runs once all are known
	 * (st_req_looked_up runs it again). */
	for (size_t i = 0; i < nkeys; i++) {
		if (keys[i]->known)
			continue;
		if (i < 64)
			req->cold |= 1ull << i;
		int ret = st_kentry_lookup(st, keys[i], req);
		if (ret < 0 && req->lookups_missing > 0) {
			req->lookup_err = ret; /* completed once the others are back */
			break;
		}
		if (ret < 0) {
			if (keys != few)
				free(keys);
			st_req_complete(st, req, ret, NULL);
			return true;
		}
	}
	if (req->lookups_missing == 0 && req->n_prefetch > 0 && !req->prefetched) {
		req->prefetched = true;
		prefetch_elems(st, req, keys[0]);
	}
	if (req->lookups_missing > 0) {
		if (keys != few)
			free(keys);
		return false;
	}
	uint64_t cold = req->cold;
	struct store_txn t;
	t.held = nkeys <= TXN_INLINE ? t.held_few : calloc(nkeys, sizeof(*t.held));
	if (t.held == NULL) {
		if (keys != few)
			free(keys);
		st_req_complete(st, req, -ENOMEM, NULL);
		return true;
	}
	if (t.held == t.held_few)
		memset(t.held_few, 0, sizeof(t.held_few));
	t.st = st;
	t.req = req;
	t.nkeys = nkeys;
	t.keys = keys;
	t.cold = cold;
	t.rows = t.row_inline;
	t.n_rows = 0;
	t.cap_rows = TXN_INLINE;
	t.pinned = t.pinned_inline;
	t.n_pinned = 0;
	t.cap_pinned = TXN_INLINE;
	t.stamp = ++st->stamp;
	t.version_base = log_next_lsn(st->log) << TXN_VERSION_SHIFT;
	t.created = 0;
	t.error = 0;
	t.aborted = false;
	t.paused = false;
	for (size_t i = 0; i < nkeys; i++)
		keys[i]->stamp = 0; /* keys are held by their queues, not pinned */
	req->call(req, &t);
	int ret = t.error;
	if (t.paused && ret == 0 && !t.aborted && t.n_rows == 0) {
		txn_end(&t);
		if (keys != few)
			free(keys);
		return false;
	}
	if (ret == 0 && !t.aborted)
		ret = commit(&t);
	else if (ret == 0)
		st_req_complete(st, req, 0, NULL);
	if (ret < 0 || t.aborted) {
		rollback(&t);
		if (ret < 0)
			st_req_complete(st, req, ret, NULL);
	}
	txn_end(&t);
	if (keys != few)
		free(keys);
	return true;
}
