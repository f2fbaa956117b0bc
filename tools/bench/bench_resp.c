/* `ringkv-bench resp`: a RESP load generator for what redis-benchmark cannot
 * send — a unit of several commands that must stay together (MULTI ... EXEC,
 * a script call with its setup) — against any RESP server.
 *
 *   ringkv-bench resp --port N --unit 'MULTI;SET k:__rand_int__ v;EXEC'
 *                     [--host 127.0.0.1] [--conns 50] [--pipeline 1]
 *                     [--units 100000] [--keyspace 100000]
 *
 * A unit is commands separated by ';', arguments by spaces; every
 * "__rand_int__" in an argument becomes a random number below --keyspace
 * (12 digits, as redis-benchmark writes it), drawn once per argument.  Each
 * connection keeps --pipeline units in flight; a unit is done when every one
 * of its commands has its reply.  One thread, non-blocking sockets, epoll.
 *
 * Progress: a line a second on stderr (units done, the last second's rate).
 * Output (stdout, one line): units/s, latency p50 and p99 in ms (a unit's,
 * from its first byte sent to its last reply read), and the count of error
 * replies (an error anywhere inside a reply, or a null EXEC reply, counts):
 *   units_per_s=N p50_ms=X p99_ms=Y errors=E
 * Exit status 1 when the server misbehaved (a connection closed, a malformed
 * reply) or any reply was an error; 2 on a usage error.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "net/resp.h"

#define UNIT_CMDS_MAX 64   /* commands per unit */
#define UNIT_ARGS_MAX 64   /* arguments per command */
#define LAT_BUCKETS   4096 /* latency histogram: 10 µs buckets, the last one open */
#define IN_CHUNK      65536

struct unit_cmd {
	unsigned argc;
	char *argv[UNIT_ARGS_MAX];
};

struct opts {
	const char *host;
	uint16_t port;
	unsigned conns, pipeline;
	uint64_t units, keyspace;
	struct unit_cmd cmds[UNIT_CMDS_MAX];
	unsigned ncmds;
};

struct bconn {
	int fd;
	char *out;
	size_t out_len, out_off, out_cap;
	char *in;
	size_t in_len, in_cap;
	uint64_t *sent_ns; /* send time of each unit in flight, a ring of `pipeline` */
	unsigned head, inflight;
	unsigned replies; /* replies read of the oldest unit */
	bool want_out;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void out_reserve(struct bconn *c, size_t more)
{
	if (c->out_len + more <= c->out_cap)
		return;
	if (c->out_off > 0) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	while (c->out_len + more > c->out_cap)
		c->out_cap = c->out_cap ? 2 * c->out_cap : 4096;
	char *out = realloc(c->out, c->out_cap);
	if (out == NULL) {
		fprintf(stderr, "ringkv-bench resp: out of memory\n");
		exit(1);
	}
	c->out = out;
}

static void out_add(struct bconn *c, const char *p, size_t n)
{
	out_reserve(c, n);
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
}

/* Appends one unit, its random numbers drawn now. */
static void unit_encode(struct bconn *c, const struct opts *o)
{
	char arg[1024], head[32];
	for (unsigned i = 0; i < o->ncmds; i++) {
		const struct unit_cmd *uc = &o->cmds[i];
		int n = snprintf(head, sizeof(head), "*%u\r\n", uc->argc);
		out_add(c, head, (size_t)n);
		for (unsigned a = 0; a < uc->argc; a++) {
			const char *s = uc->argv[a], *r = strstr(s, "__rand_int__");
			size_t len;
			if (r != NULL) {
				len = (size_t)snprintf(arg, sizeof(arg), "%.*s%012llu%s", (int)(r - s), s,
				                       (unsigned long long)(rng_next() % o->keyspace),
				                       r + 12);
				s = arg;
			} else {
				len = strlen(s);
			}
			n = snprintf(head, sizeof(head), "$%zu\r\n", len);
			out_add(c, head, (size_t)n);
			out_add(c, s, len);
			out_add(c, "\r\n", 2);
		}
	}
}

static int conn_open(const struct opts *o, struct bconn *c)
{
	char port[16];
	snprintf(port, sizeof(port), "%u", o->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
	int ret = getaddrinfo(o->host, port, &hints, &ai);
	if (ret != 0) {
		fprintf(stderr, "ringkv-bench resp: %s: %s\n", o->host, gai_strerror(ret));
		return -1;
	}
	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->fd < 0 || (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)) {
		fprintf(stderr, "ringkv-bench resp: connect to %s:%u: %s (is the server running?)\n",
		        o->host, o->port, strerror(errno));
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->sent_ns = calloc(o->pipeline, sizeof(*c->sent_ns));
	c->in_cap = IN_CHUNK;
	c->in = malloc(c->in_cap);
	return c->sent_ns != NULL && c->in != NULL ? 0 : -1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ringkv-bench resp --port N --unit 'CMD ARG...;CMD ARG...'\n"
	           "                         [--host H] [--conns 50] [--pipeline 1]"
	           " [--units 100000] [--keyspace 100000]\n");
}

static int parse_unit(struct opts *o, char *spec)
{
	char *save1;
	for (char *cmd = strtok_r(spec, ";", &save1); cmd != NULL; cmd = strtok_r(NULL, ";", &save1)) {
		if (o->ncmds == UNIT_CMDS_MAX)
			return -1;
		struct unit_cmd *uc = &o->cmds[o->ncmds];
		char *save2;
		uc->argc = 0;
		for (char *a = strtok_r(cmd, " ", &save2); a != NULL; a = strtok_r(NULL, " ", &save2)) {
			if (uc->argc == UNIT_ARGS_MAX || strlen(a) > 900)
				return -1;
			uc->argv[uc->argc++] = a;
		}
		if (uc->argc > 0)
			o->ncmds++;
	}
	return o->ncmds > 0 ? 0 : -1;
}

int bench_resp_main(int argc, char **argv)
{
	struct opts o = {.host = "127.0.0.1", .conns = 50, .pipeline = 1, .units = 100000,
	                 .keyspace = 100000};
	uint64_t v;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (val == NULL) {
			usage(stderr);
			return 2;
		}
		i++;
		if (strcmp(a, "--host") == 0)
			o.host = val;
		else if (strcmp(a, "--port") == 0 && bench_parse_u64(val, 1, 65535, &v))
			o.port = (uint16_t)v;
		else if (strcmp(a, "--conns") == 0 && bench_parse_u64(val, 1, 10000, &v))
			o.conns = (unsigned)v;
		else if (strcmp(a, "--pipeline") == 0 && bench_parse_u64(val, 1, 10000, &v))
			o.pipeline = (unsigned)v;
		else if (strcmp(a, "--units") == 0 && bench_parse_u64(val, 1, UINT64_MAX, &v))
			o.units = v;
		else if (strcmp(a, "--keyspace") == 0 && bench_parse_u64(val, 1, UINT64_MAX, &v))
			o.keyspace = v;
		else if (strcmp(a, "--unit") == 0 && parse_unit(&o, argv[i]) == 0)
			;
		else {
			fprintf(stderr, "ringkv-bench resp: bad option %s %s\n", a, val);
			usage(stderr);
			return 2;
		}
	}
	if (o.port == 0 || o.ncmds == 0) {
		usage(stderr);
		return 2;
	}
	int ep = epoll_create1(0);
	struct bconn *cs = calloc(o.conns, sizeof(*cs));
	uint64_t *hist = calloc(LAT_BUCKETS, sizeof(*hist));
	if (ep < 0 || cs == NULL || hist == NULL) {
		fprintf(stderr, "ringkv-bench resp: out of memory\n");
		return 1;
	}
	uint64_t sent = 0, done = 0;
	uint64_t errors = 0;
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < o.conns; i++) {
		struct bconn *c = &cs[i];
		if (conn_open(&o, c) < 0)
			return 1;
		while (c->inflight < o.pipeline && sent < o.units) {
			unit_encode(c, &o);
			c->sent_ns[(c->head + c->inflight) % o.pipeline] = t0;
			c->inflight++;
			sent++;
		}
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
		c->want_out = true;
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	struct epoll_event evs[256];
	uint64_t next_progress = t0 + 1000000000ull, done_at_progress = 0;
	while (done < o.units) {
		uint64_t now = now_ns();
		if (now >= next_progress) { /* a progress line a second, on stderr */
			fprintf(stderr, "ringkv-bench resp: %llu of %llu units, %.0f units/s\r",
			        (unsigned long long)done, (unsigned long long)o.units,
			        (double)(done - done_at_progress) * 1e9 / (double)(now - next_progress +
			                                                        1000000000ull));
			next_progress = now + 1000000000ull;
			done_at_progress = done;
		}
		int n = epoll_wait(ep, evs, 256, 10000);
		if (n <= 0) {
			fprintf(stderr, "ringkv-bench resp: no reply for 10 s (%llu of %llu units done)\n",
			        (unsigned long long)done, (unsigned long long)o.units);
			return 1;
		}
		for (int k = 0; k < n; k++) {
			struct bconn *c = evs[k].data.ptr;
			if (evs[k].events & EPOLLIN) {
				if (c->in_len == c->in_cap) {
					char *in = realloc(c->in, 2 * c->in_cap);
					if (in == NULL) {
						fprintf(stderr, "ringkv-bench resp: out of memory\n");
						return 1;
					}
					c->in = in;
					c->in_cap *= 2;
				}
				ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
				if (r == 0 || (r < 0 && errno != EAGAIN)) {
					fprintf(stderr, "ringkv-bench resp: the server closed a connection\n");
					return 1;
				}
				if (r > 0)
					c->in_len += (size_t)r;
				size_t off = 0;
				uint64_t t = now_ns();
				for (;;) {
					const char *reply = c->in + off;
					long len = resp_reply_len((const uint8_t *)reply, c->in_len - off,
					                          &errors, NULL, NULL);
					if (len < 0) {
						fprintf(stderr, "ringkv-bench resp: a malformed reply\n");
						return 1;
					}
					if (len == 0)
						break;
					if (reply[0] == '*' && reply[1] == '-')
						errors++; /* a null array: an EXEC aborted by WATCH */
					off += (size_t)len;
					if (++c->replies < o.ncmds)
						continue;
					c->replies = 0;
					uint64_t us = (t - c->sent_ns[c->head]) / 10000;
					hist[us < LAT_BUCKETS ? us : LAT_BUCKETS - 1]++;
					c->head = (c->head + 1) % o.pipeline;
					c->inflight--;
					done++;
					if (sent < o.units) {
						unit_encode(c, &o);
						c->sent_ns[(c->head + c->inflight) % o.pipeline] = now_ns();
						c->inflight++;
						sent++;
					}
				}
				memmove(c->in, c->in + off, c->in_len - off);
				c->in_len -= off;
			}
			while (c->out_off < c->out_len) {
				ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
				if (w < 0 && errno == EAGAIN)
					break;
				if (w < 0) {
					fprintf(stderr, "ringkv-bench resp: write: %s\n", strerror(errno));
					return 1;
				}
				c->out_off += (size_t)w;
			}
			if (c->out_off == c->out_len)
				c->out_off = c->out_len = 0;
			bool want = c->out_len > 0;
			if (want != c->want_out) {
				struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
				                         .data.ptr = c};
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				c->want_out = want;
			}
		}
	}
	if (next_progress > t0 + 1000000000ull)
		fprintf(stderr, "\n");
	double secs = (double)(now_ns() - t0) / 1e9;
	double p[2] = {0.5, 0.99}, ms[2] = {0, 0};
	for (int q = 0; q < 2; q++) {
		uint64_t want = (uint64_t)(p[q] * (double)done), seen = 0;
		for (unsigned b = 0; b < LAT_BUCKETS; b++) {
			seen += hist[b];
			if (seen > want) {
				ms[q] = (b + 1) * 0.01;
				break;
			}
		}
	}
	printf("units_per_s=%.0f p50_ms=%.3f p99_ms=%.3f errors=%llu\n", (double)done / secs, ms[0],
	       ms[1], (unsigned long long)errors);
	for (unsigned i = 0; i < o.conns; i++) {
		close(cs[i].fd);
		free(cs[i].out);
		free(cs[i].in);
		free(cs[i].sent_ns);
	}
	free(cs);
	free(hist);
	close(ep);
	if (errors > 0)
		fprintf(stderr, "ringkv-bench resp: %llu error replies: the figures measure errors, not "
		                "the unit; check the unit with redis-cli\n",
		        (unsigned long long)errors);
	return errors > 0 ? 1 : 0;
}
