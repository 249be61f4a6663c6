/* SPDX-License-Identifier: MIT */
/* fdpass — move file descriptors between childflow's processes with SCM_RIGHTS. */
#ifndef CHILDFLOW_FDPASS_H
#define CHILDFLOW_FDPASS_H

#include <stddef.h>

#define FDPASS_MAX 16

/* Send @n fds (n may be 0) with a small payload.  Returns 0 or -errno. */
int fdpass_send(int sock, const void *buf, size_t len, const int *fds, int n);

/*
 * fdpass_recv() - receive one message into @buf (at most @len bytes) and up to @max fds (made
 * O_CLOEXEC); @flags are recvmsg() flags (MSG_DONTWAIT).  Fds beyond @max are closed.
 * Return: the payload length (0 on EOF) or -errno; -EMSGSIZE when the payload or the fds were
 * truncated (MSG_TRUNC/MSG_CTRUNC): then every fd that arrived is closed and *nfds is 0.
 */
int fdpass_recv(int sock, void *buf, size_t len, int *fds, int max, int *nfds, int flags);

#endif
