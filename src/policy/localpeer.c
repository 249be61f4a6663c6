/* SPDX-License-Identifier: MIT */
#include "policy/localpeer.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <libmnl/libmnl.h>

/* Every state in which the socket can be the other end of a connection that is still open. */
#define PEER_STATES ((1u << TCP_ESTABLISHED) | (1u << TCP_SYN_RECV) | (1u << TCP_FIN_WAIT1) | \
		     (1u << TCP_FIN_WAIT2) | (1u << TCP_CLOSE_WAIT) | (1u << TCP_LAST_ACK) | \
		     (1u << TCP_CLOSING))

int localpeer_open(void)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/*
 * dump() - the TCP sockets, of either family, whose remote endpoint is @local (any port when @any_port):
 * their remote ports (network order) go to @ports (at most @max; more are counted, not stored).
 * Return: how many there are, or -errno.  The old TCPDIAG_GETSOCK request is used on purpose: it is the one that dumps
 * both families in a single walk of the kernel's table (SOCK_DIAG_BY_FAMILY takes one family), and
 * the walk over every bucket of that (global) table is the whole cost of the check.
 */
static int dump(int diag_fd, const struct sockaddr_storage *local, bool any_port, uint16_t *ports, int max)
{
	static unsigned int seq;
	char buf[8192];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct inet_diag_req *req;
	struct {
		struct inet_diag_bc_op op;
		struct inet_diag_hostcond cond;
		unsigned char addr[16];
	} bc;
	size_t alen = local->ss_family == AF_INET ? 4 : 16;
	size_t bclen = sizeof(bc.op) + sizeof(bc.cond) + alen;
	int found = 0;

	nlh->nlmsg_type = TCPDIAG_GETSOCK;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = ++seq;
	req = mnl_nlmsg_put_extra_header(nlh, sizeof(*req));
	req->idiag_family = local->ss_family;
	req->idiag_states = PEER_STATES;
	/* Bytecode: one "destination is" condition; on a match fall off the end (accept), else jump
	 * 4 bytes past it (reject).  An AF_INET condition also matches v4-mapped IPv6 sockets. */
	memset(&bc, 0, sizeof(bc));
	bc.op.code = INET_DIAG_BC_D_COND;
	bc.op.yes = (unsigned char)bclen;
	bc.op.no = (unsigned short)(bclen + 4);
	bc.cond.family = local->ss_family;
	bc.cond.prefix_len = (unsigned char)(alen * 8);
	if (local->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)local;

		bc.cond.port = any_port ? -1 : ntohs(s->sin_port);
		memcpy(bc.addr, &s->sin_addr, 4);
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)local;

		bc.cond.port = any_port ? -1 : ntohs(s->sin6_port);
		memcpy(bc.addr, &s->sin6_addr, 16);
	}
	mnl_attr_put(nlh, INET_DIAG_REQ_BYTECODE, bclen, &bc);

	if (send(diag_fd, nlh, nlh->nlmsg_len, 0) < 0)
		return -errno;
	for (;;) {
		/* Non-blocking: each part of a dump is produced inside send() and recv() themselves. */
		ssize_t n = recv(diag_fd, buf, sizeof(buf), MSG_DONTWAIT);
		int len;

		if (n < 0)
			return -errno;
		len = (int)n;
		for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; mnl_nlmsg_ok(h, len);
		     h = mnl_nlmsg_next(h, &len)) {
			if (h->nlmsg_seq != seq)
				continue;
			if (h->nlmsg_type == NLMSG_DONE)
				return found;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = mnl_nlmsg_get_payload(h);

				return e->error < 0 ? e->error : -EBADMSG;
			}
			if (h->nlmsg_type == TCPDIAG_GETSOCK) {
				const struct inet_diag_msg *m = mnl_nlmsg_get_payload(h);

				if (found < max)
					ports[found] = m->id.idiag_dport;
				found++;
			}
		}
	}
}

int localpeer_check(int diag_fd, int fd)
{
	struct sockaddr_storage local = { 0 };
	socklen_t len = sizeof(local);

	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return -errno;
	if (local.ss_family != AF_INET && local.ss_family != AF_INET6)
		return -EAFNOSUPPORT;
	return dump(diag_fd, &local, false, NULL, 0) > 0;
}

int localpeer_scan(int diag_fd, const struct sockaddr_storage *addr, uint16_t *ports, int max)
{
	if (addr->ss_family != AF_INET && addr->ss_family != AF_INET6)
		return -EAFNOSUPPORT;
	return dump(diag_fd, addr, true, ports, max);
}
