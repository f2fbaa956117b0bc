/* cmd_struct: the `struct` library of Redis's Lua scripts (pack, unpack,
 * size), binary records as Redis 7.0's struct library (struct 0.2) builds and
 * reads them, so a script gets the same bytes, values and errors on both
 * servers. ringkv's own code, written from that behaviour and checked against
 * redis-server byte for byte (tests/integration/test_scripting.py).
 *
 * A format is read one character at a time up to its end (or a NUL byte):
 *   >  <       big / little endian from here on (little at the start)
 *   ![n]       items from here on aligned to min(their size, n); n a power of
 *              2, 8 without digits; no alignment at the start
 *   space      ignored
 *   x          one zero byte (skipped by unpack)
 *   b B h H    signed / unsigned char, short (1, 2 bytes)
 *   l L T      signed / unsigned long, size_t (8 bytes)
 *   i[n] I[n]  signed / unsigned integer of n bytes (4 without digits, 0..32)
 *   f d        float, double
 *   c[n]       n bytes (1 without digits); c0 packs a whole string, and in
 *              unpack takes its length from the value just unpacked
 *   s          a string and a NUL byte
 * Counts are decimal, at most INT_MAX.  The quirks kept because scripts see
 * them: an integer is converted to 64 bits as x86-64 does (out of range: the
 * "indefinite" 0x8000000000000000, or 0 for huge positives) and bytes past
 * the 8th are zeros (no sign extension); unpack uses the last 8 bytes read
 * and sign-extends sizes past 8 oddly (get_int);
 * alignment to a size that is not a power of 2 uses Redis's mask arithmetic;
 * size() skips unknown letters and digits that pack and unpack refuse.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "cmd_struct.h"

#define INT_SIZE_MAX  32 /* i[n] / I[n]: largest n */
#define ALIGN_DEFAULT 8  /* '!' without digits: x86-64's largest alignment */
#define ALIGN_START   1  /* no alignment until a '!' */
#define RESULT_SLOTS  2  /* stack slots unpack wants per format character */
#define TWO_POW_63    9223372036854775808.0

/* The state of a format being read. */
struct fmt {
	const char *p; /* next character */
	bool big;      /* byte order from here on */
	size_t align;  /* '!' */
};

/* ---- numbers as x86-64 converts them ------------------------------------ */

/* cvttsd2si: truncation, and INT64_MIN for NaN and anything out of range
 * (what Redis gets from a plain C cast, done here without undefined
 * behaviour). */
static int64_t trunc_i64(lua_Number d)
{
	if (d >= -TWO_POW_63 && d < TWO_POW_63)
		return (int64_t)d;
	return INT64_MIN;
}

/* A double cast to uint64_t / size_t as gcc compiles it on x86-64: below
 * 2^63 (or NaN) through trunc_i64, above it through trunc_i64(d - 2^63) with
 * the top bit flipped, so 2^64 and more become 0. */
static uint64_t trunc_u64(lua_Number d)
{
	if (!(d >= TWO_POW_63))
		return (uint64_t)trunc_i64(d);
	return (uint64_t)trunc_i64(d - TWO_POW_63) ^ ((uint64_t)1 << 63);
}

/* What pack stores for a number: negatives through the signed conversion,
 * the rest through the unsigned one. */
static uint64_t pack_bits(lua_Number d)
{
	if (d < 0)
		return (uint64_t)trunc_i64(d);
	return trunc_u64(d);
}

/* ---- reading the format ------------------------------------------------- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* isalnum in the C locale (size() lets these through). */
static bool is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* The decimal count at f->p (consumed), or dflt when there is none. */
static int read_count(lua_State *L, struct fmt *f, int dflt)
{
	if (!is_digit(*f->p))
		return dflt;
	int64_t n = 0;
	while (is_digit(*f->p)) {
		n = n * 10 + (*f->p++ - '0');
		if (n > INT_MAX)
			luaL_error(L, "integral size overflow");
	}
	return (int)n;
}

/* The size of option opt, reading its count if it takes one; 0 for 's',
 * 'c0', the controls and anything unknown. */
static size_t item_size(lua_State *L, struct fmt *f, char opt)
{
	switch (opt) {
	case 'b':
	case 'B':
	case 'x':
		return 1;
	case 'h':
	case 'H':
		return sizeof(short);
	case 'l':
	case 'L':
		return sizeof(long);
	case 'T':
		return sizeof(size_t);
	case 'f':
		return sizeof(float);
	case 'd':
		return sizeof(double);
	case 'c':
		return (size_t)read_count(L, f, 1);
	case 'i':
	case 'I': {
		int n = read_count(L, f, (int)sizeof(int));
		if (n > INT_SIZE_MAX)
			luaL_error(L, "integral size %d is larger than limit of %d", n,
			           INT_SIZE_MAX);
		return (size_t)n;
	}
	default:
		return 0;
	}
}

/* Zero bytes before an item of this size at pos.  Strings ('c') are never
 * aligned; the mask arithmetic is Redis's also when the size is not a power
 * of 2 (i3 at 4 goes to 6, i5 at 4 stays). */
static size_t padding(const struct fmt *f, char opt, size_t size, size_t pos)
{
	if (opt == 'c')
		return 0;
	size_t a = size < f->align ? size : f->align;
	if (a <= 1)
		return 0;
	return (a - (pos & (a - 1))) & (a - 1);
}

/* The options that are not items: byte order, alignment, spaces; anything
 * else is an error. */
static void control(lua_State *L, struct fmt *f, char opt)
{
	switch (opt) {
	case ' ':
		return;
	case '>':
	case '<':
		f->big = opt == '>';
		return;
	case '!': {
		int a = read_count(L, f, ALIGN_DEFAULT);
		if (a == 0 || (a & (a - 1)) != 0)
			luaL_error(L, "alignment %d is not a power of 2", a);
		f->align = (size_t)a;
		return;
	}
	default:
		luaL_argerror(L, 1, lua_pushfstring(L, "invalid format option '%c'", opt));
	}
}

static void fmt_init(struct fmt *f, const char *s)
{
	f->p = s;
	f->big = false;
	f->align = ALIGN_START;
}

/* ---- pack --------------------------------------------------------------- */

/* size bytes of v in the format's order; bytes past the 8th are zeros. */
static void put_int(luaL_Buffer *b, uint64_t v, size_t size, bool big)
{
	for (size_t k = 0; k < size; k++) {
		size_t i = big ? size - 1 - k : k; /* significance of the byte */
		luaL_addchar(b, i < 8 ? (char)(uint8_t)(v >> (8 * i)) : '\0');
	}
}

/* n bytes of a native (little-endian) object, reversed for big endian. */
static void put_raw(luaL_Buffer *b, const void *p, size_t n, bool big)
{
	const char *c = p;
	for (size_t k = 0; k < n; k++)
		luaL_addchar(b, c[big ? n - 1 - k : k]);
}

static int l_pack(lua_State *L)
{
	struct fmt f;
	fmt_init(&f, luaL_checkstring(L, 1));
	int arg = 2;
	size_t pos = 0;
	/* a nil after the arguments: the first one missing is "got nil" in the
	 * error, as Redis's (whose buffer starts above such a nil) */
	lua_pushnil(L);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	while (*f.p != '\0') {
		char opt = *f.p++;
		size_t size = item_size(L, &f, opt);
		size_t pad = padding(&f, opt, size, pos);
		for (size_t k = 0; k < pad; k++)
			luaL_addchar(&b, '\0');
		pos += pad;
		switch (opt) {
		case 'b':
		case 'B':
		case 'h':
		case 'H':
		case 'l':
		case 'L':
		case 'T':
		case 'i':
		case 'I':
			put_int(&b, pack_bits(luaL_checknumber(L, arg++)), size, f.big);
			break;
		case 'x':
			luaL_addchar(&b, '\0');
			break;
		case 'f': {
			float v = (float)luaL_checknumber(L, arg++);
			put_raw(&b, &v, sizeof(v), f.big);
			break;
		}
		case 'd': {
			double v = luaL_checknumber(L, arg++);
			put_raw(&b, &v, sizeof(v), f.big);
			break;
		}
		case 'c': {
			size_t len;
			const char *s = luaL_checklstring(L, arg, &len);
			if (size == 0)
				size = len;
			/* (Redis names the argument after the string's) */
			luaL_argcheck(L, len >= size, arg + 1, "string too short");
			luaL_addlstring(&b, s, size);
			arg++;
			break;
		}
		case 's': {
			size_t len;
			const char *s = luaL_checklstring(L, arg++, &len);
			luaL_addlstring(&b, s, len);
			luaL_addchar(&b, '\0');
			size = len + 1;
			break;
		}
		default:
			control(L, &f, opt);
		}
		pos += size;
	}
	luaL_pushresult(&b);
	return 1;
}

/* ---- unpack ------------------------------------------------------------- */

/* The integer in size bytes at s: the last 8 bytes read count.  A signed one
 * is sign-extended as Redis does it, with a mask of the bits from the sign
 * bit up whose shift count x86-64 takes modulo 64: sizes up to 8 and 16 get
 * the usual extension, the other sizes past 8 fill the bits from
 * (8 * size - 1) % 64 up whenever any of them is set (i9: from bit 7). */
static lua_Number get_int(const unsigned char *s, size_t size, bool big, bool is_signed)
{
	uint64_t v = 0;
	for (size_t k = 0; k < size; k++)
		v = (v << 8) | s[big ? k : size - 1 - k];
	if (!is_signed)
		return (lua_Number)v;
	uint64_t high = ~(uint64_t)0 << ((8 * size + 63) % 64);
	if (v & high)
		v |= high;
	return (lua_Number)(int64_t)v;
}

static void get_raw(void *p, const char *s, size_t n, bool big)
{
	char *c = p;
	for (size_t k = 0; k < n; k++)
		c[k] = s[big ? n - 1 - k : k];
}

/* Whether size bytes after pad fit from pos (no wrap-around: a huge start
 * position from a negative one never fits). */
static bool fits(size_t len, size_t pos, size_t pad, size_t size)
{
	return pos <= len && pad <= len - pos && size <= len - pos - pad;
}

static int l_unpack(lua_State *L)
{
	struct fmt f;
	fmt_init(&f, luaL_checkstring(L, 1));
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	/* (the start, as Redis, is the integer taken as a size_t: -1 is huge) */
	size_t pos = (size_t)luaL_optinteger(L, 3, 1);
	luaL_argcheck(L, pos > 0, 3, "offset must be 1 or greater");
	pos--;
	int n = 0; /* values pushed */
	while (*f.p != '\0') {
		luaL_checkstack(L, RESULT_SLOTS, "too many results");
		char opt = *f.p++;
		size_t size = item_size(L, &f, opt);
		size_t pad = padding(&f, opt, size, pos);
		luaL_argcheck(L, fits(len, pos, pad, size), 2, "data string too short");
		pos += pad;
		const unsigned char *s = (const unsigned char *)data + pos;
		switch (opt) {
		case 'b':
		case 'h':
		case 'l':
		case 'i':
		case 'B':
		case 'H':
		case 'L':
		case 'T':
		case 'I':
			lua_pushnumber(L, get_int(s, size, f.big, opt >= 'a'));
			n++;
			break;
		case 'x':
			break;
		case 'f': {
			float v;
			get_raw(&v, data + pos, sizeof(v), f.big);
			lua_pushnumber(L, v);
			n++;
			break;
		}
		case 'd': {
			double v;
			get_raw(&v, data + pos, sizeof(v), f.big);
			lua_pushnumber(L, v);
			n++;
			break;
		}
		case 'c':
			if (size == 0) {
				/* the length is the value just unpacked, which this replaces */
				if (n == 0 || !lua_isnumber(L, -1))
					return luaL_error(L, "format 'c0' needs a previous size");
				size = (size_t)trunc_u64(lua_tonumber(L, -1));
				lua_pop(L, 1);
				n--;
				luaL_argcheck(L, fits(len, pos, 0, size), 2,
				              "data string too short");
			}
			lua_pushlstring(L, data + pos, size);
			n++;
			break;
		case 's': {
			const char *end = memchr(data + pos, '\0', len - pos);
			if (end == NULL)
				return luaL_error(L, "unfinished string in data");
			size = (size_t)(end - (data + pos));
			lua_pushlstring(L, data + pos, size);
			n++;
			size++;
			break;
		}
		default:
			control(L, &f, opt);
		}
		pos += size;
	}
	lua_pushinteger(L, (lua_Integer)(pos + 1));
	return n + 1;
}

/* ---- size --------------------------------------------------------------- */

static int l_size(lua_State *L)
{
	struct fmt f;
	fmt_init(&f, luaL_checkstring(L, 1));
	size_t pos = 0;
	while (*f.p != '\0') {
		char opt = *f.p++;
		size_t size = item_size(L, &f, opt);
		pos += padding(&f, opt, size, pos);
		if (opt == 's')
			luaL_argerror(L, 1, "option 's' has no fixed size");
		if (opt == 'c' && size == 0)
			luaL_argerror(L, 1, "option 'c0' has no fixed size");
		if (!is_alnum(opt))
			control(L, &f, opt);
		pos += size;
	}
	lua_pushnumber(L, (lua_Number)pos);
	return 1;
}

int cmd_luaopen_struct(lua_State *L)
{
	static const luaL_Reg fns[] = {
	    {"pack", l_pack}, {"unpack", l_unpack}, {"size", l_size}, {NULL, NULL}};
	lua_newtable(L);
	luaL_register(L, NULL, fns);
	return 1;
}
