/* thread_stress — one process, many threads on one UTCP stack (issue 6: "threads share a
 * process's stack safely"). tests/system/test_shim_threads.py runs it under libmstack.so with
 * remote clients hammering its listener; it checks every byte and reports what it saw as one
 * JSON line on stdout (errors also as "ERROR: ..." lines on stderr; exit status 1 if any).
 *
 * Served connections carry a header (u32 length, u32 crc32 of the payload, little endian), the
 * payload, which is echoed back as it arrives, then a 4-byte trailer "OK!!" (crc matched) or
 * "BAD!". Accepted connections go round-robin to six ways of serving: a blocking pool, the
 * same pool through dup/dup2'ed descriptors, an epoll instance with EPOLLONESHOT re-armed by
 * another thread, an edge-triggered epoll instance, a poll thread and a select thread (both
 * over UTCP connections, a pipe and the kernel connections of a local client: mixed sets).
 * Beside them: two threads blocked in accept() on the one listener, outgoing connections to a
 * listed echo server (with a receiving thread per connection, dup2 over a live connection),
 * close() of a socket while another thread waits on it in epoll_wait/poll, and shutdown() from
 * another thread under a blocked recv().
 *
 *   thread_stress --listen IP:PORT --echo IP:PORT [--secs S]
 *   thread_stress --echo IP:PORT [--listen IP:PORT] --only WHAT [--rounds N]
 *     WHAT: shutdown, churn, epoll-first-add or listener-shutdown (one part on its own)
 *
 * Reads "stop" on stdin (or the time limit) to finish: every thread is joined, every
 * descriptor closed, and the descriptor count compared with the one after the first listen. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STOP_LEN 0xffffffffu /* a header length that only says "wake up" */
#define MAX_ERR_LINES 40
#define MAX_THREADS 64

enum mode { M_BLOCK, M_DUP, M_ONESHOT, M_ET, M_POLL, M_SELECT, M_N };
static const char *mode_name[M_N] = { "blocking", "dup", "epoll_oneshot", "epoll_et", "poll",
				      "select" };

static struct {
	struct sockaddr_in listen, echo;
	double secs;
	const char *only;
	int rounds;
} cfg = { .secs = 120, .rounds = 20 };

static atomic_int stopping;   /* no new work: threads finish what they hold */
static atomic_int draining;   /* acceptors are gone: workers leave once idle */
static uint64_t drain_deadline_us;

static atomic_long n_errors, n_err_lines;
static atomic_long served[M_N], served_bytes, local_ok, out_ok, out_bytes, out_threads,
	dup2_live, cw_closes, cw_events, cw_polls, shut_ok, shut_late, churn_threads,
	accepted_kernel, accepted_total;
static atomic_long active[M_N];

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void err_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void err_msg(const char *fmt, ...)
{
	va_list ap;
	char msg[300];

	atomic_fetch_add(&n_errors, 1);
	if (atomic_fetch_add(&n_err_lines, 1) >= MAX_ERR_LINES)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ERROR: %s\n", msg);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	char msg[300];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "note: %s\n", msg);
}

static void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own */
}

/* ---- bytes: crc32 (zlib's) and a per-thread pattern ---- */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill(uint8_t *buf, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = rnd(&seed);
		memcpy(buf + i, &v, n - i < 8 ? n - i : 8);
	}
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- threads ---- */

static pthread_t threads[MAX_THREADS];
static const char *thread_names[MAX_THREADS];
static int n_threads;

static void spawn(const char *name, void *(*fn)(void *), void *arg)
{
	int rc;

	if (n_threads == MAX_THREADS) {
		err_msg("too many threads");
		return;
	}
	rc = pthread_create(&threads[n_threads], NULL, fn, arg);
	if (rc) {
		err_msg("pthread_create %s: %s", name, strerror(rc));
		return;
	}
	thread_names[n_threads++] = name;
}

/* ---- served connections ---- */

struct conn {
	int fd;
	enum mode mode;
	uint8_t hdr[8];
	unsigned hdr_got;
	uint32_t len, crc_want, crc;
	uint64_t in;
	uint8_t buf[32768];
	size_t off, n;          /* echo still to send: buf[off, n) */
	uint8_t trailer[4];
	unsigned tr_sent;       /* 0..4; trailer set once the payload is in */
	bool tr_set;
	short want;             /* POLLIN or POLLOUT: what it waits for */
	struct conn *next;      /* queues */
};

static void conn_close(struct conn *c)
{
	if (close(c->fd))
		err_msg("close(%d) of a served connection: %s", c->fd, strerror(errno));
	atomic_fetch_sub(&active[c->mode], 1);
	free(c);
}

/* Move a connection on until it would block (c->want says on what), it is done (1) or it
 * failed (-1, reported). A blocking descriptor only returns when done or failed. */
static int conn_step(struct conn *c)
{
	for (;;) {
		ssize_t r;

		if (c->off < c->n) {
			r = send(c->fd, c->buf + c->off, c->n - c->off, MSG_NOSIGNAL);
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				c->want = POLLOUT;
				return 0;
			}
			if (r <= 0) {
				err_msg("%s: send of the echo (%llu of %u in): %s", mode_name[c->mode],
				      (unsigned long long)c->in, c->len, strerror(errno));
				return -1;
			}
			c->off += (size_t)r;
			continue;
		}
		if (c->hdr_got < 8) {
			r = recv(c->fd, c->hdr + c->hdr_got, 8 - c->hdr_got, 0);
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				c->want = POLLIN;
				return 0;
			}
			if (r <= 0) {
				err_msg("%s: recv of the header (%u of 8): %s", mode_name[c->mode],
				      c->hdr_got, r ? strerror(errno) : "end of stream");
				return -1;
			}
			c->hdr_got += (unsigned)r;
			if (c->hdr_got == 8) {
				c->len = get32(c->hdr);
				c->crc_want = get32(c->hdr + 4);
				if (c->len == STOP_LEN)
					return 1;
			}
			continue;
		}
		if (c->in < c->len) {
			size_t want = c->len - c->in < sizeof(c->buf) ? c->len - c->in : sizeof(c->buf);

			r = recv(c->fd, c->buf, want, 0);
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				c->want = POLLIN;
				return 0;
			}
			if (r <= 0) {
				err_msg("%s: recv of the payload (%llu of %u): %s", mode_name[c->mode],
				      (unsigned long long)c->in, c->len,
				      r ? strerror(errno) : "end of stream");
				return -1;
			}
			c->crc = crc32_update(c->crc, c->buf, (size_t)r);
			c->in += (uint64_t)r;
			c->off = 0;
			c->n = (size_t)r;
			continue;
		}
		if (!c->tr_set) {
			c->tr_set = true;
			if (c->crc != c->crc_want)
				err_msg("%s: payload of %u bytes: crc32 %08x, the client sent %08x",
				      mode_name[c->mode], c->len, c->crc, c->crc_want);
			memcpy(c->trailer, c->crc == c->crc_want ? "OK!!" : "BAD!", 4);
		}
		if (c->tr_sent < 4) {
			r = send(c->fd, c->trailer + c->tr_sent, 4 - c->tr_sent, MSG_NOSIGNAL);
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				c->want = POLLOUT;
				return 0;
			}
			if (r <= 0) {
				err_msg("%s: send of the trailer: %s", mode_name[c->mode], strerror(errno));
				return -1;
			}
			c->tr_sent += (unsigned)r;
			continue;
		}
		atomic_fetch_add(&served[c->mode], 1);
		atomic_fetch_add(&served_bytes, c->len);
		return 1;
	}
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		err_msg("fcntl O_NONBLOCK on %d: %s", fd, strerror(errno));
	else if (!(fcntl(fd, F_GETFL) & O_NONBLOCK))
		err_msg("fd %d: O_NONBLOCK set but F_GETFL does not report it", fd);
}

/* A queue of connections (the blocking pool's work, the re-arm requests). */
struct queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct conn *head, *tail;
};

#define QUEUE_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL }

static void q_push(struct queue *q, struct conn *c)
{
	pthread_mutex_lock(&q->mu);
	c->next = NULL;
	if (q->tail)
		q->tail->next = c;
	else
		q->head = c;
	q->tail = c;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

/* Waits up to ms; NULL when empty. */
static struct conn *q_pop(struct queue *q, unsigned ms)
{
	struct conn *c;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)ms * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&q->mu);
	while (!q->head && pthread_cond_timedwait(&q->cv, &q->mu, &ts) == 0)
		;
	c = q->head;
	if (c) {
		q->head = c->next;
		if (!q->head)
			q->tail = NULL;
	}
	pthread_mutex_unlock(&q->mu);
	return c;
}

static struct queue work_q = QUEUE_INIT, rearm_q = QUEUE_INIT;
/* Workers wait without a timeout (a lost wake-up stalls a connection, which the client sees);
 * wake_fd, a kernel eventfd in every set, is written once at the drain and stays readable.
 * ep_outer holds ep_et (an epoll inside an epoll) and wake_fd. */
static int ep_oneshot = -1, ep_et = -1, ep_outer = -1, wake_fd = -1;
static char wake_mark;
static int poll_pipe[2] = { -1, -1 }, select_pipe[2] = { -1, -1 };

/* A worker leaves when the acceptors are gone and its mode holds no connection, or at the
 * drain deadline (what it still holds is then an error). */
static bool worker_done(enum mode m)
{
	if (!atomic_load(&draining))
		return false;
	if (atomic_load(&active[m]) == 0)
		return true;
	if (now_us() > drain_deadline_us) {
		err_msg("%s: %ld connection(s) still open at the drain deadline", mode_name[m],
		      atomic_load(&active[m]));
		return true;
	}
	return false;
}

/* The dup dance: the connection goes on through other descriptors of the same socket,
 * a kernel descriptor is replaced by it (dup2), a live one by itself. */
static int dup_dance(int a)
{
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	int d, x, e;

	d = dup(a);
	if (d < 0) {
		err_msg("dup: %s", strerror(errno));
		return a;
	}
	if (close(a))
		err_msg("close of the original after dup: %s", strerror(errno));
	x = socket(AF_INET, SOCK_STREAM, 0);
	if (x < 0 || dup2(d, x) != x) {
		err_msg("dup2 over a kernel socket: %s", strerror(errno));
		if (x >= 0)
			close(x);
		return d;
	}
	e = fcntl(x, F_DUPFD_CLOEXEC, 0);
	if (e < 0) {
		err_msg("F_DUPFD_CLOEXEC: %s", strerror(errno));
		close(x);
		return d;
	}
	if (dup2(e, d) != d) /* over a live descriptor of the same connection */
		err_msg("dup2 over a live descriptor: %s", strerror(errno));
	if (close(x) || close(e))
		err_msg("close of a dup: %s", strerror(errno));
	if (getpeername(d, (struct sockaddr *)&peer, &plen))
		err_msg("getpeername after the dups: %s", strerror(errno));
	return d;
}

static void *pool_main(void *arg)
{
	(void)arg;
	while (!worker_done(M_BLOCK) || !worker_done(M_DUP)) {
		struct conn *c = q_pop(&work_q, 100);

		if (!c)
			continue;
		if (c->mode == M_DUP)
			c->fd = dup_dance(c->fd);
		(void)conn_step(c); /* blocking descriptor: done or failed */
		conn_close(c);
	}
	return NULL;
}

/* epoll_wait for up to 16 events; an error other than EINTR is reported (what: which wait). */
static int wait16(int ep, struct epoll_event ev[16], int timeout, const char *what)
{
	int n = epoll_wait(ep, ev, 16, timeout);

	if (n < 0 && errno != EINTR)
		err_msg("epoll_wait (%s): %s", what, strerror(errno));
	return n;
}

static void rearm(struct conn *c)
{
	struct epoll_event ev = { .events = (uint32_t)c->want | EPOLLONESHOT | EPOLLRDHUP,
				  .data.ptr = c };

	if (epoll_ctl(ep_oneshot, EPOLL_CTL_MOD, c->fd, &ev)) {
		err_msg("EPOLL_CTL_MOD re-arm of %d: %s", c->fd, strerror(errno));
		conn_close(c);
	}
}

/* EPOLLONESHOT: each event goes to one of two waiting threads; the connection is re-armed by
 * the re-arm thread, never by the thread that handled it. */
static void *oneshot_main(void *arg)
{
	struct epoll_event ev[16];

	(void)arg;
	while (!worker_done(M_ONESHOT)) {
		int n = wait16(ep_oneshot, ev, -1, "oneshot");

		for (int i = 0; i < n; i++) {
			struct conn *c = ev[i].data.ptr;
			int r;

			if (!c || ev[i].data.ptr == &wake_mark)
				continue; /* the held connection, the drain */
			r = conn_step(c);

			if (r)
				conn_close(c);
			else
				q_push(&rearm_q, c);
		}
	}
	return NULL;
}

static void *rearm_main(void *arg)
{
	(void)arg;
	while (!worker_done(M_ONESHOT) || rearm_q.head) {
		struct conn *c = q_pop(&rearm_q, 100);

		if (c)
			rearm(c);
	}
	return NULL;
}

/* EPOLLET: registered once for both directions; each edge is drained until EAGAIN. The
 * thread waits on the outer instance, which reports the inner one readable. */
static void *et_main(void *arg)
{
	struct epoll_event ev[16];

	(void)arg;
	while (!worker_done(M_ET)) {
		int n = wait16(ep_outer, ev, -1, "outer");

		for (int i = 0; i < n; i++)
			if (ev[i].data.ptr != &wake_mark && ev[i].data.ptr != &ep_et)
				err_msg("outer epoll: data %p was never registered", ev[i].data.ptr);
		n = wait16(ep_et, ev, 0, "edge");
		for (int i = 0; i < n; i++) {
			struct conn *c = ev[i].data.ptr;

			if (c && conn_step(c))
				conn_close(c);
		}
	}
	return NULL;
}

#define SET_MAX 512

/* The set of a poll or select thread, cs[0..n): connection i had an event; one that is done
 * is closed and leaves the set (the last takes its place). */
static void set_step(struct conn **cs, int *n, int i)
{
	if (conn_step(cs[i])) {
		conn_close(cs[i]);
		cs[i] = cs[--*n];
	}
}

/* Adds the connections the dispatcher wrote to the pipe (read end rd); `who` names the thread. */
static void set_take(struct conn **cs, int *n, int rd, const char *who)
{
	struct conn *c;

	while (read(rd, &c, sizeof(c)) == (ssize_t)sizeof(c)) {
		if (*n == SET_MAX) {
			err_msg("%s thread: more than %d connections", who, SET_MAX);
			conn_close(c);
			continue;
		}
		cs[(*n)++] = c;
	}
}

static void set_close(struct conn **cs, int n)
{
	for (int i = 0; i < n; i++)
		conn_close(cs[i]);
}

/* poll over the pipe that hands connections over (kernel) and the connections (UTCP, and
 * the local client's kernel ones). */
static void *poll_main(void *arg)
{
	struct conn *cs[SET_MAX];
	struct pollfd pf[SET_MAX + 2];
	int n = 0;

	(void)arg;
	while (!worker_done(M_POLL)) {
		int r;

		pf[0].fd = poll_pipe[0];
		pf[0].events = POLLIN;
		for (int i = 0; i < n; i++) {
			pf[i + 1].fd = cs[i]->fd;
			pf[i + 1].events = cs[i]->want | POLLRDHUP;
		}
		pf[n + 1].fd = wake_fd;
		pf[n + 1].events = POLLIN;
		r = poll(pf, (nfds_t)n + 2, -1);
		if (r < 0) {
			if (errno != EINTR)
				err_msg("poll: %s", strerror(errno));
			continue;
		}
		for (int i = n - 1; i >= 0; i--) {
			short re = pf[i + 1].revents;

			if (!re)
				continue;
			if (re & POLLNVAL) {
				err_msg("poll: POLLNVAL on a live connection (fd %d)", cs[i]->fd);
				continue;
			}
			set_step(cs, &n, i);
		}
		if (pf[0].revents & POLLIN)
			set_take(cs, &n, poll_pipe[0], "poll");
	}
	set_close(cs, n);
	return NULL;
}

/* The same with select (descriptors below FD_SETSIZE only: the dispatcher sends others to
 * the poll thread). */
static void *select_main(void *arg)
{
	struct conn *cs[SET_MAX];
	int n = 0;

	(void)arg;
	while (!worker_done(M_SELECT)) {
		fd_set rd, wr;
		int hi = select_pipe[0] > wake_fd ? select_pipe[0] : wake_fd, r;

		FD_ZERO(&rd);
		FD_ZERO(&wr);
		FD_SET(select_pipe[0], &rd);
		FD_SET(wake_fd, &rd);
		for (int i = 0; i < n; i++) {
			FD_SET(cs[i]->fd, cs[i]->want == POLLOUT ? &wr : &rd);
			if (cs[i]->fd > hi)
				hi = cs[i]->fd;
		}
		r = select(hi + 1, &rd, &wr, NULL, NULL);
		if (r < 0) {
			if (errno != EINTR)
				err_msg("select: %s", strerror(errno));
			continue;
		}
		for (int i = n - 1; i >= 0; i--) {
			if (!FD_ISSET(cs[i]->fd, &rd) && !FD_ISSET(cs[i]->fd, &wr))
				continue;
			set_step(cs, &n, i);
		}
		if (FD_ISSET(select_pipe[0], &rd))
			set_take(cs, &n, select_pipe[0], "select");
	}
	set_close(cs, n);
	return NULL;
}

static atomic_uint dispatch_n;

static void dispatch(int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	enum mode m = (enum mode)(atomic_fetch_add(&dispatch_n, 1) % M_N);
	struct epoll_event ev = { .data.ptr = c };
	int p;

	if (!c) {
		err_msg("out of memory");
		close(fd);
		return;
	}
	if (m == M_SELECT && fd >= FD_SETSIZE)
		m = M_POLL;
	c->fd = fd;
	c->mode = m;
	c->want = POLLIN;
	atomic_fetch_add(&active[m], 1);
	switch (m) {
	case M_BLOCK:
	case M_DUP:
		q_push(&work_q, c);
		return;
	case M_ONESHOT:
	case M_ET:
		set_nonblock(fd);
		ev.events = m == M_ET ? EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
				      : EPOLLIN | EPOLLRDHUP | EPOLLONESHOT;
		if (epoll_ctl(m == M_ET ? ep_et : ep_oneshot, EPOLL_CTL_ADD, fd, &ev)) {
			err_msg("EPOLL_CTL_ADD of %d: %s", fd, strerror(errno));
			conn_close(c);
		}
		return;
	case M_POLL:
	case M_SELECT:
		set_nonblock(fd);
		p = m == M_POLL ? poll_pipe[1] : select_pipe[1];
		if (write(p, &c, sizeof(c)) != (ssize_t)sizeof(c)) {
			err_msg("hand-over pipe: %s", strerror(errno));
			conn_close(c);
		}
		return;
	case M_N:
		break;
	}
}

static int listen_fd = -1;

/* Two of these block in accept() on the one listener at the same time. */
static void *acceptor_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct sockaddr_in peer;
		socklen_t plen = sizeof(peer);
		int fd = accept(listen_fd, (struct sockaddr *)&peer, &plen);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			err_msg("accept: %s", strerror(errno));
			return NULL;
		}
		if (plen != sizeof(peer) || peer.sin_family != AF_INET || !peer.sin_port)
			err_msg("accept: peer address length %u family %u", plen, peer.sin_family);
		if (atomic_load(&stopping)) { /* the wake-up connection of the stop */
			close(fd);
			return NULL;
		}
		atomic_fetch_add(&accepted_total, 1);
		if (peer.sin_addr.s_addr == cfg.listen.sin_addr.s_addr)
			atomic_fetch_add(&accepted_kernel, 1);
		dispatch(fd);
	}
}

/* ---- the client side ---- */

static int connect_to(const struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		err_msg("socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa))) {
		err_msg("connect to %s:%u: %s", inet_ntoa(sa->sin_addr), ntohs(sa->sin_port),
		      strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Close first without TIME-WAIT (a reset): the stack's leased local ports are few. */
static void close_abort(int fd)
{
	struct linger lg = { 1, 0 };

	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)))
		err_msg("SO_LINGER: %s", strerror(errno));
	if (close(fd))
		err_msg("close: %s", strerror(errno));
}

/* The echo server's protocol: a u32 length, then that many bytes, echoed; it closes first
 * (so that our side never holds a leased port in TIME-WAIT). */
static size_t echo_request(uint8_t *out, size_t n, uint64_t seed)
{
	put32(out, (uint32_t)n);
	fill(out + 4, n, seed);
	return 4 + n;
}

/* Send `out` (n bytes) and read back `expect` bytes (the echo, a trailer) then the end of
 * stream, interleaved with poll on a non-blocking descriptor. 0 or -1 (reported). */
static int exchange(int fd, const uint8_t *out, size_t n, const uint8_t *expect, size_t m,
		    const char *what)
{
	uint8_t buf[16384];
	size_t sent = 0, got = 0;
	uint64_t deadline = now_us() + 30000000u;

	set_nonblock(fd);
	for (;;) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (sent < n)
			pf.events |= POLLOUT;
		if (now_us() > deadline) {
			err_msg("%s: no progress in 30 s (sent %zu of %zu, got %zu of %zu)", what,
			      sent, n, got, m);
			return -1;
		}
		if (poll(&pf, 1, 1000) < 0 && errno != EINTR) {
			err_msg("%s: poll: %s", what, strerror(errno));
			return -1;
		}
		if (sent < n && (pf.revents & (POLLOUT | POLLERR))) {
			r = send(fd, out + sent, n - sent, MSG_NOSIGNAL);
			if (r < 0 && errno != EAGAIN) {
				err_msg("%s: send: %s", what, strerror(errno));
				return -1;
			}
			if (r > 0)
				sent += (size_t)r;
		}
		if (!(pf.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		r = recv(fd, buf, sizeof(buf), 0);
		if (r < 0 && errno == EAGAIN)
			continue;
		if (r < 0) {
			err_msg("%s: recv: %s", what, strerror(errno));
			return -1;
		}
		if (r == 0) {
			if (got != m || sent != n) {
				err_msg("%s: end of stream after %zu of %zu bytes (sent %zu of %zu)",
				      what, got, m, sent, n);
				return -1;
			}
			return 0;
		}
		if (got + (size_t)r > m || memcmp(buf, expect + got, (size_t)r)) {
			err_msg("%s: echoed bytes %zu..%zu differ from what was sent", what, got,
			      got + (size_t)r);
			return -1;
		}
		got += (size_t)r;
	}
}

/* A local client (kernel connections through the shadow listener: mixed sets). */
static void *local_client_main(void *arg)
{
	uint64_t seed = 0x10ca1;
	uint8_t *out = malloc(8 + 65536 + 4), *exp = malloc(65536 + 4);

	(void)arg;
	while (out && exp && !atomic_load(&stopping)) {
		uint32_t n = (uint32_t)(rnd(&seed) % 65536);
		int fd = connect_to(&cfg.listen);

		if (fd < 0)
			break;
		fill(out + 8, n, rnd(&seed));
		put32(out, n);
		put32(out + 4, crc32_update(0, out + 8, n));
		memcpy(exp, out + 8, n);
		memcpy(exp + n, "OK!!", 4);
		if (exchange(fd, out, 8 + n, exp, n + 4, "local client") == 0)
			atomic_fetch_add(&local_ok, 1);
		close(fd);
		msleep(20);
	}
	free(out);
	free(exp);
	return NULL;
}

/* Thread per connection: the receiving side of an outgoing connection in a thread of its own,
 * blocking recv. */
struct rx {
	int fd;
	const uint8_t *expect;
	size_t n;
	int ok;
};

static void *rx_main(void *arg)
{
	struct rx *x = arg;
	uint8_t buf[16384];
	size_t got = 0;

	for (;;) {
		ssize_t r = recv(x->fd, buf, sizeof(buf), 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err_msg("receiving thread: recv: %s", strerror(errno));
			return NULL;
		}
		if (!r)
			break;
		if (got + (size_t)r > x->n || memcmp(buf, x->expect + got, (size_t)r)) {
			err_msg("receiving thread: echoed bytes %zu..%zu differ", got, got + (size_t)r);
			return NULL;
		}
		got += (size_t)r;
	}
	x->ok = got == x->n;
	if (!x->ok)
		err_msg("receiving thread: end of stream after %zu of %zu bytes", got, x->n);
	return NULL;
}

static int out_thread_per_conn(int fd, const uint8_t *out, size_t n)
{
	struct rx x = { .fd = fd, .expect = out + 4, .n = n - 4 };
	pthread_t t;
	size_t sent = 0;
	int rc = pthread_create(&t, NULL, rx_main, &x);

	if (rc) {
		err_msg("pthread_create: %s", strerror(rc));
		return -1;
	}
	atomic_fetch_add(&out_threads, 1);
	while (sent < n) {
		ssize_t r = send(fd, out + sent, n - sent, MSG_NOSIGNAL);
		if (r <= 0) {
			err_msg("outgoing (thread per connection): send: %s", strerror(errno));
			break;
		}
		sent += (size_t)r;
	}
	pthread_join(t, NULL);
	return x.ok ? 0 : -1;
}

/* Outgoing connections to the listed echo server, one after the other, three ways. */
static void *outgoing_main(void *arg)
{
	uint64_t seed = 0x0c0ffee;
	uint8_t *out = malloc(4 + 131072);

	(void)arg;
	for (unsigned i = 0; out && !atomic_load(&stopping); i++) {
		size_t p = (size_t)(rnd(&seed) % 131072), n = echo_request(out, p, rnd(&seed));
		int fd = connect_to(&cfg.echo), rc;

		if (fd < 0)
			break;
		if (i % 3 == 0 && atomic_load(&out_threads) < 150) { /* bounded: see fd_end */
			rc = out_thread_per_conn(fd, out, n);
		} else if (i % 3 == 1) {
			/* dup2 over a live connection: fd's first connection is closed, fd then
			 * names the second one */
			int o2 = connect_to(&cfg.echo);

			struct linger lg = { 1, 0 };

			if (o2 < 0) {
				close(fd);
				break;
			}
			if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)))
				err_msg("SO_LINGER: %s", strerror(errno));
			if (dup2(o2, fd) != fd) {
				err_msg("dup2 over a live connection: %s", strerror(errno));
				close(o2);
				close(fd);
				continue;
			}
			close(o2);
			atomic_fetch_add(&dup2_live, 1);
			rc = exchange(fd, out, n, out + 4, p, "outgoing (after dup2)");
		} else {
			rc = exchange(fd, out, n, out + 4, p, "outgoing");
		}
		if (rc == 0) {
			atomic_fetch_add(&out_ok, 1);
			atomic_fetch_add(&out_bytes, p);
		}
		close(fd);
	}
	free(out);
	return NULL;
}

/* One outgoing connection held open for the whole run (the test looks at it). */
static int held_fd = -1;

static void held_open(void)
{
	uint8_t b[5] = { 2, 0, 0, 0, 'h' };

	held_fd = connect_to(&cfg.echo);
	if (held_fd >= 0 && send(held_fd, b, 5, MSG_NOSIGNAL) != 5)
		err_msg("held connection: send: %s", strerror(errno));
}

static void held_close(void)
{
	uint8_t b[2] = { 0, 0 };

	if (held_fd < 0)
		return;
	if (send(held_fd, "H", 1, MSG_NOSIGNAL) != 1)
		err_msg("held connection: send: %s", strerror(errno));
	if (recv(held_fd, b, 2, MSG_WAITALL) != 2 || memcmp(b, "hH", 2) || recv(held_fd, b, 1, 0))
		err_msg("held connection: echo %.2s, or no end of stream (%s)", b, strerror(errno));
	close(held_fd);
}

/* close() while another thread waits on the descriptor in epoll_wait or poll: the waiter
 * keeps waiting (Linux), never sees a token that was not registered, nor crashes. */
static atomic_ulong cw_next_token = 1;
static atomic_int cw_fd = -1;
static int cw_ep = -1;

static void *cw_waiter_main(void *arg)
{
	struct epoll_event ev[8];

	(void)arg;
	for (unsigned i = 0; !atomic_load(&draining); i++) {
		if (i % 2) {
			struct pollfd pf = { .fd = atomic_load(&cw_fd), .events = POLLIN };
			int r = poll(&pf, 1, 20);

			if (r < 0 && errno != EINTR)
				err_msg("poll while another thread closes: %s", strerror(errno));
			atomic_fetch_add(&cw_polls, 1);
			continue;
		}
		int n = epoll_wait(cw_ep, ev, 8, 20);

		if (n < 0 && errno != EINTR)
			err_msg("epoll_wait while another thread closes: %s", strerror(errno));
		for (int k = 0; k < n; k++) {
			uint64_t t = ev[k].data.u64;

			if (t == 0 || t >= atomic_load(&cw_next_token))
				err_msg("epoll_wait reported data %#llx, never registered",
				      (unsigned long long)t);
			atomic_fetch_add(&cw_events, 1);
		}
	}
	return NULL;
}

static void *cw_closer_main(void *arg)
{
	uint64_t seed = 0xc105e;

	(void)arg;
	while (!atomic_load(&stopping)) {
		int fd = connect_to(&cfg.echo);
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET };
		uint8_t b[4 + 64];

		if (fd < 0)
			break;
		echo_request(b, 64, rnd(&seed));
		ev.data.u64 = atomic_fetch_add(&cw_next_token, 1);
		if (epoll_ctl(cw_ep, EPOLL_CTL_ADD, fd, &ev))
			err_msg("EPOLL_CTL_ADD (close test): %s", strerror(errno));
		atomic_store(&cw_fd, fd);
		if (rnd(&seed) & 1 && send(fd, b, sizeof(b), MSG_NOSIGNAL) != sizeof(b))
			err_msg("send (close test): %s", strerror(errno));
		msleep((unsigned)(rnd(&seed) % 4));
		close_abort(fd); /* while the other thread waits */
		atomic_fetch_add(&cw_closes, 1);
		msleep(5);
	}
	return NULL;
}

/* shutdown() from another thread under a blocked recv(): Linux returns 0 from the recv at
 * once, for SHUT_RD as for SHUT_RDWR. SO_RCVTIMEO (3 s) bounds the wait if it does not. */
struct shut_round {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;
	int phase; /* 0 idle, 1 fd handed over, 2 receiver about to block, 3 recv returned */
	ssize_t r;
	int err;
	uint64_t at;
	bool quit;
};

static struct shut_round SR = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, 0,
				0, 0, 0, false };

static void *shut_receiver_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&SR.mu);
	for (;;) {
		char b;
		ssize_t r;
		int fd;

		while (SR.phase != 1 && !SR.quit)
			pthread_cond_wait(&SR.cv, &SR.mu);
		if (SR.quit)
			break;
		fd = SR.fd;
		SR.phase = 2;
		pthread_cond_broadcast(&SR.cv);
		pthread_mutex_unlock(&SR.mu);
		r = recv(fd, &b, 1, 0);
		pthread_mutex_lock(&SR.mu);
		SR.r = r;
		SR.err = errno;
		SR.at = now_us();
		SR.phase = 3;
		pthread_cond_broadcast(&SR.cv);
	}
	pthread_mutex_unlock(&SR.mu);
	return NULL;
}

static void shut_round(int how)
{
	struct timeval tmo = { 3, 0 };
	struct timespec ts;
	uint64_t t0;
	int fd = connect_to(&cfg.echo);

	if (fd < 0)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo)))
		err_msg("SO_RCVTIMEO: %s", strerror(errno));
	pthread_mutex_lock(&SR.mu);
	SR.fd = fd;
	SR.phase = 1;
	pthread_cond_broadcast(&SR.cv);
	while (SR.phase != 2)
		pthread_cond_wait(&SR.cv, &SR.mu);
	pthread_mutex_unlock(&SR.mu);
	msleep(30); /* the receiver is in recv() by now */
	t0 = now_us();
	if (shutdown(fd, how))
		err_msg("shutdown(%s): %s", how == SHUT_RD ? "SHUT_RD" : "SHUT_RDWR", strerror(errno));
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 8;
	pthread_mutex_lock(&SR.mu);
	while (SR.phase != 3 && pthread_cond_timedwait(&SR.cv, &SR.mu, &ts) == 0)
		;
	if (SR.phase != 3) {
		err_msg("recv still blocked 8 s after shutdown (SO_RCVTIMEO 3 s ignored)");
		SR.quit = true;
	} else if (SR.r == 0 && SR.at - t0 < 1000000u) {
		atomic_fetch_add(&shut_ok, 1);
	} else {
		atomic_fetch_add(&shut_late, 1);
		note("shutdown(%s) from another thread: the blocked recv returned %zd (%s) after "
		     "%llu ms; Linux returns 0 at once", how == SHUT_RD ? "SHUT_RD" : "SHUT_RDWR",
		     SR.r, SR.r < 0 ? strerror(SR.err) : "-", (unsigned long long)(SR.at - t0) / 1000);
	}
	SR.phase = 0;
	pthread_mutex_unlock(&SR.mu);
	close_abort(fd);
}

static void *shut_main(void *arg)
{
	int limit = arg ? *(int *)arg : 1 << 30;

	for (int i = 0; i < limit && !atomic_load(&stopping) && !SR.quit; i++) {
		shut_round(i % 2 ? SHUT_RDWR : SHUT_RD);
		msleep(arg ? 20 : 250);
	}
	pthread_mutex_lock(&SR.mu);
	SR.quit = true;
	pthread_cond_broadcast(&SR.cv);
	pthread_mutex_unlock(&SR.mu);
	return NULL;
}

/* Thread churn: short-lived threads that each block once on a UTCP connection. A thread's
 * exit must not leave descriptors behind. */
static void *churn_one(void *arg)
{
	int fd = *(int *)arg;
	char b;

	if (recv(fd, &b, 1, 0) != 1)
		err_msg("churn: recv: %s", strerror(errno));
	return NULL;
}

static void churn(int rounds)
{
	uint8_t hdr[4];
	int fd = connect_to(&cfg.echo);

	if (fd < 0)
		return;
	put32(hdr, (uint32_t)rounds);
	if (send(fd, hdr, 4, MSG_NOSIGNAL) != 4)
		err_msg("churn: send: %s", strerror(errno));
	for (int i = 0; i < rounds; i++) {
		pthread_t t;
		char b = 'c';

		if (pthread_create(&t, NULL, churn_one, &fd)) {
			err_msg("pthread_create (churn)");
			break;
		}
		msleep(2); /* it blocks in recv, then the echo wakes it */
		if (send(fd, &b, 1, MSG_NOSIGNAL) != 1)
			err_msg("churn: send: %s", strerror(errno));
		pthread_join(t, NULL);
		atomic_fetch_add(&churn_threads, 1);
	}
	close_abort(fd);
}

/* A thread already blocked in epoll_wait on an instance that has no UTCP member yet, while
 * another thread adds the first one (an event loop started before its first connection): it
 * must see the registered data, nothing else. */
static atomic_int first_add_ep = -1;
static atomic_int first_add_seen;

static void *first_add_waiter(void *arg)
{
	struct epoll_event ev[4];
	int n;

	(void)arg;
	n = epoll_wait(atomic_load(&first_add_ep), ev, 4, 3000);
	if (n < 0)
		err_msg("epoll_wait: %s", strerror(errno));
	for (int i = 0; i < n; i++) {
		if (ev[i].data.u64 != 0x5eed)
			err_msg("epoll_wait in a thread that waited before the first EPOLL_CTL_ADD "
				"of a UTCP socket reported data %#llx events %#x (registered: 0x5eed)",
				(unsigned long long)ev[i].data.u64, ev[i].events);
		else
			atomic_fetch_add(&first_add_seen, 1);
	}
	return NULL;
}

static void epoll_first_add(int rounds)
{
	for (int i = 0; i < rounds; i++) {
		struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = 0x5eed };
		int ep = epoll_create1(EPOLL_CLOEXEC), fd = connect_to(&cfg.echo);
		pthread_t t;

		if (ep < 0 || fd < 0)
			return;
		atomic_store(&first_add_ep, ep);
		if (pthread_create(&t, NULL, first_add_waiter, NULL))
			return;
		msleep(50); /* it waits */
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) /* writable at once */
			err_msg("EPOLL_CTL_ADD: %s", strerror(errno));
		pthread_join(t, NULL);
		close_abort(fd);
		close(ep);
	}
}

/* shutdown(SHUT_RD) of a listener from another thread: Linux stops listening, the thread
 * blocked in accept() returns EINVAL at once, and so does every later accept. Between the two
 * accepts the test tries to connect from the remote host (refused on Linux). */
static atomic_int acc_ret = -2, acc_errno;

static void *blocked_acceptor(void *arg)
{
	int fd = accept(*(int *)arg, NULL, NULL);

	atomic_store(&acc_errno, errno);
	atomic_store(&acc_ret, fd);
	return NULL;
}

static void listener_shutdown(void)
{
	int one = 1, l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd;
	char line[64];
	pthread_t t;
	uint64_t t0;

	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(l, (struct sockaddr *)&cfg.listen, sizeof(cfg.listen)) || listen(l, 16)) {
		err_msg("listener: %s", strerror(errno));
		return;
	}
	if (pthread_create(&t, NULL, blocked_acceptor, &l))
		return;
	msleep(300); /* it is in accept() (and this process in the listen group) */
	t0 = now_us();
	if (shutdown(l, SHUT_RD))
		err_msg("shutdown(SHUT_RD) of the listener: %s", strerror(errno));
	while (atomic_load(&acc_ret) == -2 && now_us() - t0 < 3000000u)
		msleep(5);
	if (atomic_load(&acc_ret) == -2)
		err_msg("accept() still blocked 3 s after shutdown(SHUT_RD) of its listener");
	else if (atomic_load(&acc_ret) >= 0 || atomic_load(&acc_errno) != EINVAL)
		err_msg("accept() after shutdown(SHUT_RD) of its listener: %d (%s); Linux: EINVAL",
			atomic_load(&acc_ret), strerror(atomic_load(&acc_errno)));
	printf("shut\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin)) /* the test tried to connect */
		err_msg("no line on stdin");
	fd = accept4(l, NULL, NULL, SOCK_NONBLOCK);
	if (fd >= 0 || errno != EINVAL)
		err_msg("a later accept() on the listener shut down for reading: %d (%s); Linux: "
			"EINVAL", fd, fd >= 0 ? "a connection" : strerror(errno));
	if (fd >= 0)
		close(fd);
	if (atomic_load(&acc_ret) == -2)
		pthread_detach(t);
	else
		pthread_join(t, NULL);
	close(l);
}

/* ---- main ---- */

static int parse_ep(const char *s, struct sockaddr_in *sa)
{
	char ip[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(ip))
		return -1;
	memcpy(ip, s, (size_t)(colon - s));
	ip[colon - s] = 0;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static atomic_int stdin_stop;

static void *stdin_main(void *arg)
{
	char line[64];

	(void)arg;
	while (fgets(line, sizeof(line), stdin))
		if (!strncmp(line, "stop", 4))
			break;
	atomic_store(&stdin_stop, 1);
	return NULL;
}

static void report(int fd_base, int fd_end)
{
	printf("{\"errors\": %ld, \"served\": {", atomic_load(&n_errors));
	for (int m = 0; m < M_N; m++)
		printf("%s\"%s\": %ld", m ? ", " : "", mode_name[m], atomic_load(&served[m]));
	printf("}, \"served_bytes\": %ld, \"accepted\": %ld, \"accepted_kernel\": %ld, "
	       "\"local_ok\": %ld, \"out_ok\": %ld, \"out_bytes\": %ld, \"out_threads\": %ld, "
	       "\"dup2_live\": %ld, \"cw_closes\": %ld, \"cw_events\": %ld, \"cw_polls\": %ld, "
	       "\"shut_ok\": %ld, \"shut_late\": %ld, \"churn_threads\": %ld, \"threads\": %d, "
	       "\"fd_base\": %d, \"fd_end\": %d}\n",
	       atomic_load(&served_bytes), atomic_load(&accepted_total),
	       atomic_load(&accepted_kernel), atomic_load(&local_ok), atomic_load(&out_ok),
	       atomic_load(&out_bytes), atomic_load(&out_threads), atomic_load(&dup2_live),
	       atomic_load(&cw_closes), atomic_load(&cw_events), atomic_load(&cw_polls),
	       atomic_load(&shut_ok), atomic_load(&shut_late), atomic_load(&churn_threads),
	       n_threads, fd_base, fd_end);
	fflush(stdout);
}

static int run_only(int fd_base)
{
	int fd_end;

	if (!strcmp(cfg.only, "shutdown")) {
		spawn("shut-recv", shut_receiver_main, NULL);
		shut_main(&cfg.rounds);
	} else if (!strcmp(cfg.only, "churn")) {
		int fd = connect_to(&cfg.echo); /* the stack exists before the count */

		if (fd >= 0)
			close_abort(fd);
		msleep(100);
		fd_base = count_fds();
		churn(cfg.rounds);
	} else if (!strcmp(cfg.only, "listener-shutdown")) {
		listener_shutdown();
	} else if (!strcmp(cfg.only, "epoll-first-add")) {
		epoll_first_add(cfg.rounds);
		if (atomic_load(&first_add_seen) != cfg.rounds)
			err_msg("the registered event came %d times in %d rounds",
				atomic_load(&first_add_seen), cfg.rounds);
	} else {
		fprintf(stderr, "--only shutdown|churn|epoll-first-add|listener-shutdown\n");
		return 2;
	}
	for (int i = 0; i < n_threads; i++)
		pthread_join(threads[i], NULL);
	fd_end = count_fds();
	report(fd_base, fd_end);
	return atomic_load(&n_errors) ? 1 : 0;
}

int main(int argc, char **argv)
{
	int one = 1, fd_base, fd_end, n_acceptors = 2, n_pool = 3, workers_from;
	uint64_t t_end;
	pthread_t in_thread;

	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : "";
		if (!strcmp(argv[i], "--listen") && !parse_ep(v, &cfg.listen))
			i++;
		else if (!strcmp(argv[i], "--echo") && !parse_ep(v, &cfg.echo))
			i++;
		else if (!strcmp(argv[i], "--secs"))
			cfg.secs = atof(argv[++i]);
		else if (!strcmp(argv[i], "--only"))
			cfg.only = argv[++i];
		else if (!strcmp(argv[i], "--rounds"))
			cfg.rounds = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: %s --listen IP:PORT --echo IP:PORT [--secs S] "
				"[--only WHAT] [--rounds N]\n", argv[0]);
			return 2;
		}
	}
	if (!cfg.echo.sin_port)
		return fprintf(stderr, "--echo IP:PORT is needed\n"), 2;
	crc_init();
	setvbuf(stderr, NULL, _IOLBF, 0);
	if (cfg.only)
		return run_only(count_fds());

	if (!cfg.listen.sin_port)
		return fprintf(stderr, "--listen IP:PORT is needed\n"), 2;
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(listen_fd, (struct sockaddr *)&cfg.listen, sizeof(cfg.listen)) ||
	    listen(listen_fd, 128)) {
		perror("listener");
		return 2;
	}
	held_open();
	fd_base = count_fds(); /* the stack's own descriptors exist from listen() on */
	ep_oneshot = epoll_create1(EPOLL_CLOEXEC);
	ep_et = epoll_create1(EPOLL_CLOEXEC);
	cw_ep = epoll_create1(EPOLL_CLOEXEC);
	ep_outer = epoll_create1(EPOLL_CLOEXEC);
	wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ep_oneshot < 0 || ep_et < 0 || cw_ep < 0 || ep_outer < 0 || wake_fd < 0 || pipe2(poll_pipe, O_NONBLOCK | O_CLOEXEC) ||
	    pipe2(select_pipe, O_NONBLOCK | O_CLOEXEC)) {
		perror("epoll/pipe");
		return 2;
	}
	/* Every epoll instance has a UTCP member (the held connection, no events) before any
	 * thread waits on it: see epoll_first_add() for what happens otherwise. */
	{
		struct epoll_event ev = { .events = 0, .data.ptr = NULL };

		if (held_fd >= 0 && (epoll_ctl(ep_oneshot, EPOLL_CTL_ADD, held_fd, &ev) ||
				     epoll_ctl(ep_et, EPOLL_CTL_ADD, held_fd, &ev)))
			err_msg("EPOLL_CTL_ADD of the held connection: %s", strerror(errno));
		ev.data.u64 = atomic_fetch_add(&cw_next_token, 1);
		if (held_fd >= 0 && epoll_ctl(cw_ep, EPOLL_CTL_ADD, held_fd, &ev))
			err_msg("EPOLL_CTL_ADD of the held connection: %s", strerror(errno));
		ev.events = EPOLLIN;
		ev.data.ptr = &wake_mark;
		if (epoll_ctl(ep_oneshot, EPOLL_CTL_ADD, wake_fd, &ev) ||
		    epoll_ctl(ep_outer, EPOLL_CTL_ADD, wake_fd, &ev))
			err_msg("EPOLL_CTL_ADD of the wake-up eventfd: %s", strerror(errno));
		ev.data.ptr = &ep_et;
		if (epoll_ctl(ep_outer, EPOLL_CTL_ADD, ep_et, &ev))
			err_msg("EPOLL_CTL_ADD of an epoll instance: %s", strerror(errno));
	}

	/* workers first, then the acceptors (blocked in accept() before the first client) */
	for (int i = 0; i < n_pool; i++)
		spawn("pool", pool_main, NULL);
	spawn("oneshot", oneshot_main, NULL);
	spawn("oneshot", oneshot_main, NULL);
	spawn("rearm", rearm_main, NULL);
	spawn("edge", et_main, NULL);
	spawn("poll", poll_main, NULL);
	spawn("select", select_main, NULL);
	spawn("cw-waiter", cw_waiter_main, NULL);
	workers_from = n_threads;
	for (int i = 0; i < n_acceptors; i++)
		spawn("acceptor", acceptor_main, NULL);
	spawn("local-client", local_client_main, NULL);
	spawn("outgoing", outgoing_main, NULL);
	spawn("cw-closer", cw_closer_main, NULL);
	spawn("shut-recv", shut_receiver_main, NULL);
	spawn("shut", shut_main, NULL);
	if (pthread_create(&in_thread, NULL, stdin_main, NULL))
		return perror("stdin thread"), 2;
	pthread_detach(in_thread);
	msleep(200); /* the acceptors are in accept() */
	printf("ready\n");
	fflush(stdout);

	t_end = now_us() + (uint64_t)(cfg.secs * 1e6);
	while (!atomic_load(&stdin_stop) && now_us() < t_end)
		msleep(20);
	if (!atomic_load(&stdin_stop))
		err_msg("time limit (%.0f s) reached before \"stop\"", cfg.secs);

	/* Stop: the clients and testers first, then wake each acceptor with a local connection,
	 * then the workers drain what they hold. */
	atomic_store(&stopping, 1);
	for (int i = workers_from + n_acceptors; i < n_threads; i++)
		pthread_join(threads[i], NULL);
	for (int i = 0; i < n_acceptors; i++) {
		uint8_t hdr[8];
		int fd = connect_to(&cfg.listen);

		put32(hdr, STOP_LEN);
		put32(hdr + 4, 0);
		if (fd >= 0 && send(fd, hdr, 8, MSG_NOSIGNAL) != 8)
			err_msg("stop connection: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	for (int i = workers_from; i < workers_from + n_acceptors; i++)
		pthread_join(threads[i], NULL);
	drain_deadline_us = now_us() + 15000000u;
	atomic_store(&draining, 1);
	if (eventfd_write(wake_fd, 1))
		err_msg("eventfd_write: %s", strerror(errno));
	for (int i = 0; i < workers_from; i++)
		pthread_join(threads[i], NULL);
	fprintf(stderr, "joined %d threads\n", n_threads);

	close(ep_oneshot);
	close(ep_outer);
	close(ep_et);
	close(cw_ep);
	close(wake_fd);
	close(poll_pipe[0]);
	close(poll_pipe[1]);
	close(select_pipe[0]);
	close(select_pipe[1]);
	fd_end = count_fds(); /* every thread joined, every connection but the held one closed */
	held_close();
	close(listen_fd);
	report(fd_base, fd_end);
	return atomic_load(&n_errors) ? 1 : 0;
}
