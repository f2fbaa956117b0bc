/* clock: wall-clock time, the one place ringkv reads it.
 *
 * Expiry times, TIME, LASTSAVE and CLIENT LIST ages are Unix times (Redis
 * stores absolute Unix ms); intervals that must not jump with the wall clock
 * use px_now_ns() (CLOCK_MONOTONIC) instead.
 */
#ifndef RINGKV_CLOCK_H
#define RINGKV_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Unix time now, in milliseconds. */
static inline uint64_t clock_unix_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Unix time now, in microseconds. */
static inline uint64_t clock_unix_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Unix time in milliseconds, to a few ms (the kernel's tick; no syscall):
 * for ages and idle times, never for expiry. */
static inline uint64_t clock_unix_ms_coarse(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
