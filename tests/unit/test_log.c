/* test_log: the shard log end to end on a real file system — appends are
 * acknowledged in LSN order and read back verified; reopening replays every
 * record (or those from an LSN on); a last commit cut at every byte offset,
 * zero- or garbage-filled, is dropped whole while every earlier record is
 * kept, and no stale record ever resurfaces after new appends; a group of
 * appends after log_reserve lands in one commit, even one larger than a
 * commit buffer; tmpfs and an unknown format version are refused with a
 * clear message. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/log.h"
#include "testutil.h"

#define SEGMENT_SIZE (4u << 20)
#define COMMIT_MAX (64u << 10)

static struct pool *pool;
static struct log *lg;
static char dir[512];
static enum log_durability durability;

/* A record as the test remembers it. */
struct rec {
	uint64_t lsn;
	int type;
	char key[32];
	uint32_t key_len;
	uint8_t *value;
	uint32_t value_len;
	struct log_pos pos;
};

static struct rec *written; /* [n_written] in LSN order */
static size_t n_written;
static uint64_t last_acked_lsn; /* proactor only: acks must come in LSN order */
static struct rec *replayed; /* what the last open replayed */
static size_t n_replayed;

/* ---- running steps on the proactor ------------------------------------- */

/* ---- open / close ------------------------------------------------------ */

static int replay_cb(void *arg, const struct fmt_record *r, const struct log_pos *pos)
{
	(void)arg;
	struct rec *x = &replayed[n_replayed++];
	memset(x, 0, sizeof(*x));
	x->lsn = r->lsn;
	x->type = r->type;
	x->key_len = r->key_len;
	memcpy(x->key, r->key, r->key_len < sizeof(x->key) ? r->key_len : sizeof(x->key));
	x->value_len = r->value_len;
	x->value = malloc(r->value_len + 1);
	memcpy(x->value, r->value, r->value_len);
	x->pos = *pos;
	return 0;
}

struct open_args {
	uint64_t from_lsn;
	int ret;
	char err[512];
};

static void open_step(void *arg)
{
	struct open_args *a = arg;
	struct log_config cfg = {.dir = dir,
				 .shard = 7,
				 .segment_size = SEGMENT_SIZE,
				 .durability = durability,
				 .commit_max = COMMIT_MAX};
	for (size_t i = 0; i < n_replayed; i++)
		free(replayed[i].value);
	n_replayed = 0;
	last_acked_lsn = 0;
	a->ret = log_open(&lg, px_current(), &cfg, a->from_lsn, replay_cb, NULL, a->err,
			  sizeof(a->err));
}

static int open_log(uint64_t from_lsn, char *err_out, size_t errlen)
{
	struct open_args a = {.from_lsn = from_lsn};
	test_on_px(pool, open_step, &a);
	if (err_out)
		snprintf(err_out, errlen, "%s", a.err);
	if (a.ret < 0 && err_out == NULL)
		fprintf(stderr, "log_open: %s\n", a.err);
	return a.ret;
}

static void close_log(void)
{
	test_log_close(pool, lg);
	lg = NULL;
}

/* ---- appends ----------------------------------------------------------- */

struct append {
	struct log_write w;
	size_t index; /* into written[] */
};

static atomic_ulong acks, ack_errors, ack_order_errors;

static void append_done(struct log_write *w, int err)
{
	struct append *a = container_of(w, struct append, w);
	if (err != 0)
		atomic_fetch_add(&ack_errors, 1);
	if (w->pos.lsn <= last_acked_lsn)
		atomic_fetch_add(&ack_order_errors, 1);
	last_acked_lsn = w->pos.lsn;
	written[a->index].pos = w->pos;
	free(a);
	atomic_fetch_add(&acks, 1);
}

struct append_args {
	size_t first, count; /* written[first .. first+count) */
	int ret;
};

static void append_step(void *arg)
{
	struct append_args *a = arg;
	a->ret = 0;
	for (size_t i = a->first; i < a->first + a->count; i++) {
		struct rec *x = &written[i];
		struct append *ap = calloc(1, sizeof(*ap));
		ap->w.done = append_done;
		ap->index = i;
		struct fmt_record r = {.type = x->type,
				       .key = (const uint8_t *)x->key,
				       .key_len = x->key_len,
				       .value = x->value,
				       .value_len = x->value_len};
		int ret = log_append(lg, &r, &ap->w);
		if (ret < 0) {
			a->ret = ret;
			free(ap);
			return;
		}
		x->lsn = ap->w.pos.lsn;
	}
}

/* Makes `count` new records (every 10th a DELETE) and appends them in
 * batches of `batch` per loop iteration; waits for every acknowledgement. */
static void append_records(size_t count, size_t batch, uint32_t max_value, unsigned *seed)
{
	written = realloc(written, (n_written + count) * sizeof(*written));
	size_t first = n_written;
	for (size_t i = 0; i < count; i++) {
		struct rec *x = &written[n_written++];
		memset(x, 0, sizeof(*x));
		x->type = (n_written % 10 == 0) ? FMT_DELETE : FMT_PUT;
		x->key_len = (uint32_t)snprintf(x->key, sizeof(x->key), "key:%zu", n_written);
		x->value_len = x->type == FMT_PUT ? (uint32_t)rand_r(seed) % (max_value + 1) : 0;
		x->value = malloc(x->value_len + 1);
		for (uint32_t k = 0; k < x->value_len; k++)
			x->value[k] = (uint8_t)rand_r(seed);
	}
	unsigned long target = atomic_load(&acks) + count;
	for (size_t done = 0; done < count; done += batch) {
		struct append_args a = {.first = first + done,
					.count = count - done < batch ? count - done : batch};
		test_on_px(pool, append_step, &a);
		CHECK(a.ret == 0, "log_append failed: %s", strerror(-a.ret));
	}
	CHECK(test_wait_count(&acks, target, 60), "only %lu of %lu appends acknowledged",
	      atomic_load(&acks) - (target - count), (unsigned long)count);
}

/* ---- reads ------------------------------------------------------------- */

struct read_req {
	struct log_read r;
	size_t index;
};
static atomic_ulong reads_done, read_errors;

static void read_done(struct log_read *r, int err, const struct fmt_record *rec)
{
	struct read_req *q = container_of(r, struct read_req, r);
	struct rec *x = &written[q->index];
	if (err != 0 || rec->value_len != x->value_len ||
	    memcmp(rec->value, x->value, x->value_len) != 0)
		atomic_fetch_add(&read_errors, 1);
	free(q);
	atomic_fetch_add(&reads_done, 1);
}

static void read_step(void *arg)
{
	size_t *n = arg;
	*n = 0;
	for (size_t i = 0; i < n_written; i++) {
		if (written[i].type != FMT_PUT)
			continue;
		struct read_req *q = calloc(1, sizeof(*q));
		q->r.done = read_done;
		q->r.pos = written[i].pos;
		q->r.key = written[i].key;
		q->r.key_len = written[i].key_len;
		q->index = i;
		log_read(lg, &q->r);
		(*n)++;
	}
}

/* ---- checks ------------------------------------------------------------ */

/* Checks that the last open replayed exactly written[first..last] (by LSN). */
static void check_replay(uint64_t from_lsn, size_t upto, const char *what)
{
	size_t expect = 0;
	for (size_t i = 0; i < upto; i++)
		if (written[i].lsn >= from_lsn)
			expect++;
	CHECK(n_replayed == expect, "%s: replayed %zu records, expected %zu", what, n_replayed,
	      expect);
	size_t j = 0;
	for (size_t i = 0; i < upto && j < n_replayed; i++) {
		struct rec *w = &written[i], *r = &replayed[j];
		if (w->lsn < from_lsn)
			continue;
		j++;
		if (r->lsn != w->lsn || r->type != w->type || r->key_len != w->key_len ||
		    memcmp(r->key, w->key, w->key_len) != 0 || r->value_len != w->value_len ||
		    memcmp(r->value, w->value, w->value_len) != 0) {
			CHECK(false, "%s: record LSN %lu replayed wrong", what,
			      (unsigned long)w->lsn);
			return;
		}
	}
}

static void reset_dir(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	for (size_t i = 0; i < n_written; i++)
		free(written[i].value);
	n_written = 0;
}

/* ---- scenarios --------------------------------------------------------- */

static void test_round_trip(enum log_durability d, unsigned *seed)
{
	durability = d;
	reset_dir();
	const char *names[] = {"fsync", "write", "none"};
	char what[64];
	snprintf(what, sizeof(what), "round trip (%s)", names[d]);

	CHECK(open_log(1, NULL, 0) == 0, "%s: open of an empty directory", what);
	append_records(1500, 37, 6000, seed); /* > 4 MiB: crosses segments */
	atomic_store(&reads_done, 0);
	size_t n_reads = 0;
	test_on_px(pool, read_step, &n_reads);
	CHECK(test_wait_count(&reads_done, n_reads, 60), "%s: reads did not finish", what);
	CHECK(atomic_load(&read_errors) == 0, "%s: %lu reads returned wrong data", what,
	      atomic_load(&read_errors));
	close_log();

	CHECK(open_log(1, NULL, 0) == 0, "%s: reopen", what);
	check_replay(1, n_written, what);
	CHECK(log_next_lsn(lg) == written[n_written - 1].lsn + 1, "%s: next LSN %lu", what,
	      (unsigned long)log_next_lsn(lg));
	close_log();

	uint64_t mid = written[n_written / 2].lsn;
	CHECK(open_log(mid, NULL, 0) == 0, "%s: reopen from the middle", what);
	check_replay(mid, n_written, what);
	append_records(10, 10, 100, seed);
	close_log();
	CHECK(open_log(1, NULL, 0) == 0, "%s: reopen after more appends", what);
	check_replay(1, n_written, what);
	close_log();
}

static void reserve_too_big_step(void *arg)
{
	*(int *)arg = log_reserve(lg, SEGMENT_SIZE);
}

/* Appends written[first..first+count) as a group: log_reserve of their
 * sizes, then the appends (none may fail once reserved). */
struct group_args {
	size_t before;       /* written[before] is appended first, alone */
	size_t first, count; /* the group */
	int reserve_ret, append_ret;
};

static void group_step(void *arg)
{
	struct group_args *g = arg;
	struct append_args one = {.first = g->before, .count = 1};
	append_step(&one);
	uint64_t bytes = 0;
	for (size_t i = g->first; i < g->first + g->count; i++)
		bytes += fmt_record_size(written[i].key_len, written[i].value_len);
	g->reserve_ret = log_reserve(lg, bytes);
	struct append_args rest = {.first = g->first, .count = g->count};
	append_step(&rest);
	g->append_ret = one.ret < 0 ? one.ret : rest.ret;
}

/* log_reserve: a group that fits the open commit joins it, right after the
 * record before it; one that does not starts a new commit (also when larger
 * than a commit buffer, COMMIT_MAX); one larger than a segment is refused.
 * The group's records are contiguous in one commit and replayed. */
static void test_reserve(unsigned *seed)
{
	durability = LOG_DURABILITY_FSYNC;
	reset_dir();
	CHECK(open_log(1, NULL, 0) == 0, "reserve: open");
	static const struct {
		uint32_t value; /* bytes per record of the group */
		size_t count;
		bool joins; /* it joins the open commit of the record before */
	} groups[] = {{100, 3, true}, {20000, 5, false}, {1000, 40, true}};
	for (size_t t = 0; t < 3; t++) {
		size_t first = n_written;
		written = realloc(written, (n_written + 1 + groups[t].count) * sizeof(*written));
		for (size_t i = 0; i <= groups[t].count; i++) {
			struct rec *x = &written[n_written++];
			memset(x, 0, sizeof(*x));
			x->type = FMT_PUT;
			x->key_len =
			    (uint32_t)snprintf(x->key, sizeof(x->key), "group:%zu", n_written);
			x->value_len = i == 0 ? 10 : groups[t].value;
			x->value = malloc(x->value_len + 1);
			for (uint32_t k = 0; k < x->value_len; k++)
				x->value[k] = (uint8_t)rand_r(seed);
		}
		unsigned long target = atomic_load(&acks) + 1 + groups[t].count;
		struct group_args g = {
		    .before = first, .first = first + 1, .count = groups[t].count};
		test_on_px(pool, group_step, &g);
		CHECK(g.reserve_ret == 0 && g.append_ret == 0, "group %zu: reserve %d, append %d",
		      t, g.reserve_ret, g.append_ret);
		CHECK(test_wait_count(&acks, target, 60), "group %zu: appends not acknowledged", t);
		const struct log_pos *before = &written[first].pos;
		const struct log_pos *p0 = &written[first + 1].pos;
		bool joined =
		    p0->segment == before->segment && p0->offset == before->offset + before->length;
		CHECK(joined == groups[t].joins, "group %zu %s the open commit", t,
		      joined ? "joined" : "did not join");
		if (!groups[t].joins)
			CHECK(p0->offset % FMT_BLOCK == 0, "group %zu starts a commit: offset %lu",
			      t, (unsigned long)p0->offset);
		for (size_t i = 1; i < groups[t].count; i++) {
			const struct log_pos *a = &written[first + i].pos,
			                     *b = &written[first + 1 + i].pos;
			CHECK(b->segment == a->segment && b->offset == a->offset + a->length,
			      "group %zu: record %zu is not right after the one before", t, i);
		}
	}
	int ret = -1;
	test_on_px(pool, reserve_too_big_step, &ret);
	CHECK(ret == -E2BIG, "a reservation larger than a segment: %d", ret);
	close_log();
	CHECK(open_log(1, NULL, 0) == 0, "reserve: reopen");
	check_replay(1, n_written, "reserved groups");
	close_log();
}

static void test_large_values(unsigned *seed)
{
	durability = LOG_DURABILITY_FSYNC;
	reset_dir();
	CHECK(open_log(1, NULL, 0) == 0, "large: open");
	append_records(3, 3, 3u << 20, seed); /* up to 3 MiB: beyond a standard commit */
	close_log();
	CHECK(open_log(1, NULL, 0) == 0, "large: reopen");
	check_replay(1, n_written, "large values");
	close_log();
}

#define RESTORE_SPAN (64u << 10) /* bytes from B's start that a case may touch */

/* The last commit is cut at every byte offset `step` apart, the tail after
 * the cut zeroed at one cut and filled with garbage at the next (both at
 * every cut took minutes: each case reopens the log). */
static void test_torn_tail(unsigned *seed, unsigned long step)
{
	durability = LOG_DURABILITY_FSYNC;
	reset_dir();
	CHECK(open_log(1, NULL, 0) == 0, "torn: open");
	append_records(40, 40, 300, seed); /* commit A */
	size_t n_a = n_written;
	append_records(12, 12, 600, seed); /* commit B, the last one */
	close_log();
	size_t n_all = n_written;
	struct rec *b_saved = malloc((n_all - n_a) * sizeof(*b_saved));
	memcpy(b_saved, written + n_a, (n_all - n_a) * sizeof(*b_saved));

	struct rec *first_b = &written[n_a], *last_b = &written[n_all - 1];
	uint64_t b_start = first_b->pos.offset & ~(uint64_t)(FMT_BLOCK - 1);
	uint64_t pad_end = last_b->pos.offset + last_b->pos.length + FMT_RECORD_HEADER;
	uint64_t b_end = (pad_end + FMT_BLOCK - 1) & ~(uint64_t)(FMT_BLOCK - 1);
	char seg[700];
	snprintf(seg, sizeof(seg), "%s/%016lx.seg", dir, (unsigned long)last_b->pos.segment);
	uint8_t *original = malloc(RESTORE_SPAN), *junk = malloc(RESTORE_SPAN);
	int fd = open(seg, O_RDWR);
	CHECK(pread(fd, original, RESTORE_SPAN, (off_t)b_start) == RESTORE_SPAN, "torn: pread");

	unsigned long cases = 0;
	for (uint64_t cut = b_start; cut < b_end; cut += step) {
		int garbage = (int)((cut - b_start) / step % 2);
		CHECK(pwrite(fd, original, RESTORE_SPAN, (off_t)b_start) == RESTORE_SPAN,
		      "torn: restore");
		for (uint64_t k = 0; k < b_end - cut; k++)
			junk[k] = garbage ? (uint8_t)(rand_r(seed) | 1) : 0;
		CHECK(pwrite(fd, junk, b_end - cut, (off_t)cut) == (ssize_t)(b_end - cut),
		      "torn: pwrite");

		/* B survives only if nothing it is checked by changed. */
		bool b_intact = cut >= pad_end ||
				memcmp(junk, original + (cut - b_start), pad_end - cut) == 0;
		size_t expect = b_intact ? n_all : n_a;
		char what[96];
		snprintf(what, sizeof(what), "torn at +%lu (%s)",
			 (unsigned long)(cut - b_start), garbage ? "garbage" : "zeroes");
		if (open_log(1, NULL, 0) != 0) {
			CHECK(false, "%s: open failed", what);
			continue;
		}
		check_replay(1, expect, what);
		uint64_t next = written[expect - 1].lsn + 1;
		CHECK(log_next_lsn(lg) == next, "%s: next LSN %lu, expected %lu", what,
		      (unsigned long)log_next_lsn(lg), (unsigned long)next);
		cases++;
		if (cases % 16 == 1) {
			/* No stale record of B may come back after new appends. */
			n_written = expect;
			append_records(3, 3, 50, seed);
			close_log();
			CHECK(open_log(1, NULL, 0) == 0, "%s: reopen after appends", what);
			check_replay(1, n_written, what);
			for (size_t i = expect; i < n_written; i++)
				free(written[i].value);
			if (n_written < n_all)
				written = realloc(written, n_all * sizeof(*written));
			memcpy(written + n_a, b_saved, (n_all - n_a) * sizeof(*b_saved));
			n_written = n_all;
		}
		close_log();
	}
	close(fd);
	printf("torn tail: %lu cases over %lu bytes of the last commit\n", cases,
	       (unsigned long)(b_end - b_start));
	free(original);
	free(junk);
	free(b_saved);
}

static void test_refusals(void)
{
	char err[512];
	char probe[64];
	snprintf(probe, sizeof(probe), "/dev/shm/ringkv-probe-%d", (int)getpid());
	int pfd = open(probe, O_RDWR | O_CREAT | O_DIRECT, 0600);
	bool shm_refuses = pfd < 0 && errno == EINVAL;
	if (pfd >= 0) {
		close(pfd);
		unlink(probe);
	}
	if (test_on_tmpfs("/dev/shm") && shm_refuses) {
		char saved[512];
		snprintf(saved, sizeof(saved), "%s", dir);
		snprintf(dir, sizeof(dir), "/dev/shm/ringkv-test-log-%d", (int)getpid());
		int ret = open_log(1, err, sizeof(err));
		CHECK(ret == -EINVAL && strstr(err, "does not support O_DIRECT") != NULL,
		      "tmpfs: got %d '%s'", ret, err);
		if (ret == 0)
			close_log();
		rmdir(dir);
		snprintf(dir, sizeof(dir), "%s", saved);
	} else {
		printf("/dev/shm accepts O_DIRECT (tmpfs has it since Linux 6.6): refusal not"
		       " checked here\n");
	}

	/* A segment written by a future format version. */
	reset_dir();
	mkdir(dir, 0755);
	uint8_t block[FMT_BLOCK];
	struct fmt_segment_header h = {
		.version = FMT_VERSION + 1, .shard = 7, .id = 1, .epoch = 5, .first_lsn = 1,
		.size = SEGMENT_SIZE};
	fmt_encode_segment_header(block, &h);
	char path[700];
	snprintf(path, sizeof(path), "%s/%016x.seg", dir, 1);
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	CHECK(pwrite(fd, block, sizeof(block), 0) == sizeof(block), "pwrite");
	CHECK(ftruncate(fd, SEGMENT_SIZE) == 0, "ftruncate");
	close(fd);
	int ret = open_log(1, err, sizeof(err));
	char found[64], reads[64];
	snprintf(found, sizeof(found), "format version %d", FMT_VERSION + 1);
	snprintf(reads, sizeof(reads), "reads version %d", FMT_VERSION);
	CHECK(ret < 0 && strstr(err, found) != NULL && strstr(err, reads) != NULL,
	      "future version: got %d '%s'", ret, err);
	if (ret == 0)
		close_log();
}

static size_t segments_now;
static void segments_step(void *arg)
{
	(void)arg;
	uint64_t ids[64];
	segments_now = log_segments(lg, ids, 64);
}

static size_t scanned;
static int scan_cb(void *arg, const struct fmt_record *r, const struct log_pos *pos)
{
	(void)arg;
	(void)r;
	(void)pos;
	scanned++;
	return 0;
}

/* A log written in the previous format version (2) still opens and
 * replays; the next record goes to a new segment of this version, so a
 * ringkv of version 2 refuses the log by its version instead of reading a
 * record it does not know as a torn commit.  log_scan reads what log_open
 * would replay and changes nothing. */
static void test_older_version(unsigned *seed)
{
	durability = LOG_DURABILITY_FSYNC;
	reset_dir();
	CHECK(open_log(1, NULL, 0) == 0, "older version: open");
	append_records(20, 20, 100, seed);
	close_log();
	char path[700];
	snprintf(path, sizeof(path), "%s/%016x.seg", dir, 1);
	int fd = open(path, O_RDWR);
	uint8_t block[FMT_BLOCK];
	struct fmt_segment_header h;
	CHECK(fd >= 0 && pread(fd, block, sizeof(block), 0) == sizeof(block) &&
	          fmt_decode_segment_header(block, &h) == FMT_OK,
	      "read segment 1's header");
	h.version = FMT_VERSION_READ_MIN;
	fmt_encode_segment_header(block, &h);
	CHECK(pwrite(fd, block, sizeof(block), 0) == sizeof(block), "rewrite its version");
	close(fd);

	char err[512];
	scanned = 0;
	CHECK(log_scan(dir, 7, 1, scan_cb, NULL, err, sizeof(err)) == 0 && scanned == 20,
	      "log_scan of the older segment: %zu records (%s)", scanned, err);
	CHECK(open_log(1, NULL, 0) == 0, "older version: reopen");
	check_replay(1, n_written, "older version");
	test_on_px(pool, segments_step, NULL);
	CHECK(segments_now == 1, "older version: %zu segments before writing", segments_now);
	append_records(5, 5, 100, seed);
	test_on_px(pool, segments_step, NULL);
	CHECK(segments_now == 2, "older version: the next record opens a new segment (%zu)",
	      segments_now);
	close_log();
	CHECK(open_log(1, NULL, 0) == 0, "older version: reopen after writing");
	check_replay(1, n_written, "older version, both segments");
	close_log();
	scanned = 0;
	CHECK(log_scan(dir, 7, 1, scan_cb, NULL, err, sizeof(err)) == 0 && scanned == 25,
	      "log_scan of both: %zu records", scanned);
	scanned = 0;
	snprintf(path, sizeof(path), "%s/nowhere", dir);
	CHECK(log_scan(path, 7, 1, scan_cb, NULL, err, sizeof(err)) == 0 && scanned == 0,
	      "log_scan of a missing directory: nothing");
}

int main(void)
{
	unsigned seed = 12345;
	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		return 77;
	snprintf(dir, sizeof(dir), "%s/ringkv-test-log-%d", tmp, (int)getpid());
	pool = test_pool(1, 64, 50, 256);
	replayed = calloc(20000, sizeof(*replayed));

	test_round_trip(LOG_DURABILITY_FSYNC, &seed);
	test_round_trip(LOG_DURABILITY_WRITE, &seed);
	test_round_trip(LOG_DURABILITY_NONE, &seed);
	test_large_values(&seed);
	test_reserve(&seed);
	unsigned long scale_step = test_scaled(1000) >= 1000 ? 1 : 13;
	test_torn_tail(&seed, scale_step);
	test_refusals();
	test_older_version(&seed);
	CHECK(atomic_load(&ack_errors) == 0, "%lu appends failed", atomic_load(&ack_errors));
	CHECK(atomic_load(&ack_order_errors) == 0, "%lu acknowledgements out of LSN order",
	      atomic_load(&ack_order_errors));

	pool_stop(pool);
	reset_dir();
	for (size_t i = 0; i < n_replayed; i++)
		free(replayed[i].value);
	free(replayed);
	free(written);
	return test_result();
}
