/* test_index: the RocksDB key index (entries, crash recovery, expiry index, scans, format). */
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

#include "storage/index.h"
#include "tests/unit/testutil.h"

#define CRASH_BATCHES_BEFORE_REPORT 2000u

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

static struct idx_entry inline_entry(const void *value, uint32_t len, uint64_t lsn,
                                     uint64_t expiry_ms)
{
	return (struct idx_entry){.expiry_ms = expiry_ms,
	                          .lsn = lsn,
	                          .value_len = len,
	                          .is_inline = true,
	                          .value = value};
}

static struct idx_entry pointer_entry(uint64_t segment, uint64_t offset, uint32_t length,
                                      uint32_t value_len, uint64_t lsn, uint64_t expiry_ms)
{
	return (struct idx_entry){.expiry_ms = expiry_ms,
	                          .lsn = lsn,
	                          .value_len = value_len,
	                          .segment = segment,
	                          .offset = offset,
	                          .length = length};
}

static bool entries_equal(const struct idx_entry *a, const struct idx_entry *b)
{
	if (a->expiry_ms != b->expiry_ms || a->lsn != b->lsn || a->value_len != b->value_len ||
	    a->is_inline != b->is_inline)
		return false;
	if (a->is_inline)
		return a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0;
	return a->segment == b->segment && a->offset == b->offset && a->length == b->length;
}

/* Looks key up (blocking) and checks it matches `want`. */
static void check_entry(struct idx *ix, const void *key, size_t klen, const struct idx_entry *want,
                        const char *what)
{
	struct idx_entry e;
	uint8_t *value;
	int ret = idx_get(ix, key, klen, IDX_BLOCKING, &e, &value);
	CHECK(ret == 0, "%s: get returned %d", what, ret);
	if (ret == 0)
		CHECK(entries_equal(&e, want), "%s: entry differs", what);
	CHECK(want->is_inline ? value != NULL && e.value == value : value == NULL,
	      "%s: value buffer", what);
	free(value);
}

static void check_absent(struct idx *ix, const void *key, size_t klen, const char *what)
{
	struct idx_entry e;
	uint8_t *value = (uint8_t *)1;
	int ret = idx_get(ix, key, klen, IDX_BLOCKING, &e, &value);
	CHECK(ret == -ENOENT, "%s: get returned %d, want -ENOENT", what, ret);
	CHECK(value == NULL, "%s: value not NULL", what);
}

/* ---- entries ----------------------------------------------------------- */

static void test_round_trip(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "roundtrip/shard-000/index");
	struct idx *ix = open_or_exit(sh, path);
	CHECK(idx_applied_lsn(ix) == 0 && idx_key_count(ix) == 0, "a new index starts empty");

	static const uint8_t k1[] = {'a', 0, 'b'}, k2[] = {'a', 0, 'c'}, v1[] = {0, 1, 0, 2, 0};
	uint8_t long_key[1000];
	for (size_t i = 0; i < sizeof(long_key); i++)
		long_key[i] = (uint8_t)(i * 7);
	struct idx_entry e1 = inline_entry(v1, sizeof(v1), 7, 0);
	struct idx_entry e2 =
	    pointer_entry(1ull << 40, 1ull << 33, 1u << 31, 123456, 1ull << 62, 1700000000123ull);
	struct idx_entry e_empty = inline_entry(NULL, 0, 9, 0);
	struct idx_entry e_long = pointer_entry(0, 4096, 40, 0, 10, 0);

	struct idx_batch *b = idx_batch_new();
	idx_batch_put(b, k1, sizeof(k1), &e1, 0);
	idx_batch_put(b, k2, sizeof(k2), &e2, 0);
	idx_batch_put(b, "", 0, &e_empty, 0);
	idx_batch_put(b, long_key, sizeof(long_key), &e_long, 0);
	CHECK(idx_write(ix, b, 10, 4) == 0, "write");
	CHECK(idx_applied_lsn(ix) == 10 && idx_key_count(ix) == 4, "metadata in memory");

	check_entry(ix, k1, sizeof(k1), &e1, "inline with zeros");
	check_entry(ix, k2, sizeof(k2), &e2, "pointer with large fields");
	check_entry(ix, "", 0, &e_empty, "empty key, empty inline value");
	check_entry(ix, long_key, sizeof(long_key), &e_long, "1000-byte key");
	check_absent(ix, "a", 1, "prefix of a key");
	check_absent(ix, "a\0", 2, "prefix with zero");

	struct idx_entry e;
	CHECK(idx_get(ix, k1, sizeof(k1), IDX_CACHED_ONLY, &e, NULL) == 0 && e.is_inline &&
	          e.value == NULL && e.value_len == sizeof(v1),
	      "a memtable entry is found cached-only; value NULL without a buffer");

	/* Overwrite inline -> pointer, pointer -> inline; delete one. */
	struct idx_entry e1b = pointer_entry(3, 8192, 64, 20, 11, 0);
	struct idx_entry e2b = inline_entry("xyz", 3, 12, 0);
	idx_batch_put(b, k1, sizeof(k1), &e1b, 0);
	idx_batch_put(b, k2, sizeof(k2), &e2b, e2.expiry_ms);
	idx_batch_delete(b, long_key, sizeof(long_key), 0);
	CHECK(idx_write(ix, b, 12, 3) == 0, "second write");
	check_entry(ix, k1, sizeof(k1), &e1b, "inline overwritten by pointer");
	check_entry(ix, k2, sizeof(k2), &e2b, "pointer overwritten by inline");
	check_absent(ix, long_key, sizeof(long_key), "deleted key");

	idx_close(ix);
	ix = open_or_exit(sh, path);
	CHECK(idx_applied_lsn(ix) == 12, "applied_lsn after reopen: %" PRIu64, idx_applied_lsn(ix));
	CHECK(idx_key_count(ix) == 3, "key count after reopen: %" PRIu64, idx_key_count(ix));
	CHECK(idx_persisted_lsn(ix) == 12, "close flushed everything");
	check_entry(ix, k1, sizeof(k1), &e1b, "after reopen: k1");
	check_entry(ix, k2, sizeof(k2), &e2b, "after reopen: k2");
	check_entry(ix, "", 0, &e_empty, "after reopen: empty key");
	check_absent(ix, long_key, sizeof(long_key), "after reopen: deleted key");

	struct idx_stats st;
	idx_get_stats(ix, &st);
	CHECK(st.gets > 0 && st.writes == 0 && st.errors == 0, "stats after reopen");
	CHECK(st.sst_bytes > 0, "SST bytes reported");
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- crash consistency ------------------------------------------------- */

static char crash_key[32];

static size_t crash_key_of(uint64_t i)
{
	return (size_t)snprintf(crash_key, sizeof(crash_key), "c%08" PRIu64, i);
}

/* The child: writes batch i (key i, applied_lsn i, key count i) for i = 1, 2,
 * ..., asking for flushes now and then; reports on `fd` the persisted LSN
 * once it is past CRASH_BATCHES_BEFORE_REPORT, then goes on until killed
 * ("kill") or stops without closing ("exit"). */
static int crash_child(const char *path, int fd, const char *mode)
{
	struct idx_shared *sh = shared_or_exit(8u << 20);
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	uint64_t limit = strcmp(mode, "exit") == 0 ? 3 * CRASH_BATCHES_BEFORE_REPORT : UINT64_MAX;
	for (uint64_t i = 1; i <= limit; i++) {
		struct idx_entry e = pointer_entry(i / 100, i * 64, 64, 8, i, 0);
		idx_batch_put(b, crash_key, crash_key_of(i), &e, 0);
		if (idx_write(ix, b, i, i) < 0)
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

/* Walks every key with idx_scan, 1000 per call. */
static struct key_tally tally_keys(struct idx *ix)
{
	struct key_tally t = {0, 0};
	uint32_t cursor = 0;
	int ret;
	while ((ret = idx_scan(ix, cursor, 1000, tally_visit, &t, &cursor)) == 1)
		;
	CHECK(ret == 0, "scan returned %d", ret);
	return t;
}

static uint64_t count_keys(struct idx *ix)
{
	return tally_keys(ix).n;
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
	CHECK(idx_key_count(ix) == a, "%s: key count %" PRIu64 " != applied_lsn %" PRIu64, mode,
	      idx_key_count(ix), a);
	/* Key i was written with LSN i in batch i: n keys, none above a, means
	 * exactly keys 1..a. */
	struct key_tally t = tally_keys(ix);
	CHECK(t.n == a && t.max_lsn == a,
	      "%s: %" PRIu64 " keys, highest LSN %" PRIu64 ", for applied_lsn %" PRIu64, mode, t.n,
	      t.max_lsn, a);
	struct idx_entry e;
	CHECK(idx_get(ix, crash_key, crash_key_of(a), IDX_BLOCKING, &e, NULL) == 0 && e.lsn == a,
	      "%s: the last applied key is there", mode);
	CHECK(idx_get(ix, crash_key, crash_key_of(a + 1), IDX_BLOCKING, &e, NULL) == -ENOENT,
	      "%s: the next key is not", mode);
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
		idx_batch_put(b, key, (size_t)snprintf(key, sizeof(key), "w%06u", i), &e, 0);
	}
	CHECK(idx_write(ix, b, 5000, 5000) == 0, "write 5000 keys");
	idx_close(ix);
	idx_shared_destroy(sh);

	sh = shared_or_exit(1u << 20);
	ix = open_or_exit(sh, path);
	struct idx_entry e;
	uint8_t *v = NULL;
	int ret = idx_get(ix, "w000000", 7, IDX_CACHED_ONLY, &e, &v);
	CHECK(ret == -EWOULDBLOCK, "an entry only on disk: cached-only get returned %d", ret);
	CHECK(v == NULL, "no value on -EWOULDBLOCK");
	ret = idx_get(ix, "w000000", 7, IDX_BLOCKING, &e, &v);
	CHECK(ret == 0 && e.is_inline && e.value_len == 100 && v != NULL && v[0] == 0 &&
	          v[99] == 'v' && e.lsn == 1,
	      "blocking get finds it (%d)", ret);
	free(v);
	ret = idx_get(ix, "w000000", 7, IDX_CACHED_ONLY, &e, &v);
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
	char keys[16][16];
	uint64_t expiry[16];
	size_t n;
	size_t stop_after; /* 0 = never stop */
};

static int expired_visit(void *arg, const void *key, size_t klen, uint64_t expiry_ms)
{
	struct expired_seen *s = arg;
	if (s->n < 16 && klen < 16) {
		memcpy(s->keys[s->n], key, klen);
		s->keys[s->n][klen] = '\0';
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

/* Regression: a batch is sorted and collapsed to one change per row before
 * it reaches RocksDB (with memtable insert hints).  Several changes to one key
 * in one batch — its expiry rows included — must end as the last one says,
 * also in a memtable that already holds idx_drop_all's range deletions. */
static void test_batch_collapse(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "collapse/shard-000/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	for (int round = 0; round < 2; round++) {
		/* put (expiry 1000), put (expiry 2000), delete, put (expiry 3000) */
		struct idx_entry a1 = inline_entry("v1", 2, 1, 1000);
		struct idx_entry a2 = pointer_entry(1, 4096, 64, 30, 2, 2000);
		struct idx_entry a4 = inline_entry("v4", 2, 4, 3000);
		idx_batch_put(b, "a", 1, &a1, 0);
		idx_batch_put(b, "a", 1, &a2, 1000);
		idx_batch_delete(b, "a", 1, 2000);
		idx_batch_put(b, "a", 1, &a4, 0);
		/* put then delete: gone, with its expiry row */
		struct idx_entry c1 = inline_entry("c", 1, 5, 1500);
		idx_batch_put(b, "c", 1, &c1, 0);
		idx_batch_delete(b, "c", 1, 1500);
		/* many keys in reverse order, one overwritten without expiry */
		for (int i = 99; i >= 0; i--) {
			char k[16];
			struct idx_entry e = inline_entry("x", 1, (uint64_t)(10 + i), 0);
			idx_batch_put(b, k, (size_t)snprintf(k, sizeof(k), "m%02d", i), &e, 0);
		}
		struct idx_entry m7 = inline_entry("y", 1, 200, 0);
		idx_batch_put(b, "m07", 3, &m7, 0);
		CHECK(idx_write(ix, b, 200, 101) == 0, "round %d: write", round);
		check_entry(ix, "a", 1, &a4, "the last of four changes to one key");
		check_absent(ix, "c", 1, "a key put then deleted in one batch");
		check_entry(ix, "m07", 3, &m7, "a key written twice in one batch");
		check_expired(ix, 5000, 10, "a"); /* exactly one expiry row: a's 3000 */
		/* The second round runs after idx_drop_all's range deletions, in
		 * the same memtable. */
		CHECK(idx_drop_all(ix, 300) == 0, "round %d: drop all", round);
		check_absent(ix, "a", 1, "after drop all");
		check_expired(ix, UINT64_MAX, 10, "");
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
		struct idx_entry e = inline_entry("v", 1, i + 1, exp[i]);
		idx_batch_put(b, key, (size_t)snprintf(key, sizeof(key), "e%u", i + 1), &e, 0);
	}
	CHECK(idx_write(ix, b, 5, 5) == 0, "write");
	check_expired(ix, 3000, 10, "e1 e5 e3");
	check_expired(ix, 3000, 2, "e1 e5");
	/* Resuming after a row: the rows after it, that row excluded, whether it
	 * still exists or not. */
	struct idx_expiry_pos at = {2000, "e5", 2};
	check_expired_after(ix, 3000, &at, 10, "e3");
	at = (struct idx_expiry_pos){1000, "e1", 2};
	check_expired_after(ix, 3000, &at, 1, "e5");
	at = (struct idx_expiry_pos){1500, "zz", 2}; /* no such row: the next one */
	check_expired_after(ix, 3000, &at, 10, "e5 e3");
	at = (struct idx_expiry_pos){3000, "e3", 2};
	check_expired_after(ix, 3000, &at, 10, "");
	check_expired_after(ix, UINT64_MAX, &at, 10, "e2");
	check_expired(ix, 999, 10, "");
	check_expired(ix, UINT64_MAX, 10, "e1 e5 e3 e2");

	struct expired_seen s = {.stop_after = 1};
	CHECK(idx_expired(ix, 3000, NULL, 10, expired_visit, &s) == 1 && s.expiry[0] == 1000,
	      "the visitor stops the walk");

	/* New expiry for e1: its old row goes. */
	struct idx_entry e = inline_entry("v", 1, 6, 9000);
	idx_batch_put(b, "e1", 2, &e, 1000);
	CHECK(idx_write(ix, b, 6, 5) == 0, "write");
	check_expired(ix, 3000, 10, "e5 e3");
	/* Persist e5. */
	e = inline_entry("v", 1, 7, 0);
	idx_batch_put(b, "e5", 2, &e, 2000);
	/* Rewrite e2 with the same expiry: still one row. */
	e = inline_entry("w", 1, 8, 5000);
	idx_batch_put(b, "e2", 2, &e, 5000);
	/* Delete e3. */
	idx_batch_delete(b, "e3", 2, 3000);
	/* A key gaining an expiry. */
	e = inline_entry("v", 1, 9, 4000);
	idx_batch_put(b, "e4", 2, &e, 0);
	CHECK(idx_write(ix, b, 9, 4) == 0, "write");
	check_expired(ix, 3000, 10, "");
	check_expired(ix, 10000, 10, "e4 e2 e1");

	/* Same expiry, keys ordered; a binary key. */
	static const uint8_t bin[] = {'e', 0, '0'};
	e = inline_entry("v", 1, 10, 4000);
	idx_batch_put(b, bin, sizeof(bin), &e, 0);
	CHECK(idx_write(ix, b, 10, 5) == 0, "write");
	s = (struct expired_seen){.n = 0};
	CHECK(idx_expired(ix, 4000, NULL, 10, expired_visit, &s) == 2 && s.expiry[0] == 4000 &&
	          s.keys[0][0] == 'e' && s.keys[0][1] == '\0' && strcmp(s.keys[1], "e4") == 0,
	      "equal expiries in key order");

	idx_close(ix);
	ix = open_or_exit(sh, path);
	check_expired(ix, 10000, 10, "e e4 e2 e1"); /* "e" is "e\0000" printed up to its zero */
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
		idx_batch_put(b, key, klen, &e, 0);
	}
	CHECK(idx_write(ix, b, SCAN_KEYS, SCAN_KEYS) == 0, "write");
	uint64_t distinct = SCAN_KEYS;

	struct scan_seen s = {.cap = SCAN_KEYS};
	s.keys = calloc(SCAN_KEYS, 8);
	s.lens = calloc(SCAN_KEYS, sizeof(size_t));
	uint32_t cursor = 0;
	size_t calls = 0;
	int ret;
	for (;;) {
		ret = idx_scan(ix, cursor, 7, scan_visit, &s, &cursor);
		calls++;
		if (ret != 1)
			break;
	}
	CHECK(ret == 0, "the scan ends with 0 (%d)", ret);
	CHECK(s.n == distinct, "visited %zu keys, %" PRIu64 " exist", s.n, distinct);
	CHECK(calls >= distinct / 7, "%zu calls", calls);
	CHECK(s.n > 0 && s.lens[0] == 0, "the empty key (hash 0) comes first");
	bool ordered = true;
	for (size_t i = 1; i < s.n && i < s.cap; i++) {
		uint32_t a = idx_key_hash(s.keys[i - 1], s.lens[i - 1]);
		uint32_t b2 = idx_key_hash(s.keys[i], s.lens[i]);
		if (a > b2 ||
		    (a == b2 && key_compare(s.keys[i - 1], s.lens[i - 1], s.keys[i], s.lens[i]) >= 0))
			ordered = false;
	}
	CHECK(ordered, "each key visited once, in hash order");

	/* A visitor that stops: the next call resumes after the key it stopped on. */
	s.n = 0;
	s.in_call = 0;
	s.stop_at = 3;
	ret = idx_scan(ix, 0, 100, scan_visit, &s, &cursor);
	CHECK(ret == 1 && s.n == 3, "stopped after 3 (%d, %zu)", ret, s.n);
	CHECK(cursor == idx_key_hash(s.keys[3 - 1], s.lens[3 - 1]),
	      "the cursor is the stopped key's hash: its group is visited again");
	CHECK(idx_scan(ix, 0, 0, scan_visit, &s, &cursor) == -EINVAL, "max 0 refused");

	/* drop_all: keys and expiry rows go, metadata stays. */
	CHECK(idx_drop_all(ix, SCAN_KEYS + 1) == 0, "drop_all");
	CHECK(idx_key_count(ix) == 0 && idx_applied_lsn(ix) == SCAN_KEYS + 1, "drop_all metadata");
	CHECK(count_keys(ix) == 0, "no keys after drop_all");
	struct expired_seen xs = {.n = 0};
	CHECK(idx_expired(ix, UINT64_MAX, NULL, 100, expired_visit, &xs) == 0, "no expiry rows");
	check_absent(ix, s.keys[0], s.lens[0], "a key after drop_all");
	idx_close(ix);
	ix = open_or_exit(sh, path);
	CHECK(idx_key_count(ix) == 0 && idx_applied_lsn(ix) == SCAN_KEYS + 1,
	      "drop_all persisted across reopen");
	CHECK(count_keys(ix) == 0, "no keys after reopen");
	struct idx_entry e = inline_entry("x", 1, SCAN_KEYS + 2, 0);
	idx_batch_put(b, "new", 3, &e, 0);
	CHECK(idx_write(ix, b, SCAN_KEYS + 2, 1) == 0 && count_keys(ix) == 1,
	      "writes work after drop_all");
	free(s.keys);
	free(s.lens);
	idx_batch_free(b);
	idx_close(ix);
}

/* ---- format version ---------------------------------------------------- */

/* Puts one row into the RocksDB at `path` with the plain C API. */
static void raw_put(const char *path, const char *key, const void *value, size_t vlen)
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
		rocksdb_put(db, wo, key, strlen(key), value, vlen, &err);
		rocksdb_writeoptions_destroy(wo);
		rocksdb_close(db);
	}
	rocksdb_options_destroy(o);
	if (err) {
		fprintf(stderr, "raw put into %s: %s\n", path, err);
		exit(1);
	}
}

static void test_version(struct idx_shared *sh)
{
	char path[512], err[512];
	struct idx *ix;
	dir_path(path, sizeof(path), "version/index");
	idx_close(open_or_exit(sh, path));
	uint32_t v99 = htole32(99);
	raw_put(path, "m:version", &v99, sizeof(v99));
	int ret = idx_open(&ix, sh, path, err, sizeof(err));
	CHECK(ret == -EPROTO && ix == NULL, "unknown version refused (%d)", ret);
	CHECK(strstr(err, "format version 99") && strstr(err, "reads version 1") &&
	          strstr(err, "run a ringkv that matches"),
	      "message names cause and fix: %s", err);

	dir_path(path, sizeof(path), "foreign/index");
	raw_put(path, "foo", "bar", 3);
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

static void test_persisted(struct idx_shared *sh)
{
	char path[512];
	dir_path(path, sizeof(path), "persisted/index");
	struct idx *ix = open_or_exit(sh, path);
	struct idx_batch *b = idx_batch_new();
	CHECK(idx_request_flush(ix) == -EALREADY, "nothing to flush in a new index");
	struct idx_entry e = inline_entry("v", 1, 5, 0);
	idx_batch_put(b, "p", 1, &e, 0);
	CHECK(idx_write(ix, b, 5, 1) == 0, "write");
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

	e.lsn = 6;
	idx_batch_put(b, "p", 1, &e, 0);
	CHECK(idx_write(ix, b, 6, 1) == 0, "write");
	CHECK(idx_persisted_lsn(ix) == 5, "lags again: %" PRIu64, idx_persisted_lsn(ix));
	struct idx_stats st;
	idx_get_stats(ix, &st);
	CHECK(st.flush_requests == 1 && st.memtable_bytes > 0, "flush stats");
	idx_batch_free(b);
	idx_close(ix);
}

int main(int argc, char **argv)
{
	logging_level = LOG_LEVEL_WARN;
	if (argc == 5 && strcmp(argv[1], "--crash-child") == 0)
		return crash_child(argv[2], atoi(argv[3]), argv[4]);

	const char *tmp = getenv("TMPDIR");
	snprintf(base_dir, sizeof(base_dir), "%s/ringkv-test-index-XXXXXX",
	         tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(base_dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	struct idx_shared *sh = shared_or_exit(16u << 20);
	test_round_trip(sh);
	test_crash(sh, "kill");
	test_crash(sh, "exit");
	test_cached_only();
	test_expiry(sh);
	test_batch_collapse(sh);
	test_scan(sh);
	test_version(sh);
	test_persisted(sh);
	idx_shared_destroy(sh);
	nftw(base_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	return test_result();
}
