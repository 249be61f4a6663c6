/*
 * libFuzzer target: the wire-egress frame matcher (capture/match.c).
 *
 * Every frame on the host's interfaces passes through match_frame() while `-C wire-egress` (or
 * `-C egress` under --root) runs: bytes that anyone on the host's networks can send.  The input
 * is a few tuples for the set (opened and closed flows of every protocol and family), then frames,
 * each copied into a buffer of exactly its length so a read past its end is a sanitizer report.
 * Besides crashes, a finding is a frame built from an open tuple of the set (TCP/UDP, either way
 * round) that does not match.
 *
 * Layout: byte 0: the number of tuples (mod 5); each tuple 38 bytes: proto selector, flags (bit 0
 * v6, bit 1 closed), local address (16) and port (2), peer address (16) and port (2); then frames,
 * each a 2-byte length, a flags byte (bit 0 Ethernet, bits 1-7 a time step in 100 ms) and its bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "capture/match.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define T0 1000000000000ull

static union flow_addr ep(bool v6, const uint8_t *a, const uint8_t *port)
{
	union flow_addr u;

	memset(&u, 0, sizeof(u));
	if (v6) {
		u.in6.sin6_family = AF_INET6;
		memcpy(&u.in6.sin6_addr, a, 16);
		memcpy(&u.in6.sin6_port, port, 2);
	} else {
		u.in4.sin_family = AF_INET;
		memcpy(&u.in4.sin_addr, a, 4);
		memcpy(&u.in4.sin_port, port, 2);
	}
	return u;
}

/* The IP packet of an open TCP/UDP tuple, sent (@out) or received: it must match. */
static void check_own(struct match_set *m, uint8_t proto, bool v6, const uint8_t *t, bool out, uint64_t ts)
{
	unsigned char pkt[40 + 20];
	const uint8_t *src = out ? t + 2 : t + 20, *dst = out ? t + 20 : t + 2;
	const uint8_t *sp = out ? t + 18 : t + 36, *dp = out ? t + 36 : t + 18;
	uint32_t hl = v6 ? 40 : 20;

	memset(pkt, 0, sizeof(pkt));
	if (v6) {
		pkt[0] = 0x60;
		pkt[6] = proto;
		memcpy(pkt + 8, src, 16);
		memcpy(pkt + 24, dst, 16);
	} else {
		pkt[0] = 0x45;
		pkt[9] = proto;
		memcpy(pkt + 12, src, 4);
		memcpy(pkt + 16, dst, 4);
	}
	memcpy(pkt + hl, sp, 2);
	memcpy(pkt + hl + 2, dp, 2);
	if (!match_frame(m, pkt, hl + 20, false, ts))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t protos[] = { IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6 };
	struct match_set *m = match_new();
	size_t off = 1, n;
	uint64_t ts = T0;

	if (!m || size < 1) {
		match_free(m);
		return 0;
	}
	n = data[0] % 5;
	for (size_t i = 0; i < n && off + 38 <= size; i++, off += 38) {
		const uint8_t *t = data + off;
		uint8_t proto = protos[t[0] % 4];
		bool v6 = t[1] & 1, closed = t[1] & 2;
		union flow_addr l = ep(v6, t + 2, t + 18), r = ep(v6, t + 20, t + 36);

		if (match_flow(m, proto, &l, &r, true, ts) < 0)
			break;
		if (closed)
			match_flow(m, proto, &l, &r, false, ts);
		else if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
			check_own(m, proto, v6, t, true, ts);
			check_own(m, proto, v6, t, false, ts);
		}
	}
	while (off + 3 <= size) {
		uint32_t len = (uint32_t)(data[off] << 8 | data[off + 1]);
		bool ether = data[off + 2] & 1;
		unsigned char *frame;

		ts += (uint64_t)(data[off + 2] >> 1) * 100000000ull;
		off += 3;
		if (len > size - off)
			len = (uint32_t)(size - off);
		frame = malloc(len ? len : 1);
		if (!frame)
			break;
		memcpy(frame, data + off, len);
		(void)match_frame(m, frame, len, ether, ts);
		free(frame);
		off += len;
	}
	match_free(m);
	return 0;
}
