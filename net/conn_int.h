/* conn_int: the connection layer's private header: its state and the
 * functions its files share.  conn.h has the contract.  How it works:
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
 * NET_REQ_SMALL bytes (and, on a second list, up to NET_REQ_LARGE) are
 * recycled through per-proactor free lists, so a pipelined GET/SET costs no
 * malloc; a recycled block keeps its reply's heap buffer when that is at
 * most NET_REPLY_KEEP bytes, so a reply past the inline bytes (HGETALL of a
 * small hash) costs none either.  The queue keeps request order; a done
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
 *
 * Files (one module behind conn.h):
 *   conn.c          a connection's life: states, closing, freeing, the
 *                   end-of-iteration hook
 *   conn_recv.c     receiving and parsing: recv arming and completions, the
 *                   input buffer, requests built from commands, the prefetch hint
 *   conn_send.c     replies and sending: the output buffers, conn_req_done,
 *                   send completions, the output limit
 *   conn_listen.c   listeners and accepting, net_start and shutdown, the timer
 *   conn_clients.c  the client list and counters (CLIENT LIST, INFO), addresses
 */
#ifndef RINGKV_CONN_INT_H
#define RINGKV_CONN_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "net/conn.h"

#define NET_BGID             0    /* buffer group of the provided buffer ring (one per ring) */
#define NET_MAX_LISTENERS    16   /* addresses in server.bind */
#define NET_TICK_MS          100  /* period of the per-proactor timer, when it is needed */
#define NET_TIMEOUT_SCAN_MS  1000 /* idle clients are looked for this often */
#define NET_ACCEPT_RETRY_MS  100  /* accepting pauses this long after EMFILE and the like */
#define NET_REQ_SMALL        512  /* request blocks up to this size are recycled */
#define NET_REQ_FREE_MAX     16384       /* small blocks kept per proactor (8 MiB) */
#define NET_REPLY_KEEP       1024        /* ... each with its reply buffer up to this (16 MiB) */
#define NET_REQ_LARGE        2048        /* larger request blocks up to this are recycled too */
#define NET_REQ_LARGE_MAX    2048        /* ... this many per proactor (4 MiB + 2 of replies) */
#define NET_BUF_KEEP         (64 * 1024) /* input/output buffers above this are freed once empty */
#define NET_HOLD_BYTES       (64 * 1024) /* replies wait for their batch up to this */
#define NET_STEAL_MIN        4096        /* replies this big are handed to the output, not copied */
#define NET_SEND_MAX         (1U << 30)  /* bytes per send SQE (its length is 32 bits) */
#define NET_DEFAULT_PIPELINE 1024        /* max_pipeline when the config says 0 */
/* Arguments of unfinished requests per proactor (all its connections) above
 * which a connection with a request unfinished is not read (conn.h,
 * "Backpressure").  An argument is roughly a record to write: HSET of 1000
 * fields is 2002; 1024 of them in flight were 1.2 M pending records (0.5 GB)
 * on one connection. */
#define NET_PENDING_ARGS_MAX (1u << 16)
#define NET_MAX_BUF_RING     32768       /* the kernel's limit on a buffer ring's entries */

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
	atomic_ulong reads; /* recv completions with bytes */
	atomic_ulong sends; /* send completions with bytes */
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
	size_t args;                /* counted in net_px.pending_args until done */
	uint32_t batch;             /* the conn_private.batch it was parsed in */
	struct req_impl *free_next; /* link in a net_px.req_free list */
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
	size_t sent;        /* bytes of out[fill ^ 1] already sent */
	uint32_t batch;     /* input passes so far: the requests of one pass are a batch */
	uint32_t out_batch; /* the batch of the oldest reply in out[fill] */
	struct conn_req *head, *tail;               /* request queue (OPEN/DRAINING only) */
	struct conn_private *open_prev, *open_next; /* net_px.open: not yet CLOSED */
	struct conn_private *dirty_next;            /* net_px.dirty */
	bool dirty;                                 /* on the dirty list */
	unsigned busy;       /* input being processed: no close(2), no free */
	bool paused;         /* reading stopped for backpressure */
	bool held;           /* complete commands left in `in` for backpressure: the
	                        hook runs them once the connection is not paused */
	bool eof;            /* the peer half-closed while commands were held: they
	                        run, then the connection drains (conn_resume_input) */
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
	struct req_list {
		struct req_impl *head;
		unsigned n;
	} req_free[2];         /* recycled blocks: NET_REQ_SMALL, NET_REQ_LARGE */
	uint64_t pending_args; /* arguments of unfinished requests (NET_PENDING_ARGS_MAX) */
	struct net_counters stats;
	struct net_px *all_next; /* net_all list, under net_lock */
};

extern __thread struct net_px *net_self; /* this proactor's state (conn_listen.c) */

/* conn_clients.c: the process-wide registry. */
extern pthread_mutex_t net_lock;     /* net_all, net_retired, net_claimed */
extern struct net_px *net_all;       /* every live net_px */
extern struct net_stats net_retired; /* counters of net_px that are gone */
extern atomic_uint net_nclients;     /* open connections, all proactors */
extern atomic_uint net_nallocated;   /* connections not yet freed, all proactors */

#define NET_STAT(np, field, n) px_stat_add(&(np)->stats.field, (n))

/* ---- shared helpers (inline: the request path calls them) -------------- */

/* CLOCK_MONOTONIC ms (coarse). */
static inline uint64_t net_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* conn.c */
void net_oom(const char *what, size_t bytes);
void conn_update_pause(struct conn *c);
void conn_hard_close(struct conn *c);
void conn_advance(struct conn *c);
bool np_flush(struct px *px, struct px_hook *hook);

/* conn_recv.c */
void conn_recv_arm(struct conn *c);
/* Runs the commands left in the input buffer by backpressure (conn.h). */
void conn_resume_input(struct conn *c);
void conn_recv_complete(struct px *px, struct px_op *op, int res, unsigned flags);

/* conn_send.c */
void conn_send(struct conn *c);
void conn_send_complete(struct px *px, struct px_op *op, int res, unsigned flags);

/* conn_clients.c */
void net_format_addr(const struct sockaddr_storage *ss, char *buf, size_t len);
void np_stats_fold(struct net_stats *sum, const struct net_counters *s);

/* Queues c for the end-of-iteration hook (conn_kick). */
static inline void conn_mark_dirty(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (pv->dirty)
		return;
	pv->dirty = true;
	pv->dirty_next = pv->np->dirty;
	pv->np->dirty = pv;
}

/* ---- request blocks ---------------------------------------------------- */

/* The free list of blocks of `size` bytes: NET_REQ_SMALL or NET_REQ_LARGE. */
static inline struct req_list *req_list_of(struct net_px *np, size_t size)
{
	return &np->req_free[size == NET_REQ_SMALL ? 0 : 1];
}

/* A block of at least `size` bytes: recycled up to NET_REQ_LARGE; aborts on
 * OOM. */
static inline struct req_impl *req_alloc(struct net_px *np, size_t size)
{
	struct req_impl *r;
	if (size <= NET_REQ_LARGE) { /* (an MSET of 10 keys is ~750 bytes) */
		size = size <= NET_REQ_SMALL ? NET_REQ_SMALL : NET_REQ_LARGE;
		struct req_list *l = req_list_of(np, size);
		r = l->head;
		if (r != NULL) {
			l->head = r->free_next;
			l->n--;
			__builtin_prefetch(l->head, 1); /* the next one's link */
			r->args = 0;
			return r; /* its reply: empty, maybe with a kept buffer */
		}
	}
	r = aligned_alloc(16, (size + 15) & ~(size_t)15);
	if (r == NULL)
		net_oom("a request", size);
	r->size = size;
	r->args = 0;
	resp_buf_init(&r->req.reply, 2);
	return r;
}

/* Frees req and its reply (blocks of the two sizes go back to their free
 * list, with the reply's buffer when it is small). */
static inline void req_release(struct net_px *np, struct conn_req *req)
{
	struct req_impl *r = container_of(req, struct req_impl, req);
	if (r->size == NET_REQ_SMALL || r->size == NET_REQ_LARGE) {
		struct req_list *l = req_list_of(np, r->size);
		if (l->n < (r->size == NET_REQ_SMALL ? NET_REQ_FREE_MAX : NET_REQ_LARGE_MAX)) {
			if (req->reply.cap > NET_REPLY_KEEP)
				resp_buf_free(&req->reply);
			resp_buf_reset(&req->reply);
			r->free_next = l->head;
			l->head = r;
			l->n++;
			return;
		}
	}
	resp_buf_free(&req->reply);
	free(r);
}

#endif
