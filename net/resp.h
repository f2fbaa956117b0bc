/* resp: the Redis protocol (RESP2 and RESP3) — the request parser the
 * connections use and the reply writer the command handlers use.
 *
 * Requests: a multibulk (`*N\r\n$L\r\n...`) or an inline command line
 * (`GET key\r\n`, split on blanks, with Redis's quoting rules).  The parser is
 * incremental: it is given the bytes received so far and either returns one
 * complete command, asks for more, or reports a protocol error with Redis's
 * exact wording (`Protocol error: invalid bulk length`, ...).  Limits:
 * server.max_bulk_len, max_multibulk_len, max_inline_len.
 *
 * Replies: a resp_buf is a growable byte buffer that knows the protocol
 * version of the connection it is for (2 or 3).  The resp_add_* writers
 * append one reply element each; the RESP3-only types degrade to their RESP2
 * forms exactly as Redis does (map -> flat array of 2N, set -> array, double
 * -> bulk string, null -> $-1 or *-1, boolean -> integer, verbatim -> bulk).
 *
 * Memory: a resp_buf that cannot grow aborts the process with a message (as
 * Redis does when malloc fails); no writer returns an error.
 */
#ifndef RINGKV_RESP_H
#define RINGKV_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RESP_UNAUTH_MAX_ARGS 10    /* Redis's limits before AUTH */
#define RESP_UNAUTH_MAX_BULK 16384
#define RESP_INLINE_BYTES 64 /* a resp_buf's built-in storage before it mallocs */

struct resp_buf {
	char *data;    /* points at inline_data until the buffer grows; then malloc'd */
	size_t len;    /* bytes written */
	size_t cap;    /* bytes available at data */
	uint8_t proto; /* 2 or 3: which forms the writers use */
	char inline_data[RESP_INLINE_BYTES];
};

void resp_buf_init(struct resp_buf *b, unsigned proto);
void resp_buf_free(struct resp_buf *b);  /* releases memory; b may be init'd again */
void resp_buf_reset(struct resp_buf *b); /* len = 0, keeps the memory */
void resp_buf_append(struct resp_buf *b, const void *data, size_t len); /* raw bytes */

/* Writers: one reply element each. */
void resp_add_simple(struct resp_buf *b, const char *s);  /* +s */
void resp_add_error(struct resp_buf *b, const char *msg); /* -msg (msg has its
                                                             prefix: "ERR ...") */
void resp_add_errorf(struct resp_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void resp_add_int(struct resp_buf *b, int64_t v);                /* :v */
void resp_add_bulk(struct resp_buf *b, const void *p, size_t n); /* $n p */
void resp_add_bulk_str(struct resp_buf *b, const char *s);
void resp_add_bulk_int(struct resp_buf *b, int64_t v); /* $ with the decimal */
void resp_add_null(struct resp_buf *b);                /* RESP2 $-1, RESP3 _ */
void resp_add_null_array(struct resp_buf *b);          /* RESP2 *-1, RESP3 _ */
void resp_add_array(struct resp_buf *b, size_t n);     /* *n, then n elements */
void resp_add_map(struct resp_buf *b, size_t n);       /* RESP3 %n, RESP2 *2n; then n pairs */
void resp_add_set(struct resp_buf *b, size_t n);       /* RESP3 ~n, RESP2 *n */
void resp_add_double(struct resp_buf *b, double d);    /* RESP3 ,d; RESP2 bulk "%.17g" */
void resp_add_bool(struct resp_buf *b, bool v);        /* RESP3 #t/#f; RESP2 :1/:0 */
void resp_add_verbatim(struct resp_buf *b, const char *s, size_t n); /* RESP3 =txt:; RESP2 bulk */

/* Parser limits (server.* options). */
struct resp_limits {
	uint64_t max_bulk_len;      /* largest bulk argument, bytes */
	uint64_t max_multibulk_len; /* most arguments in one command */
	uint64_t max_inline_len;    /* longest inline command line, bytes */
};

/* A parsed command: argv[i] points into the buffer given to resp_parse (valid
 * until that buffer changes), or into the parser's own storage for inline
 * commands.  The argv and argv_len arrays are the parser's: valid until the
 * next resp_parse call. */
struct resp_command {
	size_t argc;
	const uint8_t **argv;
	size_t *argv_len;
};

enum resp_parse_status {
	RESP_PARSE_DONE,  /* one command; *consumed bytes of the buffer used */
	RESP_PARSE_MORE,  /* need more bytes; keep the buffer's unconsumed bytes */
	RESP_PARSE_EMPTY, /* consumed only blank inline lines / nothing to run */
	RESP_PARSE_ERROR, /* protocol error: reply "-ERR <error>", then close */
};

/* Incremental parser state of one connection.  Opaque fields; sized so a
 * connection can embed it. */
struct resp_parser {
	struct resp_limits limits;
	bool unauthenticated; /* set by the connection before each parse: a client that
	                         must still AUTH gets Redis's tighter limits (at most
	                         RESP_UNAUTH_MAX_ARGS arguments of RESP_UNAUTH_MAX_BULK
	                         bytes), so it cannot make the server buffer much */
	const char *error; /* RESP_PARSE_ERROR: "Protocol error: ..." (a static string or
	                      error_buf; valid until the next resp_parse) */
	/* private */
	size_t pos;            /* bytes of the current command already parsed */
	size_t scan;           /* where the search for the current line's end resumes */
	size_t last_len;       /* len of the last resp_parse call (resp_parse_wanted) */
	size_t need;           /* bytes the buffer must hold to finish the current bulk */
	int64_t argc_expected; /* multibulk count, -1 before the header */
	int64_t bulk_len;      /* length of the bulk being read, -1 before its header */
	size_t argc, argv_cap;
	const uint8_t **argv; /* [argv_cap] handed out in resp_command */
	size_t *argv_len;     /* [argv_cap] */
	size_t *argv_off;     /* [argv_cap] offsets of the arguments from the command's start */
	uint8_t *inline_copy; /* unquoted inline arguments */
	size_t inline_cap;
	char error_buf[48]; /* "Protocol error: expected '$', got 'x'" */
};

void resp_parser_init(struct resp_parser *p, const struct resp_limits *limits);
void resp_parser_free(struct resp_parser *p);

/* Parses the command starting at buf[0] (the caller drops consumed bytes and
 * passes the rest next time, with any new bytes appended).  State carried
 * between calls makes a large bulk received in many pieces cost linear time. */
enum resp_parse_status resp_parse(struct resp_parser *p, const uint8_t *buf, size_t len,
                                  size_t *consumed, struct resp_command *out);

/* How many more bytes the command being parsed needs at least (so a
 * connection can size its buffer for a large bulk); 0 when unknown. */
size_t resp_parse_wanted(const struct resp_parser *p);

/* Parses a whole buffer as a decimal int64 exactly as Redis's string2ll
 * (bulk lengths here, integer arguments in the command handlers): optional
 * '-', no leading zeros or '+', no spaces.  Returns true on success. */
bool resp_parse_int64(const uint8_t *s, size_t n, int64_t *out);

/* ---- replies (the client side: ringkv-import online, ringkv-bench) ------ */

#define RESP_REPLY_DEPTH_MAX 32 /* nesting of aggregate replies followed */

/* The length of the one reply at p[0..n) (RESP2 or RESP3, an attribute with
 * the reply it precedes): 0 if it is incomplete, -1 if it is not RESP or
 * nests deeper than RESP_REPLY_DEPTH_MAX.  Adds the error replies it holds,
 * nested ones too, to *errors, and points *msg / *msg_len at the first one's
 * text when msg is not NULL and *msg is NULL. */
long resp_reply_len(const uint8_t *p, size_t n, uint64_t *errors, const uint8_t **msg,
                    size_t *msg_len);

#endif
