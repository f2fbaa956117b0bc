/* test_proactor_ring: the loop under pressure and its services — far more
 * SQEs than the SQ holds and CQEs than the CQ holds (SQ full, CQ overflow)
 * all complete exactly once; one-shot and periodic timers fire and stop;
 * end-of-iteration hooks run. */
#include <stdint.h>

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

int main(void)
{
	n_nops = test_scaled(100000);
	nop_ops = calloc(n_nops, sizeof(*nop_ops));
	nop_seen = calloc(n_nops, 1);
	pool = test_pool(1, 64, 50, ENTRIES);

	pool_run_on(pool, 0, flood, NULL);
	CHECK(test_wait_count(&nops_done, n_nops, 60), "only %lu of %lu NOPs completed",
	      atomic_load(&nops_done), n_nops);
	struct px *px = pool_px(pool, 0);
	printf("%lu NOPs through a %u-entry SQ: SQ full %lu times, CQ overflow %lu times\n", n_nops,
	       ENTRIES, atomic_load(&px->stats.sq_full), atomic_load(&px->stats.cq_overflows));
	CHECK(atomic_load(&nops_failed) == 0, "%lu NOPs failed", atomic_load(&nops_failed));
	CHECK(atomic_load(&duplicates) == 0, "%lu NOPs completed twice", atomic_load(&duplicates));
	CHECK(atomic_load(&px->stats.sq_full) > 0, "the SQ never filled: nothing was tested");
	CHECK(atomic_load(&px->stats.cq_overflows) > 0, "the CQ never overflowed: nothing was tested");

	pool_run_on(pool, 0, start_timers, NULL);
	CHECK(test_wait_count(&periodic_fired, 20, 10), "periodic timer fired %lu times",
	      atomic_load(&periodic_fired));
	CHECK(test_wait_count(&once_fired, 1, 10), "one-shot timer did not fire");
	struct timespec ts = {0, 20000000}; /* 20 periods: a stopped timer would fire again */
	nanosleep(&ts, NULL);
	pool_run_on(pool, 0, check_timers, NULL);
	CHECK(test_wait_count(&checked, 1, 10), "check task did not run");
	CHECK(atomic_load(&once_fired) == 1, "one-shot timer fired %lu times",
	      atomic_load(&once_fired));
	CHECK(atomic_load(&periodic_fired) == 20, "periodic timer fired %lu times after stop at 20",
	      atomic_load(&periodic_fired));
	CHECK(atomic_load(&periodic_after_stop) == 0, "fn ran after px_timer_stop");
	CHECK(!atomic_load(&armed_after), "a timer is still armed after firing or stopping");
	CHECK(atomic_load(&hook_runs) > 0, "the end-of-iteration hook never ran");
	pool_stop(pool);
	free(nop_ops);
	free(nop_seen);
	return test_result();
}
