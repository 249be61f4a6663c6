/* SPDX-License-Identifier: MIT */
/*
 * idmap — uid/gid maps for the two user namespaces.
 *
 * U1 (gateway) maps the caller to 0 so that the gateway agent holds every capability over its own
 * network namespace.  U2 (child) maps the caller's own uid/gid back to themselves, so the command
 * runs as the caller and the files it writes belong to the caller.  Three plans:
 *   root    - the caller is root: both namespaces get the full identity map.
 *   direct  - written by childflow itself: one id each (setgroups denied, as the kernel requires).
 *   helper  - newuidmap/newgidmap with the caller's /etc/subuid and /etc/subgid ranges, so that the
 *             command also sees other ids (tools that switch users inside keep working).
 * All of this is pure computation, kept apart from the writing for unit tests.
 */
#ifndef CHILDFLOW_IDMAP_H
#define CHILDFLOW_IDMAP_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum idmap_mode { IDMAP_ROOT, IDMAP_DIRECT, IDMAP_HELPER };

/* What CHILDFLOW_UIDMAP asks for (unset or "auto": helper when possible, else direct). */
enum idmap_choice { IDMAP_CHOOSE_AUTO, IDMAP_CHOOSE_DIRECT, IDMAP_CHOOSE_HELPER };

/* idmap_choice_parse() - @s is NULL, "", "auto", "direct" or "helper".  Return: 0, or -EINVAL. */
int idmap_choice_parse(const char *s, enum idmap_choice *out);

struct subid_range {
	unsigned long start;
	unsigned long count;
};

struct idmap_plan {
	enum idmap_mode mode;
	bool setgroups_deny;
	char outer_uid[128], outer_gid[128];   /* U1 maps, as written to /proc/PID/{uid,gid}_map */
	char inner_uid[192], inner_gid[192];   /* U2 maps */
	struct subid_range subuid, subgid;     /* helper mode only */
};

/*
 * subid_lookup() - find the first range for @name or numeric @id in /etc/subuid-format @content.
 * Returns true and fills @out when found.
 */
bool subid_lookup(const char *content, const char *name, unsigned long id, struct subid_range *out);

/* Fill @plan for @mode.  @su/@sg are only read in helper mode.  Returns 0 or -EINVAL. */
int idmap_plan_make(struct idmap_plan *plan, enum idmap_mode mode, uid_t uid, gid_t gid,
		    const struct subid_range *su, const struct subid_range *sg);

/*
 * idmap_apply_gateway() - P gives G (@pid, in a fresh user namespace) its uid/gid maps according to
 * @choice, and settles the plan whose inner maps C gets.  Helpers run with @caller_mask.  The
 * doctor tries it on a throwaway namespace.  Return: 0, or -1 after explain_fail("uidmap", ...).
 */
int idmap_apply_gateway(pid_t pid, enum idmap_choice choice, const sigset_t *caller_mask,
			struct idmap_plan *plan);

/* idmap_find_helper() - @name (newuidmap, newgidmap) on $PATH, executable: its path in @out. */
bool idmap_find_helper(const char *name, char *out, size_t len);

/*
 * idmap_caller_subids() - the caller's ranges in /etc/subuid and /etc/subgid (by name or uid).
 * Return: 1 both found, 0 one is missing (*@file names it), -errno when *@file cannot be read.
 */
int idmap_caller_subids(struct subid_range *su, struct subid_range *sg, const char **file);

#endif
