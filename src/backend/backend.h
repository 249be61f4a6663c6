/* SPDX-License-Identifier: MIT */
/*
 * backend — what the relay needs from whoever built the interception (design §2).
 *
 * A backend owns the namespaces, the link and the processes around the command, and hands the relay
 * the transparent listeners of the interception namespace.  The rootless sandbox (src/sandbox/) is one
 * backend; the rootful one (--root) will be another, and the relay must not know which it runs on:
 * it reaches the backend only through these operations (relay/ never includes sandbox/).
 *
 * Life of a backend, as the relay sees it:
 *   started (by its own start function, before the relay exists)
 *     -> running: listeners deliver flows; ns_socket() hands out interception-namespace sockets;
 *        signal() is called for every signal P receives
 *     -> lifetime_fd() readable: the command tree has exited (or was killed)
 *     -> finish(): reaps what is left and says childflow's exit code
 *     -> release(): the relay has drained; the last references (the child's netns) may go
 *   kill() may be called at any time: it tears the tree down; finish() still follows.
 */
#ifndef CHILDFLOW_BACKEND_H
#define CHILDFLOW_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/netplan.h"

/* The transparent listeners: TCP and UDP take every flow; DNS (UDP port 53, matched first) goes to
 * the DNS forwarder's own listeners, which answer from the address the child wrote to. */
enum be_listener { BE_TCP4, BE_TCP6, BE_UDP4, BE_UDP6, BE_DNS4, BE_DNS6, BE_NLISTEN };

/* Kinds of socket that must be created inside the interception namespace. */
enum be_sock_kind {
	BE_SOCK_UDP4,   /* AF_INET SOCK_DGRAM, non-blocking, close-on-exec */
	BE_SOCK_UDP6,   /* AF_INET6 SOCK_DGRAM */
	BE_SOCK_N
};

/*
 * The SYN gate's contract between a backend's ruleset and the relay: new TCP SYNs from the child
 * wait in NFQUEUE BE_GATE_QUEUE; a verdict NF_ACCEPT lets one through, NF_ACCEPT with one of these
 * marks makes the ruleset reject it as the destination did, NF_DROP drops it (relay/gate.c).
 */
#define BE_GATE_QUEUE 0
#define BE_GATE_MARK_RESET 0x12u          /* tcp reset: ECONNREFUSED */
#define BE_GATE_MARK_HOST_UNREACH 0x13u   /* icmp host unreachable: EHOSTUNREACH */
#define BE_GATE_MARK_NET_UNREACH 0x14u    /* icmp no route: ENETUNREACH */
#define BE_GATE_MARK_PROHIBITED 0x15u     /* icmp admin prohibited: EACCES (IPv6), EHOSTUNREACH (IPv4) */

/*
 * The echo queue: the child's ICMP and ICMPv6 echo requests wait in NFQUEUE BE_ECHO_QUEUE, copied
 * whole.  NF_DROP: the relay took it (it answers through inject_fd() with what upstream answered);
 * NF_ACCEPT: the ruleset answers it "administratively prohibited" (relay/echo.c).
 */
#define BE_ECHO_QUEUE 1

/*
 * The capture point on the child's link: an AF_PACKET socket (SOCK_RAW, every protocol) bound to the
 * interception side of the link before the link came up, with a TPACKET_V3 receive ring of
 * @block_nr blocks of @block_size bytes, each handed to user space when full or after @retire_ms.
 * Frames are Ethernet; PACKET_OUTGOING ones go to the child, the others came from it.
 */
struct be_capture {
	int fd;                       /* owned by the backend (closed by release()) */
	unsigned int block_size, block_nr, retire_ms;
	const char *ifname;           /* the interface captured on */
	const char *backend;          /* the backend's name in capture metadata ("rootless-internal") */
};

struct backend;

struct backend_ops {
	const char *name;   /* "rootless", "rootful" */

	/* The transparent listener of kind @k, owned by the backend, or -1 when not offered. */
	int (*listener)(const struct backend *b, enum be_listener k);

	/* The SYN gate's queue socket (NETLINK_NETFILTER, bound to BE_GATE_QUEUE), owned by the
	 * backend, or -1 when this host cannot gate (handshakes then complete at once). */
	int (*gate_fd)(const struct backend *b);

	/* The echo queue's socket (NETLINK_NETFILTER, bound to BE_ECHO_QUEUE), owned by the backend,
	 * or -1 (echo requests are then answered "administratively prohibited" by the ruleset). */
	int (*echo_fd)(const struct backend *b);

	/* A raw socket of the interception namespace (IPPROTO_RAW: the caller writes whole IPv4 or
	 * IPv6 packets, any source address) through which errors from upstream reach the child as the
	 * ICMP the sender sent; owned by the backend, -1 when not offered. */
	int (*inject_fd)(const struct backend *b, int family);

	/* The capture point (when asked for at start); Return: 0, or -ENOENT when there is none. */
	int (*capture)(const struct backend *b, struct be_capture *out);

	/*
	 * ns_socket() - take a socket created in the interception namespace; the caller owns it.
	 * Never blocks: the backend keeps a pool and refills it asynchronously.
	 * Return: the fd; -EAGAIN when the pool is empty (a refill is under way: ctl_fd() becomes
	 * readable, and after on_ctl() the call may succeed); another -errno when it cannot work.
	 */
	int (*ns_socket)(struct backend *b, enum be_sock_kind k);

	/* The fd to watch for EPOLLIN (answers from the backend's helpers), or -1; on_ctl() handles it.
	 * on_ctl() returns true when new ns sockets arrived. */
	int (*ctl_fd)(const struct backend *b);
	bool (*on_ctl)(struct backend *b);

	/* Readable (EPOLLIN) once the command tree has exited. */
	int (*lifetime_fd)(const struct backend *b);

	/*
	 * signal() - P received @sig (@from_terminal: generated by the terminal, si_code SI_KERNEL).
	 * The backend forwards it to the command, or, before the command exists, lets a terminating
	 * signal abort the setup (finish() then says 128+N).  Return: 0, or -errno when it could not be
	 * delivered (never silently: the backend retries or reports).
	 */
	int (*signal)(struct backend *b, int sig, bool from_terminal);

	/* Tear the command tree down now. */
	void (*kill)(struct backend *b);

	/* After lifetime_fd() became readable (or after kill()): reap, and return childflow's exit code. */
	int (*finish)(struct backend *b);

	/* The relay has drained: drop what kept the child's side alive.  Also frees listeners. */
	void (*release)(struct backend *b);

	/* How many fds the backend holds in P at most (listeners, pools, control sockets): the relay
	 * keeps them out of its budget. */
	unsigned int (*reserved_fds)(const struct backend *b);

	/* The link between the interception and child namespaces (the guard refuses it as a destination). */
	const struct netplan *(*netplan)(const struct backend *b);

	/* The files holding the command's resolv.conf text, open for writing (owned by the backend):
	 * the forwarder rewrites them in place when the host's changes.  Return: how many are in
	 * *@fds; 0 until the command has started. */
	int (*child_resolv_fds)(const struct backend *b, const int **fds);
};

/* A backend and its operations travel together. */
struct backend_ref {
	const struct backend_ops *ops;
	struct backend *b;
};

#endif
