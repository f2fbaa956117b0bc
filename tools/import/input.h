/* input: ringkv-import's input readers — CSV, TSV, JSON Lines and RESP
 * command streams — turning a file descriptor into rows, with bad rows
 * reported by line, column or field, and reason.
 *
 * Formats (docs/IMPORT.md has the user's description):
 *
 *   csv    RFC 4180: fields separated by ',', a field may be quoted with '"'
 *          (then it may hold ',', '"' doubled, CR, LF and any byte); rows end
 *          with LF or CRLF.  Columns key,value[,ttl], or named by a header
 *          row (key, value, ttl in any order) with in_options.header.
 *   tsv    fields separated by TAB, one row per line; escapes \t \n \r \\ \0
 *          and \xHH.  Columns as for csv.
 *   jsonl  one JSON object per line: "key" (string) or "key_b64" (base64),
 *          one value — "value" (a string), "hash" (an object of fields and
 *          values), "set" (an array of members), or the same with "_b64"
 *          (every string base64) — and an optional "ttl" (integer seconds, or
 *          null).  In "hash" and "set" a JSON number stands for its text as
 *          written; anything else (objects, arrays, true, false, null) is a
 *          bad row, and so is an empty hash or set (Redis keeps none).
 *   resp   a stream of RESP arrays of bulk strings (what redis-cli --pipe
 *          sends); each array is one command, framed by the server's parser
 *          (net/resp.h) with the limits below.  Inline commands are refused
 *          and every line must end in CRLF.
 *
 * Blank lines are skipped in csv, tsv and jsonl.  A ttl is a whole number of
 * seconds, 1 .. IN_TTL_MAX.
 *
 * Rows point into the reader's buffer: valid until the next in_next call.
 * Reads are large (1 MiB at least); no allocation per row.
 */
#ifndef RINGKV_IMPORT_INPUT_H
#define RINGKV_IMPORT_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IN_TTL_MAX       3153600000LL /* 100 years, seconds */
#define IN_RESP_MAX_ARGS 1048576      /* Redis's max-multibulk-len default */
#define IN_RESP_MAX_BULK (512u << 20) /* Redis's proto-max-bulk-len default */
#define IN_RESP_MAX_LINE (64u << 10)  /* a header line; Redis's inline limit */

enum in_format {
	IN_CSV,
	IN_TSV,
	IN_JSONL,
	IN_RESP,
};

/* What a csv, tsv or jsonl row holds. */
enum in_kind {
	IN_STRING, /* key, value */
	IN_HASH,   /* key, items: field, value, field, value, ... */
	IN_SET,    /* key, items: the members */
};

struct in_options {
	enum in_format format;
	bool header; /* csv, tsv: the first row names the columns */
};

/* One input row. */
struct in_row {
	uint64_t line;   /* 1-based line where the row starts */
	uint64_t offset; /* byte offset where the row starts */
	/* csv, tsv, jsonl */
	enum in_kind kind;
	const uint8_t *key;
	size_t key_len;
	const uint8_t *value; /* IN_STRING */
	size_t value_len;
	size_t n_items;             /* IN_HASH (an even number), IN_SET: >= 1 */
	const uint8_t *const *item; /* n_items items ... */
	const size_t *item_len;     /* ... and their lengths */
	int64_t ttl_s;              /* 0 = none, else 1..IN_TTL_MAX */
	/* resp */
	size_t argc;
	const uint8_t *const *argv; /* argc arguments ... */
	const size_t *argl;         /* ... and their lengths */
	const uint8_t *raw;         /* the command's bytes as read */
	size_t raw_len;
};

struct in_reader;

/* Reads from `fd` (not closed by the reader).  Returns 0, or -ENOMEM. */
int in_open(struct in_reader **out, int fd, const struct in_options *opt);

/* Reads the next row.  Returns 1 (*row filled), 0 at the end of the input,
 * -EINVAL for a bad row (err holds "line N[, column C (name)]: reason"; the
 * reader has skipped it and the next call goes on after it), -EINTR when a
 * signal interrupted a read (call again to go on), or another -errno when
 * reading fails (err holds the reason; stop). */
int in_next(struct in_reader *r, struct in_row *row, char *err, size_t errlen);

/* Bytes consumed so far (for progress). */
uint64_t in_bytes(const struct in_reader *r);

void in_close(struct in_reader *r);

/* "csv", "tsv", "jsonl" (or "json", "ndjson"), "resp" (or "aof") to a
 * format; -1 if unknown. */
int in_format_parse(const char *name, enum in_format *out);

/* Guesses the format from a file name's extension (.csv, .tsv, .tab, .jsonl,
 * .ndjson, .json, .resp, .aof, .redis); -1 if it cannot. */
int in_format_guess(const char *path, enum in_format *out);

const char *in_format_name(enum in_format f);

/* Decodes standard base64 (padding optional, no whitespace) in place:
 * dst may equal src.  Returns the decoded length, or -1 on a bad
 * character or length.  Exposed for the tests. */
long in_base64_decode(uint8_t *dst, const uint8_t *src, size_t len);

#endif
