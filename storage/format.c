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
static void put_record_header(uint8_t *dst, enum fmt_type type, uint64_t lsn, uint64_t expiry_ms,
                              uint32_t key_len, uint32_t value_len)
{
	dst[REC_OFF_TYPE] = (uint8_t)type;
	dst[REC_OFF_FLAGS] = 0;
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

/* rec->type must be FMT_PUT or FMT_DELETE (then value_len is 0); key and value
 * may be NULL when their length is 0. */
uint64_t fmt_encode_record(uint8_t *dst, uint32_t epoch32, const struct fmt_record *rec)
{
	uint64_t body = (uint64_t)rec->key_len + rec->value_len;
	uint64_t size = fmt_record_size(rec->key_len, rec->value_len);

	put_record_header(dst, rec->type, rec->lsn, rec->expiry_ms, rec->key_len, rec->value_len);
	if (rec->key_len > 0)
		memcpy(dst + FMT_RECORD_HEADER, rec->key, rec->key_len);
	if (rec->value_len > 0)
		memcpy(dst + FMT_RECORD_HEADER + rec->key_len, rec->value, rec->value_len);
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

	put_record_header(pad, FMT_PAD, lsn, 0, 0, pad_len);
	memset(pad + FMT_RECORD_HEADER, 0, pad_len);
	put_le32(pad + REC_OFF_CRC, record_crc(pad, 0, epoch32));
	return end;
}

/* Field checks that need no CRC: the type is known, flags are zero, lengths
 * are within the limits of their type.  A PAD's padding is shorter than one
 * block and a multiple of 8, as fmt_encode_pad makes it (it fills from an
 * 8-aligned offset to the next boundary but one at most). */
static bool record_fields_valid(uint8_t type, uint8_t flags, uint32_t key_len, uint32_t value_len)
{
	if (flags != 0)
		return false;
	switch (type) {
	case FMT_PUT:
		return key_len <= FMT_KEY_MAX && value_len <= FMT_VALUE_MAX;
	case FMT_DELETE:
		return key_len <= FMT_KEY_MAX && value_len == 0;
	case FMT_PAD:
		return key_len == 0 && value_len < FMT_BLOCK && value_len % 8 == 0;
	case FMT_DROP:
		return key_len == 0 && value_len == 0;
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

	rec->type = (enum fmt_type)type;
	rec->lsn = get_le64(src + REC_OFF_LSN);
	rec->expiry_ms = get_le64(src + REC_OFF_EXPIRY);
	rec->key_len = key_len;
	rec->value_len = value_len;
	rec->key = type == FMT_PAD ? NULL : src + FMT_RECORD_HEADER;
	rec->value = type == FMT_PAD ? NULL : src + FMT_RECORD_HEADER + key_len;
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
	if (version != FMT_VERSION)
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

void fmt_segment_name(char *buf, size_t len, const char *dir, uint64_t id, const char *suffix)
{
	if (dir != NULL)
		snprintf(buf, len, "%s/%016" PRIx64 ".seg%s", dir, id, suffix);
	else
		snprintf(buf, len, "%016" PRIx64 ".seg%s", id, suffix);
}
