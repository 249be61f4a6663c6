/* Unit tests: dns/wire (which queries are forwarded, which answers accepted, error answers, framing). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <netinet/in.h>

#include "dns/names.h"
#include "dns/wire.h"

struct msg {
	uint8_t b[1024];
	size_t n;
};

static void put(struct msg *m, const void *p, size_t n)
{
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void put16(struct msg *m, unsigned int v)
{
	uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	put(m, x, 2);
}

static void put32(struct msg *m, uint32_t v)
{
	put16(m, v >> 16);
	put16(m, v & 0xffff);
}

static void hdr(struct msg *m, unsigned int id, unsigned int flags, unsigned int qd, unsigned int an)
{
	m->n = 0;
	put16(m, id);
	put16(m, flags);
	put16(m, qd);
	put16(m, an);
	put16(m, 0);
	put16(m, 0);
}

#define NAME_A "\x01" "a" "\x04" "test"          /* + the root's 0 */
#define NAME_ALIAS "\x05" "alias" "\x04" "test"
#define NAME_MID "\x03" "mid" "\x04" "test"

static void question(struct msg *m, const char *name, unsigned int type)
{
	put(m, name, strlen(name) + 1);
	put16(m, type);
	put16(m, 1);
}

static void query(struct msg *m, unsigned int id, const char *name, unsigned int type)
{
	hdr(m, id, 0x0100, 1, 0);
	question(m, name, type);
}

static void test_query_forwarded(void **state)
{
	struct msg m;
	struct dns_question q;
	char name[DNS_NAME_MAX];

	(void)state;
	query(&m, 0x1234, "\x01" "A" "\x04" "TeSt", 28);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORWARD);
	assert_int_equal(q.type, 28);
	assert_int_equal(q.qclass, 1);
	assert_int_equal(q.len, 8);
	assert_memory_equal(q.name, "\x01" "A" "\x04" "TeSt", 8);   /* the case as written */
	dns_question_name(&q, name, sizeof(name));
	assert_string_equal(name, "a.test");
}

/* A name whose escaped form does not fit is cut at a whole character: no byte left unwritten. */
static void test_long_escaped_name_cut_cleanly(void **state)
{
	struct msg m;
	struct dns_question q;
	char wire[200], name[DNS_NAME_MAX], small[8];
	size_t n = 0;

	(void)state;
	for (int l = 0; l < 60; l++) {                 /* 60 labels "\002\002": 480 bytes escaped */
		wire[n++] = 2;
		wire[n++] = 2;
		wire[n++] = 2;
	}
	wire[n] = '\0';
	query(&m, 7, wire, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORWARD);
	memset(name, 'X', sizeof(name));
	dns_question_name(&q, name, sizeof(name));
	assert_true(strlen(name) < sizeof(name));
	assert_null(strchr(name, 'X'));
	for (size_t i = 0; name[i]; i++)               /* only whole \002 and dots */
		assert_true(name[i] == '.' || (i % 9 < 8 && memcmp(name + i - i % 9, "\\002\\002", 8) == 0));
	memset(small, 'X', sizeof(small));
	dns_question_name(&q, small, sizeof(small));   /* room for one \002 and a half */
	assert_string_equal(small, "\\002");
}

static void test_query_refused_kinds(void **state)
{
	struct msg m;
	struct dns_question q;

	(void)state;
	assert_int_equal(dns_check_query((const uint8_t *)"short", 5, &q), DNS_DROP);
	hdr(&m, 1, 0x8100, 1, 0);                      /* QR set: an answer, not a query */
	question(&m, NAME_A, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_DROP);
	hdr(&m, 1, 0x2000, 1, 0);                      /* opcode 4, NOTIFY */
	question(&m, NAME_A, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_NOTIMP);
	hdr(&m, 1, 0x0100, 0, 0);                      /* no question */
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORMERR);
	hdr(&m, 1, 0x0100, 2, 0);                      /* two questions */
	question(&m, NAME_A, 1);
	question(&m, NAME_MID, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORMERR);
	hdr(&m, 1, 0x0100, 1, 0);                      /* a compression pointer to itself */
	put(&m, "\xc0\x0c\x00\x01\x00\x01", 6);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORMERR);
	hdr(&m, 1, 0x0100, 1, 0);                      /* a label running past the end */
	put(&m, "\x3f" "abc", 4);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORMERR);
	hdr(&m, 1, 0x0100, 65535, 65535);              /* counts far beyond the message */
	question(&m, NAME_A, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORMERR);
	query(&m, 1, NAME_A, 1);                       /* too long to be a query */
	assert_int_equal(dns_check_query(m.b, DNS_QUERY_MAX + 1, &q), DNS_DROP);
}

static void test_question_eq(void **state)
{
	struct msg m;
	struct dns_question a, b;

	(void)state;
	query(&m, 1, "\x01" "A" "\x04" "TEST", 1);
	assert_int_equal(dns_check_query(m.b, m.n, &a), DNS_FORWARD);
	query(&m, 2, NAME_A, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &b), DNS_FORWARD);
	assert_true(dns_question_eq(&a, &b));
	query(&m, 2, NAME_A, 28);
	assert_int_equal(dns_check_query(m.b, m.n, &b), DNS_FORWARD);
	assert_false(dns_question_eq(&a, &b));
	query(&m, 2, "\x01" "b" "\x04" "test", 1);
	assert_int_equal(dns_check_query(m.b, m.n, &b), DNS_FORWARD);
	assert_false(dns_question_eq(&a, &b));
}

/* A wire name of @len bytes (root included) from labels of 63 bytes and one shorter. */
static void long_name(char *out, size_t len)
{
	size_t o = 0;

	while (len - o > 1) {
		size_t l = len - o - 1 > 64 ? 63 : len - o - 2;

		out[o++] = (char)l;
		memset(out + o, 'x', l);
		o += l;
	}
	out[o] = '\0';
}

/* The hand-read shortcut of dns_check_query() gives what libldns gives, at its edges. */
static void test_query_shortcut_agrees(void **state)
{
	static const struct { size_t name_len; int label; bool trailing, opt; enum dns_verdict want; } cases[] = {
		{ 255, 0, false, false, DNS_FORWARD },    /* the longest name */
		{ 256, 0, false, false, DNS_FORMERR },    /* one byte too long */
		{ 0, 63, false, false, DNS_FORWARD },     /* the longest label */
		{ 0, 64, false, false, DNS_FORMERR },     /* 0x40: not a length */
		{ 8, 0, true, false, DNS_FORWARD },       /* a stray byte after the question */
		{ 8, 0, false, true, DNS_FORWARD },       /* an OPT record (EDNS): libldns reads it */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dns_question a, b;
		char name[300];
		struct msg m;

		memset(&a, 0, sizeof(a));
		memset(&b, 0, sizeof(b));
		if (cases[i].label) {
			name[0] = (char)cases[i].label;
			memset(name + 1, 'y', (size_t)cases[i].label);
			name[1 + cases[i].label] = '\0';
		} else if (cases[i].name_len == 8) {
			memcpy(name, NAME_A, sizeof(NAME_A));
		} else {
			long_name(name, cases[i].name_len);
		}
		hdr(&m, 7, 0x0100, 1, 0);
		question(&m, name, 1);
		if (cases[i].opt) {
			m.b[11] = 1;                                  /* ARCOUNT */
			put(&m, "\0\0\x29\x10\x00\0\0\0\0\0\0", 11);   /* root, OPT, 4096, ttl 0, rdlen 0 */
		}
		if (cases[i].trailing)
			put(&m, "z", 1);
		assert_int_equal(dns_check_query(m.b, m.n, &a), cases[i].want);
		assert_int_equal(dns_check_query_full(m.b, m.n, &b), cases[i].want);
		if (cases[i].want == DNS_FORWARD) {
			assert_int_equal(a.len, b.len);
			assert_memory_equal(a.name, b.name, a.len);
			assert_int_equal(a.type, b.type);
			assert_int_equal(a.qclass, b.qclass);
		}
	}
}

/* A record-less answer (SERVFAIL) is matched by hand: its question must still be the query's. */
static void test_recordless_answer(void **state)
{
	struct dns_names *names = dns_names_new(8);
	struct dns_question q, other;
	struct msg m;

	(void)state;
	assert_non_null(names);
	query(&m, 1, NAME_A, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORWARD);
	query(&m, 1, NAME_MID, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &other), DNS_FORWARD);
	hdr(&m, 1, 0x8182, 1, 0);
	question(&m, "\x01" "A" "\x04" "TEST", 1);   /* the case may differ */
	assert_int_equal(dns_check_answer(m.b, m.n, &q, names, 0), 0);
	assert_int_equal(dns_check_answer(m.b, m.n, &other, names, 0), -ENOMSG);
	assert_int_equal(dns_names_count(names), 0);
	m.b[2] &= 0x7f;                                  /* QR clear: not an answer */
	assert_int_equal(dns_check_answer(m.b, m.n, &q, names, 0), -EBADMSG);
	dns_names_free(names);
}

/* An answer to alias.test A: mid -> a first, then alias -> mid (out of order), then a's A record;
 * names compressed.  Offsets: the question's name at 12, its "test" label at 18 (0x12); the first
 * answer's owner mid.test at 28 (0x1c). */
static void chain_answer(struct msg *m, unsigned int id, unsigned int flags)
{
	hdr(m, id, flags, 1, 3);
	question(m, NAME_ALIAS, 1);
	put(m, "\x03" "mid" "\xc0\x12", 6);            /* mid.test CNAME a.test */
	put16(m, 5);
	put16(m, 1);
	put32(m, 300);
	put16(m, 4);
	put(m, "\x01" "a" "\xc0\x12", 4);
	put(m, "\xc0\x0c", 2);                         /* alias.test CNAME mid.test */
	put16(m, 5);
	put16(m, 1);
	put32(m, 300);
	put16(m, 2);
	put(m, "\xc0\x1c", 2);
	put(m, NAME_A, strlen(NAME_A) + 1);            /* a.test A 198.51.100.21 */
	put16(m, 1);
	put16(m, 1);
	put32(m, 120);
	put16(m, 4);
	put(m, "\xc6\x33\x64\x15", 4);
}

static void test_answer_accepted_and_remembered(void **state)
{
	struct dns_names *names = dns_names_new(16);
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct dns_question q;
	const char *got[4];
	struct msg m;

	(void)state;
	assert_non_null(names);
	query(&m, 7, "\x05" "ALIAS" "\x04" "test", 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORWARD);
	chain_answer(&m, 7, 0x8180);
	assert_int_equal(dns_check_answer(m.b, m.n, &q, names, 1000), 0);
	inet_pton(AF_INET, "198.51.100.21", &a.sin_addr);
	assert_int_equal(dns_names_lookup(names, (struct sockaddr *)&a, 1000, got, 4), 1);
	assert_string_equal(got[0], "alias.test");   /* the chain is attributed to the name asked */
	dns_names_free(names);
}

static void test_answer_rejected(void **state)
{
	struct dns_question q, other;
	struct msg m;

	(void)state;
	query(&m, 7, NAME_ALIAS, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORWARD);
	query(&m, 7, NAME_ALIAS, 28);
	assert_int_equal(dns_check_query(m.b, m.n, &other), DNS_FORWARD);
	chain_answer(&m, 7, 0x8180);
	assert_int_equal(dns_check_answer(m.b, m.n, &other, NULL, 0), -ENOMSG);   /* another question */
	chain_answer(&m, 7, 0x0180);
	assert_int_equal(dns_check_answer(m.b, m.n, &q, NULL, 0), -EBADMSG);      /* QR clear */
	chain_answer(&m, 7, 0x8180);
	assert_int_equal(dns_check_answer(m.b, m.n - 3, &q, NULL, 0), -EBADMSG);  /* cut short */
	assert_int_equal(dns_check_answer(m.b, 5, &q, NULL, 0), -EBADMSG);
	hdr(&m, 7, 0x8380, 1, 0);                      /* TC: an answer, passed on as it is */
	question(&m, NAME_ALIAS, 1);
	assert_int_equal(dns_check_answer(m.b, m.n, &q, NULL, 0), 0);
}

/* An answer of @n records owned by 0xc00c: A 198.51.100.(30+i) with TTL 300, the last one AAAA
 * 2001:db8::1 when @six; @spoil spoils the last record's shape (libldns reads it then): 1 its
 * type (TXT), 2 its length (5), 3 its owner (the pointer 0xc00d). */
static void simple_answer_msg(struct msg *m, const char *name, int n, bool six, int spoil)
{
	hdr(m, 9, 0x8180, 1, (unsigned int)n);
	question(m, name, six ? 28 : 1);
	for (int i = 0; i < n; i++) {
		bool last = i == n - 1, v6 = six && last;
		char b = (char)(30 + i);

		put(m, last && spoil == 3 ? "\xc0\x0d" : "\xc0\x0c", 2);
		put16(m, last && spoil == 1 ? 16 : v6 ? 28 : 1);
		put16(m, 1);
		put32(m, 300);
		if (v6) {
			put16(m, 16);
			put(m, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
			continue;
		}
		put16(m, last && spoil == 2 ? 5 : 4);
		put(m, "\xc6\x33\x64", 3);
		put(m, &b, 1);
		if (last && spoil == 2)
			put(m, "x", 1);
	}
}

/* The hand-read answer (A/AAAA owned by the question's name) and libldns agree on every variant. */
static void test_simple_answer_agrees(void **state)
{
	static const char *const v4[] = { "198.51.100.30", "198.51.100.31", "198.51.100.32" };
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
	struct dns_question q4, q6, other;
	struct dns_names *names;
	const char *got[4];
	struct msg m;

	(void)state;
	query(&m, 9, "\x03" "Www" "\x04" "test", 1);
	assert_int_equal(dns_check_query(m.b, m.n, &q4), DNS_FORWARD);
	query(&m, 9, "\x03" "www" "\x04" "test", 28);
	assert_int_equal(dns_check_query(m.b, m.n, &q6), DNS_FORWARD);
	query(&m, 9, NAME_A, 1);
	assert_int_equal(dns_check_query(m.b, m.n, &other), DNS_FORWARD);
	for (int n = 1; n <= 3; n++) {
		for (int spoil = 0; spoil <= 3; spoil++) {
			for (int six = 0; six <= 1; six++) {
				const struct dns_question *q = six ? &q6 : &q4;
				struct dns_names *fast = dns_names_new(16), *full = dns_names_new(16);
				const char *gf[4], *gl[4];

				assert_non_null(fast);
				assert_non_null(full);
				simple_answer_msg(&m, "\x03" "www" "\x04" "TEST", n, six, spoil);
				assert_int_equal(dns_check_answer(m.b, m.n, q, fast, 1000),
						 dns_check_answer_full(m.b, m.n, q, full, 1000));
				assert_int_equal(dns_check_answer(m.b, m.n, &other, NULL, 0),
						 dns_check_answer_full(m.b, m.n, &other, NULL, 0));
				assert_int_equal(dns_names_count(fast), dns_names_count(full));
				for (int i = 0; i < n; i++) {
					size_t k;

					inet_pton(AF_INET, v4[i], &a.sin_addr);
					k = dns_names_lookup(fast, (struct sockaddr *)&a, 1000, gf, 4);
					assert_int_equal(k, dns_names_lookup(full, (struct sockaddr *)&a, 1000, gl, 4));
					if (k)
						assert_string_equal(gf[0], gl[0]);
				}
				dns_names_free(fast);
				dns_names_free(full);
			}
		}
	}
	/* The shape itself: remembered under the name asked, with its TTL; another question: -ENOMSG. */
	names = dns_names_new(16);
	assert_non_null(names);
	simple_answer_msg(&m, "\x03" "www" "\x04" "TEST", 2, true, 0);
	assert_int_equal(dns_check_answer(m.b, m.n, &q6, names, 1000), 0);
	assert_int_equal(dns_check_answer(m.b, m.n, &q4, NULL, 0), -ENOMSG);
	assert_int_equal(dns_check_answer(m.b, m.n, &other, NULL, 0), -ENOMSG);
	inet_pton(AF_INET, "198.51.100.30", &a.sin_addr);
	inet_pton(AF_INET6, "2001:db8::1", &a6.sin6_addr);
	assert_int_equal(dns_names_lookup(names, (struct sockaddr *)&a, 1000, got, 4), 1);
	assert_string_equal(got[0], "www.test");
	assert_int_equal(dns_names_lookup(names, (struct sockaddr *)&a6, 1000, got, 4), 1);
	assert_int_equal(dns_names_lookup(names, (struct sockaddr *)&a6, 1000 + 301000, got, 4), 0);
	assert_int_equal(dns_check_answer(m.b, m.n - 1, &q6, NULL, 0), -EBADMSG);   /* cut short */
	dns_names_free(names);
}

static void test_id_restore_touches_only_the_id(void **state)
{
	struct msg m, before;

	(void)state;
	chain_answer(&m, 0xbeef, 0x8180);
	before = m;
	dns_set_id(m.b, 0x0102);
	assert_int_equal(dns_id(m.b), 0x0102);
	assert_int_equal(m.b[0], 1);
	assert_int_equal(m.b[1], 2);
	assert_memory_equal(m.b + 2, before.b + 2, m.n - 2);
	dns_set_id(m.b, 0xbeef);
	assert_memory_equal(m.b, before.b, m.n);
}

static void test_error_answers(void **state)
{
	uint8_t out[300];
	struct dns_question q;
	struct msg m;
	size_t n;

	(void)state;
	query(&m, 0xabcd, "\x01" "A" "\x04" "test", 28);
	assert_int_equal(dns_check_query(m.b, m.n, &q), DNS_FORWARD);
	n = dns_build_error(out, sizeof(out), m.b, &q, DNS_RCODE_SERVFAIL);
	assert_int_equal(n, m.n);                      /* header + the question, as asked */
	assert_int_equal(dns_id(out), 0xabcd);
	assert_int_equal(out[2], 0x81);                /* QR, opcode QUERY, RD kept */
	assert_int_equal(out[3], 0x82);                /* RA, SERVFAIL */
	assert_memory_equal(out + 4, "\x00\x01\x00\x00\x00\x00\x00\x00", 8);
	assert_memory_equal(out + DNS_HDR, m.b + DNS_HDR, m.n - DNS_HDR);
	assert_int_equal(dns_check_answer(out, n, &q, NULL, 0), 0);   /* a client would accept it */
	n = dns_build_error(out, sizeof(out), m.b, NULL, DNS_RCODE_FORMERR);
	assert_int_equal(n, DNS_HDR);
	assert_int_equal(out[3], 0x81);
	assert_int_equal(out[5], 0);
	assert_int_equal(dns_build_error(out, DNS_HDR + 3, m.b, &q, DNS_RCODE_SERVFAIL), 0);   /* no room */
}

static void test_tcp_framing(void **state)
{
	const uint8_t two[] = { 0, 3, 'a', 'b', 'c', 0, 1, 'x' };

	(void)state;
	assert_int_equal(dns_frame_len(two, 0), 0);
	assert_int_equal(dns_frame_len(two, 1), 0);
	assert_int_equal(dns_frame_len(two, 4), 0);    /* incomplete */
	assert_int_equal(dns_frame_len(two, 5), 5);
	assert_int_equal(dns_frame_len(two, sizeof(two)), 5);
	assert_int_equal(dns_frame_len(two + 5, 3), 3);   /* the pipelined second one */
	assert_int_equal(dns_frame_len(two + 5, 2), 0);
	assert_int_equal(dns_frame_len((const uint8_t *)"\xff\xff", 2), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query_forwarded),
		cmocka_unit_test(test_query_refused_kinds),
		cmocka_unit_test(test_long_escaped_name_cut_cleanly),
		cmocka_unit_test(test_question_eq),
		cmocka_unit_test(test_query_shortcut_agrees),
		cmocka_unit_test(test_recordless_answer),
		cmocka_unit_test(test_answer_accepted_and_remembered),
		cmocka_unit_test(test_answer_rejected),
		cmocka_unit_test(test_simple_answer_agrees),
		cmocka_unit_test(test_id_restore_touches_only_the_id),
		cmocka_unit_test(test_error_answers),
		cmocka_unit_test(test_tcp_framing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
