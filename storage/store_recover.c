/* store_recover: replay of the log into the index when the store opens
 * (store_int.h).  The index holds every record up to its applied_lsn; the
 * records after it are read back from the log, in batches of REPLAY_BATCH,
 * and written to the index as the request path would have written them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "storage/store_int.h"

/* A row met by the replay (by its ident): for a key, its state before its
 * first record (read from the index in one MultiGet for a batch's new keys),
 * then as the records leave it.  Once a batch is written the index holds that
 * state too, so a key is read once per replay (while at most REPLAY_KEYS_MAX
 * are remembered).  An element needs no state: its rows are written as the
 * records say, and it counts nowhere. */
struct replay_key {
	struct replay_key *next;
	bool unread; /* its state before the batch is still to be read */
	bool exists, is_inline; /* is_inline: no log pointer (collections too) */
	uint64_t segment, expiry_ms;
	uint32_t length;
	uint32_t key_len;
	uint8_t key[];
};

/* A replayed record, kept until its batch is written. */
struct replay_rec {
	struct replay_key *k;
	uint8_t type;
	uint8_t flags;  /* a key's PUT: its value type */
	uint32_t value_len;
	uint64_t lsn, expiry_ms;
	struct log_pos pos;
	uint8_t *value; /* a copy of an inline value (an element's, a collection's
	                   metadata, a short string), else NULL */
};

/* Recovery writes the replayed records in batches of REPLAY_BATCH, the
 * previous entries of their new keys read in one MultiGet: one RocksDB read
 * and write per record (each write with its applied_lsn, key count and
 * segment rows) made a replay cost about 11 µs a record, 22 s for 2 M
 * records. */
struct replay {
	struct replay_key *buckets[REPLAY_BUCKETS];
	size_t n_keys;
	struct replay_rec recs[REPLAY_BATCH];
	struct idx_probe probes[REPLAY_BATCH]; /* each key points into its replay_key */
	size_t n;                              /* records in the batch */
};

/* Drops the batch's records, and the keys too when `keys` (only once the
 * index holds what they say, or on failure). */
static void replay_forget(struct replay *rp, bool keys)
{
	for (size_t i = 0; i < rp->n; i++)
		free(rp->recs[i].value);
	rp->n = 0;
	if (!keys)
		return;
	rp->n_keys = 0;
	for (size_t i = 0; i < REPLAY_BUCKETS; i++)
		while (rp->buckets[i] != NULL) {
			struct replay_key *k = rp->buckets[i];
			rp->buckets[i] = k->next;
			free(k);
		}
}

/* The batch's entry for `key`, created unread. */
static struct replay_key *replay_key_get(struct replay *rp, const uint8_t *key, size_t len,
                                         bool is_elem)
{
	struct replay_key **pp = &rp->buckets[st_hash_key(key, len) & (REPLAY_BUCKETS - 1)];
	for (; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->key_len == len && memcmp((*pp)->key, key, len) == 0)
			return *pp;
	struct replay_key *k = malloc(sizeof(*k) + len);
	if (k == NULL)
		return NULL;
	*k = (struct replay_key){.unread = !is_elem, .key_len = (uint32_t)len};
	memcpy(k->key, key, len);
	*pp = k;
	rp->n_keys++;
	return k;
}

/* Applies one record of the batch to st->batch, the key count and the live
 * bytes, reading and updating its key's state. */
static void replay_apply(struct store *st, const struct replay_rec *r)
{
	struct replay_key *k = r->k;
	if (k->key[0] == FMT_IDENT_ELEM) {
		struct idx_entry e = {.is_inline = true, .value = r->value, .value_len = r->value_len};
		if (r->type == FMT_PUT)
			idx_batch_put(st->batch, k->key, k->key_len, &e, 0);
		else
			idx_batch_delete(st->batch, k->key, k->key_len, 0);
		return;
	}
	uint32_t db = st_ident_db(k->key);
	bool existed = k->exists;
	uint64_t old_expiry = existed ? k->expiry_ms : 0;
	if (existed && !k->is_inline)
		st_usage_add(st, k->segment, db, -(int64_t)k->length);
	struct count_delta d;
	if (r->type == FMT_PUT) {
		struct idx_entry e = {.type = r->flags,
		                      .expiry_ms = r->expiry_ms,
		                      .lsn = r->lsn,
		                      .value_len = r->value_len,
		                      .is_inline = r->value_len <= st->cfg.inline_max,
		                      .value = r->value,
		                      .segment = r->pos.segment,
		                      .offset = r->pos.offset,
		                      .length = r->pos.length};
		struct fmt_coll_meta m;
		if (r->flags != FMT_TYPE_STRING) {
			/* (checked when the record was added: replay_record) */
			fmt_decode_coll_meta(r->value, r->value_len, &m);
			e = (struct idx_entry){.type = r->flags,
			                       .expiry_ms = r->expiry_ms,
			                       .lsn = r->lsn,
			                       .is_inline = true,
			                       .version = m.version,
			                       .count = m.count,
			                       .enc = m.enc};
		}
		idx_batch_put(st->batch, k->key, k->key_len, &e, old_expiry);
		if (!e.is_inline)
			st_usage_add(st, r->pos.segment, db, r->pos.length);
		d = st_count_delta(existed, old_expiry, true, r->expiry_ms);
		k->exists = true;
		k->is_inline = e.is_inline;
		k->segment = r->pos.segment;
		k->length = r->pos.length;
		k->expiry_ms = r->expiry_ms;
	} else if (existed) {
		idx_batch_delete(st->batch, k->key, k->key_len, old_expiry);
		d = st_count_delta(true, old_expiry, false, 0);
		k->exists = false;
	} else {
		return;
	}
	st_count_live(st, db, &d);
}

/* Reads the batch's keys from the index, applies its records in order and
 * writes them, with applied_lsn at the last. */
static int replay_write(struct store *st)
{
	struct replay *rp = st->replay;
	if (rp->n == 0)
		return 0;
	size_t n_probes = 0;
	for (size_t i = 0; i < rp->n; i++) {
		struct replay_key *k = rp->recs[i].k;
		if (k->unread) {
			k->unread = false;
			rp->probes[n_probes++] =
			    (struct idx_probe){.key = k->key, .klen = k->key_len};
		}
	}
	int ret = idx_get_many(st->idx, rp->probes, n_probes);
	for (size_t i = 0; i < n_probes && ret == 0; i++) {
		const struct idx_probe *p = &rp->probes[i];
		struct replay_key *k =
		    container_of((const uint8_t *)p->key, struct replay_key, key);
		if (p->status == 0 && st_db_of_id(st, st_ident_db(k->key)) >= 0)
			*k = (struct replay_key){.next = k->next,
			                         .exists = true,
			                         .is_inline = p->e.is_inline,
			                         .segment = p->e.segment,
			                         .length = p->e.length,
			                         .expiry_ms = p->e.expiry_ms,
			                         .key_len = k->key_len};
	}
	if (ret == 0) {
		for (size_t i = 0; i < rp->n; i++)
			replay_apply(st, &rp->recs[i]);
		for (unsigned d = 0; d < st->n_dbs; d++) {
			st->dbs[d].dirty |= memcmp(&st->dbs[d].applied, &st->dbs[d].live,
			                           sizeof(st->dbs[d].live)) != 0;
			st->dbs[d].applied = st->dbs[d].live;
		}
		st_usage_flush(st, st->batch);
		st_counts_flush(st, st->batch);
		ret = idx_write(st->idx, st->batch, rp->recs[rp->n - 1].lsn);
	}
	idx_batch_clear(st->batch);
	replay_forget(rp, ret < 0 || rp->n_keys >= REPLAY_KEYS_MAX);
	return ret;
}

/* Recovery: adds one replayed record to the batch (replay_write). */
static int replay_record(void *arg, const struct fmt_record *rec, const struct log_pos *pos)
{
	struct store *st = arg;
	struct replay *rp = st->replay;
	st->stats.records_replayed++;
	if (rec->type == FMT_COMMIT)
		return 0; /* (gathered before the replay: store_scan_commits) */
	if (rec->txid != 0 && !store_txids_has(st->committed, rec->txid)) {
		st->stats.txn_records_dropped++; /* a transaction that never committed */
		return 0;
	}
	if (rec->type == FMT_DBMAP) {
		int ret = replay_write(st); /* everything before the map first */
		if (ret < 0)
			return ret;
		struct dbmap_change *c = st_dbmap_parse(st, rec->value, rec->value_len);
		if (c == NULL)
			return -ENOMEM; /* (the log checked its form: fmt_decode_record) */
		ret = st_dbmap_replay(st, c, rec->lsn);
		st_dbmap_free(c);
		return ret;
	}
	struct fmt_ident id;
	struct fmt_coll_meta m;
	if (!fmt_ident_parse(rec->key, rec->key_len, &id) ||
	    (id.kind == FMT_IDENT_ELEM && rec->flags != 0) ||
	    (rec->type == FMT_PUT && rec->flags != FMT_TYPE_STRING &&
	     !fmt_decode_coll_meta(rec->value, rec->value_len, &m))) {
		/* A record with a valid CRC that no ringkv writes: refuse rather
		 * than guess (the log is damaged in a way its checks miss). */
		return -EBADMSG;
	}
	bool is_elem = id.kind == FMT_IDENT_ELEM;
	struct replay_key *k = replay_key_get(rp, rec->key, rec->key_len, is_elem);
	if (k == NULL)
		return -ENOMEM;
	struct replay_rec *r = &rp->recs[rp->n];
	*r = (struct replay_rec){.k = k,
	                         .type = (uint8_t)rec->type,
	                         .flags = rec->flags,
	                         .value_len = rec->value_len,
	                         .lsn = rec->lsn,
	                         .expiry_ms = rec->expiry_ms,
	                         .pos = *pos};
	bool inline_value = is_elem || rec->flags != FMT_TYPE_STRING ||
	                    rec->value_len <= st->cfg.inline_max;
	if (rec->type == FMT_PUT && inline_value) {
		r->value = malloc(rec->value_len ? rec->value_len : 1);
		if (r->value == NULL)
			return -ENOMEM;
		memcpy(r->value, rec->value, rec->value_len);
	}
	if (++rp->n >= REPLAY_BATCH)
		return replay_write(st);
	return 0;
}

int st_replay_log(struct store *st, const struct log_config *lc, char *err, size_t errlen)
{
	st->replay = calloc(1, sizeof(*st->replay));
	if (st->replay == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int ret = log_open(&st->log, st->px, lc, idx_applied_lsn(st->idx) + 1, replay_record, st,
	                   err, errlen);
	if (ret == -EBADMSG)
		snprintf(err, errlen,
		         "the log of %s holds a record this ringkv cannot apply (a key or element"
		         " ident it does not know): restore the data directory from a backup",
		         st->dir);
	else if (ret == 0 && st->stats.txn_records_dropped > 0)
		LOG_INFO("shard %u: %llu records of transactions that never committed left out"
		         " (the server stopped before all their records were written)",
		         st->cfg.shard, (unsigned long long)st->stats.txn_records_dropped);
	if (ret == 0 && (ret = replay_write(st)) < 0)
		snprintf(err, errlen,
		         "cannot write the index of %s while replaying the log: %s"
		         " (see the log above)",
		         st->dir, strerror(-ret));
	replay_forget(st->replay, true);
	free(st->replay);
	st->replay = NULL;
	return ret;
}
