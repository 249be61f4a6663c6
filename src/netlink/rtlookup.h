/* SPDX-License-Identifier: MIT */
/*
 * rtlookup — ask the kernel how it would route one destination (RTM_GETROUTE), over libmnl.
 *
 * The answer is the route an unbound, unmarked socket of this process would use, in the network
 * namespace the lookup socket was opened in.  The kernel answers a request synchronously, while the
 * request is being sent, so the socket is non-blocking and a lookup never waits: one sendto() and
 * one recvfrom().
 */
#ifndef CHILDFLOW_RTLOOKUP_H
#define CHILDFLOW_RTLOOKUP_H

struct rtlookup;

/* What the kernel said about one destination. */
struct rt_answer {
	int type;       /* RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST, ...; RTN_UNREACHABLE when there is no route */
	int oif;        /* output interface index, 0 if none */
	int error;      /* with RTN_UNREACHABLE: the kernel's errno (ENETUNREACH, EHOSTUNREACH, EACCES) */
};

/* Return: a lookup socket (non-blocking, close-on-exec), or NULL with errno set. */
struct rtlookup *rtlookup_open(void);
void rtlookup_close(struct rtlookup *rl);

/**
 * rtlookup_get() - route lookup of one destination
 * @rl: from rtlookup_open()
 * @family: AF_INET or AF_INET6
 * @addr: 4 or 16 bytes, network order
 * @ans: the answer
 *
 * A destination the kernel has no route for (ENETUNREACH, EHOSTUNREACH, EACCES) is an answer, not
 * a failure: @ans->type is RTN_UNREACHABLE and @ans->error the errno.
 *
 * Return: 0 with @ans filled, or -errno when no answer could be had (socket error, EAGAIN, a reply
 * that does not parse, any other error from the kernel).
 */
int rtlookup_get(struct rtlookup *rl, int family, const void *addr, struct rt_answer *ans);

#endif
