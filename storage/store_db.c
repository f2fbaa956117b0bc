/* store_db: the databases of a shard (store.h, "Databases").  Database
 * number d is stored under the id st->dbs[d].id; every ident carries the id,
 * so changing the map changes what every key of a database is, at once:
 * FLUSHDB gives a database a new id, FLUSHALL every one, SWAPDB exchanges
 * two.  The change is a DBMAP record on the write path (st_append): in
 * memory it takes effect when appended (requests submitted later see it),
 * in the index when written, in LSN order with every other record.  The
 * rows of a retired id are garbage: the index's compaction filter drops
 * them, hinted once the index has persisted the map (st_hint_garbage).
 *
 * Counts per database (keys, expires, the sum of expiries) follow the ids
 * too: `live` with every pending write, `applied` as the index's count rows
 * hold them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "storage/store_int.h"

/* ---- stored id -> database number ------------------------------------- */

static uint32_t id_slot_hash(uint32_t id, uint32_t cap)
{
	return (id * 2654435761u) & (cap - 1);
}

/* Rebuilds st->id_slots from st->dbs (after every map change: rare). */
static int id_slots_build(struct store *st)
{
	uint32_t cap = 16;
	while (cap < 2 * st->n_dbs)
		cap *= 2;
	uint32_t *slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return -ENOMEM;
	for (unsigned d = 0; d < st->n_dbs; d++) {
		uint32_t s = id_slot_hash(st->dbs[d].id, cap);
		while (slots[s] != 0)
			s = (s + 1) & (cap - 1);
		slots[s] = d + 1;
	}
	free(st->id_slots);
	st->id_slots = slots;
	st->cap_id_slots = cap;
	return 0;
}

int st_db_of_id(const struct store *st, uint32_t id)
{
	if (st->id_slots == NULL)
		return -1;
	uint32_t cap = st->cap_id_slots;
	for (uint32_t s = id_slot_hash(id, cap); st->id_slots[s] != 0; s = (s + 1) & (cap - 1))
		if (st->dbs[st->id_slots[s] - 1].id == id)
			return (int)st->id_slots[s] - 1;
	return -1;
}

/* ---- counts ------------------------------------------------------------ */

static void count_add(struct store_db_stats *c, const struct count_delta *d)
{
	c->keys += (uint64_t)d->keys;
	c->expires += (uint64_t)d->expires;
	c->expiry_sum_s += (uint64_t)d->expiry_sum_s;
}

void st_count_live(struct store *st, uint32_t db, const struct count_delta *d)
{
	if (d->keys == 0 && d->expires == 0 && d->expiry_sum_s == 0)
		return; /* most writes: an overwrite (4% of SET -P 16's CPU looked the id up) */
	int n = st_db_of_id(st, db);
	if (n >= 0)
		count_add(&st->dbs[n].live, d);
}

void st_count_applied(struct store *st, uint32_t db, const struct count_delta *d)
{
	int n = st_db_of_id(st, db);
	if (n < 0 || (d->keys == 0 && d->expires == 0 && d->expiry_sum_s == 0))
		return;
	count_add(&st->dbs[n].applied, d);
	st->dbs[n].dirty = true;
}

static struct idx_count idx_count_of(const struct store_db_stats *s)
{
	return (struct idx_count){s->keys, s->expires, s->expiry_sum_s};
}

/* The current map as ids[] (malloc'd, n_dbs of them). */
static uint32_t *map_ids(const struct store *st)
{
	uint32_t *ids = malloc(st->n_dbs * sizeof(*ids));
	for (unsigned d = 0; ids != NULL && d < st->n_dbs; d++)
		ids[d] = st->dbs[d].id;
	return ids;
}

void st_counts_flush(struct store *st, struct idx_batch *b)
{
	for (unsigned d = 0; d < st->n_dbs; d++) {
		if (!st->dbs[d].dirty)
			continue;
		struct idx_count c = idx_count_of(&st->dbs[d].applied);
		idx_batch_set_count(b, st->dbs[d].id, &c);
		st->dbs[d].dirty = false;
	}
	if (st->dbmap_dirty) {
		uint32_t *ids = map_ids(st);
		if (ids == NULL)
			return; /* the next write tries again */
		idx_batch_set_dbmap(b, ids, st->n_dbs, st->next_id);
		free(ids);
		st->dbmap_dirty = false;
	}
}

/* idx_counts callback at open. */
static void count_load(void *arg, uint32_t db, const struct idx_count *c)
{
	struct store *st = arg;
	int n = st_db_of_id(st, db);
	if (n < 0) {
		/* A row a retirement left behind (a crash between the two): it
		 * goes with the next write. */
		idx_batch_set_count(st->batch, db, &(struct idx_count){0});
		return;
	}
	st->dbs[n].live = (struct store_db_stats){c->keys, c->expires, c->expiry_sum_s};
}

int st_db_open(struct store *st, char *err, size_t errlen)
{
	unsigned want = st->cfg.databases;
	uint32_t *ids = malloc(FMT_DB_MAX * sizeof(*ids));
	uint32_t n = 0, next = 0;
	if (ids == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int ret = idx_dbmap(st->idx, ids, FMT_DB_MAX, &n, &next);
	if (ret == -EIO) {
		free(ids);
		snprintf(err, errlen, "cannot read the database map of %s/index (see the log above):"
		         " restore the data directory from a backup", st->dir);
		return -EIO;
	}
	/* A new index maps database d to id d; a map with fewer databases than
	 * configured gets new ids for the rest.  A map with more keeps them all
	 * (their keys, counts and space): the extra databases are not served,
	 * and come back if the count is raised again. */
	st->n_dbs = n > want ? n : want;
	struct db_slot *dbs = realloc(st->dbs, st->n_dbs * sizeof(*dbs));
	if (dbs == NULL) {
		free(ids);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	st->dbs = dbs;
	memset(st->dbs, 0, st->n_dbs * sizeof(*st->dbs));
	st->dbmap_dirty = ret == -ENOENT || n < want;
	for (unsigned d = 0; d < st->n_dbs; d++)
		st->dbs[d].id = d < n ? ids[d] : (ret == -ENOENT ? d : next++);
	st->next_id = ret == -ENOENT ? want : next;
	if (n > want) {
		LOG_WARN("shard %u: the data directory has %" PRIu32 " databases and"
		         " server.databases is %u: databases %u..%" PRIu32 " are kept, not served",
		         st->cfg.shard, n, want, want, n - 1);
	}
	free(ids);
	if (id_slots_build(st) < 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (idx_counts(st->idx, count_load, st) < 0) {
		snprintf(err, errlen, "cannot read the key counts of %s/index (see the log above)",
		         st->dir);
		return -EIO;
	}
	return 0;
}

/* ---- changing the map --------------------------------------------------- */

void st_dbmap_free(struct dbmap_change *c)
{
	if (c == NULL)
		return;
	free(c->ids);
	free(c->retired);
	free(c);
}

/* A change to `ids` (n of them) against the current map; NULL when out of
 * memory. */
static struct dbmap_change *change_new(const struct store *st, uint32_t *ids, uint32_t n,
                                       uint32_t next_id)
{
	struct dbmap_change *c = calloc(1, sizeof(*c));
	uint32_t *retired = malloc(st->n_dbs * sizeof(*retired));
	if (c == NULL || retired == NULL) {
		free(c);
		free(retired);
		free(ids);
		return NULL;
	}
	*c = (struct dbmap_change){.n = n, .next_id = next_id, .ids = ids, .retired = retired};
	for (unsigned d = 0; d < st->n_dbs; d++) {
		bool kept = false;
		for (uint32_t i = 0; i < n && !kept; i++)
			kept = ids[i] == st->dbs[d].id;
		if (!kept)
			c->retired[c->n_retired++] = st->dbs[d].id;
	}
	return c;
}

struct dbmap_change *st_dbmap_parse(struct store *st, const uint8_t *value, size_t len)
{
	uint32_t cap = (uint32_t)(len >= 8 ? (len - 8) / 4 : 0), n, next;
	uint32_t *ids = malloc((cap ? cap : 1) * sizeof(*ids));
	if (ids == NULL || !fmt_decode_dbmap(value, len, ids, cap, &n, &next)) {
		free(ids);
		return NULL;
	}
	return change_new(st, ids, n, next);
}

void st_dbmap_set(struct store *st, const struct dbmap_change *c)
{
	/* Databases keep their counts where their id goes (SWAPDB), a new id
	 * starts empty (FLUSHDB, FLUSHALL); retired ids' bytes are dead. */
	struct db_slot *old = malloc(st->n_dbs * sizeof(*old));
	if (old != NULL)
		memcpy(old, st->dbs, st->n_dbs * sizeof(*old));
	unsigned n_old = st->n_dbs;
	if (c->n > st->n_dbs) { /* replaying a map written with more databases */
		struct db_slot *dbs = realloc(st->dbs, c->n * sizeof(*dbs));
		if (dbs != NULL) {
			st->dbs = dbs;
			st->n_dbs = c->n;
		}
	}
	for (unsigned d = 0; d < st->n_dbs; d++) {
		uint32_t id = d < c->n ? c->ids[d] : st->next_id++;
		int from = -1;
		for (unsigned o = 0; old != NULL && o < n_old && from < 0; o++)
			if (old[o].id == id)
				from = (int)o;
		st->dbs[d] = from >= 0 ? old[from] : (struct db_slot){.id = id};
	}
	free(old);
	if (c->next_id > st->next_id)
		st->next_id = c->next_id;
	for (uint32_t i = 0; i < c->n_retired; i++)
		st_usage_retire(st, c->retired[i]);
	if (id_slots_build(st) < 0)
		LOG_ERROR("shard %u: out of memory rebuilding the database map", st->cfg.shard);
}

/* The rows a map change writes: the map, and the removal of the retired
 * ids' count rows. */
static void dbmap_rows(struct store *st, const struct dbmap_change *c, struct idx_batch *b)
{
	/* A replayed map written with fewer databases than the store now holds
	 * was extended by st_dbmap_set: st_counts_flush writes that. */
	st->dbmap_dirty = c->n < st->n_dbs;
	if (!st->dbmap_dirty)
		idx_batch_set_dbmap(b, c->ids, c->n, c->next_id);
	for (uint32_t i = 0; i < c->n_retired; i++)
		idx_batch_set_count(b, c->retired[i], &(struct idx_count){0});
	st_usage_flush(st, b);
	st_counts_flush(st, b);
}

int st_dbmap_replay(struct store *st, const struct dbmap_change *c, uint64_t lsn)
{
	st_dbmap_set(st, c);
	for (unsigned d = 0; d < st->n_dbs; d++)
		st->dbs[d].applied = st->dbs[d].live;
	dbmap_rows(st, c, st->batch);
	int ret = idx_write(st->idx, st->batch, lsn);
	idx_batch_clear(st->batch);
	for (uint32_t i = 0; ret == 0 && i < c->n_retired; i++)
		st_hint_garbage(st, lsn, NULL, 0, c->retired[i]);
	return ret;
}

void st_dbmap_written(struct store *st, struct pending_write *pw)
{
	st_apply_batch(st); /* every record before it, first */
	dbmap_rows(st, pw->dbmap, st->batch);
	int ret = idx_write(st->idx, st->batch, pw->w.pos.lsn);
	idx_batch_clear(st->batch);
	if (ret < 0 && st->failed == 0) {
		st->failed = -EIO;
		LOG_ERROR("shard %u: the database map could not be written to the index: writes are"
		          " refused from now on; restart to replay the log",
		          st->cfg.shard);
		return;
	}
	st->batch_lsn = pw->w.pos.lsn;
	for (uint32_t i = 0; i < pw->dbmap->n_retired; i++)
		st_hint_garbage(st, pw->w.pos.lsn, NULL, 0, pw->dbmap->retired[i]);
	idx_request_flush(st->idx); /* the hints wait for it; -EBUSY: GC's tick asks again */
}

/* Appends the DBMAP record of `ids` (malloc'd; taken) and makes it the map.
 * req->done runs as for a write. */
static void dbmap_change(struct store *st, uint32_t *ids, struct store_req *req)
{
	st_resolve_blind(st); /* its corrections go to the ids they were made for */
	struct dbmap_change *c = change_new(st, ids, st->n_dbs, st->next_id);
	size_t size = fmt_dbmap_size(st->n_dbs);
	uint8_t *value = c != NULL ? malloc(size) : NULL;
	if (value == NULL) {
		st_dbmap_free(c);
		st_req_complete(st, req, -ENOMEM, NULL);
		return;
	}
	fmt_encode_dbmap(value, c->ids, c->n, c->next_id);
	struct fmt_record rec = {.type = FMT_DBMAP, .value = value, .value_len = (uint32_t)size};
	struct pending_write *pw = st_append(st, req, &rec);
	free(value);
	if (pw == NULL) {
		st_dbmap_free(c);
		return;
	}
	pw->dbmap = c;
	st_dbmap_set(st, c);
	st_pw_ack(st, pw, req);
}

/* Clears the store's fields of req as store_submit does; false (completed)
 * when the store is stopped. */
static bool db_req_begin(struct store *st, struct store_req *req)
{
	req->store = st;
	req->result = NULL;
	req->result_ref = NULL;
	req->waits = NULL;
	req->more_entries = NULL;
	st->inflight_reqs++;
	if (st->stopped) {
		st_req_complete(st, req, -ESHUTDOWN, NULL);
		return false;
	}
	return true;
}

void store_flush(struct store *st, int db, struct store_req *req)
{
	if (!db_req_begin(st, req))
		return;
	if (db >= (int)st->cfg.databases) {
		st_req_complete(st, req, -EINVAL, NULL);
		return;
	}
	uint32_t *ids = map_ids(st);
	if (ids == NULL) {
		st_req_complete(st, req, -ENOMEM, NULL);
		return;
	}
	if (st->watch != NULL)
		st->watch->touch_db(st->watch->arg, db, -1);
	uint32_t next = st->next_id;
	for (unsigned d = 0; d < st->cfg.databases; d++)
		if (db < 0 || (unsigned)db == d)
			ids[d] = next++;
	st->next_id = next;
	dbmap_change(st, ids, req);
}

void store_swap_db(struct store *st, unsigned db, unsigned db2, struct store_req *req)
{
	if (!db_req_begin(st, req))
		return;
	if (db >= st->cfg.databases || db2 >= st->cfg.databases) {
		st_req_complete(st, req, -EINVAL, NULL);
		return;
	}
	uint32_t *ids = map_ids(st);
	if (ids == NULL) {
		st_req_complete(st, req, -ENOMEM, NULL);
		return;
	}
	if (st->watch != NULL)
		st->watch->touch_db(st->watch->arg, (int)db, (int)db2);
	uint32_t t = ids[db];
	ids[db] = ids[db2];
	ids[db2] = t;
	dbmap_change(st, ids, req);
}

/* ---- compaction hints --------------------------------------------------- */

void st_hint_garbage(struct store *st, uint64_t lsn, const uint8_t *prefix, size_t len,
                     uint32_t db)
{
	if (st->n_hints == GARBAGE_HINTS_MAX)
		return; /* the space still comes back, with RocksDB's own compactions */
	struct garbage_hint *h = &st->hints[st->n_hints];
	*h = (struct garbage_hint){.lsn = lsn, .db = db, .len = len};
	if (prefix != NULL) {
		h->prefix = malloc(len);
		if (h->prefix == NULL)
			return;
		memcpy(h->prefix, prefix, len);
	}
	st->n_hints++;
}

void st_coll_garbage(struct store *st, uint64_t lsn, const uint8_t *key, size_t key_len,
                     uint64_t version, uint64_t count)
{
	if (count >= GARBAGE_HINT_ELEMS) {
		size_t klen = key_len - FMT_KEY_IDENT_HEAD;
		fmt_elem_ident(st->ident, st_ident_db(key), key + FMT_KEY_IDENT_HEAD, klen, version,
		               NULL, 0);
		st_hint_garbage(st, lsn, st->ident, fmt_elem_prefix_len(klen), 0);
		return;
	}
	st->garbage_elems += count;
	if (st->garbage_elems < GARBAGE_BATCH_ELEMS ||
	    st->garbage_elems * 4 < idx_estimate_rows(st->idx))
		return;
	static const uint8_t elems[1] = {FMT_IDENT_ELEM};
	st_hint_garbage(st, lsn, elems, sizeof(elems), 0);
	st->garbage_elems = 0;
}

void st_coll_deletes(struct store *st, struct kentry *ke, uint64_t lsn, uint32_t n)
{
	ke->dead = ke->dead + n < ke->dead ? UINT32_MAX : ke->dead + n;
	if (ke->dead < DEAD_COMPACT_MIN || ke->dead < ke->count)
		return;
	size_t klen = ke->key_len - FMT_KEY_IDENT_HEAD;
	fmt_elem_ident(st->ident, st_ident_db(ke->key), ke->key + FMT_KEY_IDENT_HEAD, klen,
	               ke->version, NULL, 0);
	st_hint_garbage(st, lsn, st->ident, fmt_elem_prefix_len(klen), 0);
	ke->dead = 0;
}

void st_hints_run(struct store *st)
{
	if (st->n_hints == 0)
		return;
	uint64_t persisted = idx_persisted_lsn(st->idx);
	unsigned kept = 0;
	bool waiting = false;
	for (unsigned i = 0; i < st->n_hints; i++) {
		struct garbage_hint *h = &st->hints[i];
		if (h->lsn > persisted) {
			st->hints[kept++] = *h;
			waiting = true;
			continue;
		}
		if (h->prefix != NULL)
			idx_compact_hint(st->idx, h->prefix, h->len);
		else
			idx_compact_hint_db(st->idx, h->db);
		free(h->prefix);
	}
	st->n_hints = kept;
	if (waiting && idx_applied_lsn(st->idx) >= st->hints[0].lsn)
		idx_request_flush(st->idx); /* -EBUSY / -EALREADY: asked again next tick */
}
