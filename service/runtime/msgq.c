/* msgq: see msgq.h for the topology, the publication rule and the wake-up
 * protocol. */
#include "msgq.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "logging.h"

#define SPSC_RELEASE_EVERY 32 /* consumer returns slots to the producer this often */

static bool is_pow2(size_t n)
{
	return n >= 2 && (n & (n - 1)) == 0;
}

int msgq_spsc_init(struct msgq_spsc *q, unsigned capacity)
{
	memset(q, 0, sizeof(*q));
	if (!is_pow2(capacity))
		return -EINVAL;
	q->slots = calloc(capacity, sizeof(*q->slots));
	if (q->slots == NULL)
		return -ENOMEM;
	q->mask = capacity - 1;
	return 0;
}

void msgq_spsc_destroy(struct msgq_spsc *q)
{
	free(q->slots);
	q->slots = NULL;
}

/* Producer: writes one slot without publishing it.  False if the ring is full. */
static bool spsc_push(struct msgq_spsc *q, struct msgq_msg msg)
{
	unsigned h = q->head_local;
	if (h - q->tail_seen > q->mask) {
		q->tail_seen = atomic_load_explicit(&q->tail, memory_order_acquire);
		if (h - q->tail_seen > q->mask)
			return false;
	}
	q->slots[h & q->mask] = msg;
	q->head_local = h + 1;
	return true;
}

/* Producer: makes every written slot visible to the consumer. */
static void spsc_publish(struct msgq_spsc *q)
{
	atomic_store_explicit(&q->head, q->head_local, memory_order_release);
}

/* Consumer: runs up to `budget` published messages; returns how many. */
static unsigned spsc_drain(struct msgq_spsc *q, unsigned budget)
{
	unsigned t = atomic_load_explicit(&q->tail, memory_order_relaxed);
	if (t == q->head_seen) {
		q->head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
		if (t == q->head_seen)
			return 0;
	}
	unsigned n = 0;
	while (n < budget && t != q->head_seen) {
		struct msgq_msg m = q->slots[t & q->mask];
		t++;
		n++;
		if (n % SPSC_RELEASE_EVERY == 0 || t == q->head_seen)
			atomic_store_explicit(&q->tail, t, memory_order_release);
		m.fn(m.arg);
	}
	atomic_store_explicit(&q->tail, t, memory_order_release);
	return n;
}

static bool spsc_pending(struct msgq_spsc *q)
{
	unsigned t = atomic_load_explicit(&q->tail, memory_order_relaxed);
	return atomic_load_explicit(&q->head, memory_order_acquire) != t;
}

int msgq_mpsc_init(struct msgq_mpsc *q, size_t capacity)
{
	memset(q, 0, sizeof(*q));
	if (!is_pow2(capacity))
		return -EINVAL;
	q->cells = calloc(capacity, sizeof(*q->cells));
	if (q->cells == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < capacity; i++)
		atomic_init(&q->cells[i].seq, i);
	q->mask = capacity - 1;
	return 0;
}

void msgq_mpsc_destroy(struct msgq_mpsc *q)
{
	free(q->cells);
	q->cells = NULL;
}

bool msgq_mpsc_push(struct msgq_mpsc *q, struct msgq_msg msg)
{
	size_t pos = atomic_load_explicit(&q->enqueue_pos, memory_order_relaxed);
	for (;;) {
		struct msgq_mpsc_cell *c = &q->cells[pos & q->mask];
		size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
		intptr_t dif = (intptr_t)seq - (intptr_t)pos;
		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&q->enqueue_pos, &pos, pos + 1,
								  memory_order_relaxed,
								  memory_order_relaxed)) {
				c->msg = msg;
				atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
				return true;
			}
		} else if (dif < 0) {
			return false;
		} else {
			pos = atomic_load_explicit(&q->enqueue_pos, memory_order_relaxed);
		}
	}
}

static unsigned mpsc_drain(struct msgq_mpsc *q, unsigned budget)
{
	unsigned n = 0;
	while (n < budget) {
		struct msgq_mpsc_cell *c = &q->cells[q->dequeue_pos & q->mask];
		if (atomic_load_explicit(&c->seq, memory_order_acquire) != q->dequeue_pos + 1)
			break;
		struct msgq_msg m = c->msg;
		atomic_store_explicit(&c->seq, q->dequeue_pos + q->mask + 1, memory_order_release);
		q->dequeue_pos++;
		n++;
		m.fn(m.arg);
	}
	return n;
}

static bool mpsc_pending(struct msgq_mpsc *q)
{
	struct msgq_mpsc_cell *c = &q->cells[q->dequeue_pos & q->mask];
	return atomic_load_explicit(&c->seq, memory_order_acquire) == q->dequeue_pos + 1;
}

int msgq_waker_init(struct msgq_waker *w)
{
	atomic_init(&w->sleeping, 0);
	w->always = false;
	/* Blocking on purpose: io_uring polls a blocking eventfd, while older
	 * kernels fail a read of an O_NONBLOCK one at once with EAGAIN. */
	w->efd = eventfd(0, EFD_CLOEXEC);
	return w->efd < 0 ? -errno : 0;
}

void msgq_waker_destroy(struct msgq_waker *w)
{
	if (w->efd >= 0)
		close(w->efd);
	w->efd = -1;
}

bool msgq_wake(struct msgq_waker *w)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (!w->always) {
		if (atomic_load_explicit(&w->sleeping, memory_order_relaxed) == 0)
			return false;
		if (atomic_exchange_explicit(&w->sleeping, 0, memory_order_acq_rel) == 0)
			return false;
	}
	/* The owner's read resets the counter, so this write never blocks. */
	uint64_t one = 1;
	while (write(w->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	return true;
}

void msgq_sleep_prepare(struct msgq_waker *w)
{
	atomic_store_explicit(&w->sleeping, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
}

void msgq_sleep_cancel(struct msgq_waker *w)
{
	atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
}

/* Appends to the backlog, doubling it when full.  Running out of memory here
 * would lose a message, so it is fatal. */
static void backlog_push(struct msgq_outbox *o, struct msgq_msg msg)
{
	if (o->backlog_count == o->backlog_cap) {
		unsigned cap = o->backlog_cap ? o->backlog_cap * 2 : 64;
		struct msgq_msg *b = malloc(cap * sizeof(*b));
		if (b == NULL) {
			LOG_ERROR("out of memory growing a message backlog to %u entries", cap);
			abort();
		}
		for (unsigned i = 0; i < o->backlog_count; i++)
			b[i] = o->backlog[(o->backlog_head + i) & (o->backlog_cap - 1)];
		free(o->backlog);
		o->backlog = b;
		o->backlog_cap = cap;
		o->backlog_head = 0;
	}
	o->backlog[(o->backlog_head + o->backlog_count) & (o->backlog_cap - 1)] = msg;
	o->backlog_count++;
}

static void outbox_publish(struct msgq_outbox *o, struct msgq_flush_stats *st)
{
	spsc_publish(o->ring);
	o->dirty = false;
	if (o->waker == NULL)
		return;
	if (msgq_wake(o->waker))
		st->wakeups_sent++;
	else
		st->wakeups_skipped++;
}

void msgq_outbox_send(struct msgq_outbox *o, struct msgq_msg msg, struct msgq_flush_stats *st)
{
	if (o->backlog_count > 0 || !spsc_push(o->ring, msg)) {
		backlog_push(o, msg);
		return;
	}
	o->dirty = true;
	unsigned unpublished =
		o->ring->head_local - atomic_load_explicit(&o->ring->head, memory_order_relaxed);
	if ((o->waker && o->waker->always) || unpublished >= MSGQ_PUBLISH_BATCH)
		outbox_publish(o, st);
}

bool msgq_outbox_flush(struct msgq_outbox *o, struct msgq_flush_stats *st)
{
	while (o->backlog_count > 0) {
		if (!spsc_push(o->ring, o->backlog[o->backlog_head]))
			break;
		o->backlog_head = (o->backlog_head + 1) & (o->backlog_cap - 1);
		o->backlog_count--;
		o->dirty = true;
	}
	if (!o->dirty)
		return false;
	outbox_publish(o, st);
	return true;
}

void msgq_outbox_destroy(struct msgq_outbox *o)
{
	free(o->backlog);
	memset(o, 0, sizeof(*o));
}

unsigned msgq_inbox_drain(struct msgq_inbox *in, unsigned budget)
{
	unsigned total = mpsc_drain(&in->foreign, budget);
	for (unsigned k = 0; k < in->n_rings && total < budget; k++) {
		unsigned i = (in->next + k) % in->n_rings;
		total += spsc_drain(&in->rings[i], budget - total);
	}
	in->next = (in->next + 1) % in->n_rings;
	return total;
}

bool msgq_inbox_pending(struct msgq_inbox *in)
{
	if (mpsc_pending(&in->foreign))
		return true;
	for (unsigned i = 0; i < in->n_rings; i++)
		if (spsc_pending(&in->rings[i]))
			return true;
	return false;
}
