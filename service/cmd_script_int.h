/* cmd_script_int: what cmd_script.c (EVAL, SCRIPT) and cmd_function.c
 * (FUNCTION, FCALL) share — the per-proactor Lua state and a running script
 * or function.  Private to those two files. */
#ifndef RINGKV_CMD_SCRIPT_INT_H
#define RINGKV_CMD_SCRIPT_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <lua.h>

#include "cmd.h"

#define CALL_ARGS     16  /* argv kept in the run itself; more are malloc'd */
/* Coroutines and argument tables kept for reuse: as many as scripts run at
 * once on a proactor (50 connections pipelining 16 EVALSHAs keep ~800 in
 * flight); one dropped is garbage for Lua's collector (DECISIONS.md). */
#define POOL_MAX      1024
#define FN_CHUNK_NAME "@user_function"

struct fn_lib;

/* A running script or function, in its EVAL's or FCALL's x->heap. */
struct script_run {
	struct cmd_ctx *x;              /* the EVAL or FCALL */
	struct script_px *sp;           /* its proactor's state */
	lua_State *co;                  /* the script's coroutine */
	int co_ref, keys_ref, argv_ref; /* registry references that keep them */
	char sha[41];
	const char *name;           /* what errors and logs call it: the sha, or the function */
	const char *chunk;          /* its code's chunk name: @user_script or @user_function */
	char *fname;                /* FCALL: the function's name (malloc'd), else NULL */
	bool read_only;             /* EVAL_RO, or the no-writes flag */
	bool killed;                /* SCRIPT KILL stopped it: every hook raises */
	bool busy;                  /* it has run past the busy threshold (counted) */
	unsigned long kill_seen;    /* kill_gen when it became busy */
	bool wrote;                 /* it has run a write command (SCRIPT KILL refuses) */
	bool raise;                 /* the pending call is redis.call (errors raise) */
	lua_State *thread;          /* the thread that called it (the script's, or a pcall's) */
	int call_line;              /* the script's line that called it */
	int raise_ref;              /* redis.call's error for run_hook to raise, or LUA_NOREF */
	struct store_key_ref *keys; /* what it holds: its KEYS, then the keys it was
	                               found to use without declaring them (copies) */
	size_t n_keys, n_declared, cap_keys;
	unsigned attempts;  /* runs started over after such a key */
	bool learned;       /* the current call named a key not held */
	bool unheld;        /* it released its holds: it goes on without (see
	                       run_drive) */
	bool lift_at_start; /* its holds granted, the connection goes on */
	bool overlapping;   /* counted in conn->overlap */
	bool returned;      /* the coroutine returned: it may be reused */
	bool in_call;       /* cmd_held_call is on the stack */
	bool call_finished; /* ... and the command finished inside it */
	unsigned db;        /* its commands' database (SELECT in the script) */
	unsigned resp;      /* redis.setresp: 2 or 3 */
	uint64_t start_ms;
	struct conn_req call;         /* the command running for redis.call */
	struct store_durable durable; /* its writes, acknowledged early (store.h): the
	                                 reply waits until they are durable ... */
	struct cmd_txn txn;           /* ... and committed as one (cmd.h) ... */
	struct cmd_txn *tx;           /* ... &txn, or the EXEC's that runs it (which
	                                 commits it with the rest) */
	uint8_t *argv_small[CALL_ARGS];
	size_t len_small[CALL_ARGS];
	char (*nums)[32]; /* numbers given as arguments, formatted */
	size_t nums_cap;
	uint8_t **argv_big; /* argv when more than CALL_ARGS */
	size_t *len_big;
	size_t big_cap;
};

/* What SCRIPT KILL, on any proactor, sees of one proactor's scripts. */
struct script_busy {
	_Alignas(64) atomic_uint busy; /* runs in flight past the busy threshold */
	atomic_uint busy_wrote;        /* ... of which have written */
};

/* One proactor's Lua state, used only on that proactor. */
struct script_px {
	lua_State *L;
	int scripts_ref;            /* registry: table sha -> compiled function */
	int globals_ref;            /* registry: the hidden globals table (KEYS, ARGV) */
	struct script_run *running; /* the run inside lua_resume, or NULL */
	struct script_busy *busy;
	uint64_t rand48; /* math.random's state (Redis 7: one sequence, not reseeded) */
	/* Reused between runs (a coroutine that returned, KEYS/ARGV tables
	 * emptied): registry references, and the coroutines. */
	int thread_refs[POOL_MAX];
	lua_State *threads[POOL_MAX];
	size_t n_threads;
	int table_refs[POOL_MAX];
	size_t n_tables;
	/* Functions (cmd_function.c): the libraries loaded, and a table name ->
	 * struct fn_func (light userdata) for FCALL's lookups. */
	int load_env_ref; /* registry: the globals of a library's code while it loads */
	int fn_ref;       /* registry: the function table */
	struct fn_lib *libs;
};

/* A new Lua state whose small blocks come from free lists of its own
 * (cmd_script_alloc.c); NULL when out of memory. */
lua_State *script_state_new(void);

extern struct script_px *script_pxs;
extern unsigned script_npx;

/* The calling proactor's state. */
struct script_px *sp_self(void);

/* Pushes Redis's error table {err = s} (a redis.call error's form). */
void push_error_table(lua_State *L, const char *s, size_t len);

/* A new run for x (EVAL or FCALL) in x->heap, on the calling proactor; NULL
 * after replying out of memory. */
struct script_run *script_run_new(struct cmd_ctx *x);

/* Starts run r of x (its keys: numkeys argv[2], from argv[3]): holds them,
 * then runs.  x replies when it ends. */
void script_run_start(struct cmd_ctx *x);

/* SCRIPT KILL (FUNCTION KILL too): stops the busy runs that have not
 * written. */
void script_kill(struct cmd_ctx *x);

/* cmd_function.c: redis.register_function (the load environment's), the
 * function state of a new Lua state, and a function's callable for FCALL
 * (pushed on co; false if there is none of that name). */
int cmd_fn_register(lua_State *L);
void cmd_fn_busy(struct script_run *r, bool busy); /* a function's busy state (STATS) */
int cmd_fn_init_state(struct script_px *sp);
bool cmd_fn_push(struct script_px *sp, lua_State *co, const char *name);

#endif
