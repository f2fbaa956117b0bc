/* online: ringkv-import's writer to a running server (ringkv, or any Redis
 * protocol server) — pipelined commands over several TCP connections, each
 * with a bounded window of commands awaiting their replies, on one thread
 * with poll(2).  A small RESP encoder of its own and net/resp.h's reply
 * parser (resp_reply_len): no client library.
 *
 * Ordering: every command on a key goes over the same connection (chosen by
 * a hash of the key), so a key written twice ends with the later value, as
 * with sequential SETs.  Commands without a key, or that change connection
 * state (SELECT, FLUSHALL, AUTH, ...), wait until every earlier reply is in,
 * run alone (SELECT, AUTH, HELLO and CLIENT on every connection), and later
 * commands wait for their replies; MULTI ... EXEC runs on one connection
 * between two such waits.
 *
 * Accounting: each command gets exactly one reply per connection it was sent
 * on; a reply that is an error (or, for EXEC, an array holding errors)
 * counts in `errors` and goes to the on_error callback with the command's
 * line; any other reply counts in `ok`.  A row sent as several commands
 * (online_coll) counts once: in `errors` if any of its replies is one (the
 * first goes to on_error), else in `ok`.
 */
#ifndef RINGKV_IMPORT_ONLINE_H
#define RINGKV_IMPORT_ONLINE_H

#include <stddef.h>
#include <stdint.h>

struct online_config {
	const char *host;     /* name or address */
	const char *port;     /* service or number */
	const char *password; /* AUTH on every connection when not NULL */
	unsigned connections; /* >= 1 */
	unsigned window;      /* commands awaiting replies per connection, >= 1 */
	/* Called for each error reply: the line of the command, the error text
	 * (without the leading '-'). */
	void (*on_error)(void *arg, uint64_t line, const char *msg, size_t len);
	void *arg;
};

struct online_stats {
	uint64_t sent;   /* commands sent (a command sent on every connection counts once) */
	uint64_t ok;     /* answered without an error */
	uint64_t errors; /* error replies (and errors inside EXEC replies) */
};

struct online;

/* Connects (and authenticates) every connection.  Returns 0, or -errno with
 * a message naming the cause and the fix in `err`. */
int online_open(struct online **out, const struct online_config *cfg, char *err, size_t errlen);

/* Sends SET key value [EX ttl_s] (ttl_s 0 = none) for the row at `line`.
 * Returns 0, or -errno when a connection failed (message in err: stop). */
int online_set(struct online *o, const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen,
               int64_t ttl_s, uint64_t line, char *err, size_t errlen);

/* Sends a hash or set row: `cmd` ("HSET", "SADD") key items..., in commands
 * of at most per_cmd items (a multiple of `step`, the items one element
 * takes: 2 for a field and its value), then EXPIRE key ttl_s when ttl_s != 0,
 * all over the key's connection: Redis runs them in that order.  Returns as
 * online_set. */
int online_coll(struct online *o, const char *cmd, size_t step, const uint8_t *key, size_t klen,
                const uint8_t *const *items, const size_t *item_len, size_t n, size_t per_cmd,
                int64_t ttl_s, uint64_t line, char *err, size_t errlen);

/* Sends one command given as its arguments and its RESP bytes (`raw`, sent
 * as they are).  Returns as online_set. */
int online_command(struct online *o, size_t argc, const uint8_t *const *argv, const size_t *argl,
                   const uint8_t *raw, size_t raw_len, uint64_t line, char *err, size_t errlen);

/* Sends what is buffered and waits for every reply.  Returns as online_set. */
int online_finish(struct online *o, char *err, size_t errlen);

const struct online_stats *online_get_stats(const struct online *o);

/* Closes the connections (replies still awaited are abandoned). */
void online_close(struct online *o);

#endif
