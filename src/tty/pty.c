/* SPDX-License-Identifier: MIT */
/*
 * tty/pty — the command's own pty, relayed to the caller's terminal (the life of a relay is in pty.h).
 *
 * States of the caller's terminal, as P holds it:
 *   COOKED    as the caller left it: before the command holds the pty (a Ctrl-C is still the
 *             terminal's SIGINT, which aborts the setup), while childflow runs in the background
 *             of the caller's shell (nothing is read from it then), and while childflow is stopped
 *   RAW       the command holds the pty and childflow is in the foreground: every keystroke is a
 *             byte for the pty, whose own line discipline (the caller's modes, copied) makes
 *             Ctrl-C, Ctrl-Z and Ctrl-D what they were
 * Ctrl-Z stops the command inside its pty; init reports the stop, P puts the caller's modes back
 * and stops itself with SIGTSTP, so the caller's shell sees its job stopped and takes the terminal;
 * `fg` continues P (SIGCONT), which goes RAW again and continues the command through init.  A
 * childflow whose process group is orphaned (nobody could `fg` it) is not stopped by SIGTSTP: the
 * command is then continued at once.  The caller's modes are restored on every exit of P; after a
 * SIGKILL, a watchdog process (which holds nothing else) restores them when P's pipe to it closes,
 * if the terminal is still in the raw modes P set.
 */
#include "tty/pty.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "util/log.h"

#define PTY_BUF (64u * 1024u)
#define FINISH_MS 2000   /* the master's last bytes, at most this long */

struct pty_buf {
	char b[PTY_BUF];
	size_t off, len;
};

/* Shared with the watchdog: what to restore, and only while the terminal is as P left it. */
struct pty_shared {
	atomic_int raw;
	struct termios saved, rawmodes;
};

/* One direction: from @src to @dst through @buf; eof once @src ended. */
struct pty_dir {
	int src, dst;
	bool eof;
	struct pty_buf buf;
	uint32_t src_ev, dst_ev;     /* what epoll watches now */
};

struct pty_relay {
	int term;                    /* our own O_RDWR|O_NONBLOCK description of the caller's terminal */
	int master;
	int slave;                   /* P's copy until pty_started() */
	int report[2];               /* init and the command -> P */
	int sigfd;                   /* SIGWINCH, SIGCONT, SIGTSTP */
	int ep;
	int watchdog;                /* write end of the watchdog's pipe */
	bool ready;                  /* the command holds the pty */
	bool raw;                    /* the caller's terminal is RAW */
	bool stop_ignored;           /* the caller ignored SIGTSTP: never stop ourselves */
	struct pty_dir in, out;      /* keystrokes term -> master; output master -> term */
	struct pty_shared *sh;
	sigset_t sigs;
};

static bool same_tty(int fd, dev_t rdev)
{
	struct stat st;

	return isatty(fd) && fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == rdev;
}

/* The caller's window size onto the master (the kernel tells the pty's foreground group). */
static void pass_winsize(struct pty_relay *pr)
{
	struct winsize ws;

	if (ioctl(pr->term, TIOCGWINSZ, &ws) == 0)
		ioctl(pr->master, TIOCSWINSZ, &ws);
}

static bool in_foreground(const struct pty_relay *pr)
{
	return tcgetpgrp(pr->term) == getpgrp();
}

/* Watch @fd for @want, or not at all when @want is 0 (a hung-up fd would report EPOLLHUP anyway). */
static void set_interest(struct pty_relay *pr, int fd, uint32_t *cur, uint32_t want)
{
	struct epoll_event e = { .events = want, .data.fd = fd };
	int op = !want ? EPOLL_CTL_DEL : *cur ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

	if (*cur == want)
		return;
	if (epoll_ctl(pr->ep, op, fd, &e) == 0 || op == EPOLL_CTL_DEL)
		*cur = want;
}

/* Read the source when the buffer is empty, write the destination while it is not. */
static void update_interest(struct pty_relay *pr)
{
	struct pty_dir *d[2] = { &pr->in, &pr->out };

	for (int i = 0; i < 2; i++) {
		bool reading = !d[i]->eof && d[i]->buf.len == 0 && (d[i] == &pr->out || pr->raw);

		set_interest(pr, d[i]->src, &d[i]->src_ev, reading ? EPOLLIN : 0);
		set_interest(pr, d[i]->dst, &d[i]->dst_ev, d[i]->buf.len ? EPOLLOUT : 0);
	}
}

static void go_raw(struct pty_relay *pr)
{
	struct termios t;

	if (!pr->ready || !in_foreground(pr) || tcgetattr(pr->term, &t) < 0)
		return;
	if (!pr->raw) {
		pr->sh->saved = t;   /* the caller's modes as they are now (stty while we were stopped) */
		t = pr->sh->saved;
		cfmakeraw(&t);
		t.c_cc[VMIN] = 1;
		t.c_cc[VTIME] = 0;
		pr->sh->rawmodes = t;
	}
	if (tcsetattr(pr->term, TCSADRAIN, &pr->sh->rawmodes) < 0) {
		log_warn("cannot put the terminal in raw mode for the command's pty: %s", strerror(errno));
		return;
	}
	/* P's own lines need their carriage return now. */
	log_crlf(true);
	atomic_store(&pr->sh->raw, 1);
	pr->raw = true;
}

static void go_cooked(struct pty_relay *pr)
{
	if (!pr->raw)
		return;
	atomic_store(&pr->sh->raw, 0);
	tcsetattr(pr->term, TCSADRAIN, &pr->sh->saved);
	log_crlf(false);
	pr->raw = false;
}

/*
 * suspend() - the command stopped (or we got SIGTSTP): the caller's modes back, stop ourselves as
 * a job stops, and on SIGCONT take the terminal again.  Return: PTY_EV_CONTINUE.
 */
static unsigned int suspend(struct pty_relay *pr)
{
	sigset_t tstp;

	go_cooked(pr);
	if (!pr->stop_ignored) {
		sigemptyset(&tstp);
		sigaddset(&tstp, SIGTSTP);
		signal(SIGTSTP, SIG_DFL);
		sigprocmask(SIG_UNBLOCK, &tstp, NULL);
		raise(SIGTSTP);   /* returns after SIGCONT, or at once in an orphaned process group */
		sigprocmask(SIG_BLOCK, &tstp, NULL);
	}
	go_raw(pr);
	pass_winsize(pr);
	return PTY_EV_CONTINUE;
}

/* Move what one direction can move now (eof once its source ended). */
static void pump(struct pty_dir *d)
{
	for (int round = 0; round < 16; round++) {
		if (d->buf.len == 0 && !d->eof) {
			ssize_t n = read(d->src, d->buf.b, sizeof(d->buf.b));

			if (n > 0) {
				d->buf.off = 0;
				d->buf.len = (size_t)n;
			} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				d->eof = true;   /* EIO: every slave closed, or the terminal hung up */
			}
		}
		if (d->buf.len == 0)
			return;
		ssize_t w = write(d->dst, d->buf.b + d->buf.off, d->buf.len);

		if (w < 0) {
			if (errno != EAGAIN && errno != EINTR)
				d->buf.len = 0;   /* nowhere to write: dropped, as a closed terminal would */
			return;
		}
		d->buf.off += (size_t)w;
		d->buf.len -= (size_t)w;
		if (d->buf.len)
			return;
	}
}

static unsigned int on_report(struct pty_relay *pr)
{
	unsigned char b[16];
	unsigned int ev = 0;
	ssize_t n;

	while ((n = read(pr->report[0], b, sizeof(b))) > 0)
		for (ssize_t i = 0; i < n; i++) {
			if (b[i] == PTY_READY) {
				pr->ready = true;
				pass_winsize(pr);
				go_raw(pr);
			} else {
				log_debug("the command was stopped by signal %d", b[i]);
				ev |= suspend(pr);
			}
		}
	return ev;
}

static unsigned int on_signal(struct pty_relay *pr)
{
	struct signalfd_siginfo si;
	unsigned int ev = 0;

	while (read(pr->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGWINCH) {
			pass_winsize(pr);
		} else if (si.ssi_signo == SIGTSTP) {
			ev |= suspend(pr);
		} else if (si.ssi_signo == SIGCONT) {
			/* `fg` or `bg`: raw again if we are in the foreground (bash may have reset it). */
			go_raw(pr);
			pass_winsize(pr);
			ev |= PTY_EV_CONTINUE;
		}
	}
	return ev;
}

unsigned int pty_run(struct pty_relay *pr)
{
	struct epoll_event evs[8];
	unsigned int ev = 0;
	int n = epoll_wait(pr->ep, evs, 8, 0);

	for (int i = 0; i < n; i++) {
		int fd = evs[i].data.fd;

		if (fd == pr->report[0])
			ev |= on_report(pr);
		else if (fd == pr->sigfd)
			ev |= on_signal(pr);
	}
	pump(&pr->out);
	if (pr->raw)
		pump(&pr->in);
	update_interest(pr);
	return ev;
}

int pty_fd(const struct pty_relay *pr)
{
	return pr->ep;
}

/* ---------- the watchdog ---------- */

/* Only the terminal and the pipe stay open in the watchdog. */
static void keep_only(int a, int b)
{
	int lo = a < b ? a : b, hi = a < b ? b : a;

	if (lo > 3)
		syscall(SYS_close_range, 3, lo - 1, 0);
	if (hi > lo + 1)
		syscall(SYS_close_range, lo + 1, hi - 1, 0);
	syscall(SYS_close_range, hi + 1, ~0U, 0);
}

/*
 * start_watchdog() - a process that outlives a SIGKILL of P: when P's end of its pipe closes and
 * the terminal is still in the raw modes P set, it puts the caller's modes back.
 */
static void start_watchdog(struct pty_relay *pr)
{
	int p[2];
	pid_t w;

	if (pipe2(p, O_CLOEXEC) < 0)
		return;
	w = fork();
	if (w < 0) {
		close(p[0]);
		close(p[1]);
		return;
	}
	if (w == 0) {
		struct termios now;
		char c;

		close(p[1]);
		keep_only(pr->term, p[0]);
		for (int s = 1; s < NSIG; s++)
			if (s != SIGKILL && s != SIGSTOP && s != SIGCONT)
				signal(s, SIG_IGN);   /* SIGTTOU too: the shell has the foreground by then */
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		while (read(p[0], &c, 1) < 0 && errno == EINTR)
			;
		if (atomic_load(&pr->sh->raw) && tcgetattr(pr->term, &now) == 0 &&
		    now.c_lflag == pr->sh->rawmodes.c_lflag && now.c_iflag == pr->sh->rawmodes.c_iflag &&
		    now.c_oflag == pr->sh->rawmodes.c_oflag)
			tcsetattr(pr->term, TCSANOW, &pr->sh->saved);
		_exit(0);
	}
	close(p[0]);
	pr->watchdog = p[1];
}

/* ---------- life ---------- */

static int watch(struct pty_relay *pr, int fd, uint32_t ev)
{
	return epoll_ctl(pr->ep, EPOLL_CTL_ADD, fd, &(struct epoll_event){ .events = ev, .data.fd = fd });
}

int pty_open(struct pty_relay **out, struct pty_child *child)
{
	struct pty_relay *pr;
	struct termios t;
	struct winsize ws;
	struct sigaction sa;
	struct stat st;
	char path[64];
	int tfd = -1;

	*out = NULL;
	for (int fd = 0; fd < 3 && tfd < 0; fd++)
		if (isatty(fd))
			tfd = fd;
	if (tfd < 0)
		return 0;
	pr = calloc(1, sizeof(*pr));
	if (!pr) {
		log_error("cannot open a pty for the command: %s", strerror(ENOMEM));
		return -1;
	}
	pr->term = pr->master = pr->slave = pr->sigfd = pr->ep = pr->watchdog = -1;
	pr->report[0] = pr->report[1] = -1;
	pr->sh = mmap(NULL, sizeof(*pr->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pr->sh == MAP_FAILED) {
		pr->sh = NULL;
		log_error("cannot allocate shared memory: %s", strerror(errno));
		pty_free(pr);
		return -1;
	}
	/* Our own open file description: O_NONBLOCK on it leaves the caller's fds as they are. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", tfd);
	pr->term = open(path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (pr->term < 0 || fstat(pr->term, &st) < 0 || tcgetattr(pr->term, &t) < 0) {
		log_warn("cannot open the terminal for reading and writing (%s): the command shares it, "
			 "and can signal the caller's process group", strerror(errno));
		pty_free(pr);
		return 0;
	}
	if (ioctl(pr->term, TIOCGWINSZ, &ws) < 0)
		memset(&ws, 0, sizeof(ws));
	pr->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (pr->master < 0 || grantpt(pr->master) < 0 || unlockpt(pr->master) < 0 ||
	    ptsname_r(pr->master, path, sizeof(path)) != 0 ||
	    (pr->slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		log_error("cannot open a pty for the command (/dev/ptmx): %s", strerror(errno));
		pty_free(pr);
		return -1;
	}
	/* The command's terminal starts as the caller's: its modes and size. */
	tcsetattr(pr->slave, TCSANOW, &t);
	ioctl(pr->master, TIOCSWINSZ, &ws);
	if (pipe2(pr->report, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    fcntl(pr->master, F_SETFL, O_RDWR | O_NONBLOCK) < 0) {
		log_error("cannot set up the command's pty: %s", strerror(errno));
		pty_free(pr);
		return -1;
	}
	child->slave = pr->slave;
	child->report = pr->report[1];
	child->fds = 0;
	for (int fd = 0; fd < 3; fd++)
		if (same_tty(fd, st.st_rdev))
			child->fds |= 1u << fd;
	if (ttyname_r(tfd, child->path, sizeof(child->path)) != 0)
		child->path[0] = '\0';
	pr->stop_ignored = sigaction(SIGTSTP, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
	pr->in = (struct pty_dir){ .src = pr->term, .dst = -1 };
	pr->out = (struct pty_dir){ .src = pr->master, .dst = -1 };
	*out = pr;
	return 0;
}

int pty_started(struct pty_relay *pr)
{
	int err;

	close(pr->slave);
	pr->slave = -1;
	close(pr->report[1]);
	pr->report[1] = -1;
	/* epoll needs one registration per direction: the second of each pair is a dup. */
	pr->in.dst = fcntl(pr->master, F_DUPFD_CLOEXEC, 3);
	pr->out.dst = fcntl(pr->term, F_DUPFD_CLOEXEC, 3);
	sigemptyset(&pr->sigs);
	sigaddset(&pr->sigs, SIGWINCH);
	sigaddset(&pr->sigs, SIGCONT);
	sigaddset(&pr->sigs, SIGTSTP);
	sigprocmask(SIG_BLOCK, &pr->sigs, NULL);
	/* A read of the terminal from the background must not stop us: EIO, and we wait for SIGCONT. */
	signal(SIGTTIN, SIG_IGN);
	pr->sigfd = signalfd(-1, &pr->sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	pr->ep = epoll_create1(EPOLL_CLOEXEC);
	if (pr->in.dst < 0 || pr->out.dst < 0 || pr->sigfd < 0 || pr->ep < 0 ||
	    watch(pr, pr->report[0], EPOLLIN) < 0 || watch(pr, pr->sigfd, EPOLLIN) < 0) {
		err = -errno;
		return err ? err : -EIO;
	}
	start_watchdog(pr);
	update_interest(pr);
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pty_finish(struct pty_relay *pr)
{
	int64_t end = now_ms() + FINISH_MS;

	if (!pr || pr->out.dst < 0)
		return;
	/* The tree is gone: the master reads what the slave still held, then EIO. */
	while (!(pr->out.eof && pr->out.buf.len == 0)) {
		int64_t left = end - now_ms();
		struct pollfd pf = pr->out.buf.len ? (struct pollfd){ .fd = pr->out.dst, .events = POLLOUT }
						   : (struct pollfd){ .fd = pr->out.src, .events = POLLIN };

		if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
			break;
		pump(&pr->out);
	}
	go_cooked(pr);
}

void pty_free(struct pty_relay *pr)
{
	int fds[] = { pr ? pr->slave : -1, pr ? pr->report[0] : -1, pr ? pr->report[1] : -1,
		      pr ? pr->sigfd : -1, pr ? pr->ep : -1, pr ? pr->in.dst : -1, pr ? pr->out.dst : -1,
		      pr ? pr->master : -1 };

	if (!pr)
		return;
	if (pr->sh)
		go_cooked(pr);
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (pr->watchdog >= 0)
		close(pr->watchdog);   /* the watchdog sees the terminal restored, and exits */
	if (pr->term >= 0)
		close(pr->term);
	if (pr->sh)
		munmap(pr->sh, sizeof(*pr->sh));
	free(pr);
}
