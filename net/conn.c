/* conn: a connection's life — its states, closing and freeing, the
 * end-of-iteration hook that sends and re-arms (conn_int.h has the map). */
#include "conn_int.h"

#include <unistd.h>

/* Out of memory on the request path: abort with a message, as Redis does. */
void net_oom(const char *what, size_t bytes)
{
	fprintf(stderr, "ringkv: out of memory allocating %zu bytes for %s; aborting\n", bytes,
	        what);
	abort();
}

/* ---- connection plumbing ----------------------------------------------- */

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

/* Stops or resumes reading for backpressure (conn.h). */
void conn_update_pause(struct conn *c)
{
	struct conn_private *pv = c->priv;
	if (pv->state != CONN_OPEN)
		return;
	uint64_t limit = pv->np->cfg.output_buffer_limit;
	bool pause = c->pending >= pv->np->cfg.max_pipeline || c->barrier ||
	             (c->pending > 0 && pv->np->pending_args >= NET_PENDING_ARGS_MAX) ||
	             (limit != 0 && c->output_bytes > limit / 4);
	if (pause == pv->paused)
		return;
	pv->paused = pause;
	if (pause) {
		if (pv->np->use_ring)
			conn_recv_cancel(c);
	} else if (pv->held) {
		conn_mark_dirty(c); /* the hook runs what is left, then reads */
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
void conn_hard_close(struct conn *c)
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
	atomic_fetch_sub_explicit(&net_nallocated, 1, memory_order_release);
}

/* Moves c along its states as far as it can go now; may free c. */
void conn_advance(struct conn *c)
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

/* Whether c's finished replies wait for the rest of their batch (conn.h,
 * "Reply batches"): the oldest unfinished request came in with them, and
 * they are not many. */
static bool conn_holds_replies(const struct conn_private *pv)
{
	if (pv->state != CONN_OPEN || pv->head == NULL || pv->send_armed ||
	    pv->sent < pv->out[pv->fill ^ 1].len)
		return false;
	const struct req_impl *r = container_of(pv->head, struct req_impl, req);
	size_t len = pv->out[pv->fill].len;
	uint64_t limit = pv->np->cfg.output_buffer_limit;
	return r->batch == pv->out_batch && len < NET_HOLD_BYTES && (limit == 0 || len < limit / 8);
}

/* The hook's work for one dirty connection. */
static void conn_kick(struct conn *c)
{
	struct conn_private *pv = c->priv;
	pv->dirty = false;
	if (pv->state <= CONN_DRAINING && !conn_holds_replies(pv))
		conn_send(c);
	if (pv->state == CONN_OPEN) {
		conn_resume_input(c);
		if (!pv->paused)
			conn_recv_arm(c);
		else if (pv->np->use_ring)
			conn_recv_cancel(c);
	}
	conn_advance(c);
}

void conn_lift_barrier(struct conn *c)
{
	struct conn_private *pv = c->priv;
	c->barrier = false;
	conn_update_pause(c);
	if (pv->held)
		conn_mark_dirty(c);
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

/* ---- the hook ---------------------------------------------------------- */

/* End-of-iteration hook: one send per dirty connection, retried arms and
 * cancels, closes that can progress.  True if there was anything to do. */
bool np_flush(struct px *px, struct px_hook *hook)
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
