/* Unit tests: policy/guard and sandbox/netplan — which destinations the relay refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <arpa/inet.h>
#include <ifaddrs.h>

#include "nft/gateway.h"
#include "policy/guard.h"
#include "sandbox/netplan.h"

static struct netplan np;

static enum guard_verdict v4(const char *a, int port)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET, a, &s.sin_addr), 1);
	return guard_classify(&np, (struct sockaddr *)&s);
}

static enum guard_verdict v6(const char *a, int port)
{
	struct sockaddr_in6 s = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
	return guard_classify(&np, (struct sockaddr *)&s);
}

static void test_ipv4_classes(void **state)
{
	(void)state;
	assert_int_equal(v4("198.51.100.10", 80), GUARD_ALLOW);
	assert_int_equal(v4("169.254.169.254", 80), GUARD_ALLOW);  /* metadata: later, by policy flag */
	assert_int_equal(v4("10.240.254.255", 80), GUARD_ALLOW);
	assert_int_equal(v4("10.240.255.4", 80), GUARD_ALLOW);     /* just outside the /30 */
	assert_int_equal(v4("0.0.0.0", 80), GUARD_DENY_UNSPECIFIED);
	assert_int_equal(v4("198.51.100.10", 0), GUARD_DENY_UNSPECIFIED);
	assert_int_equal(v4("127.0.0.1", 22), GUARD_DENY_LOOPBACK);
	assert_int_equal(v4("127.255.0.9", 22), GUARD_DENY_LOOPBACK);
	assert_int_equal(v4("224.0.0.251", 5353), GUARD_DENY_MULTICAST);
	assert_int_equal(v4("239.255.255.250", 1900), GUARD_DENY_MULTICAST);
	assert_int_equal(v4("255.255.255.255", 67), GUARD_DENY_MULTICAST);
	assert_int_equal(v4("10.240.255.1", 22), GUARD_DENY_LINK);
	assert_int_equal(v4("10.240.255.3", 22), GUARD_DENY_LINK);
}

static void test_ipv6_classes(void **state)
{
	(void)state;
	assert_int_equal(v6("2001:db8:100::10", 443), GUARD_ALLOW);
	assert_int_equal(v6("fd42:6368:696d::1", 443), GUARD_ALLOW);  /* a neighbouring ULA */
	assert_int_equal(v6("::", 443), GUARD_DENY_UNSPECIFIED);
	assert_int_equal(v6("::1", 443), GUARD_DENY_LOOPBACK);
	assert_int_equal(v6("ff02::fb", 5353), GUARD_DENY_MULTICAST);
	assert_int_equal(v6("fe80::1", 22), GUARD_DENY_LINKLOCAL6);
	assert_int_equal(v6("::ffff:127.0.0.1", 22), GUARD_DENY_MAPPED);
	assert_int_equal(v6("::ffff:198.51.100.10", 22), GUARD_DENY_MAPPED);
	assert_int_equal(v6("fd42:6368:696c::1", 22), GUARD_DENY_LINK);
	assert_int_equal(v6("fd42:6368:696c::ffff", 22), GUARD_DENY_LINK);
}

static void test_reasons_are_distinct(void **state)
{
	(void)state;
	for (int a = GUARD_ALLOW; a <= GUARD_DENY_HOST_LOCAL; a++)
		for (int b = a + 1; b <= GUARD_DENY_HOST_LOCAL; b++)
			assert_string_not_equal(guard_reason(a), guard_reason(b));
	assert_string_equal(guard_reason(GUARD_DENY_HOST_LOCAL), "an address of the host itself");
}

/* guard_check() also refuses the host's own (non-loopback) addresses, found with getifaddrs(). */
static void test_check_denies_host_addresses(void **state)
{
	struct guard g;
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(80) };
	struct ifaddrs *ifa;
	int local = 0;

	(void)state;
	assert_int_equal(guard_init(&g, &np), 0);
	inet_pton(AF_INET, "198.51.100.10", &s.sin_addr);
	assert_int_equal(guard_check(&g, (struct sockaddr *)&s), GUARD_ALLOW);
	inet_pton(AF_INET, "127.0.0.1", &s.sin_addr);
	assert_int_equal(guard_check(&g, (struct sockaddr *)&s), GUARD_DENY_LOOPBACK);
	assert_int_equal(getifaddrs(&ifa), 0);
	for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		struct sockaddr_storage ss;

		memset(&ss, 0, sizeof(ss));
		memcpy(&ss, i->ifa_addr, i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
									: sizeof(struct sockaddr_in6));
		((struct sockaddr_in *)&ss)->sin_port = htons(80);   /* same offset in both families */
		if (guard_classify(&np, (struct sockaddr *)&ss) != GUARD_ALLOW)
			continue;   /* loopback, link-local: classified before the host lookup */
		assert_int_equal(guard_check(&g, (struct sockaddr *)&ss), GUARD_DENY_HOST_LOCAL);
		local++;
	}
	freeifaddrs(ifa);
	guard_free(&g);
	if (!local)
		skip();   /* a host with only loopback addresses has nothing more to check */
}

static void test_gateway_ruleset(void **state)
{
	const struct gateway_rules r = { .ifname = "gw0", .tcp_port = 15001, .udp_port = 15002 };
	char buf[2048];
	char tiny[16];

	(void)state;
	assert_true(gateway_rules_render(&r, buf, sizeof(buf)) > 0);
	assert_non_null(strstr(buf, "policy drop;"));
	assert_non_null(strstr(buf, "iifname != \"gw0\" drop"));
	assert_non_null(strstr(buf, "meta nfproto ipv4 meta l4proto tcp tproxy ip to :15001 meta mark set 1 accept"));
	assert_non_null(strstr(buf, "meta nfproto ipv6 meta l4proto udp tproxy ip6 to :15002 meta mark set 1 accept"));
	assert_non_null(strstr(buf, "nd-neighbor-solicit"));
	assert_true(gateway_rules_render(&r, tiny, sizeof(tiny)) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4_classes),
		cmocka_unit_test(test_ipv6_classes),
		cmocka_unit_test(test_reasons_are_distinct),
		cmocka_unit_test(test_check_denies_host_addresses),
		cmocka_unit_test(test_gateway_ruleset),
	};

	netplan_init(&np, true);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
