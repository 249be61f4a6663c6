/*
 * flowtool - the benchmark's small TCP client and server for connection setup and concurrent flows.
 *
 * Built by bench/run.py into its scratch directory (cc -O2); not part of childflow.
 *
 *   flowtool serve ADDR RATE_PORT HOLD_PORT
 *       One epoll loop. RATE_PORT: accept, write one byte, close (server closes first, so the
 *       client never holds TIME_WAIT). HOLD_PORT: accept, write one byte, keep the connection open
 *       until the client closes it. Prints "ready" once both listen. Runs until killed.
 *   flowtool rate ADDR PORT SECONDS
 *       Sequential connect + read until EOF + close, for SECONDS. The server's byte proves the
 *       connection reached the server, so a relay that completes the handshake locally (childflow's
 *       gateway kernel) is measured to the real end. Prints "conns=N failed=F seconds=T".
 *   flowtool rate ADDR PORT SECONDS VIA PROXY_ADDR PROXY_PORT [CA_FILE]
 *       The same, each connection through a proxy (no authentication): VIA is http (CONNECT),
 *       https (CONNECT inside TLS to the proxy, verified against CA_FILE) or socks5.
 *   flowtool rate ADDR PORT SECONDS https PROXY_ADDR PROXY_PORT CA_FILE resume
 *       https, offering each handshake the proxy's last session (as childflow -p does).
 *   flowtool source ADDR PORT
 *       A bulk HTTP source: per connection (a forked process), read the request, answer
 *       "HTTP/1.0 200 OK" and send zeros until the client goes away.
 *   flowtool hold ADDR PORT N TIMEOUT
 *       Opens N connections (at most 256 in progress at once) and waits for each one's byte.
 *       Prints "held=N failed=F seconds=T", then keeps them open until stdin reaches EOF (or
 *       TIMEOUT seconds pass), resets them (SO_LINGER 0, so no TIME_WAIT is left) and exits.
 *
 *   flowtool dnslat ADDR NAME SECONDS
 *       One UDP socket, one query outstanding: an A query for NAME to ADDR:53, wait for the answer
 *       with the same ID (1 s at most, then counted lost), repeat for SECONDS. Prints
 *       "queries=N lost=L p50_us=X p99_us=Y" (request/response time of each answered query).
 *
 * Every wait is bounded; errors are counted, never retried forever.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>

#include <openssl/ssl.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static struct sockaddr_in addr_of(const char *ip, const char *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port)) };
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		fprintf(stderr, "flowtool: bad IPv4 address %s\n", ip);
		exit(2);
	}
	return sa;
}

static int listen_on(const struct sockaddr_in *sa)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 || listen(fd, 4096) < 0) {
		perror("flowtool: bind/listen");
		exit(1);
	}
	return fd;
}

static int serve(const char *ip, const char *rport, const char *hport)
{
	struct sockaddr_in ra = addr_of(ip, rport), ha = addr_of(ip, hport);
	int rl = listen_on(&ra), hl = listen_on(&ha), ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN }, evs[256];
	char buf[4096];

	ev.data.fd = rl;
	epoll_ctl(ep, EPOLL_CTL_ADD, rl, &ev);
	ev.data.fd = hl;
	epoll_ctl(ep, EPOLL_CTL_ADD, hl, &ev);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == rl || fd == hl) {
				for (int k = 0; k < 64; k++) {
					int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (c < 0)
						break;
					if (write(c, "x", 1) != 1 || fd == rl) {
						close(c);
						continue;
					}
					ev.events = EPOLLIN | EPOLLRDHUP;
					ev.data.fd = c;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
						close(c);
					ev.events = EPOLLIN;
				}
			} else {
				ssize_t r = read(fd, buf, sizeof(buf));
				if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
					close(fd); /* also leaves the epoll set */
			}
		}
	}
	return 0;
}

/* The proxy of `rate ... VIA`: how to ask it for the destination. */
struct via {
	const char *kind;           /* NULL: connect directly */
	struct sockaddr_in proxy;
	SSL_CTX *tls;               /* https */
	int resume;                 /* https: offer the last session */
	SSL_SESSION *sess;
};

/*
 * Read exactly one CONNECT reply header block, the way childflow -p does (src/proxy/http.c
 * read_reply()): peek at what has arrived, then consume exactly the header bytes found in it (all of
 * them while the blank line has not come yet), so that nothing past the reply is taken.  Reading
 * byte by byte would stop at the same place but with one read() (or SSL_read()) per byte: ~70
 * system calls for tinyproxy's reply, a cost childflow does not pay.  Return: 1 if 2xx.
 */
static int http_reply_ok(SSL *ssl, int fd)
{
	char h[1024];
	size_t n = 0;   /* consumed so far, all of it header */

	for (;;) {
		int got = ssl ? SSL_peek(ssl, h + n, (int)(sizeof(h) - 1 - n))
			      : (int)recv(fd, h + n, sizeof(h) - 1 - n, MSG_PEEK);
		size_t end = 0;

		if (got <= 0)
			return 0;
		/* the blank line may straddle what was consumed before */
		for (size_t i = n >= 3 ? n - 3 : 0; i + 4 <= n + (size_t)got; i++)
			if (!memcmp(h + i, "\r\n\r\n", 4)) {
				end = i + 4;
				break;
			}
		size_t take = end ? end - n : (size_t)got;
		if ((ssl ? SSL_read(ssl, h + n, (int)take) : recv(fd, h + n, take, MSG_WAITALL)) != (ssize_t)take)
			return 0;
		n += take;
		if (end)
			break;
		if (n >= sizeof(h) - 1)
			return 0;
	}
	h[n] = 0;
	return !strncmp(h, "HTTP/1.", 7) && h[9] == '2';
}

/* Connect @fd to @dst, through @v's proxy when set; then the server's byte and EOF.  Return: 1 ok. */
static int one_conn(int fd, const struct sockaddr_in *dst, struct via *v)
{
	char b, req[128], ip[INET_ADDRSTRLEN];
	unsigned char s5[10];
	SSL *ssl = NULL;
	int ok = 0;

	if (!v->kind)
		return connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) == 0 && read(fd, &b, 1) == 1 &&
		       read(fd, &b, 1) == 0;
	if (connect(fd, (const struct sockaddr *)&v->proxy, sizeof(v->proxy)) != 0)
		return 0;
	inet_ntop(AF_INET, &dst->sin_addr, ip, sizeof(ip));
	if (!strcmp(v->kind, "socks5")) {
		unsigned char hello[3] = { 5, 1, 0 }, conn[10] = { 5, 1, 0, 1 };
		memcpy(conn + 4, &dst->sin_addr, 4);
		memcpy(conn + 8, &dst->sin_port, 2);
		return write(fd, hello, 3) == 3 && read(fd, s5, 2) == 2 && s5[1] == 0 &&
		       write(fd, conn, 10) == 10 && recv(fd, s5, 10, MSG_WAITALL) == 10 && s5[1] == 0 &&
		       read(fd, &b, 1) == 1 && read(fd, &b, 1) == 0;
	}
	snprintf(req, sizeof(req), "CONNECT %s:%u HTTP/1.1\r\nHost: %s:%u\r\n\r\n", ip, ntohs(dst->sin_port),
		 ip, ntohs(dst->sin_port));
	if (v->tls) {
		ssl = SSL_new(v->tls);
		if (!ssl || !SSL_set_fd(ssl, fd) || (v->sess && !SSL_set_session(ssl, v->sess)) ||
		    SSL_connect(ssl) != 1)
			goto out;
		ok = SSL_write(ssl, req, (int)strlen(req)) == (int)strlen(req) && http_reply_ok(ssl, fd);
		if (ok && v->resume) {
			/* The tickets came before the reply (TLS 1.3 sends them after the handshake); take
			 * the session before the EOF, which (without close_notify) makes it unresumable. */
			SSL_SESSION_free(v->sess);
			v->sess = SSL_get1_session(ssl);
		}
		ok = ok && SSL_read(ssl, &b, 1) == 1 && SSL_read(ssl, &b, 1) <= 0;
	} else {
		ok = write(fd, req, strlen(req)) == (ssize_t)strlen(req) && http_reply_ok(NULL, fd) &&
		     read(fd, &b, 1) == 1 && read(fd, &b, 1) == 0;
	}
out:
	if (ssl && v->resume)
		SSL_shutdown(ssl);   /* close_notify: a proxy forgets the session of an unclean end */
	SSL_free(ssl);
	return ok;
}

static int rate(const char *ip, const char *port, double seconds, struct via *v)
{
	struct sockaddr_in sa = addr_of(ip, port);
	struct timeval tv = { .tv_sec = 2 };
	long conns = 0, failed = 0;
	double t0 = now(), t = t0;

	while (t - t0 < seconds && failed < 100) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
		if (fd < 0) {
			perror("flowtool: socket");
			return 1;
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (v->kind)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (one_conn(fd, &sa, v))
			conns++;
		else
			failed++;
		close(fd);
		t = now();
	}
	printf("conns=%ld failed=%ld seconds=%.6f\n", conns, failed, t - t0);
	return conns > 0 ? 0 : 1;
}

static int source(const char *ip, const char *port)
{
	struct sockaddr_in sa = addr_of(ip, port);
	int l = listen_on(&sa);
	static char zeros[1 << 18];

	fcntl(l, F_SETFL, 0);
	signal(SIGCHLD, SIG_IGN);   /* no zombies */
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		char req[4096];

		if (c < 0)
			continue;
		if (fork() == 0) {
			static const char hdr[] = "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
			if (read(c, req, sizeof(req)) > 0 && write(c, hdr, sizeof(hdr) - 1) > 0)
				while (write(c, zeros, sizeof(zeros)) > 0)
					;
			_exit(0);
		}
		close(c);
	}
}

enum { ST_CONNECTING = 1, ST_WAITBYTE = 2, ST_HELD = 3 };

static int hold(const char *ip, const char *port, long n, double timeout)
{
	struct sockaddr_in sa = addr_of(ip, port);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int *fds = calloc((size_t)n + 1, sizeof(int));
	unsigned char *st = calloc(65536 * 16, 1); /* state by fd number */
	struct epoll_event ev, evs[256];
	long opened = 0, held = 0, failed = 0, inflight = 0;
	double t0 = now(), deadline = t0 + timeout;

	if (!fds || !st)
		return 1;
	while (held + failed < n && now() < deadline) {
		while (opened < n && inflight < 256) {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fd < 0 || fd >= 65536 * 16) {
				fprintf(stderr, "flowtool: socket: %s\n", strerror(errno));
				failed += n - opened;
				opened = n;
				if (fd >= 0)
					close(fd);
				break;
			}
			fds[opened++] = fd;
			if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
				close(fd);
				fds[opened - 1] = -1;
				failed++;
				continue;
			}
			st[fd] = ST_CONNECTING;
			ev.events = EPOLLIN | EPOLLOUT;
			ev.data.fd = fd;
			epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
			inflight++;
		}
		int k = epoll_wait(ep, evs, 256, 200);
		for (int i = 0; i < k; i++) {
			int fd = evs[i].data.fd, err = 0;
			socklen_t el = sizeof(err);
			char b;
			if (st[fd] == ST_CONNECTING && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
				if (err == 0) {
					st[fd] = ST_WAITBYTE;
					ev.events = EPOLLIN;
					ev.data.fd = fd;
					epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
				}
			}
			if (err == 0 && st[fd] == ST_WAITBYTE && (evs[i].events & EPOLLIN)) {
				ssize_t r = read(fd, &b, 1);
				if (r == 1) {
					st[fd] = ST_HELD;
					epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
					held++;
					inflight--;
					continue;
				}
				if (r < 0 && errno == EAGAIN)
					continue;
				err = 1;
			}
			if (err || (evs[i].events & (EPOLLERR | EPOLLHUP))) {
				epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
				st[fd] = 0;
				failed++;
				inflight--;
			}
		}
	}
	printf("held=%ld failed=%ld seconds=%.6f\n", held, n - held, now() - t0);
	fflush(stdout);
	/* keep them open until stdin closes (or the deadline passes) */
	for (;;) {
		struct pollfd p = { .fd = 0, .events = POLLIN };
		double left = deadline + timeout - now();
		char buf[64];
		if (left <= 0)
			break;
		int r = poll(&p, 1, (int)(left * 1000) + 1);
		if (r == 0)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || read(0, buf, sizeof(buf)) <= 0)
			break;
	}
	/* Abortive close (RST): no TIME_WAIT is left anywhere on the path (a relay propagates the
	 * reset), so the next run's connect() does not have to search past thousands of ports. */
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	for (long i = 0; i < opened; i++)
		if (fds[i] >= 0) {
			setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(fds[i]);
		}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int dnslat(const char *addr, const char *name, double secs)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(53) };
	unsigned char q[300], r[4096];
	size_t qlen = 12, cap = 1 << 20, n = 0;
	double *lat = malloc(cap * sizeof(*lat)), t_end;
	long lost = 0;
	unsigned short id = 1;
	int fd;

	if (!lat || inet_pton(AF_INET, addr, &sa.sin_addr) != 1 || strlen(name) > 250)
		return 2;
	memset(q, 0, sizeof(q));
	q[2] = 0x01;                       /* RD */
	q[5] = 1;                          /* QDCOUNT */
	for (const char *p = name; *p;) {  /* labels */
		size_t l = strcspn(p, ".");
		if (l == 0 || l > 63)
			return 2;
		q[qlen++] = (unsigned char)l;
		memcpy(q + qlen, p, l);
		qlen += l;
		p += l + (p[l] == '.');
	}
	q[qlen++] = 0;
	q[qlen++] = 0; q[qlen++] = 1;      /* A */
	q[qlen++] = 0; q[qlen++] = 1;      /* IN */
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("flowtool dnslat");
		return 1;
	}
	t_end = now() + secs;
	while (now() < t_end && n < cap) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		double t0;

		id++;
		q[0] = (unsigned char)(id >> 8);
		q[1] = (unsigned char)id;
		t0 = now();
		if (send(fd, q, qlen, 0) < 0) {
			lost++;
			continue;
		}
		for (;;) {
			int left = (int)((t0 + 1.0 - now()) * 1000);
			ssize_t got;

			if (left <= 0 || poll(&pfd, 1, left) <= 0) {
				lost++;
				break;
			}
			got = recv(fd, r, sizeof(r), 0);
			if (got >= 12 && r[0] == q[0] && r[1] == q[1]) {
				lat[n++] = (now() - t0) * 1e6;
				break;
			}
			if (got < 0 && errno != EINTR) {
				lost++;
				usleep(1000);
				break;
			}
		}
	}
	close(fd);
	if (!n) {
		printf("queries=0 lost=%ld\n", lost);
		free(lat);
		return 1;
	}
	qsort(lat, n, sizeof(*lat), cmp_double);
	printf("queries=%zu lost=%ld p50_us=%.1f p99_us=%.1f\n", n, lost, lat[n / 2], lat[(n * 99) / 100]);
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	raise_nofile();
	if (argc == 5 && !strcmp(argv[1], "serve"))
		return serve(argv[2], argv[3], argv[4]);
	if (argc == 5 && !strcmp(argv[1], "rate")) {
		struct via v = { 0 };
		return rate(argv[2], argv[3], atof(argv[4]), &v);
	}
	if ((argc == 8 || argc == 9 || argc == 10) && !strcmp(argv[1], "rate")) {
		struct via v = { .kind = argv[5], .proxy = addr_of(argv[6], argv[7]),
				 .resume = argc == 10 && !strcmp(argv[9], "resume") };
		if (!strcmp(v.kind, "https")) {
			v.tls = SSL_CTX_new(TLS_client_method());
			if (!v.tls || argc < 9 || (argc == 10 && !v.resume) ||
			    SSL_CTX_load_verify_locations(v.tls, argv[8], NULL) != 1)
				return 2;
			SSL_CTX_set_verify(v.tls, SSL_VERIFY_PEER, NULL);
			if (v.resume)   /* else TLS 1.3 tickets are ignored; not stored: SSL_free() would spoil them */
				SSL_CTX_set_session_cache_mode(v.tls, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
		}
		return rate(argv[2], argv[3], atof(argv[4]), &v);
	}
	if (argc == 4 && !strcmp(argv[1], "source"))
		return source(argv[2], argv[3]);
	if (argc == 6 && !strcmp(argv[1], "hold"))
		return hold(argv[2], argv[3], atol(argv[4]), atof(argv[5]));
	if (argc == 5 && !strcmp(argv[1], "dnslat"))
		return dnslat(argv[2], argv[3], atof(argv[4]));
	fprintf(stderr, "usage: flowtool serve ADDR RATE_PORT HOLD_PORT | rate ADDR PORT SECONDS [VIA PADDR PPORT [CA [resume]]] | "
			"source ADDR PORT | "
			"hold ADDR PORT N TIMEOUT | dnslat ADDR NAME SECONDS\n");
	return 2;
}
