/* SPDX-License-Identifier: MIT */
/*
 * host — the uplink between the interception namespace and the host, the host's forwarding, and
 * the host table (root.h).  States of P's host side:
 *   BEGIN    root_host_begin(): stale records restored, a slot, the watchdog   (state.c)
 *   ATTACH   root_host_attach(), once G unshared: veth cfroot<slot> (its peer "up0" created in G's
 *            network namespace), its addresses and own sysctls, it up; forwarding on the host's
 *            routed interfaces (recorded); the owned host table
 *   RUNNING  the kernel forwards; P keeps the table's socket
 *   END      root_host_end(): the table's socket closed, the link deleted, the watchdog restores
 *            the recorded sysctls and is reaped
 */
#include "root/root.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <libmnl/libmnl.h>

#include "netlink/nl.h"
#include "nft/host.h"
#include "root/internal.h"
#include "util/explain.h"
#include "util/log.h"
#include "util/proc.h"

/* A route of the host's that the uplink's addresses must not overlap. */
struct host_prefix {
	int family;
	unsigned char addr[16];
	int plen;
	int oif;
};

#define HOST_PREFIX_MAX 4096

struct root_host {
	struct root_state st;
	struct netplan_uplink up;
	bool ipv6;
	bool link_made;
	struct mnl_socket *table;     /* owns the host table */
	char table_name[32];
	char iface[IF_NAMESIZE];      /* --iface: "" for none */
	/* Only while root_host_begin() picks a slot: */
	struct host_prefix *routes;
	int n_routes;
	int dump_family;
	int conflict;                 /* index in routes[] of the first overlap met, -1 for none */
};

/* Does @a/@alen overlap @b/@blen (@len bytes each)? */
static bool prefix_overlap(const unsigned char *a, int alen, const unsigned char *b, int blen)
{
	int bits = alen < blen ? alen : blen;

	for (int i = 0; i < bits / 8; i++)
		if (a[i] != b[i])
			return false;
	if (bits % 8) {
		unsigned char m = (unsigned char)(0xff << (8 - bits % 8));

		return (a[bits / 8] & m) == (b[bits / 8] & m);
	}
	return true;
}

/* Is @name one of ours (this run's or another's uplink) or loopback? */
static bool skip_ifname(const char *name)
{
	return !strcmp(name, "lo") || !strncmp(name, "cfroot", 6);
}

static void collect_route(void *arg, uint32_t table, const void *dst, int dst_len, int oif)
{
	struct root_host *h = arg;
	char name[IF_NAMESIZE];
	struct host_prefix *p;

	(void)table;
	/* Default routes overlap everything and say nothing; other runs' uplinks have their own slots. */
	if (dst_len == 0 || h->n_routes == HOST_PREFIX_MAX ||
	    (oif > 0 && if_indextoname((unsigned int)oif, name) && !strncmp(name, "cfroot", 6)))
		return;
	p = &h->routes[h->n_routes++];
	p->family = h->dump_family;
	memcpy(p->addr, dst, 16);
	p->plen = dst_len;
	p->oif = oif;
}

/* The slot's /30 and /64 overlap no route (nor address) of the host's. */
static bool slot_free(unsigned int slot, void *arg)
{
	struct root_host *h = arg;
	struct netplan_uplink u;

	netplan_uplink_init(&u, slot);
	for (int i = 0; i < h->n_routes; i++) {
		const struct host_prefix *p = &h->routes[i];
		bool hit = p->family == AF_INET ? prefix_overlap(p->addr, p->plen, (const unsigned char *)&u.host4, u.plen4)
						: h->ipv6 && prefix_overlap(p->addr, p->plen, u.host6.s6_addr, u.plen6);

		if (hit) {
			if (h->conflict < 0)
				h->conflict = i;
			return false;
		}
	}
	return true;
}

/* The host's routes of every table, into h->routes.  Return: 0 or -errno. */
static int snapshot_routes(struct root_host *h)
{
	struct nl *nl = nl_open();
	int r = 0;

	h->routes = calloc(HOST_PREFIX_MAX, sizeof(*h->routes));
	h->conflict = -1;
	if (!nl || !h->routes) {
		r = nl ? -ENOMEM : -errno;
		nl_close(nl);
		return r;
	}
	for (int i = 0; i < 2 && r == 0; i++) {
		int fam = i ? AF_INET6 : AF_INET;

		h->dump_family = fam;
		r = nl_route_each(nl, fam, collect_route, h);
	}
	nl_close(nl);
	return r;
}

/* The route of the host's that took the slots, in words, into @why. */
static void conflict_words(const struct root_host *h, char *why, size_t len)
{
	const struct host_prefix *p = &h->routes[h->conflict];
	char a[INET6_ADDRSTRLEN] = "?", dev[IF_NAMESIZE] = "";

	inet_ntop(p->family, p->addr, a, sizeof(a));
	if (p->oif <= 0 || !if_indextoname((unsigned int)p->oif, dev))
		snprintf(dev, sizeof(dev), "-");
	snprintf(why, len, "--root's uplink addresses (%s) overlap the host's route %s/%d dev %s",
		 p->family == AF_INET ? ROOT_UPLINK_RANGE4 : ROOT_UPLINK_RANGE6, a, p->plen, dev);
}

int root_uplink_check(bool ipv6, char *why, size_t len)
{
	struct root_host h = { .ipv6 = ipv6 };
	int r = snapshot_routes(&h);

	why[0] = '\0';
	if (r == 0) {
		r = -EADDRINUSE;
		for (unsigned int slot = 0; slot < NETPLAN_UPLINK_SLOTS && r < 0; slot++)
			if (slot_free(slot, &h))
				r = (int)slot;
		if (r < 0)
			conflict_words(&h, why, len);
	} else {
		snprintf(why, len, "cannot read the host's routes: %s", strerror(-r));
	}
	free(h.routes);
	return r;
}

int root_host_begin(struct root_host **out, bool ipv6, const char *iface)
{
	struct root_host *h = calloc(1, sizeof(*h));
	int r;

	*out = NULL;
	if (!h) {
		explain_fail("root_host", ENOMEM, "cannot prepare --root");
		return -1;
	}
	h->ipv6 = ipv6;
	if ((r = snapshot_routes(h)) < 0) {
		explain_fail("root_uplink", -r, "cannot read the host's routes for --root");
		free(h->routes);
		free(h);
		return -1;
	}
	r = root_state_begin(&h->st, slot_free, h);
	if (r < 0 && errno == EADDRINUSE) {
		char why[256];

		if (h->conflict >= 0) {
			conflict_words(h, why, sizeof(why));
			explain_fail("root_uplink", EADDRINUSE, why);
		} else
			explain_fail("root_host", EBUSY, "cannot start --root: every uplink slot is taken by running --root runs");
	}
	free(h->routes);
	h->routes = NULL;
	if (r < 0) {
		free(h);
		return -1;
	}
	if (h->conflict >= 0)
		log_debug("host: lower uplink slots overlap the host's routes; slot %u is free", h->st.slot);
	if (iface)
		snprintf(h->iface, sizeof(h->iface), "%s", iface);
	netplan_uplink_init(&h->up, h->st.slot);
	snprintf(h->table_name, sizeof(h->table_name), "childflow-root%u", h->st.slot);
	*out = h;
	return 0;
}

const struct netplan_uplink *root_host_uplink(const struct root_host *h)
{
	return &h->up;
}

/* A sysctl of our own link: it goes with the link, so nothing is recorded. */
static int own_sysctl(const struct root_host *h, const char *fam, const char *key, const char *value)
{
	char path[128];
	int r;

	snprintf(path, sizeof(path), "/proc/sys/net/%s/conf/%s/%s", fam, h->up.host_ifname, key);
	r = proc_write_file(path, value);
	if (r == 0)
		log_debug("host change: %s = %s (goes with the link)", path, value);
	return r;
}

/*
 * The interfaces that carry routes of @proc_file (/proc/net/route: the name is the first field;
 * /proc/net/ipv6_route: the last), each passed to @fn once.
 */
static int for_route_ifaces(struct root_host *h, const char *proc_file, bool last_field,
			    int (*fn)(struct root_host *h, const char *ifname))
{
	char *text = proc_read_text(proc_file, 1u << 20), *save = NULL;
	char seen[32][IF_NAMESIZE];
	int nseen = 0, r = 0;

	if (!text)
		return errno == ENOENT ? 0 : -errno;
	for (char *l = strtok_r(text, "\n", &save); l && r == 0; l = strtok_r(NULL, "\n", &save)) {
		char name[IF_NAMESIZE] = "";
		char *f = l, *tok, *save2 = NULL;
		bool dup = false;

		if (!last_field && !strncmp(l, "Iface", 5))
			continue;
		for (tok = strtok_r(f, " \t", &save2); tok; tok = strtok_r(NULL, " \t", &save2)) {
			if (!name[0] || last_field)
				snprintf(name, sizeof(name), "%s", tok);
			if (!last_field)
				break;
		}
		if (!name[0] || skip_ifname(name))
			continue;
		for (int i = 0; i < nseen; i++)
			dup = dup || !strcmp(seen[i], name);
		if (dup || nseen == 32)
			continue;
		snprintf(seen[nseen++], IF_NAMESIZE, "%s", name);
		r = fn(h, name);
	}
	free(text);
	return r;
}

static int forward4(struct root_host *h, const char *ifname)
{
	char path[128];
	int r;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/forwarding", ifname);
	r = root_state_set(&h->st, path, "1");
	return r == -ENOENT ? 0 : r;   /* gone since /proc/net/route listed it */
}

static int forward6(struct root_host *h, const char *ifname)
{
	char path[128];
	int r;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/force_forwarding", ifname);
	r = root_state_set(&h->st, path, "1");
	return r == -ENOENT ? 0 : r;
}

/*
 * Forwarding: Linux decides it on the interface a packet came in on.  IPv4: our link's
 * conf.<if>.forwarding (the child's packets) and that of every interface with a route (the replies);
 * never net.ipv4.ip_forward, which would turn every interface into a router.  IPv6: the same with
 * the per-interface force_forwarding of Linux 6.17+; before that only conf.all.forwarding exists,
 * which also makes interfaces with accept_ra=1 ignore router advertisements while it is on.
 */
static int host_forwarding(struct root_host *h)
{
	int r;

	if ((r = own_sysctl(h, "ipv4", "forwarding", "1")) < 0 ||
	    (r = for_route_ifaces(h, "/proc/net/route", false, forward4)) < 0)
		return r;
	if (!h->ipv6)
		return 0;
	if (own_sysctl(h, "ipv6", "force_forwarding", "1") == 0)
		return for_route_ifaces(h, "/proc/net/ipv6_route", true, forward6);
	log_debug("host: no per-interface IPv6 forwarding (Linux < 6.17): net.ipv6.conf.all.forwarding is "
		  "used; while it is 1, interfaces with accept_ra=1 ignore router advertisements");
	return root_state_set(&h->st, "/proc/sys/net/ipv6/conf/all/forwarding", "1");
}

/*
 * --iface: what the child sends (from the uplink's interception-end address, which it holds) is
 * looked up in this run's own table, which holds copies of IFACE's routes from the main table and
 * an unreachable default behind them, so nothing falls back to the host's default route (IFACE
 * going down takes its routes away: then new flows are unreachable).  The rule matches the source,
 * not the input link, so the host's reverse-path check of the replies (a lookup from that address)
 * finds IFACE too.  Each change is recorded first; the watchdog deletes the rule and empties the
 * table.
 */
static int iface_family(struct root_host *h, struct nl *nl, int family, int idx, uint32_t table, uint32_t prio)
{
	const void *src = family == AF_INET ? (const void *)&h->up.gw4 : (const void *)&h->up.gw6;
	char line[128], a[INET6_ADDRSTRLEN];
	int r, n, ndef;

	if ((r = nl_table_routes(nl, family, table, false, &n)) < 0)
		return r;
	if (n > 0) {
		snprintf(line, sizeof(line), "cannot set up --root --iface: routing table %u has %d routes already", table, n);
		explain_fail("root_host", EEXIST, line);
		return -EEXIST;
	}
	if ((r = nl_routes_copy(nl, family, idx, table, &ndef)) < 0)
		return r;
	log_debug("host change: routing table %u: %d %s routes of %s copied (removed at exit)", table, r,
		  family == AF_INET ? "IPv4" : "IPv6", h->iface);
	if (ndef == 0)
		log_warn("--iface %s has no %s default route: only destinations on its own subnets are reachable "
			 "from the command", h->iface, family == AF_INET ? "IPv4" : "IPv6");
	if ((r = nl_route_unreachable(nl, family, table, UINT32_MAX)) < 0)
		return r;
	inet_ntop(family, src, a, sizeof(a));
	snprintf(line, sizeof(line), "rule %d %u %u %s", family == AF_INET ? 4 : 6, prio, table, a);
	if ((r = root_state_note(&h->st, line)) < 0)
		return r;
	if ((r = nl_rule_src(nl, true, family, src, table, prio)) < 0)
		return r;
	log_debug("host change: rule from %s lookup %u, priority %u (removed at exit)", a, table, prio);
	return 0;
}

static int iface_routing(struct root_host *h, struct nl *nl)
{
	uint32_t table = ROOT_TABLE_BASE + h->st.slot, prio = ROOT_RULE_PRIO_BASE + h->st.slot;
	int idx = (int)if_nametoindex(h->iface), r;
	char line[32];

	if (!idx)
		return -ENODEV;
	snprintf(line, sizeof(line), "table %u", table);
	if ((r = root_state_note(&h->st, line)) < 0 || (r = iface_family(h, nl, AF_INET, idx, table, prio)) < 0)
		return r;
	return h->ipv6 ? iface_family(h, nl, AF_INET6, idx, table, prio) : 0;
}

/*
 * nat_ports() - the host masquerade's source ports: the larger side of 1024..65535 outside the
 * host's ephemeral range (net.ipv4.ip_local_port_range, IPv6's too), so that no masqueraded flow
 * takes the 4-tuple of one of the host's own closed connections (nft/host.h says why).  Left at
 * 0, 0 (the kernel's choice) when the range is unreadable or leaves fewer than 1024 ports free.
 */
static void nat_ports(struct host_nat *nat)
{
	char *t = proc_read_text("/proc/sys/net/ipv4/ip_local_port_range", 64);
	unsigned int lo, hi;

	if (t && sscanf(t, "%u %u", &lo, &hi) == 2 && lo <= hi && hi <= 65535) {
		unsigned int below = lo > 1024 ? lo - 1024 : 0, above = 65535 - hi;

		if (below >= above && below >= 1024) {
			nat->port_min = 1024;
			nat->port_max = (uint16_t)(lo - 1);
		} else if (above >= 1024) {
			nat->port_min = (uint16_t)(hi + 1);
			nat->port_max = 65535;
		}
	}
	free(t);
	log_debug("host masquerade: source ports %u-%u (the host's own ephemeral range: %s)",
		  nat->port_min, nat->port_max, nat->port_min ? "outside it" : "any, none left outside it");
}

int root_host_attach(void *arg, pid_t gw_pid)
{
	struct root_host *h = arg;
	struct host_nat nat = {
		.table = h->table_name,
		.ifname = h->up.host_ifname,
		.src4 = h->up.gw4,
		.ipv6 = h->ipv6,
		.src6 = h->up.gw6,
	};
	struct nl *nl = nl_open();
	const char *step = "open rtnetlink";
	char err[256];
	int idx, r = -ENOMEM;

	if (!nl) {
		r = -errno;
		goto fail;
	}
	step = "create the uplink veth";
	if ((r = nl_veth_create(nl, h->up.host_ifname, NETPLAN_UPLINK_IFNAME, gw_pid, NETPLAN_MTU, NULL)) < 0)
		goto fail;
	h->link_made = true;
	log_debug("host change: link %s (veth to childflow's namespace; goes with it)", h->up.host_ifname);
	idx = (int)if_nametoindex(h->up.host_ifname);
	step = "configure the uplink";
	/* The command's frames reach this link as it sent them (G bridges): it must not be able to
	 * make the host take it for a router (a default route, a SLAAC address) or redirect it. */
	if ((r = own_sysctl(h, "ipv4", "accept_redirects", "0")) < 0)
		goto fail;
	if (h->ipv6 && ((r = own_sysctl(h, "ipv6", "accept_dad", "0")) < 0 ||
			(r = own_sysctl(h, "ipv6", "accept_ra", "0")) < 0 ||
			(r = own_sysctl(h, "ipv6", "accept_redirects", "0")) < 0))
		goto fail;
	if ((r = nl_addr_add(nl, idx, AF_INET, &h->up.host4, h->up.plen4)) < 0 ||
	    (h->ipv6 && (r = nl_addr_add(nl, idx, AF_INET6, &h->up.host6, h->up.plen6)) < 0))
		goto fail;
	step = "enable forwarding";
	if ((r = host_forwarding(h)) < 0)
		goto fail;
	step = "route through --iface";
	if (h->iface[0] && (r = iface_routing(h, nl)) < 0) {
		if (r == -EEXIST)
			goto fail_quiet;
		goto fail;
	}
	step = "bring the uplink up";
	if ((r = nl_link_up(nl, idx, 0)) < 0)
		goto fail;
	nl_close(nl);
	nl = NULL;
	nat_ports(&nat);
	h->table = host_nat_load(&nat, err, sizeof(err));
	if (!h->table) {
		char what[sizeof(err) + 96];

		snprintf(what, sizeof(what), "cannot load the host table inet %s: %s", h->table_name, err);
		explain_fail("root_host", 0, what);
		return -1;
	}
	log_debug("host change: nftables table inet %s (owned by childflow: goes with it)", h->table_name);
	return 0;
fail:
	snprintf(err, sizeof(err), "cannot set up --root on the host (%s)", step);
	explain_fail("root_host", -r, err);
fail_quiet:
	nl_close(nl);
	return -1;
}

/* The table's owner socket, closed on a thread of its own: see root_host_end(). */
static void *close_table(void *table)
{
	mnl_socket_close(table);
	return NULL;
}

void root_host_end(struct root_host *h)
{
	pthread_t closer;
	bool threaded = false;

	if (!h)
		return;
	/*
	 * Closing the socket that owns the table deletes the table and waits for an RCU grace period
	 * (nft_rcv_nl_event()); deleting the link waits in rcu_barrier() (netdev_run_todo()).  Each
	 * is several milliseconds, more on a busy machine: done at once, the two waits overlap
	 * instead of adding up.  Both are over before we return.
	 */
	if (h->table && h->link_made)
		threaded = pthread_create(&closer, NULL, close_table, h->table) == 0;
	if (h->table && !threaded)
		mnl_socket_close(h->table);
	h->table = NULL;
	if (h->link_made) {
		struct nl *nl = nl_open();
		int r = nl ? nl_link_del(nl, h->up.host_ifname) : -errno;

		if (r < 0 && r != -ENODEV)
			log_debug("host: link %s not deleted now (%s): it goes with childflow's namespace",
				  h->up.host_ifname, strerror(-r));
		nl_close(nl);
	}
	if (threaded)
		pthread_join(closer, NULL);
	root_state_end(&h->st);
	free(h);
}
