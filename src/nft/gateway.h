/* SPDX-License-Identifier: MIT */
/*
 * nft/gateway — the nftables ruleset of the gateway namespace (N1).
 *
 * Everything the child sends arrives on the gateway end of the veth.  DNS over UDP (port 53, to any
 * address) goes to the DNS forwarder's listeners, the rest of TCP and UDP to the relay's; all are
 * childflow's transparent listeners (their fds live in P), marked so that the fwmark rule routes
 * them to the local table; neighbour discovery passes (or IPv6 cannot resolve the gateway);
 * everything else is dropped.  The ruleset is equivalent to:
 *
 *   table inet childflow {
 *     chain prerouting {
 *       type filter hook prerouting priority mangle; policy drop;
 *       iif "lo" accept
 *       iifname != "gw0" drop
 *       icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept
 *       meta l4proto tcp meta mark 0x12 reject with tcp reset            # the SYN gate's answers
 *       meta l4proto tcp meta mark 0x13 reject with icmpx host-unreachable
 *       meta l4proto tcp meta mark 0x14 reject with icmpx no-route
 *       meta l4proto tcp meta mark 0x15 reject with icmpx admin-prohibited
 *       meta nfproto ipv4 udp dport 53 tproxy ip to :DNS meta mark set 1 accept
 *       meta nfproto ipv6 udp dport 53 tproxy ip6 to :DNS meta mark set 1 accept
 *       meta nfproto ipv4 meta l4proto tcp tproxy ip to :TCP meta mark set 1 accept
 *       meta nfproto ipv6 meta l4proto tcp tproxy ip6 to :TCP meta mark set 1 accept
 *       meta nfproto ipv4 meta l4proto udp tproxy ip to :UDP meta mark set 1 accept
 *       meta nfproto ipv6 meta l4proto udp tproxy ip6 to :UDP meta mark set 1 accept
 *       icmp type echo-request reject with icmpx admin-prohibited   # echo P did not take
 *       icmpv6 type echo-request reject with icmpx admin-prohibited
 *       counter drop
 *     }
 *     chain gate {                       # only with the SYN gate
 *       type filter hook prerouting priority raw; policy accept;
 *       iifname "gw0" meta l4proto tcp tcp flags & (fin|syn|rst|ack) == syn meta mark 0 queue num 0
 *       iifname "gw0" icmp type echo-request queue num 1                # with the echo queue
 *       iifname "gw0" icmpv6 type echo-request queue num 1
 *     }
 *   }
 *
 * Rootful (--root, uplink "up0"): N1 does not route.  Its two links are bridged at their ingress
 * hooks (struct gateway_bridge below): a frame of the child's goes out of up0 to the host as it
 * came, unless it is DNS (UDP or TCP port 53), TCP with -p, or a fragment; those go up into N1's
 * stack, to the ruleset above without the UDP and echo rules:
 *       ... the reject rules and the DNS TPROXY rules as above, then either the TCP TPROXY rules
 *       (-p: all of TCP goes to the relay and the proxy) or only `tcp dport 53` TPROXYed (DNS over
 *       TCP), and the final counter drop, which takes a fragmented datagram to another port
 *   and the SYN gate only holds the SYNs that are TPROXYed (tcp dport 53 without -p).
 *
 * The SYN gate (design §2, cost 1; reference/syn-gate-probe.md): every new TCP connection's SYN is
 * held in NFQUEUE 0 until P knows how the upstream connect went.  P then lets it pass (on to TPROXY,
 * the child's handshake completes) or passes it with one of the marks above, which rejects it as the
 * destination did (refused, host or network unreachable, prohibited), or drops it (a timeout: the
 * child's own retransmissions and clock decide).  No bypass flag: with nobody reading the queue the
 * SYN is dropped, never let through ungated.  The gate chain runs first (raw, -300, before mangle),
 * so a verdict's mark is seen by the reject rules.  Kernels without the native `queue` expression
 * (CONFIG_NFT_QUEUE unset, as on this project's own VMs) get the xtables NFQUEUE target through
 * nft_compat instead; the rule is the same.
 *
 * The echo queue (relay/echo.c): the child's echo requests wait in NFQUEUE 1, where P takes them
 * (NF_DROP) and answers with what the destination answered its own echo; one P lets pass (no host
 * socket can send echo) meets the reject rule, as does every echo request when there is no queue.
 *
 * It is built with libnftnl and sent as one nfnetlink batch: a fraction of a millisecond, where
 * parsing the text with libnftables costs over one on the start-up path.
 */
#ifndef CHILDFLOW_NFT_GATEWAY_H
#define CHILDFLOW_NFT_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#include "backend/backend.h"

#define GATEWAY_FWMARK 1u
#define GATEWAY_LOCAL_TABLE 100u
#define GATEWAY_TABLE "childflow"
#define GATEWAY_CHAIN "prerouting"
#define GATEWAY_GATE_CHAIN "gate"
#define GATEWAY_BRIDGE_TABLE "childflow-bridge"
/* The queue and the verdict marks are the backend's contract with the relay (backend/backend.h). */

enum gateway_gate {
	GATEWAY_GATE_NONE,                /* no SYN gate: the gateway completes every handshake */
	GATEWAY_GATE_NATIVE,              /* nft `queue` */
	GATEWAY_GATE_COMPAT,              /* xtables NFQUEUE target through nft_compat */
};

struct gateway_rules {
	const char *ifname;     /* gateway end of the veth */
	uint16_t tcp_port;      /* transparent TCP listeners */
	uint16_t udp_port;      /* transparent UDP listeners */
	uint16_t dns_port;      /* the DNS forwarder's UDP listeners (DNS over TCP takes tcp_port) */
	enum gateway_gate gate;
	bool echo;              /* queue echo requests to BE_ECHO_QUEUE too (needs a gate) */
	/* Rootful (--root): the link to the host, or NULL (rootless).  Then only DNS (and, with
	 * proxy_tcp, all TCP) is TPROXYed; the rest never comes here (the bridge below). */
	const char *uplink;
	bool proxy_tcp;
};

/*
 * gateway_rules_batch() - build the whole ruleset as one nfnetlink batch into @buf.
 * Messages are numbered from @seq; only the last asks for an ACK (errors are always reported).
 * Returns the batch length, or -ENOSPC / -ENOMEM.  *last_seq receives the acknowledged sequence.
 */
int gateway_rules_batch(const struct gateway_rules *r, void *buf, size_t len, uint32_t seq,
			uint32_t *last_seq);

/* Load the ruleset in the current network namespace.  Returns 0, or -errno with a message in @err
 * (-ENOENT or -EOPNOTSUPP: an expression this kernel or libnftnl does not have). */
int gateway_rules_load(const struct gateway_rules *r, char *err, size_t errlen);

/*
 * The rootful bridge, equivalent to
 *
 *   table netdev childflow-bridge {
 *     chain from-child { type filter hook ingress device "gw0" priority -500; policy accept;
 *       meta protocol ip ip saddr != <child v4> drop
 *       meta protocol ip6 ip6 saddr != <child v6> ip6 saddr & ffc0:: != fe80:: ip6 saddr != :: drop
 *       meta protocol arp arp saddr ip != <child v4> arp saddr ip != 0.0.0.0 drop
 *       meta protocol ip ip frag-off & 0x3fff != 0 meta pkttype set host accept
 *       meta protocol ip6 exthdr frag exists meta pkttype set host accept
 *       udp dport 53 meta pkttype set host accept
 *       tcp dport 53 meta pkttype set host accept          # with -p: meta l4proto tcp
 *       meta l4proto tcp fwd to "up0"                        # without -p
 *       icmpv6 type { nd-router-advert, nd-redirect } drop
 *       icmp type redirect drop
 *       meta protocol { ip, ip6, arp } fwd to "up0"
 *       drop }                                               # other ethertypes: VLAN, LLDP, ...
 *     chain from-host { type filter hook ingress device "up0" priority -500; policy accept;
 *       fwd to "gw0" }
 *   }
 *
 * The child has the uplink's own addresses (backend/netplan.h, netplan_root()) and the host's end
 * as its gateway, so a frame crosses N1 unchanged: no route lookup, no conntrack, no NAT there; the
 * host's forwarding and masquerade (nft/host.h) see the child's packets as they were sent.  The
 * child learns the host's MAC by ARP/ND (bridged too), so what goes up into N1 is addressed to
 * another host: `pkttype set host` lets N1's IP layer take it.  Fragments go up because only N1's
 * reassembly can tell a fragmented DNS datagram (TPROXYed) from another (dropped): forwarded as
 * they are, the later fragments of a DNS query would carry it past the forwarder.  N1 answers the
 * child from gw0, through a permanent neighbour entry for it (N1 never asks by ARP: the bridge
 * would take the answer to the host).  The command is root in its namespace and its frames reach
 * the host's link as sent, hop limit 255 included: the bridge drops its router advertisements and
 * redirects (and the host's end ignores them too: accept_ra and accept_redirects 0, and its input
 * chain takes only neighbour solicitations and advertisements), any ethertype but IPv4, IPv6
 * and ARP, and any source address but the child's own (so it cannot fill the host's neighbour
 * table for cfroot<N> with other addresses, or reach N1's stack as somebody else).
 */
struct gateway_bridge {
	const char *child_if, *uplink;   /* gw0 and up0 */
	int child_ifindex, uplink_ifindex;
	bool proxy_tcp;                  /* -p: all TCP goes up, to the relay and the proxy */
	struct in_addr child4;           /* the child's own addresses: no other source crosses */
	struct in6_addr child6;          /* (IPv6 also from link-local and, for DAD, ::) */
};

int gateway_bridge_batch(const struct gateway_bridge *br, void *buf, size_t len, uint32_t seq,
			 uint32_t *last_seq);

/* Load the bridge in the current network namespace.  Return: 0, or -errno with a message in @err. */
int gateway_bridge_load(const struct gateway_bridge *br, char *err, size_t errlen);

#endif
