/* test_tx_lend.c — the stack writing frames in place in memory its port lends (tx_lend /
 * tx_send, the xdp backend's zero-copy send): two stacks joined by a loopback whose ports
 * lend frames from a small pool; every lent frame comes back, written ones are the ones sent,
 * a transfer arrives byte-exact, and a pool that runs dry is a counted drop, not a crash. */
#include <errno.h>
#include <stdlib.h>

#include "testlib.h"
#include "utcp.h"

#define POOL 24
#define FSZ 1600
#define QMAX 4096
#define A_IP 0x0a000001u
#define B_IP 0x0a000002u

static const uint8_t mac_a[6] = {2, 0, 0, 0, 0, 1}, mac_b[6] = {2, 0, 0, 0, 0, 2};

struct lport {
	uint8_t pool[POOL][FSZ];
	bool lent[POOL];
	unsigned nlent, max_lent, lends, sends, returned_unused, copies;
	unsigned limit;                  /* frames it may lend at once (<= POOL) */
	struct lport *peer;
	uint8_t (*q)[FSZ];               /* frames sent to the peer, waiting for delivery */
	uint32_t qlen[QMAX];
	unsigned nq;
};

static int slot_of(struct lport *p, const uint8_t *data)
{
	for (int i = 0; i < POOL; i++)
		if (data == p->pool[i])
			return i;
	return -1;
}

static int l_rx(void *ctx, struct utcp_frame *f, unsigned max, uint64_t now)
{
	(void)ctx, (void)f, (void)max, (void)now;
	return 0;
}

static void l_rel(void *ctx, struct utcp_frame *f, unsigned n)
{
	(void)ctx, (void)f, (void)n;
}

static void enqueue(struct lport *p, const uint8_t *data, uint32_t len)
{
	struct lport *d = p->peer;

	CHECK(d->nq < QMAX && len <= FSZ);
	memcpy(d->q[d->nq], data, len);
	d->qlen[d->nq++] = len;
}

static int l_tx_burst(void *ctx, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	struct lport *p = ctx;

	(void)now;
	for (unsigned i = 0; i < n; i++)
		enqueue(p, f[i].data, f[i].len);
	p->copies += n;
	return (int)n;
}

static int l_tx_lend(void *ctx, struct utcp_frame *f, unsigned n)
{
	struct lport *p = ctx;
	unsigned got = 0;

	for (int i = 0; i < POOL && got < n && p->nlent < p->limit; i++)
		if (!p->lent[i]) {
			p->lent[i] = true;
			p->nlent++;
			f[got].data = p->pool[i];
			f[got].len = FSZ;
			f[got].cookie = (uint32_t)i;
			got++;
		}
	if (p->nlent > p->max_lent)
		p->max_lent = p->nlent;
	p->lends += got;
	return (int)got;
}

static int l_tx_send(void *ctx, struct utcp_frame *f, unsigned nsend, unsigned n, uint64_t now)
{
	struct lport *p = ctx;

	(void)now;
	for (unsigned i = 0; i < n; i++) {
		int s = slot_of(p, f[i].data);

		CHECK(s >= 0 && p->lent[s]);         /* only frames this port lent come back */
		CHECK_EQ((uint32_t)s, f[i].cookie);
		if (i < nsend) {
			CHECK(f[i].len > 0 && f[i].len <= FSZ);
			enqueue(p, f[i].data, f[i].len);
		} else {
			p->returned_unused++;
		}
		p->lent[s] = false;
		p->nlent--;
	}
	p->sends += nsend;
	return (int)nsend;
}

static int l_kick(void *ctx)
{
	(void)ctx;
	return 0;
}

static const struct utcp_port_ops lend_ops = {
	.sz = sizeof(struct utcp_port_ops), .name = "lend", .rx_burst = l_rx, .rx_release = l_rel,
	.tx_burst = l_tx_burst, .kick = l_kick, .tx_lend = l_tx_lend, .tx_send = l_tx_send,
};

/* A backend built before tx_lend existed: its sz ends at kick. */
static const struct utcp_port_ops old_ops = {
	.sz = offsetof(struct utcp_port_ops, tx_lend), .name = "old", .rx_burst = l_rx,
	.rx_release = l_rel, .tx_burst = l_tx_burst, .kick = l_kick,
	.tx_lend = l_tx_lend, .tx_send = l_tx_send,  /* beyond sz: must not be used */
};

struct world {
	struct lport pa, pb;
	struct utcp_stack *a, *b;
	uint64_t now;
};

static void deliver(struct world *w)
{
	for (int round = 0; round < 1000 && (w->pa.nq || w->pb.nq); round++) {
		struct lport *ports[2] = {&w->pa, &w->pb};
		struct utcp_stack *sts[2] = {w->a, w->b};

		for (int k = 0; k < 2; k++) {
			struct lport *p = ports[k];
			unsigned n = p->nq;
			struct utcp_frame *fr = calloc(n ? n : 1, sizeof(*fr));
			uint8_t (*copy)[FSZ] = malloc((size_t)(n ? n : 1) * FSZ);

			CHECK(fr && copy);
			/* take the queue first: input may queue more frames for this port */
			memcpy(copy, p->q, (size_t)n * FSZ);
			for (unsigned i = 0; i < n; i++) {
				fr[i].data = copy[i];
				fr[i].len = p->qlen[i];
			}
			p->nq = 0;
			if (n)
				utcp_input(sts[k], fr, n, w->now);
			free(fr);
			free(copy);
		}
	}
}

static void world_init(struct world *w, const struct utcp_port_ops *ops, unsigned limit)
{
	struct utcp_config c;
	struct utcp_port pa = {ops, &w->pa}, pb = {ops, &w->pb};

	memset(w, 0, sizeof(*w));
	w->pa.q = malloc((size_t)QMAX * FSZ);
	w->pb.q = malloc((size_t)QMAX * FSZ);
	CHECK(w->pa.q && w->pb.q);
	w->pa.peer = &w->pb;
	w->pb.peer = &w->pa;
	w->pa.limit = w->pb.limit = limit;
	w->now = 1000000;
	utcp_config_init(&c);
	c.max_conns = 4;
	c.sndbuf = c.rcvbuf = 64 * 1024;
	c.tx_batch = 8;
	c.local_ip = A_IP;
	memcpy(c.local_mac, mac_a, 6);
	CHECK_EQ(utcp_stack_create(&c, &pa, w->now, &w->a), 0);
	c.local_ip = B_IP;
	memcpy(c.local_mac, mac_b, 6);
	CHECK_EQ(utcp_stack_create(&c, &pb, w->now, &w->b), 0);
}

static void world_fini(struct world *w)
{
	utcp_stack_destroy(w->a);
	utcp_stack_destroy(w->b);
	/* every lent frame came back, on flush or at destroy */
	CHECK_EQ(w->pa.nlent, 0);
	CHECK_EQ(w->pb.nlent, 0);
	free(w->pa.q);
	free(w->pb.q);
}

/* Connects a to b:80 and moves len bytes a -> b; returns bytes b received intact. */
static size_t transfer(struct world *w, size_t len)
{
	static uint8_t src[300000], got[300000];
	struct utcp_event ev;
	utcp_cid ca, cb = {0};
	bool accepted = false;
	size_t sent = 0, rcvd = 0;

	CHECK(len <= sizeof(src));
	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 131 + (i >> 9));
	CHECK(utcp_listen(w->b, 80, 8) >= 0);
	CHECK_EQ(utcp_connect(w->a, B_IP, 80, 0, mac_b, w->now, &ca), 0);
	utcp_flush(w->a, w->now);
	for (int it = 0; it < 20000 && rcvd < len; it++) {
		ssize_t r;

		deliver(w);
		while (utcp_next_event(w->b, &ev) == 1)
			if (ev.events & UTCP_EV_ACCEPTED) {
				cb = ev.conn;
				accepted = true;
			}
		while (utcp_next_event(w->a, &ev) == 1)
			;
		if (sent < len) {
			r = utcp_send(w->a, ca, src + sent, len - sent, w->now);
			if (r > 0)
				sent += (size_t)r;
		}
		utcp_flush(w->a, w->now);
		if (accepted)
			while ((r = utcp_recv(w->b, cb, got + rcvd, len - rcvd, w->now)) > 0)
				rcvd += (size_t)r;
		utcp_flush(w->b, w->now);
		w->now += 1000;
		utcp_timers(w->a, w->now);
		utcp_timers(w->b, w->now);
	}
	CHECK_MEM(got, src, rcvd);
	return rcvd;
}

TEST(test_tx_lend_transfer_in_place)
{
	struct world w;

	world_init(&w, &lend_ops, POOL);
	CHECK_EQ(transfer(&w, 250000), 250000);
	/* the stack wrote every frame in lent memory: nothing went through tx_burst's copy */
	CHECK_EQ(w.pa.copies + w.pb.copies, 0);
	CHECK(w.pa.sends > 170);                 /* 250000 / 1448 data segments and more */
	CHECK(w.pa.max_lent <= 8);               /* at most a TX batch lent at once */
	CHECK_EQ(utcp_get_stats(w.a)->tx_dropped, 0);
	CHECK_EQ(utcp_get_stats(w.a)->frames_out, w.pa.sends);
	CHECK_EQ(w.pa.nlent, 0);                 /* between calls nothing stays lent */
	world_fini(&w);
}

TEST(test_tx_lend_pool_dry_counts_drops)
{
	struct world w;
	uint64_t before;

	/* Two frames at a time: a batch needs more, flushes early and goes on. */
	world_init(&w, &lend_ops, 2);
	CHECK_EQ(transfer(&w, 60000), 60000);
	CHECK(w.pa.max_lent <= 2);
	CHECK_EQ(w.pa.copies, 0);
	world_fini(&w);
	/* None at all: every segment is a counted drop, nothing is lent or sent. */
	world_init(&w, &lend_ops, 0);
	before = utcp_get_stats(w.a)->tx_dropped;
	{
		utcp_cid c;

		CHECK_EQ(utcp_connect(w.a, B_IP, 80, 0, mac_b, w.now, &c), 0);
		utcp_flush(w.a, w.now);
	}
	CHECK(utcp_get_stats(w.a)->tx_dropped > before);
	CHECK_EQ(w.pa.sends, 0);
	CHECK_EQ(w.pb.nq, 0);
	world_fini(&w);
}

TEST(test_tx_lend_old_backend_copies)
{
	struct world w;

	/* ops->sz before tx_lend: the stack builds in its own memory and tx_burst copies. */
	world_init(&w, &old_ops, POOL);
	CHECK_EQ(transfer(&w, 30000), 30000);
	CHECK_EQ(w.pa.lends + w.pb.lends, 0);
	CHECK(w.pa.copies > 20);
	world_fini(&w);
}
