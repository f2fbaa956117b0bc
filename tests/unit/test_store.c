/* test_store: one shard's store end to end on a real file system — every
 * operation (GET META PUT NX/XX/KEEPTTL/GET DELETE EXPIRE UPDATE) with Redis's
 * semantics; requests on one key run in order even when one waits for a disk
 * read; cold reads from the log through a tiny cache; the exact key count
 * across overwrites, deletes and expiry; FLUSHALL's order against the
 * requests around it; everything survives a clean reopen, in each durability
 * mode.
 *
 * Usage: test_store [SUBTEST...] runs the named subtests in that order (all,
 * in table order, without arguments).  Each subtest gets a fresh store in an
 * empty directory, so none depends on another or on their order. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/store.h"
#include "testutil.h"


static struct pool *pool;
static struct idx_shared *shared;
static struct store *st;
static char dir[512];
static enum log_durability durability;
static uint64_t cache_bytes = 64u << 20;

/* ---- steps on the proactor (as in test_log) ----------------------------- */

struct open_args {
	int ret;
	char err[512];
};

static void open_step(void *arg)
{
	struct open_args *a = arg;
	struct store_config cfg = {.dir = dir,
	                           .shard = 0,
	                           .databases = 16,
	                           .segment_size = 4u << 20,
	                           .durability = durability,
	                           .inline_max = 64,
	                           .cache_bytes = cache_bytes,
	                           .shared = shared};
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

/* ---- requests ---------------------------------------------------------- */

/* A finished request as the test sees it. */
struct result {
	int status;
	bool existed;
	char value[256];
	size_t len;
	uint64_t expiry_ms;
};

struct call {
	struct store_req req;
	struct result *out;
	char buf[256];          /* UPDATE's new value */
	atomic_ulong *counter;
};

static atomic_ulong calls_done;

static void call_done(struct store_req *req)
{
	struct call *c = container_of(req, struct call, req);
	if (c->out) {
		c->out->status = req->status;
		c->out->existed = req->existed;
		c->out->len = req->result ? req->result_len : req->result_len;
		if (req->result)
			memcpy(c->out->value, req->result,
			       req->result_len < sizeof(c->out->value) ? req->result_len
								       : sizeof(c->out->value));
		c->out->expiry_ms = req->result_expiry_ms;
	}
	free(c);
	atomic_fetch_add(&calls_done, 1);
}

/* EXPIRE's decision: the expiry the request carries (req->expiry_ms). */
static enum store_update_result expire_to(struct store_req *req, uint64_t old_expiry_ms)
{
	(void)old_expiry_ms;
	req->new_expiry_ms = req->expiry_ms;
	return STORE_UPDATE_WRITE;
}

/* Appends "x" to the value (or makes it "x"). */
static enum store_update_result append_x(struct store_req *req, const uint8_t *old, size_t len,
					 uint64_t expiry)
{
	struct call *c = container_of(req, struct call, req);
	size_t n = old ? len : 0;
	if (n + 1 > sizeof(c->buf))
		return STORE_UPDATE_KEEP;
	if (old)
		memcpy(c->buf, old, n);
	c->buf[n] = 'x';
	req->new_value = (const uint8_t *)c->buf;
	req->new_len = n + 1;
	req->new_expiry_ms = expiry;
	return STORE_UPDATE_WRITE;
}

struct batch {
	size_t n;
	struct {
		enum store_op op;
		unsigned db;
		const char *key;
		const char *value;
		uint64_t expiry_ms;
		unsigned flags;
		struct result *out;
	} r[16];
};

static void submit_step(void *arg)
{
	struct batch *b = arg;
	for (size_t i = 0; i < b->n; i++) {
		struct call *c = calloc(1, sizeof(*c));
		c->out = b->r[i].out;
		c->req.op = b->r[i].op;
		c->req.db = b->r[i].db;
		c->req.key = (const uint8_t *)b->r[i].key;
		c->req.key_len = strlen(b->r[i].key);
		c->req.value = (const uint8_t *)b->r[i].value;
		c->req.value_len = b->r[i].value ? strlen(b->r[i].value) : 0;
		c->req.expiry_ms = b->r[i].expiry_ms;
		c->req.flags = b->r[i].flags;
		c->req.update = append_x;
		c->req.expire = expire_to;
		c->req.done = call_done;
		store_submit(st, &c->req);
	}
}

/* Submits the batch in one loop iteration and waits for every reply. */
static void run_batch(struct batch *b)
{
	unsigned long target = atomic_load(&calls_done) + b->n;
	test_on_px(pool, submit_step, b);
	if (!test_wait_count(&calls_done, target, 30)) {
		fprintf(stderr, "FAIL: requests did not complete\n");
		_exit(1);
	}
}

static struct result one(enum store_op op, const char *key, const char *value, uint64_t expiry,
			 unsigned flags)
{
	struct result r;
	memset(&r, 0, sizeof(r));
	struct batch b = {.n = 1};
	b.r[0].op = op;
	b.r[0].key = key;
	b.r[0].value = value;
	b.r[0].expiry_ms = expiry;
	b.r[0].flags = flags;
	b.r[0].out = &r;
	run_batch(&b);
	return r;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t keys_now;
static void count_step(void *arg)
{
	keys_now = store_key_count(st, *(unsigned *)arg);
}

/* The key count of database `db`. */
static uint64_t db_key_count(unsigned db)
{
	test_on_px(pool, count_step, &db);
	return keys_now;
}

/* The key count of database 0, where the subtests write. */
static uint64_t key_count(void)
{
	return db_key_count(0);
}

static struct store_stats stats_now;
static void stats_step(void *arg)
{
	(void)arg;
	store_get_stats(st, &stats_now);
}

/* The store's statistics, read on its proactor. */
static struct store_stats store_stats(void)
{
	test_on_px(pool, stats_step, NULL);
	return stats_now;
}

#define EXPECT_VALUE(r, v, what)                                                           \
	CHECK((r).status == 0 && (r).len == strlen(v) && memcmp((r).value, v, strlen(v)) == 0, \
	      "%s: status %d value '%.*s', expected '%s'", what, (r).status, (int)(r).len,     \
	      (r).value, v)

/* ---- scenarios --------------------------------------------------------- */

static void test_operations(void)
{
	struct result r;
	r = one(STORE_GET, "missing", NULL, 0, 0);
	CHECK(r.status == -ENOENT, "GET missing: %d", r.status);
	r = one(STORE_PUT, "a", "1", 0, 0);
	CHECK(r.status == 0 && !r.existed, "PUT a: %d", r.status);
	EXPECT_VALUE(one(STORE_GET, "a", NULL, 0, 0), "1", "GET a");
	r = one(STORE_PUT, "a", "2", 0, STORE_NX);
	CHECK(r.status == -EEXIST, "PUT NX on existing: %d", r.status);
	r = one(STORE_PUT, "b", "2", 0, STORE_XX);
	CHECK(r.status == -EEXIST, "PUT XX on missing: %d", r.status);
	r = one(STORE_PUT, "a", "22", 0, STORE_XX | STORE_GET_OLD);
	EXPECT_VALUE(r, "1", "PUT XX GET returns the old value");
	CHECK(r.existed, "PUT XX GET: existed");
	EXPECT_VALUE(one(STORE_GET, "a", NULL, 0, 0), "22", "GET after PUT XX");
	r = one(STORE_META, "a", NULL, 0, 0);
	CHECK(r.status == 0 && r.len == 2 && r.expiry_ms == 0, "META a: %d len %zu", r.status, r.len);

	uint64_t later = now_ms() + 100000;
	one(STORE_EXPIRE, "a", NULL, later, 0);
	r = one(STORE_META, "a", NULL, 0, 0);
	CHECK(r.expiry_ms == later, "EXPIRE set %lu, META says %lu", (unsigned long)later,
	      (unsigned long)r.expiry_ms);
	one(STORE_PUT, "a", "3", 0, STORE_KEEPTTL);
	r = one(STORE_META, "a", NULL, 0, 0);
	CHECK(r.expiry_ms == later, "KEEPTTL kept %lu", (unsigned long)r.expiry_ms);
	one(STORE_PUT, "a", "4", 0, 0);
	r = one(STORE_META, "a", NULL, 0, 0);
	CHECK(r.expiry_ms == 0, "a plain PUT clears the expiry");

	one(STORE_PUT, "gone", "v", now_ms() + 50, 0);
	usleep(120000);
	r = one(STORE_GET, "gone", NULL, 0, 0);
	CHECK(r.status == -ENOENT, "GET of an expired key: %d", r.status);
	r = one(STORE_PUT, "gone", "w", 0, STORE_NX);
	CHECK(r.status == 0, "PUT NX over an expired key: %d", r.status);

	r = one(STORE_DELETE, "a", NULL, 0, STORE_GET_OLD);
	EXPECT_VALUE(r, "4", "DELETE GET returns the value");
	r = one(STORE_DELETE, "a", NULL, 0, 0);
	CHECK(r.status == -ENOENT, "DELETE missing: %d", r.status);

	r = one(STORE_UPDATE, "u", NULL, 0, 0);
	CHECK(r.status == 0, "UPDATE creates: %d", r.status);
	one(STORE_UPDATE, "u", NULL, 0, 0);
	EXPECT_VALUE(one(STORE_GET, "u", NULL, 0, 0), "xx", "UPDATE twice");
}

static void test_ordering(void)
{
	/* PUT, two UPDATEs and a GET of one key in one iteration: in order. */
	struct result res[4];
	memset(res, 0, sizeof(res));
	struct batch b = {.n = 4};
	b.r[0].op = STORE_PUT, b.r[0].key = "ord", b.r[0].value = "v", b.r[0].out = &res[0];
	b.r[1].op = STORE_UPDATE, b.r[1].key = "ord", b.r[1].out = &res[1];
	b.r[2].op = STORE_UPDATE, b.r[2].key = "ord", b.r[2].out = &res[2];
	b.r[3].op = STORE_GET, b.r[3].key = "ord", b.r[3].out = &res[3];
	run_batch(&b);
	EXPECT_VALUE(res[3], "vxx", "pipelined PUT UPDATE UPDATE GET");
}

struct prefetch_args {
	const uint8_t *keys[STORE_PREFETCH_MAX + 8];
	size_t lens[STORE_PREFETCH_MAX + 8];
	size_t n;
};

static void prefetch_step(void *arg)
{
	struct prefetch_args *a = arg;
	store_prefetch(st, 0, a->keys, a->lens, a->n);
}

/* A value rewritten in place (a cached value of the same size that nothing
 * else holds) must not change what a reply already holding it returns, nor
 * what later reads see; store_prefetch (present, absent and too many keys)
 * changes nothing. */
static void test_values_in_place(void)
{
	CHECK(one(STORE_PUT, "inplace", "aaaa", 0, 0).status == 0, "PUT inplace");
	EXPECT_VALUE(one(STORE_GET, "inplace", NULL, 0, 0), "aaaa", "GET inplace");
	struct result res[6];
	memset(res, 0, sizeof(res));
	struct batch b = {.n = 6};
	static const char *vals[] = {"bbbb", "cccc"};
	for (size_t i = 0; i < 6; i += 3) {
		b.r[i].op = STORE_GET, b.r[i].key = "inplace", b.r[i].out = &res[i];
		b.r[i + 1].op = STORE_PUT, b.r[i + 1].key = "inplace";
		b.r[i + 1].value = vals[i / 3], b.r[i + 1].out = &res[i + 1];
		b.r[i + 2].op = STORE_UPDATE, b.r[i + 2].key = "inplace", b.r[i + 2].out = &res[i + 2];
	}
	run_batch(&b);
	EXPECT_VALUE(res[0], "aaaa", "a reply held across an overwrite of the same size");
	EXPECT_VALUE(res[3], "bbbbx", "a reply held across a second overwrite");
	for (int round = 0; round < 3; round++) {
		char v[8];
		snprintf(v, sizeof(v), "ddd%d", round);
		CHECK(one(STORE_PUT, "inplace", v, 0, 0).status == 0, "PUT inplace %s", v);
		EXPECT_VALUE(one(STORE_GET, "inplace", NULL, 0, 0), v, "GET after an overwrite");
	}

	static char names[STORE_PREFETCH_MAX + 8][16];
	struct prefetch_args a = {.n = STORE_PREFETCH_MAX + 8};
	for (size_t i = 0; i < a.n; i++) {
		snprintf(names[i], sizeof(names[i]), i % 2 ? "inplace" : "absent:%zu", i);
		a.keys[i] = (const uint8_t *)names[i];
		a.lens[i] = strlen(names[i]);
	}
	test_on_px(pool, prefetch_step, &a);
	EXPECT_VALUE(one(STORE_GET, "inplace", NULL, 0, 0), "ddd2", "GET after store_prefetch");
	CHECK(one(STORE_GET, "absent:0", NULL, 0, 0).status == -ENOENT, "absent key prefetched");
	CHECK(one(STORE_DELETE, "inplace", NULL, 0, 0).status == 0, "DELETE inplace");
}

static void test_count_and_cold_reads(void)
{
	enum { N = 3000 };
	unsigned seed = 4242;
	static char keys[N][16], values[N][200];
	for (int i = 0; i < N; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%05d", i);
		int len = 1 + rand_r(&seed) % 190; /* inline and log values */
		for (int k = 0; k < len; k++)
			values[i][k] = (char)('a' + rand_r(&seed) % 26);
		values[i][len] = '\0';
	}
	uint64_t base = key_count();
	for (int i = 0; i < N; i += 16) {
		struct batch b = {.n = 0};
		for (int k = i; k < i + 16 && k < N; k++) {
			b.r[b.n].op = STORE_PUT, b.r[b.n].key = keys[k], b.r[b.n].value = values[k];
			b.n++;
		}
		run_batch(&b);
	}
	CHECK(key_count() == base + N, "count %lu after %d new keys (base %lu)",
	      (unsigned long)key_count(), N, (unsigned long)base);
	for (int i = 0; i < N; i += 3) /* overwrite a third: count unchanged */
		one(STORE_PUT, keys[i], values[i], 0, 0);
	for (int i = 1; i < N; i += 10) /* delete a tenth */
		one(STORE_DELETE, keys[i], NULL, 0, 0);
	uint64_t expect = base + N - (N + 8) / 10;
	CHECK(key_count() == expect, "count %lu, expected %lu", (unsigned long)key_count(),
	      (unsigned long)expect);

	close_store();
	open_store();
	CHECK(key_count() == expect, "count after reopen %lu, expected %lu",
	      (unsigned long)key_count(), (unsigned long)expect);
	int wrong = 0;
	for (int i = 0; i < N; i++) {
		struct result r = one(STORE_GET, keys[i], NULL, 0, 0);
		bool deleted = i % 10 == 1;
		if (deleted ? r.status != -ENOENT
			    : (r.status != 0 || r.len != strlen(values[i]) ||
			       memcmp(r.value, values[i], r.len) != 0))
			wrong++;
	}
	CHECK(wrong == 0, "%d keys read back wrong after reopen (cache %lu bytes)", wrong,
	      (unsigned long)cache_bytes);
	struct store_stats s = store_stats();
	printf("  %lu disk reads, %lu cache hits, %lu index blocking reads\n",
	       (unsigned long)s.disk_reads, (unsigned long)s.cache_hits,
	       (unsigned long)s.index_blocking_reads);
	if (cache_bytes < 100000)
		CHECK(s.disk_reads > 0, "a tiny cache never read from disk");
}

/* SCAN visits every live key at least once, in small calls; deleted and
 * expired keys are not returned. */
struct scan_args {
	uint64_t cursor, next;
	size_t count;
	int ret;
	unsigned char *seen; /* [500] visits of scan:i */
	int others;          /* visits of keys the test did not expect */
	int not_strings;     /* visits that named another type */
};

static void scan_fn(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms, uint8_t type)
{
	struct scan_args *a = arg;
	(void)expiry_ms;
	a->not_strings += type != FMT_TYPE_STRING;
	int i;
	char buf[32];
	snprintf(buf, sizeof(buf), "%.*s", (int)(klen < 31 ? klen : 31), (const char *)key);
	if (sscanf(buf, "scan:%d", &i) == 1 && i >= 0 && i < 500)
		a->seen[i]++;
	else if (strncmp(buf, "scan:", 5) == 0)
		a->others++;
}

static void scan_step(void *arg)
{
	struct scan_args *a = arg;
	a->ret = store_scan(st, 0, a->cursor, a->count, scan_fn, a, &a->next);
}

static void test_scan(void)
{
	char key[32];
	for (int i = 0; i < 500; i++) {
		snprintf(key, sizeof(key), "scan:%d", i);
		one(STORE_PUT, key, "v", i % 10 == 3 ? now_ms() + 1 : 0, 0);
	}
	for (int i = 0; i < 500; i += 10) {
		snprintf(key, sizeof(key), "scan:%d", i);
		one(STORE_DELETE, key, NULL, 0, 0);
	}
	usleep(5000); /* the i % 10 == 3 keys have expired */
	struct scan_args a = {.count = 10, .seen = calloc(500, 1)};
	int calls = 0;
	do {
		test_on_px(pool, scan_step, &a);
		CHECK(a.ret == 0, "store_scan: %d", a.ret);
		a.cursor = a.next;
		calls++;
	} while (a.next != 0 && calls < 100000);
	int missing = 0, wrong = 0;
	for (int i = 0; i < 500; i++) {
		bool live = i % 10 != 0 && i % 10 != 3;
		missing += live && a.seen[i] == 0;
		wrong += !live && a.seen[i] != 0;
	}
	CHECK(missing == 0, "SCAN missed %d live keys", missing);
	CHECK(wrong == 0, "SCAN returned %d deleted or expired keys", wrong);
	CHECK(a.not_strings == 0, "SCAN gave %d strings another type", a.not_strings);
	CHECK(calls > 10, "SCAN took only %d calls of 10", calls);
	free(a.seen);
}

/* Expired keys are reclaimed without being read, and the count follows.
 * Far more of them than one expiry pass takes (EXPIRE_BATCH): their deletes
 * wait in the index batch for seconds, and the walk must go on past their
 * rows rather than find them again (it reclaimed 128 keys per batch delay). */
static void test_active_expiry(void)
{
	enum { EXPIRING = 2000, KEPT = 50 };
	static char keys[EXPIRING + KEPT][32];
	uint64_t base = key_count();
	uint64_t soon = now_ms() + 1500, later = now_ms() + 3600000;
	for (int i = 0; i < EXPIRING + KEPT; i += 16) {
		struct batch b = {.n = 0};
		for (int k = i; k < i + 16 && k < EXPIRING + KEPT; k++, b.n++) {
			snprintf(keys[k], sizeof(keys[k]), k < EXPIRING ? "exp:%d" : "keep:%d",
				 k < EXPIRING ? k : k - EXPIRING);
			b.r[b.n].op = STORE_PUT;
			b.r[b.n].key = keys[k];
			b.r[b.n].value = k < EXPIRING ? "short-lived" : "kept";
			b.r[b.n].expiry_ms = k < EXPIRING ? soon : (k % 2 ? later : 0);
		}
		run_batch(&b);
	}
	CHECK(key_count() == base + EXPIRING + KEPT, "count %lu before expiry",
	      (unsigned long)key_count());
	/* The count drops when a delete is appended; `expired` counts it once
	 * its write has completed: wait for both. */
	uint64_t expired_before = store_stats().expired;
	double deadline = test_now() + 15;
	while ((key_count() != base + KEPT || store_stats().expired - expired_before < EXPIRING) &&
	       test_now() < deadline)
		usleep(20000);
	CHECK(key_count() == base + KEPT, "count %lu after expiry, expected %lu (no key was read)",
	      (unsigned long)key_count(), (unsigned long)(base + KEPT));
	struct store_stats stats = store_stats();
	CHECK(stats.expired - expired_before >= EXPIRING, "active expiry reclaimed %lu keys of %d",
	      (unsigned long)(stats.expired - expired_before), EXPIRING);
	EXPECT_VALUE(one(STORE_GET, "keep:7", NULL, 0, 0), "kept", "a key with a later expiry");
	EXPECT_VALUE(one(STORE_GET, "keep:8", NULL, 0, 0), "kept", "a key without expiry");
}

/* Blind puts (store_apply.c): plain PUTs of keys the key table does not hold
 * (after a reopen) skip the index lookup and are settled later, either
 * before their write is in the index batch (the count is read at once) or
 * after.  The count, the live bytes of the records they replace and the
 * expiry rows must come out as if each PUT had read the index first. */
static void test_blind_puts(void)
{
	enum { N = 96 };
	static char keys[N][32];
	static const char long_value[] =
	    "a value longer than inline_max, so that it lives in the log ..................";
	close_store();
	open_store();
	uint64_t base = key_count();
	uint64_t live_before = store_stats().live_bytes;
	uint64_t soon = now_ms() + 2500, later = now_ms() + 3600000;
	/* Group by i % 4: 0 expires soon and is rewritten with the same expiry
	 * (its expiry row must stay: active expiry reclaims it); 1 expires soon
	 * and is rewritten without expiry (the row must go: it stays); 2 has a
	 * later expiry, rewritten with none; 3 has none. */
	for (int i = 0; i < N; i += 16) {
		struct batch b = {.n = 0};
		for (int k = i; k < i + 16; k++, b.n++) {
			snprintf(keys[k], sizeof(keys[k]), "blind:%d", k);
			b.r[b.n].op = STORE_PUT;
			b.r[b.n].key = keys[k];
			b.r[b.n].value = long_value;
			b.r[b.n].expiry_ms = k % 4 < 2 ? soon : k % 4 == 2 ? later : 0;
		}
		run_batch(&b);
	}
	close_store();
	open_store(); /* the key table forgets them: the next PUTs are blind */
	CHECK(key_count() == base + N, "count %lu after %d new keys", (unsigned long)key_count(), N);
	uint64_t live_full = store_stats().live_bytes;
	CHECK(live_full > live_before, "live bytes %lu -> %lu after %d log values",
	      (unsigned long)live_before, (unsigned long)live_full, N);
	uint64_t blind_before = store_stats().blind_puts;
	uint64_t existing_before = store_stats().blind_puts_existing;

	/* Inline values: once settled, nothing these keys hold is in the log. */
	for (int half = 0; half < 2; half++) {
		for (int i = half * N / 2; i < (half + 1) * N / 2; i += 16) {
			struct batch b = {.n = 0};
			for (int k = i; k < i + 16; k++, b.n++) {
				b.r[b.n].op = STORE_PUT;
				b.r[b.n].key = keys[k];
				b.r[b.n].value = "short";
				b.r[b.n].expiry_ms = k % 4 == 0 ? soon : 0;
			}
			run_batch(&b);
			if (half == 0) /* settled while the writes may be in flight */
				CHECK(key_count() == base + N, "count %lu after overwrites",
				      (unsigned long)key_count());
		}
	}
	CHECK(key_count() == base + N, "count %lu after blind overwrites, expected %lu",
	      (unsigned long)key_count(), (unsigned long)(base + N));
	struct store_stats s = store_stats();
	CHECK(s.blind_puts - blind_before == N && s.blind_puts_existing - existing_before == N,
	      "%lu blind puts, %lu of existing keys; expected %d of each",
	      (unsigned long)(s.blind_puts - blind_before),
	      (unsigned long)(s.blind_puts_existing - existing_before), N);
	close_store();
	open_store();
	CHECK(key_count() == base + N, "count %lu after reopen", (unsigned long)key_count());
	CHECK(store_stats().live_bytes == live_before,
	      "live bytes %lu, expected %lu: the replaced records still count as live",
	      (unsigned long)store_stats().live_bytes, (unsigned long)live_before);
	/* A blind put of a new key counts it, then a delete uncounts it. */
	one(STORE_PUT, "blind:new", "v", 0, 0);
	CHECK(key_count() == base + N + 1, "count %lu after a new key", (unsigned long)key_count());
	one(STORE_DELETE, "blind:new", NULL, 0, 0);

	double deadline = test_now() + 10;
	while (key_count() != base + N - N / 4 && test_now() < deadline)
		usleep(20000);
	CHECK(key_count() == base + N - N / 4,
	      "count %lu, expected %lu once the rewritten soon-expiring keys expired",
	      (unsigned long)key_count(), (unsigned long)(base + N - N / 4));
	int wrong = 0;
	for (int k = 0; k < N; k++) {
		struct result r = one(STORE_GET, keys[k], NULL, 0, 0);
		if (k % 4 == 0 ? r.status != -ENOENT
			       : r.status != 0 || r.len != 5 || memcmp(r.value, "short", 5) != 0 ||
				     r.expiry_ms != 0)
			wrong++;
	}
	CHECK(wrong == 0, "%d blind-overwritten keys read back wrong", wrong);
	for (int k = 0; k < N; k++) /* leave the count as it was */
		one(STORE_DELETE, keys[k], NULL, 0, 0);
}

/* Live bytes once the writes acknowledged so far are written: under `none`
 * a write is acknowledged before its record is written, and live bytes follow
 * written records. */
static uint64_t settled_live_bytes(void)
{
	uint64_t last = store_stats().live_bytes;
	for (double deadline = test_now() + 5; test_now() < deadline;) {
		usleep(50000);
		uint64_t now = store_stats().live_bytes;
		if (now == last)
			break;
		last = now;
	}
	return last;
}

/* Writes merged in the index batch (store_write.c): a key written several times
 * before the index gets it reaches the index once, in its last state.  The
 * count, the live bytes, the expiry rows and every value must come out as if
 * each write had gone to the index on its own, before and after a reopen. */
static void test_index_merge(void)
{
	enum { N = 64 };
	static char keys[N][32], finals[N][96];
	static const char long1[] = "first value, longer than inline_max so that it lives in the log ..";
	static const char long2[] = "second value, longer than inline_max so that it lives in the log .";
	uint64_t base = key_count();
	uint64_t live_before = settled_live_bytes();
	uint64_t merged_before = store_stats().index_writes_merged;
	uint64_t soon = now_ms() + 2500;
	/* By k % 4 the key ends: 0 in the log without expiry (its first write
	 * expired soon); 1 deleted; 2 in the log, expiring soon (its first
	 * write had no expiry: the row must be there for active expiry);
	 * 3 inline, after two log values. */
	for (int k = 0; k < N; k++) {
		snprintf(keys[k], sizeof(keys[k]), "merge:%d", k);
		snprintf(finals[k], sizeof(finals[k]), "%s #%d", k % 4 == 3 ? "s" : long2, k);
	}
	for (int step = 0; step < 3; step++)
		for (int i = 0; i < N; i += 16) {
			struct batch b = {.n = 0};
			for (int k = i; k < i + 16; k++) {
				int g = k % 4;
				if (step == 2 && g != 3)
					continue;
				b.r[b.n].key = keys[k];
				b.r[b.n].op = step == 1 && g == 1 ? STORE_DELETE : STORE_PUT;
				b.r[b.n].value = step == 0 ? long1 : finals[k];
				if (step == 1 && g == 3)
					b.r[b.n].value = long2;
				b.r[b.n].expiry_ms = (step == 0 && g == 0) || (step == 1 && g == 2) ? soon : 0;
				b.n++;
			}
			run_batch(&b);
		}
	/* Writes of one key in one commit: each finds the one before in the
	 * batch (nothing applies it between them).  Eight, in case a segment
	 * ends between two of them. */
	struct batch pair = {.n = 8};
	for (size_t i = 0; i < pair.n; i++) {
		pair.r[i].op = STORE_PUT;
		pair.r[i].key = "merge:pair";
		pair.r[i].value = i % 2 ? long2 : long1;
	}
	run_batch(&pair);
	settled_live_bytes(); /* (under `none` the merges happen after the replies) */
	uint64_t merged = store_stats().index_writes_merged - merged_before;
	CHECK(merged > 0, "no write was merged in the index batch");
	one(STORE_DELETE, "merge:pair", NULL, 0, 0);
	CHECK(key_count() == base + N - N / 4, "count %lu, expected %lu",
	      (unsigned long)key_count(), (unsigned long)(base + N - N / 4));
	uint64_t live_written = settled_live_bytes();
	close_store();
	open_store();
	CHECK(key_count() == base + N - N / 4, "count %lu after reopen, expected %lu",
	      (unsigned long)key_count(), (unsigned long)(base + N - N / 4));
	CHECK(store_stats().live_bytes == live_written,
	      "live bytes %lu after reopen, %lu before: the index holds other records",
	      (unsigned long)store_stats().live_bytes, (unsigned long)live_written);
	double deadline = test_now() + 10;
	while (key_count() != base + N / 2 && test_now() < deadline)
		usleep(20000);
	CHECK(key_count() == base + N / 2, "count %lu, expected %lu once group 2 expired",
	      (unsigned long)key_count(), (unsigned long)(base + N / 2));
	int wrong = 0;
	for (int k = 0; k < N; k++) {
		struct result r = one(STORE_GET, keys[k], NULL, 0, 0);
		bool absent = k % 4 == 1 || k % 4 == 2;
		if (absent ? r.status != -ENOENT
			   : r.status != 0 || r.len != strlen(finals[k]) ||
				 memcmp(r.value, finals[k], r.len) != 0 || r.expiry_ms != 0)
			wrong++;
	}
	CHECK(wrong == 0, "%d merged keys read back wrong", wrong);
	for (int k = 0; k < N; k++)
		one(STORE_DELETE, keys[k], NULL, 0, 0);
	CHECK(key_count() == base, "count %lu after the deletes", (unsigned long)key_count());
	/* (under `none` a delete is acknowledged before its record is written,
	 * and live bytes follow written records) */
	deadline = test_now() + 10;
	while (store_stats().live_bytes != live_before && test_now() < deadline)
		usleep(20000);
	CHECK(store_stats().live_bytes == live_before, "live bytes %lu, expected %lu as before",
	      (unsigned long)store_stats().live_bytes, (unsigned long)live_before);
}

/* The index batch waits up to 4 s for later writes to merge into it, but a
 * store that takes no request drains it at once (store_int.h, APPLY_IDLE_NS):
 * the keys are in the index long before they are due. */
static void test_idle_drain(void)
{
	char key[32];
	for (int i = 0; i < 300; i += 16) {
		struct batch b = {.n = 16};
		static char keys[16][32];
		for (int k = 0; k < 16; k++) {
			snprintf(keys[k], sizeof(keys[k]), "idle:%d", i + k);
			b.r[k].op = STORE_PUT;
			b.r[k].key = keys[k];
			b.r[k].value = "a value for the idle drain, longer than inline_max .......";
		}
		run_batch(&b);
	}
	double start = test_now();
	CHECK(store_stats().index_batch_keys > 0, "nothing waits in the index batch after 304 writes");
	while (store_stats().index_batch_keys > 0 && test_now() - start < 10)
		usleep(10000);
	double took = test_now() - start;
	CHECK(store_stats().index_batch_keys == 0, "%lu keys still wait after 10 s",
	      (unsigned long)store_stats().index_batch_keys);
	/* Due after 4 s; idle after 20-40 ms (a loaded machine may take longer). */
	CHECK(took < 3.0, "the idle store took %.2f s to drain its batch", took);
	for (int i = 0; i < 304; i++) {
		snprintf(key, sizeof(key), "idle:%d", i);
		one(STORE_DELETE, key, NULL, 0, 0);
	}
}

/* Requests around a FLUSHALL submitted in one loop iteration: those before
 * it, the FLUSHALL, those after it. */
struct flushall_race {
	struct batch before, after;
	struct test_dbop flush;
};

static void flushall_race_step(void *arg)
{
	struct flushall_race *f = arg;
	submit_step(&f->before);
	test_dbop_step(&f->flush);
	submit_step(&f->after);
}

/* FLUSHALL: cached, evicted and pending keys of every database go; requests
 * submitted before it run on the databases as they were (store.h,
 * "Databases"): a GET waiting for a cold read returns the old value, an
 * UPDATE queued behind it and a PUT land in the old database, so neither is
 * seen after; requests submitted after it see empty databases; writes after
 * it stay; all of it holds across a reopen. */
static void test_flushall(void)
{
	static const char long_value[] =
	    "some value that is longer than inline_max bytes ..........";
	char key[32];
	for (int i = 0; i < 200; i++) {
		snprintf(key, sizeof(key), "drop:%d", i);
		one(STORE_PUT, key, long_value, 0, 0);
	}
	struct batch other_db = {.n = 10};
	static char other_keys[10][32];
	for (size_t i = 0; i < other_db.n; i++) {
		snprintf(other_keys[i], sizeof(other_keys[i]), "other:%zu", i);
		other_db.r[i].op = STORE_PUT, other_db.r[i].db = 5,
		other_db.r[i].key = other_keys[i];
		other_db.r[i].value = "o";
	}
	run_batch(&other_db);
	CHECK(db_key_count(5) == 10, "count of database 5: %lu", (unsigned long)db_key_count(5));
	close_store();
	open_store(); /* the key table is empty: drop:1 is read from the index and the log */

	struct flushall_race *f = calloc(1, sizeof(*f));
	struct result get_before = {0}, update_before = {0}, put_before = {0};
	struct result get_after = {0}, pending_after = {0}, other_after = {0};
	f->before.n = 3;
	f->before.r[0].op = STORE_GET, f->before.r[0].key = "drop:1",
	f->before.r[0].out = &get_before;
	f->before.r[1].op = STORE_UPDATE, f->before.r[1].key = "drop:1";
	f->before.r[1].out = &update_before;
	f->before.r[2].op = STORE_PUT, f->before.r[2].key = "drop:pending";
	f->before.r[2].value = "p", f->before.r[2].out = &put_before;
	f->after.n = 3;
	f->after.r[0].op = STORE_GET, f->after.r[0].key = "drop:1", f->after.r[0].out = &get_after;
	f->after.r[1].op = STORE_GET, f->after.r[1].key = "drop:pending";
	f->after.r[1].out = &pending_after;
	f->after.r[2].op = STORE_GET, f->after.r[2].db = 5, f->after.r[2].key = "other:3";
	f->after.r[2].out = &other_after;
	f->flush = (struct test_dbop){.st = st, .db = -1, .db2 = -1};
	unsigned long target = atomic_load(&calls_done) + f->before.n + f->after.n;
	test_on_px(pool, flushall_race_step, f);
	if (!test_wait_count(&calls_done, target, 30)) {
		fprintf(stderr, "FAIL: requests around FLUSHALL did not complete\n");
		_exit(1);
	}
	for (double deadline = test_now() + 30; !atomic_load(&f->flush.done);) {
		if (test_now() > deadline) {
			fprintf(stderr, "FAIL: FLUSHALL did not complete\n");
			_exit(1);
		}
		usleep(1000);
	}
	CHECK(f->flush.req.status == 0, "FLUSHALL: %d", f->flush.req.status);
	free(f);
	EXPECT_VALUE(get_before, long_value, "a GET submitted before FLUSHALL");
	CHECK(update_before.status == 0, "an UPDATE submitted before FLUSHALL: %d",
	      update_before.status);
	CHECK(put_before.status == 0, "a PUT submitted before FLUSHALL: %d", put_before.status);
	CHECK(get_after.status == -ENOENT, "a GET submitted after FLUSHALL: %d", get_after.status);
	CHECK(pending_after.status == -ENOENT,
	      "a key PUT just before FLUSHALL is seen after it: %d", pending_after.status);
	CHECK(other_after.status == -ENOENT, "FLUSHALL left database 5's keys: %d",
	      other_after.status);
	CHECK(key_count() == 0, "count after FLUSHALL: %lu", (unsigned long)key_count());
	CHECK(db_key_count(5) == 0, "count of database 5 after FLUSHALL: %lu",
	      (unsigned long)db_key_count(5));
	CHECK(one(STORE_GET, "drop:1", NULL, 0, 0).status == -ENOENT,
	      "the UPDATE submitted before FLUSHALL is seen after it");
	int left = 0;
	for (int i = 0; i < 200; i += 7) {
		snprintf(key, sizeof(key), "drop:%d", i);
		left += one(STORE_GET, key, NULL, 0, 0).status != -ENOENT;
	}
	CHECK(left == 0, "%d keys survived FLUSHALL", left);
	struct result after = one(STORE_PUT, "after", "a", 0, 0);
	CHECK(after.status == 0, "PUT after FLUSHALL: %d", after.status);
	close_store();
	open_store();
	CHECK(key_count() == 1, "count after FLUSHALL and reopen: %lu", (unsigned long)key_count());
	CHECK(db_key_count(5) == 0, "count of database 5 after reopen: %lu",
	      (unsigned long)db_key_count(5));
	EXPECT_VALUE(one(STORE_GET, "after", NULL, 0, 0), "a", "a key written after FLUSHALL");
	CHECK(one(STORE_GET, "drop:3", NULL, 0, 0).status == -ENOENT,
	      "a dropped key came back after reopen");
	CHECK(one(STORE_GET, "drop:1", NULL, 0, 0).status == -ENOENT,
	      "the UPDATE submitted before FLUSHALL came back after reopen");
	CHECK(one(STORE_GET, "drop:pending", NULL, 0, 0).status == -ENOENT,
	      "the PUT submitted before FLUSHALL came back after reopen");
}

static struct open_args second;
static struct store *first_store;
static void second_open_step(void *arg)
{
	(void)arg;
	first_store = st;
	open_step(&second);
	if (second.ret == 0)
		store_close(st);
	st = first_store;
}

/* A second open of an open shard directory is refused, naming the holder. */
static void test_lock(void)
{
	test_on_px(pool, second_open_step, NULL);
	char pid[32];
	snprintf(pid, sizeof(pid), "pid %d", (int)getpid());
	CHECK(second.ret == -EBUSY && strstr(second.err, "in use by another process") != NULL &&
		      strstr(second.err, pid) != NULL,
	      "second open: %d '%s'", second.ret, second.err);
}

static void reset_dir(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* The subtests, in the order a run without arguments takes. */
static const struct {
	const char *name;
	void (*fn)(void);
} subtests[] = {
    {"operations", test_operations},
    {"ordering", test_ordering},
    {"values_in_place", test_values_in_place},
    {"count_and_cold_reads", test_count_and_cold_reads},
    {"blind_puts", test_blind_puts},
    {"index_merge", test_index_merge},
    {"idle_drain", test_idle_drain},
    {"active_expiry", test_active_expiry},
    {"scan", test_scan},
    {"flushall", test_flushall},
    {"lock", test_lock},
};

int main(int argc, char **argv)
{
	size_t order[64], n;
	if (!TEST_PICK_SUBTESTS(argv[0], argv + 1, argc - 1, subtests, order, &n))
		return 1;

	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		return 77;
	snprintf(dir, sizeof(dir), "%s/ringkv-test-store-%d", tmp, (int)getpid());
	char err[256];
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0) {
		fprintf(stderr, "idx_shared_create: %s\n", err);
		return 1;
	}
	pool = test_pool(1, 256, 50, 256);

	static const enum log_durability modes[] = {LOG_DURABILITY_FSYNC, LOG_DURABILITY_WRITE,
						    LOG_DURABILITY_NONE};
	static const char *names[] = {"fsync", "write", "none"};
	for (size_t m = 0; m < 3; m++) {
		durability = modes[m];
		cache_bytes = m == 0 ? 4096 : 64u << 20; /* fsync run: values come from disk */
		printf("durability %s, cache %lu bytes\n", names[m], (unsigned long)cache_bytes);
		for (size_t k = 0; k < n; k++) {
			printf(" %s\n", subtests[order[k]].name);
			reset_dir();
			open_store();
			subtests[order[k]].fn();
			close_store();
		}
	}
	pool_stop(pool);
	idx_shared_destroy(shared);
	reset_dir();
	return test_result();
}
