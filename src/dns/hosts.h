/* SPDX-License-Identifier: MIT */
/*
 * dns/hosts — the child's /etc/hosts with --hosts-file: the override first, then the host's lines
 * for other names (the reference's merge rule, upstream-childflow-behaviour.md §2.4).
 *
 * A line is "ADDRESS NAME..." with `#` starting a comment; fields are separated by blanks (space,
 * tab, CR, FF, VT), as glibc's files backend reads them.  The merged text is the override (a
 * newline added when it lacks a final one), followed by every host line that is blank, a comment,
 * has no hostname, or has none of its hostnames among the override's (compared ASCII
 * case-insensitively, as the resolver compares names).  Host lines are kept verbatim.
 */
#ifndef CHILDFLOW_DNS_HOSTS_H
#define CHILDFLOW_DNS_HOSTS_H

#include <stddef.h>

#define HOSTS_FILE_MAX (4u << 20)       /* --hosts-file: larger is refused */
#define HOSTS_HOST_FILE_MAX (16u << 20) /* the host's /etc/hosts: larger is a setup error */

/*
 * hosts_load() - read the whole of @path, which must be a regular file of at most @max bytes
 * without NUL bytes (never blocks on a FIFO: it is refused before any read).
 * @len: set to the length read.
 * Return: the NUL-terminated text (free() it), or NULL with errno set: the open()/read() error,
 * EINVAL (not a regular file), EFBIG (larger than @max), EILSEQ (contains a NUL byte), ENOMEM.
 */
char *hosts_load(const char *path, size_t max, size_t *len);

/*
 * hosts_merge() - the child's /etc/hosts: @over (@olen bytes) merged over @base (@blen bytes)
 * as described above.  Neither needs to be NUL-terminated; only '\n' ends a line, every other
 * byte is copied as it is.
 * @outlen: set to the length of the result (excluding its terminating NUL).
 * Return: the NUL-terminated text (free() it), or NULL when out of memory.
 */
char *hosts_merge(const char *over, size_t olen, const char *base, size_t blen, size_t *outlen);

#endif
