/* SPDX-License-Identifier: MIT */
#include "netlink/rtlookup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <linux/rtnetlink.h>
#include <libmnl/libmnl.h>

struct rtlookup {
	struct mnl_socket *sock;
	unsigned int seq;
	unsigned int portid;
};

struct rtlookup *rtlookup_open(void)
{
	struct rtlookup *rl = calloc(1, sizeof(*rl));

	if (!rl)
		return NULL;
	rl->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (!rl->sock || mnl_socket_bind(rl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
		int e = errno;

		if (rl->sock)
			mnl_socket_close(rl->sock);
		free(rl);
		errno = e;
		return NULL;
	}
	rl->portid = mnl_socket_get_portid(rl->sock);
	rl->seq = (unsigned int)time(NULL);
	return rl;
}

void rtlookup_close(struct rtlookup *rl)
{
	if (!rl)
		return;
	mnl_socket_close(rl->sock);
	free(rl);
}

static int attr_cb(const struct nlattr *attr, void *data)
{
	struct rt_answer *ans = data;

	if (mnl_attr_get_type(attr) == RTA_OIF && mnl_attr_validate(attr, MNL_TYPE_U32) == 0)
		ans->oif = (int)mnl_attr_get_u32(attr);
	return MNL_CB_OK;
}

/* One message of the reply: 1 = answered, 0 = not ours (skip), -errno = failure. */
static int parse_one(const struct nlmsghdr *nlh, unsigned int seq, struct rt_answer *ans)
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
	if (mnl_attr_parse(nlh, sizeof(*rtm), attr_cb, ans) < 0)
		return -EBADMSG;
	return 1;
}

int rtlookup_get(struct rtlookup *rl, int family, const void *addr, struct rt_answer *ans)
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
	nlh->nlmsg_seq = ++rl->seq;
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = (unsigned char)family;
	rtm->rtm_dst_len = (unsigned char)(alen * 8);
	mnl_attr_put(nlh, RTA_DST, alen, addr);
	if (mnl_socket_sendto(rl->sock, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		/* Non-blocking: the kernel queued its answer before sendto() returned. */
		ssize_t n = mnl_socket_recvfrom(rl->sock, buf, sizeof(buf));
		int len;

		if (n < 0)
			return -errno;
		len = (int)n;
		for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; mnl_nlmsg_ok(h, len);
		     h = mnl_nlmsg_next(h, &len)) {
			int r = parse_one(h, rl->seq, ans);

			if (r)
				return r < 0 ? r : 0;
		}
	}
}
