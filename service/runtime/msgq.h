/* msgq: the queues that carry work between proactors, and the wake-up protocol.
 *
 * Topology (built by pool.c): every proactor P has an inbox holding one
 * single-producer single-consumer ring per proactor (including P itself) plus
 * one bounded multi-producer ring for foreign threads (start-up code, tests,
 * the signal thread).  Proactor Q sending to P writes only into "Q's ring in
 * P's inbox", so proactor-to-proactor traffic never contends on a CAS.
 *
 * Batched publication (as in Seastar): the producer writes slots and makes them
 * visible with one store-release of `head` per batch — at the end of its loop
 * iteration, or earlier when MSGQ_PUBLISH_BATCH slots are waiting.
 *
 * Never lost, never blocking: when the ring is full the producer keeps the
 * message in its outbox's backlog (heap, grown on demand — the slow path only)
 * and moves it into the ring on a later flush.  While a backlog exists, new
 * messages go behind it, so per-producer FIFO order holds.
 *
 * Wake-up (a Dekker handshake on `msgq_waker.sleeping`):
 *   consumer: sleeping = 1; fence(seq_cst); re-check every ring; if all empty,
 *             block in io_uring_enter (its ring has a read armed on the eventfd);
 *   producer: publish (store-release); fence(seq_cst); if sleeping == 1 and an
 *             exchange(sleeping, 0) still saw 1, write the eventfd.
 * The two seq_cst fences forbid the outcome "consumer saw no message and
 * producer saw sleeping == 0", so no wake-up is lost; the exchange makes at most
 * one producer pay the write(2) per sleep.  A busy consumer never has
 * sleeping == 1, so producers make no syscall at all.
 */
#ifndef RINGKV_MSGQ_H
#define RINGKV_MSGQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSGQ_CACHELINE 64
#define MSGQ_PUBLISH_BATCH 64 /* publish early once this many slots wait */

/* One unit of work: fn(arg) runs on the target proactor's thread. */
struct msgq_msg {
	void (*fn)(void *arg); /* never NULL */
	void *arg;             /* passed through; ownership is fn's contract */
};

/* Single-producer single-consumer ring.  Indices run freely and wrap modulo
 * 2^32; capacity is a power of two.  Each side's private fields have a cache
 * line of their own, apart from the index the other side reads, so a push or
 * a pop touches a shared line only when it publishes or runs out. */
struct msgq_spsc {
	_Alignas(MSGQ_CACHELINE) atomic_uint tail; /* consumer: next slot to read */
	_Alignas(MSGQ_CACHELINE) unsigned head_seen; /* consumer: last head it loaded */
	_Alignas(MSGQ_CACHELINE) atomic_uint head; /* producer: slots below are published */
	_Alignas(MSGQ_CACHELINE) unsigned head_local; /* producer: slots below are written */
	unsigned tail_seen;                          /* producer: last tail it loaded */
	_Alignas(MSGQ_CACHELINE) unsigned mask;    /* capacity - 1; read-only after init */
	struct msgq_msg *slots;                      /* capacity entries, owned by the ring */
};

/* Bounded multi-producer single-consumer ring (Vyukov's sequence-per-cell
 * design) for producers that are not proactors. */
struct msgq_mpsc_cell {
	atomic_size_t seq;   /* == position: free for the producer of that position;
				== position + 1: holds a message for the consumer */
	struct msgq_msg msg; /* valid while seq == position + 1 */
};

struct msgq_mpsc {
	_Alignas(MSGQ_CACHELINE) atomic_size_t enqueue_pos; /* producers: next position */
	_Alignas(MSGQ_CACHELINE) size_t dequeue_pos;        /* consumer: next position */
	_Alignas(MSGQ_CACHELINE) size_t mask;               /* capacity - 1 */
	struct msgq_mpsc_cell *cells;                         /* capacity cells, owned */
};

/* The consumer's sleep flag and the eventfd that wakes it. */
struct msgq_waker {
	_Alignas(MSGQ_CACHELINE) atomic_int sleeping; /* 1: owner is about to block or blocked */
	int efd;                                        /* eventfd the owner's ring reads */
	bool always; /* benchmark baseline only: wake on every publication, sleeping or not */
};

/* A consumer's incoming queues. */
struct msgq_inbox {
	struct msgq_spsc *rings; /* rings[i]: from proactor i; owned by the pool */
	unsigned n_rings;        /* number of proactors */
	unsigned next;           /* round-robin start for the next drain */
	struct msgq_mpsc foreign; /* from non-proactor threads */
	struct msgq_waker waker;
};

/* A producer's side of one (producer, target) pair (a cache line of its own:
 * neighbouring outboxes belong to other producers). */
struct msgq_outbox {
	_Alignas(MSGQ_CACHELINE) struct msgq_spsc *ring; /* producer's ring in the target's inbox */
	struct msgq_waker *waker;  /* the target's waker; NULL when target == producer */
	struct msgq_msg *backlog;  /* FIFO overflow, heap; NULL until first needed */
	unsigned backlog_head;     /* index of the oldest backlog entry */
	unsigned backlog_count;    /* entries in the backlog */
	unsigned backlog_cap;      /* allocated entries, power of two */
	bool dirty;                /* slots written since the last publication */
};

/* Flush results, for the proactor's statistics. */
struct msgq_flush_stats {
	unsigned long wakeups_sent;    /* eventfd writes */
	unsigned long wakeups_skipped; /* publications that found the target awake */
};

int msgq_spsc_init(struct msgq_spsc *q, unsigned capacity);
void msgq_spsc_destroy(struct msgq_spsc *q);

int msgq_mpsc_init(struct msgq_mpsc *q, size_t capacity);
void msgq_mpsc_destroy(struct msgq_mpsc *q);

/* Pushes one message from a foreign thread.  Returns false if the ring is
 * full (the caller backs off and retries; foreign threads run no loop). */
bool msgq_mpsc_push(struct msgq_mpsc *q, struct msgq_msg msg);

/* Sets up the waker (creates its eventfd).  Returns 0 or -errno. */
int msgq_waker_init(struct msgq_waker *w);
void msgq_waker_destroy(struct msgq_waker *w);

/* Producer side, after publishing: wakes the owner if it sleeps.  Returns true
 * if this call wrote the eventfd. */
bool msgq_wake(struct msgq_waker *w);

/* Consumer side: announce the intent to sleep.  The caller must then check
 * msgq_inbox_pending() (and anything else that can make work) and either call
 * msgq_sleep_cancel() or block; after it wakes it calls msgq_sleep_cancel(). */
void msgq_sleep_prepare(struct msgq_waker *w);
void msgq_sleep_cancel(struct msgq_waker *w);

/* Queues `msg` for the outbox's target; never fails, never blocks.  The
 * message becomes visible at the next msgq_outbox_flush(), or at once when a
 * batch is full or the target's waker is in `always` mode (then the wake-up,
 * if any, is counted in `st`). */
void msgq_outbox_send(struct msgq_outbox *o, struct msgq_msg msg, struct msgq_flush_stats *st);

/* Moves backlog into the ring, publishes, and wakes the target if needed.
 * Returns true if something was published. */
bool msgq_outbox_flush(struct msgq_outbox *o, struct msgq_flush_stats *st);

/* True while the outbox still holds messages the target cannot see. */
static inline bool msgq_outbox_pending(const struct msgq_outbox *o)
{
	return o->backlog_count > 0 || o->dirty;
}

void msgq_outbox_destroy(struct msgq_outbox *o);

/* Runs up to `budget` messages from the inbox, fairly across its rings.
 * Returns the number run. */
unsigned msgq_inbox_drain(struct msgq_inbox *in, unsigned budget);

/* True if any ring of the inbox holds a published message. */
bool msgq_inbox_pending(struct msgq_inbox *in);

#endif
