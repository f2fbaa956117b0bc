/* progress: see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define DRAW_PERIOD 0.2 /* seconds between redraws */
#define BAR_WIDTH   24

double prog_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void prog_init(struct progress *p, bool enabled, uint64_t total_bytes)
{
	memset(p, 0, sizeof(*p));
	p->enabled = enabled;
	p->total_bytes = total_bytes;
	p->start = prog_now();
	p->next_draw = p->start + DRAW_PERIOD;
}

double prog_elapsed(const struct progress *p)
{
	return prog_now() - p->start;
}

/* Formats n with a k/M/G suffix (powers of 1000) into buf. */
static void human(char *buf, size_t len, double n, const char *unit)
{
	static const char *const suffix[] = {"", "k", "M", "G", "T"};
	int i = 0;
	while (n >= 1000 && i < 4) {
		n /= 1000;
		i++;
	}
	snprintf(buf, len, i ? "%.2f %s%s" : "%.0f %s%s", n, suffix[i], unit);
}

void prog_update(struct progress *p, uint64_t rows, uint64_t bytes)
{
	if (!p->enabled || ++p->calls < 1024)
		return;
	p->calls = 0;
	double now = prog_now();
	if (now < p->next_draw)
		return;
	p->next_draw = now + DRAW_PERIOD;
	double secs = now - p->start;
	char r[32], b[32], rate[32], tail[128] = "";
	human(r, sizeof(r), (double)rows, "rows");
	human(b, sizeof(b), (double)bytes, "B");
	human(rate, sizeof(rate), secs > 0 ? (double)rows / secs : 0, "rows/s");
	if (p->total_bytes > 0) {
		double f = (double)bytes / (double)p->total_bytes;
		if (f > 1)
			f = 1;
		char bar[BAR_WIDTH + 1];
		int fill = (int)(f * BAR_WIDTH);
		for (int i = 0; i < BAR_WIDTH; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[BAR_WIDTH] = '\0';
		double eta = f > 0 ? secs / f - secs : 0;
		snprintf(tail, sizeof(tail), "  [%s] %3.0f%%  ETA %d:%02d", bar, f * 100,
		         (int)eta / 60, (int)eta % 60);
	}
	fprintf(stderr, "\r\033[K%s  %s  %s%s", r, b, rate, tail);
	p->drawn = true;
}

void prog_clear(struct progress *p)
{
	if (p->drawn)
		fputs("\r\033[K", stderr);
	p->drawn = false;
}

void prog_phase(struct progress *p, const char *what)
{
	if (!p->enabled)
		return;
	prog_clear(p);
	fprintf(stderr, "%s...", what);
	p->drawn = true;
}
