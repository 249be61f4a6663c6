/* SPDX-License-Identifier: MIT */
#include "nft/host.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>

#include "nft/expr.h"

enum { H_IN, H_REPLY, H_OUT_DROP, H_LOCAL_REPLY, H_LOCAL_ICMP6, H_LOCAL_REJECT, H_MASQ4, H_MASQ6, H_COUNT };

static void masquerade(struct nft_rb *rb, const struct host_nat *h)
{
	if (h->port_min)
		nft_masquerade_ports(rb, h->port_min, h->port_max);
	else
		nft_masquerade(rb);
}

static void build(struct nft_rb *rb, int id, const struct host_nat *h)
{
	switch (id) {
	case H_IN:
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_REPLY:
		nft_ifname(rb, NFT_META_OIFNAME, NFT_CMP_EQ, h->ifname);
		nft_ct_state(rb, NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED));
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_OUT_DROP:
		nft_ifname(rb, NFT_META_OIFNAME, NFT_CMP_EQ, h->ifname);
		nft_verdict(rb, NF_DROP);
		break;
	case H_LOCAL_REPLY:
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_ct_state(rb, NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED));
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_LOCAL_ICMP6:   /* neighbour discovery with the host end (conntrack does not track it) */
		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		nft_meta_load(rb, NFT_META_L4PROTO);
		nft_cmp_u8(rb, IPPROTO_ICMPV6);
		nft_verdict(rb, NF_ACCEPT);
		break;
	case H_LOCAL_REJECT: {   /* the host's own services are not the child's, as in rootless mode */
		struct nftnl_expr *e = nftnl_expr_alloc("reject");

		nft_ifname(rb, NFT_META_IIFNAME, NFT_CMP_EQ, h->ifname);
		if (e) {
			nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
			nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, NFT_REJECT_ICMPX_ADMIN_PROHIBITED);
		}
		nft_add_expr(rb, e);
		break;
	}
	case H_MASQ4:
		nft_meta_load(rb, NFT_META_NFPROTO);
		nft_cmp_u8(rb, NFPROTO_IPV4);
		nft_network_load(rb, 12, 4);   /* iphdr.saddr */
		nft_cmp(rb, NFT_CMP_EQ, &h->src4, sizeof(h->src4));
		masquerade(rb, h);
		break;
	case H_MASQ6:
		nft_meta_load(rb, NFT_META_NFPROTO);
		nft_cmp_u8(rb, NFPROTO_IPV6);
		nft_network_load(rb, 8, 16);   /* ipv6hdr.saddr */
		nft_cmp(rb, NFT_CMP_EQ, &h->src6, sizeof(h->src6));
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
	struct nftnl_table *t = nftnl_table_alloc();
	int n = h->ipv6 ? H_COUNT : H_MASQ6;
	struct nlmsghdr *nlh;
	int rc;

	if (!b || !t) {
		rc = -ENOMEM;
		goto out;
	}
	nftnl_batch_begin(mnl_nlmsg_batch_current(b), seq++);
	mnl_nlmsg_batch_next(b);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, h->table);
	nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, NFT_TABLE_F_OWNER);
	nlh = nftnl_table_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWTABLE, NFPROTO_INET,
					  NLM_F_CREATE | NLM_F_EXCL, seq++);
	nftnl_table_nlmsg_build_payload(nlh, t);
	mnl_nlmsg_batch_next(b);
	nft_add_chain(b, h->table, "forward", "filter", NF_INET_FORWARD, 0, NF_ACCEPT, seq++);
	nft_add_chain(b, h->table, "input", "filter", NF_INET_LOCAL_IN, 0, NF_ACCEPT, seq++);
	nft_add_chain(b, h->table, "postrouting", "nat", NF_INET_POST_ROUTING, 100, NF_ACCEPT, seq++);
	for (int id = 0; id < n; id++) {
		*last_seq = seq;
		rc = nft_add_rule(b, len, h->table, id < H_LOCAL_REPLY ? "forward" : id < H_MASQ4 ? "input" :
				  "postrouting", host_rule, id, h, id == n - 1, seq++);
		if (rc < 0)
			goto out;
	}
	nftnl_batch_end(mnl_nlmsg_batch_current(b), seq++);
	mnl_nlmsg_batch_next(b);
	rc = (int)mnl_nlmsg_batch_size(b);
out:
	if (t)
		nftnl_table_free(t);
	if (b)
		mnl_nlmsg_batch_stop(b);
	return rc;
}

struct mnl_socket *host_nat_load(const struct host_nat *h, char *err, size_t errlen)
{
	char batch[8192];
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
