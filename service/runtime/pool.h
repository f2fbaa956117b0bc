/* pool: starts, pins and stops the proactor threads, and runs work on them.
 *
 * pool_start() creates N proactors, each on its own thread with its own ring,
 * and the N x N single-producer rings between them (msgq.h).  Work reaches a
 * proactor only as a message:
 *
 *   pool_run_on(pool, i, fn, arg)  fn(arg) runs on proactor i; from any thread.
 *   pool_call(pool, i, call)       call->fn runs on i, then call->done runs back
 *                                  on the calling proactor (a continuation: no
 *                                  proactor ever blocks waiting for another).
 *   pool_run_all(gather)           gather->fn runs on every proactor; when all
 *                                  have answered, gather->done runs on the caller
 *                                  with every result in gather->slots[].
 *
 * Shutdown (pool_stop, from a foreign thread such as main's signal wait):
 * every proactor is told to stop and runs its stop hooks; each keeps looping
 * until it is drained (no holds, nothing queued in or out).  When every
 * proactor is drained, every message sent has been run, and no message was sent
 * or run across a grace period, the loops are told to exit and the threads are
 * joined.  Work that must finish before exit is either a message or held
 * (px_hold).  A proactor receiving work while stopping becomes
 * undrained again, so in-flight request chains finish.
 */
#ifndef RINGKV_POOL_H
#define RINGKV_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proactor.h"

struct pool_config {
	unsigned threads;        /* proactors; 0 = one per CPU this process may use */
	bool pin;                /* pin proactor i to the i-th allowed CPU (mod count) */
	unsigned queue_size;     /* slots per ring, power of two >= 2 */
	struct px_config px;     /* per-proactor ring and loop settings */
	bool wake_always;        /* benchmark baseline: eventfd write on every message */
	bool quiet;              /* no per-proactor start-up log lines */
};

struct pool;

/* Starts the proactors.  Returns 0 and the pool in *out, or -errno with a
 * message naming the cause and the fix in `err` (nothing is left running). */
int pool_start(struct pool **out, const struct pool_config *cfg, char *err, size_t errlen);

/* Drains and stops every proactor, joins the threads and frees the pool.
 * Foreign threads only (never from a proactor: it would wait for itself). */
void pool_stop(struct pool *pool);

unsigned pool_size(const struct pool *pool);
struct px *pool_px(struct pool *pool, unsigned i);

/* Messages and wake-ups that foreign threads sent (proactors count theirs in
 * px->stats). */
unsigned long pool_foreign_wakeups(const struct pool *pool);

/* Runs fn(arg) on proactor `target`.  From a proactor of this pool it never
 * blocks; from a foreign thread it yields while the target's foreign ring is
 * full.  FIFO per (sender, target). */
void pool_run_on(struct pool *pool, unsigned target, void (*fn)(void *arg), void *arg);

/* A request to one proactor with a reply to the caller.  The caller owns the
 * struct (usually embedded in a larger request) and keeps it alive until done
 * has run. */
struct pool_call {
	void (*fn)(struct pool_call *call);   /* runs on the target */
	void (*done)(struct pool_call *call); /* runs on the caller afterwards */
	struct pool *pool;                    /* set by pool_call */
	unsigned origin;                      /* caller's proactor; set by pool_call */
};

/* Sends `call` to `target`.  Must be called from a proactor of `pool`. */
void pool_call(struct pool *pool, unsigned target, struct pool_call *call);

struct pool_gather;
struct pool_gather_slot {
	struct pool_gather *gather; /* back pointer */
	unsigned px;                /* which proactor answered into this slot */
	int64_t result;             /* fn's return value on that proactor */
};

/* A fan-out to every proactor.  Made by pool_gather_new; done owns it and
 * releases it with free(). */
struct pool_gather {
	int64_t (*fn)(struct pool_gather *g, unsigned px); /* runs on each proactor */
	void (*done)(struct pool_gather *g);               /* runs on the caller at the end */
	void *arg;                                          /* the caller's context */
	struct pool *pool;
	unsigned origin;                   /* caller's proactor */
	unsigned pending;                  /* answers still expected; caller's thread only */
	unsigned n;                        /* number of slots (= pool size) */
	struct pool_gather_slot slots[];   /* one per proactor, by proactor id */
};

/* Allocates a fan-out over every proactor of `pool`; NULL if out of memory. */
struct pool_gather *pool_gather_new(struct pool *pool, int64_t (*fn)(struct pool_gather *, unsigned),
				    void (*done)(struct pool_gather *), void *arg);

/* Sends the fan-out.  Must be called from a proactor of g->pool. */
void pool_run_all(struct pool_gather *g);

/* Registers a hook that runs once on `px` when pool_stop begins (stop
 * accepting, flush buffers).  Calling proactor only. */
void pool_on_stop(struct px *px, struct px_hook *hook);

#endif
