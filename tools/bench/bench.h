/* bench: the subcommands of ringkv-bench.
 *
 * Each subcommand is one function with main's contract: it receives the
 * arguments from its own name on (argv[0] is "msg", "store", ...), prints its
 * results on stdout and its progress on stderr, and returns the exit status:
 * 0 success, 1 the measured system misbehaved or could not start, 2 usage
 * error.  ringkv_bench.c lists them in its command table.
 */
#ifndef RINGKV_BENCH_H
#define RINGKV_BENCH_H

#include <stdbool.h>
#include <stdint.h>

/* `ringkv-bench msg`: message-passing throughput, latency and wake-ups
 * (bench_msg.c). */
int bench_msg_main(int argc, char **argv);

/* `ringkv-bench store`: the storage library's puts and cold gets against fio
 * and RocksDB's db_bench (bench_store.c). */
int bench_store_main(int argc, char **argv);

/* `ringkv-bench resp`: a load generator of units of several commands
 * (MULTI ... EXEC) against any RESP server (bench_resp.c). */
int bench_resp_main(int argc, char **argv);

/* Helpers shared by the subcommands (ringkv_bench.c). */

/* Sleeps `ns` nanoseconds (< 1 s), resuming after signals. */
void bench_sleep_ns(long ns);

/* Parses a decimal integer in [min, max] into *out; false if s is anything
 * else (sign, junk, overflow). */
bool bench_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Median of the n values that are not NaN (NaN if there are none); v is left
 * unchanged. */
double bench_median(const double *v, unsigned n);

#endif
