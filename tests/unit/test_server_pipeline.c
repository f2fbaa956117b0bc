/* test_server_pipeline: hiredis against a real ringkv-server with two shards — pipelines of
 * hundreds of mixed commands (writes, reads, counters, multi-key commands spanning both shards,
 * error replies, values larger than a receive buffer) with every reply checked in order against
 * a model; four connections pipelining at once, sharing one counter; a pipeline written a few
 * bytes at a time.  The server is started on a free port with a temporary data directory and
 * must exit 0 on SIGTERM.  RINGKV_TEST_TARGET=redis runs the same against redis-server. */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

/* ---- growable byte strings ------------------------------------------------ */

struct sbuf {
	char *p;    /* malloc'd, NUL-terminated; NULL until the first append */
	size_t len; /* bytes, NUL excluded */
	size_t cap;
};

static void sb_add(struct sbuf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		if (b->p == NULL) {
			fprintf(stderr, "out of memory\n");
			exit(1);
		}
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	sb_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void sb_free(struct sbuf *b)
{
	free(b->p);
	*b = (struct sbuf){0};
}

/* ---- the server under test ----------------------------------------------- */

struct server {
	pid_t pid;
	int port;
	char dir[256]; /* temporary directory: data/ and server.log inside */
	char log[300];
};

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		perror("free_port");
		exit(1);
	}
	close(fd);
	return ntohs(a.sin_port);
}

static bool target_is_redis(void)
{
	const char *t = getenv("RINGKV_TEST_TARGET");
	return t != NULL && strcmp(t, "redis") == 0;
}

/* Prints the last lines of the server's log (on failure). */
static void server_print_log(const struct server *s)
{
	char cmd[400];
	fprintf(stderr, "---- server log %s ----\n", s->log);
	fflush(stderr);
	snprintf(cmd, sizeof(cmd), "tail -n 60 '%s' >&2", s->log);
	if (system(cmd) != 0)
		fprintf(stderr, "(could not print the log)\n");
	fprintf(stderr, "----\n");
}

/* Starts the server on a free port and waits until it answers PING (60 s at most: ASan
 * builds on a busy machine start slowly).  Exits 1 with the log if it does not. */
static void server_start(struct server *s)
{
	char data[300], port[16];
	const char *build = getenv("RINGKV_BUILD") ? getenv("RINGKV_BUILD") : "build";
	char binary[512];

	snprintf(s->dir, sizeof(s->dir), "%s/ringkv-pipeline.XXXXXX",
	         getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (mkdtemp(s->dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(data, sizeof(data), "%s/data", s->dir);
	snprintf(s->log, sizeof(s->log), "%s/server.log", s->dir);
	mkdir(data, 0700);
	s->port = free_port();
	snprintf(port, sizeof(port), "%d", s->port);
	snprintf(binary, sizeof(binary), "%s/ringkv-server", build);

	s->pid = fork();
	if (s->pid < 0) {
		perror("fork");
		exit(1);
	}
	if (s->pid == 0) {
		int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (target_is_redis())
			execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind",
			      "127.0.0.1", "--dir", data, "--save", "", "--appendonly", "no",
			      "--databases", "1", (char *)NULL);
		else
			execl(binary, binary, "--port", port, "--dir", data, "--threads", "2",
			      "--set", "storage.durability=fsync", (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", target_is_redis() ? "redis-server" : binary,
		        strerror(errno));
		_exit(127);
	}

	double deadline = test_now() + 60;
	while (test_now() < deadline) {
		int status;
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			fprintf(stderr, "FAIL: the server exited (status 0x%x) before serving\n",
			        status);
			server_print_log(s);
			exit(1);
		}
		struct timeval tv = {.tv_sec = 2};
		redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
		if (c != NULL && c->err == 0) {
			redisSetTimeout(c, tv);
			redisReply *r = redisCommand(c, "PING");
			bool ok = r != NULL &&
			          (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR);
			if (r != NULL)
				freeReplyObject(r);
			redisFree(c);
			if (ok)
				return;
		} else if (c != NULL) {
			redisFree(c);
		}
		usleep(50 * 1000);
	}
	fprintf(stderr, "FAIL: the server did not answer PING on port %d within 60 s\n", s->port);
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	server_print_log(s);
	exit(1);
}

/* Sends SIGTERM and waits (30 s at most); checks the exit status is 0; removes the
 * temporary directory (after printing the log if any check failed). */
static void server_stop(struct server *s)
{
	int status = 0;
	kill(s->pid, SIGTERM);
	double deadline = test_now() + 30;
	pid_t got = 0;
	while ((got = waitpid(s->pid, &status, WNOHANG)) == 0 && test_now() < deadline)
		usleep(20 * 1000);
	if (got == 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, &status, 0);
		CHECK(false, "the server did not exit within 30 s of SIGTERM");
	} else {
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "exit status after SIGTERM: expected 0, got 0x%x", status);
	}
	if (test_failures)
		server_print_log(s);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", s->dir);
}

static redisContext *connect_to(const struct server *s)
{
	struct timeval tv = {.tv_sec = 30};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
	if (c == NULL || c->err) {
		fprintf(stderr, "FAIL: connect to port %d: %s\n", s->port,
		        c ? c->errstr : "out of memory");
		exit(1);
	}
	redisSetTimeout(c, tv);
	return c;
}

/* ---- keys on both shards (Redis Cluster slots, contiguous ranges per shard) */

static unsigned crc16(const char *p, size_t n)
{
	unsigned crc = 0;
	for (size_t i = 0; i < n; i++) {
		crc ^= (unsigned)(uint8_t)p[i] << 8;
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
	}
	return crc;
}

static unsigned shard_of(const char *key)
{
	return (crc16(key, strlen(key)) % 16384) * 2 / 16384; /* no hash tags in these keys */
}

/* Fills keys[0..n) with distinct names "prefix:N", key i on shard i % 2. */
static void keys_both_shards(char (*keys)[32], int n, const char *prefix)
{
	int next = 0;
	for (int i = 0; i < n; i++) {
		do
			snprintf(keys[i], sizeof(keys[i]), "%s:%d", prefix, next++);
		while (shard_of(keys[i]) != (unsigned)(i % 2));
	}
}

/* ---- pipelines: commands with the exact RESP2 reply each must get --------- */

#define MAX_ARGS 8

struct pcmd {
	int argc;
	char *argv[MAX_ARGS];
	size_t argvlen[MAX_ARGS];
	struct sbuf want; /* the expected reply, as canonical RESP2 */
};

struct pipeline {
	struct pcmd *cmds;
	size_t n, cap;
};

/* Appends a command (argc strings, each with its length) and returns its expected reply
 * buffer for the caller to fill. */
static struct sbuf *pl_add(struct pipeline *pl, int argc, const char *const *argv,
                           const size_t *lens)
{
	if (pl->n == pl->cap) {
		pl->cap = pl->cap ? pl->cap * 2 : 256;
		pl->cmds = realloc(pl->cmds, pl->cap * sizeof(*pl->cmds));
		if (pl->cmds == NULL)
			exit(1);
	}
	struct pcmd *c = &pl->cmds[pl->n++];
	*c = (struct pcmd){.argc = argc};
	for (int i = 0; i < argc; i++) {
		c->argvlen[i] = lens ? lens[i] : strlen(argv[i]);
		c->argv[i] = malloc(c->argvlen[i] + 1);
		memcpy(c->argv[i], argv[i], c->argvlen[i]);
		c->argv[i][c->argvlen[i]] = '\0';
	}
	return &c->want;
}

/* pl_cmd(pl, "SET", "k", "v", NULL): a command of C strings. */
static struct sbuf *pl_cmd(struct pipeline *pl, ...)
{
	const char *argv[MAX_ARGS];
	int argc = 0;
	va_list ap;
	va_start(ap, pl);
	for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < MAX_ARGS;)
		argv[argc++] = a;
	va_end(ap);
	return pl_add(pl, argc, argv, NULL);
}

static void pl_free(struct pipeline *pl)
{
	for (size_t i = 0; i < pl->n; i++) {
		for (int a = 0; a < pl->cmds[i].argc; a++)
			free(pl->cmds[i].argv[a]);
		sb_free(&pl->cmds[i].want);
	}
	free(pl->cmds);
	*pl = (struct pipeline){0};
}

static void want_status(struct sbuf *w, const char *s)
{
	sb_printf(w, "+%s\r\n", s);
}

static void want_int(struct sbuf *w, long long v)
{
	sb_printf(w, ":%lld\r\n", v);
}

static void want_bulk(struct sbuf *w, const char *p, size_t n)
{
	if (p == NULL) {
		sb_printf(w, "$-1\r\n");
		return;
	}
	sb_printf(w, "$%zu\r\n", n);
	sb_add(w, p, n);
	sb_add(w, "\r\n", 2);
}

static void want_err(struct sbuf *w, const char *msg)
{
	sb_printf(w, "-%s\r\n", msg);
}

/* The reply as canonical RESP2 (what want_* build). */
static void reply_resp(struct sbuf *out, const redisReply *r)
{
	switch (r->type) {
	case REDIS_REPLY_STATUS:
		sb_printf(out, "+");
		sb_add(out, r->str, (size_t)r->len);
		sb_add(out, "\r\n", 2);
		break;
	case REDIS_REPLY_ERROR:
		sb_printf(out, "-");
		sb_add(out, r->str, (size_t)r->len);
		sb_add(out, "\r\n", 2);
		break;
	case REDIS_REPLY_INTEGER:
		want_int(out, r->integer);
		break;
	case REDIS_REPLY_NIL:
		sb_printf(out, "$-1\r\n");
		break;
	case REDIS_REPLY_STRING:
		want_bulk(out, r->str, (size_t)r->len);
		break;
	case REDIS_REPLY_ARRAY:
		sb_printf(out, "*%zu\r\n", r->elements);
		for (size_t i = 0; i < r->elements; i++)
			reply_resp(out, r->element[i]);
		break;
	default:
		sb_printf(out, "?type %d\r\n", r->type);
	}
}

/* A printable, shortened form of a command or reply for failure messages. */
static void show(char *buf, size_t cap, const char *p, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 8 < cap; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (i == 120) {
			o += (size_t)snprintf(buf + o, cap - o, "...(%zu bytes)", n);
			break;
		}
		if (ch == '\r')
			o += (size_t)snprintf(buf + o, cap - o, "\\r");
		else if (ch == '\n')
			o += (size_t)snprintf(buf + o, cap - o, "\\n");
		else if (ch < 32 || ch > 126)
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
	}
	buf[o < cap ? o : cap - 1] = '\0';
}

static void pl_append(redisContext *c, const struct pipeline *pl, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		redisAppendCommandArgv(c, pl->cmds[i].argc, (const char **)pl->cmds[i].argv,
		                       pl->cmds[i].argvlen);
}

/* Reads the replies of commands [from, to) of pl from c and checks each in order.  Returns
 * false (after recording failures) if the connection broke. */
static bool pl_check(redisContext *c, const struct pipeline *pl, size_t from, size_t to,
                     const char *what)
{
	int bad = 0;
	for (size_t i = from; i < to; i++) {
		redisReply *r = NULL;
		if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL) {
			CHECK(false, "%s: reply #%zu: connection error: %s", what, i, c->errstr);
			return false;
		}
		struct sbuf got = {0};
		reply_resp(&got, r);
		const struct sbuf *want = &pl->cmds[i].want;
		bool same = got.len == want->len && memcmp(got.p, want->p, got.len) == 0;
		if (!same) {
			if (++bad <= 10) {
				char cmd[300] = "", w[300], g[300];
				size_t o = 0;
				for (int a = 0; a < pl->cmds[i].argc && o < 200; a++) {
					show(cmd + o, sizeof(cmd) - o, pl->cmds[i].argv[a],
					     pl->cmds[i].argvlen[a]);
					o = strlen(cmd);
					cmd[o++] = ' ';
					cmd[o] = '\0';
				}
				show(w, sizeof(w), want->p, want->len);
				show(g, sizeof(g), got.p, got.len);
				CHECK(same, "%s: reply #%zu to %s: expected %s, got %s", what, i,
				      cmd, w, g);
			}
		}
		sb_free(&got);
		freeReplyObject(r);
	}
	CHECK(bad <= 10, "%s: %d more mismatched replies", what, bad - 10);
	return true;
}

/* ---- the model of the keys a pipeline touches ----------------------------- */

#define NKEYS 64

struct model {
	char keys[NKEYS][32];
	struct sbuf val[NKEYS];
	bool present[NKEYS];
	long long counter[NKEYS]; /* INCRBY target "<key>:n" */
};

static void model_init(struct model *m, const char *prefix)
{
	memset(m, 0, sizeof(*m));
	keys_both_shards(m->keys, NKEYS, prefix);
}

static void model_free(struct model *m)
{
	for (int i = 0; i < NKEYS; i++)
		sb_free(&m->val[i]);
}

/* Adds n mixed commands on m's keys to pl, each with the reply the model predicts.  seed
 * varies the mix.  Values are sometimes larger than a 16 KiB receive buffer. */
static void build_mixed(struct pipeline *pl, struct model *m, size_t n, unsigned seed)
{
	static char big[40000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + (i * 7) % 26);

	for (size_t i = 0; i < n; i++) {
		unsigned x = (unsigned)(i * 2654435761u) ^ seed;
		int a = (int)((x >> 3) % NKEYS), b = (int)((x >> 11) % NKEYS);
		char val[64], num[32], ctr[48];
		struct sbuf *w;
		snprintf(ctr, sizeof(ctr), "%s:n", m->keys[a]);
		switch ((i + seed) % 14) {
		case 0:
		case 1: { /* SET: small, or big every so often */
			size_t len = (x % 23 == 0) ? 17000 + x % 20000 : 0;
			const char *v = big;
			if (len == 0) {
				len = (size_t)snprintf(val, sizeof(val), "v-%zu-%u", i, seed);
				v = val;
			}
			const char *argv[] = {"SET", m->keys[a], v};
			size_t lens[] = {3, strlen(m->keys[a]), len};
			want_status(pl_add(pl, 3, argv, lens), "OK");
			m->val[a].len = 0;
			sb_add(&m->val[a], v, len);
			m->present[a] = true;
			break;
		}
		case 2:
		case 3:
			w = pl_cmd(pl, "GET", m->keys[a], NULL);
			want_bulk(w, m->present[a] ? m->val[a].p : NULL, m->val[a].len);
			break;
		case 4:
			snprintf(num, sizeof(num), "%u", x % 1000);
			w = pl_cmd(pl, "INCRBY", ctr, num, NULL);
			m->counter[a] += x % 1000;
			want_int(w, m->counter[a]);
			break;
		case 5:
			w = pl_cmd(pl, "APPEND", m->keys[a], "+x", NULL);
			if (!m->present[a])
				m->val[a].len = 0;
			sb_add(&m->val[a], "+x", 2);
			m->present[a] = true;
			want_int(w, (long long)m->val[a].len);
			break;
		case 6:
			w = pl_cmd(pl, "EXISTS", m->keys[a], m->keys[b], "none:1", NULL);
			want_int(w, m->present[a] + m->present[b]);
			break;
		case 7:
			w = pl_cmd(pl, "DEL", m->keys[a], NULL);
			want_int(w, m->present[a]);
			m->present[a] = false;
			break;
		case 8: { /* MGET over keys of both shards */
			int c2 = (a + 1) % NKEYS, d = (a + 2) % NKEYS;
			w = pl_cmd(pl, "MGET", m->keys[a], m->keys[c2], "none:2", m->keys[d],
			           m->keys[b], NULL);
			sb_printf(w, "*5\r\n");
			want_bulk(w, m->present[a] ? m->val[a].p : NULL, m->val[a].len);
			want_bulk(w, m->present[c2] ? m->val[c2].p : NULL, m->val[c2].len);
			want_bulk(w, NULL, 0);
			want_bulk(w, m->present[d] ? m->val[d].p : NULL, m->val[d].len);
			want_bulk(w, m->present[b] ? m->val[b].p : NULL, m->val[b].len);
			break;
		}
		case 9: { /* MSET over two shards (a and a+1 are on different shards) */
			int c2 = (a + 1) % NKEYS;
			snprintf(val, sizeof(val), "m-%zu", i);
			w = pl_cmd(pl, "MSET", m->keys[a], val, m->keys[c2], val, NULL);
			want_status(w, "OK");
			m->val[a].len = m->val[c2].len = 0;
			sb_add(&m->val[a], val, strlen(val));
			sb_add(&m->val[c2], val, strlen(val));
			m->present[a] = m->present[c2] = true;
			break;
		}
		case 10:
			w = pl_cmd(pl, "STRLEN", m->keys[a], NULL);
			want_int(w, m->present[a] ? (long long)m->val[a].len : 0);
			break;
		case 11:
			snprintf(val, sizeof(val), "nx-%zu", i);
			w = pl_cmd(pl, "SETNX", m->keys[a], val, NULL);
			want_int(w, !m->present[a]);
			if (!m->present[a]) {
				m->val[a].len = 0;
				sb_add(&m->val[a], val, strlen(val));
				m->present[a] = true;
			}
			break;
		case 12: /* errors in the middle of a pipeline */
			if (x % 2) {
				w = pl_cmd(pl, "GET", m->keys[a], "extra", NULL);
				want_err(w, "ERR wrong number of arguments for 'get' command");
			} else {
				w = pl_cmd(pl, "NOSUCHCMD", "x", NULL);
				want_err(
				    w, "ERR unknown command 'NOSUCHCMD', with args beginning with: "
				       "'x' ");
			}
			break;
		default:
			w = pl_cmd(pl, "GETDEL", m->keys[a], NULL);
			want_bulk(w, m->present[a] ? m->val[a].p : NULL, m->val[a].len);
			m->present[a] = false;
			break;
		}
	}
}

/* ---- the tests ------------------------------------------------------------- */

/* One connection, 1500 mixed commands sent in one go, then 3 more pipelines of 400. */
static void test_one_connection(const struct server *s)
{
	redisContext *c = connect_to(s);
	struct model m;
	struct pipeline pl = {0};
	model_init(&m, "one");
	build_mixed(&pl, &m, 1500, 1);
	pl_append(c, &pl, 0, pl.n);
	pl_check(c, &pl, 0, pl.n, "one connection, 1500 commands");
	for (unsigned round = 0; round < 3; round++) {
		size_t from = pl.n;
		build_mixed(&pl, &m, 400, 100 + round);
		pl_append(c, &pl, from, pl.n);
		pl_check(c, &pl, from, pl.n, "one connection, later pipeline");
	}
	pl_free(&pl);
	model_free(&m);
	redisFree(c);
}

/* Writes everything hiredis holds for c without reading replies. */
static void flush_out(redisContext *c)
{
	int done = 0;
	while (!done)
		if (redisBufferWrite(c, &done) != REDIS_OK) {
			CHECK(false, "write: %s", c->errstr);
			return;
		}
}

/* Four connections, each with its own keys, pipelining at the same time: every connection's
 * batch is sent before any reply is read; all of them INCR one shared counter. */
static void test_many_connections(const struct server *s)
{
	enum { NCONN = 4, ROUNDS = 5, BATCH = 200 };
	redisContext *c[NCONN];
	struct model *m = calloc(NCONN, sizeof(*m));
	struct pipeline pl[NCONN] = {{0}};
	long long shared = 0;
	for (int i = 0; i < NCONN; i++) {
		char prefix[16];
		snprintf(prefix, sizeof(prefix), "conn%d", i);
		c[i] = connect_to(s);
		model_init(&m[i], prefix);
	}
	for (int round = 0; round < ROUNDS; round++) {
		size_t from[NCONN];
		for (int i = 0; i < NCONN; i++) {
			from[i] = pl[i].n;
			build_mixed(&pl[i], &m[i], BATCH, (unsigned)(round * NCONN + i));
			for (int k = 0; k < 10; k++)
				pl_cmd(&pl[i], "INCR", "shared:counter", NULL);
			pl_append(c[i], &pl[i], from[i], pl[i].n);
			flush_out(c[i]);
		}
		for (int i = 0; i < NCONN; i++) {
			/* the shared counter's values depend on the interleaving: each connection
			 * must see it increase, and the total is checked at the end */
			size_t incr_from = pl[i].n - 10;
			pl_check(c[i], &pl[i], from[i], incr_from, "four connections");
			long long last = 0;
			for (size_t k = incr_from; k < pl[i].n; k++) {
				redisReply *r = NULL;
				if (redisGetReply(c[i], (void **)&r) != REDIS_OK || r == NULL) {
					CHECK(false, "INCR shared:counter: connection error");
					break;
				}
				CHECK(r->type == REDIS_REPLY_INTEGER && r->integer > last,
				      "INCR shared:counter: expected an integer above %lld, got "
				      "type %d "
				      "%lld",
				      last, r->type, r->integer);
				last = r->integer;
				freeReplyObject(r);
			}
			shared += 10;
		}
	}
	redisReply *r = redisCommand(c[0], "GET shared:counter");
	char want[32];
	snprintf(want, sizeof(want), "%lld", shared);
	CHECK(r != NULL && r->type == REDIS_REPLY_STRING && strcmp(r->str, want) == 0,
	      "GET shared:counter: expected \"%s\", got %s", want,
	      r && r->type == REDIS_REPLY_STRING ? r->str : "(not a string)");
	if (r)
		freeReplyObject(r);
	for (int i = 0; i < NCONN; i++) {
		pl_free(&pl[i]);
		model_free(&m[i]);
		redisFree(c[i]);
	}
	free(m);
}

/* A pipeline written to the socket 1 to 7 bytes at a time (TCP_NODELAY), so commands and
 * bulk lengths are cut at every possible point. */
static void test_split_writes(const struct server *s)
{
	redisContext *c = connect_to(s);
	struct model m;
	struct pipeline pl = {0};
	struct sbuf wire = {0};
	int one = 1;
	model_init(&m, "split");
	build_mixed(&pl, &m, 120, 7);
	for (size_t i = 0; i < pl.n; i++) {
		char *cmd = NULL;
		int n = redisFormatCommandArgv(&cmd, pl.cmds[i].argc,
		                               (const char **)pl.cmds[i].argv, pl.cmds[i].argvlen);
		sb_add(&wire, cmd, (size_t)n);
		free(cmd);
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* big values go in bigger pieces so the test stays fast */
	for (size_t off = 0, k = 0; off < wire.len; k++) {
		size_t piece = 1 + k % 7;
		if (off > 0 && wire.len - off > 20000 && k % 3 == 0)
			piece = 4096;
		if (piece > wire.len - off)
			piece = wire.len - off;
		ssize_t w = write(c->fd, wire.p + off, piece);
		if (w <= 0) {
			CHECK(false, "write: %s", strerror(errno));
			break;
		}
		off += (size_t)w;
	}
	pl_check(c, &pl, 0, pl.n, "pipeline written 1-7 bytes at a time");
	sb_free(&wire);
	pl_free(&pl);
	model_free(&m);
	redisFree(c);
}

int main(void)
{
	struct server s;
	signal(SIGPIPE, SIG_IGN);
	server_start(&s);
	test_one_connection(&s);
	test_many_connections(&s);
	test_split_writes(&s);
	server_stop(&s);
	return test_result();
}
