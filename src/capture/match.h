/* SPDX-License-Identifier: MIT */
/*
 * capture/match — the set of the tree's tuples on the host's wire, and the frame matcher that
 * keeps only their frames (used by capture/wire.c for `-C wire-egress` and `-C egress` under
 * --root).
 *
 * Theory of operation.  Every entry is one transport tuple that carries traffic of the tree's on
 * the host: a host-side socket of the relay's (added by fd, its peer learnt once connected), or a
 * flow known by its tuple alone (a --root routed flow from conntrack, a relay echo flow: fd -1).
 * Entries are hashed by (protocol, local address, local port).  An entry's states:
 *
 *   open ──close/destroy──▶ closed ──WIRE_GRACE_MS──▶ matches no more ──WIRE_KEEP_MS──▶ freed
 *
 * A closed entry still matches frames stamped up to WIRE_GRACE_MS after its end (FIN, TIME_WAIT
 * exchanges read later from the ring); it is freed WIRE_KEEP_MS after its end.
 *
 * match_frame() parses a frame read off the host's interfaces: untrusted bytes of any length
 * (Ethernet with VLAN tags, or raw IP), IPv4 or IPv6, TCP/UDP by ports, ICMP echo by identifier,
 * an ICMP error by the header it quotes, later IP fragments by the first fragment's (source,
 * destination, id) kept for WIRE_FRAG_MS.  It reads nothing outside [frame, frame + len).
 */
#ifndef CHILDFLOW_CAPTURE_MATCH_H
#define CHILDFLOW_CAPTURE_MATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "relay/flow.h"

struct match_set;

struct match_set *match_new(void);
void match_free(struct match_set *m);

/*
 * match_sock() - a relay socket @fd (@proto IPPROTO_TCP or _UDP, bound to @local) opened
 * (@open), or closed at @now_ns (CLOCK_REALTIME).  Its peer is read with getpeername() when
 * needed.  Return: 0, or -ENOMEM (its frames will be missing).
 */
int match_sock(struct match_set *m, int fd, uint8_t proto, const union flow_addr *local, bool open,
	       uint64_t now_ns);

/*
 * match_flow() - a flow known by its tuple on the host's wire (@local of the host, @peer remote;
 * @proto TCP, UDP, or ICMP/ICMPv6 with the echo identifier as both ports) started (@open) or
 * ended at @now_ns.  A second start of a known tuple changes nothing.  Return: 0 or -ENOMEM.
 */
int match_flow(struct match_set *m, uint8_t proto, const union flow_addr *local, const union flow_addr *peer,
	       bool open, uint64_t now_ns);

/*
 * match_frame() - is the frame @p (@len bytes, stamped @ts_ns) one of the set's?  @ether: it
 * starts with an Ethernet header (else with the IP header).  A kept first fragment makes its
 * datagram's later fragments match too.
 */
bool match_frame(struct match_set *m, const unsigned char *p, uint32_t len, bool ether, uint64_t ts_ns);

#endif
