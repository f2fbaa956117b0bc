/* fuzz_log: libFuzzer target for the log's segment reader and recovery
 * (storage/log.c, log_open) and for fmt_decode_record and
 * fmt_decode_segment_header (storage/format.c).
 *
 * Each input becomes one or more segment files in a temporary shard log
 * directory, which log_open then recovers on a proactor (1, started once).
 * Recovery must either succeed (cutting a torn tail, dropping what follows a
 * gap) or refuse with a message — never crash, hang or leak.  After a
 * successful recovery the replayed LSNs must follow one another from
 * from_lsn on, and a record appended then must be replayed by the next open
 * (from its LSN, as the store would reopen).  In the structured mode without
 * damage (below), the replay must be exactly the records of every complete
 * commit at or after from_lsn.
 *
 * Input: byte 0 the mode (bits 0-1: 0 = the whole file from the input, 1 = a
 * valid header then the input's bytes, 2 and 3 = structured; bit 2: the
 * header names another shard), byte 1 from_lsn, byte 2 the first segment's
 * first LSN, byte 3 the segment size ((b % 64 + 2) x 4 KiB), byte 4 its id
 * (1..4).  Structured: the rest is operations, records written with valid
 * CRCs — PUT, DELETE, DROP, PAD (ends a commit), raw bytes, a flipped byte,
 * a cut inside the open commit, the next segment — see apply_op.  Every
 * input is also decoded directly as a record and as a segment header.
 *
 *   make fuzz FUZZ_TARGETS=log         run it (tests/fuzz/fuzz.sh)
 *   build/fuzz/fuzz_log INPUT          replay one input
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>

#include "fuzz_util.h"
#include "storage/format.h"
#include "storage/log.h"

#define FUZZ_MAX_SEGS   8
#define FUZZ_VALUE_MAX  6000 /* values cross blocks, commits span several */
#define FUZZ_KEY        "fuzz-key"
#define FUZZ_EPOCH_BASE 0x5eed000000000000ULL
#define FUZZ_WAIT_S     60

static struct pool *pool;
static char dir[512];     /* temporary */
static char log_dir[600]; /* dir/log: the shard's log directory */

static void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), __noreturn__));
static void fuzz_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fuzz_log: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

static void stop_pool(void)
{
	pool_stop(pool);
	fuzz_rmtree(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_tmpdir("fuzz_log", dir, sizeof(dir));
	snprintf(log_dir, sizeof(log_dir), "%s/log", dir);
	sigset_t old = fuzz_block_signals();
	pool = test_pool(1, 64, 0, 256);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	logging_level = LOG_LEVEL_ERROR; /* recovery's INFO lines on every input */
	atexit(stop_pool);
	return 0;
}

/* ---- reading the input --------------------------------------------------- */

struct cursor {
	const uint8_t *p;
	size_t n;
};

static uint8_t take8(struct cursor *c)
{
	if (c->n == 0)
		return 0;
	c->n--;
	return *c->p++;
}

static uint16_t take16(struct cursor *c)
{
	uint16_t lo = take8(c);
	return (uint16_t)(lo | take8(c) << 8);
}

/* ---- fmt_decode_record / fmt_decode_segment_header directly ------------- */

static void check_decode_record(const uint8_t *p, size_t n, uint32_t epoch32)
{
	struct fmt_record rec;
	enum fmt_status st = fmt_decode_record(p, n, epoch32, &rec);
	if (fmt_status_str(st) == NULL)
		fuzz_fail("no text for status %d", st);
	if (st != FMT_OK)
		return;
	if (rec.type == FMT_PAD) {
		if (rec.key != NULL || rec.key_len != 0 || rec.value_len >= FMT_BLOCK ||
		    rec.value_len % 8 != 0)
			fuzz_fail("a PAD decoded with key %u bytes, padding %u", rec.key_len,
			          rec.value_len);
		return;
	}
	uint64_t size = fmt_rec_size(&rec);
	uint32_t disk_klen = rec.key_len + (rec.txid != 0 && rec.type != FMT_COMMIT ? 8 : 0);
	if (size > n || rec.key != p + FMT_RECORD_HEADER ||
	    rec.value != p + FMT_RECORD_HEADER + disk_klen ||
	    (rec.type == FMT_COMMIT) != (rec.txid != 0 && disk_klen == rec.key_len))
		fuzz_fail("a record of %llu bytes decoded from %zu", (unsigned long long)size, n);
	/* Encoding what was decoded gives the same bytes (the alignment
	 * padding aside: it is not covered by the CRC). */
	uint8_t *again = malloc(size);
	if (again == NULL)
		fuzz_fail("out of memory");
	if (fmt_encode_record(again, epoch32, &rec) != size ||
	    memcmp(again, p, FMT_RECORD_HEADER + disk_klen + rec.value_len) != 0)
		fuzz_fail("re-encoding a decoded record differs");
	free(again);
}

static void check_decode_header(const uint8_t *p, size_t n)
{
	static uint8_t block[FMT_SEG_HEADER_SIZE], again[FMT_SEG_HEADER_SIZE];
	struct fmt_segment_header h;
	memset(block, 0, sizeof(block));
	memcpy(block, p, n < sizeof(block) ? n : sizeof(block));
	if (fmt_decode_segment_header(block, &h) != FMT_OK)
		return;
	if (h.version != FMT_VERSION || h.size % FMT_BLOCK != 0 ||
	    h.size < FMT_SEG_HEADER_SIZE + FMT_BLOCK)
		fuzz_fail("a segment header decoded with version %u, size %llu", h.version,
		          (unsigned long long)h.size);
	fmt_encode_segment_header(again, &h);
	if (memcmp(again, block, 52) != 0)
		fuzz_fail("re-encoding a decoded segment header differs");
}

/* ---- building segment files ---------------------------------------------- */

/* One segment file being built in memory. */
struct seg_image {
	uint64_t id;
	uint64_t epoch;
	uint64_t first_lsn;
	uint8_t *buf; /* `size` bytes */
	uint64_t end; /* bytes to write: the file's length */
};

/* What the structured mode built, and what recovery must make of it. */
struct build {
	uint64_t size;  /* segment size (header field and buffer size) */
	uint32_t shard; /* in the headers */
	struct seg_image segs[FUZZ_MAX_SEGS];
	size_t n_segs;
	uint64_t commit;        /* offset of the open commit in the last segment */
	uint64_t pos;           /* where the next record goes */
	uint64_t lsn;           /* LSN of the next record */
	uint64_t committed_lsn; /* LSN after the last complete commit */
	bool cut_in_commit;     /* the open commit has a record cut short */
	bool clean;             /* no damage: the model below is exact */
	uint64_t *expected;     /* LSNs of the records of complete commits, in order */
	size_t n_expected, cap_expected;
	uint64_t *open_lsns; /* ... and of the open commit's records */
	size_t n_open, cap_open;
};

static void push_lsn(uint64_t **v, size_t *n, size_t *cap, uint64_t lsn)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*v = realloc(*v, *cap * sizeof(**v));
		if (*v == NULL)
			fuzz_fail("out of memory");
	}
	(*v)[(*n)++] = lsn;
}

static struct seg_image *last_seg(struct build *b)
{
	return &b->segs[b->n_segs - 1];
}

/* Starts segment `id` with a valid header (bytes 0..4095). */
static void start_segment(struct build *b, uint64_t id, uint64_t first_lsn)
{
	struct seg_image *s = &b->segs[b->n_segs++];
	s->id = id;
	s->epoch = FUZZ_EPOCH_BASE ^ (id * 0x9E3779B97F4A7C15ULL);
	s->first_lsn = first_lsn;
	s->buf = calloc(1, b->size);
	if (s->buf == NULL)
		fuzz_fail("out of memory");
	struct fmt_segment_header h = {.version = FMT_VERSION,
	                               .shard = b->shard,
	                               .id = id,
	                               .epoch = s->epoch,
	                               .first_lsn = first_lsn,
	                               .size = b->size};
	fmt_encode_segment_header(s->buf, &h);
	s->end = FMT_SEG_HEADER_SIZE;
	b->commit = b->pos = FMT_SEG_HEADER_SIZE;
	b->lsn = first_lsn;
	b->n_open = 0;
	b->cut_in_commit = false;
}

static void note_end(struct build *b)
{
	if (last_seg(b)->end < b->pos)
		last_seg(b)->end = b->pos;
}

/* Applies one structured operation (the op byte's low 3 bits; bit 7 and
 * bit 6 vary it, and damage makes the build unclean):
 *   0, 1  PUT      key (length and bytes from the input), value of filler;
 *                  bit 7: the LSN jumps by a signed byte; bit 6: the CRC is
 *                  seeded with another epoch (a stale record of a recycled file)
 *   2     DELETE   as PUT, no value
 *   3     DBMAP    a database map of two databases (key empty)
 *   4     PAD      ends the open commit (an empty one only with bit 7)
 *   5     raw      up to 255 bytes of the input at the write position
 *   6     flip     one byte of the segment already written; bit 7: a cut
 *                  inside the open commit instead (a torn write)
 *   7     segment  the next segment file; bit 7: its id skips one; bit 6: its
 *                  first LSN does not reuse the open commit's LSNs */
static void apply_op(struct build *b, struct cursor *c)
{
	uint8_t op = take8(c);
	struct seg_image *s = last_seg(b);
	uint32_t epoch32 = (uint32_t)s->epoch;
	switch (op & 7) {
	case 0:
	case 1:
	case 2:
	case 3: {
		static uint8_t key[256], value[FUZZ_VALUE_MAX];
		enum fmt_type type = (op & 7) <= 1   ? FMT_PUT
		                     : (op & 7) == 2 ? FMT_DELETE
		                                     : FMT_DBMAP;
		struct fmt_record rec = {.type = type, .key = key, .value = value};
		if (type != FMT_DBMAP) {
			rec.key_len = 1 + take8(c) % 48; /* an ident is never empty */
			for (uint32_t i = 0; i < rec.key_len; i++)
				key[i] = c->n ? take8(c) : 'k';
		} else {
			static const uint32_t ids[2] = {0, 1};
			fmt_encode_dbmap(value, ids, 2, 2);
			rec.value_len = (uint32_t)fmt_dbmap_size(2);
		}
		if (type == FMT_PUT) {
			rec.value_len = take16(c) % FUZZ_VALUE_MAX;
			memset(value, 'v', rec.value_len);
			rec.expiry_ms = op & 0x20 ? 1 : 0;
		}
		if (op & 0x10) { /* a transaction's record, or a COMMIT */
			rec.txid = 1 + take8(c);
			if (type == FMT_DBMAP)
				rec.type = FMT_COMMIT;
		}
		if (op & 0x80) {
			b->lsn += (uint64_t)(int64_t)(int8_t)take8(c);
			b->clean = false;
		}
		if (op & 0x40) {
			epoch32 ^= 0x5a5a;
			b->clean = false;
		}
		rec.lsn = b->lsn;
		uint64_t size = fmt_rec_size(&rec);
		if (b->pos + size > b->size)
			return;
		fmt_encode_record(s->buf + b->pos, epoch32, &rec);
		b->pos += size;
		push_lsn(&b->open_lsns, &b->n_open, &b->cap_open, b->lsn);
		b->lsn++;
		break;
	}
	case 4: {
		if (b->pos == b->commit && !(op & 0x80))
			return; /* the log never writes an empty commit */
		uint64_t end =
		    (b->pos + FMT_RECORD_HEADER + FMT_BLOCK - 1) & ~(uint64_t)(FMT_BLOCK - 1);
		if (end > b->size)
			return;
		fmt_encode_pad(s->buf + b->commit, b->pos - b->commit, epoch32, b->lsn - 1);
		if (b->pos == b->commit || b->cut_in_commit || (b->pos - b->commit) % 8 != 0)
			b->clean = false;
		for (size_t i = 0; i < b->n_open; i++)
			push_lsn(&b->expected, &b->n_expected, &b->cap_expected, b->open_lsns[i]);
		b->n_open = 0;
		b->commit = b->pos = end;
		b->committed_lsn = b->lsn;
		b->cut_in_commit = false;
		break;
	}
	case 5: {
		size_t n = take8(c);
		for (size_t i = 0; i < n && b->pos < b->size; i++)
			s->buf[b->pos++] = take8(c);
		b->pos = (b->pos + 7) & ~(uint64_t)7; /* records stay 8-aligned */
		if (b->pos > b->size)
			b->pos = b->size;
		b->clean = false;
		break;
	}
	case 6:
		note_end(b);
		if (op & 0x80) {
			if (b->pos > b->commit) {
				uint64_t cut = 1 + take8(c) % (b->pos - b->commit);
				b->pos -= cut;
				memset(s->buf + b->pos, 0, cut);
				s->end = b->pos;
				b->cut_in_commit = true;
			}
		} else if (s->end > 0) {
			uint64_t at = take16(c) % s->end;
			s->buf[at] ^= (uint8_t)(take8(c) | 1);
			b->clean = false;
		}
		break;
	case 7: {
		if (b->n_segs == FUZZ_MAX_SEGS)
			return;
		note_end(b);
		uint64_t first = op & 0x40 ? b->lsn : b->committed_lsn;
		if (op & 0x40 && b->n_open > 0)
			b->clean = false;
		start_segment(b, s->id + 1 + (op >> 7), first);
		break;
	}
	}
	note_end(b);
}

static void write_file(uint64_t id, const uint8_t *data, size_t len)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/%016llx.seg", log_dir, (unsigned long long)id);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || (len > 0 && write(fd, data, len) != (ssize_t)len))
		fuzz_fail("cannot write %s: %s", path, strerror(errno));
	close(fd);
}

/* ---- opening the log on the proactor ------------------------------------- */

struct replayed {
	uint64_t from_lsn;
	size_t n;
	uint64_t last_lsn;
	uint64_t *lsns; /* [n], when `keep` */
	size_t cap;
	bool keep;
	bool last_is_ours; /* the last record is the one appended (FUZZ_KEY) */
};

static int replay_cb(void *arg, const struct fmt_record *r, const struct log_pos *pos)
{
	struct replayed *rp = arg;
	if (r->lsn < rp->from_lsn || (rp->n > 0 && r->lsn != rp->last_lsn + 1))
		fuzz_fail("replayed LSN %llu after %llu (%zu records) from LSN %llu",
		          (unsigned long long)r->lsn, (unsigned long long)rp->last_lsn, rp->n,
		          (unsigned long long)rp->from_lsn);
	if (r->type == FMT_PAD || pos->lsn != r->lsn || pos->length != fmt_rec_size(r) ||
	    pos->offset < FMT_SEG_HEADER_SIZE || pos->offset % 8 != 0)
		fuzz_fail("record LSN %llu replayed with a bad position",
		          (unsigned long long)r->lsn);
	uint8_t sum = 0; /* the key and value must be readable (ASan checks) */
	for (uint32_t i = 0; i < r->key_len + (r->type == FMT_PUT ? r->value_len : 0); i++)
		sum ^= r->key[i];
	(void)sum;
	rp->last_is_ours = r->type == FMT_PUT && r->key_len == sizeof(FUZZ_KEY) - 1 &&
	                   memcmp(r->key, FUZZ_KEY, r->key_len) == 0;
	if (rp->keep)
		push_lsn(&rp->lsns, &rp->n, &rp->cap, r->lsn);
	else
		rp->n++;
	rp->last_lsn = r->lsn;
	return 0;
}

struct open_step {
	struct log *log;
	uint64_t segment_size;
	struct replayed *rp;
	int ret;
	char err[1024];
};

static void open_fn(void *arg)
{
	struct open_step *o = arg;
	struct log_config cfg = {.dir = log_dir,
	                         .shard = 0,
	                         .segment_size = o->segment_size,
	                         .durability = LOG_DURABILITY_NONE};
	o->err[0] = '\0';
	o->ret = log_open(&o->log, px_current(), &cfg, o->rp->from_lsn, replay_cb, o->rp, o->err,
	                  sizeof(o->err));
}

struct append_step {
	struct log *log;
	struct log_write w;
	int ret;         /* log_append's */
	atomic_int done; /* 1 + the commit's result once it is written */
};

static void append_done(struct log_write *w, int err)
{
	struct append_step *a = container_of(w, struct append_step, w);
	atomic_store(&a->done, 1 + err);
}

static void append_fn(void *arg)
{
	struct append_step *a = arg;
	static const char value[] = "appended after recovery";
	struct fmt_record rec = {.type = FMT_PUT,
	                         .key = (const uint8_t *)FUZZ_KEY,
	                         .key_len = sizeof(FUZZ_KEY) - 1,
	                         .value = (const uint8_t *)value,
	                         .value_len = sizeof(value) - 1};
	a->w.done = append_done;
	a->ret = log_append(a->log, &rec, &a->w);
}

/* Opens the log with the records from `rp->from_lsn` going to rp. */
static int open_log(struct log **out, uint64_t segment_size, struct replayed *rp, char *err,
                    size_t errlen)
{
	struct open_step o = {.segment_size = segment_size, .rp = rp};
	test_on_px(pool, open_fn, &o);
	if (o.ret < 0 && o.err[0] == '\0')
		fuzz_fail("log_open refused (%s) without a message", strerror(-o.ret));
	snprintf(err, errlen, "%s", o.err);
	*out = o.log;
	return o.ret;
}

/* Recovers what the input left in log_dir and checks it (see the top). */
static void recover_and_check(struct build *b, uint64_t from_lsn)
{
	struct replayed rp = {.from_lsn = from_lsn, .keep = b != NULL && b->clean};
	struct log *log;
	char err[1024];
	uint64_t size = b != NULL ? b->size : 1u << 20;
	if (open_log(&log, size, &rp, err, sizeof(err)) < 0)
		return; /* refused with a message: allowed */

	uint64_t next = log_next_lsn(log);
	if (next < from_lsn || (rp.n > 0 && next != rp.last_lsn + 1 && next != from_lsn))
		fuzz_fail("next LSN %llu after replaying up to %llu from %llu",
		          (unsigned long long)next, (unsigned long long)rp.last_lsn,
		          (unsigned long long)from_lsn);
	if (b != NULL && b->clean) {
		size_t want = 0;
		while (want < b->n_expected && b->expected[want] < from_lsn)
			want++;
		if (rp.n != b->n_expected - want ||
		    memcmp(rp.lsns, b->expected + want, rp.n * sizeof(uint64_t)) != 0)
			fuzz_fail(
			    "replayed %zu records from LSN %llu; the complete commits hold %zu",
			    rp.n, (unsigned long long)from_lsn, b->n_expected - want);
	}
	free(rp.lsns);

	struct append_step a = {.log = log};
	atomic_init(&a.done, 0);
	test_on_px(pool, append_fn, &a);
	if (a.ret < 0)
		fuzz_fail("appending after recovery failed: %s", strerror(-a.ret));
	double deadline = test_now() + FUZZ_WAIT_S;
	while (atomic_load(&a.done) == 0) {
		if (test_now() > deadline)
			fuzz_fail("the append after recovery was not written in %d s", FUZZ_WAIT_S);
		usleep(50);
	}
	if (atomic_load(&a.done) != 1)
		fuzz_fail("the append after recovery failed: %s",
		          strerror(1 - atomic_load(&a.done)));
	test_log_close(pool, log);

	/* Reopened as the store would after indexing everything before it. */
	struct replayed again = {.from_lsn = a.w.pos.lsn};
	if (open_log(&log, size, &again, err, sizeof(err)) < 0)
		fuzz_fail("reopening after an append failed: %s", err);
	if (again.n != 1 || again.last_lsn != a.w.pos.lsn || !again.last_is_ours)
		fuzz_fail("the record appended after recovery (LSN %llu) is not replayed: %zu"
		          " records replayed from it",
		          (unsigned long long)a.w.pos.lsn, again.n);
	test_log_close(pool, log);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct build b;
	struct cursor c = {data, size};
	uint8_t mode = take8(&c);
	uint64_t from_lsn = take8(&c);
	uint64_t first_lsn = take8(&c) % 16;
	uint64_t seg_size = ((uint64_t)take8(&c) % 64 + 2) * FMT_BLOCK;
	uint64_t id = 1 + take8(&c) % 4;

	check_decode_record(c.p, c.n, 0);
	check_decode_record(c.p, c.n, (uint32_t)FUZZ_EPOCH_BASE);
	check_decode_header(c.p, c.n);

	fuzz_rmtree(log_dir);
	if (mkdir(log_dir, 0755) != 0)
		fuzz_fail("mkdir %s: %s", log_dir, strerror(errno));
	switch (mode & 3) {
	case 0:
		write_file(id, c.p, c.n);
		recover_and_check(NULL, from_lsn);
		return 0;
	case 1: {
		uint8_t *file = calloc(1, FMT_SEG_HEADER_SIZE + c.n);
		struct fmt_segment_header h = {.version = FMT_VERSION,
		                               .shard = mode & 4 ? 1 : 0,
		                               .id = id,
		                               .epoch = FUZZ_EPOCH_BASE,
		                               .first_lsn = first_lsn,
		                               .size = seg_size};
		fmt_encode_segment_header(file, &h);
		if (c.n > 0)
			memcpy(file + FMT_SEG_HEADER_SIZE, c.p, c.n);
		write_file(id, file, FMT_SEG_HEADER_SIZE + c.n);
		free(file);
		recover_and_check(NULL, from_lsn);
		return 0;
	}
	default:
		break;
	}
	b.size = seg_size;
	b.shard = mode & 4 ? 1 : 0;
	b.n_segs = b.n_expected = 0;
	b.committed_lsn = first_lsn;
	b.clean = b.shard == 0;
	start_segment(&b, id, first_lsn);
	while (c.n > 0)
		apply_op(&b, &c);
	for (size_t i = 0; i < b.n_segs; i++) {
		write_file(b.segs[i].id, b.segs[i].buf, b.segs[i].end);
		free(b.segs[i].buf);
	}
	recover_and_check(&b, from_lsn);
	return 0;
}
