/* test_busy_poll: the proactor's spin before sleeping backs off exactly as its
 * rule says, checked without timing: the rule itself (px_spin_due/px_spin_done)
 * step by step; a loop sent each message only once it is blocked in the kernel,
 * so no spin can find work, spins at exactly the sleeps the rule allows; a loop
 * whose spin never times out catches every message in a spin and never skips
 * one after a catch. */
#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "testutil.h"

#define SPIN_US         50          /* the sparse loop's busy_poll_us */
#define SPIN_FOREVER_US 3600000000u /* an hour: a spin that ends only with work */
#define SPARSE_ROUNDS   200         /* past the cap: gaps 1, 3 ... 63, 63 */
#define WAIT_S          5.0

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

/* Spins the rule allows in `calls` sleeps when no spin finds work, from a
 * fresh state: the first sleep spins, then 1, 3, 7, 15, 31, 63, 63 ... go
 * without.  Written from the rule, not from px_spin_done. */
static unsigned long spins_allowed(unsigned long calls)
{
	unsigned long spins = 0, gap = 1;
	for (unsigned long next = 0; next < calls;
	     next += gap + 1, gap = gap < 63 ? 2 * gap + 1 : 63)
		spins++;
	return spins;
}

/* The rule alone: skips after each fruitless spin, the cap, the reset. */
static void test_rule(void)
{
	static const unsigned skips[] = {1, 3, 7, 15, 31, 63, 63, 63};
	struct px_spin_backoff b = {0, 0};
	for (size_t i = 0; i < sizeof(skips) / sizeof(skips[0]); i++) {
		CHECK(px_spin_due(&b), "fruitless spin %zu: the sleep after the skips spins", i);
		px_spin_done(&b, false);
		for (unsigned k = 0; k < skips[i]; k++)
			CHECK(!px_spin_due(&b), "fruitless spin %zu: sleep %u after it spins", i,
			      k);
	}
	CHECK(px_spin_due(&b), "after the skips");
	px_spin_done(&b, true);
	CHECK(px_spin_due(&b), "a spin that found work: the next sleep spins");
	px_spin_done(&b, true);
	CHECK(px_spin_due(&b), "and so on while spins find work");
	px_spin_done(&b, false);
	CHECK(!px_spin_due(&b) && px_spin_due(&b), "a found spin reset the back-off: one skip");

	b = (struct px_spin_backoff){0, 0};
	unsigned long spins = 0;
	for (unsigned long call = 0; call < 1000; call++)
		if (px_spin_due(&b)) {
			spins++;
			px_spin_done(&b, false);
		}
	CHECK(spins == spins_allowed(1000), "%lu spins in 1000 idle sleeps, the rule allows %lu",
	      spins, spins_allowed(1000));
}

/* Kernel thread id of the thread named `name` in this process, or -1. */
static pid_t thread_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	pid_t found = -1;
	while (d != NULL && found < 0 && (de = readdir(d)) != NULL) {
		char path[300], comm[64] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue;
		if (fgets(comm, sizeof(comm), f) != NULL &&
		    strncmp(comm, name, strlen(name)) == 0 && comm[strlen(name)] == '\n')
			found = (pid_t)atoi(de->d_name);
		fclose(f);
	}
	if (d != NULL)
		closedir(d);
	return found;
}

/* Scheduler state of thread `tid` ('R', 'S', ...), or 0. */
static char thread_state(pid_t tid)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	char *ok = fgets(line, sizeof(line), f);
	fclose(f);
	char *paren = ok ? strrchr(line, ')') : NULL;
	return paren != NULL && paren[1] == ' ' ? paren[2] : 0;
}

/* Waits until proactor `px` (thread `tid`) blocks in its sleep: it announced
 * the sleep and the thread waits in the kernel, so it has checked its inbox
 * and a message sent now wakes it — no spin of it can see the message.
 * Returns false after WAIT_S. */
static bool wait_blocked(struct px *px, pid_t tid)
{
	double deadline = test_now() + WAIT_S;
	while (atomic_load(&px->inbox->waker.sleeping) != 1 || thread_state(tid) != 'S') {
		if (test_now() > deadline)
			return false;
		struct timespec ts = {0, 20000};
		nanosleep(&ts, NULL);
	}
	return true;
}

/* Each message goes once the proactor is blocked, so every spin finds
 * nothing and the spins must fall exactly where the rule allows. */
static void test_sparse_loop(void)
{
	struct pool *pool = test_pool(1, 64, SPIN_US, 64);
	struct px *px = pool_px(pool, 0);
	struct px_stats *s = &px->stats;
	pid_t tid = thread_named("ringkv-px0");
	CHECK(tid > 0, "the proactor's thread");
	if (tid <= 0)
		_exit(test_result());
	for (unsigned long r = 0; r < SPARSE_ROUNDS; r++) {
		unsigned long before = atomic_load(&delivered);
		if (!wait_blocked(px, tid)) {
			fprintf(stderr,
			        "FAIL: round %lu: the proactor did not block within %.0f s\n", r,
			        WAIT_S);
			_exit(1);
		}
		pool_run_on(pool, 0, bump, NULL);
		if (!test_wait_count(&delivered, before + 1, WAIT_S)) {
			fprintf(stderr, "FAIL: round %lu: message not run within %.0f s\n", r,
			        WAIT_S);
			_exit(1);
		}
	}
	if (!wait_blocked(px, tid)) /* its last sleep decided and counted */
		_exit(1);
	unsigned long polls = counter(&s->busy_polls), skips = counter(&s->busy_poll_skips);
	unsigned long hits = counter(&s->busy_poll_hits), calls = polls + skips;
	pool_stop(pool);
	printf("sparse: %d messages, %lu sleeps decided: %lu spins (%lu found work), %lu skipped\n",
	       SPARSE_ROUNDS, calls, polls, hits, skips);
	CHECK(calls >= SPARSE_ROUNDS, "%lu sleeps decided for %d messages", calls, SPARSE_ROUNDS);
	CHECK(hits == 0, "%lu spins found work no message was there for", hits);
	CHECK(polls == spins_allowed(calls), "%lu spins in %lu sleeps; the back-off allows %lu",
	      polls, calls, spins_allowed(calls));
}

/* A spin that cannot time out ends only with work: every spin catches its
 * message, and since a catch resets the back-off, no sleep is skipped and
 * the loop never sleeps. */
static void test_back_to_back_loop(void)
{
	struct pool *pool = test_pool(1, 64, SPIN_FOREVER_US, 64);
	struct px_stats *s = &pool_px(pool, 0)->stats;
	unsigned long rounds = test_scaled(3000);
	for (unsigned long r = 0; r < rounds; r++) {
		unsigned long before = atomic_load(&delivered);
		pool_run_on(pool, 0, bump, NULL);
		if (!test_wait_count(&delivered, before + 1, WAIT_S)) {
			fprintf(stderr, "FAIL: round %lu: message not run within %.0f s\n", r,
			        WAIT_S);
			_exit(1);
		}
	}
	/* Read after the last message ran: the spin that caught it is counted,
	 * the one now waiting is not. */
	unsigned long polls = counter(&s->busy_polls), hits = counter(&s->busy_poll_hits);
	unsigned long skips = counter(&s->busy_poll_skips), sleeps = counter(&s->sleeps);
	pool_stop(pool);
	printf("back to back: %lu messages, %lu spins (%lu found work), %lu skipped, %lu sleeps\n",
	       rounds, polls, hits, skips, sleeps);
	CHECK(polls >= 1 && hits == polls, "%lu of %lu spins found work", hits, polls);
	CHECK(skips == 0, "%lu sleeps skipped their spin after spins that found work", skips);
	CHECK(sleeps == 0, "the loop slept %lu times", sleeps);
}

int main(void)
{
	test_rule();
	test_sparse_loop();
	test_back_to_back_loop();
	return test_result();
}
