/* SPDX-License-Identifier: MIT */
/*
 * root/netns — which network namespace a --root state record names, and whether that namespace
 * still exists.  The nsfs inode number alone is not enough: the kernel reuses it as soon as a
 * namespace is freed.  The netns cookie (SO_NETNS_COOKIE, Linux 5.14) is never reused within a
 * boot, and ROOT_STATE_DIR lives in /run, which a boot empties.  Internal to src/root/.
 */
#ifndef CHILDFLOW_ROOT_NETNS_H
#define CHILDFLOW_ROOT_NETNS_H

#include <stdint.h>

struct root_netns {
	uint64_t dev, ino;   /* of /proc/self/ns/net */
	uint64_t cookie;     /* 0: unknown (a kernel without SO_NETNS_COOKIE, or an old record) */
};

/* root_netns_self() - our own namespace's identity into @id.  Return: 0 or -errno. */
int root_netns_self(struct root_netns *id);

enum root_netns_fate {
	ROOT_NETNS_OURS,      /* our namespace: the record is ours to restore */
	ROOT_NETNS_GONE,      /* no longer exists: its sysctls died with it, only the record is left */
	ROOT_NETNS_ELSEWHERE, /* another live namespace, or one we cannot tell apart: left alone */
};

/*
 * root_netns_fate() - what the namespace @rec (from a record whose runs are gone) is to us, @self.
 * The inode equal to ours: ours when the cookies are equal, gone when they differ.  Otherwise the
 * inode is looked for among every task's namespace, every open nsfs file and every nsfs mount of
 * every mount namespace under /proc: not found is gone; found, it is entered (in a child) to read
 * its cookie, and a different cookie is gone too.  A record without a cookie (an older childflow)
 * is never "ours" while we have one (its inode may be a reused one), and is "gone" only when
 * nothing holds its inode; on a kernel without cookies, the inode alone decides "ours", as before.
 * Not seen: a namespace held only by a socket, or by processes outside our PID namespace.
 */
enum root_netns_fate root_netns_fate(const struct root_netns *rec, const struct root_netns *self);

#endif
