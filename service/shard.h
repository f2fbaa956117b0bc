/* shard: which proactor runs which shard of the data directory, and the
 * stores of every shard.
 *
 * The data directory's shard count is fixed by storage/layout.h (DIR/LAYOUT,
 * created with server.threads shards the first time).  Shard s runs on
 * proactor s mod threads, so a proactor runs several shards when the directory
 * has more shards than the server has threads, and none when it has fewer.
 *
 *   key -> slot -> shard   layout_key_shard (CRC16 with hash tags, mod 16384)
 *   shard -> proactor      shard_proactor
 *   shard -> store         shard_store, on that proactor only
 *
 * The map is written once by shard_open_all (main thread, before any client
 * is served) and read-only afterwards, so every proactor may read it without
 * synchronisation.  A store itself belongs to its proactor: every call on it
 * is made there (store.h).
 */
#ifndef RINGKV_SHARD_H
#define RINGKV_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "service/config.h"
#include "service/runtime/pool.h"
#include "storage/layout.h"
#include "storage/store.h"

struct shard_map {
	unsigned shards;  /* shards of the data directory (DIR/LAYOUT) */
	unsigned threads; /* proactors of the pool */
	struct pool *pool;
	struct store **stores; /* [shards]; stores[s] is used only on proactor s % threads */
	struct idx_shared *idx_shared; /* block cache and background threads of every index */
};

extern struct shard_map shard_map; /* read-only once shard_open_all has returned */

/* The shard that owns `key`. */
static inline unsigned shard_of_key(const void *key, size_t len)
{
	return layout_key_shard(key, len, shard_map.shards);
}

/* The proactor that runs `shard`. */
static inline unsigned shard_proactor(unsigned shard)
{
	return shard % shard_map.threads;
}

/* The store of `shard`.  Call only on shard_proactor(shard). */
static inline struct store *shard_store(unsigned shard)
{
	return shard_map.stores[shard];
}

/* Opens the data directory (layout_open: its shard count is created from the
 * pool size the first time) and every shard's store on the proactor that runs
 * it, all proactors in parallel.  Blocking; call from the main thread before
 * clients are served.  Returns 0, or -errno with a message naming the cause
 * and the fix in err; then nothing is left open. */
int shard_open_all(struct pool *pool, const struct cfg *cfg, char *err, size_t errlen);

/* Stops every store (in-flight writes finish and become durable, the logs are
 * synced), waits until none is busy and closes them, each on its proactor.
 * Blocking; call from the main thread once no request can reach a store any
 * more, and before pool_stop. */
void shard_close_all(void);

#endif
