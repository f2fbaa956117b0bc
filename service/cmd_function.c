/* cmd_function: Redis 7.0 functions — FUNCTION LOAD (REPLACE), DELETE,
 * FLUSH, LIST, DUMP, RESTORE, STATS, KILL, HELP; FCALL and FCALL_RO.
 *
 * A library is Lua code whose first line is "#!lua name=<library>"; loading
 * it runs the code once with globals that hold only redis.register_function,
 * redis.log and the constants (Redis's load environment: swapped in under
 * the globals proxy while it runs, so the functions it registers see the
 * normal script globals when they are called), for at most 500 ms.  Every
 * proactor's Lua state holds every library: a change (LOAD, DELETE, FLUSH,
 * RESTORE) is made on proactor 0 and then on each of the others, in the
 * order proactor 0 sent them (cmd_fan_all), so all states go through the
 * same changes; the outcome is the same everywhere (the same code on the
 * same libraries), and proactor 0's part decides the reply.
 *
 * FCALL runs a function exactly as EVAL runs a script (cmd_script.c: a
 * coroutine under the holds of its keys), the function given KEYS and ARGV
 * as its two arguments.
 *
 * Persistence: after a change, proactor 0 writes FUNCTION DUMP's payload
 * (cmd_fdump.h) to DIR/functions — a new file, fsync'd, renamed over the old
 * one, the directory fsync'd — through its ring, and the command replies
 * once that write holds it.  Writes are one at a time: changes made while
 * one is in flight are written together by the next.  At start the file is
 * loaded before any client connects. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <liburing.h>
#include <lua.h>

#include "cmd.h"
#include "cmd_fdump.h"
#include "cmd_script_int.h"
#include "service/runtime/clock.h"
#include "service/runtime/logging.h"

#define LOAD_TIMEOUT_MS 500 /* Redis's limit on a library's load */
#define LOAD_HOOK_COUNT 100000
#define FN_FILE         "functions"
#define FN_NO_WRITES    0x1u

static const char *const flag_names[] = {"no-writes", "allow-oom", "allow-stale", "no-cluster",
                                         "allow-cross-slot-keys"};
#define N_FLAGS (sizeof(flag_names) / sizeof(flag_names[0]))

static const char err_name[] = "ERR Library names can only contain letters, numbers, or "
                               "underscores(_) and must be at least one character long";
static const char err_not_found[] = "ERR Function not found";

struct fn_func {
	char *name;
	char *desc;         /* or NULL */
	unsigned flags;     /* bit i: flag_names[i] */
	int ref;            /* registry: the callback */
	struct fn_lib *lib; /* its library */
};

struct fn_lib {
	char *name;
	uint8_t *code;
	size_t code_len;
	struct fn_func *funcs;
	size_t n, cap;
	struct fn_lib *next;
};

/* The library whose code is running (redis.register_function adds to it),
 * and when its load times out; per thread: each proactor loads its own. */
static _Thread_local struct fn_lib *loading;
static _Thread_local uint64_t load_deadline_ms;

/* ---- libraries ---------------------------------------------------------- */

static bool name_ok(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_'))
			return false;
	}
	return true;
}

static void lib_free(struct script_px *sp, struct fn_lib *lib)
{
	if (lib == NULL)
		return;
	for (size_t i = 0; i < lib->n; i++) {
		luaL_unref(sp->L, LUA_REGISTRYINDEX, lib->funcs[i].ref);
		free(lib->funcs[i].name);
		free(lib->funcs[i].desc);
	}
	free(lib->funcs);
	free(lib->name);
	free(lib->code);
	free(lib);
}

static struct fn_lib *lib_find(struct script_px *sp, const char *name)
{
	for (struct fn_lib *l = sp->libs; l != NULL; l = l->next)
		if (strcmp(l->name, name) == 0)
			return l;
	return NULL;
}

/* The function `name` of any library, or NULL. */
static struct fn_func *func_find(struct script_px *sp, const char *name)
{
	lua_State *L = sp->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->fn_ref);
	lua_getfield(L, -1, name);
	struct fn_func *f = lua_touserdata(L, -1);
	lua_pop(L, 2);
	return f;
}

static void table_set(struct script_px *sp, const char *name, struct fn_func *f)
{
	lua_State *L = sp->L;
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->fn_ref);
	if (f != NULL)
		lua_pushlightuserdata(L, f);
	else
		lua_pushnil(L);
	lua_setfield(L, -2, name);
	lua_pop(L, 1);
}

/* Takes lib out of sp (its functions leave the table) and frees it. */
static void lib_remove(struct script_px *sp, struct fn_lib *lib)
{
	for (struct fn_lib **pp = &sp->libs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == lib) {
			*pp = lib->next;
			break;
		}
	for (size_t i = 0; i < lib->n; i++)
		table_set(sp, lib->funcs[i].name, NULL);
	lib_free(sp, lib);
}

static void lib_install(struct script_px *sp, struct fn_lib *lib)
{
	lib->next = sp->libs;
	sp->libs = lib;
	for (size_t i = 0; i < lib->n; i++) {
		lib->funcs[i].lib = lib;
		table_set(sp, lib->funcs[i].name, &lib->funcs[i]);
	}
}

/* ---- redis.register_function ------------------------------------------- */

static int fn_raise(lua_State *L, const char *msg)
{
	if (strncmp(msg, "ERR ", 4) == 0)
		msg += 4; /* (push_error_table adds the code) */
	push_error_table(L, msg, strlen(msg));
	return lua_error(L);
}

/* Reads register_function's table form at index 1. */
static void register_named(lua_State *L, const char **name, size_t *nlen, const char **desc,
                           unsigned *flags, int *callback)
{
	lua_pushnil(L);
	while (lua_next(L, 1) != 0) {
		if (!lua_isstring(L, -2))
			fn_raise(L,
			         "ERR named argument key given to redis.register_function is not a "
			         "string");
		lua_pushvalue(L, -2); /* (lua_tostring would turn a number key into a string) */
		const char *k = lua_tostring(L, -1);
		lua_pop(L, 1); /* (the key on the stack keeps the string) */
		if (strcmp(k, "function_name") == 0) {
			if (!lua_isstring(L, -1))
				fn_raise(
				    L,
				    "ERR function_name argument given to redis.register_function "
				    "must be a string");
			*name = lua_tolstring(L, -1, nlen);
		} else if (strcmp(k, "description") == 0) {
			if (!lua_isstring(L, -1))
				fn_raise(L, "ERR description argument given to "
				            "redis.register_function must "
				            "be a string");
			*desc = lua_tostring(L, -1);
		} else if (strcmp(k, "callback") == 0) {
			if (lua_type(L, -1) != LUA_TFUNCTION)
				fn_raise(L, "ERR callback argument given to "
				            "redis.register_function must be a "
				            "function");
			lua_pushvalue(L, -1); /* (a copy stays on the stack below the walk) */
			lua_insert(L, 2);
			*callback = 2;
		} else if (strcmp(k, "flags") == 0) {
			if (lua_type(L, -1) != LUA_TTABLE)
				fn_raise(
				    L,
				    "ERR flags argument to redis.register_function must be a table "
				    "representing function flags");
			for (int i = 1;; i++) {
				lua_rawgeti(L, -1, i);
				if (lua_isnil(L, -1)) {
					lua_pop(L, 1);
					break;
				}
				const char *fl =
				    lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
				size_t j = 0;
				while (j < N_FLAGS && strcmp(fl, flag_names[j]) != 0)
					j++;
				if (j == N_FLAGS)
					fn_raise(L, "ERR unknown flag given");
				*flags |= 1u << j;
				lua_pop(L, 1);
			}
		} else {
			fn_raise(L, "ERR unknown argument given to redis.register_function");
		}
		lua_pop(L, 1);
	}
	if (*name == NULL)
		fn_raise(L, "ERR redis.register_function must get a function name argument");
	if (*callback == 0)
		fn_raise(L, "ERR redis.register_function must get a callback argument");
}

int cmd_fn_register(lua_State *L)
{
	struct fn_lib *lib = loading;
	if (lib == NULL)
		return fn_raise(L,
		                "ERR redis.register_function can only be called on FUNCTION LOAD "
		                "command");
	const char *name = NULL, *desc = NULL;
	size_t nlen = 0;
	unsigned flags = 0;
	int callback = 0;
	int argc = lua_gettop(L);
	if (argc == 1 && lua_type(L, 1) == LUA_TTABLE) {
		register_named(L, &name, &nlen, &desc, &flags, &callback);
	} else if (argc == 2) {
		if (lua_type(L, 1) != LUA_TSTRING && lua_type(L, 1) != LUA_TNUMBER)
			return fn_raise(L,
			                "ERR first argument to redis.register_function must be a "
			                "string");
		if (lua_type(L, 2) != LUA_TFUNCTION)
			return fn_raise(L,
			                "ERR second argument to redis.register_function must be a "
			                "function");
		name = lua_tolstring(L, 1, &nlen);
		callback = 2;
	} else {
		return fn_raise(L, "ERR wrong number of arguments to redis.register_function");
	}
	if (!name_ok(name, nlen))
		return fn_raise(L, err_name);
	for (size_t i = 0; i < lib->n; i++)
		if (strcmp(lib->funcs[i].name, name) == 0)
			return fn_raise(L, "ERR Function already exists in the library");
	if (lib->n == lib->cap) {
		size_t cap = lib->cap ? 2 * lib->cap : 4;
		struct fn_func *f = realloc(lib->funcs, cap * sizeof(*f));
		if (f == NULL)
			return fn_raise(L, cmd_err_oom);
		lib->funcs = f;
		lib->cap = cap;
	}
	struct fn_func *f = &lib->funcs[lib->n];
	*f = (struct fn_func){.name = strdup(name),
	                      .desc = desc ? strdup(desc) : NULL,
	                      .flags = flags,
	                      .ref = LUA_NOREF};
	if (f->name == NULL || (desc != NULL && f->desc == NULL)) {
		free(f->name);
		free(f->desc);
		return fn_raise(L, cmd_err_oom);
	}
	lua_pushvalue(L, callback);
	f->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lib->n++;
	return 0;
}

/* ---- loading a library -------------------------------------------------- */

/* Count hook while a library's code runs: Redis's 500 ms limit. */
static void load_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	if (clock_unix_ms() > load_deadline_ms) {
		lua_sethook(L, load_hook, LUA_MASKCOUNT, 1); /* (pcall cannot swallow it) */
		fn_raise(L, "ERR FUNCTION LOAD timeout");
	}
}

/* Parses the first line, "#!lua name=<library>".  Returns NULL with *name
 * (malloc'd), or the error (malloc'd). */
static char *parse_meta(const uint8_t *code, size_t len, char **name)
{
	*name = NULL;
	if (len < 2 || code[0] != '#' || code[1] != '!')
		return strdup("ERR Missing library metadata");
	const uint8_t *nl = memchr(code, '\n', len);
	char *line = strndup((const char *)code + 2, (nl ? (size_t)(nl - code) : len) - 2);
	if (line == NULL)
		return strdup(cmd_err_oom);
	char *save = NULL, *err = NULL;
	char *engine = strtok_r(line, " ", &save);
	if (engine == NULL || strcasecmp(engine, "lua") != 0) {
		if (asprintf(&err, "ERR Engine '%s' not found", engine ? engine : "") < 0)
			err = NULL;
		free(line);
		return err ? err : strdup(cmd_err_oom);
	}
	for (char *tok; err == NULL && (tok = strtok_r(NULL, " ", &save)) != NULL;) {
		if (strncmp(tok, "name=", 5) != 0) {
			if (asprintf(&err, "ERR Invalid metadata value given: %s", tok) < 0)
				err = strdup(cmd_err_oom);
		} else if (*name != NULL) {
			err = strdup("ERR Invalid metadata value, name argument was given multiple "
			             "times");
		} else if ((*name = strdup(tok + 5)) == NULL) {
			err = strdup(cmd_err_oom);
		}
	}
	free(line);
	if (err == NULL && *name == NULL)
		err = strdup("ERR Library name was not given");
	if (err == NULL && !name_ok(*name, strlen(*name)))
		err = strdup(err_name);
	if (err != NULL) {
		free(*name);
		*name = NULL;
	}
	return err;
}

/* Runs the library's code on sp with the load globals.  Returns NULL with
 * *out (not installed), or the error to reply (malloc'd). */
static char *lib_load(struct script_px *sp, const uint8_t *code, size_t len, char *name,
                      struct fn_lib **out)
{
	lua_State *L = sp->L;
	*out = NULL;
	struct fn_lib *lib = calloc(1, sizeof(*lib));
	uint8_t *copy = malloc(len ? len : 1);
	if (lib == NULL || copy == NULL) {
		free(lib);
		free(copy);
		free(name);
		return strdup(cmd_err_oom);
	}
	lib->name = name;
	memcpy(copy, code, len);
	lib->code = copy;
	lib->code_len = len;
	/* The first line compiles as a comment: line numbers stay the same. */
	uint8_t *body = malloc(len);
	if (body == NULL) {
		lib_free(sp, lib);
		return strdup(cmd_err_oom);
	}
	memcpy(body, code, len);
	body[0] = body[1] = '-';
	int rc = luaL_loadbuffer(L, (const char *)body, len, FN_CHUNK_NAME);
	free(body);
	char *err = NULL;
	if (rc != 0) {
		if (asprintf(&err, "ERR Error compiling function: %s", lua_tostring(L, -1)) < 0)
			err = NULL;
		lua_pop(L, 1);
		lib_free(sp, lib);
		return err ? err : strdup(cmd_err_oom);
	}
	/* The load globals under the proxy (its metatable's __index), then back. */
	lua_getmetatable(L, LUA_GLOBALSINDEX);
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->load_env_ref);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	loading = lib;
	load_deadline_ms = clock_unix_ms() + LOAD_TIMEOUT_MS;
	lua_sethook(L, load_hook, LUA_MASKCOUNT, LOAD_HOOK_COUNT);
	rc = lua_pcall(L, 0, 0, 0);
	lua_sethook(L, NULL, 0, 0);
	loading = NULL;
	lua_getmetatable(L, LUA_GLOBALSINDEX);
	lua_rawgeti(L, LUA_REGISTRYINDEX, sp->globals_ref);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	if (rc != 0) {
		const char *msg = NULL, *prefix = "ERR ";
		if (lua_type(L, -1) == LUA_TTABLE) {
			lua_getfield(L, -1, "err");
			msg = lua_tostring(L, -1);
			prefix = "";
			lua_pop(L, 1); /* (the table keeps the string) */
		} else {
			msg = lua_tostring(L, -1);
		}
		if (asprintf(&err, "ERR Error registering functions: %s%s", prefix,
		             msg ? msg : "unknown error") < 0)
			err = NULL;
		lua_pop(L, 1);
		lib_free(sp, lib);
		return err ? err : strdup(cmd_err_oom);
	}
	if (lib->n == 0) {
		lib_free(sp, lib);
		return strdup("ERR No functions registered");
	}
	*out = lib;
	return NULL;
}

/* ---- changes ------------------------------------------------------------ */

enum fn_op_kind { OP_LOAD, OP_DELETE, OP_FLUSH, OP_RESTORE };
enum restore_policy { POLICY_APPEND, POLICY_REPLACE, POLICY_FLUSH };

/* A change (FUNCTION LOAD, DELETE, FLUSH, RESTORE), in its x->heap. */
struct fn_op {
	struct cmd_ctx *x;
	enum fn_op_kind kind;
	bool replace;               /* LOAD REPLACE */
	enum restore_policy policy; /* RESTORE */
	const uint8_t *arg;         /* LOAD: the code; DELETE: the name; RESTORE: the payload */
	size_t arg_len;
	char *libname;           /* LOAD: the library loaded (proactor 0's) */
	uint64_t gen;            /* the persistence generation it waits for */
	int persist_status;      /* 0, or why the file could not be written */
	struct fn_op *next_wait; /* the writer's waiters */
};

/* The libraries a change brings, loaded, before they are installed. */
struct staged {
	struct fn_lib **libs;
	size_t n, cap;
	struct script_px *sp;
	char *err;
};

static void staged_free(struct staged *s)
{
	for (size_t i = 0; i < s->n; i++)
		lib_free(s->sp, s->libs[i]);
	free(s->libs);
	free(s->err);
}

static int staged_add(struct staged *s, struct fn_lib *lib)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 4;
		struct fn_lib **p = realloc(s->libs, cap * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		s->libs = p;
		s->cap = cap;
	}
	s->libs[s->n++] = lib;
	return 0;
}

/* Whether library `name` goes away when the staged libraries are installed
 * under `policy`. */
static bool replaced(const struct staged *s, enum restore_policy policy, const char *name)
{
	if (policy == POLICY_FLUSH)
		return true;
	if (policy == POLICY_APPEND)
		return false;
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->libs[i]->name, name) == 0)
			return true;
	return false;
}

/* Installs the staged libraries (all or none).  Returns NULL, or the error
 * (malloc'd). */
static char *staged_commit(struct staged *s, enum restore_policy policy, bool load)
{
	struct script_px *sp = s->sp;
	char *err = NULL;
	for (size_t i = 0; i < s->n && err == NULL; i++) {
		struct fn_lib *lib = s->libs[i];
		struct fn_lib *old = lib_find(sp, lib->name);
		if (old != NULL && !replaced(s, policy, old->name)) {
			if (asprintf(&err,
			             load ? "ERR Library '%s' already exists"
			                  : "ERR Library %s already exists",
			             lib->name) < 0)
				err = strdup(cmd_err_oom);
			break;
		}
		for (size_t j = 0; j < lib->n && err == NULL; j++) {
			const char *fname = lib->funcs[j].name;
			struct fn_func *f = func_find(sp, fname);
			bool clash = f != NULL && !replaced(s, policy, f->lib->name);
			for (size_t k = 0; k < i && !clash; k++) /* (within the change) */
				for (size_t m = 0; m < s->libs[k]->n && !clash; m++)
					clash = strcmp(s->libs[k]->funcs[m].name, fname) == 0;
			if (clash && asprintf(&err, "ERR Function %s already exists", fname) < 0)
				err = strdup(cmd_err_oom);
		}
	}
	if (err != NULL)
		return err;
	for (struct fn_lib *l = sp->libs, *next; l != NULL; l = next) {
		next = l->next;
		if (replaced(s, policy, l->name))
			lib_remove(sp, l);
	}
	for (size_t i = 0; i < s->n; i++)
		lib_install(sp, s->libs[i]);
	s->n = 0;
	return NULL;
}

static int restore_visit(void *arg, const uint8_t *code, size_t len)
{
	struct staged *s = arg;
	char *name;
	s->err = parse_meta(code, len, &name);
	struct fn_lib *lib = NULL;
	if (s->err == NULL)
		s->err = lib_load(s->sp, code, len, name, &lib);
	if (s->err == NULL && staged_add(s, lib) < 0) {
		lib_free(s->sp, lib);
		s->err = strdup(cmd_err_oom);
	}
	return s->err != NULL ? -EINVAL : 0;
}

/* Restores payload p on sp.  Returns NULL or the error (malloc'd). */
static char *restore_on(struct script_px *sp, const uint8_t *p, size_t len,
                        enum restore_policy policy)
{
	struct staged s = {.sp = sp};
	const char *werr;
	int rc = fdump_walk(p, len, restore_visit, &s, &werr);
	char *err = NULL;
	if (rc < 0 && s.err == NULL)
		err = strdup(werr);
	else if (rc < 0) {
		err = s.err;
		s.err = NULL;
	} else {
		err = staged_commit(&s, policy, false);
	}
	staged_free(&s);
	return err;
}

/* Makes change op on sp.  Returns NULL, or the error (malloc'd). */
static char *apply(struct script_px *sp, struct fn_op *op, char **libname)
{
	switch (op->kind) {
	case OP_LOAD: {
		char *name;
		char *err = parse_meta(op->arg, op->arg_len, &name);
		if (err != NULL)
			return err;
		if (!op->replace && lib_find(sp, name) != NULL) {
			if (asprintf(&err, "ERR Library '%s' already exists", name) < 0)
				err = strdup(cmd_err_oom);
			free(name);
			return err;
		}
		if (libname != NULL && (*libname = strdup(name)) == NULL) {
			free(name);
			return strdup(cmd_err_oom);
		}
		struct staged s = {.sp = sp};
		struct fn_lib *lib;
		err = lib_load(sp, op->arg, op->arg_len, name, &lib);
		if (err == NULL && staged_add(&s, lib) < 0) {
			lib_free(sp, lib);
			err = strdup(cmd_err_oom);
		}
		if (err == NULL)
			err = staged_commit(&s, POLICY_REPLACE, true);
		staged_free(&s);
		return err;
	}
	case OP_DELETE: {
		char name[256];
		snprintf(name, sizeof(name), "%.*s", (int)op->arg_len, (const char *)op->arg);
		struct fn_lib *lib = op->arg_len < sizeof(name) ? lib_find(sp, name) : NULL;
		if (lib == NULL)
			return strdup("ERR Library not found");
		lib_remove(sp, lib);
		return NULL;
	}
	case OP_FLUSH:
		while (sp->libs != NULL)
			lib_remove(sp, sp->libs);
		lua_gc(sp->L, LUA_GCCOLLECT, 0);
		return NULL;
	case OP_RESTORE:
		return restore_on(sp, op->arg, op->arg_len, op->policy);
	}
	return NULL;
}

/* ---- the file ----------------------------------------------------------- */

/* Proactor 0's writer of DIR/functions. */
static struct {
	char path[4096], tmp[4096], dir[4096];
	uint64_t requested; /* generation: changes asked for (fw.gen: the one being written) */
	bool busy;
	struct fn_op *waiters;
	/* the write in flight */
	struct px_op op;
	int step, fd, status;
	uint64_t gen;
	uint8_t *buf;
	size_t len, off;
} fw = {.fd = -1};

static void fw_step(struct px *px);

/* Builds the payload of sp's libraries in *buf.  Returns 0 or -ENOMEM. */
static int dump_of(struct script_px *sp, uint8_t **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	for (struct fn_lib *l = sp->libs; l != NULL; l = l->next)
		if (fdump_add(buf, len, l->code, l->code_len) < 0)
			return -ENOMEM;
	return fdump_finish(buf, len);
}

static void persisted_reply(struct cmd_ctx *x)
{
	struct fn_op *op = x->heap;
	x->heap = NULL;
	int status = op->persist_status;
	char *libname = op->libname;
	enum fn_op_kind kind = op->kind;
	free(op);
	if (status < 0) {
		cmd_failf(x,
		          "ERR the change is made but could not be written to %s (%s): it will not "
		          "survive a restart; fix the cause and repeat the command",
		          fw.path, strerror(-status));
	} else if (kind == OP_LOAD) {
		resp_add_bulk_str(x->reply, libname);
		cmd_done(x);
	} else {
		resp_add_simple(x->reply, "OK");
		cmd_done(x);
	}
	free(libname);
}

/* The write of generation fw.gen ended with fw.status: its waiters reply. */
static void fw_done(struct px *px)
{
	fw.busy = false;
	free(fw.buf);
	fw.buf = NULL;
	if (fw.status < 0)
		LOG_ERROR("functions: writing %s failed: %s; the functions changed since are not "
		          "persisted (the next change writes them again)",
		          fw.path, strerror(-fw.status));
	struct fn_op **pp = &fw.waiters;
	while (*pp != NULL) {
		struct fn_op *op = *pp;
		if (op->gen > fw.gen) {
			pp = &op->next_wait;
			continue;
		}
		*pp = op->next_wait;
		op->persist_status = fw.status;
		cmd_run_on_px(op->x, op->x->origin, persisted_reply);
	}
	if (fw.requested > fw.gen)
		fw_step(px); /* changes made meanwhile */
}

static void fw_complete(struct px *px, struct px_op *o, int res, unsigned flags)
{
	(void)o, (void)flags;
	px_release(px);
	if (res < 0) {
		fw.status = res;
		if (fw.fd >= 0)
			close(fw.fd); /* (a close of an fd already failing: no wait worth it) */
		fw.fd = -1;
		fw_done(px);
		return;
	}
	switch (fw.step) {
	case 1: /* opened */
	case 6:
		fw.fd = res;
		break;
	case 2: /* written */
		fw.off += (size_t)res;
		if (fw.off < fw.len) {
			fw.step = 1; /* (again) */
			break;
		}
		break;
	case 4: /* closed */
	case 8:
		fw.fd = -1;
		break;
	default:
		break;
	}
	if (fw.step == 8) {
		fw_done(px);
		return;
	}
	fw_step(px);
}

/* Issues the next operation of the write: open the new file, write it,
 * fsync, close, rename it over the old one, open the directory, fsync it,
 * close it. */
static void fw_step(struct px *px)
{
	if (!fw.busy) { /* a new write: the current libraries */
		fw.busy = true;
		fw.gen = fw.requested;
		fw.status = 0;
		fw.off = 0;
		fw.step = 0;
		if (dump_of(&script_pxs[0], &fw.buf, &fw.len) < 0) {
			fw.status = -ENOMEM;
			fw_done(px);
			return;
		}
	}
	struct io_uring_sqe *sqe = px_get_sqe(px, &fw.op);
	if (sqe == NULL) {
		fw.status = -EAGAIN;
		if (fw.fd >= 0)
			close(fw.fd);
		fw.fd = -1;
		fw_done(px);
		return;
	}
	fw.op.complete = fw_complete;
	fw.step++;
	switch (fw.step) {
	case 1:
		io_uring_prep_openat(sqe, AT_FDCWD, fw.tmp,
		                     O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		break;
	case 2:
		io_uring_prep_write(sqe, fw.fd, fw.buf + fw.off, (unsigned)(fw.len - fw.off),
		                    fw.off);
		break;
	case 3:
	case 7:
		io_uring_prep_fsync(sqe, fw.fd, 0);
		break;
	case 4:
	case 8:
		io_uring_prep_close(sqe, fw.fd);
		break;
	case 5:
		io_uring_prep_renameat(sqe, AT_FDCWD, fw.tmp, AT_FDCWD, fw.path, 0);
		break;
	case 6:
		io_uring_prep_openat(sqe, AT_FDCWD, fw.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
		break;
	}
	px_hold(px);
}

/* On proactor 0: op is made everywhere; writes the file, then op replies. */
static void persist(struct cmd_ctx *x)
{
	struct fn_op *op = x->heap;
	op->gen = ++fw.requested;
	op->next_wait = fw.waiters;
	fw.waiters = op;
	if (!fw.busy)
		fw_step(px_current());
}

/* ---- FUNCTION LOAD, DELETE, FLUSH, RESTORE ---------------------------------- */

static void change_part(struct cmd_part *p)
{
	struct fn_op *op = p->fan->x->heap;
	char *err = apply(&script_pxs[p->px], op, p->px == 0 ? &op->libname : NULL);
	if (err != NULL) {
		p->status = -EINVAL;
		resp_buf_append(&p->text, err, strlen(err));
		free(err);
	}
	cmd_part_done(p);
}

static void change_made(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	struct cmd_part *p0 = &f->parts[0];
	if (p0->status < 0) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "%.*s", (int)p0->text.len, p0->text.data);
		cmd_fan_free(f);
		struct fn_op *op = x->heap;
		x->heap = NULL;
		free(op->libname);
		free(op);
		cmd_fail(x, msg);
		return;
	}
	for (size_t i = 1; i < f->nparts; i++)
		if (f->parts[i].status < 0) /* (out of memory there: the states differ now) */
			LOG_ERROR(
			    "functions: proactor %zu could not make a change proactor 0 made: "
			    "%.*s; restart the server to load the same functions everywhere",
			    i, (int)f->parts[i].text.len, f->parts[i].text.data);
	cmd_fan_free(f);
	cmd_run_on_px(x, 0, persist);
}

static void change_start(struct cmd_ctx *x)
{
	cmd_fan_all(x, change_part, change_made);
}

/* Runs change op (x->heap) on every proactor, starting from proactor 0. */
static void change(struct cmd_ctx *x, struct fn_op *op)
{
	op->x = x;
	x->heap = op;
	cmd_run_on_px(x, 0, change_start);
}

static struct fn_op *op_new(struct cmd_ctx *x, enum fn_op_kind kind)
{
	struct fn_op *op = calloc(1, sizeof(*op));
	if (op == NULL)
		cmd_fail(x, cmd_err_oom);
	else
		op->kind = kind;
	return op;
}

static void function_load(struct cmd_ctx *x)
{
	bool replace = false;
	if (cmd_argc(x) == 4) {
		if (!cmd_arg_is(x, 2, "replace")) {
			cmd_failf(x, "ERR Unknown option given: %.*s", (int)cmd_arg_len(x, 2),
			          (const char *)cmd_arg(x, 2));
			return;
		}
		replace = true;
	}
	struct fn_op *op = op_new(x, OP_LOAD);
	if (op == NULL)
		return;
	op->replace = replace;
	op->arg = cmd_arg(x, cmd_argc(x) - 1);
	op->arg_len = cmd_arg_len(x, cmd_argc(x) - 1);
	change(x, op);
}

static void function_delete(struct cmd_ctx *x)
{
	struct fn_op *op = op_new(x, OP_DELETE);
	if (op == NULL)
		return;
	op->arg = cmd_arg(x, 2);
	op->arg_len = cmd_arg_len(x, 2);
	change(x, op);
}

static void function_flush(struct cmd_ctx *x)
{
	if (cmd_argc(x) > 3 ||
	    (cmd_argc(x) == 3 && !cmd_arg_is(x, 2, "sync") && !cmd_arg_is(x, 2, "async"))) {
		cmd_fail(x, "ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
		return;
	}
	struct fn_op *op = op_new(x, OP_FLUSH);
	if (op != NULL)
		change(x, op);
}

static void function_restore(struct cmd_ctx *x)
{
	enum restore_policy policy = POLICY_APPEND;
	if (cmd_argc(x) > 4) {
		cmd_fail(x, cmd_err_syntax);
		return;
	}
	if (cmd_argc(x) == 4) {
		if (cmd_arg_is(x, 3, "append"))
			policy = POLICY_APPEND;
		else if (cmd_arg_is(x, 3, "replace"))
			policy = POLICY_REPLACE;
		else if (cmd_arg_is(x, 3, "flush"))
			policy = POLICY_FLUSH;
		else {
			cmd_fail(x, "ERR Wrong restore policy given, value should be either FLUSH, "
			            "APPEND or REPLACE.");
			return;
		}
	}
	struct fn_op *op = op_new(x, OP_RESTORE);
	if (op == NULL)
		return;
	op->policy = policy;
	op->arg = cmd_arg(x, 2);
	op->arg_len = cmd_arg_len(x, 2);
	change(x, op);
}

/* ---- FUNCTION LIST, DUMP, STATS, KILL, HELP --------------------------------- */

static void list_function(struct resp_buf *b, const struct fn_func *f)
{
	resp_add_map(b, 3);
	resp_add_bulk_str(b, "name");
	resp_add_bulk_str(b, f->name);
	resp_add_bulk_str(b, "description");
	if (f->desc != NULL)
		resp_add_bulk_str(b, f->desc);
	else
		resp_add_null(b);
	resp_add_bulk_str(b, "flags");
	size_t n = 0;
	for (size_t i = 0; i < N_FLAGS; i++)
		n += (f->flags >> i) & 1;
	resp_add_set(b, n);
	for (size_t i = 0; i < N_FLAGS; i++)
		if (f->flags & (1u << i))
			resp_add_simple(b, flag_names[i]);
}

static void function_list(struct cmd_ctx *x)
{
	bool withcode = false;
	const uint8_t *pattern = NULL;
	size_t plen = 0;
	for (size_t i = 2; i < cmd_argc(x); i++) {
		if (!withcode && cmd_arg_is(x, i, "withcode")) {
			withcode = true;
		} else if (pattern == NULL && cmd_arg_is(x, i, "libraryname")) {
			if (i + 1 >= cmd_argc(x)) {
				cmd_fail(x, "ERR library name argument was not given");
				return;
			}
			pattern = cmd_arg(x, ++i);
			plen = cmd_arg_len(x, i);
		} else {
			cmd_failf(x, "ERR Unknown argument %.*s", (int)cmd_arg_len(x, i),
			          (const char *)cmd_arg(x, i));
			return;
		}
	}
	struct script_px *sp = sp_self();
	size_t n = 0;
	for (struct fn_lib *l = sp->libs; l != NULL; l = l->next)
		n += pattern == NULL || cmd_glob_match(pattern, plen, (const uint8_t *)l->name,
		                                       strlen(l->name), false);
	resp_add_array(x->reply, n);
	for (struct fn_lib *l = sp->libs; l != NULL; l = l->next) {
		if (pattern != NULL && !cmd_glob_match(pattern, plen, (const uint8_t *)l->name,
		                                       strlen(l->name), false))
			continue;
		resp_add_map(x->reply, withcode ? 4 : 3);
		resp_add_bulk_str(x->reply, "library_name");
		resp_add_bulk_str(x->reply, l->name);
		resp_add_bulk_str(x->reply, "engine");
		resp_add_bulk_str(x->reply, "LUA");
		resp_add_bulk_str(x->reply, "functions");
		resp_add_array(x->reply, l->n);
		for (size_t i = 0; i < l->n; i++)
			list_function(x->reply, &l->funcs[i]);
		if (withcode) {
			resp_add_bulk_str(x->reply, "library_code");
			resp_add_bulk(x->reply, l->code, l->code_len);
		}
	}
	cmd_done(x);
}

static void function_dump(struct cmd_ctx *x)
{
	uint8_t *buf;
	size_t len;
	if (dump_of(sp_self(), &buf, &len) < 0) {
		free(buf);
		cmd_fail(x, cmd_err_oom);
		return;
	}
	resp_add_bulk(x->reply, buf, len);
	free(buf);
	cmd_done(x);
}

/* The busy function of each proactor, for FUNCTION STATS from any other:
 * set when a function passes the busy threshold (the only time Redis can
 * answer STATS while one runs: it serves nothing else until then), cleared
 * when it ends.  A mutex, as these are rare events off the request path and
 * the proactor that sets one may be looping in Lua when STATS asks. */
struct busy_fn {
	pthread_mutex_t lock;
	const struct script_run *run; /* the one published, or NULL */
	uint64_t start_ms;
	struct resp_buf text; /* its name's bulk and its command's array, RESP2 */
	size_t name_len;      /* bytes of text that are the name */
};
static struct busy_fn *busy_fns;

void cmd_fn_busy(struct script_run *r, bool busy)
{
	struct busy_fn *b = &busy_fns[px_current()->id];
	pthread_mutex_lock(&b->lock);
	if (busy && b->run == NULL) {
		struct cmd_ctx *c = r->x;
		b->run = r;
		b->start_ms = r->start_ms;
		resp_buf_reset(&b->text);
		resp_add_bulk_str(&b->text, r->fname);
		b->name_len = b->text.len;
		resp_add_array(&b->text, cmd_argc(c));
		for (size_t i = 0; i < cmd_argc(c); i++)
			resp_add_bulk(&b->text, cmd_arg(c, i), cmd_arg_len(c, i));
	} else if (!busy && b->run == r) {
		b->run = NULL;
		resp_buf_reset(&b->text);
	}
	pthread_mutex_unlock(&b->lock);
}

static void function_stats(struct cmd_ctx *x)
{
	/* the oldest busy function (RESP2 text: the same bytes in RESP3) */
	struct resp_buf running;
	resp_buf_init(&running, 2);
	uint64_t start = 0;
	size_t name_len = 0;
	for (unsigned i = 0; i < script_npx; i++) {
		struct busy_fn *b = &busy_fns[i];
		pthread_mutex_lock(&b->lock);
		if (b->run != NULL && (start == 0 || b->start_ms < start)) {
			start = b->start_ms;
			name_len = b->name_len;
			resp_buf_reset(&running);
			resp_buf_append(&running, b->text.data, b->text.len);
		}
		pthread_mutex_unlock(&b->lock);
	}
	struct script_px *sp = sp_self();
	size_t libs = 0, funcs = 0;
	for (struct fn_lib *l = sp->libs; l != NULL; l = l->next) {
		libs++;
		funcs += l->n;
	}
	resp_add_map(x->reply, 2);
	resp_add_bulk_str(x->reply, "running_script");
	if (start == 0) {
		resp_add_null(x->reply);
	} else {
		uint64_t now = clock_unix_ms();
		resp_add_map(x->reply, 3);
		resp_add_bulk_str(x->reply, "name");
		resp_buf_append(x->reply, running.data, name_len);
		resp_add_bulk_str(x->reply, "command");
		resp_buf_append(x->reply, running.data + name_len, running.len - name_len);
		resp_add_bulk_str(x->reply, "duration_ms");
		resp_add_int(x->reply, (int64_t)(now > start ? now - start : 0));
	}
	resp_buf_free(&running);
	resp_add_bulk_str(x->reply, "engines");
	resp_add_map(x->reply, 1);
	resp_add_bulk_str(x->reply, "LUA");
	resp_add_map(x->reply, 2);
	resp_add_bulk_str(x->reply, "libraries_count");
	resp_add_int(x->reply, (int64_t)libs);
	resp_add_bulk_str(x->reply, "functions_count");
	resp_add_int(x->reply, (int64_t)funcs);
	cmd_done(x);
}

static void function_help(struct cmd_ctx *x)
{
	static const char *const lines[] = {
	    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
	    "LOAD [REPLACE] <FUNCTION CODE>",
	    "    Create a new library with the given library name and code.",
	    "DELETE <LIBRARY NAME>",
	    "    Delete the given library.",
	    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
	    "    Return general information on all the libraries:",
	    "    * Library name",
	    "    * The engine used to run the Library",
	    "    * Library description",
	    "    * Functions list",
	    "    * Library code (if WITHCODE is given)",
	    "    It also possible to get only function that matches a pattern using LIBRARYNAME "
	    "argument.",
	    "STATS",
	    "    Return information about the current function running:",
	    "    * Function name",
	    "    * Command used to run the function",
	    "    * Duration in MS that the function is running",
	    "    If no function is running, return nil",
	    "    In addition, returns a list of available engines.",
	    "KILL",
	    "    Kill the current running function.",
	    "FLUSH [ASYNC|SYNC]",
	    "    Delete all the libraries.",
	    "    When called without the optional mode argument, the behavior is determined by "
	    "the",
	    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
	    "    * ASYNC: Asynchronously flush the libraries.",
	    "    * SYNC: Synchronously flush the libraries.",
	    "DUMP",
	    "    Return a serialized payload representing the current libraries, can be "
	    "restored using FUNCTION RESTORE command",
	    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
	    "    Restore the libraries represented by the given payload, it is possible to give "
	    "a restore policy to",
	    "    control how to handle existing libraries (default APPEND):",
	    "    * FLUSH: delete all existing libraries.",
	    "    * APPEND: appends the restored libraries to the existing libraries. On "
	    "collision, abort.",
	    "    * REPLACE: appends the restored libraries to the existing libraries, On "
	    "collision, replace the old",
	    "      libraries with the new libraries (notice that even on this option there is a "
	    "chance of failure",
	    "      in case of functions name collision with another library).",
	    "HELP",
	    "    Prints this help.",
	    NULL,
	};
	cmd_reply_help(x, lines);
}

const struct cmd_def cmd_function_subcommands[] = {
    {"delete", function_delete, 3, CMD_NOSCRIPT | CMD_WRITE, 0, 0, 0, "scripting", "7.0.0",
     "Delete a function by name", NULL, "function"},
    {"dump", function_dump, 2, CMD_NOSCRIPT, 0, 0, 0, "scripting", "7.0.0",
     "Dump all functions into a serialized binary payload", NULL, "function"},
    {"flush", function_flush, -2, CMD_NOSCRIPT | CMD_WRITE, 0, 0, 0, "scripting", "7.0.0",
     "Deleting all functions", NULL, "function"},
    {"help", function_help, 2, CMD_LOADING | CMD_STALE, 0, 0, 0, "scripting", "7.0.0",
     "Show helpful text about the different subcommands", NULL, "function"},
    {"kill", script_kill, 2, CMD_NOSCRIPT, 0, 0, 0, "scripting", "7.0.0",
     "Kill the function currently in execution.", NULL, "function"},
    {"list", function_list, -2, CMD_NOSCRIPT, 0, 0, 0, "scripting", "7.0.0",
     "List information about all the functions", NULL, "function"},
    {"load", function_load, -3, CMD_NOSCRIPT | CMD_WRITE | CMD_DENYOOM, 0, 0, 0, "scripting",
     "7.0.0", "Create a function with the given arguments (name, code, description)", NULL,
     "function"},
    {"restore", function_restore, -3, CMD_NOSCRIPT | CMD_WRITE | CMD_DENYOOM, 0, 0, 0, "scripting",
     "7.0.0", "Restore all the functions on the given payload", NULL, "function"},
    {"stats", function_stats, 2, CMD_NOSCRIPT, 0, 0, 0, "scripting", "7.0.0",
     "Return information about the function currently running (name, description, "
     "duration)",
     NULL, "function"},
    {NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
};

void cmd_function(struct cmd_ctx *x)
{
	cmd_run_subcommand(x, cmd_function_subcommands);
}

/* ---- FCALL ------------------------------------------------------------------ */

bool cmd_fn_push(struct script_px *sp, lua_State *co, const char *name)
{
	struct fn_func *f = func_find(sp, name);
	if (f == NULL)
		return false;
	lua_rawgeti(co, LUA_REGISTRYINDEX, f->ref);
	return true;
}

static void fcall_generic(struct cmd_ctx *x, bool read_only)
{
	struct script_px *sp = sp_self();
	char name[256];
	const struct fn_func *f = NULL;
	if (cmd_arg_len(x, 1) < sizeof(name)) {
		memcpy(name, cmd_arg(x, 1), cmd_arg_len(x, 1));
		name[cmd_arg_len(x, 1)] = '\0';
		f = func_find(sp, name);
	}
	if (f == NULL) {
		cmd_fail(x, err_not_found);
		return;
	}
	int64_t numkeys;
	if (!resp_parse_int64(cmd_arg(x, 2), cmd_arg_len(x, 2), &numkeys)) {
		cmd_fail(x, "ERR Bad number of keys provided");
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
	if (read_only && !(f->flags & FN_NO_WRITES)) {
		cmd_fail(x, "ERR Can not execute a script with write flag using *_ro command.");
		return;
	}
	struct script_run *r = script_run_new(x);
	if (r == NULL)
		return;
	r->fname = strdup(name);
	if (r->fname == NULL) {
		x->heap = NULL;
		resp_buf_free(&r->call.reply);
		free(r);
		cmd_fail(x, cmd_err_oom);
		return;
	}
	r->name = r->fname;
	r->chunk = FN_CHUNK_NAME;
	r->read_only = read_only || (f->flags & FN_NO_WRITES);
	script_run_start(x);
}

void cmd_fcall(struct cmd_ctx *x)
{
	fcall_generic(x, false);
}

void cmd_fcall_ro(struct cmd_ctx *x)
{
	fcall_generic(x, true);
}

/* ---- set-up --------------------------------------------------------------- */

int cmd_fn_init_state(struct script_px *sp)
{
	lua_newtable(sp->L);
	sp->fn_ref = luaL_ref(sp->L, LUA_REGISTRYINDEX);
	sp->libs = NULL;
	return 0;
}

int cmd_function_init(const char *dir, char *err, size_t errlen)
{
	busy_fns = calloc(script_npx, sizeof(*busy_fns));
	if (busy_fns == NULL) {
		snprintf(err, errlen, "out of memory setting up functions");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < script_npx; i++) {
		pthread_mutex_init(&busy_fns[i].lock, NULL);
		resp_buf_init(&busy_fns[i].text, 2);
	}
	if ((size_t)snprintf(fw.path, sizeof(fw.path), "%s/" FN_FILE, dir) >= sizeof(fw.path) ||
	    (size_t)snprintf(fw.tmp, sizeof(fw.tmp), "%s/" FN_FILE ".tmp", dir) >= sizeof(fw.tmp) ||
	    (size_t)snprintf(fw.dir, sizeof(fw.dir), "%s", dir) >= sizeof(fw.dir)) {
		snprintf(err, errlen, "the data directory's path is too long: %s", dir);
		return -ENAMETOOLONG;
	}
	int fd = open(fw.path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot open %s: %s; fix its permissions", fw.path,
		         strerror(errno));
		return -errno;
	}
	struct stat stbuf;
	uint8_t *buf = NULL;
	int ret = fstat(fd, &stbuf) < 0 ? -errno : 0;
	size_t len = ret == 0 ? (size_t)stbuf.st_size : 0, got = 0;
	if (ret == 0 && (buf = malloc(len ? len : 1)) == NULL)
		ret = -ENOMEM;
	while (ret == 0 && got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		got += (size_t)n;
	}
	close(fd);
	for (unsigned i = 0; ret == 0 && i < script_npx; i++) {
		char *e = restore_on(&script_pxs[i], buf, len, POLICY_APPEND);
		if (e != NULL) {
			snprintf(err, errlen,
			         "the functions in %s cannot be loaded (%s); move the file away to "
			         "start "
			         "without them, and load them again with FUNCTION LOAD",
			         fw.path, e);
			free(e);
			free(buf);
			return -EINVAL;
		}
	}
	free(buf);
	if (ret < 0) {
		snprintf(err, errlen, "cannot read %s: %s", fw.path, strerror(-ret));
		return ret;
	}
	size_t n = 0;
	for (struct fn_lib *l = script_pxs[0].libs; l != NULL; l = l->next)
		n++;
	LOG_INFO("functions: %zu libraries loaded from %s", n, fw.path);
	return 0;
}
