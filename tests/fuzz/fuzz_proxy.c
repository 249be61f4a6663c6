/*
 * libFuzzer target: the readers of proxy replies (HTTP status line and header block, SOCKS5 method,
 * RFC 1929 and CONNECT replies).
 *
 * The input is a reply cut into pieces at arbitrary points (the first byte says where): the HTTP
 * reader must consume no byte past the blank line and see the same end whatever the pieces; the
 * SOCKS5 reply length must never exceed the input.  Any crash or sanitizer report is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_reader whole = { 0 }, parts = { 0 };
	bool done_whole, done = false;
	size_t cut, k_whole, k = 0;
	int rep, len;

	if (size < 1)
		return 0;
	cut = data[0] % size;
	data++;
	size--;
	k_whole = http_reader_feed(&whole, (const char *)data, size, &done_whole);
	k = http_reader_feed(&parts, (const char *)data, cut, &done);
	if (!done)
		k += http_reader_feed(&parts, (const char *)data + cut, size - cut, &done);
	if (k != k_whole || done != done_whole || k > size || strcmp(whole.line, parts.line) != 0)
		abort();
	if (done && (k < 4 || memcmp(data + k - 4, "\r\n\r\n", 4) != 0))
		abort();
	(void)http_status(whole.line);
	len = socks5_reply(data, size, &rep);
	if (len > (int)size || (len > 0 && (rep < 0 || rep > 255)))
		abort();
	if (size >= 2) {
		(void)socks5_method(data);
		(void)socks5_auth_status(data);
	}
	return 0;
}
