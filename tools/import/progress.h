/* progress: ringkv-import's progress line on a terminal — rows, bytes, rate,
 * and with a known input size a bar and an ETA — redrawn in place on stderr
 * at most five times a second. */
#ifndef RINGKV_IMPORT_PROGRESS_H
#define RINGKV_IMPORT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress {
	bool enabled;         /* draw at all (stderr is a terminal, not --quiet) */
	bool drawn;           /* a progress line is on the screen */
	uint64_t total_bytes; /* input size; 0 = unknown */
	double start;         /* CLOCK_MONOTONIC seconds */
	double next_draw;
	unsigned calls; /* prog_update calls since the clock was last read */
};

/* Starts the clock.  total_bytes 0 = unknown size. */
void prog_init(struct progress *p, bool enabled, uint64_t total_bytes);

/* Cheap enough to call per row: reads the clock every 1024 calls. */
void prog_update(struct progress *p, uint64_t rows, uint64_t bytes);

/* Erases the progress line (before printing anything else on stderr). */
void prog_clear(struct progress *p);

/* Shows a phase that has no row count ("building the index"). */
void prog_phase(struct progress *p, const char *what);

/* Seconds since prog_init. */
double prog_elapsed(const struct progress *p);

/* Monotonic clock in seconds. */
double prog_now(void);

#endif
