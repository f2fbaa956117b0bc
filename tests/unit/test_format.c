/* test_format: on-disk record, PAD and segment header round trips, byte
 * layout, and that corruption, truncation or a foreign epoch never decodes as
 * valid (exact-size heap buffers, so ASan sees any read past the end). */
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
	CHECK(buf[4] == in->type && buf[5] == 0, "%s: type/flags bytes", what);
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
		CHECK(out.type == in->type && out.lsn == in->lsn && out.expiry_ms == in->expiry_ms,
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
	struct fmt_record rec = {
	    .type = FMT_PUT,
	    .lsn = 0x0123456789ABCDEFull,
	    .expiry_ms = 0xFEDCBA9876543210ull,
	    .key = (const uint8_t *)"key",
	    .key_len = 3,
	    .value = (const uint8_t *)"value",
	    .value_len = 5,
	};
	check_round_trip("PUT", &rec);

	rec.value = NULL;
	rec.value_len = 0;
	check_round_trip("PUT empty value", &rec);

	rec.key = NULL;
	rec.key_len = 0;
	rec.value = (const uint8_t *)"v";
	rec.value_len = 1;
	check_round_trip("PUT empty key", &rec);

	rec.value = NULL;
	rec.value_len = 0;
	rec.expiry_ms = 0;
	check_round_trip("PUT empty key and value", &rec);

	rec.type = FMT_DELETE;
	rec.key = (const uint8_t *)"gone";
	rec.key_len = 4;
	rec.lsn = 1;
	check_round_trip("DELETE", &rec);

	rec.type = FMT_PUT;
	rec.key = binary_key;
	rec.key_len = sizeof(binary_key);
	rec.value = binary_value;
	rec.value_len = sizeof(binary_value);
	check_round_trip("PUT binary", &rec);

	for (uint32_t klen = 0; klen < 16; klen++) {
		rec.key_len = klen % sizeof(binary_key);
		rec.value_len = (klen * 3) % sizeof(binary_value);
		check_round_trip("PUT every alignment", &rec);
	}

	uint32_t big_value_len = (1u << 20) + 3; /* uneven, so alignment padding is exercised */
	uint8_t *key = alloc_exact(FMT_KEY_MAX);
	uint8_t *value = alloc_exact(big_value_len);
	for (uint32_t i = 0; i < FMT_KEY_MAX; i++)
		key[i] = (uint8_t)(i * 7);
	for (uint32_t i = 0; i < big_value_len; i++)
		value[i] = (uint8_t)(i * 13 + 1);
	rec.key = key;
	rec.key_len = FMT_KEY_MAX;
	rec.value = value;
	rec.value_len = big_value_len;
	check_round_trip("PUT 64 KiB key, 1 MiB value", &rec);

	/* Truncating the big record: a sample of cut points, exact-size copies. */
	uint64_t size;
	uint8_t *buf = encode_exact(&rec, EPOCH, &size);
	uint64_t cuts[] = {0, 1, 31, 32, 33, 32 + FMT_KEY_MAX, size / 2, size - 8, size - 1};
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
	free(value);
}

/* Every byte of the record (header, key, value — not the alignment padding,
 * which no CRC covers) corrupted in several ways: never FMT_OK. */
static void test_record_corruption(void)
{
	uint8_t key[13], value[100];
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)('a' + i);
	for (size_t i = 0; i < sizeof(value); i++)
		value[i] = (uint8_t)(i * 37);
	struct fmt_record rec = {
	    .type = FMT_PUT,
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
	uint8_t buf[64];
	struct fmt_record rec = {
	    .type = FMT_PUT, .lsn = 7, .key = (const uint8_t *)"k", .key_len = 1};
	struct fmt_record out;
	struct {
		const char *what;
		int offset, width; /* field to overwrite: byte offset and 1 or 4 bytes */
		uint32_t value;
		enum fmt_status want;
	} cases[] = {
	    {"type 0", 4, 1, 0, FMT_BAD_FIELD},
	    {"DROP with a key", 4, 1, FMT_DROP, FMT_BAD_FIELD},
	    {"type 5", 4, 1, 5, FMT_BAD_FIELD},
	    {"type 0xFF", 4, 1, 0xFF, FMT_BAD_FIELD},
	    {"flags 1", 5, 1, 1, FMT_BAD_FIELD},
	    {"key_len max+1", 24, 4, FMT_KEY_MAX + 1, FMT_BAD_FIELD},
	    {"key_len 2^32-1", 24, 4, UINT32_MAX, FMT_BAD_FIELD},
	    {"value_len max+1", 28, 4, FMT_VALUE_MAX + 1, FMT_BAD_FIELD},
	    {"value_len 2^32-1", 28, 4, UINT32_MAX, FMT_BAD_FIELD},
	    {"key_len max", 24, 4, FMT_KEY_MAX, FMT_SHORT},
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
		reseal(buf, 2, EPOCH);
		uint8_t *exact = copy_exact(buf, size);
		enum fmt_status st = fmt_decode_record(exact, size, EPOCH, &out);
		CHECK(st == cases[i].want, "%s: %s, want %s", cases[i].what, fmt_status_str(st),
		      fmt_status_str(cases[i].want));
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
	uint8_t value[500];
	memset(value, 'x', sizeof(value));
	for (int i = 0; used + fmt_record_size(sizeof(key), sizeof(value)) + 32 <= 2 * FMT_BLOCK;
	     i++) {
		int klen = snprintf(key, sizeof(key), "key:%d", i);
		struct fmt_record rec = {
		    .type = i % 3 == 2 ? FMT_DELETE : FMT_PUT,
		    .lsn = lsn++,
		    .key = (const uint8_t *)key,
		    .key_len = (uint32_t)klen,
		    .value = value,
		    .value_len = i % 3 == 2 ? 0 : (uint32_t)(i * 37 % sizeof(value)),
		};
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

static void test_status_strings(void)
{
	enum fmt_status all[] = {FMT_OK, FMT_SHORT, FMT_BAD_MAGIC, FMT_BAD_CRC, FMT_BAD_FIELD};
	for (size_t i = 0; i < 5; i++)
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(fmt_status_str(all[i]), fmt_status_str(all[j])) != 0,
			      "status strings %zu and %zu are the same", i, j);
	CHECK(fmt_status_str((enum fmt_status)77) != NULL, "unknown status string");
}

int main(void)
{
	test_round_trips();
	test_record_corruption();
	test_record_bad_fields();
	test_pads();
	test_commit_walk();
	test_segment_header();
	test_status_strings();
	return test_result();
}
