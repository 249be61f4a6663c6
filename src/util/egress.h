/* SPDX-License-Identifier: MIT */
/*
 * egress — the one place P makes a socket that leaves the host (direct TCP and UDP, the DNS
 * forwarder's upstreams, the proxy connection, ICMP echo), so that `--iface` can bind every one of them.
 */
#ifndef CHILDFLOW_UTIL_EGRESS_H
#define CHILDFLOW_UTIL_EGRESS_H

#include <net/if.h>
#include <sys/socket.h>

/* Where upstream sockets leave: ifname "" lets the host's routing choose. */
struct egress {
	char ifname[IFNAMSIZ];
};

/**
 * egress_socket() - a fresh socket towards @dst, bound to @eg's interface
 * @eg: the egress (NULL or an empty ifname: not bound)
 * @dst: where the socket will connect or send (its family is the socket's)
 * @type: SOCK_STREAM, SOCK_DGRAM or SOCK_RAW, with SOCK_NONBLOCK / SOCK_CLOEXEC as the caller wants
 * @proto: the protocol (0, or IPPROTO_ICMP/ICMPV6 for echo sockets)
 *
 * With an interface, the socket is bound to it by SO_BINDTODEVICE (allowed unprivileged on a socket
 * not yet bound or connected, since Linux 5.7): the kernel routes it out of that device only and
 * takes the device's address as its source; a device that is down makes connect() and send()
 * fail with ENETUNREACH at once.  A loopback @dst is never bound: it does not leave the host (a
 * nameserver or proxy on 127.0.0.1), and a bound socket could not reach it.
 *
 * Return: the fd, or -errno (-ENETUNREACH when the interface no longer exists).
 */
int egress_socket(const struct egress *eg, const struct sockaddr_storage *dst, int type, int proto);

#endif
