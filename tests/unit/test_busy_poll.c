/* test_busy_poll: the proactor's spin before sleeping is adaptive.  Messages
 * that come far apart (a light load) leave it spinning before few of its
 * sleeps; messages that come back to back (a ping-pong, as a busy server's
 * next request does) are caught by the spin, without a sleep. */
#include <stdint.h>

#include "testutil.h"

#define SPIN_US 200   /* the proactor's busy_poll_us */
#define SPARSE_GAP_US 2000 /* ten times the spin: no spin can catch the next message */
#define WAIT_S 5.0

static struct pool *pool;
static atomic_ulong delivered;

static void bump(void *arg)
{
	(void)arg;
	atomic_fetch_add(&delivered, 1);
}

static unsigned long counter(atomic_ulong *s)
{
	return atomic_load_explicit(s, memory_order_relaxed);
}

/* Sends `rounds` messages to proactor 0, each once the last has run, after
 * `gap_us` (0: at once).  Returns false if one was not run in time. */
static bool send_rounds(unsigned long rounds, unsigned gap_us)
{
	for (unsigned long r = 0; r < rounds; r++) {
		unsigned long before = atomic_load(&delivered);
		if (gap_us > 0) {
			struct timespec ts = {0, (long)gap_us * 1000};
			nanosleep(&ts, NULL);
		}
		pool_run_on(pool, 0, bump, NULL);
		if (!test_wait_count(&delivered, before + 1, WAIT_S)) {
			fprintf(stderr, "FAIL: round %lu: message not run within %.0f s\n", r, WAIT_S);
			return false;
		}
	}
	return true;
}

int main(void)
{
	pool = test_pool(1, 64, SPIN_US, 64);
	struct px_stats *s = &pool_px(pool, 0)->stats;

	/* Light load: each message comes 2 ms after the last was run. */
	unsigned long rounds = 300;
	unsigned long sleeps0 = counter(&s->sleeps), polls0 = counter(&s->busy_polls);
	if (!send_rounds(rounds, SPARSE_GAP_US))
		_exit(1);
	unsigned long sleeps = counter(&s->sleeps) - sleeps0, polls = counter(&s->busy_polls) - polls0;
	printf("sparse: %lu messages, %lu sleeps, %lu spins\n", rounds, sleeps, polls);
	CHECK(sleeps >= rounds / 2, "the proactor slept only %lu times in %lu sparse rounds", sleeps,
	      rounds);
	/* Back-off 1, 3, 7 … 63 sleeps after each fruitless spin: about a dozen
	 * spins in 300 sleeps, where a fixed spin makes one per sleep. */
	CHECK(polls <= sleeps / 8, "%lu spins for %lu sleeps: the spin did not back off", polls,
	      sleeps);

	/* Busy: each message is sent as soon as the last has run, well inside
	 * the spin; the spin catches it and the loop seldom sleeps. */
	rounds = test_scaled(3000);
	sleeps0 = counter(&s->sleeps);
	polls0 = counter(&s->busy_polls);
	unsigned long hits0 = counter(&s->busy_poll_hits);
	if (!send_rounds(rounds, 0))
		_exit(1);
	sleeps = counter(&s->sleeps) - sleeps0;
	polls = counter(&s->busy_polls) - polls0;
	unsigned long hits = counter(&s->busy_poll_hits) - hits0;
	pool_stop(pool);
	printf("ping-pong: %lu messages, %lu sleeps, %lu spins, %lu found work\n", rounds, sleeps,
	       polls, hits);
	/* After the sparse phase's back-off the spin must come back: a hit
	 * resets it.  Scheduling noise (sanitizers, a loaded machine) may let a
	 * message come late, so ask for a majority, not all. */
	CHECK(hits >= rounds / 2, "the spin caught only %lu of %lu back-to-back messages", hits,
	      rounds);
	CHECK(sleeps < rounds / 2, "the proactor slept %lu times in %lu back-to-back rounds", sleeps,
	      rounds);
	return test_result();
}
