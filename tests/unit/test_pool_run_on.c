/* test_pool_run_on: the seed's scenario — a task run on proactor i sets a
 * thread-local there and the caller's copy is unchanged — plus pool_call
 * round trips and pool_run_all fan-outs, from proactors and foreign threads. */
#include <stdint.h>

#include "testutil.h"

#define N_PX 2

static __thread long tls_value = -1; /* each thread's own copy */
static struct pool *pool;
static atomic_long seen_value[N_PX];   /* tls_value read back on proactor i */
static atomic_ulong done_count;
static atomic_ulong errors;

static void set_tls(void *arg)
{
	long id = (long)(uintptr_t)arg;
	CHECK(px_current() != NULL && px_current()->id == (unsigned)id,
	      "task for proactor %ld ran on the wrong thread", id);
	tls_value = 100 + id;
	atomic_fetch_add(&done_count, 1);
}

static void read_tls(void *arg)
{
	long id = (long)(uintptr_t)arg;
	atomic_store(&seen_value[id], tls_value);
	atomic_fetch_add(&done_count, 1);
}

/* pool_call from proactor 0 to proactor 1 and back. */
struct ping {
	struct pool_call call;
	long remote_tls;   /* tls_value on the target, read there */
	unsigned ran_on;   /* proactor fn ran on */
	unsigned done_on;  /* proactor done ran on */
};
static struct ping ping;

static void ping_fn(struct pool_call *c)
{
	struct ping *p = container_of(c, struct ping, call);
	p->remote_tls = tls_value;
	p->ran_on = px_current()->id;
}

static void ping_done(struct pool_call *c)
{
	struct ping *p = container_of(c, struct ping, call);
	p->done_on = px_current()->id;
	if (tls_value != 100) /* the caller's (proactor 0's) copy is untouched */
		atomic_fetch_add(&errors, 1);
	atomic_fetch_add(&done_count, 1);
}

static void start_ping(void *arg)
{
	(void)arg;
	ping.call.fn = ping_fn;
	ping.call.done = ping_done;
	pool_call(pool, 1, &ping.call);
}

/* pool_run_all from proactor 1: each proactor answers 1000 * id + tls. */
static atomic_long gather_results[N_PX];
static atomic_uint gather_done_on;

static int64_t gather_fn(struct pool_gather *g, unsigned id)
{
	(void)g;
	return 1000 * (int64_t)id + tls_value;
}

static void gather_done(struct pool_gather *g)
{
	for (unsigned i = 0; i < g->n; i++)
		atomic_store(&gather_results[g->slots[i].px], g->slots[i].result);
	atomic_store(&gather_done_on, px_current()->id);
	free(g);
	atomic_fetch_add(&done_count, 1);
}

static void start_gather(void *arg)
{
	(void)arg;
	struct pool_gather *g = pool_gather_new(pool, gather_fn, gather_done, NULL);
	CHECK(g != NULL, "pool_gather_new failed");
	pool_run_all(g);
}

int main(void)
{
	tls_value = 42;
	pool = test_pool(N_PX, 64, 50, 64);

	for (unsigned i = 0; i < N_PX; i++)
		pool_run_on(pool, i, set_tls, (void *)(uintptr_t)i);
	CHECK(test_wait_count(&done_count, N_PX, 10), "set_tls tasks did not run");
	for (unsigned i = 0; i < N_PX; i++)
		pool_run_on(pool, i, read_tls, (void *)(uintptr_t)i);
	CHECK(test_wait_count(&done_count, 2 * N_PX, 10), "read_tls tasks did not run");
	CHECK(tls_value == 42, "the caller's thread-local changed to %ld", tls_value);
	for (unsigned i = 0; i < N_PX; i++)
		CHECK(atomic_load(&seen_value[i]) == 100 + (long)i,
		      "proactor %u's thread-local is %ld, expected %ld", i,
		      atomic_load(&seen_value[i]), 100 + (long)i);

	pool_run_on(pool, 0, start_ping, NULL);
	CHECK(test_wait_count(&done_count, 2 * N_PX + 1, 10), "pool_call did not come back");
	CHECK(ping.ran_on == 1 && ping.done_on == 0,
	      "pool_call ran on %u and came back on %u (expected 1 and 0)", ping.ran_on,
	      ping.done_on);
	CHECK(ping.remote_tls == 101, "pool_call saw the target's thread-local as %ld",
	      ping.remote_tls);
	CHECK(atomic_load(&errors) == 0, "the caller's thread-local changed during pool_call");

	pool_run_on(pool, 1, start_gather, NULL);
	CHECK(test_wait_count(&done_count, 2 * N_PX + 2, 10), "pool_run_all did not finish");
	CHECK(atomic_load(&gather_done_on) == 1, "gather done ran on proactor %u, expected 1",
	      atomic_load(&gather_done_on));
	for (unsigned i = 0; i < N_PX; i++)
		CHECK(atomic_load(&gather_results[i]) == 1000 * (long)i + 100 + (long)i,
		      "gather slot %u holds %ld", i, atomic_load(&gather_results[i]));

	pool_stop(pool);
	CHECK(tls_value == 42, "the caller's thread-local changed to %ld", tls_value);
	return test_result();
}
