/*
 * libFuzzer target: the --hosts-file merge (dns/hosts) and the nsswitch.conf hosts: rewrite
 * (dns/nsswitch).
 *
 * Both read files childflow does not write: the user's --hosts-file, the host's /etc/hosts and
 * nsswitch.conf.  The input is split at its first 0xff byte into the override and the host's file
 * (no 0xff: all override); the whole input is also an nsswitch.conf.  Findings: any crash or
 * sanitizer report, a merge that does not start with the override, is longer than both files plus
 * two newlines, or does not end in a newline; an nsswitch rewrite that still names a dropped
 * source in a hosts: line's sources.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns/hosts.h"
#include "dns/nsswitch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A hosts: line of @out (up to a '#') still has the dropped source `resolve` as a source. */
static int still_resolves(const char *out, size_t len)
{
	for (const char *l = out; l < out + len;) {
		const char *nl = memchr(l, '\n', (size_t)(out + len - l));
		size_t n = nl ? (size_t)(nl - l) : (size_t)(out + len - l);
		const char *hash = memchr(l, '#', n);

		if (hash)
			n = (size_t)(hash - l);
		if (n > 6 && strncmp(l, "hosts:", 6) == 0)
			for (const char *p = l + 6; p + 7 <= l + n; p++) {
				if (*p == '[') {   /* an action block, not a source */
					const char *c = memchr(p, ']', (size_t)(l + n - p));

					if (!c)
						break;
					p = c;
					continue;
				}
				if (p[-1] == ' ' && memcmp(p, "resolve", 7) == 0 &&
				    (p + 7 == l + n || p[7] == ' ' || p[7] == '['))
					return 1;
			}
		l = nl ? nl + 1 : out + len;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *split = memchr(text, 0xff, size);
	size_t olen = split ? (size_t)(split - text) : size;
	size_t blen = split ? size - olen - 1 : 0, len = 0;
	char *m = hosts_merge(text, olen, split ? split + 1 : "", blen, &len), *ns = NULL;

	if (!m)
		return 0;
	if (memcmp(m, text, olen) != 0 || len > olen + blen + 2 || (len && m[len - 1] != '\n') ||
	    m[len] != '\0')
		abort();
	free(m);
	if (nsswitch_rewrite(text, size, &ns, &len) == 1) {
		if (ns[len] != '\0' || still_resolves(ns, len))
			abort();
		free(ns);
	}
	return 0;
}
