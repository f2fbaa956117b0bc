/* test_index: the RocksDB index — key rows of every type in several
 * databases, element rows, count rows, the database map and segment rows;
 * crash recovery; cached-only reads; the expiry index; key and element scans;
 * the rows' bytes as index.h's table says; the format version; the persisted
 * LSN; the compaction filter (garbage dropped once its deletion is persisted,
 * kept while it is not); the bulk-load table files; a reopen that compacts. */
#include <endian.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "storage/crc32c.h"
#include "storage/format.h"
#include "storage/index.h"
#include "tests/unit/testutil.h"

#define CRASH_BATCHES_BEFORE_REPORT 2000u
#define CRASH_DATABASES             3 /* the crash child's key i goes to database i % 3 */

static char base_dir[256]; /* this run's temporary directory */

static void dir_path(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", base_dir, name);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static struct idx_shared *shared_or_exit(uint64_t cache_bytes)
{
	char err[512];
	struct idx_shared *sh;
	if (idx_shared_create(&sh, cache_bytes, 2, err, sizeof(err)) < 0) {
		fprintf(stderr, "idx_shared_create: %s\n", err);
		exit(1);
	}
	return sh;
}

static struct idx *open_or_exit(struct idx_shared *sh, const char *path)
{
	char err[512];
	struct idx *ix;
	if (idx_open(&ix, sh, path, err, sizeof(err)) < 0) {
		fprintf(stderr, "idx_open %s: %s\n", path, err);
		exit(1);
	}
	return ix;
}

/* ---- idents and entries ------------------------------------------------ */

/* An ident built by the test (keys and elements up to 1 KiB or so). */
struct ident {
	size_t len;
	uint8_t b[FMT_ELEM_IDENT_HEAD + 1200];
};
#define ID(x) (x).b, (x).len

static struct ident kid(uint32_t db, const void *key, size_t klen)
{
	struct ident id;
	id.len = fmt_key_ident(id.b, db, key, klen);
	return id;
}

static struct ident eid(uint32_t db, const void *key, size_t klen, uint64_t version,
                        const void *elem, size_t elen)
{
	struct ident id;
	id.len = fmt_elem_ident(id.b, db, key, klen, version, elem, elen);
	return id;
}

/* A NUL-terminated key or element. */
#define S(s) (s), strlen(s)

static struct idx_entry inline_entry(const void *value, uint32_t len, uint64_t lsn,
                                     uint64_t expiry_ms)
{
	return (struct idx_entry){.type = FMT_TYPE_STRING,
	                          .expiry_ms = expiry_ms,
	                          .lsn = lsn,
	                          .value_len = len,
	                          .is_inline = true,
	                          .value = value};
}

static struct idx_entry pointer_entry(uint64_t segment, uint64_t offset, uint32_t length,
                                      uint32_t value_len, uint64_t lsn, uint64_t expiry_ms)
{
	return (struct idx_entry){.type = FMT_TYPE_STRING,
	                          .expiry_ms = expiry_ms,
	                          .lsn = lsn,
	                          .value_len = value_len,
	                          .segment = segment,
	                          .offset = offset,
	                          .length = length};
}

/* A collection's entry (its metadata). */
static struct idx_entry coll_entry(uint8_t type, uint64_t version, uint64_t count, uint8_t enc,
                                   uint64_t lsn, uint64_t expiry_ms)
{
	return (struct idx_entry){.type = type,
	                          .expiry_ms = expiry_ms,
	                          .lsn = lsn,
	                          .is_inline = true,
	                          .version = version,
	                          .count = count,
	                          .enc = enc};
}

static bool entries_equal(const struct idx_entry *a, const struct idx_entry *b)
{
	if (a->type != b->type || a->expiry_ms != b->expiry_ms || a->lsn != b->lsn)
		return false;
	if (a->type != FMT_TYPE_STRING) /* read back: inline, with no value */
		return a->is_inline && a->version == b->version && a->count == b->count &&
		       a->enc == b->enc;
	if (a->value_len != b->value_len || a->is_inline != b->is_inline)
		return false;
	if (a->is_inline)
		return a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0;
	return a->segment == b->segment && a->offset == b->offset && a->length == b->length;
}

/* Looks the key row of `id` up (blocking) and checks it matches `want`. */
static void check_entry(struct idx *ix, struct ident id, const struct idx_entry *want,
                        const char *what)
{
	struct idx_entry e;
	uint8_t *value;
	int ret = idx_get(ix, ID(id), IDX_BLOCKING, &e, &value);
	CHECK(ret == 0, "%s: get returned %d", what, ret);
	if (ret == 0)
		CHECK(entries_equal(&e, want), "%s: entry differs (type %u, lsn %" PRIu64 ")", what,
		      e.type, e.lsn);
	bool has_value = want->is_inline || want->type != FMT_TYPE_STRING;
	CHECK(has_value ? value != NULL && e.value == value : value == NULL, "%s: value buffer",
	      what);
	free(value);
}

/* Checks the element row of `id` holds value[0..vlen). */
static void check_elem(struct idx *ix, struct ident id, const void *value, size_t vlen,
                       const char *what)
{
	struct idx_entry e;
	uint8_t *v;
	int ret = idx_get(ix, ID(id), IDX_BLOCKING, &e, &v);
	CHECK(ret == 0 && e.is_inline && e.value_len == vlen && v != NULL && e.value == v &&
	          (vlen == 0 || memcmp(v, value, vlen) == 0),
	      "%s: get returned %d, %u bytes", what, ret, ret == 0 ? e.value_len : 0);
	free(v);
}

static void check_absent(struct idx *ix, struct ident id, const char *what)
{
	struct idx_entry e;
	uint8_t *value = (uint8_t *)1;
	int ret = idx_get(ix, ID(id), IDX_BLOCKING, &e, &value);
	CHECK(ret == -ENOENT, "%s: get returned %d, want -ENOENT", what, ret);
	CHECK(value == NULL, "%s: value not NULL", what);
}

/* True if the row of `id` is there (blocking read). */
static bool row_exists(struct idx *ix, struct ident id)
{
	struct idx_entry e;
	return idx_get(ix, ID(id), IDX_BLOCKING, &e, NULL) == 0;
}

/* ---- count rows -------------------------------------------------------- */

#define COUNTS_MAX 16

struct counts {
	size_t n;
	uint32_t db[COUNTS_MAX];
	struct idx_count c[COUNTS_MAX];
	bool ordered; /* visited in database order */
};

static void counts_visit(void *arg, uint32_t db, const struct idx_count *c)
{
	struct counts *s = arg;
	if (s->n > 0 && s->db[s->n - 1] >= db)
		s->ordered = false;
	if (s->n < COUNTS_MAX) {
		s->db[s->n] = db;
		s->c[s->n] = *c;
	}
	s->n++;
}

static struct counts read_counts(struct idx *ix)
{
	struct counts s = {.ordered = true};
	CHECK(idx_counts(ix, counts_visit, &s) == 0, "idx_counts failed");
	CHECK(s.ordered, "count rows not in database order");
	return s;
}

/* Checks the count rows are exactly want[0..n) (by database, ascending). */
static void check_counts(struct idx *ix, const uint32_t *dbs, const struct idx_count *want,
                         size_t n, const char *what)
{
	struct counts s = read_counts(ix);
	CHECK(s.n == n, "%s: %zu count rows, want %zu", what, s.n, n);
	for (size_t i = 0; i < n && i < s.n && i < COUNTS_MAX; i++)
		CHECK(s.db[i] == dbs[i] && s.c[i].keys == want[i].keys &&
		          s.c[i].expires == want[i].expires &&
		          s.c[i].expiry_sum_s == want[i].expiry_sum_s,
		      "%s: count row %zu: database %" PRIu32 " %" PRIu64 "/%" PRIu64 "/%" PRIu64,
		      what, i, s.db[i], s.c[i].keys, s.c[i].expires, s.c[i].expiry_sum_s);
}

/* Checks the database map is ids[0..n), next_id. */
static void check_dbmap(struct idx *ix, const uint32_t *ids, uint32_t n, uint32_t next_id,
                        const char *what)
{
	uint32_t got[16], got_n = 0, got_next = 0;
	int ret = idx_dbmap(ix, got, 16, &got_n, &got_next);
	CHECK(ret == 0 && got_n == n && got_next == next_id &&
	          memcmp(got, ids, n * sizeof(*ids)) == 0,
	      "%s: map %d, %" PRIu32 " ids, next %" PRIu32, what, ret, got_n, got_next);
}

/* ---- entries ----------------------------------------------------------- */

static void test_round_trip(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "roundtrip/shard-000/index");
	struct idx *ix = open_or_exit(sh, path);
	CHECK(idx_applied_lsn(ix) == 0, "a new index starts at applied_lsn 0");
	CHECK(read_counts(ix).n == 0, "a new index has no count row");
	uint32_t ids[4], n, next;
	CHECK(idx_dbmap(ix, ids, 4, &n, &next) == -ENOENT, "a new index has no database map");

	static const uint8_t k1[] = {'a', 0, 'b'}, k2[] = {'a', 0, 'c'}, v1[] = {0, 1, 0, 2, 0};
	uint8_t long_key[1000];
	for (size_t i = 0; i < sizeof(long_key); i++)
		long_key[i] = (uint8_t)(i * 7);
	struct ident i1 = kid(0, k1, sizeof(k1)), i2 = kid(0, k2, sizeof(k2));
	struct ident i_empty = kid(0, NULL, 0), i_long = kid(0, long_key, sizeof(long_key));
	struct ident i_hash = kid(7, k1, sizeof(k1)); /* k1 again, in another database */
	struct ident i_set = kid(7, S("set"));
	struct idx_entry e1 = inline_entry(v1, sizeof(v1), 7, 0);
	struct idx_entry e2 =
	    pointer_entry(1ull << 40, 1ull << 33, 1u << 31, 123456, 1ull << 62, 1700000000123ull);
	struct idx_entry e_empty = inline_entry(NULL, 0, 9, 0);
	struct idx_entry e_long = pointer_entry(0, 4096, 40, 0, 10, 0);
	struct idx_entry e_hash =
	    coll_entry(FMT_TYPE_HASH, 1ull << 50, 2, FMT_ENC_BIG, 10, 1800000000000ull);
	struct idx_entry e_set = coll_entry(FMT_TYPE_SET, 3, 1ull << 33, 0, 8, 0);
	struct ident f1 = eid(7, k1, sizeof(k1), 1ull << 50, S("field"));
	struct ident f2 = eid(7, k1, sizeof(k1), 1ull << 50, NULL, 0); /* the empty field */
	struct ident m1 = eid(7, S("set"), 3, S("member"));
	struct idx_entry ef1 = inline_entry("value", 5, 0, 0), ef2 = inline_entry(NULL, 0, 0, 0);

	struct idx_batch *b = idx_batch_new();
	idx_batch_put(b, ID(i1), &e1, 0);
	idx_batch_put(b, ID(i2), &e2, 0);
	idx_batch_put(b, ID(i_empty), &e_empty, 0);
	idx_batch_put(b, ID(i_long), &e_long, 0);
	idx_batch_put(b, ID(i_hash), &e_hash, 0);
	idx_batch_put(b, ID(i_set), &e_set, 0);
	idx_batch_put(b, ID(f1), &ef1, 0);
	idx_batch_put(b, ID(f2), &ef2, 0);
	idx_batch_put(b, ID(m1), &ef2, 0);
	idx_batch_set_count(b, 0, &(struct idx_count){4, 1, 1700000000});
	idx_batch_set_count(b, 7, &(struct idx_count){2, 1, 1800000000});
	static const uint32_t map[] = {0, 7, 2};
	idx_batch_set_dbmap(b, map, 3, 8);
	CHECK(idx_write(ix, b, 10) == 0, "write");
	CHECK(idx_applied_lsn(ix) == 10, "applied_lsn in memory");

	check_entry(ix, i1, &e1, "inline with zeros");
	check_entry(ix, i2, &e2, "pointer with large fields");
	check_entry(ix, i_empty, &e_empty, "empty key, empty inline value");
	check_entry(ix, i_long, &e_long, "1000-byte key");
	check_entry(ix, i_hash, &e_hash, "a hash with an expiry");
	check_entry(ix, i_set, &e_set, "a set");
	check_elem(ix, f1, "value", 5, "a hash field");
	check_elem(ix, f2, NULL, 0, "an empty hash field with an empty value");
	check_elem(ix, m1, NULL, 0, "a set member");
	check_absent(ix, kid(0, "a", 1), "prefix of a key");
	check_absent(ix, kid(0, "a\0", 2), "prefix with zero");
	check_absent(ix, kid(1, k1, sizeof(k1)), "the key in a database that lacks it");
	check_absent(ix, eid(7, k1, sizeof(k1), (1ull << 50) + 1, S("field")),
	             "the field under another version");
	check_absent(ix, eid(0, k1, sizeof(k1), 1ull << 50, S("field")),
	             "the field in another database");
	CHECK(idx_get(ix, "k", 1, IDX_BLOCKING, &(struct idx_entry){0}, NULL) == -EINVAL,
	      "a get of something not an ident is refused");

	struct idx_entry e;
	CHECK(idx_get(ix, ID(i1), IDX_CACHED_ONLY, &e, NULL) == 0 && e.is_inline &&
	          e.value == NULL && e.value_len == sizeof(v1),
	      "a memtable entry is found cached-only; value NULL without a buffer");
	check_counts(ix, (const uint32_t[]){0, 7},
	             (const struct idx_count[]){{4, 1, 1700000000}, {2, 1, 1800000000}}, 2,
	             "count rows");
	check_dbmap(ix, map, 3, 8, "database map");

	/* Overwrite inline -> pointer, pointer -> inline, a hash -> a string;
	 * delete a key and an element; the counts of database 7 go to zero
	 * (their row goes), the map changes. */
	struct idx_entry e1b = pointer_entry(3, 8192, 64, 20, 11, 0);
	struct idx_entry e2b = inline_entry("xyz", 3, 12, 0);
	struct idx_entry e_hash_b = inline_entry("str", 3, 12, 0);
	idx_batch_put(b, ID(i1), &e1b, 0);
	idx_batch_put(b, ID(i2), &e2b, e2.expiry_ms);
	idx_batch_put(b, ID(i_hash), &e_hash_b, e_hash.expiry_ms);
	idx_batch_delete(b, ID(i_long), 0);
	idx_batch_delete(b, ID(i_set), 0);
	idx_batch_delete(b, ID(m1), 0);
	idx_batch_set_count(b, 0, &(struct idx_count){3, 0, 0});
	idx_batch_set_count(b, 7, &(struct idx_count){0, 0, 0});
	static const uint32_t map2[] = {9, 7, 2};
	idx_batch_set_dbmap(b, map2, 3, 10);
	CHECK(idx_write(ix, b, 12) == 0, "second write");
	check_entry(ix, i1, &e1b, "inline overwritten by pointer");
	check_entry(ix, i2, &e2b, "pointer overwritten by inline");
	check_entry(ix, i_hash, &e_hash_b, "a hash overwritten by a string");
	check_absent(ix, i_long, "deleted key");
	check_absent(ix, i_set, "deleted set");
	check_absent(ix, m1, "deleted member");
	check_elem(ix, f1, "value", 5, "an element row stays when its key row changes");
	const uint32_t db0[] = {0};
	const struct idx_count c0[] = {{3, 0, 0}};
	check_counts(ix, db0, c0, 1, "count rows after the second write");
	check_dbmap(ix, map2, 3, 10, "database map after the second write");

	idx_close(ix);
	ix = open_or_exit(sh, path);
	CHECK(idx_applied_lsn(ix) == 12, "applied_lsn after reopen: %" PRIu64, idx_applied_lsn(ix));
	CHECK(idx_persisted_lsn(ix) == 12, "close flushed everything");
	check_entry(ix, i1, &e1b, "after reopen: k1");
	check_entry(ix, i2, &e2b, "after reopen: k2");
	check_entry(ix, i_hash, &e_hash_b, "after reopen: the string in database 7");
	check_entry(ix, i_empty, &e_empty, "after reopen: empty key");
	check_absent(ix, i_long, "after reopen: deleted key");
	check_elem(ix, f2, NULL, 0, "after reopen: the empty field");
	check_counts(ix, db0, c0, 1, "count rows after reopen");
	check_dbmap(ix, map2, 3, 10, "database map after reopen");

	struct idx_stats st;
	idx_get_stats(ix, &st);
	CHECK(st.gets > 0 && st.writes == 0 && st.errors == 0, "stats after reopen");
	CHECK(st.sst_bytes > 0, "SST bytes reported");
	idx_batch_free(b);
	idx_close(ix);
}

/* idx_get_many: key and element rows, present and absent, in any order; a
 * probe that is not an ident refuses the whole call. */
static void test_get_many(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "getmany/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	struct ident k[6];
	for (int i = 0; i < 6; i++) {
		char key[8];
		snprintf(key, sizeof(key), "g%d", i);
		k[i] = i % 2 ? kid(1, S(key)) : kid(2, S(key));
		struct idx_entry e = i == 4 ? coll_entry(FMT_TYPE_SET, 44, 1, 0, 4, 0)
		                            : inline_entry(key, 2, (uint64_t)i + 1, 0);
		if (i != 3) /* g3 stays absent */
			idx_batch_put(b, ID(k[i]), &e, 0);
	}
	struct ident member = eid(2, S("g4"), 44, S("m"));
	idx_batch_put(
	    b, ID(member),
	    &(struct idx_entry){.is_inline = true, .value = (const uint8_t *)"mv", .value_len = 2},
	    0);
	CHECK(idx_write(ix, b, 6) == 0, "write");
#define PROBE(x)                                                                                   \
	{                                                                                          \
		.key = (x).b, .klen = (x).len                                                      \
	}
	struct idx_probe p[7] = {PROBE(k[5]), PROBE(k[3]), PROBE(member), PROBE(k[0]),
	                         PROBE(k[4]), PROBE(k[1]), PROBE(k[2])};
	CHECK(idx_get_many(ix, p, 7) == 0, "get_many");
	CHECK(p[0].status == 0 && p[0].e.lsn == 6 && p[0].e.value == NULL, "probe g5");
	CHECK(p[1].status == -ENOENT, "probe of an absent key: %d", p[1].status);
	CHECK(p[2].status == 0 && p[2].e.is_inline && p[2].e.value_len == 2, "probe of an element");
	CHECK(p[3].status == 0 && p[3].e.lsn == 1, "probe g0");
	CHECK(p[4].status == 0 && p[4].e.type == FMT_TYPE_SET && p[4].e.version == 44,
	      "probe of a set");
	CHECK(p[5].status == 0 && p[5].e.lsn == 2 && p[6].status == 0 && p[6].e.lsn == 3,
	      "probes g1 g2");
	struct idx_probe bad[2] = {PROBE(k[0]), {.key = "x", .klen = 1}};
#undef PROBE
	CHECK(idx_get_many(ix, bad, 2) == -EINVAL, "a probe that is not an ident is refused");
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- crash consistency ------------------------------------------------- */

static struct ident crash_ident(uint64_t i)
{
	char key[32];
	snprintf(key, sizeof(key), "c%08" PRIu64, i);
	return kid((uint32_t)(i % CRASH_DATABASES), S(key));
}

/* Keys 1..i of database db: how many of them there are. */
static uint64_t crash_count(uint64_t i, uint32_t db)
{
	return i / CRASH_DATABASES + (db != 0 && db <= i % CRASH_DATABASES);
}

/* The child: writes batch i (key i in database i % 3, that database's count
 * row, applied_lsn i) for i = 1, 2, ..., asking for flushes now and then;
 * reports on `fd` the persisted LSN once it is past
 * CRASH_BATCHES_BEFORE_REPORT, then goes on until killed ("kill") or stops
 * without closing ("exit"). */
static int crash_child(const char *path, int fd, const char *mode)
{
	struct idx_shared *sh = shared_or_exit(8u << 20);
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	uint64_t limit = strcmp(mode, "exit") == 0 ? 3 * CRASH_BATCHES_BEFORE_REPORT : UINT64_MAX;
	for (uint64_t i = 1; i <= limit; i++) {
		struct idx_entry e = pointer_entry(i / 100, i * 64, 64, 8, i, 0);
		struct ident id = crash_ident(i);
		uint32_t db = (uint32_t)(i % CRASH_DATABASES);
		idx_batch_put(b, ID(id), &e, 0);
		idx_batch_set_count(b, db, &(struct idx_count){crash_count(i, db), 0, 0});
		if (idx_write(ix, b, i) < 0)
			_exit(2);
		if (i % 97 == 0)
			idx_request_flush(ix);
		if (i == CRASH_BATCHES_BEFORE_REPORT) {
			double deadline = test_now() + 20;
			uint64_t p;
			while ((p = idx_persisted_lsn(ix)) == 0 && test_now() < deadline) {
				idx_request_flush(ix);
				usleep(1000);
			}
			if (write(fd, &p, sizeof(p)) != sizeof(p))
				_exit(3);
		}
	}
	idx_request_flush(ix);
	_exit(0);
}

struct key_tally {
	uint64_t n;       /* keys visited */
	uint64_t max_lsn; /* the highest entry LSN among them */
};

static int tally_visit(void *arg, const void *key, size_t klen, const struct idx_entry *e)
{
	struct key_tally *t = arg;
	(void)key;
	(void)klen;
	t->n++;
	if (e->lsn > t->max_lsn)
		t->max_lsn = e->lsn;
	return 0;
}

/* Walks every key of database `db` with idx_scan, 1000 per call. */
static struct key_tally tally_keys(struct idx *ix, uint32_t db)
{
	struct key_tally t = {0, 0};
	uint32_t cursor = 0;
	int ret;
	while ((ret = idx_scan(ix, db, cursor, 1000, tally_visit, &t, &cursor)) == 1)
		;
	CHECK(ret == 0, "scan returned %d", ret);
	return t;
}

static uint64_t count_keys(struct idx *ix, uint32_t db)
{
	return tally_keys(ix, db).n;
}

static void test_crash(struct idx_shared *sh, const char *mode)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/crash-%s/index", base_dir, mode);
	int fds[2];
	if (pipe(fds) != 0) {
		perror("pipe");
		exit(1);
	}
	char fd_arg[16];
	snprintf(fd_arg, sizeof(fd_arg), "%d", fds[1]);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		execl("/proc/self/exe", "test_index", "--crash-child", path, fd_arg, mode,
		      (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	uint64_t reported = 0;
	ssize_t r = read(fds[0], &reported, sizeof(reported));
	close(fds[0]);
	CHECK(r == sizeof(reported), "the child reported its progress");
	CHECK(reported > 0, "a flush completed in the child");
	if (strcmp(mode, "kill") == 0) {
		usleep(100 * 1000);
		kill(pid, SIGKILL);
	}
	int status;
	waitpid(pid, &status, 0);
	if (strcmp(mode, "kill") == 0)
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child killed");
	else
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit status %d",
		      status);

	struct idx *ix = open_or_exit(sh, path);
	uint64_t a = idx_applied_lsn(ix);
	CHECK(a >= reported, "%s: recovered applied_lsn %" PRIu64 " < persisted %" PRIu64, mode, a,
	      reported);
	/* Key i was written with LSN i in batch i, with its database's count:
	 * n keys, none above a, and every count row as of batch a. */
	struct counts c = read_counts(ix);
	CHECK(c.n == CRASH_DATABASES, "%s: %zu count rows", mode, c.n);
	uint64_t total = 0, highest = 0;
	for (uint32_t db = 0; db < CRASH_DATABASES; db++) {
		struct key_tally t = tally_keys(ix, db);
		total += t.n;
		highest = t.max_lsn > highest ? t.max_lsn : highest;
		CHECK(t.n == crash_count(a, db),
		      "%s: database %" PRIu32 " has %" PRIu64 " keys,"
		      " want %" PRIu64,
		      mode, db, t.n, crash_count(a, db));
		CHECK(db < c.n && c.db[db] == db && c.c[db].keys == t.n,
		      "%s: the count row of database %" PRIu32 " says %" PRIu64 ", %" PRIu64
		      " keys are there",
		      mode, db, db < c.n ? c.c[db].keys : 0, t.n);
	}
	CHECK(total == a && highest == a,
	      "%s: %" PRIu64 " keys, highest LSN %" PRIu64 ", for applied_lsn %" PRIu64, mode,
	      total, highest, a);
	struct idx_entry e;
	struct ident last = crash_ident(a), next = crash_ident(a + 1);
	CHECK(idx_get(ix, ID(last), IDX_BLOCKING, &e, NULL) == 0 && e.lsn == a,
	      "%s: the last applied key is there", mode);
	CHECK(idx_get(ix, ID(next), IDX_BLOCKING, &e, NULL) == -ENOENT, "%s: the next key is not",
	      mode);
	fprintf(stderr, "crash (%s): persisted %" PRIu64 " when reported, recovered %" PRIu64 "\n",
	        mode, reported, a);
	idx_close(ix);
}

/* ---- cached-only reads ------------------------------------------------- */

static void test_cached_only(void)
{
	char path[512];
	dir_path(path, sizeof(path), "cached/index");
	struct idx_shared *sh = shared_or_exit(1u << 20);
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	uint8_t value[100];
	char key[16];
	memset(value, 'v', sizeof(value));
	for (unsigned i = 0; i < 5000; i++) {
		value[0] = (uint8_t)i;
		struct idx_entry e = inline_entry(value, sizeof(value), i + 1, 0);
		snprintf(key, sizeof(key), "w%06u", i);
		struct ident id = kid(0, S(key));
		idx_batch_put(b, ID(id), &e, 0);
	}
	CHECK(idx_write(ix, b, 5000) == 0, "write 5000 keys");
	idx_close(ix);
	idx_shared_destroy(sh);

	sh = shared_or_exit(1u << 20);
	ix = open_or_exit(sh, path);
	struct idx_entry e;
	uint8_t *v = NULL;
	struct ident w0 = kid(0, S("w000000"));
	int ret = idx_get(ix, ID(w0), IDX_CACHED_ONLY, &e, &v);
	CHECK(ret == -EWOULDBLOCK, "an entry only on disk: cached-only get returned %d", ret);
	CHECK(v == NULL, "no value on -EWOULDBLOCK");
	ret = idx_get(ix, ID(w0), IDX_BLOCKING, &e, &v);
	CHECK(ret == 0 && e.is_inline && e.value_len == 100 && v != NULL && v[0] == 0 &&
	          v[99] == 'v' && e.lsn == 1,
	      "blocking get finds it (%d)", ret);
	free(v);
	ret = idx_get(ix, ID(w0), IDX_CACHED_ONLY, &e, &v);
	CHECK(ret == 0, "then a cached-only get finds it (%d)", ret);
	free(v);
	struct idx_stats st;
	idx_get_stats(ix, &st);
	CHECK(st.gets == 3 && st.get_blocking == 1 && st.get_would_block == 1,
	      "stats: gets %" PRIu64 " blocking %" PRIu64 " would_block %" PRIu64, st.gets,
	      st.get_blocking, st.get_would_block);
	CHECK(st.block_cache_misses > 0, "the blocking get read blocks from the file");
	CHECK(st.block_cache_bytes > 0, "the block cache holds something");
	idx_batch_free(b);
	idx_close(ix);
	idx_shared_destroy(sh);
}

/* ---- expiry index ------------------------------------------------------ */

struct expired_seen {
	char keys[16][16]; /* "key", or "db:key" for a database other than 0 */
	uint64_t expiry[16];
	size_t n;
	size_t stop_after; /* 0 = never stop */
};

static int expired_visit(void *arg, uint32_t db, const void *key, size_t klen, uint64_t expiry_ms)
{
	struct expired_seen *s = arg;
	if (s->n < 16 && klen < 10) {
		char *out = s->keys[s->n];
		if (db != 0)
			out += snprintf(out, 6, "%" PRIu32 ":", db % 1000);
		memcpy(out, key, klen);
		out[klen] = '\0';
		s->expiry[s->n] = expiry_ms;
	}
	s->n++;
	return s->stop_after && s->n >= s->stop_after;
}

/* Checks idx_expired(now, after, max) visits exactly `want` (a space-separated list). */
static void check_expired_after(struct idx *ix, uint64_t now, const struct idx_expiry_pos *after,
                                size_t max, const char *want)
{
	struct expired_seen s = {.n = 0};
	int ret = idx_expired(ix, now, after, max, expired_visit, &s);
	char got[256] = "";
	for (size_t i = 0; i < s.n && i < 16; i++) {
		strcat(got, i ? " " : "");
		strcat(got, s.keys[i]);
	}
	CHECK(ret == (int)s.n, "expired returned %d for %zu visits", ret, s.n);
	CHECK(strcmp(got, want) == 0, "expired(now %" PRIu64 ", max %zu): got \"%s\", want \"%s\"",
	      now, max, got, want);
}

static void check_expired(struct idx *ix, uint64_t now, size_t max, const char *want)
{
	check_expired_after(ix, now, NULL, max, want);
}

/* Puts key (db 0) as an inline string with `expiry`, replacing `prev`. */
static void put_key(struct idx_batch *b, uint32_t db, const char *key, const char *value,
                    uint64_t lsn, uint64_t expiry, uint64_t prev)
{
	struct idx_entry e = inline_entry(value, (uint32_t)strlen(value), lsn, expiry);
	struct ident id = kid(db, S(key));
	idx_batch_put(b, ID(id), &e, prev);
}

static void del_key(struct idx_batch *b, uint32_t db, const char *key, uint64_t prev)
{
	struct ident id = kid(db, S(key));
	idx_batch_delete(b, ID(id), prev);
}

/* Regression: a batch is sorted and collapsed to one change per row before
 * it reaches RocksDB (with memtable insert hints).  Several changes to one
 * row in one batch — a key's expiry rows, an element row, a count row, the
 * map — must end as the last one says, also in a memtable that already
 * holds the same rows (the second round). */
static void test_batch_collapse(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "collapse/shard-000/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	for (int round = 0; round < 2; round++) {
		uint64_t base = (uint64_t)round * 1000;
		/* put (expiry 1000), put (expiry 2000), delete, put (expiry 3000) */
		struct idx_entry a1 = inline_entry("v1", 2, base + 1, 1000);
		struct idx_entry a2 = pointer_entry(1, 4096, 64, 30, base + 2, 2000);
		struct idx_entry a4 = inline_entry("v4", 2, base + 4, 3000);
		struct ident a = kid(0, S("a"));
		idx_batch_put(b, ID(a), &a1, 0);
		idx_batch_put(b, ID(a), &a2, 1000);
		idx_batch_delete(b, ID(a), 2000);
		idx_batch_put(b, ID(a), &a4, 0);
		/* put then delete: gone, with its expiry row */
		put_key(b, 0, "c", "c", base + 5, 1500, 0);
		del_key(b, 0, "c", 1500);
		/* many keys in reverse order, one overwritten without expiry */
		for (int i = 99; i >= 0; i--) {
			char k[16];
			snprintf(k, sizeof(k), "m%02d", i);
			put_key(b, 0, k, "x", base + 10 + (uint64_t)i, 0, 0);
		}
		struct idx_entry m7 = inline_entry("y", 1, base + 200, 0);
		struct ident m07 = kid(0, S("m07"));
		idx_batch_put(b, ID(m07), &m7, 0);
		/* an element put, deleted, put again; another put then deleted */
		struct ident f = eid(0, S("h"), 9, S("f")), g = eid(0, S("h"), 9, S("g"));
		struct idx_entry fv1 = inline_entry("1", 1, 0, 0),
		                 fv2 = inline_entry("22", 2, 0, 0);
		idx_batch_put(b, ID(f), &fv1, 0);
		idx_batch_delete(b, ID(f), 0);
		idx_batch_put(b, ID(f), &fv2, 0);
		idx_batch_put(b, ID(g), &fv1, 0);
		idx_batch_delete(b, ID(g), 0);
		/* a count row and the map set twice: the last one holds */
		idx_batch_set_count(b, 0, &(struct idx_count){5, 5, 5});
		idx_batch_set_count(b, 0, &(struct idx_count){101, 1, 3});
		idx_batch_set_dbmap(b, (const uint32_t[]){4}, 1, 5);
		idx_batch_set_dbmap(b, (const uint32_t[]){0}, 1, 1);
		CHECK(idx_write(ix, b, base + 200) == 0, "round %d: write", round);
		check_entry(ix, a, &a4, "the last of four changes to one key");
		check_absent(ix, kid(0, S("c")), "a key put then deleted in one batch");
		check_entry(ix, m07, &m7, "a key written twice in one batch");
		check_elem(ix, f, "22", 2, "an element put, deleted and put again");
		check_absent(ix, g, "an element put then deleted");
		check_expired(ix, 5000, 10, "a"); /* exactly one expiry row: a's 3000 */
		check_counts(ix, (const uint32_t[]){0}, (const struct idx_count[]){{101, 1, 3}}, 1,
		             "a count row set twice");
		check_dbmap(ix, (const uint32_t[]){0}, 1, 1, "a map set twice");
		/* Everything goes again, so the next round writes the same rows
		 * over their deletions, in the same memtable. */
		del_key(b, 0, "a", 3000);
		for (int i = 0; i < 100; i++) {
			char k[16];
			snprintf(k, sizeof(k), "m%02d", i);
			del_key(b, 0, k, 0);
		}
		idx_batch_delete(b, ID(f), 0);
		idx_batch_set_count(b, 0, &(struct idx_count){0, 0, 0});
		CHECK(idx_write(ix, b, base + 300) == 0, "round %d: delete everything", round);
		check_absent(ix, a, "after the deletes");
		check_absent(ix, f, "an element after the deletes");
		check_expired(ix, UINT64_MAX, 10, "");
		CHECK(read_counts(ix).n == 0, "a count row set to zero goes");
		CHECK(count_keys(ix, 0) == 0, "no key row left");
	}
	idx_batch_free(b);
	idx_close(ix);
}

static void test_expiry(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "expiry/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	static const uint64_t exp[] = {1000, 5000, 3000, 0, 2000};
	char key[8];
	for (unsigned i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "e%u", i + 1);
		put_key(b, 0, key, "v", i + 1, exp[i], 0);
	}
	CHECK(idx_write(ix, b, 5) == 0, "write");
	check_expired(ix, 3000, 10, "e1 e5 e3");
	check_expired(ix, 3000, 2, "e1 e5");
	/* Resuming after a row: the rows after it, that row excluded, whether it
	 * still exists or not. */
	struct idx_expiry_pos at = {2000, 0, "e5", 2};
	check_expired_after(ix, 3000, &at, 10, "e3");
	at = (struct idx_expiry_pos){1000, 0, "e1", 2};
	check_expired_after(ix, 3000, &at, 1, "e5");
	at = (struct idx_expiry_pos){1500, 0, "zz", 2}; /* no such row: the next one */
	check_expired_after(ix, 3000, &at, 10, "e5 e3");
	at = (struct idx_expiry_pos){3000, 0, "e3", 2};
	check_expired_after(ix, 3000, &at, 10, "");
	check_expired_after(ix, UINT64_MAX, &at, 10, "e2");
	check_expired(ix, 999, 10, "");
	check_expired(ix, UINT64_MAX, 10, "e1 e5 e3 e2");
	at = (struct idx_expiry_pos){3000, 0, "e3", FMT_KEY_MAX + 1};
	struct expired_seen s = {.n = 0};
	CHECK(idx_expired(ix, 3000, &at, 10, expired_visit, &s) == -EINVAL,
	      "a resumption key past FMT_KEY_MAX is refused");

	s = (struct expired_seen){.stop_after = 1};
	CHECK(idx_expired(ix, 3000, NULL, 10, expired_visit, &s) == 1 && s.expiry[0] == 1000,
	      "the visitor stops the walk");

	/* New expiry for e1: its old row goes. */
	put_key(b, 0, "e1", "v", 6, 9000, 1000);
	CHECK(idx_write(ix, b, 6) == 0, "write");
	check_expired(ix, 3000, 10, "e5 e3");
	put_key(b, 0, "e5", "v", 7, 0, 2000);    /* persist e5 */
	put_key(b, 0, "e2", "w", 8, 5000, 5000); /* the same expiry: still one row */
	del_key(b, 0, "e3", 3000);
	put_key(b, 0, "e4", "v", 9, 4000, 0); /* a key gaining an expiry */
	CHECK(idx_write(ix, b, 9) == 0, "write");
	check_expired(ix, 3000, 10, "");
	check_expired(ix, 10000, 10, "e4 e2 e1");

	/* Same expiry: database order, then key order; a binary key. */
	static const uint8_t bin[] = {'e', 0, '0'};
	struct idx_entry e = inline_entry("v", 1, 10, 4000);
	struct ident ibin = kid(0, bin, sizeof(bin));
	idx_batch_put(b, ID(ibin), &e, 0);
	put_key(b, 2, "a", "v", 10, 4000, 0);
	put_key(b, 1, "z", "v", 10, 4000, 0);
	put_key(b, 256, "e4", "v", 10, 4000, 0);
	/* a collection's expiry row, and its removal when the collection goes */
	struct idx_entry hash = coll_entry(FMT_TYPE_HASH, 5, 1, 0, 10, 4500);
	struct ident ih = kid(1, S("h"));
	idx_batch_put(b, ID(ih), &hash, 0);
	CHECK(idx_write(ix, b, 10) == 0, "write");
	s = (struct expired_seen){.n = 0};
	CHECK(idx_expired(ix, 4000, NULL, 10, expired_visit, &s) == 5 && s.expiry[0] == 4000 &&
	          s.keys[0][0] == 'e' && s.keys[0][1] == '\0' && strcmp(s.keys[1], "e4") == 0 &&
	          strcmp(s.keys[2], "1:z") == 0 && strcmp(s.keys[3], "2:a") == 0 &&
	          strcmp(s.keys[4], "256:e4") == 0,
	      "equal expiries in database order, then key order");
	at = (struct idx_expiry_pos){4000, 1, "z", 1};
	check_expired_after(ix, 4000, &at, 10, "2:a 256:e4");
	check_expired(ix, 4600, 10, "e e4 1:z 2:a 256:e4 1:h");
	idx_batch_delete(b, ID(ih), 4500);
	CHECK(idx_write(ix, b, 11) == 0, "write");
	check_expired(ix, 4600, 10, "e e4 1:z 2:a 256:e4");

	idx_close(ix);
	ix = open_or_exit(sh, path);
	/* "e" is "e\0000" printed up to its zero */
	check_expired(ix, 10000, 10, "e e4 1:z 2:a 256:e4 e2 e1");
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- scans ------------------------------------------------------------- */

#define SCAN_KEYS 1000

struct scan_seen {
	uint8_t (*keys)[8];
	size_t *lens;
	size_t n;
	size_t cap;
	size_t stop_at; /* stop after this many visits in one call; 0 = never */
	size_t in_call;
};

static int scan_visit(void *arg, const void *key, size_t klen, const struct idx_entry *e)
{
	struct scan_seen *s = arg;
	if (s->n < s->cap && klen <= 8) {
		memcpy(s->keys[s->n], key, klen);
		s->lens[s->n] = klen;
	}
	CHECK(e->is_inline && e->value_len == klen && memcmp(e->value, key, klen) == 0,
	      "scan passes the key's entry");
	s->n++;
	s->in_call++;
	return s->stop_at && s->in_call >= s->stop_at;
}

static int key_compare(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	return c ? c : (alen > blen) - (alen < blen);
}

/* Database 1 holds SCAN_KEYS keys; databases 0, 2 and UINT32_MAX a few
 * each, which its scans must not visit (and the other way round). */
static void test_scan(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "scan/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	/* Keys: "" and 999 distinct binary keys of 2..4 bytes (i in the first two,
	 * then random bytes 0..2), a third of them with an expiry. */
	uint64_t seed = 42;
	for (unsigned i = 0; i < SCAN_KEYS; i++) {
		uint8_t key[8] = {(uint8_t)(i >> 8), (uint8_t)i};
		size_t klen = i == 0 ? 0 : 2 + i % 3;
		for (size_t j = 2; j < klen; j++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			key[j] = (uint8_t)((seed >> 33) % 3);
		}
		struct idx_entry e = inline_entry(key, (uint32_t)klen, i + 1, i % 3 ? 0 : 5000 + i);
		struct ident id = kid(1, key, klen);
		idx_batch_put(b, ID(id), &e, 0);
	}
	static const uint32_t others[] = {0, 2, UINT32_MAX};
	for (size_t d = 0; d < 3; d++)
		for (int i = 0; i < 5; i++) {
			char key[4] = {'o', (char)('0' + i), 0};
			put_key(b, others[d], key, key, 1, 0, 0);
		}
	CHECK(idx_write(ix, b, SCAN_KEYS) == 0, "write");

	struct scan_seen s = {.cap = SCAN_KEYS};
	s.keys = calloc(SCAN_KEYS, 8);
	s.lens = calloc(SCAN_KEYS, sizeof(size_t));
	uint32_t cursor = 0;
	size_t calls = 0;
	int ret;
	for (;;) {
		ret = idx_scan(ix, 1, cursor, 7, scan_visit, &s, &cursor);
		calls++;
		if (ret != 1)
			break;
	}
	CHECK(ret == 0, "the scan ends with 0 (%d)", ret);
	CHECK(s.n == SCAN_KEYS, "visited %zu keys, %d exist", s.n, SCAN_KEYS);
	CHECK(calls >= SCAN_KEYS / 7, "%zu calls", calls);
	CHECK(s.n > 0 && s.lens[0] == 0, "the empty key (hash 0) comes first");
	bool ordered = true;
	for (size_t i = 1; i < s.n && i < s.cap; i++) {
		uint32_t a = idx_key_hash(s.keys[i - 1], s.lens[i - 1]);
		uint32_t b2 = idx_key_hash(s.keys[i], s.lens[i]);
		if (a > b2 || (a == b2 && key_compare(s.keys[i - 1], s.lens[i - 1], s.keys[i],
		                                      s.lens[i]) >= 0))
			ordered = false;
	}
	CHECK(ordered, "each key visited once, in hash order");
	for (size_t d = 0; d < 3; d++)
		CHECK(count_keys(ix, others[d]) == 5, "database %" PRIu32 ": %" PRIu64 " keys",
		      others[d], count_keys(ix, others[d]));
	CHECK(count_keys(ix, 3) == 0, "an empty database has no key");
	CHECK(idx_key_hash("123456789", 9) == 0xE3069283u, "the key hash is CRC32C");

	/* A visitor that stops: the next call resumes after the key it stopped on. */
	s.n = 0;
	s.in_call = 0;
	s.stop_at = 3;
	ret = idx_scan(ix, 1, 0, 100, scan_visit, &s, &cursor);
	CHECK(ret == 1 && s.n == 3, "stopped after 3 (%d, %zu)", ret, s.n);
	CHECK(cursor == idx_key_hash(s.keys[3 - 1], s.lens[3 - 1]),
	      "the cursor is the stopped key's hash: its group is visited again");
	CHECK(idx_scan(ix, 1, 0, 0, scan_visit, &s, &cursor) == -EINVAL, "max 0 refused");

	/* Deleting every key of database 1 (and its expiry rows) leaves the
	 * others alone; writes go on after. */
	s.n = 0;
	s.in_call = 0;
	s.stop_at = 0;
	cursor = 0;
	while (idx_scan(ix, 1, cursor, 100, scan_visit, &s, &cursor) == 1)
		;
	for (size_t i = 0; i < s.n && i < s.cap; i++) {
		uint64_t expiry = 0;
		struct ident id = kid(1, s.keys[i], s.lens[i]);
		struct idx_entry e;
		if (idx_get(ix, ID(id), IDX_BLOCKING, &e, NULL) == 0)
			expiry = e.expiry_ms;
		idx_batch_delete(b, ID(id), expiry);
	}
	CHECK(idx_write(ix, b, SCAN_KEYS + 1) == 0, "delete database 1's keys");
	CHECK(count_keys(ix, 1) == 0, "no key of database 1 after the deletes");
	struct expired_seen xs = {.n = 0};
	CHECK(idx_expired(ix, UINT64_MAX, NULL, 100, expired_visit, &xs) == 0, "no expiry rows");
	for (size_t d = 0; d < 3; d++)
		CHECK(count_keys(ix, others[d]) == 5, "database %" PRIu32 " after the deletes",
		      others[d]);
	idx_close(ix);
	ix = open_or_exit(sh, path);
	CHECK(count_keys(ix, 1) == 0, "no keys after reopen");
	put_key(b, 1, "new", "x", SCAN_KEYS + 2, 0, 0);
	CHECK(idx_write(ix, b, SCAN_KEYS + 2) == 0 && count_keys(ix, 1) == 1,
	      "writes work after the deletes");
	free(s.keys);
	free(s.lens);
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- element scans ----------------------------------------------------- */

#define ELEMS 500

struct elem_seen {
	size_t n;
	uint32_t last_hash;
	bool ordered, values_ok, hashes_ok;
	unsigned char seen[ELEMS];
	int foreign; /* elements not of the collection */
	size_t stop_at, in_call;
};

static int elem_visit(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
                      size_t vlen, uint32_t hash)
{
	struct elem_seen *s = arg;
	char buf[32];
	int i;
	snprintf(buf, sizeof(buf), "%.*s", (int)(elen < 31 ? elen : 31), (const char *)elem);
	if (sscanf(buf, "f%d", &i) == 1 && i >= 0 && i < ELEMS) {
		s->seen[i]++;
		char want[32];
		snprintf(want, sizeof(want), "value of %d", i);
		s->values_ok &= vlen == strlen(want) && memcmp(value, want, vlen) == 0;
	} else {
		s->foreign++;
	}
	s->hashes_ok &= hash == crc32c(0, elem, elen);
	if (s->n > 0 && hash < s->last_hash)
		s->ordered = false;
	s->last_hash = hash;
	s->n++;
	s->in_call++;
	return s->stop_at && s->in_call >= s->stop_at;
}

/* The element rows of one collection, in hash order, resumable, and none of
 * its neighbours': the same key's other versions, a key that extends it, the
 * same key in another database. */
static void test_elem_scan(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "elemscan/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	char elem[32], value[32];
	for (int i = 0; i < ELEMS; i++) {
		snprintf(elem, sizeof(elem), "f%d", i);
		snprintf(value, sizeof(value), "value of %d", i);
		struct ident id = eid(2, S("h"), 5, S(elem));
		struct idx_entry e = inline_entry(value, (uint32_t)strlen(value), 0, 0);
		idx_batch_put(b, ID(id), &e, 0);
	}
	struct {
		uint32_t db;
		const char *key;
		uint64_t version;
	} neighbours[] = {{2, "h", 4}, {2, "h", 6}, {2, "hx", 5}, {3, "h", 5}, {2, "", 5}};
	for (size_t n = 0; n < sizeof(neighbours) / sizeof(neighbours[0]); n++)
		for (int i = 0; i < 10; i++) {
			snprintf(elem, sizeof(elem), "n%d", i);
			struct ident id = eid(neighbours[n].db, S(neighbours[n].key),
			                      neighbours[n].version, S(elem));
			struct idx_entry e = inline_entry("x", 1, 0, 0);
			idx_batch_put(b, ID(id), &e, 0);
		}
	CHECK(idx_write(ix, b, 1) == 0, "write");

	struct ident prefix = eid(2, S("h"), 5, NULL, 0);
	size_t plen = fmt_elem_prefix_len(1);
	struct elem_seen s = {.ordered = true, .values_ok = true, .hashes_ok = true};
	uint32_t cursor = 0;
	int ret, calls = 0;
	while ((ret = idx_elem_scan(ix, prefix.b, plen, cursor, 7, elem_visit, &s, &cursor)) == 1)
		calls++;
	CHECK(ret == 0, "the element scan ends with 0 (%d)", ret);
	int missing = 0, twice = 0;
	for (int i = 0; i < ELEMS; i++) {
		missing += s.seen[i] == 0;
		twice += s.seen[i] > 1;
	}
	CHECK(missing == 0 && twice == 0 && s.n == ELEMS,
	      "%d elements missed, %d visited twice, %zu visits", missing, twice, s.n);
	CHECK(s.foreign == 0, "%d elements of other collections visited", s.foreign);
	CHECK(s.ordered && s.hashes_ok && s.values_ok, "hash order, hashes and values");
	CHECK(calls >= ELEMS / 7 - 1, "%d calls of 7", calls);

	/* A visitor that stops: its element's hash is where to resume. */
	s = (struct elem_seen){.ordered = true, .values_ok = true, .hashes_ok = true, .stop_at = 2};
	ret = idx_elem_scan(ix, prefix.b, plen, 0, 100, elem_visit, &s, &cursor);
	CHECK(ret == 1 && s.n == 2 && cursor == s.last_hash,
	      "a stopped element scan: %d, %zu visits, cursor %" PRIu32, ret, s.n, cursor);
	/* From a cursor: nothing below it. */
	s = (struct elem_seen){.ordered = true, .values_ok = true, .hashes_ok = true};
	uint32_t from = 0x80000000u;
	while (idx_elem_scan(ix, prefix.b, plen, from, 1000, elem_visit, &s, &from) == 1)
		;
	size_t upper = 0;
	for (int i = 0; i < ELEMS; i++) {
		snprintf(elem, sizeof(elem), "f%d", i);
		upper += crc32c(0, elem, strlen(elem)) >= 0x80000000u;
	}
	CHECK(s.n == upper, "from hash 2^31: %zu elements, %zu have such hashes", s.n, upper);
	CHECK(idx_elem_scan(ix, prefix.b, plen, 0, 0, elem_visit, &s, &cursor) == -EINVAL,
	      "max 0 refused");
	CHECK(idx_elem_scan(ix, prefix.b, plen - 2, 0, 5, elem_visit, &s, &cursor) == -EINVAL,
	      "a prefix shorter than a collection's refused");
	struct ident last = eid(2, S("h"), UINT64_MAX, NULL, 0);
	CHECK(idx_elem_scan(ix, last.b, plen, 0, 5, elem_visit, &s, &cursor) == -EINVAL,
	      "version 2^64-1 refused");
	struct idx_stats st;
	idx_get_stats(ix, &st);
	CHECK(st.elems_scanned >= ELEMS, "elems_scanned %" PRIu64, st.elems_scanned);
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- rows on disk ------------------------------------------------------ */

/* Puts one row into the RocksDB at `path` with the plain C API. */
static void raw_put(const char *path, const void *key, size_t klen, const void *value, size_t vlen)
{
	char *err = NULL, parent[512];
	snprintf(parent, sizeof(parent), "%s", path);
	*strrchr(parent, '/') = '\0';
	mkdir(parent, 0755);
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_t *db = rocksdb_open(o, path, &err);
	if (err == NULL) {
		rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
		rocksdb_put(db, wo, key, klen, value, vlen, &err);
		rocksdb_writeoptions_destroy(wo);
		rocksdb_close(db);
	}
	rocksdb_options_destroy(o);
	if (err) {
		fprintf(stderr, "raw put into %s: %s\n", path, err);
		exit(1);
	}
}

/* A row as the test expects it on disk. */
struct raw_row {
	uint8_t key[64];
	size_t klen;
	uint8_t value[64];
	size_t vlen;
};

static int raw_row_cmp(const void *a, const void *b)
{
	const struct raw_row *x = a, *y = b;
	int c = memcmp(x->key, y->key, x->klen < y->klen ? x->klen : y->klen);
	return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Appends bytes to a row's key or value. */
static void raw_add(uint8_t *dst, size_t *len, const void *src, size_t n)
{
	memcpy(dst + *len, src, n);
	*len += n;
}

static void raw_byte(uint8_t *dst, size_t *len, uint8_t b)
{
	dst[(*len)++] = b;
}

static void raw_be32(uint8_t *dst, size_t *len, uint32_t v)
{
	fmt_put_be32(dst + *len, v);
	*len += 4;
}

static void raw_be64(uint8_t *dst, size_t *len, uint64_t v)
{
	fmt_put_be64(dst + *len, v);
	*len += 8;
}

static void raw_le(uint8_t *dst, size_t *len, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		dst[(*len)++] = (uint8_t)(v >> (8 * i));
}

/* Unsigned LEB128, written here independently of index.c. */
static void raw_leb(uint8_t *dst, size_t *len, uint64_t v)
{
	do {
		uint8_t b = v & 0x7F;
		v >>= 7;
		dst[(*len)++] = (uint8_t)(b | (v ? 0x80 : 0));
	} while (v);
}

/* The key row of (db, key), as index.h's table says. */
static void raw_key_row(struct raw_row *r, uint32_t db, const char *key)
{
	r->klen = 0;
	raw_byte(r->key, &r->klen, 'k');
	raw_be32(r->key, &r->klen, db);
	raw_be32(r->key, &r->klen, crc32c(0, key, strlen(key)));
	raw_add(r->key, &r->klen, key, strlen(key));
}

struct segment_seen {
	size_t n;
	uint64_t seg[8];
	uint32_t db[8];
	uint64_t live[8];
};

static void segment_visit(void *arg, uint64_t segment, uint32_t db, uint64_t live)
{
	struct segment_seen *s = arg;
	if (s->n < 8) {
		s->seg[s->n] = segment;
		s->db[s->n] = db;
		s->live[s->n] = live;
	}
	s->n++;
}

/* Every kind of row, read back with the plain RocksDB API: the bytes are
 * index.h's table, the kinds sort 'e' < 'k' < 'm' < 'n' < 's' < 'x', and
 * there is no other row.  Then entries the table forbids read as -EIO. */
static void test_rows(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "rows/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	const uint64_t e1 = 1700000000123ull, e2 = 1700000000999ull;
	struct idx_entry key = inline_entry("val", 3, 70, e1);
	struct idx_entry ptr = pointer_entry(5, 8192, 96, 50, 71, 0);
	struct idx_entry hash = coll_entry(FMT_TYPE_HASH, 300, 2, FMT_ENC_BIG, 72, e2);
	struct idx_entry set = coll_entry(FMT_TYPE_SET, 301, 1, 0, 73, 0);
	struct ident ik = kid(1, S("key")), ip = kid(1, S("ptr")), ih = kid(2, S("h"));
	struct ident is = kid(2, S("s")), ie = eid(2, S("h"), 300, S("f"));
	idx_batch_put(b, ID(ik), &key, 0);
	idx_batch_put(b, ID(ip), &ptr, 0);
	idx_batch_put(b, ID(ih), &hash, 0);
	idx_batch_put(b, ID(is), &set, 0);
	idx_batch_put(
	    b, ID(ie),
	    &(struct idx_entry){.is_inline = true, .value = (const uint8_t *)"v", .value_len = 1},
	    0);
	idx_batch_set_count(b, 1, &(struct idx_count){2, 1, e1 / 1000});
	idx_batch_set_count(b, 2, &(struct idx_count){2, 1, e2 / 1000});
	idx_batch_set_live(b, 5, 1, 1234);
	idx_batch_set_live(b, 5, 2, 99);
	idx_batch_set_live(b, 4, 1, 7);
	idx_batch_set_live(b, 6, 1, 1);
	idx_batch_forget_live(b, 6, 1);
	idx_batch_set_dbmap(b, (const uint32_t[]){1, 2}, 2, 3);
	CHECK(idx_write(ix, b, 77) == 0, "write");

	struct segment_seen seen = {0};
	CHECK(idx_segments_live(ix, segment_visit, &seen) == 0, "idx_segments_live");
	CHECK(seen.n == 3 && seen.seg[0] == 4 && seen.db[0] == 1 && seen.live[0] == 7 &&
	          seen.seg[1] == 5 && seen.db[1] == 1 && seen.live[1] == 1234 && seen.seg[2] == 5 &&
	          seen.db[2] == 2 && seen.live[2] == 99,
	      "segment rows in (segment, database) order: %zu of them", seen.n);
	idx_close(ix);

	struct raw_row want[16];
	size_t n = 0;
	struct raw_row *r = &want[n++]; /* element row: the ident, the raw value */
	memcpy(r->key, ie.b, ie.len);
	r->klen = ie.len;
	r->vlen = 0;
	raw_byte(r->value, &r->vlen, 'v');
	r = &want[n++];
	raw_key_row(r, 1, "key"); /* inline string with an expiry */
	r->vlen = 0;
	raw_byte(r->value, &r->vlen, 2 | 0x10 | 0x20);
	raw_byte(r->value, &r->vlen, FMT_TYPE_STRING);
	raw_leb(r->value, &r->vlen, e1);
	raw_leb(r->value, &r->vlen, 70);
	raw_leb(r->value, &r->vlen, 3);
	raw_add(r->value, &r->vlen, "val", 3);
	r = &want[n++];
	raw_key_row(r, 1, "ptr"); /* a string in the log */
	r->vlen = 0;
	raw_byte(r->value, &r->vlen, 2);
	raw_byte(r->value, &r->vlen, FMT_TYPE_STRING);
	raw_leb(r->value, &r->vlen, 71);
	raw_leb(r->value, &r->vlen, 50);
	raw_leb(r->value, &r->vlen, 5);
	raw_leb(r->value, &r->vlen, 8192);
	raw_leb(r->value, &r->vlen, 96);
	r = &want[n++];
	raw_key_row(r, 2, "h"); /* a hash with an expiry */
	r->vlen = 0;
	raw_byte(r->value, &r->vlen, 2 | 0x20);
	raw_byte(r->value, &r->vlen, FMT_TYPE_HASH);
	raw_leb(r->value, &r->vlen, e2);
	raw_leb(r->value, &r->vlen, 72);
	raw_leb(r->value, &r->vlen, 300);
	raw_leb(r->value, &r->vlen, 2);
	raw_byte(r->value, &r->vlen, FMT_ENC_BIG);
	r = &want[n++];
	raw_key_row(r, 2, "s"); /* a set */
	r->vlen = 0;
	raw_byte(r->value, &r->vlen, 2);
	raw_byte(r->value, &r->vlen, FMT_TYPE_SET);
	raw_leb(r->value, &r->vlen, 73);
	raw_leb(r->value, &r->vlen, 301);
	raw_leb(r->value, &r->vlen, 1);
	raw_byte(r->value, &r->vlen, 0);
	r = &want[n++];
	r->klen = r->vlen = 0;
	raw_add(r->key, &r->klen, "m:applied_lsn", 13);
	raw_le(r->value, &r->vlen, 77, 8);
	r = &want[n++];
	r->klen = r->vlen = 0;
	raw_add(r->key, &r->klen, "m:dbmap", 7);
	fmt_encode_dbmap(r->value, (const uint32_t[]){1, 2}, 2, 3);
	r->vlen = fmt_dbmap_size(2);
	r = &want[n++];
	r->klen = r->vlen = 0;
	raw_add(r->key, &r->klen, "m:version", 9);
	raw_le(r->value, &r->vlen, IDX_FORMAT_VERSION, 4);
	for (uint32_t db = 1; db <= 2; db++) { /* count rows */
		r = &want[n++];
		r->klen = r->vlen = 0;
		raw_byte(r->key, &r->klen, 'n');
		raw_be32(r->key, &r->klen, db);
		raw_le(r->value, &r->vlen, 2, 8);
		raw_le(r->value, &r->vlen, 1, 8);
		raw_le(r->value, &r->vlen, (db == 1 ? e1 : e2) / 1000, 8);
	}
	static const struct {
		uint64_t seg;
		uint32_t db;
		uint64_t live;
	} segs[] = {{4, 1, 7}, {5, 1, 1234}, {5, 2, 99}};
	for (size_t i = 0; i < 3; i++) { /* segment rows */
		r = &want[n++];
		r->klen = r->vlen = 0;
		raw_byte(r->key, &r->klen, 's');
		raw_be64(r->key, &r->klen, segs[i].seg);
		raw_be32(r->key, &r->klen, segs[i].db);
		raw_le(r->value, &r->vlen, segs[i].live, 8);
	}
	for (uint32_t db = 1; db <= 2; db++) { /* expiry rows */
		r = &want[n++];
		r->klen = r->vlen = 0;
		raw_byte(r->key, &r->klen, 'x');
		raw_be64(r->key, &r->klen, db == 1 ? e1 : e2);
		raw_be32(r->key, &r->klen, db);
		raw_add(r->key, &r->klen, db == 1 ? "key" : "h", db == 1 ? 3 : 1);
	}
	qsort(want, n, sizeof(want[0]), raw_row_cmp);
	CHECK(want[0].key[0] == 'e' && want[n - 1].key[0] == 'x', "the kinds' order");

	char *err = NULL;
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_t *db = rocksdb_open_for_read_only(o, path, 0, &err);
	CHECK(err == NULL, "read-only open: %s", err ? err : "");
	if (err == NULL) {
		rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
		rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
		size_t i = 0;
		for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it);
		     rocksdb_iter_next(it), i++) {
			size_t klen, vlen;
			const char *k = rocksdb_iter_key(it, &klen);
			const char *v = rocksdb_iter_value(it, &vlen);
			if (i >= n) {
				CHECK(i < n, "an unexpected row of %zu bytes, kind '%c'", klen,
				      k[0]);
				continue;
			}
			CHECK(klen == want[i].klen && memcmp(k, want[i].key, klen) == 0,
			      "row %zu (kind '%c'): key differs", i, want[i].key[0]);
			CHECK(vlen == want[i].vlen && memcmp(v, want[i].value, vlen) == 0,
			      "row %zu (kind '%c', %zu bytes): value differs (%zu bytes)", i,
			      want[i].key[0], want[i].klen, vlen);
		}
		CHECK(i == n, "%zu rows, want %zu", i, n);
		rocksdb_iter_destroy(it);
		rocksdb_readoptions_destroy(ro);
		rocksdb_close(db);
	}
	rocksdb_free(err);
	rocksdb_options_destroy(o);

	/* Entries the table forbids: reserved bits, an unknown type, a
	 * collection flagged INLINE, a truncated entry. */
	static const struct {
		const char *key;
		uint8_t entry[8];
		size_t len;
	} bad[] = {
	    {"reserved", {2 | 0x40, 0, 1, 1, 'v'}, 5},
	    {"type", {2, FMT_TYPE_MAX + 1, 1, 0}, 4},
	    {"inline hash", {2 | 0x10, FMT_TYPE_HASH, 1, 1, 1, 0}, 6},
	    {"version 1", {1, 0, 1, 1, 'v'}, 5},
	    {"truncated", {2, 0, 1, 9, 'v'}, 5},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct raw_row row;
		raw_key_row(&row, 1, bad[i].key);
		raw_put(path, row.key, row.klen, bad[i].entry, bad[i].len);
	}
	ix = open_or_exit(sh, path);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct idx_entry e;
		struct ident id = kid(1, S(bad[i].key));
		int ret = idx_get(ix, ID(id), IDX_BLOCKING, &e, NULL);
		CHECK(ret == -EIO, "a corrupt entry (%s) reads as %d", bad[i].key, ret);
	}
	check_entry(ix, ik, &key, "a good entry beside them");
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- format version ---------------------------------------------------- */

static void test_version(struct idx_shared *sh)
{
	char path[512], err[512];
	struct idx *ix;
	dir_path(path, sizeof(path), "version/index");
	idx_close(open_or_exit(sh, path));
	uint32_t v99 = htole32(99);
	raw_put(path, "m:version", 9, &v99, sizeof(v99));
	int ret = idx_open(&ix, sh, path, err, sizeof(err));
	CHECK(ret == -EPROTO && ix == NULL, "unknown version refused (%d)", ret);
	CHECK(strstr(err, "format version 99") && strstr(err, "reads version 2") &&
	          strstr(err, "run a ringkv that matches"),
	      "message names cause and fix: %s", err);

	/* Format 1 (one database of strings): refused, naming the way out. */
	uint32_t v1 = htole32(1);
	raw_put(path, "m:version", 9, &v1, sizeof(v1));
	ret = idx_open(&ix, sh, path, err, sizeof(err));
	CHECK(ret == -EPROTO && ix == NULL, "format 1 refused (%d)", ret);
	CHECK(strstr(err, "format version 1") && strstr(err, "ringkv-import"),
	      "format 1's message names the cause and the fix: %s", err);

	dir_path(path, sizeof(path), "foreign/index");
	raw_put(path, "foo", 3, "bar", 3);
	ret = idx_open(&ix, sh, path, err, sizeof(err));
	CHECK(ret == -EPROTO && strstr(err, "not a ringkv index"),
	      "a foreign RocksDB refused (%d): %s", ret, err);

	dir_path(path, sizeof(path), "locked/index");
	struct idx *first = open_or_exit(sh, path);
	ret = idx_open(&ix, sh, path, err, sizeof(err));
	CHECK(ret < 0 && strstr(err, "in use"), "a second open refused (%d): %s", ret, err);
	idx_close(first);
}

/* ---- persisted LSN ----------------------------------------------------- */

/* Flushes the index and waits until idx_persisted_lsn reaches `lsn`. */
static void flush_wait(struct idx *ix, uint64_t lsn, const char *what)
{
	double deadline = test_now() + 30;
	while (idx_persisted_lsn(ix) < lsn && test_now() < deadline) {
		idx_request_flush(ix); /* -EBUSY: asked again */
		usleep(2000);
	}
	CHECK(idx_persisted_lsn(ix) >= lsn, "%s: persisted %" PRIu64 ", want %" PRIu64, what,
	      idx_persisted_lsn(ix), lsn);
}

static void test_persisted(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "persisted/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	CHECK(idx_request_flush(ix) == -EALREADY, "nothing to flush in a new index");
	put_key(b, 0, "p", "v", 5, 0, 0);
	CHECK(idx_write(ix, b, 5) == 0, "write");
	CHECK(idx_applied_lsn(ix) == 5, "applied in memory");
	CHECK(idx_persisted_lsn(ix) == 0, "not yet persisted: %" PRIu64, idx_persisted_lsn(ix));

	double deadline = test_now() + 20;
	int ret;
	while ((ret = idx_request_flush(ix)) == -EBUSY && test_now() < deadline)
		usleep(1000);
	CHECK(ret == 0, "flush requested (%d)", ret);
	while (idx_persisted_lsn(ix) != 5 && test_now() < deadline)
		usleep(1000);
	CHECK(idx_persisted_lsn(ix) == 5, "persisted after the flush: %" PRIu64,
	      idx_persisted_lsn(ix));

	put_key(b, 0, "p", "v", 6, 0, 0);
	CHECK(idx_write(ix, b, 6) == 0, "write");
	CHECK(idx_persisted_lsn(ix) == 5, "lags again: %" PRIu64, idx_persisted_lsn(ix));
	struct idx_stats st;
	idx_get_stats(ix, &st);
	CHECK(st.flush_requests == 1 && st.memtable_bytes > 0, "flush stats");
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- garbage: the compaction filter ------------------------------------ */

/* Puts a collection: its key row and n elements "e0".."e<n-1>" of `version`. */
static void put_coll(struct idx_batch *b, uint32_t db, const char *key, uint8_t type,
                     uint64_t version, int n, uint64_t lsn)
{
	struct idx_entry m = coll_entry(type, version, (uint64_t)n, 0, lsn, 0);
	struct ident k = kid(db, S(key));
	idx_batch_put(b, ID(k), &m, 0);
	for (int i = 0; i < n; i++) {
		char el[16];
		snprintf(el, sizeof(el), "e%d", i);
		struct ident e = eid(db, S(key), version, S(el));
		idx_batch_put(b, ID(e),
		              &(struct idx_entry){
		                  .is_inline = true, .value = (const uint8_t *)"v", .value_len = 1},
		              0);
	}
}

/* How many of elements "e0".."e<n-1>" of (db, key, version) have a row. */
static int elems_left(struct idx *ix, uint32_t db, const char *key, uint64_t version, int n)
{
	int left = 0;
	for (int i = 0; i < n; i++) {
		char el[16];
		snprintf(el, sizeof(el), "e%d", i);
		left += row_exists(ix, eid(db, S(key), version, S(el)));
	}
	return left;
}

static uint64_t garbage_dropped(struct idx *ix)
{
	struct idx_stats st;
	idx_get_stats(ix, &st);
	return st.garbage_dropped;
}

/* The rows that hold after phase 2 below whatever is compacted. */
static void check_live_rows(struct idx *ix, const char *when)
{
	char what[128];
	snprintf(what, sizeof(what), "%s: a live collection's elements", when);
	CHECK(elems_left(ix, 0, "keep", 400, 5) == 5, "%s", what);
	CHECK(elems_left(ix, 0, "over", 201, 1) == 1,
	      "%s: the element of an overwritten collection's new version", when);
	CHECK(row_exists(ix, kid(0, S("keep"))) && row_exists(ix, kid(0, S("str"))) &&
	          row_exists(ix, kid(3, S("new"))),
	      "%s: key rows of live databases", when);
	CHECK(read_counts(ix).n == 1, "%s: the count row of database 0 (no row is judged)", when);
}

/* Builds a table file of element rows (the ident order is the caller's)
 * and ingests it.  Returns idx_ingest's result. */
static int ingest_elems(struct idx *ix, const char *name, const struct ident *el, size_t n,
                        uint64_t lsn)
{
	char file[600], err[512];
	snprintf(file, sizeof(file), "%s/%s", base_dir, name);
	struct idx_sst *s;
	int ret = idx_sst_open(&s, ix, file, err, sizeof(err));
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = idx_sst_put_elem(s, ID(el[i]), "v", 1, err, sizeof(err));
	if (ret == 0)
		ret = idx_sst_finish_elems(s, err, sizeof(err));
	if (s != NULL)
		idx_sst_free(s);
	const char *paths[] = {file};
	if (ret == 0)
		ret = idx_ingest(ix, paths, 1, lsn, err, sizeof(err));
	CHECK(ret == 0, "ingest %s: %d %s", name, ret, err);
	return ret;
}

/* index.h, "Garbage": element rows whose key row is gone, holds a string or
 * another version, and every row of a stored database id the map no longer
 * has, are dropped by compactions — once the index has persisted what made
 * them garbage, and never before (a crash would recover the state in which
 * they are live).  idx_compact_all flushes the memtable first (RocksDB's
 * CompactRange), which persists everything; so the unpersisted case runs as
 * a background compaction of L0 files: the fourth (index.c's
 * L0_COMPACTION_TRIGGER) is ingested, which leaves the memtable unflushed
 * when the file overlaps none of its rows. */
static void test_garbage(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "garbage/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();

	/* 1: live, persisted (L0 file 2; file 1 holds the new index's metadata,
	 * flushed by idx_open). */
	idx_batch_set_dbmap(b, (const uint32_t[]){0, 1, 2}, 3, 3);
	put_coll(b, 0, "del", FMT_TYPE_HASH, 100, 5, 1);
	put_coll(b, 0, "over", FMT_TYPE_HASH, 200, 5, 1);
	put_coll(b, 0, "str", FMT_TYPE_SET, 300, 5, 1);
	put_coll(b, 0, "keep", FMT_TYPE_HASH, 400, 5, 1);
	put_coll(b, 0, "late", FMT_TYPE_SET, 500, 5, 1);
	put_key(b, 1, "k1", "v", 1, 5000, 0);
	put_coll(b, 1, "c1", FMT_TYPE_HASH, 600, 5, 1);
	put_coll(b, 2, "c2", FMT_TYPE_SET, 700, 5, 1);
	idx_batch_set_count(b, 0, &(struct idx_count){5, 0, 0});
	CHECK(idx_write(ix, b, 1) == 0, "write 1");
	flush_wait(ix, 1, "phase 1");

	/* 2: garbage, persisted (L0 file 3): "del" deleted, "over" a new
	 * version, "str" a string, database id 1 retired (FLUSHDB 1: id 3). */
	del_key(b, 0, "del", 0);
	put_coll(b, 0, "over", FMT_TYPE_HASH, 201, 1, 2);
	put_key(b, 0, "str", "now a string", 2, 0, 0);
	idx_batch_set_dbmap(b, (const uint32_t[]){0, 3, 2}, 3, 4);
	put_key(b, 3, "new", "v", 2, 0, 0);
	CHECK(idx_write(ix, b, 2) == 0, "write 2");
	flush_wait(ix, 2, "phase 2");
	CHECK(garbage_dropped(ix) == 0, "rows dropped before any compaction");

	/* 3: garbage, not persisted: "late" deleted, database id 2 retired. */
	del_key(b, 0, "late", 0);
	idx_batch_set_dbmap(b, (const uint32_t[]){0, 3, 4}, 3, 5);
	CHECK(idx_write(ix, b, 4) == 0, "write 4");

	/* L0 file 4: two more elements of "keep" (live), ingested. */
	struct ident more[2] = {eid(0, S("keep"), 400, S("x0")), eid(0, S("keep"), 400, S("x1"))};
	if (memcmp(more[1].b, more[0].b, more[0].len) < 0) {
		struct ident t = more[0];
		more[0] = more[1];
		more[1] = t;
	}
	ingest_elems(ix, "garbage-more.sst", more, 2, 4);
	CHECK(idx_persisted_lsn(ix) == 2, "phase 3 is not persisted: %" PRIu64,
	      idx_persisted_lsn(ix));
	const uint64_t persisted_garbage = 5 + 5 + 5 + 8; /* del, over v200, str, id 1 */
	double deadline = test_now() + 60;
	while ((garbage_dropped(ix) < persisted_garbage || elems_left(ix, 0, "del", 100, 5) > 0) &&
	       test_now() < deadline)
		usleep(10000);
	usleep(200000); /* (a compaction that dropped too much would show by now) */
	CHECK(idx_persisted_lsn(ix) == 2,
	      "phase 3 was persisted meanwhile: the test proves nothing");
	CHECK(garbage_dropped(ix) == persisted_garbage,
	      "the L0 compaction dropped %" PRIu64 " rows, want %" PRIu64, garbage_dropped(ix),
	      persisted_garbage);
	CHECK(elems_left(ix, 0, "del", 100, 5) == 0, "a deleted collection's elements stay");
	CHECK(elems_left(ix, 0, "over", 200, 5) == 0, "an overwritten version's elements stay");
	CHECK(elems_left(ix, 0, "str", 300, 5) == 0,
	      "the elements of a collection overwritten by a string stay");
	CHECK(!row_exists(ix, kid(1, S("k1"))) && !row_exists(ix, kid(1, S("c1"))) &&
	          elems_left(ix, 1, "c1", 600, 5) == 0,
	      "rows of a retired database id stay");
	struct expired_seen xs = {.n = 0};
	CHECK(idx_expired(ix, UINT64_MAX, NULL, 10, expired_visit, &xs) == 0,
	      "the expiry row of a retired database id stays");
	/* Not persisted: kept. */
	CHECK(elems_left(ix, 0, "late", 500, 5) == 5,
	      "the elements of a collection whose deletion is not persisted were dropped");
	CHECK(row_exists(ix, kid(2, S("c2"))) && elems_left(ix, 2, "c2", 700, 5) == 5,
	      "the rows of a database id retired by a map not persisted were dropped");
	CHECK(row_exists(ix, more[0]) && row_exists(ix, more[1]), "ingested live elements dropped");
	check_live_rows(ix, "after the L0 compaction");

	/* Persisted now: idx_compact_all drops the rest. */
	flush_wait(ix, 4, "phase 3");
	idx_compact_all(ix);
	CHECK(garbage_dropped(ix) == persisted_garbage + 5 + 6,
	      "the full compaction dropped %" PRIu64 " rows in all, want %" PRIu64,
	      garbage_dropped(ix), persisted_garbage + 11);
	CHECK(elems_left(ix, 0, "late", 500, 5) == 0, "the deleted collection's elements stay");
	CHECK(!row_exists(ix, kid(2, S("c2"))) && elems_left(ix, 2, "c2", 700, 5) == 0,
	      "rows of the retired database id 2 stay");
	check_live_rows(ix, "after the full compaction");
	idx_close(ix);
	ix = open_or_exit(sh, path);
	check_live_rows(ix, "after reopen");
	CHECK(elems_left(ix, 0, "del", 100, 5) + elems_left(ix, 0, "late", 500, 5) == 0,
	      "dropped rows came back after reopen");
	idx_close(ix);

	/* Without a persisted map no database is retired; an element whose key
	 * row never existed is garbage. */
	dir_path(path, sizeof(path), "garbage-nomap/index");
	ix = open_or_exit(sh, path);
	put_key(b, 5, "s", "v", 1, 0, 0);
	put_coll(b, 5, "c", FMT_TYPE_SET, 1, 2, 1);
	put_coll(b, 5, "gone", FMT_TYPE_SET, 1, 3, 1);
	del_key(b, 5, "gone", 0);
	CHECK(idx_write(ix, b, 1) == 0, "write");
	flush_wait(ix, 1, "no map");
	idx_compact_all(ix);
	CHECK(garbage_dropped(ix) == 3, "%" PRIu64 " rows dropped without a map, want 3",
	      garbage_dropped(ix));
	CHECK(row_exists(ix, kid(5, S("s"))) && elems_left(ix, 5, "c", 1, 2) == 2 &&
	          elems_left(ix, 5, "gone", 1, 3) == 0,
	      "without a map: live rows kept, orphan elements dropped");
	idx_batch_free(b);
	idx_close(ix);
}

/* idx_compact_hint (index.h): the files holding a hinted range are
 * compacted soon and the filter drops its garbage — wherever the rows are,
 * the last level included, where most of an index lives once compacted.  A
 * collection's elements, all in the last level, then its key row deleted
 * and persisted: the hint on its elements' prefix must reclaim them; then a
 * retired database id and idx_compact_hint_db. */
static void test_compact_hint(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "hint/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	idx_batch_set_dbmap(b, (const uint32_t[]){0, 1}, 2, 2);
	put_coll(b, 0, "big", FMT_TYPE_HASH, 10, 200, 1);
	put_coll(b, 1, "other", FMT_TYPE_SET, 11, 5, 1);
	CHECK(idx_write(ix, b, 1) == 0, "write 1");
	idx_compact_all(ix); /* everything in the last level */
	CHECK(garbage_dropped(ix) == 0, "rows dropped with no garbage");

	del_key(b, 0, "big", 0);
	CHECK(idx_write(ix, b, 2) == 0, "write 2");
	flush_wait(ix, 2, "the deletion");
	struct ident prefix = eid(0, S("big"), 10, NULL, 0);
	idx_compact_hint(ix, prefix.b, fmt_elem_prefix_len(3));
	/* The count is taken as the compaction filters rows, before its output
	 * is installed: wait for the rows to be gone too.  (A deadline far
	 * beyond the milliseconds it takes, for a loaded machine.) */
	double deadline = test_now() + 60;
	while ((garbage_dropped(ix) < 200 || elems_left(ix, 0, "big", 10, 200) != 0) &&
	       test_now() < deadline)
		usleep(20000);
	CHECK(garbage_dropped(ix) == 200 && elems_left(ix, 0, "big", 10, 200) == 0,
	      "60 s after idx_compact_hint, %" PRIu64 " of a deleted collection's 200 elements"
	      " dropped, %d still there",
	      garbage_dropped(ix), elems_left(ix, 0, "big", 10, 200));

	uint64_t before = garbage_dropped(ix);
	idx_batch_set_dbmap(b, (const uint32_t[]){0, 2}, 2, 3); /* FLUSHDB 1 */
	CHECK(idx_write(ix, b, 3) == 0, "write 3");
	flush_wait(ix, 3, "the map");
	idx_compact_hint_db(ix, 1);
	deadline = test_now() + 60;
	while ((garbage_dropped(ix) < before + 6 || row_exists(ix, kid(1, S("other"))) ||
	        elems_left(ix, 1, "other", 11, 5) != 0) &&
	       test_now() < deadline)
		usleep(20000);
	CHECK(garbage_dropped(ix) >= before + 6 && !row_exists(ix, kid(1, S("other"))) &&
	          elems_left(ix, 1, "other", 11, 5) == 0,
	      "60 s after idx_compact_hint_db, the rows of a retired database are there (%" PRIu64
	      " rows dropped)",
	      garbage_dropped(ix) - before);
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- bulk load --------------------------------------------------------- */

struct sst_key {
	char key[8];
	uint32_t hash;
};

static int sst_key_cmp(const void *a, const void *b)
{
	const struct sst_key *x = a, *y = b;
	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return strcmp(x->key, y->key);
}

/* Table files built with idx_sst_* and ingested: key rows (one of them
 * replacing a key the index holds, and its expiry row), a collection and its
 * element rows, the count row, the map, segment rows, applied_lsn — all
 * visible at once and across a reopen; rows out of order refused. */
static void test_sst(struct idx_shared *sh)
{
	char path[512], keys_path[600], elems_path[600], bad_path[600], err[512];
	dir_path(path, sizeof(path), "sst/index");
	snprintf(keys_path, sizeof(keys_path), "%s/keys.sst", base_dir);
	snprintf(elems_path, sizeof(elems_path), "%s/elems.sst", base_dir);
	snprintf(bad_path, sizeof(bad_path), "%s/bad.sst", base_dir);
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	put_key(b, 9, "old", "o", 1, 7000, 0);
	CHECK(idx_write(ix, b, 1) == 0, "write");

	enum { N = 40 };
	struct sst_key keys[N + 2];
	for (int i = 0; i < N; i++)
		snprintf(keys[i].key, sizeof(keys[i].key), "s%02d", i);
	snprintf(keys[N].key, sizeof(keys[N].key), "old");
	snprintf(keys[N + 1].key, sizeof(keys[N + 1].key), "hh");
	for (int i = 0; i < N + 2; i++)
		keys[i].hash = idx_key_hash(keys[i].key, strlen(keys[i].key));
	qsort(keys, N + 2, sizeof(keys[0]), sst_key_cmp);

	struct idx_sst *s;
	CHECK(idx_sst_open(&s, ix, keys_path, err, sizeof(err)) == 0, "sst open: %s", err);
	uint64_t expires = 0, sum = 0;
	for (int i = 0; i < N + 2; i++) {
		const char *k = keys[i].key;
		struct ident id = kid(9, S(k));
		struct idx_entry e;
		uint64_t prev = 0;
		if (strcmp(k, "hh") == 0) {
			e = coll_entry(FMT_TYPE_HASH, 40, 3, 0, 50, 0);
		} else if (strcmp(k, "old") == 0) {
			e = inline_entry("new", 3, 50, 8000);
			prev = 7000;
		} else {
			e = inline_entry(k, 3, 50, k[2] == '3' ? 9000 : 0);
		}
		expires += e.expiry_ms != 0;
		sum += e.expiry_ms / 1000;
		int ret = idx_sst_put(s, ID(id), &e, prev, err, sizeof(err));
		CHECK(ret == 0, "sst put %s: %d %s", k, ret, err);
	}
	struct idx_seg_live live[] = {{3, 1000}, {1, 500}};
	const struct idx_count count = {N + 2, expires, sum};
	int ret = idx_sst_finish(s, 50, (const uint32_t[]){0, 9}, 2, 10, 9, &count, live, 2, err,
	                         sizeof(err));
	CHECK(ret == 0, "sst finish: %d %s", ret, err);
	idx_sst_free(s);

	struct ident el[3] = {eid(9, S("hh"), 40, S("a")), eid(9, S("hh"), 40, S("b")),
	                      eid(9, S("hh"), 40, S("c"))};
	for (int i = 0; i < 3; i++) /* ident order */
		for (int j = i + 1; j < 3; j++)
			if (memcmp(el[j].b, el[i].b, el[i].len) < 0) {
				struct ident t = el[i];
				el[i] = el[j];
				el[j] = t;
			}
	CHECK(idx_sst_open(&s, ix, elems_path, err, sizeof(err)) == 0, "sst open: %s", err);
	for (int i = 0; i < 3; i++) {
		ret = idx_sst_put_elem(s, ID(el[i]), "val", 3, err, sizeof(err));
		CHECK(ret == 0, "sst put element %d: %d %s", i, ret, err);
	}
	CHECK(idx_sst_finish_elems(s, err, sizeof(err)) == 0, "sst finish elements: %s", err);
	idx_sst_free(s);

	/* Refusals. */
	CHECK(idx_sst_open(&s, ix, bad_path, err, sizeof(err)) == 0, "sst open: %s", err);
	struct ident hi = kid(9, S(keys[N + 1].key)), lo = kid(9, S(keys[0].key));
	struct idx_entry x = inline_entry("x", 1, 1, 0);
	CHECK(idx_sst_put(s, ID(hi), &x, 0, err, sizeof(err)) == 0, "the first row");
	ret = idx_sst_put(s, ID(lo), &x, 0, err, sizeof(err));
	CHECK(ret == -EINVAL && strstr(err, "out of order"), "a row out of order: %d %s", ret, err);
	ret = idx_sst_put(s, ID(hi), &x, 0, err, sizeof(err));
	CHECK(ret == -EINVAL, "the same row twice: %d", ret);
	ret = idx_sst_put(s, ID(el[0]), &x, 0, err, sizeof(err));
	CHECK(ret == -EINVAL, "an element ident as a key row: %d", ret);
	ret = idx_sst_put_elem(s, ID(hi), "v", 1, err, sizeof(err));
	CHECK(ret == -EINVAL, "a key ident as an element row: %d", ret);
	idx_sst_free(s);
	unlink(bad_path);

	const char *paths[] = {keys_path, elems_path};
	ret = idx_ingest(ix, paths, 2, 50, err, sizeof(err));
	CHECK(ret == 0, "ingest: %d %s", ret, err);
	for (int round = 0; round < 2; round++) {
		const char *when = round ? "after reopen" : "after ingest";
		CHECK(idx_applied_lsn(ix) == 50, "%s: applied_lsn %" PRIu64, when,
		      idx_applied_lsn(ix));
		check_entry(ix, kid(9, S("old")),
		            &(struct idx_entry){.type = FMT_TYPE_STRING,
		                                .expiry_ms = 8000,
		                                .lsn = 50,
		                                .value_len = 3,
		                                .is_inline = true,
		                                .value = (const uint8_t *)"new"},
		            when);
		struct idx_entry s13 = inline_entry("s13", 3, 50, 9000);
		check_entry(ix, kid(9, S("s13")), &s13, when);
		struct idx_entry hh = coll_entry(FMT_TYPE_HASH, 40, 3, 0, 50, 0);
		check_entry(ix, kid(9, S("hh")), &hh, when);
		for (int i = 0; i < 3; i++)
			check_elem(ix, el[i], "val", 3, when);
		CHECK(count_keys(ix, 9) == N + 2, "%s: %" PRIu64 " keys", when, count_keys(ix, 9));
		check_counts(ix, (const uint32_t[]){9}, &count, 1, when);
		check_dbmap(ix, (const uint32_t[]){0, 9}, 2, 10, when);
		struct segment_seen seen = {0};
		CHECK(idx_segments_live(ix, segment_visit, &seen) == 0 && seen.n == 2 &&
		          seen.seg[0] == 1 && seen.db[0] == 9 && seen.live[0] == 500 &&
		          seen.seg[1] == 3 && seen.db[1] == 9 && seen.live[1] == 1000,
		      "%s: segment rows", when);
		/* Expiry rows: old's 8000 (its 7000 gone), s03 s13 s23 s33 at 9000. */
		struct expired_seen xs = {.n = 0};
		CHECK(idx_expired(ix, UINT64_MAX, NULL, 16, expired_visit, &xs) == 5 &&
		          xs.expiry[0] == 8000 && strcmp(xs.keys[0], "9:old") == 0 &&
		          xs.expiry[4] == 9000,
		      "%s: expiry rows (%zu)", when, xs.n);
		if (round == 0) {
			idx_close(ix);
			ix = open_or_exit(sh, path);
		}
	}
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- a reopen that compacts ------------------------------------------- */

/* The child: opens and closes the index `cycles` times, writing a few keys
 * each time.  Every close flushes one L0 file, so every fourth open finds
 * L0_COMPACTION_TRIGGER files and compacts while DB::Open is running. */
static int reopen_child(const char *path, int cycles)
{
	struct idx_shared *sh = shared_or_exit(8u << 20);
	struct idx_batch *b = idx_batch_new();
	for (int c = 0; c < cycles; c++) {
		struct idx *ix = open_or_exit(sh, path);
		for (int i = 0; i < 50; i++) {
			char key[16];
			snprintf(key, sizeof(key), "r%d", i);
			put_key(b, 0, key, "v", (uint64_t)c + 1, 0, 0);
		}
		put_coll(b, 0, "h", FMT_TYPE_SET, (uint64_t)c + 1, 3, (uint64_t)c + 1);
		if (idx_write(ix, b, (uint64_t)c + 1) < 0)
			_exit(2);
		idx_close(ix);
	}
	idx_batch_free(b);
	idx_shared_destroy(sh);
	_exit(0);
}

/* Regression: the compaction filter may be created while idx_open is still
 * inside DB::Open (a compaction the open schedules), before the index's
 * handle has its database: it must not crash (index.c, open_db and
 * garbage_filter_create).  Runs in a child, so a crash is reported. */
static void test_reopen_compacts(void)
{
	char path[512];
	dir_path(path, sizeof(path), "reopen/index");
	pid_t pid = fork();
	if (pid == 0) {
		execl("/proc/self/exe", "test_index", "--reopen-child", path, "80", (char *)NULL);
		_exit(127);
	}
	int status;
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "80 reopens of an index: the process %s %d",
	      WIFSIGNALED(status) ? "died of signal" : "exited with",
	      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

static void subtest_crash_kill(struct idx_shared *sh)
{
	test_crash(sh, "kill");
}

static void subtest_crash_exit(struct idx_shared *sh)
{
	test_crash(sh, "exit");
}

static void subtest_cached_only(struct idx_shared *sh)
{
	(void)sh;
	test_cached_only();
}

static void subtest_reopen_compacts(struct idx_shared *sh)
{
	(void)sh;
	test_reopen_compacts();
}

/* The subtests, in the order a run without arguments takes. */
static const struct {
	const char *name;
	void (*fn)(struct idx_shared *sh);
} subtests[] = {
    {"round_trip", test_round_trip},
    {"get_many", test_get_many},
    {"crash_kill", subtest_crash_kill},
    {"crash_exit", subtest_crash_exit},
    {"cached_only", subtest_cached_only},
    {"expiry", test_expiry},
    {"batch_collapse", test_batch_collapse},
    {"scan", test_scan},
    {"elem_scan", test_elem_scan},
    {"rows", test_rows},
    {"version", test_version},
    {"persisted", test_persisted},
    {"garbage", test_garbage},
    {"compact_hint", test_compact_hint},
    {"sst", test_sst},
    {"reopen_compacts", subtest_reopen_compacts},
};
#define N_SUBTESTS (sizeof(subtests) / sizeof(subtests[0]))

/* Runs subtest i in a process of its own (a crash fails that subtest only,
 * and each starts with RocksDB's threads fresh).  Returns true if it passed. */
static bool run_in_child(size_t i)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		execl("/proc/self/exe", "test_index", "--subtest", subtests[i].name, base_dir,
		      (char *)NULL);
		_exit(127);
	}
	int status;
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return false;
	if (WIFSIGNALED(status))
		fprintf(stderr, "FAIL: subtest %s died of signal %d\n", subtests[i].name,
		        WTERMSIG(status));
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Usage: test_index [SUBTEST...] runs the named subtests in this process;
 * without arguments every subtest runs in a child process of its own. */
int main(int argc, char **argv)
{
	logging_level = LOG_LEVEL_WARN;
	if (argc == 5 && strcmp(argv[1], "--crash-child") == 0)
		return crash_child(argv[2], atoi(argv[3]), argv[4]);
	if (argc == 4 && strcmp(argv[1], "--reopen-child") == 0)
		return reopen_child(argv[2], atoi(argv[3]));
	bool child = argc == 4 && strcmp(argv[1], "--subtest") == 0;

	if (child) {
		snprintf(base_dir, sizeof(base_dir), "%s", argv[3]);
	} else {
		const char *tmp = getenv("TMPDIR");
		snprintf(base_dir, sizeof(base_dir), "%s/ringkv-test-index-XXXXXX",
		         tmp && *tmp ? tmp : "/tmp");
		if (mkdtemp(base_dir) == NULL) {
			perror("mkdtemp");
			return 1;
		}
	}
	size_t order[64], n;
	if (!TEST_PICK_SUBTESTS(argv[0], argv + (child ? 2 : 1), child ? 1 : argc - 1, subtests,
	                        order, &n))
		return 1;
	if (argc == 1) {
		int failed = 0;
		for (size_t i = 0; i < N_SUBTESTS; i++) {
			printf("%s\n", subtests[i].name);
			if (!run_in_child(i)) {
				fprintf(stderr, "FAIL: subtest %s\n", subtests[i].name);
				failed++;
			}
		}
		nftw(base_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
		if (failed)
			fprintf(stderr, "%d subtest(s) failed\n", failed);
		return failed ? 1 : 0;
	}
	struct idx_shared *sh = shared_or_exit(16u << 20);
	for (size_t k = 0; k < n; k++) {
		if (!child)
			printf("%s\n", subtests[order[k]].name);
		subtests[order[k]].fn(sh);
	}
	idx_shared_destroy(sh);
	if (!child)
		nftw(base_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	return test_result();
}
