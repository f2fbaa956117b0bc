/* server: ringkv-server's main — command line, configuration, start-up of the
 * proactor pool, and shutdown on SIGINT/SIGTERM.
 *
 * Signals: SIGINT, SIGTERM and SIGHUP are blocked in every thread before the
 * proactors start (they inherit the mask), and the main thread alone takes
 * them with sigwaitinfo.  No proactor is ever interrupted by a signal handler.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "logging.h"
#include "pool.h"

#define RINGKV_VERSION "0.1.0"
#define MSG_BUDGET 1024 /* messages a proactor runs per loop iteration at most */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ringkv-server [--config FILE] [options]\n"
		"\n"
		"  --config FILE        read FILE (YAML; see config.yaml for every option)\n"
		"  --port N             server.port\n"
		"  --bind ADDR          server.bind\n"
		"  --dir DIR            storage.dir\n"
		"  --threads N          server.threads (0 = one per CPU)\n"
		"  --set SECTION.KEY=VALUE   any option, e.g. --set uring.busy_poll_us=0\n"
		"  --check-config       validate the configuration, print it, and exit\n"
		"  --version            print the version and exit\n"
		"  --help               this text\n"
		"\n"
		"Options are applied in order: defaults, then --config, then the others.\n");
}

static void print_option(const char *name, const char *value, void *arg)
{
	(void)arg;
	printf("%s: %s\n", name, value);
}

/* Applies the command line to `cfg`.  Returns 0 to run, 1 to exit 0 (help,
 * version, check-config), -1 on error (already reported). */
static int parse_args(int argc, char **argv, struct cfg *cfg, bool *check_only)
{
	static const struct {
		const char *flag;
		const char *option;
	} shortcuts[] = {
		{"--port", "server.port"},
		{"--bind", "server.bind"},
		{"--dir", "storage.dir"},
		{"--threads", "server.threads"},
	};
	char err[1024], assignment[4200];

	/* The file first, wherever --config stands, so later flags override it. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") != 0)
			continue;
		if (i + 1 >= argc) {
			fprintf(stderr, "ringkv-server: --config needs a file name\n");
			return -1;
		}
		if (cfg_load_file(cfg, argv[i + 1], err, sizeof(err)) < 0) {
			fprintf(stderr, "ringkv-server: %s\n", err);
			return -1;
		}
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 1;
		}
		if (strcmp(a, "--version") == 0) {
			printf("ringkv-server %s\n", RINGKV_VERSION);
			return 1;
		}
		if (strcmp(a, "--check-config") == 0) {
			*check_only = true;
			continue;
		}
		if (strcmp(a, "--config") == 0) {
			i++;
			continue;
		}
		const char *option = NULL;
		for (size_t k = 0; k < sizeof(shortcuts) / sizeof(shortcuts[0]); k++)
			if (strcmp(a, shortcuts[k].flag) == 0)
				option = shortcuts[k].option;
		if (option == NULL && strcmp(a, "--set") != 0) {
			fprintf(stderr, "ringkv-server: unknown argument '%s' (see --help)\n", a);
			return -1;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "ringkv-server: %s needs a value\n", a);
			return -1;
		}
		const char *value = argv[++i];
		if (option != NULL)
			snprintf(assignment, sizeof(assignment), "%s=%s", option, value);
		else
			snprintf(assignment, sizeof(assignment), "%s", value);
		if (cfg_set(cfg, assignment, err, sizeof(err)) < 0) {
			/* cfg_set says "--set OPTION=VALUE: reason"; name the flag typed. */
			const char *reason = strstr(err, ": ");
			if (option != NULL && reason != NULL)
				fprintf(stderr, "ringkv-server: %s %s%s\n", a, value, reason);
			else
				fprintf(stderr, "ringkv-server: %s\n", err);
			return -1;
		}
	}
	return 0;
}

/* Blocks until SIGINT or SIGTERM arrives; returns its number. */
static int wait_for_stop_signal(const sigset_t *set)
{
	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(set, &info);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			LOG_ERROR("sigwaitinfo failed: %s; shutting down", strerror(errno));
			return SIGTERM;
		}
		if (sig == SIGHUP) {
			LOG_INFO("SIGHUP ignored (configuration reload is not supported;"
				 " restart to apply changes)");
			continue;
		}
		return sig;
	}
}

int main(int argc, char **argv)
{
	struct cfg cfg;
	bool check_only = false;
	char err[1024];

	cfg_defaults(&cfg);
	int r = parse_args(argc, argv, &cfg, &check_only);
	if (r != 0)
		return r > 0 ? 0 : 1;
	if (check_only) {
		cfg_foreach(&cfg, print_option, NULL);
		printf("configuration OK\n");
		return 0;
	}

	logging_level = cfg.log.level;
	int ret = logging_open(cfg.log.file);
	if (ret < 0) {
		fprintf(stderr, "ringkv-server: cannot open log.file '%s': %s; fix the path or set"
				" log.file to \"\" for stderr\n",
			cfg.log.file, strerror(-ret));
		return 1;
	}

	sigset_t stop_set;
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGINT);
	sigaddset(&stop_set, SIGTERM);
	sigaddset(&stop_set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct pool_config pc = {
		.threads = (unsigned)cfg.server.threads,
		.pin = cfg.server.pin_threads,
		.queue_size = (unsigned)cfg.server.msg_queue_size,
		.px = {.entries = (unsigned)cfg.uring.entries,
		       .busy_poll_us = (unsigned)cfg.uring.busy_poll_us,
		       .msg_budget = MSG_BUDGET},
	};
	struct pool *pool;
	ret = pool_start(&pool, &pc, err, sizeof(err));
	if (ret < 0) {
		LOG_ERROR("cannot start: %s", err);
		return 1;
	}
	LOG_INFO("ringkv %s started: %u proactors (pid %d)", RINGKV_VERSION, pool_size(pool),
		 (int)getpid());

	int sig = wait_for_stop_signal(&stop_set);
	LOG_INFO("received %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
	pool_stop(pool);
	LOG_INFO("stopped cleanly");
	return 0;
}
