/* Unit tests: doctor - the report's text and JSON, the verdict, and explained failures' wording. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doctor/internal.h"
#include "util/explain.h"

static void noop(const struct doctor_env *env, struct doctor_finding *f)
{
	(void)env;
	(void)f;
}

static const struct doctor_check pre_a = { "alpha", "the alpha", DOCTOR_PREFLIGHT, DOCTOR_ROOTLESS, NULL, NULL, noop,
					   NULL };
static const struct doctor_check pre_b = { "beta", "the \"beta\"", DOCTOR_PREFLIGHT, DOCTOR_ROOTLESS, NULL, NULL,
					   noop, NULL };
static const struct doctor_check cap_c = { "gamma", "gamma", DOCTOR_CAPABILITY, DOCTOR_ROOTLESS, NULL, NULL, noop,
					   NULL };

static char *print(const struct doctor_report *r, enum doctor_format fmt)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(doctor_print(r, fmt, f), 0);
	fclose(f);
	return buf;
}

static void set(struct doctor_item *it, const struct doctor_check *c, enum doctor_status st, const char *d,
		const char *h)
{
	memset(it, 0, sizeof(*it));
	it->check = c;
	it->f.status = st;
	snprintf(it->f.detail, sizeof(it->f.detail), "%s", d);
	snprintf(it->f.hint, sizeof(it->f.hint), "%s", h);
}

static void test_json(void **state)
{
	struct doctor_item items[3];
	struct doctor_report r = { .rootful = false, .uid = 1001, .euid = 1001, .items = items, .n = 3 };
	char *out;

	(void)state;
	set(&items[0], &cap_c, DOCTOR_BLOCKED, "raw\tsockets\x01 refused", "setcap \\ \"x\"");
	set(&items[1], &pre_a, DOCTOR_OK, "fine", "never shown when ok");
	set(&items[2], &pre_b, DOCTOR_WARNING, "line\nbreak", "do \"this\"");
	out = print(&r, DOCTOR_JSON);
	assert_string_equal(out,
		"{\n"
		"  \"backend\": \"rootless-internal\",\n"
		"  \"uid\": 1001,\n"
		"  \"euid\": 1001,\n"
		"  \"status\": \"ready with warnings\",\n"
		"  \"capabilities\": [\n"
		"    {\n"
		"      \"key\": \"gamma\",\n"
		"      \"label\": \"gamma\",\n"
		"      \"status\": \"unavailable\",\n"
		"      \"detail\": \"raw\\tsockets\\u0001 refused\",\n"
		"      \"hint\": \"setcap \\\\ \\\"x\\\"\"\n"
		"    }\n"
		"  ],\n"
		"  \"preflight\": [\n"
		"    {\n"
		"      \"key\": \"alpha\",\n"
		"      \"label\": \"the alpha\",\n"
		"      \"status\": \"ok\",\n"
		"      \"detail\": \"fine\",\n"
		"      \"hint\": null\n"
		"    },\n"
		"    {\n"
		"      \"key\": \"beta\",\n"
		"      \"label\": \"the \\\"beta\\\"\",\n"
		"      \"status\": \"warning\",\n"
		"      \"detail\": \"line\\nbreak\",\n"
		"      \"hint\": \"do \\\"this\\\"\"\n"
		"    }\n"
		"  ]\n"
		"}\n");
	free(out);
}

static void test_json_empty_sections(void **state)
{
	struct doctor_report r = { .rootful = true, .uid = 0, .euid = 0, .items = NULL, .n = 0 };
	char *out;

	(void)state;
	out = print(&r, DOCTOR_JSON);
	assert_string_equal(out, "{\n  \"backend\": \"rootful\",\n  \"uid\": 0,\n  \"euid\": 0,\n"
			    "  \"status\": \"ready\",\n  \"capabilities\": [],\n  \"preflight\": []\n}\n");
	free(out);
}

static void test_text(void **state)
{
	struct doctor_item items[3];
	struct doctor_report r = { .rootful = false, .uid = 0, .euid = 0, .items = items, .n = 3 };
	char *out;

	(void)state;
	set(&items[0], &pre_a, DOCTOR_BLOCKED, "it is off", "turn it on");
	set(&items[1], &cap_c, DOCTOR_WARNING, "partly", "more");
	set(&items[2], &pre_b, DOCTOR_OK, "fine", "hidden");
	out = print(&r, DOCTOR_TEXT);
	assert_string_equal(out,
		"childflow doctor\nbackend: rootless-internal\nuser: uid 0 / euid 0\nstatus: blocked\n"
		"\ncapabilities\n[LIMITED] gamma\n  partly\n  fix: more\n"
		"\npreflight\n[BLOCKED] the alpha\n  it is off\n  fix: turn it on\n[OK] the \"beta\"\n  fine\n");
	free(out);
}

static void test_verdict(void **state)
{
	struct doctor_item items[2];
	struct doctor_report r = { .items = items, .n = 2 };

	(void)state;
	set(&items[0], &pre_a, DOCTOR_OK, "", "");
	set(&items[1], &cap_c, DOCTOR_BLOCKED, "", "");
	assert_string_equal(doctor_verdict(&r), "ready");   /* capabilities never block */
	items[0].f.status = DOCTOR_WARNING;
	assert_string_equal(doctor_verdict(&r), "ready with warnings");
	items[0].f.status = DOCTOR_BLOCKED;
	assert_string_equal(doctor_verdict(&r), "blocked");
}

/* A run's failure and the doctor's finding are worded by the same explain(). */
static void test_fail_is_the_doctors_words(void **state)
{
	struct doctor_finding f;

	(void)state;
	doctor_init();
	memset(&f, 0, sizeof(f));
	doctor_capture(&f);
	explain_warn("dns", 0, "192.0.2.53:53, timed out");
	doctor_capture(NULL);
	assert_int_equal(f.status, DOCTOR_WARNING);
	assert_string_equal(f.detail, "no DNS resolver answered (192.0.2.53:53, timed out): lookups inside get SERVFAIL");
	assert_non_null(strstr(f.hint, "--dns ADDRESS"));

	doctor_capture(&f);
	explain_fail("proxy", 13 /* EACCES */, "proxy 1.2.3.4:8080 rejected the credentials (407)");
	doctor_capture(NULL);
	assert_string_equal(f.detail, "proxy 1.2.3.4:8080 rejected the credentials (407)");
	assert_non_null(strstr(f.hint, "-U"));

	doctor_capture(&f);
	explain_fail("no-such-check", 2 /* ENOENT */, "cannot do it");
	doctor_capture(NULL);
	assert_int_equal(f.status, DOCTOR_BLOCKED);
	assert_string_equal(f.detail, "cannot do it: No such file or directory");
	assert_string_equal(f.hint, "");
}

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < doctor_n_checks; i++) {
		const struct doctor_check *c = &doctor_checks[i];

		assert_non_null(c->run);
		assert_true(c->backends != 0);
		assert_ptr_equal(doctor_find(c->key), c);   /* keys are unique */
	}
	assert_null(doctor_find("nope"));
}

static void test_sysctl_fix(void **state)
{
	char buf[320];

	(void)state;
	assert_string_equal(doctor_sysctl_fix("a.b", "1", buf, sizeof(buf)),
			    "sysctl -w a.b=1 (to keep it after a reboot: echo 'a.b = 1' > /etc/sysctl.d/90-childflow.conf)");
	assert_string_equal(doctor_sysctl_fix("r", "0 9", buf, sizeof(buf)),
			    "sysctl -w r=\"0 9\" (to keep it after a reboot: echo 'r = 0 9' > /etc/sysctl.d/90-childflow.conf)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_json_empty_sections),
		cmocka_unit_test(test_text),
		cmocka_unit_test(test_verdict),
		cmocka_unit_test(test_fail_is_the_doctors_words),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_sysctl_fix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
