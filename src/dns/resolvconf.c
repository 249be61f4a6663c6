/* SPDX-License-Identifier: MIT */
/*
 * dns/resolvconf — read the host's resolv.conf as glibc's res_init does; write the child's.
 * See resolvconf.h for what is kept and why.
 */
#include "dns/resolvconf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>

#define RES_TIMEOUT_DEFAULT 5     /* glibc RES_TIMEOUT */
#define RES_TIMEOUT_MAX 30        /* glibc RES_MAXRETRANS */
#define RES_ATTEMPTS_DEFAULT 2    /* glibc RES_DFLRETRY */
#define RES_ATTEMPTS_MAX 5        /* glibc RES_MAXRETRY */
#define RESOLV_FILE_MAX (256u << 10)
#define RESOLV_LINE_MAX 1024

/* @line (without its newline) starts with @kw followed by a blank; Return: what follows, or NULL. */
static const char *keyword(const char *line, size_t len, const char *kw)
{
	size_t n = strlen(kw);

	if (len <= n || memcmp(line, kw, n) != 0 || (line[n] != ' ' && line[n] != '\t'))
		return NULL;
	return line + n;
}

static bool parse_ns(const char *s, struct sockaddr_storage *out)
{
	char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	size_t n = strcspn(s, " \t");
	char *pct;

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(out, 0, sizeof(*out));
	struct sockaddr_in *a4 = (struct sockaddr_in *)out;
	if (inet_pton(AF_INET, buf, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(53);
		return true;
	}
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
	pct = strchr(buf, '%');
	if (pct)
		*pct++ = '\0';
	if (inet_pton(AF_INET6, buf, &a6->sin6_addr) != 1)
		return false;
	a6->sin6_family = AF_INET6;
	a6->sin6_port = htons(53);
	if (pct) {
		char *end;
		unsigned long idx = strtoul(pct, &end, 10);

		/* glibc: an interface name, or a number; an unknown one leaves the scope 0 */
		if (*pct && !*end)
			a6->sin6_scope_id = (uint32_t)idx;
		else
			a6->sin6_scope_id = if_nametoindex(pct);
	}
	return true;
}

/* "timeout:N" etc. in an options line: glibc's res_setoptions. */
static void parse_options(const char *s, struct resolv_conf *rc)
{
	while (*s) {
		s += strspn(s, " \t");
		size_t n = strcspn(s, " \t");

		if (n > 8 && !strncmp(s, "timeout:", 8)) {
			unsigned long v = strtoul(s + 8, NULL, 10);

			rc->timeout_s = v > RES_TIMEOUT_MAX ? RES_TIMEOUT_MAX : (unsigned int)v;
		} else if (n > 9 && !strncmp(s, "attempts:", 9)) {
			unsigned long v = strtoul(s + 9, NULL, 10);

			rc->attempts = v > RES_ATTEMPTS_MAX ? RES_ATTEMPTS_MAX : (unsigned int)v;
		} else if (n == 6 && !strncmp(s, "rotate", 6)) {
			rc->rotate = true;
		}
		s += n;
	}
}

/* Keep @line (@len bytes, no newline) for the child; Return: false when it does not fit. */
static bool keep_line(struct resolv_conf *rc, const char *line, size_t len)
{
	size_t used = strlen(rc->lines);

	if (used + len + 2 > sizeof(rc->lines))
		return false;
	memcpy(rc->lines + used, line, len);
	rc->lines[used + len] = '\n';
	rc->lines[used + len + 1] = '\0';
	return true;
}

/* Drop an earlier search/domain line: in glibc the last of them wins, so the child needs only it. */
static void drop_search_lines(struct resolv_conf *rc)
{
	char out[RESOLV_LINES_MAX];
	size_t o = 0;

	for (const char *p = rc->lines; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = (size_t)(nl - p) + 1;

		if (!keyword(p, len - 1, "search") && !keyword(p, len - 1, "domain")) {
			memcpy(out + o, p, len);
			o += len;
		}
		p += len;
	}
	out[o] = '\0';
	memcpy(rc->lines, out, o + 1);
}

static void parse_line(const char *line, size_t len, struct resolv_conf *rc)
{
	char buf[RESOLV_LINE_MAX];
	const char *arg;

	while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
		len--;
	if (len == 0 || len >= sizeof(buf) || line[0] == '#' || line[0] == ';')
		return;
	for (size_t i = 0; i < len; i++)
		if (!isprint((unsigned char)line[i]) && line[i] != '\t')
			return;
	memcpy(buf, line, len);
	buf[len] = '\0';

	if ((arg = keyword(buf, len, "nameserver"))) {
		arg += strspn(arg, " \t");
		if (rc->n_ns < RESOLV_MAX_NS && parse_ns(arg, &rc->ns[rc->n_ns]))
			rc->n_ns++;
	} else if (keyword(buf, len, "search") || keyword(buf, len, "domain")) {
		drop_search_lines(rc);
		keep_line(rc, buf, len);
	} else if ((arg = keyword(buf, len, "options"))) {
		parse_options(arg, rc);
		keep_line(rc, buf, len);
	}
}

void resolvconf_parse(const char *text, size_t len, struct resolv_conf *rc)
{
	size_t i = 0;

	memset(rc, 0, sizeof(*rc));
	rc->timeout_s = RES_TIMEOUT_DEFAULT;
	rc->attempts = RES_ATTEMPTS_DEFAULT;
	while (i < len) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (text + i)) : len - i;

		parse_line(text + i, n, rc);
		i += n + 1;
	}
	if (rc->timeout_s == 0)
		rc->timeout_s = 1;     /* glibc treats timeout:0 as "as short as possible" */
	if (rc->attempts == 0)
		rc->attempts = 1;
}

int resolvconf_load(const char *path, struct resolv_conf *rc)
{
	char *buf;
	size_t len = 0;
	ssize_t n;
	int fd, err = 0;

	resolvconf_parse("", 0, rc);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	buf = malloc(RESOLV_FILE_MAX);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (len < RESOLV_FILE_MAX && (n = read(fd, buf + len, RESOLV_FILE_MAX - len)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		len += (size_t)n;
	}
	close(fd);
	if (!err)
		resolvconf_parse(buf, len, rc);
	free(buf);
	return err;
}

int resolvconf_replace(int fd, const char *text, size_t len)
{
	ssize_t n = pwrite(fd, text, len, 0);

	if (n < 0)
		return -errno;
	if ((size_t)n != len)
		return -EIO;
	return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

int resolvconf_child_text(const struct resolv_conf *rc, const struct netplan *np, char *buf, size_t size)
{
	char a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN];
	int n;

	inet_ntop(AF_INET, &np->gw4, a4, sizeof(a4));
	inet_ntop(AF_INET6, &np->gw6, a6, sizeof(a6));
	n = snprintf(buf, size,
		     "# childflow: every DNS query of this tree is answered by childflow's forwarder\n"
		     "%snameserver %s\n%s%s%s",
		     rc->lines, a4, np->ipv6 ? "nameserver " : "", np->ipv6 ? a6 : "", np->ipv6 ? "\n" : "");
	if (n < 0 || (size_t)n >= size)
		return -ENOSPC;
	return n;
}
