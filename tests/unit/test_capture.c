/* Unit tests: capture — the writer thread and its queue: packets whole and in order with their deferred
 * checksums, an interface described while the writer runs, and a writer that falls behind: every packet
 * written or counted as dropped, the relay never blocked. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
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
#include <sys/stat.h>
#include <arpa/inet.h>

#include "capture/capture.h"
#include "capture/pcapng.h"

static uint32_t u32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* What a file holds: its EPBs (interface, bytes), IDB count, and each interface's ISB counters. */
struct parsed {
	int n_idb, n_epb;
	uint32_t epb_if[4096];
	const unsigned char *epb_data[4096];
	uint32_t epb_len[4096];
	uint64_t recv[8], drop[8];
	int n_isb;
	int idb_before_first_epb_of_if1;   /* IDBs seen when interface 1's first packet came */
};

static void parse(const unsigned char *b, size_t len, struct parsed *p)
{
	size_t off = 0;

	memset(p, 0, sizeof(*p));
	p->idb_before_first_epb_of_if1 = -1;
	while (off + 12 <= len) {
		uint32_t type = u32(b + off), bl = u32(b + off + 4);

		assert_true(bl >= 12 && off + bl <= len);
		assert_int_equal(u32(b + off + bl - 4), bl);
		if (type == 1)
			p->n_idb++;
		if (type == 6 && p->n_epb < 4096) {
			uint32_t ifid = u32(b + off + 8);

			if (ifid == 1 && p->idb_before_first_epb_of_if1 < 0)
				p->idb_before_first_epb_of_if1 = p->n_idb;
			p->epb_if[p->n_epb] = ifid;
			p->epb_len[p->n_epb] = u32(b + off + 20);
			p->epb_data[p->n_epb++] = b + off + 28;
		}
		if (type == 5) {
			uint32_t ifid = u32(b + off + 8);
			size_t o = off + 20;

			while (o + 4 <= off + bl - 4) {
				uint16_t code, olen;

				memcpy(&code, b + o, 2);
				memcpy(&olen, b + o + 2, 2);
				if (code == 0)
					break;
				if (code == 4 && ifid < 8)
					memcpy(&p->recv[ifid], b + o + 4, 8);
				if (code == 5 && ifid < 8)
					memcpy(&p->drop[ifid], b + o + 4, 8);
				o += 4 + ((olen + 3u) & ~3u);
			}
			p->n_isb++;
		}
		off += bl;
	}
	assert_int_equal(off, len);
}

static unsigned char *slurp(const char *path, size_t *len)
{
	struct stat st;
	unsigned char *b;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(read(fd, b, *len), (ssize_t)*len);
	close(fd);
	return b;
}

/* An IPv4/UDP packet of @plen payload bytes (value @seed), its UDP checksum left zero. */
static uint32_t make_udp(unsigned char *pkt, uint32_t plen, unsigned int seed)
{
	uint32_t l4 = 8 + plen;

	memset(pkt, 0, 28);
	pkt[0] = 0x45;
	pkt[2] = (unsigned char)((20 + l4) >> 8);
	pkt[3] = (unsigned char)(20 + l4);
	pkt[8] = 64;
	pkt[9] = 17;
	memcpy(pkt + 12, "\x0a\x00\x00\x01\x0a\x00\x00\x02", 8);
	pkt[20] = 0x30;
	pkt[21] = 0x39;
	pkt[22] = 0x00;
	pkt[23] = 0x35;
	pkt[24] = (unsigned char)(l4 >> 8);
	pkt[25] = (unsigned char)l4;
	for (uint32_t i = 0; i < plen; i++)
		pkt[28 + i] = (unsigned char)(seed * 7 + i * 13);
	return 28 + plen;
}

/* The UDP checksum of @pkt as RFC 768 says, big-endian words, written independently of the product. */
static uint16_t udp_csum(const unsigned char *pkt, uint32_t len)
{
	uint32_t sum = 0, l4 = len - 20;

	for (int i = 12; i < 20; i += 2)
		sum += (uint32_t)pkt[i] << 8 | pkt[i + 1];
	sum += 17 + l4;
	for (uint32_t i = 20; i < len; i += 2) {
		uint32_t w = (uint32_t)pkt[i] << 8;

		if (i + 1 < len)
			w |= pkt[i + 1];
		if (i != 26)   /* the checksum field itself counts as zero */
			sum += w;
	}
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	sum = ~sum & 0xffff;
	return (uint16_t)(sum ? sum : 0xffff);
}

/* The seed the egress view gives: the pseudo header's sum, native 16-bit words, folded. */
static struct capture_csum seed_of(const unsigned char *pkt, uint32_t len)
{
	uint64_t sum = 0;
	uint16_t w, be;

	for (int i = 12; i < 20; i += 2) {
		memcpy(&w, pkt + i, 2);
		sum += w;
	}
	be = htons(17);
	sum += be;
	be = htons((uint16_t)(len - 20));
	sum += be;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (struct capture_csum){ .seed = (uint32_t)sum, .from = 20, .at = 26, .udp = true };
}

static void tmp_path(char *buf, size_t n, const char *what)
{
	snprintf(buf, n, "/tmp/cf-unit-capture-%d-%s.pcapng", (int)getpid(), what);
}

static void test_queued_packets_whole_in_order_with_checksums(void **state)
{
	char path[128];
	unsigned char pkt[5000];
	struct parsed *p = malloc(sizeof(*p));
	struct capture *c;
	unsigned char *b;
	size_t len;
	int ifa, ifb;

	(void)state;
	assert_non_null(p);
	tmp_path(path, sizeof(path), "order");
	c = capture_open(path, "unit");
	assert_non_null(c);
	ifa = capture_add_if(c, PCAPNG_LINKTYPE_RAW, "egress", "childflow view=egress");
	assert_int_equal(ifa, 0);
	assert_int_equal(capture_start(c), 0);
	/* Described while the writer runs: its IDB must come before its first packet. */
	ifb = capture_add_if(c, PCAPNG_LINKTYPE_RAW, "late", "an interface that appeared");
	assert_int_equal(ifb, 1);
	for (unsigned int i = 0; i < 1000; i++) {
		uint32_t n = make_udp(pkt, 1 + (i * 37) % 4500, i);
		struct capture_csum ck = seed_of(pkt, n);

		/* In two pieces, as the egress view hands them: the headers, then the payload (sizes
		 * either side of PCAPNG_REF_MIN: a file writes the larger ones from the queue). */
		assert_int_equal(capture_packet2(c, (int)(i % 2 ? ifb : ifa), 1000 + i, pkt, 28, pkt + 28, n - 28, 0, &ck), 0);
	}
	assert_true(capture_finish(c));
	capture_free(c);
	b = slurp(path, &len);
	parse(b, len, p);
	assert_int_equal(p->n_idb, 2);
	assert_int_equal(p->idb_before_first_epb_of_if1, 2);
	assert_int_equal(p->n_epb, 1000);
	for (unsigned int i = 0; i < 1000; i++) {
		uint32_t n = make_udp(pkt, 1 + (i * 37) % 4500, i);
		uint16_t want = udp_csum(pkt, n);

		assert_int_equal(p->epb_if[i], i % 2);
		assert_int_equal(p->epb_len[i], n);
		assert_memory_equal(p->epb_data[i], pkt, 26);
		assert_int_equal((uint16_t)(p->epb_data[i][26] << 8 | p->epb_data[i][27]), want);
		assert_memory_equal(p->epb_data[i] + 28, pkt + 28, n - 28);
	}
	assert_int_equal(p->n_isb, 2);
	assert_int_equal(p->recv[0], 500);
	assert_int_equal(p->recv[1], 500);
	assert_int_equal(p->drop[0] + p->drop[1], 0);
	free(b);
	free(p);
	unlink(path);
}

struct drain {
	int fd;
	unsigned char *buf;
	size_t len, cap;
};

static void *drain_main(void *arg)
{
	struct drain *d = arg;

	for (;;) {
		ssize_t n;

		if (d->len == d->cap) {
			d->cap *= 2;
			d->buf = realloc(d->buf, d->cap);
			if (!d->buf)
				return NULL;
		}
		n = read(d->fd, d->buf + d->len, d->cap - d->len);
		if (n <= 0)
			return NULL;
		d->len += (size_t)n;
	}
}

/* A writer stuck on a full pipe: the producer never blocks, and each packet is written or counted. */
static void test_full_pipe_drops_are_counted_not_waited_for(void **state)
{
	char path[128];
	static unsigned char pkt[60000];
	struct parsed *p = malloc(sizeof(*p));
	struct drain d = { .cap = 1u << 20 };
	struct timespec t0, t1;
	struct capture *c;
	pthread_t th;
	int ifa, rfd, dropped = 0;
	const int total = 600;   /* 36 MB: more than the queue holds */

	(void)state;
	assert_non_null(p);
	tmp_path(path, sizeof(path), "fifo");
	unlink(path);
	assert_int_equal(mkfifo(path, 0600), 0);
	rfd = open(path, O_RDONLY | O_NONBLOCK);
	assert_true(rfd >= 0);
	c = capture_open(path, "unit");
	assert_non_null(c);
	ifa = capture_add_if(c, PCAPNG_LINKTYPE_RAW, "egress", "childflow view=egress");
	assert_int_equal(capture_start(c), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < total; i++) {
		uint32_t n = make_udp(pkt, sizeof(pkt) - 28, (unsigned int)i);
		int r = capture_packet(c, ifa, (uint64_t)i, pkt, n, 0);

		assert_true(r == 0 || r == -ENOBUFS);
		dropped += r == -ENOBUFS;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* Nobody read the pipe: the queue filled and the rest was dropped at once. */
	assert_true(dropped > 0);
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 2000);
	/* Now read it: what was queued is written whole, and the statistics say what was not. */
	fcntl(rfd, F_SETFL, 0);
	d.fd = rfd;
	d.buf = malloc(d.cap);
	assert_non_null(d.buf);
	assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
	assert_true(capture_finish(c));
	capture_free(c);   /* closes the pipe: the reader sees its end */
	pthread_join(th, NULL);
	close(rfd);
	assert_non_null(d.buf);
	parse(d.buf, d.len, p);
	assert_int_equal(p->n_epb, total - dropped);
	assert_int_equal(p->recv[0], (uint64_t)(total - dropped));
	assert_int_equal(p->drop[0], (uint64_t)dropped);
	free(d.buf);
	free(p);
	unlink(path);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * A writer merely slower than the producer (an output that takes 20 ms per MiB, by the test knob):
 * a producer that stops while capture_hold() says so, as the relay stops reading TCP, loses nothing;
 * capture_fd() wakes it when the writer has caught up.
 */
static void test_hold_a_slow_writer_loses_nothing(void **state)
{
	char path[128];
	static unsigned char pkt[60000];
	struct parsed *p = malloc(sizeof(*p));
	struct capture *c;
	unsigned char *b;
	size_t len;
	int ifa, holds = 0, woken = 0;
	const int total = 600;   /* 36 MB: more than the queue holds */

	(void)state;
	assert_non_null(p);
	tmp_path(path, sizeof(path), "slow");
	setenv("CHILDFLOW_TEST_CAPTURE_US_PER_MIB", "20000", 1);
	c = capture_open(path, "unit");
	unsetenv("CHILDFLOW_TEST_CAPTURE_US_PER_MIB");
	assert_non_null(c);
	ifa = capture_add_if(c, PCAPNG_LINKTYPE_RAW, "egress", "childflow view=egress");
	assert_int_equal(capture_start(c), 0);
	for (int i = 0; i < total; i++) {
		uint32_t n = make_udp(pkt, sizeof(pkt) - 28, (unsigned int)i);

		while (capture_hold(c, mono_ms())) {
			struct pollfd pf = { .fd = capture_fd(c), .events = POLLIN };

			holds++;
			woken += poll(&pf, 1, 20) > 0;
			capture_run(c, mono_ms());
		}
		assert_int_equal(capture_packet(c, ifa, (uint64_t)i, pkt, n, 0), 0);
	}
	assert_true(holds > 0);    /* the writer was behind: the producer waited */
	assert_true(woken > 0);    /* ... and was told when it could go on */
	assert_true(capture_finish(c));
	capture_free(c);
	b = slurp(path, &len);
	parse(b, len, p);
	assert_int_equal(p->n_epb, total);
	assert_int_equal(p->recv[0], (uint64_t)total);
	assert_int_equal(p->drop[0], 0);
	free(b);
	free(p);
	unlink(path);
}

/* A pipe nobody reads: capture_hold() holds only while the writer moves, then gives up (1 s). */
static void test_hold_gives_up_on_a_stuck_pipe(void **state)
{
	char path[128];
	static unsigned char pkt[60000];
	struct capture *c;
	uint64_t t;
	int ifa, rfd, queued = 0;

	(void)state;
	tmp_path(path, sizeof(path), "stuck");
	unlink(path);
	assert_int_equal(mkfifo(path, 0600), 0);
	rfd = open(path, O_RDONLY | O_NONBLOCK);
	assert_true(rfd >= 0);
	c = capture_open(path, "unit");
	assert_non_null(c);
	ifa = capture_add_if(c, PCAPNG_LINKTYPE_RAW, "egress", "childflow view=egress");
	assert_false(capture_hold(c, mono_ms()));   /* not running: nothing to wait for */
	assert_int_equal(capture_start(c), 0);
	t = mono_ms();
	assert_false(capture_hold(c, t));           /* nothing queued */
	for (int i = 0; i < 300; i++)
		queued += capture_packet(c, ifa, (uint64_t)i, pkt, make_udp(pkt, sizeof(pkt) - 28, (unsigned int)i), 0) == 0;
	assert_true(queued > 200);
	usleep(200000);   /* the writer filled the pipe and its buffer: stalled */
	t = mono_ms();
	assert_true(capture_hold(c, t));            /* above the high-water mark, not yet given up */
	assert_true(capture_hold(c, t + 999));
	assert_false(capture_hold(c, t + 1000));    /* no progress for 1 s: the relay goes on, drops */
	signal(SIGPIPE, SIG_IGN);
	close(rfd);   /* the reader goes: the write fails (EPIPE), the capture stops */
	capture_finish(c);
	capture_free(c);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queued_packets_whole_in_order_with_checksums),
		cmocka_unit_test(test_full_pipe_drops_are_counted_not_waited_for),
		cmocka_unit_test(test_hold_a_slow_writer_loses_nothing),
		cmocka_unit_test(test_hold_gives_up_on_a_stuck_pipe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
