/* kernel.c — mstack-httpd on kernel sockets.  The server logic is conn.c's; this file only
 * accepts, moves bytes and wakes connections: a kernel socket is an httpd_io_ops backend.
 * SIGTERM/SIGINT arrive through a signalfd in the same epoll set, so stopping is just
 * another event. */
#include "kernel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define SCAN_MS    1000 /* how often deadlines are checked */
#define BACKLOG    1024

struct kconn {
	struct httpd_conn c; /* first: the epoll cookie of a connection is a struct kconn */
	int fd;
	bool want_out; /* EPOLLOUT registered: only once a write had to wait */
	/* Skipping syscalls that would say EAGAIN (as nginx does with EPOLLET): a short read
	 * means the receive queue was empty, a short send that the send buffer was full, and
	 * the kernel wakes epoll again when that changes.  After the peer's FIN has been
	 * reported no new event will come, so then reads always go to the kernel. */
	bool rx_drained, tx_full, rx_hup;
	struct kconn *prev, *next;
};

/* Listening socket and signalfd cookies: distinct addresses, never a struct kconn. */
static char listen_tag, signal_tag;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static long k_read(void *io, void *buf, size_t len)
{
	struct kconn *k = io;
	ssize_t n;

	if (k->rx_drained)
		return -EAGAIN;
	do
		n = read(k->fd, buf, len);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno != EWOULDBLOCK)
			return -errno;
		k->rx_drained = true;
		return -EAGAIN;
	}
	if (n > 0 && (size_t)n < len && !k->rx_hup)
		k->rx_drained = true;
	return (long)n;
}

static long k_writev(void *io, const struct iovec *iov, int iovcnt)
{
	struct kconn *k = io;
	struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
	size_t want = 0;
	ssize_t n;
	int i;

	if (k->tx_full)
		return -EAGAIN;
	for (i = 0; i < iovcnt; i++)
		want += iov[i].iov_len;
	do
		n = sendmsg(k->fd, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno != EWOULDBLOCK)
			return -errno;
		k->tx_full = true;
		return -EAGAIN;
	}
	if ((size_t)n < want)
		k->tx_full = true;
	return (long)n;
}

static int k_shutdown_write(void *io)
{
	struct kconn *k = io;

	return shutdown(k->fd, SHUT_WR) < 0 ? -errno : 0;
}

static const struct httpd_io_ops kernel_ops = {
	.read = k_read,
	.writev = k_writev,
	.shutdown_write = k_shutdown_write,
};

struct kserver {
	struct httpd_server *srv;
	int ep, lfd, sfd;
	unsigned nconns, max_conns;
	bool accept_paused;
	struct kconn *conns; /* all open connections, for deadlines and the final close */
	struct kconn *spare; /* released connections kept for reuse (no malloc per accept) */
	unsigned nspare;
};

#define MAX_SPARE 256

static void conn_release(struct kserver *ks, struct kconn *k)
{
	/* close() removes the fd from the epoll set */
	close(k->fd);
	if (k->prev)
		k->prev->next = k->next;
	else
		ks->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	ks->nconns--;
	if (ks->nspare < MAX_SPARE) {
		k->next = ks->spare;
		ks->spare = k;
		ks->nspare++;
	} else {
		free(k);
	}
}

static struct kconn *conn_alloc(struct kserver *ks)
{
	struct kconn *k = ks->spare;

	if (!k)
		return malloc(sizeof(*k));
	ks->spare = k->next;
	ks->nspare--;
	return k;
}

static void accept_all(struct kserver *ks, uint64_t now)
{
	for (;;) {
		struct epoll_event ev;
		struct kconn *k;
		int one = 1;
		int fd = accept4(ks->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* out of descriptors: stop accepting until the next scan instead
				 * of spinning on a readable listening socket */
				struct epoll_event lev = { .events = 0, .data.ptr = &listen_tag };
				epoll_ctl(ks->ep, EPOLL_CTL_MOD, ks->lfd, &lev);
				ks->accept_paused = true;
			}
			return;
		}
		if (ks->nconns >= ks->max_conns || !(k = conn_alloc(ks))) {
			close(fd); /* over the limit: refused at once */
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		k->fd = fd;
		k->want_out = k->rx_drained = k->tx_full = k->rx_hup = false;
		k->prev = NULL;
		httpd_conn_init(&k->c, ks->srv, &kernel_ops, k, now);
		/* Edge-triggered; adding reports input that is already there, so the request is
		 * read on that first event.  EPOLLOUT only once a response has to wait for
		 * space (most never do), saving a wake-up per connection. */
		ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
		ev.data.ptr = k;
		if (epoll_ctl(ks->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(k);
			continue;
		}
		k->next = ks->conns;
		if (ks->conns)
			ks->conns->prev = k;
		ks->conns = k;
		ks->nconns++;
	}
}

static void want_output(struct kserver *ks, struct kconn *k)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				  .data.ptr = k };

	/* kept for the connection's life: edge-triggered EPOLLOUT fires only after a write
	 * found the buffer full, so it costs nothing while responses fit */
	if (epoll_ctl(ks->ep, EPOLL_CTL_MOD, k->fd, &ev) == 0)
		k->want_out = true;
}

static void scan_deadlines(struct kserver *ks, uint64_t now)
{
	struct kconn *k = ks->conns, *next;

	for (; k; k = next) {
		next = k->next;
		if (httpd_conn_on_timer(&k->c, now) == HTTPD_CONN_DONE)
			conn_release(ks, k);
	}
	if (ks->accept_paused) {
		struct epoll_event lev = { .events = EPOLLIN, .data.ptr = &listen_tag };
		if (epoll_ctl(ks->ep, EPOLL_CTL_MOD, ks->lfd, &lev) == 0)
			ks->accept_paused = false;
	}
}

static int fail_errno(const char *what)
{
	int rc = -errno;

	fprintf(stderr, "mstack-httpd: %s: %s\n", what, strerror(-rc));
	return rc;
}

static int setup(struct kserver *ks, const struct httpd_kernel_opts *opts)
{
	struct sockaddr_in bound;
	socklen_t blen = sizeof(bound);
	struct epoll_event ev;
	char ip[INET_ADDRSTRLEN];
	sigset_t mask;
	int one = 1;

	ks->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ks->lfd < 0)
		return fail_errno("socket");
	setsockopt(ks->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ks->lfd, (const struct sockaddr *)&opts->listen, sizeof(opts->listen)) < 0 ||
	    listen(ks->lfd, BACKLOG) < 0 ||
	    getsockname(ks->lfd, (struct sockaddr *)&bound, &blen) < 0) {
		int rc = -errno;
		inet_ntop(AF_INET, &opts->listen.sin_addr, ip, sizeof(ip));
		fprintf(stderr, "mstack-httpd: cannot listen on %s:%u: %s\n", ip,
			ntohs(opts->listen.sin_port), strerror(-rc));
		return rc;
	}
	ks->ep = epoll_create1(EPOLL_CLOEXEC);
	if (ks->ep < 0)
		return fail_errno("epoll_create1");
	ev.events = EPOLLIN;
	ev.data.ptr = &listen_tag;
	if (epoll_ctl(ks->ep, EPOLL_CTL_ADD, ks->lfd, &ev) < 0)
		return fail_errno("epoll_ctl");

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
		return fail_errno("sigprocmask");
	ks->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (ks->sfd < 0)
		return fail_errno("signalfd");
	ev.events = EPOLLIN;
	ev.data.ptr = &signal_tag;
	if (epoll_ctl(ks->ep, EPOLL_CTL_ADD, ks->sfd, &ev) < 0)
		return fail_errno("epoll_ctl");

	inet_ntop(AF_INET, &bound.sin_addr, ip, sizeof(ip));
	if (opts->ready) {
		fprintf(opts->ready, "listening %s:%u\nready\n", ip, ntohs(bound.sin_port));
		fflush(opts->ready);
	}
	return 0;
}

int httpd_kernel_serve(struct httpd_server *srv, const struct httpd_kernel_opts *opts)
{
	struct kserver ks = { .srv = srv, .ep = -1, .lfd = -1, .sfd = -1,
			      .max_conns = opts->max_conns };
	struct epoll_event evs[MAX_EVENTS];
	uint64_t next_scan;
	bool stop = false;
	int rc;

	signal(SIGPIPE, SIG_IGN);
	rc = setup(&ks, opts);
	next_scan = now_ms() + SCAN_MS;
	while (rc == 0 && !stop) {
		uint64_t now = now_ms();
		int n, i, timeout = now >= next_scan ? 0 : (int)(next_scan - now);

		n = epoll_wait(ks.ep, evs, MAX_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = fail_errno("epoll_wait");
			break;
		}
		now = now_ms();
		httpd_server_set_time(srv, (long long)time(NULL));
		for (i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			struct kconn *k;
			enum httpd_conn_status st;

			if (p == &listen_tag) {
				accept_all(&ks, now);
				continue;
			}
			if (p == &signal_tag) {
				stop = true;
				continue;
			}
			k = p;
			if (evs[i].events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
				k->rx_hup = true;
			if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
				k->rx_drained = false;
			if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
				k->tx_full = false;
			/* one run does both directions: read, write and linger all loop to EAGAIN */
			if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
				st = httpd_conn_on_readable(&k->c, now);
			else
				st = httpd_conn_on_writable(&k->c, now);
			if (st == HTTPD_CONN_DONE)
				conn_release(&ks, k);
			else if (!k->want_out && httpd_conn_wants_write(&k->c))
				want_output(&ks, k);
		}
		if (now >= next_scan) {
			scan_deadlines(&ks, now);
			next_scan = now + SCAN_MS;
		}
	}
	while (ks.conns)
		conn_release(&ks, ks.conns);
	while (ks.spare) {
		struct kconn *k = ks.spare;
		ks.spare = k->next;
		free(k);
	}
	if (ks.sfd >= 0)
		close(ks.sfd);
	if (ks.lfd >= 0)
		close(ks.lfd);
	if (ks.ep >= 0)
		close(ks.ep);
	return rc;
}
