/* SPDX-License-Identifier: MIT */
/*
 * dns/names — address -> names the tree resolved (see names.h).
 *
 * A hash table of (address, name) pairs, keyed by the address with a per-run random SipHash key
 * (answers come from resolvers the tree may control, so bucket choice must not be predictable), and
 * one LRU list over all pairs for the bound.  A pair is refreshed (moved to the front of its bucket
 * and of the LRU) when it is added again, so a bucket walk meets an address's names most recently
 * refreshed first.  Expired pairs are skipped by lookups and reclaimed by adds.
 */
#include "dns/names.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include <sodium.h>

struct name_pair {
	struct name_pair *hnext;
	struct name_pair *lprev, *lnext;   /* LRU: head most recently refreshed */
	uint64_t expire_ms;
	unsigned int bucket;
	uint8_t family;                    /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	char name[];
};

struct dns_names {
	struct name_pair **bucket;
	unsigned int n_buckets;            /* a power of two */
	size_t n, max;
	struct name_pair *lru_head, *lru_tail;
	unsigned char key[crypto_shorthash_KEYBYTES];
};

struct dns_names *dns_names_new(size_t max)
{
	struct dns_names *n;
	unsigned int nb = 64;

	if (max == 0 || sodium_init() < 0)
		return NULL;
	while (nb < max && nb < (1u << 24))
		nb <<= 1;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->bucket = calloc(nb, sizeof(struct name_pair *));
	if (!n->bucket) {
		free(n);
		return NULL;
	}
	n->n_buckets = nb;
	n->max = max;
	randombytes_buf(n->key, sizeof(n->key));
	return n;
}

void dns_names_free(struct dns_names *n)
{
	if (!n)
		return;
	for (struct name_pair *p = n->lru_head, *next; p; p = next) {
		next = p->lnext;
		free(p);
	}
	free(n->bucket);
	free(n);
}

/* Family and address bytes of @sa; Return: false for other families. */
static bool addr_key(const struct sockaddr *sa, uint8_t *family, uint8_t addr[16])
{
	memset(addr, 0, 16);
	if (sa->sa_family == AF_INET) {
		memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	} else {
		return false;
	}
	*family = (uint8_t)sa->sa_family;
	return true;
}

static unsigned int bucket_of(const struct dns_names *n, uint8_t family, const uint8_t addr[16])
{
	unsigned char in[17], out[crypto_shorthash_BYTES];
	uint64_t h;

	in[0] = family;
	memcpy(in + 1, addr, 16);
	crypto_shorthash(out, in, sizeof(in), n->key);
	memcpy(&h, out, sizeof(h));
	return (unsigned int)(h & (n->n_buckets - 1));
}

static void lru_unlink(struct dns_names *n, struct name_pair *p)
{
	if (p->lprev)
		p->lprev->lnext = p->lnext;
	else
		n->lru_head = p->lnext;
	if (p->lnext)
		p->lnext->lprev = p->lprev;
	else
		n->lru_tail = p->lprev;
	p->lprev = p->lnext = NULL;
}

static void lru_push(struct dns_names *n, struct name_pair *p)
{
	p->lprev = NULL;
	p->lnext = n->lru_head;
	if (n->lru_head)
		n->lru_head->lprev = p;
	else
		n->lru_tail = p;
	n->lru_head = p;
}

/* Take @p out of its bucket chain. */
static void bucket_unlink(struct dns_names *n, struct name_pair *p)
{
	for (struct name_pair **pp = &n->bucket[p->bucket]; *pp; pp = &(*pp)->hnext) {
		if (*pp == p) {
			*pp = p->hnext;
			p->hnext = NULL;
			return;
		}
	}
}

static void bucket_push(struct dns_names *n, struct name_pair *p)
{
	p->hnext = n->bucket[p->bucket];
	n->bucket[p->bucket] = p;
}

static void pair_free(struct dns_names *n, struct name_pair *p)
{
	bucket_unlink(n, p);
	lru_unlink(n, p);
	free(p);
	n->n--;
}

void dns_names_add(struct dns_names *n, const struct sockaddr *sa, const char *name, uint32_t ttl_s,
		   uint64_t now_ms)
{
	char low[DNS_NAME_MAX];
	uint8_t family, addr[16];
	size_t len = strlen(name);
	unsigned int b;

	if (!addr_key(sa, &family, addr))
		return;
	while (len && name[len - 1] == '.')
		len--;
	if (len == 0 || len >= DNS_NAME_MAX)
		return;
	for (size_t i = 0; i < len; i++)
		low[i] = (char)tolower((unsigned char)name[i]);
	low[len] = '\0';
	if (ttl_s < DNS_NAMES_MIN_TTL_S)
		ttl_s = DNS_NAMES_MIN_TTL_S;
	if (ttl_s > DNS_NAMES_MAX_TTL_S)
		ttl_s = DNS_NAMES_MAX_TTL_S;

	b = bucket_of(n, family, addr);
	for (struct name_pair *p = n->bucket[b]; p; p = p->hnext) {
		if (p->family == family && memcmp(p->addr, addr, 16) == 0 && strcmp(p->name, low) == 0) {
			p->expire_ms = now_ms + (uint64_t)ttl_s * 1000;
			bucket_unlink(n, p);
			bucket_push(n, p);
			lru_unlink(n, p);
			lru_push(n, p);
			return;
		}
	}
	/* Room: reclaim expired pairs at the cold end first, then the least recently refreshed. */
	for (struct name_pair *old = n->lru_tail; old && (n->n >= n->max || old->expire_ms <= now_ms);) {
		struct name_pair *prev = old->lprev;

		pair_free(n, old);
		old = prev;
	}

	struct name_pair *p = malloc(sizeof(*p) + len + 1);
	if (!p)
		return;
	memset(p, 0, sizeof(*p));
	p->expire_ms = now_ms + (uint64_t)ttl_s * 1000;
	p->bucket = b;
	p->family = family;
	memcpy(p->addr, addr, 16);
	memcpy(p->name, low, len + 1);
	bucket_push(n, p);
	lru_push(n, p);
	n->n++;
}

size_t dns_names_lookup(const struct dns_names *n, const struct sockaddr *sa, uint64_t now_ms,
			const char **out, size_t max)
{
	uint8_t family, addr[16];
	size_t found = 0;

	if (!n || !addr_key(sa, &family, addr))
		return 0;
	for (const struct name_pair *p = n->bucket[bucket_of(n, family, addr)]; p; p = p->hnext) {
		if (p->family != family || memcmp(p->addr, addr, 16) != 0 || p->expire_ms <= now_ms)
			continue;
		if (found < max)
			out[found] = p->name;
		found++;
	}
	return found;
}

size_t dns_names_count(const struct dns_names *n)
{
	return n ? n->n : 0;
}
