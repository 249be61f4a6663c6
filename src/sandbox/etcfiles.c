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
 * The resolv.conf text follows the host's during the run (its search, domain and options lines):
 * before a tmpfs is sealed, a writable clone of it is taken and each file holding that text is
 * opened for writing through it (struct child_resolv).  Those fds go to P (with C_INIT_STARTED and
 * CMD_STARTED), which rewrites the same inodes in place; the command's read-only mounts of them
 * show the new text, and glibc re-reads the file when its mtime changes.  The fds are the only way
 * to write: the clone has no path, and init closes them before anything else runs.
 *
 * Host endpoints that would resolve names or open connections for the tree, around its network
 * controls, are covered too, when they exist: systemd-resolved's /run/systemd/resolve/ (varlink
 * io.systemd.Resolve and friends; a resolv.conf or stub-resolv.conf there is kept, with the child's
 * content), nscd's /run/nscd/ and /var/run/nscd/, avahi's /run/avahi-daemon/socket, the D-Bus
 * system bus socket (which carries systemd-resolved's D-Bus API), and the container engines' API
 * sockets (Docker, Podman, containerd; also those in the caller's runtime directory).  With
 * --isolate the caller's runtime directory itself ($XDG_RUNTIME_DIR: the session bus, Wayland,
 * agents) is covered.  A directory gets an empty read-only directory over it, a socket an empty
 * regular file (connect() is refused).  Each --allow-socket path is cloned before anything is
 * covered (child_allow_take()) and moved back onto its own path afterwards (child_allow_place()),
 * onto a placeholder prepared in the cover when it lies inside a hidden directory.
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

/* The host endpoints hidden inside (see the top of this file). */
static const char *const hidden[] = {
	RESOLVED_DIR,
	"/run/nscd",
	"/var/run/nscd",
	"/run/avahi-daemon/socket",
	"/run/dbus/system_bus_socket",
	"/var/run/docker.sock",
	"/run/docker.sock",
	"/run/podman",
	"/var/run/podman",
	"/run/containerd/containerd.sock",
	"/run/containerd/containerd.sock.ttrpc",
};

/* Under the caller's runtime directory (sandbox_config's runtime_dir), hidden too. */
static const char *const hidden_in_runtime_dir[] = { "podman", "docker.sock" };

/* Every path that may be hidden: the table, the runtime directory's, the runtime directory itself. */
#define HIDDEN_MAX (sizeof(hidden) / sizeof(hidden[0]) + sizeof(hidden_in_runtime_dir) / sizeof(hidden_in_runtime_dir[0]) + 2)

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

void child_resolv_close(struct child_resolv *rv)
{
	for (int i = 0; i < rv->n; i++)
		close(rv->fd[i]);
	rv->n = 0;
}

/* Open @name of the tmpfs @mnt for writing through a writable clone of it, into @rv (when it
 * exists; @rv full or @name missing: nothing).  Call before @mnt is sealed.  Return: 0 or -errno. */
static int resolv_take(int mnt, const char *name, struct child_resolv *rv)
{
	int rw, fd;

	if (rv->n >= CHILD_RESOLV_MAX)
		return 0;
	rw = (int)syscall(SYS_open_tree, mnt, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
	if (rw < 0)
		return -errno;
	fd = openat(rw, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	close(rw);   /* the open file keeps the clone alive, with no path anywhere */
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	rv->fd[rv->n++] = fd;
	return 0;
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
		       struct child_resolv *rv, struct sandbox_shared *sh)
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
		if (missing[i] && (r = store_file(mirror, strrchr(files[i].path, '/') + 1, files[i].text)) == 0 &&
		    strcmp(files[i].path, ETC_DIR "/resolv.conf") == 0)
			r = resolv_take(mirror, "resolv.conf", rv);
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

/* Make @rel (relative to @dirfd) exist as an empty file, with its missing parent directories, for a
 * clone to be moved onto.  Return: 0 or -errno. */
static int make_placeholder(int dirfd, const char *rel)
{
	char part[PATH_MAX];
	const char *slash;
	int d = dirfd, r = 0;

	while (!r && (slash = strchr(rel, '/')) != NULL) {
		int next;

		snprintf(part, sizeof(part), "%.*s", (int)(slash - rel), rel);
		rel = slash + 1;
		if (!part[0])
			continue;
		if ((mkdirat(d, part, 0755) < 0 && errno != EEXIST) ||
		    (next = openat(d, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
			r = -errno;
			break;
		}
		if (d != dirfd)
			close(d);
		d = next;
	}
	if (!r && *rel && (r = store_file(d, rel, NULL)) == -EEXIST)
		r = 0;
	if (d != dirfd)
		close(d);
	return r;
}

/* The @i-th path that may be hidden for @cfg, into @buf; false past the end.  The runtime
 * directory (with --isolate) comes first, so that what lies inside it is seen as covered already. */
static bool hidden_path(const struct sandbox_config *cfg, size_t i, char *buf, size_t len)
{
	const size_t nrt = sizeof(hidden_in_runtime_dir) / sizeof(hidden_in_runtime_dir[0]);
	const size_t ntab = sizeof(hidden) / sizeof(hidden[0]);

	if (i == 0) {
		snprintf(buf, len, "%s", cfg->isolate ? cfg->runtime_dir : "");
		return true;
	}
	if (--i < ntab) {
		snprintf(buf, len, "%s", hidden[i]);
		return true;
	}
	if ((i -= ntab) < nrt) {
		if (cfg->runtime_dir[0])
			snprintf(buf, len, "%s/%s", cfg->runtime_dir, hidden_in_runtime_dir[i]);
		else
			buf[0] = '\0';
		return true;
	}
	if (i == nrt) {
		/* On its own pty, the caller's terminal is not the command's to open by its path. */
		snprintf(buf, len, "%s", cfg->pty ? cfg->pty_hide : "");
		return true;
	}
	return false;
}

/* @path lies strictly inside the directory @dir. */
static bool path_inside(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	return strncmp(path, dir, n) == 0 && path[n] == '/';
}

void child_allow_take(const struct sandbox_config *cfg, struct child_allowed *al, struct sandbox_shared *sh)
{
	al->n = 0;
	for (int i = 0; i < cfg->n_allow_sockets; i++) {
		const char *p = cfg->allow_sockets[i];
		struct stat st;
		int t;

		if (stat(p, &st) < 0)
			fail(sh, "cannot let %s through (--allow-socket): %s", p, strerror(errno));
		if (!S_ISSOCK(st.st_mode))
			fail(sh, "cannot let %s through (--allow-socket): not a unix socket", p);
		if (!realpath(p, al->path[al->n]))
			fail(sh, "cannot resolve %s (--allow-socket): %s", p, strerror(errno));
		t = (int)syscall(SYS_open_tree, AT_FDCWD, al->path[al->n], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (t < 0)
			fail(sh, "cannot let %s through (--allow-socket): %s", p, strerror(errno));
		al->tree[al->n++] = t;
	}
}

void child_allow_place(struct child_allowed *al, struct sandbox_shared *sh)
{
	for (int i = 0; i < al->n; i++) {
		const char *p = al->path[i];
		struct stat st;
		int root, r = 0;

		if (lstat(p, &st) < 0) {
			/* Under a private /tmp or /dev/shm: make its place (the hidden directories'
			 * covers got theirs before they were sealed). */
			if ((root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
				r = -errno;
			else {
				r = make_placeholder(root, p + 1);
				close(root);
			}
		}
		if (!r && syscall(SYS_move_mount, al->tree[i], "", AT_FDCWD, p, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			r = -errno;
		if (r)
			fail(sh, "cannot let %s through (--allow-socket): %s", p, strerror(-r));
		close(al->tree[i]);
		al->tree[i] = -1;
	}
	if (al->n)
		log_debug("child: %d socket(s) let through on purpose", al->n);
}

void child_name_files(const struct sandbox_config *cfg, const struct child_allowed *al,
		      struct child_resolv *rv, struct sandbox_shared *sh)
{
	const struct etc_file files[] = {
		{ ETC_DIR "/resolv.conf", cfg->resolv_conf },
		{ ETC_DIR "/hosts", cfg->hosts },
		{ ETC_DIR "/nsswitch.conf", cfg->nsswitch },
	};
	enum { NFILES = sizeof(files) / sizeof(files[0]) };
	char real[HIDDEN_MAX][PATH_MAX], cand[PATH_MAX];
	bool is_dir[HIDDEN_MAX], missing[NFILES], any_missing = false;
	int store, r, nreal = 0;

	rv->n = 0;
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
	/* The endpoints that exist, each once (/var/run is usually a link to /run), and not inside a
	 * directory hidden already. */
	for (size_t i = 0; hidden_path(cfg, i, cand, sizeof(cand)); i++) {
		struct stat st;
		char name[32];
		bool dup = false;

		if (!cand[0])
			continue;
		if (lstat(cand, &st) < 0) {
			if (errno == ENOENT || errno == ENOTDIR || errno == EACCES)
				continue;
			fail(sh, "cannot look at %s: %s", cand, strerror(errno));
		}
		if (!realpath(cand, real[nreal]))
			fail(sh, "cannot resolve %s: %s", cand, strerror(errno));
		for (int j = 0; j < nreal; j++)
			dup |= strcmp(real[j], real[nreal]) == 0 || (is_dir[j] && path_inside(real[nreal], real[j]));
		if (dup)
			continue;
		is_dir[nreal] = stat(real[nreal], &st) == 0 && S_ISDIR(st.st_mode);
		snprintf(name, sizeof(name), "hidden%d", nreal);
		r = is_dir[nreal] ? store_hidden_dir(store, name, real[nreal], cfg->resolv_conf)
				  : store_file(store, name, NULL);
		/* A socket let through on purpose gets its place in the cover of its directory. */
		for (int k = 0; !r && is_dir[nreal] && k < al->n; k++) {
			int d;

			if (!path_inside(al->path[k], real[nreal]))
				continue;
			if ((d = openat(store, name, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
				r = -errno;
				break;
			}
			r = make_placeholder(d, al->path[k] + strlen(real[nreal]) + 1);
			close(d);
		}
		if (r < 0)
			fail(sh, "cannot prepare the cover of %s: %s", real[nreal], strerror(-r));
		nreal++;
	}
	/* The files with the resolv.conf text, writable for P (see the top of this file): /etc's, then
	 * systemd-resolved's copies in the cover of its directory. */
	r = cfg->resolv_conf ? resolv_take(store, "resolv.conf", rv) : 0;
	for (int i = 0; cfg->resolv_conf && i < nreal && !r; i++) {
		for (size_t k = 0; is_dir[i] && k < sizeof(resolved_files) / sizeof(resolved_files[0]) && !r; k++) {
			char name[64];

			snprintf(name, sizeof(name), "hidden%d/%s", i, resolved_files[k]);
			r = resolv_take(store, name, rv);
		}
	}
	if (r < 0)
		fail(sh, "cannot keep the child's resolv.conf writable for childflow: %s", strerror(-r));
	if ((r = store_seal(store)) < 0)
		fail(sh, "cannot make the child's name files read-only: %s", strerror(-r));

	if (any_missing)
		mirror_etc(files, missing, NFILES, rv, sh);
	for (int i = 0; i < NFILES; i++) {
		const char *name = strrchr(files[i].path, '/') + 1;

		if (files[i].text && !missing[i] && (r = cover(store, name, files[i].path)) < 0)
			fail(sh, "cannot give the child its own %s: %s", files[i].path, strerror(-r));
	}
	for (int i = 0; i < nreal; i++) {
		char name[32];

		snprintf(name, sizeof(name), "hidden%d", i);
		if ((r = cover(store, name, real[i])) < 0)
			fail(sh, "cannot hide the host's endpoint at %s: %s", real[i], strerror(-r));
	}
	close(store);
	log_debug("child: name files placed (%d host endpoints hidden)", nreal);
}
