/* SPDX-License-Identifier: MIT */
/* egress — upstream sockets, bound to `--iface` when it is given (util/egress.h). */
#include "util/egress.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>

static int is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return 0;
}

int egress_socket(const struct egress *eg, const struct sockaddr_storage *dst, int type, int proto)
{
	int fd = socket(dst->ss_family, type, proto);

	if (fd < 0)
		return -errno;
	if (!eg || !eg->ifname[0] || is_loopback(dst))
		return fd;
	if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, eg->ifname, (socklen_t)strlen(eg->ifname)) < 0) {
		int e = errno;

		close(fd);
		/* The interface went away during the run: the network behind it is unreachable. */
		return -(e == ENODEV ? ENETUNREACH : e);
	}
	return fd;
}
