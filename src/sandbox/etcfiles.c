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
 *   - missing: /etc is covered by a read-only tmpfs mirror holding the missing files, the
 *     original's symlinks, and a clone of each of its other entries (mirror_etc()).
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

#include <dirent.h>
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

/* Recreate the entry @name of @from in @mirror: a symlink as it is, anything else as an empty
 * placeholder for the clone moved onto it.  Return: 0 or -errno. */
static int mirror_entry(int from, const char *name, int mirror)
{
	char link[PATH_MAX];
	struct stat st;
	ssize_t n;

	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return 0;
	if (fstatat(from, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return mkdirat(mirror, name, 0755) < 0 ? -errno : 0;
	if (!S_ISLNK(st.st_mode))
		return store_file(mirror, name, NULL);
	n = readlinkat(from, name, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = '\0';
	return symlinkat(link, mirror, name) < 0 ? -errno : 0;
}

/*
 * mirror_etc() - make the @files marked @missing appear in ETC_DIR: ETC_DIR is covered by a new
 * read-only tmpfs holding them, the original's symlinks (recreated) and, for every other entry, a
 * placeholder with a clone of the original entry (and whatever is mounted below it) moved onto it.
 * Not overlayfs: it refuses a lower layer with locked submounts, which /etc has in a container
 * (bind-mounted resolv.conf, hosts) and in any mount namespace of a user namespace.
 * Fails with one line.
 */
static void mirror_etc(const struct etc_file *files, const bool *missing, int nfiles,
		       struct sandbox_shared *sh)
{
	const char *step = "clone it";
	int orig, mirror = -1, fd, r = 0;
	struct dirent *e;
	DIR *d = NULL;

	orig = (int)syscall(SYS_open_tree, AT_FDCWD, ETC_DIR, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (orig < 0)
		r = -errno;
	if (!r) {
		step = "create its mirror";
		if ((mirror = store_new()) < 0)
			r = mirror;
	}
	for (int i = 0; i < nfiles && !r; i++)
		if (missing[i])
			r = store_file(mirror, strrchr(files[i].path, '/') + 1, files[i].text);
	if (!r && ((fd = openat(orig, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || !(d = fdopendir(fd))))
		r = -errno;
	if (r || !d)
		fail(sh, "cannot place the child's name files in " ETC_DIR " (%s): %s", step,
		     strerror(r ? -r : EIO));
	while (!r && (e = readdir(d)) != NULL)
		r = mirror_entry(dirfd(d), e->d_name, mirror);
	if (!r) {
		step = "mount its mirror";
		if ((r = store_seal(mirror)) == 0 &&
		    syscall(SYS_move_mount, mirror, "", AT_FDCWD, ETC_DIR, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			r = -errno;
	}
	if (!r)
		rewinddir(d);
	while (!r && (e = readdir(d)) != NULL) {
		char path[PATH_MAX];
		struct stat st;
		int t;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISLNK(st.st_mode))
			continue;
		step = e->d_name;
		snprintf(path, sizeof(path), ETC_DIR "/%s", e->d_name);
		t = (int)syscall(SYS_open_tree, orig, e->d_name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
		if (t < 0 || syscall(SYS_move_mount, t, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			r = -errno;
		if (t >= 0)
			close(t);
	}
	if (r)
		fail(sh, "cannot place the child's name files in " ETC_DIR " (%s): %s", step, strerror(-r));
	closedir(d);
	close(mirror);
	close(orig);
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
	int store, r, nreal = 0;

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
		if (!missing[i] && (r = store_file(store, name, files[i].text)) < 0)
			fail(sh, "cannot write the child's %s: %s", files[i].path, strerror(-r));
	}
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
		mirror_etc(files, missing, NFILES, sh);
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
