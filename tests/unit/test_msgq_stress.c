/* test_msgq_stress: proactors and foreign threads flood every proactor with
 * millions of messages; none is lost, duplicated or out of per-producer order,
 * and pool_stop drains them all. */
#include <pthread.h>
#include <stdint.h>

#include "testutil.h"

#define N_PX 3      /* more proactors than the 2 CPUs: more interleavings */
#define N_FOREIGN 3 /* foreign producer threads */
#define N_PRODUCERS (N_PX + N_FOREIGN)
#define CHUNK 1000  /* messages a producer task sends per target before re-posting itself */
#define SEQ_BITS 40

static struct pool *pool;
static unsigned long per_pair;                    /* messages from each producer to each proactor */
static unsigned long next_expected[N_PX][N_PRODUCERS]; /* row c: written by proactor c only */
static unsigned long sent[N_PX][N_PX];             /* row p: written by proactor p only */
static atomic_ulong errors;
static atomic_ulong backlog_seen; /* produce() found a full ring at least this often */

static void *encode(unsigned producer, unsigned long seq)
{
	return (void *)(((uintptr_t)producer << SEQ_BITS) | seq);
}

static void on_message(void *arg)
{
	uintptr_t v = (uintptr_t)arg;
	unsigned producer = (unsigned)(v >> SEQ_BITS);
	unsigned long seq = v & ((1UL << SEQ_BITS) - 1);
	unsigned me = px_current()->id;
	if (seq != next_expected[me][producer] && atomic_fetch_add(&errors, 1) < 10)
		fprintf(stderr, "proactor %u: from producer %u got seq %lu, expected %lu\n", me,
			producer, seq, next_expected[me][producer]);
	next_expected[me][producer] = seq + 1;
}

/* Runs on a proactor: sends the next chunk to every proactor, then re-posts
 * itself so the loop keeps turning (and publishing) in between. */
static void produce(void *arg)
{
	(void)arg;
	struct px *self = px_current();
	bool more = false;
	for (unsigned t = 0; t < N_PX; t++) {
		unsigned long *s = &sent[self->id][t];
		for (unsigned k = 0; k < CHUNK && *s < per_pair; k++, (*s)++)
			px_send(self, t, on_message, encode(self->id, *s));
		more |= *s < per_pair;
		if (self->outboxes[t].backlog_count > 0)
			atomic_fetch_add(&backlog_seen, 1);
	}
	if (more)
		px_send(self, self->id, produce, NULL);
}

static void *foreign_producer(void *arg)
{
	unsigned producer = (unsigned)(uintptr_t)arg;
	for (unsigned long seq = 0; seq < per_pair; seq++)
		for (unsigned t = 0; t < N_PX; t++)
			pool_run_on(pool, t, on_message, encode(producer, seq));
	return NULL;
}

int main(void)
{
	per_pair = test_scaled(1000000);
	pool = test_pool(N_PX, 64, 50, 256); /* small rings: the backlog path runs too */

	pthread_t threads[N_FOREIGN];
	for (unsigned p = 0; p < N_PX; p++)
		pool_run_on(pool, p, produce, NULL);
	for (unsigned f = 0; f < N_FOREIGN; f++)
		pthread_create(&threads[f], NULL, foreign_producer, (void *)(uintptr_t)(N_PX + f));
	for (unsigned f = 0; f < N_FOREIGN; f++)
		pthread_join(threads[f], NULL);

	pool_stop(pool); /* drains: every message sent must have run */

	for (unsigned c = 0; c < N_PX; c++)
		for (unsigned p = 0; p < N_PRODUCERS; p++)
			CHECK(next_expected[c][p] == per_pair,
			      "proactor %u got %lu of %lu messages from producer %u", c,
			      next_expected[c][p], per_pair, p);
	CHECK(atomic_load(&errors) == 0, "%lu messages out of order or duplicated",
	      atomic_load(&errors));
	CHECK(atomic_load(&backlog_seen) > 0, "the rings never filled: the backlog path was not run");
	printf("%lu messages delivered in order\n", per_pair * N_PX * N_PRODUCERS);
	return test_result();
}
