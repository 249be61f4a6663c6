/* SPDX-License-Identifier: MIT */
/*
 * capture — `-c/--capture`: the frames of the command tree's link, read from an AF_PACKET socket
 * with a TPACKET_V3 receive ring that the backend created in its interception namespace, written as
 * pcapng (capture/pcapng.h) to a file or to stdout.
 *
 * Theory of operation.  The backend binds the packet socket to its end of the child's link before
 * the link comes up, so every frame the tree sends or receives is in the ring, including the first.
 * The capture is written by a thread of its own (the writer), so the relay's thread only hands
 * over data.  The writer maps the child ring and drains whole blocks of it: each frame is copied
 * once, from the ring into the writer's buffer.  Packets the relay makes (the egress view) or sorts
 * (the host's ring of the wire view, and of --root's egress views: read on the relay's thread
 * because its filter is the relay's socket set, and its prep hook, called there before each block,
 * adds --root's conntrack flows to that same set: one thread owns it) are records in a bounded single-producer, single-consumer queue: capture_packet() copies the
 * packet into it and returns; the writer computes the deferred checksum and copies it into its
 * buffer.  The buffer is written with one write() when it is nearly full and at least every
 * CAPTURE_FLUSH_MS.  Backpressure: while the writer's backlog (the queue, or the child ring's
 * blocks) is above its high-water mark and the writer makes progress, capture_hold() tells the relay
 * to stop reading TCP (flow control then slows the senders), and the writer wakes it through
 * capture_fd() below the low-water mark: TCP is captured whole.  The relay never blocks on the
 * writer: after 1 s without progress (HOLD_GIVE_UP_MS; a pipe nobody reads) the hold ends; then, and for
 * UDP, a full queue counts the packet as dropped on its interface (isb_ifdrop), and a full ring is
 * the kernel's drop (its counters).
 *
 * States:
 *   OPEN      capture_open(): the output is open and the section header written (before the
 *             command starts, so an unwritable output is a usage error)
 *   ATTACHED  capture_attach(), capture_add_if(): the ring is mapped, the interfaces described
 *   RUNNING   capture_start(): the writer thread owns the output and reads the ring and the queue
 *   STALLED   the output (a pipe) is full: the writer waits for it and reads nothing meanwhile
 *   (behind)  any running state with the backlog above its high-water mark: capture_hold() holds
 *             the relay's TCP reads while the writer moves, for at most 1 s without
 *             progress
 *   STOPPED   a write failed: one warning, the output ends at its last whole block, nothing more
 *             is read; capture_finish() reports the capture incomplete
 *   finished  capture_finish(): the writer joined, the ring and the queue drained, statistics
 *             written, the output flushed
 */
#ifndef CHILDFLOW_CAPTURE_H
#define CHILDFLOW_CAPTURE_H

#include <stdbool.h>
#include <stdint.h>

struct capture;

#define CAPTURE_FLUSH_MS 50          /* buffered packets reach the output at least this often */
#define CAPTURE_SNAPLEN 262144u      /* the IDB's snaplen; the ring keeps whole frames */
/* The child view: the child's TCP sockets' buffers (the kernel doubles it), so that what flows
 * still send after capture_hold() fits the ring's headroom (5/8 of 32 MiB) for about 8 of them. */
#define CAPTURE_CHILD_SOCKBUF (1 << 20)

/*
 * capture_open() - open @path for the capture ("-": stdout, which must not be a terminal; the
 * caller then gives the command another stdout) and write the section header.
 * @userappl: shb_userappl.  On failure, prints one line.  Return: the capture, or NULL.
 */
struct capture *capture_open(const char *path, const char *userappl);

/*
 * capture_attach() - start reading the ring of @fd (AF_PACKET, TPACKET_V3 RX ring of @block_nr
 * blocks of @block_size bytes, already bound; the caller keeps the fd open until capture_free())
 * and describe its interface: Ethernet, if_name @ifname, if_description @desc.
 * Return: 0, or -errno after one line.
 */
int capture_attach(struct capture *c, int fd, unsigned int block_size, unsigned int block_nr,
		   unsigned int retire_ms, const char *ifname, const char *desc);

#define CAPTURE_MAX_IFS 16

/*
 * capture_add_if() - describe one more interface (@linktype, if_name @ifname, if_description @desc)
 * whose packets the caller writes with capture_packet().  Return: its id, or -errno (after one line
 * for a write error).
 */
int capture_add_if(struct capture *c, uint16_t linktype, const char *ifname, const char *desc);

/*
 * capture_packet() - one packet of interface @ifid: @len bytes of @data at @ts_ns (CLOCK_REALTIME
 * ns), epb_flags @flags.  Queued for the writer (from one thread only, the relay's); when the queue
 * is full or the capture stopped, the packet is counted as dropped on its interface (the
 * statistics block says so).  Never blocks.  Return: 0 or -errno.
 */
int capture_packet(struct capture *c, int ifid, uint64_t ts_ns, const void *data, uint32_t len, uint32_t flags);

/*
 * struct capture_csum - a checksum the writer fills in: the ones' complement sum of the packet's
 * bytes from @from to its end, plus @seed (a pseudo header's sum, folded to 16 bits), stored
 * complemented as the packet's bytes at @at; @udp: a zero result is stored as 0xffff.
 */
struct capture_csum {
	uint32_t seed;
	uint16_t from, at;
	bool udp;
};

/*
 * capture_packet2() - as capture_packet(), the packet in two pieces (@hlen of @head, then @blen of
 * @body), with the checksum @ck (NULL: none) left to the writer.
 */
int capture_packet2(struct capture *c, int ifid, uint64_t ts_ns, const void *head, uint32_t hlen,
		    const void *body, uint32_t blen, uint32_t flags, const struct capture_csum *ck);

/*
 * capture_start() - start the writer thread (after the last capture_attach()/capture_add_if()):
 * from now on it reads the child ring and the queue and writes the output.  Return: 0, or -errno
 * after one line.
 */
int capture_start(struct capture *c);

/*
 * capture_sort_fn - which interface (an id from capture_add_if()) the frame @data (@len bytes, as
 * captured; @sll its address) seen at @ts_ns is, or -1 to leave it out.
 */
struct sockaddr_ll;
typedef int (*capture_sort_fn)(void *priv, const unsigned char *data, uint32_t len,
			       const struct sockaddr_ll *sll, uint64_t ts_ns);

/* capture_prep_fn - a block of frames is about to be sorted (all of them are in the ring already). */
typedef void (*capture_prep_fn)(void *priv);

#define CAPTURE_MAX_RINGS 2          /* -C both with --root: the child's link and the host's */

/*
 * capture_attach_sorted() - as capture_attach(), for a ring of several interfaces: @sort (with
 * @priv) says which interface each frame is, or that it is left out; @prep (or NULL) is called
 * before each block's frames are sorted.  The kernel's drops are told on interface @drop_ifid.
 * A capture reads up to CAPTURE_MAX_RINGS rings.  Return: 0, or -errno after one line.
 */
int capture_attach_sorted(struct capture *c, int fd, unsigned int block_size, unsigned int block_nr,
			  capture_sort_fn sort, capture_prep_fn prep, void *priv, int drop_ifid);

/*
 * capture_hold() - should the relay stop reading TCP data now (@now: CLOCK_MONOTONIC ms)?  True
 * while the writer's backlog (the queue, or the child ring's blocks) is above its high-water mark
 * and the writer is making progress; false again once it is below the high-water mark, or when
 * the writer has not moved for 1 s (a pipe nobody reads: packets are then dropped and
 * counted, P never waits for it).  After true, capture_fd() becomes readable when the backlog is
 * below its low-water mark.  Relay thread only; never blocks.
 */
bool capture_hold(struct capture *c, uint64_t now);

/* The fd the relay's loop watches for EPOLLIN (the capture's own epoll fd: a sorted ring, and the
 * writer's word that it caught up after capture_hold()). */
int capture_fd(const struct capture *c);

/* capture_run() - the fd is readable: sort the ring's frames into the queue.  Never blocks. */
void capture_run(struct capture *c, uint64_t now_ms);

/* When capture_run() must be called even without events: never (UINT64_MAX). */
uint64_t capture_deadline(const struct capture *c);

/*
 * capture_finish() - the relay is done: stop and join the writer, take the frames still in the
 * ring and the records still queued, write the interface statistics (isb_ifrecv, isb_ifdrop), flush
 * (a pipe gets up to 2 s), and report drops or a stopped capture in one line.
 * Return: true when the output holds everything the ring and the queue delivered.
 */
bool capture_finish(struct capture *c);

/* Stop the writer (when capture_finish() did not), unmap the ring and close the output. */
void capture_free(struct capture *c);

#endif
