/* SPDX-License-Identifier: MIT */
/*
 * fastfilter — --fast-tcp, in the command just before execve: the seccomp filter whose listener P
 * answers (src/fasttcp/), and the hand-over of that listener to P.
 *
 * The filter (libseccomp, a second filter stacked on load_filter()'s):
 *   native x86_64  connect, bind, listen           -> USER_NOTIF (P performs or refuses each one)
 *                  epoll_ctl(ADD), dup, dup2, dup3, fcntl(F_DUPFD, F_DUPFD_CLOEXEC)
 *                                                  -> USER_NOTIF (P notes a fresh TCP socket shared
 *                                                     before connect, then lets the call continue)
 *                  io_uring_setup                  -> EPERM (its ops would connect without a syscall)
 *                  sendto/sendmmsg (a3), sendmsg (a2) with MSG_FASTOPEN -> EOPNOTSUPP (an implicit
 *                                                     connect that P would not see)
 *   i386, x32      socketcall, connect, bind, listen, sendto, sendmsg, sendmmsg, io_uring_setup
 *                                                  -> ENOSYS (P reads native arguments only)
 * The command sends P, over the channel sandbox_start() made (SEQPACKET, SCM_RIGHTS), the listener
 * and two template TCP sockets made here in N2 (AF_INET, AF_INET6: the sandbox's netns cookie and
 * its option defaults), waits for P's one-byte answer and closes all of them: the command must
 * never hold its own listener.  From the load on, no code here may connect, bind or listen.
 */
#include "sandbox/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <seccomp.h>

#include "util/fdpass.h"
#include "util/log.h"

static int add_compat_denials(scmp_filter_ctx ctx)
{
	static const char *const names[] = {
		"socketcall", "connect", "bind", "listen", "sendto", "sendmsg", "sendmmsg", "io_uring_setup",
	};
	int r = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && r == 0; i++) {
		int nr = seccomp_syscall_resolve_name(names[i]);

		if (nr == __NR_SCMP_ERROR)
			continue;
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
		if (r == -EDOM || r == -EFAULT)
			r = 0;   /* not a syscall of these ABIs */
	}
	return r;
}

/* The compat ABIs' part, merged into @nat (which owns it afterwards).  Return: 0 or -errno. */
static int merge_compat(scmp_filter_ctx nat)
{
	scmp_filter_ctx c = seccomp_init(SCMP_ACT_ALLOW);
	int r;

	if (!c)
		return -ENOMEM;
	r = seccomp_attr_set(c, SCMP_FLTATR_CTL_NNP, 1);
	if (r == 0)
		r = seccomp_arch_remove(c, SCMP_ARCH_NATIVE);
	if (r == 0)
		r = seccomp_arch_add(c, SCMP_ARCH_X86);
	if (r == 0)
		r = seccomp_arch_add(c, SCMP_ARCH_X32);
	if (r == 0)
		r = add_compat_denials(c);
	if (r == 0)
		r = seccomp_merge(nat, c);
	if (r != 0)
		seccomp_release(c);
	return r;
}

/* Return: the listener fd, or -errno. */
static int load_notify_filter(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int r;

	if (!ctx)
		return -ENOMEM;
	r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(connect), 0);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(bind), 0);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(listen), 0);
	/* Sharing a socket before its connect (P must not replace it then): observed, continued. */
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(epoll_ctl), 1, SCMP_A1(SCMP_CMP_EQ, EPOLL_CTL_ADD));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(dup), 0);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(dup2), 0);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(dup3), 0);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(fcntl), 1, SCMP_A1(SCMP_CMP_EQ, F_DUPFD));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(fcntl), 1, SCMP_A1(SCMP_CMP_EQ, F_DUPFD_CLOEXEC));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_setup), 0);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EOPNOTSUPP), SCMP_SYS(sendto), 1,
				     SCMP_A3(SCMP_CMP_MASKED_EQ, MSG_FASTOPEN, MSG_FASTOPEN));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EOPNOTSUPP), SCMP_SYS(sendmsg), 1,
				     SCMP_A2(SCMP_CMP_MASKED_EQ, MSG_FASTOPEN, MSG_FASTOPEN));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EOPNOTSUPP), SCMP_SYS(sendmmsg), 1,
				     SCMP_A3(SCMP_CMP_MASKED_EQ, MSG_FASTOPEN, MSG_FASTOPEN));
	if (r == 0)
		r = merge_compat(ctx);
	if (r == 0)
		r = seccomp_load(ctx);
	if (r == 0)
		r = seccomp_notify_fd(ctx);
	seccomp_release(ctx);
	return r;
}

int fast_filter_load(int chan)
{
	int fds[3] = { -1, -1, -1 }, err = 0;
	const char *step = "create the template sockets";
	char ack = 0;
	ssize_t n;

	fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
	fds[2] = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fds[1] < 0)
		err = errno;
	if (!err) {
		step = "load the filter";
		fds[0] = load_notify_filter();
		if (fds[0] < 0)
			err = -fds[0];
	}
	if (!err) {
		step = "hand it to childflow";
		/* No IPv6 in N2: the AF_INET template stands in (P only reads its cookie then). */
		int rs = fdpass_send(chan, "F", 1, fds, fds[2] >= 0 ? 3 : 2);

		if (rs < 0)
			err = -rs;
	}
	if (!err) {
		do
			n = read(chan, &ack, 1);
		while (n < 0 && errno == EINTR);
		if (n != 1)
			err = n < 0 ? errno : EPIPE;
	}
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	close(chan);
	if (!err)
		return 0;
	log_error("cannot start --fast-tcp (%s): %s", step, strerror(err));
	return -1;
}
