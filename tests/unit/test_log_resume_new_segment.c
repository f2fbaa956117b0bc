/* test_log_resume_new_segment: when recovery resumes the LSNs elsewhere than
 * where the last segment's commits end — from_lsn past the end of the log
 * (the index ahead of it), or a segment whose header starts at LSN 0 — the
 * next append goes to a new segment, and the next recovery from its LSN
 * replays it.  Before the fix it went into the last segment behind an LSN
 * gap, which that recovery took for a torn tail and cut (found by
 * tests/fuzz/fuzz_log; its input is tests/fuzz/corpus/log/resume-lsn-0). */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "storage/format.h"
#include "storage/log.h"
#include "testutil.h"

#define SEGMENT_SIZE (1u << 20)

static struct pool *pool;
static char dir[512];

/* What one open replayed. */
static uint64_t replayed_lsn[64];
static size_t n_replayed;

static int replay_cb(void *arg, const struct fmt_record *r, const struct log_pos *pos)
{
	(void)arg;
	(void)pos;
	if (n_replayed < 64)
		replayed_lsn[n_replayed] = r->lsn;
	n_replayed++;
	return 0;
}

struct open_args {
	struct log *log;
	uint64_t from_lsn;
	int ret;
	char err[512];
};

static void open_step(void *arg)
{
	struct open_args *a = arg;
	struct log_config cfg = {.dir = dir,
	                         .shard = 0,
	                         .segment_size = SEGMENT_SIZE,
	                         .durability = LOG_DURABILITY_WRITE};
	n_replayed = 0;
	a->ret = log_open(&a->log, px_current(), &cfg, a->from_lsn, replay_cb, NULL, a->err,
	                  sizeof(a->err));
}

/* Opens the log replaying from `from_lsn`; exits 1 if it cannot. */
static struct log *open_log(uint64_t from_lsn)
{
	struct open_args a = {.from_lsn = from_lsn};
	test_on_px(pool, open_step, &a);
	if (a.ret < 0) {
		fprintf(stderr, "FAIL: log_open from LSN %llu: %s\n", (unsigned long long)from_lsn,
		        a.err);
		exit(1);
	}
	return a.log;
}

struct append_args {
	struct log *log;
	struct log_write w;
	int ret;
	atomic_ulong done;
};

static void append_done(struct log_write *w, int err)
{
	struct append_args *a = container_of(w, struct append_args, w);
	a->ret = err;
	atomic_store(&a->done, 1);
}

static void append_step(void *arg)
{
	struct append_args *a = arg;
	struct fmt_record r = {.type = FMT_PUT,
	                       .key = (const uint8_t *)"key",
	                       .key_len = 3,
	                       .value = (const uint8_t *)"value",
	                       .value_len = 5};
	a->w.done = append_done;
	a->ret = log_append(a->log, &r, &a->w);
	if (a->ret < 0)
		atomic_store(&a->done, 1);
}

/* Appends one record, waits until it is written and returns its LSN. */
static uint64_t append_one(struct log *log)
{
	struct append_args a = {.log = log};
	atomic_init(&a.done, 0);
	test_on_px(pool, append_step, &a);
	CHECK(test_wait_count(&a.done, 1, 60), "the append was not written within 60 s");
	CHECK(a.ret == 0, "the append failed: %s", strerror(-a.ret));
	return a.w.pos.lsn;
}

static void reset_dir(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

/* Appends after opening from `from_lsn`, then checks the next open from
 * the appended LSN replays exactly that record. */
static void check_append_survives(uint64_t from_lsn, const char *what)
{
	struct log *log = open_log(from_lsn);
	uint64_t lsn = append_one(log);
	CHECK(lsn == log_next_lsn(log) - 1, "%s: appended LSN %llu", what, (unsigned long long)lsn);
	test_log_close(pool, log);
	log = open_log(lsn);
	CHECK(n_replayed == 1 && replayed_lsn[0] == lsn,
	      "%s: reopening from LSN %llu replayed %zu records (the first %llu)", what,
	      (unsigned long long)lsn, n_replayed,
	      (unsigned long long)(n_replayed ? replayed_lsn[0] : 0));
	CHECK(log_next_lsn(log) == lsn + 1, "%s: next LSN %llu after %llu", what,
	      (unsigned long long)log_next_lsn(log), (unsigned long long)lsn);
	test_log_close(pool, log);
}

/* The index is ahead of the log: three records, reopened from LSN 10. */
static void test_from_lsn_past_end(void)
{
	reset_dir();
	struct log *log = open_log(1);
	for (int i = 0; i < 3; i++)
		append_one(log);
	test_log_close(pool, log);
	check_append_survives(10, "from_lsn past the end");
}

/* A segment whose header starts at LSN 0 and holds no commit: the LSNs
 * resume at 1.  (The log never writes one; fuzz_log's input did.) */
static void test_segment_from_lsn_0(void)
{
	reset_dir();
	char path[700];
	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/%016x.seg", dir, 1);
	static uint8_t block[FMT_SEG_HEADER_SIZE];
	struct fmt_segment_header h = {.version = FMT_VERSION,
	                               .shard = 0,
	                               .id = 1,
	                               .epoch = 0x5eed,
	                               .first_lsn = 0,
	                               .size = 2 * FMT_BLOCK};
	fmt_encode_segment_header(block, &h);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && write(fd, block, sizeof(block)) == (ssize_t)sizeof(block),
	      "cannot write %s", path);
	if (fd >= 0)
		close(fd);
	check_append_survives(0, "a segment from LSN 0");
}

int main(void)
{
	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		return 77;
	snprintf(dir, sizeof(dir), "%s/ringkv-test-log-resume-%d", tmp, (int)getpid());
	pool = test_pool(1, 64, 0, 256);

	test_from_lsn_past_end();
	test_segment_from_lsn_0();

	pool_stop(pool);
	reset_dir();
	return test_result();
}
