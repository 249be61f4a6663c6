/* Unit tests: dns/resolvconf (the host's resolver configuration, the child's file) and dns/names. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "backend/netplan.h"
#include "dns/names.h"
#include "dns/resolvconf.h"

static void parse(const char *text, struct resolv_conf *rc)
{
	resolvconf_parse(text, strlen(text), rc);
}

static const char *ns_str(const struct resolv_conf *rc, int i, char *buf)
{
	const struct sockaddr_storage *s = &rc->ns[i];

	if (s->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)s)->sin_addr, buf, INET6_ADDRSTRLEN);
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)s)->sin6_addr, buf, INET6_ADDRSTRLEN);
	return buf;
}

static void test_nameservers_in_order(void **state)
{
	struct resolv_conf rc;
	char b[INET6_ADDRSTRLEN];

	(void)state;
	parse("# comment\n; other comment\nnameserver 127.0.0.53\nnameserver\t2001:db8::53\n"
	      "nameserver bogus\nnameserver 198.51.100.53 trailing\nnameserver 203.0.113.53\n", &rc);
	assert_int_equal(rc.n_ns, 3);            /* glibc's MAXNS: the fourth good one is ignored */
	assert_string_equal(ns_str(&rc, 0, b), "127.0.0.53");
	assert_string_equal(ns_str(&rc, 1, b), "2001:db8::53");
	assert_string_equal(ns_str(&rc, 2, b), "198.51.100.53");
	assert_int_equal(ntohs(((struct sockaddr_in *)&rc.ns[0])->sin_port), 53);
	assert_int_equal(rc.timeout_s, 5);
	assert_int_equal(rc.attempts, 2);
	assert_false(rc.rotate);
	assert_string_equal(rc.lines, "");
}

static void test_scoped_v6(void **state)
{
	struct resolv_conf rc;

	(void)state;
	parse("nameserver fe80::1%1\n", &rc);
	assert_int_equal(rc.n_ns, 1);
	assert_int_equal(rc.ns[0].ss_family, AF_INET6);
	assert_int_equal(((struct sockaddr_in6 *)&rc.ns[0])->sin6_scope_id, 1);
	parse("nameserver fe80::1%lo\n", &rc);
	assert_int_equal(rc.n_ns, 1);
	assert_int_equal(((struct sockaddr_in6 *)&rc.ns[0])->sin6_scope_id, 1);   /* lo is always 1 */
}

static void test_kept_lines_and_options(void **state)
{
	struct resolv_conf rc;

	(void)state;
	parse("domain first.example\nnameserver 127.0.0.1\noptions ndots:2 timeout:3 edns0 trust-ad\r\n"
	      "search a.example b.example   \noptions attempts:9 rotate\nsortlist 10.0.0.0/8\n"
	      "optionsbogus x\n", &rc);
	/* the last of search/domain wins (glibc), options lines are kept in order */
	assert_string_equal(rc.lines, "options ndots:2 timeout:3 edns0 trust-ad\n"
				      "search a.example b.example\n"
				      "options attempts:9 rotate\n");
	assert_int_equal(rc.timeout_s, 3);
	assert_int_equal(rc.attempts, 5);        /* capped like glibc's RES_MAXRETRY */
	assert_true(rc.rotate);
	parse("options timeout:99 attempts:0\n", &rc);
	assert_int_equal(rc.timeout_s, 30);
	assert_int_equal(rc.attempts, 1);
}

static void test_hostile_lines_skipped(void **state)
{
	struct resolv_conf rc;
	char big[4096];

	(void)state;
	memset(big, 'a', sizeof(big));
	memcpy(big, "search ", 7);
	big[sizeof(big) - 1] = '\0';
	parse(big, &rc);
	assert_string_equal(rc.lines, "");
	parse("search evil\x1b[2J.example\nnameserver 127.0.0.1", &rc);   /* no final newline */
	assert_string_equal(rc.lines, "");
	assert_int_equal(rc.n_ns, 1);
	/* embedded NUL bytes do not end the parse early or leak into kept lines */
	static const char nul[] = "search a\0b\nnameserver 127.0.0.2\n";
	resolvconf_parse(nul, sizeof(nul) - 1, &rc);
	assert_int_equal(rc.n_ns, 1);
	assert_string_equal(rc.lines, "");
	/* more kept lines than fit: the rest are dropped, the buffer stays terminated */
	char *many = malloc(64 * 1000);
	size_t o = 0;
	for (int i = 0; i < 1000; i++)
		o += (size_t)sprintf(many + o, "options ndots:%d\n", i % 10);
	parse(many, &rc);
	free(many);
	assert_true(strlen(rc.lines) < RESOLV_LINES_MAX);
	assert_int_equal(rc.lines[strlen(rc.lines) - 1], '\n');
}

static void test_child_text(void **state)
{
	struct resolv_conf rc;
	struct netplan np;
	char buf[4096];
	int n;

	(void)state;
	parse("nameserver 127.0.0.53\nsearch corp.example\noptions edns0 trust-ad\n", &rc);
	netplan_init(&np, true);
	n = resolvconf_child_text(&rc, &np, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(buf));
	assert_non_null(strstr(buf, "search corp.example\noptions edns0 trust-ad\nnameserver 10.240.255.1\n"
				    "nameserver fd"));
	assert_null(strstr(buf, "127.0.0.53"));
	netplan_init(&np, false);
	n = resolvconf_child_text(&rc, &np, buf, sizeof(buf));
	assert_non_null(strstr(buf, "nameserver 10.240.255.1\n"));
	assert_int_equal(buf[n - 1], '\n');
	assert_null(strstr(buf, "nameserver fd"));
	assert_int_equal(resolvconf_child_text(&rc, &np, buf, 20), -ENOSPC);
}

static void test_load(void **state)
{
	struct resolv_conf rc;
	char path[] = "/tmp/cf-resolv-XXXXXX";
	int fd;

	(void)state;
	assert_int_equal(resolvconf_load("/nonexistent/resolv.conf", &rc), -ENOENT);
	assert_int_equal(rc.n_ns, 0);
	assert_int_equal(rc.timeout_s, 5);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "nameserver 198.51.100.53\n", 25), 25);
	close(fd);
	assert_int_equal(resolvconf_load(path, &rc), 0);
	unlink(path);
	assert_int_equal(rc.n_ns, 1);
}

/* resolvconf_replace(): longer then shorter text, the same inode, nothing of the old text left. */
static void test_replace(void **state)
{
	char buf[128];
	struct stat a, b;
	int fd = memfd_create("cf-resolv", MFD_CLOEXEC);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(resolvconf_replace(fd, "search a.example b.example\nnameserver 10.0.0.1\n", 47), 0);
	assert_int_equal(pread(fd, buf, sizeof(buf), 0), 47);
	assert_int_equal(resolvconf_replace(fd, "nameserver 10.0.0.1\n", 21), 0);
	assert_int_equal(pread(fd, buf, sizeof(buf), 0), 21);
	assert_memory_equal(buf, "nameserver 10.0.0.1\n", 21);
	assert_int_equal(fstat(fd, &b), 0);
	assert_true(a.st_ino == b.st_ino && b.st_size == 21);
	close(fd);
	assert_int_equal(resolvconf_replace(-1, "x", 1), -EBADF);
}

static struct sockaddr_storage a4(const char *s)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *a = (struct sockaddr_in *)&ss;

	a->sin_family = AF_INET;
	a->sin_port = htons(443);
	assert_int_equal(inet_pton(AF_INET, s, &a->sin_addr), 1);
	return ss;
}

static void test_names_basic(void **state)
{
	struct dns_names *n = dns_names_new(100);
	struct sockaddr_storage x = a4("198.51.100.10"), y = a4("198.51.100.11");
	struct sockaddr_in6 v6 = { .sin6_family = AF_INET6 };
	const char *out[4];

	(void)state;
	assert_non_null(n);
	inet_pton(AF_INET6, "2001:db8::10", &v6.sin6_addr);
	dns_names_add(n, (struct sockaddr *)&x, "WWW.Example.", 300, 1000);
	dns_names_add(n, (struct sockaddr *)&x, "cdn.example", 300, 2000);
	dns_names_add(n, (struct sockaddr *)&v6, "www.example", 300, 2000);
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&x, 3000, out, 4), 2);
	assert_string_equal(out[0], "cdn.example");      /* most recently refreshed first */
	assert_string_equal(out[1], "www.example");      /* lowercased, no trailing dot */
	dns_names_add(n, (struct sockaddr *)&x, "www.example", 300, 4000);
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&x, 4000, out, 1), 2);
	assert_string_equal(out[0], "www.example");
	assert_int_equal(dns_names_count(n), 3);         /* a refresh is not a new pair */
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&y, 4000, out, 4), 0);
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&v6, 4000, out, 4), 1);
	/* the IPv4 address with the same leading bytes as nothing else is not confused with IPv6 */
	dns_names_add(n, (struct sockaddr *)&x, "", 300, 4000);
	assert_int_equal(dns_names_count(n), 3);
	dns_names_free(n);
}

static void test_names_ttl(void **state)
{
	struct dns_names *n = dns_names_new(10);
	struct sockaddr_storage x = a4("203.0.113.7");
	const char *out[2];

	(void)state;
	dns_names_add(n, (struct sockaddr *)&x, "short.example", 1, 0);        /* raised to the minimum */
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&x, (DNS_NAMES_MIN_TTL_S - 1) * 1000ull, out, 2), 1);
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&x, DNS_NAMES_MIN_TTL_S * 1000ull, out, 2), 0);
	dns_names_add(n, (struct sockaddr *)&x, "long.example", 0xffffffffu, 0);   /* capped */
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&x, (DNS_NAMES_MAX_TTL_S + 1) * 1000ull, out, 2), 0);
	/* expired pairs are reclaimed by the next add */
	dns_names_add(n, (struct sockaddr *)&x, "later.example", 300, (DNS_NAMES_MAX_TTL_S + 1) * 1000ull);
	assert_int_equal(dns_names_count(n), 1);
	dns_names_free(n);
}

/* The bound holds: a flood of distinct answers never keeps more than max pairs, and the newest stay. */
static void test_names_bound(void **state)
{
	const size_t max = 1000;
	struct dns_names *n = dns_names_new(max);
	char name[64];
	const char *out[8];

	(void)state;
	for (unsigned int i = 0; i < 50000; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0xC6120000u + i) };

		snprintf(name, sizeof(name), "host%u.example", i);
		dns_names_add(n, (struct sockaddr *)&a, name, 3600, 1000 + i);
		assert_true(dns_names_count(n) <= max);
	}
	assert_int_equal(dns_names_count(n), max);
	struct sockaddr_in newest = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0xC6120000u + 49999) };
	struct sockaddr_in oldest = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0xC6120000u) };
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&newest, 60000, out, 8), 1);
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&oldest, 60000, out, 8), 0);
	/* one address with many names is bounded too, and the lookup counts past @max */
	struct sockaddr_storage x = a4("198.51.100.99");
	for (unsigned int i = 0; i < 3000; i++) {
		snprintf(name, sizeof(name), "alias%u.example", i);
		dns_names_add(n, (struct sockaddr *)&x, name, 3600, 100000);
	}
	assert_int_equal(dns_names_count(n), max);
	assert_int_equal(dns_names_lookup(n, (struct sockaddr *)&x, 100000, out, 8), max);
	dns_names_free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nameservers_in_order),
		cmocka_unit_test(test_scoped_v6),
		cmocka_unit_test(test_kept_lines_and_options),
		cmocka_unit_test(test_hostile_lines_skipped),
		cmocka_unit_test(test_child_text),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_replace),
		cmocka_unit_test(test_names_basic),
		cmocka_unit_test(test_names_ttl),
		cmocka_unit_test(test_names_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
