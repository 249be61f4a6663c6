/* SPDX-License-Identifier: MIT */
/*
 * ctx — the one context of a childflow run, built by main.c and passed explicitly (no globals).
 *
 * It carries what the features configure to where it is needed: the backend the relay runs on, the
 * policy decision point, and the connector that carries each route.  Feature modules (dns/, proxy/,
 * capture/, flowlog/) add their configuration here; the relay reads it, never the command line.
 */
#ifndef CHILDFLOW_CTX_H
#define CHILDFLOW_CTX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "backend/backend.h"
#include "policy/policy.h"
#include "relay/connector.h"
#include "relay/service.h"
#include "util/egress.h"

struct relay;
struct dns_names;

/*
 * What the tree resolved, as the relay asks it (ask a proxy by name): the names @sa was resolved
 * from and that are still valid at @now_ms, most recent first, up to @max in @out; Return: how many
 * there are.  main.c points it at dns/names.h, so the relay needs no part of dns/.
 */
struct name_lookup {
	size_t (*lookup)(const void *src, const struct sockaddr *sa, uint64_t now_ms, const char **out,
			 size_t max);
	const void *src;
};

struct ctx {
	struct backend_ref be;             /* rootless sandbox (or, later, rootful) */
	struct policy policy;
	struct connector route[POL_N];     /* the connector for POL_DIRECT and POL_PROXY */
	struct relay_service service;      /* answers DNS itself (dns/dns.h), or ops NULL */
	struct relay *relay;
	struct dns_names *names;            /* what the tree resolved: address -> names (dns/names.h) */
	struct name_lookup resolved;       /* the same, for the relay; lookup NULL when there is none */
	struct egress egress;              /* --iface: every upstream socket is made by egress_socket() */
};

#endif
