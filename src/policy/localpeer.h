/* SPDX-License-Identifier: MIT */
/*
 * localpeer — does a connected TCP socket in fact end on this host?
 *
 * NAT in the host's output path (nft `redirect`, DNAT to 127.0.0.1 or to an address of the host)
 * changes where a connection goes without changing what the socket reports: getpeername() still
 * returns the address that was dialled.  But the other end is then a socket in this same network
 * namespace, and its remote endpoint is our local endpoint.  NETLINK_SOCK_DIAG (what `ss` uses; no
 * privilege needed, it sees the sockets of its own namespace) finds such a socket, in any state
 * that can be a live peer of ours: SYN-RECV (not yet accepted) to CLOSING, but not TIME-WAIT.
 */
#ifndef CHILDFLOW_POLICY_LOCALPEER_H
#define CHILDFLOW_POLICY_LOCALPEER_H

#include <stdint.h>
#include <sys/socket.h>

/* Return: a sock_diag socket (non-blocking, close-on-exec), or -errno. */
int localpeer_open(void);

/**
 * localpeer_check() - is the peer of connected TCP socket @fd a socket of this namespace?
 * @diag_fd: from localpeer_open()
 * @fd: a connected TCP socket (AF_INET or AF_INET6)
 *
 * The kernel walks its table of connected TCP sockets with a filter for "remote endpoint equals
 * @fd's local endpoint" (IPv4 endpoints are also looked for as v4-mapped ones on IPv6 sockets).
 *
 * Return: 1 if such a socket exists, 0 if none, -errno when it cannot be told (-ENOENT: the kernel
 * has no tcp_diag).
 */
int localpeer_check(int diag_fd, int fd);

/**
 * localpeer_scan() - the same walk for many sockets at once: which sockets of this namespace have
 * @addr (any port) as their remote endpoint?
 * @diag_fd: from localpeer_open()
 * @addr: a local address of ours (its port is ignored)
 * @ports: filled with those sockets' remote ports (network order), at most @max
 *
 * Return: how many there are (may exceed @max), or -errno.
 */
int localpeer_scan(int diag_fd, const struct sockaddr_storage *addr, uint16_t *ports, int max);

#endif
