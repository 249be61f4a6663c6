/* SPDX-License-Identifier: MIT */
/*
 * relay/icmp — ICMP errors for the child, built from what upstream reported to P.
 *
 * When a datagram P relayed draws an ICMP error upstream (port unreachable, host or network
 * unreachable, fragmentation needed / packet too big, time exceeded), P's host socket learns it
 * through IP_RECVERR / IPV6_RECVERR.  The child must learn it too, as it would without childflow:
 * its connected UDP socket then sees ECONNREFUSED, and path-MTU discovery sees the smaller MTU.
 * These helpers write the whole IP packet the child receives: from the address that sent the
 * error, with the same type and code, quoting the child's own datagram (its addresses and ports,
 * which is what the child's kernel matches the error to a socket by).  Pure functions.
 */
#ifndef CHILDFLOW_RELAY_ICMP_H
#define CHILDFLOW_RELAY_ICMP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* What upstream said: an ICMP (AF_INET) or ICMPv6 (AF_INET6) type and code, the MTU for "too big". */
struct icmp_report {
	int family;
	uint8_t type, code;
	uint32_t mtu;
	struct sockaddr_storage from;   /* who sent the error: the destination or a router */
};

/*
 * icmp_error_build() - the packet that tells the child @rep about its datagram of @payload_len
 * bytes from @child to @dst (UDP).  @rep->family must match the addresses' family.
 * Return: the packet's length in @buf, or 0 when it does not fit in @size or the report is not one
 * a child should get (an unknown family).
 */
size_t icmp_error_build(uint8_t *buf, size_t size, const struct icmp_report *rep,
			const struct sockaddr_storage *child, const struct sockaddr_storage *dst,
			size_t payload_len);

/*
 * icmp_tcp_error_build() - the packet that tells the child @rep about its TCP SYN from @child to
 * @dst with initial sequence number @isn (the quote: ports and sequence, what the child's kernel
 * and traceroute match it by); as icmp_error_build().
 */
size_t icmp_tcp_error_build(uint8_t *buf, size_t size, const struct icmp_report *rep,
			    const struct sockaddr_storage *child, const struct sockaddr_storage *dst,
			    uint32_t isn);

/*
 * icmp_echo_error_build() - the packet that tells the child @rep about its echo request (@id,
 * @seq, @data_len bytes of data) from @child to @dst; as icmp_error_build().
 */
size_t icmp_echo_error_build(uint8_t *buf, size_t size, const struct icmp_report *rep,
			     const struct sockaddr_storage *child, const struct sockaddr_storage *dst,
			     uint16_t id, uint16_t seq, size_t data_len);

/*
 * icmp_echo_reply_build() - the echo reply the child gets from @from: TTL (hop limit) @ttl as it
 * reached this host, the child's @id, @seq, and the @data_len bytes at @data (which may lie inside
 * @buf, at or after buf + 48).  Return: its length, or 0 when it does not fit in @size.
 */
size_t icmp_echo_reply_build(uint8_t *buf, size_t size, const struct sockaddr_storage *from,
			     const struct sockaddr_storage *child, uint8_t ttl, uint16_t id, uint16_t seq,
			     const uint8_t *data, size_t data_len);

#endif
