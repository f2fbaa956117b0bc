/* test_resp: the RESP parser (multibulk, inline with Redis's quoting, every
 * protocol error with its exact text, limits, any split of the input, a big
 * bulk in pieces, random garbage) and every reply writer in RESP2 and RESP3. */
#include <stdint.h>
#include <string.h>

#include "net/resp.h"
#include "testutil.h"

static const struct resp_limits default_limits = {
    .max_bulk_len = 512ULL << 20,
    .max_multibulk_len = 1048576,
    .max_inline_len = 64 * 1024,
};

/* A growable text the tests compare. */
struct text {
	char *p;
	size_t len, cap;
};

static void text_add(struct text *t, const void *data, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		t->cap = (t->len + n + 1) * 2;
		t->p = realloc(t->p, t->cap);
		if (t->p == NULL)
			abort();
	}
	memcpy(t->p + t->len, data, n);
	t->len += n;
	t->p[t->len] = '\0';
}

static void text_adds(struct text *t, const char *s)
{
	text_add(t, s, strlen(s));
}

/* Feeds `in` to a parser `chunk` bytes at a time, as a connection does (the
 * unconsumed bytes stay at the buffer's start), and describes what came out:
 * "[arg,arg]" per command, "E(msg)" for an error (then stops), "." per empty
 * command, and "+N" for bytes left unconsumed at the end. */
static void run_parser(const struct resp_limits *lim, const uint8_t *in, size_t len, size_t chunk,
                       struct text *out)
{
	struct resp_parser p;
	resp_parser_init(&p, lim);
	uint8_t *buf = malloc(len + 1);
	size_t have = 0, fed = 0;
	bool failed = false;
	while (!failed && (fed < len || have > 0)) {
		size_t n = len - fed < chunk ? len - fed : chunk;
		memcpy(buf + have, in + fed, n);
		have += n;
		fed += n;
		for (;;) {
			struct resp_command cmd;
			size_t used = 0;
			enum resp_parse_status st = resp_parse(&p, buf, have, &used, &cmd);
			CHECK(used <= have, "consumed %zu of %zu bytes", used, have);
			if (st == RESP_PARSE_MORE) {
				CHECK(used == 0, "MORE consumed %zu bytes", used);
				break;
			}
			if (st == RESP_PARSE_ERROR) {
				text_adds(out, "E(");
				text_adds(out, p.error);
				text_adds(out, ")");
				failed = true;
				break;
			}
			CHECK(used > 0, "status %d consumed nothing", (int)st);
			if (st == RESP_PARSE_EMPTY) {
				text_adds(out, ".");
			} else {
				text_adds(out, "[");
				for (size_t i = 0; i < cmd.argc; i++) {
					if (i)
						text_adds(out, ",");
					text_add(out, cmd.argv[i], cmd.argv_len[i]);
				}
				text_adds(out, "]");
			}
			memmove(buf, buf + used, have - used);
			have -= used;
			if (have == 0)
				break;
		}
		if (n == 0)
			break;
	}
	if (!failed && have > 0) {
		char tail[32];
		snprintf(tail, sizeof(tail), "+%zu", have);
		text_adds(out, tail);
	}
	free(buf);
	resp_parser_free(&p);
}

/* Parses `in` whole, one byte at a time and in 7-byte pieces; all three must
 * give `want`. */
static void expect_parse(const struct resp_limits *lim, const char *in, size_t len,
                         const char *want)
{
	static const size_t chunks[] = {SIZE_MAX, 1, 7};
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		struct text out = {0};
		run_parser(lim, (const uint8_t *)in, len,
		           chunks[i] == SIZE_MAX ? len + 1 : chunks[i], &out);
		CHECK(out.p != NULL && strcmp(out.p, want) == 0,
		      "input %.60s (chunk %zu): got '%s', expected '%s'", in, chunks[i],
		      out.p ? out.p : "", want);
		free(out.p);
	}
}

#define EXPECT(in, want) expect_parse(&default_limits, in, sizeof(in) - 1, want)

static void test_multibulk(void)
{
	EXPECT("*1\r\n$4\r\nPING\r\n", "[PING]");
	EXPECT("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n", "[SET,k,hello]");
	EXPECT("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", "[ECHO,]");
	EXPECT("*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", "[PING][PING]");
	EXPECT("*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n", "[ECHO,a\r\nb]"); /* binary-safe */
	EXPECT("*0\r\n*-1\r\n*-5\r\nPING\r\n", "...[PING]");
	/* Redis skips the two bytes after a bulk and after '\r' unread */
	EXPECT("*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n", "[PING][PING]");
	EXPECT("*1\r\n$4\r\nPI", "+10");
	EXPECT("*1\r\n$4\r", "+7");
}

static void test_inline(void)
{
	EXPECT("PING\r\n", "[PING]");
	EXPECT("PING\n", "[PING]");
	EXPECT("PING\r\r\n", "[PING]");
	EXPECT("SET  key\t value \r\n", "[SET,key,value]");
	EXPECT("\r\n\r\nPING\r\n", "..[PING]");
	EXPECT("  \r\n", ".");
	EXPECT("ECHO \"a\\x41\\n\"\r\n", "[ECHO,aA\n]");
	EXPECT("ECHO \"\\xZZ\"\r\n", "[ECHO,xZZ]");
	EXPECT("ECHO \"\\x4\"\r\n", "[ECHO,x4]");
	EXPECT("ECHO \"\\t\\r\\b\\a\\q\"\r\n", "[ECHO,\t\r\b\aq]");
	EXPECT("ECHO 'a\\'b'\r\n", "[ECHO,a'b]");
	EXPECT("ECHO 'a\\nb'\r\n", "[ECHO,a\\nb]");
	EXPECT("ECHO '' \"\"\r\n", "[ECHO,,]");
	EXPECT("ECHO a\"b c\"\r\n", "[ECHO,ab c]");
	EXPECT("ECHO \"a\" b\r\n", "[ECHO,a,b]");
	EXPECT("PING", "+4");
	EXPECT("PING \"a\r\n", "E(Protocol error: unbalanced quotes in request)");
	EXPECT("ECHO \"a\"b\r\n", "E(Protocol error: unbalanced quotes in request)");
	EXPECT("ECHO 'a'b\r\n", "E(Protocol error: unbalanced quotes in request)");
	EXPECT("ECHO 'a\r\n", "E(Protocol error: unbalanced quotes in request)");
	EXPECT("PING\r\nPING \"x\r\nPING\r\n",
	       "[PING]E(Protocol error: unbalanced quotes in request)");
}

static void test_errors(void)
{
	EXPECT("*x\r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*\r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*1 \r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*+1\r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*01\r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*-0\r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*2147483648\r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*99999999999999999999999\r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*1048577\r\n", "E(Protocol error: invalid multibulk length)");
	EXPECT("*1\r\n$x\r\n", "E(Protocol error: invalid bulk length)");
	EXPECT("*1\r\n$\r\n", "E(Protocol error: invalid bulk length)");
	EXPECT("*1\r\n$-1\r\n", "E(Protocol error: invalid bulk length)");
	EXPECT("*1\r\n$+4\r\nPING\r\n", "E(Protocol error: invalid bulk length)");
	EXPECT("*1\r\n$4 \r\n", "E(Protocol error: invalid bulk length)");
	EXPECT("*1\r\n$536870913\r\n", "E(Protocol error: invalid bulk length)");
	EXPECT("*1\r\nx4\r\nPING\r\n", "E(Protocol error: expected '$', got 'x')");
	EXPECT("*2\r\n$4\r\nECHO\r\n:4\r\n", "E(Protocol error: expected '$', got ':')");
	EXPECT("PING\r\n*x\r\nPING\r\n", "[PING]E(Protocol error: invalid multibulk length)");
}

static void test_limits(void)
{
	struct resp_limits small = {
	    .max_bulk_len = 10, .max_multibulk_len = 3, .max_inline_len = 16};
	static const char ok[] = "*3\r\n$1\r\na\r\n$10\r\n0123456789\r\n$0\r\n\r\n";
	expect_parse(&small, ok, sizeof(ok) - 1, "[a,0123456789,]");
	static const char bulk[] = "*1\r\n$11\r\n01234567890\r\n";
	expect_parse(&small, bulk, sizeof(bulk) - 1, "E(Protocol error: invalid bulk length)");
	static const char mbulk[] = "*4\r\n";
	expect_parse(&small, mbulk, sizeof(mbulk) - 1,
	             "E(Protocol error: invalid multibulk length)");
	static const char inl_ok[] = "0123456789abcdef\r\n"; /* 16 bytes before '\n'... */
	expect_parse(&small, inl_ok, sizeof(inl_ok) - 1,
	             "E(Protocol error: too big inline request)"); /* ...17 with '\r' */
	static const char inl_ok2[] = "0123456789abcde\n";
	expect_parse(&small, inl_ok2, sizeof(inl_ok2) - 1, "[0123456789abcde]");
	static const char inl_big[] = "0123456789abcdefg";
	expect_parse(&small, inl_big, sizeof(inl_big) - 1,
	             "E(Protocol error: too big inline request)");
	static const char count_big[] = "*00000000000000000000";
	expect_parse(&small, count_big, sizeof(count_big) - 1,
	             "E(Protocol error: too big mbulk count string)");
	static const char bcount_big[] = "*1\r\n$0000000000000000000000\r\n";
	expect_parse(&small, bcount_big, sizeof(bcount_big) - 1,
	             "E(Protocol error: too big bulk count string)");
}

/* A command stream of every kind, parsed whole and split at every byte
 * boundary into two pieces, must give the same commands. */
static void test_every_split(void)
{
	static const char in[] = "*2\r\n$4\r\nECHO\r\n$5\r\nhel\r\n\r\n"
	                         "PING\r\n\r\n"
	                         "SET 'k 1' \"v\\x41\"\r\n"
	                         "*0\r\n"
	                         "*3\r\n$3\r\nSET\r\n$0\r\n\r\n$3\r\nabc\r\n"
	                         "*1\r\n$4\r\nPING\r\n";
	const size_t len = sizeof(in) - 1;
	struct text whole = {0};
	run_parser(&default_limits, (const uint8_t *)in, len, len + 1, &whole);
	CHECK(strcmp(whole.p, "[ECHO,hel\r\n][PING].[SET,k 1,vA].[SET,,abc][PING]") == 0,
	      "whole stream gave '%s'", whole.p);
	for (size_t cut = 1; cut < len; cut++) {
		/* first piece `cut` bytes, then the rest: emulate by chunk = cut for
		 * two pieces only when cut >= len / 2; otherwise use a feeder */
		struct resp_parser p;
		resp_parser_init(&p, &default_limits);
		struct text out = {0};
		uint8_t buf[sizeof(in)];
		size_t have = 0;
		for (int piece = 0; piece < 2; piece++) {
			size_t from = piece == 0 ? 0 : cut, to = piece == 0 ? cut : len;
			memcpy(buf + have, in + from, to - from);
			have += to - from;
			for (;;) {
				struct resp_command cmd;
				size_t used;
				enum resp_parse_status st = resp_parse(&p, buf, have, &used, &cmd);
				if (st == RESP_PARSE_MORE || st == RESP_PARSE_ERROR)
					break;
				if (st == RESP_PARSE_EMPTY) {
					text_adds(&out, ".");
				} else {
					text_adds(&out, "[");
					for (size_t i = 0; i < cmd.argc; i++) {
						if (i)
							text_adds(&out, ",");
						text_add(&out, cmd.argv[i], cmd.argv_len[i]);
					}
					text_adds(&out, "]");
				}
				memmove(buf, buf + used, have - used);
				have -= used;
			}
		}
		CHECK(out.p != NULL && strcmp(out.p, whole.p) == 0 && have == 0,
		      "split at %zu gave '%s'", cut, out.p ? out.p : "");
		free(out.p);
		resp_parser_free(&p);
	}
	expect_parse(&default_limits, in, len, whole.p); /* and one byte at a time */
	free(whole.p);
}

/* A 4 MiB bulk fed 1000 bytes at a time: resp_parse_wanted tells what is
 * missing, and the argument arrives intact. */
static void test_big_bulk(void)
{
	const size_t n = 4u << 20;
	char head[64];
	int hl = snprintf(head, sizeof(head), "*2\r\n$3\r\nSET\r\n$%zu\r\n", n);
	size_t total = (size_t)hl + n + 2;
	uint8_t *in = malloc(total);
	memcpy(in, head, (size_t)hl);
	for (size_t i = 0; i < n; i++)
		in[hl + i] = (uint8_t)(i * 7 + 3);
	memcpy(in + hl + n, "\r\n", 2);

	struct resp_parser p;
	resp_parser_init(&p, &default_limits);
	size_t have = 0;
	enum resp_parse_status st = RESP_PARSE_MORE;
	struct resp_command cmd = {0};
	size_t used = 0;
	while (have < total) {
		have += total - have < 1000 ? total - have : 1000;
		st = resp_parse(&p, in, have, &used, &cmd);
		if (st != RESP_PARSE_MORE)
			break;
		if (have > (size_t)hl) {
			size_t want = resp_parse_wanted(&p);
			CHECK(want == total - have, "wanted %zu with %zu of %zu bytes", want, have,
			      total);
			if (want != total - have)
				break;
		}
	}
	CHECK(st == RESP_PARSE_DONE && used == total && cmd.argc == 2 && cmd.argv_len[1] == n &&
	          memcmp(cmd.argv[1], in + hl, n) == 0,
	      "big bulk: status %d, used %zu of %zu", (int)st, used, total);
	resp_parser_free(&p);
	free(in);
}

/* Deterministic xorshift. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Random bytes drawn mostly from protocol characters never crash the parser,
 * and whole or byte-by-byte parsing agree. */
static void test_garbage(void)
{
	static const char alphabet[] = "*$\r\n0123456789-+ \"'\\xab\t";
	struct resp_limits lim = {.max_bulk_len = 64, .max_multibulk_len = 8, .max_inline_len = 40};
	unsigned long rounds = test_scaled(3000);
	uint8_t in[200];
	for (unsigned long r = 0; r < rounds; r++) {
		size_t len = 1 + rng() % sizeof(in);
		for (size_t i = 0; i < len; i++) {
			uint64_t x = rng();
			in[i] = x % 4 == 0 ? (uint8_t)(x >> 8)
			                   : (uint8_t)alphabet[(x >> 8) % (sizeof(alphabet) - 1)];
		}
		struct text a = {0}, b = {0};
		run_parser(&lim, in, len, len + 1, &a);
		run_parser(&lim, in, len, 1, &b);
		CHECK((a.p == NULL && b.p == NULL) || (a.p && b.p && strcmp(a.p, b.p) == 0),
		      "round %lu: whole '%s' vs bytewise '%s'", r, a.p ? a.p : "", b.p ? b.p : "");
		free(a.p);
		free(b.p);
	}
}

/* ---- writer ---- */

static void expect_buf(struct resp_buf *b, const char *want, size_t want_len, const char *what)
{
	CHECK(b->len == want_len && memcmp(b->data, want, want_len) == 0, "%s: got '%.*s'", what,
	      (int)b->len, b->data);
	resp_buf_reset(b);
}

#define EXPECT_BUF(b, want, what) expect_buf(b, want, sizeof(want) - 1, what)

static void test_writer(void)
{
	struct resp_buf b2, b3;
	resp_buf_init(&b2, 2);
	resp_buf_init(&b3, 3);
	for (int v = 2; v <= 3; v++) {
		struct resp_buf *b = v == 2 ? &b2 : &b3;
		resp_add_simple(b, "OK");
		EXPECT_BUF(b, "+OK\r\n", "simple");
		resp_add_simple(b, "a\r\nb");
		EXPECT_BUF(b, "+a  b\r\n", "simple with CRLF");
		resp_add_error(b, "ERR wrong");
		EXPECT_BUF(b, "-ERR wrong\r\n", "error");
		resp_add_errorf(b, "ERR unknown command '%s'", "x\ny");
		EXPECT_BUF(b, "-ERR unknown command 'x y'\r\n", "errorf");
		resp_add_int(b, 0);
		resp_add_int(b, -42);
		resp_add_int(b, INT64_MIN);
		resp_add_int(b, INT64_MAX);
		EXPECT_BUF(b, ":0\r\n:-42\r\n:-9223372036854775808\r\n:9223372036854775807\r\n",
		           "int");
		resp_add_bulk(b, "a\0b", 3);
		EXPECT_BUF(b, "$3\r\na\0b\r\n", "bulk");
		resp_add_bulk(b, "", 0);
		EXPECT_BUF(b, "$0\r\n\r\n", "empty bulk");
		resp_add_bulk_str(b, "hello");
		EXPECT_BUF(b, "$5\r\nhello\r\n", "bulk_str");
		resp_add_bulk_int(b, -120);
		EXPECT_BUF(b, "$4\r\n-120\r\n", "bulk_int");
		resp_add_array(b, 2);
		EXPECT_BUF(b, "*2\r\n", "array");
	}
	resp_add_null(&b2);
	EXPECT_BUF(&b2, "$-1\r\n", "null 2");
	resp_add_null(&b3);
	EXPECT_BUF(&b3, "_\r\n", "null 3");
	resp_add_null_array(&b2);
	EXPECT_BUF(&b2, "*-1\r\n", "null array 2");
	resp_add_null_array(&b3);
	EXPECT_BUF(&b3, "_\r\n", "null array 3");
	resp_add_map(&b2, 3);
	EXPECT_BUF(&b2, "*6\r\n", "map 2");
	resp_add_map(&b3, 3);
	EXPECT_BUF(&b3, "%3\r\n", "map 3");
	resp_add_set(&b2, 4);
	EXPECT_BUF(&b2, "*4\r\n", "set 2");
	resp_add_set(&b3, 4);
	EXPECT_BUF(&b3, "~4\r\n", "set 3");
	resp_add_double(&b2, 1.5);
	EXPECT_BUF(&b2, "$3\r\n1.5\r\n", "double 2");
	resp_add_double(&b3, 1.5);
	EXPECT_BUF(&b3, ",1.5\r\n", "double 3");
	resp_add_double(&b3, 0.1);
	EXPECT_BUF(&b3, ",0.10000000000000001\r\n", "double 3 %.17g");
	resp_add_double(&b2, -1.0 / 0.0);
	EXPECT_BUF(&b2, "$4\r\n-inf\r\n", "-inf 2");
	resp_add_double(&b3, 1.0 / 0.0);
	EXPECT_BUF(&b3, ",inf\r\n", "inf 3");
	resp_add_bool(&b2, true);
	resp_add_bool(&b2, false);
	EXPECT_BUF(&b2, ":1\r\n:0\r\n", "bool 2");
	resp_add_bool(&b3, true);
	resp_add_bool(&b3, false);
	EXPECT_BUF(&b3, "#t\r\n#f\r\n", "bool 3");
	resp_add_verbatim(&b2, "info", 4);
	EXPECT_BUF(&b2, "$4\r\ninfo\r\n", "verbatim 2");
	resp_add_verbatim(&b3, "info", 4);
	EXPECT_BUF(&b3, "=8\r\ntxt:info\r\n", "verbatim 3");

	/* growth past the inline storage keeps every byte */
	for (int i = 0; i < 1000; i++)
		resp_add_int(&b2, i);
	size_t off = 0;
	bool ok = true;
	for (int i = 0; i < 1000 && ok; i++) {
		char want[16];
		int n = snprintf(want, sizeof(want), ":%d\r\n", i);
		ok = off + (size_t)n <= b2.len && memcmp(b2.data + off, want, (size_t)n) == 0;
		off += (size_t)n;
	}
	CHECK(ok && off == b2.len, "1000 integers written wrong");
	resp_buf_append(&b2, "xyz", 3);
	CHECK(memcmp(b2.data + b2.len - 3, "xyz", 3) == 0, "append after growth");
	resp_buf_free(&b2);
	resp_buf_free(&b3);
	CHECK(b2.data == b2.inline_data && b2.len == 0, "resp_buf_free left the buffer unusable");
	resp_add_simple(&b2, "again");
	EXPECT_BUF(&b2, "+again\r\n", "reuse after free");
	resp_buf_free(&b2);
}

int main(void)
{
	test_multibulk();
	test_inline();
	test_errors();
	test_limits();
	test_every_split();
	test_big_bulk();
	test_garbage();
	test_writer();
	return test_result();
}
