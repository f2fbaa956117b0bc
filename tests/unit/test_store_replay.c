/* test_store_replay: recovery replays the log in batches, each new key's
 * previous entry read once, and ends exactly where replaying one record at a
 * time would.  A first process writes keys and closes cleanly (the index
 * holds them); a second overwrites, deletes, re-expires, persists, and
 * between its writes FLUSHDBs, SWAPDBs and FLUSHALLs — far more records than
 * one replay batch, over few keys in DATABASES databases — and exits without
 * closing, so the index never saw them.  The store then opens by replaying
 * them, and every key's value and expiry in every database, each database's
 * key count and the live bytes must match a model of the writes; a clean
 * reopen after
 * (no replay) must find the same.  Then a third process writes a few hot keys
 * past CHECKPOINT_RECORDS (their merged rows would take a memtable long to
 * fill) and exits without closing: the store must have asked the index to
 * flush, so recovery replays only the records since. */
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/format.h"
#include "storage/store.h"
#include "testutil.h"

#define KEYS 3000
#define OPS 160000     /* phase B records: more than two replay batches */
#define HOT_OPS    1200000    /* phase C records: past store_int.h's CHECKPOINT_RECORDS (1 M) */
#define HOT_KEYS 16
#define HOT_TAIL 20000  /* ... of which the last come after a pause */
#define WINDOW 256     /* requests in flight */
#define INLINE_MAX 64
#define DATABASES  4 /* op keys are spread over databases 0..3 */

static char dir[512];
static uint64_t far_ms; /* expiries: an hour past the test's start */
static struct pool *pool;
static struct idx_shared *shared;
static struct store *st;

/* ---- the workload, a pure function of the op number --------------------- */

struct op {
	enum store_op kind; /* STORE_PUT, STORE_DELETE or STORE_EXPIRE */
	unsigned db;
	unsigned key;
	uint64_t expiry_ms;
	size_t len;         /* PUT: value length (inline below INLINE_MAX) */
};

static uint32_t mix(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	return x ^ (x >> 16);
}

static void key_of(unsigned k, char *buf)
{
	snprintf(buf, 32, "replay:%u", k);
}

static size_t value_of(uint32_t seq, size_t len, char *buf)
{
	int n = snprintf(buf, 32, "v%u:", seq);
	for (size_t i = (size_t)n; i < len; i++)
		buf[i] = (char)('a' + (seq + i) % 26);
	return len;
}

/* Phase A (seq < KEYS) writes every key once; phase B mixes; phase C
 * (seq >= KEYS + OPS) overwrites HOT_KEYS keys with inline values. */
static struct op op_of(uint32_t seq)
{
	uint32_t h = mix(seq);
	if (seq >= KEYS + OPS)
		return (struct op){.kind = STORE_PUT, .key = h % HOT_KEYS, .len = 8 + h % 24};
	if (seq < KEYS)
		return (struct op){.kind = STORE_PUT,
		                   .db = seq % DATABASES,
		                   .key = seq,
		                   .expiry_ms = seq % 5 == 0 ? far_ms + seq : 0,
		                   .len = seq % 3 == 0 ? 20 + seq % 40 : 100 + seq % 200};
	struct op o = {.key = h % KEYS, .db = (h >> 24) % DATABASES};
	switch ((h >> 16) % 16) {
	case 0:
	case 1:
		o.kind = STORE_DELETE;
		break;
	case 2:
		o.kind = STORE_EXPIRE; /* a new expiry, or none: the record is rewritten */
		o.expiry_ms = h & 1 ? far_ms + seq : 0;
		break;
	default:
		o.kind = STORE_PUT;
		o.expiry_ms = (h >> 8) % 4 == 0 ? far_ms + seq : 0;
		o.len = (h >> 12) % 3 == 0 ? 10 + (h >> 4) % 50 : 80 + (h >> 4) % 300;
	}
	return o;
}

/* ---- the model --------------------------------------------------------- */

struct model_key {
	bool exists;
	uint32_t seq;    /* the PUT that set the value */
	size_t len;
	uint64_t expiry_ms;
};
static struct model_key model[DATABASES][KEYS];

static void model_apply(uint32_t seq)
{
	struct op o = op_of(seq);
	struct model_key *m = &model[o.db][o.key];
	if (o.kind == STORE_PUT)
		*m = (struct model_key){.exists = true, .seq = seq, .len = o.len,
					.expiry_ms = o.expiry_ms};
	else if (o.kind == STORE_DELETE)
		m->exists = false;
	else if (m->exists)
		m->expiry_ms = o.expiry_ms;
}

/* FLUSHDB db, or FLUSHALL (db < 0). */
static void model_flush(int db)
{
	if (db < 0)
		memset(model, 0, sizeof(model));
	else
		memset(model[db], 0, sizeof(model[db]));
}

static void model_swap(unsigned a, unsigned b)
{
	static struct model_key t[KEYS];
	memcpy(t, model[a], sizeof(t));
	memcpy(model[a], model[b], sizeof(t));
	memcpy(model[b], t, sizeof(t));
}

/* ---- running ops on the store ------------------------------------------ */

struct req {
	struct store_req req;
	char key[32];
	char value[512];
};

static uint32_t next_seq, end_seq;
static unsigned inflight;
static atomic_ulong acked, failed;

static void pump(void);

/* EXPIRE's decision: the op's expiry (req->expiry_ms). */
static enum store_update_result expire_to(struct store_req *req, uint64_t old_expiry_ms)
{
	(void)old_expiry_ms;
	req->new_expiry_ms = req->expiry_ms;
	return STORE_UPDATE_WRITE;
}

static void op_done(struct store_req *req)
{
	if (req->status != 0 && req->status != -ENOENT)
		atomic_fetch_add(&failed, 1);
	free(container_of(req, struct req, req));
	inflight--;
	atomic_fetch_add(&acked, 1);
	pump();
}

static void pump(void)
{
	while (inflight < WINDOW && next_seq < end_seq) {
		uint32_t seq = next_seq++;
		struct op o = op_of(seq);
		struct req *r = calloc(1, sizeof(*r));
		if (r == NULL)
			_exit(2);
		key_of(o.key, r->key);
		r->req.op = o.kind;
		r->req.db = o.db;
		r->req.key = (const uint8_t *)r->key;
		r->req.key_len = strlen(r->key);
		r->req.expiry_ms = o.expiry_ms;
		r->req.expire = expire_to;
		if (o.kind == STORE_PUT) {
			r->req.value = (const uint8_t *)r->value;
			r->req.value_len = value_of(seq, o.len, r->value);
		}
		r->req.done = op_done;
		inflight++;
		store_submit(st, &r->req);
	}
}

struct range {
	uint32_t from, to;
};

static void start_range(void *arg)
{
	struct range *rg = arg;
	next_seq = rg->from;
	end_seq = rg->to;
	pump();
}

/* Runs ops [from, to) with WINDOW in flight and waits for all of them;
 * requests on one key run in submission order, so the model holds. */
static void run_ops(uint32_t from, uint32_t to)
{
	unsigned long target = atomic_load(&acked) + (to - from);
	struct range rg = {from, to};
	test_on_px(pool, start_range, &rg);
	if (!test_wait_count(&acked, target, 120)) {
		fprintf(stderr, "ops %u..%u did not complete\n", from, to);
		_exit(1);
	}
}

/* ---- opening, reading back --------------------------------------------- */

struct open_args {
	int ret;
	char err[512];
};

static void open_step(void *arg)
{
	struct open_args *a = arg;
	struct store_config cfg = {.dir = dir,
	                           .databases = DATABASES,
	                           .segment_size = 4u << 20,
	                           .durability = LOG_DURABILITY_FSYNC,
	                           .inline_max = INLINE_MAX,
	                           .cache_bytes = 1u << 20,
	                           .shared = shared};
	a->ret = store_open(&st, px_current(), &cfg, a->err, sizeof(a->err));
}

/* Starts the pool and opens the store, or exits. */
static void start(void)
{
	char err[256];
	if (idx_shared_create(&shared, 8u << 20, 2, err, sizeof(err)) < 0) {
		fprintf(stderr, "idx_shared_create: %s\n", err);
		_exit(1);
	}
	pool = test_pool(1, 256, 0, 256);
	struct open_args a = {0};
	test_on_px(pool, open_step, &a);
	if (a.ret < 0) {
		fprintf(stderr, "store_open: %s\n", a.err);
		_exit(1);
	}
}

static void stop(void)
{
	test_store_close(pool, st);
	pool_stop(pool);
	idx_shared_destroy(shared);
}

static struct store_stats stats_now;
static void stats_step(void *arg)
{
	(void)arg;
	store_get_stats(st, &stats_now);
}

struct get_args {
	unsigned db;
	const char *key;
	int status;
	char value[512];
	size_t len;
	uint64_t expiry_ms;
	atomic_int done;
};

static void get_done(struct store_req *req)
{
	struct get_args *g = req->arg;
	g->status = req->status;
	g->expiry_ms = req->result_expiry_ms;
	g->len = req->result != NULL ? req->result_len : 0;
	if (req->result != NULL && g->len <= sizeof(g->value))
		memcpy(g->value, req->result, g->len);
	free(req);
	atomic_store(&g->done, 1);
}

static void get_step(void *arg)
{
	struct get_args *g = arg;
	struct store_req *req = calloc(1, sizeof(*req));
	req->op = STORE_GET;
	req->db = g->db;
	req->key = (const uint8_t *)g->key;
	req->key_len = strlen(g->key);
	req->done = get_done;
	req->arg = g;
	store_submit(st, req);
}

static uint64_t db_keys[DATABASES];
static void db_count_step(void *arg)
{
	(void)arg;
	for (unsigned d = 0; d < DATABASES; d++)
		db_keys[d] = store_key_count(st, d);
}

/* Checks every key of every database, the key counts and the live bytes
 * against the model.  Returns the store's statistics. */
static struct store_stats check_against_model(const char *when)
{
	int wrong = 0;
	uint64_t keys = 0, live = 0, per_db[DATABASES] = {0};
	for (unsigned i = 0; i < DATABASES * KEYS; i++) {
		unsigned db = i / KEYS, k = i % KEYS;
		char key[32], want[512];
		key_of(k, key);
		struct get_args g = {.db = db, .key = key};
		test_on_px(pool, get_step, &g);
		while (!atomic_load(&g.done))
			sched_yield();
		const struct model_key *m = &model[db][k];
		bool ok;
		if (!m->exists) {
			ok = g.status == -ENOENT;
		} else {
			size_t len = value_of(m->seq, m->len, want);
			ok = g.status == 0 && g.len == len && memcmp(g.value, want, len) == 0 &&
			     g.expiry_ms == m->expiry_ms;
			keys++;
			per_db[db]++;
			if (len > INLINE_MAX)
				live += fmt_record_size(FMT_KEY_IDENT_HEAD + strlen(key), len);
		}
		if (!ok && wrong++ < 5)
			fprintf(stderr,
			        "%s: db %u %s: status %d len %zu expiry %llu; model: %s len %zu"
			        " expiry %llu\n",
			        when, db, key, g.status, g.len, (unsigned long long)g.expiry_ms,
			        m->exists ? "present" : "absent", m->len,
			        (unsigned long long)m->expiry_ms);
	}
	CHECK(wrong == 0, "%s: %d keys differ from the model", when, wrong);
	test_on_px(pool, db_count_step, NULL);
	for (unsigned d = 0; d < DATABASES; d++)
		CHECK(db_keys[d] == per_db[d],
		      "%s: database %u counts %llu keys, the model has %llu", when, d,
		      (unsigned long long)db_keys[d], (unsigned long long)per_db[d]);
	test_on_px(pool, stats_step, NULL);
	CHECK(stats_now.keys == keys, "%s: key count %llu, the model has %llu", when,
	      (unsigned long long)stats_now.keys, (unsigned long long)keys);
	CHECK(stats_now.live_bytes == live, "%s: live bytes %llu, the model's records %llu", when,
	      (unsigned long long)stats_now.live_bytes, (unsigned long long)live);
	return stats_now;
}

/* ---- the processes ----------------------------------------------------- */

/* Each phase runs in a process of its own, the parent only forking and
 * waiting: RocksDB's default environment keeps its background threads in a
 * process-wide singleton, so a child forked after the parent had opened a
 * store would have none (its flushes would never run). */

static void verify_replay(void)
{
	start(); /* replays phase B */
	struct store_stats s = check_against_model("after replay");
	printf("replayed %llu records; %llu keys, %llu live bytes\n",
	       (unsigned long long)s.records_replayed, (unsigned long long)s.keys,
	       (unsigned long long)s.live_bytes);
	CHECK(s.records_replayed > 65536, "only %llu records replayed: the test needs more than"
	      " one replay batch (did the index persist during phase B?)",
	      (unsigned long long)s.records_replayed);
	stop();
	start(); /* the index alone, as the replay left it */
	s = check_against_model("after a clean reopen");
	CHECK(s.records_replayed == 0, "%llu records replayed after a clean close",
	      (unsigned long long)s.records_replayed);
	stop();
}

static void verify_hot(void)
{
	start();
	struct store_stats s = check_against_model("after the hot keys' replay");
	printf("hot keys: replayed %llu of %u records\n", (unsigned long long)s.records_replayed,
	       HOT_OPS);
	CHECK(s.records_replayed < HOT_OPS / 2, "%llu of %u records replayed: the index was not"
	      " flushed past CHECKPOINT_RECORDS", (unsigned long long)s.records_replayed, HOT_OPS);
	stop();
}

/* Phase B's database changes come after its k-th eighth (k = 1, 2, 3): each
 * DBMAP record asks the index to flush, and more than one replay batch of
 * records must follow the last. */
#define B_POINT(k) (KEYS + (k) * (OPS / 8))

static void run_phase(char phase)
{
	start();
	switch (phase) {
	case 'A':
		run_ops(0, KEYS);
		stop(); /* clean: the index holds phase A */
		break;
	case 'B': {
		/* FLUSHDB 1, SWAPDB 2 3, FLUSHALL, after the first three eighths. */
		run_ops(KEYS, B_POINT(1));
		if (test_store_flush(pool, st, 1, 60) != 0)
			atomic_fetch_add(&failed, 1);
		run_ops(B_POINT(1), B_POINT(2));
		if (test_store_swap_db(pool, st, 2, 3, 60) != 0)
			atomic_fetch_add(&failed, 1);
		run_ops(B_POINT(2), B_POINT(3));
		if (test_store_flush(pool, st, -1, 60) != 0)
			atomic_fetch_add(&failed, 1);
		run_ops(B_POINT(3), KEYS + OPS);
		/* Every op is acknowledged under fsync: durable in the log.  Exit
		 * without closing: the index has none of it on disk. */
		break;
	}
	case 'C':
		/* A pause lets the index batch (written 1 s behind) go out, past
		 * CHECKPOINT_RECORDS, and its flush finish. */
		run_ops(KEYS + OPS, KEYS + OPS + HOT_OPS - HOT_TAIL);
		sleep(2);
		run_ops(KEYS + OPS + HOT_OPS - HOT_TAIL, KEYS + OPS + HOT_OPS);
		break;
	}
	if (atomic_load(&failed))
		fprintf(stderr, "FAIL: phase %c: %lu requests failed\n", phase,
			(unsigned long)atomic_load(&failed));
	_exit(atomic_load(&failed) ? 1 : 0);
}

/* Runs `fn` (a verification) or phase `phase` in a child; returns its exit
 * status. */
static int in_child(char phase, void (*fn)(void))
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		if (fn == NULL)
			run_phase(phase);
		fn();
		fflush(stdout);
		_exit(test_result() == 0 ? 0 : 1);
	}
	int status;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) {
		fprintf(stderr, "FAIL: the process of phase %c did not exit normally\n", phase);
		exit(1);
	}
	return WEXITSTATUS(status);
}

int main(void)
{
	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		return 77;
	snprintf(dir, sizeof(dir), "%s/ringkv-test-replay-%d", tmp, (int)getpid());
	far_ms = (uint64_t)time(NULL) * 1000 + 3600 * 1000;

	CHECK(in_child('A', NULL) == 0, "phase A (writes, clean close) failed");
	CHECK(in_child('B', NULL) == 0, "phase B (writes, no close) failed");
	for (uint32_t seq = 0; seq < B_POINT(1); seq++)
		model_apply(seq);
	model_flush(1);
	for (uint32_t seq = B_POINT(1); seq < B_POINT(2); seq++)
		model_apply(seq);
	model_swap(2, 3);
	for (uint32_t seq = B_POINT(2); seq < B_POINT(3); seq++)
		model_apply(seq);
	model_flush(-1);
	for (uint32_t seq = B_POINT(3); seq < KEYS + OPS; seq++)
		model_apply(seq);
	CHECK(in_child('V', verify_replay) == 0, "the replay of phase B differs from the model");

	CHECK(in_child('C', NULL) == 0, "phase C (hot keys, no close) failed");
	for (uint32_t seq = KEYS + OPS; seq < KEYS + OPS + HOT_OPS; seq++)
		model_apply(seq);
	CHECK(in_child('W', verify_hot) == 0, "the replay of phase C failed its checks");

	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return test_result();
}
