/* SPDX-License-Identifier: MIT */
/*
 * capture — `-c/--capture`: the frames of the command tree's link, read from an AF_PACKET socket
 * with a TPACKET_V3 receive ring that the backend created in its interception namespace, written as
 * pcapng (capture/pcapng.h) to a file or to stdout.
 *
 * Theory of operation.  The backend binds the packet socket to its end of the child's link before
 * the link comes up, so every frame the tree sends or receives is in the ring, including the first.
 * P maps the ring and drains whole blocks from its event loop (the loop calls capture_run() when the
 * socket is readable or capture_deadline() passed): each frame is copied once, from the ring into
 * the writer's buffer, and the buffer is written with one write() when it is nearly full and at
 * least every CAPTURE_FLUSH_MS.  A pipe that cannot take more holds the ring back (the kernel
 * then counts drops) rather than blocking the relay.
 *
 * States:
 *   OPEN      capture_open(): the output is open and the section header written (before the
 *             command starts, so an unwritable output is a usage error)
 *   RUNNING   capture_attach(): the ring is mapped and its interface described; capture_run()
 *   STALLED   the output (a pipe) is full: the ring is not read until it drains
 *   STOPPED   a write failed: one warning, the output ends at its last whole block, the ring is
 *             no longer read; capture_finish() reports the capture incomplete
 *   finished  capture_finish(): the ring drained, statistics written, the output flushed
 */
#ifndef CHILDFLOW_CAPTURE_H
#define CHILDFLOW_CAPTURE_H

#include <stdbool.h>
#include <stdint.h>

struct capture;

#define CAPTURE_FLUSH_MS 50          /* buffered packets reach the output at least this often */
#define CAPTURE_SNAPLEN 262144u      /* the IDB's snaplen; the ring keeps whole frames */

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
 * ns), epb_flags @flags.  Buffered; a full buffer is flushed, and when the output cannot take it now
 * (a full pipe) the packet is counted as dropped on its interface (the statistics block says so).
 * Return: 0 or -errno.
 */
int capture_packet(struct capture *c, int ifid, uint64_t ts_ns, const void *data, uint32_t len, uint32_t flags);

/* capture_packet2() - the same, the packet in two pieces (@hlen of @head, then @blen of @body). */
int capture_packet2(struct capture *c, int ifid, uint64_t ts_ns, const void *head, uint32_t hlen,
		    const void *body, uint32_t blen, uint32_t flags);

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

/* The fd the event loop watches for EPOLLIN (the capture's own epoll fd). */
int capture_fd(const struct capture *c);

/* capture_run() - the fd is readable or the deadline passed (@now_ms: CLOCK_MONOTONIC).  Never blocks. */
void capture_run(struct capture *c, uint64_t now_ms);

/* When capture_run() must be called even without events, or UINT64_MAX. */
uint64_t capture_deadline(const struct capture *c);

/*
 * capture_finish() - the relay is done: take the frames still in the ring, write the interface
 * statistics (isb_ifrecv, isb_ifdrop), flush (a pipe gets up to 2 s), and report drops or a stopped
 * capture in one line.  Return: true when the output holds everything the ring delivered.
 */
bool capture_finish(struct capture *c);

/* Unmap the ring and close the output. */
void capture_free(struct capture *c);

#endif
