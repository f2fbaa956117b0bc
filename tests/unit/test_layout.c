/* test_layout: key -> slot matches Redis Cluster (CRC16, hash tags), slots split
 * into contiguous shard ranges, and DIR/LAYOUT is created once, reread, and
 * refused when corrupt, of another version, or missing beside shard data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/layout.h"
#include "testutil.h"

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f == NULL) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

int main(void)
{
	/* The CRC16 check value and slots that redis-cli CLUSTER KEYSLOT gives. */
	CHECK(layout_crc16("123456789", 9) == 0x31C3, "crc16 check value %#x",
	      layout_crc16("123456789", 9));
	CHECK(layout_key_slot("foo", 3) == 12182, "foo -> %u", layout_key_slot("foo", 3));
	CHECK(layout_key_slot("bar", 3) == 5061, "bar -> %u", layout_key_slot("bar", 3));
	CHECK(layout_key_slot("", 0) == 0, "empty key -> %u", layout_key_slot("", 0));
	const char *a = "{user1000}.following", *b = "{user1000}.followers";
	CHECK(layout_key_slot(a, strlen(a)) == layout_key_slot(b, strlen(b)), "hash tags");
	CHECK(layout_key_slot(a, strlen(a)) == layout_key_slot("user1000", 8), "tag is hashed");
	/* An empty tag hashes the whole key; only the first '{' counts. */
	CHECK(layout_key_slot("foo{}{bar}", 10) == (layout_crc16("foo{}{bar}", 10) & 16383),
	      "empty tag");
	CHECK(layout_key_slot("foo{{bar}}zap", 13) == layout_key_slot("{bar", 4), "nested brace");
	CHECK(layout_key_slot("foo{bar", 7) == (layout_crc16("foo{bar", 7) & 16383), "no close");

	/* Contiguous ranges covering every shard. */
	for (unsigned shards = 1; shards <= 7; shards++) {
		unsigned prev = 0, seen = 0;
		for (unsigned s = 0; s < LAYOUT_SLOTS; s++) {
			unsigned sh = layout_slot_shard(s, shards);
			CHECK(sh >= prev && sh < shards, "slot %u -> shard %u of %u", s, sh, shards);
			seen += sh != prev;
			prev = sh;
		}
		CHECK(seen == shards - 1 && prev == shards - 1, "%u shards all used", shards);
	}

	char dir[] = "/tmp/ringkv-layout.XXXXXX", sub[256], path[300], err[512];
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	unsigned n = 0;
	snprintf(sub, sizeof(sub), "%s/data", dir);
	CHECK(layout_open(sub, 3, &n, err, sizeof(err)) == 0 && n == 3, "create: %s", err);
	CHECK(layout_open(sub, 8, &n, err, sizeof(err)) == 0 && n == 3, "reopen keeps 3: %u", n);
	snprintf(path, sizeof(path), "%s/LAYOUT", sub);
	write_file(path, "ringkv-layout 2\nshards 3\n");
	CHECK(layout_open(sub, 3, &n, err, sizeof(err)) == -EINVAL && strstr(err, "version 2"),
	      "other version refused: %s", err);
	write_file(path, "garbage\n");
	CHECK(layout_open(sub, 3, &n, err, sizeof(err)) == -EINVAL && strstr(err, "corrupt"),
	      "corrupt refused: %s", err);
	write_file(path, "ringkv-layout 1\nshards 0\n");
	CHECK(layout_open(sub, 3, &n, err, sizeof(err)) == -EINVAL, "0 shards refused: %s", err);
	unlink(path);
	snprintf(path, sizeof(path), "%s/shard-000", sub);
	mkdir(path, 0755);
	CHECK(layout_open(sub, 3, &n, err, sizeof(err)) == -EINVAL && strstr(err, "no LAYOUT"),
	      "shard data without LAYOUT refused: %s", err);
	char layout_dir[300];
	layout_shard_dir("/d", 7, layout_dir, sizeof(layout_dir));
	CHECK(strcmp(layout_dir, "/d/shard-007") == 0, "shard dir %s", layout_dir);

	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return test_result();
}
