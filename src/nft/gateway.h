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
 *       meta nfproto ipv4 udp dport 53 tproxy ip to :DNS meta mark set 1 accept
 *       meta nfproto ipv6 udp dport 53 tproxy ip6 to :DNS meta mark set 1 accept
 *       meta nfproto ipv4 meta l4proto tcp tproxy ip to :TCP meta mark set 1 accept
 *       meta nfproto ipv6 meta l4proto tcp tproxy ip6 to :TCP meta mark set 1 accept
 *       meta nfproto ipv4 meta l4proto udp tproxy ip to :UDP meta mark set 1 accept
 *       meta nfproto ipv6 meta l4proto udp tproxy ip6 to :UDP meta mark set 1 accept
 *       counter drop
 *     }
 *   }
 *
 * It is built with libnftnl and sent as one nfnetlink batch: a fraction of a millisecond, where
 * parsing the text with libnftables costs over one on the start-up path.
 */
#ifndef CHILDFLOW_NFT_GATEWAY_H
#define CHILDFLOW_NFT_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#define GATEWAY_FWMARK 1u
#define GATEWAY_LOCAL_TABLE 100u
#define GATEWAY_TABLE "childflow"
#define GATEWAY_CHAIN "prerouting"

struct gateway_rules {
	const char *ifname;     /* gateway end of the veth */
	uint16_t tcp_port;      /* transparent TCP listeners */
	uint16_t udp_port;      /* transparent UDP listeners */
	uint16_t dns_port;      /* the DNS forwarder's UDP listeners (DNS over TCP takes tcp_port) */
};

/*
 * gateway_rules_batch() - build the whole ruleset as one nfnetlink batch into @buf.
 * Messages are numbered from @seq; only the last asks for an ACK (errors are always reported).
 * Returns the batch length, or -ENOSPC / -ENOMEM.  *last_seq receives the acknowledged sequence.
 */
int gateway_rules_batch(const struct gateway_rules *r, void *buf, size_t len, uint32_t seq,
			uint32_t *last_seq);

/* Load the ruleset in the current network namespace.  Returns 0, or -1 with a message in @err. */
int gateway_rules_load(const struct gateway_rules *r, char *err, size_t errlen);

#endif
