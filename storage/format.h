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
 *   4       1     type: FMT_PUT, FMT_DELETE, FMT_PAD, or FMT_DROP (every key
 *                 of the shard is deleted: FLUSHALL; key and value empty)
 *   5       1     flags, zero
 *   6       2     magic 0x4B52 ("RK")
 *   8       8     LSN: log sequence number, +1 per PUT/DELETE within a shard
 *                 (PAD carries the LSN of the commit's last record)
 *   16      8     expiry: absolute Unix time in ms, 0 = none
 *   24      4     key length (PUT, DELETE; 0 for PAD), at most FMT_KEY_MAX
 *   28      4     value length (PUT; 0 for DELETE; for PAD the number of
 *                 padding bytes that follow the header: a multiple of 8 below
 *                 4096; they are zero and not covered by the CRC)
 *   32      k     key
 *   32+k    v     value
 *   32+k+v  0..7  zero padding to the next multiple of 8
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

#define FMT_VERSION 1
#define FMT_BLOCK 4096u          /* O_DIRECT alignment and commit granularity */
#define FMT_SEG_HEADER_SIZE 4096u /* the segment header occupies block 0 */
#define FMT_RECORD_HEADER 32u
#define FMT_RECORD_MAGIC 0x4B52u
#define FMT_KEY_MAX (64u * 1024u)          /* longest key, bytes */
#define FMT_VALUE_MAX (512u * 1024u * 1024u) /* longest value, bytes (Redis's bulk limit) */

enum fmt_type {
	FMT_PUT = 1,
	FMT_DELETE = 2,
	FMT_PAD = 3,
	FMT_DROP = 4,
};

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
	uint64_t lsn;
	uint64_t expiry_ms;  /* 0 = none */
	uint32_t key_len;
	uint32_t value_len;  /* for PAD: padding bytes after the header */
	const uint8_t *key;
	const uint8_t *value;
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

/* Writes a PUT, DELETE or DROP record at `dst` (which has fmt_record_size() bytes,
 * alignment padding included) and returns its size. */
uint64_t fmt_encode_record(uint8_t *dst, uint32_t epoch32, const struct fmt_record *rec);

/* Writes the PAD record that ends a commit at `dst`, where `used` bytes of
 * the commit are already filled; the PAD runs to the next 4 KiB boundary
 * (one block further when fewer than FMT_RECORD_HEADER bytes remain).
 * Returns the commit's total size, a multiple of FMT_BLOCK. */
uint64_t fmt_encode_pad(uint8_t *commit_start, uint64_t used, uint32_t epoch32, uint64_t lsn);

/* Decodes the record at `src` of which `avail` bytes are readable.  Returns
 * FMT_OK and fills `rec`, or why not.  Never reads past src + avail.  Fields
 * are checked before the size, so after FMT_SHORT the header's lengths are
 * within FMT_KEY_MAX / FMT_VALUE_MAX and a caller may fetch that many bytes
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

/* Writes the name of segment `id`'s file, its id in 16 hex digits and ".seg",
 * followed by `suffix` ("" for the segment itself), into buf: as "dir/name"
 * when dir is not NULL, else the bare name (for the *at() calls). */
void fmt_segment_name(char *buf, size_t len, const char *dir, uint64_t id, const char *suffix);

#endif
