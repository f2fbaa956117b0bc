/* conn_send: replies and sending — the two output buffers, conn_req_done,
 * the send and its completions, the output limit (conn_int.h has the map). */
#include "conn_int.h"

#include <errno.h>
#include <string.h>

#include "service/runtime/logging.h"

/* Sends what is left of out[fill ^ 1], or else everything collected in
 * out[fill], unless a send is in flight. */
void conn_send(struct conn *c)
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

/* ---- replies ----------------------------------------------------------- */

/* Appends one reply to out[fill]: a large heap reply into an empty buffer is
 * handed over instead of copied. */
static void conn_out_append(struct conn_private *pv, struct resp_buf *reply, uint32_t batch)
{
	struct resp_buf *o = &pv->out[pv->fill];
	if (o->len == 0)
		pv->out_batch = batch;
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
	struct req_impl *r = container_of(req, struct req_impl, req);
	req->done = true;
	c->pending--;
	pv->np->pending_args -= r->args;
	r->args = 0;
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
			conn_out_append(pv, &req->reply,
			                container_of(req, struct req_impl, req)->batch);
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

size_t conn_req_stream(struct conn_req *req, struct resp_buf *part)
{
	struct conn *c = req->conn;
	struct conn_private *pv = c->priv;
	if (pv->state >= CONN_CLOSING) {
		resp_buf_reset(part);
		return SIZE_MAX;
	}
	if (req != pv->head) {
		/* Earlier replies first: this part waits with the request (and
		 * is counted in output_bytes when it goes, by conn_req_done). */
		resp_buf_append(&req->reply, part->data, part->len);
		resp_buf_reset(part);
		return c->output_bytes + req->reply.len;
	}
	c->output_bytes += part->len;
	conn_out_append(pv, part, container_of(req, struct req_impl, req)->batch);
	resp_buf_reset(part);
	if (!pv->send_armed)
		conn_mark_dirty(c);
	uint64_t limit = pv->np->cfg.output_buffer_limit;
	if (limit != 0 && c->output_bytes > limit) {
		conn_output_limit(c);
		return SIZE_MAX;
	}
	return c->output_bytes;
}

/* ---- completions ------------------------------------------------------- */

/* A send CQE: continues a short send, or sends what collected meanwhile. */
void conn_send_complete(struct px *px, struct px_op *op, int res, unsigned flags)
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
	NET_STAT(pv->np, sends, 1);
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
