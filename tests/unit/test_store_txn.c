/* test_store_txn: crash atomicity of transactions in the store (store.h,
 * "transactions"; format.h, "Transactions").  A child process opens two
 * stores (two shards) and writes, with records tagged by transaction:
 *   T1  on both shards, COMMIT on both, then FINISH on both;
 *   T2  on both shards, COMMIT on shard 0 only (the crash came between the
 *       COMMITs: every record of T2 was written, so it committed);
 *   T3  on both shards, never committed;
 *   T4  overwrites T1's key on shard 0, never committed;
 * plus plain writes after them, then checkpoints the index (an open
 * transaction's rows must stay out of it, and its applied_lsn below them)
 * and exits without closing.  The parent opens both stores the server's way
 * (every shard's COMMIT records first) and finds T1 and T2 whole, T3 and
 * T4 absent, the plain writes there, and the dropped records counted; a
 * store opened on its own (store_open) sees only its own COMMITs.  The
 * open-transaction count is checked on the way, also through thousands of
 * transactions open at once. */
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/store.h"
#include "testutil.h"

#define T1 0x1000000000000001ull
#define T2 0x1000000000000002ull
#define T3 0x1000000000000003ull
#define T4 0x1000000000000004ull

static char dirs[2][512];
static struct pool *pool;
static struct idx_shared *shared;
static struct store *st[2];
static struct store_txids committed;

static struct store_config config(unsigned shard)
{
	return (struct store_config){.dir = dirs[shard],
	                             .shard = shard,
	                             .databases = 1,
	                             .segment_size = 4u << 20,
	                             .durability = LOG_DURABILITY_FSYNC,
	                             .inline_max = 64,
	                             .cache_bytes = 1u << 20,
	                             .shared = shared};
}

struct open_args {
	int ret;
	bool alone; /* store_open, not the three steps */
	char err[512];
};

static void open_step(void *arg)
{
	struct open_args *a = arg;
	for (unsigned s = 0; s < 2 && a->ret == 0; s++) {
		struct store_config cfg = config(s);
		if (a->alone) {
			a->ret = store_open(&st[s], px_current(), &cfg, a->err, sizeof(a->err));
			continue;
		}
		a->ret = store_open_begin(&st[s], px_current(), &cfg, a->err, sizeof(a->err));
		if (a->ret == 0)
			a->ret = store_scan_commits(st[s], &committed, a->err, sizeof(a->err));
	}
	if (a->alone || a->ret < 0)
		return;
	store_txids_sort(&committed);
	for (unsigned s = 0; s < 2 && a->ret == 0; s++)
		a->ret = store_open_finish(st[s], &committed, a->err, sizeof(a->err));
	store_txids_free(&committed);
}

static void start(bool alone)
{
	char err[256];
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0) {
		fprintf(stderr, "idx_shared_create: %s\n", err);
		_exit(1);
	}
	pool = test_pool(1, 256, 0, 256);
	struct open_args a = {.alone = alone};
	test_on_px(pool, open_step, &a);
	if (a.ret < 0) {
		fprintf(stderr, "opening the stores: %s\n", a.err);
		_exit(1);
	}
}

static void stop(void)
{
	for (unsigned s = 0; s < 2; s++)
		test_store_close(pool, st[s]);
	pool_stop(pool);
	idx_shared_destroy(shared);
}

/* ---- one request at a time ---------------------------------------------- */

struct one {
	struct store_req req;
	unsigned shard;
	bool end; /* store_txn_end, not store_submit */
	char key[32], value[32];
	char got[32]; /* GET: the value (copied in done) */
	atomic_int done;
};

static void one_done(struct store_req *req)
{
	struct one *o = container_of(req, struct one, req);
	if (req->status == 0 && req->result != NULL)
		snprintf(o->got, sizeof(o->got), "%.*s", (int)req->result_len,
		         (const char *)req->result);
	atomic_store(&o->done, 1);
}

static void one_step(void *arg)
{
	struct one *o = arg;
	o->req.done = one_done;
	if (o->end)
		store_txn_end(st[o->shard], &o->req);
	else
		store_submit(st[o->shard], &o->req);
}

/* Runs the request and waits for it; returns its status (GET: the value in
 * o->value, "" when absent). */
static int run(struct one *o)
{
	test_on_px(pool, one_step, o);
	double deadline = test_now() + 30;
	while (!atomic_load(&o->done)) {
		if (test_now() > deadline) {
			fprintf(stderr, "FAIL: a request did not complete in 30 s\n");
			_exit(1);
		}
		usleep(200);
	}
	return o->req.status;
}

static int put(unsigned shard, const char *key, const char *value, uint64_t txid)
{
	struct one o = {.shard = shard};
	snprintf(o.key, sizeof(o.key), "%s", key);
	snprintf(o.value, sizeof(o.value), "%s", value);
	o.req = (struct store_req){.op = STORE_PUT,
	                           .key = (const uint8_t *)o.key,
	                           .key_len = strlen(o.key),
	                           .value = (const uint8_t *)o.value,
	                           .value_len = strlen(o.value),
	                           .txid = txid};
	return run(&o);
}

static int txn_end(unsigned shard, uint64_t txid, unsigned flags)
{
	struct one o = {.shard = shard, .end = true};
	o.req = (struct store_req){.txid = txid, .flags = flags};
	return run(&o);
}

/* The value of key on shard, "" when absent; "?" on an error. */
static const char *get(unsigned shard, const char *key, char *buf, size_t len)
{
	struct one o = {.shard = shard};
	snprintf(o.key, sizeof(o.key), "%s", key);
	o.req = (struct store_req){
	    .op = STORE_GET, .key = (const uint8_t *)o.key, .key_len = strlen(o.key)};
	int ret = run(&o);
	snprintf(buf, len, "%s", ret == -ENOENT ? "" : ret != 0 ? "?" : o.got);
	return buf;
}

static struct store_stats stats[2];
static void stats_step(void *arg)
{
	(void)arg;
	for (unsigned s = 0; s < 2; s++)
		store_get_stats(st[s], &stats[s]);
}

static int checkpoint_ret[2];
static void checkpoint_step(void *arg)
{
	(void)arg;
	for (unsigned s = 0; s < 2; s++)
		checkpoint_ret[s] = store_checkpoint(st[s]);
}

/* Flushes both indexes and waits until their memtables are empty. */
static void checkpoint(void)
{
	double deadline = test_now() + 30;
	for (;;) {
		test_on_px(pool, checkpoint_step, NULL);
		if (checkpoint_ret[0] == -EALREADY && checkpoint_ret[1] == -EALREADY)
			return;
		if (test_now() > deadline) {
			fprintf(stderr, "FAIL: the index did not flush in 30 s\n");
			_exit(1);
		}
		usleep(20000);
	}
}

/* ---- many transactions at once ------------------------------------------ */

#define MANY 3000
static struct one many[MANY];
static atomic_ulong many_done;

static void many_one_done(struct store_req *req)
{
	(void)req;
	atomic_fetch_add(&many_done, 1);
}

/* Submits MANY writes, each of a transaction of its own (ids from 0x2000...),
 * or (end) their COMMIT|FINISH in a scrambled order. */
static void many_step(void *arg)
{
	bool end = arg != NULL;
	for (unsigned k = 0; k < MANY; k++) {
		unsigned i = end ? (k * 7919u) % MANY : k; /* (7919 is prime: a permutation) */
		struct one *o = &many[i];
		uint64_t txid = 0x2000000000000000ull + i;
		if (end) {
			o->req = (struct store_req){.txid = txid,
			                            .flags = STORE_TXN_COMMIT | STORE_TXN_FINISH,
			                            .done = many_one_done};
			store_txn_end(st[0], &o->req);
			continue;
		}
		snprintf(o->key, sizeof(o->key), "many%u", i);
		o->req = (struct store_req){.op = STORE_PUT,
		                            .key = (const uint8_t *)o->key,
		                            .key_len = strlen(o->key),
		                            .value = (const uint8_t *)"m",
		                            .value_len = 1,
		                            .txid = txid,
		                            .done = many_one_done};
		store_submit(st[0], &o->req);
	}
}

/* The shard's set of open transactions through growth and deletions in an
 * order unlike the insertions' (the hash set's backward-shift deletion). */
static void many_transactions(void)
{
	test_on_px(pool, stats_step, NULL);
	uint64_t open_before = stats[0].txn_open;
	atomic_store(&many_done, 0);
	test_on_px(pool, many_step, NULL);
	CHECK(test_wait_count(&many_done, MANY, 60), "the writes of many transactions");
	test_on_px(pool, stats_step, NULL);
	CHECK(stats[0].txn_open == open_before + MANY, "open: %llu, want %llu",
	      (unsigned long long)stats[0].txn_open, (unsigned long long)(open_before + MANY));
	atomic_store(&many_done, 0);
	test_on_px(pool, many_step, many);
	CHECK(test_wait_count(&many_done, MANY, 60), "the ends of many transactions");
	test_on_px(pool, stats_step, NULL);
	CHECK(stats[0].txn_open == open_before, "open after their ends: %llu, want %llu",
	      (unsigned long long)stats[0].txn_open, (unsigned long long)open_before);
}

/* ---- the child: writes, then dies ---------------------------------------- */

static void child(void)
{
	start(false);
	CHECK(put(0, "t1a", "one", T1) == 0 && put(1, "t1b", "one", T1) == 0, "T1's writes");
	CHECK(txn_end(0, T1, STORE_TXN_COMMIT) == 0 && txn_end(1, T1, STORE_TXN_COMMIT) == 0,
	      "T1's COMMITs");
	test_on_px(pool, stats_step, NULL);
	CHECK(stats[0].txn_open == 1 && stats[1].txn_open == 1, "T1 open until finished: %llu %llu",
	      (unsigned long long)stats[0].txn_open, (unsigned long long)stats[1].txn_open);
	CHECK(txn_end(0, T1, STORE_TXN_FINISH) == 0 && txn_end(1, T1, STORE_TXN_FINISH) == 0,
	      "T1's finish");
	CHECK(put(0, "t2a", "two", T2) == 0 && put(1, "t2b", "two", T2) == 0, "T2's writes");
	CHECK(txn_end(0, T2, STORE_TXN_COMMIT) == 0, "T2's COMMIT on shard 0");
	CHECK(put(0, "t3a", "three", T3) == 0 && put(1, "t3b", "three", T3) == 0, "T3's writes");
	CHECK(put(0, "t1a", "four", T4) == 0, "T4's write");
	CHECK(txn_end(1, T4, STORE_TXN_COMMIT | STORE_TXN_FINISH) == 0,
	      "a COMMIT where the transaction wrote nothing (writes nothing)");
	for (int i = 0; i < 50; i++) {
		char key[16];
		snprintf(key, sizeof(key), "plain%d", i);
		CHECK(put((unsigned)i % 2, key, "p", 0) == 0, "plain write");
	}
	test_on_px(pool, stats_step, NULL);
	CHECK(stats[0].txn_open == 3 && stats[1].txn_open == 2,
	      "open: T2 T3 T4 on shard 0 (%llu), T2 T3 on shard 1 (%llu)",
	      (unsigned long long)stats[0].txn_open, (unsigned long long)stats[1].txn_open);
	CHECK(stats[0].txn_commits == 2 && stats[1].txn_commits == 1, "COMMIT records: %llu %llu",
	      (unsigned long long)stats[0].txn_commits, (unsigned long long)stats[1].txn_commits);
	char buf[32];
	CHECK(strcmp(get(0, "t1a", buf, sizeof(buf)), "four") == 0,
	      "an open transaction's write is seen at once: %s", buf);
	many_transactions();
	checkpoint();
	fflush(NULL);
	_exit(test_result()); /* no close: the crash */
}

/* Opens each store alone (store_open): shard 1 does not see shard 0's
 * COMMIT of T2 and drops its record. */
static void check_alone(void)
{
	start(true);
	char buf[32];
	CHECK(strcmp(get(1, "t2b", buf, sizeof(buf)), "") == 0,
	      "shard 1 opened alone has no COMMIT of T2: t2b=%s", buf);
	CHECK(strcmp(get(0, "t2a", buf, sizeof(buf)), "two") == 0,
	      "shard 0 opened alone has it: t2a=%s", buf);
	stop();
	fflush(NULL);
	_exit(test_result());
}

/* Runs fn in a child process (RocksDB's threads do not survive a fork: the
 * parent opens no store before its last fork) and checks it exited 0. */
static void in_child(void (*fn)(void), const char *what)
{
	pid_t pid = fork();
	if (pid == 0)
		fn();
	int status = 0;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (status %d)", what, status);
}

static void remove_dirs(void)
{
	for (unsigned s = 0; s < 2; s++) {
		char cmd[1200];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dirs[s]);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dirs[s]);
	}
}

int main(void)
{
	const char *tmp = test_disk_tmpdir();
	for (unsigned s = 0; s < 2; s++)
		snprintf(dirs[s], sizeof(dirs[s]), "%s/ringkv-txn-%d-%u", tmp, (int)getpid(), s);
	in_child(child, "the writer");
	in_child(check_alone, "opening each store alone");
	remove_dirs(); /* (that open dropped T2's record on shard 1 for good) */
	in_child(child, "the writer, again");

	char buf[32];
	start(false);
	struct {
		unsigned shard;
		const char *key, *want;
	} want[] = {{0, "t1a", "one"}, {1, "t1b", "one"}, {0, "t2a", "two"},  {1, "t2b", "two"},
	            {0, "t3a", ""},    {1, "t3b", ""},    {0, "plain0", "p"}, {1, "plain49", "p"}};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		get(want[i].shard, want[i].key, buf, sizeof(buf));
		CHECK(strcmp(buf, want[i].want) == 0, "after the crash %s = '%s', want '%s'",
		      want[i].key, buf, want[i].want);
	}
	test_on_px(pool, stats_step, NULL);
	CHECK(stats[0].txn_records_dropped == 2 && stats[1].txn_records_dropped == 1,
	      "records dropped: %llu on shard 0 (T3, T4), %llu on shard 1 (T3)",
	      (unsigned long long)stats[0].txn_records_dropped,
	      (unsigned long long)stats[1].txn_records_dropped);
	CHECK(stats[0].txn_open == 0 && stats[1].txn_open == 0, "nothing open after recovery");
	stop();

	/* Once more: what recovery decided is in the index now. */
	start(false);
	get(0, "t1a", buf, sizeof(buf));
	CHECK(strcmp(buf, "one") == 0, "t1a after a clean reopen: %s", buf);
	get(1, "t3b", buf, sizeof(buf));
	CHECK(strcmp(buf, "") == 0, "t3b after a clean reopen: %s", buf);
	stop();
	remove_dirs();
	return test_result();
}
