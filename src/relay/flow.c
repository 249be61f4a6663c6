/* SPDX-License-Identifier: MIT */
/* relay/flow — flow life records and their observers (see flow.h). */
#include "relay/flow.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "util/log.h"

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int flow_observe(struct flow_hub *h, const struct flow_observer *o)
{
	if (h->n_obs >= FLOW_MAX_OBSERVERS)
		return -ENOSPC;
	h->obs[h->n_obs++] = *o;
	return 0;
}

void flow_begin(struct flow_hub *h, struct flow_record *f, enum flow_proto proto,
		const struct sockaddr_storage *child, const struct sockaddr_storage *dst)
{
	memset(f, 0, sizeof(*f));
	f->id = ++h->next_id;
	f->proto = proto;
	if (child)
		memcpy(&f->child, child, child->ss_family == AF_INET6 ? sizeof(f->child.in6) : sizeof(f->child.in4));
	if (dst)
		memcpy(&f->dst, dst, dst->ss_family == AF_INET6 ? sizeof(f->dst.in6) : sizeof(f->dst.in4));
	f->t_start_ns = realtime_ns();
	f->outcome = FLOW_OPEN;
	h->n_open++;
}

void flow_opened(struct flow_hub *h, const struct flow_record *f)
{
	for (int i = 0; i < h->n_obs; i++)
		if (h->obs[i].opened)
			h->obs[i].opened(h->obs[i].priv, f);
}

void flow_end(struct flow_hub *h, struct flow_record *f, enum flow_outcome outcome, int err)
{
	if (f->t_end_ns)
		return;   /* already ended */
	if (f->outcome == FLOW_OPEN) {
		f->outcome = outcome;
		f->err = err;
	}
	f->t_end_ns = realtime_ns();
	h->n_open--;
	for (int i = 0; i < h->n_obs; i++)
		if (h->obs[i].closed)
			h->obs[i].closed(h->obs[i].priv, f);
}

void flow_record_at_once(struct flow_hub *h, enum flow_proto proto, const struct sockaddr_storage *child,
			 const struct sockaddr_storage *dst, const char *rule, enum flow_outcome outcome,
			 int err)
{
	struct flow_record rec;

	flow_begin(h, &rec, proto, child, dst);
	rec.rule = rule;
	flow_opened(h, &rec);
	flow_end(h, &rec, outcome, err);
}

const char *flow_outcome_name(enum flow_outcome o)
{
	switch (o) {
	case FLOW_OPEN: return "open";
	case FLOW_OK: return "ok";
	case FLOW_DENIED: return "denied";
	case FLOW_UP_FAILED: return "upstream-failed";
	case FLOW_UP_TIMEOUT: return "upstream-timeout";
	case FLOW_RESET_CHILD: return "reset-by-child";
	case FLOW_RESET_UP: return "reset-by-upstream";
	case FLOW_EVICTED: return "evicted";
	case FLOW_NO_RESOURCES: return "no-resources";
	case FLOW_CUT_AT_EXIT: return "cut-at-exit";
	}
	return "unknown";
}

const char *flow_proto_name(enum flow_proto p)
{
	switch (p) {
	case FLOW_TCP: return "tcp";
	case FLOW_UDP: return "udp";
	case FLOW_ICMP: return "icmp";
	case FLOW_DNS: return "dns";
	}
	return "unknown";
}

socklen_t flow_sa_len(const void *sa)
{
	return ((const struct sockaddr *)sa)->sa_family == AF_INET ? sizeof(struct sockaddr_in)
								   : sizeof(struct sockaddr_in6);
}

size_t flow_endpoint_bytes(const void *sa, unsigned char *out)
{
	if (((const struct sockaddr *)sa)->sa_family == AF_INET) {
		const struct sockaddr_in *a = sa;

		memcpy(out, &a->sin_addr, 4);
		memcpy(out + 4, &a->sin_port, 2);
		return 6;
	}
	const struct sockaddr_in6 *a = sa;
	memcpy(out, &a->sin6_addr, 16);
	memcpy(out + 16, &a->sin6_port, 2);
	return 18;
}

bool flow_same_endpoint(const void *a, const void *b)
{
	unsigned char x[18], y[18];
	size_t n;

	if (((const struct sockaddr *)a)->sa_family != ((const struct sockaddr *)b)->sa_family)
		return false;
	n = flow_endpoint_bytes(a, x);
	flow_endpoint_bytes(b, y);
	return memcmp(x, y, n) == 0;
}

bool flow_orig_dst(struct msghdr *m, struct sockaddr_storage *dst)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) ||
		    (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR)) {
			size_t n = c->cmsg_len - CMSG_LEN(0);

			memset(dst, 0, sizeof(*dst));
			memcpy(dst, CMSG_DATA(c), n < sizeof(*dst) ? n : sizeof(*dst));
			return true;
		}
	}
	return false;
}

char *flow_addr_str(const struct sockaddr *ss, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	if (ss->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		snprintf(buf, len, "%s:%u", a, (unsigned)ntohs(s->sin_port));
	} else if (ss->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		snprintf(buf, len, "[%s]:%u", a, (unsigned)ntohs(s->sin6_port));
	} else {
		snprintf(buf, len, "?");
	}
	return buf;
}

static void debug_closed(void *priv, const struct flow_record *f)
{
	char c[64], d[64];

	(void)priv;
	if (!log_debug_enabled())
		return;
	log_debug("flow %llu %s %s -> %s via %s: %s (%s)%s%s, %llu bytes up, %llu down, %.3f ms",
		  (unsigned long long)f->id, flow_proto_name(f->proto), flow_addr_str(&f->child.sa, c, sizeof(c)),
		  flow_addr_str(&f->dst.sa, d, sizeof(d)), f->route ? f->route : "-",
		  flow_outcome_name(f->outcome), f->rule ? f->rule : "-", f->err ? ": " : "",
		  f->err ? strerror(f->err) : "",
		  (unsigned long long)f->bytes_up, (unsigned long long)f->bytes_down,
		  (double)(f->t_end_ns - f->t_start_ns) / 1e6);
}

const struct flow_observer flow_debug_observer = { .closed = debug_closed };
