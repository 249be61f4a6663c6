/* SPDX-License-Identifier: MIT */
#include "util/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static bool debug_on;
static struct timespec t_start;   /* debug lines carry milliseconds since start-up */

/* CHILDFLOW_DEBUG accepts the same truthy spellings as the reference tool. */
void log_init(void)
{
	const char *v = getenv("CHILDFLOW_DEBUG");

	clock_gettime(CLOCK_MONOTONIC, &t_start);
	debug_on = v && (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "TRUE") ||
			 !strcmp(v, "yes") || !strcmp(v, "on"));
}

bool log_debug_enabled(void)
{
	return debug_on;
}

/* One write() per line so that lines from P, the gateway agent and the child never interleave. */
static void vlog(const char *prefix, const char *fmt, va_list ap)
{
	char line[1024];
	int saved = errno;
	int n = snprintf(line, sizeof(line), "childflow: %s", prefix);

	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if ((size_t)n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
	errno = saved;
}

void log_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog("", fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog("warning: ", fmt, ap);
	va_end(ap);
}

void log_debug(const char *fmt, ...)
{
	struct timespec now;
	char prefix[48];
	va_list ap;

	if (!debug_on)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	snprintf(prefix, sizeof(prefix), "debug: [%d %.3f ms] ", (int)getpid(),
		 (double)(now.tv_sec - t_start.tv_sec) * 1e3 + (double)(now.tv_nsec - t_start.tv_nsec) / 1e6);
	va_start(ap, fmt);
	vlog(prefix, fmt, ap);
	va_end(ap);
}
