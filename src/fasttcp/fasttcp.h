/* SPDX-License-Identifier: MIT */
/*
 * fasttcp — --fast-tcp: the command's TCP connects made from the caller's namespace and handed to
 * it (seccomp user notification, pidfd_getfd, SECCOMP_IOCTL_NOTIF_ADDFD), at direct speed.
 *
 * The command's connect(), bind() and listen() wait in a seccomp notification (sandbox/fastfilter.c)
 * until P answers.  P never lets the kernel continue one of them: it performs each call itself, on
 * its own copy of the socket (pidfd_getfd) with its own copy of the address (read once, checked
 * still valid after the read), or refuses it.  A connect is *injected* (a socket of P's namespace,
 * connected by P, installed over the command's fd) only when the relay would have dialled it
 * directly: the command's socket belongs to the sandbox's own netns, TCP over IPv4/IPv6, fresh, not
 * bound to an address, device or mark, not registered with an epoll set nor shared by another fd
 * of the caller, and the policy (guard first) says POL_DIRECT, and no service claims it; every
 * other connect is performed on the command's own socket, where it enters the relay as before.
 * States of a connect and the reasons are in docs/architecture.md ("--fast-tcp").
 */
#ifndef CHILDFLOW_FASTTCP_H
#define CHILDFLOW_FASTTCP_H

#include <stdbool.h>
#include <stdint.h>

#include "relay/relay.h"

struct ctx;
struct fasttcp;

struct fasttcp_stats {
	uint64_t notifications, injected, performed, refused, host_guarded, bind_listen, fell_back, shares;
};

/*
 * fasttcp_kernel_ok() - does this kernel have what --fast-tcp needs (Linux >= 5.19)?
 * Return: true, or false with @why set to a static text.
 */
bool fasttcp_kernel_ok(const char **why);

/*
 * fasttcp_new() - the handler, around @chan (P's end of the channel the command sends its listener
 * on; owned from now on).  @inject false: perform every connect in the sandbox (a capture view that
 * needs the packets).  @c must outlive it (its policy, service and name lookup are asked).
 * Return: 0 or -errno.
 */
int fasttcp_new(struct fasttcp **fp, struct ctx *c, int chan, bool inject);

/* The relay drives it as a hook (relay_add_hook()). */
struct relay_hook fasttcp_hook(struct fasttcp *f);

const struct fasttcp_stats *fasttcp_stats(const struct fasttcp *f);

void fasttcp_free(struct fasttcp *f);

#endif
