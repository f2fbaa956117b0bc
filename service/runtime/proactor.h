/* proactor: one io_uring event loop per thread.
 *
 * A proactor owns one ring, drives every socket and file of its shard through
 * it, and runs the tasks other proactors send it.  Each loop iteration:
 *
 *   1. submit every pending SQE and collect finished work: one
 *      io_uring_submit_and_get_events per iteration, and none at all when
 *      no SQE is queued and the kernel flags no pending completion
 *      (IORING_SQ_TASKRUN), so a loop busy with messages makes no syscall;
 *   2. run incoming messages, at most `msg_budget` per iteration;
 *   3. reap completions in batches of PX_CQE_BATCH and dispatch them;
 *   4. run the end-of-iteration hooks (group commit, output flush), then
 *      publish the messages this iteration sent;
 *   5. if nothing happened: spin up to `busy_poll_us` (adaptively: after a
 *      spin that found nothing, the next 1, 3, 7 … 63 sleeps skip it, and a
 *      spin that finds work resets that), then announce the intent to sleep
 *      (msgq.h) and block in io_uring_enter until a CQE — an I/O, a timer,
 *      or the eventfd read that a producer's wake-up ends.
 *
 * Completion dispatch — the user_data encoding, documented only here:
 *
 *   user_data == 0                      nobody waits for this CQE (e.g. the
 *                                       CQE of a timeout-remove); skipped.
 *   user_data == LIBURING_UDATA_TIMEOUT liburing's internal timeout; skipped.
 *   anything else                       a `struct px_op *`: the op's
 *                                       `complete(px, op, cqe->res,
 *                                       cqe->flags)` runs.  The op is embedded
 *                                       in its owner (connection, timer, log
 *                                       write); owners find themselves with
 *                                       container_of.  An op must stay alive
 *                                       until its last CQE (one without
 *                                       IORING_CQE_F_MORE) has been dispatched.
 *
 * Threading: everything in struct px belongs to its thread.  Other threads
 * only push messages (pool_run_on) and read the statistics, which are atomics
 * written by the owner alone.
 */
#ifndef RINGKV_PROACTOR_H
#define RINGKV_PROACTOR_H

#include <liburing.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msgq.h"

#define PX_CQE_BATCH 64

#ifndef container_of
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#endif

struct px;
struct pool;

/* An operation in flight on the ring; see the user_data encoding above. */
struct px_op {
	void (*complete)(struct px *px, struct px_op *op, int res, unsigned flags);
};

/* A one-shot or periodic timer, as an IORING_OP_TIMEOUT on the ring with an
 * absolute CLOCK_MONOTONIC deadline (a periodic timer does not drift).  The
 * owner keeps the struct alive while px_timer_armed() is true. */
struct px_timer {
	struct px_op op;              /* the armed timeout */
	struct __kernel_timespec when; /* next deadline, CLOCK_MONOTONIC */
	uint64_t period_ns;           /* 0 = one-shot */
	void (*fn)(struct px *px, struct px_timer *t); /* runs on each expiry */
	bool armed;                   /* a timeout SQE/CQE is outstanding */
	bool stopping;                /* px_timer_stop() called; fn will not run again */
	bool retry;                   /* no SQE was free: arm again next iteration */
	struct px_timer *retry_next;  /* link in px->timer_retry */
};

/* End-of-iteration work.  fn returns true if it did something (the loop then
 * does not sleep before the next iteration). */
struct px_hook {
	bool (*fn)(struct px *px, struct px_hook *hook);
	struct px_hook *next; /* owned by the px's hook list */
};

/* Counters, written only by the owner (relaxed atomics so INFO and benchmarks
 * may read them from any thread). */
struct px_stats {
	atomic_ulong iterations;      /* loop iterations */
	atomic_ulong submits;         /* io_uring_enter calls made to submit or reap */
	atomic_ulong sqes;            /* SQEs submitted */
	atomic_ulong cqes;            /* CQEs dispatched */
	atomic_ulong msgs_in;         /* messages run */
	atomic_ulong msgs_out;        /* messages sent (to any proactor, self included) */
	atomic_ulong wakeups_sent;    /* eventfd writes made to wake a sleeping target */
	atomic_ulong wakeups_skipped; /* publications that found the target awake */
	atomic_ulong wakeups_received; /* completions of this proactor's eventfd read */
	atomic_ulong sleeps;          /* times the loop blocked in the kernel */
	atomic_ulong busy_poll_ns;    /* time spent spinning before sleeping */
	atomic_ulong busy_polls;      /* spins started */
	atomic_ulong busy_poll_hits;  /* spins that found work before busy_poll_us */
	atomic_ulong busy_poll_skips; /* sleeps that went without a spin (back-off) */
	atomic_ulong cq_overflows;    /* times the kernel reported CQ overflow */
	atomic_ulong sq_full;         /* times px_get_sqe found the SQ full */
	/* Iterations by how long they took, wall clock (preemption included:
	 * while one runs, every connection of the proactor waits). */
	atomic_ulong iteration_max_ns; /* the longest */
	atomic_ulong iterations_over_1ms;
	atomic_ulong iterations_over_10ms;
};

/* Ring set-up tries these, best first, stepping down when the kernel answers
 * EINVAL: SINGLE_ISSUER|DEFER_TASKRUN|TASKRUN_FLAG, the same without
 * TASKRUN_FLAG (6.1+), SINGLE_ISSUER|COOP_TASKRUN|TASKRUN_FLAG (6.0),
 * COOP_TASKRUN|TASKRUN_FLAG (5.19), plain (each with SUBMIT_ALL where known). */
#define PX_SETUP_RUNGS 6

struct px_config {
	unsigned entries;      /* SQ entries, power of two; the CQ gets 4x */
	unsigned busy_poll_us; /* spin before sleeping, adaptively; 0 = sleep at once */
	unsigned msg_budget;   /* messages run per iteration at most */
	unsigned setup_start;  /* first rung of the set-up ladder to try; 0 = best.
				  Tests use it to run the fallbacks on new kernels. */
};

/* The busy poll's adaptive back-off (step 5): after a spin that found
 * nothing the next 2^k - 1 sleeps go without one, k being the fruitless spins
 * in a row (at most PX_SPIN_BACKOFF_MAX); a spin that finds work resets k.
 * Only the proactor's thread touches it. */
#define PX_SPIN_BACKOFF_MAX 6
struct px_spin_backoff {
	unsigned fruitless; /* spins in a row that found nothing, capped */
	unsigned skip;      /* sleeps left that go without a spin */
};

/* True if the loop, about to sleep, spins first; false counts this sleep off
 * the ones to skip. */
static inline bool px_spin_due(struct px_spin_backoff *b)
{
	if (b->skip > 0) {
		b->skip--;
		return false;
	}
	return true;
}

/* Records whether a spin found work. */
static inline void px_spin_done(struct px_spin_backoff *b, bool found)
{
	if (found) {
		b->fruitless = 0;
		return;
	}
	if (b->fruitless < PX_SPIN_BACKOFF_MAX)
		b->fruitless++;
	b->skip = (1u << b->fruitless) - 1;
}

struct px {
	unsigned id;                   /* 0..n-1 in its pool (shard.h maps shards to it) */
	struct pool *pool;             /* the pool this proactor belongs to */
	struct io_uring ring;          /* the only ring this thread uses */
	unsigned setup_flags;          /* IORING_SETUP_* the ring was created with */
	bool enter_always;             /* DEFER_TASKRUN without TASKRUN_FLAG: completions
					  can only be seen by entering the kernel */
	struct px_config cfg;

	struct msgq_inbox *inbox;      /* our incoming queues; owned by the pool */
	struct msgq_outbox *outboxes;  /* [n_px] our side of each pair; owned by the pool */
	unsigned n_px;                 /* proactors in the pool */

	struct px_op wake_op;          /* the read armed on inbox->waker.efd */
	uint64_t wake_buf;             /* target of that read */
	bool wake_armed;               /* the read is outstanding */

	struct px_hook *hooks;         /* end-of-iteration hooks, in insertion order */
	struct px_timer *timer_retry;  /* timers waiting for a free SQE */

	struct px_spin_backoff spin;   /* whether the next sleep spins first */

	unsigned holds;                /* px_hold() count: work that must finish before exit */
	bool stopping;                 /* pool_stop() began: drain, then report drained */
	atomic_bool drained;           /* stopping, nothing held or queued in or out */
	atomic_bool exit_requested;    /* set by the pool: leave the loop */

	/* Written on every message: a line of its own, and padding after it, so
	 * the next proactor in the pool's array never shares it. */
	_Alignas(MSGQ_CACHELINE) struct px_stats stats;
};

/* The proactor running on the calling thread, or NULL on a foreign thread. */
extern __thread struct px *px_self;
static inline struct px *px_current(void)
{
	return px_self;
}

/* Creates the ring on the calling thread (which becomes the ring's only
 * submitter) and arms the wake-up read.  px->id, pool, inbox, outboxes and
 * n_px must be set.  Returns 0, or -errno with a message naming the cause and
 * the fix in `err`. */
int px_init(struct px *px, const struct px_config *cfg, char *err, size_t errlen);

/* Runs the loop until the pool requests exit.  Calling thread only. */
void px_run(struct px *px);

/* Releases the ring.  Every op still in flight is cancelled by the kernel. */
void px_destroy(struct px *px);

/* Describes the ring (setup flags, kernel features, notable ops) for the
 * start-up log line.  The op probe is a register call, which a SINGLE_ISSUER
 * ring accepts only from its own thread; elsewhere the ops are left out. */
void px_describe(struct px *px, char *buf, size_t len);

/* Returns an SQE whose user_data is `op`, submitting the SQEs prepared before
 * it first if the SQ is full or holds PX_SUBMIT_BATCH of them (so no caller
 * may link SQEs across calls: IOSQE_IO_LINK chains would be cut).
 * Returns NULL only if the kernel refuses new submissions right now (memory
 * pressure); the caller retries on a later iteration. */
struct io_uring_sqe *px_get_sqe(struct px *px, struct px_op *op);

/* Sends fn(arg) to proactor `target` of the same pool (self included); it runs
 * there on a later iteration.  Never fails, never blocks; FIFO per pair. */
void px_send(struct px *px, unsigned target, void (*fn)(void *arg), void *arg);

/* Arms `t` to run fn after delay_ns, then every period_ns if non-zero. */
void px_timer_start(struct px *px, struct px_timer *t, uint64_t delay_ns, uint64_t period_ns,
		    void (*fn)(struct px *px, struct px_timer *t));

/* Stops `t`: fn does not run again.  The struct may be reused or freed once
 * px_timer_armed(t) is false (after the cancellation's CQE). */
void px_timer_stop(struct px *px, struct px_timer *t);

static inline bool px_timer_armed(const struct px_timer *t)
{
	return t->armed || t->retry;
}

/* Adds an end-of-iteration hook; it runs on every iteration from now on. */
void px_hook_add(struct px *px, struct px_hook *hook);

/* Removes a hook added with px_hook_add (no-op if it is not there). */
void px_hook_remove(struct px *px, struct px_hook *hook);

/* Holds keep a stopping proactor from reporting itself drained: a module
 * takes one while it has work that must finish before exit (a log write in
 * flight) and releases it when the work is done. */
static inline void px_hold(struct px *px)
{
	px->holds++;
}
static inline void px_release(struct px *px)
{
	px->holds--;
}

/* Current CLOCK_MONOTONIC time in nanoseconds. */
uint64_t px_now_ns(void);

/* Adds n to a counter owned by the calling proactor. */
static inline void px_stat_add(atomic_ulong *c, unsigned long n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

#endif
