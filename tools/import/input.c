/* input: see input.h.
 *
 * Every parser first frames a row without changing the buffer — if the row
 * is incomplete it asks for more input (NEED_MORE) and parses it again from
 * its start after the refill (resp: the server's parser resumes where it
 * stopped) — and only then unescapes its fields in place (an unescaped field
 * is never longer than its source).
 */
#include "input.h"

#include "net/resp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define IN_BUF_MIN (1u << 20) /* bytes asked of each read, at least */
#define NEED_MORE  2          /* parser: the row is not complete in the buffer */
#define COL_NONE   -1
#define SHOW_MAX   20 /* bytes show_bytes quotes, at most */

/* A field of a csv or tsv row, as offsets into the buffer. */
struct field {
	size_t off, len;
	bool quoted;     /* csv: it was quoted (doubled quotes to undo) */
	uint64_t line;   /* line it starts on, for messages */
	size_t col_byte; /* 1-based byte column where it starts */
};

struct in_reader {
	int fd;
	struct in_options opt;
	uint8_t *buf;
	size_t cap;
	size_t start, end; /* unparsed input is buf[start, end) */
	bool eof;          /* read() returned 0 */
	uint64_t base;     /* input offset of buf[0] */
	uint64_t line;     /* line number of buf[start] */
	bool header_done;  /* csv/tsv: columns known */
	int ncols;         /* columns a row must have; 0 = 2 or 3 (no header) */
	int col_key, col_value, col_ttl;
	struct field *fields;
	size_t n_fields, cap_fields;
	struct resp_parser parser; /* resp: its state carries over refills */
	const uint8_t **items;     /* jsonl: a hash's or a set's items (into buf) */
	size_t *item_lens;
	size_t n_items, cap_items;
};

/* ---- small helpers ----------------------------------------------------- */

static uint64_t count_lines(const uint8_t *p, size_t n)
{
	uint64_t c = 0;
	const uint8_t *end = p + n;
	while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		c++;
		p++;
	}
	return c;
}

/* Consumes buf[start, to): the row (or a skipped one) ends there. */
static void consume(struct in_reader *r, size_t to)
{
	r->line += count_lines(r->buf + r->start, to - r->start);
	r->start = to;
}

/* Reads more input after buf[end], first moving the unparsed part to the
 * front (or growing the buffer when it is all unparsed).  Returns 0 (maybe
 * with eof set) or -errno (-EINTR when a signal interrupted the read). */
static int fill(struct in_reader *r)
{
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->base += r->start;
		r->end -= r->start;
		r->start = 0;
	}
	if (r->cap - r->end < IN_BUF_MIN / 2) {
		size_t cap = r->cap * 2;
		uint8_t *b = realloc(r->buf, cap);
		if (b == NULL)
			return -ENOMEM;
		r->buf = b;
		r->cap = cap;
	}
	ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
	if (n < 0)
		return -errno;
	if (n == 0)
		r->eof = true;
	r->end += (size_t)n;
	return 0;
}

static int add_field(struct in_reader *r, size_t off, size_t len, bool quoted, uint64_t line,
                     size_t col_byte)
{
	if (r->n_fields == r->cap_fields) {
		size_t cap = r->cap_fields ? r->cap_fields * 2 : 8;
		struct field *f = realloc(r->fields, cap * sizeof(*f));
		if (f == NULL)
			return -ENOMEM;
		r->fields = f;
		r->cap_fields = cap;
	}
	r->fields[r->n_fields++] = (struct field){
	    .off = off, .len = len, .quoted = quoted, .line = line, .col_byte = col_byte};
	return 0;
}

/* Prints a printable rendering of up to SHOW_MAX bytes of s into out. */
static void show_bytes(char *out, size_t outlen, const uint8_t *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n && i < SHOW_MAX && o + 5 < outlen; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7F && s[i] != '\'')
			out[o++] = (char)s[i];
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", s[i]);
	}
	if (n > SHOW_MAX && o + 4 < outlen) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* Parses a ttl field: empty = none; else 1..IN_TTL_MAX whole seconds.
 * Returns 0 or -1 with a reason in why. */
static int parse_ttl(const uint8_t *s, size_t n, int64_t *ttl, char *why, size_t whylen)
{
	*ttl = 0;
	if (n == 0)
		return 0;
	int64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9') {
			char shown[100];
			show_bytes(shown, sizeof(shown), s, n);
			snprintf(why, whylen, "'%s' is not a whole number of seconds", shown);
			return -1;
		}
		v = v * 10 + (s[i] - '0');
		if (v > IN_TTL_MAX) {
			snprintf(why, whylen, "ttl is over %lld seconds (100 years)", IN_TTL_MAX);
			return -1;
		}
	}
	if (v == 0) {
		snprintf(why, whylen,
		         "ttl 0 is not allowed (a key would expire at once; leave the"
		         " field empty for no expiry)");
		return -1;
	}
	*ttl = v;
	return 0;
}

static const char *column_name(const struct in_reader *r, int col)
{
	if (col == r->col_key)
		return "key";
	if (col == r->col_value)
		return "value";
	if (col == r->col_ttl)
		return "ttl";
	return "ignored";
}

/* Uses the row's fields as the header (csv, tsv).  Returns 0 or -EBADMSG. */
static int take_header(struct in_reader *r, uint64_t line, char *err, size_t errlen)
{
	r->col_key = r->col_value = r->col_ttl = COL_NONE;
	for (size_t i = 0; i < r->n_fields; i++) {
		const struct field *f = &r->fields[i];
		const char *name = (const char *)r->buf + f->off;
		int *slot = NULL;
		if (f->len == 3 && strncasecmp(name, "key", 3) == 0)
			slot = &r->col_key;
		else if (f->len == 5 && strncasecmp(name, "value", 5) == 0)
			slot = &r->col_value;
		else if (f->len == 3 && strncasecmp(name, "ttl", 3) == 0)
			slot = &r->col_ttl;
		if (slot == NULL || *slot != COL_NONE) {
			char shown[100];
			show_bytes(shown, sizeof(shown), (const uint8_t *)name, f->len);
			snprintf(err, errlen,
			         "line %llu, column %zu: header names '%s'; each of key, value and"
			         " (optionally) ttl must be named once",
			         (unsigned long long)line, i + 1, shown);
			return -EBADMSG;
		}
		*slot = (int)i;
	}
	if (r->col_key == COL_NONE || r->col_value == COL_NONE) {
		snprintf(err, errlen, "line %llu: the header must name a key and a value column",
		         (unsigned long long)line);
		return -EBADMSG;
	}
	r->ncols = (int)r->n_fields;
	r->header_done = true;
	return 0;
}

/* Maps the row's fields to key, value and ttl (csv, tsv).  Returns 1, or
 * -EINVAL with the reason in err. */
static int fields_to_row(struct in_reader *r, struct in_row *row, char *err, size_t errlen)
{
	int n = (int)r->n_fields;
	if ((r->ncols == 0 && (n < 2 || n > 3)) || (r->ncols > 0 && n != r->ncols)) {
		if (r->ncols == 0)
			snprintf(err, errlen,
			         "line %llu: %d column%s; expected 2 (key, value) or 3 (key, value,"
			         " ttl)",
			         (unsigned long long)row->line, n, n == 1 ? "" : "s");
		else
			snprintf(err, errlen, "line %llu: %d column%s; the header names %d",
			         (unsigned long long)row->line, n, n == 1 ? "" : "s", r->ncols);
		return -EINVAL;
	}
	const struct field *k = &r->fields[r->col_key], *v = &r->fields[r->col_value];
	row->key = r->buf + k->off;
	row->key_len = k->len;
	row->value = r->buf + v->off;
	row->value_len = v->len;
	row->ttl_s = 0;
	int tc = r->col_ttl;
	if (tc != COL_NONE && tc < n) {
		const struct field *t = &r->fields[tc];
		char why[200];
		if (parse_ttl(r->buf + t->off, t->len, &row->ttl_s, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "line %llu, column %d (ttl): %s",
			         (unsigned long long)t->line, tc + 1, why);
			return -EINVAL;
		}
	}
	return 1;
}

/* ---- csv --------------------------------------------------------------- */

/* Undoes doubled quotes in a quoted field, in place. */
static void csv_unquote(uint8_t *buf, struct field *f)
{
	uint8_t *s = buf + f->off, *d = s, *end = s + f->len;
	while (s < end) {
		uint8_t c = *s++;
		*d++ = c;
		if (c == '"')
			s++; /* the second of a doubled quote */
	}
	f->len = (size_t)(d - (buf + f->off));
}

/* Frames and parses one csv row at buf[start].  Returns 1, 0 (end), NEED_MORE,
 * -EINVAL (bad row, skipped) or -ENOMEM / -EBADMSG. */
static int csv_parse(struct in_reader *r, struct in_row *row, char *err, size_t errlen)
{
	uint8_t *b = r->buf;
	size_t p = r->start, e = r->end, line_start = p;
	uint64_t line = r->line;
	r->n_fields = 0;
	if (p == e)
		return r->eof ? 0 : NEED_MORE;
	for (;;) {
		size_t fs = p;
		if (p < e && b[p] == '"') {
			size_t q = p + 1;
			for (;;) {
				uint8_t *hit = memchr(b + q, '"', e - q);
				if (hit == NULL) {
					if (!r->eof)
						return NEED_MORE;
					snprintf(
					    err, errlen,
					    "line %llu, column %zu: unterminated quoted field (no"
					    " closing '\"' before the end of the input)",
					    (unsigned long long)line, fs - line_start + 1);
					consume(r, e);
					return -EINVAL;
				}
				q = (size_t)(hit - b);
				if (q + 1 == e && !r->eof)
					return NEED_MORE; /* a doubled quote, or the end? */
				if (q + 1 < e && b[q + 1] == '"') {
					q += 2;
					continue;
				}
				break;
			}
			if (add_field(r, fs + 1, q - fs - 1, true, line, fs - line_start + 1) < 0)
				return -ENOMEM;
			uint64_t nls = count_lines(b + fs, q - fs);
			if (nls > 0) {
				line += nls;
				line_start =
				    (size_t)((uint8_t *)memrchr(b + fs, '\n', q - fs) - b) + 1;
			}
			p = q + 1;
			if (p == e)
				break; /* eof: the last row */
			if (b[p] == ',') {
				p++;
				continue;
			}
			if (b[p] == '\n') {
				p++;
				break;
			}
			if (b[p] == '\r') {
				if (p + 1 == e && !r->eof)
					return NEED_MORE;
				if (p + 1 == e || b[p + 1] == '\n') {
					p = p + 1 == e ? e : p + 2;
					break;
				}
			}
			char shown[100];
			show_bytes(shown, sizeof(shown), b + p, 1);
			snprintf(
			    err, errlen,
			    "line %llu, column %zu: '%s' after a closing quote; expected ',' or"
			    " the end of the line (a quote inside a field is written \"\")",
			    (unsigned long long)line, p - line_start + 1, shown);
			uint8_t *nl = memchr(b + p, '\n', e - p);
			if (nl == NULL && !r->eof)
				return NEED_MORE;
			consume(r, nl ? (size_t)(nl - b) + 1 : e);
			return -EINVAL;
		}
		uint8_t *nl = memchr(b + p, '\n', e - p);
		if (nl == NULL && !r->eof)
			return NEED_MORE;
		size_t eol = nl ? (size_t)(nl - b) : e;
		uint8_t *comma = memchr(b + p, ',', eol - p);
		if (comma != NULL) {
			if (add_field(r, p, (size_t)(comma - b) - p, false, line,
			              p - line_start + 1) < 0)
				return -ENOMEM;
			p = (size_t)(comma - b) + 1;
			continue;
		}
		size_t len = eol - p;
		if (len > 0 && b[eol - 1] == '\r')
			len--;
		if (add_field(r, p, len, false, line, p - line_start + 1) < 0)
			return -ENOMEM;
		p = nl ? eol + 1 : e;
		break;
	}
	row->line = r->line;
	row->offset = r->base + r->start;
	consume(r, p);
	if (r->n_fields == 1 && r->fields[0].len == 0 && !r->fields[0].quoted)
		return NEED_MORE + 1; /* a blank line: skipped */
	for (size_t i = 0; i < r->n_fields; i++)
		if (r->fields[i].quoted)
			csv_unquote(b, &r->fields[i]);
	if (r->opt.header && !r->header_done)
		return take_header(r, row->line, err, errlen) < 0 ? -EBADMSG : NEED_MORE + 1;
	return fields_to_row(r, row, err, errlen);
}

/* ---- tsv --------------------------------------------------------------- */

static int hex_digit(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Undoes backslash escapes in place.  Returns 0, or -1 with the offending
 * offset (within the field) in *bad. */
static int tsv_unescape(uint8_t *buf, struct field *f, size_t *bad)
{
	uint8_t *s = buf + f->off, *d = s, *end = s + f->len, *start = s;
	while (s < end) {
		if (*s != '\\') {
			*d++ = *s++;
			continue;
		}
		*bad = (size_t)(s - start);
		if (s + 1 == end)
			return -1;
		uint8_t c = s[1];
		s += 2;
		switch (c) {
		case 't':
			*d++ = '\t';
			break;
		case 'n':
			*d++ = '\n';
			break;
		case 'r':
			*d++ = '\r';
			break;
		case '\\':
			*d++ = '\\';
			break;
		case '0':
			*d++ = '\0';
			break;
		case 'x': {
			int hi = s < end ? hex_digit(s[0]) : -1;
			int lo = s + 1 < end ? hex_digit(s[1]) : -1;
			if (hi < 0 || lo < 0)
				return -1;
			*d++ = (uint8_t)(hi << 4 | lo);
			s += 2;
			break;
		}
		default:
			return -1;
		}
	}
	f->len = (size_t)(d - start);
	return 0;
}

static int tsv_parse(struct in_reader *r, struct in_row *row, char *err, size_t errlen)
{
	uint8_t *b = r->buf;
	size_t p = r->start, e = r->end;
	r->n_fields = 0;
	if (p == e)
		return r->eof ? 0 : NEED_MORE;
	uint8_t *nl = memchr(b + p, '\n', e - p);
	if (nl == NULL && !r->eof)
		return NEED_MORE;
	size_t eol = nl ? (size_t)(nl - b) : e, next = nl ? eol + 1 : e;
	if (eol > p && b[eol - 1] == '\r')
		eol--;
	row->line = r->line;
	row->offset = r->base + r->start;
	consume(r, next);
	if (eol == p)
		return NEED_MORE + 1; /* a blank line */
	for (size_t fs = p;;) {
		uint8_t *tab = memchr(b + fs, '\t', eol - fs);
		size_t fe = tab ? (size_t)(tab - b) : eol;
		if (add_field(r, fs, fe - fs, false, row->line, fs - p + 1) < 0)
			return -ENOMEM;
		if (tab == NULL)
			break;
		fs = fe + 1;
	}
	for (size_t i = 0; i < r->n_fields; i++) {
		struct field *f = &r->fields[i];
		size_t bad;
		if (memchr(b + f->off, '\\', f->len) != NULL && tsv_unescape(b, f, &bad) < 0) {
			char shown[100];
			show_bytes(shown, sizeof(shown), b + f->off + bad,
			           f->len - bad < 4 ? f->len - bad : 4);
			snprintf(err, errlen,
			         "line %llu, column %zu (%s): invalid escape '%s' (use \\t \\n \\r"
			         " \\\\ \\0 or \\xHH)",
			         (unsigned long long)row->line, i + 1,
			         r->header_done ? column_name(r, (int)i)
			         : i == 0       ? "key"
			         : i == 1       ? "value"
			                        : "ttl",
			         shown);
			return -EINVAL;
		}
	}
	if (r->opt.header && !r->header_done)
		return take_header(r, row->line, err, errlen) < 0 ? -EBADMSG : NEED_MORE + 1;
	return fields_to_row(r, row, err, errlen);
}

/* ---- jsonl ------------------------------------------------------------- */

struct json_cursor {
	uint8_t *p, *end, *line; /* position, end of line, start of line */
	char *err;
	size_t errlen;
	uint64_t lineno;
};

static void json_ws(struct json_cursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r'))
		c->p++;
}

static int json_fail(struct json_cursor *c, const char *what)
{
	snprintf(c->err, c->errlen, "line %llu, column %zu: %s", (unsigned long long)c->lineno,
	         (size_t)(c->p - c->line) + 1, what);
	return -EINVAL;
}

static uint8_t *put_utf8(uint8_t *d, uint32_t cp)
{
	if (cp < 0x80) {
		*d++ = (uint8_t)cp;
	} else if (cp < 0x800) {
		*d++ = (uint8_t)(0xC0 | cp >> 6);
		*d++ = (uint8_t)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*d++ = (uint8_t)(0xE0 | cp >> 12);
		*d++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		*d++ = (uint8_t)(0x80 | (cp & 0x3F));
	} else {
		*d++ = (uint8_t)(0xF0 | cp >> 18);
		*d++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
		*d++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		*d++ = (uint8_t)(0x80 | (cp & 0x3F));
	}
	return d;
}

static int json_hex4(struct json_cursor *c, const uint8_t *s, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		int h = s + i < c->end ? hex_digit(s[i]) : -1;
		if (h < 0)
			return json_fail(c, "\\u needs four hex digits");
		*v = *v << 4 | (uint32_t)h;
	}
	return 0;
}

/* Parses the string at c->p ('"'), unescaping it in place.  Sets *s, *n. */
static int json_string(struct json_cursor *c, uint8_t **s, size_t *n)
{
	if (c->p >= c->end || *c->p != '"')
		return json_fail(c, "expected a string");
	uint8_t *d = ++c->p;
	*s = d;
	for (;;) {
		if (c->p >= c->end)
			return json_fail(c, "unterminated string");
		uint8_t ch = *c->p;
		if (ch == '"')
			break;
		if (ch < 0x20)
			return json_fail(c, "a control character in a string must be escaped");
		if (ch != '\\') {
			*d++ = ch;
			c->p++;
			continue;
		}
		if (c->p + 1 >= c->end)
			return json_fail(c, "unterminated string");
		uint8_t e = c->p[1];
		switch (e) {
		case '"':
		case '\\':
		case '/':
			*d++ = e;
			break;
		case 'b':
			*d++ = '\b';
			break;
		case 'f':
			*d++ = '\f';
			break;
		case 'n':
			*d++ = '\n';
			break;
		case 'r':
			*d++ = '\r';
			break;
		case 't':
			*d++ = '\t';
			break;
		case 'u': {
			uint32_t cp, lo;
			if (json_hex4(c, c->p + 2, &cp) < 0)
				return -1;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				if (c->p + 7 >= c->end || c->p[6] != '\\' || c->p[7] != 'u' ||
				    json_hex4(c, c->p + 8, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
					return json_fail(c,
					                 "a high surrogate \\uD800-\\uDBFF must be"
					                 " followed by a low one");
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				c->p += 6;
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				return json_fail(c, "a lone low surrogate");
			}
			d = put_utf8(d, cp);
			c->p += 4;
			break;
		}
		default:
			return json_fail(c, "invalid escape in a string");
		}
		c->p += 2;
	}
	c->p++;
	*n = (size_t)(d - *s);
	return 0;
}

long in_base64_decode(uint8_t *dst, const uint8_t *src, size_t len)
{
	while (len > 0 && src[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -1;
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t ch = src[i];
		int v;
		if (ch >= 'A' && ch <= 'Z')
			v = ch - 'A';
		else if (ch >= 'a' && ch <= 'z')
			v = ch - 'a' + 26;
		else if (ch >= '0' && ch <= '9')
			v = ch - '0' + 52;
		else if (ch == '+')
			v = 62;
		else if (ch == '/')
			v = 63;
		else
			return -1;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			dst[o++] = (uint8_t)(acc >> bits);
		}
	}
	return (long)o;
}

/* Appends an item (a hash's field or value, a set's member) to the row
 * being parsed.  Returns 0 or -ENOMEM. */
static int add_item(struct in_reader *r, const uint8_t *p, size_t n)
{
	if (r->n_items == r->cap_items) {
		size_t cap = r->cap_items ? r->cap_items * 2 : 64;
		const uint8_t **items = realloc(r->items, cap * sizeof(*items));
		if (items == NULL)
			return -ENOMEM;
		r->items = items;
		size_t *lens = realloc(r->item_lens, cap * sizeof(*lens));
		if (lens == NULL)
			return -ENOMEM;
		r->item_lens = lens;
		r->cap_items = cap;
	}
	r->items[r->n_items] = p;
	r->item_lens[r->n_items++] = n;
	return 0;
}

/* Skips a JSON number at c->p (RFC 8259's grammar).  Returns 0, or -EINVAL
 * (reported) when the text there is not one. */
static int json_number(struct json_cursor *c)
{
	uint8_t *p = c->p, *end = c->end;
	if (p < end && *p == '-')
		p++;
	if (p < end && *p == '0') {
		p++;
	} else if (p < end && *p >= '1' && *p <= '9') {
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	} else {
		return json_fail(c, "invalid number");
	}
	if (p < end && *p == '.') {
		uint8_t *digits = ++p;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
		if (p == digits)
			return json_fail(c, "invalid number");
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		uint8_t *digits = p;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
		if (p == digits)
			return json_fail(c, "invalid number");
	}
	if (p < end && *p != ' ' && *p != '\t' && *p != '\r' && *p != ',' && *p != '}' && *p != ']')
		return json_fail(c, "invalid number");
	c->p = p;
	return 0;
}

/* Parses one item of a hash or set at c->p — a string (base64 when `b64`),
 * or (not b64, not a field name) a number, taken as its text — and appends
 * it to r's items.  `what` names the item in messages.  Returns 0 or
 * -EINVAL (reported) / -ENOMEM. */
static int json_item(struct in_reader *r, struct json_cursor *c, bool b64, bool string_only,
                     const char *what)
{
	uint8_t *at = c->p, *s;
	size_t n;
	char msg[200];
	if (c->p < c->end && *c->p == '"') {
		if (json_string(c, &s, &n) < 0)
			return -EINVAL;
		if (b64) {
			long m = in_base64_decode(s, s, n);
			if (m < 0) {
				c->p = at;
				snprintf(msg, sizeof(msg), "%s is not valid base64", what);
				return json_fail(c, msg);
			}
			n = (size_t)m;
		}
		return add_item(r, s, n);
	}
	if (!b64 && !string_only && c->p < c->end &&
	    (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))) {
		if (json_number(c) < 0)
			return -EINVAL;
		return add_item(r, at, (size_t)(c->p - at));
	}
	snprintf(msg, sizeof(msg), "%s must be %s", what,
	         b64           ? "a base64 string"
	         : string_only ? "a string"
	                       : "a string or a number (Redis stores strings; nested objects,"
	                         " arrays, true, false and null are not accepted)");
	return json_fail(c, msg);
}

/* Parses a "hash" object (fields and values) or a "set" array (members) at
 * c->p into r's items.  Returns 0 or -EINVAL (reported) / -ENOMEM. */
static int json_collection(struct in_reader *r, struct json_cursor *c, enum in_kind kind, bool b64)
{
	bool hash = kind == IN_HASH;
	char name[16];
	snprintf(name, sizeof(name), "\"%s%s\"", hash ? "hash" : "set", b64 ? "_b64" : "");
	char what[64];
	if (c->p >= c->end || *c->p != (hash ? '{' : '[')) {
		snprintf(what, sizeof(what), "field %s must be %s", name,
		         hash ? "an object of fields and values" : "an array of members");
		return json_fail(c, what);
	}
	uint8_t *open = c->p++;
	json_ws(c);
	if (c->p < c->end && *c->p == (hash ? '}' : ']')) {
		c->p = open;
		return json_fail(c, hash
		                        ? "an empty hash (Redis keeps no empty hash: give a field)"
		                        : "an empty set (Redis keeps no empty set: give a member)");
	}
	r->n_items = 0;
	for (;;) {
		int ret;
		json_ws(c);
		if (hash) {
			snprintf(what, sizeof(what), "a field name of %s", name);
			ret = json_item(r, c, b64, true, what);
			json_ws(c);
			if (ret == 0 && (c->p >= c->end || *c->p != ':'))
				return json_fail(c, "expected ':'");
			if (ret == 0) {
				c->p++;
				json_ws(c);
				snprintf(what, sizeof(what), "a value of %s", name);
				ret = json_item(r, c, b64, false, what);
			}
		} else {
			snprintf(what, sizeof(what), "a member of %s", name);
			ret = json_item(r, c, b64, false, what);
		}
		if (ret < 0)
			return ret;
		json_ws(c);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		if (c->p < c->end && *c->p == (hash ? '}' : ']')) {
			c->p++;
			return 0;
		}
		return json_fail(c, hash ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

/* The value fields of a jsonl row: exactly one is given. */
static const struct {
	const char *name;
	enum in_kind kind;
	bool b64;
} json_values[] = {
    {"value", IN_STRING, false}, {"value_b64", IN_STRING, true}, {"hash", IN_HASH, false},
    {"hash_b64", IN_HASH, true}, {"set", IN_SET, false},         {"set_b64", IN_SET, true},
};

static int jsonl_parse(struct in_reader *r, struct in_row *row, char *err, size_t errlen)
{
	uint8_t *b = r->buf;
	size_t p = r->start, e = r->end;
	if (p == e)
		return r->eof ? 0 : NEED_MORE;
	uint8_t *nl = memchr(b + p, '\n', e - p);
	if (nl == NULL && !r->eof)
		return NEED_MORE;
	size_t eol = nl ? (size_t)(nl - b) : e;
	row->line = r->line;
	row->offset = r->base + r->start;
	consume(r, nl ? eol + 1 : e);
	struct json_cursor c = {.p = b + p,
	                        .end = b + eol,
	                        .line = b + p,
	                        .err = err,
	                        .errlen = errlen,
	                        .lineno = row->line};
	json_ws(&c);
	if (c.p == c.end)
		return NEED_MORE + 1; /* a blank line */
	if (*c.p != '{')
		return json_fail(&c, "expected '{' (each line holds one JSON object)");
	c.p++;
	uint8_t *key = NULL, *value = NULL;
	size_t key_len = 0, value_len = 0;
	bool seen_ttl = false, seen_value = false;
	row->ttl_s = 0;
	row->kind = IN_STRING;
	json_ws(&c);
	if (c.p < c.end && *c.p == '}') {
		c.p++;
	} else {
		for (;;) {
			uint8_t *name;
			size_t name_len;
			json_ws(&c);
			uint8_t *name_at = c.p;
			if (json_string(&c, &name, &name_len) < 0)
				return -EINVAL;
			json_ws(&c);
			if (c.p >= c.end || *c.p != ':')
				return json_fail(&c, "expected ':'");
			c.p++;
			json_ws(&c);
			int vf = -1;
			for (size_t i = 0; i < sizeof(json_values) / sizeof(json_values[0]); i++)
				if (name_len == strlen(json_values[i].name) &&
				    memcmp(name, json_values[i].name, name_len) == 0)
					vf = (int)i;
			bool is_key = name_len == 3 && memcmp(name, "key", 3) == 0;
			bool is_key_b64 = name_len == 7 && memcmp(name, "key_b64", 7) == 0;
			if (vf >= 0 && json_values[vf].kind != IN_STRING) {
				if (seen_value) {
					c.p = name_at;
					return json_fail(
					    &c, "the value is given twice (a row holds one"
					        " of value, value_b64, hash, hash_b64, set,"
					        " set_b64)");
				}
				seen_value = true;
				row->kind = json_values[vf].kind;
				int ret = json_collection(r, &c, row->kind, json_values[vf].b64);
				if (ret < 0)
					return ret == -ENOMEM ? -ENOMEM : -EINVAL;
			} else if (is_key || is_key_b64 || vf >= 0) {
				if (is_key || is_key_b64 ? key != NULL : seen_value) {
					c.p = name_at;
					return json_fail(
					    &c, is_key || is_key_b64
					            ? "the key is given twice"
					            : "the value is given twice (a row holds one"
					              " of value, value_b64, hash, hash_b64,"
					              " set, set_b64)");
				}
				bool b64 = is_key_b64 || (vf >= 0 && json_values[vf].b64);
				uint8_t *at = c.p, *s;
				size_t n;
				if (c.p >= c.end || *c.p != '"') {
					char msg[100];
					snprintf(msg, sizeof(msg),
					         "field \"%.*s\" must be a string", (int)name_len,
					         (const char *)name);
					return json_fail(&c, msg);
				}
				if (json_string(&c, &s, &n) < 0)
					return -EINVAL;
				if (b64) {
					long m = in_base64_decode(s, s, n);
					if (m < 0) {
						char msg[100];
						c.p = at;
						snprintf(msg, sizeof(msg),
						         "field \"%.*s\" is not valid base64",
						         (int)name_len, (const char *)name);
						return json_fail(&c, msg);
					}
					n = (size_t)m;
				}
				if (is_key || is_key_b64) {
					key = s;
					key_len = n;
				} else {
					seen_value = true;
					value = s;
					value_len = n;
				}
			} else if (name_len == 3 && memcmp(name, "ttl", 3) == 0) {
				if (seen_ttl) {
					c.p = name_at;
					return json_fail(&c, "field \"ttl\" given twice");
				}
				seen_ttl = true;
				uint8_t *ns = c.p;
				if (c.end - c.p >= 4 && memcmp(c.p, "null", 4) == 0) {
					c.p += 4;
				} else {
					while (c.p < c.end &&
					       ((*c.p >= '0' && *c.p <= '9') || *c.p == '-' ||
					        *c.p == '+' || *c.p == '.' || *c.p == 'e' ||
					        *c.p == 'E'))
						c.p++;
					char why[200];
					if (c.p == ns || (*ns == '0' && c.p - ns > 1)) {
						c.p = ns;
						return json_fail(
						    &c, "field \"ttl\" must be a whole number of"
						        " seconds or null");
					}
					if (parse_ttl(ns, (size_t)(c.p - ns), &row->ttl_s, why,
					              sizeof(why)) < 0) {
						c.p = ns;
						snprintf(err, errlen,
						         "line %llu, column %zu (ttl): %s",
						         (unsigned long long)row->line,
						         (size_t)(ns - c.line) + 1, why);
						return -EINVAL;
					}
				}
			} else {
				char shown[100], msg[200];
				show_bytes(shown, sizeof(shown), name, name_len);
				snprintf(
				    msg, sizeof(msg),
				    "unknown field \"%s\" (expected key, key_b64, value, value_b64,"
				    " hash, hash_b64, set, set_b64, ttl)",
				    shown);
				c.p = name_at;
				return json_fail(&c, msg);
			}
			json_ws(&c);
			if (c.p < c.end && *c.p == ',') {
				c.p++;
				continue;
			}
			if (c.p < c.end && *c.p == '}') {
				c.p++;
				break;
			}
			return json_fail(&c, "expected ',' or '}'");
		}
	}
	json_ws(&c);
	if (c.p != c.end)
		return json_fail(&c, "text after the object (one object per line)");
	if (key == NULL || !seen_value) {
		snprintf(err, errlen, "line %llu: missing field \"%s\"%s",
		         (unsigned long long)row->line, key == NULL ? "key" : "value",
		         key == NULL ? "" : " (or value_b64, hash, hash_b64, set, set_b64)");
		return -EINVAL;
	}
	row->key = key;
	row->key_len = key_len;
	if (row->kind == IN_STRING) {
		row->value = value;
		row->value_len = value_len;
	} else {
		row->n_items = r->n_items;
		row->item = r->items;
		row->item_len = r->item_lens;
	}
	return 1;
}

/* ---- resp -------------------------------------------------------------- */

/* The server's request parser (net/resp.h) frames each command, keeping its
 * state across refills.  The reader adds what a file needs and a connection
 * does not: a command must be an array (no inline commands), every line must
 * end in CRLF (the parser, as Redis, skips the byte after a line's '\r' and
 * the two after a bulk's data unread), and a bad command is reported by line
 * and byte. */

static const struct resp_limits in_resp_limits = {
    .max_bulk_len = IN_RESP_MAX_BULK,
    .max_multibulk_len = IN_RESP_MAX_ARGS,
    .max_inline_len = IN_RESP_MAX_LINE,
};

/* Line number of buf[start + off]. */
static uint64_t line_at(const struct in_reader *r, size_t off)
{
	return r->line + count_lines(r->buf + r->start, off);
}

/* Reports that the command at buf[start] does not start with an array header
 * '*<count>' (1..IN_RESP_MAX_ARGS), quoting the line.  Returns -EBADMSG, or
 * NEED_MORE until the buffer holds the line's end or more of it than is
 * quoted, so the message is the same however the reads cut the input. */
static int resp_bad_header(struct in_reader *r, char *err, size_t errlen)
{
	const uint8_t *line = r->buf + r->start;
	size_t avail = r->end - r->start;
	const uint8_t *nl = memchr(line, '\n', avail);
	if (nl == NULL && !r->eof && avail <= SHOW_MAX)
		return NEED_MORE;
	char shown[100];
	show_bytes(shown, sizeof(shown), line, nl ? (size_t)(nl - line) : avail);
	snprintf(err, errlen,
	         "line %llu (byte %llu): expected a RESP array header '*<count>' with"
	         " 1..%d elements, found '%s' (inline commands are not accepted; a RESP"
	         " stream cannot be resynchronised after this)",
	         (unsigned long long)r->line, (unsigned long long)(r->base + r->start),
	         IN_RESP_MAX_ARGS, shown);
	return -EBADMSG;
}

/* Reports a bad header of argument `arg` (0-based) at buf[start + at].
 * Returns -EBADMSG. */
static int resp_bad_bulk_header(struct in_reader *r, size_t at, size_t arg, char *err,
                                size_t errlen)
{
	snprintf(err, errlen,
	         "line %llu (byte %llu): argument %zu of the command: expected a bulk"
	         " string header '$<length>' (0..%u) (a RESP stream cannot be"
	         " resynchronised after this)",
	         (unsigned long long)line_at(r, at), (unsigned long long)(r->base + r->start + at),
	         arg + 1, IN_RESP_MAX_BULK);
	return -EBADMSG;
}

/* Finds the header line the parser refused in the command at cmd[0, n) by
 * replaying the command into a second parser as a slow network would deliver
 * it (a byte at a time, a bulk's data at once), counting the bulks it
 * completes, until it fails.  Returns how many bulks precede the refused
 * header, whose offset is then in *at; -1 when the array header itself was
 * refused.  Runs only to word an error. */
static long resp_refused_line(const uint8_t *cmd, size_t n, size_t *at)
{
	const uint8_t *cr = memchr(cmd, '\r', n);
	size_t len = cr ? (size_t)(cr - cmd) + 2 : SIZE_MAX; /* the array header */
	long bulks = -1;
	bool in_bulk = false;
	struct resp_parser p;
	resp_parser_init(&p, &in_resp_limits);
	*at = 0;
	while (len <= n) {
		size_t used;
		struct resp_command out;
		if (resp_parse(&p, cmd, len, &used, &out) != RESP_PARSE_MORE)
			break;
		size_t want = resp_parse_wanted(&p);
		if (want > 0) { /* inside a bulk's data */
			in_bulk = true;
			len += want;
			continue;
		}
		if (bulks < 0 || in_bulk) { /* a header starts here */
			bulks++;
			*at = len;
			in_bulk = false;
		}
		len++;
	}
	resp_parser_free(&p);
	return bulks;
}

/* Checks the line ends the parser skipped unread in the command it framed at
 * buf[start, start + n): the array header, each bulk header and each bulk's
 * data must end in CRLF.  Returns 0, or what resp_bad_header returns, or
 * -EBADMSG with the reason in err. */
static int resp_check_crlf(struct in_reader *r, const struct resp_command *c, size_t n, char *err,
                           size_t errlen)
{
	const uint8_t *cmd = r->buf + r->start;
	size_t at = (size_t)((const uint8_t *)memchr(cmd, '\r', n) - cmd) + 2;
	if (cmd[at - 1] != '\n')
		return resp_bad_header(r, err, errlen);
	for (size_t i = 0; i < c->argc; i++) {
		size_t off = (size_t)(c->argv[i] - cmd), len = c->argv_len[i];
		if (cmd[off - 1] != '\n')
			return resp_bad_bulk_header(r, at, i, err, errlen);
		if (cmd[off + len] != '\r' || cmd[off + len + 1] != '\n') {
			snprintf(err, errlen,
			         "line %llu (byte %llu): argument %zu is not followed by CRLF after"
			         " its %zu bytes (a RESP stream cannot be resynchronised after"
			         " this)",
			         (unsigned long long)line_at(r, off),
			         (unsigned long long)(r->base + r->start + off + len), i + 1, len);
			return -EBADMSG;
		}
		at = off + len + 2;
	}
	return 0;
}

static int resp_parse_row(struct in_reader *r, struct in_row *row, char *err, size_t errlen)
{
	const uint8_t *b = r->buf;
	size_t p = r->start, e = r->end;
	while (p < e && (b[p] == '\r' || b[p] == '\n'))
		p++; /* blank lines between commands */
	if (p > r->start) {
		consume(r, p);
		return NEED_MORE + 1;
	}
	if (p == e)
		return r->eof ? 0 : NEED_MORE;
	if (b[p] != '*')
		return resp_bad_header(r, err, errlen); /* an inline command */
	size_t used, at;
	struct resp_command cmd;
	switch (resp_parse(&r->parser, b + p, e - p, &used, &cmd)) {
	case RESP_PARSE_DONE:
		break;
	case RESP_PARSE_MORE:
		if (!r->eof)
			return NEED_MORE;
		snprintf(err, errlen, "line %llu (byte %llu): the input ends inside a command",
		         (unsigned long long)r->line, (unsigned long long)(r->base + r->start));
		consume(r, e);
		return -EINVAL;
	case RESP_PARSE_EMPTY: /* "*0", "*-1" */
		return resp_bad_header(r, err, errlen);
	case RESP_PARSE_ERROR: {
		long arg = resp_refused_line(b + p, e - p, &at);
		return arg < 0 ? resp_bad_header(r, err, errlen)
		               : resp_bad_bulk_header(r, at, (size_t)arg, err, errlen);
	}
	}
	int ret = resp_check_crlf(r, &cmd, used, err, errlen);
	if (ret != 0)
		return ret;
	row->line = r->line;
	row->offset = r->base + r->start;
	row->argc = cmd.argc;
	row->argv = cmd.argv;
	row->argl = cmd.argv_len;
	row->raw = b + r->start;
	row->raw_len = used;
	row->key = cmd.argc > 1 ? cmd.argv[1] : NULL;
	row->key_len = cmd.argc > 1 ? cmd.argv_len[1] : 0;
	row->value = NULL;
	row->value_len = 0;
	row->ttl_s = 0;
	consume(r, p + used);
	return 1;
}

/* ---- reader ------------------------------------------------------------ */

int in_open(struct in_reader **out, int fd, const struct in_options *opt)
{
	struct in_reader *r = calloc(1, sizeof(*r));
	if (r == NULL || (r->buf = malloc(2 * IN_BUF_MIN)) == NULL) {
		free(r);
		return -ENOMEM;
	}
	r->cap = 2 * IN_BUF_MIN;
	r->fd = fd;
	r->opt = *opt;
	r->line = 1;
	r->col_key = 0;
	r->col_value = 1;
	r->col_ttl = 2;
	resp_parser_init(&r->parser, &in_resp_limits);
	*out = r;
	return 0;
}

int in_next(struct in_reader *r, struct in_row *row, char *err, size_t errlen)
{
	memset(row, 0, sizeof(*row));
	for (;;) {
		int ret;
		switch (r->opt.format) {
		case IN_CSV:
			ret = csv_parse(r, row, err, errlen);
			break;
		case IN_TSV:
			ret = tsv_parse(r, row, err, errlen);
			break;
		case IN_JSONL:
			ret = jsonl_parse(r, row, err, errlen);
			break;
		default:
			ret = resp_parse_row(r, row, err, errlen);
			break;
		}
		if (ret == NEED_MORE + 1)
			continue; /* skipped (a blank line, the header) */
		if (ret != NEED_MORE) {
			if (ret == -ENOMEM)
				snprintf(err, errlen, "out of memory reading the input");
			return ret;
		}
		ret = fill(r);
		if (ret == -EINTR)
			return ret;
		if (ret < 0) {
			snprintf(err, errlen, "reading the input failed: %s", strerror(-ret));
			return ret;
		}
	}
}

uint64_t in_bytes(const struct in_reader *r)
{
	return r->base + r->start;
}

void in_close(struct in_reader *r)
{
	if (r == NULL)
		return;
	free(r->buf);
	free(r->fields);
	free(r->items);
	free(r->item_lens);
	resp_parser_free(&r->parser);
	free(r);
}

static const struct {
	const char *name;
	enum in_format format;
} format_names[] = {
    {"csv", IN_CSV},     {"tsv", IN_TSV},      {"tab", IN_TSV},
    {"jsonl", IN_JSONL}, {"ndjson", IN_JSONL}, {"json", IN_JSONL},
    {"resp", IN_RESP},   {"aof", IN_RESP},     {"redis", IN_RESP},
};

int in_format_parse(const char *name, enum in_format *out)
{
	for (size_t i = 0; i < sizeof(format_names) / sizeof(format_names[0]); i++)
		if (strcasecmp(name, format_names[i].name) == 0) {
			*out = format_names[i].format;
			return 0;
		}
	return -1;
}

int in_format_guess(const char *path, enum in_format *out)
{
	const char *slash = strrchr(path, '/');
	const char *dot = strrchr(slash ? slash + 1 : path, '.');
	return dot == NULL ? -1 : in_format_parse(dot + 1, out);
}

const char *in_format_name(enum in_format f)
{
	switch (f) {
	case IN_CSV:
		return "csv";
	case IN_TSV:
		return "tsv";
	case IN_JSONL:
		return "jsonl";
	case IN_RESP:
		return "resp";
	}
	return "unknown";
}
