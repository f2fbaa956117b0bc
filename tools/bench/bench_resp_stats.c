/* bench_resp_stats: what `ringkv-bench resp` reads back — the streaming reply
 * parser of each connection and the latency histograms of each thread.
 *
 * The parser keeps its place between calls (the aggregates still open, the
 * bulk bytes still due) instead of re-reading a reply from its start each
 * time more bytes arrive: a connection's buffer then holds at most a partial
 * line, however large the values, and a reply costs one pass however many
 * reads it took.
 *
 * The histogram is log-linear like HdrHistogram's: exact nanoseconds below
 * 256, then 128 buckets per power of two, so a bucket is less than 0.8 % of
 * its values wide from 256 ns to 68 s, in 30 KB.  Threads record into their
 * own and rb_run merges them at the end.
 */
#include <string.h>

#include "bench.h"

/* ---- latency histogram -------------------------------------------------- */

#define SUB (1u << RB_HIST_SUB_BITS)

void rb_hist_reset(struct rb_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min_ns = UINT64_MAX;
}

static unsigned bucket_of(uint64_t v)
{
	if (v >= 1ull << RB_HIST_MAX_BITS)
		v = (1ull << RB_HIST_MAX_BITS) - 1;
	if (v < 2 * SUB)
		return (unsigned)v;
	unsigned shift = 63 - (unsigned)__builtin_clzll(v) - RB_HIST_SUB_BITS;
	return (shift + 1) * SUB + (unsigned)(v >> shift) - SUB;
}

/* The largest value that falls in bucket b. */
static uint64_t bucket_top(unsigned b)
{
	if (b < 2 * SUB)
		return b;
	unsigned shift = b / SUB - 1;
	return ((uint64_t)(b % SUB + SUB + 1) << shift) - 1;
}

void rb_hist_add(struct rb_hist *h, uint64_t ns)
{
	h->bucket[bucket_of(ns)]++;
	h->count++;
	h->sum_ns += ns;
	if (ns < h->min_ns)
		h->min_ns = ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

void rb_hist_merge(struct rb_hist *into, const struct rb_hist *from)
{
	for (unsigned b = 0; b < RB_HIST_BUCKETS; b++)
		into->bucket[b] += from->bucket[b];
	into->count += from->count;
	into->sum_ns += from->sum_ns;
	if (from->min_ns < into->min_ns)
		into->min_ns = from->min_ns;
	if (from->max_ns > into->max_ns)
		into->max_ns = from->max_ns;
}

/* The smallest value v with at least q of the values at or below it (as
 * HdrHistogram reports: the top of v's bucket, but never above the max). */
uint64_t rb_hist_quantile(const struct rb_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999), seen = 0;
	if (rank < 1)
		rank = 1;
	for (unsigned b = 0; b < RB_HIST_BUCKETS; b++) {
		seen += h->bucket[b];
		if (seen >= rank)
			return bucket_top(b) < h->max_ns ? bucket_top(b) : h->max_ns;
	}
	return h->max_ns;
}

/* ---- streaming reply parser --------------------------------------------- */

/* A length or count line's number: optional '-', 1 to 18 digits. */
static bool parse_num(const char *p, const char *end, int64_t *out)
{
	bool neg = p < end && *p == '-';
	p += neg;
	if (p == end || end - p > 18)
		return false;
	int64_t v = 0;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (*p - '0');
	}
	*out = neg ? -v : v;
	return true;
}

/* An element ended: closes the aggregates it was the last of.  True when
 * that ends the top-level reply. */
static bool element_done(struct rb_reply *p)
{
	while (p->depth > 0) {
		if (--p->left[p->depth - 1] > 0)
			return false;
		p->depth--;
	}
	return true;
}

static void note_error(struct rb_reply *p, const char *text, size_t len)
{
	p->errors++;
	if (p->error == NULL) {
		p->error = text;
		p->error_len = len;
	}
}

/* One header line (type byte to CR); false if it is not RESP.  *scalar is
 * set when the line is a whole element. */
static bool parse_line(struct rb_reply *p, const char *line, const char *cr, const char *body,
                       size_t body_avail, bool *scalar)
{
	static const char null_exec[] = "null array reply (an EXEC aborted by WATCH?)";
	int64_t v = 0;
	*scalar = true;
	switch (line[0]) {
	case '-':
		note_error(p, line + 1, (size_t)(cr - line - 1));
		return true;
	case '+':
	case ':':
	case '_':
	case ',':
	case '#':
	case '(':
		return true;
	case '$':
	case '=':
	case '!':
		if (!parse_num(line + 1, cr, &v) || v < -1)
			return false;
		if (line[0] == '!')
			note_error(p, body, body_avail >= (uint64_t)v ? (size_t)v : 0);
		if (v >= 0) {
			p->skip = (uint64_t)v + 2;
			*scalar = false;
		}
		return true;
	case '*':
	case '~':
	case '%':
		if (!parse_num(line + 1, cr, &v) || v < -1)
			return false;
		if (v < 0 && p->depth == 0)
			note_error(p, null_exec, sizeof(null_exec) - 1);
		if (v > 0) {
			if (p->depth == RB_REPLY_DEPTH_MAX)
				return false;
			p->left[p->depth++] = line[0] == '%' ? 2 * v : v;
			*scalar = false;
		}
		return true;
	default:
		return false;
	}
}

enum rb_reply_status rb_reply_next(struct rb_reply *p, const char *buf, size_t len, size_t *used)
{
	size_t at = 0;
	for (;;) {
		if (p->skip > 0) { /* a bulk body, as far as it has arrived */
			size_t take = len - at < p->skip ? len - at : (size_t)p->skip;
			at += take;
			p->skip -= take;
			if (p->skip > 0)
				break;
			if (element_done(p)) {
				*used = at;
				return RB_REPLY_DONE;
			}
			continue;
		}
		const char *line = buf + at, *nl = memchr(line, '\n', len - at);
		if (nl == NULL)
			break;
		bool scalar;
		if (nl - line < 2 || nl[-1] != '\r' ||
		    !parse_line(p, line, nl - 1, nl + 1, (size_t)(buf + len - nl - 1), &scalar)) {
			*used = at;
			return RB_REPLY_MALFORMED;
		}
		at = (size_t)(nl + 1 - buf);
		if (scalar && element_done(p)) {
			*used = at;
			return RB_REPLY_DONE;
		}
	}
	*used = at;
	return RB_REPLY_MORE;
}
