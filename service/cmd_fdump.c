/* cmd_fdump: FUNCTION DUMP's payload (cmd_fdump.h). */
#include "cmd_fdump.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define OPCODE_FUNCTION2 0xf5                  /* RDB_OPCODE_FUNCTION2 */
#define FOOTER           10                    /* version (2) and CRC-64 (8) */
#define CRC64_POLY       0x95ac9329ac4bc9b5ull /* Jones, reflected */
#define LZF_EXPANSION    132 /* most bytes LZF gets out of one: a 2-byte reference of 264 */

uint64_t fdump_crc64(uint64_t crc, const void *p, size_t len)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < len; i++) {
		crc ^= b[i];
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? (crc >> 1) ^ CRC64_POLY : crc >> 1;
	}
	return crc;
}

static int grow(uint8_t **buf, size_t *len, size_t more)
{
	uint8_t *p = realloc(*buf, *len + more);
	if (p == NULL)
		return -ENOMEM;
	*buf = p;
	return 0;
}

int fdump_add(uint8_t **buf, size_t *buf_len, const uint8_t *code, size_t len)
{
	if (grow(buf, buf_len, 1 + 9 + len) < 0)
		return -ENOMEM;
	uint8_t *p = *buf + *buf_len;
	*p++ = OPCODE_FUNCTION2;
	/* RDB length: 6 bits, 14 bits, or 0x80 and 32 bits / 0x81 and 64 bits
	 * (big endian) */
	if (len < (1u << 6)) {
		*p++ = (uint8_t)len;
	} else if (len < (1u << 14)) {
		*p++ = (uint8_t)(0x40 | (len >> 8));
		*p++ = (uint8_t)len;
	} else if (len <= UINT32_MAX) {
		*p++ = 0x80;
		for (int i = 3; i >= 0; i--)
			*p++ = (uint8_t)(len >> (8 * i));
	} else {
		*p++ = 0x81;
		for (int i = 7; i >= 0; i--)
			*p++ = (uint8_t)((uint64_t)len >> (8 * i));
	}
	memcpy(p, code, len);
	*buf_len = (size_t)(p + len - *buf);
	return 0;
}

int fdump_finish(uint8_t **buf, size_t *buf_len)
{
	if (grow(buf, buf_len, FOOTER) < 0)
		return -ENOMEM;
	uint8_t *p = *buf + *buf_len;
	p[0] = FDUMP_RDB_VERSION & 0xff;
	p[1] = FDUMP_RDB_VERSION >> 8;
	uint64_t crc = fdump_crc64(0, *buf, *buf_len + 2);
	for (int i = 0; i < 8; i++)
		p[2 + i] = (uint8_t)(crc >> (8 * i));
	*buf_len += FOOTER;
	return 0;
}

/* An RDB length at *p (< end): 0 with *out, or -1. */
static int read_len(const uint8_t **p, const uint8_t *end, uint64_t *out, bool *encoded)
{
	const uint8_t *q = *p;
	if (q >= end)
		return -1;
	uint8_t b = *q++;
	*encoded = false;
	switch (b >> 6) {
	case 0:
		*out = b & 0x3f;
		break;
	case 1:
		if (q >= end)
			return -1;
		*out = (uint64_t)(b & 0x3f) << 8 | *q++;
		break;
	case 2: {
		int n = b == 0x80 ? 4 : b == 0x81 ? 8 : 0;
		if (n == 0 || end - q < n)
			return -1;
		uint64_t v = 0;
		for (int i = 0; i < n; i++)
			v = v << 8 | *q++;
		*out = v;
		break;
	}
	default: /* an encoded string: its encoding */
		*encoded = true;
		*out = b & 0x3f;
	}
	*p = q;
	return 0;
}

/* liblzf's format: a control byte < 32 copies that many + 1 literal bytes;
 * else a back reference of (ctrl >> 5) + 2 bytes (7: plus the next byte), at
 * distance ((ctrl & 31) << 8 | next byte) + 1.  Returns 0 when exactly
 * out_len bytes came out. */
static int lzf_decompress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
	const uint8_t *ip = in, *in_end = in + in_len;
	size_t o = 0;
	while (ip < in_end) {
		unsigned ctrl = *ip++;
		if (ctrl < 32) {
			size_t n = ctrl + 1;
			if ((size_t)(in_end - ip) < n || out_len - o < n)
				return -1;
			memcpy(out + o, ip, n);
			ip += n;
			o += n;
			continue;
		}
		size_t n = ctrl >> 5;
		if (n == 7) {
			if (ip >= in_end)
				return -1;
			n += *ip++;
		}
		if (ip >= in_end)
			return -1;
		size_t back = ((size_t)(ctrl & 0x1f) << 8 | *ip++) + 1;
		n += 2;
		if (back > o || out_len - o < n)
			return -1;
		for (size_t i = 0; i < n; i++, o++)
			out[o] = out[o - back]; /* (may overlap what it writes) */
	}
	return o == out_len ? 0 : -1;
}

int fdump_walk(const uint8_t *p, size_t len, int (*fn)(void *arg, const uint8_t *code, size_t len),
               void *arg, const char **err)
{
	*err = "ERR DUMP payload version or checksum are wrong";
	if (len < FOOTER)
		return -EINVAL;
	const uint8_t *end = p + len - FOOTER;
	unsigned version = end[0] | (unsigned)end[1] << 8;
	uint64_t crc = 0;
	for (int i = 7; i >= 0; i--)
		crc = crc << 8 | end[2 + i];
	if (version > FDUMP_RDB_VERSION || fdump_crc64(0, p, len - 8) != crc)
		return -EINVAL;
	while (p < end) {
		if (*p++ != OPCODE_FUNCTION2) {
			*err = "ERR given type is not a function";
			return -EINVAL;
		}
		*err = "ERR Failed loading library payload";
		uint64_t n;
		bool encoded;
		if (read_len(&p, end, &n, &encoded) < 0)
			return -EINVAL;
		if (!encoded) {
			if ((uint64_t)(end - p) < n)
				return -EINVAL;
			int r = fn(arg, p, (size_t)n);
			if (r != 0)
				return r;
			p += n;
			continue;
		}
		/* Only LZF among the encodings can hold a library (the others are
		 * integers). */
		uint64_t clen, ulen;
		if (n != 3 || read_len(&p, end, &clen, &encoded) < 0 || encoded ||
		    read_len(&p, end, &ulen, &encoded) < 0 || encoded ||
		    (uint64_t)(end - p) < clen || ulen == 0 || ulen > LZF_EXPANSION * clen)
			return -EINVAL;
		uint8_t *code = malloc((size_t)ulen);
		if (code == NULL) {
			*err = "ERR out of memory";
			return -ENOMEM;
		}
		if (lzf_decompress(p, (size_t)clen, code, (size_t)ulen) < 0) {
			free(code);
			return -EINVAL;
		}
		int r = fn(arg, code, (size_t)ulen);
		free(code);
		if (r != 0)
			return r;
		p += clen;
	}
	*err = NULL;
	return 0;
}
