/* fuzz_fdump: libFuzzer target for FUNCTION RESTORE's payload reader
 * (service/cmd_fdump.c).  The input gets a valid footer (RDB version and
 * CRC-64) appended, so the walk gets past the checksum and parses whatever
 * the bytes say: opcodes, RDB lengths of every form, LZF-compressed strings.
 * Every library it yields must lie inside what was given or what LZF
 * produced; no input may crash, hang or leak.
 *
 *   make fuzz FUZZ_TARGETS=fdump     run it (tests/fuzz/fuzz.sh)
 *   build/fuzz/fuzz_fdump INPUT      replay one input
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "service/cmd_fdump.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static int visit(void *arg, const uint8_t *code, size_t len)
{
	uint8_t sum = 0;
	(void)arg;
	for (size_t i = 0; i < len; i++) /* (ASan checks every byte is readable) */
		sum ^= code[i];
	sink = sum;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *p = malloc(size + 10);
	if (p == NULL)
		return 0;
	if (size > 0)
		memcpy(p, data, size);
	p[size] = FDUMP_RDB_VERSION;
	p[size + 1] = 0;
	uint64_t crc = fdump_crc64(0, p, size + 2);
	for (int i = 0; i < 8; i++)
		p[size + 2 + i] = (uint8_t)(crc >> (8 * i));
	const char *err;
	fdump_walk(p, size + 10, visit, NULL, &err);
	free(p);
	return 0;
}
