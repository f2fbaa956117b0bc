/* test_msgq_wakeup: a proactor that sleeps is woken by every message, sent at
 * random moments by a foreign thread and by another proactor; a lost wake-up
 * fails by timeout instead of hanging. */
#include <stdint.h>

#include "testutil.h"

#define WAIT_S 5.0 /* far longer than any wake-up; only a lost one takes this long */

static struct pool *pool;
static atomic_ulong delivered;

static void bump(void *arg)
{
	(void)arg;
	atomic_fetch_add(&delivered, 1);
}

/* Runs on proactor 0 (woken by the main thread), forwards to proactor 1. */
static void relay(void *arg)
{
	(void)arg;
	px_send(px_current(), 1, bump, NULL);
}

static void random_pause(unsigned *seed)
{
	unsigned us = (unsigned)rand_r(seed) % 200;
	if (us < 100) { /* spin: catch the target while it is still busy or spinning */
		double end = test_now() + us / 1e6;
		while (test_now() < end)
			;
	} else {
		struct timespec ts = {0, (long)us * 1000};
		nanosleep(&ts, NULL);
	}
}

static int run_rounds(const char *what, unsigned long rounds, bool via_proactor, unsigned *seed)
{
	for (unsigned long r = 0; r < rounds; r++) {
		unsigned long before = atomic_load(&delivered);
		random_pause(seed);
		if (via_proactor)
			pool_run_on(pool, 0, relay, NULL);
		else
			pool_run_on(pool, (unsigned)(r % 2), bump, NULL);
		if (!test_wait_count(&delivered, before + 1, WAIT_S)) {
			fprintf(stderr, "FAIL: %s: round %lu: message not run within %.0f s (lost wake-up)\n",
				what, r, WAIT_S);
			return 1;
		}
	}
	return 0;
}

int main(void)
{
	unsigned seed = (unsigned)time(NULL);
	unsigned long rounds = test_scaled(20000);
	printf("seed %u, %lu rounds per phase\n", seed, rounds);

	/* busy_poll_us = 0: a proactor with nothing to do goes to sleep at once. */
	pool = test_pool(2, 64, 0, 64);
	if (run_rounds("foreign -> proactor", rounds, false, &seed) ||
	    run_rounds("proactor -> proactor", rounds, true, &seed))
		_exit(1); /* a proactor may be stuck: do not wait for it in pool_stop */

	unsigned long px_wakeups = atomic_load(&pool_px(pool, 0)->stats.wakeups_sent);
	unsigned long sleeps = atomic_load(&pool_px(pool, 1)->stats.sleeps);
	unsigned long foreign_wakeups = pool_foreign_wakeups(pool);
	pool_stop(pool);

	printf("wake-ups: %lu by proactor 0, %lu by foreign threads; proactor 1 slept %lu times\n",
	       px_wakeups, foreign_wakeups, sleeps);
	CHECK(px_wakeups > 0, "proactor 0 never had to wake proactor 1: the test tested nothing");
	CHECK(foreign_wakeups > 0, "no foreign wake-up happened: the test tested nothing");
	CHECK(sleeps >= rounds / 2, "proactor 1 slept only %lu times in %lu rounds", sleeps, 2 * rounds);
	return test_result();
}
