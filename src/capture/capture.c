/* SPDX-License-Identifier: MIT */
#include "capture/capture.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_packet.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include "capture/pcapng.h"
#include "util/log.h"

#define STALL_RETRY_MS 10        /* a full pipe is tried again this often */
#define FINISH_WAIT_MS 2000      /* at the end, a pipe gets this long to take the rest */
#define FINISH_RING_MS 500       /* ... and the ring this long to hand over its last frames */

/* Counters of an interface, for its statistics block. */
struct cap_if {
	uint64_t recv, drops;
};

/* One packet ring: the child's link (one interface), or the host's (sorted into several). */
struct cap_ring {
	int fd;                       /* the caller's */
	unsigned char *map;
	size_t len;
	unsigned int block_size, block_nr, next_block;
	int ifid;                     /* its one interface; -1: a sorted ring */
	capture_sort_fn sort;         /* a ring of several interfaces: which one a frame is (or none) */
	capture_prep_fn prep;         /* called before each block is sorted (or NULL) */
	void *sort_priv;
	int drop_ifid;                /* ... and the interface its kernel drops are told on */
	uint64_t recv, drops;         /* the kernel's counters (PACKET_STATISTICS), summed */
};

struct capture {
	struct pcapng w;
	int out_fd;
	int epfd;
	char *path;                   /* for messages: the file, or "stdout" */
	struct cap_ring rings[CAPTURE_MAX_RINGS];
	int n_rings;
	unsigned int reserve;         /* room kept in the buffer: the largest ring block */
	struct cap_if ifs[CAPTURE_MAX_IFS];   /* every interface described, by id */
	int n_ifs;
	bool stalled, stopped, told;
	uint64_t first_pending_ms;    /* when the oldest unwritten packet was buffered; 0: none */
	uint64_t flush_try_ms;        /* when a flush was last tried */
	uint64_t start_ns;
};

static uint64_t now_realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * open_stdout() - the fd the capture writes for "-": a pipe gets an open file description of its
 * own, non-blocking (the caller's stays as it was), anything else a duplicate.
 */
static int open_stdout(void)
{
	struct stat st;

	if (isatty(STDOUT_FILENO)) {
		log_error("error: `--capture -` writes pcapng to stdout, which is a terminal; pipe it into a "
			  "reader (childflow -c - -- CMD | tshark -r -) or give a file");
		return -1;
	}
	if (fstat(STDOUT_FILENO, &st) < 0) {
		log_error("error: `--capture -`: stdout is not open: %s", strerror(errno));
		return -1;
	}
	if (S_ISFIFO(st.st_mode)) {
		int fd = open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);

		if (fd >= 0)
			return fd;
	}
	int fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);

	if (fd < 0)
		log_error("error: `--capture -`: cannot use stdout: %s", strerror(errno));
	return fd;
}

struct capture *capture_open(const char *path, const char *userappl)
{
	struct capture *c = calloc(1, sizeof(*c));
	struct utsname u;
	char os[sizeof(u.sysname) + sizeof(u.release) + 2];
	bool to_stdout = !strcmp(path, "-");
	int r;

	if (!c) {
		log_error("cannot start the capture: %s", strerror(ENOMEM));
		return NULL;
	}
	c->out_fd = c->epfd = -1;
	c->path = strdup(to_stdout ? "stdout" : path);
	if (!c->path) {
		log_error("cannot start the capture: %s", strerror(ENOMEM));
		free(c);
		return NULL;
	}
	if (to_stdout) {
		c->out_fd = open_stdout();
	} else {
		/* O_NONBLOCK: a FIFO without a reader is an error now, not a hang. */
		c->out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0600);
		if (c->out_fd < 0)
			log_error("error: cannot write the capture to %s: %s (give a path you can write)", path,
				  strerror(errno));
	}
	if (c->out_fd < 0) {
		capture_free(c);
		return NULL;
	}
	if (uname(&u) == 0)
		snprintf(os, sizeof(os), "%s %s", u.sysname, u.release);
	else
		snprintf(os, sizeof(os), "Linux");
	c->start_ns = now_realtime_ns();
	/* The fd the loop watches: the rings' (none for the views the relay feeds itself). */
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c->epfd < 0) {
		log_error("cannot start the capture: %s", strerror(errno));
		capture_free(c);
		return NULL;
	}
	if ((r = pcapng_open(&c->w, c->out_fd, 4u << 20)) < 0 || (r = pcapng_shb(&c->w, os, userappl)) < 0 ||
	    (r = pcapng_flush(&c->w)) < 0) {
		log_error("error: cannot write the capture to %s: %s (give a path you can write)", c->path,
			  strerror(-r));
		capture_free(c);
		return NULL;
	}
	return c;
}

static int flush(struct capture *c);

/* Map the ring of @fd and watch it.  Return: the ring, or NULL (after one line). */
static struct cap_ring *map_ring(struct capture *c, int fd, unsigned int block_size, unsigned int block_nr)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	size_t cap = 2u * block_size + (1u << 20);
	struct cap_ring *g;

	if (c->n_rings >= CAPTURE_MAX_RINGS) {
		log_error("cannot start the capture: too many packet rings");
		return NULL;
	}
	g = &c->rings[c->n_rings];
	memset(g, 0, sizeof(*g));
	g->len = (size_t)block_size * block_nr;
	g->map = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (g->map == MAP_FAILED) {
		g->map = NULL;
		log_error("cannot start the capture: cannot map the packet ring: %s", strerror(errno));
		return NULL;
	}
	g->fd = fd;
	g->block_size = block_size;
	g->block_nr = block_nr;
	g->ifid = g->drop_ifid = -1;
	c->n_rings++;   /* unmapped by capture_free() from now on */
	/* Room for a whole block of frames (each takes more room in the ring than in an EPB) twice. */
	if (c->w.cap < cap) {
		unsigned char *nb = realloc(c->w.buf, cap);

		if (!nb) {
			log_error("cannot start the capture: %s", strerror(ENOMEM));
			return NULL;
		}
		c->w.buf = nb;
		c->w.cap = cap;
	}
	if (block_size > c->reserve)
		c->reserve = block_size;
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		log_error("cannot start the capture: %s", strerror(errno));
		return NULL;
	}
	return g;
}

int capture_attach(struct capture *c, int fd, unsigned int block_size, unsigned int block_nr,
		   unsigned int retire_ms, const char *ifname, const char *desc)
{
	struct cap_ring *g = map_ring(c, fd, block_size, block_nr);

	(void)retire_ms;
	if (!g)
		return -EIO;
	g->ifid = capture_add_if(c, PCAPNG_LINKTYPE_ETHERNET, ifname, desc);
	return g->ifid < 0 ? g->ifid : 0;
}

int capture_attach_sorted(struct capture *c, int fd, unsigned int block_size, unsigned int block_nr,
			  capture_sort_fn sort, capture_prep_fn prep, void *priv, int drop_ifid)
{
	struct cap_ring *g = map_ring(c, fd, block_size, block_nr);

	if (!g)
		return -EIO;
	g->sort = sort;
	g->prep = prep;
	g->sort_priv = priv;
	g->drop_ifid = drop_ifid;
	return 0;
}

int capture_add_if(struct capture *c, uint16_t linktype, const char *ifname, const char *desc)
{
	int id, r;

	if (c->n_ifs >= CAPTURE_MAX_IFS)
		return -ENOSPC;
	if (c->stopped)
		return -EIO;
	if (pcapng_room(&c->w) < 1024 && (r = pcapng_flush(&c->w)) < 0 && r != -EAGAIN)
		goto fail;
	id = pcapng_idb(&c->w, linktype, CAPTURE_SNAPLEN, ifname, desc);
	r = id < 0 ? id : pcapng_flush(&c->w);
	if (r < 0 && r != -EAGAIN)
		goto fail;
	c->n_ifs++;
	return id;
fail:
	log_error("error: cannot write the capture to %s: %s", c->path, strerror(-r));
	return r;
}

int capture_packet(struct capture *c, int ifid, uint64_t ts_ns, const void *data, uint32_t len, uint32_t flags)
{
	return capture_packet2(c, ifid, ts_ns, data, len, "", 0, flags);
}

int capture_packet2(struct capture *c, int ifid, uint64_t ts_ns, const void *head, uint32_t hlen,
		    const void *body, uint32_t blen, uint32_t flags)
{
	uint32_t len = hlen + blen;
	uint32_t cap = len;
	int r;

	if (ifid < 0 || ifid >= c->n_ifs)
		return -EINVAL;
	if (c->stopped) {
		c->ifs[ifid].drops++;
		return -EIO;
	}
	/* Keep room for a whole ring block: the ring's frames must always fit (drain()). */
	if (pcapng_room(&c->w) < pcapng_epb_size(cap, flags) + c->reserve) {
		r = flush(c);
		if (r == -1 || pcapng_room(&c->w) < pcapng_epb_size(cap, flags) + c->reserve) {
			c->ifs[ifid].drops++;   /* a full pipe: counted, told at the end */
			return r == -1 ? -EIO : -ENOBUFS;
		}
	}
	r = pcapng_epb2(&c->w, (uint32_t)ifid, ts_ns, head, hlen, body, blen, len, flags);
	if (r < 0) {
		c->ifs[ifid].drops++;
		return r;
	}
	c->ifs[ifid].recv++;
	if (!c->first_pending_ms)
		c->first_pending_ms = now_ms();
	return 0;
}

int capture_fd(const struct capture *c)
{
	return c->epfd;
}

/* A write failed: one warning; the output ends at its last whole block; the ring is let go. */
static void stop(struct capture *c)
{
	c->stopped = true;
	c->stalled = false;
	c->first_pending_ms = 0;
	for (int i = 0; i < c->n_rings && c->epfd >= 0; i++)
		epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->rings[i].fd, NULL);
	if (!c->told)
		log_warn("capture stopped: cannot write to %s: %s; it holds the packets up to now (exit "
			 "status 3 if the command succeeds)", c->path, strerror(-pcapng_error(&c->w)));
	c->told = true;
}

/* The rings are (not) to be read: a stalled output holds them back. */
static void set_stalled(struct capture *c, bool stalled)
{
	if (c->stalled == stalled)
		return;
	c->stalled = stalled;
	for (int i = 0; i < c->n_rings; i++) {
		struct epoll_event ev = { .events = stalled ? 0 : EPOLLIN, .data.fd = c->rings[i].fd };

		epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->rings[i].fd, &ev);
	}
}

/* Flush; Return: 0 when the output took it all, -EAGAIN (a full pipe), or -1 when stopped. */
static int flush(struct capture *c)
{
	int r = pcapng_flush(&c->w);

	c->flush_try_ms = now_ms();
	if (r == 0)
		c->first_pending_ms = 0;
	else if (r != -EAGAIN) {
		stop(c);
		return -1;
	}
	return r;
}

/* Copy the frames of one ring block into the writer.  There is room for all of them. */
static void take_block(struct capture *c, struct cap_ring *g, struct tpacket_block_desc *bd, uint64_t now)
{
	const unsigned char *p = (const unsigned char *)bd + bd->hdr.bh1.offset_to_first_pkt;

	if (g->prep)
		g->prep(g->sort_priv);

	for (uint32_t i = 0; i < bd->hdr.bh1.num_pkts; i++) {
		const struct tpacket3_hdr *h = (const struct tpacket3_hdr *)p;
		const struct sockaddr_ll *sll = (const struct sockaddr_ll *)(p + TPACKET_ALIGN(sizeof(*h)));
		/* On the gateway's end of the link: frames it sends go to the tree, the rest came from it. */
		uint32_t dir = sll->sll_pkttype == PACKET_OUTGOING ? PCAPNG_EPB_OUTBOUND : PCAPNG_EPB_INBOUND;
		uint64_t ts = (uint64_t)h->tp_sec * 1000000000u + h->tp_nsec;
		int ifid = g->sort ? g->sort(g->sort_priv, p + h->tp_mac, h->tp_snaplen, sll, ts) : g->ifid;

		if (ifid < 0)
			goto next;   /* not one of ours */
		if (pcapng_epb(&c->w, (uint32_t)ifid, ts, p + h->tp_mac, h->tp_snaplen, h->tp_len, dir) < 0)
			break;   /* cannot happen: a block's frames fit in the room reserved for it */
		if (g->sort)
			c->ifs[ifid].recv++;
		if (!c->first_pending_ms)
			c->first_pending_ms = now ? now : 1;
next:
		if (!h->tp_next_offset)
			break;
		p += h->tp_next_offset;
	}
}

/*
 * drain_ring() - take every block the kernel has handed over in @g, flushing when the buffer cannot
 * hold one more.  Until @until (CLOCK_MONOTONIC ms; 0: not at all), a full pipe is waited for.
 * Return: the number of blocks taken, or -1 when the output holds the rings back now.
 */
static int drain_ring(struct capture *c, struct cap_ring *g, uint64_t now, uint64_t until)
{
	int taken = 0;

	while (!c->stopped) {
		struct tpacket_block_desc *bd =
			(struct tpacket_block_desc *)(g->map + (size_t)g->next_block * g->block_size);

		if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
			break;
		while (pcapng_room(&c->w) < g->block_size) {
			int r = flush(c);

			if (r < 0 && r != -EAGAIN)
				return taken;
			if (r == 0 || pcapng_room(&c->w) >= g->block_size)
				break;
			uint64_t t = now_ms();

			if (t >= until)
				return -1;
			struct pollfd pf = { .fd = c->out_fd, .events = POLLOUT };

			poll(&pf, 1, (int)(until - t));
		}
		take_block(c, g, bd, now);
		/* The kernel zeroes it when it opens the block again; zeroed now, a non-zero count on a
		 * block of the kernel's means it is filling it (capture_finish() waits for that one). */
		bd->hdr.bh1.num_pkts = 0;
		__atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
		g->next_block = (g->next_block + 1) % g->block_nr;
		taken++;
	}
	return taken;
}

/*
 * drain() - take every block the kernel has handed over in every ring.  @wait_ms > 0 (at the end):
 * a full pipe is waited for, at most that long in all.  Return: the number of blocks taken.
 */
static unsigned int drain(struct capture *c, uint64_t now, int wait_ms)
{
	unsigned int taken = 0;
	uint64_t until = wait_ms > 0 ? now_ms() + (uint64_t)wait_ms : 0;

	for (int i = 0; i < c->n_rings && !c->stopped; i++) {
		int n = drain_ring(c, &c->rings[i], now, until);

		if (n < 0) {
			set_stalled(c, true);
			return taken;
		}
		taken += (unsigned int)n;
	}
	if (!c->stopped)
		set_stalled(c, false);
	return taken;
}

void capture_run(struct capture *c, uint64_t now)
{
	if (c->stopped)
		return;
	drain(c, now, 0);
	if (!c->stopped && c->first_pending_ms && now >= c->first_pending_ms + CAPTURE_FLUSH_MS)
		flush(c);
}

uint64_t capture_deadline(const struct capture *c)
{
	if (c->stopped)
		return UINT64_MAX;
	if (c->stalled)
		return now_ms() + STALL_RETRY_MS;
	if (!c->first_pending_ms)
		return UINT64_MAX;
	/* A pipe that took part of a flush is tried again every STALL_RETRY_MS. */
	if (c->first_pending_ms + CAPTURE_FLUSH_MS < c->flush_try_ms + STALL_RETRY_MS)
		return c->flush_try_ms + STALL_RETRY_MS;
	return c->first_pending_ms + CAPTURE_FLUSH_MS;
}

/* Sum the kernel's counters of @g (reading them resets them). */
static void read_stats(struct cap_ring *g)
{
	struct tpacket_stats_v3 st;
	socklen_t len = sizeof(st);

	memset(&st, 0, sizeof(st));
	if (getsockopt(g->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
		g->recv += st.tp_packets;   /* the kernel counts the dropped ones in too */
		g->drops += st.tp_drops;
	}
}

/* Does some ring hold frames not taken yet (a block handed over, or one being filled)? */
static bool rings_pending(const struct capture *c)
{
	for (int i = 0; i < c->n_rings; i++) {
		const struct cap_ring *g = &c->rings[i];
		const struct tpacket_block_desc *bd =
			(const struct tpacket_block_desc *)(g->map + (size_t)g->next_block * g->block_size);

		if (__atomic_load_n(&bd->hdr.bh1.num_pkts, __ATOMIC_ACQUIRE) ||
		    (__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
			return true;
	}
	return false;
}

/* Flush, waiting for a full pipe at most @wait_ms.  Return: 0, or -1 when the capture stopped. */
static int flush_wait(struct capture *c, int wait_ms)
{
	uint64_t until = now_ms() + (uint64_t)wait_ms;
	int r;

	while ((r = flush(c)) == -EAGAIN) {
		struct pollfd pf = { .fd = c->out_fd, .events = POLLOUT };
		uint64_t t = now_ms();

		if (t >= until) {
			c->w.err = -ETIMEDOUT;
			stop(c);
			return -1;
		}
		poll(&pf, 1, (int)(until - t));
	}
	return r;
}

bool capture_finish(struct capture *c)
{
	uint64_t end, recv = 0, drops = 0;
	bool own[CAPTURE_MAX_IFS] = { false };   /* its counters are a ring's, drops included */

	if (c->n_rings && !c->stopped) {
		/*
		 * The block being filled now is handed over when its timer fires (after one or two
		 * periods).  Once it is, every frame until now has been taken; later ones (the
		 * child's kernel may still send, e.g. MLD reports) need not be waited for.
		 */
		uint64_t until = now_ms() + FINISH_RING_MS;

		drain(c, now_ms(), FINISH_WAIT_MS);
		while (!c->stopped && now_ms() < until && rings_pending(c)) {
			struct pollfd pf = { .fd = c->epfd, .events = POLLIN };

			poll(&pf, 1, (int)(until - now_ms()));
			if (drain(c, now_ms(), FINISH_WAIT_MS) > 0 && !rings_pending(c))
				break;
		}
	}
	end = now_realtime_ns();
	for (int i = 0; i < c->n_rings; i++) {
		struct cap_ring *g = &c->rings[i];

		read_stats(g);
		recv += g->recv;
		drops += g->drops;
		if (g->ifid >= 0 && g->ifid < c->n_ifs) {
			c->ifs[g->ifid].recv = g->recv;    /* the kernel's view: it counts its drops in */
			c->ifs[g->ifid].drops = g->drops;
			own[g->ifid] = true;
		} else if (g->sort && g->drop_ifid >= 0 && g->drop_ifid < c->n_ifs) {
			c->ifs[g->drop_ifid].drops += g->drops;   /* a dropped frame's interface is unknown */
			own[g->drop_ifid] = true;
		}
	}
	for (int i = 0; i < c->n_ifs && !c->stopped; i++) {
		if (pcapng_room(&c->w) < 256 && flush_wait(c, FINISH_WAIT_MS) != 0)
			break;
		pcapng_isb(&c->w, (uint32_t)i, end, c->start_ns, end, c->ifs[i].recv, c->ifs[i].drops);
		if (!own[i])
			drops += c->ifs[i].drops;
	}
	if (!c->stopped)
		flush_wait(c, FINISH_WAIT_MS);
	/* Once stopped, the rings are no longer read and fill: those drops were told as the stop. */
	if (drops && !c->stopped)
		log_warn("capture: the kernel dropped %llu of %llu packets (the capture ring was full); %s "
			 "misses them (its statistics block says so)", (unsigned long long)drops,
			 (unsigned long long)recv, c->path);
	log_debug("capture: %llu packets written to %s, %llu dropped by the kernel",
		  (unsigned long long)c->w.packets, c->path, (unsigned long long)drops);
	return !c->stopped;
}

void capture_free(struct capture *c)
{
	if (!c)
		return;
	if (c->w.buf)
		pcapng_close(&c->w, 0);
	for (int i = 0; i < c->n_rings; i++)
		if (c->rings[i].map)
			munmap(c->rings[i].map, c->rings[i].len);
	if (c->epfd >= 0)
		close(c->epfd);
	if (c->out_fd >= 0)
		close(c->out_fd);
	free(c->path);
	free(c);
}
