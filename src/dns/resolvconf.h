/* SPDX-License-Identifier: MIT */
/*
 * dns/resolvconf — the host's resolver configuration, read as glibc reads it, and the child's file.
 *
 * P forwards the tree's DNS to the host's own resolvers (or to --dns), so it needs what the host's
 * /etc/resolv.conf says: the nameservers in order (loopback ones included: P can reach them), and the
 * search, domain and options lines, which the child's own resolv.conf carries over unchanged so that
 * names resolve inside exactly as outside.  The child's file names the gateway instead of the host's
 * nameservers.  Parsing follows glibc's res_init: "nameserver" (at most RESOLV_MAX_NS used, an IPv6
 * link-local one may carry %scope), "search"/"domain" (the last one wins), "options" (timeout:N,
 * attempts:N, rotate, ndots, edns0, trust-ad, ... kept verbatim; timeout and attempts are also read,
 * with glibc's defaults 5 s and 2 and its caps 30 and 5).  Unknown lines are ignored, as glibc does.
 */
#ifndef CHILDFLOW_DNS_RESOLVCONF_H
#define CHILDFLOW_DNS_RESOLVCONF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "backend/netplan.h"

#define RESOLV_MAX_NS 3          /* glibc's MAXNS: later nameservers are ignored there too */
#define RESOLV_LINES_MAX 2048    /* bytes of search/domain/options lines carried to the child */

struct resolv_conf {
	struct sockaddr_storage ns[RESOLV_MAX_NS];   /* port 53, in file order */
	int n_ns;
	char lines[RESOLV_LINES_MAX];  /* the search/domain/options lines kept, '\n'-terminated each */
	unsigned int timeout_s;        /* per try, as the host's resolver waits */
	unsigned int attempts;
	bool rotate;
};

/*
 * resolvconf_parse() - read resolv.conf text @text of @len bytes (need not be NUL-terminated)
 * into @rc.  Never fails: no nameserver line gives n_ns 0 (glibc then asks 127.0.0.1; the caller
 * decides).  Over-long or control-character lines are skipped.
 */
void resolvconf_parse(const char *text, size_t len, struct resolv_conf *rc);

/*
 * resolvconf_load() - read and parse the file at @path (symlinks followed).
 * Return: 0, or -errno (-ENOENT when missing; @rc is then the empty configuration).
 */
int resolvconf_load(const char *path, struct resolv_conf *rc);

/*
 * resolvconf_child_text() - the child's /etc/resolv.conf: the kept lines of @rc, then
 * "nameserver <gw4>" and, when @np offers IPv6, "nameserver <gw6>".
 * Return: its length (excluding the NUL written to @buf), or -ENOSPC when @size is too small.
 */
int resolvconf_child_text(const struct resolv_conf *rc, const struct netplan *np, char *buf, size_t size);

/*
 * resolvconf_replace() - make the file open at @fd hold @text (@len bytes), in place: one pwrite()
 * of the whole text at offset 0, then the size cut to @len.  Same inode, new mtime: glibc's
 * resolver reads it again on its next lookup.  Return: 0 or -errno.
 */
int resolvconf_replace(int fd, const char *text, size_t len);

#endif
