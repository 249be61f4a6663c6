/* SPDX-License-Identifier: MIT */
/*
 * etcfiles — C: what the command sees as files for name resolution, placed in C's own mount
 * namespace (private since child_main() made it so), never on the host.
 *
 * The contents (sandbox_config's resolv_conf, hosts and nsswitch texts) are written to a tmpfs
 * that is never attached anywhere: fsopen()/fsmount() give a detached mount, the files are created
 * through its fd, and the mount is made read-only before anything is taken from it.  Each file is
 * then cloned out of it (open_tree(OPEN_TREE_CLONE)) and moved onto its path with move_mount()
 * *without* following a final symlink, so the mount covers the path itself:
 *   - a regular file, or a mount on it (a container's bind-mounted resolv.conf): covered;
 *   - a symlink, dangling or not (systemd's stub-resolv.conf, NixOS's /etc/static chain): the link
 *     itself is covered, its target is neither needed nor touched;
 *   - missing: the directory (/etc) becomes a read-only overlay whose upper lower layer holds the
 *     missing files, with the directory's own submounts moved back on top (open_tree clones taken
 *     before the overlay went on).
 * When P dies, C and its mount namespace die with it; a detached tmpfs has no path, so nothing is
 * ever left on the host, not even after SIGKILL.
 *
 * Name-service endpoints that would answer lookups around DNS packets are covered too, when they
 * exist: systemd-resolved's /run/systemd/resolve/ (varlink io.systemd.Resolve and friends; a
 * resolv.conf or stub-resolv.conf there is kept, with the child's content), nscd's /run/nscd/
 * and /var/run/nscd/, avahi's /run/avahi-daemon/socket, and the D-Bus system bus socket (which
 * carries systemd-resolved's D-Bus API).  A directory gets an empty read-only directory over it, a
 * socket an empty regular file (connect() is refused).
 */
#include "sandbox/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "util/log.h"
#include "util/proc.h"

#define ETC_DIR "/etc"
#define RESOLVED_DIR "/run/systemd/resolve"
#define SUBMOUNTS_MAX 64
#define MOUNTINFO_MAX (4u << 20)

/* The name-service endpoints hidden inside (see the top of this file). */
static const char *const hidden[] = {
	RESOLVED_DIR,
	"/run/nscd",
	"/var/run/nscd",
	"/run/avahi-daemon/socket",
	"/run/dbus/system_bus_socket",
};

/* The resolv.conf files kept in systemd-resolved's directory when they exist there. */
static const char *const resolved_files[] = { "resolv.conf", "stub-resolv.conf" };

struct etc_file {
	const char *path;             /* under ETC_DIR */
	const char *text;
};

/* One clear line, then setup failure. */
__attribute__((noreturn, format(printf, 2, 3)))
static void fail(struct sandbox_shared *sh, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s", msg);
	sandbox_setup_fail(sh);
}

static int write_all(int fd, const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(fd, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Create @name under @dirfd with @text (NULL: empty, mode 0).  Return: 0 or -errno. */
static int store_file(int dirfd, const char *name, const char *text)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, text ? 0644 : 0);
	int r;

	if (fd < 0)
		return -errno;
	r = text ? write_all(fd, text, strlen(text)) : 0;
	close(fd);
	return r;
}

/* A detached tmpfs (no path anywhere).  Return: its mount fd, or -errno. */
static int store_new(void)
{
	int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
	int m = -1;

	if (fs < 0)
		return -errno;
	if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "mode", "0755", 0) == 0 &&
	    syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
		m = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
				 MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
	if (m < 0)
		m = -errno;
	close(fs);
	return m;
}

static int store_seal(int store)
{
	struct mount_attr a = { .attr_set = MOUNT_ATTR_RDONLY };

	if (syscall(SYS_mount_setattr, store, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof(a)) < 0)
		return -errno;
	return 0;
}

/* Put a clone of @name (under the store @store) over @target, itself (a final symlink is not
 * followed).  Return: 0 or -errno. */
static int cover(int store, const char *name, const char *target)
{
	int t = (int)syscall(SYS_open_tree, store, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	int r = 0;

	if (t < 0)
		return -errno;
	if (syscall(SYS_move_mount, t, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		r = -errno;
	close(t);
	return r;
}

/* Undo mountinfo's octal escapes (\040 and friends) in place. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * submounts() - the outermost mount points strictly below @dir in our mount namespace, sorted.
 * Return: how many were put in @out (strdup'ed), or -errno (-E2BIG past @max).
 */
static int submounts(const char *dir, char **out, int max)
{
	char *info = proc_read_text("/proc/self/mountinfo", MOUNTINFO_MAX), *save = NULL, *line;
	size_t dlen = strlen(dir);
	int n = 0, kept = 0;

	if (!info)
		return -errno;
	for (line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f = line, *mp;

		/* id parent major:minor root MOUNT_POINT ... */
		for (int i = 0; i < 4 && f; i++)
			f = strchr(f, ' ') ? strchr(f, ' ') + 1 : NULL;
		if (!f)
			continue;
		mp = f;
		f = strchr(mp, ' ');
		if (f)
			*f = '\0';
		unescape(mp);
		if (strncmp(mp, dir, dlen) != 0 || mp[dlen] != '/' || !mp[dlen + 1])
			continue;
		if (n == max) {
			n = -E2BIG;
			break;
		}
		if (!(out[n++] = strdup(mp))) {
			n = -ENOMEM;
			break;
		}
	}
	free(info);
	if (n < 0) {
		for (int i = 0; i < max && out[i]; i++)
			free(out[i]);
		return n;
	}
	qsort(out, (size_t)n, sizeof(*out), cmp_str);
	/* Keep the outermost: a clone with AT_RECURSIVE carries what is below it (and duplicates). */
	for (int i = 0; i < n; i++) {
		size_t l = kept ? strlen(out[kept - 1]) : 0;

		if (kept && strncmp(out[i], out[kept - 1], l) == 0 && (out[i][l] == '/' || !out[i][l])) {
			free(out[i]);
			continue;
		}
		out[kept++] = out[i];
	}
	return kept;
}

/*
 * overlay_missing() - make @n files that do not exist under ETC_DIR appear there: ETC_DIR becomes
 * a read-only overlay of the store's directory @layer over the original, and the original's
 * submounts are moved back onto it.  Fails with one line.
 */
static void overlay_missing(int store, const char *layer, struct sandbox_shared *sh)
{
	char *mp[SUBMOUNTS_MAX] = { NULL };
	int clone[SUBMOUNTS_MAX];
	int n = submounts(ETC_DIR, mp, SUBMOUNTS_MAX), ofs = -1, om = -1, up = -1, low = -1;
	const char *step = "list its submounts";
	int err = 0;

	if (n < 0)
		fail(sh, "cannot place the child's name files in " ETC_DIR " (%s): %s", step, strerror(-n));
	for (int i = 0; i < n; i++)
		clone[i] = -1;
	step = "clone its submounts";
	for (int i = 0; i < n && !err; i++)
		if ((clone[i] = (int)syscall(SYS_open_tree, AT_FDCWD, mp[i],
					     OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)) < 0)
			err = errno;
	if (!err) {
		step = "open the layers";
		up = openat(store, layer, O_PATH | O_DIRECTORY | O_CLOEXEC);
		low = open(ETC_DIR, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (up < 0 || low < 0)
			err = errno;
	}
	if (!err) {
		/* Two lower layers and no upper one: a read-only overlay, no work directory needed. */
		step = "create an overlay (overlayfs in a user namespace needs Linux 5.11)";
		ofs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
		if (ofs < 0 ||
		    syscall(SYS_fsconfig, ofs, FSCONFIG_SET_FD, "lowerdir+", NULL, up) < 0 ||
		    syscall(SYS_fsconfig, ofs, FSCONFIG_SET_FD, "lowerdir+", NULL, low) < 0 ||
		    syscall(SYS_fsconfig, ofs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0 ||
		    (om = (int)syscall(SYS_fsmount, ofs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV)) < 0)
			err = errno;
	}
	if (!err) {
		step = "mount the overlay";
		if (syscall(SYS_move_mount, om, "", AT_FDCWD, ETC_DIR, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			err = errno;
	}
	for (int i = 0; i < n; i++) {
		if (!err && syscall(SYS_move_mount, clone[i], "", AT_FDCWD, mp[i],
				    MOVE_MOUNT_F_EMPTY_PATH) < 0) {
			err = errno;
			step = mp[i];
		}
		if (clone[i] >= 0)
			close(clone[i]);
	}
	if (err)
		fail(sh, "cannot place the child's name files in " ETC_DIR " (%s): %s", step, strerror(err));
	for (int i = 0; i < n; i++)
		free(mp[i]);
	close(ofs);
	close(om);
	close(up);
	close(low);
}

/* A hidden directory's replacement in the store: empty but for systemd-resolved's resolv.conf
 * files, which keep their names with the child's content.  Return: 0 or -errno. */
static int store_hidden_dir(int store, const char *name, const char *orig, const char *resolv_conf)
{
	int d, r = 0;

	if (mkdirat(store, name, 0755) < 0)
		return -errno;
	if (strcmp(orig, RESOLVED_DIR) != 0)
		return 0;
	d = openat(store, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (d < 0)
		return -errno;
	for (size_t i = 0; i < sizeof(resolved_files) / sizeof(resolved_files[0]) && !r; i++) {
		char path[PATH_MAX], *copy = NULL;
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", orig, resolved_files[i]);
		if (lstat(path, &st) < 0)
			continue;
		/* Without a text of ours (tests of the sandbox alone), the host's content is kept. */
		if (!resolv_conf && !(copy = proc_read_text(path, 1u << 20)))
			continue;
		r = store_file(d, resolved_files[i], resolv_conf ? resolv_conf : copy);
		free(copy);
	}
	close(d);
	return r;
}

void child_name_files(const struct sandbox_config *cfg, struct sandbox_shared *sh)
{
	const struct etc_file files[] = {
		{ ETC_DIR "/resolv.conf", cfg->resolv_conf },
		{ ETC_DIR "/hosts", cfg->hosts },
		{ ETC_DIR "/nsswitch.conf", cfg->nsswitch },
	};
	enum { NFILES = sizeof(files) / sizeof(files[0]), NHIDDEN = sizeof(hidden) / sizeof(hidden[0]) };
	char real[NHIDDEN][PATH_MAX];
	bool is_dir[NHIDDEN], missing[NFILES], any_missing = false;
	int store, r, nreal = 0, layer = -1;

	if ((store = store_new()) < 0)
		fail(sh, "cannot create a private tmpfs for the child's name files: %s", strerror(-store));
	for (int i = 0; i < NFILES; i++) {
		struct stat st;
		const char *name = strrchr(files[i].path, '/') + 1;

		missing[i] = false;
		if (!files[i].text)
			continue;
		if (lstat(files[i].path, &st) < 0) {
			if (errno != ENOENT)
				fail(sh, "cannot look at %s: %s", files[i].path, strerror(errno));
			missing[i] = any_missing = true;
		} else if (S_ISDIR(st.st_mode)) {
			fail(sh, "cannot give the child its own %s: it is a directory on this host",
			     files[i].path);
		}
		if (missing[i] && layer < 0 &&
		    (mkdirat(store, "etc", 0755) < 0 ||
		     (layer = openat(store, "etc", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0))
			fail(sh, "cannot write the child's %s: %s", files[i].path, strerror(errno));
		if ((r = store_file(missing[i] ? layer : store, name, files[i].text)) < 0)
			fail(sh, "cannot write the child's %s: %s", files[i].path, strerror(-r));
	}
	if (layer >= 0)
		close(layer);
	/* The endpoints that exist, each once (/var/run is usually a link to /run). */
	for (int i = 0; i < NHIDDEN; i++) {
		struct stat st;
		char name[32];
		bool dup = false;

		if (lstat(hidden[i], &st) < 0) {
			if (errno == ENOENT || errno == ENOTDIR)
				continue;
			fail(sh, "cannot look at %s: %s", hidden[i], strerror(errno));
		}
		if (!realpath(hidden[i], real[nreal]))
			fail(sh, "cannot resolve %s: %s", hidden[i], strerror(errno));
		for (int j = 0; j < nreal; j++)
			dup |= strcmp(real[j], real[nreal]) == 0;
		if (dup)
			continue;
		is_dir[nreal] = stat(real[nreal], &st) == 0 && S_ISDIR(st.st_mode);
		snprintf(name, sizeof(name), "hidden%d", nreal);
		r = is_dir[nreal] ? store_hidden_dir(store, name, real[nreal], cfg->resolv_conf)
				  : store_file(store, name, NULL);
		if (r < 0)
			fail(sh, "cannot prepare the cover of %s: %s", real[nreal], strerror(-r));
		nreal++;
	}
	if ((r = store_seal(store)) < 0)
		fail(sh, "cannot make the child's name files read-only: %s", strerror(-r));

	if (any_missing)
		overlay_missing(store, "etc", sh);
	for (int i = 0; i < NFILES; i++) {
		const char *name = strrchr(files[i].path, '/') + 1;

		if (files[i].text && !missing[i] && (r = cover(store, name, files[i].path)) < 0)
			fail(sh, "cannot give the child its own %s: %s", files[i].path, strerror(-r));
	}
	for (int i = 0; i < nreal; i++) {
		char name[32];

		snprintf(name, sizeof(name), "hidden%d", i);
		if ((r = cover(store, name, real[i])) < 0)
			fail(sh, "cannot hide the host's name service at %s: %s", real[i], strerror(-r));
	}
	close(store);
	log_debug("child: name files placed (%d name-service endpoints hidden)", nreal);
}
