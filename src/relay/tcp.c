/* SPDX-License-Identifier: MIT */
/*
 * relay/tcp — TCP flows: accept from the gateway, dial upstream, splice both ways.
 *
 * A flow has two ends (0: the child's connection in N1, 1: P's upstream socket) and two directions
 * (dir[d] moves bytes from end[d] to end[!d]).  Sockets are edge-triggered, so each end remembers
 * whether it is readable/writable until a syscall says EAGAIN.  A direction borrows a pipe from the
 * pool only while bytes are in flight, so thousands of idle flows cost two sockets each.  EOF on one
 * side becomes shutdown(SHUT_WR) on the other once the pipe is drained (half-close); a reset or a
 * write error resets both sides (close with SO_LINGER 0 sends RST).
 */
#include "relay/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "util/log.h"

#define TCP_BUDGET (4u << 20)   /* bytes one flow may move before others get a turn */

struct tcp_end {
	struct ev_src ev;         /* kind EV_TCP_END, index = 0 or 1 */
	struct tcp_flow *flow;
	int fd;
	bool readable, writable;
	bool urgent;              /* EPOLLPRI seen: urgent data (MSG_OOB) may sit at the read mark */
};

struct tcp_dir {
	int pipe[2];
	size_t in_pipe;
	bool eof;                 /* the source sent FIN */
	bool shut;                /* FIN passed on to the destination */
	bool urg_pending;         /* an urgent byte waits to be sent with MSG_OOB */
	char urg_byte;
	uint64_t bytes;
};

struct tcp_flow {
	struct tcp_end end[2];
	struct tcp_dir dir[2];
	bool connecting;
	bool dead;                /* closed; freed after the current epoll batch */
	bool ready;               /* on r->tcp_ready */
	struct tcp_flow *next_ready;
	struct tcp_flow *prev, *next;
	struct sockaddr_storage dst;
};

/* ---------- pipe pool ---------- */

/*
 * pipe_get() - borrow a pipe for bytes in flight.  Pipes in use are capped (lim.max_pipes): a command
 * whose flows never read would otherwise pin one pipe per flow direction, gigabytes of kernel memory
 * for a root caller, whom the kernel's pipe-user-pages limits do not cover.  At the cap the bytes
 * wait in the sockets (the caller retries).
 */
static int pipe_get(struct relay *r, int p[2])
{
	if (r->pipes_in_use >= r->lim.max_pipes)
		return -ENOBUFS;
	r->pipes_in_use++;
	if (r->n_pipes > 0) {
		r->n_pipes--;
		p[0] = r->pipes[r->n_pipes][0];
		p[1] = r->pipes[r->n_pipes][1];
		return 0;
	}
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
		r->pipes_in_use--;
		return -errno;
	}
	/* Bigger pipes mean fewer splice() calls per byte; the kernel may cap it, which is fine. */
	fcntl(p[1], F_SETPIPE_SZ, (int)r->lim.pipe_size);
	return 0;
}

static void pipe_put(struct relay *r, int p[2])
{
	if (p[0] < 0)
		return;
	r->pipes_in_use--;
	if (r->n_pipes < r->lim.pipe_pool) {
		r->pipes[r->n_pipes][0] = p[0];
		r->pipes[r->n_pipes][1] = p[1];
		r->n_pipes++;
	} else {
		close(p[0]);
		close(p[1]);
	}
	p[0] = p[1] = -1;
}

/* ---------- flow lifetime ---------- */

static void reset_fd(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static void flow_unready(struct relay *r, struct tcp_flow *f)
{
	if (!f->ready)
		return;
	for (struct tcp_flow **pp = &r->tcp_ready; *pp; pp = &(*pp)->next_ready) {
		if (*pp == f) {
			*pp = f->next_ready;
			break;
		}
	}
	f->ready = false;
}

/* Close the flow; with @reset, both peers see a reset instead of an orderly close. */
static void flow_close(struct relay *r, struct tcp_flow *f, bool reset)
{
	log_debug("closing a TCP flow%s (%llu bytes up, %llu down)", reset ? " with a reset" : "",
		  (unsigned long long)f->dir[0].bytes, (unsigned long long)f->dir[1].bytes);
	flow_unready(r, f);
	for (int i = 0; i < 2; i++) {
		if (f->end[i].fd >= 0) {
			if (reset)
				reset_fd(f->end[i].fd);
			close(f->end[i].fd);   /* also removes it from epoll */
		}
		if (f->dir[i].in_pipe) {
			/* A pipe with bytes left in it cannot be reused. */
			close(f->dir[i].pipe[0]);
			close(f->dir[i].pipe[1]);
			r->pipes_in_use--;
		} else {
			pipe_put(r, f->dir[i].pipe);
		}
	}
	if (f->prev)
		f->prev->next = f->next;
	else
		r->tcp_all = f->next;
	if (f->next)
		f->next->prev = f->prev;
	r->n_tcp--;
	/* epoll may still hold events for this flow in the batch being handled: free it later. */
	f->dead = true;
	f->next = r->tcp_dead;
	r->tcp_dead = f;
}

void tcp_reap(struct relay *r)
{
	while (r->tcp_dead) {
		struct tcp_flow *f = r->tcp_dead;

		r->tcp_dead = f->next;
		free(f);
	}
}

/* ---------- data movement ---------- */

/*
 * take_urgent() - splice() stops at TCP's urgent mark and makes no progress there (EAGAIN, or 0 once
 * the peer has closed), so urgent data (telnet interrupts, FTP ABOR) would stall the flow or end it
 * early.  With SO_OOBINLINE the urgent byte is readable in line: take it with recv() and send it on
 * with MSG_OOB, so the far side sees urgent data too.  Returns true when a byte was taken.
 */
static bool take_urgent(struct tcp_end *src, struct tcp_dir *dir)
{
	int at_mark = 0;

	if (!src->urgent || ioctl(src->fd, SIOCATMARK, &at_mark) < 0 || !at_mark)
		return false;
	if (recv(src->fd, &dir->urg_byte, 1, MSG_DONTWAIT) != 1)
		return false;
	dir->urg_pending = true;
	return true;
}

enum pump_result { PUMP_IDLE, PUMP_BUDGET, PUMP_NOPIPE, PUMP_CLOSED };

/* A write to @dst made no progress: wait for EPOLLOUT, or (EPIPE, ECONNRESET) the destination is gone
 * and the source learns it by a reset. */
static enum pump_result write_stalled(struct relay *r, struct tcp_flow *f, struct tcp_end *dst)
{
	if (errno == EAGAIN) {
		dst->writable = false;
		return PUMP_IDLE;
	}
	flow_close(r, f, true);
	return PUMP_CLOSED;
}

static enum pump_result pump(struct relay *r, struct tcp_flow *f, int d, size_t *budget)
{
	struct tcp_dir *dir = &f->dir[d];
	struct tcp_end *src = &f->end[d], *dst = &f->end[!d];
	ssize_t n;

	for (;;) {
		if (dir->in_pipe) {
			if (!dst->writable)
				return PUMP_IDLE;
			n = splice(dir->pipe[0], NULL, dst->fd, NULL, dir->in_pipe,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				dir->in_pipe -= (size_t)n;
				dir->bytes += (uint64_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			return write_stalled(r, f, dst);
		}
		pipe_put(r, dir->pipe);
		if (dir->urg_pending) {
			if (!dst->writable)
				return PUMP_IDLE;
			n = send(dst->fd, &dir->urg_byte, 1, MSG_OOB | MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n == 1) {
				dir->urg_pending = false;
				dir->bytes++;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			return write_stalled(r, f, dst);
		}
		if (dir->eof) {
			if (!dir->shut) {
				shutdown(dst->fd, SHUT_WR);
				dir->shut = true;
			}
			return PUMP_IDLE;
		}
		if (!src->readable)
			return PUMP_IDLE;
		if (*budget == 0)
			return PUMP_BUDGET;
		int pr = pipe_get(r, dir->pipe);
		if (pr < 0) {
			/* Out of fds or at the cap: the bytes wait in the kernel until a pipe frees up. */
			if (pr != -ENOBUFS)
				relay_note_fd_shortage(r);
			return PUMP_NOPIPE;
		}
		n = splice(src->fd, NULL, dir->pipe[1], NULL, r->lim.pipe_size,
			   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			dir->in_pipe = (size_t)n;
			*budget = (size_t)n >= *budget ? 0 : *budget - (size_t)n;
			continue;
		}
		if ((n == 0 || errno == EAGAIN) && take_urgent(src, dir))
			continue;
		if (n == 0) {
			dir->eof = true;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			src->readable = false;
			continue;
		}
		/* The source was reset (ECONNRESET) or failed: pass the reset on. */
		flow_close(r, f, true);
		return PUMP_CLOSED;
	}
}

/* Move what can be moved in both directions; close the flow when both are finished. */
static void flow_pump(struct relay *r, struct tcp_flow *f)
{
	bool more = false;

	if (f->connecting)
		return;
	/* Each direction has its own budget, so a bulk upload cannot starve the replies. */
	for (int d = 0; d < 2; d++) {
		size_t budget = TCP_BUDGET;
		enum pump_result pr = pump(r, f, d, &budget);

		if (pr == PUMP_CLOSED)
			return;
		if (pr == PUMP_BUDGET)
			more = true;
		if (pr == PUMP_NOPIPE) {
			more = true;
			r->pipe_starved = true;
		}
	}
	if (f->dir[0].shut && f->dir[1].shut) {
		flow_close(r, f, false);
		return;
	}
	if (more && !f->ready) {
		f->ready = true;
		f->next_ready = r->tcp_ready;
		r->tcp_ready = f;
	}
}

void tcp_run_ready(struct relay *r)
{
	struct tcp_flow *list = r->tcp_ready;

	r->tcp_ready = NULL;
	while (list) {
		struct tcp_flow *f = list;

		list = f->next_ready;
		f->ready = false;
		f->next_ready = NULL;
		flow_pump(r, f);
	}
}

/* ---------- connection setup ---------- */

static int dial(const struct sockaddr_storage *dst, bool *connected)
{
	socklen_t len = dst->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	int one = 1;
	int fd = socket(dst->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one));
	*connected = connect(fd, (const struct sockaddr *)dst, len) == 0;
	if (!*connected && errno != EINPROGRESS) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static void connect_done(struct relay *r, struct tcp_flow *f)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(f->end[1].fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		log_debug("upstream connect failed: %s", strerror(err));
		r->stats.tcp_failed++;
		flow_close(r, f, true);
		return;
	}
	enum guard_verdict v = guard_check_connected(&r->guard, f->end[1].fd);   /* host NAT */
	if (v != GUARD_ALLOW) {
		log_debug("refusing a TCP connection once connected: %s", guard_reason(v));
		r->stats.tcp_refused++;
		flow_close(r, f, true);
		return;
	}
	f->connecting = false;
	f->end[1].writable = true;
	f->end[1].readable = true;
	flow_pump(r, f);
}

void tcp_accept(struct relay *r, int lfd)
{
	for (int burst = 0; burst < 64; burst++) {
		struct sockaddr_storage dst = { 0 };
		socklen_t dlen = sizeof(dst);
		int one = 1;
		int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				relay_pause_accept(r);
			return;
		}
		if (getsockname(c, (struct sockaddr *)&dst, &dlen) < 0) {
			reset_fd(c);
			close(c);
			continue;
		}
		enum guard_verdict v = guard_check(&r->guard, (struct sockaddr *)&dst);
		if (v != GUARD_ALLOW || r->n_tcp >= r->lim.max_tcp) {
			log_debug("refusing a TCP connection: %s",
				  v != GUARD_ALLOW ? guard_reason(v) : "too many connections");
			r->stats.tcp_refused++;
			reset_fd(c);
			close(c);
			continue;
		}
		bool connected = false;
		int up = dial(&dst, &connected);
		if (up < 0) {
			if (up == -EMFILE || up == -ENFILE)
				relay_pause_accept(r);   /* more would fail the same way */
			log_debug("upstream connect failed at once: %s", strerror(-up));
			r->stats.tcp_failed++;
			reset_fd(c);
			close(c);
			continue;
		}
		struct tcp_flow *f = calloc(1, sizeof(*f));
		if (!f) {
			reset_fd(c);
			close(c);
			reset_fd(up);
			close(up);
			continue;
		}
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(c, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one));
		f->dst = dst;
		f->connecting = !connected;
		for (int i = 0; i < 2; i++) {
			f->end[i].ev.kind = EV_TCP_END;
			f->end[i].ev.index = i;
			f->end[i].flow = f;
			f->dir[i].pipe[0] = f->dir[i].pipe[1] = -1;
		}
		f->end[0].fd = c;
		f->end[1].fd = up;
		f->end[0].readable = f->end[0].writable = true;
		f->next = r->tcp_all;
		if (r->tcp_all)
			r->tcp_all->prev = f;
		r->tcp_all = f;
		r->n_tcp++;
		r->stats.tcp_accepted++;
		uint32_t ev = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;
		if (relay_watch(r, c, ev, &f->end[0].ev) < 0 || relay_watch(r, up, ev, &f->end[1].ev) < 0) {
			flow_close(r, f, true);
			continue;
		}
		if (connected)
			connect_done(r, f);
	}
}

void tcp_event(struct relay *r, struct ev_src *src, uint32_t events)
{
	struct tcp_end *e = (struct tcp_end *)src;
	struct tcp_flow *f = e->flow;

	if (f->dead)
		return;
	if (f->connecting) {
		if (src->index == 1) {
			if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
				connect_done(r, f);
			return;
		}
		/* The child gave up (reset) before the upstream answered. */
		if (events & (EPOLLERR | EPOLLHUP)) {
			flow_close(r, f, true);
			return;
		}
		if (events & EPOLLPRI)
			e->urgent = true;
		e->readable = true;
		return;
	}
	/* A reset may arrive after this side's EOF, when nothing reads it any more: pass it on. */
	if (events & EPOLLERR) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err) {
			flow_close(r, f, true);
			return;
		}
	}
	if (events & EPOLLPRI)
		e->urgent = true;
	/* HUP is learnt by the next splice(), which reports EOF or the error. */
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
		e->readable = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		e->writable = true;
	flow_pump(r, f);
}

/* After the command exited: has everything the child sent been passed upstream?  Nothing can come
 * back to a dead child, so the other direction does not matter. */
bool tcp_drained(const struct relay *r)
{
	for (const struct tcp_flow *f = r->tcp_all; f; f = f->next)
		if (!f->dir[0].shut)
			return false;
	return true;
}

void tcp_close_all(struct relay *r)
{
	/* A flow whose upstream direction is finished closes normally, so the kernel still delivers
	 * what its socket holds; anything else is cut short and learns it by a reset. */
	while (r->tcp_all)
		flow_close(r, r->tcp_all, !r->tcp_all->dir[0].shut);
	tcp_reap(r);
	for (unsigned int i = 0; i < r->n_pipes; i++) {
		close(r->pipes[i][0]);
		close(r->pipes[i][1]);
	}
	r->n_pipes = 0;
}
