/* autocork_probe — servers for tests/system/test_shim_autocork.py, run under libmstack.so on a
 * listed listener: how the shim's autocorking shapes what they send, and that nothing it holds
 * gets stuck when the program blocks where the shim cannot see it.
 *
 *   autocork_probe MODE IP PORT N
 *
 * Every mode prints "ready" once its listener is in the listen group, serves N connections (or
 * N requests), prints "served N" and exits 0; any failure exits 1 with a line saying why.  A
 * request is anything up to "\r\n\r\n"; a response is a 41-byte head then a 1000-byte body,
 * written by two calls, as nginx writes its head and its file.
 *
 *   close      epoll loop, non-blocking sockets, TCP_NODELAY (nginx's way): head, body, close
 *   keepalive  the same, but the connection stays for the next request (the client closes)
 *   sleep      blocking: request, response, then nanosleep(1.5 s) before closing
 *   kread      blocking: request, response, then a blocking read of a kernel socket (AF_UNIX,
 *              1.5 s timeout) before closing
 *   futex      a worker thread reads the request and writes the response, then waits on a
 *              condition variable (a futex) that the main thread — blocked in epoll_wait on
 *              the listener meanwhile — signals 1.5 s later
 *   pingpong   blocking, TCP_NODELAY: 64-byte messages echoed until the client closes */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
#define BODY_LEN 1000
#define HOLD_MS 1500

static char body[BODY_LEN];

static void die(const char *what)
{
	printf("error %s: %s\n", what, strerror(errno));
	fflush(stdout);
	exit(1);
}

static int listener(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct pollfd pf;
	int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);

	if (ls < 0 || inet_pton(AF_INET, ip, &a.sin_addr) != 1)
		die("socket");
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 64))
		die("bind/listen");
	/* a wait on the listener puts this process's port in its listen group */
	pf.fd = ls;
	pf.events = POLLIN;
	poll(&pf, 1, 0);
	printf("ready\n");
	fflush(stdout);
	return ls;
}

static void nodelay(int fd)
{
	int one = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)))
		die("TCP_NODELAY");
}

/* The response in two calls: the head, then the body. */
static void respond(int fd)
{
	if (write(fd, HEAD, strlen(HEAD)) != (ssize_t)strlen(HEAD))
		die("write head");
	if (write(fd, body, BODY_LEN) != BODY_LEN)
		die("write body");
}

/* Blocking: read until the end of a request; 0 at end of stream. */
static int read_request(int fd)
{
	char buf[4096];
	size_t have = 0;

	for (;;) {
		ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);

		if (r < 0)
			die("read request");
		if (r == 0)
			return 0;
		have += (size_t)r;
		buf[have] = 0;
		if (strstr(buf, "\r\n\r\n"))
			return 1;
		if (have == sizeof(buf) - 1)
			die("request too long");
	}
}

/* ---- close, keepalive: an epoll loop as nginx's ---- */

struct conn {
	int fd;
	char buf[4096];
	size_t have;
};

static void serve_epoll(int ls, int n, int keep)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL }, evs[64];
	int ep = epoll_create1(0), served = 0;

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev))
		die("epoll");
	if (fcntl(ls, F_SETFL, fcntl(ls, F_GETFL) | O_NONBLOCK))
		die("O_NONBLOCK");
	while (served < n) {
		int k = epoll_wait(ep, evs, 64, 20000);

		if (k <= 0)
			die("epoll_wait (no client for 20 s)");
		for (int i = 0; i < k; i++) {
			struct conn *c = evs[i].data.ptr;

			if (!c) {
				int fd;

				while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					struct epoll_event e = { .events = EPOLLIN };

					nodelay(fd);
					c = calloc(1, sizeof(*c));
					if (!c)
						die("calloc");
					c->fd = fd;
					e.data.ptr = c;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e))
						die("epoll_ctl");
				}
				if (errno != EAGAIN)
					die("accept4");
				continue;
			}
			for (;;) {
				ssize_t r = read(c->fd, c->buf + c->have, sizeof(c->buf) - 1 - c->have);
				char *end;

				if (r < 0 && errno == EAGAIN)
					break;
				if (r <= 0) { /* the client closed (keepalive) */
					if (r < 0)
						die("read");
					close(c->fd);
					free(c);
					break;
				}
				c->have += (size_t)r;
				c->buf[c->have] = 0;
				end = strstr(c->buf, "\r\n\r\n");
				if (!end)
					continue;
				c->have = 0;
				respond(c->fd);
				served++;
				if (!keep) {
					close(c->fd);
					free(c);
					break;
				}
			}
		}
	}
	/* keepalive: the client closes after its last response; wait for that */
	if (keep) {
		int k = epoll_wait(ep, evs, 64, 5000);

		for (int i = 0; i < k; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c) {
				close(c->fd);
				free(c);
			}
		}
	}
	close(ep);
}

/* ---- sleep, kread, futex: the program blocks where the shim does not look ---- */

static void hold_sleep(void)
{
	struct timespec ts = { .tv_sec = HOLD_MS / 1000, .tv_nsec = (HOLD_MS % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void hold_kread(void)
{
	struct timeval tv = { .tv_sec = HOLD_MS / 1000, .tv_usec = (HOLD_MS % 1000) * 1000 };
	int sv[2];
	char b;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair");
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (read(sv[0], &b, 1) >= 0 || errno != EAGAIN)
		die("kernel read did not time out");
	close(sv[0]);
	close(sv[1]);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int released;

static void *futex_worker(void *arg)
{
	int fd = *(int *)arg;

	if (!read_request(fd))
		die("no request");
	respond(fd);
	pthread_mutex_lock(&mu);
	while (!released)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void serve_blocking(int ls, int n, const char *mode)
{
	for (int i = 0; i < n; i++) {
		int fd = accept(ls, NULL, NULL);

		if (fd < 0)
			die("accept");
		nodelay(fd);
		if (!strcmp(mode, "futex")) {
			struct epoll_event ev = { .events = EPOLLIN }, out;
			int ep = epoll_create1(0);
			pthread_t t;

			released = 0;
			if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev))
				die("epoll");
			if (pthread_create(&t, NULL, futex_worker, &fd))
				die("pthread_create");
			/* blocked in the shim's epoll while the worker sends and then waits */
			if (epoll_wait(ep, &out, 1, HOLD_MS) != 0)
				die("epoll_wait on the listener returned an event");
			pthread_mutex_lock(&mu);
			released = 1;
			pthread_cond_signal(&cv);
			pthread_mutex_unlock(&mu);
			pthread_join(t, NULL);
			close(ep);
		} else {
			if (!read_request(fd))
				die("no request");
			respond(fd);
			if (!strcmp(mode, "sleep"))
				hold_sleep();
			else
				hold_kread();
		}
		close(fd);
	}
}

static void serve_pingpong(int ls, int n)
{
	for (int i = 0; i < n; i++) {
		int fd = accept(ls, NULL, NULL);
		char m[64];

		if (fd < 0)
			die("accept");
		nodelay(fd);
		for (;;) {
			size_t have = 0;

			while (have < sizeof(m)) {
				ssize_t r = read(fd, m + have, sizeof(m) - have);

				if (r < 0)
					die("read");
				if (r == 0)
					break;
				have += (size_t)r;
			}
			if (have == 0)
				break;
			if (have < sizeof(m))
				die("short message");
			if (write(fd, m, sizeof(m)) != (ssize_t)sizeof(m))
				die("write");
		}
		close(fd);
	}
}

int main(int argc, char **argv)
{
	const char *mode;
	int ls, n;

	if (argc != 5) {
		fprintf(stderr, "usage: autocork_probe MODE IP PORT N\n");
		return 2;
	}
	mode = argv[1];
	n = atoi(argv[4]);
	memset(body, 'b', sizeof(body));
	ls = listener(argv[2], atoi(argv[3]));
	if (!strcmp(mode, "close") || !strcmp(mode, "keepalive"))
		serve_epoll(ls, n, !strcmp(mode, "keepalive"));
	else if (!strcmp(mode, "sleep") || !strcmp(mode, "kread") || !strcmp(mode, "futex"))
		serve_blocking(ls, n, mode);
	else if (!strcmp(mode, "pingpong"))
		serve_pingpong(ls, n);
	else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	close(ls);
	printf("served %d\n", n);
	fflush(stdout);
	return 0;
}
