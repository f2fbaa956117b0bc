/* test_log_spare: the log's spare segment — rotations take the zeroed spare
 * (every block written, no unwritten extent) and data across them recovers
 * intact; a ready spare survives a reopen; a segment deleted by GC becomes
 * the spare and, reused, never lets its stale records back (crash image and
 * clean reopen); stale bytes behind a sealed segment's last commit do not end
 * the log; a spare that cannot be made costs no write; the preallocated tail
 * of the segment being written is zeroed ahead of the commits; closing while
 * the spare is zeroed waits for its writes and leaves no file behind. */
#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/log.h"
#include "testutil.h"

#define SEGMENT_SIZE       (1u << 20)
#define COMMIT_MAX         (64u << 10)

static struct pool *pool;
static struct log *lg;
static char dir[512];
static uint64_t segment_size = SEGMENT_SIZE;
static enum log_durability durability = LOG_DURABILITY_FSYNC;

/* A record as the test remembers it. */
struct rec {
	uint64_t lsn;
	char key[32];
	uint32_t key_len;
	uint8_t *value;
	uint32_t value_len;
	struct log_pos pos;
};

static struct rec *written; /* [n_written] in LSN order */
static size_t n_written, cap_written;
static struct rec *replayed; /* what the last open replayed */
static size_t n_replayed, cap_replayed;
static unsigned seed = 4242;
static uint32_t value_min = 1000, value_span = 2001; /* value sizes: min + rand % span */

/* ---- open / close ------------------------------------------------------ */

static int replay_cb(void *arg, const struct fmt_record *r, const struct log_pos *pos)
{
	(void)arg;
	if (n_replayed == cap_replayed) {
		cap_replayed = cap_replayed ? cap_replayed * 2 : 1024;
		replayed = realloc(replayed, cap_replayed * sizeof(*replayed));
	}
	struct rec *x = &replayed[n_replayed++];
	memset(x, 0, sizeof(*x));
	x->lsn = r->lsn;
	x->key_len = r->key_len < sizeof(x->key) ? r->key_len : sizeof(x->key);
	memcpy(x->key, r->key, x->key_len);
	x->value_len = r->value_len;
	x->value = malloc(r->value_len + 1);
	memcpy(x->value, r->value, r->value_len);
	x->pos = *pos;
	return 0;
}

static void forget_replayed(void)
{
	for (size_t i = 0; i < n_replayed; i++)
		free(replayed[i].value);
	n_replayed = 0;
}

struct open_args {
	const char *dir;
	int ret;
	char err[512];
};

static void open_step(void *arg)
{
	struct open_args *a = arg;
	struct log_config cfg = {.dir = a->dir,
	                         .shard = 3,
	                         .segment_size = segment_size,
	                         .durability = durability,
	                         .commit_max = COMMIT_MAX};
	forget_replayed();
	a->ret = log_open(&lg, px_current(), &cfg, 1, replay_cb, NULL, a->err, sizeof(a->err));
}

/* Opens the log in `d` (replaying from LSN 1); false (and a failure) if it
 * cannot. */
static bool open_log(const char *d)
{
	struct open_args a = {.dir = d};
	test_on_px(pool, open_step, &a);
	CHECK(a.ret == 0, "log_open %s: %s", d, a.err);
	return a.ret == 0;
}

static void close_log(void)
{
	test_log_close(pool, lg);
	lg = NULL;
}

static void stats_step(void *arg)
{
	*(struct log_stats *)arg = *log_get_stats(lg);
}

static struct log_stats stats(void)
{
	struct log_stats s;
	test_on_px(pool, stats_step, &s);
	return s;
}

static void file_path(char *buf, size_t len, const char *d, const char *name)
{
	snprintf(buf, len, "%s/%s", d, name);
}

static void seg_path(char *buf, size_t len, const char *d, uint64_t id)
{
	snprintf(buf, len, "%s/%016lx.seg", d, (unsigned long)id);
}

static bool exists(const char *d, const char *name)
{
	char p[700];
	struct stat st;
	file_path(p, sizeof(p), d, name);
	return stat(p, &st) == 0;
}

/* ---- appends ----------------------------------------------------------- */

static atomic_ulong acks, ack_errors;

struct append {
	struct log_write w;
	size_t index; /* into written[] */
};

static void append_done(struct log_write *w, int err)
{
	struct append *a = container_of(w, struct append, w);
	if (err != 0)
		atomic_fetch_add(&ack_errors, 1);
	free(a);
	atomic_fetch_add(&acks, 1);
}

/* Makes a new record (value_min + up to value_span - 1 bytes) in written[] and
 * appends it (on the proactor).  Returns log_append's result. */
static int append_one(void)
{
	if (n_written == cap_written) {
		cap_written = cap_written ? cap_written * 2 : 1024;
		written = realloc(written, cap_written * sizeof(*written));
	}
	struct rec *x = &written[n_written];
	memset(x, 0, sizeof(*x));
	x->key_len = (uint32_t)snprintf(x->key, sizeof(x->key), "key:%zu", n_written);
	x->value_len = value_min + (uint32_t)rand_r(&seed) % value_span;
	x->value = malloc(x->value_len);
	for (uint32_t k = 0; k < x->value_len; k++)
		x->value[k] = (uint8_t)rand_r(&seed);
	struct append *ap = calloc(1, sizeof(*ap));
	ap->w.done = append_done;
	ap->index = n_written;
	struct fmt_record r = {.type = FMT_PUT,
	                       .key = (const uint8_t *)x->key,
	                       .key_len = x->key_len,
	                       .value = x->value,
	                       .value_len = x->value_len};
	int ret = log_append(lg, &r, &ap->w);
	if (ret < 0) {
		free(x->value);
		free(ap);
		return ret;
	}
	x->lsn = ap->w.pos.lsn;
	x->pos = ap->w.pos;
	n_written++;
	return 0;
}

struct fill_args {
	size_t count;          /* append this many records, or */
	bool until_rotation;   /* until a record lands in a new segment, or */
	uint64_t until_offset; /* until a commit past this offset was sealed (0: no) */
	bool stop_after;       /* then log_stop in the same step */
	bool zeroing_at_stop;  /* spare.tmp existed when log_stop was called */
	uint64_t delete_after; /* then delete this segment (0: none) in the same step */
	int ret, delete_ret;
	size_t appended;
};

static void fill_step(void *arg)
{
	struct fill_args *a = arg;
	uint64_t first_seg = n_written ? written[n_written - 1].pos.segment : 0;
	a->ret = 0;
	a->appended = 0;
	for (;;) {
		if (!a->until_rotation && a->until_offset == 0 && a->appended == a->count)
			break;
		if (a->until_offset != 0 && n_written > 0 &&
		    written[n_written - 1].pos.offset >= a->until_offset)
			break;
		a->ret = append_one();
		if (a->ret < 0)
			return;
		a->appended++;
		if (a->until_rotation && first_seg != 0 &&
		    written[n_written - 1].pos.segment != first_seg)
			break;
		if (a->until_rotation && first_seg == 0)
			first_seg = written[n_written - 1].pos.segment;
	}
	if (a->delete_after != 0)
		a->delete_ret = log_delete_segment(lg, a->delete_after);
	if (a->stop_after) {
		a->zeroing_at_stop = exists(dir, "spare.tmp");
		log_stop(lg);
	}
}

/* Runs `a` on the proactor and waits for every acknowledgement. */
static void fill(struct fill_args *a)
{
	unsigned long before = atomic_load(&acks);
	test_on_px(pool, fill_step, a);
	CHECK(a->ret == 0, "log_append: %s", strerror(-a->ret));
	CHECK(test_wait_count(&acks, before + a->appended, 60), "appends not acknowledged");
}

static void append_records(size_t count)
{
	struct fill_args a = {.count = count};
	fill(&a);
}

/* Appends until a commit past half the segment being written was sealed: the
 * log has then started preparing a spare (if none was ready). */
static void fill_to_half(void)
{
	struct fill_args a = {.until_offset = segment_size / 2 + COMMIT_MAX};
	fill(&a);
}

static uint64_t rotate(uint64_t delete_after, int *delete_ret)
{
	struct fill_args a = {.until_rotation = true, .delete_after = delete_after};
	fill(&a);
	if (delete_ret != NULL)
		*delete_ret = a.delete_ret;
	return written[n_written - 1].pos.segment;
}

/* ---- checks ------------------------------------------------------------ */

/* Checks that the last open replayed exactly the written records that are
 * not in segment `except` (0: all), in LSN order. */
static void check_replay(uint64_t except, const char *what)
{
	size_t j = 0, expect = 0;
	for (size_t i = 0; i < n_written; i++) {
		struct rec *w = &written[i];
		if (w->pos.segment == except)
			continue;
		expect++;
		if (j >= n_replayed)
			continue;
		struct rec *r = &replayed[j++];
		if (r->lsn != w->lsn || r->key_len != w->key_len ||
		    memcmp(r->key, w->key, w->key_len) != 0 || r->value_len != w->value_len ||
		    memcmp(r->value, w->value, w->value_len) != 0) {
			CHECK(false,
			      "%s: replayed LSN %lu where LSN %lu was expected (or its bytes"
			      " differ)",
			      what, (unsigned long)r->lsn, (unsigned long)w->lsn);
			return;
		}
	}
	CHECK(n_replayed == expect, "%s: replayed %zu records, expected %zu", what, n_replayed,
	      expect);
}

/* Waits until d/name exists (the spare is prepared in the background);
 * false after 60 s. */
static bool wait_for_file(const char *d, const char *name)
{
	double deadline = test_now() + 60;
	while (!exists(d, name)) {
		if (test_now() > deadline)
			return false;
		usleep(1000);
	}
	return true;
}

/* 1 if `path` has an unwritten (preallocated only) extent ending past byte
 * `from`, 0 if not, -1 if the file system cannot tell (no FIEMAP). */
static int unwritten_past(const char *path, uint64_t from)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	enum { N = 256 };
	struct fiemap *fm = calloc(1, sizeof(*fm) + N * sizeof(struct fiemap_extent));
	int result = 0;
	uint64_t start = 0;
	for (;;) {
		memset(fm, 0, sizeof(*fm));
		fm->fm_start = start;
		fm->fm_length = FIEMAP_MAX_OFFSET;
		fm->fm_flags = FIEMAP_FLAG_SYNC;
		fm->fm_extent_count = N;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) != 0) {
			result = -1;
			break;
		}
		if (fm->fm_mapped_extents == 0)
			break;
		struct fiemap_extent *last = &fm->fm_extents[fm->fm_mapped_extents - 1];
		for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
			struct fiemap_extent *e = &fm->fm_extents[i];
			if ((e->fe_flags & FIEMAP_EXTENT_UNWRITTEN) &&
			    e->fe_logical + e->fe_length > from)
				result = 1;
		}
		if (result != 0 || (last->fe_flags & FIEMAP_EXTENT_LAST))
			break;
		start = last->fe_logical + last->fe_length;
	}
	free(fm);
	close(fd);
	return result;
}

/* Waits until the log's tail zeroing has stopped moving. */
static uint64_t wait_tail_zeroed(void)
{
	uint64_t last = stats().tail_bytes_zeroed;
	double deadline = test_now() + 60;
	for (;;) {
		usleep(200000);
		uint64_t now = stats().tail_bytes_zeroed;
		if (now == last || test_now() > deadline)
			return now;
		last = now;
	}
}

/* Waits (up to `seconds`) until `path` has no unwritten extent past `from`,
 * looking at the file only: anything run on the loop would drive the zeroing
 * itself.  Returns unwritten_past's last answer. */
static int wait_written_past(const char *path, uint64_t from, double seconds)
{
	double deadline = test_now() + seconds;
	int unwritten;
	while ((unwritten = unwritten_past(path, from)) == 1 && test_now() < deadline)
		usleep(100000);
	return unwritten;
}

static void reset(const char *d)
{
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", d);
}

static void forget_written(void)
{
	for (size_t i = 0; i < n_written; i++)
		free(written[i].value);
	n_written = 0;
}

/* ---- scenarios --------------------------------------------------------- */

/* Every rotation after the spare is ready takes it; everything recovers. */
static void test_rotation_takes_spare(void)
{
	reset(dir);
	forget_written();
	if (!open_log(dir))
		return;
	append_records(20);
	CHECK(!exists(dir, "spare.tmp") && !exists(dir, "spare.ready"),
	      "a spare is made before the segment is half full");
	const int rotations = 4;
	for (int r = 0; r < rotations; r++) {
		fill_to_half();
		CHECK(wait_for_file(dir, "spare.ready"), "rotation %d: the spare never got ready",
		      r);
		char p[700];
		file_path(p, sizeof(p), dir, "spare.ready");
		struct stat st;
		CHECK(stat(p, &st) == 0 && st.st_size == SEGMENT_SIZE, "spare size %ld",
		      (long)st.st_size);
		int unwritten = unwritten_past(p, 0);
		CHECK(unwritten != 1, "rotation %d: the ready spare still has unwritten extents",
		      r);
		ino_t spare_ino = st.st_ino;
		uint64_t seg = rotate(0, NULL);
		seg_path(p, sizeof(p), dir, seg);
		CHECK(stat(p, &st) == 0 && st.st_ino == spare_ino,
		      "rotation %d: segment %lu is not the spare's file", r, (unsigned long)seg);
		append_records(5);
	}
	struct log_stats s = stats();
	CHECK(s.segments_from_spare == (uint64_t)rotations,
	      "%lu segments from the spare, %d expected", (unsigned long)s.segments_from_spare,
	      rotations);
	CHECK(s.spare_bytes_zeroed >= (uint64_t)rotations * SEGMENT_SIZE,
	      "%lu bytes zeroed for %d spares", (unsigned long)s.spare_bytes_zeroed, rotations);
	CHECK(s.segments == (uint64_t)rotations + 1, "%lu segments", (unsigned long)s.segments);
	printf("rotations: %lu segments from the spare, %lu bytes zeroed, %zu records\n",
	       (unsigned long)s.segments_from_spare, (unsigned long)s.spare_bytes_zeroed,
	       n_written);
	CHECK(atomic_load(&ack_errors) == 0, "%lu appends failed", atomic_load(&ack_errors));
	/* Wait for the spare of the next rotation, so the reopen below finds it. */
	fill_to_half();
	CHECK(wait_for_file(dir, "spare.ready"), "the last spare never got ready");
	close_log();
	CHECK(!exists(dir, "spare.tmp"), "spare.tmp left after close");
	CHECK(exists(dir, "spare.ready"), "the ready spare was not kept for the next open");

	if (!open_log(dir))
		return;
	check_replay(0, "after rotations through the spare");
	/* The spare kept from the last run is taken at once. */
	rotate(0, NULL);
	s = stats();
	CHECK(s.segments_from_spare == 1, "after reopen: %lu segments from the spare",
	      (unsigned long)s.segments_from_spare);
	close_log();
	if (open_log(dir)) {
		check_replay(0, "after a rotation into the kept spare");
		close_log();
	}
}

/* A fresh log written past half its first segment, with the spare ready.
 * False if the log does not open. */
static bool open_to_spare(void)
{
	reset(dir);
	forget_written();
	if (!open_log(dir))
		return false;
	fill_to_half();
	CHECK(wait_for_file(dir, "spare.ready"), "the spare never got ready");
	return true;
}

/* A fresh log written until its second segment, made from a ready spare,
 * holds a record: segment 1 is sealed.  False if the log does not open. */
static bool open_into_spare(void)
{
	if (!open_to_spare())
		return false;
	uint64_t seg = rotate(0, NULL);
	CHECK(seg == 2, "rotated into segment %lu, not 2", (unsigned long)seg);
	return true;
}

static void expect_recycled_step(void *arg)
{
	log_expect_recycled(lg, *(bool *)arg);
}

static void expect_recycled(bool expected)
{
	test_on_px(pool, expect_recycled_step, &expected);
}

/* While GC is about to delete a segment, the spare waits for 7/8 of the
 * segment instead of half (log_expect_recycled); the deleted segment then
 * becomes the spare and nothing is zeroed. */
static void test_spare_waits_for_recycling(void)
{
	if (!open_into_spare())
		return;
	uint64_t first = 1;
	struct log_stats before = stats();

	/* Segment 2: from a quarter on, GC is about to delete segment 1. */
	struct fill_args a = {.until_offset = segment_size / 4};
	fill(&a);
	expect_recycled(true);
	fill_to_half();
	CHECK(!exists(dir, "spare.tmp") && !exists(dir, "spare.ready"),
	      "a spare is made at half a segment while GC is about to delete one");
	a = (struct fill_args){.until_offset = segment_size / 4 * 3};
	fill(&a);
	CHECK(!exists(dir, "spare.tmp") && !exists(dir, "spare.ready"),
	      "a spare is made at 3/4 of a segment while GC is about to delete one");
	a = (struct fill_args){.count = 1, .delete_after = first};
	fill(&a);
	int ret = a.delete_ret;
	CHECK(ret == 0, "deleting segment %lu: %s", (unsigned long)first, strerror(-ret));
	expect_recycled(false);
	CHECK(exists(dir, "spare.ready"), "the deleted segment did not become the spare");
	struct log_stats s = stats();
	CHECK(s.segments_recycled == before.segments_recycled + 1 &&
	          s.spare_bytes_zeroed == before.spare_bytes_zeroed,
	      "%lu segments recycled, %lu bytes zeroed (expected %lu, %lu)",
	      (unsigned long)s.segments_recycled, (unsigned long)s.spare_bytes_zeroed,
	      (unsigned long)before.segments_recycled + 1,
	      (unsigned long)before.spare_bytes_zeroed);
	rotate(0, NULL);

	/* Segment 3: GC has nothing to delete after all; past 7/8 the spare is
	 * zeroed anyway. */
	expect_recycled(true);
	a = (struct fill_args){.until_offset = segment_size / 8 * 7 + COMMIT_MAX};
	fill(&a);
	CHECK(wait_for_file(dir, "spare.ready"),
	      "no spare made past 7/8 of a segment while GC was expected to delete one");
	expect_recycled(false);
	s = stats();
	printf("recycling expected: %lu segments recycled, %lu bytes zeroed\n",
	       (unsigned long)s.segments_recycled, (unsigned long)s.spare_bytes_zeroed);
	close_log();
	if (open_log(dir)) {
		check_replay(first, "after waiting for a recycled spare");
		close_log();
	}
}

/* Under `write` durability the spare is preallocated but not zeroed (log.h);
 * rotations still take it and everything recovers. */
static void test_write_durability_spare_not_zeroed(void)
{
	reset(dir);
	forget_written();
	durability = LOG_DURABILITY_WRITE;
	if (!open_log(dir)) {
		durability = LOG_DURABILITY_FSYNC;
		return;
	}
	for (int r = 0; r < 2; r++) {
		fill_to_half();
		CHECK(wait_for_file(dir, "spare.ready"), "rotation %d: the spare never got ready",
		      r);
		rotate(0, NULL);
		append_records(5);
	}
	struct log_stats s = stats();
	CHECK(s.segments_from_spare == 2 && s.spare_bytes_zeroed == 0,
	      "write durability: %lu segments from the spare, %lu bytes zeroed (expected 2, 0)",
	      (unsigned long)s.segments_from_spare, (unsigned long)s.spare_bytes_zeroed);
	close_log();
	if (open_log(dir)) {
		check_replay(0, "after rotations through unzeroed spares");
		close_log();
	}
	durability = LOG_DURABILITY_FSYNC;
}

/* Under `write` durability a segment made from a preallocated spare has its
 * tail zeroed ahead of the commits, and one made from a recycled segment
 * (written blocks) does not: that would write a whole segment of zeros for
 * nothing. */
static void test_write_durability_recycled_not_zeroed(void)
{
	durability = LOG_DURABILITY_WRITE;
	segment_size = 16u << 20; /* room for zeroing past the gap */
	value_min = 20000;
	value_span = 20001;
	if (!open_to_spare())
		goto out;
	uint64_t first = wait_tail_zeroed();
	CHECK(first > 0, "the first segment's tail was not zeroed ahead");

	/* Segment 2, from the preallocated spare: GC deletes segment 1 before a
	 * spare is made, so segment 1 becomes the spare. */
	rotate(0, NULL);
	struct fill_args a = {.until_offset = segment_size / 4};
	fill(&a);
	char p2[700];
	seg_path(p2, sizeof(p2), dir, 2);
	uint64_t end = written[n_written - 1].pos.offset + written[n_written - 1].pos.length;
	CHECK(wait_written_past(p2, end + (2u << 20), 30) != 1,
	      "segment 2's tail was not zeroed ahead within 30 s");
	uint64_t second = stats().tail_bytes_zeroed;
	CHECK(second > first, "a segment made from a preallocated spare was not zeroed ahead");
	expect_recycled(true);
	a = (struct fill_args){.count = 1, .delete_after = 1};
	fill(&a);
	CHECK(a.delete_ret == 0, "deleting segment 1: %s", strerror(-a.delete_ret));
	expect_recycled(false);
	CHECK(stats().segments_recycled == 1, "segment 1 did not become the spare");

	uint64_t seg = rotate(0, NULL);
	append_records(5);
	uint64_t third = wait_tail_zeroed();
	printf("write durability: %lu, %lu, %lu bytes zeroed ahead after segments 1, 2, %lu"
	       " (recycled)\n",
	       (unsigned long)first, (unsigned long)second, (unsigned long)third,
	       (unsigned long)seg);
	CHECK(seg == 3 && third == second,
	      "segment %lu, made from the recycled segment, was zeroed ahead (%lu bytes)",
	      (unsigned long)seg, (unsigned long)(third - second));
	close_log();
	if (open_log(dir)) {
		check_replay(1, "after a rotation into a recycled segment under write");
		close_log();
	}
out:
	segment_size = SEGMENT_SIZE;
	value_min = 1000;
	value_span = 2001;
	durability = LOG_DURABILITY_FSYNC;
}

/* A segment deleted while no spare is ready becomes the spare; reused, its
 * stale records never come back. */
static void test_recycled_segment(void)
{
	if (!open_into_spare())
		return;
	char p1[700], p[700];
	seg_path(p1, sizeof(p1), dir, 1);
	struct stat st;
	CHECK(stat(p1, &st) == 0, "segment 1 missing");
	ino_t ino1 = st.st_ino;
	size_t in_seg1 = 0;
	for (size_t i = 0; i < n_written; i++)
		in_seg1 += written[i].pos.segment == 1;

	/* On the way to segment 3 a new spare is being zeroed (past half of
	 * segment 2) but cannot be ready yet when, in the same step, segment 3
	 * is created and segment 1 deleted: segment 1 must become the spare. */
	int del = -1;
	uint64_t seg = rotate(1, &del);
	CHECK(seg == 3 && del == 0, "rotation to %lu, delete: %d", (unsigned long)seg, del);
	struct log_stats s = stats();
	CHECK(s.segments_recycled == 1, "%lu segments recycled",
	      (unsigned long)s.segments_recycled);
	CHECK(s.segments_from_spare == 1, "%lu segments from the spare",
	      (unsigned long)s.segments_from_spare);
	CHECK(!exists(dir, "0000000000000001.seg"), "segment 1's file still there");
	file_path(p, sizeof(p), dir, "spare.ready");
	CHECK(stat(p, &st) == 0 && st.st_ino == ino1, "spare.ready is not segment 1's file");

	/* The next rotation takes the recycled file; a few new records go into
	 * it, far fewer than segment 1's stale ones. */
	seg = rotate(0, NULL);
	seg_path(p, sizeof(p), dir, seg);
	CHECK(seg == 4 && stat(p, &st) == 0 && st.st_ino == ino1,
	      "segment %lu is not the recycled file", (unsigned long)seg);
	append_records(3);
	size_t in_seg4 = 0;
	for (size_t i = 0; i < n_written; i++)
		in_seg4 += written[i].pos.segment == 4;
	CHECK(in_seg4 < in_seg1, "%zu new records in the recycled file, %zu stale", in_seg4,
	      in_seg1);

	/* A crash image: the directory as the disk holds it now, log open. */
	char crash[600];
	snprintf(crash, sizeof(crash), "%s-crash", dir);
	reset(crash);
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s'", dir, crash);
	CHECK(system(cmd) == 0, "cp");
	close_log();

	printf("recycled: %zu stale records behind %zu new ones\n", in_seg1, in_seg4);
	if (open_log(crash)) {
		check_replay(1, "crash image with a recycled segment");
		CHECK(log_next_lsn(lg) == written[n_written - 1].lsn + 1,
		      "crash image: next LSN %lu", (unsigned long)log_next_lsn(lg));
		/* New appends after recovery, then again: still exact. */
		append_records(4);
		close_log();
		if (open_log(crash)) {
			check_replay(1, "crash image, appended after recovery");
			close_log();
		}
		for (int i = 0; i < 4; i++)
			free(written[--n_written].value);
	}
	reset(crash);
	if (open_log(dir)) {
		check_replay(1, "clean reopen with a recycled segment");
		close_log();
	}
}

struct info_args {
	uint64_t id;
	struct log_segment_info info;
	int ret;
};

static void info_step(void *arg)
{
	struct info_args *a = arg;
	a->ret = log_segment_info(lg, a->id, &a->info);
}

/* Stale record bytes behind the last commit of sealed segments (as a
 * recycled file has them) do not end the log: later segments are kept. */
static void test_stale_tail_of_sealed_segment(void)
{
	enum { SEALED = 6 };
	reset(dir);
	forget_written();
	/* Records of up to 16 KiB leave room behind the last commit of most
	 * segments (a segment ends when the next record does not fit). */
	value_min = 9000;
	value_span = 7000;
	if (!open_log(dir))
		return;
	append_records(20);
	for (int r = 0; r < SEALED; r++)
		rotate(0, NULL);
	append_records(3);
	value_min = 1000;
	value_span = 2001;
	uint64_t fills[SEALED + 1] = {0};
	for (uint64_t id = 1; id <= SEALED; id++) {
		struct info_args a = {.id = id};
		test_on_px(pool, info_step, &a);
		CHECK(a.ret == 0 && a.info.sealed, "segment %lu info", (unsigned long)id);
		fills[id] = a.info.fill;
	}
	close_log();

	/* A commit's first block from another segment (another epoch) goes where
	 * each sealed segment's next commit would have started. */
	uint8_t *block = aligned_alloc(FMT_BLOCK, FMT_BLOCK);
	char p[700];
	seg_path(p, sizeof(p), dir, SEALED + 1);
	int fd = open(p, O_RDONLY);
	CHECK(fd >= 0 && pread(fd, block, FMT_BLOCK, FMT_SEG_HEADER_SIZE) == FMT_BLOCK,
	      "read a commit of the last segment");
	close(fd);
	int planted = 0;
	for (uint64_t id = 1; id <= SEALED; id++) {
		if (fills[id] + FMT_BLOCK > SEGMENT_SIZE)
			continue;
		seg_path(p, sizeof(p), dir, id);
		fd = open(p, O_WRONLY);
		CHECK(pwrite(fd, block, FMT_BLOCK, (off_t)fills[id]) == FMT_BLOCK, "pwrite");
		close(fd);
		planted++;
	}
	free(block);
	CHECK(planted > 0, "no sealed segment had room behind its last commit");
	printf("stale tails planted behind %d of %d sealed segments\n", planted, SEALED);
	if (open_log(dir)) {
		check_replay(0, "stale bytes behind sealed segments");
		CHECK(stats().segments == SEALED + 1, "segments were dropped (%d stale tails)",
		      planted);
		close_log();
	}
}

/* When the spare cannot be made (here: a directory in its way), rotations
 * create segments as before and no write fails. */
static void test_spare_impossible(void)
{
	reset(dir);
	forget_written();
	char p[700];
	CHECK(mkdir(dir, 0755) == 0, "mkdir");
	file_path(p, sizeof(p), dir, "spare.tmp");
	CHECK(mkdir(p, 0755) == 0, "mkdir spare.tmp");
	logging_level = LOG_LEVEL_ERROR; /* the expected warning */
	if (!open_log(dir))
		return;
	append_records(20);
	for (int r = 0; r < 3; r++)
		rotate(0, NULL);
	struct log_stats s = stats();
	CHECK(s.segments_from_spare == 0 && s.spare_bytes_zeroed == 0,
	      "a spare was used: %lu segments, %lu bytes", (unsigned long)s.segments_from_spare,
	      (unsigned long)s.spare_bytes_zeroed);
	CHECK(s.segments == 4, "%lu segments", (unsigned long)s.segments);
	CHECK(atomic_load(&ack_errors) == 0, "%lu appends failed", atomic_load(&ack_errors));
	close_log();
	if (open_log(dir)) {
		check_replay(0, "rotations without a spare");
		close_log();
	}
	logging_level = LOG_LEVEL_WARN;
	rmdir(p);
}

/* Under `fsync` and `write`, the preallocated tail of the segment written is
 * zeroed ahead of the commits (log.h): commits made while the zeroing runs
 * (some waiting for a zeroing write of their blocks) all recover, and once
 * it is done no unwritten extent is left past the gap ahead of the last
 * commit; a reopened log zeroes the tail it preallocated again. */
static void test_tail_zeroed_ahead(enum log_durability d)
{
	durability = d;
	reset(dir);
	forget_written();
	segment_size = 16u << 20;
	value_min = 20000;
	value_span = 20001;
	char p[700];
	for (int round = 0; round < 2; round++) {
		if (!open_log(dir))
			break;
		if (round == 1)
			check_replay(0, "after zeroing ahead");
		/* One step past the gap first: its commits there wait for the
		 * zeroing writes submitted when the segment was made. */
		append_records(round == 0 ? 100 : 25);
		for (int step = 0; step < 12; step++)
			append_records(25); /* ~0.75 MB a step, racing the zeroing */
		uint64_t zeroed = wait_tail_zeroed();
		uint64_t end = written[n_written - 1].pos.offset + written[n_written - 1].pos.length;
		seg_path(p, sizeof(p), dir, written[n_written - 1].pos.segment);
		printf("zeroing ahead (%s), round %d: %lu bytes zeroed, last commit ends at %lu\n",
		       d == LOG_DURABILITY_FSYNC ? "fsync" : "write", round, (unsigned long)zeroed,
		       (unsigned long)end);
		CHECK(zeroed > 0, "round %d: no zeros written ahead of the commits", round);
		CHECK(unwritten_past(p, end + (2u << 20) + COMMIT_MAX) != 1,
		      "round %d: unwritten extents left past the gap ahead of the commits", round);
		CHECK(atomic_load(&ack_errors) == 0, "%lu appends failed", atomic_load(&ack_errors));
		close_log();
	}
	if (open_log(dir)) {
		check_replay(0, "after zeroing ahead of a reopened log");
		close_log();
	}
	segment_size = SEGMENT_SIZE;
	value_min = 1000;
	value_span = 2001;
	durability = LOG_DURABILITY_FSYNC;
}

/* Far ahead of the commits the zeroing is paced (log.h): on a loop that has
 * gone idle after a few appends, its timer carries it on to the segment's
 * end. */
static void test_tail_zeroed_ahead_paced(enum log_durability d)
{
	const char *name = d == LOG_DURABILITY_FSYNC ? "fsync" : "write";
	durability = d;
	reset(dir);
	forget_written();
	segment_size = 32u << 20; /* most of it more than LOG_AHEAD_NEAR ahead */
	char p[700];
	if (open_log(dir)) {
		append_records(3);
		uint64_t end = written[n_written - 1].pos.offset + written[n_written - 1].pos.length;
		seg_path(p, sizeof(p), dir, written[n_written - 1].pos.segment);
		/* 10 s: paced, 30 MiB take about 0.1 s here; without the timer
		 * only the once-a-second sync (under write) would move it on. */
		int unwritten = wait_written_past(p, end + (2u << 20), 10);
		uint64_t zeroed = stats().tail_bytes_zeroed;
		printf("paced zeroing ahead (%s): %lu bytes zeroed, last commit ends at %lu\n", name,
		       (unsigned long)zeroed, (unsigned long)end);
		CHECK(unwritten != 1,
		      "%s: unwritten extents left past the gap ahead of the commits after 10 s"
		      " (%lu bytes zeroed): the paced zeroing stopped on an idle loop",
		      name, (unsigned long)zeroed);
		close_log();
		if (open_log(dir)) {
			check_replay(0, "after paced zeroing ahead");
			close_log();
		}
	}
	segment_size = SEGMENT_SIZE;
	durability = LOG_DURABILITY_FSYNC;
}

/* Closing while a large spare is being zeroed waits for its writes (log_busy)
 * and deletes the unfinished file. */
static void test_close_while_zeroing(void)
{
	reset(dir);
	forget_written();
	segment_size = 64u << 20; /* zeroing takes a while */
	value_min = 60000;
	if (open_log(dir)) {
		/* Stopped in the step that started the zeroing: its first writes
		 * are in flight. */
		struct fill_args a = {.until_offset = segment_size / 2 + COMMIT_MAX,
		                      .stop_after = true};
		fill(&a);
		CHECK(a.zeroing_at_stop, "no spare being zeroed past half a segment");
		close_log();
		CHECK(!exists(dir, "spare.ready"), "a spare stopped while zeroing became ready");
		printf("closed while zeroing a 64 MiB spare\n");
		CHECK(!exists(dir, "spare.tmp"), "spare.tmp left after close");
		if (open_log(dir)) {
			check_replay(0, "after closing while zeroing");
			close_log();
		}
	}
	segment_size = SEGMENT_SIZE;
	value_min = 1000;
}

int main(void)
{
	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL)
		return 77;
	snprintf(dir, sizeof(dir), "%s/ringkv-test-log-spare-%d", tmp, (int)getpid());
	pool = test_pool(1, 64, 50, 256);

	test_rotation_takes_spare();
	test_write_durability_spare_not_zeroed();
	test_write_durability_recycled_not_zeroed();
	test_recycled_segment();
	test_spare_waits_for_recycling();
	test_stale_tail_of_sealed_segment();
	test_spare_impossible();
	test_tail_zeroed_ahead(LOG_DURABILITY_FSYNC);
	test_tail_zeroed_ahead(LOG_DURABILITY_WRITE);
	test_tail_zeroed_ahead_paced(LOG_DURABILITY_FSYNC);
	test_tail_zeroed_ahead_paced(LOG_DURABILITY_WRITE);
	test_close_while_zeroing();

	pool_stop(pool);
	reset(dir);
	forget_replayed();
	forget_written();
	free(replayed);
	free(written);
	return test_result();
}
