/* SPDX-License-Identifier: MIT */
/*
 * worker — the steps of --fast-tcp's inspection that the command can make block in the kernel,
 * done off P's loop.  Reading the address out of the command's memory (process_vm_readv: a page
 * of a FUSE file or of userfaultfd-registered memory waits for its server) and an AF_UNIX path's
 * walk, bind and connect (a FUSE mount on the way waits for its server) run on a worker thread,
 * one job at a time, each with a deadline (FT_JOB_DEADLINE_MS).  A job past its deadline fails
 * (EFAULT for a read, ETIMEDOUT for a path) and its thread is abandoned with it: the thread frees
 * the job when the kernel lets it go (at the latest when the command's FUSE or userfaultfd file
 * closes, or when P exits), and a new thread takes the queue.  At most FT_STUCK_MAX threads may be
 * abandoned at once; beyond that every job fails at once.  Internal to src/fasttcp/.
 */
#ifndef CHILDFLOW_FASTTCP_WORKER_H
#define CHILDFLOW_FASTTCP_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "fasttcp/call.h"

#define FT_JOB_DEADLINE_MS 1000
#define FT_STUCK_MAX 8
#define FT_JOBS_MAX 1024

enum ft_job_kind {
	FT_JOB_READ,    /* @alen bytes at @call.addr of @tid's memory into @ss */
	FT_JOB_UNIX,    /* AF_UNIX path @ss: bind (@create) or connect @sfd through @procdir */
};

struct ft_job {
	enum ft_job_kind kind;
	uint64_t id;                /* the notification */
	pid_t tid;
	int cfd;                    /* the command's fd */
	int sfd;                    /* our dup of its socket, or -1 */
	int procdir;                /* /proc/TID, opened before the notification was checked, or -1 */
	struct ft_call call;
	struct sockaddr_storage ss;
	socklen_t alen;
	/* FT_JOB_UNIX: the command's fs ids (set when they differ from P's) and umask */
	bool create, setids;
	uid_t fsuid;
	gid_t fsgid;
	mode_t umask;
	/* P's work on the socket while the worker reads the address (fasttcp.c prework()); the
	 * worker never touches these, and frees pre_hs with the job if it is abandoned. */
	bool answered;              /* P answered the notification already (a failed inspection) */
	bool pre_done;              /* prework() ran: the fields below hold */
	int pre_dom;                /* the family to inject, or 0: the socket cannot be replaced */
	int pre_hs;                 /* the host socket, its options copied and its port bound; -1 */
	int pre_err;                /* making it failed: 0 (take the relay) or -errno (the answer) */
	int pre_bport, pre_fl;      /* the port the command bound; its file status flags */
	bool pre_cloexec;           /* its fd's close-on-exec */
	/* out */
	int res;                    /* 0 or -errno */
	bool failed;                /* not done (deadline, too many abandoned threads, queue full): answer @res */
	/* the pool's */
	struct ft_job *next;
	uint64_t deadline;
	atomic_int state;
};

struct ftw;

/* ftw_new() - an empty pool (no thread until the first job).  Return: 0 or -errno. */
int ftw_new(struct ftw **wp);

/* ftw_fd() - the fd that becomes readable when a job is done (for P's epoll set). */
int ftw_fd(const struct ftw *w);

/*
 * ftw_submit() - queue @j (owned by the pool until ftw_take() gives it back).  A job that cannot
 * run is given back failed.
 */
void ftw_submit(struct ftw *w, struct ft_job *j, uint64_t now);

/*
 * ftw_take() - the next job that is over (done, or failed: @res says what to answer), or NULL.
 * Checks the running job's deadline against @now.  The job is the caller's (ft_job_free()).
 */
struct ft_job *ftw_take(struct ftw *w, uint64_t now);

/* ftw_deadline() - when ftw_take() has to be called at the latest, or UINT64_MAX. */
uint64_t ftw_deadline(const struct ftw *w);

/* ftw_cancel() - at the end: the next job not over yet, failed (-ECONNABORTED), or NULL. */
struct ft_job *ftw_cancel(struct ftw *w);

void ftw_free(struct ftw *w);

/* ft_job_free() - close what @j holds and free it. */
void ft_job_free(struct ft_job *j);

#endif
