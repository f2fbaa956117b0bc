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
 * Index entries.  Each string row's entry (its record's position, or the
 * inline value) is kept in memory: about 56 bytes plus the key (and an inline
 * value) per row.  bulk_finish sorts them by index row with a stable radix
 * sort on the key hash, so rows of one key stay in LSN order and the last one
 * wins.
 *
 * Collections.  A collection's key row is one struct bulk_coll, each element
 * it was given one struct bulk_elem_row (its ident and value kept in the
 * arena: elements live in the index, so their rows carry their values).  Two
 * hash tables per shard find them while the input is read: the key table
 * (key -> its last string row or its collection), kept for every key once
 * the shard has a collection — a SET must retire a collection written
 * earlier, an HSET must be refused on a string — and the element table
 * ((collection, element) -> its row), which dedups elements and counts
 * them exactly, so every metadata record carries the count the server would
 * have written.  Elements of a collection the index already holds are looked
 * up there the first time they are met.
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

#include "service/runtime/clock.h"
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
#define ELEM_SST_NAME    "import-elems.sst" /* its table of element rows, beside it */
#define BULK_GROUP_ELEMS 1024         /* elements per group of a collection command, at most */
#define KT_COLL          0x80000000u  /* key table: the ref names a collection */
#define KT_REF_MAX       0x7FFFFFFEu  /* rows, collections or elements per shard, at most */
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
	const uint8_t *key; /* the key's ident (format.h), in the shard's arena; an
	                       inline value follows it */
	uint64_t lsn;
	uint64_t expiry_ms;
	uint64_t segment;
	uint64_t offset; /* of the record in the segment */
	uint32_t length; /* fmt_record_size() of the record */
	uint32_t value_len;
	uint32_t hash; /* idx_key_hash(the user key) */
	uint32_t key_len; /* of the ident */
};

/* A collection the import writes: its key row's future entry. */
struct bulk_coll {
	const uint8_t *key;      /* its key ident, in the shard's arena */
	uint32_t key_len;        /* of the ident */
	uint32_t hash;           /* idx_key_hash(the user key) */
	uint64_t version, count; /* as its metadata says */
	uint64_t expiry_ms;      /* 0 = none */
	uint64_t lsn;            /* of its last metadata record (the index entry's until
	                            the import writes one) */
	uint8_t type, enc;       /* FMT_TYPE_HASH or FMT_TYPE_SET; FMT_ENC_* */
	bool dead;               /* a later SET replaced it: none of its rows is written */
	bool existed;            /* the index held the key before (any type, expired too) */
	bool extends;            /* ... as this collection, which the import adds to */
	uint64_t prev_expiry_ms; /* existed: the expiry of the index's entry */
	uint64_t prev_segment;   /* existed as a string in the log: its record, whose */
	uint32_t prev_length;    /* live bytes go (0: none) */
};

/* An element the import put: its element row's future value. */
struct bulk_elem_row {
	const uint8_t *ident; /* its element ident (format.h), then its value, in the arena */
	uint32_t ident_len;
	uint32_t value_len;
	uint32_t coll;        /* its collection: an index in the shard's colls */
	uint64_t group;       /* the last group it was put in (bulk.group_no) */
};

/* An open-addressing hash table with linear probing: a slot holds
 * hash << 32 | ref (ref >= 1: what it names is the user's business), 0 when
 * empty.  At most half full. */
struct ref_table {
	uint64_t *slots;
	size_t cap; /* a power of two, or 0 */
	size_t used;
};

struct bulk_shard {
	unsigned no;
	char dir[4096];     /* DIR/shard-NNN */
	char log_dir[FS_PATH_MAX]; /* DIR/shard-NNN/log */
	int lock_fd;        /* DIR/shard-NNN/LOCK, flock()ed; -1 if not taken */
	struct idx *idx;
	uint64_t base_lsn;  /* applied_lsn before the import */
	uint32_t db_id;     /* the stored id of database 0, where the import goes */
	struct idx_count base; /* database 0's counts before the import */
	struct idx_count count; /* ... and after it (bulk_finish) */
	uint32_t *map_ids;  /* a new index's database map, written with the table; or
	                       NULL */
	uint32_t map_n, map_next;
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
	struct bulk_coll *colls; /* in order of creation */
	size_t n_colls, cap_colls;
	struct bulk_elem_row *elems; /* in order of first put */
	size_t n_elems, cap_elems;
	bool tracking;           /* the key table holds every key (the shard has a
	                            collection) */
	struct ref_table keytab; /* ident -> row index + 1, or KT_COLL | coll index + 1 */
	struct ref_table elemtab; /* (coll, element) -> elem index + 1 */
	struct arena_chunk *arena;            /* newest first */
	bool has_sst;                         /* SST_NAME was built */
	bool has_elem_sst;                    /* ELEM_SST_NAME was built */
	uint64_t keys, new_keys, overwritten; /* from bulk_finish's indexing */
	uint64_t extended, elements;
	int result; /* the indexing thread's: 0 or -errno (message in err) */
	char err[512];
};

struct bulk {
	struct bulk_config cfg;
	char dir[4096];
	uint8_t *ident; /* a key's ident being built (FMT_KEY_IDENT_HEAD + FMT_KEY_MAX) */
	uint8_t *eident; /* an element's ident being built (FMT_IDENT_MAX) */
	uint32_t *group; /* the elements (indexes) of the group being built */
	size_t cap_group;
	uint64_t group_no; /* groups of collection commands built so far */
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
		                                 .databases = b->cfg.databases,
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
	static const char *const tables[] = {SST_NAME, ELEM_SST_NAME};
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", s->dir, tables[i]);
		if (unlink(path) != 0 && errno != ENOENT) {
			int e = errno;
			snprintf(err, errlen, "cannot delete the stale %s: %s", path, strerror(e));
			return -e;
		}
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

/* idx_counts callback: database 0's counts. */
static void count_load(void *arg, uint32_t db, const struct idx_count *c)
{
	struct bulk_shard *s = arg;
	if (db == s->db_id)
		s->base = *c;
}

/* Finds database 0's stored id and counts (a new index: id 0, and the map a
 * server with `databases` databases writes, written with the table).
 * Returns 0 or -errno with a message. */
static int load_db0(struct bulk_shard *s, unsigned databases, char *err, size_t errlen)
{
	uint32_t *ids = malloc(FMT_DB_MAX * sizeof(*ids)), n = 0, next;
	if (ids == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int ret = idx_dbmap(s->idx, ids, FMT_DB_MAX, &n, &next);
	if (ret == 0 && n > 0) {
		s->db_id = ids[0];
		free(ids);
	} else if (ret == -ENOENT || (ret == 0 && n == 0)) {
		s->map_n = databases;
		s->map_next = databases;
		for (uint32_t i = 0; i < s->map_n; i++)
			ids[i] = i;
		s->map_ids = ids;
		s->db_id = 0;
	} else {
		free(ids);
		snprintf(err, errlen, "shard %u: cannot read the database map of its index (see"
		         " the log above)", s->no);
		return -EIO;
	}
	if (idx_counts(s->idx, count_load, s) < 0) {
		snprintf(err, errlen, "shard %u: cannot read the key counts of its index", s->no);
		return -EIO;
	}
	s->count = s->base;
	return 0;
}

int bulk_open(struct bulk **out, const struct bulk_config *cfg, char *err, size_t errlen)
{
	*out = NULL;
	if (cfg->shards < 1 || cfg->shards > LAYOUT_MAX_SHARDS || cfg->segment_size < (1u << 20) ||
	    cfg->segment_size % FMT_BLOCK != 0 || cfg->threads < 1 || cfg->databases < 1 ||
	    cfg->databases > FMT_DB_MAX) {
		snprintf(err, errlen,
		         "bulk: invalid configuration (shards %u, segment size %" PRIu64
		         ", threads %u, databases %u)",
		         cfg->shards, cfg->segment_size, cfg->threads, cfg->databases);
		return -EINVAL;
	}
	struct bulk *b = calloc(1, sizeof(*b));
	if (b == NULL || (b->shards = calloc(cfg->shards, sizeof(*b->shards))) == NULL ||
	    (b->ident = malloc(FMT_KEY_IDENT_HEAD + FMT_KEY_MAX)) == NULL ||
	    (b->eident = malloc(FMT_IDENT_MAX)) == NULL) {
		if (b != NULL) {
			free(b->shards);
			free(b->ident);
		}
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
		ret = load_db0(s, b->cfg.databases, err, errlen);
		if (ret < 0)
			goto fail;
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
		         "out of memory (the import keeps about 60 bytes plus the key per row, and"
		         " every element of a hash or set with its value, in memory: split the"
		         " input)");
	else if (ret == -EOVERFLOW)
		snprintf(err, errlen,
		         "shard %u holds over %u rows, collections or elements of the import:"
		         " split the input",
		         s->no, KT_REF_MAX);
	else
		snprintf(err, errlen, "writing the log of shard %u in %s: %s%s", s->no, s->log_dir,
		         strerror(-ret),
		         ret == -EINVAL   ? " (the file system refuses O_DIRECT: use a disk file"
		                            " system such as ext4 or xfs)"
		         : ret == -ENOSPC ? " (free some space)"
		                          : "");
	return ret;
}

/* Makes room for a group of records of `bytes` in total that must share a
 * commit (format.h: the records of one command): seals the open commit when
 * the group would take it past BULK_COMMIT_MAX, starts a new segment when
 * the group and its PAD would not fit this one, and a new buffer when the
 * commit could outgrow this one.  The caller checked that the group fits an
 * empty segment.  Returns 0 or -errno. */
static int place_group(struct bulk *b, struct bulk_shard *s, uint64_t bytes)
{
	int ret;
	if (s->commit_records > 0 &&
	    s->buf->used - s->commit_start + bytes + FMT_RECORD_HEADER > BULK_COMMIT_MAX)
		seal_commit(s);
	/* (after the seal: its PAD moves the position up to a block on) */
	uint64_t pos = s->buf ? s->buf->file_off + s->buf->used : 0;
	if (s->seg_fd < 0 || pos + bytes + FMT_RECORD_HEADER > b->cfg.segment_size) {
		ret = close_segment(b, s);
		if (ret == 0)
			ret = open_segment(b, s, bytes);
		if (ret < 0)
			return ret;
	}
	if (s->commit_records == 0) {
		uint64_t need = bytes + FMT_RECORD_HEADER + FMT_BLOCK;
		if (need < BULK_COMMIT_MAX)
			need = BULK_COMMIT_MAX;
		if (s->buf->cap - s->buf->used < need) {
			uint64_t off = s->buf->file_off + s->buf->used;
			ret = submit_buf(b, s);
			if (ret == 0)
				ret = get_buf(b, need > BULK_BUF_SIZE ? need : BULK_BUF_SIZE,
				              &s->buf);
			if (ret < 0)
				return ret;
			s->buf->fd = s->seg_fd;
			s->buf->file_off = off;
		}
		s->commit_start = s->buf->used;
	}
	return 0;
}

/* Appends rec (its LSN assigned here) to the open commit, which place_group
 * made room for.  Returns the record's offset in its segment. */
static uint64_t append_record(struct bulk_shard *s, struct fmt_record *rec)
{
	rec->lsn = s->next_lsn++;
	uint64_t off = s->buf->file_off + s->buf->used;
	s->buf->used += fmt_encode_record(s->buf->data + s->buf->used, s->seg_epoch32, rec);
	s->commit_records++;
	s->commit_last_lsn = rec->lsn;
	return off;
}

/* ---- the key and element tables ---------------------------------------- */

/* The slot where a probe for `hash` starts. */
static size_t table_home(const struct ref_table *t, uint32_t hash)
{
	return (size_t)(((uint64_t)hash * 0x9E3779B97F4A7C15ULL) >> 32) & (t->cap - 1);
}

/* Makes room for one more entry (doubling the table).  Returns 0 or -ENOMEM. */
static int table_reserve(struct ref_table *t)
{
	if (2 * (t->used + 1) <= t->cap)
		return 0;
	size_t cap = t->cap ? 2 * t->cap : 1024;
	uint64_t *slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	struct ref_table n = {.slots = slots, .cap = cap, .used = t->used};
	for (size_t i = 0; i < t->cap; i++) {
		if (t->slots[i] == 0)
			continue;
		size_t k = table_home(&n, (uint32_t)(t->slots[i] >> 32));
		while (slots[k] != 0)
			k = (k + 1) & (cap - 1);
		slots[k] = t->slots[i];
	}
	free(t->slots);
	*t = n;
	return 0;
}

/* The slot of the entry with `hash` whose ref `match` accepts, or the empty
 * slot where it would go.  The table has room (table_reserve). */
static uint64_t *table_find(struct ref_table *t, uint32_t hash,
                            bool (*match)(const void *arg, uint32_t ref), const void *arg)
{
	size_t k = table_home(t, hash);
	for (;;) {
		uint64_t v = t->slots[k];
		if (v == 0 || ((uint32_t)(v >> 32) == hash && match(arg, (uint32_t)v)))
			return &t->slots[k];
		k = (k + 1) & (t->cap - 1);
	}
}

/* A key looked up in the key table. */
struct key_probe {
	const struct bulk_shard *s;
	const uint8_t *ident;
	size_t len;
};

static bool key_match(const void *arg, uint32_t ref)
{
	const struct key_probe *p = arg;
	const uint8_t *key;
	size_t len;
	if (ref & KT_COLL) {
		const struct bulk_coll *c = &p->s->colls[(ref & ~KT_COLL) - 1];
		key = c->key;
		len = c->key_len;
	} else {
		const struct bulk_row *r = &p->s->rows[ref - 1];
		key = r->key;
		len = r->key_len;
	}
	return len == p->len && memcmp(key, p->ident, len) == 0;
}

/* An element looked up in the element table. */
struct elem_probe {
	const struct bulk_shard *s;
	uint32_t coll;
	const uint8_t *ident;
	size_t len;
};

static bool elem_match(const void *arg, uint32_t ref)
{
	const struct elem_probe *p = arg;
	const struct bulk_elem_row *e = &p->s->elems[ref - 1];
	return e->coll == p->coll && e->ident_len == p->len &&
	       memcmp(e->ident, p->ident, p->len) == 0;
}

/* Makes string row i the state of its key in the key table; a collection it
 * replaces is dead.  Returns 0 or -ENOMEM. */
static int track_string(struct bulk_shard *s, size_t i)
{
	if (table_reserve(&s->keytab) < 0)
		return -ENOMEM;
	const struct bulk_row *r = &s->rows[i];
	struct key_probe p = {.s = s, .ident = r->key, .len = r->key_len};
	uint64_t *slot = table_find(&s->keytab, r->hash, key_match, &p);
	if (*slot == 0)
		s->keytab.used++;
	else if ((uint32_t)*slot & KT_COLL)
		s->colls[((uint32_t)*slot & ~KT_COLL) - 1].dead = true;
	*slot = (uint64_t)r->hash << 32 | (uint32_t)(i + 1);
	return 0;
}

/* Starts keeping every key of the shard in its key table (at its first
 * collection).  Returns 0 or -ENOMEM. */
static int track_keys(struct bulk_shard *s)
{
	for (size_t i = 0; !s->tracking && i < s->n_rows; i++)
		if (track_string(s, i) < 0)
			return -ENOMEM;
	s->tracking = true;
	return 0;
}

/* ---- strings ----------------------------------------------------------- */

int bulk_put(struct bulk *b, const void *key, size_t klen, const void *value, size_t vlen,
             uint64_t expiry_ms, char *err, size_t errlen)
{
	if (klen > FMT_KEY_MAX) {
		snprintf(err, errlen, "the key is %zu bytes; the longest ringkv takes is %u", klen,
		         FMT_KEY_MAX);
		return -E2BIG;
	}
	uint64_t rsz = fmt_record_size((uint32_t)(FMT_KEY_IDENT_HEAD + klen),
	                               vlen > UINT32_MAX ? UINT32_MAX : (uint32_t)vlen);
	if (vlen > FMT_VALUE_MAX ||
	    FMT_SEG_HEADER_SIZE + rsz + FMT_RECORD_HEADER > b->cfg.segment_size) {
		snprintf(err, errlen,
		         "the value is %zu bytes; with storage.segment_size %" PRIu64 " the longest"
		         " is %" PRIu64 " (raise segment_size)",
		         vlen, b->cfg.segment_size,
		         b->cfg.segment_size - FMT_SEG_HEADER_SIZE - FMT_RECORD_HEADER -
		             fmt_record_size((uint32_t)(FMT_KEY_IDENT_HEAD + klen), 0));
		return -E2BIG;
	}
	struct bulk_shard *s = &b->shards[layout_key_shard(key, klen, b->cfg.shards)];
	if (s->n_rows >= KT_REF_MAX)
		return write_failed(s, -EOVERFLOW, err, errlen);
	if (s->n_rows == s->cap_rows) {
		size_t cap = s->cap_rows ? s->cap_rows * 2 : 4096;
		struct bulk_row *rows = realloc(s->rows, cap * sizeof(*rows));
		if (rows == NULL)
			return write_failed(s, -ENOMEM, err, errlen);
		s->rows = rows;
		s->cap_rows = cap;
	}
	int ret = place_group(b, s, rsz);
	if (ret < 0)
		return write_failed(s, ret, err, errlen);
	bool is_inline = vlen <= b->cfg.inline_max;
	size_t ilen = fmt_key_ident(b->ident, s->db_id, key, klen);
	const uint8_t *kept = arena_keep(s, b->ident, ilen, value, is_inline ? vlen : 0);
	if (kept == NULL)
		return write_failed(s, -ENOMEM, err, errlen);
	struct fmt_record rec = {.type = FMT_PUT,
	                         .flags = FMT_TYPE_STRING,
	                         .expiry_ms = expiry_ms,
	                         .key_len = (uint32_t)ilen,
	                         .value_len = (uint32_t)vlen,
	                         .key = kept,
	                         .value = value};
	uint64_t off = append_record(s, &rec);
	s->rows[s->n_rows++] = (struct bulk_row){.key = kept,
	                                         .lsn = rec.lsn,
	                                         .expiry_ms = expiry_ms,
	                                         .segment = s->seg_id,
	                                         .offset = off,
	                                         .length = (uint32_t)rsz,
	                                         .value_len = (uint32_t)vlen,
	                                         .hash = idx_key_hash(key, klen),
	                                         .key_len = (uint32_t)ilen};
	if (s->tracking && track_string(s, s->n_rows - 1) < 0)
		return write_failed(s, -ENOMEM, err, errlen);
	b->rows++;
	return 0;
}

/* ---- collections ------------------------------------------------------- */

static const char *type_name(uint8_t type)
{
	return type == FMT_TYPE_HASH ? "a hash" : type == FMT_TYPE_SET ? "a set" : "a string";
}

/* Words Redis's WRONGTYPE refusal, saying what the key holds and where.
 * Returns -EPROTOTYPE. */
static int wrong_type(uint8_t held, const char *where, char *err, size_t errlen)
{
	snprintf(err, errlen,
	         "WRONGTYPE Operation against a key holding the wrong kind of value (the key"
	         " holds %s, %s)",
	         type_name(held), where);
	return -EPROTOTYPE;
}

/* Checks a collection command against the limits (every group it may make
 * must fit an empty segment).  Returns 0 or -E2BIG with the reason. */
static int coll_fits(const struct bulk *b, const struct bulk_coll_cmd *c, char *err, size_t errlen)
{
	if (c->klen > FMT_KEY_MAX) {
		snprintf(err, errlen, "the key is %zu bytes; the longest ringkv takes is %u",
		         c->klen, FMT_KEY_MAX);
		return -E2BIG;
	}
	uint64_t meta = fmt_record_size((uint32_t)(FMT_KEY_IDENT_HEAD + c->klen),
	                                FMT_COLL_META_SIZE);
	uint64_t room = b->cfg.segment_size - FMT_SEG_HEADER_SIZE - FMT_RECORD_HEADER - meta;
	for (size_t i = 0; i < c->n; i++) {
		const struct bulk_elem *e = &c->elems[i];
		if (e->elen > FMT_ELEM_MAX) {
			snprintf(err, errlen,
			         "element of %zu bytes is too long: ringkv keeps hash fields"
			         " and set members of at most %u bytes",
			         e->elen, FMT_ELEM_MAX);
			return -E2BIG;
		}
		uint32_t ilen = (uint32_t)(FMT_ELEM_IDENT_HEAD + c->klen + e->elen);
		if (e->vlen > FMT_VALUE_MAX ||
		    fmt_record_size(ilen, (uint32_t)e->vlen) > room) {
			snprintf(err, errlen,
			         "a value of %zu bytes; with storage.segment_size %" PRIu64 " the"
			         " longest is %" PRIu64 " (raise segment_size)",
			         e->vlen, b->cfg.segment_size, room - fmt_record_size(ilen, 0));
			return -E2BIG;
		}
	}
	return 0;
}

/* Names a failed index read in err.  Returns ret. */
static int index_failed(const struct bulk_shard *s, int ret, char *err, size_t errlen)
{
	snprintf(err, errlen, "shard %u: reading the index failed: %s", s->no, strerror(-ret));
	return ret;
}

/* The collection command c's key in shard s: the collection it adds to, a
 * new one (a key absent, or expired), or a WRONGTYPE refusal.  b->ident
 * holds the key's ident (len bytes); the key table has room for one more.
 * Returns 0 with *out set, or -errno with the reason in err (-EPROTOTYPE:
 * WRONGTYPE). */
static int coll_resolve(struct bulk *b, struct bulk_shard *s, const struct bulk_coll_cmd *c,
                        size_t len, uint32_t hash, struct bulk_coll **out, char *err,
                        size_t errlen)
{
	struct key_probe p = {.s = s, .ident = b->ident, .len = len};
	uint64_t *slot = table_find(&s->keytab, hash, key_match, &p);
	if (*slot != 0) {
		uint32_t ref = (uint32_t)*slot;
		if (!(ref & KT_COLL))
			return wrong_type(FMT_TYPE_STRING, "written earlier in the input", err,
			                  errlen);
		struct bulk_coll *co = &s->colls[(ref & ~KT_COLL) - 1];
		if (co->type != c->type)
			return wrong_type(co->type, "written earlier in the input", err, errlen);
		*out = co;
		return 0;
	}
	struct bulk_coll fresh = {.type = c->type, .hash = hash, .key_len = (uint32_t)len};
	struct idx_entry old;
	int ret = idx_get(s->idx, b->ident, len, IDX_BLOCKING, &old, NULL);
	if (ret < 0 && ret != -ENOENT)
		return index_failed(s, ret, err, errlen);
	if (ret == 0) {
		bool live = old.expiry_ms == 0 || old.expiry_ms > clock_unix_ms();
		if (live && old.type != c->type)
			return wrong_type(old.type, "in the data directory", err, errlen);
		fresh.existed = true;
		fresh.prev_expiry_ms = old.expiry_ms;
		if (old.type == FMT_TYPE_STRING && !old.is_inline) {
			fresh.prev_segment = old.segment;
			fresh.prev_length = old.length;
		}
		if (live) {
			fresh.extends = true;
			fresh.version = old.version;
			fresh.count = old.count;
			fresh.enc = old.enc;
			fresh.expiry_ms = old.expiry_ms;
			fresh.lsn = old.lsn;
		}
	}
	if (!fresh.extends)
		fresh.version = s->next_lsn << 16; /* its first record's LSN, as a server call's */
	if (s->n_colls >= KT_REF_MAX)
		return write_failed(s, -EOVERFLOW, err, errlen);
	if (s->n_colls == s->cap_colls) {
		size_t cap = s->cap_colls ? s->cap_colls * 2 : 256;
		struct bulk_coll *colls = realloc(s->colls, cap * sizeof(*colls));
		if (colls == NULL)
			return write_failed(s, -ENOMEM, err, errlen);
		s->colls = colls;
		s->cap_colls = cap;
	}
	fresh.key = arena_keep(s, b->ident, len, NULL, 0);
	if (fresh.key == NULL)
		return write_failed(s, -ENOMEM, err, errlen);
	s->colls[s->n_colls++] = fresh;
	*slot = (uint64_t)hash << 32 | KT_COLL | (uint32_t)s->n_colls;
	s->keytab.used++;
	*out = &s->colls[s->n_colls - 1];
	return 0;
}

/* Puts element e of command c into collection co (index coll_no) as part of
 * group b->group_no, adding it to b->group the first time the group puts
 * it.  Returns 0, 1 (skipped: HSETNX of an element that exists) or -errno. */
static int coll_put_elem(struct bulk *b, struct bulk_shard *s, struct bulk_coll *co,
                         uint32_t coll_no, const struct bulk_coll_cmd *c,
                         const struct bulk_elem *e, size_t *n_group)
{
	size_t len = fmt_elem_ident(b->eident, s->db_id, c->key, c->klen, co->version, e->elem,
	                            e->elen);
	/* The element's CRC32C (in its ident), mixed with its collection. */
	uint32_t hash = fmt_get_be32(b->eident + fmt_elem_prefix_len(c->klen)) ^
	                coll_no * 0x85EBCA6Bu;
	if (table_reserve(&s->elemtab) < 0)
		return -ENOMEM;
	struct elem_probe p = {.s = s, .coll = coll_no, .ident = b->eident, .len = len};
	uint64_t *slot = table_find(&s->elemtab, hash, elem_match, &p);
	bool exists = *slot != 0;
	if (!exists && co->extends) {
		struct idx_entry old;
		int ret = idx_get(s->idx, b->eident, len, IDX_BLOCKING, &old, NULL);
		if (ret < 0 && ret != -ENOENT)
			return ret;
		exists = ret == 0;
	}
	if (exists && c->only_new)
		return 1;
	const uint8_t *kept = arena_keep(s, b->eident, len, e->value, e->vlen);
	if (kept == NULL)
		return -ENOMEM;
	struct bulk_elem_row *row;
	if (*slot != 0) {
		row = &s->elems[(uint32_t)*slot - 1];
	} else {
		if (s->n_elems >= KT_REF_MAX)
			return -EOVERFLOW;
		if (s->n_elems == s->cap_elems) {
			size_t cap = s->cap_elems ? s->cap_elems * 2 : 4096;
			struct bulk_elem_row *rows = realloc(s->elems, cap * sizeof(*rows));
			if (rows == NULL)
				return -ENOMEM;
			s->elems = rows;
			s->cap_elems = cap;
		}
		row = &s->elems[s->n_elems++];
		*row = (struct bulk_elem_row){.coll = coll_no};
		*slot = (uint64_t)hash << 32 | (uint32_t)s->n_elems;
		s->elemtab.used++;
	}
	row->ident = kept;
	row->ident_len = (uint32_t)len;
	row->value_len = (uint32_t)e->vlen;
	co->count += !exists;
	co->enc |= e->enc;
	if (row->group != b->group_no) {
		row->group = b->group_no;
		b->group[(*n_group)++] = (uint32_t)(row - s->elems);
	}
	return 0;
}

/* Appends collection co's metadata record (after place_group). */
static void append_meta(struct bulk_shard *s, struct bulk_coll *co)
{
	uint8_t value[FMT_COLL_META_SIZE];
	fmt_encode_coll_meta(value, &(struct fmt_coll_meta){co->version, co->count, co->enc});
	struct fmt_record rec = {.type = FMT_PUT,
	                         .flags = co->type,
	                         .expiry_ms = co->expiry_ms,
	                         .key_len = co->key_len,
	                         .value_len = FMT_COLL_META_SIZE,
	                         .key = co->key,
	                         .value = value};
	append_record(s, &rec);
	co->lsn = rec.lsn;
}

int bulk_coll(struct bulk *b, const struct bulk_coll_cmd *c, char *err, size_t errlen)
{
	int ret = coll_fits(b, c, err, errlen);
	if (ret < 0)
		return ret;
	struct bulk_shard *s = &b->shards[layout_key_shard(c->key, c->klen, b->cfg.shards)];
	if (b->group == NULL) {
		b->group = malloc(BULK_GROUP_ELEMS * sizeof(*b->group));
		if (b->group == NULL)
			return write_failed(s, -ENOMEM, err, errlen);
	}
	size_t len = fmt_key_ident(b->ident, s->db_id, c->key, c->klen);
	uint32_t hash = idx_key_hash(c->key, c->klen);
	struct bulk_coll *co;
	if (track_keys(s) < 0 || table_reserve(&s->keytab) < 0)
		return write_failed(s, -ENOMEM, err, errlen);
	ret = coll_resolve(b, s, c, len, hash, &co, err, errlen);
	if (ret < 0)
		return ret;
	uint32_t coll_no = (uint32_t)(co - s->colls);
	/* The metadata as the log (or the index) has it: a group writes a
	 * metadata record when it changes. */
	struct fmt_coll_meta logged = {.version = co->version, .count = co->count, .enc = co->enc};
	uint64_t logged_expiry = co->expiry_ms;
	if (c->expiry_ms != 0)
		co->expiry_ms = c->expiry_ms;
	uint64_t meta_size = fmt_record_size(co->key_len, FMT_COLL_META_SIZE);
	for (size_t i = 0; i < c->n;) {
		size_t n_group = 0;
		uint64_t bytes = meta_size; /* (an estimate while elements are added) */
		b->group_no++;
		for (; i < c->n && n_group < BULK_GROUP_ELEMS; i++) {
			const struct bulk_elem *e = &c->elems[i];
			uint64_t esz = fmt_record_size(
			    (uint32_t)(FMT_ELEM_IDENT_HEAD + c->klen + e->elen), (uint32_t)e->vlen);
			if (n_group > 0 && bytes + esz > BULK_COMMIT_MAX - FMT_RECORD_HEADER)
				break;
			ret = coll_put_elem(b, s, co, coll_no, c, e, &n_group);
			if (ret == -EOVERFLOW || ret == -ENOMEM)
				return write_failed(s, ret, err, errlen);
			if (ret < 0)
				return index_failed(s, ret, err, errlen);
			if (ret == 0)
				bytes += esz;
		}
		if (co->count > c->big_after)
			co->enc |= FMT_ENC_BIG;
		bool meta = co->count != logged.count || co->enc != logged.enc ||
		            co->expiry_ms != logged_expiry;
		bytes = meta ? meta_size : 0;
		for (size_t k = 0; k < n_group; k++)
			bytes += fmt_record_size(s->elems[b->group[k]].ident_len,
			                         s->elems[b->group[k]].value_len);
		if (bytes == 0)
			continue; /* (an HSETNX of a field that exists: nothing changes) */
		ret = place_group(b, s, bytes);
		if (ret < 0)
			return write_failed(s, ret, err, errlen);
		if (meta) {
			logged = (struct fmt_coll_meta){co->version, co->count, co->enc};
			logged_expiry = co->expiry_ms;
			append_meta(s, co);
		}
		for (size_t k = 0; k < n_group; k++) {
			const struct bulk_elem_row *e = &s->elems[b->group[k]];
			struct fmt_record rec = {.type = FMT_PUT,
			                         .key_len = e->ident_len,
			                         .value_len = e->value_len,
			                         .key = e->ident,
			                         .value = e->ident + e->ident_len};
			append_record(s, &rec);
		}
	}
	b->rows++;
	return 0;
}

/* ---- expiry ------------------------------------------------------------ */

/* Copies the value of string row r, whose record the import wrote, into
 * *out (malloc()ed, the caller frees).  Returns 0 or -errno. */
static int read_back(struct bulk *b, struct bulk_shard *s, const struct bulk_row *r,
                     uint8_t **out)
{
	uint8_t *v = malloc(r->value_len ? r->value_len : 1);
	if (v == NULL)
		return -ENOMEM;
	uint64_t at = r->offset + FMT_RECORD_HEADER + r->key_len; /* the value, in its segment */
	int ret = 0;
	if (s->buf != NULL && r->segment == s->seg_id && r->offset >= s->buf->file_off) {
		memcpy(v, s->buf->data + (at - s->buf->file_off), r->value_len);
	} else if ((ret = drain_writes(b)) == 0) { /* (its write may be in flight) */
		char path[FS_PATH_MAX];
		fmt_segment_name(path, sizeof(path), s->log_dir, r->segment, TMP_SUFFIX);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd < 0 ? -1 : pread(fd, v, r->value_len, (off_t)at);
		if (n != (ssize_t)r->value_len)
			ret = n < 0 ? -errno : -EIO;
		if (fd >= 0)
			close(fd);
	}
	if (ret < 0)
		free(v);
	else
		*out = v;
	return ret;
}

int bulk_expire(struct bulk *b, const void *key, size_t klen, uint64_t expiry_ms, char *err,
                size_t errlen)
{
	if (klen > FMT_KEY_MAX)
		return 0; /* (no such key can exist) */
	struct bulk_shard *s = &b->shards[layout_key_shard(key, klen, b->cfg.shards)];
	if (track_keys(s) < 0 || table_reserve(&s->keytab) < 0)
		return write_failed(s, -ENOMEM, err, errlen);
	size_t len = fmt_key_ident(b->ident, s->db_id, key, klen);
	uint32_t hash = idx_key_hash(key, klen);
	struct key_probe p = {.s = s, .ident = b->ident, .len = len};
	uint64_t *slot = table_find(&s->keytab, hash, key_match, &p);
	struct bulk_coll *co = NULL;
	int ret;
	if (*slot == 0) {
		struct idx_entry old;
		ret = idx_get(s->idx, b->ident, len, IDX_BLOCKING, &old, NULL);
		bool expired = ret == 0 && old.expiry_ms && old.expiry_ms <= clock_unix_ms();
		if (ret == -ENOENT || expired)
			return 0; /* no such key: nothing to do, as in Redis */
		if (ret < 0)
			return index_failed(s, ret, err, errlen);
		if (old.type == FMT_TYPE_STRING) {
			snprintf(err, errlen,
			         "the key is a string the data directory holds, and changing its"
			         " expiry offline is not supported: import online instead");
			return -EOPNOTSUPP;
		}
		/* A collection there: from now on the import's, as an HSET's. */
		struct bulk_coll_cmd c = {.type = old.type, .key = key, .klen = klen};
		ret = coll_resolve(b, s, &c, len, hash, &co, err, errlen);
		if (ret < 0)
			return ret;
	} else if ((uint32_t)*slot & KT_COLL) {
		co = &s->colls[((uint32_t)*slot & ~KT_COLL) - 1];
	}
	if (co != NULL) {
		if (co->expiry_ms == expiry_ms)
			return 0;
		co->expiry_ms = expiry_ms;
		ret = place_group(b, s, fmt_record_size(co->key_len, FMT_COLL_META_SIZE));
		if (ret < 0)
			return write_failed(s, ret, err, errlen);
		append_meta(s, co);
		b->rows++;
		return 0;
	}
	/* A string the import wrote: written again with the new expiry, as the
	 * server rewrites a string's record. */
	const struct bulk_row *r = &s->rows[(uint32_t)*slot - 1];
	if (r->expiry_ms == expiry_ms)
		return 0;
	uint8_t *value = NULL;
	if (r->value_len > b->cfg.inline_max) {
		ret = read_back(b, s, r, &value);
		if (ret < 0)
			return write_failed(s, ret, err, errlen);
	}
	ret = bulk_put(b, key, klen, value != NULL ? value : r->key + r->key_len, r->value_len,
	               expiry_ms, err, errlen);
	free(value);
	return ret;
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
	uint32_t db;               /* the stored database id the rows are of */
	int err;
};

static void live_load(void *arg, uint64_t segment, uint32_t db, uint64_t live)
{
	struct live_table *t = arg;
	if (t->err || db != t->db)
		return; /* (other databases' bytes: the import changes none of them) */
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
	t->db = s->db_id;
	if (s->base.keys > 0 && idx_segments_live(s->idx, live_load, t) < 0) {
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

/* Order of two key rows of one database (index.h): the key hash, then the
 * idents (memcmp, a shorter prefix first). */
static int key_row_cmp(uint32_t ha, const uint8_t *a, size_t alen, uint32_t hb, const uint8_t *b,
                       size_t blen)
{
	if (ha != hb)
		return ha < hb ? -1 : 1;
	size_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0;
	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int coll_cmp(const void *x, const void *y, void *arg)
{
	const struct bulk_coll *colls = arg;
	const struct bulk_coll *a = &colls[*(const uint32_t *)x], *b = &colls[*(const uint32_t *)y];
	return key_row_cmp(a->hash, a->key, a->key_len, b->hash, b->key, b->key_len);
}

/* The live collections of s (indexes), in key-row order; *n set.  NULL
 * when out of memory (or none: *n == 0). */
static uint32_t *sort_colls(const struct bulk_shard *s, size_t *n)
{
	*n = 0;
	uint32_t *order = s->n_colls ? malloc(s->n_colls * sizeof(*order)) : NULL;
	if (order == NULL)
		return NULL;
	for (size_t i = 0; i < s->n_colls; i++)
		if (!s->colls[i].dead)
			order[(*n)++] = (uint32_t)i;
	qsort_r(order, *n, sizeof(*order), coll_cmp, s->colls);
	return order;
}

/* What the key counts and the segments' live bytes become when a key row
 * with `expiry_ms` replaces what the index held (existed, prev_expiry_ms),
 * as the server counts a write. */
static void count_key(struct bulk_shard *s, bool existed, uint64_t prev_expiry_ms,
                      uint64_t expiry_ms)
{
	bool oe = existed && prev_expiry_ms, ne = expiry_ms != 0;
	s->keys++;
	s->count.keys += !existed;
	s->count.expires += (uint64_t)ne - (uint64_t)oe;
	s->count.expiry_sum_s += (ne ? expiry_ms / 1000 : 0) - (oe ? prev_expiry_ms / 1000 : 0);
}

/* Writes string row r's key row, looking up the entry it replaces.
 * Returns 0 or -errno (message in s->err). */
static int put_string_row(struct bulk *b, struct bulk_shard *s, struct idx_sst *sst,
                          struct live_table *live, const struct bulk_row *r)
{
	uint64_t prev_expiry = 0;
	bool existed = false;
	if (s->base.keys > 0) {
		struct idx_entry old;
		int ret = idx_get(s->idx, r->key, r->key_len, IDX_BLOCKING, &old, NULL);
		if (ret < 0 && ret != -ENOENT)
			return index_failed(s, ret, s->err, sizeof(s->err));
		if (ret == 0) {
			existed = true;
			prev_expiry = old.expiry_ms;
			if (!old.is_inline)
				live_drop(live, old.segment, old.length);
		}
	}
	if (existed)
		s->overwritten++;
	else
		s->new_keys++;
	count_key(s, existed, prev_expiry, r->expiry_ms);
	bool is_inline = r->value_len <= b->cfg.inline_max;
	if (!is_inline)
		live->segs[live->n_old + (r->segment - s->first_seg)].live += r->length;
	struct idx_entry e = {.type = FMT_TYPE_STRING,
	                      .expiry_ms = r->expiry_ms,
	                      .lsn = r->lsn,
	                      .value_len = r->value_len,
	                      .is_inline = is_inline,
	                      .value = is_inline ? r->key + r->key_len : NULL,
	                      .segment = r->segment,
	                      .offset = r->offset,
	                      .length = r->length};
	return idx_sst_put(sst, r->key, r->key_len, &e, prev_expiry, s->err, sizeof(s->err));
}

/* Writes collection co's key row (what it replaces was read when the
 * import met the key).  Returns 0 or -errno (message in s->err). */
static int put_coll_row(struct bulk_shard *s, struct idx_sst *sst, struct live_table *live,
                        const struct bulk_coll *co)
{
	if (co->prev_length > 0)
		live_drop(live, co->prev_segment, co->prev_length);
	if (co->extends)
		s->extended++;
	else if (co->existed)
		s->overwritten++;
	else
		s->new_keys++;
	uint64_t prev_expiry = co->existed ? co->prev_expiry_ms : 0;
	count_key(s, co->existed, prev_expiry, co->expiry_ms);
	struct idx_entry e = {.type = co->type,
	                      .expiry_ms = co->expiry_ms,
	                      .lsn = co->lsn,
	                      .is_inline = true,
	                      .version = co->version,
	                      .count = co->count,
	                      .enc = co->enc};
	return idx_sst_put(sst, co->key, co->key_len, &e, prev_expiry, s->err, sizeof(s->err));
}

/* Builds shard s's table of key rows: the string rows (sorted, the last row
 * of a key wins) merged with the live collections, with existing keys looked
 * up for the key count, their expiry rows and the live bytes of the segments
 * their old values are in. */
static int build_table(struct bulk *b, struct bulk_shard *s)
{
	if (s->n_rows == 0 && s->n_colls == 0)
		return 0;
	struct live_table live;
	size_t n_colls = 0;
	uint32_t *colls = NULL;
	uint64_t *order = NULL;
	struct idx_sst *sst = NULL;
	int ret = live_init(s, &live);
	if (ret == 0 && s->n_rows > 0 && (order = sort_rows(s)) == NULL)
		ret = -ENOMEM;
	if (ret == 0 && s->n_colls > 0 && (colls = sort_colls(s, &n_colls)) == NULL)
		ret = -ENOMEM;
	if (ret == -ENOMEM)
		snprintf(s->err, sizeof(s->err), "shard %u: out of memory sorting %zu rows", s->no,
		         s->n_rows + s->n_colls);
	if (ret < 0)
		goto out;
	char path[FS_PATH_MAX];
	snprintf(path, sizeof(path), "%s/" SST_NAME, s->dir);
	ret = idx_sst_open(&sst, s->idx, path, s->err, sizeof(s->err));
	if (ret < 0)
		goto out;
	s->has_sst = true;
	size_t i = 0, j = 0;
	for (uint64_t step = 0;; step++) {
		/* The rows are visited in hash order, i.e. at random: fetch ahead. */
		if (i + 16 < s->n_rows)
			__builtin_prefetch(&s->rows[(uint32_t)order[i + 16]]);
		if (i + 8 < s->n_rows)
			__builtin_prefetch(s->rows[(uint32_t)order[i + 8]].key);
		while (i + 1 < s->n_rows && order[i + 1] >> 32 == order[i] >> 32 &&
		       key_cmp(&s->rows[(uint32_t)order[i + 1]], &s->rows[(uint32_t)order[i]]) == 0)
			i++; /* a later row of the same key wins */
		if (step % BULK_STOP_CHECK == 0 && b->cfg.stop != NULL && *b->cfg.stop) {
			ret = -EINTR;
			snprintf(s->err, sizeof(s->err), "interrupted");
			goto out;
		}
		const struct bulk_row *r = i < s->n_rows ? &s->rows[(uint32_t)order[i]] : NULL;
		const struct bulk_coll *co = j < n_colls ? &s->colls[colls[j]] : NULL;
		if (r == NULL && co == NULL)
			break;
		/* (a key is never both: a SET kills its collection, an HSET is
		 * refused on a string) */
		if (r != NULL && (co == NULL || key_row_cmp(r->hash, r->key, r->key_len, co->hash,
		                                           co->key, co->key_len) < 0)) {
			ret = put_string_row(b, s, sst, &live, r);
			i++;
		} else {
			ret = put_coll_row(s, sst, &live, co);
			j++;
		}
		if (ret < 0)
			goto out;
	}
	ret = idx_sst_finish(sst, s->next_lsn - 1, s->map_ids, s->map_n, s->map_next, s->db_id,
	                     &s->count, live.segs, live_rows(&live), s->err, sizeof(s->err));
out:
	idx_sst_free(sst);
	free(order);
	free(colls);
	free(live.segs);
	free(live.touched);
	return ret;
}

/* Element-row order (index.h): the idents' bytes.  Elements of one
 * collection share their prefix up to the version: collections compare by
 * rank (their prefixes' order), then the element hash and element. */
struct elem_order {
	const struct bulk_elem_row *elems;
	const uint32_t *rank;      /* by collection */
	const struct bulk_coll *colls;
};

static int elem_cmp(const void *x, const void *y, void *arg)
{
	const struct elem_order *o = arg;
	const struct bulk_elem_row *a = &o->elems[*(const uint32_t *)x];
	const struct bulk_elem_row *b = &o->elems[*(const uint32_t *)y];
	if (a->coll != b->coll)
		return o->rank[a->coll] < o->rank[b->coll] ? -1 : 1;
	size_t p = fmt_elem_prefix_len(o->colls[a->coll].key_len - FMT_KEY_IDENT_HEAD);
	size_t an = a->ident_len - p, bn = b->ident_len - p;
	int c = memcmp(a->ident + p, b->ident + p, an < bn ? an : bn);
	if (c != 0)
		return c;
	return an < bn ? -1 : an > bn;
}

/* Prefix order of two collections' element idents: user key length, key,
 * version (their idents' fields, big-endian). */
static int coll_prefix_cmp(const void *x, const void *y, void *arg)
{
	const struct bulk_coll *colls = arg;
	const struct bulk_coll *a = &colls[*(const uint32_t *)x], *b = &colls[*(const uint32_t *)y];
	if (a->key_len != b->key_len)
		return a->key_len < b->key_len ? -1 : 1;
	int c = memcmp(a->key, b->key, a->key_len);
	if (c != 0)
		return c;
	return a->version < b->version ? -1 : a->version > b->version;
}

/* Builds shard s's table of element rows: every element put in a live
 * collection, in ident order.  Returns 0 or -errno (message in s->err). */
static int build_elem_table(struct bulk_shard *s)
{
	uint32_t *order = NULL, *by_prefix = NULL, *rank = NULL;
	struct idx_sst *sst = NULL;
	size_t n = 0;
	int ret = 0;
	for (size_t i = 0; i < s->n_elems; i++)
		n += !s->colls[s->elems[i].coll].dead;
	if (n == 0)
		return 0;
	order = malloc(n * sizeof(*order));
	by_prefix = malloc(s->n_colls * sizeof(*by_prefix));
	rank = malloc(s->n_colls * sizeof(*rank));
	if (order == NULL || by_prefix == NULL || rank == NULL) {
		snprintf(s->err, sizeof(s->err), "shard %u: out of memory sorting %zu elements",
		         s->no, n);
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < s->n_colls; i++)
		by_prefix[i] = (uint32_t)i;
	qsort_r(by_prefix, s->n_colls, sizeof(*by_prefix), coll_prefix_cmp, s->colls);
	for (size_t i = 0; i < s->n_colls; i++)
		rank[by_prefix[i]] = (uint32_t)i;
	n = 0;
	for (size_t i = 0; i < s->n_elems; i++)
		if (!s->colls[s->elems[i].coll].dead)
			order[n++] = (uint32_t)i;
	struct elem_order eo = {.elems = s->elems, .rank = rank, .colls = s->colls};
	qsort_r(order, n, sizeof(*order), elem_cmp, &eo);
	char path[FS_PATH_MAX];
	snprintf(path, sizeof(path), "%s/" ELEM_SST_NAME, s->dir);
	ret = idx_sst_open(&sst, s->idx, path, s->err, sizeof(s->err));
	if (ret < 0)
		goto out;
	s->has_elem_sst = true;
	for (size_t i = 0; i < n && ret == 0; i++) {
		const struct bulk_elem_row *e = &s->elems[order[i]];
		ret = idx_sst_put_elem(sst, e->ident, e->ident_len, e->ident + e->ident_len,
		                       e->value_len, s->err, sizeof(s->err));
	}
	if (ret == 0)
		ret = idx_sst_finish_elems(sst, s->err, sizeof(s->err));
	s->elements = n;
out:
	idx_sst_free(sst);
	free(order);
	free(by_prefix);
	free(rank);
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
		if (s->result == 0)
			s->result = build_elem_table(s);
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
		stats->extended += s->extended;
		stats->elements += s->elements;
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
		/* Both tables at once: the key rows and their elements appear
		 * together. */
		char path[FS_PATH_MAX], elem_path[FS_PATH_MAX];
		snprintf(path, sizeof(path), "%s/" SST_NAME, s->dir);
		snprintf(elem_path, sizeof(elem_path), "%s/" ELEM_SST_NAME, s->dir);
		const char *paths[2] = {path, elem_path};
		ret = idx_ingest(s->idx, paths, s->has_elem_sst ? 2 : 1, s->next_lsn - 1, err,
		                 errlen);
		if (ret < 0) {
			size_t n = strlen(err);
			snprintf(err + n, errlen - n,
			         "; the import is committed in the log all the same:"
			         " ringkv-server replays it into the index when it starts");
			return ret;
		}
		s->has_sst = false;
		s->has_elem_sst = false;
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
		if (s->has_elem_sst || !b->committed) {
			snprintf(path, sizeof(path), "%s/" ELEM_SST_NAME, s->dir);
			unlink(path);
		}
		if (s->idx != NULL)
			idx_close(s->idx);
		if (s->lock_fd >= 0)
			close(s->lock_fd); /* releases the flock */
		free(s->rows);
		free(s->colls);
		free(s->elems);
		free(s->keytab.slots);
		free(s->elemtab.slots);
		free(s->map_ids);
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
	free(b->ident);
	free(b->eident);
	free(b->group);
	free(b);
}
