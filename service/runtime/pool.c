/* pool: see pool.h for the API and the shutdown protocol. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "logging.h"

#define POOL_FOREIGN_QUEUE 4096     /* slots of each proactor's foreign ring */
#define POOL_STOP_GRACE_NS 2000000L /* nothing may change for this long before exit */

struct pool_thread {
	struct pool *pool;
	struct px *px;
	pthread_t tid;
	bool started;    /* pthread_create succeeded */
	int cpu;         /* pinned CPU, or -1 */
	struct px_hook *stop_hooks; /* run once on this proactor when stopping begins */
};

struct pool {
	unsigned n;
	struct pool_config cfg;
	struct px *pxs;                  /* [n], cache-line aligned */
	struct msgq_inbox *inboxes;      /* [n] */
	struct msgq_spsc *rings;         /* [n * n]: rings[target * n + producer] */
	struct msgq_outbox *outboxes;    /* [n * n]: outboxes[producer * n + target] */
	struct pool_thread *threads;     /* [n] */

	pthread_mutex_t start_lock;      /* start-up only: never on the request path */
	pthread_cond_t start_cond;
	unsigned start_reported;         /* threads that finished px_init */
	int start_error;                 /* first px_init failure, or 0 */
	char start_msg[640];             /* its message: "proactor N: " + px_init's */
	bool start_go;                   /* all reported: run (or exit if start_error) */

	atomic_ulong foreign_sent;       /* messages pushed by foreign threads */
	atomic_ulong foreign_wakeups;    /* eventfd writes made by foreign threads */
};

unsigned pool_size(const struct pool *pool)
{
	return pool->n;
}

struct px *pool_px(struct pool *pool, unsigned i)
{
	return &pool->pxs[i];
}

unsigned long pool_foreign_wakeups(const struct pool *pool)
{
	return atomic_load(&pool->foreign_wakeups);
}

/* ---- running work ------------------------------------------------------ */

void pool_run_on(struct pool *pool, unsigned target, void (*fn)(void *arg), void *arg)
{
	ASSERT(target < pool->n);
	struct px *self = px_current();
	if (self != NULL && self->pool == pool) {
		px_send(self, target, fn, arg);
		return;
	}
	struct msgq_inbox *in = &pool->inboxes[target];
	atomic_fetch_add_explicit(&pool->foreign_sent, 1, memory_order_relaxed);
	while (!msgq_mpsc_push(&in->foreign, (struct msgq_msg){fn, arg}))
		sched_yield();
	if (msgq_wake(&in->waker))
		atomic_fetch_add_explicit(&pool->foreign_wakeups, 1, memory_order_relaxed);
}

static void call_done(void *arg)
{
	struct pool_call *call = arg;
	call->done(call);
}

static void call_run(void *arg)
{
	struct pool_call *call = arg;
	call->fn(call);
	px_send(px_current(), call->origin, call_done, call);
}

void pool_call(struct pool *pool, unsigned target, struct pool_call *call)
{
	struct px *self = px_current();
	ASSERT(self != NULL && self->pool == pool);
	call->pool = pool;
	call->origin = self->id;
	px_send(self, target, call_run, call);
}

struct pool_gather *pool_gather_new(struct pool *pool, int64_t (*fn)(struct pool_gather *, unsigned),
				    void (*done)(struct pool_gather *), void *arg)
{
	struct pool_gather *g = calloc(1, sizeof(*g) + pool->n * sizeof(g->slots[0]));
	if (g == NULL)
		return NULL;
	g->fn = fn;
	g->done = done;
	g->arg = arg;
	g->pool = pool;
	g->n = pool->n;
	for (unsigned i = 0; i < pool->n; i++) {
		g->slots[i].gather = g;
		g->slots[i].px = i;
	}
	return g;
}

static void gather_reply(void *arg)
{
	struct pool_gather_slot *slot = arg;
	struct pool_gather *g = slot->gather;
	if (--g->pending == 0)
		g->done(g);
}

static void gather_run(void *arg)
{
	struct pool_gather_slot *slot = arg;
	struct pool_gather *g = slot->gather;
	slot->result = g->fn(g, slot->px);
	px_send(px_current(), g->origin, gather_reply, slot);
}

void pool_run_all(struct pool_gather *g)
{
	struct px *self = px_current();
	ASSERT(self != NULL && self->pool == g->pool);
	g->origin = self->id;
	g->pending = g->n;
	for (unsigned i = 0; i < g->n; i++)
		px_send(self, i, gather_run, &g->slots[i]);
}

void pool_on_stop(struct px *px, struct px_hook *hook)
{
	struct pool_thread *t = &px->pool->threads[px->id];
	hook->next = t->stop_hooks;
	t->stop_hooks = hook;
}

/* ---- threads ----------------------------------------------------------- */

/* The i-th CPU this process may run on (mod their number), or -1. */
static int nth_allowed_cpu(unsigned i)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return -1;
	int count = CPU_COUNT(&set);
	if (count <= 0)
		return -1;
	unsigned want = i % (unsigned)count;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &set) && want-- == 0)
			return cpu;
	return -1;
}

static void *proactor_thread(void *arg)
{
	struct pool_thread *t = arg;
	struct pool *pool = t->pool;
	struct px *px = t->px;
	char name[16], msg[512] = "";

	snprintf(name, sizeof(name), "px%u", px->id);
	logging_set_thread_name(name);
	snprintf(name, sizeof(name), "ringkv-px%u", px->id);
	pthread_setname_np(pthread_self(), name);
	if (t->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(t->cpu, &set);
		int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
		if (err != 0)
			LOG_WARN("cannot pin proactor %u to cpu %d: %s; running unpinned", px->id,
				 t->cpu, strerror(err));
	}

	int ret = px_init(px, &pool->cfg.px, msg, sizeof(msg));
	if (ret == 0 && !pool->cfg.quiet) { /* before reporting: it precedes "started" */
		char where[32] = "unpinned", desc[512];
		if (t->cpu >= 0)
			snprintf(where, sizeof(where), "on cpu %d", t->cpu);
		px_describe(px, desc, sizeof(desc));
		LOG_INFO("proactor %u ready (%s): %s", px->id, where, desc);
	}

	pthread_mutex_lock(&pool->start_lock);
	if (ret < 0 && pool->start_error == 0) {
		pool->start_error = ret;
		snprintf(pool->start_msg, sizeof(pool->start_msg), "proactor %u: %s", px->id, msg);
	}
	pool->start_reported++;
	pthread_cond_broadcast(&pool->start_cond);
	while (!pool->start_go)
		pthread_cond_wait(&pool->start_cond, &pool->start_lock);
	bool run = pool->start_error == 0;
	pthread_mutex_unlock(&pool->start_lock);

	if (ret < 0)
		return NULL;
	if (run)
		px_run(px);
	px_destroy(px);
	return NULL;
}

static void begin_stop(void *arg)
{
	struct px *px = arg;
	struct pool_thread *t = &px->pool->threads[px->id];
	px->stopping = true;
	for (struct px_hook *h = t->stop_hooks; h != NULL; h = h->next)
		h->fn(px, h);
}

/* A consistent-looking view of the whole pool, compared across the grace
 * period by pool_stop. */
struct pool_snapshot {
	bool all_drained;
	unsigned long sent, run;
};

static void pool_snapshot(struct pool *pool, struct pool_snapshot *s)
{
	s->all_drained = true;
	s->sent = atomic_load(&pool->foreign_sent);
	s->run = 0;
	for (unsigned i = 0; i < pool->n; i++) {
		struct px *px = &pool->pxs[i];
		s->all_drained &= atomic_load_explicit(&px->drained, memory_order_acquire);
		s->sent += atomic_load_explicit(&px->stats.msgs_out, memory_order_relaxed);
		s->run += atomic_load_explicit(&px->stats.msgs_in, memory_order_relaxed);
	}
}

static void sleep_ns(long ns)
{
	struct timespec ts = {0, ns};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void free_pool(struct pool *pool)
{
	for (unsigned i = 0; pool->outboxes && i < pool->n * pool->n; i++)
		msgq_outbox_destroy(&pool->outboxes[i]);
	for (unsigned i = 0; pool->rings && i < pool->n * pool->n; i++)
		msgq_spsc_destroy(&pool->rings[i]);
	for (unsigned i = 0; pool->inboxes && i < pool->n; i++) {
		msgq_mpsc_destroy(&pool->inboxes[i].foreign);
		msgq_waker_destroy(&pool->inboxes[i].waker);
	}
	pthread_mutex_destroy(&pool->start_lock);
	pthread_cond_destroy(&pool->start_cond);
	free(pool->outboxes);
	free(pool->rings);
	free(pool->inboxes);
	free(pool->threads);
	free(pool->pxs);
	free(pool);
}

static void join_all(struct pool *pool)
{
	for (unsigned i = 0; i < pool->n; i++)
		if (pool->threads[i].started)
			pthread_join(pool->threads[i].tid, NULL);
}

void pool_stop(struct pool *pool)
{
	ASSERT(px_current() == NULL);
	for (unsigned i = 0; i < pool->n; i++)
		pool_run_on(pool, i, begin_stop, &pool->pxs[i]);

	struct pool_snapshot a, b;
	for (;;) {
		pool_snapshot(pool, &a);
		if (a.all_drained && a.sent == a.run) {
			sleep_ns(POOL_STOP_GRACE_NS);
			pool_snapshot(pool, &b);
			if (b.all_drained && b.sent == a.sent && b.run == a.run)
				break;
		} else {
			sleep_ns(POOL_STOP_GRACE_NS / 2);
		}
	}
	for (unsigned i = 0; i < pool->n; i++) {
		atomic_store_explicit(&pool->pxs[i].exit_requested, true, memory_order_release);
		msgq_wake(&pool->inboxes[i].waker);
	}
	join_all(pool);
	free_pool(pool);
}

/* Allocates the proactors and wires the N x N rings (see msgq.h). */
static int pool_alloc(struct pool *pool, char *err, size_t errlen)
{
	unsigned n = pool->n;
	size_t px_bytes = ((sizeof(struct px) * n + 63) / 64) * 64;
	pool->pxs = aligned_alloc(64, px_bytes);
	pool->inboxes = aligned_alloc(64, ((sizeof(struct msgq_inbox) * n + 63) / 64) * 64);
	pool->rings = aligned_alloc(64, ((sizeof(struct msgq_spsc) * n * n + 63) / 64) * 64);
	pool->outboxes = aligned_alloc(64, sizeof(struct msgq_outbox) * n * n);
	pool->threads = calloc(n, sizeof(struct pool_thread));
	if (!pool->pxs || !pool->inboxes || !pool->rings || !pool->outboxes || !pool->threads) {
		snprintf(err, errlen, "out of memory allocating %u proactors", n);
		return -ENOMEM;
	}
	memset(pool->pxs, 0, px_bytes);
	memset(pool->inboxes, 0, sizeof(struct msgq_inbox) * n);
	memset(pool->rings, 0, sizeof(struct msgq_spsc) * n * n);
	memset(pool->outboxes, 0, sizeof(struct msgq_outbox) * n * n);
	for (unsigned i = 0; i < n; i++)
		pool->inboxes[i].waker.efd = -1;

	for (unsigned t = 0; t < n; t++) {
		struct msgq_inbox *in = &pool->inboxes[t];
		in->rings = &pool->rings[(size_t)t * n];
		in->n_rings = n;
		int ret = msgq_mpsc_init(&in->foreign, POOL_FOREIGN_QUEUE);
		for (unsigned p = 0; p < n && ret == 0; p++)
			ret = msgq_spsc_init(&in->rings[p], pool->cfg.queue_size);
		if (ret == 0)
			ret = msgq_waker_init(&in->waker);
		if (ret < 0) {
			snprintf(err, errlen, "cannot create the message queues of proactor %u: %s",
				 t, strerror(-ret));
			return ret;
		}
		in->waker.always = pool->cfg.wake_always;
	}
	for (unsigned p = 0; p < n; p++) {
		struct px *px = &pool->pxs[p];
		px->id = p;
		px->pool = pool;
		px->inbox = &pool->inboxes[p];
		px->outboxes = &pool->outboxes[(size_t)p * n];
		px->n_px = n;
		for (unsigned t = 0; t < n; t++) {
			struct msgq_outbox *o = &px->outboxes[t];
			o->ring = &pool->inboxes[t].rings[p];
			o->waker = t == p ? NULL : &pool->inboxes[t].waker;
		}
	}
	return 0;
}

int pool_start(struct pool **out, const struct pool_config *cfg, char *err, size_t errlen)
{
	unsigned n = cfg->threads;
	if (n == 0) {
		cpu_set_t set;
		n = sched_getaffinity(0, sizeof(set), &set) == 0 ? (unsigned)CPU_COUNT(&set) : 1;
	}
	if (cfg->queue_size < 2 || (cfg->queue_size & (cfg->queue_size - 1)) != 0) {
		snprintf(err, errlen, "queue size %u is not a power of two >= 2", cfg->queue_size);
		return -EINVAL;
	}
	struct pool *pool = calloc(1, sizeof(*pool));
	if (pool == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pool->n = n;
	pool->cfg = *cfg;
	pool->cfg.threads = n;
	pthread_mutex_init(&pool->start_lock, NULL);
	pthread_cond_init(&pool->start_cond, NULL);
	int ret = pool_alloc(pool, err, errlen);
	if (ret < 0)
		goto fail;

	unsigned created = 0;
	for (unsigned i = 0; i < n; i++) {
		struct pool_thread *t = &pool->threads[i];
		t->pool = pool;
		t->px = &pool->pxs[i];
		t->cpu = cfg->pin ? nth_allowed_cpu(i) : -1;
		int e = pthread_create(&t->tid, NULL, proactor_thread, t);
		if (e != 0) {
			snprintf(err, errlen, "cannot create proactor thread %u: %s", i, strerror(e));
			ret = -e;
			break;
		}
		t->started = true;
		created++;
	}

	pthread_mutex_lock(&pool->start_lock);
	while (pool->start_reported < created)
		pthread_cond_wait(&pool->start_cond, &pool->start_lock);
	if (ret == 0 && pool->start_error != 0) {
		ret = pool->start_error;
		snprintf(err, errlen, "%s", pool->start_msg);
	}
	if (ret < 0 && pool->start_error == 0)
		pool->start_error = ret;
	pool->start_go = true;
	pthread_cond_broadcast(&pool->start_cond);
	pthread_mutex_unlock(&pool->start_lock);
	if (ret < 0) {
		join_all(pool);
		goto fail;
	}
	*out = pool;
	return 0;
fail:
	free_pool(pool);
	return ret;
}
