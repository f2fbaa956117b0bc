/* cmd: the command table, dispatch and routing of ringkv-server (the path of
 * a request, hop by hop, is in docs/ARCHITECTURE.md; the commands and every
 * guarantee that differs from Redis are in docs/COMMANDS.md).
 *
 * A request's path: net/ parses a command and calls cmd_handle() on the
 * connection's proactor (the *origin*).  cmd_handle looks the name up in the
 * table, checks the arity and AUTH, and then
 *   - CMD_KEYED commands (one key, argv[1]) run on the proactor of the key's
 *     shard: in place when that is the origin (the fast path: no message),
 *     else the request travels there as a message;
 *   - every other command runs on the origin; multi-key and whole-keyspace
 *     commands fan out per proactor with cmd_fan_keys / cmd_fan_all and
 *     gather the answers back on the origin.
 * A handler writes exactly one reply into x->reply (resp_add_*) and then calls
 * cmd_done(x), on whatever proactor it is: the request is finished on the
 * origin (conn_req_done), where net sends replies in request order.  Every
 * error reply goes through cmd_fail (or a cmd_fail_* / *_or_fail helper that
 * calls it), which finishes the request too.
 *
 * Ownership: a struct cmd_ctx is allocated on the origin for each request and
 * freed there by cmd_done.  While a request runs on another proactor, that
 * proactor alone touches the context and the reply (ownership travels with
 * the message); x->conn may be used only on the origin.
 */
#ifndef RINGKV_CMD_H
#define RINGKV_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/conn.h"
#include "service/config.h"
#include "service/runtime/clock.h"
#include "service/runtime/pool.h"
#include "storage/store.h"

#define RINGKV_VERSION    "0.1.0"
#define CMD_REDIS_VERSION "7.0.0" /* the Redis version whose commands and replies we follow */

/* Command flags (COMMAND INFO shows the lowercase names). */
#define CMD_WRITE    0x001 /* may change data */
#define CMD_READONLY 0x002 /* reads data only */
#define CMD_FAST     0x004 /* O(1) or O(log N) */
#define CMD_NOAUTH   0x008 /* allowed before AUTH (AUTH, HELLO, QUIT, RESET) */
#define CMD_KEYED    0x010 /* runs on the proactor that owns argv[1]'s shard */
#define CMD_ADMIN    0x020 /* administrative (CONFIG, SHUTDOWN, SAVE, ...) */
#define CMD_LOADING  0x040 /* allowed while loading (every command here: no loading state) */
#define CMD_STALE    0x080 /* allowed with stale data */
#define CMD_DENYOOM  0x100 /* may grow memory */
#define CMD_NOSCRIPT 0x200 /* not allowed from scripts (redis.call refuses it) */

struct cmd_ctx;
typedef void (*cmd_fn)(struct cmd_ctx *x);

/* One command of the table (or a subcommand of CLIENT, CONFIG, COMMAND). */
struct cmd_def {
	const char *name;                  /* lowercase */
	cmd_fn fn;                         /* the handler */
	int arity;                         /* argc with the name; negative: at least -arity */
	unsigned flags;                    /* CMD_* */
	int first_key, last_key, key_step; /* key positions (COMMAND INFO); last -1 = the last
	                                      argument; 0 0 0 = no key */
	const char *group;   /* COMMAND DOCS group: string, generic, connection, server */
	const char *since;   /* Redis version that introduced it */
	const char *summary; /* one line, COMMAND DOCS */
	const struct cmd_def *subcommands; /* CLIENT/CONFIG/COMMAND: ends with a NULL name */
	const char *parent;                /* subcommands: the container's name ("client") */
};

/* Per-request context.  The union holds the scratch state of the command that
 * is running, one member per command (or family of commands sharing a
 * generic helper); `heap` is freed when the request finishes. */
struct cmd_ctx {
	struct conn_req *req;   /* the request (argv and reply), owned by net */
	struct conn *conn;      /* the client: touch only on the origin */
	struct resp_buf *reply; /* &req->reply */
	const struct cmd_def *cmd;
	const struct cmd_def *sub; /* the subcommand running (CONFIG SET), or NULL */
	unsigned origin;           /* the connection's proactor */
	unsigned shard;            /* CMD_KEYED: argv[1]'s shard */
	struct store *st;          /* CMD_KEYED: that shard's store (use on its proactor) */
	struct store_req sr;       /* CMD_KEYED: the request to it */
	unsigned db;               /* the connection's selected database */
	cmd_fn run;                /* cmd_run_on_shard: the handler to run there */
	const char *err;           /* an error reply decided inside a store update
	                              (cmd_update_refuse), or NULL */
	void *heap;                /* malloc'd scratch of the command; freed with the context */
	struct cmd_exec *exec;     /* a command run by EXEC (cmd_multi.c), or NULL */
	size_t exec_index;         /* ... its place in the transaction */
	const void *holder;        /* the holds its store requests may pass (EXEC), or NULL */
	struct store_durable *durable; /* its writes are acknowledged early and counted
	                                  there (a script's commands), or NULL */
	struct cmd_txn *txn;           /* the transaction its writes belong to (EXEC, a
	                                  script, a multi-key command), or NULL */
	union {
		struct {
			int64_t delta; /* the increment */
			int64_t value; /* the new value: the reply */
			char num[64];  /* the new value's decimal text: what is written */
		} incr;                /* INCR DECR INCRBY DECRBY */
		struct {
			long double delta;
		} incrbyfloat;
		struct {
			int64_t start, end;
		} getrange;
		struct {
			int64_t offset; /* >= 0 */
		} setrange;
		struct {
			unsigned flags;     /* CMD_SET_* (cmd_string.c) */
			uint64_t expiry_ms; /* absolute, 0 = none */
			bool int_reply;     /* SETNX: :1 / :0 instead of +OK / nil */
		} set;                      /* SET SETNX SETEX PSETEX GETSET, and GETEX */
		struct {
			unsigned flags;   /* NX/XX/GT/LT (CMD_EXPIRE_*, cmd_keys.c) */
			uint64_t when_ms; /* absolute expiry */
			int result;       /* the integer reply */
		} expire; /* EXPIRE PEXPIRE EXPIREAT PEXPIREAT, and PERSIST's result */
		struct {
			unsigned kind; /* enum ttl_kind (cmd_keys.c) */
		} ttl;                 /* TTL PTTL EXPIRETIME PEXPIRETIME */
		struct {
			uint64_t cursor;        /* within the current shard */
			size_t count;           /* COUNT */
			size_t found;           /* keys written to `keys` */
			size_t visited;         /* keys the walk visited (COUNT bounds them) */
			const uint8_t *pattern; /* MATCH, or NULL */
			size_t pattern_len;
			int type;             /* TYPE: FMT_TYPE_*; -1 any, -2 none */
			struct resp_buf keys; /* bulk strings of the keys found */
		} scan;
		struct {
			unsigned a, b; /* the databases */
		} swapdb;
		struct {
			uint64_t cursor;      /* within the current shard */
			uint64_t start;       /* where the walk of this shard began */
			unsigned shards_left; /* shards not yet tried */
			bool wrapped;         /* the walk passed the end of the shard */
			bool found;           /* the reply holds the key found */
		} randomkey;
		struct {
			unsigned sections; /* INFO_* bits (cmd_server.c) */
		} info;
		struct {
			int64_t count;   /* the COUNT argument (negative: repeats allowed) */
			bool withvalues; /* HRANDFIELD WITHVALUES */
		} random;                /* HRANDFIELD SRANDMEMBER SPOP */
		struct {
			uint8_t type;           /* FMT_TYPE_HASH or FMT_TYPE_SET */
			uint64_t cursor;        /* where the walk resumes (0: the start) */
			size_t count;           /* COUNT */
			const uint8_t *pattern; /* MATCH, or NULL */
			size_t pattern_len;
		} cscan;                        /* HSCAN SSCAN */
		struct {
			bool active;          /* the reply is being streamed in parts */
			bool cancel;          /* the client went away: finish at once */
			uint64_t cursor;      /* where the walk goes on */
			uint64_t remaining;   /* elements the header announced, not yet sent */
			struct resp_buf part; /* the part on its way to the origin */
			struct px_timer wait; /* the origin waits for the client to read */
		} stream;                     /* HGETALL HKEYS HVALS SMEMBERS (cmd_coll_dump) */
		struct {
			struct px_timer retry; /* SAVE: the next try while a flush runs */
			unsigned tries;
		} save;
		struct {
			size_t arg;         /* the key being watched */
			struct cmd_watcher *w;
			uint64_t expiry_ms; /* its expiry, 0 = none (or no key) */
		} watch;                    /* WATCH (cmd_multi.c) */
		struct cmd_exec *exec;      /* EXEC (cmd_multi.c) */
		struct {
			unsigned step;      /* cmd_set.c's steps across shards, 1..4 */
			bool dst_wrongtype; /* the destination holds another type */
			int result;         /* the member left the source: 1 */
		} smove;
	} u;
	struct cmd_ctx *next_free; /* the origin's free list */
};

/* ---- shared error replies (Redis's exact wording) ---------------------- */

extern const char cmd_err_syntax[];    /* ERR syntax error */
extern const char cmd_err_not_int[];   /* ERR value is not an integer or out of range */
extern const char cmd_err_not_float[]; /* ERR value is not a valid float */
extern const char cmd_err_overflow[];  /* ERR increment or decrement would overflow */
extern const char cmd_err_too_big[];   /* ERR string exceeds maximum allowed size ... */
extern const char cmd_err_noauth[];    /* NOAUTH Authentication required. */
extern const char cmd_err_wrongpass[]; /* WRONGPASS invalid username-password pair ... */
extern const char cmd_err_bad_name[];  /* ERR Client names cannot contain spaces, ... */
extern const char cmd_err_oom[];       /* ERR out of memory ... */
extern const char cmd_err_wrongtype[]; /* WRONGTYPE Operation against a key holding ... */

/* ---- set-up ----------------------------------------------------------- */

/* Builds the command table's lookup, keeps `cfg` (CONFIG GET/SET read and
 * change it, on proactor 0 only, from now on) and the pool.  Call once from
 * the main thread after shard_open_all and before net_start. */
int cmd_init(struct pool *pool, struct cfg *cfg, char *err, size_t errlen);

/* net_config.handler: runs one command of `c` (see the top of this file). */
void cmd_handle(struct conn *c, struct conn_req *req);

/* net_config.prefetch: hands the keys of the coming commands that this
 * proactor's shards own to their stores' store_prefetch. */
void cmd_prefetch(struct conn *c, const struct net_hint *hints, size_t n);

/* net_config.on_open: a new client must AUTH if requirepass is set now (it
 * may have changed since start-up: CONFIG SET). */
void cmd_on_open(struct conn *c);

/* Requests started on proactor `px` and not finished yet (shutdown waits for
 * 0 on every proactor).  Any thread. */
unsigned long cmd_inflight(unsigned px);

/* Set when SHUTDOWN asked the main thread to stop (it then sends SIGTERM to
 * the process); the main thread logs who asked. */
extern _Atomic unsigned long cmd_shutdown_client; /* client id, 0 = none */

/* ---- transactions (cmd_multi.c) --------------------------------------- */

/* The command table's entry of a name, or NULL. */
const struct cmd_def *cmd_lookup(const uint8_t *name, size_t len);

/* A context for `req` of `c`, counted in flight on the calling proactor, or
 * NULL when out of memory; cmd_ctx_end recycles one (on its origin). */
struct cmd_ctx *cmd_ctx_start(struct conn *c, struct conn_req *req);
void cmd_ctx_end(struct cmd_ctx *x);

/* Blocks of 1 to 16 KiB that a proactor keeps for reuse, a list per power
 * of two (an EXEC's state, a MULTI's queue): glibc serves such sizes from
 * its bins rather than its thread cache, and each one consolidates the fast
 * bins first (DECISIONS.md, "Allocations of the transaction path").
 * cmd_block_get returns a block of at least `size` bytes and its capacity in
 * *cap (NULL when out of memory); cmd_block_put takes a block back with that
 * capacity (NULL: nothing), into the cache of the proactor it runs on, or
 * frees it (off a proactor, past the cache, or bigger than its classes). */
void *cmd_block_get(size_t size, size_t *cap);
void cmd_block_put(void *p, size_t cap);

/* Runs x's command (looked up and checked) where it runs: on its key's
 * shard for CMD_KEYED, else in place. */
void cmd_dispatch(struct cmd_ctx *x);

/* Whether c is between MULTI and EXEC. */
bool cmd_in_multi(const struct conn *c);

/* Inside MULTI: queues x's command (+QUEUED; true) unless it is one that
 * runs at once (EXEC, DISCARD, MULTI, WATCH, QUIT, RESET; false). */
bool cmd_multi_queue(struct cmd_ctx *x);

/* A command of c was refused before it ran (unknown, arity, AUTH): inside
 * MULTI the transaction will abort (EXECABORT). */
void cmd_multi_refused(struct conn *c);

/* A command of several keys (not CMD_KEYED) whose keys are on several
 * shards: runs it as a transaction of one command — holds on every key, so
 * no other client sees part of it or interleaves with it — and returns true;
 * false (nothing done) for keys of one shard, or inside EXEC. */
bool cmd_isolate(struct cmd_ctx *x);

/* A command EXEC ran has finished (on the origin). */
void cmd_exec_sub_done(struct cmd_ctx *x);

/* Held runs, for scripts (cmd_script.c): a run of commands decided one at a
 * time, isolated as an EXEC.  cmd_held_start holds `keys` — none inside an
 * EXEC, whose holds cover them (cmd_held_nested) — and, with `barrier`,
 * makes the connection's later commands wait; then `ready(x)` runs on the origin
 * (x->u.exec is the run), or with cmd_held_status(x) < 0 when a hold failed
 * (the run then ends with cmd_held_end).  Returns 0, or -ENOMEM (nothing
 * started, x untouched).  cmd_held_call runs command d with r's arguments in
 * database db, passing the holds; r->reply must be empty, in the protocol
 * wanted; call_done(x) runs on the origin when it has finished (possibly
 * before cmd_held_call returns), and with `durable` its writes are
 * acknowledged once applied and counted there (store.h); they belong to
 * transaction `txn` (may be NULL).  cmd_held_end
 * releases the holds and, with `lift`, lets the connection's later commands
 * run; x is then the caller's to reply and finish, or to start again (a
 * script that found a key it had not declared).  cmd_held_unhold releases the holds early, the run
 * going on without them (the connection's later commands still wait). */
int cmd_held_start(struct cmd_ctx *x, const struct store_key_ref *keys, size_t n, cmd_fn ready,
                   cmd_fn call_done, bool barrier);
bool cmd_held_nested(const struct cmd_ctx *x);
int cmd_held_status(const struct cmd_ctx *x);
void cmd_held_call(struct cmd_ctx *x, struct conn_req *r, const struct cmd_def *d, unsigned db,
                   struct store_durable *durable, struct cmd_txn *txn);
void cmd_held_end(struct cmd_ctx *x, bool lift);
void cmd_held_unhold(struct cmd_ctx *x);

/* Lets the connection's later commands run now, while the run goes on: for a
 * run whose every key is held (they queue behind its holds, so they still
 * see it whole).  At most once; cmd_held_end then leaves the barrier alone. */
void cmd_held_lift(struct cmd_ctx *x);

/* Calls add(arg, db, key, len) for every key of command d with these
 * arguments (the table's key positions; SINTERCARD's and EVAL's numkeys).
 * Returns 0, or -ENOMEM when add failed. */
int cmd_keys_of(const struct cmd_def *d, size_t argc, uint8_t **argv, size_t *argv_len,
                unsigned db, int (*add)(void *arg, unsigned db, const uint8_t *key, size_t len),
                void *arg);

/* ---- scripting (cmd_script.c) ------------------------------------------ */

/* Creates the Lua state of each of the n proactors; cmd_init calls it. */
int cmd_script_init(unsigned n, char *err, size_t errlen);

/* FUNCTION and FCALL (cmd_function.c).  cmd_function_init loads the
 * functions persisted in data directory `dir`; cmd_init calls it. */
int cmd_function_init(const char *dir, char *err, size_t errlen);
void cmd_function(struct cmd_ctx *x);
void cmd_fcall(struct cmd_ctx *x);
void cmd_fcall_ro(struct cmd_ctx *x);
extern const struct cmd_def cmd_function_subcommands[];

/* Whether d is EVAL, EVALSHA, FCALL or their _RO forms (their keys: argv[2]'s
 * count). */
bool cmd_is_script(const struct cmd_def *d);

/* A command of a connection whose scripts are running while its later
 * commands go on (conn->overlap) that could see a script half done — one
 * without keys that reads or changes the whole keyspace (FLUSHALL, KEYS,
 * DBSIZE, ...) — is held back until they end, with the connection's barrier
 * up: true.  False for any other command (it queues behind the scripts'
 * holds on their keys). */
bool cmd_script_defer(struct cmd_ctx *x);

/* Shutdown: every running script stops at its next redis.call or count
 * hook, as by SCRIPT KILL, written or not (any thread). */
void cmd_script_stop_all(void);

/* server.busy_reply_threshold_ms, which CONFIG SET changes (any thread). */
void cmd_script_set_busy_ms(int ms);

/* SHA-1 of p as 40 lowercase hex digits and a NUL (redis.sha1hex, script ids). */
void cmd_sha1_hex(const void *p, size_t len, char out[41]);

/* Sets up WATCH's tables (one per shard); cmd_init calls it. */
int cmd_multi_init(char *err, size_t errlen);

/* net_config.on_close: drops c's transaction and watches. */
void cmd_on_close(struct conn *c);

/* RESET: leaves MULTI and forgets the watches. */
void cmd_multi_reset(struct conn *c);

/* ---- for handlers: finishing a request -------------------------------- */

/* Finishes the request: the reply is complete.  Any proactor; x must not be
 * touched afterwards. */
void cmd_done(struct cmd_ctx *x);

/* Replies a HELP subcommand's lines (NULL-terminated) as an array of status
 * replies and finishes the request. */
void cmd_reply_help(struct cmd_ctx *x, const char *const *lines);

/* The one error path: replaces whatever the reply holds with the error reply
 * `msg` ("ERR ...", Redis's wording) and finishes the request (cmd_done). */
void cmd_fail(struct cmd_ctx *x, const char *msg);

/* cmd_fail with a printf-formatted message. */
void cmd_failf(struct cmd_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Redis's addReplyErrorArity: "ERR wrong number of arguments for 'set'
 * command" naming the command, or its subcommand as 'config|set'; finishes. */
void cmd_fail_arity(struct cmd_ctx *x);

/* "ERR invalid expire time in 'set' command" naming the command; finishes. */
void cmd_fail_invalid_expire(struct cmd_ctx *x);

/* Replies the error for a failed store request (status < 0 other than
 * -ENOENT/-EEXIST, which are answers, not failures): the cause and what to
 * do.  Finishes the request. */
void cmd_fail_store(struct cmd_ctx *x, int status);

/* In the done callback of x->sr: 0 if the request succeeded or answered
 * -ENOENT/-EEXIST; else -1 after replying the error (an update's refusal in
 * x->err first, else the store's failure), replacing any answer the update
 * wrote, and finishing the request: return at once. */
int cmd_store_ok_or_fail(struct cmd_ctx *x);

/* In a store update callback, which cannot finish the request: keeps the key
 * as it is and makes `msg` the reply (cmd_store_ok_or_fail writes it).
 * Returns STORE_UPDATE_KEEP for the callback to return. */
enum store_update_result cmd_update_refuse(struct cmd_ctx *x, const char *msg);

/* Longest string a command may create: server.max_bulk_len (Redis's
 * proto-max-bulk-len), at most the storage's FMT_VALUE_MAX.  Set by cmd_init. */
extern uint64_t cmd_max_string;

/* Whether a command may create a string of `len` bytes. */
static inline bool cmd_string_fits(uint64_t len)
{
	return len <= cmd_max_string;
}

/* Redis's checkStringLength: 0 if a command may create a string of `len`
 * bytes, else -1 after replying cmd_err_too_big and finishing the request:
 * return at once.  (A store update tests cmd_string_fits and refuses with
 * cmd_update_refuse instead.) */
int cmd_string_length_or_fail(struct cmd_ctx *x, uint64_t len);

/* Argument i as bytes. */
static inline const uint8_t *cmd_arg(const struct cmd_ctx *x, size_t i)
{
	return x->req->argv[i];
}
static inline size_t cmd_arg_len(const struct cmd_ctx *x, size_t i)
{
	return x->req->argv_len[i];
}
static inline size_t cmd_argc(const struct cmd_ctx *x)
{
	return x->req->argc;
}
/* Case-insensitive comparison of argument i with the lowercase word `w`. */
bool cmd_arg_is(const struct cmd_ctx *x, size_t i, const char *w);

/* Parses argument i as a signed 64-bit integer; on failure replies
 * cmd_err_not_int, finishes the request and returns -1 (return at once). */
int cmd_arg_int_or_fail(struct cmd_ctx *x, size_t i, int64_t *out);

/* The full name of a table entry: "get", or "client|list" for a subcommand. */
void cmd_full_name(const struct cmd_def *d, char *buf, size_t len);

/* ---- transactions: crash atomicity (cmd_txn.c) ---------------------------
 *
 * A transaction — an EXEC, a script, a multi-key command whose keys are on
 * several shards — is written so that after a crash it is there whole or
 * not at all (store.h, "transactions").  Its owner embeds a struct cmd_txn,
 * starts it with cmd_txn_begin and sets x->txn of every context that runs
 * for it: their store requests carry its id, and the shards they go to are
 * noted.  The owner then reports two things, on the origin, each once:
 * cmd_txn_appended when nothing more will be written (every write was
 * applied: with early acknowledgement, store.h), and cmd_txn_durable when
 * every write is written as storage.durability says (its store_durable
 * settled), with the first write error or 0.  The transaction commits on
 * its shards (one shard: right after the writes, the log orders them) and
 * `then` runs on the origin with 0 or the error that kept it from
 * committing; the reply goes then. */
struct cmd_txn {
	uint64_t id;
	unsigned origin;
	void (*then)(struct cmd_txn *t, int status);
	_Atomic uint64_t shard_bits;   /* the shards it wrote to, a bit each: here ... */
	_Atomic uint64_t *shard_words; /* ... or, past 64 shards, here */
	bool all_shards;               /* past 64 shards, and no memory for shard_words:
	                                  it ends on every shard */
	bool appended, durable;        /* what the owner reported */
	int status;                    /* the first error */
	unsigned n_ends, pending;      /* store_txn_end requests, and those not back */
	unsigned sent;                 /* STORE_TXN_* rounds sent */
	struct cmd_txn_end *ends;      /* one per shard it went to (malloc'd) */
};

void cmd_txn_begin(struct cmd_txn *t, void (*then)(struct cmd_txn *t, int status));
void cmd_txn_appended(struct cmd_txn *t);
/* Before cmd_txn_appended: t will not commit, nor finish (a script stopped
 * by SHUTDOWN: its rows stay out of the index, and the next start leaves its
 * records out); `then` gets -ECANCELED. */
void cmd_txn_cancel(struct cmd_txn *t);
void cmd_txn_durable(struct cmd_txn *t, int status);
/* Makes sr a request of t (t may be NULL: of none): the store notes in t
 * the shards that t's records went to. */
static inline void cmd_txn_mark(struct cmd_txn *t, struct store_req *sr)
{
	sr->txid = t != NULL ? t->id : 0;
	sr->txn_shards = t == NULL || t->all_shards ? NULL
	                 : t->shard_words != NULL   ? t->shard_words
	                                            : &t->shard_bits;
}
/* Frees what t holds (after `then`, or instead of reporting anything). */
void cmd_txn_free(struct cmd_txn *t);

/* Every store request of a command goes through here: inside EXEC it
 * carries the transaction's holder, so it may pass the transaction's holds
 * (store.h, "holds"). */
static inline void cmd_store_submit(struct cmd_ctx *x, struct store *st, struct store_req *sr)
{
	sr->holder = x->holder;
	sr->durable = x->durable;
	cmd_txn_mark(x->txn, sr);
	store_submit(st, sr);
}

/* Submits x->sr to x->st with x->sr.done = done (CMD_KEYED handlers), for
 * the key argv[1] (cmd_submit_arg: argv[i]) in the connection's database. */
void cmd_submit(struct cmd_ctx *x, void (*done)(struct store_req *sr));
void cmd_submit_arg(struct cmd_ctx *x, size_t i, void (*done)(struct store_req *sr));

/* The context of a store request submitted by cmd_submit. */
static inline struct cmd_ctx *cmd_of_sr(struct store_req *sr)
{
	return (struct cmd_ctx *)((char *)sr - offsetof(struct cmd_ctx, sr));
}

/* Runs a CMD_KEYED-style handler `fn` for `x` on the proactor of `shard`
 * (with x->shard and x->st set), in place if that is the calling proactor. */
void cmd_run_on_shard(struct cmd_ctx *x, unsigned shard, cmd_fn fn);

/* Runs fn(x) on proactor px (in place if that is the calling one); x->conn
 * must not be used there unless px is the origin. */
void cmd_run_on_px(struct cmd_ctx *x, unsigned px, cmd_fn fn);

/* Runs fn(x) on the calling proactor on a later iteration (long walks such
 * as RANDOMKEY give the loop back between steps). */
void cmd_continue(struct cmd_ctx *x, cmd_fn fn);

/* Runs the subcommand argv[1] of a container command from `table` (x->sub
 * is set while it runs), with Redis's errors for an unknown subcommand or a
 * wrong argument count. */
void cmd_run_subcommand(struct cmd_ctx *x, const struct cmd_def *table);

/* ---- fan-out ---------------------------------------------------------- */

/* One key of a multi-key command.  The command's `prepare` fills sr; the
 * store's answer is kept in status/existed/value until `finish`. */
struct cmd_keyop {
	struct store_req sr;
	struct cmd_part *part;
	size_t arg;     /* argv index of the key */
	unsigned shard; /* the key's shard */
	int status;     /* sr.status when done */
	bool existed;
	uint8_t *value; /* copy of sr.result when the command asked for it (malloc'd) */
	size_t value_len;
};

/* One proactor's share of a fan-out. */
struct cmd_part {
	struct cmd_fan *fan;
	unsigned px;            /* the proactor it runs on */
	size_t n;               /* cmd_fan_keys: keys in ops[] */
	size_t pending;         /* keys not answered yet */
	struct cmd_keyop **ops; /* cmd_fan_keys: this proactor's keys, in argv order */
	int64_t num;            /* cmd_fan_all: a number (DBSIZE: keys) */
	int status;             /* cmd_fan_all: 0 or the first -errno */
	struct resp_buf text;   /* cmd_fan_all: text or raw reply elements (proto of the
	                           request) */
	size_t count;           /* elements in text (KEYS) */
	uint64_t cursor;        /* KEYS: position of the walk in the current shard */
	unsigned shard;         /* KEYS: shard being walked */
	void *scratch;          /* the command's; freed with the fan */
};

/* A fan-out of one request to several proactors, gathered on the origin. */
struct cmd_fan {
	struct cmd_ctx *x;
	size_t nparts;
	size_t pending;                      /* parts not back yet */
	void (*finish)(struct cmd_fan *f);   /* on the origin once every part is back */
	void (*part_fn)(struct cmd_part *p); /* cmd_fan_all: runs on each proactor */
	bool copy_values;                    /* cmd_fan_keys: keep sr.result in keyop.value */
	bool has_txn;                        /* cmd_fan_keys: writes of several keys, as one
	                                        transaction of their own: */
	struct cmd_txn txn;                  /* ... (cmd.h, "transactions") */
	struct store_durable durable;        /* ... its writes, acknowledged early */
	size_t nops;
	struct cmd_keyop *ops;   /* cmd_fan_keys: one per key, in argv order (in this
	                            allocation, after the parts) */
	size_t alloc_cap;        /* the allocation's bytes (cmd_block_get) */
	struct cmd_part parts[]; /* one per proactor */
};

/* Runs one store request per key argv[first], argv[first+step], ...: `prepare`
 * fills op->sr (op, flags, value) on the origin, the keys go to their
 * proactors (one message per proactor), and `finish` runs on the origin with
 * every op answered.  finish frees the fan (cmd_fan_free), writes the reply
 * and calls cmd_done(f->x), or starts another fan-out.  Replies cmd_err_oom
 * itself when out of memory.  x may be finished when this returns. */
void cmd_fan_keys(struct cmd_ctx *x, size_t first, size_t step, bool copy_values,
                  void (*prepare)(struct cmd_ctx *x, struct cmd_keyop *op),
                  void (*finish)(struct cmd_fan *f));

/* Runs part_fn on every proactor (in place on the origin); part_fn fills its
 * part and calls cmd_part_done(p) (then or later, on that proactor); finish
 * runs on the origin when all are back, as for cmd_fan_keys. */
void cmd_fan_all(struct cmd_ctx *x, void (*part_fn)(struct cmd_part *p),
                 void (*finish)(struct cmd_fan *f));

/* A part has finished on its proactor. */
void cmd_part_done(struct cmd_part *p);

/* Frees a fan-out (its parts' text, the values copied); finish calls it once
 * it has used the answers. */
void cmd_fan_free(struct cmd_fan *f);

/* In a fan-out's finish: 0 if every key's request succeeded or answered
 * -ENOENT/-EEXIST and no part's status is < 0; else frees the fan, replies
 * the failure (cmd_fail_store: the first key's in argv order, else the
 * highest-numbered proactor's part) and returns -1: return at once. */
int cmd_fan_ok_or_fail(struct cmd_fan *f);

/* ---- pure helpers (unit-tested) --------------------------------------- */

/* Parses a long double as Redis's string2ld: no spaces, not NaN, at most
 * 5 KiB.  Returns true on success. */
bool cmd_parse_ld(const uint8_t *s, size_t len, long double *out);

/* Formats v as Redis's INCRBYFLOAT reply ("%.17Lf" with the trailing zeros and
 * point removed).  Returns the length written into buf (size >= 5200), 0 if
 * it does not fit. */
size_t cmd_format_ld(char *buf, size_t size, long double v);
#define CMD_LD_BUF 5200 /* cmd_format_ld's buffer size */

/* Redis's glob matching (stringmatchlen): * ? [abc] [^a-z] and \ escapes. */
bool cmd_glob_match(const uint8_t *pat, size_t plen, const uint8_t *s, size_t slen, bool nocase);

/* ---- collections (cmd_coll.c) ---------------------------------------- */

/* Runs the command as one store call (store.h, STORE_CALL) of `fn` on its
 * key's shard: fn writes the reply; the request finishes when what it changed
 * is durable (cmd_store_ok_or_fail then cmd_done). */
void cmd_call(struct cmd_ctx *x, store_call_fn fn);

/* cmd_call for a call that reads elements of its key named by arguments
 * first, first + step, ...: the store looks those not cached up before the
 * call runs, off the loop (store.h, prefetch). */
void cmd_call_elems(struct cmd_ctx *x, store_call_fn fn, size_t first, size_t step);

/* Inside a call: drops what the call changed and makes `msg` the reply. */
void cmd_call_refuse(struct cmd_ctx *x, struct store_txn *t, const char *msg);

/* Inside a call: 1 if key k exists with `type`, 0 if it does not exist, -1
 * after refusing with WRONGTYPE.  cmd_coll_type_or_refuse: key 0. */
int cmd_key_type_or_refuse(struct cmd_ctx *x, struct store_txn *t, size_t k, uint8_t type);
int cmd_coll_type_or_refuse(struct cmd_ctx *x, struct store_txn *t, uint8_t type);

/* Checks that argv[first], argv[first + step], ... (only argv[first] when
 * step is 0) fit as elements (FMT_ELEM_MAX).  Returns 0, or -1 after
 * replying. */
int cmd_elems_fit_or_fail(struct cmd_ctx *x, size_t first, size_t step);

/* Elements (with values) held in memory, in the order added; with `indexed`
 * each is kept once and cmd_elems_has answers in O(1). */
struct cmd_elem;
struct cmd_elems {
	struct cmd_elem *items;
	size_t n, cap_items;
	uint8_t *arena;
	size_t arena_len, arena_cap;
	size_t *slots; /* indexed: item index + 1, 0 = empty */
	size_t cap_slots;
	bool indexed;
};
void cmd_elems_init(struct cmd_elems *l, bool indexed);
void cmd_elems_free(struct cmd_elems *l);
/* Adds a copy: 1, 0 (indexed and there already) or -ENOMEM. */
int cmd_elems_add(struct cmd_elems *l, const uint8_t *p, size_t len, const uint8_t *v,
                  size_t vlen);
bool cmd_elems_has(const struct cmd_elems *l, const uint8_t *p, size_t len);
/* Element i (and its value when v is not NULL). */
const uint8_t *cmd_elems_at(const struct cmd_elems *l, size_t i, size_t *len, const uint8_t **v,
                            size_t *vlen);
/* Inside a call: adds every element of key k.  Returns 0, or -1 when the
 * call failed (it is then aborted). */
int cmd_elems_read(struct store_txn *t, size_t k, struct cmd_elems *l);
/* Replies the elements: a map of element -> value, or a set, or an array. */
void cmd_elems_reply(struct cmd_ctx *x, const struct cmd_elems *l, bool values, bool as_set);

/* Random picks (HRANDFIELD SRANDMEMBER SPOP), inside a call on key 0. */
#define CMD_RANDOM_REPLY_MAX (1u << 20) /* elements a negative count may ask for */
uint64_t cmd_random(void);
int cmd_random_count_or_fail(struct cmd_ctx *x, size_t i); /* -> x->u.random.count */
int cmd_random_one(struct store_txn *t, struct cmd_elems *out); /* 0 or -1; out init'd */
int cmd_random_pick(struct store_txn *t, uint64_t size, uint64_t count, bool uniq,
                    struct cmd_elems *out);
/* Replies `l` random elements (Redis's count semantics) of key 0. */
void cmd_random_elems(struct cmd_ctx *x, struct store_txn *t, int exists, int64_t l,
                      bool withvalues);

/* Inside a call on key 0 (of the command's type; exists: its check): replies
 * every element (keys, values or both: a map when both, else a set or an
 * array).  A collection of STREAM_MIN_ELEMS or more is streamed: the header
 * and STREAM_PART_ELEMS elements at a time go to the connection as the client
 * reads them, the call pausing in between (the key stays locked, nothing is
 * held whole in memory).  x->u.stream must be zeroed before the first call. */
void cmd_coll_dump(struct cmd_ctx *x, struct store_txn *t, int exists, bool keys, bool values,
                   bool as_set);

/* HSCAN SSCAN of `type`. */
void cmd_coll_scan(struct cmd_ctx *x, uint8_t type);

/* SCAN's cursor argv[i] (Redis's parseScanCursorOrReply).  Returns 0, or -1
 * after replying "ERR invalid cursor". */
int cmd_scan_cursor_or_fail(struct cmd_ctx *x, size_t i, uint64_t *out);

/* SCAN's options from argv[first]: MATCH (a NULL pattern for "*"), COUNT,
 * and TYPE when type_name is not NULL.  Returns NULL, or the error to reply. */
const char *cmd_scan_options(struct cmd_ctx *x, size_t first, bool allow_type,
                             const uint8_t **pattern, size_t *pattern_len, size_t *count,
                             const uint8_t **type_name);

/* Redis's string2ll: argv-style bytes that are exactly an int64's canonical
 * decimal form. */
bool cmd_canonical_int(const uint8_t *p, size_t len, int64_t *out);

/* Submits x->sr as prepared, to x->st (a cmd_fn for cmd_run_on_shard). */
void cmd_submit_prepared(struct cmd_ctx *x);

/* ---- the handlers (cmd_conn.c, cmd_string.c, cmd_keys.c, cmd_server.c) -- */

extern const struct cmd_def cmd_client_subcommands[];
extern const struct cmd_def cmd_config_subcommands[];
extern const struct cmd_def cmd_command_subcommands[];
extern const struct cmd_def cmd_object_subcommands[];

/* TYPE's name of a value type ("string", "hash", "set"). */
const char *cmd_type_name(uint8_t type);

/* server.databases (SELECT, SWAPDB, MOVE check against it). */
unsigned cmd_databases(void);

/* The table itself, for COMMAND (ends with a NULL name). */
extern const struct cmd_def cmd_table[];

/* Validates a client name (CLIENT SETNAME, HELLO SETNAME). */
bool cmd_client_name_ok(const uint8_t *s, size_t len);

/* The state CONFIG and AUTH share: the live configuration (proactor 0 only)
 * and requirepass, which any proactor reads. */
struct cfg *cmd_config(void);
const char *cmd_requirepass(void); /* "" = none */
void cmd_set_requirepass(const char *pw);
uint64_t cmd_start_ms(void);            /* Unix ms of start-up */
extern _Atomic uint64_t cmd_lastsave_s; /* LASTSAVE: Unix seconds */

void cmd_ping(struct cmd_ctx *x);
void cmd_echo(struct cmd_ctx *x);
void cmd_quit(struct cmd_ctx *x);
void cmd_hello(struct cmd_ctx *x);
void cmd_auth(struct cmd_ctx *x);
void cmd_select(struct cmd_ctx *x);
void cmd_client(struct cmd_ctx *x);
void cmd_command(struct cmd_ctx *x);
void cmd_reset(struct cmd_ctx *x);

void cmd_multi(struct cmd_ctx *x);
void cmd_exec(struct cmd_ctx *x);
void cmd_discard(struct cmd_ctx *x);
void cmd_watch(struct cmd_ctx *x);
void cmd_unwatch(struct cmd_ctx *x);

void cmd_get(struct cmd_ctx *x);
void cmd_set(struct cmd_ctx *x);
void cmd_setnx(struct cmd_ctx *x);
void cmd_setex(struct cmd_ctx *x);
void cmd_psetex(struct cmd_ctx *x);
void cmd_getset(struct cmd_ctx *x);
void cmd_getdel(struct cmd_ctx *x);
void cmd_getex(struct cmd_ctx *x);
void cmd_mget(struct cmd_ctx *x);
void cmd_mset(struct cmd_ctx *x);
void cmd_msetnx(struct cmd_ctx *x);
void cmd_append(struct cmd_ctx *x);
void cmd_strlen(struct cmd_ctx *x);
void cmd_incr(struct cmd_ctx *x);
void cmd_decr(struct cmd_ctx *x);
void cmd_incrby(struct cmd_ctx *x);
void cmd_decrby(struct cmd_ctx *x);
void cmd_incrbyfloat(struct cmd_ctx *x);
void cmd_getrange(struct cmd_ctx *x);
void cmd_setrange(struct cmd_ctx *x);

void cmd_del(struct cmd_ctx *x);
void cmd_rename(struct cmd_ctx *x);
void cmd_renamenx(struct cmd_ctx *x);
void cmd_copy(struct cmd_ctx *x);
void cmd_move(struct cmd_ctx *x);
/* The keys of RENAME, RENAMENX, COPY (with DB: the destination in that
 * database) and MOVE (the key in both databases), as cmd_keys_of. */
int cmd_copy_keys(const struct cmd_def *d, size_t argc, uint8_t **argv, size_t *argv_len,
                  unsigned db, int (*add)(void *arg, unsigned db, const uint8_t *key, size_t len),
                  void *arg);
void cmd_exists(struct cmd_ctx *x);
void cmd_touch(struct cmd_ctx *x);
void cmd_type(struct cmd_ctx *x);
void cmd_expire(struct cmd_ctx *x);
void cmd_pexpire(struct cmd_ctx *x);
void cmd_expireat(struct cmd_ctx *x);
void cmd_pexpireat(struct cmd_ctx *x);
void cmd_ttl(struct cmd_ctx *x);
void cmd_pttl(struct cmd_ctx *x);
void cmd_expiretime(struct cmd_ctx *x);
void cmd_pexpiretime(struct cmd_ctx *x);
void cmd_persist(struct cmd_ctx *x);
void cmd_scan(struct cmd_ctx *x);
void cmd_keys(struct cmd_ctx *x);
void cmd_dbsize(struct cmd_ctx *x);
void cmd_flushall(struct cmd_ctx *x);
void cmd_flushdb(struct cmd_ctx *x);
void cmd_swapdb(struct cmd_ctx *x);
void cmd_randomkey(struct cmd_ctx *x);
void cmd_object(struct cmd_ctx *x);

void cmd_hset(struct cmd_ctx *x);
void cmd_hmset(struct cmd_ctx *x);
void cmd_hsetnx(struct cmd_ctx *x);
void cmd_hget(struct cmd_ctx *x);
void cmd_hmget(struct cmd_ctx *x);
void cmd_hdel(struct cmd_ctx *x);
void cmd_hlen(struct cmd_ctx *x);
void cmd_hstrlen(struct cmd_ctx *x);
void cmd_hexists(struct cmd_ctx *x);
void cmd_hkeys(struct cmd_ctx *x);
void cmd_hvals(struct cmd_ctx *x);
void cmd_hgetall(struct cmd_ctx *x);
void cmd_hincrby(struct cmd_ctx *x);
void cmd_hincrbyfloat(struct cmd_ctx *x);
void cmd_hrandfield(struct cmd_ctx *x);
void cmd_hscan(struct cmd_ctx *x);

void cmd_sadd(struct cmd_ctx *x);
void cmd_srem(struct cmd_ctx *x);
void cmd_scard(struct cmd_ctx *x);
void cmd_sismember(struct cmd_ctx *x);
void cmd_smismember(struct cmd_ctx *x);
void cmd_smembers(struct cmd_ctx *x);
void cmd_srandmember(struct cmd_ctx *x);
void cmd_spop(struct cmd_ctx *x);
void cmd_smove(struct cmd_ctx *x);
void cmd_smove_across(struct cmd_ctx *x);
void cmd_sinter(struct cmd_ctx *x);
void cmd_sintercard(struct cmd_ctx *x);
void cmd_sinterstore(struct cmd_ctx *x);
void cmd_sunion(struct cmd_ctx *x);
void cmd_sunionstore(struct cmd_ctx *x);
void cmd_sdiff(struct cmd_ctx *x);
void cmd_sdiffstore(struct cmd_ctx *x);
void cmd_sscan(struct cmd_ctx *x);

void cmd_eval(struct cmd_ctx *x);
void cmd_evalsha(struct cmd_ctx *x);
void cmd_eval_ro(struct cmd_ctx *x);
void cmd_evalsha_ro(struct cmd_ctx *x);
void cmd_script(struct cmd_ctx *x);
extern const struct cmd_def cmd_script_subcommands[];

void cmd_info(struct cmd_ctx *x);
void cmd_config_cmd(struct cmd_ctx *x);
void cmd_time(struct cmd_ctx *x);
void cmd_save(struct cmd_ctx *x);
void cmd_bgsave(struct cmd_ctx *x);
void cmd_lastsave(struct cmd_ctx *x);
void cmd_shutdown(struct cmd_ctx *x);

#endif
