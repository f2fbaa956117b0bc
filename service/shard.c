/* shard: see shard.h.  Opening and closing the stores are start-up and
 * shutdown steps driven by the main thread: it sends one job to each
 * proactor and waits for all of them on a condition variable (never on the
 * request path). */
#include "shard.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service/runtime/logging.h"
#include "storage/fsutil.h"

struct shard_map shard_map;

/* The main thread's wait for one job per proactor. */
struct shard_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned pending; /* jobs not yet finished */
};

/* One proactor's part of opening or closing. */
struct shard_job {
	struct shard_wait *wait;
	struct px *px;
	const struct cfg *cfg; /* opening only */
	int ret;               /* opening: 0 or the first store_open error */
	char err[768];         /* its message */
	struct store_txids committed;            /* opening: COMMIT records its shards' logs hold */
	const struct store_txids *all_committed; /* ... and every shard's */
	struct px_hook hook;   /* closing: polls store_busy at the end of each iteration */
};

static void wait_init(struct shard_wait *w, unsigned pending)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->pending = pending;
}

static void wait_finish_one(struct shard_wait *w)
{
	pthread_mutex_lock(&w->lock);
	w->pending--;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void wait_all(struct shard_wait *w)
{
	pthread_mutex_lock(&w->lock);
	while (w->pending > 0)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
}

/* Opening, first step, on each proactor: opens the index of each of its
 * shards, in shard order, and gathers the COMMIT records their logs will
 * replay (store.h, store_open_begin); stops at the first failure (the stores
 * opened so far stay for close_stores_now). */
static void open_job(void *arg)
{
	struct shard_job *job = arg;
	const struct cfg *cfg = job->cfg;
	for (unsigned s = job->px->id; s < shard_map.shards; s += shard_map.threads) {
		char dir[FS_PATH_MAX];
		layout_shard_dir(cfg->storage.dir, s, dir, sizeof(dir));
		struct store_config sc = {
		    .dir = dir,
		    .shard = s,
		    .segment_size = cfg->storage.segment_size,
		    .durability = (enum log_durability)cfg->storage.durability,
		    .inline_max = (uint32_t)cfg->storage.inline_max,
		    .cache_bytes = cfg->storage.cache_size / shard_map.shards,
		    .shared = shard_map.idx_shared,
		    .gc_live_ratio = cfg->storage.gc_live_ratio,
		    .databases = (unsigned)cfg->server.databases,
		};
		struct store *st = NULL;
		int ret = store_open_begin(&st, job->px, &sc, job->err, sizeof(job->err));
		if (ret == 0)
			ret = store_scan_commits(st, &job->committed, job->err, sizeof(job->err));
		if (ret < 0) {
			store_close(st);
			job->ret = ret;
			break;
		}
		shard_map.stores[s] = st;
	}
	wait_finish_one(job->wait);
}

/* Second step, once every shard's COMMIT records are in all_committed:
 * replays the logs (store_open_finish). */
static void open_finish_job(void *arg)
{
	struct shard_job *job = arg;
	for (unsigned s = job->px->id; s < shard_map.shards; s += shard_map.threads) {
		int ret = store_open_finish(shard_map.stores[s], job->all_committed, job->err,
		                            sizeof(job->err));
		if (ret < 0) {
			job->ret = ret;
			break;
		}
	}
	wait_finish_one(job->wait);
}

static void close_reported(void *arg)
{
	struct shard_job *job = arg;
	wait_finish_one(job->wait);
}

/* End-of-iteration hook of a closing proactor: once none of its stores is
 * busy, closes them and lets the proactor drain. */
static bool close_poll(struct px *px, struct px_hook *hook)
{
	struct shard_job *job = container_of(hook, struct shard_job, hook);
	for (unsigned s = px->id; s < shard_map.shards; s += shard_map.threads)
		if (shard_map.stores[s] != NULL && store_busy(shard_map.stores[s]))
			return true; /* keep looping: the writes finish on later iterations */
	for (unsigned s = px->id; s < shard_map.shards; s += shard_map.threads) {
		store_close(shard_map.stores[s]);
		shard_map.stores[s] = NULL;
	}
	px_hook_remove(px, hook);
	px_release(px);
	/* Tell main from a message, not from here: the loop still reads
	 * hook->next after this returns, and main frees the job. */
	px_send(px, px->id, close_reported, job);
	return true;
}

static void close_job(void *arg)
{
	struct shard_job *job = arg;
	for (unsigned s = job->px->id; s < shard_map.shards; s += shard_map.threads)
		if (shard_map.stores[s] != NULL)
			store_stop(shard_map.stores[s]);
	px_hold(job->px); /* the pool does not stop this proactor before the stores close */
	job->hook.fn = close_poll;
	px_hook_add(job->px, &job->hook);
}

/* Closes whatever is open and frees the map (main thread). */
static void close_stores_now(void)
{
	unsigned n = shard_map.threads;
	struct shard_job *jobs = calloc(n, sizeof(*jobs));
	struct shard_wait wait;
	if (jobs == NULL) {
		LOG_ERROR("out of memory closing the stores; the logs are synced by the kernel at"
		          " exit, and the next start replays them");
		return;
	}
	wait_init(&wait, n);
	for (unsigned i = 0; i < n; i++) {
		jobs[i].wait = &wait;
		jobs[i].px = pool_px(shard_map.pool, i);
		pool_run_on(shard_map.pool, i, close_job, &jobs[i]);
	}
	wait_all(&wait);
	free(jobs);
	idx_shared_destroy(shard_map.idx_shared);
	free(shard_map.stores);
	shard_map.stores = NULL;
	shard_map.idx_shared = NULL;
}

/* Runs `fn` for every job, one per proactor, and waits for all of them;
 * returns 0 or the first job's error (its message in err). */
static int run_jobs(struct shard_job *jobs, unsigned n, void (*fn)(void *), char *err,
                    size_t errlen)
{
	struct shard_wait wait;
	wait_init(&wait, n);
	for (unsigned i = 0; i < n; i++) {
		jobs[i].wait = &wait;
		pool_run_on(shard_map.pool, i, fn, &jobs[i]);
	}
	wait_all(&wait);
	for (unsigned i = 0; i < n; i++)
		if (jobs[i].ret < 0) {
			snprintf(err, errlen, "%s", jobs[i].err);
			return jobs[i].ret;
		}
	return 0;
}

/* Opens every shard in the two steps recovery needs: a transaction that
 * spans shards is replayed only if some shard's log committed it. */
static int open_steps(struct shard_job *jobs, unsigned n, const struct cfg *cfg, char *err,
                      size_t errlen)
{
	for (unsigned i = 0; i < n; i++) {
		jobs[i].px = pool_px(shard_map.pool, i);
		jobs[i].cfg = cfg;
	}
	int ret = run_jobs(jobs, n, open_job, err, errlen);
	struct store_txids all = {0};
	for (unsigned i = 0; i < n; i++) {
		for (size_t k = 0; k < jobs[i].committed.n && ret == 0; k++)
			if (store_txids_add(&all, jobs[i].committed.ids[k]) < 0) {
				snprintf(err, errlen,
				         "out of memory gathering the committed transactions");
				ret = -ENOMEM;
			}
		store_txids_free(&jobs[i].committed);
	}
	store_txids_sort(&all);
	for (unsigned i = 0; i < n; i++)
		jobs[i].all_committed = &all;
	if (ret == 0)
		ret = run_jobs(jobs, n, open_finish_job, err, errlen);
	store_txids_free(&all);
	return ret;
}

int shard_open_all(struct pool *pool, const struct cfg *given, char *err, size_t errlen)
{
	/* (ringkv-server resolved the auto sizes already; a test harness may not) */
	static struct cfg resolved;
	resolved = *given;
	cfg_resolve_auto(&resolved, NULL, 0);
	const struct cfg *cfg = &resolved;
	unsigned threads = pool_size(pool), shards = 0;
	char msg[1024];
	int ret = layout_open(cfg->storage.dir, threads, &shards, msg, sizeof(msg));
	if (ret < 0) {
		snprintf(err, errlen, "%s", msg);
		return ret;
	}
	/* RocksDB's background work: flushes and compactions of every shard. */
	int background = threads < 4 ? 2 : (int)threads / 2;
	ret = idx_shared_create(&shard_map.idx_shared, cfg->storage.index_cache_size, background,
	                        msg, sizeof(msg));
	if (ret < 0) {
		snprintf(err, errlen, "cannot create the index cache: %s", msg);
		return ret;
	}
	unsigned lookups = (unsigned)cfg->storage.index_threads;
	if (lookups == 0) { /* auto */
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		lookups = cpus < 1 ? 4 : cpus > 16 ? 64 : 4 * (unsigned)cpus;
	}
	ret = idx_lookup_start(shard_map.idx_shared, lookups, msg, sizeof(msg));
	if (ret < 0) {
		idx_shared_destroy(shard_map.idx_shared);
		shard_map.idx_shared = NULL;
		snprintf(err, errlen, "cannot start the index lookup threads: %s", msg);
		return ret;
	}
	LOG_INFO("index: %u lookup threads read entries not in the block cache", lookups);
	shard_map.shards = shards;
	shard_map.threads = threads;
	shard_map.pool = pool;
	shard_map.stores = calloc(shards, sizeof(*shard_map.stores));
	struct shard_job *jobs = calloc(threads, sizeof(*jobs));
	if (shard_map.stores == NULL || jobs == NULL) {
		free(jobs);
		free(shard_map.stores);
		idx_shared_destroy(shard_map.idx_shared);
		snprintf(err, errlen, "out of memory allocating %u shards", shards);
		return -ENOMEM;
	}
	if (shards != threads)
		LOG_INFO("data directory %s has %u shards (fixed in its LAYOUT file) for %u"
		         " proactors: each proactor runs shards p, p+%u, ...",
		         cfg->storage.dir, shards, threads, threads);

	ret = open_steps(jobs, threads, cfg, err, errlen);
	free(jobs);
	if (ret < 0) {
		close_stores_now();
		return ret;
	}
	return 0;
}

void shard_close_all(void)
{
	close_stores_now();
}
