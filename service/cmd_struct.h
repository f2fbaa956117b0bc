/* cmd_struct: the struct library of Lua scripts (cmd_struct.c). */
#ifndef RINGKV_CMD_STRUCT_H
#define RINGKV_CMD_STRUCT_H

#include <lua.h>

/* Opens the library: pushes its table (pack, unpack, size). */
int cmd_luaopen_struct(lua_State *L);

#endif
