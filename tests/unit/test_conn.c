/* test_conn: the connection layer end to end — 2 proactors listening with a
 * test command handler, driven by hiredis and raw sockets from the main thread:
 * pipelines with replies in order (requests finished later, on the other
 * proactor), many clients, protocol errors, inline commands, QUIT, a 10 MB
 * bulk, max_clients, the output-buffer limit, idle timeout, IPv6, shutdown
 * with clients connected — over the provided-buffer-ring path, a tiny ring
 * (ENOBUFS) and plain recv. */
#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "net/conn.h"
#include "testutil.h"

#define N_PX 2

/* ---- the test handler (runs on the proactors) ---- */

static bool arg_is(const struct conn_req *req, size_t i, const char *s)
{
	return i < req->argc && req->argv_len[i] == strlen(s) &&
	       strncasecmp((const char *)req->argv[i], s, req->argv_len[i]) == 0;
}

static void echo_reply(struct conn_req *req)
{
	resp_add_bulk(&req->reply, req->argv[1], req->argv_len[1]);
	conn_req_done(req);
}

static void delay_back(void *arg)
{
	echo_reply(arg);
}

/* On the other proactor: send the request home again. */
static void delay_remote(void *arg)
{
	struct conn_req *req = arg;
	px_send(px_current(), (unsigned)(uintptr_t)req->ctx, delay_back, req);
}

static void test_handler(struct conn *c, struct conn_req *req)
{
	struct px *px = px_current();
	if (arg_is(req, 0, "PING")) {
		resp_add_simple(&req->reply, "PONG");
		conn_req_done(req);
	} else if (arg_is(req, 0, "ECHO") && req->argc == 2) {
		echo_reply(req);
	} else if (arg_is(req, 0, "LATER") && req->argc == 2) { /* a later iteration, here */
		px_send(px, px->id, delay_back, req);
	} else if (arg_is(req, 0, "DELAY") && req->argc == 2) { /* via the other proactor */
		req->ctx = (void *)(uintptr_t)px->id;
		px_send(px, (px->id + 1) % px->n_px, delay_remote, req);
	} else if (arg_is(req, 0, "BIG") && req->argc == 2) {
		size_t n = strtoul((const char *)req->argv[1], NULL, 10);
		char *s = malloc(n);
		memset(s, 'x', n);
		resp_add_bulk(&req->reply, s, n);
		free(s);
		conn_req_done(req);
	} else if (arg_is(req, 0, "QUIT")) {
		resp_add_simple(&req->reply, "OK");
		conn_close_after_reply(c);
		conn_req_done(req);
	} else if (arg_is(req, 0, "HELLO3")) {
		c->proto = 3;
		req->reply.proto = 3; /* this reply is already in the new protocol */
		resp_add_null(&req->reply);
		conn_req_done(req);
	} else if (arg_is(req, 0, "NULL")) {
		resp_add_null(&req->reply);
		conn_req_done(req);
	} else {
		resp_add_errorf(&req->reply, "ERR unknown command '%.*s'",
		                (int)(req->argc ? req->argv_len[0] : 0),
		                req->argc ? (const char *)req->argv[0] : "");
		conn_req_done(req);
	}
}

/* The prefetch hint: it names the connection whose pipeline it looks into
 * (a live one: ASan checks the read), every key it is given must be readable
 * (ASan checks the bytes) and come in a window of 2..NET_PREFETCH;
 * test_pipeline's keys ("v<n>") are counted. */
static atomic_ulong hinted_v, hint_bad;

static void test_prefetch(struct conn *c, const struct net_hint *hints, size_t n)
{
	if (n < 2 || n > NET_PREFETCH || c == NULL || (c->proto != 2 && c->proto != 3))
		atomic_fetch_add(&hint_bad, 1);
	for (size_t i = 0; i < n; i++) {
		const struct net_hint *h = &hints[i];
		size_t digits = 0;
		for (size_t k = 1; k < h->key_len; k++)
			digits += h->key[k] >= '0' && h->key[k] <= '9';
		if (h->key_len >= 2 && h->key[0] == 'v' && digits == h->key_len - 1)
			atomic_fetch_add(&hinted_v, 1);
		if (h->name_len == 0 || (h->arg2 == NULL && h->arg2_len != 0))
			atomic_fetch_add(&hint_bad, 1);
	}
}

static atomic_uint opened, closed_count; /* on_open / on_close calls */

static void test_on_open(struct conn *c)
{
	(void)c;
	atomic_fetch_add(&opened, 1);
}

static void test_on_close(struct conn *c)
{
	CHECK(c->pending == 0 && c->fd < 0, "on_close with %u pending, fd %d", c->pending, c->fd);
	atomic_fetch_add(&closed_count, 1);
}

/* ---- starting a server on a pool ---- */

struct start_step {
	struct net_config cfg;
	int ret;
	char err[256];
	atomic_bool done;
};

static void start_on_px(void *arg)
{
	struct start_step *s = arg;
	s->ret = net_start(px_current(), &s->cfg, s->err, sizeof(s->err));
	atomic_store(&s->done, true);
}

/* Runs net_start on proactor i and waits for it. */
static int start_net(struct pool *pool, unsigned i, struct net_config *cfg)
{
	struct start_step s = {.cfg = *cfg};
	atomic_init(&s.done, false);
	pool_run_on(pool, i, start_on_px, &s);
	double deadline = test_now() + 30;
	while (!atomic_load(&s.done)) {
		if (test_now() > deadline) {
			fprintf(stderr, "FAIL: net_start did not finish\n");
			exit(1);
		}
		sched_yield();
	}
	if (s.ret < 0)
		fprintf(stderr, "net_start on proactor %u: %s\n", i, s.err);
	return s.ret;
}

static struct net_config base_config(void)
{
	struct net_config cfg = {
	    .bind = "127.0.0.1",
	    .port = 0,
	    .backlog = 511,
	    .max_clients = 10000,
	    .timeout_s = 0,
	    .output_buffer_limit = 64ULL << 20,
	    .limits = {.max_bulk_len = 512ULL << 20,
	               .max_multibulk_len = 1048576,
	               .max_inline_len = 64 * 1024},
	    .buf_ring_entries = 64,
	    .buf_size = 4096,
	    .max_pipeline = 0,
	    .handler = test_handler,
	    .prefetch = test_prefetch,
	    .on_open = test_on_open,
	    .on_close = test_on_close,
	};
	return cfg;
}

/* Starts a 2-proactor pool listening on one kernel-chosen port. */
static struct pool *start_server(struct net_config *cfg, uint16_t *port)
{
	struct pool *pool = test_pool(N_PX, 1024, 50, 256);
	if (start_net(pool, 0, cfg) < 0)
		exit(1);
	cfg->port = net_port(pool_px(pool, 0));
	CHECK(cfg->port != 0, "no port after net_start");
	if (start_net(pool, 1, cfg) < 0)
		exit(1);
	CHECK(net_port(pool_px(pool, 1)) == cfg->port, "proactor 1 listens on %u, not %u",
	      net_port(pool_px(pool, 1)), cfg->port);
	*port = cfg->port;
	return pool;
}

/* ---- clients ---- */

static redisContext *client_at(const char *ip, uint16_t port)
{
	struct timeval tv = {10, 0};
	redisContext *rc = redisConnectWithTimeout(ip, port, tv);
	if (rc == NULL || rc->err) {
		fprintf(stderr, "FAIL: cannot connect to %s:%u: %s\n", ip, port,
		        rc ? rc->errstr : "out of memory");
		exit(1);
	}
	redisSetTimeout(rc, tv);
	return rc;
}

static redisContext *client(uint16_t port)
{
	return client_at("127.0.0.1", port);
}

static int raw_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = {10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		fprintf(stderr, "FAIL: connect: %s\n", strerror(errno));
		exit(1);
	}
	return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0) {
			CHECK(w > 0, "send failed: %s", strerror(errno));
			return;
		}
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

/* Reads until EOF, a reset or the 10 s timeout; returns the bytes read (at
 * most cap kept in buf) and whether the server closed. */
static size_t raw_read_all(int fd, char *buf, size_t cap, bool *closed)
{
	size_t total = 0;
	char tmp[65536];
	*closed = false;
	for (;;) {
		ssize_t r = recv(fd, tmp, sizeof(tmp), 0);
		if (r == 0 || (r < 0 && errno == ECONNRESET)) {
			*closed = true;
			break;
		}
		if (r < 0)
			break;
		if (buf != NULL && total < cap)
			memcpy(buf + total, tmp, (size_t)r < cap - total ? (size_t)r : cap - total);
		total += (size_t)r;
	}
	if (buf != NULL)
		buf[total < cap ? total : cap - 1] = '\0';
	return total;
}

/* Sends `req` on a fresh socket and expects exactly `want`, then a close. */
static void expect_raw(uint16_t port, const char *req, const char *want)
{
	int fd = raw_connect(port);
	raw_send(fd, req, strlen(req));
	char buf[4096];
	bool closed;
	raw_read_all(fd, buf, sizeof(buf), &closed);
	CHECK(strcmp(buf, want) == 0 && closed, "sent '%s': got '%s' (closed %d), expected '%s'",
	      req, buf, closed, want);
	close(fd);
}

static void expect_pong(redisContext *rc, const char *what)
{
	redisReply *r = redisCommand(rc, "PING");
	CHECK(r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0,
	      "%s: PING failed: %s", what, r ? r->str : rc->errstr);
	if (r)
		freeReplyObject(r);
}

static bool wait_clients(unsigned n)
{
	double deadline = test_now() + 10;
	while (net_clients() != n) {
		if (test_now() > deadline)
			return false;
		usleep(1000);
	}
	return true;
}

/* ---- scenarios ---- */

/* Hundreds of pipelined commands finishing at once, a loop later, or after a
 * trip to the other proactor: replies come back in request order. */
static void test_pipeline(uint16_t port, unsigned n)
{
	redisContext *rc = client(port);
	unsigned long hinted = atomic_load(&hinted_v);
	static const char *const kinds[] = {"ECHO", "LATER", "DELAY", "ECHO"};
	for (unsigned i = 0; i < n; i++)
		redisAppendCommand(rc, "%s v%u", kinds[(i * 7 + i / 3) % 4], i);
	for (unsigned i = 0; i < n; i++) {
		redisReply *r = NULL;
		char want[32];
		snprintf(want, sizeof(want), "v%u", i);
		if (redisGetReply(rc, (void **)&r) != REDIS_OK || r == NULL) {
			CHECK(false, "pipeline reply %u missing: %s", i, rc->errstr);
			break;
		}
		CHECK(r->type == REDIS_REPLY_STRING && strcmp(r->str, want) == 0,
		      "pipeline reply %u is '%s', expected '%s'", i, r->str ? r->str : "?", want);
		freeReplyObject(r);
	}
	redisFree(rc);
	/* Sent in one write, the pipeline arrives in buffers of many commands:
	 * most of its keys are hinted before they run. */
	hinted = atomic_load(&hinted_v) - hinted;
	CHECK(hinted >= n / 2 && hinted <= n, "prefetch hint saw %lu of %u pipelined keys", hinted,
	      n);
	CHECK(atomic_load(&hint_bad) == 0, "prefetch hint called with a bad count or connection");
}

/* Many clients, each with a pipeline, interleaved. */
static void test_many_clients(uint16_t port, unsigned n_clients, unsigned depth)
{
	redisContext **rcs = calloc(n_clients, sizeof(*rcs));
	for (unsigned c = 0; c < n_clients; c++)
		rcs[c] = client(port);
	for (unsigned c = 0; c < n_clients; c++)
		for (unsigned i = 0; i < depth; i++)
			redisAppendCommand(rcs[c], i % 2 ? "DELAY c%u-%u" : "ECHO c%u-%u", c, i);
	for (unsigned c = 0; c < n_clients; c++) {
		for (unsigned i = 0; i < depth; i++) {
			redisReply *r = NULL;
			char want[32];
			snprintf(want, sizeof(want), "c%u-%u", c, i);
			if (redisGetReply(rcs[c], (void **)&r) != REDIS_OK || r == NULL) {
				CHECK(false, "client %u reply %u missing", c, i);
				break;
			}
			CHECK(r->type == REDIS_REPLY_STRING && strcmp(r->str, want) == 0,
			      "client %u reply %u is '%s'", c, i, r->str ? r->str : "?");
			freeReplyObject(r);
		}
		redisFree(rcs[c]);
	}
	free(rcs);
}

static void test_protocol_errors(uint16_t port)
{
	redisContext *other = client(port);
	expect_raw(port, "*1\r\n$x\r\n", "-ERR Protocol error: invalid bulk length\r\n");
	expect_raw(port, "PING\r\n*x\r\nPING\r\n",
	           "+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n");
	expect_raw(port, "*2\r\n$5\r\nDELAY\r\n$1\r\na\r\n*1\r\nx4\r\n",
	           "$1\r\na\r\n-ERR Protocol error: expected '$', got 'x'\r\n");
	expect_raw(port, "ECHO \"unbalanced\r\n",
	           "-ERR Protocol error: unbalanced quotes in request\r\n");
	expect_raw(port, "*1\r\n$600000000\r\n", "-ERR Protocol error: invalid bulk length\r\n");
	char *big = malloc(70000);
	memset(big, 'a', 70000);
	big[69999] = '\0';
	expect_raw(port, big, "-ERR Protocol error: too big inline request\r\n");
	free(big);
	expect_pong(other, "a client next to the protocol errors");
	redisFree(other);
}

static void test_inline_and_quit(uint16_t port)
{
	expect_raw(port, "ECHO \"a b\"\r\nPING\r\nLATER 'x y'\r\nQUIT\r\nPING\r\n",
	           "$3\r\na b\r\n+PONG\r\n$3\r\nx y\r\n+OK\r\n");
	expect_raw(port, "\r\n\r\nPING\nQUIT\r\n", "+PONG\r\n+OK\r\n");
	expect_raw(port, "HELLO3\r\nNULL\r\nQUIT\r\n", "_\r\n_\r\n+OK\r\n");
	/* EOF after a pipeline: every reply still arrives */
	int fd = raw_connect(port);
	const char req[] = "DELAY a\r\nDELAY b\r\nPING\r\n";
	raw_send(fd, req, sizeof(req) - 1);
	shutdown(fd, SHUT_WR);
	char buf[256];
	bool closed;
	raw_read_all(fd, buf, sizeof(buf), &closed);
	CHECK(strcmp(buf, "$1\r\na\r\n$1\r\nb\r\n+PONG\r\n") == 0 && closed,
	      "half-closed client got '%s' (closed %d)", buf, closed);
	close(fd);
}

/* A client that resets the connection with requests still running on the
 * other proactor: they finish as orphans and the connection is freed after. */
static void test_reset_with_requests_in_flight(uint16_t port)
{
	for (int round = 0; round < 5; round++) {
		int fd = raw_connect(port);
		char cmds[100 * 16];
		size_t len = 0;
		for (int i = 0; i < 100; i++)
			len += (size_t)snprintf(cmds + len, sizeof(cmds) - len, "DELAY %d\r\n", i);
		raw_send(fd, cmds, len);
		struct linger lg = {.l_onoff = 1, .l_linger = 0}; /* close sends RST */
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
	}
	redisContext *rc = client(port);
	expect_pong(rc, "after clients reset mid-request");
	redisFree(rc);
}

static void test_big_bulk(uint16_t port)
{
	const size_t n = 10u << 20;
	char *v = malloc(n);
	for (size_t i = 0; i < n; i++)
		v[i] = (char)('a' + i % 23);
	redisContext *rc = client(port);
	redisReply *r = redisCommand(rc, "ECHO %b", v, n);
	CHECK(r != NULL && r->type == REDIS_REPLY_STRING && (size_t)r->len == n &&
	          memcmp(r->str, v, n) == 0,
	      "10 MB ECHO came back wrong (%s)", r ? "wrong bytes" : rc->errstr);
	if (r)
		freeReplyObject(r);
	expect_pong(rc, "after the 10 MB bulk");
	redisFree(rc);
	free(v);
}

static bool ipv6_loopback_available(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static void suite(struct net_config cfg, const char *name, bool ipv6)
{
	uint16_t port;
	if (ipv6)
		cfg.bind = "127.0.0.1 ::1";
	struct pool *pool = start_server(&cfg, &port);
	redisContext *rc = client(port);
	expect_pong(rc, name);
	redisFree(rc);
	test_pipeline(port, (unsigned)test_scaled(600));
	test_many_clients(port, 40, 25);
	test_protocol_errors(port);
	test_inline_and_quit(port);
	test_reset_with_requests_in_flight(port);
	test_big_bulk(port);
	if (ipv6) {
		rc = client_at("::1", port);
		expect_pong(rc, "IPv6");
		redisFree(rc);
	}
	/* Shut down with a client connected and a request in flight. */
	int fd = raw_connect(port);
	raw_send(fd, "PING\r\nDELAY x\r\n", 15);
	char buf[64];
	CHECK(recv(fd, buf, 7, MSG_WAITALL) == 7 && memcmp(buf, "+PONG\r\n", 7) == 0,
	      "%s: no PONG before shutdown", name);
	pool_stop(pool);
	bool closed;
	raw_read_all(fd, buf, sizeof(buf), &closed);
	CHECK(closed, "%s: client still connected after pool_stop", name);
	close(fd);
	CHECK(net_clients() == 0, "%s: %u clients counted after pool_stop", name, net_clients());
}

/* max_clients, then the output-buffer limit, on a small-limit server. */
static void test_limits(void)
{
	struct net_config cfg = base_config();
	cfg.max_clients = 6;
	cfg.output_buffer_limit = 1 << 20;
	uint16_t port;
	struct pool *pool = start_server(&cfg, &port);
	struct net_stats before, after;
	net_get_stats(&before);

	redisContext *rcs[6];
	for (int i = 0; i < 6; i++) {
		rcs[i] = client(port);
		expect_pong(rcs[i], "under max_clients");
	}
	CHECK(net_clients() == 6, "%u clients counted, expected 6", net_clients());
	redisContext *extra = client(port);
	redisReply *r = redisCommand(extra, "PING");
	CHECK(r != NULL && r->type == REDIS_REPLY_ERROR &&
	          strcmp(r->str, "ERR max number of clients reached") == 0,
	      "client over max_clients got %s", r ? r->str : extra->errstr);
	if (r)
		freeReplyObject(r);
	redisFree(extra);
	for (int i = 1; i < 6; i++)
		redisFree(rcs[i]);
	CHECK(wait_clients(1), "clients did not go away: %u", net_clients());

	/* A client that asks for 30 MB of replies and reads none is cut off;
	 * the other client keeps working. */
	int fd = raw_connect(port);
	char cmds[300 * 12 + 1];
	size_t len = 0;
	for (int i = 0; i < 300; i++)
		len += (size_t)snprintf(cmds + len, sizeof(cmds) - len, "BIG 100000\r\n");
	raw_send(fd, cmds, len);
	double deadline = test_now() + 10;
	do {
		usleep(1000);
		net_get_stats(&after);
	} while (after.output_limit_disconnects == before.output_limit_disconnects &&
	         test_now() < deadline);
	CHECK(after.output_limit_disconnects == before.output_limit_disconnects + 1,
	      "output_limit_disconnects went from %llu to %llu",
	      (unsigned long long)before.output_limit_disconnects,
	      (unsigned long long)after.output_limit_disconnects);
	bool closed;
	size_t got = raw_read_all(fd, NULL, 0, &closed);
	CHECK(closed && got < 300 * 100000, "the non-reading client got %zu bytes (closed %d)", got,
	      closed);
	close(fd);
	expect_pong(rcs[0], "next to the cut-off client");
	redisFree(rcs[0]);
	CHECK(after.rejected_connections >= before.rejected_connections + 1,
	      "rejected_connections did not count the refused client");
	pool_stop(pool);
}

static void test_idle_timeout(void)
{
	struct net_config cfg = base_config();
	cfg.timeout_s = 1;
	uint16_t port;
	struct pool *pool = start_server(&cfg, &port);
	struct net_stats before, after;
	net_get_stats(&before);
	int fd = raw_connect(port);
	raw_send(fd, "PING\r\n", 6);
	char buf[64];
	bool closed;
	size_t got = raw_read_all(fd, buf, sizeof(buf), &closed);
	CHECK(closed && got == 7 && memcmp(buf, "+PONG\r\n", 7) == 0,
	      "idle client: got %zu bytes, closed %d", got, closed);
	close(fd);
	net_get_stats(&after);
	CHECK(after.timeouts == before.timeouts + 1, "timeouts went from %llu to %llu",
	      (unsigned long long)before.timeouts, (unsigned long long)after.timeouts);
	pool_stop(pool);
}

/* Shutdown while a client has megabytes of replies it does not read: the
 * flush deadline drops them and the pool stops. */
static void test_stop_with_stuck_client(void)
{
	struct net_config cfg = base_config();
	uint16_t port;
	struct pool *pool = start_server(&cfg, &port);
	int fd = raw_connect(port);
	int small = 4096;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	for (int i = 0; i < 200; i++)
		raw_send(fd, "BIG 100000\r\n", 12);
	usleep(100000);
	pool_stop(pool);
	close(fd);
	CHECK(net_clients() == 0, "%u clients counted after pool_stop", net_clients());
}

/* Accepting while the process is out of descriptors (EMFILE): the clients
 * that fit are served, the others wait in the backlog and are accepted once
 * descriptors are free again.  The descriptor table is filled with dups;
 * RLIMIT_NOFILE is lowered first so that takes few (an accept SQE reads the
 * limit when it is armed, so it is lowered before the server starts). */
static void test_emfile(void)
{
	enum { N = 5, FIT = 2, MAX_DUMMIES = 512 };
	struct rlimit old, low;
	getrlimit(RLIMIT_NOFILE, &old);
	int highest = 0;
	for (int fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			highest = fd;
	low = old;
	low.rlim_cur = (rlim_t)highest + 128;
	if (low.rlim_cur > old.rlim_cur || setrlimit(RLIMIT_NOFILE, &low) != 0) {
		fprintf(stderr, "EMFILE scenario skipped: cannot lower RLIMIT_NOFILE\n");
		return;
	}
	struct net_config cfg = base_config();
	uint16_t port;
	struct pool *pool = start_server(&cfg, &port);
	int fds[N], dummies[MAX_DUMMIES], n_dummies = 0;
	for (int i = 0; i < N; i++)
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
	int null_fd = open("/dev/null", O_RDONLY);
	while (n_dummies < MAX_DUMMIES && (dummies[n_dummies] = dup(null_fd)) >= 0)
		n_dummies++;
	CHECK(n_dummies < MAX_DUMMIES && errno == EMFILE, "filled %d descriptors without EMFILE",
	      n_dummies);
	for (int i = 0; i < FIT - 1; i++) /* with null_fd's own slot: FIT free */
		close(dummies[--n_dummies]);
	close(null_fd);

	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < N; i++) {
		CHECK(connect(fds[i], (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %s",
		      strerror(errno));
		raw_send(fds[i], "PING\r\n", 6);
	}
	struct pollfd pfd[N];
	int ready = 0;
	double deadline = test_now() + 10;
	while (ready < FIT && test_now() < deadline) {
		for (int i = 0; i < N; i++)
			pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
		poll(pfd, N, 100);
		ready = 0;
		for (int i = 0; i < N; i++)
			ready += (pfd[i].revents & POLLIN) != 0;
	}
	usleep(300000); /* the others stay unanswered: no descriptor for them */
	for (int i = 0; i < N; i++)
		pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
	poll(pfd, N, 0);
	ready = 0;
	for (int i = 0; i < N; i++)
		ready += (pfd[i].revents & POLLIN) != 0;
	CHECK(ready == FIT, "%d clients answered with %d descriptors free", ready, FIT);
	while (n_dummies > 0)
		close(dummies[--n_dummies]);
	for (int i = 0; i < N; i++) {
		char buf[8];
		struct timeval tv = {10, 0};
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		CHECK(recv(fds[i], buf, 7, MSG_WAITALL) == 7 && memcmp(buf, "+PONG\r\n", 7) == 0,
		      "client %d got no PONG after descriptors were freed", i);
		close(fds[i]);
	}
	pool_stop(pool);
	setrlimit(RLIMIT_NOFILE, &old);
}

int main(void)
{
	struct net_config cfg = base_config();
	suite(cfg, "buffer ring", ipv6_loopback_available());

	cfg = base_config();
	cfg.buf_ring_entries = 0;
	suite(cfg, "plain recv", false);

	cfg = base_config(); /* a tiny ring runs out of buffers (ENOBUFS) */
	cfg.buf_ring_entries = 4;
	cfg.buf_size = 512;
	cfg.max_pipeline = 16; /* and reading pauses and resumes */
	suite(cfg, "tiny ring", false);

	test_limits();
	test_idle_timeout();
	test_emfile();
	test_stop_with_stuck_client();

	struct net_stats st;
	net_get_stats(&st);
	CHECK(st.commands > 1000 && st.protocol_errors >= 18 && st.connections_received > 100 &&
	          st.net_input_bytes > (30u << 20) && st.net_output_bytes > (30u << 20),
	      "stats: %llu commands, %llu protocol errors, %llu connections",
	      (unsigned long long)st.commands, (unsigned long long)st.protocol_errors,
	      (unsigned long long)st.connections_received);
	CHECK(atomic_load(&opened) == atomic_load(&closed_count),
	      "%u connections opened, %u closed", atomic_load(&opened), atomic_load(&closed_count));
	return test_result();
}
