/* SPDX-License-Identifier: MIT */
/* relay/icmp — ICMP errors for the child (see icmp.h). */
#include "relay/icmp.h"

#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#define ERR_TTL 64

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t acc)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		acc += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		acc += (uint32_t)p[n - 1] << 8;
	return acc;
}

static uint16_t fold(uint32_t acc)
{
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)~acc;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* The quoted datagram's UDP header: the child's ports, its length; no checksum (we lack the data). */
static void udp_quote(uint8_t *p, uint16_t sport, uint16_t dport, size_t payload_len)
{
	size_t ulen = 8 + payload_len;

	memcpy(p, &sport, 2);
	memcpy(p + 2, &dport, 2);
	put16(p + 4, (uint16_t)(ulen > 0xffff ? 0xffff : ulen));
	put16(p + 6, 0);
}

static size_t build4(uint8_t *buf, size_t size, const struct icmp_report *rep,
		     const struct sockaddr_in *child, const struct sockaddr_in *dst, size_t payload_len)
{
	const struct sockaddr_in *from = (const void *)&rep->from;
	const size_t len = 20 + 8 + 20 + 8;
	uint8_t *ip = buf, *icmp = buf + 20, *q = buf + 28;
	size_t qlen = 20 + 8 + payload_len;

	if (size < len || from->sin_family != AF_INET)
		return 0;
	memset(buf, 0, len);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)len);
	ip[8] = ERR_TTL;
	ip[9] = IPPROTO_ICMP;
	memcpy(ip + 12, &from->sin_addr, 4);
	memcpy(ip + 16, &child->sin_addr, 4);
	put16(ip + 10, fold(sum16(ip, 20, 0)));
	icmp[0] = rep->type;
	icmp[1] = rep->code;
	if (rep->type == 3 && rep->code == 4)   /* fragmentation needed: the next hop's MTU */
		put16(icmp + 6, (uint16_t)(rep->mtu > 0xffff ? 0xffff : rep->mtu));
	/* the child's datagram as it left the child: its header, then 8 bytes of UDP */
	q[0] = 0x45;
	put16(q + 2, (uint16_t)(qlen > 0xffff ? 0xffff : qlen));
	q[6] = 0x40;                            /* DF */
	q[8] = ERR_TTL;
	q[9] = IPPROTO_UDP;
	memcpy(q + 12, &child->sin_addr, 4);
	memcpy(q + 16, &dst->sin_addr, 4);
	put16(q + 10, fold(sum16(q, 20, 0)));
	udp_quote(q + 20, child->sin_port, dst->sin_port, payload_len);
	put16(icmp + 2, fold(sum16(icmp, 8 + 28, 0)));
	return len;
}

static size_t build6(uint8_t *buf, size_t size, const struct icmp_report *rep,
		     const struct sockaddr_in6 *child, const struct sockaddr_in6 *dst, size_t payload_len)
{
	const struct sockaddr_in6 *from = (const void *)&rep->from;
	const size_t body = 8 + 40 + 8, len = 40 + body;
	uint8_t *ip = buf, *icmp = buf + 40, *q = buf + 48;
	uint32_t acc;

	if (size < len || from->sin6_family != AF_INET6)
		return 0;
	memset(buf, 0, len);
	ip[0] = 0x60;
	put16(ip + 4, (uint16_t)body);
	ip[6] = IPPROTO_ICMPV6;
	ip[7] = ERR_TTL;
	memcpy(ip + 8, &from->sin6_addr, 16);
	memcpy(ip + 24, &child->sin6_addr, 16);
	icmp[0] = rep->type;
	icmp[1] = rep->code;
	if (rep->type == 2) {                   /* packet too big: the MTU */
		icmp[4] = (uint8_t)(rep->mtu >> 24);
		icmp[5] = (uint8_t)(rep->mtu >> 16);
		icmp[6] = (uint8_t)(rep->mtu >> 8);
		icmp[7] = (uint8_t)rep->mtu;
	}
	q[0] = 0x60;
	put16(q + 4, (uint16_t)(8 + payload_len > 0xffff ? 0xffff : 8 + payload_len));
	q[6] = IPPROTO_UDP;
	q[7] = ERR_TTL;
	memcpy(q + 8, &child->sin6_addr, 16);
	memcpy(q + 24, &dst->sin6_addr, 16);
	udp_quote(q + 40, child->sin6_port, dst->sin6_port, payload_len);
	/* ICMPv6 checksum: pseudo-header (addresses, length, next header) and the message */
	acc = sum16(ip + 8, 32, 0);
	acc += (uint32_t)body + IPPROTO_ICMPV6;
	put16(icmp + 2, fold(sum16(icmp, body, acc)));
	return len;
}

size_t icmp_error_build(uint8_t *buf, size_t size, const struct icmp_report *rep,
			const struct sockaddr_storage *child, const struct sockaddr_storage *dst,
			size_t payload_len)
{
	if (rep->family != child->ss_family || rep->family != dst->ss_family)
		return 0;
	if (rep->family == AF_INET)
		return build4(buf, size, rep, (const void *)child, (const void *)dst, payload_len);
	if (rep->family == AF_INET6)
		return build6(buf, size, rep, (const void *)child, (const void *)dst, payload_len);
	return 0;
}
