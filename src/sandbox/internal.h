/* SPDX-License-Identifier: MIT */
/* Internal glue between the sandbox's processes and files (not for other modules). */
#ifndef CHILDFLOW_SANDBOX_INTERNAL_H
#define CHILDFLOW_SANDBOX_INTERNAL_H

#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include "sandbox/idmap.h"
#include "sandbox/sandbox.h"

/*
 * Written by G, C and init; read by P.  A shared anonymous mapping that the command never has.
 * Stores are release, loads acquire: whoever sees cmd_started also sees init_pid.
 */
struct sandbox_shared {
	atomic_int setup_failed;      /* a setup step failed; its message was already printed */
	atomic_int child_pid;         /* C's pid (G writes it); 0 before, and once G reaps it */
	atomic_int init_pid;          /* init's pid in P's PID namespace; 0 before and after */
	atomic_int cmd_started;       /* init has forked the command (after init_pid was published) */
};

/* sandbox_setup_fail() - mark setup as failed and exit; the caller printed the one message. */
__attribute__((noreturn)) void sandbox_setup_fail(struct sandbox_shared *sh);

/* sandbox_ignore_forwarded_signals() - G: only PDEATHSIG and the exit chain end us. */
void sandbox_ignore_forwarded_signals(void);

/* P: deliver the signals queued while init did not exist, now that its pid is known (sandbox.c). */
void sandbox_flush_queued_signals(struct sandbox *sb);

/* P's messages with G (ctl.c).  The setup steps return 0, or -1 when G stopped or sent nonsense. */
int sandbox_ctl_send_plan(struct sandbox *sb, const struct idmap_plan *plan);
int sandbox_ctl_recv_listeners(struct sandbox *sb);
int sandbox_ctl_recv_initial_pool(struct sandbox *sb);
int sandbox_ctl_recv_child_netns(struct sandbox *sb);
/* backend_ops.ns_socket() and .on_ctl() (backend/backend.h) */
int sandbox_ctl_ns_socket(struct sandbox *sb, enum be_sock_kind k);
bool sandbox_ctl_on_ctl(struct sandbox *sb);
/* Close the pooled sockets (and report the pool's use at debug level). */
void sandbox_ctl_free_pool(struct sandbox *sb);

/* sandbox_status_code() - a wait status as an exit code: the code, or 128+N for signal N. */
int sandbox_status_code(int st);

/* How long each end of the veth may take to become operational. */
#define SANDBOX_LINK_WAIT_MS 2000

/* G: runs in U1+N1; never returns.  @psock is the socket to P, @p P's pid. */
__attribute__((noreturn)) void gateway_main(const struct sandbox_config *cfg, const struct netplan *np,
					    struct sandbox_shared *sh, int psock, pid_t p);

/*
 * fast_filter_load() - --fast-tcp, in the command: load the notifying filter, hand its listener and
 * N2's template sockets to P over @chan (closed afterwards) and wait for P's answer.
 * Return: 0, or -1 after printing one line.
 */
int fast_filter_load(int chan);

/* C: runs in the child's namespaces; never returns.  @sync is the socket to G. */
__attribute__((noreturn)) void child_main(const struct sandbox_config *cfg, const struct netplan *np,
					  struct sandbox_shared *sh, int sync, pid_t gw_pid);

/* The --allow-socket paths, resolved, and a clone of each taken before anything is covered. */
struct child_allowed {
	int n;
	int tree[SANDBOX_MAX_ALLOW_SOCKETS];
	char path[SANDBOX_MAX_ALLOW_SOCKETS][PATH_MAX];
};

/* The files carrying the command's resolv.conf text, open for writing through a writable clone of
 * their (otherwise read-only) tmpfs: P rewrites them in place when the host's resolv.conf changes. */
#define CHILD_RESOLV_MAX SANDBOX_RESOLV_MAX
struct child_resolv {
	int n;
	int fd[CHILD_RESOLV_MAX];
};

/*
 * C, in its (private) mount namespace (etcfiles.c), in this order; each fails with one line (setup
 * failure):
 * child_allow_take() - clone each of @cfg's --allow-socket paths (which must be unix sockets) into @al;
 * child_name_files() - give the command @cfg's resolv.conf, hosts and nsswitch.conf, and hide the
 *   host endpoints that resolve names or connect for a caller (with --isolate, the caller's runtime
 *   directory too), with a place kept for @al's sockets inside hidden directories; @rv gets the
 *   writable fds of the files that hold the resolv.conf text (none without one);
 * child_allow_place() - put @al's clones back onto their paths, over the hiding.
 */
void child_allow_take(const struct sandbox_config *cfg, struct child_allowed *al, struct sandbox_shared *sh);
void child_name_files(const struct sandbox_config *cfg, const struct child_allowed *al,
		      struct child_resolv *rv, struct sandbox_shared *sh);
void child_resolv_close(struct child_resolv *rv);
void child_allow_place(struct child_allowed *al, struct sandbox_shared *sh);

/* init: PID 1 of the PID namespace; never returns.  Starts the command once @go_fd yields a byte. */
__attribute__((noreturn)) void init_main(const struct sandbox_config *cfg, int go_fd,
					 struct sandbox_shared *sh);

/* idmap_write_maps() - write @pid's uid_map and gid_map (and "deny" to setgroups first).  Return: 0 or -errno. */
int idmap_write_maps(pid_t pid, const char *uid_map, const char *gid_map, bool deny_setgroups);

#endif
