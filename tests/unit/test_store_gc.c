/* test_store_gc: under an overwrite-heavy workload with concurrent reads,
 * garbage collection keeps every value correct, deletes segments, keeps the
 * live-byte count exact, and bounds the log to about live / gc_live_ratio;
 * the counts survive a reopen, and FLUSHALL lets GC reclaim everything. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/store.h"
#include "testutil.h"

#define KEYS 1000
#define WINDOW 128           /* writes in flight */
#define READ_WINDOW 32       /* reads in flight */
#define SEGMENT (1u << 20)
#define RATIO 0.5

static char dir[512];
static struct idx_shared *shared;
static struct store *st;
static unsigned rounds;

/* Version v of key k: a self-describing value of 600..2100 bytes. */
static size_t make_value(uint32_t k, uint32_t v, char *buf)
{
	size_t len = 600 + (k * 7919u + v * 104729u) % 1500;
	int n = snprintf(buf, 32, "k=%08x v=%08x;", k, v);
	for (size_t i = (size_t)n; i < len; i++)
		buf[i] = (char)('a' + (k + v + i) % 26);
	return len;
}

static void key_of(uint32_t k, char *buf)
{
	snprintf(buf, 32, "gc:%06u", k);
}

/* ---- the workload (on the proactor) ------------------------------------ */

struct op {
	struct store_req req;
	uint32_t k, v;
	uint32_t floor;      /* reads: the newest version acknowledged when issued */
	char key[32];
	char value[2200];
};

static uint32_t acked_version[KEYS]; /* newest acknowledged version per key */
static uint32_t next_version[KEYS];
static uint64_t writes_total, writes_issued;
static unsigned writes_inflight, reads_inflight;
static atomic_ulong writes_done, reads_done, read_errors, write_errors;
static atomic_bool workload_over;
static uint64_t peak_log_bytes;
static unsigned rng = 12345;

static unsigned next_rand(void)
{
	rng = rng * 1103515245u + 12345u;
	return rng >> 8;
}

static void pump(void);

static void write_done(struct store_req *req)
{
	struct op *o = container_of(req, struct op, req);
	if (req->status != 0)
		atomic_fetch_add(&write_errors, 1);
	else if (o->v > acked_version[o->k])
		acked_version[o->k] = o->v;
	writes_inflight--;
	atomic_fetch_add(&writes_done, 1);
	free(o);
	pump();
}

static void read_done(struct store_req *req)
{
	struct op *o = container_of(req, struct op, req);
	char expect[2200];
	uint32_t k, v;
	if (req->status != 0 || req->result_len < 20 ||
	    sscanf((const char *)req->result, "k=%08x v=%08x;", &k, &v) != 2 || k != o->k ||
	    v < o->floor || req->result_len != make_value(k, v, expect) ||
	    memcmp(req->result, expect, req->result_len) != 0) {
		if (atomic_fetch_add(&read_errors, 1) < 5)
			fprintf(stderr, "FAIL: key %u: bad read (status %d, len %zu)\n", o->k,
				req->status, req->result_len);
	}
	reads_inflight--;
	atomic_fetch_add(&reads_done, 1);
	free(o);
	pump();
}

static void pump(void)
{
	if (writes_issued % 256 == 0) {
		struct store_stats s;
		store_get_stats(st, &s);
		if (s.log_bytes > peak_log_bytes)
			peak_log_bytes = s.log_bytes;
	}
	while (writes_inflight < WINDOW && writes_issued < writes_total) {
		/* The first round writes every key; then 90% of the writes go to
		 * a tenth of the keys, so segments hold cold live values that GC
		 * must move. */
		struct op *o = calloc(1, sizeof(*o));
		if (writes_issued < KEYS)
			o->k = (uint32_t)writes_issued;
		else if (next_rand() % 10 != 0)
			o->k = next_rand() % (KEYS / 10);
		else
			o->k = next_rand() % KEYS;
		o->v = ++next_version[o->k];
		key_of(o->k, o->key);
		o->req.op = STORE_PUT;
		o->req.key = (const uint8_t *)o->key;
		o->req.key_len = strlen(o->key);
		o->req.value = (const uint8_t *)o->value;
		o->req.value_len = make_value(o->k, o->v, o->value);
		o->req.done = write_done;
		writes_issued++;
		writes_inflight++;
		store_submit(st, &o->req);
	}
	while (reads_inflight < READ_WINDOW && writes_issued < writes_total) {
		struct op *o = calloc(1, sizeof(*o));
		o->k = next_rand() % KEYS;
		if (next_version[o->k] == 0) {
			free(o);
			break;
		}
		o->floor = acked_version[o->k];
		key_of(o->k, o->key);
		o->req.op = STORE_GET;
		o->req.key = (const uint8_t *)o->key;
		o->req.key_len = strlen(o->key);
		o->req.done = read_done;
		reads_inflight++;
		store_submit(st, &o->req);
	}
	if (writes_issued == writes_total && writes_inflight == 0 && reads_inflight == 0)
		atomic_store(&workload_over, true);
}

/* ---- steps run on the proactor ------------------------------------------ */

static void open_step(void *arg)
{
	char err[512];
	struct store_config cfg = {.dir = dir,
	                           .databases = 16,
	                           .segment_size = SEGMENT,
	                           .durability = LOG_DURABILITY_WRITE,
	                           .inline_max = 64,
	                           .cache_bytes = 256u
	                                          << 10, /* far below the data: reads hit disk */
	                           .shared = shared,
	                           .gc_live_ratio = RATIO};
	if (store_open(&st, px_current(), &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "store_open: %s\n", err);
		*(int *)arg = -1;
	}
}

static void start_step(void *arg)
{
	(void)arg;
	pump();
}

static struct store_stats stats;
static void stats_step(void *arg)
{
	(void)arg;
	store_get_stats(st, &stats);
}

static atomic_ulong verified, verify_bad;
static void verify_done(struct store_req *req)
{
	struct op *o = container_of(req, struct op, req);
	char expect[2200];
	size_t len = make_value(o->k, acked_version[o->k], expect);
	if (req->status != 0 || req->result_len != len || memcmp(req->result, expect, len) != 0) {
		if (atomic_fetch_add(&verify_bad, 1) < 5)
			fprintf(stderr, "FAIL: key %u: status %d, expected version %u\n", o->k,
				req->status, acked_version[o->k]);
	}
	free(o);
	atomic_fetch_add(&verified, 1);
}

static void verify_step(void *arg)
{
	(void)arg;
	for (uint32_t k = 0; k < KEYS; k++) {
		struct op *o = calloc(1, sizeof(*o));
		o->k = k;
		key_of(k, o->key);
		o->req.op = STORE_GET;
		o->req.key = (const uint8_t *)o->key;
		o->req.key_len = strlen(o->key);
		o->req.done = verify_done;
		store_submit(st, &o->req);
	}
}

/* ---- the test ----------------------------------------------------------- */

static bool verify_all(struct pool *pool, const char *when)
{
	atomic_store(&verified, 0);
	atomic_store(&verify_bad, 0);
	test_on_px(pool, verify_step, NULL);
	if (!test_wait_count(&verified, KEYS, 60)) {
		fprintf(stderr, "FAIL: %s: verification reads did not finish\n", when);
		return false;
	}
	CHECK(atomic_load(&verify_bad) == 0, "%s: %lu keys with a wrong value", when,
	      atomic_load(&verify_bad));
	return atomic_load(&verify_bad) == 0;
}

/* The live bytes the index must account: one record per key, its current
 * version. */
static uint64_t expected_live(void)
{
	uint64_t sum = 0;
	char key[32], value[2200];
	for (uint32_t k = 0; k < KEYS; k++) {
		key_of(k, key);
		sum += fmt_record_size(FMT_KEY_IDENT_HEAD + (uint32_t)strlen(key),
		                       (uint32_t)make_value(k, acked_version[k], value));
	}
	return sum;
}

/* Waits until the log is within the space bound (GC caught up). */
static bool settle(struct pool *pool, uint64_t bound, double seconds)
{
	double deadline = test_now() + seconds;
	for (;;) {
		test_on_px(pool, stats_step, NULL);
		if (stats.log_bytes <= bound)
			return true;
		if (test_now() > deadline)
			return false;
		usleep(50000);
	}
}

int main(void)
{
	char err[256];
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(dir, sizeof(dir), "%s/ringkv-test-gc-%d", tmp, (int)getpid());
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0) {
		fprintf(stderr, "idx_shared_create: %s\n", err);
		return 1;
	}
	rounds = (unsigned)test_scaled(40);
	writes_total = (uint64_t)rounds * KEYS;
	struct pool *pool = test_pool(1, 1024, 50, 1024);
	int ret = 0;
	test_on_px(pool, open_step, &ret);
	if (ret < 0)
		return 1;

	test_on_px(pool, start_step, NULL);
	double deadline = test_now() + 240;
	while (!atomic_load(&workload_over) && test_now() < deadline)
		usleep(20000);
	CHECK(atomic_load(&workload_over), "the workload did not finish in 240 s");
	CHECK(atomic_load(&write_errors) == 0, "%lu writes failed", atomic_load(&write_errors));
	CHECK(atomic_load(&read_errors) == 0, "%lu reads during GC returned a wrong value",
	      atomic_load(&read_errors));

	uint64_t live = expected_live();
	/* The bound: live / ratio, plus the segment being written, the one GC
	 * walks and those waiting for the index to persist. */
	uint64_t bound = (uint64_t)((double)live / RATIO) + 4 * (uint64_t)SEGMENT;
	bool settled = settle(pool, bound, 60);
	test_on_px(pool, stats_step, NULL);
	printf("%u rounds over %u keys: %.1f MiB written; live %.2f MiB, log %.2f MiB"
	       " (peak %.2f MiB, bound %.2f MiB); GC: %lu walks, %lu records moved,"
	       " %lu segments deleted\n",
	       rounds, KEYS, (double)stats.records * 1300 / 1048576.0, live / 1048576.0,
	       stats.log_bytes / 1048576.0, peak_log_bytes / 1048576.0, bound / 1048576.0,
	       (unsigned long)stats.gc_runs, (unsigned long)stats.gc_records_moved,
	       (unsigned long)stats.gc_segments_deleted);
	/* While the writer runs at full speed GC trails it by the index flush
	 * and the log's fdatasync it waits for; the log must still stay within
	 * a small multiple of the bound. */
	CHECK(peak_log_bytes <= 5 * bound, "the log peaked at %lu bytes, over 5 x %lu",
	      (unsigned long)peak_log_bytes, (unsigned long)bound);
	CHECK(settled, "the log stays at %lu bytes, over the bound %lu", (unsigned long)stats.log_bytes,
	      (unsigned long)bound);
	CHECK(stats.gc_segments_deleted > 0, "GC deleted no segment");
	CHECK(stats.live_bytes == live, "live bytes %lu, expected %lu",
	      (unsigned long)stats.live_bytes, (unsigned long)live);
	CHECK(stats.keys == KEYS, "key count %lu", (unsigned long)stats.keys);
	verify_all(pool, "after the workload");

	/* Reopen: values, the key count and the live bytes come back. */
	test_store_close(pool, st);
	test_on_px(pool, open_step, &ret);
	if (ret < 0)
		return 1;
	test_on_px(pool, stats_step, NULL);
	CHECK(stats.live_bytes == live, "after reopen: live bytes %lu, expected %lu",
	      (unsigned long)stats.live_bytes, (unsigned long)live);
	CHECK(stats.keys == KEYS, "after reopen: key count %lu", (unsigned long)stats.keys);
	verify_all(pool, "after reopen");

	/* FLUSHALL: nothing is live, and GC reclaims every sealed segment. */
	CHECK(test_store_flush(pool, st, -1, 60) == 0, "FLUSHALL failed");
	bool emptied = settle(pool, 2 * SEGMENT, 60);
	CHECK(emptied && stats.live_bytes == 0, "after FLUSHALL: log %lu bytes, live %lu",
	      (unsigned long)stats.log_bytes, (unsigned long)stats.live_bytes);

	test_store_close(pool, st);
	pool_stop(pool);
	idx_shared_destroy(shared);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return test_result();
}
