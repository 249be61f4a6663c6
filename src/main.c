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

#include "cli/cli.h"
#include "connect/direct.h"
#include "ctx.h"
#include "dns/names.h"
#include "proxy/proxy.h"
#include "relay/relay.h"
#include "sandbox/sandbox.h"
#include "util/log.h"

/* Flags that parse and validate today but whose behaviour arrives with later work. */
static int refuse_unimplemented(const struct cli_options *o)
{
	const char *flag = NULL;

	if (o->capture)
		flag = "--capture";
	else if (o->dns_set)
		flag = "--dns";
	else if (o->hosts_file)
		flag = "--hosts-file";
	else if (o->root || o->backend_rootful)
		flag = "--root";
	else if (o->iface)
		flag = "--iface";
	if (!flag)
		return 0;
	log_error("error: %s is not implemented in this build yet; run without it", flag);
	return -1;
}

/*
 * setup_proxy() - the route through --proxy: its host resolved now (the host's resolver, before the
 * command starts), the credentials, the TLS context.  CHILDFLOW_PROXY_TIMEOUT (seconds, 1-600)
 * bounds each handshake (default 20 s).  Return: 0, or the exit code after one error line.
 */
static int setup_proxy(const struct cli_options *o, const char *password, struct proxy **px)
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
		log_error("%s", err);
		return EXIT_SETUP;
	}
	return 0;
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

/* Build the context around a started backend and run the relay.  Return: childflow's exit code. */
/* (address, name) pairs the tree's answers may leave in c->names: about 3 MiB at most. */
#define NAMES_MAX 32768

static int run(struct ctx *c, int sigfd, const struct proxy *px)
{
	const struct backend_ops *be = c->be.ops;
	struct relay *relay = NULL;
	int code, r;

	c->route[POL_DIRECT] = (struct connector){ .ops = &direct_connector_ops };
	if (px)
		c->route[POL_PROXY] = proxy_connector(px);
	c->names = dns_names_new(NAMES_MAX);
	r = c->names ? 0 : -ENOMEM;
	if (r == 0 && (r = policy_init(&c->policy, be->netplan(c->be.b))) == 0)
		c->policy.proxy_tcp = px != NULL;   /* TCP goes to the proxy by default */
	if (r < 0 || (r = relay_new(&relay, c, sigfd)) < 0 ||
	    (r = relay_observe(relay, &flow_debug_observer)) < 0 ||
	    /* Reach the proxy (and check the credentials) once, at once: a proxy that cannot work is
	     * told early, while the command starts; nothing waits for it. */
	    (px && (r = relay_probe(relay, &c->route[POL_PROXY])) < 0)) {
		log_error("cannot start the relay: %s", strerror(-r));
		relay_free(relay);
		policy_free(&c->policy);
		dns_names_free(c->names);
		be->kill(c->be.b);
		be->finish(c->be.b);
		be->release(c->be.b);
		return EXIT_SETUP;
	}
	code = relay_run(relay);
	log_debug("command finished: exit code %d", code);
	relay_free(relay);
	policy_free(&c->policy);
	dns_names_free(c->names);
	be->release(c->be.b);
	return code;
}

int main(int argc, char **argv)
{
	struct cli_options opt;
	struct sandbox_config cfg;
	struct sandbox sb;
	struct ctx c;
	struct proxy *px = NULL;
	char err[CLI_ERR_MAX], password[CLI_PASSWORD_MAX];
	sigset_t fwd;
	int sigfd, code;

	log_init();
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
		log_error("error: --doctor is not implemented in this build yet");
		return EXIT_USAGE;
	case CLI_RUN:
		break;
	}
	/* First, before anything can copy our command line or environment: the password out of sight. */
	if (cli_take_password(&opt, argc, argv, password, err, sizeof(err)) < 0) {
		log_error("error: %s", err);
		return EXIT_USAGE;
	}
	if (refuse_unimplemented(&opt) < 0)
		return EXIT_USAGE;
	if (opt.proxy_set && (code = setup_proxy(&opt, password, &px)) != 0)
		return code;
	explicit_bzero(password, sizeof(password));

	if (sandbox_config_init(&cfg, opt.argv, netplan_host_has_ipv6()) < 0)
		return EXIT_USAGE;

	/* Signals wait in the queue from now on; the relay reads them from a signalfd. */
	sigemptyset(&fwd);
	for (int i = 0; i < sandbox_n_forwarded_signals; i++)
		sigaddset(&fwd, sandbox_forwarded_signals[i]);
	sigprocmask(SIG_BLOCK, &fwd, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* An interactive shell inside takes the terminal's foreground: with `stty tostop`, a line we
	 * (or G, C) write would then stop us by SIGTTOU, O_NONBLOCK or not, freezing every flow.
	 * Ignored, the write goes through; init gives the command the caller's disposition back. */
	signal(SIGTTOU, SIG_IGN);

	log_debug("starting the sandbox (IPv6 %s)", cfg.ipv6 ? "offered" : "not offered: no IPv6 route");
	if (sandbox_start(&cfg, &sb) < 0)
		return EXIT_SETUP;
	log_debug("sandbox ready; relaying");
	/* From here on the command shares our stderr and may stop it: never block on it. */
	log_nonblocking();
	raise_fd_limit();
	memset(&c, 0, sizeof(c));
	c.be = sandbox_backend(&sb);
	sigfd = signalfd(-1, &fwd, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0) {
		log_error("cannot start the relay: %s", strerror(errno));
		c.be.ops->kill(c.be.b);
		c.be.ops->finish(c.be.b);
		c.be.ops->release(c.be.b);
		return EXIT_SETUP;
	}
	code = run(&c, sigfd, px);
	close(sigfd);
	proxy_free(px);
	if (log_dropped())
		log_warn("%lu diagnostic lines could not be written (stderr was blocked)", log_dropped());
	return code;
}
