// SPDX-License-Identifier: MIT
/*
 * Unit tests for src/cli: flag syntax, value parsing (proxy URI, --dns), validation messages and their
 * order, command splitting, help and version.  Every error is checked against its exact text.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/cli.h"

/* Run cli_parse() on "childflow" followed by @words (NULL-terminated, like main()'s argv). */
static int parse_words(struct cli_options *opt, char *err, const char *const *words)
{
	int argc = 0;

	while (words[argc])
		argc++;
	return cli_parse(argc, (char **)words, opt, err, CLI_ERR_MAX);
}

#define CREDS_IN_URI "proxy URI must not contain credentials; use `--proxy-user` and " \
	"`--proxy-password-file` (or `--proxy-password`)"

#define ARGV(...) ((const char *const[]){ "childflow", __VA_ARGS__, NULL })

/*
 * Parse and require success; on failure show the error text and the caller's line.  A macro around a
 * function (not a do/while block) so that the ARGV() compound literal lives as long as the calling test
 * function: opt->argv points into it.
 */
static void expect_ok_at(struct cli_options *opt, const char *const *words, const char *file, int line)
{
	char err[CLI_ERR_MAX];

	if (parse_words(opt, err, words) != 0) {
		print_error("unexpected error: %s\n", err);
		_fail(file, line);
	}
}

#define EXPECT_OK(opt, ...) expect_ok_at((opt), ARGV(__VA_ARGS__), __FILE__, __LINE__)

/* Parse and require exactly the error @msg. */
#define EXPECT_ERR(msg, ...)                                                         \
	do {                                                                         \
		struct cli_options opt_;                                             \
		char err_[CLI_ERR_MAX];                                              \
		assert_int_equal(parse_words(&opt_, err_, ARGV(__VA_ARGS__)), -1);   \
		assert_string_equal(err_, (msg));                                    \
	} while (0)

static void expect_proxy_ok(const char *uri, enum proxy_scheme scheme, const char *host, uint16_t port)
{
	struct proxy_spec p;
	char err[CLI_ERR_MAX] = "";

	if (cli_parse_proxy(uri, &p, err, sizeof(err)) != 0)
		fail_msg("'%s' rejected: %s", uri, err);
	assert_int_equal(p.scheme, scheme);
	assert_string_equal(p.host, host);
	assert_int_equal(p.port, port);
}

static void expect_proxy_err(const char *uri, const char *msg)
{
	struct proxy_spec p;
	char err[CLI_ERR_MAX] = "";

	if (cli_parse_proxy(uri, &p, err, sizeof(err)) != -1)
		fail_msg("'%s' accepted", uri);
	assert_string_equal(err, msg);
}

/* ---- proxy URI ---------------------------------------------------------------------------------- */

static void test_proxy_valid(void **state)
{
	expect_proxy_ok("http://127.0.0.1:8080", PROXY_HTTP, "127.0.0.1", 8080);
	expect_proxy_ok("https://proxy.example.com:443", PROXY_HTTPS, "proxy.example.com", 443);
	expect_proxy_ok("socks5://host.docker.internal:10080", PROXY_SOCKS5, "host.docker.internal", 10080);
	expect_proxy_ok("http://[::1]:8080", PROXY_HTTP, "::1", 8080);
	expect_proxy_ok("socks5://[2001:db8::1]:1080", PROXY_SOCKS5, "2001:db8::1", 1080);
	expect_proxy_ok("http://h:0", PROXY_HTTP, "h", 0);
	expect_proxy_ok("http://h:65535", PROXY_HTTP, "h", 65535);
	expect_proxy_ok("http://h:0080", PROXY_HTTP, "h", 80);
	/* Unlike the reference (which takes "user@h" for a host name), credentials in the URI are refused
	 * with a message that says where they go. */
	expect_proxy_err("http://user@h:1", CREDS_IN_URI);
}

static void test_proxy_rule1_no_scheme_separator(void **state)
{
	const char *msg = "proxy must be a URI like http://host:port or socks5://host:port";

	expect_proxy_err("127.0.0.1:8080", msg);
	expect_proxy_err("http:/h:1", msg);
	expect_proxy_err("", msg);
}

static void test_proxy_rule2_missing_host_port(void **state)
{
	expect_proxy_err("http://", "proxy URI is missing host:port");
	/* Rule 2 comes before the scheme check. */
	expect_proxy_err("ftp://", "proxy URI is missing host:port");
}

static void test_proxy_rule3_path_query_fragment(void **state)
{
	const char *msg = "proxy URI must not contain a path, query, or fragment";

	expect_proxy_err("http://h:1/", msg);
	expect_proxy_err("http://h:1/path", msg);
	expect_proxy_err("http://h:1?q=1", msg);
	expect_proxy_err("http://h:1#frag", msg);
	/* Rule 3 comes before the scheme check. */
	expect_proxy_err("ftp://h:1/", msg);
}

static void test_proxy_rule4_scheme(void **state)
{
	expect_proxy_err("ftp://h:1", "unsupported proxy scheme `ftp`; expected `http`, `https`, or `socks5`");
	expect_proxy_err("socks5h://h:1",
			 "unsupported proxy scheme `socks5h`; expected `http`, `https`, or `socks5`");
	expect_proxy_err("socks4://h:1",
			 "unsupported proxy scheme `socks4`; expected `http`, `https`, or `socks5`");
	expect_proxy_err("HTTP://h:1", "unsupported proxy scheme `HTTP`; expected `http`, `https`, or `socks5`");
	expect_proxy_err("://h:1", "unsupported proxy scheme ``; expected `http`, `https`, or `socks5`");
	/* Scheme before host:port checks: a bad scheme wins over a bad port. */
	expect_proxy_err("gopher://h:x",
			 "unsupported proxy scheme `gopher`; expected `http`, `https`, or `socks5`");
}

static void test_proxy_rule5_brackets(void **state)
{
	expect_proxy_err("http://[::1", "invalid proxy URI host");
	expect_proxy_err("http://[::1]", "proxy URI must include a port");
	expect_proxy_err("http://[::1]8080", "proxy URI must include a port");
	expect_proxy_err("http://[::1]:x", "proxy URI has an invalid port");
	expect_proxy_err("http://[::1]:", "proxy URI has an invalid port");
	expect_proxy_err("http://[::1]:65536", "proxy URI has an invalid port");
	/* Stricter than the reference: brackets must hold a real IPv6 literal. */
	expect_proxy_err("http://[]:80", "proxy URI is missing a host");
	expect_proxy_err("http://[example.com]:80", "invalid proxy URI host");
	expect_proxy_err("http://[1.2.3.4]:80", "invalid proxy URI host");
}

static void test_proxy_rule6_plain_host(void **state)
{
	const char *v6 = "IPv6 proxy hosts must be enclosed in `[` and `]`";

	expect_proxy_err("http://user:pass@h:1", CREDS_IN_URI);   /* the reference: the v6 message */
	expect_proxy_err("http://2001:db8::1:8080", v6);
	expect_proxy_err("http://::1", v6);
	expect_proxy_err("http://h", "proxy URI must include a port");
	expect_proxy_err("http://:80", "proxy URI is missing a host");
	expect_proxy_err("http://h:", "proxy URI has an invalid port");
	expect_proxy_err("http://h:65536", "proxy URI has an invalid port");
	expect_proxy_err("http://h:-1", "proxy URI has an invalid port");
	expect_proxy_err("http://h:+80", "proxy URI has an invalid port");
	expect_proxy_err("http://h:8o", "proxy URI has an invalid port");
	expect_proxy_err("http://h: 80", "proxy URI has an invalid port");
	expect_proxy_err("http://h:99999999999999999999999", "proxy URI has an invalid port");
}

static void test_proxy_host_length(void **state)
{
	char uri[400];
	char host[300];

	/* 255 bytes fit in proxy_spec.host[256]; 256 do not. */
	memset(host, 'a', 255);
	host[255] = '\0';
	snprintf(uri, sizeof(uri), "http://%s:1", host);
	expect_proxy_ok(uri, PROXY_HTTP, host, 1);

	memset(host, 'a', 256);
	host[256] = '\0';
	snprintf(uri, sizeof(uri), "http://%s:1", host);
	expect_proxy_err(uri, "invalid proxy URI host");
}

static void test_proxy_via_cli_parse(void **state)
{
	struct cli_options opt;

	EXPECT_ERR("invalid value 'ftp://x' for '--proxy <PROXY>': unsupported proxy scheme `ftp`; expected "
		   "`http`, `https`, or `socks5`",
		   "--proxy", "ftp://x", "cmd");
	EXPECT_ERR("invalid value 'http://h:1/' for '--proxy <PROXY>': proxy URI must not contain a path, "
		   "query, or fragment",
		   "-p", "http://h:1/", "cmd");

	EXPECT_OK(&opt, "-p", "socks5://[2001:db8::1]:1080", "cmd");
	assert_true(opt.proxy_set);
	assert_int_equal(opt.proxy.scheme, PROXY_SOCKS5);
	assert_string_equal(opt.proxy.host, "2001:db8::1");
	assert_int_equal(opt.proxy.port, 1080);

	EXPECT_OK(&opt, "--proxy=https://p.example:443", "cmd");
	assert_int_equal(opt.proxy.scheme, PROXY_HTTPS);
	assert_string_equal(opt.proxy.host, "p.example");
	assert_int_equal(opt.proxy.port, 443);

	EXPECT_OK(&opt, "-phttp://h:3128", "cmd");
	assert_int_equal(opt.proxy.scheme, PROXY_HTTP);
	assert_int_equal(opt.proxy.port, 3128);
}

/* ---- --dns ------------------------------------------------------------------------------------- */

static void test_dns_ipv4(void **state)
{
	struct cli_options opt;
	struct in_addr want;

	EXPECT_OK(&opt, "--dns", "203.0.113.53", "cmd");
	assert_true(opt.dns_set);
	assert_int_equal(opt.dns.family, AF_INET);
	assert_int_equal(inet_pton(AF_INET, "203.0.113.53", &want), 1);
	assert_memory_equal(&opt.dns.u.v4, &want, sizeof(want));

	EXPECT_OK(&opt, "-d1.1.1.1", "cmd");
	assert_int_equal(opt.dns.family, AF_INET);
	assert_int_equal(opt.dns.u.v4.s_addr, htonl(0x01010101));
}

static void test_dns_ipv6(void **state)
{
	struct cli_options opt;
	struct in6_addr want;

	EXPECT_OK(&opt, "-d", "2001:db8::53", "cmd");
	assert_true(opt.dns_set);
	assert_int_equal(opt.dns.family, AF_INET6);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::53", &want), 1);
	assert_memory_equal(&opt.dns.u.v6, &want, sizeof(want));

	EXPECT_OK(&opt, "--dns=::1", "cmd");
	assert_int_equal(opt.dns.family, AF_INET6);
	assert_memory_equal(&opt.dns.u.v6, &in6addr_loopback, sizeof(in6addr_loopback));
}

static void test_dns_invalid(void **state)
{
	EXPECT_ERR("invalid value 'example.com' for '--dns <DNS>': invalid IP address syntax",
		   "--dns", "example.com", "cmd");
	EXPECT_ERR("invalid value '[::1]' for '--dns <DNS>': invalid IP address syntax", "--dns", "[::1]", "cmd");
	EXPECT_ERR("invalid value '1.2.3.4:53' for '--dns <DNS>': invalid IP address syntax",
		   "-d", "1.2.3.4:53", "cmd");
	EXPECT_ERR("invalid value '[::1]:53' for '--dns <DNS>': invalid IP address syntax",
		   "--dns=[::1]:53", "cmd");
	EXPECT_ERR("invalid value '1.2.3' for '--dns <DNS>': invalid IP address syntax", "-d", "1.2.3", "cmd");
	EXPECT_ERR("invalid value '01.2.3.4' for '--dns <DNS>': invalid IP address syntax",
		   "-d", "01.2.3.4", "cmd");
	EXPECT_ERR("invalid value 'fe80::1%eth0' for '--dns <DNS>': invalid IP address syntax",
		   "-d", "fe80::1%eth0", "cmd");
	EXPECT_ERR("invalid value '' for '--dns <DNS>': invalid IP address syntax", "--dns=", "cmd");
}

static void test_parse_ip_helper(void **state)
{
	struct ip_addr a;

	assert_int_equal(cli_parse_ip("10.0.0.1", &a), 0);
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(a.u.v4.s_addr, htonl(0x0a000001));
	assert_int_equal(cli_parse_ip("::ffff:10.0.0.1", &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(cli_parse_ip("256.0.0.1", &a), -1);
	assert_int_equal(cli_parse_ip(" 10.0.0.1", &a), -1);
}

/* ---- validation messages and their order --------------------------------------------------------- */

static void test_missing_command(void **state)
{
	struct cli_options opt;
	char err[CLI_ERR_MAX];
	const char *const only_name[] = { "childflow", NULL };

	assert_int_equal(parse_words(&opt, err, only_name), -1);
	assert_string_equal(err, "missing command to execute");
	EXPECT_ERR("missing command to execute", "--root");
	EXPECT_ERR("missing command to execute", "--");
	EXPECT_ERR("missing command to execute", "--root", "--");
	/* argc == 0 (execve with an empty argv) must not crash. */
	assert_int_equal(cli_parse(0, (char **)only_name + 1, &opt, err, sizeof(err)), -1);
	assert_string_equal(err, "missing command to execute");
}

static void test_iface_rootless(void **state)
{
	struct cli_options opt;

	/* Unlike the reference, rootless takes --iface too (its upstream sockets are bound to it). */
	EXPECT_OK(&opt, "-i", "eth0", "cmd");
	assert_false(opt.backend_rootful);
	assert_string_equal(opt.iface, "eth0");
	EXPECT_OK(&opt, "--network-backend", "rootless-internal", "--iface=eth1", "cmd");
	assert_false(opt.backend_rootful);
	assert_string_equal(opt.iface, "eth1");
	EXPECT_ERR("invalid value 'a/b' for '--iface <IFACE>': not a valid network interface name",
		   "-i", "a/b", "cmd");

	EXPECT_OK(&opt, "--root", "-i", "eth0", "cmd");
	assert_true(opt.root);
	assert_true(opt.backend_rootful);
	assert_string_equal(opt.iface, "eth0");

	EXPECT_OK(&opt, "--network-backend", "rootful", "--iface", "eth0", "cmd");
	assert_false(opt.root);
	assert_true(opt.backend_rootful);

	/* --root wins over the hidden backend flag whatever the order. */
	EXPECT_OK(&opt, "--root", "--network-backend=rootless-internal", "-ieth0", "cmd");
	assert_true(opt.backend_rootful);
	EXPECT_OK(&opt, "--network-backend=rootless-internal", "--root", "cmd");
	assert_true(opt.backend_rootful);

	EXPECT_OK(&opt, "--network-backend", "rootless-internal", "cmd");
	assert_false(opt.backend_rootful);
}

static void test_isolate_and_allow_socket(void **state)
{
	struct cli_options opt;

	EXPECT_OK(&opt, "cmd");
	assert_false(opt.isolate);
	assert_int_equal(opt.n_allow_sockets, 0);
	EXPECT_OK(&opt, "--isolate", "--allow-socket", "/run/a.sock", "--allow-socket=/tmp/b", "cmd", "--isolate");
	assert_true(opt.isolate);
	assert_int_equal(opt.n_allow_sockets, 2);
	assert_string_equal(opt.allow_sockets[0], "/run/a.sock");
	assert_string_equal(opt.allow_sockets[1], "/tmp/b");
	assert_int_equal(opt.argc, 2);
	EXPECT_ERR("the argument '--isolate' cannot be used multiple times", "--isolate", "--isolate", "cmd");
	EXPECT_ERR("invalid value 'a.sock' for '--allow-socket <PATH>': not an absolute path",
		   "--allow-socket", "a.sock", "cmd");
	EXPECT_ERR("a value is required for '--allow-socket <PATH>' but none was supplied",
		   "--allow-socket=", "cmd");
	EXPECT_ERR("unexpected value 'yes' for '--isolate' found; no more were expected", "--isolate=yes", "cmd");
	EXPECT_OK(&opt, "--allow-socket", "/1", "--allow-socket", "/2", "--allow-socket", "/3", "--allow-socket", "/4",
		  "--allow-socket", "/5", "--allow-socket", "/6", "--allow-socket", "/7", "--allow-socket", "/8",
		  "--allow-socket", "/9", "--allow-socket", "/10", "--allow-socket", "/11", "--allow-socket", "/12",
		  "--allow-socket", "/13", "--allow-socket", "/14", "--allow-socket", "/15", "--allow-socket", "/16",
		  "cmd");
	assert_int_equal(opt.n_allow_sockets, 16);
	EXPECT_ERR("invalid value '/17' for '--allow-socket <PATH>': too many sockets (at most 16)",
		   "--allow-socket", "/1", "--allow-socket", "/2", "--allow-socket", "/3", "--allow-socket", "/4",
		   "--allow-socket", "/5", "--allow-socket", "/6", "--allow-socket", "/7", "--allow-socket", "/8",
		   "--allow-socket", "/9", "--allow-socket", "/10", "--allow-socket", "/11", "--allow-socket", "/12",
		   "--allow-socket", "/13", "--allow-socket", "/14", "--allow-socket", "/15", "--allow-socket", "/16",
		   "--allow-socket", "/17", "cmd");
}

static void test_iface_name_syntax(void **state)
{
	struct cli_options opt;

	EXPECT_OK(&opt, "--root", "-i", "abcdefghijklmno", "cmd");
	assert_string_equal(opt.iface, "abcdefghijklmno");
	EXPECT_ERR("invalid value 'abcdefghijklmnop' for '--iface <IFACE>': not a valid network interface name",
		   "--root", "-i", "abcdefghijklmnop", "cmd");
	EXPECT_ERR("invalid value '' for '--iface <IFACE>': not a valid network interface name",
		   "--root", "--iface=", "cmd");
	EXPECT_ERR("invalid value 'a/b' for '--iface <IFACE>': not a valid network interface name",
		   "--root", "-i", "a/b", "cmd");
	EXPECT_ERR("invalid value 'a b' for '--iface <IFACE>': not a valid network interface name",
		   "--root", "-i", "a b", "cmd");
	EXPECT_ERR("invalid value '..' for '--iface <IFACE>': not a valid network interface name",
		   "--root", "-i", "..", "cmd");
}

static void test_hosts_file(void **state)
{
	struct cli_options opt;
	char dir[] = "/tmp/test_cli.XXXXXX";
	char file[128];
	char missing[256];
	char msg[CLI_ERR_MAX];
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/hosts", dir);
	snprintf(missing, sizeof(missing), "%s/absent", dir);
	fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);

	EXPECT_OK(&opt, "--hosts-file", file, "cmd");
	assert_string_equal(opt.hosts_file, file);

	snprintf(msg, sizeof(msg), "`--hosts-file` path does not exist: %s", missing);
	EXPECT_ERR(msg, "--hosts-file", missing, "cmd");
	snprintf(msg, sizeof(msg), "`--hosts-file` path does not exist: %s/x", file);
	snprintf(missing, sizeof(missing), "%s/x", file);
	EXPECT_ERR(msg, "--hosts-file", missing, "cmd");

	snprintf(msg, sizeof(msg), "`--hosts-file` path is a directory: %s", dir);
	EXPECT_ERR(msg, "--hosts-file", dir, "cmd");

	EXPECT_ERR("a value is required for '--hosts-file <HOSTS_FILE>' but none was supplied",
		   "--hosts-file=", "cmd");

	assert_int_equal(unlink(file), 0);
	assert_int_equal(rmdir(dir), 0);
}

static void test_capture_point_requires_capture(void **state)
{
	struct cli_options opt;

	EXPECT_ERR("`--capture-point` requires `--capture`", "-C", "egress", "cmd");
	EXPECT_ERR("`--capture-point` requires `--capture`", "--capture-point=both", "cmd");

	/* "child" is the default, so it needs no --capture. */
	EXPECT_OK(&opt, "-C", "child", "cmd");
	assert_true(opt.capture_point_set);
	assert_int_equal(opt.capture_point, CAPTURE_CHILD);
	assert_null(opt.capture);

	EXPECT_OK(&opt, "-c", "out.pcapng", "-Cwire-egress", "cmd");
	assert_int_equal(opt.capture_point, CAPTURE_WIRE_EGRESS);
	EXPECT_OK(&opt, "-c", "out.pcapng", "--capture-point", "egress", "cmd");
	assert_int_equal(opt.capture_point, CAPTURE_EGRESS);
	EXPECT_OK(&opt, "-c", "out.pcapng", "-C=both", "cmd");
	assert_int_equal(opt.capture_point, CAPTURE_BOTH);
}

static void test_proxy_credentials_pairing(void **state)
{
	struct cli_options opt;

	EXPECT_ERR("`--proxy-user` and `--proxy-password` must be provided together",
		   "-p", "http://h:1", "-U", "alice", "cmd");
	EXPECT_ERR("`--proxy-user` and `--proxy-password` must be provided together",
		   "-p", "http://h:1", "--proxy-password", "s3cret", "cmd");

	EXPECT_OK(&opt, "-p", "socks5://h:1080", "-U", "alice", "-P", "s3cret", "cmd");
	assert_string_equal(opt.proxy_user, "alice");
	assert_string_equal(opt.proxy_password, "s3cret");
}

static void test_proxy_options_require_proxy(void **state)
{
	EXPECT_ERR("proxy authentication and TLS options require `--proxy`", "-U", "alice", "-P", "pw", "cmd");
	EXPECT_ERR("proxy authentication and TLS options require `--proxy`", "--proxy-insecure", "cmd");
}

static void test_proxy_insecure_needs_https(void **state)
{
	struct cli_options opt;

	EXPECT_ERR("`--proxy-insecure` is only valid with an `https://` upstream proxy",
		   "--proxy-insecure", "-p", "http://h:1", "cmd");
	EXPECT_ERR("`--proxy-insecure` is only valid with an `https://` upstream proxy",
		   "--proxy-insecure", "-p", "socks5://h:1", "cmd");

	EXPECT_OK(&opt, "-p", "https://h:443", "--proxy-insecure", "cmd");
	assert_true(opt.proxy_insecure);
	assert_int_equal(opt.proxy.scheme, PROXY_HTTPS);
}

/* When several checks fail, the earlier one in the reference's order is reported. */
static void test_validation_order(void **state)
{
	/* Everything wrong at once: the missing command comes first. */
	EXPECT_ERR("missing command to execute", "-i", "eth0", "--hosts-file", "/nonexistent/childflow/hosts",
		   "-C", "egress", "-U", "u", "--proxy-insecure");
	EXPECT_ERR("`--hosts-file` path does not exist: /nonexistent/childflow/hosts",
		   "-i", "eth0", "--hosts-file", "/nonexistent/childflow/hosts", "cmd");
	EXPECT_ERR("`--hosts-file` path does not exist: /nonexistent/childflow/hosts",
		   "--hosts-file", "/nonexistent/childflow/hosts", "-C", "egress", "cmd");
	EXPECT_ERR("`--capture-point` requires `--capture`", "-C", "egress", "-U", "u", "cmd");
	EXPECT_ERR("`--proxy-user` and `--proxy-password` must be provided together",
		   "-U", "u", "--proxy-insecure", "cmd");
	EXPECT_ERR("proxy authentication and TLS options require `--proxy`",
		   "-U", "u", "-P", "p", "--proxy-insecure", "cmd");
}

/* ---- actions ------------------------------------------------------------------------------------- */

static void test_doctor_skips_validation(void **state)
{
	struct cli_options opt;

	EXPECT_OK(&opt, "--doctor");
	assert_int_equal(opt.action, CLI_DOCTOR);
	assert_true(opt.doctor);
	assert_int_equal(opt.argc, 0);
	assert_null(opt.argv);

	/* Would fail validation three ways; --doctor does not validate. */
	EXPECT_OK(&opt, "--doctor", "-i", "eth0", "-C", "egress", "--proxy-insecure");
	assert_int_equal(opt.action, CLI_DOCTOR);

	EXPECT_OK(&opt, "--root", "--doctor");
	assert_int_equal(opt.action, CLI_DOCTOR);
	assert_true(opt.backend_rootful);

	/* Syntax errors still count. */
	EXPECT_ERR("invalid value 'x' for '--dns <DNS>': invalid IP address syntax", "--doctor", "--dns", "x");
}

static void test_help_and_version(void **state)
{
	struct cli_options opt;

	EXPECT_OK(&opt, "-h");
	assert_int_equal(opt.action, CLI_HELP);
	EXPECT_OK(&opt, "--help");
	assert_int_equal(opt.action, CLI_HELP);
	EXPECT_OK(&opt, "-V");
	assert_int_equal(opt.action, CLI_VERSION);
	EXPECT_OK(&opt, "--version");
	assert_int_equal(opt.action, CLI_VERSION);

	/* No validation: these would fail it. */
	EXPECT_OK(&opt, "-i", "eth0", "-C", "egress", "--help");
	assert_int_equal(opt.action, CLI_HELP);
	EXPECT_OK(&opt, "--proxy-insecure", "-V");
	assert_int_equal(opt.action, CLI_VERSION);

	/* Like clap: acts when seen, so later junk is ignored but earlier errors stand. */
	EXPECT_OK(&opt, "--help", "--bogus");
	assert_int_equal(opt.action, CLI_HELP);
	EXPECT_OK(&opt, "-V", "--help");
	assert_int_equal(opt.action, CLI_VERSION);
	EXPECT_OK(&opt, "-hV");
	assert_int_equal(opt.action, CLI_HELP);
	EXPECT_ERR("unexpected argument '--bogus' found", "--bogus", "--help");
	EXPECT_ERR("unexpected value 'yes' for '--help' found; no more were expected", "--help=yes");

	/* After the command starts, --help belongs to the command. */
	EXPECT_OK(&opt, "cmd", "--help");
	assert_int_equal(opt.action, CLI_RUN);
	assert_int_equal(opt.argc, 2);
	assert_string_equal(opt.argv[1], "--help");
}

/* ---- command splitting --------------------------------------------------------------------------- */

static void test_command_words(void **state)
{
	struct cli_options opt;
	const char *const words[] = { "childflow", "--root", "curl", "-v", "--dns", "x", "--", NULL };
	char err[CLI_ERR_MAX];

	assert_int_equal(parse_words(&opt, err, words), 0);
	assert_int_equal(opt.action, CLI_RUN);
	assert_true(opt.root);
	assert_false(opt.dns_set);
	/* argv points into the caller's array and keeps its NULL terminator. */
	assert_ptr_equal(opt.argv, (char **)&words[2]);
	assert_int_equal(opt.argc, 5);
	assert_string_equal(opt.argv[0], "curl");
	assert_string_equal(opt.argv[1], "-v");
	assert_string_equal(opt.argv[4], "--");
	assert_null(opt.argv[5]);
}

static void test_double_dash(void **state)
{
	struct cli_options opt;

	EXPECT_OK(&opt, "--", "-weird", "--root");
	assert_false(opt.root);
	assert_int_equal(opt.argc, 2);
	assert_string_equal(opt.argv[0], "-weird");
	assert_string_equal(opt.argv[1], "--root");

	/* Only the first "--" is ours. */
	EXPECT_OK(&opt, "--root", "--", "cmd", "--", "x");
	assert_true(opt.root);
	assert_int_equal(opt.argc, 3);
	assert_string_equal(opt.argv[0], "cmd");
	assert_string_equal(opt.argv[1], "--");
	assert_string_equal(opt.argv[2], "x");

	/* A lone "-" is a word, so it starts the command. */
	EXPECT_OK(&opt, "-", "--root");
	assert_false(opt.root);
	assert_int_equal(opt.argc, 2);
	assert_string_equal(opt.argv[0], "-");
}

/* ---- flag syntax ------------------------------------------------------------------------------- */

static void test_value_forms(void **state)
{
	struct cli_options opt;

	EXPECT_OK(&opt, "--capture", "out.pcapng", "cmd");
	assert_string_equal(opt.capture, "out.pcapng");
	EXPECT_OK(&opt, "--capture=out.pcapng", "cmd");
	assert_string_equal(opt.capture, "out.pcapng");
	EXPECT_OK(&opt, "-c", "out.pcapng", "cmd");
	assert_string_equal(opt.capture, "out.pcapng");
	EXPECT_OK(&opt, "-cout.pcapng", "cmd");
	assert_string_equal(opt.capture, "out.pcapng");
	EXPECT_OK(&opt, "-c=out.pcapng", "cmd");
	assert_string_equal(opt.capture, "out.pcapng");
	/* "=" inside a --flag=value value is kept. */
	EXPECT_OK(&opt, "--capture=a=b", "cmd");
	assert_string_equal(opt.capture, "a=b");
	/* A lone "-" is accepted as a value. */
	EXPECT_OK(&opt, "-c", "-", "cmd");
	assert_string_equal(opt.capture, "-");
	assert_string_equal(opt.argv[0], "cmd");

	/* Values that start with '-' need the attached form. */
	EXPECT_OK(&opt, "-p", "http://h:1", "-U", "u", "-P=-secret", "cmd");
	assert_string_equal(opt.proxy_password, "-secret");
	EXPECT_OK(&opt, "-p", "http://h:1", "-U-u", "--proxy-password=-x", "cmd");
	assert_string_equal(opt.proxy_user, "-u");
	assert_string_equal(opt.proxy_password, "-x");
}

static void test_defaults(void **state)
{
	struct cli_options opt;

	/* cli_parse must reset every field, whatever the struct held before. */
	memset(&opt, 0xa5, sizeof(opt));
	EXPECT_OK(&opt, "cmd");
	assert_int_equal(opt.action, CLI_RUN);
	assert_null(opt.capture);
	assert_int_equal(opt.capture_point, CAPTURE_CHILD);
	assert_false(opt.capture_point_set);
	assert_false(opt.root);
	assert_false(opt.doctor);
	assert_false(opt.backend_rootful);
	assert_false(opt.dns_set);
	assert_null(opt.hosts_file);
	assert_false(opt.proxy_set);
	assert_int_equal(opt.proxy.scheme, PROXY_NONE);
	assert_null(opt.proxy_user);
	assert_null(opt.proxy_password);
	assert_false(opt.proxy_insecure);
	assert_null(opt.iface);
	assert_int_equal(opt.argc, 1);
}

static void test_unknown_flags(void **state)
{
	EXPECT_ERR("unexpected argument '--bogus' found", "--bogus", "cmd");
	EXPECT_ERR("unexpected argument '--bogus' found", "--bogus=1", "cmd");
	EXPECT_ERR("unexpected argument '-x' found", "-x", "cmd");
	EXPECT_ERR("unexpected argument '-xyz' found", "-xyz", "cmd");
	/* No abbreviations of long names. */
	EXPECT_ERR("unexpected argument '--cap' found", "--cap", "out", "cmd");
	EXPECT_ERR("unexpected argument '---root' found", "---root", "cmd");
	EXPECT_ERR("unexpected argument '--' found", "--=x", "cmd");
}

static void test_missing_values(void **state)
{
	EXPECT_ERR("a value is required for '--proxy <PROXY>' but none was supplied", "--proxy");
	EXPECT_ERR("a value is required for '--proxy <PROXY>' but none was supplied", "-p");
	EXPECT_ERR("a value is required for '--dns <DNS>' but none was supplied", "--dns", "--root", "cmd");
	EXPECT_ERR("a value is required for '--capture <OUTPUT>' but none was supplied", "-c", "--", "cmd");
	EXPECT_ERR("a value is required for '--capture <OUTPUT>' but none was supplied", "--capture=", "cmd");
	EXPECT_ERR("a value is required for '--proxy-user <PROXY_USER>' but none was supplied", "-U", "-x");
	EXPECT_ERR("a value is required for '--capture-point <OUTPUT_VIEW>' but none was supplied", "-C");
	EXPECT_ERR("a value is required for '--iface <IFACE>' but none was supplied", "--root", "-i");
}

static void test_bad_enum_values(void **state)
{
	EXPECT_ERR("invalid value 'x' for '--capture-point <OUTPUT_VIEW>': possible values: child, egress, "
		   "wire-egress, both",
		   "-C", "x", "cmd");
	EXPECT_ERR("invalid value 'Child' for '--capture-point <OUTPUT_VIEW>': possible values: child, egress, "
		   "wire-egress, both",
		   "--capture-point=Child", "cmd");
	EXPECT_ERR("invalid value '' for '--capture-point <OUTPUT_VIEW>': possible values: child, egress, "
		   "wire-egress, both",
		   "--capture-point=", "cmd");
	EXPECT_ERR("invalid value 'rootless' for '--network-backend <NETWORK_BACKEND>': possible values: "
		   "rootful, rootless-internal",
		   "--network-backend", "rootless", "cmd");
}

static void test_flag_with_value_and_duplicates(void **state)
{
	EXPECT_ERR("unexpected value 'yes' for '--root' found; no more were expected", "--root=yes", "cmd");
	EXPECT_ERR("unexpected value '' for '--proxy-insecure' found; no more were expected",
		   "--proxy-insecure=", "cmd");
	EXPECT_ERR("the argument '--root' cannot be used multiple times", "--root", "--root", "cmd");
	EXPECT_ERR("the argument '--dns <DNS>' cannot be used multiple times",
		   "-d", "1.1.1.1", "--dns", "8.8.8.8", "cmd");
	EXPECT_ERR("the argument '--capture <OUTPUT>' cannot be used multiple times",
		   "-ca", "--capture=b", "cmd");
}

static void test_small_error_buffer(void **state)
{
	struct cli_options opt;
	char err[8];
	const char *const words[] = { "childflow", "--bogus-flag-with-a-long-name", NULL };

	memset(err, 'z', sizeof(err));
	assert_int_equal(cli_parse(2, (char **)words, &opt, err, sizeof(err)), -1);
	assert_string_equal(err, "unexpec");
	/* No buffer at all is allowed too. */
	assert_int_equal(cli_parse(2, (char **)words, &opt, NULL, 0), -1);
}

/* ---- help, version, names ------------------------------------------------------------------------ */

static char *capture_output(void (*print)(FILE *))
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	print(f);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("missing from help: \"%s\"", needle);
}

static void test_help_text(void **state)
{
	char *help = capture_output(cli_print_help);
	const char *line;

	assert_true(strncmp(help, "Run one command tree inside a controlled network sandbox\n\n", 58) == 0);
	assert_contains(help, "\nUsage: childflow [OPTIONS] [COMMAND]...\n");
	assert_contains(help, "\n  [COMMAND]...\n          Command to execute\n");
	assert_contains(help, "\n  -c, --capture <OUTPUT>\n"
			      "          Write only the target command tree's traffic as pcapng\n");
	assert_contains(help, "\n  -C, --capture-point <OUTPUT_VIEW>\n"
			      "          Select which capture point or view `--capture` should write: `child`\n"
			      "          (the tree's own link, its addresses), `egress` (what left the host for\n"
			      "          it, rebuilt from the relay's sockets; with --root the routed flows are\n"
			      "          the host's real frames after NAT, kind=captured), `wire-egress` (the\n"
			      "          real frames on the host's interfaces of the relay's sockets and, with\n"
			      "          --root, of the routed flows, picked by the host's conntrack; needs\n"
			      "          CAP_NET_RAW), `both` (child and egress, one file)\n"
			      "\n"
			      "          [default: child]\n"
			      "          [possible values: child, egress, wire-egress, both]\n");
	assert_contains(help, "\n      --root\n          Use the rootful backend. Without this flag, childflow "
			      "uses the default\n          rootless backend\n");
	assert_contains(help, "\n      --doctor\n          Diagnose whether the current host is ready for the "
			      "selected backend\n");
	assert_contains(help, "\n  -d, --dns <DNS>\n          Force DNS traffic for the child tree to this IPv4 "
			      "or IPv6 resolver\n");
	assert_contains(help, "\n      --hosts-file <HOSTS_FILE>\n"
			      "          Overlay an `/etc/hosts`-format file on the child's `/etc/hosts`: its\n"
			      "          entries come first and win, the host's entries for other names remain\n"
			      "          (a regular file of at most 4 MiB). Inside, the host's name-service\n"
			      "          endpoints (systemd-resolved's /run/systemd/resolve, nscd, avahi, the\n"
			      "          D-Bus system bus) are hidden and nsswitch.conf's hosts: line keeps\n"
			      "          only files, dns and the like\n");
	assert_contains(help, "\n  -p, --proxy <PROXY>\n          Configure an upstream proxy URI, for example "
			      "http://127.0.0.1:8080,\n          https://proxy.example.com:443, or "
			      "socks5://host.docker.internal:10080.\n");
	assert_contains(help, "\n  -U, --proxy-user <PROXY_USER>\n          Username for upstream proxy "
			      "authentication\n");
	assert_contains(help, "\n  -P, --proxy-password <PROXY_PASSWORD>\n          Password for upstream proxy "
			      "authentication.");
	assert_contains(help, "\n      --proxy-password-file <FILE>\n          Read the proxy password from");
	assert_contains(help, "DNS, UDP and ICMP still go\n          direct\n");
	assert_contains(help, "\n      --proxy-insecure\n"
			      "          Ignore certificate trust errors for https:// upstream proxies while\n"
			      "          still validating the hostname\n");
	assert_contains(help, "\n  -i, --iface <IFACE>\n          Force the host-side egress interface for the "
			      "child's direct traffic,\n          its DNS upstream queries and its proxy connection");
	assert_contains(help, "\n  -h, --help\n          Print help\n");
	assert_contains(help, "\n  -V, --version\n          Print version\n");
	assert_contains(help, "\nExit status:\n");
	assert_contains(help, "\n  128+N  COMMAND was killed by signal N\n");
	assert_contains(help, "\n  125    childflow itself failed (setup error, missing kernel feature)\n");
	assert_contains(help, "\n  126    COMMAND exists but cannot be executed\n");
	assert_contains(help, "\n  127    COMMAND was not found\n");
	assert_contains(help, "\n  2      usage error\n");
	/* The hidden flag stays hidden. */
	assert_null(strstr(help, "network-backend"));
	assert_null(strstr(help, "escape hatch"));
	/* Wrapped to 80 columns, no trailing blanks. */
	for (line = help; *line;) {
		size_t len = strcspn(line, "\n");

		if (len > 80)
			fail_msg("help line longer than 80 columns: %.*s", (int)len, line);
		if (len > 0 && line[len - 1] == ' ')
			fail_msg("trailing blank in help line: %.*s", (int)len, line);
		line += len;
		if (*line)
			line++;
	}
	free(help);
}

static void test_version_text(void **state)
{
	char *v = capture_output(cli_print_version);

	assert_string_equal(v, "childflow 0.1.0\n");
	free(v);
}

static void test_capture_point_names(void **state)
{
	assert_string_equal(cli_capture_point_name(CAPTURE_CHILD), "child");
	assert_string_equal(cli_capture_point_name(CAPTURE_EGRESS), "egress");
	assert_string_equal(cli_capture_point_name(CAPTURE_WIRE_EGRESS), "wire-egress");
	assert_string_equal(cli_capture_point_name(CAPTURE_BOTH), "both");
	assert_string_equal(cli_capture_point_name((enum capture_point)42), "unknown");
}

/* cli_take_password(): -P is copied and blanked in argv; the file and the variable are read. */
static void test_take_password(void **state)
{
	char w0[] = "childflow", w1[] = "-p", w2[] = "http://h:1", w3[] = "-U", w4[] = "u",
	     w5[] = "--proxy-password=s3cret", w6[] = "true";
	char *argv[] = { w0, w1, w2, w3, w4, w5, w6, NULL };
	char *argv2[] = { w0, w1, w2, w3, w4, w6, NULL };
	char pw[CLI_PASSWORD_MAX], err[CLI_ERR_MAX], path[] = "/tmp/cfpwXXXXXX";
	struct cli_options opt;
	int fd;

	(void)state;
	assert_int_equal(cli_parse(7, argv, &opt, err, sizeof(err)), 0);
	assert_int_equal(cli_take_password(&opt, 7, argv, pw, err, sizeof(err)), 0);
	assert_string_equal(pw, "s3cret");
	assert_memory_equal(w5, "--proxy-password=\0\0\0\0\0\0", sizeof(w5));
	assert_null(opt.proxy_password);

	setenv(CLI_PASSWORD_ENV, "fromenv", 1);
	assert_int_equal(cli_parse(6, argv2, &opt, err, sizeof(err)), 0);
	assert_int_equal(cli_take_password(&opt, 6, argv2, pw, err, sizeof(err)), 0);
	assert_string_equal(pw, "fromenv");
	assert_null(getenv(CLI_PASSWORD_ENV));
	/* Without it, -U alone is the reference's pairing error. */
	assert_int_equal(cli_parse(6, argv2, &opt, err, sizeof(err)), -1);

	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "filepw\nsecond line\n", 19), 19);
	close(fd);
	opt.proxy_password_file = path;
	assert_int_equal(cli_take_password(&opt, 6, argv2, pw, err, sizeof(err)), 0);
	assert_string_equal(pw, "filepw");
	unlink(path);
	assert_int_equal(cli_take_password(&opt, 6, argv2, pw, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot read `--proxy-password-file`"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_proxy_valid),
		cmocka_unit_test(test_proxy_rule1_no_scheme_separator),
		cmocka_unit_test(test_proxy_rule2_missing_host_port),
		cmocka_unit_test(test_proxy_rule3_path_query_fragment),
		cmocka_unit_test(test_proxy_rule4_scheme),
		cmocka_unit_test(test_proxy_rule5_brackets),
		cmocka_unit_test(test_proxy_rule6_plain_host),
		cmocka_unit_test(test_proxy_host_length),
		cmocka_unit_test(test_proxy_via_cli_parse),
		cmocka_unit_test(test_dns_ipv4),
		cmocka_unit_test(test_dns_ipv6),
		cmocka_unit_test(test_dns_invalid),
		cmocka_unit_test(test_parse_ip_helper),
		cmocka_unit_test(test_missing_command),
		cmocka_unit_test(test_iface_rootless),
		cmocka_unit_test(test_iface_name_syntax),
		cmocka_unit_test(test_isolate_and_allow_socket),
		cmocka_unit_test(test_hosts_file),
		cmocka_unit_test(test_capture_point_requires_capture),
		cmocka_unit_test(test_proxy_credentials_pairing),
		cmocka_unit_test(test_take_password),
		cmocka_unit_test(test_proxy_options_require_proxy),
		cmocka_unit_test(test_proxy_insecure_needs_https),
		cmocka_unit_test(test_validation_order),
		cmocka_unit_test(test_doctor_skips_validation),
		cmocka_unit_test(test_help_and_version),
		cmocka_unit_test(test_command_words),
		cmocka_unit_test(test_double_dash),
		cmocka_unit_test(test_value_forms),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_unknown_flags),
		cmocka_unit_test(test_missing_values),
		cmocka_unit_test(test_bad_enum_values),
		cmocka_unit_test(test_flag_with_value_and_duplicates),
		cmocka_unit_test(test_small_error_buffer),
		cmocka_unit_test(test_help_text),
		cmocka_unit_test(test_version_text),
		cmocka_unit_test(test_capture_point_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
