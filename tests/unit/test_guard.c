/* Unit tests: policy/guard and sandbox/netplan — which destinations the relay refuses. */
#include <fcntl.h>
#include <sched.h>
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
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netlink/nl.h"
#include "nft/gateway.h"
#include "policy/guard.h"
#include "backend/netplan.h"
#include "policy/localpeer.h"

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
	assert_int_equal(v4("169.254.169.254", 80), GUARD_DENY_LINKLOCAL4);  /* cloud metadata */
	assert_int_equal(v4("169.254.0.1", 53), GUARD_DENY_LINKLOCAL4);
	assert_int_equal(v4("169.253.255.255", 80), GUARD_ALLOW);
	assert_int_equal(v4("169.255.0.1", 80), GUARD_ALLOW);
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
	/* NAT64 and 6to4 embed an IPv4 address: refused when that one would be */
	assert_int_equal(v6("64:ff9b::7f00:1", 22), GUARD_DENY_MAPPED);            /* 127.0.0.1 */
	assert_int_equal(v6("64:ff9b::a9fe:a9fe", 80), GUARD_DENY_MAPPED);         /* 169.254.169.254 */
	assert_int_equal(v6("64:ff9b::af0:ff01", 22), GUARD_DENY_MAPPED);          /* 10.240.255.1 */
	assert_int_equal(v6("64:ff9b::c633:640a", 80), GUARD_ALLOW);               /* 198.51.100.10 */
	assert_int_equal(v6("2002:7f00:1::1", 22), GUARD_DENY_MAPPED);
	assert_int_equal(v6("2002:c633:640a::1", 80), GUARD_ALLOW);
}

/* What each kind of route means (the kernel's answer to RTM_GETROUTE). */
static void test_route_verdicts(void **state)
{
	(void)state;
	assert_int_equal(guard_route_verdict(RTN_UNICAST, 2), GUARD_ALLOW);
	assert_int_equal(guard_route_verdict(RTN_UNICAST, 1), GUARD_DENY_LOCAL_ROUTE);   /* out of lo */
	assert_int_equal(guard_route_verdict(RTN_LOCAL, 1), GUARD_DENY_LOCAL_ROUTE);
	assert_int_equal(guard_route_verdict(RTN_ANYCAST, 1), GUARD_DENY_ANYCAST);
	assert_int_equal(guard_route_verdict(RTN_BROADCAST, 2), GUARD_DENY_BROADCAST);
	assert_int_equal(guard_route_verdict(RTN_MULTICAST, 2), GUARD_DENY_MULTICAST);
	assert_int_equal(guard_route_verdict(RTN_UNREACHABLE, 0), GUARD_ALLOW);   /* connect fails itself */
	assert_int_equal(guard_route_verdict(RTN_BLACKHOLE, 0), GUARD_ALLOW);
}

static void test_reasons_are_distinct(void **state)
{
	(void)state;
	for (int a = GUARD_ALLOW; a < GUARD_NVERDICTS; a++)
		for (int b = a + 1; b < GUARD_NVERDICTS; b++)
			assert_string_not_equal(guard_reason(a), guard_reason(b));
	for (int a = GUARD_ALLOW; a < GUARD_NVERDICTS; a++)
		assert_string_not_equal(guard_reason(a), "denied");   /* every verdict has its own words */
	assert_string_equal(guard_reason(GUARD_DENY_HOST_LOCAL), "an address of the host itself");
	assert_string_equal(guard_reason(GUARD_DENY_UNKNOWN), "cannot tell whether the destination is local");
}

/* guard_check() refuses the host's own (non-loopback) addresses: their routes are RTN_LOCAL, and the
 * getifaddrs() list is the second opinion (for an address whose local route is missing). */
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
		enum guard_verdict v = guard_check(&g, (struct sockaddr *)&ss);

		assert_true(v == GUARD_DENY_LOCAL_ROUTE || v == GUARD_DENY_HOST_LOCAL);
		local++;
	}
	freeifaddrs(ifa);
	guard_free(&g);
	if (!local)
		skip();   /* a host with only loopback addresses has nothing more to check */
}

/* ---------- the kernel's answers: each test below runs in a private network namespace ---------- */

static int orig_ns = -1;
static bool private_ns;

static int netns_setup(void **state)
{
	(void)state;
	private_ns = false;
	orig_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (orig_ns >= 0 && unshare(CLONE_NEWNET) == 0)
		private_ns = true;
	return 0;
}

static int netns_teardown(void **state)
{
	(void)state;
	if (private_ns && setns(orig_ns, CLONE_NEWNET) < 0)
		return -1;
	if (orig_ns >= 0)
		close(orig_ns);
	orig_ns = -1;
	private_ns = false;
	return 0;
}

/* An rtnetlink socket in the private namespace, with lo up; skips without privilege. */
static struct nl *private_nl(void)
{
	struct nl *nl;

	if (!private_ns)
		skip();   /* unshare(CLONE_NEWNET) needs root */
	nl = nl_open();
	assert_non_null(nl);
	assert_int_equal(nl_link_up(nl, 1, 0), 0);
	return nl;
}

static struct sockaddr_storage addr_of(const char *a, int port)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(a, ':')) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

		s->sin6_family = AF_INET6;
		s->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, a, &s->sin6_addr), 1);
	} else {
		struct sockaddr_in *s = (struct sockaddr_in *)&ss;

		s->sin_family = AF_INET;
		s->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, a, &s->sin_addr), 1);
	}
	return ss;
}

static enum guard_verdict check(struct guard *g, const char *a)
{
	struct sockaddr_storage ss = addr_of(a, 80);

	return guard_check(g, (struct sockaddr *)&ss);
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* F1/D5: a `local` route with no interface address behind it; the cache, and its invalidation. */
static void test_local_route_and_cache(void **state)
{
	struct nl *nl = private_nl();
	struct guard g;

	(void)state;
	assert_int_equal(guard_init(&g, &np), 0);
	assert_int_equal(check(&g, "198.51.100.10"), GUARD_ALLOW);   /* no route at all: not local */
	assert_int_equal(g.stats.route_lookups, 1);
	assert_int_equal(check(&g, "198.51.100.10"), GUARD_ALLOW);
	assert_int_equal(g.stats.route_lookups, 1);                  /* answered from the cache */
	assert_int_equal(g.stats.cache_hits, 1);
	assert_int_equal(check(&g, "2001:db8:100::10"), GUARD_ALLOW);

	/* `ip route add local default dev lo` (AnyIP).  No guard_on_notify() here: guard_check() reads
	 * the pending notification itself, so the cached "allow" cannot outlive the change. */
	assert_int_equal(nl_route_add(nl, AF_INET, RT_TABLE_MAIN, RTN_LOCAL, 1, NULL), 0);
	assert_int_equal(check(&g, "198.51.100.10"), GUARD_DENY_LOCAL_ROUTE);
	assert_true(g.stats.invalidations >= 1);
	assert_int_equal(nl_route_add(nl, AF_INET6, RT_TABLE_MAIN, RTN_LOCAL, 1, NULL), 0);
	assert_int_equal(check(&g, "2001:db8:100::10"), GUARD_DENY_LOCAL_ROUTE);
	assert_int_equal(check(&g, "2001:db8:100::10"), GUARD_DENY_LOCAL_ROUTE);
	assert_int_equal(g.stats.route_lookups, 4);
	/* more destinations than slots: the cache stays bounded and still answers right */
	for (int i = 0; i < 2 * GUARD_CACHE_SLOTS; i++) {
		char a[32];

		snprintf(a, sizeof(a), "198.51.%d.%d", 100 + i / 250, 1 + i % 250);
		assert_int_equal(check(&g, a), GUARD_DENY_LOCAL_ROUTE);
	}
	guard_free(&g);
	nl_close(nl);
}

/* Broadcast and anycast addresses of a host subnet, and its own addresses, by route type. */
static void test_broadcast_anycast(void **state)
{
	struct nl *nl = private_nl();
	struct in_addr a4;
	struct in6_addr a6;
	struct guard g;
	int i0, i1;

	(void)state;
	assert_int_equal(nl_veth_create(nl, "gt0", "gt1", getpid(), 0, NULL), 0);
	i0 = (int)if_nametoindex("gt0");
	i1 = (int)if_nametoindex("gt1");
	assert_true(i0 > 0 && i1 > 0);
	write_file("/proc/sys/net/ipv6/conf/gt0/forwarding", "1");   /* joins the subnet-router anycast */
	assert_int_equal(nl_link_up(nl, i1, 0), 0);
	assert_int_equal(nl_link_up(nl, i0, 0), 0);
	inet_pton(AF_INET, "10.99.0.2", &a4);
	inet_pton(AF_INET6, "2001:db8:99::2", &a6);
	assert_int_equal(nl_addr_add(nl, i0, AF_INET, &a4, 24), 0);
	assert_int_equal(nl_addr_add(nl, i0, AF_INET6, &a6, 64), 0);
	assert_int_equal(guard_init(&g, &np), 0);
	assert_int_equal(check(&g, "10.99.0.255"), GUARD_DENY_BROADCAST);
	assert_int_equal(check(&g, "10.99.0.2"), GUARD_DENY_LOCAL_ROUTE);   /* before the address list */
	assert_int_equal(check(&g, "10.99.0.3"), GUARD_ALLOW);               /* a neighbour */
	/* IPv6 addresses become usable from a work queue: wait for them a little */
	for (int i = 0; i < 100 && check(&g, "2001:db8:99::") != GUARD_DENY_ANYCAST; i++)
		usleep(20000);
	assert_int_equal(check(&g, "2001:db8:99::"), GUARD_DENY_ANYCAST);
	assert_int_equal(check(&g, "2001:db8:99::2"), GUARD_DENY_LOCAL_ROUTE);
	assert_int_equal(check(&g, "2001:db8:99::3"), GUARD_ALLOW);
	guard_free(&g);
	nl_close(nl);
}

/* D11: when the guard cannot tell (EMFILE at the fd cap), it refuses and says so. */
static void test_failure_is_refusal_with_true_reason(void **state)
{
	struct nl *nl = private_nl();
	struct rlimit old, low;
	struct guard g;
	enum guard_verdict v;
	int lowest;

	(void)state;
	assert_int_equal(guard_init(&g, &np), 0);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	lowest = dup(0);
	assert_true(lowest >= 0);
	close(lowest);
	low = old;
	low.rlim_cur = (rlim_t)lowest;   /* no new fd: getifaddrs() fails with EMFILE */
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	v = check(&g, "198.51.100.10");
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(v, GUARD_DENY_UNKNOWN);
	assert_string_equal(guard_reason(v), "cannot tell whether the destination is local");
	assert_int_equal(check(&g, "198.51.100.10"), GUARD_ALLOW);   /* and it recovers */
	guard_free(&g);
	nl_close(nl);
}

static int tcp_connect(int family, const char *a, int port)
{
	struct sockaddr_storage ss = addr_of(a, port);
	int c = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(c >= 0);
	assert_int_equal(connect(c, (struct sockaddr *)&ss,
				 family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)), 0);
	return c;
}

/* F3: the other end of a connection is found when it is a socket of this namespace. */
/* A dual-stack listener on a free port (written to @any): an IPv4 client's peer is a v4-mapped
 * IPv6 socket. */
static int dual_stack_listener(struct sockaddr_in6 *any)
{
	socklen_t len = sizeof(*any);
	int zero = 0, l = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(l >= 0);
	assert_int_equal(setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)), 0);
	assert_int_equal(bind(l, (struct sockaddr *)any, sizeof(*any)), 0);
	assert_int_equal(listen(l, 8), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)any, &len), 0);
	return l;
}

static void test_local_peer(void **state)
{
	struct nl *nl = private_nl();
	struct sockaddr_in6 any = { .sin6_family = AF_INET6 };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	int diag, l, c4, c6, s;
	struct guard g;

	(void)state;
	diag = localpeer_open();
	assert_true(diag >= 0);
	/* a dual-stack listener: an IPv4 client's peer is a v4-mapped IPv6 socket */
	l = dual_stack_listener(&any);
	c4 = tcp_connect(AF_INET, "127.0.0.1", ntohs(any.sin6_port));
	c6 = tcp_connect(AF_INET6, "::1", ntohs(any.sin6_port));
	assert_int_equal(localpeer_check(diag, c4), 1);   /* not accepted yet: in the accept queue */
	assert_int_equal(localpeer_check(diag, c6), 1);
	assert_int_equal(guard_init(&g, &np), 0);
	assert_int_equal(guard_check_connected(&g, c6), GUARD_DENY_LOOPBACK);
	guard_free(&g);
	/* the peer resets and is gone: nothing mirrors c4 any more */
	s = accept(l, NULL, NULL);
	assert_true(s >= 0);
	assert_int_equal(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(s);
	s = accept(l, NULL, NULL);   /* c6's */
	assert_true(s >= 0);
	assert_int_equal(localpeer_check(diag, c4), 0);
	assert_int_equal(localpeer_check(diag, c6), 1);
	close(s);
	close(c4);
	close(c6);
	close(l);
	close(diag);
	nl_close(nl);
}

/* One walk lists every socket connected to one of our addresses: the batch form sees them all. */
static void test_local_peer_scan(void **state)
{
	struct nl *nl = private_nl();
	struct sockaddr_in6 any = { .sin6_family = AF_INET6 };
	struct sockaddr_storage lo4 = addr_of("127.0.0.1", 0);
	uint16_t ports[16], want[3];
	int diag, l, c[3], n;

	(void)state;
	diag = localpeer_open();
	assert_true(diag >= 0);
	l = dual_stack_listener(&any);
	for (int i = 0; i < 3; i++) {
		struct sockaddr_in me;
		socklen_t ml = sizeof(me);

		c[i] = tcp_connect(AF_INET, "127.0.0.1", ntohs(any.sin6_port));
		assert_int_equal(getsockname(c[i], (struct sockaddr *)&me, &ml), 0);
		want[i] = me.sin_port;
	}
	n = localpeer_scan(diag, &lo4, ports, 16);
	/* the three queued peers, plus the clients themselves (their remote is the listener's port
	 * on 127.0.0.1 too) */
	assert_true(n >= 3);
	for (int i = 0; i < 3; i++) {
		bool seen = false;

		for (int k = 0; k < n && k < 16; k++)
			seen |= ports[k] == want[i];
		assert_true(seen);
	}
	assert_int_equal(localpeer_scan(diag, &lo4, ports, 1), n);   /* counted beyond max */
	for (int i = 0; i < 3; i++)
		close(c[i]);
	close(l);
	close(diag);
	nl_close(nl);
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
	const struct gateway_rules g = { .ifname = "gw0", .tcp_port = 15001, .udp_port = 15002, .dns_port = 53 };
	static char buf[32768], rules[20][1024];
	char tiny[256];
	uint32_t last = 0;
	int len, n;

	(void)state;
	len = gateway_rules_batch(&g, buf, sizeof(buf), 100, &last);
	assert_true(len > 0);
	n = batch_rules(buf, len, rules, 20);
	assert_int_equal(n, 18);
	/* 100: batch begin, 101: table, 102: chain, 103..120: rules, then batch end */
	assert_int_equal(last, 120);
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
	/* the SYN gate's answers, before TPROXY could take the SYN: marks 0x12..0x15 */
	assert_non_null(strstr(rules[5], "[ meta load mark => reg 1 ]"));
	assert_non_null(strstr(rules[5], "[ cmp eq reg 1 0x00000012 ]"));
	assert_non_null(strstr(rules[5], "[ reject type 1 code 0 ]"));     /* tcp reset */
	assert_non_null(strstr(rules[6], "[ cmp eq reg 1 0x00000013 ]"));
	assert_non_null(strstr(rules[6], "[ reject type 2 code 2 ]"));     /* icmpx host unreachable */
	assert_non_null(strstr(rules[7], "[ reject type 2 code 0 ]"));     /* icmpx no route */
	assert_non_null(strstr(rules[8], "[ cmp eq reg 1 0x00000015 ]"));
	assert_non_null(strstr(rules[8], "[ reject type 2 code 3 ]"));     /* icmpx admin prohibited */
	/* DNS over UDP before the other UDP: l4proto 17, dport 53 (0x3500 in network order), to port 53 */
	assert_non_null(strstr(rules[9], "[ cmp eq reg 1 0x00000011 ]"));
	assert_non_null(strstr(rules[9], "[ payload load 2b @ transport header + 2 => reg 1 ]"));
	assert_non_null(strstr(rules[9], "[ cmp eq reg 1 0x00003500 ]"));
	assert_non_null(strstr(rules[9], "[ immediate reg 1 0x00003500 ]"));
	assert_non_null(strstr(rules[9], "[ tproxy ip port reg 1 ]"));
	assert_non_null(strstr(rules[9], "[ meta set mark with reg 1 ]"));
	assert_non_null(strstr(rules[10], "[ payload load 2b @ transport header + 2 => reg 1 ]"));
	assert_non_null(strstr(rules[10], "[ tproxy ip6 port reg 1 ]"));
	/* TCP over IPv4: nfproto 2, l4proto 6, port 15001 (0x3a99 in network order) */
	assert_non_null(strstr(rules[11], "[ cmp eq reg 1 0x00000002 ]"));
	assert_non_null(strstr(rules[11], "[ cmp eq reg 1 0x00000006 ]"));
	assert_non_null(strstr(rules[11], "[ immediate reg 1 0x0000993a ]"));
	assert_non_null(strstr(rules[11], "[ tproxy ip port reg 1 ]"));
	assert_non_null(strstr(rules[11], "[ meta set mark with reg 1 ]"));
	assert_non_null(strstr(rules[12], "[ tproxy ip6 port reg 1 ]"));
	assert_non_null(strstr(rules[13], "[ cmp eq reg 1 0x00000011 ]"));   /* UDP */
	assert_non_null(strstr(rules[13], "[ immediate reg 1 0x00009a3a ]")); /* 15002 */
	assert_non_null(strstr(rules[14], "[ tproxy ip6 port reg 1 ]"));
	assert_non_null(strstr(rules[15], "[ cmp eq reg 1 0x00000008 ]"));     /* echo-request */
	assert_non_null(strstr(rules[15], "[ reject type 2 code 3 ]"));        /* icmpx admin-prohibited */
	assert_non_null(strstr(rules[16], "[ cmp eq reg 1 0x00000080 ]"));
	assert_non_null(strstr(rules[17], "[ counter pkts 0 bytes 0 ]"));
	assert_non_null(strstr(rules[17], "drop"));
	/* too small a buffer is refused, not overrun */
	assert_int_equal(gateway_rules_batch(&g, tiny, sizeof(tiny), 1, &last), -ENOSPC);
}

/* With the SYN gate: a second chain, and one rule in it that queues bare SYNs (native or compat). */
static void test_gateway_ruleset_gate(void **state)
{
	struct gateway_rules g = { .ifname = "gw0", .tcp_port = 15001, .udp_port = 15002, .dns_port = 53,
				   .gate = GATEWAY_GATE_NATIVE };
	static char buf[32768], rules[20][1024];
	uint32_t last = 0;
	int len, n;

	(void)state;
	len = gateway_rules_batch(&g, buf, sizeof(buf), 100, &last);
	assert_true(len > 0);
	n = batch_rules(buf, len, rules, 20);
	assert_int_equal(n, 19);
	assert_int_equal(last, 122);   /* two chains, 19 rules; the gate rule is acknowledged */
	assert_non_null(strstr(rules[18], "[ meta load iifname => reg 1 ]"));
	assert_non_null(strstr(rules[18], "[ cmp eq reg 1 0x00307767 0x00000000 0x00000000 0x00000000 ]"));
	assert_non_null(strstr(rules[18], "[ payload load 1b @ transport header + 13 => reg 1 ]"));
	assert_non_null(strstr(rules[18], "[ bitwise reg 1 = ( reg 1 & 0x00000017 ) ^ 0x00000000 ]"));
	assert_non_null(strstr(rules[18], "[ cmp eq reg 1 0x00000002 ]"));
	assert_non_null(strstr(rules[18], "[ meta load mark => reg 1 ]"));
	assert_non_null(strstr(rules[18], "[ queue num 0 ]"));
	assert_null(strstr(rules[18], "bypass"));   /* fail closed */
	g.gate = GATEWAY_GATE_COMPAT;
	len = gateway_rules_batch(&g, buf, sizeof(buf), 100, &last);
	n = batch_rules(buf, len, rules, 20);
	assert_int_equal(n, 19);
	assert_non_null(strstr(rules[18], "[ target name NFQUEUE rev 3 ]"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4_classes),
		cmocka_unit_test(test_ipv6_classes),
		cmocka_unit_test(test_reasons_are_distinct),
		cmocka_unit_test(test_route_verdicts),
		cmocka_unit_test(test_check_denies_host_addresses),
		cmocka_unit_test_setup_teardown(test_local_route_and_cache, netns_setup, netns_teardown),
		cmocka_unit_test_setup_teardown(test_broadcast_anycast, netns_setup, netns_teardown),
		cmocka_unit_test_setup_teardown(test_failure_is_refusal_with_true_reason, netns_setup, netns_teardown),
		cmocka_unit_test_setup_teardown(test_local_peer, netns_setup, netns_teardown),
		cmocka_unit_test_setup_teardown(test_local_peer_scan, netns_setup, netns_teardown),
		cmocka_unit_test(test_gateway_ruleset),
		cmocka_unit_test(test_gateway_ruleset_gate),
	};

	netplan_init(&np, true);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
