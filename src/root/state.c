/* SPDX-License-Identifier: MIT */
/*
 * state — host changes that the kernel cannot undo by itself (forwarding sysctls), recorded before
 * they are made, and the watchdog that undoes them.
 *
 * ROOT_STATE_DIR holds one record per live --root run, "slot-<n>": lines "<sysctl path> <value to
 * restore>".  The run holds an exclusive flock on its record from its creation on; the watchdog
 * shares that open file, so the lock lives until both P and the watchdog are gone: a record whose
 * lock can be taken belongs to a dead run.  Every read or change of the records happens under an
 * flock of the directory itself, which is removed when its last record goes (nothing stays on the
 * host); a locker that finds its directory removed meanwhile starts again.
 *
 * Sharing: a run that finds a value already at its target, changed by a live run, records that
 * run's value to restore; a record is restored only for paths no other live record names, so the
 * last run to leave restores the value from before the first.
 *
 * States of the watchdog W (forked by P right after the record exists, before any change):
 *   WAIT     a new session, terminal signals ignored; until P asks (a byte), P's socket closes
 *            or P's pidfd says P died (SIGKILL included)
 *   RESTORE  under the directory lock: each path of our record that no other live record names
 *            gets its value back; the record is deleted; the directory too when empty
 *   EXIT     P (when alive) reaps W
 */
#include "root/internal.h"
#include "root/record.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "backend/netplan.h"
#include "netlink/nl.h"
#include "util/explain.h"
#include "util/log.h"
#include "util/proc.h"

#define REC_MAX 8192
#define VAL_MAX ROOT_REC_VAL_MAX

/*
 * Records of every network namespace share the directory, but a sysctl path means the namespace of
 * whoever opens it: each record names its run's namespace (inode and cookie, root/netns.h), and
 * only records of our own namespace are shared or restored by us.  A dead run's record whose
 * namespace is gone is deleted without restoring anything: its sysctls died with it.
 */
static struct root_netns self_ns;

/* Does live record text @rec name our namespace?  Live, its namespace exists: the inode says it. */
static bool live_ours(const char *rec)
{
	struct root_netns id;

	return root_rec_netns(rec, &id) && id.dev == self_ns.dev && id.ino == self_ns.ino &&
	       (!id.cookie || !self_ns.cookie || id.cookie == self_ns.cookie);
}

/* Lock the records' directory (creating it).  Return: its fd, or -errno. */
static int lock_dir(void)
{
	for (int tries = 0; tries < 100; tries++) {
		struct stat a, b;
		int fd;

		if (mkdir(ROOT_STATE_DIR, 0700) < 0 && errno != EEXIST)
			return -errno;
		fd = open(ROOT_STATE_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			return -errno;
		}
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR) {
				int e = errno;

				close(fd);
				return -e;
			}
		/* Removed (and maybe made again) by the last run to leave while we waited: again. */
		if (fstat(fd, &a) == 0 && lstat(ROOT_STATE_DIR, &b) == 0 && a.st_ino == b.st_ino &&
		    a.st_dev == b.st_dev && a.st_nlink > 0) {
			if (a.st_uid != 0 || (a.st_mode & 022)) {
				close(fd);
				return -EPERM;
			}
			return fd;
		}
		close(fd);
	}
	return -EAGAIN;
}

/* Unlock, removing the directory when no record is left in it. */
static void unlock_dir(int dfd)
{
	rmdir(ROOT_STATE_DIR);   /* ENOTEMPTY while records remain */
	close(dfd);
}

/* The whole of @fd from its start, NUL-terminated, into @buf.  Return: its length or -1. */
static ssize_t read_all(int fd, char *buf, size_t max)
{
	size_t n = 0;

	for (;;) {
		ssize_t r = pread(fd, buf + n, max - 1 - n, (off_t)n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0 || n + (size_t)r >= max - 1) {
			n += (size_t)(r > 0 ? r : 0);
			break;
		}
		n += (size_t)r;
	}
	buf[n] = '\0';
	return (ssize_t)n;
}

/* A record's lock is free (its run is gone): true, and then we hold it on @fd. */
static bool record_is_stale(int fd)
{
	return flock(fd, LOCK_EX | LOCK_NB) == 0;
}

/*
 * live_value() - the value another live run (not @self) recorded for @path, into @val.
 * Called under the directory lock.  Return: true when one did.
 */
static bool live_value(int dfd, const char *self, const char *path, char *val, size_t vlen)
{
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	struct dirent *de;
	bool found = false;
	char rec[REC_MAX];

	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return false;
	}
	rewinddir(d);
	while (!found && (de = readdir(d))) {
		int fd;

		if (strncmp(de->d_name, "slot-", 5) != 0 || strcmp(de->d_name, self) == 0)
			continue;
		fd = openat(dfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		if (!record_is_stale(fd) && read_all(fd, rec, sizeof(rec)) >= 0 && live_ours(rec))
			found = root_rec_value(rec, path, val, vlen);
		close(fd);
	}
	closedir(d);
	return found;
}

/* Read a sysctl's value (first line, trimmed).  Return: 0 or -errno. */
static int read_value(const char *path, char *val, size_t vlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, val, vlen - 1);
	close(fd);
	if (n < 0)
		return -errno;
	val[n] = '\0';
	val[strcspn(val, "\n")] = '\0';
	return 0;
}

/* A policy rule or a routing table of a record (root_rec_parse() accepted it): deleted, emptied.
 * They are this run's own (per-slot), never shared. */
static void restore_routing(struct nl **nl, const struct root_rec_line *rl)
{
	char src[INET6_ADDRSTRLEN] = "";
	int r, n4 = 0, n6 = 0;

	if (!*nl && !(*nl = nl_open())) {
		log_warn("cannot undo a --root routing change (table %u): %s", rl->table, strerror(errno));
		return;
	}
	if (rl->kind == ROOT_REC_RULE) {
		inet_ntop(rl->family, rl->addr, src, sizeof(src));
		r = nl_rule_src(*nl, false, rl->family, rl->addr, rl->table, rl->prio);
		if (r < 0 && r != -ENOENT)
			log_warn("cannot delete the policy rule \"from %s lookup %u\" (priority %u): %s", src,
				 rl->table, rl->prio, strerror(-r));
		else if (r == 0)
			log_debug("host restored: rule from %s lookup %u (priority %u) deleted", src, rl->table,
				  rl->prio);
	} else {
		r = nl_table_routes(*nl, AF_INET, rl->table, true, &n4);
		if (r == 0)
			r = nl_table_routes(*nl, AF_INET6, rl->table, true, &n6);
		if (r < 0)
			log_warn("cannot empty routing table %u: %s", rl->table, strerror(-r));
		else
			log_debug("host restored: routing table %u emptied (%d routes)", rl->table, n4 + n6);
	}
}

/*
 * Restore what record @name (@fd, whose lock we hold) names and delete it.  Under the directory lock.
 * Rules go first (no lookup may fall through an emptied table), then tables, then sysctls.
 */
static void restore_record(int dfd, const char *name, int fd)
{
	char rec[REC_MAX], other[VAL_MAX];
	struct nl *nl = NULL;

	for (int pass = 0; pass < 3; pass++) {
		if (read_all(fd, rec, sizeof(rec)) < 0)
			break;
		for (char *cur = rec, *l; (l = root_rec_next(&cur)) != NULL; ) {
			struct root_rec_line rl;
			enum root_rec_kind k = root_rec_parse(l, &rl);
			int r;

			if ((pass == 0 && k == ROOT_REC_RULE) || (pass == 1 && k == ROOT_REC_TABLE)) {
				restore_routing(&nl, &rl);
				continue;
			}
			if (pass != 2 || k != ROOT_REC_SYSCTL)
				continue;
			if (live_value(dfd, name, rl.path, other, sizeof(other))) {
				log_debug("host: %s stays changed: another childflow --root run still needs it", rl.path);
				continue;
			}
			r = proc_write_file(rl.path, rl.value);
			if (r < 0 && r != -ENOENT)
				log_warn("cannot restore %s to %s: %s", rl.path, rl.value, strerror(-r));
			else if (r == 0)
				log_debug("host restored: %s = %s", rl.path, rl.value);
		}
	}
	nl_close(nl);
	unlinkat(dfd, name, 0);
}

/* Restore and delete every record whose run is gone.  Under the directory lock. */
static void collect_stale(int dfd)
{
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	struct dirent *de;

	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	while ((de = readdir(d))) {
		char rec[REC_MAX];
		int fd;

		if (strncmp(de->d_name, "slot-", 5) != 0)
			continue;
		fd = openat(dfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		struct root_netns id;

		if (!record_is_stale(fd) || read_all(fd, rec, sizeof(rec)) < 0 || !root_rec_netns(rec, &id)) {
			close(fd);
			continue;
		}
		switch (root_netns_fate(&id, &self_ns)) {
		case ROOT_NETNS_OURS:
			log_debug("host: restoring what a dead childflow --root run left (%s)", de->d_name);
			restore_record(dfd, de->d_name, fd);
			break;
		case ROOT_NETNS_GONE:
			log_debug("host: %s is a dead childflow --root run's of a namespace that is gone: "
				  "deleted, nothing restored", de->d_name);
			unlinkat(dfd, de->d_name, 0);
			break;
		case ROOT_NETNS_ELSEWHERE:   /* left to a run there */
			break;
		}
		close(fd);
	}
	closedir(d);
}

/* W: wait for P's word or P's death, restore our record, exit. */
__attribute__((noreturn)) static void watchdog_main(struct root_state *st, int sock, pid_t p)
{
	static const int sigs[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE,
				    SIGUSR1, SIGUSR2, SIGWINCH };
	int pidfd, dfd, devnull;
	sigset_t none;

	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_IGN);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	setsid();
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, STDIN_FILENO);
		dup2(devnull, STDOUT_FILENO);
		close(devnull);
	}
	/* Only our record, P's socket and stderr: the command's pipes must not wait for us. */
	if (dup2(st->rec_fd, 3) < 0 || dup2(sock, 4) < 0)
		_exit(1);
	st->rec_fd = 3;
	sock = 4;
	syscall(SYS_close_range, 5u, ~0u, 0u);
	log_nonblocking();
	pidfd = (int)syscall(SYS_pidfd_open, p, 0);
	if (getppid() == p) {
		struct pollfd pf[2] = { { .fd = sock, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };

		while (poll(pf, pidfd >= 0 ? 2 : 1, -1) < 0 && errno == EINTR)
			;
	}
	dfd = lock_dir();
	if (dfd < 0) {
		log_warn("cannot restore the host's forwarding settings: cannot lock %s: %s", ROOT_STATE_DIR,
			 strerror(-dfd));
		_exit(1);
	}
	restore_record(dfd, st->rec_name, st->rec_fd);
	unlock_dir(dfd);
	_exit(0);
}

int root_state_begin(struct root_state *st, bool (*slot_ok)(unsigned int slot, void *arg), void *arg)
{
	int sp[2], dfd;
	pid_t p = getpid();

	if (root_netns_self(&self_ns) < 0)
		memset(&self_ns, 0, sizeof(self_ns));   /* no record can name inode 0: nothing is ours */
	dfd = lock_dir();
	memset(st, 0, sizeof(*st));
	st->rec_fd = st->wd_fd = -1;
	if (dfd < 0) {
		explain_fail("root_host", -dfd, "cannot lock " ROOT_STATE_DIR " for the host changes of --root");
		return -1;
	}
	collect_stale(dfd);
	for (st->slot = 0; st->slot < NETPLAN_UPLINK_SLOTS; st->slot++) {
		struct netplan_uplink u;

		snprintf(st->rec_name, sizeof(st->rec_name), "slot-%u", st->slot);
		netplan_uplink_init(&u, st->slot);
		if (if_nametoindex(u.host_ifname))
			continue;   /* still there: a run that just ended, its namespace not yet gone */
		if (!slot_ok(st->slot, arg))
			continue;   /* its addresses overlap the host's */
		st->rec_fd = openat(dfd, st->rec_name, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
				    0600);
		if (st->rec_fd >= 0 || errno != EEXIST)
			break;
	}
	if (st->rec_fd < 0 || flock(st->rec_fd, LOCK_EX | LOCK_NB) < 0) {
		int e = st->slot >= NETPLAN_UPLINK_SLOTS ? EADDRINUSE : errno;   /* slot_ok() says why */

		if (e != EADDRINUSE)
			explain_fail("root_host", e, "cannot record the host changes of --root in " ROOT_STATE_DIR);
		if (st->rec_fd >= 0) {
			close(st->rec_fd);
			unlinkat(dfd, st->rec_name, 0);
		}
		unlock_dir(dfd);
		errno = e;
		return -1;
	}
	/* The first line as older versions write it: they share and restore by it. */
	dprintf(st->rec_fd, "# childflow --root, pid %d, netns %llu:%llu\nnetns %llu %llu %llu\n", (int)p,
		(unsigned long long)self_ns.dev, (unsigned long long)self_ns.ino, (unsigned long long)self_ns.dev,
		(unsigned long long)self_ns.ino, (unsigned long long)self_ns.cookie);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0 || (st->watchdog = fork()) < 0) {
		explain_fail("root_host", errno, "cannot start the watchdog that restores the host for --root");
		close(st->rec_fd);
		unlinkat(dfd, st->rec_name, 0);
		unlock_dir(dfd);
		return -1;
	}
	if (st->watchdog == 0) {
		close(dfd);
		close(sp[0]);
		watchdog_main(st, sp[1], p);
	}
	close(sp[1]);
	st->wd_fd = sp[0];
	unlock_dir(dfd);
	log_debug("host: slot %u, record %s/%s, watchdog pid %d", st->slot, ROOT_STATE_DIR, st->rec_name,
		  (int)st->watchdog);
	return 0;
}

int root_state_set(struct root_state *st, const char *path, const char *value)
{
	char cur[VAL_MAX], orig[VAL_MAX];
	int dfd = lock_dir(), r;

	if (dfd < 0)
		return dfd;
	if ((r = read_value(path, cur, sizeof(cur))) < 0) {
		unlock_dir(dfd);
		return r;
	}
	if (!strcmp(cur, value)) {
		if (live_value(dfd, st->rec_name, path, orig, sizeof(orig))) {
			dprintf(st->rec_fd, "%s %s\n", path, orig);
			log_debug("host: %s is %s already (another childflow --root run set it); the last run to "
				  "end restores %s", path, cur, orig);
		} else {
			log_debug("host: %s is %s already: left as it is", path, cur);
		}
		unlock_dir(dfd);
		return 0;
	}
	/* Recorded first: whatever happens next, the watchdog restores it. */
	if (dprintf(st->rec_fd, "%s %s\n", path, cur) < 0) {
		r = -errno;
		unlock_dir(dfd);
		return r;
	}
	r = proc_write_file(path, value);
	if (r == 0)
		log_debug("host change: %s %s -> %s (restored at exit)", path, cur, value);
	unlock_dir(dfd);
	return r;
}

void root_state_end(struct root_state *st)
{
	if (st->watchdog <= 0)
		return;
	if (send(st->wd_fd, "x", 1, MSG_NOSIGNAL) < 0)
		log_debug("host: the watchdog did not take our word: %s", strerror(errno));
	while (waitpid(st->watchdog, NULL, 0) < 0 && errno == EINTR)
		;
	st->watchdog = 0;
	close(st->wd_fd);
	close(st->rec_fd);
	st->wd_fd = st->rec_fd = -1;
}

int root_state_note(struct root_state *st, const char *line)
{
	int dfd = lock_dir(), r = 0;

	if (dfd < 0)
		return dfd;
	if (dprintf(st->rec_fd, "%s\n", line) < 0)
		r = -errno;
	unlock_dir(dfd);
	return r;
}
