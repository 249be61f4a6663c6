/* SPDX-License-Identifier: MIT */
/* capture/egress — the reconstructed egress view (see egress.h). */
#include "capture/egress.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "capture/capture.h"
#include "capture/pcapng.h"
#include "util/log.h"
#include "util/proc.h"

#define EG_BUCKETS 1024u
#define EG_SEG_MAX 65000u           /* payload bytes per segment (an IPv4 packet ends at 65535) */
#define EG_HDR_MAX 40u              /* room for the IP header in front of the transport's */
#define EG_DGRAM_MAX 65507u         /* UDP payload bytes an IPv4 packet can carry */

enum { EG_FIN = 0x01, EG_SYN = 0x02, EG_RST = 0x04, EG_PSH = 0x08, EG_ACK = 0x10 };

/* One relayed TCP connection: its two endpoints and each side's next sequence number. */
struct eg_tcp {
	uint64_t id;                 /* the flow record's */
	union flow_addr local, peer; /* the host's socket, and the remote (destination or proxy) */
	uint32_t seq[2];             /* next sequence number of the host (0) and of the remote (1) */
	int fd;                      /* the attempt's socket while its SYN waits for an answer, else -1 */
	uint64_t syn_ns;             /* when its first SYN left (CLOCK_REALTIME) */
	struct eg_tcp *next;
};

struct egress_view {
	struct capture *cap;
	int ifid;
	struct eg_tcp *hash[EG_BUCKETS];
	struct flow_tap tap;
	struct flow_observer obs;
	uint64_t isn_key;
	uint64_t at_ns;                          /* the next packet's time when not now (0: now) */
	unsigned int syn_linear;                 /* net.ipv4.tcp_syn_linear_timeouts (0: none) */
	unsigned char hdr[EG_HDR_MAX + 20];      /* IP header room, then the transport header */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * csum_add() - the ones' complement sum of @len bytes at @data, added to @sum, as native 16-bit
 * words (the sum does not depend on byte order as long as the result is stored back as it is:
 * csum_store()).  Pieces summed one after another must have even lengths but for the last.
 */
static uint64_t csum_add(uint64_t sum, const void *data, size_t len)
{
	const unsigned char *p = data;
	uint32_t w;
	uint16_t h = 0;

	for (; len >= 4; p += 4, len -= 4) {
		memcpy(&w, p, 4);
		sum += w;
	}
	if (len >= 2) {
		memcpy(&h, p, 2);
		sum += h;
		p += 2;
		len -= 2;
	}
	if (len) {
		h = 0;
		memcpy(&h, p, 1);   /* the odd byte is the first (high) byte of a zero-padded word */
		sum += h;
	}
	return sum;
}

/* Fold @sum, complement it, and store it at @at as the packet's bytes. */
static void csum_store(unsigned char *at, uint64_t sum, bool udp)
{
	uint16_t ck;

	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	ck = (uint16_t)~sum;
	if (udp && ck == 0)
		ck = 0xffff;   /* UDP: 0 means "no checksum" */
	memcpy(at, &ck, 2);
}

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p + 2, (uint16_t)v);
}

static uint16_t port_of(const union flow_addr *a)
{
	return ntohs(a->sa.sa_family == AF_INET6 ? a->in6.sin6_port : a->in4.sin_port);
}

/*
 * emit() - one packet from @src to @dst: the IP header is written in front of the transport header
 * already at e->hdr + EG_HDR_MAX (@l4hdr bytes, checksum field at @csum_off still zero), followed
 * by @len bytes of @payload; queued with direction @flags.  The transport checksum over the
 * payload is left to the capture's writer (its thread): here only the headers are summed.
 */
static void emit(struct egress_view *e, const union flow_addr *src, const union flow_addr *dst, uint8_t proto,
		 size_t l4hdr, size_t csum_off, const void *payload, size_t len, uint32_t flags)
{
	unsigned char *l4 = e->hdr + EG_HDR_MAX, *ip;
	size_t l4len = l4hdr + len, hl;
	struct capture_csum ck;
	uint16_t be;
	uint64_t sum;

	if (src->sa.sa_family == AF_INET) {
		hl = 20;
		ip = l4 - hl;
		memset(ip, 0, hl);
		ip[0] = 0x45;
		put16(ip + 2, (uint16_t)(hl + l4len));
		ip[6] = 0x40;   /* DF */
		ip[8] = 64;
		ip[9] = proto;
		memcpy(ip + 12, &src->in4.sin_addr, 4);
		memcpy(ip + 16, &dst->in4.sin_addr, 4);
		csum_store(ip + 10, csum_add(0, ip, hl), false);
		sum = proto == IPPROTO_ICMP ? 0 : csum_add(0, ip + 12, 8);
	} else {
		hl = 40;
		ip = l4 - hl;
		memset(ip, 0, hl);
		ip[0] = 0x60;
		put16(ip + 4, (uint16_t)l4len);
		ip[6] = proto;
		ip[7] = 64;
		memcpy(ip + 8, &src->in6.sin6_addr, 16);
		memcpy(ip + 24, &dst->in6.sin6_addr, 16);
		sum = csum_add(0, ip + 8, 32);
	}
	/* The pseudo header's protocol and length, as big-endian words like the rest (ICMPv4 has none;
	 * ICMPv6's 32-bit length and next header sum the same as these two words). */
	if (proto != IPPROTO_ICMP) {
		be = htons(proto);
		sum = csum_add(sum, &be, 2);
		be = htons((uint16_t)l4len);
		sum = csum_add(sum, &be, 2);
	}
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	/* The writer sums the transport header and the payload from the L4 start on (even: 20, 8). */
	ck = (struct capture_csum){ .seed = (uint32_t)sum, .from = (uint16_t)hl, .at = (uint16_t)(hl + csum_off),
				    .udp = proto == IPPROTO_UDP };
	capture_packet2(e->cap, e->ifid, e->at_ns ? e->at_ns : now_ns(), ip, (uint32_t)(hl + l4hdr), payload, (uint32_t)len, flags, &ck);
}

/* A TCP segment from side @side (0: the host) of @t, with @len bytes of @data. */
static void segment(struct egress_view *e, struct eg_tcp *t, int side, uint8_t th, const void *data, size_t len)
{
	unsigned char *h = e->hdr + EG_HDR_MAX;
	const union flow_addr *src = side ? &t->peer : &t->local, *dst = side ? &t->local : &t->peer;

	memset(h, 0, 20);
	put16(h, port_of(src));
	put16(h + 2, port_of(dst));
	put32(h + 4, t->seq[side]);
	if (th & EG_ACK)
		put32(h + 8, t->seq[!side]);
	h[12] = 5 << 4;
	h[13] = th;
	put16(h + 14, 65535);
	emit(e, src, dst, IPPROTO_TCP, 20, 16, data, len, side ? PCAPNG_EPB_INBOUND : PCAPNG_EPB_OUTBOUND);
	t->seq[side] += (uint32_t)len + ((th & (EG_SYN | EG_FIN)) ? 1u : 0u);
}

static unsigned int bucket(uint64_t id)
{
	return (unsigned int)((id * 0x9e3779b97f4a7c15ull) >> 54) & (EG_BUCKETS - 1);
}

static struct eg_tcp **find(struct egress_view *e, uint64_t id)
{
	struct eg_tcp **pp = &e->hash[bucket(id)];

	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

/* Both ends of a connected socket, of one family.  Return: false when they cannot be had. */
static bool endpoints(int fd, union flow_addr *local, union flow_addr *peer)
{
	socklen_t ll = sizeof(*local), pl = sizeof(*peer);

	memset(local, 0, sizeof(*local));
	memset(peer, 0, sizeof(*peer));
	if (getsockname(fd, &local->sa, &ll) < 0 || getpeername(fd, &peer->sa, &pl) < 0)
		return false;
	return local->sa.sa_family == peer->sa.sa_family &&
	       (local->sa.sa_family == AF_INET || local->sa.sa_family == AF_INET6);
}

/*
 * attempt() - the record of TCP flow @f on @fd, new: both ends from the socket (the peer by
 * SO_PEERNAME, which a socket still connecting or already refused answers; getpeername() does
 * not), initial sequence numbers from the flow's id.  Return: it (linked), or NULL.
 */
static struct eg_tcp *attempt(struct egress_view *e, const struct flow_record *f, int fd)
{
	struct eg_tcp *t = calloc(1, sizeof(*t)), **pp = find(e, f->id);
	uint64_t isn = (f->id + 1) * e->isn_key;
	socklen_t ll = sizeof(t->local), pl;

	if (!t)
		return NULL;
	/* SO_PEERNAME wants room for exactly the family's address, no more */
	if (*pp || getsockname(fd, &t->local.sa, &ll) < 0 || !(pl = flow_sa_len(&t->local)) ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERNAME, &t->peer.sa, &pl) < 0 ||
	    t->local.sa.sa_family != t->peer.sa.sa_family ||
	    (t->local.sa.sa_family != AF_INET && t->local.sa.sa_family != AF_INET6)) {
		free(t);
		return NULL;
	}
	t->id = f->id;
	t->fd = fd;
	t->syn_ns = now_ns();
	t->seq[0] = (uint32_t)isn;
	t->seq[1] = (uint32_t)(isn >> 32);
	*pp = t;
	return t;
}

/* TCP flow @f's connect() on @fd: the host's SYN. */
static void tap_connecting(void *priv, const struct flow_record *f, int fd)
{
	struct egress_view *e = priv;
	struct eg_tcp *t = attempt(e, f, fd);

	if (t)
		segment(e, t, 0, EG_SYN, NULL, 0);
}

static void tap_ready(void *priv, const struct flow_record *f, int fd)
{
	struct egress_view *e = priv;
	struct eg_tcp *t = *find(e, f->id);

	if (t && t->fd != fd) {   /* not this socket's SYN (cannot happen: failed() ends each attempt) */
		*find(e, f->id) = t->next;
		free(t);
		t = NULL;
	}
	if (!t) {
		if (!(t = attempt(e, f, fd)))
			return;
		segment(e, t, 0, EG_SYN, NULL, 0);
	}
	t->fd = -1;
	segment(e, t, 1, EG_SYN | EG_ACK, NULL, 0);
	segment(e, t, 0, EG_ACK, NULL, 0);
}

/*
 * tap_failed() - the attempt on @fd ended unconnected: what its socket went through.  Still
 * SYN-SENT: the SYN was sent again (TCP_INFO's retransmissions) and never answered; closed with
 * ECONNREFUSED: the remote's RST answered the SYN; closed otherwise: an ICMP error (on the
 * wire-egress view) or nothing; connected (a proxy that refused the tunnel): the handshake, then
 * P's RST.
 */
static void tap_failed(void *priv, const struct flow_record *f, int fd, int err)
{
	struct egress_view *e = priv;
	struct eg_tcp **pp = find(e, f->id), *t = *pp;
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (!t || t->fd != fd)
		return;
	*pp = t->next;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		ti.tcpi_state = TCP_CLOSE;
	if (ti.tcpi_state == TCP_SYN_SENT || ti.tcpi_state == TCP_CLOSE) {
		uint64_t now = now_ns(), at = t->syn_ns, rto = 1000000000ull;   /* TCP_TIMEOUT_INIT */

		for (unsigned int i = 0; i < ti.tcpi_total_retrans && i < 16; i++) {
			/* Stamped when the kernel's SYN backoff sent it (never after the failure): the
			 * first tcp_syn_linear_timeouts + 1 a second apart, then each interval doubled up
			 * to TCP_RTO_MAX (measured on the wire: 0, 1, 2, 3, 4, 5, 7, 11, 19 s). */
			if (i > e->syn_linear && rto < 120000000000ull)
				rto *= 2;
			at += rto;
			e->at_ns = at < now ? at : now;
			t->seq[0]--;   /* the same SYN again */
			segment(e, t, 0, EG_SYN, NULL, 0);
		}
		e->at_ns = 0;
		if (ti.tcpi_state == TCP_CLOSE && err == ECONNREFUSED) {
			t->seq[1] = 0;   /* a RST answering a SYN has sequence number 0 */
			segment(e, t, 1, EG_RST | EG_ACK, NULL, 0);
		}
	} else {
		segment(e, t, 1, EG_SYN | EG_ACK, NULL, 0);
		segment(e, t, 0, EG_ACK, NULL, 0);
		segment(e, t, 0, EG_RST | EG_ACK, NULL, 0);
	}
	free(t);
}

static void tap_stream(void *priv, const struct flow_record *f, int dir, const void *buf, size_t len)
{
	struct egress_view *e = priv;
	struct eg_tcp *t = *find(e, f->id);
	const unsigned char *p = buf;

	if (!t)
		return;
	while (len) {
		size_t n = len < EG_SEG_MAX ? len : EG_SEG_MAX;

		segment(e, t, dir, EG_PSH | EG_ACK, p, n);
		p += n;
		len -= n;
	}
}

static void obs_closed(void *priv, const struct flow_record *f)
{
	struct egress_view *e = priv;
	struct eg_tcp **pp, *t;

	if (f->proto != FLOW_TCP || !*(pp = find(e, f->id)))
		return;
	t = *pp;
	*pp = t->next;
	if (t->fd >= 0) {   /* its SYN alone went out (an attempt the relay gave up without failed()) */
		free(t);
		return;
	}
	switch (f->outcome) {
	case FLOW_OK:
		segment(e, t, 0, EG_FIN | EG_ACK, NULL, 0);
		segment(e, t, 1, EG_FIN | EG_ACK, NULL, 0);
		segment(e, t, 0, EG_ACK, NULL, 0);
		break;
	case FLOW_RESET_UP:
		segment(e, t, 1, EG_RST | EG_ACK, NULL, 0);
		break;
	default:   /* the child's side failed, a cut at exit, a refusal once connected: P reset it */
		segment(e, t, 0, EG_RST | EG_ACK, NULL, 0);
		break;
	}
	free(t);
}

static void tap_datagram(void *priv, int fd, int dir, const void *buf, size_t len)
{
	struct egress_view *e = priv;
	union flow_addr local, peer;
	const union flow_addr *src = dir ? &peer : &local, *dst = dir ? &local : &peer;
	unsigned char *h = e->hdr + EG_HDR_MAX;

	if (len > EG_DGRAM_MAX || !endpoints(fd, &local, &peer))
		return;
	put16(h, port_of(src));
	put16(h + 2, port_of(dst));
	put16(h + 4, (uint16_t)(8 + len));
	put16(h + 6, 0);
	emit(e, src, dst, IPPROTO_UDP, 8, 6, buf, len, dir ? PCAPNG_EPB_INBOUND : PCAPNG_EPB_OUTBOUND);
}

/* One echo request (@dir 0) or reply of an echo flow, the checksum left to the writer. */
static void tap_echo(void *priv, const union flow_addr *local, const union flow_addr *peer, int dir,
		     const uint8_t hdr[8], const void *data, size_t len)
{
	struct egress_view *e = priv;
	unsigned char *h = e->hdr + EG_HDR_MAX;
	bool v6 = local->sa.sa_family == AF_INET6;

	if (len > EG_DGRAM_MAX)
		return;
	memcpy(h, hdr, 8);
	put16(h + 2, 0);
	emit(e, dir ? peer : local, dir ? local : peer, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, 8, 2, data, len,
	     dir ? PCAPNG_EPB_INBOUND : PCAPNG_EPB_OUTBOUND);
}

struct egress_view *egress_new(struct capture *cap, const char *desc)
{
	struct egress_view *e = calloc(1, sizeof(*e));
	struct timespec ts;
	long lin;

	if (!e) {
		log_error("cannot start the capture: %s", strerror(ENOMEM));
		return NULL;
	}
	e->cap = cap;
	/* Absent before it existed: the SYN backoff is then exponential from the first retransmission. */
	lin = proc_read_long("/proc/sys/net/ipv4/tcp_syn_linear_timeouts");
	e->syn_linear = lin > 0 ? (unsigned int)lin : 0;
	e->ifid = capture_add_if(cap, PCAPNG_LINKTYPE_RAW, EGRESS_IFNAME, desc);
	if (e->ifid < 0) {
		free(e);
		return NULL;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	/* Initial sequence numbers only need to look like ones: odd multiplier, varied per run. */
	e->isn_key = ((uint64_t)ts.tv_nsec << 20 ^ (uint64_t)ts.tv_sec) * 2u + 0x9e3779b97f4a7c15ull;
	e->tap = (struct flow_tap){ .ready = tap_ready, .stream = tap_stream, .datagram = tap_datagram,
				    .connecting = tap_connecting, .failed = tap_failed, .echo = tap_echo, .priv = e };
	e->obs = (struct flow_observer){ .closed = obs_closed, .priv = e };
	return e;
}

const struct flow_tap *egress_tap(struct egress_view *e)
{
	return &e->tap;
}

const struct flow_observer *egress_observer(struct egress_view *e)
{
	return &e->obs;
}

void egress_free(struct egress_view *e)
{
	if (!e)
		return;
	for (unsigned int b = 0; b < EG_BUCKETS; b++) {
		while (e->hash[b]) {
			struct eg_tcp *t = e->hash[b];

			e->hash[b] = t->next;
			free(t);
		}
	}
	free(e);
}
