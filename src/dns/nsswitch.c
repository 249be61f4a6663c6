/* SPDX-License-Identifier: MIT */
/* dns/nsswitch — drop the hosts: sources that bypass DNS (see nsswitch.h). */
#include "dns/nsswitch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* A source whose lookups go around DNS packets, to a daemon hidden inside the sandbox. */
static bool dropped(const char *t, size_t n)
{
	static const char *const names[] = { "resolve", "wins", "mymachines" };

	if (n >= 4 && memcmp(t, "mdns", 4) == 0)
		return true;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == n && memcmp(t, names[i], n) == 0)
			return true;
	return false;
}

static bool is_source(const char *t, size_t n, const char *name)
{
	return strlen(name) == n && memcmp(t, name, n) == 0;
}

/* The next token of [*p, end): a source name, or a `[...]` block.  Return: its start, or NULL. */
static const char *next_token(const char **p, const char *end, size_t *n)
{
	const char *s = *p, *t;

	while (s < end && is_blank(*s))
		s++;
	if (s == end) {
		*p = s;
		return NULL;
	}
	t = s;
	if (*s == '[') {
		const char *close = memchr(s, ']', (size_t)(end - s));

		s = close ? close + 1 : end;
	} else {
		while (s < end && !is_blank(*s) && *s != '[')
			s++;
	}
	*n = (size_t)(s - t);
	*p = s;
	return t;
}

/* After the `hosts:` of the line [s, e): Return: where its sources start, or NULL if not one. */
static const char *hosts_sources(const char *s, const char *e)
{
	while (s < e && is_blank(*s))
		s++;
	if ((size_t)(e - s) < 5 || strncasecmp(s, "hosts", 5) != 0)
		return NULL;
	s += 5;
	while (s < e && is_blank(*s))
		s++;
	return s < e && *s == ':' ? s + 1 : NULL;
}

static void put(char *out, size_t *len, const char *s, size_t n)
{
	memcpy(out + *len, s, n);
	*len += n;
}

/*
 * Rewrite one `hosts:` line whose sources are [src, data) and whose comment is [data, e), into
 * @out at *@len.  Return: true when it changed.  @out has room for the line plus " dns\n".
 */
static bool rewrite_line(const char *src, const char *data, const char *e, char *out, size_t *len)
{
	const char *p = src, *t;
	size_t n, start = *len;
	size_t insert_at = (size_t)-1;        /* where "dns" goes, if it must */
	bool skipping = false, any_dropped = false, has_dns = false, after_files = false;

	put(out, len, "hosts:", 6);
	while ((t = next_token(&p, data, &n)) != NULL) {
		if (*t == '[') {
			if (!skipping) {
				put(out, len, " ", 1);
				put(out, len, t, n);
			}
			if (after_files)
				insert_at = *len;
			continue;
		}
		after_files = false;
		skipping = dropped(t, n);
		if (skipping) {
			if (!any_dropped && insert_at == (size_t)-1)
				insert_at = *len;
			any_dropped = true;
			continue;
		}
		put(out, len, " ", 1);
		put(out, len, t, n);
		has_dns |= is_source(t, n, "dns");
		if (is_source(t, n, "files")) {
			after_files = true;
			insert_at = *len;
		}
	}
	if (!any_dropped) {
		*len = start;
		return false;
	}
	if (!has_dns) {
		static const char dns[4] = { ' ', 'd', 'n', 's' };

		memmove(out + insert_at + sizeof(dns), out + insert_at, *len - insert_at);
		memcpy(out + insert_at, dns, sizeof(dns));
		*len += sizeof(dns);
	}
	if (data < e) {
		put(out, len, " ", 1);
		put(out, len, data, (size_t)(e - data));
	}
	put(out, len, "\n", 1);
	return true;
}

int nsswitch_rewrite(const char *text, size_t len, char **out, size_t *outlen)
{
	const char *end = text + len;
	size_t olen = 0;
	bool changed = false;
	/* A rewritten line is never longer than "hosts:" + its sources + " dns" + " " + "\n". */
	char *buf = malloc(len + 16 * (len / 6 + 1) + 1);

	if (!buf)
		return -ENOMEM;
	for (const char *line = text; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *e = nl ? nl : end;
		const char *data = memchr(line, '#', (size_t)(e - line));
		const char *src = hosts_sources(line, data ? data : e);

		if (src && rewrite_line(src, data ? data : e, e, buf, &olen)) {
			changed = true;
		} else {
			put(buf, &olen, line, (size_t)(e - line));
			if (nl)
				put(buf, &olen, "\n", 1);
		}
		line = nl ? nl + 1 : end;
	}
	if (!changed) {
		free(buf);
		return 0;
	}
	buf[olen] = '\0';
	*out = buf;
	*outlen = olen;
	return 1;
}
