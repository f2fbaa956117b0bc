/* test_store_coll: the collection engine — hashes and sets through store
 * calls (store.h, "calls") on a real store in a temporary directory, in each
 * durability mode: elements put, read and removed with exact counts; a
 * collection deleted with its last element; a key deleted or overwritten
 * and created again (a new version: the old elements invisible); expiry;
 * element walks with cursors over thousands of elements, pending writes
 * included; calls over several keys (one repeated) ordered against the
 * requests around them; aborts that leave no trace; FLUSHDB, SWAPDB and
 * FLUSHALL with counts per database; a clean reopen checked against a model
 * (elements, counts, versions, the database map); and a writer killed with
 * SIGKILL again and again, after which the store must be a prefix of the
 * calls made, each call's records all there or none.
 *
 * Usage: test_store_coll [SUBTEST...] runs the named subtests in that order
 * (all, in table order, without arguments), each on a fresh store. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/format.h"
#include "storage/index.h"
#include "storage/store.h"
#include "testutil.h"

#define DATABASES  16
#define INLINE_MAX 64

static struct pool *pool;
static struct idx_shared *shared;
static struct store *st;
static char dir[512];
static enum log_durability durability;
static uint64_t cache_bytes = 64u << 20;
static uint64_t segment_size = 4u << 20;
static double gc_live_ratio; /* 0: no garbage collection */

/* ---- the store on its proactor ----------------------------------------- */

struct open_args {
	int ret;
	char err[512];
};

static void open_step(void *arg)
{
	struct open_args *a = arg;
	struct store_config cfg = {.dir = dir,
	                           .databases = DATABASES,
	                           .segment_size = segment_size,
	                           .durability = durability,
	                           .inline_max = INLINE_MAX,
	                           .cache_bytes = cache_bytes,
	                           .shared = shared,
	                           .gc_live_ratio = gc_live_ratio};
	a->ret = store_open(&st, px_current(), &cfg, a->err, sizeof(a->err));
}

static void open_store(void)
{
	struct open_args a = {0};
	test_on_px(pool, open_step, &a);
	if (a.ret < 0) {
		fprintf(stderr, "FAIL: store_open: %s\n", a.err);
		_exit(1);
	}
}

static void close_store(void)
{
	test_store_close(pool, st);
	st = NULL;
}

static void reopen_store(void)
{
	close_store();
	open_store();
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t count_now;
static void count_step(void *arg)
{
	count_now = store_key_count(st, *(unsigned *)arg);
}

/* The key count of database `db`. */
static uint64_t key_count(unsigned db)
{
	test_on_px(pool, count_step, &db);
	return count_now;
}

static struct store_db_stats db_stats_now;
static void db_stats_step(void *arg)
{
	store_db_stats(st, *(unsigned *)arg, &db_stats_now);
}

/* The counts of database `db` (keys, expires, the sum of expiries). */
static struct store_db_stats db_stats(unsigned db)
{
	test_on_px(pool, db_stats_step, &db);
	return db_stats_now;
}

/* Sets (db, key)'s expiry through EXPIRE; returns its status. */
static int set_expiry(unsigned db, const char *key, uint64_t expiry_ms);

static struct store_stats stats_now;
static void stats_step(void *arg)
{
	(void)arg;
	store_get_stats(st, &stats_now);
}

static struct store_stats store_stats(void)
{
	test_on_px(pool, stats_step, NULL);
	return stats_now;
}

/* Waits until every write so far is in the index: the log's records stop
 * growing (under `none` a write is acknowledged before it is written) and
 * the index batch is empty.  Returns false after 20 s. */
static bool settle(void)
{
	uint64_t records = store_stats().records;
	for (double deadline = test_now() + 20; test_now() < deadline;) {
		usleep(50000);
		struct store_stats s = store_stats();
		if (s.records == records && s.index_batch_keys == 0)
			return true;
		records = s.records;
	}
	return false;
}

/* ---- calls ------------------------------------------------------------- */

enum step_op {
	S_PUT,         /* store_txn_put(k, type, elem, value) */
	S_DEL,         /* store_txn_del(k, elem) */
	S_GET,         /* store_txn_get(k, elem): ret, got */
	S_DELETE_KEY,  /* store_txn_delete_key(k) */
	S_MARK,        /* store_txn_mark(k, type as the encoding flags) */
	S_INFO,        /* store_txn_key(k): info */
	S_ABORT,       /* store_txn_abort */
	S_ABORT_ERROR, /* store_txn_abort_error(err) */
};

/* One step of a scripted call, and what it gave. */
struct step {
	enum step_op op;
	size_t k;         /* the key's index in the call (0: req.key) */
	const char *elem; /* NUL-terminated, or elen bytes when elen > 0 */
	size_t elen;
	const char *value; /* PUT */
	uint8_t type;      /* PUT: FMT_TYPE_HASH or FMT_TYPE_SET; MARK: FMT_ENC_* */
	int err;           /* ABORT_ERROR */
	int ret;           /* out */
	char got[128];     /* GET: the value (got_len bytes) */
	size_t got_len;
	struct store_key_info info; /* INFO */
};

#define CALL_KEYS  8
#define CALL_STEPS 24

struct call;
typedef void (*call_body)(struct call *c, struct store_txn *t);

/* A call: its keys, a script of steps or a body of its own. */
struct call {
	struct store_req req;
	char keys[CALL_KEYS][32];
	struct store_key_ref more[CALL_KEYS - 1];
	size_t n_keys;
	struct step steps[CALL_STEPS];
	size_t n_steps;
	call_body body; /* instead of the steps, when set */
	void *arg;      /* the body's */
	int status;
	atomic_int done;
};

static void run_step(struct store_txn *t, struct step *s)
{
	size_t elen = s->elem && s->elen == 0 ? strlen(s->elem) : s->elen;
	size_t vlen = s->value ? strlen(s->value) : 0;
	const uint8_t *v;
	size_t len;
	switch (s->op) {
	case S_PUT:
		s->ret = store_txn_put(t, s->k, s->type, s->elem, elen, s->value, vlen);
		break;
	case S_DEL:
		s->ret = store_txn_del(t, s->k, s->elem, elen);
		break;
	case S_GET:
		s->ret = store_txn_get(t, s->k, s->elem, elen, &v, &len);
		if (s->ret == 0) {
			s->got_len = len;
			memcpy(s->got, v, len < sizeof(s->got) ? len : sizeof(s->got));
		}
		break;
	case S_DELETE_KEY:
		s->ret = store_txn_delete_key(t, s->k);
		break;
	case S_MARK:
		store_txn_mark(t, s->k, s->type);
		break;
	case S_INFO:
		store_txn_key(t, s->k, &s->info);
		break;
	case S_ABORT:
		store_txn_abort(t);
		break;
	case S_ABORT_ERROR:
		store_txn_abort_error(t, s->err);
		break;
	}
}

static void call_fn(struct store_req *req, struct store_txn *t)
{
	struct call *c = container_of(req, struct call, req);
	if (c->body != NULL) {
		c->body(c, t);
		return;
	}
	for (size_t i = 0; i < c->n_steps; i++)
		run_step(t, &c->steps[i]);
}

static void call_done(struct store_req *req)
{
	struct call *c = container_of(req, struct call, req);
	c->status = req->status;
	atomic_store(&c->done, 1);
}

/* A call over key (db, key); free it with free(). */
static struct call *call_new(unsigned db, const char *key)
{
	struct call *c = calloc(1, sizeof(*c));
	if (c == NULL)
		_exit(1);
	snprintf(c->keys[0], sizeof(c->keys[0]), "%s", key);
	c->n_keys = 1;
	c->req.op = STORE_CALL;
	c->req.db = db;
	c->req.key = (const uint8_t *)c->keys[0];
	c->req.key_len = strlen(key);
	c->req.call = call_fn;
	c->req.more_keys = c->more;
	c->req.done = call_done;
	return c;
}

/* Adds key (db, key) to the call; returns its index. */
static size_t call_key(struct call *c, unsigned db, const char *key)
{
	size_t k = c->n_keys++;
	snprintf(c->keys[k], sizeof(c->keys[k]), "%s", key);
	c->more[k - 1] = (struct store_key_ref){
	    .db = db, .key = (const uint8_t *)c->keys[k], .key_len = strlen(key)};
	c->req.n_more_keys = c->n_keys - 1;
	return k;
}

/* Adds a step; returns it (its results are there once the call is done). */
static struct step *call_step(struct call *c, struct step s)
{
	if (c->n_steps == CALL_STEPS)
		_exit(1);
	c->steps[c->n_steps] = s;
	return &c->steps[c->n_steps++];
}

/* ---- plain requests ---------------------------------------------------- */

/* A plain request and what it gave. */
struct plain {
	struct store_req req;
	char key[32];
	char value[256];
	char buf[256]; /* UPDATE's new value */
	enum store_update_result expire_decision;
	uint64_t expire_to;
	int status;
	bool existed;
	char got[256];
	size_t got_len;
	uint64_t expiry_ms;
	uint8_t type, enc;
	uint64_t count;
	atomic_int done;
};

static void plain_done(struct store_req *req)
{
	struct plain *p = container_of(req, struct plain, req);
	p->status = req->status;
	p->existed = req->existed;
	p->expiry_ms = req->result_expiry_ms;
	p->type = req->result_type;
	p->enc = req->result_enc;
	p->count = req->result_count;
	p->got_len = req->result != NULL ? req->result_len : 0;
	if (req->result != NULL)
		memcpy(p->got, req->result,
		       p->got_len < sizeof(p->got) ? p->got_len : sizeof(p->got));
	atomic_store(&p->done, 1);
}

/* Appends "x" to the value (or makes it "x"). */
static enum store_update_result append_x(struct store_req *req, const uint8_t *old, size_t len,
                                         uint64_t expiry)
{
	struct plain *p = container_of(req, struct plain, req);
	size_t n = old ? len : 0;
	if (n + 1 > sizeof(p->buf))
		return STORE_UPDATE_KEEP;
	if (old)
		memcpy(p->buf, old, n);
	p->buf[n] = 'x';
	req->new_value = (const uint8_t *)p->buf;
	req->new_len = n + 1;
	req->new_expiry_ms = expiry;
	return STORE_UPDATE_WRITE;
}

static enum store_update_result expire_decide(struct store_req *req, uint64_t old_expiry_ms)
{
	struct plain *p = container_of(req, struct plain, req);
	(void)old_expiry_ms;
	req->new_expiry_ms = p->expire_to;
	return p->expire_decision;
}

/* A plain request; free it with free(). */
static struct plain *plain_new(enum store_op op, unsigned db, const char *key, const char *value,
                               unsigned flags)
{
	struct plain *p = calloc(1, sizeof(*p));
	if (p == NULL)
		_exit(1);
	snprintf(p->key, sizeof(p->key), "%s", key);
	if (value != NULL)
		snprintf(p->value, sizeof(p->value), "%s", value);
	p->req.op = op;
	p->req.db = db;
	p->req.key = (const uint8_t *)p->key;
	p->req.key_len = strlen(key);
	p->req.value = value != NULL ? (const uint8_t *)p->value : NULL;
	p->req.value_len = value != NULL ? strlen(p->value) : 0;
	p->req.flags = flags;
	p->req.update = append_x;
	p->req.expire = expire_decide;
	p->req.done = plain_done;
	return p;
}

/* ---- submitting in one loop iteration ---------------------------------- */

#define JOBS_MAX 64

/* Requests submitted in one loop iteration, in order: calls, plain
 * requests, FLUSHDB/FLUSHALL/SWAPDB. */
struct jobs {
	size_t n;
	struct {
		struct call *call;
		struct plain *plain;
		struct test_dbop *dbop;
	} j[JOBS_MAX];
};

static void jobs_add_call(struct jobs *js, struct call *c)
{
	js->j[js->n++].call = c;
}

static void jobs_add_plain(struct jobs *js, struct plain *p)
{
	js->j[js->n++].plain = p;
}

static void jobs_add_dbop(struct jobs *js, struct test_dbop *d)
{
	js->j[js->n++].dbop = d;
}

static void jobs_step(void *arg)
{
	struct jobs *js = arg;
	for (size_t i = 0; i < js->n; i++) {
		if (js->j[i].call != NULL)
			store_submit(st, &js->j[i].call->req);
		else if (js->j[i].plain != NULL)
			store_submit(st, &js->j[i].plain->req);
		else
			test_dbop_step(js->j[i].dbop);
	}
}

/* Submits the jobs in one loop iteration and waits until each is done. */
static void jobs_run(struct jobs *js)
{
	test_on_px(pool, jobs_step, js);
	double deadline = test_now() + 60;
	for (size_t i = 0; i < js->n; i++) {
		atomic_int *done = js->j[i].call != NULL    ? &js->j[i].call->done
		                   : js->j[i].plain != NULL ? &js->j[i].plain->done
		                                            : &js->j[i].dbop->done;
		while (!atomic_load(done)) {
			if (test_now() > deadline) {
				fprintf(stderr, "FAIL: request %zu of %zu did not complete\n", i,
				        js->n);
				_exit(1);
			}
			usleep(200);
		}
	}
}

static void run_call(struct call *c)
{
	struct jobs js = {0};
	jobs_add_call(&js, c);
	jobs_run(&js);
}

static void run_plain(struct plain *p)
{
	struct jobs js = {0};
	jobs_add_plain(&js, p);
	jobs_run(&js);
}

/* ---- one-step helpers -------------------------------------------------- */

/* Puts elem = value into (db, key), a collection of `type`; returns the
 * step's result (1 new, 0 replaced) or the call's failure. */
static int put_elem(unsigned db, const char *key, uint8_t type, const char *elem, const char *value)
{
	struct call *c = call_new(db, key);
	struct step *s =
	    call_step(c, (struct step){.op = S_PUT, .type = type, .elem = elem, .value = value});
	run_call(c);
	int ret = c->status < 0 ? c->status : s->ret;
	free(c);
	return ret;
}

static int del_elem(unsigned db, const char *key, const char *elem)
{
	struct call *c = call_new(db, key);
	struct step *s = call_step(c, (struct step){.op = S_DEL, .elem = elem});
	run_call(c);
	int ret = c->status < 0 ? c->status : s->ret;
	free(c);
	return ret;
}

/* Reads elem of (db, key): 0 with value in out (NUL-terminated), or -ENOENT. */
static int get_elem(unsigned db, const char *key, const char *elem, char *out, size_t cap)
{
	struct call *c = call_new(db, key);
	struct step *s = call_step(c, (struct step){.op = S_GET, .elem = elem});
	run_call(c);
	int ret = c->status < 0 ? c->status : s->ret;
	if (ret == 0 && out != NULL)
		snprintf(out, cap, "%.*s", (int)s->got_len, s->got);
	free(c);
	return ret;
}

static int delete_key(unsigned db, const char *key)
{
	struct call *c = call_new(db, key);
	struct step *s = call_step(c, (struct step){.op = S_DELETE_KEY});
	run_call(c);
	int ret = c->status < 0 ? c->status : s->ret;
	free(c);
	return ret;
}

static struct store_key_info key_info(unsigned db, const char *key)
{
	struct call *c = call_new(db, key);
	struct step *s = call_step(c, (struct step){.op = S_INFO});
	run_call(c);
	struct store_key_info info = s->info;
	free(c);
	return info;
}

/* Runs one plain request and returns it (free it with free()). */
static struct plain *plain(enum store_op op, unsigned db, const char *key, const char *value,
                           unsigned flags)
{
	struct plain *p = plain_new(op, db, key, value, flags);
	run_plain(p);
	return p;
}

/* The status of one plain request. */
static int plain_status(enum store_op op, unsigned db, const char *key, const char *value,
                        unsigned flags)
{
	struct plain *p = plain(op, db, key, value, flags);
	int status = p->status;
	free(p);
	return status;
}

static int set_expiry(unsigned db, const char *key, uint64_t expiry_ms)
{
	struct plain *p = plain_new(STORE_EXPIRE, db, key, NULL, 0);
	p->expire_decision = STORE_UPDATE_WRITE;
	p->expire_to = expiry_ms;
	run_plain(p);
	int status = p->status;
	free(p);
	return status;
}

#define EXPECT_ELEM(db, key, elem, want, what)                                                     \
	do {                                                                                       \
		char got_[256] = "";                                                               \
		int r_ = get_elem(db, key, elem, got_, sizeof(got_));                              \
		CHECK(r_ == 0 && strcmp(got_, want) == 0, "%s: %d '%s', want '%s'", what, r_,      \
		      got_, want);                                                                 \
	} while (0)

/* ---- whole collections ------------------------------------------------- */

/* Every element of a collection, as one call's walk sees it. */
struct coll_dump {
	bool exists;
	uint8_t type;
	uint64_t count; /* the key's count */
	size_t n;       /* elements walked */
	size_t cap;
	char (*elems)[24];
	char (*values)[24];
	int calls;  /* store_txn_scan calls */
	size_t max; /* per store_txn_scan call */
};

static int dump_visit(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
                      size_t vlen)
{
	struct coll_dump *d = arg;
	if (d->n < d->cap) {
		snprintf(d->elems[d->n], sizeof(d->elems[0]), "%.*s", (int)elen,
		         (const char *)elem);
		snprintf(d->values[d->n], sizeof(d->values[0]), "%.*s", (int)vlen,
		         (const char *)value);
	}
	d->n++;
	return 0;
}

static void dump_body(struct call *c, struct store_txn *t)
{
	struct coll_dump *d = c->arg;
	struct store_key_info info;
	store_txn_key(t, 0, &info);
	d->exists = info.exists;
	d->type = info.type;
	d->count = info.count;
	uint64_t cursor = 0;
	do {
		d->calls++;
		if (store_txn_scan(t, 0, cursor, d->max, dump_visit, d, &cursor) < 0)
			break;
	} while (cursor != 0);
}

/* Walks (db, key) whole in one call, `max` elements per store_txn_scan. */
static void coll_dump(unsigned db, const char *key, size_t max, struct coll_dump *d)
{
	*d = (struct coll_dump){.cap = d->cap, .elems = d->elems, .values = d->values, .max = max};
	struct call *c = call_new(db, key);
	c->body = dump_body;
	c->arg = d;
	run_call(c);
	CHECK(c->status == 0, "walk of %s: %d", key, c->status);
	free(c);
}

static struct coll_dump *dump_new(size_t cap)
{
	struct coll_dump *d = calloc(1, sizeof(*d));
	d->cap = cap;
	d->elems = calloc(cap, sizeof(*d->elems));
	d->values = calloc(cap, sizeof(*d->values));
	if (d->elems == NULL || d->values == NULL)
		_exit(1);
	return d;
}

static void dump_free(struct coll_dump *d)
{
	free(d->elems);
	free(d->values);
	free(d);
}

/* ---- elements ---------------------------------------------------------- */

/* Put, read and remove elements; counts follow; the key goes with its last
 * element; what plain requests answer on a collection. */
static void test_elements(void)
{
	CHECK(get_elem(0, "h", "f", NULL, 0) == -ENOENT, "an element of a missing key");
	CHECK(del_elem(0, "h", "f") == 0, "removing from a missing key");
	CHECK(put_elem(0, "h", FMT_TYPE_HASH, "f1", "v1") == 1, "a new field");
	CHECK(put_elem(0, "h", FMT_TYPE_HASH, "f2", "v2") == 1, "a second field");
	CHECK(put_elem(0, "h", FMT_TYPE_HASH, "f1", "v1b") == 0, "a field replaced");
	CHECK(put_elem(0, "h", FMT_TYPE_HASH, "", "empty field") == 1, "the empty field");
	CHECK(put_elem(0, "h", FMT_TYPE_HASH, "f3", "") == 1, "an empty value");
	EXPECT_ELEM(0, "h", "f1", "v1b", "the replaced field");
	EXPECT_ELEM(0, "h", "", "empty field", "the empty field");
	EXPECT_ELEM(0, "h", "f3", "", "an empty value");
	CHECK(get_elem(0, "h", "f4", NULL, 0) == -ENOENT, "a missing field");
	struct store_key_info info = key_info(0, "h");
	CHECK(info.exists && info.type == FMT_TYPE_HASH && info.count == 4 && info.expiry_ms == 0,
	      "hash info: exists %d type %u count %" PRIu64, info.exists, info.type, info.count);
	CHECK(key_count(0) == 1, "one key: %" PRIu64, key_count(0));

	/* Binary elements, and the longest one. */
	static const char bin[] = {'a', 0, 'b', (char)0xFF};
	struct call *c = call_new(0, "s");
	call_step(c, (struct step){.op = S_PUT, .type = FMT_TYPE_SET, .elem = bin, .elen = 4});
	struct step *g = call_step(c, (struct step){.op = S_GET, .elem = bin, .elen = 4});
	struct step *g3 = call_step(c, (struct step){.op = S_GET, .elem = bin, .elen = 3});
	run_call(c);
	CHECK(c->status == 0 && g->ret == 0 && g->got_len == 0, "a binary member: %d %d", c->status,
	      g->ret);
	CHECK(g3->ret == -ENOENT, "a prefix of a binary member: %d", g3->ret);
	free(c);
	char *longest = malloc(FMT_ELEM_MAX + 1);
	memset(longest, 'L', FMT_ELEM_MAX);
	longest[FMT_ELEM_MAX] = '\0';
	CHECK(put_elem(0, "s", FMT_TYPE_SET, longest, NULL) == 1, "the longest member");
	CHECK(get_elem(0, "s", longest, NULL, 0) == 0, "the longest member read back");
	free(longest);
	info = key_info(0, "s");
	CHECK(info.exists && info.type == FMT_TYPE_SET && info.count == 2,
	      "set info: count %" PRIu64, info.count);
	CHECK(key_count(0) == 2, "two keys: %" PRIu64, key_count(0));

	/* Plain requests on a collection. */
	struct plain *p = plain(STORE_META, 0, "h", NULL, 0);
	CHECK(p->status == 0 && p->existed && p->type == FMT_TYPE_HASH && p->count == 4,
	      "META of a hash: %d type %u count %" PRIu64, p->status, p->type, p->count);
	free(p);
	CHECK(plain_status(STORE_GET, 0, "h", NULL, 0) == STORE_WRONGTYPE, "GET of a hash");
	CHECK(plain_status(STORE_META, 0, "h", NULL, STORE_STRING) == STORE_WRONGTYPE,
	      "META (STRLEN) of a hash");
	CHECK(plain_status(STORE_UPDATE, 0, "h", NULL, 0) == STORE_WRONGTYPE, "UPDATE of a hash");
	CHECK(plain_status(STORE_PUT, 0, "h", "x", STORE_GET_OLD) == STORE_WRONGTYPE,
	      "PUT GET of a hash");
	CHECK(plain_status(STORE_DELETE, 0, "h", NULL, STORE_GET_OLD) == STORE_WRONGTYPE,
	      "DELETE GET of a hash");
	p = plain(STORE_GET, 0, "s", NULL, STORE_ANY_TYPE);
	CHECK(p->status == 0 && p->type == FMT_TYPE_SET && p->got_len == 0,
	      "GET (any type) of a set: %d type %u", p->status, p->type);
	free(p);
	EXPECT_ELEM(0, "h", "f1", "v1b", "the hash after the refused requests");

	/* Encoding flags: one-way, shown by META. */
	c = call_new(0, "h");
	call_step(c, (struct step){.op = S_MARK, .type = FMT_ENC_BIG});
	struct step *i1 = call_step(c, (struct step){.op = S_INFO});
	run_call(c);
	CHECK(i1->info.enc == FMT_ENC_BIG, "the call sees its mark");
	free(c);
	p = plain(STORE_META, 0, "h", NULL, 0);
	CHECK(p->enc == FMT_ENC_BIG, "META after a mark: enc %u", p->enc);
	free(p);

	/* Removing elements; the last one takes the key. */
	CHECK(del_elem(0, "h", "f1") == 1 && del_elem(0, "h", "f1") == 0, "removing a field twice");
	CHECK(key_info(0, "h").count == 3, "count after a removal");
	c = call_new(0, "h");
	struct step *d[3];
	d[0] = call_step(c, (struct step){.op = S_DEL, .elem = "f2"});
	d[1] = call_step(c, (struct step){.op = S_DEL, .elem = ""});
	d[2] = call_step(c, (struct step){.op = S_DEL, .elem = "f3"});
	struct step *last = call_step(c, (struct step){.op = S_INFO});
	run_call(c);
	CHECK(d[0]->ret == 1 && d[1]->ret == 1 && d[2]->ret == 1, "removing the rest");
	CHECK(last->info.exists && last->info.count == 0,
	      "inside the call the emptied key is still there, count 0");
	free(c);
	info = key_info(0, "h");
	CHECK(!info.exists, "a hash without fields is deleted");
	CHECK(plain_status(STORE_META, 0, "h", NULL, 0) == -ENOENT, "META of the emptied hash");
	CHECK(key_count(0) == 1, "the count after the last field went: %" PRIu64, key_count(0));
	CHECK(get_elem(0, "h", "f2", NULL, 0) == -ENOENT, "a field of the deleted hash");

	reopen_store();
	CHECK(key_count(0) == 1, "count after reopen: %" PRIu64, key_count(0));
	CHECK(!key_info(0, "h").exists, "the emptied hash after reopen");
	info = key_info(0, "s");
	CHECK(info.exists && info.count == 2, "the set after reopen: count %" PRIu64, info.count);
	CHECK(get_elem(0, "s", "x", NULL, 0) == -ENOENT, "a missing member after reopen");
	c = call_new(0, "s");
	g = call_step(c, (struct step){.op = S_GET, .elem = bin, .elen = 4});
	run_call(c);
	CHECK(g->ret == 0, "the binary member after reopen: %d", g->ret);
	free(c);
	p = plain(STORE_DELETE, 0, "s", NULL, 0);
	CHECK(p->status == 0 && p->existed, "DELETE of a set: %d", p->status);
	free(p);
	CHECK(key_count(0) == 0 && !key_info(0, "s").exists, "the set deleted");
}

/* A key deleted, or overwritten by a string, then created again: a new
 * version, under which the old elements are invisible — in the same call,
 * in a later one, and after a reopen (its elements then come from the
 * index). */
static void test_recreate(void)
{
	for (int i = 0; i < 20; i++) {
		char f[16];
		snprintf(f, sizeof(f), "f%d", i);
		put_elem(1, "r", FMT_TYPE_HASH, f, "old");
	}
	CHECK(delete_key(1, "r") == 1 && delete_key(1, "r") == 0, "delete_key twice");
	CHECK(key_count(1) == 0, "count after delete_key");
	CHECK(put_elem(1, "r", FMT_TYPE_HASH, "f1", "new") == 1, "a field of the new hash is new");
	CHECK(key_info(1, "r").count == 1, "the new hash has one field");
	CHECK(get_elem(1, "r", "f2", NULL, 0) == -ENOENT, "an old field is invisible");
	EXPECT_ELEM(1, "r", "f1", "new", "the new field");

	/* delete_key and a new collection in one call, of another type. */
	struct call *c = call_new(1, "r");
	struct step *dk = call_step(c, (struct step){.op = S_DELETE_KEY});
	struct step *pu =
	    call_step(c, (struct step){.op = S_PUT, .type = FMT_TYPE_SET, .elem = "f1"});
	struct step *ge = call_step(c, (struct step){.op = S_GET, .elem = "f1"});
	struct step *in = call_step(c, (struct step){.op = S_INFO});
	run_call(c);
	CHECK(dk->ret == 1 && pu->ret == 1 && ge->ret == 0 && ge->got_len == 0 &&
	          in->info.type == FMT_TYPE_SET && in->info.count == 1,
	      "delete_key then put in one call: %d %d %d", dk->ret, pu->ret, ge->ret);
	free(c);

	/* Overwritten by a string, deleted, created again. */
	put_elem(1, "o", FMT_TYPE_HASH, "a", "1");
	put_elem(1, "o", FMT_TYPE_HASH, "b", "2");
	struct plain *p = plain(STORE_PUT, 1, "o", "a string", 0);
	CHECK(p->status == 0, "a string over a hash: %d", p->status);
	free(p);
	p = plain(STORE_GET, 1, "o", NULL, 0);
	CHECK(p->status == 0 && p->got_len == 8 && memcmp(p->got, "a string", 8) == 0,
	      "the string over the hash: %d", p->status);
	free(p);
	struct store_key_info info = key_info(1, "o");
	CHECK(info.exists && info.type == FMT_TYPE_STRING && info.value_len == 8,
	      "a call sees the string: type %u len %u", info.type, info.value_len);
	CHECK(key_count(1) == 2, "count: %" PRIu64, key_count(1));
	CHECK(delete_key(1, "o") == 1, "delete_key of a string");
	CHECK(plain_status(STORE_GET, 1, "o", NULL, 0) == -ENOENT, "the string deleted by a call");
	CHECK(put_elem(1, "o", FMT_TYPE_HASH, "c", "3") == 1, "a hash again");
	CHECK(get_elem(1, "o", "a", NULL, 0) == -ENOENT, "a field from before the string");

	reopen_store();
	CHECK(key_count(1) == 2, "count after reopen: %" PRIu64, key_count(1));
	CHECK(get_elem(1, "r", "f2", NULL, 0) == -ENOENT && get_elem(1, "r", "f1", NULL, 0) == 0,
	      "after reopen: the recreated set");
	CHECK(key_info(1, "r").type == FMT_TYPE_SET, "after reopen: r is a set");
	CHECK(get_elem(1, "o", "a", NULL, 0) == -ENOENT &&
	          get_elem(1, "o", "b", NULL, 0) == -ENOENT,
	      "after reopen: old fields invisible");
	EXPECT_ELEM(1, "o", "c", "3", "after reopen: the new field");
	CHECK(key_info(1, "o").count == 1, "after reopen: one field");

	/* A blind PUT (the key table empty after the reopen) over a hash the
	 * index holds: the count, then a reopen, as if it had read first. */
	put_elem(1, "blind", FMT_TYPE_HASH, "a", "1");
	put_elem(1, "blind", FMT_TYPE_HASH, "b", "2");
	uint64_t far = now_ms() + 3600000;
	CHECK(set_expiry(1, "blind", far) == 0, "EXPIRE of the hash");
	reopen_store();
	CHECK(key_count(1) == 3, "count before the blind PUT: %" PRIu64, key_count(1));
	struct store_db_stats ds = db_stats(1);
	CHECK(ds.expires == 1 && ds.expiry_sum_s == far / 1000,
	      "before the blind PUT: %" PRIu64 " expires, sum %" PRIu64, ds.expires,
	      ds.expiry_sum_s);
	p = plain(STORE_PUT, 1, "blind", "s", 0);
	CHECK(p->status == 0, "a blind PUT over a hash: %d", p->status);
	free(p);
	CHECK(key_count(1) == 3, "count after a blind PUT over a hash: %" PRIu64, key_count(1));
	ds = db_stats(1);
	CHECK(ds.expires == 0 && ds.expiry_sum_s == 0,
	      "a blind PUT without expiry over an expiring hash: %" PRIu64 " expires, sum %" PRIu64,
	      ds.expires, ds.expiry_sum_s);
	info = key_info(1, "blind");
	CHECK(info.exists && info.type == FMT_TYPE_STRING, "after a blind PUT: type %u", info.type);
	reopen_store();
	CHECK(key_count(1) == 3, "count after a blind PUT and reopen: %" PRIu64, key_count(1));
	ds = db_stats(1);
	CHECK(ds.expires == 0, "after a blind PUT and reopen: %" PRIu64 " expires", ds.expires);
	p = plain(STORE_GET, 1, "blind", NULL, 0);
	CHECK(p->status == 0 && p->got_len == 1 && p->got[0] == 's',
	      "the string after a blind PUT and reopen: %d", p->status);
	free(p);
	CHECK(delete_key(1, "blind") == 1 && put_elem(1, "blind", FMT_TYPE_HASH, "c", "3") == 1 &&
	          get_elem(1, "blind", "a", NULL, 0) == -ENOENT,
	      "a hash again after the blind PUT: old fields invisible");
}

/* A collection's expiry: set, read, passed (invisible at once, then
 * reclaimed by active expiry with the count following), kept or deleted by
 * EXPIRE's decision; a key created again over an expired one. */
static void test_expiry(void)
{
	for (int i = 0; i < 3; i++) {
		char f[8];
		snprintf(f, sizeof(f), "e%d", i);
		put_elem(2, "eh", FMT_TYPE_HASH, f, "v");
	}
	uint64_t soon = now_ms() + 400;
	struct plain *p = plain_new(STORE_EXPIRE, 2, "eh", NULL, 0);
	p->expire_decision = STORE_UPDATE_WRITE;
	p->expire_to = soon;
	run_plain(p);
	CHECK(p->status == 0, "EXPIRE of a hash: %d", p->status);
	free(p);
	p = plain(STORE_META, 2, "eh", NULL, 0);
	CHECK(p->status == 0 && p->expiry_ms == soon && p->count == 3,
	      "META after EXPIRE: %d expiry %" PRIu64, p->status, p->expiry_ms);
	free(p);
	struct store_key_info info = key_info(2, "eh");
	CHECK(info.expiry_ms == soon && info.count == 3, "a call sees the expiry");
	struct store_db_stats ds = db_stats(2);
	CHECK(ds.keys == 1 && ds.expires == 1 && ds.expiry_sum_s == soon / 1000,
	      "counts of an expiring hash: %" PRIu64 " %" PRIu64 " %" PRIu64, ds.keys, ds.expires,
	      ds.expiry_sum_s);
	EXPECT_ELEM(2, "eh", "e1", "v", "before the expiry");
	CHECK(put_elem(2, "eh", FMT_TYPE_HASH, "e3", "v") == 1 &&
	          key_info(2, "eh").expiry_ms == soon,
	      "a put keeps the expiry");
	usleep(500000);
	CHECK(!key_info(2, "eh").exists, "a call sees the expired hash");
	CHECK(get_elem(2, "eh", "e1", NULL, 0) == -ENOENT, "an element of the expired hash");
	CHECK(plain_status(STORE_META, 2, "eh", NULL, 0) == -ENOENT, "META of the expired hash");
	CHECK(put_elem(2, "eh", FMT_TYPE_SET, "m", NULL) == 1, "a set over the expired hash");
	info = key_info(2, "eh");
	CHECK(info.exists && info.type == FMT_TYPE_SET && info.count == 1 && info.expiry_ms == 0,
	      "the new set: count %" PRIu64 " expiry %" PRIu64, info.count, info.expiry_ms);
	CHECK(get_elem(2, "eh", "e1", NULL, 0) == -ENOENT, "an element from before the expiry");
	CHECK(key_count(2) == 1, "count: %" PRIu64, key_count(2));
	ds = db_stats(2);
	CHECK(ds.expires == 0 && ds.expiry_sum_s == 0,
	      "a set created over an expired hash: %" PRIu64 " expires", ds.expires);

	/* KEEP changes nothing; DELETE deletes the collection. */
	p = plain_new(STORE_EXPIRE, 2, "eh", NULL, 0);
	p->expire_decision = STORE_UPDATE_KEEP;
	p->expire_to = 1;
	run_plain(p);
	CHECK(p->status == 0 && key_info(2, "eh").expiry_ms == 0, "EXPIRE deciding KEEP");
	free(p);
	p = plain_new(STORE_EXPIRE, 2, "eh", NULL, 0);
	p->expire_decision = STORE_UPDATE_DELETE;
	run_plain(p);
	CHECK(p->status == 0 && !key_info(2, "eh").exists, "EXPIRE deciding DELETE: %d", p->status);
	free(p);
	CHECK(key_count(2) == 0, "count after EXPIRE deleted: %" PRIu64, key_count(2));

	/* Active expiry reclaims an expired collection without a request. */
	for (int i = 0; i < 5; i++) {
		char f[8];
		snprintf(f, sizeof(f), "a%d", i);
		put_elem(2, "ae", FMT_TYPE_SET, f, NULL);
	}
	put_elem(2, "stay", FMT_TYPE_SET, "x", NULL);
	p = plain_new(STORE_EXPIRE, 2, "ae", NULL, 0);
	p->expire_decision = STORE_UPDATE_WRITE;
	p->expire_to = now_ms() + 300;
	run_plain(p);
	free(p);
	reopen_store(); /* the expiry comes from the index */
	CHECK(key_count(2) == 2, "count before active expiry: %" PRIu64, key_count(2));
	uint64_t expired_before = store_stats().expired;
	double deadline = test_now() + 15;
	/* (the count drops when the delete is appended, `expired` once it is
	 * written: wait for both) */
	while ((key_count(2) != 1 || store_stats().expired == expired_before) &&
	       test_now() < deadline)
		usleep(20000);
	CHECK(key_count(2) == 1, "count after active expiry: %" PRIu64, key_count(2));
	CHECK(store_stats().expired > expired_before, "active expiry reclaimed nothing");
	reopen_store();
	CHECK(key_count(2) == 1 && !key_info(2, "ae").exists && key_info(2, "stay").exists,
	      "after active expiry and reopen");
}

/* ---- walks ------------------------------------------------------------- */

#define WALK_N 3000

struct walk_state {
	unsigned char seen[WALK_N]; /* visits of m<i> */
	int deleted_at[WALK_N];     /* the round m<i> was deleted in (0: never) */
	int seen_after_delete;      /* visits of an element in or after its delete's round */
	int bad_values;
	int others;      /* visits of elements not m<i> or n<i> */
	int round;       /* the walk's call */
	uint64_t cursor; /* where the next call resumes */
	size_t max;
	int scan_ret;
};

static int walk_visit(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
                      size_t vlen)
{
	struct walk_state *w = arg;
	char e[32], want[32];
	snprintf(e, sizeof(e), "%.*s", (int)(elen < 31 ? elen : 31), (const char *)elem);
	int i;
	if (sscanf(e, "m%d", &i) == 1 && i >= 0 && i < WALK_N) {
		if (w->seen[i] < 255)
			w->seen[i]++;
		if (w->deleted_at[i] != 0 && w->round >= w->deleted_at[i])
			w->seen_after_delete++;
		snprintf(want, sizeof(want), "v%d", i);
		w->bad_values += vlen != strlen(want) || memcmp(value, want, vlen) != 0;
	} else if (e[0] != 'n') {
		w->others++;
	}
	return 0;
}

/* One call of the walk: from w->cursor, at least w->max elements. */
static void walk_body(struct call *c, struct store_txn *t)
{
	struct walk_state *w = c->arg;
	w->scan_ret = store_txn_scan(t, 0, w->cursor, w->max, walk_visit, w, &w->cursor);
}

/* Puts (or removes) m<i> for i in [from, to) with i % every == 0. */
struct fill {
	int from, to, every;
	bool remove;
	const char *prefix;
};

static void fill_body(struct call *c, struct store_txn *t)
{
	struct fill *f = c->arg;
	for (int i = f->from; i < f->to; i++) {
		if (i % f->every != 0)
			continue;
		char e[16], v[16];
		int elen = snprintf(e, sizeof(e), "%s%d", f->prefix, i);
		int vlen = snprintf(v, sizeof(v), "v%d", i);
		if (f->remove)
			store_txn_del(t, 0, e, (size_t)elen);
		else
			store_txn_put(t, 0, FMT_TYPE_HASH, e, (size_t)elen, v, (size_t)vlen);
	}
}

static struct call *fill_call(unsigned db, const char *key, struct fill *f)
{
	struct call *c = call_new(db, key);
	c->body = fill_body;
	c->arg = f;
	return c;
}

/* Walks the whole collection (db 3, "big") in calls of `max`, between
 * which `between` (if not NULL) runs in the same loop iteration. */
static void walk_all(struct walk_state *w, size_t max,
                     void (*between)(struct walk_state *w, struct jobs *js))
{
	w->cursor = 0;
	w->max = max;
	w->round = 0;
	do {
		w->round++;
		struct jobs js = {0};
		if (between != NULL)
			between(w, &js);
		struct call *c = call_new(3, "big");
		c->body = walk_body;
		c->arg = w;
		jobs_add_call(&js, c);
		jobs_run(&js);
		CHECK(c->status == 0 && w->scan_ret == 0, "walk call %d: %d %d", w->round,
		      c->status, w->scan_ret);
		for (size_t i = 0; i < js.n; i++)
			free(js.j[i].call);
	} while (w->cursor != 0 && w->round < 100000);
}

static struct fill mid_fills[2];

/* Between two calls of the walk: m<i> for i % 11 == 0 in a slice removed
 * (remembered as deleted in this round), and new elements n<i> added. */
static void walk_changes(struct walk_state *w, struct jobs *js)
{
	int from = (w->round * 97) % WALK_N;
	mid_fills[0] = (struct fill){
	    .from = from, .to = from + 97, .every = 11, .remove = true, .prefix = "m"};
	for (int i = from; i < from + 97 && i < WALK_N; i++)
		if (i % 11 == 0 && w->deleted_at[i] == 0)
			w->deleted_at[i] = w->round;
	mid_fills[1] = (struct fill){
	    .from = w->round * 10, .to = w->round * 10 + 10, .every = 1, .prefix = "n"};
	jobs_add_call(js, fill_call(3, "big", &mid_fills[0]));
	jobs_add_call(js, fill_call(3, "big", &mid_fills[1]));
}

/* store_txn_scan over thousands of elements, resumed by cursor: elements
 * whose writes are pending (not yet in the index: durability none and
 * write acknowledge them early, and the index gets them seconds later) and
 * elements the index has but pending deletes removed are merged with the
 * index's rows, so every element there for the whole walk is visited at
 * least once, and a removed one never (after its removal). */
static void test_walk(void)
{
	struct walk_state *w = calloc(1, sizeof(*w));
	/* Two thirds of the elements, in the index. */
	struct fill fills[8];
	struct jobs js = {0};
	for (int i = 0; i < 4; i++) {
		fills[i] =
		    (struct fill){.from = i * 500, .to = i * 500 + 500, .every = 1, .prefix = "m"};
		jobs_add_call(&js, fill_call(3, "big", &fills[i]));
	}
	jobs_run(&js);
	for (size_t i = 0; i < js.n; i++)
		free(js.j[i].call);
	CHECK(settle(), "the writes did not settle");

	/* The last third, every 7th removed, every 5th rewritten, and the walk's
	 * first call, all in one loop iteration: none of it is in the index
	 * when the walk starts. */
	js = (struct jobs){0};
	fills[4] = (struct fill){.from = 2000, .to = 2500, .every = 1, .prefix = "m"};
	fills[5] = (struct fill){.from = 2500, .to = WALK_N, .every = 1, .prefix = "m"};
	fills[6] = (struct fill){.from = 0, .to = WALK_N, .every = 5, .prefix = "m"};
	fills[7] =
	    (struct fill){.from = 0, .to = WALK_N, .every = 7, .remove = true, .prefix = "m"};
	for (int i = 4; i < 8; i++)
		jobs_add_call(&js, fill_call(3, "big", &fills[i]));
	for (int i = 0; i < WALK_N; i += 7)
		w->deleted_at[i] = -1; /* before the walk */
	w->max = 50;
	w->round = 1;
	struct call *first = call_new(3, "big");
	first->body = walk_body;
	first->arg = w;
	jobs_add_call(&js, first);
	jobs_run(&js);
	CHECK(first->status == 0 && w->scan_ret == 0, "the walk's first call: %d", first->status);
	for (size_t i = 0; i < js.n; i++)
		free(js.j[i].call);
	/* The rest of that walk, with changes between its calls. */
	uint64_t resume = w->cursor;
	while (resume != 0 && w->round < 100000) {
		w->round++;
		struct jobs more = {0};
		walk_changes(w, &more);
		struct call *c = call_new(3, "big");
		c->body = walk_body;
		c->arg = w;
		w->cursor = resume;
		jobs_add_call(&more, c);
		jobs_run(&more);
		resume = w->cursor;
		CHECK(c->status == 0 && w->scan_ret == 0, "walk call %d: %d", w->round, c->status);
		for (size_t i = 0; i < more.n; i++)
			free(more.j[i].call);
	}
	int rounds = w->round; /* rounds 2.. each added ten n elements */
	int missing = 0, resurrected = 0;
	for (int i = 0; i < WALK_N; i++) {
		missing += w->deleted_at[i] == 0 && w->seen[i] == 0;
		resurrected += w->deleted_at[i] == -1 && w->seen[i] != 0;
	}
	CHECK(missing == 0, "the walk with pending writes missed %d elements", missing);
	CHECK(resurrected == 0, "the walk visited %d elements removed before it", resurrected);
	CHECK(w->seen_after_delete == 0, "the walk visited %d elements after their removal",
	      w->seen_after_delete);
	CHECK(w->bad_values == 0 && w->others == 0, "%d wrong values, %d foreign elements",
	      w->bad_values, w->others);
	CHECK(w->round > 1700 / 50 / 2, "the walk took only %d calls of 50", w->round);

	/* Once the index has everything: one element per call (hash groups),
	 * then all at once. */
	CHECK(settle(), "the writes did not settle");
	size_t max_per_call[] = {1, 100000};
	for (size_t m = 0; m < 2; m++) {
		memset(w->seen, 0, sizeof(w->seen));
		w->seen_after_delete = w->bad_values = w->others = 0;
		for (int i = 0; i < WALK_N; i++)
			if (w->deleted_at[i] > 0)
				w->deleted_at[i] = -1;
		walk_all(w, max_per_call[m], NULL);
		missing = resurrected = 0;
		for (int i = 0; i < WALK_N; i++) {
			missing += w->deleted_at[i] == 0 && w->seen[i] == 0;
			resurrected += w->deleted_at[i] == -1 && w->seen[i] != 0;
		}
		CHECK(missing == 0 && resurrected == 0 && w->bad_values == 0,
		      "a walk of %zu per call: %d missed, %d removed ones visited, %d bad values",
		      max_per_call[m], missing, resurrected, w->bad_values);
		if (m == 1)
			CHECK(w->round == 1, "a walk of everything took %d calls", w->round);
	}
	uint64_t live = 0;
	for (int i = 0; i < WALK_N; i++)
		live += w->deleted_at[i] == 0;
	struct store_key_info info = key_info(3, "big");
	CHECK(info.count == live + 10 * (uint64_t)(rounds - 1),
	      "count %" PRIu64 ", want %" PRIu64 " m elements and %d n elements", info.count, live,
	      10 * (rounds - 1));

	/* A call walks what it just created itself (no row in the index yet). */
	struct call *c = call_new(3, "fresh");
	struct fill f = {.from = 0, .to = 100, .every = 1, .prefix = "m"};
	c->body = fill_body;
	c->arg = &f;
	run_call(c);
	free(c);
	struct coll_dump *d = dump_new(200);
	coll_dump(3, "fresh", 30, d);
	CHECK(d->n == 100 && d->count == 100, "a walk of a fresh collection: %zu of %" PRIu64, d->n,
	      d->count);
	dump_free(d);
	free(w);
}

/* ---- several keys ------------------------------------------------------ */

/* A call over several keys, of several databases, one of them named twice
 * (the same key then); keys a call may not name. */
static void test_multi_key(void)
{
	struct call *c = call_new(0, "mk1");
	size_t k1 = call_key(c, 5, "mk2");
	size_t k2 = call_key(c, 0, "mk1"); /* mk1 again */
	size_t k3 = call_key(c, 5, "mk1"); /* the name of mk1, in database 5 */
	call_step(c, (struct step){
	                 .op = S_PUT, .k = 0, .type = FMT_TYPE_HASH, .elem = "f", .value = "1"});
	call_step(c, (struct step){.op = S_PUT, .k = k1, .type = FMT_TYPE_SET, .elem = "m"});
	struct step *g = call_step(c, (struct step){.op = S_GET, .k = k2, .elem = "f"});
	struct step *i2 = call_step(c, (struct step){.op = S_INFO, .k = k2});
	struct step *i3 = call_step(c, (struct step){.op = S_INFO, .k = k3});
	call_step(c, (struct step){
	                 .op = S_PUT, .k = k2, .type = FMT_TYPE_HASH, .elem = "g", .value = "2"});
	struct step *i0 = call_step(c, (struct step){.op = S_INFO, .k = 0});
	run_call(c);
	CHECK(c->status == 0, "a call over four keys: %d", c->status);
	CHECK(g->ret == 0 && g->got_len == 1 && g->got[0] == '1',
	      "the repeated key sees the first one's put: %d", g->ret);
	CHECK(i2->info.exists && i2->info.count == 1 && !i3->info.exists,
	      "the repeated key is the same; another database's is not");
	CHECK(i0->info.count == 2, "the first key sees the repeat's put: %" PRIu64, i0->info.count);
	free(c);
	EXPECT_ELEM(0, "mk1", "g", "2", "a put through the repeated key");
	CHECK(key_info(5, "mk2").count == 1 && !key_info(5, "mk1").exists,
	      "database 5 after the call");
	CHECK(key_count(0) == 1 && key_count(5) == 1, "counts %" PRIu64 " %" PRIu64, key_count(0),
	      key_count(5));

	/* Deleted through the repeat, gone through the first. */
	c = call_new(0, "mk1");
	k2 = call_key(c, 0, "mk1");
	call_step(c, (struct step){.op = S_DELETE_KEY, .k = k2});
	g = call_step(c, (struct step){.op = S_GET, .k = 0, .elem = "f"});
	run_call(c);
	CHECK(c->status == 0 && g->ret == -ENOENT, "deleted through the repeat: %d", g->ret);
	free(c);
	CHECK(key_count(0) == 0, "count after the delete: %" PRIu64, key_count(0));

	/* Keys a call may not name: nothing runs. */
	c = call_new(0, "mk1");
	call_key(c, DATABASES, "x");
	struct step *p =
	    call_step(c, (struct step){.op = S_PUT, .type = FMT_TYPE_SET, .elem = "m"});
	run_call(c);
	CHECK(c->status == -EINVAL && p->ret == 0, "a key of a database past the last: %d",
	      c->status);
	free(c);
	char *long_key = malloc(FMT_KEY_MAX + 2);
	memset(long_key, 'k', FMT_KEY_MAX + 1);
	long_key[FMT_KEY_MAX + 1] = '\0';
	c = call_new(0, "mk1");
	c->more[0] = (struct store_key_ref){
	    .db = 0, .key = (const uint8_t *)long_key, .key_len = FMT_KEY_MAX + 1};
	c->n_keys = 2;
	c->req.n_more_keys = 1;
	call_step(c, (struct step){.op = S_PUT, .type = FMT_TYPE_SET, .elem = "m"});
	run_call(c);
	CHECK(c->status == -E2BIG, "a key past FMT_KEY_MAX: %d", c->status);
	free(c);
	free(long_key);
	CHECK(!key_info(0, "mk1").exists && key_count(0) == 0, "the refused calls changed nothing");
}

static size_t seen_len; /* what the ordering call saw of the string */

static void ordering_body(struct call *c, struct store_txn *t)
{
	(void)c;
	struct store_key_info a;
	store_txn_key(t, 1, &a);
	seen_len = a.exists ? a.value_len : 0;
	char v[16];
	int n = snprintf(v, sizeof(v), "%zu", seen_len);
	store_txn_put(t, 0, FMT_TYPE_HASH, "len", 3, v, (size_t)n);
	store_txn_delete_key(t, 1);
}

/* A call runs after every request submitted earlier on any of its keys has
 * settled — one waiting for a cold read included — and before any later
 * one; calls that name the same keys in another order do not deadlock. */
static void test_ordering(void)
{
	static const char long_value[] =
	    "a value longer than inline_max, so that it lives in the log and is read cold .....";
	struct plain *p = plain(STORE_PUT, 0, "A", long_value, 0);
	free(p);
	put_elem(0, "H", FMT_TYPE_HASH, "f0", "0");
	reopen_store(); /* A is read from the log: its GET waits */

	struct jobs js = {0};
	struct plain *get_before = plain_new(STORE_GET, 0, "A", NULL, 0);
	struct plain *update = plain_new(STORE_UPDATE, 0, "A", NULL, 0);
	struct call *h_before = call_new(0, "H");
	struct step *hb = call_step(
	    h_before,
	    (struct step){.op = S_PUT, .type = FMT_TYPE_HASH, .elem = "f0", .value = "1"});
	struct call *both = call_new(0, "H");
	call_key(both, 0, "A");
	both->body = ordering_body;
	struct plain *get_after = plain_new(STORE_GET, 0, "A", NULL, 0);
	struct call *h_after = call_new(0, "H");
	struct step *ha = call_step(h_after, (struct step){.op = S_GET, .elem = "len"});
	struct step *ha0 = call_step(h_after, (struct step){.op = S_GET, .elem = "f0"});
	jobs_add_plain(&js, get_before);
	jobs_add_plain(&js, update);
	jobs_add_call(&js, h_before);
	jobs_add_call(&js, both);
	jobs_add_plain(&js, get_after);
	jobs_add_call(&js, h_after);
	seen_len = 0;
	jobs_run(&js);
	size_t len = strlen(long_value);
	CHECK(get_before->status == 0 && get_before->got_len == len,
	      "the GET before the call: %d, %zu bytes", get_before->status, get_before->got_len);
	CHECK(update->status == 0, "the UPDATE before the call: %d", update->status);
	CHECK(seen_len == len + 1,
	      "the call saw %zu bytes of A: it ran before the UPDATE settled"
	      " (want %zu)",
	      seen_len, len + 1);
	CHECK(get_after->status == -ENOENT, "the GET after the call that deleted A: %d",
	      get_after->status);
	CHECK(hb->ret == 0 && ha->ret == 0 && ha0->ret == 0 && ha0->got_len == 1 &&
	          ha0->got[0] == '1',
	      "calls on H in order: %d %d %d", hb->ret, ha->ret, ha0->ret);
	char want[16];
	snprintf(want, sizeof(want), "%zu", len + 1);
	CHECK(ha->got_len == strlen(want) && memcmp(ha->got, want, ha->got_len) == 0,
	      "the call after read what the call before wrote");
	free(get_before);
	free(update);
	free(h_before);
	free(both);
	free(get_after);
	free(h_after);

	/* X then Y, Y then X, X alone, plain requests between: in order, no
	 * deadlock. */
	js = (struct jobs){0};
	struct call *c[6];
	struct step *got[6] = {0};
	static const char *const ids[] = {"0", "1", "2", "3", "4", "5"};
	for (int i = 0; i < 6; i++) {
		/* call i: first key X (even) or Y (odd), the other one too unless
		 * i % 3 == 2; it reads "log" of its first key and writes its
		 * number to "log" of each of its keys */
		c[i] = call_new(0, i % 2 ? "Y" : "X");
		if (i % 3 != 2)
			call_key(c[i], 0, i % 2 ? "X" : "Y");
		got[i] = call_step(c[i], (struct step){.op = S_GET, .elem = "log"});
		for (size_t k = 0; k < c[i]->n_keys; k++)
			call_step(c[i], (struct step){.op = S_PUT,
			                              .k = k,
			                              .type = FMT_TYPE_HASH,
			                              .elem = "log",
			                              .value = ids[i]});
		jobs_add_call(&js, c[i]);
		if (i == 2)
			jobs_add_plain(&js, plain_new(STORE_META, 0, "X", NULL, 0));
	}
	jobs_run(&js);
	for (int i = 0; i < 6; i++) {
		CHECK(c[i]->status == 0, "call %d: %d", i, c[i]->status);
		/* call i reads its first key's log: the last call before it on that key */
		int prev = -1;
		for (int j = i - 1; j >= 0 && prev < 0; j--) {
			bool j_has = (j % 2 == i % 2) || j % 3 != 2;
			if (j_has)
				prev = j;
		}
		if (prev < 0)
			CHECK(got[i]->ret == -ENOENT, "call %d read a log before any", i);
		else
			CHECK(got[i]->ret == 0 && got[i]->got_len == 1 &&
			          got[i]->got[0] == '0' + prev,
			      "call %d read '%.*s', want %d", i, (int)got[i]->got_len, got[i]->got,
			      prev);
	}
	for (size_t i = 0; i < js.n; i++) {
		free(js.j[i].call);
		free(js.j[i].plain);
	}
}

/* ---- aborts ------------------------------------------------------------ */

/* store_txn_abort and store_txn_abort_error, and a call failing on a
 * txn function's error: nothing changed, nothing written. */
static void test_abort(void)
{
	put_elem(2, "ab", FMT_TYPE_HASH, "f1", "v1");
	put_elem(2, "as", FMT_TYPE_SET, "m", NULL);
	CHECK(settle(), "the writes did not settle");
	struct store_stats before = store_stats();

	static const struct {
		enum step_op op;
		int err, want;
	} ends[] = {{S_ABORT, 0, 0}, {S_ABORT_ERROR, -ENOTSUP, -ENOTSUP}, {S_PUT, 0, -E2BIG}};
	char *too_long = malloc(FMT_ELEM_MAX + 2);
	memset(too_long, 'x', FMT_ELEM_MAX + 1);
	too_long[FMT_ELEM_MAX + 1] = '\0';
	for (size_t e = 0; e < 3; e++) {
		struct call *c = call_new(2, "ab");
		size_t ks = call_key(c, 2, "as");
		size_t kn = call_key(c, 2, "an");
		call_step(c, (struct step){
		                 .op = S_PUT, .type = FMT_TYPE_HASH, .elem = "f2", .value = "v2"});
		call_step(
		    c, (struct step){
		           .op = S_PUT, .type = FMT_TYPE_HASH, .elem = "f1", .value = "changed"});
		call_step(c, (struct step){.op = S_DELETE_KEY, .k = ks});
		call_step(c,
		          (struct step){.op = S_PUT, .k = kn, .type = FMT_TYPE_SET, .elem = "n"});
		call_step(c, (struct step){.op = S_MARK, .type = FMT_ENC_BIG});
		struct step *in = call_step(c, (struct step){.op = S_INFO});
		if (ends[e].op == S_PUT)
			call_step(c, (struct step){.op = S_PUT,
			                           .type = FMT_TYPE_HASH,
			                           .elem = too_long,
			                           .value = "v"});
		else
			call_step(c, (struct step){.op = ends[e].op, .err = ends[e].err});
		struct step *after = call_step(
		    c,
		    (struct step){.op = S_PUT, .type = FMT_TYPE_HASH, .elem = "f9", .value = "v"});
		run_call(c);
		CHECK(c->status == ends[e].want, "end %zu: status %d, want %d", e, c->status,
		      ends[e].want);
		CHECK(in->info.count == 2, "end %zu: the call saw its own put", e);
		CHECK(after->ret < 0, "end %zu: a put after the end returned %d", e, after->ret);
		free(c);
		EXPECT_ELEM(2, "ab", "f1", "v1", "a field changed by a dropped call");
		CHECK(get_elem(2, "ab", "f2", NULL, 0) == -ENOENT, "end %zu: a field put by it", e);
		CHECK(get_elem(2, "ab", "f9", NULL, 0) == -ENOENT, "end %zu: a field put after", e);
		struct store_key_info info = key_info(2, "ab");
		CHECK(info.count == 1 && info.enc == 0, "end %zu: count %" PRIu64 " enc %u", e,
		      info.count, info.enc);
		CHECK(key_info(2, "as").exists && get_elem(2, "as", "m", NULL, 0) == 0,
		      "end %zu: the key it deleted", e);
		CHECK(!key_info(2, "an").exists, "end %zu: the key it created", e);
		CHECK(key_count(2) == 2, "end %zu: count %" PRIu64, e, key_count(2));
	}
	free(too_long);
	/* A call that changes nothing writes nothing either. */
	struct call *c = call_new(2, "ab");
	call_step(c, (struct step){.op = S_GET, .elem = "f1"});
	call_step(c, (struct step){.op = S_DEL, .elem = "missing"});
	call_step(c, (struct step){.op = S_DELETE_KEY, .k = call_key(c, 2, "missing")});
	call_step(c, (struct step){.op = S_MARK, .k = 0, .type = 0});
	run_call(c);
	CHECK(c->status == 0, "a call that changes nothing: %d", c->status);
	free(c);
	struct store_stats after = store_stats();
	CHECK(after.records == before.records && after.commits == before.commits,
	      "dropped calls wrote %" PRIu64 " records in %" PRIu64 " commits",
	      after.records - before.records, after.commits - before.commits);
	reopen_store();
	EXPECT_ELEM(2, "ab", "f1", "v1", "after reopen");
	CHECK(key_count(2) == 2 && key_info(2, "ab").count == 1 && !key_info(2, "an").exists,
	      "after reopen: the dropped calls left no trace");
}

/* ---- databases --------------------------------------------------------- */

/* Fills database d with a string "s", a hash "h" of d + 1 fields and a set
 * "m" of one member. */
static void fill_db(unsigned d)
{
	char v[8];
	snprintf(v, sizeof(v), "v%u", d);
	free(plain(STORE_PUT, d, "s", v, 0));
	for (unsigned i = 0; i <= d; i++) {
		char f[8];
		snprintf(f, sizeof(f), "f%u", i);
		put_elem(d, "h", FMT_TYPE_HASH, f, v);
	}
	put_elem(d, "m", FMT_TYPE_SET, "member", NULL);
}

/* Checks database d holds what fill_db(from) put there, and `extra` more
 * fields in its hash. */
static void check_db_extra(unsigned d, unsigned from, uint64_t extra, const char *when)
{
	char v[8];
	snprintf(v, sizeof(v), "v%u", from);
	struct plain *p = plain(STORE_GET, d, "s", NULL, 0);
	CHECK(p->status == 0 && p->got_len == strlen(v) && memcmp(p->got, v, p->got_len) == 0,
	      "%s: database %u's string: %d", when, d, p->status);
	free(p);
	struct store_key_info info = key_info(d, "h");
	CHECK(info.exists && info.count == from + 1 + extra,
	      "%s: database %u's hash: %" PRIu64 " fields", when, d, info.count);
	for (unsigned i = 0; i <= from; i++) {
		char f[8], got[16] = "";
		snprintf(f, sizeof(f), "f%u", i);
		CHECK(get_elem(d, "h", f, got, sizeof(got)) == 0 && strcmp(got, v) == 0,
		      "%s: database %u's field %s: '%s'", when, d, f, got);
	}
	CHECK(get_elem(d, "m", "member", NULL, 0) == 0, "%s: database %u's set", when, d);
	CHECK(key_count(d) >= 3, "%s: database %u counts %" PRIu64, when, d, key_count(d));
}

static void check_db(unsigned d, unsigned from, const char *when)
{
	check_db_extra(d, from, 0, when);
}

static void check_empty(unsigned d, const char *when)
{
	CHECK(key_count(d) == 0, "%s: database %u counts %" PRIu64, when, d, key_count(d));
	CHECK(plain_status(STORE_GET, d, "s", NULL, 0) == -ENOENT, "%s: database %u's string", when,
	      d);
	CHECK(!key_info(d, "h").exists && get_elem(d, "h", "f0", NULL, 0) == -ENOENT,
	      "%s: database %u's hash", when, d);
}

/* FLUSHDB, SWAPDB and FLUSHALL (store_flush, store_swap_db): counts per
 * database, collections and their elements follow their database, calls
 * submitted before a change run on the databases as they were, all of it
 * across reopens. */
static void test_databases(void)
{
	for (unsigned d = 0; d < 3; d++)
		fill_db(d);
	for (unsigned d = 0; d < 3; d++)
		CHECK(key_count(d) == 3, "database %u counts %" PRIu64, d, key_count(d));

	CHECK(test_store_flush(pool, st, 1, 30) == 0, "FLUSHDB 1");
	check_empty(1, "after FLUSHDB 1");
	check_db(0, 0, "after FLUSHDB 1");
	check_db(2, 2, "after FLUSHDB 1");
	CHECK(put_elem(1, "h", FMT_TYPE_HASH, "new", "n") == 1, "a hash in the flushed database");
	CHECK(key_info(1, "h").count == 1 && get_elem(1, "h", "f0", NULL, 0) == -ENOENT &&
	          get_elem(1, "h", "f1", NULL, 0) == -ENOENT,
	      "the flushed hash's fields are gone from the new one");
	CHECK(key_count(1) == 1, "database 1 counts %" PRIu64, key_count(1));

	/* SWAPDB 0 2, with calls on database 0 just before and just after; the
	 * expiry of database 0's hash (and its count) goes with it. */
	uint64_t far = now_ms() + 3600000;
	CHECK(set_expiry(0, "h", far) == 0, "EXPIRE of database 0's hash");
	struct jobs js = {0};
	struct call *before = call_new(0, "h");
	call_step(before,
	          (struct step){.op = S_PUT, .type = FMT_TYPE_HASH, .elem = "pre", .value = "p"});
	struct test_dbop swap = {.st = st, .db = 0, .db2 = 2};
	struct call *after = call_new(0, "h");
	call_step(after,
	          (struct step){.op = S_PUT, .type = FMT_TYPE_HASH, .elem = "post", .value = "q"});
	jobs_add_call(&js, before);
	jobs_add_dbop(&js, &swap);
	jobs_add_call(&js, after);
	jobs_run(&js);
	CHECK(swap.req.status == 0 && before->status == 0 && after->status == 0,
	      "SWAPDB 0 2 and the calls around it: %d %d %d", swap.req.status, before->status,
	      after->status);
	free(before);
	free(after);
	EXPECT_ELEM(2, "h", "pre", "p", "a call submitted before SWAPDB ran on the old database 0");
	EXPECT_ELEM(0, "h", "post", "q", "a call submitted after SWAPDB ran on the new database 0");
	CHECK(get_elem(0, "h", "pre", NULL, 0) == -ENOENT &&
	          get_elem(2, "h", "post", NULL, 0) == -ENOENT,
	      "each call's field in one database only");
	for (int round = 0; round < 2; round++) {
		const char *when = round ? "after SWAPDB and reopen" : "after SWAPDB";
		check_db_extra(0, 2, 1, when); /* + "post" */
		check_db_extra(2, 0, 1, when); /* + "pre" */
		CHECK(key_count(0) == 3 && key_count(2) == 3 && key_count(1) == 1,
		      "%s: counts %" PRIu64 " %" PRIu64 " %" PRIu64, when, key_count(0),
		      key_count(1), key_count(2));
		CHECK(key_info(0, "h").count == 4 && key_info(2, "h").count == 2,
		      "%s: the hashes' counts", when);
		struct store_db_stats d0 = db_stats(0), d2 = db_stats(2);
		CHECK(d0.expires == 0 && d2.expires == 1 && d2.expiry_sum_s == far / 1000 &&
		          key_info(2, "h").expiry_ms == far,
		      "%s: the expiry went with its database: %" PRIu64 " %" PRIu64, when,
		      d0.expires, d2.expires);
		if (round == 0)
			reopen_store();
	}
	CHECK(test_store_swap_db(pool, st, 0, DATABASES, 30) == -EINVAL, "SWAPDB past the last");
	CHECK(test_store_flush(pool, st, DATABASES, 30) == -EINVAL, "FLUSHDB past the last");
	CHECK(test_store_swap_db(pool, st, 3, 3, 30) == 0, "SWAPDB of a database with itself");

	CHECK(test_store_flush(pool, st, -1, 30) == 0, "FLUSHALL");
	for (unsigned d = 0; d < 3; d++)
		check_empty(d, "after FLUSHALL");
	reopen_store();
	for (unsigned d = 0; d < 3; d++)
		check_empty(d, "after FLUSHALL and reopen");
	fill_db(1);
	check_db(1, 1, "written after FLUSHALL");
	CHECK(key_count(1) == 3, "database 1 after FLUSHALL: %" PRIu64, key_count(1));
}

/* ---- SCAN, big calls, garbage collection ------------------------------- */

struct scan_seen {
	int strings, hashes, sets, others;
};

static void scan_visit(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms, uint8_t type)
{
	struct scan_seen *s = arg;
	(void)expiry_ms;
	char k[16];
	snprintf(k, sizeof(k), "%.*s", (int)(klen < 15 ? klen : 15), (const char *)key);
	if (strcmp(k, "str") == 0 && type == FMT_TYPE_STRING)
		s->strings++;
	else if (strcmp(k, "hash") == 0 && type == FMT_TYPE_HASH)
		s->hashes++;
	else if (strcmp(k, "set") == 0 && type == FMT_TYPE_SET)
		s->sets++;
	else
		s->others++;
}

struct scan_args {
	unsigned db;
	struct scan_seen seen;
	int ret;
};

static void scan_step(void *arg)
{
	struct scan_args *a = arg;
	uint64_t cursor = 0;
	do
		a->ret = store_scan(st, a->db, cursor, 2, scan_visit, &a->seen, &cursor);
	while (a->ret == 0 && cursor != 0);
}

/* SCAN (store_scan) names each key's type, collections written a moment
 * ago included; a deleted or expired collection, and another database's
 * keys, are not visited. */
static void test_scan_types(void)
{
	free(plain(STORE_PUT, 4, "str", "v", 0));
	put_elem(4, "hash", FMT_TYPE_HASH, "f", "v");
	put_elem(4, "set", FMT_TYPE_SET, "m", NULL);
	put_elem(4, "gone", FMT_TYPE_SET, "m", NULL);
	del_elem(4, "gone", "m");
	put_elem(4, "old", FMT_TYPE_SET, "m", NULL);
	CHECK(set_expiry(4, "old", now_ms() + 50) == 0, "EXPIRE");
	put_elem(5, "hash", FMT_TYPE_HASH, "f", "v");
	usleep(100000);
	for (int round = 0; round < 2; round++) {
		struct scan_args a = {.db = 4};
		test_on_px(pool, scan_step, &a);
		CHECK(a.ret == 0 && a.seen.strings == 1 && a.seen.hashes == 1 && a.seen.sets == 1 &&
		          a.seen.others == 0,
		      "SCAN of database 4%s: %d; %d strings, %d hashes, %d sets, %d others",
		      round ? " after reopen" : "", a.ret, a.seen.strings, a.seen.hashes,
		      a.seen.sets, a.seen.others);
		if (round == 0)
			reopen_store();
	}
}

/* A call that puts n elements b0..b<n-1> of value[0..vlen) into key 0;
 * first_err gets the first failure of store_txn_put. */
struct big_put {
	int n;
	const char *value;
	size_t vlen;
	int first_err;
};

static void big_put_body(struct call *c, struct store_txn *t)
{
	struct big_put *b = c->arg;
	for (int i = 0; i < b->n; i++) {
		char e[8];
		int elen = snprintf(e, sizeof(e), "b%d", i);
		int r = store_txn_put(t, 0, FMT_TYPE_HASH, e, (size_t)elen, b->value, b->vlen);
		if (r < 0 && b->first_err == 0)
			b->first_err = r;
	}
}

/* The length and first byte of element `elem` of (db, key), or -errno. */
static long elem_len(unsigned db, const char *key, const char *elem, char *first)
{
	struct call *c = call_new(db, key);
	struct step *s = call_step(c, (struct step){.op = S_GET, .elem = elem});
	run_call(c);
	long ret = c->status < 0 ? c->status : s->ret < 0 ? s->ret : (long)s->got_len;
	*first = s->got_len > 0 ? s->got[0] : 0;
	free(c);
	return ret;
}

/* A call whose group of records is larger than a commit buffer (1 MiB) is
 * written whole (log.h, log_reserve); one larger than a segment fails and
 * changes nothing. */
static void test_big_call(void)
{
	enum { VALUE = 60000 };
	char *value = malloc(VALUE);
	memset(value, 'b', VALUE);
	static const struct {
		const char *key;
		int n, want;
	} calls[] = {{"big1", 20, 0}, {"big2", 40, 0}, {"big3", 80, -E2BIG}};
	for (size_t i = 0; i < 3; i++) {
		struct big_put b = {.n = calls[i].n, .value = value, .vlen = VALUE};
		struct call *c = call_new(6, calls[i].key);
		c->body = big_put_body;
		c->arg = &b;
		run_call(c);
		CHECK(c->status == calls[i].want, "a call of %d x %d bytes: %d, want %d",
		      calls[i].n, VALUE, c->status, calls[i].want);
		free(c);
	}
	free(value);
	for (int round = 0; round < 2; round++) {
		const char *when = round ? "after reopen" : "after the calls";
		char first = 0;
		CHECK(key_info(6, "big1").count == 20 && key_info(6, "big2").count == 40,
		      "%s: counts %" PRIu64 " %" PRIu64, when, key_info(6, "big1").count,
		      key_info(6, "big2").count);
		CHECK(elem_len(6, "big2", "b39", &first) == VALUE && first == 'b',
		      "%s: the last element of the 2.4 MB call", when);
		CHECK(!key_info(6, "big3").exists, "%s: the call past a segment left its key",
		      when);
		CHECK(key_count(6) == 2, "%s: count %" PRIu64, when, key_count(6));
		if (round == 0)
			reopen_store();
	}
}

/* Garbage collection under collections: their records never hold live
 * bytes (the index has their values), so the segments that hold only them
 * are deleted once the index has persisted them; every element reads back
 * after, and after a reopen. */
static void test_gc(void)
{
	close_store();
	gc_live_ratio = 0.5;
	segment_size = 1u << 20;
	open_store();
	enum { VALUE = 8000, ELEMS = 64, ROUNDS = 8 };
	char *value = malloc(VALUE);
	for (int round = 0; round < ROUNDS; round++) {
		memset(value, 'a' + round, VALUE);
		struct big_put b = {.n = ELEMS, .value = value, .vlen = VALUE};
		struct call *c = call_new(7, "gch");
		c->body = big_put_body;
		c->arg = &b;
		run_call(c);
		CHECK(c->status == 0, "round %d: %d", round, c->status);
		free(c);
	}
	free(value);
	double deadline = test_now() + 30;
	while (store_stats().gc_segments_deleted == 0 && test_now() < deadline)
		usleep(50000);
	struct store_stats s = store_stats();
	CHECK(s.gc_segments_deleted > 0,
	      "GC deleted no segment of %d x %d KiB of collection"
	      " records (log %" PRIu64 " bytes)",
	      ROUNDS, ELEMS * VALUE / 1024, s.log_bytes);
	CHECK(s.live_bytes == 0, "%" PRIu64 " live bytes with only collections", s.live_bytes);
	for (int round = 0; round < 2; round++) {
		int wrong = 0;
		for (int i = 0; i < ELEMS; i++) {
			char e[8], first = 0;
			snprintf(e, sizeof(e), "b%d", i);
			wrong +=
			    elem_len(7, "gch", e, &first) != VALUE || first != 'a' + ROUNDS - 1;
		}
		CHECK(wrong == 0 && key_info(7, "gch").count == ELEMS,
		      "%s: %d elements wrong after GC", round ? "after reopen" : "before reopen",
		      wrong);
		if (round == 0)
			reopen_store();
	}
	close_store();
	gc_live_ratio = 0;
	segment_size = 4u << 20;
	open_store();
}

/* ---- the index under the store ------------------------------------------ */

/* What a collection should be: its type and elements (values by name). */
struct expect_coll {
	bool exists;
	uint8_t type;
	uint64_t count;
	size_t n; /* elements listed (exists: all of them) */
	const char *const *elems;
	const char *const *values; /* NULL: not checked */
};

struct elem_rows {
	uint64_t n;
	const struct expect_coll *want;
	int unknown; /* rows the expectation does not list, or with another value */
};

static int elem_rows_visit(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
                           size_t vlen, uint32_t hash)
{
	struct elem_rows *r = arg;
	(void)hash;
	r->n++;
	size_t i = 0;
	while (i < r->want->n &&
	       (strlen(r->want->elems[i]) != elen || memcmp(r->want->elems[i], elem, elen) != 0))
		i++;
	if (i == r->want->n ||
	    (r->want->values != NULL &&
	     (strlen(r->want->values[i]) != vlen || memcmp(r->want->values[i], value, vlen) != 0)))
		r->unknown++;
	return 0;
}

/* With the store closed: the index's rows for database `db` (a number, mapped
 * by the index's map) and its key `key` are what `want` says — the key row's
 * type and count, and exactly count element rows under its version.  Returns
 * the collection's version (0 if it does not exist). */
static uint64_t check_index_coll(struct idx *ix, uint32_t id, const char *key,
                                 const struct expect_coll *want, const char *when)
{
	uint8_t ident[FMT_KEY_IDENT_HEAD + 64], prefix[FMT_ELEM_IDENT_HEAD + 64];
	size_t len = fmt_key_ident(ident, id, key, strlen(key));
	struct idx_entry e;
	int ret = idx_get(ix, ident, len, IDX_BLOCKING, &e, NULL);
	if (!want->exists) {
		CHECK(ret == -ENOENT, "%s: index: %s of id %" PRIu32 " has a row (%d)", when, key,
		      id, ret);
		return 0;
	}
	CHECK(ret == 0 && e.type == want->type && e.count == want->count,
	      "%s: index: %s of id %" PRIu32 ": %d type %u count %" PRIu64 ", want %u %" PRIu64,
	      when, key, id, ret, ret == 0 ? e.type : 0, ret == 0 ? e.count : 0, want->type,
	      want->count);
	if (ret != 0)
		return 0;
	fmt_elem_ident(prefix, id, key, strlen(key), e.version, NULL, 0);
	struct elem_rows rows = {.want = want};
	uint32_t cursor = 0;
	while ((ret = idx_elem_scan(ix, prefix, fmt_elem_prefix_len(strlen(key)), cursor, 1000,
	                            elem_rows_visit, &rows, &cursor)) == 1)
		;
	CHECK(ret == 0 && rows.n == want->count && rows.unknown == 0,
	      "%s: index: %s of id %" PRIu32 " version %" PRIu64 ": %" PRIu64 " element rows (%d"
	      " unexpected), its count %" PRIu64,
	      when, key, id, e.version, rows.n, rows.unknown, want->count);
	return e.version;
}

/* With the store closed: the map has DATABASES distinct ids below next_id;
 * ids[] gets them.  A store that never wrote has no map yet (index.h):
 * with `may_be_new`, its ids are then 0..DATABASES-1. */
static void check_index_map(struct idx *ix, uint32_t *ids, bool may_be_new, const char *when)
{
	uint32_t n = 0, next = 0;
	int ret = idx_dbmap(ix, ids, DATABASES, &n, &next);
	if (ret == -ENOENT && may_be_new) {
		for (uint32_t i = 0; i < DATABASES; i++)
			ids[i] = i;
		return;
	}
	CHECK(ret == 0 && n == DATABASES, "%s: index map: %d, %" PRIu32 " databases", when, ret, n);
	for (uint32_t i = 0; i < n; i++) {
		CHECK(ids[i] < next, "%s: id %" PRIu32 " not below next_id %" PRIu32, when, ids[i],
		      next);
		for (uint32_t j = 0; j < i; j++)
			CHECK(ids[i] != ids[j],
			      "%s: databases %" PRIu32 " and %" PRIu32 " share id %" PRIu32, when,
			      i, j, ids[i]);
	}
}

struct count_rows {
	uint32_t id;
	uint64_t keys;
};

static void count_rows_visit(void *arg, uint32_t db, const struct idx_count *c)
{
	struct count_rows *r = arg;
	if (db == r->id)
		r->keys = c->keys;
}

static uint64_t index_count(struct idx *ix, uint32_t id)
{
	struct count_rows r = {.id = id};
	CHECK(idx_counts(ix, count_rows_visit, &r) == 0, "idx_counts failed");
	return r.keys;
}

static struct idx *open_index(void)
{
	char path[600], err[512];
	snprintf(path, sizeof(path), "%s/index", dir);
	struct idx *ix;
	if (idx_open(&ix, shared, path, err, sizeof(err)) < 0) {
		fprintf(stderr, "FAIL: idx_open %s: %s\n", path, err);
		_exit(1);
	}
	return ix;
}

/* ---- a model of random calls ------------------------------------------- */

#define M_DBS   3
#define M_KEYS  6 /* m0..m2 hashes, m3..m5 sets */
#define M_ELEMS 40

/* Element values, -1 for absent: a collection exists while one is there. */
static int model[M_DBS][M_KEYS][M_ELEMS];

static uint32_t rng_state;
static uint32_t rng(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 8;
}

static const char *const m_names[M_KEYS] = {"m0", "m1", "m2", "m3", "m4", "m5"};
static char m_elems[M_ELEMS][8];
static char m_values[1 << 16][8];

static uint8_t m_type(int k)
{
	return k < 3 ? FMT_TYPE_HASH : FMT_TYPE_SET;
}

static uint64_t m_count(int db, int k)
{
	uint64_t n = 0;
	for (int e = 0; e < M_ELEMS; e++)
		n += model[db][k][e] >= 0;
	return n;
}

/* One random call: 1..3 keys (maybe repeated), 1..6 steps; sometimes it
 * ends in an abort (the model then does not change).  `value_id` numbers
 * the values written. */
static struct call *random_call(unsigned *value_id)
{
	int n_keys = 1 + (int)(rng() % 3), dbs[3], ks[3];
	for (int i = 0; i < n_keys; i++) {
		dbs[i] = (int)(rng() % M_DBS);
		ks[i] = (int)(rng() % M_KEYS);
	}
	struct call *c = call_new((unsigned)dbs[0], m_names[ks[0]]);
	for (int i = 1; i < n_keys; i++)
		call_key(c, (unsigned)dbs[i], m_names[ks[i]]);
	int n_steps = 1 + (int)(rng() % 6);
	int saved[M_DBS][M_KEYS][M_ELEMS];
	memcpy(saved, model, sizeof(saved));
	for (int s = 0; s < n_steps; s++) {
		int k = (int)(rng() % (unsigned)n_keys), e = (int)(rng() % M_ELEMS);
		int *m = &model[dbs[k]][ks[k]][e];
		uint32_t r = rng() % 16;
		if (r < 9) {
			unsigned v = (*value_id)++ % (1 << 16);
			call_step(c, (struct step){.op = S_PUT,
			                           .k = (size_t)k,
			                           .type = m_type(ks[k]),
			                           .elem = m_elems[e],
			                           .value = m_type(ks[k]) == FMT_TYPE_HASH
			                                        ? m_values[v]
			                                        : NULL});
			*m = m_type(ks[k]) == FMT_TYPE_HASH ? (int)v : 0;
		} else if (r < 14) {
			call_step(c,
			          (struct step){.op = S_DEL, .k = (size_t)k, .elem = m_elems[e]});
			*m = -1;
		} else if (r < 15) {
			call_step(c, (struct step){.op = S_DELETE_KEY, .k = (size_t)k});
			for (int i = 0; i < M_ELEMS; i++)
				model[dbs[k]][ks[k]][i] = -1;
		} else {
			call_step(c,
			          (struct step){.op = S_MARK, .k = (size_t)k, .type = FMT_ENC_BIG});
		}
	}
	uint32_t end = rng() % 20;
	if (end == 0 || end == 1) {
		call_step(c, end == 0 ? (struct step){.op = S_ABORT}
		                      : (struct step){.op = S_ABORT_ERROR, .err = -ECANCELED});
		memcpy(model, saved, sizeof(saved));
	}
	return c;
}

/* The store against the model: every collection's type, count and elements
 * (walked, so none is extra), and each database's key count. */
static void check_model(const char *when)
{
	struct coll_dump *d = dump_new(M_ELEMS + 8);
	int wrong = 0;
	for (int db = 0; db < M_DBS; db++) {
		uint64_t keys = 0;
		for (int k = 0; k < M_KEYS; k++) {
			uint64_t count = m_count(db, k);
			keys += count > 0;
			coll_dump((unsigned)db, m_names[k], 7, d);
			bool ok = d->exists == (count > 0) && d->count == count && d->n == count &&
			          (count == 0 || d->type == m_type(k));
			for (size_t i = 0; ok && i < d->n; i++) {
				int e = atoi(d->elems[i] + 1);
				int v = e >= 0 && e < M_ELEMS ? model[db][k][e] : -1;
				ok = v >= 0 && (m_type(k) == FMT_TYPE_SET
				                    ? d->values[i][0] == '\0'
				                    : strcmp(d->values[i], m_values[v]) == 0);
			}
			if (!ok && wrong++ < 5)
				fprintf(stderr,
				        "%s: database %d %s: exists %d count %" PRIu64
				        " walked %zu;"
				        " the model has %" PRIu64 "\n",
				        when, db, m_names[k], d->exists, d->count, d->n, count);
		}
		CHECK(key_count((unsigned)db) == keys,
		      "%s: database %d counts %" PRIu64 ", the model %" PRIu64, when, db,
		      key_count((unsigned)db), keys);
	}
	CHECK(wrong == 0, "%s: %d collections differ from the model", when, wrong);
	dump_free(d);
}

/* The index (store closed) against the model: key rows, element rows under
 * each collection's version, count rows, the map.  versions[db][k] gets
 * each collection's version. */
static void check_model_index(const char *when, uint64_t versions[M_DBS][M_KEYS])
{
	struct idx *ix = open_index();
	uint32_t ids[DATABASES];
	check_index_map(ix, ids, false, when);
	for (int db = 0; db < M_DBS; db++) {
		uint64_t keys = 0;
		for (int k = 0; k < M_KEYS; k++) {
			const char *elems[M_ELEMS], *values[M_ELEMS];
			size_t n = 0;
			for (int e = 0; e < M_ELEMS; e++)
				if (model[db][k][e] >= 0) {
					elems[n] = m_elems[e];
					values[n++] = m_type(k) == FMT_TYPE_SET
					                  ? ""
					                  : m_values[model[db][k][e]];
				}
			struct expect_coll want = {.exists = n > 0,
			                           .type = m_type(k),
			                           .count = n,
			                           .n = n,
			                           .elems = elems,
			                           .values = values};
			keys += n > 0;
			versions[db][k] = check_index_coll(ix, ids[db], m_names[k], &want, when);
		}
		CHECK(index_count(ix, ids[db]) == keys,
		      "%s: the count row of database %d: %" PRIu64 ", want %" PRIu64, when, db,
		      index_count(ix, ids[db]), keys);
	}
	idx_close(ix);
}

static void model_swap(int a, int b)
{
	int t[M_KEYS][M_ELEMS];
	memcpy(t, model[a], sizeof(t));
	memcpy(model[a], model[b], sizeof(t));
	memcpy(model[b], t, sizeof(t));
}

/* Random calls over three databases (with a SWAPDB and a FLUSHDB among
 * them), checked against a model through the store, after a clean reopen,
 * and through the index itself; a collection deleted and created again gets
 * a new, higher version. */
static void test_model(void)
{
	memset(model, 0xFF, sizeof(model)); /* -1: absent */
	for (int e = 0; e < M_ELEMS; e++)
		snprintf(m_elems[e], sizeof(m_elems[e]), "x%d", e);
	for (int v = 0; v < (1 << 16); v++)
		snprintf(m_values[v], sizeof(m_values[v]), "v%d", v);
	rng_state = 12345;
	unsigned value_id = 0;
	enum { OPS = 2000, BATCH = 32 };
	for (int op = 0; op < OPS; op += BATCH) {
		struct jobs js = {0};
		for (int i = op; i < op + BATCH; i++)
			jobs_add_call(&js, random_call(&value_id));
		jobs_run(&js);
		for (size_t i = 0; i < js.n; i++) {
			int want_status = 0;
			struct call *c = js.j[i].call;
			if (c->n_steps > 0 && c->steps[c->n_steps - 1].op == S_ABORT_ERROR)
				want_status = -ECANCELED;
			CHECK(c->status == want_status, "call %d: %d", op + (int)i, c->status);
			free(c);
		}
		if (op == 704) {
			CHECK(test_store_swap_db(pool, st, 0, 2, 30) == 0, "SWAPDB 0 2");
			model_swap(0, 2);
		} else if (op == 1408) {
			CHECK(test_store_flush(pool, st, 1, 30) == 0, "FLUSHDB 1");
			memset(model[1], 0xFF, sizeof(model[1]));
		} else if (op == 1024) {
			check_model("half way");
			reopen_store();
			check_model("half way, reopened");
		}
	}
	check_model("after the calls");
	uint64_t keys = 0, elems = 0;
	for (int db = 0; db < M_DBS; db++)
		for (int k = 0; k < M_KEYS; k++) {
			keys += m_count(db, k) > 0;
			elems += m_count(db, k);
		}
	printf("  the model: %" PRIu64 " collections, %" PRIu64 " elements\n", keys, elems);
	CHECK(keys > M_DBS * M_KEYS / 2, "the random calls left only %" PRIu64 " collections",
	      keys);
	uint64_t versions[M_DBS][M_KEYS], again[M_DBS][M_KEYS];
	close_store();
	check_model_index("the index after the calls", versions);
	open_store();
	check_model("after a clean reopen");

	/* Every collection deleted and created again: a new, higher version. */
	for (int db = 0; db < M_DBS; db++)
		for (int k = 0; k < M_KEYS; k++) {
			delete_key((unsigned)db, m_names[k]);
			put_elem((unsigned)db, m_names[k], m_type(k), m_elems[1],
			         m_type(k) == FMT_TYPE_HASH ? m_values[7] : NULL);
			for (int e = 0; e < M_ELEMS; e++)
				model[db][k][e] =
				    e == 1 ? (m_type(k) == FMT_TYPE_HASH ? 7 : 0) : -1;
		}
	check_model("after deleting and creating every collection");
	close_store();
	check_model_index("the index after the new collections", again);
	int same = 0;
	for (int db = 0; db < M_DBS; db++)
		for (int k = 0; k < M_KEYS; k++)
			same += versions[db][k] != 0 && again[db][k] <= versions[db][k];
	CHECK(same == 0, "%d collections created again without a higher version", same);
	open_store();
}

/* ---- crashes ----------------------------------------------------------- */

/* The crash workload, a pure function of the op number i:
 *   i % 500 == 250: SWAPDB 1 2;  i % 500 == 499: FLUSHDB 2;
 *   otherwise a call over S (database 0), A<p> (database p % 3, a hash) and
 *   B<p> (database (p + 1) % 3, a set), p = i % 8: it sets S's "seq" to i and
 *   puts e<i> into A<p> and B<p>; from i = 50 on it removes e<i-50> from
 *   A<q> and B<q>, q = (i - 50) % 8; when i % 101 == 0 it deletes A<w> and
 *   B<w>, w = (i / 101) % 8, whole (a key may be named twice).
 * Calls run in submission order (each names S), so the log holds them in
 * that order and recovery leaves the state after some op R: S's "seq" says
 * which (or R + 1 when op R + 1 is a SWAPDB or FLUSHDB). */
#define CRASH_DBS    3
#define CRASH_NAMES  17 /* S, A0..A7, B0..B7 */
#define CRASH_OPS    (1u << 19)
#define CRASH_WINDOW 32

enum crash_op { CRASH_CALL, CRASH_SWAP, CRASH_FLUSH };

static enum crash_op crash_op_of(uint32_t i)
{
	return i % 500 == 250 ? CRASH_SWAP : i % 500 == 499 ? CRASH_FLUSH : CRASH_CALL;
}

static const char *crash_name(int n)
{
	static char names[CRASH_NAMES][4];
	snprintf(names[n], sizeof(names[n]),
	         n == 0   ? "S"
	         : n <= 8 ? "A%d"
	                  : "B%d",
	         n == 0 ? 0 : (n - 1) % 8);
	return names[n];
}

static unsigned crash_db(int n)
{
	return n == 0 ? 0 : n <= 8 ? (unsigned)(n - 1) % 3 : (unsigned)(n - 9 + 1) % 3;
}

/* The model: which e<i> each (database, name) holds (a bit per i). */
struct crash_model {
	uint8_t *bits[CRASH_DBS][CRASH_NAMES];
	uint64_t count[CRASH_DBS][CRASH_NAMES];
	int64_t seq; /* S's "seq", -1 while absent */
};

static void cm_set(struct crash_model *m, unsigned db, int n, uint32_t i, bool on)
{
	uint8_t *b = &m->bits[db][n][i / 8], bit = (uint8_t)(1u << (i % 8));
	if (on != ((*b & bit) != 0))
		m->count[db][n] += on ? 1 : (uint64_t)-1;
	*b = on ? *b | bit : *b & (uint8_t)~bit;
}

static bool cm_get(const struct crash_model *m, unsigned db, int n, uint32_t i)
{
	return (m->bits[db][n][i / 8] >> (i % 8)) & 1;
}

static void cm_clear(struct crash_model *m, unsigned db, int n)
{
	memset(m->bits[db][n], 0, CRASH_OPS / 8);
	m->count[db][n] = 0;
}

static void cm_init(struct crash_model *m)
{
	for (unsigned db = 0; db < CRASH_DBS; db++)
		for (int n = 0; n < CRASH_NAMES; n++) {
			if (m->bits[db][n] == NULL)
				m->bits[db][n] = malloc(CRASH_OPS / 8);
			if (m->bits[db][n] == NULL)
				_exit(1);
			cm_clear(m, db, n);
		}
	m->seq = -1;
}

/* The pair names of op i: A<p> is name 1 + p, B<p> name 9 + p. */
static void cm_apply(struct crash_model *m, uint32_t i)
{
	enum crash_op op = crash_op_of(i);
	if (op == CRASH_SWAP) {
		for (int n = 0; n < CRASH_NAMES; n++) {
			uint8_t *t = m->bits[1][n];
			uint64_t c = m->count[1][n];
			m->bits[1][n] = m->bits[2][n];
			m->count[1][n] = m->count[2][n];
			m->bits[2][n] = t;
			m->count[2][n] = c;
		}
		return;
	}
	if (op == CRASH_FLUSH) {
		for (int n = 0; n < CRASH_NAMES; n++)
			cm_clear(m, 2, n);
		return;
	}
	int p = (int)(i % 8);
	m->seq = i;
	cm_set(m, crash_db(1 + p), 1 + p, i, true);
	cm_set(m, crash_db(9 + p), 9 + p, i, true);
	if (i >= 50) {
		int q = (int)((i - 50) % 8);
		cm_set(m, crash_db(1 + q), 1 + q, i - 50, false);
		cm_set(m, crash_db(9 + q), 9 + q, i - 50, false);
	}
	if (i % 101 == 0) {
		int w = (int)((i / 101) % 8);
		cm_clear(m, crash_db(1 + w), 1 + w);
		cm_clear(m, crash_db(9 + w), 9 + w);
	}
}

/* One op of the writer, until done. */
struct crash_req {
	struct call *call;     /* a call, or ... */
	struct store_req dbop; /* ... a SWAPDB / FLUSHDB */
	uint32_t i;
	char seq[16], value[16], e[16], old[16]; /* the call's strings */
};

/* The call of op r->i (its steps in the order cm_apply takes them). */
static struct call *crash_call(struct crash_req *r)
{
	uint32_t i = r->i;
	int p = (int)(i % 8);
	char *seq = r->seq, *value = r->value, *e = r->e, *old = r->old;
	snprintf(seq, sizeof(r->seq), "%u", i);
	snprintf(value, sizeof(r->value), "v%u", i);
	snprintf(e, sizeof(r->e), "e%u", i);
	struct call *c = call_new(0, "S");
	size_t a = call_key(c, crash_db(1 + p), crash_name(1 + p));
	size_t b = call_key(c, crash_db(9 + p), crash_name(9 + p));
	call_step(c,
	          (struct step){.op = S_PUT, .type = FMT_TYPE_HASH, .elem = "seq", .value = seq});
	call_step(c, (struct step){
	                 .op = S_PUT, .k = a, .type = FMT_TYPE_HASH, .elem = e, .value = value});
	call_step(c, (struct step){.op = S_PUT, .k = b, .type = FMT_TYPE_SET, .elem = e});
	if (i >= 50) {
		int q = (int)((i - 50) % 8);
		size_t qa = call_key(c, crash_db(1 + q), crash_name(1 + q));
		size_t qb = call_key(c, crash_db(9 + q), crash_name(9 + q));
		snprintf(old, sizeof(r->old), "e%u", i - 50);
		call_step(c, (struct step){.op = S_DEL, .k = qa, .elem = old});
		call_step(c, (struct step){.op = S_DEL, .k = qb, .elem = old});
	}
	if (i % 101 == 0) {
		int w = (int)((i / 101) % 8);
		size_t wa = call_key(c, crash_db(1 + w), crash_name(1 + w));
		size_t wb = call_key(c, crash_db(9 + w), crash_name(9 + w));
		call_step(c, (struct step){.op = S_DELETE_KEY, .k = wa});
		call_step(c, (struct step){.op = S_DELETE_KEY, .k = wb});
	}
	return c;
}

/* ---- the writer (a process of its own, killed) ---- */

static int ack_fd;
static uint32_t crash_next;
static unsigned crash_inflight;

static void crash_pump(void);

static void crash_acked(uint32_t i, int status)
{
	if (status == 0 && write(ack_fd, &i, sizeof(i)) != sizeof(i))
		_exit(3);
	crash_inflight--;
	crash_pump();
}

static void crash_call_done(struct store_req *req)
{
	struct call *c = container_of(req, struct call, req);
	struct crash_req *r = c->arg;
	crash_acked(r->i, req->status);
	free(c);
	free(r);
}

static void crash_dbop_done(struct store_req *req)
{
	struct crash_req *r = container_of(req, struct crash_req, dbop);
	crash_acked(r->i, req->status);
	free(r);
}

static void crash_pump(void)
{
	while (crash_inflight < CRASH_WINDOW && crash_next < CRASH_OPS) {
		struct crash_req *r = calloc(1, sizeof(*r));
		if (r == NULL)
			_exit(2);
		r->i = crash_next++;
		crash_inflight++;
		switch (crash_op_of(r->i)) {
		case CRASH_CALL:
			r->call = crash_call(r);
			r->call->arg = r;
			r->call->req.done = crash_call_done;
			store_submit(st, &r->call->req);
			break;
		case CRASH_SWAP:
			r->dbop.done = crash_dbop_done;
			store_swap_db(st, 1, 2, &r->dbop);
			break;
		case CRASH_FLUSH:
			r->dbop.done = crash_dbop_done;
			store_flush(st, 2, &r->dbop);
			break;
		}
	}
}

static struct px_timer crash_checkpoint_timer;

/* Flushes the index now and then, so a crash finds part of the calls in it. */
static void crash_checkpoint(struct px *px, struct px_timer *t)
{
	(void)px;
	(void)t;
	store_checkpoint(st);
}

static void writer_start(void *arg)
{
	struct open_args *a = arg;
	open_step(a);
	if (a->ret < 0) {
		fprintf(stderr, "writer: store_open: %s\n", a->err);
		_exit(2);
	}
	px_timer_start(px_current(), &crash_checkpoint_timer, 10000000, 10000000, crash_checkpoint);
	crash_pump();
}

/* Runs ops from `first` on until killed. */
static int crash_writer(uint32_t first, int fd)
{
	char err[256];
	ack_fd = fd;
	crash_next = first;
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0)
		return 2;
	pool = test_pool(1, 256, 50, 256);
	static struct open_args a;
	pool_run_on(pool, 0, writer_start, &a);
	for (;;)
		pause();
}

/* ---- the verifier (a process of its own) ---- */

/* True if the store holds exactly the model's state; with `say`, the first
 * differences are printed. */
static bool crash_matches(const struct crash_model *m, bool say)
{
	struct coll_dump *d = dump_new(8192);
	int wrong = 0;
	for (unsigned db = 0; db < CRASH_DBS; db++) {
		uint64_t keys = 0;
		for (int n = 0; n < CRASH_NAMES; n++) {
			uint64_t count = n == 0 && db == 0 ? (m->seq >= 0) : m->count[db][n];
			keys += count > 0;
			if (n == 0 && db != 0)
				continue;
			coll_dump(db, crash_name(n), 1000, d);
			bool ok = d->exists == (count > 0) && d->count == count && d->n == count;
			for (size_t k = 0; ok && k < d->n && k < d->cap; k++) {
				if (n == 0) {
					ok = strcmp(d->elems[k], "seq") == 0 &&
					     atoll(d->values[k]) == m->seq;
					continue;
				}
				uint32_t i = (uint32_t)strtoul(d->elems[k] + 1, NULL, 10);
				char want[16];
				snprintf(want, sizeof(want), "v%u", i);
				ok = d->elems[k][0] == 'e' && i < CRASH_OPS &&
				     cm_get(m, db, n, i) &&
				     strcmp(d->values[k], n <= 8 ? want : "") == 0;
			}
			if (!ok && say && wrong < 5)
				fprintf(stderr,
				        "database %u %s: exists %d count %" PRIu64 " walked %zu;"
				        " the model has %" PRIu64 "\n",
				        db, crash_name(n), d->exists, d->count, d->n, count);
			wrong += !ok;
		}
		if (key_count(db) != keys) {
			if (say)
				fprintf(stderr,
				        "database %u counts %" PRIu64 " keys, the model %" PRIu64
				        "\n",
				        db, key_count(db), keys);
			wrong++;
		}
	}
	dump_free(d);
	return wrong == 0;
}

/* Opens the store (recovery), finds the op R its state is after, checks it
 * against the model and the index under it.  Writes R (int64) on fd.
 * Exit status 0 when every check passes. */
static int crash_verifier(int64_t start, int64_t must_have, int fd)
{
	char err[256];
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0)
		return 2;
	pool = test_pool(1, 256, 50, 256);
	open_store();
	char seq[32] = "";
	int64_t r = get_elem(0, "S", "seq", seq, sizeof(seq)) == 0 ? atoll(seq) : -1;
	static struct crash_model m;
	cm_init(&m);
	for (int64_t i = 0; i <= r; i++)
		cm_apply(&m, (uint32_t)i);
	bool ok = crash_matches(&m, false);
	if (!ok && crash_op_of((uint32_t)(r + 1)) != CRASH_CALL) {
		cm_apply(&m, (uint32_t)(r + 1)); /* the SWAPDB or FLUSHDB after it made it */
		ok = crash_matches(&m, false);
		if (ok)
			r++;
	}
	if (!ok) {
		fprintf(stderr,
		        "FAIL: the store is not the state after op %" PRId64
		        " (nor the one after): a call half applied, or not a prefix\n",
		        r);
		crash_matches(&m, true);
	}
	CHECK(r >= start - 1,
	      "the state is after op %" PRId64 ", a verifier found %" PRId64 " before", r,
	      start - 1);
	CHECK(r >= must_have,
	      "the state is after op %" PRId64 ", op %" PRId64 " was acknowledged durable", r,
	      must_have);
	if (write(fd, &r, sizeof(r)) != sizeof(r))
		return 2;
	close_store();
	/* The index under it: every collection's rows under its version. */
	struct idx *ix = open_index();
	uint32_t ids[DATABASES];
	check_index_map(ix, ids, r < 0, "after the crash");
	for (unsigned db = 0; db < CRASH_DBS && ok; db++) {
		for (int n = db == 0 ? 0 : 1; n < CRASH_NAMES; n++) {
			static const char *elems[CRASH_OPS / 64];
			static char names[CRASH_OPS / 64][16];
			size_t k = 0;
			uint64_t count = n == 0 ? (m.seq >= 0) : m.count[db][n];
			if (n == 0 && m.seq >= 0)
				elems[k++] = "seq";
			for (uint32_t i = 0;
			     n > 0 && i < CRASH_OPS && k < count && k < CRASH_OPS / 64; i++)
				if (cm_get(&m, db, n, i)) {
					snprintf(names[k], sizeof(names[k]), "e%u", i);
					elems[k] = names[k];
					k++;
				}
			struct expect_coll want = {.exists = count > 0,
			                           .type = n == 0 || n <= 8 ? FMT_TYPE_HASH
			                                                    : FMT_TYPE_SET,
			                           .count = count,
			                           .n = k,
			                           .elems = elems};
			check_index_coll(ix, ids[db], crash_name(n), &want, "after the crash");
		}
	}
	idx_close(ix);
	pool_stop(pool);
	idx_shared_destroy(shared);
	return ok && test_result() == 0 ? 0 : 1;
}

/* ---- the driver ---- */

/* Runs this program as `args` (a child of its own, fresh: no threads from
 * this process).  Returns its pid. */
static pid_t spawn(char *const args[])
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		execv("/proc/self/exe", args);
		_exit(127);
	}
	return pid;
}

static const char *durability_name(enum log_durability d)
{
	return d == LOG_DURABILITY_FSYNC ? "fsync" : d == LOG_DURABILITY_WRITE ? "write" : "none";
}

/* Kill cycles in one durability mode: a writer killed after 150..600 ms, a
 * verifier, again from where the verifier found the store. */
static int crash_cycles(const char *tmp, enum log_durability mode, unsigned cycles, unsigned *seed)
{
	char mode_arg[8], start_arg[24], fd_arg[16], must_arg[24];
	snprintf(dir, sizeof(dir), "%s/ringkv-test-coll-crash-%d-%s", tmp, (int)getpid(),
	         durability_name(mode));
	snprintf(mode_arg, sizeof(mode_arg), "%d", (int)mode);
	int64_t start = 0;
	int failed = 0;
	for (unsigned c = 0; c < cycles && !failed; c++) {
		int fds[2];
		if (pipe(fds) != 0)
			return 1;
		snprintf(start_arg, sizeof(start_arg), "%" PRId64, start);
		snprintf(fd_arg, sizeof(fd_arg), "%d", fds[1]);
		char *wargs[] = {"test_store_coll", "--crash-writer", dir, mode_arg,
		                 start_arg,         fd_arg,           NULL};
		pid_t pid = spawn(wargs);
		close(fds[1]);
		long run_ms = 150 + rand_r(seed) % 450; /* (a writer takes 50-150 ms to start) */
		double kill_at = test_now() + run_ms / 1000.0;
		int64_t max_acked = -1;
		unsigned acks = 0;
		for (;;) {
			double left = kill_at - test_now();
			struct pollfd p = {.fd = fds[0], .events = POLLIN};
			if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) < 0)
				break;
			if (!(p.revents & (POLLIN | POLLHUP)))
				continue;
			uint32_t ops[1024];
			ssize_t n = read(fds[0], ops, sizeof(ops));
			if (n <= 0)
				break;
			for (ssize_t i = 0; i < n / 4; i++, acks++)
				max_acked = (int64_t)ops[i] > max_acked ? ops[i] : max_acked;
		}
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		uint32_t ops[1024];
		ssize_t n;
		while ((n = read(fds[0], ops, sizeof(ops))) > 0)
			for (ssize_t i = 0; i < n / 4; i++, acks++)
				max_acked = (int64_t)ops[i] > max_acked ? ops[i] : max_acked;
		close(fds[0]);
		if (!WIFSIGNALED(status)) {
			fprintf(stderr,
			        "FAIL: cycle %u: the writer exited on its own (status %d)\n", c,
			        status);
			return 1;
		}
		/* Under `none` an acknowledged op may be lost; otherwise not. */
		int64_t must = mode == LOG_DURABILITY_NONE ? -1 : max_acked;
		if (pipe(fds) != 0)
			return 1;
		snprintf(must_arg, sizeof(must_arg), "%" PRId64, must);
		snprintf(fd_arg, sizeof(fd_arg), "%d", fds[1]);
		char *vargs[] = {"test_store_coll", "--crash-verify", dir,    mode_arg,
		                 start_arg,         must_arg,         fd_arg, NULL};
		pid = spawn(vargs);
		close(fds[1]);
		int64_t r = -2;
		if (read(fds[0], &r, sizeof(r)) != sizeof(r))
			r = -2;
		close(fds[0]);
		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || r < -1) {
			fprintf(stderr, "FAIL: cycle %u: verification failed (status %d)\n", c,
			        status);
			failed = 1;
		}
		printf("  cycle %u: killed after %ld ms; %u ops acknowledged (up to %" PRId64
		       "), the store is after op %" PRId64 "\n",
		       c, run_ms, acks, max_acked, r);
		fflush(stdout);
		start = r + 1;
	}
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return failed;
}

/* ---- holds and WATCH's hooks ------------------------------------------- */

struct hold {
	struct store_req req;
	struct store_key_ref more[2];
	atomic_int done;
};

static void hold_done(struct store_req *req)
{
	atomic_store(&container_of(req, struct hold, req)->done, 1);
}

static void hold_submit_step(void *arg)
{
	store_submit(st, arg);
}

static void hold_release_step(void *arg)
{
	store_release(st, arg);
}

static struct {
	unsigned touches, touch_dbs;
	int db, db2;
	unsigned key_db;
	char key[64];
} seen;

static void seen_touch(void *arg, unsigned db, const uint8_t *key, size_t len)
{
	(void)arg;
	seen.touches++;
	seen.key_db = db;
	snprintf(seen.key, sizeof(seen.key), "%.*s", (int)len, (const char *)key);
}

static void seen_touch_db(void *arg, int db, int db2)
{
	(void)arg;
	seen.touch_dbs++;
	seen.db = db;
	seen.db2 = db2;
}

static const struct store_watch seen_watch = {seen_touch, seen_touch_db, NULL};

static void watch_on_step(void *arg)
{
	store_set_watch(st, arg);
}

/* Waits up to `ms` for *done; returns whether it turned true. */
static bool wait_done(atomic_int *done, unsigned ms)
{
	for (unsigned i = 0; i < ms && !atomic_load(done); i++)
		usleep(1000);
	return atomic_load(done) != 0;
}

/* A hold keeps others' requests on its keys waiting, in order, until its
 * release, while its holder's run; it is granted only after the requests
 * submitted before it. */
static void test_holds(void)
{
	static int token;
	CHECK(plain_status(STORE_PUT, 0, "ha", "1", 0) == 0, "put ha");
	put_elem(0, "hs", FMT_TYPE_SET, "m", "");

	struct hold *h = calloc(1, sizeof(*h));
	struct plain *before = plain_new(STORE_UPDATE, 0, "ha", NULL, 0);
	struct plain *other = plain_new(STORE_UPDATE, 0, "ha", NULL, 0);
	struct plain *other_b = plain_new(STORE_PUT, 0, "hb", "o", 0);
	h->more[0] = (struct store_key_ref){0, (const uint8_t *)"hb", 2};
	h->more[1] = (struct store_key_ref){0, (const uint8_t *)"hs", 2};
	h->req = (struct store_req){.op = STORE_HOLD,
	                            .key = (const uint8_t *)"ha",
	                            .key_len = 2,
	                            .more_keys = h->more,
	                            .n_more_keys = 2,
	                            .holder = &token,
	                            .done = hold_done};
	struct jobs js = {0};
	jobs_add_plain(&js, before); /* ha: "1" -> "1x", before the hold */
	test_on_px(pool, jobs_step, &js);
	test_on_px(pool, hold_submit_step, &h->req);
	/* Another client's call on a held key and a free one: it heads the free
	 * key's queue and waits for the held one. */
	struct call *across = call_new(0, "hz");
	size_t k_held = call_key(across, 0, "hs");
	call_step(across, (struct step){.op = S_PUT, .k = k_held, .type = FMT_TYPE_SET,
	                                .elem = "late", .value = ""});
	js = (struct jobs){0};
	jobs_add_plain(&js, other);   /* after the hold: waits for the release */
	jobs_add_plain(&js, other_b); /* the same */
	jobs_add_call(&js, across);
	test_on_px(pool, jobs_step, &js);
	CHECK(wait_done(&h->done, 10000) && h->req.status == 0, "hold granted (status %d)",
	      h->req.status);
	CHECK(wait_done(&before->done, 1000), "the request before the hold ran");
	CHECK(!wait_done(&other->done, 100) && !atomic_load(&other_b->done),
	      "requests of others wait for the release");

	/* The holder's own requests run, in order, and see each other. */
	struct plain *mine1 = plain_new(STORE_UPDATE, 0, "ha", NULL, 0);
	struct plain *mine2 = plain_new(STORE_GET, 0, "ha", NULL, 0);
	struct plain *mine3 = plain_new(STORE_GET, 0, "hb", NULL, 0);
	struct plain *free_key = plain_new(STORE_PUT, 0, "hc", "c", 0); /* not held */
	mine1->req.holder = mine2->req.holder = mine3->req.holder = &token;
	js = (struct jobs){0};
	jobs_add_plain(&js, mine1);
	jobs_add_plain(&js, mine2);
	jobs_add_plain(&js, mine3);
	jobs_add_plain(&js, free_key);
	jobs_run(&js);
	CHECK(mine2->got_len == 3 && memcmp(mine2->got, "1xx", 3) == 0,
	      "the holder reads its own write: '%.*s'", (int)mine2->got_len, mine2->got);
	CHECK(mine3->status == -ENOENT, "hb absent while held");
	struct call *c = call_new(0, "hs"); /* a holder's call on a held set */
	c->req.holder = &token;
	call_step(c, (struct step){.op = S_PUT, .type = FMT_TYPE_SET, .elem = "n", .value = ""});
	run_call(c);
	CHECK(c->req.status == 0 && c->steps[0].ret == 1, "holder's call ran");
	free(c);
	CHECK(!atomic_load(&other->done), "others still wait");

	CHECK(!atomic_load(&across->done), "a call on a held key and a free one waits");
	test_on_px(pool, hold_release_step, &h->req);
	CHECK(wait_done(&other->done, 10000) && wait_done(&other_b->done, 10000),
	      "released: the others ran");
	CHECK(wait_done(&across->done, 10000) && across->req.status == 0 &&
	          across->steps[0].ret == 1,
	      "released: the call over a held and a free key ran (status %d)", across->req.status);
	free(across);
	struct plain *g = plain(STORE_GET, 0, "ha", NULL, 0);
	CHECK(g->got_len == 4 && memcmp(g->got, "1xxx", 4) == 0,
	      "others ran after the holder: '%.*s'", (int)g->got_len, g->got);
	free(g);
	CHECK(key_info(0, "hs").count == 3, "the set has its 3 members");

	/* A second hold of the same keys after the release is granted. */
	h->done = 0;
	test_on_px(pool, hold_submit_step, &h->req);
	CHECK(wait_done(&h->done, 10000) && h->req.status == 0, "hold granted again");
	test_on_px(pool, hold_release_step, &h->req);
	free(h);
	free(before);
	free(other);
	free(other_b);
	free(mine1);
	free(mine2);
	free(mine3);
	free(free_key);

	/* WATCH's hooks: a write, an element change, an expiry, a flush. */
	memset(&seen, 0, sizeof(seen));
	test_on_px(pool, watch_on_step, (void *)&seen_watch);
	CHECK(plain_status(STORE_PUT, 3, "wk", "v", 0) == 0, "put wk");
	CHECK(seen.touches == 1 && seen.key_db == 3 && strcmp(seen.key, "wk") == 0,
	      "a write touches its key (%u touches, db %u key '%s')", seen.touches, seen.key_db,
	      seen.key);
	CHECK(plain_status(STORE_PUT, 3, "wk", "v", STORE_NX) == -EEXIST &&
	          seen.touches == 1, "a refused write touches nothing");
	put_elem(3, "ws", FMT_TYPE_HASH, "f", "v");
	CHECK(seen.touches >= 2, "an element write touches its key");
	unsigned n = seen.touches;
	put_elem(3, "ws", FMT_TYPE_HASH, "f", "w"); /* (no metadata change) */
	CHECK(seen.touches > n, "an element overwrite touches its key");
	n = seen.touches;
	CHECK(set_expiry(3, "ws", now_ms() + 100000) == 0 && seen.touches == n + 1,
	      "an expiry touches its key");
	n = seen.touches;
	test_store_dbop(pool, st, 3, -1, 30);
	CHECK(seen.touch_dbs == 1 && seen.db == 3 && seen.db2 == -1, "FLUSHDB touches db 3");
	test_store_dbop(pool, st, 1, 3, 30);
	CHECK(seen.touch_dbs == 2 && seen.db == 1 && seen.db2 == 3, "SWAPDB touches dbs 1, 3");
	n = seen.touches;
	CHECK(plain_status(STORE_PUT, 1, "wk2", "v", 0) == 0 && seen.touches == n + 1 &&
	          seen.key_db == 1,
	      "after SWAPDB a key is touched under its database number (db %u)", seen.key_db);
	test_on_px(pool, watch_on_step, NULL);
	n = seen.touches;
	CHECK(plain_status(STORE_PUT, 3, "wk", "w", 0) == 0 && seen.touches == n,
	      "no hook: nothing touched");
}

/* ---- the subtests ------------------------------------------------------ */

static void reset_dir(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* The subtests, in the order a run without arguments takes; "crash" runs
 * its own processes, once per durability mode. */
/* ---- random pops (SPOP) ------------------------------------------------ */

#define POP_INITIAL 600  /* elements the collection starts with: > a sample */
#define POP_NAMES   1200 /* ... and the names added meanwhile come from */

/* A pop call: steps first, then store_txn_pop, then maybe an abort. */
struct pop_call {
	bool abort;
	int ret;
	char elem[32], value[32];
	size_t elen, vlen;
};

static int pop_visit(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value, size_t vlen)
{
	struct pop_call *p = arg;
	p->elen = elen < sizeof(p->elem) - 1 ? elen : sizeof(p->elem) - 1;
	p->vlen = vlen < sizeof(p->value) - 1 ? vlen : sizeof(p->value) - 1;
	memcpy(p->elem, elem, p->elen);
	memcpy(p->value, value, p->vlen);
	p->elem[p->elen] = p->value[p->vlen] = '\0';
	return 0;
}

static void pop_body(struct call *c, struct store_txn *t)
{
	struct pop_call *p = c->arg;
	for (size_t i = 0; i < c->n_steps; i++)
		run_step(t, &c->steps[i]);
	p->ret = store_txn_pop(t, 0, ((uint64_t)rng() << 40) ^ ((uint64_t)rng() << 16) ^ rng(),
	                       pop_visit, p);
	if (p->abort)
		store_txn_abort(t);
}

/* Pops from key "pop" of `type` after the steps already in c; checks the
 * element against the model (present, with its value) and, unless the
 * call aborts, takes it out.  Returns the element's number, or -1. */
static int pop_checked(struct call *c, struct pop_call *p, uint8_t type, int *pm, const char *when)
{
	c->body = pop_body;
	c->arg = p;
	run_call(c);
	CHECK(c->status == 0 && p->ret == 1, "%s: pop: status %d, returned %d", when, c->status,
	      p->ret);
	int e = p->elem[0] == 'p' ? atoi(p->elem + 1) : -1;
	bool ok = e >= 0 && e < POP_NAMES && pm[e] >= 0;
	if (ok && type == FMT_TYPE_HASH) {
		char want[16];
		snprintf(want, sizeof(want), "v%d", pm[e]);
		ok = strcmp(p->value, want) == 0;
	}
	CHECK(ok, "%s: popped %s = %s, which the collection %s", when, p->elem, p->value,
	      e >= 0 && e < POP_NAMES && pm[e] >= 0 ? "has with another value" : "has not");
	if (ok && !p->abort)
		pm[e] = -1;
	free(c);
	return ok ? e : -1;
}

/* Adds a step putting element `name` (a hash's field with `value`). */
static void pop_put(struct call *c, uint8_t type, const char *name, const char *value)
{
	call_step(c, (struct step){.op = S_PUT,
	                           .type = type,
	                           .elem = name,
	                           .value = type == FMT_TYPE_HASH ? value : NULL});
}

/* A random present element of the model, or -1. */
static int pop_any(const int *pm)
{
	int start = (int)(rng() % POP_NAMES);
	for (int i = 0; i < POP_NAMES; i++)
		if (pm[(start + i) % POP_NAMES] >= 0)
			return (start + i) % POP_NAMES;
	return -1;
}

/* store_txn_pop takes elements from a sample it keeps on the key: whatever
 * happens between pops — elements deleted (SREM), values changed (HSET),
 * elements added in a call that aborts after its pop refilled the sample,
 * pops that abort, a reopen — every pop gives an element the collection
 * has, with its current value, and the collection ends empty. */
static void test_pop(void)
{
	static char names[POP_NAMES][8], values[4096][8];
	for (int i = 0; i < POP_NAMES; i++)
		snprintf(names[i], sizeof(names[i]), "p%d", i);
	for (int i = 0; i < 4096; i++)
		snprintf(values[i], sizeof(values[i]), "v%d", i);
	rng_state = 777;
	/* A cache that keeps the key (used by every call) but not the elements
	 * popped or deleted: a pop must not take an element's absence from the
	 * key table alone. */
	size_t cache_was = cache_bytes;
	cache_bytes = 32u << 10;
	reopen_store();
	for (int pass = 0; pass < 2; pass++) {
		uint8_t type = pass == 0 ? FMT_TYPE_SET : FMT_TYPE_HASH;
		int pm[POP_NAMES], next_value = 0, pops = 0;
		for (int i = 0; i < POP_NAMES; i++)
			pm[i] = -1;
		for (int i = 0; i < POP_INITIAL; i += 20) {
			struct call *c = call_new(0, "pop");
			for (int j = i; j < i + 20; j++) {
				pm[j] = type == FMT_TYPE_HASH ? next_value++ : 0;
				pop_put(c, type, names[j], values[pm[j]]);
			}
			run_call(c);
			CHECK(c->status == 0, "fill: %d", c->status);
			free(c);
		}
		for (int round = 0; pop_any(pm) >= 0 && round < 4 * POP_NAMES; round++) {
			struct pop_call p = {0};
			struct call *c = call_new(0, "pop");
			/* The first half only pops and deletes: a sample lives until
			 * drained, so a deleted element in it would be popped. */
			int r = (int)(rng() % 10), e = pop_any(pm), added = -1, gone = -1,
			    gone_was = -1;
			if (round < POP_INITIAL / 2)
				r = r < 7 ? 0 : 6;
			if (r == 6) { /* an element deleted first: never popped */
				call_step(c, (struct step){.op = S_DEL, .elem = names[e]});
				pm[e] = -1;
				if (pop_any(pm) < 0) {
					run_call(c);
					free(c);
					break;
				}
			} else if (r == 7) { /* a value changed: popped with the new one */
				pm[e] = type == FMT_TYPE_HASH ? next_value++ % 4096 : 0;
				pop_put(c, type, names[e], values[pm[e]]);
			} else if (r == 8) { /* a pop that aborts: its element stays */
				p.abort = true;
			} else if (r == 9) {
				/* An element deleted (the sample goes), one added, a pop
				 * (a new sample, with the added one), then an abort: the
				 * added one must not be popped later. */
				for (int i = POP_INITIAL; i < POP_NAMES && added < 0; i++)
					if (pm[i] < 0)
						added = i;
				if (added >= 0) {
					gone = pop_any(pm);
					call_step(c,
					          (struct step){.op = S_DEL, .elem = names[gone]});
					pop_put(c, type, names[added], values[0]);
					p.abort = true;
				}
			}
			/* (In the aborting call of r == 9 the added element is there:
			 * its pop may give it.) */
			if (added >= 0) {
				gone_was = pm[gone]; /* (deleted in the call: never popped) */
				pm[gone] = -1;
				pm[added] = 0; /* (values[0], or a member) */
			}
			int popped =
			    pop_checked(c, &p, type, pm, type == FMT_TYPE_SET ? "set" : "hash");
			if (added >= 0) {
				pm[added] = -1;
				pm[gone] = gone_was;
			}
			if (popped >= 0 && !p.abort)
				pops++;
			if (round == POP_INITIAL / 2)
				reopen_store();
			else if (r == 6 && round < POP_INITIAL / 2 && round % 8 == 0)
				CHECK(settle(), "the index batch did not empty"); /* (the deleted
				element may leave the key table) */
		}
		CHECK(pop_any(pm) < 0, "the collection should have been popped empty");
		struct coll_dump *d = dump_new(8);
		coll_dump(0, "pop", 8, d);
		CHECK(!d->exists && d->n == 0, "after the last pop: exists %d, %zu elements",
		      d->exists, d->n);
		dump_free(d);
		struct pop_call p = {0};
		struct call *c = call_new(0, "pop");
		c->body = pop_body;
		c->arg = &p;
		run_call(c);
		CHECK(c->status == 0 && p.ret == 0, "a pop of no collection: %d, %d", c->status,
		      p.ret);
		free(c);
		CHECK(pops >= POP_INITIAL / 2, "only %d pops", pops);
	}
	cache_bytes = cache_was;
}

/* A set popped empty, one pop a call, while the index batch keeps every
 * pop's delete: each sample's walk goes on where the last ended and the
 * last one stops at the last member, so the walks visit each row about
 * once.  (Samples from random hashes crossed the popped windows again and
 * again: over 5x the rows here.) */
static void test_pop_walks(void)
{
	enum { N = 5000 };
	static char names[N][8];
	int pm[N];
	rng_state = 4242;
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "w%d", i);
		pm[i] = 0;
	}
	for (int i = 0; i < N; i += 20) {
		struct call *c = call_new(0, "walks");
		for (int j = i; j < i + 20; j++)
			pop_put(c, FMT_TYPE_SET, names[j], NULL);
		run_call(c);
		CHECK(c->status == 0, "fill: %d", c->status);
		free(c);
	}
	CHECK(settle(), "the index batch did not empty");
	uint64_t walked = store_stats().elem_rows_walked;
	int popped = 0;
	for (int i = 0; i < N; i++) {
		struct pop_call p = {0};
		struct call *c = call_new(0, "walks");
		c->body = pop_body;
		c->arg = &p;
		run_call(c);
		int e = p.elem[0] == 'w' ? atoi(p.elem + 1) : -1;
		bool ok = c->status == 0 && p.ret == 1 && e >= 0 && e < N && pm[e] == 0;
		CHECK(ok, "pop %d: status %d, returned %d, %s", i, c->status, p.ret, p.elem);
		free(c);
		if (!ok)
			break;
		pm[e] = -1;
		popped++;
	}
	walked = store_stats().elem_rows_walked - walked;
	CHECK(popped == N, "%d of %d pops", popped, N);
	CHECK(walked <= 2 * N, "popping %d members walked %llu element rows", N,
	      (unsigned long long)walked);
	printf("  %d pops walked %llu element rows\n", N, (unsigned long long)walked);
}

/* clang-format off */
static const struct {
	const char *name;
	void (*fn)(void);
} subtests[] = {
    {"elements", test_elements},
    {"recreate", test_recreate},
    {"expiry", test_expiry},
    {"walk", test_walk},
    {"multi_key", test_multi_key},
    {"ordering", test_ordering},
    {"abort", test_abort},
    {"databases", test_databases},
    {"model", test_model},
    {"scan_types", test_scan_types},
    {"big_call", test_big_call},
    {"gc", test_gc},
    {"holds", test_holds},
    {"pop", test_pop},
    {"pop_walks", test_pop_walks},
    {"crash", NULL},
};
/* clang-format on */

int main(int argc, char **argv)
{
	logging_level = LOG_LEVEL_WARN;
	if (argc == 6 && strcmp(argv[1], "--crash-writer") == 0) {
		snprintf(dir, sizeof(dir), "%s", argv[2]);
		durability = (enum log_durability)atoi(argv[3]);
		return crash_writer((uint32_t)strtoul(argv[4], NULL, 10), atoi(argv[5]));
	}
	if (argc == 7 && strcmp(argv[1], "--crash-verify") == 0) {
		snprintf(dir, sizeof(dir), "%s", argv[2]);
		durability = (enum log_durability)atoi(argv[3]);
		return crash_verifier(atoll(argv[4]), atoll(argv[5]), atoi(argv[6]));
	}
	size_t order[64], n;
	if (!TEST_PICK_SUBTESTS(argv[0], argv + 1, argc - 1, subtests, order, &n))
		return 1;

	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		return 77;
	char err[256];
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0) {
		fprintf(stderr, "idx_shared_create: %s\n", err);
		return 1;
	}
	pool = test_pool(1, 256, 50, 256);
	static const enum log_durability modes[] = {LOG_DURABILITY_FSYNC, LOG_DURABILITY_WRITE,
	                                            LOG_DURABILITY_NONE};
	for (size_t m = 0; m < 3; m++) {
		durability = modes[m];
		cache_bytes =
		    m == 0 ? 4096 : 64u << 20; /* fsync run: elements come from the index */
		printf("durability %s, cache %lu bytes\n", durability_name(durability),
		       (unsigned long)cache_bytes);
		for (size_t k = 0; k < n; k++) {
			if (subtests[order[k]].fn == NULL)
				continue;
			printf(" %s\n", subtests[order[k]].name);
			fflush(stdout);
			snprintf(dir, sizeof(dir), "%s/ringkv-test-coll-%d", tmp, (int)getpid());
			reset_dir();
			open_store();
			subtests[order[k]].fn();
			close_store();
			reset_dir();
		}
	}
	pool_stop(pool);
	idx_shared_destroy(shared);
	unsigned seed = (unsigned)time(NULL);
	for (size_t k = 0; k < n; k++) {
		if (subtests[order[k]].fn != NULL)
			continue;
		printf("crash (seed %u)\n", seed);
		for (size_t m = 0; m < 3; m++) {
			printf(" durability %s\n", durability_name(modes[m]));
			if (crash_cycles(tmp, modes[m], (unsigned)test_scaled(6), &seed) != 0)
				test_failures++;
		}
	}
	return test_result();
}
