/* SPDX-License-Identifier: MIT */
/*
 * dns/wire — DNS messages as the forwarder handles them: which queries it forwards, which answers
 * it accepts, the error answers it makes itself, and the 2-byte framing of DNS over TCP.
 *
 * Every byte comes from the child or from an upstream resolver, so nothing here trusts a length or
 * a count: messages with records are parsed with libldns (ldns_wire2pkt: bounds-checked,
 * compression pointers counted).  Only the commonest shapes are read by hand, on the hot path: a
 * header whose counts are (1, 0, 0, 0) and one question of plain labels ending the message (what
 * glibc, musl and most stub resolvers send, and record-less answers such as SERVFAIL), and an
 * answer of that question followed only by A/AAAA records of class IN owned by the question's name
 * through the pointer 0xc00c (counts (1, 1..32, 0, 0)); anything else goes to libldns, and the
 * fuzzer checks that both readings agree (verdict and remembered addresses).  Pure functions (no I/O);
 * unit-tested (tests/unit/test_dns.c) and fuzzed (tests/fuzz/fuzz_dns.c).
 *
 * What the child may send (dns_check_query()):
 *   shorter than a header, QR set (an answer), longer than DNS_QUERY_MAX   -> dropped, unanswered
 *   opcode other than QUERY (NOTIFY, UPDATE, ...)                          -> NOTIMP
 *   not parseable (truncated names, compression loops, counts beyond the
 *   message), or not exactly one question                                  -> FORMERR
 *   one question, parseable                                                -> forwarded as it is
 * (FORMERR rather than silence: a client learns at once that it sent garbage, and the answer is a
 * bare header, never bigger than the query, so it cannot amplify anything.)
 */
#ifndef CHILDFLOW_DNS_WIRE_H
#define CHILDFLOW_DNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns/names.h"

#define DNS_HDR 12
#define DNS_MSG_MAX 65535        /* over TCP (and UDP with EDNS) */
#define DNS_QUERY_MAX 4096       /* a query is a question and an OPT record: larger is not one */
#define DNS_WIRE_NAME_MAX 255

#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NOTIMP 4
#define DNS_RCODE_REFUSED 5

/* A question as the client wrote it (the name in wire form, uncompressed, its case kept). */
struct dns_question {
	uint8_t name[DNS_WIRE_NAME_MAX];
	uint8_t len;
	uint16_t type, qclass;
};

enum dns_verdict { DNS_FORWARD, DNS_DROP, DNS_FORMERR, DNS_NOTIMP };

static inline uint16_t dns_id(const uint8_t *msg)
{
	return (uint16_t)(msg[0] << 8 | msg[1]);
}

static inline void dns_set_id(uint8_t *msg, uint16_t id)
{
	msg[0] = (uint8_t)(id >> 8);
	msg[1] = (uint8_t)id;
}

/* The header's RCODE (the low 4 bits; extended rcodes live in an OPT record). */
static inline int dns_rcode(const uint8_t *msg)
{
	return msg[3] & 0x0f;
}

/* An answer after which a stub resolver asks the next nameserver (glibc's res_send does). */
static inline bool dns_rcode_moves_on(const uint8_t *msg)
{
	int r = dns_rcode(msg);

	return r == DNS_RCODE_SERVFAIL || r == DNS_RCODE_NOTIMP || r == DNS_RCODE_REFUSED;
}

/*
 * dns_check_query() - what to do with @len bytes the child sent as a query (see the top).
 * Return: the verdict; on DNS_FORWARD @q is its question.
 */
enum dns_verdict dns_check_query(const uint8_t *msg, size_t len, struct dns_question *q);

/* The same verdict, always through libldns (no hand-read shortcut): for the fuzzer's comparison. */
enum dns_verdict dns_check_query_full(const uint8_t *msg, size_t len, struct dns_question *q);

/* Same name (ASCII case-insensitive, as DNS compares), type and class. */
bool dns_question_eq(const struct dns_question *a, const struct dns_question *b);

/*
 * dns_check_answer() - is @msg an answer to @q?  It must parse, have QR set and exactly the
 * question @q (a resolver answers with the question it was asked).  Truncated (TC) answers are
 * answers.  When it is and @names is not NULL, its A/AAAA records are remembered under @q's name
 * (CNAME chains from the question's name are followed) with their TTLs, as of @now_ms.
 * Return: 0, or -EBADMSG (not a DNS message, or not an answer) / -ENOMSG (an answer to something else).
 */
int dns_check_answer(const uint8_t *msg, size_t len, const struct dns_question *q,
		     struct dns_names *names, uint64_t now_ms);

/* The same, always through libldns (no hand-read shortcut): for the fuzzer's comparison. */
int dns_check_answer_full(const uint8_t *msg, size_t len, const struct dns_question *q,
			  struct dns_names *names, uint64_t now_ms);

/*
 * dns_build_error() - the answer the forwarder gives itself to @query (@qlen >= DNS_HDR bytes):
 * the query's ID, opcode and RD, QR and RA set, @rcode, and @q as its one question (or none when
 * @q is NULL, as for FORMERR).  Return: its length, or 0 when @size is too small.
 */
size_t dns_build_error(uint8_t *out, size_t size, const uint8_t *query, const struct dns_question *q,
		       int rcode);

/* @q's name in presentation form, lowercased, no trailing dot ("" for the root) into @buf. */
void dns_question_name(const struct dns_question *q, char *buf, size_t size);

/*
 * dns_frame_len() - DNS over TCP: a message is a 2-byte big-endian length and that many bytes.
 * Return: the whole frame's length when @buf (@len bytes) starts with a complete frame, else 0.
 */
static inline size_t dns_frame_len(const uint8_t *buf, size_t len)
{
	size_t n;

	if (len < 2)
		return 0;
	n = (size_t)buf[0] << 8 | buf[1];
	return len >= n + 2 ? n + 2 : 0;
}

#endif
