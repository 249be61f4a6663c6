/* SPDX-License-Identifier: MIT */
/* Internal glue between the sandbox's processes (not for other modules). */
#ifndef CHILDFLOW_SANDBOX_INTERNAL_H
#define CHILDFLOW_SANDBOX_INTERNAL_H

#include "sandbox/idmap.h"
#include "sandbox/sandbox.h"

/* One-byte step tokens on a SEQPACKET socketpair.  Both return 0, or -1 when the peer is gone. */
int sync_send(int fd, char tag);
int sync_expect(int fd, char tag);

/* Mark setup as failed in the shared page and exit: the message was printed by the caller. */
__attribute__((noreturn)) void setup_fail(struct sandbox_shared *sh);

/* Write @value to a /proc file.  Returns 0 or -errno. */
int write_file(const char *path, const char *value);

/* Set PDEATHSIG and make sure the parent is still @parent (it may have died before that). */
void die_with_parent(pid_t parent);

/* Ignore the signals a terminal or P may send, so only PDEATHSIG and the exit chain end us. */
void ignore_forwarded_signals(void);

/* C: runs in the child's namespaces; never returns.  @sync is the socket to G. */
__attribute__((noreturn)) void child_main(const struct sandbox_config *cfg, const struct netplan *np,
					  struct sandbox_shared *sh, int sync, pid_t gw_pid);

#endif
