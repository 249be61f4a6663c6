/* SPDX-License-Identifier: MIT */
/* policy — the decision point (see policy.h). */
#include "policy/policy.h"

#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

int policy_init(struct policy *p, const struct netplan *net)
{
	memset(p, 0, sizeof(*p));
	return guard_init(&p->guard, net);
}

void policy_free(struct policy *p)
{
	guard_free(&p->guard);
}

int policy_fd(const struct policy *p)
{
	return guard_fd(&p->guard);
}

void policy_on_notify(struct policy *p)
{
	guard_on_notify(&p->guard);
}

struct policy_verdict policy_decide(struct policy *p, const struct policy_query *q)
{
	struct sockaddr_storage icmp_dst;
	const struct sockaddr *dst = q->dst;
	enum guard_verdict g;

	if (q->proto == POL_ICMP) {
		/* ICMP has no port, and the guard refuses port 0 as unspecified: only the address is
		 * judged, so any port will do */
		memset(&icmp_dst, 0, sizeof(icmp_dst));
		memcpy(&icmp_dst, q->dst, q->dst->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
									 : sizeof(struct sockaddr_in));
		((struct sockaddr_in *)&icmp_dst)->sin_port = htons(1);   /* same offset in sockaddr_in6 */
		dst = (const struct sockaddr *)&icmp_dst;
	}
	g = guard_check(&p->guard, dst);

	if (g != GUARD_ALLOW)
		return (struct policy_verdict){ .action = POL_DENY, .reason = guard_reason(g) };
	if (q->proto == POL_TCP && p->proxy_tcp)
		return (struct policy_verdict){ .action = POL_PROXY, .reason = "default route: proxy" };
	return (struct policy_verdict){ .action = POL_DIRECT, .reason = "default route: direct" };
}

void policy_check_connected(struct policy *p, const int *fds, const struct sockaddr_storage *dsts, int n,
			    struct policy_verdict *out)
{
	enum guard_verdict g[POLICY_BATCH_MAX];

	if (n > POLICY_BATCH_MAX)
		n = POLICY_BATCH_MAX;
	guard_check_connected_many(&p->guard, fds, dsts, n, g);
	for (int i = 0; i < n; i++)
		out[i] = g[i] != GUARD_ALLOW
			? (struct policy_verdict){ .action = POL_DENY, .reason = guard_reason(g[i]) }
			: (struct policy_verdict){ .action = POL_DIRECT, .reason = "default route: direct" };
}

bool policy_known_clean(struct policy *p, const struct sockaddr_storage *dst)
{
	return guard_peer_known_clean(&p->guard, dst);
}
