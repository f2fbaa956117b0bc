/* import: ringkv-import's main — bulk-loads CSV, TSV, JSON Lines or a RESP
 * command stream into a running server (online) or straight into a stopped
 * server's data directory (offline, storage/bulk.h).  docs/IMPORT.md is the
 * user's guide.
 *
 * Counting: a row is one input record (a csv/tsv line, a JSON object, a RESP
 * command).  read = written + skipped + errors once the input is done:
 * skipped rows were bad input (reported with their line), errors are rows
 * the server refused (online) — an EXEC reply counts each error it holds.
 * --max-errors N stops the import at the (N+1)th bad row or error.
 *
 * Exit status: 0 when every row was written; 1 when a row was skipped or
 * refused, or the import failed; 2 for a usage error; 130 after SIGINT.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/resp.h"
#include "service/config.h"
#include "service/runtime/clock.h"
#include "service/runtime/logging.h"
#include "storage/bulk.h"
#include "storage/format.h"
#include "storage/layout.h"
#include "tools/import/input.h"
#include "tools/import/online.h"
#include "tools/import/progress.h"

#define ERRORS_SHOWN 20 /* error replies printed; the rest are counted */
/* Online, a hash or set row goes as commands of at most this many items
 * (fields and values, or members). */
#define ITEMS_PER_COMMAND 2048
/* Redis's encoding limits, of the Redis 7.0 ringkv follows (the server marks
 * its collections by the same: service/cmd_hash.c, service/cmd_set.c). */
#define HASH_MAX_LISTPACK_ENTRIES 512
#define HASH_MAX_LISTPACK_VALUE   64
#define SET_MAX_INTSET_ENTRIES    512

struct options {
	const char *input; /* path, or "-" for stdin */
	struct in_options in;
	bool format_given;
	bool offline;
	const char *dir;    /* offline: data directory (else storage.dir) */
	const char *config; /* offline: config.yaml */
	const char *host, *port, *password;
	unsigned connections, window;
	uint64_t max_errors;
	bool quiet;
};

struct import {
	struct options opt;
	struct progress prog;
	struct in_reader *in;
	struct bulk *bulk;     /* offline */
	struct online *online; /* online */
	uint64_t read;         /* rows read (good and bad) */
	uint64_t written;      /* offline: rows written */
	uint64_t skipped;      /* bad rows */
	uint64_t errors_shown;
	struct bulk_elem *elems; /* offline: the elements of the command being written */
	size_t cap_elems;
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: ringkv-import [options] FILE|-\n"
	        "\n"
	        "Loads strings, hashes and sets into ringkv (or any Redis-protocol server).\n"
	        "\n"
	        "Input:\n"
	        "  --format F         csv, tsv, jsonl or resp (default: from FILE's extension)\n"
	        "  --header           csv/tsv: the first row names the columns (key, value, ttl)\n"
	        "\n"
	        "Online (the default: a running server):\n"
	        "  --host H           server address (default 127.0.0.1)\n"
	        "  --port P           server port (default 6379)\n"
	        "  --password PW      AUTH password (default: $REDISCLI_AUTH if set)\n"
	        "  --connections N    connections (default 4)\n"
	        "  --window N         commands awaiting replies per connection (default 4096)\n"
	        "\n"
	        "Offline (writes the data directory of a stopped server):\n"
	        "  --offline          write DIR directly\n"
	        "  --dir DIR          data directory (default: storage.dir of --config)\n"
	        "  --config FILE      the server's config.yaml (shard count, segment size,\n"
	        "                     inline_max); default: the built-in defaults\n"
	        "\n"
	        "  --max-errors N     go on past N bad rows or error replies (default 0: stop\n"
	        "                     at the first)\n"
	        "  --quiet            no progress and no summary\n"
	        "  --help             this text\n"
	        "\n"
	        "Exit status: 0 all rows written, 1 some row failed or the import failed,\n"
	        "2 usage error, 130 interrupted.  See docs/IMPORT.md.\n");
}

static int parse_uint(const char *flag, const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v > max || s[0] == '-') {
		fprintf(stderr, "ringkv-import: %s %s: expected a whole number 0..%" PRIu64 "\n",
		        flag, s, max);
		return -1;
	}
	*out = v;
	return 0;
}

/* Fills opt from argv.  Returns 0, 1 (--help: exit 0) or -1 (usage error,
 * reported). */
static int parse_args(int argc, char **argv, struct options *opt)
{
	*opt =
	    (struct options){.host = "127.0.0.1", .port = "6379", .connections = 4, .window = 4096};
	opt->password = getenv("REDISCLI_AUTH");
	bool online_flag = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t n;
		if (strcmp(a, "--help") == 0) {
			usage(stdout);
			return 1;
		} else if (strcmp(a, "--header") == 0) {
			opt->in.header = true;
		} else if (strcmp(a, "--offline") == 0) {
			opt->offline = true;
		} else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
			opt->quiet = true;
		} else if (a[0] == '-' && a[1] == '-' && v == NULL) {
			fprintf(stderr, "ringkv-import: %s needs a value (see --help)\n", a);
			return -1;
		} else if (strcmp(a, "--format") == 0) {
			if (in_format_parse(v, &opt->in.format) < 0) {
				fprintf(stderr,
				        "ringkv-import: --format %s: expected csv, tsv, jsonl or"
				        " resp\n",
				        v);
				return -1;
			}
			opt->format_given = true;
			i++;
		} else if (strcmp(a, "--dir") == 0) {
			opt->dir = v;
			i++;
		} else if (strcmp(a, "--config") == 0) {
			opt->config = v;
			i++;
		} else if (strcmp(a, "--host") == 0 || strcmp(a, "-h") == 0) {
			opt->host = v;
			online_flag = true;
			i++;
		} else if (strcmp(a, "--port") == 0 || strcmp(a, "-p") == 0) {
			if (parse_uint(a, v, 65535, &n) < 0 || n == 0)
				return -1;
			opt->port = v;
			online_flag = true;
			i++;
		} else if (strcmp(a, "--password") == 0 || strcmp(a, "-a") == 0) {
			opt->password = v;
			online_flag = true;
			i++;
		} else if (strcmp(a, "--connections") == 0) {
			if (parse_uint(a, v, 1024, &n) < 0 || n == 0)
				return -1;
			opt->connections = (unsigned)n;
			i++;
		} else if (strcmp(a, "--window") == 0) {
			if (parse_uint(a, v, 1u << 20, &n) < 0 || n == 0)
				return -1;
			opt->window = (unsigned)n;
			i++;
		} else if (strcmp(a, "--max-errors") == 0) {
			if (parse_uint(a, v, UINT64_MAX, &opt->max_errors) < 0)
				return -1;
			i++;
		} else if ((a[0] == '-' && a[1] != '\0') || opt->input != NULL) {
			fprintf(stderr, "ringkv-import: unexpected argument '%s' (see --help)\n",
			        a);
			return -1;
		} else {
			opt->input = a;
		}
	}
	if (opt->input == NULL) {
		fprintf(stderr, "ringkv-import: name the input FILE (or - for standard input);"
		                " see --help\n");
		return -1;
	}
	if (opt->offline && online_flag) {
		fprintf(stderr, "ringkv-import: --offline writes a data directory; --host, --port"
		                " and --password are for online imports: use one or the other\n");
		return -1;
	}
	if (!opt->offline && (opt->dir != NULL || opt->config != NULL)) {
		fprintf(stderr, "ringkv-import: --dir and --config need --offline\n");
		return -1;
	}
	if (!opt->format_given && in_format_guess(opt->input, &opt->in.format) < 0) {
		fprintf(stderr,
		        "ringkv-import: cannot tell the format of '%s' from its name: give"
		        " --format csv, tsv, jsonl or resp\n",
		        opt->input);
		return -1;
	}
	return 0;
}

/* ---- reporting --------------------------------------------------------- */

static void report(struct import *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(struct import *im, const char *fmt, ...)
{
	va_list ap;
	prog_clear(&im->prog);
	fputs("ringkv-import: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void on_server_error(void *arg, uint64_t line, const char *msg, size_t len)
{
	struct import *im = arg;
	if (im->errors_shown++ < ERRORS_SHOWN)
		report(im, "line %" PRIu64 ": the server replied: %.*s", line, (int)len, msg);
	else if (im->errors_shown == ERRORS_SHOWN + 1)
		report(im, "(further error replies are counted, not shown)");
}

static void on_phase(void *arg, const char *what)
{
	struct import *im = arg;
	prog_phase(&im->prog, what);
}

static uint64_t failures(const struct import *im)
{
	uint64_t n = im->skipped;
	if (im->online)
		n += online_get_stats(im->online)->errors;
	return n;
}

/* ---- offline ----------------------------------------------------------- */

static unsigned cpus_available(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return 1;
	int n = CPU_COUNT(&set);
	return n > 0 ? (unsigned)n : 1;
}

static int offline_open(struct import *im)
{
	struct cfg cfg;
	char err[1024];
	cfg_defaults(&cfg);
	if (im->opt.config != NULL && cfg_load_file(&cfg, im->opt.config, err, sizeof(err)) < 0) {
		report(im, "%s", err);
		return -EINVAL;
	}
	const char *dir = im->opt.dir ? im->opt.dir : cfg.storage.dir;
	unsigned threads = cfg.server.threads > 0 ? (unsigned)cfg.server.threads : cpus_available();
	unsigned shards;
	int ret = layout_open(dir, threads, &shards, err, sizeof(err));
	if (ret < 0) {
		report(im, "%s", err);
		return ret;
	}
	struct bulk_config bc = {.dir = dir,
	                         .shards = shards,
	                         .databases = (unsigned)cfg.server.databases,
	                         .segment_size = cfg.storage.segment_size,
	                         .inline_max = (uint32_t)cfg.storage.inline_max,
	                         .index_cache = cfg.storage.index_cache_size,
	                         .threads = cpus_available(),
	                         .stop = &interrupted,
	                         .phase = on_phase,
	                         .phase_arg = im};
	ret = bulk_open(&im->bulk, &bc, err, sizeof(err));
	if (ret < 0)
		report(im, "%s", err);
	return ret;
}

/* Writes one SET; a row the store cannot take is a bad row.  Returns 0, 1
 * (skipped) or -errno (fatal, reported). */
static int offline_set(struct import *im, const struct in_row *row, const uint8_t *key, size_t klen,
                       const uint8_t *value, size_t vlen, uint64_t expiry_ms)
{
	char err[512];
	int ret = bulk_put(im->bulk, key, klen, value, vlen, expiry_ms, err, sizeof(err));
	if (ret == -E2BIG) {
		report(im, "line %" PRIu64 ": %s", row->line, err);
		return 1;
	}
	if (ret < 0)
		report(im, "%s", err);
	return ret;
}

/* Writes one HSET (only_new: HSETNX) or SADD of items[0..n) — a hash's
 * fields and values in turn, a set's members — to key (expiry_ms: 0, or the
 * key's expiry afterwards); a row the store cannot take (WRONGTYPE, over the
 * limits) is a bad row.  Returns 0, 1 (skipped) or -errno (fatal, reported). */
static int offline_coll(struct import *im, const struct in_row *row, uint8_t type,
                        const uint8_t *key, size_t klen, const uint8_t *const *items,
                        const size_t *item_len, size_t n, bool only_new, uint64_t expiry_ms)
{
	bool hash = type == FMT_TYPE_HASH;
	size_t m = hash ? n / 2 : n;
	if (m > im->cap_elems) {
		struct bulk_elem *e = realloc(im->elems, m * sizeof(*e));
		if (e == NULL) {
			report(im, "out of memory");
			return -ENOMEM;
		}
		im->elems = e;
		im->cap_elems = m;
	}
	for (size_t k = 0; k < m; k++) {
		struct bulk_elem *e = &im->elems[k];
		int64_t v;
		if (hash) {
			*e = (struct bulk_elem){.elem = items[2 * k],
			                        .elen = item_len[2 * k],
			                        .value = items[2 * k + 1],
			                        .vlen = item_len[2 * k + 1]};
			if (e->elen > HASH_MAX_LISTPACK_VALUE || e->vlen > HASH_MAX_LISTPACK_VALUE)
				e->enc = FMT_ENC_BIG;
		} else {
			*e = (struct bulk_elem){.elem = items[k], .elen = item_len[k]};
			/* an intset holds canonical integers only, as resp_parse_int64 reads */
			if (!resp_parse_int64(items[k], item_len[k], &v))
				e->enc = FMT_ENC_BIG;
		}
	}
	struct bulk_coll_cmd c = {.type = type,
	                          .key = key,
	                          .klen = klen,
	                          .elems = im->elems,
	                          .n = m,
	                          .only_new = only_new,
	                          .expiry_ms = expiry_ms,
	                          .big_after =
	                              hash ? HASH_MAX_LISTPACK_ENTRIES : SET_MAX_INTSET_ENTRIES};
	char err[512];
	int ret = bulk_coll(im->bulk, &c, err, sizeof(err));
	if (ret == -EPROTOTYPE || ret == -E2BIG) {
		report(im, "line %" PRIu64 ": %s", row->line, err);
		return 1;
	}
	if (ret < 0)
		report(im, "%s", err);
	return ret;
}

/* Sets key's expiry (0: none); a string the data directory holds is a bad
 * row (bulk_expire).  Returns 0, 1 (skipped) or -errno (fatal, reported). */
static int offline_expire(struct import *im, const struct in_row *row, const uint8_t *key,
                          size_t klen, uint64_t expiry_ms)
{
	char err[512];
	int ret = bulk_expire(im->bulk, key, klen, expiry_ms, err, sizeof(err));
	if (ret == -EOPNOTSUPP) {
		report(im, "line %" PRIu64 ": %s", row->line, err);
		return 1;
	}
	if (ret < 0)
		report(im, "%s", err);
	return ret;
}

/* Parses a RESP argument as a decimal integer. */
static bool arg_int(const uint8_t *s, size_t n, long long *v)
{
	char buf[32];
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	char *end;
	errno = 0;
	*v = strtoll(buf, &end, 10);
	return errno == 0 && *end == '\0';
}

static bool arg_is(const uint8_t *s, size_t n, const char *name)
{
	return n == strlen(name) && strncasecmp((const char *)s, name, n) == 0;
}

/* EXPIRE, PEXPIRE, EXPIREAT or PEXPIREAT. */
static bool is_expire(const uint8_t *s, size_t n)
{
	return arg_is(s, n, "EXPIRE") || arg_is(s, n, "PEXPIRE") || arg_is(s, n, "EXPIREAT") ||
	       arg_is(s, n, "PEXPIREAT");
}

/* Applies one RESP command offline: the SET family, HSET, HMSET, HSETNX,
 * SADD, the EXPIRE family and PERSIST, and the commands an AOF
 * or a generated script wraps them in.  Returns 0, 1 (bad row, reported) or
 * -errno. */
static int offline_command(struct import *im, const struct in_row *row)
{
	const uint8_t *const *av = row->argv;
	const size_t *al = row->argl;
	size_t argc = row->argc;
	const char *bad = NULL;
	char why[300];
	long long n;
	if (arg_is(av[0], al[0], "SET") && argc >= 3) {
		uint64_t expiry = 0;
		for (size_t i = 3; i < argc && bad == NULL; i++) {
			bool ex = arg_is(av[i], al[i], "EX"), px = arg_is(av[i], al[i], "PX");
			bool exat = arg_is(av[i], al[i], "EXAT"),
			     pxat = arg_is(av[i], al[i], "PXAT");
			if (!(ex || px || exat || pxat)) {
				snprintf(
				    why, sizeof(why),
				    "SET option '%.*s' is not supported offline (only EX, PX, EXAT,"
				    " PXAT): import online instead",
				    (int)(al[i] < 20 ? al[i] : 20), (const char *)av[i]);
				bad = why;
			} else if (expiry != 0 || i + 1 == argc) {
				bad = "syntax error in SET";
			} else if (!arg_int(av[i + 1], al[i + 1], &n) || n <= 0 ||
			           n > (long long)(UINT64_MAX / 2000)) {
				bad = "invalid expire time in 'set' command";
			} else {
				i++;
				expiry = ex     ? clock_unix_ms() + (uint64_t)n * 1000
				         : px   ? clock_unix_ms() + (uint64_t)n
				         : exat ? (uint64_t)n * 1000
				                : (uint64_t)n;
			}
		}
		if (bad == NULL)
			return offline_set(im, row, av[1], al[1], av[2], al[2], expiry);
	} else if ((arg_is(av[0], al[0], "SETEX") || arg_is(av[0], al[0], "PSETEX")) && argc == 4) {
		bool sec = arg_is(av[0], al[0], "SETEX");
		if (!arg_int(av[2], al[2], &n) || n <= 0 || n > (long long)(UINT64_MAX / 2000)) {
			snprintf(why, sizeof(why), "invalid expire time in '%s' command",
			         sec ? "setex" : "psetex");
			bad = why;
		} else {
			uint64_t expiry = clock_unix_ms() + (uint64_t)n * (sec ? 1000 : 1);
			return offline_set(im, row, av[1], al[1], av[3], al[3], expiry);
		}
	} else if (arg_is(av[0], al[0], "MSET") && argc >= 3 && argc % 2 == 1) {
		for (size_t i = 1; i < argc; i += 2) {
			int ret = offline_set(im, row, av[i], al[i], av[i + 1], al[i + 1], 0);
			if (ret != 0)
				return ret;
		}
		return 0;
	} else if ((arg_is(av[0], al[0], "HSET") || arg_is(av[0], al[0], "HMSET")) && argc >= 4 &&
	           argc % 2 == 0) {
		return offline_coll(im, row, FMT_TYPE_HASH, av[1], al[1], av + 2, al + 2, argc - 2,
		                    false, 0);
	} else if (arg_is(av[0], al[0], "HSETNX") && argc == 4) {
		return offline_coll(im, row, FMT_TYPE_HASH, av[1], al[1], av + 2, al + 2, 2, true,
		                    0);
	} else if (arg_is(av[0], al[0], "SADD") && argc >= 3) {
		return offline_coll(im, row, FMT_TYPE_SET, av[1], al[1], av + 2, al + 2, argc - 2,
		                    false, 0);
	} else if (is_expire(av[0], al[0]) && argc == 3) {
		bool ms = arg_is(av[0], al[0], "PEXPIRE") || arg_is(av[0], al[0], "PEXPIREAT");
		bool at = arg_is(av[0], al[0], "EXPIREAT") || arg_is(av[0], al[0], "PEXPIREAT");
		__int128 when = 0;
		if (arg_int(av[2], al[2], &n))
			when = (__int128)n * (ms ? 1 : 1000) + (at ? 0 : (__int128)clock_unix_ms());
		if (!arg_int(av[2], al[2], &n)) {
			bad = "value is not an integer or out of range";
		} else if (when > INT64_MAX || when < INT64_MIN) {
			snprintf(why, sizeof(why), "invalid expire time in '%.*s' command",
			         (int)al[0], (const char *)av[0]);
			bad = why;
		} else {
			/* A time in the past expires the key at once (it stays, expired,
			 * until the server reclaims it, as Redis leaves it loading an AOF). */
			return offline_expire(im, row, av[1], al[1], when > 0 ? (uint64_t)when : 1);
		}
	} else if (arg_is(av[0], al[0], "PERSIST") && argc == 2) {
		return offline_expire(im, row, av[1], al[1], 0);
	} else if (arg_is(av[0], al[0], "SELECT") && argc == 2) {
		if (arg_int(av[1], al[1], &n) && n == 0)
			return 0;
		bad = "an offline import loads database 0 only (SELECT 0): import other databases"
		      " online";
	} else if ((arg_is(av[0], al[0], "MULTI") || arg_is(av[0], al[0], "EXEC") ||
	            arg_is(av[0], al[0], "PING")) &&
	           argc == 1) {
		return 0; /* an offline import is applied whole or not at all anyway */
	} else if (arg_is(av[0], al[0], "SET") || arg_is(av[0], al[0], "SETEX") ||
	           arg_is(av[0], al[0], "PSETEX") || arg_is(av[0], al[0], "MSET") ||
	           arg_is(av[0], al[0], "HSET") || arg_is(av[0], al[0], "HMSET") ||
	           arg_is(av[0], al[0], "HSETNX") || arg_is(av[0], al[0], "SADD") ||
	           arg_is(av[0], al[0], "PERSIST") || (is_expire(av[0], al[0]) && argc < 3)) {
		snprintf(why, sizeof(why), "wrong number of arguments for '%.*s' command",
		         (int)al[0], (const char *)av[0]);
		bad = why;
	} else {
		snprintf(why, sizeof(why),
		         "command '%.*s' is not supported offline (SET, SETEX, PSETEX, MSET, HSET,"
		         " HMSET, HSETNX, SADD, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT without"
		         " options, PERSIST, SELECT 0, MULTI, EXEC, PING are): import online"
		         " instead",
		         (int)(al[0] < 32 ? al[0] : 32), (const char *)av[0]);
		bad = why;
	}
	report(im, "line %" PRIu64 ": %s", row->line, bad);
	return 1;
}

/* ---- the import -------------------------------------------------------- */

/* Sends or writes one good row.  Returns 0, 1 (bad row, reported) or -errno
 * (fatal, reported). */
static int import_row(struct import *im, const struct in_row *row)
{
	char err[1024];
	int ret;
	bool hash = row->kind == IN_HASH;
	if (im->bulk != NULL) {
		uint64_t expiry = row->ttl_s ? clock_unix_ms() + (uint64_t)row->ttl_s * 1000 : 0;
		if (im->opt.in.format == IN_RESP)
			ret = offline_command(im, row);
		else if (row->kind == IN_STRING)
			ret = offline_set(im, row, row->key, row->key_len, row->value,
			                  row->value_len, expiry);
		else
			ret = offline_coll(im, row, hash ? FMT_TYPE_HASH : FMT_TYPE_SET, row->key,
			                   row->key_len, row->item, row->item_len, row->n_items,
			                   false, expiry);
		if (ret == 0)
			im->written++;
		return ret;
	}
	if (im->opt.in.format == IN_RESP)
		ret = online_command(im->online, row->argc, row->argv, row->argl, row->raw,
		                     row->raw_len, row->line, err, sizeof(err));
	else if (row->kind == IN_STRING)
		ret = online_set(im->online, row->key, row->key_len, row->value, row->value_len,
		                 row->ttl_s, row->line, err, sizeof(err));
	else
		ret = online_coll(im->online, hash ? "HSET" : "SADD", hash ? 2 : 1, row->key,
		                  row->key_len, row->item, row->item_len, row->n_items,
		                  ITEMS_PER_COMMAND, row->ttl_s, row->line, err, sizeof(err));
	if (ret < 0)
		report(im, "%s", err);
	return ret;
}

/* Reads and imports every row.  Returns 0, or -errno (reported). */
static int import_rows(struct import *im)
{
	char err[1024];
	for (;;) {
		if (interrupted)
			return -EINTR;
		struct in_row row;
		int ret = in_next(im->in, &row, err, sizeof(err));
		if (ret == 0)
			return 0;
		if (ret == -EINTR)
			continue; /* the loop's head looks at the flag */
		if (ret != 1 && ret != -EINVAL) {
			report(im, "%s", err);
			return ret;
		}
		im->read++;
		if (ret == -EINVAL) {
			report(im, "%s", err);
			ret = 1;
		} else {
			ret = import_row(im, &row);
			if (ret < 0)
				return ret;
		}
		im->skipped += (uint64_t)ret;
		if (failures(im) > im->opt.max_errors) {
			report(im,
			       "stopping: more than %" PRIu64 " bad row%s or error repl%s"
			       " (--max-errors)",
			       im->opt.max_errors, im->opt.max_errors == 1 ? "" : "s",
			       im->opt.max_errors == 1 ? "y" : "ies");
			return -ECANCELED;
		}
		prog_update(&im->prog, im->read, in_bytes(im->in));
	}
}

static void summary(struct import *im, const struct bulk_stats *bs, double secs)
{
	if (im->opt.quiet)
		return;
	prog_clear(&im->prog);
	uint64_t written = im->written, errors = 0;
	if (im->online) {
		written = online_get_stats(im->online)->ok;
		errors = online_get_stats(im->online)->errors;
	}
	printf("ringkv-import: %" PRIu64 " rows read, %" PRIu64 " written, %" PRIu64
	       " skipped, %" PRIu64 " errors in %.2f s (%.0f rows/s)\n",
	       im->read, written, im->skipped, errors, secs,
	       secs > 0 ? (double)im->read / secs : 0.0);
	if (bs != NULL)
		printf("ringkv-import: %" PRIu64 " keys written (%" PRIu64 " new, %" PRIu64
		       " replaced, %" PRIu64 " extended), %" PRIu64 " hash fields and set members,"
		       " %.1f MB of log in %" PRIu64 " new segment%s\n",
		       bs->keys, bs->new_keys, bs->overwritten, bs->extended, bs->elements,
		       (double)bs->log_bytes / 1e6, bs->segments, bs->segments == 1 ? "" : "s");
}

int main(int argc, char **argv)
{
	struct import im = {0};
	int r = parse_args(argc, argv, &im.opt);
	if (r != 0)
		return r > 0 ? 0 : 2;
	logging_level = LOG_LEVEL_WARN;

	int fd = 0;
	if (strcmp(im.opt.input, "-") != 0) {
		fd = open(im.opt.input, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "ringkv-import: cannot open %s: %s\n", im.opt.input,
			        strerror(errno));
			return 1;
		}
	}
	struct stat st;
	uint64_t size = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
	struct sigaction sa = {.sa_handler = on_sigint};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	prog_init(&im.prog, !im.opt.quiet && isatty(2), size);

	int ret = in_open(&im.in, fd, &im.opt.in);
	if (ret < 0) {
		fprintf(stderr, "ringkv-import: out of memory\n");
		return 1;
	}
	char err[1024];
	if (im.opt.offline) {
		ret = offline_open(&im);
	} else {
		struct online_config oc = {.host = im.opt.host,
		                           .port = im.opt.port,
		                           .password = im.opt.password,
		                           .connections = im.opt.connections,
		                           .window = im.opt.window,
		                           .on_error = on_server_error,
		                           .arg = &im};
		ret = online_open(&im.online, &oc, err, sizeof(err));
		if (ret < 0)
			report(&im, "%s", err);
	}
	if (ret < 0) {
		in_close(im.in);
		return 1;
	}

	ret = import_rows(&im);
	struct bulk_stats bs, *bsp = NULL;
	if (im.bulk != NULL) {
		if (ret == 0) {
			ret = bulk_finish(im.bulk, &bs, err, sizeof(err));
			if (ret < 0)
				report(&im, "%s", err);
			if (ret == 0 || bs.rows > 0)
				bsp = &bs;
		} else {
			report(&im, "nothing was imported: the data directory is as it was");
		}
		bulk_close(im.bulk);
		if (bsp == NULL)
			im.written = 0;
	} else {
		/* Whatever stopped the reading, collect the replies of what was sent. */
		int fin = online_finish(im.online, err, sizeof(err));
		if (fin < 0) {
			report(&im, "%s", err);
			if (ret == 0)
				ret = fin;
		}
	}
	if (ret == -EINTR && !im.opt.quiet)
		report(&im, "interrupted");
	summary(&im, bsp, prog_elapsed(&im.prog));
	if (im.online != NULL && online_get_stats(im.online)->errors > 0 && ret == 0)
		ret = -EIO;
	online_close(im.online);
	in_close(im.in);
	free(im.elems);
	if (fd > 0)
		close(fd);
	if (ret == -EINTR)
		return 130;
	return ret < 0 || im.skipped > 0 ? 1 : 0;
}
