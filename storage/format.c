/* format: encoders and decoders for the on-disk layout defined in format.h.
 * Integers are stored byte by byte, so the code is the same on either host
 * byte order. */
#include "format.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "crc32c.h"

/* Segment header offsets (format.h's table). */
#define SEG_OFF_MAGIC     0
#define SEG_OFF_VERSION   8
#define SEG_OFF_SHARD     12
#define SEG_OFF_ID        16
#define SEG_OFF_EPOCH     24
#define SEG_OFF_FIRST_LSN 32
#define SEG_OFF_SIZE      40
#define SEG_OFF_CRC       48
#define SEG_MAGIC         "RKVSEG01"
#define SEG_MAGIC_LEN     8

/* Record header offsets (format.h's table). */
#define REC_OFF_CRC       0
#define REC_OFF_TYPE      4
#define REC_OFF_FLAGS     5
#define REC_OFF_MAGIC     6
#define REC_OFF_LSN       8
#define REC_OFF_EXPIRY    16
#define REC_OFF_KEY_LEN   24
#define REC_OFF_VALUE_LEN 28
#define REC_CRC_FROM      4 /* the header's CRC covers bytes 4..31 */

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* Fills bytes 4..31 of a record header; the CRC at 0..3 is written last. */
static void put_record_header(uint8_t *dst, enum fmt_type type, uint8_t flags, uint64_t lsn,
                              uint64_t expiry_ms, uint32_t key_len, uint32_t value_len)
{
	dst[REC_OFF_TYPE] = (uint8_t)type;
	dst[REC_OFF_FLAGS] = flags;
	put_le16(dst + REC_OFF_MAGIC, FMT_RECORD_MAGIC);
	put_le64(dst + REC_OFF_LSN, lsn);
	put_le64(dst + REC_OFF_EXPIRY, expiry_ms);
	put_le32(dst + REC_OFF_KEY_LEN, key_len);
	put_le32(dst + REC_OFF_VALUE_LEN, value_len);
}

/* The CRC a record at `rec` must carry: epoch-seeded, over header bytes 4..31
 * then the `body_len` bytes of key and value that follow (0 for PAD). */
static uint32_t record_crc(const uint8_t *rec, uint64_t body_len, uint32_t epoch32)
{
	return crc32c(epoch32, rec + REC_CRC_FROM, FMT_RECORD_HEADER - REC_CRC_FROM + body_len);
}

/* rec->type must be FMT_PUT, FMT_DELETE (then value_len is 0), FMT_DBMAP or
 * FMT_COMMIT; key and value may be NULL when their length is 0. */
uint64_t fmt_encode_record(uint8_t *dst, uint32_t epoch32, const struct fmt_record *rec)
{
	uint8_t id[FMT_TXID_SIZE];
	bool commit = rec->type == FMT_COMMIT, tagged = !commit && rec->txid != 0;
	uint32_t key_len = commit ? 0 : rec->key_len + (tagged ? FMT_TXID_SIZE : 0);
	uint32_t value_len = commit ? FMT_TXID_SIZE : rec->value_len;
	const uint8_t *value = commit ? id : rec->value;
	uint64_t body = (uint64_t)key_len + value_len;
	uint64_t size = fmt_record_size(key_len, value_len);

	put_le64(id, rec->txid);
	put_record_header(dst, rec->type, (uint8_t)(rec->flags | (tagged ? FMT_FLAG_TXN : 0)),
	                  rec->lsn, rec->expiry_ms, key_len, value_len);
	uint8_t *p = dst + FMT_RECORD_HEADER;
	if (!commit && rec->key_len > 0)
		memcpy(p, rec->key, rec->key_len);
	if (tagged)
		memcpy(p + rec->key_len, id, FMT_TXID_SIZE);
	if (value_len > 0)
		memcpy(p + key_len, value, value_len);
	memset(dst + FMT_RECORD_HEADER + body, 0, size - FMT_RECORD_HEADER - body);
	put_le32(dst + REC_OFF_CRC, record_crc(dst, body, epoch32));
	return size;
}

/* `used` must be a multiple of 8 and commit_start must have room up to the
 * returned size.  The commit ends at the first 4 KiB boundary that leaves the
 * PAD its full header; used == 0 gives a one-block commit holding only the PAD. */
uint64_t fmt_encode_pad(uint8_t *commit_start, uint64_t used, uint32_t epoch32, uint64_t lsn)
{
	uint64_t end = (used + FMT_RECORD_HEADER + FMT_BLOCK - 1) & ~(uint64_t)(FMT_BLOCK - 1);
	uint32_t pad_len = (uint32_t)(end - used - FMT_RECORD_HEADER); /* < FMT_BLOCK */
	uint8_t *pad = commit_start + used;

	put_record_header(pad, FMT_PAD, 0, lsn, 0, 0, pad_len);
	memset(pad + FMT_RECORD_HEADER, 0, pad_len);
	put_le32(pad + REC_OFF_CRC, record_crc(pad, 0, epoch32));
	return end;
}

/* Field checks that need no CRC: the type is known, flags are a value type
 * (PUT) or zero, lengths are within the limits of their type.  A PAD's
 * padding is shorter than one block and a multiple of 8, as fmt_encode_pad
 * makes it (it fills from an 8-aligned offset to the next boundary but one
 * at most).  The ident itself is checked by its reader (fmt_ident_parse). */
static bool record_fields_valid(uint8_t type, uint8_t flags, uint32_t key_len, uint32_t value_len)
{
	uint32_t tag = 0;
	if (flags & FMT_FLAG_TXN) {
		if (type != FMT_PUT && type != FMT_DELETE)
			return false;
		flags &= (uint8_t)~FMT_FLAG_TXN;
		tag = FMT_TXID_SIZE;
	}
	if (flags != 0 && (type != FMT_PUT || flags > FMT_TYPE_MAX))
		return false;
	switch (type) {
	case FMT_PUT:
		return key_len > tag && key_len - tag <= FMT_IDENT_MAX &&
		       value_len <= FMT_VALUE_MAX;
	case FMT_DELETE:
		return key_len > tag && key_len - tag <= FMT_IDENT_MAX && value_len == 0;
	case FMT_COMMIT:
		return key_len == 0 && value_len == FMT_TXID_SIZE;
	case FMT_PAD:
		return key_len == 0 && value_len < FMT_BLOCK && value_len % 8 == 0;
	case FMT_DBMAP:
		return key_len == 0 && value_len >= 8 && value_len <= fmt_dbmap_size(FMT_DB_MAX) &&
		       value_len % 4 == 0;
	default:
		return false;
	}
}

/* For PAD, only the 32-byte header must be within `avail` (the padding is not
 * read) and rec->key / rec->value are NULL. */
enum fmt_status fmt_decode_record(const uint8_t *src, uint64_t avail, uint32_t epoch32,
                                  struct fmt_record *rec)
{
	if (avail < FMT_RECORD_HEADER)
		return FMT_SHORT;
	if (get_le16(src + REC_OFF_MAGIC) != FMT_RECORD_MAGIC)
		return FMT_BAD_MAGIC;

	uint8_t type = src[REC_OFF_TYPE];
	uint32_t key_len = get_le32(src + REC_OFF_KEY_LEN);
	uint32_t value_len = get_le32(src + REC_OFF_VALUE_LEN);
	if (!record_fields_valid(type, src[REC_OFF_FLAGS], key_len, value_len))
		return FMT_BAD_FIELD;

	uint64_t body = type == FMT_PAD ? 0 : (uint64_t)key_len + value_len;
	if (type != FMT_PAD && fmt_record_size(key_len, value_len) > avail)
		return FMT_SHORT;
	if (record_crc(src, body, epoch32) != get_le32(src + REC_OFF_CRC))
		return FMT_BAD_CRC;

	uint8_t flags = src[REC_OFF_FLAGS];
	rec->type = (enum fmt_type)type;
	rec->flags = flags & (uint8_t)~FMT_FLAG_TXN;
	rec->lsn = get_le64(src + REC_OFF_LSN);
	rec->expiry_ms = get_le64(src + REC_OFF_EXPIRY);
	rec->key_len = key_len;
	rec->value_len = value_len;
	rec->key = type == FMT_PAD ? NULL : src + FMT_RECORD_HEADER;
	rec->value = type == FMT_PAD ? NULL : src + FMT_RECORD_HEADER + key_len;
	rec->txid = 0;
	if (flags & FMT_FLAG_TXN) {
		rec->key_len -= FMT_TXID_SIZE;
		rec->txid = get_le64(rec->key + rec->key_len);
		if (rec->txid == 0)
			return FMT_BAD_FIELD; /* never written: 0 is "none" */
	} else if (type == FMT_COMMIT) {
		rec->txid = get_le64(rec->value);
		if (rec->txid == 0)
			return FMT_BAD_FIELD;
	}
	return FMT_OK;
}

/* `block` has FMT_SEG_HEADER_SIZE bytes; all of them are written. */
void fmt_encode_segment_header(uint8_t *block, const struct fmt_segment_header *h)
{
	memset(block, 0, FMT_SEG_HEADER_SIZE);
	memcpy(block + SEG_OFF_MAGIC, SEG_MAGIC, SEG_MAGIC_LEN);
	put_le32(block + SEG_OFF_VERSION, h->version);
	put_le32(block + SEG_OFF_SHARD, h->shard);
	put_le64(block + SEG_OFF_ID, h->id);
	put_le64(block + SEG_OFF_EPOCH, h->epoch);
	put_le64(block + SEG_OFF_FIRST_LSN, h->first_lsn);
	put_le64(block + SEG_OFF_SIZE, h->size);
	put_le32(block + SEG_OFF_CRC, crc32c(0, block, SEG_OFF_CRC));
}

/* Checks in this order: magic, CRC, version, size (a multiple of FMT_BLOCK
 * holding the header and at least one commit) — so a damaged header reads as
 * FMT_BAD_CRC and only an intact one of another version as FMT_BAD_FIELD.
 * Reads bytes 0..51 only; `h` is filled only on FMT_OK. */
enum fmt_status fmt_decode_segment_header(const uint8_t *block, struct fmt_segment_header *h)
{
	if (memcmp(block + SEG_OFF_MAGIC, SEG_MAGIC, SEG_MAGIC_LEN) != 0)
		return FMT_BAD_MAGIC;
	if (crc32c(0, block, SEG_OFF_CRC) != get_le32(block + SEG_OFF_CRC))
		return FMT_BAD_CRC;

	uint32_t version = get_le32(block + SEG_OFF_VERSION);
	uint64_t size = get_le64(block + SEG_OFF_SIZE);
	if (version < FMT_VERSION_READ_MIN || version > FMT_VERSION)
		return FMT_BAD_FIELD;
	if (size % FMT_BLOCK != 0 || size < FMT_SEG_HEADER_SIZE + FMT_BLOCK)
		return FMT_BAD_FIELD;

	h->version = version;
	h->shard = get_le32(block + SEG_OFF_SHARD);
	h->id = get_le64(block + SEG_OFF_ID);
	h->epoch = get_le64(block + SEG_OFF_EPOCH);
	h->first_lsn = get_le64(block + SEG_OFF_FIRST_LSN);
	h->size = size;
	return FMT_OK;
}

const char *fmt_status_str(enum fmt_status s)
{
	switch (s) {
	case FMT_OK:
		return "ok";
	case FMT_SHORT:
		return "truncated record";
	case FMT_BAD_MAGIC:
		return "bad magic";
	case FMT_BAD_CRC:
		return "checksum mismatch";
	case FMT_BAD_FIELD:
		return "invalid field";
	}
	return "unknown status";
}

/* ---- idents ------------------------------------------------------------ */

size_t fmt_key_ident(uint8_t *dst, uint32_t db, const void *key, size_t key_len)
{
	dst[0] = FMT_IDENT_KEY;
	fmt_put_be32(dst + 1, db);
	if (key_len)
		memcpy(dst + FMT_KEY_IDENT_HEAD, key, key_len);
	return FMT_KEY_IDENT_HEAD + key_len;
}

size_t fmt_elem_ident(uint8_t *dst, uint32_t db, const void *key, size_t key_len,
                      uint64_t version, const void *elem, size_t elem_len)
{
	uint8_t *p = dst;
	*p++ = FMT_IDENT_ELEM;
	fmt_put_be32(p, db);
	fmt_put_be32(p + 4, (uint32_t)key_len);
	p += 8;
	if (key_len)
		memcpy(p, key, key_len);
	p += key_len;
	fmt_put_be64(p, version);
	fmt_put_be32(p + 8, crc32c(0, elem, elem_len));
	p += 12;
	if (elem_len)
		memcpy(p, elem, elem_len);
	return (size_t)(p - dst) + elem_len;
}

bool fmt_ident_parse(const uint8_t *ident, size_t len, struct fmt_ident *out)
{
	if (len < FMT_KEY_IDENT_HEAD)
		return false;
	*out = (struct fmt_ident){.kind = ident[0], .db = fmt_get_be32(ident + 1)};
	if (ident[0] == FMT_IDENT_KEY) {
		if (len - FMT_KEY_IDENT_HEAD > FMT_KEY_MAX)
			return false;
		out->key = ident + FMT_KEY_IDENT_HEAD;
		out->key_len = (uint32_t)(len - FMT_KEY_IDENT_HEAD);
		return true;
	}
	if (ident[0] != FMT_IDENT_ELEM || len < FMT_ELEM_IDENT_HEAD)
		return false;
	uint32_t klen = fmt_get_be32(ident + 5);
	if (klen > FMT_KEY_MAX || len - FMT_ELEM_IDENT_HEAD < klen ||
	    len - FMT_ELEM_IDENT_HEAD - klen > FMT_ELEM_MAX)
		return false;
	out->key = ident + 9;
	out->key_len = klen;
	out->version = fmt_get_be64(ident + 9 + klen);
	out->elem_hash = fmt_get_be32(ident + 17 + klen);
	out->elem = ident + FMT_ELEM_IDENT_HEAD + klen;
	out->elem_len = (uint32_t)(len - FMT_ELEM_IDENT_HEAD - klen);
	return true;
}

void fmt_encode_coll_meta(uint8_t dst[FMT_COLL_META_SIZE], const struct fmt_coll_meta *m)
{
	put_le64(dst, m->version);
	put_le64(dst + 8, m->count);
	dst[16] = m->enc;
}

bool fmt_decode_coll_meta(const uint8_t *src, size_t len, struct fmt_coll_meta *m)
{
	if (len != FMT_COLL_META_SIZE)
		return false;
	m->version = get_le64(src);
	m->count = get_le64(src + 8);
	m->enc = src[16];
	return true;
}

void fmt_encode_dbmap(uint8_t *dst, const uint32_t *ids, uint32_t n, uint32_t next_id)
{
	put_le32(dst, n);
	put_le32(dst + 4, next_id);
	for (uint32_t i = 0; i < n; i++)
		put_le32(dst + 8 + 4 * (size_t)i, ids[i]);
}

bool fmt_decode_dbmap(const uint8_t *src, size_t len, uint32_t *ids, uint32_t cap, uint32_t *n,
                      uint32_t *next_id)
{
	if (len < 8)
		return false;
	uint32_t count = get_le32(src), next = get_le32(src + 4);
	if (count > FMT_DB_MAX || count > cap || len != fmt_dbmap_size(count))
		return false;
	for (uint32_t i = 0; i < count; i++) {
		ids[i] = get_le32(src + 8 + 4 * (size_t)i);
		if (ids[i] >= next)
			return false;
	}
	*n = count;
	*next_id = next;
	return true;
}

void fmt_segment_name(char *buf, size_t len, const char *dir, uint64_t id, const char *suffix)
{
	if (dir != NULL)
		snprintf(buf, len, "%s/%016" PRIx64 ".seg%s", dir, id, suffix);
	else
		snprintf(buf, len, "%016" PRIx64 ".seg%s", id, suffix);
}
