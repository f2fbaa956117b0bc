/* bulk: the offline bulk writer (contract and life cycle: bulk.h; on-disk
 * formats: format.h and index.h; crash safety: docs/IMPORT.md).
 *
 * Log writing.  Each shard fills one write buffer at a time with 1 MiB
 * commits (records, then the PAD to the next 4 KiB boundary, as the log's
 * group commits); a full buffer is written with one O_DIRECT write through a
 * private io_uring and the shard continues in another buffer while it is in
 * flight.  A segment's first buffer starts with its header block.  Buffers
 * are created on demand, at most one being filled per shard plus
 * BULK_INFLIGHT in flight.
 *
 * Index entries.  Each row's entry (its record's position, or the inline
 * value) is kept in memory: about 56 bytes plus the key (and an inline value)
 * per row.  bulk_finish sorts them by index row with a stable radix sort on
 * the key hash, so rows of one key stay in LSN order and the last one wins.
 */
#include "bulk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service/runtime/logging.h"
#include "service/runtime/pool.h"
#include "storage/format.h"
#include "storage/fsutil.h"
#include "storage/index.h"
#include "storage/layout.h"
#include "storage/store.h"

#define BULK_COMMIT_MAX  (1u << 20)   /* bytes per commit: the server's default */
#define BULK_BUF_SIZE    (8u << 20)   /* bytes per O_DIRECT write */
#define BULK_INFLIGHT    4            /* writes in flight at most, all shards together */
#define BULK_ARENA_CHUNK (64u << 20)  /* bytes per chunk of kept keys and inline values */
#define BULK_STOP_CHECK  65536        /* rows between looks at cfg->stop while indexing */
#define TMP_SUFFIX       ".import"    /* new segments until the commit: "<id>.seg.import" */
#define SST_NAME         "import.sst" /* the shard's table, in DIR/shard-NNN */
#define JOURNAL_NAME     "IMPORT-COMMIT" /* DIR/IMPORT-COMMIT: the commit point */
#define JOURNAL_MAGIC    "ringkv-import-commit 1"
/* What to do when a shard's LOCK is held (layout_lock_shard). */
#define LOCK_BUSY_FIX \
	"an offline import needs the server stopped; stop it, or import online (--host/--port)"

/* One write buffer: a run of whole commits of one segment. */
struct wbuf {
	uint8_t *data; /* FMT_BLOCK-aligned, `cap` bytes */
	uint64_t cap;
	uint64_t used;     /* bytes filled; a multiple of FMT_BLOCK when written */
	uint64_t file_off; /* offset of data[0] in the segment file */
	int fd;            /* the segment file */
	struct wbuf *next; /* free list */
};

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	uint8_t data[];
};

/* A row's future index entry. */
struct bulk_row {
	const uint8_t *key; /* in the shard's arena; an inline value follows it */
	uint64_t lsn;
	uint64_t expiry_ms;
	uint64_t segment;
	uint64_t offset; /* of the record in the segment */
	uint32_t length; /* fmt_record_size() of the record */
	uint32_t value_len;
	uint32_t hash; /* idx_key_hash(key) */
	uint32_t key_len;
};

struct bulk_shard {
	unsigned no;
	char dir[4096];     /* DIR/shard-NNN */
	char log_dir[FS_PATH_MAX]; /* DIR/shard-NNN/log */
	int lock_fd;        /* DIR/shard-NNN/LOCK, flock()ed; -1 if not taken */
	struct idx *idx;
	uint64_t base_lsn;  /* applied_lsn before the import */
	uint64_t base_keys; /* key count before the import */
	uint64_t next_lsn;  /* LSN of the next record */
	uint64_t first_seg; /* id of the first new segment */
	uint64_t n_segs;    /* new segments: first_seg .. first_seg + n_segs - 1 */
	int seg_fd;         /* the new segment being written, or -1 */
	uint64_t seg_id;
	uint32_t seg_epoch32;    /* low bits of its epoch: the record CRC seed */
	struct wbuf *buf;        /* being filled, or NULL */
	uint64_t commit_start;   /* offset in buf->data where the open commit began */
	unsigned commit_records; /* records in the open commit (0: none open) */
	uint64_t commit_last_lsn;
	struct bulk_row *rows; /* in LSN order */
	size_t n_rows, cap_rows;
	struct arena_chunk *arena;            /* newest first */
	bool has_sst;                         /* SST_NAME was built */
	uint64_t keys, new_keys, overwritten; /* from bulk_finish's indexing */
	int result; /* the indexing thread's: 0 or -errno (message in err) */
	char err[512];
};

struct bulk {
	struct bulk_config cfg;
	char dir[4096];
	struct idx_shared *shared;
	struct bulk_shard *shards; /* [cfg.shards] */
	struct io_uring ring;
	bool ring_ok;
	struct wbuf *free_bufs;
	struct wbuf **all_bufs; /* every buffer made, to free */
	size_t n_bufs, cap_bufs;
	unsigned inflight; /* writes submitted, not completed */
	int write_err;     /* the first failed write, or 0 */
	uint64_t log_bytes;
	uint64_t rows;
	bool finishing;         /* bulk_finish began: no more puts */
	bool committed;         /* segments renamed: the import stands */
	atomic_uint next_shard; /* indexing: the next shard to take */
};

/* ---- helpers ----------------------------------------------------------- */

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int ret = fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	return ret;
}

static bool dir_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- recovery of existing shards --------------------------------------- */

/* One step run on the recovery pool's proactor. */
struct recover_step {
	struct store_config cfg;
	struct store *st;
	int what; /* RECOVER_OPEN, RECOVER_STOP, RECOVER_BUSY, RECOVER_CLOSE */
	int ret;
	bool busy;
	char err[1024];
	atomic_bool done;
};

enum { RECOVER_OPEN, RECOVER_STOP, RECOVER_BUSY, RECOVER_CLOSE };

static void recover_run(void *arg)
{
	struct recover_step *r = arg;
	switch (r->what) {
	case RECOVER_OPEN:
		r->ret = store_open(&r->st, px_current(), &r->cfg, r->err, sizeof(r->err));
		break;
	case RECOVER_STOP:
		store_stop(r->st);
		break;
	case RECOVER_BUSY:
		r->busy = store_busy(r->st);
		break;
	case RECOVER_CLOSE:
		store_close(r->st);
		break;
	}
	atomic_store(&r->done, true);
}

/* Runs step `what` on the pool's proactor and waits for it. */
static void recover_do(struct pool *pool, struct recover_step *r, int what)
{
	r->what = what;
	atomic_store(&r->done, false);
	pool_run_on(pool, 0, recover_run, r);
	while (!atomic_load(&r->done))
		usleep(100);
}

/* Opens and cleanly closes every shard that holds data, as a server start-up
 * then shutdown would: the log is replayed into the index (applied_lsn then
 * covers the whole log) and a torn tail is cut. */
static int recover_shards(struct bulk *b, char *err, size_t errlen)
{
	struct pool *pool = NULL;
	int ret = 0;
	for (unsigned i = 0; i < b->cfg.shards && ret == 0; i++) {
		struct bulk_shard *s = &b->shards[i];
		char index_dir[FS_PATH_MAX];
		snprintf(index_dir, sizeof(index_dir), "%s/index", s->dir);
		if (!dir_exists(index_dir) && !dir_exists(s->log_dir))
			continue;
		if (pool == NULL) {
			struct pool_config pc = {
			    .threads = 1,
			    .queue_size = 64,
			    .px = {.entries = 256, .busy_poll_us = 0, .msg_budget = 64},
			    .quiet = true,
			};
			ret = pool_start(&pool, &pc, err, errlen);
			if (ret < 0)
				return ret;
		}
		struct recover_step r = {.cfg = {.dir = s->dir,
		                                 .shard = i,
		                                 .segment_size = b->cfg.segment_size,
		                                 .durability = LOG_DURABILITY_FSYNC,
		                                 .inline_max = b->cfg.inline_max,
		                                 .cache_bytes = 1u << 20,
		                                 .shared = b->shared}};
		recover_do(pool, &r, RECOVER_OPEN);
		if (r.ret < 0) {
			snprintf(err, errlen, "shard %u: %s%s", i, r.err,
			         r.ret == -EBUSY ? " (an offline import needs the server stopped;"
			                           " or import online with --host/--port)"
			                         : "");
			ret = r.ret;
			break;
		}
		recover_do(pool, &r, RECOVER_STOP);
		do
			recover_do(pool, &r, RECOVER_BUSY);
		while (r.busy);
		recover_do(pool, &r, RECOVER_CLOSE);
	}
	if (pool != NULL)
		pool_stop(pool);
	return ret;
}

/* ---- open -------------------------------------------------------------- */

/* True if `name` is "<16 hex digits>.seg" followed by `suffix`; sets *id. */
static bool segment_name(const char *name, const char *suffix, uint64_t *id)
{
	size_t n = strlen(name), sl = strlen(suffix);
	if (n != 20 + sl || strcmp(name + 20, suffix) != 0 || strncmp(name + 16, ".seg", 4) != 0)
		return false;
	char *end;
	*id = strtoull(name, &end, 16);
	return end == name + 16;
}

/* Deletes what an earlier import killed before its commit left behind (its
 * temporary segments and table) and finds the id the first new segment
 * takes. */
static int scan_log_dir(struct bulk_shard *s, char *err, size_t errlen)
{
	char path[FS_PATH_MAX + 1 + NAME_MAX]; /* log_dir, '/', a directory entry's name */
	snprintf(path, sizeof(path), "%s/" SST_NAME, s->dir);
	if (unlink(path) != 0 && errno != ENOENT) {
		int e = errno;
		snprintf(err, errlen, "cannot delete the stale %s: %s", path, strerror(e));
		return -e;
	}
	int ret = fs_make_dirs(s->log_dir);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create %s: %s", s->log_dir, strerror(-ret));
		return ret;
	}
	DIR *d = opendir(s->log_dir);
	if (d == NULL) {
		int e = errno;
		snprintf(err, errlen, "cannot read %s: %s", s->log_dir, strerror(e));
		return -e;
	}
	uint64_t max_id = 0, id;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (segment_name(de->d_name, "", &id)) {
			if (id > max_id)
				max_id = id;
		} else if (segment_name(de->d_name, TMP_SUFFIX, &id)) {
			snprintf(path, sizeof(path), "%s/%s", s->log_dir, de->d_name);
			if (unlink(path) != 0 && errno != ENOENT) {
				ret = -errno;
				snprintf(err, errlen, "cannot delete the stale %s: %s", path,
				         strerror(errno));
				break;
			}
		}
	}
	closedir(d);
	s->first_seg = max_id + 1;
	return ret;
}

int bulk_open(struct bulk **out, const struct bulk_config *cfg, char *err, size_t errlen)
{
	*out = NULL;
	if (cfg->shards < 1 || cfg->shards > LAYOUT_MAX_SHARDS || cfg->segment_size < (1u << 20) ||
	    cfg->segment_size % FMT_BLOCK != 0 || cfg->threads < 1) {
		snprintf(err, errlen,
		         "bulk: invalid configuration (shards %u, segment size %" PRIu64
		         ", threads %u)",
		         cfg->shards, cfg->segment_size, cfg->threads);
		return -EINVAL;
	}
	struct bulk *b = calloc(1, sizeof(*b));
	if (b == NULL || (b->shards = calloc(cfg->shards, sizeof(*b->shards))) == NULL) {
		free(b);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	b->cfg = *cfg;
	snprintf(b->dir, sizeof(b->dir), "%s", cfg->dir);
	b->cfg.dir = b->dir;
	for (unsigned i = 0; i < cfg->shards; i++) {
		struct bulk_shard *s = &b->shards[i];
		s->no = i;
		s->lock_fd = -1;
		s->seg_fd = -1;
		layout_shard_dir(b->dir, i, s->dir, sizeof(s->dir));
		snprintf(s->log_dir, sizeof(s->log_dir), "%s/log", s->dir);
	}
	int ret = idx_shared_create(&b->shared, cfg->index_cache, (int)cfg->threads, err, errlen);
	if (ret < 0)
		goto fail;
	ret = recover_shards(b, err, errlen);
	if (ret < 0)
		goto fail;
	for (unsigned i = 0; i < cfg->shards; i++) {
		struct bulk_shard *s = &b->shards[i];
		ret = fs_make_dirs(s->dir);
		if (ret < 0) {
			snprintf(err, errlen, "cannot create %s: %s", s->dir, strerror(-ret));
			goto fail;
		}
		ret = layout_lock_shard(s->dir, &s->lock_fd, LOCK_BUSY_FIX, err, errlen);
		if (ret < 0)
			goto fail;
	}
	for (unsigned i = 0; i < cfg->shards; i++) {
		struct bulk_shard *s = &b->shards[i];
		char index_dir[FS_PATH_MAX];
		snprintf(index_dir, sizeof(index_dir), "%s/index", s->dir);
		ret = idx_open(&s->idx, b->shared, index_dir, err, errlen);
		if (ret < 0)
			goto fail;
		s->base_lsn = idx_applied_lsn(s->idx);
		s->base_keys = idx_key_count(s->idx);
		s->next_lsn = s->base_lsn + 1;
		ret = scan_log_dir(s, err, errlen);
		if (ret < 0)
			goto fail;
	}
	ret = io_uring_queue_init(2 * BULK_INFLIGHT, &b->ring, 0);
	if (ret < 0) {
		snprintf(err, errlen,
		         "cannot create an io_uring: %s (io_uring may be disabled:"
		         " sysctl kernel.io_uring_disabled, a seccomp filter, or RLIMIT_MEMLOCK)",
		         strerror(-ret));
		goto fail;
	}
	b->ring_ok = true;
	*out = b;
	return 0;
fail:
	bulk_close(b);
	return ret;
}

/* ---- log writing ------------------------------------------------------- */

/* Handles one write completion: the buffer returns to the free list. */
static void reap_one(struct bulk *b, struct io_uring_cqe *cqe)
{
	struct wbuf *w = io_uring_cqe_get_data(cqe);
	int res = cqe->res;
	io_uring_cqe_seen(&b->ring, cqe);
	if (res >= 0 && (uint64_t)res != w->used)
		res = -ENOSPC; /* a short O_DIRECT write: the device is full */
	if (res < 0 && b->write_err == 0)
		b->write_err = res;
	b->inflight--;
	w->next = b->free_bufs;
	b->free_bufs = w;
}

/* Waits for one write in flight to complete. */
static int wait_one(struct bulk *b)
{
	struct io_uring_cqe *cqe;
	int ret;
	do
		ret = io_uring_wait_cqe(&b->ring, &cqe);
	while (ret == -EINTR);
	if (ret < 0)
		return ret;
	reap_one(b, cqe);
	return 0;
}

static int drain_writes(struct bulk *b)
{
	while (b->inflight > 0) {
		int ret = wait_one(b);
		if (ret < 0)
			return ret;
	}
	return b->write_err;
}

/* Takes a buffer of at least `cap` bytes: a free one, a new one, or the
 * first that a completing write frees. */
static int get_buf(struct bulk *b, uint64_t cap, struct wbuf **out)
{
	while (b->free_bufs == NULL && b->n_bufs >= b->cfg.shards + BULK_INFLIGHT) {
		int ret = wait_one(b);
		if (ret < 0)
			return ret;
	}
	struct wbuf *w = b->free_bufs;
	if (w != NULL) {
		b->free_bufs = w->next;
	} else {
		if (b->n_bufs == b->cap_bufs) {
			size_t n = b->cap_bufs ? b->cap_bufs * 2 : 16;
			struct wbuf **all = realloc(b->all_bufs, n * sizeof(*all));
			if (all == NULL)
				return -ENOMEM;
			b->all_bufs = all;
			b->cap_bufs = n;
		}
		w = calloc(1, sizeof(*w));
		if (w == NULL)
			return -ENOMEM;
		b->all_bufs[b->n_bufs++] = w;
	}
	if (w->cap < cap) {
		free(w->data);
		w->data = NULL;
		w->cap = 0;
		if (posix_memalign((void **)&w->data, FMT_BLOCK, cap) != 0) {
			w->next = b->free_bufs;
			b->free_bufs = w;
			return -ENOMEM;
		}
		w->cap = cap;
	}
	w->used = 0;
	*out = w;
	return 0;
}

/* Seals the shard's open commit with its PAD. */
static void seal_commit(struct bulk_shard *s)
{
	if (s->commit_records == 0)
		return;
	struct wbuf *w = s->buf;
	uint64_t size = fmt_encode_pad(w->data + s->commit_start, w->used - s->commit_start,
	                               s->seg_epoch32, s->commit_last_lsn);
	w->used = s->commit_start + size;
	s->commit_records = 0;
}

/* Sends the shard's buffer (whole commits) to the disk. */
static int submit_buf(struct bulk *b, struct bulk_shard *s)
{
	struct wbuf *w = s->buf;
	s->buf = NULL;
	if (w == NULL)
		return 0;
	if (w->used == 0) {
		w->next = b->free_bufs;
		b->free_bufs = w;
		return 0;
	}
	struct io_uring_sqe *sqe;
	while ((sqe = io_uring_get_sqe(&b->ring)) == NULL) {
		int ret = io_uring_submit(&b->ring);
		if (ret < 0)
			return ret;
	}
	io_uring_prep_write(sqe, w->fd, w->data, (unsigned)w->used, w->file_off);
	io_uring_sqe_set_data(sqe, w);
	b->inflight++;
	b->log_bytes += w->used;
	int ret = io_uring_submit(&b->ring);
	if (ret < 0)
		return ret;
	while (b->inflight >= BULK_INFLIGHT) {
		ret = wait_one(b);
		if (ret < 0)
			return ret;
	}
	return b->write_err;
}

/* Ends the segment being written: its data written and synced, the file
 * closed. */
static int close_segment(struct bulk *b, struct bulk_shard *s)
{
	if (s->seg_fd < 0)
		return 0;
	seal_commit(s);
	uint64_t end = s->buf ? s->buf->file_off + s->buf->used : b->cfg.segment_size;
	int ret = submit_buf(b, s);
	if (ret == 0)
		ret = drain_writes(b);
	/* The last segment ends where its data does (the server cuts and
	 * preallocates it again when it resumes writing there). */
	if (ret == 0 && b->finishing && ftruncate(s->seg_fd, (off_t)end) != 0)
		ret = -errno;
	if (ret == 0 && fdatasync(s->seg_fd) != 0)
		ret = -errno;
	close(s->seg_fd);
	s->seg_fd = -1;
	return ret;
}

/* Creates the shard's next segment (temporary name), preallocated to
 * segment_size, and starts its first buffer with the header block. */
static int open_segment(struct bulk *b, struct bulk_shard *s, uint64_t first_record_size)
{
	uint64_t id = s->first_seg + s->n_segs;
	char path[FS_PATH_MAX];
	fmt_segment_name(path, sizeof(path), s->log_dir, id, TMP_SUFFIX);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	s->n_segs++; /* from here on bulk_close deletes it */
	int ret = posix_fallocate(fd, 0, (off_t)b->cfg.segment_size);
	if (ret != 0) {
		close(fd);
		return -ret;
	}
	uint64_t epoch;
	if (getrandom(&epoch, sizeof(epoch), 0) != sizeof(epoch))
		epoch =
		    (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^ id ^ ((uint64_t)getpid() << 32);
	s->seg_fd = fd;
	s->seg_id = id;
	s->seg_epoch32 = (uint32_t)epoch;
	uint64_t need = FMT_SEG_HEADER_SIZE + first_record_size + FMT_RECORD_HEADER + FMT_BLOCK;
	ret = get_buf(b, need > BULK_BUF_SIZE ? need : BULK_BUF_SIZE, &s->buf);
	if (ret < 0)
		return ret;
	s->buf->fd = fd;
	s->buf->file_off = 0;
	struct fmt_segment_header h = {.version = FMT_VERSION,
	                               .shard = s->no,
	                               .id = id,
	                               .epoch = epoch,
	                               .first_lsn = s->next_lsn,
	                               .size = b->cfg.segment_size};
	fmt_encode_segment_header(s->buf->data, &h);
	s->buf->used = FMT_SEG_HEADER_SIZE;
	return 0;
}

/* Copies key (and an inline value after it) into the shard's arena. */
static const uint8_t *arena_keep(struct bulk_shard *s, const void *key, size_t klen,
                                 const void *value, size_t vlen)
{
	size_t n = klen + vlen;
	struct arena_chunk *c = s->arena;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > BULK_ARENA_CHUNK ? n : BULK_ARENA_CHUNK;
		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->used = 0;
		c->cap = cap;
		c->next = s->arena;
		s->arena = c;
	}
	uint8_t *p = c->data + c->used;
	if (klen)
		memcpy(p, key, klen);
	if (vlen)
		memcpy(p + klen, value, vlen);
	c->used += n;
	return p;
}

/* Names the failure of a log write in err. */
static int write_failed(struct bulk_shard *s, int ret, char *err, size_t errlen)
{
	if (ret == -ENOMEM)
		snprintf(err, errlen,
		         "out of memory (the import keeps about 60 bytes plus the key"
		         " per row in memory: split the input)");
	else
		snprintf(err, errlen, "writing the log of shard %u in %s: %s%s", s->no, s->log_dir,
		         strerror(-ret),
		         ret == -EINVAL   ? " (the file system refuses O_DIRECT: use a disk file"
		                            " system such as ext4 or xfs)"
		         : ret == -ENOSPC ? " (free some space)"
		                          : "");
	return ret;
}

int bulk_put(struct bulk *b, const void *key, size_t klen, const void *value, size_t vlen,
             uint64_t expiry_ms, char *err, size_t errlen)
{
	if (klen > FMT_KEY_MAX) {
		snprintf(err, errlen, "the key is %zu bytes; the longest ringkv takes is %u", klen,
		         FMT_KEY_MAX);
		return -E2BIG;
	}
	uint64_t rsz =
	    fmt_record_size((uint32_t)klen, vlen > UINT32_MAX ? UINT32_MAX : (uint32_t)vlen);
	if (vlen > FMT_VALUE_MAX ||
	    FMT_SEG_HEADER_SIZE + rsz + FMT_RECORD_HEADER > b->cfg.segment_size) {
		snprintf(err, errlen,
		         "the value is %zu bytes; with storage.segment_size %" PRIu64 " the longest"
		         " is %" PRIu64 " (raise segment_size)",
		         vlen, b->cfg.segment_size,
		         b->cfg.segment_size - FMT_SEG_HEADER_SIZE - FMT_RECORD_HEADER -
		             fmt_record_size((uint32_t)klen, 0));
		return -E2BIG;
	}
	struct bulk_shard *s = &b->shards[layout_key_shard(key, klen, b->cfg.shards)];
	int ret;
	if (s->n_rows == s->cap_rows) {
		size_t cap = s->cap_rows ? s->cap_rows * 2 : 4096;
		struct bulk_row *rows = realloc(s->rows, cap * sizeof(*rows));
		if (rows == NULL)
			return write_failed(s, -ENOMEM, err, errlen);
		s->rows = rows;
		s->cap_rows = cap;
	}
	/* Where the record goes: a new segment when it would not fit (with a
	 * PAD after it), a new commit past BULK_COMMIT_MAX, a new buffer when
	 * the commit could outgrow this one. */
	uint64_t pos = s->buf ? s->buf->file_off + s->buf->used : 0;
	if (s->seg_fd < 0 || pos + rsz + FMT_RECORD_HEADER > b->cfg.segment_size) {
		ret = close_segment(b, s);
		if (ret == 0)
			ret = open_segment(b, s, rsz);
		if (ret < 0)
			return write_failed(s, ret, err, errlen);
	} else if (s->commit_records > 0 &&
	           s->buf->used - s->commit_start + rsz + FMT_RECORD_HEADER > BULK_COMMIT_MAX) {
		seal_commit(s);
	}
	if (s->commit_records == 0) {
		uint64_t need = rsz + FMT_RECORD_HEADER + FMT_BLOCK;
		if (need < BULK_COMMIT_MAX)
			need = BULK_COMMIT_MAX;
		if (s->buf->cap - s->buf->used < need) {
			uint64_t off = s->buf->file_off + s->buf->used;
			ret = submit_buf(b, s);
			if (ret == 0)
				ret = get_buf(b, need > BULK_BUF_SIZE ? need : BULK_BUF_SIZE,
				              &s->buf);
			if (ret < 0)
				return write_failed(s, ret, err, errlen);
			s->buf->fd = s->seg_fd;
			s->buf->file_off = off;
		}
		s->commit_start = s->buf->used;
	}
	bool is_inline = vlen <= b->cfg.inline_max;
	const uint8_t *kept = arena_keep(s, key, klen, value, is_inline ? vlen : 0);
	if (kept == NULL)
		return write_failed(s, -ENOMEM, err, errlen);
	struct fmt_record rec = {.type = FMT_PUT,
	                         .lsn = s->next_lsn++,
	                         .expiry_ms = expiry_ms,
	                         .key_len = (uint32_t)klen,
	                         .value_len = (uint32_t)vlen,
	                         .key = key,
	                         .value = value};
	uint64_t off = s->buf->file_off + s->buf->used;
	fmt_encode_record(s->buf->data + s->buf->used, s->seg_epoch32, &rec);
	s->buf->used += rsz;
	s->commit_records++;
	s->commit_last_lsn = rec.lsn;
	s->rows[s->n_rows++] = (struct bulk_row){.key = kept,
	                                         .lsn = rec.lsn,
	                                         .expiry_ms = expiry_ms,
	                                         .segment = s->seg_id,
	                                         .offset = off,
	                                         .length = (uint32_t)rsz,
	                                         .value_len = (uint32_t)vlen,
	                                         .hash = idx_key_hash(key, klen),
	                                         .key_len = (uint32_t)klen};
	b->rows++;
	return 0;
}

uint64_t bulk_bytes(const struct bulk *b)
{
	uint64_t n = b->log_bytes;
	for (unsigned i = 0; i < b->cfg.shards; i++)
		if (b->shards[i].buf != NULL)
			n += b->shards[i].buf->used;
	return n;
}

/* ---- indexing ---------------------------------------------------------- */

/* Key order inside one hash: memcmp, a shorter prefix first (index.h). */
static int key_cmp(const struct bulk_row *x, const struct bulk_row *y)
{
	size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
	int c = n ? memcmp(x->key, y->key, n) : 0;
	if (c != 0)
		return c;
	return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* Sorts the rows into index-row order, stably (rows of one key stay in LSN
 * order): (hash << 32 | row number) values, built in one sequential pass,
 * then a two-pass LSD radix sort on the hash half, then an insertion sort by
 * key inside each run of equal hashes (such runs are a handful of rows at
 * most).  Returns the sorted values (malloc()ed; the row number is the low
 * half) or NULL. */
static uint64_t *sort_rows(const struct bulk_shard *s)
{
	size_t n = s->n_rows;
	uint64_t *a = malloc(n * sizeof(*a)), *t = malloc(n * sizeof(*t));
	size_t *count = calloc(65536, sizeof(*count));
	if (a == NULL || t == NULL || count == NULL) {
		free(a);
		free(t);
		free(count);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		a[i] = (uint64_t)s->rows[i].hash << 32 | i;
	for (int shift = 32; shift < 64; shift += 16) {
		memset(count, 0, 65536 * sizeof(*count));
		for (size_t i = 0; i < n; i++)
			count[(a[i] >> shift) & 0xFFFF]++;
		size_t sum = 0;
		for (size_t k = 0; k < 65536; k++) {
			size_t c = count[k];
			count[k] = sum;
			sum += c;
		}
		for (size_t i = 0; i < n; i++)
			t[count[(a[i] >> shift) & 0xFFFF]++] = a[i];
		uint64_t *swap = a;
		a = t;
		t = swap;
	}
	free(t);
	free(count);
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && a[j] >> 32 == a[i] >> 32)
			j++;
		for (size_t k = i + 1; k < j; k++) {
			uint64_t v = a[k];
			size_t m = k;
			while (m > i &&
			       key_cmp(&s->rows[(uint32_t)a[m - 1]], &s->rows[(uint32_t)v]) > 0) {
				a[m] = a[m - 1];
				m--;
			}
			a[m] = v;
		}
		i = j;
	}
	return a;
}

/* Live bytes per segment (the index's 's' rows) while a table is built:
 * the shard's existing rows, then one per new segment. */
struct live_table {
	struct idx_seg_live *segs; /* existing segments, ascending, then the new ones */
	bool *touched;             /* [n_old]: changed by an overwrite */
	size_t n_old, n;
	int err;
};

static void live_load(void *arg, uint64_t segment, uint64_t live)
{
	struct live_table *t = arg;
	if (t->err)
		return;
	if (t->n_old % 256 == 0) {
		struct idx_seg_live *p = realloc(t->segs, (t->n_old + 256) * sizeof(*p));
		if (p == NULL) {
			t->err = -ENOMEM;
			return;
		}
		t->segs = p;
	}
	t->segs[t->n_old++] = (struct idx_seg_live){.segment = segment, .live = live};
}

/* Takes `length` bytes off an existing segment's live count (an overwritten
 * key's old record); a segment without a row counts 0 already. */
static void live_drop(struct live_table *t, uint64_t segment, uint64_t length)
{
	size_t lo = 0, hi = t->n_old;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (t->segs[mid].segment < segment)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == t->n_old || t->segs[lo].segment != segment)
		return;
	t->segs[lo].live = t->segs[lo].live > length ? t->segs[lo].live - length : 0;
	t->touched[lo] = true;
}

/* Loads the shard's segment rows and appends zeroed rows for its new
 * segments.  Returns 0 or -errno (message in s->err). */
static int live_init(struct bulk_shard *s, struct live_table *t)
{
	memset(t, 0, sizeof(*t));
	if (s->base_keys > 0 && idx_segments_live(s->idx, live_load, t) < 0) {
		snprintf(s->err, sizeof(s->err), "shard %u: cannot read the index's segment rows",
		         s->no);
		return -EIO;
	}
	struct idx_seg_live *p = realloc(t->segs, (t->n_old + s->n_segs + 1) * sizeof(*p));
	t->touched = calloc(t->n_old + 1, sizeof(*t->touched));
	if (t->err || p == NULL || t->touched == NULL) {
		if (p != NULL)
			t->segs = p;
		snprintf(s->err, sizeof(s->err), "shard %u: out of memory", s->no);
		return -ENOMEM;
	}
	t->segs = p;
	for (uint64_t k = 0; k < s->n_segs; k++)
		t->segs[t->n_old + k] = (struct idx_seg_live){.segment = s->first_seg + k};
	t->n = t->n_old + s->n_segs;
	return 0;
}

/* Moves the rows to write (touched old segments, then the new ones) to the
 * front; returns their number. */
static size_t live_rows(struct live_table *t)
{
	size_t n = 0;
	for (size_t i = 0; i < t->n; i++)
		if (i >= t->n_old || t->touched[i])
			t->segs[n++] = t->segs[i];
	return n;
}

/* Builds shard s's table: sorted entries (last row of a key wins), with
 * existing keys looked up for the key count, their expiry rows and the live
 * bytes of the segments their old values are in. */
static int build_table(struct bulk *b, struct bulk_shard *s)
{
	if (s->n_rows == 0)
		return 0;
	struct live_table live;
	int ret = live_init(s, &live);
	uint64_t *order = ret == 0 ? sort_rows(s) : NULL;
	struct idx_sst *sst = NULL;
	if (ret == 0 && order == NULL) {
		snprintf(s->err, sizeof(s->err), "shard %u: out of memory sorting %zu rows", s->no,
		         s->n_rows);
		ret = -ENOMEM;
	}
	if (ret < 0)
		goto out;
	char path[FS_PATH_MAX];
	snprintf(path, sizeof(path), "%s/" SST_NAME, s->dir);
	ret = idx_sst_open(&sst, s->idx, path, s->err, sizeof(s->err));
	if (ret < 0)
		goto out;
	s->has_sst = true;
	for (size_t i = 0; i < s->n_rows; i++) {
		/* The rows are visited in hash order, i.e. at random: fetch ahead. */
		if (i + 16 < s->n_rows)
			__builtin_prefetch(&s->rows[(uint32_t)order[i + 16]]);
		if (i + 8 < s->n_rows)
			__builtin_prefetch(s->rows[(uint32_t)order[i + 8]].key);
		const struct bulk_row *r = &s->rows[(uint32_t)order[i]];
		if (i + 1 < s->n_rows && order[i + 1] >> 32 == order[i] >> 32 &&
		    key_cmp(&s->rows[(uint32_t)order[i + 1]], r) == 0)
			continue; /* a later row of the same key wins */
		if (i % BULK_STOP_CHECK == 0 && b->cfg.stop != NULL && *b->cfg.stop) {
			ret = -EINTR;
			snprintf(s->err, sizeof(s->err), "interrupted");
			goto out;
		}
		uint64_t prev_expiry = 0;
		if (s->base_keys > 0) {
			struct idx_entry old;
			ret = idx_get(s->idx, r->key, r->key_len, IDX_BLOCKING, &old, NULL);
			if (ret < 0 && ret != -ENOENT) {
				snprintf(s->err, sizeof(s->err),
				         "shard %u: reading the index failed: %s", s->no,
				         strerror(-ret));
				goto out;
			}
			if (ret == 0) {
				prev_expiry = old.expiry_ms;
				if (!old.is_inline)
					live_drop(&live, old.segment, old.length);
				s->overwritten++;
			} else {
				s->new_keys++;
			}
		} else {
			s->new_keys++;
		}
		s->keys++;
		bool is_inline = r->value_len <= b->cfg.inline_max;
		if (!is_inline)
			live.segs[live.n_old + (r->segment - s->first_seg)].live += r->length;
		struct idx_entry e = {.expiry_ms = r->expiry_ms,
		                      .lsn = r->lsn,
		                      .value_len = r->value_len,
		                      .is_inline = is_inline,
		                      .value = is_inline ? r->key + r->key_len : NULL,
		                      .segment = r->segment,
		                      .offset = r->offset,
		                      .length = r->length};
		ret = idx_sst_put(sst, r->key, r->key_len, &e, prev_expiry, s->err, sizeof(s->err));
		if (ret < 0)
			goto out;
	}
	ret = idx_sst_finish(sst, s->next_lsn - 1, s->base_keys + s->new_keys, live.segs,
	                     live_rows(&live), s->err, sizeof(s->err));
out:
	idx_sst_free(sst);
	free(order);
	free(live.segs);
	free(live.touched);
	return ret;
}

static void *index_worker(void *arg)
{
	struct bulk *b = arg;
	for (;;) {
		unsigned i = atomic_fetch_add(&b->next_shard, 1);
		if (i >= b->cfg.shards)
			break;
		struct bulk_shard *s = &b->shards[i];
		s->result = build_table(b, s);
	}
	return NULL;
}

/* Runs build_table for every shard on cfg.threads threads. */
static int index_all(struct bulk *b, char *err, size_t errlen)
{
	unsigned n = b->cfg.threads < b->cfg.shards ? b->cfg.threads : b->cfg.shards;
	pthread_t *th = calloc(n, sizeof(*th));
	if (th == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	atomic_store(&b->next_shard, 0);
	unsigned started = 0;
	for (; started < n; started++)
		if (pthread_create(&th[started], NULL, index_worker, b) != 0)
			break;
	if (started == 0)
		index_worker(b);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	free(th);
	for (unsigned i = 0; i < b->cfg.shards; i++)
		if (b->shards[i].result < 0) {
			snprintf(err, errlen, "%s", b->shards[i].err);
			return b->shards[i].result;
		}
	return 0;
}

/* ---- finish and commit ------------------------------------------------- */

static void phase(struct bulk *b, const char *what)
{
	if (b->cfg.phase)
		b->cfg.phase(b->cfg.phase_arg, what);
}

static bool stop_requested(const struct bulk *b)
{
	return b->cfg.stop != NULL && *b->cfg.stop;
}

/* Test hook: RINGKV_IMPORT_FAULT=<point> makes the importer die (_exit 99)
 * at that point of the commit, as a power loss or kill -9 would. */
static void fault_point(const char *point)
{
	const char *f = getenv("RINGKV_IMPORT_FAULT");
	if (f != NULL && strcmp(f, point) == 0)
		_exit(99);
}

/* Writes DIR/IMPORT-COMMIT, the commit point: from the moment it is durable
 * the import stands, and whatever of the renames a crash leaves undone is
 * completed by bulk_roll_forward at the next server start.  Format (text):
 * the magic line, then "shard N first_segment_id(hex) count" per shard with
 * new segments. */
static int write_journal(struct bulk *b, char *err, size_t errlen)
{
	char path[FS_PATH_MAX], tmp[FS_PATH_MAX];
	snprintf(path, sizeof(path), "%s/" JOURNAL_NAME, b->dir);
	snprintf(tmp, sizeof(tmp), "%s/" JOURNAL_NAME ".tmp", b->dir);
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		goto fail;
	fprintf(f, "%s\n", JOURNAL_MAGIC);
	for (unsigned i = 0; i < b->cfg.shards; i++)
		if (b->shards[i].n_segs > 0)
			fprintf(f, "shard %u %" PRIx64 " %" PRIu64 "\n", i, b->shards[i].first_seg,
			        b->shards[i].n_segs);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		int e = errno;
		fclose(f);
		errno = e;
		goto fail;
	}
	if (fclose(f) != 0 || rename(tmp, path) != 0 || fsync_dir(b->dir) != 0)
		goto fail;
	return 0;
fail:;
	int e = errno ? errno : EIO;
	snprintf(err, errlen, "cannot write %s: %s; nothing was imported", path, strerror(e));
	unlink(tmp);
	return -e;
}

static void remove_journal(struct bulk *b)
{
	char path[FS_PATH_MAX];
	snprintf(path, sizeof(path), "%s/" JOURNAL_NAME, b->dir);
	if (unlink(path) == 0)
		fsync_dir(b->dir);
	else
		LOG_WARN("cannot delete %s: %s; the next server start deletes it", path,
		         strerror(errno));
}

int bulk_roll_forward(const char *dir, char *err, size_t errlen)
{
	char path[FS_PATH_MAX], line[256];
	snprintf(path, sizeof(path), "%s/" JOURNAL_NAME, dir);
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return -errno;
	}
	int ret = 0;
	uint64_t renamed = 0;
	if (fgets(line, sizeof(line), f) == NULL ||
	    strncmp(line, JOURNAL_MAGIC, strlen(JOURNAL_MAGIC)) != 0) {
		snprintf(err, errlen, "%s is not an import journal; move it away and restart", path);
		ret = -EINVAL;
	}
	struct bulk_shard *s = calloc(1, sizeof(*s));
	if (s == NULL && ret == 0) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
	}
	while (ret == 0 && fgets(line, sizeof(line), f) != NULL) {
		unsigned shard;
		uint64_t first, count;
		if (sscanf(line, "shard %u %" SCNx64 " %" SCNu64, &shard, &first, &count) != 3) {
			snprintf(err, errlen, "%s: malformed line '%.60s'; move it away and restart",
			         path, line);
			ret = -EINVAL;
			break;
		}
		layout_shard_dir(dir, shard, s->dir, sizeof(s->dir));
		snprintf(s->log_dir, sizeof(s->log_dir), "%s/log", s->dir);
		ret = layout_lock_shard(s->dir, &s->lock_fd, LOCK_BUSY_FIX, err, errlen);
		if (ret < 0)
			break;
		for (uint64_t id = first; id < first + count; id++) {
			char from[FS_PATH_MAX], to[FS_PATH_MAX];
			fmt_segment_name(from, sizeof(from), s->log_dir, id, TMP_SUFFIX);
			fmt_segment_name(to, sizeof(to), s->log_dir, id, "");
			if (rename(from, to) == 0) {
				renamed++;
			} else if (errno != ENOENT) {
				snprintf(err, errlen, "cannot rename %s to %s: %s", from, to,
				         strerror(errno));
				ret = -errno;
				break;
			}
		}
		if (ret == 0 && (ret = fsync_dir(s->log_dir)) < 0)
			snprintf(err, errlen, "cannot sync %s: %s", s->log_dir, strerror(-ret));
		close(s->lock_fd);
	}
	free(s);
	fclose(f);
	if (ret < 0)
		return ret;
	if (unlink(path) != 0 || fsync_dir(dir) != 0) {
		snprintf(err, errlen, "cannot delete %s: %s", path, strerror(errno));
		return -errno;
	}
	LOG_INFO("completed an interrupted offline import: %" PRIu64 " segment(s) renamed; the"
	         " log replays them into the index",
	         renamed);
	return 0;
}

/* Renames every new segment to its final name and syncs the log
 * directories, after the journal made the import stand (docs/IMPORT.md).
 * A failure leaves the rest to bulk_roll_forward. */
static int rename_segments(struct bulk *b, char *err, size_t errlen)
{
	char from[FS_PATH_MAX], to[FS_PATH_MAX];
	unsigned i;
	uint64_t k = 0;
	int ret = 0;
	bool first = true;
	for (i = 0; i < b->cfg.shards && ret == 0; i++) {
		struct bulk_shard *s = &b->shards[i];
		for (k = 0; k < s->n_segs; k++) {
			fmt_segment_name(from, sizeof(from), s->log_dir, s->first_seg + k, TMP_SUFFIX);
			fmt_segment_name(to, sizeof(to), s->log_dir, s->first_seg + k, "");
			if (!first)
				fault_point("mid-rename");
			first = false;
			if (rename(from, to) != 0) {
				ret = -errno;
				snprintf(err, errlen, "cannot rename %s to %s: %s", from, to,
				         strerror(errno));
				break;
			}
		}
	}
	if (ret < 0) {
		size_t n = strlen(err);
		snprintf(err + n, errlen - n,
		         "; the import is committed: ringkv-server completes it when it starts");
		return ret;
	}
	for (i = 0; i < b->cfg.shards; i++) {
		struct bulk_shard *s = &b->shards[i];
		if (s->n_segs > 0 && (ret = fsync_dir(s->log_dir)) < 0) {
			snprintf(err, errlen, "cannot sync %s: %s", s->log_dir, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

int bulk_finish(struct bulk *b, struct bulk_stats *stats, char *err, size_t errlen)
{
	memset(stats, 0, sizeof(*stats));
	b->finishing = true;
	phase(b, "syncing the log");
	int ret = 0;
	for (unsigned i = 0; i < b->cfg.shards && ret == 0; i++) {
		ret = close_segment(b, &b->shards[i]);
		if (ret < 0)
			return write_failed(&b->shards[i], ret, err, errlen);
	}
	if (stop_requested(b))
		goto interrupted;
	phase(b, "building the index");
	ret = index_all(b, err, errlen);
	if (ret == -EINTR || stop_requested(b))
		goto interrupted;
	if (ret < 0)
		return ret;
	phase(b, "committing");
	ret = write_journal(b, err, errlen);
	if (ret < 0)
		return ret;
	b->committed = true;
	fault_point("after-journal");
	ret = rename_segments(b, err, errlen);
	for (unsigned i = 0; i < b->cfg.shards; i++) {
		struct bulk_shard *s = &b->shards[i];
		stats->keys += s->keys;
		stats->new_keys += s->new_keys;
		stats->overwritten += s->overwritten;
		stats->segments += s->n_segs;
	}
	stats->rows = b->rows;
	stats->log_bytes = b->log_bytes;
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < b->cfg.shards; i++) {
		struct bulk_shard *s = &b->shards[i];
		if (!s->has_sst)
			continue;
		char path[FS_PATH_MAX];
		snprintf(path, sizeof(path), "%s/" SST_NAME, s->dir);
		ret = idx_ingest(s->idx, path, s->next_lsn - 1, s->base_keys + s->new_keys, err,
		                 errlen);
		if (ret < 0) {
			size_t n = strlen(err);
			snprintf(err + n, errlen - n,
			         "; the import is committed in the log all the same:"
			         " ringkv-server replays it into the index when it starts");
			return ret;
		}
		s->has_sst = false;
		fault_point("mid-ingest");
	}
	remove_journal(b);
	return 0;
interrupted:
	snprintf(err, errlen, "interrupted before the commit: nothing was imported");
	return -EINTR;
}

/* ---- close ------------------------------------------------------------- */

void bulk_close(struct bulk *b)
{
	if (b == NULL)
		return;
	if (b->ring_ok) {
		while (b->inflight > 0 && wait_one(b) == 0) {
		}
		io_uring_queue_exit(&b->ring);
	}
	char path[FS_PATH_MAX];
	for (unsigned i = 0; b->shards != NULL && i < b->cfg.shards; i++) {
		struct bulk_shard *s = &b->shards[i];
		if (s->seg_fd >= 0)
			close(s->seg_fd);
		if (!b->committed)
			for (uint64_t k = 0; k < s->n_segs; k++) {
				fmt_segment_name(path, sizeof(path), s->log_dir, s->first_seg + k, TMP_SUFFIX);
				unlink(path);
			}
		if (s->has_sst || !b->committed) {
			snprintf(path, sizeof(path), "%s/" SST_NAME, s->dir);
			unlink(path);
		}
		if (s->idx != NULL)
			idx_close(s->idx);
		if (s->lock_fd >= 0)
			close(s->lock_fd); /* releases the flock */
		free(s->rows);
		while (s->arena != NULL) {
			struct arena_chunk *c = s->arena;
			s->arena = c->next;
			free(c);
		}
	}
	for (size_t i = 0; i < b->n_bufs; i++) {
		free(b->all_bufs[i]->data);
		free(b->all_bufs[i]);
	}
	free(b->all_bufs);
	if (b->shared != NULL)
		idx_shared_destroy(b->shared);
	free(b->shards);
	free(b);
}
