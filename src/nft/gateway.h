/* SPDX-License-Identifier: MIT */
/*
 * nft/gateway — the nftables ruleset of the gateway namespace (N1).
 *
 * Everything the child sends arrives on the gateway end of the veth.  TCP and UDP are TPROXYed to
 * childflow's transparent listeners (their fds live in P), marked so that the fwmark rule routes
 * them to the local table; everything else is dropped.  Neighbour discovery must pass or IPv6
 * cannot resolve the gateway.  Loaded through libnftables, in the caller's current netns.
 */
#ifndef CHILDFLOW_NFT_GATEWAY_H
#define CHILDFLOW_NFT_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#define GATEWAY_FWMARK 1u
#define GATEWAY_LOCAL_TABLE 100u

struct gateway_rules {
	const char *ifname;     /* gateway end of the veth */
	uint16_t tcp_port;      /* transparent TCP listeners */
	uint16_t udp_port;      /* transparent UDP listeners */
};

/* Render the ruleset into @buf.  Returns the length, or -ENOSPC. */
int gateway_rules_render(const struct gateway_rules *r, char *buf, size_t len);

/* Load the ruleset.  Returns 0, or -1 with libnftables' message in @err. */
int gateway_rules_load(const struct gateway_rules *r, char *err, size_t errlen);

#endif
