/* log_int.h: the log's private state, its tuning constants and the
 * functions its files share.  The contract is log.h; the bytes on disk are
 * format.h's.  Only storage/log*.c include this file.
 *
 * Files, one concern each:
 *   log.c          the segment files (create, remove, delete), open, close, stop
 *                  and the queries
 *   log_write.c    the write path: commits, group commit, completion in LSN
 *                  order, the end-of-iteration hook, fdatasync rounds
 *   log_spare.c    written blocks: the spare segment, recycling, zeroing ahead
 *                  of the commits
 *   log_read.c     reads of records (merged per block range) and raw reads
 *   log_recover.c  the scan at open: replay, and the cut after the last
 *                  complete commit
 * A function one file calls in another is named lg_* and declared below with
 * its contract; everything else is static to its file.
 *
 * Blocking calls on the loop, and why they are acceptable: creating a segment
 * (open, fallocate, fsync of the directory; or a rename of the spare and the
 * fsync: once per segment_size bytes written), creating the spare (open,
 * fallocate) and renaming it when it is ready (each once per segment), and
 * deleting a segment (close, unlink or a rename: once per GC'd segment).  All
 * segment data, headers included, and the spare's zeros are written through
 * io_uring: a segment's header block is the first block of its first commit.
 */
#ifndef RINGKV_LOG_INT_H
#define RINGKV_LOG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "service/runtime/proactor.h"
#include "storage/format.h"
#include "storage/log.h"

/* ---- tuning ------------------------------------------------------------- */

#define LOG_COMMIT_DEFAULT (1u << 20)    /* commit buffer bytes when commit_max is 0 */
#define LOG_SCAN_CHUNK     (1u << 20)    /* recovery reads at least this much at a time */
#define LOG_SYNC_PERIOD_NS 1000000000ULL /* durability write: fdatasync this often */
#define LOG_READ_BUCKETS   4096          /* hash of in-flight reads, by first block */
/* While a commit is in flight, the next one waits for it or for this many
 * bytes. */
#define LOG_GROUP_MIN (64u << 10)

#define LOG_SPARE_CHUNK  (1u << 20)    /* bytes per zeroing write of the spare */
#define LOG_SPARE_WRITES 2             /* zeroing writes in flight at most */
#define LOG_SPARE_TMP    "spare.tmp"   /* the spare while it is prepared */
#define LOG_SPARE_READY  "spare.ready" /* the spare once every block is written */
#define LOG_AHEAD_GAP    (1u << 20)    /* zeroing ahead starts this far past the last commit */
/* Zeroing ahead far from the commits goes one chunk at a time, at most one
 * per LOG_AHEAD_PACE_NS (512 MiB/s); at full speed while the commits are
 * closer than LOG_AHEAD_NEAR to the zeroed bytes. */
#define LOG_AHEAD_PACE_NS 2000000ULL
#define LOG_AHEAD_NEAR    (4u << 20)
/* Durability write: commits in flight that pause zeroing ahead (a
 * bandwidth-bound writer would pay for the zeros twice; reads in flight
 * pause it too). */
#define LOG_AHEAD_BUSY (128u << 10)

/* ---- state -------------------------------------------------------------- */

/* One segment file of the log. */
struct segment {
	uint64_t id;
	int fd; /* O_RDWR | O_DIRECT */
	uint64_t epoch;
	uint64_t first_lsn;
	uint32_t version; /* its format version (FMT_VERSION_READ_MIN..FMT_VERSION) */
	uint64_t size;  /* file size, from its header */
	uint64_t fill;  /* bytes written or reserved by sealed commits */
	bool header_ok; /* recovery: the header block decoded */
	bool unsynced;  /* durability write/none: written since its last fdatasync */
};

/* One group commit: a buffer of records, sealed with its PAD and written
 * with one O_DIRECT write. */
struct commit {
	struct px_op op; /* the write */
	struct log *log;
	uint8_t *buf;        /* FMT_BLOCK-aligned; `cap` bytes */
	uint64_t cap;        /* buffer size */
	uint64_t limit;      /* commit may not grow past this (<= cap) */
	uint64_t used;       /* bytes filled (header block and records) */
	uint64_t size;       /* sealed size, multiple of FMT_BLOCK */
	struct segment *seg; /* destination */
	uint64_t base;       /* file offset of buf[0] */
	uint64_t first_lsn, last_lsn;
	struct log_write *head, *tail; /* records' completions, in LSN order */
	unsigned n_records;
	int result; /* 0, or -errno once written */
	bool submitted, finished;
	struct commit *next; /* in-flight FIFO or free list */
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
	struct segment *seg;    /* being zeroed, or NULL */
	struct segment *queued; /* to zero once the writes for the last one are back */
	uint64_t next;          /* offset of the next chunk to hand to a slot */
	unsigned inflight;      /* zeroing writes on the ring; each holds the px */
	uint64_t paced_at_ns;   /* paced: no new write before this */
	struct px_timer timer;  /* resumes a paced pump on an idle loop */
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
	struct px_op sync_op;  /* the fdatasync after the last write */
};

/* The reads in flight of one aligned block range: one I/O, every waiter
 * served from its buffer. */
struct read_group {
	struct px_op op;
	struct log *log;
	uint64_t segment, start; /* aligned file range [start, start + len) */
	uint32_t len;
	uint8_t *buf;
	struct log_read *waiters;
	struct read_group *next;
	int early_res; /* result when it completes without an I/O */
};

/* One shard's log.  Every field belongs to the log's proactor. */
struct log {
	struct px *px;
	struct log_config cfg;
	char dir[4096];
	int dir_fd;
	struct segment **segs; /* sorted by id; the last one is written.  Each is its own
	                          allocation: commits keep pointers to theirs */
	size_t n_segs, cap_segs;
	uint64_t next_lsn;
	uint64_t write_offset; /* where the next commit goes in the last segment */
	struct commit *open;   /* accepting records, or NULL */
	struct commit *inflight, *inflight_tail;    /* sealed, in LSN order */
	struct commit *free;                        /* standard-size buffers for reuse */
	struct read_group *reads[LOG_READ_BUCKETS]; /* in flight, by read_bucket() (log_read.c) */
	unsigned long n_reads;                      /* read groups in flight */
	int fail_err;           /* a commit failed: later ones fail until rotation */
	bool stopped;           /* log_stop() called: appends refused */
	bool recycle_expected;  /* GC will delete a segment: the spare waits (lg_spare_due) */
	uint64_t last_good_lsn; /* last LSN of the newest commit that succeeded */
	struct px_hook hook;
	struct px_timer sync_timer;
	unsigned syncs_inflight;  /* fdatasyncs of this round still running */
	bool sync_failed;         /* one of them failed */
	uint64_t sync_target_lsn; /* what this round makes durable */
	uint64_t synced_lsn;      /* durability write/none: every LSN <= this is durable */
	uint64_t written_since_sync;
	uint32_t read_align;    /* O_DIRECT read granularity: 512 where the file system
	                           takes it, else FMT_BLOCK (probed at open) */
	struct log_spare spare; /* the next segment's file, prepared in the background */
	struct log_ahead ahead; /* the written segment's tail, zeroed ahead of commits */
	struct log_stats stats;
};

/* ---- small helpers ------------------------------------------------------ */

static inline uint64_t lg_align_up(uint64_t v)
{
	return (v + FMT_BLOCK - 1) & ~(uint64_t)(FMT_BLOCK - 1);
}

static inline uint64_t lg_align_down(uint64_t v)
{
	return v & ~(uint64_t)(FMT_BLOCK - 1);
}

/* The segment being written (the newest), or NULL before the first. */
static inline struct segment *lg_last_segment(struct log *log)
{
	return log->n_segs ? log->segs[log->n_segs - 1] : NULL;
}

/* ---- log.c: segment files ----------------------------------------------- */

/* The segment with this id, or NULL. */
struct segment *lg_find_segment(struct log *log, uint64_t id);

/* Recomputes stats.segments and stats.log_bytes from the segments. */
void lg_recount_bytes(struct log *log);

/* Creates the next segment, starting at LSN log->next_lsn: the ready spare
 * renamed, or else a new preallocated file (zeroed ahead of the commits).
 * Its header is written by its first commit.  Returns 0 or -errno. */
int lg_segment_create(struct log *log);

/* Removes segment i (and its file) from the log.  Returns 0 or -errno (the
 * file could not be unlinked; the segment stays). */
int lg_segment_remove(struct log *log, size_t i);

/* ---- log_write.c: commits ----------------------------------------------- */

/* Seals the open commit with its PAD and sends it to the disk. */
void lg_commit_seal(struct log *log);

/* Returns a commit's buffer to the free list (standard size) or frees it. */
void lg_commit_release(struct log *log, struct commit *c);

/* The end-of-iteration hook: seals the open commit, retries unsubmitted ones,
 * and pumps the spare's and the zeroing-ahead writes. */
bool lg_hook(struct px *px, struct px_hook *hook);

/* The sync timer's callback (durability write/none): log_sync_now. */
void lg_sync_tick(struct px *px, struct px_timer *t);

/* ---- log_spare.c: written blocks ---------------------------------------- */

/* Sets up the spare's and the zeroing-ahead's I/O slots (no file yet): call
 * once on a new log. */
void lg_spare_init(struct log *log);

/* Closes and deletes the spare file `name` whose fd is *fd (then -1). */
void lg_spare_delete(struct log *log, int *fd, const char *name);

/* Submits what preparing spare.tmp needs next, or deletes it once its I/O
 * is back after an error, log_stop or a cancellation.  Returns true if it
 * submitted anything; without an SQE it stops, and the end-of-iteration hook
 * calls it again. */
bool lg_spare_pump(struct log *log);

/* True once the segment being written is far enough along that its spare
 * should be prepared (half full; 7/8 while GC is about to delete one). */
bool lg_spare_due(const struct log *log);

/* Starts preparing a spare if none is ready or being prepared (and none
 * failed since the last rotation). */
void lg_spare_start(struct log *log);

/* Renames the ready spare to segment `id`'s file and hands over its fd; sets
 * *written if its blocks are all written.  Returns the fd, or -errno
 * (-ENOENT: no spare is ready). */
int lg_spare_take(struct log *log, uint64_t id, bool *written);

/* Keeps deleted segment `seg` as the ready spare if it can (see log.h,
 * Recycling).  Returns true if it did: the spare now owns seg's fd. */
bool lg_spare_recycle(struct log *log, struct segment *seg);

/* At open: deletes a leftover spare.tmp and takes a usable spare.ready. */
void lg_spare_load(struct log *log);

/* True if a zeroing write in flight overlaps [start, start + len) of `seg`:
 * a commit there must wait for it. */
bool lg_ahead_overlaps(const struct log *log, const struct segment *seg, uint64_t start,
                       uint64_t len);

/* Submits zeroing writes ahead of the commits in the written segment.
 * Returns true if it submitted anything. */
bool lg_ahead_pump(struct log *log);

/* Starts zeroing the tail of `seg`, the segment now written, whose blocks past
 * its commits are unwritten extents.  Not under `none` (see log.h). */
void lg_ahead_start(struct log *log, struct segment *seg);

/* ---- log_recover.c: the scan at open ------------------------------------ */

/* Opens every segment file of the directory and reads its header.  Returns 0
 * or -errno with a message in err. */
int lg_load_segments(struct log *log, char *err, size_t errlen);

/* Replays the log from `from_lsn` and, if `cut`, cuts it after the last
 * complete commit (see log.h, Recovery); without `cut` (log_scan) only reads.
 * Returns 0 or -errno with a message in err. */
int lg_recover(struct log *log, uint64_t from_lsn, log_replay_fn replay, void *arg, bool cut,
               char *err, size_t errlen);

#endif
