/* SPDX-License-Identifier: MIT */
/*
 * worker — --fast-tcp's blocking-prone inspection steps on a worker thread (see worker.h).
 *
 * One thread runs at a time and takes one job at a time, posted in its control block (a pointer
 * and a futex word: no socket buffer on the way); it tells P through the pool's eventfd.  P keeps
 * the queue.  The job's state decides who owns it when the deadline and the thread race: P swaps
 * RUNNING for ABANDONED, the thread swaps it for DONE; whoever comes second knows: a thread that
 * finds ABANDONED frees the job (and its fds) and ends; P that finds DONE takes it.  The control
 * block has two references (P's, the thread's): P lets go of it when it abandons the thread or
 * frees the pool (quit, then a wake), the thread when it ends; the last one frees it.  An abandoned
 * thread holds only its own fd (a dup of the eventfd), never P's.  The thread has its own fs_struct
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
#include <linux/futex.h>
#include <linux/openat2.h>
#include <sys/eventfd.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

enum { J_QUEUED, J_RUNNING, J_DONE, J_ABANDONED };

/* Threads abandoned and not yet let go by the kernel (process-wide: they outlive a pool). */
static atomic_int n_stuck;

/* One thread's: shared by P and it (see above). */
struct wk_ctl {
	_Atomic(struct ft_job *) job;   /* posted by P, taken (NULL) by the thread */
	atomic_uint word;               /* the futex: P bumps it after each post and at quit */
	atomic_bool quit;               /* P let go: the thread ends when it gets out */
	atomic_int refs;
	int done;                       /* the thread's dup of the pool's eventfd */
};

struct ftw {
	int done;                     /* eventfd: a thread finished the running job */
	struct wk_ctl *k;             /* the thread for the queue, or NULL */
	struct ft_job *running;       /* on the thread now, or NULL */
	struct ft_job *head, *tail;   /* waiting */
	struct ft_job *over;          /* failed, for ftw_take() */
	int n_queued;
};

static void ctl_unref(struct wk_ctl *k)
{
	if (atomic_fetch_sub(&k->refs, 1) == 1) {
		close(k->done);
		free(k);
	}
}

static void ctl_wake(struct wk_ctl *k)
{
	atomic_fetch_add(&k->word, 1);
	syscall(SYS_futex, (void *)&k->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* P lets go of the queue's thread: it ends when it gets out of what it does. */
static void let_go(struct ftw *w)
{
	struct wk_ctl *k = w->k;

	w->k = NULL;
	atomic_store(&k->quit, true);
	ctl_wake(k);
	ctl_unref(k);
}

void ft_job_free(struct ft_job *j)
{
	if (!j)
		return;
	if (j->sfd >= 0)
		close(j->sfd);
	if (j->pre_hs >= 0)
		close(j->pre_hs);
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

/* The next job posted to @k, or NULL when P let go of the thread. */
static struct ft_job *wk_wait(struct wk_ctl *k)
{
	for (;;) {
		unsigned int seq = atomic_load(&k->word);
		struct ft_job *j = atomic_exchange(&k->job, NULL);

		if (j)
			return j;
		if (atomic_load(&k->quit))
			return NULL;
		/* a post or quit after the load above changed the word: no wait */
		syscall(SYS_futex, (void *)&k->word, FUTEX_WAIT_PRIVATE, seq, NULL, NULL, 0);
	}
}

static void *wk_main(void *arg)
{
	struct wk_ctl *k = arg;
	bool own_fs = unshare(CLONE_FS) == 0;
	struct ft_job *j;
	uint64_t one = 1;

	while ((j = wk_wait(k))) {
		int expect = J_RUNNING;

		run_job(j, own_fs);
		if (!atomic_compare_exchange_strong(&j->state, &expect, J_DONE)) {
			/* P gave up on it (ABANDONED) and on this thread */
			ft_job_free(j);
			atomic_fetch_sub(&n_stuck, 1);
			break;
		}
		/* the job is P's from here on: only our own block is touched */
		if (write(k->done, &one, sizeof(one)) != (ssize_t)sizeof(one))
			break;   /* cannot happen below 2^64 - 1 */
	}
	ctl_unref(k);
	return NULL;
}

/* A new thread for the queue.  Return: 0 or -errno. */
static int start_thread(struct ftw *w)
{
	struct wk_ctl *k = calloc(1, sizeof(*k));
	pthread_attr_t at;
	pthread_t t;
	sigset_t all, old;
	int r;

	if (!k)
		return -ENOMEM;
	k->done = fcntl(w->done, F_DUPFD_CLOEXEC, 0);
	if (k->done < 0) {
		r = -errno;
		free(k);
		return r;
	}
	atomic_init(&k->refs, 2);
	/* P's signals stay P's (signalfd, EINTR of its loop): the thread blocks them all */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&t, &at, wk_main, k);
	pthread_attr_destroy(&at);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		close(k->done);
		free(k);
		return r;
	}
	w->k = k;
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
		if (!w->k && (atomic_load(&n_stuck) >= FT_STUCK_MAX || start_thread(w) < 0)) {
			fail(w, j, deadline_errno(j));
			continue;
		}
		atomic_store(&j->state, J_RUNNING);
		j->deadline = now + FT_JOB_DEADLINE_MS;
		w->running = j;
		atomic_store(&w->k->job, j);
		ctl_wake(w->k);
	}
}

int ftw_new(struct ftw **wp)
{
	struct ftw *w = calloc(1, sizeof(*w));

	*wp = NULL;
	if (!w)
		return -ENOMEM;
	w->done = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->done < 0) {
		int e = -errno;

		free(w);
		return e;
	}
	*wp = w;
	return 0;
}

int ftw_fd(const struct ftw *w)
{
	return w->done;
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
	uint64_t v;
	/* level-triggered in P's epoll set: reset whenever it may be set (a DONE seen before the
	 * thread's write leaves it set for the next call); EAGAIN: not set */
	ssize_t n = read(w->done, &v, sizeof(v));

	(void)n;
	if (w->running && atomic_load(&w->running->state) == J_DONE) {
		j = w->running;
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
			let_go(w);   /* the thread ends when the kernel lets it go */
			w->running = NULL;
			if (c) {
				c->kind = j->kind;
				c->id = j->id;
				c->answered = j->answered;
				c->sfd = c->procdir = c->pre_hs = -1;
				fail(w, c, deadline_errno(c));
			}
			kick(w, now);
		} else {   /* DONE just now */
			w->running = NULL;
			kick(w, now);
			return j;
		}
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
			let_go(w);
			w->running = NULL;
			if (!c)
				return NULL;
			c->kind = j->kind;
			c->id = j->id;
			c->answered = j->answered;
			c->sfd = c->procdir = c->pre_hs = -1;
			j = c;
		} else {
			w->running = NULL;   /* done just now: ours */
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
	if (w->k)
		let_go(w);
	close(w->done);
	free(w);
}
