/* SPDX-License-Identifier: MIT */
#include "nft/expr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/table.h>

void nft_add_expr(struct nft_rb *rb, struct nftnl_expr *e)
{
	if (e)
		nftnl_rule_add_expr(rb->r, e);
	else
		rb->failed = true;
}

void nft_meta_load(struct nft_rb *rb, uint32_t key)
{
	struct nftnl_expr *e = nftnl_expr_alloc("meta");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
	}
	nft_add_expr(rb, e);
}

void nft_meta_set(struct nft_rb *rb, uint32_t key)
{
	struct nftnl_expr *e = nftnl_expr_alloc("meta");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_SREG, NFT_REG_1);
	}
	nft_add_expr(rb, e);
}

void nft_cmp(struct nft_rb *rb, uint32_t op, const void *data, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("cmp");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
		nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
	}
	nft_add_expr(rb, e);
}

void nft_cmp_u8(struct nft_rb *rb, uint8_t v)
{
	nft_cmp(rb, NFT_CMP_EQ, &v, sizeof(v));
}

void nft_imm_data(struct nft_rb *rb, const void *data, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("immediate");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
		nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, data, len);
	}
	nft_add_expr(rb, e);
}

void nft_verdict(struct nft_rb *rb, int v)
{
	struct nftnl_expr *e = nftnl_expr_alloc("immediate");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, (uint32_t)v);
	}
	nft_add_expr(rb, e);
}

void nft_transport_load(struct nft_rb *rb, uint32_t offset, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("payload");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_TRANSPORT_HEADER);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
	}
	nft_add_expr(rb, e);
}


int nft_begin_table(struct mnl_nlmsg_batch *b, size_t len, const char *name, uint16_t family, uint32_t tflags,
		    uint16_t nlflags, uint32_t *seq)
{
	struct nftnl_table *t;
	struct nlmsghdr *nlh;

	/* Each message must fit before it is started: the batch helper only checks after. */
	if (mnl_nlmsg_batch_size(b) + (size_t)2 * 4096 > len)
		return -ENOSPC;
	if (!(t = nftnl_table_alloc()))
		return -ENOMEM;
	nftnl_batch_begin(mnl_nlmsg_batch_current(b), (*seq)++);
	mnl_nlmsg_batch_next(b);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, name);
	if (tflags)
		nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, tflags);
	nlh = nftnl_table_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWTABLE, family, nlflags, (*seq)++);
	nftnl_table_nlmsg_build_payload(nlh, t);
	mnl_nlmsg_batch_next(b);
	nftnl_table_free(t);
	return 0;
}

int nft_end_batch(struct mnl_nlmsg_batch *b, size_t len, uint32_t seq)
{
	if (mnl_nlmsg_batch_size(b) + 4096 > len)
		return -ENOSPC;
	nftnl_batch_end(mnl_nlmsg_batch_current(b), seq);
	mnl_nlmsg_batch_next(b);
	return (int)mnl_nlmsg_batch_size(b);
}

int nft_add_rule(struct mnl_nlmsg_batch *b, size_t len, const char *table, const char *chain,
		 void (*build)(struct nft_rb *rb, int id, const void *arg), int id, const void *arg,
		 bool ack, uint32_t seq)
{
	return nft_add_rule_family(b, len, NFPROTO_INET, table, chain, build, id, arg, ack, seq);
}

int nft_add_rule_family(struct mnl_nlmsg_batch *b, size_t len, uint16_t family, const char *table,
			const char *chain, void (*build)(struct nft_rb *rb, int id, const void *arg), int id,
			const void *arg, bool ack, uint32_t seq)
{
	struct nftnl_rule *r;
	struct nlmsghdr *nlh;
	struct nft_rb rb;

	/* Each message must fit before it is started: the batch helper only checks after. */
	if (mnl_nlmsg_batch_size(b) + 4096 > len)
		return -ENOSPC;
	r = nftnl_rule_alloc();
	if (!r)
		return -ENOMEM;
	rb = (struct nft_rb){ .r = r };
	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, table);
	nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
	nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, family);
	build(&rb, id, arg);
	if (rb.failed) {
		nftnl_rule_free(r);
		return -EOPNOTSUPP;
	}
	nlh = nftnl_rule_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWRULE, family,
					 NLM_F_APPEND | NLM_F_CREATE | (ack ? NLM_F_ACK : 0), seq);
	nftnl_rule_nlmsg_build_payload(nlh, r);
	nftnl_rule_free(r);
	mnl_nlmsg_batch_next(b);
	return 0;
}

int nft_send_batch(const void *batch, size_t len, uint32_t last_seq, struct mnl_socket **nl)
{
	*nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
	if (!*nl || mnl_socket_bind(*nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		int r = -errno;

		if (*nl)
			mnl_socket_close(*nl);
		*nl = NULL;
		return r;
	}
	if (mnl_socket_sendto(*nl, batch, len) < 0)
		return -errno;
	return nft_wait_ack(*nl, last_seq);
}

int nft_wait_ack(struct mnl_socket *nl, uint32_t last_seq)
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


void nft_network_load(struct nft_rb *rb, uint32_t offset, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("payload");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
	}
	nft_add_expr(rb, e);
}

void nft_ifname(struct nft_rb *rb, uint32_t key, uint32_t op, const char *name)
{
	char buf[IFNAMSIZ];

	memset(buf, 0, sizeof(buf));
	snprintf(buf, sizeof(buf), "%s", name);
	nft_meta_load(rb, key);
	nft_cmp(rb, op, buf, sizeof(buf));
}

void nft_and(struct nft_rb *rb, const void *mask, uint32_t len)
{
	static const unsigned char zero[16];
	struct nftnl_expr *e = nftnl_expr_alloc("bitwise");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
		nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, mask, len);
		nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, zero, len);
	}
	nft_add_expr(rb, e);
}

void nft_ct_state(struct nft_rb *rb, uint32_t bits)
{
	struct nftnl_expr *e = nftnl_expr_alloc("ct");
	uint32_t zero = 0;

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_STATE);
		nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
	}
	nft_add_expr(rb, e);
	nft_and(rb, &bits, sizeof(bits));
	nft_cmp(rb, NFT_CMP_NEQ, &zero, sizeof(zero));
}

void nft_masquerade(struct nft_rb *rb)
{
	nft_add_expr(rb, nftnl_expr_alloc("masq"));
}

void nft_masquerade_ports(struct nft_rb *rb, uint16_t min, uint16_t max)
{
	uint16_t port[2] = { htons(min), htons(max) };
	struct nftnl_expr *e;

	for (int i = 0; i < 2; i++) {
		e = nftnl_expr_alloc("immediate");
		if (e) {
			nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, i ? NFT_REG_2 : NFT_REG_1);
			nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &port[i], sizeof(port[i]));
		}
		nft_add_expr(rb, e);
	}
	e = nftnl_expr_alloc("masq");
	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_MASQ_REG_PROTO_MIN, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_MASQ_REG_PROTO_MAX, NFT_REG_2);
		nftnl_expr_set_u32(e, NFTNL_EXPR_MASQ_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED | NF_NAT_RANGE_PROTO_OFFSET);
	}
	nft_add_expr(rb, e);
}

/* A base chain of @family on @hook (on device @dev for netdev, else NULL). */
static void add_chain(struct mnl_nlmsg_batch *b, uint16_t family, const char *table, const char *name,
		      const char *type, uint32_t hook, const char *dev, int prio, uint32_t policy, uint32_t seq)
{
	struct nftnl_chain *c = nftnl_chain_alloc();
	struct nlmsghdr *nlh;

	if (!c)
		return;   /* the batch then misses the chain, and the kernel refuses its rules */
	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, table);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, type);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, hook);
	nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, prio);
	if (dev)
		nftnl_chain_set_str(c, NFTNL_CHAIN_DEV, dev);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, policy);
	nlh = nftnl_chain_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWCHAIN, family, NLM_F_CREATE, seq);
	nftnl_chain_nlmsg_build_payload(nlh, c);
	mnl_nlmsg_batch_next(b);
	nftnl_chain_free(c);
}

void nft_add_chain(struct mnl_nlmsg_batch *b, const char *table, const char *name, const char *type,
		   uint32_t hook, int prio, uint32_t policy, uint32_t seq)
{
	add_chain(b, NFPROTO_INET, table, name, type, hook, NULL, prio, policy, seq);
}

void nft_add_chain_dev(struct mnl_nlmsg_batch *b, const char *table, const char *name, const char *dev,
		       int prio, uint32_t seq)
{
	add_chain(b, NFPROTO_NETDEV, table, name, "filter", NF_NETDEV_INGRESS, dev, prio, NF_ACCEPT, seq);
}
