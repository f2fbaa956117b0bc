/* test_crc32c: CRC-32C known vectors, chaining, and the dispatched (hardware)
 * path against the software one and a bit-by-bit reference on every length
 * 0..300 at every alignment; prints both throughputs as information. */
#include <stdint.h>
#include <string.h>

#include "storage/crc32c.h"
#include "testutil.h"

#define MAX_LEN    300
#define MAX_OFFSET 8

/* The definition, one bit at a time: independent of the tables under test. */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
	uint32_t c = ~crc;
	while (len-- > 0) {
		c ^= *p++;
		for (int bit = 0; bit < 8; bit++)
			c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
	}
	return ~c;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng_next(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}

typedef uint32_t crc_fn(uint32_t crc, const void *buf, size_t len);

static void check_vectors(const char *name, crc_fn *fn)
{
	uint8_t zeros[32], ones[32], ascending[32];
	memset(zeros, 0, sizeof(zeros));
	memset(ones, 0xFF, sizeof(ones));
	for (int i = 0; i < 32; i++)
		ascending[i] = (uint8_t)i;

	CHECK(fn(0, "123456789", 9) == 0xE3069283u, "%s: check value %08x", name,
	      fn(0, "123456789", 9));
	CHECK(fn(0, zeros, 32) == 0x8A9136AAu, "%s: 32 zeros %08x", name, fn(0, zeros, 32));
	CHECK(fn(0, ones, 32) == 0x62A8AB43u, "%s: 32 x 0xFF %08x", name, fn(0, ones, 32));
	CHECK(fn(0, ascending, 32) == 0x46DD794Eu, "%s: 0..31 %08x", name, fn(0, ascending, 32));
	CHECK(fn(0, NULL, 0) == 0, "%s: empty input", name);
	CHECK(fn(0x12345678u, NULL, 0) == 0x12345678u, "%s: empty input keeps the seed", name);
}

/* Every split of one buffer: crc(crc(a), b) == crc(a || b). */
static void check_chaining(const char *name, crc_fn *fn)
{
	uint8_t buf[MAX_LEN];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)rng_next();
	uint32_t whole = fn(0, buf, sizeof(buf));
	for (size_t split = 0; split <= sizeof(buf); split++) {
		uint32_t chained = fn(fn(0, buf, split), buf + split, sizeof(buf) - split);
		CHECK(chained == whole, "%s: split at %zu gives %08x, whole %08x", name, split,
		      chained, whole);
	}
}

/* Each (length, offset) in its own exact-size heap buffer, so ASan catches any
 * read past the end; the data starts `offset` bytes into the allocation. */
static void check_against_reference(void)
{
	for (size_t len = 0; len <= MAX_LEN; len++)
		for (size_t offset = 0; offset < MAX_OFFSET; offset++) {
			uint8_t *alloc = malloc(offset + len);
			if (alloc == NULL) {
				fprintf(stderr, "FAIL: out of memory\n");
				exit(1);
			}
			uint8_t *data = alloc + offset;
			for (size_t i = 0; i < len; i++)
				data[i] = (uint8_t)rng_next();
			uint32_t seed = (len % 3 == 0) ? 0 : rng_next();
			uint32_t want = crc32c_bitwise(seed, data, len);
			uint32_t hw = crc32c(seed, data, len);
			uint32_t sw = crc32c_sw(seed, data, len);
			CHECK(hw == want, "crc32c (%s) len %zu offset %zu: %08x, want %08x",
			      crc32c_impl(), len, offset, hw, want);
			CHECK(sw == want, "crc32c_sw len %zu offset %zu: %08x, want %08x", len,
			      offset, sw, want);
			free(alloc);
		}
}

static volatile uint32_t crc_sink; /* keeps the timed loop from being optimized away */

/* Prints GB/s of `fn` over a 1 MiB buffer (information only, not checked). */
static void report_throughput(const char *name, crc_fn *fn)
{
	size_t size = 1u << 20;
	uint8_t *buf = malloc(size);
	if (buf == NULL)
		return;
	for (size_t i = 0; i < size; i++)
		buf[i] = (uint8_t)i;
	uint32_t crc = 0;
	unsigned long rounds = 0;
	double start = test_now(), elapsed;
	do {
		crc = fn(crc, buf, size);
		rounds++;
		elapsed = test_now() - start;
	} while (elapsed < 0.2);
	crc_sink = crc;
	printf("info: %-8s %6.2f GB/s on a 1 MiB buffer\n", name,
	       (double)rounds * (double)size / elapsed / 1e9);
	free(buf);
}

int main(void)
{
	printf("info: crc32c implementation: %s\n", crc32c_impl());
	check_vectors("crc32c", crc32c);
	check_vectors("crc32c_sw", crc32c_sw);
	check_chaining("crc32c", crc32c);
	check_chaining("crc32c_sw", crc32c_sw);
	check_against_reference();
	report_throughput(crc32c_impl(), crc32c);
	report_throughput("software", crc32c_sw);
	return test_result();
}
