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
	uint32_t db;     /* the stored id walked */
	uint64_t now_ms;
	void (*fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms, uint8_t type);
	void *arg;
};

static int scan_visit(void *arg, const void *key, size_t klen, const struct idx_entry *e)
{
	struct scan_ctx *c = arg;
	uint64_t expiry = e->expiry_ms;
	uint8_t type = e->type;
	size_t len = fmt_key_ident(c->st->ident, c->db, key, klen);
	struct kentry *ke = st_kentry_find(c->st, c->st->ident, len);
	if (ke != NULL && ke->known) { /* pending writes are newer than the index */
		if (!ke->exists)
			return 0;
		expiry = ke->expiry_ms;
		type = ke->type;
	}
	if (expiry == 0 || expiry > c->now_ms)
		c->fn(c->arg, key, klen, expiry, type);
	return 0;
}

int store_scan(struct store *st, unsigned db, uint64_t cursor, size_t count,
               void (*fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms,
                          uint8_t type),
               void *arg, uint64_t *next)
{
	struct scan_ctx c = {.st = st, .now_ms = clock_unix_ms(), .fn = fn, .arg = arg};
	uint32_t next_hash;
	*next = 0;
	if (cursor > UINT32_MAX || db >= st->cfg.databases)
		return 0;   /* not a cursor this store made: nothing after it */
	c.db = st_db_id(st, db);
	st_apply_batch(st); /* the index then holds every written record */
	int ret = idx_scan(st->idx, c.db, (uint32_t)cursor, count ? count : 10, scan_visit, &c,
	                   &next_hash);
	if (ret < 0)
		return -EIO;
	*next = ret == 1 ? next_hash : 0; /* a resumption is past hash 0's group: never 0 */
	return 0;
}
