/* Unit tests: dns/hosts (the --hosts-file merge, the file checks) and dns/nsswitch (hosts: cleanup). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "dns/hosts.h"
#include "dns/nsswitch.h"

static void expect_merge(const char *over, const char *base, const char *want)
{
	size_t len = 0;
	char *m = hosts_merge(over, strlen(over), base, strlen(base), &len);

	assert_non_null(m);
	assert_string_equal(m, want);
	assert_int_equal(len, strlen(want));
	free(m);
}

static void test_merge_override_wins(void **state)
{
	(void)state;
	expect_merge("10.0.0.5 web.test\n",
		     "127.0.0.1 localhost\n192.0.2.9 web.test www\n198.51.100.7 other.test\n",
		     "10.0.0.5 web.test\n127.0.0.1 localhost\n198.51.100.7 other.test\n");
}

static void test_merge_alias_and_case(void **state)
{
	(void)state;
	/* Any hostname of a host line (alias included) named by the override drops it; case ignored. */
	expect_merge("10.0.0.5 Web.Test alias.test\n",
		     "1.1.1.1 a.test WEB.test\n2.2.2.2 b.test ALIAS.TEST # c\n3.3.3.3 c.test\n",
		     "10.0.0.5 Web.Test alias.test\n3.3.3.3 c.test\n");
}

static void test_merge_keeps_blank_comment_and_nameless(void **state)
{
	(void)state;
	expect_merge("10.0.0.5 web.test # web.test is ours\n",
		     "# web.test comment line\n\n   \t\n192.0.2.1\n192.0.2.2 # web.test\n192.0.2.3 web.test\n",
		     "10.0.0.5 web.test # web.test is ours\n# web.test comment line\n\n   \t\n192.0.2.1\n"
		     "192.0.2.2 # web.test\n");
}

static void test_merge_comment_names_do_not_override(void **state)
{
	(void)state;
	/* Names after a `#` in the override are not hostnames. */
	expect_merge("10.0.0.5 web.test #other.test\n",
		     "1.1.1.1 other.test\n",
		     "10.0.0.5 web.test #other.test\n1.1.1.1 other.test\n");
	/* A `#` glued to a name ends the name there. */
	expect_merge("10.0.0.5 web.test#x\n", "1.1.1.1 web.test\n", "10.0.0.5 web.test#x\n");
}

static void test_merge_newlines(void **state)
{
	(void)state;
	/* A newline is added after an override lacking one, and after a last host line lacking one. */
	expect_merge("10.0.0.5 web.test", "1.1.1.1 other.test", "10.0.0.5 web.test\n1.1.1.1 other.test\n");
	expect_merge("", "1.1.1.1 a\n", "1.1.1.1 a\n");
	expect_merge("1.1.1.1 a\n", "", "1.1.1.1 a\n");
	expect_merge("", "", "");
	/* Tabs and CRs separate fields as blanks do. */
	expect_merge("10.0.0.5\tweb.test\r\n", "1.1.1.1\tweb.test\r\n2.2.2.2 b\r\n",
		     "10.0.0.5\tweb.test\r\n2.2.2.2 b\r\n");
}

static void test_merge_many_names(void **state)
{
	/* 50,000 override names: every host line naming one of them goes, the others stay. */
	size_t cap = 50000 * 32, ol = 0, bl = 0, len = 0;
	char *over = malloc(cap), *base = malloc(cap), *m;

	(void)state;
	assert_non_null(over);
	assert_non_null(base);
	for (int i = 0; i < 50000; i++) {
		ol += (size_t)snprintf(over + ol, cap - ol, "10.%d.%d.1 n%d.test\n", i / 256, i % 256, i);
		bl += (size_t)snprintf(base + bl, cap - bl, "192.0.2.1 %c%d.test\n", i % 2 ? 'N' : 'm', i);
	}
	m = hosts_merge(over, ol, base, bl, &len);
	assert_non_null(m);
	assert_int_equal(len, ol + bl / 2);   /* the odd lines (N<i>) matched, case-insensitively */
	assert_non_null(strstr(m, "192.0.2.1 m49998.test\n"));
	assert_null(strstr(m, "N49999.test"));
	free(m);
	free(over);
	free(base);
}

static char tmpdir[64];

static char *tmp_file(const char *name, const char *content, size_t len)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(content, 1, len, f), len);
	fclose(f);
	return path;
}

static void test_load_checks(void **state)
{
	size_t len = 0;
	char *t, *big, path[128];

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/cf-test-hosts-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	t = hosts_load(tmp_file("ok", "1.2.3.4 a\n", 10), 100, &len);
	assert_non_null(t);
	assert_string_equal(t, "1.2.3.4 a\n");
	assert_int_equal(len, 10);
	free(t);
	/* Exactly at the cap is fine; one byte more is EFBIG. */
	assert_non_null(t = hosts_load(tmp_file("cap", "0123456789", 10), 10, &len));
	free(t);
	errno = 0;
	assert_null(hosts_load(tmp_file("over", "0123456789x", 11), 10, &len));
	assert_int_equal(errno, EFBIG);
	big = calloc(1, 20000);
	assert_non_null(big);
	memset(big, 'a', 19999);
	assert_non_null(t = hosts_load(tmp_file("big", big, 19999), 19999, &len));
	assert_int_equal(len, 19999);
	free(t);
	free(big);
	assert_null(hosts_load(tmp_file("nul", "a\0b", 3), 100, &len));
	assert_int_equal(errno, EILSEQ);
	assert_null(hosts_load(tmpdir, 100, &len));
	assert_int_equal(errno, EINVAL);
	assert_null(hosts_load("/dev/null", 100, &len));
	assert_int_equal(errno, EINVAL);
	snprintf(path, sizeof(path), "%s/fifo", tmpdir);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_null(hosts_load(path, 100, &len));   /* refused, never blocks */
	assert_int_equal(errno, EINVAL);
	unlink(path);
	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	assert_null(hosts_load(path, 100, &len));
	assert_int_equal(errno, ENOENT);
	/* A /proc file says its size is 0: it is still read whole, and still capped. */
	assert_non_null(t = hosts_load("/proc/self/status", 1u << 20, &len));
	assert_true(len > 0 && strstr(t, "Pid:"));
	free(t);
	assert_null(hosts_load("/proc/self/status", 16, &len));
	assert_int_equal(errno, EFBIG);
	for (const char *const *n = (const char *const[]){ "ok", "cap", "over", "big", "nul", NULL }; *n; n++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, *n);
		unlink(path);
	}
	rmdir(tmpdir);
}

static void expect_ns(const char *in, const char *want)
{
	char *out = NULL;
	size_t len = 0;
	int r = nsswitch_rewrite(in, strlen(in), &out, &len);

	if (!want) {
		assert_int_equal(r, 0);
		assert_null(out);
		return;
	}
	assert_int_equal(r, 1);
	assert_string_equal(out, want);
	assert_int_equal(len, strlen(want));
	free(out);
}

static void test_nsswitch_drops_bypassing_sources(void **state)
{
	(void)state;
	/* Ubuntu's default with systemd-resolved and avahi. */
	expect_ns("passwd: files systemd\n"
		  "hosts:          files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns myhostname\n"
		  "networks: files\n",
		  "passwd: files systemd\n"
		  "hosts: files dns myhostname\n"
		  "networks: files\n");
	/* Fedora's: no dns left, so it is added after files. */
	expect_ns("hosts: files myhostname resolve [!UNAVAIL=return] dns\n",
		  "hosts: files myhostname dns\n");
	expect_ns("hosts: mymachines resolve [!UNAVAIL=return] files myhostname\n",
		  "hosts: files dns myhostname\n");
	/* files's own action block stays with it, and dns goes after it. */
	expect_ns("hosts: files [SUCCESS=return] wins mdns\n", "hosts: files [SUCCESS=return] dns\n");
	/* No files: dns where the first dropped source was. */
	expect_ns("hosts: myhostname resolve\n", "hosts: myhostname dns\n");
	/* Blocks with blanks inside, glued to their source; comments kept; the name in any case. */
	expect_ns("  HOSTS : files mdns4_minimal[ NOTFOUND = return ] dns # avahi\n",
		  "hosts: files dns # avahi\n");
	/* Every hosts: line, and a last line without a newline. */
	expect_ns("hosts: files resolve\nhosts: dns wins", "hosts: files dns\nhosts: dns\n");
}

static void test_nsswitch_unchanged(void **state)
{
	(void)state;
	expect_ns("hosts: files dns\n", NULL);
	expect_ns("hosts: files myhostname\n", NULL);      /* nothing dropped: no dns added either */
	expect_ns("# hosts: files resolve\nhostsx: resolve\npasswd: resolve\n", NULL);
	expect_ns("hosts: files # resolve mdns\n", NULL);   /* in the comment */
	expect_ns("", NULL);
	expect_ns("hosts: files dnsresolve resolved\n", NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merge_override_wins),
		cmocka_unit_test(test_merge_alias_and_case),
		cmocka_unit_test(test_merge_keeps_blank_comment_and_nameless),
		cmocka_unit_test(test_merge_comment_names_do_not_override),
		cmocka_unit_test(test_merge_newlines),
		cmocka_unit_test(test_merge_many_names),
		cmocka_unit_test(test_load_checks),
		cmocka_unit_test(test_nsswitch_drops_bypassing_sources),
		cmocka_unit_test(test_nsswitch_unchanged),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
