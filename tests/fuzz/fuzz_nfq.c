/*
 * libFuzzer target: the SYN gate's and the echo queue's parsers - queued-packet messages, and the
 * SYN or ICMP echo request inside them.
 *
 * Both packets' bytes are written by the sandboxed command (any header it can make with a raw socket
 * of its own namespace), so the parser must survive anything.  The input is read twice: as the
 * network packet itself, and as a netlink buffer of messages walked the way relay/gate.c walks
 * them (relay/echo.c walks its queue the same way).  A crash, a sanitizer report, or a parse that
 * claims bytes beyond the input (a packet, or an echo's data) is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>

#include "netlink/nfq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The echo request in @pkt (@len bytes): its data must lie inside the packet. */
static void echo(const uint8_t *pkt, size_t len)
{
	struct nfq_echo e;

	if (nfq_echo_parse(pkt, len, &e) == 0 && (e.data < pkt || e.data + e.data_len != pkt + len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nfq_syn syn;
	struct nfq_packet p;
	uint8_t *buf;
	size_t off = 0;

	nfq_syn_parse(data, size, &syn);
	echo(data, size);
	/* aligned copy, as a recv() buffer would be */
	buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	while (off + sizeof(struct nlmsghdr) <= size) {
		const struct nlmsghdr *h = (const void *)(buf + off);

		if (h->nlmsg_len < sizeof(*h) || h->nlmsg_len > size - off)
			break;
		if (nfq_parse(h, h->nlmsg_len, &p) > 0) {
			if (p.payload < buf || p.payload + p.len > buf + size)
				abort();
			nfq_syn_parse(p.payload, p.len, &syn);
			echo(p.payload, p.len);
		}
		off += NLMSG_ALIGN(h->nlmsg_len);
	}
	free(buf);
	return 0;
}
