/* testutil.h: small helpers shared by the unit-test programs (each test is its
 * own program: exit 0 pass, 1 fail, 77 skip). */
#ifndef RINGKV_TESTUTIL_H
#define RINGKV_TESTUTIL_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "service/runtime/logging.h"
#include "service/runtime/pool.h"
#include "storage/store.h"

static int test_failures; /* CHECKs that failed so far */

/* The subtests a program runs, as indexes into its table (n_table structs of
 * `stride` bytes whose first member is `const char *name`): those named in
 * args[0..nargs), in that order, or every one in table order when none is.
 * False after printing the usage for an unknown name or more than cap. */
static inline bool test_pick_subtests(const char *prog, char **args, int nargs, const void *table,
                                      size_t stride, size_t n_table, size_t *order, size_t cap,
                                      size_t *n)
{
#define SUBTEST_NAME(i) (*(const char *const *)((const char *)table + (i)*stride))
	*n = 0;
	for (int a = 0; a < nargs; a++) {
		size_t i = 0;
		while (i < n_table && strcmp(args[a], SUBTEST_NAME(i)) != 0)
			i++;
		if (i == n_table || *n == cap) {
			fprintf(stderr, "usage: %s [SUBTEST...]; subtests:", prog);
			for (i = 0; i < n_table; i++)
				fprintf(stderr, " %s", SUBTEST_NAME(i));
			fprintf(stderr, "\n");
			return false;
		}
		order[(*n)++] = i;
	}
	for (; nargs == 0 && *n < n_table && *n < cap; (*n)++)
		order[*n] = *n;
	return true;
#undef SUBTEST_NAME
}

/* test_pick_subtests over a `subtests` array and an `order` array. */
#define TEST_PICK_SUBTESTS(prog, args, nargs, subtests, order, n)                                  \
	test_pick_subtests(prog, args, nargs, subtests, sizeof((subtests)[0]),                     \
	                   sizeof(subtests) / sizeof((subtests)[0]), order,                        \
	                   sizeof(order) / sizeof((order)[0]), n)

/* Records a failure (and goes on) when `cond` is false. */
#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			test_failures++;                                                           \
		}                                                                                  \
	} while (0)

static inline int test_result(void)
{
	if (test_failures)
		fprintf(stderr, "%d check(s) failed\n", test_failures);
	return test_failures ? 1 : 0;
}

/* n scaled by RINGKV_TEST_SCALE (the runner shrinks stress tests under
 * sanitizers), at least 1. */
static inline unsigned long test_scaled(unsigned long n)
{
	const char *s = getenv("RINGKV_TEST_SCALE");
	double f = s ? atof(s) : 1.0;
	unsigned long v = (unsigned long)((double)n * (f > 0 ? f : 1.0));
	return v ? v : 1;
}

#define TEST_TMPFS_MAGIC 0x01021994 /* statfs f_type of tmpfs */

/* True when `path` is on tmpfs, which has no O_DIRECT. */
static inline bool test_on_tmpfs(const char *path)
{
	struct statfs sf;
	return statfs(path, &sf) == 0 && sf.f_type == TEST_TMPFS_MAGIC;
}

/* $TMPDIR (else /tmp) for a test's data directory, or NULL, after saying
 * so, when it is tmpfs: the test then skips (exit 77). */
static inline const char *test_disk_tmpdir(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	if (test_on_tmpfs(tmp)) {
		printf("%s is tmpfs (no O_DIRECT): set TMPDIR to a disk file system\n", tmp);
		return NULL;
	}
	return tmp;
}

static inline double test_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits (yielding) until *c >= target or `seconds` pass; true if reached.
 * Tests use it to fail by timeout instead of hanging. */
static inline bool test_wait_count(atomic_ulong *c, unsigned long target, double seconds)
{
	double deadline = test_now() + seconds;
	while (atomic_load(c) < target) {
		if (test_now() > deadline)
			return false;
		sched_yield();
	}
	return true;
}

/* One step run by test_on_px. */
struct test_step {
	void (*fn)(void *arg);
	void *arg;
	atomic_bool done;
};

static inline void test_step_run(void *arg)
{
	struct test_step *s = arg;
	s->fn(s->arg);
	atomic_store(&s->done, true);
}

/* Runs fn(arg) on proactor 0 of `pool` and waits until it has returned;
 * exits 1 if that takes over 60 s (a stuck proactor). */
static inline void test_on_px(struct pool *pool, void (*fn)(void *), void *arg)
{
	struct test_step s = {.fn = fn, .arg = arg};
	atomic_init(&s.done, false);
	pool_run_on(pool, 0, test_step_run, &s);
	double deadline = test_now() + 60;
	while (!atomic_load(&s.done)) {
		if (test_now() > deadline) {
			fprintf(stderr, "FAIL: a step on the proactor did not finish in 60 s\n");
			_exit(1);
		}
		sched_yield();
	}
}

/* One store or log being shut down on a proactor. */
struct test_close_state {
	void *obj;
	bool busy; /* written on the proactor, read after test_on_px returned */
};

/* Runs `stop` on proactor 0 of `pool`, then `busy` (which sets s->busy) until
 * nothing of the object is in flight, then `close`. */
static inline void test_close_with(struct pool *pool, void *obj, void (*stop)(void *),
                                   void (*busy)(void *), void (*close)(void *))
{
	struct test_close_state s = {.obj = obj, .busy = true};
	test_on_px(pool, stop, &s);
	do {
		usleep(200);
		test_on_px(pool, busy, &s);
	} while (s.busy);
	test_on_px(pool, close, &s);
}

static inline void test_store_stop_step(void *arg)
{
	store_stop(((struct test_close_state *)arg)->obj);
}

static inline void test_store_busy_step(void *arg)
{
	struct test_close_state *s = arg;
	s->busy = store_busy(s->obj);
}

static inline void test_store_close_step(void *arg)
{
	store_close(((struct test_close_state *)arg)->obj);
}

/* Stops `st`, waits until nothing of it is in flight, then closes it. */
static inline void test_store_close(struct pool *pool, struct store *st)
{
	test_close_with(pool, st, test_store_stop_step, test_store_busy_step,
	                test_store_close_step);
}

/* A FLUSHALL, FLUSHDB or SWAPDB run by test_store_flush / test_store_swap_db. */
struct test_dbop {
	struct store_req req;
	struct store *st;
	int db;  /* store_flush's db (-1: FLUSHALL), or SWAPDB's first database */
	int db2; /* SWAPDB's second database, or -1 for a flush */
	atomic_int done;
};

static inline void test_dbop_done(struct store_req *req)
{
	atomic_store(&container_of(req, struct test_dbop, req)->done, 1);
}

static inline void test_dbop_step(void *arg)
{
	struct test_dbop *d = arg;
	d->req.done = test_dbop_done;
	if (d->db2 < 0)
		store_flush(d->st, d->db, &d->req);
	else
		store_swap_db(d->st, (unsigned)d->db, (unsigned)d->db2, &d->req);
}

/* Runs the change on the store's proactor and waits for its done; exits 1
 * when it has not completed within `seconds` (the store is stuck). */
static inline int test_store_dbop(struct pool *pool, struct store *st, int db, int db2,
                                  double seconds)
{
	struct test_dbop d = {.st = st, .db = db, .db2 = db2};
	const char *what = db2 >= 0 ? "SWAPDB" : db < 0 ? "FLUSHALL" : "FLUSHDB";
	test_on_px(pool, test_dbop_step, &d);
	double deadline = test_now() + seconds;
	while (!atomic_load(&d.done)) {
		if (test_now() > deadline) {
			fprintf(stderr, "FAIL: %s did not complete within %.0f s\n", what, seconds);
			_exit(1);
		}
		usleep(1000);
	}
	return d.req.status;
}

/* Runs store_flush(st, db) — FLUSHALL when db < 0, else FLUSHDB db — and
 * returns its status. */
static inline int test_store_flush(struct pool *pool, struct store *st, int db, double seconds)
{
	return test_store_dbop(pool, st, db, -1, seconds);
}

/* Runs SWAPDB db db2 and returns its status. */
static inline int test_store_swap_db(struct pool *pool, struct store *st, unsigned db, unsigned db2,
                                     double seconds)
{
	return test_store_dbop(pool, st, (int)db, (int)db2, seconds);
}

static inline void test_log_stop_step(void *arg)
{
	log_stop(((struct test_close_state *)arg)->obj);
}

static inline void test_log_busy_step(void *arg)
{
	struct test_close_state *s = arg;
	s->busy = log_busy(s->obj);
}

static inline void test_log_close_step(void *arg)
{
	log_close(((struct test_close_state *)arg)->obj);
}

/* Stops `lg`, waits until nothing of it is in flight, then closes it. */
static inline void test_log_close(struct pool *pool, struct log *lg)
{
	test_close_with(pool, lg, test_log_stop_step, test_log_busy_step, test_log_close_step);
}

/* Starts a quiet pool or exits 1 with the reason. */
static inline struct pool *test_pool(unsigned threads, unsigned queue_size, unsigned busy_poll_us,
                                     unsigned entries)
{
	struct pool_config pc = {
	    .threads = threads,
	    .queue_size = queue_size,
	    .px = {.entries = entries, .busy_poll_us = busy_poll_us, .msg_budget = 256},
	    .quiet = true,
	};
	char err[512];
	struct pool *pool;
	logging_level = LOG_LEVEL_WARN;
	if (pool_start(&pool, &pc, err, sizeof(err)) < 0) {
		fprintf(stderr, "pool_start: %s\n", err);
		exit(1);
	}
	return pool;
}

#endif
