/* SPDX-License-Identifier: MIT */
/*
 * childflow — run one command tree in an isolated network context and relay its traffic.
 * main: parse the command line, start the sandbox, run the relay, return the command's status.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>

#include "capture/capture.h"
#include "capture/egress.h"
#include "capture/wire.h"
#include "cli/cli.h"
#include "connect/direct.h"
#include "ctx.h"
#include "dns/dns.h"
#include "doctor/doctor.h"
#include "dns/hosts.h"
#include "dns/names.h"
#include "dns/nsswitch.h"
#include "dns/resolvconf.h"
#include "netlink/nl.h"
#include "fasttcp/fasttcp.h"
#include "proxy/proxy.h"
#include "relay/relay.h"
#include "root/root.h"
#include "sandbox/sandbox.h"
#include "tty/pty.h"
#include "util/explain.h"
#include "util/log.h"
#include "util/proc.h"

/*
 * check_iface() - `--iface @name` must exist and be up (administratively, and with a carrier)
 * before the command starts; @eg then names it for every upstream socket.
 * Return: 0, or EXIT_SETUP after the doctor's explanation (what is wrong, how to fix it).
 */
static int check_iface(const char *name, struct egress *eg)
{
	struct nl *nl = nl_open();
	bool up = false, carrier = false;
	int r;

	if (!nl) {
		explain_fail("iface", errno, name);
		return EXIT_SETUP;
	}
	r = nl_link_state(nl, name, &up, &carrier);
	nl_close(nl);
	if (r < 0 || !up || !carrier) {
		/* The doctor's words: no such interface, down, no carrier (doctor/checks.c). */
		explain_fail("iface", r < 0 ? -r : !up ? ENETDOWN : ENOLINK, name);
		return EXIT_SETUP;
	}
	snprintf(eg->ifname, sizeof(eg->ifname), "%s", name);
	log_debug("--iface %s: upstream sockets are bound to it (SO_BINDTODEVICE)", name);
	return 0;
}

/*
 * setup_proxy() - the route through --proxy: its host resolved now (the host's resolver, before the
 * command starts), the credentials, the TLS context.  CHILDFLOW_PROXY_TIMEOUT (seconds, 1-600)
 * bounds each handshake (default 20 s).  Return: 0, or the exit code after one error line (the
 * doctor's, for a proxy that cannot be set up); with @errout, that error goes there unprinted.
 */
static int setup_proxy(const struct cli_options *o, const char *password, const struct egress *eg,
		       struct proxy **px, char *errout, size_t errlen)
{
	static const enum proxy_kind kinds[] = {
		[PROXY_HTTP] = PROXY_KIND_HTTP, [PROXY_HTTPS] = PROXY_KIND_HTTPS, [PROXY_SOCKS5] = PROXY_KIND_SOCKS5,
	};
	struct proxy_params p = {
		.kind = kinds[o->proxy.scheme],
		.host = o->proxy.host,
		.port = o->proxy.port,
		.user = o->proxy_user,
		.password = password,
		.insecure = o->proxy_insecure,
		.egress = eg,
	};
	const char *t = getenv("CHILDFLOW_PROXY_TIMEOUT");
	char err[CLI_ERR_MAX];

	if (t) {
		char *end;
		unsigned long v = strtoul(t, &end, 10);

		if (!*t || *end || v < 1 || v > 600) {
			log_error("error: CHILDFLOW_PROXY_TIMEOUT must be a number of seconds from 1 to 600");
			return EXIT_USAGE;
		}
		p.timeout_ms = (unsigned int)v * 1000u;
	}
	if (proxy_new(px, &p, err, sizeof(err)) < 0) {
		if (errout) {
			snprintf(errout, errlen, "%s", err);
			return EXIT_SETUP;
		}
		explain_fail("proxy", 0, err);
		return EXIT_SETUP;
	}
	return 0;
}

static bool fixed_dns(const struct cli_options *o, struct sockaddr_storage *ss);

/*
 * run_doctor() - `--doctor`: the checks of the selected backend and of the options given (-i, -p,
 * --dns), printed to stdout.  Return: 0 when the backend can run, 1 when something blocks it.
 */
static int run_doctor(struct cli_options *o, int argc, char **argv)
{
	char err[CLI_ERR_MAX], perr[CLI_ERR_MAX], password[CLI_PASSWORD_MAX];
	struct sockaddr_storage dns;
	struct doctor_env env = {
		.rootful = o->backend_rootful,
		.iface = o->iface,
		.proxy_auth = o->proxy_user != NULL,
		.resolv_path = "/etc/resolv.conf",
	};
	struct proxy *px = NULL;
	struct egress eg;
	int code;

	if (cli_take_password(o, argc, argv, password, err, sizeof(err)) < 0) {
		log_error("error: %s", err);
		return EXIT_USAGE;
	}
	memset(&eg, 0, sizeof(eg));
	if (o->iface)
		snprintf(eg.ifname, sizeof(eg.ifname), "%s", o->iface);
	if (o->proxy_set && (code = setup_proxy(o, password, &eg, &px, perr, sizeof(perr))) != 0) {
		if (code == EXIT_USAGE)
			return code;
		env.proxy_error = perr;
	}
	explicit_bzero(password, sizeof(password));
	env.proxy = px;
	if (fixed_dns(o, &dns))
		env.dns = &dns;
	code = doctor_run(&env, o->doctor_json ? DOCTOR_JSON : DOCTOR_TEXT, stdout);
	proxy_free(px);
	return code;
}

/*
 * P relays thousands of sockets, so it takes its hard fd limit (root: up to fs.nr_open, capped at
 * 1M).  The command keeps the caller's limits: the sandbox was forked before this.
 */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (geteuid() == 0) {
		FILE *f = fopen("/proc/sys/fs/nr_open", "re");
		unsigned long nr_open = 0;

		if (f) {
			if (fscanf(f, "%lu", &nr_open) != 1)
				nr_open = 0;
			fclose(f);
		}
		if (nr_open > 1048576)
			nr_open = 1048576;
		if (nr_open > rl.rlim_max) {
			struct rlimit big = { .rlim_cur = nr_open, .rlim_max = nr_open };

			if (setrlimit(RLIMIT_NOFILE, &big) == 0)
				return;
		}
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* The texts of the child's name files (sandbox_config's resolv_conf, hosts, nsswitch). */
struct name_files {
	char resolv[RESOLV_LINES_MAX + 256];
	char *hosts;
	char *nsswitch;
};

/* A setup step failed after the name files, the pty, the capture, the wire and the proxy were
 * made (each may be NULL): free them and return @code. */
static int setup_abort(int code, struct name_files *nf, struct pty_relay *pty, struct capture *cap,
		       struct wire *wire, struct proxy *px)
{
	free(nf->hosts);
	free(nf->nsswitch);
	nf->hosts = nf->nsswitch = NULL;
	pty_free(pty);
	capture_free(cap);
	wire_free(wire);
	proxy_free(px);
	return code;
}

/* --hosts-file merged over the host's /etc/hosts.  Return: 0, or an exit code after one line. */
static int load_hosts(const char *path, struct name_files *nf)
{
	size_t olen = 0, blen = 0, len;
	char *over = hosts_load(path, HOSTS_FILE_MAX, &olen), *base;

	if (!over) {
		int e = errno;

		if (e == ENOENT || e == ENOTDIR)
			log_error("error: `--hosts-file` path does not exist: %s", path);
		else if (e == EINVAL)
			log_error("error: `--hosts-file` is not a regular file: %s (give a file in /etc/hosts format)",
				  path);
		else if (e == EFBIG)
			log_error("error: `--hosts-file` is larger than %u MiB: %s (use a smaller file)",
				  HOSTS_FILE_MAX >> 20, path);
		else if (e == EILSEQ)
			log_error("error: `--hosts-file` contains a NUL byte, so it is not a hosts file: %s", path);
		else
			log_error("error: `--hosts-file` cannot be read: %s: %s (make it readable by you)", path,
				  strerror(e));
		return e == ENOMEM ? EXIT_SETUP : EXIT_USAGE;
	}
	base = hosts_load("/etc/hosts", HOSTS_HOST_FILE_MAX, &blen);
	if (!base && errno != ENOENT) {
		log_error("cannot read /etc/hosts to merge `--hosts-file` over it: %s", strerror(errno));
		free(over);
		return EXIT_SETUP;
	}
	nf->hosts = hosts_merge(over, olen, base ? base : "", base ? blen : 0, &len);
	free(over);
	free(base);
	if (nf->hosts)
		return 0;
	log_error("cannot merge `--hosts-file` over /etc/hosts: %s", strerror(ENOMEM));
	return EXIT_SETUP;
}

/* The child's resolv.conf in @nf, naming @np's gateway.  Return: 0, or an exit code after one line. */
static int child_resolv(const struct resolv_conf *host_rc, const struct netplan *np, struct name_files *nf)
{
	int r = resolvconf_child_text(host_rc, np, nf->resolv, sizeof(nf->resolv));

	if (r < 0) {
		log_error("cannot write the child's /etc/resolv.conf: %s", strerror(-r));
		return EXIT_SETUP;
	}
	return 0;
}

/*
 * name_files() - what the child sees as files for name resolution: its resolv.conf (the gateway,
 * and the host's search/domain/options lines from @host_rc), /etc/hosts with --hosts-file, and
 * nsswitch.conf when its hosts: line names sources that go around DNS.
 * --root writes the resolv.conf again with its link's addresses once it has a slot (child_resolv()).
 * Return: 0, or an exit code after one line.
 */
static int name_files(const struct cli_options *o, const struct resolv_conf *host_rc,
		      struct sandbox_config *cfg, struct name_files *nf)
{
	struct netplan np;
	char *ns;
	size_t len;
	int r;

	netplan_init(&np, cfg->ipv6);
	if ((r = child_resolv(host_rc, &np, nf)) != 0)
		return r;
	cfg->resolv_conf = nf->resolv;
	if (o->hosts_file) {
		if ((r = load_hosts(o->hosts_file, nf)) != 0)
			return r;
		cfg->hosts = nf->hosts;
	}
	/* Without a readable nsswitch.conf glibc uses "dns files" for hosts: nothing to rewrite. */
	ns = proc_read_text("/etc/nsswitch.conf", 1u << 20);
	if (!ns)
		return 0;
	r = nsswitch_rewrite(ns, strlen(ns), &nf->nsswitch, &len);
	free(ns);
	if (r < 0) {
		log_error("cannot rewrite the child's /etc/nsswitch.conf: %s", strerror(-r));
		return EXIT_SETUP;
	}
	cfg->nsswitch = nf->nsswitch;
	return 0;
}

/* ctx.resolved: the relay's view of what the tree resolved. */
static size_t lookup_resolved(const void *src, const struct sockaddr *sa, uint64_t now_ms, const char **out,
			      size_t max)
{
	return dns_names_lookup(src, sa, now_ms, out, max);
}

/* (address, name) pairs the tree's answers may leave in c->names: about 3 MiB at most. */
#define NAMES_MAX 32768

/* --dns as a socket address (port 53) in @ss.  Return: whether --dns was given. */
static bool fixed_dns(const struct cli_options *o, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (!o->dns_set)
		return false;
	if (o->dns.family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_addr = o->dns.u.v4;
		a->sin_port = htons(53);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = o->dns.u.v6;
		a->sin6_port = htons(53);
	}
	return true;
}

/* dns_fwd_config's child_files: the backend's writable fds of the child's resolv.conf files. */
static int child_resolv_fds(void *arg, const int **fds)
{
	const struct ctx *c = arg;

	return c->be.ops->child_resolv_fds(c->be.b, fds);
}

/*
 * start_dns() - the forwarder that answers all of the tree's DNS: from --dns when given, else from
 * the host's nameservers (@host_rc, re-read from /etc/resolv.conf when it changes).
 * Return: 0 or -errno.
 */
static int start_dns(struct ctx *c, const struct cli_options *o, const struct resolv_conf *host_rc,
		     struct dns_fwd **fwd)
{
	const struct backend_ops *be = c->be.ops;
	struct sockaddr_storage fixed;
	struct dns_fwd_config cfg = {
		.host = host_rc,
		.resolv_path = "/etc/resolv.conf",
		.listen4 = be->listener(c->be.b, BE_DNS4),
		.listen6 = be->listener(c->be.b, BE_DNS6),
		.egress = &c->egress,
		.np = be->netplan(c->be.b),
		.child_files = be->child_resolv_fds ? child_resolv_fds : NULL,
		.child_files_arg = c,
	};
	int r;

	if (fixed_dns(o, &fixed))
		cfg.fixed = &fixed;
	c->names = dns_names_new(NAMES_MAX);
	if (!c->names)
		return -ENOMEM;
	c->resolved = (struct name_lookup){ .lookup = lookup_resolved, .src = c->names };
	cfg.names = c->names;
	if ((r = dns_fwd_new(fwd, &cfg)) < 0)
		return r;
	c->service = dns_fwd_service(*fwd);
	return 0;
}

/* The status when the capture stopped early: the command's, unless that says success. */
#define EXIT_CAPTURE_INCOMPLETE 3

static void capture_hook_run(void *priv, uint64_t now_ms)
{
	capture_run(priv, now_ms);
}

static uint64_t capture_hook_deadline(void *priv)
{
	return capture_deadline(priv);
}

static bool capture_hook_hold(void *priv, uint64_t now_ms)
{
	return capture_hold(priv, now_ms);
}

/* The backend's name in capture metadata. */
static const char *meta_backend(const struct backend_ops *be)
{
	return !strcmp(be->name, "rootless") ? "rootless-internal" : be->name;
}

/*
 * start_capture() - the views of @view into @cap, driven by @relay: the child view reads the
 * backend's capture point (`childflow view=child backend=<backend> kind=isolated interface=<if>`);
 * the egress view is fed by the relay's tap (`... view=egress ... kind=reconstructed
 * interface=egress`, made into *@egv); the wire view reads @wire (opened before the command) and
 * learns the relay's sockets by the tap.  Return: 0 or -errno (after one line).
 */
static int start_capture(struct ctx *c, struct relay *relay, struct capture *cap, const struct cli_options *o,
			 struct wire *wire, struct egress_view **egv)
{
	const struct backend_ops *be = c->be.ops;
	enum capture_point view = o->capture_point;
	struct be_capture bc;
	char desc[256];
	int r;

	if (view == CAPTURE_CHILD || view == CAPTURE_BOTH) {
		if (!be->capture || be->capture(c->be.b, &bc) < 0) {
			log_error("cannot start the capture: the %s backend offers no capture point", be->name);
			return -ENOENT;
		}
		snprintf(desc, sizeof(desc), "childflow view=child backend=%s kind=isolated interface=%s",
			 bc.backend, bc.ifname);
		if ((r = capture_attach(cap, bc.fd, bc.block_size, bc.block_nr, bc.retire_ms, bc.ifname, desc)) < 0)
			return r;
		/* What a flow sends over the link after the relay held it must fit the ring's headroom. */
		relay_set_child_sockbuf(relay, CAPTURE_CHILD_SOCKBUF);
	}
	if (view == CAPTURE_EGRESS || view == CAPTURE_BOTH) {
		snprintf(desc, sizeof(desc), "childflow view=egress backend=%s kind=reconstructed interface=%s",
			 o->backend_rootful ? "rootful" : meta_backend(be), EGRESS_IFNAME);
		if (!(*egv = egress_new(cap, desc)))
			return -EIO;
		if ((r = relay_set_tap(relay, egress_tap(*egv))) < 0 ||
		    (r = relay_observe(relay, egress_observer(*egv))) < 0)
			return r;
	}
	/* The host's frames: the wire view's, or (--root) the routed flows' part of the egress view.
	 * Described last: their interfaces come after the child's and the reconstructed one. */
	if (wire && ((r = wire_describe(wire, cap)) < 0 || (r = wire_attach(wire)) < 0))
		return r;
	if (view == CAPTURE_WIRE_EGRESS && (r = relay_set_tap(relay, wire_tap(wire))) < 0)
		return r;
	/* The writer thread: from here on the relay only hands packets over (capture/capture.h). */
	if ((r = capture_start(cap)) < 0)
		return r;
	/* hold: the relay stops reading TCP while the writer is behind (lossless; capture/capture.h). */
	return relay_add_hook(relay, &(struct relay_hook){ .fd = capture_fd(cap), .run = capture_hook_run,
							   .deadline = capture_hook_deadline,
							   .hold = capture_hook_hold, .priv = cap });
}

/* The command's pty, driven by the relay as a hook; a stopped command is continued through init. */
struct pty_hook {
	struct pty_relay *pr;
	struct ctx *c;
};

static void pty_hook_run(void *priv, uint64_t now_ms)
{
	struct pty_hook *h = priv;

	(void)now_ms;
	if (pty_run(h->pr) & PTY_EV_CONTINUE)
		h->c->be.ops->signal(h->c->be.b, SIGCONT, false);
}

static uint64_t pty_hook_deadline(void *priv)
{
	(void)priv;
	return UINT64_MAX;
}

/* --fast-tcp: the handler of the command's connects, driven by the relay.  Return: 0 or -errno. */
static int start_fast(struct ctx *c, struct relay *relay, int chan, bool inject, struct fasttcp **ft)
{
	struct relay_hook h;
	int r = fasttcp_new(ft, c, chan, inject);

	if (r < 0)
		return r;
	h = fasttcp_hook(*ft);
	return relay_add_hook(relay, &h);
}

static void report_fast(const struct fasttcp *ft)
{
	const struct fasttcp_stats *s;

	if (!ft)
		return;
	s = fasttcp_stats(ft);
	log_debug("fast-tcp: %llu notifications: %llu connects injected, %llu performed in the sandbox "
		  "(%llu fell back to the relay), %llu refused at once, %llu on injected sockets, %llu "
		  "bind/listen, %llu shares", (unsigned long long)s->notifications, (unsigned long long)s->injected,
		  (unsigned long long)s->performed, (unsigned long long)s->fell_back,
		  (unsigned long long)s->refused, (unsigned long long)s->host_guarded,
		  (unsigned long long)s->bind_listen, (unsigned long long)s->shares);
}

/* Build the context around a started backend and run the relay.  Return: childflow's exit code. */
static int run(struct ctx *c, const struct cli_options *o, const struct resolv_conf *host_rc, int sigfd,
	       const struct proxy *px, struct capture *cap, struct wire *wire, struct pty_relay *pr,
	       int fast_chan)
{
	struct pty_hook ph = { .pr = pr, .c = c };
	const struct backend_ops *be = c->be.ops;
	struct relay *relay = NULL;
	struct fasttcp *ft = NULL;
	struct dns_fwd *fwd = NULL;
	struct egress_view *egv = NULL;
	int code, r;

	c->route[POL_DIRECT] = (struct connector){ .ops = &direct_connector_ops, .cfg = &c->egress };
	if (px)
		c->route[POL_PROXY] = proxy_connector(px);
	if ((r = start_dns(c, o, host_rc, &fwd)) == 0 && (r = policy_init(&c->policy, be->netplan(c->be.b))) == 0)
		c->policy.proxy_tcp = px != NULL;   /* TCP goes to the proxy by default */
	if (r < 0 || (r = relay_new(&relay, c, sigfd)) < 0 ||
	    (r = relay_observe(relay, &flow_debug_observer)) < 0 ||
	    (cap && (r = start_capture(c, relay, cap, o, wire, &egv)) < 0) ||
	    (pr && (r = relay_add_hook(relay, &(struct relay_hook){ .fd = pty_fd(pr), .run = pty_hook_run,
			.deadline = pty_hook_deadline, .priv = &ph })) < 0) ||
	    /* --fast-tcp: a capture view needs every packet, so then nothing is injected. */
	    (fast_chan >= 0 && (r = start_fast(c, relay, fast_chan, cap == NULL, &ft)) < 0) ||
	    /* Reach the proxy (and check the credentials) once, at once: a proxy that cannot work is
	     * told early, while the command starts; nothing waits for it. */
	    (px && (r = relay_probe(relay, &c->route[POL_PROXY])) < 0)) {
		log_error("cannot start the relay: %s", strerror(-r));
		relay_free(relay);
		fasttcp_free(ft);
		egress_free(egv);
		dns_fwd_free(fwd);
		dns_names_free(c->names);
		policy_free(&c->policy);
		be->kill(c->be.b);
		be->finish(c->be.b);
		be->release(c->be.b);
		return EXIT_SETUP;
	}
	code = relay_run(relay);
	log_debug("command finished: exit code %d", code);
	pty_finish(pr);
	relay_free(relay);   /* its flows end: the egress view writes their ends */
	egress_free(egv);
	report_fast(ft);
	fasttcp_free(ft);
	/* Before the backend lets the link go: what the ring still holds, then the statistics. */
	if (cap && !capture_finish(cap) && code == 0)
		code = EXIT_CAPTURE_INCOMPLETE;
	dns_fwd_free(fwd);
	log_debug("dns: %zu (address, name) pairs remembered", dns_names_count(c->names));
	dns_names_free(c->names);
	policy_free(&c->policy);
	be->release(c->be.b);
	return code;
}

int main(int argc, char **argv)
{
	struct cli_options opt;
	struct sandbox_config cfg;
	struct sandbox sb;
	struct ctx c;
	struct resolv_conf host_rc;
	struct name_files nf;
	struct netplan rootplan;
	struct proxy *px = NULL;
	struct capture *cap = NULL;
	struct egress eg;
	struct pty_relay *pty = NULL;
	struct pty_child ptyc;
	struct root_host *root = NULL;
	struct wire *wire = NULL;
	char err[CLI_ERR_MAX], password[CLI_PASSWORD_MAX];
	sigset_t fwd;
	int sigfd, code, r, fast_chan;

	log_init();
	doctor_init();   /* setup failures explain themselves in the doctor's words */
	memset(&nf, 0, sizeof(nf));
	if (cli_parse(argc, argv, &opt, err, sizeof(err)) < 0) {
		log_error("error: %s", err);
		return EXIT_USAGE;
	}
	switch (opt.action) {
	case CLI_HELP:
		cli_print_help(stdout);
		return 0;
	case CLI_VERSION:
		cli_print_version(stdout);
		return 0;
	case CLI_DOCTOR:
		return run_doctor(&opt, argc, argv);
	case CLI_RUN:
		break;
	}
	/* First, before anything can copy our command line or environment: the password out of sight. */
	if (cli_take_password(&opt, argc, argv, password, err, sizeof(err)) < 0) {
		log_error("error: %s", err);
		return EXIT_USAGE;
	}
	if (opt.fast_tcp) {
		const char *why;

		if (!fasttcp_kernel_ok(&why)) {
			log_error("error: %s", why);
			return EXIT_SETUP;
		}
	}
	if (opt.backend_rootful && geteuid() != 0) {
		log_error("error: --root needs root privileges: run it with sudo, or drop --root to use the "
			  "rootless backend");
		return EXIT_USAGE;
	}
	memset(&eg, 0, sizeof(eg));
	if (opt.iface && (code = check_iface(opt.iface, &eg)) != 0)
		return code;
	if (opt.proxy_set && (code = setup_proxy(&opt, password, &eg, &px, NULL, 0)) != 0)
		return code;
	explicit_bzero(password, sizeof(password));

	if (sandbox_config_init(&cfg, opt.argv, netplan_host_has_ipv6()) < 0) {
		proxy_free(px);
		return EXIT_USAGE;
	}
	cfg.isolate = opt.isolate;
	cfg.fast_tcp = opt.fast_tcp;
	for (int i = 0; i < opt.n_allow_sockets && i < SANDBOX_MAX_ALLOW_SOCKETS; i++)
		cfg.allow_sockets[cfg.n_allow_sockets++] = opt.allow_sockets[i];
	/* The child's link is captured for the child view only (the ring is 32 MiB of kernel memory). */
	cfg.capture = opt.capture && (opt.capture_point == CAPTURE_CHILD || opt.capture_point == CAPTURE_BOTH);
	/* Opened after sandbox_config_init() (the command must not inherit it) and before the command
	 * exists: an output that cannot be written is a usage error now, not a warning later. */
	if (opt.capture) {
		char appl[64];

		snprintf(appl, sizeof(appl), "childflow %s", cli_version());
		/* The host's interfaces are read from before the command exists: nothing is missed. */
		/* With --root the egress views are also the host's frames of the routed flows (the
		 * relay never sees them), picked by conntrack: wire.h. */
		bool host_frames = opt.capture_point == CAPTURE_WIRE_EGRESS ||
				   (opt.backend_rootful && opt.capture_point != CAPTURE_CHILD);

		if (host_frames && !(wire = wire_open(opt.backend_rootful ? "rootful" : "rootless-internal",
						      opt.backend_rootful, opt.capture_point != CAPTURE_WIRE_EGRESS)))
			return setup_abort(EXIT_USAGE, &nf, pty, cap, wire, px);
		cap = capture_open(opt.capture, appl);
		if (!cap)
			return setup_abort(EXIT_USAGE, &nf, pty, cap, wire, px);
		/* stdout carries the capture: the command's own output goes to our stderr. */
		if (!strcmp(opt.capture, "-") && dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
			log_error("cannot give the command stderr as its stdout: %s", strerror(errno));
			return setup_abort(EXIT_SETUP, &nf, pty, cap, wire, px);
		}
	}
	/* On a terminal, the command gets a pty of its own (tty/pty.h): its kill(0) stays in its tree. */
	if (pty_open(&pty, &ptyc) < 0)
		return setup_abort(EXIT_SETUP, &nf, NULL, cap, wire, px);
	if (pty) {
		cfg.pty = true;
		cfg.pty_slave = ptyc.slave;
		cfg.pty_report = ptyc.report;
		cfg.pty_fds = ptyc.fds;
		memcpy(cfg.pty_hide, ptyc.path, sizeof(cfg.pty_hide));
		cfg.own_pgrp = false;
	}
	/* Read once, before the sandbox starts: the forwarder's upstreams (without --dns) and timing,
	 * and the lines the child's resolv.conf keeps. */
	r = resolvconf_load("/etc/resolv.conf", &host_rc);
	if (r < 0 && r != -ENOENT) {
		log_error("cannot read /etc/resolv.conf: %s", strerror(-r));
		return setup_abort(EXIT_SETUP, &nf, pty, cap, wire, px);
	}
	if ((code = name_files(&opt, &host_rc, &cfg, &nf)) != 0)
		return setup_abort(code, &nf, pty, cap, wire, px);

	/* Signals wait in the queue from now on; the relay reads them from a signalfd. */
	sigemptyset(&fwd);
	for (int i = 0; i < sandbox_n_forwarded_signals; i++)
		sigaddset(&fwd, sandbox_forwarded_signals[i]);
	sigprocmask(SIG_BLOCK, &fwd, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A file size limit ends the capture with EFBIG (one warning, exit 3), not childflow. */
	signal(SIGXFSZ, SIG_IGN);
	/* An interactive shell inside takes the terminal's foreground: with `stty tostop`, a line we
	 * (or G, C) write would then stop us by SIGTTOU, O_NONBLOCK or not, freezing every flow.
	 * Ignored, the write goes through; init gives the command the caller's disposition back. */
	signal(SIGTTOU, SIG_IGN);

	if (opt.backend_rootful) {
		if (root_host_begin(&root, cfg.ipv6, opt.iface) < 0)
			return setup_abort(EXIT_SETUP, &nf, pty, cap, wire, px);
		cfg.uplink = root_host_uplink(root);
		netplan_init(&rootplan, cfg.ipv6);
		netplan_root(&rootplan, cfg.uplink);
		if ((code = child_resolv(&host_rc, &rootplan, &nf)) != 0) {
			root_host_end(root);
			return setup_abort(code, &nf, pty, cap, wire, px);
		}
		if (wire)   /* the bridged flows leave with the child's address, the uplink's G end */
			wire_routed(wire, &cfg.uplink->gw4, cfg.ipv6 ? &cfg.uplink->gw6 : NULL,
				    cfg.uplink->host_ifname);
		cfg.proxy_tcp = px != NULL;
		cfg.on_unshared = root_host_attach;
		cfg.on_unshared_arg = root;
	}
	log_debug("starting the sandbox (IPv6 %s)", cfg.ipv6 ? "offered" : "not offered: no IPv6 route");
	r = sandbox_start(&cfg, &sb);
	/* The sandbox has its copies now. */
	free(nf.hosts);
	free(nf.nsswitch);
	nf.hosts = nf.nsswitch = NULL;
	if (r < 0) {
		root_host_end(root);
		return setup_abort(EXIT_SETUP, &nf, pty, cap, wire, px);
	}
	if (pty && (r = pty_started(pty)) < 0) {
		struct backend_ref be = sandbox_backend(&sb);

		log_error("cannot relay the command's pty: %s", strerror(-r));
		be.ops->kill(be.b);
		be.ops->finish(be.b);
		be.ops->release(be.b);
		root_host_end(root);
		return setup_abort(EXIT_SETUP, &nf, pty, cap, wire, px);
	}
	log_debug("sandbox ready; relaying");
	/* From here on the command shares our stderr and may stop it: never block on it. */
	log_nonblocking();
	raise_fd_limit();
	memset(&c, 0, sizeof(c));
	c.be = sandbox_backend(&sb);
	c.egress = eg;
	/* On its pty the command learns a new window size from the pty itself (tty/pty.c reads it). */
	if (pty)
		sigdelset(&fwd, SIGWINCH);
	sigfd = signalfd(-1, &fwd, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0) {
		log_error("cannot start the relay: %s", strerror(errno));
		c.be.ops->kill(c.be.b);
		c.be.ops->finish(c.be.b);
		c.be.ops->release(c.be.b);
		root_host_end(root);
		pty_free(pty);
		capture_free(cap);
		wire_free(wire);
		proxy_free(px);
		return EXIT_SETUP;
	}
	fast_chan = sb.fast_fd;   /* the fast-tcp handler owns it from now on */
	sb.fast_fd = -1;
	code = run(&c, &opt, &host_rc, sigfd, px, cap, wire, pty, fast_chan);
	close(sigfd);
	root_host_end(root);
	pty_free(pty);
	capture_free(cap);
	wire_free(wire);
	proxy_free(px);
	if (log_dropped())
		log_warn("%lu diagnostic lines could not be written (stderr was blocked)", log_dropped());
	return code;
}
