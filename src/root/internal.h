/* SPDX-License-Identifier: MIT */
/* The records of host changes the kernel cannot undo, and the watchdog (state.c); internal to src/root/. */
#ifndef CHILDFLOW_ROOT_INTERNAL_H
#define CHILDFLOW_ROOT_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "root/root.h"

/* One directory of records, one file per live run ("slot-<n>"), each locked (flock) by its run. */
#define ROOT_STATE_DIR "/run/childflow-root"

struct root_state {
	unsigned int slot;
	int rec_fd;                   /* our record, O_APPEND, flock'ed for as long as P or the watchdog lives */
	char rec_name[32];
	pid_t watchdog;
	int wd_fd;                    /* P's end of the socket to the watchdog */
};

/*
 * root_state_begin() - restore and delete the records of dead runs, take the lowest slot that has
 * no record, whose uplink name is no link and that @slot_ok accepts, create our record and fork the
 * watchdog.  Return: 0, or -1 after one line; -1 with errno EADDRINUSE and no line when @slot_ok
 * refused every free slot.
 */
int root_state_begin(struct root_state *st, bool (*slot_ok)(unsigned int slot, void *arg), void *arg);

/*
 * root_state_note() - record a routing change before it is made: "rule <4|6> <prio> <table>
 * <source>" (deleted at restore) or "table <table>" (emptied at restore).  Return: 0 or -errno.
 */
int root_state_note(struct root_state *st, const char *line);

/* Per-run policy routing of --root --iface: table ROOT_TABLE_BASE + slot, rule priority
 * ROOT_RULE_PRIO_BASE + slot (before the main table's 32766 and the usual VPN rules). */
#define ROOT_TABLE_BASE ROOT_TABLE_BASE_VALUE
#define ROOT_RULE_PRIO_BASE 1000u

/* Where the uplinks' addresses come from (backend/netplan.c). */
#define ROOT_UPLINK_RANGE4 ROOT_UPLINK_RANGE4_TEXT
#define ROOT_UPLINK_RANGE6 ROOT_UPLINK_RANGE6_TEXT

/*
 * root_state_set() - set the sysctl file @path to @value, recording its previous value first
 * (or joining the record of a live run that changed it already).  Return: 0 or -errno.
 */
int root_state_set(struct root_state *st, const char *path, const char *value);

/* root_state_end() - tell the watchdog to restore our record now, and wait until it has. */
void root_state_end(struct root_state *st);

#endif
