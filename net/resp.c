/* resp: see resp.h.  The request grammar and error texts follow Redis 7.0's
 * networking.c (processMultibulkBuffer, processInlineBuffer) and sds.c
 * (sdssplitargs), checked against a real redis-server 7.0:
 *
 *   - a request starting with '*' is a multibulk; anything else an inline line;
 *   - numbers are strict decimals (no '+', no leading zero, no blanks), as
 *     Redis's string2ll reads them; a count <= 0 is an empty command;
 *   - a line ends at '\r' and one more byte, which is not checked (Redis
 *     skips it unread), and so is the pair of bytes after a bulk's data;
 *   - an inline line ends at '\n' (a '\r' before it is dropped) and is split
 *     with sdssplitargs' rules: blanks separate, "..." takes \n \r \t \b \a
 *     \xHH and \<any>, '...' takes \', a closing quote must be followed by a
 *     blank or the end, a NUL byte ends the line.
 *
 * One deliberate difference: Redis measures an over-long header or inline
 * line only while its end has not arrived, so the same bytes may pass or fail
 * depending on how the network cut them.  Here a line longer than the limit
 * fails whether or not its end is already in the buffer.
 */
#include "resp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESP_ARGV_KEEP 1024 /* argv slots kept between commands; more are freed */

/* ---- writer ------------------------------------------------------------ */

static void resp_oom(size_t want)
{
	fprintf(stderr, "ringkv: out of memory growing a reply buffer to %zu bytes; aborting\n",
	        want);
	abort();
}

/* Makes room for `more` bytes after len; returns where they go. */
static inline char *resp_reserve(struct resp_buf *b, size_t more)
{
	size_t want = b->len + more;
	if (want > b->cap) {
		size_t cap = b->cap * 2;
		if (cap < want)
			cap = want;
		char *p;
		if (b->data == b->inline_data) {
			p = malloc(cap);
			if (p != NULL)
				memcpy(p, b->data, b->len);
		} else {
			p = realloc(b->data, cap);
		}
		if (p == NULL)
			resp_oom(cap);
		b->data = p;
		b->cap = cap;
	}
	return b->data + b->len;
}

void resp_buf_init(struct resp_buf *b, unsigned proto)
{
	b->data = b->inline_data;
	b->len = 0;
	b->cap = RESP_INLINE_BYTES;
	b->proto = (uint8_t)proto;
}

void resp_buf_free(struct resp_buf *b)
{
	if (b->data != b->inline_data)
		free(b->data);
	b->data = b->inline_data;
	b->len = 0;
	b->cap = RESP_INLINE_BYTES;
}

void resp_buf_reset(struct resp_buf *b)
{
	b->len = 0;
}

void resp_buf_append(struct resp_buf *b, const void *data, size_t len)
{
	char *p = resp_reserve(b, len);
	memcpy(p, data, len);
	b->len += len;
}

/* Writes v in decimal at p; returns the number of bytes. */
static size_t resp_u64_digits(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (size_t i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static size_t resp_i64_digits(char *p, int64_t v)
{
	if (v < 0) {
		p[0] = '-';
		return 1 + resp_u64_digits(p + 1, (uint64_t)0 - (uint64_t)v);
	}
	return resp_u64_digits(p, (uint64_t)v);
}

/* Appends "<type><v>\r\n". */
static void resp_add_header(struct resp_buf *b, char type, int64_t v)
{
	char *p = resp_reserve(b, 24);
	p[0] = type;
	size_t n = 1 + resp_i64_digits(p + 1, v);
	p[n++] = '\r';
	p[n++] = '\n';
	b->len += n;
}

/* Appends "<type><s>\r\n" with CR and LF in s turned into blanks, so a
 * message can never break the protocol (Redis does the same to errors). */
static void resp_add_line(struct resp_buf *b, char type, const char *s, size_t n)
{
	char *p = resp_reserve(b, n + 3);
	p[0] = type;
	for (size_t i = 0; i < n; i++)
		p[1 + i] = (s[i] == '\r' || s[i] == '\n') ? ' ' : s[i];
	p[n + 1] = '\r';
	p[n + 2] = '\n';
	b->len += n + 3;
}

void resp_add_simple(struct resp_buf *b, const char *s)
{
	resp_add_line(b, '+', s, strlen(s));
}

void resp_add_error(struct resp_buf *b, const char *msg)
{
	resp_add_line(b, '-', msg, strlen(msg));
}

void resp_add_errorf(struct resp_buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof(small)) {
		resp_add_line(b, '-', small, (size_t)n);
		return;
	}
	char *big = malloc((size_t)n + 1);
	if (big == NULL)
		resp_oom((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	resp_add_line(b, '-', big, (size_t)n);
	free(big);
}

void resp_add_int(struct resp_buf *b, int64_t v)
{
	resp_add_header(b, ':', v);
}

void resp_add_bulk(struct resp_buf *b, const void *data, size_t n)
{
	char *p = resp_reserve(b, n + 26);
	p[0] = '$';
	size_t h = 1 + resp_u64_digits(p + 1, n);
	p[h++] = '\r';
	p[h++] = '\n';
	memcpy(p + h, data, n);
	p[h + n] = '\r';
	p[h + n + 1] = '\n';
	b->len += h + n + 2;
}

void resp_add_bulk_str(struct resp_buf *b, const char *s)
{
	resp_add_bulk(b, s, strlen(s));
}

void resp_add_bulk_int(struct resp_buf *b, int64_t v)
{
	char digits[24];
	resp_add_bulk(b, digits, resp_i64_digits(digits, v));
}

void resp_add_null(struct resp_buf *b)
{
	if (b->proto >= 3)
		resp_buf_append(b, "_\r\n", 3);
	else
		resp_buf_append(b, "$-1\r\n", 5);
}

void resp_add_null_array(struct resp_buf *b)
{
	if (b->proto >= 3)
		resp_buf_append(b, "_\r\n", 3);
	else
		resp_buf_append(b, "*-1\r\n", 5);
}

void resp_add_array(struct resp_buf *b, size_t n)
{
	resp_add_header(b, '*', (int64_t)n);
}

void resp_add_map(struct resp_buf *b, size_t n)
{
	if (b->proto >= 3)
		resp_add_header(b, '%', (int64_t)n);
	else
		resp_add_header(b, '*', (int64_t)(2 * n));
}

void resp_add_set(struct resp_buf *b, size_t n)
{
	resp_add_header(b, b->proto >= 3 ? '~' : '*', (int64_t)n);
}

void resp_add_double(struct resp_buf *b, double d)
{
	char digits[64];
	int n = snprintf(digits, sizeof(digits), "%.17g", d);
	if (b->proto >= 3)
		resp_add_line(b, ',', digits, (size_t)n);
	else
		resp_add_bulk(b, digits, (size_t)n);
}

void resp_add_bool(struct resp_buf *b, bool v)
{
	if (b->proto >= 3)
		resp_buf_append(b, v ? "#t\r\n" : "#f\r\n", 4);
	else
		resp_buf_append(b, v ? ":1\r\n" : ":0\r\n", 4);
}

void resp_add_verbatim(struct resp_buf *b, const char *s, size_t n)
{
	if (b->proto < 3) {
		resp_add_bulk(b, s, n);
		return;
	}
	resp_add_header(b, '=', (int64_t)(n + 4));
	char *p = resp_reserve(b, n + 6);
	memcpy(p, "txt:", 4);
	memcpy(p + 4, s, n);
	memcpy(p + 4 + n, "\r\n", 2);
	b->len += n + 6;
}

/* ---- parser ------------------------------------------------------------ */

static const char err_mbulk_len[] = "Protocol error: invalid multibulk length";
static const char err_bulk_len[] = "Protocol error: invalid bulk length";
static const char err_unauth_mbulk[] = "Protocol error: unauthenticated multibulk length";
static const char err_unauth_bulk[] = "Protocol error: unauthenticated bulk length";
static const char err_mbulk_count[] = "Protocol error: too big mbulk count string";
static const char err_bulk_count[] = "Protocol error: too big bulk count string";
static const char err_inline_big[] = "Protocol error: too big inline request";
static const char err_quotes[] = "Protocol error: unbalanced quotes in request";

static void resp_parser_oom(void)
{
	fprintf(stderr, "ringkv: out of memory in the request parser; aborting\n");
	abort();
}

void resp_parser_init(struct resp_parser *p, const struct resp_limits *limits)
{
	memset(p, 0, sizeof(*p));
	p->limits = *limits;
	p->argc_expected = -1;
	p->bulk_len = -1;
}

void resp_parser_free(struct resp_parser *p)
{
	free(p->argv);
	free(p->argv_len);
	free(p->argv_off);
	free(p->inline_copy);
	p->argv = NULL;
	p->argv_len = NULL;
	p->argv_off = NULL;
	p->inline_copy = NULL;
	p->argv_cap = 0;
	p->inline_cap = 0;
}

/* Makes room for one more argument. */
static void resp_argv_grow(struct resp_parser *p)
{
	if (p->argc < p->argv_cap)
		return;
	size_t cap = p->argv_cap ? p->argv_cap * 2 : 16;
	const uint8_t **argv = realloc(p->argv, cap * sizeof(*argv));
	if (argv == NULL)
		resp_parser_oom();
	p->argv = argv;
	size_t *lens = realloc(p->argv_len, cap * sizeof(*lens));
	if (lens == NULL)
		resp_parser_oom();
	p->argv_len = lens;
	size_t *offs = realloc(p->argv_off, cap * sizeof(*offs));
	if (offs == NULL)
		resp_parser_oom();
	p->argv_off = offs;
	p->argv_cap = cap;
}

static inline void resp_argv_push(struct resp_parser *p, size_t off, size_t len)
{
	resp_argv_grow(p);
	p->argv_off[p->argc] = off;
	p->argv_len[p->argc] = len;
	p->argc++;
}

/* Ready for the next command. */
static void resp_parser_reset(struct resp_parser *p)
{
	p->pos = 0;
	p->scan = 0;
	p->need = 0;
	p->argc_expected = -1;
	p->bulk_len = -1;
	p->argc = 0;
}

static enum resp_parse_status resp_fail(struct resp_parser *p, const char *error)
{
	p->error = error;
	resp_parser_reset(p);
	return RESP_PARSE_ERROR;
}

bool resp_parse_int64(const uint8_t *s, size_t n, int64_t *out)
{
	if (n == 0 || n > 20)
		return false;
	if (n == 1 && s[0] == '0') {
		*out = 0;
		return true;
	}
	bool neg = s[0] == '-';
	size_t i = neg ? 1 : 0;
	if (i == n || s[i] < '1' || s[i] > '9')
		return false;
	uint64_t v = 0;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		uint64_t d = (uint64_t)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (neg) {
		if (v > (uint64_t)INT64_MAX + 1)
			return false;
		*out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
	} else {
		if (v > (uint64_t)INT64_MAX)
			return false;
		*out = (int64_t)v;
	}
	return true;
}

/* Finds the '\r' ending the line that starts at `start`, with one more byte
 * after it.  Returns 1 and the line's length in *line_len, 0 if more bytes are
 * needed, -1 if the line is longer than max_inline_len. */
static int resp_find_line(struct resp_parser *p, const uint8_t *buf, size_t len, size_t start,
                          size_t *line_len)
{
	size_t from = p->scan > start ? p->scan : start;
	const uint8_t *cr = from < len ? memchr(buf + from, '\r', len - from) : NULL;
	if (cr == NULL) {
		p->scan = len;
		return len - start > p->limits.max_inline_len ? -1 : 0;
	}
	size_t at = (size_t)(cr - buf);
	if (at - start > p->limits.max_inline_len)
		return -1;
	if (at + 1 >= len) {
		p->scan = at;
		return 0;
	}
	p->scan = 0;
	*line_len = at - start;
	return 1;
}

static void resp_command_out(struct resp_parser *p, const uint8_t *base, struct resp_command *out)
{
	for (size_t i = 0; i < p->argc; i++)
		p->argv[i] = base + p->argv_off[i];
	out->argc = p->argc;
	out->argv = p->argv;
	out->argv_len = p->argv_len;
}

static enum resp_parse_status resp_parse_multibulk(struct resp_parser *p, const uint8_t *buf,
                                                   size_t len, size_t *consumed,
                                                   struct resp_command *out)
{
	size_t line;
	int64_t v;
	if (p->argc_expected < 0) {
		int r = resp_find_line(p, buf, len, 0, &line);
		if (r < 0)
			return resp_fail(p, err_mbulk_count);
		if (r == 0)
			return RESP_PARSE_MORE;
		if (!resp_parse_int64(buf + 1, line - 1, &v) || v > INT32_MAX ||
		    (v > 0 && (uint64_t)v > p->limits.max_multibulk_len))
			return resp_fail(p, err_mbulk_len);
		if (p->unauthenticated && v > RESP_UNAUTH_MAX_ARGS)
			return resp_fail(p, err_unauth_mbulk);
		p->pos = line + 2;
		if (v <= 0) {
			*consumed = p->pos;
			resp_parser_reset(p);
			return RESP_PARSE_EMPTY;
		}
		p->argc_expected = v;
	}
	while ((int64_t)p->argc < p->argc_expected) {
		if (p->bulk_len < 0) {
			int r = resp_find_line(p, buf, len, p->pos, &line);
			if (r < 0)
				return resp_fail(p, err_bulk_count);
			if (r == 0)
				return RESP_PARSE_MORE;
			if (buf[p->pos] != '$') {
				char got = (char)buf[p->pos];
				if (got == '\r' || got == '\n')
					got = ' ';
				snprintf(p->error_buf, sizeof(p->error_buf),
				         "Protocol error: expected '$', got '%c'", got);
				return resp_fail(p, p->error_buf);
			}
			if (!resp_parse_int64(buf + p->pos + 1, line - 1, &v) || v < 0 ||
			    (uint64_t)v > p->limits.max_bulk_len)
				return resp_fail(p, err_bulk_len);
			if (p->unauthenticated && v > RESP_UNAUTH_MAX_BULK)
				return resp_fail(p, err_unauth_bulk);
			p->pos += line + 2;
			p->bulk_len = v;
			p->need = p->pos + (size_t)v + 2;
		}
		if (len < p->need)
			return RESP_PARSE_MORE;
		resp_argv_push(p, p->pos, (size_t)p->bulk_len);
		p->pos = p->need;
		p->bulk_len = -1;
		p->need = 0;
	}
	*consumed = p->pos;
	resp_command_out(p, buf, out);
	resp_parser_reset(p);
	return RESP_PARSE_DONE;
}

static inline bool resp_is_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static inline int resp_hex_value(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* sdssplitargs over s[0..n) into p->inline_copy and p's argument arrays.
 * Returns false on unbalanced quotes. */
static bool resp_split_inline(struct resp_parser *p, const uint8_t *s, size_t n)
{
	const uint8_t *nul = memchr(s, '\0', n);
	if (nul != NULL) /* sdssplitargs reads a C string */
		n = (size_t)(nul - s);
	if (p->inline_cap < n + 1) {
		uint8_t *c = realloc(p->inline_copy, n + 1);
		if (c == NULL)
			resp_parser_oom();
		p->inline_copy = c;
		p->inline_cap = n + 1;
	}
	uint8_t *out = p->inline_copy;
	size_t i = 0, w = 0;
#define AT(k) ((k) < n ? s[k] : 0)
	for (;;) {
		while (i < n && resp_is_space(s[i]))
			i++;
		if (i >= n)
			return true;
		size_t start = w;
		bool inq = false, insq = false, done = false;
		while (!done) {
			uint8_t ch = AT(i);
			if (inq) {
				if (ch == '\\' && AT(i + 1) == 'x' &&
				    resp_hex_value(AT(i + 2)) >= 0 &&
				    resp_hex_value(AT(i + 3)) >= 0) {
					out[w++] = (uint8_t)(resp_hex_value(AT(i + 2)) * 16 +
					                     resp_hex_value(AT(i + 3)));
					i += 3;
				} else if (ch == '\\' && AT(i + 1)) {
					i++;
					switch (s[i]) {
					case 'n':
						out[w++] = '\n';
						break;
					case 'r':
						out[w++] = '\r';
						break;
					case 't':
						out[w++] = '\t';
						break;
					case 'b':
						out[w++] = '\b';
						break;
					case 'a':
						out[w++] = '\a';
						break;
					default:
						out[w++] = s[i];
						break;
					}
				} else if (ch == '"') {
					if (AT(i + 1) && !resp_is_space(AT(i + 1)))
						return false;
					done = true;
				} else if (ch == 0) {
					return false;
				} else {
					out[w++] = ch;
				}
			} else if (insq) {
				if (ch == '\\' && AT(i + 1) == '\'') {
					i++;
					out[w++] = '\'';
				} else if (ch == '\'') {
					if (AT(i + 1) && !resp_is_space(AT(i + 1)))
						return false;
					done = true;
				} else if (ch == 0) {
					return false;
				} else {
					out[w++] = ch;
				}
			} else {
				switch (ch) {
				case ' ':
				case '\n':
				case '\r':
				case '\t':
				case 0:
					done = true;
					break;
				case '"':
					inq = true;
					break;
				case '\'':
					insq = true;
					break;
				default:
					out[w++] = ch;
					break;
				}
			}
			if (i < n)
				i++;
		}
		resp_argv_push(p, start, w - start);
	}
#undef AT
}

static enum resp_parse_status resp_parse_inline(struct resp_parser *p, const uint8_t *buf,
                                                size_t len, size_t *consumed,
                                                struct resp_command *out)
{
	const uint8_t *nl = p->scan < len ? memchr(buf + p->scan, '\n', len - p->scan) : NULL;
	if (nl == NULL) {
		p->scan = len;
		if (len > p->limits.max_inline_len)
			return resp_fail(p, err_inline_big);
		return RESP_PARSE_MORE;
	}
	size_t end = (size_t)(nl - buf);
	if (end > p->limits.max_inline_len)
		return resp_fail(p, err_inline_big);
	size_t line = end > 0 && buf[end - 1] == '\r' ? end - 1 : end;
	if (!resp_split_inline(p, buf, line))
		return resp_fail(p, err_quotes);
	*consumed = end + 1;
	if (p->argc == 0) {
		resp_parser_reset(p);
		return RESP_PARSE_EMPTY;
	}
	resp_command_out(p, p->inline_copy, out);
	resp_parser_reset(p);
	return RESP_PARSE_DONE;
}

enum resp_parse_status resp_parse(struct resp_parser *p, const uint8_t *buf, size_t len,
                                  size_t *consumed, struct resp_command *out)
{
	p->last_len = len;
	*consumed = 0;
	if (len == 0)
		return RESP_PARSE_MORE;
	if (p->pos == 0 && p->argc == 0 && p->argv_cap > RESP_ARGV_KEEP) {
		/* the last command was huge: do not keep its arrays for good */
		free(p->argv);
		free(p->argv_len);
		free(p->argv_off);
		p->argv = NULL;
		p->argv_len = NULL;
		p->argv_off = NULL;
		p->argv_cap = 0;
	}
	if (buf[0] == '*')
		return resp_parse_multibulk(p, buf, len, consumed, out);
	return resp_parse_inline(p, buf, len, consumed, out);
}

size_t resp_parse_wanted(const struct resp_parser *p)
{
	if (p->bulk_len < 0 || p->need <= p->last_len)
		return 0;
	return p->need - p->last_len;
}

/* ---- replies (the client side) ----------------------------------------- */

static long reply_len(const uint8_t *p, size_t n, int depth, uint64_t *errors,
                      const uint8_t **msg, size_t *msg_len)
{
	if (n < 3)
		return 0;
	const uint8_t *nl = memchr(p, '\n', n);
	if (nl == NULL)
		return 0;
	size_t line_len = (size_t)(nl - p) + 1;
	if (line_len < 3 || nl[-1] != '\r' || depth > RESP_REPLY_DEPTH_MAX)
		return -1;
	long long v = 0;
	switch (p[0]) {
	case '-':
		if (msg != NULL && *msg == NULL) {
			*msg = p + 1;
			*msg_len = line_len - 3;
		}
		(*errors)++;
		return (long)line_len;
	case '+':
	case ':':
	case '_':
	case ',':
	case '#':
	case '(':
		return (long)line_len;
	case '$':
	case '=':
	case '!':
	case '*':
	case '~':
	case '>':
	case '%':
	case '|':
		break;
	default:
		return -1;
	}
	v = strtoll((const char *)p + 1, NULL, 10);
	if (p[0] == '$' || p[0] == '=' || p[0] == '!') {
		if (v < 0)
			return (long)line_len;
		if (n - line_len < (size_t)v + 2)
			return 0;
		if (p[0] == '!') {
			if (msg != NULL && *msg == NULL) {
				*msg = p + line_len;
				*msg_len = (size_t)v;
			}
			(*errors)++;
		}
		return (long)(line_len + (size_t)v + 2);
	}
	if (v < 0)
		return (long)line_len;
	long long elems = (p[0] == '%' || p[0] == '|') ? 2 * v : v;
	size_t at = line_len;
	for (long long i = 0; i < elems; i++) {
		long k = reply_len(p + at, n - at, depth + 1, errors, msg, msg_len);
		if (k <= 0)
			return k;
		at += (size_t)k;
	}
	if (p[0] == '|') { /* an attribute: the reply itself follows */
		long k = reply_len(p + at, n - at, depth + 1, errors, msg, msg_len);
		return k <= 0 ? k : (long)(at + (size_t)k);
	}
	return (long)at;
}

long resp_reply_len(const uint8_t *p, size_t n, uint64_t *errors, const uint8_t **msg,
                    size_t *msg_len)
{
	return reply_len(p, n, 0, errors, msg, msg_len);
}
