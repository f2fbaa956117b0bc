/* ringkv-bench: benchmarks of ringkv's building blocks, one subcommand each.
 *
 *   ringkv-bench COMMAND [options]      see `ringkv-bench COMMAND --help`
 *
 * A subcommand is one row of the table below (bench.h states its contract).
 * An unknown or missing command prints the usage and exits with status 2.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

struct bench_command {
	const char *name;                  /* as typed on the command line */
	int (*run)(int argc, char **argv); /* argv[0] is the command's name */
	const char *summary;               /* one line for the usage text */
};

static const struct bench_command bench_commands[] = {
    {"msg", bench_msg_main, "message passing between proactors: throughput, RTT, wake-ups"},
    {"store", bench_store_main, "storage: random puts and cold gets vs fio and db_bench"},
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
