/* fuzz_config: libFuzzer target for the configuration loader — cfg_load_file
 * on arbitrary YAML, and cfg_set / cfg_get on arbitrary "section.key=value"
 * strings (service/config.c).
 *
 * Each input is read as a whole file (through a memfd, no disk I/O), and
 * each of its lines (at most 64) is applied with cfg_set to a configuration
 * that starts from the defaults and looked up with cfg_get.  Checks:
 *   - a refusal comes with a one-line message (no control character) that
 *     names the file, or for cfg_set starts with "--set ASSIGNMENT: ";
 *   - whatever configuration was accepted prints back (cfg_foreach) as
 *     values that cfg_set accepts again, giving the same values (a fixed
 *     point), and cfg_get agrees with cfg_foreach.
 *
 *   make fuzz FUZZ_TARGETS=config      run it (tests/fuzz/fuzz.sh)
 *   build/fuzz/fuzz_config INPUT       replay one input
 */
#include <ctype.h>
#include <stdarg.h>
#include <sys/mman.h>

#include "fuzz_util.h"
#include "service/config.h"

#define FUZZ_MAX_LINES   64
#define FUZZ_MAX_OPTIONS 64 /* more than config.c's table has */
#define VALUE_MAX        4200

static int memfd = -1;
static char memfd_path[64]; /* /proc/self/fd/N: cfg_load_file opens it like a file */

static void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), __noreturn__));
static void fuzz_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "fuzz_config: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("fuzz_config.yaml", MFD_CLOEXEC);
	if (memfd < 0)
		fuzz_fail("memfd_create: %s", strerror(errno));
	snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
	return 0;
}

/* Every option's name and value as cfg_foreach prints them. */
struct dump {
	size_t n;
	char name[FUZZ_MAX_OPTIONS][96];
	char value[FUZZ_MAX_OPTIONS][VALUE_MAX];
};

static void dump_one(const char *name, const char *value, void *arg)
{
	struct dump *d = arg;
	if (d->n == FUZZ_MAX_OPTIONS)
		fuzz_fail("more than %d options", FUZZ_MAX_OPTIONS);
	if (strlen(name) >= sizeof(d->name[0]) || strlen(value) >= sizeof(d->value[0]))
		fuzz_fail("option %.96s prints %zu bytes", name, strlen(value));
	strcpy(d->name[d->n], name);
	strcpy(d->value[d->n], value);
	d->n++;
}

/* A message is one line: no control character in it. */
static void check_one_line(const char *what, const char *msg)
{
	if (msg[0] == '\0')
		fuzz_fail("%s: an empty message", what);
	for (const char *p = msg; *p; p++)
		if (iscntrl((unsigned char)*p))
			fuzz_fail("%s: control character 0x%02x in the message '%s'", what,
			          (unsigned char)*p, msg);
}

/* What cfg accepted prints back as values cfg_set accepts again, to the
 * same values; cfg_get says the same as cfg_foreach. */
static void check_round_trip(const struct cfg *cfg)
{
	static struct dump first, again;
	static char assignment[VALUE_MAX + 128], got[VALUE_MAX];
	char err[VALUE_MAX + 1024];
	struct cfg copy;
	first.n = again.n = 0;
	cfg_foreach(cfg, dump_one, &first);
	cfg_defaults(&copy);
	for (size_t i = 0; i < first.n; i++) {
		snprintf(assignment, sizeof(assignment), "%s=%s", first.name[i], first.value[i]);
		if (cfg_set(&copy, assignment, err, sizeof(err)) < 0)
			fuzz_fail("a value the configuration holds is refused: %s", err);
		if (cfg_get(cfg, first.name[i], got, sizeof(got)) < 0 ||
		    strcmp(got, first.value[i]) != 0)
			fuzz_fail("cfg_get %s says '%s', cfg_foreach '%s'", first.name[i], got,
			          first.value[i]);
	}
	cfg_foreach(&copy, dump_one, &again);
	for (size_t i = 0; i < first.n; i++)
		if (strcmp(first.value[i], again.value[i]) != 0)
			fuzz_fail("%s=%s reads back as '%s'", first.name[i], first.value[i],
			          again.value[i]);
}

static void fuzz_load(const uint8_t *data, size_t size)
{
	char err[2048];
	struct cfg cfg;
	if (ftruncate(memfd, 0) != 0 || (size > 0 && pwrite(memfd, data, size, 0) != (ssize_t)size))
		fuzz_fail("writing the memfd: %s", strerror(errno));
	cfg_defaults(&cfg);
	err[0] = '\0';
	int rc = cfg_load_file(&cfg, memfd_path, err, sizeof(err));
	if (rc == 0) {
		check_round_trip(&cfg);
		return;
	}
	if (rc != -1)
		fuzz_fail("cfg_load_file returned %d", rc);
	check_one_line("cfg_load_file", err);
	if (strncmp(err, memfd_path, strlen(memfd_path)) != 0 || err[strlen(memfd_path)] != ':')
		fuzz_fail("the message does not start with the file's name: '%s'", err);
}

static void fuzz_set_lines(const uint8_t *data, size_t size)
{
	static char line[4096 * 4], out[VALUE_MAX];
	char err[sizeof(line) + 1024];
	struct cfg cfg;
	size_t start = 0, lines = 0;
	cfg_defaults(&cfg);
	for (size_t i = 0; i <= size && lines < FUZZ_MAX_LINES; i++) {
		if (i < size && data[i] != '\n')
			continue;
		size_t n = i - start < sizeof(line) - 1 ? i - start : sizeof(line) - 1;
		memcpy(line, data + start, n);
		line[n] = '\0';
		start = i + 1;
		lines++;
		cfg_get(&cfg, line, out, sizeof(out));
		err[0] = '\0';
		int rc = cfg_set(&cfg, line, err, sizeof(err));
		if (rc == 0)
			continue;
		if (rc != -1)
			fuzz_fail("cfg_set returned %d", rc);
		size_t prefix = strlen("--set ") + strlen(line) + 2;
		if (strncmp(err, "--set ", 6) != 0 || strncmp(err + 6, line, strlen(line)) != 0 ||
		    strncmp(err + prefix - 2, ": ", 2) != 0)
			fuzz_fail("cfg_set's message does not start with '--set %s: ': '%s'", line,
			          err);
		check_one_line("cfg_set", err + prefix);
	}
	check_round_trip(&cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_load(data, size);
	fuzz_set_lines(data, size);
	return 0;
}
