/*
 * libFuzzer target: the host's resolv.conf parser and the child's file built from it.
 *
 * The host file is written by other software (NetworkManager, resolvconf, DHCP clients, a user), so
 * it is input childflow does not control.  Any crash, sanitizer report, or a result that breaks the
 * contract (more than RESOLV_MAX_NS servers, a kept line that is not newline-terminated or holds a
 * control character, a child file without the gateway) is a finding.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns/resolvconf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[RESOLV_LINES_MAX + 256];
	struct resolv_conf rc;
	struct netplan np;
	size_t n;

	resolvconf_parse((const char *)data, size, &rc);
	if (rc.n_ns < 0 || rc.n_ns > RESOLV_MAX_NS || rc.timeout_s < 1 || rc.attempts < 1)
		abort();
	n = strnlen(rc.lines, sizeof(rc.lines));
	if (n == sizeof(rc.lines) || (n && rc.lines[n - 1] != '\n'))
		abort();
	for (size_t i = 0; i < n; i++)
		if (rc.lines[i] != '\n' && rc.lines[i] != '\t' && !isprint((unsigned char)rc.lines[i]))
			abort();
	netplan_init(&np, size & 1);
	if (resolvconf_child_text(&rc, &np, out, sizeof(out)) < 0 || !strstr(out, "nameserver 10.240.255.1\n"))
		abort();
	return 0;
}
