/* fsutil: small file-system helpers shared by the storage modules. */
#ifndef RINGKV_FSUTIL_H
#define RINGKV_FSUTIL_H

#include <stddef.h>

/* Bytes of a buffer that holds a path inside a data directory, or a
 * configuration value naming one.  The data directory (storage.dir) is at
 * most 4095 bytes — the configuration keeps it in char[4096] and
 * fs_make_dirs refuses longer — and the longest name the storage appends to
 * it, "/shard-NNNN/log/SSSSSSSSSSSSSSSS.seg.import", is 43 bytes: every such
 * path fits, with room to spare.  (A longer one would be cut short by
 * snprintf, and the file operation on it then fails.) */
#define FS_PATH_MAX 4200

/* Creates `path` and its missing parents (mode 0755), like mkdir -p.
 * Returns 0 (also when it exists) or -errno (-ENAMETOOLONG past 4095 bytes). */
int fs_make_dirs(const char *path);

/* Takes an exclusive flock on `path` (created if missing) without waiting,
 * and writes our pid into it; the lock lasts until *fd is closed.  Returns 0
 * with *fd set; -EBUSY when another process holds it (its pid, as the file
 * says, in holder: "" if unknown); or -errno (nothing left open). */
int fs_lock_file(const char *path, int *fd, char *holder, size_t holder_len);

#endif
