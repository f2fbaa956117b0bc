/* crc32c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of every on-disk record and segment header (see format.h).
 *
 * Convention (as in iSCSI, ext4, RocksDB's crc32c::Extend): the register is
 * inverted on entry and on exit inside the function, so
 *   crc32c(0, "123456789", 9) == 0xE3069283
 * and a result is the seed that continues it:
 *   crc32c(crc32c(0, a, n), b, m) == crc32c(0, a || b, n + m).
 *
 * The implementation is chosen once, at the first call, from what the CPU
 * offers: the SSE4.2 crc32 instruction on x86-64, the ARMv8 CRC extension on
 * aarch64 Linux, otherwise a portable slicing-by-8 table.  All give the same
 * results; every function here is thread-safe and may be called before main().
 */
#ifndef RINGKV_CRC32C_H
#define RINGKV_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Returns the CRC-32C of buf[0..len) continued from `crc` (0 to start).  buf may
 * be NULL when len is 0. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The same, always in portable software.  For tests that compare it with the
 * hardware path, and for benchmarks. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* Which implementation crc32c() uses: "sse4.2", "armv8" or "software" (a
 * static string, for the start-up log). */
const char *crc32c_impl(void);

#endif
