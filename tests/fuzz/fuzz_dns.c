/*
 * libFuzzer target: the DNS messages the forwarder reads from the child and from upstream resolvers.
 *
 * The input is taken as a query (dns_check_query) and, from its first byte on, as an answer to the
 * query's question (dns_check_answer, with the A/AAAA records remembered in a small table); the
 * error answer is built for it and must itself be accepted as an answer to that question, and TCP
 * framing is walked over the input.  The hand-read shortcut of dns_check_query() must give the
 * verdict and question libldns gives (dns_check_query_full()); dns_check_answer() takes the same
 * shortcut for record-less answers, so this covers it too.  Any crash, sanitizer report, hang, or a
 * broken contract (a forwarded query without a question, an error answer that does not parse back,
 * the two readings differing) is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns/names.h"
#include "dns/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
