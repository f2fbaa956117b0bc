/* layout: how a data directory is split into shards, shared by the server and
 * the offline import tool so both put every key in the same place.
 *
 *   key -> slot   CRC16 (XMODEM, as Redis Cluster) of the key, or of its hash
 *                 tag — the bytes between the first '{' and the next '}' when
 *                 that is non-empty — mod 16384.
 *   slot -> shard contiguous ranges: shard = slot * shards / 16384.
 *   shard -> dir  DIR/shard-NNN (NNN = shard number, 3 digits or more).
 *
 * The shard count belongs to the data directory, not to the machine: it is
 * fixed when the directory is created (from server.threads) and recorded in
 * DIR/LAYOUT, so a restart with a different thread count still finds every
 * key.  The server runs shard s on proactor s mod threads.
 *
 * DIR/LAYOUT (text, written once: temporary file, fsync, rename, fsync DIR):
 *   line 1  "ringkv-layout 1"   format name and version
 *   line 2  "shards N"          1 <= N <= LAYOUT_MAX_SHARDS
 */
#ifndef RINGKV_LAYOUT_H
#define RINGKV_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define LAYOUT_SLOTS 16384
#define LAYOUT_MAX_SHARDS 1024
#define LAYOUT_VERSION 1

/* CRC16-XMODEM (polynomial 0x1021, initial 0), Redis Cluster's key hash. */
uint16_t layout_crc16(const void *data, size_t len);

/* The Redis Cluster slot of a key (hash tags honoured). */
unsigned layout_key_slot(const void *key, size_t len);

/* The shard that owns `slot` when the directory has `shards` shards. */
static inline unsigned layout_slot_shard(unsigned slot, unsigned shards)
{
	return (unsigned)(((uint64_t)slot * shards) / LAYOUT_SLOTS);
}

static inline unsigned layout_key_shard(const void *key, size_t len, unsigned shards)
{
	if (shards == 1)
		return 0; /* (no CRC for the common single-shard case) */
	return layout_slot_shard(layout_key_slot(key, len), shards);
}

/* Opens the layout of data directory `dir`, creating `dir` (and parents) and
 * DIR/LAYOUT with `new_shards` shards when the directory holds no layout yet.
 * Sets *shards to the directory's shard count.  Returns 0, or -errno with a
 * message naming the cause and the fix in err (an unreadable or corrupt
 * LAYOUT, an unknown version, shard directories without a LAYOUT). */
int layout_open(const char *dir, unsigned new_shards, unsigned *shards, char *err, size_t errlen);

/* Writes "DIR/shard-NNN" into buf. */
void layout_shard_dir(const char *dir, unsigned shard, char *buf, size_t len);

/* Takes DIR/shard-NNN/LOCK, given shard_dir = DIR/shard-NNN: an exclusive
 * flock held until *fd is closed, the file holding our pid, so that a second
 * process (a server, an offline import) is refused naming the holder.
 * Returns 0 with *fd set; or -errno with *fd = -1 and a message in err:
 * -EBUSY when another process holds the lock, the message then ending with
 * `busy_fix` (what the user should do about it). */
int layout_lock_shard(const char *shard_dir, int *fd, const char *busy_fix, char *err,
                      size_t errlen);

#endif
