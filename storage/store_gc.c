/* store_gc: garbage collection of one shard's log (store_int.h; the contract
 * on gc_live_ratio is store.h's).  A walk reads its victim segment in
 * GC_CHUNK reads, decides each PUT record against the key table, moves the
 * live ones through the request path (STORE_RELOCATE) and queues the segment;
 * gc_reap deletes it once the index and the log hold the moved copies
 * durably.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "storage/store_int.h"

static void gc_read_done(struct log_raw_read *r, int res);

/* Reads the victim from `at` (at least `need` bytes, else GC_CHUNK) into the
 * GC buffer. */
static void gc_read(struct store *st, uint64_t at, uint64_t need)
{
	struct gc *g = &st->gc;
	uint64_t start = at & ~(uint64_t)(FMT_BLOCK - 1);
	uint64_t end = at + (need > GC_CHUNK ? need : GC_CHUNK);
	end = (end + FMT_BLOCK - 1) & ~(uint64_t)(FMT_BLOCK - 1);
	if (end > g->victim.fill)
		end = g->victim.fill; /* commits end on block boundaries */
	if (end - start > g->buf_cap) {
		uint8_t *b;
		if (posix_memalign((void **)&b, FMT_BLOCK, end - start) != 0) {
			g->failed = true;
			g->pos = g->victim.fill;
			return;
		}
		free(g->buf);
		g->buf = b;
		g->buf_cap = end - start;
	}
	g->read = (struct log_raw_read){.segment = g->victim.id,
	                                .offset = start,
	                                .len = (uint32_t)(end - start),
	                                .buf = g->buf,
	                                .done = gc_read_done};
	g->buf_len = 0;
	g->reading = true;
	log_read_raw(st->log, &g->read);
}

static void gc_read_done(struct log_raw_read *r, int res)
{
	struct gc *g = container_of(r, struct gc, read);
	struct store *st = container_of(g, struct store, gc);
	g->reading = false;
	if (res == -EAGAIN)
		return; /* the next step reads again */
	if (res < 0) {
		g->failed = true; /* logged by the log */
		g->pos = g->victim.fill;
	} else {
		g->buf_off = r->offset;
		g->buf_len = (uint64_t)res;
	}
	st_gc_step(st);
}

static void gc_reloc_done(struct store_req *req)
{
	struct store *st = req->store;
	struct gc *g = &st->gc;
	g->inflight--;
	g->inflight_bytes -= req->value_len;
	if (req->status == 0) {
		st->stats.gc_records_moved++;
		st->stats.gc_bytes_moved += req->value_len;
	} else if (req->status != -ENOENT) {
		g->failed = true; /* a write failed: the victim stays */
	}
	free(container_of(req, struct gc_req, req));
	st_gc_step(st);
}

/* Starts moving the PUT record `rec` found at `offset` of the victim.
 * Returns false when out of memory. */
static bool gc_relocate(struct store *st, const struct fmt_record *rec, uint64_t offset)
{
	struct gc *g = &st->gc;
	struct gc_req *x = malloc(sizeof(*x) + rec->key_len + rec->value_len);
	if (x == NULL)
		return false;
	memset(&x->req, 0, sizeof(x->req));
	memcpy(x->data, rec->key, rec->key_len);
	if (rec->value_len)
		memcpy(x->data + rec->key_len, rec->value, rec->value_len);
	x->segment = g->victim.id;
	x->offset = offset;
	x->lsn = rec->lsn;
	x->req.op = STORE_RELOCATE;
	x->req.key = x->data;
	x->req.key_len = rec->key_len;
	x->req.value = x->data + rec->key_len;
	x->req.value_len = rec->value_len;
	x->req.done = gc_reloc_done;
	g->inflight++;
	g->inflight_bytes += rec->value_len;
	st_submit_ident(st, &x->req, x->data, rec->key_len);
	return true;
}

/* True when the PUT record `rec` at `offset` of the victim is certainly
 * dead: its key's entry is in the key table, known, and points elsewhere.
 * Requests queued on the key run before any relocation and can only move it
 * further away, so the record stays dead.  Otherwise (the key is not cached,
 * or it points here) the relocation request decides, as it must read the
 * index or move the value.  Most records of a victim are overwritten ones:
 * this keeps them off the request path (an allocation, a copy of the value,
 * a message) — a walk of an overwritten 256 MiB segment cost the writers
 * about 0.9 µs per SET while it ran. */
static bool gc_record_dead(struct store *st, const struct fmt_record *rec, uint64_t offset)
{
	/* Only a string's value is ever pointed at: a collection's metadata and
	 * its elements live in the index, as do the keys of retired databases. */
	if (rec->key_len < FMT_KEY_IDENT_HEAD || rec->key[0] != FMT_IDENT_KEY ||
	    rec->flags != FMT_TYPE_STRING || st_db_of_id(st, st_ident_db(rec->key)) < 0)
		return true;
	const struct kentry *ke = st_kentry_find(st, rec->key, rec->key_len);
	if (ke == NULL || !ke->known)
		return false;
	return !ke->exists || ke->is_inline || ke->pos.segment != st->gc.victim.id ||
	       ke->pos.offset != offset || ke->pos.lsn != rec->lsn;
}

/* The walk of the victim is over: queue it for deletion, or give up on it. */
static void gc_finish(struct store *st)
{
	struct gc *g = &st->gc;
	g->active = false;
	if (g->failed && st->stopped)
		return; /* shutdown cut the walk short; the next start walks it again */
	if (g->failed) {
		LOG_WARN("shard %u: garbage collection of log segment %016" PRIx64 " failed; it is"
		         " kept and retried later",
		         st->cfg.shard, g->victim.id);
		g->retry_at_ns = px_now_ns() + GC_RETRY_NS;
		return;
	}
	g->waiting[g->n_waiting++] = (struct gc_waiting){.segment = g->victim.id,
	                                                 .lsn = log_next_lsn(st->log) - 1,
	                                                 .since_ns = px_now_ns(),
	                                                 .write_errors = g->write_errors};
	px_send(st->px, st->px->id, st_gc_next, st); /* the next victim, without waiting a tick */
}

/* The PUT records of the victim decoded but not yet decided (st_gc_step): their
 * keys are prefetched together, so the key table's cache misses overlap. */
struct gc_batch {
	struct fmt_record rec[STORE_PREFETCH_MAX]; /* pointing into gc.buf */
	uint64_t pos[STORE_PREFETCH_MAX];
	size_t n;
};

/* Decides the batched records: dead ones are skipped, the others get a
 * relocation request.  Returns false when out of memory: the walk then goes
 * back to the first record not handled. */
static bool gc_batch_run(struct store *st, struct gc_batch *b, unsigned *submitted)
{
	if (b->n == 0 || st->stopped) {
		b->n = 0; /* (stopped: the walk is cut short and the segment kept) */
		return true;
	}
	uint64_t hash[STORE_PREFETCH_MAX];
	for (size_t i = 0; i < b->n; i++)
		hash[i] = st_hash_key(b->rec[i].key, b->rec[i].key_len); /* (idents) */
	st_prefetch_hashes(st, hash, b->n);
	for (size_t i = 0; i < b->n; i++) {
		if (gc_record_dead(st, &b->rec[i], b->pos[i]))
			continue;
		if (!gc_relocate(st, &b->rec[i], b->pos[i])) {
			st->gc.pos = b->pos[i];
			b->n = 0;
			return false;
		}
		(*submitted)++;
	}
	b->n = 0;
	return true;
}

bool st_gc_step(struct store *st)
{
	struct gc *g = &st->gc;
	if (!g->active || g->reading)
		return false;
	struct gc_batch b;
	b.n = 0;
	unsigned submitted = 0, examined = 0;
	bool progress = false;
	while (g->pos < g->victim.fill && !st->stopped) {
		if (g->inflight >= GC_INFLIGHT_MAX || g->inflight_bytes >= GC_INFLIGHT_BYTES) {
			gc_batch_run(st, &b, &submitted);
			/* A relocation's completion continues: the loop may sleep (it
			 * spun here for seconds while `fsync` commits carried the
			 * relocations). */
			return progress || submitted > 0;
		}
		if (submitted >= GC_SUBMIT_PER_STEP || examined >= GC_EXAMINE_PER_STEP) {
			gc_batch_run(st, &b, &submitted);
			return true; /* the next iteration continues */
		}
		uint64_t avail =
		    g->buf_off + g->buf_len > g->pos ? g->buf_off + g->buf_len - g->pos : 0;
		if (g->pos < g->buf_off || avail < FMT_RECORD_HEADER) {
			if (gc_batch_run(st, &b,
			                 &submitted)) /* (before the read reuses the buffer) */
				gc_read(st, g->pos, FMT_RECORD_HEADER);
			return true;
		}
		const uint8_t *h = g->buf + (g->pos - g->buf_off);
		struct fmt_record rec;
		enum fmt_status fs = fmt_decode_record(h, avail, g->victim.epoch32, &rec);
		if (fs == FMT_SHORT) {
			uint32_t klen, vlen;
			memcpy(&klen, h + 24, 4);
			memcpy(&vlen, h + 28, 4);
			uint64_t need = fmt_record_size(le32toh(klen), le32toh(vlen));
			if (g->pos + need <= g->victim.fill && need > avail) {
				if (gc_batch_run(st, &b, &submitted))
					gc_read(st, g->pos, need);
				return true;
			}
		}
		if (fs != FMT_OK) {
			LOG_ERROR("shard %u: log segment %016" PRIx64 " offset %" PRIu64
			          ": %s; garbage"
			          " collection skips this segment",
			          st->cfg.shard, g->victim.id, g->pos, fmt_status_str(fs));
			g->failed = true;
			g->pos = g->victim.fill;
			break;
		}
		progress = true;
		if (rec.type == FMT_PAD) {
			g->pos += FMT_RECORD_HEADER + rec.value_len;
			continue;
		}
		examined++;
		if (rec.type == FMT_PUT) {
			b.rec[b.n] = rec;
			b.pos[b.n++] = g->pos;
		}
		g->pos += fmt_rec_size(&rec);
		if (b.n == STORE_PREFETCH_MAX && !gc_batch_run(st, &b, &submitted))
			return true; /* out of memory: try again next iteration */
	}
	if (!gc_batch_run(st, &b, &submitted))
		return true;
	if (st->stopped)
		g->failed = true; /* the walk is cut short: keep the segment */
	if (g->inflight == 0 && !g->reading) {
		gc_finish(st);
		progress = true;
	}
	return progress;
}

/* Deletes the walked segments whose relocations are durable in both the log
 * and the persisted index; asks the index to persist when that is what they
 * wait for. */
static void gc_reap(struct store *st)
{
	struct gc *g = &st->gc;
	if (g->n_waiting == 0)
		return;
	uint64_t persisted = idx_persisted_lsn(st->idx);
	uint64_t synced = log_synced_lsn(st->log);
	bool urgent = g->n_waiting >= GC_WAITING_MAX / 2 ||
	              px_now_ns() - g->waiting[0].since_ns > GC_PERSIST_WAIT_NS;
	if (urgent && g->waiting[g->n_waiting - 1].lsn > idx_applied_lsn(st->idx))
		st_apply_batch(st); /* written behind: a flush must find the relocations */
	unsigned kept = 0;
	bool want_flush = false, want_sync = false;
	for (unsigned i = 0; i < g->n_waiting; i++) {
		struct gc_waiting w = g->waiting[i];
		if (w.write_errors != st->stats.write_errors)
			continue; /* not safe to delete: a later walk will redo it */
		if (w.lsn > persisted || w.lsn > synced) {
			want_flush |= w.lsn > persisted && idx_applied_lsn(st->idx) >= w.lsn;
			want_sync |= w.lsn > synced;
			g->waiting[kept++] = w;
			continue;
		}
		int ret = log_delete_segment(st->log, w.segment);
		if (ret == -EBUSY) {
			g->waiting[kept++] = w;
			continue;
		}
		if (ret < 0 && ret != -ENOENT)
			LOG_WARN("shard %u: cannot delete log segment %016" PRIx64 ": %s",
			         st->cfg.shard, w.segment, strerror(-ret));
		for (size_t j = 0; j < st->n_usage; j++) {
			struct seg_usage *u = &st->usage[j];
			if (u->id != w.segment)
				continue;
			u->forget = u->dirty = true;
			st->usage_dirty = true;
			st_batch_touch(st);
		}
		st->stats.gc_segments_deleted++;
		LOG_DEBUG("shard %u: garbage collection deleted log segment %016" PRIx64,
		          st->cfg.shard, w.segment);
	}
	g->n_waiting = kept;
	if (want_flush && urgent)
		idx_request_flush(st->idx); /* -EBUSY/-EALREADY: the next tick asks again */
	if (want_sync)
		log_sync_now(st->log);
}

/* Picks the sealed segment with the lowest live fraction under the ratio. */
static void gc_pick(struct store *st)
{
	struct gc *g = &st->gc;
	size_t cap = log_get_stats(st->log)->segments;
	uint64_t *ids = malloc((cap ? cap : 1) * sizeof(*ids));
	if (ids == NULL)
		return; /* the next tick tries again */
	size_t n = log_segments(st->log, ids, cap);
	double best_ratio = st->cfg.gc_live_ratio;
	struct log_segment_info best = {0};
	bool found = false;
	for (size_t i = 0; i < n; i++) {
		struct log_segment_info info;
		if (log_segment_info(st->log, ids[i], &info) < 0 || !info.sealed)
			continue;
		bool waiting = false;
		for (unsigned k = 0; k < g->n_waiting; k++)
			waiting |= g->waiting[k].segment == info.id;
		if (waiting)
			continue;
		uint64_t data =
		    info.fill > FMT_SEG_HEADER_SIZE ? info.fill - FMT_SEG_HEADER_SIZE : 0;
		double ratio = data ? (double)st_usage_live(st, info.id) / (double)data : 0.0;
		if (ratio < best_ratio) {
			best_ratio = ratio;
			best = info;
			found = true;
		}
	}
	free(ids);
	if (!found)
		return;
	g->active = true;
	g->failed = false;
	g->victim = best;
	g->write_errors = st->stats.write_errors;
	g->pos = FMT_SEG_HEADER_SIZE;
	g->buf_off = g->buf_len = 0;
	st->stats.gc_runs++;
	LOG_DEBUG("shard %u: garbage collection walks log segment %016" PRIx64 " (%.0f%% live)",
	          st->cfg.shard, best.id, best_ratio * 100);
	st_gc_step(st);
}

void st_gc_next(void *arg)
{
	struct store *st = arg;
	if (st->stopped || st->failed)
		return;
	gc_reap(st);
	if (!st->gc.active && st->gc.n_waiting < GC_WAITING_MAX &&
	    px_now_ns() >= st->gc.retry_at_ns)
		gc_pick(st);
}

void st_gc_tick(struct px *px, struct px_timer *t)
{
	(void)px;
	st_gc_next(container_of(t, struct store, gc_timer));
}
