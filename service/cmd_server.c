/* cmd_server: the server commands (INFO CONFIG TIME SAVE BGSAVE LASTSAVE
 * SHUTDOWN).
 *
 * CONFIG runs on proactor 0, the only thread that reads or writes the live
 * struct cfg after start-up.  Options that can change at runtime
 * (server.requirepass, log.level) reach the other threads through an atomic
 * pointer and logging_level; every other option is read-only while the
 * server runs, so any thread may read it. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "cmd.h"
#include "service/runtime/logging.h"
#include "shard.h"
#include "storage/fsutil.h"

/* ---- TIME, LASTSAVE ---------------------------------------------------- */

void cmd_time(struct cmd_ctx *x)
{
	uint64_t us = clock_unix_us();
	resp_add_array(x->reply, 2);
	resp_add_bulk_int(x->reply, (int64_t)(us / 1000000));
	resp_add_bulk_int(x->reply, (int64_t)(us % 1000000));
	cmd_done(x);
}

void cmd_lastsave(struct cmd_ctx *x)
{
	resp_add_int(x->reply, (int64_t)atomic_load(&cmd_lastsave_s));
	cmd_done(x);
}

/* ---- SAVE, BGSAVE ------------------------------------------------------ */

static void checkpoint_part(struct cmd_part *p)
{
	for (unsigned s = p->px; s < shard_map.shards; s += shard_map.threads) {
		int r = store_checkpoint(shard_store(s));
		if (r < 0 && r != -EALREADY && p->status == 0)
			p->status = r;
	}
	cmd_part_done(p);
}

/* SAVE is synchronous in Redis: while an index's flush or compaction is
 * already running (the background work of writes, FLUSHDB, reclaim), it
 * tries again every SAVE_RETRY_NS, SAVE_TRIES times, before answering that a
 * save is in progress.  BGSAVE answers at once. */
#define SAVE_RETRY_NS (20 * 1000000ull)
#define SAVE_TRIES    250

static void checkpoint_finish(struct cmd_fan *f);

static void save_retry(struct px *px, struct px_timer *t)
{
	(void)px;
	cmd_fan_all(container_of(t, struct cmd_ctx, u.save.retry), checkpoint_part,
	            checkpoint_finish);
}

static void checkpoint_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	int failure = 0;
	for (size_t i = 0; i < f->nparts; i++)
		if (f->parts[i].status < 0 && failure != -EBUSY)
			failure = f->parts[i].status;
	cmd_fan_free(f);
	bool save = strcmp(x->cmd->name, "save") == 0;
	if (failure == -EBUSY && save && ++x->u.save.tries < SAVE_TRIES) {
		px_timer_start(px_current(), &x->u.save.retry, SAVE_RETRY_NS, 0, save_retry);
		return;
	}
	if (failure == -EBUSY) {
		cmd_fail(x, "ERR Background save already in progress");
		return;
	}
	if (failure < 0) {
		cmd_fail_store(x, failure);
		return;
	}
	atomic_store(&cmd_lastsave_s, clock_unix_ms() / 1000);
	if (save)
		resp_add_simple(x->reply, "OK");
	else
		resp_add_simple(x->reply, "Background saving started");
	cmd_done(x);
}

void cmd_save(struct cmd_ctx *x)
{
	x->u.save.tries = 0;
	cmd_fan_all(x, checkpoint_part, checkpoint_finish);
}

void cmd_bgsave(struct cmd_ctx *x)
{
	if (cmd_argc(x) > 2 || (cmd_argc(x) == 2 && !cmd_arg_is(x, 1, "schedule"))) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	cmd_fan_all(x, checkpoint_part, checkpoint_finish);
}

/* ---- SHUTDOWN ---------------------------------------------------------- */

void cmd_shutdown(struct cmd_ctx *x)
{
	/* NOSAVE/SAVE/NOW/FORCE change nothing here: every acknowledged write is
	 * in the log, and the shutdown always syncs the logs and flushes the
	 * indexes.  ABORT: a shutdown never waits for anything it could abort. */
	bool nosave = false, save = false, abort = false, other = false;
	for (size_t i = 1; i < cmd_argc(x); i++) {
		if (cmd_arg_is(x, i, "nosave"))
			nosave = true;
		else if (cmd_arg_is(x, i, "save"))
			save = true;
		else if (cmd_arg_is(x, i, "now") || cmd_arg_is(x, i, "force"))
			other = true;
		else if (cmd_arg_is(x, i, "abort"))
			abort = true;
		else {
			cmd_fail(x, cmd_err_syntax);
			return;
		}
	}
	if ((abort && (nosave || save || other)) || (nosave && save)) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	if (abort) {
		cmd_fail(x, "ERR No shutdown in progress.");
		return;
	}
	struct conn *c = x->conn;
	unsigned long expected = 0;
	atomic_compare_exchange_strong(&cmd_shutdown_client, &expected, (unsigned long)c->id);
	LOG_INFO("SHUTDOWN requested by client id=%llu", (unsigned long long)c->id);
	/* The main thread takes SIGTERM with sigwaitinfo and runs the shutdown. */
	kill(getpid(), SIGTERM);
	cmd_done(x); /* no reply: like Redis, the connection just closes */
	conn_close_after_reply(c);
}

/* ---- CONFIG ------------------------------------------------------------ */

/* Redis names clients and benchmarks ask for, with the ringkv option that
 * answers them (NULL: a fixed value). */
struct config_alias {
	const char *redis;
	const char *option; /* section.key, or NULL */
	const char *fixed;  /* the value when option is NULL */
};

static const struct config_alias aliases[] = {
    {"bind", "server.bind", NULL},
    {"port", "server.port", NULL},
    {"maxclients", "server.max_clients", NULL},
    {"requirepass", "server.requirepass", NULL},
    {"timeout", "server.timeout_s", NULL},
    {"tcp-backlog", "server.tcp_backlog", NULL},
    {"proto-max-bulk-len", "server.max_bulk_len", NULL},
    {"client-query-buffer-limit", "server.max_bulk_len", NULL},
    {"io-threads", "server.threads", NULL},
    {"dir", "storage.dir", NULL},
    {"loglevel", "log.level", NULL},
    {"logfile", "log.file", NULL},
    {"appendonly", NULL, NULL},  /* from storage.durability */
    {"appendfsync", NULL, NULL}, /* from storage.durability */
    {"save", NULL, ""},
    {"databases", "server.databases", NULL},
    {"busy-reply-threshold", "server.busy_reply_threshold_ms", NULL},
    {"lua-time-limit", "server.busy_reply_threshold_ms", NULL},
    {"hash-max-listpack-entries", NULL, "512"}, /* (cmd_hash.c, cmd_set.c decide
                                                   OBJECT ENCODING by these) */
    {"hash-max-listpack-value", NULL, "64"},
    {"hash-max-ziplist-entries", NULL, "512"},
    {"hash-max-ziplist-value", NULL, "64"},
    {"set-max-intset-entries", NULL, "512"},
    {"maxmemory", NULL, "0"},
    {"maxmemory-policy", NULL, "noeviction"},
    {"cluster-enabled", NULL, "no"},
    {"daemonize", NULL, "no"},
};

/* The value of alias a as text. */
static const char *alias_value(const struct config_alias *a, char *buf, size_t len)
{
	const struct cfg *cfg = cmd_config();
	if (a->option != NULL) {
		if (cfg_get(cfg, a->option, buf, len) < 0)
			return "";
		return buf;
	}
	if (strcmp(a->redis, "appendonly") == 0)
		return cfg->storage.durability == CFG_DURABILITY_NONE ? "no" : "yes";
	if (strcmp(a->redis, "appendfsync") == 0)
		return cfg->storage.durability == CFG_DURABILITY_FSYNC   ? "always"
		       : cfg->storage.durability == CFG_DURABILITY_WRITE ? "everysec"
		                                                         : "no";
	return a->fixed;
}

/* CONFIG GET's answer being built: name/value pairs, each name once.  It
 * lives on the stack of config_get_on_px0, which answers at once, so the
 * request context holds no CONFIG state. */
struct config_get {
	struct cmd_ctx *x;
	size_t pattern_arg;    /* the argument being matched */
	struct resp_buf pairs; /* name, value, name, value ... */
	size_t n;              /* pairs */
	char **names;          /* names already added */
	size_t n_names;
	bool oom;
};

static void config_add(struct config_get *g, const char *name, const char *value)
{
	for (size_t i = 0; i < g->n_names; i++)
		if (strcmp(g->names[i], name) == 0)
			return;
	char **grown = realloc(g->names, (g->n_names + 1) * sizeof(*grown));
	char *copy = strdup(name);
	if (grown == NULL || copy == NULL) {
		if (grown != NULL)
			g->names = grown;
		free(copy);
		g->oom = true;
		return;
	}
	g->names = grown;
	g->names[g->n_names++] = copy;
	resp_add_bulk_str(&g->pairs, name);
	resp_add_bulk_str(&g->pairs, value);
	g->n++;
}

/* cfg_foreach's callback: adds the option if it matches the pattern
 * argv[g->pattern_arg]. */
static void config_match_option(const char *name, const char *value, void *arg)
{
	struct config_get *g = arg;
	size_t i = g->pattern_arg;
	if (cmd_glob_match(cmd_arg(g->x, i), cmd_arg_len(g->x, i), (const uint8_t *)name,
	                   strlen(name), true))
		config_add(g, name, value);
}

static void config_get_on_px0(struct cmd_ctx *x)
{
	struct config_get g = {.x = x};
	resp_buf_init(&g.pairs, x->reply->proto);
	for (size_t i = 2; i < cmd_argc(x); i++) {
		g.pattern_arg = i;
		cfg_foreach(cmd_config(), config_match_option, &g);
		for (size_t k = 0; k < sizeof(aliases) / sizeof(aliases[0]); k++) {
			const char *name = aliases[k].redis;
			char buf[FS_PATH_MAX];
			if (cmd_glob_match(cmd_arg(x, i), cmd_arg_len(x, i), (const uint8_t *)name,
			                   strlen(name), true))
				config_add(&g, name, alias_value(&aliases[k], buf, sizeof(buf)));
		}
	}
	if (!g.oom) {
		resp_add_map(x->reply, g.n);
		resp_buf_append(x->reply, g.pairs.data, g.pairs.len);
	}
	for (size_t i = 0; i < g.n_names; i++)
		free(g.names[i]);
	free(g.names);
	resp_buf_free(&g.pairs);
	if (g.oom)
		cmd_fail(x, cmd_err_oom);
	else
		cmd_done(x);
}

static void config_get(struct cmd_ctx *x)
{
	cmd_run_on_px(x, 0, config_get_on_px0);
}

/* Redis's CONFIG SET error for argument argv[arg]: "ERR CONFIG SET failed
 * (possibly related to argument 'x') - reason".  Finishes the request. */
static void config_set_fail(struct cmd_ctx *x, size_t arg, const char *reason)
{
	cmd_failf(x, "ERR CONFIG SET failed (possibly related to argument '%s') - %s",
	          (const char *)cmd_arg(x, arg), reason);
}

/* The options CONFIG SET may change while the server runs. */
static const char *const settable[] = {"server.requirepass", "log.level",
                                       "server.busy_reply_threshold_ms"};

/* The ringkv option an argument of CONFIG SET names (an option or a Redis
 * alias of one), or NULL. */
static const char *option_of(const uint8_t *arg, size_t len, bool *known)
{
	char name[128], probe[8];
	*known = false;
	if (len >= sizeof(name))
		return NULL;
	for (size_t i = 0; i < len; i++)
		name[i] = (char)((arg[i] >= 'A' && arg[i] <= 'Z') ? arg[i] + 32 : arg[i]);
	name[len] = '\0';
	for (size_t k = 0; k < sizeof(aliases) / sizeof(aliases[0]); k++)
		if (strcmp(name, aliases[k].redis) == 0) {
			*known = true;
			return aliases[k].option;
		}
	for (size_t k = 0; k < sizeof(settable) / sizeof(settable[0]); k++)
		if (strcmp(name, settable[k]) == 0) {
			*known = true;
			return settable[k];
		}
	*known = cfg_get(cmd_config(), name, probe, sizeof(probe)) == 0;
	return NULL; /* known but not settable, or unknown */
}

static void config_set_on_px0(struct cmd_ctx *x)
{
	struct cfg *cfg = cmd_config();
	const char *options[64];
	size_t n = (cmd_argc(x) - 2) / 2;
	if (n > sizeof(options) / sizeof(options[0])) {
		cmd_fail(x, "ERR CONFIG SET takes at most 64 options at a time");
		return;
	}
	/* Check every pair before changing anything, as Redis does. */
	for (size_t i = 0; i < n; i++) {
		size_t a = 2 + 2 * i;
		bool known;
		const char *opt = option_of(cmd_arg(x, a), cmd_arg_len(x, a), &known);
		bool mutable = false;
		for (size_t k = 0; opt != NULL && k < sizeof(settable) / sizeof(settable[0]); k++)
			mutable |= strcmp(opt, settable[k]) == 0;
		if (!known) {
			cmd_failf(x,
			          "ERR Unknown option or number of arguments for CONFIG SET - '%s'",
			          (const char *)cmd_arg(x, a));
			return;
		}
		if (!mutable) {
			config_set_fail(x, a,
			                "can't set immutable config (only server.requirepass,"
			                " server.busy_reply_threshold_ms and log.level change at"
			                " runtime; set the others in the configuration file and"
			                " restart)");
			return;
		}
		if (cmd_arg_len(x, a + 1) >= 1024) {
			config_set_fail(x, a, "value too long");
			return;
		}
		struct cfg trial = *cfg;
		char assignment[1200], err[1400];
		snprintf(assignment, sizeof(assignment), "%s=%.*s", opt, (int)cmd_arg_len(x, a + 1),
		         (const char *)cmd_arg(x, a + 1));
		if (cfg_set(&trial, assignment, err, sizeof(err)) < 0) {
			/* cfg_set says "--set OPTION=VALUE: reason": the reason is enough */
			const char *reason = strstr(err, ": ");
			config_set_fail(x, a, reason != NULL ? reason + 2 : err);
			return;
		}
		options[i] = opt;
	}
	for (size_t i = 0; i < n; i++) {
		char assignment[1200], err[1400];
		size_t a = 2 + 2 * i;
		snprintf(assignment, sizeof(assignment), "%s=%.*s", options[i],
		         (int)cmd_arg_len(x, a + 1), (const char *)cmd_arg(x, a + 1));
		cfg_set(cfg, assignment, err, sizeof(err));
		if (strcmp(options[i], "server.requirepass") == 0)
			cmd_set_requirepass(cfg->server.requirepass);
		else if (strcmp(options[i], "server.busy_reply_threshold_ms") == 0)
			cmd_script_set_busy_ms(cfg->server.busy_reply_threshold_ms);
		else
			__atomic_store_n(&logging_level, cfg->log.level, __ATOMIC_RELAXED);
	}
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

static void config_set(struct cmd_ctx *x)
{
	if (cmd_argc(x) % 2 != 0) { /* a name without its value: Redis's arity error */
		cmd_fail_arity(x);
		return;
	}
	cmd_run_on_px(x, 0, config_set_on_px0);
}

static void config_help(struct cmd_ctx *x)
{
	static const char *const lines[] = {
	    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
	    "GET <pattern> [<pattern> ...]",
	    "    Return parameters matching the glob-like <pattern> and their values:",
	    "    ringkv's options (section.key) and the Redis names that map to them.",
	    "SET <directive> <value> [<directive> <value> ...]",
	    "    Set the configuration <directive> to <value>: server.requirepass",
	    "    (requirepass), server.busy_reply_threshold_ms (busy-reply-threshold)",
	    "    and log.level (loglevel) change at runtime.",
	    "HELP",
	    "    Print this help.",
	    NULL,
	};
	cmd_reply_help(x, lines);
}

const struct cmd_def cmd_config_subcommands[] = {
    {"get", config_get, -3, CMD_NOSCRIPT | CMD_ADMIN | CMD_STALE | CMD_LOADING, 0, 0, 0, "server", "2.0.0",
     "Get the values of configuration parameters", NULL, "config"},
    {"help", config_help, 2, CMD_STALE | CMD_LOADING, 0, 0, 0, "server", "5.0.0",
     "Show helpful text about the different subcommands", NULL, "config"},
    {"set", config_set, -4, CMD_NOSCRIPT | CMD_ADMIN | CMD_STALE | CMD_LOADING, 0, 0, 0, "server", "2.0.0",
     "Set configuration parameters to the given values", NULL, "config"},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
};

void cmd_config_cmd(struct cmd_ctx *x)
{
	cmd_run_subcommand(x, cmd_config_subcommands);
}

/* ---- INFO -------------------------------------------------------------- */

enum info_section {
	INFO_SERVER = 1 << 0,
	INFO_CLIENTS = 1 << 1,
	INFO_MEMORY = 1 << 2,
	INFO_PERSISTENCE = 1 << 3,
	INFO_STATS = 1 << 4,
	INFO_KEYSPACE = 1 << 5,
	INFO_PROACTOR = 1 << 6,
	INFO_STORAGE = 1 << 7,
	INFO_ALL = (1 << 8) - 1,
};

static const char *const section_names[] = {"server", "clients",  "memory",   "persistence",
                                            "stats",  "keyspace", "proactor", "storage"};

/* What each proactor reports (in its part's scratch). */
struct info_part {
	struct store_stats sum;     /* its shards' stats added up */
	struct store_db_stats *dbs; /* [cmd_databases()]: its shards' counts per database */
};

static void stats_add(struct store_stats *a, const struct store_stats *b)
{
	a->keys += b->keys;
	a->log_bytes += b->log_bytes;
	a->cache_hits += b->cache_hits;
	a->cache_misses += b->cache_misses;
	a->index_blocking_reads += b->index_blocking_reads;
	a->index_async_reads += b->index_async_reads;
	a->index_probes_skipped += b->index_probes_skipped;
	a->index_block_misses += b->index_block_misses;
	a->index_bytes += b->index_bytes;
	a->disk_reads += b->disk_reads;
	a->commits += b->commits;
	a->records += b->records;
	a->fsyncs += b->fsyncs;
	a->write_errors += b->write_errors;
	a->expired += b->expired;
	a->live_bytes += b->live_bytes;
	a->gc_runs += b->gc_runs;
	a->gc_records_moved += b->gc_records_moved;
	a->gc_bytes_moved += b->gc_bytes_moved;
	a->gc_segments_deleted += b->gc_segments_deleted;
	a->segments_recycled += b->segments_recycled;
	a->spare_bytes_zeroed += b->spare_bytes_zeroed;
	a->tail_bytes_zeroed += b->tail_bytes_zeroed;
	a->blind_puts += b->blind_puts;
	a->blind_puts_existing += b->blind_puts_existing;
	a->index_writes_merged += b->index_writes_merged;
	a->index_batch_keys += b->index_batch_keys;
	a->records_replayed += b->records_replayed;
	a->txn_records_dropped += b->txn_records_dropped;
	a->txn_commits += b->txn_commits;
	a->txn_open += b->txn_open;
	a->elem_reads += b->elem_reads;
	a->elem_rows_walked += b->elem_rows_walked;
	a->garbage_dropped += b->garbage_dropped;
	a->garbage_compactions += b->garbage_compactions;
	a->cache_bytes += b->cache_bytes;
	a->cache_entries += b->cache_entries;
	a->pending_writes += b->pending_writes;
	a->pending_writes_peak += b->pending_writes_peak;
}

/* On each proactor: its loop counters and its shards' storage lines. */
static void info_part_fn(struct cmd_part *p)
{
	struct px *px = px_current();
	struct info_part *ip = calloc(1, sizeof(*ip) + cmd_databases() * sizeof(*ip->dbs));
	p->scratch = ip;
	if (ip == NULL) {
		p->status = -ENOMEM;
		cmd_part_done(p);
		return;
	}
	ip->dbs = (struct store_db_stats *)(ip + 1);
	for (unsigned s = p->px; s < shard_map.shards; s += shard_map.threads) {
		struct store_stats st;
		store_get_stats(shard_store(s), &st);
		stats_add(&ip->sum, &st);
		for (unsigned d = 0; d < cmd_databases(); d++) {
			struct store_db_stats ds;
			store_db_stats(shard_store(s), d, &ds);
			ip->dbs[d].keys += ds.keys;
			ip->dbs[d].expires += ds.expires;
			ip->dbs[d].expiry_sum_s += ds.expiry_sum_s;
		}
		char line[2048];
		int n = snprintf(
		    line, sizeof(line),
		    "shard_%u:proactor=%u,keys=%llu,log_bytes=%llu,live_bytes=%llu,"
		    "cache_hits=%llu,cache_misses=%llu,disk_reads=%llu,index_blocking_reads=%llu,"
		    "index_async_reads=%llu,index_probes_skipped=%llu,index_block_misses=%llu,"
		    "index_bytes=%llu,commits=%llu,"
		    "records=%llu,"
		    "fsyncs=%llu,write_errors=%llu,expired=%llu,gc_runs=%llu,"
		    "gc_records_moved=%llu,gc_bytes_moved=%llu,gc_segments_deleted=%llu,"
		    "segments_recycled=%llu,spare_bytes_zeroed=%llu,blind_puts=%llu,"
		    "blind_puts_existing=%llu,index_writes_merged=%llu,index_batch_keys=%llu,"
		    "records_replayed=%llu,elem_reads=%llu,elem_rows_walked=%llu,"
		    "garbage_dropped=%llu,garbage_compactions=%llu,cache_bytes=%llu,"
		    "cache_entries=%llu,"
		    "pending_writes=%llu,pending_writes_peak=%llu,txn_commits=%llu,txn_open=%llu,"
		    "txn_records_dropped=%llu\r\n",
		    s, px->id, (unsigned long long)st.keys, (unsigned long long)st.log_bytes,
		    (unsigned long long)st.live_bytes, (unsigned long long)st.cache_hits,
		    (unsigned long long)st.cache_misses, (unsigned long long)st.disk_reads,
		    (unsigned long long)st.index_blocking_reads,
		    (unsigned long long)st.index_async_reads,
		    (unsigned long long)st.index_probes_skipped,
		    (unsigned long long)st.index_block_misses, (unsigned long long)st.index_bytes,
		    (unsigned long long)st.commits, (unsigned long long)st.records,
		    (unsigned long long)st.fsyncs, (unsigned long long)st.write_errors,
		    (unsigned long long)st.expired, (unsigned long long)st.gc_runs,
		    (unsigned long long)st.gc_records_moved, (unsigned long long)st.gc_bytes_moved,
		    (unsigned long long)st.gc_segments_deleted,
		    (unsigned long long)st.segments_recycled,
		    (unsigned long long)st.spare_bytes_zeroed, (unsigned long long)st.blind_puts,
		    (unsigned long long)st.blind_puts_existing,
		    (unsigned long long)st.index_writes_merged,
		    (unsigned long long)st.index_batch_keys,
		    (unsigned long long)st.records_replayed, (unsigned long long)st.elem_reads,
		    (unsigned long long)st.elem_rows_walked, (unsigned long long)st.garbage_dropped,
		    (unsigned long long)st.garbage_compactions, (unsigned long long)st.cache_bytes,
		    (unsigned long long)st.cache_entries, (unsigned long long)st.pending_writes,
		    (unsigned long long)st.pending_writes_peak, (unsigned long long)st.txn_commits,
		    (unsigned long long)st.txn_open, (unsigned long long)st.txn_records_dropped);
		if (n > 0)
			resp_buf_append(&p->text, line, (size_t)n < sizeof(line) ? (size_t)n : 0);
	}
	cmd_part_done(p);
}

/* Appends "fmt\r\n" to b. */
__attribute__((format(printf, 2, 3))) static void info_line(struct resp_buf *b, const char *fmt,
                                                            ...)
{
	char line[1200];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	size_t len = (size_t)n < sizeof(line) - 2 ? (size_t)n : sizeof(line) - 3;
	line[len++] = '\r';
	line[len++] = '\n';
	resp_buf_append(b, line, len);
}

static void human_bytes(char *buf, size_t len, uint64_t n)
{
	const char *units = "BKMGTP";
	double v = (double)n;
	int u = 0;
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%lluB", (unsigned long long)n);
	else
		snprintf(buf, len, "%.2f%c", v, units[u]);
}

static uint64_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long long size = 0, resident = 0;
	if (f == NULL)
		return 0;
	if (fscanf(f, "%llu %llu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static char run_id_text[41]; /* INFO run_id: 40 random hex characters per process */
static pthread_once_t run_id_once = PTHREAD_ONCE_INIT;

static void run_id_make(void)
{
	uint8_t raw[20];
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		uint64_t seed = clock_unix_us() ^ (uint64_t)getpid() << 32;
		for (size_t i = 0; i < sizeof(raw); i++, seed = seed * 6364136223846793005ULL + 1)
			raw[i] = (uint8_t)(seed >> 56);
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(run_id_text + 2 * i, 3, "%02x", raw[i]);
}

static const char *run_id(void)
{
	pthread_once(&run_id_once, run_id_make);
	return run_id_text;
}

static void info_finish(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	unsigned sections = x->u.info.sections;
	const struct cfg *cfg = cmd_config(); /* read-only fields only (see the top) */
	struct store_stats sum = {0};
	struct resp_buf b;
	uint64_t now_us = clock_unix_us(), uptime_s = (now_us / 1000 - cmd_start_ms()) / 1000;
	bool first = true;
	for (size_t i = 0; i < f->nparts; i++)
		if (f->parts[i].scratch != NULL)
			stats_add(&sum, &((struct info_part *)f->parts[i].scratch)->sum);
	resp_buf_init(&b, 2);

#define SECTION(bit, title)                                                                        \
	if (sections & (bit)) {                                                                    \
		if (!first)                                                                        \
			resp_buf_append(&b, "\r\n", 2);                                            \
		first = false;                                                                     \
		info_line(&b, "# %s", title);
#define END_SECTION }

	SECTION(INFO_SERVER, "Server")
	struct utsname u;
	uname(&u);
	info_line(&b, "redis_version:%s", CMD_REDIS_VERSION);
	info_line(&b, "ringkv_version:%s", RINGKV_VERSION);
	info_line(&b, "redis_mode:standalone");
	info_line(&b, "os:%s %s %s", u.sysname, u.release, u.machine);
	info_line(&b, "arch_bits:%d", (int)(sizeof(void *) * 8));
	info_line(&b, "multiplexing_api:io_uring");
	info_line(&b, "process_id:%d", (int)getpid());
	info_line(&b, "run_id:%s", run_id());
	info_line(&b, "tcp_port:%u", (unsigned)net_port(px_current()));
	info_line(&b, "server_time_usec:%llu", (unsigned long long)now_us);
	info_line(&b, "uptime_in_seconds:%llu", (unsigned long long)uptime_s);
	info_line(&b, "uptime_in_days:%llu", (unsigned long long)(uptime_s / 86400));
	info_line(&b, "proactors:%u", shard_map.threads);
	info_line(&b, "shards:%u", shard_map.shards);
	END_SECTION

	SECTION(INFO_CLIENTS, "Clients")
	info_line(&b, "connected_clients:%u", net_clients());
	info_line(&b, "maxclients:%d", cfg->server.max_clients);
	info_line(&b, "blocked_clients:0");
	END_SECTION

	SECTION(INFO_MEMORY, "Memory")
	char h[32];
	struct mallinfo2 mi = mallinfo2();
	uint64_t used = mi.uordblks + mi.hblkhd, rss = rss_bytes();
	human_bytes(h, sizeof(h), used);
	info_line(&b, "used_memory:%llu", (unsigned long long)used);
	info_line(&b, "used_memory_human:%s", h);
	human_bytes(h, sizeof(h), rss);
	info_line(&b, "used_memory_rss:%llu", (unsigned long long)rss);
	info_line(&b, "used_memory_rss_human:%s", h);
	info_line(&b, "maxmemory:0");
	info_line(&b, "maxmemory_policy:noeviction");
	info_line(&b, "value_cache_size:%llu", (unsigned long long)cfg->storage.cache_size);
	info_line(&b, "index_cache_size:%llu", (unsigned long long)cfg->storage.index_cache_size);
	END_SECTION

	SECTION(INFO_PERSISTENCE, "Persistence")
	info_line(&b, "loading:0");
	info_line(&b, "rdb_bgsave_in_progress:0");
	info_line(&b, "rdb_last_save_time:%llu", (unsigned long long)atomic_load(&cmd_lastsave_s));
	info_line(&b, "rdb_last_bgsave_status:ok");
	info_line(&b, "aof_enabled:%d", cfg->storage.durability != CFG_DURABILITY_NONE);
	info_line(&b, "aof_last_write_status:%s", sum.write_errors ? "err" : "ok");
	info_line(&b, "durability:%s", cfg_durability_name(cfg->storage.durability));
	info_line(&b, "log_bytes:%llu", (unsigned long long)sum.log_bytes);
	info_line(&b, "log_commits:%llu", (unsigned long long)sum.commits);
	info_line(&b, "log_records:%llu", (unsigned long long)sum.records);
	info_line(&b, "log_fsyncs:%llu", (unsigned long long)sum.fsyncs);
	info_line(&b, "log_write_errors:%llu", (unsigned long long)sum.write_errors);
	END_SECTION

	SECTION(INFO_STATS, "Stats")
	struct net_stats ns;
	net_get_stats(&ns);
	info_line(&b, "total_connections_received:%llu",
	          (unsigned long long)ns.connections_received);
	info_line(&b, "total_commands_processed:%llu", (unsigned long long)ns.commands);
	info_line(&b, "total_net_input_bytes:%llu", (unsigned long long)ns.net_input_bytes);
	info_line(&b, "total_net_output_bytes:%llu", (unsigned long long)ns.net_output_bytes);
	info_line(&b, "rejected_connections:%llu", (unsigned long long)ns.rejected_connections);
	info_line(&b, "expired_keys:%llu", (unsigned long long)sum.expired);
	info_line(&b, "evicted_keys:0");
	info_line(&b, "keyspace_hits:%llu", (unsigned long long)sum.cache_hits);
	info_line(&b, "keyspace_misses:%llu", (unsigned long long)sum.cache_misses);
	info_line(&b, "total_protocol_errors:%llu", (unsigned long long)ns.protocol_errors);
	info_line(&b, "total_reads_processed:%llu", (unsigned long long)ns.reads);
	info_line(&b, "total_writes_processed:%llu", (unsigned long long)ns.sends);
	info_line(&b, "client_output_limit_disconnections:%llu",
	          (unsigned long long)ns.output_limit_disconnects);
	info_line(&b, "client_timeouts:%llu", (unsigned long long)ns.timeouts);
	END_SECTION

	SECTION(INFO_KEYSPACE, "Keyspace")
	for (unsigned d = 0; d < cmd_databases(); d++) {
		struct store_db_stats db = {0};
		for (size_t i = 0; i < f->nparts; i++) {
			const struct info_part *ip = f->parts[i].scratch;
			if (ip == NULL)
				continue;
			db.keys += ip->dbs[d].keys;
			db.expires += ip->dbs[d].expires;
			db.expiry_sum_s += ip->dbs[d].expiry_sum_s;
		}
		if (db.keys == 0)
			continue;
		/* avg_ttl: exact (from the sum of the expiries), where Redis
		 * estimates it by sampling; 0 for none, never negative. */
		uint64_t now_ms = now_us / 1000, avg_ttl = 0;
		if (db.expires > 0) {
			uint64_t avg_ms = db.expiry_sum_s / db.expires * 1000 +
			                  db.expiry_sum_s % db.expires * 1000 / db.expires;
			avg_ttl = avg_ms > now_ms ? avg_ms - now_ms : 0;
		}
		info_line(&b, "db%u:keys=%llu,expires=%llu,avg_ttl=%llu", d,
		          (unsigned long long)db.keys, (unsigned long long)db.expires,
		          (unsigned long long)avg_ttl);
	}
	END_SECTION

	SECTION(INFO_PROACTOR, "Proactor")
	for (unsigned i = 0; i < shard_map.threads; i++) {
		struct px_stats *s = &pool_px(shard_map.pool, i)->stats;
#define PXS(field) (unsigned long long)atomic_load_explicit(&s->field, memory_order_relaxed)
		info_line(
		    &b,
		    "proactor_%u:iterations=%llu,submits=%llu,sqes=%llu,cqes=%llu,"
		    "msgs_in=%llu,msgs_out=%llu,wakeups_sent=%llu,wakeups_skipped=%llu,"
		    "wakeups_received=%llu,sleeps=%llu,busy_poll_us=%llu,busy_polls=%llu,"
		    "busy_poll_hits=%llu,cq_overflows=%llu,sq_full=%llu,requests_inflight=%lu,"
		    "iteration_max_us=%llu,iterations_over_1ms=%llu,iterations_over_10ms=%llu",
		    i, PXS(iterations), PXS(submits), PXS(sqes), PXS(cqes), PXS(msgs_in),
		    PXS(msgs_out), PXS(wakeups_sent), PXS(wakeups_skipped), PXS(wakeups_received),
		    PXS(sleeps), PXS(busy_poll_ns) / 1000, PXS(busy_polls), PXS(busy_poll_hits),
		    PXS(cq_overflows), PXS(sq_full), cmd_inflight(i), PXS(iteration_max_ns) / 1000,
		    PXS(iterations_over_1ms), PXS(iterations_over_10ms));
#undef PXS
	}
	END_SECTION

	SECTION(INFO_STORAGE, "Storage")
	info_line(&b, "dir:%s", cfg->storage.dir);
	info_line(&b, "shards:%u", shard_map.shards);
	info_line(&b, "keys:%llu", (unsigned long long)sum.keys);
	info_line(&b, "log_bytes:%llu", (unsigned long long)sum.log_bytes);
	info_line(&b, "live_bytes:%llu", (unsigned long long)sum.live_bytes);
	info_line(&b, "index_bytes:%llu", (unsigned long long)sum.index_bytes);
	info_line(&b, "cache_hits:%llu", (unsigned long long)sum.cache_hits);
	info_line(&b, "cache_misses:%llu", (unsigned long long)sum.cache_misses);
	info_line(&b, "disk_reads:%llu", (unsigned long long)sum.disk_reads);
	info_line(&b, "gc_segments_deleted:%llu", (unsigned long long)sum.gc_segments_deleted);
	info_line(&b, "segments_recycled:%llu", (unsigned long long)sum.segments_recycled);
	info_line(&b, "spare_bytes_zeroed:%llu", (unsigned long long)sum.spare_bytes_zeroed);
	info_line(&b, "tail_bytes_zeroed:%llu", (unsigned long long)sum.tail_bytes_zeroed);
	info_line(&b, "blind_puts:%llu", (unsigned long long)sum.blind_puts);
	info_line(&b, "blind_puts_existing:%llu", (unsigned long long)sum.blind_puts_existing);
	info_line(&b, "index_writes_merged:%llu", (unsigned long long)sum.index_writes_merged);
	info_line(&b, "index_batch_keys:%llu", (unsigned long long)sum.index_batch_keys);
	info_line(&b, "records_replayed:%llu", (unsigned long long)sum.records_replayed);
	info_line(&b, "txn_commits:%llu", (unsigned long long)sum.txn_commits);
	info_line(&b, "txn_open:%llu", (unsigned long long)sum.txn_open);
	info_line(&b, "txn_records_dropped:%llu", (unsigned long long)sum.txn_records_dropped);
	for (size_t i = 0; i < f->nparts; i++)
		resp_buf_append(&b, f->parts[i].text.data, f->parts[i].text.len);
	END_SECTION
#undef SECTION
#undef END_SECTION

	cmd_fan_free(f);
	resp_add_verbatim(x->reply, b.data, b.len);
	resp_buf_free(&b);
	cmd_done(x);
}

void cmd_info(struct cmd_ctx *x)
{
	unsigned sections = 0;
	if (cmd_argc(x) == 1)
		sections = INFO_ALL;
	for (size_t i = 1; i < cmd_argc(x); i++) {
		if (cmd_arg_is(x, i, "all") || cmd_arg_is(x, i, "everything") ||
		    cmd_arg_is(x, i, "default"))
			sections = INFO_ALL;
		for (unsigned k = 0; k < sizeof(section_names) / sizeof(section_names[0]); k++)
			if (cmd_arg_is(x, i, section_names[k]))
				sections |= 1u << k;
	}
	x->u.info.sections = sections;
	cmd_fan_all(x, info_part_fn, info_finish);
}
