/* test_config: config.yaml loading, --set overrides, CONFIG GET text and every error message. */
#include "service/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures; /* checks failed so far; the exit status is 1 when not 0 */

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			failures++;                                                                \
			printf("FAIL: %s:%d: ", __FILE__, __LINE__);                               \
			printf(__VA_ARGS__);                                                       \
			printf("\n");                                                              \
		}                                                                                  \
	} while (0)

/* Writes `text` to a new file under $TMPDIR (or /tmp) and puts its name in path.  Returns 0 or
 * -errno. */
static int write_temp(const char *text, char *path, size_t pathlen)
{
	const char *dir = getenv("TMPDIR");
	snprintf(path, pathlen, "%s/ringkv-test-config-XXXXXX.yaml",
	         dir != NULL && dir[0] != '\0' ? dir : "/tmp");
	int fd = mkstemps(path, 5);
	if (fd < 0)
		return -errno;
	size_t len = strlen(text);
	ssize_t n = write(fd, text, len);
	int rc = n == (ssize_t)len ? 0 : -EIO;
	close(fd);
	if (rc < 0)
		unlink(path);
	return rc;
}

/* Loads `yaml` over cfg from a temporary file.  Returns cfg_load_file's result; on -1 `err`
 * holds the message with the temporary path replaced by "config.yaml". */
static int load_text(struct cfg *cfg, const char *yaml, char *err, size_t errlen)
{
	char path[4096], raw[2048];
	if (write_temp(yaml, path, sizeof(path)) < 0) {
		snprintf(err, errlen, "cannot write a temporary file: %s", strerror(errno));
		return -2;
	}
	int rc = cfg_load_file(cfg, path, raw, sizeof(raw));
	unlink(path);
	size_t plen = strlen(path);
	if (rc < 0 && strncmp(raw, path, plen) == 0)
		snprintf(err, errlen, "config.yaml%s", raw + plen);
	else if (rc < 0)
		snprintf(err, errlen, "%s", raw);
	return rc;
}

static void expect_get_at(int line, const struct cfg *cfg, const char *name, const char *want)
{
	char got[4096];
	if (cfg_get(cfg, name, got, sizeof(got)) != 0) {
		failures++;
		printf("FAIL: %s:%d: cfg_get(%s) failed\n", __FILE__, line, name);
	} else if (strcmp(got, want) != 0) {
		failures++;
		printf("FAIL: %s:%d: %s is '%s', want '%s'\n", __FILE__, line, name, got, want);
	}
}
#define expect_get(cfg, name, want) expect_get_at(__LINE__, cfg, name, want)

/* Expects loading `yaml` over the defaults to fail with exactly `want` (path "config.yaml"). */
static void expect_load_error_at(int line, const char *yaml, const char *want)
{
	struct cfg cfg;
	char err[2048];
	cfg_defaults(&cfg);
	int rc = load_text(&cfg, yaml, err, sizeof(err));
	if (rc != -1) {
		failures++;
		printf("FAIL: %s:%d: load returned %d (%s), want error '%s'\n", __FILE__, line, rc,
		       rc == 0 ? "ok" : err, want);
	} else if (strcmp(err, want) != 0) {
		failures++;
		printf("FAIL: %s:%d: error\n  got  '%s'\n  want '%s'\n", __FILE__, line, err, want);
	}
}
#define expect_load_error(yaml, want) expect_load_error_at(__LINE__, yaml, want)

/* Expects cfg_set(assignment) over the defaults to fail with exactly `want`. */
static void expect_set_error_at(int line, const char *assignment, const char *want)
{
	struct cfg cfg;
	char err[2048];
	cfg_defaults(&cfg);
	if (cfg_set(&cfg, assignment, err, sizeof(err)) != -1) {
		failures++;
		printf("FAIL: %s:%d: cfg_set(%s) succeeded, want '%s'\n", __FILE__, line,
		       assignment, want);
	} else if (strcmp(err, want) != 0) {
		failures++;
		printf("FAIL: %s:%d: cfg_set error\n  got  '%s'\n  want '%s'\n", __FILE__, line,
		       err, want);
	}
}
#define expect_set_error(assignment, want) expect_set_error_at(__LINE__, assignment, want)

/* Applies `assignment` over the defaults and expects option `name` to read back as `want`. */
static void expect_set_at(int line, const char *assignment, const char *name, const char *want)
{
	struct cfg cfg;
	char err[2048];
	cfg_defaults(&cfg);
	if (cfg_set(&cfg, assignment, err, sizeof(err)) != 0) {
		failures++;
		printf("FAIL: %s:%d: cfg_set(%s): %s\n", __FILE__, line, assignment, err);
		return;
	}
	expect_get_at(line, &cfg, name, want);
}
#define expect_set(assignment, name, want) expect_set_at(__LINE__, assignment, name, want)

struct dump {
	char names[64][64];   /* option names in cfg_foreach order */
	char values[64][256]; /* their values, truncated to fit (tests use short ones) */
	int n;
};

static void dump_one(const char *name, const char *value, void *arg)
{
	struct dump *d = arg;
	if (d->n < 64) {
		snprintf(d->names[d->n], sizeof(d->names[0]), "%s", name);
		snprintf(d->values[d->n], sizeof(d->values[0]), "%s", value);
	}
	d->n++;
}

/* True when `text` (which starts with '\n') sets `key` in the block of top-level `section`. */
static int file_sets(const char *text, const char *section, const char *key)
{
	char head[80], line[80];
	snprintf(head, sizeof(head), "\n%.32s:\n", section);
	snprintf(line, sizeof(line), "\n  %.32s:", key);
	const char *block = strstr(text, head);
	if (block == NULL)
		return 0;
	/* The block ends before the next line starting in column 1 with other than '#'. */
	const char *end = block + strlen(head) - 1;
	while (end != NULL && (end[1] == ' ' || end[1] == '#' || end[1] == '\n'))
		end = strchr(end + 1, '\n');
	const char *at = strstr(block, line);
	return at != NULL && (end == NULL || at < end);
}

static void test_defaults(void)
{
	struct cfg cfg;
	char out[64];
	struct dump d = {0};

	cfg_defaults(&cfg);
	expect_get(&cfg, "server.bind", "127.0.0.1");
	expect_get(&cfg, "server.port", "6379");
	expect_get(&cfg, "server.threads", "0");
	expect_get(&cfg, "server.pin_threads", "no");
	expect_get(&cfg, "server.requirepass", "");
	expect_get(&cfg, "server.databases", "16");
	expect_get(&cfg, "server.max_bulk_len", "536870912");
	expect_get(&cfg, "server.max_inline_len", "65536");
	expect_get(&cfg, "storage.dir", "./data");
	expect_get(&cfg, "storage.durability", "fsync");
	expect_get(&cfg, "storage.segment_size", "268435456");
	expect_get(&cfg, "storage.gc_live_ratio", "0.5");
	expect_get(&cfg, "log.level", "info");
	expect_get(&cfg, "log.file", "");
	expect_get(&cfg, "server.busy_reply_threshold_ms", "5000");
	CHECK(cfg.server.port == 6379 && cfg.storage.durability == CFG_DURABILITY_FSYNC &&
	          cfg.log.level == 2 && cfg.storage.segment_size == 256u << 20,
	      "defaults in the struct");

	expect_get(&cfg, "storage.cache_size", "auto");
	expect_get(&cfg, "storage.index_cache_size", "auto");
	{
		struct cfg resolved = cfg;
		char note[256] = "";
		cfg_resolve_auto(&resolved, note, sizeof(note));
		CHECK(
		    resolved.storage.cache_size >= CFG_AUTO_MIN &&
		        resolved.storage.index_cache_size >= CFG_AUTO_MIN && note[0] != '\0',
		    "auto cache sizes resolve to at least %llu bytes and a note: %llu, %llu, '%s'",
		    CFG_AUTO_MIN, (unsigned long long)resolved.storage.cache_size,
		    (unsigned long long)resolved.storage.index_cache_size, note);
	}
	CHECK(cfg_get(&cfg, "server.prot", out, sizeof(out)) == -1, "cfg_get of an unknown key");
	CHECK(cfg_get(&cfg, "sever.port", out, sizeof(out)) == -1, "cfg_get of an unknown section");
	CHECK(cfg_get(&cfg, "port", out, sizeof(out)) == -1, "cfg_get without a section");
	CHECK(cfg_get(&cfg, "server.port.x", out, sizeof(out)) == -1, "cfg_get with two dots");

	cfg_foreach(&cfg, dump_one, &d);
	CHECK(d.n == 29, "cfg_foreach visits %d options, want 29", d.n);
	CHECK(d.n > 0 && strcmp(d.names[0], "server.bind") == 0, "first option is server.bind");
	for (int i = 0; i < d.n && i < 64; i++) {
		CHECK(cfg_get(&cfg, d.names[i], out, sizeof(out)) == 0 &&
		          strncmp(out, d.values[i], sizeof(out) - 1) == 0,
		      "cfg_get(%s) agrees with cfg_foreach", d.names[i]);
		for (int j = 0; j < i; j++)
			CHECK(strcmp(d.names[i], d.names[j]) != 0, "%s listed twice", d.names[i]);
	}

	CHECK(strcmp(cfg_durability_name(CFG_DURABILITY_WRITE), "write") == 0, "durability name");
	CHECK(strcmp(cfg_durability_name(CFG_DURABILITY_NONE), "none") == 0, "durability name");
}

/* The repository's config.yaml lists every option with exactly its default. */
static void test_repo_config(void)
{
	const char *src = getenv("RINGKV_SRC_DIR");
	char path[4096], err[2048], text[65536];
	struct cfg defaults, loaded;
	struct dump want = {0}, got = {0};

	snprintf(path, sizeof(path), "%s/config.yaml", src != NULL && src[0] != '\0' ? src : ".");
	cfg_defaults(&defaults);
	cfg_defaults(&loaded);
	if (cfg_load_file(&loaded, path, err, sizeof(err)) != 0) {
		CHECK(0, "loading %s: %s", path, err);
		return;
	}
	cfg_foreach(&defaults, dump_one, &want);
	cfg_foreach(&loaded, dump_one, &got);
	for (int i = 0; i < want.n && i < 64; i++)
		CHECK(strcmp(want.values[i], got.values[i]) == 0, "%s: %s sets '%s', default '%s'",
		      want.names[i], path, got.values[i], want.values[i]);

	FILE *f = fopen(path, "r");
	size_t len = f != NULL ? fread(text + 1, 1, sizeof(text) - 2, f) : 0;
	if (f != NULL)
		fclose(f);
	text[0] = '\n';
	text[len + 1] = '\0';
	for (int i = 0; i < want.n && i < 64; i++) {
		char section[64], *key;
		snprintf(section, sizeof(section), "%s", want.names[i]);
		key = strchr(section, '.');
		*key++ = '\0';
		CHECK(file_sets(text, section, key), "%s does not list %s", path, want.names[i]);
	}
}

static void test_full_file(void)
{
	struct cfg cfg;
	char err[2048];
	static const char yaml[] = "# every option, none at its default\n"
	                           "server:\n"
	                           "  bind: 0.0.0.0 ::1\n"
	                           "  port: \"7000\"\n"
	                           "  threads: 4\n"
	                           "  pin_threads: on\n"
	                           "  max_clients: 50\n"
	                           "  databases: 4\n"
	                           "  requirepass: \"a b\"\n"
	                           "  timeout_s: 300\n"
	                           "  tcp_backlog: 128\n"
	                           "  max_bulk_len: 1g\n"
	                           "  max_multibulk_len: 1000\n"
	                           "  max_inline_len: 1KB\n"
	                           "  output_buffer_limit: 2Gb\n"
	                           "  msg_queue_size: 16\n"
	                           "storage:\n"
	                           "  dir: '/var/lib/ringkv'\n"
	                           "  durability: write\n"
	                           "  segment_size: 1048576\n"
	                           "  inline_max: 0\n"
	                           "  cache_size: 3m\n"
	                           "  index_cache_size: 64gb\n"
	                           "  gc_live_ratio: 0.25\n"
	                           "uring:\n"
	                           "  entries: 32768\n"
	                           "  busy_poll_us: 0\n"
	                           "  buf_ring_entries: 0\n"
	                           "  buf_size: 512\n"
	                           "log: {level: debug, file: /tmp/ringkv.log}\n";

	cfg_defaults(&cfg);
	if (load_text(&cfg, yaml, err, sizeof(err)) != 0) {
		CHECK(0, "full file: %s", err);
		return;
	}
	expect_get(&cfg, "server.bind", "0.0.0.0 ::1");
	expect_get(&cfg, "server.port", "7000");
	expect_get(&cfg, "server.threads", "4");
	expect_get(&cfg, "server.pin_threads", "yes");
	expect_get(&cfg, "server.max_clients", "50");
	expect_get(&cfg, "server.databases", "4");
	expect_get(&cfg, "server.requirepass", "a b");
	expect_get(&cfg, "server.timeout_s", "300");
	expect_get(&cfg, "server.tcp_backlog", "128");
	expect_get(&cfg, "server.max_bulk_len", "1073741824");
	expect_get(&cfg, "server.max_multibulk_len", "1000");
	expect_get(&cfg, "server.max_inline_len", "1024");
	expect_get(&cfg, "server.output_buffer_limit", "2147483648");
	expect_get(&cfg, "server.msg_queue_size", "16");
	expect_get(&cfg, "storage.dir", "/var/lib/ringkv");
	expect_get(&cfg, "storage.durability", "write");
	expect_get(&cfg, "storage.segment_size", "1048576");
	expect_get(&cfg, "storage.inline_max", "0");
	expect_get(&cfg, "storage.cache_size", "3145728");
	expect_get(&cfg, "storage.index_cache_size", "68719476736");
	expect_get(&cfg, "storage.gc_live_ratio", "0.25");
	expect_get(&cfg, "uring.entries", "32768");
	expect_get(&cfg, "uring.busy_poll_us", "0");
	expect_get(&cfg, "uring.buf_ring_entries", "0");
	expect_get(&cfg, "uring.buf_size", "512");
	expect_get(&cfg, "log.level", "debug");
	expect_get(&cfg, "log.file", "/tmp/ringkv.log");
	CHECK(cfg.server.pin_threads && cfg.storage.durability == CFG_DURABILITY_WRITE &&
	          cfg.log.level == 3 && cfg.storage.gc_live_ratio == 0.25,
	      "full file, struct fields");
}

static void test_partial_and_empty_files(void)
{
	static const char *const no_options[] = {
	    "",      "\n\n",      "# only a comment\n   # and another\n",
	    "---\n", "server:\n", "server: {}\nlog: ~\n",
	};
	struct cfg cfg;
	char err[2048];

	for (size_t i = 0; i < sizeof(no_options) / sizeof(no_options[0]); i++) {
		cfg_defaults(&cfg);
		CHECK(cfg_set(&cfg, "server.port=7000", err, sizeof(err)) == 0, "%s", err);
		int rc = load_text(&cfg, no_options[i], err, sizeof(err));
		CHECK(rc == 0, "file '%s' should load: %s", no_options[i], err);
		expect_get(&cfg, "server.port", "7000");
		expect_get(&cfg, "storage.dir", "./data");
	}

	cfg_defaults(&cfg);
	CHECK(cfg_set(&cfg, "server.port=7000", err, sizeof(err)) == 0, "%s", err);
	CHECK(load_text(&cfg, "server:\n  bind: 10.0.0.1\n", err, sizeof(err)) == 0, "%s", err);
	expect_get(&cfg, "server.port", "7000");
	expect_get(&cfg, "server.bind", "10.0.0.1");

	/* Empty and null values are "" for strings; a quoted "null" is the text. */
	cfg_defaults(&cfg);
	CHECK(load_text(&cfg, "server:\n  bind:\n  requirepass: null\nlog:\n  file: \"null\"\n",
	                err, sizeof(err)) == 0,
	      "%s", err);
	expect_get(&cfg, "server.bind", "");
	expect_get(&cfg, "server.requirepass", "");
	expect_get(&cfg, "log.file", "null");
}

static void test_sizes(void)
{
	static const struct {
		const char *value;
		const char *bytes;
	} sizes[] = {
	    {"1048576", "1048576"}, {"1024k", "1048576"},        {"1024KB", "1048576"},
	    {"2m", "2097152"},      {"2Mb", "2097152"},          {"1g", "1073741824"},
	    {"1GB", "1073741824"},  {"1024gb", "1099511627776"},
	};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char assignment[64];
		snprintf(assignment, sizeof(assignment), "storage.cache_size=%s", sizes[i].value);
		expect_set(assignment, "storage.cache_size", sizes[i].bytes);
	}
	expect_set("storage.cache_size=auto", "storage.cache_size", "auto");
	expect_set("storage.inline_max=4k", "storage.inline_max", "4096");
	expect_set("storage.segment_size=64gb", "storage.segment_size", "68719476736");

	expect_set_error(
	    "storage.cache_size=1 mb",
	    "--set storage.cache_size=1 mb: storage.cache_size: expected a size (bytes, "
	    "or a number with k/m/g suffix) or auto, got '1 mb'");
	expect_set_error("storage.cache_size=-1",
	                 "--set storage.cache_size=-1: storage.cache_size: expected a size (bytes, "
	                 "or a number with k/m/g suffix) or auto, got '-1'");
	expect_set_error(
	    "storage.cache_size=1tb",
	    "--set storage.cache_size=1tb: storage.cache_size: expected a size (bytes, "
	    "or a number with k/m/g suffix) or auto, got '1tb'");
	expect_set_error("storage.cache_size=1025gb", "--set storage.cache_size=1025gb: "
	                                              "storage.cache_size: 1025gb is out of range "
	                                              "(1mb..1024gb)");
	/* Overflow is out of range, never wrapped: 2^64 bytes, 2^34 gb, 2^64 + 1024. */
	expect_set_error("storage.cache_size=18446744073709551616",
	                 "--set storage.cache_size=18446744073709551616: storage.cache_size: "
	                 "18446744073709551616 is out of range (1mb..1024gb)");
	expect_set_error("storage.cache_size=17179869184g",
	                 "--set storage.cache_size=17179869184g: storage.cache_size: "
	                 "17179869184g is out of range (1mb..1024gb)");
	expect_set_error("storage.cache_size=18014398509481985k",
	                 "--set storage.cache_size=18014398509481985k: storage.cache_size: "
	                 "18014398509481985k is out of range (1mb..1024gb)");
	expect_set_error("server.port=99999999999999999999",
	                 "--set server.port=99999999999999999999: server.port: "
	                 "99999999999999999999 is out of range (1..65535)");
	expect_set_error("server.port=4294973375",
	                 "--set server.port=4294973375: server.port: 4294973375 is out of range "
	                 "(1..65535)");
}

static void test_set(void)
{
	expect_set("server.port=7000", "server.port", "7000");
	expect_set("server.port=+7000", "server.port", "7000");
	expect_set("server.pin_threads=yes", "server.pin_threads", "yes");
	expect_set("server.pin_threads=TRUE", "server.pin_threads", "yes");
	expect_set("server.pin_threads=off", "server.pin_threads", "no");
	expect_set("server.requirepass=a b=c", "server.requirepass", "a b=c");
	expect_set("server.bind=", "server.bind", "");
	expect_set("storage.durability=none", "storage.durability", "none");
	expect_set("storage.gc_live_ratio=0.05", "storage.gc_live_ratio", "0.05");
	expect_set("storage.gc_live_ratio=.95", "storage.gc_live_ratio", "0.95");
	expect_set("log.level=debug", "log.level", "debug");
	expect_set("log.level=error", "log.level", "error");
	expect_set("uring.buf_ring_entries=0", "uring.buf_ring_entries", "0");
	expect_set("uring.buf_ring_entries=32768", "uring.buf_ring_entries", "32768");

	expect_set_error("server.port=abc",
	                 "--set server.port=abc: server.port: expected an integer, got 'abc'");
	expect_set_error(
	    "server.port=",
	    "--set server.port=: server.port: expected an integer, got an empty value");
	expect_set_error("server.port= 7000",
	                 "--set server.port= 7000: server.port: expected an integer, got ' 7000'");
	expect_set_error("server.port=0",
	                 "--set server.port=0: server.port: 0 is out of range (1..65535)");
	expect_set("server.databases=65536", "server.databases", "65536");
	expect_set_error("server.databases=0",
	                 "--set server.databases=0: server.databases: 0 is out of range (1..65536)");
	expect_set_error("server.databases=65537", "--set server.databases=65537: server.databases:"
	                                           " 65537 is out of range (1..65536)");
	expect_set_error("server.port", "--set server.port: expected section.key=value");
	expect_set_error("port=1", "--set port=1: 'port' is not section.key (e.g. server.port)");
	expect_set_error("sever.port=1", "--set sever.port=1: unknown section 'sever' (sections: "
	                                 "server, storage, uring, log)");
	expect_set_error("server.prot=1",
	                 "--set server.prot=1: server.prot: unknown option (did you mean 'port'?)");
	expect_set_error("server.dir=/x",
	                 "--set server.dir=/x: server.dir: unknown option (did you mean "
	                 "'storage.dir'?)");
	expect_set_error("server.zzzzzz=1", "--set server.zzzzzz=1: server.zzzzzz: unknown option");
	expect_set_error("server.pin_threads=maybe",
	                 "--set server.pin_threads=maybe: server.pin_threads: expected a boolean "
	                 "(true/false), got 'maybe'");
	expect_set_error("storage.durability=FSYNC",
	                 "--set storage.durability=FSYNC: storage.durability: expected one of "
	                 "fsync|write|none, got 'FSYNC'");
	expect_set_error("log.level=verbose", "--set log.level=verbose: log.level: expected one "
	                                      "of error|warn|info|debug, got 'verbose'");
	expect_set_error("storage.gc_live_ratio=0.99",
	                 "--set storage.gc_live_ratio=0.99: "
	                 "storage.gc_live_ratio: 0.99 is out of range "
	                 "(0.05..0.95)");
	expect_set_error("storage.gc_live_ratio=nan",
	                 "--set storage.gc_live_ratio=nan: "
	                 "storage.gc_live_ratio: expected a number, got "
	                 "'nan'");
	expect_set_error("storage.gc_live_ratio=0.5x",
	                 "--set storage.gc_live_ratio=0.5x: "
	                 "storage.gc_live_ratio: expected a number, got "
	                 "'0.5x'");
	expect_set_error("server.msg_queue_size=1000",
	                 "--set server.msg_queue_size=1000: "
	                 "server.msg_queue_size: 1000 is not a power of "
	                 "two");
	expect_set_error("uring.entries=32", "--set uring.entries=32: uring.entries: 32 is out of "
	                                     "range (64..32768)");
	expect_set_error("uring.entries=100",
	                 "--set uring.entries=100: uring.entries: 100 is not a power of two");
	expect_set_error("uring.buf_ring_entries=3", "--set uring.buf_ring_entries=3: "
	                                             "uring.buf_ring_entries: 3 is not a power of "
	                                             "two (or 0)");
	expect_set_error("storage.segment_size=1048577", "--set storage.segment_size=1048577: "
	                                                 "storage.segment_size: 1048577 is not a "
	                                                 "multiple of 4096");
	expect_set_error("storage.segment_size=65g", "--set storage.segment_size=65g: "
	                                             "storage.segment_size: 65g is out of range "
	                                             "(1mb..64gb)");
	expect_set_error("uring.buf_size=2m",
	                 "--set uring.buf_size=2m: uring.buf_size: 2m is out of range (512..1mb)");

	/* Strings: the buffer's size minus the NUL fits, one more byte is an error. */
	char assignment[400], want[600];
	struct cfg cfg;
	cfg_defaults(&cfg);
	snprintf(assignment, sizeof(assignment), "server.bind=%0255d", 0);
	CHECK(cfg_set(&cfg, assignment, want, sizeof(want)) == 0, "255-byte bind: %s", want);
	CHECK(strlen(cfg.server.bind) == 255, "255-byte bind kept whole");
	snprintf(assignment, sizeof(assignment), "server.bind=%0256d", 0);
	snprintf(want, sizeof(want),
	         "--set %s: server.bind: the value is 256 bytes, longer than the limit of 255",
	         assignment);
	expect_set_error(assignment, want);
}

static void test_load_errors(void)
{
	expect_load_error("server:\n  port: 1\n  a: b: c\n",
	                  "config.yaml:3:7: malformed YAML: mapping values are not allowed in this "
	                  "context");
	expect_load_error("server:\n  port: 1\n server: 2\n",
	                  "config.yaml:3:2: malformed YAML: did not find expected key (while "
	                  "parsing a block mapping at line 1, column 1)");
	expect_load_error("server:\n\tport: 1\n",
	                  "config.yaml:2:1: malformed YAML: found character that cannot start any "
	                  "token (while scanning for the next token at line 2, column 1)");
	expect_load_error("server:\n  port: \xc3\x28\n",
	                  "config.yaml:2:10: malformed YAML: invalid trailing UTF-8 octet (byte "
	                  "0x28)");
	expect_load_error("server:\n  port: *p\n",
	                  "config.yaml:2:9: malformed YAML: found undefined alias");

	expect_load_error(
	    "server:\n  port: 1\n\nsever:\n  port: 2\n",
	    "config.yaml:4:1: unknown section 'sever' (sections: server, storage, uring, "
	    "log)");
	expect_load_error("server:\n  port: 1\n  bind: x\n  prot: 5\n",
	                  "config.yaml:4:3: server.prot: unknown option (did you mean 'port'?)");
	expect_load_error("storage:\n  durabilty: none\n",
	                  "config.yaml:2:3: storage.durabilty: unknown option (did you mean "
	                  "'durability'?)");
	expect_load_error("log:\n  dir: x\n",
	                  "config.yaml:2:3: log.dir: unknown option (did you mean 'storage.dir'?)");
	expect_load_error("server:\n  bind: x\n  threads: 2\n  tcp_backlog: 5\n  port: abc\n",
	                  "config.yaml:5:9: server.port: expected an integer, got 'abc'");
	expect_load_error("server:\n  port: 70000\n",
	                  "config.yaml:2:9: server.port: 70000 is out of range (1..65535)");
	expect_load_error("server:\n  port: -1\n",
	                  "config.yaml:2:9: server.port: -1 is out of range (1..65535)");
	expect_load_error("server:\n  port: 6379.5\n",
	                  "config.yaml:2:9: server.port: expected an integer, got '6379.5'");
	expect_load_error("server:\n  port:\n  bind: x\n",
	                  "config.yaml:2:8: server.port: expected an integer, got an empty value");
	expect_load_error("server:\n  port: ~\n",
	                  "config.yaml:2:9: server.port: expected an integer, got an empty value");
	expect_load_error("server:\n  port: [1, 2]\n",
	                  "config.yaml:2:9: server.port: expected an integer, got a sequence");
	expect_load_error("server:\n  bind:\n    a: 1\n",
	                  "config.yaml:3:5: server.bind: expected a string, got a mapping");
	expect_load_error(
	    "server:\n  pin_threads: maybe\n",
	    "config.yaml:2:16: server.pin_threads: expected a boolean (true/false), got "
	    "'maybe'");
	expect_load_error(
	    "server:\n  pin_threads:\n",
	    "config.yaml:2:15: server.pin_threads: expected a boolean (true/false), got "
	    "an empty value");
	expect_load_error(
	    "storage:\n  cache_size: 12q\n",
	    "config.yaml:2:15: storage.cache_size: expected a size (bytes, or a number "
	    "with k/m/g suffix) or auto, got '12q'");
	expect_load_error("storage:\n  cache_size: 99999999999gb\n",
	                  "config.yaml:2:15: storage.cache_size: 99999999999gb is out of range "
	                  "(1mb..1024gb)");
	expect_load_error("storage:\n  segment_size: 1000000\n",
	                  "config.yaml:2:17: storage.segment_size: 1000000 is out of range "
	                  "(1mb..64gb)");
	expect_load_error(
	    "storage:\n  segment_size: 1000k\n",
	    "config.yaml:2:17: storage.segment_size: 1000k is out of range (1mb..64gb)");
	expect_load_error(
	    "storage:\n  segment_size: 1049600\n",
	    "config.yaml:2:17: storage.segment_size: 1049600 is not a multiple of 4096");
	expect_load_error("server:\n  msg_queue_size: 1000\n",
	                  "config.yaml:2:19: server.msg_queue_size: 1000 is not a power of two");
	expect_load_error("uring:\n  buf_ring_entries: 100\n",
	                  "config.yaml:2:21: uring.buf_ring_entries: 100 is not a power of two (or "
	                  "0)");
	expect_load_error(
	    "storage:\n  durability: always\n",
	    "config.yaml:2:15: storage.durability: expected one of fsync|write|none, got "
	    "'always'");
	expect_load_error("log:\n  level: verbose\n",
	                  "config.yaml:2:10: log.level: expected one of error|warn|info|debug, got "
	                  "'verbose'");
	expect_load_error(
	    "storage:\n  gc_live_ratio: 1\n",
	    "config.yaml:2:18: storage.gc_live_ratio: 1 is out of range (0.05..0.95)");

	expect_load_error("server:\n  port: 1\n  bind: x\n  port: 2\n",
	                  "config.yaml:4:3: server.port: duplicate key (first set at line 2)");
	expect_load_error("server:\n  port: 1\nlog:\n  level: info\nserver:\n  bind: x\n",
	                  "config.yaml:5:1: duplicate section 'server' (first at line 1)");

	expect_load_error("- server\n- storage\n",
	                  "config.yaml:1:1: the top level must be a mapping of sections (server, "
	                  "storage, uring, log), got a sequence");
	expect_load_error("server\n",
	                  "config.yaml:1:1: the top level must be a mapping of sections "
	                  "(server, storage, uring, log), got 'server'");
	expect_load_error("server: 6379\n", "config.yaml:1:9: section 'server' must be a mapping "
	                                    "of options (key: value), got '6379'");
	expect_load_error("log:\n  - level\n",
	                  "config.yaml:2:3: section 'log' must be a mapping of "
	                  "options (key: value), got a sequence");
	expect_load_error("server:\n  [a]: 1\n",
	                  "config.yaml:2:3: server: expected an option name, got a sequence");
	expect_load_error("server:\n  port: 1\n---\nserver:\n  port: 2\n",
	                  "config.yaml:3:1: only one YAML document is allowed in a config file");
	expect_load_error("server:\n  requirepass: \"a\\0b\"\n",
	                  "config.yaml:2:16: server.requirepass: the value contains a NUL byte");

	char yaml[600], want[300];
	snprintf(yaml, sizeof(yaml), "server:\n  bind: \"%0256d\"\n", 0);
	snprintf(want, sizeof(want),
	         "config.yaml:2:9: server.bind: the value is 256 bytes, longer than the limit of "
	         "255");
	expect_load_error(yaml, want);
}

static void test_unreadable_files(void)
{
	struct cfg cfg;
	char err[2048];
	const char *dir = getenv("TMPDIR");

	cfg_defaults(&cfg);
	CHECK(cfg_load_file(&cfg, "/nonexistent/ringkv.yaml", err, sizeof(err)) == -1 &&
	          strcmp(err, "/nonexistent/ringkv.yaml: No such file or directory") == 0,
	      "missing file: '%s'", err);
	if (dir == NULL || dir[0] == '\0')
		dir = "/tmp";
	char want[4096];
	snprintf(want, sizeof(want), "%s: Is a directory", dir);
	CHECK(cfg_load_file(&cfg, dir, err, sizeof(err)) == -1 && strcmp(err, want) == 0,
	      "directory: '%s'", err);
}

int main(void)
{
	test_defaults();
	test_repo_config();
	test_full_file();
	test_partial_and_empty_files();
	test_sizes();
	test_set();
	test_load_errors();
	test_unreadable_files();
	if (failures != 0) {
		printf("test_config: %d checks failed\n", failures);
		return 1;
	}
	return 0;
}
