/* SPDX-License-Identifier: MIT */
/* connect/direct — the direct route: P connects to the destination itself, from the caller's netns. */
#ifndef CHILDFLOW_CONNECT_DIRECT_H
#define CHILDFLOW_CONNECT_DIRECT_H

#include "relay/connector.h"

/* Its cfg is a const struct egress * (util/egress.h): where the upstream socket leaves. */
extern const struct connector_ops direct_connector_ops;

#endif
