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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/socket.h>
#include <libmnl/libmnl.h>

#include "netlink/nl.h"
#include "nft/host.h"
#include "root/internal.h"
#include "util/log.h"
#include "util/proc.h"

struct root_host {
	struct root_state st;
	struct netplan_uplink up;
	bool ipv6;
	bool link_made;
	struct mnl_socket *table;     /* owns the host table */
	char table_name[32];
};

int root_host_begin(struct root_host **out, bool ipv6)
{
	struct root_host *h = calloc(1, sizeof(*h));

	*out = NULL;
	if (!h) {
		log_error("cannot prepare --root: %s", strerror(ENOMEM));
		return -1;
	}
	if (root_state_begin(&h->st) < 0) {
		free(h);
		return -1;
	}
	h->ipv6 = ipv6;
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

/* Is @name one of ours (this run's or another's uplink) or loopback? */
static bool skip_ifname(const char *name)
{
	return !strcmp(name, "lo") || !strncmp(name, "cfroot", 6);
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
	if ((r = nl_veth_create(nl, h->up.host_ifname, NETPLAN_UPLINK_IFNAME, gw_pid, NETPLAN_MTU)) < 0)
		goto fail;
	h->link_made = true;
	log_debug("host change: link %s (veth to childflow's namespace; goes with it)", h->up.host_ifname);
	idx = (int)if_nametoindex(h->up.host_ifname);
	step = "configure the uplink";
	if (h->ipv6 && (r = own_sysctl(h, "ipv6", "accept_dad", "0")) < 0)
		goto fail;
	if ((r = nl_addr_add(nl, idx, AF_INET, &h->up.host4, h->up.plen4)) < 0 ||
	    (h->ipv6 && (r = nl_addr_add(nl, idx, AF_INET6, &h->up.host6, h->up.plen6)) < 0))
		goto fail;
	step = "enable forwarding";
	if ((r = host_forwarding(h)) < 0)
		goto fail;
	step = "bring the uplink up";
	if ((r = nl_link_up(nl, idx, 0)) < 0)
		goto fail;
	nl_close(nl);
	nl = NULL;
	h->table = host_nat_load(&nat, err, sizeof(err));
	if (!h->table) {
		log_error("cannot set up --root on the host: %s", err);
		return -1;
	}
	log_debug("host change: nftables table inet %s (owned by childflow: goes with it)", h->table_name);
	return 0;
fail:
	nl_close(nl);
	log_error("cannot set up --root on the host (%s): %s", step, strerror(-r));
	return -1;
}

void root_host_end(struct root_host *h)
{
	if (!h)
		return;
	if (h->table)
		mnl_socket_close(h->table);
	if (h->link_made) {
		struct nl *nl = nl_open();
		int r = nl ? nl_link_del(nl, h->up.host_ifname) : -errno;

		if (r < 0 && r != -ENODEV)
			log_debug("host: link %s not deleted now (%s): it goes with childflow's namespace",
				  h->up.host_ifname, strerror(-r));
		nl_close(nl);
	}
	root_state_end(&h->st);
	free(h);
}
