/* Unit tests: util/fdpass and sandbox/gwproto — truncated and malformed messages never leak fds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "sandbox/gwproto.h"
#include "util/fdpass.h"

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

/* Send @n copies of fd 0 with raw sendmsg (fdpass_send refuses more than FDPASS_MAX). */
static void send_raw(int sock, const void *buf, size_t len, int n)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 2 * FDPASS_MAX)];
		struct cmsghdr align;
	} cb;
	int fds[2 * FDPASS_MAX];
	struct iovec io = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cb.b,
			    .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n) };
	struct cmsghdr *c;

	assert_true(n <= 2 * FDPASS_MAX);
	memset(&cb, 0, sizeof(cb));
	for (int i = 0; i < n; i++)
		fds[i] = 0;
	c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n);
	assert_true(sendmsg(sock, &m, 0) >= 0);
}

static void test_fdpass_roundtrip(void **state)
{
	int sv[2], fds[FDPASS_MAX], n, in[2] = { 0, 1 };
	char buf[8];

	(void)state;
	pair(sv);
	assert_int_equal(fdpass_send(sv[0], "hi", 2, in, 2), 0);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, FDPASS_MAX, &n, 0), 2);
	assert_int_equal(n, 2);
	close(fds[0]);
	close(fds[1]);
	close(sv[0]);
	close(sv[1]);
}

static void test_fdpass_truncated_payload_closes_fds(void **state)
{
	int sv[2], fds[FDPASS_MAX], n = -1, before;
	char big[64] = "a payload longer than the buffer", buf[4];

	(void)state;
	pair(sv);
	before = open_fds();
	send_raw(sv[0], big, sizeof(big), 3);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, FDPASS_MAX, &n, 0), -EMSGSIZE);
	assert_int_equal(n, 0);
	assert_int_equal(open_fds(), before);
	close(sv[0]);
	close(sv[1]);
}

static void test_fdpass_truncated_control_closes_fds(void **state)
{
	int sv[2], fds[FDPASS_MAX], n = -1, before;
	char buf[8];

	(void)state;
	pair(sv);
	before = open_fds();
	send_raw(sv[0], "x", 1, FDPASS_MAX + 4);   /* more fds than the control buffer holds */
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), fds, FDPASS_MAX, &n, 0), -EMSGSIZE);
	assert_int_equal(n, 0);
	assert_int_equal(open_fds(), before);
	close(sv[0]);
	close(sv[1]);
}

static void test_fdpass_extra_fds_are_closed(void **state)
{
	int sv[2], fd = -1, n = -1, before, in[3] = { 0, 0, 0 };
	char buf[8];

	(void)state;
	pair(sv);
	before = open_fds();
	assert_int_equal(fdpass_send(sv[0], "x", 1, in, 3), 0);
	assert_int_equal(fdpass_recv(sv[1], buf, sizeof(buf), &fd, 1, &n, 0), 1);
	assert_int_equal(n, 1);
	close(fd);
	assert_int_equal(open_fds(), before);
	close(sv[0]);
	close(sv[1]);
}

static void test_gw_roundtrip(void **state)
{
	int sv[2], fds[FDPASS_MAX], n, in = 1;
	struct gw_udp_reply body = { .asked = 5 }, got;
	struct gw_msg h;

	(void)state;
	pair(sv);
	assert_int_equal(gw_send(sv[0], (struct gw_msg){ .op = GW_UDP_SOCKETS, .family = AF_INET6,
							   .count = 1, .err = -EMFILE },
				 &body, sizeof(body), &in, 1), 0);
	assert_int_equal(gw_recv(sv[1], &h, &got, sizeof(got), fds, FDPASS_MAX, &n, 0), 0);
	assert_int_equal(h.op, GW_UDP_SOCKETS);
	assert_int_equal(h.family, AF_INET6);
	assert_int_equal(h.count, 1);
	assert_int_equal(h.err, -EMFILE);
	assert_int_equal(h.len, sizeof(body));
	assert_int_equal(got.asked, 5);
	assert_int_equal(n, 1);
	close(fds[0]);
	/* EOF once the peer is gone; nothing pending with MSG_DONTWAIT */
	assert_int_equal(gw_recv(sv[1], &h, NULL, 0, NULL, 0, NULL, MSG_DONTWAIT), -EAGAIN);
	close(sv[0]);
	assert_int_equal(gw_recv(sv[1], &h, NULL, 0, NULL, 0, NULL, 0), -EPIPE);
	close(sv[1]);
}

static void test_gw_malformed_closes_fds(void **state)
{
	int sv[2], fds[FDPASS_MAX], n = -1, before, in[2] = { 0, 0 };
	struct gw_msg h = { .op = GW_UDP_SOCKETS, .len = 100 };   /* claims more payload than sent */
	char payload[GW_MAX_PAYLOAD];

	(void)state;
	pair(sv);
	before = open_fds();
	assert_int_equal(fdpass_send(sv[0], &h, sizeof(h), in, 2), 0);
	assert_int_equal(gw_recv(sv[1], &h, payload, sizeof(payload), fds, FDPASS_MAX, &n, 0), -EBADMSG);
	assert_int_equal(n, 0);
	assert_int_equal(open_fds(), before);
	/* shorter than a header */
	assert_int_equal(fdpass_send(sv[0], "ab", 2, in, 1), 0);
	assert_int_equal(gw_recv(sv[1], &h, payload, sizeof(payload), fds, FDPASS_MAX, &n, 0), -EBADMSG);
	assert_int_equal(open_fds(), before);
	/* a payload beyond what the receiver takes */
	assert_int_equal(gw_send(sv[0], (struct gw_msg){ .op = GW_IDMAP_PLAN }, payload, 32, in, 1), 0);
	assert_int_equal(gw_recv(sv[1], &h, payload, 16, fds, FDPASS_MAX, &n, 0), -EBADMSG);
	assert_int_equal(open_fds(), before);
	/* gw_expect refuses a step message that carries fds, and closes them */
	assert_int_equal(gw_send(sv[0], (struct gw_msg){ .op = GW_C_GO }, NULL, 0, in, 1), 0);
	assert_int_equal(gw_expect(sv[1], GW_C_GO), -1);
	assert_int_equal(open_fds(), before);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fdpass_roundtrip),
		cmocka_unit_test(test_fdpass_truncated_payload_closes_fds),
		cmocka_unit_test(test_fdpass_truncated_control_closes_fds),
		cmocka_unit_test(test_fdpass_extra_fds_are_closed),
		cmocka_unit_test(test_gw_roundtrip),
		cmocka_unit_test(test_gw_malformed_closes_fds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
