/* conn: see conn.h for the contract.  How it works:
 *
 * Per proactor, one `struct net_px` (found through a thread-local): the
 * listeners, the provided buffer ring, the list of open connections, a free
 * list of small request blocks, the "dirty" list the end-of-iteration hook
 * walks, and one timer (idle timeouts, accept back-off, the shutdown deadline).
 *
 * Receiving.  With a buffer ring, each connection keeps one multishot recv
 * armed; a CQE names the provided buffer holding the bytes.  Commands are
 * parsed straight out of that buffer; only the tail of a partial command is
 * copied into the connection's own buffer, and the provided buffer goes back
 * to the ring before the CQE handler returns.  Once the connection's own
 * buffer holds bytes, new bytes are appended to it and parsed there.  Without
 * a ring (uring.buf_ring_entries = 0, or a kernel without them), a one-shot
 * recv reads into the connection's own buffer.  A multishot recv that ends
 * (ENOBUFS, or a CQE without IORING_CQE_F_MORE) is re-armed.
 *
 * Requests.  Each command becomes one allocation (struct req_impl: the
 * conn_req, the argv arrays and the argument bytes); blocks up to
 * NET_REQ_SMALL bytes are recycled through a per-proactor free list, so a
 * pipelined GET/SET costs no malloc.  The queue keeps request order; a done
 * request at the head has its reply appended to the output buffer at once.
 *
 * Sending.  out[fill] collects replies; out[fill ^ 1] is what the kernel is
 * sending (the kernel reads it, so it is never appended to).  The hook issues
 * one IORING_OP_SEND per connection with everything collected; a short send is
 * continued from where it stopped.  A large reply (>= NET_STEAL_MIN) moved
 * into an empty output buffer is handed over, not copied.
 *
 * Connection states: OPEN -> DRAINING (QUIT, EOF, protocol error, shutdown:
 * nothing more is read; replies of queued requests still leave) -> CLOSING
 * (cancel the recv, and the send if the close drops output; wait for their
 * last CQEs) -> CLOSED (socket closed; unfinished requests are orphans, freed
 * by conn_req_done) -> freed when no request is unfinished.  A hard close
 * (error, output limit, idle timeout) goes from OPEN straight to CLOSING.
 * Freeing happens only from CQE handlers, the hook or the timer, never inside
 * a call from the daemon, so the daemon may touch c after any conn_* call.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "service/runtime/clock.h"
#include "service/runtime/logging.h"
#include "service/runtime/pool.h"

#define NET_BGID             0    /* buffer group of the provided buffer ring (one per ring) */
#define NET_MAX_LISTENERS    16   /* addresses in server.bind */
#define NET_TICK_MS          100  /* period of the per-proactor timer, when it is needed */
#define NET_TIMEOUT_SCAN_MS  1000 /* idle clients are looked for this often */
#define NET_ACCEPT_RETRY_MS  100  /* accepting pauses this long after EMFILE and the like */
#define NET_REQ_SMALL        512  /* request blocks up to this size are recycled */
#define NET_REQ_FREE_MAX     1024 /* small blocks kept per proactor */
#define NET_BUF_KEEP         (64 * 1024) /* input/output buffers above this are freed once empty */
#define NET_STEAL_MIN        4096        /* replies this big are handed to the output, not copied */
#define NET_SEND_MAX         (1U << 30)  /* bytes per send SQE (its length is 32 bits) */
#define NET_DEFAULT_PIPELINE 1024        /* max_pipeline when the config says 0 */
#define NET_MAX_BUF_RING     32768       /* the kernel's limit on a buffer ring's entries */

static const char net_err_max_clients[] = "-ERR max number of clients reached\r\n";

/* ---- per-proactor state ------------------------------------------------ */

enum conn_state {
	CONN_OPEN,     /* reading and running commands */
	CONN_DRAINING, /* not reading; closes once every queued reply is sent */
	CONN_CLOSING,  /* waiting for the recv/send in flight to end, then close(2) */
	CONN_CLOSED,   /* socket closed; freed when no request is unfinished */
};

/* Counters of one proactor: written by it alone, read by anyone. */
struct net_counters {
	atomic_ulong connections_received;
	atomic_ulong rejected_connections;
	atomic_ulong commands;
	atomic_ulong net_input_bytes;
	atomic_ulong net_output_bytes;
	atomic_ulong protocol_errors;
	atomic_ulong output_limit_disconnects;
	atomic_ulong timeouts;
};

struct net_px;

struct net_listener {
	struct px_op op;    /* the (multishot) accept */
	struct net_px *np;  /* owner */
	int fd;             /* listening socket; -1 once closed */
	bool armed;         /* an accept is in flight until its CQE without F_MORE */
	bool cancel_sent;   /* net_stop_accepting cancelled it */
	bool multishot;     /* false after the kernel refused multishot accept */
	bool emfile_logged; /* the fd-exhaustion warning was given for this episode */
	uint64_t retry_ms;  /* monotonic ms to arm again after a back-off; 0 = none */
	char name[64];      /* "127.0.0.1:6379", "[::1]:6379" */
};

/* One command's allocation: the public request, then argv[argc],
 * argv_len[argc] and the argument bytes (each followed by a NUL). */
struct req_impl {
	struct conn_req req;
	size_t size;                /* bytes allocated; NET_REQ_SMALL = recyclable */
	struct req_impl *free_next; /* link in net_px.req_free */
} __attribute__((aligned(16)));

struct conn_private {
	struct conn *c;    /* back pointer */
	struct net_px *np; /* the proactor's net state */
	enum conn_state state;
	struct resp_parser parser;
	uint8_t *in; /* own input bytes (partial command, or plain recv target) */
	size_t in_len, in_cap;
	struct px_op recv_op;
	bool recv_armed; /* a recv is in flight until its CQE without F_MORE */
	bool recv_cancel_sent;
	struct px_op send_op;
	bool send_armed;
	bool send_cancel_sent;
	struct resp_buf out[2]; /* out[fill] collects replies; out[fill ^ 1] is being sent */
	unsigned fill;
	size_t sent;                                /* bytes of out[fill ^ 1] already sent */
	struct conn_req *head, *tail;               /* request queue (OPEN/DRAINING only) */
	struct conn_private *open_prev, *open_next; /* net_px.open: not yet CLOSED */
	struct conn_private *dirty_next;            /* net_px.dirty */
	bool dirty;                                 /* on the dirty list */
	unsigned busy;       /* input being processed: no close(2), no free */
	bool paused;         /* reading stopped for backpressure */
	uint64_t last_io_ms; /* monotonic ms of the last byte received or sent */
};

struct conn_full {
	struct conn pub;
	struct conn_private priv;
};

struct net_px {
	struct px *px;
	struct net_config cfg; /* cfg.bind points at bind */
	char *bind;            /* malloc'd copy of the configured addresses */
	uint16_t port;         /* the port the listeners got */
	struct net_listener listeners[NET_MAX_LISTENERS];
	unsigned n_listeners;
	bool accepting;            /* false after net_stop_accepting */
	bool stopping;             /* net_close_all ran; holds the proactor */
	uint64_t stop_deadline_ms; /* monotonic: unsent replies are dropped after it */
	uint64_t next_timeout_scan_ms;

	struct io_uring_buf_ring *br; /* provided buffers; NULL = plain recv */
	size_t br_bytes;              /* mmap'd size of br */
	uint8_t *bufs;                /* buf_entries x buf_size */
	unsigned buf_entries, buf_size;
	bool use_ring; /* recv with provided buffers (br registered and accepted) */
	bool multishot_warned;

	struct conn_private *open;  /* connections not yet CLOSED */
	unsigned n_conns;           /* allocated connections, CLOSED ones included */
	struct conn_private *dirty; /* connections with work for the hook */
	struct px_hook flush_hook;
	struct px_timer timer;
	struct req_impl *req_free; /* recycled NET_REQ_SMALL blocks */
	unsigned n_req_free;
	struct net_counters stats;
	struct net_px *all_next; /* net_all list, under net_lock */
};

static __thread struct net_px *net_self;      /* this proactor's state */
static __thread struct px_hook net_stop_hook; /* pool_on_stop: net_close_all */
static __thread bool net_stop_hook_added;

static pthread_mutex_t net_lock = PTHREAD_MUTEX_INITIALIZER; /* net_all, net_retired,
								 net_claimed */
static bool net_claimed; /* a proactor of this process listens: the addresses are ours */
static struct net_px *net_all;                               /* every live net_px */
static struct net_stats net_retired;                         /* counters of net_px that are gone */
static atomic_uint net_nclients;                             /* open connections, all proactors */
static atomic_ullong net_next_id = 1;                        /* CLIENT ID */

#define NET_STAT(np, field, n) px_stat_add(&(np)->stats.field, (n))

/* CLOCK_MONOTONIC ms (coarse). */
static uint64_t net_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Out of memory on the request path: abort with a message, as Redis does. */
static void net_oom(const char *what, size_t bytes)
{
	fprintf(stderr, "ringkv: out of memory allocating %zu bytes for %s; aborting\n", bytes,
	        what);
	abort();
}

/* "ip:port", or "[ip6]:port" as Redis writes IPv6 peers. */
static void net_format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		port = ntohs(a->sin_port);
		snprintf(buf, len, "%s:%u", ip, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		port = ntohs(a->sin6_port);
		snprintf(buf, len, "[%s]:%u", ip, port);
	} else {
		snprintf(buf, len, "?:0");
	}
}

void conn_peer_string(const struct conn *c, char *buf, size_t len)
{
	net_format_addr(&c->peer, buf, len);
}

void conn_local_string(const struct conn *c, char *buf, size_t len)
{
	net_format_addr(&c->local, buf, len);
}

/* ---- request blocks ---------------------------------------------------- */

/* A block of at least `size` bytes: recycled when small; aborts on OOM. */
static struct req_impl *req_alloc(struct net_px *np, size_t size)
{
	struct req_impl *r;
	if (size <= NET_REQ_SMALL) {
		r = np->req_free;
		if (r != NULL) {
			np->req_free = r->free_next;
			np->n_req_free--;
			return r;
		}
		size = NET_REQ_SMALL;
	}
	r = aligned_alloc(16, (size + 15) & ~(size_t)15);
	if (r == NULL)
		net_oom("a request", size);
	r->size = size;
	return r;
}

/* Frees req and its reply (small blocks go back to the free list). */
static void req_release(struct net_px *np, struct conn_req *req)
{
	struct req_impl *r = container_of(req, struct req_impl, req);
	resp_buf_free(&req->reply);
	if (r->size == NET_REQ_SMALL && np->n_req_free < NET_REQ_FREE_MAX) {
		r->free_next = np->req_free;
		np->req_free = r;
		np->n_req_free++;
		return;
	}
	free(r);
}

/* ---- connection plumbing ----------------------------------------------- */

static void conn_advance(struct conn *c);

/* Queues c for the end-of-iteration hook (conn_kick). */
static void conn_mark_dirty(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (pv->dirty)
		return;
	pv->dirty = true;
	pv->dirty_next = pv->np->dirty;
	pv->np->dirty = pv;
}

/* Makes room for `more` bytes after in_len in the connection's own buffer. */
static void conn_in_reserve(struct conn_private *pv, size_t more)
{
	if (pv->in_cap - pv->in_len >= more)
		return;
	size_t cap = pv->in_cap * 2;
	if (cap < pv->in_len + more)
		cap = pv->in_len + more;
	uint8_t *p = realloc(pv->in, cap);
	if (p == NULL)
		net_oom("a connection's input buffer", cap);
	pv->in = p;
	pv->in_cap = cap;
}

/* Arms the recv if c is open, not paused and has none in flight; with no
 * free SQE the hook retries. */
static void conn_recv_arm(struct conn *c)
{
	struct conn_private *pv = c->priv;
	struct net_px *np = pv->np;
	if (pv->state != CONN_OPEN || pv->paused || pv->recv_armed)
		return;
	if (!np->use_ring) { /* plain recv: room for a buffer's worth, or the rest of a bulk */
		size_t want = resp_parse_wanted(&pv->parser);
		conn_in_reserve(pv, want > np->cfg.buf_size ? want : np->cfg.buf_size);
	}
	struct io_uring_sqe *sqe = px_get_sqe(np->px, &pv->recv_op);
	if (sqe == NULL) {
		conn_mark_dirty(c);
		return;
	}
	if (np->use_ring) {
		io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = NET_BGID;
	} else {
		size_t room = pv->in_cap - pv->in_len;
		io_uring_prep_recv(sqe, c->fd, pv->in + pv->in_len,
		                   room > NET_SEND_MAX ? NET_SEND_MAX : room, 0);
	}
	pv->recv_armed = true;
	pv->recv_cancel_sent = false;
}

/* Cancels `op` if it is in flight and not yet cancelled (its last CQE arrives
 * later); with no SQE free, the end-of-iteration flush tries again. */
static void conn_cancel(struct conn *c, struct px_op *op, bool armed, bool *cancel_sent)
{
	if (!armed || *cancel_sent)
		return;
	struct io_uring_sqe *sqe = px_get_sqe(c->priv->np->px, NULL);
	if (sqe == NULL) {
		conn_mark_dirty(c);
		return;
	}
	io_uring_prep_cancel(sqe, op, 0);
	*cancel_sent = true;
}

/* Cancels the recv in flight. */
static void conn_recv_cancel(struct conn *c)
{
	struct conn_private *pv = c->priv;
	conn_cancel(c, &pv->recv_op, pv->recv_armed, &pv->recv_cancel_sent);
}

/* Cancels the send in flight (a hard close drops the output). */
static void conn_send_cancel(struct conn *c)
{
	struct conn_private *pv = c->priv;
	conn_cancel(c, &pv->send_op, pv->send_armed, &pv->send_cancel_sent);
}

/* Sends what is left of out[fill ^ 1], or else everything collected in
 * out[fill], unless a send is in flight. */
static void conn_send(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (pv->send_armed || pv->state > CONN_DRAINING)
		return;
	struct resp_buf *w = &pv->out[pv->fill ^ 1];
	if (pv->sent >= w->len) {
		if (pv->out[pv->fill].len == 0)
			return;
		pv->fill ^= 1;
		w = &pv->out[pv->fill ^ 1];
		pv->sent = 0;
	}
	struct io_uring_sqe *sqe = px_get_sqe(pv->np->px, &pv->send_op);
	if (sqe == NULL) {
		conn_mark_dirty(c);
		return;
	}
	size_t n = w->len - pv->sent;
	io_uring_prep_send(sqe, c->fd, w->data + pv->sent, n > NET_SEND_MAX ? NET_SEND_MAX : n,
	                   MSG_NOSIGNAL);
	pv->send_armed = true;
	pv->send_cancel_sent = false;
}

/* Stops or resumes reading for backpressure (conn.h). */
static void conn_update_pause(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (pv->state != CONN_OPEN)
		return;
	uint64_t limit = pv->np->cfg.output_buffer_limit;
	bool pause =
	    c->pending >= pv->np->cfg.max_pipeline || (limit != 0 && c->output_bytes > limit / 4);
	if (pause == pv->paused)
		return;
	pv->paused = pause;
	if (pause) {
		if (pv->np->use_ring)
			conn_recv_cancel(c);
	} else {
		conn_recv_arm(c);
	}
}

/* Frees the done requests of the queue and orphans the others (closing). */
static void conn_drop_queue(struct conn *c)
{
	struct conn_private *pv = c->priv;
	struct conn_req *req = pv->head;
	pv->head = pv->tail = NULL;
	while (req != NULL) {
		struct conn_req *next = req->next;
		req->next = NULL;
		if (req->done)
			req_release(pv->np, req);
		req = next;
	}
}

/* Closes at once, dropping unsent replies (errors, limits, timeouts). */
static void conn_hard_close(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (pv->state >= CONN_CLOSING)
		return;
	pv->state = CONN_CLOSING;
	c->output_bytes = 0;
	conn_drop_queue(c);
	resp_buf_reset(&pv->out[pv->fill]);
	conn_recv_cancel(c);
	conn_send_cancel(c);
	conn_mark_dirty(c); /* the hook finishes the close */
}

/* CLOSING -> CLOSED once no op is in flight: closes the socket and frees the
 * buffers; unfinished requests stay orphans. */
static void conn_close_fd(struct conn *c)
{
	struct conn_private *pv = c->priv;
	struct net_px *np = pv->np;
	close(c->fd);
	c->fd = -1;
	pv->state = CONN_CLOSED;
	conn_drop_queue(c);
	if (pv->open_prev != NULL)
		pv->open_prev->open_next = pv->open_next;
	else
		np->open = pv->open_next;
	if (pv->open_next != NULL)
		pv->open_next->open_prev = pv->open_prev;
	pv->open_prev = pv->open_next = NULL;
	atomic_fetch_sub_explicit(&net_nclients, 1, memory_order_relaxed);
	free(pv->in);
	pv->in = NULL;
	pv->in_len = pv->in_cap = 0;
	resp_buf_free(&pv->out[0]);
	resp_buf_free(&pv->out[1]);
	resp_parser_free(&pv->parser);
	c->output_bytes = 0;
}

/* Frees a CLOSED connection without unfinished requests. */
static void conn_free(struct conn *c)
{
	struct net_px *np = c->priv->np;
	if (np->cfg.on_close != NULL)
		np->cfg.on_close(c);
	free(c->name);
	np->n_conns--;
	free(container_of(c, struct conn_full, pub));
}

/* Moves c along its states as far as it can go now; may free c. */
static void conn_advance(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (pv->busy || pv->dirty)
		return;
	if (pv->state == CONN_DRAINING) {
		if (pv->head != NULL || pv->send_armed || pv->out[pv->fill].len > 0 ||
		    pv->sent < pv->out[pv->fill ^ 1].len)
			return;
		pv->state = CONN_CLOSING;
	}
	if (pv->state == CONN_CLOSING) {
		if (pv->recv_armed || pv->send_armed) {
			conn_recv_cancel(c);
			conn_send_cancel(c);
			return;
		}
		conn_close_fd(c);
	}
	if (pv->state == CONN_CLOSED && c->pending == 0)
		conn_free(c);
}

/* The hook's work for one dirty connection. */
static void conn_kick(struct conn *c)
{
	struct conn_private *pv = c->priv;
	pv->dirty = false;
	if (pv->state <= CONN_DRAINING)
		conn_send(c);
	if (pv->state == CONN_OPEN) {
		if (!pv->paused)
			conn_recv_arm(c);
		else if (pv->np->use_ring)
			conn_recv_cancel(c);
	}
	conn_advance(c);
}

/* ---- replies ----------------------------------------------------------- */

/* Appends one reply to out[fill]: a large heap reply into an empty buffer is
 * handed over instead of copied. */
static void conn_out_append(struct conn_private *pv, struct resp_buf *reply)
{
	struct resp_buf *o = &pv->out[pv->fill];
	if (o->len == 0 && reply->len >= NET_STEAL_MIN && reply->data != reply->inline_data) {
		resp_buf_free(o);
		o->data = reply->data;
		o->cap = reply->cap;
		o->len = reply->len;
		reply->data = reply->inline_data;
		reply->cap = RESP_INLINE_BYTES;
		reply->len = 0;
		return;
	}
	if (reply->len > 0)
		resp_buf_append(o, reply->data, reply->len);
}

static void conn_output_limit(struct conn *c)
{
	struct net_px *np = c->priv->np;
	char addr[64];
	conn_peer_string(c, addr, sizeof(addr));
	LOG_WARN("client id=%llu addr=%s closed for overcoming of output buffer limits"
	         " (%llu bytes pending, server.output_buffer_limit is %llu)",
	         (unsigned long long)c->id, addr, (unsigned long long)c->output_bytes,
	         (unsigned long long)np->cfg.output_buffer_limit);
	NET_STAT(np, output_limit_disconnects, 1);
	conn_hard_close(c);
}

void conn_req_done(struct conn_req *req)
{
	struct conn *c = req->conn;
	struct conn_private *pv = c->priv;
	req->done = true;
	c->pending--;
	if (pv->state >= CONN_CLOSING) { /* an orphan: nobody wants the reply */
		req_release(pv->np, req);
		if (c->pending == 0)
			conn_mark_dirty(c);
		return;
	}
	c->output_bytes += req->reply.len;
	if (req == pv->head) {
		do {
			pv->head = req->next;
			conn_out_append(pv, &req->reply);
			req_release(pv->np, req);
			req = pv->head;
		} while (req != NULL && req->done);
		if (req == NULL)
			pv->tail = NULL;
		if (!pv->send_armed)
			conn_mark_dirty(c);
	}
	uint64_t limit = pv->np->cfg.output_buffer_limit;
	if (limit != 0 && c->output_bytes > limit)
		conn_output_limit(c);
	else if (pv->paused)
		conn_update_pause(c);
}

void conn_close_after_reply(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (pv->state != CONN_OPEN)
		return;
	pv->state = CONN_DRAINING;
	conn_recv_cancel(c);
	conn_mark_dirty(c);
}

/* ---- requests ---------------------------------------------------------- */

/* Copies cmd into a request, queues it and runs the handler. */
static void conn_dispatch(struct conn *c, const struct resp_command *cmd)
{
	struct conn_private *pv = c->priv;
	struct net_px *np = pv->np;
	size_t argc = cmd->argc;
	size_t size = sizeof(struct req_impl) + argc * (sizeof(uint8_t *) + sizeof(size_t));
	for (size_t i = 0; i < argc; i++)
		size += cmd->argv_len[i] + 1;
	struct req_impl *r = req_alloc(np, size);
	struct conn_req *req = &r->req;
	req->conn = c;
	req->argc = argc;
	req->argv = (uint8_t **)(r + 1);
	req->argv_len = (size_t *)(req->argv + argc);
	uint8_t *p = (uint8_t *)(req->argv_len + argc);
	for (size_t i = 0; i < argc; i++) {
		size_t n = cmd->argv_len[i];
		req->argv[i] = p;
		req->argv_len[i] = n;
		memcpy(p, cmd->argv[i], n);
		p[n] = '\0';
		p += n + 1;
	}
	resp_buf_init(&req->reply, c->proto);
	req->done = false;
	req->next = NULL;
	req->ctx = NULL;
	if (pv->tail != NULL)
		pv->tail->next = req;
	else
		pv->head = req;
	pv->tail = req;
	c->pending++;
	NET_STAT(np, commands, 1);
	np->cfg.handler(c, req);
}

/* Queues "-ERR <msg>" after the replies of earlier requests and drains. */
static void conn_protocol_error(struct conn *c, const char *msg)
{
	struct conn_private *pv = c->priv;
	char addr[64];
	conn_peer_string(c, addr, sizeof(addr));
	LOG_DEBUG("protocol error from client id=%llu addr=%s: %s", (unsigned long long)c->id, addr,
	          msg);
	NET_STAT(pv->np, protocol_errors, 1);
	struct req_impl *r = req_alloc(pv->np, sizeof(*r));
	struct conn_req *req = &r->req;
	memset(req, 0, sizeof(*req));
	req->conn = c;
	resp_buf_init(&req->reply, c->proto);
	resp_add_errorf(&req->reply, "ERR %s", msg);
	if (pv->tail != NULL)
		pv->tail->next = req;
	else
		pv->head = req;
	pv->tail = req;
	c->pending++;
	conn_close_after_reply(c);
	conn_req_done(req);
}

/* Runs every complete command in buf[0..len); returns the bytes consumed. */
/* Reads the decimal after buf[*off] up to "\r\n" (at most 10 digits).
 * Returns false if it is not there. */
static bool peek_number(const uint8_t *buf, size_t len, size_t *off, size_t *out)
{
	size_t i = *off, v = 0;
	while (i < len && buf[i] >= '0' && buf[i] <= '9' && i - *off < 10)
		v = v * 10 + (size_t)(buf[i++] - '0');
	if (i == *off || i + 2 > len || buf[i] != '\r' || buf[i + 1] != '\n')
		return false;
	*off = i + 2;
	*out = v;
	return true;
}

/* Looks ahead for the prefetch hint: the first argument of up to NET_PREFETCH
 * complete multibulk commands of two or more arguments at the start of buf.
 * Anything else (an inline command, a partial or malformed one) ends the
 * look-ahead; the parser proper reports it.  Returns the count and sets *span
 * to the bytes those commands take. */
static size_t peek_keys(const uint8_t *buf, size_t len, const uint8_t **keys, size_t *lens,
                        size_t *span)
{
	size_t n = 0, off = 0;
	*span = 0;
	while (n < NET_PREFETCH && off < len && buf[off] == '*') {
		size_t argc, blen;
		off++;
		if (!peek_number(buf, len, &off, &argc) || argc < 2)
			break;
		size_t i = 0;
		for (; i < argc; i++) {
			if (off >= len || buf[off] != '$')
				break;
			off++;
			if (!peek_number(buf, len, &off, &blen) || len - off < blen + 2)
				break;
			if (i == 1) {
				keys[n] = buf + off;
				lens[n] = blen;
			}
			off += blen + 2;
		}
		if (i < argc)
			break;
		n++;
		*span = off;
	}
	return n;
}

/* Runs the hint for the commands ahead of buf[off] once the parser has passed
 * the ones it was last given; returns the offset the next look-ahead is due
 * at. */
static size_t conn_prefetch(struct net_px *np, const uint8_t *buf, size_t len, size_t off)
{
	const uint8_t *keys[NET_PREFETCH];
	size_t lens[NET_PREFETCH], span;
	size_t n = peek_keys(buf + off, len - off, keys, lens, &span);
	if (n > 1) /* a lone command runs at once: nothing to overlap */
		np->cfg.prefetch(keys, lens, n);
	return n > 0 ? off + span : len;
}

static size_t conn_parse(struct conn *c, const uint8_t *buf, size_t len)
{
	struct conn_private *pv = c->priv;
	size_t off = 0, hinted = pv->np->cfg.prefetch != NULL ? 0 : len;
	while (pv->state == CONN_OPEN && off < len) {
		struct resp_command cmd;
		size_t used;
		if (off >= hinted)
			hinted = conn_prefetch(pv->np, buf, len, off);
		pv->parser.unauthenticated = !c->authenticated; /* AUTH may have just run */
		enum resp_parse_status st =
		    resp_parse(&pv->parser, buf + off, len - off, &used, &cmd);
		if (st == RESP_PARSE_MORE)
			break;
		off += used;
		if (st == RESP_PARSE_DONE)
			conn_dispatch(c, &cmd);
		else if (st == RESP_PARSE_ERROR)
			conn_protocol_error(c, pv->parser.error);
	}
	return off;
}

/* Handles n received bytes at data: provided-buffer bytes (own == false) or
 * bytes already appended to the connection's own buffer (own == true). */
static void conn_input(struct conn *c, const uint8_t *data, size_t n, bool own)
{
	struct conn_private *pv = c->priv;
	pv->busy++;
	c->last_active_ms = clock_unix_ms_coarse();
	if (!own && pv->in_len == 0) {
		size_t used = conn_parse(c, data, n);
		if (used < n && pv->state == CONN_OPEN) {
			size_t want = resp_parse_wanted(&pv->parser);
			conn_in_reserve(pv, n - used + want);
			memcpy(pv->in, data + used, n - used);
			pv->in_len = n - used;
		}
	} else {
		if (!own) {
			conn_in_reserve(pv, n);
			memcpy(pv->in + pv->in_len, data, n);
			pv->in_len += n;
		}
		size_t used = conn_parse(c, pv->in, pv->in_len);
		if (pv->state != CONN_OPEN)
			used = pv->in_len;
		if (used > 0) {
			memmove(pv->in, pv->in + used, pv->in_len - used);
			pv->in_len -= used;
		}
		if (pv->in_len == 0 && pv->in_cap > NET_BUF_KEEP && pv->np->use_ring) {
			free(pv->in);
			pv->in = NULL;
			pv->in_cap = 0;
		} else if (pv->in_len > 0) {
			conn_in_reserve(pv, resp_parse_wanted(&pv->parser));
		}
	}
	pv->busy--;
	conn_update_pause(c);
}

/* ---- completions ------------------------------------------------------- */

/* Gives provided buffer `bid` back to the kernel. */
static void np_buf_return(struct net_px *np, unsigned bid)
{
	io_uring_buf_ring_add(np->br, np->bufs + (size_t)bid * np->buf_size, np->buf_size,
	                      (unsigned short)bid, io_uring_buf_ring_mask(np->buf_entries), 0);
	io_uring_buf_ring_advance(np->br, 1);
}

/* A recv CQE: bytes (in a provided buffer or in c->in), EOF, or an error;
 * re-arms a recv that ended while c still reads. */
static void conn_recv_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct conn_private *pv = container_of(op, struct conn_private, recv_op);
	struct conn *c = pv->c;
	struct net_px *np = pv->np;
	(void)px;
	if (!(flags & IORING_CQE_F_MORE))
		pv->recv_armed = false;
	if (res > 0) {
		NET_STAT(np, net_input_bytes, (unsigned long)res);
		pv->last_io_ms = net_mono_ms();
		if (flags & IORING_CQE_F_BUFFER) {
			unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
			if (pv->state == CONN_OPEN)
				conn_input(c, np->bufs + (size_t)bid * np->buf_size, (size_t)res,
				           false);
			np_buf_return(np, bid);
		} else {
			pv->in_len += (size_t)res;
			if (pv->state == CONN_OPEN)
				conn_input(c, pv->in + pv->in_len - (size_t)res, (size_t)res, true);
		}
	} else if (res == 0) {
		conn_close_after_reply(c); /* EOF: replies still go out */
	} else if (res == -EINVAL && np->use_ring && pv->state == CONN_OPEN) {
		if (!np->multishot_warned)
			LOG_WARN("this kernel refuses multishot recv (EINVAL; it needs Linux 6.0);"
			         " proactor %u falls back to plain recv",
			         np->px->id);
		np->multishot_warned = true;
		np->use_ring = false;
	} else if (res != -ENOBUFS && res != -ECANCELED && res != -EINTR && res != -EAGAIN) {
		if (res != -ECONNRESET && res != -ETIMEDOUT && res != -EPIPE)
			LOG_INFO("recv from client id=%llu failed (%s); closing it",
			         (unsigned long long)c->id, strerror(-res));
		conn_hard_close(c);
	}
	if (!pv->recv_armed)
		conn_recv_arm(c);
	conn_advance(c);
}

/* A send CQE: continues a short send, or sends what collected meanwhile. */
static void conn_send_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct conn_private *pv = container_of(op, struct conn_private, send_op);
	struct conn *c = pv->c;
	(void)px;
	(void)flags;
	pv->send_armed = false;
	if (res <= 0 || pv->state > CONN_DRAINING) {
		if (res < 0 && res != -EPIPE && res != -ECONNRESET && res != -ECANCELED)
			LOG_INFO("send to client id=%llu failed (%s); closing it",
			         (unsigned long long)c->id, strerror(-res));
		conn_hard_close(c);
		conn_advance(c);
		return;
	}
	NET_STAT(pv->np, net_output_bytes, (unsigned long)res);
	pv->last_io_ms = net_mono_ms();
	c->output_bytes -= (uint64_t)res <= c->output_bytes ? (uint64_t)res : c->output_bytes;
	pv->sent += (size_t)res;
	struct resp_buf *w = &pv->out[pv->fill ^ 1];
	if (pv->sent >= w->len) {
		if (w->cap > NET_BUF_KEEP)
			resp_buf_free(w);
		else
			resp_buf_reset(w);
		pv->sent = 0;
	}
	conn_send(c);
	conn_update_pause(c);
	conn_advance(c);
}

/* ---- accepting --------------------------------------------------------- */

static void np_timer_ensure(struct net_px *np);

/* Arms the accept (multishot when the kernel has it); with no free SQE the
 * timer retries. */
static void listener_arm(struct net_listener *l)
{
	struct net_px *np = l->np;
	if (l->armed || l->fd < 0 || !np->accepting)
		return;
	struct io_uring_sqe *sqe = px_get_sqe(np->px, &l->op);
	if (sqe == NULL) {
		l->retry_ms = net_mono_ms() + NET_ACCEPT_RETRY_MS;
		np_timer_ensure(np);
		return;
	}
	if (l->multishot)
		io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	else
		io_uring_prep_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	l->armed = true;
	l->cancel_sent = false;
}

/* Cancels the armed accept (stop accepting); with no free SQE the timer
 * tries again. */
static void listener_cancel(struct net_listener *l)
{
	if (!l->armed || l->cancel_sent)
		return;
	struct io_uring_sqe *sqe = px_get_sqe(l->np->px, NULL);
	if (sqe == NULL)
		return;
	io_uring_prep_cancel(sqe, &l->op, 0);
	l->cancel_sent = true;
}

/* Sets up a connection for an accepted socket (or refuses it). */
static void np_accept_fd(struct net_px *np, int fd)
{
	NET_STAT(np, connections_received, 1);
	if (!np->accepting) {
		close(fd);
		return;
	}
	unsigned n = atomic_fetch_add_explicit(&net_nclients, 1, memory_order_relaxed) + 1;
	if (n > np->cfg.max_clients) {
		atomic_fetch_sub_explicit(&net_nclients, 1, memory_order_relaxed);
		NET_STAT(np, rejected_connections, 1);
		ssize_t w = send(fd, net_err_max_clients, sizeof(net_err_max_clients) - 1,
		                 MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)w; /* best effort, as Redis does */
		close(fd);
		return;
	}
	struct conn_full *full = calloc(1, sizeof(*full));
	if (full == NULL)
		net_oom("a connection", sizeof(*full));
	struct conn *c = &full->pub;
	struct conn_private *pv = &full->priv;
	c->priv = pv;
	pv->c = c;
	pv->np = np;
	c->id = atomic_fetch_add_explicit(&net_next_id, 1, memory_order_relaxed);
	c->fd = fd;
	c->px = np->px;
	socklen_t len = sizeof(c->peer);
	getpeername(fd, (struct sockaddr *)&c->peer, &len);
	len = sizeof(c->local);
	getsockname(fd, (struct sockaddr *)&c->local, &len);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->created_ms = c->last_active_ms = clock_unix_ms_coarse();
	c->proto = 2;
	c->authenticated = !np->cfg.auth_required;
	pv->state = CONN_OPEN;
	pv->last_io_ms = net_mono_ms();
	resp_parser_init(&pv->parser, &np->cfg.limits);
	resp_buf_init(&pv->out[0], 2);
	resp_buf_init(&pv->out[1], 2);
	pv->recv_op.complete = conn_recv_complete;
	pv->send_op.complete = conn_send_complete;
	pv->open_next = np->open;
	if (np->open != NULL)
		np->open->open_prev = pv;
	np->open = pv;
	np->n_conns++;
	if (np->cfg.on_open != NULL)
		np->cfg.on_open(c);
	conn_recv_arm(c);
}

/* An accept CQE: a new client, or an error — EMFILE and the like back off
 * NET_ACCEPT_RETRY_MS and are logged once per episode, others re-arm. */
static void listener_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct net_listener *l = container_of(op, struct net_listener, op);
	struct net_px *np = l->np;
	(void)px;
	if (!(flags & IORING_CQE_F_MORE))
		l->armed = false;
	if (res >= 0) {
		l->emfile_logged = false;
		np_accept_fd(np, res);
	} else if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
		if (!l->emfile_logged)
			LOG_WARN("accepting on %s failed: %s; new clients wait until descriptors"
			         " or memory are freed (raise 'ulimit -n' or lower"
			         " server.max_clients)",
			         l->name, strerror(-res));
		l->emfile_logged = true;
		if (!l->armed) {
			l->retry_ms = net_mono_ms() + NET_ACCEPT_RETRY_MS;
			np_timer_ensure(np);
		}
		return;
	} else if (res == -EINVAL && l->multishot && !l->cancel_sent) {
		LOG_WARN("this kernel refuses multishot accept (it needs Linux 5.19); proactor"
		         " %u accepts one connection per request",
		         np->px->id);
		l->multishot = false;
	} else if (res != -ECANCELED && res != -ECONNABORTED && res != -EINTR && res != -EAGAIN) {
		LOG_WARN("accepting on %s failed: %s", l->name, strerror(-res));
	}
	if (l->armed)
		return;
	if (!np->accepting) {
		close(l->fd);
		l->fd = -1;
		return;
	}
	if (l->retry_ms == 0)
		listener_arm(l);
}

/* ---- the hook and the timer -------------------------------------------- */

/* End-of-iteration hook: one send per dirty connection, retried arms and
 * cancels, closes that can progress.  True if there was anything to do. */
static bool np_flush(struct px *px, struct px_hook *hook)
{
	struct net_px *np = container_of(hook, struct net_px, flush_hook);
	(void)px;
	struct conn_private *pv = np->dirty;
	if (pv == NULL)
		return false;
	np->dirty = NULL;
	while (pv != NULL) {
		struct conn_private *next = pv->dirty_next;
		conn_kick(pv->c);
		pv = next;
	}
	return true;
}

static void np_teardown(struct net_px *np);

/* True when no connection and no listener is left (teardown may run). */
static bool np_idle(const struct net_px *np)
{
	if (np->n_conns != 0)
		return false;
	for (unsigned i = 0; i < np->n_listeners; i++)
		if (np->listeners[i].fd >= 0 || np->listeners[i].armed)
			return false;
	return true;
}

/* The timer: accept back-offs, idle timeouts, the shutdown deadline, and
 * the teardown once stopping and idle. */
static void np_tick(struct px *px, struct px_timer *t)
{
	struct net_px *np = container_of(t, struct net_px, timer);
	uint64_t now = net_mono_ms();
	bool retry_pending = false;
	(void)px;
	for (unsigned i = 0; i < np->n_listeners; i++) {
		struct net_listener *l = &np->listeners[i];
		if (!np->accepting) {
			l->retry_ms = 0;
			if (l->armed)
				listener_cancel(l); /* again, if no SQE was free before */
			else if (l->fd >= 0) {
				close(l->fd);
				l->fd = -1;
			}
			retry_pending |= l->armed && !l->cancel_sent;
			continue;
		}
		if (l->retry_ms != 0 && now >= l->retry_ms) {
			l->retry_ms = 0;
			listener_arm(l);
		}
		retry_pending |= l->retry_ms != 0;
	}
	if (np->cfg.timeout_s > 0 && now >= np->next_timeout_scan_ms) {
		np->next_timeout_scan_ms = now + NET_TIMEOUT_SCAN_MS;
		uint64_t idle_ms = (uint64_t)np->cfg.timeout_s * 1000;
		for (struct conn_private *pv = np->open, *next; pv != NULL; pv = next) {
			next = pv->open_next;
			if (pv->state < CONN_CLOSING && pv->c->pending == 0 &&
			    now - pv->last_io_ms > idle_ms) {
				LOG_DEBUG("closing client id=%llu: idle for over %u s",
				          (unsigned long long)pv->c->id, np->cfg.timeout_s);
				NET_STAT(np, timeouts, 1);
				conn_hard_close(pv->c);
			}
		}
	}
	if (np->stopping && now >= np->stop_deadline_ms)
		for (struct conn_private *pv = np->open; pv != NULL; pv = pv->open_next)
			conn_hard_close(pv->c);
	if (np->stopping && np_idle(np) && np->dirty == NULL) {
		np_teardown(np); /* last: the timer is not touched after fn returns */
		return;
	}
	if (np->stopping || np->cfg.timeout_s > 0 || retry_pending)
		np_timer_ensure(np);
}

/* Arms the timer unless it is armed. */
static void np_timer_ensure(struct net_px *np)
{
	if (!px_timer_armed(&np->timer))
		px_timer_start(np->px, &np->timer, (uint64_t)NET_TICK_MS * 1000000ULL, 0, np_tick);
}

/* ---- start and stop ---------------------------------------------------- */

/* Adds one proactor's counters to sum. */
static void np_stats_fold(struct net_stats *sum, const struct net_counters *s)
{
	sum->connections_received +=
	    atomic_load_explicit(&s->connections_received, memory_order_relaxed);
	sum->rejected_connections +=
	    atomic_load_explicit(&s->rejected_connections, memory_order_relaxed);
	sum->commands += atomic_load_explicit(&s->commands, memory_order_relaxed);
	sum->net_input_bytes += atomic_load_explicit(&s->net_input_bytes, memory_order_relaxed);
	sum->net_output_bytes += atomic_load_explicit(&s->net_output_bytes, memory_order_relaxed);
	sum->protocol_errors += atomic_load_explicit(&s->protocol_errors, memory_order_relaxed);
	sum->output_limit_disconnects +=
	    atomic_load_explicit(&s->output_limit_disconnects, memory_order_relaxed);
	sum->timeouts += atomic_load_explicit(&s->timeouts, memory_order_relaxed);
}

void net_get_stats(struct net_stats *out)
{
	pthread_mutex_lock(&net_lock);
	*out = net_retired;
	for (struct net_px *np = net_all; np != NULL; np = np->all_next)
		np_stats_fold(out, &np->stats);
	pthread_mutex_unlock(&net_lock);
}

unsigned net_clients(void)
{
	return atomic_load_explicit(&net_nclients, memory_order_relaxed);
}

uint16_t net_port(struct px *px)
{
	uint16_t port = 0;
	pthread_mutex_lock(&net_lock);
	for (struct net_px *np = net_all; np != NULL; np = np->all_next)
		if (np->px == px)
			port = np->port;
	pthread_mutex_unlock(&net_lock);
	return port;
}

/* Releases the buffer ring's memory (unregistered or never registered). */
static void np_ring_free(struct net_px *np)
{
	if (np->br != NULL)
		munmap(np->br, np->br_bytes);
	free(np->bufs);
	np->br = NULL;
	np->bufs = NULL;
	np->use_ring = false;
}

/* Frees everything of np; the proactor's loop is running (np_tick). */
static void np_teardown(struct net_px *np)
{
	struct px *px = np->px;
	px_hook_remove(px, &np->flush_hook);
	if (np->br != NULL)
		io_uring_unregister_buf_ring(&px->ring, NET_BGID);
	np_ring_free(np);
	while (np->req_free != NULL) {
		struct req_impl *r = np->req_free;
		np->req_free = r->free_next;
		free(r);
	}
	pthread_mutex_lock(&net_lock);
	for (struct net_px **pp = &net_all; *pp != NULL; pp = &(*pp)->all_next)
		if (*pp == np) {
			*pp = np->all_next;
			break;
		}
	np_stats_fold(&net_retired, &np->stats);
	pthread_mutex_unlock(&net_lock);
	free(np->bind);
	if (net_self == np)
		net_self = NULL;
	free(np);
	px_release(px);
}

void net_stop_accepting(struct px *px)
{
	struct net_px *np = net_self;
	(void)px;
	if (np == NULL || !np->accepting)
		return;
	np->accepting = false;
	for (unsigned i = 0; i < np->n_listeners; i++) {
		struct net_listener *l = &np->listeners[i];
		l->retry_ms = 0;
		if (l->armed) {
			listener_cancel(l); /* closed after the accept's last CQE */
		} else if (l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
		}
	}
	np_timer_ensure(np); /* retries a cancel that found no free SQE */
}

void net_close_all(struct px *px)
{
	struct net_px *np = net_self;
	if (np == NULL || np->stopping)
		return;
	net_stop_accepting(px);
	np->stopping = true;
	px_hold(np->px);
	np->stop_deadline_ms = net_mono_ms() + NET_SHUTDOWN_FLUSH_MS;
	for (struct conn_private *pv = np->open; pv != NULL; pv = pv->open_next)
		conn_close_after_reply(pv->c);
	np_timer_ensure(np);
}

/* pool_on_stop hook: pool_stop alone closes everything. */
static bool net_stop_hook_fn(struct px *px, struct px_hook *hook)
{
	(void)hook;
	net_close_all(px);
	return true;
}

void conn_foreach(struct px *px, void (*fn)(struct conn *c, void *arg), void *arg)
{
	struct net_px *np = net_self;
	(void)px;
	if (np == NULL)
		return;
	for (struct conn_private *pv = np->open, *next; pv != NULL; pv = next) {
		next = pv->open_next;
		fn(pv->c, arg);
	}
}

/* Parses one server.bind word into addr; false if it is not an address. */
static bool net_parse_addr(const char *word, uint16_t port, struct sockaddr_storage *addr,
                           socklen_t *len)
{
	memset(addr, 0, sizeof(*addr));
	struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
	if (strcmp(word, "*") == 0)
		word = "0.0.0.0";
	else if (strcmp(word, "::*") == 0)
		word = "::";
	if (inet_pton(AF_INET, word, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		*len = sizeof(*a4);
		return true;
	}
	if (inet_pton(AF_INET6, word, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		*len = sizeof(*a6);
		return true;
	}
	return false;
}

static uint16_t net_port_of(const struct sockaddr_storage *addr)
{
	return ntohs(addr->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)addr)->sin6_port
	                                         : ((const struct sockaddr_in *)addr)->sin_port);
}

/* Opens one SO_REUSEPORT listener; returns its fd or -errno with err set.
 * Called with net_lock held. */
static int net_listen_one(struct net_px *np, const struct sockaddr_storage *addr, socklen_t alen,
                          const char *name, char *err, size_t errlen)
{
	int fd, one = 1, e;
	if (!net_claimed && net_port_of(addr) != 0) {
		/* SO_REUSEPORT would let us share the port with another process
		 * of the same user (a second ringkv-server would silently take
		 * half the connections); a plain bind first proves it is free. */
		fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			e = errno;
			goto fail;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (addr->ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		int r = bind(fd, (const struct sockaddr *)addr, alen);
		e = errno;
		close(fd);
		if (r < 0)
			goto fail;
	}
	fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		e = errno;
		goto fail;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    (addr->ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (const struct sockaddr *)addr, alen) < 0 ||
	    listen(fd, (int)(np->cfg.backlog ? np->cfg.backlog : 511)) < 0) {
		e = errno;
		close(fd);
		goto fail;
	}
	return fd;
fail:
	switch (e) {
	case EADDRINUSE:
		snprintf(err, errlen,
		         "cannot listen on %s: the address is already in use (another"
		         " ringkv-server or redis-server?); stop it or choose another port"
		         " (server.port, --port)",
		         name);
		break;
	case EACCES:
		snprintf(err, errlen,
		         "cannot listen on %s: permission denied; ports below 1024 need root or"
		         " CAP_NET_BIND_SERVICE, so choose a port above 1023",
		         name);
		break;
	case EADDRNOTAVAIL:
		snprintf(err, errlen,
		         "cannot listen on %s: no interface of this machine has that address; fix"
		         " server.bind (prefix an address with '-' to skip it when it is missing)",
		         name);
		break;
	case EAFNOSUPPORT:
		snprintf(err, errlen,
		         "cannot listen on %s: this machine has no IPv6; remove the address from"
		         " server.bind or prefix it with '-'",
		         name);
		break;
	default:
		snprintf(err, errlen, "cannot listen on %s: %s", name, strerror(e));
	}
	return -e;
}

static int net_listen_all(struct net_px *np, char *err, size_t errlen)
{
	char *save = NULL, words[256];
	uint16_t port = np->cfg.port;
	snprintf(words, sizeof(words), "%s", np->bind);
	for (char *w = strtok_r(words, " \t", &save); w != NULL; w = strtok_r(NULL, " \t", &save)) {
		bool optional = w[0] == '-';
		if (optional)
			w++;
		struct sockaddr_storage addr;
		socklen_t alen;
		if (!net_parse_addr(w, port, &addr, &alen)) {
			snprintf(
			    err, errlen,
			    "server.bind: '%s' is not an IPv4 or IPv6 address (host names are not"
			    " resolved; use e.g. 127.0.0.1 or ::1)",
			    w);
			return -EINVAL;
		}
		if (np->n_listeners == NET_MAX_LISTENERS) {
			snprintf(err, errlen, "server.bind: more than %d addresses",
			         NET_MAX_LISTENERS);
			return -EINVAL;
		}
		struct net_listener *l = &np->listeners[np->n_listeners];
		net_format_addr(&addr, l->name, sizeof(l->name));
		int fd = net_listen_one(np, &addr, alen, l->name, err, errlen);
		if (fd < 0) {
			if (optional && (fd == -EADDRNOTAVAIL || fd == -EAFNOSUPPORT)) {
				LOG_INFO("skipping optional bind address %s: %s", l->name,
				         strerror(-fd));
				continue;
			}
			return fd;
		}
		if (port == 0) { /* the kernel chose: every other address takes the same */
			struct sockaddr_storage got;
			socklen_t glen = sizeof(got);
			getsockname(fd, (struct sockaddr *)&got, &glen);
			port = ntohs(got.ss_family == AF_INET6
			                 ? ((struct sockaddr_in6 *)&got)->sin6_port
			                 : ((struct sockaddr_in *)&got)->sin_port);
			net_format_addr(&got, l->name, sizeof(l->name));
		}
		l->np = np;
		l->fd = fd;
		l->multishot = true;
		l->op.complete = listener_complete;
		np->n_listeners++;
	}
	if (np->n_listeners == 0) {
		snprintf(err, errlen, "server.bind '%s' gives no address to listen on", np->bind);
		return -EINVAL;
	}
	np->port = port;
	return 0;
}

/* Registers the provided buffer ring; on failure recv falls back to plain. */
static void net_setup_ring(struct net_px *np)
{
	unsigned entries = np->cfg.buf_ring_entries;
	if (entries == 0)
		return;
	np->buf_entries = entries;
	np->buf_size = np->cfg.buf_size;
	np->br_bytes = (size_t)entries * sizeof(struct io_uring_buf);
	void *br =
	    mmap(NULL, np->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	np->bufs = malloc((size_t)entries * np->buf_size);
	if (br == MAP_FAILED || np->bufs == NULL) {
		LOG_WARN("proactor %u: no memory for %u receive buffers of %u bytes; using plain"
		         " recv (lower uring.buf_ring_entries or uring.buf_size)",
		         np->px->id, entries, np->buf_size);
		if (br != MAP_FAILED)
			munmap(br, np->br_bytes);
		free(np->bufs);
		np->bufs = NULL;
		return;
	}
	np->br = br;
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)(uintptr_t)br;
	reg.ring_entries = entries;
	reg.bgid = NET_BGID;
	int ret = io_uring_register_buf_ring(&np->px->ring, &reg, 0);
	if (ret < 0) {
		LOG_INFO("proactor %u: this kernel has no provided buffer rings (%s; Linux 5.19+);"
		         " using plain recv",
		         np->px->id, strerror(-ret));
		np_ring_free(np);
		return;
	}
	io_uring_buf_ring_init(np->br);
	for (unsigned i = 0; i < entries; i++)
		io_uring_buf_ring_add(np->br, np->bufs + (size_t)i * np->buf_size, np->buf_size,
		                      (unsigned short)i, io_uring_buf_ring_mask(entries), (int)i);
	io_uring_buf_ring_advance(np->br, (int)entries);
	np->use_ring = true;
}

int net_start(struct px *px, const struct net_config *cfg, char *err, size_t errlen)
{
	if (net_self != NULL) {
		snprintf(err, errlen, "net_start: proactor %u already listens", px->id);
		return -EALREADY;
	}
	if (cfg->handler == NULL) {
		snprintf(err, errlen, "net_start: no command handler given");
		return -EINVAL;
	}
	unsigned entries = cfg->buf_ring_entries;
	if (entries != 0 && ((entries & (entries - 1)) != 0 || entries > NET_MAX_BUF_RING)) {
		snprintf(err, errlen,
		         "uring.buf_ring_entries is %u; it must be a power of two up to %d, or 0"
		         " for plain recv",
		         entries, NET_MAX_BUF_RING);
		return -EINVAL;
	}
	if (cfg->buf_size < 512 && entries != 0) {
		snprintf(err, errlen, "uring.buf_size is %u bytes; it must be at least 512",
		         cfg->buf_size);
		return -EINVAL;
	}
	struct net_px *np = calloc(1, sizeof(*np));
	if (np == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	np->px = px;
	np->cfg = *cfg;
	np->bind = strdup(cfg->bind != NULL && cfg->bind[0] ? cfg->bind : "127.0.0.1");
	if (np->bind == NULL) {
		free(np);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	np->cfg.bind = np->bind;
	if (np->cfg.max_pipeline == 0)
		np->cfg.max_pipeline = NET_DEFAULT_PIPELINE;
	if (np->cfg.buf_size < 512)
		np->cfg.buf_size = 16384;
	for (unsigned i = 0; i < NET_MAX_LISTENERS; i++)
		np->listeners[i].fd = -1;
	pthread_mutex_lock(&net_lock); /* the first proactor checks the port is free */
	int ret = net_listen_all(np, err, errlen);
	if (ret == 0)
		net_claimed = true;
	pthread_mutex_unlock(&net_lock);
	if (ret < 0) {
		for (unsigned i = 0; i < np->n_listeners; i++)
			close(np->listeners[i].fd);
		free(np->bind);
		free(np);
		return ret;
	}
	net_setup_ring(np);
	np->accepting = true;
	np->flush_hook.fn = np_flush;
	px_hook_add(px, &np->flush_hook);
	if (!net_stop_hook_added) {
		net_stop_hook.fn = net_stop_hook_fn;
		pool_on_stop(px, &net_stop_hook);
		net_stop_hook_added = true;
	}
	pthread_mutex_lock(&net_lock);
	np->all_next = net_all;
	net_all = np;
	pthread_mutex_unlock(&net_lock);
	net_self = np;
	for (unsigned i = 0; i < np->n_listeners; i++)
		listener_arm(&np->listeners[i]);
	if (np->cfg.timeout_s > 0) {
		np->next_timeout_scan_ms = net_mono_ms() + NET_TIMEOUT_SCAN_MS;
		np_timer_ensure(np);
	}
	return 0;
}
