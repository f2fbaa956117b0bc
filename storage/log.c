/* log: see log.h for the write path, error handling and recovery; format.h
 * for the bytes on disk.
 *
 * Blocking calls on the loop, and why they are acceptable: creating a segment
 * (open, fallocate, fsync of the directory; or a rename of the spare and the
 * fsync: once per segment_size bytes written), creating the spare (open,
 * fallocate) and renaming it when it is ready (each once per segment), and
 * deleting a segment (close, unlink or a rename: once per GC'd segment).  All
 * segment data, headers included, and the spare's zeros are written through
 * io_uring: a segment's header block is the first block of its first commit.
 */
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "service/runtime/logging.h"
#include "storage/fsutil.h"

#define LOG_COMMIT_DEFAULT (1u << 20)
#define LOG_SCAN_CHUNK (1u << 20)          /* recovery reads at least this much at a time */
#define LOG_SYNC_PERIOD_NS 1000000000ULL   /* durability write: fdatasync this often */
#define LOG_GROUP_MIN (64u << 10)          /* while a commit is in flight, the next one waits
					      for it or for this many bytes */
#define LOG_READ_BUCKETS 4096              /* hash of in-flight reads, by first block */
#define LOG_SPARE_CHUNK    (1u << 20)        /* bytes per zeroing write of the spare */
#define LOG_SPARE_WRITES   2                 /* zeroing writes in flight at most */
#define LOG_AHEAD_GAP      (1u << 20)        /* zeroing ahead starts this far past the
						 last commit */
#define LOG_AHEAD_PACE_NS  2000000ULL        /* zeroing ahead far from the commits: one
						 chunk at a time, at most one per 2 ms
						 (512 MiB/s) */
#define LOG_AHEAD_NEAR     (4u << 20)        /* ... at full speed while the commits are
						 closer than this to the zeroed bytes */
#define LOG_AHEAD_BUSY     (128u << 10)      /* durability write: commits in flight that
						 pause zeroing ahead (a bandwidth-bound writer
						 would pay for the zeros twice; reads in flight
						 pause it too) */
#define LOG_SPARE_TMP      "spare.tmp"       /* the spare while it is prepared */
#define LOG_SPARE_READY    "spare.ready"     /* the spare once every block is written */

struct segment {
	uint64_t id;
	int fd;               /* O_RDWR | O_DIRECT */
	uint64_t epoch;
	uint64_t first_lsn;
	uint64_t size;        /* file size, from its header */
	uint64_t fill;        /* bytes written or reserved by sealed commits */
	bool header_ok;       /* recovery: the header block decoded */
	bool unsynced;        /* durability write/none: written since its last fdatasync */
};

struct commit {
	struct px_op op;          /* the write */
	struct log *log;
	uint8_t *buf;             /* FMT_BLOCK-aligned; `cap` bytes */
	uint64_t cap;             /* buffer size */
	uint64_t limit;           /* commit may not grow past this (<= cap) */
	uint64_t used;            /* bytes filled (header block and records) */
	uint64_t size;            /* sealed size, multiple of FMT_BLOCK */
	struct segment *seg;      /* destination */
	uint64_t base;            /* file offset of buf[0] */
	uint64_t first_lsn, last_lsn;
	struct log_write *head, *tail; /* records' completions, in LSN order */
	unsigned n_records;
	int result;               /* 0, or -errno once written */
	bool submitted, finished;
	struct commit *next;      /* in-flight FIFO or free list */
};

/* One zeroing write of the spare: a slot that is reused chunk after chunk. */
struct spare_write {
	struct px_op op; /* the write */
	struct log *log;
	uint64_t offset; /* file offset still to write */
	uint32_t len;    /* bytes still to write there; 0 = slot free */
	bool inflight;   /* the write is on the ring */
};

/* Zeroing ahead (see log.h): the written segment's unwritten tail, zeroed
 * past the commits.  The slots are spare_writes with their own completion. */
struct log_ahead {
	struct segment *seg;  /* being zeroed, or NULL */
	struct segment *queued; /* to zero once the writes for the last one are back */
	uint64_t next;        /* offset of the next chunk to hand to a slot */
	unsigned inflight;    /* zeroing writes on the ring; each holds the px */
	uint64_t paced_at_ns; /* paced: no new write before this */
	struct px_timer timer; /* resumes a paced pump on an idle loop */
	struct spare_write writes[LOG_SPARE_WRITES];
};

/* The spare segment (see log.h): at most one ready file, and at most one
 * being zeroed while none is ready. */
struct log_spare {
	int ready_fd;         /* spare.ready (O_RDWR | O_DIRECT): the next rotation takes
	                         it; or -1 */
	bool ready_written;   /* its blocks are written (zeroed, or a recycled segment), so
	                         the segment made from it needs no zeroing ahead; under
	                         `write` a prepared spare is only preallocated */
	int fd;               /* spare.tmp being zeroed, or -1 */
	uint64_t next;        /* zeroing: offset of the next chunk to hand to a slot */
	unsigned inflight;    /* its fallocate, zeroing writes and fdatasync on the ring; each
	                         holds the px */
	bool alloc_submitted; /* the fallocate is on the ring (or done) */
	bool allocated;       /* ... and succeeded: zeroing may start */
	bool sync_submitted;  /* every write done and the fdatasync on the ring */
	bool cancelled;       /* a recycled segment became the spare: drop this one */
	int err;              /* first error while zeroing (the file is then dropped) */
	const char *err_step; /* what failed, for the warning */
	bool blocked;         /* preparing failed: no new try before the next rotation */
	bool warned;          /* a failure was logged and no spare has been used since */
	struct spare_write writes[LOG_SPARE_WRITES];
	struct px_op alloc_op; /* the fallocate before the first write */
	struct px_op sync_op; /* the fdatasync after the last write */
};

struct read_group {
	struct px_op op;
	struct log *log;
	uint64_t segment, start;  /* aligned file range [start, start + len) */
	uint32_t len;
	uint8_t *buf;
	struct log_read *waiters;
	struct read_group *next;
	int early_res;            /* result when it completes without an I/O */
};

struct log {
	struct px *px;
	struct log_config cfg;
	char dir[4096];
	int dir_fd;
	struct segment **segs;     /* sorted by id; the last one is written.  Each is its own
				      allocation: commits keep pointers to theirs */
	size_t n_segs, cap_segs;
	uint64_t next_lsn;
	uint64_t write_offset;     /* where the next commit goes in the last segment */
	struct commit *open;       /* accepting records, or NULL */
	struct commit *inflight, *inflight_tail; /* sealed, in LSN order */
	struct commit *free;       /* standard-size buffers for reuse */
	struct read_group *reads[LOG_READ_BUCKETS]; /* in flight, by read_bucket() */
	unsigned long n_reads;     /* read groups in flight */
	int fail_err;              /* a commit failed: later ones fail until rotation */
	bool stopped;              /* log_stop() called: appends refused */
	bool recycle_expected;     /* GC will delete a segment: the spare waits (spare_due) */
	uint64_t last_good_lsn;    /* last LSN of the newest commit that succeeded */
	struct px_hook hook;
	struct px_timer sync_timer;
	unsigned syncs_inflight;   /* fdatasyncs of this round still running */
	bool sync_failed;          /* one of them failed */
	uint64_t sync_target_lsn;  /* what this round makes durable */
	uint64_t synced_lsn;       /* durability write/none: every LSN <= this is durable */
	uint64_t written_since_sync;
	uint32_t read_align;       /* O_DIRECT read granularity: 512 where the file system
				      takes it, else FMT_BLOCK (probed at open) */
	struct log_spare spare;    /* the next segment's file, prepared in the background */
	struct log_ahead ahead;    /* the written segment's tail, zeroed ahead of commits */
	struct log_stats stats;
};

static inline uint64_t align_up(uint64_t v)
{
	return (v + FMT_BLOCK - 1) & ~(uint64_t)(FMT_BLOCK - 1);
}

static inline uint64_t align_down(uint64_t v)
{
	return v & ~(uint64_t)(FMT_BLOCK - 1);
}

static struct segment *last_segment(struct log *log)
{
	return log->n_segs ? log->segs[log->n_segs - 1] : NULL;
}

static struct segment *find_segment(struct log *log, uint64_t id)
{
	size_t lo = 0, hi = log->n_segs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (log->segs[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < log->n_segs && log->segs[lo]->id == id ? log->segs[lo] : NULL;
}

#define SEGMENT_NAME "%016" PRIx64 ".seg" /* a segment's file name, from its id */

static void segment_path(const struct log *log, uint64_t id, char *buf, size_t len)
{
	snprintf(buf, len, "%s/" SEGMENT_NAME, log->dir, id);
}

static void recount_bytes(struct log *log)
{
	log->stats.segments = log->n_segs;
	log->stats.log_bytes = 0;
	for (size_t i = 0; i < log->n_segs; i++)
		log->stats.log_bytes += log->segs[i]->fill;
}

/* ---- the spare segment ------------------------------------------------- */

/* The source of every zeroing write: never written, shared read-only by the
 * logs of every thread (not const, so it takes no room in the binary). */
static _Alignas(FMT_BLOCK) uint8_t spare_zeros[LOG_SPARE_CHUNK];

/* Logs why no spare could be prepared or used: once, until a spare is used. */
static void spare_warn(struct log *log, const char *step, int err)
{
	if (log->spare.warned)
		return;
	log->spare.warned = true;
	LOG_WARN("shard %u: cannot prepare or use the spare log segment in %s (%s: %s);"
	         " new segments are preallocated instead (their first writes are slower) until a"
	         " later rotation prepares one",
	         log->cfg.shard, log->dir, step, strerror(-err));
}

/* Closes and deletes the spare file `name` whose fd is *fd (then -1). */
static void spare_delete(struct log *log, int *fd, const char *name)
{
	close(*fd);
	*fd = -1;
	if (unlinkat(log->dir_fd, name, 0) != 0 && errno != ENOENT)
		LOG_WARN("shard %u: cannot delete %s/%s: %s; it is not part of the log: delete it"
		         " by hand",
		         log->cfg.shard, log->dir, name, strerror(errno));
}

/* Submits zeroing writes of fd for [*next, end) through the slots `writes`
 * (LOG_SPARE_WRITES of them), while fewer than `max` are in flight: a free
 * slot takes the next chunk, a slot with bytes left (a short write) is
 * resubmitted.  Each write counts in *inflight and holds the px.  Sets
 * *writing if any slot has a write in flight or to submit.  Returns true if
 * it submitted anything; without an SQE it stops, and the end-of-iteration
 * hook calls again. */
static bool zero_pump(struct log *log, int fd, struct spare_write *writes, uint64_t *next,
		      uint64_t end, unsigned max, unsigned *inflight, bool *writing)
{
	bool submitted = false;
	*writing = false;
	for (unsigned i = 0; i < LOG_SPARE_WRITES; i++) {
		struct spare_write *w = &writes[i];
		if (w->inflight) {
			*writing = true;
			continue;
		}
		if (w->len == 0 && *next < end && *inflight < max) {
			uint64_t left = end - *next;
			w->offset = *next;
			w->len = left < LOG_SPARE_CHUNK ? (uint32_t)left : LOG_SPARE_CHUNK;
			*next += w->len;
		}
		if (w->len == 0)
			continue;
		*writing = true;
		if (*inflight >= max)
			continue;
		struct io_uring_sqe *sqe = px_get_sqe(log->px, &w->op);
		if (sqe == NULL)
			return submitted;
		io_uring_prep_write(sqe, fd, spare_zeros, w->len, w->offset);
		w->inflight = true;
		(*inflight)++;
		px_hold(log->px);
		submitted = true;
	}
	return submitted;
}

/* Submits what zeroing spare.tmp needs next: its fallocate, then writes (at
 * most LOG_SPARE_WRITES on the ring), then one fdatasync.  After an error, log_stop or a
 * cancellation it deletes the file once none of its I/O is in flight.
 * Returns true if it submitted anything; without an SQE it stops, and the
 * end-of-iteration hook calls it again. */
static bool spare_pump(struct log *log)
{
	struct log_spare *sp = &log->spare;
	if (sp->fd < 0)
		return false;
	if (sp->err != 0 || sp->cancelled || log->stopped) {
		if (sp->inflight == 0) {
			if (sp->err != 0 && !sp->cancelled) {
				spare_warn(log, sp->err_step, sp->err);
				sp->blocked = true;
			}
			spare_delete(log, &sp->fd, LOG_SPARE_TMP);
		}
		return false;
	}
	if (!sp->alloc_submitted) {
		/* Through the ring, not posix_fallocate on the loop: allocating a
		 * segment's extents took up to 50 ms with the journal busy. */
		struct io_uring_sqe *sqe = px_get_sqe(log->px, &sp->alloc_op);
		if (sqe == NULL)
			return false;
		io_uring_prep_fallocate(sqe, sp->fd, 0, 0, (off_t)log->cfg.segment_size);
		sp->alloc_submitted = true;
		sp->inflight++;
		px_hold(log->px);
		return true;
	}
	if (!sp->allocated)
		return false;
	bool writing;
	bool submitted = zero_pump(log, sp->fd, sp->writes, &sp->next, log->cfg.segment_size,
				   LOG_SPARE_WRITES, &sp->inflight, &writing);
	if (!writing && !sp->sync_submitted) {
		struct io_uring_sqe *sqe = px_get_sqe(log->px, &sp->sync_op);
		if (sqe == NULL)
			return submitted;
		io_uring_prep_fsync(sqe, sp->fd, IORING_FSYNC_DATASYNC);
		sp->sync_submitted = true;
		sp->inflight++;
		px_hold(log->px);
		submitted = true;
	}
	return submitted;
}

static void spare_write_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct spare_write *w = container_of(op, struct spare_write, op);
	struct log *log = w->log;
	struct log_spare *sp = &log->spare;
	(void)flags;
	w->inflight = false;
	sp->inflight--;
	px_release(px);
	if (res <= 0) {
		if (sp->err == 0) {
			sp->err = res < 0 ? res : -EIO; /* a write that makes no progress */
			sp->err_step = "zeroing write";
		}
		w->len = 0;
	} else {
		/* a short write is resubmitted for the rest by spare_pump */
		w->offset += (uint64_t)res;
		w->len -= (uint32_t)res;
		log->stats.spare_bytes_zeroed += (uint64_t)res;
	}
	spare_pump(log);
}

static void spare_alloc_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct log *log = container_of(op, struct log, spare.alloc_op);
	struct log_spare *sp = &log->spare;
	(void)flags;
	sp->inflight--;
	px_release(px);
	if (res < 0 && sp->err == 0) {
		sp->err = res; /* ENOSPC: a full disk shows here, before any zeroing */
		sp->err_step = "preallocate";
	}
	sp->allocated = res >= 0;
	spare_pump(log);
}

static void spare_sync_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct log *log = container_of(op, struct log, spare.sync_op);
	struct log_spare *sp = &log->spare;
	(void)flags;
	sp->inflight--;
	px_release(px);
	if (sp->cancelled) {
		/* spare_pump deletes it */
	} else if (res < 0) {
		sp->err = res;
		sp->err_step = "fdatasync";
	} else if (renameat(log->dir_fd, LOG_SPARE_TMP, log->dir_fd, LOG_SPARE_READY) != 0) {
		sp->err = -errno;
		sp->err_step = "rename to " LOG_SPARE_READY;
	} else {
		/* No fsync of the directory: if the rename is lost, the next
		 * open deletes spare.tmp and prepares another. */
		sp->ready_fd = sp->fd;
		sp->ready_written = log->cfg.durability == LOG_DURABILITY_FSYNC; /* (zeroed) */
		sp->fd = -1;
		return;
	}
	spare_pump(log);
}

/* ---- zeroing ahead of the commits --------------------------------------- */

/* True if a zeroing write in flight overlaps [start, start + len) of `seg`:
 * a commit there waits for it (two writes in flight to one block have no
 * order). */
static bool ahead_overlaps(const struct log *log, const struct segment *seg, uint64_t start,
			   uint64_t len)
{
	const struct log_ahead *ah = &log->ahead;
	if (ah->seg != seg || ah->inflight == 0)
		return false;
	for (unsigned i = 0; i < LOG_SPARE_WRITES; i++) {
		const struct spare_write *w = &ah->writes[i];
		if (w->inflight && w->offset < start + len && start < w->offset + w->len)
			return true;
	}
	return false;
}

static void ahead_tick(struct px *px, struct px_timer *t);

/* Submits zeroing writes for the written segment's tail, never below where
 * the next commit goes plus LOG_AHEAD_GAP: LOG_SPARE_WRITES on the ring
 * while the commits are within LOG_AHEAD_NEAR of the zeroed bytes, else one
 * at a time, paced (see log.h).  Stops for good at the segment's end, after
 * a rotation, an error or log_stop.  Returns true if it submitted anything. */
static bool ahead_pump(struct log *log)
{
	struct log_ahead *ah = &log->ahead;
	if (ah->seg == NULL)
		return false;
	if (log->stopped || ah->seg != last_segment(log) || log->fail_err != 0) {
		if (ah->inflight > 0)
			return false;
		ah->seg = NULL;
		if (ah->queued == NULL || ah->queued != last_segment(log) || log->stopped)
			return false;
		ah->seg = ah->queued; /* a rotation came while the last one drained */
		ah->queued = NULL;
		ah->next = 0;
		for (unsigned i = 0; i < LOG_SPARE_WRITES; i++)
			ah->writes[i].len = 0;
	}
	if (log->cfg.durability != LOG_DURABILITY_FSYNC) {
		uint64_t busy = 0;
		for (const struct commit *c = log->inflight; c != NULL; c = c->next)
			busy += c->size;
		if (busy >= LOG_AHEAD_BUSY || log->n_reads > 0)
			return false; /* the end-of-iteration hook comes back */
	}
	uint64_t floor = (log->write_offset + LOG_AHEAD_GAP + LOG_SPARE_CHUNK - 1) &
			 ~(uint64_t)(LOG_SPARE_CHUNK - 1);
	if (ah->next < floor)
		ah->next = floor; /* the commits caught up: skip what they will write anyway */
	unsigned max = LOG_SPARE_WRITES;
	if (ah->next >= floor + LOG_AHEAD_NEAR) {
		uint64_t now = px_now_ns();
		if (ah->inflight > 0 || now < ah->paced_at_ns) {
			if (ah->inflight == 0 && !px_timer_armed(&ah->timer))
				px_timer_start(log->px, &ah->timer, ah->paced_at_ns - now, 0,
					       ahead_tick);
			return false;
		}
		ah->paced_at_ns = now + LOG_AHEAD_PACE_NS;
		max = 1;
	}
	bool writing;
	bool submitted = zero_pump(log, ah->seg->fd, ah->writes, &ah->next, ah->seg->size, max,
				   &ah->inflight, &writing);
	if (!writing)
		ah->seg = NULL; /* the whole tail is written */
	return submitted;
}

static void ahead_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	ahead_pump(container_of(t, struct log, ahead.timer));
}

static void ahead_write_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct spare_write *w = container_of(op, struct spare_write, op);
	struct log *log = w->log;
	struct log_ahead *ah = &log->ahead;
	(void)flags;
	w->inflight = false;
	ah->inflight--;
	px_release(px);
	if (res <= 0) {
		/* Only speed is lost: commits still write the unwritten blocks
		 * (the next ones, for ENOSPC, fail on their own). */
		for (unsigned i = 0; i < LOG_SPARE_WRITES; i++)
			ah->writes[i].len = ah->writes[i].inflight ? ah->writes[i].len : 0;
		ah->next = UINT64_MAX; /* no more chunks for this segment */
		if (!log->spare.warned) {
			log->spare.warned = true;
			LOG_WARN("shard %u: cannot write zeros ahead of the log's commits in %s (%s);"
			         " commits go on, at the speed of a preallocated file",
			         log->cfg.shard, log->dir, strerror(res < 0 ? -res : EIO));
		}
	} else {
		/* a short write is resubmitted for the rest by ahead_pump */
		w->offset += (uint64_t)res;
		w->len -= (uint32_t)res;
		log->stats.tail_bytes_zeroed += (uint64_t)res;
	}
	ahead_pump(log);
}

/* Starts zeroing the tail of `seg`, the segment now written, whose blocks past
 * its commits are unwritten extents (created preallocated, or cut and
 * preallocated again at open).  Not under `none` (see log.h). */
static void ahead_start(struct log *log, struct segment *seg)
{
	struct log_ahead *ah = &log->ahead;
	if (log->cfg.durability == LOG_DURABILITY_NONE)
		return;
	if (ah->seg != NULL) {
		ah->queued = seg; /* once the last segment's writes are back */
		return;
	}
	ah->seg = seg;
	ah->next = 0;
	for (unsigned i = 0; i < LOG_SPARE_WRITES; i++)
		ah->writes[i].len = 0;
	ahead_pump(log);
}

/* True once the segment being written is far enough along that its spare
 * should be prepared: half full, or 7/8 while GC is about to delete a
 * segment that can become the spare instead (log.h, log_expect_recycled). */
static bool spare_due(const struct log *log)
{
	uint64_t at = log->recycle_expected ? log->cfg.segment_size / 8 * 7
					    : log->cfg.segment_size / 2;
	return log->write_offset >= at;
}

void log_expect_recycled(struct log *log, bool expected)
{
	log->recycle_expected = expected;
}

/* Starts preparing a spare if none is ready or being prepared (and none
 * failed since the last rotation): creates spare.tmp (blocking, but only a
 * file creation), then preallocates and zeroes it through the ring. */
static void spare_start(struct log *log)
{
	struct log_spare *sp = &log->spare;
	if (sp->ready_fd >= 0 || sp->fd >= 0 || sp->blocked || log->stopped)
		return;
	int fd = openat(log->dir_fd, LOG_SPARE_TMP,
	                O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0644);
	if (fd < 0) {
		spare_warn(log, "create", -errno);
		sp->blocked = true;
		return;
	}
	sp->fd = fd;
	/* Only RWF_DSYNC commits pay per write for unwritten extents; for the
	 * others the zeroing would double the bytes written (see log.h). */
	sp->next = log->cfg.durability == LOG_DURABILITY_FSYNC ? 0 : log->cfg.segment_size;
	sp->alloc_submitted = false;
	sp->allocated = false;
	sp->sync_submitted = false;
	sp->cancelled = false;
	sp->err = 0;
	for (unsigned i = 0; i < LOG_SPARE_WRITES; i++)
		sp->writes[i].len = 0;
	spare_pump(log);
}

/* Renames the ready spare to segment `id`'s file and hands over its fd; sets
 * *written if its blocks are all written.  Returns the fd, or -errno
 * (-ENOENT: no spare is ready). */
static int spare_take(struct log *log, uint64_t id, bool *written)
{
	struct log_spare *sp = &log->spare;
	if (sp->ready_fd < 0)
		return -ENOENT;
	char name[32];
	snprintf(name, sizeof(name), SEGMENT_NAME, id);
	if (renameat2(log->dir_fd, LOG_SPARE_READY, log->dir_fd, name, RENAME_NOREPLACE) != 0) {
		int err = -errno;
		spare_warn(log, "rename to the segment's name", err);
		spare_delete(log, &sp->ready_fd, LOG_SPARE_READY);
		return err;
	}
	int fd = sp->ready_fd;
	*written = sp->ready_written;
	sp->ready_fd = -1;
	sp->warned = false;
	log->stats.segments_from_spare++;
	return fd;
}

/* Keeps deleted segment `seg` as the ready spare when none is ready and the
 * file has the full segment size; a spare being zeroed is then dropped (the
 * recycled file costs no writes).  Returns true if it did: the spare now
 * owns seg's fd. */
static bool spare_recycle(struct log *log, struct segment *seg)
{
	struct log_spare *sp = &log->spare;
	struct stat st;
	if (sp->ready_fd >= 0 || fstat(seg->fd, &st) != 0 ||
	    (uint64_t)st.st_size != log->cfg.segment_size)
		return false;
	char name[32];
	snprintf(name, sizeof(name), SEGMENT_NAME, seg->id);
	/* Not fsynced, as an unlink is not: a segment that reappears after a
	 * crash is one GC had already emptied. */
	if (renameat(log->dir_fd, name, log->dir_fd, LOG_SPARE_READY) != 0)
		return false;
	sp->ready_fd = seg->fd;
	sp->ready_written = true; /* up to where its last writer stopped: see log.h */
	log->stats.segments_recycled++;
	if (sp->fd >= 0) {
		sp->cancelled = true;
		spare_pump(log);
	}
	return true;
}

/* At open: deletes a spare.tmp left by a run that stopped while preparing it,
 * and takes a spare.ready of the configured segment size as the ready spare
 * (its rename followed its fdatasync, or it is a recycled segment). */
static void spare_load(struct log *log)
{
	struct log_spare *sp = &log->spare;
	if (unlinkat(log->dir_fd, LOG_SPARE_TMP, 0) != 0 && errno != ENOENT)
		LOG_WARN("shard %u: cannot delete %s/" LOG_SPARE_TMP ": %s; it is not part of the"
		         " log: delete it by hand",
		         log->cfg.shard, log->dir, strerror(errno));
	int fd = openat(log->dir_fd, LOG_SPARE_READY, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return; /* none (or unusable: the next rotation prepares another) */
	struct stat st;
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != log->cfg.segment_size)
		spare_delete(log, &fd, LOG_SPARE_READY); /* made for another segment_size */
	else {
		sp->ready_fd = fd;
		/* Zeroed or recycled under `fsync`; under `write` it may be one
		 * only preallocated, so its segment is zeroed ahead to be sure. */
		sp->ready_written = log->cfg.durability == LOG_DURABILITY_FSYNC;
	}
}

/* ---- segments ---------------------------------------------------------- */

/* Creates the next segment, starting at LSN log->next_lsn: the ready spare
 * renamed, or else a new preallocated file.  Its header is written by its
 * first commit.  Returns 0 or -errno. */
static int segment_create(struct log *log)
{
	struct segment *prev = last_segment(log);
	uint64_t id = prev ? prev->id + 1 : 1;
	char path[4200];
	segment_path(log, id, path, sizeof(path));
	if (log->n_segs == log->cap_segs) {
		size_t cap = log->cap_segs ? log->cap_segs * 2 : 16;
		struct segment **s = realloc(log->segs, cap * sizeof(*s));
		if (s == NULL)
			return -ENOMEM;
		log->segs = s;
		log->cap_segs = cap;
	}
	struct segment *seg = malloc(sizeof(*seg));
	if (seg == NULL)
		return -ENOMEM;
	bool written = false;
	int ret, fd = spare_take(log, id, &written);
	bool preallocated = fd < 0 || !written;
	log->ahead.queued = NULL;
	if (fd < 0) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0644);
		if (fd < 0) {
			free(seg);
			return -errno;
		}
		ret = posix_fallocate(fd, 0, (off_t)log->cfg.segment_size);
		if (ret != 0) {
			close(fd);
			unlink(path);
			free(seg);
			return -ret;
		}
	}
	if (fsync(log->dir_fd) != 0) {
		ret = -errno;
		close(fd);
		unlink(path);
		free(seg);
		return ret;
	}
	uint64_t epoch;
	if (getrandom(&epoch, sizeof(epoch), 0) != sizeof(epoch))
		epoch = (uint64_t)px_now_ns() * 0x9E3779B97F4A7C15ULL ^ id;
	log->segs[log->n_segs++] = seg;
	*seg = (struct segment){.id = id,
						    .fd = fd,
						    .epoch = epoch,
						    .first_lsn = log->next_lsn,
						    .size = log->cfg.segment_size,
						    .fill = 0,
						    .header_ok = true};
	log->write_offset = 0;
	log->spare.blocked = false; /* a failed spare is tried again for the next rotation */
	recount_bytes(log);
	if (preallocated)
		ahead_start(log, seg);
	return 0;
}

/* ---- write path -------------------------------------------------------- */

static void commit_complete(struct px *px, struct px_op *op, int res, unsigned flags);

static void commit_release(struct log *log, struct commit *c)
{
	if (c->cap == log->cfg.commit_max) {
		c->next = log->free;
		log->free = c;
	} else {
		free(c->buf);
		free(c);
	}
}

/* Opens a commit able to take a record of `rsz` bytes (and its PAD). */
static int commit_open(struct log *log, uint64_t rsz)
{
	struct segment *seg = last_segment(log);
	uint64_t header = log->write_offset == 0 ? FMT_SEG_HEADER_SIZE : 0;
	if (seg == NULL || log->write_offset + header + rsz + FMT_RECORD_HEADER > seg->size) {
		int ret = segment_create(log);
		if (ret < 0)
			return ret;
		seg = last_segment(log);
		header = FMT_SEG_HEADER_SIZE;
	}
	uint64_t need = align_up(header + rsz + FMT_RECORD_HEADER);
	uint64_t limit = need > log->cfg.commit_max ? need : log->cfg.commit_max;
	if (limit > seg->size - log->write_offset)
		limit = seg->size - log->write_offset;

	struct commit *c = NULL;
	if (limit <= log->cfg.commit_max && log->free != NULL) {
		c = log->free;
		log->free = c->next;
	} else {
		uint64_t cap = limit <= log->cfg.commit_max ? log->cfg.commit_max : limit;
		c = calloc(1, sizeof(*c));
		if (c == NULL || posix_memalign((void **)&c->buf, FMT_BLOCK, cap) != 0) {
			free(c);
			return -ENOMEM;
		}
		c->cap = cap;
	}
	uint8_t *buf = c->buf;
	uint64_t cap = c->cap;
	memset(c, 0, sizeof(*c));
	c->buf = buf;
	c->cap = cap;
	c->op.complete = commit_complete;
	c->log = log;
	c->limit = limit;
	c->seg = seg;
	c->base = log->write_offset;
	c->first_lsn = log->next_lsn;
	if (header) {
		struct fmt_segment_header h = {.version = FMT_VERSION,
					       .shard = log->cfg.shard,
					       .id = seg->id,
					       .epoch = seg->epoch,
					       .first_lsn = seg->first_lsn,
					       .size = seg->size};
		fmt_encode_segment_header(c->buf, &h);
		c->used = FMT_SEG_HEADER_SIZE;
	}
	log->open = c;
	return 0;
}

static void commit_submit(struct log *log, struct commit *c)
{
	if (ahead_overlaps(log, c->seg, c->base, c->size))
		return; /* after that zeroing write: retried by the end-of-iteration hook */
	struct io_uring_sqe *sqe = px_get_sqe(log->px, &c->op);
	if (sqe == NULL)
		return; /* retried by the end-of-iteration hook */
	io_uring_prep_write(sqe, c->seg->fd, c->buf, (unsigned)c->size, c->base);
	if (log->cfg.durability == LOG_DURABILITY_FSYNC)
		sqe->rw_flags = RWF_DSYNC;
	c->submitted = true;
}

/* Seals the open commit with its PAD and sends it to the disk. */
static void commit_seal(struct log *log)
{
	struct commit *c = log->open;
	log->open = NULL;
	c->size = fmt_encode_pad(c->buf, c->used, (uint32_t)c->seg->epoch, c->last_lsn);
	log->write_offset = c->base + c->size;
	c->seg->fill = log->write_offset;
	c->next = NULL;
	if (log->inflight_tail)
		log->inflight_tail->next = c;
	else
		log->inflight = c;
	log->inflight_tail = c;
	px_hold(log->px);
	recount_bytes(log);
	commit_submit(log, c);
	if (spare_due(log))
		spare_start(log);
}

/* Fails every record of the open commit (after a write error). */
static void fail_open_commit(struct log *log, int err)
{
	struct commit *c = log->open;
	if (c == NULL)
		return;
	log->open = NULL;
	log->next_lsn = c->first_lsn;
	for (struct log_write *w = c->head, *next; w != NULL; w = next) {
		next = w->next;
		w->done(w, err);
	}
	commit_release(log, c);
}

/* Pops finished commits in LSN order and runs their records' callbacks. */
static void complete_in_order(struct log *log)
{
	while (log->inflight != NULL && log->inflight->finished) {
		struct commit *c = log->inflight;
		log->inflight = c->next;
		if (log->inflight == NULL)
			log->inflight_tail = NULL;
		int err = c->result;
		if (err == 0 && log->fail_err != 0)
			err = log->fail_err; /* written, but after a hole: never acknowledged */
		if (err != 0 && log->fail_err == 0) {
			log->fail_err = err;
			LOG_ERROR("shard %u: log write of %" PRIu64 " bytes at segment %" PRIu64
				  " offset %" PRIu64 " failed: %s; failing the writes in flight and"
				  " continuing in a new segment",
				  log->cfg.shard, c->size, c->seg->id, c->base, strerror(-err));
		}
		if (err == 0) {
			log->last_good_lsn = c->last_lsn;
			log->stats.commits++;
			log->stats.records += c->n_records;
			log->stats.bytes_written += c->size;
			log->written_since_sync += c->size;
			if (log->cfg.durability == LOG_DURABILITY_FSYNC)
				log->stats.fsyncs++;
			else
				c->seg->unsynced = true;
		} else {
			log->stats.write_errors++;
		}
		for (struct log_write *w = c->head, *next; w != NULL; w = next) {
			next = w->next;
			w->done(w, err);
		}
		px_release(log->px);
		commit_release(log, c);
	}
	if (log->fail_err != 0 && log->inflight == NULL) {
		/* Everything in flight is settled: continue after the last good
		 * commit, in a fresh segment, so no hole is ever followed by data. */
		fail_open_commit(log, log->fail_err);
		log->next_lsn = log->last_good_lsn + 1;
		log->write_offset = log->cfg.segment_size; /* forces a new segment */
		log->fail_err = 0;
	}
}

static void commit_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct commit *c = container_of(op, struct commit, op);
	(void)px;
	(void)flags;
	if (res >= 0 && (uint64_t)res != c->size)
		res = -ENOSPC; /* a short O_DIRECT write: the device ran out of room */
	c->result = res < 0 ? res : 0;
	c->finished = true;
	complete_in_order(c->log);
}

int log_append(struct log *log, const struct fmt_record *rec, struct log_write *w)
{
	if (rec->type != FMT_PUT && rec->type != FMT_DELETE && rec->type != FMT_DROP)
		return -EINVAL;
	if (log->stopped)
		return -ESHUTDOWN;
	if (log->fail_err != 0)
		return log->fail_err;
	uint64_t rsz = fmt_record_size(rec->key_len, rec->value_len);
	if (rec->key_len > FMT_KEY_MAX || rec->value_len > FMT_VALUE_MAX ||
	    FMT_SEG_HEADER_SIZE + rsz + FMT_RECORD_HEADER > log->cfg.segment_size)
		return -E2BIG;
	struct commit *c = log->open;
	if (c != NULL && c->used + rsz + FMT_RECORD_HEADER > c->limit) {
		commit_seal(log);
		c = NULL;
	}
	if (c == NULL) {
		int ret = commit_open(log, rsz);
		if (ret < 0)
			return ret;
		c = log->open;
	}
	struct fmt_record r = *rec;
	r.lsn = log->next_lsn++;
	fmt_encode_record(c->buf + c->used, (uint32_t)c->seg->epoch, &r);
	w->pos = (struct log_pos){
		.segment = c->seg->id, .offset = c->base + c->used, .length = (uint32_t)rsz, .lsn = r.lsn};
	w->next = NULL;
	if (c->tail)
		c->tail->next = w;
	else
		c->head = w;
	c->tail = w;
	c->used += rsz;
	c->last_lsn = r.lsn;
	c->n_records++;
	return 0;
}

/* End of iteration: seal the open commit, retry unsubmitted ones. */
static bool log_hook(struct px *px, struct px_hook *hook)
{
	struct log *log = container_of(hook, struct log, hook);
	(void)px;
	bool work = false;
	if (log->open != NULL && log->open->n_records > 0 &&
	    (log->inflight == NULL || log->open->used >= LOG_GROUP_MIN)) {
		commit_seal(log);
		work = true;
	}
	for (struct commit *c = log->inflight; c != NULL; c = c->next)
		if (!c->submitted) {
			commit_submit(log, c);
			work |= c->submitted; /* (one waiting for a zeroing write is no work) */
		}
	if (spare_pump(log))
		work = true;
	if (ahead_pump(log))
		work = true;
	return work;
}

/* durability write/none: once a second every segment written since its last
 * fdatasync is synced (usually one; two after a rotation).  When the whole
 * round succeeds, everything up to the LSN written when it began is durable. */
struct sync_op {
	struct px_op op;
	struct log *log;
};

static void sync_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct sync_op *so = container_of(op, struct sync_op, op);
	struct log *log = so->log;
	(void)flags;
	free(so);
	px_release(px);
	if (res < 0) {
		log->sync_failed = true;
		LOG_ERROR("shard %u: fdatasync of the log failed: %s", log->cfg.shard,
			  strerror(-res));
	} else {
		log->stats.fsyncs++;
	}
	if (--log->syncs_inflight == 0 && !log->sync_failed)
		log->synced_lsn = log->sync_target_lsn;
}

static void sync_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	log_sync_now(container_of(t, struct log, sync_timer));
}

void log_sync_now(struct log *log)
{
	struct px *px = log->px;
	if (log->cfg.durability == LOG_DURABILITY_FSYNC || log->syncs_inflight > 0 ||
	    log->written_since_sync == 0)
		return;
	log->sync_target_lsn = log->last_good_lsn;
	log->sync_failed = false;
	log->written_since_sync = 0;
	for (size_t i = 0; i < log->n_segs; i++) {
		struct segment *seg = log->segs[i];
		if (!seg->unsynced)
			continue;
		struct sync_op *so = malloc(sizeof(*so));
		struct io_uring_sqe *sqe = so ? px_get_sqe(px, &so->op) : NULL;
		if (sqe == NULL) {
			free(so);
			log->sync_failed = true; /* not this round: the next tick retries */
			log->written_since_sync = 1;
			break;
		}
		so->op.complete = sync_complete;
		so->log = log;
		io_uring_prep_fsync(sqe, seg->fd, IORING_FSYNC_DATASYNC);
		seg->unsynced = false;
		log->syncs_inflight++;
		px_hold(px);
	}
	if (log->syncs_inflight == 0 && !log->sync_failed)
		log->synced_lsn = log->sync_target_lsn;
}

/* ---- reads ------------------------------------------------------------- */

/* The bucket of the in-flight reads that start at `start` in `segment`.
 * Reads merge only when they start at the same aligned offset, so a lookup
 * is one short chain however many reads are in flight. */
static struct read_group **read_bucket(struct log *log, uint64_t segment, uint64_t start)
{
	uint64_t h = (segment * 0x9E3779B97F4A7C15ULL) ^ (start / 512);
	return &log->reads[(h ^ (h >> 29)) & (LOG_READ_BUCKETS - 1)];
}

static void read_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct read_group *g = container_of(op, struct read_group, op);
	struct log *log = g->log;
	(void)flags;
	for (struct read_group **pp = read_bucket(log, g->segment, g->start); *pp != NULL;
	     pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	log->n_reads--;
	struct segment *seg = find_segment(log, g->segment);
	uint32_t epoch32 = seg ? (uint32_t)seg->epoch : 0;
	for (struct log_read *r = g->waiters, *next; r != NULL; r = next) {
		next = r->next;
		struct fmt_record rec;
		int err = 0;
		if (res == -EAGAIN) {
			err = -EAGAIN; /* never reached the kernel: the caller retries */
		} else if (res < 0) {
			err = -EIO;
		} else if (seg == NULL) {
			err = -ENOENT;
		} else {
			uint64_t at = r->pos.offset - g->start;
			uint64_t avail = (uint64_t)res > at ? (uint64_t)res - at : 0;
			if (fmt_decode_record(g->buf + at, avail, epoch32, &rec) != FMT_OK ||
			    rec.type != FMT_PUT || rec.lsn != r->pos.lsn ||
			    rec.key_len != r->key_len || memcmp(rec.key, r->key, r->key_len) != 0)
				err = -EBADMSG;
		}
		if (err != 0 && err != -EAGAIN) {
			log->stats.read_errors++;
			LOG_ERROR("shard %u: reading the record at segment %" PRIu64 " offset %" PRIu64
				  " (LSN %" PRIu64 "): %s",
				  log->cfg.shard, g->segment, r->pos.offset, r->pos.lsn,
				  res < 0 ? strerror(-res) : err == -ENOENT ? "segment deleted"
									   : "record fails its checks");
		}
		r->done(r, err, err == 0 ? &rec : NULL);
	}
	px_release(px);
	free(g->buf);
	free(g);
}

/* Completes a read group that never reached the kernel, on a later
 * iteration (log_read never runs done itself). */
static void read_complete_later(void *arg)
{
	struct read_group *g = arg;
	read_complete(g->log->px, &g->op, g->early_res, 0);
}

static void read_fail_later(void *arg)
{
	struct log_read *r = arg;
	r->done(r, -EAGAIN, NULL);
}

void log_read(struct log *log, struct log_read *r)
{
	/* A record is read in the smallest aligned span that holds it: with
	 * 512-byte alignment a 4 KiB value is one 4.5 KiB read, not 8 KiB. */
	uint64_t mask = log->read_align - 1;
	uint64_t start = r->pos.offset & ~mask;
	uint64_t end = (r->pos.offset + r->pos.length + mask) & ~mask;
	r->next = NULL;
	struct read_group **bucket = read_bucket(log, r->pos.segment, start);
	for (struct read_group *g = *bucket; g != NULL; g = g->next)
		if (g->segment == r->pos.segment && g->start == start && g->start + g->len >= end) {
			r->next = g->waiters;
			g->waiters = r;
			log->stats.reads_merged++;
			return;
		}
	struct segment *seg = find_segment(log, r->pos.segment);
	struct read_group *g = calloc(1, sizeof(*g));
	if (g == NULL || posix_memalign((void **)&g->buf, FMT_BLOCK, end - start) != 0) {
		free(g);
		px_send(log->px, log->px->id, read_fail_later, r);
		return;
	}
	g->op.complete = read_complete;
	g->log = log;
	g->segment = r->pos.segment;
	g->start = start;
	g->len = (uint32_t)(end - start);
	g->waiters = r;
	struct io_uring_sqe *sqe = seg ? px_get_sqe(log->px, &g->op) : NULL;
	if (sqe == NULL) {
		/* An unknown segment (deleted by GC) or no SQE: complete on the next
		 * iteration through the same path as an I/O result. */
		g->next = *bucket;
		*bucket = g;
		log->n_reads++;
		px_hold(log->px);
		g->early_res = seg == NULL ? 0 : -EAGAIN; /* read_complete: -ENOENT / retry */
		px_send(log->px, log->px->id, read_complete_later, g);
		return;
	}
	io_uring_prep_read(sqe, seg->fd, g->buf, g->len, start);
	g->next = *bucket;
	*bucket = g;
	log->n_reads++;
	px_hold(log->px);
	log->stats.reads++;
}

/* ---- recovery ---------------------------------------------------------- */

/* A window onto one segment file, read with blocking O_DIRECT preads. */
struct scan_window {
	int fd;
	uint8_t *buf;     /* FMT_BLOCK-aligned, `cap` bytes */
	uint64_t cap;
	uint64_t off;     /* file offset of buf[0] */
	uint64_t len;     /* valid bytes */
	uint64_t end;     /* readable limit (the segment's size) */
};

/* Makes [at, at + n) readable in the window, which then starts at or before
 * `keep` (<= at).  Returns 0, -ENODATA past the end, or -errno. */
static int window_ensure(struct scan_window *w, uint64_t keep, uint64_t at, uint64_t n)
{
	if (at >= w->off && at + n <= w->off + w->len)
		return 0;
	if (at + n > w->end)
		return -ENODATA;
	uint64_t start = align_down(keep);
	uint64_t want = align_up(at + n) - start;
	if (want < LOG_SCAN_CHUNK)
		want = LOG_SCAN_CHUNK;
	if (start + want > w->end)
		want = w->end - start;
	if (want > w->cap) {
		uint8_t *b;
		if (posix_memalign((void **)&b, FMT_BLOCK, want) != 0)
			return -ENOMEM;
		free(w->buf);
		w->buf = b;
		w->cap = want;
	}
	uint64_t got = 0;
	while (got < want) {
		ssize_t r = pread(w->fd, w->buf + got, want - got, (off_t)(start + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (uint64_t)r;
	}
	w->off = start;
	w->len = got;
	return at + n <= w->off + w->len ? 0 : -ENODATA;
}

struct recovery {
	uint64_t from_lsn;
	log_replay_fn replay;
	void *arg;
	uint64_t next_lsn;        /* LSN the next committed record must carry */
	uint64_t replayed;        /* records handed to replay */
	uint64_t *pending;        /* offsets of the current commit's records */
	size_t n_pending, cap_pending;
};

/* Scans `seg` from its first commit, replaying complete commits.  Sets *end
 * to the offset where the valid commits end and *torn to whether the scan
 * stopped at something other than zeroes on a commit boundary (a torn commit,
 * a corrupt record, an LSN gap).  Returns 0 or -errno (message in err). */
static int scan_segment(struct recovery *rc, struct segment *seg, uint64_t *end, bool *torn,
			char *err, size_t errlen)
{
	struct scan_window w = {.fd = seg->fd, .end = seg->size};
	uint32_t epoch32 = (uint32_t)seg->epoch;
	uint64_t commit = FMT_SEG_HEADER_SIZE, pos = commit, lsn = rc->next_lsn;
	int ret = 0;
	*torn = false;
	rc->n_pending = 0;
	for (;;) {
		struct fmt_record rec;
		ret = window_ensure(&w, commit, pos, FMT_RECORD_HEADER);
		if (ret == -ENODATA) {
			*torn = pos != commit;
			ret = 0;
			break;
		}
		if (ret < 0)
			goto io_error;
		const uint8_t *h = w.buf + (pos - w.off);
		enum fmt_status st = fmt_decode_record(h, w.off + w.len - pos, epoch32, &rec);
		if (st == FMT_SHORT) {
			uint32_t klen, vlen;
			memcpy(&klen, h + 24, 4);
			memcpy(&vlen, h + 28, 4);
			ret = window_ensure(&w, commit, pos, fmt_record_size(le32toh(klen), le32toh(vlen)));
			if (ret == -ENODATA) {
				*torn = true;
				ret = 0;
				break;
			}
			if (ret < 0)
				goto io_error;
			st = fmt_decode_record(w.buf + (pos - w.off), w.off + w.len - pos, epoch32, &rec);
		}
		if (st != FMT_OK) {
			*torn = !(st == FMT_BAD_MAGIC && pos == commit);
			break;
		}
		if (rec.type != FMT_PAD) {
			if (rec.lsn != lsn) {
				*torn = true; /* a gap: nothing after it is a prefix */
				break;
			}
			if (rc->n_pending == rc->cap_pending) {
				size_t cap = rc->cap_pending ? rc->cap_pending * 2 : 256;
				uint64_t *p = realloc(rc->pending, cap * sizeof(*p));
				if (p == NULL) {
					ret = -ENOMEM;
					snprintf(err, errlen, "out of memory during recovery");
					goto out;
				}
				rc->pending = p;
				rc->cap_pending = cap;
			}
			rc->pending[rc->n_pending++] = pos;
			lsn++;
			pos += fmt_record_size(rec.key_len, rec.value_len);
			continue;
		}
		/* PAD: the commit is complete if it ends on a block boundary. */
		uint64_t commit_end = pos + FMT_RECORD_HEADER + rec.value_len;
		if (rc->n_pending == 0 || (commit_end & (FMT_BLOCK - 1)) != 0) {
			*torn = true;
			break;
		}
		for (size_t i = 0; i < rc->n_pending; i++) {
			uint64_t at = rc->pending[i];
			struct fmt_record r;
			fmt_decode_record(w.buf + (at - w.off), w.off + w.len - at, epoch32, &r);
			if (r.lsn < rc->from_lsn)
				continue;
			struct log_pos lp = {.segment = seg->id,
					     .offset = at,
					     .length = (uint32_t)fmt_record_size(r.key_len, r.value_len),
					     .lsn = r.lsn};
			ret = rc->replay(rc->arg, &r, &lp);
			if (ret < 0) {
				snprintf(err, errlen, "replaying LSN %" PRIu64 ": %s", r.lsn,
					 strerror(-ret));
				goto out;
			}
			rc->replayed++;
		}
		rc->n_pending = 0;
		rc->next_lsn = lsn;
		pos = commit = commit_end;
	}
	*end = commit;
	goto out;
io_error:
	snprintf(err, errlen, "reading log segment %016" PRIx64 " at offset %" PRIu64 ": %s",
		 seg->id, pos, strerror(-ret));
out:
	free(w.buf);
	return ret;
}

/* Drops segment i from the log's array and frees it (not its fd). */
static void segment_forget(struct log *log, size_t i)
{
	free(log->segs[i]);
	memmove(&log->segs[i], &log->segs[i + 1], (log->n_segs - i - 1) * sizeof(log->segs[0]));
	log->n_segs--;
}

/* Removes segment i (and its file) from the log. */
static int segment_remove(struct log *log, size_t i)
{
	char path[4200];
	struct segment *seg = log->segs[i];
	segment_path(log, seg->id, path, sizeof(path));
	if (unlink(path) != 0 && errno != ENOENT)
		return -errno;
	close(seg->fd);
	segment_forget(log, i);
	return 0;
}

/* Cuts `seg` at `end` (dropping any stale or torn bytes beyond) and
 * preallocates it again.  On a full disk the segment stays short (a warning):
 * the log still opens for reads, and a later write fails cleanly instead. */
static int segment_cut(struct segment *seg, uint64_t end)
{
	if (ftruncate(seg->fd, (off_t)end) != 0)
		return -errno;
	int ret = posix_fallocate(seg->fd, 0, (off_t)seg->size);
	if (ret != 0)
		LOG_WARN("cannot preallocate log segment %016" PRIx64 " again (%s); it stays at"
			 " %" PRIu64 " bytes until there is room",
			 seg->id, strerror(ret), end);
	if (fdatasync(seg->fd) != 0)
		return -errno;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Opens every segment file and reads its header. */
static int load_segments(struct log *log, char *err, size_t errlen)
{
	DIR *d = opendir(log->dir);
	if (d == NULL) {
		snprintf(err, errlen, "cannot open %s: %s", log->dir, strerror(errno));
		return -errno;
	}
	uint64_t *ids = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int ret = 0;
	while ((de = readdir(d)) != NULL) {
		char *endp;
		uint64_t id = strtoull(de->d_name, &endp, 16);
		if (endp == de->d_name || strcmp(endp, ".seg") != 0 || strlen(de->d_name) != 20)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			uint64_t *p = realloc(ids, cap * sizeof(*p));
			if (p == NULL) {
				ret = -ENOMEM;
				goto out;
			}
			ids = p;
		}
		ids[n++] = id;
	}
	if (n > 1)
		qsort(ids, n, sizeof(*ids), cmp_u64);
	log->segs = calloc(n ? n : 1, sizeof(*log->segs));
	log->cap_segs = n ? n : 1;
	uint8_t *block = NULL;
	if (log->segs == NULL || posix_memalign((void **)&block, FMT_BLOCK, FMT_BLOCK) != 0) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char path[4200];
		segment_path(log, ids[i], path, sizeof(path));
		int fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
			break;
		}
		struct segment *seg = malloc(sizeof(*seg));
		if (seg == NULL) {
			close(fd);
			ret = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			break;
		}
		log->segs[log->n_segs++] = seg;
		*seg = (struct segment){.id = ids[i], .fd = fd};
		struct stat st;
		fstat(fd, &st);
		ssize_t r = pread(fd, block, FMT_BLOCK, 0);
		struct fmt_segment_header h;
		enum fmt_status s = r == FMT_BLOCK ? fmt_decode_segment_header(block, &h) : FMT_SHORT;
		if (s == FMT_BAD_FIELD) {
			uint32_t version;
			memcpy(&version, block + 8, sizeof(version));
			ret = -EPROTO;
			snprintf(err, errlen,
				 "%s is in on-disk format version %u (or has an impossible size); this"
				 " ringkv reads version %u: run a ringkv that matches the data, or"
				 " point storage.dir at another directory",
				 path, le32toh(version), FMT_VERSION);
			break;
		}
		seg->header_ok = s == FMT_OK && h.id == ids[i] && h.shard == log->cfg.shard;
		if (seg->header_ok) {
			seg->epoch = h.epoch;
			seg->first_lsn = h.first_lsn;
			seg->size = h.size;
		} else {
			seg->size = (uint64_t)st.st_size;
		}
		seg->fill = seg->size; /* until scanned: sealed segments count whole */
	}
	free(block);
out:
	closedir(d);
	free(ids);
	if (ret == -ENOMEM)
		snprintf(err, errlen, "out of memory reading %s", log->dir);
	return ret;
}

/* Replays the log from `from_lsn` and cuts it after the last complete commit
 * (see log.h). */
static int recover(struct log *log, uint64_t from_lsn, log_replay_fn replay, void *arg,
		   char *err, size_t errlen)
{
	struct recovery rc = {.from_lsn = from_lsn, .replay = replay, .arg = arg};
	size_t start = 0;
	for (size_t i = 0; i < log->n_segs; i++)
		if (log->segs[i]->header_ok && log->segs[i]->first_lsn <= from_lsn)
			start = i;
	int ret = 0;
	size_t keep = log->n_segs; /* segments [keep, n) are dropped */
	bool torn = false;
	for (size_t i = start; i < log->n_segs; i++) {
		struct segment *seg = log->segs[i];
		if (!seg->header_ok || (i > start && seg->first_lsn != rc.next_lsn)) {
			keep = i; /* never got its first commit, or follows a gap */
			torn = true;
			break;
		}
		if (i == start)
			rc.next_lsn = seg->first_lsn;
		uint64_t end;
		ret = scan_segment(&rc, seg, &end, &torn, err, errlen);
		if (ret < 0)
			goto out;
		seg->fill = end;
		if (torn && i + 1 < log->n_segs && log->segs[i + 1]->header_ok &&
		    log->segs[i + 1]->first_lsn == rc.next_lsn) {
			/* The next segment goes on exactly where this one's valid
			 * commits end: what stopped the scan is stale bytes of a
			 * recycled file or a failed commit whose LSNs were reused,
			 * never acknowledged data. */
			torn = false;
			continue;
		}
		if (torn) {
			keep = i + 1; /* cut below; everything later is unacknowledged */
			break;
		}
	}
	uint64_t dropped = 0;
	while (log->n_segs > keep) {
		dropped++;
		ret = segment_remove(log, log->n_segs - 1);
		if (ret < 0) {
			snprintf(err, errlen, "cannot delete a torn log segment in %s: %s", log->dir,
				 strerror(-ret));
			goto out;
		}
	}
	struct segment *last = last_segment(log);
	if (last != NULL) {
		ret = segment_cut(last, last->fill);
		if (ret < 0) {
			snprintf(err, errlen, "cannot cut the torn tail of log segment %016" PRIx64
				 " in %s: %s", last->id, log->dir, strerror(-ret));
			goto out;
		}
		log->write_offset = last->fill;
	}
	log->next_lsn = rc.next_lsn > from_lsn ? rc.next_lsn : from_lsn;
	if (log->next_lsn == 0)
		log->next_lsn = 1;
	/* Numbering resumes past where the last segment's commits end (the
	 * index is ahead of the log): appending there would leave an LSN gap
	 * that the next recovery cuts, with everything after it. */
	if (last != NULL && log->next_lsn != rc.next_lsn)
		log->write_offset = last->size; /* forces a new segment */
	log->last_good_lsn = log->next_lsn - 1;
	/* What recovery found may still sit in the page cache of a process that
	 * crashed: make it durable before building on it. */
	if (last != NULL && fdatasync(last->fd) != 0)
		LOG_WARN("shard %u: fdatasync of log segment %016" PRIx64 " failed: %s",
			 log->cfg.shard, last->id, strerror(errno));
	log->synced_lsn = log->last_good_lsn;
	if (rc.replayed || torn || dropped)
		LOG_INFO("shard %u: log recovered: %" PRIu64 " records replayed from LSN %" PRIu64
			 ", next LSN %" PRIu64 "%s%s",
			 log->cfg.shard, rc.replayed, from_lsn, log->next_lsn,
			 torn ? ", torn tail cut" : "", dropped ? ", later segments dropped" : "");
out:
	free(rc.pending);
	return ret;
}

/* ---- open / close ------------------------------------------------------ */


/* Fails with a clear message if the file system of `dir` refuses O_DIRECT;
 * else sets log->read_align to the smallest read alignment it takes (512 or
 * FMT_BLOCK), found by an aligned write and a 512-byte read of a probe file. */
static int check_direct_io(struct log *log, char *err, size_t errlen)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/.direct-io-probe", log->dir);
	int fd = open(path, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
	if (fd < 0 && errno == EINVAL) {
		snprintf(err, errlen,
			 "the file system of %s does not support O_DIRECT (tmpfs before Linux"
			 " 6.6 does not); put storage.dir on a disk file system such as ext4 or"
			 " xfs",
			 log->dir);
		return -EINVAL;
	}
	if (fd < 0) {
		snprintf(err, errlen, "cannot create files in %s: %s", log->dir, strerror(errno));
		return -errno;
	}
	log->read_align = FMT_BLOCK;
	uint8_t *block;
	if (posix_memalign((void **)&block, FMT_BLOCK, FMT_BLOCK) == 0) {
		memset(block, 0, FMT_BLOCK);
		if (pwrite(fd, block, FMT_BLOCK, 0) == FMT_BLOCK && pread(fd, block, 512, 512) == 512)
			log->read_align = 512;
		free(block);
	}
	close(fd);
	unlink(path);
	struct statfs sf;
	if (statfs(log->dir, &sf) == 0 && sf.f_type == TMPFS_MAGIC)
		LOG_WARN("%s is on tmpfs: the data will not survive a reboot", log->dir);
	return 0;
}

int log_open(struct log **out, struct px *px, const struct log_config *cfg, uint64_t from_lsn,
	     log_replay_fn replay, void *arg, char *err, size_t errlen)
{
	if (cfg->segment_size < (1u << 20) || cfg->segment_size % FMT_BLOCK != 0 ||
	    cfg->commit_max % FMT_BLOCK != 0) {
		snprintf(err, errlen, "segment size %" PRIu64 " / commit size %u: need a multiple"
			 " of 4096, segment at least 1 MiB", cfg->segment_size, cfg->commit_max);
		return -EINVAL;
	}
	struct log *log = calloc(1, sizeof(*log));
	if (log == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	log->px = px;
	log->cfg = *cfg;
	if (log->cfg.commit_max == 0)
		log->cfg.commit_max = LOG_COMMIT_DEFAULT;
	if (log->cfg.commit_max > log->cfg.segment_size)
		log->cfg.commit_max = (uint32_t)log->cfg.segment_size;
	log->dir_fd = -1;
	log->spare.ready_fd = log->spare.fd = -1;
	log->spare.alloc_op.complete = spare_alloc_complete;
	log->spare.sync_op.complete = spare_sync_complete;
	for (unsigned i = 0; i < LOG_SPARE_WRITES; i++) {
		log->spare.writes[i] =
		    (struct spare_write){.op.complete = spare_write_complete, .log = log};
		log->ahead.writes[i] =
		    (struct spare_write){.op.complete = ahead_write_complete, .log = log};
	}
	snprintf(log->dir, sizeof(log->dir), "%s", cfg->dir);
	log->cfg.dir = log->dir;

	int ret = fs_make_dirs(log->dir);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create %s: %s", log->dir, strerror(-ret));
		goto fail;
	}
	log->dir_fd = open(log->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (log->dir_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open %s: %s", log->dir, strerror(errno));
		goto fail;
	}
	ret = check_direct_io(log, err, errlen);
	if (ret < 0)
		goto fail;
	ret = load_segments(log, err, errlen);
	if (ret < 0)
		goto fail;
	ret = recover(log, from_lsn, replay, arg, err, errlen);
	if (ret < 0)
		goto fail;
	recount_bytes(log);
	spare_load(log);

	log->hook.fn = log_hook;
	px_hook_add(px, &log->hook);
	if (last_segment(log) != NULL)
		ahead_start(log, last_segment(log)); /* cut and preallocated again by recovery */
	if (cfg->durability != LOG_DURABILITY_FSYNC)
		px_timer_start(px, &log->sync_timer, LOG_SYNC_PERIOD_NS, LOG_SYNC_PERIOD_NS,
			       sync_tick);
	*out = log;
	return 0;
fail:
	log->hook.fn = NULL;
	log_close(log);
	return ret;
}

uint64_t log_next_lsn(const struct log *log)
{
	return log->next_lsn;
}

size_t log_segments(const struct log *log, uint64_t *ids, size_t cap)
{
	size_t n = log->n_segs < cap ? log->n_segs : cap;
	for (size_t i = 0; i < n; i++)
		ids[i] = log->segs[i]->id;
	return n;
}

int log_delete_segment(struct log *log, uint64_t id)
{
	struct segment *seg = find_segment(log, id);
	if (seg == NULL)
		return -ENOENT;
	if (seg == last_segment(log) || (log->open != NULL && log->open->seg == seg))
		return -EBUSY;
	for (struct commit *c = log->inflight; c != NULL; c = c->next)
		if (c->seg == seg)
			return -EBUSY;
	size_t i = 0;
	while (log->segs[i] != seg)
		i++;
	int ret = 0;
	if (spare_recycle(log, seg))
		segment_forget(log, i);
	else
		ret = segment_remove(log, i);
	recount_bytes(log);
	return ret;
}

int log_segment_info(const struct log *log, uint64_t id, struct log_segment_info *out)
{
	struct segment *seg = find_segment((struct log *)log, id);
	if (seg == NULL)
		return -ENOENT;
	bool busy = seg == last_segment((struct log *)log) ||
		    (log->open != NULL && log->open->seg == seg);
	for (struct commit *c = log->inflight; c != NULL && !busy; c = c->next)
		busy = c->seg == seg;
	*out = (struct log_segment_info){.id = seg->id,
					 .epoch32 = (uint32_t)seg->epoch,
					 .first_lsn = seg->first_lsn,
					 .fill = seg->fill,
					 .sealed = !busy};
	return 0;
}

uint64_t log_synced_lsn(const struct log *log)
{
	return log->cfg.durability == LOG_DURABILITY_FSYNC ? log->last_good_lsn : log->synced_lsn;
}

static void raw_read_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct log_raw_read *r = container_of(op, struct log_raw_read, op);
	struct log *log = r->log;
	(void)flags;
	log->n_reads--;
	px_release(px);
	if (res < 0 && res != -EAGAIN) {
		log->stats.read_errors++;
		LOG_ERROR("shard %u: reading %u bytes of log segment %016" PRIx64 " at offset %" PRIu64
			  ": %s",
			  log->cfg.shard, r->len, r->segment, r->offset, strerror(-res));
	}
	r->done(r, res);
}

static void raw_read_later(void *arg)
{
	struct log_raw_read *r = arg;
	raw_read_complete(r->log->px, &r->op, r->early_res, 0);
}

void log_read_raw(struct log *log, struct log_raw_read *r)
{
	struct segment *seg = find_segment(log, r->segment);
	r->log = log;
	r->op.complete = raw_read_complete;
	log->n_reads++;
	px_hold(log->px);
	struct io_uring_sqe *sqe = seg ? px_get_sqe(log->px, &r->op) : NULL;
	if (sqe == NULL) {
		r->early_res = seg == NULL ? -ENOENT : -EAGAIN;
		px_send(log->px, log->px->id, raw_read_later, r);
		return;
	}
	io_uring_prep_read(sqe, seg->fd, r->buf, r->len, r->offset);
	log->stats.reads++;
}

const struct log_stats *log_get_stats(const struct log *log)
{
	return &log->stats;
}

void log_stop(struct log *log)
{
	log->stopped = true;
	if (log->open != NULL && log->open->n_records > 0)
		commit_seal(log);
	if (px_timer_armed(&log->sync_timer))
		px_timer_stop(log->px, &log->sync_timer);
	spare_pump(log); /* a spare being zeroed is dropped once its writes are back */
	if (px_timer_armed(&log->ahead.timer))
		px_timer_stop(log->px, &log->ahead.timer);
	ahead_pump(log);  /* ... and zeroing ahead stops */
}

bool log_busy(const struct log *log)
{
	return log->inflight != NULL || log->n_reads > 0 || log->syncs_inflight > 0 ||
	       log->spare.inflight > 0 || log->ahead.inflight > 0 ||
	       px_timer_armed(&log->sync_timer) || px_timer_armed(&log->ahead.timer) ||
	       (log->open != NULL && log->open->n_records > 0);
}

void log_close(struct log *log)
{
	if (log == NULL)
		return;
	if (log->hook.fn != NULL)
		px_hook_remove(log->px, &log->hook);
	if (log->open != NULL)
		commit_release(log, log->open);
	while (log->free != NULL) {
		struct commit *c = log->free;
		log->free = c->next;
		free(c->buf);
		free(c);
	}
	for (size_t i = 0; i < log->n_segs; i++) {
		/* durability write/none: a clean shutdown leaves nothing unsynced */
		struct segment *seg = log->segs[i];
		if (seg->unsynced && fdatasync(seg->fd) != 0)
			LOG_ERROR("shard %u: fdatasync of log segment %016" PRIx64 " at close: %s",
				  log->cfg.shard, seg->id, strerror(errno));
		close(seg->fd);
		free(seg);
	}
	if (log->spare.ready_fd >= 0)
		close(log->spare.ready_fd); /* spare.ready stays for the next open */
	if (log->spare.fd >= 0)
		spare_delete(log, &log->spare.fd, LOG_SPARE_TMP);
	if (log->dir_fd >= 0)
		close(log->dir_fd);
	free(log->segs);
	free(log);
}
