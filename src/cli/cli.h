/* SPDX-License-Identifier: MIT */
/*
 * cli — command-line parsing and validation.
 *
 * Flags follow the reference tool (0.3.0 level; ../shared/reference/upstream-childflow-behaviour.md §1):
 * same names, same value syntax, same validation messages.  Parsing never touches the system except
 * for `--hosts-file` existence, which the reference checks up front.
 */
#ifndef CHILDFLOW_CLI_H
#define CHILDFLOW_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <netinet/in.h>

#define CLI_ERR_MAX 512
#define CLI_MAX_ALLOW_SOCKETS 16

enum capture_point {
	CAPTURE_CHILD = 0,
	CAPTURE_EGRESS,
	CAPTURE_WIRE_EGRESS,
	CAPTURE_BOTH,
};

enum proxy_scheme {
	PROXY_NONE = 0,
	PROXY_HTTP,
	PROXY_HTTPS,
	PROXY_SOCKS5,
};

struct proxy_spec {
	enum proxy_scheme scheme;
	char host[256];   /* without brackets for IPv6 literals */
	uint16_t port;
};

/* An IP address given with --dns. */
struct ip_addr {
	int family;       /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} u;
};

enum cli_action {
	CLI_RUN = 0,      /* run the command */
	CLI_HELP,         /* print help, exit 0 */
	CLI_VERSION,      /* print version, exit 0 */
	CLI_DOCTOR,       /* --doctor */
};

struct cli_options {
	enum cli_action action;

	const char *capture;            /* -c, --capture OUTPUT */
	enum capture_point capture_point; /* -C, --capture-point */
	bool capture_point_set;
	bool root;                      /* --root */
	bool doctor;                    /* --doctor */
	bool doctor_json;               /* --doctor-format json */
	bool backend_rootful;           /* hidden --network-backend rootful|rootless-internal */

	bool dns_set;                   /* -d, --dns */
	struct ip_addr dns;
	const char *hosts_file;         /* --hosts-file */

	bool proxy_set;                 /* -p, --proxy */
	struct proxy_spec proxy;
	const char *proxy_user;         /* -U */
	const char *proxy_password;     /* -P (points into argv until cli_take_password()) */
	const char *proxy_password_file; /* --proxy-password-file */
	bool proxy_insecure;            /* --proxy-insecure */

	const char *iface;              /* -i, --iface */

	bool isolate;                   /* --isolate */
	const char *allow_sockets[CLI_MAX_ALLOW_SOCKETS]; /* --allow-socket PATH (repeatable), absolute */
	int n_allow_sockets;

	char **argv;                    /* command to run (points into the caller's argv), NULL-terminated */
	int argc;
};

/*
 * cli_parse() - parse and validate argv.
 * Returns 0 on success.  On a usage error returns -1 and writes one line (no trailing newline) into
 * @err, e.g. "invalid value 'ftp://x' for '--proxy <PROXY>': unsupported proxy scheme `ftp`; expected
 * `http`, `https`, or `socks5`".  The caller prints "childflow: error: <err>" and exits 2.
 */
int cli_parse(int argc, char **argv, struct cli_options *opt, char *err, size_t errlen);

#define CLI_PASSWORD_ENV "CHILDFLOW_PROXY_PASSWORD"
#define CLI_PASSWORD_MAX 256      /* bytes, with the NUL */

/*
 * cli_take_password() - move the proxy password out of sight, into @buf (CLI_PASSWORD_MAX bytes):
 * from -P (then blanked in @argv, so /proc/PID/cmdline no longer shows it), else the first line of
 * --proxy-password-file, else $CHILDFLOW_PROXY_PASSWORD (then removed from the environment and
 * blanked, so the command does not inherit it).  Call it right after cli_parse(), before forking.
 * Without --proxy-user nothing is taken (*buf is ""), but -P and the variable are blanked anyway.
 * Return: 0, or -1 with one line in @err (which never contains the password).
 */
int cli_take_password(struct cli_options *opt, int argc, char **argv, char *buf, char *err, size_t errlen);

/* Helpers exposed for unit tests and for later modules. */
int cli_parse_proxy(const char *s, struct proxy_spec *out, char *err, size_t errlen);
int cli_parse_ip(const char *s, struct ip_addr *out);
const char *cli_capture_point_name(enum capture_point cp);

void cli_print_help(FILE *f);
void cli_print_version(FILE *f);
/* The version string ("0.1.0"). */
const char *cli_version(void);

#endif
