/* SPDX-License-Identifier: MIT */
/*
 * netlink/nfq — the NFQUEUE messages of the SYN gate (nfnetlink_queue over libmnl).
 *
 * The gateway namespace queues every new TCP SYN from the child to one queue (nft/gateway.h); P
 * reads the queued SYNs from a NETLINK_NETFILTER socket created in that namespace, and answers each
 * with a verdict once the upstream connect has an answer.  These helpers build and parse the
 * messages; they hold no state.  The packet parser reads bytes the child sent: it trusts nothing.
 */
#ifndef CHILDFLOW_NETLINK_NFQ_H
#define CHILDFLOW_NETLINK_NFQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NFQ_COPY_RANGE 128    /* bytes of each SYN copied to P: IPv6 + extension headers + TCP */
#define NFQ_COPY_ECHO 65535   /* ICMP echo requests are copied whole (P sends their data on) */

/*
 * nfq_bind() - bind @fd (NETLINK_NETFILTER, in the queueing namespace) to @queue: copy the first
 * @copy_range bytes of each packet, hold at most @maxlen packets.  No fail-open: when P is not
 * reading, or the queue is full, the kernel drops the SYN (the child retransmits).  Synchronous
 * (waits for the kernel's acknowledgements); for setup only.  Return: 0 or -errno.
 */
int nfq_bind(int fd, uint16_t queue, uint32_t copy_range, uint32_t maxlen);

/* One queued packet, pointing into the receive buffer. */
struct nfq_packet {
	uint32_t id;                  /* for the verdict */
	const uint8_t *payload;       /* the network header onwards */
	size_t len;
};

/*
 * nfq_parse() - the packet carried by netlink message @nlh (@len bytes from it).
 * Return: 1 with @p filled for an NFQNL_MSG_PACKET, 0 for any other message (acks, errors),
 * -EBADMSG for a packet message that does not parse.
 */
int nfq_parse(const void *nlh, size_t len, struct nfq_packet *p);

/* A TCP SYN as the gate needs it. */
struct nfq_syn {
	struct sockaddr_storage src, dst;   /* the child's address and the destination it dialled */
	uint32_t isn;                       /* tells a retransmission from a new connection */
	uint8_t ttl;                        /* TTL / hop limit as the child sent it */
};

/*
 * nfq_syn_parse() - read an IPv4 or IPv6 TCP SYN from @pkt (@len bytes from its network header;
 * IPv6 hop-by-hop, routing and destination options headers are skipped).
 * Return: 0 with @out filled, or -EINVAL when it is not a complete, unfragmented TCP SYN.
 */
int nfq_syn_parse(const uint8_t *pkt, size_t len, struct nfq_syn *out);

/* An ICMP echo request (ping) as the echo relay needs it. */
struct nfq_echo {
	struct sockaddr_storage src, dst;   /* the child's address and the destination it pings */
	uint8_t ttl;                        /* TTL / hop limit as the child sent it */
	uint16_t id, seq;                   /* host order */
	const uint8_t *data;                /* the echo's data, after the 8-byte ICMP header */
	size_t data_len;
};

/*
 * nfq_echo_parse() - read an IPv4 ICMP or IPv6 ICMPv6 echo request from @pkt (@len bytes from its
 * network header; IPv6 extension headers as nfq_syn_parse()).  @out->data points into @pkt.
 * Return: 0, or -EINVAL when it is not a complete, unfragmented echo request.
 */
int nfq_echo_parse(const uint8_t *pkt, size_t len, struct nfq_echo *out);

/*
 * nfq_verdict_put() - append a verdict for packet @id of @queue to @buf (@room bytes free):
 * NF_ACCEPT or NF_DROP, with @mark set on the packet when non-zero.
 * Return: the bytes appended, or 0 when it does not fit.
 */
size_t nfq_verdict_put(void *buf, size_t room, uint16_t queue, uint32_t id, uint32_t verdict, uint32_t mark);

#endif
