/* test_cmd_util: the command layer's pure helpers parse and format numbers and
 * match globs exactly as Redis does (string2ll, string2ld, INCRBYFLOAT's
 * output, stringmatchlen). */
#include <string.h>

#include "service/cmd.h"
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

int main(void)
{
	test_int64();
	test_long_double();
	test_glob();
	return test_result();
}
