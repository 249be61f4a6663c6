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

int fdpass_recv(int sock, void *buf, size_t len, int *fds, int max, int *nfds)
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
		r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int got[FDPASS_MAX];

		memcpy(got, CMSG_DATA(c), sizeof(int) * (n > FDPASS_MAX ? FDPASS_MAX : n));
		for (int i = 0; i < n && i < FDPASS_MAX; i++) {
			if (*nfds < max)
				fds[(*nfds)++] = got[i];
			else
				close(got[i]);   /* never keep fds nobody asked for */
		}
	}
	return (int)r;
}
