/* test_sock_hold.c — UTCP_SK_HOLD and utcp_sk_push (utcp_sock.h): the socket layer's part of
 * the shim's autocorking.  Sends held until a push leave as full segments, the FIN rides on the
 * last one, and what the application holds itself (TCP_CORK, MSG_MORE) stays its own.  Two
 * stacks over the pair backend in virtual time; frames counted at the sender's stack. */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "testlib.h"
#include "utcp.h"
#include "utcp_sock.h"

#define A_IP 0x0a000001u
#define B_IP 0x0a000002u
#define PORT 80
static const uint8_t a_mac[6] = {2, 0, 0, 0, 0, 0xa};
static const uint8_t b_mac[6] = {2, 0, 0, 0, 0, 0xb};

struct w {
	struct utcp_pair *pair;
	struct utcp_stack *a, *b;
	struct utcp_socks *sa, *sb;
	uint64_t now;
};

static void cfg_for(struct utcp_config *c, uint32_t ip, const uint8_t *mac, const uint8_t *peer)
{
	utcp_config_init(c);
	c->local_ip = ip;
	memcpy(c->local_mac, mac, 6);
	memcpy(c->gw_mac, peer, 6);
	c->max_conns = 16;
	c->max_listeners = 4;
	c->sndbuf = c->rcvbuf = 65536;
	memcpy(c->isn_key, ip == A_IP ? "keyA-0123456789a" : "keyB-0123456789b", 16);
}

static void w_init(struct w *w)
{
	struct utcp_pair_opts po;
	struct utcp_config a, b;
	struct utcp_port pa, pb;

	memset(w, 0, sizeof(*w));
	memset(&po, 0, sizeof(po));
	po.sz = sizeof(po);
	po.seed = 11;
	po.queue_frames = 4096;
	po.dir[0].delay_us = po.dir[1].delay_us = 1000;        /* 2 ms RTT */
	CHECK_EQ(utcp_pair_create(&po, &w->pair), 0);
	pa = utcp_pair_port(w->pair, 0);
	pb = utcp_pair_port(w->pair, 1);
	cfg_for(&a, A_IP, a_mac, b_mac);
	cfg_for(&b, B_IP, b_mac, a_mac);
	w->now = 1000000;
	CHECK_EQ(utcp_stack_create(&a, &pa, w->now, &w->a), 0);
	CHECK_EQ(utcp_stack_create(&b, &pb, w->now, &w->b), 0);
	CHECK_EQ(utcp_socks_create(w->a, NULL, &w->sa), 0);
	CHECK_EQ(utcp_socks_create(w->b, NULL, &w->sb), 0);
}

static void w_free(struct w *w)
{
	utcp_socks_destroy(w->sa, w->now);
	utcp_socks_destroy(w->sb, w->now);
	utcp_stack_destroy(w->a);
	utcp_stack_destroy(w->b);
	utcp_pair_destroy(w->pair);
}

static void w_step(void *arg)
{
	struct w *w = arg;

	utcp_poll(w->a, w->now);
	utcp_socks_process(w->sa, w->now);
	utcp_poll(w->b, w->now);
	utcp_socks_process(w->sb, w->now);
	utcp_flush(w->a, w->now);
	utcp_flush(w->b, w->now);
}

static uint64_t w_next(void *arg)
{
	struct w *w = arg;
	uint64_t next = utcp_pair_next_delivery(w->pair), d;

	d = utcp_next_deadline(w->a);
	next = d < next ? d : next;
	d = utcp_next_deadline(w->b);
	return d < next ? d : next;
}

static void w_run(struct w *w, uint64_t us)
{
	h_run_world(&w->now, us, w_step, w_next, w);
}

/* A connected pair with nothing in flight: *c on A (the sender under test, TCP_NODELAY as
 * nginx sets it), *s accepted on B. */
static void w_pair(struct w *w, int *c, int *s)
{
	int l = utcp_sk_open(w->sb);

	CHECK(l >= 0);
	CHECK_EQ(utcp_sk_listen(w->sb, l, PORT, 8), 0);
	*c = utcp_sk_open(w->sa);
	CHECK(*c >= 0);
	CHECK_EQ(utcp_sk_connect(w->sa, *c, B_IP, PORT, 0, NULL, w->now), -EINPROGRESS);
	w_run(w, 10000);
	*s = utcp_sk_accept(w->sb, l, NULL);
	CHECK(*s >= 0);
	CHECK_EQ(utcp_sk_setopt(w->sa, *c, UTCP_TCP_NODELAY, 1), 0);
	w_run(w, 300000);                                     /* every ACK home */
}

static ssize_t send_n(struct utcp_socks *ss, int sk, size_t n, int flags, uint64_t now)
{
	static char buf[64 * 1024];
	struct iovec v = {buf, n};

	CHECK(n <= sizeof(buf));
	memset(buf, 'x', n);
	return utcp_sk_send(ss, sk, &v, 1, flags, now);
}

static ssize_t drain(struct utcp_socks *ss, int sk, uint64_t now)
{
	static char buf[64 * 1024];
	struct iovec v = {buf, sizeof(buf)};
	ssize_t r, total = 0;

	while ((r = utcp_sk_recv(ss, sk, &v, 1, 0, now)) > 0)
		total += r;
	return total;
}

/* data segments A has built so far (they reach its TX batch at once) */
static uint64_t a_data(const struct w *w)
{
	return utcp_get_stats(w->a)->data_segs_out;
}

TEST(test_sock_hold_head_and_body_leave_as_one_segment)
{
	struct w w;
	int c, s;
	uint64_t d0;

	w_init(&w);
	w_pair(&w, &c, &s);
	d0 = a_data(&w);
	CHECK_EQ(send_n(w.sa, c, 200, UTCP_SK_HOLD, w.now), 200);     /* a response head */
	CHECK_EQ(send_n(w.sa, c, 1000, UTCP_SK_HOLD, w.now), 1000);   /* its body */
	CHECK_EQ(a_data(&w), d0);                                     /* held */
	w_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);                          /* polls do not release it */
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	CHECK_EQ(a_data(&w), d0 + 1);                                 /* one segment */
	w_run(&w, 5000);
	CHECK_EQ(drain(w.sb, s, w.now), 1200);
	/* without HOLD (nodelay): a segment per call */
	d0 = a_data(&w);
	CHECK_EQ(send_n(w.sa, c, 200, 0, w.now), 200);
	CHECK_EQ(send_n(w.sa, c, 1000, 0, w.now), 1000);
	CHECK_EQ(a_data(&w), d0 + 2);
	w_free(&w);
}

TEST(test_sock_hold_fin_rides_on_last_segment)
{
	struct w w;
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	int c, s;
	uint64_t seg0, d0;

	w_init(&w);
	w_pair(&w, &c, &s);
	seg0 = utcp_get_stats(w.a)->segs_out;
	d0 = a_data(&w);
	CHECK_EQ(send_n(w.sa, c, 200, UTCP_SK_HOLD, w.now), 200);
	CHECK_EQ(send_n(w.sa, c, 1000, UTCP_SK_HOLD, w.now), 1000);
	CHECK_EQ(utcp_sk_shutdown(w.sa, c, SHUT_WR, w.now), 0);
	/* data and FIN in one segment, nothing else */
	CHECK_EQ(a_data(&w), d0 + 1);
	CHECK_EQ(utcp_get_stats(w.a)->segs_out, seg0 + 1);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);                    /* nothing left to push */
	CHECK_EQ(utcp_get_stats(w.a)->segs_out, seg0 + 1);
	w_run(&w, 5000);
	CHECK_EQ(drain(w.sb, s, w.now), 1200);
	CHECK(utcp_sk_info(w.sb, s, &ci) == 0 && ci.state == UTCP_CLOSE_WAIT);
	/* the same through close */
	w_free(&w);
	w_init(&w);
	w_pair(&w, &c, &s);
	seg0 = utcp_get_stats(w.a)->segs_out;
	CHECK_EQ(send_n(w.sa, c, 300, UTCP_SK_HOLD, w.now), 300);
	CHECK_EQ(utcp_sk_close(w.sa, c, w.now), 0);
	CHECK_EQ(utcp_get_stats(w.a)->segs_out, seg0 + 1);
	w_run(&w, 5000);
	CHECK_EQ(drain(w.sb, s, w.now), 300);
	CHECK(utcp_sk_info(w.sb, s, &ci) == 0 && ci.state == UTCP_CLOSE_WAIT);
	w_free(&w);
}

TEST(test_sock_hold_full_segments_go_as_they_fill)
{
	struct w w;
	int c, s, mss;

	w_init(&w);
	w_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_getopt(w.sa, c, UTCP_TCP_MAXSEG, &mss), 0);
	CHECK_EQ(send_n(w.sa, c, 3000, UTCP_SK_HOLD, w.now), 3000);
	w_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 2 * mss);                    /* the partial tail waits */
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	w_run(&w, 5000);
	CHECK_EQ(drain(w.sb, s, w.now), 3000);
	w_free(&w);
}

TEST(test_sock_hold_push_keeps_tcp_cork_and_msg_more)
{
	struct w w;
	int c, s;

	w_init(&w);
	w_pair(&w, &c, &s);
	/* TCP_CORK: the application's cork outlives the push; its uncork sends */
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 1), 0);
	CHECK_EQ(send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	w_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 0), 0);
	w_run(&w, 5000);
	CHECK_EQ(drain(w.sb, s, w.now), 100);
	/* MSG_MORE: held past the push until a send without it (and then its push) */
	CHECK_EQ(send_n(w.sa, c, 100, UTCP_SK_MORE | UTCP_SK_HOLD, w.now), 100);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	w_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	CHECK_EQ(send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	w_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	w_run(&w, 5000);
	CHECK_EQ(drain(w.sb, s, w.now), 200);
	w_free(&w);
}

TEST(test_sock_hold_nodelay_and_uncork_push)
{
	struct w w;
	int c, s;

	w_init(&w);
	w_pair(&w, &c, &s);
	/* TCP_NODELAY set (again) pushes what a hold kept, as Linux pushes pending frames */
	CHECK_EQ(send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_NODELAY, 1), 0);
	w_run(&w, 5000);
	CHECK_EQ(drain(w.sb, s, w.now), 100);
	/* so does TCP_CORK off */
	CHECK_EQ(send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 0), 0);
	w_run(&w, 5000);
	CHECK_EQ(drain(w.sb, s, w.now), 100);
	w_free(&w);
}

TEST(test_sock_hold_unpushed_goes_within_cork_bound)
{
	struct w w;
	int c, s;

	w_init(&w);
	w_pair(&w, &c, &s);
	/* a caller that never pushes: the stack's cork bound (UTCP_CORK_MAX_US) still sends it */
	CHECK_EQ(send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	w_run(&w, UTCP_CORK_MAX_US / 2);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	w_run(&w, UTCP_CORK_MAX_US / 2 + 20000);
	CHECK_EQ(drain(w.sb, s, w.now), 100);
	w_free(&w);
}

TEST(test_sock_push_ids)
{
	struct w w;
	int c, s, l2;

	w_init(&w);
	w_pair(&w, &c, &s);
	l2 = utcp_sk_open(w.sb);
	CHECK_EQ(utcp_sk_listen(w.sb, l2, PORT + 1, 4), 0);
	CHECK_EQ(utcp_sk_push(w.sb, l2, w.now), 0);                   /* a listener: nothing */
	CHECK_EQ(utcp_sk_close(w.sa, c, w.now), 0);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), -EBADF);               /* a stale id */
	w_free(&w);
}
