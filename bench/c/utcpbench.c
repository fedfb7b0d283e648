/* mstack-utcpbench — the load for UTCP's benchmark (bench/utcp.py) and churn test
 * (tests/system/test_utcp_churn.py): one small request/response protocol served and driven
 * over the kernel's sockets or over UTCP on a `tap`, `xdp` (a port from mstackd) or `pair`
 * (two stacks in this process) backend, so every pairing runs the same logic.
 *
 *   mstack-utcpbench [BACKEND] serve PORT
 *       "ready" on stdout, then one stdin command per line: `stats` (a JSON line),
 *       `settle MS` (waits up to MS for the stack's connections to return to the baseline
 *       taken when it started, then stats), `quit`.
 *   mstack-utcpbench [BACKEND] conns IP PORT [--count N] [--seconds S] [--concurrency C]
 *                    [--req B] [--resp B] [--client-closes] [--warmup N]
 *   mstack-utcpbench [BACKEND] bulk IP PORT --bytes N
 *       one JSON line when done: connections completed and failed, seconds, rates, and (UTCP)
 *       the stack's figures before, after the run and after the settle.
 *   --backend pair runs `conns` and `bulk` against a server stack in this process (IP PORT
 *   are then the server's, in the pair's own addressing).
 * Backends: --backend kernel [--ip BIND]; --backend tap --dev IF --ip IP --mac MAC --gw-mac MAC;
 * --backend xdp --run-dir DIR --ip IP [--lease N]; --backend pair.  UTCP's stack: --max-conns N,
 * --buf BYTES (send and receive), --time-wait-ms MS, --max-seconds S bounds every mode.
 *
 * The protocol: the client sends a 12-byte header (request length including the header,
 * response length, flags) and the rest of its request; the server reads the request (or up to
 * the client's FIN), sends the response, and closes — at once if the header's flag says the
 * server closes first, else after the client's FIN.  A bulk transfer is a request "until FIN"
 * with an empty response: the client times connect .. the server's FIN. */
#define _GNU_SOURCE   /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mstack_ctl.h"
#include "mstack_port.h"
#include "utcp.h"
#include "utcp_xdp.h"

#define HDR_LEN 12
#define FLAG_SERVER_CLOSES 1u
#define UNTIL_FIN 0xffffffffu
#define MAX_CONNS 4096
#define CHUNK 65536

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "mstack-utcpbench: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static uint8_t zeros[CHUNK], scratch[CHUNK];

/* ---- transports: the kernel's sockets or a UTCP stack, behind one small interface ---- */

struct utcp_side {
	struct utcp_stack *st;
	int fd;                       /* to poll for frames; -1 for pair */
	uint64_t now;
	int listener;
	utcp_cid accepted[256];
	unsigned nacc;
};

struct tr {
	int kind;                     /* 0 kernel, 1 utcp */
	/* kernel */
	int lfd;
	struct in_addr bind_ip;
	/* utcp */
	struct utcp_side u;
};

/* Handles are fds (kernel) or utcp_cids. */
static int tr_listen(struct tr *t, struct in_addr ip, uint16_t port)
{
	if (t->kind == 1) {
		t->u.listener = utcp_listen(t->u.st, port, 1024);
		return t->u.listener < 0 ? t->u.listener : 0;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = ip};
	int one = 1;

	t->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(t->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (t->lfd < 0 || bind(t->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(t->lfd, 1024))
		return -errno;
	return 0;
}

/* A new connection, 1 if one was accepted, 0 if none is waiting. */
static int tr_accept(struct tr *t, uint32_t *h)
{
	if (t->kind == 1) {
		if (!t->u.nacc)
			return 0;
		*h = t->u.accepted[--t->u.nacc];
		utcp_set_nodelay(t->u.st, *h, true);
		return 1;
	}
	int fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return 0;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	*h = (uint32_t)fd;
	return 1;
}

static int tr_connect(struct tr *t, struct in_addr ip, uint16_t port, uint32_t *h)
{
	if (t->kind == 1) {
		utcp_cid c;
		int rc = utcp_connect(t->u.st, ntohl(ip.s_addr), port, 0, NULL, t->u.now, &c);

		if (!rc)
			utcp_set_nodelay(t->u.st, c, true);
		*h = c;
		return rc;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = ip};
	struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr = t->bind_ip};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (t->bind_ip.s_addr && bind(fd, (struct sockaddr *)&me, sizeof(me))) {
		close(fd);
		return -errno;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS) {
		int e = errno;

		close(fd);
		return -e;
	}
	*h = (uint32_t)fd;
	return 0;
}

/* Bytes sent, -EAGAIN, or another negative errno. */
static ssize_t tr_send(struct tr *t, uint32_t h, const void *b, size_t n)
{
	if (t->kind == 1)
		return utcp_send(t->u.st, h, b, n, t->u.now);
	ssize_t r = send((int)h, b, n, MSG_NOSIGNAL);
	return r >= 0 ? r : (errno == EAGAIN || errno == ENOTCONN) ? -EAGAIN : -errno;
}

/* Bytes read, 0 at the peer's FIN, -EAGAIN, or another negative errno. */
static ssize_t tr_recv(struct tr *t, uint32_t h, void *b, size_t n)
{
	if (t->kind == 1)
		return utcp_recv(t->u.st, h, b, n, t->u.now);
	ssize_t r = recv((int)h, b, n, 0);
	return r >= 0 ? r : (errno == EAGAIN || errno == ENOTCONN) ? -EAGAIN : -errno;
}

static void tr_shutdown(struct tr *t, uint32_t h)
{
	if (t->kind == 1)
		utcp_shutdown(t->u.st, h, t->u.now);
	else
		shutdown((int)h, SHUT_WR);
}

static void tr_close(struct tr *t, uint32_t h)
{
	if (t->kind == 1)
		utcp_close(t->u.st, h, t->u.now);
	else
		close((int)h);
}

/* UTCP: frames in, timers, events (new connections queued for tr_accept). */
static int utcp_pump(struct utcp_side *u)
{
	struct utcp_event ev;
	int n, work = 0;

	u->now = mono_us();
	n = utcp_poll(u->st, u->now);
	while (utcp_next_event(u->st, &ev) == 1) {
		work = 1;
		if ((ev.events & UTCP_EV_ACCEPTED) && u->nacc < 256)
			u->accepted[u->nacc++] = ev.conn;
	}
	return n > 0 || work;
}

/* ---- the protocol's two ends, as non-blocking state machines ---- */

struct sconn {                    /* server side */
	uint32_t h;
	uint8_t hdr[HDR_LEN];
	uint64_t got;
	uint32_t req, resp_left, flags;
	int eof, responding;
};

struct cconn {                    /* client side */
	uint32_t h;
	uint8_t hdr[HDR_LEN];
	uint64_t sent, req, resp_got, resp;
	int shut, eof;
	uint64_t t0;
};

/* One step of a server connection: 1 if it is finished (closed), -1 on error. */
static int sconn_step(struct tr *t, struct sconn *c, int *work)
{
	while (!c->responding) {
		ssize_t r = tr_recv(t, c->h, scratch, sizeof(scratch));

		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return -1;
		*work = 1;
		if (r == 0) {
			c->eof = 1;
			c->responding = 1;
			break;
		}
		for (ssize_t i = 0; i < r && c->got + (uint64_t)i < HDR_LEN; i++)
			c->hdr[c->got + (uint64_t)i] = scratch[i];
		c->got += (uint64_t)r;
		if (c->got >= HDR_LEN && !c->req) {
			c->req = (uint32_t)c->hdr[0] << 24 | (uint32_t)c->hdr[1] << 16 | c->hdr[2] << 8 | c->hdr[3];
			c->resp_left = (uint32_t)c->hdr[4] << 24 | (uint32_t)c->hdr[5] << 16 | c->hdr[6] << 8 |
				       c->hdr[7];
			c->flags = c->hdr[8];
		}
		if (c->req && c->req != UNTIL_FIN && c->got >= c->req)
			c->responding = 1;
	}
	while (c->resp_left) {
		ssize_t r = tr_send(t, c->h, zeros, c->resp_left < CHUNK ? c->resp_left : CHUNK);

		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return -1;
		*work = 1;
		c->resp_left -= (uint32_t)r;
	}
	if (!c->eof && !(c->flags & FLAG_SERVER_CLOSES)) {
		for (;;) {   /* the client closes first: read (and drop) up to its FIN */
			ssize_t r = tr_recv(t, c->h, scratch, sizeof(scratch));

			if (r == -EAGAIN)
				return 0;
			if (r < 0)
				return -1;
			*work = 1;
			if (r == 0)
				break;
		}
	}
	tr_close(t, c->h);
	*work = 1;
	return 1;
}

struct client_opts {
	struct in_addr ip;
	uint16_t port;
	uint64_t count, bytes, warmup;
	double seconds;
	unsigned concurrency;
	uint32_t req, resp;
	int client_closes, bulk;
};

static void cconn_start(struct tr *t, const struct client_opts *o, struct cconn *c, int *err)
{
	uint32_t req = o->bulk ? UNTIL_FIN : o->req;

	memset(c, 0, sizeof(*c));
	c->req = o->bulk ? HDR_LEN + o->bytes : o->req;
	c->resp = o->bulk ? 0 : o->resp;
	c->hdr[0] = (uint8_t)(req >> 24), c->hdr[1] = (uint8_t)(req >> 16);
	c->hdr[2] = (uint8_t)(req >> 8), c->hdr[3] = (uint8_t)req;
	c->hdr[4] = (uint8_t)(c->resp >> 24), c->hdr[5] = (uint8_t)(c->resp >> 16);
	c->hdr[6] = (uint8_t)(c->resp >> 8), c->hdr[7] = (uint8_t)c->resp;
	c->hdr[8] = o->client_closes || o->bulk ? 0 : FLAG_SERVER_CLOSES;
	c->t0 = mono_us();
	*err = tr_connect(t, o->ip, o->port, &c->h);
}

/* One step of a client connection: 1 when done, -1 on error. */
static int cconn_step(struct tr *t, const struct client_opts *o, struct cconn *c, int *work)
{
	while (c->sent < c->req) {
		/* The header and the start of the request go in one call (one segment, no Nagle
		 * wait for the ACK of a lone header). */
		static uint8_t first[CHUNK];
		uint64_t left = c->req - c->sent;
		const uint8_t *p = zeros;
		ssize_t r;

		if (c->sent < HDR_LEN) {
			memcpy(first, c->hdr + c->sent, HDR_LEN - c->sent);
			memset(first + HDR_LEN - c->sent, 0, sizeof(first) - (HDR_LEN - c->sent));
			p = first;
		}
		r = tr_send(t, c->h, p, left < CHUNK ? left : CHUNK);

		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return -1;
		*work = 1;
		c->sent += (uint64_t)r;
	}
	if (o->bulk && !c->shut) {
		tr_shutdown(t, c->h);
		c->shut = 1;
	}
	for (;;) {
		if (c->resp_got >= c->resp && !o->bulk && o->client_closes)
			break;
		ssize_t r = tr_recv(t, c->h, scratch, sizeof(scratch));

		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return -1;
		*work = 1;
		if (r == 0) {
			if (c->resp_got < c->resp)
				return -1;
			break;
		}
		c->resp_got += (uint64_t)r;
	}
	tr_close(t, c->h);
	return 1;
}

/* ---- figures ---- */

static long rss_kb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void stats_json(struct tr *t, char *out, size_t cap)
{
	if (t->kind != 1) {
		snprintf(out, cap, "{\"rss_kb\": %ld}", rss_kb());
		return;
	}
	const struct utcp_stats *s = utcp_get_stats(t->u.st);
	uint64_t drops = 0;

	char why[1024] = "";
	size_t w = 0;

	for (unsigned i = 1; i < UTCP_DROP__MAX; i++) {
		drops += s->drops[i];
		if (s->drops[i] && w < sizeof(why) - 64)
			w += (size_t)snprintf(why + w, sizeof(why) - w, "%s\"%s\": %llu", w ? ", " : "",
					      utcp_drop_str((enum utcp_drop)i), (unsigned long long)s->drops[i]);
	}
	snprintf(out, cap,
		 "{\"conns_in_use\": %llu, \"time_wait_in_use\": %llu, \"time_wait_recycled\": %llu, "
		 "\"stack_memory\": %zu, \"conn_memory\": %zu, \"rss_kb\": %ld, "
		 "\"active_opens\": %llu, \"passive_opens\": %llu, \"established\": %llu, "
		 "\"resets\": %llu, \"timeouts\": %llu, \"rst_in\": %llu, \"rst_out\": %llu, "
		 "\"retransmits\": %llu, \"segs_in\": %llu, \"segs_out\": %llu, \"drops\": %llu, "
		 "\"tx_dropped\": %llu, \"drop_reasons\": {%s}}",
		 (unsigned long long)s->conns_in_use, (unsigned long long)s->time_wait_in_use,
		 (unsigned long long)s->time_wait_recycled, utcp_stack_memory(t->u.st), utcp_conn_memory(t->u.st),
		 rss_kb(), (unsigned long long)s->active_opens, (unsigned long long)s->passive_opens,
		 (unsigned long long)s->established, (unsigned long long)s->resets,
		 (unsigned long long)s->timeouts, (unsigned long long)s->rst_in,
		 (unsigned long long)s->rst_out, (unsigned long long)s->retransmits,
		 (unsigned long long)s->segs_in, (unsigned long long)s->segs_out,
		 (unsigned long long)drops, (unsigned long long)s->tx_dropped, why);
}

/* Connections the stack still holds: control blocks and TIME-WAIT entries. */
static uint64_t in_use(struct tr *t)
{
	const struct utcp_stats *s;

	if (t->kind != 1)
		return 0;
	s = utcp_get_stats(t->u.st);
	return s->conns_in_use + s->time_wait_in_use;
}

/* ---- the server and the client loops ---- */

struct server {
	struct tr *t;
	struct sconn c[MAX_CONNS];
	unsigned n;
	uint64_t done, failed;
};

static int server_step(struct server *s)
{
	int work = 0;
	uint32_t h;

	while (s->n < MAX_CONNS && tr_accept(s->t, &h) == 1) {
		memset(&s->c[s->n], 0, sizeof(s->c[0]));
		s->c[s->n++].h = h;
		work = 1;
	}
	for (unsigned i = 0; i < s->n;) {
		int r = sconn_step(s->t, &s->c[i], &work);

		if (r) {
			if (r < 0) {
				tr_close(s->t, s->c[i].h);
				s->failed++;
			} else {
				s->done++;
			}
			s->c[i] = s->c[--s->n];
			continue;
		}
		i++;
	}
	return work;
}

struct client {
	struct tr *t;
	const struct client_opts *o;
	struct cconn c[MAX_CONNS];
	unsigned n;
	uint64_t started, done, failed, connect_errors;
	uint64_t deadline;
	int last_err;
};

static int client_step(struct client *k)
{
	int work = 0;
	uint64_t now = mono_us();

	while (k->n < k->o->concurrency && k->started < k->o->count && now < k->deadline) {
		int err;

		cconn_start(k->t, k->o, &k->c[k->n], &err);
		if (err) {   /* no port free yet (TIME-WAIT) or the like: try again later */
			k->connect_errors++;
			k->last_err = err;
			break;
		}
		k->n++;
		k->started++;
		work = 1;
	}
	for (unsigned i = 0; i < k->n;) {
		int r = cconn_step(k->t, k->o, &k->c[i], &work);

		if (r) {
			if (r < 0) {
				tr_close(k->t, k->c[i].h);
				k->failed++;
			} else {
				k->done++;
			}
			k->c[i] = k->c[--k->n];
			continue;
		}
		i++;
	}
	return work;
}

/* Blocks until something may have happened (or timeout_ms): kernel sockets or a UTCP port. */
static void wait_io(struct tr *t, struct server *srv, struct client *cli, int timeout_ms)
{
	struct pollfd p[MAX_CONNS + 1];
	unsigned n = 0;

	if (t->kind == 1) {
		if (t->u.fd >= 0) {
			uint64_t next = utcp_next_deadline(t->u.st), now = mono_us();
			int tmo = next == UINT64_MAX ? timeout_ms : next <= now ? 0 : (int)((next - now + 999) / 1000);

			p[0] = (struct pollfd){.fd = t->u.fd, .events = POLLIN};
			poll(p, 1, tmo < timeout_ms ? tmo : timeout_ms);
		}
		return;
	}
	if (srv) {
		p[n++] = (struct pollfd){.fd = t->lfd, .events = POLLIN};
		for (unsigned i = 0; i < srv->n && n <= MAX_CONNS; i++)
			p[n++] = (struct pollfd){.fd = (int)srv->c[i].h,
						 .events = (short)(srv->c[i].responding && srv->c[i].resp_left ? POLLOUT : POLLIN)};
	}
	if (cli)
		for (unsigned i = 0; i < cli->n && n <= MAX_CONNS; i++)
			p[n++] = (struct pollfd){.fd = (int)cli->c[i].h,
						 .events = (short)(cli->c[i].sent < cli->c[i].req ? POLLOUT : POLLIN)};
	poll(p, n, n ? timeout_ms : (cli && cli->started < cli->o->count ? 1 : timeout_ms));
}

/* ---- setting up a backend ---- */

struct opts {
	const char *backend, *dev, *run_dir;
	struct in_addr ip;
	uint8_t mac[6], gw_mac[6];
	uint32_t max_conns, buf, time_wait_ms, lease;
	double max_seconds;
};

static int parse_mac(const char *s, uint8_t m[6])
{
	unsigned v[6];

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		m[i] = (uint8_t)v[i];
	return 0;
}

static void stack_config(const struct opts *o, struct utcp_config *cfg)
{
	utcp_config_init(cfg);
	cfg->local_ip = ntohl(o->ip.s_addr);
	memcpy(cfg->local_mac, o->mac, 6);
	memcpy(cfg->gw_mac, o->gw_mac, 6);
	if (o->max_conns)
		cfg->max_conns = o->max_conns;
	if (o->buf)
		cfg->sndbuf = cfg->rcvbuf = o->buf;
	if (o->time_wait_ms)
		cfg->time_wait_us = o->time_wait_ms * 1000u;
	for (int i = 0; i < 16; i++)
		cfg->isn_key[i] = (uint8_t)(mono_us() >> (i % 8) ^ (uint64_t)getpid() >> i);
}

/* Opening a TAP device turns its carrier on, but the kernel sends nothing on it until its
 * link watcher has seen that (up to a second later): frames UTCP sends meanwhile are
 * answered into a void, and the first connections wait for a retransmission.  Wait for the
 * operational state to say "up" (bounded). */
static void wait_carrier(const char *dev)
{
	char path[128], state[16] = "";

	snprintf(path, sizeof(path), "/sys/class/net/%s/operstate", dev);
	for (int i = 0; i < 300; i++) {
		FILE *f = fopen(path, "r");

		if (f) {
			if (!fgets(state, sizeof(state), f))
				state[0] = 0;
			fclose(f);
		}
		if (!strncmp(state, "up", 2))
			return;
		usleep(10000);
	}
	fprintf(stderr, "mstack-utcpbench: %s: operstate still %s after 3 s\n", dev, state);
}

struct xdp_res {
	struct mstack_ctl *ctl;
	struct mstack_port *port;
	struct utcp_xdp *x;
	int shadow;
};

/* A UTCP stack on the chosen backend; `listen_port` (serve) registers the listening shadow
 * socket with mstackd, else (xdp) a block of local ports is leased for active opens. */
static void open_utcp(const struct opts *o, struct tr *t, struct xdp_res *xr, struct utcp_tap **tap,
		      int serving, uint16_t listen_port)
{
	struct utcp_config cfg;
	struct utcp_port port;
	int rc;

	memset(t, 0, sizeof(*t));
	t->kind = 1;
	t->u.fd = -1;
	stack_config(o, &cfg);
	if (!strcmp(o->backend, "tap")) {
		if ((rc = utcp_tap_open(o->dev, 64, tap)))
			die("tap", rc);
		port = utcp_tap_port(*tap);
		t->u.fd = utcp_tap_fd(*tap);
		wait_carrier(o->dev);
	} else {   /* xdp */
		struct mstack_ctl_port info;

		if ((rc = mstack_ctl_connect(&xr->ctl, o->run_dir)))
			die("connecting to mstackd", rc);
		if ((rc = mstack_ctl_port_open(xr->ctl, NULL, &info)) < 0)
			die("PORT_OPEN", rc);
		if ((rc = mstack_port_open(&xr->port, info.umem_fd, info.xsk_fd, &info.geom)))
			die("mapping the port", rc);
		if ((rc = utcp_xdp_open(&xr->x, xr->port)))
			die("xdp backend", rc);
		port = utcp_xdp_port(xr->x);
		t->u.fd = mstack_port_fd(xr->port);
		memcpy(cfg.local_mac, info.nic_mac, 6);
		memset(cfg.gw_mac, 0, 6);   /* the switch's egress fills in the MACs */
		cfg.mtu = (uint16_t)(info.mtu ? info.mtu : 1500);
		xr->shadow = -1;
		if (serving) {
			struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(listen_port),
						 .sin_addr = o->ip};
			int one = 1;

			xr->shadow = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			setsockopt(xr->shadow, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (bind(xr->shadow, (struct sockaddr *)&sa, sizeof(sa)) || listen(xr->shadow, 64))
				die("shadow socket", errno);
			if ((rc = mstack_ctl_register(xr->ctl, xr->shadow, MSTACK_REG_LISTEN, info.port_id, NULL)) < 0)
				die("REGISTER", rc);
			if ((rc = mstack_ctl_group_join(xr->ctl, (uint32_t)rc, info.port_id)))
				die("GROUP_JOIN", rc);
		} else {
			struct mstack_ctl_lease lease;

			if ((rc = mstack_ctl_lease(xr->ctl, info.port_id, o->lease, o->ip.s_addr, &lease)) < 0)
				die("LEASE", rc);
			cfg.ephemeral_lo = lease.first;
			cfg.ephemeral_hi = (uint16_t)(lease.first + lease.count - 1);
		}
	}
	t->u.now = mono_us();
	if ((rc = utcp_stack_create(&cfg, &port, t->u.now, &t->u.st)))
		die("utcp_stack_create", rc);
}

static void close_utcp(struct tr *t, struct xdp_res *xr, struct utcp_tap *tap)
{
	utcp_stack_destroy(t->u.st);
	if (tap)
		utcp_tap_close(tap);
	if (xr->x) {
		utcp_xdp_close(xr->x);
		mstack_port_close(xr->port);
		if (xr->shadow >= 0)
			close(xr->shadow);
		mstack_ctl_close(xr->ctl);
	}
}

/* ---- modes ---- */

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* Waits (pumping) until the stack's connections (blocks and TIME-WAIT entries) are back to
 * `base` or ms have passed. */
static void settle(struct tr *t, struct server *srv, struct client *cli, uint64_t base, uint32_t ms)
{
	uint64_t end = mono_us() + (uint64_t)ms * 1000u;

	while (t->kind == 1 && in_use(t) > base && mono_us() < end && !stop) {
		utcp_pump(&t->u);
		if (srv)
			server_step(srv);
		if (cli)
			client_step(cli);
		utcp_flush(t->u.st, t->u.now);
		wait_io(t, NULL, NULL, 10);
	}
}

static int run_serve(const struct opts *o, uint16_t lport)
{
	static struct server srv;
	struct tr t;
	struct xdp_res xr = {0};
	struct utcp_tap *tap = NULL;
	char line[256], js[2048];
	uint64_t base, deadline = mono_us() + (uint64_t)(o->max_seconds * 1e6);
	size_t have = 0;
	int rc;

	if (!strcmp(o->backend, "kernel")) {
		memset(&t, 0, sizeof(t));
		if ((rc = tr_listen(&t, o->ip, lport)))
			die("listen", rc);
	} else {
		open_utcp(o, &t, &xr, &tap, 1, lport);
		if ((rc = tr_listen(&t, o->ip, lport)))
			die("utcp_listen", rc);
	}
	srv.t = &t;
	base = in_use(&t);
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	printf("ready\n");
	fflush(stdout);
	while (!stop && mono_us() < deadline) {
		int work = 0;
		ssize_t r;

		if (t.kind == 1)
			work |= utcp_pump(&t.u);
		work |= server_step(&srv);
		if (t.kind == 1)
			utcp_flush(t.u.st, t.u.now);
		r = read(0, line + have, sizeof(line) - 1 - have);
		if (r == 0)
			break;
		if (r > 0) {
			char *nl;

			have += (size_t)r;
			line[have] = 0;
			while ((nl = strchr(line, '\n'))) {
				*nl = 0;
				if (!strcmp(line, "quit")) {
					stop = 1;
				} else if (!strncmp(line, "settle", 6)) {
					settle(&t, &srv, NULL, base, (uint32_t)atoi(line + 6));
				}
				if (!strncmp(line, "stats", 5) || !strncmp(line, "settle", 6)) {
					stats_json(&t, js, sizeof(js));
					printf("{\"done\": %llu, \"failed\": %llu, \"open\": %u, \"baseline_conns_in_use\": %llu, "
					       "\"stack\": %s}\n",
					       (unsigned long long)srv.done, (unsigned long long)srv.failed, srv.n,
					       (unsigned long long)base, js);
					fflush(stdout);
				}
				have -= (size_t)(nl + 1 - line);
				memmove(line, nl + 1, have + 1);
			}
			if (have >= sizeof(line) - 1)
				have = 0;
		}
		if (!work)
			wait_io(&t, &srv, NULL, 5);
	}
	for (unsigned i = 0; i < srv.n; i++)
		tr_close(&t, srv.c[i].h);
	if (t.kind == 1)
		close_utcp(&t, &xr, tap);
	else
		close(t.lfd);
	return 0;
}

static int run_client(const struct opts *o, struct client_opts *co)
{
	static struct client cli;
	static struct server psrv;
	struct tr t, ts;
	struct xdp_res xr = {0};
	struct utcp_tap *tap = NULL;
	struct utcp_pair *pair = NULL;
	char before[2048], after[2048], settled[2048], sjs[2048] = "null";
	uint64_t base, t0, t1, bytes_first = 0;
	int pairmode = !strcmp(o->backend, "pair");

	if (!strcmp(o->backend, "kernel")) {
		memset(&t, 0, sizeof(t));
		t.bind_ip = o->ip;
	} else if (pairmode) {
		/* Two stacks joined in memory; the server listens on co->port at co->ip. */
		struct utcp_pair_opts po;
		struct utcp_config cfg;
		struct utcp_port p0, p1;
		int rc;

		memset(&po, 0, sizeof(po));
		po.sz = sizeof(po);
		po.seed = 1;
		po.queue_frames = 8192;
		po.frame_size = 2048;
		if ((rc = utcp_pair_create(&po, &pair)))
			die("utcp_pair_create", rc);
		p0 = utcp_pair_port(pair, 0), p1 = utcp_pair_port(pair, 1);
		memset(&t, 0, sizeof(t)), memset(&ts, 0, sizeof(ts));
		t.kind = ts.kind = 1;
		t.u.fd = ts.u.fd = -1;
		stack_config(o, &cfg);
		cfg.local_ip = ntohl(co->ip.s_addr) ^ 1u;   /* the client: the server's address ^ 1 */
		cfg.local_mac[0] = cfg.gw_mac[0] = 2;
		cfg.local_mac[5] = 1, cfg.gw_mac[5] = 2;
		t.u.now = ts.u.now = mono_us();
		if ((rc = utcp_stack_create(&cfg, &p0, t.u.now, &t.u.st)))
			die("utcp_stack_create", rc);
		cfg.local_ip = ntohl(co->ip.s_addr);
		cfg.local_mac[5] = 2, cfg.gw_mac[5] = 1;
		if ((rc = utcp_stack_create(&cfg, &p1, ts.u.now, &ts.u.st)))
			die("utcp_stack_create", rc);
		if ((rc = tr_listen(&ts, co->ip, co->port)))
			die("utcp_listen", rc);
		psrv.t = &ts;
	} else {
		open_utcp(o, &t, &xr, &tap, 0, 0);
	}
	cli.t = &t;
	cli.o = co;
	base = in_use(&t);
	stats_json(&t, before, sizeof(before));
	/* With --warmup, a first phase of that many connections, settled: RSS and the stack's
	 * figures after it are the reference a long run is compared with. */
	uint64_t count = co->count, warm_done = 0;
	char warm[2048] = "null";
	for (int phase = co->warmup ? 0 : 1; phase < 2; phase++) {
	co->count = phase ? count : co->warmup;
	cli.started = cli.done = 0;
	t0 = mono_us();
	cli.deadline = t0 + (uint64_t)((co->seconds > 0 ? co->seconds : o->max_seconds) * 1e6);
	while (!stop && (cli.started < co->count || cli.n) && mono_us() < t0 + (uint64_t)(o->max_seconds * 1e6)) {
		int work = 0;

		if (t.kind == 1)
			work |= utcp_pump(&t.u);
		if (pairmode) {
			work |= utcp_pump(&ts.u);
			work |= server_step(&psrv);
			utcp_flush(ts.u.st, ts.u.now);
		}
		work |= client_step(&cli);
		if (t.kind == 1)
			utcp_flush(t.u.st, t.u.now);
		if (mono_us() >= cli.deadline && !cli.n)
			break;
		if (!work && !pairmode)
			wait_io(&t, NULL, &cli, 5);
	}
	if (!phase) {
		settle(&t, NULL, &cli, base, o->time_wait_ms * 4 + 2000);
		stats_json(&t, warm, sizeof(warm));
		warm_done = cli.done;
	}
	}
	t1 = mono_us();
	if (co->bulk)
		bytes_first = co->bytes;
	stats_json(&t, after, sizeof(after));
	uint64_t s0 = mono_us();
	if (pairmode) {
		/* Both stacks settle: the pair's server keeps its TIME-WAITs. */
		uint64_t end = mono_us() + (uint64_t)o->time_wait_ms * 1000u * 4 + 2000000u;

		while ((in_use(&t) > base || in_use(&ts) > psrv.n) && mono_us() < end) {
			utcp_pump(&t.u), utcp_pump(&ts.u);
			server_step(&psrv);
			utcp_flush(ts.u.st, ts.u.now), utcp_flush(t.u.st, t.u.now);
			usleep(1000);
		}
		stats_json(&ts, sjs, sizeof(sjs));
	} else {
		settle(&t, NULL, &cli, base, o->time_wait_ms * 4 + 2000);
	}
	stats_json(&t, settled, sizeof(settled));
	double secs = (double)(t1 - t0) / 1e6, settle_s = (double)(mono_us() - s0) / 1e6;
	printf("{\"done\": %llu, \"failed\": %llu, \"connect_errors\": %llu, \"last_connect_error\": %d, "
	       "\"seconds\": %.6f, \"settle_seconds\": %.3f, \"conns_per_s\": %.1f, \"bytes\": %llu, \"bits_per_s\": %.0f, "
	       "\"baseline_conns_in_use\": %llu, \"before\": %s, \"warmup_done\": %llu, \"warm\": %s, "
	       "\"after\": %s, \"settled\": %s, \"pair_server\": %s}\n",
	       (unsigned long long)cli.done, (unsigned long long)cli.failed,
	       (unsigned long long)cli.connect_errors, cli.last_err, secs, settle_s,
	       secs > 0 ? (double)cli.done / secs : 0.0, (unsigned long long)bytes_first,
	       secs > 0 && cli.done ? (double)bytes_first * 8 / secs : 0.0, (unsigned long long)base,
	       before, (unsigned long long)warm_done, warm, after, settled, sjs);
	fflush(stdout);
	for (unsigned i = 0; i < cli.n; i++)
		tr_close(&t, cli.c[i].h);
	if (pairmode) {
		for (unsigned i = 0; i < psrv.n; i++)
			tr_close(&ts, psrv.c[i].h);
		utcp_stack_destroy(t.u.st);
		utcp_stack_destroy(ts.u.st);
		utcp_pair_destroy(pair);
	} else if (t.kind == 1) {
		close_utcp(&t, &xr, tap);
	}
	return cli.failed || cli.done == 0 ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: mstack-utcpbench [--backend kernel|tap|xdp|pair] [--ip IP] [--dev IF --mac MAC "
		"--gw-mac MAC] [--run-dir DIR] [--lease N] [--max-conns N] [--buf BYTES] [--time-wait-ms MS] "
		"[--max-seconds S]\n"
		"    serve PORT | conns IP PORT [--count N] [--seconds S] [--concurrency C] [--req B] "
		"[--resp B] [--client-closes] [--warmup N] | bulk IP PORT --bytes N\n");
	exit(64);
}

static void parse_opt(int c, struct opts *o, struct client_opts *co)
{
	switch (c) {
	case 'b': o->backend = optarg; break;
	case 'i': if (inet_pton(AF_INET, optarg, &o->ip) != 1) usage(); break;
	case 'd': o->dev = optarg; break;
	case 'm': if (parse_mac(optarg, o->mac)) usage(); break;
	case 'g': if (parse_mac(optarg, o->gw_mac)) usage(); break;
	case 'r': o->run_dir = optarg; break;
	case 'l': o->lease = (uint32_t)atoi(optarg); break;
	case 'M': o->max_conns = (uint32_t)atoi(optarg); break;
	case 'B': o->buf = (uint32_t)atoi(optarg); break;
	case 'W': o->time_wait_ms = (uint32_t)atoi(optarg); break;
	case 'X': o->max_seconds = atof(optarg); break;
	case 'n': co->count = strtoull(optarg, NULL, 10); break;
	case 's': co->seconds = atof(optarg); co->count = UINT64_MAX; break;
	case 'c': co->concurrency = (unsigned)atoi(optarg); break;
	case 'q': co->req = (uint32_t)atoi(optarg); break;
	case 'p': co->resp = (uint32_t)atoi(optarg); break;
	case 'C': co->client_closes = 1; break;
	case 'y': co->bytes = strtoull(optarg, NULL, 10); break;
	case 'w': co->warmup = strtoull(optarg, NULL, 10); break;
	default: usage();
	}
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"backend", 1, 0, 'b'}, {"ip", 1, 0, 'i'}, {"dev", 1, 0, 'd'}, {"mac", 1, 0, 'm'},
		{"gw-mac", 1, 0, 'g'}, {"run-dir", 1, 0, 'r'}, {"lease", 1, 0, 'l'}, {"max-conns", 1, 0, 'M'},
		{"buf", 1, 0, 'B'}, {"time-wait-ms", 1, 0, 'W'}, {"max-seconds", 1, 0, 'X'},
		{"count", 1, 0, 'n'}, {"seconds", 1, 0, 's'}, {"concurrency", 1, 0, 'c'}, {"req", 1, 0, 'q'},
		{"resp", 1, 0, 'p'}, {"client-closes", 0, 0, 'C'}, {"bytes", 1, 0, 'y'}, {"warmup", 1, 0, 'w'},
		{0, 0, 0, 0},
	};
	struct opts o = {.backend = "kernel", .lease = 1024, .max_seconds = 300};
	struct client_opts co = {.count = 1, .concurrency = 1, .req = 64, .resp = 64};
	const char *mode;
	int c;

	/* Options, then the mode and its words, then more options. */
	while ((c = getopt_long(argc, argv, "+", lo, NULL)) != -1)
		parse_opt(c, &o, &co);
	if (optind >= argc)
		usage();
	mode = argv[optind++];
	if (!strcmp(mode, "serve")) {
		if (optind >= argc)
			usage();
		co.port = (uint16_t)atoi(argv[optind++]);
	} else if (!strcmp(mode, "conns") || !strcmp(mode, "bulk")) {
		if (optind + 2 > argc || inet_pton(AF_INET, argv[optind], &co.ip) != 1)
			usage();
		co.port = (uint16_t)atoi(argv[optind + 1]);
		optind += 2;
	} else {
		usage();
	}
	while ((c = getopt_long(argc, argv, "+", lo, NULL)) != -1)
		parse_opt(c, &o, &co);
	if (optind != argc)
		usage();
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(o.backend, "kernel") && strcmp(o.backend, "tap") && strcmp(o.backend, "xdp") &&
	    strcmp(o.backend, "pair"))
		usage();
	if ((!strcmp(o.backend, "tap") && !o.dev) || (!strcmp(o.backend, "xdp") && !o.ip.s_addr))
		usage();
	if (!strcmp(mode, "serve")) {
		if (!strcmp(o.backend, "pair"))
			usage();
		return run_serve(&o, co.port);
	}
	co.bulk = !strcmp(mode, "bulk");
	if (co.req < HDR_LEN)
		co.req = HDR_LEN;
	if (co.concurrency < 1 || co.concurrency > MAX_CONNS)
		usage();
	if (co.bulk)
		co.count = 1, co.concurrency = 1;
	return run_client(&o, &co);
}
