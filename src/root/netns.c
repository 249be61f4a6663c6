/* SPDX-License-Identifier: MIT */
/* root/netns — a record's network namespace, and whether it still exists (see netns.h). */
#include "root/netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define MNTNS_SEEN_MAX 512

/* The cookie of the namespace a socket of ours lives in.  Return: it, or 0 when the kernel has none. */
static uint64_t own_cookie(void)
{
	uint64_t c = 0;
	socklen_t len = sizeof(c);
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return 0;
	if (getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, &c, &len) < 0 || len != sizeof(c))
		c = 0;
	close(s);
	return c;
}

int root_netns_self(struct root_netns *id)
{
	struct stat st;

	memset(id, 0, sizeof(*id));
	if (stat("/proc/self/ns/net", &st) < 0)
		return -errno;
	id->dev = (uint64_t)st.st_dev;
	id->ino = (uint64_t)st.st_ino;
	id->cookie = own_cookie();
	return 0;
}

/* Does the link at @path read "<kind>:[<n>]"?  Then *@n. */
static bool ns_link(const char *path, const char *kind, uint64_t *n)
{
	char buf[64], *end;
	size_t kl = strlen(kind);
	ssize_t l = readlink(path, buf, sizeof(buf) - 1);

	if (l <= 0)
		return false;
	buf[l] = '\0';
	if (strncmp(buf, kind, kl) != 0 || buf[kl] != ':' || buf[kl + 1] != '[')
		return false;
	errno = 0;
	*n = strtoull(buf + kl + 2, &end, 10);
	return !errno && end[0] == ']' && !end[1];
}

/* Open @path when it is the nsfs file @want names.  Return: the fd, or -1. */
static int open_ns(const char *path, const struct root_netns *want)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_ino != want->ino || (uint64_t)st.st_dev != want->dev) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The first link named "<dir>/<entry>[/<tail>]" that names @want's inode, opened.  Return: fd or -1. */
static int scan_links(const char *dir, const char *tail, const struct root_netns *want)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[320];
	uint64_t n;
	int fd = -1;

	if (!d)
		return -1;
	while (fd < 0 && (de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "%s/%s%s", dir, de->d_name, tail);
		if (ns_link(path, "net", &n) && n == want->ino)
			fd = open_ns(path, want);
	}
	closedir(d);
	return fd;
}

/* Undo mountinfo's octal escapes (\040 for a space...) in place. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
		    s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* An nsfs mount of @want in process @pid's mount namespace, opened through its root.  Return: fd or -1. */
static int scan_mounts(const char *pid, const struct root_netns *want)
{
	char path[300], line[1024], root[64];
	FILE *f;
	int fd = -1;

	snprintf(path, sizeof(path), "/proc/%s/mountinfo", pid);
	snprintf(root, sizeof(root), "net:[%llu]", (unsigned long long)want->ino);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fd < 0 && fgets(line, sizeof(line), f)) {
		/* "<id> <parent> <maj:min> <root> <mount point> ... - nsfs ..." */
		char *fld[5], *save = NULL, *tok = strtok_r(line, " ", &save);
		char mp[1100];
		int i = 0;

		for (; tok && i < 5; tok = strtok_r(NULL, " ", &save))
			fld[i++] = tok;
		if (i < 5 || strcmp(fld[3], root) != 0)
			continue;
		unescape(fld[4]);
		snprintf(mp, sizeof(mp), "/proc/%s/root%s", pid, fld[4]);
		fd = open_ns(mp, want);
	}
	fclose(f);
	return fd;
}

/*
 * find_holder() - an open nsfs file of the namespace with @want's inode, if one still exists: a
 * task in it, an open file of it, or a bind mount of it.  Return: the fd, or -1 when none.
 */
static int find_holder(const struct root_netns *want)
{
	uint64_t seen[MNTNS_SEEN_MAX];
	int n_seen = 0, fd = -1;
	DIR *d = opendir("/proc");
	struct dirent *de;

	if (!d)
		return -1;
	while (fd < 0 && (de = readdir(d))) {
		char dir[300], path[300];
		uint64_t mnt;
		bool known = false;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(dir, sizeof(dir), "/proc/%s/task", de->d_name);
		fd = scan_links(dir, "/ns/net", want);
		if (fd >= 0)
			break;
		snprintf(dir, sizeof(dir), "/proc/%s/fd", de->d_name);
		fd = scan_links(dir, "", want);
		if (fd >= 0)
			break;
		snprintf(path, sizeof(path), "/proc/%s/ns/mnt", de->d_name);
		if (!ns_link(path, "mnt", &mnt))
			continue;
		for (int i = 0; i < n_seen && !known; i++)
			known = seen[i] == mnt;
		if (known)
			continue;
		if (n_seen < MNTNS_SEEN_MAX)
			seen[n_seen++] = mnt;
		fd = scan_mounts(de->d_name, want);
	}
	closedir(d);
	return fd;
}

/* The cookie of the namespace @fd names, read by a child that enters it.  Return: it, or 0. */
static uint64_t cookie_of(int fd)
{
	uint64_t c = 0;
	int p[2], st;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return 0;
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		if (setns(fd, CLONE_NEWNET) == 0)
			c = own_cookie();
		_exit(write(p[1], &c, sizeof(c)) == (ssize_t)sizeof(c) ? 0 : 1);
	}
	close(p[1]);
	if (pid > 0) {
		if (read(p[0], &c, sizeof(c)) != (ssize_t)sizeof(c))
			c = 0;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
	}
	close(p[0]);
	return c;
}

enum root_netns_fate root_netns_fate(const struct root_netns *rec, const struct root_netns *self)
{
	uint64_t c;
	int fd;

	if (rec->dev == self->dev && rec->ino == self->ino) {
		if (rec->cookie == self->cookie)
			return ROOT_NETNS_OURS;   /* also 0 == 0: a kernel without cookies, as before them */
		return rec->cookie && self->cookie ? ROOT_NETNS_GONE : ROOT_NETNS_ELSEWHERE;
	}
	if (rec->dev != self->dev)
		return ROOT_NETNS_ELSEWHERE;   /* another nsfs (another kernel instance?): not ours to judge */
	fd = find_holder(rec);
	if (fd < 0)
		return ROOT_NETNS_GONE;
	c = rec->cookie ? cookie_of(fd) : 0;
	close(fd);
	return c && c != rec->cookie ? ROOT_NETNS_GONE : ROOT_NETNS_ELSEWHERE;
}
