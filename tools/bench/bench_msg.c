/* bench_msg: `ringkv-bench msg`, the message-passing benchmark.
 *
 * Measures, in one process, on the same pinned CPUs:
 *
 *   one-way throughput     proactor 0 sends N messages to proactor 1 (px_send);
 *                          wall time from the first send to the last run.
 *   eventfd-always         the same with pool_config.wake_always: every send is
 *                          published at once and writes the target's eventfd.
 *   mutex + condvars       the classic design: two pinned pthreads, a bounded
 *                          queue of queue_size {fn, arg} slots behind one mutex
 *                          and two condition variables, one message per lock.
 *   all-to-all             every proactor sends N / threads messages, spread
 *                          over every other proactor, all at once.
 *   ping-pong RTT          proactor 0 pings 1, whose handler pongs back at once;
 *                          p50/p99 of px_now_ns() deltas, with busy_poll_us = 50
 *                          and with busy_poll_us = 0 (both sides sleep, so every
 *                          message needs a wake-up).
 *   wake-ups per message   eventfd writes (px stats wakeups_sent, all
 *                          proactors) per message: in the one-way run (busy
 *                          consumer) and with one message every 200 us to a
 *                          consumer that sleeps (busy_poll_us = 0).
 *
 * Every figure is measured --runs times, each time on a fresh pool, and the
 * median is reported; the ratios are taken between medians.  Before the first
 * run, --warmup seconds of untimed one-way traffic keep both CPUs busy: on the
 * virtual machine this was written on, CPUs that were idle run everything 2-4x
 * slower for their first seconds of load (a host-side ramp-up), and without
 * the warm-up run 1 is an outlier in every figure.
 *
 * Correctness: a data message's arg is (sequence << MSG_FROM_BITS) | producer
 * id, and every consumer checks that each producer's sequence arrives as
 * 0, 1, 2, ... with nothing missing at the end.  A lost, duplicated or
 * reordered message, or a run that stalls, fails the benchmark (exit 1): a
 * broken queue's speed means nothing.
 *
 * Flow control (credits): the runtime never blocks a sender — a full ring
 * spills into the sender's heap backlog (msgq.h).  An unbounded producer would
 * therefore grow that backlog towards N entries and the figure would measure
 * malloc and cache misses, not the queue.  So a producer keeps at most
 * `window` = queue_size messages unacknowledged per target, and the consumer
 * acknowledges every window / 4 messages with a message carrying its count.
 * In-flight data then never exceeds the ring, the backlog stays unused on the
 * data path, and the acks add 4 / queue_size messages per data message (0.4 %
 * with the default queue; they are not counted as throughput).
 *
 * Handlers learn a run's state from `msg_run_current`: message handlers get
 * only their arg, which here is the sequence number.  One run is in flight at a
 * time; main sets the pointer before the threads of that run start.  Any
 * failure is fatal: main prints it and exits 1 without tearing the pool down
 * (a wedged pool could not be stopped anyway).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdnoreturn.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "service/runtime/logging.h"
#include "service/runtime/pool.h"
#include "service/runtime/proactor.h"

#define MSG_FROM_BITS         8  /* low bits of a data arg: producer id */
#define MSG_MAX_THREADS       64 /* --threads limit (fits MSG_FROM_BITS) */
#define MSG_DEFAULT_MESSAGES  10000000ULL
#define MSG_DEFAULT_RUNS      5
#define MSG_MAX_RUNS          100
#define MSG_DEFAULT_QUEUE     1024
#define MSG_CHUNK             4096                    /* sends per producer task run */
#define MSG_BUSY_POLL_US      50                      /* the runtime's default */
#define MSG_RTT_SAMPLES       200000ULL               /* round trips timed with busy polling */
#define MSG_RTT_SLEEP_DIVISOR 10                      /* sleeping round trips: samples / 10 */
#define MSG_RTT_WARMUP        1000                    /* untimed round trips first */
#define MSG_IDLE_MESSAGES     2000ULL                 /* idle wake-up test */
#define MSG_IDLE_PERIOD_NS    200000ULL               /* one idle message per 200 us */
#define MSG_WARMUP_S          5                       /* default --warmup */
#define MSG_WARMUP_MESSAGES   1000000ULL              /* per warm-up round */
#define MSG_POLL_NS           2000000L                /* main's polling interval */
#define MSG_STALL_NS          (10ULL * 1000000000ULL) /* no message run for this long: lost */

/* ---- per-run state ------------------------------------------------------ */

/* Producer side of one (this node -> target) flow; owned by the producer. */
struct flow_tx {
	uint64_t total; /* messages to send */
	uint64_t sent;  /* messages sent; the next sequence number */
	uint64_t acked; /* messages the target has run, as of its last ack */
};

/* Consumer side of one (producer -> this node) flow; owned by the consumer. */
struct flow_rx {
	uint64_t expected; /* messages the producer will send */
	uint64_t next;     /* next sequence number expected == messages received */
};

/* A proactor's statistics, copied on its own thread once the run is done. */
struct node_stats {
	unsigned long wakeups_sent; /* px stats: eventfd writes */
	unsigned backlog_slots;     /* outbox backlog capacity ever allocated */
};

/* One participant (a proactor, or a baseline thread): all of its state, written
 * only by its own thread; main reads it after `finished` / `snapped` (acquire). */
struct node {
	_Alignas(64) unsigned id;
	bool stalled;          /* producer: out of credit, an ack will resume it */
	unsigned next_target;  /* producer: where the next chunk starts (fairness) */
	uint64_t to_receive;   /* consumer: data messages expected in all */
	uint64_t received;     /* consumer: data messages run */
	uint64_t t_first_send; /* px_now_ns() of the first send; 0 = none yet */
	uint64_t t_last_recv;  /* px_now_ns() when `received` reached `to_receive` */
	uint64_t *rtt_ns;      /* ping-pong samples; owned by the run */
	uint64_t rtt_want;     /* samples to take */
	uint64_t rtt_count;    /* round trips completed, warm-up included */
	uint64_t rtt_sent_at;  /* px_now_ns() of the ping in flight */
	struct px_timer timer; /* idle test producer; alive until the run ends */
	struct node_stats snap;
	struct flow_tx tx[MSG_MAX_THREADS]; /* by target id */
	struct flow_rx rx[MSG_MAX_THREADS]; /* by producer id */
};

struct msg_run {
	struct node *nodes; /* [n], cache-line aligned; owned by the run */
	unsigned n;
	uint64_t window;          /* producer: max unacknowledged messages per flow */
	uint64_t ack_every;       /* consumer: ack after this many; 0 = never */
	atomic_uint finished;     /* nodes whose part is done */
	atomic_uint snapped;      /* nodes that copied their stats */
	atomic_bool failed;       /* `why` is set (release) */
	atomic_flag fail_claimed; /* the first failure alone writes `why` */
	char why[256];
};

static struct msg_run *msg_run_current;

/* Records the first failure of the run (any thread); main sees `failed`. */
__attribute__((format(printf, 1, 2))) static void run_fail(const char *fmt, ...)
{
	struct msg_run *run = msg_run_current;
	if (atomic_flag_test_and_set(&run->fail_claimed))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(run->why, sizeof(run->why), fmt, ap);
	va_end(ap);
	atomic_store_explicit(&run->failed, true, memory_order_release);
}

/* Main only: reports why the benchmark cannot go on and exits 1. */
__attribute__((format(printf, 1, 2))) static noreturn void msg_fatal(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fprintf(stderr, "ringkv-bench msg: FAILED: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

static inline void *data_arg(uint64_t seq, unsigned from)
{
	return (void *)(uintptr_t)((seq << MSG_FROM_BITS) | from);
}

static inline unsigned arg_from(void *arg)
{
	return (unsigned)((uintptr_t)arg & ((1u << MSG_FROM_BITS) - 1));
}

static inline uint64_t arg_seq(void *arg)
{
	return (uint64_t)((uintptr_t)arg >> MSG_FROM_BITS);
}

/* The calling node's part is done; its fields are final (release). */
static void node_finish(void)
{
	atomic_fetch_add_explicit(&msg_run_current->finished, 1, memory_order_release);
}

/* Consumer: checks one data message against its producer's sequence and counts
 * it.  Returns its flow; on a sequence error the run is marked failed. */
static struct flow_rx *rx_accept(struct node *me, void *arg)
{
	unsigned from = arg_from(arg);
	uint64_t seq = arg_seq(arg);
	if (from >= msg_run_current->n) {
		run_fail("node %u got a message from unknown producer %u", me->id, from);
		from = 0;
	}
	struct flow_rx *rx = &me->rx[from];
	if (seq != rx->next)
		run_fail("node %u: producer %u's message %" PRIu64 " arrived when %" PRIu64
		         " was expected (%s)",
		         me->id, from, seq, rx->next,
		         seq > rx->next ? "lost or reordered" : "duplicated or reordered");
	rx->next = seq + 1;
	if (++me->received == me->to_receive) {
		me->t_last_recv = px_now_ns();
		node_finish();
	}
	return rx;
}

/* Runs on the node's thread: copies its statistics for main. */
static void snapshot_stats(void *arg)
{
	struct node *me = arg;
	struct px *px = px_current();
	me->snap.wakeups_sent = atomic_load_explicit(&px->stats.wakeups_sent, memory_order_relaxed);
	me->snap.backlog_slots = 0;
	for (unsigned i = 0; i < px->n_px; i++)
		me->snap.backlog_slots += px->outboxes[i].backlog_cap;
	atomic_fetch_add_explicit(&msg_run_current->snapped, 1, memory_order_release);
}

/* ---- credit-limited streams (one-way, eventfd-always, all-to-all) ------- */

static void produce(void *arg);

/* Producer: the target has run `acked` of our messages. */
static void on_ack(void *arg)
{
	struct node *me = &msg_run_current->nodes[px_current()->id];
	struct flow_tx *tx = &me->tx[arg_from(arg)];
	tx->acked = arg_seq(arg);
	if (me->stalled) {
		me->stalled = false;
		produce(me);
	}
}

/* Consumer: a data message of a stream. */
static void on_data(void *arg)
{
	struct px *px = px_current();
	struct node *me = &msg_run_current->nodes[px->id];
	struct flow_rx *rx = rx_accept(me, arg);
	uint64_t every = msg_run_current->ack_every;
	if (every != 0 && rx->next % every == 0)
		px_send(px, arg_from(arg), on_ack, data_arg(rx->next, me->id));
}

/* Producer task: sends up to MSG_CHUNK messages, round-robin over its flows,
 * each within its credit.  It re-posts itself while it has chunk-limited work
 * (so the loop iterates and publishes), and parks (`stalled`) when every
 * unfinished flow is out of credit; on_ack resumes it. */
static void produce(void *arg)
{
	struct node *me = arg;
	struct msg_run *run = msg_run_current;
	struct px *px = px_current();
	unsigned budget = MSG_CHUNK;
	bool unfinished = false;

	if (me->t_first_send == 0)
		me->t_first_send = px_now_ns();
	for (unsigned k = 0; k < run->n; k++) {
		unsigned t = (me->next_target + k) % run->n;
		struct flow_tx *tx = &me->tx[t];
		while (budget > 0 && tx->sent < tx->total && tx->sent - tx->acked < run->window) {
			px_send(px, t, on_data, data_arg(tx->sent, me->id));
			tx->sent++;
			budget--;
		}
		unfinished |= tx->sent < tx->total;
	}
	me->next_target = (me->next_target + 1) % run->n;
	if (!unfinished)
		return;
	if (budget == 0)
		px_send(px, me->id, produce, me);
	else
		me->stalled = true;
}

/* ---- ping-pong ---------------------------------------------------------- */

static void on_pong(void *arg);

static void on_ping(void *arg)
{
	struct px *px = px_current();
	struct node *me = &msg_run_current->nodes[px->id];
	rx_accept(me, arg);
	px_send(px, arg_from(arg), on_pong, data_arg(arg_seq(arg), me->id));
}

/* Sends the next ping from node 0 to node 1. */
static void ping(struct px *px, struct node *me)
{
	me->rtt_sent_at = px_now_ns();
	px_send(px, 1, on_ping, data_arg(me->tx[1].sent++, me->id));
}

/* Node 0: records the round trip, pings again unless done.  rx_accept comes
 * last: the last pong finishes node 0, after which main reads the samples. */
static void on_pong(void *arg)
{
	uint64_t now = px_now_ns();
	struct px *px = px_current();
	struct node *me = &msg_run_current->nodes[px->id];
	if (me->rtt_count >= MSG_RTT_WARMUP)
		me->rtt_ns[me->rtt_count - MSG_RTT_WARMUP] = now - me->rtt_sent_at;
	if (++me->rtt_count < MSG_RTT_WARMUP + me->rtt_want)
		ping(px, me);
	rx_accept(me, arg);
}

static void ping_start(void *arg)
{
	ping(px_current(), arg);
}

/* ---- idle consumer ------------------------------------------------------ */

static void idle_tick(struct px *px, struct px_timer *t)
{
	struct node *me = container_of(t, struct node, timer);
	struct flow_tx *tx = &me->tx[1];
	px_send(px, 1, on_data, data_arg(tx->sent++, me->id));
	if (tx->sent == tx->total)
		px_timer_stop(px, t);
}

static void idle_start(void *arg)
{
	struct node *me = arg;
	px_timer_start(px_current(), &me->timer, MSG_IDLE_PERIOD_NS, MSG_IDLE_PERIOD_NS, idle_tick);
}

/* ---- running one measurement ------------------------------------------- */

struct msg_opts {
	bool json;
	uint64_t messages; /* per throughput measurement */
	unsigned runs;
	unsigned threads;    /* all-to-all participants */
	unsigned queue_size; /* ring slots, and the mutex queue's capacity */
	unsigned warmup_s;   /* untimed traffic before the first run */
};

/* Makes a run of `n` nodes current, every flow empty; run_flow adds flows. */
static void run_init(struct msg_run *run, unsigned n, const struct msg_opts *o)
{
	memset(run, 0, sizeof(*run));
	size_t bytes = ((sizeof(struct node) * n + 63) / 64) * 64;
	run->nodes = aligned_alloc(64, bytes);
	if (run->nodes == NULL)
		msg_fatal("out of memory for %u nodes", n);
	memset(run->nodes, 0, bytes);
	for (unsigned i = 0; i < n; i++)
		run->nodes[i].id = i;
	run->n = n;
	run->window = o->queue_size;
	run->ack_every = o->queue_size / 4;
	atomic_flag_clear(&run->fail_claimed);
	msg_run_current = run;
}

static void run_free(struct msg_run *run)
{
	for (unsigned i = 0; i < run->n; i++)
		free(run->nodes[i].rtt_ns);
	free(run->nodes);
	msg_run_current = NULL;
}

/* Sets up the flow from -> to with `count` messages. */
static void run_flow(struct msg_run *run, unsigned from, unsigned to, uint64_t count)
{
	run->nodes[from].tx[to].total = count;
	run->nodes[to].rx[from].expected = count;
	run->nodes[to].to_receive += count;
}


/* Returns once `want` nodes finished.  A failure is fatal, and so is a stall:
 * no proactor running any message for MSG_STALL_NS means messages were lost. */
static void run_wait(struct msg_run *run, unsigned want, struct pool *pool)
{
	uint64_t deadline = px_now_ns() + MSG_STALL_NS;
	unsigned long last_in = 0;
	for (;;) {
		if (atomic_load_explicit(&run->failed, memory_order_acquire))
			msg_fatal("%s", run->why);
		if (atomic_load_explicit(&run->finished, memory_order_acquire) >= want)
			return;
		unsigned long out = 0, in = 0;
		for (unsigned i = 0; i < pool_size(pool); i++) {
			out += atomic_load(&pool_px(pool, i)->stats.msgs_out);
			in += atomic_load(&pool_px(pool, i)->stats.msgs_in);
		}
		if (in != last_in) {
			last_in = in;
			deadline = px_now_ns() + MSG_STALL_NS;
		} else if (px_now_ns() > deadline) {
			msg_fatal("no message ran for %llu s (%lu sent, %lu run): messages lost",
			          MSG_STALL_NS / 1000000000ULL, out, in);
		}
		bench_sleep_ns(MSG_POLL_NS);
	}
}

/* Once every thread of the run is gone: each flow must have delivered exactly
 * its count, and nothing may have failed.  Fatal otherwise. */
static void run_check_complete(struct msg_run *run)
{
	if (atomic_load_explicit(&run->failed, memory_order_acquire))
		msg_fatal("%s", run->why);
	for (unsigned c = 0; c < run->n; c++)
		for (unsigned p = 0; p < run->n; p++) {
			struct flow_rx *rx = &run->nodes[c].rx[p];
			if (rx->next != rx->expected)
				msg_fatal("node %u received %" PRIu64 " of producer %u's %" PRIu64
				          " messages (lost)",
				          c, rx->next, p, rx->expected);
		}
}

static struct pool_config msg_pool_config(const struct msg_opts *o, unsigned threads,
                                          unsigned busy_poll_us, bool wake_always)
{
	struct pool_config cfg = {
	    .threads = threads,
	    .pin = true,
	    .queue_size = o->queue_size,
	    .px = {.entries = 256, .busy_poll_us = busy_poll_us, .msg_budget = 1024},
	    .wake_always = wake_always,
	    .quiet = true,
	};
	return cfg;
}

/* Runs the current run on a fresh pool: kick(node i) on every proactor whose
 * bit is in `kick_mask`, waits for `want` finished nodes, snapshots the
 * statistics (each node's snapshot task runs after the iteration that
 * published its last message, so its counters are final), stops the pool and
 * checks that every message arrived. */
static void run_on_pool(struct msg_run *run, const struct pool_config *cfg, void (*kick)(void *),
                        uint64_t kick_mask, unsigned want)
{
	struct pool *pool;
	char err[512];
	if (pool_start(&pool, cfg, err, sizeof(err)) < 0)
		msg_fatal("cannot start the pool: %s", err);
	for (unsigned i = 0; i < run->n; i++)
		if (kick_mask & (1ULL << i))
			pool_run_on(pool, i, kick, &run->nodes[i]);
	run_wait(run, want, pool);
	for (unsigned i = 0; i < run->n; i++)
		pool_run_on(pool, i, snapshot_stats, &run->nodes[i]);
	while (atomic_load_explicit(&run->snapped, memory_order_acquire) < run->n)
		bench_sleep_ns(MSG_POLL_NS / 10);
	pool_stop(pool);
	run_check_complete(run);
}

/* Wall time from the earliest first send to the latest last receive. */
static double run_elapsed_s(const struct msg_run *run)
{
	uint64_t start = UINT64_MAX, end = 0;
	for (unsigned i = 0; i < run->n; i++) {
		const struct node *nd = &run->nodes[i];
		if (nd->t_first_send != 0 && nd->t_first_send < start)
			start = nd->t_first_send;
		if (nd->t_last_recv > end)
			end = nd->t_last_recv;
	}
	return end > start ? (double)(end - start) / 1e9 : 0.0;
}

static unsigned long run_wakeups(const struct msg_run *run)
{
	unsigned long sum = 0;
	for (unsigned i = 0; i < run->n; i++)
		sum += run->nodes[i].snap.wakeups_sent;
	return sum;
}

/* ---- the measurements --------------------------------------------------- */

/* Proactor 0 streams `messages` to proactor 1.  Fills msgs/s and eventfd
 * writes (all proactors) per message. */
static void measure_one_way(const struct msg_opts *o, bool wake_always, double *msgs_per_s,
                            double *wakeups_per_msg)
{
	struct msg_run run;
	run_init(&run, 2, o);
	run_flow(&run, 0, 1, o->messages);
	struct pool_config cfg = msg_pool_config(o, 2, MSG_BUSY_POLL_US, wake_always);
	run_on_pool(&run, &cfg, produce, 1u << 0, 1);
	*msgs_per_s = (double)o->messages / run_elapsed_s(&run);
	*wakeups_per_msg = (double)run_wakeups(&run) / (double)o->messages;
	for (unsigned i = 0; i < run.n; i++)
		if (run.nodes[i].snap.backlog_slots != 0)
			fprintf(stderr, "note: proactor %u's outbox backlogs grew to %u slots\n", i,
			        run.nodes[i].snap.backlog_slots);
	run_free(&run);
}

/* Every proactor streams to every other at once, messages / threads each. */
static void measure_all_to_all(const struct msg_opts *o, double *msgs_per_s)
{
	struct msg_run run;
	unsigned n = o->threads;
	uint64_t per_flow = o->messages / ((uint64_t)n * (n - 1));
	run_init(&run, n, o);
	for (unsigned p = 0; p < n; p++)
		for (unsigned c = 0; c < n; c++)
			if (p != c)
				run_flow(&run, p, c, per_flow);
	struct pool_config cfg = msg_pool_config(o, n, MSG_BUSY_POLL_US, false);
	run_on_pool(&run, &cfg, produce, n == 64 ? UINT64_MAX : (1ULL << n) - 1, n);
	*msgs_per_s = (double)(per_flow * n * (n - 1)) / run_elapsed_s(&run);
	run_free(&run);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile p (0..1] of n >= 1 sorted samples, in microseconds. */
static double percentile_us(const uint64_t *sorted, uint64_t n, double p)
{
	uint64_t rank = (uint64_t)ceil(p * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted[rank - 1] / 1000.0;
}

/* Ping-pong between proactors 0 and 1 with the given busy polling: `samples`
 * timed round trips after MSG_RTT_WARMUP untimed ones. */
static void measure_rtt(const struct msg_opts *o, unsigned busy_poll_us, uint64_t samples,
                        double *p50_us, double *p99_us)
{
	struct msg_run run;
	run_init(&run, 2, o);
	struct node *n0 = &run.nodes[0];
	n0->rtt_want = samples;
	n0->rtt_ns = malloc(samples * sizeof(*n0->rtt_ns));
	if (n0->rtt_ns == NULL)
		msg_fatal("out of memory for %" PRIu64 " RTT samples", samples);
	run.ack_every = 0;
	run_flow(&run, 0, 1, MSG_RTT_WARMUP + samples);
	run_flow(&run, 1, 0, MSG_RTT_WARMUP + samples);
	struct pool_config cfg = msg_pool_config(o, 2, busy_poll_us, false);
	run_on_pool(&run, &cfg, ping_start, 1u << 0, 2);
	qsort(n0->rtt_ns, samples, sizeof(*n0->rtt_ns), cmp_u64);
	*p50_us = percentile_us(n0->rtt_ns, samples, 0.50);
	*p99_us = percentile_us(n0->rtt_ns, samples, 0.99);
	run_free(&run);
}

/* One message every MSG_IDLE_PERIOD_NS to a consumer that sleeps in between
 * (busy_poll_us = 0); no acks, so every eventfd write is for a data message. */
static void measure_idle_wakeups(const struct msg_opts *o, double *wakeups_per_msg)
{
	struct msg_run run;
	uint64_t count = o->messages < MSG_IDLE_MESSAGES ? o->messages : MSG_IDLE_MESSAGES;
	run_init(&run, 2, o);
	run.ack_every = 0;
	run_flow(&run, 0, 1, count);
	struct pool_config cfg = msg_pool_config(o, 2, 0, false);
	run_on_pool(&run, &cfg, idle_start, 1u << 0, 1);
	*wakeups_per_msg = (double)run_wakeups(&run) / (double)count;
	run_free(&run);
}

/* ---- baseline: mutex + two condition variables ------------------------- */

struct mutex_msg {
	void (*fn)(void *arg);
	void *arg;
};

/* A bounded FIFO behind one lock: the design ringkv's queues are compared to. */
struct mutex_queue {
	pthread_mutex_t lock;
	pthread_cond_t not_empty; /* signalled after every push */
	pthread_cond_t not_full;  /* signalled after every pop */
	struct mutex_msg *slots;  /* capacity entries; owned by the queue */
	unsigned mask;            /* capacity - 1 (a power of two) */
	unsigned head;            /* next slot to pop; under lock */
	unsigned count;           /* messages queued; under lock */
};

static void mutex_push(struct mutex_queue *q, struct mutex_msg m)
{
	pthread_mutex_lock(&q->lock);
	while (q->count == q->mask + 1)
		pthread_cond_wait(&q->not_full, &q->lock);
	q->slots[(q->head + q->count) & q->mask] = m;
	q->count++;
	pthread_cond_signal(&q->not_empty);
	pthread_mutex_unlock(&q->lock);
}

static struct mutex_msg mutex_pop(struct mutex_queue *q)
{
	pthread_mutex_lock(&q->lock);
	while (q->count == 0)
		pthread_cond_wait(&q->not_empty, &q->lock);
	struct mutex_msg m = q->slots[q->head];
	q->head = (q->head + 1) & q->mask;
	q->count--;
	pthread_cond_signal(&q->not_full);
	pthread_mutex_unlock(&q->lock);
	return m;
}

struct mutex_thread {
	struct mutex_queue *q;
	struct node *node;
	pthread_barrier_t *go; /* both threads start together */
	int cpu;               /* to pin to, or -1 */
	uint64_t count;        /* messages to push (producer) or pop (consumer) */
};

/* The i-th CPU this process may use, modulo their number (as pool.c pins), or
 * -1. */
static int nth_allowed_cpu(unsigned i)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) != 0 || CPU_COUNT(&set) <= 0)
		return -1;
	unsigned want = i % (unsigned)CPU_COUNT(&set);
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &set) && want-- == 0)
			return cpu;
	return -1;
}

static void pin_self(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	if (err != 0)
		fprintf(stderr, "warning: cannot pin a baseline thread to cpu %d: %s\n", cpu,
		        strerror(err));
}

/* The baseline consumer's fn: the same sequence check as on_data. */
static void mutex_on_data(void *arg)
{
	rx_accept(&msg_run_current->nodes[1], arg);
}

static void *mutex_producer(void *arg)
{
	struct mutex_thread *t = arg;
	pin_self(t->cpu);
	pthread_barrier_wait(t->go);
	t->node->t_first_send = px_now_ns();
	for (uint64_t seq = 0; seq < t->count; seq++)
		mutex_push(t->q, (struct mutex_msg){mutex_on_data, data_arg(seq, t->node->id)});
	return NULL;
}

static void *mutex_consumer(void *arg)
{
	struct mutex_thread *t = arg;
	pin_self(t->cpu);
	pthread_barrier_wait(t->go);
	for (uint64_t i = 0; i < t->count; i++) {
		struct mutex_msg m = mutex_pop(t->q);
		m.fn(m.arg);
	}
	return NULL;
}

/* The classic design between two pinned threads; fills msgs/s. */
static void measure_mutex(const struct msg_opts *o, double *msgs_per_s)
{
	struct msg_run run;
	struct mutex_queue q = {.mask = o->queue_size - 1};
	pthread_barrier_t go;
	pthread_t prod, cons;

	run_init(&run, 2, o);
	run_flow(&run, 0, 1, o->messages);
	q.slots = calloc(o->queue_size, sizeof(*q.slots));
	if (q.slots == NULL)
		msg_fatal("out of memory for the mutex queue");
	pthread_mutex_init(&q.lock, NULL);
	pthread_cond_init(&q.not_empty, NULL);
	pthread_cond_init(&q.not_full, NULL);
	pthread_barrier_init(&go, NULL, 2);
	struct mutex_thread pt = {&q, &run.nodes[0], &go, nth_allowed_cpu(0), o->messages};
	struct mutex_thread ct = {&q, &run.nodes[1], &go, nth_allowed_cpu(1), o->messages};
	int err = pthread_create(&cons, NULL, mutex_consumer, &ct);
	if (err == 0)
		err = pthread_create(&prod, NULL, mutex_producer, &pt);
	if (err != 0)
		msg_fatal("cannot create a baseline thread: %s", strerror(err));
	pthread_join(prod, NULL);
	pthread_join(cons, NULL);
	run_check_complete(&run);
	*msgs_per_s = (double)o->messages / run_elapsed_s(&run);
	pthread_barrier_destroy(&go);
	pthread_cond_destroy(&q.not_full);
	pthread_cond_destroy(&q.not_empty);
	pthread_mutex_destroy(&q.lock);
	free(q.slots);
	run_free(&run);
}

/* ---- figures, medians and output ---------------------------------------- */

struct msg_figures {
	double msgs_per_s;
	double wakeups_per_msg_busy;
	double eventfd_always_msgs_per_s;
	double eventfd_always_wakeups_per_msg;
	double mutex_msgs_per_s;
	double all_to_all_msgs_per_s;
	double rtt_p50_us;
	double rtt_p99_us;
	double rtt_sleep_p50_us;
	double rtt_sleep_p99_us;
	double wakeups_per_msg_idle;
	double mutex_ratio;   /* from the medians: msgs_per_s / mutex_msgs_per_s */
	double eventfd_ratio; /* from the medians: msgs_per_s / eventfd_always_msgs_per_s */
};

/* How each figure is printed: JSON key, table label, table unit and scale. */
struct msg_figure_desc {
	const char *key;
	const char *label;
	const char *unit;
	double scale;  /* table value = figure * scale */
	int decimals;  /* in the table and in JSON */
	size_t offset; /* in struct msg_figures */
};

#define FIG(key, label, unit, scale, dec)                                                          \
	{                                                                                          \
#key, label, unit, scale, dec, offsetof(struct msg_figures, key)                   \
	}

static const struct msg_figure_desc msg_figure_descs[] = {
    FIG(msgs_per_s, "one-way throughput (ringkv)", "M msgs/s", 1e-6, 0),
    FIG(mutex_msgs_per_s, "one-way, mutex + condvars", "M msgs/s", 1e-6, 0),
    FIG(eventfd_always_msgs_per_s, "one-way, eventfd every msg", "M msgs/s", 1e-6, 0),
    FIG(mutex_ratio, "ringkv / mutex", "x", 1, 2),
    FIG(eventfd_ratio, "ringkv / eventfd-always", "x", 1, 2),
    FIG(all_to_all_msgs_per_s, "all-to-all throughput", "M msgs/s", 1e-6, 0),
    FIG(rtt_p50_us, "ping-pong RTT p50 (busy poll)", "us", 1, 2),
    FIG(rtt_p99_us, "ping-pong RTT p99 (busy poll)", "us", 1, 2),
    FIG(rtt_sleep_p50_us, "ping-pong RTT p50 (sleeping)", "us", 1, 2),
    FIG(rtt_sleep_p99_us, "ping-pong RTT p99 (sleeping)", "us", 1, 2),
    FIG(wakeups_per_msg_busy, "wake-ups/msg, busy consumer", "", 1, 8),
    FIG(wakeups_per_msg_idle, "wake-ups/msg, idle consumer", "", 1, 4),
    FIG(eventfd_always_wakeups_per_msg, "wake-ups/msg, eventfd-always", "", 1, 4),
};

#define MSG_N_FIGURES (sizeof(msg_figure_descs) / sizeof(msg_figure_descs[0]))

static double *figure_at(struct msg_figures *f, const struct msg_figure_desc *d)
{
	return (double *)((char *)f + d->offset);
}



static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

/* Medians of every measured figure over `runs`, then the ratios. */
static void figures_median(struct msg_figures *out, struct msg_figures *per_run, unsigned runs)
{
	double v[MSG_MAX_RUNS];
	for (size_t k = 0; k < MSG_N_FIGURES; k++) {
		const struct msg_figure_desc *d = &msg_figure_descs[k];
		for (unsigned r = 0; r < runs; r++)
			v[r] = *figure_at(&per_run[r], d);
		*figure_at(out, d) = bench_median(v, runs);
	}
	out->mutex_ratio = ratio(out->msgs_per_s, out->mutex_msgs_per_s);
	out->eventfd_ratio = ratio(out->msgs_per_s, out->eventfd_always_msgs_per_s);
}

static void print_json(const struct msg_opts *o, struct msg_figures *f)
{
	printf("{\n  \"messages\": %" PRIu64 ",\n  \"runs\": %u,\n  \"threads\": %u,\n"
	       "  \"queue_size\": %u",
	       o->messages, o->runs, o->threads, o->queue_size);
	for (size_t k = 0; k < MSG_N_FIGURES; k++) {
		const struct msg_figure_desc *d = &msg_figure_descs[k];
		printf(",\n  \"%s\": %.*f", d->key, d->decimals, *figure_at(f, d));
	}
	printf("\n}\n");
}

static void print_table(const struct msg_opts *o, struct msg_figures *f)
{
	printf("ringkv-bench msg: %" PRIu64 " messages, median of %u runs, %u threads for"
	       " all-to-all, queue %u slots\n\n",
	       o->messages, o->runs, o->threads, o->queue_size);
	printf("%-32s %12s  %s\n", "figure", "value", "unit");
	for (size_t k = 0; k < MSG_N_FIGURES; k++) {
		const struct msg_figure_desc *d = &msg_figure_descs[k];
		int dec = d->scale != 1 ? 2 : d->decimals;
		printf("%-32s %12.*f  %s\n", d->label, dec, *figure_at(f, d) * d->scale, d->unit);
	}
}

/* ---- command line ------------------------------------------------------- */

static void msg_usage(FILE *out)
{
	fprintf(out,
	        "usage: ringkv-bench msg [--json] [--messages N] [--runs R] [--threads N]\n"
	        "                        [--queue-size N] [--warmup S]\n"
	        "\n"
	        "  --json          print one JSON object on stdout (progress goes to stderr)\n"
	        "  --messages N    messages per throughput measurement (default %llu)\n"
	        "  --runs R        repeat every measurement R times (at most %d), report\n"
	        "                  medians (default %d)\n"
	        "  --threads N     proactors in the all-to-all test, 2..%d (default 2)\n"
	        "  --queue-size N  slots per ring and in the mutex queue, power of two >= 4\n"
	        "                  (default %d)\n"
	        "  --warmup S      seconds of untimed traffic before the first run (default %d)\n"
	        "\n"
	        "Ping-pong takes min(N, %llu) samples (a tenth of that while sleeping); the idle\n"
	        "wake-up test sends min(N, %llu) messages, one per %llu us.\n",
	        MSG_DEFAULT_MESSAGES, MSG_MAX_RUNS, MSG_DEFAULT_RUNS, MSG_MAX_THREADS,
	        MSG_DEFAULT_QUEUE, MSG_WARMUP_S, MSG_RTT_SAMPLES, MSG_IDLE_MESSAGES,
	        MSG_IDLE_PERIOD_NS / 1000);
}


/* Fills `o` from the command line.  Returns 0, 1 for --help, or -1 after
 * printing what is wrong. */
static int parse_args(int argc, char **argv, struct msg_opts *o)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"messages", required_argument, NULL, 'm'},
	    {"runs", required_argument, NULL, 'r'},
	    {"threads", required_argument, NULL, 't'},
	    {"queue-size", required_argument, NULL, 'q'},
	    {"warmup", required_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c, which = 0;
	*o = (struct msg_opts){false, MSG_DEFAULT_MESSAGES, MSG_DEFAULT_RUNS,
	                       2,     MSG_DEFAULT_QUEUE,    MSG_WARMUP_S};
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, &which)) != -1) {
		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'm':
			if (!bench_parse_u64(optarg, 1, (1ULL << (64 - MSG_FROM_BITS)) - 1, &o->messages))
				goto bad;
			break;
		case 'r':
			if (!bench_parse_u64(optarg, 1, MSG_MAX_RUNS, &v))
				goto bad;
			o->runs = (unsigned)v;
			break;
		case 't':
			if (!bench_parse_u64(optarg, 2, MSG_MAX_THREADS, &v))
				goto bad;
			o->threads = (unsigned)v;
			break;
		case 'q':
			if (!bench_parse_u64(optarg, 4, 1u << 24, &v) || (v & (v - 1)) != 0)
				goto bad;
			o->queue_size = (unsigned)v;
			break;
		case 'w':
			if (!bench_parse_u64(optarg, 0, 600, &v))
				goto bad;
			o->warmup_s = (unsigned)v;
			break;
		case 'h':
			return 1;
		default:
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ringkv-bench msg: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (o->messages < (uint64_t)o->threads * (o->threads - 1)) {
		fprintf(stderr, "ringkv-bench msg: --messages must be at least %u for %u threads\n",
		        o->threads * (o->threads - 1), o->threads);
		return -1;
	}
	return 0;
bad:
	fprintf(stderr, "ringkv-bench msg: invalid value '%s' for --%s\n", optarg,
	        longopts[which].name);
	return -1;
}

/* Untimed one-way rounds until o->warmup_s seconds have passed. */
static void warm_up(const struct msg_opts *o)
{
	struct msg_opts w = *o;
	uint64_t end = px_now_ns() + (uint64_t)o->warmup_s * 1000000000ULL;
	double ignored_rate, ignored_wakeups;
	if (o->warmup_s == 0)
		return;
	if (w.messages > MSG_WARMUP_MESSAGES)
		w.messages = MSG_WARMUP_MESSAGES;
	fprintf(stderr, "warm-up: %u s of one-way traffic, not measured\n", o->warmup_s);
	while (px_now_ns() < end)
		measure_one_way(&w, false, &ignored_rate, &ignored_wakeups);
}

/* One repetition of every measurement, in an order that interleaves the
 * designs so that slow drift of the machine touches them alike. */
static void measure_all(const struct msg_opts *o, unsigned r, struct msg_figures *f)
{
	uint64_t rtt = o->messages < MSG_RTT_SAMPLES ? o->messages : MSG_RTT_SAMPLES;
	uint64_t rtt_sleep = rtt / MSG_RTT_SLEEP_DIVISOR ? rtt / MSG_RTT_SLEEP_DIVISOR : 1;
	unsigned n = o->runs;

	measure_one_way(o, false, &f->msgs_per_s, &f->wakeups_per_msg_busy);
	fprintf(stderr, "run %u/%u: one-way          %8.2f M msgs/s, %.0f eventfd writes\n", r, n,
	        f->msgs_per_s / 1e6, f->wakeups_per_msg_busy * (double)o->messages);
	measure_mutex(o, &f->mutex_msgs_per_s);
	fprintf(stderr, "run %u/%u: mutex baseline   %8.2f M msgs/s\n", r, n,
	        f->mutex_msgs_per_s / 1e6);
	measure_one_way(o, true, &f->eventfd_always_msgs_per_s, &f->eventfd_always_wakeups_per_msg);
	fprintf(stderr, "run %u/%u: eventfd-always   %8.2f M msgs/s, %.4f wake-ups/msg\n", r, n,
	        f->eventfd_always_msgs_per_s / 1e6, f->eventfd_always_wakeups_per_msg);
	measure_all_to_all(o, &f->all_to_all_msgs_per_s);
	fprintf(stderr, "run %u/%u: all-to-all (%u)   %8.2f M msgs/s\n", r, n, o->threads,
	        f->all_to_all_msgs_per_s / 1e6);
	measure_rtt(o, MSG_BUSY_POLL_US, rtt, &f->rtt_p50_us, &f->rtt_p99_us);
	fprintf(stderr, "run %u/%u: RTT busy poll    p50 %.2f us, p99 %.2f us\n", r, n,
	        f->rtt_p50_us, f->rtt_p99_us);
	measure_rtt(o, 0, rtt_sleep, &f->rtt_sleep_p50_us, &f->rtt_sleep_p99_us);
	fprintf(stderr, "run %u/%u: RTT sleeping     p50 %.2f us, p99 %.2f us\n", r, n,
	        f->rtt_sleep_p50_us, f->rtt_sleep_p99_us);
	measure_idle_wakeups(o, &f->wakeups_per_msg_idle);
	fprintf(stderr, "run %u/%u: idle consumer    %.4f wake-ups/msg\n", r, n,
	        f->wakeups_per_msg_idle);
}

int bench_msg_main(int argc, char **argv)
{
	struct msg_opts o;
	int ret = parse_args(argc, argv, &o);
	if (ret != 0) {
		msg_usage(ret > 0 ? stdout : stderr);
		return ret > 0 ? 0 : 2;
	}
	logging_level = LOG_LEVEL_WARN;

	struct msg_figures per_run[MSG_MAX_RUNS], result;
	warm_up(&o);
	for (unsigned r = 0; r < o.runs; r++)
		measure_all(&o, r + 1, &per_run[r]);
	figures_median(&result, per_run, o.runs);
	if (o.json)
		print_json(&o, &result);
	else
		print_table(&o, &result);
	return 0;
}
