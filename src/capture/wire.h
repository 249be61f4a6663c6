/* SPDX-License-Identifier: MIT */
/*
 * capture/wire — `-C wire-egress`: the real frames of the relay's own connections on the host's
 * interfaces.
 *
 * Theory of operation.  wire_open() opens, before the command exists, one AF_PACKET socket in the
 * caller's network namespace (it needs CAP_NET_RAW there) bound to every interface, with a
 * TPACKET_V3 ring, and describes each interface of the namespace in the capture (Ethernet-like ones
 * as Ethernet, IP-only ones as LINKTYPE_RAW).  The relay tells it, through a flow tap (relay/flow.h),
 * every host-side socket it opens and closes: relayed TCP and UDP flows, the connections to the
 * proxy, the DNS forwarder's upstream sockets.  Each frame read from the ring is kept only when its
 * TCP/UDP 5-tuple is one of those sockets' (an exact set, in a hash table: capture/match.h, which
 * also holds the frame parser), so the file has the relay's traffic and nothing else of the host's.
 *
 * Why in user space, not a kernel (classic BPF) filter: the set changes with every connect, and the
 * packet that makes a new tuple, the SYN, leaves inside connect(), before any filter naming its port
 * could be attached; a filter swap also leaves a window in which frames of other tuples are lost.
 * Frames wait in the ring until the loop reads them, after the socket that sent them was told, so
 * the set knows them all.  A socket still connecting is matched on its own address and port (its
 * peer is learnt once connected); a closed one keeps matching WIRE_GRACE_MS more for its FIN and
 * TIME_WAIT exchange.  The cost: the ring receives every frame of the host (the kernel copies it),
 * and drops, counted in the statistics, can hit when the host is busy.
 *
 * With --root (@routed), the tree's direct traffic is not the relay's: the host kernel routes and
 * masquerades it.  Those flows are learnt from the host's conntrack events (capture/ctwatch.h): a
 * flow whose original source is the uplink's address (wire_routed()) is matched by its reply tuple,
 * the one it has on the host's wire (the host's own address and port after NAT <-> the remote), from
 * its NEW event until WIRE_GRACE_MS after its DESTROY event.  The events are read before each ring
 * block is sorted; each flow's NEW event is sent before its first frame reaches the ring, so none
 * is missed.  Frames on the uplink (cfroot<N>) carry the pre-NAT tuple and are not matched.
 *
 * ICMP: the relay's echo flows (relay/echo.c, told by the tap's echo_flow()) and, with --root, the
 * tree's echo conntrack entries are in the same table, the echo identifier as both ports; an echo
 * request or reply is matched by (addresses, identifier), an ICMP error by the header it quotes.
 * A later IP fragment is kept when its datagram's first fragment was (a small table of those:
 * source, destination, IP id or v6 fragment id, for the kernel's 30 s reassembly time).  Not
 * matched: v6 packets with extension headers other than one fragment header.
 */
#ifndef CHILDFLOW_CAPTURE_WIRE_H
#define CHILDFLOW_CAPTURE_WIRE_H

#include <stdbool.h>
#include <netinet/in.h>

#include "relay/flow.h"

struct capture;
struct wire;

/*
 * wire_open() - open the packet socket and its ring (before the command starts: nothing it sends
 * can be missed, and before the output is opened: a caller without CAP_NET_RAW gets one line and
 * no file).  @backend names the backend in the metadata.  @routed (--root): also follow the host's
 * conntrack for the routed flows (wire_routed() names them).  @egress_view: the interfaces are the
 * egress view's (`view=egress kind=captured`), not the wire view's (`view=wire-egress kind=wire`).
 * Return: the capture point, or NULL.
 */
struct wire *wire_open(const char *backend, bool routed, bool egress_view);

/*
 * wire_routed() - the routed flows are those sent from @v4 or @v6 (the uplink's G end; NULL: none);
 * the host's end of the uplink, @uplink, carries them before NAT and is not described.
 */
void wire_routed(struct wire *w, const struct in_addr *v4, const struct in6_addr *v6, const char *uplink);

/*
 * wire_describe() - describe the namespace's interfaces in @cap (if_description: `childflow
 * view=<view> backend=<backend> kind=<kind> interface=<if>`).  Return: 0 or -errno (one line).
 */
int wire_describe(struct wire *w, struct capture *cap);

/* Start reading the ring into the capture (its frames are sorted from now on).  Return: 0 or -errno. */
int wire_attach(struct wire *w);

/* The tap the relay must be given (relay_set_tap()). */
const struct flow_tap *wire_tap(struct wire *w);

void wire_free(struct wire *w);

#endif
