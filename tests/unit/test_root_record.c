/* Unit tests: root/record — what a --root state record may ask the next run to undo, as root. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "root/internal.h"
#include "root/record.h"

static enum root_rec_kind parse(const char *text, struct root_rec_line *rl)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s", text);
	return root_rec_parse(buf, rl);
}

/* Lines as --root writes them (copied from a live record) are all accepted. */
static void test_own_lines_are_accepted(void **state)
{
	struct root_rec_line rl;

	(void)state;
	assert_int_equal(parse("/proc/sys/net/ipv4/conf/eth0/forwarding 0", &rl), ROOT_REC_SYSCTL);
	assert_string_equal(rl.path, "/proc/sys/net/ipv4/conf/eth0/forwarding");
	assert_string_equal(rl.value, "0");
	assert_int_equal(parse("/proc/sys/net/ipv4/conf/eth0.100/forwarding 1", &rl), ROOT_REC_SYSCTL);
	assert_int_equal(parse("table 1667629057", &rl), ROOT_REC_TABLE);
	assert_int_equal(rl.table, ROOT_TABLE_BASE + 1);
	assert_int_equal(parse("rule 4 1001 1667629057 10.241.0.6", &rl), ROOT_REC_RULE);
	assert_int_equal(rl.family, AF_INET);
	assert_int_equal(rl.prio, 1001);
	assert_int_equal(parse("rule 6 1001 1667629057 fdcf:f10e:7000:1::2", &rl), ROOT_REC_RULE);
	assert_int_equal(rl.family, AF_INET6);
	assert_int_equal(parse("# childflow --root, pid 5020, netns 4:4026532185", &rl), ROOT_REC_NONE);
	assert_int_equal(parse("netns 4 4026532185 18446744073709551615", &rl), ROOT_REC_NETNS);
	assert_true(rl.netns.dev == 4 && rl.netns.ino == 4026532185u && rl.netns.cookie == UINT64_MAX);
	assert_int_equal(parse("netns 4 4026532185 0", &rl), ROOT_REC_NETNS);
}

/* A damaged or planted record names nothing outside --root's own: left alone. */
static void test_foreign_lines_are_refused(void **state)
{
	static const char *const bad[] = {
		"table 254",                                   /* the host's main table */
		"table 0", "table 1667629056x", "table 4294967296", "table ",
		"rule 4 32766 1667629056 10.241.0.2",          /* the main table's rule priority */
		"rule 4 1000 254 10.241.0.2", "rule 5 1000 1667629056 10.241.0.2",
		"rule 4 1000 1667629056 not-an-address", "rule 6 1000 1667629056 10.241.0.2",
		"/etc/shadow x", "/proc/sys/kernel/core_pattern |/tmp/x",
		"/proc/sys/net/../kernel/core_pattern |/tmp/x", "/proc/sys/net/./ipv4/ip_forward 1",
		"/proc/sys/net//ipv4/ip_forward 1", "/proc/sys/net/ipv4/ip_forward ",
		"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/conf/a\tb/forwarding 1",
		"netns 4 4026532185", "netns 4 4026532185 18446744073709551616",   /* 2^64 */
		"netns 4 4026532185 123456789012345678901", "netns 4 4026532185 1 ", "netns 4  4026532185 1",
		"netns 4:4026532185 1", "netns -4 4026532185 1", "netns 4 4026532185 0x10", "netns ",
	};
	struct root_rec_line rl;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &rl) != ROOT_REC_NONE)
			fail_msg("accepted: \"%s\"", bad[i]);
	}
}

static void test_value_and_netns(void **state)
{
	const char *rec = "# childflow --root, pid 1, netns 4:99\nnetns 4 99 7\n/proc/sys/net/ipv4/ip_forward 0\n";
	struct root_netns id;
	char v[2];

	(void)state;
	assert_true(root_rec_value(rec, "/proc/sys/net/ipv4/ip_forward", v, sizeof(v)));
	assert_string_equal(v, "0");
	assert_false(root_rec_value(rec, "/proc/sys/net/ipv4", v, sizeof(v)));
	assert_true(root_rec_netns(rec, &id));
	assert_true(id.dev == 4 && id.ino == 99 && id.cookie == 7);
	/* a record of an older version: its first line, without a cookie */
	assert_true(root_rec_netns("# childflow --root, pid 1, netns 4:99\n/proc/sys/net/ipv4/ip_forward 0\n", &id));
	assert_true(id.dev == 4 && id.ino == 99 && id.cookie == 0);
	/* a "netns" line alone (a first line that names none) */
	assert_true(root_rec_netns("# x\nnetns 4 99 7", &id) && id.cookie == 7);
	/* names none, or more than one: nothing */
	assert_false(root_rec_netns("/x netns 4:99\n", &id));
	assert_false(root_rec_netns("", &id));
	assert_false(root_rec_netns("# childflow --root, pid 1, netns 4:99x\n", &id));
	assert_false(root_rec_netns("# childflow --root, pid 1, netns 4:99\nnetns 4 98 7\n", &id));
	assert_false(root_rec_netns("# childflow --root, pid 1, netns 4:99\nnetns 4 99 7\nnetns 4 99 8\n", &id));
	assert_false(root_rec_netns("# childflow --root, pid 1, netns 4:99\nnetns 4 99 7\nnetns 4 99 7\n", &id));
	assert_false(root_rec_netns("# childflow --root, pid 1, netns 4:99\nnetns 4 99 x\n", &id));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_own_lines_are_accepted),
		cmocka_unit_test(test_foreign_lines_are_refused),
		cmocka_unit_test(test_value_and_netns),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
