/* Unit tests: relay/icmp - the ICMP errors the child gets for its datagrams and echo requests, and
 * the echo replies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <string.h>
#include <netinet/in.h>

#include "relay/icmp.h"

static uint16_t csum(const uint8_t *p, size_t n, uint32_t acc)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		acc += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		acc += (uint32_t)p[n - 1] << 8;
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)acc;
}

static struct sockaddr_storage sa4(const char *a, int port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	inet_pton(AF_INET, a, &s->sin_addr);
	return ss;
}

static struct sockaddr_storage sa6(const char *a, int port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	inet_pton(AF_INET6, a, &s->sin6_addr);
	return ss;
}

static void test_port_unreachable_v4(void **state)
{
	struct sockaddr_storage child = sa4("10.240.255.2", 40000), dst = sa4("198.51.100.10", 9);
	struct icmp_report rep = { .family = AF_INET, .type = 3, .code = 3, .from = sa4("198.51.100.10", 0) };
	uint8_t b[128], want[4];
	size_t n;

	(void)state;
	n = icmp_error_build(b, sizeof(b), &rep, &child, &dst, 13);
	assert_int_equal(n, 56);
	assert_int_equal(b[0], 0x45);
	assert_int_equal(b[9], IPPROTO_ICMP);
	assert_int_equal(csum(b, 20, 0), 0xffff);              /* header checksum holds */
	inet_pton(AF_INET, "198.51.100.10", want);
	assert_memory_equal(b + 12, want, 4);                   /* from the sender of the error */
	inet_pton(AF_INET, "10.240.255.2", want);
	assert_memory_equal(b + 16, want, 4);                   /* to the child */
	assert_int_equal(b[20], 3);
	assert_int_equal(b[21], 3);
	assert_int_equal(csum(b + 20, 36, 0), 0xffff);         /* ICMP checksum holds */
	/* the quote: the child's datagram, its addresses and ports, UDP length 8 + 13 */
	assert_int_equal(b[28 + 9], IPPROTO_UDP);
	assert_memory_equal(b + 28 + 12, want, 4);
	assert_int_equal(b[48] << 8 | b[49], 40000);
	assert_int_equal(b[50] << 8 | b[51], 9);
	assert_int_equal(b[52] << 8 | b[53], 21);
	assert_int_equal(icmp_error_build(b, 55, &rep, &child, &dst, 13), 0);   /* room respected */
}

static void test_frag_needed_carries_mtu(void **state)
{
	struct sockaddr_storage child = sa4("10.240.255.2", 5000), dst = sa4("203.0.113.10", 443);
	struct icmp_report rep = { .family = AF_INET, .type = 3, .code = 4, .mtu = 1280,
				   .from = sa4("198.18.0.1", 0) };
	uint8_t b[128];

	(void)state;
	assert_int_equal(icmp_error_build(b, sizeof(b), &rep, &child, &dst, 1400), 56);
	assert_int_equal(b[26] << 8 | b[27], 1280);
	assert_int_equal(csum(b + 20, 36, 0), 0xffff);
}

static void test_v6_too_big_and_checksum(void **state)
{
	struct sockaddr_storage child = sa6("fd42:6368:696c::2", 33333), dst = sa6("2001:db8:100::10", 9);
	struct icmp_report rep = { .family = AF_INET6, .type = 2, .code = 0, .mtu = 1280,
				   .from = sa6("2001:db8:2::1", 0) };
	uint8_t b[128];
	size_t n;
	uint32_t acc = 0;

	(void)state;
	n = icmp_error_build(b, sizeof(b), &rep, &child, &dst, 1300);
	assert_int_equal(n, 96);
	assert_int_equal(b[0] >> 4, 6);
	assert_int_equal(b[6], IPPROTO_ICMPV6);
	assert_int_equal(b[4] << 8 | b[5], 56);
	assert_int_equal((uint32_t)b[44] << 24 | b[45] << 16 | b[46] << 8 | b[47], 1280);
	/* pseudo-header + message sum to all ones */
	for (int i = 8; i < 40; i += 2)
		acc += (uint32_t)b[i] << 8 | b[i + 1];
	acc += 56 + IPPROTO_ICMPV6;
	assert_int_equal(csum(b + 40, 56, acc), 0xffff);
	assert_int_equal(b[48 + 6], IPPROTO_UDP);
	assert_int_equal(b[88] << 8 | b[89], 33333);
	assert_int_equal(b[90] << 8 | b[91], 9);
}

static void test_family_mismatch_refused(void **state)
{
	struct sockaddr_storage child = sa4("10.240.255.2", 1), dst = sa6("2001:db8::1", 2);
	struct icmp_report rep = { .family = AF_INET, .type = 3, .code = 3, .from = sa4("198.51.100.1", 0) };
	uint8_t b[128];

	(void)state;
	assert_int_equal(icmp_error_build(b, sizeof(b), &rep, &child, &dst, 1), 0);
	rep.from = sa6("2001:db8::1", 0);
	dst = sa4("198.51.100.1", 2);
	assert_int_equal(icmp_error_build(b, sizeof(b), &rep, &child, &dst, 1), 0);   /* sender of another family */
}

/* An echo reply: the sender, the TTL it arrived with, the child's identifier, both checksums. */
static void test_echo_reply_v4(void **state)
{
	struct sockaddr_storage from = sa4("198.51.100.10", 0), child = sa4("10.240.255.2", 0);
	uint8_t b[128], want[4];
	size_t n;

	(void)state;
	n = icmp_echo_reply_build(b, sizeof(b), &from, &child, 63, 0x1234, 7, (const uint8_t *)"abc", 3);
	assert_int_equal(n, 31);
	assert_int_equal(b[0], 0x45);
	assert_int_equal(b[2] << 8 | b[3], 31);
	assert_int_equal(b[8], 63);
	assert_int_equal(b[9], IPPROTO_ICMP);
	assert_int_equal(csum(b, 20, 0), 0xffff);
	inet_pton(AF_INET, "198.51.100.10", want);
	assert_memory_equal(b + 12, want, 4);
	inet_pton(AF_INET, "10.240.255.2", want);
	assert_memory_equal(b + 16, want, 4);
	assert_int_equal(b[20], 0);                             /* echo reply, code 0 */
	assert_int_equal(b[21], 0);
	assert_int_equal(b[24] << 8 | b[25], 0x1234);
	assert_int_equal(b[26] << 8 | b[27], 7);
	assert_memory_equal(b + 28, "abc", 3);
	assert_int_equal(csum(b + 20, 11, 0), 0xffff);         /* odd length: padded with a zero */
	assert_int_equal(icmp_echo_reply_build(b, 30, &from, &child, 63, 1, 1, (const uint8_t *)"abc", 3), 0);
	from = sa6("2001:db8::1", 0);                          /* a sender of the other family */
	assert_int_equal(icmp_echo_reply_build(b, sizeof(b), &from, &child, 63, 1, 1, NULL, 0), 0);
}

/* The data may already lie in the buffer, where P read the reply (at buf + 48): it is moved, whole. */
static void test_echo_reply_in_place(void **state)
{
	struct sockaddr_storage from = sa6("2001:db8:100::10", 0), child = sa6("fd42:6368:696c::2", 0);
	struct sockaddr_storage from4 = sa4("198.51.100.10", 0), child4 = sa4("10.240.255.2", 0);
	uint8_t b[256], data[100];
	uint32_t acc = 0;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);
	memcpy(b + 48, data, sizeof(data));
	n = icmp_echo_reply_build(b, sizeof(b), &from, &child, 62, 0xbeef, 0xffff, b + 48, sizeof(data));
	assert_int_equal(n, 40 + 8 + 100);
	assert_int_equal(b[0] >> 4, 6);
	assert_int_equal(b[4] << 8 | b[5], 108);
	assert_int_equal(b[6], IPPROTO_ICMPV6);
	assert_int_equal(b[7], 62);                             /* the hop limit it arrived with */
	assert_int_equal(b[40], 129);
	assert_int_equal(b[44] << 8 | b[45], 0xbeef);
	assert_int_equal(b[46] << 8 | b[47], 0xffff);
	assert_memory_equal(b + 48, data, sizeof(data));
	for (int i = 8; i < 40; i += 2)
		acc += (uint32_t)b[i] << 8 | b[i + 1];
	acc += 108 + IPPROTO_ICMPV6;
	assert_int_equal(csum(b + 40, 108, acc), 0xffff);
	/* IPv4: the data moves 20 bytes towards the header */
	memcpy(b + 48, data, sizeof(data));
	n = icmp_echo_reply_build(b, sizeof(b), &from4, &child4, 63, 1, 2, b + 48, sizeof(data));
	assert_int_equal(n, 20 + 8 + 100);
	assert_memory_equal(b + 28, data, sizeof(data));
	assert_int_equal(csum(b + 20, 108, 0), 0xffff);
}

/* A router's time exceeded for an echo: from the router, quoting the child's echo request (its
 * addresses, identifier and sequence: what the child's kernel finds its socket by). */
static void test_echo_error_time_exceeded_v4(void **state)
{
	struct sockaddr_storage child = sa4("10.240.255.2", 0), dst = sa4("198.51.100.10", 0);
	struct icmp_report rep = { .family = AF_INET, .type = 11, .code = 0, .from = sa4("198.18.0.1", 0) };
	uint8_t b[128], want[4];

	(void)state;
	assert_int_equal(icmp_echo_error_build(b, sizeof(b), &rep, &child, &dst, 0x4242, 3, 32), 56);
	inet_pton(AF_INET, "198.18.0.1", want);
	assert_memory_equal(b + 12, want, 4);
	assert_int_equal(b[20], 11);
	assert_int_equal(b[21], 0);
	assert_int_equal(csum(b + 20, 36, 0), 0xffff);
	assert_int_equal(b[28 + 9], IPPROTO_ICMP);
	assert_int_equal(b[30] << 8 | b[31], 20 + 8 + 32);     /* the quoted request's total length */
	assert_int_equal(csum(b + 28, 20, 0), 0xffff);
	inet_pton(AF_INET, "10.240.255.2", want);
	assert_memory_equal(b + 28 + 12, want, 4);
	inet_pton(AF_INET, "198.51.100.10", want);
	assert_memory_equal(b + 28 + 16, want, 4);
	assert_int_equal(b[48], 8);                             /* an echo request */
	assert_int_equal(b[52] << 8 | b[53], 0x4242);
	assert_int_equal(b[54] << 8 | b[55], 3);
	assert_int_equal(icmp_echo_error_build(b, 55, &rep, &child, &dst, 1, 1, 0), 0);
	rep.family = AF_INET6;                                  /* a report of the other family */
	assert_int_equal(icmp_echo_error_build(b, sizeof(b), &rep, &child, &dst, 1, 1, 0), 0);
}

/* A SYN's time exceeded (traceroute -T): from the router, quoting the child's ports and ISN. */
static void test_tcp_error_time_exceeded(void **state)
{
	struct sockaddr_storage child = sa4("10.240.255.2", 40001), dst = sa4("198.51.100.10", 80);
	struct icmp_report rep = { .family = AF_INET, .type = 11, .code = 0, .from = sa4("198.18.0.1", 0) };
	uint8_t b[128], want[4];
	uint32_t acc = 0;

	(void)state;
	assert_int_equal(icmp_tcp_error_build(b, sizeof(b), &rep, &child, &dst, 0xdeadbeef), 56);
	inet_pton(AF_INET, "198.18.0.1", want);
	assert_memory_equal(b + 12, want, 4);
	assert_int_equal(b[20], 11);
	assert_int_equal(csum(b + 20, 36, 0), 0xffff);
	assert_int_equal(b[28 + 9], IPPROTO_TCP);
	assert_int_equal(b[30] << 8 | b[31], 40);               /* a bare SYN's length */
	assert_int_equal(b[48] << 8 | b[49], 40001);
	assert_int_equal(b[50] << 8 | b[51], 80);
	assert_int_equal((uint32_t)b[52] << 24 | b[53] << 16 | b[54] << 8 | b[55], 0xdeadbeef);
	assert_int_equal(icmp_tcp_error_build(b, 55, &rep, &child, &dst, 1), 0);

	child = sa6("fd42:6368:696c::2", 40002);
	dst = sa6("2001:db8:100::10", 443);
	rep = (struct icmp_report){ .family = AF_INET6, .type = 3, .code = 0, .from = sa6("2001:db8:2::1", 0) };
	assert_int_equal(icmp_tcp_error_build(b, sizeof(b), &rep, &child, &dst, 0x01020304), 96);
	assert_int_equal(b[40], 3);
	assert_int_equal(b[48 + 6], IPPROTO_TCP);
	assert_int_equal(b[48 + 4] << 8 | b[48 + 5], 20);
	assert_int_equal(b[88] << 8 | b[89], 40002);
	assert_int_equal(b[90] << 8 | b[91], 443);
	assert_int_equal((uint32_t)b[92] << 24 | b[93] << 16 | b[94] << 8 | b[95], 0x01020304);
	for (int i = 8; i < 40; i += 2)
		acc += (uint32_t)b[i] << 8 | b[i + 1];
	acc += 56 + IPPROTO_ICMPV6;
	assert_int_equal(csum(b + 40, 56, acc), 0xffff);
}

static void test_echo_error_unreachable_v6(void **state)
{
	struct sockaddr_storage child = sa6("fd42:6368:696c::2", 0), dst = sa6("2001:db8:999::1", 0);
	struct icmp_report rep = { .family = AF_INET6, .type = 1, .code = 0, .from = sa6("2001:db8:2::1", 0) };
	uint8_t b[128];
	uint32_t acc = 0;

	(void)state;
	assert_int_equal(icmp_echo_error_build(b, sizeof(b), &rep, &child, &dst, 9, 0x0102, 56), 96);
	assert_int_equal(b[40], 1);
	assert_int_equal(b[48 + 6], IPPROTO_ICMPV6);           /* the quote: an ICMPv6 echo request */
	assert_int_equal(b[48 + 4] << 8 | b[48 + 5], 8 + 56);
	assert_int_equal(b[88], 128);
	assert_int_equal(b[92] << 8 | b[93], 9);
	assert_int_equal(b[94] << 8 | b[95], 0x0102);
	for (int i = 8; i < 40; i += 2)
		acc += (uint32_t)b[i] << 8 | b[i + 1];
	acc += 56 + IPPROTO_ICMPV6;
	assert_int_equal(csum(b + 40, 56, acc), 0xffff);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_port_unreachable_v4),
		cmocka_unit_test(test_frag_needed_carries_mtu),
		cmocka_unit_test(test_v6_too_big_and_checksum),
		cmocka_unit_test(test_family_mismatch_refused),
		cmocka_unit_test(test_echo_reply_v4),
		cmocka_unit_test(test_echo_reply_in_place),
		cmocka_unit_test(test_echo_error_time_exceeded_v4),
		cmocka_unit_test(test_echo_error_unreachable_v6),
		cmocka_unit_test(test_tcp_error_time_exceeded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
