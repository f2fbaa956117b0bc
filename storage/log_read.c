/* log_read: reads from the log (log_int.h; the contract: log.h, log_read and
 * log_read_raw).  A record is read in the smallest aligned span that holds
 * it, and reads of the same span in flight share one I/O; every completion
 * runs on a later loop iteration, never inside the call.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "storage/log_int.h"

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
	struct segment *seg = lg_find_segment(log, g->segment);
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
			LOG_ERROR("shard %u: reading the record at segment %" PRIu64
			          " offset %" PRIu64 " (LSN %" PRIu64 "): %s",
			          log->cfg.shard, g->segment, r->pos.offset, r->pos.lsn,
			          res < 0          ? strerror(-res)
			          : err == -ENOENT ? "segment deleted"
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
	struct segment *seg = lg_find_segment(log, r->pos.segment);
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

/* ---- raw reads (garbage collection) ------------------------------------- */

static void raw_read_complete(struct px *px, struct px_op *op, int res, unsigned flags)
{
	struct log_raw_read *r = container_of(op, struct log_raw_read, op);
	struct log *log = r->log;
	(void)flags;
	log->n_reads--;
	px_release(px);
	if (res < 0 && res != -EAGAIN) {
		log->stats.read_errors++;
		LOG_ERROR("shard %u: reading %u bytes of log segment %016" PRIx64
		          " at offset %" PRIu64 ": %s",
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
	struct segment *seg = lg_find_segment(log, r->segment);
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
