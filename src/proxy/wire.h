/* SPDX-License-Identifier: MIT */
/*
 * proxy/wire — the bytes of the proxy protocols, pure (no I/O): HTTP CONNECT requests and the reading
 * of their replies, SOCKS5 (RFC 1928) with username/password authentication (RFC 1929).
 *
 * Replies are read exactly: the readers say how many bytes belong to the reply, so that whatever the
 * proxy sends after it (the destination's first bytes) stays in the socket for the child.  Every
 * parser takes untrusted bytes and is fuzzed (tests/fuzz/fuzz_proxy.c).
 */
#ifndef CHILDFLOW_PROXY_WIRE_H
#define CHILDFLOW_PROXY_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_HDR_MAX 16384      /* an HTTP reply header block longer than this is refused */
#define PROXY_LINE_KEEP 160      /* bytes of the status line kept for parsing and messages */
#define PROXY_AUTHORITY_MAX 272  /* "[v6]:port" or a 253-byte name ":65535" and the NUL */
#define PROXY_CRED_MAX 255       /* RFC 1929 limits; also applied to HTTP */
#define PROXY_REQ_MAX 1400       /* a CONNECT request with the longest authority and credentials */
#define SOCKS5_REQ_MAX 520       /* the longest SOCKS5 message we send (RFC 1929 request) */

/*
 * proxy_name_ok() - @name can be sent to a proxy as a host name: 1-253 bytes of letters, digits,
 * '-', '_' and '.', no empty label, not an address literal.  Anything else (a name with control
 * bytes, spaces or ':') is never put in a request; the address is sent instead.
 */
bool proxy_name_ok(const char *name);

/*
 * proxy_authority() - "host:port" for a CONNECT: @name when proxy_name_ok(), else the address of @dst
 * ("a.b.c.d:port" or "[v6]:port").  Return: its length, or -ENOSPC.
 */
int proxy_authority(char *buf, size_t len, const struct sockaddr *dst, const char *name);

/*
 * proxy_http_request() - "CONNECT @authority HTTP/1.1" with Host and, when @basic (the base64 of
 * "user:password") is not NULL, Proxy-Authorization.  Return: its length, or -ENOSPC.
 */
int proxy_http_request(char *buf, size_t len, const char *authority, const char *basic);

/* proxy_basic() - base64 of "@user:@pass" into @out.  Return: its length, or -ENOSPC. */
int proxy_basic(char *out, size_t len, const char *user, const char *pass);

/* Reading an HTTP reply's header block, fed with peeked bytes in any pieces. */
struct http_reader {
	size_t total;                     /* bytes of the reply consumed so far */
	unsigned int match;               /* progress through "\r\n\r\n" */
	bool line_done;                   /* the status line is complete */
	size_t line_len;
	char line[PROXY_LINE_KEEP];       /* the status line (cut), NUL-terminated */
};

/*
 * http_reader_feed() - @n more bytes of the reply are available at @buf.  Return: how many of them
 * belong to the header block (consume exactly these); *done is set when the block ended with them.
 * The caller refuses a reply whose total passes PROXY_HDR_MAX without *done.
 */
size_t http_reader_feed(struct http_reader *h, const char *buf, size_t n, bool *done);

/* http_status() - the code of a status line "HTTP/1.x NNN ...".  Return: 100-599, or -EPROTO. */
int http_status(const char *line);

/* What a child should see when a proxy answers a CONNECT with @code (not 2xx). */
int http_status_errno(int code);

/* SOCKS5 */
enum { SOCKS5_NO_AUTH = 0x00, SOCKS5_USERPASS = 0x02, SOCKS5_NO_METHOD = 0xff };

/* socks5_greeting() - the method offer: no auth, or username/password only.  Return: its length. */
size_t socks5_greeting(uint8_t *buf, bool userpass);

/* socks5_method() - the 2-byte method reply.  Return: the method (0-255), or -EPROTO. */
int socks5_method(const uint8_t b[2]);

/* socks5_auth_request() - RFC 1929 request (each part 1-255 bytes).  Return: its length, or -EINVAL. */
int socks5_auth_request(uint8_t *buf, size_t len, const char *user, const char *pass);

/* socks5_auth_status() - the 2-byte RFC 1929 reply.  Return: 0 accepted, -EACCES refused, -EPROTO. */
int socks5_auth_status(const uint8_t b[2]);

/*
 * socks5_connect_request() - CONNECT to @name (ATYP 3) when proxy_name_ok(), else to @dst's address
 * (ATYP 1 or 4), port from @dst.  Return: its length, or -EINVAL.
 */
int socks5_connect_request(uint8_t *buf, size_t len, const struct sockaddr *dst, const char *name);

/*
 * socks5_reply() - the CONNECT reply from @n bytes at @b.  Return: its whole length once @n covers
 * it (*rep is its REP field then), 0 when more bytes are needed, or -EPROTO.
 */
int socks5_reply(const uint8_t *b, size_t n, int *rep);

/*
 * socks5_rep_errno() - the errno a child's connect() should see for REP @rep (not 0): 2 EACCES,
 * 3 ENETUNREACH, 4 and 6 EHOSTUNREACH, 5 and every other code ECONNREFUSED.
 * socks5_rep_str() - its RFC 1928 meaning.
 */
int socks5_rep_errno(int rep);
const char *socks5_rep_str(int rep);

#endif
