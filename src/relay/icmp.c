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

/* What is quoted of the child's packet after its IP header: its protocol and first 8 bytes. */
struct quote {
	uint8_t proto;
	uint8_t hdr[8];
	size_t len;                 /* the whole transport message's length */
};

/* The quoted datagram's UDP header: the child's ports, its length; no checksum (we lack the data). */
static void udp_quote(struct quote *q, uint16_t sport, uint16_t dport, size_t payload_len)
{
	size_t ulen = 8 + payload_len;

	q->proto = IPPROTO_UDP;
	q->len = ulen;
	memcpy(q->hdr, &sport, 2);
	memcpy(q->hdr + 2, &dport, 2);
	put16(q->hdr + 4, (uint16_t)(ulen > 0xffff ? 0xffff : ulen));
	put16(q->hdr + 6, 0);
}

/* The quoted SYN's first 8 TCP bytes: the child's ports and initial sequence number; a bare header. */
static void tcp_quote(struct quote *q, uint16_t sport, uint16_t dport, uint32_t isn)
{
	q->proto = IPPROTO_TCP;
	q->len = 20;
	memcpy(q->hdr, &sport, 2);
	memcpy(q->hdr + 2, &dport, 2);
	put16(q->hdr + 4, (uint16_t)(isn >> 16));
	put16(q->hdr + 6, (uint16_t)isn);
}

/* The quoted echo request's ICMP header: the child's identifier and sequence. */
static void echo_quote(struct quote *q, int family, uint16_t id, uint16_t seq, size_t data_len)
{
	q->proto = family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6;
	q->len = 8 + data_len;
	memset(q->hdr, 0, sizeof(q->hdr));
	q->hdr[0] = family == AF_INET ? 8 : 128;
	put16(q->hdr + 4, id);
	put16(q->hdr + 6, seq);
}

static size_t build4(uint8_t *buf, size_t size, const struct icmp_report *rep,
		     const struct sockaddr_in *child, const struct sockaddr_in *dst, const struct quote *qt)
{
	const struct sockaddr_in *from = (const void *)&rep->from;
	const size_t len = 20 + 8 + 20 + 8;
	uint8_t *ip = buf, *icmp = buf + 20, *q = buf + 28;
	size_t qlen = 20 + qt->len;

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
	q[9] = qt->proto;
	memcpy(q + 12, &child->sin_addr, 4);
	memcpy(q + 16, &dst->sin_addr, 4);
	put16(q + 10, fold(sum16(q, 20, 0)));
	memcpy(q + 20, qt->hdr, 8);
	put16(icmp + 2, fold(sum16(icmp, 8 + 28, 0)));
	return len;
}

static size_t build6(uint8_t *buf, size_t size, const struct icmp_report *rep,
		     const struct sockaddr_in6 *child, const struct sockaddr_in6 *dst, const struct quote *qt)
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
	put16(q + 4, (uint16_t)(qt->len > 0xffff ? 0xffff : qt->len));
	q[6] = qt->proto;
	q[7] = ERR_TTL;
	memcpy(q + 8, &child->sin6_addr, 16);
	memcpy(q + 24, &dst->sin6_addr, 16);
	memcpy(q + 40, qt->hdr, 8);
	/* ICMPv6 checksum: pseudo-header (addresses, length, next header) and the message */
	acc = sum16(ip + 8, 32, 0);
	acc += (uint32_t)body + IPPROTO_ICMPV6;
	put16(icmp + 2, fold(sum16(icmp, body, acc)));
	return len;
}

static size_t build(uint8_t *buf, size_t size, const struct icmp_report *rep,
		    const struct sockaddr_storage *child, const struct sockaddr_storage *dst, const struct quote *q)
{
	if (rep->family != child->ss_family || rep->family != dst->ss_family)
		return 0;
	if (rep->family == AF_INET)
		return build4(buf, size, rep, (const void *)child, (const void *)dst, q);
	if (rep->family == AF_INET6)
		return build6(buf, size, rep, (const void *)child, (const void *)dst, q);
	return 0;
}

size_t icmp_error_build(uint8_t *buf, size_t size, const struct icmp_report *rep,
			const struct sockaddr_storage *child, const struct sockaddr_storage *dst,
			size_t payload_len)
{
	struct quote q;

	if (child->ss_family != AF_INET && child->ss_family != AF_INET6)
		return 0;
	/* sin_port and sin6_port sit at the same offset */
	udp_quote(&q, ((const struct sockaddr_in *)child)->sin_port, ((const struct sockaddr_in *)dst)->sin_port,
		  payload_len);
	return build(buf, size, rep, child, dst, &q);
}

size_t icmp_tcp_error_build(uint8_t *buf, size_t size, const struct icmp_report *rep,
			    const struct sockaddr_storage *child, const struct sockaddr_storage *dst,
			    uint32_t isn)
{
	struct quote q;

	if (child->ss_family != AF_INET && child->ss_family != AF_INET6)
		return 0;
	tcp_quote(&q, ((const struct sockaddr_in *)child)->sin_port, ((const struct sockaddr_in *)dst)->sin_port,
		  isn);
	return build(buf, size, rep, child, dst, &q);
}

size_t icmp_echo_error_build(uint8_t *buf, size_t size, const struct icmp_report *rep,
			     const struct sockaddr_storage *child, const struct sockaddr_storage *dst,
			     uint16_t id, uint16_t seq, size_t data_len)
{
	struct quote q;

	echo_quote(&q, child->ss_family, id, seq, data_len);
	return build(buf, size, rep, child, dst, &q);
}

size_t icmp_echo_reply_build(uint8_t *buf, size_t size, const struct sockaddr_storage *from,
			     const struct sockaddr_storage *child, uint8_t ttl, uint16_t id, uint16_t seq,
			     const uint8_t *data, size_t data_len)
{
	if (from->ss_family != child->ss_family)
		return 0;
	if (from->ss_family == AF_INET) {
		const size_t len = 20 + 8 + data_len;
		uint8_t *ip = buf, *icmp = buf + 20;

		if (len > size || len > 0xffff)
			return 0;
		memset(buf, 0, 28);
		ip[0] = 0x45;
		put16(ip + 2, (uint16_t)len);
		ip[8] = ttl;
		ip[9] = IPPROTO_ICMP;
		memcpy(ip + 12, &((const struct sockaddr_in *)from)->sin_addr, 4);
		memcpy(ip + 16, &((const struct sockaddr_in *)child)->sin_addr, 4);
		put16(ip + 10, fold(sum16(ip, 20, 0)));
		put16(icmp + 4, id);
		put16(icmp + 6, seq);
		memmove(icmp + 8, data, data_len);
		put16(icmp + 2, fold(sum16(icmp, 8 + data_len, 0)));
		return len;
	}
	if (from->ss_family == AF_INET6) {
		const size_t body = 8 + data_len, len = 40 + body;
		uint8_t *ip = buf, *icmp = buf + 40;
		uint32_t acc;

		if (len > size || body > 0xffff)
			return 0;
		memset(buf, 0, 48);
		ip[0] = 0x60;
		put16(ip + 4, (uint16_t)body);
		ip[6] = IPPROTO_ICMPV6;
		ip[7] = ttl;
		memcpy(ip + 8, &((const struct sockaddr_in6 *)from)->sin6_addr, 16);
		memcpy(ip + 24, &((const struct sockaddr_in6 *)child)->sin6_addr, 16);
		icmp[0] = 129;
		put16(icmp + 4, id);
		put16(icmp + 6, seq);
		memmove(icmp + 8, data, data_len);
		acc = sum16(ip + 8, 32, 0);
		acc += (uint32_t)body + IPPROTO_ICMPV6;
		put16(icmp + 2, fold(sum16(icmp, body, acc)));
		return len;
	}
	return 0;
}
