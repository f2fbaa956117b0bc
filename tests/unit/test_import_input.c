/* test_import_input: ringkv-import's parsers (csv, tsv, jsonl, resp) — quoting, escapes, empty
 * and binary values, TTLs, headers, jsonl hashes and sets, and every kind of bad row with its
 * line, column and reason; each input read whole and again one byte per read. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests/unit/testutil.h"
#include "tools/import/input.h"

#define MAX_ROWS 16

/* What a parse produced: rows (copied) and error messages, in order. */
struct result {
	int n; /* entries */
	struct {
		int ret; /* 1 row, -EINVAL bad row, other: fatal */
		uint64_t line;
		char key[256], value[256];
		size_t key_len, value_len;
		int64_t ttl;
		size_t argc;
		int kind; /* enum in_kind */
		size_t n_items;
		char items[256]; /* the items, each followed by '|' */
		char msg[512];
	} e[MAX_ROWS];
};

struct feeder {
	int fd;
	const char *data;
	size_t len;
};

/* Writes the input one byte per write, so the reader sees every split. */
static void *feed_bytes(void *arg)
{
	struct feeder *f = arg;
	for (size_t i = 0; i < f->len; i++)
		if (write(f->fd, f->data + i, 1) != 1)
			break;
	close(f->fd);
	return NULL;
}

static void parse_fd(int fd, const struct in_options *opt, struct result *res)
{
	struct in_reader *r;
	memset(res, 0, sizeof(*res));
	if (in_open(&r, fd, opt) < 0) {
		fprintf(stderr, "in_open failed\n");
		exit(1);
	}
	for (;;) {
		struct in_row row;
		char err[512] = "";
		int ret = in_next(r, &row, err, sizeof(err));
		if (ret == 0 || res->n == MAX_ROWS)
			break;
		if (ret == -EINTR)
			continue;
		typeof(&res->e[0]) e = &res->e[res->n++];
		e->ret = ret;
		snprintf(e->msg, sizeof(e->msg), "%s", err);
		if (ret == 1) {
			e->line = row.line;
			e->argc = row.argc;
			e->ttl = row.ttl_s;
			e->key_len = row.key_len < 255 ? row.key_len : 255;
			e->value_len = row.value_len < 255 ? row.value_len : 255;
			if (row.key)
				memcpy(e->key, row.key, e->key_len);
			if (row.value)
				memcpy(e->value, row.value, e->value_len);
			e->kind = (int)row.kind;
			e->n_items = row.n_items;
			size_t o = 0;
			for (size_t i = 0; i < row.n_items && o < sizeof(e->items) - 1; i++) {
				size_t n = row.item_len[i];
				if (n > sizeof(e->items) - 2 - o)
					n = sizeof(e->items) - 2 - o;
				memcpy(e->items + o, row.item[i], n);
				o += n;
				e->items[o++] = '|';
			}
			e->items[o] = '\0';
		} else if (ret != -EINVAL) {
			break;
		}
	}
	in_close(r);
}

/* Index of the first entry that differs between a and b (field by field, so
 * padding does not count), or -1. */
static int first_difference(const struct result *a, const struct result *b)
{
	int n = a->n > b->n ? a->n : b->n;
	for (int i = 0; i < n; i++) {
		const typeof(a->e[0]) *x = &a->e[i], *y = &b->e[i];
		if (i >= a->n || i >= b->n || x->ret != y->ret || x->line != y->line ||
		    x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len) != 0 ||
		    x->value_len != y->value_len || memcmp(x->value, y->value, x->value_len) != 0 ||
		    x->ttl != y->ttl || x->argc != y->argc || x->kind != y->kind ||
		    x->n_items != y->n_items || strcmp(x->items, y->items) != 0 ||
		    strcmp(x->msg, y->msg) != 0)
			return i;
	}
	return -1;
}

/* Parses `len` bytes of `data` twice (whole, then one byte per read) and
 * checks both give the same result; returns the first. */
static void parse(enum in_format fmt, bool header, const char *data, size_t len, struct result *res)
{
	struct in_options opt = {.format = fmt, .header = header};
	int fd = memfd_create("input", 0);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || lseek(fd, 0, SEEK_SET) != 0) {
		perror("memfd");
		exit(1);
	}
	parse_fd(fd, &opt, res);
	close(fd);

	int p[2];
	if (pipe(p) != 0) {
		perror("pipe");
		exit(1);
	}
	struct feeder f = {.fd = p[1], .data = data, .len = len};
	pthread_t th;
	pthread_create(&th, NULL, feed_bytes, &f);
	struct result slow;
	parse_fd(p[0], &opt, &slow);
	pthread_join(th, NULL);
	close(p[0]);
	int i = first_difference(res, &slow);
	CHECK(i < 0,
	      "byte-by-byte reading differs from whole reading for %s input '%.40s': entry %d"
	      " is %d '%s' whole, %d '%s' byte by byte",
	      in_format_name(fmt), data, i, i < 0 ? 0 : res->e[i].ret, i < 0 ? "" : res->e[i].msg,
	      i < 0 ? 0 : slow.e[i].ret, i < 0 ? "" : slow.e[i].msg);
}

#define PARSE(fmt, header, lit, res) parse((fmt), (header), (lit), sizeof(lit) - 1, (res))

static void check_row(const struct result *res, int i, uint64_t line, const char *key, size_t klen,
                      const char *value, size_t vlen, int64_t ttl)
{
	if (i >= res->n) {
		CHECK(i < res->n, "row %d missing (only %d entries)", i, res->n);
		return;
	}
	const typeof(res->e[0]) *e = &res->e[i];
	CHECK(e->ret == 1, "entry %d: expected a row, got %d (%s)", i, e->ret, e->msg);
	CHECK(e->line == line, "entry %d: line %llu, expected %llu", i, (unsigned long long)e->line,
	      (unsigned long long)line);
	CHECK(e->key_len == klen && memcmp(e->key, key, klen) == 0, "entry %d: key '%.*s'", i,
	      (int)e->key_len, e->key);
	CHECK(e->value_len == vlen && memcmp(e->value, value, vlen) == 0,
	      "entry %d: value '%.*s' (%zu bytes), expected %zu bytes", i, (int)e->value_len,
	      e->value, e->value_len, vlen);
	CHECK(e->ttl == ttl, "entry %d: ttl %lld, expected %lld", i, (long long)e->ttl,
	      (long long)ttl);
}

#define ROW(res, i, line, k, v, ttl)                                                               \
	check_row((res), (i), (line), (k), sizeof(k) - 1, (v), sizeof(v) - 1, (ttl))

static void check_error(const struct result *res, int i, int ret, const char *msg)
{
	if (i >= res->n) {
		CHECK(i < res->n, "error %d missing (only %d entries)", i, res->n);
		return;
	}
	CHECK(res->e[i].ret == ret, "entry %d: ret %d, expected %d (%s)", i, res->e[i].ret, ret,
	      res->e[i].msg);
	CHECK(strstr(res->e[i].msg, msg) != NULL, "entry %d: message '%s' lacks '%s'", i,
	      res->e[i].msg, msg);
}

static void test_csv(void)
{
	struct result r;
	PARSE(IN_CSV, false,
	      "plain,value\n"
	      "\"quoted, comma\",\"say \"\"hi\"\"\"\r\n"
	      "\"multi\nline key\",\"a\r\nb\",60\n"
	      "\n"
	      "empty,\n"
	      "\"\",\"\"\n"
	      "ttl-empty,v,\n"
	      "last,no newline",
	      &r);
	CHECK(r.n == 7, "csv: %d entries", r.n);
	ROW(&r, 0, 1, "plain", "value", 0);
	ROW(&r, 1, 2, "quoted, comma", "say \"hi\"", 0);
	ROW(&r, 2, 3, "multi\nline key", "a\r\nb", 60);
	ROW(&r, 3, 7, "empty", "", 0);
	ROW(&r, 4, 8, "", "", 0);
	ROW(&r, 5, 9, "ttl-empty", "v", 0);
	ROW(&r, 6, 10, "last", "no newline", 0);

	/* Binary bytes in a quoted field. */
	static const char bin[] = "k,\"\x00\xff\x01,\"\"\"\n";
	parse(IN_CSV, false, bin, sizeof(bin) - 1, &r);
	check_row(&r, 0, 1, "k", 1, "\x00\xff\x01,\"", 5, 0);

	/* Header: columns named in another order, ttl included. */
	PARSE(IN_CSV, true, "ttl,Value,key\n5,v1,k1\n,v2,k2\n", &r);
	CHECK(r.n == 2, "csv header: %d entries", r.n);
	ROW(&r, 0, 2, "k1", "v1", 5);
	ROW(&r, 1, 3, "k2", "v2", 0);

	/* Bad rows: each is skipped and the next one read. */
	PARSE(IN_CSV, false,
	      "a,b,c,d\n"
	      "solo\n"
	      "\"x\"y,v\n"
	      "k,v,abc\n"
	      "k,v,0\n"
	      "k,v,-5\n"
	      "good,row\n"
	      "k,\"never closed\n",
	      &r);
	check_error(&r, 0, -EINVAL, "line 1: 4 columns; expected 2 (key, value) or 3");
	check_error(&r, 1, -EINVAL, "line 2: 1 column;");
	check_error(&r, 2, -EINVAL, "line 3, column 4: 'y' after a closing quote");
	check_error(&r, 3, -EINVAL, "line 4, column 3 (ttl): 'abc' is not a whole number");
	check_error(&r, 4, -EINVAL, "line 5, column 3 (ttl): ttl 0 is not allowed");
	check_error(&r, 5, -EINVAL, "line 6, column 3 (ttl): '-5' is not a whole number");
	ROW(&r, 6, 7, "good", "row", 0);
	check_error(&r, 7, -EINVAL, "line 8, column 3: unterminated quoted field");
	CHECK(r.n == 8, "csv bad rows: %d entries", r.n);

	/* A header that does not name key and value is fatal. */
	PARSE(IN_CSV, true, "key,other\nk,v\n", &r);
	check_error(&r, 0, -EBADMSG, "line 1, column 2: header names 'other'");
	PARSE(IN_CSV, true, "key,ttl\nk,1\n", &r);
	check_error(&r, 0, -EBADMSG, "must name a key and a value column");
	PARSE(IN_CSV, true, "key,value\nk,v,1\n", &r);
	check_error(&r, 0, -EINVAL, "line 2: 3 columns; the header names 2");
}

static void test_tsv(void)
{
	struct result r;
	PARSE(IN_TSV, false,
	      "k1\tplain\n"
	      "tab\\tkey\tline\\nbreak\\r\\\\ \\0\\x41\\xfF\r\n"
	      "\n"
	      "k3\t\t30\n"
	      "k4\tv, with \"quotes\"",
	      &r);
	CHECK(r.n == 4, "tsv: %d entries", r.n);
	ROW(&r, 0, 1, "k1", "plain", 0);
	check_row(&r, 1, 2, "tab\tkey", 7, "line\nbreak\r\\ \0A\xff", 16, 0);
	ROW(&r, 2, 4, "k3", "", 30);
	ROW(&r, 3, 5, "k4", "v, with \"quotes\"", 0);

	PARSE(IN_TSV, false, "k\\q\tv\nk\tv\\x4\nk\tv\\\nk\tv\t1\tx\nk\tv\t99999999999\nok\tv\n",
	      &r);
	check_error(&r, 0, -EINVAL, "line 1, column 1 (key): invalid escape '\\q");
	check_error(&r, 1, -EINVAL, "line 2, column 2 (value): invalid escape '\\x4'");
	check_error(&r, 2, -EINVAL, "line 3, column 2 (value): invalid escape '\\'");
	check_error(&r, 3, -EINVAL, "line 4: 4 columns");
	check_error(&r, 4, -EINVAL, "line 5, column 3 (ttl): ttl is over");
	ROW(&r, 5, 6, "ok", "v", 0);

	PARSE(IN_TSV, true, "value\tkey\nv\tk\n", &r);
	ROW(&r, 0, 2, "k", "v", 0);
}

static void test_jsonl(void)
{
	struct result r;
	PARSE(IN_JSONL, false,
	      "{\"key\": \"k1\", \"value\": \"v1\"}\n"
	      "  {\"value\":\"q\\\"\\\\\\/\\b\\f\\n\\r\\t\",\"key\":\"k2\",\"ttl\":10}\r\n"
	      "\n"
	      "{\"key\": \"\\u00e9\\u20ac\\ud83d\\ude00\", \"value\": \"\", \"ttl\": null}\n"
	      "{\"key_b64\": \"AP8=\", \"value_b64\": \"AAEC/w\"}\n",
	      &r);
	CHECK(r.n == 4, "jsonl: %d entries", r.n);
	ROW(&r, 0, 1, "k1", "v1", 0);
	ROW(&r, 1, 2, "k2", "q\"\\/\b\f\n\r\t", 10);
	ROW(&r, 2, 4, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "", 0);
	check_row(&r, 3, 5, "\x00\xff", 2, "\x00\x01\x02\xff", 4, 0);

	PARSE(IN_JSONL, false,
	      "[1]\n"
	      "{\"key\": \"k\"}\n"
	      "{\"key\": \"k\", \"value\": \"v\", \"vale\": 1}\n"
	      "{\"key\": 5, \"value\": \"v\"}\n"
	      "{\"key\": \"k\", \"value\": \"v\", \"ttl\": 1.5}\n"
	      "{\"key\": \"k\", \"value\": \"v\", \"ttl\": 0}\n"
	      "{\"key\": \"k\", \"value_b64\": \"!!!\"}\n"
	      "{\"key\": \"k\", \"value\": \"v\"} x\n"
	      "{\"key\": \"k\" \"value\": \"v\"}\n"
	      "{\"key\": \"k\", \"value\": \"unterminated}\n"
	      "{\"key\": \"k\", \"value\": \"a\\qb\"}\n"
	      "{\"key\": \"k\", \"value\": \"v\", \"value\": \"w\"}\n"
	      "{\"key\": \"\\ud800x\", \"value\": \"v\"}\n"
	      "{\"key\": \"ok\", \"value\": \"v\"}\n",
	      &r);
	check_error(&r, 0, -EINVAL, "line 1, column 1: expected '{'");
	check_error(&r, 1, -EINVAL, "line 2: missing field \"value\"");
	check_error(&r, 2, -EINVAL, "line 3, column 28: unknown field \"vale\"");
	check_error(&r, 3, -EINVAL, "line 4, column 9: field \"key\" must be a string");
	check_error(&r, 4, -EINVAL, "line 5, column 35 (ttl): '1.5' is not a whole number");
	check_error(&r, 5, -EINVAL, "line 6, column 35 (ttl): ttl 0 is not allowed");
	check_error(&r, 6, -EINVAL, "line 7, column 27: field \"value_b64\" is not valid base64");
	check_error(&r, 7, -EINVAL, "line 8, column 28: text after the object");
	check_error(&r, 8, -EINVAL, "line 9, column 13: expected ',' or '}'");
	check_error(&r, 9, -EINVAL, "line 10, column 37: ");
	check_error(&r, 9, -EINVAL, "unterminated string");
	check_error(&r, 10, -EINVAL, "invalid escape in a string");
	check_error(&r, 11, -EINVAL, "the value is given twice");
	check_error(&r, 12, -EINVAL, "high surrogate");
	ROW(&r, 13, 14, "ok", "v", 0);
	CHECK(r.n == 14, "jsonl bad rows: %d entries", r.n);
}

/* Checks that entry i is a hash or set row of `key` whose items, each
 * followed by '|', are `items`. */
static void check_coll(const struct result *res, int i, uint64_t line, enum in_kind kind,
                       const char *key, size_t n_items, const char *items, int64_t ttl)
{
	if (i >= res->n) {
		CHECK(i < res->n, "row %d missing (only %d entries)", i, res->n);
		return;
	}
	const typeof(res->e[0]) *e = &res->e[i];
	CHECK(e->ret == 1, "entry %d: expected a row, got %d (%s)", i, e->ret, e->msg);
	CHECK(e->line == line, "entry %d: line %llu, expected %llu", i, (unsigned long long)e->line,
	      (unsigned long long)line);
	CHECK(e->kind == (int)kind, "entry %d: kind %d, expected %d", i, e->kind, (int)kind);
	CHECK(e->key_len == strlen(key) && memcmp(e->key, key, e->key_len) == 0,
	      "entry %d: key '%.*s'", i, (int)e->key_len, e->key);
	CHECK(e->n_items == n_items && strcmp(e->items, items) == 0,
	      "entry %d: %zu items '%s', expected %zu '%s'", i, e->n_items, e->items, n_items,
	      items);
	CHECK(e->ttl == ttl, "entry %d: ttl %lld, expected %lld", i, (long long)e->ttl,
	      (long long)ttl);
}

static void test_jsonl_hash_and_set(void)
{
	struct result r;
	PARSE(IN_JSONL, false,
	      "{\"key\": \"u:1\", \"hash\": {\"name\": \"x\", \"age\": 3}}\n"
	      "{\"hash\": {\"a\\n\": \"\\u00e9\", \"\": \"\", \"a\\n\": -1.5e3, \"z\": 0},"
	      " \"ttl\": 5, \"key\": \"h\"}\n"
	      "{\"key\": \"s\", \"set\": [\"a\", 10, \"a\", 0.5, \"\"]}\n"
	      "\n"
	      "{\"key_b64\": \"AP8=\", \"hash_b64\": {\"Zg==\": \"AAE=\"}, \"ttl\": null}\n"
	      "{\"key\": \"sb\", \"set_b64\": [\"aGk=\" , \"\"]}\n"
	      "{\"key\": \"one\", \"set\": [ -7 ]}\n",
	      &r);
	CHECK(r.n == 6, "jsonl collections: %d entries", r.n);
	check_coll(&r, 0, 1, IN_HASH, "u:1", 4, "name|x|age|3|", 0);
	/* A repeated field stays: the reader keeps the order, the last value wins
	 * when it is written (HSET's rule). */
	check_coll(&r, 1, 2, IN_HASH, "h", 8, "a\n|\xc3\xa9|||a\n|-1.5e3|z|0|", 5);
	check_coll(&r, 2, 3, IN_SET, "s", 5, "a|10|a|0.5||", 0);
	CHECK(r.n > 3 && r.e[3].key_len == 2 && memcmp(r.e[3].key, "\x00\xff", 2) == 0,
	      "hash_b64 key");
	CHECK(r.n > 3 && r.e[3].kind == IN_HASH && r.e[3].n_items == 2 &&
	          memcmp(r.e[3].items, "f|\x00\x01|", 5) == 0,
	      "hash_b64 items: '%s'", r.n > 3 ? r.e[3].items : "");
	check_coll(&r, 4, 6, IN_SET, "sb", 2, "hi||", 0);
	check_coll(&r, 5, 7, IN_SET, "one", 1, "-7|", 0);

	/* Bad rows, each with its line and column; the next row is read. */
	PARSE(IN_JSONL, false,
	      "{\"key\": \"k\", \"hash\": {\"f\": {\"nested\": 1}}}\n"
	      "{\"key\": \"k\", \"hash\": {\"f\": [1]}}\n"
	      "{\"key\": \"k\", \"set\": [\"a\", [\"b\"]]}\n"
	      "{\"key\": \"k\", \"set\": [true]}\n"
	      "{\"key\": \"k\", \"hash\": {\"f\": null}}\n"
	      "{\"key\": \"k\", \"hash\": {}}\n"
	      "{\"key\": \"k\", \"set\": [ ]}\n"
	      "{\"key\": \"k\", \"hash\": [\"f\", \"v\"]}\n"
	      "{\"key\": \"k\", \"set\": {\"a\": \"b\"}}\n"
	      "{\"key\": \"k\", \"value\": \"v\", \"set\": [\"a\"]}\n"
	      "{\"key\": \"k\", \"set\": [01]}\n"
	      "{\"key\": \"k\", \"hash\": {5: \"v\"}}\n"
	      "{\"key\": \"k\", \"hash_b64\": {\"Zg==\": 5}}\n"
	      "{\"key\": \"k\", \"set_b64\": [\"!\"]}\n"
	      "{\"key\": \"k\", \"hash\": {\"f\" \"v\"}}\n"
	      "{\"key\": \"ok\", \"set\": [\"m\"]}\n",
	      &r);
	check_error(&r, 0, -EINVAL,
	            "line 1, column 28: a value of \"hash\" must be a string or a number (Redis"
	            " stores strings; nested objects, arrays");
	check_error(&r, 1, -EINVAL, "line 2, column 28: a value of \"hash\" must be a string");
	check_error(&r, 2, -EINVAL,
	            "line 3, column 27: a member of \"set\" must be a string or a"
	            " number");
	check_error(&r, 3, -EINVAL, "line 4, column 22: a member of \"set\" must be");
	check_error(&r, 4, -EINVAL, "line 5, column 28: a value of \"hash\" must be");
	check_error(&r, 5, -EINVAL, "line 6, column 22: an empty hash (Redis keeps no empty hash");
	check_error(&r, 6, -EINVAL, "line 7, column 21: an empty set (Redis keeps no empty set");
	check_error(&r, 7, -EINVAL,
	            "line 8, column 22: field \"hash\" must be an object of fields"
	            " and values");
	check_error(&r, 8, -EINVAL, "line 9, column 21: field \"set\" must be an array of members");
	check_error(&r, 9, -EINVAL,
	            "line 10, column 28: the value is given twice (a row holds one"
	            " of value, value_b64, hash, hash_b64, set, set_b64)");
	check_error(&r, 10, -EINVAL, "line 11, column 22: invalid number");
	check_error(&r, 11, -EINVAL,
	            "line 12, column 23: a field name of \"hash\" must be a string");
	CHECK(r.n > 11 && strcmp(r.e[11].msg, "line 12, column 23: a field name of \"hash\" must be"
	                                      " a string") == 0,
	      "a field name is a string, never a number: %s", r.n > 11 ? r.e[11].msg : "");
	check_error(&r, 12, -EINVAL,
	            "line 13, column 35: a value of \"hash_b64\" must be a base64"
	            " string");
	check_error(&r, 13, -EINVAL,
	            "line 14, column 26: a member of \"set_b64\" is not valid"
	            " base64");
	check_error(&r, 14, -EINVAL, "line 15, column 27: expected ':'");
	check_coll(&r, 15, 16, IN_SET, "ok", 1, "m|", 0);
	CHECK(r.n == 16, "jsonl bad collections: %d entries", r.n);

	/* A missing value names every field that gives one. */
	PARSE(IN_JSONL, false, "{\"key\": \"k\", \"ttl\": 5}\n", &r);
	check_error(&r, 0, -EINVAL,
	            "line 1: missing field \"value\" (or value_b64, hash, hash_b64, set, set_b64)");
}

/* A hash far larger than a read: its line is framed over many refills and
 * every item arrives whole (the items array grows past its first size). */
static void test_jsonl_big_hash(void)
{
	size_t fields = 100000, cap = fields * 32 + 64, n = 0;
	char *in = malloc(cap);
	CHECK(in != NULL, "malloc");
	n += (size_t)snprintf(in + n, cap - n, "{\"key\": \"big\", \"hash\": {");
	for (size_t i = 0; i < fields; i++)
		n += (size_t)snprintf(in + n, cap - n, "%s\"f%zu\": \"v%zu\"", i ? ", " : "", i, i);
	n += (size_t)snprintf(in + n, cap - n, "}}\n{\"key\": \"after\", \"value\": \"v\"}\n");
	int fd = memfd_create("big", 0);
	CHECK(fd >= 0 && write(fd, in, n) == (ssize_t)n && lseek(fd, 0, SEEK_SET) == 0, "memfd");
	struct in_options opt = {.format = IN_JSONL};
	struct in_reader *r;
	struct in_row row;
	char err[512] = "";
	CHECK(in_open(&r, fd, &opt) == 0, "in_open");
	int ret = in_next(r, &row, err, sizeof(err));
	CHECK(ret == 1 && row.kind == IN_HASH && row.n_items == 2 * fields, "the big hash: %d %s",
	      ret, err);
	bool ok = ret == 1;
	for (size_t i = 0; ok && i < fields; i++) {
		char f[32], v[32];
		int fl = snprintf(f, sizeof(f), "f%zu", i), vl = snprintf(v, sizeof(v), "v%zu", i);
		ok = row.item_len[2 * i] == (size_t)fl &&
		     memcmp(row.item[2 * i], f, (size_t)fl) == 0 &&
		     row.item_len[2 * i + 1] == (size_t)vl &&
		     memcmp(row.item[2 * i + 1], v, (size_t)vl) == 0;
		CHECK(ok, "field %zu of the big hash", i);
	}
	CHECK(in_next(r, &row, err, sizeof(err)) == 1 && row.kind == IN_STRING && row.line == 2,
	      "the row after it: %s", err);
	in_close(r);
	close(fd);
	free(in);
}

static void test_resp(void)
{
	struct result r;
	PARSE(IN_RESP, false,
	      "*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\na\r\nb\x00\r\n"
	      "\r\n"
	      "*1\r\n$4\r\nPING\r\n"
	      "*5\r\n$3\r\nSET\r\n$2\r\nk2\r\n$0\r\n\r\n$2\r\nEX\r\n$2\r\n10\r\n",
	      &r);
	CHECK(r.n == 3, "resp: %d entries", r.n);
	CHECK(r.e[0].ret == 1 && r.e[0].argc == 3 && r.e[0].line == 1, "resp row 0");
	check_row(&r, 0, 1, "k1", 2, "", 0, 0);
	CHECK(r.e[1].ret == 1 && r.e[1].argc == 1 && r.e[1].line == 10, "resp row 1: line %llu",
	      (unsigned long long)r.e[1].line);
	CHECK(r.e[2].ret == 1 && r.e[2].argc == 5 && r.e[2].line == 13, "resp row 2");

	PARSE(IN_RESP, false, "*1\r\n$4\r\nPING\r\nSET k v\r\n", &r);
	CHECK(r.e[0].ret == 1, "resp before an inline command");
	check_error(&r, 1, -EBADMSG, "line 4 (byte 14): expected a RESP array header");
	PARSE(IN_RESP, false, "*2\r\n$3\r\nGET\r\n:1\r\n", &r);
	check_error(&r, 0, -EBADMSG, "argument 2 of the command: expected a bulk string header");
	PARSE(IN_RESP, false, "*1\r\n$3\r\nGETX\r\n", &r);
	check_error(&r, 0, -EBADMSG, "argument 1 is not followed by CRLF");
	PARSE(IN_RESP, false, "*2\r\n$3\r\nGET\r\n$5\r\nab", &r);
	check_error(&r, 0, -EINVAL, "line 1 (byte 0): the input ends inside a command");

	/* The failing header's line, byte and argument, past data holding a LF. */
	PARSE(IN_RESP, false, "*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$3\r\na\nb\r\n$-1\r\n", &r);
	check_error(&r, 1, -EBADMSG,
	            "line 10 (byte 36): argument 3 of the command: expected a bulk string header");
	/* Every line ends in CRLF, not only in CR. */
	PARSE(IN_RESP, false, "*1\r\n$4\rXPING\r\n", &r);
	check_error(&r, 0, -EBADMSG, "line 2 (byte 4): argument 1 of the command: expected a bulk");
	PARSE(IN_RESP, false, "*1\rX$4\r\nPING\r\n", &r);
	check_error(&r, 0, -EBADMSG, "line 1 (byte 0): expected a RESP array header");
	/* Counts and lengths out of range. */
	PARSE(IN_RESP, false, "*0\r\n", &r);
	check_error(&r, 0, -EBADMSG, "line 1 (byte 0): expected a RESP array header");
	PARSE(IN_RESP, false, "*1048577\r\n", &r);
	check_error(&r, 0, -EBADMSG, "found '*1048577\\x0d'");
	PARSE(IN_RESP, false, "\r\n*1\r\n$536870913\r\n", &r);
	check_error(&r, 0, -EBADMSG, "line 3 (byte 6): argument 1 of the command: expected a bulk");
}

/* A bad row's message must not depend on where the reads cut the input: the
 * reader is given "...PING\r\nS" and only then "ET k v\r\n" (it once
 * quoted the one byte it had, 'S', as the bad line). */
static void test_resp_error_whole_line_after_split_read(void)
{
	static const char part1[] = "*1\r\n$4\r\nPING\r\nS", part2[] = "ET k v\r\n";
	struct in_options opt = {.format = IN_RESP};
	struct in_reader *r;
	struct in_row row;
	char err[512] = "";
	int p[2];
	if (pipe(p) != 0 || in_open(&r, p[0], &opt) < 0) {
		perror("pipe");
		exit(1);
	}
	CHECK(write(p[1], part1, sizeof(part1) - 1) == sizeof(part1) - 1, "write part 1");
	CHECK(in_next(r, &row, err, sizeof(err)) == 1 && row.argc == 1, "PING row: %s", err);
	CHECK(write(p[1], part2, sizeof(part2) - 1) == sizeof(part2) - 1, "write part 2");
	close(p[1]);
	CHECK(in_next(r, &row, err, sizeof(err)) == -EBADMSG, "inline command refused");
	CHECK(strstr(err, "line 4 (byte 14): ") != NULL && strstr(err, "found 'SET k v") != NULL,
	      "the message quotes the whole line: %s", err);
	in_close(r);
	close(p[0]);
}

/* A bulk over several reads and buffer growths: the parser's state carries
 * over each refill and the argument arrives whole. */
static void test_resp_bulk_over_reads(void)
{
	size_t vlen = 3u << 20;
	char head[64];
	int hn = snprintf(head, sizeof(head), "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%zu\r\n", vlen);
	size_t total = (size_t)hn + vlen + 2 + 14;
	char *in = malloc(total);
	CHECK(in != NULL, "malloc");
	memcpy(in, head, (size_t)hn);
	for (size_t i = 0; i < vlen; i++)
		in[hn + i] = (char)('a' + i % 26);
	memcpy(in + hn + vlen, "\r\n*1\r\n$4\r\nPING\r\n", 16);
	int fd = memfd_create("big", 0);
	CHECK(fd >= 0 && write(fd, in, total) == (ssize_t)total && lseek(fd, 0, SEEK_SET) == 0,
	      "memfd");
	struct in_options opt = {.format = IN_RESP};
	struct in_reader *r;
	struct in_row row;
	char err[512] = "";
	CHECK(in_open(&r, fd, &opt) == 0, "in_open");
	CHECK(in_next(r, &row, err, sizeof(err)) == 1 && row.argc == 3 && row.argl[2] == vlen &&
	          memcmp(row.argv[2], in + hn, vlen) == 0 && row.raw_len == (size_t)hn + vlen + 2,
	      "the big SET whole: %s", err);
	CHECK(in_next(r, &row, err, sizeof(err)) == 1 && row.argc == 1 && row.line == 8,
	      "the PING after it: %s", err);
	CHECK(in_next(r, &row, err, sizeof(err)) == 0, "then the end");
	in_close(r);
	close(fd);
	free(in);
}

static void test_names(void)
{
	enum in_format f;
	CHECK(in_format_guess("/x/data.CSV", &f) == 0 && f == IN_CSV, "guess csv");
	CHECK(in_format_guess("a.b/rows.tsv", &f) == 0 && f == IN_TSV, "guess tsv");
	CHECK(in_format_guess("dump.ndjson", &f) == 0 && f == IN_JSONL, "guess ndjson");
	CHECK(in_format_guess("appendonly.aof", &f) == 0 && f == IN_RESP, "guess aof");
	CHECK(in_format_guess("a.csv/noext", &f) < 0, "no extension");
	CHECK(in_format_parse("xml", &f) < 0, "unknown format");
	uint8_t buf[16];
	CHECK(in_base64_decode(buf, (const uint8_t *)"aGVsbG8=", 8) == 5 &&
	          memcmp(buf, "hello", 5) == 0,
	      "base64");
	CHECK(in_base64_decode(buf, (const uint8_t *)"aGVsbG8", 7) == 5, "base64 without padding");
	CHECK(in_base64_decode(buf, (const uint8_t *)"a", 1) < 0, "base64 bad length");
}

int main(void)
{
	test_csv();
	test_tsv();
	test_jsonl();
	test_jsonl_hash_and_set();
	test_jsonl_big_hash();
	test_resp();
	test_resp_error_whole_line_after_split_read();
	test_resp_bulk_over_reads();
	test_names();
	return test_result();
}
