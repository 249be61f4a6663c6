/* SPDX-License-Identifier: MIT */
/* Internal glue of the doctor's files (not for other modules). */
#ifndef CHILDFLOW_DOCTOR_INTERNAL_H
#define CHILDFLOW_DOCTOR_INTERNAL_H

#include <stddef.h>

#include "doctor/doctor.h"

/* Where a try stopped. */
enum try_stage {
	TRY_DONE,        /* fn ran (its result is in err) */
	TRY_FORK,        /* could not fork */
	TRY_USERNS,      /* unshare() of the namespaces failed (err) */
	TRY_MAP,         /* mapping ourselves to root in the new user namespace failed (err) */
	TRY_TIMEOUT,     /* fn did not finish in time (killed) */
	TRY_DIED,        /* the child died without a result (signal, or an exit of its own: status) */
};

struct try_result {
	enum try_stage stage;
	int err;                 /* positive errno, 0: success */
	int status;              /* TRY_DIED: the wait status */
	char msg[DOCTOR_TEXT_MAX];   /* fn's words, or the child's stderr (without "childflow: ") */
};

/*
 * doctor_try() - run @fn in a forked child, inside new namespaces @ns_flags (0, or flags that
 * include CLONE_NEWUSER: the child then maps its own uid and gid to 0 in it, as an unprivileged
 * caller may, and so holds every capability over the new namespaces).  Nothing it does reaches the
 * caller's namespaces: it dies with them.  @fn returns 0 or -errno and may write into @msg; the
 * child's stderr is captured into @out->msg when @fn wrote nothing.  Bounded by @timeout_ms.
 * Return: 0 when @fn succeeded, else -1 (see @out).
 */
int doctor_try(unsigned long ns_flags, int (*fn)(void *arg, char *msg, size_t len), void *arg,
	       int timeout_ms, struct try_result *out);

/* The fix that installs a package on this distribution ("apt-get install uidmap", ...). */
const char *doctor_install_cmd(const char *deb, const char *rpm, const char *arch, char *buf, size_t len);

/* Is this a Debian-family system (/etc/os-release ID or ID_LIKE)? */
bool doctor_is_debian(void);

/* The persistent form of a sysctl fix: "sysctl -w K=V (to keep it: echo 'K=V' > /etc/sysctl.d/...)". */
const char *doctor_sysctl_fix(const char *key, const char *value, char *buf, size_t len);

#endif
