/* cmd: the command table, dispatch, routing to shards, fan-out and the
 * helpers every handler shares.  See cmd.h. */
#include "cmd.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/runtime/logging.h"
#include "service/runtime/freelist.h"
#include "shard.h"
#include "storage/format.h"

const char cmd_err_syntax[] = "ERR syntax error";
const char cmd_err_not_int[] = "ERR value is not an integer or out of range";
const char cmd_err_not_float[] = "ERR value is not a valid float";
const char cmd_err_overflow[] = "ERR increment or decrement would overflow";
const char cmd_err_too_big[] = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
const char cmd_err_noauth[] = "NOAUTH Authentication required.";
const char cmd_err_wrongpass[] = "WRONGPASS invalid username-password pair or user is disabled.";
const char cmd_err_bad_name[] =
    "ERR Client names cannot contain spaces, newlines or special characters.";
const char cmd_err_oom[] = "ERR out of memory running the command; retry, or lower"
                           " storage.cache_size if the server is short of memory";

/* Contexts a proactor keeps for reuse, 800 bytes each: a pipeline of
 * transactions keeps thousands in flight, and past the pool each is a malloc
 * of a size tcache does not keep (MULTI of 10 INCR at -P 16: 6 mallocs a
 * unit with 1024; 50 connections of 16 such units hold ~9 600, past 8192).
 * At most 13 MB a proactor, kept once a load has needed them. */
#define FREE_CTX_MAX      16384
#define BLOCK_MIN_SHIFT   10         /* cmd_block_get's smallest class: 1 KiB */
#define BLOCK_CLASSES     5          /* 1, 2, 4, 8 and 16 KiB */
#define BLOCK_CLASS_BYTES (4u << 20) /* kept per class and proactor */
#define LOOKUP_SLOTS 512  /* open-addressing table of command names; > 2 x commands */
#define NAME_MAX_LEN 32   /* longer names are unknown commands */

/* ---- the table --------------------------------------------------------- */

#define KEY1     1, 1, 1
#define NOKEY    0, 0, 0
#define KEYS_ALL 1, -1, 1

const struct cmd_def cmd_table[] = {
    /* connection */
    {"ping", cmd_ping, -1, CMD_FAST | CMD_STALE | CMD_LOADING, NOKEY, "connection", "1.0.0",
     "Ping the server", NULL, NULL},
    {"echo", cmd_echo, 2, CMD_FAST | CMD_STALE | CMD_LOADING, NOKEY, "connection", "1.0.0",
     "Echo the given string", NULL, NULL},
    {"quit", cmd_quit, -1, CMD_NOSCRIPT | CMD_FAST | CMD_NOAUTH | CMD_STALE | CMD_LOADING, NOKEY, "connection",
     "1.0.0", "Close the connection", NULL, NULL},
    {"hello", cmd_hello, -1, CMD_NOSCRIPT | CMD_FAST | CMD_NOAUTH | CMD_STALE | CMD_LOADING, NOKEY, "connection",
     "6.0.0", "Handshake with the server (protocol version, AUTH, SETNAME)", NULL, NULL},
    {"auth", cmd_auth, -2, CMD_NOSCRIPT | CMD_FAST | CMD_NOAUTH | CMD_STALE | CMD_LOADING, NOKEY, "connection",
     "1.0.0", "Authenticate to the server", NULL, NULL},
    {"select", cmd_select, 2, CMD_FAST | CMD_STALE | CMD_LOADING, NOKEY, "connection", "1.0.0",
     "Change the selected database for the current connection", NULL, NULL},
    {"client", cmd_client, -2, CMD_STALE | CMD_LOADING, NOKEY, "connection", "2.4.0",
     "A container for client connection commands", cmd_client_subcommands, NULL},
    {"command", cmd_command, -1, CMD_STALE | CMD_LOADING, NOKEY, "server", "2.8.13",
     "Get array of command details", cmd_command_subcommands, NULL},
    {"reset", cmd_reset, 1, CMD_NOSCRIPT | CMD_FAST | CMD_NOAUTH | CMD_STALE | CMD_LOADING, NOKEY, "connection",
     "6.2.0", "Reset the connection", NULL, NULL},

    /* transactions */
    {"multi", cmd_multi, 1, CMD_NOSCRIPT | CMD_FAST | CMD_STALE | CMD_LOADING, NOKEY, "transactions", "1.2.0",
     "Mark the start of a transaction block", NULL, NULL},
    {"exec", cmd_exec, 1, CMD_NOSCRIPT | CMD_STALE | CMD_LOADING, NOKEY, "transactions", "1.2.0",
     "Execute all commands issued after MULTI", NULL, NULL},
    {"discard", cmd_discard, 1, CMD_NOSCRIPT | CMD_FAST | CMD_STALE | CMD_LOADING, NOKEY, "transactions",
     "2.0.0", "Discard all commands issued after MULTI", NULL, NULL},
    {"watch", cmd_watch, -2, CMD_NOSCRIPT | CMD_FAST | CMD_STALE | CMD_LOADING, KEYS_ALL, "transactions",
     "2.2.0", "Watch the given keys to determine execution of the MULTI/EXEC block", NULL, NULL},
    {"unwatch", cmd_unwatch, 1, CMD_NOSCRIPT | CMD_FAST | CMD_STALE | CMD_LOADING, NOKEY, "transactions",
     "2.2.0", "Forget about all watched keys", NULL, NULL},

    /* strings */
    {"get", cmd_get, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "string", "1.0.0",
     "Get the value of a key", NULL, NULL},
    {"set", cmd_set, -3, CMD_WRITE | CMD_DENYOOM | CMD_KEYED, KEY1, "string", "1.0.0",
     "Set the string value of a key", NULL, NULL},
    {"setnx", cmd_setnx, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "string", "1.0.0",
     "Set the value of a key, only if the key does not exist", NULL, NULL},
    {"setex", cmd_setex, 4, CMD_WRITE | CMD_DENYOOM | CMD_KEYED, KEY1, "string", "2.0.0",
     "Set the value and expiration of a key", NULL, NULL},
    {"psetex", cmd_psetex, 4, CMD_WRITE | CMD_DENYOOM | CMD_KEYED, KEY1, "string", "2.6.0",
     "Set the value and expiration in milliseconds of a key", NULL, NULL},
    {"getset", cmd_getset, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "string",
     "1.0.0", "Set the string value of a key and return its old value", NULL, NULL},
    {"getdel", cmd_getdel, 2, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "string", "6.2.0",
     "Get the value of a key and delete the key", NULL, NULL},
    {"getex", cmd_getex, -2, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "string", "6.2.0",
     "Get the value of a key and optionally set its expiration", NULL, NULL},
    {"mget", cmd_mget, -2, CMD_READONLY | CMD_FAST, KEYS_ALL, "string", "1.0.0",
     "Get the values of all the given keys", NULL, NULL},
    {"mset", cmd_mset, -3, CMD_WRITE | CMD_DENYOOM, 1, -1, 2, "string", "1.0.1",
     "Set multiple keys to multiple values", NULL, NULL},
    {"msetnx", cmd_msetnx, -3, CMD_WRITE | CMD_DENYOOM, 1, -1, 2, "string", "1.0.1",
     "Set multiple keys to multiple values, only if none of the keys exist", NULL, NULL},
    {"append", cmd_append, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "string",
     "2.0.0", "Append a value to a key", NULL, NULL},
    {"strlen", cmd_strlen, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "string", "2.2.0",
     "Get the length of the value stored in a key", NULL, NULL},
    {"incr", cmd_incr, 2, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "string", "1.0.0",
     "Increment the integer value of a key by one", NULL, NULL},
    {"decr", cmd_decr, 2, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "string", "1.0.0",
     "Decrement the integer value of a key by one", NULL, NULL},
    {"incrby", cmd_incrby, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "string",
     "1.0.0", "Increment the integer value of a key by the given amount", NULL, NULL},
    {"decrby", cmd_decrby, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "string",
     "1.0.0", "Decrement the integer value of a key by the given number", NULL, NULL},
    {"incrbyfloat", cmd_incrbyfloat, 3, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1,
     "string", "2.6.0", "Increment the float value of a key by the given amount", NULL, NULL},
    {"getrange", cmd_getrange, 4, CMD_READONLY | CMD_KEYED, KEY1, "string", "2.4.0",
     "Get a substring of the string stored at a key", NULL, NULL},
    {"setrange", cmd_setrange, 4, CMD_WRITE | CMD_DENYOOM | CMD_KEYED, KEY1, "string", "2.2.0",
     "Overwrite part of a string at key starting at the specified offset", NULL, NULL},

    /* keyspace */
    {"del", cmd_del, -2, CMD_WRITE, KEYS_ALL, "generic", "1.0.0", "Delete a key", NULL, NULL},
    {"unlink", cmd_del, -2, CMD_WRITE | CMD_FAST, KEYS_ALL, "generic", "4.0.0",
     "Delete a key (the same as DEL here: deletion never blocks)", NULL, NULL},
    {"rename", cmd_rename, 3, CMD_WRITE, 1, 2, 1, "generic", "1.0.0", "Rename a key", NULL,
     NULL},
    {"renamenx", cmd_renamenx, 3, CMD_WRITE | CMD_FAST, 1, 2, 1, "generic", "1.0.0",
     "Rename a key, only if the new key does not exist", NULL, NULL},
    {"copy", cmd_copy, -3, CMD_WRITE | CMD_DENYOOM, 1, 2, 1, "generic", "6.2.0",
     "Copy a key", NULL, NULL},
    {"move", cmd_move, 3, CMD_WRITE | CMD_FAST, KEY1, "generic", "1.0.0",
     "Move a key to another database", NULL, NULL},
    {"exists", cmd_exists, -2, CMD_READONLY | CMD_FAST, KEYS_ALL, "generic", "1.0.0",
     "Determine if a key exists", NULL, NULL},
    {"touch", cmd_touch, -2, CMD_READONLY | CMD_FAST, KEYS_ALL, "generic", "3.2.1",
     "Count the keys that exist (no access time is kept)", NULL, NULL},
    {"type", cmd_type, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "generic", "1.0.0",
     "Determine the type stored at key", NULL, NULL},
    {"expire", cmd_expire, -3, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "generic", "1.0.0",
     "Set a key's time to live in seconds", NULL, NULL},
    {"pexpire", cmd_pexpire, -3, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "generic", "2.6.0",
     "Set a key's time to live in milliseconds", NULL, NULL},
    {"expireat", cmd_expireat, -3, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "generic", "1.2.0",
     "Set the expiration for a key as a UNIX timestamp", NULL, NULL},
    {"pexpireat", cmd_pexpireat, -3, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "generic", "2.6.0",
     "Set the expiration for a key as a UNIX timestamp specified in milliseconds", NULL, NULL},
    {"ttl", cmd_ttl, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "generic", "1.0.0",
     "Get the time to live for a key in seconds", NULL, NULL},
    {"pttl", cmd_pttl, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "generic", "2.6.0",
     "Get the time to live for a key in milliseconds", NULL, NULL},
    {"expiretime", cmd_expiretime, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "generic", "7.0.0",
     "Get the expiration Unix timestamp for a key", NULL, NULL},
    {"pexpiretime", cmd_pexpiretime, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "generic",
     "7.0.0", "Get the expiration Unix timestamp for a key in milliseconds", NULL, NULL},
    {"persist", cmd_persist, 2, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "generic", "2.2.0",
     "Remove the expiration from a key", NULL, NULL},
    {"scan", cmd_scan, -2, CMD_READONLY, NOKEY, "generic", "2.8.0",
     "Incrementally iterate the keys space", NULL, NULL},
    {"keys", cmd_keys, 2, CMD_READONLY, NOKEY, "generic", "1.0.0",
     "Find all keys matching the given pattern", NULL, NULL},
    {"dbsize", cmd_dbsize, 1, CMD_READONLY | CMD_FAST, NOKEY, "server", "1.0.0",
     "Return the number of keys in the selected database", NULL, NULL},
    {"flushdb", cmd_flushdb, -1, CMD_WRITE, NOKEY, "server", "1.0.0",
     "Remove all keys from the current database", NULL, NULL},
    {"flushall", cmd_flushall, -1, CMD_WRITE, NOKEY, "server", "1.0.0",
     "Remove all keys from all databases", NULL, NULL},
    {"swapdb", cmd_swapdb, 3, CMD_WRITE | CMD_FAST, NOKEY, "server", "4.0.0",
     "Swaps two Redis databases", NULL, NULL},
    {"randomkey", cmd_randomkey, 1, CMD_READONLY, NOKEY, "generic", "1.0.0",
     "Return a random key from the keyspace", NULL, NULL},
    {"object", cmd_object, -2, CMD_READONLY, NOKEY, "generic", "2.2.3",
     "A container for object introspection commands", cmd_object_subcommands, NULL},

    /* hashes */
    {"hset", cmd_hset, -4, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Set the string value of a hash field", NULL, NULL},
    {"hsetnx", cmd_hsetnx, 4, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "hash",
     "2.0.0", "Set the value of a hash field, only if the field does not exist", NULL, NULL},
    {"hmset", cmd_hmset, -4, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "hash",
     "2.0.0", "Set multiple hash fields to multiple values", NULL, NULL},
    {"hget", cmd_hget, 3, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Get the value of a hash field", NULL, NULL},
    {"hmget", cmd_hmget, -3, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Get the values of all the given hash fields", NULL, NULL},
    {"hdel", cmd_hdel, -3, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Delete one or more hash fields", NULL, NULL},
    {"hlen", cmd_hlen, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Get the number of fields in a hash", NULL, NULL},
    {"hstrlen", cmd_hstrlen, 3, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "hash", "3.2.0",
     "Get the length of the value of a hash field", NULL, NULL},
    {"hexists", cmd_hexists, 3, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Determine if a hash field exists", NULL, NULL},
    {"hkeys", cmd_hkeys, 2, CMD_READONLY | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Get all the fields in a hash", NULL, NULL},
    {"hvals", cmd_hvals, 2, CMD_READONLY | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Get all the values in a hash", NULL, NULL},
    {"hgetall", cmd_hgetall, 2, CMD_READONLY | CMD_KEYED, KEY1, "hash", "2.0.0",
     "Get all the fields and values in a hash", NULL, NULL},
    {"hincrby", cmd_hincrby, 4, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "hash",
     "2.0.0", "Increment the integer value of a hash field by the given number", NULL, NULL},
    {"hincrbyfloat", cmd_hincrbyfloat, 4, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1,
     "hash", "2.6.0", "Increment the float value of a hash field by the given amount", NULL,
     NULL},
    {"hrandfield", cmd_hrandfield, -2, CMD_READONLY | CMD_KEYED, KEY1, "hash", "6.2.0",
     "Get one or multiple random fields from a hash", NULL, NULL},
    {"hscan", cmd_hscan, -3, CMD_READONLY | CMD_KEYED, KEY1, "hash", "2.8.0",
     "Incrementally iterate hash fields and associated values", NULL, NULL},

    /* sets */
    {"sadd", cmd_sadd, -3, CMD_WRITE | CMD_DENYOOM | CMD_FAST | CMD_KEYED, KEY1, "set", "1.0.0",
     "Add one or more members to a set", NULL, NULL},
    {"srem", cmd_srem, -3, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "set", "1.0.0",
     "Remove one or more members from a set", NULL, NULL},
    {"scard", cmd_scard, 2, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "set", "1.0.0",
     "Get the number of members in a set", NULL, NULL},
    {"sismember", cmd_sismember, 3, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "set", "1.0.0",
     "Determine if a given value is a member of a set", NULL, NULL},
    {"smismember", cmd_smismember, -3, CMD_READONLY | CMD_FAST | CMD_KEYED, KEY1, "set",
     "6.2.0", "Returns the membership associated with the given elements for a set", NULL,
     NULL},
    {"smembers", cmd_smembers, 2, CMD_READONLY | CMD_KEYED, KEY1, "set", "1.0.0",
     "Get all the members in a set", NULL, NULL},
    {"srandmember", cmd_srandmember, -2, CMD_READONLY | CMD_KEYED, KEY1, "set", "1.0.0",
     "Get one or multiple random members from a set", NULL, NULL},
    {"spop", cmd_spop, -2, CMD_WRITE | CMD_FAST | CMD_KEYED, KEY1, "set", "1.0.0",
     "Remove and return one or multiple random members from a set", NULL, NULL},
    {"smove", cmd_smove, 4, CMD_WRITE | CMD_FAST, 1, 2, 1, "set", "1.0.0",
     "Move a member from one set to another", NULL, NULL},
    {"sinter", cmd_sinter, -2, CMD_READONLY, KEYS_ALL, "set", "1.0.0",
     "Intersect multiple sets", NULL, NULL},
    {"sintercard", cmd_sintercard, -3, CMD_READONLY, NOKEY, "set", "7.0.0",
     "Intersect multiple sets and return the cardinality of the result", NULL, NULL},
    {"sinterstore", cmd_sinterstore, -3, CMD_WRITE | CMD_DENYOOM, KEYS_ALL, "set", "1.0.0",
     "Intersect multiple sets and store the resulting set in a key", NULL, NULL},
    {"sunion", cmd_sunion, -2, CMD_READONLY, KEYS_ALL, "set", "1.0.0",
     "Add multiple sets", NULL, NULL},
    {"sunionstore", cmd_sunionstore, -3, CMD_WRITE | CMD_DENYOOM, KEYS_ALL, "set", "1.0.0",
     "Add multiple sets and store the resulting set in a key", NULL, NULL},
    {"sdiff", cmd_sdiff, -2, CMD_READONLY, KEYS_ALL, "set", "1.0.0",
     "Subtract multiple sets", NULL, NULL},
    {"sdiffstore", cmd_sdiffstore, -3, CMD_WRITE | CMD_DENYOOM, KEYS_ALL, "set", "1.0.0",
     "Subtract multiple sets and store the resulting set in a key", NULL, NULL},
    {"sscan", cmd_sscan, -3, CMD_READONLY | CMD_KEYED, KEY1, "set", "2.8.0",
     "Incrementally iterate Set elements", NULL, NULL},

    /* scripting */
    {"eval", cmd_eval, -3, CMD_NOSCRIPT | CMD_STALE, NOKEY, "scripting", "2.6.0",
     "Execute a Lua script server side", NULL, NULL},
    {"evalsha", cmd_evalsha, -3, CMD_NOSCRIPT | CMD_STALE, NOKEY, "scripting", "2.6.0",
     "Execute a Lua script server side", NULL, NULL},
    {"eval_ro", cmd_eval_ro, -3, CMD_NOSCRIPT | CMD_STALE | CMD_READONLY, NOKEY, "scripting",
     "7.0.0", "Execute a read-only Lua script server side", NULL, NULL},
    {"evalsha_ro", cmd_evalsha_ro, -3, CMD_NOSCRIPT | CMD_STALE | CMD_READONLY, NOKEY,
     "scripting", "7.0.0", "Execute a read-only Lua script server side", NULL, NULL},
    {"fcall", cmd_fcall, -3, CMD_NOSCRIPT | CMD_STALE, NOKEY, "scripting", "7.0.0",
     "Invoke a function", NULL, NULL},
    {"fcall_ro", cmd_fcall_ro, -3, CMD_NOSCRIPT | CMD_STALE | CMD_READONLY, NOKEY,
     "scripting", "7.0.0", "Invoke a read-only function", NULL, NULL},
    {"function", cmd_function, -2, 0, NOKEY, "scripting", "7.0.0",
     "A container for function commands", cmd_function_subcommands, NULL},
    {"script", cmd_script, -2, 0, NOKEY, "scripting", "2.6.0",
     "A container for Lua scripts management commands", cmd_script_subcommands, NULL},

    /* server */
    {"info", cmd_info, -1, CMD_STALE | CMD_LOADING, NOKEY, "server", "1.0.0",
     "Get information and statistics about the server", NULL, NULL},
    {"config", cmd_config_cmd, -2, CMD_ADMIN | CMD_STALE | CMD_LOADING, NOKEY, "server", "2.0.0",
     "A container for server configuration commands", cmd_config_subcommands, NULL},
    {"time", cmd_time, 1, CMD_FAST | CMD_STALE | CMD_LOADING, NOKEY, "server", "2.6.0",
     "Return the current server time", NULL, NULL},
    {"save", cmd_save, 1, CMD_NOSCRIPT | CMD_ADMIN, NOKEY, "server", "1.0.0",
     "Checkpoint the index of every shard (the log already holds every write)", NULL, NULL},
    {"bgsave", cmd_bgsave, -1, CMD_NOSCRIPT | CMD_ADMIN, NOKEY, "server", "1.0.0",
     "Checkpoint the index of every shard in the background", NULL, NULL},
    {"lastsave", cmd_lastsave, 1, CMD_FAST | CMD_STALE | CMD_LOADING, NOKEY, "server", "1.0.0",
     "Get the UNIX time stamp of the last successful save", NULL, NULL},
    {"shutdown", cmd_shutdown, -1, CMD_NOSCRIPT | CMD_ADMIN | CMD_STALE | CMD_LOADING, NOKEY, "server", "1.0.0",
     "Stop accepting clients, finish in-flight requests, sync the logs and exit", NULL, NULL},
    {NULL, NULL, 0, 0, NOKEY, NULL, NULL, NULL, NULL, NULL},
};

/* ---- state ------------------------------------------------------------- */

/* Per-proactor state of the command layer: written by its proactor only. */
struct cmd_px {
	_Alignas(64) atomic_ulong inflight; /* requests started here, not finished */
	struct cmd_ctx *free_ctx;           /* contexts kept for reuse */
	unsigned n_free;
	struct freelist blocks[BLOCK_CLASSES]; /* cmd_block_put's, a list per class */
};

/* A requirepass value CONFIG SET replaced: kept (never freed while running)
 * because another proactor may still be comparing against it. */
struct old_password {
	struct old_password *next;
	char pw[];
};

static struct {
	struct pool *pool;
	struct cfg *cfg;    /* proactor 0 only after cmd_init */
	struct cmd_px *pxs; /* [threads] */
	const struct cmd_def *lookup[LOOKUP_SLOTS];
	uint8_t lookup_len[LOOKUP_SLOTS];   /* strlen of lookup[i]->name */
	_Atomic(const char *) requirepass;  /* the live password, "" = none */
	struct old_password *old_passwords; /* proactor 0 only */
	uint64_t start_ms;
	int databases; /* server.databases, fixed at start-up */
} cmd_state;

_Atomic unsigned long cmd_shutdown_client;
uint64_t cmd_max_string;
_Atomic uint64_t cmd_lastsave_s;

struct cfg *cmd_config(void)
{
	return cmd_state.cfg;
}

unsigned cmd_databases(void)
{
	return (unsigned)cmd_state.databases; /* (fixed for the server's life) */
}

const char *cmd_requirepass(void)
{
	return atomic_load_explicit(&cmd_state.requirepass, memory_order_acquire);
}

void cmd_set_requirepass(const char *pw)
{
	size_t len = strlen(pw);
	struct old_password *p = malloc(sizeof(*p) + len + 1);
	if (p == NULL)
		return; /* CONFIG SET checked memory before: cannot happen in practice */
	memcpy(p->pw, pw, len + 1);
	p->next = cmd_state.old_passwords;
	cmd_state.old_passwords = p;
	atomic_store_explicit(&cmd_state.requirepass, p->pw, memory_order_release);
}

uint64_t cmd_start_ms(void)
{
	return cmd_state.start_ms;
}

unsigned long cmd_inflight(unsigned px)
{
	return atomic_load_explicit(&cmd_state.pxs[px].inflight, memory_order_relaxed);
}

/* ASCII lowercase (names are ASCII; no locale lookup on the request path). */
static inline uint8_t name_lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c | 0x20) : c;
}

/* FNV-1a of a name, lowercased as it is hashed. */
static unsigned name_hash(const uint8_t *s, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ name_lower(s[i])) * 16777619u;
	return h % LOOKUP_SLOTS;
}

int cmd_init(struct pool *pool, struct cfg *cfg, char *err, size_t errlen)
{
	unsigned n = pool_size(pool);
	cmd_state.pool = pool;
	cmd_state.cfg = cfg;
	cmd_state.pxs = aligned_alloc(64, sizeof(struct cmd_px) * n);
	if (cmd_state.pxs == NULL) {
		snprintf(err, errlen, "out of memory allocating the command state");
		return -ENOMEM;
	}
	memset(cmd_state.pxs, 0, sizeof(struct cmd_px) * n);
	if (cmd_multi_init(err, errlen) < 0)
		return -ENOMEM;
	if (cmd_script_init(n, err, errlen) < 0)
		return -ENOMEM;
	int ret = cmd_function_init(cfg->storage.dir, err, errlen);
	if (ret < 0)
		return ret;
	cmd_script_set_busy_ms(cfg->server.busy_reply_threshold_ms);
	for (const struct cmd_def *c = cmd_table; c->name != NULL; c++) {
		size_t len = strlen(c->name);
		unsigned h = name_hash((const uint8_t *)c->name, len);
		while (cmd_state.lookup[h] != NULL)
			h = (h + 1) % LOOKUP_SLOTS;
		cmd_state.lookup[h] = c;
		cmd_state.lookup_len[h] = (uint8_t)len;
	}
	cmd_set_requirepass(cfg->server.requirepass);
	cmd_max_string =
	    cfg->server.max_bulk_len < FMT_VALUE_MAX ? cfg->server.max_bulk_len : FMT_VALUE_MAX;
	cmd_state.start_ms = clock_unix_ms();
	cmd_state.databases = cfg->server.databases;
	atomic_store(&cmd_lastsave_s, cmd_state.start_ms / 1000);
	return 0;
}

/* The table entry for a command name in any case, or NULL. */
const struct cmd_def *cmd_lookup(const uint8_t *name, size_t len)
{
	if (len == 0 || len >= NAME_MAX_LEN)
		return NULL;
	for (unsigned h = name_hash(name, len);; h = (h + 1) % LOOKUP_SLOTS) {
		const struct cmd_def *c = cmd_state.lookup[h];
		if (c == NULL)
			return NULL;
		if (cmd_state.lookup_len[h] != len)
			continue;
		size_t i = 0;
		while (i < len && (uint8_t)c->name[i] == name_lower(name[i]))
			i++;
		if (i == len)
			return c;
	}
}

static bool arity_ok(const struct cmd_def *c, size_t argc)
{
	return c->arity >= 0 ? argc == (size_t)c->arity : argc >= (size_t)-c->arity;
}

/* Redis's "ERR unknown command 'x', with args beginning with: 'a' 'b' " or,
 * for a container (`subcommand`), "ERR unknown subcommand 'x'. Try CONFIG
 * HELP.": each argument cut to what fits in 128 bytes, as Redis does.
 * Finishes the request. */
static void fail_unknown(struct cmd_ctx *x, bool subcommand)
{
	const struct conn_req *req = x->req;
	char args[160] = "", upper[NAME_MAX_LEN];
	size_t used = 0;
	for (size_t i = subcommand ? 2 : 1; i < req->argc && used < 128; i++) {
		int room = 128 - (int)used;
		int w = snprintf(
		    args + used, sizeof(args) - used, "'%.*s' ",
		    (int)(req->argv_len[i] < (size_t)room ? req->argv_len[i] : (size_t)room),
		    (const char *)req->argv[i]);
		if (w < 0)
			break;
		used += (size_t)w < sizeof(args) - used ? (size_t)w : sizeof(args) - used - 1;
	}
	if (!subcommand) {
		cmd_failf(x, "ERR unknown command '%.128s', with args beginning with: %s",
		          (const char *)req->argv[0], args);
		return;
	}
	size_t i = 0;
	for (; x->cmd->name[i] != '\0' && i + 1 < sizeof(upper); i++)
		upper[i] = (char)toupper(x->cmd->name[i]);
	upper[i] = '\0';
	cmd_failf(x, "ERR unknown subcommand '%.128s'. Try %s HELP.", (const char *)req->argv[1],
	          upper);
}

/* ---- contexts ---------------------------------------------------------- */

static struct cmd_ctx *ctx_alloc(struct cmd_px *cp)
{
	struct cmd_ctx *x = cp->free_ctx;
	if (x != NULL) {
		cp->free_ctx = x->next_free;
		cp->n_free--;
		__builtin_prefetch(cp->free_ctx, 1); /* the next one's link: a pipeline takes many */
		return x;
	}
	return malloc(sizeof(*x));
}

static void ctx_free(struct cmd_px *cp, struct cmd_ctx *x)
{
	free(x->heap);
	if (cp->n_free >= FREE_CTX_MAX) {
		free(x);
		return;
	}
	x->next_free = cp->free_ctx;
	cp->free_ctx = x;
	cp->n_free++;
}

/* The class of blocks of `size` bytes (the smallest that holds them), or -1
 * past the largest. */
static int block_class(size_t size)
{
	for (int k = 0; k < BLOCK_CLASSES; k++)
		if (size <= (size_t)1 << (BLOCK_MIN_SHIFT + k))
			return k;
	return -1;
}

/* The running proactor's state, or NULL off a proactor (or before cmd_init). */
static struct cmd_px *cmd_px_self(void)
{
	struct px *self = px_current();
	return self != NULL && cmd_state.pxs != NULL ? &cmd_state.pxs[self->id] : NULL;
}

void *cmd_block_get(size_t size, size_t *cap)
{
	int k = block_class(size);
	if (k < 0) {
		*cap = size;
		return malloc(size);
	}
	*cap = (size_t)1 << (BLOCK_MIN_SHIFT + k);
	struct cmd_px *cp = cmd_px_self();
	void *p = cp != NULL ? freelist_pop(&cp->blocks[k], *cap) : NULL;
	return p != NULL ? p : malloc(*cap);
}

void cmd_block_put(void *p, size_t cap)
{
	if (p == NULL)
		return;
	int k = block_class(cap);
	struct cmd_px *cp = cmd_px_self();
	if (cp == NULL || k < 0 || cap != (size_t)1 << (BLOCK_MIN_SHIFT + k) ||
	    cp->blocks[k].n >= BLOCK_CLASS_BYTES >> (BLOCK_MIN_SHIFT + k)) {
		free(p);
		return;
	}
	freelist_push(&cp->blocks[k], p, cap);
}

void cmd_ctx_end(struct cmd_ctx *x)
{
	struct cmd_px *cp = &cmd_state.pxs[x->origin];
	px_stat_add(&cp->inflight, (unsigned long)-1);
	ctx_free(cp, x);
}

/* On the origin: hands the reply to net (or to the EXEC that ran the
 * command) and recycles the context. */
static void finish_request(struct cmd_ctx *x)
{
	if (x->exec != NULL) {
		cmd_exec_sub_done(x);
		return;
	}
	conn_req_done(x->req);
	cmd_ctx_end(x);
}

static void finish_request_msg(void *arg)
{
	finish_request(arg);
}

void cmd_done(struct cmd_ctx *x)
{
	struct px *self = px_current();
	if (self->id == x->origin)
		finish_request(x);
	else
		px_send(self, x->origin, finish_request_msg, x);
}

void cmd_reply_help(struct cmd_ctx *x, const char *const *lines)
{
	size_t n = 0;
	while (lines[n] != NULL)
		n++;
	resp_add_array(x->reply, n);
	for (size_t i = 0; i < n; i++)
		resp_add_simple(x->reply, lines[i]);
	cmd_done(x);
}

void cmd_fail(struct cmd_ctx *x, const char *msg)
{
	/* An error is the whole reply: a store update (SET ... GET) may have
	 * written an answer before the write failed, a walk part of one. */
	resp_buf_reset(x->reply);
	resp_add_error(x->reply, msg);
	cmd_done(x);
}

void cmd_failf(struct cmd_ctx *x, const char *fmt, ...)
{
	char *msg;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	cmd_fail(x, msg);
	free(msg);
}

void cmd_fail_arity(struct cmd_ctx *x)
{
	char name[2 * NAME_MAX_LEN];
	cmd_full_name(x->sub != NULL ? x->sub : x->cmd, name, sizeof(name));
	cmd_failf(x, "ERR wrong number of arguments for '%s' command", name);
}

void cmd_fail_invalid_expire(struct cmd_ctx *x)
{
	cmd_failf(x, "ERR invalid expire time in '%s' command", x->cmd->name);
}

void cmd_fail_store(struct cmd_ctx *x, int status)
{
	switch (status) {
	case -ENOSPC:
		cmd_fail(x, "ERR write failed: the data directory's file system is full;"
		            " free disk space (nothing was changed)");
		break;
	case -EIO:
		cmd_fail(x, "ERR I/O error in the storage engine (see the server log for"
		            " the shard and file); nothing was changed");
		break;
	case -E2BIG:
		cmd_failf(x,
		          "ERR key or value too large: keys may have up to %u bytes, values up to"
		          " %u bytes, and what one command writes must fit one log segment"
		          " (storage.segment_size)",
		          FMT_KEY_MAX, FMT_VALUE_MAX);
		break;
	case STORE_WRONGTYPE:
		cmd_fail(x, cmd_err_wrongtype);
		break;
	case -ENOMEM:
		cmd_fail(x, cmd_err_oom);
		break;
	case -ESHUTDOWN:
		cmd_fail(x, "ERR the server is shutting down; retry once it has restarted");
		break;
	default:
		cmd_failf(x, "ERR storage error: %s (see the server log)", strerror(-status));
		break;
	}
}

/* -ENOENT (no such key) and -EEXIST (NX/XX refused) are answers; a key of
 * another type (STORE_WRONGTYPE) fails a one-key command, and is an answer
 * for a fan-out (MGET's nil: cmd_fan_ok_or_fail). */
static bool store_failed(int status)
{
	return status < 0 && status != -ENOENT && status != -EEXIST;
}

int cmd_store_ok_or_fail(struct cmd_ctx *x)
{
	if (x->err != NULL) {
		cmd_fail(x, x->err);
		return -1;
	}
	if (store_failed(x->sr.status)) {
		cmd_fail_store(x, x->sr.status);
		return -1;
	}
	return 0;
}

enum store_update_result cmd_update_refuse(struct cmd_ctx *x, const char *msg)
{
	x->err = msg;
	return STORE_UPDATE_KEEP;
}

int cmd_string_length_or_fail(struct cmd_ctx *x, uint64_t len)
{
	if (cmd_string_fits(len))
		return 0;
	cmd_fail(x, cmd_err_too_big);
	return -1;
}

void cmd_full_name(const struct cmd_def *d, char *buf, size_t len)
{
	if (d->parent != NULL)
		snprintf(buf, len, "%s|%s", d->parent, d->name);
	else
		snprintf(buf, len, "%s", d->name);
}

bool cmd_arg_is(const struct cmd_ctx *x, size_t i, const char *w)
{
	size_t len = strlen(w);
	return cmd_arg_len(x, i) == len && strncasecmp((const char *)cmd_arg(x, i), w, len) == 0;
}

int cmd_arg_int_or_fail(struct cmd_ctx *x, size_t i, int64_t *out)
{
	if (resp_parse_int64(cmd_arg(x, i), cmd_arg_len(x, i), out))
		return 0;
	cmd_fail(x, cmd_err_not_int);
	return -1;
}

void cmd_submit_arg(struct cmd_ctx *x, size_t i, void (*done)(struct store_req *sr))
{
	x->sr.db = x->db;
	x->sr.key = cmd_arg(x, i);
	x->sr.key_len = cmd_arg_len(x, i);
	x->sr.done = done;
	cmd_store_submit(x, x->st, &x->sr);
}

void cmd_submit(struct cmd_ctx *x, void (*done)(struct store_req *sr))
{
	cmd_submit_arg(x, 1, done);
}

void cmd_submit_prepared(struct cmd_ctx *x)
{
	cmd_store_submit(x, x->st, &x->sr);
}

int cmd_scan_cursor_or_fail(struct cmd_ctx *x, size_t i, uint64_t *out)
{
	/* Redis's parseScanCursorOrReply: strtoul, so "-1" wraps. */
	char buf[32];
	size_t len = cmd_arg_len(x, i);
	if (len == 0 || len >= sizeof(buf))
		goto invalid;
	memcpy(buf, cmd_arg(x, i), len);
	buf[len] = '\0';
	char *end;
	errno = 0;
	unsigned long long c = strtoull(buf, &end, 10);
	if (isspace((unsigned char)buf[0]) || *end != '\0' || errno == ERANGE)
		goto invalid;
	*out = c;
	return 0;
invalid:
	cmd_fail(x, "ERR invalid cursor");
	return -1;
}

const char *cmd_scan_options(struct cmd_ctx *x, size_t first, bool allow_type,
                             const uint8_t **pattern, size_t *pattern_len, size_t *count,
                             const uint8_t **type_name)
{
	int64_t n = 10;
	*pattern = NULL;
	*pattern_len = 0;
	if (type_name != NULL)
		*type_name = NULL;
	for (size_t i = first; i < cmd_argc(x); i += 2) {
		bool has_value = i + 1 < cmd_argc(x);
		if (cmd_arg_is(x, i, "count") && has_value) {
			if (!resp_parse_int64(cmd_arg(x, i + 1), cmd_arg_len(x, i + 1), &n))
				return cmd_err_not_int;
			if (n < 1)
				return cmd_err_syntax;
		} else if (cmd_arg_is(x, i, "match") && has_value) {
			bool all = cmd_arg_len(x, i + 1) == 1 && cmd_arg(x, i + 1)[0] == '*';
			*pattern = all ? NULL : cmd_arg(x, i + 1);
			*pattern_len = cmd_arg_len(x, i + 1);
		} else if (allow_type && cmd_arg_is(x, i, "type") && has_value) {
			*type_name = cmd_arg(x, i + 1);
		} else {
			return cmd_err_syntax;
		}
	}
	*count = (size_t)n;
	return NULL;
}

bool cmd_canonical_int(const uint8_t *p, size_t len, int64_t *out)
{
	/* Redis's string2ll: no sign but '-', no leading zero (but "0"), no
	 * "-0", digits only, within int64. */
	if (len == 0 || len > 20)
		return false;
	size_t i = 0;
	bool neg = p[0] == '-';
	if (neg && ++i == len)
		return false;
	if (p[i] == '0' && (len > i + 1 || neg))
		return false;
	uint64_t v = 0;
	for (; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		uint64_t d = (uint64_t)(p[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
		return false;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return true;
}

/* ---- dispatch ---------------------------------------------------------- */

static void run_on_shard_msg(void *arg)
{
	struct cmd_ctx *x = arg;
	x->st = shard_store(x->shard);
	x->run(x);
}

static void run_on_px_msg(void *arg)
{
	struct cmd_ctx *x = arg;
	x->run(x);
}

void cmd_run_on_px(struct cmd_ctx *x, unsigned px, cmd_fn fn)
{
	struct px *self = px_current();
	if (px == self->id) {
		fn(x);
		return;
	}
	x->run = fn;
	px_send(self, px, run_on_px_msg, x);
}

void cmd_continue(struct cmd_ctx *x, cmd_fn fn)
{
	struct px *self = px_current();
	x->run = fn;
	px_send(self, self->id, run_on_shard_msg, x);
}

void cmd_run_on_shard(struct cmd_ctx *x, unsigned shard, cmd_fn fn)
{
	struct px *self = px_current();
	unsigned owner = shard_proactor(shard);
	x->shard = shard;
	if (owner == self->id) {
		x->st = shard_store(shard);
		fn(x);
		return;
	}
	x->run = fn;
	px_send(self, owner, run_on_shard_msg, x);
}

/* A container command's subcommand exists and has its arity; else false
 * after replying the error. */
static bool subcommand_ok(struct cmd_ctx *x)
{
	for (const struct cmd_def *s = x->cmd->subcommands; s->name != NULL && x->sub == NULL; s++)
		if (cmd_argc(x) > 1 && cmd_arg_is(x, 1, s->name))
			x->sub = s;
	if (x->sub == NULL) {
		fail_unknown(x, true);
		return false;
	}
	if (!arity_ok(x->sub, cmd_argc(x))) {
		cmd_fail_arity(x);
		return false;
	}
	x->sub = NULL;
	return true;
}

struct cmd_ctx *cmd_ctx_start(struct conn *c, struct conn_req *req)
{
	struct px *self = px_current();
	struct cmd_px *cp = &cmd_state.pxs[self->id];
	struct cmd_ctx *x = ctx_alloc(cp);
	if (x == NULL)
		return NULL;
	x->req = req;
	x->conn = c;
	x->reply = &req->reply;
	x->cmd = NULL;
	x->sub = NULL;
	x->origin = self->id;
	x->db = c->db;
	x->heap = NULL;
	x->err = NULL;
	x->exec = NULL;
	x->holder = NULL;
	x->durable = NULL;
	x->txn = NULL;
	memset(&x->sr, 0, offsetof(struct store_req, status));
	px_stat_add(&cp->inflight, 1);
	return x;
}

void cmd_handle(struct conn *c, struct conn_req *req)
{
	struct cmd_ctx *x = cmd_ctx_start(c, req);
	if (x == NULL) { /* no context to finish through: the one reply written here */
		resp_add_error(&req->reply, cmd_err_oom);
		conn_req_done(req);
		return;
	}
	x->cmd = cmd_lookup(req->argv[0], req->argv_len[0]);
	if (x->cmd == NULL) {
		cmd_multi_refused(c); /* (inside MULTI: EXEC will abort) */
		fail_unknown(x, false);
		return;
	}
	c->last_cmd = x->cmd->name;
	/* Redis's processCommand order: an unknown command, then the arity, then
	 * authentication (a wrong arity is reported even before AUTH). */
	if (!arity_ok(x->cmd, req->argc)) {
		if (x->cmd->fn == cmd_exec) {
			cmd_multi_reset(c); /* (Redis's execCommandAbort) */
			cmd_fail(x, "EXECABORT Transaction discarded because of: wrong number of "
			            "arguments for 'exec' command");
			return;
		}
		cmd_multi_refused(c);
		cmd_fail_arity(x);
		return;
	}
	if (!c->authenticated) {
		if (cmd_requirepass()[0] == '\0')
			c->authenticated = true; /* requirepass was cleared by CONFIG SET */
		else if (!(x->cmd->flags & CMD_NOAUTH)) {
			cmd_multi_refused(c);
			if (x->cmd->fn == cmd_exec) {
				cmd_multi_reset(c);
				cmd_failf(x, "EXECABORT Transaction discarded because of: %s",
				          cmd_err_noauth);
				return;
			}
			cmd_fail(x, cmd_err_noauth);
			return;
		}
	}
	if (cmd_in_multi(c)) {
		if (x->cmd->subcommands != NULL && !subcommand_ok(x)) {
			cmd_multi_refused(c); /* (Redis checks a subcommand when it queues it) */
			return;
		}
		if (cmd_multi_queue(x))
			return; /* +QUEUED */
	}
	if (c->overlap > 0 && cmd_script_defer(x))
		return; /* (runs when the connection's scripts end) */
	cmd_dispatch(x);
}

void cmd_dispatch(struct cmd_ctx *x)
{
	if (!(x->cmd->flags & CMD_KEYED) &&
	    ((x->cmd->first_key > 0 && x->cmd->fn != cmd_watch) || x->cmd->fn == cmd_sintercard) &&
	    cmd_isolate(x))
		return; /* keys on several shards: run under holds (cmd_multi.c) */
	if (x->cmd->flags & CMD_KEYED)
		cmd_run_on_shard(x, shard_of_key(x->req->argv[1], x->req->argv_len[1]), x->cmd->fn);
	else
		x->cmd->fn(x);
}

/* True for a command whose argv[2] names an element of argv[1]'s
 * collection (its first, when it names several). */
static bool names_elem2(cmd_fn fn)
{
	static const cmd_fn fns[] = {cmd_hset,      cmd_hsetnx,       cmd_hmset,   cmd_hget,
	                             cmd_hmget,     cmd_hdel,         cmd_hstrlen, cmd_hexists,
	                             cmd_hincrby,   cmd_hincrbyfloat, cmd_sadd,    cmd_srem,
	                             cmd_sismember, cmd_smismember};
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
		if (fn == fns[i])
			return true;
	return false;
}

void cmd_prefetch(struct conn *c, const struct net_hint *hints, size_t n)
{
	unsigned self = px_current()->id;
	const uint8_t *local[NET_PREFETCH], *ekeys[NET_PREFETCH], *elems[NET_PREFETCH];
	size_t local_len[NET_PREFETCH], ekey_len[NET_PREFETCH], elem_len[NET_PREFETCH];
	size_t m = 0, e = 0;
	uint32_t writes = 0;
	unsigned shard = 0;
	for (size_t i = 0; i < n && i < NET_PREFETCH; i++) {
		const struct net_hint *h = &hints[i];
		unsigned s = shard_of_key(h->key, h->key_len);
		if (shard_proactor(s) != self || (m > 0 && s != shard))
			continue; /* another proactor's, or (rare) a second local shard's */
		shard = s;
		local[m] = h->key;
		local_len[m++] = h->key_len;
		if (h->arg2 == NULL)
			continue;
		const struct cmd_def *d = cmd_lookup(h->name, h->name_len);
		if (d != NULL && names_elem2(d->fn)) {
			writes |= (uint32_t)((d->flags & CMD_WRITE) != 0) << e;
			ekeys[e] = h->key;
			ekey_len[e] = h->key_len;
			elems[e] = h->arg2;
			elem_len[e++] = h->arg2_len;
		}
	}
	if (m == 0)
		return;
	struct store *st = shard_store(shard);
	store_prefetch(st, c->db, local, local_len, m);
	if (e > 0)
		store_prefetch_elems(st, c->db, ekeys, ekey_len, elems, elem_len, writes, e);
}

void cmd_on_open(struct conn *c)
{
	c->authenticated = cmd_requirepass()[0] == '\0';
}

void cmd_run_subcommand(struct cmd_ctx *x, const struct cmd_def *table)
{
	for (const struct cmd_def *s = table; s->name != NULL && x->sub == NULL; s++)
		if (cmd_arg_is(x, 1, s->name))
			x->sub = s;
	if (x->sub == NULL) {
		fail_unknown(x, true);
		return;
	}
	if (!arity_ok(x->sub, cmd_argc(x))) {
		cmd_fail_arity(x);
		return;
	}
	x->sub->fn(x);
}

/* ---- fan-out ----------------------------------------------------------- */

/* On the origin, a fan-out's transaction committed (or failed to): the
 * command finishes. */
static void fan_committed(struct cmd_txn *t, int status)
{
	struct cmd_fan *f = (struct cmd_fan *)((char *)t - offsetof(struct cmd_fan, txn));
	f->x->txn = NULL;
	f->x->durable = NULL;
	if (status < 0 && f->parts[0].status == 0)
		f->parts[0].status = status; /* (cmd_fan_ok_or_fail reports it) */
	f->finish(f);
}

static void fan_durable_msg(void *arg)
{
	struct cmd_fan *f = arg;
	cmd_txn_durable(&f->txn, atomic_load(&f->durable.status));
}

static void fan_settled(struct store_durable *d)
{
	struct cmd_fan *f = (struct cmd_fan *)((char *)d - offsetof(struct cmd_fan, durable));
	struct px *self = px_current();
	if (self->id == f->x->origin)
		fan_durable_msg(f);
	else
		px_send(self, f->x->origin, fan_durable_msg, f);
}

/* A write to several keys outside any transaction is one of its own: a
 * crash keeps it whole or not at all (cmd.h, "transactions"). */
static void fan_txn_begin(struct cmd_fan *f)
{
	struct cmd_ctx *x = f->x;
	bool writes = false;
	for (size_t i = 0; i < f->nops && !writes; i++)
		writes = f->ops[i].sr.op == STORE_PUT || f->ops[i].sr.op == STORE_DELETE;
	if (!writes || f->nops < 2 || x->txn != NULL)
		return;
	f->has_txn = true;
	cmd_txn_begin(&f->txn, fan_committed);
	atomic_init(&f->durable.pending, 1); /* (the fan's own: part_back drops it) */
	atomic_init(&f->durable.status, 0);
	f->durable.settled = fan_settled;
	x->txn = &f->txn;
	x->durable = &f->durable;
}

static void part_back(struct cmd_part *p)
{
	struct cmd_fan *f = p->fan;
	if (--f->pending > 0)
		return;
	if (!f->has_txn) {
		f->finish(f);
		return;
	}
	cmd_txn_appended(&f->txn);
	if (atomic_fetch_sub(&f->durable.pending, 1) == 1)
		fan_durable_msg(f); /* (else fan_settled will) */
}

static void part_back_msg(void *arg)
{
	part_back(arg);
}

void cmd_part_done(struct cmd_part *p)
{
	struct px *self = px_current();
	if (self->id == p->fan->x->origin)
		part_back(p);
	else
		px_send(self, p->fan->x->origin, part_back_msg, p);
}

static void keyop_done(struct store_req *sr)
{
	struct cmd_keyop *op = sr->arg;
	struct cmd_part *p = op->part;
	op->status = sr->status;
	op->existed = sr->existed;
	if (p->fan->copy_values && sr->result != NULL) {
		op->value = malloc(sr->result_len ? sr->result_len : 1);
		if (op->value == NULL)
			op->status = -ENOMEM;
		else
			memcpy(op->value, sr->result, sr->result_len);
		op->value_len = sr->result_len;
	}
	if (--p->pending == 0)
		cmd_part_done(p);
}

/* Starts the loads of the key table entries of a part's keys (runs of one
 * shard), so that their cache misses overlap instead of coming one per
 * submission: the pipeline hint (cmd_prefetch) sees only a command's first
 * key. */
static void prefetch_part(const struct cmd_part *p)
{
	const uint8_t *keys[STORE_PREFETCH_MAX];
	size_t lens[STORE_PREFETCH_MAX], m = 0;
	unsigned shard = 0, db = p->ops[0]->sr.db;
	for (size_t i = 0; i <= p->n; i++) {
		const struct cmd_keyop *op = i < p->n ? p->ops[i] : NULL;
		if (m > 0 && (op == NULL || op->shard != shard || m == STORE_PREFETCH_MAX)) {
			store_prefetch(shard_store(shard), db, keys, lens, m);
			m = 0;
		}
		if (op == NULL)
			break;
		shard = op->shard;
		keys[m] = op->sr.key;
		lens[m++] = op->sr.key_len;
	}
}

static void run_keys_part(struct cmd_part *p)
{
	if (p->n > 1)
		prefetch_part(p);
	p->pending = p->n;
	for (size_t i = 0; i < p->n; i++)
		cmd_store_submit(p->fan->x, shard_store(p->ops[i]->shard), &p->ops[i]->sr);
}

static void run_keys_part_msg(void *arg)
{
	run_keys_part(arg);
}

static void run_all_part_msg(void *arg)
{
	struct cmd_part *p = arg;
	p->fan->part_fn(p);
}

/* A fan-out's state in one block (cmd_block_get): the fan, its parts, then
 * room for nkeys key operations (f->ops, not initialised) and the parts'
 * pointers to them (f->parts[0].ops: ptrs).  NULL when out of memory. */
static struct cmd_fan *fan_new(struct cmd_ctx *x, void (*finish)(struct cmd_fan *f), size_t nkeys,
                               struct cmd_keyop ***ptrs)
{
	unsigned n = shard_map.threads;
	size_t head = sizeof(struct cmd_fan) + n * sizeof(struct cmd_part);
	head = (head + _Alignof(struct cmd_keyop) - 1) & ~(_Alignof(struct cmd_keyop) - 1);
	size_t cap;
	struct cmd_fan *f = cmd_block_get(
	    head + nkeys * (sizeof(struct cmd_keyop) + sizeof(struct cmd_keyop *)), &cap);
	if (f == NULL)
		return NULL;
	memset(f, 0, sizeof(*f) + n * sizeof(f->parts[0]));
	f->alloc_cap = cap;
	f->x = x;
	f->nparts = n;
	f->finish = finish;
	char *ops = (char *)f + head;
	f->ops = nkeys > 0 ? (struct cmd_keyop *)ops : NULL;
	if (ptrs != NULL)
		*ptrs = (struct cmd_keyop **)(ops + nkeys * sizeof(struct cmd_keyop));
	for (unsigned i = 0; i < n; i++) {
		f->parts[i].fan = f;
		f->parts[i].px = i;
		resp_buf_init(&f->parts[i].text, x->reply->proto);
	}
	return f;
}

int cmd_fan_ok_or_fail(struct cmd_fan *f)
{
	int failure = 0;
	for (size_t i = 0; i < f->nops && failure == 0; i++)
		if (store_failed(f->ops[i].status) && f->ops[i].status != STORE_WRONGTYPE)
			failure = f->ops[i].status;
	for (size_t i = f->nparts; i-- > 0 && failure == 0;)
		failure = f->parts[i].status < 0 ? f->parts[i].status : 0;
	if (failure == 0)
		return 0;
	struct cmd_ctx *x = f->x;
	cmd_fan_free(f);
	cmd_fail_store(x, failure);
	return -1;
}

void cmd_fan_free(struct cmd_fan *f)
{
	if (f->has_txn)
		cmd_txn_free(&f->txn);
	for (size_t i = 0; i < f->nparts; i++) {
		resp_buf_free(&f->parts[i].text);
		free(f->parts[i].scratch);
	}
	for (size_t i = 0; i < f->nops; i++)
		free(f->ops[i].value);
	cmd_block_put(f, f->alloc_cap);
}

void cmd_fan_keys(struct cmd_ctx *x, size_t first, size_t step, bool copy_values,
                  void (*prepare)(struct cmd_ctx *x, struct cmd_keyop *op),
                  void (*finish)(struct cmd_fan *f))
{
	size_t argc = cmd_argc(x), nkeys = (argc - first + step - 1) / step;
	struct cmd_keyop **ptrs;
	struct cmd_fan *f = fan_new(x, finish, nkeys, &ptrs);
	if (f == NULL) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	f->nops = nkeys;
	f->copy_values = copy_values;
	for (size_t i = 0; i < nkeys; i++) {
		struct cmd_keyop *op = &f->ops[i];
		/* The request's inputs (as cmd_ctx_start's), and the op's own. */
		memset(&op->sr, 0, offsetof(struct store_req, status));
		op->status = 0;
		op->existed = false;
		op->value = NULL;
		op->value_len = 0;
		op->arg = first + i * step;
		op->sr.db = x->db;
		op->sr.key = cmd_arg(x, op->arg);
		op->sr.key_len = cmd_arg_len(x, op->arg);
		op->sr.arg = op;
		op->sr.done = keyop_done;
		op->shard = shard_of_key(op->sr.key, op->sr.key_len);
		op->part = &f->parts[shard_proactor(op->shard)];
		op->part->n++;
		prepare(x, op);
	}
	/* ptrs is cut into one run per part, each in argv order. */
	size_t off = 0;
	for (size_t i = 0; i < f->nparts; i++) {
		f->parts[i].ops = ptrs + off;
		off += f->parts[i].n;
		if (f->parts[i].n > 0)
			f->pending++;
		f->parts[i].n = 0;
	}
	for (size_t i = 0; i < nkeys; i++) {
		struct cmd_part *p = f->ops[i].part;
		p->ops[p->n++] = &f->ops[i];
	}
	fan_txn_begin(f);
	unsigned self = px_current()->id;
	struct cmd_part *local = NULL;
	for (size_t i = 0; i < f->nparts; i++) {
		struct cmd_part *p = &f->parts[i];
		if (p->n == 0)
			continue;
		if (p->px == self)
			local = p;
		else
			px_send(px_current(), p->px, run_keys_part_msg, p);
	}
	if (local != NULL)
		run_keys_part(local);
}

void cmd_fan_all(struct cmd_ctx *x, void (*part_fn)(struct cmd_part *p),
                 void (*finish)(struct cmd_fan *f))
{
	struct cmd_fan *f = fan_new(x, finish, 0, NULL);
	if (f == NULL) {
		cmd_fail(x, cmd_err_oom);
		return;
	}
	f->part_fn = part_fn;
	f->pending = f->nparts;
	struct px *self = px_current();
	for (size_t i = 0; i < f->nparts; i++)
		if (i != self->id)
			px_send(self, (unsigned)i, run_all_part_msg, &f->parts[i]);
	part_fn(&f->parts[self->id]); /* last: it may finish the whole fan-out */
}

/* ---- pure helpers ------------------------------------------------------ */

#define LD_MAX_CHARS (5 * 1024) /* Redis's MAX_LONG_DOUBLE_CHARS */

bool cmd_parse_ld(const uint8_t *s, size_t len, long double *out)
{
	char buf[LD_MAX_CHARS];
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	char *end;
	errno = 0;
	long double v = strtold(buf, &end);
	/* All len bytes must be consumed: *end == '\0' alone would stop at a NUL
	 * inside s and accept "1\0abc" as 1. */
	if (isspace((unsigned char)buf[0]) || (size_t)(end - buf) != len || errno == EINVAL ||
	    isnan(v))
		return false;
	if (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || fpclassify(v) == FP_ZERO))
		return false;
	*out = v;
	return true;
}

size_t cmd_format_ld(char *buf, size_t size, long double v)
{
	if (isinf(v) || isnan(v))
		return 0;
	int w = snprintf(buf, size, "%.17Lf", v);
	if (w < 0 || (size_t)w + 1 > size)
		return 0;
	size_t l = (size_t)w;
	if (memchr(buf, '.', l) != NULL) {
		while (buf[l - 1] == '0')
			l--;
		if (buf[l - 1] == '.')
			l--;
	}
	if (l == 2 && buf[0] == '-' && buf[1] == '0') {
		buf[0] = '0';
		l = 1;
	}
	buf[l] = '\0';
	return l;
}

static int glob_lower(int c, bool nocase)
{
	return nocase ? tolower(c) : c;
}

/* Redis's stringmatchlen_impl: *skip stops the retries of a '*' once a
 * shorter match has failed for good (no exponential blow-up). */
static bool glob_impl(const uint8_t *p, size_t plen, const uint8_t *s, size_t slen, bool nocase,
                      bool *skip, int nesting)
{
	if (nesting > 1000)
		return false; /* a pathological pattern: give up, as Redis does */
	while (plen > 0 && slen > 0) {
		switch (p[0]) {
		case '*':
			while (plen > 1 && p[1] == '*') {
				p++;
				plen--;
			}
			if (plen == 1)
				return true;
			while (slen > 0) {
				if (glob_impl(p + 1, plen - 1, s, slen, nocase, skip, nesting + 1))
					return true;
				if (*skip)
					return false;
				s++;
				slen--;
			}
			*skip = true;
			return false;
		case '?':
			s++;
			slen--;
			break;
		case '[': {
			p++;
			plen--;
			bool negate = plen > 0 && p[0] == '^', match = false;
			if (negate) {
				p++;
				plen--;
			}
			for (;;) {
				if (plen == 0) {
					p--; /* the class is not closed: it ends the pattern */
					plen++;
					break;
				}
				if (p[0] == '\\' && plen >= 2) {
					p++;
					plen--;
					if (p[0] == s[0])
						match = true;
				} else if (p[0] == ']') {
					break;
				} else if (plen >= 3 && p[1] == '-') {
					int lo = glob_lower(p[0], nocase),
					    hi = glob_lower(p[2], nocase);
					int c = glob_lower(s[0], nocase);
					if (lo > hi) {
						int t = lo;
						lo = hi;
						hi = t;
					}
					p += 2;
					plen -= 2;
					if (c >= lo && c <= hi)
						match = true;
				} else if (glob_lower(p[0], nocase) == glob_lower(s[0], nocase)) {
					match = true;
				}
				p++;
				plen--;
			}
			if (negate)
				match = !match;
			if (!match)
				return false;
			s++;
			slen--;
			break;
		}
		case '\\':
			if (plen >= 2) {
				p++;
				plen--;
			}
			/* fall through */
		default:
			if (glob_lower(p[0], nocase) != glob_lower(s[0], nocase))
				return false;
			s++;
			slen--;
			break;
		}
		p++;
		plen--;
		if (slen == 0) {
			while (plen > 0 && p[0] == '*') {
				p++;
				plen--;
			}
			break;
		}
	}
	return plen == 0 && slen == 0;
}

bool cmd_glob_match(const uint8_t *pat, size_t plen, const uint8_t *s, size_t slen, bool nocase)
{
	bool skip = false;
	return glob_impl(pat, plen, s, slen, nocase, &skip, 0);
}
