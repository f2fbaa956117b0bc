/* proactor: see proactor.h for the loop and the user_data encoding. */
#include "proactor.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "logging.h"

#define PX_SPINS_PER_CHECK 64          /* busy-poll spins between kernel checks */
#define PX_BACKLOG_SLEEP_NS 100000ULL /* sleep bound while a target's queue is full */
#define PX_SUBMIT_BATCH 16              /* SQEs held back at most before a submit */

__thread struct px *px_self;

uint64_t px_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/* ---- ring set-up ------------------------------------------------------- */

/* Setup flags to try, best first.  A kernel that lacks a flag answers EINVAL
 * and the next rung is tried. */
static const unsigned setup_ladder[PX_SETUP_RUNGS] = {
	IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		IORING_SETUP_SUBMIT_ALL,
	IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
	IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		IORING_SETUP_SUBMIT_ALL,
	IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
	IORING_SETUP_SUBMIT_ALL,
	0,
};

static int read_sysctl_int(const char *path)
{
	FILE *f = fopen(path, "r");
	int v = -1;
	if (f == NULL)
		return -1;
	if (fscanf(f, "%d", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* Writes why io_uring_queue_init failed with `err` (negative errno) and what
 * to do about it. */
static void explain_setup_failure(int err, unsigned entries, char *buf, size_t len)
{
	int disabled = read_sysctl_int("/proc/sys/kernel/io_uring_disabled");
	struct rlimit rl = {0};
	switch (-err) {
	case EPERM:
		if (disabled > 0)
			snprintf(buf, len,
				 "io_uring is disabled on this machine (kernel.io_uring_disabled=%d);"
				 " enable it with 'sysctl -w kernel.io_uring_disabled=0'%s",
				 disabled,
				 disabled == 1 ? " or add this user to kernel.io_uring_group" : "");
		else
			snprintf(buf, len,
				 "io_uring_setup is not permitted (EPERM), most likely by a seccomp"
				 " filter (container runtimes block io_uring by default); run with a"
				 " seccomp profile that allows io_uring_setup, io_uring_enter and"
				 " io_uring_register");
		return;
	case ENOSYS:
		snprintf(buf, len,
			 "this kernel has no io_uring (ENOSYS: built without CONFIG_IO_URING or"
			 " older than 5.1); ringkv needs Linux 5.15 or newer, 6.1+ recommended");
		return;
	case ENOMEM:
		getrlimit(RLIMIT_MEMLOCK, &rl);
		snprintf(buf, len,
			 "not enough lockable memory for a ring of %u entries (ENOMEM;"
			 " RLIMIT_MEMLOCK is %llu bytes); raise it with 'ulimit -l unlimited' or"
			 " LimitMEMLOCK=infinity in the systemd unit, or lower uring.entries",
			 entries, (unsigned long long)rl.rlim_cur);
		return;
	default:
		snprintf(buf, len, "io_uring_queue_init failed: %s", strerror(-err));
	}
}

static int ring_setup(struct px *px, unsigned entries, unsigned start, char *err, size_t errlen)
{
	int ret = -EINVAL;
	for (size_t i = start; i < PX_SETUP_RUNGS; i++) {
		for (int cqsize = 1; cqsize >= 0; cqsize--) {
			struct io_uring_params p;
			memset(&p, 0, sizeof(p));
			p.flags = setup_ladder[i];
			if (cqsize) {
				p.flags |= IORING_SETUP_CQSIZE;
				p.cq_entries = entries * 4;
			}
			ret = io_uring_queue_init_params(entries, &px->ring, &p);
			if (ret == 0) {
				px->setup_flags = p.flags;
				px->enter_always = (p.flags & IORING_SETUP_DEFER_TASKRUN) &&
						   !(p.flags & IORING_SETUP_TASKRUN_FLAG);
				return 0;
			}
			if (ret != -EINVAL)
				goto fail;
		}
	}
fail:
	explain_setup_failure(ret, entries, err, errlen);
	return ret;
}

void px_describe(struct px *px, char *buf, size_t len)
{
	static const struct {
		unsigned bit;
		const char *name;
	} setup_names[] = {
		{IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER"},
		{IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN"},
		{IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"},
		{IORING_SETUP_TASKRUN_FLAG, "TASKRUN_FLAG"},
		{IORING_SETUP_SUBMIT_ALL, "SUBMIT_ALL"},
	};
	static const struct {
		unsigned bit;
		const char *name;
	} feature_names[] = {
		{IORING_FEAT_NODROP, "NODROP"},
		{IORING_FEAT_FAST_POLL, "FAST_POLL"},
		{IORING_FEAT_EXT_ARG, "EXT_ARG"},
		{IORING_FEAT_CQE_SKIP, "CQE_SKIP"},
		{IORING_FEAT_LINKED_FILE, "LINKED_FILE"},
	};
	static const struct {
		int op;
		const char *name;
	} op_names[] = {
		{IORING_OP_MSG_RING, "MSG_RING"},
		{IORING_OP_SEND_ZC, "SEND_ZC"},
		{IORING_OP_SOCKET, "SOCKET"},
	};
	size_t n = (size_t)snprintf(buf, len, "%u SQ / %u CQ entries, setup", px->ring.sq.ring_entries,
				    px->ring.cq.ring_entries);
	const char *sep = " ";
	for (size_t i = 0; i < sizeof(setup_names) / sizeof(setup_names[0]) && n < len; i++)
		if (px->setup_flags & setup_names[i].bit) {
			n += (size_t)snprintf(buf + n, len - n, "%s%s", sep, setup_names[i].name);
			sep = "|";
		}
	if (n < len)
		n += (size_t)snprintf(buf + n, len - n, ", features");
	sep = " ";
	for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]) && n < len; i++)
		if (px->ring.features & feature_names[i].bit) {
			n += (size_t)snprintf(buf + n, len - n, "%s%s", sep, feature_names[i].name);
			sep = "|";
		}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&px->ring);
	if (probe == NULL)
		return;
	if (n < len)
		n += (size_t)snprintf(buf + n, len - n, ", ops");
	for (size_t i = 0; i < sizeof(op_names) / sizeof(op_names[0]) && n < len; i++)
		if (io_uring_opcode_supported(probe, op_names[i].op))
			n += (size_t)snprintf(buf + n, len - n, " %s", op_names[i].name);
	io_uring_free_probe(probe);
}

/* ---- submission and completion ---------------------------------------- */

/* True if io_uring_enter has something to do: SQEs to submit, or completions
 * the kernel holds back until we enter (deferred or cooperative task work,
 * which it flags with IORING_SQ_TASKRUN when the ring has TASKRUN_FLAG; CQ
 * overflow).  A ring with DEFER_TASKRUN but no TASKRUN_FLAG gives no such
 * signal, so it always enters. */
static bool px_kernel_has_work(struct px *px)
{
	if (io_uring_sq_ready(&px->ring) > 0 || px->enter_always)
		return true;
	return (IO_URING_READ_ONCE(*px->ring.sq.kflags) &
		(IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
}

/* Submits pending SQEs and flushes deferred completions into the CQ — only
 * when there is any, so a loop busy with messages makes no syscall.  Errors
 * the kernel may return under pressure (EAGAIN, EBUSY) leave the SQEs queued
 * for the next iteration. */
static void px_submit(struct px *px)
{
	if (!px_kernel_has_work(px))
		return;
	for (;;) {
		unsigned ready = io_uring_sq_ready(&px->ring);
		int ret = io_uring_submit_and_get_events(&px->ring);
		px_stat_add(&px->stats.submits, 1);
		if (ret >= 0) {
			px_stat_add(&px->stats.sqes, (unsigned long)ret);
			return;
		}
		if (ret == -EINTR)
			continue;
		if (ret != -EAGAIN && ret != -EBUSY)
			LOG_ERROR("io_uring_enter failed with %u SQEs ready: %s", ready,
				  strerror(-ret));
		return;
	}
}

struct io_uring_sqe *px_get_sqe(struct px *px, struct px_op *op)
{
	/* An iteration that prepares many SQEs submits them in batches rather
	 * than all at its end: a device then starts on the first ones while the
	 * loop still works on the rest.  Storage benchmark, 2 x 32 cold 4 KiB
	 * gets: 54.5 k -> 56-57 k/s (batches of 4, 8, 16 alike); the queue
	 * otherwise drained and refilled in bursts of 32. */
	if (io_uring_sq_ready(&px->ring) >= PX_SUBMIT_BATCH)
		px_submit(px);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&px->ring);
	if (sqe == NULL) {
		px_stat_add(&px->stats.sq_full, 1);
		px_submit(px);
		sqe = io_uring_get_sqe(&px->ring);
		if (sqe == NULL)
			return NULL;
	}
	io_uring_sqe_set_data(sqe, op);
	return sqe;
}

/* Reaps every available CQE (bounded), copying each out before the CQ slot is
 * released, so a callback may submit and even flush the CQ safely.  CQEs the
 * kernel parked in its overflow list (IORING_FEAT_NODROP) are flushed into the
 * CQ by io_uring_peek_batch_cqe when the CQ runs empty. */
static unsigned px_reap(struct px *px)
{
	unsigned total = 0, limit = px->ring.cq.ring_entries * 2;
	if (IO_URING_READ_ONCE(*px->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
		px_stat_add(&px->stats.cq_overflows, 1);
	while (total < limit) {
		struct io_uring_cqe *cqes[PX_CQE_BATCH];
		struct {
			uint64_t data;
			int res;
			unsigned flags;
		} done[PX_CQE_BATCH];
		unsigned n = io_uring_peek_batch_cqe(&px->ring, cqes, PX_CQE_BATCH);
		if (n == 0)
			break;
		for (unsigned i = 0; i < n; i++) {
			done[i].data = cqes[i]->user_data;
			done[i].res = cqes[i]->res;
			done[i].flags = cqes[i]->flags;
		}
		io_uring_cq_advance(&px->ring, n);
		for (unsigned i = 0; i < n; i++) {
			if (done[i].data == 0 || done[i].data == LIBURING_UDATA_TIMEOUT)
				continue;
			struct px_op *op = (struct px_op *)(uintptr_t)done[i].data;
			op->complete(px, op, done[i].res, done[i].flags);
		}
		px_stat_add(&px->stats.cqes, n);
		total += n;
	}
	return total;
}

/* ---- wake-up read ------------------------------------------------------ */

static void wake_arm(struct px *px);

static void wake_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	(void)op;
	(void)flags;
	px->wake_armed = false;
	if (res < 0 && res != -ECANCELED && res != -EAGAIN && res != -EINTR)
		LOG_ERROR("reading the wake-up eventfd failed: %s", strerror(-res));
	px_stat_add(&px->stats.wakeups_received, 1);
	wake_arm(px);
}

static void wake_arm(struct px *px)
{
	if (px->wake_armed)
		return;
	struct io_uring_sqe *sqe = px_get_sqe(px, &px->wake_op);
	if (sqe == NULL)
		return; /* retried by px_sleep before it blocks */
	io_uring_prep_read(sqe, px->inbox->waker.efd, &px->wake_buf, sizeof(px->wake_buf), 0);
	px->wake_armed = true;
}

/* ---- timers ------------------------------------------------------------ */

static void timer_arm(struct px *px, struct px_timer *t)
{
	struct io_uring_sqe *sqe = px_get_sqe(px, &t->op);
	if (sqe == NULL) {
		if (!t->retry) {
			t->retry = true;
			t->retry_next = px->timer_retry;
			px->timer_retry = t;
		}
		return;
	}
	io_uring_prep_timeout(sqe, &t->when, 0, IORING_TIMEOUT_ABS);
	t->armed = true;
}

static void timer_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct px_timer *t = container_of(op, struct px_timer, op);
	(void)flags;
	t->armed = false;
	if (res != -ETIME) {
		if (res != -ECANCELED)
			LOG_ERROR("timer failed: %s", strerror(-res));
		return;
	}
	if (t->stopping)
		return;
	if (t->period_ns) {
		uint64_t next = (uint64_t)t->when.tv_sec * 1000000000ULL +
				(uint64_t)t->when.tv_nsec + t->period_ns;
		uint64_t now = px_now_ns();
		if (next < now) /* fell behind (a long stall): skip the missed ticks */
			next = now + t->period_ns;
		t->when.tv_sec = (long long)(next / 1000000000ULL);
		t->when.tv_nsec = (long long)(next % 1000000000ULL);
		timer_arm(px, t);
	}
	t->fn(px, t);
}

void px_timer_start(struct px *px, struct px_timer *t, uint64_t delay_ns, uint64_t period_ns,
		    void (*fn)(struct px *px, struct px_timer *t))
{
	uint64_t when = px_now_ns() + delay_ns;
	memset(t, 0, sizeof(*t));
	t->op.complete = timer_complete;
	t->when.tv_sec = (long long)(when / 1000000000ULL);
	t->when.tv_nsec = (long long)(when % 1000000000ULL);
	t->period_ns = period_ns;
	t->fn = fn;
	timer_arm(px, t);
}

void px_timer_stop(struct px *px, struct px_timer *t)
{
	t->stopping = true;
	if (t->retry) {
		struct px_timer **pp = &px->timer_retry;
		while (*pp != t)
			pp = &(*pp)->retry_next;
		*pp = t->retry_next;
		t->retry = false;
	}
	if (!t->armed)
		return;
	struct io_uring_sqe *sqe = px_get_sqe(px, NULL);
	if (sqe != NULL)
		io_uring_prep_timeout_remove(sqe, (uint64_t)(uintptr_t)&t->op, 0);
	/* With no SQE the timeout simply fires; `stopping` keeps fn from running. */
}

static bool timers_retry(struct px *px)
{
	struct px_timer *t = px->timer_retry;
	if (t == NULL)
		return false;
	px->timer_retry = NULL;
	while (t != NULL) {
		struct px_timer *next = t->retry_next;
		t->retry = false;
		timer_arm(px, t);
		t = next;
	}
	return true;
}

/* ---- messages and hooks ------------------------------------------------ */

void px_send(struct px *px, unsigned target, void (*fn)(void *arg), void *arg)
{
	struct msgq_flush_stats st = {0, 0};
	msgq_outbox_send(&px->outboxes[target], (struct msgq_msg){fn, arg}, &st);
	px_stat_add(&px->stats.msgs_out, 1);
	if (st.wakeups_sent | st.wakeups_skipped) {
		px_stat_add(&px->stats.wakeups_sent, st.wakeups_sent);
		px_stat_add(&px->stats.wakeups_skipped, st.wakeups_skipped);
	}
}

/* Publishes what this iteration sent; true if anything was published. */
static bool px_flush_outboxes(struct px *px)
{
	struct msgq_flush_stats st = {0, 0};
	bool any = false;
	for (unsigned i = 0; i < px->n_px; i++)
		if (msgq_outbox_pending(&px->outboxes[i]))
			any |= msgq_outbox_flush(&px->outboxes[i], &st);
	px_stat_add(&px->stats.wakeups_sent, st.wakeups_sent);
	px_stat_add(&px->stats.wakeups_skipped, st.wakeups_skipped);
	return any;
}

/* True if some target's ring was full and messages wait in a backlog. */
static bool px_backlogged(struct px *px)
{
	for (unsigned i = 0; i < px->n_px; i++)
		if (px->outboxes[i].backlog_count > 0)
			return true;
	return false;
}

void px_hook_add(struct px *px, struct px_hook *hook)
{
	struct px_hook **pp = &px->hooks;
	while (*pp != NULL)
		pp = &(*pp)->next;
	hook->next = NULL;
	*pp = hook;
}

void px_hook_remove(struct px *px, struct px_hook *hook)
{
	for (struct px_hook **pp = &px->hooks; *pp != NULL; pp = &(*pp)->next)
		if (*pp == hook) {
			*pp = hook->next;
			return;
		}
}

static bool px_run_hooks(struct px *px)
{
	bool work = false;
	for (struct px_hook *h = px->hooks; h != NULL; h = h->next)
		work |= h->fn(px, h);
	return work;
}

/* ---- the loop ---------------------------------------------------------- */

/* Counts an iteration that took ns (INFO: the longest, those over 1 and
 * 10 ms). */
static void px_note_iteration(struct px *px, uint64_t ns)
{
	px_stat_add(&px->stats.iterations, 1);
	if (ns > atomic_load_explicit(&px->stats.iteration_max_ns, memory_order_relaxed))
		atomic_store_explicit(&px->stats.iteration_max_ns, ns, memory_order_relaxed);
	if (ns > 1000000)
		px_stat_add(&px->stats.iterations_over_1ms, 1);
	if (ns > 10000000)
		px_stat_add(&px->stats.iterations_over_10ms, 1);
}

/* One iteration (steps 1-4 of proactor.h).  Returns true if it did work. */
static bool px_iterate(struct px *px)
{
	uint64_t start = px_now_ns();
	px_submit(px);
	unsigned msgs = msgq_inbox_drain(px->inbox, px->cfg.msg_budget);
	px_stat_add(&px->stats.msgs_in, msgs);
	unsigned cqes = px_reap(px);
	bool work = msgs > 0 || cqes > 0;
	work |= timers_retry(px);
	work |= px_run_hooks(px);
	work |= px_flush_outboxes(px);
	px_note_iteration(px, px_now_ns() - start);
	return work;
}

/* Step 5a: spins until work shows up or busy_poll_us passes.  Returns true if
 * work showed up.  Every PX_SPINS_PER_CHECK spins it yields the CPU, so a
 * thread that shares it (the other proactor, a client on a small machine)
 * runs instead of waiting for us to give up: without the yield, two spinning
 * proactors on two CPUs halved redis-benchmark's GET rate; on an idle CPU
 * the yield returns at once.
 *
 * The spin is adaptive.  It pays when the next request comes within
 * busy_poll_us of the loop running dry (many clients, each waiting for its
 * reply): the loop catches it without the sleep and the wake-up, which is
 * what bounds GET -P 1 with 50 clients.  When requests come further apart
 * (one client, a light load) every spin is CPU burnt for nothing, so after a
 * spin that found nothing the next 2^k - 1 sleeps go without one (k the
 * fruitless spins in a row, at most PX_SPIN_BACKOFF_MAX); one that finds work
 * resets k.  An idle or lightly loaded loop then spins before one sleep in
 * 64, and a busy one before nearly every sleep. */
static bool px_busy_poll(struct px *px)
{
	if (px->cfg.busy_poll_us == 0)
		return false;
	if (!px_spin_due(&px->spin)) {
		px_stat_add(&px->stats.busy_poll_skips, 1);
		return false;
	}
	uint64_t start = px_now_ns(), limit = (uint64_t)px->cfg.busy_poll_us * 1000;
	bool found = false;
	for (unsigned spins = 1;; spins++) {
		if (msgq_inbox_pending(px->inbox) || io_uring_cq_ready(&px->ring) > 0 ||
		    io_uring_sq_ready(&px->ring) > 0) {
			found = true;
			break;
		}
		if (spins % PX_SPINS_PER_CHECK == 0) {
			if (px->enter_always) /* no flag tells: look */
				io_uring_get_events(&px->ring);
			if (px->enter_always ? io_uring_cq_ready(&px->ring) > 0
					     : px_kernel_has_work(px)) {
				found = true;
				break;
			}
			if (px_now_ns() - start >= limit ||
			    atomic_load_explicit(&px->exit_requested, memory_order_relaxed))
				break;
			sched_yield(); /* a thread sharing this CPU runs before we spin on */
		}
		cpu_relax();
	}
	px_stat_add(&px->stats.busy_poll_ns, px_now_ns() - start);
	px_stat_add(&px->stats.busy_polls, 1);
	if (found)
		px_stat_add(&px->stats.busy_poll_hits, 1);
	px_spin_done(&px->spin, found);
	return found;
}

/* Step 5b: announces the intent to sleep, checks once more, and blocks until
 * a CQE arrives (bounded while a backlog waits for room in a target ring). */
static void px_sleep(struct px *px)
{
	struct msgq_waker *w = &px->inbox->waker;
	wake_arm(px);
	msgq_sleep_prepare(w);
	if (msgq_inbox_pending(px->inbox) ||
	    atomic_load_explicit(&px->exit_requested, memory_order_relaxed) || !px->wake_armed) {
		msgq_sleep_cancel(w);
		return;
	}
	int ret;
	if (px_backlogged(px)) {
		struct __kernel_timespec ts = {0, (long long)PX_BACKLOG_SLEEP_NS};
		struct io_uring_cqe *cqe;
		ret = io_uring_submit_and_wait_timeout(&px->ring, &cqe, 1, &ts, NULL);
	} else {
		ret = io_uring_submit_and_wait(&px->ring, 1);
	}
	px_stat_add(&px->stats.submits, 1);
	px_stat_add(&px->stats.sleeps, 1);
	if (ret < 0 && ret != -EINTR && ret != -ETIME && ret != -EAGAIN && ret != -EBUSY)
		LOG_ERROR("io_uring_enter (wait) failed: %s", strerror(-ret));
	msgq_sleep_cancel(w);
}

/* While stopping: publishes whether this proactor has nothing left to do —
 * nothing held, nothing queued in, nothing waiting to go out.  Timers do not
 * count: work a timer starts must take a hold or send a message. */
static void px_note_drain_state(struct px *px)
{
	bool drained = px->holds == 0 && !px_backlogged(px) && !msgq_inbox_pending(px->inbox);
	if (atomic_load_explicit(&px->drained, memory_order_relaxed) != drained)
		atomic_store_explicit(&px->drained, drained, memory_order_release);
}

void px_run(struct px *px)
{
	px_self = px;
	while (!atomic_load_explicit(&px->exit_requested, memory_order_acquire)) {
		bool work = px_iterate(px);
		if (px->stopping)
			px_note_drain_state(px);
		if (work || px_busy_poll(px))
			continue;
		px_sleep(px);
	}
	px_self = NULL;
}

int px_init(struct px *px, const struct px_config *cfg, char *err, size_t errlen)
{
	px->cfg = *cfg;
	px->wake_op.complete = wake_complete;
	if (cfg->setup_start >= PX_SETUP_RUNGS) {
		snprintf(err, errlen, "setup_start %u is past the last rung (%u)", cfg->setup_start,
			 PX_SETUP_RUNGS - 1);
		return -EINVAL;
	}
	int ret = ring_setup(px, cfg->entries, cfg->setup_start, err, errlen);
	if (ret < 0)
		return ret;
	wake_arm(px);
	return 0;
}

void px_destroy(struct px *px)
{
	io_uring_queue_exit(&px->ring);
}
