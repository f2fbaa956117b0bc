/* test_proactor_ring: the loop under pressure and its services, on every rung
 * of the ring set-up ladder (DEFER_TASKRUN down to a plain ring) — far more
 * SQEs than the SQ holds (submitted in batches as they are prepared) and
 * CQEs than the CQ holds (CQ overflow) all complete exactly once; one-shot
 * and periodic timers fire and stop; end-of-iteration hooks run; a sleeping
 * proactor is woken. */
#include <stdint.h>
#include <string.h>

#include "testutil.h"

#define ENTRIES 64 /* smallest ring: CQ of 256 */

static struct pool *pool;
static unsigned long n_nops;
static atomic_ulong nops_done;
static atomic_ulong nops_failed;
static struct px_op *nop_ops;   /* [n_nops]; each completes once */
static unsigned char *nop_seen; /* [n_nops]; touched on proactor 0 only */
static atomic_ulong duplicates;

static void nop_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	(void)px;
	(void)flags;
	size_t i = (size_t)(op - nop_ops);
	if (nop_seen[i]++)
		atomic_fetch_add(&duplicates, 1);
	if (res != 0)
		atomic_fetch_add(&nops_failed, 1);
	atomic_fetch_add(&nops_done, 1);
}

/* One task queues every NOP without returning to the loop in between. */
static void flood(void *arg)
{
	(void)arg;
	struct px *px = px_current();
	for (unsigned long i = 0; i < n_nops; i++) {
		nop_ops[i].complete = nop_complete;
		struct io_uring_sqe *sqe = px_get_sqe(px, &nop_ops[i]);
		if (sqe == NULL) {
			atomic_fetch_add(&nops_failed, 1);
			atomic_fetch_add(&nops_done, 1);
			continue;
		}
		io_uring_prep_nop(sqe);
	}
}

static struct px_timer once, periodic;
static atomic_ulong once_fired, periodic_fired, periodic_after_stop;
static atomic_bool periodic_stopped;
static atomic_ulong hook_runs;
static struct px_hook hook;

static void once_fn(struct px *px, struct px_timer *t)
{
	(void)px;
	(void)t;
	atomic_fetch_add(&once_fired, 1);
}

static void periodic_fn(struct px *px, struct px_timer *t)
{
	if (atomic_load(&periodic_stopped))
		atomic_fetch_add(&periodic_after_stop, 1);
	if (atomic_fetch_add(&periodic_fired, 1) + 1 == 20) {
		px_timer_stop(px, t);
		atomic_store(&periodic_stopped, true);
	}
}

static bool hook_fn(struct px *px, struct px_hook *h)
{
	(void)px;
	(void)h;
	atomic_fetch_add(&hook_runs, 1);
	return false;
}

static void start_timers(void *arg)
{
	(void)arg;
	struct px *px = px_current();
	px_timer_start(px, &once, 1000000, 0, once_fn);
	px_timer_start(px, &periodic, 1000000, 1000000, periodic_fn);
	px_hook_add(px, &hook);
	hook.fn = hook_fn;
}

static atomic_bool armed_after;
static atomic_ulong checked;
static void check_timers(void *arg)
{
	(void)arg;
	atomic_store(&armed_after, px_timer_armed(&once) || px_timer_armed(&periodic));
	atomic_fetch_add(&checked, 1);
}

static void reset(void)
{
	atomic_store(&nops_done, 0);
	atomic_store(&nops_failed, 0);
	atomic_store(&duplicates, 0);
	memset(nop_seen, 0, n_nops);
	atomic_store(&once_fired, 0);
	atomic_store(&periodic_fired, 0);
	atomic_store(&periodic_after_stop, 0);
	atomic_store(&periodic_stopped, false);
	atomic_store(&hook_runs, 0);
	atomic_store(&checked, 0);
}

static void run_rung(unsigned rung)
{
	struct pool_config pc = {
		.threads = 1,
		.queue_size = 64,
		.px = {.entries = ENTRIES, .busy_poll_us = 50, .msg_budget = 256, .setup_start = rung},
		.quiet = true,
	};
	char err[512];
	reset();
	if (pool_start(&pool, &pc, err, sizeof(err)) < 0) {
		CHECK(false, "rung %u: pool_start: %s", rung, err);
		return;
	}
	struct px *px = pool_px(pool, 0);
	char desc[512];
	px_describe(px, desc, sizeof(desc));
	printf("rung %u: %s\n", rung, desc);

	pool_run_on(pool, 0, flood, NULL);
	CHECK(test_wait_count(&nops_done, n_nops, 60), "rung %u: only %lu of %lu NOPs completed",
	      rung, atomic_load(&nops_done), n_nops);
	printf("  %lu NOPs through a %u-entry SQ: SQ full %lu times, CQ overflow %lu times\n",
	       n_nops, ENTRIES, atomic_load(&px->stats.sq_full),
	       atomic_load(&px->stats.cq_overflows));
	CHECK(atomic_load(&nops_failed) == 0, "rung %u: %lu NOPs failed", rung,
	      atomic_load(&nops_failed));
	CHECK(atomic_load(&duplicates) == 0, "rung %u: %lu NOPs completed twice", rung,
	      atomic_load(&duplicates));
	/* px_get_sqe submits every PX_SUBMIT_BATCH SQEs, so the SQ no longer
	 * fills: the flood must have gone out in many submissions instead. */
	CHECK(atomic_load(&px->stats.submits) >= n_nops / ENTRIES,
	      "rung %u: %lu NOPs in only %lu submissions", rung, n_nops,
	      atomic_load(&px->stats.submits));
	CHECK(atomic_load(&px->stats.cq_overflows) > 0, "rung %u: the CQ never overflowed", rung);

	pool_run_on(pool, 0, start_timers, NULL);
	CHECK(test_wait_count(&periodic_fired, 20, 10), "rung %u: periodic timer fired %lu times",
	      rung, atomic_load(&periodic_fired));
	CHECK(test_wait_count(&once_fired, 1, 10), "rung %u: one-shot timer did not fire", rung);
	struct timespec ts = {0, 20000000}; /* 20 periods: a stopped timer would fire again */
	nanosleep(&ts, NULL);
	/* The proactor is asleep by now: this message must wake it. */
	pool_run_on(pool, 0, check_timers, NULL);
	CHECK(test_wait_count(&checked, 1, 10), "rung %u: a sleeping proactor was not woken", rung);
	CHECK(atomic_load(&once_fired) == 1, "rung %u: one-shot timer fired %lu times", rung,
	      atomic_load(&once_fired));
	CHECK(atomic_load(&periodic_fired) == 20, "rung %u: periodic timer fired %lu times", rung,
	      atomic_load(&periodic_fired));
	CHECK(atomic_load(&periodic_after_stop) == 0, "rung %u: fn ran after px_timer_stop", rung);
	CHECK(!atomic_load(&armed_after), "rung %u: a timer is still armed after it ended", rung);
	CHECK(atomic_load(&hook_runs) > 0, "rung %u: the end-of-iteration hook never ran", rung);
	CHECK(atomic_load(&px->stats.sleeps) > 0, "rung %u: the proactor never slept", rung);
	pool_stop(pool);
}

int main(void)
{
	logging_level = LOG_LEVEL_WARN;
	n_nops = test_scaled(50000);
	nop_ops = calloc(n_nops, sizeof(*nop_ops));
	nop_seen = calloc(n_nops, 1);
	for (unsigned rung = 0; rung < PX_SETUP_RUNGS; rung++)
		run_rung(rung);
	free(nop_ops);
	free(nop_seen);
	return test_result();
}
