/*
 * libFuzzer target: --fast-tcp's reading of the command's seccomp notification (fasttcp/call.c).
 *
 * Every byte P reads for a connect, bind or listen of the command is the command's: the syscall's
 * registers (struct seccomp_data) and the address copied out of its memory (process_vm_readv of
 * the length it passed).  The input is a seccomp_data followed by the bytes at the address; it is
 * read twice, as it is and as a native connect (so every input reaches the address parsers).  A
 * crash, a sanitizer report, a length beyond a sockaddr_storage, or a path that is not a
 * NUL-terminated string inside sun_path is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "fasttcp/call.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const struct seccomp_data *d, const uint8_t *mem, size_t mlen)
{
	struct ft_call c;
	struct sockaddr_storage ss;
	size_t nsz = sizeof(((struct sockaddr_un *)0)->sun_path) + 1;
	char *name;
	int r;

	if (ft_call_parse(d, &c) < 0 || (c.kind != FT_CONNECT && c.kind != FT_BIND))
		return;
	if (c.alen > sizeof(ss))
		abort();
	if (c.alen > mlen)
		return;   /* process_vm_readv would be short: EFAULT */
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, mem, c.alen);
	name = malloc(nsz);   /* exactly the size unix_path() gives it */
	if (!name)
		return;
	r = ft_unix_name(&ss, c.alen, name, nsz);
	if (r == 1 && (strnlen(name, nsz) >= nsz || strlen(name) == 0))
		abort();
	free(name);
	r = ft_inet_port(&ss, c.alen);
	if (r > 65535 || (r < 0 && c.alen >= 4))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct seccomp_data d;

	if (size < sizeof(d))
		return 0;
	memcpy(&d, data, sizeof(d));
	one(&d, data + sizeof(d), size - sizeof(d));
	d.arch = AUDIT_ARCH_X86_64;
	d.nr = __NR_connect;
	one(&d, data + sizeof(d), size - sizeof(d));
	return 0;
}
