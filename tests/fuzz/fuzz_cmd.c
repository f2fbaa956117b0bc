/* fuzz_cmd: libFuzzer target for the command dispatcher and every handler,
 * against a real store.
 *
 * LLVMFuzzerInitialize brings up what ringkv-server brings up, once:
 * configuration defaults with a temporary storage.dir (2 shards, so keys
 * route between shards), durability none, 1 MiB segments, 1 MiB caches and
 * bulk limit, a pool of 1 proactor, shard_open_all, cmd_init, and a listener
 * on 127.0.0.1 (net_start with cmd_handle, as the server passes it).  Each
 * input is decoded into commands, sent pipelined as RESP on a new loopback
 * connection, and runs the real path: net/conn.c parses and builds the
 * struct conn_req, cmd_handle dispatches, the handlers reach the stores.
 * No test-only hook is needed.  Checks, any failure aborting:
 *   - every command gets exactly one reply, well-formed RESP (RESP2 until a
 *     HELLO, RESP3 types allowed from it on), error replies start with an
 *     upper-case code; nothing more arrives before the server's EOF;
 *   - the connection closes cleanly after our EOF (or after QUIT, or early
 *     at a command the protocol limits may refuse);
 *   - no request stays in flight once the connection is gone;
 *   - at exit the server shuts down as ringkv-server does, so
 *     LeakSanitizer then reports only real leaks.
 *
 * Input: one command per line; arguments separated by single spaces (two
 * spaces give an empty argument).  Escapes in an argument: \s space, \n LF,
 * \r CR, \0 NUL, \\ backslash, \xHH a byte, \{N}c the byte c N times (N up to
 * 1 MiB + 1, so short inputs reach the key, value and bulk limits).  A first
 * argument that is one byte >= 0x80 names command (byte - 0x80) of the table,
 * and a second one names a subcommand of CLIENT, CONFIG or COMMAND, so one
 * mutated byte reaches every command (tests/fuzz/fuzz_cmd.dict holds the
 * names and keywords for the rest).
 *
 * Left out, as they would end the run rather than find a bug: SHUTDOWN
 * unless an argument makes it an error reply.  After each input the state
 * CONFIG SET changes (requirepass, log level) is restored, and every
 * FUZZ_FLUSH_EVERY inputs a FLUSHALL keeps the keyspace small.
 *
 *   make fuzz FUZZ_TARGETS=cmd         run it (tests/fuzz/fuzz.sh)
 *   build/fuzz/fuzz_cmd INPUT          replay one input
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/socket.h>

#include "fuzz_util.h"
#include "net/conn.h"
#include "net/resp.h"
#include "service/cmd.h"
#include "service/config.h"
#include "service/shard.h"
#include "storage/layout.h"

#define FUZZ_MAX_CMDS    256              /* commands decoded per input */
#define FUZZ_MAX_ARGS    4096             /* arguments per command */
#define FUZZ_MAX_BYTES   (4u << 20)       /* argument bytes per input, after escapes */
#define FUZZ_MAX_REPEAT  ((1u << 20) + 1) /* \{N}c: one past server.max_bulk_len */
#define FUZZ_SHARDS      2
#define FUZZ_FLUSH_EVERY 1000
#define FUZZ_WAIT_MS     60000 /* a reply, or the close, later than this is a hang */
#define REPLY_MAX_DEPTH  64

/* ---- the server ---------------------------------------------------------- */

static struct cfg cfg;     /* the server's configuration; CONFIG SET changes it */
static struct pool *pool;  /* 1 proactor */
static uint16_t port;      /* where it listens */
static char dir[512];      /* temporary: the data directory is dir/data */
static unsigned long runs; /* inputs run */

static void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), __noreturn__));
static void fuzz_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fuzz_cmd: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

struct net_step {
	struct net_config nc;
	int ret;
	char err[512];
};

static void net_start_step(void *arg)
{
	struct net_step *s = arg;
	s->ret = net_start(px_current(), &s->nc, s->err, sizeof(s->err));
}

static void net_stop_step(void *arg)
{
	(void)arg;
	net_stop_accepting(px_current());
	net_close_all(px_current());
}

/* Restores what CONFIG SET may have changed (proactor 0 owns cfg). */
static void restore_step(void *arg)
{
	(void)arg;
	if (cmd_requirepass()[0] != '\0') {
		cfg.server.requirepass[0] = '\0';
		cmd_set_requirepass("");
	}
	cfg.log.level = LOG_LEVEL_ERROR;
	__atomic_store_n(&logging_level, LOG_LEVEL_ERROR, __ATOMIC_RELAXED);
}

/* Waits until no request is in flight; false after `ms` milliseconds. */
static bool wait_idle(unsigned ms)
{
	double deadline = test_now() + ms / 1000.0;
	while (cmd_inflight(0) != 0) {
		if (test_now() > deadline)
			return false;
		usleep(100);
	}
	return true;
}

/* Shuts down as ringkv-server does: clients closed, requests drained, the
 * stores closed, the pool stopped; then removes the data. */
static void server_stop(void)
{
	test_on_px(pool, net_stop_step, NULL);
	if (!wait_idle(FUZZ_WAIT_MS))
		fuzz_fail("requests still in flight at shutdown");
	/* The closes complete on the proactor: wait for them, so every client's
	 * state is freed (on_close) before the pool stops.  A closed connection
	 * is freed only after its last reply came back, which may be after the
	 * request stopped counting as in flight: wait for the frees, not the
	 * closes. */
	double deadline = test_now() + FUZZ_WAIT_MS / 1000.0;
	while (net_conns_allocated() != 0) {
		if (test_now() > deadline)
			fuzz_fail("connections still open at shutdown");
		usleep(100);
	}
	shard_close_all();
	pool_stop(pool);
	fuzz_rmtree(dir);
}

static void cfg_must_set(const char *assignment)
{
	char err[1024];
	if (cfg_set(&cfg, assignment, err, sizeof(err)) < 0)
		fuzz_fail("%s", err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[1024], assignment[700];
	(void)argc;
	(void)argv;
	fuzz_tmpdir("fuzz_cmd", dir, sizeof(dir));
	signal(SIGPIPE, SIG_IGN);

	cfg_defaults(&cfg);
	snprintf(assignment, sizeof(assignment), "storage.dir=%s/data", dir);
	cfg_must_set(assignment);
	cfg_must_set("storage.durability=none");
	cfg_must_set("storage.segment_size=1mb");
	cfg_must_set("storage.cache_size=1mb");
	cfg_must_set("storage.index_cache_size=1mb");
	cfg_must_set("server.max_bulk_len=1mb");
	cfg_must_set("server.threads=1");
	cfg_must_set("uring.busy_poll_us=0");
	cfg_must_set("uring.buf_size=1kb"); /* commands often span receive buffers */
	cfg_must_set("log.level=error");
	logging_level = cfg.log.level;

	sigset_t old = fuzz_block_signals();
	pool = test_pool(1, (unsigned)cfg.server.msg_queue_size, 0, (unsigned)cfg.uring.entries);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	logging_level = cfg.log.level;

	unsigned shards;
	if (layout_open(cfg.storage.dir, FUZZ_SHARDS, &shards, err, sizeof(err)) < 0 ||
	    shard_open_all(pool, &cfg, err, sizeof(err)) < 0 ||
	    cmd_init(pool, &cfg, err, sizeof(err)) < 0)
		fuzz_fail("cannot start: %s", err);

	static struct net_step ns;
	ns.nc = (struct net_config){
	    .bind = "127.0.0.1",
	    .port = 0,
	    .backlog = (unsigned)cfg.server.tcp_backlog,
	    .max_clients = (unsigned)cfg.server.max_clients,
	    .output_buffer_limit = 0, /* no limit: a reply of any size must arrive whole */
	    .limits = {.max_bulk_len = cfg.server.max_bulk_len,
	               .max_multibulk_len = (uint64_t)cfg.server.max_multibulk_len,
	               .max_inline_len = cfg.server.max_inline_len},
	    .buf_ring_entries = (unsigned)cfg.uring.buf_ring_entries,
	    .buf_size = (unsigned)cfg.uring.buf_size,
	    .handler = cmd_handle,
	    .prefetch = cmd_prefetch,
	    .on_open = cmd_on_open,
	    .on_close = cmd_on_close, /* frees WATCH and MULTI state, as the server's */
	};
	test_on_px(pool, net_start_step, &ns);
	if (ns.ret < 0)
		fuzz_fail("cannot listen: %s", ns.err);
	port = net_port(pool_px(pool, 0));
	atexit(server_stop);
	return 0;
}

/* ---- decoding an input into commands ------------------------------------ */

struct bytes {
	uint8_t *p;
	size_t len, cap;
};

static void bytes_put(struct bytes *b, const void *data, size_t n)
{
	if (b->len + n > b->cap || b->p == NULL) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (b->p == NULL)
			fuzz_fail("out of memory");
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void bytes_fill(struct bytes *b, uint8_t c, size_t n)
{
	uint8_t chunk[4096];
	memset(chunk, c, sizeof(chunk));
	while (n > 0) {
		size_t k = n < sizeof(chunk) ? n : sizeof(chunk);
		bytes_put(b, chunk, k);
		n -= k;
	}
}

/* What the harness knows of one command it sent. */
struct sent_cmd {
	char name[32];   /* the first argument, lowercased and cut (messages, checks) */
	bool resp3_ok;   /* a HELLO was sent before it or is it: RESP3 replies allowed */
	bool may_refuse; /* the protocol limits may refuse it and close the connection
	                    (over RESP_UNAUTH_MAX_ARGS/BULK before AUTH, or over
	                    server.max_bulk_len) */
	bool closes;     /* QUIT: the connection closes after its reply */
};

static struct bytes req;  /* the RESP bytes sent */
static struct bytes args; /* one command's decoded arguments, back to back (p is
                             never NULL once decoding began) */
static size_t arg_off[FUZZ_MAX_ARGS + 1];
static struct sent_cmd sent[FUZZ_MAX_CMDS];

static int hex_value(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The byte a one-letter escape stands for (\s \n \r \0 \\), or -1. */
static int escaped_byte(uint8_t e)
{
	switch (e) {
	case 's':
		return ' ';
	case 'n':
		return '\n';
	case 'r':
		return '\r';
	case '0':
		return 0;
	case '\\':
		return '\\';
	default:
		return -1;
	}
}

/* Appends word w[0..n) to `args` with the escapes of the top of this file
 * decoded; *budget bounds the bytes the input may still produce. */
static void decode_word(const uint8_t *w, size_t n, size_t *budget)
{
	for (size_t i = 0; i < n; i++) {
		if (*budget == 0)
			return;
		uint8_t out = w[i];
		if (w[i] == '\\' && i + 1 < n) {
			uint8_t e = w[i + 1];
			if (escaped_byte(e) >= 0) {
				out = (uint8_t)escaped_byte(e);
				i++;
			} else if (e == 'x' && i + 3 < n && hex_value(w[i + 2]) >= 0 &&
			           hex_value(w[i + 3]) >= 0) {
				out = (uint8_t)(hex_value(w[i + 2]) << 4 | hex_value(w[i + 3]));
				i += 3;
			} else if (e == '{') {
				size_t j = i + 2, count = 0;
				while (j < n && w[j] >= '0' && w[j] <= '9' &&
				       count <= FUZZ_MAX_REPEAT)
					count = count * 10 + (size_t)(w[j++] - '0');
				if (j + 1 < n && w[j] == '}') {
					if (count > FUZZ_MAX_REPEAT)
						count = FUZZ_MAX_REPEAT;
					if (count > *budget)
						count = *budget;
					bytes_fill(&args, w[j + 1], count);
					*budget -= count;
					i = j + 1;
					continue;
				}
			}
		}
		bytes_put(&args, &out, 1);
		(*budget)--;
	}
}

/* The table entry named by args[0] (any case), or NULL. */
static const struct cmd_def *find_def(const struct cmd_def *table, const uint8_t *name, size_t len)
{
	for (const struct cmd_def *d = table; d->name != NULL; d++)
		if (strlen(d->name) == len && strncasecmp(d->name, (const char *)name, len) == 0)
			return d;
	return NULL;
}

/* A table entry picked by one byte >= 0x80, or NULL when w is not that. */
static const struct cmd_def *def_by_byte(const struct cmd_def *table, const uint8_t *w, size_t n)
{
	if (n != 1 || w[0] < 0x80)
		return NULL;
	size_t count = 0;
	while (table[count].name != NULL)
		count++;
	return count ? &table[(w[0] - 0x80) % count] : NULL;
}

static bool arg_is(size_t i, const char *word)
{
	size_t len = arg_off[i + 1] - arg_off[i];
	return len == strlen(word) &&
	       strncasecmp((const char *)args.p + arg_off[i], word, len) == 0;
}

/* SHUTDOWN sends the process SIGTERM unless it answers an error: with ABORT
 * or a word other than NOSAVE, SAVE, NOW and FORCE (cmd_server.c). */
static bool shutdown_fails(size_t argc)
{
	for (size_t i = 1; i < argc; i++)
		if (!arg_is(i, "nosave") && !arg_is(i, "save") && !arg_is(i, "now") &&
		    !arg_is(i, "force"))
			return true;
	return false;
}

/* Decodes one line into `args`; appends it to `req` and `sent` unless the
 * harness leaves it out.  Returns false after a command that closes the
 * connection (nothing more is sent). */
static bool decode_line(const uint8_t *line, size_t len, size_t *budget, size_t *ncmds,
                        bool *hello_seen)
{
	size_t argc = 0, start = 0;
	const struct cmd_def *def = NULL;
	args.len = 0;
	bytes_put(&args, "", 0);
	for (size_t i = 0; i <= len && argc < FUZZ_MAX_ARGS; i++) {
		if (i < len && line[i] != ' ')
			continue;
		const uint8_t *w = line + start;
		size_t n = i - start;
		const struct cmd_def *pick = NULL;
		if (argc == 0)
			pick = def_by_byte(cmd_table, w, n);
		else if (argc == 1 && def != NULL && def->subcommands != NULL)
			pick = def_by_byte(def->subcommands, w, n);
		arg_off[argc] = args.len;
		if (pick != NULL)
			bytes_put(&args, pick->name, strlen(pick->name));
		else
			decode_word(w, n, budget);
		argc++;
		arg_off[argc] = args.len;
		if (argc == 1)
			def = find_def(cmd_table, args.p, args.len);
		start = i + 1;
	}
	if (arg_is(0, "shutdown") && !shutdown_fails(argc))
		return true;
	/* A script may loop forever (only SCRIPT KILL ends it): EVAL is left out;
	 * scripts are checked by tests/integration/test_scripting.py. */
	if (arg_is(0, "eval") || arg_is(0, "eval_ro"))
		return true;

	struct sent_cmd *s = &sent[(*ncmds)++];
	size_t name_len = arg_off[1] < sizeof(s->name) - 1 ? arg_off[1] : sizeof(s->name) - 1;
	for (size_t i = 0; i < name_len; i++) {
		uint8_t c = args.p[i];
		s->name[i] = c >= 'A' && c <= 'Z'    ? (char)(c | 0x20)
		             : c >= 0x20 && c < 0x7f ? (char)c
		                                     : '?';
	}
	s->name[name_len] = '\0';
	*hello_seen |= arg_is(0, "hello");
	s->resp3_ok = *hello_seen;
	s->closes = arg_is(0, "quit");
	s->may_refuse = argc > RESP_UNAUTH_MAX_ARGS;

	char head[32];
	bytes_put(&req, head, (size_t)snprintf(head, sizeof(head), "*%zu\r\n", argc));
	for (size_t i = 0; i < argc; i++) {
		size_t n = arg_off[i + 1] - arg_off[i];
		s->may_refuse |= n > RESP_UNAUTH_MAX_BULK;
		bytes_put(&req, head, (size_t)snprintf(head, sizeof(head), "$%zu\r\n", n));
		bytes_put(&req, args.p + arg_off[i], n);
		bytes_put(&req, "\r\n", 2);
	}
	return !s->closes;
}

/* Decodes the whole input into `req` and `sent`; returns the command count. */
static size_t decode(const uint8_t *data, size_t size)
{
	size_t budget = FUZZ_MAX_BYTES, ncmds = 0, start = 0;
	bool hello_seen = false;
	req.len = 0;
	for (size_t i = 0; i <= size && ncmds < FUZZ_MAX_CMDS; i++) {
		if (i < size && data[i] != '\n')
			continue;
		if (i > start &&
		    !decode_line(data + start, i - start, &budget, &ncmds, &hello_seen))
			break;
		start = i + 1;
	}
	return ncmds;
}

/* ---- checking replies ---------------------------------------------------- */

/* Where a line's CRLF is: its length without CRLF, -1 if the CRLF has not
 * arrived, -2 if a CR or LF stands alone inside it. */
static long line_length(const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (b[i] == '\n')
			return -2;
		if (b[i] == '\r')
			return i + 1 == len ? -1 : b[i + 1] == '\n' ? (long)i : -2;
	}
	return -1;
}

static bool is_double(const uint8_t *s, size_t n)
{
	char text[400];
	if (n == 0 || n >= sizeof(text))
		return false;
	memcpy(text, s, n);
	text[n] = '\0';
	if (strcmp(text, "inf") == 0 || strcmp(text, "-inf") == 0 || strcmp(text, "nan") == 0)
		return true;
	char *end;
	strtod(text, &end);
	return *end == '\0' && (text[0] == '-' || (text[0] >= '0' && text[0] <= '9'));
}

static bool is_big_number(const uint8_t *s, size_t n)
{
	size_t i = n > 0 && s[0] == '-';
	if (i == n)
		return false;
	for (; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* The size of the one reply at b[0..len): > 0 when complete, 0 when more
 * bytes are needed, -1 when malformed (*why says how).  Lengths and integers
 * are read with net/resp's resp_parse_int64. */
static long reply_size(const uint8_t *b, size_t len, bool resp3, int depth, const char **why)
{
	if (len == 0)
		return 0;
	long n = line_length(b + 1, len - 1);
	if (n == -1)
		return 0;
	if (n == -2) {
		*why = "a CR or LF inside a line";
		return -1;
	}
	const uint8_t *line = b + 1;
	size_t head = 1 + (size_t)n + 2;
	int64_t v;
	bool is3 = strchr("_,#!=(%~>", b[0]) != NULL;
	if (is3 && !resp3) {
		*why = "a RESP3 type on a RESP2 connection";
		return -1;
	}
	switch (b[0]) {
	case '+':
		return (long)head;
	case '-':
		if (n == 0 || line[0] < 'A' || line[0] > 'Z') {
			*why = "an error without an upper-case code";
			return -1;
		}
		return (long)head;
	case ':':
		if (!resp_parse_int64(line, (size_t)n, &v)) {
			*why = "a bad integer";
			return -1;
		}
		return (long)head;
	case '_':
		if (n != 0) {
			*why = "a null with text";
			return -1;
		}
		return (long)head;
	case ',':
		if (!is_double(line, (size_t)n)) {
			*why = "a bad double";
			return -1;
		}
		return (long)head;
	case '#':
		if (n != 1 || (line[0] != 't' && line[0] != 'f')) {
			*why = "a bad boolean";
			return -1;
		}
		return (long)head;
	case '(':
		if (!is_big_number(line, (size_t)n)) {
			*why = "a bad big number";
			return -1;
		}
		return (long)head;
	case '$':
	case '!':
	case '=':
		if (!resp_parse_int64(line, (size_t)n, &v) || v < (b[0] == '$' ? -1 : 0)) {
			*why = "a bad bulk length";
			return -1;
		}
		if (v == -1)
			return (long)head;
		if (len < head + (size_t)v + 2)
			return 0;
		if (b[head + (size_t)v] != '\r' || b[head + (size_t)v + 1] != '\n') {
			*why = "a bulk string not followed by CRLF";
			return -1;
		}
		if (b[0] == '=' && (v < 4 || b[head + 3] != ':')) {
			*why = "a verbatim string without its format";
			return -1;
		}
		return (long)(head + (size_t)v + 2);
	case '*':
	case '%':
	case '~':
	case '>': {
		if (!resp_parse_int64(line, (size_t)n, &v) || v < (b[0] == '*' ? -1 : 0)) {
			*why = "a bad aggregate length";
			return -1;
		}
		if (depth >= REPLY_MAX_DEPTH) {
			*why = "aggregates nested too deep";
			return -1;
		}
		size_t off = head;
		uint64_t elements = v < 0 ? 0 : (uint64_t)v * (b[0] == '%' ? 2 : 1);
		for (uint64_t i = 0; i < elements; i++) {
			long r = reply_size(b + off, len - off, resp3, depth + 1, why);
			if (r <= 0)
				return r;
			off += (size_t)r;
		}
		return (long)off;
	}
	default:
		*why = "an unknown type byte";
		return -1;
	}
}

/* ---- running an input ---------------------------------------------------- */

static int connect_server(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		fuzz_fail("cannot connect to the server: %s", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* Closes without TIME_WAIT (an input a few hundred microseconds long would
 * otherwise use up the ephemeral ports). */
static void close_now(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Sends req, reads and checks the replies of sent[0..n) until the server
 * closes the connection (after our EOF). */
static void run(size_t n)
{
	static struct bytes in;
	int fd = connect_server();
	size_t sent_bytes = 0, parsed = 0, replies = 0;
	bool eof_sent = false, last_refused = false;
	in.len = 0;
	for (;;) {
		if (sent_bytes == req.len && !eof_sent) {
			shutdown(fd, SHUT_WR);
			eof_sent = true;
		}
		struct pollfd pfd = {.fd = fd, .events = POLLIN | (eof_sent ? 0 : POLLOUT)};
		int pr = poll(&pfd, 1, FUZZ_WAIT_MS);
		if (pr == 0)
			fuzz_fail("no reply to command %zu of %zu (%s) within %d ms", replies + 1,
			          n, replies < n ? sent[replies].name : "-", FUZZ_WAIT_MS);
		if (pr < 0)
			continue;
		if ((pfd.revents & POLLOUT) && !eof_sent) {
			ssize_t w = send(fd, req.p + sent_bytes, req.len - sent_bytes,
			                 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w > 0)
				sent_bytes += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				sent_bytes = req.len; /* the server closed early: checked below */
		}
		if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		uint8_t buf[65536];
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r <= 0)
			break; /* closed (EOF, or a reset after an early close) */
		bytes_put(&in, buf, (size_t)r);
		for (;;) {
			const char *why = NULL;
			bool resp3 = replies < n ? sent[replies].resp3_ok : true;
			long size = reply_size(in.p + parsed, in.len - parsed, resp3, 0, &why);
			if (size == 0)
				break;
			if (size < 0 || replies == n)
				fuzz_fail("reply %zu of %zu (command %s): %s: '%.200s'",
				          replies + 1, n, replies < n ? sent[replies].name : "none",
				          size < 0 ? why : "more replies than commands",
				          (const char *)in.p + parsed);
			last_refused = (size_t)size > 20 &&
			               memcmp(in.p + parsed, "-ERR Protocol error", 19) == 0;
			parsed += (size_t)size;
			replies++;
		}
	}
	if (parsed != in.len)
		fuzz_fail("the connection closed inside reply %zu of %zu: '%.200s'", replies + 1, n,
		          (const char *)in.p + parsed);
	if (replies < n && !last_refused && !sent[replies].may_refuse)
		fuzz_fail("the connection closed after %zu of %zu replies (next: %s)", replies, n,
		          sent[replies].name);
	close_now(fd);
	if (!wait_idle(FUZZ_WAIT_MS))
		fuzz_fail("a request is still in flight %d ms after its connection closed",
		          FUZZ_WAIT_MS);
	/* ... and the connection is freed with its client state (WATCH, MULTI):
	 * libFuzzer counts what one input allocated and did not free. */
	double deadline = test_now() + FUZZ_WAIT_MS / 1000.0;
	while (net_conns_allocated() != 0) {
		if (test_now() > deadline)
			fuzz_fail("a connection is not freed %d ms after it closed", FUZZ_WAIT_MS);
		usleep(50);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n = decode(data, size);
	if (n > 0)
		run(n);
	if (cmd_requirepass()[0] != '\0' ||
	    __atomic_load_n(&logging_level, __ATOMIC_RELAXED) != LOG_LEVEL_ERROR)
		test_on_px(pool, restore_step, NULL);
	if (++runs % FUZZ_FLUSH_EVERY == 0) {
		static const uint8_t flushall[] = "flushall";
		if (decode(flushall, sizeof(flushall) - 1) == 1)
			run(1);
	}
	return 0;
}
