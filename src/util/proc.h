/* SPDX-License-Identifier: MIT */
/* proc — small process and file helpers shared by childflow's processes. */
#ifndef CHILDFLOW_PROC_H
#define CHILDFLOW_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* proc_write_file() - write @value to @path (a /proc or /sys file).  Return: 0 or -errno. */
int proc_write_file(const char *path, const char *value);

/* proc_read_long() - the number at the start of @path.  Return: it, or -1 when unreadable. */
long proc_read_long(const char *path);

/*
 * proc_read_text() - read the whole of @path into a NUL-terminated buffer (at most @max bytes).
 * Return: the buffer (free() it), or NULL with errno set (EFBIG when the file exceeds @max).
 */
char *proc_read_text(const char *path, size_t max);

/* proc_die_with_parent() - SIGKILL us when our parent dies; exit at once if @parent already has. */
void proc_die_with_parent(pid_t parent);

#endif
