/* SPDX-License-Identifier: MIT */
#include "nft/gateway.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <libnftnl/batch.h>

/* ---------- expression helpers (each appends one expression to @r) ---------- */

/* A rule under construction: an expression that cannot be allocated (out of memory, or a libnftnl
 * without it, such as tproxy) fails the whole ruleset rather than leaving a rule without it. */
struct rb {
	struct nftnl_rule *r;
	bool failed;
};

static void add_expr(struct rb *rb, struct nftnl_expr *e)
{
	if (e)
		nftnl_rule_add_expr(rb->r, e);
	else
		rb->failed = true;
}

static void meta_load(struct rb *rb, uint32_t key)
{
	struct nftnl_expr *e = nftnl_expr_alloc("meta");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
	}
	add_expr(rb, e);
}

static void meta_set(struct rb *rb, uint32_t key)
{
	struct nftnl_expr *e = nftnl_expr_alloc("meta");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_SREG, NFT_REG_1);
	}
	add_expr(rb, e);
}

static void cmp(struct rb *rb, uint32_t op, const void *data, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("cmp");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
		nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
	}
	add_expr(rb, e);
}

static void cmp_u8(struct rb *rb, uint8_t v)
{
	cmp(rb, NFT_CMP_EQ, &v, sizeof(v));
}

static void imm_data(struct rb *rb, const void *data, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("immediate");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
		nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, data, len);
	}
	add_expr(rb, e);
}

static void verdict(struct rb *rb, int v)
{
	struct nftnl_expr *e = nftnl_expr_alloc("immediate");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, (uint32_t)v);
	}
	add_expr(rb, e);
}

/* Load @len bytes at @offset of the transport header into reg 1. */
static void transport_load(struct rb *rb, uint32_t offset, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("payload");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_TRANSPORT_HEADER);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
	}
	add_expr(rb, e);
}

static void icmpv6_type(struct rb *rb, uint8_t type)
{
	meta_load(rb, NFT_META_NFPROTO);
	cmp_u8(rb, NFPROTO_IPV6);
	meta_load(rb, NFT_META_L4PROTO);
	cmp_u8(rb, IPPROTO_ICMPV6);
	transport_load(rb, 0, 1);
	cmp_u8(rb, type);
}

/* meta nfproto FAMILY meta l4proto PROTO tproxy to :PORT meta mark set FWMARK accept */
static void tproxy(struct rb *rb, uint8_t nfproto, uint8_t l4proto, uint16_t port)
{
	uint16_t nport = htons(port);
	uint32_t mark = GATEWAY_FWMARK;
	struct nftnl_expr *e;

	meta_load(rb, NFT_META_NFPROTO);
	cmp_u8(rb, nfproto);
	meta_load(rb, NFT_META_L4PROTO);
	cmp_u8(rb, l4proto);
	imm_data(rb, &nport, sizeof(nport));
	e = nftnl_expr_alloc("tproxy");
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_TPROXY_FAMILY, nfproto);
		nftnl_expr_set_u32(e, NFTNL_EXPR_TPROXY_REG_PORT, NFT_REG_1);
	}
	add_expr(rb, e);
	imm_data(rb, &mark, sizeof(mark));
	meta_set(rb, NFT_META_MARK);
	verdict(rb, NF_ACCEPT);
}

/* meta nfproto FAMILY udp dport 53 tproxy to :PORT meta mark set FWMARK accept */
static void tproxy_dns(struct rb *rb, uint8_t nfproto, uint16_t port)
{
	uint16_t dport = htons(53);

	meta_load(rb, NFT_META_L4PROTO);
	cmp_u8(rb, IPPROTO_UDP);
	transport_load(rb, 2, 2);   /* udphdr.dest */
	cmp(rb, NFT_CMP_EQ, &dport, sizeof(dport));
	tproxy(rb, nfproto, IPPROTO_UDP, port);
}

/* meta l4proto tcp meta mark MARK reject with TYPE/CODE */
static void reject_marked(struct rb *rb, uint32_t mark, uint32_t type, uint8_t code)
{
	struct nftnl_expr *e;

	meta_load(rb, NFT_META_L4PROTO);
	cmp_u8(rb, IPPROTO_TCP);
	meta_load(rb, NFT_META_MARK);
	cmp(rb, NFT_CMP_EQ, &mark, sizeof(mark));
	e = nftnl_expr_alloc("reject");
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, type);
		nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, code);
	}
	add_expr(rb, e);
}

/* queue num @queue (no bypass: fail closed), as the native expression or the xtables target */
static void queue_to(struct rb *rb, const struct gateway_rules *g, uint16_t queue)
{
	struct nftnl_expr *e;

	if (g->gate == GATEWAY_GATE_NATIVE) {
		e = nftnl_expr_alloc("queue");
		if (e) {
			nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_NUM, queue);
			nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_TOTAL, 1);
			nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_FLAGS, 0);
		}
		add_expr(rb, e);
		return;
	}
	/* struct xt_NFQ_info_v3 { u16 queuenum, queues_total, flags; } padded to XT_ALIGN (8) */
	uint16_t *info = calloc(1, 8);

	e = nftnl_expr_alloc("target");
	if (e && info) {
		info[0] = queue;
		info[1] = 1;
		nftnl_expr_set_str(e, NFTNL_EXPR_TG_NAME, "NFQUEUE");
		nftnl_expr_set_u32(e, NFTNL_EXPR_TG_REV, 3);
		nftnl_expr_set(e, NFTNL_EXPR_TG_INFO, info, 8);   /* libnftnl takes ownership */
	} else {
		free(info);
		if (e)
			nftnl_expr_free(e);
		e = NULL;
	}
	add_expr(rb, e);   /* NOLINT(clang-analyzer-unix.Malloc): the expression owns info now */
}

static void iifname_is(struct rb *rb, const struct gateway_rules *g)
{
	char name[IFNAMSIZ];

	memset(name, 0, sizeof(name));
	snprintf(name, sizeof(name), "%s", g->ifname);
	meta_load(rb, NFT_META_IIFNAME);
	cmp(rb, NFT_CMP_EQ, name, sizeof(name));
}

/* iifname IF meta l4proto tcp tcp flags & (fin|syn|rst|ack) == syn meta mark 0 queue num Q */
static void gate_rule(struct rb *rb, const struct gateway_rules *g)
{
	uint32_t zero = 0, mask = 0x17;
	uint8_t syn = 0x02;
	struct nftnl_expr *e;

	iifname_is(rb, g);
	meta_load(rb, NFT_META_L4PROTO);
	cmp_u8(rb, IPPROTO_TCP);
	transport_load(rb, 13, 1);
	e = nftnl_expr_alloc("bitwise");
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, 1);
		nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &mask, 1);
		nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &zero, 1);
	}
	add_expr(rb, e);
	cmp_u8(rb, syn);
	meta_load(rb, NFT_META_MARK);
	cmp(rb, NFT_CMP_EQ, &zero, sizeof(zero));
	queue_to(rb, g, BE_GATE_QUEUE);
}

/* meta nfproto FAMILY meta l4proto PROTO TYPE == echo-request */
static void echo_request(struct rb *rb, uint8_t nfproto)
{
	meta_load(rb, NFT_META_NFPROTO);
	cmp_u8(rb, nfproto);
	meta_load(rb, NFT_META_L4PROTO);
	cmp_u8(rb, nfproto == NFPROTO_IPV4 ? IPPROTO_ICMP : IPPROTO_ICMPV6);
	transport_load(rb, 0, 1);
	cmp_u8(rb, nfproto == NFPROTO_IPV4 ? 8 : ICMP6_ECHO_REQUEST);
}

/* echo-request reject with icmpx admin-prohibited */
static void echo_reject(struct rb *rb, uint8_t nfproto)
{
	struct nftnl_expr *e;

	echo_request(rb, nfproto);
	e = nftnl_expr_alloc("reject");
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
		nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, NFT_REJECT_ICMPX_ADMIN_PROHIBITED);
	}
	add_expr(rb, e);
}

/* ---------- the batch ---------- */

enum rule_id {
	R_LO, R_FOREIGN, R_NS, R_NA, R_RS, R_REJ_RESET, R_REJ_HOST, R_REJ_NET, R_REJ_ADMIN, R_DNS4, R_DNS6,
	R_TCP4, R_TCP6, R_UDP4, R_UDP6, R_REJ_ECHO4, R_REJ_ECHO6, R_DROP,
	R_GATE, R_ECHO4, R_ECHO6, R_COUNT,   /* the gate chain's */
};

static bool rule_wanted(enum rule_id id, const struct gateway_rules *g)
{
	if (id >= R_GATE && g->gate == GATEWAY_GATE_NONE)
		return false;
	if ((id == R_ECHO4 || id == R_ECHO6) && !g->echo)
		return false;
	return id < R_COUNT;
}

static void build_rule(struct rb *rb, enum rule_id id, const struct gateway_rules *g)
{
	char name[IFNAMSIZ];
	uint32_t lo = 1;   /* lo is always ifindex 1 in a network namespace */

	switch (id) {
	case R_LO:
		meta_load(rb, NFT_META_IIF);
		cmp(rb, NFT_CMP_EQ, &lo, sizeof(lo));
		verdict(rb, NF_ACCEPT);
		break;
	case R_FOREIGN:
		memset(name, 0, sizeof(name));
		snprintf(name, sizeof(name), "%s", g->ifname);
		meta_load(rb, NFT_META_IIFNAME);
		cmp(rb, NFT_CMP_NEQ, name, sizeof(name));
		verdict(rb, NF_DROP);
		break;
	case R_NS:
		icmpv6_type(rb, ND_NEIGHBOR_SOLICIT);
		verdict(rb, NF_ACCEPT);
		break;
	case R_NA:
		icmpv6_type(rb, ND_NEIGHBOR_ADVERT);
		verdict(rb, NF_ACCEPT);
		break;
	case R_RS:
		icmpv6_type(rb, ND_ROUTER_SOLICIT);
		verdict(rb, NF_ACCEPT);
		break;
	case R_DNS4:
		tproxy_dns(rb, NFPROTO_IPV4, g->dns_port);
		break;
	case R_DNS6:
		tproxy_dns(rb, NFPROTO_IPV6, g->dns_port);
		break;
	case R_REJ_RESET:
		reject_marked(rb, BE_GATE_MARK_RESET, NFT_REJECT_TCP_RST, 0);
		break;
	case R_REJ_HOST:
		reject_marked(rb, BE_GATE_MARK_HOST_UNREACH, NFT_REJECT_ICMPX_UNREACH, NFT_REJECT_ICMPX_HOST_UNREACH);
		break;
	case R_REJ_NET:
		reject_marked(rb, BE_GATE_MARK_NET_UNREACH, NFT_REJECT_ICMPX_UNREACH, NFT_REJECT_ICMPX_NO_ROUTE);
		break;
	case R_REJ_ADMIN:
		reject_marked(rb, BE_GATE_MARK_PROHIBITED, NFT_REJECT_ICMPX_UNREACH,
			      NFT_REJECT_ICMPX_ADMIN_PROHIBITED);
		break;
	case R_GATE:
		gate_rule(rb, g);
		break;
	case R_ECHO4:
	case R_ECHO6:
		iifname_is(rb, g);
		echo_request(rb, id == R_ECHO4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
		queue_to(rb, g, BE_ECHO_QUEUE);
		break;
	case R_REJ_ECHO4:
	case R_REJ_ECHO6:
		echo_reject(rb, id == R_REJ_ECHO4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
		break;
	case R_TCP4:
		tproxy(rb, NFPROTO_IPV4, IPPROTO_TCP, g->tcp_port);
		break;
	case R_TCP6:
		tproxy(rb, NFPROTO_IPV6, IPPROTO_TCP, g->tcp_port);
		break;
	case R_UDP4:
		tproxy(rb, NFPROTO_IPV4, IPPROTO_UDP, g->udp_port);
		break;
	case R_UDP6:
		tproxy(rb, NFPROTO_IPV6, IPPROTO_UDP, g->udp_port);
		break;
	case R_DROP:
		add_expr(rb, nftnl_expr_alloc("counter"));
		verdict(rb, NF_DROP);
		break;
	case R_COUNT:
		break;
	}
}

/* A base chain of the prerouting hook in our table. */
static void add_chain(struct mnl_nlmsg_batch *b, struct nftnl_chain *c, const char *name, int prio,
		      uint32_t policy, uint32_t seq)
{
	struct nlmsghdr *nlh;

	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, GATEWAY_TABLE);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, "filter");
	nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, NF_INET_PRE_ROUTING);
	nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, prio);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, policy);
	nlh = nftnl_chain_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWCHAIN, NFPROTO_INET,
					  NLM_F_CREATE, seq);
	nftnl_chain_nlmsg_build_payload(nlh, c);
	mnl_nlmsg_batch_next(b);
}

int gateway_rules_batch(const struct gateway_rules *g, void *buf, size_t len, uint32_t seq,
			uint32_t *last_seq)
{
	struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, len);
	struct nftnl_table *t = nftnl_table_alloc();
	struct nftnl_chain *c = nftnl_chain_alloc();
	struct nlmsghdr *nlh;
	int rc = 0;

	if (!b || !t || !c) {
		rc = -ENOMEM;
		goto out;
	}
	/* Each message must fit before the next is started: the batch helper only checks after. */
#define ROOM() do { if (mnl_nlmsg_batch_size(b) + 4096 > len) { rc = -ENOSPC; goto out; } } while (0)
	ROOM();
	nftnl_batch_begin(mnl_nlmsg_batch_current(b), seq++);
	mnl_nlmsg_batch_next(b);

	nftnl_table_set_str(t, NFTNL_TABLE_NAME, GATEWAY_TABLE);
	nlh = nftnl_table_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWTABLE, NFPROTO_INET,
					  NLM_F_CREATE, seq++);
	nftnl_table_nlmsg_build_payload(nlh, t);
	mnl_nlmsg_batch_next(b);

	ROOM();
	add_chain(b, c, GATEWAY_CHAIN, -150, NF_DROP, seq++);   /* mangle */
	if (g->gate != GATEWAY_GATE_NONE) {
		struct nftnl_chain *gc = nftnl_chain_alloc();

		ROOM();
		if (!gc) {
			rc = -ENOMEM;
			goto out;
		}
		add_chain(b, gc, GATEWAY_GATE_CHAIN, -300, NF_ACCEPT, seq++);   /* raw: before mangle */
		nftnl_chain_free(gc);
	}

	int last = 0;

	for (int id = 0; id < R_COUNT; id++)
		if (rule_wanted((enum rule_id)id, g))
			last = id;
	for (int id = 0; id <= last; id++) {
		if (!rule_wanted((enum rule_id)id, g))
			continue;
		struct nftnl_rule *r = nftnl_rule_alloc();

		if (!r) {
			rc = -ENOMEM;
			goto out;
		}
		struct rb rb = { .r = r };

		if (mnl_nlmsg_batch_size(b) + 4096 > len) {
			nftnl_rule_free(r);
			rc = -ENOSPC;
			goto out;
		}
		nftnl_rule_set_str(r, NFTNL_RULE_TABLE, GATEWAY_TABLE);
		nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, id >= R_GATE ? GATEWAY_GATE_CHAIN : GATEWAY_CHAIN);
		nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_INET);
		build_rule(&rb, (enum rule_id)id, g);
		if (rb.failed) {
			nftnl_rule_free(r);
			rc = -EOPNOTSUPP;
			goto out;
		}
		*last_seq = seq;
		nlh = nftnl_rule_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWRULE, NFPROTO_INET,
						 NLM_F_APPEND | NLM_F_CREATE |
						 (id == last ? NLM_F_ACK : 0), seq++);
		nftnl_rule_nlmsg_build_payload(nlh, r);
		nftnl_rule_free(r);
		mnl_nlmsg_batch_next(b);
	}
	ROOM();
	nftnl_batch_end(mnl_nlmsg_batch_current(b), seq++);
	mnl_nlmsg_batch_next(b);
	rc = (int)mnl_nlmsg_batch_size(b);
#undef ROOM
out:
	if (c)
		nftnl_chain_free(c);
	if (t)
		nftnl_table_free(t);
	if (b)
		mnl_nlmsg_batch_stop(b);
	return rc;
}

/* Read until the ACK of @last_seq, or the first error.  Returns 0 or -errno. */
static int wait_ack(struct mnl_socket *nl, uint32_t last_seq)
{
	char buf[8192];

	for (;;) {
		ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));

		if (n < 0)
			return -errno;
		int left = (int)n;

		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; mnl_nlmsg_ok(h, left);
		     h = mnl_nlmsg_next(h, &left)) {
			if (h->nlmsg_type != NLMSG_ERROR)
				continue;
			const struct nlmsgerr *e = mnl_nlmsg_get_payload(h);

			if (e->error)
				return e->error;
			if (h->nlmsg_seq == last_seq)
				return 0;
		}
	}
}

int gateway_rules_load(const struct gateway_rules *g, char *err, size_t errlen)
{
	char batch[16384];   /* the ruleset is about 2 KiB; -ENOSPC says if it ever outgrows this */
	uint32_t last_seq = 0;
	struct mnl_socket *nl;
	int len, r;

	len = gateway_rules_batch(g, batch, sizeof(batch), (uint32_t)time(NULL), &last_seq);
	if (len < 0) {
		snprintf(err, errlen, "cannot build the ruleset: %s", strerror(-len));
		return len;
	}
	nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
	if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot open nfnetlink: %s", strerror(-r));
		if (nl)
			mnl_socket_close(nl);
		return r;
	}
	if (mnl_socket_sendto(nl, batch, (size_t)len) < 0)
		r = -errno;
	else
		r = wait_ack(nl, last_seq);
	mnl_socket_close(nl);
	if (r < 0) {
		snprintf(err, errlen, "the kernel refused it: %s", strerror(-r));
		return r;
	}
	return 0;
}
