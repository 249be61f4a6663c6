/* SPDX-License-Identifier: MIT */
/*
 * sandbox — the rootless backend: the process and namespace choreography (design §2).
 *
 *   P  (childflow, caller's namespaces)   owns every host-side socket, runs the relay  (sandbox.c)
 *   └─ G  gateway agent: user ns U1 + net ns N1 (gw0, nftables TPROXY, listeners)   (gateway.c)
 *      └─ C  child bootstrap: user ns U2 (child of U1) + net ns N2 (eth0) + mount ns + PID ns (child.c)
 *         └─ init  PID 1 of the PID namespace: forwards signals, reaps, exits with the command (init.c)
 *            └─ COMMAND  the caller's uid/gid; a root caller keeps root's capabilities in U2,
 *                        anyone else has none; only the fds the caller gave us
 *
 * Each process dies with its parent (PR_SET_PDEATHSIG), and every namespace is owned by those
 * processes only, so when P dies for any reason - even SIGKILL - everything goes with it and nothing
 * is left on the host.  P and G talk in typed messages (gwproto.h); G also keeps P's pool of sockets
 * that must live in N1 (per-flow UDP reply sockets) filled, asynchronously.
 */
#ifndef CHILDFLOW_SANDBOX_H
#define CHILDFLOW_SANDBOX_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

#include "backend/backend.h"
#include "backend/netplan.h"
#include "sandbox/idmap.h"

#define SANDBOX_MAX_KEEP_FDS 64
#define SANDBOX_MAX_ALLOW_SOCKETS 16

struct sandbox_config {
	char **argv;                  /* the command, NULL-terminated */
	bool ipv6;                    /* offer IPv6 to the child */
	bool caller_is_root;          /* uid and euid 0: the command keeps root's capabilities in U2 */
	enum idmap_choice idmap;      /* CHILDFLOW_UIDMAP */
	int keep_fds[SANDBOX_MAX_KEEP_FDS]; /* inherited fds (>= 3) that pass to the command, sorted */
	int n_keep_fds;
	sigset_t orig_mask;           /* the caller's signal mask, restored for the command */
	sigset_t orig_ignored;        /* signals the caller had ignored; stay ignored for the command */
	bool own_pgrp;                /* put the command in a process group of its own */
	/* The command's own pty (tty/pty.h; main.c fills these when one of fds 0-2 is a terminal): */
	bool pty;                     /* the command gets a session of its own with pty_slave */
	int pty_slave;                /* becomes its controlling terminal */
	int pty_report;               /* the command writes 'R' once it holds it; init, stop signals */
	unsigned int pty_fds;         /* bit N: fd N (0-2) becomes the slave */
	char pty_hide[64];            /* the caller's terminal's path (/dev/pts/N), hidden inside, or "" */
	unsigned int test_delay_init_pid_us; /* CHILDFLOW_TEST_DELAY_INIT_PID_US (tests only) */
	/* The child's name files (etcfiles.c), each NULL to keep the host's: */
	const char *resolv_conf;      /* the full text of its /etc/resolv.conf */
	const char *hosts;            /* its /etc/hosts (--hosts-file merged over the host's) */
	const char *nsswitch;         /* its /etc/nsswitch.conf (hosts: sources that bypass DNS dropped) */
	/* Host IPC (hide.c, init.c): */
	bool isolate;                 /* --isolate: private /tmp, /dev/shm, IPC namespace, keyring, ... */
	const char *allow_sockets[SANDBOX_MAX_ALLOW_SOCKETS]; /* --allow-socket paths, let through */
	int n_allow_sockets;
	char runtime_dir[256];        /* the caller's $XDG_RUNTIME_DIR when it is a directory of its own, or "" */
	bool capture;                 /* a packet socket with a ring on gw0 for P (backend capture()) */
	/* The rootful backend (--root, src/root/): G also gets "up0", a link to the host, and bridges
	 * what it does not intercept between gw0 and up0 (nft/gateway.h).  NULL: rootless. */
	const struct netplan_uplink *uplink;
	bool proxy_tcp;               /* rootful: all TCP goes to the relay (-p), not only DNS */
	/* P, once G has its namespaces and before C exists (the rootful host side creates up0 in
	 * G's network namespace here).  Return: 0, or -1 after one line (the setup then fails). */
	int (*on_unshared)(void *arg, pid_t gw_pid);
	void *on_unshared_arg;
	bool fast_tcp;                /* --fast-tcp: the command's connect/bind/listen notified to P */
	int fast_fd;                  /* set by sandbox_start(): the command's end of the channel that
				       * carries its notification listener to P (fastfilter.c), or -1 */
};

/* The capture ring G sets up on gw0 (backend.h's struct be_capture): 32 blocks of 1 MiB. */
#define SANDBOX_CAPTURE_BLOCK_SIZE (1u << 20)
#define SANDBOX_CAPTURE_BLOCKS 32u
#define SANDBOX_CAPTURE_RETIRE_MS 20u

/* The pool of N1 sockets of one kind: held fds plus those asked of G and not yet arrived. */
#define SANDBOX_POOL_MAX 64           /* held + in flight never exceed this */
#define SANDBOX_POOL_FILL 32          /* filled to this at setup and on every refill */
#define SANDBOX_POOL_LOW 16           /* below this (held + in flight), a refill is asked for */

struct sandbox_pool {
	int fd[SANDBOX_POOL_MAX];
	int n;                        /* held */
	int inflight;                 /* asked for, not answered yet */
	int err;                      /* -errno of the last refill that came back short, until reported */
	unsigned long taken, empty;   /* sockets handed out; calls that found the pool empty */
};

struct sandbox_shared;

#define SANDBOX_RESOLV_MAX 3

struct sandbox {
	struct netplan net;
	pid_t gw_pid;
	int gw_pidfd;                 /* readable when G exits */
	int ctl_fd;                   /* SEQPACKET to G (gwproto.h); non-blocking once started */
	int listen_fd[BE_NLISTEN];    /* transparent listeners in N1; -1 when not offered */
	int gate_fd;                  /* the SYN gate's NFQUEUE socket in N1; -1 when the host cannot gate */
	int echo_fd;                  /* the echo requests' NFQUEUE socket in N1; -1 when there is none */
	int inject_fd[2];             /* raw IPv4, IPv6 sockets in N1 for ICMP errors to the child; -1: none */
	int capture_fd;               /* AF_PACKET on gw0 with its ring (cfg->capture), else -1 */
	int child_netns_fd;           /* keeps N2 (and the veth) alive until the relay has drained */
	int fast_fd;                  /* --fast-tcp: P's end of the listener channel (fastfilter.c), or -1 */
	int resolv_fd[SANDBOX_RESOLV_MAX];   /* the child's resolv.conf files, writable (from CMD_STARTED) */
	int n_resolv;
	struct sandbox_shared *shared;
	struct sandbox_pool pool[BE_SOCK_N];
	/* Refills asked of G and not answered, oldest first (G answers in order): an answer the kernel
	 * had to cut (MSG_CTRUNC: P was out of fds) still tells which request, and how many, it was. */
	struct { uint8_t kind, count; } req[2 * SANDBOX_POOL_MAX];
	unsigned int req_head, req_n;
	sigset_t queued;              /* signals that came before init's pid was known */
	bool killed;                  /* P killed the tree on purpose: G's death needs no message */
	bool finished;                /* G (and any orphaned C or init) reaped */
	bool own_pgrp;                /* the command is not in P's process group */
	bool rootful;                 /* started with an uplink (--root) */
	int abort_sig;                /* a signal ended the setup: exit 128+N */
};

/* Signals P forwards to the command. */
extern const int sandbox_forwarded_signals[];
extern const int sandbox_n_forwarded_signals;

/*
 * sandbox_config_init() - record what the command inherits from the caller: @argv, the fds >= 3,
 * signal dispositions and mask, whether it needs a process group of its own, and the environment's
 * CHILDFLOW_UIDMAP.  Call first thing, before P blocks signals or opens fds.
 * Return: 0, or -1 after printing a usage error (exit 2).
 */
int sandbox_config_init(struct sandbox_config *cfg, char **argv, bool ipv6);

/*
 * sandbox_start() - create the namespaces, the link, the ruleset and the listeners, fill the N1
 * socket pools and start the command.  Return: 0, or -1 after printing one clear error line
 * (nothing is left behind, every process we made is reaped).
 * Must be called while P is single-threaded and before it opens host sockets.
 */
int sandbox_start(const struct sandbox_config *cfg, struct sandbox *sb);

/*
 * sandbox_mounts_try() - the doctor's try of the mounts the child makes: its mount propagation made
 * private, a sysfs of its own, the name files placed over /etc.  Only in a throwaway user + network
 * + mount namespace (doctor_try()).  Return: 0 or -errno; a name-file step that fails prints its
 * line and exits EXIT_SETUP, as it does in a run.
 */
int sandbox_mounts_try(void);

/* The relay's view of a started sandbox (backend/backend.h); @sb must outlive the relay. */
struct backend_ref sandbox_backend(struct sandbox *sb);

#endif
