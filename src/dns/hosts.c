/* SPDX-License-Identifier: MIT */
/*
 * dns/hosts — read a hosts file, merge an override over the host's /etc/hosts (see hosts.h).
 *
 * The override's hostnames go into an open-addressing set (case-insensitive FNV-1a, at most half
 * full), so a merge is linear in the size of both files: a 4 MiB override with 200,000 names costs
 * one pass over each file.
 */
#include "dns/hosts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

char *hosts_load(const char *path, size_t max, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0, cap = 4096;
	int fd, err = 0;

	/* O_NONBLOCK: a FIFO must not block the open; it is refused below. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0)
		err = errno;
	else if (!S_ISREG(st.st_mode))
		err = EINVAL;
	else if ((unsigned long long)st.st_size > max)
		err = EFBIG;
	while (!err && cap <= (size_t)st.st_size)
		cap *= 2;
	if (cap > max + 1)
		cap = max + 1;
	/* At most max + 1 bytes are read: a file that grew since fstat() (or a /proc file, whose size
	 * says 0) is still caught. */
	while (!err) {
		ssize_t n;

		if (!buf || got == cap) {
			char *bigger;

			if (buf && cap == max + 1) {
				err = EFBIG;
				break;
			}
			if (buf)
				cap = cap > max / 2 ? max + 1 : cap * 2;
			if (!(bigger = realloc(buf, cap + 1))) {
				err = ENOMEM;
				break;
			}
			buf = bigger;
		}
		n = read(fd, buf + got, cap - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			err = errno;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (!err && memchr(buf, '\0', got))
		err = EILSEQ;
	if (err) {
		free(buf);
		errno = err;
		return NULL;
	}
	buf[got] = '\0';
	*len = got;
	return buf;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* The next field of [*p, end) (comments already cut off).  Return: its start, or NULL; *p moves on. */
static const char *next_field(const char **p, const char *end, size_t *flen)
{
	const char *s = *p, *f;

	while (s < end && is_blank(*s))
		s++;
	if (s == end) {
		*p = s;
		return NULL;
	}
	f = s;
	while (s < end && !is_blank(*s))
		s++;
	*flen = (size_t)(s - f);
	*p = s;
	return f;
}

/* The end of the data part of the line [s, end): at its first '#'. */
static const char *data_end(const char *s, const char *end)
{
	const char *h = memchr(s, '#', (size_t)(end - s));

	return h ? h : end;
}

struct name_set {
	struct { const char *p; size_t len; } *slot;
	size_t mask;
};

static uint32_t name_hash(const char *p, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ lower((unsigned char)p[i])) * 16777619u;
	return h;
}

static bool name_eq(const char *a, const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return false;
	return true;
}

/* The slot holding @p (@len bytes), or the empty slot where it belongs. */
static size_t name_slot(const struct name_set *s, const char *p, size_t len)
{
	size_t i = name_hash(p, len) & s->mask;

	while (s->slot[i].p && !(s->slot[i].len == len && name_eq(s->slot[i].p, p, len)))
		i = (i + 1) & s->mask;
	return i;
}

/* Walk the hostnames of every line of [text, end): count them, or (with @set) add them. */
static size_t override_names(const char *text, const char *end, struct name_set *set)
{
	size_t n = 0;

	for (const char *line = text; line < end;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *lend = nl ? nl : end;
		const char *p = line, *f;
		size_t flen;

		lend = data_end(line, lend);
		if (next_field(&p, lend, &flen)) {   /* the address */
			while ((f = next_field(&p, lend, &flen)) != NULL) {
				n++;
				if (set) {
					size_t i = name_slot(set, f, flen);

					set->slot[i].p = f;
					set->slot[i].len = flen;
				}
			}
		}
		line = nl ? nl + 1 : end;
	}
	return n;
}

/* The host line [s, e) names a host the override also names. */
static bool overridden(const struct name_set *set, const char *s, const char *e)
{
	const char *p = s, *f;
	size_t flen;

	e = data_end(s, e);
	if (!next_field(&p, e, &flen))
		return false;
	while ((f = next_field(&p, e, &flen)) != NULL)
		if (set->slot[name_slot(set, f, flen)].p)
			return true;
	return false;
}

char *hosts_merge(const char *over, size_t olen, const char *base, size_t blen, size_t *outlen)
{
	const char *oend = over + olen, *bend = base + blen;
	struct name_set set = { NULL, 0 };
	size_t n = override_names(over, oend, NULL), cap = 16, len;
	char *out;

	while (cap < 2 * n)
		cap *= 2;
	set.slot = calloc(cap, sizeof(*set.slot));
	/* The override, a newline, the base (a newline more if its last line lacks one), a NUL. */
	out = malloc(olen + blen + 3);
	if (!set.slot || !out) {
		free(set.slot);
		free(out);
		return NULL;
	}
	set.mask = cap - 1;
	override_names(over, oend, &set);
	memcpy(out, over, olen);
	len = olen;
	if (olen && over[olen - 1] != '\n')
		out[len++] = '\n';
	for (const char *line = base; line < bend;) {
		const char *nl = memchr(line, '\n', (size_t)(bend - line));
		const char *lend = nl ? nl + 1 : bend;

		if (!overridden(&set, line, nl ? nl : bend)) {
			memcpy(out + len, line, (size_t)(lend - line));
			len += (size_t)(lend - line);
		}
		line = lend;
	}
	if (len && out[len - 1] != '\n')
		out[len++] = '\n';
	out[len] = '\0';
	free(set.slot);
	*outlen = len;
	return out;
}
