/* SPDX-License-Identifier: MIT */
/*
 * dns/nsswitch — the child's /etc/nsswitch.conf: `hosts:` without the sources that resolve names
 * around DNS packets.
 *
 * Inside the sandbox the host's name-service daemons are hidden (systemd-resolved, nscd, avahi,
 * the D-Bus system bus), so their nsswitch sources would only fail, some slowly: `resolve`
 * (systemd-resolved's varlink), `mdns*` (avahi), `wins` (winbind) and `mymachines` (machined over
 * D-Bus) are dropped from every `hosts:` line, each with the `[STATUS=action]` blocks that follow
 * it.  `files`, `dns`, `myhostname` and the rest are kept in their order.  When no `dns` is left
 * once the sources are dropped, `dns` is inserted after `files` (or where the first dropped source
 * was), so that lookups reach childflow's forwarder.  Lines are parsed as glibc does: a `#` ends
 * the data (the comment is kept), the database name is matched case-insensitively.
 */
#ifndef CHILDFLOW_DNS_NSSWITCH_H
#define CHILDFLOW_DNS_NSSWITCH_H

#include <stddef.h>

/*
 * nsswitch_rewrite() - @text (@len bytes, need not be NUL-terminated) with its `hosts:` lines
 * rewritten as above; the other lines are copied as they are.
 * @out: set to the new text (NUL-terminated, free() it) when something changed.
 * @outlen: its length.
 * Return: 1 when @out was set, 0 when nothing needs to change, -ENOMEM.
 */
int nsswitch_rewrite(const char *text, size_t len, char **out, size_t *outlen);

#endif
