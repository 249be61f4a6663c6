/* SPDX-License-Identifier: MIT */
/*
 * sandbox — the process and namespace choreography (design §2).
 *
 *   P  (childflow, caller's namespaces)   owns every host-side socket, runs the relay
 *   └─ G  gateway agent: user ns U1 + net ns N1 (gw0, nftables TPROXY, transparent listeners)
 *      └─ C  child bootstrap: user ns U2 (child of U1) + net ns N2 (eth0) + mount ns + PID ns
 *         └─ init  PID 1 of the PID namespace: forwards signals, reaps, exits with the command
 *            └─ COMMAND  caller's uid/gid, no capabilities, only the fds the caller gave us
 *
 * Each process dies with its parent (PR_SET_PDEATHSIG), and every namespace is owned by those
 * processes only, so when P dies for any reason - even SIGKILL - everything goes with it and nothing
 * is left on the host.  G also serves P as a socket factory: sockets that must live in N1 (per-flow
 * UDP reply sockets) are created there and passed back over a SEQPACKET socket.
 */
#ifndef CHILDFLOW_SANDBOX_H
#define CHILDFLOW_SANDBOX_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

#include "backend/backend.h"
#include "backend/netplan.h"

enum { SB_TCP4 = BE_TCP4, SB_TCP6 = BE_TCP6, SB_UDP4 = BE_UDP4, SB_UDP6 = BE_UDP6, SB_NLISTEN = BE_NLISTEN };

#define SANDBOX_MAX_KEEP_FDS 64

struct sandbox_config {
	char **argv;                  /* the command, NULL-terminated */
	bool ipv6;                    /* offer IPv6 to the child */
	const char *idmap_override;   /* CHILDFLOW_UIDMAP: NULL/"auto", "direct" or "helper" */
	int keep_fds[SANDBOX_MAX_KEEP_FDS]; /* inherited fds (>= 3) that pass to the command */
	int n_keep_fds;
	sigset_t orig_mask;           /* the caller's signal mask, restored for the command */
	sigset_t orig_ignored;        /* signals the caller had ignored; stay ignored for the command */
	bool own_pgrp;                /* put the command in a process group of its own (see main.c) */
};

/* Written by G, C and init; read by P.  Lives in a shared anonymous mapping the command never has. */
struct sandbox_shared {
	volatile int setup_failed;    /* a setup step failed; its message was already printed */
	volatile pid_t init_pid;      /* init's pid in P's PID namespace; 0 before it exists and after */
	volatile int cmd_started;     /* init has forked the command */
};

struct sandbox {
	struct netplan net;
	pid_t gw_pid;
	int gw_pidfd;                 /* readable when G exits */
	int ctl_fd;                   /* SEQPACKET to G: socket factory */
	int listen_fd[SB_NLISTEN];    /* transparent listeners in N1; -1 when not offered */
	int child_netns_fd;           /* keeps N2 (and the veth) alive until the relay has drained */
	struct sandbox_shared *shared;
	bool killed;                  /* P killed the tree on purpose: G's death needs no message */
	bool own_pgrp;                /* the command is not in P's process group */
	int abort_sig;                /* a signal ended the setup: exit 128+N */
};

/* Signals P forwards to the command. */
extern const int sandbox_forwarded_signals[];
extern const int sandbox_n_forwarded_signals;

/*
 * sandbox_start() - create the namespaces, the link, the ruleset and the listeners, and start the
 * command.  Returns 0, or -1 after printing one clear error line (nothing is left behind).
 * Must be called while P is single-threaded and before it opens host sockets.
 */
int sandbox_start(const struct sandbox_config *cfg, struct sandbox *sb);

/* The relay's view of a started sandbox (backend/backend.h); @sb must outlive the relay. */
struct backend_ref sandbox_backend(struct sandbox *sb);

/* Ask G for a new UDP socket of @family created in N1.  Returns the fd or -errno. */
int sandbox_n1_udp_socket(struct sandbox *sb, int family);

/* Forward @sig to the command (through init).  Returns false when there is no command (yet). */
bool sandbox_forward_signal(struct sandbox *sb, int sig);

/* Kill the whole tree now (used when P itself must give up). */
void sandbox_kill(struct sandbox *sb);

/* Drop the reference to the child's network namespace (after the relay drained). */
void sandbox_release(struct sandbox *sb);

/* After gw_pidfd became readable: reap G and return childflow's exit code. */
int sandbox_finish(struct sandbox *sb);

#endif
