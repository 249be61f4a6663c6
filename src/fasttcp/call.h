/* SPDX-License-Identifier: MIT */
/*
 * call — the pure part of --fast-tcp's reading of a seccomp notification: which call the command
 * made and with which arguments, and what its address bytes say.  Every byte here is the
 * command's (the syscall's registers, and the address copied out of its memory), so nothing may
 * be trusted; tests/fuzz/fuzz_fastcall.c feeds it anything.  Internal to src/fasttcp/.
 */
#ifndef CHILDFLOW_FASTTCP_CALL_H
#define CHILDFLOW_FASTTCP_CALL_H

#include <stddef.h>
#include <stdint.h>
#include <linux/seccomp.h>
#include <sys/socket.h>

enum ft_call_kind {
	FT_CONNECT,   /* connect(fd, addr, alen) */
	FT_BIND,      /* bind(fd, addr, alen) */
	FT_LISTEN,    /* listen(fd, backlog) */
	FT_SHARE,     /* epoll_ctl(ADD) of fd, dup/dup2/dup3/fcntl(F_DUPFD*) of fd: observed, then continued */
};

struct ft_call {
	enum ft_call_kind kind;
	int fd;              /* the command's socket (or the fd being shared) */
	uint64_t addr;       /* FT_CONNECT, FT_BIND: the address in the command's memory */
	socklen_t alen;      /* its length, at most sizeof(struct sockaddr_storage) */
	int backlog;         /* FT_LISTEN */
};

/*
 * ft_call_parse() - the call in @d (native x86_64 only).
 * Return: 0 with @c filled; -ENOSYS for another ABI or syscall, -EINVAL for an address longer than
 * a sockaddr_storage, -EBADF for an fd that is no int.
 */
int ft_call_parse(const struct seccomp_data *d, struct ft_call *c);

/*
 * ft_unix_name() - the path of an AF_UNIX address @ss (@alen bytes of it are the command's), as a
 * NUL-terminated string in @name (@size bytes, at least sizeof(sun_path) + 1).
 * Return: 1 a path, 0 no path (unnamed or abstract: used as is), -EINVAL a length the kernel
 * would refuse too (longer than a sockaddr_un).
 */
int ft_unix_name(const struct sockaddr_storage *ss, socklen_t alen, char *name, size_t size);

/*
 * ft_inet_port() - the port a bind() of an AF_INET/AF_INET6 socket with @ss (@alen bytes) asks for,
 * whatever its family says: the kernel takes an AF_UNSPEC address on an AF_INET socket as AF_INET.
 * Return: the port (0-65535), or -EINVAL when @alen does not reach it.
 */
int ft_inet_port(const struct sockaddr_storage *ss, socklen_t alen);

#endif
