/* SPDX-License-Identifier: MIT */
/*
 * try — the doctor's throwaway child: a fork, optionally in fresh namespaces, that tries one thing
 * and reports back through a pipe.  Its namespaces have no name and no other member: they go when
 * it exits, and it exits with us (PR_SET_PDEATHSIG).  Also the distribution-specific fix texts.
 */
#include "doctor/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "util/proc.h"

static int map_self(uid_t uid, gid_t gid)
{
	char line[64];
	int r;

	snprintf(line, sizeof(line), "0 %u 1", (unsigned)uid);
	if ((r = proc_write_file("/proc/self/uid_map", line)) < 0)
		return r;
	r = proc_write_file("/proc/self/setgroups", "deny");
	if (r < 0 && r != -ENOENT)
		return r;
	snprintf(line, sizeof(line), "0 %u 1", (unsigned)gid);
	return proc_write_file("/proc/self/gid_map", line);
}

__attribute__((noreturn)) static void child(unsigned long ns_flags, int (*fn)(void *, char *, size_t), void *arg,
					     int resfd, int errfd, pid_t parent)
{
	struct try_result res;
	uid_t uid = geteuid();
	gid_t gid = getegid();
	int r;

	memset(&res, 0, sizeof(res));
	dup2(errfd, STDERR_FILENO);
	close(errfd);
	proc_die_with_parent(parent);
	if (ns_flags && unshare((int)ns_flags) < 0) {
		res.stage = TRY_USERNS;
		res.err = errno;
	} else if ((ns_flags & CLONE_NEWUSER) && (r = map_self(uid, gid)) < 0) {
		res.stage = TRY_MAP;
		res.err = -r;
	} else {
		r = fn(arg, res.msg, sizeof(res.msg));
		res.stage = TRY_DONE;
		res.err = r < 0 ? -r : 0;
	}
	if (write(resfd, &res, sizeof(res)) != (ssize_t)sizeof(res))
		_exit(1);
	_exit(0);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* The child's stderr as one line: its lines joined by "; ", without childflow's prefixes. */
static void tidy_stderr(const char *in, char *out, size_t len)
{
	size_t o = 0;

	out[0] = '\0';
	while (*in && o + 1 < len) {
		const char *nl = strchr(in, '\n');
		size_t n = nl ? (size_t)(nl - in) : strlen(in);

		if (!strncmp(in, "childflow: ", 11)) {
			in += 11;
			n -= 11;
		}
		if (!strncmp(in, "error: ", 7)) {
			in += 7;
			n -= 7;
		}
		if (n) {
			int w = snprintf(out + o, len - o, "%s%.*s", o ? "; " : "", (int)n, in);

			if (w < 0)
				break;
			o += (size_t)w < len - o ? (size_t)w : len - o - 1;
		}
		in += n + (nl ? 1 : 0);
		if (!nl)
			break;
	}
}

int doctor_try(unsigned long ns_flags, int (*fn)(void *arg, char *msg, size_t len), void *arg,
	       int timeout_ms, struct try_result *out)
{
	char errbuf[DOCTOR_TEXT_MAX];
	size_t errlen = 0;
	int rp[2], ep[2], st = 0;
	bool got = false;
	long deadline = now_ms() + timeout_ms;
	pid_t pid, self = getpid();

	memset(out, 0, sizeof(*out));
	if (pipe2(rp, O_CLOEXEC) < 0) {
		out->stage = TRY_FORK;
		out->err = errno;
		return -1;
	}
	if (pipe2(ep, O_CLOEXEC) < 0) {
		out->stage = TRY_FORK;
		out->err = errno;
		close(rp[0]);
		close(rp[1]);
		return -1;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(rp[0]);
		close(ep[0]);
		child(ns_flags, fn, arg, rp[1], ep[1], self);
	}
	close(rp[1]);
	close(ep[1]);
	if (pid < 0) {
		out->stage = TRY_FORK;
		out->err = errno;
		close(rp[0]);
		close(ep[0]);
		return -1;
	}
	for (;;) {
		struct pollfd pf[2] = { { .fd = rp[0], .events = POLLIN }, { .fd = ep[0], .events = POLLIN } };
		long left = deadline - now_ms();
		int n;

		if (left <= 0) {
			kill(pid, SIGKILL);
			out->stage = TRY_TIMEOUT;
			break;
		}
		n = poll(pf, 2, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		if (pf[1].revents) {
			ssize_t k = read(ep[0], errbuf + errlen, sizeof(errbuf) - 1 - errlen);

			if (k > 0)
				errlen += (size_t)k;
			if (k <= 0 || errlen >= sizeof(errbuf) - 1) {
				close(ep[0]);
				ep[0] = -1;   /* poll() skips it from now on */
			}
		}
		if (pf[0].revents) {
			got = read(rp[0], out, sizeof(*out)) == (ssize_t)sizeof(*out);
			break;
		}
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	/* What it wrote to stderr before it reported (or died). */
	if (ep[0] >= 0) {
		ssize_t k;

		fcntl(ep[0], F_SETFL, O_NONBLOCK);
		while (errlen < sizeof(errbuf) - 1 && (k = read(ep[0], errbuf + errlen, sizeof(errbuf) - 1 - errlen)) > 0)
			errlen += (size_t)k;
		close(ep[0]);
	}
	close(rp[0]);
	errbuf[errlen] = '\0';
	if (!got && out->stage != TRY_TIMEOUT) {
		memset(out, 0, sizeof(*out));
		out->stage = TRY_DIED;
		out->status = st;
	} else if (out->stage == TRY_TIMEOUT) {
		out->err = ETIMEDOUT;
	}
	if (!out->msg[0])
		tidy_stderr(errbuf, out->msg, sizeof(out->msg));
	return out->stage == TRY_DONE && out->err == 0 ? 0 : -1;
}

/* ---------- this distribution's fixes ---------- */

static bool os_release_has(const char *word)
{
	char *t = proc_read_text("/etc/os-release", 1u << 16);
	bool yes = false;

	if (!t)
		return false;
	for (char *save = NULL, *l = strtok_r(t, "\n", &save); l && !yes; l = strtok_r(NULL, "\n", &save)) {
		if (strncmp(l, "ID=", 3) != 0 && strncmp(l, "ID_LIKE=", 8) != 0)
			continue;
		yes = strstr(l, word) != NULL;
	}
	free(t);
	return yes;
}

bool doctor_is_debian(void)
{
	return os_release_has("debian") || os_release_has("ubuntu");
}

const char *doctor_install_cmd(const char *deb, const char *rpm, const char *arch, char *buf, size_t len)
{
	if (doctor_is_debian())
		snprintf(buf, len, "apt-get install %s", deb);
	else if (os_release_has("fedora") || os_release_has("rhel") || os_release_has("suse"))
		snprintf(buf, len, "dnf install %s", rpm);
	else if (os_release_has("arch"))
		snprintf(buf, len, "pacman -S %s", arch);
	else
		snprintf(buf, len, "install the package that provides %s (Debian: %s)", deb, deb);
	return buf;
}

const char *doctor_sysctl_fix(const char *key, const char *value, char *buf, size_t len)
{
	const char *q = strchr(value, ' ') ? "\"" : "";

	snprintf(buf, len, "sysctl -w %s=%s%s%s (to keep it after a reboot: echo '%s = %s' > "
		 "/etc/sysctl.d/90-childflow.conf)", key, q, value, q, key, value);
	return buf;
}
