/* `ringkv-bench resp`: a RESP load generator against any RESP server: units
 * of several commands that must stay together (MULTI ... EXEC, a script call
 * with its setup) as redis-benchmark cannot send them, weighted mixes of
 * them, Zipf-distributed keys, values of a size range, a fill of the
 * keyspace, and latency at a fixed rate without coordinated omission.
 *
 * Threads, each an io_uring event loop over its share of the connections
 * (bench_resp_loop.c); what is sent is compiled once per template
 * (bench_resp_gen.c); replies are parsed as they stream in and latencies go
 * to log-linear histograms (bench_resp_stats.c).  This file: the options,
 * their checks, and the output.
 *
 * Output (stdout): one line, which tools/bench/txn.py parses —
 *   units_per_s=N p50_ms=X p99_ms=Y errors=E p90_ms=X p999_ms=X max_ms=X
 * (after a --fill, a line fill_keys=... before it), or with --json one
 * object with every figure.  Progress: a line a second on stderr.
 * Exit status: 0; 1 when the server misbehaved (refused, closed a
 * connection, a malformed reply, a stall) or any reply was an error; 2 on a
 * usage error, with a message naming the option.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define PROG "ringkv-bench resp"

struct opts {
	struct rb_cfg cfg;
	const char *unit, *mix, *get_set, *dist;
	const char *value_size;
	bool json, units_given;
	char *mix_copy; /* the --mix entries' text, which the units point into */
	char get_set_mix[160];
};

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: " PROG " --port N (--unit U | --mix M | --get-set G:S | --fill) [options]\n"
	       "\n"
	       "Sends units (one or more commands that are timed together) to a RESP server\n"
	       "and reports units/s and the latency of a unit (first byte sent, or its scheduled\n"
	       "time with --rate, to its last reply read).\n"
	       "\n"
	       "What to send:\n"
	       "  --unit 'CMD ARG...;CMD ARG...'  one unit: commands separated by ';', arguments\n"
	       "                      by spaces.  In an argument, __key__ becomes a key number\n"
	       "                      drawn from --dist, 12 digits zero-padded (key:__key__ ->\n"
	       "                      key:000000001234, as redis-benchmark -r writes it);\n"
	       "                      __rand_int__ is the same; __value__ becomes a value of\n"
	       "                      --value-size bytes ('xxx...').  Each one is drawn anew.\n"
	       "  --mix 'UNIT=W,UNIT=W,...'  units picked at random with weights W, e.g.\n"
	       "                      'GET key:__key__=90,SET key:__key__ __value__=10' (a unit\n"
	       "                      may hold ';'; no argument may hold ',')\n"
	       "  --get-set G:S       shortcut for --mix 'GET key:__key__=G,SET key:__key__\n"
	       "                      __value__=S'\n"
	       "  --keyspace N        key numbers are below N (default 100000; at most 10^12)\n"
	       "  --dist D            uniform (default), zipf:S (Zipf with exponent S, e.g.\n"
	       "                      zipf:0.99; rank r is most popular, the ranks scattered over\n"
	       "                      the keyspace) or seq (each thread counts up from its own\n"
	       "                      start, wrapping at --keyspace)\n"
	       "  --value-size N|MIN-MAX  bytes of each __value__, fixed or uniform in [MIN, MAX]\n"
	       "                      (default 3, as redis-benchmark -d)\n"
	       "  --fill              first SET key:<n> <value> for every n below --keyspace,\n"
	       "                      exactly once, pipelined (depth max(--pipeline, 32)), with\n"
	       "                      its own progress and figures; alone, only fills\n"
	       "\n"
	       "How:\n"
	       "  --host H            server address (default 127.0.0.1)\n"
	       "  --port N            server port (required)\n"
	       "  --threads N         threads, each an io_uring event loop (default 1)\n"
	       "  --conns N           connections over all threads (default 50)\n"
	       "  --pipeline P        units in flight per connection (default 1)\n"
	       "  --units N           units to run over all threads (default 100000)\n"
	       "  --duration S        run S seconds instead (decimals allowed)\n"
	       "  --rate R            start R units/s over all connections on a fixed schedule;\n"
	       "                      latency counts from each unit's scheduled time, also when\n"
	       "                      its connection's pipeline was full (no coordinated\n"
	       "                      omission).  Default: as fast as the server answers\n"
	       "  --seed N            random seed (default 1): the same seed, the same keys\n"
	       "\n"
	       "Output:\n"
	       "  (default)           one line on stdout, after a fill line with --fill:\n"
	       "                      units_per_s=N p50_ms=X p99_ms=Y errors=E p90_ms=X p999_ms=X\n"
	       "                      max_ms=X\n"
	       "  --json              one JSON object with every figure instead\n"
	       "  --help              this text\n"
	       "Latency percentiles come from a log-linear histogram (<0.8%% error, to 68 s).\n"
	       "Errors: replies that are errors, nested ones too, and null EXEC replies; the\n"
	       "first is printed.  Exit status 1 if there were any, or the server misbehaved;\n"
	       "2 on a usage error.\n");
}

static int bad(const char *flag, const char *val, const char *what)
{
	fprintf(stderr, PROG ": %s%s%s: %s; see " PROG " --help\n", flag, val ? " " : "",
	        val ? val : "", what);
	return 2;
}

/* "N" or "MIN-MAX" bytes. */
static bool parse_value_size(const char *s, uint32_t *min, uint32_t *max)
{
	char buf[64];
	uint64_t lo, hi;
	const char *dash = strchr(s, '-');
	if (dash == NULL) {
		if (!bench_parse_u64(s, 0, RB_VALUE_MAX, &lo))
			return false;
		*min = *max = (uint32_t)lo;
		return true;
	}
	if ((size_t)(dash - s) >= sizeof(buf))
		return false;
	memcpy(buf, s, (size_t)(dash - s));
	buf[dash - s] = '\0';
	if (!bench_parse_u64(buf, 0, RB_VALUE_MAX, &lo) ||
	    !bench_parse_u64(dash + 1, 0, RB_VALUE_MAX, &hi) || lo > hi)
		return false;
	*min = (uint32_t)lo;
	*max = (uint32_t)hi;
	return true;
}

static bool parse_positive(const char *s, double max, double *out)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end != '\0' || !(v > 0 && v <= max))
		return false;
	*out = v;
	return true;
}

/* One option with its value; 0, or 2 after naming what is wrong. */
static int parse_opt(struct opts *o, const char *a, const char *val)
{
	struct rb_cfg *c = &o->cfg;
	uint64_t v;
	double d;
	if (strcmp(a, "--host") == 0)
		c->host = val;
	else if (strcmp(a, "--port") == 0)
		return bench_parse_u64(val, 1, 65535, &v)
		           ? (c->port = (uint16_t)v, 0)
		           : bad(a, val, "expected a port, 1 to 65535");
	else if (strcmp(a, "--threads") == 0)
		return bench_parse_u64(val, 1, 256, &v) ? (c->threads = (unsigned)v, 0)
		                                        : bad(a, val, "expected 1 to 256 threads");
	else if (strcmp(a, "--conns") == 0)
		return bench_parse_u64(val, 1, 100000, &v) ? (c->conns = (unsigned)v, 0)
		                                           : bad(a, val, "expected 1 to 100000");
	else if (strcmp(a, "--pipeline") == 0)
		return bench_parse_u64(val, 1, 100000, &v) ? (c->pipeline = (unsigned)v, 0)
		                                           : bad(a, val, "expected 1 to 100000");
	else if (strcmp(a, "--units") == 0) {
		if (!bench_parse_u64(val, 1, UINT64_MAX / 2, &v))
			return bad(a, val, "expected a count of units, at least 1");
		c->units = v;
		o->units_given = true;
	} else if (strcmp(a, "--duration") == 0) {
		if (!parse_positive(val, 1e6, &d))
			return bad(a, val, "expected seconds, more than 0 (e.g. 10 or 0.5)");
		c->duration_ns = (uint64_t)(d * 1e9);
	} else if (strcmp(a, "--rate") == 0) {
		if (!parse_positive(val, 1e9, &d))
			return bad(a, val, "expected units per second, more than 0");
		c->rate = d;
	} else if (strcmp(a, "--keyspace") == 0)
		return bench_parse_u64(val, 1, RB_KEYSPACE_MAX, &v)
		           ? (c->keyspace = v, 0)
		           : bad(a, val, "expected 1 to 10^12 keys (12 digits)");
	else if (strcmp(a, "--seed") == 0)
		return bench_parse_u64(val, 0, UINT64_MAX, &c->seed)
		           ? 0
		           : bad(a, val, "expected a number");
	else if (strcmp(a, "--value-size") == 0)
		o->value_size = val;
	else if (strcmp(a, "--dist") == 0)
		o->dist = val;
	else if (strcmp(a, "--unit") == 0 && o->unit == NULL)
		o->unit = val;
	else if (strcmp(a, "--mix") == 0 && o->mix == NULL)
		o->mix = val;
	else if (strcmp(a, "--get-set") == 0 && o->get_set == NULL)
		o->get_set = val;
	else if (strcmp(a, "--unit") == 0 || strcmp(a, "--mix") == 0 || strcmp(a, "--get-set") == 0)
		return bad(a, val, "given twice; put all the units in one --mix");
	else
		return bad(a, val, "unknown option");
	return 0;
}

/* --mix 'UNIT=W,UNIT=W': each entry's weight is after its last '='. */
static int compile_mix(struct opts *o, const char *flag, const char *spec)
{
	const char *why;
	o->mix_copy = strdup(spec);
	if (o->mix_copy == NULL)
		return bad(flag, spec, "out of memory");
	char *save;
	for (char *e = strtok_r(o->mix_copy, ",", &save); e != NULL;
	     e = strtok_r(NULL, ",", &save)) {
		char *eq = strrchr(e, '=');
		uint64_t w;
		if (eq == NULL || !bench_parse_u64(eq + 1, 1, 1000000000, &w))
			return bad(flag, e,
			           "each entry needs a weight: UNIT=W with W from 1 to 10^9");
		*eq = '\0';
		if (!rb_mix_add(&o->cfg.mix, e, w, o->cfg.vmax, &why))
			return bad(flag, e, why);
	}
	return o->cfg.mix.n > 0 ? 0 : bad(flag, spec, "no entry");
}

/* Turns --unit / --mix / --get-set and --dist into what rb_run uses. */
static int compile_workload(struct opts *o)
{
	struct rb_cfg *c = &o->cfg;
	const char *why;
	if ((o->unit != NULL) + (o->mix != NULL) + (o->get_set != NULL) > 1)
		return bad("--unit/--mix/--get-set", NULL, "give only one of them");
	if (o->get_set != NULL) {
		uint64_t g, s;
		char buf[64];
		const char *colon = strchr(o->get_set, ':');
		size_t n = colon ? (size_t)(colon - o->get_set) : 0;
		if (colon == NULL || n >= sizeof(buf) ||
		    (memcpy(buf, o->get_set, n), buf[n] = '\0',
		     !bench_parse_u64(buf, 0, 1000000, &g)) ||
		    !bench_parse_u64(colon + 1, 0, 1000000, &s) || g + s == 0)
			return bad("--get-set", o->get_set,
			           "expected GETS:SETS weights, e.g. 90:10");
		snprintf(o->get_set_mix, sizeof(o->get_set_mix),
		         "GET key:__key__=%llu,SET key:__key__ __value__=%llu",
		         (unsigned long long)g, (unsigned long long)s);
		/* a weight of 0 leaves its entry out */
		const char *mix = g == 0 ? strchr(o->get_set_mix, ',') + 1 : o->get_set_mix;
		if (s == 0)
			*strchr(o->get_set_mix, ',') = '\0';
		return compile_mix(o, "--get-set", mix);
	}
	if (o->mix != NULL)
		return compile_mix(o, "--mix", o->mix);
	if (o->unit != NULL && !rb_mix_add(&c->mix, o->unit, 1, c->vmax, &why))
		return bad("--unit", o->unit, why);
	if (c->mix.n == 0 && !c->fill)
		return bad("--unit", NULL,
		           "what to send is missing: give --unit, --mix, --get-set "
		           "or --fill");
	return 0;
}

static int check_opts(struct opts *o)
{
	struct rb_cfg *c = &o->cfg;
	const char *why;
	if (c->port == 0)
		return bad("--port", NULL, "is required: the RESP server's port");
	if (c->threads > c->conns)
		return bad("--threads", NULL,
		           "more threads than --conns; each thread needs a "
		           "connection");
	if (o->units_given && c->duration_ns > 0)
		return bad("--units/--duration", NULL, "give one of them, not both");
	if (c->duration_ns > 0)
		c->units = 0;
	if (o->value_size != NULL && !parse_value_size(o->value_size, &c->vmin, &c->vmax))
		return bad("--value-size", o->value_size,
		           "expected N or MIN-MAX bytes, at most 67108864 (64 MB)");
	if (!rb_dist_init(&c->dist, o->dist, c->keyspace, &why))
		return bad("--dist", o->dist, why);
	return compile_workload(o);
}

static int parse_args(struct opts *o, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return -1;
		}
		if (strcmp(a, "--fill") == 0) {
			o->cfg.fill = true;
			continue;
		}
		if (strcmp(a, "--json") == 0) {
			o->json = true;
			continue;
		}
		if (i + 1 == argc)
			return bad(a, NULL,
			           strncmp(a, "--", 2) == 0 ? "needs a value (or is unknown)"
			                                    : "unknown option");
		int ret = parse_opt(o, a, argv[++i]);
		if (ret != 0)
			return ret;
	}
	return check_opts(o);
}

/* ---- output ------------------------------------------------------------- */

static double ms(uint64_t ns)
{
	return (double)ns / 1e6;
}

static double per_s(const struct rb_result *r)
{
	return r->seconds > 0 ? (double)r->units / r->seconds : 0;
}

static void print_line(const struct rb_result *r)
{
	const struct rb_hist *h = r->hist;
	printf("units_per_s=%.0f p50_ms=%.3f p99_ms=%.3f errors=%llu p90_ms=%.3f p999_ms=%.3f "
	       "max_ms=%.3f\n",
	       per_s(r), ms(rb_hist_quantile(h, 0.5)), ms(rb_hist_quantile(h, 0.99)),
	       (unsigned long long)r->errors, ms(rb_hist_quantile(h, 0.9)),
	       ms(rb_hist_quantile(h, 0.999)), ms(h->max_ns));
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void json_result(const char *name, const struct rb_result *r)
{
	const struct rb_hist *h = r->hist;
	double mean = h->count ? (double)h->sum_ns / (double)h->count : 0;
	printf("\"%s\": {\"units\": %llu, \"seconds\": %.3f, \"units_per_s\": %.0f, "
	       "\"errors\": %llu, \"first_error\": ",
	       name, (unsigned long long)r->units, r->seconds, per_s(r),
	       (unsigned long long)r->errors);
	if (r->first_error[0] != '\0')
		json_str(r->first_error);
	else
		printf("null");
	printf(", \"latency_ms\": {\"min\": %.3f, \"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, "
	       "\"p99\": %.3f, \"p999\": %.3f, \"max\": %.3f}}",
	       ms(h->count ? h->min_ns : 0), mean / 1e6, ms(rb_hist_quantile(h, 0.5)),
	       ms(rb_hist_quantile(h, 0.9)), ms(rb_hist_quantile(h, 0.99)),
	       ms(rb_hist_quantile(h, 0.999)), ms(h->max_ns));
}

static void print_json(const struct opts *o, const struct rb_result *fill,
                       const struct rb_result *run)
{
	const struct rb_cfg *c = &o->cfg;
	printf("{\"config\": {\"host\": ");
	json_str(c->host);
	printf(", \"port\": %u, \"threads\": %u, \"conns\": %u, \"pipeline\": %u, "
	       "\"keyspace\": %llu, \"dist\": ",
	       c->port, c->threads, c->conns, c->pipeline, (unsigned long long)c->keyspace);
	json_str(o->dist);
	printf(", \"value_size_min\": %u, \"value_size_max\": %u, \"units\": %llu, "
	       "\"duration_s\": %.3f, \"rate\": %.0f, \"fill\": %s, \"seed\": %llu, \"mix\": [",
	       c->vmin, c->vmax, (unsigned long long)c->units, (double)c->duration_ns / 1e9,
	       c->rate, c->fill ? "true" : "false", (unsigned long long)c->seed);
	for (unsigned i = 0; i < c->mix.n; i++) {
		printf("%s{\"unit\": ", i ? ", " : "");
		json_str(c->mix.units[i].src);
		printf(", \"weight\": %llu}", (unsigned long long)c->mix.units[i].weight);
	}
	printf("]}");
	if (c->fill) {
		printf(", ");
		json_result("fill", fill);
	}
	if (c->mix.n > 0) {
		printf(", ");
		json_result("run", run);
	}
	printf("}\n");
}

static void print_results(const struct opts *o, const struct rb_result *fill,
                          const struct rb_result *run)
{
	if (o->json) {
		print_json(o, fill, run);
	} else if (o->cfg.mix.n == 0) {
		print_line(fill); /* only a fill: it is what was measured */
	} else {
		if (o->cfg.fill)
			printf("fill_keys=%llu fill_keys_per_s=%.0f fill_seconds=%.3f "
			       "fill_errors=%llu\n",
			       (unsigned long long)fill->units, per_s(fill), fill->seconds,
			       (unsigned long long)fill->errors);
		print_line(run);
	}
	fflush(stdout);
}

int bench_resp_main(int argc, char **argv)
{
	struct opts o = {.cfg = {.host = "127.0.0.1",
	                         .threads = 1,
	                         .conns = 50,
	                         .pipeline = 1,
	                         .units = 100000,
	                         .keyspace = 100000,
	                         .seed = 1,
	                         .vmin = 3,
	                         .vmax = 3},
	                 .dist = "uniform"};
	int ret = parse_args(&o, argc, argv);
	if (ret != 0) {
		rb_mix_free(&o.cfg.mix);
		free(o.mix_copy);
		return ret < 0 ? 0 : ret;
	}
	o.cfg.progress = true;
	struct rb_result fill = {0}, run = {0};
	ret = rb_run(&o.cfg, &fill, &run);
	if (ret == 0) {
		print_results(&o, &fill, &run);
		uint64_t errors = fill.errors + run.errors;
		if (errors > 0) {
			fprintf(stderr,
			        PROG ": %llu error replies (the first: %s): the figures measure "
			             "errors, not the unit; try the unit with redis-cli\n",
			        (unsigned long long)errors,
			        run.first_error[0] ? run.first_error : fill.first_error);
			ret = 1;
		}
	}
	free(fill.hist);
	free(run.hist);
	rb_mix_free(&o.cfg.mix);
	free(o.mix_copy);
	return ret;
}
