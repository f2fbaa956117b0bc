/* conn_listen: listeners and accepting, net_start and shutdown, the
 * per-proactor timer (accept back-off, idle timeouts, the shutdown deadline)
 * (conn_int.h has the map). */
#include "conn_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "service/runtime/clock.h"
#include "service/runtime/logging.h"
#include "service/runtime/pool.h"

static const char net_err_max_clients[] = "-ERR max number of clients reached\r\n";

__thread struct net_px *net_self;             /* this proactor's state */
static __thread struct px_hook net_stop_hook; /* pool_on_stop: net_close_all */
static __thread bool net_stop_hook_added;

static bool net_claimed; /* a proactor of this process listens: the addresses are ours */
static atomic_ullong net_next_id = 1; /* CLIENT ID */

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
	atomic_fetch_add_explicit(&net_nallocated, 1, memory_order_relaxed);
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

/* ---- the timer --------------------------------------------------------- */

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
	for (size_t i = 0; i < sizeof(np->req_free) / sizeof(np->req_free[0]); i++)
		while (np->req_free[i].head != NULL) {
			struct req_impl *r = np->req_free[i].head;
			np->req_free[i].head = r->free_next;
			resp_buf_free(&r->req.reply);
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
