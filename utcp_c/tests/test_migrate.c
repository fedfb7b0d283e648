/* test_migrate.c — moving a listener's unaccepted connections from one stack to another
 * (utcp_sk_migrate_out / _done / _in), in virtual time.  A client stack C talks to a listen
 * group of two server stacks, A and B, with the same address and port, through a model of
 * the XDP switch: a flow is pinned to the member that got its first SYN, the test re-points
 * it after the move, and the switch's egress check drops whatever a member sends for a flow
 * it does not own.  The switch also watches every server segment: the window's right edge
 * must never move left and TSvals must never go back (PAWS) across the move. */
#define _GNU_SOURCE             /* POLLRDHUP */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "harness.h"
#include "testlib.h"
#include "utcp.h"
#include "utcp_sock.h"

#define C_IP 0x0a000001u
#define S_IP 0x0a000002u
#define PORT 80
#define NODES 3
enum { NC = 0, NA = 1, NB = 2 };
static const uint8_t c_mac[6] = {2, 0, 0, 0, 0, 0xc};
static const uint8_t s_mac[6] = {2, 0, 0, 0, 0, 0x5};

/* record layout (docs/utcp-sockets.md): offsets into a record */
#define HDR 16
#define REC 100
#define R_STATE 4
#define R_FLAGS 5
#define R_SND_WS 6
#define R_RCV_WS 7
#define R_LADDR 8
#define R_LPORT 16
#define R_MSS 26
#define R_RCV_NXT 56
#define R_DATA_LEN 96

/* ---- the switch ---- */

#define QMAX 8192
#define FLOWS 64
#define FRAME 2048

struct qframe {
	uint8_t data[FRAME];
	uint32_t len;
	uint64_t at;
	int from;
};

struct flow {
	uint32_t raddr;             /* the client's side */
	uint16_t rport;
	int owner;
	/* what the servers said on it */
	uint8_t wscale;             /* from the SYN,ACK */
	bool have_edge, have_ts;
	uint32_t edge, tsval;
	uint64_t ts_at;             /* when tsval was sent */
};

/* drop filter: returns true to lose the frame */
typedef bool (*drop_fn)(void *arg, int from, const struct utcp_tcp *th);

struct net {
	struct qframe *q;
	unsigned head, n;           /* FIFO: one delay for every frame keeps it in time order */
	uint64_t delay;
	struct flow flows[FLOWS];
	unsigned nflows;
	int default_owner;
	drop_fn drop;
	void *drop_arg;
	struct end {
		struct net *net;
		int idx;
		uint8_t rx[64][FRAME];
	} ends[NODES];
	/* counters */
	uint64_t egress_dropped, lost, shrinks, ts_back, ts_jumps;
	uint64_t sent[NODES], rst_sent[NODES], syn_acks[NODES], data_to[NODES];
};

static struct flow *flow_of(struct net *n, uint32_t raddr, uint16_t rport, bool add)
{
	unsigned i;

	for (i = 0; i < n->nflows; i++)
		if (n->flows[i].raddr == raddr && n->flows[i].rport == rport)
			return &n->flows[i];
	if (!add || n->nflows == FLOWS)
		return NULL;
	memset(&n->flows[n->nflows], 0, sizeof(n->flows[0]));
	n->flows[n->nflows].raddr = raddr;
	n->flows[n->nflows].rport = rport;
	n->flows[n->nflows].owner = n->default_owner;
	return &n->flows[n->nflows++];
}

static bool parse(const uint8_t *d, uint32_t len, struct utcp_ipv4 *ip, struct utcp_tcp *th)
{
	struct utcp_eth eth;
	enum utcp_drop why;

	return utcp_eth_parse(d, len, &eth, &why) == 0 &&
	       utcp_ipv4_parse(d + UTCP_ETH_HLEN, len - UTCP_ETH_HLEN, ip, &why) == 0 &&
	       ip->proto == UTCP_IPPROTO_TCP &&
	       utcp_tcp_parse(ip->payload, ip->payload_len, ip->src, ip->dst, false, th, &why) == 0;
}

/* A server segment: the invariants the move must keep for the client.  Every process runs
 * the same clock, so a flow's TSvals advance exactly with time (1 ms ticks), whichever member
 * sends them. */
static void watch_server(struct net *n, struct flow *f, const struct utcp_tcp *th, uint64_t now)
{
	if ((th->flags & UTCP_TH_SYN) && th->opt.has_ws)
		f->wscale = th->opt.ws;
	if (th->opt.has_ts) {
		if (f->have_ts && (int32_t)(th->opt.tsval - f->tsval) < 0)
			n->ts_back++;
		else if (f->have_ts && th->opt.tsval - f->tsval > (now - f->ts_at) / 1000 + 1)
			n->ts_jumps++;
		f->have_ts = true;
		f->tsval = th->opt.tsval;
		f->ts_at = now;
	}
	if ((th->flags & UTCP_TH_ACK) && !(th->flags & (UTCP_TH_SYN | UTCP_TH_RST))) {
		uint32_t edge = th->ack + ((uint32_t)th->wnd << f->wscale);

		if (f->have_edge && (int32_t)(edge - f->edge) < 0) {
			n->shrinks++;
			if (getenv("MIG_DEBUG"))
				fprintf(stderr, "shrink: flags %#x ack %u wnd %u << %u: edge %u < %u\n",
					th->flags, th->ack, th->wnd, f->wscale, edge, f->edge);
		}
		if (!f->have_edge || (int32_t)(edge - f->edge) > 0)
			f->edge = edge;
		f->have_edge = true;
	}
}

static int net_tx(void *ctx, const struct utcp_frame *fr, unsigned cnt, uint64_t now)
{
	struct end *e = ctx;
	struct net *n = e->net;
	unsigned i;

	for (i = 0; i < cnt; i++) {
		struct utcp_ipv4 ip;
		struct utcp_tcp th;
		struct qframe *q;
		struct flow *f;

		CHECK(fr[i].len <= FRAME);
		CHECK(parse(fr[i].data, fr[i].len, &ip, &th));
		f = e->idx == NC ? flow_of(n, ip.src, th.sport, true) : flow_of(n, ip.dst, th.dport, false);
		CHECK(f != NULL);
		if (e->idx != NC && f->owner != e->idx) {
			n->egress_dropped++;        /* the switch's egress check */
			continue;
		}
		n->sent[e->idx]++;
		if (th.flags & UTCP_TH_RST)
			n->rst_sent[e->idx]++;
		if ((th.flags & (UTCP_TH_SYN | UTCP_TH_ACK)) == (UTCP_TH_SYN | UTCP_TH_ACK))
			n->syn_acks[e->idx]++;
		if (e->idx != NC)
			watch_server(n, f, &th, now);
		if (n->drop && n->drop(n->drop_arg, e->idx, &th)) {
			n->lost++;
			continue;
		}
		CHECK(n->n < QMAX);
		q = &n->q[(n->head + n->n++) % QMAX];
		memcpy(q->data, fr[i].data, fr[i].len);
		q->len = fr[i].len;
		q->at = now + n->delay;
		q->from = e->idx;
	}
	return (int)cnt;
}

/* Where a frame goes: the client's to its flow's owner as the switch sees it on arrival. */
static int dest_of(struct net *n, const struct qframe *q)
{
	struct utcp_ipv4 ip;
	struct utcp_tcp th;

	if (q->from != NC)
		return NC;
	CHECK(parse(q->data, q->len, &ip, &th));
	return flow_of(n, ip.src, th.sport, true)->owner;
}

static int net_rx(void *ctx, struct utcp_frame *fr, unsigned max, uint64_t now)
{
	struct end *e = ctx;
	struct net *n = e->net;
	unsigned got = 0, i, keep = 0;
	unsigned cnt = n->n;

	/* the due frames for this end leave the queue; the others keep their order */
	for (i = 0; i < cnt; i++) {
		struct qframe *q = &n->q[(n->head + i) % QMAX];
		bool take = q->at <= now && got < max && got < 64 && dest_of(n, q) == e->idx;

		if (take) {
			struct utcp_ipv4 ip;
			struct utcp_tcp th;

			if (e->idx != NC && parse(q->data, q->len, &ip, &th) && th.payload_len)
				n->data_to[e->idx] += th.payload_len;
			memcpy(e->rx[got], q->data, q->len);
			fr[got].data = e->rx[got];
			fr[got].len = q->len;
			fr[got].cookie = 0;
			got++;
		} else {
			if (keep != i)
				n->q[(n->head + keep) % QMAX] = *q;
			keep++;
		}
	}
	n->n = keep;
	return (int)got;
}

static const struct utcp_port_ops net_ops = {
	.sz = sizeof(struct utcp_port_ops),
	.name = "test-switch",
	.rx_burst = net_rx,
	.rx_release = h_nop_rx_release,
	.tx_burst = net_tx,
	.kick = h_nop_kick,
};

static uint64_t net_next(const struct net *n)
{
	uint64_t t = UINT64_MAX;
	unsigned i;

	for (i = 0; i < n->n; i++)
		if (n->q[(n->head + i) % QMAX].at < t)
			t = n->q[(n->head + i) % QMAX].at;
	return t;
}

/* ---- the world: client C, group members A and B ---- */

struct w {
	struct net net;
	struct utcp_stack *st[NODES];
	struct utcp_socks *ss[NODES];
	uint64_t now;
	int la, lb;                 /* the listeners of A and B */
	uint8_t blob[1 << 20];
	size_t blob_len;
	struct utcp_mig_flow flows[64];
};

static void cfg_for(struct utcp_config *c, int node)
{
	utcp_config_init(c);
	c->local_ip = node == NC ? C_IP : S_IP;
	memcpy(c->local_mac, node == NC ? c_mac : s_mac, 6);
	memcpy(c->gw_mac, node == NC ? s_mac : c_mac, 6);
	c->max_conns = 16;
	c->max_listeners = 4;
	c->sndbuf = 256 * 1024;
	c->rcvbuf = 256 * 1024;
	/* every stack its own secret: ISNs and timestamp offsets differ, as between processes */
	memcpy(c->isn_key, node == NC ? "keyC-0123456789c" : node == NA ? "keyA-0123456789a"
								   : "keyB-0123456789b", 16);
}

static void w_init(struct w *w, int backlog_a, int backlog_b)
{
	int i;

	memset(w, 0, sizeof(*w));
	w->net.q = calloc(QMAX, sizeof(*w->net.q));
	CHECK(w->net.q != NULL);
	w->net.delay = 1000;                    /* 2 ms RTT */
	w->net.default_owner = NA;
	w->now = 1000000;
	for (i = 0; i < NODES; i++) {
		struct utcp_config c;
		struct utcp_port p;

		w->net.ends[i].net = &w->net;
		w->net.ends[i].idx = i;
		p.ops = &net_ops;
		p.ctx = &w->net.ends[i];
		cfg_for(&c, i);
		CHECK_EQ(utcp_stack_create(&c, &p, w->now, &w->st[i]), 0);
		CHECK_EQ(utcp_socks_create(w->st[i], NULL, &w->ss[i]), 0);
	}
	w->la = utcp_sk_open(w->ss[NA]);
	w->lb = utcp_sk_open(w->ss[NB]);
	CHECK_EQ(utcp_sk_listen(w->ss[NA], w->la, PORT, backlog_a), 0);
	CHECK_EQ(utcp_sk_listen(w->ss[NB], w->lb, PORT, backlog_b), 0);
}

static void w_free(struct w *w)
{
	int i;

	for (i = 0; i < NODES; i++) {
		utcp_socks_destroy(w->ss[i], w->now);
		utcp_stack_destroy(w->st[i]);
	}
	free(w->net.q);
}

static void w_step(void *arg)
{
	struct w *w = arg;
	int i;

	for (i = 0; i < NODES; i++) {
		utcp_poll(w->st[i], w->now);
		utcp_socks_process(w->ss[i], w->now);
		utcp_flush(w->st[i], w->now);
	}
}

static uint64_t w_next(void *arg)
{
	struct w *w = arg;
	uint64_t next = net_next(&w->net), d;
	int i;

	for (i = 0; i < NODES; i++) {
		d = utcp_next_deadline(w->st[i]);
		next = d < next ? d : next;
	}
	return next;
}

/* Runs the three stacks and the switch for `us` of virtual time, event by event. */
static void w_run(struct w *w, uint64_t us)
{
	h_run_world(&w->now, us, w_step, w_next, w);
}

static int w_connect(struct w *w)
{
	int c = utcp_sk_open(w->ss[NC]);

	CHECK(c >= 0);
	CHECK_EQ(utcp_sk_connect(w->ss[NC], c, S_IP, PORT, 0, NULL, w->now), -EINPROGRESS);
	return c;
}

static ssize_t send_buf(struct w *w, int node, int sk, const void *p, size_t len)
{
	struct iovec v = {(void *)p, len};

	return utcp_sk_send(w->ss[node], sk, &v, 1, 0, w->now);
}

static void send_all(struct w *w, int node, int sk, const void *p, size_t len)
{
	CHECK_EQ(send_buf(w, node, sk, p, len), (long long)len);
	utcp_flush(w->st[node], w->now);
}

static ssize_t recv_buf(struct w *w, int node, int sk, void *p, size_t len)
{
	struct iovec v = {p, len};

	return utcp_sk_recv(w->ss[node], sk, &v, 1, 0, w->now);
}

/* Reads until end of stream (or nothing more comes within the time given). */
static size_t recv_until_eof(struct w *w, int node, int sk, uint8_t *p, size_t cap, uint64_t within)
{
	uint64_t end = w->now + within;
	size_t got = 0;

	while (w->now < end) {
		ssize_t r = recv_buf(w, node, sk, p + got, cap - got);

		if (r == 0)
			return got;
		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		CHECK_EQ(r, -EAGAIN);
		w_run(w, 5000);
	}
	FAIL("no end of stream after %zu bytes", got);
}

static size_t recv_n(struct w *w, int node, int sk, uint8_t *p, size_t want, uint64_t within)
{
	uint64_t end = w->now + within;
	size_t got = 0;

	while (got < want && w->now < end) {
		ssize_t r = recv_buf(w, node, sk, p + got, want - got);

		if (r > 0) {
			got += (size_t)r;
			continue;
		}
		CHECK_EQ(r, -EAGAIN);
		w_run(w, 5000);
	}
	return got;
}

static void repoint(struct w *w, const struct utcp_mig_flow *f, int n, int owner)
{
	int i;

	for (i = 0; i < n; i++) {
		struct flow *fl = flow_of(&w->net, f[i].raddr, f[i].rport, false);

		CHECK(fl != NULL);
		CHECK_EQ(f[i].laddr, S_IP);
		CHECK_EQ(f[i].lport, PORT);
		fl->owner = owner;
	}
}

static int migrate_out(struct w *w, int max)
{
	return utcp_sk_migrate_out(w->ss[NA], w->la, w->flows, max, w->blob, sizeof(w->blob),
				   &w->blob_len, w->now);
}

static const struct utcp_stats *stats(struct w *w, int node)
{
	return utcp_get_stats(w->st[node]);
}

/* The invariants every test ends with: the client never saw the right edge of a window move
 * left, nor a TSval go back. */
static void check_invariants(struct w *w)
{
	CHECK_EQ(w->net.shrinks, 0);
	CHECK_EQ(w->net.ts_back, 0);
	CHECK_EQ(w->net.ts_jumps, 0);
	CHECK_EQ(stats(w, NC)->drops[UTCP_DROP_PAWS], 0);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 131 + seed * 7 + (i >> 8));
}

static const char request[] = "GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n";

/* The move itself: out of A, into B, the switch re-pointed, A told.  Returns the count. */
static int move_all(struct w *w, int expect)
{
	uint64_t a_out = w->net.sent[NA];
	int n = migrate_out(w, 64), m;

	CHECK_EQ(n, expect);
	CHECK(w->blob_len >= HDR);
	m = utcp_sk_migrate_in(w->ss[NB], w->lb, w->blob, w->blob_len, w->now);
	CHECK_EQ(m, expect);
	repoint(w, w->flows, m, NB);
	utcp_sk_migrate_done(w->ss[NA], w->la, m, w->now);
	utcp_flush(w->st[NA], w->now);
	CHECK_EQ(w->net.sent[NA], a_out);       /* nothing at all, not even a RST */
	CHECK_EQ(stats(w, NA)->migrated_out, (uint64_t)m);
	CHECK_EQ(stats(w, NB)->migrated_in, (uint64_t)m);
	return m;
}

/* A move B takes only part of: `out` frozen at A, the first `in` adopted by B and the switch
 * re-pointed for them, A told (it resets the rest). */
static void move_part(struct w *w, int out, int in)
{
	CHECK_EQ(migrate_out(w, 64), out);
	CHECK_EQ(utcp_sk_migrate_in(w->ss[NB], w->lb, w->blob, w->blob_len, w->now), in);
	repoint(w, w->flows, in, NB);
	utcp_sk_migrate_done(w->ss[NA], w->la, in, w->now);
}

/* A new client that sent the request: its socket. */
static int connect_and_request(struct w *w)
{
	int c = w_connect(w);

	w_run(w, 10000);
	send_all(w, NC, c, request, sizeof(request) - 1);
	return c;
}

/* B's first connection after a move. */
static int accept_moved(struct w *w)
{
	int s;

	utcp_socks_process(w->ss[NB], w->now);
	s = utcp_sk_accept(w->ss[NB], w->lb, NULL);
	CHECK(s >= 0);
	return s;
}

static struct utcp_conn_info info_of(struct w *w, int node, int sk)
{
	struct utcp_conn_info ci;

	memset(&ci, 0, sizeof(ci));
	ci.sz = sizeof(ci);
	CHECK_EQ(utcp_sk_info(w->ss[node], sk, &ci), 0);
	return ci;
}

/* len bytes of p from socket fs of node `from` to socket ts of node `to`, sent as fast as
 * they are taken and read into got (cap bytes) until all arrived, exact; fails if the clock
 * passes `limit` first. */
static void stream(struct w *w, int from, int fs, int to, int ts, const uint8_t *p, size_t len,
		   uint8_t *got, size_t cap, uint64_t limit)
{
	size_t sent = 0, n = 0;

	while (n < len) {
		ssize_t r;

		if (sent < len) {
			r = send_buf(w, from, fs, p + sent, len - sent);
			if (r > 0)
				sent += (size_t)r;
		}
		r = recv_buf(w, to, ts, got + n, cap - n);
		if (r > 0) {
			n += (size_t)r;
			continue;
		}
		CHECK(w->now < limit);
		w_run(w, 2000);
	}
	CHECK_MEM(got, p, len);
}

/* B sends its answer (len bytes) on s and closes; the client reads it to the end of the stream,
 * exact, and closes c too. */
static void answer_and_close(struct w *w, int s, int c, const uint8_t *resp, size_t len)
{
	static uint8_t got[4096];

	send_all(w, NB, s, resp, len);
	CHECK_EQ(utcp_sk_close(w->ss[NB], s, w->now), 0);
	CHECK_EQ(recv_until_eof(w, NC, c, got, sizeof(got), 3000000), len);
	CHECK_MEM(got, resp, len);
	CHECK_EQ(utcp_sk_close(w->ss[NC], c, w->now), 0);
}

/* `after` from now, every connection closed: neither B nor the client holds one, and no RST
 * came to either. */
static void all_closed(struct w *w, uint64_t after)
{
	w_run(w, after);
	CHECK_EQ(stats(w, NB)->conns_in_use, 0);
	CHECK_EQ(stats(w, NC)->conns_in_use, 0);
	CHECK_EQ(stats(w, NC)->rst_in + stats(w, NB)->rst_in, 0);
}

/* ---- tests ---- */

/* A request waits in A's accept queue; A freezes it, B adopts it; what the client sends
 * while it is frozen is dropped by A and comes again to B; B answers, both close cleanly. */
TEST(test_established_request_moves)
{
	static struct w w;
	static uint8_t got[4096], resp[3000], more[300];
	struct utcp_conn_info ci;
	struct utcp_sk_name peer;
	uint64_t a_out, drops;
	int c, s;

	w_init(&w, 8, 8);
	fill(resp, sizeof(resp), 1);
	fill(more, sizeof(more), 2);
	c = connect_and_request(&w);
	w_run(&w, 100000);                      /* delivered and acknowledged */
	CHECK_EQ(utcp_sk_ready(w.ss[NA], w.la), POLLIN);

	CHECK_EQ(migrate_out(&w, 64), 1);
	CHECK_EQ(w.flows[0].raddr, C_IP);
	CHECK_EQ(w.flows[0].lport, PORT);
	/* frozen: not acceptable, no POLLIN, no timers, deaf and mute */
	CHECK_EQ(utcp_sk_ready(w.ss[NA], w.la), 0);
	CHECK_EQ(utcp_sk_accept(w.ss[NA], w.la, NULL), -EAGAIN);
	CHECK(utcp_next_deadline(w.st[NA]) == UINT64_MAX);
	a_out = w.net.sent[NA];
	drops = stats(&w, NA)->frozen_drops;
	send_all(&w, NC, c, more, sizeof(more));
	w_run(&w, 50000);
	CHECK(stats(&w, NA)->frozen_drops > drops);
	CHECK_EQ(w.net.sent[NA], a_out);
	CHECK_EQ(w.net.data_to[NB], 0);

	/* B's listener has a small SO_RCVBUF: the window A offered must hold all the same */
	CHECK_EQ(utcp_sk_setopt(w.ss[NB], w.lb, UTCP_SO_RCVBUF, 2048), 0);
	CHECK_EQ(utcp_sk_migrate_in(w.ss[NB], w.lb, w.blob, w.blob_len, w.now), 1);
	repoint(&w, w.flows, 1, NB);
	utcp_sk_migrate_done(w.ss[NA], w.la, 1, w.now);
	utcp_flush(w.st[NA], w.now);
	CHECK_EQ(w.net.sent[NA], a_out);
	CHECK_EQ(stats(&w, NA)->migrated_out, 1);
	CHECK_EQ(stats(&w, NA)->conns_in_use, 0);
	CHECK_EQ(stats(&w, NA)->time_wait_in_use, 0);
	CHECK_EQ(stats(&w, NA)->rst_out, 0);

	/* B: queued, POLLIN, the request bytes exact; the retransmission brings the rest */
	utcp_socks_process(w.ss[NB], w.now);
	CHECK_EQ(utcp_sk_ready(w.ss[NB], w.lb), POLLIN);
	s = utcp_sk_accept(w.ss[NB], w.lb, &peer);
	CHECK(s >= 0);
	CHECK_EQ(peer.raddr, C_IP);
	CHECK_EQ(peer.lport, PORT);
	CHECK_EQ(recv_n(&w, NB, s, got, sizeof(request) - 1 + sizeof(more), 3000000),
		 sizeof(request) - 1 + sizeof(more));
	CHECK_MEM(got, request, sizeof(request) - 1);
	CHECK_MEM(got + sizeof(request) - 1, more, sizeof(more));
	CHECK_EQ(w.net.data_to[NB], sizeof(more));      /* only the retransmission */
	ci = info_of(&w, NB, s);
	CHECK_EQ(ci.state, UTCP_ESTABLISHED);
	CHECK(ci.ts_ok && ci.sack_ok && ci.ws_ok);

	/* B answers and closes; the client reads it all, then closes too */
	answer_and_close(&w, s, c, resp, sizeof(resp));
	all_closed(&w, 100000);
	CHECK_EQ(stats(&w, NC)->drops[UTCP_DROP_NO_CONN] + stats(&w, NB)->drops[UTCP_DROP_NO_CONN], 0);
	CHECK_EQ(w.net.egress_dropped, 0);
	check_invariants(&w);
	w_free(&w);
}

/* The request and the client's FIN: CLOSE-WAIT moves, B reads the request, then end of
 * stream, answers, and the connection ends in the client's TIME-WAIT. */
TEST(test_close_wait_moves)
{
	static struct w w;
	static uint8_t got[4096], resp[1000];
	int c, s;

	w_init(&w, 8, 8);
	fill(resp, sizeof(resp), 3);
	c = connect_and_request(&w);
	CHECK_EQ(utcp_sk_shutdown(w.ss[NC], c, SHUT_WR, w.now), 0);
	w_run(&w, 100000);
	CHECK_EQ(move_all(&w, 1), 1);
	s = accept_moved(&w);
	CHECK_EQ(utcp_sk_ready(w.ss[NB], s), POLLIN | POLLOUT | POLLRDHUP);
	CHECK_EQ(recv_until_eof(&w, NB, s, got, sizeof(got), 1000000), sizeof(request) - 1);
	CHECK_MEM(got, request, sizeof(request) - 1);
	answer_and_close(&w, s, c, resp, sizeof(resp));
	all_closed(&w, 100000);
	CHECK_EQ(stats(&w, NC)->time_wait_in_use, 1);   /* the client closed first */
	check_invariants(&w);
	w_free(&w);
}

/* Lose the n-th and n+4-th full data segments the client sends after the move. */
struct loss {
	int count;
	bool armed;
};

static bool drop_some(void *arg, int from, const struct utcp_tcp *th)
{
	struct loss *l = arg;

	if (!l->armed || from != NC || th->payload_len < 1000)
		return false;
	l->count++;
	return l->count == 3 || l->count == 7;
}

/* After the move, 600 KB each way: the window scale carried over lets the client fill B's big
 * window, SACK recovers two losses without a timeout, timestamps go on without PAWS drops. */
TEST(test_options_work_after_move)
{
	static struct w w;
	static uint8_t up[600 * 1024], down[600 * 1024], got[600 * 1024];
	struct utcp_conn_info ci;
	struct loss loss = {0, false};
	int c, s;

	w_init(&w, 8, 8);
	fill(up, sizeof(up), 4);
	fill(down, sizeof(down), 5);
	w.net.drop = drop_some;
	w.net.drop_arg = &loss;
	c = connect_and_request(&w);
	w_run(&w, 100000);
	CHECK_EQ(move_all(&w, 1), 1);
	s = accept_moved(&w);
	CHECK_EQ(recv_n(&w, NB, s, got, sizeof(request) - 1, 1000000), sizeof(request) - 1);
	ci = info_of(&w, NB, s);
	CHECK(ci.ws_ok && ci.sack_ok && ci.ts_ok);
	CHECK_EQ(ci.rcv_wscale, 3);             /* A's, for its 256 KB buffer */
	CHECK(ci.rcv_wnd > 65535);

	/* upload with two losses */
	loss.armed = true;
	stream(&w, NC, c, NB, s, up, sizeof(up), got, sizeof(got), 30000000);
	CHECK_EQ(loss.count >= 7, 1);
	ci = info_of(&w, NC, c);
	CHECK(ci.retransmits >= 2 && ci.retransmits <= 6);     /* the holes, not the flight */
	CHECK_EQ(ci.rto_timeouts, 0);           /* SACK found both holes */
	CHECK_EQ(ci.spurious_recoveries, 0);
	CHECK(stats(&w, NB)->segs_in > 400);

	/* download */
	loss.armed = false;
	stream(&w, NB, s, NC, c, down, sizeof(down), got, sizeof(got), 60000000);
	CHECK_EQ(utcp_sk_close(w.ss[NB], s, w.now), 0);
	CHECK_EQ(utcp_sk_close(w.ss[NC], c, w.now), 0);
	all_closed(&w, 200000);
	CHECK_EQ(stats(&w, NB)->drops[UTCP_DROP_PAWS], 0);
	check_invariants(&w);
	w_free(&w);
}

/* Drop the client's frames to A from the handshake's ACK on: A stays in SYN-RECEIVED. */
static bool drop_acks_to_a(void *arg, int from, const struct utcp_tcp *th)
{
	struct w *w = arg;

	(void)w;
	return from == NC && !(th->flags & UTCP_TH_SYN) && w->net.flows[0].owner == NA;
}

/* A world whose A keeps every connection half-open (drop_acks_to_a). */
static void w_init_half_open(struct w *w)
{
	w_init(w, 8, 8);
	w->net.drop = drop_acks_to_a;
	w->net.drop_arg = w;
}

/* A half-open connection moves: B's SYN,ACK timer runs (the client sent nothing, so only it
 * can complete the handshake), then B accepts and speaks first. */
TEST(test_half_open_moves_synack_retransmitted)
{
	static struct w w;
	static uint8_t got[256];
	const char hello[] = "220 ready\r\n";
	struct utcp_conn_info ci;
	int c, s;

	w_init_half_open(&w);
	c = w_connect(&w);
	w_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.ss[NC], c), POLLOUT);  /* the client is connected */
	CHECK_EQ(utcp_sk_ready(w.ss[NA], w.la), 0);
	CHECK_EQ(move_all(&w, 1), 1);
	CHECK_EQ(w.blob[HDR + R_STATE], UTCP_SYN_RECEIVED);
	CHECK_EQ(stats(&w, NA)->conns_in_use, 0);
	utcp_socks_process(w.ss[NB], w.now);
	CHECK_EQ(utcp_sk_ready(w.ss[NB], w.lb), 0);      /* not established yet */
	CHECK_EQ(w.net.syn_acks[NB], 0);                 /* nothing sent at adoption */
	CHECK(utcp_next_deadline(w.st[NB]) != UINT64_MAX);
	w_run(&w, 1500000);                              /* A's RTO (1 s) runs on in B */
	CHECK_EQ(w.net.syn_acks[NB], 1);
	CHECK_EQ(utcp_sk_ready(w.ss[NB], w.lb), POLLIN);
	s = utcp_sk_accept(w.ss[NB], w.lb, NULL);
	CHECK(s >= 0);
	send_all(&w, NB, s, hello, sizeof(hello) - 1);
	CHECK_EQ(recv_n(&w, NC, c, got, sizeof(hello) - 1, 1000000), sizeof(hello) - 1);
	CHECK_MEM(got, hello, sizeof(hello) - 1);
	ci = info_of(&w, NB, s);
	CHECK(ci.ts_ok && ci.sack_ok && ci.ws_ok);
	CHECK_EQ(utcp_sk_close(w.ss[NB], s, w.now), 0);
	CHECK_EQ(utcp_sk_close(w.ss[NC], c, w.now), 0);
	all_closed(&w, 100000);
	check_invariants(&w);
	w_free(&w);
}

/* A half-open connection whose client sent its request at once (lost at A): the client's
 * retransmission completes the handshake at B, request and all. */
TEST(test_half_open_moves_with_request)
{
	static struct w w;
	static uint8_t got[256];
	int c, s;

	w_init_half_open(&w);
	c = connect_and_request(&w);
	w_run(&w, 10000);
	CHECK_EQ(move_all(&w, 1), 1);
	w_run(&w, 900000);                      /* the client's RTO comes before B's (1 s) */
	CHECK_EQ(w.net.syn_acks[NB], 0);
	s = utcp_sk_accept(w.ss[NB], w.lb, NULL);
	CHECK(s >= 0);
	CHECK_EQ(recv_n(&w, NB, s, got, sizeof(request) - 1, 100000), sizeof(request) - 1);
	CHECK_MEM(got, request, sizeof(request) - 1);
	CHECK_EQ(utcp_sk_close(w.ss[NB], s, w.now), 0);
	CHECK_EQ(recv_until_eof(&w, NC, c, got, sizeof(got), 1000000), 0);
	CHECK_EQ(utcp_sk_close(w.ss[NC], c, w.now), 0);
	w_run(&w, 100000);
	CHECK_EQ(stats(&w, NB)->conns_in_use, 0);
	CHECK_EQ(stats(&w, NC)->rst_in + stats(&w, NB)->rst_in, 0);
	check_invariants(&w);
	w_free(&w);
}

/* Three queued on A, room for one at B (backlog 0: one may wait): migrate_in stops at 1;
 * migrate_done(1) releases the first and resets the other two, which the clients see. */
TEST(test_done_resets_the_rest)
{
	static struct w w;
	static uint8_t got[256];
	int c[3], i, s;

	w_init(&w, 8, 0);
	for (i = 0; i < 3; i++)
		c[i] = connect_and_request(&w);
	w_run(&w, 100000);
	move_part(&w, 3, 1);
	w_run(&w, 10000);
	CHECK_EQ(w.net.rst_sent[NA], 2);
	CHECK_EQ(stats(&w, NA)->migrated_out, 1);
	CHECK_EQ(stats(&w, NA)->conns_in_use, 0);
	/* the migrate_out order is the accept queue's: c[0] moved */
	CHECK_EQ(utcp_sk_error(w.ss[NC], c[0]), 0);
	CHECK_EQ(utcp_sk_error(w.ss[NC], c[1]), -ECONNRESET);
	CHECK_EQ(utcp_sk_error(w.ss[NC], c[2]), -ECONNRESET);
	s = utcp_sk_accept(w.ss[NB], w.lb, NULL);
	CHECK(s >= 0);
	CHECK_EQ(utcp_sk_accept(w.ss[NB], w.lb, NULL), -EAGAIN);
	CHECK_EQ(recv_n(&w, NB, s, got, sizeof(request) - 1, 100000), sizeof(request) - 1);
	CHECK_MEM(got, request, sizeof(request) - 1);
	/* A's listener goes on as before: a new client is accepted there */
	w.net.default_owner = NA;
	i = w_connect(&w);
	w_run(&w, 10000);
	CHECK(utcp_sk_accept(w.ss[NA], w.la, NULL) >= 0);
	check_invariants(&w);
	w_free(&w);
}

/* B's queue (backlog 2: three may wait) already holds one connection: of four offered, two
 * are adopted, in order; the rest go back to A, which resets them. */
TEST(test_import_full_queue_count)
{
	static struct w w;
	int c[5], i, n = 0;

	w_init(&w, 8, 2);
	w.net.default_owner = NB;
	c[4] = w_connect(&w);
	w_run(&w, 10000);
	w.net.default_owner = NA;
	for (i = 0; i < 4; i++) {
		c[i] = w_connect(&w);
		w_run(&w, 10000);
	}
	w_run(&w, 10000);
	move_part(&w, 4, 2);
	w_run(&w, 10000);
	while (utcp_sk_accept(w.ss[NB], w.lb, NULL) >= 0)
		n++;
	CHECK_EQ(n, 3);
	CHECK_EQ(utcp_sk_error(w.ss[NC], c[0]), 0);
	CHECK_EQ(utcp_sk_error(w.ss[NC], c[1]), 0);
	CHECK_EQ(utcp_sk_error(w.ss[NC], c[2]), -ECONNRESET);
	CHECK_EQ(utcp_sk_error(w.ss[NC], c[3]), -ECONNRESET);
	CHECK_EQ(stats(&w, NB)->migrated_in, 2);
	w_free(&w);
}

static void put32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* migrate_in of blob b: the result, and that nothing was adopted when it failed. */
static int try_in(struct w *w, const uint8_t *b, size_t len)
{
	uint64_t before = stats(w, NB)->conns_in_use;
	int rc = utcp_sk_migrate_in(w->ss[NB], w->lb, b, len, w->now);

	if (rc <= 0) {
		CHECK_EQ(stats(w, NB)->conns_in_use, before);
		CHECK_EQ(utcp_sk_ready(w->ss[NB], w->lb), 0);
	}
	return rc;
}

/* A real blob of two records (one with data), damaged every which way: -EBADMSG (or -EINVAL
 * for another address or port) and nothing adopted; undamaged, it is adopted. */
TEST(test_malformed_blobs_rejected)
{
	static struct w w;
	static uint8_t b[8192];
	size_t len, i, r2;
	int c[2];

	w_init(&w, 8, 8);
	for (i = 0; i < 2; i++) {
		c[i] = w_connect(&w);
		w_run(&w, 10000);
	}
	send_all(&w, NC, c[1], request, sizeof(request) - 1);
	w_run(&w, 100000);
	CHECK_EQ(migrate_out(&w, 64), 2);
	len = w.blob_len;
	CHECK_EQ(len, HDR + 2 * REC + sizeof(request) - 1);
	r2 = HDR + REC;
	CHECK_EQ(w.blob[HDR + R_STATE], UTCP_ESTABLISHED);
	CHECK_EQ(w.blob[HDR + R_DATA_LEN], 0);
	CHECK_EQ(w.blob[r2 + R_DATA_LEN], sizeof(request) - 1);

	/* truncated anywhere, or one byte too many */
	for (i = 0; i < len; i++)
		CHECK_EQ(try_in(&w, w.blob, i), -EBADMSG);
	memcpy(b, w.blob, len);
	b[len] = 0;
	CHECK_EQ(try_in(&w, b, len + 1), -EBADMSG);
	CHECK_EQ(try_in(&w, NULL, 0), -EBADMSG);
#define DAMAGED(stmt, rc)                                                          \
	do {                                                                       \
		memcpy(b, w.blob, len);                                            \
		stmt;                                                              \
		CHECK_EQ(try_in(&w, b, len), rc);                                  \
	} while (0)
	DAMAGED(b[0] ^= 1, -EBADMSG);                                   /* magic */
	DAMAGED(b[4] = 2, -EBADMSG);                                    /* version 2 */
	DAMAGED(b[4] = 0, -EBADMSG);                                    /* version 0 */
	DAMAGED(b[6] = 20, -EBADMSG);                                   /* header length */
	DAMAGED(b[8] = 3, -EBADMSG);                                    /* count */
	DAMAGED(b[8] = 1, -EBADMSG);                                    /* count: bytes left over */
	DAMAGED(put32le(b + 12, (uint32_t)len + 1), -EBADMSG);          /* total length */
	DAMAGED(b[r2] += 1, -EBADMSG);                                  /* record length */
	DAMAGED(b[r2 + R_STATE] = UTCP_FIN_WAIT_1, -EBADMSG);
	DAMAGED(b[r2 + R_STATE] = 200, -EBADMSG);
	DAMAGED(b[r2 + R_FLAGS] |= 0x80, -EBADMSG);                     /* unknown flag */
	DAMAGED(b[r2 + R_SND_WS] = 15, -EBADMSG);                       /* window scale 15 */
	DAMAGED(b[HDR + R_RCV_WS] = 15, -EBADMSG);
	DAMAGED((b[r2 + R_MSS] = 0, b[r2 + R_MSS + 1] = 0), -EBADMSG);  /* MSS 0 */
	DAMAGED((b[r2 + R_MSS] = 87, b[r2 + R_MSS + 1] = 0), -EBADMSG); /* MSS 87 */
	DAMAGED((b[r2 + R_MSS] = 0xdd, b[r2 + R_MSS + 1] = 0x05), -EBADMSG); /* 1501 > mtu - 40 */
	DAMAGED(b[r2 + R_RCV_NXT] += 1, -EBADMSG);                      /* RCV.NXT vs the data */
	DAMAGED(b[r2 + R_FLAGS] ^= 0x08, -EBADMSG);                     /* FIN but ESTABLISHED */
	DAMAGED(b[r2 + R_FLAGS] &= (uint8_t)~0x01, -EBADMSG);           /* scales without WS */
	DAMAGED(put32le(b + r2 + 36, 12345), -EBADMSG);                 /* SND.UNA */
	DAMAGED(b[r2 + R_DATA_LEN] += 1, -EBADMSG);                     /* data length */
	DAMAGED(b[r2 + 94] = 1, -EBADMSG);                              /* reserved */
	DAMAGED(b[r2 + R_LADDR] ^= 1, -EINVAL);                         /* not our address */
	DAMAGED(b[r2 + R_LPORT] ^= 1, -EINVAL);                         /* not the listener's port */
#undef DAMAGED
	/* a socket that does not listen */
	CHECK_EQ(utcp_sk_migrate_in(w.ss[NB], utcp_sk_open(w.ss[NB]), w.blob, len, w.now), -EINVAL);
	/* whole, it goes in */
	CHECK_EQ(try_in(&w, w.blob, len), 2);
	w_free(&w);
}

/* migrate_out's own errors and limits. */
TEST(test_migrate_out_errors)
{
	static struct w w;
	static uint8_t small[HDR + REC + 10];
	size_t len;
	int c, s, n;

	w_init(&w, 8, 8);
	/* nothing to move: 0, an empty batch (which migrate_in takes as 0) */
	CHECK_EQ(migrate_out(&w, 64), 0);
	CHECK_EQ(w.blob_len, HDR);
	CHECK_EQ(utcp_sk_migrate_in(w.ss[NB], w.lb, w.blob, w.blob_len, w.now), 0);
	/* not a listener */
	s = utcp_sk_open(w.ss[NA]);
	CHECK_EQ(utcp_sk_migrate_out(w.ss[NA], s, w.flows, 64, w.blob, sizeof(w.blob), &len, w.now),
		 -EINVAL);
	c = connect_and_request(&w);
	w_run(&w, 100000);
	/* a record with data that does not fit: -ENOSPC, nothing frozen */
	n = utcp_sk_migrate_out(w.ss[NA], w.la, w.flows, 64, small, sizeof(small), &len, w.now);
	CHECK_EQ(n, -ENOSPC);
	CHECK_EQ(utcp_sk_ready(w.ss[NA], w.la), POLLIN);
	CHECK_EQ(utcp_sk_migrate_out(w.ss[NA], w.la, w.flows, 64, small, 3, &len, w.now), -ENOSPC);
	/* max 0 moves nothing */
	CHECK_EQ(migrate_out(&w, 0), 0);
	CHECK_EQ(migrate_out(&w, 64), 1);
	CHECK_EQ(migrate_out(&w, 64), -EBUSY);
	/* done with 0 moved: the connection is reset, the listener free for another batch */
	utcp_sk_migrate_done(w.ss[NA], w.la, 0, w.now);
	w_run(&w, 10000);
	CHECK_EQ(w.net.rst_sent[NA], 1);
	CHECK_EQ(utcp_sk_error(w.ss[NC], c), -ECONNRESET);
	CHECK_EQ(migrate_out(&w, 64), 0);
	w_free(&w);
}

/* The listener closes while a batch is frozen: the batch goes without a word (it may live
 * in another stack already). */
TEST(test_listener_close_while_frozen_is_silent)
{
	static struct w w;
	uint64_t a_out;
	int c;

	w_init(&w, 8, 8);
	c = w_connect(&w);
	w_run(&w, 10000);
	CHECK_EQ(migrate_out(&w, 64), 1);
	a_out = w.net.sent[NA];
	CHECK_EQ(utcp_sk_close(w.ss[NA], w.la, w.now), 0);
	utcp_flush(w.st[NA], w.now);
	CHECK_EQ(w.net.sent[NA], a_out);
	CHECK_EQ(stats(&w, NA)->conns_in_use, 0);
	CHECK_EQ(utcp_sk_migrate_in(w.ss[NB], w.lb, w.blob, w.blob_len, w.now), 1);
	repoint(&w, w.flows, 1, NB);
	w_run(&w, 10000);
	CHECK_EQ(utcp_sk_error(w.ss[NC], c), 0);
	CHECK(utcp_sk_accept(w.ss[NB], w.lb, NULL) >= 0);
	w_free(&w);
}

/* The shim's loop: batches of three until none is left, ten connections with distinct
 * requests (every third with its FIN, one with 20 KB): all move, each answered byte-exact. */
TEST(test_batches_until_none_left)
{
	static struct w w;
	static uint8_t req[10][20000], got[20000], resp[10][700];
	size_t rlen[10];
	int c[10], s, i, n, total = 0, batches = 0;

	w_init(&w, 16, 16);
	for (i = 0; i < 10; i++) {
		rlen[i] = i == 4 ? sizeof(req[i]) : 40 + (size_t)i * 13;
		fill(req[i], rlen[i], 10 + (unsigned)i);
		fill(resp[i], sizeof(resp[i]), 30 + (unsigned)i);
		c[i] = w_connect(&w);
		w_run(&w, 5000);
		send_all(&w, NC, c[i], req[i], rlen[i]);
		if (i % 3 == 0)
			CHECK_EQ(utcp_sk_shutdown(w.ss[NC], c[i], SHUT_WR, w.now), 0);
	}
	w_run(&w, 100000);
	while ((n = migrate_out(&w, 3)) > 0) {
		CHECK(n <= 3);
		CHECK_EQ(utcp_sk_migrate_in(w.ss[NB], w.lb, w.blob, w.blob_len, w.now), n);
		repoint(&w, w.flows, n, NB);
		utcp_sk_migrate_done(w.ss[NA], w.la, n, w.now);
		total += n;
		batches++;
		w_run(&w, 1000);
	}
	CHECK_EQ(n, 0);
	CHECK_EQ(total, 10);
	CHECK_EQ(batches, 4);
	CHECK_EQ(stats(&w, NA)->conns_in_use, 0);
	CHECK_EQ(w.net.rst_sent[NA], 0);
	utcp_socks_process(w.ss[NB], w.now);
	for (i = 0; i < 10; i++) {
		struct utcp_sk_name peer;
		int k;

		s = utcp_sk_accept(w.ss[NB], w.lb, &peer);
		CHECK(s >= 0);
		for (k = 0; k < 10 && c[k] >= 0; k++) {
			struct utcp_sk_name me;

			CHECK_EQ(utcp_sk_name(w.ss[NC], c[k], &me), 0);
			if (me.lport == peer.rport)
				break;
		}
		CHECK(k < 10);
		CHECK_EQ(recv_n(&w, NB, s, got, rlen[k], 2000000), rlen[k]);
		CHECK_MEM(got, req[k], rlen[k]);
		send_all(&w, NB, s, resp[k], sizeof(resp[k]));
		CHECK_EQ(utcp_sk_close(w.ss[NB], s, w.now), 0);
	}
	CHECK_EQ(utcp_sk_accept(w.ss[NB], w.lb, NULL), -EAGAIN);
	for (i = 0; i < 10; i++) {
		CHECK_EQ(recv_until_eof(&w, NC, c[i], got, sizeof(got), 2000000), sizeof(resp[i]));
		CHECK_MEM(got, resp[i], sizeof(resp[i]));
		CHECK_EQ(utcp_sk_close(w.ss[NC], c[i], w.now), 0);
	}
	all_closed(&w, 200000);
	check_invariants(&w);
	w_free(&w);
}
