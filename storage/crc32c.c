/* crc32c: see crc32c.h for the convention.  Three backends compute the same
 * function; the first call (from any thread) picks one for the process. */
#include "crc32c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC32C_HAVE_SSE42 1
#endif

#if defined(__aarch64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define CRC32C_HAVE_ARMV8 1
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1UL << 7) /* the kernel's bit for the ARMv8 CRC32 instructions */
#endif
/* Compilers' own builtins rather than <arm_acle.h>, whose __crc32c* exist only
 * when the whole file is built with +crc (clang 14, GCC < 10); the attribute
 * that enables the extension for one function is spelled differently too. */
#ifdef __clang__
#define CRC32C_TARGET_CRC     __attribute__((target("crc")))
#define CRC32C_ARM_BYTE(c, b) __builtin_arm_crc32cb((c), (b))
#define CRC32C_ARM_WORD(c, w) __builtin_arm_crc32cd((c), (w))
#else
#define CRC32C_TARGET_CRC     __attribute__((target("+crc")))
#define CRC32C_ARM_BYTE(c, b) __builtin_aarch64_crc32cb((c), (b))
#define CRC32C_ARM_WORD(c, w) __builtin_aarch64_crc32cx((c), (w))
#endif
#endif

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, bit-reflected */

typedef uint32_t crc32c_fn(uint32_t crc, const void *buf, size_t len);

struct crc32c_backend {
	crc32c_fn *fn;
	const char *name; /* what crc32c_impl() reports */
};

/* ---- portable software: slicing-by-8 ---- */

/* sw_table[0] is the classic byte-at-a-time table; sw_table[k][b] is the CRC
 * register after byte b followed by k zero bytes.  Filled once, by
 * sw_table_init under sw_table_once, read-only afterwards. */
static uint32_t sw_table[8][256];
static pthread_once_t sw_table_once = PTHREAD_ONCE_INIT;

static void sw_table_init(void)
{
	for (uint32_t b = 0; b < 256; b++) {
		uint32_t c = b;
		for (int bit = 0; bit < 8; bit++)
			c = (c >> 1) ^ (CRC32C_POLY & (0u - (c & 1)));
		sw_table[0][b] = c;
	}
	for (uint32_t b = 0; b < 256; b++)
		for (int k = 1; k < 8; k++) {
			uint32_t prev = sw_table[k - 1][b];
			sw_table[k][b] = (prev >> 8) ^ sw_table[0][prev & 0xff];
		}
}

/* Reads 4 bytes as a little-endian word whatever the host's byte order (the
 * reflected CRC consumes the first byte in the low bits). */
static inline uint32_t load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = ~crc;

	pthread_once(&sw_table_once, sw_table_init);
	while (len >= 8) {
		uint32_t lo = c ^ load_le32(p);
		uint32_t hi = load_le32(p + 4);
		c = sw_table[7][lo & 0xff] ^ sw_table[6][(lo >> 8) & 0xff] ^
		    sw_table[5][(lo >> 16) & 0xff] ^ sw_table[4][lo >> 24] ^
		    sw_table[3][hi & 0xff] ^ sw_table[2][(hi >> 8) & 0xff] ^
		    sw_table[1][(hi >> 16) & 0xff] ^ sw_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		c = (c >> 8) ^ sw_table[0][(c ^ *p++) & 0xff];
	return ~c;
}

static const struct crc32c_backend backend_software = {crc32c_sw, "software"};

/* ---- x86-64: SSE4.2 crc32 instruction ---- */

#ifdef CRC32C_HAVE_SSE42
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *buf,
                                                               size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = ~crc;

	/* Byte steps up to 8-byte alignment, so the word loads never split a
	 * cache line. */
	while (len > 0 && ((uintptr_t)p & 7) != 0) {
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t word;
		memcpy(&word, p, 8);
		c = __builtin_ia32_crc32di(c, word);
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}

static const struct crc32c_backend backend_sse42 = {crc32c_sse42, "sse4.2"};
#endif

/* ---- aarch64: ARMv8 CRC32 extension ---- */

#ifdef CRC32C_HAVE_ARMV8
CRC32C_TARGET_CRC static uint32_t crc32c_armv8(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = ~crc;

	while (len > 0 && ((uintptr_t)p & 7) != 0) {
		c = CRC32C_ARM_BYTE(c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t word;
		memcpy(&word, p, 8); /* aarch64 Linux is little-endian */
		c = CRC32C_ARM_WORD(c, word);
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		c = CRC32C_ARM_BYTE(c, *p++);
	return ~c;
}

static const struct crc32c_backend backend_armv8 = {crc32c_armv8, "armv8"};
#endif

/* ---- dispatch ---- */

/* The chosen backend, NULL until the first call.  Threads racing on the first
 * call each probe the CPU and store the same pointer, so relaxed order is
 * enough: the backends are constant data. */
static _Atomic(const struct crc32c_backend *) crc32c_active;

static const struct crc32c_backend *crc32c_probe(void)
{
#ifdef CRC32C_HAVE_SSE42
	__builtin_cpu_init(); /* we may run before libgcc's own constructor */
	if (__builtin_cpu_supports("sse4.2"))
		return &backend_sse42;
#endif
#ifdef CRC32C_HAVE_ARMV8
	if (getauxval(AT_HWCAP) & HWCAP_CRC32)
		return &backend_armv8;
#endif
	return &backend_software;
}

static inline const struct crc32c_backend *crc32c_backend(void)
{
	const struct crc32c_backend *b = atomic_load_explicit(&crc32c_active, memory_order_relaxed);
	if (b == NULL) {
		b = crc32c_probe();
		atomic_store_explicit(&crc32c_active, b, memory_order_relaxed);
	}
	return b;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	return crc32c_backend()->fn(crc, buf, len);
}

const char *crc32c_impl(void)
{
	return crc32c_backend()->name;
}
