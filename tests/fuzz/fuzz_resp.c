/* fuzz_resp: libFuzzer target for the RESP request parser.  Each input is
 * parsed whole and again in pieces whose sizes come from the input itself;
 * both must give the same commands (or the same error), and no input may
 * crash or hang the parser.
 *
 *   make fuzz FUZZ_TARGETS=resp        run it (tests/fuzz/fuzz.sh)
 *   build/fuzz/fuzz_resp INPUT         replay one input
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Appends what the parser makes of `in` (fed `step(i)` bytes at a time) to out:
 * one line per command, "E:<error>" at an error. */
static size_t describe(const uint8_t *in, size_t len, size_t seed, char *out, size_t cap)
{
	static const struct resp_limits lim = {
	    .max_bulk_len = 4096, .max_multibulk_len = 64, .max_inline_len = 256};
	struct resp_parser p;
	resp_parser_init(&p, &lim);
	uint8_t *buf = malloc(len + 1);
	size_t have = 0, fed = 0, w = 0;
	bool stop = false;
	while (!stop && fed < len) {
		size_t n = seed == 0 ? len : 1 + (seed * 31 + fed) % 13;
		if (n > len - fed)
			n = len - fed;
		memcpy(buf + have, in + fed, n);
		have += n;
		fed += n;
		for (;;) {
			struct resp_command cmd;
			size_t used;
			enum resp_parse_status st = resp_parse(&p, buf, have, &used, &cmd);
			if (st == RESP_PARSE_MORE)
				break;
			if (st == RESP_PARSE_ERROR) {
				w += (size_t)snprintf(out + w, cap - w, "E:%s\n", p.error);
				stop = true;
				break;
			}
			if (used == 0 || used > have)
				abort();
			if (st == RESP_PARSE_DONE)
				for (size_t i = 0; i < cmd.argc && w < cap; i++)
					w += (size_t)snprintf(out + w, cap - w, "%zu:%.*s%c",
					                      cmd.argv_len[i], (int)cmd.argv_len[i],
					                      (const char *)cmd.argv[i],
					                      i + 1 == cmd.argc ? '\n' : ' ');
			memmove(buf, buf + used, have - used);
			have -= used;
			if (w >= cap)
				w = cap - 1;
		}
	}
	free(buf);
	resp_parser_free(&p);
	return w;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char a[1 << 16], b[1 << 16];
	if (size == 0)
		return 0;
	size_t la = describe(data + 1, size - 1, 0, a, sizeof(a));
	size_t lb = describe(data + 1, size - 1, 1 + data[0], b, sizeof(b));
	if (la != lb || memcmp(a, b, la) != 0)
		abort(); /* the split changed the result */
	return 0;
}
