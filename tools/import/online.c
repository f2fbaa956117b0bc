/* online: see online.h. */
#include "online.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/resp.h"

#define SEND_AT         (64u << 10)  /* send a connection's buffer once it holds this much */
#define RECV_CHUNK      (256u << 10) /* bytes asked of each recv */

/* A command awaiting its reply. */
struct pending {
	uint64_t line;
	bool counted; /* false for the copies of a command sent on every connection */
	bool more;    /* more commands of the same row follow it on its connection */
};

struct conn {
	int fd;
	unsigned no;
	uint8_t *out; /* commands not yet sent: out[out_off, out_len) */
	size_t out_len, out_off, out_cap;
	uint8_t *in; /* replies not yet parsed: in[0, in_len) */
	size_t in_len, in_cap;
	struct pending *ring; /* [window] awaiting replies, oldest at head */
	unsigned head, count;
	bool row_failed; /* a reply to an earlier command of the row being answered
	                    was an error */
};

struct online {
	struct online_config cfg;
	struct conn *conns;
	struct pollfd *pfds;
	struct online_stats stats;
	int sticky; /* in MULTI: the connection of the transaction, else -1 */
	char *err;  /* where the current call reports a failure */
	size_t errlen;
};

/* ---- buffers ----------------------------------------------------------- */

static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 4096;
	while (n < need)
		n *= 2;
	uint8_t *b = realloc(*buf, n);
	if (b == NULL)
		return -ENOMEM;
	*buf = b;
	*cap = n;
	return 0;
}

/* Appends "$<len>\r\n<bytes>\r\n" (or "*<n>\r\n" when bytes is NULL). */
static void put_header(struct conn *c, char type, size_t n)
{
	char tmp[32];
	int k = snprintf(tmp, sizeof(tmp), "%c%zu\r\n", type, n);
	memcpy(c->out + c->out_len, tmp, (size_t)k);
	c->out_len += (size_t)k;
}

static void put_bulk(struct conn *c, const void *s, size_t n)
{
	put_header(c, '$', n);
	if (n)
		memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
	c->out[c->out_len++] = '\r';
	c->out[c->out_len++] = '\n';
}

static int fail(struct online *o, int ret, const char *fmt, const char *what, unsigned no)
{
	snprintf(o->err, o->errlen, fmt, what, no);
	return ret;
}

/* Parses the complete replies in c->in and settles their commands. */
static int take_replies(struct online *o, struct conn *c)
{
	size_t at = 0;
	while (at < c->in_len) {
		uint64_t errors = 0;
		const uint8_t *msg = NULL;
		size_t msg_len = 0;
		long k = resp_reply_len(c->in + at, c->in_len - at, &errors, &msg, &msg_len);
		if (k == 0)
			break;
		if (k < 0 || c->count == 0)
			return fail(o, -EPROTO,
			            "%s: connection %u received something that is not a reply to a"
			            " command sent (not a Redis protocol server?)",
			            "online", c->no);
		struct pending *pd = &c->ring[c->head];
		c->head = (c->head + 1) % o->cfg.window;
		c->count--;
		/* A row sent as several commands counts once, by its first error. */
		if (errors > 0 && !c->row_failed && o->cfg.on_error)
			o->cfg.on_error(o->cfg.arg, pd->line, (const char *)msg, msg_len);
		if (pd->more) {
			c->row_failed |= errors > 0;
		} else {
			if (pd->counted && c->row_failed)
				o->stats.errors++;
			else if (pd->counted && errors > 0)
				o->stats.errors += errors;
			else if (pd->counted)
				o->stats.ok++;
			c->row_failed = false;
		}
		at += (size_t)k;
	}
	if (at > 0) {
		memmove(c->in, c->in + at, c->in_len - at);
		c->in_len -= at;
	}
	return 0;
}

/* ---- socket I/O -------------------------------------------------------- */

/* Sends what it can of c->out without blocking. */
static int conn_send(struct online *o, struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0) {
			snprintf(o->err, o->errlen,
			         "sending to %s:%s (connection %u) failed: %s; %u commands were"
			         " awaiting replies (they may or may not have been applied)",
			         o->cfg.host, o->cfg.port, c->no, strerror(errno), c->count);
			return -errno;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	return 0;
}

/* Reads what has arrived without blocking and settles the replies. */
static int conn_recv(struct online *o, struct conn *c)
{
	for (;;) {
		if (reserve(&c->in, &c->in_cap, c->in_len + RECV_CHUNK) < 0)
			return fail(o, -ENOMEM, "%s: out of memory (connection %u)", "online",
			            c->no);
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0) {
			snprintf(o->err, o->errlen,
			         "the server at %s:%s closed connection %u%s%s with %u commands"
			         " unanswered (they may or may not have been applied); check the"
			         " server's log",
			         o->cfg.host, o->cfg.port, c->no, n < 0 ? ": " : "",
			         n < 0 ? strerror(errno) : "", c->count);
			return n < 0 ? -errno : -ECONNRESET;
		}
		c->in_len += (size_t)n;
		int ret = take_replies(o, c);
		if (ret < 0)
			return ret;
		if ((size_t)n < RECV_CHUNK)
			return 0;
	}
}

/* Waits (when `wait`) until some connection can make progress, then sends
 * and receives what it can on every connection. */
static int pump(struct online *o, bool wait)
{
	unsigned n = o->cfg.connections;
	for (unsigned i = 0; i < n; i++) {
		struct conn *c = &o->conns[i];
		o->pfds[i] = (struct pollfd){
		    .fd = c->fd,
		    .events = (short)(POLLIN | (c->out_off < c->out_len ? POLLOUT : 0))};
	}
	int r;
	do
		r = poll(o->pfds, n, wait ? -1 : 0);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return fail(o, -errno, "%s: poll failed (connection %u)", "online", 0);
	for (unsigned i = 0; i < n; i++) {
		struct conn *c = &o->conns[i];
		short ev = o->pfds[i].revents;
		int ret = 0;
		if (ev & POLLOUT)
			ret = conn_send(o, c);
		if (ret == 0 && (ev & (POLLIN | POLLERR | POLLHUP)))
			ret = conn_recv(o, c);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Makes room for `bytes` more output and one more command on c. */
static int make_room(struct online *o, struct conn *c, size_t bytes)
{
	while (c->count >= o->cfg.window) {
		int ret = conn_send(o, c);
		if (ret == 0)
			ret = pump(o, true);
		if (ret < 0)
			return ret;
	}
	if (reserve(&c->out, &c->out_cap, c->out_len + bytes) < 0)
		return fail(o, -ENOMEM, "%s: out of memory (connection %u)", "online", c->no);
	return 0;
}

/* Records a command just appended to c->out (more: another command of its
 * row follows); sends when enough is buffered. */
static int queued(struct online *o, struct conn *c, uint64_t line, bool counted, bool more)
{
	c->ring[(c->head + c->count) % o->cfg.window] =
	    (struct pending){.line = line, .counted = counted, .more = more};
	c->count++;
	if (c->out_len - c->out_off < SEND_AT)
		return 0;
	int ret = conn_send(o, c);
	if (ret == 0)
		ret = conn_recv(o, c);
	return ret;
}

/* Sends everything and waits until no reply is awaited. */
static int barrier(struct online *o)
{
	for (;;) {
		bool busy = false;
		for (unsigned i = 0; i < o->cfg.connections; i++) {
			struct conn *c = &o->conns[i];
			int ret = conn_send(o, c);
			if (ret < 0)
				return ret;
			busy |= c->count > 0 || c->out_len > c->out_off;
		}
		if (!busy)
			return 0;
		int ret = pump(o, true);
		if (ret < 0)
			return ret;
	}
}

static struct conn *route(struct online *o, const uint8_t *key, size_t klen)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
	for (size_t i = 0; i < klen; i++)
		h = (h ^ key[i]) * 0x100000001b3ULL;
	return &o->conns[(h ^ (h >> 32)) % o->cfg.connections];
}

/* ---- commands ---------------------------------------------------------- */

int online_set(struct online *o, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
               int64_t ttl_s, uint64_t line, char *err, size_t errlen)
{
	o->err = err;
	o->errlen = errlen;
	struct conn *c = route(o, key, klen);
	int ret = make_room(o, c, klen + vlen + 128);
	if (ret < 0)
		return ret;
	put_header(c, '*', ttl_s ? 5 : 3);
	put_bulk(c, "SET", 3);
	put_bulk(c, key, klen);
	put_bulk(c, value, vlen);
	if (ttl_s) {
		char num[24];
		int n = snprintf(num, sizeof(num), "%lld", (long long)ttl_s);
		put_bulk(c, "EX", 2);
		put_bulk(c, num, (size_t)n);
	}
	o->stats.sent++;
	return queued(o, c, line, true, false);
}

int online_coll(struct online *o, const char *cmd, size_t step, const uint8_t *key, size_t klen,
                const uint8_t *const *items, const size_t *item_len, size_t n, size_t per_cmd,
                int64_t ttl_s, uint64_t line, char *err, size_t errlen)
{
	o->err = err;
	o->errlen = errlen;
	struct conn *c = route(o, key, klen);
	size_t cmd_len = strlen(cmd);
	per_cmd = per_cmd < step ? step : per_cmd - per_cmd % step;
	for (size_t i = 0; i < n;) {
		size_t m = n - i < per_cmd ? n - i : per_cmd, bytes = klen + cmd_len + 64;
		for (size_t k = i; k < i + m; k++)
			bytes += item_len[k] + 32;
		int ret = make_room(o, c, bytes);
		if (ret < 0)
			return ret;
		put_header(c, '*', 2 + m);
		put_bulk(c, cmd, cmd_len);
		put_bulk(c, key, klen);
		for (size_t k = i; k < i + m; k++)
			put_bulk(c, items[k], item_len[k]);
		i += m;
		ret = queued(o, c, line, true, i < n || ttl_s != 0);
		if (ret < 0)
			return ret;
	}
	if (ttl_s != 0) {
		char num[24];
		int nd = snprintf(num, sizeof(num), "%lld", (long long)ttl_s);
		int ret = make_room(o, c, klen + 64);
		if (ret < 0)
			return ret;
		put_header(c, '*', 3);
		put_bulk(c, "EXPIRE", 6);
		put_bulk(c, key, klen);
		put_bulk(c, num, (size_t)nd);
		ret = queued(o, c, line, true, false);
		if (ret < 0)
			return ret;
	}
	o->stats.sent++;
	return 0;
}

static bool is_cmd(const uint8_t *arg, size_t len, const char *name)
{
	return len == strlen(name) && strncasecmp((const char *)arg, name, len) == 0;
}

/* Commands that carry no key in argv[1] or change the connection or the
 * whole keyspace: they run alone (see online.h). */
static bool runs_alone(size_t argc, const uint8_t *const *argv, const size_t *argl)
{
	static const char *const names[] = {
	    "SELECT",       "FLUSHALL", "FLUSHDB",  "SWAPDB",  "AUTH",     "HELLO",   "CLIENT",
	    "CONFIG",       "SCRIPT",   "FUNCTION", "DEBUG",   "SHUTDOWN", "SAVE",    "BGSAVE",
	    "BGREWRITEAOF", "WAIT",     "RESET",    "PUBLISH", "EVAL",     "EVALSHA", "FCALL",
	};
	if (argc < 2)
		return true;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (is_cmd(argv[0], argl[0], names[i]))
			return true;
	return false;
}

/* State a connection keeps: such commands go to every connection. */
static bool on_every_connection(const uint8_t *name, size_t len)
{
	return is_cmd(name, len, "SELECT") || is_cmd(name, len, "AUTH") ||
	       is_cmd(name, len, "HELLO") || is_cmd(name, len, "CLIENT") ||
	       is_cmd(name, len, "RESET");
}

static int send_raw(struct online *o, struct conn *c, const uint8_t *raw, size_t raw_len,
                    uint64_t line, bool counted)
{
	int ret = make_room(o, c, raw_len);
	if (ret < 0)
		return ret;
	memcpy(c->out + c->out_len, raw, raw_len);
	c->out_len += raw_len;
	return queued(o, c, line, counted, false);
}

int online_command(struct online *o, size_t argc, const uint8_t *const *argv, const size_t *argl,
                   const uint8_t *raw, size_t raw_len, uint64_t line, char *err, size_t errlen)
{
	o->err = err;
	o->errlen = errlen;
	int ret;
	o->stats.sent++;
	if (o->sticky >= 0) {
		ret = send_raw(o, &o->conns[o->sticky], raw, raw_len, line, true);
		if (ret == 0 &&
		    (is_cmd(argv[0], argl[0], "EXEC") || is_cmd(argv[0], argl[0], "DISCARD"))) {
			o->sticky = -1;
			ret = barrier(o);
		}
		return ret;
	}
	if (is_cmd(argv[0], argl[0], "MULTI")) {
		ret = barrier(o);
		o->sticky = 0;
		return ret < 0 ? ret : send_raw(o, &o->conns[0], raw, raw_len, line, true);
	}
	if (!runs_alone(argc, argv, argl))
		return send_raw(o, route(o, argv[1], argl[1]), raw, raw_len, line, true);
	ret = barrier(o);
	bool every = on_every_connection(argv[0], argl[0]);
	for (unsigned i = 0; ret == 0 && i < (every ? o->cfg.connections : 1); i++)
		ret = send_raw(o, &o->conns[i], raw, raw_len, line, i == 0);
	return ret < 0 ? ret : barrier(o);
}

int online_finish(struct online *o, char *err, size_t errlen)
{
	o->err = err;
	o->errlen = errlen;
	return barrier(o);
}

const struct online_stats *online_get_stats(const struct online *o)
{
	return &o->stats;
}

/* ---- connections ------------------------------------------------------- */

/* Connects connection c to the first address that answers. */
static int conn_connect(struct online *o, struct conn *c, struct addrinfo *ai)
{
	int last = ECONNREFUSED;
	for (struct addrinfo *a = ai; a != NULL; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			last = errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			c->fd = fd;
			return 0;
		}
		last = errno;
		close(fd);
	}
	snprintf(o->err, o->errlen,
	         "cannot connect to %s:%s: %s (is the server running and listening there?"
	         " see --host and --port)",
	         o->cfg.host, o->cfg.port, strerror(last));
	return -last;
}

/* Sends AUTH on every connection and checks the replies. */
static int authenticate(struct online *o)
{
	size_t plen = strlen(o->cfg.password);
	for (unsigned i = 0; i < o->cfg.connections; i++) {
		struct conn *c = &o->conns[i];
		int ret = make_room(o, c, plen + 64);
		if (ret < 0)
			return ret;
		put_header(c, '*', 2);
		put_bulk(c, "AUTH", 4);
		put_bulk(c, o->cfg.password, plen);
		c->ring[(c->head + c->count) % o->cfg.window] =
		    (struct pending){.line = 0, .counted = true};
		c->count++;
	}
	void (*on_error)(void *, uint64_t, const char *, size_t) = o->cfg.on_error;
	o->cfg.on_error = NULL; /* the refusal is reported below, once */
	int ret = barrier(o);
	o->cfg.on_error = on_error;
	if (ret < 0)
		return ret;
	if (o->stats.errors > 0) {
		snprintf(o->err, o->errlen,
		         "the server at %s:%s refused the password (AUTH failed): check --password",
		         o->cfg.host, o->cfg.port);
		return -EACCES;
	}
	o->stats = (struct online_stats){0};
	return 0;
}

int online_open(struct online **out, const struct online_config *cfg, char *err, size_t errlen)
{
	*out = NULL;
	if (cfg->connections < 1 || cfg->window < 1) {
		snprintf(err, errlen, "--connections and --window must be at least 1");
		return -EINVAL;
	}
	struct online *o = calloc(1, sizeof(*o));
	if (o == NULL)
		goto nomem;
	o->cfg = *cfg;
	o->sticky = -1;
	o->err = err;
	o->errlen = errlen;
	o->conns = calloc(cfg->connections, sizeof(*o->conns));
	o->pfds = calloc(cfg->connections, sizeof(*o->pfds));
	if (o->conns == NULL || o->pfds == NULL)
		goto nomem;
	for (unsigned i = 0; i < cfg->connections; i++) {
		o->conns[i].fd = -1;
		o->conns[i].no = i;
		o->conns[i].ring = calloc(cfg->window, sizeof(struct pending));
		if (o->conns[i].ring == NULL)
			goto nomem;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	int gai = getaddrinfo(cfg->host, cfg->port, &hints, &ai);
	if (gai != 0) {
		snprintf(err, errlen, "cannot resolve %s:%s: %s (check --host and --port)",
		         cfg->host, cfg->port, gai_strerror(gai));
		online_close(o);
		return -EHOSTUNREACH;
	}
	int ret = 0;
	for (unsigned i = 0; i < cfg->connections && ret == 0; i++)
		ret = conn_connect(o, &o->conns[i], ai);
	freeaddrinfo(ai);
	if (ret == 0 && cfg->password != NULL)
		ret = authenticate(o);
	if (ret < 0) {
		online_close(o);
		return ret;
	}
	*out = o;
	return 0;
nomem:
	online_close(o);
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

void online_close(struct online *o)
{
	if (o == NULL)
		return;
	for (unsigned i = 0; o->conns != NULL && i < o->cfg.connections; i++) {
		struct conn *c = &o->conns[i];
		if (c->fd >= 0)
			close(c->fd);
		free(c->out);
		free(c->in);
		free(c->ring);
	}
	free(o->conns);
	free(o->pfds);
	free(o);
}
