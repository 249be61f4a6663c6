/* SPDX-License-Identifier: MIT */
#include "capture/pcapng.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define BT_SHB 0x0A0D0D0Au
#define BT_IDB 0x00000001u
#define BT_ISB 0x00000005u
#define BT_EPB 0x00000006u
#define BYTE_ORDER_MAGIC 0x1A2B3C4Du

#define OPT_END 0
#define OPT_SHB_OS 3
#define OPT_SHB_USERAPPL 4
#define OPT_IF_NAME 2
#define OPT_IF_DESCRIPTION 3
#define OPT_IF_TSRESOL 9
#define OPT_EPB_FLAGS 2
#define OPT_ISB_STARTTIME 2
#define OPT_ISB_ENDTIME 3
#define OPT_ISB_IFRECV 4
#define OPT_ISB_IFDROP 5

#define GATHER_IOV 1024   /* iovecs per writev() (the kernel's UIO_MAXIOV) */
#define OPT_STR_MAX 1024   /* option strings are cut to this (an option's length is 16 bits) */

static size_t pad4(size_t n)
{
	return (n + 3u) & ~(size_t)3u;
}

static void put(struct pcapng *w, const void *p, size_t n)
{
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

static void put32(struct pcapng *w, uint32_t v)
{
	put(w, &v, sizeof(v));
}

static void put16(struct pcapng *w, uint16_t v)
{
	put(w, &v, sizeof(v));
}

static void put_zero(struct pcapng *w, size_t n)
{
	memset(w->buf + w->len, 0, n);
	w->len += n;
}

/* A 64-bit timestamp as pcapng stores it: the high 32 bits first, each in native order. */
static void put_ts(struct pcapng *w, uint64_t ts)
{
	put32(w, (uint32_t)(ts >> 32));
	put32(w, (uint32_t)ts);
}

static size_t opt_size(size_t vlen)
{
	return 4 + pad4(vlen);
}

static void put_opt(struct pcapng *w, uint16_t code, const void *v, size_t vlen)
{
	put16(w, code);
	put16(w, (uint16_t)vlen);
	put(w, v, vlen);
	put_zero(w, pad4(vlen) - vlen);
}

/* opt_endofopt */
static void put_end(struct pcapng *w)
{
	put32(w, OPT_END);
}

static size_t str_len(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return n > OPT_STR_MAX ? OPT_STR_MAX : n;
}

/* Room for a block of @total bytes?  Return: 0, -ENOBUFS, or the writer's error. */
static int reserve(const struct pcapng *w, size_t total)
{
	if (w->err)
		return w->err;
	return total > w->cap - w->len - w->ref_bytes ? -ENOBUFS : 0;
}

int pcapng_open(struct pcapng *w, int fd, size_t cap)
{
	struct stat st;

	memset(w, 0, sizeof(*w));
	w->fd = fd;
	if (fstat(fd, &st) < 0)
		return -errno;
	w->is_file = S_ISREG(st.st_mode);
	w->is_socket = S_ISSOCK(st.st_mode);
	if (w->is_file) {
		int fl = fcntl(fd, F_GETFL);

		w->good = fl >= 0 && (fl & O_APPEND) ? st.st_size : lseek(fd, 0, SEEK_CUR);
		if (w->good < 0)
			w->good = 0;
	}
	if (cap < 65536)
		cap = 65536;
	w->buf = malloc(cap);
	if (!w->buf)
		return -ENOMEM;
	/* A regular file is written with writev(): packets can be gathered from where they are (a
	 * pipe may take part of a flush, and what is left must be the writer's own copy). */
	if (w->is_file && !(w->refs = calloc(PCAPNG_REFS, sizeof(*w->refs)))) {
		free(w->buf);
		w->buf = NULL;
		return -ENOMEM;
	}
	w->cap = cap;
	return 0;
}

int pcapng_shb(struct pcapng *w, const char *os, const char *userappl)
{
	size_t ol = str_len(os), ul = str_len(userappl);
	size_t total = 28 + (ol ? opt_size(ol) : 0) + (ul ? opt_size(ul) : 0) + opt_size(0);
	int r = reserve(w, total);

	if (r < 0)
		return r;
	put32(w, BT_SHB);
	put32(w, (uint32_t)total);
	put32(w, BYTE_ORDER_MAGIC);
	put16(w, 1);
	put16(w, 0);
	put32(w, 0xffffffffu);   /* section length -1: not given */
	put32(w, 0xffffffffu);
	if (ol)
		put_opt(w, OPT_SHB_OS, os, ol);
	if (ul)
		put_opt(w, OPT_SHB_USERAPPL, userappl, ul);
	put_end(w);
	put32(w, (uint32_t)total);
	w->blocks++;
	return 0;
}

int pcapng_idb(struct pcapng *w, uint16_t linktype, uint32_t snaplen, const char *name, const char *desc)
{
	static const uint8_t tsresol = 9;
	size_t nl = str_len(name), dl = str_len(desc);
	size_t total = 20 + opt_size(1) + (nl ? opt_size(nl) : 0) + (dl ? opt_size(dl) : 0) + opt_size(0);
	int r = reserve(w, total);

	if (r < 0)
		return r;
	put32(w, BT_IDB);
	put32(w, (uint32_t)total);
	put16(w, linktype);
	put16(w, 0);
	put32(w, snaplen);
	put_opt(w, OPT_IF_TSRESOL, &tsresol, 1);
	if (nl)
		put_opt(w, OPT_IF_NAME, name, nl);
	if (dl)
		put_opt(w, OPT_IF_DESCRIPTION, desc, dl);
	put_end(w);
	put32(w, (uint32_t)total);
	w->blocks++;
	return (int)w->n_if++;
}

size_t pcapng_epb_size(uint32_t caplen, uint32_t flags)
{
	return 32 + pad4(caplen) + (flags ? opt_size(4) + opt_size(0) : 0);
}

int pcapng_epb(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, const void *data, uint32_t caplen,
	       uint32_t origlen, uint32_t flags)
{
	return pcapng_epb2(w, ifid, ts_ns, data, caplen, "", 0, origlen, flags);
}

/* An EPB's fixed fields, before its packet bytes (room reserved by the caller). */
static void epb_head(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, uint32_t caplen, uint32_t origlen,
		     size_t total)
{
	put32(w, BT_EPB);
	put32(w, (uint32_t)total);
	put32(w, ifid);
	put_ts(w, ts_ns);
	put32(w, caplen);
	put32(w, origlen);
}

/* An EPB's padding, flags option and trailing length, after its packet bytes. */
static void epb_tail(struct pcapng *w, uint32_t caplen, uint32_t flags, size_t total)
{
	put_zero(w, pad4(caplen) - caplen);
	if (flags) {
		put_opt(w, OPT_EPB_FLAGS, &flags, 4);
		put_end(w);
	}
	put32(w, (uint32_t)total);
	w->blocks++;
	w->packets++;
}

int pcapng_epb2(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, const void *head, uint32_t hlen,
		const void *body, uint32_t blen, uint32_t origlen, uint32_t flags)
{
	uint32_t caplen = hlen + blen;
	size_t total = pcapng_epb_size(caplen, flags);
	int r = reserve(w, total);

	if (r < 0)
		return r;
	epb_head(w, ifid, ts_ns, caplen, origlen, total);
	put(w, head, hlen);
	if (blen)
		put(w, body, blen);
	epb_tail(w, caplen, flags, total);
	return 0;
}

int pcapng_epb_ref(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, const void *data, uint32_t caplen,
		   uint32_t origlen, uint32_t flags)
{
	size_t total = pcapng_epb_size(caplen, flags);
	int r;

	if (!w->refs || caplen < PCAPNG_REF_MIN || w->n_refs == PCAPNG_REFS)
		return pcapng_epb(w, ifid, ts_ns, data, caplen, origlen, flags);
	if ((r = reserve(w, total)) < 0)
		return r;
	epb_head(w, ifid, ts_ns, caplen, origlen, total);
	w->refs[w->n_refs++] = (struct pcapng_ref){ .off = w->len, .data = data, .len = caplen };
	w->ref_bytes += caplen;
	epb_tail(w, caplen, flags, total);
	return 0;
}

int pcapng_isb(struct pcapng *w, uint32_t ifid, uint64_t ts_ns, uint64_t start_ns, uint64_t end_ns,
	       uint64_t recv, uint64_t drop)
{
	size_t total = 24 + 4 * opt_size(8) + opt_size(0);
	uint32_t ts[2];
	int r = reserve(w, total);

	if (r < 0)
		return r;
	put32(w, BT_ISB);
	put32(w, (uint32_t)total);
	put32(w, ifid);
	put_ts(w, ts_ns);
	ts[0] = (uint32_t)(start_ns >> 32);
	ts[1] = (uint32_t)start_ns;
	put_opt(w, OPT_ISB_STARTTIME, ts, 8);
	ts[0] = (uint32_t)(end_ns >> 32);
	ts[1] = (uint32_t)end_ns;
	put_opt(w, OPT_ISB_ENDTIME, ts, 8);
	put_opt(w, OPT_ISB_IFRECV, &recv, 8);
	put_opt(w, OPT_ISB_IFDROP, &drop, 8);
	put_end(w);
	put32(w, (uint32_t)total);
	w->blocks++;
	return 0;
}

static int fail(struct pcapng *w, int err)
{
	w->err = err;
	/* A full disk may have taken part of a block: cut the file back to the last whole one. */
	if (w->is_file && ftruncate(w->fd, w->good) == 0)
		lseek(w->fd, w->good, SEEK_SET);
	w->len = w->off = 0;
	w->n_refs = w->ref_bytes = 0;
	return err;
}

/*
 * flush_gather() - a regular file's flush with references: the buffer's pieces and the referenced
 * packets in order, GATHER_IOV at a time, a short write carried on where it stopped.
 * Return: 0, or the writer's error (FAILED).
 */
static int flush_gather(struct pcapng *w)
{
	struct iovec iov[GATHER_IOV];
	size_t ref = 0, at = 0, skip = 0;   /* next ref, next buffer byte; bytes of the batch already out */

	while (at < w->len || ref < w->n_refs) {
		int n = 0;
		ssize_t k;

		/* The next batch: buffer up to the next ref, the ref, ... */
		while (n < GATHER_IOV - 1 && (at < w->len || ref < w->n_refs)) {
			size_t end = ref < w->n_refs ? w->refs[ref].off : w->len;

			if (end > at)
				iov[n++] = (struct iovec){ .iov_base = w->buf + at, .iov_len = end - at };
			at = end;
			if (ref < w->n_refs) {
				iov[n++] = (struct iovec){ .iov_base = (void *)w->refs[ref].data, .iov_len = w->refs[ref].len };
				ref++;
			}
		}
		/* ... written whole, a short write resumed from the byte it stopped at. */
		for (int i = 0; i < n;) {
			if (skip) {
				while (i < n && skip >= iov[i].iov_len)
					skip -= iov[i++].iov_len;
				if (i == n)
					break;
				iov[i].iov_base = (char *)iov[i].iov_base + skip;
				iov[i].iov_len -= skip;
				skip = 0;
			}
			k = writev(w->fd, iov + i, n - i);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				return fail(w, k < 0 ? -errno : -EIO);
			skip = (size_t)k;
		}
	}
	w->good += (off_t)(w->len + w->ref_bytes);
	w->len = w->off = 0;
	w->n_refs = w->ref_bytes = 0;
	return 0;
}

int pcapng_flush(struct pcapng *w)
{
	if (w->err)
		return w->err;
	if (w->n_refs)
		return flush_gather(w);
	while (w->off < w->len) {
		ssize_t n = w->is_socket ? send(w->fd, w->buf + w->off, w->len - w->off, MSG_DONTWAIT | MSG_NOSIGNAL)
					 : write(w->fd, w->buf + w->off, w->len - w->off);

		if (n > 0) {
			w->off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !w->is_file) {
			/* Keep what is left at the front: the room behind it is the buffer's again. */
			memmove(w->buf, w->buf + w->off, w->len - w->off);
			w->len -= w->off;
			w->off = 0;
			return -EAGAIN;
		}
		return fail(w, n < 0 ? -errno : -EIO);
	}
	if (w->is_file)
		w->good += (off_t)w->len;
	w->len = w->off = 0;
	return 0;
}

int pcapng_close(struct pcapng *w, int wait_ms)
{
	struct timespec t0, t;
	int r = 0;

	if (!w->buf)
		return w->err;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while ((r = pcapng_flush(w)) == -EAGAIN) {
		struct pollfd pf = { .fd = w->fd, .events = POLLOUT };
		long left;

		clock_gettime(CLOCK_MONOTONIC, &t);
		left = wait_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0) {
			r = fail(w, -ETIMEDOUT);
			break;
		}
		if (poll(&pf, 1, (int)left) < 0 && errno != EINTR) {
			r = fail(w, -errno);
			break;
		}
	}
	free(w->buf);
	free(w->refs);
	w->buf = NULL;
	w->refs = NULL;
	w->len = w->off = w->cap = 0;
	w->n_refs = w->ref_bytes = 0;
	return r;
}
