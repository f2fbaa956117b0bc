/* test_bulk: the offline bulk writer (bulk.h) on a real data directory of
 * two shards — an import into new shards, then one over them (each bulk_open
 * recovers the shards as the server would), every key read back through the
 * store in database 0 with its value and expiry, the statistics and the
 * per-database key counts exact, and the other databases untouched. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/bulk.h"
#include "storage/layout.h"
#include "storage/store.h"
#include "testutil.h"

#define SHARDS    2
#define KEYS      2000
#define DATABASES 16

static char dir[512];
static struct pool *pool;
static struct idx_shared *shared;
static struct store *stores[SHARDS];

static void key_of(unsigned k, char *buf)
{
	snprintf(buf, 32, "bulk:%u", k);
}

/* The value of key k in import round r: inline or not, by k. */
static size_t value_of(unsigned k, unsigned r, char *buf)
{
	size_t len = k % 3 == 0 ? 8 + k % 40 : 100 + k % 300;
	int n = snprintf(buf, 32, "r%u:k%u:", r, k);
	for (size_t i = (size_t)n; i < len; i++)
		buf[i] = (char)('a' + (k + i) % 26);
	return len;
}

/* Imports keys [from, to) of round r (key k expires at `expiry` when
 * k % 4 == 0).  Returns bulk_open's or bulk_finish's error, or 0. */
static int import(unsigned from, unsigned to, unsigned r, uint64_t expiry, struct bulk_stats *bs)
{
	char err[512];
	struct bulk_config cfg = {.dir = dir,
	                          .shards = SHARDS,
	                          .segment_size = 4u << 20,
	                          .inline_max = 64,
	                          .index_cache = 8u << 20,
	                          .threads = 2,
	                          .databases = 16};
	struct bulk *b;
	int ret = bulk_open(&b, &cfg, err, sizeof(err));
	CHECK(ret == 0, "bulk_open: %d %s", ret, err);
	if (ret < 0)
		return ret;
	for (unsigned k = from; k < to && ret == 0; k++) {
		char key[32], value[512];
		key_of(k, key);
		size_t len = value_of(k, r, value);
		ret = bulk_put(b, key, strlen(key), value, len, k % 4 == 0 ? expiry : 0, err,
		               sizeof(err));
		CHECK(ret == 0, "bulk_put %s: %d %s", key, ret, err);
	}
	if (ret == 0) {
		ret = bulk_finish(b, bs, err, sizeof(err));
		CHECK(ret == 0, "bulk_finish: %d %s", ret, err);
	}
	bulk_close(b);
	return ret;
}

struct open_args {
	int ret;
	char err[512];
};

static void open_step(void *arg)
{
	struct open_args *a = arg;
	for (unsigned s = 0; s < SHARDS && a->ret == 0; s++) {
		char shard_dir[600];
		layout_shard_dir(dir, s, shard_dir, sizeof(shard_dir));
		struct store_config cfg = {.dir = shard_dir,
		                           .shard = s,
		                           .databases = DATABASES,
		                           .segment_size = 4u << 20,
		                           .durability = LOG_DURABILITY_FSYNC,
		                           .inline_max = 64,
		                           .cache_bytes = 1u << 20,
		                           .shared = shared};
		a->ret = store_open(&stores[s], px_current(), &cfg, a->err, sizeof(a->err));
	}
}

static bool open_stores(void)
{
	struct open_args a = {0};
	test_on_px(pool, open_step, &a);
	CHECK(a.ret == 0, "store_open: %s", a.err);
	return a.ret == 0;
}

static void close_stores(void)
{
	for (unsigned s = 0; s < SHARDS; s++)
		test_store_close(pool, stores[s]);
}

struct get {
	struct store_req req;
	char key[32];
	int status;
	char value[512];
	size_t len;
	uint64_t expiry_ms;
	atomic_int done;
};

static void get_done(struct store_req *req)
{
	struct get *g = container_of(req, struct get, req);
	g->status = req->status;
	g->len = req->result != NULL ? req->result_len : 0;
	if (req->result != NULL && g->len <= sizeof(g->value))
		memcpy(g->value, req->result, g->len);
	g->expiry_ms = req->result_expiry_ms;
	atomic_store(&g->done, 1);
}

static void get_step(void *arg)
{
	struct get *g = arg;
	g->req.op = STORE_GET;
	g->req.db = 0;
	g->req.key = (const uint8_t *)g->key;
	g->req.key_len = strlen(g->key);
	g->req.done = get_done;
	store_submit(stores[layout_key_shard(g->key, strlen(g->key), SHARDS)], &g->req);
}

static uint64_t counts[DATABASES];
static void count_step(void *arg)
{
	(void)arg;
	for (unsigned d = 0; d < DATABASES; d++) {
		counts[d] = 0;
		for (unsigned s = 0; s < SHARDS; s++)
			counts[d] += store_key_count(stores[s], d);
	}
}

/* Checks every key: k < split holds round r2's value, the rest round r1's;
 * keys past `total` are absent. */
static void check_keys(unsigned total, unsigned split, unsigned r1, unsigned r2, uint64_t expiry,
                       const char *when)
{
	int wrong = 0;
	for (unsigned k = 0; k < total + 10; k++) {
		struct get *g = calloc(1, sizeof(*g));
		key_of(k, g->key);
		test_on_px(pool, get_step, g);
		while (!atomic_load(&g->done))
			usleep(100);
		char want[512];
		size_t len = value_of(k, k < split ? r2 : r1, want);
		bool ok = k >= total ? g->status == -ENOENT
		                     : g->status == 0 && g->len == len &&
		                           memcmp(g->value, want, len) == 0 &&
		                           g->expiry_ms == (k % 4 == 0 ? expiry : 0);
		if (!ok && wrong++ < 5)
			fprintf(stderr, "%s: %s: status %d, %zu bytes, expiry %" PRIu64 "\n", when,
			        g->key, g->status, g->len, g->expiry_ms);
		free(g);
	}
	CHECK(wrong == 0, "%s: %d keys wrong", when, wrong);
	test_on_px(pool, count_step, NULL);
	CHECK(counts[0] == total, "%s: database 0 counts %" PRIu64 ", want %u", when, counts[0],
	      total);
	for (unsigned d = 1; d < DATABASES; d++)
		CHECK(counts[d] == (d == 3 ? 1 : 0), "%s: database %u counts %" PRIu64, when, d,
		      counts[d]);
}

struct put {
	struct store_req req;
	atomic_int done;
};

static void put_done(struct store_req *req)
{
	atomic_store(&container_of(req, struct put, req)->done, 1);
}

static void put_step(void *arg)
{
	struct put *p = arg;
	p->req.op = STORE_PUT;
	p->req.db = 3;
	p->req.key = (const uint8_t *)"db3";
	p->req.key_len = 3;
	p->req.value = (const uint8_t *)"three";
	p->req.value_len = 5;
	p->req.done = put_done;
	store_submit(stores[layout_key_shard("db3", 3, SHARDS)], &p->req);
}

int main(void)
{
	logging_level = LOG_LEVEL_WARN;
	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		return 77;
	snprintf(dir, sizeof(dir), "%s/ringkv-test-bulk-%d", tmp, (int)getpid());
	char err[512];
	unsigned shards = 0;
	if (layout_open(dir, SHARDS, &shards, err, sizeof(err)) < 0 || shards != SHARDS) {
		fprintf(stderr, "FAIL: layout_open: %s\n", err);
		return 1;
	}
	uint64_t expiry = (uint64_t)time(NULL) * 1000 + 3600 * 1000;

	/* Into new shards. */
	struct bulk_stats bs = {0};
	if (import(0, KEYS, 1, expiry, &bs) == 0)
		CHECK(bs.rows == KEYS && bs.keys == KEYS && bs.new_keys == KEYS &&
		          bs.overwritten == 0,
		      "first import: %" PRIu64 " rows, %" PRIu64 " keys, %" PRIu64 " new", bs.rows,
		      bs.keys, bs.new_keys);

	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0) {
		fprintf(stderr, "idx_shared_create: %s\n", err);
		return 1;
	}
	pool = test_pool(1, 256, 50, 256);
	if (open_stores()) {
		struct put p = {0};
		test_on_px(pool, put_step, &p);
		while (!atomic_load(&p.done))
			usleep(100);
		check_keys(KEYS, 0, 1, 1, expiry, "after the first import");
		close_stores();
	}

	/* Over them: half the keys again, and new ones. */
	bs = (struct bulk_stats){0};
	if (import(KEYS / 2, KEYS + KEYS / 2, 2, expiry, &bs) == 0)
		CHECK(bs.keys == KEYS && bs.new_keys == KEYS / 2 && bs.overwritten == KEYS / 2,
		      "second import: %" PRIu64 " keys, %" PRIu64 " new, %" PRIu64 " overwritten",
		      bs.keys, bs.new_keys, bs.overwritten);
	if (open_stores()) {
		/* keys < KEYS / 2: round 1; the rest: round 2 */
		int wrong = 0;
		for (unsigned k = 0; k < KEYS + KEYS / 2; k++) {
			struct get *g = calloc(1, sizeof(*g));
			key_of(k, g->key);
			test_on_px(pool, get_step, g);
			while (!atomic_load(&g->done))
				usleep(100);
			char want[512];
			size_t len = value_of(k, k < KEYS / 2 ? 1 : 2, want);
			wrong +=
			    g->status != 0 || g->len != len || memcmp(g->value, want, len) != 0;
			free(g);
		}
		CHECK(wrong == 0, "after the second import: %d keys wrong", wrong);
		test_on_px(pool, count_step, NULL);
		CHECK(counts[0] == KEYS + KEYS / 2 && counts[3] == 1,
		      "after the second import: counts %" PRIu64 " and %" PRIu64, counts[0],
		      counts[3]);
		close_stores();
	}
	pool_stop(pool);
	idx_shared_destroy(shared);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return test_result();
}
