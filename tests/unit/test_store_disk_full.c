/* test_store_disk_full: a store on a small file system (a loop-mounted ext4
 * image) is written until the disk is full; the failing writes get a clear
 * error, acknowledged data still reads back (also after overwrites of cached
 * values fail), and after space is freed a restart finds every acknowledged
 * write.  Needs root and a loop device;
 * skips (77) otherwise. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "storage/store.h"
#include "testutil.h"

#define IMAGE_MB 48
#define VALUE_LEN 4000
#define MAX_KEYS 40000 /* far more than fits */

static struct pool *pool;
static struct idx_shared *shared;
static struct store *st;
static char mnt[256], image[256], dir[300], filler[300];

static uint8_t *acked;       /* [MAX_KEYS]: version + 1 of the acknowledged value, 0 none */
static uint8_t *unsure;      /* [MAX_KEYS]: version + 1 of a failed overwrite: after a
				restart it may be there (written, never acknowledged) */
static atomic_ulong done, errors_enospc, errors_other;
static atomic_int first_error;

static void value_of(unsigned i, unsigned ver, char *buf)
{
	for (unsigned k = 0; k < VALUE_LEN; k++)
		buf[k] = (char)('a' + (i * 7 + ver * 3 + k) % 26);
}

struct wreq {
	struct store_req req;
	unsigned i, ver;
	char key[24];
	char value[VALUE_LEN];
};

static void write_done(struct store_req *req)
{
	struct wreq *w = container_of(req, struct wreq, req);
	if (req->status == 0) {
		acked[w->i] = (uint8_t)(w->ver + 1);
	} else {
		if (acked[w->i] != 0)
			unsure[w->i] = (uint8_t)(w->ver + 1);
		int expected = req->status == -ENOSPC || req->status == -EIO;
		atomic_fetch_add(expected ? &errors_enospc : &errors_other, 1);
		int zero = 0;
		atomic_compare_exchange_strong(&first_error, &zero, req->status);
	}
	free(w);
	atomic_fetch_add(&done, 1);
}

struct range {
	unsigned first, count, ver;
};

static void write_step(void *arg)
{
	struct range *r = arg;
	for (unsigned i = r->first; i < r->first + r->count; i++) {
		struct wreq *w = calloc(1, sizeof(*w));
		w->i = i;
		w->ver = r->ver;
		snprintf(w->key, sizeof(w->key), "full:%u", i);
		value_of(i, r->ver, w->value);
		w->req.op = STORE_PUT;
		w->req.key = (const uint8_t *)w->key;
		w->req.key_len = strlen(w->key);
		w->req.value = (const uint8_t *)w->value;
		w->req.value_len = VALUE_LEN;
		w->req.done = write_done;
		store_submit(st, &w->req);
	}
}

struct rreq {
	struct store_req req;
	unsigned i;
	char key[24];
};
static atomic_ulong reads_done, reads_bad;
static bool after_restart;

static void read_done(struct store_req *req)
{
	struct rreq *r = container_of(req, struct rreq, req);
	char expect[VALUE_LEN], other[VALUE_LEN];
	value_of(r->i, acked[r->i] - 1u, expect);
	bool ok = req->status == 0 && req->result_len == VALUE_LEN &&
		  memcmp(req->result, expect, VALUE_LEN) == 0;
	if (!ok && after_restart && unsure[r->i] != 0 && req->status == 0 &&
	    req->result_len == VALUE_LEN) {
		value_of(r->i, unsure[r->i] - 1u, other);
		ok = memcmp(req->result, other, VALUE_LEN) == 0;
	}
	if (!ok)
		atomic_fetch_add(&reads_bad, 1);
	free(r);
	atomic_fetch_add(&reads_done, 1);
}

static unsigned long reads_issued;
static void read_step(void *arg)
{
	unsigned n = *(unsigned *)arg;
	reads_issued = 0;
	for (unsigned i = 0; i < n; i++) {
		if (!acked[i])
			continue;
		struct rreq *r = calloc(1, sizeof(*r));
		r->i = i;
		snprintf(r->key, sizeof(r->key), "full:%u", i);
		r->req.op = STORE_GET;
		r->req.key = (const uint8_t *)r->key;
		r->req.key_len = strlen(r->key);
		r->req.done = read_done;
		store_submit(st, &r->req);
		reads_issued++;
	}
}

/* Reads back every acknowledged key; returns how many were wrong. */
static unsigned long check_acked(unsigned n)
{
	atomic_store(&reads_done, 0);
	atomic_store(&reads_bad, 0);
	test_on_px(pool, read_step, &n);
	CHECK(test_wait_count(&reads_done, reads_issued, 60), "reads did not finish");
	return atomic_load(&reads_bad);
}

static struct open_args {
	int ret;
	char err[512];
} oa;

static void open_step(void *arg)
{
	(void)arg;
	struct store_config cfg = {.dir = dir,
	                           .databases = 16,
	                           .segment_size = 4u << 20,
	                           .durability = LOG_DURABILITY_FSYNC,
	                           .inline_max = 64,
	                           .cache_bytes = 1u << 20,
	                           .shared = shared};
	oa.ret = store_open(&st, px_current(), &cfg, oa.err, sizeof(oa.err));
}

static int sh(const char *fmt, const char *a, const char *b)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), fmt, a, b);
	return system(cmd);
}

static void cleanup(void)
{
	umount2(mnt, MNT_DETACH);
	rmdir(mnt);
	unlink(image);
}

int main(void)
{
	if (geteuid() != 0) {
		printf("needs root to mount a small file system\n");
		return 77;
	}
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(image, sizeof(image), "%s/ringkv-full-%d.img", tmp, (int)getpid());
	snprintf(mnt, sizeof(mnt), "%s/ringkv-full-%d", tmp, (int)getpid());
	snprintf(dir, sizeof(dir), "%s/shard-000", mnt);
	snprintf(filler, sizeof(filler), "%s/filler", mnt);
	char size[16];
	snprintf(size, sizeof(size), "%d", IMAGE_MB);
	if (sh("dd if=/dev/zero of='%s' bs=1M count=%s status=none", image, size) != 0 ||
	    sh("mkfs.ext4 -q -F '%s' %s >/dev/null 2>&1", image, "") != 0 || mkdir(mnt, 0755) != 0 ||
	    sh("mount -o loop '%s' '%s' 2>/dev/null", image, mnt) != 0) {
		printf("cannot make and mount a small ext4 image (no loop device?)\n");
		cleanup();
		return 77;
	}
	/* Space the operator will free before the restart. */
	if (sh("dd if=/dev/zero of='%s' bs=1M count=%s status=none", filler, "6") != 0) {
		cleanup();
		return 1;
	}

	char err[256];
	acked = calloc(MAX_KEYS, 1);
	unsure = calloc(MAX_KEYS, 1);
	CHECK(idx_shared_create(&shared, 4u << 20, 2, err, sizeof(err)) == 0, "idx_shared_create");
	pool = test_pool(1, 256, 50, 256);
	test_on_px(pool, open_step, NULL);
	if (oa.ret < 0) {
		fprintf(stderr, "FAIL: store_open: %s\n", oa.err);
		cleanup();
		return 1;
	}

	/* Write until writes fail (the disk is full), 64 at a time. */
	unsigned n = 0;
	while (n < MAX_KEYS && atomic_load(&errors_enospc) + atomic_load(&errors_other) < 64) {
		struct range r = {n, 64, 0};
		unsigned long target = atomic_load(&done) + 64;
		test_on_px(pool, write_step, &r);
		CHECK(test_wait_count(&done, target, 60), "writes did not complete");
		n += 64;
	}
	unsigned long ok = 0;
	for (unsigned i = 0; i < n; i++)
		ok += acked[i];
	printf("%u writes: %lu acknowledged, %lu failed with ENOSPC/EIO, %lu otherwise (first %s)\n",
	       n, ok, atomic_load(&errors_enospc), atomic_load(&errors_other),
	       strerror(-atomic_load(&first_error)));
	CHECK(n < MAX_KEYS, "the disk never filled");
	CHECK(ok > 1000, "only %lu writes fit", ok);
	CHECK(atomic_load(&errors_other) == 0, "%lu writes failed with an unexpected error",
	      atomic_load(&errors_other));
	CHECK(check_acked(n) == 0, "acknowledged data reads back wrong on the full disk");

	/* Overwrites of the same size on the full disk: those that fail leave
	 * the acknowledged value in place (the keys are read first, so their
	 * values are cached). */
	CHECK(check_acked(256) == 0, "acknowledged data reads back wrong on the full disk");
	unsigned long before_errors = atomic_load(&errors_enospc);
	for (unsigned first = 0; first < 256; first += 64) {
		struct range r = {first, 64, 1};
		unsigned long target = atomic_load(&done) + 64;
		test_on_px(pool, write_step, &r);
		CHECK(test_wait_count(&done, target, 60), "overwrites did not complete");
	}
	printf("overwrites on the full disk: %lu of 256 failed\n",
	       atomic_load(&errors_enospc) - before_errors);
	CHECK(atomic_load(&errors_enospc) > before_errors, "no overwrite failed on the full disk");
	CHECK(check_acked(n) == 0, "a failed overwrite changed what reads return");
	test_store_close(pool, st);
	after_restart = true;

	/* The operator frees space and restarts: every acknowledged write is there. */
	unlink(filler);
	test_on_px(pool, open_step, NULL);
	CHECK(oa.ret == 0, "reopen after freeing space: %s", oa.err);
	if (oa.ret == 0) {
		unsigned long bad = check_acked(n);
		CHECK(bad == 0, "%lu acknowledged writes lost or wrong after the restart", bad);
		CHECK(store_key_count(st, 0) >= ok, "count %lu after restart, %lu acknowledged",
		      (unsigned long)store_key_count(st, 0), ok);
		test_store_close(pool, st);
	}
	pool_stop(pool);
	idx_shared_destroy(shared);
	cleanup();
	return test_result();
}
