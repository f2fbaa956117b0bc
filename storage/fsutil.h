/* fsutil: small file-system helpers shared by the storage modules. */
#ifndef RINGKV_FSUTIL_H
#define RINGKV_FSUTIL_H

/* Creates `path` and its missing parents (mode 0755), like mkdir -p.
 * Returns 0 (also when it exists) or -errno (-ENAMETOOLONG past 4095 bytes). */
int fs_make_dirs(const char *path);

#endif
