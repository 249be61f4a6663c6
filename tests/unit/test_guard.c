/* Unit tests: policy/guard and sandbox/netplan — which destinations the relay refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <libmnl/libmnl.h>
#include <libnftnl/rule.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include "nft/gateway.h"
#include "policy/guard.h"
#include "backend/netplan.h"

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

/* Parse the batch back with libnftnl and render each rule: the bytecode nft itself would produce. */
static int batch_rules(const void *buf, int len, char rules[][1024], int max)
{
	int n = 0;

	for (const struct nlmsghdr *h = buf; mnl_nlmsg_ok(h, len); h = mnl_nlmsg_next(h, &len)) {
		if ((h->nlmsg_type & 0xff) != NFT_MSG_NEWRULE || (h->nlmsg_type >> 8) != NFNL_SUBSYS_NFTABLES)
			continue;
		struct nftnl_rule *r = nftnl_rule_alloc();

		assert_non_null(r);
		assert_int_equal(nftnl_rule_nlmsg_parse(h, r), 0);
		assert_true(n < max);
		nftnl_rule_snprintf(rules[n++], 1024, r, NFTNL_OUTPUT_DEFAULT, 0);
		nftnl_rule_free(r);
	}
	return n;
}

static void test_gateway_ruleset(void **state)
{
	const struct gateway_rules g = { .ifname = "gw0", .tcp_port = 15001, .udp_port = 15002 };
	static char buf[32768], rules[16][1024];
	char tiny[256];
	uint32_t last = 0;
	int len, n;

	(void)state;
	len = gateway_rules_batch(&g, buf, sizeof(buf), 100, &last);
	assert_true(len > 0);
	n = batch_rules(buf, len, rules, 16);
	assert_int_equal(n, 10);
	/* 100: batch begin, 101: table, 102: chain, 103..112: rules, then batch end */
	assert_int_equal(last, 112);
	assert_non_null(strstr(rules[0], "[ meta load iif => reg 1 ]"));
	assert_non_null(strstr(rules[0], "[ cmp eq reg 1 0x00000001 ]"));
	assert_non_null(strstr(rules[0], "accept"));
	assert_non_null(strstr(rules[1], "[ meta load iifname => reg 1 ]"));
	assert_non_null(strstr(rules[1], "[ cmp neq reg 1 0x00307767 0x00000000 0x00000000 0x00000000 ]"));
	assert_non_null(strstr(rules[1], "drop"));
	assert_non_null(strstr(rules[2], "[ payload load 1b @ transport header + 0 => reg 1 ]"));
	assert_non_null(strstr(rules[2], "[ cmp eq reg 1 0x00000087 ]"));   /* neighbour solicitation */
	assert_non_null(strstr(rules[3], "[ cmp eq reg 1 0x00000088 ]"));   /* neighbour advertisement */
	assert_non_null(strstr(rules[4], "[ cmp eq reg 1 0x00000085 ]"));   /* router solicitation */
	/* TCP over IPv4: nfproto 2, l4proto 6, port 15001 (0x3a99 in network order) */
	assert_non_null(strstr(rules[5], "[ cmp eq reg 1 0x00000002 ]"));
	assert_non_null(strstr(rules[5], "[ cmp eq reg 1 0x00000006 ]"));
	assert_non_null(strstr(rules[5], "[ immediate reg 1 0x0000993a ]"));
	assert_non_null(strstr(rules[5], "[ tproxy ip port reg 1 ]"));
	assert_non_null(strstr(rules[5], "[ meta set mark with reg 1 ]"));
	assert_non_null(strstr(rules[6], "[ tproxy ip6 port reg 1 ]"));
	assert_non_null(strstr(rules[7], "[ cmp eq reg 1 0x00000011 ]"));   /* UDP */
	assert_non_null(strstr(rules[7], "[ immediate reg 1 0x00009a3a ]")); /* 15002 */
	assert_non_null(strstr(rules[8], "[ tproxy ip6 port reg 1 ]"));
	assert_non_null(strstr(rules[9], "[ counter pkts 0 bytes 0 ]"));
	assert_non_null(strstr(rules[9], "drop"));
	/* too small a buffer is refused, not overrun */
	assert_int_equal(gateway_rules_batch(&g, tiny, sizeof(tiny), 1, &last), -ENOSPC);
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
