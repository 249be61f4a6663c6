/* SPDX-License-Identifier: MIT */
#include "capture/capture.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_packet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <net/if.h>

#include "capture/pcapng.h"
#include "util/log.h"

#define FINISH_WAIT_MS 2000      /* at the end, a pipe gets this long to take the rest */
#define FINISH_RING_MS 500       /* ... and the ring this long to hand over its last frames */
#define QUEUE_SIZE (16u << 20)   /* the relay's records waiting for the writer (a power of 2) */
#define REC_PAD UINT32_MAX       /* a record's ifid: skip to the queue's wrap */
#define REC_IDB (UINT32_MAX - 1) /* ... an interface described while running: linktype, name, desc */
#define IDB_ROOM 4096u           /* the most an IDB record's block takes */
#define WAKE_BYTES (1u << 20)    /* a writer waiting for its flush deadline is woken this far behind */
#define QUEUE_HIGH (QUEUE_SIZE / 2)   /* capture_hold(): the relay stops reading TCP above this ... */
#define QUEUE_LOW (QUEUE_SIZE * 3 / 8)   /* ... and is told to go on below this */
#define HOLD_GIVE_UP_MS 1000     /* a writer that made no progress this long is not waited for */

/* What the writer sleeps for. */
enum sleep {
	AWAKE = 0,
	SLEEP_FULL,                   /* its flush deadline, or WAKE_BYTES queued */
	SLEEP_ANY,                    /* nothing pending: the first record */
};

/* Counters of an interface, for its statistics block (kept by the thread that queues its packets). */
struct cap_if {
	uint64_t recv, drops;
	bool sorted;                  /* a sorted ring's frames went to it: that ring's kernel counted them */
};

/* One queued packet: this header, then @len bytes, the whole padded to 8 bytes. */
struct rec {
	uint32_t size;                /* bytes of the record, header included */
	uint32_t ifid;                /* or REC_PAD */
	uint64_t ts;
	uint32_t len, flags;
	struct capture_csum ck;       /* ck.at == 0: no checksum to fill */
};

/*
 * One packet ring.  The child's link (one interface, @sort NULL) is drained by the writer thread;
 * a sorted ring (the host's, several interfaces) is drained on the relay's thread, which calls
 * @prep and @sort there: the filter is the relay's socket set (a SYN is sent inside connect(), so
 * its frame may be read only after the relay told the set about the socket) and, under --root, the
 * conntrack flows @prep adds to that same set (capture/ctwatch.h).  One thread owns all of it.
 */
struct cap_ring {
	int fd;                       /* the caller's */
	unsigned char *map;
	size_t len;
	unsigned int block_size, block_nr;
	unsigned int next_block;      /* atomic: ring_holds() reads it from the relay's thread */
	unsigned int taken;           /* the writer's: blocks from next_block on taken, not given back
				       * (a regular file writes their frames from the ring) */
	int ifid;                     /* its one interface; -1: a sorted ring */
	capture_sort_fn sort;         /* a ring of several interfaces: which one a frame is (or none) */
	capture_prep_fn prep;         /* called before each block is sorted (or NULL) */
	void *sort_priv;
	int drop_ifid;                /* ... and the interface its kernel drops are told on */
	uint64_t recv, drops;         /* the kernel's counters (PACKET_STATISTICS), summed */
};

struct capture {
	struct pcapng w;              /* the writer thread's while it runs, else the caller's */
	int out_fd;
	int epfd;                     /* the sorted rings' and resume_fd, for the relay's loop */
	char *path;                   /* for messages: the file, or "stdout" */
	struct cap_ring rings[CAPTURE_MAX_RINGS];
	int n_rings;
	unsigned int reserve;         /* room the writer needs to take a block: the largest child ring's */
	struct cap_if ifs[CAPTURE_MAX_IFS];   /* every interface described, by id */
	int n_ifs;
	/* The queue: the relay's thread writes at qhead, the writer reads at qtail. */
	unsigned char *q;
	uint64_t qhead, qtail;        /* byte positions (ever growing); atomics */
	uint64_t qread;               /* the writer's: records up to here taken (a regular file writes
				       * them from the queue: qtail follows once they are written) */
	int evfd;                     /* wakes the writer: a record while it sleeps, or the end */
	int sleeping;                 /* atomic: the writer waits for the eventfd (enum sleep) */
	int quit;                     /* atomic: the writer is to return */
	pthread_t thread;
	bool running;                 /* capture_start() started the writer */
	int stopped;                  /* atomic: a write failed */
	int resume_fd;                /* in epfd: the writer caught up after capture_hold() said true */
	int want_resume;              /* atomic: the relay holds and waits for resume_fd */
	uint64_t progress;            /* atomic: counts the writer's steps (input taken, output written) */
	uint64_t hold_seen, hold_seen_ms;   /* the relay's: the last count it saw, and when */
	unsigned int slow_us_per_mib; /* CHILDFLOW_TEST_CAPTURE_US_PER_MIB: a slow output, for tests */
	bool stalled, told;
	uint64_t first_pending_ms;    /* when the oldest unwritten packet was buffered; 0: none */
	uint64_t stalls;              /* times the output was full */
	uint64_t holds, held_ms, hold_from;   /* the relay's: holds begun, their time, the current one's start */
	bool holding;
	uint64_t writes, wakeups;     /* the writer's: flushes that wrote, polls it woke from */
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

static bool is_stopped(const struct capture *c)
{
	return __atomic_load_n(&c->stopped, __ATOMIC_ACQUIRE);
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
	c->out_fd = c->epfd = c->evfd = c->resume_fd = -1;
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
	/* A test knob: the output takes this long per MiB (a slow disk), to check that a writer that
	 * is merely slower than the traffic loses nothing. */
	const char *slow = getenv("CHILDFLOW_TEST_CAPTURE_US_PER_MIB");

	if (slow)
		c->slow_us_per_mib = (unsigned int)strtoul(slow, NULL, 10);
	/* The fd the relay's loop watches: a sorted ring's (none for the other views). */
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->resume_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->epfd < 0 || c->evfd < 0 || c->resume_fd < 0 ||
	    epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->resume_fd, &(struct epoll_event){ .events = EPOLLIN }) < 0) {
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

/*
 * clear_error() - take the pending error of a ring's socket (ENETDOWN: it was bound to its link
 * before the link came up), which poll() would report forever.
 */
static void clear_error(int fd)
{
	int e = 0;
	socklen_t len = sizeof(e);

	getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
}

/* Map the ring of @fd as *@out.  Return: 0 or -errno (after one line). */
static int map_ring(struct capture *c, int fd, unsigned int block_size, unsigned int block_nr,
		    struct cap_ring **out)
{
	size_t cap = 2u * block_size + (1u << 20);
	struct cap_ring *g;

	if (c->running)
		return -EBUSY;
	if (c->n_rings >= CAPTURE_MAX_RINGS) {
		log_error("cannot start the capture: too many packet rings");
		return -ENOSPC;
	}
	g = &c->rings[c->n_rings];
	memset(g, 0, sizeof(*g));
	g->len = (size_t)block_size * block_nr;
	g->map = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (g->map == MAP_FAILED) {
		int r = -errno;

		g->map = NULL;
		log_error("cannot start the capture: cannot map the packet ring: %s", strerror(-r));
		return r;
	}
	clear_error(fd);
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
			return -ENOMEM;
		}
		c->w.buf = nb;
		c->w.cap = cap;
	}
	*out = g;
	return 0;
}

int capture_attach(struct capture *c, int fd, unsigned int block_size, unsigned int block_nr,
		   unsigned int retire_ms, const char *ifname, const char *desc)
{
	struct cap_ring *g = NULL;
	int r = map_ring(c, fd, block_size, block_nr, &g);

	(void)retire_ms;
	if (r < 0 || !g)
		return r < 0 ? r : -EIO;
	if (block_size > c->reserve)
		c->reserve = block_size;
	g->ifid = capture_add_if(c, PCAPNG_LINKTYPE_ETHERNET, ifname, desc);
	return g->ifid < 0 ? g->ifid : 0;
}

int capture_attach_sorted(struct capture *c, int fd, unsigned int block_size, unsigned int block_nr,
			  capture_sort_fn sort, capture_prep_fn prep, void *priv, int drop_ifid)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
	struct cap_ring *g = NULL;
	int r = map_ring(c, fd, block_size, block_nr, &g);

	if (r < 0 || !g)
		return r < 0 ? r : -EIO;
	g->sort = sort;
	g->prep = prep;
	g->sort_priv = priv;
	g->drop_ifid = drop_ifid;
	/* Sorted on the relay's thread (the filter is its socket set): its loop watches the ring. */
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		r = -errno;
		log_error("cannot start the capture: %s", strerror(-r));
		return r;
	}
	return 0;
}

static int queue_put(struct capture *c, uint32_t ifid, uint64_t ts_ns, const void *head, uint32_t hlen,
		     const void *body, uint32_t blen, uint32_t flags, const struct capture_csum *ck);

int capture_add_if(struct capture *c, uint16_t linktype, const char *ifname, const char *desc)
{
	int id, r;

	if (c->n_ifs >= CAPTURE_MAX_IFS)
		return -ENOSPC;
	if (is_stopped(c))
		return -EIO;
	if (c->running) {
		/* The writer owns the output: the IDB goes through the queue, before the packets. */
		char spec[2 + 2 * (IF_NAMESIZE + 256)];
		int n = snprintf(spec, sizeof(spec), "%c%c%s%c%s", (char)(linktype & 0xff), (char)(linktype >> 8),
				 ifname ? ifname : "", 0, desc ? desc : "");

		if (n < 0 || (size_t)n >= sizeof(spec) || !c->q)
			return -ENOSPC;
		if ((r = queue_put(c, REC_IDB, 0, spec, (uint32_t)n + 1, "", 0, 0, NULL)) < 0)
			return r;
		return c->n_ifs++;   /* the writer's id for it: IDBs are written in this order */
	}
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
	return capture_packet2(c, ifid, ts_ns, data, len, "", 0, flags, NULL);
}

static size_t rec_size(uint32_t len)
{
	return (sizeof(struct rec) + len + 7u) & ~(size_t)7u;
}

/*
 * wake() - wake the writer (@head: the queue's head just published) when it sleeps for it, or
 * @always (to end it).  While packets wait for their flush deadline anyway, the writer is woken
 * only WAKE_BYTES behind: a busy run makes no syscall per packet.
 */
static void wake(struct capture *c, uint64_t head, bool always)
{
	uint64_t one = 1;
	int s = __atomic_load_n(&c->sleeping, __ATOMIC_SEQ_CST);

	if (!always && !(s == SLEEP_ANY ||
			 (s == SLEEP_FULL && head - __atomic_load_n(&c->qtail, __ATOMIC_ACQUIRE) >= WAKE_BYTES)))
		return;   /* awake, or not yet worth it: it sees the record on its next pass */
	if (__atomic_exchange_n(&c->sleeping, AWAKE, __ATOMIC_SEQ_CST) == AWAKE && !always)
		return;   /* another wake-up came first */
	if (write(c->evfd, &one, sizeof(one)) < 0) {
		/* the counter is full: the writer has a wake-up pending anyway */
	}
}

/*
 * queue_put() - queue one record (tag @ifid: an interface, or REC_IDB) from the relay's thread.
 * Return: 0, or -ENOBUFS when the queue has no room for it.
 */
static int queue_put(struct capture *c, uint32_t ifid, uint64_t ts_ns, const void *head, uint32_t hlen,
		     const void *body, uint32_t blen, uint32_t flags, const struct capture_csum *ck)
{
	uint32_t len = hlen + blen;
	size_t need = rec_size(len), off, end_room, skip;
	uint64_t head_pos = c->qhead;   /* only this thread writes it */
	uint64_t tail = __atomic_load_n(&c->qtail, __ATOMIC_ACQUIRE);
	struct rec *rc;

	off = (size_t)(head_pos & (QUEUE_SIZE - 1));
	end_room = QUEUE_SIZE - off;
	skip = end_room < need ? end_room : 0;
	if (QUEUE_SIZE - (head_pos - tail) < skip + need)
		return -ENOBUFS;   /* the writer is behind */
	if (skip) {
		if (end_room >= sizeof(struct rec))
			((struct rec *)(c->q + off))->ifid = REC_PAD;
		head_pos += skip;
		off = 0;
	}
	rc = (struct rec *)(c->q + off);
	*rc = (struct rec){ .size = (uint32_t)need, .ifid = ifid, .ts = ts_ns, .len = len, .flags = flags };
	if (ck)
		rc->ck = *ck;
	memcpy(rc + 1, head, hlen);
	if (blen)
		memcpy((unsigned char *)(rc + 1) + hlen, body, blen);
	__atomic_store_n(&c->qhead, head_pos + need, __ATOMIC_SEQ_CST);
	wake(c, head_pos + need, false);
	return 0;
}

int capture_packet2(struct capture *c, int ifid, uint64_t ts_ns, const void *head, uint32_t hlen,
		    const void *body, uint32_t blen, uint32_t flags, const struct capture_csum *ck)
{
	if (ifid < 0 || ifid >= c->n_ifs)
		return -EINVAL;
	if (is_stopped(c) || !c->q || hlen + blen > CAPTURE_SNAPLEN) {
		c->ifs[ifid].drops++;
		return is_stopped(c) ? -EIO : -ENOBUFS;
	}
	if (queue_put(c, (uint32_t)ifid, ts_ns, head, hlen, body, blen, flags, ck) < 0) {
		c->ifs[ifid].drops++;   /* counted, told in the statistics block */
		return -ENOBUFS;
	}
	c->ifs[ifid].recv++;
	return 0;
}

int capture_fd(const struct capture *c)
{
	return c->epfd;
}

static void progress(struct capture *c);
static void give_back(struct capture *c);

/* A write failed: one warning; the output ends at its last whole block; nothing more is read. */
static void stop(struct capture *c)
{
	__atomic_store_n(&c->stopped, 1, __ATOMIC_RELEASE);
	c->stalled = false;
	c->first_pending_ms = 0;
	for (int i = 0; i < c->n_rings; i++)
		if (c->rings[i].sort)
			epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->rings[i].fd, NULL);
	if (!c->told)
		log_warn("capture stopped: cannot write to %s: %s; it holds the packets up to now (exit "
			 "status 3 if the command succeeds)", c->path, strerror(-pcapng_error(&c->w)));
	c->told = true;
}

/* Flush; Return: 0 when the output took it all, -EAGAIN (a full pipe), or -1 when stopped. */
static int flush(struct capture *c)
{
	size_t before = pcapng_pending(&c->w);
	int r;

	if (c->slow_us_per_mib && before)
		usleep((useconds_t)((uint64_t)c->slow_us_per_mib * before >> 20));
	r = pcapng_flush(&c->w);
	if (r != -EAGAIN)
		give_back(c);   /* written (or failed): the frames and records written in place are free */
	if (pcapng_pending(&c->w) < before) {
		c->writes++;
		progress(c);
	}

	if (r == 0)
		c->first_pending_ms = 0;
	else if (r != -EAGAIN) {
		stop(c);
		return -1;
	}
	return r;
}

static void pending(struct capture *c)
{
	if (!c->first_pending_ms)
		c->first_pending_ms = now_ms();
}

static struct tpacket_block_desc *ring_block(const struct cap_ring *g)
{
	return (struct tpacket_block_desc *)(g->map + (size_t)g->next_block * g->block_size);
}

/* The block the writer takes next: the first after those it holds. */
static struct tpacket_block_desc *next_untaken(const struct cap_ring *g)
{
	return (struct tpacket_block_desc *)(g->map + (size_t)((g->next_block + g->taken) % g->block_nr) *
						     g->block_size);
}

static bool block_ready(const struct cap_ring *g)
{
	return g->taken < g->block_nr &&
	       __atomic_load_n(&next_untaken(g)->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER;
}

/* Give the current block of @g back to the kernel and go to the next. */
static void release_block(struct cap_ring *g)
{
	struct tpacket_block_desc *bd = ring_block(g);

	/* The kernel zeroes it when it opens the block again; zeroed now, a non-zero count on a
	 * block of the kernel's means it is filling it (capture_finish() waits for that one). */
	bd->hdr.bh1.num_pkts = 0;
	__atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
	__atomic_store_n(&g->next_block, (g->next_block + 1) % g->block_nr, __ATOMIC_SEQ_CST);
}

/*
 * ring_holds() - does the writer hold at least @k + 1 blocks of the child ring @g (filled, not yet
 * given back)?  The kernel fills the blocks in order and the writer gives them back in order, so
 * that is block next_block + @k being the user's.  One load; from either thread.
 */
static bool ring_holds(const struct cap_ring *g, unsigned int k)
{
	unsigned int next = __atomic_load_n(&g->next_block, __ATOMIC_SEQ_CST);
	const struct tpacket_block_desc *bd =
		(const struct tpacket_block_desc *)(g->map + (size_t)((next + k) % g->block_nr) * g->block_size);

	return __atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_SEQ_CST) & TP_STATUS_USER;
}

/*
 * backlog_above() - is the writer's backlog above its high-water mark (@high) or its low-water
 * mark: the queue's bytes (QUEUE_HIGH, QUEUE_LOW), a child ring's blocks not given back (3/8,
 * 1/4 of them: the rest takes what the flows' socket buffers still send after the relay stopped,
 * up to a few MiB each)?  The marks are close: the writer takes up to a buffer's worth (4 MiB) at once, so
 * one pass crosses the low one, and the relay is woken as soon as that room is there.  A sorted
 * ring is the relay's own to read: its frames count in the queue.  From either thread.
 */
static bool backlog_above(const struct capture *c, bool high)
{
	if (c->q && __atomic_load_n(&c->qhead, __ATOMIC_SEQ_CST) - __atomic_load_n(&c->qtail, __ATOMIC_SEQ_CST) >=
			    (high ? QUEUE_HIGH : QUEUE_LOW))
		return true;
	for (int i = 0; i < c->n_rings; i++) {
		const struct cap_ring *g = &c->rings[i];

		if (!g->sort && g->block_nr >= 4 &&
		    ring_holds(g, high ? g->block_nr * 3 / 8 - 1 : g->block_nr / 4 - 1))
			return true;
	}
	return false;
}


/*
 * give_back() - a flush wrote (or failed): the ring blocks and queued records it wrote from where
 * they were are the kernel's and the relay's again.
 */
static void give_back(struct capture *c)
{
	for (int i = 0; i < c->n_rings; i++)
		for (; c->rings[i].taken; c->rings[i].taken--)
			release_block(&c->rings[i]);
	if (c->qread != c->qtail)
		__atomic_store_n(&c->qtail, c->qread, __ATOMIC_SEQ_CST);
}

/* Does the writer hold ring blocks that only a flush gives back? */
static bool held_blocks(const struct capture *c)
{
	for (int i = 0; i < c->n_rings; i++)
		if (c->rings[i].taken)
			return true;
	return false;
}

/* Does the writer hold input (ring blocks, records) that only a flush gives back? */
static bool holds_input(const struct capture *c)
{
	return held_blocks(c) || c->qread != c->qtail;
}

/*
 * progress() - the writer took input or wrote output: count it (capture_hold() waits only for a
 * writer that moves), and tell a relay that holds once the backlog is below the low-water mark.
 */
static void progress(struct capture *c)
{
	uint64_t one = 1;

	__atomic_add_fetch(&c->progress, 1, __ATOMIC_RELAXED);
	if (!__atomic_load_n(&c->want_resume, __ATOMIC_SEQ_CST) || backlog_above(c, false) ||
	    !__atomic_exchange_n(&c->want_resume, 0, __ATOMIC_SEQ_CST))
		return;
	if (write(c->resume_fd, &one, sizeof(one)) < 0) {
		/* the counter is full: the relay has a wake-up pending anyway */
	}
}

/* The relay is let go again: count the hold's time (for the debug line). */
static void hold_end(struct capture *c, uint64_t now)
{
	if (!c->holding)
		return;
	c->holding = false;
	c->held_ms += now - c->hold_from;
}

bool capture_hold(struct capture *c, uint64_t now)
{
	uint64_t p;

	if (!c->running || is_stopped(c) || !backlog_above(c, true)) {
		c->hold_seen_ms = now;   /* a hold's give-up clock starts when it begins */
		hold_end(c, now);
		return false;
	}
	p = __atomic_load_n(&c->progress, __ATOMIC_RELAXED);
	if (p != c->hold_seen) {
		c->hold_seen = p;
		c->hold_seen_ms = now;
	}
	if (now >= c->hold_seen_ms + HOLD_GIVE_UP_MS) {
		hold_end(c, now);
		return false;   /* the writer is stuck (a stopped pipe reader): drop and count */
	}
	/* Told once the backlog is below the low-water mark; asked again after the flag is up, so
	 * a writer that caught up meanwhile is not missed (it stores qtail, then reads the flag). */
	__atomic_store_n(&c->want_resume, 1, __ATOMIC_SEQ_CST);
	if (!backlog_above(c, true)) {
		__atomic_store_n(&c->want_resume, 0, __ATOMIC_SEQ_CST);
		hold_end(c, now);
		return false;
	}
	if (!c->holding) {
		c->holding = true;
		c->holds++;
		c->hold_from = now;
	}
	return true;
}

/*
 * take_block() - the frames of the current block of @g: a sorted ring's are queued (on the relay's
 * thread, or the caller's at the end: never the writer's, so @prep and @sort run where the socket
 * set is kept), after @prep; a child ring's are copied into the writer's buffer, which has room
 * for all of them.  Then the block is given back.
 */
static void take_block(struct capture *c, struct cap_ring *g)
{
	struct tpacket_block_desc *bd = g->sort ? ring_block(g) : next_untaken(g);
	const unsigned char *p = (const unsigned char *)bd + bd->hdr.bh1.offset_to_first_pkt;

	if (g->prep)
		g->prep(g->sort_priv);
	for (uint32_t i = 0; i < bd->hdr.bh1.num_pkts; i++) {
		const struct tpacket3_hdr *h = (const struct tpacket3_hdr *)p;
		const struct sockaddr_ll *sll = (const struct sockaddr_ll *)(p + TPACKET_ALIGN(sizeof(*h)));
		/* On the gateway's end of the link: frames it sends go to the tree, the rest came from it. */
		uint32_t dir = sll->sll_pkttype == PACKET_OUTGOING ? PCAPNG_EPB_OUTBOUND : PCAPNG_EPB_INBOUND;
		uint64_t ts = (uint64_t)h->tp_sec * 1000000000u + h->tp_nsec;

		if (g->sort) {
			int ifid = g->sort(g->sort_priv, p + h->tp_mac, h->tp_snaplen, sll, ts);

			if (ifid >= 0 && ifid < c->n_ifs) {   /* else not one of ours */
				c->ifs[ifid].sorted = true;
				capture_packet(c, ifid, ts, p + h->tp_mac, h->tp_snaplen, dir);
			}
		} else if (pcapng_epb_ref(&c->w, (uint32_t)g->ifid, ts, p + h->tp_mac, h->tp_snaplen, h->tp_len,
					  dir) == 0) {
			pending(c);
		} else {
			break;   /* cannot happen: a block's frames fit in the room reserved for it */
		}
		if (!h->tp_next_offset)
			break;
		p += h->tp_next_offset;
	}
	if (g->sort || !pcapng_gathers(&c->w)) {
		release_block(g);
	} else {
		g->taken++;   /* written from the ring: given back by the flush (give_back()) */
		pending(c);
	}
	if (!g->sort)
		progress(c);
}

/* Fill in the deferred checksum @ck of the @len bytes at @pkt (the queued record's). */
static void fill_csum(unsigned char *pkt, uint32_t len, const struct capture_csum *ck)
{
	const unsigned char *p = pkt + ck->from;
	size_t n = len - ck->from;
	uint64_t sum = ck->seed;
	uint16_t res;
	uint32_t wd;
	uint16_t h = 0;

	for (; n >= 4; p += 4, n -= 4) {
		memcpy(&wd, p, 4);
		sum += wd;
	}
	if (n >= 2) {
		memcpy(&h, p, 2);
		sum += h;
		p += 2;
		n -= 2;
	}
	if (n) {
		h = 0;
		memcpy(&h, p, 1);   /* the odd byte is the first (high) byte of a zero-padded word */
		sum += h;
	}
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	res = (uint16_t)~sum;
	if (ck->udp && res == 0)
		res = 0xffff;   /* UDP: 0 means "no checksum" */
	memcpy(pkt + ck->at, &res, 2);
}

/*
 * take_records() - copy queued records into the writer's buffer while they fit (keeping @keep
 * bytes free).  Return: true when a record is left that did not fit.
 */
static bool take_records(struct capture *c, size_t keep)
{
	uint64_t tail = c->qread, head = __atomic_load_n(&c->qhead, __ATOMIC_ACQUIRE);
	bool left = false;

	while (tail != head) {
		size_t off = (size_t)(tail & (QUEUE_SIZE - 1)), end_room = QUEUE_SIZE - off;
		struct rec *rc = (struct rec *)(c->q + off);

		if (end_room < sizeof(*rc) || rc->ifid == REC_PAD) {
			tail += end_room;
			continue;
		}
		if (rc->ifid == REC_IDB) {
			const char *spec = (const char *)(rc + 1);

			if (pcapng_room(&c->w) < IDB_ROOM + keep) {
				left = true;
				break;
			}
			pcapng_idb(&c->w, (uint16_t)((unsigned char)spec[0] | (unsigned char)spec[1] << 8),
				   CAPTURE_SNAPLEN, spec + 2, spec + 3 + strlen(spec + 2));
			tail += rc->size;
			continue;
		}
		if (pcapng_room(&c->w) < pcapng_epb_size(rc->len, rc->flags) + keep) {
			left = true;
			break;
		}
		/* The record is the writer's until qtail passes it: summed in place, then copied or
		 * (a regular file) written from the queue. */
		if (rc->ck.at)
			fill_csum((unsigned char *)(rc + 1), rc->len, &rc->ck);
		if (pcapng_epb_ref(&c->w, rc->ifid, rc->ts, rc + 1, rc->len, rc->len, rc->flags) == 0)
			pending(c);
		tail += rc->size;
	}
	if (tail != c->qread) {
		c->qread = tail;
		if (!pcapng_gathers(&c->w))
			__atomic_store_n(&c->qtail, tail, __ATOMIC_SEQ_CST);
		progress(c);
	}
	return left;
}

/*
 * writer_pass() - take what the child ring(s) and the queue hold while the buffer has room, flushing
 * when something did not fit or at the flush deadline.  Return: true when the output (a full pipe)
 * took only part of a flush: STALLED, nothing more is taken until it is writable.
 */
static bool writer_pass(struct capture *c)
{
	for (;;) {
		bool left = false, due;
		int r;

		for (int i = 0; i < c->n_rings; i++) {
			struct cap_ring *g = &c->rings[i];

			while (!g->sort && block_ready(g)) {
				if (pcapng_room(&c->w) < g->block_size) {
					left = true;
					break;
				}
				take_block(c, g);
			}
		}
		if (c->q && take_records(c, 0))
			left = true;
		/* Ring blocks written in place are given back at once; records once WAKE_BYTES wait. */
		due = (c->first_pending_ms && now_ms() >= c->first_pending_ms + CAPTURE_FLUSH_MS) ||
		      held_blocks(c) || c->qread - c->qtail >= WAKE_BYTES;
		if (!left && !due)
			return false;
		r = flush(c);
		if (r == -1)
			return false;
		if (r == -EAGAIN)
			return true;
		if (!left)
			return false;
	}
}

/* Is there input for the writer now (for a writer that sleeps for @why)? */
static bool input_ready(const struct capture *c, enum sleep why)
{
	uint64_t queued = c->q ? __atomic_load_n(&c->qhead, __ATOMIC_SEQ_CST) - c->qread : 0;

	for (int i = 0; i < c->n_rings; i++)
		if (!c->rings[i].sort && block_ready(&c->rings[i]))
			return true;
	return queued >= (why == SLEEP_ANY ? 1 : WAKE_BYTES);
}

static void *writer_main(void *arg)
{
	struct capture *c = arg;

	while (!__atomic_load_n(&c->quit, __ATOMIC_ACQUIRE) && !is_stopped(c)) {
		struct pollfd pf[2 + CAPTURE_MAX_RINGS] = { { .fd = c->evfd, .events = POLLIN } };
		nfds_t n = 1;
		int timeout = -1;
		uint64_t v;

		c->stalled = writer_pass(c);
		if (is_stopped(c))
			break;
		if (c->stalled) {
			c->stalls++;
			pf[n++] = (struct pollfd){ .fd = c->out_fd, .events = POLLOUT };
		} else {
			/* Sleep until a ring block, the flush deadline, or records: the first one when
			 * nothing is pending, else WAKE_BYTES of them. */
			enum sleep why = c->first_pending_ms ? SLEEP_FULL : SLEEP_ANY;

			__atomic_store_n(&c->sleeping, why, __ATOMIC_SEQ_CST);
			if (input_ready(c, why)) {
				__atomic_store_n(&c->sleeping, AWAKE, __ATOMIC_SEQ_CST);
				continue;
			}
			for (int i = 0; i < c->n_rings; i++)
				if (!c->rings[i].sort)
					pf[n++] = (struct pollfd){ .fd = c->rings[i].fd, .events = POLLIN };
			if (c->first_pending_ms) {
				uint64_t t = now_ms(), due = c->first_pending_ms + CAPTURE_FLUSH_MS;

				timeout = due > t ? (int)(due - t) : 0;
			}
		}
		poll(pf, n, timeout);
		c->wakeups++;
		__atomic_store_n(&c->sleeping, AWAKE, __ATOMIC_SEQ_CST);
		for (nfds_t i = 1; i < n; i++)
			if (pf[i].fd != c->out_fd && pf[i].revents & POLLERR)
				clear_error(pf[i].fd);   /* else poll() returns at once, again and again */
		if (pf[0].revents & POLLIN && read(c->evfd, &v, sizeof(v)) < 0) {
			/* nothing counted: another wake-up took it */
		}
	}
	return NULL;
}

int capture_start(struct capture *c)
{
	sigset_t all, old;
	int own = 0, r;
	bool sorted = false;

	if (c->running)
		return 0;
	for (int i = 0; i < c->n_rings; i++) {
		if (c->rings[i].sort)
			sorted = true;
		else if (c->rings[i].ifid >= 0)
			own++;
	}
	if (c->n_ifs > own || sorted) {
		/* Interfaces the relay feeds, or a sorted ring: their packets come through the queue. */
		c->q = malloc(QUEUE_SIZE);
		if (!c->q) {
			log_error("cannot start the capture: %s", strerror(ENOMEM));
			return -ENOMEM;
		}
	}
	/* The writer takes no signal: the relay's thread handles them all. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&c->thread, NULL, writer_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		log_error("cannot start the capture: cannot start its writer thread: %s", strerror(-r));
		return r;
	}
	c->running = true;
	c->hold_seen_ms = now_ms();
	return 0;
}

/* End the writer thread: from here on the caller is the writer. */
static void join_writer(struct capture *c)
{
	if (!c->running)
		return;
	__atomic_store_n(&c->quit, 1, __ATOMIC_RELEASE);
	wake(c, 0, true);
	pthread_join(c->thread, NULL);
	c->running = false;
	c->stalled = false;
}

void capture_run(struct capture *c, uint64_t now)
{
	uint64_t v;

	(void)now;
	if (read(c->resume_fd, &v, sizeof(v)) < 0) {
		/* not this one: a sorted ring's frames */
	}
	for (int i = 0; i < c->n_rings && !is_stopped(c); i++) {
		struct cap_ring *g = &c->rings[i];

		while (g->sort && block_ready(g))
			take_block(c, g);
	}
}

uint64_t capture_deadline(const struct capture *c)
{
	(void)c;
	return UINT64_MAX;
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
		const struct tpacket_block_desc *bd = ring_block(&c->rings[i]);

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

/*
 * drain_all() - at the end (the caller is the writer): every block the kernel has handed over in
 * every ring and every queued record, flushing (a full pipe waited for) when the buffer cannot
 * hold more.  Return: the number of blocks taken.
 */
static unsigned int drain_all(struct capture *c)
{
	unsigned int taken = 0;

	while (!is_stopped(c)) {
		bool left = c->q && take_records(c, 0);
		struct cap_ring *g = NULL;

		if (left || pcapng_room(&c->w) < c->reserve) {
			if (flush_wait(c, FINISH_WAIT_MS) < 0)
				break;
			continue;
		}
		for (int i = 0; i < c->n_rings && !g; i++)
			if (block_ready(&c->rings[i]))
				g = &c->rings[i];
		if (!g)
			break;
		take_block(c, g);   /* a sorted ring's frames go to the queue, taken on the next turn */
		taken++;
	}
	if (!is_stopped(c) && holds_input(c))
		flush_wait(c, FINISH_WAIT_MS);   /* what is written in place is given back */
	return taken;
}

bool capture_finish(struct capture *c)
{
	uint64_t end, recv = 0, drops = 0, seen = 0;   /* seen: the packets no ring's kernel counted */
	bool own[CAPTURE_MAX_IFS] = { false };   /* its counters are a child ring's, drops included */

	join_writer(c);
	if (!is_stopped(c))
		drain_all(c);
	if (c->n_rings && !is_stopped(c)) {
		/*
		 * The block being filled now is handed over when its timer fires (after one or two
		 * periods).  Once it is, every frame until now has been taken; later ones (the
		 * child's kernel may still send, e.g. MLD reports) need not be waited for.
		 */
		uint64_t until = now_ms() + FINISH_RING_MS;

		while (!is_stopped(c) && now_ms() < until && rings_pending(c)) {
			struct pollfd pf[CAPTURE_MAX_RINGS];

			for (int i = 0; i < c->n_rings; i++)
				pf[i] = (struct pollfd){ .fd = c->rings[i].fd, .events = POLLIN };
			poll(pf, (nfds_t)c->n_rings, (int)(until - now_ms()));
			if (drain_all(c) > 0 && !rings_pending(c))
				break;
		}
	}
	end = now_realtime_ns();
	for (int i = 0; i < c->n_rings; i++) {
		struct cap_ring *g = &c->rings[i];

		read_stats(g);
		recv += g->recv;
		if (g->ifid >= 0 && g->ifid < c->n_ifs) {
			c->ifs[g->ifid].recv = g->recv;    /* the kernel's view: it counts its drops in */
			c->ifs[g->ifid].drops = g->drops;
			own[g->ifid] = true;
		} else if (g->sort && g->drop_ifid >= 0 && g->drop_ifid < c->n_ifs) {
			c->ifs[g->drop_ifid].drops += g->drops;   /* a dropped frame's interface is unknown */
			c->ifs[g->drop_ifid].sorted = true;
		}
	}
	for (int i = 0; i < c->n_ifs; i++)
		if (!own[i] && !c->ifs[i].sorted)   /* a sorted ring's kernel counters have every frame */
			seen += c->ifs[i].recv + c->ifs[i].drops;
	for (int i = 0; i < c->n_ifs && !is_stopped(c); i++) {
		if (pcapng_room(&c->w) < 256 && flush_wait(c, FINISH_WAIT_MS) != 0)
			break;
		pcapng_isb(&c->w, (uint32_t)i, end, c->start_ns, end, c->ifs[i].recv, c->ifs[i].drops);
	}
	for (int i = 0; i < c->n_ifs; i++)
		drops += c->ifs[i].drops;
	if (!is_stopped(c))
		flush_wait(c, FINISH_WAIT_MS);
	/* Once stopped, nothing more is read: those drops were told as the stop. */
	if (drops && !is_stopped(c))
		log_warn("capture: %llu of %llu packets dropped (the capture could not keep up); %s misses "
			 "them (its statistics blocks say so)", (unsigned long long)drops,
			 (unsigned long long)recv + (unsigned long long)seen, c->path);
	hold_end(c, now_ms());
	log_debug("capture: %llu packets written to %s, %llu dropped, the output full %llu times; %llu "
		  "writes, %llu writer wake-ups; the relay held %llu times, %llu ms in all",
		  (unsigned long long)c->w.packets, c->path, (unsigned long long)drops,
		  (unsigned long long)c->stalls, (unsigned long long)c->writes, (unsigned long long)c->wakeups,
		  (unsigned long long)c->holds, (unsigned long long)c->held_ms);
	return !is_stopped(c);
}

void capture_free(struct capture *c)
{
	if (!c)
		return;
	join_writer(c);
	if (c->w.buf)
		pcapng_close(&c->w, 0);
	for (int i = 0; i < c->n_rings; i++)
		if (c->rings[i].map)
			munmap(c->rings[i].map, c->rings[i].len);
	if (c->epfd >= 0)
		close(c->epfd);
	if (c->evfd >= 0)
		close(c->evfd);
	if (c->resume_fd >= 0)
		close(c->resume_fd);
	if (c->out_fd >= 0)
		close(c->out_fd);
	free(c->q);
	free(c->path);
	free(c);
}
