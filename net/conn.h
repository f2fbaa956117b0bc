/* conn: TCP listeners and client connections on the proactors.
 *
 * Every proactor listens on every server.bind address with its own
 * SO_REUSEPORT socket and multishot accept, so the kernel spreads connections
 * across proactors; a connection belongs to the proactor that accepted it for
 * its whole life.  Receiving is multishot recv with a provided buffer ring
 * when the kernel has them (plain recv into a per-connection buffer
 * otherwise); ENOBUFS or a multishot that ends is re-armed, never fatal.
 *
 * Requests: the connection parses RESP (resp.h) and hands each command to the
 * daemon's handler as a `struct conn_req` whose arguments are copied into it,
 * so the handler may finish it on a later iteration (after a store read or a
 * reply from another proactor).  The handler writes its reply into
 * req->reply and calls conn_req_done(); replies leave in request order
 * whatever order requests finish in, and all of a connection's ready replies
 * leave in one send per loop iteration (an end-of-iteration hook).
 *
 * Reply batches: the commands parsed in one pass over received input are a
 * batch, and finished replies wait (are not sent at the iteration's end)
 * while the oldest unfinished request belongs to the same batch as the
 * oldest of them: a pipeline's replies leave together, as Redis writes a
 * read's replies together once it has run them all.  Without it a MULTI's
 * +OK and QUEUED replies left at once and its EXEC's array a log write later:
 * two sends (and two wake-ups of the client) a transaction.  The wait is
 * bounded: never past NET_HOLD_BYTES of replies (or an eighth of
 * server.output_buffer_limit), which stays below the backlog a streamed
 * reply waits on (cmd_coll.c STREAM_BACKLOG), and never while closing.
 *
 * Backpressure: a connection whose unsent replies exceed
 * server.output_buffer_limit is disconnected (Redis's
 * client-output-buffer-limit); while its unsent replies exceed a quarter of
 * that, or while more than `max_pipeline` requests are unfinished, it is not
 * read; nor while it has a request unfinished and the proactor's connections
 * together have more than NET_PENDING_ARGS_MAX arguments in unfinished
 * requests (each connection can always have one, so each makes progress);
 * the commands it has already received wait in its input buffer meanwhile.
 * Protocol errors reply "-ERR Protocol error: ..." and close that connection
 * only.  server.max_clients over all proactors: the next client gets "-ERR
 * max number of clients reached" and is closed.  server.timeout_s: idle
 * clients are closed.
 *
 * Lifetime: a connection closed by the peer, an error or conn_close() stays
 * allocated until its unfinished requests are done; their replies are then
 * dropped.  A peer that half-closes (EOF) still gets the replies of every
 * request it sent; commands that were waiting in the input buffer at the EOF
 * (behind a barrier, or for backpressure) run first.  All functions run on the connection's
 * proactor unless they say otherwise.
 *
 * Shutdown: net_start registers a pool stop hook that calls net_close_all, so
 * pool_stop alone closes every connection; the daemon may call
 * net_stop_accepting / net_close_all earlier.  After net_close_all a proactor's
 * net state frees itself once its last connection is gone (it holds the
 * proactor until then); replies still unsent after NET_SHUTDOWN_FLUSH_MS are
 * dropped so a client that does not read cannot stall shutdown.
 */
#ifndef RINGKV_CONN_H
#define RINGKV_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/resp.h"
#include "service/runtime/proactor.h"

#define NET_SHUTDOWN_FLUSH_MS 2000 /* shutdown waits this long for replies to leave */

struct conn;
struct conn_req;

/* What the daemon does with each command.  Runs on the connection's proactor.
 * The handler owns req until it calls conn_req_done(req) (at once or later). */
typedef void (*conn_handler_fn)(struct conn *c, struct conn_req *req);

#define NET_PREFETCH 16 /* commands of a pipeline net_config.prefetch sees at a time */

/* A command ahead in a pipeline, as net_config.prefetch sees it: its name,
 * its first argument and its second (arg2 NULL when it has none). */
struct net_hint {
	const uint8_t *name, *key, *arg2;
	size_t name_len, key_len, arg2_len;
};

struct net_config {
	const char *bind;                 /* addresses separated by spaces: "127.0.0.1 ::1" */
	uint16_t port;                    /* 0 = kernel-chosen (tests read it back) */
	unsigned backlog;                 /* listen(2) backlog */
	unsigned max_clients;             /* over all proactors */
	unsigned timeout_s;               /* idle disconnect; 0 = never */
	uint64_t output_buffer_limit;     /* unsent reply bytes before disconnect */
	struct resp_limits limits;        /* request parser limits */
	unsigned buf_ring_entries;        /* provided buffers per proactor; 0 = plain recv */
	unsigned buf_size;                /* bytes per provided buffer */
	unsigned max_pipeline;            /* unfinished requests per connection before reading
	                                     pauses; 0 = 1024 */
	bool auth_required;               /* requirepass is set: new clients start with
	                                     authenticated = false */
	conn_handler_fn handler;          /* runs every command */
	void (*prefetch)(struct conn *c, const struct net_hint *hints,
	                 size_t n);       /* optional: the next commands of c's pipeline,
	                                     before the handler runs them (a hint; at most
	                                     NET_PREFETCH) */
	void (*on_open)(struct conn *c);  /* optional: a client was accepted (before its first
	                                     command) */
	void (*on_close)(struct conn *c); /* optional: the daemon frees its per-client state;
	                                     runs once the socket is closed and every request
	                                     is done, just before c is freed */
};

/* One request: a command and its reply.  Allocated by the connection (one
 * allocation with the argument bytes), freed by it after the reply is sent or
 * dropped. */
struct conn_req {
	struct conn *conn; /* the connection it came from */
	size_t argc;
	uint8_t **argv; /* argv[i] has argv_len[i] bytes plus a NUL after them */
	size_t *argv_len;
	struct resp_buf reply; /* the handler writes the reply here (proto of the conn
	                          at parse time; HELLO sets reply.proto too) */
	bool done;             /* conn_req_done() was called */
	struct conn_req *next; /* the connection's queue, in request order */
	void *ctx;             /* the daemon's, for its own request context */
};

/* Per-connection state.  Fields marked "daemon" are the daemon's to read and
 * write (CLIENT SETNAME, HELLO, AUTH); the rest is net's. */
struct conn {
	uint64_t id; /* CLIENT ID: unique in the process, from 1 */
	int fd;
	struct px *px;                 /* the owning proactor */
	struct sockaddr_storage peer;  /* remote address */
	struct sockaddr_storage local; /* local address */
	uint64_t created_ms;           /* Unix ms */
	uint64_t last_active_ms;       /* Unix ms of the last command received */
	const char *last_cmd;          /* lowercase name of the last command (daemon sets it) */
	uint64_t output_bytes;         /* unsent reply bytes */
	unsigned pending;              /* requests not yet done */

	/* daemon */
	uint8_t proto;      /* 2 or 3 (HELLO) */
	bool authenticated; /* AUTH done, or no requirepass */
	unsigned db;        /* the selected database (SELECT), 0 at first */
	char *name;         /* CLIENT SETNAME, malloc'd; NULL = none; net frees it
	                       with the connection (after on_close) */
	void *daemon;       /* the daemon's per-client state */
	bool barrier;       /* set by the daemon: the commands received after the ones
	                       already handed to it wait (an EXEC that must finish
	                       first); conn_lift_barrier clears it */
	unsigned overlap;   /* scripts running while later commands go on */
	void *deferred;     /* a command held back until they end (cmd_script.c) */

	/* private to net */
	struct conn_private *priv;
};

/* Starts listening on the calling proactor (call it on every proactor).
 * Returns 0, or -errno with a message naming the cause and the fix (address
 * in use, permission denied, ...) in err. */
int net_start(struct px *px, const struct net_config *cfg, char *err, size_t errlen);

/* The port proactor `px` listens on, 0 if it does not listen (useful with
 * port 0: then every proactor after the first must be started with the port
 * proactor 0 got).  Any thread may call it. */
uint16_t net_port(struct px *px);

/* Stops accepting on the calling proactor; open connections keep being
 * served.  Part of shutdown. */
void net_stop_accepting(struct px *px);

/* Closes every connection of the calling proactor once its ready replies are
 * sent (shutdown); unfinished requests still complete and are dropped. */
void net_close_all(struct px *px);

/* Finishes req: its reply leaves when every earlier request of the connection
 * has left.  req must not be touched afterwards; req->conn stays valid until
 * the caller returns to the loop. */
void conn_req_done(struct conn_req *req);

/* Sends `part` now as the next bytes of req's reply (a reply streamed in
 * parts; the rest, then conn_req_done, follow): on the wire at once when req
 * is the connection's oldest unfinished request, else kept with req until it
 * is.  part is emptied.  Returns the bytes the connection holds unsent for
 * it (the producer waits while they are many), or SIZE_MAX when the
 * connection is closing (nobody reads the reply: stop producing). */
size_t conn_req_stream(struct conn_req *req, struct resp_buf *part);

/* Clears c->barrier: the commands that waited run (from the end-of-iteration
 * hook, not inside this call). */
void conn_lift_barrier(struct conn *c);

/* Closes c after the replies of every request queued so far are sent (QUIT,
 * CLIENT KILL); nothing more is read or run.  Never frees c at once: the
 * caller may still use c and finish its requests. */
void conn_close_after_reply(struct conn *c);

/* Calls fn for every open connection of the calling proactor (CLIENT LIST). */
void conn_foreach(struct px *px, void (*fn)(struct conn *c, void *arg), void *arg);

/* Connected clients over all proactors (INFO clients).  Any thread. */
unsigned net_clients(void);

/* Connections not yet freed over all proactors: a closed connection stays
 * until its last request has ended and its on_close has run.  Any thread. */
unsigned net_conns_allocated(void);

/* Counters of the calling process (INFO stats): relaxed atomics, summed over
 * every proactor, including proactors whose net state is gone.  Any thread. */
struct net_stats {
	uint64_t connections_received; /* accepted, including those refused */
	uint64_t rejected_connections; /* over max_clients */
	uint64_t commands;             /* commands parsed */
	uint64_t net_input_bytes;
	uint64_t net_output_bytes;
	uint64_t reads; /* recv completions with bytes (INFO total_reads_processed) */
	uint64_t sends; /* send completions with bytes (total_writes_processed) */
	uint64_t protocol_errors;
	uint64_t output_limit_disconnects;
	uint64_t timeouts; /* idle disconnects */
};
void net_get_stats(struct net_stats *out);

/* Formats the peer as "ip:port" (CLIENT LIST addr=). */
void conn_peer_string(const struct conn *c, char *buf, size_t len);
void conn_local_string(const struct conn *c, char *buf, size_t len);

#endif
