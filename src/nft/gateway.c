/* SPDX-License-Identifier: MIT */
#include "nft/gateway.h"
#include "nft/expr.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/icmp6.h>
#include <netinet/ip_icmp.h>
#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>

static void icmpv6_type(struct nft_rb *rb, uint8_t type)
{
	nft_meta_load(rb, NFT_META_NFPROTO);
	nft_cmp_u8(rb, NFPROTO_IPV6);
	nft_meta_load(rb, NFT_META_L4PROTO);
	nft_cmp_u8(rb, IPPROTO_ICMPV6);
	nft_transport_load(rb, 0, 1);
	nft_cmp_u8(rb, type);
}

/* meta nfproto FAMILY meta l4proto PROTO tproxy to :PORT meta mark set FWMARK accept */
static void tproxy(struct nft_rb *rb, uint8_t nfproto, uint8_t l4proto, uint16_t port)
{
	uint16_t nport = htons(port);
	uint32_t mark = GATEWAY_FWMARK;
	struct nftnl_expr *e;

	nft_meta_load(rb, NFT_META_NFPROTO);
	nft_cmp_u8(rb, nfproto);
	nft_meta_load(rb, NFT_META_L4PROTO);
	nft_cmp_u8(rb, l4proto);
	nft_imm_data(rb, &nport, sizeof(nport));
	e = nftnl_expr_alloc("tproxy");
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_TPROXY_FAMILY, nfproto);
		nftnl_expr_set_u32(e, NFTNL_EXPR_TPROXY_REG_PORT, NFT_REG_1);
	}
	nft_add_expr(rb, e);
	nft_imm_data(rb, &mark, sizeof(mark));
	nft_meta_set(rb, NFT_META_MARK);
	nft_verdict(rb, NF_ACCEPT);
}

/* meta nfproto FAMILY udp dport 53 tproxy to :PORT meta mark set FWMARK accept */
static void tproxy_dns(struct nft_rb *rb, uint8_t nfproto, uint16_t port)
{
	uint16_t dport = htons(53);

	nft_meta_load(rb, NFT_META_L4PROTO);
	nft_cmp_u8(rb, IPPROTO_UDP);
	nft_transport_load(rb, 2, 2);   /* udphdr.dest */
	nft_cmp(rb, NFT_CMP_EQ, &dport, sizeof(dport));
	tproxy(rb, nfproto, IPPROTO_UDP, port);
}

/* meta l4proto tcp meta mark MARK reject with TYPE/CODE */
static void reject_marked(struct nft_rb *rb, uint32_t mark, uint32_t type, uint8_t code)
{
	struct nftnl_expr *e;

	nft_meta_load(rb, NFT_META_L4PROTO);
	nft_cmp_u8(rb, IPPROTO_TCP);
	nft_meta_load(rb, NFT_META_MARK);
	nft_cmp(rb, NFT_CMP_EQ, &mark, sizeof(mark));
	e = nftnl_expr_alloc("reject");
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, type);
		nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, code);
	}
	nft_add_expr(rb, e);
}

/* queue num @queue (no bypass: fail closed), as the native expression or the xtables target */
static void queue_to(struct nft_rb *rb, const struct gateway_rules *g, uint16_t queue)
{
	struct nftnl_expr *e;

	if (g->gate == GATEWAY_GATE_NATIVE) {
		e = nftnl_expr_alloc("queue");
		if (e) {
			nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_NUM, queue);
			nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_TOTAL, 1);
			nftnl_expr_set_u16(e, NFTNL_EXPR_QUEUE_FLAGS, 0);
		}
		nft_add_expr(rb, e);
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
	nft_add_expr(rb, e);   /* NOLINT(clang-analyzer-unix.Malloc): the expression owns info now */
}

/* iifname IF meta l4proto tcp tcp flags & (fin|syn|rst|ack) == syn meta mark 0 queue num Q */
static void gate_rule(struct nft_rb *rb, const struct gateway_rules *g)
{
	uint32_t zero = 0, mask = 0x17;
	uint8_t syn = 0x02;

	nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, g->ifname);
	nft_meta_load(rb, NFT_META_L4PROTO);
	nft_cmp_u8(rb, IPPROTO_TCP);
	if (g->uplink && !g->proxy_tcp) {   /* rootful without -p: only DNS over TCP is TPROXYed */
		uint16_t dport = htons(53);

		nft_transport_load(rb, 2, 2);
		nft_cmp(rb, NFT_CMP_EQ, &dport, sizeof(dport));
	}
	nft_transport_load(rb, 13, 1);
	nft_and(rb, &mask, 1);
	nft_cmp_u8(rb, syn);
	nft_meta_load(rb, NFT_META_MARK);
	nft_cmp(rb, NFT_CMP_EQ, &zero, sizeof(zero));
	queue_to(rb, g, BE_GATE_QUEUE);
}

/* meta nfproto FAMILY meta l4proto PROTO TYPE == echo-request */
static void echo_request(struct nft_rb *rb, uint8_t nfproto)
{
	nft_meta_load(rb, NFT_META_NFPROTO);
	nft_cmp_u8(rb, nfproto);
	nft_meta_load(rb, NFT_META_L4PROTO);
	nft_cmp_u8(rb, nfproto == NFPROTO_IPV4 ? IPPROTO_ICMP : IPPROTO_ICMPV6);
	nft_transport_load(rb, 0, 1);
	nft_cmp_u8(rb, nfproto == NFPROTO_IPV4 ? 8 : ICMP6_ECHO_REQUEST);
}

/* echo-request reject with icmpx admin-prohibited */
static void echo_reject(struct nft_rb *rb, uint8_t nfproto)
{
	struct nftnl_expr *e;

	echo_request(rb, nfproto);
	e = nftnl_expr_alloc("reject");
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
		nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, NFT_REJECT_ICMPX_ADMIN_PROHIBITED);
	}
	nft_add_expr(rb, e);
}

/* ---------- the batch ---------- */

enum rule_id {
	R_LO, R_FOREIGN, R_NS, R_NA, R_RS, R_REJ_RESET, R_REJ_HOST, R_REJ_NET, R_REJ_ADMIN, R_DNS4, R_DNS6,
	R_DNSTCP4, R_DNSTCP6, R_TCP4, R_TCP6, R_UDP4, R_UDP6, R_REJ_ECHO4, R_REJ_ECHO6, R_DROP, R_GATE,
	R_ECHO4, R_ECHO6, R_COUNT,
};

enum chain_id { C_PRE, C_GATE, C_COUNT };

static const struct {
	const char *name, *type;
	uint32_t hook;
	int prio;
} chains[C_COUNT] = {
	[C_PRE] = { GATEWAY_CHAIN, "filter", NF_INET_PRE_ROUTING, -150 },          /* mangle */
	[C_GATE] = { GATEWAY_GATE_CHAIN, "filter", NF_INET_PRE_ROUTING, -300 },    /* raw: before mangle */
};

/* meta l4proto tcp tcp dport 53 */
static void tcp_dns(struct nft_rb *rb)
{
	uint16_t dport = htons(53);

	nft_meta_load(rb, NFT_META_L4PROTO);
	nft_cmp_u8(rb, IPPROTO_TCP);
	nft_transport_load(rb, 2, 2);   /* tcphdr.dest */
	nft_cmp(rb, NFT_CMP_EQ, &dport, sizeof(dport));
}

static void build_rule(struct nft_rb *rb, enum rule_id id, const struct gateway_rules *g)
{
	uint32_t lo = 1;   /* lo is always ifindex 1 in a network namespace */

	switch (id) {
	case R_LO:
		nft_meta_load(rb, NFT_META_IIF);
		nft_cmp(rb, NFT_CMP_EQ, &lo, sizeof(lo));
		nft_verdict(rb, NF_ACCEPT);
		break;
	case R_FOREIGN:
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_NEQ, g->ifname);
		nft_verdict(rb, NF_DROP);
		break;
	case R_NS:
		icmpv6_type(rb, ND_NEIGHBOR_SOLICIT);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case R_NA:
		icmpv6_type(rb, ND_NEIGHBOR_ADVERT);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case R_RS:
		icmpv6_type(rb, ND_ROUTER_SOLICIT);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case R_DNS4:
		tproxy_dns(rb, NFPROTO_IPV4, g->dns_port);
		break;
	case R_DNS6:
		tproxy_dns(rb, NFPROTO_IPV6, g->dns_port);
		break;
	case R_DNSTCP4:
		tcp_dns(rb);
		tproxy(rb, NFPROTO_IPV4, IPPROTO_TCP, g->tcp_port);
		break;
	case R_DNSTCP6:
		tcp_dns(rb);
		tproxy(rb, NFPROTO_IPV6, IPPROTO_TCP, g->tcp_port);
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
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, g->ifname);
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
		nft_add_expr(rb, nftnl_expr_alloc("counter"));
		nft_verdict(rb, NF_DROP);
		break;
	case R_COUNT:
		break;
	}
}

static void gateway_rule(struct nft_rb *rb, int id, const void *g)
{
	build_rule(rb, (enum rule_id)id, g);
}

/*
 * The rules in order, each with its chain.  Rootless: everything the child sends is TPROXYed.
 * Rootful (g->uplink): only what the bridge sends up (DNS, all TCP with proxy_tcp, fragments) comes
 * here: DNS and that TCP are TPROXYed, the rest (a fragmented datagram to another port) dropped.
 */
static int rule_plan(const struct gateway_rules *g, uint8_t *ids, uint8_t *chain)
{
	int n = 0;

#define ADD(id, c) do { ids[n] = (uint8_t)(id); chain[n++] = (uint8_t)(c); } while (0)
	ADD(R_LO, C_PRE);
	ADD(R_FOREIGN, C_PRE);
	ADD(R_NS, C_PRE);
	ADD(R_NA, C_PRE);
	ADD(R_RS, C_PRE);
	ADD(R_REJ_RESET, C_PRE);
	ADD(R_REJ_HOST, C_PRE);
	ADD(R_REJ_NET, C_PRE);
	ADD(R_REJ_ADMIN, C_PRE);
	ADD(R_DNS4, C_PRE);
	ADD(R_DNS6, C_PRE);
	if (!g->uplink || g->proxy_tcp) {
		ADD(R_TCP4, C_PRE);
		ADD(R_TCP6, C_PRE);
	} else {
		ADD(R_DNSTCP4, C_PRE);
		ADD(R_DNSTCP6, C_PRE);
	}
	if (!g->uplink) {
		ADD(R_UDP4, C_PRE);
		ADD(R_UDP6, C_PRE);
		ADD(R_REJ_ECHO4, C_PRE);   /* what the echo queue let through, or every one without it */
		ADD(R_REJ_ECHO6, C_PRE);
	}
	ADD(R_DROP, C_PRE);
	if (g->gate != GATEWAY_GATE_NONE)
		ADD(R_GATE, C_GATE);
	if (g->gate != GATEWAY_GATE_NONE && g->echo && !g->uplink) {   /* rootful: echo is bridged */
		ADD(R_ECHO4, C_GATE);
		ADD(R_ECHO6, C_GATE);
	}
#undef ADD
	return n;
}

int gateway_rules_batch(const struct gateway_rules *g, void *buf, size_t len, uint32_t seq,
			uint32_t *last_seq)
{
	struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, len);
	uint8_t ids[R_COUNT], chain[R_COUNT];
	bool used[C_COUNT] = { false };
	int n = rule_plan(g, ids, chain);
	int rc = 0;

	if (!b)
		return -ENOMEM;
	if ((rc = nft_begin_table(b, len, GATEWAY_TABLE, NFPROTO_INET, 0, NLM_F_CREATE, &seq)) < 0)
		goto out;
	/* Each message must fit before the next is started: the batch helper only checks after. */
#define ROOM() do { if (mnl_nlmsg_batch_size(b) + 4096 > len) { rc = -ENOSPC; goto out; } } while (0)

	for (int i = 0; i < n; i++)
		used[chain[i]] = true;
	for (int ch = 0; ch < C_COUNT; ch++) {
		if (!used[ch])
			continue;
		ROOM();
		nft_add_chain(b, GATEWAY_TABLE, chains[ch].name, chains[ch].type, chains[ch].hook, chains[ch].prio,
			      ch == C_PRE ? NF_DROP : NF_ACCEPT, seq++);
	}
	for (int i = 0; i < n; i++) {
		*last_seq = seq;
		rc = nft_add_rule(b, len, GATEWAY_TABLE, chains[chain[i]].name, gateway_rule, ids[i], g, i == n - 1,
				  seq++);
		if (rc < 0)
			goto out;
	}
	rc = nft_end_batch(b, len, seq);
#undef ROOM
out:
	mnl_nlmsg_batch_stop(b);
	return rc;
}

/* Send @len bytes of @batch (or report @len, a -errno from building it) and wait for the ACK. */
static int load_batch(int len, uint32_t last_seq, const void *batch, char *err, size_t errlen)
{
	struct mnl_socket *nl;
	int r;

	if (len < 0) {
		snprintf(err, errlen, "cannot build the ruleset: %s", strerror(-len));
		return len;
	}
	r = nft_send_batch(batch, (size_t)len, last_seq, &nl);
	if (!nl) {
		snprintf(err, errlen, "cannot open nfnetlink: %s", strerror(-r));
		return r;
	}
	mnl_socket_close(nl);
	if (r < 0) {
		snprintf(err, errlen, "the kernel refused it: %s", strerror(-r));
		return r;
	}
	return 0;
}

int gateway_rules_load(const struct gateway_rules *g, char *err, size_t errlen)
{
	char batch[16384];   /* the ruleset is about 2 KiB; -ENOSPC says if it ever outgrows this */
	uint32_t last_seq = 0;
	int len = gateway_rules_batch(g, batch, sizeof(batch), (uint32_t)time(NULL), &last_seq);

	return load_batch(len, last_seq, batch, err, errlen);
}

/* ---------- the --root bridge: table netdev ---------- */

enum bridge_rule {
	B_SRC4, B_SRC6, B_SRC_ARP,                             /* only the child's own source */
	B_FRAG4, B_FRAG6, B_DNS, B_TCP, B_TCPDNS,             /* up into N1's stack */
	B_TCP_FWD,                                             /* without -p: the rest of TCP, first */
	B_RA6, B_REDIRECT6, B_REDIRECT4,                       /* never to the host's link: drop */
	B_FWD_IP, B_FWD_IP6, B_FWD_ARP, B_OTHER,               /* the rest up; other ethertypes: drop */
	B_FWD_DOWN, B_COUNT
};

/* meta l4proto @proto  <icmp type> == @type */
static void icmp_type(struct nft_rb *rb, uint8_t proto, uint8_t type)
{
	nft_meta_load(rb, NFT_META_L4PROTO);
	nft_cmp_u8(rb, proto);
	nft_transport_load(rb, 0, 1);
	nft_cmp_u8(rb, type);
}

/* meta protocol @proto (the frame's ethertype) */
static void ethertype(struct nft_rb *rb, uint16_t proto)
{
	uint16_t p = htons(proto);

	nft_meta_load(rb, NFT_META_PROTOCOL);
	nft_cmp(rb, NFT_CMP_EQ, &p, sizeof(p));
}

/* fwd to @ifindex */
static void fwd_to(struct nft_rb *rb, uint32_t ifindex)
{
	struct nftnl_expr *e;

	nft_imm_data(rb, &ifindex, sizeof(ifindex));
	e = nftnl_expr_alloc("fwd");
	if (e)
		nftnl_expr_set_u32(e, NFTNL_EXPR_FWD_SREG_DEV, NFT_REG_1);
	nft_add_expr(rb, e);
}

static void build_bridge_rule(struct nft_rb *rb, int id, const void *arg)
{
	const struct gateway_bridge *b = arg;
	uint16_t dport = htons(53), fragmask = htons(0x3fff), zero16 = 0;
	uint8_t host = PACKET_HOST, present = 1;
	struct nftnl_expr *e;

	switch ((enum bridge_rule)id) {
	case B_SRC4:      /* meta protocol ip  ip saddr != <child v4>  drop */
		ethertype(rb, ETH_P_IP);
		nft_network_load(rb, 12, 4);
		nft_cmp(rb, NFT_CMP_NEQ, &b->child4, 4);
		nft_verdict(rb, NF_DROP);
		return;
	case B_SRC6: {    /* meta protocol ip6  ip6 saddr != <child v6>, not fe80::/10, not ::  drop */
		static const unsigned char ll_mask[16] = { 0xff, 0xc0 }, ll[16] = { 0xfe, 0x80 }, any[16] = { 0 };

		ethertype(rb, ETH_P_IPV6);
		nft_network_load(rb, 8, 16);
		nft_cmp(rb, NFT_CMP_NEQ, &b->child6, 16);
		nft_cmp(rb, NFT_CMP_NEQ, any, 16);
		nft_and(rb, ll_mask, 16);
		nft_cmp(rb, NFT_CMP_NEQ, ll, 16);
		nft_verdict(rb, NF_DROP);
		return;
	}
	case B_SRC_ARP: { /* meta protocol arp  arp saddr ip != <child v4>, != 0.0.0.0 (a probe)  drop */
		static const uint32_t none;

		ethertype(rb, ETH_P_ARP);
		nft_network_load(rb, 14, 4);   /* htype, ptype, hlen, plen, oper, sha[6], spa */
		nft_cmp(rb, NFT_CMP_NEQ, &b->child4, 4);
		nft_cmp(rb, NFT_CMP_NEQ, &none, 4);
		nft_verdict(rb, NF_DROP);
		return;
	}
	case B_FRAG4:   /* meta protocol ip  ip frag-off & 0x3fff != 0  (a fragment, first or not) */
		ethertype(rb, ETH_P_IP);
		nft_network_load(rb, 6, 2);
		nft_and(rb, &fragmask, 2);
		nft_cmp(rb, NFT_CMP_NEQ, &zero16, sizeof(zero16));
		break;
	case B_FRAG6:   /* meta protocol ip6  exthdr frag exists */
		ethertype(rb, ETH_P_IPV6);
		e = nftnl_expr_alloc("exthdr");
		if (e) {
			nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_DREG, NFT_REG_1);
			nftnl_expr_set_u8(e, NFTNL_EXPR_EXTHDR_TYPE, IPPROTO_FRAGMENT);
			nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_OFFSET, 0);
			nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_LEN, 1);
			nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT);
			nftnl_expr_set_u32(e, NFTNL_EXPR_EXTHDR_OP, NFT_EXTHDR_OP_IPV6);
		}
		nft_add_expr(rb, e);
		nft_cmp_u8(rb, present);
		break;
	case B_DNS:     /* udp dport 53 */
		nft_meta_load(rb, NFT_META_L4PROTO);
		nft_cmp_u8(rb, IPPROTO_UDP);
		nft_transport_load(rb, 2, 2);
		nft_cmp(rb, NFT_CMP_EQ, &dport, sizeof(dport));
		break;
	case B_TCPDNS:  /* tcp dport 53 */
		tcp_dns(rb);
		break;
	case B_TCP:     /* meta l4proto tcp */
		nft_meta_load(rb, NFT_META_L4PROTO);
		nft_cmp_u8(rb, IPPROTO_TCP);
		break;
	case B_TCP_FWD:   /* meta l4proto tcp fwd to "up0" (bulk TCP meets five rules, not eleven) */
		nft_meta_load(rb, NFT_META_L4PROTO);
		nft_cmp_u8(rb, IPPROTO_TCP);
		fwd_to(rb, (uint32_t)b->uplink_ifindex);
		return;
	case B_RA6:       /* icmpv6 type nd-router-advert drop: the command is no router of the host's */
		icmp_type(rb, IPPROTO_ICMPV6, ND_ROUTER_ADVERT);
		nft_verdict(rb, NF_DROP);
		return;
	case B_REDIRECT6: /* icmpv6 type nd-redirect drop */
		icmp_type(rb, IPPROTO_ICMPV6, ND_REDIRECT);
		nft_verdict(rb, NF_DROP);
		return;
	case B_REDIRECT4: /* icmp type redirect drop */
		icmp_type(rb, IPPROTO_ICMP, ICMP_REDIRECT);
		nft_verdict(rb, NF_DROP);
		return;
	case B_FWD_IP:    /* meta protocol ip fwd to "up0" */
	case B_FWD_IP6:
	case B_FWD_ARP:
		ethertype(rb, id == B_FWD_IP ? ETH_P_IP : id == B_FWD_IP6 ? ETH_P_IPV6 : ETH_P_ARP);
		fwd_to(rb, (uint32_t)b->uplink_ifindex);
		return;
	case B_OTHER:     /* drop: VLAN tags, PPPoE, LLDP, ... have no business on the host's link */
		nft_verdict(rb, NF_DROP);
		return;
	case B_FWD_DOWN:
		fwd_to(rb, (uint32_t)b->child_ifindex);
		return;
	case B_COUNT:
		return;
	}
	/* meta pkttype set host accept: up into N1's stack (the frame is addressed to the host's MAC) */
	nft_imm_data(rb, &host, sizeof(host));
	nft_meta_set(rb, NFT_META_PKTTYPE);
	nft_verdict(rb, NF_ACCEPT);
}

int gateway_bridge_batch(const struct gateway_bridge *br, void *buf, size_t len, uint32_t seq,
			 uint32_t *last_seq)
{
	static const char *const up_chain = "from-child", *const down_chain = "from-host";
	const struct { uint8_t id; bool down; } plan[] = {
		{ B_SRC4, false }, { B_SRC6, false }, { B_SRC_ARP, false },
		{ B_FRAG4, false }, { B_FRAG6, false }, { B_DNS, false },
		{ br->proxy_tcp ? B_TCP : B_TCPDNS, false }, { B_TCP_FWD, false },
		{ B_RA6, false }, { B_REDIRECT6, false }, { B_REDIRECT4, false },
		{ B_FWD_IP, false }, { B_FWD_IP6, false }, { B_FWD_ARP, false }, { B_OTHER, false },
		{ B_FWD_DOWN, true },
	};
	const int n = (int)(sizeof(plan) / sizeof(plan[0]));
	struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, len);
	int rc = 0;

	if (!b)
		return -ENOMEM;
	if (len < (size_t)4 * 4096) {   /* the table and the two chains, before anything is checked */
		rc = -ENOSPC;
		goto out;
	}
	if ((rc = nft_begin_table(b, len, GATEWAY_BRIDGE_TABLE, NFPROTO_NETDEV, 0, NLM_F_CREATE, &seq)) < 0)
		goto out;
	/* Before the kernel's own receive path of either end (priority: first of any ingress chain). */
	nft_add_chain_dev(b, GATEWAY_BRIDGE_TABLE, up_chain, br->child_if, -500, seq++);
	nft_add_chain_dev(b, GATEWAY_BRIDGE_TABLE, down_chain, br->uplink, -500, seq++);
	for (int i = 0; i < n; i++) {
		if (plan[i].id == B_TCP_FWD && br->proxy_tcp)
			continue;   /* -p: B_TCP took all of TCP up already */
		*last_seq = seq;
		rc = nft_add_rule_family(b, len, NFPROTO_NETDEV, GATEWAY_BRIDGE_TABLE,
					 plan[i].down ? down_chain : up_chain, build_bridge_rule, plan[i].id, br,
					 i == n - 1, seq++);
		if (rc < 0)
			goto out;
	}
	rc = nft_end_batch(b, len, seq);
out:
	mnl_nlmsg_batch_stop(b);
	return rc;
}

int gateway_bridge_load(const struct gateway_bridge *br, char *err, size_t errlen)
{
	char batch[16384];
	uint32_t last_seq = 0;
	int len = gateway_bridge_batch(br, batch, sizeof(batch), (uint32_t)time(NULL), &last_seq);

	return load_batch(len, last_seq, batch, err, errlen);
}
