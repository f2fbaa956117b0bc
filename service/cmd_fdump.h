/* cmd_fdump: FUNCTION DUMP's payload — the bytes Redis 7.0 writes and reads,
 * so a dump moves between ringkv and Redis either way, and the file that
 * keeps the functions of a data directory (cmd_script.c).
 *
 * The payload is, for each library, the RDB opcode FUNCTION2 (0xf5) and the
 * library's code as an RDB string; then the RDB version (2 bytes, little
 * endian: 10 for Redis 7.0) and a CRC-64 (Jones, as Redis's crc64.c) of
 * everything before it (8 bytes, little endian).  Redis may write a code
 * LZF-compressed (RDB strings over 20 bytes); we read that form and write
 * plain strings, which Redis reads too. */
#ifndef RINGKV_CMD_FDUMP_H
#define RINGKV_CMD_FDUMP_H

#include <stddef.h>
#include <stdint.h>

#define FDUMP_RDB_VERSION 10 /* Redis 7.0's */

/* Redis's crc64 (Jones polynomial, reflected, init 0) of p, from crc. */
uint64_t fdump_crc64(uint64_t crc, const void *p, size_t len);

/* Appends library code (code, len) to the payload being built in *buf
 * (malloc'd, *buf_len bytes; start with NULL, 0).  Returns 0 or -ENOMEM. */
int fdump_add(uint8_t **buf, size_t *buf_len, const uint8_t *code, size_t len);

/* Ends the payload (version and checksum).  Returns 0 or -ENOMEM. */
int fdump_finish(uint8_t **buf, size_t *buf_len);

/* Calls fn(arg, code, len) for each library of payload p, in order, after
 * checking its version and checksum.  fn's non-zero return stops the walk and
 * is returned.  Returns 0, fn's value, or -EINVAL with *err set to Redis's
 * error text ("ERR DUMP payload version or checksum are wrong", "ERR given
 * payload is not a valid function payload", ...). */
int fdump_walk(const uint8_t *p, size_t len, int (*fn)(void *arg, const uint8_t *code, size_t len),
               void *arg, const char **err);

#endif
