// SPDX-License-Identifier: MIT
/*
 * proxy/wire — the bytes of HTTP CONNECT and SOCKS5 (see wire.h).  Pure functions, no I/O.
 */
#include "proxy/wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

bool proxy_name_ok(const char *name)
{
	size_t len, label = 0;
	struct in6_addr a6;
	struct in_addr a4;

	if (!name)
		return false;
	len = strnlen(name, 254);
	if (len == 0 || len > 253)
		return false;
	if (inet_pton(AF_INET, name, &a4) == 1 || inet_pton(AF_INET6, name, &a6) == 1)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_'))
			return false;
		if (++label > 63)
			return false;
	}
	return true;
}

static uint16_t sa_port(const struct sockaddr *sa)
{
	return ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
					       : ((const struct sockaddr_in *)sa)->sin_port);
}

static int fits(int n, size_t len)
{
	return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

int proxy_authority(char *buf, size_t len, const struct sockaddr *dst, const char *name)
{
	char a[INET6_ADDRSTRLEN];

	if (proxy_name_ok(name))
		return fits(snprintf(buf, len, "%s:%u", name, sa_port(dst)), len);
	if (dst->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)dst)->sin6_addr, a, sizeof(a));
		return fits(snprintf(buf, len, "[%s]:%u", a, sa_port(dst)), len);
	}
	inet_ntop(AF_INET, &((const struct sockaddr_in *)dst)->sin_addr, a, sizeof(a));
	return fits(snprintf(buf, len, "%s:%u", a, sa_port(dst)), len);
}

int proxy_http_request(char *buf, size_t len, const char *authority, const char *basic)
{
	if (basic)
		return fits(snprintf(buf, len,
				     "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n",
				     authority, authority, basic), len);
	return fits(snprintf(buf, len, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority), len);
}

int proxy_basic(char *out, size_t len, const char *user, const char *pass)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t ul = strlen(user), pl = strlen(pass), n = ul + 1 + pl, o = 0;

	if ((n + 2) / 3 * 4 >= len)
		return -ENOSPC;
	for (size_t i = 0; i < n; i += 3) {
		unsigned char b[3] = { 0, 0, 0 };
		size_t k = n - i < 3 ? n - i : 3;

		for (size_t j = 0; j < k; j++) {
			size_t at = i + j;

			b[j] = (unsigned char)(at < ul ? user[at] : at == ul ? ':' : pass[at - ul - 1]);
		}
		out[o++] = tab[b[0] >> 2];
		out[o++] = tab[((b[0] & 3) << 4) | (b[1] >> 4)];
		out[o++] = k > 1 ? tab[((b[1] & 15) << 2) | (b[2] >> 6)] : '=';
		out[o++] = k > 2 ? tab[b[2] & 63] : '=';
	}
	out[o] = '\0';
	return (int)o;
}

size_t http_reader_feed(struct http_reader *h, const char *buf, size_t n, bool *done)
{
	*done = false;
	for (size_t i = 0; i < n; i++) {
		char c = buf[i];

		if (!h->line_done) {
			if (c == '\n' || c == '\r')
				h->line_done = true;
			else if (h->line_len + 1 < sizeof(h->line))
				h->line[h->line_len++] = c;
			h->line[h->line_len] = '\0';
		}
		if (c == '\r')
			h->match = h->match == 2 ? 3 : 1;
		else if (c == '\n' && (h->match == 1 || h->match == 3))
			h->match++;
		else
			h->match = 0;
		if (h->match == 4) {
			h->total += i + 1;
			*done = true;
			return i + 1;
		}
	}
	h->total += n;
	return n;
}

int http_status(const char *line)
{
	int code = 0;

	/* "HTTP/1.0 " or "HTTP/1.1 ", three digits, then the end or a space. */
	if (strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') || line[8] != ' ')
		return -EPROTO;
	for (int i = 9; i < 12; i++) {
		if (line[i] < '0' || line[i] > '9')
			return -EPROTO;
		code = code * 10 + (line[i] - '0');
	}
	if ((line[12] != '\0' && line[12] != ' ') || code < 100)
		return -EPROTO;
	return code;
}

int http_status_errno(int code)
{
	/* 504: the proxy's connect timed out; 502/503 (tinyproxy, squid: the destination refused or
	 * failed), 403, 405...: the proxy will not connect there. */
	return code == 504 ? ETIMEDOUT : ECONNREFUSED;
}

/* Bytes of a length-prefixed field (not a C string: no NUL is written). */
static void put_bytes(uint8_t *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = (uint8_t)src[i];
}

size_t socks5_greeting(uint8_t *buf, bool userpass)
{
	buf[0] = 5;
	buf[1] = 1;
	buf[2] = userpass ? SOCKS5_USERPASS : SOCKS5_NO_AUTH;
	return 3;
}

int socks5_method(const uint8_t b[2])
{
	return b[0] == 5 ? b[1] : -EPROTO;
}

int socks5_auth_request(uint8_t *buf, size_t len, const char *user, const char *pass)
{
	size_t ul = strlen(user), pl = strlen(pass);

	if (ul == 0 || ul > PROXY_CRED_MAX || pl == 0 || pl > PROXY_CRED_MAX || 3 + ul + pl > len)
		return -EINVAL;
	buf[0] = 1;
	buf[1] = (uint8_t)ul;
	put_bytes(buf + 2, user, ul);
	buf[2 + ul] = (uint8_t)pl;
	put_bytes(buf + 3 + ul, pass, pl);
	return (int)(3 + ul + pl);
}

int socks5_auth_status(const uint8_t b[2])
{
	if (b[0] != 1)
		return -EPROTO;
	return b[1] == 0 ? 0 : -EACCES;
}

int socks5_connect_request(uint8_t *buf, size_t len, const struct sockaddr *dst, const char *name)
{
	uint16_t port = htons(sa_port(dst));
	size_t o = 4;

	if (len < 262)
		return -EINVAL;
	buf[0] = 5;
	buf[1] = 1;      /* CONNECT */
	buf[2] = 0;
	if (proxy_name_ok(name)) {
		size_t nl = strlen(name);

		buf[3] = 3;
		buf[o++] = (uint8_t)nl;
		put_bytes(buf + o, name, nl);
		o += nl;
	} else if (dst->sa_family == AF_INET6) {
		buf[3] = 4;
		memcpy(buf + o, &((const struct sockaddr_in6 *)dst)->sin6_addr, 16);
		o += 16;
	} else if (dst->sa_family == AF_INET) {
		buf[3] = 1;
		memcpy(buf + o, &((const struct sockaddr_in *)dst)->sin_addr, 4);
		o += 4;
	} else {
		return -EINVAL;
	}
	memcpy(buf + o, &port, 2);
	return (int)(o + 2);
}

int socks5_reply(const uint8_t *b, size_t n, int *rep)
{
	size_t total;

	if (n < 5)
		return n >= 1 && b[0] != 5 ? -EPROTO : 0;
	if (b[0] != 5 || b[2] != 0)
		return -EPROTO;
	switch (b[3]) {
	case 1:
		total = 4 + 4 + 2;
		break;
	case 3:
		total = 4 + 1 + (size_t)b[4] + 2;
		break;
	case 4:
		total = 4 + 16 + 2;
		break;
	default:
		return -EPROTO;
	}
	if (n < total)
		return 0;
	*rep = b[1];
	return (int)total;
}

int socks5_rep_errno(int rep)
{
	switch (rep) {
	case 2:
		return EACCES;         /* not allowed by the ruleset: administratively prohibited */
	case 3:
		return ENETUNREACH;
	case 4:
		return EHOSTUNREACH;
	case 5:
		return ECONNREFUSED;
	case 6:
		/* TTL expired: the proxy's connect timed out (dante, microsocks) or a hop limit ran
		 * out.  Not ETIMEDOUT: a dropped SYN would only make the child retransmit into new
		 * proxy handshakes; a host the path cannot reach is what Linux reports for both. */
		return EHOSTUNREACH;
	default:
		return ECONNREFUSED;   /* 1 general failure, 7, 8, unassigned */
	}
}

const char *socks5_rep_str(int rep)
{
	static const char *const s[] = {
		"succeeded", "general SOCKS server failure", "connection not allowed by ruleset",
		"network unreachable", "host unreachable", "connection refused", "TTL expired",
		"command not supported", "address type not supported",
	};

	return rep >= 0 && rep < (int)(sizeof(s) / sizeof(s[0])) ? s[rep] : "unassigned reply code";
}
