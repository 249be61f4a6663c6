/* SPDX-License-Identifier: MIT */
/* call — the command's syscall and address bytes, read without trusting them (see call.h). */
#include "fasttcp/call.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <linux/audit.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/un.h>

static int fd_arg(uint64_t v, int *fd)
{
	/* The kernel reads an int (the low 32 bits); a negative one is its EBADF. */
	int32_t i = (int32_t)(uint32_t)v;

	if (i < 0)
		return -EBADF;
	*fd = i;
	return 0;
}

int ft_call_parse(const struct seccomp_data *d, struct ft_call *c)
{
	memset(c, 0, sizeof(*c));
	if (d->arch != AUDIT_ARCH_X86_64)
		return -ENOSYS;
	switch (d->nr) {
	case __NR_connect:
	case __NR_bind:
		c->kind = d->nr == __NR_connect ? FT_CONNECT : FT_BIND;
		if ((uint32_t)d->args[2] > sizeof(struct sockaddr_storage))
			return -EINVAL;
		c->addr = d->args[1];
		c->alen = (socklen_t)(uint32_t)d->args[2];
		return fd_arg(d->args[0], &c->fd);
	case __NR_listen:
		c->kind = FT_LISTEN;
		c->backlog = (int)(int32_t)(uint32_t)d->args[1];
		return fd_arg(d->args[0], &c->fd);
	case __NR_epoll_ctl:
		if ((int)(uint32_t)d->args[1] != EPOLL_CTL_ADD)
			return -ENOSYS;
		c->kind = FT_SHARE;
		return fd_arg(d->args[2], &c->fd);
	case __NR_fcntl:
		if ((int)(uint32_t)d->args[1] != F_DUPFD && (int)(uint32_t)d->args[1] != F_DUPFD_CLOEXEC)
			return -ENOSYS;
		/* fall through */
	case __NR_dup:
	case __NR_dup2:
	case __NR_dup3:
		c->kind = FT_SHARE;
		return fd_arg(d->args[0], &c->fd);
	default:
		return -ENOSYS;
	}
}

int ft_unix_name(const struct sockaddr_storage *ss, socklen_t alen, char *name, size_t size)
{
	const struct sockaddr_un *su = (const struct sockaddr_un *)ss;
	size_t off = offsetof(struct sockaddr_un, sun_path), n;

	if (alen > sizeof(struct sockaddr_un) || size < sizeof(su->sun_path) + 1)
		return -EINVAL;
	if (alen <= off || su->sun_path[0] == '\0')
		return 0;
	n = strnlen(su->sun_path, alen - off);
	memcpy(name, su->sun_path, n);
	name[n] = '\0';
	return 1;
}

int ft_inet_port(const struct sockaddr_storage *ss, socklen_t alen)
{
	/* sin_port and sin6_port are at the same offset */
	if (alen < offsetof(struct sockaddr_in, sin_port) + sizeof(in_port_t))
		return -EINVAL;
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}
