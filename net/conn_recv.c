/* conn_recv: receiving and parsing — the recv and its completions, the
 * connection's input buffer, a request per command, the prefetch hint
 * (conn_int.h has the map). */
#include "conn_int.h"

#include <errno.h>
#include <string.h>

#include "service/runtime/clock.h"
#include "service/runtime/logging.h"

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
void conn_recv_arm(struct conn *c)
{
	struct conn_private *pv = c->priv;
	struct net_px *np = pv->np;
	if (pv->state != CONN_OPEN || pv->paused || pv->recv_armed || pv->eof)
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
	req->reply.proto = c->proto; /* (req_alloc left it empty) */
	req->done = false;
	req->next = NULL;
	req->ctx = NULL;
	if (pv->tail != NULL)
		pv->tail->next = req;
	else
		pv->head = req;
	pv->tail = req;
	c->pending++;
	r->args = argc;
	r->batch = pv->batch;
	np->pending_args += argc;
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
	struct resp_buf reply = req->reply; /* (req_alloc left it empty) */
	memset(req, 0, sizeof(*req));
	req->reply = reply; /* (the same place: an inline `data` still points at its bytes) */
	r->batch = pv->batch;
	req->conn = c;
	req->reply.proto = c->proto;
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

/* Looks ahead for the prefetch hint: the name and first two arguments of up
 * to NET_PREFETCH complete multibulk commands of two or more arguments at the
 * start of buf; commands of one argument (PING, MULTI, EXEC) are stepped
 * over, at most NET_PREFETCH of them.  Anything else (an inline command, a
 * partial or malformed one) ends the look-ahead; the parser proper reports
 * it.  Returns the count of hints and sets *span to the bytes the commands
 * looked at take. */
static size_t peek_hints(const uint8_t *buf, size_t len, struct net_hint *hints, size_t *span)
{
	size_t n = 0, off = 0, skipped = 0;
	*span = 0;
	while (n < NET_PREFETCH && skipped < NET_PREFETCH && off < len && buf[off] == '*') {
		size_t argc, blen;
		off++;
		if (!peek_number(buf, len, &off, &argc) || argc < 1)
			break;
		size_t i = 0;
		struct net_hint *h = &hints[n];
		h->arg2 = NULL;
		h->arg2_len = 0;
		for (; i < argc; i++) {
			if (off >= len || buf[off] != '$')
				break;
			off++;
			if (!peek_number(buf, len, &off, &blen) || len - off < blen + 2)
				break;
			if (i == 0) {
				h->name = buf + off;
				h->name_len = blen;
			} else if (i == 1) {
				h->key = buf + off;
				h->key_len = blen;
			} else if (i == 2) {
				h->arg2 = buf + off;
				h->arg2_len = blen;
			}
			off += blen + 2;
		}
		if (i < argc)
			break;
		if (argc >= 2)
			n++;
		else
			skipped++;
		*span = off;
	}
	return n;
}

/* Runs the hint for the commands ahead of buf[off] once the parser has passed
 * the ones it was last given; returns the offset the next look-ahead is due
 * at. */
static size_t conn_prefetch(struct conn *c, const uint8_t *buf, size_t len, size_t off)
{
	struct net_hint hints[NET_PREFETCH];
	size_t span;
	size_t n = peek_hints(buf + off, len - off, hints, &span);
	if (n > 1) /* a lone command runs at once: nothing to overlap */
		c->priv->np->cfg.prefetch(c, hints, n);
	return span > 0 ? off + span : len;
}

/* Runs every complete command in buf[0..len); returns the bytes consumed. */
static size_t conn_parse(struct conn *c, const uint8_t *buf, size_t len)
{
	struct conn_private *pv = c->priv;
	size_t off = 0, hinted = pv->np->cfg.prefetch != NULL ? 0 : len;
	while (pv->state == CONN_OPEN && off < len) {
		struct resp_command cmd;
		size_t used;
		if ((c->pending > 0 && pv->np->pending_args >= NET_PENDING_ARGS_MAX) ||
		    c->barrier) {
			pv->held = true; /* the rest waits in `in` (conn_resume_input) */
			break;
		}
		if (off >= hinted)
			hinted = conn_prefetch(c, buf, len, off);
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
	pv->batch++;
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

void conn_resume_input(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (!pv->held || pv->paused || pv->state != CONN_OPEN)
		return;
	pv->held = false;
	conn_input(c, NULL, 0, true);
	if (pv->eof && !pv->held)
		conn_close_after_reply(c); /* every command sent before the EOF has run */
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
void conn_recv_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct conn_private *pv = container_of(op, struct conn_private, recv_op);
	struct conn *c = pv->c;
	struct net_px *np = pv->np;
	(void)px;
	if (!(flags & IORING_CQE_F_MORE))
		pv->recv_armed = false;
	if (res > 0) {
		NET_STAT(np, net_input_bytes, (unsigned long)res);
		NET_STAT(np, reads, 1);
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
		if (pv->held && pv->state == CONN_OPEN)
			pv->eof = true; /* the commands waiting in `in` run first */
		else
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
