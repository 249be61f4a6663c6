/* SPDX-License-Identifier: MIT */
/*
 * capture/ctwatch — the host's connection tracking, as events: which flows the host kernel routed
 * and masqueraded for the tree (`--root`), with the tuple they have on the host's wire.
 *
 * Theory of operation.  ct_watch_open() subscribes, before the command exists, a ctnetlink socket
 * of the caller's namespace to the NEW and DESTROY groups.  A flow of the tree's reaches the host
 * from the uplink with the child's own source, the uplink's interception-end address
 * (ct_watch_source()); the host masquerades it, and the NEW event, sent when the entry is
 * confirmed (the last POSTROUTING hook, so after NAT and before the packet reaches any packet
 * socket), carries the reply tuple as it is on the wire: remote -> the host's own address and port.
 * So a packet ring's frame is always preceded by its flow's event: draining the events before a
 * block of frames is sorted (capture_prep_fn) misses none.  A full socket buffer (ENOBUFS: the
 * host made connections faster than we read) loses events; that is told once, as a warning.
 */
#ifndef CHILDFLOW_CAPTURE_CTWATCH_H
#define CHILDFLOW_CAPTURE_CTWATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>

#include "relay/flow.h"

struct ct_watch;

/* ct_watch_open() - subscribe to the events.  Return: the watch, or NULL after one error line. */
struct ct_watch *ct_watch_open(void);

/* ct_watch_source() - report the flows whose original source is @v4 or @v6 (either may be NULL). */
void ct_watch_source(struct ct_watch *cw, const struct in_addr *v4, const struct in6_addr *v6);

/*
 * ct_flow_fn - a TCP or UDP flow, or an ICMP (ICMPv6) echo flow, of the source's appeared (@open)
 * or ended: on the host's wire it is @local (the host's address and port after NAT) <-> @peer (the
 * remote); an echo flow's "ports" are both its identifier on the wire (after NAT).
 */
typedef void (*ct_flow_fn)(void *priv, uint8_t proto, const union flow_addr *local, const union flow_addr *peer,
			   bool open);

/* ct_watch_drain() - report every event queued now.  Never blocks. */
void ct_watch_drain(struct ct_watch *cw, ct_flow_fn fn, void *priv);

void ct_watch_free(struct ct_watch *cw);

#endif
