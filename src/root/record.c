/* SPDX-License-Identifier: MIT */
/* record — a --root state record's text, parsed without trusting it (see record.h). */
#include "root/record.h"

#include <errno.h>
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

bool root_rec_same_netns(const char *rec, const char *tag)
{
	const char *nl = strchr(rec, '\n'), *t = strstr(rec, tag);

	return nl && *tag && t && t < nl + 1;
}
