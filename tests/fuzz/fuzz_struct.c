/* fuzz_struct: libFuzzer target for the scripts' struct library
 * (service/cmd_struct.c).  An input is a start position (its first byte), a
 * format (up to the first newline) and data (the rest): struct.size(format),
 * struct.unpack(format, data, start), and struct.pack(format, ...) with what
 * unpack gave, or else with a fixed mix of numbers (edge values) and strings.
 * Errors are expected; no input may crash, hang, leak or reach undefined
 * behaviour.
 *
 *   make fuzz FUZZ_TARGETS=struct      run it (tests/fuzz/fuzz.sh)
 *   build/fuzz/fuzz_struct INPUT       replay one input
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "service/cmd_struct.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static const char check[] =
    "local st, fmt, s, start = ...\n"
    "pcall(st.size, fmt)\n"
    "local v = {pcall(st.unpack, fmt, s, start)}\n"
    "if v[1] and #v > 2 then\n"
    "  pcall(st.pack, fmt, unpack(v, 2, #v - 1))\n"
    "else\n"
    "  pcall(st.pack, fmt, -1, 2^63, s, 0/0, -2^64, 1e300, 'x', 1/0, 0.5, s, -0.5, 255)\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (L == NULL) {
		L = luaL_newstate();
		luaL_openlibs(L);
		if (luaL_loadbuffer(L, check, sizeof(check) - 1, "=check") != 0)
			abort();
		lua_setfield(L, LUA_REGISTRYINDEX, "check");
		lua_pushcfunction(L, cmd_luaopen_struct);
		lua_call(L, 0, 1);
		lua_setfield(L, LUA_REGISTRYINDEX, "st");
	}
	if (size == 0)
		return 0;
	/* start positions 1.., and a few out of range (0, negative, huge) */
	static const double starts[] = {0, -1, -8, 9007199254740992.0, 1e300};
	double start = data[0] < 5 ? starts[data[0]] : (double)(data[0] - 4);
	const uint8_t *fmt = data + 1, *nl = memchr(fmt, '\n', size - 1);
	size_t flen = nl != NULL ? (size_t)(nl - fmt) : size - 1;
	const uint8_t *rest = nl != NULL ? nl + 1 : data + size;
	lua_getfield(L, LUA_REGISTRYINDEX, "check");
	lua_getfield(L, LUA_REGISTRYINDEX, "st");
	lua_pushlstring(L, (const char *)fmt, flen);
	lua_pushlstring(L, (const char *)rest, (size_t)(data + size - rest));
	lua_pushnumber(L, start);
	if (lua_pcall(L, 4, 0, 0) != 0) {
		fprintf(stderr, "fuzz_struct: %s\n", lua_tostring(L, -1));
		abort();
	}
	lua_gc(L, LUA_GCCOLLECT, 0);
	return 0;
}
