/* bench_resp_loop: the threads of `ringkv-bench resp`, each an io_uring event
 * loop over its share of the connections, and the main thread's progress
 * line.
 *
 * A connection has at most one send and one receive in flight.  Units are
 * written into one of its two output buffers while the other is being sent,
 * so a send in flight never sees its buffer move; after a batch of
 * completions every connection with new units gets one send with all of
 * them.  Each unit in flight has a slot (its start time and how many replies
 * it waits for) in a ring of --pipeline slots; the replies arrive in order,
 * so the oldest slot is the one they answer.
 *
 * Start times.  Without --rate a unit starts when it is written (on the
 * completion that made room for it).  With --rate R a thread with n of the
 * --conns connections has a fixed schedule of slots, one every conns / (R n)
 * seconds from the phase's start, and its connection k owns slots k, k + n,
 * k + 2n, ...: each connection runs at R / conns, staggered.  A unit starts
 * at its slot's time even when its connection's pipeline was full then and
 * the unit went out later: that wait is the server's doing and counts in the
 * latency (no coordinated omission).
 *
 * Phases: connect, then the fill (if asked) and the run, each started by all
 * threads and the main thread together at a barrier so that the figures
 * cover the same interval.  Any failure — a refused connect, a server that
 * closes, a malformed reply, 10 s without a reply — prints which connection
 * and what to do, and exits the process with status 1.
 */
#include <errno.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define IN_SIZE       16384          /* a connection's receive buffer; grown for a longer line */
#define STALL_NS      10000000000ull /* no reply for this long with units in flight: fail */
#define WAIT_MAX_NS   200000000ull   /* longest wait, so stalls and deadlines are noticed */
#define FILL_PIPELINE 32             /* the fill's pipeline depth at least */
#define SLOT_SLACK_NS 20000          /* --rate: shortest sleep until the next slot */
#define RING_MAX      4096

enum { OP_CONNECT, OP_SEND, OP_RECV };

struct slot {
	uint64_t t;     /* the unit's start (or scheduled) time, ns */
	uint32_t ncmds; /* replies it waits for */
};

struct worker;

struct conn {
	struct worker *w;
	int fd;
	unsigned id; /* over all threads, from 0, for messages */
	char *out[2];
	size_t out_len[2], out_cap[2];
	unsigned fill; /* units are written into out[fill]; out[fill ^ 1] is being sent */
	size_t sent;   /* bytes of out[fill ^ 1] the kernel has taken */
	bool sending, queued;
	char *in;
	size_t in_len, in_cap;
	struct rb_reply rp;
	struct slot *slots;               /* a ring of the worker's cap */
	unsigned head, inflight, replies; /* replies: those of the oldest unit read */
	uint64_t next_slot;               /* --rate: this connection's next slot */
};

/* What one phase runs; the same for every thread. */
struct phase {
	const char *name; /* "fill " or "" in the progress line */
	const struct rb_mix *mix;
	const struct rb_dist *dist;
	uint64_t units; /* over all threads; 0: until the deadline */
	uint64_t duration_ns;
	double rate;
	unsigned pipeline;
};

struct run {
	const struct rb_cfg *cfg;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	struct worker *workers;
	struct phase phases[2];
	unsigned nphases;
	unsigned cap; /* slots per connection: the deepest pipeline of the phases */
	pthread_barrier_t barrier;
	pthread_mutex_t mu; /* guards finished, first_error */
	pthread_cond_t cv;
	unsigned finished; /* threads done with the current phase */
	uint64_t start_ns; /* the current phase's start, set before the barrier */
	char first_error[160];
};

struct worker {
	struct run *run;
	unsigned idx, nconns, conn_base;
	pthread_t tid;
	struct io_uring ring;
	struct conn *conns;
	bool fixed_files;    /* the sockets are registered with the ring */
	struct conn **flush; /* connections with units to send */
	unsigned nflush;
	struct rb_gen gen;
	const struct phase *ph;
	uint64_t quota, issued, inflight, done_local, errors;
	bool error_noted; /* this phase's first error reply went to run->first_error */
	uint64_t start_ns, deadline_ns, end_ns, last_reply_ns;
	double slot_ns;        /* --rate: time between the thread's slots; 0 without */
	uint64_t slot;         /* --rate: the next slot not yet handed to its connection */
	_Atomic uint64_t done; /* units done, read by the progress line */
	struct rb_hist hist;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static _Noreturn void out_of_memory(void)
{
	fprintf(stderr, "ringkv-bench resp: out of memory; use fewer --conns or a smaller "
	                "--pipeline or --value-size\n");
	exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (p == NULL)
		out_of_memory();
	return p;
}

static void *xrealloc(void *p, size_t size)
{
	p = realloc(p, size);
	if (p == NULL)
		out_of_memory();
	return p;
}

/* Ends the progress line on a terminal (where it ends with '\r') before a
 * message. */
static const char *nl(void)
{
	return isatty(STDERR_FILENO) ? "\n" : "";
}

/* Replies still owed on c: every command of the units in flight, less those
 * of the oldest already read. */
static uint64_t missing_replies(const struct conn *c)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < c->inflight; i++)
		n += c->slots[(c->head + i) % c->w->run->cap].ncmds;
	return n - c->replies;
}

static _Noreturn __attribute__((format(printf, 2, 3))) void fail(const struct conn *c,
                                                                 const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	flockfile(stderr);
	fprintf(stderr, "%sringkv-bench resp: connection %u of %u (thread %u): ", nl(), c->id + 1,
	        c->w->run->cfg->conns, c->w->idx);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	va_end(ap);
	exit(1);
}

static _Noreturn void fail_thread(const struct worker *w, const char *what, int err)
{
	fprintf(stderr,
	        "%sringkv-bench resp: thread %u: %s: %s; check `ulimit -n` and that "
	        "io_uring is allowed (sysctl kernel.io_uring_disabled, seccomp)\n",
	        nl(), w->idx, what, strerror(err));
	exit(1);
}

static struct io_uring_sqe *get_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	if (sqe == NULL) { /* the queue is full: hand it to the kernel, then retry */
		int ret = io_uring_submit(&w->ring);
		if (ret < 0)
			fail_thread(w, "io_uring_submit", -ret);
		sqe = io_uring_get_sqe(&w->ring);
		if (sqe == NULL)
			fail_thread(w, "io_uring_get_sqe", EBUSY);
	}
	return sqe;
}

/* Tags the operation with its connection, and names the socket by its index
 * in the ring's registered files when it has them (saving the kernel a file
 * lookup per operation). */
static void set_tag(struct io_uring_sqe *sqe, struct conn *c, unsigned op)
{
	io_uring_sqe_set_data(sqe, (void *)((uintptr_t)c | op));
	if (c->w->fixed_files) {
		sqe->fd = (int)(c - c->w->conns);
		sqe->flags |= IOSQE_FIXED_FILE;
	}
}

static void recv_start(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(w);
	io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
	/* the replies to what was just sent are not there yet: wait for them
	 * without first trying a receive that would find nothing */
	sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
	set_tag(sqe, c, OP_RECV);
}

static void send_start(struct worker *w, struct conn *c)
{
	unsigned s = c->fill ^ 1;
	struct io_uring_sqe *sqe = get_sqe(w);
	io_uring_prep_send(sqe, c->fd, c->out[s] + c->sent, c->out_len[s] - c->sent, MSG_NOSIGNAL);
	set_tag(sqe, c, OP_SEND);
	c->sending = true;
}

/* Swaps the buffers and sends what was written, if nothing is being sent. */
static void send_written(struct worker *w, struct conn *c)
{
	if (c->sending || c->out_len[c->fill] == 0)
		return;
	c->fill ^= 1;
	c->out_len[c->fill] = 0;
	c->sent = 0;
	send_start(w, c);
}

static void flush_all(struct worker *w)
{
	for (unsigned i = 0; i < w->nflush; i++) {
		w->flush[i]->queued = false;
		send_written(w, w->flush[i]);
	}
	w->nflush = 0;
}

/* ---- issuing units ------------------------------------------------------ */

static uint64_t slot_time(const struct worker *w, uint64_t slot)
{
	return w->start_ns + (uint64_t)((double)slot * w->slot_ns);
}

static void issue(struct worker *w, struct conn *c, uint64_t start)
{
	const struct rb_unit *u = rb_mix_pick(w->ph->mix, &w->gen);
	unsigned f = c->fill;
	if (c->out_len[f] + u->max_len > c->out_cap[f]) {
		size_t cap = c->out_cap[f] ? c->out_cap[f] : 4096;
		while (c->out_len[f] + u->max_len > cap)
			cap *= 2;
		c->out[f] = xrealloc(c->out[f], cap);
		c->out_cap[f] = cap;
	}
	char *end = rb_unit_encode(u, &w->gen, c->out[f] + c->out_len[f]);
	c->out_len[f] = (size_t)(end - c->out[f]);
	struct slot *s = &c->slots[(c->head + c->inflight) % w->run->cap];
	s->t = start;
	s->ncmds = u->ncmds;
	c->inflight++;
	w->issued++;
	w->inflight++;
	if (!c->queued) {
		c->queued = true;
		w->flush[w->nflush++] = c;
	}
}

/* Fills c's pipeline with the units due by now. */
static void top_up(struct worker *w, struct conn *c, uint64_t now)
{
	while (c->inflight < w->ph->pipeline) {
		uint64_t start = w->slot_ns > 0 ? slot_time(w, c->next_slot) : now;
		if (start > now || (w->ph->units ? w->issued >= w->quota : start >= w->deadline_ns))
			return;
		c->next_slot += w->nconns;
		issue(w, c, start);
	}
}

/* Whether units remain to issue: the quota, or slots before the deadline. */
static bool schedule_open(const struct worker *w)
{
	if (w->ph->units)
		return w->issued < w->quota;
	return w->slot_ns > 0 ? slot_time(w, w->slot) < w->deadline_ns : true;
}

/* --rate: hands each slot that came due to its connection. */
static void run_schedule(struct worker *w, uint64_t now)
{
	while (slot_time(w, w->slot) <= now) {
		top_up(w, &w->conns[w->slot % w->nconns], now);
		w->slot++;
		if (!schedule_open(w))
			return;
	}
}

/* ---- completions -------------------------------------------------------- */

static void note_error(struct worker *w, struct conn *c)
{
	struct run *r = w->run;
	if (w->error_noted) {
		c->rp.error = NULL;
		return;
	}
	w->error_noted = true;
	pthread_mutex_lock(&r->mu);
	if (r->first_error[0] == '\0') {
		snprintf(r->first_error, sizeof(r->first_error), "%.*s",
		         (int)(c->rp.error_len < 150 ? c->rp.error_len : 150), c->rp.error);
		fprintf(stderr, "%sringkv-bench resp: first error reply (connection %u): %s\n",
		        nl(), c->id + 1, r->first_error);
	}
	pthread_mutex_unlock(&r->mu);
	c->rp.error = NULL;
}

static void unit_done(struct worker *w, struct conn *c, uint64_t now)
{
	uint64_t start = c->slots[c->head].t;
	rb_hist_add(&w->hist, now > start ? now - start : 0);
	c->head = (c->head + 1) % w->run->cap;
	c->inflight--;
	c->replies = 0;
	w->inflight--;
	w->done_local++;
}

/* Up to size - 1 bytes of p[0..n) for a message, '.' for what is not text. */
static void printable(char *out, size_t size, const char *p, size_t n)
{
	size_t i = 0;
	for (; i < n && i + 1 < size; i++)
		out[i] = p[i] >= ' ' && p[i] < 127 ? p[i] : '.';
	out[i] = '\0';
}

/* Reads the replies that arrived, completing the units they end. */
static void parse_replies(struct worker *w, struct conn *c, uint64_t now)
{
	size_t off = 0;
	for (;;) {
		size_t used;
		enum rb_reply_status st =
		    rb_reply_next(&c->rp, c->in + off, c->in_len - off, &used);
		if (c->rp.error != NULL)
			note_error(w, c);
		if (st == RB_REPLY_MALFORMED) {
			char shown[41];
			printable(shown, sizeof(shown), c->in + off + used, c->in_len - off - used);
			fail(c, "a reply that is not RESP: \"%s\"; is --host/--port a RESP server?",
			     shown);
		}
		off += used;
		if (st == RB_REPLY_MORE)
			break;
		if (c->inflight == 0)
			fail(c, "a reply to no request (a push message?); this server speaks a "
			        "protocol ringkv-bench resp does not follow");
		if (++c->replies == c->slots[c->head].ncmds)
			unit_done(w, c, now);
	}
	memmove(c->in, c->in + off, c->in_len - off);
	c->in_len -= off;
	if (c->in_len == c->in_cap) { /* a line longer than the buffer */
		c->in_cap *= 2;
		c->in = xrealloc(c->in, c->in_cap);
	}
}

static void on_recv(struct worker *w, struct conn *c, int res)
{
	if (res == -EAGAIN || res == -EINTR || res == -ENOBUFS) {
		recv_start(w, c);
		return;
	}
	if (res == 0)
		fail(c,
		     "the server closed the connection with %llu replies missing; see the "
		     "server's log (a crash, maxclients, a timeout?)",
		     (unsigned long long)missing_replies(c));
	if (res < 0)
		fail(c, "receive: %s, with %llu replies missing; see the server's log",
		     strerror(-res), (unsigned long long)missing_replies(c));
	uint64_t now = now_ns();
	c->in_len += (size_t)res;
	parse_replies(w, c, now);
	w->last_reply_ns = now;
	atomic_store_explicit(&w->done, w->done_local, memory_order_relaxed);
	top_up(w, c, now);
	recv_start(w, c);
}

static void on_send(struct worker *w, struct conn *c, int res)
{
	if (res == -EAGAIN || res == -EINTR) {
		send_start(w, c);
		return;
	}
	if (res <= 0)
		fail(c, "send: %s, with %llu replies missing; see the server's log",
		     strerror(res == 0 ? EPIPE : -res), (unsigned long long)missing_replies(c));
	c->sent += (size_t)res;
	unsigned s = c->fill ^ 1;
	if (c->sent < c->out_len[s]) { /* a short send: the rest */
		send_start(w, c);
		return;
	}
	c->sending = false;
	send_written(w, c);
}

static void reap(struct worker *w)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&w->ring, head, cqe)
	{
		uintptr_t tag = (uintptr_t)io_uring_cqe_get_data(cqe);
		struct conn *c = (struct conn *)(tag & ~(uintptr_t)3);
		if ((tag & 3) == OP_RECV)
			on_recv(w, c, cqe->res);
		else if ((tag & 3) == OP_SEND)
			on_send(w, c, cqe->res);
		n++;
	}
	io_uring_cq_advance(&w->ring, n);
}

/* Submits what is queued and waits for a completion, at most until the next
 * slot or the deadline. */
static void wait_events(struct worker *w, uint64_t now)
{
	uint64_t until = now + WAIT_MAX_NS;
	if (w->slot_ns > 0 && schedule_open(w) && slot_time(w, w->slot) < until) {
		/* A wait costs a few µs (more in a VM); waking for each of slots a
		 * few µs apart would saturate the thread.  Units due within the
		 * slack go out together, a little late, which their latency shows. */
		until = slot_time(w, w->slot);
		if (until > now && until < now + SLOT_SLACK_NS)
			until = now + SLOT_SLACK_NS;
	}
	if (w->ph->units == 0 && now < w->deadline_ns && w->deadline_ns < until)
		until = w->deadline_ns;
	int ret;
	if (until <= now) {
		ret = io_uring_submit(&w->ring);
	} else {
		struct __kernel_timespec ts = {.tv_sec = (long long)((until - now) / 1000000000ull),
		                               .tv_nsec =
		                                   (long long)((until - now) % 1000000000ull)};
		struct io_uring_cqe *cqe;
		ret = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
	}
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN)
		fail_thread(w, "io_uring_enter", -ret);
}

/* ---- a phase ------------------------------------------------------------ */

static uint64_t share(uint64_t total, unsigned part, unsigned whole)
{
	return (uint64_t)((unsigned __int128)total * part / whole);
}

static void phase_start(struct worker *w, const struct phase *ph)
{
	const struct rb_cfg *cfg = w->run->cfg;
	w->ph = ph;
	w->gen.dist = ph->dist;
	w->gen.seq = share(cfg->keyspace, w->conn_base, cfg->conns) % cfg->keyspace;
	w->quota = share(ph->units, w->conn_base + w->nconns, cfg->conns) -
	           share(ph->units, w->conn_base, cfg->conns);
	w->issued = w->done_local = 0;
	w->error_noted = false;
	atomic_store_explicit(&w->done, 0, memory_order_relaxed);
	rb_hist_reset(&w->hist);
	w->start_ns = w->run->start_ns;
	w->deadline_ns = ph->units ? UINT64_MAX : w->start_ns + ph->duration_ns;
	/* the thread runs at rate * nconns / conns: a slot every conns / rate / nconns s */
	w->slot_ns = ph->rate > 0 ? 1e9 * cfg->conns / ph->rate / w->nconns : 0;
	w->slot = 0;
	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		c->head = c->replies = 0;
		c->next_slot = i;
		c->rp.errors = 0;
	}
}

static bool phase_over(const struct worker *w, uint64_t now)
{
	if (w->inflight > 0)
		return false;
	return w->ph->units ? w->issued >= w->quota : now >= w->deadline_ns;
}

static void run_phase(struct worker *w, const struct phase *ph)
{
	phase_start(w, ph);
	uint64_t now = now_ns();
	w->last_reply_ns = now;
	if (w->slot_ns > 0)
		run_schedule(w, now);
	else
		for (unsigned i = 0; i < w->nconns; i++)
			top_up(w, &w->conns[i], now);
	flush_all(w);
	while (!phase_over(w, now)) {
		wait_events(w, now);
		reap(w);
		now = now_ns();
		if (w->slot_ns > 0)
			run_schedule(w, now);
		flush_all(w);
		if (w->inflight > 0 && now - w->last_reply_ns > STALL_NS) {
			fprintf(stderr,
			        "%sringkv-bench resp: thread %u: no reply on any of its %u "
			        "connections for 10 s with %llu units in flight; is the server "
			        "stuck or stopped (SIGSTOP, a debugger)?\n",
			        nl(), w->idx, w->nconns, (unsigned long long)w->inflight);
			exit(1);
		}
	}
	w->end_ns = now;
	w->errors = 0;
	for (unsigned i = 0; i < w->nconns; i++)
		w->errors += w->conns[i].rp.errors;
	atomic_store_explicit(&w->done, w->done_local, memory_order_relaxed);
}

/* ---- a thread ----------------------------------------------------------- */

static void ring_init(struct worker *w)
{
	unsigned entries = 64;
	while (entries < 2 * w->nconns + 16 && entries < RING_MAX)
		entries *= 2;
	struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
	                                     IORING_SETUP_DEFER_TASKRUN,
	                            .cq_entries = 4 * entries};
	int ret = io_uring_queue_init_params(entries, &w->ring, &p);
	if (ret == -EINVAL) { /* a kernel before 6.1: without the task-run flags */
		p = (struct io_uring_params){.flags = IORING_SETUP_CQSIZE,
		                             .cq_entries = 4 * entries};
		ret = io_uring_queue_init_params(entries, &w->ring, &p);
	}
	if (ret < 0)
		fail_thread(w, "io_uring_queue_init", -ret);
}

static void conn_init(struct worker *w, struct conn *c, unsigned i)
{
	const struct run *r = w->run;
	c->w = w;
	c->id = w->conn_base + i;
	c->in_cap = IN_SIZE;
	c->in = xcalloc(1, c->in_cap);
	c->slots = xcalloc(r->cap, sizeof(*c->slots));
	c->fd = socket(r->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		fail(c, "socket: %s; raise `ulimit -n` or use fewer --conns", strerror(errno));
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void connect_all(struct worker *w)
{
	const struct run *r = w->run;
	int *fds = xcalloc(w->nconns, sizeof(*fds));
	for (unsigned i = 0; i < w->nconns; i++) {
		conn_init(w, &w->conns[i], i);
		fds[i] = w->conns[i].fd;
	}
	w->fixed_files = io_uring_register_files(&w->ring, fds, w->nconns) == 0;
	free(fds);
	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		struct io_uring_sqe *sqe = get_sqe(w);
		io_uring_prep_connect(sqe, c->fd, (const struct sockaddr *)&r->addr, r->addrlen);
		set_tag(sqe, c, OP_CONNECT);
	}
	for (unsigned left = w->nconns; left > 0;) {
		struct io_uring_cqe *cqe;
		int ret = io_uring_submit_and_wait(&w->ring, 1);
		if (ret < 0 && ret != -EINTR)
			fail_thread(w, "io_uring_enter", -ret);
		while (io_uring_peek_cqe(&w->ring, &cqe) == 0) {
			struct conn *c =
			    (struct conn *)((uintptr_t)io_uring_cqe_get_data(cqe) & ~3ul);
			if (cqe->res < 0)
				fail(c,
				     "connect to %s:%u: %s; is the server running there "
				     "(--host, --port)?",
				     r->cfg->host, r->cfg->port, strerror(-cqe->res));
			io_uring_cqe_seen(&w->ring, cqe);
			left--;
		}
	}
	for (unsigned i = 0; i < w->nconns; i++)
		recv_start(w, &w->conns[i]);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	w->conns = xcalloc(w->nconns, sizeof(*w->conns));
	w->flush = xcalloc(w->nconns, sizeof(*w->flush));
	ring_init(w);
	connect_all(w);
	for (unsigned p = 0; p < r->nphases; p++) {
		pthread_barrier_wait(&r->barrier);
		run_phase(w, &r->phases[p]);
		pthread_mutex_lock(&r->mu);
		r->finished++;
		pthread_cond_signal(&r->cv);
		pthread_mutex_unlock(&r->mu);
	}
	io_uring_queue_exit(&w->ring);
	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];
		close(c->fd);
		free(c->out[0]);
		free(c->out[1]);
		free(c->in);
		free(c->slots);
	}
	free(w->conns);
	free(w->flush);
	return NULL;
}

/* ---- the main thread ---------------------------------------------------- */

static uint64_t done_now(const struct run *r)
{
	uint64_t done = 0;
	for (unsigned t = 0; t < r->cfg->threads; t++)
		done += atomic_load_explicit(&r->workers[t].done, memory_order_relaxed);
	return done;
}

static void progress_line(const struct run *r, const struct phase *ph, uint64_t now,
                          uint64_t *last_done, uint64_t *last_ns)
{
	uint64_t done = done_now(r);
	double rate = (double)(done - *last_done) * 1e9 / (double)(now - *last_ns);
	char end = isatty(STDERR_FILENO) ? '\r' : '\n';
	if (ph->units)
		fprintf(stderr, "ringkv-bench resp: %s%llu of %llu units, %.0f units/s%c", ph->name,
		        (unsigned long long)done, (unsigned long long)ph->units, rate, end);
	else
		fprintf(stderr, "ringkv-bench resp: %s%llu units, %.0f of %.0f s, %.0f units/s%c",
		        ph->name, (unsigned long long)done, (double)(now - r->start_ns) / 1e9,
		        (double)ph->duration_ns / 1e9, rate, end);
	*last_done = done;
	*last_ns = now;
}

/* Starts the phase on every thread, prints progress until they are done,
 * then gathers its figures. */
static void main_phase(struct run *r, const struct phase *ph, struct rb_result *out)
{
	pthread_mutex_lock(&r->mu);
	r->finished = 0;
	r->first_error[0] = '\0';
	pthread_mutex_unlock(&r->mu);
	r->start_ns = now_ns();
	pthread_barrier_wait(&r->barrier);
	uint64_t last_done = 0, last_ns = r->start_ns, next = r->start_ns + 1000000000ull;
	bool printed = false;
	pthread_mutex_lock(&r->mu);
	while (r->finished < r->cfg->threads) {
		struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull),
		                      .tv_nsec = (long)(next % 1000000000ull)};
		pthread_cond_timedwait(&r->cv, &r->mu, &ts);
		uint64_t now = now_ns();
		if (now >= next && r->finished < r->cfg->threads && r->cfg->progress) {
			progress_line(r, ph, now, &last_done, &last_ns);
			printed = true;
			next = now + 1000000000ull;
		}
	}
	snprintf(out->first_error, sizeof(out->first_error), "%s", r->first_error);
	pthread_mutex_unlock(&r->mu);
	if (printed && isatty(STDERR_FILENO))
		fputc('\n', stderr);
	out->hist = xcalloc(1, sizeof(*out->hist));
	rb_hist_reset(out->hist);
	uint64_t end = r->start_ns;
	for (unsigned t = 0; t < r->cfg->threads; t++) {
		const struct worker *w = &r->workers[t];
		out->units += w->done_local;
		out->errors += w->errors;
		rb_hist_merge(out->hist, &w->hist);
		end = w->end_ns > end ? w->end_ns : end;
	}
	out->seconds = (double)(end - r->start_ns) / 1e9;
}

static int resolve(struct run *r)
{
	char port[16];
	snprintf(port, sizeof(port), "%u", r->cfg->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	int ret = getaddrinfo(r->cfg->host, port, &hints, &ai);
	if (ret != 0) {
		fprintf(stderr, "ringkv-bench resp: --host %s: %s; give a host name or address\n",
		        r->cfg->host, gai_strerror(ret));
		return -1;
	}
	memcpy(&r->addr, ai->ai_addr, ai->ai_addrlen);
	r->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static void phases_init(struct run *r, const struct rb_mix *fill_mix, const struct rb_dist *seq)
{
	const struct rb_cfg *cfg = r->cfg;
	if (cfg->fill) {
		unsigned p = cfg->pipeline > FILL_PIPELINE ? cfg->pipeline : FILL_PIPELINE;
		r->phases[r->nphases++] = (struct phase){.name = "fill ",
		                                         .mix = fill_mix,
		                                         .dist = seq,
		                                         .units = cfg->keyspace,
		                                         .pipeline = p};
	}
	if (cfg->mix.n > 0)
		r->phases[r->nphases++] = (struct phase){.name = "",
		                                         .mix = &cfg->mix,
		                                         .dist = &cfg->dist,
		                                         .units = cfg->units,
		                                         .duration_ns = cfg->duration_ns,
		                                         .rate = cfg->rate,
		                                         .pipeline = cfg->pipeline};
	for (unsigned p = 0; p < r->nphases; p++)
		if (r->phases[p].pipeline > r->cap)
			r->cap = r->phases[p].pipeline;
}

static void workers_start(struct run *r, const char *value)
{
	const struct rb_cfg *cfg = r->cfg;
	r->workers = xcalloc(cfg->threads, sizeof(*r->workers));
	for (unsigned t = 0, base = 0; t < cfg->threads; t++) {
		struct worker *w = &r->workers[t];
		w->run = r;
		w->idx = t;
		w->conn_base = base;
		w->nconns = cfg->conns / cfg->threads + (t < cfg->conns % cfg->threads);
		base += w->nconns;
		rb_rng_seed(&w->gen.rng, cfg->seed * 1000003 + t);
		w->gen.vmin = cfg->vmin;
		w->gen.vmax = cfg->vmax;
		w->gen.value = value;
		int ret = pthread_create(&w->tid, NULL, worker_main, w);
		if (ret != 0) {
			fprintf(stderr,
			        "ringkv-bench resp: pthread_create: %s; use fewer --threads\n",
			        strerror(ret));
			exit(1);
		}
	}
}

int rb_run(const struct rb_cfg *cfg, struct rb_result *fill, struct rb_result *run)
{
	struct run r = {.cfg = cfg};
	struct rb_mix fill_mix = {0};
	struct rb_dist seq;
	const char *why;
	signal(SIGPIPE, SIG_IGN);
	if (resolve(&r) < 0)
		return 1;
	if (!rb_mix_add(&fill_mix, "SET key:__key__ __value__", 1, cfg->vmax, &why) ||
	    !rb_dist_init(&seq, "seq", cfg->keyspace, &why)) {
		fprintf(stderr, "ringkv-bench resp: the fill: %s\n", why);
		return 1;
	}
	phases_init(&r, &fill_mix, &seq);
	char *value = xcalloc(1, (size_t)cfg->vmax + 1);
	memset(value, 'x', cfg->vmax); /* as redis-benchmark's values */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r.cv, &ca);
	pthread_mutex_init(&r.mu, NULL);
	pthread_barrier_init(&r.barrier, NULL, cfg->threads + 1);
	workers_start(&r, value);
	for (unsigned p = 0; p < r.nphases; p++)
		main_phase(&r, &r.phases[p], cfg->fill && p == 0 ? fill : run);
	for (unsigned t = 0; t < cfg->threads; t++)
		pthread_join(r.workers[t].tid, NULL);
	pthread_barrier_destroy(&r.barrier);
	pthread_cond_destroy(&r.cv);
	pthread_mutex_destroy(&r.mu);
	free(r.workers);
	free(value);
	rb_mix_free(&fill_mix);
	return 0;
}
