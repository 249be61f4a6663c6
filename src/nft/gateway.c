/* SPDX-License-Identifier: MIT */
#include "nft/gateway.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <nftables/libnftables.h>

int gateway_rules_render(const struct gateway_rules *r, char *buf, size_t len)
{
	int n = snprintf(buf, len,
		"table inet childflow {\n"
		"  chain prerouting {\n"
		"    type filter hook prerouting priority mangle; policy drop;\n"
		"    iif \"lo\" accept\n"
		"    iifname != \"%s\" drop\n"
		"    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept\n"
		"    meta nfproto ipv4 meta l4proto tcp tproxy ip to :%u meta mark set %u accept\n"
		"    meta nfproto ipv6 meta l4proto tcp tproxy ip6 to :%u meta mark set %u accept\n"
		"    meta nfproto ipv4 meta l4proto udp tproxy ip to :%u meta mark set %u accept\n"
		"    meta nfproto ipv6 meta l4proto udp tproxy ip6 to :%u meta mark set %u accept\n"
		"    counter drop\n"
		"  }\n"
		"}\n",
		r->ifname,
		r->tcp_port, GATEWAY_FWMARK, r->tcp_port, GATEWAY_FWMARK,
		r->udp_port, GATEWAY_FWMARK, r->udp_port, GATEWAY_FWMARK);

	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	return n;
}

/* Keep the first line of libnftables' (multi-line, caret-annotated) error text. */
static void first_line(const char *src, char *dst, size_t len)
{
	size_t n = strcspn(src, "\n");

	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

int gateway_rules_load(const struct gateway_rules *r, char *err, size_t errlen)
{
	char ruleset[2048];
	struct nft_ctx *ctx;
	int rc;

	if (gateway_rules_render(r, ruleset, sizeof(ruleset)) < 0) {
		snprintf(err, errlen, "ruleset too long");
		return -1;
	}
	ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!ctx) {
		snprintf(err, errlen, "cannot create an nftables context");
		return -1;
	}
	nft_ctx_buffer_error(ctx);
	rc = nft_run_cmd_from_buffer(ctx, ruleset);
	if (rc != 0) {
		const char *msg = nft_ctx_get_error_buffer(ctx);

		first_line(msg && *msg ? msg : "unknown nftables error", err, errlen);
	}
	nft_ctx_free(ctx);
	return rc ? -1 : 0;
}
