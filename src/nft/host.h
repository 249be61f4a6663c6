/* SPDX-License-Identifier: MIT */
/*
 * nft/host — the rootful backend's table in the host namespace: forwarding for its uplink and the
 * masquerade of what the interception namespace sends out of it.  Equivalent to
 *
 *   table inet childflow-root<slot> {
 *     flags owner                      # the kernel deletes it when its netlink socket closes
 *     chain forward { type filter hook forward priority filter; policy accept;
 *       oifname "cfroot<slot>" ct state established,related accept
 *       oifname "cfroot<slot>" drop
 *       iifname "cfroot<slot>" ct state invalid,untracked drop   # no conntrack entry: not NATed
 *       iifname "cfroot<slot>" ct state established,related ct original ip saddr <uplink v4>
 *           ip saddr <uplink v4> accept                    # the tree's flows, not the host's
 *       iifname "cfroot<slot>" ct state established,related ct original ip6 saddr <uplink v6>
 *           ip6 saddr <uplink v6> accept
 *       iifname "cfroot<slot>" ip daddr { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4,
 *           255.255.255.255 } reject with icmpx admin-prohibited       # rootless's guard
 *       iifname "cfroot<slot>" ip6 daddr { ::/96, ::ffff:0:0/96, fe80::/10, ff00::/8, and the
 *           NAT64 / 6to4 forms of the IPv4 ranges } reject with icmpx admin-prohibited
 *       iifname "cfroot<slot>" ct state new ip saddr <uplink v4> accept
 *       iifname "cfroot<slot>" ct state new ip6 saddr <uplink v6> accept
 *       iifname "cfroot<slot>" drop }        # any other source, or related to a flow not the tree's
 *     chain input { type filter hook input priority filter; policy accept;
 *       iifname "cfroot<slot>" ct state established,related ct original ip daddr <uplink v4> accept
 *       iifname "cfroot<slot>" ct state established,related ct original ip6 daddr <uplink v6> accept
 *           # flows the host opened to the tree; not an ICMP error quoting another flow of the host's
 *       iifname "cfroot<slot>" icmpv6 type 135-136 accept   # neighbour solicitation/advert only
 *       iifname "cfroot<slot>" reject with icmpx admin-prohibited }   # not the host's own services
 *     chain postrouting { type nat hook postrouting priority srcnat; policy accept;
 *       meta nfproto ipv4 ip saddr <uplink v4> masquerade to :<ports>
 *       meta nfproto ipv6 ip6 saddr <uplink v6> masquerade to :<ports> }
 *   }
 *
 * <ports> lie outside the host's own ephemeral range (net.ipv4.ip_local_port_range), mapped by a
 * fixed offset (NF_NAT_RANGE_PROTO_OFFSET, which nft's syntax does not show), so that a
 * masqueraded flow never takes the 4-tuple of one of the host's own closed connections, which the
 * server may still hold in TIME_WAIT: the child's SYN carries an initial sequence number and
 * timestamp unrelated to that old connection's, the server then refuses it about half the time with
 * a challenge ACK, and the child resets and retries 8-10 ms later.  The offset keeps the mapping
 * of a reused 4-tuple (conntrack replaces its TIME_WAIT entry) on its own old TIME_WAIT, which
 * accepts it, rather than on a random port another flow's TIME_WAIT may still hold.
 *
 * Its accept rules cannot override a drop of another table or of iptables (a FORWARD policy of
 * drop elsewhere still drops): the host's firewall applies, by design.
 */
#ifndef CHILDFLOW_NFT_HOST_H
#define CHILDFLOW_NFT_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <netinet/in.h>

struct mnl_socket;

struct host_nat {
	const char *table;        /* its name */
	const char *ifname;       /* the host end of the uplink */
	struct in_addr src4;      /* the interception namespace's uplink addresses */
	bool ipv6;
	struct in6_addr src6;
	uint16_t port_min, port_max;   /* the masquerade's source ports; 0, 0: any (the kernel's choice) */
};

/*
 * host_nat_load() - load @h's table, owned by a new nfnetlink socket.
 * Return: the socket (the table lives while it is open: close it with mnl_socket_close()), or NULL
 * with the reason in @err.
 */
struct mnl_socket *host_nat_load(const struct host_nat *h, char *err, size_t errlen);

#endif
