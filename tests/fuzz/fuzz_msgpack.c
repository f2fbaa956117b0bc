/* fuzz_msgpack: libFuzzer target for the scripts' cmsgpack library
 * (service/cmd_msgpack.c).  Each input is unpacked whole (cmsgpack.unpack)
 * and, with an offset and a limit taken from its first bytes,
 * piecewise (unpack_limit, unpack_one); whatever it decodes is packed
 * again, and those bytes must unpack without an error.  No input may crash,
 * hang or leak.
 *
 *   make fuzz FUZZ_TARGETS=msgpack     run it (tests/fuzz/fuzz.sh)
 *   build/fuzz/fuzz_msgpack INPUT      replay one input
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "service/cmd_msgpack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

/* unpack(s); what it gives packs, and that unpacks again. */
static const char check[] =
    "local mp, s, limit, offset = ...\n"
    "local ok, err = pcall(function()\n"
    "  local v = {mp.unpack(s)}\n"
    "  if #v > 0 then\n"
    "    local p = mp.pack(unpack(v))\n"
    "    local ok2, e2 = pcall(mp.unpack, p)\n"
    "    if not ok2 then error('FUZZ what was packed does not unpack: ' .. tostring(e2)) end\n"
    "  end\n"
    "end)\n"
    "if not ok and type(err) == 'string' and err:find('FUZZ') then error(err) end\n"
    "pcall(mp.unpack_limit, s, limit, offset)\n"
    "pcall(mp.unpack_one, s, offset)\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (L == NULL) {
		L = luaL_newstate();
		luaL_openlibs(L);
		if (luaL_loadbuffer(L, check, sizeof(check) - 1, "=check") != 0)
			abort();
		lua_setfield(L, LUA_REGISTRYINDEX, "check");
		lua_pushcfunction(L, cmd_luaopen_cmsgpack);
		lua_call(L, 0, 1);
		lua_setfield(L, LUA_REGISTRYINDEX, "mp");
	}
	lua_getfield(L, LUA_REGISTRYINDEX, "check");
	lua_getfield(L, LUA_REGISTRYINDEX, "mp");
	lua_pushlstring(L, (const char *)data, size);
	lua_pushinteger(L, size > 0 ? data[0] % 8 : 0);
	lua_pushinteger(L, size > 1 ? data[1] % (size + 1) : 0);
	if (lua_pcall(L, 4, 0, 0) != 0) {
		fprintf(stderr, "fuzz_msgpack: %s\n", lua_tostring(L, -1));
		abort();
	}
	lua_gc(L, LUA_GCCOLLECT, 0);
	return 0;
}
