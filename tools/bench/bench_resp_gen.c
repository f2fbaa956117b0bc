/* bench_resp_gen: what `ringkv-bench resp` sends — unit templates compiled to
 * RESP once, key distributions and values drawn per unit.
 *
 * A unit template is compiled into ops: literal bytes (command headers,
 * argument lengths that cannot vary, the fixed text), a key (12 digits), a
 * value, and the length header of an argument holding values (the only
 * header whose length varies).  Encoding a unit is then copies and digit
 * writes into the connection's buffer: nothing is parsed or allocated per
 * request.
 *
 * Keys: uniform draws with a multiply-shift (no modulo bias), seq counts up
 * per thread and wraps, zipf uses rejection-inversion (Hörmann and Derflinger,
 * "Rejection-inversion to generate variates from monotone discrete
 * distributions", 1996; the form Apache Commons RNG uses): O(1) set-up and a
 * few log/exp per draw for any keyspace and any exponent > 0, where Gray et
 * al.'s method needs the O(n) zeta sum first.  The rank it returns goes
 * through a Feistel permutation of the keyspace (cycle-walking to stay below
 * n), so the hot keys are scattered yet each rank maps to its own key: the
 * distribution is exactly Zipf's over the keys, with no collisions that a
 * hash modulo n would make.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum rb_op_kind { RB_OP_LIT, RB_OP_KEY, RB_OP_ARGLEN, RB_OP_VALUE };

struct rb_op {
	uint8_t kind;
	uint8_t nval; /* ARGLEN: values in the argument; VALUE: which of them */
	uint32_t len; /* LIT: bytes; ARGLEN: the argument's bytes besides its values */
	size_t off;   /* LIT: where in the unit's text */
};

/* ---- random numbers ----------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void rb_rng_seed(struct rb_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t rb_rng_next(struct rb_rng *r)
{
	uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

uint64_t rb_rng_below(struct rb_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rb_rng_next(r) * n) >> 64);
}

double rb_rng_unit(struct rb_rng *r)
{
	return (double)(rb_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- key distributions -------------------------------------------------- */

/* log1p(x)/x and expm1(x)/x, with their series near 0 where the quotient
 * loses precision. */
static double log1p_over(double x)
{
	return fabs(x) > 1e-8 ? log1p(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
}

static double expm1_over(double x)
{
	return fabs(x) > 1e-8 ? expm1(x) / x : 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x));
}

/* h(x) = x^-theta and its integral H, the hat function rejection-inversion
 * samples from. */
static double zipf_h(double x, double theta)
{
	return exp(-theta * log(x));
}

static double zipf_hint(double x, double theta)
{
	double lx = log(x);
	return expm1_over((1 - theta) * lx) * lx;
}

static double zipf_hint_inv(double x, double theta)
{
	double t = x * (1 - theta);
	return exp(log1p_over(t < -1 ? -1 : t) * x);
}

/* A rank in [1, n] with P(k) proportional to k^-theta. */
static uint64_t zipf_rank(const struct rb_dist *d, struct rb_rng *r)
{
	for (;;) {
		double u = d->h_n + rb_rng_unit(r) * (d->h_x1 - d->h_n);
		double x = zipf_hint_inv(u, d->theta), kd = floor(x + 0.5);
		kd = kd < 1 ? 1 : kd > (double)d->n ? (double)d->n : kd;
		if (kd - x <= d->s || u >= zipf_hint(kd + 0.5, d->theta) - zipf_h(kd, d->theta))
			return (uint64_t)kd;
	}
}

static uint64_t feistel(const struct rb_dist *d, uint64_t x)
{
	uint64_t l = x >> d->half_bits, r = x & d->half_mask;
	for (int i = 0; i < 4; i++) {
		uint64_t k = r + d->round_keys[i], f = splitmix64(&k) & d->half_mask;
		uint64_t t = r;
		r = l ^ f;
		l = t;
	}
	return (l << d->half_bits) | r;
}

/* A bijection of [0, n): the permutation of [0, 4^half_bits), applied again
 * while the result is n or more (fewer than 4 rounds on average). */
static uint64_t scatter(const struct rb_dist *d, uint64_t x)
{
	do
		x = feistel(d, x);
	while (x >= d->n);
	return x;
}

bool rb_dist_init(struct rb_dist *d, const char *spec, uint64_t n, const char **why)
{
	memset(d, 0, sizeof(*d));
	d->n = n;
	*why = "expected uniform, zipf:S (0 < S <= 10, e.g. zipf:0.99) or seq";
	if (strcmp(spec, "uniform") == 0) {
		d->kind = RB_DIST_UNIFORM;
		return true;
	}
	if (strcmp(spec, "seq") == 0) {
		d->kind = RB_DIST_SEQ;
		return true;
	}
	if (strncmp(spec, "zipf:", 5) != 0)
		return false;
	char *end;
	d->theta = strtod(spec + 5, &end);
	if (end == spec + 5 || *end != '\0' || !(d->theta > 0 && d->theta <= 10))
		return false;
	d->kind = RB_DIST_ZIPF;
	d->h_x1 = zipf_hint(1.5, d->theta) - 1;
	d->h_n = zipf_hint((double)n + 0.5, d->theta);
	d->s = 2 - zipf_hint_inv(zipf_hint(2.5, d->theta) - zipf_h(2, d->theta), d->theta);
	while ((1ull << (2 * d->half_bits)) < n)
		d->half_bits++;
	d->half_mask = (1ull << d->half_bits) - 1;
	uint64_t seed = 0x5ca1ab1e ^ n;
	for (int i = 0; i < 4; i++)
		d->round_keys[i] = splitmix64(&seed);
	return true;
}

uint64_t rb_dist_draw(struct rb_gen *g)
{
	const struct rb_dist *d = g->dist;
	switch (d->kind) {
	case RB_DIST_SEQ: {
		uint64_t k = g->seq;
		g->seq = k + 1 == d->n ? 0 : k + 1;
		return k;
	}
	case RB_DIST_ZIPF:
		return scatter(d, zipf_rank(d, &g->rng) - 1);
	case RB_DIST_UNIFORM:
	default:
		return rb_rng_below(&g->rng, d->n);
	}
}

/* ---- unit templates ----------------------------------------------------- */

struct holder {
	const char *name;
	size_t len;
	enum rb_op_kind kind;
};

static const struct holder holders[] = {
    {"__key__", 7, RB_OP_KEY},
    {"__rand_int__", 12, RB_OP_KEY}, /* redis-benchmark's name for the same */
    {"__value__", 9, RB_OP_VALUE},
};

/* The first placeholder at or after s, or NULL. */
static const char *next_holder(const char *s, const struct holder **which)
{
	const char *best = NULL;
	for (size_t i = 0; i < sizeof(holders) / sizeof(holders[0]); i++) {
		const char *p = strstr(s, holders[i].name);
		if (p != NULL && (best == NULL || p < best)) {
			best = p;
			*which = &holders[i];
		}
	}
	return best;
}

struct builder {
	struct rb_unit *u;
	size_t text_cap;
	size_t text_len;
	unsigned ops_cap;
	bool oom;
};

static struct rb_op *add_op(struct builder *b, enum rb_op_kind kind)
{
	struct rb_unit *u = b->u;
	if (u->nops == b->ops_cap) {
		unsigned cap = b->ops_cap ? 2 * b->ops_cap : 16;
		struct rb_op *ops = realloc(u->ops, cap * sizeof(*ops));
		if (ops == NULL) {
			b->oom = true;
			return NULL;
		}
		u->ops = ops;
		b->ops_cap = cap;
	}
	struct rb_op *op = &u->ops[u->nops++];
	memset(op, 0, sizeof(*op));
	op->kind = (uint8_t)kind;
	return op;
}

/* Appends literal bytes, growing the last op when it is a literal too. */
static void add_lit(struct builder *b, const char *p, size_t n)
{
	struct rb_unit *u = b->u;
	if (n == 0)
		return;
	if (b->text_len + n > b->text_cap) {
		size_t cap = b->text_cap ? b->text_cap : 256;
		while (b->text_len + n > cap)
			cap *= 2;
		char *text = realloc(u->text, cap);
		if (text == NULL) {
			b->oom = true;
			return;
		}
		u->text = text;
		b->text_cap = cap;
	}
	memcpy(u->text + b->text_len, p, n);
	struct rb_op *last = u->nops ? &u->ops[u->nops - 1] : NULL;
	if (last == NULL || last->kind != RB_OP_LIT)
		last = add_op(b, RB_OP_LIT);
	if (last != NULL) {
		if (last->len == 0)
			last->off = b->text_len;
		last->len += (uint32_t)n;
	}
	b->text_len += n;
	u->max_len += n;
}

static void add_litf(struct builder *b, const char *prefix, uint64_t v)
{
	char head[32];
	int n = snprintf(head, sizeof(head), "%s%llu\r\n", prefix, (unsigned long long)v);
	add_lit(b, head, (size_t)n);
}

/* One argument: `$len` (fixed, or an ARGLEN op when it holds values), its
 * text with the placeholders as ops, CRLF. */
static bool compile_arg(struct builder *b, const char *arg, uint32_t vmax, const char **why)
{
	const struct holder *h = NULL;
	size_t fixed = 0, keys = 0, values = 0;
	const char *s = arg, *p;
	for (; (p = next_holder(s, &h)) != NULL; s = p + h->len) {
		fixed += (size_t)(p - s);
		keys += h->kind == RB_OP_KEY;
		values += h->kind == RB_OP_VALUE;
	}
	fixed += strlen(s) + keys * RB_KEY_DIGITS;
	if (values > RB_ARG_VALUES_MAX) {
		*why = "more than 8 __value__ in one argument";
		return false;
	}
	if (values == 0) {
		add_litf(b, "$", fixed);
	} else {
		struct rb_op *op = add_op(b, RB_OP_ARGLEN);
		if (op == NULL)
			return false;
		op->len = (uint32_t)fixed;
		op->nval = (uint8_t)values;
		b->u->max_len += 24;
	}
	unsigned v = 0;
	for (s = arg; (p = next_holder(s, &h)) != NULL; s = p + h->len) {
		add_lit(b, s, (size_t)(p - s));
		struct rb_op *op = add_op(b, h->kind);
		if (op == NULL)
			return false;
		if (h->kind == RB_OP_VALUE)
			op->nval = (uint8_t)v++;
		b->u->max_len += h->kind == RB_OP_KEY ? RB_KEY_DIGITS : vmax;
	}
	add_lit(b, s, strlen(s));
	add_lit(b, "\r\n", 2);
	return true;
}

static bool compile_cmd(struct builder *b, char *cmd, uint32_t vmax, const char **why)
{
	char *argv[256], *save;
	unsigned argc = 0;
	for (char *a = strtok_r(cmd, " ", &save); a != NULL; a = strtok_r(NULL, " ", &save)) {
		if (argc == 256) {
			*why = "more than 256 arguments in one command";
			return false;
		}
		argv[argc++] = a;
	}
	if (argc == 0)
		return true; /* "A;;B" or a trailing ';' */
	add_litf(b, "*", argc);
	for (unsigned i = 0; i < argc; i++)
		if (!compile_arg(b, argv[i], vmax, why))
			return false;
	b->u->ncmds++;
	return true;
}

static bool compile_unit(struct rb_unit *u, const char *spec, uint32_t vmax, const char **why)
{
	struct builder b = {.u = u};
	char *copy = strdup(spec), *save;
	if (copy == NULL) {
		*why = "out of memory";
		return false;
	}
	bool ok = true;
	for (char *c = strtok_r(copy, ";", &save); ok && c != NULL; c = strtok_r(NULL, ";", &save))
		ok = compile_cmd(&b, c, vmax, why);
	free(copy);
	if (ok && b.oom) {
		*why = "out of memory";
		ok = false;
	}
	if (ok && u->ncmds == 0) {
		*why = "no command in it";
		ok = false;
	}
	return ok;
}

bool rb_mix_add(struct rb_mix *m, const char *spec, uint64_t weight, uint32_t vmax,
                const char **why)
{
	struct rb_unit *units = realloc(m->units, (m->n + 1) * sizeof(*units));
	if (units == NULL) {
		*why = "out of memory";
		return false;
	}
	m->units = units;
	struct rb_unit *u = &units[m->n];
	memset(u, 0, sizeof(*u));
	u->src = spec;
	u->weight = weight;
	if (!compile_unit(u, spec, vmax, why)) {
		free(u->ops);
		free(u->text);
		return false;
	}
	m->n++;
	m->total_weight += weight;
	return true;
}

void rb_mix_free(struct rb_mix *m)
{
	for (unsigned i = 0; i < m->n; i++) {
		free(m->units[i].ops);
		free(m->units[i].text);
	}
	free(m->units);
	memset(m, 0, sizeof(*m));
}

const struct rb_unit *rb_mix_pick(const struct rb_mix *m, struct rb_gen *g)
{
	if (m->n == 1)
		return &m->units[0];
	uint64_t w = rb_rng_below(&g->rng, m->total_weight);
	unsigned i = 0;
	while (w >= m->units[i].weight)
		w -= m->units[i++].weight;
	return &m->units[i];
}

/* ---- encoding ----------------------------------------------------------- */

static const char digit_pairs[201] = "00010203040506070809101112131415161718192021222324"
                                     "25262728293031323334353637383940414243444546474849"
                                     "50515253545556575859606162636465666768697071727374"
                                     "75767778798081828384858687888990919293949596979899";

/* v < 10^12 as exactly 12 digits, zero-padded. */
static void put_key(char *p, uint64_t v)
{
	for (int i = RB_KEY_DIGITS - 2; i >= 0; i -= 2) {
		memcpy(p + i, digit_pairs + 2 * (v % 100), 2);
		v /= 100;
	}
}

static char *put_len_header(char *p, uint64_t len)
{
	char tmp[24];
	int n = 0;
	do
		tmp[n++] = (char)('0' + len % 10);
	while ((len /= 10) != 0);
	*p++ = '$';
	while (n > 0)
		*p++ = tmp[--n];
	*p++ = '\r';
	*p++ = '\n';
	return p;
}

static uint32_t value_size(struct rb_gen *g)
{
	if (g->vmin == g->vmax)
		return g->vmin;
	return g->vmin + (uint32_t)rb_rng_below(&g->rng, (uint64_t)(g->vmax - g->vmin) + 1);
}

char *rb_unit_encode(const struct rb_unit *u, struct rb_gen *g, char *out)
{
	for (const struct rb_op *op = u->ops, *end = u->ops + u->nops; op < end; op++) {
		switch (op->kind) {
		case RB_OP_LIT:
			memcpy(out, u->text + op->off, op->len);
			out += op->len;
			break;
		case RB_OP_KEY:
			put_key(out, rb_dist_draw(g));
			out += RB_KEY_DIGITS;
			break;
		case RB_OP_ARGLEN: { /* the sizes of the values that follow, drawn now */
			uint64_t len = op->len;
			for (unsigned i = 0; i < op->nval; i++)
				len += g->vsize[i] = value_size(g);
			out = put_len_header(out, len);
			break;
		}
		case RB_OP_VALUE:
			memcpy(out, g->value, g->vsize[op->nval]);
			out += g->vsize[op->nval];
			break;
		}
	}
	return out;
}
