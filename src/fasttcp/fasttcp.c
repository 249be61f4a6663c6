/* SPDX-License-Identifier: MIT */
/*
 * fasttcp — the handler of the command's connect/bind/listen notifications (see fasttcp.h).
 *
 * Theory of operation.  One notification at a time, never blocking:
 *   1. RECV; /proc/TID (O_PATH) and a pidfd of the thread; ID_VALID (so both name it);
 *      pidfd_getfd(fd) = our dup of its socket (sfd); not a socket: ENOTSOCK; any inspection
 *      failure: EPERM / EBADF (fail closed).
 *   2. The address (connect, bind) is read once with process_vm_readv into our buffer, by the
 *      worker (worker.h: the command can make that read wait; 1 s, then EFAULT), then ID_VALID
 *      again: from here on nothing of the command's memory or fd table is read for the decision,
 *      and the answer is always ours (an error, or the result of our own call).  AF_UNIX path
 *      binds and connects go to the worker as well (a FUSE mount on the path: 1 s, ETIMEDOUT).
 *   3. SO_NETNS_COOKIE of sfd: P's own netns = a socket we injected ("host socket"), guarded:
 *        connect: AF_UNSPEC -> EOPNOTSUPP; connected -> EISCONN; connecting -> EALREADY (blocking:
 *        wait for the outcome); closed -> its pending error, else ECONNABORTED.  The kernel never
 *        connects a host socket a second time.  bind, listen -> EINVAL (it is bound and connected).
 *      the sandbox's netns (the template's cookie), or a netns nested in it:
 *        bind -> performed on sfd (ports below 1024 only with CAP_NET_BIND_SERVICE in CapEff; an
 *        AF_UNIX path through /proc/TID/root|cwd, with the command's umask and fs ids);
 *        listen -> performed on sfd; connect -> inject (below) or perform on sfd (an AF_UNIX path
 *        rewritten the same way; a blocking socket is made non-blocking for our call only, and the
 *        command waits in its notification for the outcome).
 *   4. Inject: a socket of ours (same family, TCP), the command's options copied (opt_table, those
 *      that differ from the sandbox default), its wildcard bind port replicated (a port taken on
 *      the host: perform instead), connect() with our address.  Failure at once: that errno, the
 *      command's socket untouched.  Non-blocking command socket: ADDFD (SETFD at its fd number,
 *      O_CLOEXEC as it was) now, answer EINPROGRESS, then watch our reference until it completes
 *      and ask policy_check_connected() (NAT to this host: reset).  Blocking: the command waits
 *      until our connect completes (or its SO_SNDTIMEO passes: then injected in progress,
 *      EINPROGRESS); refused/unreachable/timed out: that errno, nothing injected; connected:
 *      policy_check_connected(), then ADDFD and 0.
 * A notification whose thread went away (a signal, exit) fails ID_VALID or ADDFD: what we held
 * for it is closed.  Parked notifications are re-checked every FT_SWEEP_MS.
 */
#include "fasttcp/fasttcp.h"
#include "fasttcp/call.h"
#include "fasttcp/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>

#include "ctx.h"
#include "util/egress.h"
#include "util/fdpass.h"
#include "util/log.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif

#define FT_MAX_PARKED 1024
#define FT_SWEEP_MS 100
#define FT_SHARED_SLOTS 8192       /* power of two */
#define FT_SHARED_MAX 4096
#define FT_NB_WAIT_MS 100       /* a non-blocking connect to a destination not known clean waits this long */
#define FT_TID_SLOTS 16          /* threads whose /proc directory and pidfd are kept (tid_fds()) */
#define FT_TAG_CHAN 0xffffffffu
#define FT_TAG_LISTENER 0xfffffffeu
#define FT_TAG_JOBS 0xfffffffdu

enum park_kind {
	PARK_FREE,
	PARK_INJECT,    /* blocking connect of a socket of ours: fd = it; answered at completion */
	PARK_PERFORM,   /* blocking connect performed on the command's socket: fd = our dup */
	PARK_WATCH,     /* injected while connecting: fd = our reference; checked at completion */
};

struct park {
	enum park_kind kind;
	uint64_t id;
	int fd, cfd, flags;
	int sfd;                /* PARK_INJECT: our dup of the command's socket (the relay fallback), or -1 */
	bool cloexec;
	bool nonblocking;       /* PARK_INJECT of a non-blocking socket: deadline = FT_NB_WAIT_MS */
	uint64_t deadline_ms;   /* the command's SO_SNDTIMEO, or 0 */
	struct sockaddr_storage dst;
	socklen_t alen;
};

struct fasttcp {
	struct ctx *c;
	bool inject;
	int ep, chan, listener;
	uint64_t host_cookie, sandbox_cookie;
	int tmpl[2];                    /* AF_INET, AF_INET6 templates from N2 (option defaults) */
	struct opt_default *defaults[2];  /* their option values, read once (copy_opts()) */
	struct seccomp_notif *req;
	size_t req_size, resp_size;
	struct park park[FT_MAX_PARKED];
	int n_parked;
	uint64_t next_sweep;
	uint64_t next_deadline;         /* the earliest SO_SNDTIMEO of a parked connect, or UINT64_MAX */
	uint64_t shared[FT_SHARED_SLOTS];  /* SO_COOKIEs of sockets shared before connect, 0 = free */
	int n_shared;
	bool shared_full;
	struct ftw *w;                  /* the inspection steps that can block (worker.h) */
	struct tid_slot {               /* tid_fds(): a notifying thread's fds, kept for its next call */
		pid_t tid;              /* 0: free */
		int pd, pidfd;
	} tids[FT_TID_SLOTS];
	struct fasttcp_stats st;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool fasttcp_kernel_ok(const char **why)
{
	struct utsname u;
	int maj = 0, min = 0;

	*why = NULL;
	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &maj, &min) != 2) {
		*why = "cannot read the kernel version";
		return false;
	}
	if (maj < 5 || (maj == 5 && min < 19)) {
		*why = "--fast-tcp needs Linux 5.19 or later (seccomp socket injection); run without it";
		return false;
	}
	return true;
}

static uint64_t cookie_of(int fd)
{
	uint64_t ck = 0;
	socklen_t l = sizeof(ck);

	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &ck, &l) < 0)
		return 0;
	return ck;
}

static int gint(int fd, int level, int name, int *v)
{
	socklen_t l = sizeof(*v);

	*v = 0;
	return getsockopt(fd, level, name, v, &l);
}

/* ---- answers ---------------------------------------------------------------------------------- */

static bool notif_valid(struct fasttcp *f, uint64_t id)
{
	return ioctl(f->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

static void respond(struct fasttcp *f, uint64_t id, int err, bool cont)
{
	struct seccomp_notif_resp rs;

	memset(&rs, 0, sizeof(rs));
	rs.id = id;
	rs.error = err;
	rs.flags = cont ? SECCOMP_USER_NOTIF_FLAG_CONTINUE : 0;
	if (ioctl(f->listener, SECCOMP_IOCTL_NOTIF_SEND, &rs) < 0 && errno != ENOENT)
		log_debug("fast-tcp: cannot answer a notification: %s", strerror(errno));
}

/* Install @srcfd at the command's @cfd.  Return: 0 or -errno (ENOENT: the thread is gone). */
static int addfd(struct fasttcp *f, uint64_t id, int srcfd, int cfd, bool cloexec)
{
	struct seccomp_notif_addfd a;

	memset(&a, 0, sizeof(a));
	a.id = id;
	a.flags = SECCOMP_ADDFD_FLAG_SETFD;
	a.srcfd = (uint32_t)srcfd;
	a.newfd = (uint32_t)cfd;
	a.newfd_flags = cloexec ? O_CLOEXEC : 0;
	return ioctl(f->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &a) < 0 ? -errno : 0;
}

/* ---- the command's process, read through /proc ------------------------------------------------ */

/* Open @name under @pd (/proc/TID) for reading.  Return: a FILE, or NULL. */
static FILE *proc_open(int pd, const char *name)
{
	int fd = pd >= 0 ? openat(pd, name, O_RDONLY | O_CLOEXEC) : -1;
	FILE *fp = fd >= 0 ? fdopen(fd, "re") : NULL;

	if (fd >= 0 && !fp)
		close(fd);
	return fp;
}

/* The line @key of /proc/TID/status (@pd: /proc/TID), into @out.  Return: 0 or -1. */
static int status_line(int pd, const char *key, char *out, size_t len)
{
	char line[256];
	size_t kl = strlen(key);
	FILE *fp = proc_open(pd, "status");
	int r = -1;

	if (!fp)
		return -1;
	while (fgets(line, sizeof(line), fp))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			snprintf(out, len, "%s", line + kl + 1);
			r = 0;
			break;
		}
	fclose(fp);
	return r;
}

/*
 * open_procdir() - /proc/@tid as an O_PATH directory.  Opened before the notification is checked
 * valid (SECCOMP_IOCTL_NOTIF_ID_VALID after it proves that @tid named the notifying thread when it
 * was opened), and every /proc file of the thread is opened relative to it: a tid reused later
 * does not reach another process (seccomp_unotify(2)).  Return: the fd, or -1.
 */
static int open_procdir(pid_t tid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d", (int)tid);
	return open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

/* A pidfd of the thread (@pd: its /proc directory, or -1: opened here when needed), opened before
 * the validity check too.  *@thread: it names the thread itself (PIDFD_THREAD), not its group. */
static int open_pidfd(pid_t tid, int pd, bool *thread)
{
	char v[64];
	int fd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD), own, r;

	*thread = fd >= 0;
	if (fd >= 0 || errno != EINVAL)
		return fd;
	/* Before Linux 6.9 (no PIDFD_THREAD): the thread group's leader. */
	own = pd < 0 ? open_procdir(tid) : -1;
	r = status_line(pd >= 0 ? pd : own, "Tgid", v, sizeof(v));
	if (own >= 0)
		close(own);
	if (r < 0)
		return -1;
	return (int)syscall(SYS_pidfd_open, (pid_t)atoi(v), 0);
}

/* FD_CLOEXEC of the command's @cfd, from fdinfo's octal flags ("pos:\t0\nflags:\t02000002\n...").
 * One read() into a buffer of ours: no stdio (this runs for every hand-over). */
static bool fd_cloexec(int pd, int cfd)
{
	char path[64], buf[256];
	const char *fl;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "fdinfo/%d", cfd);
	fd = pd >= 0 ? openat(pd, path, O_RDONLY | O_CLOEXEC) : -1;
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	fl = strstr(buf, "\nflags:");
	return fl && (strtoul(fl + 7, NULL, 8) & O_CLOEXEC) != 0;
}

/* ---- the notifying thread's fds ---------------------------------------------------------------- */

static void tid_drop(struct tid_slot *t)
{
	if (!t->tid)
		return;
	close(t->pd);
	close(t->pidfd);
	t->pd = t->pidfd = -1;
	t->tid = 0;
}

/*
 * tid_fds() - /proc/@tid (O_PATH) and a pidfd of thread @tid for a notification of it: kept from
 * an earlier call (*@kept true: borrowed, the slot owns them until tid_drop()), or opened now,
 * before the validity check (open_procdir()), and the caller's (*@thread: the pidfd names the
 * thread itself, PIDFD_THREAD, so that tid_keep() may keep them).
 *
 * Why a kept pair is sound: both are bound to the kernel's pid object that had this tid when they
 * were opened, not to a task, and pidfd_getfd() acts on whatever task is attached to that object
 * now (ESRCH: none).  A tid is handed out again only after its pid object has lost every task, and
 * such an object never gets one back.  So while the notification is pending (the notifying thread
 * N alive with this tid), a kept pidfd on which pidfd_getfd() succeeds is the current object of
 * the tid: it names N (also after an execve by another thread of N's group, which moves the
 * leader's pid object to the exec'ing thread: that thread is N).  On ESRCH the caller drops the
 * slot and opens afresh.  A pidfd of the thread group (before Linux 6.9) would still work for
 * another thread of a live group: those are never kept.
 * Return: 0, or -1 (nothing opened).
 */
static int tid_fds(struct fasttcp *f, pid_t tid, int *pd, int *pidfd, bool *kept, bool *thread)
{
	const struct tid_slot *t = &f->tids[(unsigned int)tid % FT_TID_SLOTS];

	*thread = false;
	*kept = tid > 0 && t->tid == tid;
	if (*kept) {
		*pd = t->pd;
		*pidfd = t->pidfd;
		return 0;
	}
	*pd = tid > 0 ? open_procdir(tid) : -1;
	*pidfd = *pd >= 0 ? open_pidfd(tid, *pd, thread) : -1;
	if (*pidfd < 0) {
		if (*pd >= 0)
			close(*pd);
		return -1;
	}
	return 0;
}

/*
 * tid_keep() - keep @pd and @pidfd (taken) of thread @tid for its next call, once they proved to
 * name the notifying thread: its notification still pending, pidfd_getfd() done on @pidfd, and
 * the directory still that of a live task (else the tid was freed and handed out again between
 * the two opens, and the directory is a dead one's).  Return: whether they were kept (else the
 * caller still owns them).
 */
static bool tid_keep(struct fasttcp *f, pid_t tid, int pd, int pidfd)
{
	struct tid_slot *t = &f->tids[(unsigned int)tid % FT_TID_SLOTS];

	if (faccessat(pd, "stat", F_OK, 0) < 0)
		return false;
	tid_drop(t);
	t->tid = tid;
	t->pd = pd;
	t->pidfd = pidfd;
	return true;
}

/* ---- sockets shared before connect ---------------------------------------------------------- */

/*
 * The command's fresh TCP sockets that were added to an epoll set or duplicated (epoll_ctl ADD,
 * dup, dup2, dup3, fcntl F_DUPFD*: the filter sends these to P, which notes the socket and lets the
 * call continue).  Replacing such a socket would leave the epoll registration (nginx adds its
 * upstream socket before connect()) or the other fd on the old socket: its connect takes the relay.
 * Keyed by SO_COOKIE (never reused while the kernel runs); an entry goes when a connect on its
 * socket is performed.  Full: nothing more is injected (never a wrong hand-over).
 */
static uint64_t *shared_slot(struct fasttcp *f, uint64_t ck)
{
	size_t i = (size_t)(ck * 0x9e3779b97f4a7c15ull) & (FT_SHARED_SLOTS - 1);

	while (f->shared[i] && f->shared[i] != ck)
		i = (i + 1) & (FT_SHARED_SLOTS - 1);
	return &f->shared[i];
}

static bool shared_has(struct fasttcp *f, uint64_t ck)
{
	return *shared_slot(f, ck) == ck;
}

static void shared_add(struct fasttcp *f, uint64_t ck)
{
	uint64_t *e = shared_slot(f, ck);

	if (*e == ck)
		return;
	if (f->n_shared >= FT_SHARED_MAX) {
		if (!f->shared_full)
			log_warn("fast-tcp: more than %d sockets shared before connect; no more connects are "
				 "handed over", FT_SHARED_MAX);
		f->shared_full = true;
		return;
	}
	*e = ck;
	f->n_shared++;
}

/* Linear probing: delete by moving the entries after it back (no tombstones). */
static void shared_del(struct fasttcp *f, uint64_t ck)
{
	uint64_t *e = shared_slot(f, ck);
	size_t i, j;

	if (*e != ck)
		return;
	i = (size_t)(e - f->shared);
	f->shared[i] = 0;
	f->n_shared--;
	for (j = (i + 1) & (FT_SHARED_SLOTS - 1); f->shared[j]; j = (j + 1) & (FT_SHARED_SLOTS - 1)) {
		uint64_t v = f->shared[j];

		f->shared[j] = 0;
		*shared_slot(f, v) = v;
	}
}

static uint64_t sock_cookie(int fd)
{
	uint64_t ck = 0;
	socklen_t l = sizeof(ck);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &ck, &l) < 0)
		return 0;
	return ck;
}

/*
 * note_share() - epoll_ctl(ADD) or a dup of the command's @cfd: when it is a TCP socket not yet
 * connected, remember it (any netns: noting one that is never eligible costs nothing; TCP_INFO
 * answers for TCP sockets only).  Always continued: the call changes nothing that P guards, only
 * whether a later connect may replace the socket.  An fd P cannot look at while the thread waits
 * (P out of fds) stops the hand-overs: it could be such a socket.
 */
static void note_share(struct fasttcp *f, uint64_t id, pid_t tid, int cfd)
{
	bool thread;
	int pidfd = open_pidfd(tid, -1, &thread), sfd = -1, e = ESRCH;
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	uint64_t ck;

	f->st.shares++;
	if (pidfd >= 0 && !notif_valid(f, id)) {   /* the pidfd may name a reused tid: never read it */
		close(pidfd);
		respond(f, id, 0, true);
		return;
	}
	if (pidfd >= 0) {
		sfd = (int)syscall(SYS_pidfd_getfd, pidfd, cfd, 0);
		e = errno;
		close(pidfd);
	}
	if (sfd < 0) {
		/* EBADF: the call fails as well; a thread gone: it is not made */
		if (e != EBADF && notif_valid(f, id))
			f->shared_full = true;   /* cannot tell: hand nothing over any more */
		respond(f, id, 0, true);
		return;
	}
	if (getsockopt(sfd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && ti.tcpi_state == TCP_CLOSE) {
		ck = sock_cookie(sfd);
		if (ck)
			shared_add(f, ck);
		else
			f->shared_full = true;
	}
	close(sfd);
	respond(f, id, 0, true);
}

/* ---- performing on the command's own socket ---------------------------------------------------- */

/*
 * cmd_ids() - the command's fs ids and umask (from @pd: /proc/TID) for a path operation of @j
 * (AF_UNIX bind/connect), which the worker takes for it.
 * Return: 0, or -EACCES when the ids differ and P cannot take them.
 */
static int cmd_ids(int pd, struct ft_job *j)
{
	char v[128];
	unsigned int a, b, c, fsid;

	j->setids = false;
	if (status_line(pd, "Uid", v, sizeof(v)) < 0 || sscanf(v, "%u %u %u %u", &a, &b, &c, &fsid) != 4)
		return -EACCES;
	j->fsuid = fsid;
	if (status_line(pd, "Gid", v, sizeof(v)) < 0 || sscanf(v, "%u %u %u %u", &a, &b, &c, &fsid) != 4)
		return -EACCES;
	j->fsgid = fsid;
	j->umask = status_line(pd, "Umask", v, sizeof(v)) == 0 ? (mode_t)strtoul(v, NULL, 8) : 022;
	if (j->fsuid == geteuid() && j->fsgid == getegid())
		return 0;
	if (geteuid() != 0)
		return -EACCES;
	j->setids = true;
	return 0;
}

/*
 * unix_job() - an AF_UNIX path bind (@create) or connect of @sfd (consumed), handed to the worker
 * with @j (taken: its kind says so, see decide()): the path walk and the call itself can wait on a
 * FUSE server of the command's.  Answered in on_job().
 */
static void unix_job(struct fasttcp *f, struct ft_job *j, int sfd, bool create)
{
	int r = cmd_ids(j->procdir, j);

	if (r < 0) {
		respond(f, j->id, r, false);
		close(sfd);
		return;
	}
	j->kind = FT_JOB_UNIX;
	j->create = create;
	j->sfd = sfd;
	ftw_submit(f->w, j, now_ms());
}

/* Does @ss (@alen bytes) name an AF_UNIX path?  Return: 1 yes, 0 no (abstract, unnamed), -errno. */
static int unix_named(const struct sockaddr_storage *ss, socklen_t alen)
{
	char name[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];

	if (alen < sizeof(sa_family_t) || ss->ss_family != AF_UNIX)
		return 0;
	return ft_unix_name(ss, alen, name, sizeof(name));
}

static int park_add(struct fasttcp *f, const struct park *p);
static void inject_done(struct fasttcp *f, const struct park *p, bool timeout);

/*
 * perform_connect() - connect the command's own socket @sfd (our dup; consumed) with our copy of
 * the address, and answer with the kernel's result.  A blocking socket is made non-blocking for our
 * call only; the command then waits in its notification until the connect completes.  An AF_UNIX
 * path goes to the worker with @j (NULL: the caller knows it is no AF_UNIX socket).
 */
static void perform_connect(struct fasttcp *f, struct ft_job *j, uint64_t id, int sfd, int cfd,
			    const struct sockaddr_storage *ss, socklen_t alen)
{
	int fl = fcntl(sfd, F_GETFL), dom = 0, r, e;

	f->st.performed++;
	gint(sfd, SOL_SOCKET, SO_DOMAIN, &dom);
	if (dom == AF_UNIX && (r = unix_named(ss, alen)) != 0) {
		if (r == 1 && j) {
			unix_job(f, j, sfd, false);
			return;
		}
		respond(f, id, r < 0 ? r : -EPERM, false);
		close(sfd);
		return;
	}
	if (!(fl & O_NONBLOCK))
		fcntl(sfd, F_SETFL, fl | O_NONBLOCK);
	r = connect(sfd, (const struct sockaddr *)ss, alen);
	e = r < 0 ? errno : 0;
	if (!(fl & O_NONBLOCK))
		fcntl(sfd, F_SETFL, fl);
	if (f->n_shared && (e == 0 || e == EINPROGRESS || e == EAGAIN))
		shared_del(f, sock_cookie(sfd));   /* no longer fresh: never eligible again */
	if (!(fl & O_NONBLOCK) && (e == EINPROGRESS || e == EAGAIN) && dom != AF_UNIX) {
		struct park p = { .kind = PARK_PERFORM, .id = id, .fd = sfd, .cfd = cfd, .flags = fl,
				  .sfd = -1, .dst = *ss, .alen = alen };
		struct timeval tv;
		socklen_t tl = sizeof(tv);

		if (!getsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) && (tv.tv_sec || tv.tv_usec))
			p.deadline_ms = now_ms() + (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
		if (park_add(f, &p) == 0)
			return;
		e = ENOBUFS;
	}
	respond(f, id, -e, false);
	close(sfd);
}

/* bind() on a socket of the sandbox (@sfd consumed): performed, with the command's privileges for
 * low ports (@j->procdir) and paths (the worker, with @j). */
static void perform_bind(struct fasttcp *f, struct ft_job *j, int sfd)
{
	const struct sockaddr_storage *ss = &j->ss;
	socklen_t alen = j->alen;
	int dom = 0, r = 0;

	gint(sfd, SOL_SOCKET, SO_DOMAIN, &dom);
	if (dom == AF_INET || dom == AF_INET6) {
		/* Any family: an AF_UNSPEC address binds an AF_INET socket too (the port counts). */
		int port = ft_inet_port(ss, alen);
		char v[64];

		if (port > 0 && port < 1024 &&
		    (status_line(j->procdir, "CapEff", v, sizeof(v)) < 0 ||
		     !(strtoull(v, NULL, 16) & (1ull << 10 /* CAP_NET_BIND_SERVICE */))))
			r = -EACCES;
		if (r == 0 && bind(sfd, (const struct sockaddr *)ss, alen) < 0)
			r = -errno;
	} else if (dom == AF_UNIX && alen > sizeof(sa_family_t) && (r = unix_named(ss, alen)) != 0) {
		if (r == 1) {
			unix_job(f, j, sfd, true);
			return;
		}
	} else if (bind(sfd, (const struct sockaddr *)ss, alen) < 0) {
		r = -errno;
	}
	respond(f, j->id, r, false);
	close(sfd);
}

/* ---- injection -------------------------------------------------------------------------------- */

enum opt_kind { O_INT, O_LINGER, O_TIMEVAL, O_STR };

union opt_val {
	int i;
	struct linger l;
	struct timeval t;
	char s[16];
};

/* The sandbox default of one option: its value, or ok false when the template cannot say. */
struct opt_default {
	bool ok;
	socklen_t len;
	union opt_val v;
};

struct opt {
	int level, name;
	enum opt_kind kind;
	int family;   /* 0: any */
};

/* What is copied from the command's socket to ours when it differs from the sandbox's default.
 * Not copied: TCP_FASTOPEN_CONNECT (never: a deferred connect), TCP_MD5SIG/TCP-AO keys, socket
 * filters, F_SETOWN, SO_MARK/SO_BINDTODEVICE/IP_TRANSPARENT (such sockets are not injected).
 * SO_PRIORITY goes last: IP_TOS rewrites it. */
static const struct opt opt_table[] = {
	{ SOL_SOCKET, SO_REUSEADDR, O_INT, 0 },   { SOL_SOCKET, SO_REUSEPORT, O_INT, 0 },
	{ SOL_SOCKET, SO_KEEPALIVE, O_INT, 0 },   { SOL_SOCKET, SO_OOBINLINE, O_INT, 0 },
	{ SOL_SOCKET, SO_RCVBUF, O_INT, 0 },      { SOL_SOCKET, SO_SNDBUF, O_INT, 0 },
	{ SOL_SOCKET, SO_RCVLOWAT, O_INT, 0 },    { SOL_SOCKET, SO_TIMESTAMP, O_INT, 0 },
	{ SOL_SOCKET, SO_LINGER, O_LINGER, 0 },   { SOL_SOCKET, SO_RCVTIMEO, O_TIMEVAL, 0 },
	{ SOL_SOCKET, SO_SNDTIMEO, O_TIMEVAL, 0 },
	{ IPPROTO_TCP, TCP_NODELAY, O_INT, 0 },   { IPPROTO_TCP, TCP_CORK, O_INT, 0 },
	{ IPPROTO_TCP, TCP_MAXSEG, O_INT, 0 },    { IPPROTO_TCP, TCP_KEEPIDLE, O_INT, 0 },
	{ IPPROTO_TCP, TCP_KEEPINTVL, O_INT, 0 }, { IPPROTO_TCP, TCP_KEEPCNT, O_INT, 0 },
	{ IPPROTO_TCP, TCP_SYNCNT, O_INT, 0 },    { IPPROTO_TCP, TCP_LINGER2, O_INT, 0 },
	{ IPPROTO_TCP, TCP_WINDOW_CLAMP, O_INT, 0 }, { IPPROTO_TCP, TCP_USER_TIMEOUT, O_INT, 0 },
	{ IPPROTO_TCP, TCP_NOTSENT_LOWAT, O_INT, 0 }, { IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, O_INT, 0 },
	{ IPPROTO_TCP, TCP_CONGESTION, O_STR, 0 },
	{ IPPROTO_IP, IP_TOS, O_INT, AF_INET },   { IPPROTO_IP, IP_TTL, O_INT, AF_INET },
	{ IPPROTO_IP, IP_RECVERR, O_INT, AF_INET }, { IPPROTO_IP, IP_MTU_DISCOVER, O_INT, AF_INET },
	{ IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, O_INT, AF_INET },
	{ IPPROTO_IPV6, IPV6_TCLASS, O_INT, AF_INET6 }, { IPPROTO_IPV6, IPV6_UNICAST_HOPS, O_INT, AF_INET6 },
	{ IPPROTO_IPV6, IPV6_RECVERR, O_INT, AF_INET6 }, { IPPROTO_IPV6, IPV6_MTU_DISCOVER, O_INT, AF_INET6 },
	{ IPPROTO_IPV6, IPV6_V6ONLY, O_INT, AF_INET6 },
	{ SOL_SOCKET, SO_PRIORITY, O_INT, 0 },
};

#define N_OPTS (sizeof(opt_table) / sizeof(opt_table[0]))

/* The template's values of every option, read once.  Return: the table, or NULL (then every option
 * that can be read is copied). */
static struct opt_default *read_defaults(int tmpl)
{
	struct opt_default *d = tmpl >= 0 ? calloc(N_OPTS, sizeof(*d)) : NULL;

	for (size_t i = 0; d && i < N_OPTS; i++) {
		d[i].len = sizeof(d[i].v);
		d[i].ok = getsockopt(tmpl, opt_table[i].level, opt_table[i].name, &d[i].v, &d[i].len) == 0;
	}
	return d;
}

/* Copy what the command set on @from to @to.  Return: 0, or -1 when an option cannot be copied. */
static int copy_opts(const struct fasttcp *f, int from, int to, int dom)
{
	const struct opt_default *def = f->defaults[dom == AF_INET6 ? 1 : 0];

	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt *o = &opt_table[i];
		union opt_val a;
		socklen_t al = sizeof(a);

		if (o->family && o->family != dom)
			continue;
		memset(&a, 0, sizeof(a));
		if (getsockopt(from, o->level, o->name, &a, &al) < 0)
			continue;
		if (def && def[i].ok && def[i].len == al && !memcmp(&a, &def[i].v, al))
			continue;
		if (o->level == SOL_SOCKET && (o->name == SO_RCVBUF || o->name == SO_SNDBUF))
			a.i /= 2;   /* the kernel doubles what it is given */
		if (setsockopt(to, o->level, o->name, &a, o->kind == O_STR ? (socklen_t)strlen(a.s) : al) < 0) {
			log_debug("fast-tcp: cannot copy socket option %d/%d: %s", o->level, o->name,
				  strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* The relay's own question for a connected socket: does it end on this host (NAT)? */
static bool ends_here(struct fasttcp *f, int fd)
{
	struct policy_verdict v;

	policy_check_connected(&f->c->policy, &fd, NULL, 1, &v);
	if (v.action == POL_DENY) {
		log_debug("fast-tcp: refusing a connection: %s", v.reason);
		return true;
	}
	return false;
}

/*
 * eligible_sock() - can the command's socket @sfd be replaced without anything noticing: a fresh
 * TCP socket of the sandbox, bound (if at all) to the wildcard, with nothing set that a host socket
 * would not carry?  Nothing of the address: it may run while the worker reads that.
 * Return: the family to inject, or 0 (perform instead); the bound port in *@bport.
 */
static int eligible_sock(struct fasttcp *f, int sfd, uint64_t ck, int *bport)
{
	int dom = 0, typ = 0, proto = 0, v = 0;
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	struct sockaddr_storage la = { 0 };
	socklen_t ll = sizeof(la);

	*bport = 0;
	if (!f->inject || ck != f->sandbox_cookie)
		return 0;
	gint(sfd, SOL_SOCKET, SO_DOMAIN, &dom);
	gint(sfd, SOL_SOCKET, SO_TYPE, &typ);
	gint(sfd, SOL_SOCKET, SO_PROTOCOL, &proto);
	if ((dom != AF_INET && dom != AF_INET6) || typ != SOCK_STREAM || proto != IPPROTO_TCP)
		return 0;
	if (getsockopt(sfd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0 || ti.tcpi_state != TCP_CLOSE)
		return 0;
	if ((!gint(sfd, SOL_SOCKET, SO_BINDTOIFINDEX, &v) && v) || (!gint(sfd, SOL_SOCKET, SO_MARK, &v) && v) ||
	    (dom == AF_INET && !gint(sfd, IPPROTO_IP, IP_TRANSPARENT, &v) && v) ||
	    (dom == AF_INET6 && !gint(sfd, IPPROTO_IPV6, IPV6_TRANSPARENT, &v) && v) ||
	    (!gint(sfd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &v) && v))
		return 0;
	if (getsockname(sfd, (struct sockaddr *)&la, &ll) < 0)
		return 0;
	if (la.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&la;

		if (a->sin_addr.s_addr != htonl(INADDR_ANY))
			return 0;
		*bport = ntohs(a->sin_port);
	} else if (la.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&la;

		if (!IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
			return 0;
		*bport = ntohs(a->sin6_port);
	}
	return dom;
}

/*
 * eligible_dst() - would the relay dial this connect of a replaceable socket of family @dom
 * directly (our copy of the address, the services, the policy), and was the socket not shared?
 * Return: @dom, or 0 (perform instead).
 */
static int eligible_dst(struct fasttcp *f, int sfd, int dom, const struct sockaddr_storage *ss, socklen_t alen)
{
	char *name = NULL;
	const char *names[1];

	if (ss->ss_family != dom ||
	    alen < (dom == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)))
		return 0;
	/* A service (the DNS forwarder) answers it in the relay. */
	if (f->c->service.ops && f->c->service.ops->claims_tcp(f->c->service.priv, ss))
		return 0;
	/* The policy, asked exactly as the relay asks it (guard first). */
	if (f->c->resolved.lookup &&
	    f->c->resolved.lookup(f->c->resolved.src, (const struct sockaddr *)ss, now_ms(), names, 1) > 0)
		name = strdup(names[0]);
	{
		struct policy_query q = { .proto = POL_TCP, .dst = (const struct sockaddr *)ss, .name = name };
		struct policy_verdict vd = policy_decide(&f->c->policy, &q);

		free(name);
		if (vd.action != POL_DIRECT)
			return 0;
	}
	if (f->shared_full || (f->n_shared && shared_has(f, sock_cookie(sfd)))) {
		f->st.fell_back++;
		return 0;
	}
	return dom;
}

static socklen_t sa_len(int dom)
{
	return dom == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

/* Hand @hs over (consumed) and answer @err; then, while connecting to @watch (or NULL), watch it. */
static void hand_over(struct fasttcp *f, uint64_t id, int hs, int cfd, int flags, bool cloexec, int err,
		      const struct sockaddr_storage *watch)
{
	int r;

	fcntl(hs, F_SETFL, flags);
	r = addfd(f, id, hs, cfd, cloexec);
	if (r < 0) {
		close(hs);
		if (r != -ENOENT)
			respond(f, id, r, false);
		return;
	}
	f->st.injected++;
	if (watch) {
		struct park p = { .kind = PARK_WATCH, .fd = hs, .cfd = cfd, .sfd = -1, .dst = *watch };

		if (park_add(f, &p) < 0)
			close(hs);
	} else {
		/* Before the command resumes: woken on this CPU (SYNC_WAKE_UP), it may otherwise run
		 * and close the connection first, and P's close would be the last, sending its FIN. */
		close(hs);
	}
	respond(f, id, err, false);
}

/*
 * host_socket() - the host socket to replace @sfd (family @dom) with: made as the relay's direct
 * connector makes its upstream (bound to --iface's device for destination @dst), the command's
 * options copied, its port @bport bound.  Return: the fd, or -1 with *@err 0 (take the relay) or
 * -errno (the command's answer).
 */
static int host_socket(struct fasttcp *f, int sfd, int dom, int bport, const struct sockaddr_storage *dst,
		       int *err)
{
	int hs;

	*err = 0;
	/* A port below 1024 is privileged on the host: the command's CAP_NET_BIND_SERVICE counts in its
	 * own namespaces only (P's socket would leave the host from it, as root).  The relay dials
	 * from an ephemeral port, as without --fast-tcp (redteam3 G5). */
	if (bport > 0 && bport < 1024)
		return -1;
	hs = egress_socket(&f->c->egress, dst, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (hs < 0) {
		*err = hs;
		return -1;
	}
	if (copy_opts(f, sfd, hs, dom) < 0)
		goto slow;
	if (bport) {
		struct sockaddr_storage b;

		memset(&b, 0, sizeof(b));
		b.ss_family = (sa_family_t)dom;
		if (dom == AF_INET)
			((struct sockaddr_in *)&b)->sin_port = htons((uint16_t)bport);
		else
			((struct sockaddr_in6 *)&b)->sin6_port = htons((uint16_t)bport);
		/* Free in the sandbox (its bind worked), taken on the host: the relay, not a late
		 * EADDRINUSE. */
		if (bind(hs, (struct sockaddr *)&b, sa_len(dom)) < 0)
			goto slow;
	}
	return hs;
slow:
	close(hs);
	return -1;
}

/*
 * prework() - what a connect job @j needs that does not depend on the address, done by P while
 * the worker reads that address: the socket's eligibility (eligible_sock()) and its replacement
 * (host_socket()), so that P's ~40 option reads and the worker's wake-up overlap rather than follow
 * each other.  decide() takes the result (pre_done) or throws it away (the address or the policy
 * says otherwise).  Not with --iface: the device binding depends on the destination.
 */
static void prework(struct fasttcp *f, struct ft_job *j)
{
	struct sockaddr_storage fam = { 0 };
	uint64_t ck;

	if (j->call.kind != FT_CONNECT || !f->inject || f->c->egress.ifname[0])
		return;
	ck = cookie_of(j->sfd);
	j->pre_done = true;
	j->pre_dom = ck ? eligible_sock(f, j->sfd, ck, &j->pre_bport) : 0;
	if (!j->pre_dom)
		return;
	j->pre_fl = fcntl(j->sfd, F_GETFL);
	fam.ss_family = (sa_family_t)j->pre_dom;
	j->pre_hs = host_socket(f, j->sfd, j->pre_dom, j->pre_bport, &fam, &j->pre_err);
	if (j->pre_hs >= 0)
		j->pre_cloexec = fd_cloexec(j->procdir, j->cfd);
}

static void inject(struct fasttcp *f, struct ft_job *j, int sfd, int dom, int bport,
		   const struct sockaddr_storage *ss, socklen_t alen)
{
	uint64_t id = j->id;
	int fl, cfd = j->cfd, hs, r, e;
	bool cloexec;

	if (j->pre_done) {
		hs = j->pre_hs;
		j->pre_hs = -1;
		e = j->pre_err;
		fl = j->pre_fl;
		cloexec = j->pre_cloexec;
	} else {
		fl = fcntl(sfd, F_GETFL);
		hs = host_socket(f, sfd, dom, bport, ss, &e);
		cloexec = hs >= 0 && fd_cloexec(j->procdir, cfd);
	}
	if (hs < 0 && e) {
		respond(f, id, e, false);
		close(sfd);
		return;
	}
	if (hs < 0)
		goto slow_nohs;
	r = connect(hs, (const struct sockaddr *)ss, sa_len(dom));
	e = r < 0 ? errno : 0;
	if (r < 0 && e != EINPROGRESS) {
		close(hs);
		f->st.refused++;
		respond(f, id, -e, false);   /* the command's socket is untouched */
		close(sfd);
		return;
	}
	if (r == 0) {
		if (ends_here(f, hs)) {
			close(hs);
			goto slow_nohs;
		}
		close(sfd);
		hand_over(f, id, hs, cfd, fl, cloexec, 0, NULL);
		return;
	}
	/* Non-blocking, to a destination whose connection (the relay's or ours) was found not to end
	 * on this host in the last GUARD_PEER_CLEAN_MS: handed over at once, checked again at
	 * completion (the relay's own 5 s window for a new NAT rule). */
	if ((fl & O_NONBLOCK) && policy_known_clean(&f->c->policy, ss)) {
		close(sfd);   /* our reference to the replaced file goes before the command resumes */
		hand_over(f, id, hs, cfd, fl, cloexec, -EINPROGRESS, ss);
		return;
	}
	/* Otherwise the command waits for the outcome and the NAT check (a non-blocking one at most
	 * FT_NB_WAIT_MS, then the relay): no byte of it may reach a host service a NAT rule of the
	 * host redirects to. */
	{
		struct park p = { .kind = PARK_INJECT, .id = id, .fd = hs, .cfd = cfd, .flags = fl,
				  .sfd = sfd, .cloexec = cloexec, .nonblocking = (fl & O_NONBLOCK) != 0,
				  .dst = *ss, .alen = alen };
		struct timeval tv;
		socklen_t tl = sizeof(tv);
		struct tcp_info ti;
		socklen_t il = sizeof(ti);

		/* A near peer has often answered within our connect() already (the SYN and its answer
		 * went through the softirq on our way out): completed, it is not parked at all. */
		if (getsockopt(hs, IPPROTO_TCP, TCP_INFO, &ti, &il) == 0 && ti.tcpi_state != TCP_SYN_SENT) {
			inject_done(f, &p, false);
			return;
		}
		if (p.nonblocking)
			p.deadline_ms = now_ms() + FT_NB_WAIT_MS;
		else if (!getsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) && (tv.tv_sec || tv.tv_usec))
			p.deadline_ms = now_ms() + (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
		if (park_add(f, &p) < 0) {
			close(hs);
			close(sfd);
			respond(f, id, -ENOBUFS, false);
		}
	}
	return;
slow_nohs:
	f->st.fell_back++;
	perform_connect(f, j, id, sfd, cfd, ss, alen);
}

/* connect() on a socket we injected: never connect it again in the kernel (it is P's netns). */
static void guard_host_socket(struct fasttcp *f, uint64_t id, int sfd, int cfd,
			      const struct sockaddr_storage *ss, socklen_t alen)
{
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	int fl = fcntl(sfd, F_GETFL);

	f->st.host_guarded++;
	if (alen >= sizeof(sa_family_t) && ss->ss_family == AF_UNSPEC) {
		respond(f, id, -EOPNOTSUPP, false);
	} else if (getsockopt(sfd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0) {
		respond(f, id, -EPERM, false);
	} else if (ti.tcpi_state == TCP_SYN_SENT || ti.tcpi_state == TCP_SYN_RECV) {
		struct park p = { .kind = PARK_PERFORM, .id = id, .fd = sfd, .cfd = cfd, .flags = fl, .sfd = -1 };

		if ((fl & O_NONBLOCK) || park_add(f, &p) < 0)
			respond(f, id, (fl & O_NONBLOCK) ? -EALREADY : -ENOBUFS, false);
		else
			return;   /* answered at completion, from SO_ERROR */
	} else if (ti.tcpi_state != TCP_CLOSE) {
		respond(f, id, -EISCONN, false);
	} else {
		int e = 0;
		socklen_t l = sizeof(e);

		getsockopt(sfd, SOL_SOCKET, SO_ERROR, &e, &l);
		respond(f, id, e ? -e : -ECONNABORTED, false);
	}
	close(sfd);
}

/* ---- one notification ------------------------------------------------------------------------- */

/*
 * decide() - the call of @j (taken: freed here, or handed to the worker again for an AF_UNIX path),
 * its address read: checked still valid, then answered from our copies only.
 */
static void decide(struct fasttcp *f, struct ft_job *j)
{
	uint64_t id = j->id, ck;
	int sfd = j->sfd;

	j->sfd = -1;   /* consumed below */
	/* What we read belongs to this very call: from here on only our copies are used. */
	if (!notif_valid(f, id)) {
		close(sfd);
		ft_job_free(j);
		return;
	}
	ck = cookie_of(sfd);
	if (!ck) {
		close(sfd);
		respond(f, id, -EPERM, false);
	} else if (j->call.kind == FT_LISTEN || j->call.kind == FT_BIND) {
		int acc = 0;

		f->st.bind_listen++;
		/* A host socket: one we injected (bound and connected: EINVAL, as the kernel says), or a
		 * listener the caller passed in, whose backlog listen() may still change. */
		if (ck == f->host_cookie &&
		    !(j->call.kind == FT_LISTEN && !gint(sfd, SOL_SOCKET, SO_ACCEPTCONN, &acc) && acc)) {
			respond(f, id, -EINVAL, false);
			close(sfd);
		} else if (j->call.kind == FT_LISTEN) {
			respond(f, id, listen(sfd, j->call.backlog) < 0 ? -errno : 0, false);
			close(sfd);
		} else {
			perform_bind(f, j, sfd);
		}
	} else if (ck == f->host_cookie) {
		guard_host_socket(f, id, sfd, j->cfd, &j->ss, j->alen);
	} else {
		int bport = j->pre_bport, dom = j->pre_done ? j->pre_dom : eligible_sock(f, sfd, ck, &bport);

		if (dom)
			dom = eligible_dst(f, sfd, dom, &j->ss, j->alen);
		if (dom)
			inject(f, j, sfd, dom, bport, &j->ss, j->alen);
		else
			perform_connect(f, j, id, sfd, j->cfd, &j->ss, j->alen);
	}
	if (j->kind != FT_JOB_UNIX)   /* else the worker's again (unix_job()); nothing writes kind */
		ft_job_free(j);
}

/*
 * take_sock() - our copy (*@sfd) of the command's @cfd for notification @id of thread @tid, and
 * the thread's /proc directory for the job (*@pd, its own fd): /proc/TID and the pidfd first (or
 * kept: tid_fds()), then the validity check, so that both name the notifying thread.
 * Return: 0, or the command's answer (-EBADF, -ENOTSOCK, -EPERM) with nothing left open.
 */
static int take_sock(struct fasttcp *f, uint64_t id, pid_t tid, int cfd, int *sfd, int *pd)
{
	int tpd, pidfd, r = -EPERM;
	bool kept, thread;
	struct stat st;

	*sfd = *pd = -1;
	for (int tries = 0; tries < 2; tries++) {
		if (tid_fds(f, tid, &tpd, &pidfd, &kept, &thread) < 0)
			return -EPERM;
		r = -EPERM;
		if (notif_valid(f, id)) {
			*sfd = (int)syscall(SYS_pidfd_getfd, pidfd, cfd, 0);
			if (*sfd < 0 && errno == ESRCH && kept && !tries) {
				/* the kept pid object has no task: the tid is another thread's now */
				tid_drop(&f->tids[(unsigned int)tid % FT_TID_SLOTS]);
				continue;
			}
			r = *sfd < 0 && errno == EBADF ? -EBADF : -EPERM;
			if (*sfd >= 0)
				r = fstat(*sfd, &st) < 0 || !S_ISSOCK(st.st_mode) ? -ENOTSOCK : 0;
		}
		break;
	}
	if (!kept && r == 0 && thread && tid_keep(f, tid, tpd, pidfd))
		kept = true;
	/* the job owns its /proc directory: a kept one's slot may be reused before the job ends */
	if (r == 0)
		*pd = kept ? fcntl(tpd, F_DUPFD_CLOEXEC, 0) : tpd;
	else if (!kept)
		close(tpd);
	if (!kept)
		close(pidfd);
	if (r == 0 && *pd < 0)
		r = -EPERM;
	if (r < 0 && *sfd >= 0) {
		close(*sfd);
		*sfd = -1;
	}
	return r;
}

static void handle(struct fasttcp *f, const struct seccomp_notif *rq)
{
	uint64_t id = rq->id;
	pid_t tid = (pid_t)rq->pid;
	int pd, sfd, r;
	struct ft_call call;
	struct ft_job *j;

	f->st.notifications++;
	r = ft_call_parse(&rq->data, &call);
	if (r == 0 && call.kind == FT_SHARE) {
		note_share(f, id, tid, call.fd);
		return;
	}
	if (r < 0) {   /* the kernel's own answer to these arguments (the filter sends no other call) */
		respond(f, id, r, false);
		return;
	}
	if (!(j = calloc(1, sizeof(*j)))) {
		respond(f, id, -ENOMEM, false);
		return;
	}
	j->kind = FT_JOB_READ;
	j->id = id;
	j->tid = tid;
	j->cfd = call.fd;
	j->sfd = j->procdir = j->pre_hs = -1;
	j->call = call;
	if (call.kind != FT_LISTEN && call.alen) {
		/* The address is read by the worker: a page of it may wait for a server of the command's
		 * (FUSE, userfaultfd).  Posted first, so that its wake-up overlaps what follows; the job
		 * stays P's until on_job(), and what is read counts only once decide() has found the
		 * notification still pending. */
		j->alen = call.alen;
		ftw_submit(f->w, j, now_ms());
	}
	r = take_sock(f, id, tid, call.fd, &sfd, &pd);
	if (r < 0) {   /* nothing left open */
		respond(f, id, r, false);
		if (j->alen)
			j->answered = true;   /* the worker has it: freed in on_job() */
		else
			free(j);
		return;
	}
	j->sfd = sfd;
	j->procdir = pd;
	if (j->alen) {
		prework(f, j);   /* the worker's and P's parts at once */
		return;
	}
	decide(f, j);
}

/* A job of the worker is over (worker.h). */
static void on_job(struct fasttcp *f, struct ft_job *j)
{
	if (j->answered) {
		ft_job_free(j);
		return;
	}
	if (j->failed || j->kind == FT_JOB_UNIX || j->res < 0) {
		if (j->failed)
			log_debug("fast-tcp: %s of the command's call not done in time (%s)",
				  j->kind == FT_JOB_READ ? "the address read" : "the AF_UNIX path",
				  strerror(-j->res));
		respond(f, j->id, j->res, false);
		ft_job_free(j);
		return;
	}
	decide(f, j);
}

/* ---- parked notifications --------------------------------------------------------------------- */

static int park_add(struct fasttcp *f, const struct park *p)
{
	for (int i = 0; i < FT_MAX_PARKED; i++) {
		struct epoll_event ev = { .events = EPOLLOUT | EPOLLERR | EPOLLHUP, .data.u64 = (uint64_t)i };

		if (f->park[i].kind != PARK_FREE)
			continue;
		if (epoll_ctl(f->ep, EPOLL_CTL_ADD, p->fd, &ev) < 0)
			return -errno;
		f->park[i] = *p;
		f->n_parked++;
		if (p->deadline_ms && p->deadline_ms < f->next_deadline)
			f->next_deadline = p->deadline_ms;
		return 0;
	}
	return -ENOBUFS;
}

static void park_end(struct fasttcp *f, struct park *p)
{
	epoll_ctl(f->ep, EPOLL_CTL_DEL, p->fd, NULL);   /* before close: the command holds the file */
	close(p->fd);
	if (p->sfd >= 0)
		close(p->sfd);
	p->sfd = -1;
	p->kind = PARK_FREE;
	f->n_parked--;
}

/*
 * inject_done() - our connect for a blocking or not-known-clean connect (@p, not in the table; its
 * fds are consumed) completed (not in SYN_SENT any more), or its deadline passed (@timeout): answer,
 * hand over, or give it to the relay.
 */
static void inject_done(struct fasttcp *f, const struct park *p, bool timeout)
{
	int fd = p->fd, sfd = p->sfd, cfd = p->cfd, flags = p->flags, e = 0;
	socklen_t l = sizeof(e);
	uint64_t id = p->id;
	bool nb = p->nonblocking, cloexec = p->cloexec;
	struct sockaddr_storage dst = p->dst;
	socklen_t alen = p->alen;

	if (!timeout) {
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
		/* SS_CONNECTED, as the kernel's blocking connect leaves it */
		if (!e && connect(fd, (const struct sockaddr *)&dst, alen) < 0 && errno != EISCONN)
			e = errno;
		if (e && !nb) {
			f->st.refused++;
			respond(f, id, -e, false);
			close(fd);
			close(sfd);
			return;
		}
	}
	if (timeout && !nb) {   /* the command's SO_SNDTIMEO: in progress, as natively */
		close(sfd);
		hand_over(f, id, fd, cfd, flags, cloexec, -EINPROGRESS, &dst);
		return;
	}
	/* A non-blocking connect that did not complete in time or failed, or any that ends on
	 * this host: the relay takes it, with its exact outcome (EINPROGRESS, then SO_ERROR). */
	if (timeout || e || ends_here(f, fd)) {
		close(fd);
		f->st.fell_back++;
		perform_connect(f, NULL, id, sfd, cfd, &dst, alen);   /* TCP: no path */
		return;
	}
	close(sfd);
	hand_over(f, id, fd, cfd, flags, cloexec, nb ? -EINPROGRESS : 0, NULL);
}

/* A parked socket is writable (connected, or failed), or its deadline passed (@timeout). */
static void park_event(struct fasttcp *f, struct park *p, bool timeout)
{
	int e = 0;
	socklen_t l = sizeof(e);
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);

	switch (p->kind) {
	case PARK_WATCH:
		if (getsockopt(p->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && ti.tcpi_state == TCP_SYN_SENT)
			return;   /* not yet */
		if (ti.tcpi_state == TCP_ESTABLISHED && ends_here(f, p->fd)) {
			struct sockaddr sa = { .sa_family = AF_UNSPEC };

			if (connect(p->fd, &sa, sizeof(sa)) < 0)   /* reset it */
				log_debug("fast-tcp: cannot reset a connection: %s", strerror(errno));
		}
		park_end(f, p);
		return;
	case PARK_PERFORM:
		if (timeout) {
			respond(f, p->id, -EINPROGRESS, false);
			park_end(f, p);
			return;
		}
		if (getsockopt(p->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 &&
		    (ti.tcpi_state == TCP_SYN_SENT || ti.tcpi_state == TCP_SYN_RECV))
			return;
		getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &e, &l);
		/* as the kernel's blocking connect leaves it: SS_CONNECTED (0, or EISCONN) */
		if (!e && p->alen && connect(p->fd, (const struct sockaddr *)&p->dst, p->alen) < 0 &&
		    errno != EISCONN)
			e = errno;
		respond(f, p->id, -e, false);
		park_end(f, p);
		return;
	case PARK_INJECT: {
		struct park q = *p;

		if (!timeout && getsockopt(q.fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 &&
		    ti.tcpi_state == TCP_SYN_SENT)
			return;
		epoll_ctl(f->ep, EPOLL_CTL_DEL, q.fd, NULL);
		p->kind = PARK_FREE;
		p->sfd = -1;
		f->n_parked--;
		inject_done(f, &q, timeout);
		return;
	}
	case PARK_FREE:
		return;
	}
}

/* Deadlines, and notifications whose thread went away (a signal: the command saw EINTR). */
static void sweep(struct fasttcp *f, uint64_t now)
{
	f->next_deadline = UINT64_MAX;
	for (int i = 0; i < FT_MAX_PARKED && f->n_parked; i++) {
		struct park *p = &f->park[i];

		if (p->kind == PARK_FREE || p->kind == PARK_WATCH)
			continue;
		if (!notif_valid(f, p->id))
			park_end(f, p);
		else if (p->deadline_ms && p->deadline_ms <= now)
			park_event(f, p, true);
		else if (p->deadline_ms && p->deadline_ms < f->next_deadline)
			f->next_deadline = p->deadline_ms;
	}
	f->next_sweep = now + FT_SWEEP_MS;
}

/* ---- the channel and the loop ----------------------------------------------------------------- */

static void on_chan(struct fasttcp *f)
{
	int fds[3] = { -1, -1, -1 }, n = 0;
	char m;
	int r = fdpass_recv(f->chan, &m, 1, fds, 3, &n, MSG_DONTWAIT);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = FT_TAG_LISTENER };
	uint64_t one = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;

	if (r == -EAGAIN)
		return;
	epoll_ctl(f->ep, EPOLL_CTL_DEL, f->chan, NULL);
	if (r <= 0 || n < 2) {
		for (int i = 0; i < n; i++)
			close(fds[i]);
		close(f->chan);
		f->chan = -1;
		return;
	}
	f->listener = fds[0];
	f->tmpl[0] = fds[1];
	f->tmpl[1] = n > 2 ? fds[2] : -1;
	f->sandbox_cookie = cookie_of(fds[1]);
	f->defaults[0] = read_defaults(f->tmpl[0]);
	f->defaults[1] = read_defaults(f->tmpl[1]);
	/* Linux 6.6: the notifying thread and P hand over on the same CPU (~3x lower latency). */
	if (ioctl(f->listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, one) < 0)
		log_debug("fast-tcp: no SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP here (%s)", strerror(errno));
	if (!f->sandbox_cookie || epoll_ctl(f->ep, EPOLL_CTL_ADD, f->listener, &ev) < 0)
		log_warn("fast-tcp: cannot watch the command's connects; they will fail");
	if (write(f->chan, "k", 1) != 1)
		log_debug("fast-tcp: cannot answer the command: %s", strerror(errno));
	close(f->chan);
	f->chan = -1;
}

static void on_listener(struct fasttcp *f, uint32_t events)
{
	for (int i = 0; i < 64; i++) {
		struct pollfd pf = { .fd = f->listener, .events = POLLIN };

		/* RECV blocks when nothing is pending: ask first */
		if (poll(&pf, 1, 0) != 1 || !(pf.revents & POLLIN))
			break;
		memset(f->req, 0, f->req_size);
		if (ioctl(f->listener, SECCOMP_IOCTL_NOTIF_RECV, f->req) < 0) {
			if (errno == ENOENT || errno == EINTR)
				continue;   /* the thread went away before we took it */
			break;
		}
		handle(f, f->req);
	}
	if (events & EPOLLHUP)   /* no task uses the filter any more */
		epoll_ctl(f->ep, EPOLL_CTL_DEL, f->listener, NULL);
}

static void ft_run(void *priv, uint64_t now)
{
	struct fasttcp *f = priv;
	struct epoll_event ev[64];
	int n = epoll_wait(f->ep, ev, 64, 0);

	for (int i = 0; i < n; i++) {
		uint64_t tag = ev[i].data.u64;

		if (tag == FT_TAG_CHAN)
			on_chan(f);
		else if (tag == FT_TAG_LISTENER)
			on_listener(f, ev[i].events);
		else if (tag < FT_MAX_PARKED && f->park[tag].kind != PARK_FREE)
			park_event(f, &f->park[tag], false);
	}
	/* done, or past their deadline (FT_TAG_JOBS or not) */
	for (struct ft_job *j; (j = ftw_take(f->w, now));)
		on_job(f, j);
	if (f->n_parked && (now >= f->next_sweep || now >= f->next_deadline))
		sweep(f, now);
}

static uint64_t ft_deadline(void *priv)
{
	const struct fasttcp *f = priv;
	uint64_t d = ftw_deadline(f->w);

	if (!f->n_parked)
		return d;
	if (f->next_deadline < d)
		d = f->next_deadline;
	return f->next_sweep < d ? f->next_sweep : d;
}

struct relay_hook fasttcp_hook(struct fasttcp *f)
{
	return (struct relay_hook){ .fd = f->ep, .run = ft_run, .deadline = ft_deadline, .priv = f };
}

const struct fasttcp_stats *fasttcp_stats(const struct fasttcp *f)
{
	return &f->st;
}

int fasttcp_new(struct fasttcp **fp, struct ctx *c, int chan, bool inject)
{
	struct seccomp_notif_sizes sz;
	struct fasttcp *f = calloc(1, sizeof(*f));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = FT_TAG_CHAN };
	int s, err = 0;

	*fp = NULL;
	if (!f) {
		close(chan);
		return -ENOMEM;
	}
	f->c = c;
	f->inject = inject;
	f->chan = chan;
	f->ep = f->listener = f->tmpl[0] = f->tmpl[1] = -1;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sz) < 0) {
		err = -errno;
		goto fail;
	}
	f->req_size = sz.seccomp_notif > sizeof(struct seccomp_notif) ? sz.seccomp_notif :
									sizeof(struct seccomp_notif);
	if (!(f->req = calloc(1, f->req_size))) {
		err = -ENOMEM;
		goto fail;
	}
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		err = -errno;
		goto fail;
	}
	f->host_cookie = cookie_of(s);
	close(s);
	if (!f->host_cookie) {
		err = -ENOPROTOOPT;   /* SO_NETNS_COOKIE: Linux 5.14 */
		goto fail;
	}
	f->ep = epoll_create1(EPOLL_CLOEXEC);
	if (f->ep < 0 || epoll_ctl(f->ep, EPOLL_CTL_ADD, chan, &ev) < 0) {
		err = -errno;
		goto fail;
	}
	err = ftw_new(&f->w);
	if (err < 0)
		goto fail;
	ev.data.u64 = FT_TAG_JOBS;
	if (epoll_ctl(f->ep, EPOLL_CTL_ADD, ftw_fd(f->w), &ev) < 0) {
		err = -errno;
		goto fail;
	}
	f->next_sweep = now_ms() + FT_SWEEP_MS;
	f->next_deadline = UINT64_MAX;
	*fp = f;
	return 0;
fail:
	fasttcp_free(f);
	return err;
}

void fasttcp_free(struct fasttcp *f)
{
	if (!f)
		return;
	for (int i = 0; i < FT_MAX_PARKED; i++)
		if (f->park[i].kind != PARK_FREE) {
			if (f->park[i].kind != PARK_WATCH)
				respond(f, f->park[i].id, -ECONNABORTED, false);
			park_end(f, &f->park[i]);
		}
	if (f->w) {
		for (struct ft_job *j; (j = ftw_cancel(f->w));) {
			respond(f, j->id, -ECONNABORTED, false);
			ft_job_free(j);
		}
		ftw_free(f->w);
	}
	for (int i = 0; i < FT_TID_SLOTS; i++)
		tid_drop(&f->tids[i]);
	if (f->listener >= 0)
		close(f->listener);
	for (int i = 0; i < 2; i++)
		if (f->tmpl[i] >= 0)
			close(f->tmpl[i]);
	if (f->chan >= 0)
		close(f->chan);
	if (f->ep >= 0)
		close(f->ep);
	free(f->defaults[0]);
	free(f->defaults[1]);
	free(f->req);
	free(f);
}
