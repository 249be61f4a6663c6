/* SPDX-License-Identifier: MIT */
/* netlink/nfq — NFQUEUE messages of the SYN gate (see nfq.h). */
#include "netlink/nfq.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libmnl/libmnl.h>

static struct nlmsghdr *nfq_hdr(void *buf, uint16_t type, uint16_t queue, uint16_t flags, uint32_t seq)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct nfgenmsg *g;

	nlh->nlmsg_type = (uint16_t)((NFNL_SUBSYS_QUEUE << 8) | type);
	nlh->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
	nlh->nlmsg_seq = seq;
	g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->nfgen_family = AF_UNSPEC;
	g->version = NFNETLINK_V0;
	g->res_id = htons(queue);
	return nlh;
}

/* Send one config message and wait for its acknowledgement.  Return: 0 or -errno. */
static int config_send(int fd, struct nlmsghdr *nlh)
{
	char buf[8192];
	struct timeval tv = { .tv_sec = 2 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (send(fd, nlh, nlh->nlmsg_len, 0) < 0)
		return -errno;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		int left;

		if (n < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		left = (int)n;
		for (const struct nlmsghdr *h = (const void *)buf; mnl_nlmsg_ok(h, left); h = mnl_nlmsg_next(h, &left)) {
			if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_seq == nlh->nlmsg_seq) {
				const struct nlmsgerr *e = mnl_nlmsg_get_payload(h);

				return e->error;
			}
		}
	}
}

int nfq_bind(int fd, uint16_t queue, uint32_t copy_range, uint32_t maxlen)
{
	char buf[256];
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	struct nfqnl_msg_config_cmd cmd = { .command = NFQNL_CFG_CMD_BIND };
	struct nfqnl_msg_config_params params = { .copy_range = htonl(copy_range),
						  .copy_mode = NFQNL_COPY_PACKET };
	uint32_t seq = (uint32_t)time(NULL);
	struct nlmsghdr *nlh;
	int r;

	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	nlh = nfq_hdr(buf, NFQNL_MSG_CONFIG, queue, NLM_F_ACK, seq++);
	mnl_attr_put(nlh, NFQA_CFG_CMD, sizeof(cmd), &cmd);
	if ((r = config_send(fd, nlh)) < 0)
		return r;
	nlh = nfq_hdr(buf, NFQNL_MSG_CONFIG, queue, NLM_F_ACK, seq++);
	mnl_attr_put(nlh, NFQA_CFG_PARAMS, sizeof(params), &params);
	mnl_attr_put_u32(nlh, NFQA_CFG_QUEUE_MAXLEN, htonl(maxlen));
	return config_send(fd, nlh);
}

int nfq_parse(const void *buf, size_t len, struct nfq_packet *p)
{
	const struct nlmsghdr *nlh = buf;
	const struct nlattr *a;
	bool have_hdr = false;

	if (len < sizeof(*nlh) || nlh->nlmsg_len > len ||
	    nlh->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
		return 0;
	if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nfgenmsg)))
		return -EBADMSG;
	memset(p, 0, sizeof(*p));
	mnl_attr_for_each(a, nlh, sizeof(struct nfgenmsg)) {
		uint16_t type = mnl_attr_get_type(a), plen = mnl_attr_get_payload_len(a);

		if ((const uint8_t *)mnl_attr_get_payload(a) + plen > (const uint8_t *)buf + nlh->nlmsg_len)
			return -EBADMSG;
		if (type == NFQA_PACKET_HDR && plen >= sizeof(struct nfqnl_msg_packet_hdr)) {
			const struct nfqnl_msg_packet_hdr *h = mnl_attr_get_payload(a);

			p->id = ntohl(h->packet_id);
			have_hdr = true;
		} else if (type == NFQA_PAYLOAD) {
			p->payload = mnl_attr_get_payload(a);
			p->len = plen;
		}
	}
	/* libmnl walks attributes up to the aligned end of the message: one that reaches past
	 * nlmsg_len itself (an unaligned length) is not part of it */
	if (!have_hdr || !p->payload || p->payload + p->len > (const uint8_t *)buf + nlh->nlmsg_len)
		return -EBADMSG;
	return 1;
}

/* The TCP header at @th (@len bytes left): a bare SYN (no ACK, RST, FIN)?  Fills ports and ISN. */
static int tcp_syn(const uint8_t *th, size_t len, uint16_t *sport, uint16_t *dport, uint32_t *isn)
{
	if (len < 20)
		return -EINVAL;
	if ((th[13] & 0x17) != 0x02)
		return -EINVAL;
	memcpy(sport, th, 2);
	memcpy(dport, th + 2, 2);
	*isn = (uint32_t)th[4] << 24 | (uint32_t)th[5] << 16 | (uint32_t)th[6] << 8 | th[7];
	return 0;
}

/*
 * ip_locate() - the addresses, TTL / hop limit and transport header of the IPv4 or IPv6 packet at
 * @pkt (@len bytes); IPv6 hop-by-hop (0), routing (43) and destination options (60) headers are
 * skipped.  A fragment (IPv4 MF or offset, IPv6 header 44) is not a packet we can judge whole.
 * Return: the transport protocol with *@off its header's offset, or -EINVAL.
 */
static int ip_locate(const uint8_t *pkt, size_t len, struct sockaddr_storage *src,
		     struct sockaddr_storage *dst, uint8_t *ttl, size_t *off)
{
	if (len < 1)
		return -EINVAL;
	if ((pkt[0] >> 4) == 4) {
		struct sockaddr_in *s = (struct sockaddr_in *)src, *d = (struct sockaddr_in *)dst;
		size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;

		if (len < 20 || ihl < 20 || ihl > len)
			return -EINVAL;
		if ((pkt[6] & 0x3f) || pkt[7])           /* MF set or a fragment offset */
			return -EINVAL;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, pkt + 12, 4);
		memcpy(&d->sin_addr, pkt + 16, 4);
		*ttl = pkt[8];
		*off = ihl;
		return pkt[9];
	}
	if ((pkt[0] >> 4) == 6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)src, *d = (struct sockaddr_in6 *)dst;
		size_t o = 40;
		uint8_t nh;

		if (len < 40)
			return -EINVAL;
		nh = pkt[6];
		for (int hops = 0; nh == 0 || nh == 43 || nh == 60; hops++) {
			if (hops > 8 || o + 8 > len)
				return -EINVAL;
			nh = pkt[o];
			o += ((size_t)pkt[o + 1] + 1) * 8;
		}
		if (o > len || nh == 44)
			return -EINVAL;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, pkt + 8, 16);
		memcpy(&d->sin6_addr, pkt + 24, 16);
		*ttl = pkt[7];
		*off = o;
		return nh;
	}
	return -EINVAL;
}

int nfq_syn_parse(const uint8_t *pkt, size_t len, struct nfq_syn *out)
{
	size_t off;
	int proto;

	memset(out, 0, sizeof(*out));
	proto = ip_locate(pkt, len, &out->src, &out->dst, &out->ttl, &off);
	if (proto != IPPROTO_TCP)
		return -EINVAL;
	/* sin_port and sin6_port sit at the same offset */
	return tcp_syn(pkt + off, len - off, &((struct sockaddr_in *)&out->src)->sin_port,
		       &((struct sockaddr_in *)&out->dst)->sin_port, &out->isn);
}

int nfq_echo_parse(const uint8_t *pkt, size_t len, struct nfq_echo *out)
{
	size_t off;
	int proto;

	memset(out, 0, sizeof(*out));
	proto = ip_locate(pkt, len, &out->src, &out->dst, &out->ttl, &off);
	if (proto < 0 || len - off < 8)
		return -EINVAL;
	/* the family from the packet: the addresses were written through sockaddr_in(6) pointers */
	if (!((pkt[0] >> 4) == 4 && proto == IPPROTO_ICMP && pkt[off] == 8) &&
	    !((pkt[0] >> 4) == 6 && proto == IPPROTO_ICMPV6 && pkt[off] == 128))
		return -EINVAL;
	if (pkt[off + 1] != 0)
		return -EINVAL;
	out->id = (uint16_t)(pkt[off + 4] << 8 | pkt[off + 5]);
	out->seq = (uint16_t)(pkt[off + 6] << 8 | pkt[off + 7]);
	out->data = pkt + off + 8;
	out->data_len = len - off - 8;
	return 0;
}

size_t nfq_verdict_put(void *buf, size_t room, uint16_t queue, uint32_t id, uint32_t verdict, uint32_t mark)
{
	const size_t need = MNL_ALIGN(sizeof(struct nlmsghdr)) + MNL_ALIGN(sizeof(struct nfgenmsg)) +
			    MNL_ATTR_HDRLEN + MNL_ALIGN(sizeof(struct nfqnl_msg_verdict_hdr)) +
			    MNL_ATTR_HDRLEN + MNL_ALIGN(sizeof(uint32_t));
	struct nfqnl_msg_verdict_hdr vh = { .verdict = htonl(verdict), .id = htonl(id) };
	struct nlmsghdr *nlh;

	if (room < need)
		return 0;
	nlh = nfq_hdr(buf, NFQNL_MSG_VERDICT, queue, 0, 0);
	mnl_attr_put(nlh, NFQA_VERDICT_HDR, sizeof(vh), &vh);
	if (mark)
		mnl_attr_put_u32(nlh, NFQA_MARK, htonl(mark));
	return nlh->nlmsg_len;
}
