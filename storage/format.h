/* format: ringkv's on-disk log format — the segment files of a shard's log
 * and the records in them.  The other files of a data directory are defined
 * next to the code that writes them: the index's RocksDB rows in index.h,
 * DIR/LAYOUT in layout.h, the spare segment in log.h, the offline import's
 * files in bulk.h (its journal's lines: bulk.c, write_journal).
 *
 * Layout of a data directory (DIR = storage.dir):
 *
 *   DIR/LAYOUT                    the shard count (layout.h)
 *   DIR/shard-NNN/LOCK            flock()ed by the process that has the shard open:
 *                                 the server's store_open, or an offline import
 *                                 (layout_lock_shard)
 *   DIR/shard-NNN/log/SSSSSSSSSSSSSSSS.seg
 *                                 segment files, id in 16 hex digits (fmt_segment_name)
 *   DIR/shard-NNN/log/spare.tmp, spare.ready
 *                                 the next segment's file, while prepared / once
 *                                 ready (log.h)
 *   DIR/shard-NNN/index/          the shard's RocksDB (index.h: key -> record pointer)
 *   DIR/IMPORT-COMMIT, DIR/shard-NNN/import.sst,
 *   DIR/shard-NNN/log/SSSSSSSSSSSSSSSS.seg.import
 *                                 an offline import under way (bulk.h)
 *
 * All integers are little-endian.  Sizes and offsets are bytes.
 *
 * Segment file (preallocated to storage.segment_size, a multiple of 4096):
 *
 *   offset  size  field
 *   0       8     magic "RKVSEG01"
 *   8       4     format version (FMT_VERSION); recovery refuses any other
 *   12      4     shard number
 *   16      8     segment id (increasing within a shard; also the file name)
 *   24      8     epoch: 64 random bits drawn when the file is created
 *   32      8     LSN of the first record the segment may hold
 *   40      8     segment size in bytes
 *   48      4     CRC32C of bytes 0..47
 *   52      4044  zero
 *   4096          commits, back to back, each starting on a 4 KiB boundary
 *
 * Commit: the records of one group commit followed by exactly one PAD record
 * that ends on a 4 KiB boundary.  A commit is written with one O_DIRECT write
 * and is never rewritten.  Recovery applies a commit's records only once its
 * PAD is read and valid: a torn commit is dropped whole.
 *
 * Record (8-byte aligned; next record at offset + fmt_record_size()):
 *
 *   offset  size  field
 *   0       4     CRC32C of bytes 4..31, key and value, seeded with the low 32
 *                 bits of the segment's epoch (a stale record left in a reused
 *                 file cannot validate in a new one); for PAD: of bytes 4..31
 *                 only, seeded the same way
 *   4       1     type: FMT_PUT, FMT_DELETE, FMT_PAD, FMT_DBMAP (the
 *                 shard's map of databases to stored ids: key empty, value
 *                 below) or FMT_COMMIT (a transaction committed: key empty,
 *                 value its 8-byte id, little-endian)
 *   5       1     flags: for a PUT of a key ident, the value's type
 *                 (FMT_TYPE_*) in bits 0..6; bit 7 (FMT_FLAG_TXN, PUT and
 *                 DELETE) marks a record of a transaction; zero otherwise
 *   6       2     magic 0x4B52 ("RK")
 *   8       8     LSN: log sequence number, +1 per record but PAD within a
 *                 shard (PAD carries the LSN of the commit's last record)
 *   16      8     expiry: absolute Unix time in ms, 0 = none (key idents only)
 *   24      4     key length: the ident (below; PUT, DELETE), at most
 *                 FMT_IDENT_MAX, plus 8 with FMT_FLAG_TXN; 0 for PAD, DBMAP
 *                 and COMMIT
 *   28      4     value length (PUT, DBMAP; 0 for DELETE; for PAD the number of
 *                 padding bytes that follow the header: a multiple of 8 below
 *                 4096; they are zero and not covered by the CRC)
 *   32      k     key: the ident, then with FMT_FLAG_TXN the transaction's
 *                 id (8 bytes, little-endian; never 0)
 *   32+k    v     value
 *   32+k+v  0..7  zero padding to the next multiple of 8
 *
 * Record key: the ident of the row the record writes (all integers in an
 * ident are big-endian, so idents of one kind sort as their rows do):
 *
 *   key ident (a key of a database: its string value, or a collection's
 *   metadata)
 *     offset  size  field
 *     0       1     'k'
 *     1       4     the database's stored id (DBMAP below)
 *     5       n     user key, n <= FMT_KEY_MAX
 *
 *   element ident (one element of a collection: a hash field, a set member)
 *     offset  size  field
 *     0       1     'e'
 *     1       4     the database's stored id
 *     5       4     n, the user key's length
 *     9       n     user key
 *     9+n     8     version of the collection (FMT_COLL_META's version)
 *     17+n    4     CRC32C of the element: a collection's elements sort by it,
 *                   so an HSCAN/SSCAN cursor is a hash
 *     21+n    m     element, m <= FMT_ELEM_MAX
 *
 * Record value:
 *   PUT of a key ident, flags FMT_TYPE_STRING: the string.
 *   PUT of a key ident, flags FMT_TYPE_HASH or FMT_TYPE_SET: the collection's
 *     metadata, FMT_COLL_META_SIZE bytes:
 *       0  8  version: a number never used before by this shard for a
 *             collection (the LSN of the record that created it, or above);
 *             its elements' idents carry it, so a key deleted, expired or
 *             overwritten leaves elements that no key points to
 *       8  8  element count
 *       16 1  encoding flags (FMT_ENC_*)
 *   PUT of an element ident: the element's value (a hash field's value;
 *     empty for a set member).  DELETE: empty.
 *   DBMAP: 4 n, 4 next_id, then n x 4 stored ids (little-endian): database
 *     i of the shard is stored under id ids[i]; next_id is above every id
 *     ever used.  FLUSHDB gives a database a new id, FLUSHALL every one,
 *     SWAPDB exchanges two: rows under an id no database has any more are
 *     garbage (index.h).
 *
 * The records of one command (a collection's metadata and the elements it
 * changes; log.h: log_reserve) are written in one commit, metadata first, so
 * recovery applies all of them or none.
 *
 * Transactions (EXEC, a script, a multi-key command; several commands, maybe
 * on several shards): each of their PUT and DELETE records carries the
 * transaction's id (FMT_FLAG_TXN), and once all of them are written (on
 * every shard) a COMMIT record with that id is written in the log of each
 * shard that has some.  Recovery first reads the COMMIT records of every
 * shard's log from where its replay starts, then replays each log skipping
 * the records of transactions no log committed: a transaction is there whole
 * or not at all (store.h, "transactions", says why a COMMIT that matters is
 * always in the part of some log that recovery reads).
 *
 * Invariants: within a shard, LSNs increase by one from record to record
 * across commits and segments; a segment's first record has the LSN in its
 * header; a PAD never precedes a record of the same commit.
 */
#ifndef RINGKV_FORMAT_H
#define RINGKV_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FMT_VERSION                                                                                \
	3                      /* 3: transactions (FMT_FLAG_TXN, FMT_COMMIT); 2: idents, types,    \
	                          collections, databases; 1 read user keys */
#define FMT_VERSION_READ_MIN 2 /* oldest version read: 2 differs only by what 3 adds */
#define FMT_BLOCK 4096u          /* O_DIRECT alignment and commit granularity */
#define FMT_SEG_HEADER_SIZE 4096u /* the segment header occupies block 0 */
#define FMT_RECORD_HEADER 32u
#define FMT_RECORD_MAGIC 0x4B52u
#define FMT_KEY_MAX (64u * 1024u)          /* longest user key, bytes */
#define FMT_ELEM_MAX (64u * 1024u)         /* longest element (field, member), bytes */
#define FMT_KEY_IDENT_HEAD 5u              /* a key ident's bytes before the user key */
#define FMT_ELEM_IDENT_HEAD 21u            /* an element ident's bytes but key and element */
#define FMT_IDENT_MAX (FMT_ELEM_IDENT_HEAD + FMT_KEY_MAX + FMT_ELEM_MAX) /* longest ident */
#define FMT_IDENT_KEY 'k'
#define FMT_IDENT_ELEM 'e'
#define FMT_COLL_META_SIZE 17u             /* value of a collection's metadata record */
#define FMT_DB_MAX 65536u                  /* databases a shard maps at most */
#define FMT_VALUE_MAX (512u * 1024u * 1024u) /* longest value, bytes (Redis's bulk limit) */

enum fmt_type {
	FMT_PUT = 1,
	FMT_DELETE = 2,
	FMT_PAD = 3,
	FMT_DBMAP = 5,  /* (4 was format 1's DROP) */
	FMT_COMMIT = 6, /* a transaction's records are all written (format 3) */
};

#define FMT_FLAG_TXN  0x80u /* flags: the record belongs to a transaction (rec.txid) */
#define FMT_TXID_SIZE 8u    /* its id, after the ident */

/* The type of a key's value: a PUT record's flags, and the index entry's. */
enum fmt_value_type {
	FMT_TYPE_STRING = 0,
	FMT_TYPE_HASH = 1,
	FMT_TYPE_SET = 2,
};
#define FMT_TYPE_MAX FMT_TYPE_SET

/* Encoding flags of a collection (its metadata): Redis's one-way conversions
 * from a compact encoding, kept so OBJECT ENCODING answers as Redis does. */
#define FMT_ENC_BIG 0x1 /* hash: past listpack limits ("hashtable"); set: past intset
			   limits ("hashtable") */

struct fmt_segment_header {
	uint32_t version;    /* FMT_VERSION */
	uint32_t shard;
	uint64_t id;
	uint64_t epoch;
	uint64_t first_lsn;
	uint64_t size;
};

/* A decoded record.  key and value point into the buffer it was decoded from
 * (NULL for a PAD, whose padding is not read). */
struct fmt_record {
	enum fmt_type type;
	uint8_t flags; /* PUT of a key ident: enum fmt_value_type; else 0 (never
	                  FMT_FLAG_TXN: txid says it) */
	uint64_t lsn;
	uint64_t expiry_ms;  /* 0 = none */
	uint32_t key_len;
	uint32_t value_len;  /* for PAD: padding bytes after the header */
	const uint8_t *key;
	const uint8_t *value;
	uint64_t txid; /* PUT, DELETE: the transaction it belongs to, 0 = none;
	                  COMMIT: the transaction committed */
};

enum fmt_status {
	FMT_OK = 0,
	FMT_SHORT = 1,    /* the buffer ends before the record does */
	FMT_BAD_MAGIC = 2, /* not a record header (zeroes, garbage, a torn block) */
	FMT_BAD_CRC = 3,
	FMT_BAD_FIELD = 4, /* impossible type, flags or length */
};

/* Bytes a record with these lengths occupies (header + key + value, rounded
 * up to 8).  For PAD use key_len = 0, value_len = padding. */
static inline uint64_t fmt_record_size(uint32_t key_len, uint32_t value_len)
{
	return ((uint64_t)FMT_RECORD_HEADER + key_len + value_len + 7) & ~(uint64_t)7;
}

/* Bytes the record occupies on disk: fmt_record_size() of its key (with the
 * transaction id a PUT or DELETE of a transaction carries) and value. */
static inline uint64_t fmt_rec_size(const struct fmt_record *rec)
{
	if (rec->type == FMT_COMMIT)
		return fmt_record_size(0, FMT_TXID_SIZE);
	return fmt_record_size(rec->key_len + (rec->txid != 0 ? FMT_TXID_SIZE : 0), rec->value_len);
}

/* Writes a PUT, DELETE, DBMAP or COMMIT record at `dst` (which has
 * fmt_rec_size() bytes, alignment padding included) and returns its size.
 * A COMMIT's value is its txid (key and value ignored). */
uint64_t fmt_encode_record(uint8_t *dst, uint32_t epoch32, const struct fmt_record *rec);

/* Writes the PAD record that ends a commit at `dst`, where `used` bytes of
 * the commit are already filled; the PAD runs to the next 4 KiB boundary
 * (one block further when fewer than FMT_RECORD_HEADER bytes remain).
 * Returns the commit's total size, a multiple of FMT_BLOCK. */
uint64_t fmt_encode_pad(uint8_t *commit_start, uint64_t used, uint32_t epoch32, uint64_t lsn);

/* Decodes the record at `src` of which `avail` bytes are readable.  Returns
 * FMT_OK and fills `rec`, or why not: a transaction's id is taken off the end
 * of the key (rec.key_len is the ident's; fmt_rec_size() gives the size back),
 * and a COMMIT's id is rec.txid.  Never reads past src + avail.  Fields
 * are checked before the size, so after FMT_SHORT the header's lengths are
 * within FMT_IDENT_MAX / FMT_VALUE_MAX and a caller may fetch that many bytes
 * and decode again (recovery relies on this order). */
enum fmt_status fmt_decode_record(const uint8_t *src, uint64_t avail, uint32_t epoch32,
				  struct fmt_record *rec);

/* Encodes / decodes the segment header block (FMT_SEG_HEADER_SIZE bytes).
 * Decode returns FMT_OK, FMT_BAD_MAGIC (not a segment), FMT_BAD_CRC, or
 * FMT_BAD_FIELD (a valid header of a version this build does not know —
 * refuse the directory — or with an impossible segment size).  The checks run
 * magic, CRC, then fields, so corruption is never mistaken for a version. */
void fmt_encode_segment_header(uint8_t *block, const struct fmt_segment_header *h);
enum fmt_status fmt_decode_segment_header(const uint8_t *block, struct fmt_segment_header *h);

const char *fmt_status_str(enum fmt_status s);

/* ---- idents ------------------------------------------------------------ */

/* An ident taken apart (pointers into it). */
struct fmt_ident {
	uint8_t kind;         /* FMT_IDENT_KEY or FMT_IDENT_ELEM */
	uint32_t db;          /* stored database id */
	const uint8_t *key;   /* user key */
	uint32_t key_len;
	uint64_t version;     /* element: the collection's version */
	uint32_t elem_hash;   /* element: CRC32C of the element */
	const uint8_t *elem;  /* element */
	uint32_t elem_len;
};

/* Writes the key ident of (db, key) at dst (FMT_KEY_IDENT_HEAD + key_len
 * bytes) and returns its length. */
size_t fmt_key_ident(uint8_t *dst, uint32_t db, const void *key, size_t key_len);

/* Writes the element ident at dst (FMT_ELEM_IDENT_HEAD + key_len + elem_len
 * bytes) and returns its length. */
size_t fmt_elem_ident(uint8_t *dst, uint32_t db, const void *key, size_t key_len,
		      uint64_t version, const void *elem, size_t elem_len);

/* Length of the prefix every element ident of (key, version) starts with:
 * fmt_elem_ident's bytes up to the version included (17 + key_len). */
static inline size_t fmt_elem_prefix_len(size_t key_len)
{
	return FMT_ELEM_IDENT_HEAD - 4 + key_len;
}

/* Takes an ident apart.  Returns false if it is not a well-formed ident. */
bool fmt_ident_parse(const uint8_t *ident, size_t len, struct fmt_ident *out);

/* Big-endian helpers shared with the index's row keys. */
static inline void fmt_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline uint32_t fmt_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void fmt_put_be64(uint8_t *p, uint64_t v)
{
	fmt_put_be32(p, (uint32_t)(v >> 32));
	fmt_put_be32(p + 4, (uint32_t)v);
}
static inline uint64_t fmt_get_be64(const uint8_t *p)
{
	return (uint64_t)fmt_get_be32(p) << 32 | fmt_get_be32(p + 4);
}

/* A collection's metadata (the value of its key ident's PUT record). */
struct fmt_coll_meta {
	uint64_t version;
	uint64_t count;
	uint8_t enc; /* FMT_ENC_* */
};
void fmt_encode_coll_meta(uint8_t dst[FMT_COLL_META_SIZE], const struct fmt_coll_meta *m);
bool fmt_decode_coll_meta(const uint8_t *src, size_t len, struct fmt_coll_meta *m);

/* A DBMAP record's value: its size for n databases, and its codec.  decode
 * returns false if the bytes are malformed (n is at most FMT_DB_MAX, every
 * id below next_id). */
static inline size_t fmt_dbmap_size(uint32_t n)
{
	return 8 + 4 * (size_t)n;
}
void fmt_encode_dbmap(uint8_t *dst, const uint32_t *ids, uint32_t n, uint32_t next_id);
bool fmt_decode_dbmap(const uint8_t *src, size_t len, uint32_t *ids, uint32_t cap, uint32_t *n,
		      uint32_t *next_id);
/* Writes the name of segment `id`'s file, its id in 16 hex digits and ".seg",
 * followed by `suffix` ("" for the segment itself), into buf: as "dir/name"
 * when dir is not NULL, else the bare name (for the *at() calls). */
void fmt_segment_name(char *buf, size_t len, const char *dir, uint64_t id, const char *suffix);

#endif
