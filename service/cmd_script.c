/* cmd_script: Lua scripting — EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, SCRIPT.
 *
 * Each proactor has its own Lua 5.1 state with every script loaded; SCRIPT
 * LOAD, and EVAL of a script the proactor does not know yet, compile it on
 * every proactor (cmd_fan_all) before they reply, so a script is usable on
 * any connection as soon as one has loaded it; SCRIPT FLUSH clears them all.
 *
 * A script runs on its connection's proactor as a Lua coroutine, under the
 * holds of its declared KEYS (cmd_held_start, cmd_multi.c: the EXEC
 * machinery): no other client's command runs on those keys until it ends.
 * redis.call and redis.pcall are C functions that yield the command to
 * run_drive (the marker SIG first); it runs through the normal dispatch as a
 * command of the held run (cmd_held_call), on whatever shard owns its key,
 * while the proactor serves everything else; its reply is converted to Lua
 * and the coroutine resumed with it.  Lua 5.1 cannot yield across pcall, so
 * the prelude below replaces pcall, xpcall and the coroutine functions with
 * versions that run the protected call in a coroutine of its own and pass
 * the script's yields through.  A key the script did not declare makes it
 * start over holding that key too, as long as it has not written
 * (run_restart).  Its writes are acknowledged once applied (store.h, "early
 * acknowledgement"); the EVAL replies when they are durable.
 *
 * Sandbox (as Redis 7.0): the globals are Redis's list, read-only (a proxy
 * table whose __newindex refuses; reading a missing global is an error), the
 * libraries too; KEYS and ARGV are set in the hidden globals table before
 * each resume (several scripts may be in flight on one proactor, one
 * resumed at a time).  math.random is Redis's rand48: one sequence per
 * proactor, never reseeded (Redis 7.0 does not reseed either).
 *
 * A script that has run longer than server.busy_reply_threshold_ms (Redis's
 * busy-reply-threshold) is busy; SCRIPT KILL, from any connection, stops the
 * busy scripts that have not written (UNKILLABLE if all have) at their next
 * redis.call or count hook.  A script looping in Lua holds its proactor:
 * SCRIPT KILL then comes from a connection of another one.  What differs
 * from Redis: docs/COMMANDS.md, "Scripting".
 */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "cmd.h"
#include "cmd_msgpack.h"
#include "cmd_script_int.h"
#include "cmd_struct.h"
#include "service/runtime/logging.h"
#include "shard.h"

extern int luaopen_cjson(lua_State *L); /* Debian's lua-cjson */
extern int luaopen_bit(lua_State *L);   /* Debian's lua-bitop */

#define HOOK_COUNT 100000 /* VM instructions between busy checks (Redis's) */
#define DEPTH_MAX  1000   /* nesting of a reply converted either way */
#define CHUNK_NAME "@user_script"
#define ATTEMPTS_MAX                                                                               \
	16 /* runs of a script that finds undeclared keys before it                                \
	      goes on without holds */
#define RAND48_MAX 0x7fffffff

static const char err_noscript[] = "NOSCRIPT No matching script. Please use EVAL.";
static const char err_ro[] = "ERR Write commands are not allowed from read-only scripts.";
static const char err_killed[] = "Script killed by user with SCRIPT KILL...";
static const char err_killed_reply[] = "ERR Script killed by user with SCRIPT KILL...";

/* ---- SHA-1 (FIPS 180-4), for script ids and redis.sha1hex --------------- */

static uint32_t rol32(uint32_t v, unsigned n)
{
	return (v << n) | (v >> (32 - n));
}

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
	uint32_t w[80];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 80; i++)
		w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
	for (int i = 0; i < 80; i++) {
		uint32_t f, k;
		if (i < 20) {
			f = (b & c) | (~b & d);
			k = 0x5a827999;
		} else if (i < 40) {
			f = b ^ c ^ d;
			k = 0x6ed9eba1;
		} else if (i < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8f1bbcdc;
		} else {
			f = b ^ c ^ d;
			k = 0xca62c1d6;
		}
		uint32_t t = rol32(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rol32(b, 30);
		b = a;
		a = t;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
}

void cmd_sha1_hex(const void *data, size_t len, char out[41])
{
	uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
	const uint8_t *p = data;
	size_t left = len;
	for (; left >= 64; left -= 64, p += 64)
		sha1_block(h, p);
	uint8_t tail[128] = {0};
	memcpy(tail, p, left);
	tail[left] = 0x80;
	size_t tail_len = left < 56 ? 64 : 128;
	uint64_t bits = (uint64_t)len * 8;
	for (int i = 0; i < 8; i++)
		tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
	sha1_block(h, tail);
	if (tail_len == 128)
		sha1_block(h, tail + 64);
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 20; i++) {
		uint8_t byte = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
		out[2 * i] = hex[byte >> 4];
		out[2 * i + 1] = hex[byte & 15];
	}
	out[40] = '\0';
}

/* ---- state ----------------------------------------------------------------- */

struct script_px *script_pxs;
static struct script_busy *script_busy;
unsigned script_npx;
static atomic_int busy_ms = 5000;
static atomic_ulong kill_gen; /* SCRIPT KILLs so far: a busy run that has not
                                 written stops when it changes */
static atomic_bool stopping;  /* the server is shutting down: every run stops */

void cmd_script_stop_all(void)
{
	atomic_store(&stopping, true);
}
static char sig; /* its address is the marker redis.call yields first */

void cmd_script_set_busy_ms(int ms)
{
	atomic_store(&busy_ms, ms);
}

bool cmd_is_script(const struct cmd_def *d)
{
	return d->fn == cmd_eval || d->fn == cmd_evalsha || d->fn == cmd_eval_ro ||
	       d->fn == cmd_evalsha_ro || d->fn == cmd_fcall || d->fn == cmd_fcall_ro;
}

struct script_px *sp_self(void)
{
	return &script_pxs[px_current()->id];
}

/* ---- Redis's rand48 (math.random) ----------------------------------------- */

static void rand48_seed(uint64_t *s, int32_t seed)
{
	*s = ((uint64_t)(uint32_t)seed << 16 | 0x330e) & 0xffffffffffffull;
}

static int32_t rand48_next(uint64_t *s)
{
	*s = (*s * 0x5deece66dull + 0xb) & 0xffffffffffffull;
	return (int32_t)(*s >> 17);
}

static int l_math_random(lua_State *L)
{
	uint64_t *s = &sp_self()->rand48;
	lua_Number v = (lua_Number)(rand48_next(s) % RAND48_MAX) / (lua_Number)RAND48_MAX;
	switch (lua_gettop(L)) {
	case 0:
		lua_pushnumber(L, v);
		break;
	case 1: {
		int u = luaL_checkint(L, 1);
		luaL_argcheck(L, 1 <= u, 1, "interval is empty");
		lua_pushnumber(L, floor(v * u) + 1);
		break;
	}
	case 2: {
		int l = luaL_checkint(L, 1), u = luaL_checkint(L, 2);
		luaL_argcheck(L, l <= u, 2, "interval is empty");
		lua_pushnumber(L, floor(v * (u - l + 1)) + l);
		break;
	}
	default:
		return luaL_error(L, "wrong number of arguments");
	}
	return 1;
}

static int l_math_randomseed(lua_State *L)
{
	rand48_seed(&sp_self()->rand48, luaL_checkint(L, 1));
	return 0;
}

/* ---- the redis table's C functions ------------------------------------------ */

/* Pushes Redis's error table {err = "CODE msg"} for an error reply text
 * ("-CODE msg", or "msg" which gets the code ERR), as luaPushErrorBuff. */
void push_error_table(lua_State *L, const char *s, size_t len)
{
	luaL_Buffer b;
	const char *code = "ERR";
	size_t code_len = 3;
	if (len > 0 && s[0] == '-') {
		const char *sp = memchr(s, ' ', len);
		if (sp != NULL) {
			code = s + 1;
			code_len = (size_t)(sp - s - 1);
			len -= (size_t)(sp + 1 - s);
			s = sp + 1;
		} else {
			s++;
			len--;
		}
	}
	while (len > 0 && (s[len - 1] == '\r' || s[len - 1] == '\n'))
		len--;
	lua_newtable(L);
	lua_pushliteral(L, "err");
	luaL_buffinit(L, &b);
	luaL_addlstring(&b, code, code_len);
	luaL_addchar(&b, ' ');
	luaL_addlstring(&b, s, len);
	luaL_pushresult(&b);
	lua_rawset(L, -3);
}

/* Raises Redis's error table {err = "ERR msg"} (how Redis's own library
 * functions fail: the reply names the script and line, not a Lua position). */
static int raise_error(lua_State *L, const char *msg)
{
	push_error_table(L, msg, strlen(msg));
	return lua_error(L);
}

static int l_error_reply(lua_State *L)
{
	if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TSTRING) {
		push_error_table(L, "wrong number or type of arguments", 33);
		return 1; /* (Redis returns it rather than raising it) */
	}
	size_t len;
	const char *s = lua_tolstring(L, 1, &len);
	if (len > 0 && s[0] == '-') {
		push_error_table(L, s, len);
		return 1;
	}
	lua_pushliteral(L, "-");
	lua_pushvalue(L, 1);
	lua_concat(L, 2);
	s = lua_tolstring(L, -1, &len);
	push_error_table(L, s, len);
	return 1;
}

static int l_status_reply(lua_State *L)
{
	if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TSTRING) {
		push_error_table(L, "wrong number or type of arguments", 33);
		return 1;
	}
	lua_newtable(L);
	lua_pushliteral(L, "ok");
	lua_pushvalue(L, 1);
	lua_rawset(L, -3);
	return 1;
}

static int l_sha1hex(lua_State *L)
{
	if (lua_gettop(L) != 1)
		return raise_error(L, "wrong number of arguments");
	size_t len;
	const char *s = lua_tolstring(L, 1, &len);
	char hex[41];
	cmd_sha1_hex(s != NULL ? s : "", s != NULL ? len : 0, hex);
	lua_pushstring(L, hex);
	return 1;
}

static int l_log(lua_State *L)
{
	int argc = lua_gettop(L);
	if (argc < 2)
		return raise_error(L, "redis.log() requires two arguments or more.");
	if (!lua_isnumber(L, 1))
		return raise_error(L, "First argument must be a number (log level).");
	int level = (int)lua_tonumber(L, 1);
	if (level < 0 || level > 3)
		return raise_error(L, "Invalid debug level.");
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (int i = 2; i <= argc; i++) {
		size_t len;
		const char *s = lua_tolstring(L, i, &len);
		if (s == NULL)
			continue;
		if (i > 2)
			luaL_addchar(&b, ' ');
		luaL_addlstring(&b, s, len);
	}
	luaL_pushresult(&b);
	const char *msg = lua_tostring(L, -1);
	/* Redis's levels: 0 debug, 1 verbose, 2 notice, 3 warning */
	if (level == 3)
		LOG_WARN("script: %s", msg);
	else if (level == 2)
		LOG_INFO("script: %s", msg);
	else
		LOG_DEBUG("script: %s", msg);
	return 0;
}

static int l_setresp(lua_State *L)
{
	struct script_run *r = sp_self()->running;
	if (lua_gettop(L) != 1)
		return raise_error(L, "redis.setresp() requires one argument.");
	int v = (int)lua_tonumber(L, 1);
	if (v != 2 && v != 3)
		return raise_error(L, "RESP version must be 2 or 3.");
	if (r != NULL)
		r->resp = (unsigned)v;
	return 0;
}

static int l_set_repl(lua_State *L)
{
	if (lua_gettop(L) != 1)
		return raise_error(L, "redis.set_repl() requires two arguments."); /* (sic) */
	int v = (int)lua_tonumber(L, 1);
	if (v < 0 || v > 3)
		return raise_error(L, "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, "
		                      "REPL_ALL or REPL_NONE.");
	return 0; /* (no replication here: the flags have no effect) */
}

/* redis.call and redis.pcall: the coroutine yields (SIG, raise, thread,
 * command...) to run_drive, which resumes it with the reply.  They are C
 * functions so that `return redis.call(...)` keeps the script's frame (a
 * Lua function there would be a tail call), which names the line in errors.
 * redis.call's error is raised by run_hook in `thread` as soon as it runs
 * again (5.1 resumes a C function's caller directly, with no code of the C
 * function after the yield). */
static int call_yield(lua_State *L, bool raise)
{
	lua_pushlightuserdata(L, &sig);
	lua_insert(L, 1);
	lua_pushboolean(L, raise);
	lua_insert(L, 2);
	lua_pushthread(L);
	lua_insert(L, 3);
	return lua_yield(L, lua_gettop(L));
}

static int l_call(lua_State *L)
{
	return call_yield(L, true);
}

static int l_pcall(lua_State *L)
{
	return call_yield(L, false);
}

static int l_replicate_commands(lua_State *L)
{
	lua_pushboolean(L, 1); /* (Redis 7: always effects replication) */
	return 1;
}

static int l_is_c(lua_State *L)
{
	lua_pushboolean(L, lua_iscfunction(L, 1));
	return 1;
}

/* ---- the prelude --------------------------------------------------------------- */

/* Run once per state with the marker as its argument.  Defines redis.call
 * and redis.pcall, the yield-through pcall/xpcall/coroutine functions, and
 * the read-only globals; returns the visible globals proxy, the hidden
 * globals table, and the globals a function library's code sees while it
 * loads (redis.register_function, redis.log and the constants: nothing
 * else, as Redis 7.0), which cmd_function.c swaps in under the proxy. */
static const char prelude[] =
    "local SIG, redis_c, is_c, register = ...\n"
    "local real_pcall, real_xpcall, real_setmetatable = pcall, xpcall, setmetatable\n"
    "local next_, pairs_, ipairs_ = next, pairs, ipairs\n"
    "local co_create, co_resume, co_yield, co_status = coroutine.create,\n"
    "  coroutine.resume, coroutine.yield, coroutine.status\n"
    "local error, type, rawget, rawset, setmetatable, tostring, pairs =\n"
    "  error, type, rawget, rawset, setmetatable, tostring, pairs\n"
    "local redis = {}\n"
    "for k, v in pairs(redis_c) do redis[k] = v end\n"
    "redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3\n"
    "redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL =\n"
    "  0, 1, 2, 2, 3\n"
    "local function callable(f)\n"
    "  if type(f) == 'function' then return true end\n"
    "  local mt = getmetatable(f)\n"
    "  return type(mt) == 'table' and rawget(mt, '__call') ~= nil\n"
    "end\n"
    "local function unerr(e)\n"
    "  if type(e) == 'table' and type(rawget(e, 'err')) == 'string' then\n"
    "    return rawget(e, 'err')\n"
    "  end\n"
    "  return e\n"
    "end\n"
    "local function pdone(co, ok, ...)\n"
    "  if not ok then return false, unerr((...)) end\n"
    "  if co_status(co) == 'dead' then return true, ... end\n"
    "  return pdone(co, co_resume(co, co_yield(...)))\n"
    "end\n"
    "local function pcall_y(f, ...)\n"
    "  if is_c(f) and f ~= redis_c.call and f ~= redis_c.pcall then\n"
    "    return real_pcall(f, ...)\n"
    "  end\n"
    "  if not callable(f) then return false, 'attempt to call a ' .. type(f) .. ' value' end\n"
    "  local co = co_create(type(f) == 'function' and not is_c(f) and f or\n"
    "    function(...) return f(...) end)\n"
    "  return pdone(co, co_resume(co, ...))\n"
    "end\n"
    "local function xdone(co, h, ok, ...)\n"
    "  if not ok then return false, h((...)) end\n"
    "  if co_status(co) == 'dead' then return true, ... end\n"
    "  return xdone(co, h, co_resume(co, co_yield(...)))\n"
    "end\n"
    "local function xpcall_y(f, h)\n"
    "  if is_c(f) and f ~= redis_c.call and f ~= redis_c.pcall then\n"
    "    return real_xpcall(f, h)\n"
    "  end\n"
    "  if not callable(f) then return false, h('attempt to call a ' .. type(f) .. ' value') end\n"
    "  local co = co_create(type(f) == 'function' and not is_c(f) and f or\n"
    "    function() return f() end)\n"
    "  return xdone(co, h, co_resume(co))\n"
    "end\n"
    "local function udone(co, ok, ...)\n"
    "  if ok and co_status(co) == 'suspended' and (...) == SIG then\n"
    "    return udone(co, co_resume(co, co_yield(...)))\n"
    "  end\n"
    "  return ok, ...\n"
    "end\n"
    "local function resume_y(co, ...) return udone(co, co_resume(co, ...)) end\n"
    "local function wdone(ok, ...)\n"
    "  if not ok then error((...), 0) end\n"
    "  return ...\n"
    "end\n"
    "local coroutine_y = {}\n"
    "for k, v in pairs(coroutine) do coroutine_y[k] = v end\n"
    "coroutine_y.resume = resume_y\n"
    "coroutine_y.wrap = function(f)\n"
    "  local co = co_create(f)\n"
    "  return function(...) return wdone(resume_y(co, ...)) end\n"
    "end\n"
    "local protected = setmetatable({}, {__mode = 'k'})\n"
    "local function readonly() error('Attempt to modify a readonly table', 2) end\n"
    "local function ro(t)\n"
    "  local p = setmetatable({}, {__index = t, __newindex = readonly, __metatable = false})\n"
    "  protected[p] = t\n"
    "  return p\n"
    "end\n"
    "local function under(t) return protected[t] or t end\n"
    "local names = {'assert', 'collectgarbage', 'error', 'gcinfo', 'getmetatable', 'load',\n"
    "  'loadstring', 'rawequal', 'select', 'tonumber', 'tostring', 'type', 'unpack',\n"
    "  '_VERSION'}\n"
    "local hidden = {}\n"
    "for _, n in pairs(names) do hidden[n] = _G[n] end\n"
    "hidden.pcall, hidden.xpcall = pcall_y, xpcall_y\n"
    "hidden.rawget = function(t, k) return rawget(under(t), k) end\n"
    "hidden.next = function(t, k) return next_(under(t), k) end\n"
    "hidden.pairs = function(t) return pairs_(under(t)) end\n"
    "hidden.ipairs = function(t) return ipairs_(under(t)) end\n"
    "hidden.setmetatable = function(t, mt)\n"
    "  if protected[t] then error('Attempt to modify a readonly table', 0) end\n"
    "  return real_setmetatable(t, mt)\n"
    "end\n"
    "hidden.rawset = function(t, k, v)\n"
    "  if protected[t] then error('Attempt to modify a readonly table', 0) end\n"
    "  return rawset(t, k, v)\n"
    "end\n"
    "hidden.redis = ro(redis)\n"
    "hidden.coroutine = ro(coroutine_y)\n"
    "for _, n in pairs({'string', 'table', 'math', 'cjson', 'bit', 'cmsgpack',\n"
    "  'struct'}) do\n"
    "  hidden[n] = ro(_G[n])\n"
    "end\n"
    "local smt = getmetatable('')\n"
    "smt.__index = hidden.string\n"
    "smt.__metatable = ro({__index = hidden.string})\n"
    "hidden.KEYS, hidden.ARGV = {}, {}\n"
    "local missing = {__metatable = false, __index = function(_, n)\n"
    "  error(\"Script attempted to access nonexistent global variable '\" .. tostring(n) ..\n"
    "    \"'\", 2)\n"
    "end}\n"
    "setmetatable(hidden, missing)\n"
    "local visible = ro(hidden)\n"
    "hidden._G = visible\n"
    "local load_redis = {register_function = register, log = redis.log,\n"
    "  REDIS_VERSION = redis.REDIS_VERSION, REDIS_VERSION_NUM = redis.REDIS_VERSION_NUM}\n"
    "for _, n in pairs({'LOG_DEBUG', 'LOG_VERBOSE', 'LOG_NOTICE', 'LOG_WARNING'}) do\n"
    "  load_redis[n] = redis[n]\n"
    "end\n"
    "setmetatable(load_redis, missing)\n"
    "local load_hidden = setmetatable({redis = ro(load_redis)}, missing)\n"
    "return visible, hidden, load_hidden\n";

/* lua_atpanic: an error outside any protected call (out of memory while
 * setting up a call) cannot be recovered from with the state consistent. */
static int script_panic(lua_State *L)
{
	LOG_ERROR("Lua state out of memory or corrupt: %s; ringkv-server stops (restart it; "
	          "lower storage.cache_size if memory is short)",
	          lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
	abort();
}

static int open_state(lua_State *L)
{
	static const luaL_Reg libs[] = {{"", luaopen_base},
	                                {LUA_TABLIBNAME, luaopen_table},
	                                {LUA_STRLIBNAME, luaopen_string},
	                                {LUA_MATHLIBNAME, luaopen_math},
	                                {"cjson", luaopen_cjson},
	                                {"bit", luaopen_bit},
	                                {"cmsgpack", cmd_luaopen_cmsgpack},
	                                {"struct", cmd_luaopen_struct}};
	for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
		lua_pushcfunction(L, libs[i].func);
		lua_pushstring(L, libs[i].name);
		lua_call(L, 1, 1);
		if (libs[i].name[0] != '\0' && lua_istable(L, -1))
			lua_setglobal(L, libs[i].name); /* (cjson and bit do not set it) */
		else
			lua_pop(L, 1);
	}
	lua_getglobal(L, "math");
	lua_pushcfunction(L, l_math_random);
	lua_setfield(L, -2, "random");
	lua_pushcfunction(L, l_math_randomseed);
	lua_setfield(L, -2, "randomseed");
	lua_pop(L, 1);
	if (luaL_loadbuffer(L, prelude, sizeof(prelude) - 1, "=prelude") != 0)
		return lua_error(L);
	lua_pushlightuserdata(L, &sig);
	lua_newtable(L);
	static const luaL_Reg redis_c[] = {{"call", l_call},
	                                   {"pcall", l_pcall},
	                                   {"error_reply", l_error_reply},
	                                   {"status_reply", l_status_reply},
	                                   {"sha1hex", l_sha1hex},
	                                   {"log", l_log},
	                                   {"setresp", l_setresp},
	                                   {"set_repl", l_set_repl},
	                                   {"replicate_commands", l_replicate_commands}};
	for (size_t i = 0; i < sizeof(redis_c) / sizeof(redis_c[0]); i++) {
		lua_pushcfunction(L, redis_c[i].func);
		lua_setfield(L, -2, redis_c[i].name);
	}
	lua_pushliteral(L, "7.0.0");
	lua_setfield(L, -2, "REDIS_VERSION");
	lua_pushnumber(L, 0x070000);
	lua_setfield(L, -2, "REDIS_VERSION_NUM");
	lua_pushcfunction(L, l_is_c);
	lua_pushcfunction(L, cmd_fn_register);
	lua_call(L, 4, 3); /* -> visible, hidden, load globals */
	return 3;
}

int cmd_script_init(unsigned n, char *err, size_t errlen)
{
	script_pxs = calloc(n, sizeof(*script_pxs));
	script_busy = aligned_alloc(64, n * sizeof(*script_busy));
	if (script_pxs == NULL || script_busy == NULL) {
		snprintf(err, errlen, "out of memory allocating the Lua states");
		return -ENOMEM;
	}
	script_npx = n;
	for (unsigned i = 0; i < n; i++) {
		struct script_px *sp = &script_pxs[i];
		atomic_init(&script_busy[i].busy, 0);
		atomic_init(&script_busy[i].busy_wrote, 0);
		sp->busy = &script_busy[i];
		sp->rand48 = 0x1234abcd330eull; /* (Redis never seeds: drand48's start) */
		sp->L = script_state_new();
		if (sp->L == NULL) {
			snprintf(err, errlen, "out of memory creating a Lua state");
			return -ENOMEM;
		}
		lua_atpanic(sp->L, script_panic);
		lua_pushcfunction(sp->L, open_state);
		if (lua_pcall(sp->L, 0, 3, 0) != 0) {
			snprintf(err, errlen, "setting up Lua failed: %s", lua_tostring(sp->L, -1));
			return -EINVAL;
		}
		sp->load_env_ref = luaL_ref(sp->L, LUA_REGISTRYINDEX);
		sp->globals_ref = luaL_ref(sp->L, LUA_REGISTRYINDEX); /* hidden */
		lua_replace(sp->L, LUA_GLOBALSINDEX);                 /* visible */
		lua_newtable(sp->L);
		sp->scripts_ref = luaL_ref(sp->L, LUA_REGISTRYINDEX);
		if (cmd_fn_init_state(sp) < 0) {
			snprintf(err, errlen, "out of memory setting up Lua functions");
			return -ENOMEM;
		}
	}
	return 0;
}

/* ---- loading scripts -------------------------------------------------------- */

/* The flags of a script's shebang line ("#!lua flags=no-writes,..."), or an
 * error (malloc'd "ERR ...").  Sets *read_only for no-writes. */
static char *shebang_flags(const uint8_t *body, size_t len, bool *read_only)
{
	*read_only = false;
	if (len < 2 || body[0] != '#' || body[1] != '!')
		return NULL;
	const uint8_t *nl = memchr(body, '\n', len);
	if (nl == NULL)
		return strdup("ERR Invalid script shebang");
	char *line = strndup((const char *)body, (size_t)(nl - body)), *save = NULL, *res = NULL;
	if (line == NULL)
		return strdup(cmd_err_oom);
	char *engine = strtok_r(line, " ", &save);
	if (engine == NULL || strcmp(engine, "#!lua") != 0) {
		if (engine == NULL || strcmp(engine, "#!") == 0)
			res = strdup("ERR Invalid script shebang");
		else if (asprintf(&res, "ERR Unexpected engine in script shebang: %s", engine) < 0)
			res = NULL;
		free(line);
		return res != NULL ? res : strdup(cmd_err_oom);
	}
	for (char *opt; res == NULL && (opt = strtok_r(NULL, " ", &save)) != NULL;) {
		if (strncmp(opt, "flags=", 6) != 0) {
			if (asprintf(&res, "ERR Unknown lua shebang option: %s", opt) < 0)
				res = strdup(cmd_err_oom);
			break;
		}
		char *save2 = NULL;
		for (char *f = strtok_r(opt + 6, ",", &save2); f != NULL;
		     f = strtok_r(NULL, ",", &save2)) {
			if (strcmp(f, "no-writes") == 0) {
				*read_only = true;
			} else if (strcmp(f, "allow-oom") != 0 && strcmp(f, "allow-stale") != 0 &&
			           strcmp(f, "no-cluster") != 0 &&
			           strcmp(f, "allow-cross-slot-keys") != 0) {
				if (asprintf(&res, "ERR Unexpected flag in script shebang: %s", f) <
				    0)
					res = strdup(cmd_err_oom);
				break;
			}
		}
	}
	free(line);
	return res;
}

/* Whether script sha has the flag `name` on sp (a "name:sha" entry of the
 * scripts table, which SCRIPT FLUSH clears too); set by script_set_flag. */
static bool script_flag(struct script_px *sp, const char *name, const char *sha)
{
	lua_State *L = sp->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->scripts_ref);
	lua_pushfstring(L, "%s:%s", name, sha);
	lua_rawget(L, -2);
	bool v = lua_toboolean(L, -1);
	lua_pop(L, 2);
	return v;
}

static void script_set_flag(struct script_px *sp, const char *name, const char *sha)
{
	lua_State *L = sp->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->scripts_ref);
	lua_pushfstring(L, "%s:%s", name, sha);
	lua_pushboolean(L, 1);
	lua_rawset(L, -3);
	lua_pop(L, 1);
}

/* Whether the calling proactor has the script `sha`; *read_only: it has
 * the no-writes flag. */
static bool script_known(struct script_px *sp, const char *sha, bool *read_only)
{
	lua_State *L = sp->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->scripts_ref);
	lua_getfield(L, -1, sha);
	bool have = !lua_isnil(L, -1);
	lua_pushfstring(L, "ro:%s", sha); /* (not 40 hex digits: no script's id) */
	lua_rawget(L, -3);
	*read_only = lua_toboolean(L, -1);
	lua_pop(L, 3);
	return have;
}

/* Compiles body on sp under sha (unless it has it), with its shebang's
 * flags.  Returns NULL, or the error to reply (malloc'd). */
static char *script_compile(struct script_px *sp, const char *sha, const uint8_t *body, size_t len)
{
	lua_State *L = sp->L;
	bool read_only;
	if (script_known(sp, sha, &read_only))
		return NULL;
	char *err = shebang_flags(body, len, &read_only);
	if (err != NULL)
		return err;
	/* A shebang line is compiled as a comment: line numbers stay the same. */
	uint8_t *copy = NULL;
	if (len >= 2 && body[0] == '#' && body[1] == '!') {
		copy = malloc(len);
		if (copy == NULL)
			return strdup(cmd_err_oom);
		memcpy(copy, body, len);
		copy[0] = copy[1] = '-';
		body = copy;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->scripts_ref);
	int rc = luaL_loadbuffer(L, (const char *)body, len, CHUNK_NAME);
	free(copy);
	if (rc != 0) {
		if (asprintf(&err, "ERR Error compiling script (new function): %s",
		             lua_tostring(L, -1)) < 0)
			err = strdup(cmd_err_oom);
		lua_pop(L, 2);
		return err;
	}
	lua_setfield(L, -2, sha);
	if (read_only) {
		lua_pushfstring(L, "ro:%s", sha);
		lua_pushboolean(L, 1);
		lua_rawset(L, -3);
	}
	lua_pop(L, 1);
	return NULL;
}

/* ---- reply -> Lua ------------------------------------------------------------ */

/* Reads a RESP line from *p: its text and length; advances *p. */
static const char *reply_line(const uint8_t **p, const uint8_t *end, size_t *len)
{
	const uint8_t *s = *p + 1, *nl = memchr(s, '\r', (size_t)(end - s));
	if (nl == NULL)
		nl = end;
	*len = (size_t)(nl - s);
	*p = nl + 2 <= end ? nl + 2 : end;
	return (const char *)s;
}

static int64_t line_int(const char *s, size_t len)
{
	int64_t v = 0;
	resp_parse_int64((const uint8_t *)s, len, &v);
	return v;
}

/* Pushes the Lua value of the reply at *p (Redis's RESP -> Lua rules) and
 * advances *p past it.  Errors become {err = ...} tables. */
static void push_reply(lua_State *L, const uint8_t **p, const uint8_t *end, int depth)
{
	if (*p >= end || depth > DEPTH_MAX || !lua_checkstack(L, 8)) {
		lua_pushboolean(L, 0);
		*p = end;
		return;
	}
	char type = (char)**p;
	size_t len;
	const char *s = reply_line(p, end, &len);
	switch (type) {
	case '+':
		lua_newtable(L);
		lua_pushlstring(L, s, len);
		lua_setfield(L, -2, "ok");
		return;
	case '-':
		lua_newtable(L);
		lua_pushlstring(L, s, len);
		lua_setfield(L, -2, "err");
		return;
	case ':':
		lua_pushnumber(L, (lua_Number)line_int(s, len));
		return;
	case '_':
		lua_pushnil(L);
		return;
	case '#':
		lua_pushboolean(L, len > 0 && s[0] == 't');
		return;
	case ',': {
		char buf[64];
		snprintf(buf, sizeof(buf), "%.*s", (int)(len < 63 ? len : 63), s);
		lua_newtable(L);
		lua_pushnumber(L, strtod(buf, NULL));
		lua_setfield(L, -2, "double");
		return;
	}
	case '(':
		lua_newtable(L);
		lua_pushlstring(L, s, len);
		lua_setfield(L, -2, "big_number");
		return;
	case '$':
	case '=': {
		int64_t n = line_int(s, len);
		if (n < 0) {
			lua_pushboolean(L, 0);
			return;
		}
		if ((size_t)n > (size_t)(end - *p))
			n = end - *p;
		const char *data = (const char *)*p;
		*p += (size_t)n + 2 <= (size_t)(end - *p) ? (size_t)n + 2 : (size_t)(end - *p);
		if (type == '$') {
			lua_pushlstring(L, data, (size_t)n);
			return;
		}
		lua_newtable(L); /* verbatim: {verbatim_string = {format=, string=}} */
		lua_newtable(L);
		size_t f = n >= 4 ? 3 : 0;
		lua_pushlstring(L, data, f);
		lua_setfield(L, -2, "format");
		lua_pushlstring(L, data + (f ? 4 : 0), (size_t)n - (f ? 4 : 0));
		lua_setfield(L, -2, "string");
		lua_setfield(L, -2, "verbatim_string");
		return;
	}
	case '*':
	case '~':
	case '%':
	case '>': {
		int64_t n = line_int(s, len);
		if (n < 0) {
			lua_pushboolean(L, 0);
			return;
		}
		lua_newtable(L);
		if (type == '~' || type == '%')
			lua_newtable(L); /* the inner table of {set=} / {map=} */
		for (int64_t i = 0; i < n && *p < end; i++) {
			if (type == '%') {
				push_reply(L, p, end, depth + 1);
				push_reply(L, p, end, depth + 1);
				lua_settable(L, -3);
			} else if (type == '~') {
				push_reply(L, p, end, depth + 1);
				lua_pushboolean(L, 1);
				lua_settable(L, -3);
			} else {
				push_reply(L, p, end, depth + 1);
				lua_rawseti(L, -2, (int)(i + 1));
			}
		}
		if (type == '~')
			lua_setfield(L, -2, "set");
		else if (type == '%')
			lua_setfield(L, -2, "map");
		return;
	}
	case '|': { /* attributes: skipped, the value follows */
		int64_t n = line_int(s, len);
		for (int64_t i = 0; i < 2 * n && *p < end; i++) {
			push_reply(L, p, end, depth + 1);
			lua_pop(L, 1);
		}
		push_reply(L, p, end, depth + 1);
		return;
	}
	default:
		lua_pushboolean(L, 0);
		*p = end;
	}
}

/* ---- Lua -> reply --------------------------------------------------------------- */

/* A status or error line of Lua bytes (CR and LF become spaces). */
static void add_line(struct resp_buf *b, char type, const char *s, size_t len)
{
	char t[1] = {type};
	resp_buf_append(b, t, 1);
	size_t start = b->len;
	resp_buf_append(b, s, len);
	for (size_t i = start; i < b->len; i++)
		if (b->data[i] == '\r' || b->data[i] == '\n')
			b->data[i] = ' ';
	resp_buf_append(b, "\r\n", 2);
}

/* The string field `name` of the table at the top, pushed (true), or
 * nothing pushed (false). */
static bool field_is(lua_State *L, const char *name, int type)
{
	lua_pushstring(L, name);
	lua_rawget(L, -2);
	if (lua_type(L, -1) == type)
		return true;
	lua_pop(L, 1);
	return false;
}

/* Whether the table at the top has verbatim_string = {format = "...",
 * string = "..."}: then both are pushed (format, string). */
static bool verbatim_fields(lua_State *L)
{
	if (!field_is(L, "verbatim_string", LUA_TTABLE))
		return false;
	lua_pushliteral(L, "format");
	lua_rawget(L, -2);
	lua_pushliteral(L, "string");
	lua_rawget(L, -3);
	if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
		lua_remove(L, -3); /* (the outer table keeps both alive) */
		return true;
	}
	lua_pop(L, 3);
	return false;
}

/* Lua's (long long) cast of a number as x86 does it (out of range:
 * INT64_MIN), without the undefined behaviour. */
static int64_t number_to_int(lua_Number d)
{
	if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
		return INT64_MIN;
	return (int64_t)d;
}

/* Writes the value at the top of L (popped) as a reply, Redis's Lua -> RESP
 * rules for a script of protocol `resp`. */
static void add_value(lua_State *L, struct resp_buf *b, unsigned resp, int depth)
{
	if (depth > DEPTH_MAX || !lua_checkstack(L, 4)) {
		resp_add_error(b, "ERR reached lua stack limit");
		lua_pop(L, 1);
		return;
	}
	size_t len;
	const char *s;
	switch (lua_type(L, -1)) {
	case LUA_TSTRING:
		s = lua_tolstring(L, -1, &len);
		resp_add_bulk(b, s, len);
		break;
	case LUA_TBOOLEAN:
		if (resp == 2) {
			if (lua_toboolean(L, -1))
				resp_add_int(b, 1);
			else
				resp_add_null(b);
		} else {
			resp_add_bool(b, lua_toboolean(L, -1));
		}
		break;
	case LUA_TNUMBER:
		resp_add_int(b, number_to_int(lua_tonumber(L, -1)));
		break;
	case LUA_TTABLE:
		if (field_is(L, "err", LUA_TSTRING)) {
			s = lua_tolstring(L, -1, &len);
			add_line(b, '-', s, len);
			lua_pop(L, 1);
		} else if (field_is(L, "ok", LUA_TSTRING)) {
			s = lua_tolstring(L, -1, &len);
			add_line(b, '+', s, len);
			lua_pop(L, 1);
		} else if (field_is(L, "double", LUA_TNUMBER)) {
			resp_add_double(b, lua_tonumber(L, -1));
			lua_pop(L, 1);
		} else if (field_is(L, "big_number", LUA_TSTRING)) {
			s = lua_tolstring(L, -1, &len);
			if (b->proto >= 3)
				add_line(b, '(', s, len);
			else
				resp_add_bulk(b, s, len);
			lua_pop(L, 1);
		} else if (field_is(L, "map", LUA_TTABLE)) {
			size_t n = 0;
			for (lua_pushnil(L); lua_next(L, -2) != 0; lua_pop(L, 1))
				n++;
			resp_add_map(b, n);
			for (lua_pushnil(L); lua_next(L, -2) != 0;) {
				lua_pushvalue(L, -2);
				add_value(L, b, resp, depth + 1); /* the key */
				add_value(L, b, resp, depth + 1); /* the value */
			}
			lua_pop(L, 1);
		} else if (field_is(L, "set", LUA_TTABLE)) {
			size_t n = 0;
			for (lua_pushnil(L); lua_next(L, -2) != 0; lua_pop(L, 1))
				n++;
			resp_add_set(b, n);
			for (lua_pushnil(L); lua_next(L, -2) != 0;) {
				lua_pop(L, 1);
				lua_pushvalue(L, -1);
				add_value(L, b, resp, depth + 1);
			}
			lua_pop(L, 1);
		} else if (verbatim_fields(L)) {
			size_t flen, slen;
			const char *fmt = lua_tolstring(L, -2, &flen),
			           *str = lua_tolstring(L, -1, &slen);
			if (flen == 3 && b->proto >= 3) {
				char head[32];
				int n = snprintf(head, sizeof(head), "=%zu\r\n", slen + 4);
				resp_buf_append(b, head, (size_t)n);
				resp_buf_append(b, fmt, 3);
				resp_buf_append(b, ":", 1);
				resp_buf_append(b, str, slen);
				resp_buf_append(b, "\r\n", 2);
			} else {
				resp_add_bulk(b, str, slen);
			}
			lua_pop(L, 2);
		} else {
			size_t n = 0;
			for (;; n++) {
				lua_rawgeti(L, -1, (int)n + 1);
				bool nil = lua_isnil(L, -1);
				lua_pop(L, 1);
				if (nil)
					break;
			}
			resp_add_array(b, n);
			for (size_t i = 0; i < n; i++) {
				lua_rawgeti(L, -1, (int)i + 1);
				add_value(L, b, resp, depth + 1);
			}
		}
		break;
	default:
		resp_add_null(b);
	}
	lua_pop(L, 1);
}

/* ---- running a script ----------------------------------------------------------- */

static void run_drive(struct script_run *r, int nargs);
static void run_hook(lua_State *L, lua_Debug *ar);

static void run_free_args(struct script_run *r)
{
	free(r->nums);
	free(r->argv_big);
	free(r->len_big);
	r->nums = NULL;
	r->argv_big = NULL;
	r->len_big = NULL;
	r->nums_cap = r->big_cap = 0;
}

/* The connection's later commands go on while r runs (conn->overlap). */
static void run_overlap(struct script_run *r)
{
	r->overlapping = true;
	r->x->conn->overlap++;
}

bool cmd_script_defer(struct cmd_ctx *x)
{
	cmd_fn f = x->cmd->fn;
	if (f != cmd_flushall && f != cmd_flushdb && f != cmd_swapdb && f != cmd_keys &&
	    f != cmd_scan && f != cmd_dbsize && f != cmd_randomkey && f != cmd_exec)
		return false;
	x->conn->deferred = x;
	x->conn->barrier = true;
	return true;
}

/* On the origin, the script's transaction committed (or failed to): the
 * reply goes. */
static void run_committed(struct cmd_txn *t, int status)
{
	struct script_run *r = (struct script_run *)((char *)t - offsetof(struct script_run, txn));
	struct cmd_ctx *x = r->x;
	cmd_txn_free(&r->txn);
	if (status < 0 && !r->killed)
		cmd_fail_store(x, status); /* (a write of the script failed) */
	else
		cmd_done(x); /* (a killed script's reply is its error already) */
}

/* On the origin, every write of the script durable: it commits (inside an
 * EXEC: the EXEC commits it), then the reply goes. */
static void run_reply(struct cmd_ctx *x)
{
	struct script_run *r = x->heap;
	int status = atomic_load(&r->durable.status); /* (or a failed hold's) */
	if (r->tx == &r->txn) {
		cmd_txn_durable(&r->txn, status);
		return;
	}
	if (status < 0)
		cmd_fail_store(x, status); /* (a write of the script failed) */
	else
		cmd_done(x);
}

static void run_settled(struct store_durable *d)
{
	struct script_run *r =
	    (struct script_run *)((char *)d - offsetof(struct script_run, durable));
	cmd_run_on_px(r->x, r->x->origin, run_reply);
}

static void run_cleanup(struct script_run *r);
static void table_put(struct script_px *sp, int ref);
static void run_end(struct script_run *r, bool held);

/* The script has ended: the reply is in x's; releases everything, and the
 * connection's next commands run (they see its writes: the store applied
 * them).  The reply leaves once its writes are durable. */
static void run_finish(struct script_run *r)
{
	run_cleanup(r);
	run_end(r, true);
}

/* Frees what the run holds but its place in the connection and its held
 * run (run_end). */
static void run_cleanup(struct script_run *r)
{
	lua_State *L = r->sp->L;
	if (r->busy) {
		if (r->fname != NULL)
			cmd_fn_busy(r, false);
		atomic_fetch_sub(&r->sp->busy->busy, 1);
		if (r->wrote)
			atomic_fetch_sub(&r->sp->busy->busy_wrote, 1);
	}
	if (r->returned && r->sp->n_threads < POOL_MAX && lua_status(r->co) == 0 &&
	    lua_gettop(r->co) == 0) {
		r->sp->thread_refs[r->sp->n_threads] = r->co_ref;
		r->sp->threads[r->sp->n_threads++] = r->co;
	} else {
		luaL_unref(L, LUA_REGISTRYINDEX, r->co_ref);
	}
	table_put(r->sp, r->keys_ref);
	table_put(r->sp, r->argv_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, r->raise_ref);
	resp_buf_free(&r->call.reply);
	run_free_args(r);
	for (size_t i = r->n_declared; i < r->n_keys; i++)
		free((void *)r->keys[i].key);
	free(r->keys);
	r->keys = NULL;
	free(r->fname);
	r->fname = NULL;
}

/* Ends the held run (when `held`), lets a command held back behind the
 * connection's scripts run once the last one ends, and replies when the
 * writes are durable. */
static void run_end(struct script_run *r, bool held)
{
	struct cmd_ctx *x = r->x;
	if (held)
		cmd_held_end(x, true);
	if (r->overlapping && --x->conn->overlap == 0 && x->conn->deferred != NULL) {
		struct cmd_ctx *d = x->conn->deferred; /* (cmd_script_defer) */
		x->conn->deferred = NULL;
		cmd_dispatch(d);
		conn_lift_barrier(x->conn);
	}
	if (r->tx == &r->txn && r->killed)
		cmd_txn_cancel(&r->txn); /* (SHUTDOWN: nothing of it was acknowledged) */
	if (r->tx == &r->txn)
		cmd_txn_appended(&r->txn);
	if (atomic_fetch_sub(&r->durable.pending, 1) == 1)
		run_reply(x); /* (else run_settled will) */
}

/* Where the pending call was made: the line of the innermost frame of the
 * script's own code in thread t (what Redis's error replies name). */
static int script_line(lua_State *t, const char *chunk)
{
	lua_Debug ar;
	for (int level = 0; lua_getstack(t, level, &ar); level++) {
		lua_getinfo(t, "Sl", &ar);
		if (strcmp(ar.source, chunk) == 0)
			return ar.currentline;
	}
	return -1;
}

/* The reply of a script that raised `the value on co's top`: Redis's
 * "<msg> script: <sha>, on @user_script:<line>." where the line is the
 * innermost frame of the script's own code. */
static void reply_error(struct script_run *r)
{
	lua_State *co = r->co;
	int line = script_line(co, r->chunk);
	const char *prefix = "", *s = NULL;
	size_t len = 0;
	if (lua_type(co, -1) == LUA_TTABLE) {
		lua_pushliteral(co, "line"); /* (redis.call's errors carry the caller's line) */
		lua_rawget(co, -2);
		if (lua_type(co, -1) == LUA_TNUMBER)
			line = (int)lua_tointeger(co, -1);
		lua_pop(co, 1);
		lua_pushliteral(co, "err");
		lua_rawget(co, -2);
		s = lua_tolstring(co, -1, &len); /* (the table keeps it) */
		lua_pop(co, 1);
	} else {
		prefix = "ERR ";
		s = lua_tolstring(co, -1, &len);
	}
	if (s == NULL) {
		s = lua_typename(co, lua_type(co, -1));
		len = strlen(s);
	}
	char tail[96] = "";
	if (line >= 0)
		snprintf(tail, sizeof(tail), " script: %.40s, on %s:%d.", r->name, r->chunk, line);
	struct resp_buf *b = r->x->reply;
	resp_buf_reset(b);
	resp_buf_append(b, "-", 1);
	size_t start = b->len;
	resp_buf_append(b, prefix, strlen(prefix));
	resp_buf_append(b, s, len);
	resp_buf_append(b, tail, strlen(tail));
	for (size_t i = start; i < b->len; i++)
		if (b->data[i] == '\r' || b->data[i] == '\n')
			b->data[i] = ' ';
	resp_buf_append(b, "\r\n", 2);
}

/* argv slot i of the pending call (grows the big arrays as needed). */
static int call_args_reserve(struct script_run *r, size_t argc)
{
	if (argc <= CALL_ARGS) {
		r->call.argv = r->argv_small;
		r->call.argv_len = r->len_small;
		return 0;
	}
	if (argc > r->big_cap) {
		uint8_t **a = realloc(r->argv_big, argc * sizeof(*a));
		if (a != NULL)
			r->argv_big = a;
		size_t *l = realloc(r->len_big, argc * sizeof(*l));
		if (l != NULL)
			r->len_big = l;
		if (a == NULL || l == NULL)
			return -ENOMEM;
		r->big_cap = argc;
	}
	r->call.argv = r->argv_big;
	r->call.argv_len = r->len_big;
	return 0;
}

/* A number argument formatted as Redis does ("%.17g"), in r->nums[i]. */
static const char *call_number(struct script_run *r, size_t i, lua_Number v, size_t *len)
{
	if (i >= r->nums_cap) {
		size_t cap = r->nums_cap ? 2 * r->nums_cap : 8;
		while (cap <= i)
			cap *= 2;
		char(*n)[32] = realloc(r->nums, cap * sizeof(*n));
		if (n == NULL)
			return NULL;
		r->nums = n;
		r->nums_cap = cap;
	}
	int w = snprintf(r->nums[i], sizeof(r->nums[i]), "%.17g", (double)v);
	*len = (size_t)w;
	return r->nums[i];
}

/* The subcommand entry of d named by argv[1], or NULL. */
static const struct cmd_def *subcommand_of(const struct cmd_def *d, const struct conn_req *c)
{
	if (d->subcommands == NULL || c->argc < 2)
		return NULL;
	for (const struct cmd_def *s = d->subcommands; s->name != NULL; s++)
		if (strlen(s->name) == c->argv_len[1] &&
		    strncasecmp(s->name, (const char *)c->argv[1], c->argv_len[1]) == 0)
			return s;
	return NULL;
}

/* The command the script yielded (SIG, raise, thread, name, args... on co's
 * stack): set up in r->call.  Returns NULL, or the error to resume with. */
static const char *call_prepare(struct script_run *r, const struct cmd_def **out)
{
	lua_State *co = r->co;
	r->raise = lua_toboolean(co, 2);
	r->thread = lua_tothread(co, 3);
	r->call_line = script_line(r->thread, r->chunk);
	size_t argc = (size_t)lua_gettop(co) - 3;
	if (argc == 0)
		return "ERR Please specify at least one argument for this redis lib call";
	if (call_args_reserve(r, argc) < 0)
		return cmd_err_oom;
	size_t nums = 0;
	for (size_t i = 0; i < argc; i++) {
		int idx = (int)i + 4;
		size_t len;
		const char *s;
		if (lua_type(co, idx) == LUA_TNUMBER)
			s = call_number(r, nums++, lua_tonumber(co, idx), &len);
		else if (lua_type(co, idx) == LUA_TSTRING)
			s = lua_tolstring(co, idx, &len);
		else
			return "ERR Lua redis lib command arguments must be strings or integers";
		if (s == NULL)
			return cmd_err_oom;
		r->call.argv[i] = (uint8_t *)s;
		r->call.argv_len[i] = len;
	}
	/* (numbers formatted into r->nums may have moved as it grew: set again) */
	for (size_t i = 0, k = 0; i < argc && nums > 0; i++)
		if (lua_type(co, (int)i + 4) == LUA_TNUMBER)
			r->call.argv[i] = (uint8_t *)r->nums[k++];
	r->call.argc = argc;
	const struct cmd_def *d = cmd_lookup(r->call.argv[0], r->call.argv_len[0]);
	if (d == NULL)
		return "ERR Unknown Redis command called from script";
	if (d->arity >= 0 ? argc != (size_t)d->arity : argc < (size_t)-d->arity)
		return "ERR Wrong number of args calling Redis command from script";
	const struct cmd_def *sub = subcommand_of(d, &r->call);
	if ((d->flags & CMD_NOSCRIPT) || (sub != NULL && (sub->flags & CMD_NOSCRIPT)))
		return "ERR This Redis command is not allowed from script";
	if ((d->flags & CMD_WRITE) && r->read_only)
		return err_ro;
	*out = d;
	return NULL;
}

/* Pushes the value the coroutine resumes with after an error `s` (an error
 * reply's text, without the '-'): for redis.pcall the error table; for
 * redis.call nil, and the table is raised in the calling thread by run_hook
 * before it runs anything else.  Returns 1 (values pushed). */
static int call_error(struct script_run *r, const char *s, size_t len, bool from_command)
{
	lua_State *co = r->co;
	lua_settop(co, 0);
	lua_pushlstring(co, "-", 1);
	lua_pushlstring(co, s, len);
	lua_concat(co, 2);
	s = lua_tolstring(co, -1, &len);
	push_error_table(co, s, len);
	lua_remove(co, -2);
	if (from_command) { /* (as Redis marks the error of a command it ran) */
		lua_pushboolean(co, 1);
		lua_setfield(co, -2, "ignore_error_stats_update");
	}
	if (!r->raise)
		return 1;
	lua_pushinteger(co, r->call_line);
	lua_setfield(co, -2, "line");
	r->raise_ref = luaL_ref(co, LUA_REGISTRYINDEX);
	lua_sethook(r->thread, run_hook, LUA_MASKCOUNT, 1);
	lua_pushnil(co);
	return 1;
}

/* A finished call: the value to resume with, pushed on co (the reply as
 * Lua, or call_error's).  Returns how many values. */
static int call_result(struct script_run *r)
{
	lua_State *co = r->co;
	const uint8_t *p = (const uint8_t *)r->call.reply.data, *end = p + r->call.reply.len;
	if (p < end && *p == '-') {
		size_t len;
		const char *s = reply_line(&p, end, &len);
		return call_error(r, s, len, true);
	}
	lua_settop(co, 0);
	push_reply(co, &p, end, 0);
	return 1;
}

/* SELECT inside a script changes the script's database only (Redis 7). */
static void call_select(struct script_run *r)
{
	int64_t db;
	if (!resp_parse_int64(r->call.argv[1], r->call.argv_len[1], &db))
		resp_add_error(&r->call.reply, cmd_err_not_int);
	else if (db < 0 || db >= (int64_t)cmd_databases())
		resp_add_error(&r->call.reply, "ERR DB index is out of range");
	else {
		r->db = (unsigned)db;
		resp_add_simple(&r->call.reply, "OK");
	}
}

/* call_done of the held run: the command r->call finished (on the origin). */
static void run_call_done(struct cmd_ctx *x)
{
	struct script_run *r = x->heap;
	if (r->in_call) {
		r->call_finished = true; /* (run_drive goes on when cmd_held_call returns) */
		return;
	}
	run_drive(r, call_result(r));
}

/* Whether r has run past the busy threshold (counted once it has) and
 * SCRIPT KILL has asked it to stop since. */
static bool run_check_busy(struct script_run *r)
{
	struct script_busy *sb = r->sp->busy;
	if (atomic_load(&stopping))
		r->killed = true; /* (its writes were never acknowledged: like a crash) */
	if (r->killed)
		return true;
	if (!r->busy) {
		int ms = atomic_load(&busy_ms);
		if (ms <= 0 || clock_unix_ms() - r->start_ms < (uint64_t)ms)
			return false;
		r->busy = true;
		if (r->fname != NULL)
			cmd_fn_busy(r, true);
		r->kill_seen = atomic_load(&kill_gen);
		atomic_fetch_add(&sb->busy, 1);
		if (r->wrote)
			atomic_fetch_add(&sb->busy_wrote, 1);
		LOG_WARN("script %s has run for %d ms (busy-reply-threshold); SCRIPT KILL stops it "
		         "if it has not written",
		         r->name, ms);
	}
	if (!r->wrote && atomic_load(&kill_gen) != r->kill_seen)
		r->killed = true;
	return r->killed;
}

/* The run writes: counted among the unkillable if it is busy. */
static void run_wrote(struct script_run *r)
{
	if (!r->wrote && r->busy)
		atomic_fetch_add(&r->sp->busy->busy_wrote, 1);
	r->wrote = true;
}

/* Count hook: redis.call's error to raise, the busy threshold, SCRIPT KILL. */
static void run_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	struct script_px *sp = sp_self();
	struct script_run *r = sp->running;
	if (r == NULL)
		return;
	if (r->raise_ref != LUA_NOREF && L == r->thread) { /* redis.call's error */
		lua_sethook(L, run_hook, LUA_MASKCOUNT, HOOK_COUNT);
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->raise_ref);
		luaL_unref(L, LUA_REGISTRYINDEX, r->raise_ref);
		r->raise_ref = LUA_NOREF;
		lua_error(L);
	}
	if (run_check_busy(r)) {
		lua_sethook(L, run_hook, LUA_MASKCOUNT, 1); /* (pcall cannot swallow it) */
		push_error_table(L, err_killed, strlen(err_killed));
		lua_error(L);
	}
}

/* cmd_keys_of's callback for a command the script is about to run: a key
 * it does not hold is copied into r->keys (learned). */
static int learn_key(void *arg, unsigned db, const uint8_t *key, size_t len)
{
	struct script_run *r = arg;
	for (size_t i = 0; i < r->n_keys; i++)
		if (r->keys[i].db == db && r->keys[i].key_len == len &&
		    memcmp(r->keys[i].key, key, len) == 0)
			return 0;
	if (r->n_keys == r->cap_keys) {
		size_t cap = r->cap_keys ? 2 * r->cap_keys : 8;
		struct store_key_ref *k = realloc(r->keys, cap * sizeof(*k));
		if (k == NULL)
			return -ENOMEM;
		r->keys = k;
		r->cap_keys = cap;
	}
	uint8_t *copy = malloc(len + 1);
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, key, len);
	copy[len] = '\0';
	r->keys[r->n_keys++] = (struct store_key_ref){db, copy, len};
	r->learned = true;
	return 0;
}

static void run_start(struct cmd_ctx *x);
static void run_call_done(struct cmd_ctx *x);

/* The script named a key it does not hold before writing anything: it has
 * only read, so it starts over, holding that key too (Redis runs a script
 * alone; this is how a script that does not declare its keys is isolated
 * all the same).  The connection's later commands keep waiting. */
static void run_restart(struct script_run *r)
{
	struct cmd_ctx *x = r->x;
	lua_State *L = r->sp->L;
	script_set_flag(r->sp, r->fname ? "lkf" : "lk", r->name); /* (it keeps the barrier
	                                                                from now on) */
	luaL_unref(L, LUA_REGISTRYINDEX, r->co_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, r->raise_ref);
	r->co_ref = r->raise_ref = LUA_NOREF;
	r->co = NULL;
	r->attempts++;
	r->resp = 2;
	r->db = x->db;
	cmd_held_end(x, false);
	r->lift_at_start = false;
	if (cmd_held_start(x, r->keys, r->n_keys, run_start, run_call_done, true) < 0) {
		atomic_store(&r->durable.status, -ENOMEM);
		if (!r->overlapping)
			conn_lift_barrier(x->conn); /* (the one the run kept) */
		run_cleanup(r);
		run_end(r, false);
	}
}

/* Resumes the script with the nargs values on co's top, and goes on until
 * it waits for a command that has not finished, or ends. */
static void run_drive(struct script_run *r, int nargs)
{
	struct script_px *sp = r->sp;
	lua_State *co = r->co;
	for (;;) {
		/* this run's KEYS and ARGV in the globals (several runs share them) */
		lua_rawgeti(co, LUA_REGISTRYINDEX, sp->globals_ref);
		lua_pushliteral(co, "KEYS");
		lua_rawgeti(co, LUA_REGISTRYINDEX, r->keys_ref);
		lua_rawset(co, -3);
		lua_pushliteral(co, "ARGV");
		lua_rawgeti(co, LUA_REGISTRYINDEX, r->argv_ref);
		lua_rawset(co, -3);
		lua_pop(co, 1);
		sp->running = r;
		int rc = lua_resume(co, nargs);
		sp->running = NULL;
		if (rc == 0) { /* returned */
			r->returned = true;
			resp_buf_reset(r->x->reply);
			if (lua_gettop(co) == 0)
				resp_add_null(r->x->reply);
			else {
				lua_settop(co, 1);
				add_value(co, r->x->reply, r->resp, 0);
			}
			run_finish(r);
			return;
		}
		if (rc != LUA_YIELD) {
			reply_error(r);
			run_finish(r);
			return;
		}
		if (lua_gettop(co) < 1 || lua_touserdata(co, 1) != &sig) {
			lua_settop(co, 0);
			lua_pushliteral(co, "attempt to yield from outside a coroutine");
			reply_error(r);
			run_finish(r);
			return;
		}
		const struct cmd_def *d = NULL;
		const char *err = run_check_busy(r) ? err_killed_reply : call_prepare(r, &d);
		resp_buf_reset(&r->call.reply);
		r->call.reply.proto = r->resp;
		if (err != NULL) {
			nargs = call_error(r, err, strlen(err), false);
			continue;
		}
		if (d->fn == cmd_select) {
			call_select(r);
			nargs = call_result(r);
			continue;
		}
		/* A key the script does not hold: before it has written, it starts
		 * over holding that key too; after, it lets its holds go and goes on
		 * without (waiting for a key while holding others could wait for a
		 * holder that waits for it: store.h, "holds"). */
		if (!r->unheld && !cmd_held_nested(r->x)) {
			r->learned = false;
			if (cmd_keys_of(d, r->call.argc, r->call.argv, r->call.argv_len, r->db,
			                learn_key, r) < 0) {
				nargs = call_error(r, cmd_err_oom, strlen(cmd_err_oom), false);
				continue;
			}
			if (r->learned && !r->wrote && r->attempts < ATTEMPTS_MAX) {
				run_restart(r);
				return;
			}
			if (r->learned) {
				cmd_held_unhold(r->x);
				r->unheld = true;
			}
		}
		if (d->flags & CMD_WRITE)
			run_wrote(r);
		r->in_call = true;
		r->call_finished = false;
		cmd_held_call(r->x, &r->call, d, r->db, &r->durable, r->tx);
		r->in_call = false;
		if (!r->call_finished)
			return; /* run_call_done resumes */
		nargs = call_result(r);
	}
}

/* A table of argv[first .. first + n) in L, referenced from the registry. */
static int args_table(struct script_px *sp, struct cmd_ctx *x, size_t first, size_t n)
{
	lua_State *L = sp->L;
	int ref;
	if (sp->n_tables > 0) {
		ref = sp->table_refs[--sp->n_tables];
		lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	} else {
		lua_createtable(L, (int)n, 0);
		ref = LUA_NOREF;
	}
	for (size_t i = 0; i < n; i++) {
		lua_pushlstring(L, (const char *)cmd_arg(x, first + i), cmd_arg_len(x, first + i));
		lua_rawseti(L, -2, (int)i + 1);
	}
	if (ref != LUA_NOREF) {
		lua_pop(L, 1);
		return ref;
	}
	return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* A KEYS or ARGV table back to the pool, emptied (the script may have
 * changed it: fields, metatable), or released. */
static void table_put(struct script_px *sp, int ref)
{
	lua_State *L = sp->L;
	if (ref == LUA_NOREF)
		return;
	if (sp->n_tables == POOL_MAX) {
		luaL_unref(L, LUA_REGISTRYINDEX, ref);
		return;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	lua_pushnil(L);
	lua_setmetatable(L, -2);
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		lua_pop(L, 1);
		lua_pushvalue(L, -1);
		lua_pushnil(L);
		lua_rawset(L, -4);
	}
	lua_pop(L, 1);
	sp->table_refs[sp->n_tables++] = ref;
}

/* On the origin, the keys held: starts the script's coroutine. */
static void run_start(struct cmd_ctx *x)
{
	struct script_run *r = x->heap;
	struct script_px *sp = r->sp;
	lua_State *L = sp->L;
	if (cmd_held_status(x) < 0) { /* a hold failed: the store's error is the reply */
		int status = cmd_held_status(x);
		atomic_store(&r->durable.status, status);
		run_finish(r);
		return;
	}
	size_t numkeys = r->n_declared;
	if (r->keys_ref == LUA_NOREF) {
		r->keys_ref = args_table(sp, x, 3, numkeys);
		r->argv_ref = args_table(sp, x, 3 + numkeys, cmd_argc(x) - 3 - numkeys);
	}
	if (sp->n_threads > 0) {
		sp->n_threads--;
		r->co = sp->threads[sp->n_threads];
		r->co_ref = sp->thread_refs[sp->n_threads];
	} else {
		r->co = lua_newthread(L);
		r->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	}
	lua_sethook(r->co, run_hook, LUA_MASKCOUNT, HOOK_COUNT);
	int nargs = 0;
	if (r->fname != NULL) { /* FCALL: the function, given KEYS and ARGV */
		if (!cmd_fn_push(sp, r->co, r->fname)) { /* deleted meanwhile */
			resp_add_error(x->reply, "ERR Function not found");
			run_finish(r);
			return;
		}
		lua_rawgeti(r->co, LUA_REGISTRYINDEX, r->keys_ref);
		lua_rawgeti(r->co, LUA_REGISTRYINDEX, r->argv_ref);
		nargs = 2;
	} else {
		lua_rawgeti(r->co, LUA_REGISTRYINDEX, sp->scripts_ref);
		lua_getfield(r->co, -1, r->sha);
		lua_remove(r->co, -2);
		if (lua_isnil(r->co, -1)) { /* flushed between the check and now */
			resp_add_error(x->reply, err_noscript);
			run_finish(r);
			return;
		}
	}
	r->start_ms = clock_unix_ms();
	/* (script_run_start decided whether the connection goes on now) */
	if (r->lift_at_start && r->attempts == 0) {
		cmd_held_lift(x);
		run_overlap(r);
	}
	run_drive(r, nargs);
}

/* ---- EVAL, EVALSHA ---------------------------------------------------------- */

/* On the origin, the script known on every proactor: runs it. */
void script_run_start(struct cmd_ctx *x)
{
	struct script_run *r = x->heap;
	size_t numkeys = (size_t)atoll((const char *)cmd_arg(x, 2));
	r->cap_keys = numkeys > 8 ? numkeys : 8;
	r->keys = malloc(r->cap_keys * sizeof(*r->keys));
	if (r->keys == NULL) {
		resp_buf_free(&r->call.reply);
		free(r->fname);
		r->fname = NULL;
		cmd_fail(x, cmd_err_oom);
		return;
	}
	for (size_t i = 0; i < numkeys; i++)
		r->keys[i] =
		    (struct store_key_ref){x->db, cmd_arg(x, 3 + i), cmd_arg_len(x, 3 + i)};
	r->n_keys = r->n_declared = numkeys;
	/* The connection's later commands may start before the script ends when
	 * every key it names is declared (they queue behind its holds): at once
	 * when its keys are on one shard of this proactor (the hold is queued on
	 * them now), else once its holds are granted.  Not for a script without
	 * keys or one seen naming keys it did not declare, nor inside EXEC. */
	bool barrier = true;
	if (numkeys > 0 && x->exec == NULL && !script_flag(r->sp, r->fname ? "lkf" : "lk", r->name)) {
		unsigned shard = shard_of_key(cmd_arg(x, 3), cmd_arg_len(x, 3));
		bool one_local = shard_proactor(shard) == x->origin;
		for (size_t i = 1; i < numkeys && one_local; i++)
			one_local = shard_of_key(cmd_arg(x, 3 + i), cmd_arg_len(x, 3 + i)) == shard;
		if (one_local) {
			barrier = false;
			run_overlap(r);
		} else {
			r->lift_at_start = true;
		}
	}
	if (cmd_held_start(x, r->keys, r->n_keys, run_start, run_call_done, barrier) < 0) {
		atomic_store(&r->durable.status, -ENOMEM);
		run_cleanup(r);
		run_end(r, false);
	}
}

/* Each other proactor compiles the script EVAL or SCRIPT LOAD brought. */
static void load_part(struct cmd_part *p)
{
	struct cmd_ctx *x = p->fan->x;
	struct script_px *sp = &script_pxs[p->px];
	size_t arg = cmd_is_script(x->cmd) ? 1 : 2;
	char sha[41];
	cmd_sha1_hex(cmd_arg(x, arg), cmd_arg_len(x, arg), sha);
	char *err = script_compile(sp, sha, cmd_arg(x, arg), cmd_arg_len(x, arg));
	if (err != NULL) { /* (it compiled on the origin: out of memory here) */
		p->status = -ENOMEM;
		free(err);
	}
	cmd_part_done(p);
}

static void eval_loaded(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (x->exec == NULL)
		conn_lift_barrier(x->conn); /* (cmd_held_start sets it again at once) */
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	cmd_fan_free(f);
	script_run_start(x);
}

struct script_run *script_run_new(struct cmd_ctx *x)
{
	struct script_run *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		cmd_fail(x, cmd_err_oom);
		return NULL;
	}
	x->heap = r;
	r->x = x;
	r->sp = sp_self();
	r->db = x->db;
	r->resp = 2;
	r->name = r->sha;
	r->chunk = CHUNK_NAME;
	r->co_ref = r->keys_ref = r->argv_ref = r->raise_ref = LUA_NOREF;
	atomic_init(&r->durable.pending, 1); /* (the run's own count: run_finish drops it) */
	atomic_init(&r->durable.status, 0);
	r->durable.settled = run_settled;
	r->tx = x->txn; /* (inside an EXEC) */
	if (r->tx == NULL) {
		cmd_txn_begin(&r->txn, run_committed);
		r->tx = &r->txn;
	}
	resp_buf_init(&r->call.reply, 2);
	return r;
}

static void eval_generic(struct cmd_ctx *x, bool by_sha, bool read_only)
{
	int64_t numkeys;
	if (!resp_parse_int64(cmd_arg(x, 2), cmd_arg_len(x, 2), &numkeys)) {
		cmd_fail(x, cmd_err_not_int);
		return;
	}
	if (numkeys > (int64_t)cmd_argc(x) - 3) {
		cmd_fail(x, "ERR Number of keys can't be greater than number of args");
		return;
	}
	if (numkeys < 0) {
		cmd_fail(x, "ERR Number of keys can't be negative");
		return;
	}
	struct script_run *r = script_run_new(x);
	if (r == NULL)
		return;
	struct script_px *sp = r->sp;
	const uint8_t *body = cmd_arg(x, 1);
	size_t len = cmd_arg_len(x, 1);
	if (by_sha) {
		if (len != 40) {
			resp_buf_free(&r->call.reply);
			cmd_fail(x, err_noscript);
			return;
		}
		for (size_t i = 0; i < 40; i++)
			r->sha[i] =
			    (char)((body[i] >= 'A' && body[i] <= 'Z') ? body[i] + 32 : body[i]);
		r->sha[40] = '\0';
	} else {
		cmd_sha1_hex(body, len, r->sha);
	}
	bool ro_flag;
	bool known = script_known(sp, r->sha, &ro_flag);
	if (by_sha && !known) {
		resp_buf_free(&r->call.reply);
		cmd_fail(x, err_noscript);
		return;
	}
	if (!known) {
		char *err = script_compile(sp, r->sha, body, len);
		if (err != NULL) {
			resp_buf_free(&r->call.reply);
			cmd_fail(x, err);
			free(err);
			return;
		}
		script_known(sp, r->sha, &ro_flag);
	}
	read_only |= ro_flag;
	r->read_only = read_only;
	if (!by_sha && !known) {
		/* (the connection's next commands wait from now on, as for the run) */
		if (x->exec == NULL)
			x->conn->barrier = true;
		cmd_fan_all(x, load_part, eval_loaded); /* (on the origin it is there: a no-op) */
		return;
	}
	script_run_start(x);
}

void cmd_eval(struct cmd_ctx *x)
{
	eval_generic(x, false, false);
}

void cmd_evalsha(struct cmd_ctx *x)
{
	eval_generic(x, true, false);
}

void cmd_eval_ro(struct cmd_ctx *x)
{
	eval_generic(x, false, true);
}

void cmd_evalsha_ro(struct cmd_ctx *x)
{
	eval_generic(x, true, true);
}

/* ---- SCRIPT -------------------------------------------------------------------- */

static void script_loaded(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	if (cmd_fan_ok_or_fail(f) < 0)
		return;
	cmd_fan_free(f);
	char sha[41];
	cmd_sha1_hex(cmd_arg(x, 2), cmd_arg_len(x, 2), sha);
	resp_add_bulk(x->reply, sha, 40);
	cmd_done(x);
}

static void script_load(struct cmd_ctx *x)
{
	char sha[41];
	cmd_sha1_hex(cmd_arg(x, 2), cmd_arg_len(x, 2), sha);
	char *err = script_compile(sp_self(), sha, cmd_arg(x, 2), cmd_arg_len(x, 2));
	if (err != NULL) {
		cmd_fail(x, err);
		free(err);
		return;
	}
	cmd_fan_all(x, load_part, script_loaded);
}

static void script_exists(struct cmd_ctx *x)
{
	struct script_px *sp = sp_self();
	lua_State *L = sp->L;
	resp_add_array(x->reply, cmd_argc(x) - 2);
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->scripts_ref);
	for (size_t i = 2; i < cmd_argc(x); i++) {
		char sha[41] = "";
		bool found = false;
		if (cmd_arg_len(x, i) == 40) {
			for (size_t k = 0; k < 40; k++) {
				uint8_t c = cmd_arg(x, i)[k];
				sha[k] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
			}
			sha[40] = '\0';
			lua_getfield(L, -1, sha);
			found = !lua_isnil(L, -1);
			lua_pop(L, 1);
		}
		resp_add_int(x->reply, found);
	}
	lua_pop(L, 1);
	cmd_done(x);
}

static void flush_part(struct cmd_part *p)
{
	struct script_px *sp = &script_pxs[p->px];
	lua_State *L = sp->L;
	luaL_unref(L, LUA_REGISTRYINDEX, sp->scripts_ref);
	lua_newtable(L);
	sp->scripts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_gc(L, LUA_GCCOLLECT, 0);
	cmd_part_done(p);
}

static void flush_done(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	cmd_fan_free(f);
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

static void script_flush(struct cmd_ctx *x)
{
	if (cmd_argc(x) > 3 ||
	    (cmd_argc(x) == 3 && !cmd_arg_is(x, 2, "sync") && !cmd_arg_is(x, 2, "async"))) {
		cmd_fail(x, "ERR SCRIPT FLUSH only support SYNC|ASYNC option");
		return;
	}
	cmd_fan_all(x, flush_part, flush_done);
}

void script_kill(struct cmd_ctx *x)
{
	unsigned busy = 0, wrote = 0;
	for (unsigned i = 0; i < script_npx; i++) {
		busy += atomic_load(&script_busy[i].busy);
		wrote += atomic_load(&script_busy[i].busy_wrote);
	}
	if (busy == 0) {
		cmd_fail(x, "NOTBUSY No scripts in execution right now.");
		return;
	}
	if (busy == wrote) {
		cmd_fail(x, "UNKILLABLE Sorry the script already executed write commands against "
		            "the dataset. You can either wait the script termination or kill the "
		            "server in a hard way using the SHUTDOWN NOSAVE command.");
		return;
	}
	atomic_fetch_add(&kill_gen, 1);
	resp_add_simple(x->reply, "OK");
	cmd_done(x);
}

static void script_help(struct cmd_ctx *x)
{
	static const char *const lines[] = {
	    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
	    "EXISTS <sha1> [<sha1> ...]",
	    "    Return information about the existence of the scripts in the script cache.",
	    "FLUSH [ASYNC|SYNC]",
	    "    Flush the Lua scripts cache. Very dangerous on replicas.",
	    "KILL",
	    "    Kill the currently executing Lua script.",
	    "LOAD <script>",
	    "    Load a script into the scripts cache without executing it.",
	    "HELP",
	    "    Prints this help.",
	    NULL,
	};
	cmd_reply_help(x, lines);
}

const struct cmd_def cmd_script_subcommands[] = {
    {"exists", script_exists, -3, CMD_NOSCRIPT, 0, 0, 0, "scripting", "2.6.0",
     "Check existence of scripts in the script cache.", NULL, "script"},
    {"flush", script_flush, -2, CMD_NOSCRIPT, 0, 0, 0, "scripting", "2.6.0",
     "Remove all the scripts from the script cache.", NULL, "script"},
    {"help", script_help, 2, CMD_LOADING | CMD_STALE, 0, 0, 0, "scripting", "5.0.0",
     "Show helpful text about the different subcommands", NULL, "script"},
    {"kill", script_kill, 2, CMD_NOSCRIPT, 0, 0, 0, "scripting", "2.6.0",
     "Kill the script currently in execution.", NULL, "script"},
    {"load", script_load, 3, CMD_NOSCRIPT | CMD_STALE, 0, 0, 0, "scripting", "2.6.0",
     "Load the specified Lua script into the script cache.", NULL, "script"},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
};

void cmd_script(struct cmd_ctx *x)
{
	cmd_run_subcommand(x, cmd_script_subcommands);
}
