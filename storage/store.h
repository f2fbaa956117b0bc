/* store: one shard's key-value store — the log (log.h) holds every record,
 * the index (index.h) says where each key's current value is, a bounded
 * cache keeps hot values, and writes not yet in the index are served from
 * the cache's pinned entries.  How it does so: store_int.h; the measurements
 * behind its tuning: docs/DECISIONS.md, "Storage".
 *
 * Every call is made on the shard's proactor; every request completes through
 * its `done` callback on a later iteration (never inside the call that
 * submitted it).
 *
 * Ordering: requests on the same key run in submission order — a request
 * that must wait for I/O (a cold read, a read-modify-write) holds back later
 * requests on that key until it finishes.  So a client's pipelined INCR then
 * GET always sees its own increment.
 *
 * Durability: a write's `done` runs after its log record is written as
 * storage.durability says (fsync / write), or at once for `none`.  Requests
 * submitted after a write see it at once, though the index gets it up to
 * seconds later (written behind, one row per key however often it was
 * written meanwhile).  A crash loses nothing the log holds: at open every
 * record after the index's applied_lsn is replayed into it.
 *
 * Databases: every request names its database (req->db, below
 * store_config.databases).  A database is stored under an id that the
 * shard's database map gives it (format.h, DBMAP): FLUSHDB gives it a new
 * id, FLUSHALL all of them, SWAPDB exchanges two — one log record each,
 * O(1) whatever the databases hold; the rows left under a retired id are
 * reclaimed in the background (index.h, "Garbage").  Requests submitted
 * before such a change run on the databases as they were (as if they ran
 * before it); requests submitted after it see the new map.  A directory
 * written with more databases than configured keeps the extra ones (keys,
 * counts, space) unserved: FLUSHALL leaves them, a larger count serves them
 * again.
 *
 * Types: a key holds a string, a hash or a set.  A hash or set is stored per
 * element (one index row each): reading, adding or removing one element
 * costs O(1) elements of I/O and memory, whatever its size; deleting,
 * expiring or overwriting the whole key costs O(1) too (the elements become
 * garbage, reclaimed in the background).  Strings are read and written by
 * the requests below; collections by calls (STORE_CALL, "calls" below).
 *
 * Key count: exact whenever it is read, per database, with the number of
 * keys that have an expiry.  Like Redis's DBSIZE it includes keys that have
 * expired but have not been reclaimed yet.
 *
 * Expiry: an expired key is never returned (checked on every read).  Active
 * expiry reclaims expired keys in the background without reading them, each
 * deleted through the normal write path, so the count stays exact.
 *
 * Garbage collection (gc_live_ratio > 0): a sealed log segment whose live
 * fraction (the bytes of the records the index points at, exact across
 * crashes) is below gc_live_ratio has its live records rewritten at the end
 * of the log, each only if its key still points at it (so a concurrent
 * overwrite or delete simply wins), and is then deleted — only once the index
 * pointing at the new copies is persisted by RocksDB and the log holding them
 * is on stable storage, so no crash recovers an index pointing into a deleted
 * segment.  The log stays under about (live bytes) / gc_live_ratio plus the
 * segment being written and the ones awaiting deletion.
 */
#ifndef RINGKV_STORE_H
#define RINGKV_STORE_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "service/runtime/proactor.h"
#include "storage/index.h"
#include "storage/log.h"

struct store_config {
	const char *dir;            /* DIR/shard-NNN; created if missing */
	unsigned shard;
	unsigned databases;         /* databases 0..databases-1, 1..FMT_DB_MAX */
	uint64_t segment_size;      /* log segment bytes */
	enum log_durability durability;
	uint32_t inline_max;        /* values up to this size live in the index */
	uint64_t cache_bytes;       /* this shard's share of storage.cache_size */
	struct idx_shared *shared;  /* block cache and background threads of all shards */
	double gc_live_ratio;       /* rewrite sealed segments whose live fraction is below
				       this (0 < r < 1); 0 = no garbage collection */
};

/* Early acknowledgement (a script's commands, which must see their own
 * replies to go on): a write request with `durable` set completes (done
 * runs) as soon as it is applied, as under durability none, and the
 * durability of its record is counted in *durable instead: `pending` goes up
 * by one then, and down by one once the record is written as
 * storage.durability says (`status` keeps a failed write's error), when
 * `settled` runs on the shard's proactor if it reached 0.  The owner holds
 * one count of its own and drops it when it has submitted everything, so
 * `settled` runs exactly once, after the last write is durable. */
struct store_durable {
	atomic_uint pending;
	atomic_int status;
	void (*settled)(struct store_durable *d);
};

enum store_op {
	STORE_GET,    /* value and expiry of key */
	STORE_META,   /* exists / expiry / length, without reading the value */
	STORE_PUT,    /* set value (flags: NX, XX, KEEPTTL, GET) */
	STORE_DELETE, /* delete key; result: whether it existed */
	STORE_EXPIRE, /* change an existing key's expiry, any type: req->expire decides */
	STORE_UPDATE, /* read-modify-write through req->update */
	STORE_RELOCATE, /* internal: garbage collection moves a value (never submitted by
			   callers) */
	STORE_CALL,   /* run req->call over the key (and req->more_keys): "calls" below */
	STORE_HOLD,   /* hold the key (and req->more_keys) for req->holder: "holds" below */
};

#define STORE_NX 0x1      /* PUT only if the key does not exist */
#define STORE_XX 0x2      /* PUT only if the key exists */
#define STORE_KEEPTTL 0x4 /* PUT keeps the existing expiry */
#define STORE_GET_OLD 0x8 /* PUT/DELETE also return the previous value */
#define STORE_IF_EXPIRED 0x10 /* DELETE only a key whose expiry has passed */
#define STORE_STRING 0x20 /* META: a key of another type is refused (STRLEN) */
#define STORE_ANY_TYPE 0x40 /* GET: a collection answers its type, enc and count, no
			       value (OBJECT ENCODING) */

/* The status of a request on a key of another type: GET, UPDATE, PUT or
 * DELETE with GET_OLD, META with STORE_STRING, on a hash or a set (Redis's
 * WRONGTYPE); nothing was changed. */
#define STORE_WRONGTYPE (-EPROTOTYPE)

/* What a read-modify-write decides, given the current value. */
enum store_update_result {
	STORE_UPDATE_WRITE,  /* write new_value (and new_expiry_ms) */
	STORE_UPDATE_DELETE, /* delete the key */
	STORE_UPDATE_KEEP,   /* change nothing (e.g. an error reply) */
};

struct store;
struct store_req;
struct store_txn;

/* A call (STORE_CALL): see "calls" below. */
typedef void (*store_call_fn)(struct store_req *req, struct store_txn *t);

/* Another key of a call. */
struct store_key_ref {
	unsigned db;
	const uint8_t *key; /* caller-owned until done */
	size_t key_len;
};

/* A request's place in the queue of one of its keys (private to the store). */
struct store_waiter {
	struct store_req *req;
	struct store_waiter *next;
};

/* Decides a read-modify-write on the proactor.  old is NULL when the key does
 * not exist.  To write, set req->new_value / new_len (memory owned by the
 * caller, valid until done) and req->new_expiry_ms. */
typedef enum store_update_result (*store_update_fn)(struct store_req *req, const uint8_t *old,
						     size_t old_len, uint64_t old_expiry_ms);

/* Decides an EXPIRE on the proactor, given the key's current expiry (the key
 * exists; 0 = none): WRITE sets req->new_expiry_ms (0 = none), DELETE
 * deletes the key, KEEP changes nothing.  It may run more than once for one
 * request (a string's value is read before it is rewritten): it must decide
 * the same from the same state. */
typedef enum store_update_result (*store_expire_fn)(struct store_req *req,
						     uint64_t old_expiry_ms);

/* One request.  Owned by the caller (embed it in the command's context) and
 * untouched by the caller from store_submit() until done runs. */
struct store_req {
	/* set by the caller */
	enum store_op op;
	unsigned db;               /* the database, < store_config.databases */
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value;      /* PUT: the new value (caller-owned until done) */
	size_t value_len;
	uint64_t expiry_ms;        /* PUT: absolute Unix ms, 0 = none */
	unsigned flags;            /* STORE_NX | STORE_XX | STORE_KEEPTTL | STORE_GET_OLD */
	store_update_fn update;    /* UPDATE */
	store_expire_fn expire;    /* EXPIRE */
	store_call_fn call;        /* CALL */
	const struct store_key_ref *more_keys; /* CALL: its keys after `key` (may repeat
	                                          one: the same key then) */
	size_t n_more_keys;
	/* CALL: elements of key 0 the call will read (HGET's field, SMISMEMBER's
	 * members): those not cached are looked up before the call runs, off the
	 * loop.  n_prefetch of them, the i-th at prefetch[i * prefetch_step]
	 * (its length likewise in prefetch_lens); 0: none. */
	uint8_t *const *prefetch;
	const size_t *prefetch_lens;
	size_t n_prefetch, prefetch_step;
	void *arg;                 /* the caller's */
	const void *holder;        /* the owner of a hold (STORE_HOLD), or the owner whose
				      hold this request may pass (any op); NULL: none */
	struct store_durable *durable; /* early acknowledgement (struct store_durable,
					  above); NULL: none */
	uint64_t txid;                 /* the transaction whose records its writes are, 0: none
	                                  ("transactions" below) ... */
	_Atomic uint64_t *txn_shards;  /* ... and where the store notes that it wrote
	                               some: bit shard % 64 of txn_shards[shard / 64] */
	void (*done)(struct store_req *req);

	/* set by the store before done */
	int status;                /* 0; -ENOENT (no such key); -EEXIST (NX/XX refused);
				      STORE_WRONGTYPE; -EIO, -ENOSPC, -E2BIG, -ENOMEM
				      (failed, nothing changed) */
	bool existed;              /* the key existed before the request (false for a
				      plain PUT of a key not cached: it does not ask) */
	const uint8_t *result;     /* GET, GET_OLD: the value; valid only inside done */
	size_t result_len;         /* META: the value's length */
	uint64_t result_expiry_ms; /* GET, META: the key's expiry, 0 = none */
	uint8_t result_type;       /* GET, META: the key's type (FMT_TYPE_*) */
	uint8_t result_enc;        /* META: a collection's encoding flags (FMT_ENC_*) */
	uint64_t result_count;     /* META: a collection's elements */

	/* UPDATE, EXPIRE: set by the update or expire function */
	const uint8_t *new_value;
	size_t new_len;
	uint64_t new_expiry_ms;

	/* private to the store */
	struct store_waiter wait;        /* the request in its key's queue */
	struct store_waiter *waits;      /* CALL: one per key of more_keys (malloc'd) */
	unsigned heads_missing;          /* CALL: keys whose queue it does not head yet */
	struct log_read read;            /* a cold read of the value */
	struct store *store;
	void *key_entry;                 /* the key's entry in the store's key table */
	void **more_entries;             /* CALL: the entries of more_keys (malloc'd) */
	void *result_ref;                /* keeps `result` alive until done has run */
	unsigned retries;                /* index re-reads after a moved value */
	unsigned lookups_missing;        /* index lookups off the loop it waits for */
	int lookup_err;                  /* ... the first that failed */
	uint64_t cold;                   /* CALL: keys 0..63 that were not cached */
	bool prefetched;                 /* CALL: its elements' lookups were started */
	void *prefetch_pin_few[4];       /* CALL: the element entries it pinned ... */
	void **prefetch_pins;            /* ... (prefetch_pin_few or malloc'd), */
	size_t n_prefetch_pins;          /* released once it has settled */
	struct st_held *held;            /* HOLD, once granted: its keys (malloc'd) */
	size_t n_held;
};

struct store_stats {
	uint64_t keys;             /* exact key count, every database */
	uint64_t log_bytes;        /* bytes in log segments */
	uint64_t cache_hits, cache_misses;
	uint64_t index_blocking_reads; /* index entries not in the block cache, read blocking
	                                  on the loop */
	uint64_t index_async_reads;    /* ... read by the lookup threads instead */
	uint64_t index_probes_skipped; /* ... sent there without trying the block cache
	                                  first (store_cache.c, "Probes") */
	uint64_t index_block_misses;   /* index blocks read from SST files */
	uint64_t index_bytes;          /* index memtables and SST files */
	uint64_t disk_reads;       /* log reads */
	uint64_t commits;          /* log commits (group commits) */
	uint64_t records;          /* records in them: records / commits = batching */
	uint64_t fsyncs;
	uint64_t write_errors;     /* commits that failed */
	uint64_t expired;          /* keys deleted by active expiry */
	uint64_t live_bytes;       /* bytes of log records the index points at */
	uint64_t gc_runs;          /* segments garbage collection walked */
	uint64_t gc_records_moved; /* live records it rewrote */
	uint64_t gc_bytes_moved;   /* their value bytes */
	uint64_t gc_segments_deleted; /* segments it deleted */
	uint64_t segments_recycled;   /* ... of which kept as the log's spare (log.h) */
	uint64_t spare_bytes_zeroed;  /* zeroes written to prepare spare segments */
	uint64_t tail_bytes_zeroed;   /* ... and ahead of the commits (log.h) */
	uint64_t blind_puts;          /* PUTs that did not read the index first (store_int.h) */
	uint64_t blind_puts_existing; /* ... of which the key turned out to exist */
	uint64_t index_writes_merged; /* writes folded into a newer one of their key before
	                                 the index got them (store_int.h) */
	uint64_t index_batch_keys;    /* keys whose writes wait for the index now */
	uint64_t cache_bytes;         /* what the key table charges its cache budget now */
	uint64_t cache_entries;       /* kentries in the key table now (keys and elements) */
	uint64_t pending_writes;      /* records appended and not yet in the index, now */
	uint64_t pending_writes_peak; /* ... the most there were at once */
	uint64_t records_replayed;    /* log records recovery replayed when the store opened */
	uint64_t txn_records_dropped; /* ... of which left out: their transaction never
	                                 committed */
	uint64_t txn_commits;         /* COMMIT records written */
	uint64_t txn_open;            /* transactions with records here, not finished, now */
	uint64_t elem_reads;          /* collection elements read from the index */
	uint64_t elem_rows_walked;    /* ... and element rows visited by walks */
	uint64_t garbage_dropped;     /* garbage rows the index's compaction dropped */
	uint64_t garbage_compactions; /* compactions run for the hints (index.h, "Garbage") */
};

/* One database's counts (DBSIZE, INFO keyspace). */
struct store_db_stats {
	uint64_t keys;         /* exact, expired-but-not-reclaimed ones included */
	uint64_t expires;      /* of them with an expiry */
	uint64_t expiry_sum_s; /* the sum of those expiries, Unix seconds (avg_ttl) */
};

struct store;

/* Ids of committed transactions, as recovery reads them from the logs. */
struct store_txids {
	uint64_t *ids; /* sorted once store_txids_sort ran */
	size_t n, cap;
};
int store_txids_add(struct store_txids *s, uint64_t txid); /* 0 or -ENOMEM */
void store_txids_sort(struct store_txids *s);              /* sorts, drops repeats */
bool store_txids_has(const struct store_txids *s, uint64_t txid);
void store_txids_free(struct store_txids *s);

/* Opens the shard: the index, then the log replayed from the index's
 * applied_lsn.  Blocking: call at start-up on the shard's proactor.  Returns
 * 0, or -errno with a message naming the cause and the fix.  The same as
 * store_open_begin, store_scan_commits into a set of its own and
 * store_open_finish: right for a store whose transactions never span other
 * stores (tests, tools). */
int store_open(struct store **out, struct px *px, const struct store_config *cfg, char *err,
	       size_t errlen);

/* Opening in three steps, for stores whose transactions may span each other
 * (the server's shards): store_open_begin opens the index; store_scan_commits
 * adds the COMMIT records of the part of the log recovery will replay to
 * `committed`; once every store has done so, store_open_finish replays the
 * log, leaving out the records of transactions not in `committed` (format.h,
 * "Transactions").  After a failure of begin or finish, *out / st is to be
 * closed with store_close. */
int store_open_begin(struct store **out, struct px *px, const struct store_config *cfg, char *err,
                     size_t errlen);
int store_scan_commits(struct store *st, struct store_txids *committed, char *err, size_t errlen);
int store_open_finish(struct store *st, const struct store_txids *committed, char *err,
                      size_t errlen);

/* Submits a request; its done runs on a later iteration. */
void store_submit(struct store *st, struct store_req *req);

#define STORE_PREFETCH_MAX 32 /* keys store_prefetch looks at per call */

/* A hint: requests on these keys are about to be submitted (the next
 * commands of a pipeline).  Starts loading what store_submit will touch for
 * them (the key table's bucket, the key's entry and its cached value) so the
 * cache misses of a batch overlap instead of following each other.  Changes
 * nothing; keys the table does not hold cost only their bucket.  At most
 * STORE_PREFETCH_MAX keys are looked at. */
void store_prefetch(struct store *st, unsigned db, const uint8_t *const *keys,
		    const size_t *lens, size_t n);

/* The same for an element of each key (HGET key field, SADD key member, ...):
 * of a collection the key table knows, the element's entry — unless the
 * collection has a copy of all its elements and the command only reads
 * (bit i of `writes` clear), which a call reads from the copy.  Elements
 * whose ident would be longer than STORE_PREFETCH_IDENT are passed over. */
#define STORE_PREFETCH_IDENT 256
void store_prefetch_elems(struct store *st, unsigned db, const uint8_t *const *keys,
                          const size_t *lens, const uint8_t *const *elems, const size_t *elens,
                          uint32_t writes, size_t n);

/* SCAN of database `db`: visits about `count` keys from `cursor` (0 =
 * start) in hash order, calling fn for each live key with its expiry and
 * type, and sets *next to the cursor
 * to pass next time, 0 when the walk is complete.  Cursors are hashes, so
 * they stay valid across writes and restarts, and every key that exists for
 * the whole walk is visited at least once (a key may be visited twice).  Keys
 * deleted, expired or dropped are skipped.  One caveat: with durability
 * `none` a key written in the last milliseconds (acknowledged, its log write
 * still in flight) is missed by a call whose range has passed it.  Reads the index
 * blocking, bounded by `count`.  Returns 0 or -EIO. */
int store_scan(struct store *st, unsigned db, uint64_t cursor, size_t count,
	       void (*fn)(void *arg, const uint8_t *key, size_t klen, uint64_t expiry_ms,
			  uint8_t type),
	       void *arg, uint64_t *next);

/* FLUSHALL (db < 0) or FLUSHDB (db) of this shard, or SWAPDB db with db2:
 * one DBMAP record (format.h) changes the database map, durably: req->done
 * runs as for a write.  O(1): the keys left behind are reclaimed in the
 * background. */
void store_flush(struct store *st, int db, struct store_req *req);
void store_swap_db(struct store *st, unsigned db, unsigned db2, struct store_req *req);

/* ---- calls --------------------------------------------------------------
 *
 * A STORE_CALL request runs req->call(req, t) on the shard's proactor once it
 * heads the queue of each of its keys (req->key and req->more_keys; key 0 is
 * req->key): after every request submitted earlier on any of them has
 * settled, before any later one runs.  So a call is atomic and isolated over
 * its keys, which must all be the shard's.  Inside, the call reads and
 * changes its keys through the store_txn_* functions, synchronously (an
 * element not in memory is read from the index at once); it writes its reply
 * itself (req->arg or the request's container).  What it changed reaches
 * the log as one group when it returns — the keys' metadata first, then the
 * elements: one commit, so recovery applies all of it or none — and
 * req->done runs as for a write (or on the next iteration if nothing
 * changed).  A call that fails (store_txn_abort_error, or a txn function
 * returning < 0 other than -ENOENT) changes nothing: req->status says why.
 * A txn is valid only during its call. */

/* What a call sees of key k. */
struct store_key_info {
	bool exists;        /* the key exists and has not expired */
	uint8_t type;       /* when it exists: FMT_TYPE_* */
	uint8_t enc;        /* a collection's FMT_ENC_* flags */
	uint64_t count;     /* a collection's elements */
	uint64_t expiry_ms; /* 0 = none */
	uint32_t value_len; /* a string's length */
};
void store_txn_key(struct store_txn *t, size_t k, struct store_key_info *out);

/* The value of element `elem` of collection key k: 0 (*v, *vlen valid until
 * the next store_txn_* call), -ENOENT (no such element, or no such key), or
 * -EIO / -ENOMEM (the call failed). */
int store_txn_get(struct store_txn *t, size_t k, const void *elem, size_t elen,
		  const uint8_t **v, size_t *vlen);

/* Sets element `elem` of key k to (value, vlen), creating the key as a
 * collection of `type` if it does not exist (the caller checked that it is
 * not of another type).  Returns 1 (a new element), 0 (replaced) or < 0. */
int store_txn_put(struct store_txn *t, size_t k, uint8_t type, const void *elem, size_t elen,
		  const void *value, size_t vlen);

/* Removes element `elem` of key k (the key goes when its last element does,
 * as in Redis).  Returns 1 (removed), 0 (not there) or < 0. */
int store_txn_del(struct store_txn *t, size_t k, const void *elem, size_t elen);

/* Deletes key k, whatever its type.  Returns 1 (deleted), 0 (absent). */
int store_txn_delete_key(struct store_txn *t, size_t k);

/* Makes key k the string (value, vlen) expiring at expiry_ms (absolute Unix
 * ms, 0 = none), whatever it held before (a collection's elements become
 * garbage).  A string's value cannot be read inside a call (it may be in
 * the log): the caller read it before, under a hold (RENAME, COPY, MOVE).
 * Returns 0 or < 0. */
int store_txn_put_string(struct store_txn *t, size_t k, const void *value, size_t vlen,
			 uint64_t expiry_ms);

/* Sets collection key k's expiry (0 = none).  Returns 1, 0 (k is not a
 * collection that exists: nothing changed) or < 0. */
int store_txn_expire(struct store_txn *t, size_t k, uint64_t expiry_ms);

/* WATCH: counts key k as changed even if nothing was (HSET of a field to its
 * own value: Redis's HSET signals the key whatever it wrote). */
void store_txn_touch(struct store_txn *t, size_t k);

/* ORs FMT_ENC_* flags into collection key k's encoding (a one-way change). */
void store_txn_mark(struct store_txn *t, size_t k, uint8_t enc);

/* Visits elements of collection key k: at least `max` (when there are) from
 * `cursor` (0: the first) in element-hash order, then the rest of the last
 * one's hash group; *next is where to resume, 0 when the walk is complete.
 * Sees the call's own changes and every earlier write.  fn's arguments are
 * valid during its call; its non-zero return stops the walk (and is
 * returned).  Returns 0, fn's value, or < 0 (the call failed). */
typedef int (*store_elem_fn)(void *arg, const uint8_t *elem, size_t elen, const uint8_t *value,
			     size_t vlen);
int store_txn_scan(struct store_txn *t, size_t k, uint64_t cursor, size_t max, store_elem_fn fn,
		   void *arg, uint64_t *next);

/* Removes a random element of collection key k (SPOP) after giving it to fn
 * (as for store_txn_scan; fn's < 0 fails the call).  `rnd` is a random
 * number of the caller's.  Returns 1 (one removed), 0 (k is not a
 * collection that exists) or < 0. */
int store_txn_pop(struct store_txn *t, size_t k, uint64_t rnd, store_elem_fn fn, void *arg);

/* Asks for the call to run again later instead of finishing (a reply too
 * large to build at once, streamed as the client reads it): the request
 * keeps the head of its keys' queues — nothing else runs on them meanwhile —
 * and is not completed; its owner runs it again with store_call_resume.
 * Only a call that changed nothing may pause (a call that changed something
 * finishes as if it had not asked). */
void store_txn_pause(struct store_txn *t);

/* Runs a paused call again, on the shard's proactor. */
void store_call_resume(struct store *st, struct store_req *req);

/* Drops what the call changed so far: it completes with status 0 and
 * nothing written (a refusal the call replies itself). */
void store_txn_abort(struct store_txn *t);
/* The same, completing with status `err` (< 0). */
void store_txn_abort_error(struct store_txn *t, int err);

/* ---- holds ---------------------------------------------------------------
 *
 * A STORE_HOLD request (a transaction's lock on its keys: MULTI/EXEC) is
 * queued on its keys like a call and is granted — done runs, status 0 — once
 * it heads every one of their queues: every request submitted earlier on any
 * of them has settled.  From then until store_release, requests on those
 * keys whose `holder` is the hold's run (in submission order among
 * themselves, as usual), and every other request on them waits, in
 * submission order, behind the hold.  Keys of the hold owner's requests that
 * the hold does not cover are not held (they run as usual): a hold must name
 * every key its owner will use on this shard, or a request of another
 * client queued ahead on such a key could wait for the hold while the owner
 * waits for it.  Holds of one owner on several shards must be taken one
 * after another in one order (shard number) so that two owners never wait
 * for each other.  A hold whose request failed (status < 0) holds nothing
 * and is not released. */
void store_release(struct store *st, struct store_req *hold);

/* WATCH: while set, `touch` runs (on the shard's proactor, inside the
 * request that made the change) for each key a write changes (a key may be
 * touched more than once by one change), and `touch_db` for a FLUSHALL (db
 * -1), FLUSHDB (db, db2 -1) or SWAPDB (db, db2) before it is made.
 * Relocations by garbage collection are not changes.  NULL: none (the cost
 * of a write is then one test). */
struct store_watch {
	void (*touch)(void *arg, unsigned db, const uint8_t *key, size_t len);
	void (*touch_db)(void *arg, int db, int db2);
	void *arg;
};
void store_set_watch(struct store *st, const struct store_watch *w);

/* ---- transactions -------------------------------------------------------
 *
 * Crash atomicity of a transaction (EXEC, a script, a multi-key command),
 * on one shard or several (format.h, "Transactions").  Its requests carry
 * its id (req->txid; unique across the shards and the server's lifetimes),
 * so their PUT and DELETE records do.  A shard keeps the ids of the
 * transactions that wrote to it and are not finished yet ("open"): the
 * index does not take their rows (the index batch passes over them, and the
 * applied_lsn it writes stays below their first record), so recovery replays
 * their records and can leave them out.  The owner of the transaction ends
 * it with store_txn_end on each shard:
 *   - STORE_TXN_COMMIT, once the transaction's records are written as
 *     storage.durability says on every shard (on one shard: at once — a
 *     COMMIT follows its records in the log): appends a COMMIT record if
 *     the shard has records of it (else writes nothing); done runs when the
 *     record is written as durability says.  The transaction is acknowledged
 *     once every shard's COMMIT is.
 *   - STORE_TXN_FINISH, once every COMMIT is written (or the transaction
 *     failed and will not commit): the shard forgets the id and the index
 *     takes its rows.  With STORE_TXN_COMMIT in the same request (a
 *     transaction of one shard), it finishes when the COMMIT is written.
 * Why recovery finds a COMMIT of every committed transaction whose records
 * it replays: a shard replays T's records only from below them, so its own
 * COMMIT of T, which follows them, is replayed too — if it was written.  If
 * it was not, T finished nowhere (FINISH comes after every COMMIT), so each
 * shard that did write one still replays from below T's records there, and
 * so its COMMIT as well.  And a COMMIT is written only once all of T's
 * records are, so T is then whole in the logs.  A transaction must not write
 * after its STORE_TXN_FINISH (it would stay open). */
#define STORE_TXN_COMMIT 0x100
#define STORE_TXN_FINISH 0x200

/* The shard number the store was opened for. */
unsigned store_shard(const struct store *st);

/* Ends transaction req->txid on this shard as req->flags say (above).  done
 * runs on a later iteration with status 0, or the error that kept the COMMIT
 * from being written. */
void store_txn_end(struct store *st, struct store_req *req);

/* Asks the index to persist its memtables in the background (a RocksDB
 * flush), so a restart replays less of the log.  Returns at once: 0, or
 * -EALREADY (nothing to flush), -EBUSY (a flush is still running), -EIO. */
int store_checkpoint(struct store *st);

/* The counts of database `db` (exact: pending writes included). */
void store_db_stats(struct store *st, unsigned db, struct store_db_stats *out);
uint64_t store_key_count(struct store *st, unsigned db);
void store_get_stats(struct store *st, struct store_stats *out);

/* Stops accepting requests and finishes what is in flight; store_busy()
 * turns false when store_close() may be called. */
void store_stop(struct store *st);
bool store_busy(const struct store *st);
void store_close(struct store *st);

#endif
