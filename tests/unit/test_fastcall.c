/* Unit tests: fasttcp/call — the command's syscall arguments and address bytes, as the kernel reads them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <linux/audit.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "fasttcp/call.h"

static struct seccomp_data call(int nr, uint64_t a0, uint64_t a1, uint64_t a2)
{
	struct seccomp_data d;

	memset(&d, 0, sizeof(d));
	d.arch = AUDIT_ARCH_X86_64;
	d.nr = nr;
	d.args[0] = a0;
	d.args[1] = a1;
	d.args[2] = a2;
	return d;
}

static void test_calls(void **state)
{
	struct seccomp_data d;
	struct ft_call c;

	(void)state;
	d = call(__NR_connect, 5, 0x1000, 16);
	assert_int_equal(ft_call_parse(&d, &c), 0);
	assert_int_equal(c.kind, FT_CONNECT);
	assert_int_equal(c.fd, 5);
	assert_int_equal(c.alen, 16);
	d = call(__NR_bind, 5, 0x1000, sizeof(struct sockaddr_storage) + 1);
	assert_int_equal(ft_call_parse(&d, &c), -EINVAL);
	d = call(__NR_connect, 5, 0x1000, 0x100000010ull);   /* the kernel reads an int: 16 */
	assert_int_equal(ft_call_parse(&d, &c), 0);
	assert_int_equal(c.alen, 16);
	d = call(__NR_connect, 0xffffffffull, 0x1000, 16);   /* fd -1 */
	assert_int_equal(ft_call_parse(&d, &c), -EBADF);
	d = call(__NR_listen, 3, 0xffffffffull, 0);
	assert_int_equal(ft_call_parse(&d, &c), 0);
	assert_int_equal(c.backlog, -1);
	d = call(__NR_epoll_ctl, 7, EPOLL_CTL_ADD, 4);
	assert_int_equal(ft_call_parse(&d, &c), 0);
	assert_int_equal(c.kind, FT_SHARE);
	assert_int_equal(c.fd, 4);   /* the fd added, not the epoll set */
	d = call(__NR_epoll_ctl, 7, EPOLL_CTL_DEL, 4);
	assert_int_equal(ft_call_parse(&d, &c), -ENOSYS);
	d = call(__NR_fcntl, 4, F_DUPFD_CLOEXEC, 10);
	assert_int_equal(ft_call_parse(&d, &c), 0);
	assert_int_equal(c.kind, FT_SHARE);
	d = call(__NR_fcntl, 4, F_SETFL, 0);
	assert_int_equal(ft_call_parse(&d, &c), -ENOSYS);
	d = call(__NR_dup2, 4, 9, 0);
	assert_int_equal(ft_call_parse(&d, &c), 0);
	assert_int_equal(c.fd, 4);
	d = call(__NR_connect, 5, 0x1000, 16);
	d.arch = AUDIT_ARCH_I386;
	assert_int_equal(ft_call_parse(&d, &c), -ENOSYS);
}

static void test_unix_names(void **state)
{
	struct sockaddr_storage ss;
	struct sockaddr_un *su = (struct sockaddr_un *)&ss;
	char name[sizeof(su->sun_path) + 1];

	(void)state;
	memset(&ss, 'A', sizeof(ss));
	su->sun_family = AF_UNIX;
	/* longer than a sockaddr_un, no NUL anywhere: the kernel's EINVAL, nothing copied */
	assert_int_equal(ft_unix_name(&ss, sizeof(ss), name, sizeof(name)), -EINVAL);
	assert_int_equal(ft_unix_name(&ss, sizeof(struct sockaddr_un) + 1, name, sizeof(name)), -EINVAL);
	/* exactly a sockaddr_un with no NUL: 108 bytes of path */
	assert_int_equal(ft_unix_name(&ss, sizeof(struct sockaddr_un), name, sizeof(name)), 1);
	assert_int_equal(strlen(name), sizeof(su->sun_path));
	su->sun_path[0] = '\0';   /* abstract */
	assert_int_equal(ft_unix_name(&ss, 10, name, sizeof(name)), 0);
	assert_int_equal(ft_unix_name(&ss, 2, name, sizeof(name)), 0);   /* unnamed */
}

static void test_ports(void **state)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;

	(void)state;
	memset(&ss, 0, sizeof(ss));
	in->sin_family = AF_UNSPEC;   /* binds an AF_INET socket as AF_INET: its port counts */
	in->sin_port = htons(80);
	assert_int_equal(ft_inet_port(&ss, sizeof(*in)), 80);
	assert_int_equal(ft_inet_port(&ss, 3), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_calls),
		cmocka_unit_test(test_unix_names),
		cmocka_unit_test(test_ports),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
