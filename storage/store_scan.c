/* store_scan: SCAN over one shard (contract: store.h, store_scan) — the
 * index's key rows in hash order, each checked against the key table, whose
 * known entries are newer than the index.
 */
#include <errno.h>
#include <stdint.h>

#include "storage/store_int.h"

/* One store_scan call's visitor state. */
struct scan_ctx {
	struct store *st;
	uint64_t now_ms;
	void (*fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms);
	void *arg;
};

static int scan_visit(void *arg, const void *key, size_t klen, const struct idx_entry *e)
{
	struct scan_ctx *c = arg;
	if (e->lsn < c->st->drop_lsn)
		return 0; /* dropped by a FLUSHALL the index has not applied yet */
	uint64_t expiry = e->expiry_ms;
	struct kentry *ke = st_kentry_find(c->st, key, klen);
	if (ke != NULL && ke->known) { /* pending writes are newer than the index */
		if (!ke->exists)
			return 0;
		expiry = ke->expiry_ms;
	}
	if (expiry == 0 || expiry > c->now_ms)
		c->fn(c->arg, key, klen, expiry);
	return 0;
}

int store_scan(struct store *st, uint64_t cursor, size_t count,
               void (*fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms),
               void *arg, uint64_t *next)
{
	struct scan_ctx c = {.st = st, .now_ms = clock_unix_ms(), .fn = fn, .arg = arg};
	uint32_t next_hash;
	*next = 0;
	if (cursor > UINT32_MAX)
		return 0;   /* not a cursor this store made: nothing after it */
	st_apply_batch(st); /* the index then holds every written record */
	int ret =
	    idx_scan(st->idx, (uint32_t)cursor, count ? count : 10, scan_visit, &c, &next_hash);
	if (ret < 0)
		return -EIO;
	*next = ret == 1 ? next_hash : 0; /* a resumption is past hash 0's group: never 0 */
	return 0;
}
