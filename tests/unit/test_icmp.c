/* Unit tests: relay/icmp - the ICMP errors the child gets for its datagrams. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_port_unreachable_v4),
		cmocka_unit_test(test_frag_needed_carries_mtu),
		cmocka_unit_test(test_v6_too_big_and_checksum),
		cmocka_unit_test(test_family_mismatch_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
