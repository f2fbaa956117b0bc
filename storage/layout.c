/* layout: see layout.h. */
#include "layout.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/fsutil.h"

/* CRC16-XMODEM by bytes: crc16_table[b] is the CRC of the byte b followed by
 * 16 zero bits, computed once. */
static uint16_t crc16_table[256];
static pthread_once_t crc16_once = PTHREAD_ONCE_INIT;

static void crc16_init(void)
{
	for (unsigned b = 0; b < 256; b++) {
		uint16_t crc = (uint16_t)(b << 8);
		for (int i = 0; i < 8; i++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
		crc16_table[b] = crc;
	}
}

uint16_t layout_crc16(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint16_t crc = 0;
	pthread_once(&crc16_once, crc16_init);
	for (size_t i = 0; i < len; i++)
		crc = (uint16_t)((crc << 8) ^ crc16_table[(uint8_t)(crc >> 8) ^ p[i]]);
	return crc;
}

unsigned layout_key_slot(const void *key, size_t len)
{
	const char *k = key;
	const char *open = memchr(k, '{', len);
	if (open != NULL) {
		size_t start = (size_t)(open - k) + 1;
		const char *close = memchr(k + start, '}', len - start);
		if (close != NULL && close > k + start)
			return layout_crc16(k + start, (size_t)(close - (k + start))) & (LAYOUT_SLOTS - 1);
	}
	return layout_crc16(k, len) & (LAYOUT_SLOTS - 1);
}

void layout_shard_dir(const char *dir, unsigned shard, char *buf, size_t len)
{
	snprintf(buf, len, "%s/shard-%03u", dir, shard);
}

int layout_lock_shard(const char *shard_dir, int *fd, const char *busy_fix, char *err,
                      size_t errlen)
{
	char path[FS_PATH_MAX], holder[32];
	snprintf(path, sizeof(path), "%s/LOCK", shard_dir);
	int ret = fs_lock_file(path, fd, holder, sizeof(holder));
	if (ret == -EBUSY)
		snprintf(err, errlen, "%s is in use by another process (pid %s): %s", shard_dir,
		         holder[0] ? holder : "unknown", busy_fix);
	else if (ret < 0)
		snprintf(err, errlen, "cannot lock %s: %s (check the directory's permissions)", path,
		         strerror(-ret));
	if (ret < 0)
		*fd = -1;
	return ret;
}

/* True when dir holds a shard-* entry (data written without a LAYOUT). */
static int has_shard_dirs(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	struct dirent *de;
	int found = 0;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, "shard-", 6) == 0)
			found = 1;
	closedir(d);
	return found;
}

static int write_layout(const char *dir, unsigned shards, char *err, size_t errlen)
{
	char tmp[FS_PATH_MAX], path[FS_PATH_MAX], text[64];
	snprintf(tmp, sizeof(tmp), "%s/LAYOUT.tmp", dir);
	snprintf(path, sizeof(path), "%s/LAYOUT", dir);
	int n = snprintf(text, sizeof(text), "ringkv-layout %d\nshards %u\n", LAYOUT_VERSION, shards);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto fail;
	if (write(fd, text, (size_t)n) != n || fsync(fd) != 0) {
		int e = errno ? errno : EIO;
		close(fd);
		errno = e;
		goto fail;
	}
	close(fd);
	if (rename(tmp, path) != 0)
		goto fail;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
fail:;
	int e = errno;
	snprintf(err, errlen, "cannot write %s: %s (check that the data directory is writable)",
		 path, strerror(e));
	unlink(tmp);
	return -e;
}

int layout_open(const char *dir, unsigned new_shards, unsigned *shards, char *err, size_t errlen)
{
	char path[FS_PATH_MAX], text[128];
	int ret = fs_make_dirs(dir);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(-ret));
		return ret;
	}
	snprintf(path, sizeof(path), "%s/LAYOUT", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT) {
		ret = -errno;
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return ret;
	}
	if (fd < 0) {
		if (has_shard_dirs(dir)) {
			snprintf(err, errlen,
				 "%s has shard directories but no LAYOUT file: it was not written by"
				 " this ringkv version, or LAYOUT was deleted; restore LAYOUT"
				 " (\"ringkv-layout 1\\nshards N\\n\") or use an empty directory",
				 dir);
			return -EINVAL;
		}
		if (new_shards < 1 || new_shards > LAYOUT_MAX_SHARDS) {
			snprintf(err, errlen, "cannot create %u shards: the range is 1..%d",
				 new_shards, LAYOUT_MAX_SHARDS);
			return -EINVAL;
		}
		ret = write_layout(dir, new_shards, err, errlen);
		if (ret == 0)
			*shards = new_shards;
		return ret;
	}
	ssize_t n = read(fd, text, sizeof(text) - 1);
	int e = errno;
	close(fd);
	if (n < 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
		return -e;
	}
	text[n] = '\0';
	int version = 0;
	unsigned count = 0;
	char extra;
	if (sscanf(text, "ringkv-layout %d\nshards %u\n%c", &version, &count, &extra) != 2 ||
	    strncmp(text, "ringkv-layout ", 14) != 0) {
		snprintf(err, errlen,
			 "%s is corrupt (expected \"ringkv-layout 1\" then \"shards N\"); restore it"
			 " from a backup",
			 path);
		return -EINVAL;
	}
	if (version != LAYOUT_VERSION) {
		snprintf(err, errlen,
			 "%s has layout version %d, this ringkv knows only %d: use the ringkv"
			 " version that wrote it",
			 path, version, LAYOUT_VERSION);
		return -EINVAL;
	}
	if (count < 1 || count > LAYOUT_MAX_SHARDS) {
		snprintf(err, errlen, "%s: shard count %u is out of range 1..%d; the file is corrupt",
			 path, count, LAYOUT_MAX_SHARDS);
		return -EINVAL;
	}
	*shards = count;
	return 0;
}
