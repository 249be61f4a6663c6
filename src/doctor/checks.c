/* SPDX-License-Identifier: MIT */
/*
 * checks — the doctor's table: one entry per host requirement, each a real try where that is safe.
 * Namespace tries run in a throwaway fork (try.c) with the very code a run uses: the nftables
 * ruleset of nft/gateway.c, the queue binding of netlink/nfq.c, the veth of netlink/nl.c, the mounts
 * of sandbox/child.c, the id mapping of sandbox/idmap_apply.c, the DNS wire code of dns/, the proxy
 * connectors of proxy/.  Nothing here sends a packet to the real network: a resolver gets one query
 * (it is the host's own), the proxy one probe, and IPv6 is a route lookup.
 *
 * A run's failing step calls explain_fail() with the check's key; explain() then words it exactly as
 * the doctor's run() does for the same failure.  New features add one entry at the end of the table.
 */
#include "doctor/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <seccomp.h>

#include "backend/backend.h"
#include "dns/resolvconf.h"
#include "dns/wire.h"
#include "netlink/nfq.h"
#include "netlink/nl.h"
#include "nft/gateway.h"
#include "proxy/proxy.h"
#include "relay/flow.h"
#include "root/root.h"
#include "sandbox/idmap.h"
#include "sandbox/sandbox.h"
#include "util/proc.h"

#define TRY_MS 5000              /* a namespace try that takes longer is killed */
#define DNS_TRY_MS 1500          /* per resolver */
#define PROXY_TRY_MS 5000

/* The namespaces of a throwaway try: a root caller of --root needs no user namespace. */
static unsigned long throwaway_ns(const struct doctor_env *env)
{
	return env->rootful && geteuid() == 0 ? CLONE_NEWNET : CLONE_NEWUSER | CLONE_NEWNET;
}

/* The finding for a try that never reached its function: the namespaces could not be made. */
static bool try_prereq_failed(const struct try_result *t, struct doctor_finding *f)
{
	switch (t->stage) {
	case TRY_DONE:
		return false;
	case TRY_USERNS:
	case TRY_MAP:
		doctor_detail(f, DOCTOR_BLOCKED, "not tried: a throwaway namespace could not be created (%s)",
			      strerror(t->err));
		doctor_hint(f, "fix \"unprivileged user namespaces\" first");
		return true;
	case TRY_TIMEOUT:
		doctor_detail(f, DOCTOR_BLOCKED, "the try did not finish within %d s", TRY_MS / 1000);
		return true;
	case TRY_FORK:
		doctor_detail(f, DOCTOR_BLOCKED, "not tried: cannot fork: %s", strerror(t->err));
		return true;
	case TRY_DIED:
		return false;   /* its stderr says why: the caller explains */
	}
	return false;
}

/* ---------- unprivileged user namespaces ---------- */

static void explain_userns(int err, const char *what, struct doctor_finding *f)
{
	long max = proc_read_long("/proc/sys/user/max_user_namespaces");
	char fix[320], exe[256];
	ssize_t n;

	if (!what)
		what = "cannot create a user namespace";
	if (max == 0) {
		doctor_detail(f, DOCTOR_BLOCKED, "%s: %s; user namespaces are disabled: user.max_user_namespaces is 0",
			      what, strerror(err));
		doctor_hint(f, "%s", doctor_sysctl_fix("user.max_user_namespaces", "15000", fix, sizeof(fix)));
	} else if (err == ENOSPC) {
		doctor_detail(f, DOCTOR_BLOCKED, "%s: %s; the limit user.max_user_namespaces (%ld) is reached",
			      what, strerror(err), max);
		doctor_hint(f, "%s", doctor_sysctl_fix("user.max_user_namespaces", "15000", fix, sizeof(fix)));
	} else if (geteuid() != 0 && proc_read_long("/proc/sys/kernel/unprivileged_userns_clone") == 0) {
		doctor_detail(f, DOCTOR_BLOCKED, "%s: %s; unprivileged user namespaces are disabled: "
			      "kernel.unprivileged_userns_clone is 0", what, strerror(err));
		doctor_hint(f, "%s, or run childflow as root",
			    doctor_sysctl_fix("kernel.unprivileged_userns_clone", "1", fix, sizeof(fix)));
	} else if (geteuid() != 0 && proc_read_long("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1) {
		n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		exe[n > 0 ? n : 0] = '\0';
		doctor_detail(f, DOCTOR_BLOCKED, "%s: %s; AppArmor restricts unprivileged user namespaces: "
			      "kernel.apparmor_restrict_unprivileged_userns is 1", what, strerror(err));
		doctor_hint(f, "give childflow an AppArmor profile that allows them: printf 'abi <abi/4.0>,\\n"
			    "include <tunables/global>\\nprofile childflow %s flags=(unconfined) {\\n  userns,\\n}\\n' "
			    "> /etc/apparmor.d/childflow && apparmor_parser -r /etc/apparmor.d/childflow (or, for "
			    "every program: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)",
			    exe[0] ? exe : "/usr/local/bin/childflow");
	} else {
		doctor_detail(f, DOCTOR_BLOCKED, "%s: %s; the sysctls allow them, so a container runtime or a "
			      "seccomp policy forbids them here", what, strerror(err));
		doctor_hint(f, "run childflow on the host, or allow unshare(CLONE_NEWUSER) in the container "
			    "(Docker: --security-opt seccomp=unconfined --security-opt apparmor=unconfined)");
	}
}

static int try_lo_up(void *arg, char *msg, size_t len)
{
	struct nl *nl = nl_open();
	int r;

	(void)arg;
	if (!nl) {
		snprintf(msg, len, "cannot open rtnetlink in it: %s", strerror(errno));
		return -errno;
	}
	r = nl_link_up(nl, (int)if_nametoindex("lo"), 0);
	if (r < 0)
		snprintf(msg, len, "cannot bring lo up in it: %s", strerror(-r));
	nl_close(nl);
	return r;
}

static void run_userns(const struct doctor_env *env, struct doctor_finding *f)
{
	struct try_result t;
	long max = proc_read_long("/proc/sys/user/max_user_namespaces");

	(void)env;
	if (doctor_try(CLONE_NEWUSER | CLONE_NEWNET, try_lo_up, NULL, TRY_MS, &t) == 0) {
		doctor_detail(f, DOCTOR_OK, "created a user and a network namespace and configured lo in it "
			      "(user.max_user_namespaces is %ld)", max);
		return;
	}
	if (t.stage == TRY_USERNS)
		explain_userns(t.err, "cannot create a user namespace", f);
	else if (t.stage == TRY_MAP)
		explain_userns(t.err, "cannot map the caller into a new user namespace", f);
	else if (t.stage == TRY_DONE)
		explain_userns(t.err, t.msg, f);   /* created, but without the capabilities (AppArmor) */
	else
		doctor_detail(f, DOCTOR_BLOCKED, "the try failed: %s", t.msg[0] ? t.msg : strerror(t.err));
}

/* ---------- uid/gid mapping ---------- */

static void explain_uidmap(int err, const char *what, struct doctor_finding *f)
{
	struct passwd *pw = getpwuid(getuid());
	const char *name = pw ? pw->pw_name : "USER";
	struct subid_range su, sg;
	const char *file = "/etc/subuid";
	char exe[4096], pkg[128];
	bool hu = idmap_find_helper("newuidmap", exe, sizeof(exe));
	bool hg = idmap_find_helper("newgidmap", exe, sizeof(exe));
	int have = idmap_caller_subids(&su, &sg, &file);

	if (!what)
		what = "cannot map ids into the sandbox's user namespace";
	doctor_install_cmd("uidmap", "shadow-utils", "shadow", pkg, sizeof(pkg));
	if (!hu || !hg) {
		doctor_detail(f, DOCTOR_BLOCKED, "%s%s%s: %s%s%s not found on PATH", what, err ? ": " : "",
			      err ? strerror(err) : "", hu ? "" : "newuidmap", !hu && !hg ? " and " : "",
			      hg ? "" : "newgidmap");
		doctor_hint(f, "%s%s", pkg, have > 0 ? "" : "; then give your user subordinate ids");
	} else if (have <= 0) {
		doctor_detail(f, DOCTOR_BLOCKED, "%s%s%s: %s has no range for %s (uid %u)", what, err ? ": " : "",
			      err ? strerror(err) : (have < 0 ? "unreadable" : ""), file, name, (unsigned)getuid());
		doctor_hint(f, "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s (as root)", name);
	} else {
		doctor_detail(f, DOCTOR_BLOCKED, "%s%s%s", what, err ? ": " : "", err ? strerror(err) : "");
		doctor_hint(f, "check that newuidmap and newgidmap are setuid root (%s reinstalls them) and that "
			    "%s's ranges in /etc/subuid and /etc/subgid are free; or run as root", pkg, name);
	}
}

/* A process in a fresh user namespace for idmap_apply_gateway(): waits on @hold, reports on @ready. */
static pid_t unshared_waiter(int ready, int hold)
{
	pid_t pid = fork();

	if (pid == 0) {
		char b = unshare(CLONE_NEWUSER) == 0 ? 1 : 0;

		proc_die_with_parent(getppid());
		if (write(ready, &b, 1) != 1 || read(hold, &b, 1) < 0)
			_exit(1);
		_exit(0);
	}
	return pid;
}

static void run_uidmap(const struct doctor_env *env, struct doctor_finding *f)
{
	const char *choice_s = getenv("CHILDFLOW_UIDMAP");
	enum idmap_choice choice;
	struct idmap_plan plan;
	struct subid_range su, sg;
	const char *file = "/etc/subuid";
	char exe[4096], pkg[128];
	int rp[2], hp[2], r;
	sigset_t mask;
	pid_t pid;
	char b = 0;

	(void)env;
	if (getuid() == 0 && geteuid() == 0) {
		doctor_detail(f, DOCTOR_OK, "running as root: the sandbox maps every id to itself");
		return;
	}
	if (idmap_choice_parse(choice_s, &choice) < 0) {
		doctor_detail(f, DOCTOR_BLOCKED, "CHILDFLOW_UIDMAP is \"%s\"", choice_s);
		doctor_hint(f, "set CHILDFLOW_UIDMAP to auto, direct or helper, or unset it");
		return;
	}
	if (pipe2(rp, O_CLOEXEC) < 0)
		goto fail;
	if (pipe2(hp, O_CLOEXEC) < 0) {
		close(rp[0]);
		close(rp[1]);
		goto fail;
	}
	pid = unshared_waiter(rp[1], hp[0]);
	close(rp[1]);
	close(hp[0]);
	if (pid < 0 || read(rp[0], &b, 1) != 1 || !b) {
		close(rp[0]);
		close(hp[1]);
		if (pid > 0)
			waitpid(pid, NULL, 0);
		doctor_detail(f, DOCTOR_BLOCKED, "not tried: a throwaway user namespace could not be created");
		doctor_hint(f, "fix \"unprivileged user namespaces\" first");
		return;
	}
	sigprocmask(SIG_SETMASK, NULL, &mask);
	f->detail[0] = '\0';
	r = idmap_apply_gateway(pid, choice, &mask, &plan);   /* a failure lands in @f (explain_fail) */
	close(hp[1]);
	close(rp[0]);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	if (r < 0)
		return;
	if (plan.mode == IDMAP_HELPER) {
		doctor_detail(f, DOCTOR_OK, "newuidmap/newgidmap mapped uid %u with %lu subordinate ids from %lu "
			      "and gid %u with %lu from %lu", (unsigned)getuid(), plan.subuid.count, plan.subuid.start,
			      (unsigned)getgid(), plan.subgid.count, plan.subgid.start);
		return;
	}
	if (choice == IDMAP_CHOOSE_DIRECT) {
		doctor_detail(f, DOCTOR_OK, "CHILDFLOW_UIDMAP=direct: your uid and gid alone are mapped");
		return;
	}
	doctor_install_cmd("uidmap", "shadow-utils", "shadow", pkg, sizeof(pkg));
	if (!idmap_find_helper("newuidmap", exe, sizeof(exe)) || !idmap_find_helper("newgidmap", exe, sizeof(exe))) {
		doctor_detail(f, DOCTOR_WARNING, "newuidmap/newgidmap not found on PATH: only your uid and gid "
			      "are mapped (a tool that switches users inside fails)");
		doctor_hint(f, "%s", pkg);
	} else if (idmap_caller_subids(&su, &sg, &file) <= 0) {
		struct passwd *pw = getpwuid(getuid());

		doctor_detail(f, DOCTOR_WARNING, "%s has no range for your user: only your uid and gid are mapped "
			      "(a tool that switches users inside fails)", file);
		doctor_hint(f, "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s (as root)",
			    pw ? pw->pw_name : "USER");
	} else {
		doctor_detail(f, DOCTOR_WARNING, "newuidmap/newgidmap failed (mapped with a single id instead)");
		doctor_hint(f, "check that newuidmap and newgidmap are setuid root (%s reinstalls them)", pkg);
	}
	return;
fail:
	doctor_detail(f, DOCTOR_BLOCKED, "not tried: %s", strerror(errno));
}

/* ---------- nftables, the SYN gate, veth, mounts ---------- */

static const char *const nft_modules = "nf_tables nft_tproxy nf_tproxy_ipv4 nf_tproxy_ipv6";

static void explain_nft(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, DOCTOR_BLOCKED, "cannot load the TPROXY ruleset in a user-owned network namespace: %s",
		      what ? what : strerror(err));
	doctor_hint(f, "load the modules: modprobe -a %s (to keep it: echo '%s' | tr ' ' '\\n' > "
		    "/etc/modules-load.d/childflow.conf); the kernel needs CONFIG_NFT_TPROXY", nft_modules, nft_modules);
}

static int try_nft(void *arg, char *msg, size_t len)
{
	struct gateway_rules rules = {
		.ifname = NETPLAN_GW_IFNAME,
		.tcp_port = NETPLAN_TCP_PORT,
		.udp_port = NETPLAN_UDP_PORT,
		.dns_port = NETPLAN_DNS_PORT,
		.gate = *(const enum gateway_gate *)arg,
	};

	return gateway_rules_load(&rules, msg, len);
}

static void run_nft(const struct doctor_env *env, struct doctor_finding *f)
{
	enum gateway_gate none = GATEWAY_GATE_NONE;
	struct try_result t;

	if (doctor_try(throwaway_ns(env), try_nft, &none, TRY_MS, &t) == 0) {
		doctor_detail(f, DOCTOR_OK, "loaded the TPROXY ruleset (tcp, udp, dns; IPv4 and IPv6) in a "
			      "throwaway network namespace");
		return;
	}
	if (!try_prereq_failed(&t, f))
		explain_nft(t.err, t.msg, f);
}

static void explain_gate(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, DOCTOR_WARNING, "this kernel cannot hold TCP connections until their destination "
		      "answers (nft queue or xt NFQUEUE): a refused connection will look accepted, then reset%s%s",
		      what ? ": " : "", what ? what : (err ? strerror(err) : ""));
	doctor_hint(f, "modprobe -a nfnetlink_queue nft_queue (or nft_compat xt_NFQUEUE)");
}

static int try_gate(void *arg, char *msg, size_t len)
{
	static const enum gateway_gate kinds[2] = { GATEWAY_GATE_COMPAT, GATEWAY_GATE_NATIVE };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	int r;

	(void)arg;
	if (fd < 0)
		return -errno;
	if ((r = nfq_bind(fd, BE_GATE_QUEUE, NFQ_COPY_RANGE, 16)) < 0) {
		snprintf(msg, len, "the queue cannot be bound: %s", strerror(-r));
		close(fd);
		return r;
	}
	for (int i = 0; i < 2; i++)
		if ((r = try_nft((void *)&kinds[i], msg, len)) == 0)
			break;
	close(fd);
	return r;
}

static void run_gate(const struct doctor_env *env, struct doctor_finding *f)
{
	struct try_result t;

	if (doctor_try(throwaway_ns(env), try_gate, NULL, TRY_MS, &t) == 0) {
		doctor_detail(f, DOCTOR_OK, "bound an NFQUEUE queue and loaded the ruleset with the SYN gate");
		return;
	}
	if (!try_prereq_failed(&t, f))
		explain_gate(t.err, t.msg, f);
	else
		f->status = DOCTOR_WARNING;
}

static void explain_veth(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, DOCTOR_BLOCKED, "%s: %s", what ? what : "cannot create a veth pair", strerror(err));
	doctor_hint(f, "modprobe veth (the kernel needs CONFIG_VETH)");
}

static int try_veth(void *arg, char *msg, size_t len)
{
	struct nl *nl = nl_open();
	int r;

	(void)arg;
	(void)msg;
	(void)len;
	if (!nl)
		return -errno;
	r = nl_veth_create(nl, "cfdoc0", "cfdoc1", getpid(), NETPLAN_MTU, NULL);
	nl_close(nl);
	return r;
}

static void run_veth(const struct doctor_env *env, struct doctor_finding *f)
{
	struct try_result t;

	if (doctor_try(throwaway_ns(env), try_veth, NULL, TRY_MS, &t) == 0) {
		doctor_detail(f, DOCTOR_OK, "created a veth pair in a throwaway network namespace");
		return;
	}
	if (!try_prereq_failed(&t, f))
		explain_veth(t.err, "cannot create the veth pair", f);
}

static void explain_bridge(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, DOCTOR_BLOCKED, "%s%s%s", what ? what : "cannot bridge the child's link to the uplink",
		      err ? ": " : "", err ? strerror(err) : "");
	doctor_hint(f, "modprobe -a nf_tables nft_fwd_netdev (the kernel needs CONFIG_NETFILTER_INGRESS and "
		    "CONFIG_NFT_FWD_NETDEV), or use the rootless backend (drop --root)");
}

/* The --root bridge (nft/gateway.h) on a throwaway veth pair named as a run's gw0 and up0. */
static int try_bridge(void *arg, char *msg, size_t len)
{
	struct gateway_bridge br = { .child_if = NETPLAN_GW_IFNAME, .uplink = NETPLAN_UPLINK_IFNAME };
	struct nl *nl = nl_open();
	int r;

	(void)arg;
	if (!nl)
		return -errno;
	r = nl_veth_create(nl, NETPLAN_GW_IFNAME, NETPLAN_UPLINK_IFNAME, getpid(), NETPLAN_MTU, NULL);
	nl_close(nl);
	if (r < 0) {
		snprintf(msg, len, "cannot create the veth pair to bridge");
		return r;
	}
	br.child_ifindex = (int)if_nametoindex(NETPLAN_GW_IFNAME);
	br.uplink_ifindex = (int)if_nametoindex(NETPLAN_UPLINK_IFNAME);
	if (!br.child_ifindex || !br.uplink_ifindex) {
		snprintf(msg, len, "the veth pair to bridge is gone");
		return -ENODEV;
	}
	return gateway_bridge_load(&br, msg, len);
}

static void run_bridge(const struct doctor_env *env, struct doctor_finding *f)
{
	struct try_result t;

	if (doctor_try(throwaway_ns(env), try_bridge, NULL, TRY_MS, &t) == 0) {
		doctor_detail(f, DOCTOR_OK, "loaded the bridge (netdev ingress, fwd) on a veth pair in a throwaway "
			      "network namespace");
		return;
	}
	if (!try_prereq_failed(&t, f))
		explain_bridge(t.err, t.msg[0] ? t.msg : NULL, f);
}

static void explain_mounts(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, DOCTOR_BLOCKED, "%s%s%s", what ? what : "cannot make the child's mounts",
		      err ? ": " : "", err ? strerror(err) : "");
	doctor_hint(f, "a security module or container policy forbids mounts in user namespaces: run childflow "
		    "on the host, or allow mount(2) in the container (Docker: --security-opt apparmor=unconfined)");
}

static int try_mounts(void *arg, char *msg, size_t len)
{
	int r = sandbox_mounts_try();

	(void)arg;
	if (r < 0)
		snprintf(msg, len, "cannot make the child's mounts private");
	return r;
}

static void run_mounts(const struct doctor_env *env, struct doctor_finding *f)
{
	struct try_result t;

	(void)env;
	if (doctor_try(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS, try_mounts, NULL, TRY_MS, &t) == 0) {
		doctor_detail(f, DOCTOR_OK, "made a throwaway mount namespace private, mounted a sysfs and placed "
			      "the name files over /etc in it");
		return;
	}
	if (try_prereq_failed(&t, f))
		return;
	explain_mounts(t.stage == TRY_DONE ? t.err : 0, t.msg[0] ? t.msg : NULL, f);
}

/* ---------- the host resolvers ---------- */

static void explain_dns(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, DOCTOR_WARNING, "no DNS resolver answered (%s): lookups inside get SERVFAIL",
		      what ? what : strerror(err));
	doctor_hint(f, "name a resolver that answers in /etc/resolv.conf (nameserver ADDRESS), or give one "
		    "with --dns ADDRESS");
}

/* One query for the root's NS records.  Return: 0 when @ns answered it, else -errno. */
static int ask_resolver(const struct sockaddr_storage *ns)
{
	uint8_t q[17] = { 0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1 }, a[1232];
	struct dns_question dq;
	struct pollfd pf;
	int fd, r = -ETIMEDOUT;
	ssize_t n;
	uint16_t id;

	if (getentropy(&id, sizeof(id)) < 0)
		id = (uint16_t)getpid();
	dns_set_id(q, id);
	if (dns_check_query(q, sizeof(q), &dq) != DNS_FORWARD)
		return -EINVAL;
	fd = socket(ns->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)ns, flow_sa_len(ns)) < 0 || send(fd, q, sizeof(q), 0) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	pf = (struct pollfd){ .fd = fd, .events = POLLIN };
	while (poll(&pf, 1, DNS_TRY_MS) > 0) {
		n = recv(fd, a, sizeof(a), 0);
		if (n < 0) {
			r = -errno;
			break;
		}
		if (dns_id(a) == id && dns_check_answer(a, (size_t)n, &dq, NULL, 0) == 0) {
			r = 0;
			break;
		}
	}
	close(fd);
	return r;
}

static void run_dns(const struct doctor_env *env, struct doctor_finding *f)
{
	struct resolv_conf rc;
	char a[64], what[160];
	int r, first = 0;

	memset(&rc, 0, sizeof(rc));
	if (env->dns) {
		rc.ns[0] = *env->dns;
		rc.n_ns = 1;
	} else if ((r = resolvconf_load(env->resolv_path, &rc)) < 0 && r != -ENOENT) {
		doctor_detail(f, DOCTOR_BLOCKED, "cannot read %s: %s", env->resolv_path, strerror(-r));
		doctor_hint(f, "make %s readable", env->resolv_path);
		return;
	}
	if (rc.n_ns == 0) {
		doctor_detail(f, DOCTOR_WARNING, "%s names no nameserver: lookups inside get SERVFAIL", env->resolv_path);
		doctor_hint(f, "name a resolver in %s (nameserver ADDRESS), or give one with --dns ADDRESS",
			    env->resolv_path);
		return;
	}
	for (int i = 0; i < rc.n_ns; i++) {
		struct timespec t0, t1;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		r = ask_resolver(&rc.ns[i]);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (r == 0) {
			doctor_detail(f, DOCTOR_OK, "%s answered a query in %ld ms%s",
				      flow_addr_str((const struct sockaddr *)&rc.ns[i], a, sizeof(a)),
				      (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000,
				      env->dns ? " (--dns)" : "");
			return;
		}
		if (i == 0)
			first = -r;
	}
	snprintf(what, sizeof(what), "%s, %s%s", flow_addr_str((const struct sockaddr *)&rc.ns[0], a, sizeof(a)),
		 first == ETIMEDOUT ? "timed out" : strerror(first), rc.n_ns > 1 ? ", and the others" : "");
	explain_dns(0, what, f);
}

/* ---------- the proxy ---------- */

static bool has_proxy(const struct doctor_env *env)
{
	return env->proxy || env->proxy_error;
}

static void explain_proxy(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, err ? DOCTOR_WARNING : DOCTOR_BLOCKED, "%s", what ? what : strerror(err));
	switch (err) {
	case EACCES:
		doctor_hint(f, "give the proxy's user with -U and its password with --proxy-password-file FILE "
			    "(or CHILDFLOW_PROXY_PASSWORD); check both with the proxy's administrator");
		break;
	case EPROTO:
		doctor_hint(f, "give the proxy's CA with SSL_CERT_FILE=FILE, or accept an untrusted chain with "
			    "--proxy-insecure");
		break;
	case EPROTONOSUPPORT:
		doctor_hint(f, "check the scheme in -p: http://, https:// or socks5://, as the proxy speaks");
		break;
	default:
		doctor_hint(f, "check the proxy's host and port in -p: is it running, and reachable from this host?");
		break;
	}
}

static void run_proxy(const struct doctor_env *env, struct doctor_finding *f)
{
	struct sockaddr_storage none = { .ss_family = AF_INET };
	struct conn_req rq = { .dst = &none, .probe = true };
	struct connector c;
	struct timespec t0, t;
	enum conn_step s;
	uint32_t want = 0;
	int fd = -1, err = 0;
	void *st;

	if (!env->proxy) {
		explain_proxy(0, env->proxy_error, f);
		return;
	}
	c = proxy_connector(env->proxy);
	st = calloc(1, c.ops->state_size ? c.ops->state_size : 1);
	if (!st) {
		doctor_detail(f, DOCTOR_BLOCKED, "not tried: out of memory");
		return;
	}
	f->detail[0] = '\0';
	proxy_probe_plainly(env->proxy);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	s = c.ops->start(st, c.cfg, &rq, &fd, &want, &err);
	while (s == CONN_MORE || s == CONN_REDIAL) {
		struct pollfd pf = { .fd = fd, .events = (short)want };
		long left;

		if (s == CONN_REDIAL) {
			/* That address failed: the connector dials its next one. */
			close(fd);
			fd = -1;
			s = c.ops->start(st, c.cfg, &rq, &fd, &want, &err);
			continue;
		}

		clock_gettime(CLOCK_MONOTONIC, &t);
		left = PROXY_TRY_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0 || poll(&pf, 1, (int)left) == 0) {
			if (c.ops->abort)
				c.ops->abort(st, CONN_ABORT_TIMEOUT);   /* tells the timeout (into @f) */
			err = ETIMEDOUT;
			break;
		}
		s = c.ops->step(st, fd, (uint32_t)pf.revents, &want, &err);
	}
	if (s == CONN_READY) {
		if (c.ops->stream && c.ops->stream->release)
			c.ops->stream->release(st);
		doctor_detail(f, DOCTOR_OK, "the proxy answered a probe%s", env->proxy_auth ? " and took the credentials" : "");
	} else if (!f->detail[0]) {
		explain_proxy(err ? err : ECONNREFUSED, "the proxy's probe failed", f);
		f->status = DOCTOR_WARNING;
	}
	if (fd >= 0)
		close(fd);
	free(st);
}

/* ---------- IPv6, ICMP echo, capture ---------- */

static void run_ipv6(const struct doctor_env *env, struct doctor_finding *f)
{
	struct in6_addr dst;
	struct rt_answer ans;
	struct nl *nl;
	char ifn[IF_NAMESIZE] = "";
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), r;

	(void)env;
	if (fd < 0) {
		doctor_detail(f, DOCTOR_WARNING, "IPv6 is disabled on this host (%s): the command gets IPv4 only",
			      strerror(errno));
		doctor_hint(f, "only if you want IPv6 inside: enable it on the host (boot without ipv6.disable=1)");
		return;
	}
	close(fd);
	inet_pton(AF_INET6, "2001:db8::1", &dst);
	nl = nl_open_flags(SOCK_NONBLOCK);
	if (!nl) {
		doctor_detail(f, DOCTOR_WARNING, "cannot ask the kernel for an IPv6 route: %s", strerror(errno));
		return;
	}
	r = nl_route_get(nl, AF_INET6, &dst, &ans);
	nl_close(nl);
	if (r == 0 && ans.type != RTN_UNREACHABLE && ans.oif > 0) {
		if_indextoname((unsigned)ans.oif, ifn);
		doctor_detail(f, DOCTOR_OK, "global IPv6 is routed (via %s): the command gets IPv6 too", ifn);
		return;
	}
	doctor_detail(f, DOCTOR_WARNING, "no IPv6 route to the internet (%s): the command gets IPv4 only",
		      strerror(r < 0 ? -r : ans.error ? ans.error : ENETUNREACH));
	doctor_hint(f, "only if you want IPv6 inside: give the host an IPv6 default route");
}

/* net.ipv4.ping_group_range as one line ("1 0"), into @buf. */
static const char *ping_range(char *buf, size_t len)
{
	char *t = proc_read_text("/proc/sys/net/ipv4/ping_group_range", 128);

	snprintf(buf, len, "%s", t ? t : "?");
	free(t);
	buf[strcspn(buf, "\n")] = '\0';
	for (char *p = buf; *p; p++)
		if (*p == '\t')
			*p = ' ';
	return buf;
}

static void explain_ping(int err, const char *what, struct doctor_finding *f)
{
	char range[64], fix[320], exe[256];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	(void)err;
	(void)what;
	exe[n > 0 ? n : 0] = '\0';
	doctor_detail(f, DOCTOR_WARNING, "ping inside is answered \"administratively prohibited\": this host does "
		      "not let childflow send ICMP echo (net.ipv4.ping_group_range is \"%s\", which leaves out group "
		      "%u, and no CAP_NET_RAW for a raw socket)", ping_range(range, sizeof(range)), (unsigned)getegid());
	doctor_hint(f, "%s; or give childflow CAP_NET_RAW: setcap cap_net_raw+ep %s",
		    doctor_sysctl_fix("net.ipv4.ping_group_range", "0 2147483647", fix, sizeof(fix)),
		    exe[0] ? exe : "$(command -v childflow)");
}

static void run_ping(const struct doctor_env *env, struct doctor_finding *f)
{
	char range[64];
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_ICMP);

	(void)env;
	if (fd >= 0) {
		close(fd);
		doctor_detail(f, DOCTOR_OK, "ICMP echo sockets open for group %u (net.ipv4.ping_group_range is \"%s\"): "
			      "ping inside is answered from upstream", (unsigned)getegid(), ping_range(range, sizeof(range)));
		return;
	}
	fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
	if (fd >= 0) {
		close(fd);
		doctor_detail(f, DOCTOR_OK, "ICMP echo sockets are refused to group %u (net.ipv4.ping_group_range is "
			      "\"%s\"), but a raw ICMP socket opens (CAP_NET_RAW): ping inside is answered through it",
			      (unsigned)getegid(), ping_range(range, sizeof(range)));
		return;
	}
	explain_ping(EACCES, NULL, f);
}

static void run_capture(const struct doctor_env *env, struct doctor_finding *f)
{
	int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	char exe[256];
	ssize_t n;

	(void)env;
	if (fd >= 0) {
		close(fd);
		doctor_detail(f, DOCTOR_OK, "raw packet sockets open here (CAP_NET_RAW): -C wire-egress can capture");
		return;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = '\0';
	doctor_detail(f, DOCTOR_WARNING, "raw packet sockets are refused (%s): -C wire-egress needs CAP_NET_RAW",
		      strerror(errno));
	doctor_hint(f, "run childflow as root for a wire capture, or give it the capability: setcap cap_net_raw+ep %s",
		    exe[0] ? exe : "$(command -v childflow)");
}

/* ---------- --fast-tcp: seccomp user notification with ADDFD ---------- */

static int try_addfd(void *arg, char *msg, size_t len)
{
	struct seccomp_notif *req = NULL;
	struct seccomp_notif_resp *resp = NULL;
	struct seccomp_notif_addfd add;
	scmp_filter_ctx ctx;
	struct pollfd pf;
	int nfd, src, st = 0, r;
	pid_t k;

	(void)arg;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return -ENOMEM;
	if ((r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(getppid), 0)) < 0 || (r = seccomp_load(ctx)) < 0) {
		snprintf(msg, len, "cannot install a user-notification filter: %s", strerror(-r));
		seccomp_release(ctx);
		return r;
	}
	nfd = seccomp_notify_fd(ctx);
	k = fork();
	if (k == 0) {
		long v = syscall(SYS_getppid);   /* answered with a new fd by ADDFD|SEND */

		_exit(v >= 0 && fcntl((int)v, F_GETFD) >= 0 ? 0 : 1);
	}
	r = -ETIMEDOUT;
	pf = (struct pollfd){ .fd = nfd, .events = POLLIN };
	if (k > 0 && poll(&pf, 1, 2000) > 0 && seccomp_notify_alloc(&req, &resp) == 0 &&
	    (r = seccomp_notify_receive(nfd, req)) == 0) {
		src = open("/dev/null", O_RDONLY | O_CLOEXEC);
		add = (struct seccomp_notif_addfd){ .id = req->id, .flags = SECCOMP_ADDFD_FLAG_SEND,
						    .srcfd = (uint32_t)src };
		r = ioctl(nfd, SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0 ? -errno : 0;
		if (r < 0)
			snprintf(msg, len, "SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND: %s", strerror(-r));
		close(src);
	}
	if (k > 0) {
		if (r < 0)
			kill(k, SIGKILL);
		waitpid(k, &st, 0);
		if (r == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
			r = -EIO;
	}
	seccomp_notify_free(req, resp);
	seccomp_release(ctx);
	return r;
}

static void run_fast_tcp(const struct doctor_env *env, struct doctor_finding *f)
{
	struct utsname u;
	struct try_result t;
	unsigned int maj = 0, min = 0;

	(void)env;
	if (uname(&u) == 0)
		sscanf(u.release, "%u.%u", &maj, &min);
	if (maj < 5 || (maj == 5 && min < 19)) {
		doctor_detail(f, DOCTOR_WARNING, "kernel %s is older than 5.19: --fast-tcp needs seccomp user "
			      "notification with ADDFD and killable waits", u.release);
		doctor_hint(f, "run a Linux 5.19 or later kernel for --fast-tcp");
		return;
	}
	if (doctor_try(0, try_addfd, NULL, TRY_MS, &t) == 0) {
		doctor_detail(f, DOCTOR_OK, "kernel %s; a seccomp user notification handed an fd to a child "
			      "(SECCOMP_IOCTL_NOTIF_ADDFD)", u.release);
		return;
	}
	doctor_detail(f, DOCTOR_WARNING, "seccomp user notification with ADDFD does not work here: %s",
		      t.msg[0] ? t.msg : strerror(t.err));
	doctor_hint(f, "a container's seccomp policy may forbid seccomp(2) itself: run childflow on the host "
		    "for --fast-tcp");
}

/* ---------- --root: root, forwarding ---------- */

static void run_root(const struct doctor_env *env, struct doctor_finding *f)
{
	(void)env;
	if (geteuid() == 0) {
		doctor_detail(f, DOCTOR_OK, "running as root");
		return;
	}
	doctor_detail(f, DOCTOR_BLOCKED, "the rootful backend (--root) requires root");
	doctor_hint(f, "rerun with sudo -- childflow --root ..., or use the default rootless backend");
}

/*
 * --root turns forwarding on per interface (net.ipv4.conf.<if>.forwarding, and
 * net.ipv6.conf.<if>.force_forwarding on Linux 6.17+, else net.ipv6.conf.all.forwarding), recorded
 * and restored by its watchdog (root/host.c); net.ipv4.ip_forward is never touched.
 */
static void run_forwarding(const struct doctor_env *env, struct doctor_finding *f)
{
	static const char *const v4 = "/proc/sys/net/ipv4/conf/lo/forwarding";
	static const char *const ff = "/proc/sys/net/ipv6/conf/lo/force_forwarding";
	bool per_if6 = access(ff, F_OK) == 0;
	const char *v6 = per_if6 ? ff : "/proc/sys/net/ipv6/conf/all/forwarding";
	const char *const paths[2] = { v4, v6 };

	(void)env;
	for (int i = 0; i < 2; i++) {
		int fd = open(paths[i], O_WRONLY | O_CLOEXEC);

		if (fd < 0) {
			doctor_detail(f, DOCTOR_BLOCKED, "the forwarding sysctls are not writable: %s: %s", paths[i],
				      strerror(errno));
			doctor_hint(f, "run childflow --root as root in the host's network namespace (a container needs "
				    "--privileged)");
			return;
		}
		close(fd);
	}
	if (per_if6)
		doctor_detail(f, DOCTOR_OK, "writable; --root sets net.ipv4.conf.<if>.forwarding and "
			      "net.ipv6.conf.<if>.force_forwarding on the interfaces with routes, and restores them");
	else
		doctor_detail(f, DOCTOR_OK, "writable; --root sets net.ipv4.conf.<if>.forwarding on the interfaces "
			      "with routes and net.ipv6.conf.all.forwarding (Linux < 6.17: while it is 1, interfaces "
			      "with accept_ra=1 ignore router advertisements), and restores them");
}

/* ---------- --root: the uplink's addresses, the host's side ---------- */

static void explain_uplink(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, DOCTOR_BLOCKED, "%s", what && what[0] ? what : strerror(err));
	if (err == EADDRINUSE)
		doctor_hint(f, "--root needs a free /30 of %s (and with IPv6 a /64 of %s): remove or narrow that "
			    "route, or use the rootless backend (drop --root)", ROOT_UPLINK_RANGE4_TEXT,
			    ROOT_UPLINK_RANGE6_TEXT);
}

static void run_uplink(const struct doctor_env *env, struct doctor_finding *f)
{
	char why[256];
	int r = root_uplink_check(netplan_host_has_ipv6(), why, sizeof(why));

	(void)env;
	if (r < 0)
		explain_uplink(-r, why, f);
	else
		doctor_detail(f, DOCTOR_OK, "slot %d of %s is free on this host's routes", r, ROOT_UPLINK_RANGE4_TEXT);
}

/* A change of the host's (link, address, routes, rule, table) that --root could not make. */
static void explain_root_host(int err, const char *what, struct doctor_finding *f)
{
	doctor_detail(f, DOCTOR_BLOCKED, "%s%s%s", what ? what : "cannot set up --root on the host",
		      err ? ": " : "", err ? strerror(err) : "");
	if (err == EPERM || err == EACCES)
		doctor_hint(f, "run childflow --root as root (CAP_NET_ADMIN) in the host's network namespace");
	else if (err == EEXIST)
		doctor_hint(f, "another program uses childflow's routing table (0x%x + slot): stop it, or drop -i",
			    ROOT_TABLE_BASE_VALUE);
	else if (!err)
		doctor_hint(f, "check that nftables works on the host: modprobe nf_tables nft_masq");
	else
		doctor_hint(f, "rerun with CHILDFLOW_DEBUG=1 to see each host change; childflow --doctor --root "
			    "checks the rest");
}

/* Only ever met by a run (its change of the host failed): the doctor changes nothing, so it does
 * not list this check; what a run needs for it is in "root", "forwarding" and "root_uplink". */
static bool never(const struct doctor_env *env)
{
	(void)env;
	return false;
}

static void run_root_host(const struct doctor_env *env, struct doctor_finding *f)
{
	(void)env;
	doctor_detail(f, DOCTOR_OK, "not tried: it would change the host");
}

/* ---------- -i/--iface ---------- */

static bool has_iface(const struct doctor_env *env)
{
	return env->iface != NULL;
}

/* The interfaces here, for the fix of a missing one. */
static void iface_names(char *buf, size_t len)
{
	struct if_nameindex *ni = if_nameindex();
	size_t n = 0;

	buf[0] = '\0';
	for (struct if_nameindex *i = ni; i && i->if_index && n < len - 1; i++) {
		n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? ", " : "", i->if_name);
		if (n >= len)
			n = len - 1;
	}
	if (ni)
		if_freenameindex(ni);
}

/* @err: ENODEV (no such link), ENETDOWN (down), ENOLINK (no carrier), else rtnetlink's; @what: the name. */
static void explain_iface(int err, const char *what, struct doctor_finding *f)
{
	char names[256];

	if (!what)
		what = "?";
	switch (err) {
	case ENODEV:
		iface_names(names, sizeof(names));
		doctor_detail(f, DOCTOR_BLOCKED, "`--iface %s`: no such network interface", what);
		doctor_hint(f, "give -i one that exists: %s", names[0] ? names : "(none)");
		break;
	case ENETDOWN:
		doctor_detail(f, DOCTOR_BLOCKED, "`--iface %s` is down", what);
		doctor_hint(f, "bring it up with `ip link set %s up` (as root), or choose another interface", what);
		break;
	case ENOLINK:
		doctor_detail(f, DOCTOR_BLOCKED, "`--iface %s` has no carrier", what);
		doctor_hint(f, "connect its link, or choose another interface");
		break;
	default:
		doctor_detail(f, DOCTOR_BLOCKED, "cannot check `--iface %s`: rtnetlink: %s", what, strerror(err));
		break;
	}
}

struct default_seen {
	int oif;
	bool found;
};

static void default_route_cb(void *arg, uint32_t table, const void *dst, int dst_len, int oif)
{
	struct default_seen *d = arg;

	(void)dst;
	if (table == RT_TABLE_MAIN && dst_len == 0 && oif == d->oif)
		d->found = true;
}

/* Has @name a default route of its own in the main table (either family)?  Unknown: true. */
static bool iface_has_default(const char *name)
{
	struct default_seen d = { .oif = (int)if_nametoindex(name) };
	struct nl *nl = nl_open();

	if (!nl || !d.oif) {
		nl_close(nl);
		return true;
	}
	if (nl_route_each(nl, AF_INET, default_route_cb, &d) < 0 ||
	    (!d.found && nl_route_each(nl, AF_INET6, default_route_cb, &d) < 0))
		d.found = true;
	nl_close(nl);
	return d.found;
}

static void run_iface(const struct doctor_env *env, struct doctor_finding *f)
{
	struct ifaddrs *ifa = NULL;
	struct nl *nl = nl_open();
	bool up = false, carrier = false;
	int n4 = 0, n6 = 0, r;

	if (!nl) {
		explain_iface(errno, env->iface, f);
		return;
	}
	r = nl_link_state(nl, env->iface, &up, &carrier);
	nl_close(nl);
	if (r < 0 || !up || !carrier) {
		explain_iface(r < 0 ? -r : !up ? ENETDOWN : ENOLINK, env->iface, f);
		return;
	}
	if (getifaddrs(&ifa) == 0) {
		for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
			if (strcmp(i->ifa_name, env->iface) != 0 || !i->ifa_addr)
				continue;
			n4 += i->ifa_addr->sa_family == AF_INET;
			n6 += i->ifa_addr->sa_family == AF_INET6;
		}
		freeifaddrs(ifa);
	}
	if (!n4 && !n6) {
		doctor_detail(f, DOCTOR_WARNING, "%s is up, with a carrier, but has no address: nothing can leave "
			      "through it", env->iface);
		doctor_hint(f, "give %s an address (ip address add ADDRESS/PREFIX dev %s), or choose another -i",
			    env->iface, env->iface);
		return;
	}
	if (!iface_has_default(env->iface)) {
		doctor_detail(f, DOCTOR_WARNING, "%s is up, with a carrier and %d IPv4 and %d IPv6 address%s, but no "
			      "default route: only destinations on its own subnets are reachable through it", env->iface,
			      n4, n6, n4 + n6 == 1 ? "" : "es");
		doctor_hint(f, "add one (ip route add default via GATEWAY dev %s metric 2000), or choose another -i",
			    env->iface);
		return;
	}
	doctor_detail(f, DOCTOR_OK, "%s is up, with a carrier and %d IPv4 and %d IPv6 address%s", env->iface, n4, n6,
		      n4 + n6 == 1 ? "" : "es");
}

/* ---------- the table ---------- */

#define BOTH (DOCTOR_ROOTLESS | DOCTOR_ROOTFUL)

const struct doctor_check doctor_checks[] = {
	{ "root", "root privileges", DOCTOR_PREFLIGHT, DOCTOR_ROOTFUL, NULL, NULL, run_root, NULL },
	{ "forwarding", "forwarding sysctls", DOCTOR_PREFLIGHT, DOCTOR_ROOTFUL, NULL, NULL, run_forwarding, NULL },
	{ "root_uplink", "uplink addresses (--root)", DOCTOR_PREFLIGHT, DOCTOR_ROOTFUL, "root_uplink_in_use", NULL,
	  run_uplink, explain_uplink },
	{ "root_host", "host changes (--root)", DOCTOR_PREFLIGHT, DOCTOR_ROOTFUL, "root_host_setup_failed", never,
	  run_root_host, explain_root_host },
	{ "user_namespaces", "unprivileged user namespaces", DOCTOR_PREFLIGHT, DOCTOR_ROOTLESS,
	  "namespace_unshare_failed", NULL, run_userns, explain_userns },
	{ "uidmap", "uid/gid mapping", DOCTOR_PREFLIGHT, DOCTOR_ROOTLESS, "user_namespace_mapping_failed", NULL,
	  run_uidmap, explain_uidmap },
	{ "nftables", "nftables TPROXY ruleset", DOCTOR_PREFLIGHT, BOTH, "tproxy_ruleset_blocked", NULL, run_nft,
	  explain_nft },
	{ "veth", "veth link", DOCTOR_PREFLIGHT, BOTH, "veth_create_blocked", NULL, run_veth, explain_veth },
	{ "root_bridge", "bridge to the uplink (--root)", DOCTOR_PREFLIGHT, DOCTOR_ROOTFUL, "root_bridge_blocked",
	  NULL, run_bridge, explain_bridge },
	{ "mounts", "private mounts", DOCTOR_PREFLIGHT, DOCTOR_ROOTLESS, "mount_propagation_blocked", NULL,
	  run_mounts, explain_mounts },
	{ "iface", "interface (-i)", DOCTOR_PREFLIGHT, BOTH, "iface_unusable", has_iface, run_iface, explain_iface },
	{ "dns", "host resolvers", DOCTOR_PREFLIGHT, BOTH, NULL, NULL, run_dns, explain_dns },
	{ "proxy", "proxy (-p)", DOCTOR_PREFLIGHT, BOTH, "proxy_unusable", has_proxy, run_proxy, explain_proxy },
	{ "syn_gate", "SYN gate (NFQUEUE)", DOCTOR_CAPABILITY, BOTH, NULL, NULL, run_gate, explain_gate },
	{ "ipv6", "IPv6 reachability", DOCTOR_CAPABILITY, BOTH, NULL, NULL, run_ipv6, NULL },
	{ "icmp_echo", "ICMP echo (ping inside)", DOCTOR_CAPABILITY, BOTH, NULL, NULL, run_ping, explain_ping },
	{ "af_packet_capture", "capture privilege (wire-egress)", DOCTOR_CAPABILITY, BOTH, "packet_capture_blocked",
	  NULL, run_capture, NULL },
	{ "fast_tcp", "seccomp ADDFD (--fast-tcp)", DOCTOR_CAPABILITY, BOTH, NULL, NULL, run_fast_tcp, NULL },
};

const size_t doctor_n_checks = sizeof(doctor_checks) / sizeof(doctor_checks[0]);
