/* SPDX-License-Identifier: MIT */
#include "util/fdpass.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int fdpass_send(int sock, const void *buf, size_t len, const int *fds, int n)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * FDPASS_MAX)];
		struct cmsghdr align;
	} cb;
	struct iovec io = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1 };

	if (n < 0 || n > FDPASS_MAX)
		return -EINVAL;
	if (n > 0) {
		memset(&cb, 0, sizeof(cb));
		m.msg_control = cb.b;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	}
	for (;;) {
		if (sendmsg(sock, &m, MSG_NOSIGNAL) >= 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

int fdpass_recv(int sock, void *buf, size_t len, int *fds, int max, int *nfds, int flags)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * FDPASS_MAX)];
		struct cmsghdr align;
	} cb;
	struct iovec io = { .iov_base = buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cb.b,
			    .msg_controllen = sizeof(cb.b) };
	ssize_t r;

	*nfds = 0;
	do
		r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int got[FDPASS_MAX];

		if (n > FDPASS_MAX)
			n = FDPASS_MAX;   /* cannot happen: the control buffer holds FDPASS_MAX */
		memcpy(got, CMSG_DATA(c), sizeof(int) * (size_t)n);
		for (int i = 0; i < n; i++) {
			if (*nfds < max && !(m.msg_flags & (MSG_CTRUNC | MSG_TRUNC)))
				fds[(*nfds)++] = got[i];
			else
				close(got[i]);   /* never keep fds nobody asked for */
		}
	}
	if (m.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) {
		/* Part of the message was cut off: what arrived cannot be trusted as a whole. */
		for (int i = 0; i < *nfds; i++)
			close(fds[i]);
		*nfds = 0;
		return -EMSGSIZE;
	}
	return (int)r;
}
