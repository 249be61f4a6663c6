/* SPDX-License-Identifier: MIT */
#include "sandbox/gwproto.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int gw_send(int sock, struct gw_msg h, const void *payload, size_t len, const int *fds, int nfds)
{
	unsigned char buf[sizeof(struct gw_msg) + GW_MAX_PAYLOAD];

	if (len > GW_MAX_PAYLOAD || nfds < 0 || nfds > FDPASS_MAX)
		return -EINVAL;
	h.len = (uint32_t)len;
	memcpy(buf, &h, sizeof(h));
	if (len)
		memcpy(buf + sizeof(h), payload, len);
	return fdpass_send(sock, buf, sizeof(h) + len, fds, nfds);
}

int gw_send_op(int sock, enum gw_op op)
{
	return gw_send(sock, (struct gw_msg){ .op = (uint16_t)op }, NULL, 0, NULL, 0);
}

void gw_close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

int gw_recv(int sock, struct gw_msg *h, void *payload, size_t max, int *fds, int maxfds, int *nfds,
	    int flags)
{
	unsigned char buf[sizeof(struct gw_msg) + GW_MAX_PAYLOAD];
	int dummy[1], ndummy = 0;
	int r;

	if (!fds) {
		fds = dummy;
		maxfds = 0;
		nfds = &ndummy;
	}
	r = fdpass_recv(sock, buf, sizeof(buf), fds, maxfds, nfds, flags);
	if (r == 0)
		return -EPIPE;
	if (r == -EMSGSIZE)
		return -EBADMSG;   /* fdpass_recv closed the fds */
	if (r < 0)
		return r;
	if ((size_t)r >= sizeof(*h))
		memcpy(h, buf, sizeof(*h));
	if ((size_t)r < sizeof(*h) || h->len != (size_t)r - sizeof(*h) || h->len > max) {
		gw_close_fds(fds, *nfds);
		*nfds = 0;
		return -EBADMSG;
	}
	if (h->len)
		memcpy(payload, buf + sizeof(*h), h->len);
	return 0;
}

int gw_expect(int sock, enum gw_op op)
{
	struct gw_msg h;
	int fds[FDPASS_MAX], n = 0;

	if (gw_recv(sock, &h, NULL, 0, fds, FDPASS_MAX, &n, 0) < 0)
		return -1;
	gw_close_fds(fds, n);
	return h.op == op && n == 0 ? 0 : -1;
}
