/* fastprobe - attacks on --fast-tcp from inside the sandbox (tests/e2e/test_fast_tcp.py).
 *   fastprobe race N HOST PORT REFUSED_HOST REFUSED_PORT
 *        N attempts: thread B flips fd 100 between a fresh sandbox socket and an injected socket
 *        whose connect was refused, while thread A connects fd 100 to HOST:PORT (the host's
 *        loopback).  Prints "escaped K of N" (K: connects that read the host service's banner).
 *   fastprobe compat HOST PORT
 *        the i386 (int 0x80) socketcall and connect, and an x32 connect: prints their results.
 *   fastprobe uring
 *        io_uring_setup(): prints its result. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>

static atomic_int flipping;
static int fd_sb, fd_host;

static void *flipper(void *arg)
{
	(void)arg;
	while (atomic_load(&flipping)) {
		dup2(fd_host, 100);
		dup2(fd_sb, 100);
	}
	return NULL;
}

static struct sockaddr_in sin_of(const char *h, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	inet_pton(AF_INET, h, &a.sin_addr);
	return a;
}

/* A socket whose injected connect was refused (a closed host-netns socket). */
static int refused_socket(const char *h, int port)
{
	struct sockaddr_in a = sin_of(h, port);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct pollfd p = { .fd = s, .events = POLLOUT };

	connect(s, (struct sockaddr *)&a, sizeof(a));
	poll(&p, 1, 3000);
	return s;
}

static int race(int n, const char *h, int port, const char *rh, int rport)
{
	struct sockaddr_in a = sin_of(h, port);
	int escaped = 0;

	for (int i = 0; i < n; i++) {
		pthread_t t;
		char buf[16];
		struct timeval tv = { 1, 0 };

		fd_sb = socket(AF_INET, SOCK_STREAM, 0);
		fd_host = refused_socket(rh, rport);
		fcntl(fd_host, F_SETFL, 0);
		dup2(fd_sb, 100);
		atomic_store(&flipping, 1);
		pthread_create(&t, NULL, flipper, NULL);
		int r = connect(100, (struct sockaddr *)&a, sizeof(a));
		atomic_store(&flipping, 0);
		pthread_join(t, NULL);
		if (r == 0) {
			setsockopt(100, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			ssize_t k = recv(100, buf, sizeof(buf) - 1, 0);

			if (k > 0) {
				buf[k] = 0;
				if (strstr(buf, "HOSTSVC"))
					escaped++;
			}
		}
		close(100);
		close(fd_sb);
		close(fd_host);
	}
	printf("escaped %d of %d\n", escaped, n);
	return 0;
}

static long int80(long nr, long a, long b, long c)
{
	long r;

	__asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}

static int compat(const char *h, int port)
{
	struct sockaddr_in a = sin_of(h, port);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	/* i386 socketcall(SYS_CONNECT=3, args) with a 32-bit pointer: the args live below 4 GiB? Not
	 * necessarily, so only the syscall's refusal is checked, by its number alone. */
	unsigned int args[3] = { (unsigned int)s, 0, sizeof(a) };
	long r1 = int80(102 /* socketcall */, 3, (long)(unsigned long)args, 0);
	long r2 = int80(362 /* i386 connect */, s, 0, sizeof(a));
	long r3 = syscall(0x40000000L | 42 /* x32 connect */, s, &a, sizeof(a));
	int e3 = r3 < 0 ? errno : 0;

	printf("socketcall %ld connect %ld x32 %ld/%d\n", r1, r2, r3, e3);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 7 && !strcmp(argv[1], "race"))
		return race(atoi(argv[2]), argv[3], atoi(argv[4]), argv[5], atoi(argv[6]));
	if (argc == 4 && !strcmp(argv[1], "compat"))
		return compat(argv[2], atoi(argv[3]));
	if (argc == 2 && !strcmp(argv[1], "uring")) {
		char params[120];

		memset(params, 0, sizeof(params));
		long r = syscall(425 /* io_uring_setup */, 4, params);

		printf("io_uring_setup %ld %d\n", r, r < 0 ? errno : 0);
		return 0;
	}
	fprintf(stderr, "usage: fastprobe race|compat|uring ...\n");
	return 2;
}
