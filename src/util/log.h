/* SPDX-License-Identifier: MIT */
/* log — the one place childflow writes diagnostics: "childflow: ..." lines on stderr. */
#ifndef CHILDFLOW_LOG_H
#define CHILDFLOW_LOG_H

#include <stdbool.h>

/* Exit codes childflow itself uses (README "Exit status"). */
enum {
	EXIT_USAGE = 2,        /* bad flags or values */
	EXIT_SETUP = 125,      /* childflow could not set up or run the sandbox */
	EXIT_NOEXEC = 126,     /* the command exists but could not be executed */
	EXIT_NOTFOUND = 127,   /* the command was not found */
};

void log_init(void);
bool log_debug_enabled(void);
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* From now on never block on stderr (P while relaying): lines that cannot be written are dropped. */
void log_nonblocking(void);
/* Lines dropped so far. */
unsigned long log_dropped(void);
/* log_crlf() - end lines in CR LF while the caller's terminal is in raw mode (tty/pty.c). */
void log_crlf(bool on);

#endif
