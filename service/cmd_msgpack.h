/* cmd_msgpack: the cmsgpack library of Lua scripts (cmd_msgpack.c). */
#ifndef RINGKV_CMD_MSGPACK_H
#define RINGKV_CMD_MSGPACK_H

#include <lua.h>

/* Opens the library: pushes its table (pack, unpack, unpack_one,
 * unpack_limit). */
int cmd_luaopen_cmsgpack(lua_State *L);

#endif
