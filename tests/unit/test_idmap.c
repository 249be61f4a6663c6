/* Unit tests: sandbox/idmap — subordinate id lookup, the uid/gid map plans, CHILDFLOW_UIDMAP. */
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

#include "sandbox/idmap.h"
#include "util/proc.h"

static void test_subid_by_name_and_number(void **state)
{
	const char *text = "# comment\nalice:100000:65536\n1002:200000:1000\nbob:300000:10\n";
	struct subid_range r;

	(void)state;
	assert_true(subid_lookup(text, "alice", 1001, &r));
	assert_int_equal(r.start, 100000);
	assert_int_equal(r.count, 65536);
	assert_true(subid_lookup(text, "carol", 1002, &r));
	assert_int_equal(r.start, 200000);
	assert_int_equal(r.count, 1000);
	assert_true(subid_lookup(text, NULL, 1002, &r));
	assert_false(subid_lookup(text, "ali", 5, &r));        /* prefix of a name is not a match */
	assert_false(subid_lookup(text, "dave", 100, &r));
}

static void test_subid_rejects_malformed_lines(void **state)
{
	struct subid_range r;

	(void)state;
	assert_false(subid_lookup("alice:100000\n", "alice", 1, &r));
	assert_false(subid_lookup("alice:x:5\n", "alice", 1, &r));
	assert_false(subid_lookup("alice:1:0\n", "alice", 1, &r));      /* empty range */
	assert_false(subid_lookup("alice:1:5:9\n", "alice", 1, &r));
	assert_false(subid_lookup("", "alice", 1, &r));
	/* the last line may lack its newline */
	assert_true(subid_lookup("x:1:1\nalice:7:9", "alice", 1, &r));
	assert_int_equal(r.start, 7);
}

static void test_plan_direct(void **state)
{
	struct idmap_plan p;

	(void)state;
	assert_int_equal(idmap_plan_make(&p, IDMAP_DIRECT, 1000, 1001, NULL, NULL), 0);
	assert_true(p.setgroups_deny);
	assert_string_equal(p.outer_uid, "0 1000 1\n");
	assert_string_equal(p.outer_gid, "0 1001 1\n");
	assert_string_equal(p.inner_uid, "1000 0 1\n");
	assert_string_equal(p.inner_gid, "1001 0 1\n");
}

static void test_plan_root(void **state)
{
	struct idmap_plan p;

	(void)state;
	assert_int_equal(idmap_plan_make(&p, IDMAP_ROOT, 0, 0, NULL, NULL), 0);
	assert_false(p.setgroups_deny);
	assert_string_equal(p.outer_uid, "0 0 4294967295\n");
	assert_string_equal(p.inner_gid, "0 0 4294967295\n");
}

static void test_plan_helper_keeps_caller_id(void **state)
{
	struct subid_range su = { 100000, 65536 }, sg = { 200000, 500 };
	struct idmap_plan p;

	(void)state;
	assert_int_equal(idmap_plan_make(&p, IDMAP_HELPER, 1000, 1000, &su, &sg), 0);
	assert_false(p.setgroups_deny);
	assert_string_equal(p.outer_uid, "0 1000 1\n1 100000 65536\n");
	assert_string_equal(p.outer_gid, "0 1000 1\n1 200000 500\n");
	/* uid 1000 inside is U1's 0 (the caller); ids around it use the subordinate range */
	assert_string_equal(p.inner_uid, "0 1 1000\n1000 0 1\n1001 1001 64536\n");
	/* the gid is beyond the range: everything below it maps, then the caller */
	assert_string_equal(p.inner_gid, "0 1 500\n1000 0 1\n");
}

static void test_plan_helper_edge_ids(void **state)
{
	struct subid_range su = { 100000, 1000 }, sg = { 200000, 10 };
	struct idmap_plan p;

	(void)state;
	/* caller id equal to the range size: no range above it */
	assert_int_equal(idmap_plan_make(&p, IDMAP_HELPER, 1000, 0, &su, &sg), 0);
	assert_string_equal(p.inner_uid, "0 1 1000\n1000 0 1\n");
	/* gid 0 (a user in the root group) */
	assert_string_equal(p.inner_gid, "0 0 1\n1 1 10\n");
	/* helper mode makes no sense for root, nor without ranges */
	assert_int_equal(idmap_plan_make(&p, IDMAP_HELPER, 0, 0, &su, &sg), -EINVAL);
	assert_int_equal(idmap_plan_make(&p, IDMAP_HELPER, 5, 5, NULL, &sg), -EINVAL);
}

static void test_choice_parse(void **state)
{
	enum idmap_choice c = IDMAP_CHOOSE_HELPER;

	(void)state;
	assert_int_equal(idmap_choice_parse(NULL, &c), 0);
	assert_int_equal(c, IDMAP_CHOOSE_AUTO);
	assert_int_equal(idmap_choice_parse("", &c), 0);
	assert_int_equal(c, IDMAP_CHOOSE_AUTO);
	assert_int_equal(idmap_choice_parse("auto", &c), 0);
	assert_int_equal(c, IDMAP_CHOOSE_AUTO);
	assert_int_equal(idmap_choice_parse("direct", &c), 0);
	assert_int_equal(c, IDMAP_CHOOSE_DIRECT);
	assert_int_equal(idmap_choice_parse("helper", &c), 0);
	assert_int_equal(c, IDMAP_CHOOSE_HELPER);
	assert_int_equal(idmap_choice_parse("Helper", &c), -EINVAL);
	assert_int_equal(idmap_choice_parse("foo", &c), -EINVAL);
}

static void test_subid_file_read_whole(void **state)
{
	/* D14: a caller near the end of a file larger than 64 KiB keeps its whole range */
	char path[] = "/tmp/test_idmap_subuid.XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	struct subid_range r;
	char *text;

	(void)state;
	assert_non_null(f);
	for (int i = 0; i < 5000; i++)
		fprintf(f, "user%d:%d:65536\n", i, 100000 + i * 65536);
	fprintf(f, "alice:900000000:65536\n");
	fclose(f);
	text = proc_read_text(path, 1u << 20);
	assert_non_null(text);
	assert_true(strlen(text) > 65536);
	assert_true(subid_lookup(text, "alice", 1234, &r));
	assert_int_equal(r.start, 900000000);
	assert_int_equal(r.count, 65536);
	free(text);
	/* beyond the bound: refused, never cut */
	errno = 0;
	assert_null(proc_read_text(path, 4096));
	assert_int_equal(errno, EFBIG);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_subid_by_name_and_number),
		cmocka_unit_test(test_subid_rejects_malformed_lines),
		cmocka_unit_test(test_plan_direct),
		cmocka_unit_test(test_plan_root),
		cmocka_unit_test(test_plan_helper_keeps_caller_id),
		cmocka_unit_test(test_plan_helper_edge_ids),
		cmocka_unit_test(test_choice_parse),
		cmocka_unit_test(test_subid_file_read_whole),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
