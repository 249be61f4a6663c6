/* SPDX-License-Identifier: MIT */
/*
 * idmap_apply — carry out an id plan (idmap.c computes it): write /proc/PID/{uid,gid}_map, read
 * /etc/subuid and /etc/subgid, find and run newuidmap/newgidmap.  Runs in P (G's maps) and in G
 * (C's maps, always written directly: G is root in U1).
 *
 * P's choice for G, in order:  root caller -> the root plan (full identity maps)
 *                              "helper" or auto with subordinate ids -> newuidmap/newgidmap;
 *                                  a half-failed pair is finished with a single id (auto only)
 *                              otherwise -> the direct plan (single ids, setgroups denied)
 */
#include "sandbox/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "util/explain.h"
#include "util/log.h"
#include "util/proc.h"

/* /etc/subuid is read whole; beyond this size it is surely not a subuid file. */
#define SUBID_FILE_MAX (64u << 20)

int idmap_write_maps(pid_t pid, const char *uid_map, const char *gid_map, bool deny_setgroups)
{
	char path[64];
	int r;

	if (deny_setgroups) {
		snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
		r = proc_write_file(path, "deny");
		if (r < 0 && r != -ENOENT)
			return r;
	}
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	if ((r = proc_write_file(path, uid_map)) < 0)
		return r;
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
	return proc_write_file(path, gid_map);
}

bool idmap_find_helper(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");
	char buf[4096];

	snprintf(buf, sizeof(buf), "%s", path && *path ? path : "/usr/bin:/bin");
	for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		snprintf(out, len, "%s/%s", dir, name);
		if (access(out, X_OK) == 0)
			return true;
	}
	return false;
}

/* Look the caller up in one subordinate id file.  Return: 1 found, 0 not, -errno unreadable. */
static int subid_file_lookup(const char *path, const char *name, unsigned long id, struct subid_range *r)
{
	char *text = proc_read_text(path, SUBID_FILE_MAX);
	bool found;

	if (!text)   /* missing or unreadable: no ranges; too big to read whole: say so */
		return errno == EFBIG || errno == ENOMEM ? -errno : 0;
	found = subid_lookup(text, name, id, r);
	free(text);
	return found;
}

int idmap_caller_subids(struct subid_range *su, struct subid_range *sg, const char **file)
{
	static const char *const files[2] = { "/etc/subuid", "/etc/subgid" };
	struct passwd *pw = getpwuid(getuid());
	const char *name = pw ? pw->pw_name : NULL;

	for (int i = 0; i < 2; i++) {
		int r = subid_file_lookup(files[i], name, i ? getgid() : getuid(), i ? sg : su);

		*file = files[i];
		if (r <= 0)
			return r;
	}
	return 1;
}

/* Start newuidmap/newgidmap PID 0 ID 1 1 START COUNT with the caller's signal mask.  Return: its pid or -1. */
static pid_t spawn_idmap_helper(const char *helper, pid_t pid, unsigned long id,
				const struct subid_range *r, bool quiet, const sigset_t *mask)
{
	char exe[4096], a_pid[16], a_id[24], a_start[24], a_count[24];
	pid_t k;

	if (!idmap_find_helper(helper, exe, sizeof(exe)))
		return -1;
	snprintf(a_pid, sizeof(a_pid), "%d", (int)pid);
	snprintf(a_id, sizeof(a_id), "%lu", id);
	snprintf(a_start, sizeof(a_start), "%lu", r->start);
	snprintf(a_count, sizeof(a_count), "%lu", r->count);
	k = fork();
	if (k == 0) {
		char *argv[] = { (char *)helper, a_pid, "0", a_id, "1", "1", a_start, a_count, NULL };

		/* P blocks the signals it forwards; a helper stuck on slow NSS must stay interruptible. */
		sigprocmask(SIG_SETMASK, mask, NULL);
		if (quiet) {
			int dn = open("/dev/null", O_WRONLY | O_CLOEXEC);

			if (dn >= 0)
				dup2(dn, STDERR_FILENO);
		}
		execv(exe, argv);
		_exit(127);
	}
	return k;
}

/* Wait for a helper started above.  Return: 0 when it succeeded. */
static int wait_idmap_helper(pid_t k)
{
	int st;

	if (k < 0)
		return -1;
	while (waitpid(k, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Only one of the helpers worked: finish the other map with a single id (a map is written once). */
static int finish_half_mapped(pid_t pid, bool uid_done, struct idmap_plan *plan)
{
	struct idmap_plan direct;
	char path[64];

	idmap_plan_make(&direct, IDMAP_DIRECT, getuid(), getgid(), NULL, NULL);
	if (uid_done) {
		memcpy(plan->outer_gid, direct.outer_gid, sizeof(plan->outer_gid));
		memcpy(plan->inner_gid, direct.inner_gid, sizeof(plan->inner_gid));
		snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
		proc_write_file(path, "deny");
		snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
		return proc_write_file(path, plan->outer_gid);
	}
	memcpy(plan->outer_uid, direct.outer_uid, sizeof(plan->outer_uid));
	memcpy(plan->inner_uid, direct.inner_uid, sizeof(plan->inner_uid));
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	return proc_write_file(path, plan->outer_uid);
}

int idmap_apply_gateway(pid_t pid, enum idmap_choice choice, const sigset_t *caller_mask,
			struct idmap_plan *plan)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	struct subid_range su, sg;
	const char *file;
	char what[160];
	int r, have;

	if (geteuid() == 0 && uid == 0) {
		idmap_plan_make(plan, IDMAP_ROOT, 0, 0, NULL, NULL);
		r = idmap_write_maps(pid, plan->outer_uid, plan->outer_gid, false);
		goto done;
	}
	have = choice == IDMAP_CHOOSE_DIRECT ? 0 : idmap_caller_subids(&su, &sg, &file);
	if (have < 0) {
		snprintf(what, sizeof(what), "cannot read %s", file);
		explain_fail("uidmap", -have, what);
		return -1;
	}
	if (have && idmap_plan_make(plan, IDMAP_HELPER, uid, gid, &su, &sg) == 0) {
		bool quiet = choice != IDMAP_CHOOSE_HELPER;
		/* Both helpers run at once: each is a fork and exec of a setuid binary. */
		pid_t ku = spawn_idmap_helper("newuidmap", pid, uid, &su, quiet, caller_mask);
		pid_t kg = spawn_idmap_helper("newgidmap", pid, gid, &sg, quiet, caller_mask);
		int ru = wait_idmap_helper(ku), rg = wait_idmap_helper(kg);

		if (ru == 0 && rg == 0)
			return 0;
		if (choice != IDMAP_CHOOSE_HELPER && (ru == 0 || rg == 0)) {
			r = finish_half_mapped(pid, ru == 0, plan);
			goto done;
		}
	}
	if (choice == IDMAP_CHOOSE_HELPER) {
		explain_fail("uidmap", 0, "cannot map ids with newuidmap/newgidmap (CHILDFLOW_UIDMAP=helper)");
		return -1;
	}
	idmap_plan_make(plan, IDMAP_DIRECT, uid, gid, NULL, NULL);
	r = idmap_write_maps(pid, plan->outer_uid, plan->outer_gid, true);
done:
	if (r < 0) {
		snprintf(what, sizeof(what), "cannot map your uid %u/gid %u into the sandbox's user namespace",
			 (unsigned)uid, (unsigned)gid);
		explain_fail("uidmap", -r, what);
		return -1;
	}
	return 0;
}
