/* SPDX-License-Identifier: MIT */
#include "netlink/nl.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <linux/fib_rules.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <libmnl/libmnl.h>
#include <sys/socket.h>

struct nl {
	struct mnl_socket *sock;
	unsigned int seq;
	unsigned int portid;
};

struct nl *nl_open(void)
{
	return nl_open_flags(0);
}

struct nl *nl_open_flags(int sock_flags)
{
	struct nl *nl = calloc(1, sizeof(*nl));

	if (!nl)
		return NULL;
	nl->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | sock_flags);
	if (!nl->sock || mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
		int e = errno;

		if (nl->sock)
			mnl_socket_close(nl->sock);
		free(nl);
		errno = e;
		return NULL;
	}
	nl->portid = mnl_socket_get_portid(nl->sock);
	nl->seq = (unsigned int)time(NULL);
	return nl;
}

void nl_close(struct nl *nl)
{
	if (!nl)
		return;
	mnl_socket_close(nl->sock);
	free(nl);
}

/* Send one request and wait for its ACK; returns 0 or the kernel's -errno. */
static int nl_talk(struct nl *nl, struct nlmsghdr *nlh)
{
	char buf[8192];
	ssize_t n;
	int r;

	nlh->nlmsg_seq = ++nl->seq;
	nlh->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	do {
		n = mnl_socket_recvfrom(nl->sock, buf, sizeof(buf));
		if (n < 0)
			return -errno;
		r = mnl_cb_run(buf, n, nlh->nlmsg_seq, nl->portid, NULL, NULL);
	} while (r > 0);
	return r < 0 ? -errno : 0;
}

static struct nlmsghdr *put_header(char *buf, uint16_t type, uint16_t flags)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	return nlh;
}

int nl_link_up(struct nl *nl, int ifindex, unsigned int mtu)
{
	char buf[512];
	struct nlmsghdr *nlh = put_header(buf, RTM_NEWLINK, 0);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));

	ifm->ifi_family = AF_UNSPEC;
	ifm->ifi_index = ifindex;
	ifm->ifi_flags = IFF_UP;
	ifm->ifi_change = IFF_UP;
	if (mtu)
		mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
	return nl_talk(nl, nlh);
}

int nl_veth_create(struct nl *nl, const char *name, const char *peer, pid_t peer_pid, unsigned int mtu,
		   const uint8_t *peer_mac)
{
	char buf[1024];
	struct nlmsghdr *nlh = put_header(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));

	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	if (mtu)
		mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
	struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	struct nlattr *peerinfo = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	struct ifinfomsg *pifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*pifm));

	pifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, peer);
	if (mtu)
		mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
	if (peer_mac)
		mnl_attr_put(nlh, IFLA_ADDRESS, 6, peer_mac);
	mnl_attr_put_u32(nlh, IFLA_NET_NS_PID, (uint32_t)peer_pid);
	mnl_attr_nest_end(nlh, peerinfo);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, linkinfo);
	return nl_talk(nl, nlh);
}

int nl_link_del(struct nl *nl, const char *name)
{
	char buf[256];
	struct nlmsghdr *nlh = put_header(buf, RTM_DELLINK, 0);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));

	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	return nl_talk(nl, nlh);
}

static size_t addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

int nl_addr_add(struct nl *nl, int ifindex, int family, const void *addr, int prefixlen)
{
	char buf[512];
	struct nlmsghdr *nlh = put_header(buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));

	ifa->ifa_family = family;
	ifa->ifa_prefixlen = prefixlen;
	ifa->ifa_index = ifindex;
	/* No duplicate address detection: the link has exactly two ends and both are ours. */
	ifa->ifa_flags = family == AF_INET6 ? IFA_F_NODAD : 0;
	mnl_attr_put(nlh, IFA_LOCAL, addr_len(family), addr);
	mnl_attr_put(nlh, IFA_ADDRESS, addr_len(family), addr);
	return nl_talk(nl, nlh);
}

int nl_neigh_add(struct nl *nl, int ifindex, int family, const void *addr, const uint8_t *mac)
{
	char buf[256];
	struct nlmsghdr *nlh = put_header(buf, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
	struct ndmsg *nd = mnl_nlmsg_put_extra_header(nlh, sizeof(*nd));

	nd->ndm_family = (uint8_t)family;
	nd->ndm_ifindex = ifindex;
	nd->ndm_state = NUD_PERMANENT;
	mnl_attr_put(nlh, NDA_DST, addr_len(family), addr);
	mnl_attr_put(nlh, NDA_LLADDR, 6, mac);
	return nl_talk(nl, nlh);
}

int nl_route_add(struct nl *nl, int family, uint32_t table, int type, int oif, const void *gw)
{
	char buf[512];
	struct nlmsghdr *nlh = put_header(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));

	rtm->rtm_family = family;
	rtm->rtm_table = table < 256 ? table : RT_TABLE_UNSPEC;
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_type = type;
	rtm->rtm_scope = type == RTN_LOCAL ? RT_SCOPE_HOST : RT_SCOPE_UNIVERSE;
	if (table >= 256)
		mnl_attr_put_u32(nlh, RTA_TABLE, table);
	mnl_attr_put_u32(nlh, RTA_OIF, oif);
	if (gw)
		mnl_attr_put(nlh, RTA_GATEWAY, addr_len(family), gw);
	return nl_talk(nl, nlh);
}

int nl_rule_add_fwmark(struct nl *nl, int family, uint32_t mark, uint32_t table, uint32_t prio)
{
	char buf[512];
	struct nlmsghdr *nlh = put_header(buf, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL);
	struct fib_rule_hdr *fr = mnl_nlmsg_put_extra_header(nlh, sizeof(*fr));

	fr->family = family;
	fr->action = FR_ACT_TO_TBL;
	fr->table = table < 256 ? table : RT_TABLE_UNSPEC;
	if (table >= 256)
		mnl_attr_put_u32(nlh, FRA_TABLE, table);
	mnl_attr_put_u32(nlh, FRA_FWMARK, mark);
	mnl_attr_put_u32(nlh, FRA_PRIORITY, prio);
	return nl_talk(nl, nlh);
}

struct link_state {
	int ifindex;
	bool ready;
	const char *qdisc;
	bool oper_down;
};

static int link_attr_cb(const struct nlattr *a, void *data)
{
	struct link_state *st = data;

	if (mnl_attr_get_type(a) == IFLA_QDISC && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
		st->qdisc = mnl_attr_get_str(a);
	if (mnl_attr_get_type(a) == IFLA_OPERSTATE && mnl_attr_validate(a, MNL_TYPE_U8) >= 0)
		st->oper_down = mnl_attr_get_u8(a) == IF_OPER_DOWN;
	return MNL_CB_OK;
}

static int link_msg_cb(const struct nlmsghdr *nlh, void *data)
{
	struct link_state *st = data;
	const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);

	if (nlh->nlmsg_type != RTM_NEWLINK || ifm->ifi_index != st->ifindex)
		return MNL_CB_OK;
	st->qdisc = NULL;
	st->oper_down = true;
	mnl_attr_parse(nlh, sizeof(*ifm), link_attr_cb, st);
	/* Carrier, an operational state that is not "down", and a real qdisc (the kernel's linkwatch
	 * swaps "noop", which drops every frame, for the device's own qdisc right after operstate). */
	st->ready = (ifm->ifi_flags & IFF_UP) && (ifm->ifi_flags & IFF_LOWER_UP) && !st->oper_down &&
		    st->qdisc && strcmp(st->qdisc, "noop") != 0;
	return MNL_CB_OK;
}

/* Send @nlh (built in @buf) and run @cb(@data) over the answers, until *@done or the dump's end.
 * Return: 0, or -errno. */
static int link_query(struct nl *nl, struct nlmsghdr *nlh, char *buf, size_t size, mnl_cb_t cb, void *data,
		      const bool *done)
{
	ssize_t n;
	int r;

	nlh->nlmsg_seq = ++nl->seq;
	if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	do {
		n = mnl_socket_recvfrom(nl->sock, buf, size);
		if (n < 0)
			return -errno;
		r = mnl_cb_run(buf, n, nl->seq, nl->portid, cb, data);
	} while (r > 0 && !*done);
	return r < 0 ? -errno : 0;
}

/* One RTM_GETLINK for @ifindex.  Return: 1 ready, 0 not yet, or -errno. */
static int link_ready(struct nl *nl, int ifindex)
{
	char buf[8192];
	struct nlmsghdr *nlh = put_header(buf, RTM_GETLINK, 0);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	struct link_state st = { .ifindex = ifindex };
	int r;

	ifm->ifi_family = AF_UNSPEC;
	ifm->ifi_index = ifindex;
	if ((r = link_query(nl, nlh, buf, sizeof(buf), link_msg_cb, &st, &st.ready)) < 0)
		return r;
	return st.ready ? 1 : 0;
}

int nl_link_wait_ready(struct nl *nl, int ifindex, int timeout_ms)
{
	struct mnl_socket *mon = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
	struct timespec t0, now;
	int r;

	/* Subscribe before the first look, so that no change can slip between the two. */
	if (!mon || mnl_socket_bind(mon, RTMGRP_LINK, MNL_SOCKET_AUTOPID) < 0) {
		r = -errno;
		if (mon)
			mnl_socket_close(mon);
		return r;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd pf = { .fd = mnl_socket_get_fd(mon), .events = POLLIN };
		char drain[8192];
		long left;

		r = link_ready(nl, ifindex);
		if (r != 0)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		left = timeout_ms - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0) {
			r = -ETIMEDOUT;
			break;
		}
		/* Any link notification (or 5 ms, in case the qdisc swap is not announced) means: look again. */
		if (poll(&pf, 1, left < 5 ? (int)left : 5) > 0)
			while (recv(pf.fd, drain, sizeof(drain), 0) > 0)
				;
	}
	mnl_socket_close(mon);
	return r < 0 ? r : 0;
}

struct link_flags {
	bool found;
	unsigned int flags;
};

static int link_flags_cb(const struct nlmsghdr *nlh, void *data)
{
	struct link_flags *lf = data;
	const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);

	if (nlh->nlmsg_type != RTM_NEWLINK || mnl_nlmsg_get_payload_len(nlh) < sizeof(*ifm))
		return MNL_CB_OK;
	lf->found = true;
	lf->flags = ifm->ifi_flags;
	return MNL_CB_STOP;
}

int nl_link_state(struct nl *nl, const char *name, bool *up, bool *carrier)
{
	char buf[8192];
	struct nlmsghdr *nlh = put_header(buf, RTM_GETLINK, 0);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	struct link_flags lf = { .found = false };
	int r;

	if (strlen(name) >= IFNAMSIZ)
		return -ENODEV;
	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	if ((r = link_query(nl, nlh, buf, sizeof(buf), link_flags_cb, &lf, &lf.found)) < 0)
		return r;
	if (!lf.found)
		return -ENODEV;
	*up = lf.flags & IFF_UP;
	*carrier = lf.flags & IFF_LOWER_UP;
	return 0;
}

/* ---------- route lookups (RTM_GETROUTE) ---------- */

static int route_attr_cb(const struct nlattr *attr, void *data)
{
	struct rt_answer *ans = data;

	if (mnl_attr_get_type(attr) == RTA_OIF && mnl_attr_validate(attr, MNL_TYPE_U32) == 0)
		ans->oif = (int)mnl_attr_get_u32(attr);
	return MNL_CB_OK;
}

/* One message of the reply: 1 = answered, 0 = not ours (skip), -errno = failure. */
static int route_parse_one(const struct nlmsghdr *nlh, unsigned int seq, struct rt_answer *ans)
{
	if (nlh->nlmsg_seq != seq)
		return 0;   /* left over from an earlier request that failed half-way */
	if (nlh->nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
		int err;

		if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*e)))
			return -EBADMSG;
		err = -e->error;
		if (err == ENETUNREACH || err == EHOSTUNREACH || err == EACCES) {
			ans->type = RTN_UNREACHABLE;
			ans->error = err;
			return 1;
		}
		return err > 0 ? -err : -EBADMSG;
	}
	if (nlh->nlmsg_type != RTM_NEWROUTE || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct rtmsg)))
		return -EBADMSG;
	const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);

	ans->type = rtm->rtm_type;
	if (mnl_attr_parse(nlh, sizeof(*rtm), route_attr_cb, ans) < 0)
		return -EBADMSG;
	return 1;
}

int nl_route_get(struct nl *nl, int family, const void *addr, struct rt_answer *ans)
{
	char buf[8192];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct rtmsg *rtm;
	size_t alen = family == AF_INET ? 4 : 16;

	if (family != AF_INET && family != AF_INET6)
		return -EAFNOSUPPORT;
	memset(ans, 0, sizeof(*ans));
	nlh->nlmsg_type = RTM_GETROUTE;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	nlh->nlmsg_seq = ++nl->seq;
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = (unsigned char)family;
	rtm->rtm_dst_len = (unsigned char)(alen * 8);
	mnl_attr_put(nlh, RTA_DST, alen, addr);
	if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		/* Non-blocking: the kernel queued its answer before sendto() returned. */
		ssize_t n = mnl_socket_recvfrom(nl->sock, buf, sizeof(buf));
		int len;

		if (n < 0)
			return -errno;
		len = (int)n;
		for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; mnl_nlmsg_ok(h, len);
		     h = mnl_nlmsg_next(h, &len)) {
			int r = route_parse_one(h, nl->seq, ans);

			if (r)
				return r < 0 ? r : 0;
		}
	}
}

/* ---------- policy routing: rules by source, per-run tables ---------- */

int nl_rule_src(struct nl *nl, bool add, int family, const void *src, uint32_t table, uint32_t prio)
{
	char buf[512];
	struct nlmsghdr *nlh = put_header(buf, add ? RTM_NEWRULE : RTM_DELRULE, add ? NLM_F_CREATE | NLM_F_EXCL : 0);
	struct fib_rule_hdr *fr = mnl_nlmsg_put_extra_header(nlh, sizeof(*fr));

	fr->family = (unsigned char)family;
	fr->action = FR_ACT_TO_TBL;
	fr->src_len = (unsigned char)(addr_len(family) * 8);
	fr->table = table < 256 ? (unsigned char)table : RT_TABLE_UNSPEC;
	if (table >= 256)
		mnl_attr_put_u32(nlh, FRA_TABLE, table);
	mnl_attr_put(nlh, FRA_SRC, addr_len(family), src);
	mnl_attr_put_u32(nlh, FRA_PRIORITY, prio);
	return nl_talk(nl, nlh);
}

int nl_route_unreachable(struct nl *nl, int family, uint32_t table, uint32_t metric)
{
	char buf[512];
	struct nlmsghdr *nlh = put_header(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));

	rtm->rtm_family = (unsigned char)family;
	rtm->rtm_table = RT_TABLE_UNSPEC;
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_type = RTN_UNREACHABLE;
	rtm->rtm_scope = RT_SCOPE_UNIVERSE;
	mnl_attr_put_u32(nlh, RTA_TABLE, table);
	mnl_attr_put_u32(nlh, RTA_PRIORITY, metric);
	return nl_talk(nl, nlh);
}

/* The routes of one dump, copied: each message back to back, NLMSG_ALIGNed. */
struct route_list {
	char *buf;
	size_t len, cap;
	int family;
	uint32_t table;     /* keep only this table's routes (RT_TABLE_UNSPEC: all) */
	int oif;            /* and, when > 0, only unicast routes out of this link (no multipath) */
};

struct route_attrs {
	uint32_t table;
	int oif;
	bool multipath;
};

static int route_list_attr_cb(const struct nlattr *a, void *data)
{
	struct route_attrs *ra = data;

	if (mnl_attr_get_type(a) == RTA_TABLE && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
		ra->table = mnl_attr_get_u32(a);
	else if (mnl_attr_get_type(a) == RTA_OIF && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
		ra->oif = (int)mnl_attr_get_u32(a);
	else if (mnl_attr_get_type(a) == RTA_MULTIPATH)
		ra->multipath = true;
	return MNL_CB_OK;
}

static int route_list_cb(const struct nlmsghdr *nlh, void *data)
{
	struct route_list *rl = data;
	const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	struct route_attrs ra = { 0 };
	size_t sz = NLMSG_ALIGN(nlh->nlmsg_len);

	if (nlh->nlmsg_type != RTM_NEWROUTE || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*rtm)) ||
	    rtm->rtm_family != rl->family)
		return MNL_CB_OK;
	ra.table = rtm->rtm_table;
	mnl_attr_parse(nlh, sizeof(*rtm), route_list_attr_cb, &ra);
	if ((rl->table && ra.table != rl->table) || (rtm->rtm_flags & RTM_F_CLONED))
		return MNL_CB_OK;
	if (rl->oif > 0 && (rtm->rtm_type != RTN_UNICAST || ra.oif != rl->oif || ra.multipath))
		return MNL_CB_OK;
	if (rl->len + sz > rl->cap) {
		size_t cap = rl->cap ? rl->cap * 2 : 8192;
		char *nb;

		while (cap < rl->len + sz)
			cap *= 2;
		if (cap > (8u << 20) || !(nb = realloc(rl->buf, cap))) {
			errno = ENOMEM;
			return MNL_CB_ERROR;
		}
		rl->buf = nb;
		rl->cap = cap;
	}
	memcpy(rl->buf + rl->len, nlh, nlh->nlmsg_len);
	rl->len += sz;
	return MNL_CB_OK;
}

/* Dump @rl->family's routes into @rl.  Return: 0 or -errno (then @rl->buf is freed). */
static int route_list_dump(struct nl *nl, struct route_list *rl)
{
	char buf[16384];
	struct nlmsghdr *nlh = put_header(buf, RTM_GETROUTE, NLM_F_DUMP);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	ssize_t n;
	int r;

	rtm->rtm_family = (unsigned char)rl->family;
	nlh->nlmsg_seq = ++nl->seq;
	if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	do {
		n = mnl_socket_recvfrom(nl->sock, buf, sizeof(buf));
		if (n < 0)
			break;
		r = mnl_cb_run(buf, n, nl->seq, nl->portid, route_list_cb, rl);
	} while (r > 0);
	if (n < 0 || r < 0) {
		int e = errno ? errno : EIO;

		free(rl->buf);
		rl->buf = NULL;
		return -e;
	}
	return 0;
}

int nl_routes_copy(struct nl *nl, int family, int oif, uint32_t table, int *n_default)
{
	struct route_list rl = { .family = family, .table = RT_TABLE_MAIN, .oif = oif };
	int r, copied = 0;

	*n_default = 0;
	if (oif <= 0)
		return -EINVAL;
	if ((r = route_list_dump(nl, &rl)) < 0)
		return r;
	for (size_t off = 0; rl.buf && off < rl.len; ) {
		struct nlmsghdr *src = (struct nlmsghdr *)(rl.buf + off);
		const struct rtmsg *srtm = mnl_nlmsg_get_payload(src);
		char buf[1024];
		struct nlmsghdr *nlh = put_header(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
		struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
		const struct nlattr *a;

		off += NLMSG_ALIGN(src->nlmsg_len);
		*rtm = *srtm;
		rtm->rtm_table = RT_TABLE_UNSPEC;
		rtm->rtm_flags = 0;
		rtm->rtm_protocol = RTPROT_BOOT;
		mnl_attr_put_u32(nlh, RTA_TABLE, table);
		mnl_attr_for_each(a, src, sizeof(*srtm)) {
			uint16_t t = mnl_attr_get_type(a);

			if (t == RTA_DST || t == RTA_GATEWAY || t == RTA_OIF || t == RTA_PRIORITY || t == RTA_PREFSRC)
				mnl_attr_put(nlh, t, mnl_attr_get_payload_len(a), mnl_attr_get_payload(a));
		}
		r = nl_talk(nl, nlh);
		if (r == -EEXIST)
			continue;
		if (r < 0)
			break;
		copied++;
		if (srtm->rtm_dst_len == 0)
			(*n_default)++;
	}
	free(rl.buf);
	return r < 0 && r != -EEXIST ? r : copied;
}

int nl_table_routes(struct nl *nl, int family, uint32_t table, bool del, int *n_routes)
{
	struct route_list rl = { .family = family, .table = table };
	int r = 0, first = 0;

	*n_routes = 0;
	if ((r = route_list_dump(nl, &rl)) < 0)
		return r;
	for (size_t off = 0; rl.buf && off < rl.len; ) {
		struct nlmsghdr *m = (struct nlmsghdr *)(rl.buf + off);

		off += NLMSG_ALIGN(m->nlmsg_len);
		(*n_routes)++;
		if (!del)
			continue;
		m->nlmsg_type = RTM_DELROUTE;
		m->nlmsg_flags = NLM_F_REQUEST;
		r = nl_talk(nl, m);
		if (r < 0 && r != -ESRCH && first == 0)
			first = r;
	}
	free(rl.buf);
	return first;
}

int nl_route_each(struct nl *nl, int family,
		  void (*fn)(void *arg, uint32_t table, const void *dst, int dst_len, int oif), void *arg)
{
	struct route_list rl = { .family = family };
	int r;

	if ((r = route_list_dump(nl, &rl)) < 0)
		return r;
	for (size_t off = 0; rl.buf && off < rl.len; ) {
		const struct nlmsghdr *m = (const struct nlmsghdr *)(rl.buf + off);
		const struct rtmsg *rtm = mnl_nlmsg_get_payload(m);
		struct route_attrs ra = { .table = rtm->rtm_table };
		unsigned char dst[16] = { 0 };
		const struct nlattr *a;

		off += NLMSG_ALIGN(m->nlmsg_len);
		mnl_attr_parse(m, sizeof(*rtm), route_list_attr_cb, &ra);
		mnl_attr_for_each(a, m, sizeof(*rtm))
			if (mnl_attr_get_type(a) == RTA_DST && mnl_attr_get_payload_len(a) == addr_len(family))
				memcpy(dst, mnl_attr_get_payload(a), addr_len(family));
		fn(arg, ra.table, dst, rtm->rtm_dst_len, ra.oif);
	}
	free(rl.buf);
	return 0;
}
