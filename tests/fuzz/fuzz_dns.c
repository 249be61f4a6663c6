/*
 * libFuzzer target: the DNS messages the forwarder reads from the child and from upstream resolvers.
 *
 * The input is taken as a query (dns_check_query) and, from its first byte on, as an answer to the
 * query's question (dns_check_answer, with the A/AAAA records remembered in a small table); the
 * error answer is built for it and must itself be accepted as an answer to that question, and TCP
 * framing is walked over the input.  The hand-read shortcut of dns_check_query() must give the
 * verdict and question libldns gives (dns_check_query_full()); dns_check_answer() takes the same
 * shortcut for record-less answers, so this covers it too.  Its second shortcut (answers of A/AAAA
 * records owned by the question's name) must give the verdict libldns gives
 * (dns_check_answer_full()) and remember the same (address, name) pairs with the same lifetimes:
 * each 4- and 16-byte window of the input is looked up in both tables, now and later.  Any crash,
 * sanitizer report, hang, or a broken contract (a forwarded query without a question, an error
 * answer that does not parse back, the two readings differing) is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "dns/names.h"
#include "dns/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Do @a and @b hold the same names for @sa at @now? */
static void same_names(const struct dns_names *a, const struct dns_names *b, const struct sockaddr *sa,
		       uint64_t now)
{
	const char *na[8], *nb[8];
	size_t ka = dns_names_lookup(a, sa, now, na, 8), kb = dns_names_lookup(b, sa, now, nb, 8);

	if (ka != kb)
		abort();
	for (size_t i = 0; i < ka && i < 8; i++)
		if (strcmp(na[i], nb[i]) != 0)
			abort();
}

/* @msg as an answer to @q, read both ways: the same verdict and the same remembered pairs. */
static void answer_both_ways(const uint8_t *msg, size_t size, const struct dns_question *q)
{
	struct dns_names *fast = dns_names_new(64), *full = dns_names_new(64);
	const uint64_t now = 1000000;

	if (!fast || !full)
		abort();
	if (dns_check_answer(msg, size, q, fast, now) != dns_check_answer_full(msg, size, q, full, now) ||
	    dns_names_count(fast) != dns_names_count(full))
		abort();
	for (size_t o = 0; dns_names_count(fast) && o + 4 <= size; o++) {
		struct sockaddr_in a4 = { .sin_family = AF_INET };
		struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };

		memcpy(&a4.sin_addr, msg + o, 4);
		for (int t = 0; t < 3; t++) {
			uint64_t at = now + (t == 0 ? 0 : t == 1 ? (DNS_NAMES_MIN_TTL_S + 1) * 1000ull
							  : (DNS_NAMES_MAX_TTL_S - 1) * 1000ull);

			same_names(fast, full, (const struct sockaddr *)&a4, at);
			if (o + 16 <= size) {
				memcpy(&a6.sin6_addr, msg + o, 16);
				same_names(fast, full, (const struct sockaddr *)&a6, at);
			}
		}
	}
	dns_names_free(fast);
	dns_names_free(full);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dns_names *names;
	static uint8_t out[DNS_HDR + DNS_WIRE_NAME_MAX + 4];
	struct dns_question q, full;
	enum dns_verdict v;
	size_t n, off = 0;
	char name[DNS_NAME_MAX];

	if (!names && !(names = dns_names_new(64)))
		abort();
	v = dns_check_query(data, size, &q);
	if (dns_check_query_full(data, size, &full) != v)
		abort();
	if (v == DNS_FORWARD) {
		if (q.len == 0 || full.len != q.len || memcmp(full.name, q.name, q.len) ||
		    full.type != q.type || full.qclass != q.qclass)
			abort();
		dns_question_name(&q, name, sizeof(name));
		if (strnlen(name, sizeof(name)) == sizeof(name))
			abort();
		n = dns_build_error(out, sizeof(out), data, &q, DNS_RCODE_SERVFAIL);
		if (!n || dns_check_answer(out, n, &q, NULL, 0) != 0)
			abort();
		/* The same bytes as an answer to that question (QR forced on). */
		uint8_t *copy = malloc(size);

		if (!copy)
			return 0;
		memcpy(copy, data, size);
		copy[2] |= 0x80;
		dns_check_answer(copy, size, &q, names, size);
		answer_both_ways(copy, size, &q);
		free(copy);
	} else if (v != DNS_DROP && size >= DNS_HDR) {
		if (dns_build_error(out, sizeof(out), data, NULL, DNS_RCODE_FORMERR) != DNS_HDR)
			abort();
	}
	while ((n = dns_frame_len(data + off, size - off)) != 0) {
		if (n < 2 || n > size - off)
			abort();
		off += n;
	}
	return 0;
}
