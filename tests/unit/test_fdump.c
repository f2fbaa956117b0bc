/* test_fdump: FUNCTION DUMP's payload (service/cmd_fdump.c) — Redis's
 * CRC-64 check value, a round trip of libraries of every RDB length form, an
 * LZF-compressed library as Redis writes them, and every corruption refused:
 * a flipped byte, a newer RDB version, truncation, a wrong opcode, a length
 * or back reference past the end. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "service/cmd_fdump.h"
#include "testutil.h"

struct seen {
	size_t n;
	size_t lens[8];
	uint8_t first[8];
};

static int collect(void *arg, const uint8_t *code, size_t len)
{
	struct seen *s = arg;
	if (s->n < 8) {
		s->lens[s->n] = len;
		s->first[s->n] = len ? code[0] : 0;
	}
	s->n++;
	return 0;
}

static void check_crc(void)
{
	/* crc64 Jones, the check value Redis's crc64.c tests */
	CHECK(fdump_crc64(0, "123456789", 9) == 0xe9c6d914c4b8d9caull, "crc64 check value");
	CHECK(fdump_crc64(fdump_crc64(0, "1234", 4), "56789", 5) == 0xe9c6d914c4b8d9caull,
	      "crc64 chains");
}

static void check_round_trip(void)
{
	size_t sizes[] = {0, 1, 63, 64, 16383, 16384, 100000};
	uint8_t *buf = NULL;
	size_t len = 0;
	for (size_t i = 0; i < 7; i++) {
		uint8_t *code = malloc(sizes[i] + 1);
		memset(code, 'a' + (int)i, sizes[i] + 1);
		CHECK(fdump_add(&buf, &len, code, sizes[i]) == 0, "add %zu", sizes[i]);
		free(code);
	}
	CHECK(fdump_finish(&buf, &len) == 0, "finish");
	struct seen s = {0};
	const char *err;
	CHECK(fdump_walk(buf, len, collect, &s, &err) == 0, "walk: %s", err ? err : "");
	CHECK(s.n == 7, "libraries: %zu", s.n);
	for (size_t i = 0; i < 7 && i < s.n; i++)
		CHECK(s.lens[i] == sizes[i] && (sizes[i] == 0 || s.first[i] == 'a' + i),
		      "library %zu: %zu bytes", i, s.lens[i]);
	/* every single flipped byte is refused (CRC, or version) */
	size_t refused = 0;
	for (size_t i = 0; i < len; i += 97) {
		buf[i] ^= 0x20;
		struct seen t = {0};
		refused += fdump_walk(buf, len, collect, &t, &err) == -EINVAL;
		buf[i] ^= 0x20;
	}
	CHECK(refused == (len + 96) / 97, "flipped bytes refused: %zu", refused);
	for (size_t cut = 0; cut < len; cut += 1001) {
		struct seen t = {0};
		CHECK(fdump_walk(buf, cut, collect, &t, &err) == -EINVAL, "truncated at %zu", cut);
	}
	free(buf);
}

/* Appends the footer to p[0..n) in place (p has room for 10 more). */
static size_t seal(uint8_t *p, size_t n, unsigned version)
{
	p[n] = (uint8_t)version;
	p[n + 1] = (uint8_t)(version >> 8);
	uint64_t crc = fdump_crc64(0, p, n + 2);
	for (int i = 0; i < 8; i++)
		p[n + 2 + i] = (uint8_t)(crc >> (8 * i));
	return n + 10;
}

static void check_lzf_and_corruption(void)
{
	/* "a" then a back reference of 9 at distance 1: ten 'a's, LZF-encoded
	 * (0xc3: an RDB string encoded with LZF; lengths 5 compressed, 10 plain) */
	uint8_t p[64] = {0xf5, 0xc3, 5, 10, 0x00, 'a', 0xe0, 0x00, 0x00};
	size_t n = seal(p, 9, FDUMP_RDB_VERSION);
	struct seen s = {0};
	const char *err;
	CHECK(fdump_walk(p, n, collect, &s, &err) == 0 && s.n == 1 && s.lens[0] == 10 &&
	          s.first[0] == 'a',
	      "LZF library: %zu libraries", s.n);
	/* a back reference before the start */
	uint8_t q[64] = {0xf5, 0xc3, 5, 10, 0x00, 'a', 0xe0, 0x00, 0x05};
	n = seal(q, 9, FDUMP_RDB_VERSION);
	CHECK(fdump_walk(q, n, collect, &s, &err) == -EINVAL, "LZF reference before the start");
	/* the plain length claims more than there is */
	uint8_t r[64] = {0xf5, 40, 'x'};
	n = seal(r, 3, FDUMP_RDB_VERSION);
	CHECK(fdump_walk(r, n, collect, &s, &err) == -EINVAL, "length past the end");
	/* another opcode */
	uint8_t t[64] = {0xf6, 1, 'x'};
	n = seal(t, 3, FDUMP_RDB_VERSION);
	CHECK(fdump_walk(t, n, collect, &s, &err) == -EINVAL && strstr(err, "not a function"),
	      "another opcode");
	/* a newer RDB version */
	uint8_t v[64] = {0xf5, 1, 'x'};
	n = seal(v, 3, FDUMP_RDB_VERSION + 1);
	CHECK(fdump_walk(v, n, collect, &s, &err) == -EINVAL && strstr(err, "version"),
	      "newer version");
	/* an empty payload (no library) is valid */
	uint8_t e[16];
	n = seal(e, 0, FDUMP_RDB_VERSION);
	struct seen none = {0};
	CHECK(fdump_walk(e, n, collect, &none, &err) == 0 && none.n == 0, "empty payload");
}

int main(void)
{
	check_crc();
	check_round_trip();
	check_lzf_and_corruption();
	return test_result();
}
