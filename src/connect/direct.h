/* SPDX-License-Identifier: MIT */
/* connect/direct — the direct route: P connects to the destination itself, from the caller's netns. */
#ifndef CHILDFLOW_CONNECT_DIRECT_H
#define CHILDFLOW_CONNECT_DIRECT_H

#include "relay/connector.h"

extern const struct connector_ops direct_connector_ops;

#endif
