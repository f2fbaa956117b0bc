/* log_spare: the log's written blocks (log_int.h; the why and the
 * measurements: log.h, "Written blocks", "Zeroing ahead", "Recycling") — the
 * spare segment prepared in the background, deleted segments recycled as the
 * spare, and the zeroes written ahead of the commits into a preallocated
 * segment's tail.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "service/runtime/logging.h"
#include "storage/log_int.h"

/* ---- the spare segment -------------------------------------------------- */

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

void lg_spare_delete(struct log *log, int *fd, const char *name)
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
bool lg_spare_pump(struct log *log)
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
			lg_spare_delete(log, &sp->fd, LOG_SPARE_TMP);
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
		/* a short write is resubmitted for the rest by lg_spare_pump */
		w->offset += (uint64_t)res;
		w->len -= (uint32_t)res;
		log->stats.spare_bytes_zeroed += (uint64_t)res;
	}
	lg_spare_pump(log);
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
	lg_spare_pump(log);
}

static void spare_sync_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct log *log = container_of(op, struct log, spare.sync_op);
	struct log_spare *sp = &log->spare;
	(void)flags;
	sp->inflight--;
	px_release(px);
	if (sp->cancelled) {
		/* lg_spare_pump deletes it */
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
	lg_spare_pump(log);
}

/* ---- zeroing ahead of the commits --------------------------------------- */

/* True if a zeroing write in flight overlaps [start, start + len) of `seg`:
 * a commit there waits for it (two writes in flight to one block have no
 * order). */
bool lg_ahead_overlaps(const struct log *log, const struct segment *seg, uint64_t start,
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
bool lg_ahead_pump(struct log *log)
{
	struct log_ahead *ah = &log->ahead;
	if (ah->seg == NULL)
		return false;
	if (log->stopped || ah->seg != lg_last_segment(log) || log->fail_err != 0) {
		if (ah->inflight > 0)
			return false;
		ah->seg = NULL;
		if (ah->queued == NULL || ah->queued != lg_last_segment(log) || log->stopped)
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
	lg_ahead_pump(container_of(t, struct log, ahead.timer));
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
			LOG_WARN(
			    "shard %u: cannot write zeros ahead of the log's commits in %s (%s);"
			    " commits go on, at the speed of a preallocated file",
			    log->cfg.shard, log->dir, strerror(res < 0 ? -res : EIO));
		}
	} else {
		/* a short write is resubmitted for the rest by lg_ahead_pump */
		w->offset += (uint64_t)res;
		w->len -= (uint32_t)res;
		log->stats.tail_bytes_zeroed += (uint64_t)res;
	}
	lg_ahead_pump(log);
}

/* Starts zeroing the tail of `seg`, the segment now written, whose blocks past
 * its commits are unwritten extents (created preallocated, or cut and
 * preallocated again at open).  Not under `none` (see log.h). */
void lg_ahead_start(struct log *log, struct segment *seg)
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
	lg_ahead_pump(log);
}

/* True once the segment being written is far enough along that its spare
 * should be prepared: half full, or 7/8 while GC is about to delete a
 * segment that can become the spare instead (log.h, log_expect_recycled). */
bool lg_spare_due(const struct log *log)
{
	uint64_t at =
	    log->recycle_expected ? log->cfg.segment_size / 8 * 7 : log->cfg.segment_size / 2;
	return log->write_offset >= at;
}

void log_expect_recycled(struct log *log, bool expected)
{
	log->recycle_expected = expected;
}

/* Starts preparing a spare if none is ready or being prepared (and none
 * failed since the last rotation): creates spare.tmp (blocking, but only a
 * file creation), then preallocates and zeroes it through the ring. */
void lg_spare_start(struct log *log)
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
	lg_spare_pump(log);
}

/* Renames the ready spare to segment `id`'s file and hands over its fd; sets
 * *written if its blocks are all written.  Returns the fd, or -errno
 * (-ENOENT: no spare is ready). */
int lg_spare_take(struct log *log, uint64_t id, bool *written)
{
	struct log_spare *sp = &log->spare;
	if (sp->ready_fd < 0)
		return -ENOENT;
	char name[32];
	fmt_segment_name(name, sizeof(name), NULL, id, "");
	if (renameat2(log->dir_fd, LOG_SPARE_READY, log->dir_fd, name, RENAME_NOREPLACE) != 0) {
		int err = -errno;
		spare_warn(log, "rename to the segment's name", err);
		lg_spare_delete(log, &sp->ready_fd, LOG_SPARE_READY);
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
bool lg_spare_recycle(struct log *log, struct segment *seg)
{
	struct log_spare *sp = &log->spare;
	struct stat st;
	if (sp->ready_fd >= 0 || fstat(seg->fd, &st) != 0 ||
	    (uint64_t)st.st_size != log->cfg.segment_size)
		return false;
	char name[32];
	fmt_segment_name(name, sizeof(name), NULL, seg->id, "");
	/* Not fsynced, as an unlink is not: a segment that reappears after a
	 * crash is one GC had already emptied. */
	if (renameat(log->dir_fd, name, log->dir_fd, LOG_SPARE_READY) != 0)
		return false;
	sp->ready_fd = seg->fd;
	sp->ready_written = true; /* up to where its last writer stopped: see log.h */
	log->stats.segments_recycled++;
	if (sp->fd >= 0) {
		sp->cancelled = true;
		lg_spare_pump(log);
	}
	return true;
}

/* At open: deletes a spare.tmp left by a run that stopped while preparing it,
 * and takes a spare.ready of the configured segment size as the ready spare
 * (its rename followed its fdatasync, or it is a recycled segment). */
void lg_spare_load(struct log *log)
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
		lg_spare_delete(log, &fd, LOG_SPARE_READY); /* made for another segment_size */
	else {
		sp->ready_fd = fd;
		/* Zeroed or recycled under `fsync`; under `write` it may be one
		 * only preallocated, so its segment is zeroed ahead to be sure. */
		sp->ready_written = log->cfg.durability == LOG_DURABILITY_FSYNC;
	}
}

void lg_spare_init(struct log *log)
{
	log->spare.ready_fd = log->spare.fd = -1;
	log->spare.alloc_op.complete = spare_alloc_complete;
	log->spare.sync_op.complete = spare_sync_complete;
	for (unsigned i = 0; i < LOG_SPARE_WRITES; i++) {
		log->spare.writes[i] =
		    (struct spare_write){.op.complete = spare_write_complete, .log = log};
		log->ahead.writes[i] =
		    (struct spare_write){.op.complete = ahead_write_complete, .log = log};
	}
}
