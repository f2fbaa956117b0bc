/* ringkv-bench: benchmarks of ringkv's building blocks, one subcommand each.
 *
 *   ringkv-bench COMMAND [options]      see `ringkv-bench COMMAND --help`
 *
 * A subcommand is one row of the table below (bench.h states its contract).
 * An unknown or missing command prints the usage and exits with status 2.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

struct bench_command {
	const char *name;                  /* as typed on the command line */
	int (*run)(int argc, char **argv); /* argv[0] is the command's name */
	const char *summary;               /* one line for the usage text */
};

static const struct bench_command bench_commands[] = {
    {"msg", bench_msg_main, "message passing between proactors: throughput, RTT, wake-ups"},
    {"store", bench_store_main, "storage: random puts and cold gets vs fio and db_bench"},
    {"resp", bench_resp_main, "load of multi-command units (MULTI/EXEC) on a RESP server"},
};

#define BENCH_N_COMMANDS (sizeof(bench_commands) / sizeof(bench_commands[0]))

static void usage(FILE *out)
{
	fprintf(out, "usage: ringkv-bench COMMAND [options]\n\ncommands:\n");
	for (size_t i = 0; i < BENCH_N_COMMANDS; i++)
		fprintf(out, "  %-8s %s\n", bench_commands[i].name, bench_commands[i].summary);
	fprintf(out, "\n'ringkv-bench COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	                  strcmp(argv[1], "help") == 0)) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; argc >= 2 && i < BENCH_N_COMMANDS; i++)
		if (strcmp(argv[1], bench_commands[i].name) == 0)
			return bench_commands[i].run(argc - 1, argv + 1);
	if (argc >= 2)
		fprintf(stderr, "ringkv-bench: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}

void bench_sleep_ns(long ns)
{
	struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

bool bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	errno = 0;
	if (*s < '0' || *s > '9')
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double bench_median(const double *v, unsigned n)
{
	double *m = malloc((n ? n : 1) * sizeof(*m));
	unsigned k = 0;
	if (m == NULL)
		return NAN;
	for (unsigned i = 0; i < n; i++)
		if (!isnan(v[i]))
			m[k++] = v[i];
	double r = NAN;
	if (k > 0) {
		qsort(m, k, sizeof(*m), cmp_double);
		r = k % 2 ? m[k / 2] : (m[k / 2 - 1] + m[k / 2]) / 2;
	}
	free(m);
	return r;
}
