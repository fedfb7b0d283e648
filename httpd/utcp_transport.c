/* utcp_transport.c — mstack-httpd on UTCP: the paper's configuration. mstackd gives the process a port
 * (libmsctl), the port's rings are mapped (libmsport) and UTCP runs on them through its xdp
 * backend. The listening address is registered with a shadow kernel socket and the port joins
 * its listen group, so the switch steers new flows here. One thread, one poll loop: UTCP's
 * events drive the same connection core as the kernel transport (conn.h). */
#include "utcp_transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mstack_ctl.h"
#include "mstack_port.h"
#include "utcp.h"
#include "utcp_xdp.h"
#include "stats.h"

/* One connection: the core's state and what its io ops need.  The table is indexed by the
 * handle's slot (UTCP_CID_INDEX: below max_conns, unique among live connections), so
 * finding a connection is one index and nothing ever moves. */
struct uconn {
	struct httpd_conn c;
	struct utx *u;
	utcp_cid cid;
	bool used;
	bool corked;          /* written to in this pass: uncorked (pushed) at its end */
	uint64_t armed_ms;    /* the core's deadline UTCP has as this connection's wakeup */
};

struct utx {
	struct utcp_stack *st;
	struct mstack_stats_writer stats;  /* what `mstackctl conns` shows (-1 fd: none) */
	uint64_t published_us;
	uint64_t now_us;
	struct uconn *conns;   /* max_conns slots, by UTCP_CID_INDEX */
	unsigned cap, used;
	uint32_t *corked;      /* slots corked in this pass */
	unsigned ncorked;
	/* bodies sent by reference (utcp_send_ref): queued, and handed back by the stack */
	uint64_t refs_queued, refs_released;
};

/* The port as the stack sees it: the xdp backend's, with its kick held back until the end
 * of the loop's pass.  The stack kicks after each of its flushes (after the input of a
 * batch, then after the responses written to it): one sendto per pass does for both.
 * Past LAZY_KICK_FRAMES frames queued, or when the send frames run out (the kick reaps
 * completions), the kick goes at once. */
#define LAZY_KICK_FRAMES 256

struct lazy_port {
	struct utcp_port in;
	struct utcp_port_ops ops;
	unsigned queued;       /* frames put on the TX ring since the last kick */
};

static int lazy_kick_now(struct lazy_port *l)
{
	if (!l->queued)
		return 0;
	l->queued = 0;
	return l->in.ops->kick(l->in.ctx);
}

static int l_rx_burst(void *ctx, struct utcp_frame *f, unsigned max, uint64_t now_us)
{
	struct lazy_port *l = ctx;

	return l->in.ops->rx_burst(l->in.ctx, f, max, now_us);
}

static void l_rx_release(void *ctx, struct utcp_frame *f, unsigned n)
{
	struct lazy_port *l = ctx;

	l->in.ops->rx_release(l->in.ctx, f, n);
}

static int l_tx_burst(void *ctx, const struct utcp_frame *f, unsigned n, uint64_t now_us)
{
	struct lazy_port *l = ctx;
	int r = l->in.ops->tx_burst(l->in.ctx, f, n, now_us);

	if (r > 0)
		l->queued += (unsigned)r;
	return r;
}

static int l_tx_send(void *ctx, struct utcp_frame *f, unsigned nsend, unsigned n, uint64_t now_us)
{
	struct lazy_port *l = ctx;
	int r = l->in.ops->tx_send(l->in.ctx, f, nsend, n, now_us);

	if (r > 0)
		l->queued += (unsigned)r;
	return r;
}

static int l_tx_lend(void *ctx, struct utcp_frame *f, unsigned n)
{
	struct lazy_port *l = ctx;
	int r = l->in.ops->tx_lend(l->in.ctx, f, n);

	if (r >= 0 && (unsigned)r < n && l->queued) {
		int more;

		lazy_kick_now(l);
		more = l->in.ops->tx_lend(l->in.ctx, f + r, n - (unsigned)r);
		if (more > 0)
			r += more;
	}
	return r;
}

static int l_kick(void *ctx)
{
	struct lazy_port *l = ctx;

	return l->queued < LAZY_KICK_FRAMES ? 0 : lazy_kick_now(l);
}

static struct utcp_port lazy_port_wrap(struct lazy_port *l, struct utcp_port in)
{
	struct utcp_port p = { .ops = &l->ops, .ctx = l };

	l->in = in;
	l->queued = 0;
	l->ops = *in.ops;       /* sz and name as the backend's; tx_lend/tx_send if it has them */
	l->ops.rx_burst = l_rx_burst;
	l->ops.rx_release = l_rx_release;
	l->ops.tx_burst = l_tx_burst;
	l->ops.kick = l_kick;
	if (in.ops->sz >= sizeof(struct utcp_port_ops) && in.ops->tx_lend && in.ops->tx_send) {
		l->ops.tx_lend = l_tx_lend;
		l->ops.tx_send = l_tx_send;
	}
	return p;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static long u_read(void *io, void *buf, size_t len)
{
	struct uconn *k = io;

	return (long)utcp_recv(k->u->st, k->cid, buf, len, k->u->now_us);
}

/* A response is written in pieces (head, then the file) and, when it is the last one, is
 * followed by shutdown: corked until the end of the pass, the pieces leave as full
 * segments and the FIN rides on the last one.  Sent piece by piece (nodelay), the head
 * would take a frame of its own and the FIN another — and a client that read the body
 * before the FIN arrived would close first and keep the TIME-WAIT (docs/bench.md: the
 * close-mode degradation). */
static void cork(struct uconn *k)
{
	struct utx *u = k->u;

	/* (a slot freed and reused within one pass is listed twice: the list is bounded all
	 * the same, and past its end a connection just goes uncorked) */
	if (k->corked || u->ncorked == u->cap)
		return;
	k->corked = true;
	utcp_set_cork(u->st, k->cid, true, u->now_us);
	u->corked[u->ncorked++] = (uint32_t)(k - u->conns);
}

/* A response: the head copied (the connection's buffer is reused), the body by reference into
 * the file's mapping, which lives as long as the process — the copy from the mapping into the
 * send buffer is gone; the stack copies from the mapping straight into the frames. */
static long u_writev_body(void *io, const struct iovec *iov, int iovcnt, int ncopy)
{
	struct uconn *k = io;
	struct utx *u = k->u;
	long total = 0;

	cork(k);
	for (int i = 0; i < iovcnt; i++) {
		ssize_t r;

		if (!iov[i].iov_len)
			continue;
		if (i < ncopy)
			r = utcp_send(u->st, k->cid, iov[i].iov_base, iov[i].iov_len, u->now_us);
		else
			r = utcp_send_ref(u->st, k->cid, iov[i].iov_base, iov[i].iov_len,
					  u->refs_queued, u->now_us);
		if (r < 0)
			return total ? total : (long)r;
		if (i >= ncopy)
			u->refs_queued++;
		total += r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	return total;
}

/* Everything copied. */
static long u_writev(void *io, const struct iovec *iov, int iovcnt)
{
	return u_writev_body(io, iov, iovcnt, iovcnt);
}

/* The stack is done with a body reference: nothing to free (the mapping stays), only counted,
 * so that the end can check none is outstanding. */
static void ref_released(void *ctx, utcp_cid c, uint64_t cookie)
{
	struct utx *u = ctx;

	(void)c;
	(void)cookie;
	u->refs_released++;
}

static int u_shutdown(void *io)
{
	struct uconn *k = io;

	return utcp_shutdown(k->u->st, k->cid, k->u->now_us);
}

static const struct httpd_io_ops utcp_io = {
	.read = u_read,
	.writev = u_writev,
	.shutdown_write = u_shutdown,
	.writev_body = u_writev_body,
};

/* The pass is over: what was corked goes out (a FIN queued meanwhile already took the
 * last segment with it). */
static void uncork_all(struct utx *u)
{
	for (unsigned i = 0; i < u->ncorked; i++) {
		struct uconn *k = &u->conns[u->corked[i]];

		if (k->used && k->corked)
			utcp_set_cork(u->st, k->cid, false, u->now_us);
		k->corked = false;
	}
	u->ncorked = 0;
}

static struct uconn *slot_of(struct utx *u, utcp_cid cid)
{
	uint32_t i = UTCP_CID_INDEX(cid);

	return i < u->cap ? &u->conns[i] : NULL;
}

/* Rewrite the statistics region: one slot per table entry (at most every 250 ms). */
static void publish(struct utx *u)
{
	if (u->stats.fd < 0 || u->now_us - u->published_us < 250000)
		return;
	u->published_us = u->now_us;
	mstack_stats_begin(&u->stats);
	for (unsigned i = 0; i < u->cap; i++) {
		struct utcp_conn_info info = { .sz = sizeof(info) };

		if (u->conns[i].used && utcp_conn_info(u->st, u->conns[i].cid, &info) == 0)
			mstack_stats_put_conn(&u->stats, i, &info);
		else
			mstack_stats_clear_conn(&u->stats, i);
	}
	mstack_stats_put_stack(&u->stats, utcp_get_stats(u->st));
	mstack_stats_end(&u->stats, u->now_us);
}

static void forget(struct utx *u, struct uconn *k)
{
	if (k->corked)
		utcp_set_cork(u->st, k->cid, false, u->now_us);
	k->used = false;
	k->corked = false;
	u->used--;
}

/* The core is done with it: release the handle (UTCP finishes the close on its own). */
static void finish(struct utx *u, struct uconn *k)
{
	forget(u, k);
	utcp_close(u->st, k->cid, u->now_us);
}

/* The core's deadline becomes the connection's UTCP wakeup (one timer wheel for the
 * stack and the server; nothing here scans the table). */
static void step(struct utx *u, struct uconn *k, enum httpd_conn_status s)
{
	uint64_t d;

	if (s == HTTPD_CONN_DONE) {
		finish(u, k);
		return;
	}
	d = httpd_conn_deadline(&k->c);
	if (d != k->armed_ms) {
		k->armed_ms = d;
		utcp_set_wakeup(u->st, k->cid, d * 1000);
	}
}

int httpd_utcp_serve(struct httpd_server *srv, const struct httpd_utcp_opts *opts)
{
	struct mstack_ctl *ctl = NULL;
	struct mstack_ctl_port info;
	struct mstack_port *port = NULL;
	struct utcp_xdp *x = NULL;
	struct utx u = { .stats = { .fd = -1 } };
	struct utcp_config cfg;
	struct utcp_port p;
	int rc, shadow = -1, sfd = -1, one = 1, binding;
	uint32_t ip = opts->listen.sin_addr.s_addr;
	sigset_t stop;
	bool more = false;
	struct lazy_port lazy;

	rc = mstack_ctl_connect(&ctl, opts->run_dir);
	if (rc) {
		fprintf(stderr, "mstack-httpd: mstackd: %s%s%s\n", strerror(-rc),
			ctl ? ": " : "", ctl ? mstack_ctl_last_detail(ctl) : "");
		return rc;
	}
	rc = mstack_ctl_port_open(ctl, NULL, &info);
	if (rc < 0)
		goto ctl_fail;
	rc = mstack_port_open(&port, info.umem_fd, info.xsk_fd, &info.geom);
	if (rc)
		goto fail;
	if (!ip && info.n_addrs)
		ip = info.addrs[0]; /* a wildcard listen: UTCP serves the NIC's first address */
	shadow = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(shadow, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(shadow, (const struct sockaddr *)&opts->listen, sizeof(opts->listen)) ||
	    listen(shadow, 1024)) {
		rc = -errno;
		fprintf(stderr, "mstack-httpd: shadow socket: %s\n", strerror(errno));
		goto fail;
	}
	binding = mstack_ctl_register(ctl, shadow, MSTACK_REG_LISTEN, info.port_id, NULL);
	rc = binding < 0 ? binding : mstack_ctl_group_join(ctl, (uint32_t)binding, info.port_id);
	if (rc < 0)
		goto ctl_fail;

	utcp_config_init(&cfg);
	cfg.local_ip = ntohl(ip);
	memcpy(cfg.local_mac, info.nic_mac, 6);
	cfg.mtu = (uint16_t)(info.mtu ? info.mtu : 1500);
	cfg.max_conns = opts->max_conns < 1024 ? opts->max_conns : 1024;
	cfg.sndbuf = cfg.rcvbuf = 64 * 1024;
	cfg.nodelay = true; /* responses are written whole: no reason to wait for an ACK */
	for (unsigned i = 0; i < sizeof(cfg.isn_key); i++)
		cfg.isn_key[i] = (uint8_t)(rand() ^ (int)mono_us() >> (i % 16));
	rc = utcp_xdp_open(&x, port);
	if (rc)
		goto fail;
	p = lazy_port_wrap(&lazy, utcp_xdp_port(x));
	u.now_us = mono_us();
	rc = utcp_stack_create(&cfg, &p, u.now_us, &u.st);
	if (rc)
		goto fail;
	utcp_set_ref_release(u.st, ref_released, &u);
	rc = utcp_listen(u.st, ntohs(opts->listen.sin_port), 1024);
	if (rc < 0)
		goto fail;
	u.cap = cfg.max_conns;
	u.conns = calloc(u.cap, sizeof(*u.conns));
	u.corked = calloc(u.cap, sizeof(*u.corked));
	if (!u.conns || !u.corked) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Connections for `mstackctl conns`: a region mstackd maps read-only. Optional. */
	if (mstack_stats_open(&u.stats, u.cap, "mstack-httpd") == 0 &&
	    mstack_ctl_stats_region(ctl, info.port_id, u.stats.fd) != 0) {
		fprintf(stderr, "mstack-httpd: statistics region refused: %s\n",
			mstack_ctl_last_detail(ctl));
		mstack_stats_close(&u.stats);
	}
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sfd = signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK);
	if (opts->ready) {
		char a[INET_ADDRSTRLEN];
		struct in_addr in = { .s_addr = ip };
		fprintf(opts->ready, "listening %s:%u\nready\n", inet_ntop(AF_INET, &in, a, sizeof(a)),
			ntohs(opts->listen.sin_port));
		fflush(opts->ready);
	}

	for (unsigned iter = 0;; iter++) {
		struct pollfd pfd[2] = { { .fd = mstack_port_fd(port), .events = POLLIN },
					 { .fd = sfd, .events = POLLIN } };
		uint64_t next = utcp_next_deadline(u.st), now_ms;
		struct utcp_event ev;
		int tmo, n;

		/* A full RX batch last time: more is waiting, no need to ask (but look at the
		 * signalfd now and then). */
		if (!more || iter % 64 == 0) {
			tmo = more ? 0 : next == UINT64_MAX ? 1000
				: next <= u.now_us ? 0 : (int)((next - u.now_us) / 1000 + 1);
			poll(pfd, 2, tmo > 1000 ? 1000 : tmo);
			if (pfd[1].revents)
				break;
		}
		u.now_us = mono_us();
		now_ms = u.now_us / 1000;
		httpd_server_set_time(srv, (long long)time(NULL));
		n = utcp_poll(u.st, u.now_us);
		more = n >= (int)cfg.rx_batch;
		while (utcp_next_event(u.st, &ev) == 1) {
			struct uconn *k = slot_of(&u, ev.conn);
			enum httpd_conn_status s = HTTPD_CONN_OPEN;

			if (!k)
				continue;
			if (ev.events & UTCP_EV_ACCEPTED) {
				if (k->used) /* cannot happen: the slot's handle is gone */
					forget(&u, k);
				memset(k, 0, sizeof(*k));
				k->used = true;
				k->cid = ev.conn;
				k->u = &u;
				u.used++;
				httpd_conn_init(&k->c, srv, &utcp_io, k, now_ms);
			} else if (!k->used || k->cid != ev.conn) {
				continue;
			}
			if (ev.events & UTCP_EV_CLOSED) {
				/* gone under us (reset, timeout), or both FINs exchanged during the
				 * linger (TIME-WAIT): the core is not called, the handle is released */
				forget(&u, k);
				utcp_close(u.st, ev.conn, u.now_us);
				continue;
			}
			if (ev.events & UTCP_EV_WAKEUP)
				k->armed_ms = 0; /* fired: UTCP forgot it */
			if (ev.events & (UTCP_EV_READABLE | UTCP_EV_ACCEPTED))
				s = httpd_conn_on_readable(&k->c, now_ms);
			if (s == HTTPD_CONN_OPEN && (ev.events & UTCP_EV_WRITABLE))
				s = httpd_conn_on_writable(&k->c, now_ms);
			if (s == HTTPD_CONN_OPEN && (ev.events & UTCP_EV_WAKEUP))
				s = httpd_conn_on_timer(&k->c, now_ms);
			step(&u, k, s);
		}
		uncork_all(&u);
		utcp_flush(u.st, u.now_us);
		lazy_kick_now(&lazy);
		publish(&u);
	}
	rc = 0;
	for (unsigned i = 0; i < u.cap; i++)
		if (u.conns[i].used)
			utcp_abort(u.st, u.conns[i].cid, u.now_us);
	utcp_flush(u.st, u.now_us);
	lazy_kick_now(&lazy);
	goto out;
ctl_fail:
	fprintf(stderr, "mstack-httpd: mstackd refused: %s: %s\n", strerror(-rc),
		mstack_ctl_last_detail(ctl));
	goto out;
fail:
	fprintf(stderr, "mstack-httpd: UTCP setup: %s\n", strerror(rc < 0 ? -rc : rc));
out:
	if (u.stats.region)
		mstack_stats_close(&u.stats);
	free(u.conns);
	free(u.corked);
	if (u.st) {
		utcp_stack_destroy(u.st);       /* hands back the references still queued */
		/* every reference comes back exactly once: anything else is a bug worth an exit code */
		fprintf(stderr, "mstack-httpd: bodies by reference: %llu queued, %llu released\n",
			(unsigned long long)u.refs_queued, (unsigned long long)u.refs_released);
		if (u.refs_released != u.refs_queued && rc == 0) {
			fprintf(stderr, "mstack-httpd: %lld body references outstanding at exit\n",
				(long long)(u.refs_queued - u.refs_released));
			rc = -ENOTRECOVERABLE;
		}
	}
	if (x)
		utcp_xdp_close(x);
	if (port)
		mstack_port_close(port);
	if (sfd >= 0)
		close(sfd);
	if (shadow >= 0)
		close(shadow);
	mstack_ctl_close(ctl);
	return rc;
}
