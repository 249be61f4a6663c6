/* SPDX-License-Identifier: MIT */
/* capture/ctwatch — the tree's routed flows, from the host's conntrack events (see ctwatch.h). */
#include "capture/ctwatch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include "util/log.h"

#define CT_RCVBUF (16u << 20)        /* events of a busy host between two drains */

struct ct_watch {
	struct mnl_socket *nl;
	bool have4, have6, told;
	struct in_addr src4;
	struct in6_addr src6;
	ct_flow_fn fn;
	void *priv;
};

/* One tuple as read from the event. */
struct ct_tuple {
	int family;
	uint8_t proto;
	unsigned char src[16], dst[16];
	uint16_t sport, dport;         /* network order; ICMP echo: its identifier, both */
};

struct ct_attrs {
	const struct nlattr **tb;
	int max;
};

static int keep_attr(const struct nlattr *a, void *data)
{
	struct ct_attrs *t = data;
	int type = mnl_attr_get_type(a);

	if (type <= t->max)
		t->tb[type] = a;
	return MNL_CB_OK;
}

/* Read the nested tuple @a into @t.  Return: true when it is a whole TCP or UDP tuple, or an ICMP
 * (ICMPv6) echo's (an entry is made for echo requests alone: errors are related to other entries). */
static bool read_tuple(const struct nlattr *a, int family, struct ct_tuple *t)
{
	const struct nlattr *tt[CTA_TUPLE_MAX + 1] = { 0 }, *ip[CTA_IP_MAX + 1] = { 0 },
			    *pr[CTA_PROTO_MAX + 1] = { 0 };
	size_t alen = family == AF_INET6 ? 16 : 4;
	int s = family == AF_INET6 ? CTA_IP_V6_SRC : CTA_IP_V4_SRC, d = family == AF_INET6 ? CTA_IP_V6_DST : CTA_IP_V4_DST;

	if (mnl_attr_parse_nested(a, keep_attr, &(struct ct_attrs){ tt, CTA_TUPLE_MAX }) < 0 ||
	    !tt[CTA_TUPLE_IP] || !tt[CTA_TUPLE_PROTO] ||
	    mnl_attr_parse_nested(tt[CTA_TUPLE_IP], keep_attr, &(struct ct_attrs){ ip, CTA_IP_MAX }) < 0 ||
	    mnl_attr_parse_nested(tt[CTA_TUPLE_PROTO], keep_attr, &(struct ct_attrs){ pr, CTA_PROTO_MAX }) < 0)
		return false;
	if (!ip[s] || !ip[d] || mnl_attr_get_payload_len(ip[s]) < alen || mnl_attr_get_payload_len(ip[d]) < alen ||
	    !pr[CTA_PROTO_NUM])
		return false;
	t->family = family;
	t->proto = mnl_attr_get_u8(pr[CTA_PROTO_NUM]);
	memcpy(t->src, mnl_attr_get_payload(ip[s]), alen);
	memcpy(t->dst, mnl_attr_get_payload(ip[d]), alen);
	if (t->proto == IPPROTO_TCP || t->proto == IPPROTO_UDP) {
		if (!pr[CTA_PROTO_SRC_PORT] || !pr[CTA_PROTO_DST_PORT])
			return false;
		t->sport = mnl_attr_get_u16(pr[CTA_PROTO_SRC_PORT]);   /* stays in network order */
		t->dport = mnl_attr_get_u16(pr[CTA_PROTO_DST_PORT]);
		return true;
	}
	int id = family == AF_INET6 ? CTA_PROTO_ICMPV6_ID : CTA_PROTO_ICMP_ID;

	if (t->proto != (family == AF_INET6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP) || !pr[id] ||
	    mnl_attr_get_payload_len(pr[id]) < 2)
		return false;
	t->sport = t->dport = mnl_attr_get_u16(pr[id]);
	return true;
}

static void to_addr(union flow_addr *a, int family, const unsigned char *ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	if (family == AF_INET6) {
		a->in6.sin6_family = AF_INET6;
		memcpy(&a->in6.sin6_addr, ip, 16);
		a->in6.sin6_port = port;
	} else {
		a->in4.sin_family = AF_INET;
		memcpy(&a->in4.sin_addr, ip, 4);
		a->in4.sin_port = port;
	}
}

static int on_event(const struct nlmsghdr *nlh, void *data)
{
	struct ct_watch *cw = data;
	const struct nfgenmsg *g = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *tb[CTA_MAX + 1] = { 0 };
	struct ct_tuple orig, reply;
	uint8_t type = (uint8_t)(nlh->nlmsg_type & 0xff);
	union flow_addr local, peer;

	if ((nlh->nlmsg_type >> 8) != NFNL_SUBSYS_CTNETLINK || (type != IPCTNL_MSG_CT_NEW && type != IPCTNL_MSG_CT_DELETE) ||
	    nlh->nlmsg_len < NLMSG_HDRLEN + sizeof(*g) || (g->nfgen_family != AF_INET && g->nfgen_family != AF_INET6))
		return MNL_CB_OK;
	if (mnl_attr_parse(nlh, sizeof(*g), keep_attr, &(struct ct_attrs){ tb, CTA_MAX }) < 0 ||
	    !tb[CTA_TUPLE_ORIG] || !tb[CTA_TUPLE_REPLY] || !read_tuple(tb[CTA_TUPLE_ORIG], g->nfgen_family, &orig) ||
	    !read_tuple(tb[CTA_TUPLE_REPLY], g->nfgen_family, &reply))
		return MNL_CB_OK;
	/* Ours: sent from the uplink's interception-end address (the child's own, bridged by G). */
	if (!(orig.family == AF_INET ? cw->have4 && !memcmp(orig.src, &cw->src4, 4)
				     : cw->have6 && !memcmp(orig.src, &cw->src6, 16)))
		return MNL_CB_OK;
	/* On the wire: remote (reply source) -> the host's address after NAT (reply destination). */
	to_addr(&local, reply.family, reply.dst, reply.dport);
	to_addr(&peer, reply.family, reply.src, reply.sport);
	cw->fn(cw->priv, reply.proto, &local, &peer, type == IPCTNL_MSG_CT_NEW);
	return MNL_CB_OK;
}

/* Does this namespace's conntrack send events at all (net.netfilter.nf_conntrack_events != 0)? */
static bool events_enabled(void)
{
	FILE *f = fopen("/proc/sys/net/netfilter/nf_conntrack_events", "re");
	int v = 1;

	if (!f)
		return true;   /* not loaded yet: it loads with its default (events on) */
	if (fscanf(f, "%d", &v) != 1)
		v = 1;
	fclose(f);
	return v != 0;
}

struct ct_watch *ct_watch_open(void)
{
	struct ct_watch *cw;
	int sz = (int)CT_RCVBUF;

	if (!events_enabled()) {
		log_error("error: -C egress, both and wire-egress with --root follow the host's conntrack events, "
			  "and net.netfilter.nf_conntrack_events is 0 here; set it to 2 (or 1), or use -C child");
		return NULL;
	}
	cw = calloc(1, sizeof(*cw));
	if (!cw) {
		log_error("cannot start the capture: %s", strerror(ENOMEM));
		return NULL;
	}
	cw->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (!cw->nl ||
	    mnl_socket_bind(cw->nl, NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_DESTROY, MNL_SOCKET_AUTOPID) < 0) {
		log_error("error: cannot follow the host's connection tracking (ctnetlink) for the capture: %s "
			  "(is nf_conntrack_netlink available?); use -C child", strerror(errno));
		ct_watch_free(cw);
		return NULL;
	}
	/* As root the limit does not apply; a smaller buffer is only a higher chance of ENOBUFS. */
	if (setsockopt(mnl_socket_get_fd(cw->nl), SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) < 0)
		setsockopt(mnl_socket_get_fd(cw->nl), SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	return cw;
}

void ct_watch_source(struct ct_watch *cw, const struct in_addr *v4, const struct in6_addr *v6)
{
	cw->have4 = v4 != NULL;
	cw->have6 = v6 != NULL;
	if (v4)
		cw->src4 = *v4;
	if (v6)
		cw->src6 = *v6;
}

void ct_watch_drain(struct ct_watch *cw, ct_flow_fn fn, void *priv)
{
	static unsigned char buf[1u << 16];

	cw->fn = fn;
	cw->priv = priv;
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(cw->nl, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ENOBUFS) {
			if (!cw->told)
				log_warn("capture: the host made connections faster than their conntrack events "
					 "were read; flows that started then may be missing from the capture");
			cw->told = true;
			continue;
		}
		if (n <= 0)
			return;   /* EAGAIN: all read */
		mnl_cb_run(buf, (size_t)n, 0, 0, on_event, cw);
	}
}

void ct_watch_free(struct ct_watch *cw)
{
	if (!cw)
		return;
	if (cw->nl)
		mnl_socket_close(cw->nl);
	free(cw);
}
