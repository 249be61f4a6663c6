// SPDX-License-Identifier: MIT
/*
 * Unit tests for src/proxy/wire.c: CONNECT requests and the exact reading of replies, SOCKS5 and
 * RFC 1929 messages, the by-name rule's name check, Basic credentials.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "proxy/wire.h"

static struct sockaddr_storage v4(const char *a, uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;

	in->sin_family = AF_INET;
	in->sin_port = htons(port);
	inet_pton(AF_INET, a, &in->sin_addr);
	return ss;
}

static struct sockaddr_storage v6(const char *a, uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in6 *in = (struct sockaddr_in6 *)&ss;

	in->sin6_family = AF_INET6;
	in->sin6_port = htons(port);
	inet_pton(AF_INET6, a, &in->sin6_addr);
	return ss;
}

static void test_name_ok(void **s)
{
	(void)s;
	assert_true(proxy_name_ok("example.com"));
	assert_true(proxy_name_ok("a-b_c.Example.COM"));
	assert_false(proxy_name_ok(NULL));
	assert_false(proxy_name_ok(""));
	assert_false(proxy_name_ok("a..b"));
	assert_false(proxy_name_ok(".a"));
	assert_false(proxy_name_ok("a b"));
	assert_false(proxy_name_ok("a\r\nX-Injected: 1"));
	assert_false(proxy_name_ok("host:80"));
	assert_false(proxy_name_ok("198.51.100.10"));   /* an address literal is sent as an address */
	assert_false(proxy_name_ok("2001:db8::1"));
}

static void test_authority_by_name_or_address(void **s)
{
	struct sockaddr_storage a = v4("198.51.100.10", 80), b = v6("2001:db8:100::10", 443);
	char buf[PROXY_AUTHORITY_MAX];

	(void)s;
	assert_int_equal(proxy_authority(buf, sizeof(buf), (struct sockaddr *)&a, NULL), 16);
	assert_string_equal(buf, "198.51.100.10:80");
	proxy_authority(buf, sizeof(buf), (struct sockaddr *)&b, NULL);
	assert_string_equal(buf, "[2001:db8:100::10]:443");
	proxy_authority(buf, sizeof(buf), (struct sockaddr *)&b, "www.example.org");
	assert_string_equal(buf, "www.example.org:443");
	proxy_authority(buf, sizeof(buf), (struct sockaddr *)&a, "bad name");
	assert_string_equal(buf, "198.51.100.10:80");
	assert_int_equal(proxy_authority(buf, 8, (struct sockaddr *)&a, NULL), -ENOSPC);
}

static void test_basic_and_request(void **s)
{
	char b64[64], req[PROXY_REQ_MAX];

	(void)s;
	assert_int_equal(proxy_basic(b64, sizeof(b64), "Aladdin", "open sesame"), 28);
	assert_string_equal(b64, "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
	proxy_basic(b64, sizeof(b64), "a", "b");
	assert_string_equal(b64, "YTpi");
	proxy_basic(b64, sizeof(b64), "ab", "c");
	assert_string_equal(b64, "YWI6Yw==");
	assert_int_equal(proxy_basic(b64, 4, "a", "b"), -ENOSPC);
	proxy_http_request(req, sizeof(req), "h:1", NULL);
	assert_string_equal(req, "CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n");
	proxy_http_request(req, sizeof(req), "h:1", "YTpi");
	assert_string_equal(req, "CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\nProxy-Authorization: Basic YTpi\r\n\r\n");
}

/* The reader stops exactly after the blank line, whatever the pieces. */
static void test_reader_exact(void **s)
{
	const char *reply = "HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\nDESTINATION";
	size_t hdr = strlen(reply) - strlen("DESTINATION");

	(void)s;
	for (size_t cut = 1; cut < strlen(reply); cut++) {
		struct http_reader h = { 0 };
		bool done = false;
		size_t k = http_reader_feed(&h, reply, cut, &done);

		if (!done)
			k += http_reader_feed(&h, reply + cut, strlen(reply) - cut, &done);
		assert_true(done);
		assert_int_equal(k, hdr);
		assert_int_equal(h.total, hdr);
		assert_string_equal(h.line, "HTTP/1.1 200 Connection established");
	}
}

static void test_reader_not_fooled(void **s)
{
	struct http_reader h = { 0 };
	bool done;

	(void)s;
	/* "\r\n\n\r\n" is not the end; "\r\r\n\r\n" is. */
	assert_int_equal(http_reader_feed(&h, "HTTP/1.0 200 OK\r\n\n\r\n", 21, &done), 21);
	assert_false(done);
	assert_int_equal(http_reader_feed(&h, "\r\r\n\r\nX", 6, &done), 5);
	assert_true(done);
}

static void test_status(void **s)
{
	(void)s;
	assert_int_equal(http_status("HTTP/1.1 200 OK"), 200);
	assert_int_equal(http_status("HTTP/1.0 407 Proxy Authentication Required"), 407);
	assert_int_equal(http_status("HTTP/1.1 204"), 204);
	assert_int_equal(http_status("HTTP/1.1 20"), -EPROTO);
	assert_int_equal(http_status("HTTP/1.1 2000"), -EPROTO);
	assert_int_equal(http_status("HTTP/2 200"), -EPROTO);
	assert_int_equal(http_status("SSH-2.0-OpenSSH"), -EPROTO);
	assert_int_equal(http_status("HTTP/1.1 099 x"), -EPROTO);
	assert_int_equal(http_status_errno(504), ETIMEDOUT);
	assert_int_equal(http_status_errno(403), ECONNREFUSED);
}

static void test_socks5_messages(void **s)
{
	struct sockaddr_storage a = v4("198.51.100.10", 80), b = v6("2001:db8::1", 443);
	uint8_t buf[SOCKS5_REQ_MAX];
	static const uint8_t req4[] = { 5, 1, 0, 1, 198, 51, 100, 10, 0, 80 };

	(void)s;
	assert_int_equal(socks5_greeting(buf, false), 3);
	assert_memory_equal(buf, "\x05\x01\x00", 3);
	socks5_greeting(buf, true);
	assert_memory_equal(buf, "\x05\x01\x02", 3);
	assert_int_equal(socks5_method((const uint8_t *)"\x05\x02"), 2);
	assert_int_equal(socks5_method((const uint8_t *)"\x04\x00"), -EPROTO);
	assert_int_equal(socks5_auth_request(buf, sizeof(buf), "u", "pw"), 6);
	assert_memory_equal(buf, "\x01\x01u\x02pw", 6);
	assert_int_equal(socks5_auth_request(buf, sizeof(buf), "", "pw"), -EINVAL);
	assert_int_equal(socks5_auth_status((const uint8_t *)"\x01\x00"), 0);
	assert_int_equal(socks5_auth_status((const uint8_t *)"\x01\x01"), -EACCES);
	assert_int_equal(socks5_auth_status((const uint8_t *)"\x05\x00"), -EPROTO);
	assert_int_equal(socks5_connect_request(buf, sizeof(buf), (struct sockaddr *)&a, NULL), 10);
	assert_memory_equal(buf, req4, 10);
	assert_int_equal(socks5_connect_request(buf, sizeof(buf), (struct sockaddr *)&b, NULL), 22);
	assert_int_equal(buf[3], 4);
	assert_int_equal(socks5_connect_request(buf, sizeof(buf), (struct sockaddr *)&b, "ex.org"), 4 + 1 + 6 + 2);
	assert_memory_equal(buf, "\x05\x01\x00\x03\x06" "ex.org" "\x01\xbb", 13);
}

static void test_socks5_reply_length(void **s)
{
	static const uint8_t r4[] = { 5, 0, 0, 1, 1, 2, 3, 4, 0, 80, 'X' };
	static const uint8_t r3[] = { 5, 5, 0, 3, 2, 'a', 'b', 0, 80 };
	static const uint8_t r6[22] = { 5, 0, 0, 4 };
	int rep = -1;

	(void)s;
	for (size_t n = 0; n < 10; n++)
		assert_int_equal(socks5_reply(r4, n, &rep), 0);
	assert_int_equal(socks5_reply(r4, sizeof(r4), &rep), 10);   /* 'X' is the destination's */
	assert_int_equal(rep, 0);
	assert_int_equal(socks5_reply(r3, 8, &rep), 0);
	assert_int_equal(socks5_reply(r3, 9, &rep), 9);
	assert_int_equal(rep, 5);
	assert_int_equal(socks5_reply(r6, 22, &rep), 22);
	assert_int_equal(socks5_reply((const uint8_t *)"\x05\x00\x00\x09\x00", 5, &rep), -EPROTO);
	assert_int_equal(socks5_reply((const uint8_t *)"\x04", 1, &rep), -EPROTO);
	assert_int_equal(socks5_rep_errno(5), ECONNREFUSED);
	assert_int_equal(socks5_rep_errno(4), EHOSTUNREACH);
	assert_int_equal(socks5_rep_errno(1), ECONNREFUSED);
	assert_int_equal(socks5_rep_errno(2), EACCES);
	assert_int_equal(socks5_rep_errno(3), ENETUNREACH);
	assert_int_equal(socks5_rep_errno(6), EHOSTUNREACH);
	assert_int_equal(socks5_rep_errno(8), ECONNREFUSED);
	assert_string_equal(socks5_rep_str(5), "connection refused");
	assert_string_equal(socks5_rep_str(200), "unassigned reply code");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_ok),
		cmocka_unit_test(test_authority_by_name_or_address),
		cmocka_unit_test(test_basic_and_request),
		cmocka_unit_test(test_reader_exact),
		cmocka_unit_test(test_reader_not_fooled),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_socks5_messages),
		cmocka_unit_test(test_socks5_reply_length),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
