/* logging: see logging.h. */
#include "logging.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int logging_level = LOG_LEVEL_INFO;

static int log_fd = STDERR_FILENO;          /* destination; replaced only at start-up */
static __thread char thread_name[16] = "main"; /* shown in every line of this thread */

int logging_open(const char *path)
{
	if (path == NULL || path[0] == '\0') {
		log_fd = STDERR_FILENO;
		return 0;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	log_fd = fd;
	return 0;
}

const char *const logging_level_names[LOG_LEVELS] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

int logging_level_parse(const char *name)
{
	for (int i = 0; i < LOG_LEVELS; i++)
		if (strcmp(name, logging_level_names[i]) == 0)
			return i;
	return -1;
}

void logging_set_thread_name(const char *name)
{
	snprintf(thread_name, sizeof(thread_name), "%s", name);
}

void logging_write(int level, const char *file, int line, const char *fmt, ...)
{
	static const char letters[] = "EWID";
	char buf[1024];
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c [%s] ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, letters[level & 3], thread_name);
	if (level == LOG_LEVEL_DEBUG)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%s:%d: ", file, line);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(buf) - 2)
		len = sizeof(buf) - 2;
	buf[len++] = '\n';
	ssize_t w;
	do
		w = write(log_fd, buf, len);
	while (w < 0 && errno == EINTR);
}

void logging_assert_fail(const char *expr, const char *file, int line)
{
	logging_write(LOG_LEVEL_ERROR, file, line, "assertion failed: %s (%s:%d)", expr, file,
		      line);
	abort();
}
