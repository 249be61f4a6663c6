/* Unit tests: capture/pcapng — blocks byte for byte, whole blocks after a failed write, pipes that take part. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "capture/pcapng.h"

static int memfd(void)
{
	int fd = memfd_create("pcapng-test", MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	return fd;
}

/* The whole content of @fd (a memfd) into a malloc'd buffer; *len its size. */
static unsigned char *slurp(int fd, size_t *len)
{
	struct stat st;
	unsigned char *b;

	assert_int_equal(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	b = malloc(*len + 1);
	assert_non_null(b);
	assert_int_equal(pread(fd, b, *len, 0), (ssize_t)*len);
	return b;
}

static uint32_t u32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

static uint16_t u16(const unsigned char *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return v;
}

/* Walk the blocks of @b: leading and trailing lengths agree, nothing after the last.  Return: how many. */
static int walk(const unsigned char *b, size_t len, uint32_t *types, int max)
{
	size_t off = 0;
	int n = 0;

	while (off < len) {
		uint32_t bl;

		assert_true(len - off >= 12);
		bl = u32(b + off + 4);
		assert_true(bl % 4 == 0 && bl >= 12 && bl <= len - off);
		assert_int_equal(u32(b + off + bl - 4), bl);
		if (n < max)
			types[n] = u32(b + off);
		n++;
		off += bl;
	}
	assert_int_equal(off, len);
	return n;
}

static void test_blocks_byte_for_byte(void **state)
{
	static const unsigned char frame[5] = { 1, 2, 3, 4, 5 };
	static const unsigned char shb[] = {
		0x0a, 0x0d, 0x0d, 0x0a, 48, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		3, 0, 2, 0, 'O', 'S', 0, 0,               /* shb_os "OS" */
		4, 0, 3, 0, 'c', 'f', '1', 0,             /* shb_userappl "cf1" */
		0, 0, 0, 0, 48, 0, 0, 0,
	};
	static const unsigned char idb[] = {
		1, 0, 0, 0, 48, 0, 0, 0, 1, 0, 0, 0, 0x00, 0x00, 0x04, 0x00,   /* Ethernet, snaplen 262144 */
		9, 0, 1, 0, 9, 0, 0, 0,                   /* if_tsresol 9, first */
		2, 0, 3, 0, 'g', 'w', '0', 0,             /* if_name */
		3, 0, 1, 0, 'd', 0, 0, 0,                 /* if_description */
		0, 0, 0, 0, 48, 0, 0, 0,
	};
	static const unsigned char epb[] = {
		6, 0, 0, 0, 52, 0, 0, 0, 0, 0, 0, 0,
		0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,   /* ts 0x100000002: high, then low */
		5, 0, 0, 0, 9, 0, 0, 0,                   /* caplen 5, origlen 9 */
		1, 2, 3, 4, 5, 0, 0, 0,
		2, 0, 4, 0, 2, 0, 0, 0,                   /* epb_flags outbound */
		0, 0, 0, 0, 52, 0, 0, 0,
	};
	struct pcapng w;
	uint32_t types[8];
	unsigned char *b;
	size_t len;
	int fd = memfd();

	(void)state;
	assert_int_equal(pcapng_open(&w, fd, 0), 0);
	assert_int_equal(pcapng_shb(&w, "OS", "cf1"), 0);
	assert_int_equal(pcapng_idb(&w, PCAPNG_LINKTYPE_ETHERNET, 262144, "gw0", "d"), 0);
	assert_int_equal(pcapng_idb(&w, PCAPNG_LINKTYPE_ETHERNET, 65535, "x", NULL), 1);
	assert_int_equal(pcapng_epb(&w, 0, 0x100000002ull, frame, 5, 9, PCAPNG_EPB_OUTBOUND), 0);
	assert_int_equal(pcapng_epb(&w, 1, 7, frame, 4, 4, 0), 0);
	assert_int_equal(pcapng_isb(&w, 0, 10, 3, 10, 100, 7), 0);
	assert_int_equal(pcapng_epb_size(5, PCAPNG_EPB_OUTBOUND), sizeof(epb));
	assert_true(pcapng_pending(&w) > 0);
	assert_int_equal(pcapng_flush(&w), 0);
	assert_int_equal(pcapng_pending(&w), 0);
	b = slurp(fd, &len);
	assert_int_equal(walk(b, len, types, 8), 6);
	assert_memory_equal(b, shb, sizeof(shb));
	assert_memory_equal(b + sizeof(shb), idb, sizeof(idb));
	/* the second IDB: no if_description when none is given */
	assert_int_equal(u32(b + 96 + 4), 20 + 8 + 8 + 4);
	assert_memory_equal(b + 136, epb, sizeof(epb));
	/* an EPB without flags has no options */
	assert_int_equal(u32(b + 188 + 4), 32 + 4);
	/* the ISB: id, timestamp, start, end, ifrecv, ifdrop, end of options */
	{
		const unsigned char *i = b + 188 + 36;
		uint64_t recv, drop;

		assert_int_equal(u32(i), 5);
		assert_int_equal(u32(i + 4), 24 + 4 * 12 + 4);
		assert_int_equal(u32(i + 8), 0);
		assert_int_equal(u32(i + 16), 10);
		assert_int_equal(u16(i + 20), 2);
		assert_int_equal(u32(i + 28), 3);
		assert_int_equal(u16(i + 32), 3);
		assert_int_equal(u32(i + 40), 10);
		assert_int_equal(u16(i + 44), 4);
		memcpy(&recv, i + 48, 8);
		assert_int_equal(u16(i + 56), 5);
		memcpy(&drop, i + 60, 8);
		assert_int_equal(recv, 100);
		assert_int_equal(drop, 7);
		assert_int_equal(u32(i + 68), 0);
	}
	assert_int_equal(types[0], 0x0A0D0D0A);
	assert_int_equal(types[3], 6);
	assert_int_equal(types[5], 5);
	assert_int_equal(w.packets, 2);
	free(b);
	assert_int_equal(pcapng_close(&w, 0), 0);
	close(fd);
}

static void test_full_buffer_is_enobufs(void **state)
{
	static unsigned char frame[1500];
	struct pcapng w;
	int fd = memfd(), n = 0, r;

	(void)state;
	assert_int_equal(pcapng_open(&w, fd, 65536), 0);
	while ((r = pcapng_epb(&w, 0, 1, frame, sizeof(frame), sizeof(frame), 0)) == 0)
		n++;
	assert_int_equal(r, -ENOBUFS);
	assert_int_equal(n, 65536 / pcapng_epb_size(sizeof(frame), 0));
	assert_true(pcapng_room(&w) < pcapng_epb_size(sizeof(frame), 0));
	assert_int_equal(pcapng_flush(&w), 0);
	assert_int_equal(pcapng_epb(&w, 0, 1, frame, sizeof(frame), sizeof(frame), 0), 0);
	pcapng_close(&w, 0);
	close(fd);
}

/* A write that fails half-way (a full disk: here a sealed memfd) leaves only whole blocks. */
static void test_failed_write_cuts_back_to_whole_blocks(void **state)
{
	static unsigned char frame[9000];
	struct pcapng w;
	uint32_t types[4];
	unsigned char *b;
	size_t len, good;
	int fd = memfd();

	(void)state;
	assert_int_equal(pcapng_open(&w, fd, 0), 0);
	assert_int_equal(pcapng_shb(&w, "OS", "cf"), 0);
	assert_int_equal(pcapng_idb(&w, 1, 262144, "gw0", "d"), 0);
	assert_int_equal(pcapng_flush(&w), 0);
	good = (size_t)lseek(fd, 0, SEEK_CUR);
	/* room for part of the next flush only */
	assert_int_equal(ftruncate(fd, 8192), 0);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW), 0);
	assert_int_equal(pcapng_epb(&w, 0, 1, frame, sizeof(frame), sizeof(frame), 0), 0);
	assert_int_equal(pcapng_epb(&w, 0, 2, frame, sizeof(frame), sizeof(frame), 0), 0);
	assert_int_equal(pcapng_flush(&w), -EPERM);
	assert_int_equal(pcapng_error(&w), -EPERM);
	b = slurp(fd, &len);
	assert_int_equal(len, good);
	assert_int_equal(walk(b, len, types, 4), 2);
	free(b);
	/* FAILED: nothing more is taken or written */
	assert_int_equal(pcapng_epb(&w, 0, 3, frame, 10, 10, 0), -EPERM);
	assert_int_equal(pcapng_flush(&w), -EPERM);
	assert_int_equal(pcapng_close(&w, 0), -EPERM);
	close(fd);
}

/*
 * Packets left in place (pcapng_epb_ref()) give the file the same bytes as copied ones, also past
 * one writev()'s iovecs (small packets copied in between) and with options and odd lengths.
 */
static void test_refs_write_the_same_bytes(void **state)
{
	static unsigned char big[9001], mid[2048], small[100];
	struct pcapng a, b;
	unsigned char *ba, *bb;
	size_t la, lb, room;
	int fa = memfd(), fb = memfd();

	(void)state;
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7 + 1);
	memset(mid, 0x5a, sizeof(mid));
	memset(small, 0xa5, sizeof(small));
	assert_int_equal(pcapng_open(&a, fa, 4u << 20), 0);
	assert_int_equal(pcapng_open(&b, fb, 4u << 20), 0);
	assert_true(pcapng_gathers(&b));
	assert_int_equal(pcapng_shb(&a, "OS", "cf"), 0);
	assert_int_equal(pcapng_shb(&b, "OS", "cf"), 0);
	assert_int_equal(pcapng_idb(&a, 1, 262144, "gw0", "d"), 0);
	assert_int_equal(pcapng_idb(&b, 1, 262144, "gw0", "d"), 0);
	room = pcapng_room(&b);
	assert_int_equal(pcapng_epb_ref(&b, 0, 1, big, sizeof(big), 65000, 2), 0);
	assert_true(room - pcapng_room(&b) >= pcapng_epb_size(sizeof(big), 2));   /* counted as buffered */
	assert_int_equal(pcapng_epb(&a, 0, 1, big, sizeof(big), 65000, 2), 0);
	for (int i = 0; i < 700; i++) {   /* 1400+ pieces: more than one writev() */
		assert_int_equal(pcapng_epb(&a, 0, 10 + i, mid, sizeof(mid), sizeof(mid), i & 1), 0);
		assert_int_equal(pcapng_epb_ref(&b, 0, 10 + i, mid, sizeof(mid), sizeof(mid), i & 1), 0);
		assert_int_equal(pcapng_epb(&a, 0, 10 + i, small, sizeof(small) - (i & 3), 1500, 1), 0);
		assert_int_equal(pcapng_epb_ref(&b, 0, 10 + i, small, sizeof(small) - (i & 3), 1500, 1), 0);
	}
	assert_int_equal(pcapng_epb(&a, 0, 2, big + 1, 4097, 4097, 0), 0);
	assert_int_equal(pcapng_epb_ref(&b, 0, 2, big + 1, 4097, 4097, 0), 0);
	assert_int_equal(pcapng_flush(&a), 0);
	assert_int_equal(pcapng_flush(&b), 0);
	assert_int_equal(pcapng_pending(&b), 0);
	assert_int_equal(pcapng_room(&b), 4u << 20);
	ba = slurp(fa, &la);
	bb = slurp(fb, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(ba, bb, la);
	assert_int_equal(walk(bb, lb, NULL, 0), 2 + 1 + 1400 + 1);
	free(ba);
	free(bb);
	pcapng_close(&a, 0);
	pcapng_close(&b, 0);
	close(fa);
	close(fb);
}

/* A gathered write that fails half-way leaves only whole blocks too. */
static void test_refs_failed_write_cuts_back(void **state)
{
	static unsigned char frame[9000];
	struct pcapng w;
	unsigned char *b;
	size_t len, good;
	int fd = memfd();

	(void)state;
	assert_int_equal(pcapng_open(&w, fd, 0), 0);
	assert_int_equal(pcapng_shb(&w, "OS", "cf"), 0);
	assert_int_equal(pcapng_flush(&w), 0);
	good = (size_t)lseek(fd, 0, SEEK_CUR);
	assert_int_equal(ftruncate(fd, 8192), 0);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW), 0);
	assert_int_equal(pcapng_epb_ref(&w, 0, 1, frame, sizeof(frame), sizeof(frame), 0), 0);
	assert_int_equal(pcapng_epb_ref(&w, 0, 2, frame, sizeof(frame), sizeof(frame), 0), 0);
	assert_int_equal(pcapng_flush(&w), -EPERM);
	assert_int_equal(pcapng_pending(&w), 0);
	b = slurp(fd, &len);
	assert_int_equal(len, good);
	assert_int_equal(walk(b, len, NULL, 0), 1);
	free(b);
	assert_int_equal(pcapng_close(&w, 0), -EPERM);
	close(fd);
}

/* A pipe that takes part: the rest stays buffered, in order; the reader gets exactly the blocks. */
static void test_pipe_takes_part_then_the_rest(void **state)
{
	static unsigned char frame[3000];
	unsigned char out[65536];
	struct pcapng w, ref;
	uint32_t types[16];
	size_t got = 0, rlen;
	unsigned char *rb;
	int p[2], rfd = memfd(), r;

	(void)state;
	for (size_t i = 0; i < sizeof(frame); i++)
		frame[i] = (unsigned char)i;
	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	assert_true(fcntl(p[1], F_SETPIPE_SZ, 4096) >= 4096);
	assert_int_equal(pcapng_open(&w, p[1], 0), 0);
	assert_int_equal(pcapng_open(&ref, rfd, 0), 0);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(pcapng_epb(&w, 0, (uint64_t)i, frame, sizeof(frame), sizeof(frame),
					    PCAPNG_EPB_INBOUND), 0);
		assert_int_equal(pcapng_epb(&ref, 0, (uint64_t)i, frame, sizeof(frame), sizeof(frame),
					    PCAPNG_EPB_INBOUND), 0);
	}
	assert_int_equal(pcapng_flush(&ref), 0);
	while ((r = pcapng_flush(&w)) == -EAGAIN) {
		ssize_t n;

		assert_true(pcapng_pending(&w) > 0);
		n = read(p[0], out + got, sizeof(out) - got);
		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_int_equal(r, 0);
	for (ssize_t n; (n = read(p[0], out + got, sizeof(out) - got)) > 0;)
		got += (size_t)n;
	rb = slurp(rfd, &rlen);
	assert_int_equal(got, rlen);
	assert_memory_equal(out, rb, rlen);
	assert_int_equal(walk(out, got, types, 16), 8);
	free(rb);
	pcapng_close(&w, 0);
	pcapng_close(&ref, 0);
	close(p[0]);
	close(p[1]);
	close(rfd);
}

static void test_closed_pipe_fails(void **state)
{
	struct pcapng w;
	int p[2];

	(void)state;
	signal(SIGPIPE, SIG_IGN);   /* as childflow does */
	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	close(p[0]);
	assert_int_equal(pcapng_open(&w, p[1], 0), 0);
	assert_int_equal(pcapng_shb(&w, "OS", "cf"), 0);
	assert_int_equal(pcapng_flush(&w), -EPIPE);
	assert_int_equal(pcapng_shb(&w, "OS", "cf"), -EPIPE);
	pcapng_close(&w, 0);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_blocks_byte_for_byte),
		cmocka_unit_test(test_full_buffer_is_enobufs),
		cmocka_unit_test(test_failed_write_cuts_back_to_whole_blocks),
		cmocka_unit_test(test_refs_write_the_same_bytes),
		cmocka_unit_test(test_refs_failed_write_cuts_back),
		cmocka_unit_test(test_pipe_takes_part_then_the_rest),
		cmocka_unit_test(test_closed_pipe_fails),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
