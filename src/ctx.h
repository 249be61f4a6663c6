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

#include "backend/backend.h"
#include "policy/policy.h"
#include "relay/connector.h"

struct relay;
struct dns_names;

struct ctx {
	struct backend_ref be;             /* rootless sandbox (or, later, rootful) */
	struct policy policy;
	struct connector route[POL_N];     /* the connector for POL_DIRECT and POL_PROXY */
	struct relay *relay;
	struct dns_names *names;            /* what the tree resolved: address -> names (dns/names.h) */
};

#endif
