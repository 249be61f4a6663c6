/* SPDX-License-Identifier: MIT */
/*
 * worker — --fast-tcp's blocking-prone inspection steps on a worker thread (see worker.h).
 *
 * One thread runs at a time and takes one job at a time over its own request socket (a pointer);
 * it answers on the pool's done socket.  P keeps the queue.  The job's state decides who owns it
 * when the deadline and the thread race: P swaps RUNNING for ABANDONED, the thread swaps it for
 * DONE; whoever comes second knows: a thread that finds ABANDONED frees the job (and its fds) and
 * ends; P that finds DONE waits for the answer on its way.  An abandoned thread holds only its own
 * fds (a dup of the done socket, its request socket), never P's.  The thread has its own fs_struct
 * (unshare(CLONE_FS)), so its umask is not P's, and setfsuid()/setfsgid() are per thread.
 */
#include "fasttcp/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

enum { J_QUEUED, J_RUNNING, J_DONE, J_ABANDONED };

/* Threads abandoned and not yet let go by the kernel (process-wide: they outlive a pool). */
static atomic_int n_stuck;

struct ftw {
	int done[2];                  /* [0] P reads; [1] duplicated for each thread */
	int req;                      /* P's end of the running thread's request socket, or -1 */
	struct ft_job *running;       /* on the thread now, or NULL */
	struct ft_job *head, *tail;   /* waiting */
	struct ft_job *over;          /* failed, for ftw_take() */
	int n_queued;
};

struct wk_arg {
	int req, done;
};

void ft_job_free(struct ft_job *j)
{
	if (!j)
		return;
	if (j->sfd >= 0)
		close(j->sfd);
	if (j->procdir >= 0)
		close(j->procdir);
	free(j);
}

/*
 * unix_path() - an AF_UNIX path address seen from the command's root and working directory: for
 * connect, "/proc/self/fd/N" of an O_PATH fd on the socket file (*@pfd); for bind, the parent
 * directory's O_PATH fd and the last component.  Walked with openat2()'s RESOLVE_IN_ROOT from
 * /proc/TID/root (absolute) or /proc/TID/cwd (relative), so that an absolute symlink on the way
 * (/var/run -> /run) is resolved in the command's root, not in P's: P's root shows the host's
 * sockets that the sandbox hides.  A relative path is scoped to the working directory: ".." cannot
 * leave it, and an absolute symlink in it resolves under it (README).
 * Return: 0 or -errno.
 */
static int unix_path(const struct ft_job *j, struct sockaddr_un *out, socklen_t *olen, int *pfd)
{
	size_t off = offsetof(struct sockaddr_un, sun_path);
	char name[sizeof(out->sun_path) + 1], base[sizeof(out->sun_path) + 1];
	struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT };
	const char *rel;
	int w, dfd, e;

	*pfd = -1;
	w = ft_unix_name(&j->ss, j->alen, name, sizeof(name));
	if (w <= 0)
		return w < 0 ? w : -EINVAL;
	dfd = openat(j->procdir, name[0] == '/' ? "root" : "cwd", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	rel = name;
	if (j->create) {
		/* bind creates the last component: open its directory, name it through the fd */
		char *slash = strrchr(name, '/');

		snprintf(base, sizeof(base), "%s", slash ? slash + 1 : name);
		if (slash)
			slash[slash == name ? 1 : 0] = '\0';   /* "/x": the root itself */
		else
			rel = ".";
		how.flags |= O_DIRECTORY;
	}
	*pfd = (int)syscall(SYS_openat2, dfd, rel, &how, sizeof(how));
	e = errno;
	close(dfd);
	if (*pfd < 0)
		return -e;
	memset(out, 0, sizeof(*out));
	out->sun_family = AF_UNIX;
	if (j->create)
		w = snprintf(out->sun_path, sizeof(out->sun_path), "/proc/self/fd/%d/%s", *pfd, base);
	else
		w = snprintf(out->sun_path, sizeof(out->sun_path), "/proc/self/fd/%d", *pfd);
	if (w < 0 || (size_t)w >= sizeof(out->sun_path))
		return -ENAMETOOLONG;
	*olen = (socklen_t)(off + (size_t)w + 1);
	return 0;
}

/* An AF_UNIX bind or connect of the command's socket, with its fs ids and umask. */
static int unix_op(struct ft_job *j, bool own_fs)
{
	struct sockaddr_un ua;
	socklen_t ul = 0;
	uid_t ou = 0;
	gid_t og = 0;
	int pfd = -1, r, fl;

	if (!own_fs)
		return -EACCES;   /* a umask of ours would be P's */
	umask(j->umask);
	if (j->setids) {
		ou = (uid_t)setfsuid(j->fsuid);
		og = (gid_t)setfsgid(j->fsgid);
	}
	r = unix_path(j, &ua, &ul, &pfd);
	/* P gave up while the walk waited: the command was told ETIMEDOUT, so its socket stays as it
	 * was (a bind or connect that itself waits past the deadline may still take effect: README) */
	if (r == 0 && atomic_load(&j->state) == J_ABANDONED)
		r = -ETIMEDOUT;
	if (r == 0 && j->create) {
		r = bind(j->sfd, (const struct sockaddr *)&ua, ul) < 0 ? -errno : 0;
	} else if (r == 0) {
		/* a blocking socket made non-blocking for our call only: a full backlog is EAGAIN */
		fl = fcntl(j->sfd, F_GETFL);
		if (fl >= 0 && !(fl & O_NONBLOCK))
			fcntl(j->sfd, F_SETFL, fl | O_NONBLOCK);
		r = connect(j->sfd, (const struct sockaddr *)&ua, ul) < 0 ? -errno : 0;
		if (fl >= 0 && !(fl & O_NONBLOCK))
			fcntl(j->sfd, F_SETFL, fl);
	}
	if (j->setids) {
		setfsuid(ou);
		setfsgid(og);
	}
	if (pfd >= 0)
		close(pfd);
	return r;
}

static void run_job(struct ft_job *j, bool own_fs)
{
	if (j->kind == FT_JOB_READ) {
		struct iovec lv = { &j->ss, j->alen }, rv = { (void *)(uintptr_t)j->call.addr, j->alen };

		j->res = process_vm_readv(j->tid, &lv, 1, &rv, 1, 0) == (ssize_t)j->alen ? 0 : -EFAULT;
	} else {
		j->res = unix_op(j, own_fs);
	}
}

/* A job's address over a socket of this process.  Return: true when sent. */
static bool put_job(int fd, const struct ft_job *j)
{
	uintptr_t v = (uintptr_t)j;

	return send(fd, &v, sizeof(v), MSG_NOSIGNAL) == (ssize_t)sizeof(v);
}

/* The job sent on @fd, or NULL (none: errno, or the peer is gone). */
static struct ft_job *get_job(int fd, int flags)
{
	uintptr_t v = 0;

	if (recv(fd, &v, sizeof(v), flags) != (ssize_t)sizeof(v))
		return NULL;
	return (struct ft_job *)v;
}

static void *wk_main(void *arg)
{
	struct wk_arg a = *(struct wk_arg *)arg;
	bool own_fs = unshare(CLONE_FS) == 0;
	struct ft_job *j;

	free(arg);
	while ((j = get_job(a.req, 0))) {
		int expect = J_RUNNING;

		run_job(j, own_fs);
		if (!atomic_compare_exchange_strong(&j->state, &expect, J_DONE)) {
			/* P gave up on it (ABANDONED) and on this thread */
			ft_job_free(j);
			atomic_fetch_sub(&n_stuck, 1);
			break;
		}
		if (!put_job(a.done, j))
			break;   /* P is gone */
	}
	close(a.req);
	close(a.done);
	return NULL;
}

/* A new thread for the queue.  Return: 0 or -errno. */
static int start_thread(struct ftw *w)
{
	int sv[2];
	struct wk_arg *a;
	pthread_attr_t at;
	pthread_t t;
	sigset_t all, old;
	int r;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	a = malloc(sizeof(*a));
	if (!a || (a->done = fcntl(w->done[1], F_DUPFD_CLOEXEC, 0)) < 0) {
		r = a ? -errno : -ENOMEM;
		free(a);
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	a->req = sv[1];
	/* P's signals stay P's (signalfd, EINTR of its loop): the thread blocks them all */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&t, &at, wk_main, a);
	pthread_attr_destroy(&at);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		close(a->done);
		close(a->req);
		free(a);
		close(sv[0]);
		return r;
	}
	w->req = sv[0];
	return 0;
}

static void fail(struct ftw *w, struct ft_job *j, int err)
{
	j->failed = true;
	j->res = err;
	j->next = w->over;
	w->over = j;
}

static int deadline_errno(const struct ft_job *j)
{
	return j->kind == FT_JOB_READ ? -EFAULT : -ETIMEDOUT;
}

/* The first queued job, taken off the queue, or NULL. */
static struct ft_job *pop(struct ftw *w)
{
	struct ft_job *j = w->head;

	if (!j)
		return NULL;
	w->head = j->next;
	if (!w->head)
		w->tail = NULL;
	j->next = NULL;
	w->n_queued--;
	return j;
}

/* Start the next queued job, on a new thread when there is none. */
static void kick(struct ftw *w, uint64_t now)
{
	struct ft_job *j;

	while (!w->running && (j = pop(w))) {
		if (w->req < 0 && (atomic_load(&n_stuck) >= FT_STUCK_MAX || start_thread(w) < 0)) {
			fail(w, j, deadline_errno(j));
			continue;
		}
		atomic_store(&j->state, J_RUNNING);
		j->deadline = now + FT_JOB_DEADLINE_MS;
		if (!put_job(w->req, j)) {
			close(w->req);   /* a thread that died: the job fails, the next one gets another */
			w->req = -1;
			fail(w, j, deadline_errno(j));
			continue;
		}
		w->running = j;
	}
}

int ftw_new(struct ftw **wp)
{
	struct ftw *w = calloc(1, sizeof(*w));

	*wp = NULL;
	if (!w)
		return -ENOMEM;
	w->req = -1;
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, w->done) < 0) {
		int e = -errno;

		free(w);
		return e;
	}
	*wp = w;
	return 0;
}

int ftw_fd(const struct ftw *w)
{
	return w->done[0];
}

void ftw_submit(struct ftw *w, struct ft_job *j, uint64_t now)
{
	j->failed = false;
	j->res = 0;
	j->next = NULL;
	atomic_store(&j->state, J_QUEUED);
	if (w->n_queued >= FT_JOBS_MAX) {
		fail(w, j, -ENOBUFS);
		return;
	}
	if (w->tail)
		w->tail->next = j;
	else
		w->head = j;
	w->tail = j;
	w->n_queued++;
	kick(w, now);
}

struct ft_job *ftw_take(struct ftw *w, uint64_t now)
{
	struct ft_job *j = NULL;

	if (w->running && (j = get_job(w->done[0], MSG_DONTWAIT))) {
		w->running = NULL;
		kick(w, now);
		return j;
	}
	if (w->running && now >= w->running->deadline) {
		int expect = J_RUNNING;

		j = w->running;
		if (atomic_compare_exchange_strong(&j->state, &expect, J_ABANDONED)) {
			/* the thread owns it now: P answers from a copy of what it needs */
			struct ft_job *c = calloc(1, sizeof(*c));

			atomic_fetch_add(&n_stuck, 1);
			close(w->req);   /* the thread ends when the kernel lets it go */
			w->req = -1;
			w->running = NULL;
			if (c) {
				c->kind = j->kind;
				c->id = j->id;
				c->sfd = c->procdir = -1;
				fail(w, c, deadline_errno(c));
			}
			kick(w, now);
		}
		/* else DONE just now: its answer is on its way */
	}
	j = w->over;
	if (j) {
		w->over = j->next;
		j->next = NULL;
	}
	return j;
}

uint64_t ftw_deadline(const struct ftw *w)
{
	if (w->over)
		return 0;
	return w->running ? w->running->deadline : UINT64_MAX;
}

struct ft_job *ftw_cancel(struct ftw *w)
{
	struct ft_job *j = w->over;

	if (j) {
		w->over = j->next;
		return j;
	}
	if ((j = pop(w))) {
		j->failed = true;
		j->res = -ECONNABORTED;
		return j;
	}
	if ((j = w->running)) {
		int expect = J_RUNNING;

		if (atomic_compare_exchange_strong(&j->state, &expect, J_ABANDONED)) {
			struct ft_job *c = calloc(1, sizeof(*c));

			atomic_fetch_add(&n_stuck, 1);
			w->running = NULL;
			if (!c)
				return NULL;
			c->kind = j->kind;
			c->id = j->id;
			c->sfd = c->procdir = -1;
			j = c;
		} else {
			/* done just now: its answer is (about to be) on the done socket */
			while (!get_job(w->done[0], MSG_DONTWAIT) && errno == EAGAIN)
				sched_yield();
			w->running = NULL;
		}
		j->failed = true;
		j->res = -ECONNABORTED;
		return j;
	}
	return NULL;
}

void ftw_free(struct ftw *w)
{
	if (!w)
		return;
	for (struct ft_job *j; (j = ftw_cancel(w));)
		ft_job_free(j);
	if (w->req >= 0)
		close(w->req);
	close(w->done[0]);
	close(w->done[1]);
	free(w);
}
