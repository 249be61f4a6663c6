/* SPDX-License-Identifier: MIT */
/*
 * dns/names — what the tree resolved in this run: address -> names, TTL-aware, bounded.
 *
 * The DNS forwarder adds each answer's A/AAAA addresses under the name the child asked (a CNAME
 * chain is attributed to the question's name).  The proxy connectors (ask the proxy by name), the
 * policy and the flow log read it.  An entry lives for its record's TTL, but at least
 * DNS_NAMES_MIN_TTL_S (clients cache longer than they should, and connect after the answer) and at
 * most DNS_NAMES_MAX_TTL_S.  The table holds at most @max entries (address, name) pairs; when full,
 * the least recently refreshed pair goes first.  All operations are O(1) on average.
 */
#ifndef CHILDFLOW_DNS_NAMES_H
#define CHILDFLOW_DNS_NAMES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNS_NAMES_MIN_TTL_S 60
#define DNS_NAMES_MAX_TTL_S 86400
#define DNS_NAME_MAX 254         /* presentation form, no trailing dot, plus the NUL */

struct dns_names;

/* A table for at most @max (address, name) pairs.  Return: it, or NULL when out of memory. */
struct dns_names *dns_names_new(size_t max);
void dns_names_free(struct dns_names *n);

/*
 * dns_names_add() - remember that @name (lowercased, no trailing dot) resolved to @sa (AF_INET or
 * AF_INET6; the port is ignored) with @ttl_s, as of @now_ms.  Adding a pair again refreshes it.
 */
void dns_names_add(struct dns_names *n, const struct sockaddr *sa, const char *name, uint32_t ttl_s,
		   uint64_t now_ms);

/*
 * dns_names_lookup() - the names @sa was resolved from and that have not expired at @now_ms, the most
 * recently refreshed first.  Fills up to @max pointers in @out (valid until the next add).
 * Return: how many names there are in all (may exceed @max).
 */
size_t dns_names_lookup(const struct dns_names *n, const struct sockaddr *sa, uint64_t now_ms,
			const char **out, size_t max);

/* Pairs held now (for tests and the exit counters). */
size_t dns_names_count(const struct dns_names *n);

#endif
