/* index_lookup: the lookup threads (index.h, "lookups off the loop").
 *
 * The queue is a FIFO under one mutex.  Proactors append whole lists (one
 * lock per store and loop iteration, not per lookup) and never wait on
 * anything else; the threads take up to LOOKUP_BATCH lookups of one index at
 * a time, read them with one MultiGet (sorted rows share the filter and index
 * blocks they read), and deliver the answers in runs of one owner. */
#include "storage/index_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"

#define LOOKUP_BATCH 16 /* lookups of one index a thread reads at once */

/* Takes up to LOOKUP_BATCH lookups of the head's index off the queue (the
 * others keep their places).  Called with the lock held; the queue is not
 * empty. */
static struct idx_lookup *take_batch(struct idx_shared *sh, size_t *n_out)
{
	struct idx_lookup *batch = NULL, **tail = &batch;
	struct idx *ix = sh->lookup_head->ix;
	size_t n = 0;
	struct idx_lookup **link = &sh->lookup_head, *prev = NULL;
	while (*link != NULL && n < LOOKUP_BATCH) {
		struct idx_lookup *l = *link;
		if (l->ix != ix) {
			prev = l;
			link = &l->next;
			continue;
		}
		*link = l->next;
		if (sh->lookup_tail == l)
			sh->lookup_tail = prev;
		l->next = NULL;
		*tail = l;
		tail = &l->next;
		n++;
	}
	*n_out = n;
	return batch;
}

/* Reads a batch of one index; every lookup gets its status. */
static void read_batch(struct idx_lookup *batch, size_t n)
{
	struct idx *ix = batch->ix;
	struct idx_probe probes[LOOKUP_BATCH];
	size_t i = 0;
	for (struct idx_lookup *l = batch; l != NULL; l = l->next, i++)
		probes[i] = (struct idx_probe){.key = l->key, .klen = l->klen};
	struct ix_many_stats stats;
	int ret = ix_get_many(ix, probes, n, IDX_BLOCKING, true, &stats);
	i = 0;
	for (struct idx_lookup *l = batch; l != NULL; l = l->next, i++) {
		if (ret == -EINVAL || ret == -ENOMEM) { /* nothing was looked up */
			l->status = ret;
			l->value = NULL;
			l->blocks_read = 0;
			continue;
		}
		l->status = probes[i].status;
		l->e = probes[i].e;
		l->value = probes[i].value;
		l->blocks_read = i == 0 ? stats.blocks_read : 0;
	}
}

/* Hands a batch back, one list per run of lookups of one owner. */
static void deliver(struct idx_lookup *batch)
{
	while (batch != NULL) {
		struct idx_lookup *run = batch, *last = batch;
		while (last->next != NULL && last->next->owner == run->owner)
			last = last->next;
		batch = last->next;
		last->next = NULL;
		run->owner->deliver(run, run->owner->arg);
	}
}

static void *lookup_main(void *arg)
{
	struct idx_shared *sh = arg;
	logging_set_thread_name("ringkv-idx");
	pthread_setname_np(pthread_self(), "ringkv-idx");
	pthread_mutex_lock(&sh->lookup_lock);
	for (;;) {
		while (sh->lookup_head == NULL && !sh->lookup_stop) {
			sh->lookup_idle++;
			pthread_cond_wait(&sh->lookup_cond, &sh->lookup_lock);
			sh->lookup_idle--;
		}
		if (sh->lookup_head == NULL) /* stopping, and nothing left */
			break;
		size_t n;
		struct idx_lookup *batch = take_batch(sh, &n);
		/* Another thread takes what is left while this one reads. */
		if (sh->lookup_head != NULL && sh->lookup_idle > 0)
			pthread_cond_signal(&sh->lookup_cond);
		pthread_mutex_unlock(&sh->lookup_lock);
		read_batch(batch, n);
		deliver(batch);
		pthread_mutex_lock(&sh->lookup_lock);
	}
	pthread_mutex_unlock(&sh->lookup_lock);
	return NULL;
}

int idx_lookup_start(struct idx_shared *sh, unsigned threads, char *err, size_t errlen)
{
	if (threads < 1 || threads > IDX_LOOKUP_THREADS_MAX) {
		snprintf(err, errlen, "index: %u lookup threads; it must be 1 to %u", threads,
		         IDX_LOOKUP_THREADS_MAX);
		return -EINVAL;
	}
	if (sh->n_lookup_threads > 0) {
		snprintf(err, errlen, "index: the lookup threads are already started");
		return -EALREADY;
	}
	sh->lookup_threads = calloc(threads, sizeof(*sh->lookup_threads));
	if (sh->lookup_threads == NULL) {
		snprintf(err, errlen, "index: out of memory for %u lookup threads", threads);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < threads; i++) {
		int ret = pthread_create(&sh->lookup_threads[i], NULL, lookup_main, sh);
		if (ret != 0) {
			snprintf(err, errlen,
			         "index: cannot start lookup thread %u of %u: %s: lower"
			         " storage.index_threads or raise the process's thread limit"
			         " (ulimit -u)",
			         i + 1, threads, strerror(ret));
			ix_lookup_stop(sh, i);
			return -ret;
		}
	}
	__atomic_store_n(&sh->n_lookup_threads, threads, __ATOMIC_RELEASE);
	return 0;
}

void ix_lookup_stop(struct idx_shared *sh, unsigned started)
{
	if (started == 0) {
		free(sh->lookup_threads);
		sh->lookup_threads = NULL;
		return;
	}
	pthread_mutex_lock(&sh->lookup_lock);
	if (sh->lookup_head != NULL)
		LOG_ERROR("index: lookups still queued when the lookup threads stop (a store closed"
		          " before its lookups came back)");
	sh->lookup_stop = true;
	pthread_cond_broadcast(&sh->lookup_cond);
	pthread_mutex_unlock(&sh->lookup_lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(sh->lookup_threads[i], NULL);
	free(sh->lookup_threads);
	sh->lookup_threads = NULL;
	sh->n_lookup_threads = 0;
}

bool idx_lookups_on(const struct idx *ix)
{
	return __atomic_load_n(&ix->sh->n_lookup_threads, __ATOMIC_ACQUIRE) > 0;
}

struct idx_shared *idx_shared_of(const struct idx *ix)
{
	return ix->sh;
}

void idx_lookup_submit(struct idx_shared *sh, struct idx_lookup *list, struct idx_lookup *last,
                       size_t n)
{
	if (list == NULL)
		return;
	last->next = NULL;
	pthread_mutex_lock(&sh->lookup_lock);
	if (sh->lookup_tail != NULL)
		sh->lookup_tail->next = list;
	else
		sh->lookup_head = list;
	sh->lookup_tail = last;
	/* One thread per batch's worth, as many as are idle. */
	size_t wake = (n + LOOKUP_BATCH - 1) / LOOKUP_BATCH;
	if (wake >= sh->lookup_idle)
		pthread_cond_broadcast(&sh->lookup_cond);
	else
		while (wake-- > 0)
			pthread_cond_signal(&sh->lookup_cond);
	pthread_mutex_unlock(&sh->lookup_lock);
}
