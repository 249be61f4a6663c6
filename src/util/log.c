/* SPDX-License-Identifier: MIT */
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>

static bool debug_on;
static struct timespec t_start;   /* debug lines carry milliseconds since start-up */
/*
 * Once P relays, the command shares its stderr and can stop it (a stopped terminal, a pipe nobody
 * reads): a blocking write would freeze every flow.  log_nonblocking() switches P to its own
 * non-blocking open file description of the same file; a line that cannot be written at once is
 * dropped and counted.
 */
static int log_fd = STDERR_FILENO;
static bool log_is_socket;
static bool log_poll;
static unsigned long dropped;
static bool crlf;                 /* the terminal is raw (tty/pty.c): lines end in CR LF */

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
	if ((size_t)n >= sizeof(line) - 2)
		n = sizeof(line) - 3;
	if (crlf)
		line[n++] = '\r';
	line[n++] = '\n';
	struct pollfd pf = { .fd = log_fd, .events = POLLOUT };
	ssize_t w = -1;

	if (log_is_socket)
		w = send(log_fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	else if (!log_poll || (poll(&pf, 1, 0) == 1 && (pf.revents & POLLOUT)))
		w = write(log_fd, line, (size_t)n);
	if (w != n)
		dropped++;
	errno = saved;
}

void log_nonblocking(void)
{
	int fd, fl;
	struct stat st;

	if (log_fd != STDERR_FILENO || fstat(STDERR_FILENO, &st) < 0)
		return;
	if (S_ISSOCK(st.st_mode)) {
		log_is_socket = true;   /* send(MSG_DONTWAIT) never blocks */
		return;
	}
	/* A regular file never stalls a write, and a description of our own would start at offset 0
	 * (without the caller's O_APPEND) and overwrite what is already in the file. */
	if (S_ISREG(st.st_mode))
		return;
	/* A new open file description: O_NONBLOCK on it does not change the caller's stderr. */
	fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
	if (fl < 0 || !(fl & O_NONBLOCK)) {
		/* Not reopenable: write only when poll() says a line fits. */
		if (fd >= 0)
			close(fd);
		log_poll = true;
		return;
	}
	log_fd = fd;
}

void log_crlf(bool on)
{
	crlf = on;
}

unsigned long log_dropped(void)
{
	return dropped;
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
