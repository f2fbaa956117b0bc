/* config: see config.h.
 *
 * Every option is one row of `options` below: section, key, type, field, default (as text, in
 * the file's syntax), range and extra constraint.  Defaults, the YAML loader, --set, CONFIG GET
 * and the dump all walk that table; the only per-type code is the small parsers and formatters.
 *
 * The file is read whole and composed with libyaml's document API (a config file is small), so
 * every node carries its 1-based position for messages.  A load fills a copy of the caller's
 * struct cfg, which is written back only when the whole file is valid.
 */
#include "config.h"

#include "service/runtime/logging.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define KB 1024.0
#define MB (1024.0 * KB)
#define GB (1024.0 * MB)

#define CFG_FILE_MAX (1 << 20) /* a larger "config file" is surely the wrong file */
#define CFG_ECHO_MAX 64        /* bytes of a user's value quoted back in a message */

enum cfg_type {
	CFG_T_INT,        /* int, decimal */
	CFG_T_SIZE,       /* uint64_t bytes, with optional k/kb/m/mb/g/gb suffix */
	CFG_T_BOOL,       /* bool: true/false, yes/no, on/off */
	CFG_T_STRING,     /* char[]; too long is an error, never truncated */
	CFG_T_LEVEL,      /* int holding enum log_level, by name */
	CFG_T_DURABILITY, /* enum cfg_durability, by name */
	CFG_T_DOUBLE,     /* double */
};

#define CFG_POW2  0x1 /* value is a power of two (0 passes when the range starts at 0) */
#define CFG_MUL4K 0x2 /* value is a multiple of 4096 */
#define CFG_AUTO  0x4 /* SIZE: "auto" is accepted, stored as 0 (cfg_resolve_auto) */

struct cfg_option {
	const char *section; /* rows of one section are adjacent, sections in file order */
	const char *key;
	enum cfg_type type;
	size_t offset;   /* of the field in struct cfg */
	size_t size;     /* of the field; for strings the buffer, NUL included */
	const char *def; /* default, written as in config.yaml; must pass every check */
	double min, max; /* inclusive bounds for INT, SIZE, DOUBLE; all exact (below 2^53) */
	unsigned flags;  /* CFG_POW2, CFG_MUL4K, CFG_AUTO */
};

/* The C type of a field of each option type; OPTION refuses to compile on a mismatch. */
#define CTYPE_INT        int
#define CTYPE_SIZE       uint64_t
#define CTYPE_BOOL       bool
#define CTYPE_STRING     char *
#define CTYPE_LEVEL      int
#define CTYPE_DURABILITY enum cfg_durability
#define CTYPE_DOUBLE     double

/* offsetof(struct cfg, sec.name), refusing to compile unless the field is of C type `ctype`. */
#define CHECKED_OFFSET(sec, name, ctype)                                                           \
	(offsetof(struct cfg, sec.name) +                                                          \
	 0 * sizeof(_Generic(((struct cfg *)0)->sec.name, ctype : 1)))

#define OPTION(sec, name, kind, default_text, lo, hi, constraint)                                  \
	{                                                                                          \
		.section = #sec, .key = #name, .type = CFG_T_##kind,                               \
		.offset = CHECKED_OFFSET(sec, name, CTYPE_##kind),                                 \
		.size = sizeof(((struct cfg *)0)->sec.name), .def = default_text, .min = lo,       \
		.max = hi, .flags = constraint,                                                    \
	}

/* The one list of options.  config.yaml documents each row; tests/unit/test_config.c checks
 * that the file and this table agree. */
static const struct cfg_option options[] = {
    OPTION(server, bind, STRING, "127.0.0.1", 0, 0, 0),
    OPTION(server, port, INT, "6379", 1, 65535, 0),
    OPTION(server, threads, INT, "0", 0, 1024, 0),
    OPTION(server, pin_threads, BOOL, "no", 0, 0, 0),
    OPTION(server, max_clients, INT, "10000", 1, 1000000, 0),
    OPTION(server, databases, INT, "16", 1, 65536, 0),
    OPTION(server, requirepass, STRING, "", 0, 0, 0),
    OPTION(server, timeout_s, INT, "0", 0, INT_MAX, 0),
    OPTION(server, tcp_backlog, INT, "511", 1, 65535, 0),
    OPTION(server, max_bulk_len, SIZE, "512mb", MB, 4 * GB, 0),
    OPTION(server, max_multibulk_len, INT, "1048576", 1, INT_MAX, 0),
    OPTION(server, max_inline_len, SIZE, "64kb", KB, 64 * MB, 0),
    OPTION(server, output_buffer_limit, SIZE, "64mb", MB, 64 * GB, 0),
    OPTION(server, msg_queue_size, INT, "1024", 16, 65536, CFG_POW2),
    OPTION(server, busy_reply_threshold_ms, INT, "5000", 0, INT_MAX, 0),
    OPTION(storage, dir, STRING, "./data", 0, 0, 0),
    OPTION(storage, durability, DURABILITY, "fsync", 0, 0, 0),
    OPTION(storage, segment_size, SIZE, "256mb", MB, 64 * GB, CFG_MUL4K),
    OPTION(storage, inline_max, SIZE, "64", 0, 4 * KB, 0),
    OPTION(storage, cache_size, SIZE, "auto", MB, 1024 * GB, CFG_AUTO),
    OPTION(storage, index_cache_size, SIZE, "auto", MB, 1024 * GB, CFG_AUTO),
    OPTION(storage, gc_live_ratio, DOUBLE, "0.5", 0.05, 0.95, 0),
    OPTION(storage, index_threads, INT, "0", 0, 256, 0),
    OPTION(uring, entries, INT, "1024", 64, 32768, CFG_POW2),
    OPTION(uring, busy_poll_us, INT, "10", 0, 10000, 0),
    OPTION(uring, buf_ring_entries, INT, "512", 0, 32768, CFG_POW2),
    OPTION(uring, buf_size, SIZE, "16kb", 512, MB, 0),
    OPTION(log, level, LEVEL, "info", 0, 0, 0),
    OPTION(log, file, STRING, "", 0, 0, 0),
};

#define CFG_NOPTIONS ARRAY_SIZE(options)

static const char *const durability_names[] = {
    [CFG_DURABILITY_FSYNC] = "fsync",
    [CFG_DURABILITY_WRITE] = "write",
    [CFG_DURABILITY_NONE] = "none",
};

/* What a value of each type looks like, for "expected ..., got ..." (enums list their names). */
static const char *const type_expected[] = {
    [CFG_T_INT] = "an integer",
    [CFG_T_SIZE] = "a size (bytes, or a number with k/m/g suffix)",
    [CFG_T_BOOL] = "a boolean (true/false)",
    [CFG_T_STRING] = "a string",
    [CFG_T_LEVEL] = "one of",
    [CFG_T_DURABILITY] = "one of",
    [CFG_T_DOUBLE] = "a number",
};

const char *cfg_durability_name(enum cfg_durability d)
{
	if ((size_t)d >= ARRAY_SIZE(durability_names))
		return "unknown";
	return durability_names[d];
}

/* Returns the names of an enum type's values (indexed by value) and their count in *n, or NULL
 * for other types. */
static const char *const *enum_names(enum cfg_type type, size_t *n)
{
	switch (type) {
	case CFG_T_LEVEL:
		*n = LOG_LEVELS;
		return logging_level_names;
	case CFG_T_DURABILITY:
		*n = ARRAY_SIZE(durability_names);
		return durability_names;
	default:
		*n = 0;
		return NULL;
	}
}

/* Writes what a value of `type` should look like into buf: "an integer", "one of a|b|c". */
static void describe_expected(enum cfg_type type, char *buf, size_t len)
{
	size_t n;
	const char *const *names = enum_names(type, &n);
	size_t used = (size_t)snprintf(buf, len, "%s", type_expected[type]);
	for (size_t i = 0; names != NULL && i < n && used < len; i++)
		used +=
		    (size_t)snprintf(buf + used, len - used, "%s%s", i == 0 ? " " : "|", names[i]);
}

/* Copies at most CFG_ECHO_MAX bytes of a user's text into buf (which must hold
 * CFG_ECHO_MAX + 4 bytes) with control characters replaced by '?', so that a message stays one
 * line; returns buf. */
static const char *echo(const char *text, char *buf)
{
	size_t i;
	for (i = 0; text[i] != '\0' && i < CFG_ECHO_MAX; i++)
		buf[i] = iscntrl((unsigned char)text[i]) ? '?' : text[i];
	if (text[i] != '\0') {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

/* Writes a size bound in the largest unit that divides it exactly: 1048576 -> "1mb". */
static void format_size(double bound, char *buf, size_t len)
{
	static const struct {
		const char *suffix;
		uint64_t unit;
	} units[] = {{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}};
	uint64_t bytes = (uint64_t)bound;
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (bytes >= units[i].unit && bytes % units[i].unit == 0) {
			snprintf(buf, len, "%" PRIu64 "%s", bytes / units[i].unit, units[i].suffix);
			return;
		}
	}
	snprintf(buf, len, "%" PRIu64, bytes);
}

/* Writes option o's range as "MIN..MAX" in the option's own notation. */
static void describe_range(const struct cfg_option *o, char *buf, size_t len)
{
	char lo[32], hi[32];
	switch (o->type) {
	case CFG_T_SIZE:
		format_size(o->min, lo, sizeof(lo));
		format_size(o->max, hi, sizeof(hi));
		break;
	case CFG_T_DOUBLE:
		snprintf(lo, sizeof(lo), "%g", o->min);
		snprintf(hi, sizeof(hi), "%g", o->max);
		break;
	default:
		snprintf(lo, sizeof(lo), "%.0f", o->min);
		snprintf(hi, sizeof(hi), "%.0f", o->max);
		break;
	}
	snprintf(buf, len, "%s..%s", lo, hi);
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Parses an optionally signed decimal integer filling all of s.  Returns 0, -EINVAL (not an
 * integer) or -ERANGE (does not fit a long long). */
static int parse_int(const char *s, long long *out)
{
	if (!is_digit(s[*s == '+' || *s == '-']))
		return -EINVAL;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (*end != '\0')
		return -EINVAL;
	if (errno == ERANGE)
		return -ERANGE;
	*out = v;
	return 0;
}

/* Parses "N" or "N" followed by k, kb, m, mb, g or gb (powers of 1024, any case).  Returns 0,
 * -EINVAL (not a size) or -ERANGE (more than 2^64 - 1 bytes). */
static int parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		unsigned shift;
	} units[] = {{"", 0}, {"k", 10}, {"kb", 10}, {"m", 20}, {"mb", 20}, {"g", 30}, {"gb", 30}};
	uint64_t v = 0;
	bool overflow = false;
	const char *p = s;

	if (!is_digit(*p))
		return -EINVAL;
	for (; is_digit(*p); p++) {
		unsigned digit = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - digit) / 10)
			overflow = true;
		else
			v = v * 10 + digit;
	}
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcasecmp(p, units[i].suffix) != 0)
			continue;
		if (overflow || v > UINT64_MAX >> units[i].shift)
			return -ERANGE;
		*out = v << units[i].shift;
		return 0;
	}
	return -EINVAL;
}

/* Parses true/false, yes/no, on/off (any case).  Returns 0 or -EINVAL. */
static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on"};
	static const char *const no[] = {"false", "no", "off"};
	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
			*out = strcasecmp(s, yes[i]) == 0;
			return 0;
		}
	}
	return -EINVAL;
}

/* Parses a decimal floating-point number filling all of s.  Returns 0, -EINVAL (not a number,
 * NaN) or -ERANGE (infinite). */
static int parse_double(const char *s, double *out)
{
	if (!is_digit(*s) && *s != '.' && *s != '-' && *s != '+')
		return -EINVAL;
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end != '\0' || isnan(v))
		return -EINVAL;
	if (isinf(v))
		return -ERANGE;
	*out = v;
	return 0;
}

/* Returns the index of `s` among the `n` names, or -EINVAL. */
static int parse_name(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -EINVAL;
}

/* Parses `text` (`len` bytes; "" for an empty or null YAML value) as option o and stores it in
 * cfg.  Returns 0, or -EINVAL with "section.key: reason" in `why` and cfg untouched. */
static int option_parse(struct cfg *cfg, const struct cfg_option *o, const char *text, size_t len,
                        char *why, size_t whylen)
{
	char *field = (char *)cfg + o->offset;
	char shown[CFG_ECHO_MAX + 4], expected[128], range[80];
	long long i = 0;
	uint64_t u = 0;
	double d = 0;
	bool b = false;
	int rc = 0;

	if (memchr(text, '\0', len) != NULL) {
		snprintf(why, whylen, "%s.%s: the value contains a NUL byte", o->section, o->key);
		return -EINVAL;
	}
	switch (o->type) {
	case CFG_T_INT:
		rc = parse_int(text, &i);
		d = (double)i;
		u = (uint64_t)i;
		break;
	case CFG_T_SIZE:
		if ((o->flags & CFG_AUTO) && len == 4 && memcmp(text, "auto", 4) == 0) {
			u = 0; /* resolved at start (cfg_resolve_auto) */
			d = o->min;
			break;
		}
		rc = parse_size(text, &u);
		d = (double)u;
		break;
	case CFG_T_DOUBLE:
		rc = parse_double(text, &d);
		break;
	case CFG_T_BOOL:
		rc = parse_bool(text, &b);
		break;
	case CFG_T_LEVEL:
		i = logging_level_parse(text);
		rc = i < 0 ? -EINVAL : 0;
		break;
	case CFG_T_DURABILITY:
		i = parse_name(durability_names, ARRAY_SIZE(durability_names), text);
		rc = i < 0 ? -EINVAL : 0;
		break;
	case CFG_T_STRING:
		if (len >= o->size) {
			snprintf(why, whylen,
			         "%s.%s: the value is %zu bytes, longer than the limit of %zu",
			         o->section, o->key, len, o->size - 1);
			return -EINVAL;
		}
		break;
	}

	if (rc == -EINVAL) {
		describe_expected(o->type, expected, sizeof(expected));
		if (o->flags & CFG_AUTO)
			snprintf(expected + strlen(expected), sizeof(expected) - strlen(expected),
			         " or auto");
		if (len == 0)
			snprintf(why, whylen, "%s.%s: expected %s, got an empty value", o->section,
			         o->key, expected);
		else
			snprintf(why, whylen, "%s.%s: expected %s, got '%s'", o->section, o->key,
			         expected, echo(text, shown));
		return -EINVAL;
	}
	bool numeric = o->type == CFG_T_INT || o->type == CFG_T_SIZE || o->type == CFG_T_DOUBLE;
	if (rc == -ERANGE || (numeric && (d < o->min || d > o->max))) {
		describe_range(o, range, sizeof(range));
		snprintf(why, whylen, "%s.%s: %s is out of range (%s)", o->section, o->key,
		         echo(text, shown), range);
		return -EINVAL;
	}
	if ((o->flags & CFG_POW2) && (u & (u - 1)) != 0) {
		snprintf(why, whylen, "%s.%s: %s is not a power of two%s", o->section, o->key,
		         echo(text, shown), o->min == 0 ? " (or 0)" : "");
		return -EINVAL;
	}
	if ((o->flags & CFG_MUL4K) && u % 4096 != 0) {
		snprintf(why, whylen, "%s.%s: %s is not a multiple of 4096", o->section, o->key,
		         echo(text, shown));
		return -EINVAL;
	}

	switch (o->type) {
	case CFG_T_INT:
		*(int *)field = (int)i;
		break;
	case CFG_T_SIZE:
		*(uint64_t *)field = u;
		break;
	case CFG_T_DOUBLE:
		*(double *)field = d;
		break;
	case CFG_T_BOOL:
		*(bool *)field = b;
		break;
	case CFG_T_LEVEL:
		*(int *)field = (int)i;
		break;
	case CFG_T_DURABILITY:
		*(enum cfg_durability *)field = (enum cfg_durability)i;
		break;
	case CFG_T_STRING:
		memcpy(field, text, len);
		field[len] = '\0';
		break;
	}
	return 0;
}

/* Returns option o's value as text: the field itself for strings, otherwise formatted into buf
 * (32 bytes are enough). */
static const char *option_text(const struct cfg *cfg, const struct cfg_option *o, char *buf,
                               size_t len)
{
	const char *field = (const char *)cfg + o->offset;
	size_t n;
	const char *const *names = enum_names(o->type, &n);

	switch (o->type) {
	case CFG_T_INT:
		snprintf(buf, len, "%d", *(const int *)field);
		return buf;
	case CFG_T_SIZE:
		if ((o->flags & CFG_AUTO) && *(const uint64_t *)field == 0)
			return "auto";
		snprintf(buf, len, "%" PRIu64, *(const uint64_t *)field);
		return buf;
	case CFG_T_DOUBLE:
		snprintf(buf, len, "%g", *(const double *)field);
		return buf;
	case CFG_T_BOOL:
		return *(const bool *)field ? "yes" : "no";
	case CFG_T_LEVEL: {
		int v = *(const int *)field;
		return v >= 0 && (size_t)v < n ? names[v] : "unknown";
	}
	case CFG_T_DURABILITY:
		return cfg_durability_name(*(const enum cfg_durability *)field);
	case CFG_T_STRING:
		return field;
	}
	return "";
}

static bool section_starts_at(size_t i)
{
	return i == 0 || strcmp(options[i].section, options[i - 1].section) != 0;
}

/* Returns the index of the first option of section `name`, or -1. */
static int find_section(const char *name)
{
	for (size_t i = 0; i < CFG_NOPTIONS; i++)
		if (section_starts_at(i) && strcmp(options[i].section, name) == 0)
			return (int)i;
	return -1;
}

/* Returns the index of option `key` of the section starting at row `sec`, or -1. */
static int find_option(int sec, const char *key)
{
	for (size_t i = (size_t)sec; i < CFG_NOPTIONS; i++) {
		if (strcmp(options[i].section, options[sec].section) != 0)
			break;
		if (strcmp(options[i].key, key) == 0)
			return (int)i;
	}
	return -1;
}

/* Levenshtein distance between a and b, or SIZE_MAX when either is too long to bother. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];
	if (la >= 64 || lb >= ARRAY_SIZE(row))
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* Writes the section names in table order, "server, storage, ...", into buf. */
static const char *list_sections(char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < CFG_NOPTIONS && used < len; i++)
		if (section_starts_at(i))
			used += (size_t)snprintf(buf + used, len - used, "%s%s", i == 0 ? "" : ", ",
			                         options[i].section);
	return buf;
}

/* Writes "unknown section 'NAME' (sections: server, ...)" into why; returns -EINVAL. */
static int explain_unknown_section(const char *name, char *why, size_t whylen)
{
	char shown[CFG_ECHO_MAX + 4], sections[128];
	snprintf(why, whylen, "unknown section '%s' (sections: %s)", echo(name, shown),
	         list_sections(sections, sizeof(sections)));
	return -EINVAL;
}

/* Writes "SECTION.KEY: unknown option", with a suggestion when a name is close (in the section)
 * or the key exists in another section, into why; returns -EINVAL. */
static int explain_unknown_option(int sec, const char *key, char *why, size_t whylen)
{
	char shown[CFG_ECHO_MAX + 4];
	const struct cfg_option *near = NULL;
	size_t best = 3; /* suggest names at most 2 edits away */

	for (int i = sec; i < (int)CFG_NOPTIONS; i++) {
		if (strcmp(options[i].section, options[sec].section) != 0)
			break;
		size_t d = edit_distance(key, options[i].key);
		if (d < best && d < strlen(key)) {
			best = d;
			near = &options[i];
		}
	}
	if (near != NULL) {
		snprintf(why, whylen, "%s.%s: unknown option (did you mean '%s'?)",
		         options[sec].section, echo(key, shown), near->key);
		return -EINVAL;
	}
	for (size_t i = 0; i < CFG_NOPTIONS; i++) {
		if (strcmp(options[i].key, key) == 0) {
			snprintf(why, whylen, "%s.%s: unknown option (did you mean '%s.%s'?)",
			         options[sec].section, echo(key, shown), options[i].section,
			         options[i].key);
			return -EINVAL;
		}
	}
	snprintf(why, whylen, "%s.%s: unknown option", options[sec].section, echo(key, shown));
	return -EINVAL;
}

/* Finds option "section.key" given as the first `len` bytes of name.  Returns its index, or
 * -EINVAL with the reason in why (why may be NULL when whylen is 0). */
static int lookup(const char *name, size_t len, char *why, size_t whylen)
{
	char section[CFG_ECHO_MAX + 1], key[CFG_ECHO_MAX + 1], shown[CFG_ECHO_MAX + 4];
	const char *dot = memchr(name, '.', len);

	if (dot == NULL) {
		snprintf(key, sizeof(key), "%.*s", (int)len, name);
		snprintf(why, whylen, "'%s' is not section.key (e.g. server.port)",
		         echo(key, shown));
		return -EINVAL;
	}
	size_t seclen = (size_t)(dot - name), keylen = len - seclen - 1;
	snprintf(section, sizeof(section), "%.*s", (int)seclen, name);
	snprintf(key, sizeof(key), "%.*s", (int)keylen, dot + 1);
	int sec = seclen < sizeof(section) ? find_section(section) : -1;
	if (sec < 0)
		return explain_unknown_section(section, why, whylen);
	int i = keylen < sizeof(key) ? find_option(sec, key) : -1;
	if (i < 0)
		return explain_unknown_option(sec, key, why, whylen);
	return i;
}

void cfg_defaults(struct cfg *cfg)
{
	char why[256];
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < CFG_NOPTIONS; i++) {
		int rc = option_parse(cfg, &options[i], options[i].def, strlen(options[i].def), why,
		                      sizeof(why));
		ASSERT(rc == 0);
	}
}

int cfg_set(struct cfg *cfg, const char *assignment, char *err, size_t errlen)
{
	char why[512];
	const char *eq = strchr(assignment, '=');
	int i;

	if (eq == NULL) {
		snprintf(err, errlen, "--set %s: expected section.key=value", assignment);
		return -1;
	}
	i = lookup(assignment, (size_t)(eq - assignment), why, sizeof(why));
	if (i < 0 || option_parse(cfg, &options[i], eq + 1, strlen(eq + 1), why, sizeof(why)) < 0) {
		snprintf(err, errlen, "--set %s: %s", assignment, why);
		return -1;
	}
	return 0;
}

int cfg_get(const struct cfg *cfg, const char *name, char *out, size_t outlen)
{
	char buf[32];
	int i = lookup(name, strlen(name), NULL, 0);
	if (i < 0)
		return -1;
	snprintf(out, outlen, "%s", option_text(cfg, &options[i], buf, sizeof(buf)));
	return 0;
}

void cfg_foreach(const struct cfg *cfg, void (*fn)(const char *name, const char *value, void *arg),
                 void *arg)
{
	char name[96], buf[32];
	for (size_t i = 0; i < CFG_NOPTIONS; i++) {
		snprintf(name, sizeof(name), "%s.%s", options[i].section, options[i].key);
		fn(name, option_text(cfg, &options[i], buf, sizeof(buf)), arg);
	}
}

/* State of one cfg_load_file call. */
struct cfg_loader {
	const char *path;     /* as given, for messages */
	struct cfg *cfg;      /* the copy being filled */
	yaml_document_t *doc; /* owned by cfg_load_file */
	char *err;            /* caller's message buffer */
	size_t errlen;
	size_t option_line[CFG_NOPTIONS];  /* 1-based line an option was set at; 0 = not yet */
	size_t section_line[CFG_NOPTIONS]; /* same for sections, by first row of the section */
};

/* Writes "PATH:LINE:COL: <fmt>" into the loader's err; returns -EINVAL. */
__attribute__((format(printf, 3, 4))) static int fail_at(struct cfg_loader *ld, yaml_mark_t mark,
                                                         const char *fmt, ...)
{
	int n =
	    snprintf(ld->err, ld->errlen, "%s:%zu:%zu: ", ld->path, mark.line + 1, mark.column + 1);
	if (n >= 0 && (size_t)n < ld->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static const char *scalar_text(const yaml_node_t *node)
{
	return (const char *)node->data.scalar.value;
}

/* Names what a node is for "got ..." in messages: "a mapping", "a sequence" or the scalar
 * quoted (formatted into buf, CFG_ECHO_MAX + 6 bytes). */
static const char *describe_node(const yaml_node_t *node, char *buf)
{
	char shown[CFG_ECHO_MAX + 4];
	switch (node->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a sequence";
	default:
		snprintf(buf, CFG_ECHO_MAX + 6, "'%s'", echo(scalar_text(node), shown));
		return buf;
	}
}

/* True for a plain scalar YAML reads as null: nothing, "~", "null", "Null" or "NULL". */
static bool node_is_null(const yaml_node_t *node)
{
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(nulls); i++)
		if (strcmp(scalar_text(node), nulls[i]) == 0)
			return true;
	return false;
}

/* Applies one "key: value" pair of the section starting at row `sec`. */
static int load_option(struct cfg_loader *ld, int sec, yaml_node_t *key, yaml_node_t *value)
{
	const char *section = options[sec].section;
	char why[512], expected[128], got[CFG_ECHO_MAX + 6];

	if (key->type != YAML_SCALAR_NODE)
		return fail_at(ld, key->start_mark, "%s: expected an option name, got %s", section,
		               describe_node(key, got));
	int i = find_option(sec, scalar_text(key));
	if (i < 0) {
		explain_unknown_option(sec, scalar_text(key), why, sizeof(why));
		return fail_at(ld, key->start_mark, "%s", why);
	}
	const struct cfg_option *o = &options[i];
	if (ld->option_line[i] != 0)
		return fail_at(ld, key->start_mark, "%s.%s: duplicate key (first set at line %zu)",
		               section, o->key, ld->option_line[i]);
	ld->option_line[i] = key->start_mark.line + 1;

	if (value->type != YAML_SCALAR_NODE) {
		describe_expected(o->type, expected, sizeof(expected));
		return fail_at(ld, value->start_mark, "%s.%s: expected %s, got %s", section, o->key,
		               expected, describe_node(value, got));
	}
	const char *text = node_is_null(value) ? "" : scalar_text(value);
	size_t len = node_is_null(value) ? 0 : value->data.scalar.length;
	if (option_parse(ld->cfg, o, text, len, why, sizeof(why)) < 0)
		return fail_at(ld, value->start_mark, "%s", why);
	return 0;
}

/* Applies one "section: {options}" pair of the top-level mapping. */
static int load_section(struct cfg_loader *ld, yaml_node_t *key, yaml_node_t *value)
{
	char why[512], got[CFG_ECHO_MAX + 6];

	if (key->type != YAML_SCALAR_NODE)
		return fail_at(ld, key->start_mark, "expected a section name, got %s",
		               describe_node(key, got));
	int sec = find_section(scalar_text(key));
	if (sec < 0) {
		explain_unknown_section(scalar_text(key), why, sizeof(why));
		return fail_at(ld, key->start_mark, "%s", why);
	}
	if (ld->section_line[sec] != 0)
		return fail_at(ld, key->start_mark, "duplicate section '%s' (first at line %zu)",
		               options[sec].section, ld->section_line[sec]);
	ld->section_line[sec] = key->start_mark.line + 1;

	if (node_is_null(value))
		return 0;
	if (value->type != YAML_MAPPING_NODE)
		return fail_at(ld, value->start_mark,
		               "section '%s' must be a mapping of options (key: value), got %s",
		               options[sec].section, describe_node(value, got));
	for (yaml_node_pair_t *p = value->data.mapping.pairs.start;
	     p < value->data.mapping.pairs.top; p++) {
		int rc = load_option(ld, sec, yaml_document_get_node(ld->doc, p->key),
		                     yaml_document_get_node(ld->doc, p->value));
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Applies a composed document: a mapping of sections, or nothing at all. */
static int load_document(struct cfg_loader *ld)
{
	char sections[128], got[CFG_ECHO_MAX + 6];
	yaml_node_t *root = yaml_document_get_root_node(ld->doc);

	if (root == NULL || node_is_null(root))
		return 0;
	if (root->type != YAML_MAPPING_NODE)
		return fail_at(ld, root->start_mark,
		               "the top level must be a mapping of sections (%s), got %s",
		               list_sections(sections, sizeof(sections)), describe_node(root, got));
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
	     p++) {
		int rc = load_section(ld, yaml_document_get_node(ld->doc, p->key),
		                      yaml_document_get_node(ld->doc, p->value));
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Reports a libyaml failure with its position: the problem mark for scanner, parser and
 * composer errors, the line and column of the bad byte (counted in buf) for reader errors. */
static int fail_yaml(struct cfg_loader *ld, const yaml_parser_t *parser, const char *buf,
                     size_t len)
{
	const char *problem = parser->problem != NULL ? parser->problem : "unknown error";
	yaml_mark_t mark = parser->problem_mark;

	switch (parser->error) {
	case YAML_MEMORY_ERROR:
		snprintf(ld->err, ld->errlen, "%s: out of memory while reading YAML", ld->path);
		return -ENOMEM;
	case YAML_READER_ERROR:
		memset(&mark, 0, sizeof(mark));
		for (size_t i = 0; i < parser->problem_offset && i < len; i++) {
			if (buf[i] == '\n') {
				mark.line++;
				mark.column = 0;
			} else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
				mark.column++; /* columns count characters, as in libyaml's marks */
			}
		}
		if (parser->problem_value != -1)
			return fail_at(ld, mark, "malformed YAML: %s (byte 0x%02x)", problem,
			               (unsigned)parser->problem_value);
		return fail_at(ld, mark, "malformed YAML: %s", problem);
	default:
		if (parser->context != NULL)
			return fail_at(ld, mark, "malformed YAML: %s (%s at line %zu, column %zu)",
			               problem, parser->context, parser->context_mark.line + 1,
			               parser->context_mark.column + 1);
		return fail_at(ld, mark, "malformed YAML: %s", problem);
	}
}

/* Reads all of `path` into a malloc'd buffer (*out, freed by the caller).  Returns 0 or -errno;
 * -EFBIG past CFG_FILE_MAX bytes. */
static int read_file(const char *path, char **out, size_t *outlen)
{
	size_t cap = 0, len = 0;
	char *buf = NULL;
	int rc = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		if (len == cap) {
			cap = cap == 0 ? 4096 : cap * 2;
			char *grown = realloc(buf, cap);
			if (grown == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			buf = grown;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CFG_FILE_MAX) {
			rc = -EFBIG;
			goto out;
		}
	}
out:
	close(fd);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

int cfg_load_file(struct cfg *cfg, const char *path, char *err, size_t errlen)
{
	struct cfg next = *cfg;
	struct cfg_loader ld = {.path = path, .cfg = &next, .err = err, .errlen = errlen};
	yaml_parser_t parser;
	yaml_document_t doc;
	char *buf = NULL;
	size_t len = 0;

	int rc = read_file(path, &buf, &len);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return -1;
	}
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory while reading YAML", path);
		free(buf);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);

	ld.doc = &doc;
	if (!yaml_parser_load(&parser, &doc)) {
		rc = fail_yaml(&ld, &parser, buf, len);
		goto out;
	}
	rc = load_document(&ld);
	yaml_document_delete(&doc);
	if (rc < 0)
		goto out;

	/* A second document would be silently ignored otherwise. */
	if (!yaml_parser_load(&parser, &doc)) {
		rc = fail_yaml(&ld, &parser, buf, len);
		goto out;
	}
	yaml_node_t *extra = yaml_document_get_root_node(&doc);
	if (extra != NULL)
		rc = fail_at(&ld, doc.start_mark,
		             "only one YAML document is allowed in a config file");
	yaml_document_delete(&doc);
	if (rc == 0)
		*cfg = next;
out:
	yaml_parser_delete(&parser);
	free(buf);
	return rc < 0 ? -1 : 0;
}

/* ---- auto sizes --------------------------------------------------------- */

/* The first number in `path`, or 0 when it cannot be read or is not one
 * ("max": no limit). */
static uint64_t read_number_file(const char *path)
{
	char buf[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0 || !is_digit(buf[0]))
		return 0;
	buf[n] = '\0';
	return strtoull(buf, NULL, 10);
}

/* The memory limit of this process's cgroup (v2, or v1), 0 if none. */
static uint64_t cgroup_memory_limit(void)
{
	char line[512], path[700];
	uint64_t limit = 0;
	FILE *f = fopen("/proc/self/cgroup", "re");
	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "0::", 3) == 0) { /* v2: the unified hierarchy */
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", line + 3);
			limit = read_number_file(path);
			break;
		}
	}
	if (f != NULL)
		fclose(f);
	if (limit == 0) { /* v1 says "unlimited" with a huge number */
		uint64_t v1 = read_number_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
		if (v1 > 0 && v1 < (UINT64_C(1) << 60))
			limit = v1;
	}
	return limit;
}

uint64_t cfg_memory(char *source, size_t len)
{
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
	uint64_t phys = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
	uint64_t cg = cgroup_memory_limit();
	if (cg > 0 && (phys == 0 || cg < phys)) {
		snprintf(source, len, "the cgroup's memory limit");
		return cg;
	}
	snprintf(source, len, "the machine's memory");
	return phys;
}

static uint64_t auto_share(uint64_t memory, unsigned divisor)
{
	uint64_t v = memory / divisor;
	v -= v % (1u << 20);
	return v < CFG_AUTO_MIN ? CFG_AUTO_MIN : v;
}

void cfg_resolve_auto(struct cfg *cfg, char *note, size_t len)
{
	bool value_auto = cfg->storage.cache_size == 0,
	     index_auto = cfg->storage.index_cache_size == 0;
	if (!value_auto && !index_auto && note == NULL)
		return; /* (resolved already: no need to read the memory figures again) */
	char source[64];
	uint64_t memory = cfg_memory(source, sizeof(source));
	if (value_auto)
		cfg->storage.cache_size = auto_share(memory, CFG_AUTO_VALUE_DIVISOR);
	if (index_auto)
		cfg->storage.index_cache_size = auto_share(memory, CFG_AUTO_INDEX_DIVISOR);
	if (note == NULL || len == 0)
		return;
	char value_how[32] = "", index_how[32] = "";
	if (value_auto)
		snprintf(value_how, sizeof(value_how), " (auto: 1/%u)", CFG_AUTO_VALUE_DIVISOR);
	if (index_auto)
		snprintf(index_how, sizeof(index_how), " (auto: 1/%u)", CFG_AUTO_INDEX_DIVISOR);
	snprintf(note, len,
	         "caches: storage.cache_size %" PRIu64 " MiB%s, storage.index_cache_size %" PRIu64
	         " MiB%s; memory: %" PRIu64 " MiB (%s)",
	         cfg->storage.cache_size >> 20, value_how, cfg->storage.index_cache_size >> 20,
	         index_how, memory >> 20, source);
}
