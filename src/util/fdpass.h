/* SPDX-License-Identifier: MIT */
/* fdpass — move file descriptors between childflow's processes with SCM_RIGHTS. */
#ifndef CHILDFLOW_FDPASS_H
#define CHILDFLOW_FDPASS_H

#include <stddef.h>

#define FDPASS_MAX 8

/* Send @n fds (n may be 0) with a small payload.  Returns 0 or -errno. */
int fdpass_send(int sock, const void *buf, size_t len, const int *fds, int n);

/*
 * Receive one message into @buf (at most @len bytes) and up to @max fds (made O_CLOEXEC).
 * Returns the payload length (0 on EOF) or -errno; *nfds is set to the number of fds received.
 */
int fdpass_recv(int sock, void *buf, size_t len, int *fds, int max, int *nfds);

#endif
