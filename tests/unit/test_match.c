/* Unit tests: capture/match - which frames on the host's wire are the tree's (wire-egress). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "capture/match.h"

#define T0 1000000000000ull   /* a CLOCK_REALTIME stamp, ns */
#define MS 1000000ull

static union flow_addr ep(const char *a, int port)
{
	union flow_addr u;

	memset(&u, 0, sizeof(u));
	if (strchr(a, ':')) {
		u.in6.sin6_family = AF_INET6;
		u.in6.sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, a, &u.in6.sin6_addr);
	} else {
		u.in4.sin_family = AF_INET;
		u.in4.sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, a, &u.in4.sin_addr);
	}
	return u;
}

/*
 * An IP packet @src:@sp -> @dst:@dp of @proto with @l4len transport bytes (ports first; for ICMP,
 * type @sp and the echo id @dp), in @buf behind an Ethernet header when @ether; v4 fragment fields
 * from @frag (offset in 8-byte units | 0x2000 for more fragments).  Return: the frame's length.
 */
static uint32_t pkt(unsigned char *buf, bool ether, const char *src, const char *dst, uint8_t proto, int sp,
		    int dp, uint32_t l4len, uint16_t frag, uint16_t id)
{
	unsigned char *ip = buf + (ether ? 14 : 0), *l4;
	bool v6 = strchr(src, ':');

	memset(buf, 0, 1600);
	if (ether) {
		buf[12] = v6 ? 0x86 : 0x08;
		buf[13] = v6 ? 0xdd : 0x00;
	}
	if (v6) {
		ip[0] = 0x60;
		ip[6] = proto;
		inet_pton(AF_INET6, src, ip + 8);
		inet_pton(AF_INET6, dst, ip + 24);
		l4 = ip + 40;
	} else {
		ip[0] = 0x45;
		ip[4] = (unsigned char)(id >> 8);
		ip[5] = (unsigned char)id;
		ip[6] = (unsigned char)(frag >> 8);
		ip[7] = (unsigned char)frag;
		ip[9] = proto;
		inet_pton(AF_INET, src, ip + 12);
		inet_pton(AF_INET, dst, ip + 16);
		l4 = ip + 20;
	}
	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		l4[0] = (unsigned char)sp;
		l4[4] = (unsigned char)(dp >> 8);
		l4[5] = (unsigned char)dp;
	} else {
		l4[0] = (unsigned char)(sp >> 8);
		l4[1] = (unsigned char)sp;
		l4[2] = (unsigned char)(dp >> 8);
		l4[3] = (unsigned char)dp;
	}
	return (uint32_t)(l4 - buf) + l4len;
}

/* A set with one open flow (@proto, @la:@lp local, @ra:@rp remote). */
static struct match_set *set_with(uint8_t proto, const char *la, int lp, const char *ra, int rp)
{
	struct match_set *m = match_new();
	union flow_addr l = ep(la, lp), r = ep(ra, rp);

	assert_non_null(m);
	assert_int_equal(match_flow(m, proto, &l, &r, true, T0), 0);
	return m;
}

static struct match_set *set_with_tcp_flow(void)
{
	return set_with(IPPROTO_TCP, "198.51.100.1", 40000, "203.0.113.5", 443);
}

static void test_tcp_both_ways_and_nothing_else(void **state)
{
	struct match_set *m = set_with_tcp_flow();
	unsigned char f[1600];
	uint32_t n;

	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_TCP, 40000, 443, 20, 0, 1);
	assert_true(match_frame(m, f, n, true, T0));
	n = pkt(f, true, "203.0.113.5", "198.51.100.1", IPPROTO_TCP, 443, 40000, 20, 0, 1);
	assert_true(match_frame(m, f, n, true, T0));
	/* Raw IP (no link header) as on an IP-only interface. */
	n = pkt(f, false, "203.0.113.5", "198.51.100.1", IPPROTO_TCP, 443, 40000, 20, 0, 1);
	assert_true(match_frame(m, f, n, false, T0));
	/* Another peer port, another protocol, another peer: not ours. */
	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_TCP, 40000, 444, 20, 0, 1);
	assert_false(match_frame(m, f, n, true, T0));
	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_UDP, 40000, 443, 8, 0, 1);
	assert_false(match_frame(m, f, n, true, T0));
	n = pkt(f, true, "198.51.100.1", "203.0.113.6", IPPROTO_TCP, 40000, 443, 20, 0, 1);
	assert_false(match_frame(m, f, n, true, T0));
	match_free(m);
}

static void test_vlan_tags_and_truncation(void **state)
{
	struct match_set *m = set_with_tcp_flow();
	unsigned char f[1600], g[1600];
	uint32_t n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_TCP, 40000, 443, 20, 0, 1);

	/* Two tags (802.1ad outer, 802.1Q inner) between the addresses and the IP header. */
	memcpy(g, f, 12);
	g[12] = 0x88, g[13] = 0xa8, g[14] = 0, g[15] = 1, g[16] = 0x81, g[17] = 0x00, g[18] = 0, g[19] = 2;
	memcpy(g + 20, f + 12, n - 12);
	assert_true(match_frame(m, g, n + 8, true, T0));
	/* Cut short anywhere before the ports: never a match, never a read past the end. */
	for (uint32_t len = 0; len < 14 + 20 + 4; len++) {
		unsigned char *c = malloc(len ? len : 1);

		memcpy(c, f, len);
		assert_false(match_frame(m, c, len, true, T0));
		free(c);
	}
	/* Not IP. */
	f[12] = 0x08, f[13] = 0x06;
	assert_false(match_frame(m, f, n, true, T0));
	match_free(m);
}

static void test_closed_flow_grace(void **state)
{
	struct match_set *m = set_with_tcp_flow();
	union flow_addr l = ep("198.51.100.1", 40000), r = ep("203.0.113.5", 443);
	unsigned char f[1600];
	uint32_t n = pkt(f, true, "203.0.113.5", "198.51.100.1", IPPROTO_TCP, 443, 40000, 20, 0, 1);

	assert_int_equal(match_flow(m, IPPROTO_TCP, &l, &r, false, T0 + 100 * MS), 0);
	assert_true(match_frame(m, f, n, true, T0 + 2000 * MS));    /* its FIN, read later */
	assert_false(match_frame(m, f, n, true, T0 + 3200 * MS));   /* past the grace */
	/* A new flow on the same tuple after the old one was forgotten. */
	assert_int_equal(match_flow(m, IPPROTO_TCP, &l, &r, true, T0 + 20000 * MS), 0);
	assert_true(match_frame(m, f, n, true, T0 + 20001 * MS));
	match_free(m);
}

static void test_icmp_error_quoting_ours(void **state)
{
	struct match_set *m = set_with(IPPROTO_UDP, "198.51.100.1", 5353, "203.0.113.5", 53);
	union flow_addr l, r;
	unsigned char f[1600], q[1600];
	uint32_t qn, n;

	/* A router's port unreachable quoting our datagram (IP header + 8 bytes). */
	qn = pkt(q, false, "198.51.100.1", "203.0.113.5", IPPROTO_UDP, 5353, 53, 8, 0, 7);
	n = pkt(f, true, "198.51.100.254", "198.51.100.1", IPPROTO_ICMP, 3, 0, 8 + qn, 0, 9);
	memcpy(f + 14 + 20 + 8, q, qn);
	assert_true(match_frame(m, f, n, true, T0));
	/* ... quoting someone else's: not ours. */
	q[23] = 54;
	memcpy(f + 14 + 20 + 8, q, qn);
	assert_false(match_frame(m, f, n, true, T0));
	/* An echo request is not an error: it needs its own echo flow. */
	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_ICMP, 8, 0x1234, 8, 0, 9);
	assert_false(match_frame(m, f, n, true, T0));
	l = ep("198.51.100.1", 0x1234);
	r = ep("203.0.113.5", 0x1234);
	assert_int_equal(match_flow(m, IPPROTO_ICMP, &l, &r, true, T0), 0);
	assert_true(match_frame(m, f, n, true, T0));
	n = pkt(f, true, "203.0.113.5", "198.51.100.1", IPPROTO_ICMP, 0, 0x1234, 8, 0, 9);
	assert_true(match_frame(m, f, n, true, T0));
	match_free(m);
}

static void test_later_fragments_follow_the_first(void **state)
{
	struct match_set *m = set_with(IPPROTO_UDP, "198.51.100.1", 5353, "203.0.113.5", 9);
	unsigned char f[1600];
	uint32_t n;

	/* A later fragment before its first one is not known. */
	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_UDP, 0, 0, 100, 185, 77);
	assert_false(match_frame(m, f, n, true, T0));
	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_UDP, 5353, 9, 1480, 0x2000, 77);
	assert_true(match_frame(m, f, n, true, T0));
	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_UDP, 0, 0, 100, 185, 77);
	assert_true(match_frame(m, f, n, true, T0 + MS));
	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_UDP, 0, 0, 100, 185, 78);   /* another id */
	assert_false(match_frame(m, f, n, true, T0 + MS));
	n = pkt(f, true, "198.51.100.1", "203.0.113.5", IPPROTO_UDP, 0, 0, 100, 185, 77);   /* past 30 s */
	assert_false(match_frame(m, f, n, true, T0 + 31000 * MS));
	match_free(m);
}

static void test_v6_and_its_fragment_header(void **state)
{
	struct match_set *m = set_with(IPPROTO_UDP, "2001:db8::1", 5353, "2001:db8:1::5", 9);
	unsigned char f[1600];
	uint32_t n;

	n = pkt(f, true, "2001:db8:1::5", "2001:db8::1", IPPROTO_UDP, 9, 5353, 8, 0, 0);
	assert_true(match_frame(m, f, n, true, T0));
	/* First fragment: fragment header (next header UDP, offset 0, M set, id 0x01020304). */
	n = pkt(f, true, "2001:db8::1", "2001:db8:1::5", 44, 0, 0, 8 + 8, 0, 0);
	{
		unsigned char *fh = f + 14 + 40, *udp = fh + 8;

		memset(fh, 0, 16);
		fh[0] = IPPROTO_UDP, fh[3] = 1, fh[4] = 1, fh[5] = 2, fh[6] = 3, fh[7] = 4;
		udp[0] = 5353 >> 8, udp[1] = 5353 & 0xff, udp[3] = 9;
	}
	assert_true(match_frame(m, f, n, true, T0));
	f[14 + 40 + 2] = 0x05, f[14 + 40 + 3] = 0xa8;   /* a later fragment of it: offset 181, M clear */
	memset(f + 14 + 48, 0, 8);
	assert_true(match_frame(m, f, n, true, T0));
	f[14 + 40 + 7] = 5;                              /* another datagram's */
	assert_false(match_frame(m, f, n, true, T0));
	match_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tcp_both_ways_and_nothing_else),
		cmocka_unit_test(test_vlan_tags_and_truncation),
		cmocka_unit_test(test_closed_flow_grace),
		cmocka_unit_test(test_icmp_error_quoting_ours),
		cmocka_unit_test(test_later_fragments_follow_the_first),
		cmocka_unit_test(test_v6_and_its_fragment_header),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
