/* server: ringkv-server's main — command line, configuration, start-up and
 * shutdown.
 *
 * Start-up: the proactor pool, then the data directory (every shard's store
 * opened on its proactor: shard.h), the command layer (cmd.h), and a
 * listener on every proactor (net/conn.h).  Any failure is reported with its
 * cause and fix, and the server exits 1.
 *
 * Shutdown, on SIGINT, SIGTERM or the SHUTDOWN command (which sends SIGTERM
 * to the process): every proactor stops accepting and closes its clients once
 * their finished replies are sent; the main thread waits until no request is
 * in flight anywhere; then every store is stopped (its writes finish and the
 * logs are synced) and closed; then the pool stops.  Exit status 0.
 *
 * Signals: SIGINT, SIGTERM and SIGHUP are blocked in every thread before the
 * proactors start (they inherit the mask), and the main thread alone takes
 * them with sigwaitinfo.  No proactor is ever interrupted by a signal handler.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "service/runtime/logging.h"
#include "service/runtime/pool.h"
#include "storage/bulk.h"
#include "storage/fsutil.h"
#include "shard.h"

#define MSG_BUDGET     1024     /* messages a proactor runs per loop iteration at most */
#define DRAIN_POLL_NS  1000000L /* how often shutdown looks at the requests in flight */
#define DRAIN_REPORT_S 10       /* a slow drain is logged this often */

static void usage(FILE *out)
{
	fprintf(out, "usage: ringkv-server [--config FILE] [options]\n"
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
	char err[1024], assignment[FS_PATH_MAX];

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

/* One proactor's start-up or shutdown step, run there while main waits. */
struct net_job {
	struct px *px;
	const struct net_config *cfg;
	int ret; /* net_start's result */
	char err[512];
	atomic_bool done;
};

static void net_start_job(void *arg)
{
	struct net_job *job = arg;
	job->ret = net_start(job->px, job->cfg, job->err, sizeof(job->err));
	atomic_store(&job->done, true);
}

static void net_stop_job(void *arg)
{
	struct net_job *job = arg;
	net_stop_accepting(job->px);
	net_close_all(job->px);
	atomic_store(&job->done, true);
}

static void sleep_ns(long ns)
{
	struct timespec ts = {0, ns};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void wait_job(struct net_job *job)
{
	while (!atomic_load(&job->done))
		sleep_ns(DRAIN_POLL_NS / 10);
}

/* Starts the listeners: proactor 0 first, so that with port 0 the others
 * listen on the port it got.  Returns how many proactors listen (all of them,
 * or fewer after an error, which is logged). */
static unsigned start_listening(struct pool *pool, struct net_config *nc, struct net_job *jobs)
{
	unsigned n = pool_size(pool);
	for (unsigned i = 0; i < n; i++) {
		jobs[i].px = pool_px(pool, i);
		jobs[i].cfg = nc;
		pool_run_on(pool, i, net_start_job, &jobs[i]);
		wait_job(&jobs[i]);
		if (jobs[i].ret < 0) {
			LOG_ERROR("cannot listen on proactor %u: %s", i, jobs[i].err);
			return i;
		}
		if (i == 0)
			nc->port = net_port(jobs[0].px);
	}
	return n;
}

/* Stops accepting on the first `listening` proactors, closes every client
 * and waits until no request is in flight. */
static void drain_clients(struct pool *pool, unsigned listening, struct net_job *jobs)
{
	unsigned n = pool_size(pool);
	cmd_script_stop_all(); /* (a script looping in Lua would hold its proactor) */
	for (unsigned i = 0; i < listening; i++) {
		atomic_store(&jobs[i].done, false);
		pool_run_on(pool, i, net_stop_job, &jobs[i]);
	}
	for (unsigned i = 0; i < listening; i++)
		wait_job(&jobs[i]);
	for (unsigned long polls = 0;; polls++) {
		unsigned long inflight = 0;
		for (unsigned i = 0; i < n; i++)
			inflight += cmd_inflight(i);
		if (inflight == 0)
			return;
		if (polls > 0 && polls % (DRAIN_REPORT_S * 1000000000L / DRAIN_POLL_NS) == 0)
			LOG_WARN("shutdown: still waiting for %lu requests in flight", inflight);
		sleep_ns(DRAIN_POLL_NS);
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
		fprintf(stderr,
		        "ringkv-server: cannot open log.file '%s': %s; fix the path or set"
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
	char note[512];
	cfg_resolve_auto(&cfg, note, sizeof(note));
	LOG_INFO("%s", note);

	/* An offline import killed after its commit point finishes now, before
	 * recovery replays its segments (storage/bulk.h). */
	ret = bulk_roll_forward(cfg.storage.dir, err, sizeof(err));
	if (ret == 0)
		ret = shard_open_all(pool, &cfg, err, sizeof(err));
	if (ret < 0) {
		LOG_ERROR("cannot open the data directory %s: %s", cfg.storage.dir, err);
		pool_stop(pool);
		return 1;
	}
	LOG_INFO("data directory %s: %u shards open (durability %s)", cfg.storage.dir,
	         shard_map.shards, cfg_durability_name(cfg.storage.durability));
	ret = cmd_init(pool, &cfg, err, sizeof(err));
	if (ret < 0) {
		LOG_ERROR("cannot start: %s", err);
		shard_close_all();
		pool_stop(pool);
		return 1;
	}

	static struct net_config nc;
	nc = (struct net_config){
	    .bind = cfg.server.bind,
	    .port = (uint16_t)cfg.server.port,
	    .backlog = (unsigned)cfg.server.tcp_backlog,
	    .max_clients = (unsigned)cfg.server.max_clients,
	    .timeout_s = (unsigned)cfg.server.timeout_s,
	    .output_buffer_limit = cfg.server.output_buffer_limit,
	    .limits = {.max_bulk_len = cfg.server.max_bulk_len,
	               .max_multibulk_len = (uint64_t)cfg.server.max_multibulk_len,
	               .max_inline_len = cfg.server.max_inline_len},
	    .buf_ring_entries = (unsigned)cfg.uring.buf_ring_entries,
	    .buf_size = (unsigned)cfg.uring.buf_size,
	    .auth_required = cfg.server.requirepass[0] != '\0',
	    .handler = cmd_handle,
	    .prefetch = cmd_prefetch,
	    .on_open = cmd_on_open,
	    .on_close = cmd_on_close,
	};
	struct net_job *jobs = calloc(pool_size(pool), sizeof(*jobs));
	if (jobs == NULL) {
		LOG_ERROR("cannot start: out of memory");
		shard_close_all();
		pool_stop(pool);
		return 1;
	}
	unsigned listening = start_listening(pool, &nc, jobs);
	int status = 0;
	if (listening < pool_size(pool)) {
		status = 1;
	} else {
		LOG_INFO("ready to accept connections on %s port %u", cfg.server.bind,
		         (unsigned)nc.port);
		int sig = wait_for_stop_signal(&stop_set);
		unsigned long client = atomic_load(&cmd_shutdown_client);
		if (client != 0)
			LOG_INFO("SHUTDOWN from client id=%lu, shutting down", client);
		else
			LOG_INFO("received %s, shutting down",
			         sig == SIGINT ? "SIGINT" : "SIGTERM");
	}
	drain_clients(pool, listening, jobs);
	shard_close_all();
	pool_stop(pool);
	free(jobs);
	if (status == 0)
		LOG_INFO("stopped cleanly");
	return status;
}
