/* SPDX-License-Identifier: MIT */
/*
 * relay/tcp — TCP flows: begin from the child's connection, connect through a connector, splice.
 *
 * A flow has two ends (0: the child's connection in the interception namespace, 1: P's upstream
 * socket) and two directions (dir[d] moves bytes from end[d] to end[!d]).
 *
 * States of a flow:
 *   CONNECTING  tcp_flow_begin() asked the policy and started the route's connector on end[1]; its
 *               events go to the connector's step().  The child's socket may not be adopted yet
 *               (a flow begun from a SYN); its events only mark it readable or reset the flow.
 *               Bounded in time (connector timeout or lim.connect_ms) and in number
 *               (lim.max_connecting: the oldest yields to a new one once it has been pending
 *               lim.yield_ms; before that, new connections wait in the listener's backlog).
 *   ACCEPTING   (a flow begun from a SYN, relay/gate.c) upstream connected and allowed, the SYN
 *               passed: waiting for accept() to hand over the child's socket (GATE_ACCEPT_MS at
 *               most); upstream events only mark readiness.
 *   SPLICING    the connector said READY (and the child's socket is here): bytes move both ways
 *               (through the connector's stream when it has one, e.g. TLS to a proxy: then copied,
 *               never spliced).
 *   CLOSED      flow_close(): sockets closed (with a reset when it failed), the record ended and
 *               observed; freed after the current epoll batch.
 *
 * Events within SPLICING, per direction: the source is readable / at EOF (FIN) / reset; the
 * destination is writable / stalled / gone.  Sockets are edge-triggered, so each end remembers
 * whether it is readable/writable until a syscall says EAGAIN.  A direction borrows a pipe from the
 * pool only while bytes are in flight, and for a destination that cannot take bytes now only while
 * most pipes are free, so thousands of idle or stalled flows cost two sockets each and pin at most
 * half the pipes; when no pipe can be had (the cap, or no fds), it copies
 * through one shared scratch buffer instead (recv MSG_PEEK, send, then drop exactly what was sent),
 * so pipes pinned by stalled flows never stop the others.  EOF on one side becomes shutdown(SHUT_WR)
 * on the other once the pipe is drained (half-close); a reset or a write error resets both sides
 * (close with SO_LINGER 0 sends RST).  A reset does not overtake bytes its sender wrote before it:
 * the end that failed is remembered as dead (tcp_end.err), nothing more is written to it, what its
 * socket still holds is passed on, and only then is the other side reset.  Urgent data passes
 * through with MSG_OOB.  While a hook holds (the capture's writer is behind, relay_hold()), no
 * flow reads: one with bytes to read is parked on r->tcp_paused (its readable flag kept) and goes on
 * once no hook holds; what its pipe holds still goes out, and TCP flow control stops the senders.
 *
 * A probe (tcp_probe()) is a flow without a child: its connector checks that the route works (the
 * proxy answers, takes the credentials) and the flow ends at READY.  It has no life record.
 */
#include "relay/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "netlink/nfq.h"
#include "util/log.h"

#define TCP_BUDGET (4u << 20)   /* bytes one flow may move before others get a turn */
#define GATE_ACCEPT_MS 5000     /* a passed SYN whose handshake never reaches accept(): the child left */
#define SCRATCH_SIZE (64u << 10)

enum tcp_state { TCP_CONNECTING, TCP_ACCEPTING, TCP_SPLICING };

struct tcp_end {
	struct ev_src ev;         /* kind EV_TCP_END, index = 0 or 1 */
	struct tcp_flow *flow;
	int fd;
	bool readable, writable;
	bool urgent;              /* EPOLLPRI seen: urgent data (MSG_OOB) may sit at the read mark */
	int err;                  /* the connection is dead (reset, write error): errno; bytes it
				   * received before still wait to be passed on */
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
	struct flow_record rec;
	struct tcp_end end[2];
	struct tcp_dir dir[2];
	enum tcp_state state;
	const struct connector *conn;
	uint32_t up_events;       /* what end[1] is watched for (epoll), changed only when it differs */
	const struct conn_stream_ops *stream;   /* SPLICING through the connector's stream */
	char *name;               /* the name the child resolved the destination from (rec.dst_name) */
	bool probe;               /* no child, no record: tcp_probe() */
	bool conn_failed;         /* the connector said FAILED (it cleaned up: no abort()) */
	bool direct;              /* the route dials the destination itself: check for host NAT */
	bool gated;               /* begun from a SYN: in r->gate_hash until adopted */
	bool held;                /* its SYN (packet gate_id) waits for a verdict */
	uint32_t gate_id, gate_isn;
	int ttl;                  /* the child's own TTL carried upstream (relay_child_ttl()), or 0 */
	struct tcp_flow *gnext;   /* r->gate_hash chain */
	bool verifying;           /* connected; on r->tcp_verify until the NAT check of this loop turn */
	struct tcp_flow *next_verify;
	int first_dead;           /* the end that failed first, when both have (for the record) */
	uint64_t begun_ms;
	uint64_t deadline_ms;     /* CONNECTING: fail with ETIMEDOUT then */
	struct tcp_flow *cnewer, *colder;   /* the connecting list */
	bool dead;                /* closed; freed after the current epoll batch */
	bool ready;               /* on r->tcp_ready */
	struct tcp_flow *next_ready;
	bool paused;              /* on r->tcp_paused */
	struct tcp_flow *next_paused;
	struct tcp_flow *prev, *next;
	_Alignas(16) unsigned char cstate[];   /* the connector's state_size bytes */
};

#define EV_ALL (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET)

int tcp_init(struct relay *r)
{
	r->pipes = calloc(r->lim.pipe_pool, sizeof(*r->pipes));
	r->scratch = malloc(SCRATCH_SIZE);
	if (!r->pipes || !r->scratch)
		return -ENOMEM;
	return 0;
}

/* ---------- pipe pool ---------- */

/*
 * pipe_get() - borrow a pipe for bytes in flight.  Pipes in use are capped (lim.max_pipes): a command
 * whose flows never read would otherwise pin one pipe per flow direction, gigabytes of kernel memory
 * for a root caller, whom the kernel's pipe-user-pages limits do not cover.
 * Return: 0, -ENOBUFS at the cap, or -errno (EMFILE...).
 */
static int pipe_get(struct relay *r, int p[2])
{
	if (r->pipes_in_use >= r->lim.max_pipes)
		return -ENOBUFS;
	r->pipes_in_use++;
	r->pipe_borrows++;
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

/* Take @f off the ready and the paused lists (it closes). */
static void flow_unready(struct relay *r, struct tcp_flow *f)
{
	for (struct tcp_flow **pp = &r->tcp_ready; f->ready && *pp; pp = &(*pp)->next_ready) {
		if (*pp == f) {
			*pp = f->next_ready;
			break;
		}
	}
	f->ready = false;
	for (struct tcp_flow **pp = &r->tcp_paused; f->paused && *pp; pp = &(*pp)->next_paused) {
		if (*pp == f) {
			*pp = f->next_paused;
			break;
		}
	}
	f->paused = false;
}

static void connecting_unlink(struct relay *r, struct tcp_flow *f)
{
	if (f->cnewer)
		f->cnewer->colder = f->colder;
	else
		r->conn_new = f->colder;
	if (f->colder)
		f->colder->cnewer = f->cnewer;
	else
		r->conn_old = f->cnewer;
	f->cnewer = f->colder = NULL;
	r->n_connecting--;
}

static void connecting_link(struct relay *r, struct tcp_flow *f)
{
	f->colder = r->conn_new;
	f->cnewer = NULL;
	if (r->conn_new)
		r->conn_new->cnewer = f;
	else
		r->conn_old = f;
	r->conn_new = f;
	r->n_connecting++;
}

/* ---------- flows begun from a SYN (relay/gate.c) ---------- */

static unsigned int gate_bucket(const struct relay *r, const struct sockaddr_storage *child,
				const struct sockaddr_storage *dst)
{
	return (unsigned int)(relay_pair_hash(r, child, dst) & (r->gate_buckets - 1));
}

static struct tcp_flow *gate_find(const struct relay *r, const struct sockaddr_storage *child,
				  const struct sockaddr_storage *dst)
{
	if (!r->gate_hash)
		return NULL;
	for (struct tcp_flow *f = r->gate_hash[gate_bucket(r, child, dst)]; f; f = f->gnext)
		if (flow_same_endpoint(&f->rec.child, child) && flow_same_endpoint(&f->rec.dst, dst))
			return f;
	return NULL;
}

static void gate_unlink(struct relay *r, struct tcp_flow *f)
{
	struct sockaddr_storage child = { 0 }, dst = { 0 };

	if (!f->gated)
		return;
	memcpy(&child, &f->rec.child, sizeof(f->rec.child));
	memcpy(&dst, &f->rec.dst, sizeof(f->rec.dst));
	for (struct tcp_flow **pp = &r->gate_hash[gate_bucket(r, &child, &dst)]; *pp; pp = &(*pp)->gnext) {
		if (*pp == f) {
			*pp = f->gnext;
			break;
		}
	}
	f->gated = false;
	f->gnext = NULL;
}

/*
 * flow_close() - end the flow.  With @reset both peers see a reset instead of an orderly close.
 * @outcome and @err go to the life record (an outcome set earlier wins).
 */
static void flow_close(struct relay *r, struct tcp_flow *f, bool reset, enum flow_outcome outcome, int err)
{
	flow_unready(r, f);
	if (f->state == TCP_CONNECTING || f->state == TCP_ACCEPTING) {
		connecting_unlink(r, f);
		if (f->state == TCP_ACCEPTING)
			r->n_accepting--;
		if (f->state == TCP_CONNECTING && f->conn && f->conn->ops->abort && !f->conn_failed)
			f->conn->ops->abort(f->cstate, outcome == FLOW_UP_TIMEOUT ? CONN_ABORT_TIMEOUT
										 : CONN_ABORT_ENDED);
	}
	if (f->state != TCP_CONNECTING && f->stream)
		f->stream->release(f->cstate);
	if (f->held) {
		enum flow_outcome o = f->rec.outcome ? f->rec.outcome : outcome;
		enum gate_reply v = gate_reply_for(o, f->rec.outcome ? f->rec.err : err);

		/* Its SYN still waits: the child learns the outcome as the destination gave it.  Through
		 * a proxy that did not answer in time, nothing more can be learnt: say so at once, as a
		 * refusal, rather than leave the child retransmitting into new attempts. */
		if (v == GATE_DROP && !f->direct && (o == FLOW_UP_TIMEOUT || o == FLOW_UP_FAILED))
			v = GATE_REFUSE;
		f->held = false;
		gate_answer(r, f->gate_id, v);
	}
	gate_unlink(r, f);
	if (r->hub.tap && f->end[1].fd >= 0) {
		/* an attempt that never became ready: what it got is on its socket still (capture) */
		if (f->state == TCP_CONNECTING && !f->probe && r->hub.tap->failed)
			r->hub.tap->failed(r->hub.tap->priv, &f->rec, f->end[1].fd, f->rec.outcome ? f->rec.err : err);
		flow_tap_sock(&r->hub, f->end[1].fd, SOCK_STREAM, false);
	}
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
	f->rec.bytes_up = f->dir[0].bytes;
	f->rec.bytes_down = f->dir[1].bytes;
	if (!f->probe)
		flow_end(&r->hub, &f->rec, outcome, err);
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
		free(f->name);
		free(f);
	}
}

/* ---------- data movement ---------- */

/*
 * take_urgent_at_mark() - splice() stops at TCP's urgent mark and makes no progress there (EAGAIN, or 0 once
 * the peer has closed), so urgent data (telnet interrupts, FTP ABOR) would stall the flow or end it
 * early.  With SO_OOBINLINE the urgent byte is readable in line: take it with recv() and send it on
 * with MSG_OOB, so the far side sees urgent data too.  Return: true when a byte was taken.
 */
static bool take_urgent_at_mark(struct tcp_end *src, struct tcp_dir *dir)
{
	int at_mark = 0;

	if (ioctl(src->fd, SIOCATMARK, &at_mark) < 0 || !at_mark)
		return false;
	if (recv(src->fd, &dir->urg_byte, 1, MSG_DONTWAIT) != 1)
		return false;
	dir->urg_pending = true;
	return true;
}

/* take_urgent() - the same, once EPOLLPRI said that urgent data came (splice's slow path). */
static bool take_urgent(struct tcp_end *src, struct tcp_dir *dir)
{
	return src->urgent && take_urgent_at_mark(src, dir);
}

/* PUMP_HELD: bytes wait to be read, but a hook (the capture) holds reads (relay_hold()). */
enum pump_result { PUMP_IDLE, PUMP_BUDGET, PUMP_CLOSED, PUMP_AGAIN, PUMP_HELD };

/*
 * fin_follows() - does a FIN follow what direction @d's pipe holds, as soon as it is written?  Only
 * for a plain socket whose source sent FIN, with no urgent byte and no reset to pass on after it.
 */
static bool fin_follows(const struct tcp_flow *f, int d)
{
	const struct tcp_dir *dir = &f->dir[d];

	return dir->eof && !dir->shut && !dir->urg_pending && !f->end[d].err && !f->end[!d].err &&
	       !f->stream;
}

/*
 * peek_eof() - a read into direction @d's pipe stopped short: look at the socket once more before
 * the bytes go out, so that a FIN right behind them (a server's reply and close) is known and
 * leaves in their segment (fin_follows()).  Costs no syscall: the look replaces the read that would
 * follow the write, and says the same (EOF, or EAGAIN: nothing more now).  A peek, because a
 * splice() into a pipe short of free slots says EAGAIN too.  Anything else (bytes, a reset) is
 * left to pump()'s own read after the write; so is a source with urgent data or a failure to pass
 * on, and any read while a hook holds reads.
 */
static void peek_eof(struct relay *r, struct tcp_flow *f, int d)
{
	struct tcp_end *src = &f->end[d];
	char c;
	ssize_t n;

	if (src->urgent || src->err || (r->n_hooks && relay_hold(r)))
		return;
	n = recv(src->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0)
		f->dir[d].eof = true;
	else if (n < 0 && errno == EAGAIN)
		src->readable = false;
}

/* Which side a failure of end @i is (for the record). */
static enum flow_outcome reset_outcome(int i)
{
	return i == 0 ? FLOW_RESET_CHILD : FLOW_RESET_UP;
}

/*
 * end_dead() - end @i of @f failed with @err (a reset, a write error).  Nothing more can be written to
 * it, but what it received before may still sit in its socket: that is read and passed on first (see
 * read_ended()), so the other side learns of the reset after those bytes, as it would directly.
 */
static void end_dead(struct tcp_flow *f, int i, int err)
{
	if (f->end[i].err)
		return;
	f->end[i].err = err;
	f->end[i].readable = true;
	if (!f->end[!i].err)
		f->first_dead = i;
}

/* A write to end @di made no progress: wait for EPOLLOUT, or (EPIPE, ECONNRESET) the destination is
 * gone: its own direction passes on what it still holds, then resets the source. */
static enum pump_result write_stalled(struct tcp_flow *f, int di)
{
	if (errno == EAGAIN)
		f->end[di].writable = false;
	else
		end_dead(f, di, errno);
	return PUMP_IDLE;
}

/*
 * read_ended() - a read from the source made no progress (@n is 0 or -1 with errno).  Takes an
 * urgent byte, notes EOF or EAGAIN, or passes a reset on: a dead source has now given all it held.
 * Return: PUMP_AGAIN to go on, or PUMP_CLOSED.
 */
static enum pump_result read_ended(struct relay *r, struct tcp_flow *f, int d, ssize_t n)
{
	struct tcp_end *src = &f->end[d];
	struct tcp_dir *dir = &f->dir[d];

	if ((n == 0 || errno == EAGAIN) && take_urgent(src, dir))
		return PUMP_AGAIN;
	if (src->err && (n == 0 || errno == EAGAIN)) {
		flow_close(r, f, true, reset_outcome(d), src->err);
		return PUMP_CLOSED;
	}
	if (n == 0) {
		dir->eof = true;
		return PUMP_AGAIN;
	}
	if (errno == EINTR)
		return PUMP_AGAIN;
	if (errno == EAGAIN) {
		src->readable = false;
		return PUMP_AGAIN;
	}
	/* The source was reset (ECONNRESET) or failed: pass the reset on. */
	flow_close(r, f, true, reset_outcome(d), errno);
	return PUMP_CLOSED;
}

/* The connector's stream (TLS) when end @i of @f is one, not a socket the engine reads itself. */
static const struct conn_stream_ops *stream_of(const struct tcp_flow *f, int i)
{
	return i == 1 ? f->stream : NULL;
}

static bool is_stream(const struct tcp_flow *f, int i)
{
	return stream_of(f, i) != NULL;
}

static ssize_t end_send(struct tcp_flow *f, int i, const void *buf, size_t len, int flags)
{
	const struct conn_stream_ops *st = stream_of(f, i);

	if (st)
		return st->send(f->cstate, f->end[i].fd, buf, len);
	return send(f->end[i].fd, buf, len, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
}

/*
 * copy_once() - move bytes without a pipe, through the shared scratch buffer.  From a socket: peek,
 * send, then drop exactly what the destination took; nothing stays in user space between calls.
 * From a stream (TLS): read (the stream decrypts straight into the scratch buffer), send, and give
 * back to the stream what the destination did not take.  The only way for a flow with a stream,
 * and the fallback when pipes run short.
 */
static enum pump_result copy_once(struct relay *r, struct tcp_flow *f, int d, size_t *budget)
{
	const struct conn_stream_ops *st = stream_of(f, d);
	struct tcp_end *src = &f->end[d];
	struct tcp_dir *dir = &f->dir[d];
	size_t want = *budget < SCRATCH_SIZE ? *budget : SCRATCH_SIZE;
	ssize_t n, m;

	/* recv() stops before the urgent mark but not at it: a read that starts there would pass the
	 * urgent byte on in line.  Take it first (always asked: EPOLLPRI may not have been seen yet). */
	if (!st && take_urgent_at_mark(src, dir))
		return PUMP_AGAIN;
	n = st ? st->read(f->cstate, src->fd, r->scratch, want)
	       : recv(src->fd, r->scratch, want, MSG_PEEK | MSG_DONTWAIT);
	if (n <= 0)
		return read_ended(r, f, d, n);
	m = end_send(f, !d, r->scratch, (size_t)n, 0);
	if (st && m < n) {
		int e = st->unread(f->cstate, r->scratch + (m > 0 ? m : 0), (size_t)(n - (m > 0 ? m : 0)));

		if (e < 0) {
			flow_close(r, f, true, reset_outcome(d), -e);
			return PUMP_CLOSED;
		}
	}
	if (m <= 0) {
		if (m == 0)
			errno = EAGAIN;
		return write_stalled(f, !d);
	}
	if (!st && recv(src->fd, NULL, (size_t)m, MSG_TRUNC | MSG_DONTWAIT) != m) {
		/* The peeked bytes cannot vanish from a socket only we read; if they did, the stream
		 * would be corrupt: end it. */
		flow_close(r, f, true, reset_outcome(d), EIO);
		return PUMP_CLOSED;
	}
	dir->bytes += (uint64_t)m;
	if (r->hub.tap && r->hub.tap->stream)
		r->hub.tap->stream(r->hub.tap->priv, &f->rec, d, r->scratch, (size_t)m);
	else if (!f->stream)
		r->stats.copied += (uint64_t)m;
	*budget = (size_t)m >= *budget ? 0 : *budget - (size_t)m;
	return PUMP_AGAIN;
}

static enum pump_result pump(struct relay *r, struct tcp_flow *f, int d, size_t *budget)
{
	struct tcp_dir *dir = &f->dir[d];
	struct tcp_end *src = &f->end[d], *dst = &f->end[!d];
	enum pump_result pr;
	ssize_t n;

	for (;;) {
		if (dst->err)
			return PUMP_IDLE;   /* nothing reaches a dead end; its own direction ends the flow */
		if (dir->in_pipe) {
			if (!dst->writable)
				return PUMP_IDLE;
			/* The FIN follows these last bytes at once (below): held back until then, it
			 * leaves in their segment instead of one of its own. */
			n = splice(dir->pipe[0], NULL, dst->fd, NULL, dir->in_pipe,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (fin_follows(f, d) ? SPLICE_F_MORE : 0));
			if (n > 0) {
				dir->in_pipe -= (size_t)n;
				dir->bytes += (uint64_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			return write_stalled(f, !d);
		}
		pipe_put(r, dir->pipe);
		if (dir->urg_pending) {
			if (!dst->writable)
				return PUMP_IDLE;
			n = end_send(f, !d, &dir->urg_byte, 1, MSG_OOB);
			if (n == 1) {
				dir->urg_pending = false;
				dir->bytes++;
				if (r->hub.tap && r->hub.tap->stream)
					r->hub.tap->stream(r->hub.tap->priv, &f->rec, d, &dir->urg_byte, 1);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			return write_stalled(f, !d);
		}
		if (dir->eof) {
			if (src->err) {
				/* Reset after its EOF: everything it sent has been passed on. */
				flow_close(r, f, true, reset_outcome(d), src->err);
				return PUMP_CLOSED;
			}
			if (!dir->shut) {
				const struct conn_stream_ops *st = stream_of(f, !d);

				if (st)
					st->shutdown(f->cstate, dst->fd);
				else if (!f->dir[!d].shut)
					shutdown(dst->fd, SHUT_WR);
				/* else the flow closes now (flow_pump()), and close() sends this FIN: the
				 * destination's own FIN was read, so nothing unread makes it a reset. */
				dir->shut = true;
			}
			return PUMP_IDLE;
		}
		/* Nothing to read: borrow nothing.  A destination that cannot take bytes now may have a
		 * pipe filled in advance (it keeps bulk transfers streaming) only while most pipes are
		 * free: stalled flows pin at most half of them, and never stop the others (copy_once). */
		if (!src->readable || (!dst->writable && r->pipes_in_use >= r->lim.max_pipes / 2))
			return PUMP_IDLE;
		if (*budget == 0)
			return PUMP_BUDGET;
		if (r->n_hooks && relay_hold(r))
			return PUMP_HELD;   /* what is in flight still goes; the senders wait */
		/* A stream is copied: its bytes exist only in user space; with a tap that wants the
		 * bytes, every flow is (the tap sees them where they are). */
		int pg = f->stream || (r->hub.tap && r->hub.tap->stream) ? -EXDEV : pipe_get(r, dir->pipe);
		if (pg < 0) {
			/* At the cap or out of fds: copy instead, so that flows holding pipes (stalled
			 * ones) never stop the others. */
			if (pg != -ENOBUFS && pg != -EXDEV)
				relay_shortage(r, SHORT_FDS);
			pr = copy_once(r, f, d, budget);
			if (pr != PUMP_AGAIN)
				return pr;
			continue;
		}
		n = splice(src->fd, NULL, dir->pipe[1], NULL, r->lim.pipe_size,
			   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			dir->in_pipe = (size_t)n;
			*budget = (size_t)n >= *budget ? 0 : *budget - (size_t)n;
			if ((size_t)n < r->lim.pipe_size)
				peek_eof(r, f, d);
			continue;
		}
		pr = read_ended(r, f, d, n);
		if (pr != PUMP_AGAIN)
			return pr;
	}
}

/* Move what can be moved in both directions; close the flow when both are finished. */
static void flow_pump(struct relay *r, struct tcp_flow *f)
{
	bool more = false, held = false;

	if (f->state != TCP_SPLICING)
		return;
	/* Each direction has its own budget, so a bulk upload cannot starve the replies.  A pass that
	 * finds an end dead (a write failed) goes round once more, so that the dead end's direction
	 * passes on what it holds and ends the flow. */
	for (int pass = 0; pass < 2; pass++) {
		bool dead_before = f->end[0].err || f->end[1].err;

		for (int d = 0; d < 2; d++) {
			size_t budget = TCP_BUDGET;
			enum pump_result pr = pump(r, f, d, &budget);

			if (pr == PUMP_CLOSED)
				return;
			if (pr == PUMP_BUDGET)
				more = true;
			if (pr == PUMP_HELD)
				held = true;
		}
		if (f->end[0].err && f->end[1].err) {
			/* Both connections are dead: nothing can be delivered any more. */
			flow_close(r, f, true, reset_outcome(f->first_dead), f->end[f->first_dead].err);
			return;
		}
		if (dead_before || !(f->end[0].err || f->end[1].err))
			break;
	}
	if (f->dir[0].shut && f->dir[1].shut) {
		flow_close(r, f, false, FLOW_OK, 0);
		return;
	}
	if (held && !f->paused) {
		f->paused = true;
		f->next_paused = r->tcp_paused;
		r->tcp_paused = f;
	} else if (more && !f->ready) {
		f->ready = true;
		f->next_ready = r->tcp_ready;
		r->tcp_ready = f;
	}
}

void tcp_resume(struct relay *r)
{
	struct tcp_flow *list = r->tcp_paused;

	if (!list || relay_hold(r))
		return;
	r->tcp_paused = NULL;
	while (list) {
		struct tcp_flow *f = list;

		list = f->next_paused;
		f->paused = false;
		f->next_paused = NULL;
		if (!f->dead && !f->ready) {
			f->ready = true;
			f->next_ready = r->tcp_ready;
			r->tcp_ready = f;
		}
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
		if (!f->dead)   /* closed meanwhile (freed only after the batch) */
			flow_pump(r, f);
	}
}

/* ---------- connection setup ---------- */

/* Watch the upstream socket for @events, unless it already is.  Return: 0 or -errno. */
static int watch_up(struct relay *r, struct tcp_flow *f, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = &f->end[1].ev };

	if (f->up_events == events)
		return 0;
	if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, f->end[1].fd, &ev) < 0)
		return -errno;
	f->up_events = events;
	return 0;
}

static void set_want(struct relay *r, struct tcp_flow *f, uint32_t want)
{
	watch_up(r, f, want | EPOLLRDHUP | EPOLLPRI | EPOLLET);
}

/* The flow is connected and allowed: from now on both ends splice. */
static void start_splicing(struct relay *r, struct tcp_flow *f)
{
	int err;

	if (f->held) {
		/* Let the child's SYN through; its socket arrives by accept() (tcp_accept()). */
		if (r->hub.tap && r->hub.tap->ready)
			r->hub.tap->ready(r->hub.tap->priv, &f->rec, f->end[1].fd);
		f->held = false;
		gate_answer(r, f->gate_id, GATE_PASS);
		f->state = TCP_ACCEPTING;
		r->n_accepting++;
		r->accept_soon |= f->rec.dst.sa.sa_family == AF_INET6 ? 2u : 1u;
		f->stream = f->conn->ops->stream;
		f->deadline_ms = r->now_ms + GATE_ACCEPT_MS;
		if ((err = watch_up(r, f, EV_ALL)) < 0)
			flow_close(r, f, true, FLOW_NO_RESOURCES, -err);
		return;
	}
	connecting_unlink(r, f);
	f->state = TCP_SPLICING;
	f->stream = f->conn->ops->stream;
	if (r->hub.tap && r->hub.tap->ready)
		r->hub.tap->ready(r->hub.tap->priv, &f->rec, f->end[1].fd);
	f->end[1].writable = true;
	f->end[1].readable = true;
	if ((err = watch_up(r, f, EV_ALL)) < 0) {
		flow_close(r, f, true, FLOW_NO_RESOURCES, -err);
		return;
	}
	if (f->end[0].fd >= 0)
		flow_pump(r, f);
}

/*
 * connect_ready() - the connector said READY.  A direct connection may still end on this host (host
 * NAT): it waits, moving no byte, for the check that tcp_verify() makes once per loop turn for all
 * such flows together; other routes splice at once.
 */
static void connect_ready(struct relay *r, struct tcp_flow *f)
{
	if (f->probe) {
		const struct connector *conn = f->conn;

		log_debug("the %s route works (probe)", conn->ops->name);
		flow_close(r, f, false, FLOW_OK, 0);
		if (conn->ops->again && conn->ops->again(conn->cfg))
			tcp_probe(r, conn);
		return;
	}
	if (!f->direct) {
		start_splicing(r, f);
		return;
	}
	f->verifying = true;
	f->next_verify = r->tcp_verify;
	r->tcp_verify = f;
}

void tcp_verify(struct relay *r)
{
	while (r->tcp_verify) {
		struct tcp_flow *batch[POLICY_BATCH_MAX];
		struct policy_verdict v[POLICY_BATCH_MAX];
		struct sockaddr_storage dsts[POLICY_BATCH_MAX];
		int fds[POLICY_BATCH_MAX], n = 0;

		while (r->tcp_verify && n < POLICY_BATCH_MAX) {
			struct tcp_flow *f = r->tcp_verify;

			r->tcp_verify = f->next_verify;
			f->next_verify = NULL;
			f->verifying = false;
			if (f->dead)
				continue;
			batch[n] = f;
			/* A direct connector dialled the flow's destination: what getpeername() says. */
			memset(&dsts[n], 0, sizeof(dsts[n]));
			memcpy(&dsts[n], &f->rec.dst, sizeof(f->rec.dst));
			fds[n++] = f->end[1].fd;
		}
		policy_check_connected(&r->c->policy, fds, dsts, n, v);
		for (int i = 0; i < n; i++) {
			struct tcp_flow *f = batch[i];

			if (v[i].action == POL_DENY) {
				log_debug("refusing a TCP connection once connected: %s", v[i].reason);
				r->stats.tcp_denied++;
				f->rec.rule = v[i].reason;
				flow_close(r, f, true, FLOW_DENIED, EACCES);
			} else {
				start_splicing(r, f);
			}
		}
	}
}

static void connect_failed(struct relay *r, struct tcp_flow *f, enum flow_outcome o, int err)
{
	if (f->probe) {
		log_debug("the %s route's probe failed: %s", f->conn->ops->name, strerror(err));
		flow_close(r, f, true, o, err);
		return;
	}
	log_debug("upstream connect to flow %llu failed: %s", (unsigned long long)f->rec.id, strerror(err));
	r->stats.tcp_failed++;
	flow_close(r, f, true, o, err);
}

static void flow_redial(struct relay *r, struct tcp_flow *f, int err);

static void connect_step(struct relay *r, struct tcp_flow *f, enum conn_step st, uint32_t want, int err)
{
	switch (st) {
	case CONN_READY:
		connect_ready(r, f);
		break;
	case CONN_FAILED:
		f->conn_failed = true;
		if (f->held && f->ttl && err != ETIMEDOUT) {
			struct sockaddr_storage child = { 0 }, dst = { 0 };

			memcpy(&child, &f->rec.child, sizeof(f->rec.child));
			memcpy(&dst, &f->rec.dst, sizeof(f->rec.dst));
			if (gate_router_error(r, f->end[1].fd, &child, &dst, f->gate_isn)) {
				f->held = false;   /* the child has the router's answer: the SYN went no further */
				gate_answer(r, f->gate_id, GATE_DROP);
			}
		}
		connect_failed(r, f, FLOW_UP_FAILED, err);
		break;
	case CONN_MORE:
		set_want(r, f, want);
		break;
	case CONN_REDIAL:
		flow_redial(r, f, err);
		break;
	}
}

static void flow_link(struct relay *r, struct tcp_flow *f)
{
	f->next = r->tcp_all;
	if (r->tcp_all)
		r->tcp_all->prev = f;
	r->tcp_all = f;
	r->n_tcp++;
}

/* A flow the policy or the tables refuse: a record that opens and closes at once. */
static void record_refusal(struct relay *r, const struct sockaddr_storage *child,
			   const struct sockaddr_storage *dst, const char *why, enum flow_outcome o, int err)
{
	flow_record_at_once(&r->hub, FLOW_TCP, child, dst, why, o, err);
}

/* An empty flow for @conn, with no fds yet. */
static struct tcp_flow *flow_alloc(const struct connector *conn)
{
	struct tcp_flow *f;

	if (conn->ops->state_size > CONN_STATE_MAX)
		return NULL;
	f = calloc(1, sizeof(*f) + conn->ops->state_size);
	if (!f)
		return NULL;
	f->conn = conn;
	for (int i = 0; i < 2; i++) {
		f->end[i].ev.kind = EV_TCP_END;
		f->end[i].ev.index = i;
		f->end[i].flow = f;
		f->end[i].fd = -1;
		f->dir[i].pipe[0] = f->dir[i].pipe[1] = -1;
	}
	return f;
}

/*
 * flow_dial() - call the connector's start() for @rq and watch the upstream socket it gives.
 * Return: false when the flow ended at once (closed).
 */
static bool flow_dial(struct relay *r, struct tcp_flow *f, const struct conn_req *rq)
{
	const struct connector *conn = f->conn;
	uint32_t want = EPOLLOUT;
	enum conn_step st;
	int err = 0, up = -1;

	st = conn->ops->start(f->cstate, conn->cfg, rq, &up, &want, &err);
	if (st == CONN_FAILED) {
		f->conn_failed = true;
		if (err == EMFILE || err == ENFILE)
			relay_pause_accept(r, SHORT_FDS);   /* more would fail the same way */
		connect_failed(r, f, err == EMFILE || err == ENFILE ? FLOW_NO_RESOURCES : FLOW_UP_FAILED, err);
		return false;
	}
	f->end[1].fd = up;
	if (r->hub.tap) {
		flow_tap_sock(&r->hub, up, SOCK_STREAM, true);
		if (!f->probe && r->hub.tap->connecting)
			r->hub.tap->connecting(r->hub.tap->priv, &f->rec, up);
	}
	f->up_events = want | EPOLLRDHUP | EPOLLPRI | EPOLLET;
	if ((err = relay_watch(r, up, f->up_events, &f->end[1].ev)) < 0) {
		flow_close(r, f, true, FLOW_NO_RESOURCES, -err);
		return false;
	}
	if (st == CONN_READY)
		connect_ready(r, f);
	return !f->dead;
}

/*
 * flow_start() - link @f as connecting and start its connector for @rq.
 * Return: false when the flow ended at once (closed).
 */
static bool flow_start(struct relay *r, struct tcp_flow *f, const struct conn_req *rq)
{
	const struct connector *conn = f->conn;
	unsigned int tmo = conn->timeout_ms ? conn->timeout_ms : conn->ops->timeout_ms;

	f->state = TCP_CONNECTING;
	f->begun_ms = r->now_ms;
	f->deadline_ms = r->now_ms + (tmo ? tmo : r->lim.connect_ms);
	flow_link(r, f);
	connecting_link(r, f);
	return flow_dial(r, f, rq);
}

/* The connector said CONN_REDIAL (this attempt failed with @err): a new socket for its next
 * attempt, within the same deadline. */
static void flow_redial(struct relay *r, struct tcp_flow *f, int err)
{
	struct sockaddr_storage dst = { .ss_family = AF_INET };
	struct conn_req rq = { .f = f->probe ? NULL : &f->rec, .dst = &dst, .dst_name = f->name,
			       .probe = f->probe };

	if (!f->probe)
		memcpy(&dst, &f->rec.dst, sizeof(f->rec.dst));
	if (r->hub.tap) {
		if (!f->probe && r->hub.tap->failed)
			r->hub.tap->failed(r->hub.tap->priv, &f->rec, f->end[1].fd, err);
		flow_tap_sock(&r->hub, f->end[1].fd, SOCK_STREAM, false);
	}
	close(f->end[1].fd);   /* also leaves the epoll set */
	f->end[1].fd = -1;
	flow_dial(r, f, &rq);
}

/*
 * dst_name() - the name the tree resolved @dst from in this run, if any: when several names map to
 * the address, the most recently resolved one (the name lookup of ctx returns it first).  Return: a
 * copy the flow owns, or NULL.
 */
static char *dst_name(struct relay *r, const struct sockaddr_storage *dst)
{
	const char *names[1];

	const struct name_lookup *nl = &r->c->resolved;

	if (!nl->lookup || nl->lookup(nl->src, (const struct sockaddr *)dst, r->now_ms, names, 1) == 0)
		return NULL;
	return strdup(names[0]);
}

/* A SYN held by the gate: its queue packet id, initial sequence number and TTL / hop limit. */
struct gate_hold {
	uint32_t id, isn;
	int ttl;
};

/*
 * tcp_flow_begin() - a child wants @dst: decide, and start the route's connector.
 * The child's socket is adopted with tcp_flow_adopt() (at once after accept(), or, for a flow begun
 * from the SYN @hold, once the SYN has passed and accept() returns it).  From a SYN, every way the
 * flow ends answers it (flow_close()).
 * Return: the flow, or NULL when it is refused or failed at once (recorded; the caller resets the
 * child's connection).  *@refused says how to answer a SYN refused before any flow held it, or is
 * GATE_PASS once a flow did (the flow has answered it, or will).
 */
static struct tcp_flow *tcp_flow_begin(struct relay *r, const struct sockaddr_storage *child,
				       const struct sockaddr_storage *dst, const struct gate_hold *hold,
				       enum gate_reply *refused)
{
	char *name = dst_name(r, dst);
	struct policy_query q = { .proto = POL_TCP, .dst = (const struct sockaddr *)dst, .name = name };
	struct policy_verdict v = policy_decide(&r->c->policy, &q);
	const struct connector *conn;
	struct tcp_flow *f;

	*refused = GATE_DROP;
	if (v.action == POL_DENY) {
		log_debug("refusing a TCP connection: %s", v.reason);
		r->stats.tcp_denied++;
		free(name);
		record_refusal(r, child, dst, v.reason, FLOW_DENIED, EACCES);
		*refused = GATE_REFUSE;
		return NULL;
	}
	if (r->n_tcp >= r->lim.max_tcp) {
		relay_shortage(r, SHORT_TCP);
		r->stats.tcp_full++;
		free(name);
		record_refusal(r, child, dst, "too many connections", FLOW_NO_RESOURCES, ENOBUFS);
		return NULL;
	}
	conn = &r->c->route[v.action];
	if (!conn->ops) {
		free(name);
		record_refusal(r, child, dst, "no connector for the route", FLOW_NO_RESOURCES, ENOSYS);
		*refused = GATE_REFUSE;
		return NULL;
	}
	/* Connects that never complete (a blackholed destination) must not fill the table: the oldest
	 * pending one yields to the new one. */
	if (r->n_connecting >= r->lim.max_connecting && r->conn_old) {
		relay_shortage(r, SHORT_CONNECTING);
		r->stats.tcp_yielded++;
		connect_failed(r, r->conn_old, FLOW_EVICTED, ETIMEDOUT);
	}
	f = flow_alloc(conn);
	if (!f) {
		free(name);
		record_refusal(r, child, dst, "out of memory", FLOW_NO_RESOURCES, ENOMEM);
		return NULL;
	}
	flow_begin(&r->hub, &f->rec, FLOW_TCP, child, dst);
	f->name = name;
	f->rec.dst_name = name;
	f->rec.route = conn->ops->name;
	f->rec.rule = v.reason;
	f->direct = v.action == POL_DIRECT;
	*refused = GATE_PASS;
	if (hold) {
		unsigned int b = gate_bucket(r, child, dst);

		f->gated = f->held = true;
		f->gate_id = hold->id;
		f->gate_isn = hold->isn;
		f->gnext = r->gate_hash[b];
		r->gate_hash[b] = f;
		r->stats.tcp_gated++;
	}
	flow_opened(&r->hub, &f->rec);
	r->stats.tcp_accepted++;

	/* A direct route carries the TTL the child chose (traceroute -T); a proxy dials for itself. */
	f->ttl = hold && f->direct ? relay_child_ttl(hold->ttl) : 0;

	struct conn_req rq = { .f = &f->rec, .dst = dst, .dst_name = f->name, .ttl = f->ttl };

	return flow_start(r, f, &rq) ? f : NULL;
}

int tcp_probe(struct relay *r, const struct connector *conn)
{
	struct sockaddr_storage none = { .ss_family = AF_INET };
	struct conn_req rq = { .dst = &none, .probe = true };
	struct tcp_flow *f;

	if (!conn->ops)
		return -EINVAL;
	f = flow_alloc(conn);
	if (!f)
		return -ENOMEM;
	f->probe = true;
	f->dir[0].shut = true;   /* nothing to drain at exit */
	flow_start(r, f, &rq);
	return 0;
}

static int child_sockopts(int fd)
{
	int one = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one)) < 0)
		return -errno;
	return 0;
}

void tcp_listener_opts(struct relay *r, int lfd)
{
	/* A socket accept() returns is a copy of the listener's: set once here, not per connection.
	 * Whether this kernel copies them is checked on the first one (child_opts_inherited()). */
	if (child_sockopts(lfd) < 0)
		r->child_opts = CHILD_OPTS_EACH;
}

/* Does the accepted @fd have the options from its listener?  Asked once per run. */
static bool child_opts_inherited(struct relay *r, int fd)
{
	int nodelay = 0, oob = 0;
	socklen_t l1 = sizeof(nodelay), l2 = sizeof(oob);

	if (r->child_opts == CHILD_OPTS_UNKNOWN) {
		bool got = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &l1) == 0 &&
			   getsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &oob, &l2) == 0 && nodelay && oob;

		r->child_opts = got ? CHILD_OPTS_INHERITED : CHILD_OPTS_EACH;
		log_debug("accepted sockets %s the listener's TCP_NODELAY and SO_OOBINLINE",
			  got ? "inherit" : "do not inherit");
	}
	return r->child_opts == CHILD_OPTS_INHERITED;
}

/* tcp_flow_adopt() - attach the child's accepted socket @c to @f.  Return: 0, or -errno (closed). */
static int tcp_flow_adopt(struct relay *r, struct tcp_flow *f, int c)
{
	int err;

	if (!child_opts_inherited(r, c) && (err = -child_sockopts(c)) > 0) {
		close(c);
		flow_close(r, f, true, FLOW_NO_RESOURCES, err);
		return -err;
	}
	if (r->child_sockbuf > 0) {
		/* Best effort: a kernel that refuses keeps autotuning, and the capture counts its drops. */
		setsockopt(c, SOL_SOCKET, SO_RCVBUF, &r->child_sockbuf, sizeof(r->child_sockbuf));
		setsockopt(c, SOL_SOCKET, SO_SNDBUF, &r->child_sockbuf, sizeof(r->child_sockbuf));
	}
	f->end[0].fd = c;
	/* Whether bytes wait is learnt from epoll: adding the socket reports what it holds. */
	f->end[0].writable = true;
	if ((err = relay_watch(r, c, EV_ALL, &f->end[0].ev)) < 0) {
		flow_close(r, f, true, FLOW_NO_RESOURCES, -err);
		return err;
	}
	flow_pump(r, f);
	return 0;
}

/* The child's socket @c arrived for @f, whose SYN passed: splice. */
static void adopt_passed(struct relay *r, struct tcp_flow *f, int c)
{
	gate_unlink(r, f);
	connecting_unlink(r, f);
	r->n_accepting--;
	f->state = TCP_SPLICING;
	/* Upstream readiness was noted from its events since it was watched for reading (tcp_event());
	 * a stream (TLS) may hold bytes it read already. */
	f->end[1].writable = true;
	if (f->stream)
		f->end[1].readable = true;
	tcp_flow_adopt(r, f, c);
}

/* Too many connects pending, all of them young (a burst, not a blackhole)? */
static bool connecting_full(const struct relay *r)
{
	return r->n_connecting >= r->lim.max_connecting && r->conn_old &&
	       r->now_ms - r->conn_old->begun_ms < r->lim.yield_ms;
}

bool tcp_connecting_full(const struct relay *r)
{
	return connecting_full(r);
}

enum tcp_syn_result tcp_syn(struct relay *r, const struct nfq_syn *syn, uint32_t id)
{
	struct gate_hold hold = { .id = id, .isn = syn->isn, .ttl = syn->ttl };
	struct tcp_flow *f = gate_find(r, &syn->src, &syn->dst);
	enum gate_reply refused;

	if (f) {
		if (f->gate_isn == syn->isn) {
			/* A retransmission: the first copy is still held (drop this one), or it passed
			 * already and the kernel's handshake will answer this one too. */
			r->stats.gate_dups++;
			gate_answer(r, id, f->held ? GATE_DROP : GATE_PASS);
			return TCP_SYN_TAKEN;
		}
		/* A new connection on the same ports: the child gave up on the old attempt. */
		flow_close(r, f, true, FLOW_RESET_CHILD, ECONNRESET);
	}
	/* A service (the DNS forwarder) answers these itself: nothing to wait for upstream. */
	if (r->c->service.ops && r->c->service.ops->claims_tcp(r->c->service.priv, &syn->dst)) {
		gate_answer(r, id, GATE_PASS);
		return TCP_SYN_TAKEN;
	}
	if (connecting_full(r))
		return TCP_SYN_BUSY;   /* the gate keeps it waiting, as a listen backlog would */
	if (!tcp_flow_begin(r, &syn->src, &syn->dst, &hold, &refused) && refused != GATE_PASS)
		gate_answer(r, id, refused);   /* refused before a flow could hold it */
	return TCP_SYN_TAKEN;
}

void tcp_accept(struct relay *r, int lfd)
{
	for (int burst = 0; burst < 64; burst++) {
		struct sockaddr_storage child = { 0 }, dst = { 0 };
		socklen_t clen = sizeof(child), dlen = sizeof(dst);
		struct tcp_flow *f;
		enum gate_reply unused;

		/* Without a gate, new connections wait in the backlog while every pending connect is
		 * young, rather than make a live connect yield.  With one, they were admitted at their
		 * SYN: accept() only hands over sockets whose upstream is ready. */
		if (r->gate_fd < 0 && connecting_full(r)) {
			relay_pause_accept(r, SHORT_CONNECTING);
			return;
		}
		int c = accept4(lfd, (struct sockaddr *)&child, &clen, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				relay_pause_accept(r, SHORT_FDS);
			return;
		}
		if (getsockname(c, (struct sockaddr *)&dst, &dlen) < 0) {
			reset_fd(c);
			close(c);
			continue;
		}
		if ((f = gate_find(r, &child, &dst)) && f->state == TCP_ACCEPTING) {
			adopt_passed(r, f, c);
			/* No other passed SYN waits for its socket: stop here rather than ask again
			 * for EAGAIN.  The listener is level-triggered, so a socket nobody expected
			 * (an ungated SYN) is reported again; at the drain, every one is taken. */
			if (!r->n_accepting && !r->command_gone)
				return;
			continue;
		}
		/* A service (the DNS forwarder) answers some destinations itself. */
		if (r->c->service.ops && r->c->service.ops->claims_tcp(r->c->service.priv, &dst)) {
			r->c->service.ops->adopt_tcp(r->c->service.priv, &r->hub, c, &child, &dst, r->now_ms);
			continue;
		}
		if (!(f = tcp_flow_begin(r, &child, &dst, NULL, &unused))) {
			reset_fd(c);
			close(c);
			continue;
		}
		tcp_flow_adopt(r, f, c);
	}
}

void tcp_accept_passed(struct relay *r)
{
	unsigned int soon = r->accept_soon;

	r->accept_soon = 0;
	if (!r->n_accepting || r->accept_paused_until || r->command_gone)
		return;   /* paused: the listeners are not watched either; at the drain, all are taken */
	if ((soon & 1u) && r->listen_fd[BE_TCP4] >= 0)
		tcp_accept(r, r->listen_fd[BE_TCP4]);
	if ((soon & 2u) && r->listen_fd[BE_TCP6] >= 0)
		tcp_accept(r, r->listen_fd[BE_TCP6]);
}

void tcp_event(struct relay *r, struct ev_src *src, uint32_t events)
{
	struct tcp_end *e = (struct tcp_end *)src;
	struct tcp_flow *f = e->flow;

	if (f->dead)
		return;
	if (f->state == TCP_ACCEPTING) {
		/* Only the upstream socket is here yet: remember what it said for the splicing. */
		if (events & EPOLLERR) {
			int err = 0;
			socklen_t len = sizeof(err);

			if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
				end_dead(f, src->index, err);
		}
		if (events & EPOLLPRI)
			e->urgent = true;
		if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
			e->readable = true;
		return;
	}
	if (f->state == TCP_CONNECTING) {
		if (src->index == 1) {
			/* Its watch may be the splicing one already (nothing reports these again): note
			 * them for later. */
			if (events & EPOLLPRI)
				e->urgent = true;
			if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
				e->readable = true;
		}
		if (src->index == 1 && f->verifying)
			return;   /* connected; splicing starts after this turn's NAT check */
		if (src->index == 1) {
			uint32_t want = EPOLLOUT;
			int err = 0;
			enum conn_step st = f->conn->ops->step(f->cstate, e->fd, events, &want, &err);

			connect_step(r, f, st, want, err);
			return;
		}
		/* The child gave up (reset) before the upstream answered. */
		if (events & (EPOLLERR | EPOLLHUP)) {
			flow_close(r, f, true, FLOW_RESET_CHILD, ECONNRESET);
			return;
		}
		if (events & EPOLLPRI)
			e->urgent = true;
		e->readable = true;
		return;
	}
	/* A reset (also one after this side's EOF, when nothing reads it any more) is passed on once the
	 * bytes that came before it are: the end is dead, its socket still holds them. */
	if (events & EPOLLERR) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
			end_dead(f, src->index, err);
	}
	if (is_stream(f, src->index)) {
		/* TLS may need to read to write (and the other way round): any event retries both. */
		e->readable = e->writable = true;
		flow_pump(r, f);
		return;
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

/*
 * tcp_sweep() - once a second: connects past their deadline fail with ETIMEDOUT (with the SYN gate
 * the child's SYN is dropped, so its own clock decides; without, it sees a reset), and when no pipe
 * was borrowed for a whole second, the idle pool is given back, so that after a burst P returns to
 * its idle fd count.
 */
void tcp_sweep(struct relay *r)
{
	struct tcp_flow *f = r->conn_old;

	if (r->pipe_borrows == r->pipe_borrows_seen && !r->pipes_in_use) {
		for (unsigned int i = 0; i < r->n_pipes; i++) {
			close(r->pipes[i][0]);
			close(r->pipes[i][1]);
		}
		r->n_pipes = 0;
	}
	r->pipe_borrows_seen = r->pipe_borrows;

	while (f) {
		struct tcp_flow *newer = f->cnewer;

		if (r->now_ms >= f->deadline_ms && f->state == TCP_ACCEPTING) {
			/* The SYN passed, but the handshake never reached accept(): the child left. */
			flow_close(r, f, true, FLOW_RESET_CHILD, ETIMEDOUT);
		} else if (r->now_ms >= f->deadline_ms) {
			r->stats.tcp_timeouts++;
			connect_failed(r, f, FLOW_UP_TIMEOUT, ETIMEDOUT);
		}
		f = newer;
	}
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
	r->tcp_verify = NULL;
	while (r->tcp_all) {
		bool done = r->tcp_all->dir[0].shut;

		flow_close(r, r->tcp_all, !done, done ? FLOW_OK : FLOW_CUT_AT_EXIT, 0);
	}
	tcp_reap(r);
	for (unsigned int i = 0; i < r->n_pipes; i++) {
		close(r->pipes[i][0]);
		close(r->pipes[i][1]);
	}
	r->n_pipes = 0;
	free(r->pipes);
	r->pipes = NULL;
	free(r->scratch);
	r->scratch = NULL;
}
