/* Unit tests: the SYN gate - parsing queued SYNs, verdict messages, and the answer for each outcome. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libmnl/libmnl.h>

#include "netlink/nfq.h"
#include "relay/internal.h"

/* A SYN (or other flags) of @len bytes: IPv4 20 + TCP 20. */
static size_t syn4(uint8_t *p, uint8_t flags)
{
	memset(p, 0, 40);
	p[0] = 0x45;
	p[8] = 3;                            /* TTL: a traceroute -T probe */
	p[9] = IPPROTO_TCP;
	inet_pton(AF_INET, "10.240.255.2", p + 12);
	inet_pton(AF_INET, "198.51.100.10", p + 16);
	p[20] = 0xc0; p[21] = 0x01;          /* sport 49153 */
	p[22] = 0x00; p[23] = 0x50;          /* dport 80 */
	p[24] = 0xde; p[25] = 0xad; p[26] = 0xbe; p[27] = 0xef;
	p[32] = 0x50;
	p[33] = flags;
	return 40;
}

static void test_syn_v4(void **state)
{
	uint8_t p[64];
	struct nfq_syn s;
	char a[INET6_ADDRSTRLEN];

	(void)state;
	size_t n = syn4(p, 0x02);
	assert_int_equal(nfq_syn_parse(p, n, &s), 0);
	assert_int_equal(s.isn, 0xdeadbeef);
	assert_int_equal(s.ttl, 3);
	const struct sockaddr_in *src = (const void *)&s.src, *dst = (const void *)&s.dst;
	assert_int_equal(ntohs(src->sin_port), 49153);
	assert_int_equal(ntohs(dst->sin_port), 80);
	assert_string_equal(inet_ntop(AF_INET, &dst->sin_addr, a, sizeof(a)), "198.51.100.10");
	/* SYN+ECE+CWR (ECN setup) is still a SYN; SYN+ACK, RST, FIN are not */
	syn4(p, 0xc2);
	assert_int_equal(nfq_syn_parse(p, n, &s), 0);
	syn4(p, 0x12);
	assert_int_equal(nfq_syn_parse(p, n, &s), -EINVAL);
	syn4(p, 0x06);
	assert_int_equal(nfq_syn_parse(p, n, &s), -EINVAL);
	/* truncated, fragments, options making the header longer than the packet, other protocols */
	syn4(p, 0x02);
	assert_int_equal(nfq_syn_parse(p, 33, &s), -EINVAL);
	p[6] = 0x20;                          /* MF */
	assert_int_equal(nfq_syn_parse(p, n, &s), -EINVAL);
	syn4(p, 0x02);
	p[0] = 0x4f;                          /* IHL 60 > 40 bytes */
	assert_int_equal(nfq_syn_parse(p, n, &s), -EINVAL);
	syn4(p, 0x02);
	p[9] = IPPROTO_UDP;
	assert_int_equal(nfq_syn_parse(p, n, &s), -EINVAL);
	assert_int_equal(nfq_syn_parse(p, 0, &s), -EINVAL);
}

static void test_syn_v6_ext(void **state)
{
	uint8_t p[128];
	struct nfq_syn s;

	(void)state;
	memset(p, 0, sizeof(p));
	p[0] = 0x60;
	p[6] = 0;                             /* hop-by-hop first */
	p[7] = 64;                            /* hop limit */
	inet_pton(AF_INET6, "fd00:cf::2", p + 8);
	inet_pton(AF_INET6, "2001:db8:100::10", p + 24);
	p[40] = 60;                           /* then destination options */
	p[41] = 0;                            /* 8 bytes */
	p[48] = IPPROTO_TCP;
	p[49] = 1;                            /* 16 bytes */
	uint8_t *th = p + 64;
	th[2] = 0x01; th[3] = 0xbb;           /* 443 */
	th[7] = 7;
	th[13] = 0x02;
	assert_int_equal(nfq_syn_parse(p, 84, &s), 0);
	assert_int_equal(s.dst.ss_family, AF_INET6);
	assert_int_equal(ntohs(((struct sockaddr_in6 *)&s.dst)->sin6_port), 443);
	assert_int_equal(s.isn, 7);
	assert_int_equal(s.ttl, 64);
	assert_int_equal(relay_child_ttl(s.ttl), 0);          /* the namespace's default: the host's */
	assert_int_equal(relay_child_ttl(1), 1);              /* the child's own: carried */
	assert_int_equal(relay_child_ttl(255), 255);
	assert_int_equal(relay_child_ttl(-1), 0);             /* unknown */
	assert_int_equal(nfq_syn_parse(p, 83, &s), -EINVAL);   /* TCP header cut */
	p[48] = 44;                           /* a fragment header: not judged */
	assert_int_equal(nfq_syn_parse(p, 84, &s), -EINVAL);
	/* a loop of extension headers that claims more than the packet holds */
	p[48] = 0;
	p[49] = 255;
	assert_int_equal(nfq_syn_parse(p, 84, &s), -EINVAL);
}

/* An IPv4 ICMP echo request of @data_len bytes of data (ICMP checksum left 0: not judged). */
static size_t echo4(uint8_t *p, size_t data_len)
{
	memset(p, 0, 28 + data_len);
	p[0] = 0x45;
	p[8] = 1;                             /* TTL 1: traceroute's first probe */
	p[9] = IPPROTO_ICMP;
	inet_pton(AF_INET, "10.240.255.2", p + 12);
	inet_pton(AF_INET, "198.51.100.10", p + 16);
	p[20] = 8;
	p[24] = 0xab; p[25] = 0xcd;           /* identifier */
	p[26] = 0x00; p[27] = 0x05;           /* sequence */
	for (size_t i = 0; i < data_len; i++)
		p[28 + i] = (uint8_t)i;
	return 28 + data_len;
}

static void test_echo_v4(void **state)
{
	uint8_t p[128];
	struct nfq_echo e;
	char a[INET6_ADDRSTRLEN];
	size_t n;

	(void)state;
	n = echo4(p, 56);
	assert_int_equal(nfq_echo_parse(p, n, &e), 0);
	assert_int_equal(e.dst.ss_family, AF_INET);
	assert_string_equal(inet_ntop(AF_INET, &((struct sockaddr_in *)&e.dst)->sin_addr, a, sizeof(a)),
			    "198.51.100.10");
	assert_string_equal(inet_ntop(AF_INET, &((struct sockaddr_in *)&e.src)->sin_addr, a, sizeof(a)),
			    "10.240.255.2");
	assert_int_equal(e.ttl, 1);
	assert_int_equal(e.id, 0xabcd);
	assert_int_equal(e.seq, 5);
	assert_ptr_equal(e.data, p + 28);
	assert_int_equal(e.data_len, 56);
	assert_int_equal(nfq_echo_parse(p, 28, &e), 0);        /* no data at all */
	assert_int_equal(e.data_len, 0);
	assert_int_equal(nfq_echo_parse(p, 27, &e), -EINVAL);  /* ICMP header cut */
	p[20] = 0;                            /* an echo reply is not ours to send */
	assert_int_equal(nfq_echo_parse(p, n, &e), -EINVAL);
	echo4(p, 56);
	p[21] = 1;                            /* a code other than 0 */
	assert_int_equal(nfq_echo_parse(p, n, &e), -EINVAL);
	echo4(p, 56);
	p[7] = 1;                             /* a fragment (offset 8) */
	assert_int_equal(nfq_echo_parse(p, n, &e), -EINVAL);
	echo4(p, 56);
	p[9] = IPPROTO_ICMPV6;                /* ICMPv6's echo type over IPv4 */
	p[20] = 128;
	assert_int_equal(nfq_echo_parse(p, n, &e), -EINVAL);
	echo4(p, 56);
	p[0] = 0x46;                          /* options: the ICMP header moves */
	assert_int_equal(nfq_echo_parse(p, n, &e), -EINVAL);   /* ...to bytes that are no echo */
	assert_int_equal(nfq_echo_parse(p, 0, &e), -EINVAL);
}

static void test_echo_v6_ext(void **state)
{
	uint8_t p[128];
	struct nfq_echo e;

	(void)state;
	memset(p, 0, sizeof(p));
	p[0] = 0x60;
	p[6] = 0;                             /* hop-by-hop, then ICMPv6 */
	p[7] = 2;                             /* hop limit */
	inet_pton(AF_INET6, "fd42:6368:696c::2", p + 8);
	inet_pton(AF_INET6, "2001:db8:100::10", p + 24);
	p[40] = IPPROTO_ICMPV6;
	p[48] = 128;
	p[52] = 0x12; p[53] = 0x34;
	p[54] = 0x00; p[55] = 0x02;
	memcpy(p + 56, "payload", 7);
	assert_int_equal(nfq_echo_parse(p, 63, &e), 0);
	assert_int_equal(e.dst.ss_family, AF_INET6);
	assert_int_equal(e.ttl, 2);
	assert_int_equal(e.id, 0x1234);
	assert_int_equal(e.seq, 2);
	assert_int_equal(e.data_len, 7);
	assert_memory_equal(e.data, "payload", 7);
	assert_int_equal(nfq_echo_parse(p, 55, &e), -EINVAL);  /* ICMPv6 header cut */
	p[48] = 129;                          /* echo reply */
	assert_int_equal(nfq_echo_parse(p, 63, &e), -EINVAL);
	p[48] = 8;                            /* IPv4's echo type over ICMPv6 */
	assert_int_equal(nfq_echo_parse(p, 63, &e), -EINVAL);
	p[48] = 128;
	p[40] = 44;                           /* a fragment header */
	assert_int_equal(nfq_echo_parse(p, 63, &e), -EINVAL);
	p[40] = IPPROTO_ICMP;                 /* ICMP (v4) inside IPv6 */
	assert_int_equal(nfq_echo_parse(p, 63, &e), -EINVAL);
}

/* A verdict message parses back into what was asked, and room is respected. */
static void test_verdict_message(void **state)
{
	uint8_t buf[256];
	size_t n;
	const struct nlattr *a;
	bool vh = false, mark = false;

	(void)state;
	assert_int_equal(nfq_verdict_put(buf, 20, 0, 1, NF_ACCEPT, 0), 0);
	n = nfq_verdict_put(buf, sizeof(buf), 0, 0x01020304, NF_ACCEPT, 0x12);
	assert_true(n > 0);
	const struct nlmsghdr *h = (const void *)buf;
	assert_int_equal(h->nlmsg_len, n);
	assert_int_equal(h->nlmsg_type, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT);
	mnl_attr_for_each(a, h, sizeof(struct nfgenmsg)) {
		if (mnl_attr_get_type(a) == NFQA_VERDICT_HDR) {
			const struct nfqnl_msg_verdict_hdr *v = mnl_attr_get_payload(a);

			assert_int_equal(ntohl(v->id), 0x01020304);
			assert_int_equal(ntohl(v->verdict), NF_ACCEPT);
			vh = true;
		} else if (mnl_attr_get_type(a) == NFQA_MARK) {
			assert_int_equal(ntohl(mnl_attr_get_u32(a)), 0x12);
			mark = true;
		}
	}
	assert_true(vh && mark);
}

/* A packet message as the kernel sends it parses; other messages are skipped, broken ones refused. */
static void test_packet_message(void **state)
{
	uint8_t buf[512], pkt[64];
	struct nlmsghdr *h = mnl_nlmsg_put_header(buf);
	struct nfqnl_msg_packet_hdr ph = { .packet_id = htonl(42) };
	struct nfq_packet p;

	(void)state;
	h->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;
	mnl_nlmsg_put_extra_header(h, sizeof(struct nfgenmsg));
	mnl_attr_put(h, NFQA_PACKET_HDR, sizeof(ph), &ph);
	mnl_attr_put(h, NFQA_PAYLOAD, syn4(pkt, 0x02), pkt);
	assert_int_equal(nfq_parse(h, h->nlmsg_len, &p), 1);
	assert_int_equal(p.id, 42);
	assert_int_equal(p.len, 40);
	h->nlmsg_type = NLMSG_ERROR;
	assert_int_equal(nfq_parse(h, h->nlmsg_len, &p), 0);
	h->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;
	assert_int_equal(nfq_parse(h, h->nlmsg_len - 1, &p), 0);   /* claims more than there is */
	h->nlmsg_len = mnl_nlmsg_size(sizeof(struct nfgenmsg));    /* no attributes */
	assert_int_equal(nfq_parse(h, h->nlmsg_len, &p), -EBADMSG);
}

/* An unaligned length whose last attribute reaches past it (found by fuzz_nfq): not parsed. */
static void test_packet_attribute_past_length(void **state)
{
	uint8_t buf[512], pkt[64];
	struct nlmsghdr *h = mnl_nlmsg_put_header(buf);
	struct nfqnl_msg_packet_hdr ph = { .packet_id = htonl(7) };
	struct nfq_packet p;

	(void)state;
	h->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;
	mnl_nlmsg_put_extra_header(h, sizeof(struct nfgenmsg));
	mnl_attr_put(h, NFQA_PACKET_HDR, sizeof(ph), &ph);
	mnl_attr_put(h, NFQA_PAYLOAD, 8, pkt);
	assert_int_equal(nfq_parse(h, h->nlmsg_len, &p), 1);
	h->nlmsg_len -= 3;                                          /* cuts the payload attribute */
	assert_int_equal(nfq_parse(h, h->nlmsg_len, &p), -EBADMSG);
}

/* Every outcome answers the SYN the way the child would have been answered without childflow. */
static void test_replies(void **state)
{
	(void)state;
	assert_int_equal(gate_reply_for(FLOW_UP_FAILED, ECONNREFUSED), GATE_REFUSE);
	assert_int_equal(gate_reply_for(FLOW_UP_FAILED, EHOSTUNREACH), GATE_HOST_UNREACH);
	assert_int_equal(gate_reply_for(FLOW_UP_FAILED, ENETUNREACH), GATE_NET_UNREACH);
	assert_int_equal(gate_reply_for(FLOW_UP_FAILED, EACCES), GATE_PROHIBIT);
	assert_int_equal(gate_reply_for(FLOW_UP_FAILED, ETIMEDOUT), GATE_DROP);
	assert_int_equal(gate_reply_for(FLOW_UP_TIMEOUT, ETIMEDOUT), GATE_DROP);
	assert_int_equal(gate_reply_for(FLOW_DENIED, EACCES), GATE_REFUSE);
	assert_int_equal(gate_reply_for(FLOW_EVICTED, ETIMEDOUT), GATE_DROP);
	assert_int_equal(gate_reply_for(FLOW_NO_RESOURCES, EMFILE), GATE_DROP);
	assert_int_equal(gate_reply_for(FLOW_CUT_AT_EXIT, 0), GATE_DROP);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_syn_v4),
		cmocka_unit_test(test_syn_v6_ext),
		cmocka_unit_test(test_echo_v4),
		cmocka_unit_test(test_echo_v6_ext),
		cmocka_unit_test(test_verdict_message),
		cmocka_unit_test(test_packet_message),
		cmocka_unit_test(test_packet_attribute_past_length),
		cmocka_unit_test(test_replies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
