/* log_write: the log's write path (log_int.h; the contract: log.h, "Write
 * path" and "Errors").  log_append fills the open commit; the end-of-iteration
 * hook seals it with its PAD and writes it with one O_DIRECT write (group
 * commit); completions run in LSN order.  Under durability write/none the
 * segments written are fdatasynced once a second.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "storage/log_int.h"

static void commit_complete(struct px *px, struct px_op *op, int res, unsigned flags);

void lg_commit_release(struct log *log, struct commit *c)
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
	struct segment *seg = lg_last_segment(log);
	uint64_t header = log->write_offset == 0 ? FMT_SEG_HEADER_SIZE : 0;
	if (seg == NULL || log->write_offset + header + rsz + FMT_RECORD_HEADER > seg->size) {
		int ret = lg_segment_create(log);
		if (ret < 0)
			return ret;
		seg = lg_last_segment(log);
		header = FMT_SEG_HEADER_SIZE;
	}
	uint64_t need = lg_align_up(header + rsz + FMT_RECORD_HEADER);
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
	if (lg_ahead_overlaps(log, c->seg, c->base, c->size))
		return; /* after that zeroing write: retried by the end-of-iteration hook */
	struct io_uring_sqe *sqe = px_get_sqe(log->px, &c->op);
	if (sqe == NULL)
		return; /* retried by the end-of-iteration hook */
	io_uring_prep_write(sqe, c->seg->fd, c->buf, (unsigned)c->size, c->base);
	if (log->cfg.durability == LOG_DURABILITY_FSYNC)
		sqe->rw_flags = RWF_DSYNC;
	c->submitted = true;
}

void lg_commit_seal(struct log *log)
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
	lg_recount_bytes(log);
	commit_submit(log, c);
	if (lg_spare_due(log))
		lg_spare_start(log);
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
	lg_commit_release(log, c);
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
		lg_commit_release(log, c);
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

int log_reserve(struct log *log, uint64_t bytes)
{
	if (log->stopped)
		return -ESHUTDOWN;
	if (log->fail_err != 0)
		return log->fail_err;
	if (FMT_SEG_HEADER_SIZE + bytes + FMT_RECORD_HEADER > log->cfg.segment_size)
		return -E2BIG;
	struct commit *c = log->open;
	if (c != NULL && c->used + bytes + FMT_RECORD_HEADER <= c->limit)
		return 0;
	if (c != NULL)
		lg_commit_seal(log);
	return commit_open(log, bytes);
}

int log_append(struct log *log, const struct fmt_record *rec, struct log_write *w)
{
	if (rec->type != FMT_PUT && rec->type != FMT_DELETE && rec->type != FMT_DBMAP &&
	    rec->type != FMT_COMMIT)
		return -EINVAL;
	if (log->stopped)
		return -ESHUTDOWN;
	if (log->fail_err != 0)
		return log->fail_err;
	uint64_t rsz = fmt_rec_size(rec);
	if (rec->key_len > FMT_IDENT_MAX || rec->value_len > FMT_VALUE_MAX ||
	    FMT_SEG_HEADER_SIZE + rsz + FMT_RECORD_HEADER > log->cfg.segment_size)
		return -E2BIG;
	struct commit *c = log->open;
	if (c != NULL && c->used + rsz + FMT_RECORD_HEADER > c->limit) {
		lg_commit_seal(log);
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
	w->pos = (struct log_pos){.segment = c->seg->id,
	                          .offset = c->base + c->used,
	                          .length = (uint32_t)rsz,
	                          .lsn = r.lsn};
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

bool lg_hook(struct px *px, struct px_hook *hook)
{
	struct log *log = container_of(hook, struct log, hook);
	(void)px;
	bool work = false;
	if (log->open != NULL && log->open->n_records > 0 &&
	    (log->inflight == NULL || log->open->used >= LOG_GROUP_MIN)) {
		lg_commit_seal(log);
		work = true;
	}
	for (struct commit *c = log->inflight; c != NULL; c = c->next)
		if (!c->submitted) {
			commit_submit(log, c);
			work |= c->submitted; /* (one waiting for a zeroing write is no work) */
		}
	if (lg_spare_pump(log))
		work = true;
	if (lg_ahead_pump(log))
		work = true;
	return work;
}

/* ---- fdatasync rounds --------------------------------------------------- */

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

void lg_sync_tick(struct px *px, struct px_timer *t)
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

uint64_t log_synced_lsn(const struct log *log)
{
	return log->cfg.durability == LOG_DURABILITY_FSYNC ? log->last_good_lsn : log->synced_lsn;
}
