/* test_msgq_full: a fast producer fills a slow consumer's ring; nothing is
 * lost or reordered, and the producer's loop keeps running (its timer ticks)
 * while its backlog waits for room. */
#include <stdint.h>

#include "testutil.h"

static struct pool *pool;
static unsigned long total;
static atomic_ulong received;
static atomic_ulong order_errors;
static atomic_ulong ticks_while_backlogged;
static atomic_ulong max_backlog;
static unsigned long next_seq; /* consumer (proactor 1) only */
static struct px_timer ticker; /* producer (proactor 0) only */

static void consume(void *arg)
{
	unsigned long seq = (unsigned long)(uintptr_t)arg;
	if (seq != next_seq)
		atomic_fetch_add(&order_errors, 1);
	next_seq = seq + 1;
	uint64_t until = px_now_ns() + 1000; /* a slow consumer: ~1 us per message */
	while (px_now_ns() < until)
		;
	atomic_fetch_add(&received, 1);
}

static void tick(struct px *px, struct px_timer *t)
{
	(void)t;
	if (px->outboxes[1].backlog_count > 0)
		atomic_fetch_add(&ticks_while_backlogged, 1);
	else if (atomic_load(&received) == total)
		px_timer_stop(px, &ticker);
}

/* Runs on proactor 0: sends everything at once, far more than the ring holds. */
static void produce_all(void *arg)
{
	(void)arg;
	struct px *self = px_current();
	px_timer_start(self, &ticker, 200000, 200000, tick);
	for (unsigned long i = 0; i < total; i++)
		px_send(self, 1, consume, (void *)(uintptr_t)i);
	atomic_store(&max_backlog, self->outboxes[1].backlog_count);
}

int main(void)
{
	total = test_scaled(200000);
	pool = test_pool(2, 16, 50, 64);
	pool_run_on(pool, 0, produce_all, NULL);
	if (!test_wait_count(&received, total, 120)) {
		fprintf(stderr, "FAIL: only %lu of %lu messages arrived\n", atomic_load(&received),
			total);
		_exit(1);
	}
	pool_stop(pool);
	printf("%lu messages; backlog peaked at %lu; producer timer ticked %lu times while"
	       " backlogged\n",
	       total, atomic_load(&max_backlog), atomic_load(&ticks_while_backlogged));
	CHECK(atomic_load(&order_errors) == 0, "%lu messages out of order",
	      atomic_load(&order_errors));
	CHECK(atomic_load(&max_backlog) > 0, "the ring never filled: nothing was tested");
	CHECK(atomic_load(&ticks_while_backlogged) > 0,
	      "the producer's loop did not run while its backlog waited");
	return test_result();
}
