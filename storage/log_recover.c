/* log_recover: the scan of the log when it opens (log_int.h; the contract:
 * log.h, "Recovery").  Every segment file is opened and its header read; the
 * segments are then scanned with blocking O_DIRECT reads from the one holding
 * the first LSN to replay, complete commits are replayed, and the log is cut
 * after the last of them.
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "service/runtime/logging.h"
#include "storage/fsutil.h"
#include "storage/log_int.h"

/* A window onto one segment file, read with blocking O_DIRECT preads. */
struct scan_window {
	int fd;
	uint8_t *buf; /* FMT_BLOCK-aligned, `cap` bytes */
	uint64_t cap;
	uint64_t off; /* file offset of buf[0] */
	uint64_t len; /* valid bytes */
	uint64_t end; /* readable limit (the segment's size) */
};

/* Makes [at, at + n) readable in the window, which then starts at or before
 * `keep` (<= at).  Returns 0, -ENODATA past the end, or -errno. */
static int window_ensure(struct scan_window *w, uint64_t keep, uint64_t at, uint64_t n)
{
	if (at >= w->off && at + n <= w->off + w->len)
		return 0;
	if (at + n > w->end)
		return -ENODATA;
	uint64_t start = lg_align_down(keep);
	uint64_t want = lg_align_up(at + n) - start;
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

/* One recovery's progress. */
struct recovery {
	uint64_t from_lsn;
	log_replay_fn replay;
	void *arg;
	uint64_t next_lsn; /* LSN the next committed record must carry */
	uint64_t replayed; /* records handed to replay */
	uint64_t *pending; /* offsets of the current commit's records */
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
			ret = window_ensure(&w, commit, pos,
			                    fmt_record_size(le32toh(klen), le32toh(vlen)));
			if (ret == -ENODATA) {
				*torn = true;
				ret = 0;
				break;
			}
			if (ret < 0)
				goto io_error;
			st = fmt_decode_record(w.buf + (pos - w.off), w.off + w.len - pos, epoch32,
			                       &rec);
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
			pos += fmt_rec_size(&rec);
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
			                     .length = (uint32_t)fmt_rec_size(&r),
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

int lg_load_segments(struct log *log, char *err, size_t errlen)
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
		char path[FS_PATH_MAX];
		fmt_segment_name(path, sizeof(path), log->dir, ids[i], "");
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
		enum fmt_status s =
		    r == FMT_BLOCK ? fmt_decode_segment_header(block, &h) : FMT_SHORT;
		if (s == FMT_BAD_FIELD) {
			uint32_t version;
			memcpy(&version, block + 8, sizeof(version));
			ret = -EPROTO;
			snprintf(
			    err, errlen,
			    "%s is in on-disk format version %u (or has an impossible size); this"
			    " ringkv reads version %u: run a ringkv that matches the data, or"
			    " point storage.dir at another directory",
			    path, le32toh(version), FMT_VERSION);
			break;
		}
		seg->header_ok = s == FMT_OK && h.id == ids[i] && h.shard == log->cfg.shard;
		if (seg->header_ok) {
			seg->version = h.version;
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

int lg_recover(struct log *log, uint64_t from_lsn, log_replay_fn replay, void *arg, bool cut,
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
	if (!cut)
		goto out; /* log_scan: the files stay as they are */
	uint64_t dropped = 0;
	while (log->n_segs > keep) {
		dropped++;
		ret = lg_segment_remove(log, log->n_segs - 1);
		if (ret < 0) {
			snprintf(err, errlen, "cannot delete a torn log segment in %s: %s",
			         log->dir, strerror(-ret));
			goto out;
		}
	}
	struct segment *last = lg_last_segment(log);
	if (last != NULL) {
		ret = segment_cut(last, last->fill);
		if (ret < 0) {
			snprintf(err, errlen,
			         "cannot cut the torn tail of log segment %016" PRIx64 " in %s: %s",
			         last->id, log->dir, strerror(-ret));
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
	/* A segment of an older format takes no record of the new one: a ringkv
	 * of that format would read it as a torn commit (and cut the log there)
	 * instead of refusing the whole segment by its version. */
	if (last != NULL && last->version < FMT_VERSION)
		log->write_offset = last->size;
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

int log_scan(const char *dir, unsigned shard, uint64_t from_lsn, log_replay_fn fn, void *arg,
             char *err, size_t errlen)
{
	struct stat sb;
	if (stat(dir, &sb) != 0 && errno == ENOENT)
		return 0; /* a new shard: nothing written yet */
	struct log *log = calloc(1, sizeof(*log));
	if (log == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	log->cfg.shard = shard;
	log->dir_fd = -1;
	snprintf(log->dir, sizeof(log->dir), "%s", dir);
	log->cfg.dir = log->dir;
	int ret = lg_load_segments(log, err, errlen);
	if (ret == 0)
		ret = lg_recover(log, from_lsn, fn, arg, false, err, errlen);
	for (size_t i = 0; i < log->n_segs; i++) {
		close(log->segs[i]->fd);
		free(log->segs[i]);
	}
	free(log->segs);
	free(log);
	return ret;
}
