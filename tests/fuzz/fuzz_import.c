/* fuzz_import: libFuzzer target for ringkv-import's input parsers
 * (tools/import/input.h): CSV, TSV, JSON Lines and RESP streams.
 *
 * Input: byte 0 chooses the format (bits 0-1: csv, tsv, jsonl, resp) and
 * whether csv/tsv have a header row (bit 2); byte 1 seeds how the second
 * reading splits the stream; the rest is the stream.  It is read twice: whole
 * from a memfd, and in pieces — one packet per read() from a SOCK_SEQPACKET
 * socketpair — as a pipe from a slow producer would deliver it.  Checks:
 *   - both readings give the same rows and messages (for a fatal error, the
 *     same place);
 *   - in_next returns 1, 0, -EINVAL (a bad row, skipped) or another -errno
 *     (fatal), never loops without consuming input, and every message is
 *     non-empty, one line, and for a bad row starts with "line ";
 *   - rows: lines and offsets never go back, offsets stay inside the input,
 *     every key, value and argument is readable (ASan), a ttl is 0 or
 *     1..IN_TTL_MAX, and a RESP command has arguments; once the reader says
 *     0, in_bytes is the input's size.
 *
 *   make fuzz FUZZ_TARGETS=import      run it (tests/fuzz/fuzz.sh)
 *   build/fuzz/fuzz_import INPUT       replay one input
 */
#include <errno.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "fuzz_util.h"
#include "tools/import/input.h"

#define FUZZ_MAX_INPUT  (32u << 10) /* the split reading's packets must all fit a socket */
#define FUZZ_MAX_PIECES 32
#define TRANSCRIPT_MAX  (1u << 20)

static void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), __noreturn__));
static void fuzz_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fuzz_import: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

/* What a reading produced, as text, to compare the two readings. */
struct transcript {
	char *p; /* TRANSCRIPT_MAX bytes */
	size_t len;
};

static void say(struct transcript *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct transcript *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(t->p + t->len, TRANSCRIPT_MAX - t->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		t->len +=
		    (size_t)n < TRANSCRIPT_MAX - t->len ? (size_t)n : TRANSCRIPT_MAX - t->len - 1;
}

/* Adds a digest of n bytes (all of them are read: ASan checks they are). */
static void say_bytes(struct transcript *t, const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	if (n > 0 && p == NULL)
		fuzz_fail("%zu bytes at NULL", n);
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	say(t, " %zu:%016llx", n, (unsigned long long)h);
}

static void check_message(const char *what, const char *msg)
{
	if (msg[0] == '\0')
		fuzz_fail("%s without a message", what);
	for (const char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			fuzz_fail("%s: the message is not one line: '%s'", what, msg);
}

/* Reads everything from fd and writes what came out into t. */
static void read_all(int fd, const struct in_options *opt, size_t size, struct transcript *t)
{
	struct in_reader *r;
	uint64_t last_line = 0, last_offset = 0;
	t->len = 0;
	if (in_open(&r, fd, opt) < 0)
		fuzz_fail("in_open failed");
	for (size_t calls = 0;; calls++) {
		struct in_row row;
		char err[1024] = "";
		if (calls > size + 2)
			fuzz_fail("%zu calls of in_next on %zu bytes", calls, size);
		int ret = in_next(r, &row, err, sizeof(err));
		if (ret == 0) {
			if (in_bytes(r) != size)
				fuzz_fail("the end at byte %llu of %zu",
				          (unsigned long long)in_bytes(r), size);
			say(t, "end\n");
			break;
		}
		if (ret == -EINVAL) {
			check_message("a bad row", err);
			if (strncmp(err, "line ", 5) != 0)
				fuzz_fail("a bad row's message does not start with 'line ': '%s'",
				          err);
			say(t, "bad %s\n", err);
			continue;
		}
		if (ret < 0) {
			if (ret == -EINTR)
				fuzz_fail("in_next returned -EINTR without a signal");
			check_message("a fatal error", err);
			/* Only where: the bytes a RESP error quotes are those buffered so
			 * far, which differ between the readings (input.c's RESP parser
			 * is being replaced by net/resp's). */
			say(t, "fatal %d %.*s\n", ret, (int)strcspn(err, ":"), err);
			break;
		}
		if (ret != 1)
			fuzz_fail("in_next returned %d", ret);
		if (row.line < 1 || row.line < last_line || row.offset < last_offset ||
		    row.offset >= size)
			fuzz_fail(
			    "a row at line %llu, byte %llu after line %llu, byte %llu (%zu bytes)",
			    (unsigned long long)row.line, (unsigned long long)row.offset,
			    (unsigned long long)last_line, (unsigned long long)last_offset, size);
		last_line = row.line;
		last_offset = row.offset;
		say(t, "row line %llu byte %llu", (unsigned long long)row.line,
		    (unsigned long long)row.offset);
		if (opt->format == IN_RESP) {
			if (row.argc == 0)
				fuzz_fail("a RESP command without arguments");
			for (size_t i = 0; i < row.argc; i++)
				say_bytes(t, row.argv[i], row.argl[i]);
			say_bytes(t, row.raw, row.raw_len);
		} else {
			if (row.ttl_s < 0 || row.ttl_s > IN_TTL_MAX)
				fuzz_fail("ttl %lld", (long long)row.ttl_s);
			say_bytes(t, row.key, row.key_len);
			say_bytes(t, row.value, row.value_len);
			say(t, " ttl %lld", (long long)row.ttl_s);
		}
		say(t, "\n");
	}
	in_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct transcript whole, pieces;
	if (whole.p == NULL) {
		whole.p = malloc(TRANSCRIPT_MAX);
		pieces.p = malloc(TRANSCRIPT_MAX);
		if (whole.p == NULL || pieces.p == NULL)
			fuzz_fail("out of memory");
	}
	if (size < 2 || size - 2 > FUZZ_MAX_INPUT)
		return 0;
	static const enum in_format formats[] = {IN_CSV, IN_TSV, IN_JSONL, IN_RESP};
	struct in_options opt = {.format = formats[data[0] & 3], .header = data[0] & 4};
	unsigned seed = data[1];
	data += 2;
	size -= 2;

	int fd = memfd_create("fuzz_import", MFD_CLOEXEC);
	if (fd < 0 || (size > 0 && write(fd, data, size) != (ssize_t)size) ||
	    lseek(fd, 0, SEEK_SET) != 0)
		fuzz_fail("memfd: %s", strerror(errno));
	read_all(fd, &opt, size, &whole);
	close(fd);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		fuzz_fail("socketpair: %s", strerror(errno));
	size_t sent = 0, step = size / FUZZ_MAX_PIECES + 1;
	for (unsigned k = 0; sent < size; k++) {
		size_t n = 1 + (seed * 31 + k * 7) % (2 * step);
		if (n > size - sent)
			n = size - sent;
		if (send(sv[0], data + sent, n, MSG_DONTWAIT) != (ssize_t)n)
			fuzz_fail("send: %s", strerror(errno));
		sent += n;
	}
	close(sv[0]);
	read_all(sv[1], &opt, size, &pieces);
	close(sv[1]);
	if (whole.len != pieces.len || memcmp(whole.p, pieces.p, whole.len) != 0)
		fuzz_fail(
		    "reading in pieces differs from reading whole:\n%.*s\n-- in pieces:\n%.*s",
		    (int)whole.len, whole.p, (int)pieces.len, pieces.p);
	return 0;
}
