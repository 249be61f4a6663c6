/* SPDX-License-Identifier: MIT */
/*
 * nft/expr — expression and batch helpers shared by the rulesets childflow builds with libnftnl
 * (nft/gateway.c: the interception namespace's, nft/host.c: the rootful backend's host table).
 * Internal to src/nft/.
 */
#ifndef CHILDFLOW_NFT_EXPR_H
#define CHILDFLOW_NFT_EXPR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libmnl/libmnl.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>

/* A rule under construction: an expression that cannot be allocated (out of memory, or a libnftnl
 * without it, such as tproxy) fails the whole ruleset rather than leaving a rule without it. */
struct nft_rb {
	struct nftnl_rule *r;
	bool failed;
};

/* Each appends one expression (or a short fixed sequence) to @rb's rule. */
void nft_add_expr(struct nft_rb *rb, struct nftnl_expr *e);
void nft_meta_load(struct nft_rb *rb, uint32_t key);          /* meta KEY -> reg 1 */
void nft_meta_set(struct nft_rb *rb, uint32_t key);           /* reg 1 -> meta KEY */
void nft_cmp(struct nft_rb *rb, uint32_t op, const void *data, uint32_t len);
void nft_cmp_u8(struct nft_rb *rb, uint8_t v);
void nft_imm_data(struct nft_rb *rb, const void *data, uint32_t len);
void nft_verdict(struct nft_rb *rb, int v);
void nft_transport_load(struct nft_rb *rb, uint32_t offset, uint32_t len);
void nft_network_load(struct nft_rb *rb, uint32_t offset, uint32_t len);
/* iifname/oifname (@key NFT_META_IIFNAME or _OIFNAME) @op (NFT_CMP_EQ, _NEQ) @name */
void nft_ifname(struct nft_rb *rb, uint32_t key, uint32_t op, const char *name);
/* ct state & @bits != 0 (bits: NF_CT_STATE_BIT values) */
void nft_ct_state(struct nft_rb *rb, uint32_t bits);
/* reg 1 &= @mask (@len bytes, at most 16) */
void nft_and(struct nft_rb *rb, const void *mask, uint32_t len);
void nft_masquerade(struct nft_rb *rb);

/* nft_masquerade_ports() - masquerade to a source port (ICMP: id) in @min..@max (host order). */
void nft_masquerade_ports(struct nft_rb *rb, uint16_t min, uint16_t max);

/* A base chain @name of @type ("filter", "nat") on @hook at @prio in table @table (family inet). */
void nft_add_chain(struct mnl_nlmsg_batch *b, const char *table, const char *name, const char *type,
		   uint32_t hook, int prio, uint32_t policy, uint32_t seq);

/* An ingress chain @name (type filter, policy accept) on device @dev at @prio in table @table
 * (family netdev). */
void nft_add_chain_dev(struct mnl_nlmsg_batch *b, const char *table, const char *name, const char *dev,
		       int prio, uint32_t seq);

/*
 * nft_add_rule() - append one rule to batch @b (a buffer of @len bytes): in table @table (family
 * inet), chain @chain, its expressions made by @build(rb, @id, @arg); @ack asks for the kernel's ACK.
 * Return: 0; -ENOSPC when @b has no room for another message, -ENOMEM, or -EOPNOTSUPP when an
 * expression could not be made (nothing is appended then).
 */
/*
 * nft_begin_table() - start batch @b (a buffer of @len bytes) with its begin message and table
 * @name of @family (@tflags: the table's flags, @nlflags: NLM_F_* of its message), numbered from
 * *@seq on.  nft_end_batch() - its end message.  Return: 0 (nft_end_batch: the batch's length), or
 * -ENOSPC / -ENOMEM.
 */
int nft_begin_table(struct mnl_nlmsg_batch *b, size_t len, const char *name, uint16_t family, uint32_t tflags,
		    uint16_t nlflags, uint32_t *seq);
int nft_end_batch(struct mnl_nlmsg_batch *b, size_t len, uint32_t seq);

int nft_add_rule(struct mnl_nlmsg_batch *b, size_t len, const char *table, const char *chain,
		 void (*build)(struct nft_rb *rb, int id, const void *arg), int id, const void *arg,
		 bool ack, uint32_t seq);
/* The same in a table of @family (NFPROTO_INET, NFPROTO_NETDEV). */
int nft_add_rule_family(struct mnl_nlmsg_batch *b, size_t len, uint16_t family, const char *table,
			const char *chain, void (*build)(struct nft_rb *rb, int id, const void *arg), int id,
			const void *arg, bool ack, uint32_t seq);

/*
 * nft_send_batch() - open an nfnetlink socket, send @len bytes of @batch and wait for the ACK of
 * @last_seq.  *@nl is the socket (the caller closes it; an owned table lives as long as it does),
 * or NULL when none could be opened.  Return: 0, or -errno.
 */
int nft_send_batch(const void *batch, size_t len, uint32_t last_seq, struct mnl_socket **nl);

/* Read from @nl until the ACK of @last_seq, or the first error.  Return: 0 or -errno. */
int nft_wait_ack(struct mnl_socket *nl, uint32_t last_seq);

#endif
