/* SPDX-License-Identifier: MIT */
#include "nft/host.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_conntrack_tuple_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <libmnl/libmnl.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>

#include "nft/expr.h"

/*
 * Destinations the tree never reaches, as in rootless mode (policy/guard.c's classification): the
 * forward chain rejects them.  The host's own addresses (local, broadcast and anycast routes, and
 * what a host DNAT sends to itself) go to the input chain, which rejects them too.
 */
static const struct guard_net {
	uint8_t nfproto, plen;
	unsigned char a[16];
} guard_nets[] = {
	{ NFPROTO_IPV4, 8, { 0 } },                                    /* 0.0.0.0/8: unspecified */
	{ NFPROTO_IPV4, 8, { 127 } },                                  /* loopback */
	{ NFPROTO_IPV4, 16, { 169, 254 } },                            /* link-local: cloud metadata */
	{ NFPROTO_IPV4, 4, { 224 } },                                  /* multicast */
	{ NFPROTO_IPV4, 32, { 255, 255, 255, 255 } },                  /* broadcast */
	{ NFPROTO_IPV6, 96, { 0 } },                                   /* ::, ::1, IPv4-compatible */
	{ NFPROTO_IPV6, 96, { [10] = 0xff, [11] = 0xff } },            /* IPv4-mapped */
	{ NFPROTO_IPV6, 10, { 0xfe, 0x80 } },                          /* link-local */
	{ NFPROTO_IPV6, 8, { 0xff } },                                 /* multicast */
	/* NAT64 (64:ff9b::/96) and 6to4 (2002::/16) of the IPv4 ranges above */
	{ NFPROTO_IPV6, 104, { 0, 0x64, 0xff, 0x9b, [12] = 0 } },
	{ NFPROTO_IPV6, 104, { 0, 0x64, 0xff, 0x9b, [12] = 127 } },
	{ NFPROTO_IPV6, 112, { 0, 0x64, 0xff, 0x9b, [12] = 169, 254 } },
	{ NFPROTO_IPV6, 100, { 0, 0x64, 0xff, 0x9b, [12] = 224 } },
	{ NFPROTO_IPV6, 128, { 0, 0x64, 0xff, 0x9b, [12] = 255, 255, 255, 255 } },
	{ NFPROTO_IPV6, 24, { 0x20, 0x02, 0 } },
	{ NFPROTO_IPV6, 24, { 0x20, 0x02, 127 } },
	{ NFPROTO_IPV6, 32, { 0x20, 0x02, 169, 254 } },
	{ NFPROTO_IPV6, 20, { 0x20, 0x02, 224 } },
	{ NFPROTO_IPV6, 48, { 0x20, 0x02, 255, 255, 255, 255 } },
};

#define N_GUARD ((int)(sizeof(guard_nets) / sizeof(guard_nets[0])))

/* Forward rules, then input, then postrouting: H_GUARD stands for N_GUARD rules. */
enum { H_REPLY, H_OUT_DROP, H_INVALID, H_EST4, H_EST6, H_GUARD, H_IN4 = H_GUARD + N_GUARD, H_IN6, H_IN_DROP,
       H_LOCAL_REPLY4, H_LOCAL_REPLY6, H_LOCAL_ND, H_LOCAL_REJECT, H_MASQ4, H_MASQ6, H_COUNT };

static void masquerade(struct nft_rb *rb, const struct host_nat *h)
{
	if (h->port_min)
		nft_masquerade_ports(rb, h->port_min, h->port_max);
	else
		nft_masquerade(rb);
}

static void reject_admin(struct nft_rb *rb)
{
	struct nftnl_expr *e = nftnl_expr_alloc("reject");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
		nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, NFT_REJECT_ICMPX_ADMIN_PROHIBITED);
	}
	nft_add_expr(rb, e);
}

/* meta nfproto FAMILY ip[6] saddr|daddr ADDR/PLEN */
static void addr_match(struct nft_rb *rb, uint8_t nfproto, bool dst, const void *a, unsigned int plen)
{
	bool v4 = nfproto == NFPROTO_IPV4;
	uint32_t len = v4 ? 4 : 16;
	unsigned char mask[16] = { 0 }, want[16] = { 0 };

	nft_meta_load(rb, NFT_META_NFPROTO);
	nft_cmp_u8(rb, nfproto);
	nft_network_load(rb, v4 ? (dst ? 16 : 12) : (dst ? 24 : 8), len);   /* iphdr / ipv6hdr */
	for (unsigned int i = 0; i < len; i++) {
		unsigned int bits = plen > 8 * i ? plen - 8 * i : 0;

		mask[i] = bits >= 8 ? 0xff : (unsigned char)(0xff00 >> bits);
		want[i] = ((const unsigned char *)a)[i] & mask[i];
	}
	if (plen < 8 * len) {
		nft_and(rb, mask, len);
	}
	nft_cmp(rb, NFT_CMP_EQ, want, len);
}

/*
 * ct original saddr (@dst: daddr) == the tree's address of @nfproto: the flow is the tree's own
 * (or, for daddr, one the host opened to the tree), whatever the packet's header says.
 */
static void ct_orig_is_tree(struct nft_rb *rb, uint8_t nfproto, bool dst, const struct host_nat *h)
{
	bool v4 = nfproto == NFPROTO_IPV4;
	struct nftnl_expr *e = nftnl_expr_alloc("ct");

	nft_meta_load(rb, NFT_META_NFPROTO);
	nft_cmp_u8(rb, nfproto);
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, v4 ? (dst ? NFT_CT_DST_IP : NFT_CT_SRC_IP)
							   : (dst ? NFT_CT_DST_IP6 : NFT_CT_SRC_IP6));
		nftnl_expr_set_u8(e, NFTNL_EXPR_CT_DIR, IP_CT_DIR_ORIGINAL);
		nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
	}
	nft_add_expr(rb, e);
	if (v4)
		nft_cmp(rb, NFT_CMP_EQ, &h->src4, 4);
	else
		nft_cmp(rb, NFT_CMP_EQ, &h->src6, 16);
}

static void build(struct nft_rb *rb, int id, const struct host_nat *h)
{
	/* Neighbour solicitation and advertisement only: never a router advertisement or a redirect,
	 * which the command (root in its namespace, its frames bridged as sent) could forge. */
	uint8_t nd_min = 135, nd_max = 136;

	if (id >= H_GUARD && id < H_GUARD + N_GUARD) {
		const struct guard_net *g = &guard_nets[id - H_GUARD];

		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		addr_match(rb, g->nfproto, true, g->a, g->plen);
		reject_admin(rb);
		return;
	}
	switch (id) {
	case H_REPLY:
		nft_ifname(rb, NFT_META_OIFNAME, NFT_CMP_EQ, h->ifname);
		nft_ct_state(rb, NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED));
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_OUT_DROP:
		nft_ifname(rb, NFT_META_OIFNAME, NFT_CMP_EQ, h->ifname);
		nft_verdict(rb, NF_DROP);
		break;
	case H_INVALID:   /* no conntrack entry (invalid, or untracked: ICMPv6 neighbour discovery and
			   * MLD): it would leave un-NATed, past the --iface rule */
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_ct_state(rb, NF_CT_STATE_INVALID_BIT | NF_CT_STATE_UNTRACKED_BIT);
		nft_verdict(rb, NF_DROP);
		break;
	/* The tree's flows' later packets (the destination was checked on the first), of a flow of
	 * the tree's own: an ICMP error quoting one of the host's flows is related to that one. */
	case H_EST4:
	case H_EST6:
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_ct_state(rb, NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED));
		ct_orig_is_tree(rb, id == H_EST4 ? NFPROTO_IPV4 : NFPROTO_IPV6, false, h);
		if (id == H_EST4)
			addr_match(rb, NFPROTO_IPV4, false, &h->src4, 32);
		else
			addr_match(rb, NFPROTO_IPV6, false, &h->src6, 128);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_IN4:    /* a new flow of the tree's (not a related packet of somebody else's flow) */
	case H_IN6:
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_ct_state(rb, NF_CT_STATE_BIT(IP_CT_NEW));
		if (id == H_IN4)
			addr_match(rb, NFPROTO_IPV4, false, &h->src4, 32);
		else
			addr_match(rb, NFPROTO_IPV6, false, &h->src6, 128);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_IN_DROP:   /* any other source (not masqueraded), or related to a flow not the tree's */
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_verdict(rb, NF_DROP);
		break;
	case H_LOCAL_REPLY4:   /* replies on flows the host opened to the tree; not an error quoting */
	case H_LOCAL_REPLY6:   /* a flow of the host's with somebody else (a forged PMTU, an abort) */
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_ct_state(rb, NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED));
		ct_orig_is_tree(rb, id == H_LOCAL_REPLY4 ? NFPROTO_IPV4 : NFPROTO_IPV6, true, h);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_LOCAL_ND:   /* neighbour discovery with the host end (conntrack does not track it) */
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_meta_load(rb, NFT_META_NFPROTO);
		nft_cmp_u8(rb, NFPROTO_IPV6);
		nft_meta_load(rb, NFT_META_L4PROTO);
		nft_cmp_u8(rb, IPPROTO_ICMPV6);
		nft_transport_load(rb, 0, 1);   /* icmp6_type */
		nft_cmp(rb, NFT_CMP_GTE, &nd_min, 1);
		nft_cmp(rb, NFT_CMP_LTE, &nd_max, 1);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_LOCAL_REJECT:   /* the host's own services are not the child's, as in rootless mode */
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		reject_admin(rb);
		break;
	case H_MASQ4:
		addr_match(rb, NFPROTO_IPV4, false, &h->src4, 32);
		masquerade(rb, h);
		break;
	case H_MASQ6:
		addr_match(rb, NFPROTO_IPV6, false, &h->src6, 128);
		masquerade(rb, h);
		break;
	default:
		break;
	}
}

static void host_rule(struct nft_rb *rb, int id, const void *h)
{
	build(rb, id, h);
}

/* Return: the batch's length, or -errno. */
static int host_batch(const struct host_nat *h, char *buf, size_t len, uint32_t seq, uint32_t *last_seq)
{
	struct mnl_nlmsg_batch *b = mnl_nlmsg_batch_start(buf, len);
	int n = H_COUNT;
	int rc;

	if (!b)
		return -ENOMEM;
	if (len < (size_t)5 * 4096) {   /* the table and the three chains, before anything is checked */
		rc = -ENOSPC;
		goto out;
	}
	if ((rc = nft_begin_table(b, len, h->table, NFPROTO_INET, NFT_TABLE_F_OWNER, NLM_F_CREATE | NLM_F_EXCL,
				  &seq)) < 0)
		goto out;
	nft_add_chain(b, h->table, "forward", "filter", NF_INET_FORWARD, 0, NF_ACCEPT, seq++);
	nft_add_chain(b, h->table, "input", "filter", NF_INET_LOCAL_IN, 0, NF_ACCEPT, seq++);
	nft_add_chain(b, h->table, "postrouting", "nat", NF_INET_POST_ROUTING, 100, NF_ACCEPT, seq++);
	for (int id = 0; id < n; id++) {
		if (!h->ipv6 && (id == H_EST6 || id == H_IN6 || id == H_LOCAL_REPLY6 || id == H_MASQ6))
			continue;   /* then every IPv6 packet from the tree is dropped */
		*last_seq = seq;
		rc = nft_add_rule(b, len, h->table, id < H_LOCAL_REPLY4 ? "forward" : id < H_MASQ4 ? "input" :
				  "postrouting", host_rule, id, h, id == H_COUNT - 1 || (!h->ipv6 && id == H_MASQ4),
				  seq++);
		if (rc < 0)
			goto out;
	}
	rc = nft_end_batch(b, len, seq);
out:
	mnl_nlmsg_batch_stop(b);
	return rc;
}

struct mnl_socket *host_nat_load(const struct host_nat *h, char *err, size_t errlen)
{
	char batch[32768];   /* the table is about 9 KiB */
	uint32_t last_seq = 0;
	struct mnl_socket *nl;
	int len, r;

	len = host_batch(h, batch, sizeof(batch), (uint32_t)time(NULL), &last_seq);
	if (len < 0) {
		snprintf(err, errlen, "cannot build the host table: %s", strerror(-len));
		return NULL;
	}
	r = nft_send_batch(batch, (size_t)len, last_seq, &nl);
	if (!nl) {
		snprintf(err, errlen, "cannot open nfnetlink: %s", strerror(-r));
		return NULL;
	}
	if (r < 0) {
		snprintf(err, errlen, "the kernel refused the host table %s: %s%s", h->table, strerror(-r),
			 r == -EOPNOTSUPP || r == -ENOENT ? " (it needs nf_tables with nat and masquerade, "
			 "and Linux 5.12 for owned tables)" : "");
		mnl_socket_close(nl);
		return NULL;
	}
	return nl;
}
