/* SPDX-License-Identifier: MIT */
/*
 * gateway — G, the gateway agent: uid 0 with every capability in its user namespace U1, and the
 * network namespace N1 that holds gw0, the TPROXY ruleset and the transparent listeners.
 *
 * States (messages are gwproto.h's):
 *   UNSHARE    unshare(USER|NET)                           -> HELLO_UNSHARED to P
 *   PLAN       P wrote our maps                             <- IDMAP_PLAN (C's maps)
 *   FORK_C     fork C; while C unshares: lo, policy routing, ruleset, listeners (and the capture's
 *              packet socket with its ring)                                  -> LISTENERS to P,
 *              then SANDBOX_POOL_FILL UDP sockets per family                   -> UDP_SOCKETS to P
 *   MAP_C      <- C_UNSHARED: write C's maps, veth (peer in N2, with a MAC chosen here), the
 *              capture bound to gw0, addresses, (--root: the child's neighbours and the ingress
 *              bridge gw0 <-> up0), gw0 up
 *                                                           -> CHILD_NETNS to P, C_LINK_READY to C
 *   SERVE      until C exits: P's socket requests (UDP_SOCKETS, in batches);
 *              <- C_LINK_UP: wait until gw0 carries frames  -> C_GO to C
 *              <- C_INIT_STARTED                            -> CMD_STARTED to P
 *   EXIT       reap C (its pid leaves the shared page first) and exit with its status
 * Any failure prints one line, sets shared->setup_failed and exits (sandbox_setup_fail()).
 */
#include "sandbox/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "netlink/nfq.h"
#include "netlink/nl.h"
#include "nft/gateway.h"
#include "sandbox/gwproto.h"
#include "util/explain.h"
#include "util/log.h"
#include "util/proc.h"

struct gw {
	const struct sandbox_config *cfg;
	const struct netplan *np;
	struct sandbox_shared *sh;
	struct nl *nl;                /* open until gw0 is known to be operational */
	int psock;                    /* to P */
	int csock;                    /* to C; -1 once C closed it */
	pid_t child;
	int gate_fd;                  /* the SYN gate's queue socket, -1 without a gate */
	int echo_fd;                  /* the echo requests' queue socket, -1 without one */
	int capture_fd;               /* the capture's packet socket until it is bound to gw0, else -1 */
	char inner_uid[192], inner_gid[192];
};

#define GATE_QUEUE_MAXLEN 4096        /* SYNs held at once; past this the kernel drops (fail closed) */
#define ECHO_QUEUE_MAXLEN 1024        /* echo requests waiting for P; past this the kernel drops them */

static int make_listener(int family, int type, uint16_t port)
{
	int one = 1;
	int fd = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int lvl = family == AF_INET ? SOL_IP : SOL_IPV6;
	struct sockaddr_storage ss;
	socklen_t len;

	if (fd < 0)
		return -errno;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		len = sizeof(*a);
		setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, lvl, family == AF_INET ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one, sizeof(one)) < 0 ||
	    (type == SOCK_DGRAM &&
	     setsockopt(fd, lvl, family == AF_INET ? IP_RECVORIGDSTADDR : IPV6_RECVORIGDSTADDR,
			&one, sizeof(one)) < 0) ||
	    (type == SOCK_DGRAM && port == NETPLAN_UDP_PORT &&   /* the child's TTL, carried upstream */
	     setsockopt(fd, lvl, family == AF_INET ? IP_RECVTTL : IPV6_RECVHOPLIMIT, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    (type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* Report a failed setup step of N1 and stop. */
__attribute__((noreturn)) static void gateway_fail(struct gw *g, const char *step, int r)
{
	log_error("cannot set up the gateway network namespace (%s): %s", step, strerror(-r));
	nl_close(g->nl);
	sandbox_setup_fail(g->sh);
}

/*
 * gateway_gate_open() - the SYN gate's queue socket, bound to BE_GATE_QUEUE, or -1 when this kernel
 * cannot queue packets to user space (nfnetlink_queue).  The rejections the gate asks for are ICMP
 * errors from N1: its rate limits would hold most of them back (the child then waits for its own
 * retransmission timeout instead of seeing "unreachable"), so they are lifted here.
 */
static int gateway_queue_open(uint16_t queue, uint32_t copy, uint32_t maxlen)
{
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	int r;

	if (fd < 0)
		return -1;
	if ((r = nfq_bind(fd, queue, copy, maxlen)) < 0) {
		log_debug("gateway: queue %u cannot be bound: %s", queue, strerror(-r));
		close(fd);
		return -1;
	}
	return fd;
}

static int gateway_gate_open(void)
{
	int fd = gateway_queue_open(BE_GATE_QUEUE, NFQ_COPY_RANGE, GATE_QUEUE_MAXLEN);

	if (fd < 0)
		return -1;
	proc_write_file("/proc/sys/net/ipv4/icmp_ratelimit", "0");
	proc_write_file("/proc/sys/net/ipv4/icmp_msgs_per_sec", "1000000");
	proc_write_file("/proc/sys/net/ipv4/icmp_msgs_burst", "10000");
	proc_write_file("/proc/sys/net/ipv6/icmp/ratelimit", "0");
	return fd;
}

/*
 * gateway_load_rules() - the ruleset, with the SYN gate when the queue is bound: the xtables NFQUEUE
 * target through nft_compat, else the native nft `queue` expression, else no gate at all (one
 * warning: refusals then look like accepted connections that reset).  Compat first: distribution
 * kernels have both, and a kernel without one of them asks the host's modprobe for it on every
 * try (about 10 ms of start-up on this project's VMs, which lack nft_queue).
 */
static void gateway_load_rules(struct gw *g)
{
	struct gateway_rules rules = {
		.ifname = NETPLAN_GW_IFNAME,
		.tcp_port = NETPLAN_TCP_PORT,
		.udp_port = NETPLAN_UDP_PORT,
		.dns_port = NETPLAN_DNS_PORT,
		.gate = g->gate_fd >= 0 ? GATEWAY_GATE_COMPAT : GATEWAY_GATE_NONE,
		.echo = g->echo_fd >= 0,
		.uplink = g->cfg->uplink ? NETPLAN_UPLINK_IFNAME : NULL,
		.proxy_tcp = g->cfg->proxy_tcp,
	};
	char err[256];
	int r;

	for (;;) {
		r = gateway_rules_load(&rules, err, sizeof(err));
		if (r == 0 || rules.gate == GATEWAY_GATE_NONE)
			break;
		log_debug("gateway: SYN gate (%s) not loaded: %s",
			  rules.gate == GATEWAY_GATE_NATIVE ? "nft queue" : "xt NFQUEUE", err);
		if (rules.gate == GATEWAY_GATE_COMPAT) {
			rules.gate = GATEWAY_GATE_NATIVE;
			continue;
		}
		rules.gate = GATEWAY_GATE_NONE;
		rules.echo = false;
		close(g->gate_fd);
		g->gate_fd = -1;
		if (g->echo_fd >= 0)
			close(g->echo_fd);
		g->echo_fd = -1;
		explain_warn("syn_gate", 0, err);
	}
	if (r < 0) {
		explain_fail("nftables", 0, err);
		nl_close(g->nl);
		sandbox_setup_fail(g->sh);
	}
	log_debug("gateway: ruleset loaded (SYN gate: %s)", rules.gate == GATEWAY_GATE_NATIVE ? "nft queue" :
		  rules.gate == GATEWAY_GATE_COMPAT ? "xt NFQUEUE" : "none");
}

/*
 * gateway_uplink() - rootful: up0 (P created it here before sending the plan) up.  It has no
 * address: N1 only bridges the child's link to it (gateway_bridge()).
 */
static void gateway_uplink(struct gw *g)
{
	int up = (int)if_nametoindex(NETPLAN_UPLINK_IFNAME);
	int r;

	if (!up)
		gateway_fail(g, "find the uplink", -ENODEV);
	if ((r = nl_link_up(g->nl, up, 0)) < 0)
		gateway_fail(g, "bring the uplink up", r);
	log_debug("gateway: uplink to the host up");
}

/*
 * gateway_bridge() - rootful: N1's answers reach the child through permanent neighbour entries
 * (its MAC is @mac), then gw0 and up0 are bridged (nft/gateway.h, struct gateway_bridge).
 */
static void gateway_bridge(struct gw *g, int gw, const uint8_t *mac)
{
	struct gateway_bridge br = {
		.child_if = NETPLAN_GW_IFNAME,
		.uplink = NETPLAN_UPLINK_IFNAME,
		.child_ifindex = gw,
		.uplink_ifindex = (int)if_nametoindex(NETPLAN_UPLINK_IFNAME),
		.proxy_tcp = g->cfg->proxy_tcp,
		.child4 = g->np->child4,
		.child6 = g->np->child6,
	};
	char err[256], line[320];
	int r;

	if ((r = nl_neigh_add(g->nl, gw, AF_INET, &g->np->child4, mac)) < 0)
		gateway_fail(g, "add the child's neighbour entry", r);
	if (g->np->ipv6 && (r = nl_neigh_add(g->nl, gw, AF_INET6, &g->np->child6, mac)) < 0)
		gateway_fail(g, "add the child's IPv6 neighbour entry", r);
	if ((r = gateway_bridge_load(&br, err, sizeof(err))) < 0) {
		snprintf(line, sizeof(line), "cannot load the --root bridge (nftables netdev fwd): %s", err);
		explain_fail("root_bridge", -r, line);
		nl_close(g->nl);
		sandbox_setup_fail(g->sh);
	}
	log_debug("gateway: gw0 bridged to the uplink");
}

/*
 * gateway_routing() - what N1 needs before the link exists: lo, the policy routing that delivers
 * TPROXY-marked packets locally, and the ruleset (it names gw0 by string, so gw0 may come later).
 * Runs while C is still creating its namespaces.
 */
static void gateway_routing(struct gw *g)
{
	int lo = (int)if_nametoindex("lo");
	int r;

	if ((r = nl_link_up(g->nl, lo, 0)) < 0)
		gateway_fail(g, "bring lo up", r);
	if ((r = nl_rule_add_fwmark(g->nl, AF_INET, GATEWAY_FWMARK, GATEWAY_LOCAL_TABLE, 100)) < 0)
		gateway_fail(g, "add the TPROXY routing rule", r);
	if ((r = nl_route_add(g->nl, AF_INET, GATEWAY_LOCAL_TABLE, RTN_LOCAL, lo, NULL)) < 0)
		gateway_fail(g, "add the TPROXY local route", r);
	if (g->np->ipv6) {
		if ((r = nl_rule_add_fwmark(g->nl, AF_INET6, GATEWAY_FWMARK, GATEWAY_LOCAL_TABLE, 100)) < 0)
			gateway_fail(g, "add the IPv6 TPROXY routing rule", r);
		if ((r = nl_route_add(g->nl, AF_INET6, GATEWAY_LOCAL_TABLE, RTN_LOCAL, lo, NULL)) < 0)
			gateway_fail(g, "add the IPv6 TPROXY local route", r);
	}
	log_debug("gateway: policy routing ready");
	if (g->cfg->uplink)
		gateway_uplink(g);
	g->gate_fd = gateway_gate_open();
	/* The echo queue rides on the gate's: the same queueing support, a rule beside the gate's. */
	if (g->gate_fd >= 0)
		g->echo_fd = gateway_queue_open(BE_ECHO_QUEUE, NFQ_COPY_ECHO, ECHO_QUEUE_MAXLEN);
	gateway_load_rules(g);
}

/*
 * gateway_capture_open() - the capture's packet socket: protocol 0, so it sees nothing until
 * gateway_capture_bind() binds it to gw0, and a TPACKET_V3 receive ring that P maps.
 * Return: the fd, or -errno.
 */
static int gateway_capture_open(void)
{
	struct tpacket_req3 req = {
		.tp_block_size = SANDBOX_CAPTURE_BLOCK_SIZE,
		.tp_block_nr = SANDBOX_CAPTURE_BLOCKS,
		.tp_frame_size = 2048,
		.tp_frame_nr = SANDBOX_CAPTURE_BLOCK_SIZE / 2048 * SANDBOX_CAPTURE_BLOCKS,
		.tp_retire_blk_tov = SANDBOX_CAPTURE_RETIRE_MS,
	};
	int v3 = TPACKET_V3;
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v3, sizeof(v3)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* Bind the capture's socket to gw0 (created, not up yet): from here on it sees every frame. */
static void gateway_capture_bind(struct gw *g, int ifindex)
{
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_ALL),
		.sll_ifindex = ifindex,
	};

	if (g->capture_fd < 0)
		return;
	if (bind(g->capture_fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		gateway_fail(g, "bind the capture to gw0", -errno);
	close(g->capture_fd);
	g->capture_fd = -1;
}

/*
 * The veth pair (its peer created directly in C's namespace, with a random locally administered
 * MAC that N1 knows), the gateway's addresses, and under --root the bridge.
 */
static void gateway_link(struct gw *g)
{
	uint8_t mac[6];
	int gw, r;

	if (getrandom(mac, sizeof(mac), 0) != (ssize_t)sizeof(mac))
		gateway_fail(g, "choose the child's MAC address", -errno);
	mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);   /* unicast, locally administered */
	if ((r = nl_veth_create(g->nl, NETPLAN_GW_IFNAME, NETPLAN_CHILD_IFNAME, g->child, NETPLAN_MTU, mac)) < 0) {
		explain_fail("veth", -r, "cannot create the veth pair");
		nl_close(g->nl);
		sandbox_setup_fail(g->sh);
	}
	gw = (int)if_nametoindex(NETPLAN_GW_IFNAME);
	gateway_capture_bind(g, gw);
	if ((r = nl_addr_add(g->nl, gw, AF_INET, &g->np->gw4, g->np->plen4)) < 0)
		gateway_fail(g, "add the gateway IPv4 address", r);
	if (g->np->ipv6 && (r = nl_addr_add(g->nl, gw, AF_INET6, &g->np->gw6, g->np->plen6)) < 0)
		gateway_fail(g, "add the gateway IPv6 address", r);
	if (g->cfg->uplink)
		gateway_bridge(g, gw, mac);
	if ((r = nl_link_up(g->nl, gw, 0)) < 0)
		gateway_fail(g, "bring gw0 up", r);
}

static void gateway_listeners(struct gw *g)
{
	static const struct { int family, type; uint16_t port; } spec[BE_NLISTEN] = {
		[BE_TCP4] = { AF_INET, SOCK_STREAM, NETPLAN_TCP_PORT },
		[BE_TCP6] = { AF_INET6, SOCK_STREAM, NETPLAN_TCP_PORT },
		[BE_UDP4] = { AF_INET, SOCK_DGRAM, NETPLAN_UDP_PORT },
		[BE_UDP6] = { AF_INET6, SOCK_DGRAM, NETPLAN_UDP_PORT },
		[BE_DNS4] = { AF_INET, SOCK_DGRAM, NETPLAN_DNS_PORT },
		[BE_DNS6] = { AF_INET6, SOCK_DGRAM, NETPLAN_DNS_PORT },
	};
	int fds[GW_KINDS_MAX], n = 0;
	uint8_t kinds[GW_KINDS_MAX];

	for (int i = 0; i < BE_NLISTEN; i++) {
		if (spec[i].family == AF_INET6 && !g->np->ipv6)
			continue;
		int fd = make_listener(spec[i].family, spec[i].type, spec[i].port);

		if (fd < 0) {
			log_error("cannot create a transparent listener in the gateway namespace: %s",
				  strerror(-fd));
			sandbox_setup_fail(g->sh);
		}
		kinds[n] = (uint8_t)i;
		fds[n++] = fd;
	}
	if (g->gate_fd >= 0) {
		kinds[n] = GW_KIND_GATE;
		fds[n++] = g->gate_fd;
		g->gate_fd = -1;   /* P's now (closed here with the others once sent) */
	}
	if (g->echo_fd >= 0) {
		kinds[n] = GW_KIND_ECHO;
		fds[n++] = g->echo_fd;
		g->echo_fd = -1;
	}
	/* Raw sockets for the ICMP errors P gives the child (IPPROTO_RAW: send only, they receive
	 * nothing). */
	for (int fam = 0; fam < 2; fam++) {
		int fd;

		if (fam == 1 && !g->np->ipv6)
			continue;
		fd = socket(fam ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_RAW);
		if (fd < 0) {
			log_debug("gateway: no raw socket for ICMP errors: %s", strerror(errno));
			continue;
		}
		kinds[n] = fam ? GW_KIND_INJECT6 : GW_KIND_INJECT4;
		fds[n++] = fd;
	}
	if (g->cfg->capture) {
		int fd = gateway_capture_open();

		if (fd < 0) {
			log_error("cannot start the capture: cannot create a packet socket with a %u MiB ring in "
				  "the gateway namespace: %s", SANDBOX_CAPTURE_BLOCKS * SANDBOX_CAPTURE_BLOCK_SIZE >> 20,
				  strerror(-fd));
			sandbox_setup_fail(g->sh);
		}
		kinds[n] = GW_KIND_CAPTURE;
		fds[n++] = fd;
		g->capture_fd = fd;   /* kept until gw0 exists to bind it (gateway_link) */
	}
	if (gw_send(g->psock, (struct gw_msg){ .op = GW_LISTENERS, .count = (uint16_t)n },
		    kinds, (size_t)n, fds, n) < 0)
		_exit(EXIT_SETUP);
	gw_close_fds(fds, n - (g->capture_fd >= 0));
}

/* C's maps, then the link; hand P a reference to N2 and let C configure its end. */
static void gateway_map_child(struct gw *g)
{
	char nspath[64];
	int nsfd, r;

	if (gw_expect(g->csock, GW_C_UNSHARED) < 0)
		_exit(EXIT_SETUP);   /* C printed why */
	r = idmap_write_maps(g->child, g->inner_uid, g->inner_gid, false);
	if (r < 0) {
		log_error("cannot write the child user namespace's id maps: %s", strerror(-r));
		sandbox_setup_fail(g->sh);
	}
	gateway_link(g);
	log_debug("gateway: link to the child ready");
	/*
	 * When the command exits, its last bytes may still sit in its sockets; the namespace (and the
	 * veth) must outlive the processes until they have left, or they are lost.  P drops it when
	 * the relay is done.
	 */
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/net", (int)g->child);
	nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || gw_send(g->psock, (struct gw_msg){ .op = GW_CHILD_NETNS, .count = 1 },
				NULL, 0, &nsfd, 1) < 0) {
		log_error("cannot pass the child's network namespace to childflow: %s", strerror(errno));
		sandbox_setup_fail(g->sh);
	}
	close(nsfd);
	if (gw_send_op(g->csock, GW_C_LINK_READY) < 0)
		_exit(EXIT_SETUP);
}

/* Create up to @count (<= FDPASS_MAX) UDP sockets of @family in N1.  Return: how many; *err on a shortfall. */
static int make_udp_batch(int family, int count, int *fds, int16_t *err)
{
	int n = 0;

	*err = 0;
	while (n < count && n < FDPASS_MAX) {
		int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

		if (fd < 0) {
			*err = (int16_t)-errno;
			break;
		}
		fds[n++] = fd;
	}
	if (n < count && !*err)
		*err = -EINVAL;   /* asked for more than one message carries */
	return n;
}

/* Send a batch of @count UDP sockets of @family to P.  Return: 0, or -errno when P is gone. */
static int send_udp_batch(struct gw *g, int family, int count)
{
	struct gw_msg rp = { .op = GW_UDP_SOCKETS, .family = (uint16_t)family };
	struct gw_udp_reply body = { .asked = (uint16_t)count };
	int fds[FDPASS_MAX], n, r;

	n = make_udp_batch(family, count, fds, &rp.err);
	rp.count = (uint16_t)n;
	r = gw_send(g->psock, rp, &body, sizeof(body), fds, n);
	gw_close_fds(fds, n);
	return r;
}

/*
 * gateway_initial_pool() - SANDBOX_POOL_FILL UDP sockets per offered family, unasked, as part of
 * the setup: P has them before the command can send its first datagram.
 */
static void gateway_initial_pool(struct gw *g)
{
	static const int fams[2] = { AF_INET, AF_INET6 };

	for (int i = 0; i < (g->np->ipv6 ? 2 : 1); i++) {
		for (int sent = 0; sent < SANDBOX_POOL_FILL; sent += FDPASS_MAX) {
			int want = SANDBOX_POOL_FILL - sent < FDPASS_MAX ? SANDBOX_POOL_FILL - sent : FDPASS_MAX;
			struct gw_msg m = { .op = GW_UDP_SOCKETS, .family = (uint16_t)fams[i] };
			struct gw_udp_reply body = { .asked = (uint16_t)want };
			int fds[FDPASS_MAX], n, r;

			n = make_udp_batch(fams[i], want, fds, &m.err);
			if (n < want) {
				gw_close_fds(fds, n);
				log_error("cannot create UDP sockets in the gateway namespace: %s", strerror(-m.err));
				sandbox_setup_fail(g->sh);
			}
			m.count = (uint16_t)n;
			r = gw_send(g->psock, m, &body, sizeof(body), fds, n);
			gw_close_fds(fds, n);
			if (r < 0)
				_exit(EXIT_SETUP);
		}
	}
}

/* Answer one request of P's.  Return: 0, or -1 when P is gone. */
static int serve_p(struct gw *g)
{
	struct gw_msg rq;
	int r;

	r = gw_recv(g->psock, &rq, NULL, 0, NULL, 0, NULL, 0);
	if (r == -EPIPE)
		return -1;
	if (r < 0)
		return 0;   /* malformed: nothing to answer */
	if (rq.op != GW_UDP_SOCKETS || (rq.family != AF_INET && rq.family != AF_INET6)) {
		struct gw_msg rp = { .op = rq.op, .family = rq.family, .err = -EOPNOTSUPP };

		return gw_send(g->psock, rp, NULL, 0, NULL, 0) < 0 ? -1 : 0;
	}
	/* P is gone or stuck: never leave it waiting */
	return send_udp_batch(g, rq.family, rq.count) < 0 ? -1 : 0;
}

/* Handle one message of C's.  Return: 0, or -1 when C closed its end. */
static int serve_c(struct gw *g)
{
	int fds[FDPASS_MAX], nfds = 0;
	struct gw_msg m;
	int r = gw_recv(g->csock, &m, NULL, 0, fds, FDPASS_MAX, &nfds, 0);

	if (r < 0)
		return r == -EAGAIN || r == -EINTR ? 0 : -1;
	if (m.op == GW_C_LINK_UP) {
		r = nl_link_wait_ready(g->nl, (int)if_nametoindex(NETPLAN_GW_IFNAME), SANDBOX_LINK_WAIT_MS);
		if (r < 0)
			gateway_fail(g, "wait until gw0 is operational", r);
		nl_close(g->nl);
		g->nl = NULL;
		log_debug("gateway: gw0 operational");
		if (gw_send_op(g->csock, GW_C_GO) < 0)
			return -1;
	} else if (m.op == GW_C_INIT_STARTED) {
		/* With the writable fds of the child's resolv.conf files, for P. */
		gw_send(g->psock, (struct gw_msg){ .op = GW_CMD_STARTED, .count = (uint16_t)nfds }, NULL, 0, fds, nfds);
	}
	gw_close_fds(fds, nfds);
	return 0;
}

/* Serve P and C until C (and with it the command) is gone; then exit with C's status. */
__attribute__((noreturn)) static void gateway_serve(struct gw *g)
{
	int pidfd = (int)syscall(SYS_pidfd_open, g->child, 0);
	struct pollfd pf[3] = {
		{ .fd = g->psock, .events = POLLIN },
		{ .fd = g->csock, .events = POLLIN },
		{ .fd = pidfd, .events = POLLIN },
	};
	siginfo_t si;
	int st;

	for (;;) {
		memset(&si, 0, sizeof(si));
		if (poll(pf, pidfd >= 0 ? 3 : 2, pidfd >= 0 ? -1 : 100) < 0 && errno != EINTR)
			break;
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			if (serve_p(g) < 0)
				break;   /* P is gone; PDEATHSIG is on its way */
		}
		if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			if (serve_c(g) < 0) {
				close(g->csock);
				g->csock = -1;
				pf[1].fd = -1;
			}
		}
		if (pidfd >= 0 && (pf[2].revents & POLLIN))
			break;
		if (pidfd < 0 && waitid(P_PID, (id_t)g->child, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid == g->child)
			break;
	}
	/* Wait without reaping, forget C's pid, then reap: P must never wait for a recycled pid. */
	while (waitid(P_PID, (id_t)g->child, &si, WEXITED | WNOWAIT) < 0)
		if (errno != EINTR)
			_exit(EXIT_SETUP);
	atomic_store_explicit(&g->sh->child_pid, 0, memory_order_release);
	while (waitpid(g->child, &st, 0) < 0)
		if (errno != EINTR)
			_exit(EXIT_SETUP);
	if (!WIFEXITED(st)) {
		log_error("the sandbox's child process was killed by signal %d", WTERMSIG(st));
		_exit(EXIT_SETUP);
	}
	_exit(WEXITSTATUS(st));
}

/* Receive C's maps from P: two NUL-terminated strings. */
static void gateway_recv_plan(struct gw *g)
{
	char buf[GW_MAX_PAYLOAD];
	struct gw_msg m;
	size_t ul, gl;

	if (gw_recv(g->psock, &m, buf, sizeof(buf), NULL, 0, NULL, 0) < 0 || m.op != GW_IDMAP_PLAN)
		_exit(EXIT_SETUP);
	ul = strnlen(buf, m.len);
	if (ul >= m.len || ul >= sizeof(g->inner_uid))
		_exit(EXIT_SETUP);
	gl = strnlen(buf + ul + 1, m.len - ul - 1);
	if (ul + 1 + gl >= m.len || gl >= sizeof(g->inner_gid))
		_exit(EXIT_SETUP);
	memcpy(g->inner_uid, buf, ul + 1);
	memcpy(g->inner_gid, buf + ul + 1, gl + 1);
}

void gateway_main(const struct sandbox_config *cfg, const struct netplan *np,
		  struct sandbox_shared *sh, int psock, pid_t p)
{
	struct gw g = { .cfg = cfg, .np = np, .sh = sh, .psock = psock, .csock = -1, .gate_fd = -1,
			.echo_fd = -1, .capture_fd = -1 };
	int cs[2];
	pid_t self = getpid();

	proc_die_with_parent(p);
	sandbox_ignore_forwarded_signals();
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) {
		explain_fail("user_namespaces", errno, "cannot create a user namespace");
		sandbox_setup_fail(sh);
	}
	log_debug("gateway: user and network namespaces created");
	if (gw_send_op(psock, GW_HELLO_UNSHARED) < 0)
		_exit(EXIT_SETUP);
	gateway_recv_plan(&g);

	if (np->ipv6) {
		proc_write_file("/proc/sys/net/ipv6/conf/all/accept_dad", "0");
		proc_write_file("/proc/sys/net/ipv6/conf/default/accept_dad", "0");
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cs) < 0) {
		log_error("cannot create a socket pair: %s", strerror(errno));
		sandbox_setup_fail(sh);
	}
	g.child = fork();
	if (g.child < 0) {
		log_error("cannot fork: %s", strerror(errno));
		sandbox_setup_fail(sh);
	}
	if (g.child == 0) {
		close(cs[0]);
		close(psock);
		child_main(cfg, np, sh, cs[1], self);
	}
	atomic_store_explicit(&sh->child_pid, g.child, memory_order_release);
	/* P has written our maps and C has its own mm: nothing needs /proc/G any more.  (A root
	 * command, uid 0 like us, is refused anyway: its capabilities live in U2, below ours.) */
	prctl(PR_SET_DUMPABLE, 0);
	close(cs[1]);
	g.csock = cs[0];

	/* While C creates its namespaces: everything of N1 that does not need the link. */
	g.nl = nl_open();
	if (!g.nl) {
		log_error("cannot open rtnetlink in the gateway namespace: %s", strerror(errno));
		sandbox_setup_fail(sh);
	}
	gateway_routing(&g);
	gateway_listeners(&g);
	gateway_initial_pool(&g);
	log_debug("gateway: routing, ruleset, listeners and the first N1 sockets ready");
	gateway_map_child(&g);
	gateway_serve(&g);
}
