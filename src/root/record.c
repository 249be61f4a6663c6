/* SPDX-License-Identifier: MIT */
/* record — a --root state record's text, parsed without trusting it (see record.h). */
#include "root/record.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "backend/netplan.h"
#include "root/internal.h"

char *root_rec_next(char **cursor)
{
	char *l = *cursor, *eol;

	if (!l || !*l)
		return NULL;
	eol = strchr(l, '\n');
	if (eol) {
		*eol = '\0';
		*cursor = eol + 1;
	} else {
		*cursor = l + strlen(l);
	}
	return l;
}

/* A decimal number of at most 10 digits, ending at a space or the end; *@p moves past it. */
static bool number(const char **p, unsigned int *v)
{
	unsigned long long n = 0;
	const char *s = *p;
	int digits = 0;

	while (*s >= '0' && *s <= '9' && digits < 11) {
		n = n * 10 + (unsigned int)(*s++ - '0');
		digits++;
	}
	if (!digits || digits > 10 || n > 0xffffffffull || (*s && *s != ' '))
		return false;
	*v = (unsigned int)n;
	*p = *s ? s + 1 : s;
	return true;
}

/* A decimal number of at most 20 digits that fits 64 bits, ending at @end; *@p moves past @end. */
static bool number64(const char **p, char end, uint64_t *v)
{
	uint64_t n = 0;
	const char *s = *p;
	int digits = 0;

	while (*s >= '0' && *s <= '9') {
		unsigned int d = (unsigned int)(*s++ - '0');

		if (++digits > 20 || n > (UINT64_MAX - d) / 10)
			return false;
		n = n * 10 + d;
	}
	if (!digits || *s != end)
		return false;
	*v = n;
	*p = end ? s + 1 : s;
	return true;
}

static bool own_table(unsigned int t)
{
	return t >= ROOT_TABLE_BASE && t - ROOT_TABLE_BASE < NETPLAN_UPLINK_SLOTS;
}

/* A sysctl path of the network: "/proc/sys/net/" and components that are not empty, "." or "..". */
static bool net_sysctl(const char *p)
{
	static const char pre[] = "/proc/sys/net/";
	const char *c;

	if (strncmp(p, pre, sizeof(pre) - 1) != 0)
		return false;
	for (c = p + sizeof(pre) - 1;;) {
		size_t n = strcspn(c, "/");

		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)c[i] <= ' ' || (unsigned char)c[i] == 0x7f)
				return false;
		if (!c[n])
			return true;
		c += n + 1;
	}
}

enum root_rec_kind root_rec_parse(char *line, struct root_rec_line *out)
{
	const char *p;
	char *sp;

	memset(out, 0, sizeof(*out));
	if (!strncmp(line, "rule ", 5)) {
		unsigned int fam;

		p = line + 5;
		if (!number(&p, &fam) || (fam != 4 && fam != 6) || !number(&p, &out->prio) ||
		    !number(&p, &out->table) || !own_table(out->table) ||
		    out->prio - ROOT_RULE_PRIO_BASE >= NETPLAN_UPLINK_SLOTS || out->prio < ROOT_RULE_PRIO_BASE)
			return ROOT_REC_NONE;
		out->family = fam == 6 ? AF_INET6 : AF_INET;
		if (strlen(p) >= INET6_ADDRSTRLEN || inet_pton(out->family, p, out->addr) != 1)
			return ROOT_REC_NONE;
		return out->kind = ROOT_REC_RULE;
	}
	if (!strncmp(line, "netns ", 6)) {
		p = line + 6;
		if (!number64(&p, ' ', &out->netns.dev) || !number64(&p, ' ', &out->netns.ino) ||
		    !number64(&p, '\0', &out->netns.cookie))
			return ROOT_REC_NONE;
		return out->kind = ROOT_REC_NETNS;
	}
	if (!strncmp(line, "table ", 6)) {
		p = line + 6;
		if (!number(&p, &out->table) || *p || !own_table(out->table))
			return ROOT_REC_NONE;
		return out->kind = ROOT_REC_TABLE;
	}
	sp = strchr(line, ' ');
	if (line[0] != '/' || !sp)
		return ROOT_REC_NONE;
	*sp = '\0';
	if (!net_sysctl(line) || !sp[1] || strlen(sp + 1) >= ROOT_REC_VAL_MAX) {
		*sp = ' ';
		return ROOT_REC_NONE;
	}
	for (const char *v = sp + 1; *v; v++)
		if ((unsigned char)*v < ' ' || (unsigned char)*v == 0x7f) {
			*sp = ' ';
			return ROOT_REC_NONE;
		}
	out->path = line;
	out->value = sp + 1;
	return out->kind = ROOT_REC_SYSCTL;
}

bool root_rec_value(const char *rec, const char *path, char *val, size_t vlen)
{
	size_t pl = strlen(path);

	if (!vlen)
		return false;
	for (const char *l = rec; *l; ) {
		const char *eol = strchr(l, '\n');
		size_t ll = eol ? (size_t)(eol - l) : strlen(l);

		if (ll > pl + 1 && !strncmp(l, path, pl) && l[pl] == ' ') {
			size_t vl = ll - pl - 1;

			if (vl >= vlen)
				vl = vlen - 1;
			memcpy(val, l + pl + 1, vl);
			val[vl] = '\0';
			return true;
		}
		l += ll + (eol ? 1 : 0);
	}
	return false;
}

/* The first line's "# childflow --root, pid <pid>, netns <dev>:<ino>", into @id (cookie 0). */
static bool header_netns(const char *l, size_t len, struct root_netns *id)
{
	static const char pre[] = "# childflow --root, pid ";
	char buf[128];
	const char *p = buf + sizeof(pre) - 1;
	int digits = 0;

	if (len >= sizeof(buf))
		return false;
	memcpy(buf, l, len);
	buf[len] = '\0';
	if (strncmp(buf, pre, sizeof(pre) - 1) != 0)
		return false;
	while (*p >= '0' && *p <= '9' && digits <= 10) {
		p++;
		digits++;
	}
	if (!digits || digits > 10 || strncmp(p, ", netns ", 8) != 0)
		return false;
	p += 8;
	memset(id, 0, sizeof(*id));
	return number64(&p, ':', &id->dev) && number64(&p, '\0', &id->ino);
}

bool root_rec_netns(const char *rec, struct root_netns *id)
{
	struct root_netns head;
	bool have_head, have_line = false;
	const char *eol = strchr(rec, '\n');
	size_t hl = eol ? (size_t)(eol - rec) : strlen(rec);

	have_head = header_netns(rec, hl, &head);
	for (const char *l = rec; *l; ) {
		const char *e = strchr(l, '\n');
		size_t ll = e ? (size_t)(e - l) : strlen(l);
		char buf[96];
		struct root_rec_line rl;

		if (ll > 6 && ll < sizeof(buf) && !strncmp(l, "netns ", 6)) {
			memcpy(buf, l, ll);
			buf[ll] = '\0';
			if (root_rec_parse(buf, &rl) != ROOT_REC_NETNS || have_line)
				return false;
			have_line = true;
			*id = rl.netns;
		} else if (!strncmp(l, "netns ", 6)) {
			return false;   /* too long to be one */
		}
		l += ll + (e ? 1 : 0);
	}
	if (have_line)
		return !have_head || (head.dev == id->dev && head.ino == id->ino);
	if (have_head)
		*id = head;
	return have_head;
}
