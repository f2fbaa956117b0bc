/* bench_store: `ringkv-bench store`, the storage benchmark.
 *
 * Drives the storage library directly (no network, no messages between
 * proactors): 2 proactors pinned to one CPU each, one store (shard) per
 * proactor, each loaded only by tasks on its own proactor that resubmit a
 * request from its `done`.  For each value size, 100 B, 1 KiB and 4 KiB, in a
 * fresh data directory:
 *
 *   fill   every key of the key space is PUT exactly once, in random order,
 *          with --qd (or --put-qd) requests in flight per shard; puts/s and value MB/s
 *          (value bytes only, MB = 10^6 bytes), plus the log's own write rate
 *          and records per commit (group commit).
 *   gets   uniformly random GETs over the filled keys for --seconds, --qd in
 *          flight per shard; gets/s and the store's counters for the phase
 *          (cache hits and misses, log reads, blocking index reads), which
 *          show whether the gets really went to disk.
 *
 * Keys are "key:%012llu" (16 bytes).  A key belongs to shard
 * fnv1a64(key) % 2: the daemon's slot map is not written yet, and any uniform
 * hash splits the load alike.  Each shard's keys are shuffled before the fill.
 *
 * Key space (default, --keys N overrides all three) and what it puts on disk
 * (log records are 32 B header + key + value, 8-byte aligned):
 *
 *   value   keys        log data   why
 *   100 B   2,097,152   0.30 GiB   many keys: the index (2 M entries) is what
 *                                  stresses; 9x the caches.  4 M keys would
 *                                  take minutes (*)
 *   1 KiB   1,048,576   1.05 GiB   db_bench's default --num, same N there
 *   4 KiB     393,216   1.52 GiB   >= 1 GiB, > 40x the caches
 *
 * Caches: the stores' value caches get STORE_CACHE_BYTES in all (half per
 * shard), the index's shared RocksDB block cache INDEX_CACHE_BYTES, with 2
 * background threads.  The log is O_DIRECT, so the page cache never holds
 * values; the index's SST files are read through the page cache (that is how
 * the index works), so "index blocking reads" are mostly page-cache hits.
 *
 * References, in the same run, in the same directory's file system:
 *
 *   fio      4 KiB random reads, O_DIRECT, io_uring, iodepth = 2 x --qd (the
 *            gets' total queue depth), 1 job, on a file of max(1 GiB, the
 *            4 KiB case's value bytes) that fio lays out (writes) first; then
 *            1 MiB sequential O_DIRECT writes over it, iodepth 4.  --seconds
 *            each.  Then two references that show what the device does for
 *            the I/O our store must issue: FIO_RECORD_READ-byte random reads
 *            at 512-byte offsets (the read a cold 4 KiB get makes: its record
 *            is 4144 bytes), and 1 MiB sequential writes of the same bytes
 *            into a fresh file fio preallocates, as a fresh store's segments
 *            are (ext4 converts unwritten extents at each write's completion).
 *   db_bench RocksDB's own benchmark, 1 KiB values, 16-byte keys, the same N
 *            and total cache (STORE_CACHE_BYTES + INDEX_CACHE_BYTES), 2
 *            threads.  fillrandom writes N keys in all (--writes N/2 per
 *            thread; random with repeats, so ~63 % of the key space exists),
 *            then, in a second invocation on the same DB, readrandom for
 *            --seconds (db_bench's --duration would also cut the fill short);
 *            the same --seed makes the readers draw the keys the writers
 *            wrote, so every read finds its key, as ours do.  Settings chosen
 *            to match ours: WAL on and sync=0 (our `write` durability acks
 *            after the write, without fsync), O_DIRECT reads and O_DIRECT
 *            flush/compaction (our values are O_DIRECT both ways), no
 *            compression (we compress no value), a 10-bit Bloom filter, 2
 *            background jobs.  Index and filter blocks stay in the table
 *            readers (db_bench's default), unlike our index (*): RocksDB
 *            tuned the usual way is the reference.
 *
 *   (*) Our index keeps index and filter blocks in its small block cache,
 *   and RocksDB then re-reads a whole, unpartitioned filter block (hundreds
 *   of KB, checksummed) for lookups that miss the memtables: on every PUT
 *   of a new key and every cold GET.  That is what bounds the 100 B case.
 *
 *   Ratios (targets): cold 4 KiB gets / fio random-read IOPS (>= 0.8); 4 KiB
 *   put value MB/s / fio sequential-write MB/s (>= 0.7); 1 KiB fill and gets
 *   / db_bench fillrandom and readrandom (>= 2).  A reference that cannot run
 *   (tool not installed) is reported as missing (null), never estimated.
 *
 * Correctness: a value's bytes are derived from its key and a per-case seed,
 * so every GET is checked (status 0, length, bytes) without keeping a copy;
 * every PUT must return 0.  Any error or mismatch fails the benchmark (exit
 * 1): a broken store's speed means nothing.
 *
 * --runs R repeats everything (stores and references) R times; figures are
 * medians and the ratios are taken between medians.  The data directory
 * (DIR/ringkv-bench-store-PID) is removed at the end, also after a failure.
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdnoreturn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "service/runtime/logging.h"
#include "service/runtime/pool.h"
#include "service/runtime/proactor.h"
#include "storage/index.h"
#include "storage/log.h"
#include "storage/store.h"

#define STORE_SHARDS          2    /* proactors = shards */
#define STORE_DIR_MAX         3072 /* --dir's length limit, so every path fits */
#define STORE_KEY_LEN         16   /* "key:" + 12 digits */
#define STORE_KEY_DIGITS      12
#define STORE_MAX_KEYS        UINT32_MAX    /* key ids are uint32_t */
#define STORE_CACHE_BYTES     (16ULL << 20) /* value caches of all shards */
#define INDEX_CACHE_BYTES     (16ULL << 20) /* the shared block cache */
#define INDEX_BG_THREADS      2
#define STORE_SEGMENT_BYTES   (256ULL << 20)
#define STORE_INLINE_MAX      64
#define STORE_DEFAULT_QD      32
#define STORE_MAX_QD          4096
#define STORE_DEFAULT_SECONDS 10
#define STORE_DEFAULT_RUNS    1
#define STORE_MAX_RUNS        9
#define STORE_POLL_NS         50000000L /* main's polling interval */
#define STORE_PROGRESS_NS     1000000000ULL
#define STORE_STALL_NS        (30ULL * 1000000000ULL)  /* no completion for this long */
#define STORE_TASK_TIMEOUT_NS (600ULL * 1000000000ULL) /* open / close */
#define FIO_MIN_BYTES         (1ULL << 30)
#define DBBENCH_VALUE_LEN     1024
#define TMPFS_MAGIC_NUMBER    0x01021994
#define SPLITMIX_GAMMA        0x9E3779B97F4A7C15ULL

/* ---- options and the value sizes ---------------------------------------- */

struct store_opts {
	bool json;
	unsigned parts;          /* PART_* bits: what to run */
	char dir[STORE_DIR_MAX]; /* where the work directory is made */
	uint64_t keys;           /* key space of every size; 0 = the size's default */
	unsigned runs;
	unsigned seconds; /* gets phase, fio jobs, db_bench readrandom */
	unsigned qd;      /* requests in flight per shard */
	unsigned put_qd;  /* ... during the fill (default: qd) */
	enum log_durability durability;
};

struct value_size {
	uint32_t len;          /* value bytes */
	const char *tag;       /* in figure names: put_<tag>_ops */
	uint64_t default_keys; /* key space when --keys is not given */
};

#define N_SIZES 3
static const struct value_size value_sizes[N_SIZES] = {
    {100, "100", 2097152},
    {1024, "1k", 1048576},
    {4096, "4k", 393216},
};
#define SIZE_1K 1
#define SIZE_4K 2

/* --parts: the value sizes are bits 0..N_SIZES-1, then the references. */
#define PART_FIO     (1u << N_SIZES)
#define PART_DBBENCH (1u << (N_SIZES + 1))
#define PART_ALL     ((1u << (N_SIZES + 2)) - 1)

static uint64_t keys_of(const struct store_opts *o, unsigned size)
{
	return o->keys ? o->keys : value_sizes[size].default_keys;
}

static const char *const durability_names[] = {"fsync", "write", "none"};

/* ---- failure ------------------------------------------------------------- */

/* The first failure on a proactor; main polls `failed` and exits with `why`. */
static struct {
	atomic_bool failed;
	atomic_flag claimed;
	char why[512];
} bench_failure = {false, ATOMIC_FLAG_INIT, ""};

static char work_dir[STORE_DIR_MAX + 64]; /* removed at exit; "" = none yet */

static void remove_tree(const char *path);

/* Any thread: records the first failure; the load generators stop issuing. */
__attribute__((format(printf, 1, 2))) static void load_fail(const char *fmt, ...)
{
	if (atomic_flag_test_and_set(&bench_failure.claimed))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(bench_failure.why, sizeof(bench_failure.why), fmt, ap);
	va_end(ap);
	atomic_store_explicit(&bench_failure.failed, true, memory_order_release);
}

/* Main only: reports why the benchmark cannot go on, removes the work
 * directory (proactors still running write to unlinked files) and exits 1. */
__attribute__((format(printf, 1, 2))) static noreturn void store_fatal(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fprintf(stderr, "ringkv-bench store: FAILED: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (work_dir[0] != '\0')
		remove_tree(work_dir);
	exit(1);
}

static volatile sig_atomic_t interrupted; /* SIGINT or SIGTERM arrived */

static void on_signal(int sig)
{
	interrupted = sig;
}

/* Main: SIGINT/SIGTERM end the benchmark through store_fatal, which removes
 * the work directory (fio and db_bench get the signal too and exit). */
static void catch_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static void check_failure(void)
{
	if (interrupted)
		store_fatal("interrupted by signal %d", (int)interrupted);
	if (atomic_load_explicit(&bench_failure.failed, memory_order_acquire))
		store_fatal("%s", bench_failure.why);
}

/* ---- keys and values ----------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += SPLITMIX_GAMMA);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* Writes key number `id` as "key:%012llu" (exactly STORE_KEY_LEN bytes, no
 * NUL). */
static void key_format(char out[STORE_KEY_LEN], uint64_t id)
{
	memcpy(out, "key:", 4);
	for (int i = STORE_KEY_LEN - 1; i >= STORE_KEY_LEN - STORE_KEY_DIGITS; i--) {
		out[i] = (char)('0' + id % 10);
		id /= 10;
	}
}

static unsigned shard_of_key(const char *key, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)key[i]) * 0x100000001b3ULL;
	return (unsigned)(h % STORE_SHARDS);
}

/* The value of key `id` in a case seeded `seed`: 8-byte words counting up by
 * SPLITMIX_GAMMA from a hash of both, so no two keys share a value. */
static void value_fill(uint8_t *dst, uint32_t len, uint64_t id, uint64_t seed)
{
	uint64_t state = seed ^ (id * 0xD1B54A32D192ED03ULL);
	uint64_t w = splitmix64(&state);
	uint32_t i = 0;
	for (; i + 8 <= len; i += 8, w += SPLITMIX_GAMMA)
		memcpy(dst + i, &w, 8);
	if (i < len)
		memcpy(dst + i, &w, len - i);
}

/* ---- one case: the stores of one value size and their load ------------- */

enum load_phase {
	PHASE_FILL, /* PUT key_ids[0..n_keys) once each */
	PHASE_GET,  /* random GETs until deadline_ns */
};

struct shard_load;

/* One request in flight: its key and value buffers live here. */
struct load_slot {
	struct store_req req;
	struct shard_load *load;
	uint64_t key_id;
	char key[STORE_KEY_LEN];
	uint8_t *value; /* PUT: the value; GET: the expected value (value_len bytes,
	                   owned by the shard's `values`) */
};

struct store_case;

/* One shard: its store and load generator.  Everything is written on its
 * proactor only; main reads `ops` (relaxed) for progress and the rest after
 * `finished` or a task's completion (acquire). */
struct shard_load {
	_Alignas(64) unsigned id;
	struct store_case *sc;
	struct store *st;  /* open between the open and close tasks */
	uint32_t *key_ids; /* keys this shard owns, shuffled; owned by the case */
	uint64_t n_keys;
	enum load_phase phase;
	uint64_t next_fill;       /* fill: next index into key_ids */
	uint64_t deadline_ns;     /* gets: no request is issued after this */
	uint64_t rng;             /* gets: key choice */
	unsigned idle_slots;      /* slots with nothing in flight */
	uint64_t t_start, t_end;  /* px_now_ns() of the phase's start and last completion */
	struct load_slot *slots;  /* [qd]; owned by the case */
	uint8_t *values;          /* qd x value_len bytes for the slots */
	struct store_stats stats; /* snapshot taken by task_stats */
	int open_ret;
	char open_err[512];
	atomic_ulong ops;     /* requests completed in this phase */
	atomic_bool finished; /* the phase is over: t_end is set */
};

/* One value size in one run.  Main owns it; `task` is read by the proactors
 * while main waits for tasks_done. */
struct store_case {
	uint32_t value_len;
	uint64_t n_keys;
	uint64_t seed; /* of the values */
	unsigned qd, put_qd, seconds;
	enum log_durability durability;
	char dir[STORE_DIR_MAX + 128]; /* DIR/ringkv-bench-store-PID/<tag>-run<r> */
	struct pool *pool;
	struct idx_shared *shared;
	void (*task)(struct shard_load *); /* what shards_run runs */
	atomic_uint tasks_done;
	struct shard_load shards[STORE_SHARDS];
};

/* The calling shard's task is over (release: main reads its results). */
static void task_finished(struct shard_load *ld)
{
	atomic_fetch_add_explicit(&ld->sc->tasks_done, 1, memory_order_release);
}

static void phase_over(struct shard_load *ld)
{
	ld->t_end = px_now_ns();
	atomic_store_explicit(&ld->finished, true, memory_order_release);
}

static void issue_put(struct shard_load *ld, struct load_slot *s, uint64_t id);
static void issue_get(struct shard_load *ld, struct load_slot *s);

/* Requests in flight per shard in the current phase. */
static unsigned phase_qd(const struct shard_load *ld)
{
	return ld->phase == PHASE_FILL ? ld->sc->put_qd : ld->sc->qd;
}

/* Gives slot `s` its next request, or parks it; the last slot parked ends the
 * phase.  After a failure nothing more is issued. */
static void slot_next(struct shard_load *ld, struct load_slot *s)
{
	if (!atomic_load_explicit(&bench_failure.failed, memory_order_relaxed)) {
		if (ld->phase == PHASE_FILL && ld->next_fill < ld->n_keys) {
			issue_put(ld, s, ld->key_ids[ld->next_fill++]);
			return;
		}
		if (ld->phase == PHASE_GET && px_now_ns() < ld->deadline_ns) {
			issue_get(ld, s);
			return;
		}
	}
	if (++ld->idle_slots == phase_qd(ld))
		phase_over(ld);
}

static void count_op(struct shard_load *ld)
{
	atomic_store_explicit(&ld->ops, atomic_load_explicit(&ld->ops, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
}

static void on_put_done(struct store_req *req)
{
	struct load_slot *s = container_of(req, struct load_slot, req);
	struct shard_load *ld = s->load;
	if (req->status != 0)
		load_fail("shard %u: PUT %.*s failed: %s", ld->id, STORE_KEY_LEN, s->key,
		          strerror(-req->status));
	count_op(ld);
	slot_next(ld, s);
}

static void on_get_done(struct store_req *req)
{
	struct load_slot *s = container_of(req, struct load_slot, req);
	struct shard_load *ld = s->load;
	uint32_t len = ld->sc->value_len;
	if (req->status != 0)
		load_fail("shard %u: GET %.*s failed: %s", ld->id, STORE_KEY_LEN, s->key,
		          strerror(-req->status));
	else if (req->result == NULL || req->result_len != len ||
	         memcmp(req->result, s->value, len) != 0)
		load_fail("shard %u: GET %.*s returned a wrong value (%zu bytes, %u written)",
		          ld->id, STORE_KEY_LEN, s->key, req->result_len, len);
	count_op(ld);
	slot_next(ld, s);
}

static void issue_put(struct shard_load *ld, struct load_slot *s, uint64_t id)
{
	uint32_t len = ld->sc->value_len;
	s->key_id = id;
	key_format(s->key, id);
	value_fill(s->value, len, id, ld->sc->seed);
	s->req = (struct store_req){.op = STORE_PUT,
	                            .key = (const uint8_t *)s->key,
	                            .key_len = STORE_KEY_LEN,
	                            .value = s->value,
	                            .value_len = len,
	                            .done = on_put_done};
	store_submit(ld->st, &s->req);
}

static void issue_get(struct shard_load *ld, struct load_slot *s)
{
	uint64_t id = ld->key_ids[splitmix64(&ld->rng) % ld->n_keys];
	s->key_id = id;
	key_format(s->key, id);
	value_fill(s->value, ld->sc->value_len, id, ld->sc->seed);
	s->req = (struct store_req){.op = STORE_GET,
	                            .key = (const uint8_t *)s->key,
	                            .key_len = STORE_KEY_LEN,
	                            .done = on_get_done};
	store_submit(ld->st, &s->req);
}

/* ---- tasks on the shards' proactors ------------------------------------- */

static void task_open(struct shard_load *ld)
{
	struct store_case *sc = ld->sc;
	char dir[STORE_DIR_MAX + 192];
	snprintf(dir, sizeof(dir), "%s/shard-%03u", sc->dir, ld->id);
	struct store_config cfg = {.dir = dir,
	                           .shard = ld->id,
	                           .segment_size = STORE_SEGMENT_BYTES,
	                           .durability = sc->durability,
	                           .inline_max = STORE_INLINE_MAX,
	                           .cache_bytes = STORE_CACHE_BYTES / STORE_SHARDS,
	                           .shared = sc->shared};
	ld->open_ret = store_open(&ld->st, px_current(), &cfg, ld->open_err, sizeof(ld->open_err));
	task_finished(ld);
}

/* Starts the phase set in ld->phase: every slot gets a request. */
static void load_start(struct shard_load *ld)
{
	ld->idle_slots = 0;
	atomic_store_explicit(&ld->ops, 0, memory_order_relaxed);
	ld->t_start = px_now_ns();
	ld->deadline_ns = ld->t_start + (uint64_t)ld->sc->seconds * 1000000000ULL;
	for (unsigned i = 0, n = phase_qd(ld); i < n; i++)
		slot_next(ld, &ld->slots[i]);
}

static void task_fill(struct shard_load *ld)
{
	ld->phase = PHASE_FILL;
	ld->next_fill = 0;
	load_start(ld);
	task_finished(ld);
}

static void task_gets(struct shard_load *ld)
{
	ld->phase = PHASE_GET;
	load_start(ld);
	task_finished(ld);
}

static void task_stats(struct shard_load *ld)
{
	store_get_stats(ld->st, &ld->stats);
	task_finished(ld);
}

/* Waits (re-posting itself each iteration) until the store is idle, then
 * closes it. */
static void close_poll(void *arg)
{
	struct shard_load *ld = arg;
	struct px *px = px_current();
	if (store_busy(ld->st)) {
		px_send(px, px->id, close_poll, ld);
		return;
	}
	store_close(ld->st);
	ld->st = NULL;
	task_finished(ld);
}

static void task_close(struct shard_load *ld)
{
	store_stop(ld->st);
	close_poll(ld);
}

static void task_trampoline(void *arg)
{
	struct shard_load *ld = arg;
	ld->sc->task(ld);
}


/* Runs `task` on every shard's proactor and waits until each has called
 * task_finished (fatal after STORE_TASK_TIMEOUT_NS or a failure). */
static void shards_run(struct store_case *sc, void (*task)(struct shard_load *), const char *what)
{
	uint64_t deadline = px_now_ns() + STORE_TASK_TIMEOUT_NS;
	sc->task = task;
	atomic_store(&sc->tasks_done, 0);
	for (unsigned i = 0; i < STORE_SHARDS; i++)
		pool_run_on(sc->pool, i, task_trampoline, &sc->shards[i]);
	while (atomic_load_explicit(&sc->tasks_done, memory_order_acquire) < STORE_SHARDS) {
		check_failure();
		if (px_now_ns() > deadline)
			store_fatal("%s did not finish in %llu s", what,
			            STORE_TASK_TIMEOUT_NS / 1000000000ULL);
		bench_sleep_ns(STORE_POLL_NS / 10);
	}
}

static uint64_t case_ops(struct store_case *sc)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < STORE_SHARDS; i++)
		sum += atomic_load_explicit(&sc->shards[i].ops, memory_order_relaxed);
	return sum;
}

/* Starts a phase on both shards, prints progress each second and waits for
 * both to finish.  A failure or STORE_STALL_NS without any completion is
 * fatal.  Returns the phase's ops/s over the wall time from the first start
 * to the last completion. */
static double run_phase(struct store_case *sc, void (*task)(struct shard_load *), const char *label,
                        uint64_t total, const char *unit)
{
	for (unsigned i = 0; i < STORE_SHARDS; i++)
		atomic_store(&sc->shards[i].finished, false);
	shards_run(sc, task, label);
	uint64_t t0 = px_now_ns(), last_change = t0, next_report = t0 + STORE_PROGRESS_NS;
	uint64_t last_ops = 0, report_ops = 0, report_t = t0;
	for (;;) {
		check_failure();
		unsigned done = 0;
		for (unsigned i = 0; i < STORE_SHARDS; i++)
			done += atomic_load_explicit(&sc->shards[i].finished, memory_order_acquire);
		if (done == STORE_SHARDS)
			break;
		uint64_t now = px_now_ns(), ops = case_ops(sc);
		if (ops != last_ops) {
			last_ops = ops;
			last_change = now;
		} else if (now - last_change > STORE_STALL_NS) {
			store_fatal("%s: no request completed for %llu s (%" PRIu64 " done)", label,
			            STORE_STALL_NS / 1000000000ULL, ops);
		}
		if (now >= next_report) {
			double rate = (double)(ops - report_ops) / ((double)(now - report_t) / 1e9);
			if (total)
				fprintf(stderr, "  %s: %" PRIu64 "/%" PRIu64 " %s, %.0f k %s/s\n",
				        label, ops, total, unit, rate / 1e3, unit);
			else
				fprintf(stderr, "  %s: %.0f/%u s, %" PRIu64 " %s, %.0f k %s/s\n",
				        label, (double)(now - t0) / 1e9, sc->seconds, ops, unit,
				        rate / 1e3, unit);
			report_ops = ops;
			report_t = now;
			next_report += STORE_PROGRESS_NS;
		}
		bench_sleep_ns(STORE_POLL_NS);
	}
	uint64_t start = UINT64_MAX, end = 0;
	for (unsigned i = 0; i < STORE_SHARDS; i++) {
		struct shard_load *ld = &sc->shards[i];
		start = ld->t_start < start ? ld->t_start : start;
		end = ld->t_end > end ? ld->t_end : end;
	}
	return end > start ? (double)case_ops(sc) / ((double)(end - start) / 1e9) : 0;
}

/* Sums the shards' counters (after task_stats). */
static struct store_stats stats_sum(const struct store_case *sc)
{
	struct store_stats t = {0};
	for (unsigned i = 0; i < STORE_SHARDS; i++) {
		const struct store_stats *s = &sc->shards[i].stats;
		t.keys += s->keys;
		t.log_bytes += s->log_bytes;
		t.cache_hits += s->cache_hits;
		t.cache_misses += s->cache_misses;
		t.index_blocking_reads += s->index_blocking_reads;
		t.disk_reads += s->disk_reads;
		t.commits += s->commits;
		t.records += s->records;
		t.fsyncs += s->fsyncs;
		t.write_errors += s->write_errors;
	}
	return t;
}

/* ---- figures --------------------------------------------------------------- */

/* Per value size, in this order. */
enum size_figure {
	SF_PUT_OPS,
	SF_PUT_MB_S,
	SF_PUT_LOG_MB_S,
	SF_PUT_RECS_PER_COMMIT,
	SF_GET_OPS,
	SF_GET_CACHE_HITS,
	SF_GET_CACHE_MISSES,
	SF_GET_DISK_READS,
	SF_GET_INDEX_BLOCKING_READS,
	SF_GET_DISK_READS_PER_GET,
	SF_COUNT
};

/* The references and the ratios, after the per-size figures. */
enum ref_figure {
	RF_FIO_RANDREAD_IOPS,
	RF_FIO_SEQWRITE_MB_S,
	RF_FIO_RECORD_READ_IOPS,  /* FIO_RECORD_READ-byte reads: a cold 4 KiB get's shape */
	RF_FIO_FRESH_WRITE_MB_S,  /* sequential writes into a fresh, preallocated file */
	RF_DBBENCH_FILL_1K_OPS,
	RF_DBBENCH_READ_1K_OPS,
	RF_DBBENCH_READ_1K_FOUND,
	RF_RATIO_GET_4K_FIO,      /* get_4k_ops / fio_randread_iops */
	RF_RATIO_PUT_4K_BW_FIO,   /* put_4k_mb_s / fio_seqwrite_mb_s */
	RF_RATIO_FILL_1K_DBBENCH, /* put_1k_ops / dbbench_fill_1k_ops */
	RF_RATIO_READ_1K_DBBENCH, /* get_1k_ops / dbbench_read_1k_ops */
	RF_RATIO_GET_4K_FIO_RECORD, /* get_4k_ops / fio_record_read_iops (no target) */
	RF_RATIO_PUT_4K_BW_FRESH,   /* put_4k_mb_s / fio_fresh_write_mb_s (no target) */
	RF_RATIO_FRESH_SEQWRITE,    /* fio_fresh_write_mb_s / fio_seqwrite_mb_s */
	RF_RATIO_RECORD_4K_READ,    /* fio_record_read_iops / fio_randread_iops */
	RF_COUNT
};

#define FIG_INDEX(size, sf) ((size)*SF_COUNT + (sf))
#define FIG_REF(rf)         (N_SIZES * SF_COUNT + (rf))
#define N_FIGURES           (N_SIZES * SF_COUNT + RF_COUNT)
#define FIRST_RATIO         RF_RATIO_GET_4K_FIO

/* One run's (or the medians') figures; NAN = not measured (a missing
 * reference). */
struct store_figures {
	double v[N_FIGURES];
};

/* How a figure is named and printed.  Per-size names contain %s (the tag). */
struct figure_desc {
	const char *key;   /* JSON key */
	const char *label; /* table label */
	const char *unit;
	double scale; /* table value = figure * scale */
	int decimals;
};

static const struct figure_desc size_descs[SF_COUNT] = {
    [SF_PUT_OPS] = {"put_%s_ops", "%s fill, random puts", "k ops/s", 1e-3, 0},
    [SF_PUT_MB_S] = {"put_%s_mb_s", "%s fill, value bytes", "MB/s", 1, 1},
    [SF_PUT_LOG_MB_S] = {"put_%s_log_mb_s", "%s fill, log bytes", "MB/s", 1, 1},
    [SF_PUT_RECS_PER_COMMIT] = {"put_%s_records_per_commit", "%s fill, records/commit", "", 1, 1},
    [SF_GET_OPS] = {"get_%s_ops", "%s random gets", "k ops/s", 1e-3, 0},
    [SF_GET_CACHE_HITS] = {"get_%s_cache_hits", "%s gets: cache hits", "", 1, 0},
    [SF_GET_CACHE_MISSES] = {"get_%s_cache_misses", "%s gets: cache misses", "", 1, 0},
    [SF_GET_DISK_READS] = {"get_%s_disk_reads", "%s gets: log reads", "", 1, 0},
    [SF_GET_INDEX_BLOCKING_READS] = {"get_%s_index_blocking_reads", "%s gets: blocking index reads",
                                     "", 1, 0},
    [SF_GET_DISK_READS_PER_GET] = {"get_%s_disk_reads_per_get", "%s gets: log reads per get", "", 1,
                                   3},
};

static const struct figure_desc ref_descs[RF_COUNT] = {
    [RF_FIO_RANDREAD_IOPS] = {"fio_randread_iops", "fio 4k randread", "k IOPS", 1e-3, 0},
    [RF_FIO_SEQWRITE_MB_S] = {"fio_seqwrite_mb_s", "fio 1m seq write", "MB/s", 1, 1},
    [RF_FIO_RECORD_READ_IOPS] = {"fio_record_read_iops", "fio 4608 B randread", "k IOPS", 1e-3, 0},
    [RF_FIO_FRESH_WRITE_MB_S] = {"fio_fresh_write_mb_s", "fio 1m write, fresh file", "MB/s", 1, 1},
    [RF_DBBENCH_FILL_1K_OPS] = {"dbbench_fill_1k_ops", "db_bench fillrandom 1k", "k ops/s", 1e-3,
                                0},
    [RF_DBBENCH_READ_1K_OPS] = {"dbbench_read_1k_ops", "db_bench readrandom 1k", "k ops/s", 1e-3,
                                0},
    [RF_DBBENCH_READ_1K_FOUND] = {"dbbench_read_1k_found", "db_bench readrandom found", "", 1, 3},
    [RF_RATIO_GET_4K_FIO] = {"ratio_get_4k_fio_randread", "4k gets / fio randread (>=0.8)", "x", 1,
                             3},
    [RF_RATIO_PUT_4K_BW_FIO] = {"ratio_put_4k_bw_fio_seqwrite",
                                "4k put MB/s / fio seq write (>=0.7)", "x", 1, 3},
    [RF_RATIO_FILL_1K_DBBENCH] = {"ratio_fill_1k_dbbench", "1k fill / db_bench fill (>=2)", "x", 1,
                                  2},
    [RF_RATIO_READ_1K_DBBENCH] = {"ratio_read_1k_dbbench", "1k gets / db_bench read (>=2)", "x", 1,
                                  2},
    [RF_RATIO_GET_4K_FIO_RECORD] = {"ratio_get_4k_fio_record_read", "4k gets / fio 4608 B randread",
                                    "x", 1, 3},
    [RF_RATIO_PUT_4K_BW_FRESH] = {"ratio_put_4k_bw_fio_fresh_write",
                                  "4k put MB/s / fio write, fresh file", "x", 1, 3},
    [RF_RATIO_FRESH_SEQWRITE] = {"ratio_fio_fresh_write_seqwrite",
                                 "fio: fresh-file write / seq write", "x", 1, 3},
    [RF_RATIO_RECORD_4K_READ] = {"ratio_fio_record_read_randread",
                                 "fio: 4608 B randread / 4k randread", "x", 1, 3},
};

static const struct figure_desc *figure_desc(size_t k, const char **tag)
{
	if (k < N_SIZES * SF_COUNT) {
		*tag = value_sizes[k / SF_COUNT].tag;
		return &size_descs[k % SF_COUNT];
	}
	*tag = "";
	return &ref_descs[k - N_SIZES * SF_COUNT];
}



static double ratio(double a, double b)
{
	return isnan(a) || isnan(b) || b <= 0 ? NAN : a / b;
}

static void figures_ratios(struct store_figures *f)
{
	double *v = f->v;
	v[FIG_REF(RF_RATIO_GET_4K_FIO)] =
	    ratio(v[FIG_INDEX(SIZE_4K, SF_GET_OPS)], v[FIG_REF(RF_FIO_RANDREAD_IOPS)]);
	v[FIG_REF(RF_RATIO_PUT_4K_BW_FIO)] =
	    ratio(v[FIG_INDEX(SIZE_4K, SF_PUT_MB_S)], v[FIG_REF(RF_FIO_SEQWRITE_MB_S)]);
	v[FIG_REF(RF_RATIO_FILL_1K_DBBENCH)] =
	    ratio(v[FIG_INDEX(SIZE_1K, SF_PUT_OPS)], v[FIG_REF(RF_DBBENCH_FILL_1K_OPS)]);
	v[FIG_REF(RF_RATIO_READ_1K_DBBENCH)] =
	    ratio(v[FIG_INDEX(SIZE_1K, SF_GET_OPS)], v[FIG_REF(RF_DBBENCH_READ_1K_OPS)]);
	v[FIG_REF(RF_RATIO_GET_4K_FIO_RECORD)] =
	    ratio(v[FIG_INDEX(SIZE_4K, SF_GET_OPS)], v[FIG_REF(RF_FIO_RECORD_READ_IOPS)]);
	v[FIG_REF(RF_RATIO_PUT_4K_BW_FRESH)] =
	    ratio(v[FIG_INDEX(SIZE_4K, SF_PUT_MB_S)], v[FIG_REF(RF_FIO_FRESH_WRITE_MB_S)]);
	v[FIG_REF(RF_RATIO_FRESH_SEQWRITE)] =
	    ratio(v[FIG_REF(RF_FIO_FRESH_WRITE_MB_S)], v[FIG_REF(RF_FIO_SEQWRITE_MB_S)]);
	v[FIG_REF(RF_RATIO_RECORD_4K_READ)] =
	    ratio(v[FIG_REF(RF_FIO_RECORD_READ_IOPS)], v[FIG_REF(RF_FIO_RANDREAD_IOPS)]);
}

/* Medians of every measured figure over `runs`, then the ratios. */
static void figures_median(struct store_figures *out, const struct store_figures *per_run,
                           unsigned runs)
{
	double v[STORE_MAX_RUNS];
	for (size_t k = 0; k < N_FIGURES; k++) {
		for (unsigned r = 0; r < runs; r++)
			v[r] = per_run[r].v[k];
		out->v[k] = bench_median(v, runs);
	}
	figures_ratios(out);
}

/* ---- the work directory ------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		fprintf(stderr, "warning: cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

/* rm -rf path (warnings only). */
static void remove_tree(const char *path)
{
	if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
		fprintf(stderr, "warning: cannot remove %s: %s\n", path, strerror(errno));
}

/* Bytes the biggest case, fio's file and db_bench's DB need at once, with
 * room for the index and RocksDB's compactions. */
static uint64_t space_needed(const struct store_opts *o, uint64_t fio_bytes)
{
	uint64_t most = 0;
	for (unsigned s = 0; s < N_SIZES; s++) {
		uint64_t b = keys_of(o, s) * (value_sizes[s].len + 64);
		most = b > most ? b : most;
	}
	return most * 3 / 2 + fio_bytes + keys_of(o, SIZE_1K) * (DBBENCH_VALUE_LEN + 64) * 2;
}

/* Makes DIR/ringkv-bench-store-PID after checking that DIR is a disk file
 * system with room.  Fatal otherwise. */
static void make_work_dir(const struct store_opts *o, uint64_t fio_bytes)
{
	struct statfs sf;
	struct statvfs sv;
	if (statfs(o->dir, &sf) != 0 || statvfs(o->dir, &sv) != 0)
		store_fatal("cannot use --dir %s: %s", o->dir, strerror(errno));
	if (sf.f_type == TMPFS_MAGIC_NUMBER)
		store_fatal("%s is tmpfs, which has no O_DIRECT: pass --dir on a disk file system",
		            o->dir);
	uint64_t need = space_needed(o, fio_bytes), avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (avail < need)
		store_fatal("%s has %.1f GiB free, the benchmark needs about %.1f GiB: free some"
		            " space, pass --dir elsewhere or fewer --keys",
		            o->dir, (double)avail / (1 << 30), (double)need / (1 << 30));
	snprintf(work_dir, sizeof(work_dir), "%s/ringkv-bench-store-%d", o->dir, (int)getpid());
	if (mkdir(work_dir, 0755) != 0) {
		int e = errno;
		work_dir[0] = '\0';
		store_fatal("cannot create the work directory in %s: %s", o->dir, strerror(e));
	}
}

/* ---- one value size -------------------------------------------------------- */

static void shuffle(uint32_t *v, uint64_t n, uint64_t *rng)
{
	for (uint64_t i = n; i > 1; i--) {
		uint64_t j = splitmix64(rng) % i;
		uint32_t t = v[i - 1];
		v[i - 1] = v[j];
		v[j] = t;
	}
}

/* Splits the key space by owner shard and shuffles each shard's keys. */
static void case_keys(struct store_case *sc, uint64_t *rng)
{
	char key[STORE_KEY_LEN];
	for (unsigned i = 0; i < STORE_SHARDS; i++) {
		sc->shards[i].key_ids = malloc(sc->n_keys * sizeof(uint32_t));
		if (sc->shards[i].key_ids == NULL)
			store_fatal("out of memory for %" PRIu64 " keys", sc->n_keys);
		sc->shards[i].n_keys = 0;
	}
	for (uint64_t id = 0; id < sc->n_keys; id++) {
		key_format(key, id);
		struct shard_load *ld = &sc->shards[shard_of_key(key, sizeof(key))];
		ld->key_ids[ld->n_keys++] = (uint32_t)id;
	}
	for (unsigned i = 0; i < STORE_SHARDS; i++)
		shuffle(sc->shards[i].key_ids, sc->shards[i].n_keys, rng);
}

static void case_init(struct store_case *sc, const struct store_opts *o, unsigned size,
                      unsigned run, uint64_t *rng)
{
	memset(sc, 0, sizeof(*sc));
	sc->value_len = value_sizes[size].len;
	sc->n_keys = keys_of(o, size);
	sc->seed = splitmix64(rng);
	sc->qd = o->qd;
	sc->put_qd = o->put_qd ? o->put_qd : o->qd;
	sc->seconds = o->seconds;
	unsigned slots = sc->qd > sc->put_qd ? sc->qd : sc->put_qd;
	sc->durability = o->durability;
	snprintf(sc->dir, sizeof(sc->dir), "%s/%s-run%u", work_dir, value_sizes[size].tag, run);
	case_keys(sc, rng);
	for (unsigned i = 0; i < STORE_SHARDS; i++) {
		struct shard_load *ld = &sc->shards[i];
		ld->id = i;
		ld->sc = sc;
		ld->rng = splitmix64(rng);
		ld->slots = calloc(slots, sizeof(*ld->slots));
		ld->values = malloc((size_t)slots * sc->value_len);
		if (ld->slots == NULL || ld->values == NULL)
			store_fatal("out of memory for %u request slots", slots);
		for (unsigned k = 0; k < slots; k++) {
			ld->slots[k].load = ld;
			ld->slots[k].value = ld->values + (size_t)k * sc->value_len;
		}
	}
}

static void case_free(struct store_case *sc)
{
	for (unsigned i = 0; i < STORE_SHARDS; i++) {
		free(sc->shards[i].key_ids);
		free(sc->shards[i].slots);
		free(sc->shards[i].values);
	}
}

/* Opens the stores of one value size on a fresh pool, fills them, reads
 * them, closes everything and removes the directory.  Fills f's figures for
 * that size. */
static void run_case(const struct store_opts *o, unsigned size, unsigned run, uint64_t *rng,
                     struct store_figures *f)
{
	const struct value_size *vs = &value_sizes[size];
	struct store_case *sc = malloc(sizeof(*sc));
	char err[512], label[64];
	if (sc == NULL)
		store_fatal("out of memory");
	case_init(sc, o, size, run, rng);
	if (mkdir(sc->dir, 0755) != 0)
		store_fatal("cannot create %s: %s", sc->dir, strerror(errno));
	if (idx_shared_create(&sc->shared, INDEX_CACHE_BYTES, INDEX_BG_THREADS, err, sizeof(err)) <
	    0)
		store_fatal("idx_shared_create: %s", err);
	struct pool_config pc = {
	    .threads = STORE_SHARDS,
	    .pin = true,
	    .queue_size = 1024,
	    .px = {.entries = 1024, .busy_poll_us = 50, .msg_budget = 1024},
	    .quiet = true,
	};
	if (pool_start(&sc->pool, &pc, err, sizeof(err)) < 0)
		store_fatal("cannot start the pool: %s", err);
	shards_run(sc, task_open, "store_open");
	for (unsigned i = 0; i < STORE_SHARDS; i++)
		if (sc->shards[i].open_ret < 0)
			store_fatal("store_open of shard %u: %s", i, sc->shards[i].open_err);

	fprintf(stderr,
	        "run %u/%u: %s values, %" PRIu64 " keys (%" PRIu64 " + %" PRIu64 "), qd %u"
	        " per shard (puts %u), durability %s\n",
	        run, o->runs, vs->tag, sc->n_keys, sc->shards[0].n_keys, sc->shards[1].n_keys,
	        sc->qd, sc->put_qd, durability_names[sc->durability]);
	snprintf(label, sizeof(label), "%s fill", vs->tag);
	double put_ops = run_phase(sc, task_fill, label, sc->n_keys, "puts");
	shards_run(sc, task_stats, "store_get_stats");
	struct store_stats fill = stats_sum(sc);
	double fill_s = put_ops > 0 ? (double)sc->n_keys / put_ops : 0;
	if (fill.keys != sc->n_keys)
		store_fatal("after the fill the stores count %" PRIu64 " keys, %" PRIu64
		            " were written",
		            fill.keys, sc->n_keys);
	double *v = &f->v[FIG_INDEX(size, 0)];
	v[SF_PUT_OPS] = put_ops;
	v[SF_PUT_MB_S] = put_ops * vs->len / 1e6;
	v[SF_PUT_LOG_MB_S] = fill_s > 0 ? (double)fill.log_bytes / fill_s / 1e6 : 0;
	v[SF_PUT_RECS_PER_COMMIT] = fill.commits ? (double)fill.records / (double)fill.commits : 0;
	fprintf(stderr,
	        "run %u/%u: %s fill: %.0f k puts/s, %.1f MB/s of values, %.1f MB/s of log,"
	        " %.1f records/commit\n",
	        run, o->runs, vs->tag, put_ops / 1e3, v[SF_PUT_MB_S], v[SF_PUT_LOG_MB_S],
	        v[SF_PUT_RECS_PER_COMMIT]);

	snprintf(label, sizeof(label), "%s gets", vs->tag);
	double get_ops = run_phase(sc, task_gets, label, 0, "gets");
	shards_run(sc, task_stats, "store_get_stats");
	struct store_stats gets = stats_sum(sc);
	v[SF_GET_OPS] = get_ops;
	v[SF_GET_CACHE_HITS] = (double)(gets.cache_hits - fill.cache_hits);
	v[SF_GET_CACHE_MISSES] = (double)(gets.cache_misses - fill.cache_misses);
	v[SF_GET_DISK_READS] = (double)(gets.disk_reads - fill.disk_reads);
	v[SF_GET_INDEX_BLOCKING_READS] =
	    (double)(gets.index_blocking_reads - fill.index_blocking_reads);
	v[SF_GET_DISK_READS_PER_GET] =
	    v[SF_GET_DISK_READS] / (double)(case_ops(sc) ? case_ops(sc) : 1);
	fprintf(stderr,
	        "run %u/%u: %s gets: %.0f k gets/s; %" PRIu64 " gets: %.0f cache hits, %.0f"
	        " misses, %.0f log reads, %.0f blocking index reads\n",
	        run, o->runs, vs->tag, get_ops / 1e3, case_ops(sc), v[SF_GET_CACHE_HITS],
	        v[SF_GET_CACHE_MISSES], v[SF_GET_DISK_READS], v[SF_GET_INDEX_BLOCKING_READS]);

	shards_run(sc, task_close, "store_close");
	pool_stop(sc->pool);
	idx_shared_destroy(sc->shared);
	remove_tree(sc->dir);
	case_free(sc);
	free(sc);
}

/* ---- references: fio and db_bench ---------------------------------------- */

/* True if `name` is an executable in $PATH. */
static bool in_path(const char *name)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];
	if (path == NULL)
		path = "/usr/bin:/bin";
	for (const char *p = path; *p != '\0';) {
		size_t n = strcspn(p, ":");
		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, name);
		if (n > 0 && access(buf, X_OK) == 0)
			return true;
		p += n + (p[n] == ':');
	}
	return false;
}

/* Runs argv (searched in $PATH) with stdin from /dev/null and its stdout
 * captured; stderr goes to ours.  Returns the malloc()ed output (the caller
 * frees it) if the program exited 0, else NULL after saying why. */
static char *run_capture(char *const argv[])
{
	int fds[2];
	if (pipe(fds) != 0) {
		fprintf(stderr, "warning: pipe: %s\n", strerror(errno));
		return NULL;
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "warning: fork: %s\n", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return NULL;
	}
	if (pid == 0) {
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		if (!freopen("/dev/null", "r", stdin))
			_exit(126);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap);
	ssize_t n;
	while (out != NULL) {
		if (len + 1 == cap) {
			char *bigger = realloc(out, cap *= 2);
			if (bigger == NULL) {
				free(out);
				out = NULL;
				break;
			}
			out = bigger;
		}
		n = read(fds[0], out + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fds[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (out == NULL || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "warning: %s failed (%s %d); its reference is missing\n", argv[0],
		        WIFEXITED(status) ? "exit status" : "signal",
		        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		free(out);
		return NULL;
	}
	out[len] = '\0';
	return out;
}

/* The number after `"field" :` following the first `"section" :` in fio's
 * JSON; NaN if absent. */
static double fio_json_number(const char *json, const char *section, const char *field)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\" :", section);
	const char *p = strstr(json, pat);
	if (p == NULL)
		return NAN;
	snprintf(pat, sizeof(pat), "\"%s\" :", field);
	p = strstr(p, pat);
	return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* The read a cold 4 KiB get makes: its record (header, 16-byte key, value)
 * is 4144 bytes at an 8-byte offset, read in whole 512-byte sectors where the
 * file system takes them (log.h, read_align): 4608 bytes for 59 offsets in 64,
 * 5120 for the rest.  fio reads FIO_RECORD_READ bytes at 512-byte alignment. */
#define FIO_RECORD_READ 4608u
_Static_assert((FMT_RECORD_HEADER + STORE_KEY_LEN + 4096 + 511) / 512 * 512 == FIO_RECORD_READ,
               "FIO_RECORD_READ is the sectors of a 4 KiB value's record");

/* Runs one fio job over `file` (argv's --filename), prints `what` and returns
 * `field` of its JSON `section` (NaN if fio failed). */
static double fio_job(const char *what, char **argv, const char *section, const char *field)
{
	fprintf(stderr, "  fio: %s\n", what);
	char *out = run_capture(argv);
	double x = out != NULL ? fio_json_number(out, section, field) : NAN;
	free(out);
	return x;
}

/* The fio references (see the top of this file), on files in the work
 * directory: v[] gets the RF_FIO_* figures, NaN for what could not run.
 * Random reads: 4 KiB, then the record-shaped reads, over a file fio lays out
 * (writes) first, outside the timed part; then 1 MiB sequential writes over
 * that file (written blocks); then, the file deleted, 1 MiB sequential writes
 * of `bytes` into a fresh file fio preallocates (unwritten extents, as a
 * fresh store's segments). */
static void run_fio(const struct store_opts *o, uint64_t bytes, double *v)
{
	char file[STORE_DIR_MAX + 128], fresh[STORE_DIR_MAX + 128], size[32], depth[32],
	    runtime[32], record[32], what[160];
	v[FIG_REF(RF_FIO_RANDREAD_IOPS)] = v[FIG_REF(RF_FIO_RECORD_READ_IOPS)] = NAN;
	v[FIG_REF(RF_FIO_SEQWRITE_MB_S)] = v[FIG_REF(RF_FIO_FRESH_WRITE_MB_S)] = NAN;
	if (!in_path("fio")) {
		fprintf(stderr, "warning: fio is not installed (apt-get install -y fio): its"
		                " references are missing\n");
		return;
	}
	snprintf(file, sizeof(file), "--filename=%s/fio.dat", work_dir);
	snprintf(fresh, sizeof(fresh), "--filename=%s/fio-fresh.dat", work_dir);
	snprintf(size, sizeof(size), "--size=%" PRIu64, bytes);
	snprintf(depth, sizeof(depth), "--iodepth=%u", o->qd * STORE_SHARDS);
	snprintf(runtime, sizeof(runtime), "--runtime=%u", o->seconds);
	snprintf(record, sizeof(record), "--bs=%u", FIO_RECORD_READ);
	char *randread[] = {"fio",       "--name=randread", file,          size,
	                    "--rw=randread", "--bs=4k",     "--direct=1",  "--ioengine=io_uring",
	                    depth,       "--numjobs=1",     "--time_based", runtime,
	                    "--output-format=json", NULL};
	char *recread[] = {"fio",        "--name=recordread", file,          size, "--norandommap",
	                   "--rw=randread", record,          "--blockalign=512", "--direct=1",
	                   "--ioengine=io_uring", depth,     "--numjobs=1", "--time_based",
	                   runtime,      "--output-format=json", NULL};
	char *seqwrite[] = {"fio",       "--name=seqwrite", file,          size,
	                    "--rw=write", "--bs=1m",        "--direct=1",  "--ioengine=io_uring",
	                    "--iodepth=4", "--numjobs=1",   "--time_based", runtime,
	                    "--output-format=json", NULL};
	char *freshwrite[] = {"fio",      "--name=freshwrite", fresh,        size,
	                      "--rw=write", "--bs=1m",         "--direct=1", "--ioengine=io_uring",
	                      "--iodepth=4", "--numjobs=1",    "--output-format=json", NULL};
	snprintf(what, sizeof(what), "4k random reads, iodepth %u, %u s (after laying out %.2f GiB)",
	         o->qd * STORE_SHARDS, o->seconds, (double)bytes / (1 << 30));
	v[FIG_REF(RF_FIO_RANDREAD_IOPS)] = fio_job(what, randread, "read", "iops");
	snprintf(what, sizeof(what), "%u-byte random reads at 512-byte offsets, iodepth %u, %u s",
	         FIO_RECORD_READ, o->qd * STORE_SHARDS, o->seconds);
	v[FIG_REF(RF_FIO_RECORD_READ_IOPS)] = fio_job(what, recread, "read", "iops");
	snprintf(what, sizeof(what), "1m sequential writes over written blocks, iodepth 4, %u s",
	         o->seconds);
	v[FIG_REF(RF_FIO_SEQWRITE_MB_S)] = fio_job(what, seqwrite, "write", "bw_bytes") / 1e6;
	snprintf(file, sizeof(file), "%s/fio.dat", work_dir);
	unlink(file);
	snprintf(what, sizeof(what), "1m sequential writes of %.2f GiB into a fresh file, iodepth 4",
	         (double)bytes / (1 << 30));
	v[FIG_REF(RF_FIO_FRESH_WRITE_MB_S)] = fio_job(what, freshwrite, "write", "bw_bytes") / 1e6;
	snprintf(fresh, sizeof(fresh), "%s/fio-fresh.dat", work_dir);
	unlink(fresh);
}

/* ops/s from db_bench's line for `bench` ("readrandom : 12.3 micros/op
 * 81234 ops/sec ..."), and the found fraction of "(X of Y found)" if asked.
 * NaN if absent. */
static double dbbench_ops(const char *out, const char *bench, double *found)
{
	for (const char *line = out; line != NULL && *line != '\0';) {
		const char *end = strchr(line, '\n');
		size_t blen = strlen(bench);
		double us, ops;
		if (strncmp(line, bench, blen) == 0 && (line[blen] == ' ' || line[blen] == ':')) {
			const char *colon = strchr(line, ':');
			if (colon != NULL &&
			    sscanf(colon + 1, "%lf micros/op %lf ops/sec", &us, &ops) == 2) {
				const char *paren = strstr(line, "(");
				unsigned long long have, of;
				if (found != NULL && paren != NULL &&
				    (end == NULL || paren < end) &&
				    sscanf(paren, "(%llu of %llu found)", &have, &of) == 2 &&
				    of > 0)
					*found = (double)have / (double)of;
				return ops;
			}
		}
		line = end ? end + 1 : NULL;
	}
	fprintf(stderr, "warning: db_bench printed no %s result; its reference is missing\n",
	        bench);
	return NAN;
}

/* db_bench fillrandom, then readrandom on the same DB; see the header for
 * the settings.  NaN for what could not run. */
static void run_dbbench(const struct store_opts *o, double *fill_ops, double *read_ops,
                        double *found)
{
	char db[STORE_DIR_MAX + 128], num[32], writes[32], cache[48], duration[32];
	*fill_ops = *read_ops = *found = NAN;
	if (!in_path("db_bench")) {
		fprintf(stderr, "warning: db_bench is not installed (apt-get install -y"
		                " rocksdb-tools): its references are missing\n");
		return;
	}
	uint64_t n = keys_of(o, SIZE_1K);
	snprintf(db, sizeof(db), "--db=%s/dbbench", work_dir);
	snprintf(num, sizeof(num), "--num=%" PRIu64, n);
	snprintf(writes, sizeof(writes), "--writes=%" PRIu64, (n + 1) / 2);
	snprintf(cache, sizeof(cache), "--cache_size=%llu",
	         (unsigned long long)(STORE_CACHE_BYTES + INDEX_CACHE_BYTES));
	snprintf(duration, sizeof(duration), "--duration=%u", o->seconds);
#define DBBENCH_COMMON                                                                             \
	"db_bench", db, num, "--key_size=16", "--value_size=1024", "--threads=2", cache,           \
	    "--use_direct_reads=true", "--use_direct_io_for_flush_and_compaction=true",            \
	    "--compression_type=none", "--sync=0", "--disable_wal=0", "--bloom_bits=10",           \
	    "--max_background_jobs=2", "--seed=42", "--progress_reports=false"
	char *fill[] = {DBBENCH_COMMON, "--benchmarks=fillrandom", writes, NULL};
	char *readrandom[] = {DBBENCH_COMMON, "--benchmarks=readrandom", "--use_existing_db=1",
	                      duration, NULL};
#undef DBBENCH_COMMON
	fprintf(stderr, "  db_bench: fillrandom, %" PRIu64 " x 1 KiB, 2 threads\n", n);
	char *out = run_capture(fill);
	if (out != NULL)
		*fill_ops = dbbench_ops(out, "fillrandom", NULL);
	free(out);
	if (!isnan(*fill_ops)) {
		fprintf(stderr, "  db_bench: readrandom, 2 threads, %u s\n", o->seconds);
		out = run_capture(readrandom);
		if (out != NULL)
			*read_ops = dbbench_ops(out, "readrandom", found);
		free(out);
	}
	snprintf(db, sizeof(db), "%s/dbbench", work_dir);
	remove_tree(db);
}

/* ---- output ---------------------------------------------------------------- */

static void print_json(const struct store_opts *o, const struct store_figures *f)
{
	printf(
	    "{\n  \"runs\": %u,\n  \"qd_per_shard\": %u,\n  \"put_qd_per_shard\": %u,\n"
	    "  \"shards\": %u,\n  \"seconds\": %u,\n"
	    "  \"durability\": \"%s\",\n  \"store_cache_bytes\": %llu,\n"
	    "  \"index_cache_bytes\": %llu",
	    o->runs, o->qd, o->put_qd ? o->put_qd : o->qd, STORE_SHARDS, o->seconds, durability_names[o->durability],
	    STORE_CACHE_BYTES, INDEX_CACHE_BYTES);
	for (unsigned s = 0; s < N_SIZES; s++)
		printf(",\n  \"keys_%s\": %" PRIu64, value_sizes[s].tag, keys_of(o, s));
	for (size_t k = 0; k < N_FIGURES; k++) {
		const char *tag;
		const struct figure_desc *d = figure_desc(k, &tag);
		char key[64];
		snprintf(key, sizeof(key), d->key, tag);
		if (isnan(f->v[k]))
			printf(",\n  \"%s\": null", key);
		else
			printf(",\n  \"%s\": %.*f", key, d->decimals, f->v[k]);
	}
	printf("\n}\n");
}

static void print_table(const struct store_opts *o, const struct store_figures *f)
{
	printf("ringkv-bench store: median of %u runs, %u shards, qd %u per shard (puts %u),"
	       " durability %s, caches %llu + %llu MiB; keys: ",
	       o->runs, STORE_SHARDS, o->qd, o->put_qd ? o->put_qd : o->qd,
	       durability_names[o->durability],
	       STORE_CACHE_BYTES >> 20, INDEX_CACHE_BYTES >> 20);
	for (unsigned s = 0; s < N_SIZES; s++)
		printf("%s%s %" PRIu64, s ? ", " : "", value_sizes[s].tag, keys_of(o, s));
	printf("\n\n%-40s %12s  %s\n", "figure", "value", "unit");
	for (size_t k = 0; k < N_FIGURES; k++) {
		const char *tag;
		const struct figure_desc *d = figure_desc(k, &tag);
		char label[96];
		snprintf(label, sizeof(label), d->label, tag);
		if (isnan(f->v[k]))
			printf("%-40s %12s  %s\n", label, "missing", d->unit);
		else
			printf("%-40s %12.*f  %s\n", label, d->scale != 1 ? 1 : d->decimals,
			       f->v[k] * d->scale, d->unit);
	}
}

/* ---- command line ---------------------------------------------------------- */

static void store_usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: ringkv-bench store [--json] [--dir DIR] [--keys N] [--runs R] [--seconds S]\n"
	    "                          [--qd Q] [--put-qd Q] [--durability fsync|write|none]\n"
	    "                          [--parts LIST]\n"
	    "\n"
	    "  --json        print one JSON object on stdout (progress goes to stderr)\n"
	    "  --dir DIR     where to make the data directory, on a disk file system\n"
	    "                (default $TMPDIR or /tmp)\n"
	    "  --keys N      key space of every value size (default 100 B: %llu,\n"
	    "                1 KiB: %llu, 4 KiB: %llu); also db_bench's --num\n"
	    "  --runs R      repeat everything R times (at most %d), report medians\n"
	    "                (default %d)\n"
	    "  --seconds S   length of each gets phase, fio job and db_bench readrandom\n"
	    "                (default %d)\n"
	    "  --qd Q        requests in flight per shard (default %d); fio reads with 2 x Q\n"
	    "  --put-qd Q    requests in flight per shard during the fills (default: --qd)\n"
	    "  --durability  when a put is acknowledged (default write)\n"
	    "  --parts LIST  what to run, comma-separated from 100,1k,4k,fio,dbbench\n"
	    "                (default all; figures of the others are null)\n",
	    (unsigned long long)value_sizes[0].default_keys,
	    (unsigned long long)value_sizes[1].default_keys,
	    (unsigned long long)value_sizes[2].default_keys, STORE_MAX_RUNS, STORE_DEFAULT_RUNS,
	    STORE_DEFAULT_SECONDS, STORE_DEFAULT_QD);
}


/* Parses --parts: a comma-separated list of 100, 1k, 4k, fio, dbbench. */
static bool parse_parts(const char *list, unsigned *out)
{
	static const char *const names[] = {"100", "1k", "4k", "fio", "dbbench"};
	unsigned parts = 0;
	for (const char *p = list; *p != '\0';) {
		size_t n = strcspn(p, ","), i;
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i]) == n && strncmp(p, names[i], n) == 0)
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			return false;
		parts |= 1u << i;
		p += n + (p[n] == ',');
	}
	*out = parts;
	return parts != 0;
}

/* Fills `o` from the command line.  Returns 0, 1 for --help, or -1 after
 * printing what is wrong. */
static int parse_args(int argc, char **argv, struct store_opts *o)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"dir", required_argument, NULL, 'd'},
	    {"keys", required_argument, NULL, 'k'},
	    {"runs", required_argument, NULL, 'r'},
	    {"seconds", required_argument, NULL, 's'},
	    {"qd", required_argument, NULL, 'q'},
	    {"put-qd", required_argument, NULL, 'Q'},
	    {"durability", required_argument, NULL, 'D'},
	    {"parts", required_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *tmp = getenv("TMPDIR");
	uint64_t v;
	int c, which = 0;
	*o = (struct store_opts){.parts = PART_ALL,
	                         .runs = STORE_DEFAULT_RUNS,
	                         .seconds = STORE_DEFAULT_SECONDS,
	                         .qd = STORE_DEFAULT_QD,
	                         .durability = LOG_DURABILITY_WRITE};
	snprintf(o->dir, sizeof(o->dir), "%s", tmp && *tmp ? tmp : "/tmp");
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, &which)) != -1) {
		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'd':
			if (strlen(optarg) >= sizeof(o->dir))
				goto bad;
			snprintf(o->dir, sizeof(o->dir), "%s", optarg);
			break;
		case 'k':
			if (!bench_parse_u64(optarg, STORE_SHARDS, STORE_MAX_KEYS, &o->keys))
				goto bad;
			break;
		case 'r':
			if (!bench_parse_u64(optarg, 1, STORE_MAX_RUNS, &v))
				goto bad;
			o->runs = (unsigned)v;
			break;
		case 's':
			if (!bench_parse_u64(optarg, 1, 3600, &v))
				goto bad;
			o->seconds = (unsigned)v;
			break;
		case 'q':
			if (!bench_parse_u64(optarg, 1, STORE_MAX_QD, &v))
				goto bad;
			o->qd = (unsigned)v;
			break;
		case 'Q':
			if (!bench_parse_u64(optarg, 1, STORE_MAX_QD, &v))
				goto bad;
			o->put_qd = (unsigned)v;
			break;
		case 'D':
			for (v = 0; v < 3 && strcmp(optarg, durability_names[v]) != 0; v++)
				;
			if (v == 3)
				goto bad;
			o->durability = (enum log_durability)v;
			break;
		case 'p':
			if (!parse_parts(optarg, &o->parts))
				goto bad;
			break;
		case 'h':
			return 1;
		default:
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ringkv-bench store: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	return 0;
bad:
	fprintf(stderr, "ringkv-bench store: invalid value '%s' for --%s\n", optarg,
	        longopts[which].name);
	return -1;
}

int bench_store_main(int argc, char **argv)
{
	struct store_opts o;
	int ret = parse_args(argc, argv, &o);
	if (ret != 0) {
		store_usage(ret > 0 ? stdout : stderr);
		return ret > 0 ? 0 : 2;
	}
	logging_level = LOG_LEVEL_WARN;

	uint64_t fio_bytes = keys_of(&o, SIZE_4K) * value_sizes[SIZE_4K].len;
	fio_bytes =
	    fio_bytes < FIO_MIN_BYTES ? FIO_MIN_BYTES : (fio_bytes + (1 << 20) - 1) & ~0xFFFFFULL;
	make_work_dir(&o, fio_bytes);
	fprintf(stderr, "ringkv-bench store: work directory %s\n", work_dir);

	static struct store_figures per_run[STORE_MAX_RUNS];
	struct store_figures result;
	uint64_t rng = 0x5eed0f5704e11ULL;
	catch_signals();
	for (unsigned r = 0; r < o.runs; r++) {
		struct store_figures *f = &per_run[r];
		double *v = f->v;
		for (size_t k = 0; k < N_FIGURES; k++)
			v[k] = NAN;
		for (unsigned s = 0; s < N_SIZES; s++)
			if (o.parts & (1u << s))
				run_case(&o, s, r + 1, &rng, f);
		if (o.parts & PART_FIO) {
			run_fio(&o, fio_bytes, v);
			fprintf(stderr,
			        "run %u/%u: fio: %.0f k 4k randread IOPS, %.0f k record-read IOPS,"
			        " %.1f MB/s seq write, %.1f MB/s into a fresh file\n",
			        r + 1, o.runs, v[FIG_REF(RF_FIO_RANDREAD_IOPS)] / 1e3,
			        v[FIG_REF(RF_FIO_RECORD_READ_IOPS)] / 1e3, v[FIG_REF(RF_FIO_SEQWRITE_MB_S)],
			        v[FIG_REF(RF_FIO_FRESH_WRITE_MB_S)]);
			check_failure();
		}
		if (o.parts & PART_DBBENCH) {
			run_dbbench(&o, &v[FIG_REF(RF_DBBENCH_FILL_1K_OPS)],
			            &v[FIG_REF(RF_DBBENCH_READ_1K_OPS)],
			            &v[FIG_REF(RF_DBBENCH_READ_1K_FOUND)]);
			fprintf(stderr,
			        "run %u/%u: db_bench: fillrandom %.0f k ops/s, readrandom"
			        " %.0f k ops/s (%.0f %% found)\n",
			        r + 1, o.runs, v[FIG_REF(RF_DBBENCH_FILL_1K_OPS)] / 1e3,
			        v[FIG_REF(RF_DBBENCH_READ_1K_OPS)] / 1e3,
			        v[FIG_REF(RF_DBBENCH_READ_1K_FOUND)] * 100);
			check_failure();
		}
		figures_ratios(f);
	}
	remove_tree(work_dir);
	figures_median(&result, per_run, o.runs);
	if (o.json)
		print_json(&o, &result);
	else
		print_table(&o, &result);
	return 0;
}
