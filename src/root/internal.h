/* SPDX-License-Identifier: MIT */
/* The records of host changes the kernel cannot undo, and the watchdog (state.c); internal to src/root/. */
#ifndef CHILDFLOW_ROOT_INTERNAL_H
#define CHILDFLOW_ROOT_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

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
 * no record and whose uplink name is no link, create our record and fork the watchdog.
 * Return: 0, or -1 after one line.
 */
int root_state_begin(struct root_state *st);

/*
 * root_state_set() - set the sysctl file @path to @value, recording its previous value first
 * (or joining the record of a live run that changed it already).  Return: 0 or -errno.
 */
int root_state_set(struct root_state *st, const char *path, const char *value);

/* root_state_end() - tell the watchdog to restore our record now, and wait until it has. */
void root_state_end(struct root_state *st);

#endif
