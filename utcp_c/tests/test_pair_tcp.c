/* test_pair_tcp.c — end-to-end: two stacks joined by the pair backend, in virtual
 * time, with and without seeded impairment.  Transfers are checked byte for byte. */
#include <errno.h>
#include <stdlib.h>

#include "testlib.h"
#include "utcp.h"

#define A_IP 0x0a000001u
#define B_IP 0x0a000002u
static const uint8_t a_mac[6] = {2, 0, 0, 0, 0, 0xa};
static const uint8_t b_mac[6] = {2, 0, 0, 0, 0, 0xb};

static uint8_t pattern(uint64_t i, uint32_t salt)
{
	uint64_t x = (i + salt) * 0x9e3779b97f4a7c15ULL;

	return (uint8_t)(x >> 56);
}

struct flow {
	utcp_cid c;
	uint64_t to_send, sent, received, expect;
	uint32_t salt_tx, salt_rx;
	bool fin_sent, eof, closed, close_on_eof, errored;
	int error;
	bool read_paused;
};

struct world {
	struct utcp_pair *pair;
	struct utcp_stack *a, *b;
	uint64_t now;
	struct flow fa, fb;               /* client (on a) and server (on b) */
	int listener;
	unsigned accepted;
};

static void cfg_for(struct utcp_config *c, uint32_t ip, const uint8_t *mac, const uint8_t *peer)
{
	utcp_config_init(c);
	c->local_ip = ip;
	memcpy(c->local_mac, mac, 6);
	memcpy(c->gw_mac, peer, 6);
	c->max_conns = 64;
	memcpy(c->isn_key, ip == A_IP ? "keyA-0123456789a" : "keyB-0123456789b", 16);
}

static void world_init(struct world *w, uint64_t seed, const struct utcp_pair_impair *imp,
		       const struct utcp_config *ca, const struct utcp_config *cb)
{
	struct utcp_pair_opts po;
	struct utcp_config a, b;
	struct utcp_port pa, pb;

	memset(w, 0, sizeof(*w));
	memset(&po, 0, sizeof(po));
	po.sz = sizeof(po);
	po.seed = seed;
	po.queue_frames = 8192;
	if (imp)
		po.dir[0] = po.dir[1] = *imp;
	CHECK_EQ(utcp_pair_create(&po, &w->pair), 0);
	pa = utcp_pair_port(w->pair, 0);
	pb = utcp_pair_port(w->pair, 1);
	if (ca)
		a = *ca;
	else
		cfg_for(&a, A_IP, a_mac, b_mac);
	if (cb)
		b = *cb;
	else
		cfg_for(&b, B_IP, b_mac, a_mac);
	w->now = 1000000;
	CHECK_EQ(utcp_stack_create(&a, &pa, w->now, &w->a), 0);
	CHECK_EQ(utcp_stack_create(&b, &pb, w->now, &w->b), 0);
	w->listener = utcp_listen(w->b, 80, 64);
	CHECK(w->listener >= 0);
	w->fa.c = w->fb.c = UTCP_CID_NONE;
}

static void dump(struct world *w)
{
	const struct utcp_stats *s[2] = {utcp_get_stats(w->a), utcp_get_stats(w->b)};
	int k, i;

	for (k = 0; k < 2; k++) {
		fprintf(stderr, "%s: in %llu out %llu segs_in %llu segs_out %llu retx %llu rto %llu frx %llu rst_in %llu rst_out %llu chack %llu conns %llu\n",
			k ? "B" : "A", (unsigned long long)s[k]->frames_in, (unsigned long long)s[k]->frames_out,
			(unsigned long long)s[k]->segs_in, (unsigned long long)s[k]->segs_out,
			(unsigned long long)s[k]->retransmits, (unsigned long long)s[k]->rto_timeouts,
			(unsigned long long)s[k]->fast_retransmits, (unsigned long long)s[k]->rst_in,
			(unsigned long long)s[k]->rst_out, (unsigned long long)s[k]->challenge_acks,
			(unsigned long long)s[k]->conns_in_use);
		for (i = 1; i < UTCP_DROP__MAX; i++)
			if (s[k]->drops[i])
				fprintf(stderr, "   drop %s: %llu\n", utcp_drop_str((enum utcp_drop)i),
					(unsigned long long)s[k]->drops[i]);
	}
	fprintf(stderr, "flows: A c=%x sent %llu recv %llu eof %d closed %d err %d | B c=%x sent %llu recv %llu eof %d closed %d err %d\n",
		w->fa.c, (unsigned long long)w->fa.sent, (unsigned long long)w->fa.received, w->fa.eof, w->fa.closed, w->fa.error,
		w->fb.c, (unsigned long long)w->fb.sent, (unsigned long long)w->fb.received, w->fb.eof, w->fb.closed, w->fb.error);
}

static void world_free(struct world *w)
{
	utcp_stack_destroy(w->a);
	utcp_stack_destroy(w->b);
	utcp_pair_destroy(w->pair);
}

static void pump_send(struct utcp_stack *st, struct flow *f, uint64_t now)
{
	uint8_t buf[16384];

	while (f->c != UTCP_CID_NONE && !f->closed && f->sent < f->to_send) {
		uint64_t n = f->to_send - f->sent, i;
		ssize_t r;

		if (n > sizeof(buf))
			n = sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = pattern(f->sent + i, f->salt_tx);
		r = utcp_send(st, f->c, buf, n, now);
		if (r <= 0)
			break;
		f->sent += (uint64_t)r;
	}
	if (f->c != UTCP_CID_NONE && !f->closed && f->sent == f->to_send && !f->fin_sent &&
	    (f->to_send || (f->eof && f->close_on_eof))) {
		CHECK_EQ(utcp_shutdown(st, f->c, now), 0);
		f->fin_sent = true;
	}
}

static void pump_recv(struct utcp_stack *st, struct flow *f, uint64_t now)
{
	uint8_t buf[16384];
	ssize_t r;

	while (f->c != UTCP_CID_NONE && !f->read_paused) {
		r = utcp_recv(st, f->c, buf, sizeof(buf), now);
		if (r > 0) {
			for (ssize_t i = 0; i < r; i++)
				if (buf[i] != pattern(f->received + (uint64_t)i, f->salt_rx))
					FAIL("byte %llu differs", (unsigned long long)(f->received + (uint64_t)i));
			f->received += (uint64_t)r;
			continue;
		}
		if (r == 0 && !f->eof) {
			f->eof = true;
			pump_send(st, f, now);
		}
		break;
	}
}

static void handle_events(struct world *w, struct utcp_stack *st, struct flow *f, bool server)
{
	struct utcp_event ev;

	while (utcp_next_event(st, &ev) == 1) {
		if (server && (ev.events & UTCP_EV_ACCEPTED)) {
			w->accepted++;
			if (f->c == UTCP_CID_NONE || f->closed) {
				uint64_t ts = f->to_send, ex = f->expect;
				uint32_t st_ = f->salt_tx, sr = f->salt_rx;
				bool coe = f->close_on_eof, rp = f->read_paused;

				memset(f, 0, sizeof(*f));
				f->c = ev.conn;
				f->to_send = ts, f->expect = ex, f->salt_tx = st_, f->salt_rx = sr;
				f->close_on_eof = coe, f->read_paused = rp;
			}
		}
		if (ev.conn != f->c)
			continue;
		if (ev.events & UTCP_EV_CLOSED) {
			f->closed = true;
			f->error = ev.error;
		}
	}
	pump_recv(st, f, w->now);
	pump_send(st, f, w->now);
	if (f->closed && f->c != UTCP_CID_NONE) {
		utcp_close(st, f->c, w->now);
		f->c = UTCP_CID_NONE;
	}
}

typedef bool (*done_fn)(struct world *w);

static uint64_t g_stop_at;
static bool time_up(struct world *w)
{
	return w->now >= g_stop_at;
}

/* Runs both stacks until done() or the virtual time limit; returns the time. */
static uint64_t run(struct world *w, done_fn done, uint64_t limit_us)
{
	uint64_t end = w->now + limit_us;

	for (;;) {
		uint64_t next, d;

		utcp_poll(w->a, w->now);
		utcp_poll(w->b, w->now);
		handle_events(w, w->a, &w->fa, false);
		handle_events(w, w->b, &w->fb, true);
		utcp_flush(w->a, w->now);
		utcp_flush(w->b, w->now);
		if (done && done(w))
			return w->now;
		next = utcp_pair_next_delivery(w->pair);
		d = utcp_next_deadline(w->a);
		if (d < next)
			next = d;
		d = utcp_next_deadline(w->b);
		if (d < next)
			next = d;
		if (next == UINT64_MAX) {
			if (getenv("UTCP_TEST_DUMP"))
				dump(w);
			return w->now;          /* nothing left to happen */
		}
		if (next > w->now)
			w->now = next;
		if (w->now > end && (dump(w), 1))
			FAIL("virtual time limit reached (client sent %llu recv %llu, server recv %llu sent %llu)",
			     (unsigned long long)w->fa.sent, (unsigned long long)w->fa.received,
			     (unsigned long long)w->fb.received, (unsigned long long)w->fb.sent);
	}
}

static bool transfer_done(struct world *w)
{
	return w->fa.eof && w->fb.eof && w->fa.received == w->fa.expect &&
	       w->fb.received == w->fb.expect;
}

static void start_client(struct world *w)
{
	CHECK_EQ(utcp_connect(w->a, B_IP, 80, 0, NULL, w->now, &w->fa.c), 0);
}

/* client sends up_bytes, server sends down_bytes; both close after EOF */
static uint64_t transfer(struct world *w, uint64_t up, uint64_t down, uint64_t limit)
{
	w->fa.to_send = up;
	w->fa.salt_tx = 1;
	w->fb.salt_rx = 1;
	w->fb.expect = up;
	w->fb.to_send = down;
	w->fb.salt_tx = 2;
	w->fa.salt_rx = 2;
	w->fa.expect = down;
	w->fa.close_on_eof = w->fb.close_on_eof = true;
	start_client(w);
	return run(w, transfer_done, limit);
}

static void check_all_freed_after_time_wait(struct world *w)
{
	run(w, NULL, 200000000);
	CHECK_EQ(utcp_get_stats(w->a)->conns_in_use, 0);
	CHECK_EQ(utcp_get_stats(w->b)->conns_in_use, 0);
	CHECK_EQ(utcp_get_stats(w->a)->time_wait_in_use, 0);
	CHECK_EQ(utcp_get_stats(w->b)->time_wait_in_use, 0);
	CHECK(utcp_next_deadline(w->a) == UINT64_MAX);
	CHECK(utcp_next_deadline(w->b) == UINT64_MAX);
	CHECK_EQ(utcp_stack_unacked(w->a), 0);
	CHECK_EQ(utcp_stack_unacked(w->b), 0);
}

TEST(test_pair_stack_unacked_counts_what_is_owed)
{
	struct world w;
	static uint8_t buf[3000];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = pattern(i, 0);
	world_init(&w, 1, NULL, NULL, NULL);
	start_client(&w);
	/* queued before the handshake completes: owed, then delivered */
	CHECK_EQ(utcp_send(w.a, w.fa.c, buf, sizeof(buf), w.now), (ssize_t)sizeof(buf));
	CHECK(utcp_stack_unacked(w.a) >= sizeof(buf));
	run(&w, NULL, 2000000);
	CHECK_EQ(utcp_stack_unacked(w.a), 0);
	world_free(&w);
}

TEST(test_pair_handshake_negotiates_all_options)
{
	struct world w;
	struct utcp_conn_info ca = {.sz = sizeof(ca)}, cb = {.sz = sizeof(cb)};

	world_init(&w, 1, NULL, NULL, NULL);
	w.fa.to_send = 1;
	start_client(&w);
	run(&w, NULL, 1000000);
	CHECK(w.fb.c != UTCP_CID_NONE);
	CHECK_EQ(utcp_conn_info(w.a, w.fa.c, &ca), 0);
	CHECK_EQ(utcp_conn_info(w.b, w.fb.c, &cb), 0);
	CHECK(ca.ws_ok && ca.sack_ok && ca.ts_ok);
	CHECK(cb.ws_ok && cb.sack_ok && cb.ts_ok);
	CHECK_EQ(ca.snd_wscale, cb.rcv_wscale);
	CHECK_EQ(cb.snd_wscale, ca.rcv_wscale);
	CHECK_EQ(ca.rcv_wscale, 2);              /* 128 KB buffer */
	CHECK_EQ(ca.snd_mss, 1460);
	CHECK(strcmp(ca.cc, "newreno") == 0);
	world_free(&w);
}

TEST(test_pair_handshake_options_off_on_one_side)
{
	struct world w;
	struct utcp_config cb;
	struct utcp_conn_info ca = {.sz = sizeof(ca)}, ci = {.sz = sizeof(ci)};

	cfg_for(&cb, B_IP, b_mac, a_mac);
	cb.timestamps = false;
	cb.sack = false;
	world_init(&w, 1, NULL, NULL, &cb);
	start_client(&w);
	run(&w, NULL, 1000000);
	CHECK_EQ(utcp_conn_info(w.a, w.fa.c, &ca), 0);
	CHECK_EQ(utcp_conn_info(w.b, w.fb.c, &ci), 0);
	CHECK(ca.ws_ok && !ca.sack_ok && !ca.ts_ok);
	CHECK(ci.ws_ok && !ci.sack_ok && !ci.ts_ok);
	world_free(&w);
}

TEST(test_pair_refused_without_listener)
{
	struct world w;

	world_init(&w, 1, NULL, NULL, NULL);
	CHECK_EQ(utcp_connect(w.a, B_IP, 81, 0, NULL, w.now, &w.fa.c), 0);
	run(&w, NULL, 5000000);
	CHECK(w.fa.closed);
	CHECK_EQ(w.fa.error, -ECONNREFUSED);
	world_free(&w);
}

TEST(test_pair_bulk_1mb_clean)
{
	struct world w;
	struct utcp_pair_impair imp = {.delay_us = 1000, .rate_bps = 1000000000ull};
	uint64_t t0, t;

	world_init(&w, 1, &imp, NULL, NULL);
	t0 = w.now;
	t = transfer(&w, 1 << 20, 0, 60000000);
	CHECK_EQ(w.fb.received, 1 << 20);
	/* 1 MB at 1 Gbit/s over 2 ms RTT: slow start dominates; well under a second */
	CHECK(t - t0 < 500000);
	CHECK_EQ(utcp_get_stats(w.a)->retransmits, 0);
	check_all_freed_after_time_wait(&w);
	world_free(&w);
}

static void lossy(uint64_t seed)
{
	struct world w;
	struct utcp_pair_impair imp = {.loss_ppm = 30000, .dup_ppm = 10000, .reorder_ppm = 250000,
				       .corrupt_ppm = 5000, .delay_us = 5000, .jitter_us = 500,
				       .reorder_delay_us = 2000, .rate_bps = 100000000ull};
	struct utcp_pair_stats ps;

	uint64_t t0, t;

	world_init(&w, seed, &imp, NULL, NULL);
	t0 = w.now;
	t = transfer(&w, 1 << 20, 256 << 10, 600000000);
	if (getenv("UTCP_TEST_DUMP")) {
		fprintf(stderr, "virtual time %.3f s\n", (double)(t - t0) / 1e6);
		dump(&w);
	}
	CHECK_EQ(w.fb.received, 1 << 20);
	CHECK_EQ(w.fa.received, 256 << 10);
	utcp_pair_get_stats(w.pair, 0, &ps);
	CHECK(ps.lost > 0 && ps.corrupted > 0 && ps.duplicated > 0 && ps.reordered > 0);
	CHECK(utcp_get_stats(w.a)->retransmits > 0);
	CHECK(utcp_get_stats(w.b)->drops[UTCP_DROP_TCP_CSUM] + utcp_get_stats(w.b)->drops[UTCP_DROP_IP_CSUM] +
	      utcp_get_stats(w.b)->drops[UTCP_DROP_ETH_NOT_US] > 0);
	check_all_freed_after_time_wait(&w);
	world_free(&w);
}

TEST(test_pair_lossy_1mb_seed_1) { lossy(1); }
TEST(test_pair_lossy_1mb_seed_2) { lossy(2); }
TEST(test_pair_lossy_1mb_seed_3) { lossy(3); }

TEST(test_pair_lossy_no_sack_no_ts)
{
	struct world w;
	struct utcp_config ca;
	struct utcp_pair_impair imp = {.loss_ppm = 20000, .reorder_ppm = 100000, .delay_us = 2000,
				       .reorder_delay_us = 1000, .rate_bps = 100000000ull};

	cfg_for(&ca, A_IP, a_mac, b_mac);
	ca.sack = ca.timestamps = ca.window_scaling = false;
	world_init(&w, 9, &imp, &ca, NULL);
	transfer(&w, 512 << 10, 0, 600000000);
	CHECK_EQ(w.fb.received, 512 << 10);
	world_free(&w);
}

TEST(test_pair_slow_reader_zero_window)
{
	struct world w;
	struct utcp_config cb;
	struct utcp_pair_impair imp = {.delay_us = 1000};
	int i;

	cfg_for(&cb, B_IP, b_mac, a_mac);
	cb.rcvbuf = 8192;
	world_init(&w, 4, &imp, NULL, &cb);
	w.fb.read_paused = true;
	w.fa.to_send = 100000;
	w.fa.salt_tx = w.fb.salt_rx = 5;
	w.fb.expect = 100000;
	start_client(&w);
	g_stop_at = w.now + 3000000;
	run(&w, time_up, 4000000);               /* reader asleep: the window closes */
	{
		struct utcp_conn_info ci = {.sz = sizeof(ci)};

		CHECK_EQ(utcp_conn_info(w.a, w.fa.c, &ci), 0);
		CHECK_EQ(ci.snd_wnd, 0);
		CHECK(ci.sndbuf_used > 0);
	}
	for (i = 0; i < 200 && w.fb.received < 100000; i++) {
		w.fb.read_paused = false;
		pump_recv(w.b, &w.fb, w.now);
		w.fb.read_paused = true;
		g_stop_at = w.now + 500000;
		run(&w, time_up, 1000000);
	}
	CHECK_EQ(w.fb.received, 100000);
	/* the sender probed the zero window meanwhile */
	CHECK(utcp_get_stats(w.a)->segs_out > 100000 / 1448);
	world_free(&w);
}

static bool accepted_n(struct world *w)
{
	return w->fa.eof && w->fb.eof;
}

TEST(test_pair_short_connections_back_to_baseline)
{
	struct world w;
	struct utcp_config ca, cb;
	int i;

	cfg_for(&ca, A_IP, a_mac, b_mac);
	cfg_for(&cb, B_IP, b_mac, a_mac);
	/* TIME-WAIT holds a control block: 200 connections in 2 s need room for them */
	ca.time_wait_us = cb.time_wait_us = 2000000;
	ca.max_conns = cb.max_conns = 256;
	world_init(&w, 7, NULL, &ca, &cb);
	for (i = 0; i < 200; i++) {
		memset(&w.fa, 0, sizeof(w.fa));
		w.fa.to_send = 1000;
		w.fa.salt_tx = w.fb.salt_rx = 3;
		w.fb.expect = 1000;
		w.fa.expect = 0;
		w.fa.close_on_eof = w.fb.close_on_eof = true;
		start_client(&w);
		run(&w, accepted_n, 10000000);
		CHECK_EQ(w.fb.received, 1000);
		w.now += 1000;
	}
	CHECK_EQ(w.accepted, 200);
	check_all_freed_after_time_wait(&w);
	world_free(&w);
}

TEST(test_pair_simultaneous_close)
{
	struct world w;

	world_init(&w, 1, NULL, NULL, NULL);
	start_client(&w);
	run(&w, NULL, 1000000);
	CHECK(w.fb.c != UTCP_CID_NONE);
	utcp_shutdown(w.a, w.fa.c, w.now);
	utcp_shutdown(w.b, w.fb.c, w.now);
	w.fa.fin_sent = w.fb.fin_sent = true;
	run(&w, accepted_n, 1000000);
	CHECK(w.fa.eof && w.fb.eof);
	check_all_freed_after_time_wait(&w);
	world_free(&w);
}

TEST(test_pair_lossy_cubic)
{
	struct world w;
	struct utcp_config ca, cb;
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	struct utcp_pair_impair imp = {.loss_ppm = 10000, .reorder_ppm = 50000, .delay_us = 5000,
				       .reorder_delay_us = 1000, .rate_bps = 100000000ull};

	cfg_for(&ca, A_IP, a_mac, b_mac);
	cfg_for(&cb, B_IP, b_mac, a_mac);
	strcpy(ca.cc, "cubic");
	strcpy(cb.cc, "cubic");
	world_init(&w, 11, &imp, &ca, &cb);
	w.fa.to_send = 1;
	start_client(&w);
	run(&w, NULL, 100000);
	CHECK_EQ(utcp_conn_info(w.a, w.fa.c, &ci), 0);
	CHECK(strcmp(ci.cc, "cubic") == 0);
	CHECK_EQ(utcp_set_cc(w.a, w.fa.c, "nope"), -ENOENT);
	world_free(&w);

	world_init(&w, 12, &imp, &ca, &cb);
	transfer(&w, 2 << 20, 0, 600000000);
	CHECK_EQ(w.fb.received, 2 << 20);
	world_free(&w);
}

TEST(test_pair_unknown_cc_rejected_at_creation)
{
	struct utcp_config c;
	struct utcp_pair_opts po = {.sz = sizeof(po)};
	struct utcp_pair *p;
	struct utcp_stack *st;
	struct utcp_port port;

	cfg_for(&c, A_IP, a_mac, b_mac);
	strcpy(c.cc, "bogus");
	CHECK_EQ(utcp_pair_create(&po, &p), 0);
	port = utcp_pair_port(p, 0);
	CHECK_EQ(utcp_stack_create(&c, &port, 0, &st), -ENOENT);
	utcp_pair_destroy(p);
}

/* Many seeded runs with random impairment and random stack options: every transfer
 * must arrive byte-exact, and every control block must come back after TIME-WAIT. */
static void torture(uint64_t first_seed, int runs)
{
	int r;

	for (r = 0; r < runs; r++) {
		uint64_t seed = first_seed + (uint64_t)r, x = seed * 0x9e3779b97f4a7c15ULL + 1;
		struct world w;
		struct utcp_config ca, cb;
		struct utcp_pair_impair imp;
		uint64_t up, down;

#define RND(n) ((x = x * 6364136223846793005ULL + 1442695040888963407ULL), (x >> 33) % (n))
		cfg_for(&ca, A_IP, a_mac, b_mac);
		cfg_for(&cb, B_IP, b_mac, a_mac);
		ca.window_scaling = RND(2), ca.sack = RND(2), ca.timestamps = RND(2);
		cb.window_scaling = RND(2), cb.sack = RND(2), cb.timestamps = RND(2);
		ca.nodelay = RND(2);
		strcpy(ca.cc, RND(2) ? "cubic" : "newreno");
		strcpy(cb.cc, RND(2) ? "cubic" : "newreno");
		ca.sndbuf = cb.sndbuf = 4096u << RND(6);
		ca.rcvbuf = 4096u << RND(6);
		cb.rcvbuf = 4096u << RND(6);
		ca.mtu = (uint16_t)(576 + RND(925));
		cb.mtu = (uint16_t)(576 + RND(925));
		ca.time_wait_us = cb.time_wait_us = 1000000;
		memset(&imp, 0, sizeof(imp));
		imp.loss_ppm = (uint32_t)RND(60000);
		imp.dup_ppm = (uint32_t)RND(20000);
		imp.reorder_ppm = (uint32_t)RND(300000);
		imp.corrupt_ppm = (uint32_t)RND(10000);
		imp.delay_us = RND(20000);
		imp.jitter_us = RND(2000);
		imp.reorder_delay_us = RND(10000);
		imp.rate_bps = RND(2) ? 0 : 10000000ull * (1 + RND(100));
		up = RND(300000);
		down = RND(300000);
#undef RND
		world_init(&w, seed, &imp, &ca, &cb);
		transfer(&w, up, down, 3600000000ull);
		if (w.fb.received != up || w.fa.received != down) {
			dump(&w);
			FAIL("seed %llu: up %llu/%llu down %llu/%llu", (unsigned long long)seed,
			     (unsigned long long)w.fb.received, (unsigned long long)up,
			     (unsigned long long)w.fa.received, (unsigned long long)down);
		}
		check_all_freed_after_time_wait(&w);
		world_free(&w);
	}
}

TEST(test_pair_torture_seeds_1_50) { torture(1, 50); }
TEST(test_pair_torture_seeds_51_100) { torture(51, 50); }

/* ---- TIME-WAIT without control blocks (src/tcp/tcp_tw.c) ---- */

static bool both_closed(struct world *w)
{
	return w->fa.c == UTCP_CID_NONE && w->fb.c == UTCP_CID_NONE;
}

/* One request per connection, the server closing first (HTTP/1.0 style): n connections
 * in a row from the client, lport 0 (ephemeral) or fixed. */
static void server_closes_first(struct world *w, unsigned n, uint16_t lport)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		memset(&w->fa, 0, sizeof(w->fa));
		memset(&w->fb, 0, sizeof(w->fb));
		w->fa.c = w->fb.c = UTCP_CID_NONE;
		w->fb.to_send = 1000;            /* the response, then the server's FIN */
		w->fb.salt_tx = w->fa.salt_rx = 5;
		w->fa.expect = 1000;
		w->fa.close_on_eof = true;       /* the client closes on the server's FIN */
		CHECK_EQ(utcp_connect(w->a, B_IP, 80, lport, NULL, w->now, &w->fa.c), 0);
		run(w, both_closed, 10000000);
		if (w->fa.received != 1000 || w->fa.error || w->fb.error) {
			dump(w);
			FAIL("connection %u: received %llu, errors %d %d", i,
			     (unsigned long long)w->fa.received, w->fa.error, w->fb.error);
		}
	}
}

TEST(test_pair_time_wait_10x_max_conns_server_closes_first)
{
	struct world w;
	struct utcp_config ca, cb;
	const struct utcp_stats *sb;
	size_t mem_b;

	cfg_for(&ca, A_IP, a_mac, b_mac);
	cfg_for(&cb, B_IP, b_mac, a_mac);
	ca.max_conns = cb.max_conns = 64;
	ca.time_wait_us = cb.time_wait_us = 60000000;   /* the default 2 MSL: 640 connections
							 * come well within it */
	world_init(&w, 11, NULL, &ca, &cb);
	sb = utcp_get_stats(w.b);
	mem_b = utcp_stack_memory(w.b);
	server_closes_first(&w, 10 * 64, 0);
	/* every SYN answered, none dropped for want of a control block */
	CHECK_EQ(w.accepted, 640);
	CHECK_EQ(sb->passive_opens, 640);
	CHECK_EQ(sb->drops[UTCP_DROP_TABLE_FULL], 0);
	CHECK_EQ(sb->drops[UTCP_DROP_BACKLOG], 0);
	CHECK_EQ(sb->conns_in_use, 0);
	/* the server's TIME-WAIT table (4 x 64 entries) recycled the oldest */
	CHECK_EQ(sb->time_wait_in_use, 256);
	CHECK_EQ(sb->time_wait_recycled, 640 - 256);
	CHECK_EQ(utcp_get_stats(w.a)->time_wait_in_use, 0);   /* the client closed second */
	/* after 2 MSL everything is back to baseline */
	check_all_freed_after_time_wait(&w);
	CHECK_EQ(sb->time_wait_in_use, 0);
	CHECK_EQ(utcp_stack_memory(w.b), mem_b);
	world_free(&w);
}

TEST(test_pair_time_wait_syn_reuse_rfc6191_same_port)
{
	struct world w;
	struct utcp_pair_impair imp = {.delay_us = 1000};
	const struct utcp_stats *sb;

	/* The client reconnects from the same port each time: each SYN meets the server's
	 * TIME-WAIT entry of the previous connection and reopens it by its timestamp. */
	world_init(&w, 12, &imp, NULL, NULL);
	sb = utcp_get_stats(w.b);
	server_closes_first(&w, 3 * 64, 40123);
	CHECK_EQ(w.accepted, 3 * 64);
	CHECK_EQ(sb->drops[UTCP_DROP_TABLE_FULL], 0);
	CHECK_EQ(sb->time_wait_in_use, 1);
	CHECK_EQ(sb->time_wait_recycled, 0);
	CHECK_EQ(utcp_get_stats(w.a)->rst_out, 0);
	check_all_freed_after_time_wait(&w);
	CHECK_EQ(sb->time_wait_in_use, 0);
	world_free(&w);
}
