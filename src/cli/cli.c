// SPDX-License-Identifier: MIT
/*
 * cli — command-line parsing and validation.
 *
 * Theory of operation
 * -------------------
 * One table (opt_table) describes every flag: its short and long name, the name of its value (NULL for
 * boolean flags), its help text and whether it is hidden.  The parser and the help printer both walk that
 * table, so a flag cannot be parseable but undocumented or the other way round.
 *
 * The parser is a small hand-written loop instead of getopt_long(): getopt permutes argv (so words after
 * the command would be taken as our options) and has its own ideas about "-" and abbreviations.  The
 * rules follow clap 4 as used by the reference tool:
 *
 *   - "--flag value" and "--flag=value"; "-f value", "-fvalue" and "-f=value";
 *   - a value given as a separate word must not look like a flag ("--dns --root" is a missing value,
 *     "--dns=-x" passes "-x" on purpose);
 *   - long names match exactly (no abbreviations), every flag may appear at most once;
 *   - the first word that is not a flag (including a lone "-") starts the command and everything after
 *     it belongs to the command; "--" ends the options explicitly;
 *   - -h/--help and -V/--version act as soon as they are seen, like clap, so "--help --bogus" prints
 *     help while "--bogus --help" is an error.
 *
 * Nothing is allocated: strings in struct cli_options point into the caller's argv.  The only system
 * access is the stat() of --hosts-file during validation, which the reference also does up front.
 */
#include "cli/cli.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#ifndef CHILDFLOW_VERSION
#define CHILDFLOW_VERSION "0.1.0"
#endif

/* Linux interface names live in IFNAMSIZ (16) bytes including the NUL. */
#define CLI_IFNAME_MAX 15

/* Help layout, in the style of clap's long help. */
#define HELP_INDENT 10
#define HELP_WIDTH 80

enum opt_id {
	OPT_CAPTURE,
	OPT_CAPTURE_POINT,
	OPT_ROOT,
	OPT_DOCTOR,
	OPT_DOCTOR_FORMAT,
	OPT_NETWORK_BACKEND,
	OPT_DNS,
	OPT_HOSTS_FILE,
	OPT_PROXY,
	OPT_PROXY_USER,
	OPT_PROXY_PASSWORD,
	OPT_PROXY_PASSWORD_FILE,
	OPT_PROXY_INSECURE,
	OPT_IFACE,
	OPT_ISOLATE,
	OPT_FAST_TCP,
	OPT_ALLOW_SOCKET,
	OPT_HELP,
	OPT_VERSION,
	OPT_COUNT,
};

struct opt_def {
	enum opt_id id;
	char short_name;        /* 0: no short form */
	const char *long_name;  /* without the leading "--" */
	const char *value_name; /* NULL: boolean flag that takes no value */
	const char *help;       /* reference help text, trailing period stripped as clap does */
	const char *help_extra; /* extra help lines (defaults, possible values), or NULL */
	bool hidden;            /* parsed but not shown in --help */
	bool repeatable;        /* may be given more than once */
};

/* Declaration order is the --help order, as in the reference. */
static const struct opt_def opt_table[] = {
	{ OPT_CAPTURE, 'c', "capture", "OUTPUT",
	  "Write only the target command tree's traffic as pcapng", NULL, false, false },
	{ OPT_CAPTURE_POINT, 'C', "capture-point", "OUTPUT_VIEW",
	  "Select which capture point or view `--capture` should write: `child` (the tree's own link, "
	  "its addresses), `egress` (what left the host for it, rebuilt from the relay's sockets; with "
	  "--root the routed flows are the host's real frames after NAT, kind=captured), `wire-egress` "
	  "(the real frames on the host's interfaces of the relay's sockets and, with --root, of the "
	  "routed flows, picked by the host's conntrack; needs CAP_NET_RAW), `both` (child and egress, "
	  "one file)",
	  "[default: child]\n[possible values: child, egress, wire-egress, both]", false, false },
	{ OPT_ROOT, 0, "root", NULL,
	  "Use the rootful backend. Without this flag, childflow uses the default rootless backend",
	  "Needs root (sudo). Direct traffic is routed and masqueraded by the host kernel; DNS and -p stay "
	  "intercepted. Host changes while it runs (CHILDFLOW_DEBUG=1 prints each): a veth cfroot<N> and an "
	  "nftables table inet childflow-root<N> (both go by themselves), forwarding on the interfaces "
	  "with routes (net.ipv4.conf.<if>.forwarding; IPv6: net.ipv6.conf.<if>.force_forwarding, or "
	  "conf.all.forwarding before Linux 6.17), restored to their previous values at exit, even "
	  "after SIGKILL, by a watchdog (records in /run/childflow-root); with -i, a routing table and a "
	  "policy rule, removed by the same watchdog. -C egress, both and wire-egress follow the routed "
	  "flows by the host's conntrack events (nf_conntrack_netlink)",
	  false, false },
	{ OPT_DOCTOR, 0, "doctor", NULL,
	  "Diagnose whether the current host is ready for the selected backend", NULL, false, false },
	{ OPT_DOCTOR_FORMAT, 0, "doctor-format", "FORMAT",
	  "How --doctor prints its report", "[default: text]\n[possible values: text, json]", false, false },
	{ OPT_NETWORK_BACKEND, 0, "network-backend", "NETWORK_BACKEND",
	  "Select the networking backend. This is kept as a hidden compatibility escape hatch; use `--root` "
	  "for the public CLI", NULL, true, false },
	{ OPT_DNS, 'd', "dns", "DNS",
	  "Force DNS traffic for the child tree to this IPv4 or IPv6 resolver", NULL, false, false },
	{ OPT_HOSTS_FILE, 0, "hosts-file", "HOSTS_FILE",
	  "Overlay an `/etc/hosts`-format file on the child's `/etc/hosts`: its entries come first and "
	  "win, the host's entries for other names remain (a regular file of at most 4 MiB). Inside, the "
	  "host's name-service endpoints (systemd-resolved's /run/systemd/resolve, nscd, avahi, the D-Bus "
	  "system bus) are hidden and nsswitch.conf's hosts: line keeps only files, dns and the like",
	  NULL, false, false },
	{ OPT_PROXY, 'p', "proxy", "PROXY",
	  "Configure an upstream proxy URI, for example http://127.0.0.1:8080, "
	  "https://proxy.example.com:443, or socks5://host.docker.internal:10080. Every TCP connection of "
	  "the command tree goes through it, whatever the program (proxy variables are not needed); the "
	  "proxy is asked for the name the tree resolved when there is one. DNS, UDP and ICMP still go "
	  "direct", NULL, false, false },
	{ OPT_PROXY_USER, 'U', "proxy-user", "PROXY_USER",
	  "Username for upstream proxy authentication", NULL, false, false },
	{ OPT_PROXY_PASSWORD, 'P', "proxy-password", "PROXY_PASSWORD",
	  "Password for upstream proxy authentication. Visible to other users until childflow starts (it "
	  "then blanks it in its command line): prefer --proxy-password-file or CHILDFLOW_PROXY_PASSWORD",
	  NULL, false, false },
	{ OPT_PROXY_PASSWORD_FILE, 0, "proxy-password-file", "FILE",
	  "Read the proxy password from the first line of FILE (instead of --proxy-password)", NULL, false, false },
	{ OPT_PROXY_INSECURE, 0, "proxy-insecure", NULL,
	  "Ignore certificate trust errors for https:// upstream proxies while still validating the "
	  "hostname", NULL, false, false },
	{ OPT_IFACE, 'i', "iface", "IFACE",
	  "Force the host-side egress interface for the child's direct traffic, its DNS upstream "
	  "queries and its proxy connection, whatever the host's default route says (rootless: every "
	  "upstream socket is bound to IFACE with SO_BINDTODEVICE and leaves with IFACE's address; --root: "
	  "policy routing, a per-run table of IFACE's routes and a source rule, removed at exit). IFACE "
	  "must exist and be up when childflow starts (else exit 125); if it goes down later, new "
	  "connections fail as unreachable. A nameserver or proxy on loopback is reached over loopback",
	  NULL, false, false },
	{ OPT_ISOLATE, 0, "isolate", NULL,
	  "Also cut the host IPC that could carry the tree around the network controls: a private /tmp "
	  "and /dev/shm, its own SysV/POSIX IPC namespace, $XDG_RUNTIME_DIR hidden (session D-Bus, "
	  "Wayland, agents), SSH_AUTH_SOCK, DBUS_SESSION_BUS_ADDRESS, DISPLAY, WAYLAND_DISPLAY and the "
	  "like removed from the environment, a fresh session keyring, and no new user namespaces inside "
	  "(a nested childflow or `unshare -U` fails). Without it, only the endpoints that resolve names "
	  "or open connections for a caller are hidden (systemd-resolved, nscd, avahi, the D-Bus system "
	  "bus, the Docker, Podman and containerd API sockets)", NULL, false, false },
	{ OPT_FAST_TCP, 0, "fast-tcp", NULL,
	  "Connect the tree's direct TCP connections from the caller's namespace and hand them to it "
	  "(seccomp socket injection, Linux 5.19+): direct speed, exact connect errors. The command then "
	  "sees the host's address in getsockname(); sockets registered with epoll or shared before "
	  "connect, proxied, captured and DNS traffic stay on the relay. Opt-in for now", NULL, false, false },
	{ OPT_ALLOW_SOCKET, 0, "allow-socket", "PATH",
	  "Let the unix socket at PATH (absolute) through on purpose, even where the sandbox hides it "
	  "(repeatable, up to 16); with --isolate, an environment variable naming it is kept",
	  NULL, false, true },
	{ OPT_HELP, 'h', "help", NULL, "Print help", NULL, false, false },
	{ OPT_VERSION, 'V', "version", NULL, "Print version", NULL, false, false },
};

#define OPT_TABLE_LEN (sizeof(opt_table) / sizeof(opt_table[0]))

/* Indexed by enum capture_point; also the order of "possible values". */
static const char *const capture_point_names[] = {
	[CAPTURE_CHILD] = "child",
	[CAPTURE_EGRESS] = "egress",
	[CAPTURE_WIRE_EGRESS] = "wire-egress",
	[CAPTURE_BOTH] = "both",
};

/* --network-backend values; index 0 is the rootful one. */
static const char *const backend_names[] = { "rootful", "rootless-internal" };
static const char *const doctor_format_names[] = { "text", "json" };

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Per-call parser state; lives on cli_parse()'s stack so the parser has no globals. */
struct parser {
	int argc;
	char **argv;
	int next;               /* index of the next unread word */
	bool seen[OPT_COUNT];   /* for the "cannot be used multiple times" check */
	struct cli_options *opt;
	char *err;
	size_t errlen;
};

/*
 * fail() - write a one-line message into @err (if there is room) and return -1.
 * Truncation is acceptable: the message is for a human and long values are rare.
 */
__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* "--dns <DNS>" for options with a value, "--root" for flags: the name clap uses in messages. */
static void arg_display(const struct opt_def *d, char *buf, size_t len)
{
	if (d->value_name)
		snprintf(buf, len, "--%s <%s>", d->long_name, d->value_name);
	else
		snprintf(buf, len, "--%s", d->long_name);
}

static int fail_value(struct parser *p, const struct opt_def *d, const char *value, const char *msg)
{
	char name[64];

	arg_display(d, name, sizeof(name));
	return fail(p->err, p->errlen, "invalid value '%s' for '%s': %s", value, name, msg);
}

static int fail_missing_value(struct parser *p, const struct opt_def *d)
{
	char name[64];

	arg_display(d, name, sizeof(name));
	return fail(p->err, p->errlen, "a value is required for '%s' but none was supplied", name);
}

static const struct opt_def *find_long(const char *name, size_t len)
{
	for (size_t i = 0; i < OPT_TABLE_LEN; i++) {
		const char *l = opt_table[i].long_name;

		if (strlen(l) == len && memcmp(l, name, len) == 0)
			return &opt_table[i];
	}
	return NULL;
}

static const struct opt_def *find_short(char c)
{
	for (size_t i = 0; i < OPT_TABLE_LEN; i++)
		if (opt_table[i].short_name && opt_table[i].short_name == c)
			return &opt_table[i];
	return NULL;
}

/* Returns the index of @value in @names, or -1. */
static int enum_lookup(const char *const *names, size_t n, const char *value)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], value) == 0)
			return (int)i;
	return -1;
}

static int fail_enum(struct parser *p, const struct opt_def *d, const char *value,
		     const char *const *names, size_t n)
{
	char list[128] = "possible values: ";
	size_t used = strlen(list);

	for (size_t i = 0; i < n; i++) {
		int w = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", names[i]);

		if (w < 0 || (size_t)w >= sizeof(list) - used)
			break;
		used += (size_t)w;
	}
	return fail_value(p, d, value, list);
}

/*
 * valid_ifname() - the kernel's dev_valid_name() rules.
 * Checked here so that a bad name fails as a usage error instead of deep inside the rootful setup.
 */
static bool valid_ifname(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > CLI_IFNAME_MAX)
		return false;
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (const char *c = s; *c; c++)
		if (*c == '/' || *c == ':' || isspace((unsigned char)*c))
			return false;
	return true;
}

/* Store one option that takes a value.  @value is never NULL here. */
static int apply_value(struct parser *p, const struct opt_def *d, const char *value)
{
	struct cli_options *opt = p->opt;
	char msg[CLI_ERR_MAX];
	int idx;

	switch (d->id) {
	case OPT_CAPTURE:
	case OPT_HOSTS_FILE:
		/* clap's path parser refuses an empty path the same way as a missing one. */
		if (*value == '\0')
			return fail_missing_value(p, d);
		if (d->id == OPT_CAPTURE)
			opt->capture = value;
		else
			opt->hosts_file = value;
		return 0;
	case OPT_CAPTURE_POINT:
		idx = enum_lookup(capture_point_names, ARRAY_LEN(capture_point_names), value);
		if (idx < 0)
			return fail_enum(p, d, value, capture_point_names, ARRAY_LEN(capture_point_names));
		opt->capture_point = (enum capture_point)idx;
		opt->capture_point_set = true;
		return 0;
	case OPT_DOCTOR_FORMAT:
		idx = enum_lookup(doctor_format_names, ARRAY_LEN(doctor_format_names), value);
		if (idx < 0)
			return fail_enum(p, d, value, doctor_format_names, ARRAY_LEN(doctor_format_names));
		opt->doctor_json = idx == 1;
		return 0;
	case OPT_NETWORK_BACKEND:
		idx = enum_lookup(backend_names, ARRAY_LEN(backend_names), value);
		if (idx < 0)
			return fail_enum(p, d, value, backend_names, ARRAY_LEN(backend_names));
		/* Combined with --root after the loop: --root always wins. */
		opt->backend_rootful = (idx == 0);
		return 0;
	case OPT_DNS:
		if (cli_parse_ip(value, &opt->dns) < 0)
			return fail_value(p, d, value, "invalid IP address syntax");
		opt->dns_set = true;
		return 0;
	case OPT_PROXY:
		if (cli_parse_proxy(value, &opt->proxy, msg, sizeof(msg)) < 0)
			return fail_value(p, d, strchr(value, '@') ? "<URI with credentials, not shown>" : value,
					  msg);
		opt->proxy_set = true;
		return 0;
	case OPT_PROXY_USER:
		opt->proxy_user = value;
		return 0;
	case OPT_PROXY_PASSWORD:
		opt->proxy_password = value;
		return 0;
	case OPT_PROXY_PASSWORD_FILE:
		if (*value == '\0')
			return fail_missing_value(p, d);
		opt->proxy_password_file = value;
		return 0;
	case OPT_ALLOW_SOCKET:
		if (*value == '\0')
			return fail_missing_value(p, d);
		if (value[0] != '/')
			return fail_value(p, d, value, "not an absolute path");
		if (opt->n_allow_sockets == CLI_MAX_ALLOW_SOCKETS)
			return fail_value(p, d, value, "too many sockets (at most 16)");
		opt->allow_sockets[opt->n_allow_sockets++] = value;
		return 0;
	case OPT_IFACE:
		if (!valid_ifname(value))
			return fail_value(p, d, value, "not a valid network interface name");
		opt->iface = value;
		return 0;
	default:
		break;
	}
	/* Unreachable: only table entries with a value_name get here. */
	return fail(p->err, p->errlen, "internal error: unhandled option '--%s'", d->long_name);
}

/* Store one boolean flag. */
static void apply_flag(struct parser *p, const struct opt_def *d)
{
	struct cli_options *opt = p->opt;

	switch (d->id) {
	case OPT_ROOT:
		opt->root = true;
		break;
	case OPT_DOCTOR:
		opt->doctor = true;
		break;
	case OPT_PROXY_INSECURE:
		opt->proxy_insecure = true;
		break;
	case OPT_ISOLATE:
		opt->isolate = true;
		break;
	case OPT_FAST_TCP:
		opt->fast_tcp = true;
		break;
	case OPT_HELP:
		opt->action = CLI_HELP;
		break;
	case OPT_VERSION:
		opt->action = CLI_VERSION;
		break;
	default:
		break;
	}
}

/* The reference (clap) refuses a repeated flag rather than letting the last one win silently. */
static int mark_seen(struct parser *p, const struct opt_def *d)
{
	char name[64];

	if (p->seen[d->id] && !d->repeatable) {
		arg_display(d, name, sizeof(name));
		return fail(p->err, p->errlen, "the argument '%s' cannot be used multiple times", name);
	}
	p->seen[d->id] = true;
	return 0;
}

/* A separate word can be a value unless it looks like a flag; a lone "-" is a value. */
static bool looks_like_flag(const char *word)
{
	return word[0] == '-' && word[1] != '\0';
}

/*
 * take_value() - the value of option @d, either @attached (text after "=" or after the short letter)
 * or the next word of argv.  Returns NULL (with @err set) when there is none.
 */
static const char *take_value(struct parser *p, const struct opt_def *d, const char *attached)
{
	const char *word;

	if (attached)
		return attached;
	if (p->next >= p->argc) {
		fail_missing_value(p, d);
		return NULL;
	}
	word = p->argv[p->next];
	if (looks_like_flag(word)) {
		fail_missing_value(p, d);
		return NULL;
	}
	p->next++;
	return word;
}

/* Handle "--name" or "--name=value" (@arg points past the "--"). */
static int parse_long(struct parser *p, const char *arg)
{
	const char *eq = strchr(arg, '=');
	size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
	const struct opt_def *d = find_long(arg, len);
	const char *value;

	if (!d)
		return fail(p->err, p->errlen, "unexpected argument '--%.*s' found", (int)len, arg);
	if (mark_seen(p, d) < 0)
		return -1;
	if (!d->value_name) {
		if (eq)
			return fail(p->err, p->errlen,
				    "unexpected value '%s' for '--%s' found; no more were expected", eq + 1,
				    d->long_name);
		apply_flag(p, d);
		return 0;
	}
	value = take_value(p, d, eq ? eq + 1 : NULL);
	if (!value)
		return -1;
	return apply_value(p, d, value);
}

/*
 * parse_short() - handle "-x", "-xvalue", "-x=value" or a cluster of boolean flags ("-hV").
 * @word is the whole argv word, including the leading "-".
 */
static int parse_short(struct parser *p, const char *word)
{
	for (const char *c = word + 1; *c; c++) {
		const struct opt_def *d = find_short(*c);
		const char *value;
		const char *attached;

		/* Name the whole word: clearer than one letter, and never splits a UTF-8 sequence. */
		if (!d)
			return fail(p->err, p->errlen, "unexpected argument '%s' found", word);
		if (mark_seen(p, d) < 0)
			return -1;
		if (!d->value_name) {
			apply_flag(p, d);
			if (p->opt->action != CLI_RUN)
				return 0;
			continue;
		}
		/* The rest of the word is the value; clap also drops one '=' ("-c=out.pcapng"). */
		attached = c[1] ? c + 1 : NULL;
		if (attached && *attached == '=')
			attached++;
		value = take_value(p, d, attached);
		if (!value)
			return -1;
		return apply_value(p, d, value);
	}
	return 0;
}

/* Checks from the reference's validate(), in its order; the first failure wins. */
static int validate(const struct cli_options *opt, char *err, size_t errlen)
{
	struct stat st;

	if (opt->argc == 0)
		return fail(err, errlen, "missing command to execute");
	if (opt->hosts_file) {
		if (stat(opt->hosts_file, &st) < 0) {
			if (errno == ENOENT || errno == ENOTDIR)
				return fail(err, errlen, "`--hosts-file` path does not exist: %s",
					    opt->hosts_file);
			return fail(err, errlen, "`--hosts-file` path cannot be accessed: %s: %s",
				    opt->hosts_file, strerror(errno));
		}
		/* Caught here because bind-mounting a directory over /etc/hosts fails obscurely later. */
		if (S_ISDIR(st.st_mode))
			return fail(err, errlen, "`--hosts-file` path is a directory: %s", opt->hosts_file);
	}
	if (opt->capture_point != CAPTURE_CHILD && !opt->capture)
		return fail(err, errlen, "`--capture-point` requires `--capture`");
	if (opt->proxy_password && opt->proxy_password_file)
		return fail(err, errlen, "`--proxy-password` and `--proxy-password-file` cannot be used together");
	/* CHILDFLOW_PROXY_PASSWORD counts only with --proxy-user: it may be exported for other runs. */
	if ((opt->proxy_user == NULL) != (opt->proxy_password == NULL && opt->proxy_password_file == NULL) &&
	    !(opt->proxy_user && getenv(CLI_PASSWORD_ENV)))
		return fail(err, errlen, "`--proxy-user` and `--proxy-password` must be provided together");
	if ((opt->proxy_user || opt->proxy_password || opt->proxy_password_file || opt->proxy_insecure) &&
	    !opt->proxy_set)
		return fail(err, errlen, "proxy authentication and TLS options require `--proxy`");
	if (opt->proxy_insecure && opt->proxy.scheme != PROXY_HTTPS)
		return fail(err, errlen, "`--proxy-insecure` is only valid with an `https://` upstream proxy");
	return 0;
}

/**
 * cli_parse() - parse and validate argv (see cli.h).
 *
 * @opt is fully reset first.  On success:
 *  - action CLI_HELP / CLI_VERSION: nothing else is meaningful and no validation ran;
 *  - action CLI_DOCTOR: options are parsed but not validated (the reference dispatches --doctor before
 *    validate()); a command, if any, is exposed but may be ignored;
 *  - action CLI_RUN: everything is validated and opt->argv/opt->argc hold the command.
 * opt->argv points into @argv (so it is NULL-terminated when @argv is, as main()'s is), or is NULL with
 * opt->argc == 0 when no command was given.  opt->backend_rootful is true for --root or
 * --network-backend rootful.
 */
int cli_parse(int argc, char **argv, struct cli_options *opt, char *err, size_t errlen)
{
	struct parser p = {
		.argc = argc,
		.argv = argv,
		.next = 1,
		.opt = opt,
		.err = err,
		.errlen = errlen,
	};

	memset(opt, 0, sizeof(*opt));
	if (err && errlen)
		err[0] = '\0';

	while (p.next < p.argc) {
		const char *word = argv[p.next];
		int rc;

		if (strcmp(word, "--") == 0) {
			p.next++;
			break;
		}
		if (!looks_like_flag(word))
			break;
		p.next++;
		if (word[1] == '-')
			rc = parse_long(&p, word + 2);
		else
			rc = parse_short(&p, word);
		if (rc < 0)
			return -1;
		if (opt->action == CLI_HELP || opt->action == CLI_VERSION)
			return 0;
	}

	if (p.next < p.argc) {
		opt->argv = &argv[p.next];
		opt->argc = p.argc - p.next;
	}
	opt->backend_rootful = opt->backend_rootful || opt->root;

	if (opt->doctor) {
		opt->action = CLI_DOCTOR;
		return 0;
	}
	opt->action = CLI_RUN;
	return validate(opt, err, errlen);
}

/*
 * parse_port() - a u16 in decimal digits only (leading zeros allowed, so "0080" is 80).
 * Unlike Rust's u16::from_str a leading '+' is refused: it is never meant as part of a port.
 */
static int parse_port(const char *s, uint16_t *out)
{
	unsigned long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > 65535)
			return -1;
	}
	*out = (uint16_t)v;
	return 0;
}

static int copy_host(struct proxy_spec *out, const char *host, size_t len)
{
	if (len >= sizeof(out->host))
		return -1;
	memcpy(out->host, host, len);
	out->host[len] = '\0';
	return 0;
}

/* "[v6]:port".  @rest starts with '['. */
static int parse_bracket_host_port(const char *rest, struct proxy_spec *out, char *err, size_t errlen)
{
	const char *host = rest + 1;
	const char *close = strchr(host, ']');
	size_t len;
	struct in6_addr a6;

	if (!close)
		return fail(err, errlen, "invalid proxy URI host");
	if (close[1] != ':')
		return fail(err, errlen, "proxy URI must include a port");
	if (parse_port(close + 2, &out->port) < 0)
		return fail(err, errlen, "proxy URI has an invalid port");
	/*
	 * The reference takes anything between the brackets, even nothing.  Brackets only make sense
	 * around an IPv6 literal, so anything else is refused here rather than failing at connect time.
	 */
	len = (size_t)(close - host);
	if (len == 0)
		return fail(err, errlen, "proxy URI is missing a host");
	if (copy_host(out, host, len) < 0 || inet_pton(AF_INET6, out->host, &a6) != 1)
		return fail(err, errlen, "invalid proxy URI host");
	return 0;
}

/* "host:port" where host is a name or an IPv4 literal. */
static int parse_plain_host_port(const char *rest, struct proxy_spec *out, char *err, size_t errlen)
{
	const char *colon = strchr(rest, ':');

	if (colon && strchr(colon + 1, ':'))
		return fail(err, errlen, "IPv6 proxy hosts must be enclosed in `[` and `]`");
	if (!colon)
		return fail(err, errlen, "proxy URI must include a port");
	if (colon == rest)
		return fail(err, errlen, "proxy URI is missing a host");
	if (parse_port(colon + 1, &out->port) < 0)
		return fail(err, errlen, "proxy URI has an invalid port");
	if (copy_host(out, rest, (size_t)(colon - rest)) < 0)
		return fail(err, errlen, "invalid proxy URI host");
	return 0;
}

/**
 * cli_parse_proxy() - parse "scheme://host:port" as the reference's ProxySpec::from_str does.
 * @s:      the URI
 * @out:    filled on success; may be partly written on failure
 * @err:    receives the bare reason on failure (e.g. "proxy URI has an invalid port"), without the
 *          "invalid value ... for '--proxy <PROXY>'" prefix that cli_parse() adds
 *
 * The checks run in the reference's order (§1.2).  Userinfo is not supported ("user@h" is taken as the
 * host name); credentials go through -U/-P.  IPv6 hosts come back without brackets.
 * Return: 0 on success, -1 on error.
 */
int cli_parse_proxy(const char *s, struct proxy_spec *out, char *err, size_t errlen)
{
	const char *sep = strstr(s, "://");
	const char *rest;
	size_t slen;

	memset(out, 0, sizeof(*out));
	if (!sep)
		return fail(err, errlen, "proxy must be a URI like http://host:port or socks5://host:port");
	rest = sep + 3;
	if (*rest == '\0')
		return fail(err, errlen, "proxy URI is missing host:port");
	if (strpbrk(rest, "/?#"))
		return fail(err, errlen, "proxy URI must not contain a path, query, or fragment");
	/* The reference takes "user@h" for a host name (and "u:p@h" fails as an IPv6 host); say what
	 * is wrong instead. */
	if (strchr(rest, '@'))
		return fail(err, errlen, "proxy URI must not contain credentials; use `--proxy-user` and "
			    "`--proxy-password-file` (or `--proxy-password`)");

	/* Case-sensitive on purpose, like the reference: "HTTP" and "socks5h" are refused. */
	slen = (size_t)(sep - s);
	if (slen == 4 && memcmp(s, "http", 4) == 0)
		out->scheme = PROXY_HTTP;
	else if (slen == 5 && memcmp(s, "https", 5) == 0)
		out->scheme = PROXY_HTTPS;
	else if (slen == 6 && memcmp(s, "socks5", 6) == 0)
		out->scheme = PROXY_SOCKS5;
	else
		return fail(err, errlen, "unsupported proxy scheme `%.*s`; expected `http`, `https`, or `socks5`",
			    (int)slen, s);

	if (*rest == '[')
		return parse_bracket_host_port(rest, out, err, errlen);
	return parse_plain_host_port(rest, out, err, errlen);
}

/**
 * cli_parse_ip() - parse an IPv4 or IPv6 literal (no port, no brackets, no zone).
 * inet_pton() is as strict as Rust's IpAddr parser: dotted quad only, no leading zeros.
 * Return: 0 on success, -1 if @s is not an address.
 */
int cli_parse_ip(const char *s, struct ip_addr *out)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, s, &out->u.v4) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, &out->u.v6) == 1) {
		out->family = AF_INET6;
		return 0;
	}
	return -1;
}

const char *cli_capture_point_name(enum capture_point cp)
{
	if ((unsigned int)cp >= ARRAY_LEN(capture_point_names))
		return "unknown";
	return capture_point_names[cp];
}

/* Print @text word-wrapped to HELP_WIDTH, every line indented by @indent; '\n' forces a break. */
static void print_wrapped(FILE *f, const char *text, int indent)
{
	int col = 0;

	while (*text) {
		size_t wlen = strcspn(text, " \n");

		if (col > 0 && col + 1 + (int)wlen > HELP_WIDTH) {
			fputc('\n', f);
			col = 0;
		}
		if (col == 0)
			col = fprintf(f, "%*s", indent, "");
		else
			col += fprintf(f, " ");
		col += fprintf(f, "%.*s", (int)wlen, text);
		text += wlen;
		if (*text == '\n') {
			fputc('\n', f);
			col = 0;
		}
		if (*text)
			text++;
	}
	if (col > 0)
		fputc('\n', f);
}

static void print_option_help(FILE *f, const struct opt_def *d)
{
	if (d->short_name)
		fprintf(f, "  -%c, --%s", d->short_name, d->long_name);
	else
		fprintf(f, "      --%s", d->long_name);
	if (d->value_name)
		fprintf(f, " <%s>", d->value_name);
	fputc('\n', f);
	print_wrapped(f, d->help, HELP_INDENT);
	if (d->help_extra) {
		fputc('\n', f);
		print_wrapped(f, d->help_extra, HELP_INDENT);
	}
}

void cli_print_help(FILE *f)
{
	bool first = true;

	fprintf(f, "Run one command tree inside a controlled network sandbox\n"
		   "\n"
		   "Usage: childflow [OPTIONS] [COMMAND]...\n"
		   "\n"
		   "Arguments:\n"
		   "  [COMMAND]...\n");
	print_wrapped(f, "Command to execute", HELP_INDENT);
	fprintf(f, "\nOptions:\n");
	for (size_t i = 0; i < OPT_TABLE_LEN; i++) {
		if (opt_table[i].hidden)
			continue;
		if (!first)
			fputc('\n', f);
		first = false;
		print_option_help(f, &opt_table[i]);
	}
	fprintf(f, "\n"
		   "Exit status:\n"
		   "  The exit status of COMMAND, or:\n"
		   "  128+N  COMMAND was killed by signal N\n"
		   "  3      COMMAND succeeded but the capture is incomplete (its output failed)\n"
		   "  125    childflow itself failed (setup error, missing kernel feature)\n"
		   "  126    COMMAND exists but cannot be executed\n"
		   "  127    COMMAND was not found\n"
		   "  2      usage error\n");
}

const char *cli_version(void)
{
	return CHILDFLOW_VERSION;
}

void cli_print_version(FILE *f)
{
	fprintf(f, "childflow %s\n", CHILDFLOW_VERSION);
}

/* Blank the bytes of @s in place (argv or environ memory, which /proc shows). */
static void blank(char *s)
{
	explicit_bzero(s, strlen(s));
}

/* The first line of @path (a file, or a pipe such as <(pass show x)) into @buf. */
static int read_password_file(const char *path, char *buf, char *err, size_t errlen)
{
	char tmp[4096];
	size_t got = 0, len;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY), e = 0;

	if (fd < 0)
		return fail(err, errlen, "cannot read `--proxy-password-file` %s: %s", path, strerror(errno));
	while (got < sizeof(tmp) - 1) {
		ssize_t n = read(fd, tmp + got, sizeof(tmp) - 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			e = errno;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(tmp, '\n', got))
			break;
	}
	close(fd);
	tmp[got] = '\0';
	len = strcspn(tmp, "\r\n");
	if (len < CLI_PASSWORD_MAX)
		memcpy(buf, tmp, len);
	explicit_bzero(tmp, sizeof(tmp));
	if (e)
		return fail(err, errlen, "cannot read `--proxy-password-file` %s: %s", path, strerror(e));
	if (len >= CLI_PASSWORD_MAX)
		return fail(err, errlen, "the password in `--proxy-password-file` %s is longer than %d bytes",
			    path, CLI_PASSWORD_MAX - 1);
	if (len == 0)
		return fail(err, errlen, "`--proxy-password-file` %s holds no password", path);
	return 0;
}

int cli_take_password(struct cli_options *opt, int argc, char **argv, char *buf, char *err, size_t errlen)
{
	char *env = getenv(CLI_PASSWORD_ENV);
	int r = 0;

	memset(buf, 0, CLI_PASSWORD_MAX);
	if (opt->proxy_password) {
		if (strlen(opt->proxy_password) >= CLI_PASSWORD_MAX)
			r = fail(err, errlen, "the proxy password is longer than %d bytes", CLI_PASSWORD_MAX - 1);
		else
			memcpy(buf, opt->proxy_password, strlen(opt->proxy_password) + 1);
		/* The value lives inside an argv word ("-P", "x" or "--proxy-password=x"): blank it. */
		for (int i = 1; i < argc; i++)
			if (argv[i] <= opt->proxy_password && opt->proxy_password < argv[i] + strlen(argv[i]) + 1)
				blank((char *)opt->proxy_password);
		opt->proxy_password = NULL;
	} else if (opt->proxy_user && opt->proxy_password_file) {
		r = read_password_file(opt->proxy_password_file, buf, err, errlen);
	} else if (opt->proxy_user && env) {
		if (strlen(env) >= CLI_PASSWORD_MAX || !*env)
			r = fail(err, errlen, "%s must hold 1 to %d bytes", CLI_PASSWORD_ENV, CLI_PASSWORD_MAX - 1);
		else
			memcpy(buf, env, strlen(env) + 1);
	}
	if (env) {
		blank(env);
		unsetenv(CLI_PASSWORD_ENV);
	}
	return r;
}
