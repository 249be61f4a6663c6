/* SPDX-License-Identifier: MIT */
/*
 * capture/pcapng — a pcapng writer (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html),
 * written by hand: libpcap cannot write pcapng.
 *
 * Blocks are built whole in a buffer and written with one write() per flush (a regular file: one
 * writev() that gathers the buffer and the packets pcapng_epb_ref() left where they are, one copy
 * less), so the output holds whole blocks only: a reader sees a valid file up to the last flush whatever happens to the
 * writer (SIGKILL included).  A regular file whose write fails half-way (a full disk) is cut back
 * to the end of the last whole flush.  A pipe or socket is written without blocking: what it cannot
 * take stays buffered, in order, and pcapng_pending() says so.
 *
 * States:
 *   OPEN     pcapng_open(): the buffer exists, nothing written
 *   WRITING  blocks are appended (SHB first, then IDBs, EPBs, ISBs); flushed by pcapng_flush()
 *   FAILED   a write failed (pcapng_error() is its -errno): every later call returns it, nothing
 *            more is written; the output ends at the last whole block
 *   closed   pcapng_close(): flushed (unless failed) and the buffer freed; the fd is the caller's
 */
#ifndef CHILDFLOW_CAPTURE_PCAPNG_H
#define CHILDFLOW_CAPTURE_PCAPNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PCAPNG_LINKTYPE_ETHERNET 1
#define PCAPNG_LINKTYPE_RAW 101        /* IPv4 or IPv6, no link header */
#define PCAPNG_EPB_INBOUND 1u         /* epb_flags direction bits */
#define PCAPNG_EPB_OUTBOUND 2u

/* A packet pcapng_epb_ref() did not copy: @len bytes at @data go in at @off of the buffer. */
struct pcapng_ref {
	size_t off;
	const void *data;
	size_t len;
};

#define PCAPNG_REF_MIN 2048u          /* smaller packets are copied (cheaper than an iovec) */
#define PCAPNG_REFS 4096u             /* packets referenced per flush at most (more are copied) */

struct pcapng {
	int fd;
	bool is_file;                 /* a regular file: cut back to @good on a failed write */
	bool is_socket;               /* written with send(MSG_DONTWAIT) */
	unsigned char *buf;
	size_t len, cap;              /* bytes buffered, buffer size */
	size_t off;                   /* bytes of buf already written (a pipe that took part) */
	off_t good;                   /* regular file: bytes known to end on a block boundary */
	struct pcapng_ref *refs;      /* a regular file's packets written from where they are */
	size_t n_refs, ref_bytes;     /* ... how many, and their bytes (counted as the buffer's) */
	uint32_t n_if;                /* interfaces described so far */
	uint64_t blocks, packets;     /* blocks and EPBs buffered or written */
	int err;                      /* -errno once FAILED, else 0 */
};

/*
 * pcapng_open() - a writer for @fd (its kind found with fstat; the caller keeps the fd) with a
 * buffer of @cap bytes (at least 64 KiB).  Return: 0 or -errno.
 */
int pcapng_open(struct pcapng *w, int fd, size_t cap);

/* The section header: native byte order, version 1.0, length unknown, shb_os and shb_userappl. */
int pcapng_shb(struct pcapng *w, const char *os, const char *userappl);

/*
 * pcapng_idb() - describe an interface: @linktype, @snaplen, if_name @name, if_description
 * @desc and if_tsresol 9 (nanoseconds).  Return: its interface id (from 0), or -errno.
 */
int pcapng_idb(struct pcapng *w, uint16_t linktype, uint32_t snaplen, const char *name, const char *desc);

/*
 * pcapng_epb() - one packet: @caplen bytes of @data (@origlen on the wire) seen on @ifid at @ts_ns
 * (ns since the epoch), with epb_flags @flags (0: none).  Return: 0; -ENOBUFS when the buffer
 * cannot hold it (flush first); or the writer's error.
 */
int pcapng_epb(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, const void *data, uint32_t caplen,
	       uint32_t origlen, uint32_t flags);

/*
 * pcapng_epb_ref() - as pcapng_epb(), but for a regular file the @caplen bytes at @data (when at
 * least PCAPNG_REF_MIN) are not copied: the next flush writes them from there, so they must stay
 * as they are until pcapng_flush() returned 0 or the writer failed.  Other outputs get a copy.
 * The referenced bytes count against the buffer's room.  Return: as pcapng_epb().
 */
int pcapng_epb_ref(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, const void *data, uint32_t caplen,
		   uint32_t origlen, uint32_t flags);

/* Does the output take references (pcapng_epb_ref() leaves the bytes in place)? */
static inline bool pcapng_gathers(const struct pcapng *w)
{
	return w->refs != NULL;
}

/* Where an EPB's packet bytes start, from the start of the block. */
#define PCAPNG_EPB_DATA_OFF 28u

/* pcapng_epb2() - the same, the packet's bytes in two pieces: @hlen of @head, then @blen of @body. */
int pcapng_epb2(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, const void *head, uint32_t hlen,
		const void *body, uint32_t blen, uint32_t origlen, uint32_t flags);

/*
 * pcapng_isb() - the statistics of @ifid at @ts_ns: isb_starttime, isb_endtime, isb_ifrecv and
 * isb_ifdrop (the kernel's counters).  Return: 0 or -errno (-ENOBUFS as for an EPB).
 */
int pcapng_isb(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, uint64_t start_ns, uint64_t end_ns,
	       uint64_t recv, uint64_t drop);

/* The bytes a block of @caplen packet bytes takes (to reserve room before a batch). */
size_t pcapng_epb_size(uint32_t caplen, uint32_t flags);

/* Free room in the buffer. */
static inline size_t pcapng_room(const struct pcapng *w)
{
	return w->cap - w->len - w->ref_bytes;
}

/*
 * pcapng_flush() - write what is buffered.  Return: 0 when all of it is out; -EAGAIN when a pipe
 * or socket took only part (the rest stays buffered: call again when it is writable); or the
 * writer's error (FAILED).
 */
int pcapng_flush(struct pcapng *w);

/* Bytes buffered and not yet written. */
static inline size_t pcapng_pending(const struct pcapng *w)
{
	return w->len - w->off + w->ref_bytes;
}

static inline int pcapng_error(const struct pcapng *w)
{
	return w->err;
}

/* pcapng_close() - flush (blocking until a pipe took it, at most @wait_ms) and free the buffer. */
int pcapng_close(struct pcapng *w, int wait_ms);

#endif
