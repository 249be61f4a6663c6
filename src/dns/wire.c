/* SPDX-License-Identifier: MIT */
/*
 * dns/wire — DNS messages checked with libldns, error answers, TCP framing (see wire.h).
 *
 * Two shapes are read by hand, because they are nearly every message on the hot path and libldns
 * allocates a packet, a list and an rdf per name and record for each: a query of one plain question
 * (plain_question()), and an answer whose records are all A or AAAA of class IN owned by the
 * question's name through the pointer 0xc00c, with no authority or additional records
 * (simple_answer()).  Anything else, or anything unusual in those, goes to libldns; the fuzzer
 * (tests/fuzz/fuzz_dns.c) checks that both readings give the same verdict and records.
 */
#include "dns/wire.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <netinet/in.h>

#include <ldns/ldns.h>

#define FLAG_QR 0x80             /* in byte 2 */
#define OPCODE(b2) (((b2) >> 3) & 0x0f)
#define CHAIN_MAX 16             /* names of a CNAME chain followed */

static uint8_t lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

bool dns_question_eq(const struct dns_question *a, const struct dns_question *b)
{
	if (a->len != b->len || a->type != b->type || a->qclass != b->qclass)
		return false;
	/* Length bytes are below 64, so lowering them changes nothing. */
	for (unsigned int i = 0; i < a->len; i++)
		if (lower(a->name[i]) != lower(b->name[i]))
			return false;
	return true;
}

/* The one question of @p into @q.  Return: 0, or -EBADMSG. */
static int question_of(const ldns_pkt *p, struct dns_question *q)
{
	const ldns_rr *rr;
	const ldns_rdf *owner;

	if (ldns_pkt_qdcount(p) != 1 || ldns_rr_list_rr_count(ldns_pkt_question(p)) != 1)
		return -EBADMSG;
	rr = ldns_rr_list_rr(ldns_pkt_question(p), 0);
	owner = ldns_rr_owner(rr);
	if (!owner || ldns_rdf_size(owner) == 0 || ldns_rdf_size(owner) > DNS_WIRE_NAME_MAX)
		return -EBADMSG;
	q->len = (uint8_t)ldns_rdf_size(owner);
	memcpy(q->name, ldns_rdf_data(owner), q->len);
	q->type = (uint16_t)ldns_rr_get_type(rr);
	q->qclass = (uint16_t)ldns_rr_get_class(rr);
	return 0;
}

enum dns_verdict dns_check_query_full(const uint8_t *msg, size_t len, struct dns_question *q)
{
	ldns_pkt *p = NULL;
	enum dns_verdict v;

	if (len < DNS_HDR || len > DNS_QUERY_MAX || (msg[2] & FLAG_QR))
		return DNS_DROP;
	if (OPCODE(msg[2]) != LDNS_PACKET_QUERY)
		return DNS_NOTIMP;
	if (ldns_wire2pkt(&p, msg, len) != LDNS_STATUS_OK)
		return DNS_FORMERR;
	v = question_of(p, q) == 0 ? DNS_FORWARD : DNS_FORMERR;
	ldns_pkt_free(p);
	return v;
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/*
 * plain_question() - the common message, checked by hand: a header with counts (1, 0, 0, 0) and
 * exactly one question whose name is plain labels (1-63 bytes each, no compression pointer), up to
 * DNS_WIRE_NAME_MAX bytes, ending exactly at @len.  Nothing else is taken: libldns has the last word
 * on anything with records or anything unusual.  Return: true, with @q filled, when @msg is one.
 */
static bool plain_question(const uint8_t *msg, size_t len, struct dns_question *q)
{
	size_t i = DNS_HDR;

	if (len < DNS_HDR + 5 || be16(msg + 4) != 1 || be16(msg + 6) || be16(msg + 8) || be16(msg + 10))
		return false;
	while (i < len && msg[i]) {
		if (msg[i] > 63)
			return false;
		i += 1u + msg[i];
	}
	if (i >= len || i + 1 - DNS_HDR > DNS_WIRE_NAME_MAX || i + 5 != len)
		return false;
	q->len = (uint8_t)(i + 1 - DNS_HDR);
	memcpy(q->name, msg + DNS_HDR, q->len);
	q->type = be16(msg + i + 1);
	q->qclass = be16(msg + i + 3);
	return true;
}

enum dns_verdict dns_check_query(const uint8_t *msg, size_t len, struct dns_question *q)
{
	if (len < DNS_HDR || len > DNS_QUERY_MAX || (msg[2] & FLAG_QR))
		return DNS_DROP;
	if (OPCODE(msg[2]) != LDNS_PACKET_QUERY)
		return DNS_NOTIMP;
	if (plain_question(msg, len, q))
		return DNS_FORWARD;
	return dns_check_query_full(msg, len, q);
}

/*
 * name_str() - the presentation form (lowercased, no trailing dot, other bytes as \DDD) of the
 * wire name @w of @len bytes, in @buf of @size bytes.  A name whose presentation does not fit is
 * cut at the last whole character that does; @buf always ends in a NUL.
 */
static void name_str(const uint8_t *w, size_t len, char *buf, size_t size)
{
	size_t o = 0, i = 0;

	if (!size)
		return;
	while (i < len && w[i] && o + 1 < size) {
		unsigned int l = w[i++];

		if (o)
			buf[o++] = '.';
		for (unsigned int k = 0; k < l && i < len; k++, i++) {
			uint8_t c = lower(w[i]);
			bool plain = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';

			if (o + (plain ? 1 : 4) >= size)
				goto out;
			if (plain) {
				buf[o++] = (char)c;
			} else {
				snprintf(buf + o, 5, "\\%03u", c);
				o += 4;
			}
		}
	}
out:
	buf[o < size ? o : size - 1] = '\0';
}

void dns_question_name(const struct dns_question *q, char *buf, size_t size)
{
	name_str(q->name, q->len, buf, size);
}

/* Is @d one of the @n names in @set? */
static bool in_set(const ldns_rdf *const *set, int n, const ldns_rdf *d)
{
	for (int i = 0; i < n; i++)
		if (ldns_dname_compare(set[i], d) == 0)
			return true;
	return false;
}

/* Remember the A/AAAA records of @p reached from its question's name @qname. */
static void remember(const ldns_pkt *p, const struct dns_question *q, struct dns_names *names, uint64_t now_ms)
{
	const ldns_rr_list *an = ldns_pkt_answer(p);
	size_t n = ldns_rr_list_rr_count(an);
	const ldns_rdf *set[CHAIN_MAX];
	char qname[DNS_NAME_MAX];
	int nset = 1;
	bool grew = true;

	set[0] = ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_question(p), 0));
	/* A chain may come in any order: go round until it stops growing (at most CHAIN_MAX names). */
	while (grew && nset < CHAIN_MAX) {
		grew = false;
		for (size_t i = 0; i < n && nset < CHAIN_MAX; i++) {
			const ldns_rr *rr = ldns_rr_list_rr(an, i);
			const ldns_rdf *target;

			if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_CNAME || ldns_rr_rd_count(rr) != 1 ||
			    !in_set(set, nset, ldns_rr_owner(rr)))
				continue;
			target = ldns_rr_rdf(rr, 0);
			if (target && ldns_rdf_get_type(target) == LDNS_RDF_TYPE_DNAME &&
			    !in_set(set, nset, target)) {
				set[nset++] = target;
				grew = true;
			}
		}
	}
	dns_question_name(q, qname, sizeof(qname));
	for (size_t i = 0; i < n; i++) {
		const ldns_rr *rr = ldns_rr_list_rr(an, i);
		ldns_rr_type t = ldns_rr_get_type(rr);
		const ldns_rdf *rd;
		struct sockaddr_storage ss;

		if ((t != LDNS_RR_TYPE_A && t != LDNS_RR_TYPE_AAAA) || ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN ||
		    ldns_rr_rd_count(rr) != 1 || !in_set(set, nset, ldns_rr_owner(rr)))
			continue;
		rd = ldns_rr_rdf(rr, 0);
		memset(&ss, 0, sizeof(ss));
		if (t == LDNS_RR_TYPE_A && ldns_rdf_size(rd) == 4) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			a->sin_family = AF_INET;
			memcpy(&a->sin_addr, ldns_rdf_data(rd), 4);
		} else if (t == LDNS_RR_TYPE_AAAA && ldns_rdf_size(rd) == 16) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			a->sin6_family = AF_INET6;
			memcpy(&a->sin6_addr, ldns_rdf_data(rd), 16);
		} else {
			continue;
		}
		dns_names_add(names, (const struct sockaddr *)&ss, qname, ldns_rr_ttl(rr), now_ms);
	}
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * simple_answer() - the commonest answer, checked by hand: counts (1, 1..SIMPLE_MAX_RR, 0, 0), one
 * question of plain labels, then only A (4 bytes) or AAAA (16 bytes) records of class IN whose owner
 * is the pointer 0xc00c (the question's name), ending exactly at @len.  When @msg is one, its
 * verdict is in *@r and, if it answers @q and @names is set, its addresses are remembered.
 * Return: true when @msg has that shape (else nothing was done: libldns reads it).
 */
#define SIMPLE_MAX_RR 32
static bool simple_answer(const uint8_t *msg, size_t len, const struct dns_question *q,
			  struct dns_names *names, uint64_t now_ms, int *r)
{
	unsigned int an = be16(msg + 6);
	size_t i = DNS_HDR, qend;
	struct dns_question aq;
	char qname[DNS_NAME_MAX];

	if (len < DNS_HDR + 5 || be16(msg + 4) != 1 || an == 0 || an > SIMPLE_MAX_RR || be16(msg + 8) ||
	    be16(msg + 10))
		return false;
	while (i < len && msg[i]) {
		if (msg[i] > 63)
			return false;
		i += 1u + msg[i];
	}
	if (i >= len || i + 1 - DNS_HDR > DNS_WIRE_NAME_MAX || i + 5 > len)
		return false;
	qend = i + 5;
	for (unsigned int k = 0, o = (unsigned int)qend; k < an; k++) {   /* the shape first: all or nothing */
		unsigned int t, rdlen;

		if (len - o < 12 || msg[o] != 0xc0 || msg[o + 1] != DNS_HDR)
			return false;
		t = be16(msg + o + 2);
		rdlen = be16(msg + o + 10);
		if (be16(msg + o + 4) != 1 || !((t == 1 && rdlen == 4) || (t == 28 && rdlen == 16)) ||
		    len - o - 12 < rdlen)
			return false;
		o += 12 + rdlen;
		if (k + 1 == an && o != len)
			return false;
	}
	aq.len = (uint8_t)(i + 1 - DNS_HDR);
	memcpy(aq.name, msg + DNS_HDR, aq.len);
	aq.type = be16(msg + i + 1);
	aq.qclass = be16(msg + i + 3);
	if (!dns_question_eq(&aq, q)) {
		*r = -ENOMSG;
		return true;
	}
	*r = 0;
	if (!names)
		return true;
	dns_question_name(q, qname, sizeof(qname));
	for (size_t o = qend; o < len;) {
		struct sockaddr_storage ss;
		unsigned int rdlen = be16(msg + o + 10);

		memset(&ss, 0, sizeof(ss));
		if (rdlen == 4) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			a->sin_family = AF_INET;
			memcpy(&a->sin_addr, msg + o + 12, 4);
		} else {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			a->sin6_family = AF_INET6;
			memcpy(&a->sin6_addr, msg + o + 12, 16);
		}
		dns_names_add(names, (const struct sockaddr *)&ss, qname, be32(msg + o + 6), now_ms);
		o += 12 + rdlen;
	}
	return true;
}

int dns_check_answer(const uint8_t *msg, size_t len, const struct dns_question *q,
		     struct dns_names *names, uint64_t now_ms)
{
	struct dns_question aq;
	int r;

	if (len < DNS_HDR || !(msg[2] & FLAG_QR))
		return -EBADMSG;
	/* An answer without records (SERVFAIL, REFUSED, NODATA without SOA): nothing to walk. */
	if (plain_question(msg, len, &aq))
		return dns_question_eq(&aq, q) ? 0 : -ENOMSG;
	if (simple_answer(msg, len, q, names, now_ms, &r))
		return r;
	return dns_check_answer_full(msg, len, q, names, now_ms);
}

int dns_check_answer_full(const uint8_t *msg, size_t len, const struct dns_question *q,
			  struct dns_names *names, uint64_t now_ms)
{
	struct dns_question aq;
	ldns_pkt *p = NULL;
	int r;

	if (len < DNS_HDR || !(msg[2] & FLAG_QR))
		return -EBADMSG;
	if (ldns_wire2pkt(&p, msg, len) != LDNS_STATUS_OK)
		return -EBADMSG;
	r = question_of(p, &aq);
	if (r == 0 && !dns_question_eq(&aq, q))
		r = -ENOMSG;
	if (r == 0 && names)
		remember(p, q, names, now_ms);
	ldns_pkt_free(p);
	return r;
}

size_t dns_build_error(uint8_t *out, size_t size, const uint8_t *query, const struct dns_question *q,
		       int rcode)
{
	size_t n = DNS_HDR + (q ? (size_t)q->len + 4 : 0);

	if (size < n)
		return 0;
	memset(out, 0, DNS_HDR);
	out[0] = query[0];
	out[1] = query[1];
	out[2] = (uint8_t)(FLAG_QR | (query[2] & 0x79));   /* QR, the query's opcode and RD */
	out[3] = (uint8_t)(0x80 | (rcode & 0x0f));          /* RA, rcode */
	if (q) {
		out[5] = 1;
		memcpy(out + DNS_HDR, q->name, q->len);
		out[DNS_HDR + q->len] = (uint8_t)(q->type >> 8);
		out[DNS_HDR + q->len + 1] = (uint8_t)q->type;
		out[DNS_HDR + q->len + 2] = (uint8_t)(q->qclass >> 8);
		out[DNS_HDR + q->len + 3] = (uint8_t)q->qclass;
	}
	return n;
}
