/* log: one shard's append-only log — segment files written only with
 * O_DIRECT through the shard proactor's io_uring (format: format.h).
 *
 * Write path.  log_append() encodes a record into the open commit buffer and
 * assigns its LSN and position at once.  At the end of the loop iteration (a
 * px hook) the buffer is sealed with a PAD record and written with one
 * O_DIRECT write (group commit); in `fsync` durability that write carries
 * RWF_DSYNC, so one op both writes and makes it durable.  While a commit is
 * in flight the next one keeps gathering records until it completes or the
 * buffer holds LOG_GROUP_MIN bytes (log_int.h), so a light load does not pay a
 * device write per iteration.  A buffer that fills up mid-iteration is written
 * at once.  Several commits may be in flight; their `done` callbacks run
 * strictly in LSN order, each once its commit and every earlier one are
 * written.
 *
 * Errors.  If a commit fails (EIO, ENOSPC), it and every later commit in
 * flight fail (done gets the error; nothing of theirs is acknowledged).  When
 * the in-flight commits have drained, writing resumes in a new segment whose
 * first LSN follows the last commit that succeeded, so the log never holds a
 * hole followed by data.  Reads keep working throughout.
 *
 * Recovery (log_open).  Segments are read in id order from the one holding
 * `from_lsn`; records of complete commits (their PAD read and valid) with LSN
 * >= from_lsn go to the replay callback.  The first invalid record, torn
 * commit or LSN gap ends the log: that segment is truncated at the start of
 * the torn commit (so no stale record can follow new ones) and later segments
 * are deleted.  Writing resumes there — in a new segment when the LSNs
 * resume elsewhere (from_lsn is past the log's end), so no segment ever
 * holds an LSN gap.  Exception: when the next segment's
 * header says it starts at exactly the LSN where the valid commits end, the
 * scan goes on in it — what stopped it was the stale tail of a recycled file
 * or a failed commit whose LSNs that segment reuses, never acknowledged data.
 *
 * Written blocks: the spare segment.  A preallocated (fallocate) file has
 * unwritten extents: every O_DIRECT commit into them converts extents at
 * completion (on ext4 a journal handle, and with RWF_DSYNC a journal commit
 * per write — about 1.7x the cost of a write to written blocks).  So each log
 * keeps one spare file whose blocks are all written.  Once the segment being
 * written is half full (7/8 while GC is about to delete a segment:
 * log_expect_recycled) and no spare is ready, `log/spare.tmp` is created,
 * preallocated (a full disk shows early), overwritten with zeros through the
 * ring (1 MiB O_DIRECT writes, at most two in flight, so commits are not
 * starved), fdatasynced and renamed `log/spare.ready`.  Waiting for half a
 * segment gives GC the time to provide a recycled spare (below), which costs
 * no write, and still leaves the zeroing half a segment's time.  The next
 * rotation renames the ready spare to the new segment's name and fsyncs the
 * directory, as for a created segment; if none is ready, the segment is
 * created preallocated as before and the zeroing goes on for the rotation
 * after.  A failure preparing the spare (ENOSPC, EIO) is logged once and only
 * means the old way until the next rotation; it never fails a commit.
 * log_stop drops a spare still being zeroed once its writes are back; a ready
 * one stays for the next open, which deletes any spare.tmp.  Recovery reads
 * only `*.seg` files, so neither name is mistaken for a segment.  Disk cost:
 * up to one more segment file per shard.
 *
 * Zeroing ahead.  The first segment of a new log, a segment created while no
 * spare was ready (under `write`: every segment but one made from a recycled
 * file, as its spare is only preallocated), and the last segment of a
 * reopened log (cut and preallocated again by recovery) have unwritten
 * extents where the next commits go.  Their tail is overwritten with zeros
 * through the ring right away (1 MiB writes), from LOG_AHEAD_GAP (1 MiB) past
 * the last commit to the end, skipping ahead when the commits catch up.
 * Within LOG_AHEAD_NEAR (4 MiB) of the commits two writes are in flight;
 * further ahead one at a time, at most one per 2 ms (512 MiB/s), resumed by a
 * timer on an idle loop: the whole tail at full speed stalled the commits
 * made meanwhile (the first SET on a fresh server took 150-190 ms instead of
 * 2-5 ms), and the commits never need it faster.  A fresh data directory pays
 * the extent conversions only for its first megabyte, not for its whole first
 * segment.  Under `fsync` that saves a journal commit per commit
 * (redis-benchmark SET -P 1 -c 50 on a fresh server: 68–71 k -> 77–96 k
 * req/s); under `write` the completion of a write into unwritten extents
 * waits for the conversion in a kernel worker (SET -P 1 p50 0.43–0.56 ->
 * 0.33–0.40 ms).  Under `write` the zeroing pauses while LOG_AHEAD_BUSY (128
 * KiB) of commits or any read are in flight: a writer bound by the device's
 * bandwidth would pay for the zeros with its own bytes, and reads would wait
 * behind them; under `none` nothing waits for a commit, so nothing is zeroed.
 * A commit whose blocks a zeroing write is still writing waits for it: two
 * writes in flight to one block have no order.  The zeros lie past the end of
 * the log, where recovery already expects zeroed or unwritten blocks; a
 * failed zeroing write is logged once and only costs speed.  Counted as
 * tail_bytes_zeroed.
 *
 * Only under `fsync` durability is the spare zeroed.  Under `write` and
 * `none` a commit is a plain O_DIRECT write whose extent conversion is
 * journalled with the next periodic fdatasync, not per write; there the
 * zeroing only doubled the bytes going to the device (a 4 KiB-value fill at
 * 1024 in flight per shard: 176-179 k puts/s with zeroing, 194-209 k
 * without).  Their spare is still created and preallocated ahead of the
 * rotation, and recycling works the same.
 *
 * Recycling.  A segment deleted by GC (log_delete_segment) becomes the ready
 * spare instead of being unlinked when none is ready and the file has the
 * full segment size (a spare being zeroed is then dropped).  Its old records
 * stay behind the new ones, and recovery never takes them: a record's CRC is
 * seeded with its segment's epoch, drawn anew for every segment (format.h),
 * and recovery accepts only the LSN that follows the previous record, while
 * every stale one is older than the segment's first LSN.  Blocks past where
 * its last writer stopped may still be unwritten extents: that costs speed,
 * not correctness.  A segment made from a recycled file is not zeroed
 * ahead, under `write` either: that wrote a whole segment of zeros per
 * rotation once GC recycled (a 256 MiB burst that slowed redis-benchmark
 * SET -P 1 to 60-75 k from 95-100 k req/s while it ran).  A reopened log
 * cuts and preallocates its last segment again (see Recovery), so that
 * segment loses its written tail once per restart.
 *
 * Ownership: a log belongs to one proactor; every call is made on it.
 */
#ifndef RINGKV_LOG_H
#define RINGKV_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "service/runtime/proactor.h"
#include "storage/format.h"

enum log_durability {
	LOG_DURABILITY_FSYNC = 0, /* done after the write is durable (RWF_DSYNC) */
	LOG_DURABILITY_WRITE = 1, /* done after the O_DIRECT write; fdatasync every second */
	LOG_DURABILITY_NONE = 2,  /* the caller acknowledges on append; done as for WRITE */
};

struct log_config {
	const char *dir;          /* the shard's log directory; created if missing */
	unsigned shard;           /* written into segment headers */
	uint64_t segment_size;    /* bytes, multiple of 4096, >= 1 MiB */
	enum log_durability durability;
	uint32_t commit_max;      /* bytes per commit buffer, multiple of 4096; 0 = 1 MiB */
};

/* Where a record lives. */
struct log_pos {
	uint64_t segment; /* segment id */
	uint64_t offset;  /* of the record header in the segment file */
	uint32_t length;  /* fmt_record_size() of the record */
	uint64_t lsn;
};

/* One appended record's completion.  Owned by the caller (embed it in the
 * request); must stay alive until done has run. */
struct log_write {
	void (*done)(struct log_write *w, int err); /* err: 0 or -errno */
	struct log_write *next;                     /* log's list; do not write.  While
	                                               done runs it is the record completed
	                                               next (a look-ahead), or NULL */
	struct log_pos pos;                         /* filled by log_append */
};

/* One read of a record by position.  Owned by the caller until done runs.
 * On success `rec` points into a buffer owned by the log that is valid only
 * during the callback. */
struct log_read {
	void (*done)(struct log_read *r, int err, const struct fmt_record *rec);
	struct log_pos pos;        /* what to read (set by the caller) */
	const void *key;           /* the key expected there (caller-owned, same lifetime) */
	uint32_t key_len;
	struct log_read *next;     /* log's list of readers of one block range */
};

/* Called for each record recovered; a negative return aborts log_open with
 * that error. */
typedef int (*log_replay_fn)(void *arg, const struct fmt_record *rec, const struct log_pos *pos);

struct log_stats {
	uint64_t commits;         /* commit writes completed */
	uint64_t records;         /* records in them */
	uint64_t bytes_written;   /* commit bytes written, padding included */
	uint64_t fsyncs;          /* fdatasync calls (durability write) and DSYNC writes */
	uint64_t write_errors;    /* commits that failed */
	uint64_t reads;           /* O_DIRECT reads issued */
	uint64_t reads_merged;    /* reads served by another read of the same blocks */
	uint64_t read_errors;     /* reads that failed (I/O error, CRC, LSN or key mismatch) */
	uint64_t segments;        /* segment files now */
	uint64_t log_bytes;       /* bytes of log data now (sum of segment fill levels) */
	uint64_t spare_bytes_zeroed;  /* zeroes written to prepare spare segments */
	uint64_t tail_bytes_zeroed;   /* zeroes written ahead of the commits into the
	                                 written segment's preallocated tail */
	uint64_t segments_from_spare; /* segments that started as the ready spare */
	uint64_t segments_recycled;   /* deleted segments kept as the spare instead */
};

struct log;

/* Opens (creating if needed) the log in cfg->dir on proactor `px`, replaying
 * records with LSN >= from_lsn through `replay`.  Blocking reads are used:
 * call at start-up, before serving.  Returns 0, or -errno with a message that
 * names the cause and the fix in `err` (e.g. a file system without O_DIRECT,
 * a segment of an unknown format version). */
int log_open(struct log **out, struct px *px, const struct log_config *cfg, uint64_t from_lsn,
	     log_replay_fn replay, void *arg, char *err, size_t errlen);

/* Reads the log in `dir` of shard `shard` as log_open would replay it from
 * from_lsn, handing each record of a complete commit to fn, and changes
 * nothing (no cut, no new segment): recovery reads every shard's COMMIT
 * records first (format.h, "Transactions").  A missing directory has no
 * records.  Blocking reads: start-up only.  Returns 0 or -errno (err). */
int log_scan(const char *dir, unsigned shard, uint64_t from_lsn, log_replay_fn fn, void *arg,
             char *err, size_t errlen);

/* Appends a PUT, DELETE, DBMAP or COMMIT; on return w->pos is set and the record will be in
 * the next commit.  Returns 0, -E2BIG if the record cannot fit a commit, or
 * -ENOSPC/-EIO while the log cannot write (no segment could be created). */
int log_append(struct log *log, const struct fmt_record *rec, struct log_write *w);

/* Makes the next appends, `bytes` in all (the sum of their fmt_record_size),
 * go into one commit: the open one if it has the room, else a new one.  Those
 * appends then cannot fail, and recovery applies all of them or none (a
 * command's records: format.h).  Returns 0, -E2BIG if they cannot fit one
 * segment, -ESHUTDOWN, or -ENOSPC/-EIO/-ENOMEM while the log cannot write. */
int log_reserve(struct log *log, uint64_t bytes);

/* Reads and verifies (CRC, LSN, key) the PUT record at r->pos.  done gets 0
 * and the record, or -ENOENT (segment gone: re-read the index), -EAGAIN (no
 * SQE or memory for it now: retry), -EIO (I/O error) or -EBADMSG (the record
 * there fails a check).  Concurrent reads of the same blocks share one I/O.
 * done runs on a later iteration, never inside this call. */
void log_read(struct log *log, struct log_read *r);

/* The LSN the next appended record will get. */
uint64_t log_next_lsn(const struct log *log);

/* Ids of the segments, oldest first, in ids[0..*n) (at most `cap`). */
size_t log_segments(const struct log *log, uint64_t *ids, size_t cap);

/* Deletes a sealed segment (GC), or keeps its file as the spare (see
 * Recycling).  Returns 0, -EBUSY for the segment being written, -ENOENT for
 * an unknown id. */
int log_delete_segment(struct log *log, uint64_t id);

/* GC says whether it is walking or holds a segment it will delete.  While it
 * does, no spare is zeroed before the segment being written is 7/8 full
 * (instead of half): the deleted segment becomes the spare at no cost (see
 * Recycling), where zeroing one writes a whole segment, and under `fsync`
 * every commit's flush then carries the zeros with it. */
void log_expect_recycled(struct log *log, bool expected);

/* A segment as garbage collection sees it. */
struct log_segment_info {
	uint64_t id;
	uint32_t epoch32;   /* seeds the records' CRC (fmt_decode_record) */
	uint64_t first_lsn;
	uint64_t fill;      /* bytes of commits, header block included */
	bool sealed;        /* no commit will be added or is in flight */
};

/* Fills *out for segment `id`.  Returns 0 or -ENOENT. */
int log_segment_info(const struct log *log, uint64_t id, struct log_segment_info *out);

/* Every record with an LSN up to this is on stable storage (with `fsync`
 * durability: every written one; otherwise: as of the last completed
 * fdatasync round). */
uint64_t log_synced_lsn(const struct log *log);

/* durability write/none: starts the fdatasync round now instead of at the
 * next one-second tick (no-op if one is running or nothing is unsynced). */
void log_sync_now(struct log *log);

/* A read of raw segment bytes (garbage collection walks sealed segments with
 * it).  Owned by the caller until done runs. */
struct log_raw_read {
	struct px_op op;       /* private */
	struct log *log;       /* private */
	int early_res;         /* private */
	uint64_t segment;      /* set by the caller: which segment */
	uint64_t offset;       /* set by the caller: a multiple of FMT_BLOCK */
	uint32_t len;          /* set by the caller: a multiple of FMT_BLOCK */
	uint8_t *buf;          /* set by the caller: FMT_BLOCK-aligned, len bytes */
	void (*done)(struct log_raw_read *r, int res); /* bytes read, or -errno (-ENOENT:
							  no such segment; -EAGAIN: retry) */
};

/* Reads r->len bytes at r->offset of r->segment through the ring; done runs
 * on a later iteration.  The log stays busy (log_busy) until it has run. */
void log_read_raw(struct log *log, struct log_raw_read *r);

const struct log_stats *log_get_stats(const struct log *log);

/* Begins closing: seals the open commit, stops the periodic fdatasync and
 * stops zeroing the spare.  Appends are refused (-ESHUTDOWN) from now on. */
void log_stop(struct log *log);

/* True while commits, reads, an fdatasync, the spare's I/O or the sync timer
 * are in flight; the owner keeps its proactor looping until this turns false. */
bool log_busy(const struct log *log);

/* Closes the files and frees the log.  Call after log_stop once log_busy()
 * is false (or right after a failed log_open). */
void log_close(struct log *log);

#endif
