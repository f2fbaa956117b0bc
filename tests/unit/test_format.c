/* test_format: on-disk record, PAD, DBMAP and segment header round trips,
 * byte layout, and that corruption, truncation or a foreign epoch never
 * decodes as valid (exact-size heap buffers, so ASan sees any read past the
 * end); key and element idents, collection metadata and database maps encoded
 * as format.h's tables say, parsed back, and malformed ones refused. */
#include <stdint.h>
#include <string.h>

#include "storage/crc32c.h"
#include "storage/format.h"
#include "testutil.h"

#define EPOCH 0xC0FFEE11u

static const uint8_t corruptions_xor[] = {0x01, 0x80, 0xFF};

static uint8_t *alloc_exact(size_t size)
{
	uint8_t *p = malloc(size ? size : 1);
	if (p == NULL) {
		fprintf(stderr, "FAIL: out of memory (%zu bytes)\n", size);
		exit(1);
	}
	return p;
}

/* A heap copy of src[0..len) in a buffer of exactly len bytes. */
static uint8_t *copy_exact(const uint8_t *src, size_t len)
{
	uint8_t *p = alloc_exact(len);
	if (len > 0)
		memcpy(p, src, len);
	return p;
}

static uint32_t read_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void write_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Rewrites a record's CRC after the test changed its header on purpose, so
 * the decoder's field checks are reached. */
static void reseal(uint8_t *rec, uint64_t body_len, uint32_t epoch32)
{
	write_le32(rec, crc32c(epoch32, rec + 4, 28 + body_len));
}

/* Encodes `rec` into an exact-size heap buffer prefilled with 0xAA (so the
 * test sees whether alignment padding was zeroed); *size gets its size. */
static uint8_t *encode_exact(const struct fmt_record *rec, uint32_t epoch32, uint64_t *size)
{
	*size = fmt_record_size(rec->key_len, rec->value_len);
	uint8_t *buf = alloc_exact(*size);
	memset(buf, 0xAA, *size);
	uint64_t written = fmt_encode_record(buf, epoch32, rec);
	CHECK(written == *size, "encode returned %llu, want %llu", (unsigned long long)written,
	      (unsigned long long)*size);
	return buf;
}

/* Encodes, checks the byte layout against format.h's table, decodes. */
static void check_round_trip(const char *what, const struct fmt_record *in)
{
	uint64_t size;
	uint8_t *buf = encode_exact(in, EPOCH, &size);
	uint64_t body = (uint64_t)in->key_len + in->value_len;

	CHECK(size % 8 == 0 && size >= 32 + body && size < 32 + body + 8, "%s: size %llu", what,
	      (unsigned long long)size);
	CHECK(buf[4] == in->type && buf[5] == in->flags, "%s: type/flags bytes", what);
	CHECK(buf[6] == 'R' && buf[7] == 'K', "%s: magic bytes %02x %02x", what, buf[6], buf[7]);
	for (int i = 0; i < 8; i++) {
		CHECK(buf[8 + i] == (uint8_t)(in->lsn >> (8 * i)), "%s: LSN byte %d", what, i);
		CHECK(buf[16 + i] == (uint8_t)(in->expiry_ms >> (8 * i)), "%s: expiry byte %d",
		      what, i);
	}
	CHECK(read_le32(buf + 24) == in->key_len && read_le32(buf + 28) == in->value_len,
	      "%s: length fields", what);
	CHECK(read_le32(buf) == crc32c(EPOCH, buf + 4, 28 + body), "%s: stored CRC", what);
	for (uint64_t i = 32 + body; i < size; i++)
		CHECK(buf[i] == 0, "%s: alignment byte %llu not zeroed", what,
		      (unsigned long long)i);

	struct fmt_record out;
	memset(&out, 0x5A, sizeof(out));
	enum fmt_status st = fmt_decode_record(buf, size, EPOCH, &out);
	CHECK(st == FMT_OK, "%s: decode: %s", what, fmt_status_str(st));
	if (st == FMT_OK) {
		CHECK(out.type == in->type && out.flags == in->flags && out.lsn == in->lsn &&
		          out.expiry_ms == in->expiry_ms,
		      "%s: decoded header fields", what);
		CHECK(out.key_len == in->key_len && out.value_len == in->value_len,
		      "%s: decoded lengths", what);
		CHECK(out.key == buf + 32 && out.value == buf + 32 + in->key_len,
		      "%s: key/value point into the buffer", what);
		CHECK(in->key_len == 0 || memcmp(out.key, in->key, in->key_len) == 0,
		      "%s: key bytes", what);
		CHECK(in->value_len == 0 || memcmp(out.value, in->value, in->value_len) == 0,
		      "%s: value bytes", what);
	}

	st = fmt_decode_record(buf, size, EPOCH ^ 1, &out);
	CHECK(st == FMT_BAD_CRC, "%s: other epoch gives %s", what, fmt_status_str(st));
	free(buf);
}

static void test_round_trips(void)
{
	static const uint8_t binary_key[] = {0, 'k', 0, 0xFF, 0};
	static const uint8_t binary_value[] = {0, 0, 0, '\r', '\n', 0, 0x80, 0};
	uint8_t ident[64], elem_ident[64];
	size_t ilen = fmt_key_ident(ident, 3, "key", 3);
	struct fmt_record rec = {
	    .type = FMT_PUT,
	    .lsn = 0x0123456789ABCDEFull,
	    .expiry_ms = 0xFEDCBA9876543210ull,
	    .key = ident,
	    .key_len = (uint32_t)ilen,
	    .value = (const uint8_t *)"value",
	    .value_len = 5,
	};
	check_round_trip("PUT", &rec);

	rec.value = NULL;
	rec.value_len = 0;
	check_round_trip("PUT empty value", &rec);

	ilen = fmt_key_ident(ident, 0, NULL, 0);
	rec.key_len = (uint32_t)ilen;
	rec.value = (const uint8_t *)"v";
	rec.value_len = 1;
	check_round_trip("PUT empty user key", &rec);

	rec.value = NULL;
	rec.value_len = 0;
	rec.expiry_ms = 0;
	check_round_trip("PUT empty user key and value", &rec);

	/* A collection's metadata: the value type in the flags byte. */
	uint8_t meta[FMT_COLL_META_SIZE];
	fmt_encode_coll_meta(meta, &(struct fmt_coll_meta){.version = 77, .count = 3});
	for (uint8_t t = FMT_TYPE_STRING; t <= FMT_TYPE_MAX; t++) {
		rec.flags = t;
		rec.key_len = (uint32_t)fmt_key_ident(ident, 1, "coll", 4);
		rec.value = meta;
		rec.value_len = sizeof(meta);
		check_round_trip("PUT of each value type", &rec);
	}
	rec.flags = 0;

	/* An element of a collection. */
	rec.key = elem_ident;
	rec.key_len = (uint32_t)fmt_elem_ident(elem_ident, 1, "coll", 4, 77, "field", 5);
	rec.value = (const uint8_t *)"value";
	rec.value_len = 5;
	check_round_trip("PUT of an element", &rec);

	rec.type = FMT_DELETE;
	rec.value = NULL;
	rec.value_len = 0;
	check_round_trip("DELETE of an element", &rec);

	rec.key = ident;
	rec.key_len = (uint32_t)fmt_key_ident(ident, 2, "gone", 4);
	rec.lsn = 1;
	check_round_trip("DELETE", &rec);

	rec.type = FMT_PUT;
	rec.key_len = (uint32_t)fmt_key_ident(ident, 0xFFFFFFFFu, binary_key, sizeof(binary_key));
	rec.value = binary_value;
	rec.value_len = sizeof(binary_value);
	check_round_trip("PUT binary", &rec);

	for (uint32_t klen = 0; klen < 16; klen++) {
		rec.key_len = FMT_KEY_IDENT_HEAD + klen % sizeof(binary_key);
		rec.value_len = (klen * 3) % sizeof(binary_value);
		check_round_trip("PUT every alignment", &rec);
	}

	/* The database map: no key, ids as the value. */
	uint32_t ids[5] = {7, 1, 2, 3, 9};
	uint8_t map[64];
	fmt_encode_dbmap(map, ids, 5, 10);
	struct fmt_record dbmap = {
	    .type = FMT_DBMAP, .lsn = 12, .value = map, .value_len = (uint32_t)fmt_dbmap_size(5)};
	check_round_trip("DBMAP", &dbmap);
	dbmap.value_len = (uint32_t)fmt_dbmap_size(0);
	fmt_encode_dbmap(map, ids, 0, 0);
	check_round_trip("DBMAP of no database", &dbmap);

	/* The longest ident: an element of the longest user key and element. */
	uint32_t big_value_len = (1u << 20) + 3; /* uneven, so alignment padding is exercised */
	uint8_t *key = alloc_exact(FMT_KEY_MAX);
	uint8_t *elem = alloc_exact(FMT_ELEM_MAX);
	uint8_t *big_ident = alloc_exact(FMT_IDENT_MAX);
	uint8_t *value = alloc_exact(big_value_len);
	for (uint32_t i = 0; i < FMT_KEY_MAX; i++)
		key[i] = (uint8_t)(i * 7);
	for (uint32_t i = 0; i < FMT_ELEM_MAX; i++)
		elem[i] = (uint8_t)(i * 11 + 5);
	for (uint32_t i = 0; i < big_value_len; i++)
		value[i] = (uint8_t)(i * 13 + 1);
	size_t big_len = fmt_elem_ident(big_ident, 1, key, FMT_KEY_MAX, ~0ull, elem, FMT_ELEM_MAX);
	CHECK(big_len == FMT_IDENT_MAX, "longest element ident: %zu bytes, FMT_IDENT_MAX %u",
	      big_len, (unsigned)FMT_IDENT_MAX);
	rec.key = big_ident;
	rec.key_len = (uint32_t)big_len;
	rec.value = value;
	rec.value_len = big_value_len;
	check_round_trip("PUT 128 KiB ident, 1 MiB value", &rec);

	/* Truncating the big record: a sample of cut points, exact-size copies. */
	uint64_t size;
	uint8_t *buf = encode_exact(&rec, EPOCH, &size);
	uint64_t cuts[] = {0, 1, 31, 32, 33, 32 + FMT_IDENT_MAX, size / 2, size - 8, size - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		uint8_t *cut = copy_exact(buf, cuts[i]);
		struct fmt_record out;
		enum fmt_status st = fmt_decode_record(cut, cuts[i], EPOCH, &out);
		CHECK(st == FMT_SHORT, "big record cut at %llu: %s", (unsigned long long)cuts[i],
		      fmt_status_str(st));
		free(cut);
	}
	free(buf);
	free(key);
	free(elem);
	free(big_ident);
	free(value);
}

/* Every byte of the record (header, key, value — not the alignment padding,
 * which no CRC covers) corrupted in several ways: never FMT_OK. */
static void test_record_corruption(void)
{
	uint8_t key[FMT_KEY_IDENT_HEAD + 13], value[100];
	fmt_key_ident(key, 5, "abcdefghijklm", 13);
	for (size_t i = 0; i < sizeof(value); i++)
		value[i] = (uint8_t)(i * 37);
	struct fmt_record rec = {
	    .type = FMT_PUT,
	    .flags = FMT_TYPE_STRING,
	    .lsn = 42,
	    .expiry_ms = 1700000000000ull,
	    .key = key,
	    .key_len = sizeof(key),
	    .value = value,
	    .value_len = sizeof(value),
	};
	uint64_t size;
	uint8_t *good = encode_exact(&rec, EPOCH, &size);
	uint64_t covered = 32 + sizeof(key) + sizeof(value);
	struct fmt_record out;

	for (uint64_t pos = 0; pos < covered; pos++)
		for (size_t m = 0; m <= sizeof(corruptions_xor); m++) {
			uint8_t *bad = copy_exact(good, size);
			uint8_t was = bad[pos];
			bad[pos] = m < sizeof(corruptions_xor) ? was ^ corruptions_xor[m] : 0;
			if (bad[pos] != was) {
				enum fmt_status st = fmt_decode_record(bad, size, EPOCH, &out);
				CHECK(st != FMT_OK, "record byte %llu %02x -> %02x decodes as OK",
				      (unsigned long long)pos, was, bad[pos]);
				if (pos < 4)
					CHECK(st == FMT_BAD_CRC, "CRC byte %llu: %s",
					      (unsigned long long)pos, fmt_status_str(st));
			}
			free(bad);
		}

	/* Every truncation, each in an exact-size buffer. */
	for (uint64_t avail = 0; avail < size; avail++) {
		uint8_t *cut = copy_exact(good, avail);
		enum fmt_status st = fmt_decode_record(cut, avail, EPOCH, &out);
		CHECK(st == FMT_SHORT, "record cut to %llu bytes: %s", (unsigned long long)avail,
		      fmt_status_str(st));
		free(cut);
	}
	free(good);
}

/* Header fields the CRC would accept but the format forbids. */
static void test_record_bad_fields(void)
{
	uint8_t buf[64], ident[16];
	struct fmt_record rec = {.type = FMT_PUT,
	                         .lsn = 7,
	                         .key = ident,
	                         .key_len = (uint32_t)fmt_key_ident(ident, 0, "k", 1)};
	struct fmt_record out;
	struct {
		const char *what;
		int offset, width; /* field to overwrite: byte offset and 1 or 4 bytes */
		uint32_t value;
		enum fmt_status want;
	} cases[] = {
	    {"type 0", 4, 1, 0, FMT_BAD_FIELD},
	    {"type 4 (format 1's DROP)", 4, 1, 4, FMT_BAD_FIELD},
	    {"DBMAP with a key", 4, 1, FMT_DBMAP, FMT_BAD_FIELD},
	    {"COMMIT (type 6) with a key", 4, 1, FMT_COMMIT, FMT_BAD_FIELD},
	    {"type 7", 4, 1, 7, FMT_BAD_FIELD},
	    {"type 0xFF", 4, 1, 0xFF, FMT_BAD_FIELD},
	    {"flags: a type past FMT_TYPE_MAX", 5, 1, FMT_TYPE_MAX + 1, FMT_BAD_FIELD},
	    {"flags 0xFF", 5, 1, 0xFF, FMT_BAD_FIELD},
	    {"flags: the last type", 5, 1, FMT_TYPE_MAX, FMT_OK},
	    {"key_len 0", 24, 4, 0, FMT_BAD_FIELD},
	    {"key_len max+1", 24, 4, FMT_IDENT_MAX + 1, FMT_BAD_FIELD},
	    {"key_len 2^32-1", 24, 4, UINT32_MAX, FMT_BAD_FIELD},
	    {"value_len max+1", 28, 4, FMT_VALUE_MAX + 1, FMT_BAD_FIELD},
	    {"value_len 2^32-1", 28, 4, UINT32_MAX, FMT_BAD_FIELD},
	    {"key_len max", 24, 4, FMT_IDENT_MAX, FMT_SHORT},
	    {"value_len max", 28, 4, FMT_VALUE_MAX, FMT_SHORT},
	    {"DELETE with a value", 4, 1, FMT_DELETE, FMT_BAD_FIELD},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rec.value = (const uint8_t *)"v";
		rec.value_len = 1;
		uint64_t size = fmt_encode_record(buf, EPOCH, &rec);
		if (cases[i].width == 1)
			buf[cases[i].offset] = (uint8_t)cases[i].value;
		else
			write_le32(buf + cases[i].offset, cases[i].value);
		reseal(buf, rec.key_len + 1, EPOCH);
		uint8_t *exact = copy_exact(buf, size);
		enum fmt_status st = fmt_decode_record(exact, size, EPOCH, &out);
		CHECK(st == cases[i].want, "%s: %s, want %s", cases[i].what, fmt_status_str(st),
		      fmt_status_str(cases[i].want));
		free(exact);
	}

	/* Flags belong to a PUT only. */
	rec.type = FMT_DELETE;
	rec.flags = FMT_TYPE_HASH;
	rec.value_len = 0;
	uint64_t del_size = fmt_encode_record(buf, EPOCH, &rec);
	uint8_t *del = copy_exact(buf, del_size);
	enum fmt_status del_st = fmt_decode_record(del, del_size, EPOCH, &out);
	CHECK(del_st == FMT_BAD_FIELD, "DELETE with flags: %s", fmt_status_str(del_st));
	free(del);
	rec.type = FMT_PUT;
	rec.flags = 0;

	/* DBMAP fields: no key; a value of 8 bytes and 4 per database, for at
	 * most FMT_DB_MAX databases. */
	struct {
		const char *what;
		uint32_t value_len;
		enum fmt_status want;
	} maps[] = {
	    {"DBMAP of 0 databases", 8, FMT_OK},
	    {"DBMAP shorter than its head", 4, FMT_BAD_FIELD},
	    {"DBMAP of no bytes", 0, FMT_BAD_FIELD},
	    {"DBMAP not a multiple of 4", 14, FMT_BAD_FIELD},
	    {"DBMAP of FMT_DB_MAX databases", (uint32_t)fmt_dbmap_size(FMT_DB_MAX), FMT_SHORT},
	    {"DBMAP past FMT_DB_MAX", (uint32_t)fmt_dbmap_size(FMT_DB_MAX) + 4, FMT_BAD_FIELD},
	};
	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		static const uint8_t no_ids[8]; /* n 0, next_id 0 */
		uint8_t map_rec[64] = {0};
		struct fmt_record m = {
		    .type = FMT_DBMAP, .lsn = 3, .value = no_ids, .value_len = 8};
		fmt_encode_record(map_rec, EPOCH, &m);
		write_le32(map_rec + 28, maps[i].value_len);
		/* short lengths: the bytes are there; long ones: the header only */
		uint32_t body = maps[i].value_len <= 24 ? maps[i].value_len : 0;
		reseal(map_rec, body, EPOCH);
		uint32_t avail = 32 + ((body + 7) & ~7u);
		uint8_t *exact = copy_exact(map_rec, avail);
		enum fmt_status st = fmt_decode_record(exact, avail, EPOCH, &out);
		CHECK(st == maps[i].want, "%s: %s, want %s", maps[i].what, fmt_status_str(st),
		      fmt_status_str(maps[i].want));
		free(exact);
	}

	/* PAD fields: no key, padding shorter than a block and a multiple of 8. */
	struct {
		const char *what;
		uint32_t key_len, value_len;
		enum fmt_status want;
	} pads[] = {
	    {"PAD with a key", 8, 0, FMT_BAD_FIELD},
	    {"PAD of a block", 0, FMT_BLOCK, FMT_BAD_FIELD},
	    {"PAD of 2^32-8", 0, UINT32_MAX - 7, FMT_BAD_FIELD},
	    {"PAD not a multiple of 8", 0, 4, FMT_BAD_FIELD},
	    {"longest PAD", 0, FMT_BLOCK - 8, FMT_OK},
	    {"empty PAD", 0, 0, FMT_OK},
	};
	for (size_t i = 0; i < sizeof(pads) / sizeof(pads[0]); i++) {
		uint8_t pad_block[FMT_BLOCK];
		fmt_encode_pad(pad_block, 0, EPOCH, 3);
		write_le32(pad_block + 24, pads[i].key_len);
		write_le32(pad_block + 28, pads[i].value_len);
		reseal(pad_block, 0, EPOCH);
		uint8_t *exact = copy_exact(pad_block, 32);
		enum fmt_status st = fmt_decode_record(exact, 32, EPOCH, &out);
		CHECK(st == pads[i].want, "%s: %s, want %s", pads[i].what, fmt_status_str(st),
		      fmt_status_str(pads[i].want));
		free(exact);
	}

	/* Both lengths at their maximum: the size sum must not overflow into a
	 * "fits" answer. */
	fmt_encode_record(buf, EPOCH, &rec);
	write_le32(buf + 24, FMT_KEY_MAX);
	write_le32(buf + 28, FMT_VALUE_MAX);
	reseal(buf, 0, EPOCH);
	enum fmt_status st = fmt_decode_record(buf, 32, EPOCH, &out);
	CHECK(st == FMT_SHORT, "maximal lengths in a 32-byte buffer: %s", fmt_status_str(st));

	uint8_t *zeros = calloc(1, FMT_BLOCK);
	if (zeros == NULL)
		exit(1);
	st = fmt_decode_record(zeros, FMT_BLOCK, EPOCH, &out);
	CHECK(st == FMT_BAD_MAGIC, "all-zero block: %s", fmt_status_str(st));
	st = fmt_decode_record(zeros, FMT_BLOCK, 0, &out);
	CHECK(st == FMT_BAD_MAGIC, "all-zero block, epoch 0: %s", fmt_status_str(st));
	free(zeros);
}

/* The commit end a PAD after `used` bytes must give, by counting blocks. */
static uint64_t expected_commit_size(uint64_t used)
{
	uint64_t end = FMT_BLOCK;
	while (end < used + FMT_RECORD_HEADER)
		end += FMT_BLOCK;
	return end;
}

static void check_pad(uint64_t used)
{
	uint64_t want = expected_commit_size(used);
	uint8_t *commit = alloc_exact(want);
	memset(commit, 0xAA, want);
	uint64_t total = fmt_encode_pad(commit, used, EPOCH, 99);
	CHECK(total == want && total % FMT_BLOCK == 0, "pad after %llu: commit %llu, want %llu",
	      (unsigned long long)used, (unsigned long long)total, (unsigned long long)want);
	if (total != want) {
		free(commit);
		return;
	}
	for (uint64_t i = 0; i < used; i++)
		if (commit[i] != 0xAA) {
			CHECK(commit[i] == 0xAA, "pad after %llu touched byte %llu",
			      (unsigned long long)used, (unsigned long long)i);
			break;
		}
	for (uint64_t i = used + 32; i < total; i++)
		if (commit[i] != 0) {
			CHECK(commit[i] == 0, "pad after %llu: padding byte %llu not zero",
			      (unsigned long long)used, (unsigned long long)i);
			break;
		}

	struct fmt_record out;
	enum fmt_status st = fmt_decode_record(commit + used, total - used, EPOCH, &out);
	CHECK(st == FMT_OK, "pad after %llu: decode %s", (unsigned long long)used,
	      fmt_status_str(st));
	if (st == FMT_OK) {
		CHECK(out.type == FMT_PAD && out.lsn == 99 && out.key_len == 0 &&
		          out.expiry_ms == 0,
		      "pad after %llu: decoded fields", (unsigned long long)used);
		CHECK(used + fmt_record_size(0, out.value_len) == total,
		      "pad after %llu: PAD of %u bytes does not end the commit",
		      (unsigned long long)used, out.value_len);
	}

	/* Only the header must be readable: the padding is not read. */
	uint8_t *header = copy_exact(commit + used, 32);
	st = fmt_decode_record(header, 32, EPOCH, &out);
	CHECK(st == FMT_OK, "pad after %llu, header only: %s", (unsigned long long)used,
	      fmt_status_str(st));
	for (uint64_t avail = 0; avail < 32; avail++) {
		st = fmt_decode_record(header + 32 - avail, avail, EPOCH, &out);
		CHECK(st == FMT_SHORT, "pad header cut to %llu: %s", (unsigned long long)avail,
		      fmt_status_str(st));
	}
	st = fmt_decode_record(header, 32, EPOCH + 1, &out);
	CHECK(st == FMT_BAD_CRC, "pad with another epoch: %s", fmt_status_str(st));
	free(header);
	free(commit);
}

static void test_pads(void)
{
	static const uint64_t used[] = {
	    0,    8,    4064, 4072, 4088,          4096,          4096 + 8,        6000,
	    8160, 8168, 8184, 8192, 3 * 4096 - 32, 3 * 4096 - 24, 5 * 4096 + 4056,
	};
	for (size_t i = 0; i < sizeof(used) / sizeof(used[0]); i++)
		check_pad(used[i]);
	static uint8_t scratch[3 * FMT_BLOCK];
	for (uint64_t u = 0; u <= 2 * FMT_BLOCK; u += 8) {
		uint64_t total = fmt_encode_pad(scratch, u, EPOCH, 1);
		if (total != expected_commit_size(u)) {
			CHECK(total == expected_commit_size(u), "pad after %llu: commit %llu",
			      (unsigned long long)u, (unsigned long long)total);
			break;
		}
	}

	/* The PAD header corrupted byte by byte: never FMT_OK. */
	uint8_t pad[FMT_BLOCK];
	fmt_encode_pad(pad, 0, EPOCH, 5);
	for (int pos = 0; pos < 32; pos++)
		for (size_t m = 0; m <= sizeof(corruptions_xor); m++) {
			uint8_t *bad = copy_exact(pad, 32);
			uint8_t was = bad[pos];
			bad[pos] = m < sizeof(corruptions_xor) ? was ^ corruptions_xor[m] : 0;
			struct fmt_record out;
			if (bad[pos] != was)
				CHECK(fmt_decode_record(bad, 32, EPOCH, &out) != FMT_OK,
				      "PAD byte %d %02x -> %02x decodes as OK", pos, was, bad[pos]);
			free(bad);
		}
}

/* Records back to back, then the PAD: walking the commit reads every record
 * and the PAD ends exactly at the commit's end. */
static void test_commit_walk(void)
{
	uint8_t *commit = alloc_exact(2 * FMT_BLOCK);
	uint64_t used = 0;
	uint64_t lsn = 1000;
	char key[32];
	uint8_t ident[64], value[500];
	memset(value, 'x', sizeof(value));
	/* A command's group: metadata, elements, a DBMAP, plain keys. */
	for (int i = 0; used + fmt_record_size(sizeof(ident), sizeof(value)) + 32 <= 2 * FMT_BLOCK;
	     i++) {
		int klen = snprintf(key, sizeof(key), "key:%d", i);
		struct fmt_record rec = {
		    .type = i % 3 == 2 ? FMT_DELETE : FMT_PUT,
		    .lsn = lsn++,
		    .key = ident,
		    .key_len = (uint32_t)(i % 4 == 1 ? fmt_elem_ident(ident, 0, "coll", 4, 9, key,
		                                                      (size_t)klen)
		                                     : fmt_key_ident(ident, 0, key, (size_t)klen)),
		    .value = value,
		    .value_len = i % 3 == 2 ? 0 : (uint32_t)(i * 37 % sizeof(value)),
		};
		if (i % 5 == 4)
			rec = (struct fmt_record){.type = FMT_DBMAP,
			                          .lsn = rec.lsn,
			                          .value = value,
			                          .value_len = 8 + 4 * (uint32_t)(i % 7)};
		used += fmt_encode_record(commit + used, EPOCH, &rec);
	}
	uint64_t total = fmt_encode_pad(commit, used, EPOCH, lsn - 1);
	CHECK(total == 2 * FMT_BLOCK, "commit of %llu bytes used: size %llu",
	      (unsigned long long)used, (unsigned long long)total);

	uint64_t pos = 0, next_lsn = 1000;
	struct fmt_record out;
	for (;;) {
		enum fmt_status st = fmt_decode_record(commit + pos, total - pos, EPOCH, &out);
		CHECK(st == FMT_OK, "walk at %llu: %s", (unsigned long long)pos,
		      fmt_status_str(st));
		if (st != FMT_OK)
			break;
		pos += fmt_record_size(out.key_len, out.value_len);
		if (out.type == FMT_PAD) {
			CHECK(out.lsn == next_lsn - 1, "PAD carries LSN %llu, want %llu",
			      (unsigned long long)out.lsn, (unsigned long long)(next_lsn - 1));
			break;
		}
		CHECK(out.lsn == next_lsn, "walk: LSN %llu, want %llu", (unsigned long long)out.lsn,
		      (unsigned long long)next_lsn);
		next_lsn++;
	}
	CHECK(pos == total && next_lsn == lsn, "walk ended at %llu of %llu",
	      (unsigned long long)pos, (unsigned long long)total);
	free(commit);
}

static void test_segment_header(void)
{
	struct fmt_segment_header in = {
	    .version = FMT_VERSION,
	    .shard = 0xA1B2C3D4u,
	    .id = 0x1122334455667788ull,
	    .epoch = 0x8877665544332211ull,
	    .first_lsn = 0x0102030405060708ull,
	    .size = 64ull << 20,
	};
	uint8_t *block = alloc_exact(FMT_SEG_HEADER_SIZE);
	memset(block, 0xAA, FMT_SEG_HEADER_SIZE);
	fmt_encode_segment_header(block, &in);

	CHECK(memcmp(block, "RKVSEG01", 8) == 0, "segment magic");
	CHECK(read_le32(block + 8) == FMT_VERSION && read_le32(block + 12) == in.shard,
	      "segment version/shard bytes");
	CHECK(block[16] == 0x88 && block[23] == 0x11 && block[24] == 0x11 && block[31] == 0x88,
	      "segment id/epoch byte order");
	CHECK(block[32] == 0x08 && block[40] == 0x00 && block[42] == 0x00 && block[43] == 0x04,
	      "segment first LSN/size byte order");
	CHECK(read_le32(block + 48) == crc32c(0, block, 48), "segment CRC");
	for (uint32_t i = 52; i < FMT_SEG_HEADER_SIZE; i++)
		if (block[i] != 0) {
			CHECK(block[i] == 0, "segment header byte %u not zero", i);
			break;
		}

	struct fmt_segment_header out;
	memset(&out, 0, sizeof(out));
	enum fmt_status st = fmt_decode_segment_header(block, &out);
	CHECK(st == FMT_OK, "segment header decode: %s", fmt_status_str(st));
	CHECK(memcmp(&in, &out, sizeof(in)) == 0, "segment header round trip");

	for (int pos = 0; pos < 52; pos++)
		for (size_t m = 0; m <= sizeof(corruptions_xor); m++) {
			uint8_t *bad = copy_exact(block, FMT_SEG_HEADER_SIZE);
			uint8_t was = bad[pos];
			bad[pos] = m < sizeof(corruptions_xor) ? was ^ corruptions_xor[m] : 0;
			if (bad[pos] != was) {
				st = fmt_decode_segment_header(bad, &out);
				CHECK(st == (pos < 8 ? FMT_BAD_MAGIC : FMT_BAD_CRC),
				      "segment byte %d %02x -> %02x: %s", pos, was, bad[pos],
				      fmt_status_str(st));
			}
			free(bad);
		}

	struct fmt_segment_header other = in;
	other.version = FMT_VERSION + 1;
	fmt_encode_segment_header(block, &other);
	st = fmt_decode_segment_header(block, &out);
	CHECK(st == FMT_BAD_FIELD, "unknown version: %s", fmt_status_str(st));
	other.version = FMT_VERSION_READ_MIN - 1;
	fmt_encode_segment_header(block, &other);
	st = fmt_decode_segment_header(block, &out);
	CHECK(st == FMT_BAD_FIELD, "a version too old: %s", fmt_status_str(st));
	other.version = FMT_VERSION_READ_MIN;
	fmt_encode_segment_header(block, &other);
	st = fmt_decode_segment_header(block, &out);
	CHECK(st == FMT_OK && out.version == FMT_VERSION_READ_MIN, "the oldest version read: %s",
	      fmt_status_str(st));

	static const uint64_t bad_sizes[] = {0, 4096, 8191, 8193, 64ull << 20 | 512};
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		other = in;
		other.size = bad_sizes[i];
		fmt_encode_segment_header(block, &other);
		st = fmt_decode_segment_header(block, &out);
		CHECK(st == FMT_BAD_FIELD, "segment size %llu: %s",
		      (unsigned long long)bad_sizes[i], fmt_status_str(st));
	}
	other = in;
	other.size = 2 * FMT_BLOCK;
	fmt_encode_segment_header(block, &other);
	st = fmt_decode_segment_header(block, &out);
	CHECK(st == FMT_OK && out.size == 2 * FMT_BLOCK, "smallest segment: %s",
	      fmt_status_str(st));

	memset(block, 0, FMT_SEG_HEADER_SIZE);
	st = fmt_decode_segment_header(block, &out);
	CHECK(st == FMT_BAD_MAGIC, "all-zero segment header: %s", fmt_status_str(st));
	free(block);
}

static uint64_t read_le64(const uint8_t *p)
{
	return (uint64_t)read_le32(p) | (uint64_t)read_le32(p + 4) << 32;
}

static uint32_t read_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Parses an exact-size heap copy of ident[0..len) (ASan sees an overread). */
static bool parse_exact(const uint8_t *ident, size_t len, struct fmt_ident *out)
{
	uint8_t *copy = copy_exact(ident, len);
	bool ok = fmt_ident_parse(copy, len, out);
	/* the parts point into the copy: rebase them onto ident for the caller */
	if (ok) {
		out->key = out->key ? ident + (out->key - copy) : NULL;
		out->elem = out->elem ? ident + (out->elem - copy) : NULL;
	}
	free(copy);
	return ok;
}

/* Key and element idents: format.h's byte layout, parsed back, ordered as
 * their rows must be; malformed ones refused. */
static void test_idents(void)
{
	uint8_t k[FMT_KEY_IDENT_HEAD + 8];
	size_t n = fmt_key_ident(k, 0x01020304u, "user:42", 7);
	CHECK(n == FMT_KEY_IDENT_HEAD + 7 && k[0] == 'k' && read_be32(k + 1) == 0x01020304u &&
	          memcmp(k + 5, "user:42", 7) == 0,
	      "key ident layout (%zu bytes)", n);
	struct fmt_ident id;
	CHECK(parse_exact(k, n, &id) && id.kind == FMT_IDENT_KEY && id.db == 0x01020304u &&
	          id.key == k + 5 && id.key_len == 7,
	      "key ident parsed");
	n = fmt_key_ident(k, 9, NULL, 0);
	CHECK(n == FMT_KEY_IDENT_HEAD && parse_exact(k, n, &id) && id.key_len == 0 && id.db == 9,
	      "the key ident of an empty user key");

	uint8_t e[FMT_ELEM_IDENT_HEAD + 16];
	n = fmt_elem_ident(e, 7, "hkey", 4, 0x1122334455667788ull, "field", 5);
	CHECK(n == FMT_ELEM_IDENT_HEAD + 4 + 5, "element ident size %zu", n);
	CHECK(e[0] == 'e' && read_be32(e + 1) == 7 && read_be32(e + 5) == 4 &&
	          memcmp(e + 9, "hkey", 4) == 0 && e[13] == 0x11 && e[20] == 0x88 &&
	          read_be32(e + 21) == crc32c(0, "field", 5) && memcmp(e + 25, "field", 5) == 0,
	      "element ident layout");
	CHECK(parse_exact(e, n, &id) && id.kind == FMT_IDENT_ELEM && id.db == 7 &&
	          id.key == e + 9 && id.key_len == 4 && id.version == 0x1122334455667788ull &&
	          id.elem_hash == crc32c(0, "field", 5) && id.elem == e + 25 && id.elem_len == 5,
	      "element ident parsed");
	CHECK(fmt_elem_prefix_len(4) == 21, "element prefix of a 4-byte key: %zu",
	      fmt_elem_prefix_len(4));
	uint8_t e2[FMT_ELEM_IDENT_HEAD + 16];
	size_t n2 = fmt_elem_ident(e2, 7, "hkey", 4, 0x1122334455667788ull, "other", 5);
	CHECK(n2 == n && memcmp(e, e2, fmt_elem_prefix_len(4)) == 0,
	      "elements of one collection share its prefix");
	n2 = fmt_elem_ident(e2, 7, "hkey", 4, 0x1122334455667789ull, "field", 5);
	CHECK(memcmp(e, e2, fmt_elem_prefix_len(4)) != 0, "another version, another prefix");
	n = fmt_elem_ident(e, 7, NULL, 0, 1, NULL, 0);
	CHECK(n == FMT_ELEM_IDENT_HEAD && parse_exact(e, n, &id) && id.key_len == 0 &&
	          id.elem_len == 0 && id.version == 1,
	      "an empty element of an empty key");

	/* Big-endian integers: idents of one kind sort as their numbers do. */
	uint8_t a[32], b[32];
	static const uint32_t dbs[][2] = {{0, 1}, {1, 256}, {255, 256}, {65535, 65536}};
	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		fmt_key_ident(a, dbs[i][0], "z", 1);
		fmt_key_ident(b, dbs[i][1], "a", 1);
		CHECK(memcmp(a, b, 6) < 0, "database %u sorts before %u", dbs[i][0], dbs[i][1]);
	}
	static const uint64_t versions[][2] = {{1, 2}, {255, 256}, {0xFFFFFFFFull, 1ull << 32}};
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		size_t la = fmt_elem_ident(a, 3, "k", 1, versions[i][0], "zz", 2);
		size_t lb = fmt_elem_ident(b, 3, "k", 1, versions[i][1], "aa", 2);
		CHECK(la == lb && memcmp(a, b, la) < 0, "version %llu sorts before %llu",
		      (unsigned long long)versions[i][0], (unsigned long long)versions[i][1]);
	}
	/* Elements of one collection sort by their hash. */
	static const char *const elems[] = {"a", "b", "member", "field:1", "field:2", ""};
	for (size_t i = 0; i < 6; i++)
		for (size_t j = 0; j < 6; j++) {
			size_t la = fmt_elem_ident(a, 3, "k", 1, 5, elems[i], strlen(elems[i]));
			size_t lb = fmt_elem_ident(b, 3, "k", 1, 5, elems[j], strlen(elems[j]));
			uint32_t ha = crc32c(0, elems[i], strlen(elems[i]));
			uint32_t hb = crc32c(0, elems[j], strlen(elems[j]));
			int c = memcmp(a, b, la < lb ? la : lb);
			if (ha != hb)
				CHECK((c < 0) == (ha < hb),
				      "elements '%s' and '%s' out of hash order", elems[i],
				      elems[j]);
		}

	/* Malformed idents. */
	CHECK(!fmt_ident_parse((const uint8_t *)"", 0, &id), "an empty ident parses");
	n = fmt_key_ident(k, 1, "key", 3);
	for (size_t len = 0; len < FMT_KEY_IDENT_HEAD; len++)
		CHECK(!parse_exact(k, len, &id), "a key ident cut to %zu bytes parses", len);
	k[0] = 'x';
	CHECK(!parse_exact(k, n, &id), "an ident of kind 'x' parses");
	k[0] = 'K';
	CHECK(!parse_exact(k, n, &id), "an ident of kind 'K' parses");
	uint8_t *long_key = alloc_exact(FMT_KEY_IDENT_HEAD + FMT_KEY_MAX + 1);
	memset(long_key, 'q', FMT_KEY_IDENT_HEAD + FMT_KEY_MAX + 1);
	fmt_key_ident(long_key, 0, NULL, 0);
	CHECK(fmt_ident_parse(long_key, FMT_KEY_IDENT_HEAD + FMT_KEY_MAX, &id) &&
	          id.key_len == FMT_KEY_MAX,
	      "the longest key ident is refused");
	CHECK(!fmt_ident_parse(long_key, FMT_KEY_IDENT_HEAD + FMT_KEY_MAX + 1, &id),
	      "a key ident past FMT_KEY_MAX parses");
	free(long_key);

	n = fmt_elem_ident(e, 7, "hkey", 4, 3, "field", 5);
	for (size_t len = 0; len < FMT_ELEM_IDENT_HEAD + 4; len++)
		CHECK(!parse_exact(e, len, &id), "an element ident cut to %zu bytes parses", len);
	fmt_put_be32(e + 5, 5 + 6); /* key length past the element's end */
	CHECK(!parse_exact(e, n, &id), "an element ident whose key runs past its end parses");
	fmt_put_be32(e + 5, FMT_KEY_MAX + 1);
	CHECK(!parse_exact(e, n, &id), "an element ident with a key past FMT_KEY_MAX parses");
	fmt_put_be32(e + 5, UINT32_MAX);
	CHECK(!parse_exact(e, n, &id), "an element ident with key length 2^32-1 parses");
	uint8_t *long_elem = alloc_exact(FMT_ELEM_IDENT_HEAD + FMT_ELEM_MAX + 1);
	memset(long_elem, 'q', FMT_ELEM_IDENT_HEAD + FMT_ELEM_MAX + 1);
	fmt_elem_ident(long_elem, 0, NULL, 0, 1, NULL, 0);
	CHECK(fmt_ident_parse(long_elem, FMT_ELEM_IDENT_HEAD + FMT_ELEM_MAX, &id) &&
	          id.elem_len == FMT_ELEM_MAX,
	      "the longest element is refused");
	CHECK(!fmt_ident_parse(long_elem, FMT_ELEM_IDENT_HEAD + FMT_ELEM_MAX + 1, &id),
	      "an element past FMT_ELEM_MAX parses");
	free(long_elem);
}

/* A collection's metadata: 8 version, 8 count, 1 encoding, little-endian. */
static void test_coll_meta(void)
{
	struct fmt_coll_meta in = {
	    .version = 0x0102030405060708ull, .count = 1ull << 40, .enc = FMT_ENC_BIG};
	uint8_t *m = alloc_exact(FMT_COLL_META_SIZE);
	fmt_encode_coll_meta(m, &in);
	CHECK(read_le64(m) == in.version && read_le64(m + 8) == in.count && m[16] == FMT_ENC_BIG,
	      "metadata layout");
	struct fmt_coll_meta out = {0};
	CHECK(fmt_decode_coll_meta(m, FMT_COLL_META_SIZE, &out) && out.version == in.version &&
	          out.count == in.count && out.enc == in.enc,
	      "metadata round trip");
	CHECK(!fmt_decode_coll_meta(m, FMT_COLL_META_SIZE - 1, &out), "short metadata decodes");
	uint8_t longer[FMT_COLL_META_SIZE + 1] = {0};
	CHECK(!fmt_decode_coll_meta(longer, sizeof(longer), &out), "long metadata decodes");
	free(m);
}

/* The database map: 4 n, 4 next_id, n x 4 ids, little-endian; malformed
 * maps refused. */
static void test_dbmap(void)
{
	static const uint32_t ids[] = {16, 1, 2, 17, 4, 0x01020304u};
	uint32_t n = sizeof(ids) / sizeof(ids[0]), next = 0x01020305u;
	size_t size = fmt_dbmap_size(n);
	CHECK(size == 8 + 4 * n, "map size %zu", size);
	uint8_t *m = alloc_exact(size);
	fmt_encode_dbmap(m, ids, n, next);
	CHECK(read_le32(m) == n && read_le32(m + 4) == next && read_le32(m + 8) == 16 &&
	          read_le32(m + 8 + 4 * 5) == 0x01020304u,
	      "map layout");
	uint32_t out[8], out_n = 0, out_next = 0;
	CHECK(fmt_decode_dbmap(m, size, out, 8, &out_n, &out_next) && out_n == n &&
	          out_next == next && memcmp(out, ids, sizeof(ids)) == 0,
	      "map round trip");
	CHECK(!fmt_decode_dbmap(m, size, out, n - 1, &out_n, &out_next),
	      "a map of more ids than the room decodes");
	CHECK(!fmt_decode_dbmap(m, size - 4, out, 8, &out_n, &out_next), "a cut map decodes");
	for (size_t cut = 0; cut < 8; cut++) {
		uint8_t *c = copy_exact(m, cut);
		CHECK(!fmt_decode_dbmap(c, cut, out, 8, &out_n, &out_next),
		      "a map cut to %zu bytes decodes", cut);
		free(c);
	}
	uint8_t *bad = copy_exact(m, size);
	write_le32(bad + 4, 0x01020304u); /* an id not below next_id */
	CHECK(!fmt_decode_dbmap(bad, size, out, 8, &out_n, &out_next),
	      "a map with an id >= next_id decodes");
	write_le32(bad, FMT_DB_MAX + 1);
	write_le32(bad + 4, next);
	CHECK(!fmt_decode_dbmap(bad, size, out, 8, &out_n, &out_next),
	      "a map of more than FMT_DB_MAX databases decodes");
	free(bad);
	uint8_t empty[8];
	fmt_encode_dbmap(empty, NULL, 0, 0);
	CHECK(fmt_decode_dbmap(empty, 8, out, 8, &out_n, &out_next) && out_n == 0 && out_next == 0,
	      "a map of no database");
	free(m);
}

static void test_status_strings(void)
{
	enum fmt_status all[] = {FMT_OK, FMT_SHORT, FMT_BAD_MAGIC, FMT_BAD_CRC, FMT_BAD_FIELD};
	for (size_t i = 0; i < 5; i++)
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(fmt_status_str(all[i]), fmt_status_str(all[j])) != 0,
			      "status strings %zu and %zu are the same", i, j);
	CHECK(fmt_status_str((enum fmt_status)77) != NULL, "unknown status string");
}

/* Records of a transaction (FMT_FLAG_TXN: the id after the ident) and
 * COMMIT records: exact bytes, round trips, sizes, and what is refused. */
static void test_txn_records(void)
{
	static const uint8_t ident[] = "k\0\0\0\1user:1";
	static const uint8_t value[] = "some value";
	const uint64_t txid = 0x0123456789abcdefull;
	struct fmt_record put = {.type = FMT_PUT,
	                         .flags = FMT_TYPE_STRING,
	                         .lsn = 77,
	                         .key = ident,
	                         .key_len = sizeof(ident) - 1,
	                         .value = value,
	                         .value_len = sizeof(value) - 1,
	                         .txid = txid};
	uint64_t size = fmt_rec_size(&put);
	CHECK(size == fmt_record_size(put.key_len + 8, put.value_len), "tagged size %llu",
	      (unsigned long long)size);
	uint8_t *buf = alloc_exact(size);
	CHECK(fmt_encode_record(buf, EPOCH, &put) == size, "tagged encode size");
	CHECK(buf[5] == (FMT_FLAG_TXN | FMT_TYPE_STRING), "flags byte %02x", buf[5]);
	CHECK(read_le32(buf + 24) == put.key_len + 8, "key length field counts the id");
	CHECK(read_le32(buf + 32 + put.key_len) == (uint32_t)txid &&
	          read_le32(buf + 36 + put.key_len) == (uint32_t)(txid >> 32),
	      "the id follows the ident, little-endian");
	struct fmt_record out;
	CHECK(fmt_decode_record(buf, size, EPOCH, &out) == FMT_OK, "tagged decode");
	CHECK(out.txid == txid && out.key_len == put.key_len && out.flags == FMT_TYPE_STRING &&
	          memcmp(out.key, ident, put.key_len) == 0 && out.value_len == put.value_len &&
	          memcmp(out.value, value, put.value_len) == 0 && fmt_rec_size(&out) == size,
	      "tagged round trip");
	/* A tag of 0 is never written: refused. */
	memset(buf + 32 + put.key_len, 0, 8);
	reseal(buf, put.key_len + 8 + put.value_len, EPOCH);
	CHECK(fmt_decode_record(buf, size, EPOCH, &out) == FMT_BAD_FIELD, "tag 0 refused");
	free(buf);

	struct fmt_record del = {.type = FMT_DELETE,
	                         .lsn = 78,
	                         .key = ident,
	                         .key_len = sizeof(ident) - 1,
	                         .txid = txid};
	size = fmt_rec_size(&del);
	buf = alloc_exact(size);
	fmt_encode_record(buf, EPOCH, &del);
	CHECK(fmt_decode_record(buf, size, EPOCH, &out) == FMT_OK && out.txid == txid &&
	          out.type == FMT_DELETE && out.key_len == del.key_len,
	      "tagged DELETE round trip");
	free(buf);

	struct fmt_record commit = {.type = FMT_COMMIT, .lsn = 79, .txid = txid};
	size = fmt_rec_size(&commit);
	CHECK(size == 40, "COMMIT size %llu", (unsigned long long)size);
	buf = alloc_exact(size);
	CHECK(fmt_encode_record(buf, EPOCH, &commit) == size, "COMMIT encode size");
	CHECK(buf[4] == FMT_COMMIT && buf[5] == 0 && read_le32(buf + 24) == 0 &&
	          read_le32(buf + 28) == 8,
	      "COMMIT header: no key, 8 bytes of value");
	CHECK(fmt_decode_record(buf, size, EPOCH, &out) == FMT_OK && out.type == FMT_COMMIT &&
	          out.txid == txid && fmt_rec_size(&out) == size,
	      "COMMIT round trip");
	buf[5] = FMT_FLAG_TXN; /* a COMMIT is never tagged */
	reseal(buf, 8, EPOCH);
	CHECK(fmt_decode_record(buf, size, EPOCH, &out) == FMT_BAD_FIELD, "tagged COMMIT refused");
	free(buf);

	/* A DBMAP is never tagged. */
	uint8_t map[8] = {0};
	struct fmt_record dbmap = {.type = FMT_DBMAP, .lsn = 80, .value = map, .value_len = 8};
	size = fmt_rec_size(&dbmap);
	buf = alloc_exact(size);
	fmt_encode_record(buf, EPOCH, &dbmap);
	buf[5] = FMT_FLAG_TXN;
	reseal(buf, 8, EPOCH);
	CHECK(fmt_decode_record(buf, size, EPOCH, &out) == FMT_BAD_FIELD, "tagged DBMAP refused");
	free(buf);
}

int main(void)
{
	test_round_trips();
	test_txn_records();
	test_record_corruption();
	test_record_bad_fields();
	test_pads();
	test_commit_walk();
	test_idents();
	test_coll_meta();
	test_dbmap();
	test_segment_header();
	test_status_strings();
	return test_result();
}
