/* log: see log.h for the contract and log_int.h for how the log's files
 * divide the work.  This file keeps the segment files (created at a
 * rotation, removed when recovery cuts the log or GC deletes one), opens and
 * closes the log, and answers the queries.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "service/runtime/logging.h"
#include "storage/fsutil.h"
#include "storage/log_int.h"

/* ---- segment files ------------------------------------------------------ */

struct segment *lg_find_segment(struct log *log, uint64_t id)
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

void lg_recount_bytes(struct log *log)
{
	log->stats.segments = log->n_segs;
	log->stats.log_bytes = 0;
	for (size_t i = 0; i < log->n_segs; i++)
		log->stats.log_bytes += log->segs[i]->fill;
}

int lg_segment_create(struct log *log)
{
	struct segment *prev = lg_last_segment(log);
	uint64_t id = prev ? prev->id + 1 : 1;
	char path[FS_PATH_MAX];
	fmt_segment_name(path, sizeof(path), log->dir, id, "");
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
	int ret, fd = lg_spare_take(log, id, &written);
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
	                        .version = FMT_VERSION,
	                        .size = log->cfg.segment_size,
	                        .fill = 0,
	                        .header_ok = true};
	log->write_offset = 0;
	log->spare.blocked = false; /* a failed spare is tried again for the next rotation */
	lg_recount_bytes(log);
	if (preallocated)
		lg_ahead_start(log, seg);
	return 0;
}

/* Drops segment i from the log's array and frees it (not its fd). */
static void segment_forget(struct log *log, size_t i)
{
	free(log->segs[i]);
	memmove(&log->segs[i], &log->segs[i + 1], (log->n_segs - i - 1) * sizeof(log->segs[0]));
	log->n_segs--;
}

int lg_segment_remove(struct log *log, size_t i)
{
	char path[FS_PATH_MAX];
	struct segment *seg = log->segs[i];
	fmt_segment_name(path, sizeof(path), log->dir, seg->id, "");
	if (unlink(path) != 0 && errno != ENOENT)
		return -errno;
	close(seg->fd);
	segment_forget(log, i);
	return 0;
}

/* ---- open, close, queries ----------------------------------------------- */

/* Fails with a clear message if the file system of `dir` refuses O_DIRECT;
 * else sets log->read_align to the smallest read alignment it takes (512 or
 * FMT_BLOCK), found by an aligned write and a 512-byte read of a probe file. */
static int check_direct_io(struct log *log, char *err, size_t errlen)
{
	char path[FS_PATH_MAX];
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
		if (pwrite(fd, block, FMT_BLOCK, 0) == FMT_BLOCK &&
		    pread(fd, block, 512, 512) == 512)
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
		snprintf(err, errlen,
		         "segment size %" PRIu64 " / commit size %u: need a multiple"
		         " of 4096, segment at least 1 MiB",
		         cfg->segment_size, cfg->commit_max);
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
	lg_spare_init(log);
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
	ret = lg_load_segments(log, err, errlen);
	if (ret < 0)
		goto fail;
	ret = lg_recover(log, from_lsn, replay, arg, true, err, errlen);
	if (ret < 0)
		goto fail;
	lg_recount_bytes(log);
	lg_spare_load(log);

	log->hook.fn = lg_hook;
	px_hook_add(px, &log->hook);
	if (lg_last_segment(log) != NULL)
		lg_ahead_start(log,
		               lg_last_segment(log)); /* cut and preallocated again by recovery */
	if (cfg->durability != LOG_DURABILITY_FSYNC)
		px_timer_start(px, &log->sync_timer, LOG_SYNC_PERIOD_NS, LOG_SYNC_PERIOD_NS,
		               lg_sync_tick);
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
	struct segment *seg = lg_find_segment(log, id);
	if (seg == NULL)
		return -ENOENT;
	if (seg == lg_last_segment(log) || (log->open != NULL && log->open->seg == seg))
		return -EBUSY;
	for (struct commit *c = log->inflight; c != NULL; c = c->next)
		if (c->seg == seg)
			return -EBUSY;
	size_t i = 0;
	while (log->segs[i] != seg)
		i++;
	int ret = 0;
	if (lg_spare_recycle(log, seg))
		segment_forget(log, i);
	else
		ret = lg_segment_remove(log, i);
	lg_recount_bytes(log);
	return ret;
}

int log_segment_info(const struct log *log, uint64_t id, struct log_segment_info *out)
{
	struct segment *seg = lg_find_segment((struct log *)log, id);
	if (seg == NULL)
		return -ENOENT;
	bool busy = seg == lg_last_segment((struct log *)log) ||
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

const struct log_stats *log_get_stats(const struct log *log)
{
	return &log->stats;
}

void log_stop(struct log *log)
{
	log->stopped = true;
	if (log->open != NULL && log->open->n_records > 0)
		lg_commit_seal(log);
	if (px_timer_armed(&log->sync_timer))
		px_timer_stop(log->px, &log->sync_timer);
	lg_spare_pump(log); /* a spare being zeroed is dropped once its writes are back */
	if (px_timer_armed(&log->ahead.timer))
		px_timer_stop(log->px, &log->ahead.timer);
	lg_ahead_pump(log); /* ... and zeroing ahead stops */
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
		lg_commit_release(log, log->open);
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
		lg_spare_delete(log, &log->spare.fd, LOG_SPARE_TMP);
	if (log->dir_fd >= 0)
		close(log->dir_fd);
	free(log->segs);
	free(log);
}
