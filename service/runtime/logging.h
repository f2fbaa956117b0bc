/* logging: leveled log lines and invariant checks for every ringkv module.
 *
 * One macro (LOG) checks the level before anything is formatted, so a disabled
 * DEBUG line costs one compare.  A line is written with a single write(2), so
 * lines from different threads never interleave.  Each line carries a UTC
 * timestamp, the level letter and the calling thread's name ("px3", "main").
 */
#ifndef RINGKV_LOGGING_H
#define RINGKV_LOGGING_H

#include <stdnoreturn.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN = 1,
	LOG_LEVEL_INFO = 2,
	LOG_LEVEL_DEBUG = 3,
};

#define LOG_LEVELS (LOG_LEVEL_DEBUG + 1)

extern int logging_level; /* lines above this level are dropped before formatting */

/* "error", "warn", "info", "debug", indexed by enum log_level. */
extern const char *const logging_level_names[LOG_LEVELS];

#define LOG(level, ...)                                                             \
	do {                                                                        \
		if ((level) <= logging_level)                                       \
			logging_write((level), __FILE__, __LINE__, __VA_ARGS__);    \
	} while (0)
#define LOG_ERROR(...) LOG(LOG_LEVEL_ERROR, __VA_ARGS__)
#define LOG_WARN(...) LOG(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_INFO(...) LOG(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) LOG(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* ASSERT is for true invariants of the program only, never for conditions that
 * input, the kernel or the disk can cause: it prints the expression, file and
 * line, then aborts. */
#define ASSERT(expr)                                                                \
	do {                                                                        \
		if (!(expr))                                                        \
			logging_assert_fail(#expr, __FILE__, __LINE__);             \
	} while (0)

/* Sends log lines to `path` (appending; NULL or "" = stderr) from now on.
 * Returns 0 or -errno; on error the previous destination stays. */
int logging_open(const char *path);

/* Parses "error", "warn", "info" or "debug"; returns the level or -1. */
int logging_level_parse(const char *name);

/* Names the calling thread in its log lines (at most 15 characters kept). */
void logging_set_thread_name(const char *name);

void logging_write(int level, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

noreturn void logging_assert_fail(const char *expr, const char *file, int line);

#endif
