/* SPDX-License-Identifier: MIT */
/*
 * capture/egress — `-C egress` (and the egress half of `-C both`): what left the host on the tree's
 * behalf, reconstructed from the relay's own sockets.
 *
 * Theory of operation.  The egress view is a flow tap (relay/flow.h) and a flow observer: it sees
 * each relayed TCP connection once its upstream socket is connected (the host's own address and
 * port from getsockname(), the real remote, the destination or the proxy, from getpeername()), every
 * byte the relay writes to or reads from that socket, and the end of the flow.  From that it writes
 * IPv4/IPv6 packets (LINKTYPE_RAW) to one interface of the capture: a SYN, SYN-ACK and ACK, the
 * payload in order as PSH/ACK segments with consistent sequence and acknowledgement numbers, and a
 * FIN exchange (an orderly end) or a RST from the side that failed; so "Follow TCP stream" shows
 * each stream whole.  A connect that never connected is the host's SYN (written at connect()), its
 * retransmissions and, when refused, the remote's RST, as the socket's TCP_INFO tells at the end.
 * UDP flows and the DNS forwarder's upstream queries are UDP datagrams between the host socket's
 * address and its peer; the relay's ICMP echo flows are echo requests and replies between the
 * host's source address and the destination.
 *
 * It is not the wire: no retransmissions, no pure ACKs, no window or options, segments as large as
 * the relay's reads (up to 64 KiB), timestamps when the relay moved the bytes; a proxy's own
 * handshake (CONNECT, SOCKS) is not in the stream, only what the tunnel carried; through a TLS proxy
 * the bytes are those inside the TLS session.  Its interface says so: kind=reconstructed.
 *
 * States: made by egress_new() (the interface described), fed by the relay, ended by egress_free()
 * (flows still open get nothing more: the relay ended them before).
 */
#ifndef CHILDFLOW_CAPTURE_EGRESS_H
#define CHILDFLOW_CAPTURE_EGRESS_H

#include "relay/flow.h"

struct capture;
struct egress_view;

#define EGRESS_IFNAME "egress"

/*
 * egress_new() - the egress view into @cap, its interface described with if_description @desc.
 * Return: the view, or NULL (after one line).
 */
struct egress_view *egress_new(struct capture *cap, const char *desc);

/* The tap and the observer the relay must be given (relay_set_tap(), relay_observe()). */
const struct flow_tap *egress_tap(struct egress_view *e);
const struct flow_observer *egress_observer(struct egress_view *e);

void egress_free(struct egress_view *e);

#endif
