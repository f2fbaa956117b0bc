/* test_cmd_util: the command layer's pure helpers parse and format numbers and
 * match globs exactly as Redis does (string2ll, string2ld, INCRBYFLOAT's
 * output, stringmatchlen); cmd_string_length_or_fail (Redis's
 * checkStringLength) refuses a too-long string on every command that checks
 * it, before anything is written, through the command layer run in-process
 * with a lowered cmd_max_string (the part skips on tmpfs). */
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <string.h>

#include "service/cmd.h"
#include "service/shard.h"
#include "tests/unit/testutil.h"

static bool parse_int(const char *s, int64_t *v)
{
	return resp_parse_int64((const uint8_t *)s, strlen(s), v);
}

static bool glob(const char *pat, const char *s)
{
	return cmd_glob_match((const uint8_t *)pat, strlen(pat), (const uint8_t *)s, strlen(s),
	                      false);
}

static void test_int64(void)
{
	static const struct {
		const char *s;
		bool ok;
		int64_t v;
	} cases[] = {
	    {"0", true, 0},
	    {"1", true, 1},
	    {"-1", true, -1},
	    {"9223372036854775807", true, INT64_MAX},
	    {"-9223372036854775808", true, INT64_MIN},
	    {"9223372036854775808", false, 0},
	    {"-9223372036854775809", false, 0},
	    {"18446744073709551616", false, 0},
	    {"", false, 0},
	    {"-", false, 0},
	    {"-0", false, 0},
	    {"01", false, 0},
	    {"+1", false, 0},
	    {" 1", false, 0},
	    {"1 ", false, 0},
	    {"1a", false, 0},
	    {"123456789012345678901", false, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t v = 42;
		bool ok = parse_int(cases[i].s, &v);
		CHECK(ok == cases[i].ok, "parse '%s': ok=%d", cases[i].s, ok);
		if (ok && cases[i].ok)
			CHECK(v == cases[i].v, "parse '%s' = %lld", cases[i].s, (long long)v);
	}
}

static void test_long_double(void)
{
	static const struct {
		const char *in;
		const char *out; /* NULL: the parse must fail */
	} cases[] = {
	    {"1.5", "1.5"}, {"10.50", "10.5"}, {"3.0e3", "3000"},  {"-0", "0"},
	    {"0.1", "0.1"}, {"5", "5"},        {"-1.25", "-1.25"}, {"1e400", NULL},
	    {" 1", NULL},   {"1 ", NULL},      {"nan", NULL},      {"abc", NULL},
	    {"", NULL},     {"1e-5000", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		long double v = 0;
		bool ok = cmd_parse_ld((const uint8_t *)cases[i].in, strlen(cases[i].in), &v);
		if (strcmp(cases[i].in, "1e400") == 0) {
			/* in range for a long double: Redis accepts it too */
			CHECK(ok, "1e400 parses as a long double");
			continue;
		}
		CHECK(ok == (cases[i].out != NULL), "parse '%s': ok=%d", cases[i].in, ok);
		if (!ok || cases[i].out == NULL)
			continue;
		char buf[5200];
		size_t n = cmd_format_ld(buf, sizeof(buf), v);
		CHECK(n == strlen(cases[i].out) && strcmp(buf, cases[i].out) == 0,
		      "format %s -> '%s', want '%s'", cases[i].in, buf, cases[i].out);
	}
	/* Redis's string2ld consumes all len bytes: a NUL inside is not the end
	 * (SET k "1\0", INCRBYFLOAT k 1: "value is not a valid float"). */
	static const struct {
		const char *in;
		size_t len;
	} with_nul[] = {{"1\0", 2}, {"\0abc", 4}, {"1\0abc", 5}, {"\0", 1}, {"1.5\0x", 5}};
	for (size_t i = 0; i < sizeof(with_nul) / sizeof(with_nul[0]); i++) {
		long double v = 0;
		CHECK(!cmd_parse_ld((const uint8_t *)with_nul[i].in, with_nul[i].len, &v),
		      "a value with a NUL inside is refused (case %zu, parsed %Lg)", i, v);
	}
	char buf[5200];
	CHECK(cmd_format_ld(buf, sizeof(buf), 1.0L / 0.0L) == 0, "infinity is not formatted");
	CHECK(cmd_format_ld(buf, 4, 12345.0L) == 0, "a buffer too small is refused");
	/* INCRBYFLOAT 10.5 + 0.1: Redis replies 10.6 */
	CHECK(cmd_format_ld(buf, sizeof(buf), 10.5L + 0.1L) == 4 && strcmp(buf, "10.6") == 0,
	      "10.5 + 0.1 -> %s", buf);
}

static void test_glob(void)
{
	/* As Redis's stringmatchlen: an empty string matches nothing, not even "*"
	 * (KEYS and SCAN treat a lone "*" as "every key" before matching). */
	CHECK(!glob("*", ""), "* does not match an empty string");
	CHECK(glob("*", "anything"), "* matches all");
	CHECK(glob("h?llo", "hello") && glob("h?llo", "hallo") && !glob("h?llo", "hllo"), "?");
	CHECK(glob("h*llo", "hllo") && glob("h*llo", "heeeello"), "* inside");
	CHECK(glob("h[ae]llo", "hello") && glob("h[ae]llo", "hallo") && !glob("h[ae]llo", "hillo"),
	      "class");
	CHECK(glob("h[^e]llo", "hallo") && !glob("h[^e]llo", "hello"), "negated class");
	CHECK(glob("h[a-b]llo", "hbllo") && !glob("h[a-b]llo", "hcllo"), "range");
	CHECK(glob("h[b-a]llo", "hallo"), "reversed range");
	CHECK(glob("h\\*llo", "h*llo") && !glob("h\\*llo", "hello"), "escaped *");
	CHECK(glob("user:{1}:*", "user:{1}:name"), "braces are literal");
	CHECK(!glob("a*b", "acd"), "no match");
	CHECK(glob("a[", "a[") == false && glob("a[b", "ab"), "unclosed class ends the pattern");
	CHECK(cmd_glob_match((const uint8_t *)"MAX*", 4, (const uint8_t *)"maxclients", 10, true),
	      "nocase");
	/* Redis's skip rule keeps this fast; a naive matcher takes exponential time. */
	const char *evil = "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
	char s[200];
	memset(s, 'a', sizeof(s) - 1);
	s[sizeof(s) - 1] = '\0';
	CHECK(!glob(evil, s), "pathological pattern does not match");
}

/* ---- the string-length check, through the command layer --------------- */

#define N_PX     2
#define MAX_STR  16 /* cmd_max_string while the in-process server runs */
#define TOO_BIG  "-ERR string exceeds maximum allowed size (proto-max-bulk-len)"
#define AT_LIMIT "0123456789abcdef"  /* MAX_STR bytes */
#define OVER     "0123456789abcdefg" /* MAX_STR + 1 bytes */

/* A step run on one proactor while the main thread waits. */
struct px_job {
	void (*fn)(struct px_job *job);
	struct net_config *nc;
	int ret;
	char err[512];
	atomic_bool done;
};

static void px_job_run(void *arg)
{
	struct px_job *job = arg;
	job->fn(job);
	atomic_store(&job->done, true);
}

/* Runs job->fn on proactor i and waits (exits 1 after 60 s: a stuck loop). */
static void run_on_px(struct pool *pool, unsigned i, struct px_job *job)
{
	atomic_init(&job->done, false);
	pool_run_on(pool, i, px_job_run, job);
	double deadline = test_now() + 60;
	while (!atomic_load(&job->done)) {
		if (test_now() > deadline) {
			fprintf(stderr, "FAIL: a step on proactor %u did not finish in 60 s\n", i);
			_exit(1);
		}
		sched_yield();
	}
}

static void job_net_start(struct px_job *job)
{
	job->ret = net_start(px_current(), job->nc, job->err, sizeof(job->err));
}

static void job_net_stop(struct px_job *job)
{
	(void)job;
	net_stop_accepting(px_current());
	net_close_all(px_current());
}

/* The reply as one string: "+OK", "-ERR ...", ":5", "$value", "$nil". */
static void reply_text(const redisReply *r, char *buf, size_t len)
{
	if (r == NULL)
		snprintf(buf, len, "(no reply)");
	else if (r->type == REDIS_REPLY_STATUS)
		snprintf(buf, len, "+%s", r->str);
	else if (r->type == REDIS_REPLY_ERROR)
		snprintf(buf, len, "-%s", r->str);
	else if (r->type == REDIS_REPLY_INTEGER)
		snprintf(buf, len, ":%lld", r->integer);
	else if (r->type == REDIS_REPLY_STRING)
		snprintf(buf, len, "$%.*s", (int)r->len, r->str);
	else if (r->type == REDIS_REPLY_NIL)
		snprintf(buf, len, "$nil");
	else
		snprintf(buf, len, "(reply type %d)", r->type);
}

/* Runs the command (NULL-terminated arguments) and checks its reply
 * (reply_text's form). */
static void expect(redisContext *rc, const char *want, ...)
{
	const char *argv[16];
	size_t argc = 0;
	va_list ap;
	va_start(ap, want);
	for (const char *a; argc < 16 && (a = va_arg(ap, const char *)) != NULL;)
		argv[argc++] = a;
	va_end(ap);
	redisReply *r = redisCommandArgv(rc, (int)argc, argv, NULL);
	char got[256], cmd[256] = "";
	reply_text(r, got, sizeof(got));
	for (size_t i = 0, used = 0; i < argc && used < sizeof(cmd); i++)
		used += (size_t)snprintf(cmd + used, sizeof(cmd) - used, "%s ", argv[i]);
	CHECK(strcmp(got, want) == 0, "%s-> %s, want %s", cmd, got, want);
	freeReplyObject(r);
}

/* Every command that creates a string refuses one over cmd_max_string with
 * Redis's error and changes nothing; at the limit it is accepted.  `k` holds
 * AT_LIMIT; `absent` does not exist. */
static void check_string_length(redisContext *rc, const char *k, const char *absent)
{
	expect(rc, "+OK", "SET", k, AT_LIMIT, NULL);
	expect(rc, TOO_BIG, "SET", k, OVER, NULL);
	expect(rc, TOO_BIG, "SET", k, OVER, "GET", NULL); /* the error alone, no old value */
	expect(rc, TOO_BIG, "SET", k, OVER, "XX", "EX", "100", NULL);
	/* the expire time is checked first, as Redis's setGenericCommand does */
	expect(rc, "-ERR invalid expire time in 'set' command", "SET", k, OVER, "EX", "0", NULL);
	expect(rc, TOO_BIG, "SETNX", absent, OVER, NULL);
	expect(rc, TOO_BIG, "SETEX", k, "100", OVER, NULL);
	expect(rc, "-ERR invalid expire time in 'setex' command", "SETEX", k, "0", OVER, NULL);
	expect(rc, TOO_BIG, "PSETEX", k, "100000", OVER, NULL);
	expect(rc, TOO_BIG, "GETSET", k, OVER, NULL);
	expect(rc, TOO_BIG, "MSET", absent, "x", k, OVER, NULL);
	expect(rc, TOO_BIG, "MSETNX", absent, "x", k, OVER, NULL);
	expect(rc, TOO_BIG, "SETRANGE", k, "10", "1234567", NULL); /* 10 + 7 bytes */
	expect(rc, TOO_BIG, "SETRANGE", absent, "16", "x", NULL);
	expect(rc, TOO_BIG, "APPEND", k, "x", NULL); /* refused inside the store update */
	expect(rc, "$" AT_LIMIT, "GET", k, NULL);
	expect(rc, ":-1", "TTL", k, NULL);
	expect(rc, ":0", "EXISTS", absent, NULL);
	/* within the limit */
	expect(rc, ":16", "SETRANGE", k, "10", "ABCDEF", NULL);
	expect(rc, ":16", "SETRANGE", k, "100", "", NULL); /* empty: never too long */
	expect(rc, ":16", "APPEND", absent, AT_LIMIT, NULL);
	expect(rc, "$" AT_LIMIT, "GETSET", absent, "v", NULL);
	expect(rc, ":0", "SETNX", absent, AT_LIMIT, NULL);
	expect(rc, ":1", "DEL", absent, NULL);
	expect(rc, ":1", "SETNX", absent, AT_LIMIT, NULL);
	expect(rc, ":1", "DEL", absent, NULL);
}

/* A key of `shard` ("len:N"). */
static void key_on_shard(unsigned shard, char *buf, size_t len)
{
	for (unsigned i = 0;; i++) {
		snprintf(buf, len, "len:%u", i);
		if (shard_of_key(buf, strlen(buf)) == shard)
			return;
	}
}

static void test_string_length(void)
{
	const char *tmp = test_disk_tmpdir();
	if (tmp == NULL) {
		printf("skipped the string-length checks (they need a disk data directory)\n");
		return;
	}
	char dir[512], err[1024], set[600];
	snprintf(dir, sizeof(dir), "%s/ringkv-test-cmd-util.XXXXXX", tmp);
	if (mkdtemp(dir) == NULL) {
		CHECK(false, "mkdtemp %s failed", dir);
		return;
	}
	struct cfg cfg;
	cfg_defaults(&cfg);
	snprintf(set, sizeof(set), "storage.dir=%s", dir);
	const char *sets[] = {set, "storage.durability=none", "storage.segment_size=4mb"};
	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
		if (cfg_set(&cfg, sets[i], err, sizeof(err)) < 0) {
			fprintf(stderr, "FAIL: %s\n", err);
			exit(1);
		}
	struct pool *pool = test_pool(N_PX, 1024, 0, 256);
	if (shard_open_all(pool, &cfg, err, sizeof(err)) < 0 ||
	    cmd_init(pool, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "FAIL: cannot start the command layer: %s\n", err);
		exit(1);
	}
	/* The protocol parser lets no argument longer than max_bulk_len in, so a
	 * lower limit behind it is what makes each command's check reachable. */
	cmd_max_string = MAX_STR;
	struct net_config nc = {
	    .bind = "127.0.0.1",
	    .backlog = 64,
	    .max_clients = 64,
	    .output_buffer_limit = 64ULL << 20,
	    .limits = {.max_bulk_len = cfg.server.max_bulk_len,
	               .max_multibulk_len = (uint64_t)cfg.server.max_multibulk_len,
	               .max_inline_len = cfg.server.max_inline_len},
	    .handler = cmd_handle,
	    .prefetch = cmd_prefetch,
	    .on_open = cmd_on_open,
	};
	struct px_job jobs[N_PX];
	for (unsigned i = 0; i < N_PX; i++) {
		jobs[i] = (struct px_job){.fn = job_net_start, .nc = &nc};
		run_on_px(pool, i, &jobs[i]);
		if (jobs[i].ret < 0) {
			fprintf(stderr, "FAIL: net_start on proactor %u: %s\n", i, jobs[i].err);
			exit(1);
		}
		nc.port = net_port(pool_px(pool, 0)); /* the others listen on proactor 0's port */
	}
	struct timeval tv = {10, 0};
	redisContext *rc = redisConnectWithTimeout("127.0.0.1", nc.port, tv);
	if (rc == NULL || rc->err) {
		fprintf(stderr, "FAIL: cannot connect: %s\n", rc ? rc->errstr : "out of memory");
		exit(1);
	}
	redisSetTimeout(rc, tv);
	char k[32], absent[32];
	/* One key per shard: one is on the connection's proactor, one on the other. */
	for (unsigned s = 0; s < shard_map.shards; s++) {
		key_on_shard(s, k, sizeof(k));
		snprintf(absent, sizeof(absent), "{%s}:absent", k); /* the same shard */
		check_string_length(rc, k, absent);
	}
	redisFree(rc);

	for (unsigned i = 0; i < N_PX; i++) {
		jobs[i] = (struct px_job){.fn = job_net_stop};
		run_on_px(pool, i, &jobs[i]);
	}
	double deadline = test_now() + 60;
	for (unsigned i = 0; i < N_PX; i++)
		while (cmd_inflight(i) > 0 && test_now() < deadline)
			usleep(1000);
	shard_close_all();
	pool_stop(pool);
	char rm[600];
	snprintf(rm, sizeof(rm), "rm -rf '%s'", dir);
	CHECK(system(rm) == 0, "%s failed", rm);
}

/* cmd_sha1_hex (script ids, redis.sha1hex): FIPS 180 examples, and lengths
 * around the 55/56/64-byte padding boundaries (digests from Python's hashlib). */
static void test_sha1(void)
{
	char hex[41];
	cmd_sha1_hex("", 0, hex);
	CHECK(strcmp(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709") == 0, "sha1('') %s", hex);
	cmd_sha1_hex("abc", 3, hex);
	CHECK(strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0, "sha1(abc) %s", hex);
	const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	cmd_sha1_hex(two, strlen(two), hex);
	CHECK(strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") == 0, "sha1(448 bits) %s",
	      hex);
	static const struct {
		size_t n;
		const char *hex;
	} cases[] = {
	    {55, "8ae2d46729cfe68ff927af5eec9c7d1b66d65ac2"},
	    {56, "636e2ec698dac903498e648bd2f3af641d3c88cb"},
	    {63, "6d942da0c4392b123528f2905c713a3ce28364bd"},
	    {64, "c6138d514ffa2135bfce0ed0b8fac65669917ec7"},
	    {65, "69bd728ad6e13cd76ff19751fde427b00e395746"},
	    {119, "41c89d06001bab4ab78736b44efe7ce18ce6ae08"},
	    {120, "d3dbd653bd8597b7475321b60a36891278e6a04a"},
	    {1000, "c9c960a0b925474fab83942cc27d504fc24ac37b"},
	};
	uint8_t data[1000];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i % 251);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cmd_sha1_hex(data, cases[i].n, hex);
		CHECK(strcmp(hex, cases[i].hex) == 0, "sha1 of %zu bytes: %s, want %s", cases[i].n,
		      hex, cases[i].hex);
	}
}

int main(void)
{
	test_int64();
	test_long_double();
	test_glob();
	test_string_length();
	test_sha1();
	return test_result();
}
