/* cmd_msgpack: the `cmsgpack` library of Redis's Lua scripts (pack, unpack,
 * unpack_one, unpack_limit), MessagePack as Redis 7.0's lua_cmsgpack writes
 * and reads it — so the bytes a script builds are the same on both servers:
 *   - a number that is an int64 packs as the smallest integer form
 *     (positive/negative fixint, uint8..64, int8..64); any other number as a
 *     float 32 when that is exact, else a float 64;
 *   - a string as fixstr / str 8 / str 16 / str 32;
 *   - a table whose keys are exactly 1..n as an array, any other as a map (in
 *     lua_next order); tables nested 16 deep pack as nil;
 *   - booleans and nil as themselves; other types as nil.
 * unpack reads fixint, uint/int 8..64 (uint 64 as signed, as Redis), nil,
 * booleans, float 32/64, str 8..32, arrays and maps (fix, 16 and 32), and
 * fails on anything else, bin included ("Bad data format in input."), or on
 * a cut object ("Missing bytes in input.").
 */
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "cmd_msgpack.h"

#define NESTING_MAX 16 /* tables deeper than this pack as nil (Redis's) */

/* ---- pack ---------------------------------------------------------------- */

/* The bytes being packed: a C buffer (a luaL_Buffer cannot share the stack
 * with the walk of a table). */
struct mp_buf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void add(struct mp_buf *b, const void *data, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 64;
		while (cap < b->len + n)
			cap *= 2;
		char *q = realloc(b->p, cap);
		if (q == NULL) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void add_byte(struct mp_buf *b, uint8_t c)
{
	add(b, &c, 1);
}

static void put_be(struct mp_buf *b, uint8_t tag, uint64_t v, int bytes)
{
	uint8_t out[9] = {tag};
	for (int i = 0; i < bytes; i++)
		out[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
	add(b, out, (size_t)bytes + 1);
}

static void pack_int(struct mp_buf *b, int64_t n)
{
	if (n >= 0) {
		if (n <= 127)
			add_byte(b, (uint8_t)n);
		else if (n <= 0xff)
			put_be(b, 0xcc, (uint64_t)n, 1);
		else if (n <= 0xffff)
			put_be(b, 0xcd, (uint64_t)n, 2);
		else if (n <= 0xffffffffLL)
			put_be(b, 0xce, (uint64_t)n, 4);
		else
			put_be(b, 0xcf, (uint64_t)n, 8);
	} else {
		if (n >= -32)
			add_byte(b, (uint8_t)(int8_t)n);
		else if (n >= -128)
			put_be(b, 0xd0, (uint64_t)n, 1);
		else if (n >= -32768)
			put_be(b, 0xd1, (uint64_t)n, 2);
		else if (n >= -2147483648LL)
			put_be(b, 0xd2, (uint64_t)n, 4);
		else
			put_be(b, 0xd3, (uint64_t)n, 8);
	}
}

static void pack_number(struct mp_buf *b, lua_Number d)
{
	if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
	    (lua_Number)(int64_t)d == d) {
		pack_int(b, (int64_t)d);
		return;
	}
	float f = (float)d;
	if ((double)f == d) { /* (NaN: a float 64, as Redis) */
		uint32_t bits;
		memcpy(&bits, &f, 4);
		put_be(b, 0xca, bits, 4);
	} else {
		uint64_t bits;
		memcpy(&bits, &d, 8);
		put_be(b, 0xcb, bits, 8);
	}
}

static void pack_string(struct mp_buf *b, const char *s, size_t len)
{
	if (len < 32)
		add_byte(b, (uint8_t)(0xa0 | len));
	else if (len <= 0xff)
		put_be(b, 0xd9, len, 1);
	else if (len <= 0xffff)
		put_be(b, 0xda, len, 2);
	else
		put_be(b, 0xdb, len, 4);
	add(b, s, len);
}

/* Whether the table at the top has exactly the keys 1..n. */
static bool is_array(lua_State *L)
{
	lua_Number max = 0, count = 0;
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		lua_pop(L, 1);
		lua_Number n;
		if (lua_type(L, -1) != LUA_TNUMBER || (n = lua_tonumber(L, -1)) <= 0 ||
		    n != floor(n)) {
			lua_pop(L, 1);
			return false;
		}
		if (n > max)
			max = n;
		count++;
	}
	return max == count;
}

static void pack_value(lua_State *L, struct mp_buf *b, int level);

/* The table at the top (left there). */
static void pack_table(lua_State *L, struct mp_buf *b, int level)
{
	if (is_array(L)) {
		size_t n = lua_objlen(L, -1);
		if (n <= 15)
			add_byte(b, (uint8_t)(0x90 | n));
		else if (n <= 0xffff)
			put_be(b, 0xdc, n, 2);
		else
			put_be(b, 0xdd, n, 4);
		for (size_t i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, (int)i);
			pack_value(L, b, level + 1);
		}
		return;
	}
	size_t n = 0;
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		lua_pop(L, 1);
		n++;
	}
	if (n <= 15)
		add_byte(b, (uint8_t)(0x80 | n));
	else if (n <= 0xffff)
		put_be(b, 0xde, n, 2);
	else
		put_be(b, 0xdf, n, 4);
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		lua_pushvalue(L, -2);
		lua_insert(L, -2);           /* key, key copy, value */
		lua_pushvalue(L, -2);        /* ... the key copy on top */
		pack_value(L, b, level + 1); /* the key */
		lua_remove(L, -2);           /* key, value */
		pack_value(L, b, level + 1); /* the value */
	}
}

/* The value at the top, popped. */
static void pack_value(lua_State *L, struct mp_buf *b, int level)
{
	luaL_checkstack(L, 8, "cmsgpack: nesting");
	int t = lua_type(L, -1);
	if (t == LUA_TTABLE && level >= NESTING_MAX)
		t = LUA_TNIL;
	size_t len;
	const char *s;
	switch (t) {
	case LUA_TBOOLEAN:
		add_byte(b, lua_toboolean(L, -1) ? 0xc3 : 0xc2);
		break;
	case LUA_TNUMBER:
		pack_number(b, lua_tonumber(L, -1));
		break;
	case LUA_TSTRING:
		s = lua_tolstring(L, -1, &len);
		pack_string(b, s, len);
		break;
	case LUA_TTABLE:
		pack_table(L, b, level);
		break;
	default:
		add_byte(b, 0xc0);
	}
	lua_pop(L, 1);
}

static int l_pack(lua_State *L)
{
	int n = lua_gettop(L);
	if (n == 0)
		return luaL_argerror(L, 0, "MessagePack pack needs input.");
	struct mp_buf b = {0};
	for (int i = 1; i <= n; i++) {
		lua_pushvalue(L, i);
		pack_value(L, &b, 0);
	}
	if (b.oom) {
		free(b.p);
		return luaL_error(L, "out of memory packing MessagePack");
	}
	lua_pushlstring(L, b.p != NULL ? b.p : "", b.len);
	free(b.p);
	return 1;
}

/* ---- unpack -------------------------------------------------------------- */

enum { CUR_OK, CUR_EOF, CUR_BADFMT };

struct mp_cur {
	const uint8_t *p;
	size_t left;
	int err;
};

static bool need(struct mp_cur *c, size_t n)
{
	if (c->left < n) {
		c->err = CUR_EOF;
		return false;
	}
	return true;
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
	uint64_t v = 0;
	for (int i = 0; i < bytes; i++)
		v = v << 8 | p[i];
	return v;
}

static void unpack_value(lua_State *L, struct mp_cur *c);

static void unpack_string(lua_State *L, struct mp_cur *c, size_t hdr, size_t len)
{
	if (!need(c, hdr + len))
		return;
	lua_pushlstring(L, (const char *)c->p + hdr, len);
	c->p += hdr + len;
	c->left -= hdr + len;
}

static void unpack_array(lua_State *L, struct mp_cur *c, size_t hdr, size_t n)
{
	c->p += hdr;
	c->left -= hdr;
	luaL_checkstack(L, 4, "cmsgpack: nesting");
	lua_newtable(L);
	for (size_t i = 1; i <= n && c->err == CUR_OK; i++) {
		unpack_value(L, c);
		if (c->err != CUR_OK)
			return;
		lua_rawseti(L, -2, (int)i);
	}
}

static void unpack_map(lua_State *L, struct mp_cur *c, size_t hdr, size_t n)
{
	c->p += hdr;
	c->left -= hdr;
	luaL_checkstack(L, 4, "cmsgpack: nesting");
	lua_newtable(L);
	for (size_t i = 0; i < n && c->err == CUR_OK; i++) {
		unpack_value(L, c);
		if (c->err != CUR_OK)
			return;
		unpack_value(L, c);
		if (c->err != CUR_OK)
			return;
		if (lua_isnil(L, -2)) /* (a nil key cannot be set) */
			lua_pop(L, 2);
		else
			lua_settable(L, -3);
	}
}

/* One object at c onto the stack (or c->err set, the stack as it may be). */
static void unpack_value(lua_State *L, struct mp_cur *c)
{
	if (!need(c, 1))
		return;
	uint8_t t = c->p[0];
	static const int sizes[] = {1, 2, 4, 8};
	if (t <= 0x7f || t >= 0xe0) { /* positive / negative fixint */
		lua_pushnumber(L, t <= 0x7f ? (lua_Number)t : (lua_Number)(int8_t)t);
		c->p++;
		c->left--;
		return;
	}
	if ((t & 0xe0) == 0xa0) {
		unpack_string(L, c, 1, t & 0x1f);
		return;
	}
	if ((t & 0xf0) == 0x90) {
		unpack_array(L, c, 1, t & 0x0f);
		return;
	}
	if ((t & 0xf0) == 0x80) {
		unpack_map(L, c, 1, t & 0x0f);
		return;
	}
	if (t >= 0xcc && t <= 0xd3) { /* uint 8..64, int 8..64 */
		int bytes = sizes[(t - 0xcc) & 3];
		if (!need(c, 1 + (size_t)bytes))
			return;
		uint64_t v = get_be(c->p + 1, bytes);
		lua_Number n;
		if (t == 0xcf)
			n = (lua_Number)(int64_t)v; /* (Redis reads uint 64 as signed) */
		else if (t <= 0xce)
			n = (lua_Number)v;
		else if (bytes == 1)
			n = (int8_t)v;
		else if (bytes == 2)
			n = (int16_t)v;
		else if (bytes == 4)
			n = (int32_t)v;
		else
			n = (lua_Number)(int64_t)v;
		lua_pushnumber(L, n);
		c->p += 1 + (size_t)bytes;
		c->left -= 1 + (size_t)bytes;
		return;
	}
	switch (t) {
	case 0xc0:
	case 0xc2:
	case 0xc3:
		if (t == 0xc0)
			lua_pushnil(L);
		else
			lua_pushboolean(L, t == 0xc3);
		c->p++;
		c->left--;
		return;
	case 0xca:
	case 0xcb: {
		int bytes = t == 0xca ? 4 : 8;
		if (!need(c, 1 + (size_t)bytes))
			return;
		uint64_t v = get_be(c->p + 1, bytes);
		if (bytes == 4) {
			uint32_t u = (uint32_t)v;
			float f;
			memcpy(&f, &u, 4);
			lua_pushnumber(L, f);
		} else {
			double d;
			memcpy(&d, &v, 8);
			lua_pushnumber(L, d);
		}
		c->p += 1 + (size_t)bytes;
		c->left -= 1 + (size_t)bytes;
		return;
	}
	case 0xd9:
	case 0xda:
	case 0xdb: {
		int bytes = t == 0xd9 ? 1 : t == 0xda ? 2 : 4;
		if (!need(c, 1 + (size_t)bytes))
			return;
		unpack_string(L, c, 1 + (size_t)bytes, get_be(c->p + 1, bytes));
		return;
	}
	case 0xdc:
	case 0xdd:
	case 0xde:
	case 0xdf: {
		int bytes = (t == 0xdc || t == 0xde) ? 2 : 4;
		if (!need(c, 1 + (size_t)bytes))
			return;
		size_t n = get_be(c->p + 1, bytes);
		if (t <= 0xdd)
			unpack_array(L, c, 1 + (size_t)bytes, n);
		else
			unpack_map(L, c, 1 + (size_t)bytes, n);
		return;
	}
	default:
		c->err = CUR_BADFMT;
	}
}

/* Redis's mp_unpack_full: up to `limit` objects from byte `offset` (0 and
 * 0: all of them, returned alone); with a limit or an offset the offset after
 * them comes first (-1 once the input is used up). */
static int unpack_full(lua_State *L, lua_Integer limit, lua_Integer offset)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	bool all = limit == 0 && offset == 0;
	if (offset < 0 || limit < 0)
		return luaL_error(L, "Invalid request to unpack with offset of %d and limit of %d.",
		                  (int)offset, (int)len);
	if ((size_t)offset > len)
		return luaL_error(L, "Start offset %d greater than input length %d.", (int)offset,
		                  (int)len);
	if (all)
		limit = INT_MAX;
	struct mp_cur c = {(const uint8_t *)s + offset, len - (size_t)offset, CUR_OK};
	int base = lua_gettop(L), cnt = 0;
	for (; c.left > 0 && cnt < limit; cnt++) {
		luaL_checkstack(L, 4, "cmsgpack: too many objects");
		unpack_value(L, &c);
		if (c.err == CUR_EOF)
			return luaL_error(L, "Missing bytes in input.");
		if (c.err == CUR_BADFMT)
			return luaL_error(L, "Bad data format in input.");
	}
	if (all)
		return cnt;
	lua_pushinteger(L, c.left == 0 ? -1 : (lua_Integer)(len - c.left));
	lua_insert(L, base + 1);
	return cnt + 1;
}

static int l_unpack(lua_State *L)
{
	return unpack_full(L, 0, 0);
}

static int l_unpack_one(lua_State *L)
{
	return unpack_full(L, 1, luaL_optinteger(L, 2, 0));
}

static int l_unpack_limit(lua_State *L)
{
	return unpack_full(L, luaL_checkinteger(L, 2), luaL_optinteger(L, 3, 0));
}

int cmd_luaopen_cmsgpack(lua_State *L)
{
	static const luaL_Reg fns[] = {{"pack", l_pack},
	                               {"unpack", l_unpack},
	                               {"unpack_one", l_unpack_one},
	                               {"unpack_limit", l_unpack_limit},
	                               {NULL, NULL}};
	lua_newtable(L);
	luaL_register(L, NULL, fns);
	lua_pushliteral(L, "lua-cmsgpack");
	lua_setfield(L, -2, "_NAME");
	lua_pushliteral(L, "0.4.0");
	lua_setfield(L, -2, "_VERSION");
	return 1;
}
