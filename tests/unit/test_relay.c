/* Unit tests: the relay's fd budget, flow records and observers, and the direct connector. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "connect/direct.h"
#include "relay/flow.h"
#include "relay/internal.h"

/*
 * Every part of the budget together never exceeds the fd limit, and each part keeps a share.  Below
 * what the reserve and the tables' floors need (the backend holds 135 here), the floors win: that
 * is over-commit by necessity, and shortages then wait or refuse.
 */
static void test_budget_adds_up(void **state)
{
	static const unsigned long limits[] = { 200, 300, 512, 1024, 4096, 20000, 65536, 1048576 };

	(void)state;
	for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
		struct relay_limits l;
		unsigned long used;

		relay_limits_from_fds(&l, limits[i], 135);
		used = l.reserve + 2ul * (l.max_pipes + l.pipe_pool) + 2ul * l.max_udp + 2ul * l.max_tcp;
		if (limits[i] >= 512)
			assert_true(used <= limits[i]);
		else
			assert_true(l.max_tcp <= 64 && l.max_udp == 8);
		assert_true(l.max_tcp >= 16);
		assert_true(l.max_udp >= 8);
		assert_true(l.max_pipes >= 4);
		assert_true(l.max_connecting >= 8 && l.max_connecting <= l.max_tcp);
		assert_true(l.connect_ms > 0 && l.udp_keep_ms < l.udp_idle_ms);
	}
}

/* With many fds, TCP gets most of them but the others keep theirs. */
static void test_budget_shares(void **state)
{
	struct relay_limits l;

	(void)state;
	relay_limits_from_fds(&l, 20000, 135);
	assert_int_equal(l.max_pipes, 256);
	assert_true(l.max_udp >= 1000);
	assert_true(l.max_tcp >= 5000);
	relay_limits_from_fds(&l, 1024, 135);
	assert_true(l.max_tcp >= 200);   /* was 32 at fds <= 512 before the split */
}

struct seen {
	int opened, closed;
	uint64_t last_id;
	enum flow_outcome last_outcome;
	int last_err;
};

static void on_open(void *priv, const struct flow_record *f)
{
	struct seen *s = priv;

	s->opened++;
	s->last_id = f->id;
}

static void on_close(void *priv, const struct flow_record *f)
{
	struct seen *s = priv;

	s->closed++;
	s->last_outcome = f->outcome;
	s->last_err = f->err;
	assert_true(f->t_end_ns >= f->t_start_ns);
}

static void test_flow_observers(void **state)
{
	struct flow_hub hub = { 0 };
	struct seen a = { 0 }, b = { 0 };
	struct flow_observer oa = { on_open, on_close, &a }, ob = { NULL, on_close, &b };
	struct sockaddr_storage child = { .ss_family = AF_INET }, dst = { .ss_family = AF_INET6 };
	struct flow_record r1, r2;

	(void)state;
	assert_int_equal(flow_observe(&hub, &oa), 0);
	assert_int_equal(flow_observe(&hub, &ob), 0);
	flow_begin(&hub, &r1, FLOW_TCP, &child, &dst);
	flow_begin(&hub, &r2, FLOW_UDP, &child, &dst);
	assert_int_equal(r1.id, 1);
	assert_int_equal(r2.id, 2);
	assert_int_equal(r2.dst.sa.sa_family, AF_INET6);
	assert_int_equal(hub.n_open, 2);
	flow_opened(&hub, &r1);
	assert_int_equal(a.opened, 1);
	assert_int_equal(a.last_id, 1);
	flow_end(&hub, &r1, FLOW_UP_FAILED, ECONNREFUSED);
	flow_end(&hub, &r1, FLOW_OK, 0);   /* a second end changes nothing */
	assert_int_equal(a.closed, 1);
	assert_int_equal(b.closed, 1);
	assert_int_equal(a.last_outcome, FLOW_UP_FAILED);
	assert_int_equal(a.last_err, ECONNREFUSED);
	assert_int_equal(hub.n_open, 1);
	for (int i = 2; i < FLOW_MAX_OBSERVERS; i++)
		assert_int_equal(flow_observe(&hub, &ob), 0);
	assert_int_equal(flow_observe(&hub, &ob), -ENOSPC);
}

static void test_flow_addr_str(void **state)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(80) };
	struct sockaddr_in6 b = { .sin6_family = AF_INET6, .sin6_port = htons(443) };
	char buf[64];

	(void)state;
	inet_pton(AF_INET, "198.51.100.10", &a.sin_addr);
	inet_pton(AF_INET6, "2001:db8::1", &b.sin6_addr);
	assert_string_equal(flow_addr_str((struct sockaddr *)&a, buf, sizeof(buf)), "198.51.100.10:80");
	assert_string_equal(flow_addr_str((struct sockaddr *)&b, buf, sizeof(buf)), "[2001:db8::1]:443");
}

/* Drive the direct connector until it decides, as the TCP engine does. */
static enum conn_step drive(const struct sockaddr_storage *dst, int *fd, int *err)
{
	struct conn_req rq = { .dst = dst };
	uint32_t want = 0;
	enum conn_step st = direct_connector_ops.start(NULL, NULL, &rq, fd, &want, err);

	while (st == CONN_MORE) {
		struct pollfd p = { .fd = *fd, .events = POLLOUT };

		/* EPOLLIN too: the relay then splices with the watch the connect had. */
		assert_int_equal(want, EPOLLOUT | EPOLLIN);
		assert_int_equal(poll(&p, 1, 2000), 1);
		st = direct_connector_ops.step(NULL, *fd, (p.revents & POLLOUT ? EPOLLOUT : 0) |
							  (p.revents & POLLERR ? EPOLLERR : 0) |
							  (p.revents & POLLHUP ? EPOLLHUP : 0),
					      &want, err);
	}
	return st;
}

static void test_direct_connector(void **state)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_storage dst;
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0), fd = -1, err = 0, opt = 0;

	(void)state;
	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
	memset(&dst, 0, sizeof(dst));
	memcpy(&dst, &a, sizeof(a));
	assert_int_equal(drive(&dst, &fd, &err), CONN_READY);
	assert_true(fd >= 0);
	len = sizeof(opt);
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &opt, &len), 0);
	assert_int_equal(opt, 1);
	close(fd);
	/* The same port once nobody listens: refused, and the errno says so. */
	close(l);
	fd = -1;
	assert_int_equal(drive(&dst, &fd, &err), CONN_FAILED);
	assert_int_equal(err, ECONNREFUSED);
	if (fd >= 0)
		close(fd);
}

/*
 * Review D9: with FNV folded modulo 4096, child ports whose in-memory sin_port differed only in bits
 * 12-15 fell into one bucket for every seed.  The keyed hash spreads them, and the key matters.
 */
static void test_udp_buckets_spread(void **state)
{
	struct relay r;
	struct sockaddr_storage child, dst;
	struct sockaddr_in *c = (struct sockaddr_in *)&child, *d = (struct sockaddr_in *)&dst;
	unsigned int seen[16], distinct = 0, moved = 0;

	(void)state;
	memset(&r, 0, sizeof(r));
	assert_int_equal(udp_init(&r), 0);
	memset(&child, 0, sizeof(child));
	memset(&dst, 0, sizeof(dst));
	c->sin_family = d->sin_family = AF_INET;
	inet_pton(AF_INET, "10.240.255.2", &c->sin_addr);
	inet_pton(AF_INET, "198.51.100.10", &d->sin_addr);
	d->sin_port = htons(53);
	for (unsigned int i = 0; i < 16; i++) {
		bool dup = false;

		c->sin_port = (uint16_t)(0x0234u | (i << 12));   /* differs only in bits 12-15 in memory */
		seen[i] = udp_bucket(&r, &child, &dst);
		assert_true(seen[i] < r.udp_buckets);
		for (unsigned int j = 0; j < i; j++)
			dup |= seen[j] == seen[i];
		distinct += !dup;
	}
	assert_true(distinct >= 12);   /* 16 into 4096 buckets: collisions are rare, not certain */
	/* Another key, other buckets: the command cannot precompute them. */
	r.udp_key[0] ^= 0x5a5a5a5a5a5a5a5aull;
	for (unsigned int i = 0; i < 16; i++) {
		c->sin_port = (uint16_t)(0x0234u | (i << 12));
		moved += udp_bucket(&r, &child, &dst) != seen[i];
	}
	assert_true(moved >= 12);
	free(r.udp_hash);
	free(r.udp_buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_budget_adds_up),
		cmocka_unit_test(test_budget_shares),
		cmocka_unit_test(test_flow_observers),
		cmocka_unit_test(test_flow_addr_str),
		cmocka_unit_test(test_direct_connector),
		cmocka_unit_test(test_udp_buckets_spread),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
