/* test_tcp_states.c — packet traces per state: build a connection in a state, feed a
 * segment, assert the exact segment emitted.  Tests are named test_<state>_<event>. */
#include <errno.h>
#include <stdlib.h>

#include "harness.h"

#define W 65535

/* ---- CLOSED (no connection, no listener) ---- */

TEST(test_closed_syn_gets_rst_ack)
{
	struct h *h = h_new(NULL);

	h_send(h, SYN, 1000, 0, W, NULL, 0);
	/* <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> */
	EXPECT(h, RST | ACK, 0, 1001, 0);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_NO_CONN], 1);
	h_free(h);
}

TEST(test_closed_ack_gets_rst)
{
	struct h *h = h_new(NULL);

	h_send(h, ACK, 1000, 5555, W, "abc", 3);
	EXPECT(h, RST, 5555, 0, 0);             /* <SEQ=SEG.ACK><CTL=RST> */
	h_free(h);
}

TEST(test_closed_rst_ignored)
{
	struct h *h = h_new(NULL);

	h_send(h, RST | ACK, 1000, 5555, W, NULL, 0);
	EXPECT_NONE(h);
	h_free(h);
}

/* ---- LISTEN ---- */

TEST(test_listen_syn_gets_syn_ack_with_mss)
{
	struct h *h = h_new(NULL);
	struct h_seg s;

	h_listen(h);
	h_send(h, SYN, 1000, 0, W, NULL, 0);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.flags, SYN | ACK);
	CHECK_U32(s.th.ack, 1001);
	CHECK(s.th.opt.has_mss);
	CHECK_EQ(s.th.opt.mss, 1460);
	/* options the peer did not offer are not answered */
	CHECK(!s.th.opt.has_ws && !s.th.opt.sack_ok && !s.th.opt.has_ts);
	CHECK_EQ(s.th.wnd, 65535);
	NO_EVENT(h);                            /* not accepted before the handshake ends */
	h_free(h);
}

TEST(test_listen_ack_gets_rst)
{
	struct h *h = h_new(NULL);

	h_listen(h);
	h_send(h, ACK, 1000, 777, W, NULL, 0);
	EXPECT(h, RST, 777, 0, 0);
	h_free(h);
}

TEST(test_listen_rst_ignored)
{
	struct h *h = h_new(NULL);

	h_listen(h);
	h_send(h, RST, 1000, 0, W, NULL, 0);
	EXPECT_NONE(h);
	h_free(h);
}

TEST(test_listen_syn_fin_dropped)
{
	struct h *h = h_new(NULL);

	h_listen(h);
	h_send(h, SYN | FIN, 1000, 0, W, NULL, 0);
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_TCP_BAD_FLAGS], 1);
	h_free(h);
}

TEST(test_listen_backlog_full_drops_syn)
{
	struct utcp_config c;
	struct h *h;
	struct h_seg s;

	h_default_config(&c);
	h = h_new(&c);
	CHECK(utcp_listen(h->st, H_LPORT, 1) >= 0);
	h_send(h, SYN, 1000, 0, W, NULL, 0);
	CHECK(h_pop(h, &s));
	/* A second half-open connection from another port exceeds the backlog of 1. */
	{
		uint8_t f[128];
		struct utcp_tcp th;
		int tl;

		memset(&th, 0, sizeof(th));
		th.sport = H_PPORT + 1;
		th.dport = H_LPORT;
		th.seq = 5000;
		th.flags = SYN;
		th.wnd = W;
		utcp_eth_emit(f, sizeof(f), h_local_mac, h_peer_mac, UTCP_ETH_P_IPV4);
		tl = utcp_tcp_emit(f + 34, sizeof(f) - 34, H_PEER_IP, H_LOCAL_IP, &th, NULL, 0);
		utcp_ipv4_emit(f + 14, 20, H_PEER_IP, H_LOCAL_IP, 6, (uint16_t)tl, 64, 1);
		h_send_raw(h, f, 34 + (size_t)tl);
	}
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_BACKLOG], 1);
	h_free(h);
}

TEST(test_listen_table_full_drops_syn)
{
	struct utcp_config c;
	struct h *h;
	utcp_cid cid;

	h_default_config(&c);
	c.max_conns = 1;
	h = h_new(&c);
	h_listen(h);
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, 9, 0, NULL, h->now, &cid), 0);
	h_skip(h);                             /* that SYN */
	h_send(h, SYN, 1000, 0, W, NULL, 0);
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_TABLE_FULL], 1);
	h_free(h);
}

/* ---- SYN-RECEIVED ---- */

TEST(test_syn_received_ack_establishes)
{
	struct h *h = h_new(NULL);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	h_established_passive(h);
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK_EQ(ci.state, UTCP_ESTABLISHED);
	CHECK_EQ(ci.lport, H_LPORT);
	CHECK_EQ(ci.rport, H_PPORT);
	CHECK_EQ(ci.snd_mss, 536);             /* the peer sent no MSS option */
	CHECK_EQ(ci.snd_wnd, 65535);
	h_free(h);
}

TEST(test_syn_received_retransmitted_syn_gets_syn_ack_again)
{
	struct h *h = h_new(NULL);

	h_syn_received(h);
	h_send(h, SYN, 1000, 0, W, NULL, 0);
	EXPECT(h, SYN | ACK, h->iss, 1001, 0);
	h_free(h);
}

TEST(test_syn_received_bad_ack_gets_rst)
{
	struct h *h = h_new(NULL);

	h_syn_received(h);
	h_send(h, ACK, 1001, h->iss + 5, W, NULL, 0);
	EXPECT(h, RST, h->iss + 5, 0, 0);      /* <SEQ=SEG.ACK><CTL=RST> */
	NO_EVENT(h);
	h_free(h);
}

TEST(test_syn_received_rst_returns_to_listen)
{
	struct h *h = h_new(NULL);

	h_syn_received(h);
	h_send(h, RST, 1001, 0, W, NULL, 0);
	EXPECT_NONE(h);
	NO_EVENT(h);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	/* and the listener takes a new SYN */
	h_send(h, SYN, 3000, 0, W, NULL, 0);
	{
		struct h_seg s;

		CHECK(h_pop(h, &s));
		CHECK_EQ(s.th.flags, SYN | ACK);
		CHECK_U32(s.th.ack, 3001);
	}
	h_free(h);
}

TEST(test_syn_received_syn_ack_timeout_retransmits_with_backoff)
{
	struct h *h = h_new(NULL);
	uint64_t t0 = h->now;

	h_syn_received(h);
	h_advance(h, t0 + 999000);
	EXPECT_NONE(h);
	h_advance(h, t0 + 1000000);            /* RTO 1 s (RFC 6298 2.1) */
	EXPECT(h, SYN | ACK, h->iss, 1001, 0);
	h_advance(h, t0 + 2999000);
	EXPECT_NONE(h);
	h_advance(h, t0 + 3000000);            /* backed off to 2 s */
	EXPECT(h, SYN | ACK, h->iss, 1001, 0);
	h_free(h);
}

TEST(test_syn_received_gives_up_after_syn_retries)
{
	struct utcp_config c;
	struct h *h;
	uint64_t t, end;
	int n = 0;
	struct h_seg s;

	h_default_config(&c);
	c.syn_retries = 3;
	h = h_new(&c);
	h_syn_received(h);
	for (t = h->now, end = h->now + 100000000ull; t < end; t += 100000) {
		h_advance(h, t);
		while (h_pop(h, &s))
			n++;
	}
	CHECK_EQ(n, 3);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_free(h);
}

/* ---- SYN-SENT ---- */

TEST(test_syn_sent_syn_ack_establishes)
{
	struct h *h = h_new(NULL);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	h_established_active(h);
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK_EQ(ci.state, UTCP_ESTABLISHED);
	CHECK(ci.srtt_us == 0 || ci.srtt_us == 1);   /* immediate answer: RTT ~0 */
	h_free(h);
}

TEST(test_syn_sent_syn_has_offered_options)
{
	struct utcp_config c;
	struct h *h;
	struct h_seg s;

	h_default_config(&c);
	c.window_scaling = c.sack = c.timestamps = true;
	h = h_new(&c);
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, H_PPORT, H_LPORT, NULL, h->now, &h->conn), 0);
	CHECK(h_pop(h, &s));
	CHECK(s.th.opt.has_mss && s.th.opt.mss == 1460);
	CHECK(s.th.opt.has_ws);
	CHECK_EQ(s.th.opt.ws, 1);              /* 65536 > 65535: shift 1 */
	CHECK(s.th.opt.sack_ok);
	CHECK(s.th.opt.has_ts);
	CHECK_EQ(s.th.opt.tsecr, 0);
	h_free(h);
}

TEST(test_syn_sent_bad_ack_gets_rst)
{
	struct h *h = h_new(NULL);

	h_syn_sent(h);
	h_send(h, SYN | ACK, 1000, h->iss + 7, W, NULL, 0);
	EXPECT(h, RST, h->iss + 7, 0, 0);
	h_send(h, ACK, 1000, h->iss, W, NULL, 0);      /* SEG.ACK =< ISS */
	EXPECT(h, RST, h->iss, 0, 0);
	NO_EVENT(h);
	h_free(h);
}

TEST(test_syn_sent_rst_with_good_ack_refuses)
{
	struct h *h = h_new(NULL);
	struct utcp_event ev;

	h_syn_sent(h);
	h_send(h, RST | ACK, 0, h->iss + 1, 0, NULL, 0);
	EXPECT_NONE(h);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CLOSED);
	CHECK_EQ(ev.error, -ECONNREFUSED);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_free(h);
}

TEST(test_syn_sent_rst_without_ack_ignored)
{
	struct h *h = h_new(NULL);

	h_syn_sent(h);
	h_send(h, RST, 0, 0, 0, NULL, 0);
	EXPECT_NONE(h);
	NO_EVENT(h);
	h_free(h);
}

TEST(test_syn_sent_simultaneous_open)
{
	struct h *h = h_new(NULL);
	struct utcp_event ev;

	h_syn_sent(h);
	/* the peer's own SYN crosses ours */
	h_send(h, SYN, 1000, 0, W, NULL, 0);
	EXPECT(h, SYN | ACK, h->iss, 1001, 0);
	/* then its SYN,ACK (acknowledging our SYN) */
	h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);
	EXPECT_NONE(h);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CONNECTED);
	h_free(h);
}

TEST(test_syn_sent_timeout_backoff_then_etimedout)
{
	struct utcp_config c;
	struct h *h;
	uint64_t t0, expect_at[3] = {1000000, 3000000, 7000000};
	struct utcp_event ev;
	int i;

	h_default_config(&c);
	c.syn_retries = 3;
	h = h_new(&c);
	t0 = h->now;
	h_syn_sent(h);
	for (i = 0; i < 3; i++) {
		h_advance(h, t0 + expect_at[i] - 1000);
		EXPECT_NONE(h);
		h_advance(h, t0 + expect_at[i]);
		EXPECT(h, SYN, h->iss, 0, 0);
	}
	h_advance(h, t0 + 15000000);           /* 8 s after the last: gives up */
	EXPECT_NONE(h);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CLOSED);
	CHECK_EQ(ev.error, -ETIMEDOUT);
	h_free(h);
}

TEST(test_syn_sent_port_unreachable_refuses)
{
	struct h *h = h_new(NULL);
	uint8_t f[128], *m = f + 34;
	struct utcp_event ev;

	h_syn_sent(h);
	memset(f, 0, sizeof(f));
	utcp_eth_emit(f, sizeof(f), h_local_mac, h_peer_mac, UTCP_ETH_P_IPV4);
	m[0] = 3, m[1] = 3;
	utcp_ipv4_emit(m + 8, 20, H_LOCAL_IP, H_PEER_IP, 6, 40, 64, 0);
	utcp_put16(m + 28, H_LPORT);
	utcp_put16(m + 30, H_PPORT);
	utcp_put32(m + 32, h->iss);
	utcp_put16(m + 2, utcp_csum_fold(utcp_csum_add(0, m, 36)));
	utcp_ipv4_emit(f + 14, 20, H_PEER_IP, H_LOCAL_IP, UTCP_IPPROTO_ICMP, 36, 64, 0);
	h_send_raw(h, f, 14 + 20 + 36);
	ev = EVENT(h);
	CHECK_EQ(ev.error, -ECONNREFUSED);
	h_free(h);
}

/* ---- ESTABLISHED ---- */

TEST(test_established_data_is_delivered_and_delayed_acked)
{
	struct h *h = h_new(NULL);
	struct utcp_event ev;
	char buf[16];

	h_established_passive(h);
	h_send(h, ACK | PSH, 1001, h->iss + 1, W, "hello", 5);
	EXPECT_NONE(h);                         /* one small segment: delayed ACK */
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_READABLE);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 5);
	CHECK_MEM(buf, "hello", 5);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), -EAGAIN);
	EXPECT_NONE(h);
	h_advance(h, h->now + 39000);
	EXPECT_NONE(h);
	h_advance(h, h->now + 1000);            /* the 40 ms bound */
	EXPECT(h, ACK, h->iss + 1, 1006, 0);
	h_free(h);
}

TEST(test_established_every_second_full_segment_acked)
{
	struct h *h = h_new(NULL);
	static char d[536];

	h_established_passive(h);               /* peer sent no MSS option: 536 */
	memset(d, 'x', sizeof(d));
	h_send(h, ACK, 1001, h->iss + 1, W, d, 536);
	EXPECT_NONE(h);
	h_send(h, ACK, 1001 + 536, h->iss + 1, W, d, 536);
	EXPECT(h, ACK, h->iss + 1, 1001 + 1072, 0);
	h_free(h);
}

TEST(test_established_send_respects_mss_and_initial_window)
{
	struct h *h = h_new(NULL);
	static char d[20000];
	struct h_seg s;
	uint32_t seq;
	int n = 0;

	h_established_passive(h);               /* MSS 536: IW = min(10*536, max(1072, 14600)) */
	memset(d, 'y', sizeof(d));
	CHECK_EQ(utcp_send(h->st, h->conn, d, sizeof(d), h->now), 20000);
	seq = h->iss + 1;
	while (h_pop(h, &s)) {
		CHECK_U32(s.th.seq, seq);
		CHECK_EQ(s.th.payload_len, 536);
		seq += 536;
		n++;
	}
	CHECK_EQ(n, 10);                        /* RFC 6928 */
	h_free(h);
}

TEST(test_established_ack_opens_cwnd_and_sends_more)
{
	struct h *h = h_new(NULL);
	static char d[20000];
	struct h_seg s;
	int n = 0;

	h_established_passive(h);
	memset(d, 'y', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	while (h_pop(h, &s))
		;
	h->now += 10000;
	/* ACK two segments: slow start grows cwnd by 2*SMSS at most (RFC 3465 L=2) */
	h_send(h, ACK, 1001, h->iss + 1 + 1072, W, NULL, 0);
	while (h_pop(h, &s))
		n++;
	CHECK_EQ(n, 4);                         /* 2 acked + 2 growth */
	h_free(h);
}

TEST(test_established_nagle_holds_small_segment)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	utcp_send(h->st, h->conn, "a", 1, h->now);
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 1);
	utcp_send(h->st, h->conn, "b", 1, h->now);
	EXPECT_NONE(h);                         /* one small segment in flight */
	h_send(h, ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK | PSH, h->iss + 2, 1001, 1);
	utcp_set_nodelay(h->st, h->conn, true);
	utcp_send(h->st, h->conn, "c", 1, h->now);
	EXPECT(h, ACK | PSH, h->iss + 3, 1001, 1);
	h_free(h);
}

/* Minshall's Nagle, as Linux: full segments in flight do not hold back a small tail (classic
 * Nagle would wait for their ACK, which a receiver past its quick ACKs delays); a small segment
 * in flight does hold the next one. */
TEST(test_established_nagle_does_not_hold_a_tail_behind_full_segments)
{
	struct h *h = h_new(NULL);
	static char d[1172];

	h_established_passive(h);               /* MSS 536 */
	memset(d, 'z', sizeof(d));
	CHECK_EQ(utcp_send(h->st, h->conn, d, sizeof(d), h->now), 1172);
	EXPECT(h, ACK, h->iss + 1, 1001, 536);
	EXPECT(h, ACK, h->iss + 537, 1001, 536);
	EXPECT(h, ACK | PSH, h->iss + 1073, 1001, 100);  /* the tail at once */
	CHECK_EQ(utcp_send(h->st, h->conn, d, 50, h->now), 50);
	EXPECT_NONE(h);                         /* a small segment is in flight */
	h_send(h, ACK, 1001, h->iss + 1073, W, NULL, 0);
	EXPECT_NONE(h);                         /* the full ones acked, the small one not */
	h_send(h, ACK, 1001, h->iss + 1173, W, NULL, 0);
	EXPECT(h, ACK | PSH, h->iss + 1173, 1001, 50);
	h_free(h);
}

TEST(test_established_out_of_order_then_fill)
{
	struct h *h = h_new(NULL);
	char buf[32];

	h_established_passive(h);
	h_send(h, ACK, 1006, h->iss + 1, W, "world", 5);
	EXPECT(h, ACK, h->iss + 1, 1001, 0);   /* immediate duplicate ACK */
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), -EAGAIN);
	h_send(h, ACK, 1001, h->iss + 1, W, "hello", 5);
	EXPECT(h, ACK, h->iss + 1, 1011, 0);   /* hole filled: ACK at once */
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 10);
	CHECK_MEM(buf, "helloworld", 10);
	h_free(h);
}

TEST(test_established_overlapping_retransmission_trimmed)
{
	struct h *h = h_new(NULL);
	char buf[32];

	h_established_passive(h);
	h_send(h, ACK, 1001, h->iss + 1, W, "abcde", 5);
	h_send(h, ACK, 1003, h->iss + 1, W, "cdefgh", 6);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 8);
	CHECK_MEM(buf, "abcdefgh", 8);
	h_free(h);
}

TEST(test_established_old_duplicate_gets_ack)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	h_send(h, ACK, 1001, h->iss + 1, W, "abcde", 5);
	h_skip(h);
	h_send(h, ACK, 1001, h->iss + 1, W, "abcde", 5);
	EXPECT(h, ACK, h->iss + 1, 1006, 0);
	h_free(h);
}

TEST(test_established_rst_exact_resets)
{
	struct h *h = h_new(NULL);
	struct utcp_event ev;

	h_established_passive(h);
	h_send(h, RST, 1001, 0, W, NULL, 0);
	EXPECT_NONE(h);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CLOSED);
	CHECK_EQ(ev.error, -ECONNRESET);
	CHECK_EQ(utcp_send(h->st, h->conn, "x", 1, h->now), -ECONNRESET);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	CHECK_EQ(utcp_send(h->st, h->conn, "x", 1, h->now), -EBADF);
	h_free(h);
}

TEST(test_established_rst_in_window_gets_challenge_ack)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	h_send(h, RST, 1001 + 100, 0, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1, 1001, 0);   /* RFC 5961 3.2 */
	NO_EVENT(h);
	CHECK_EQ(utcp_get_stats(h->st)->challenge_acks, 1);
	h_free(h);
}

TEST(test_established_rst_out_of_window_ignored)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	h_send(h, RST, 1001 + 100000, 0, W, NULL, 0);
	EXPECT_NONE(h);
	h_send(h, RST, 900, 0, W, NULL, 0);
	EXPECT_NONE(h);
	NO_EVENT(h);
	h_free(h);
}

TEST(test_established_syn_gets_challenge_ack)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	h_send(h, SYN, 1001 + 10, 0, W, NULL, 0);      /* in window */
	EXPECT(h, ACK, h->iss + 1, 1001, 0);
	h_send(h, SYN, 5, 0, W, NULL, 0);              /* out of window: plain ACK */
	EXPECT(h, ACK, h->iss + 1, 1001, 0);
	NO_EVENT(h);
	h_free(h);
}

TEST(test_established_challenge_acks_rate_limited)
{
	struct utcp_config c;
	struct h *h;
	int i;

	h_default_config(&c);
	c.challenge_ack_limit = 3;
	h = h_new(&c);
	h_established_passive(h);
	for (i = 0; i < 10; i++)
		h_send(h, RST, 1001 + 100 + (uint32_t)i, 0, W, NULL, 0);
	for (i = 0; i < 3; i++)
		EXPECT(h, ACK, h->iss + 1, 1001, 0);
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->challenge_acks_limited, 7);
	h_free(h);
}

TEST(test_established_ack_of_unsent_data_gets_ack)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	h_send(h, ACK, 1001, h->iss + 1000, W, "zz", 2);
	EXPECT(h, ACK, h->iss + 1, 1001, 0);   /* dropped: data not taken */
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_TCP_STATE], 1);
	h_free(h);
}

TEST(test_established_rto_retransmits_with_backoff)
{
	struct h *h = h_new(NULL);
	uint64_t t0;

	h_established_passive(h);
	t0 = h->now;
	utcp_send(h->st, h->conn, "data", 4, h->now);
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 4);
	/* RTT sample from the handshake was ~0: RTO = max(rto_min 200 ms, ...) */
	h_advance(h, t0 + 199000);
	EXPECT_NONE(h);
	h_advance(h, t0 + 200000);
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 4);
	h_advance(h, t0 + 599000);
	EXPECT_NONE(h);
	h_advance(h, t0 + 600000);             /* doubled: 400 ms later */
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 4);
	h_advance(h, t0 + 1400000);            /* 800 ms later */
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 4);
	/* the ACK stops the timer */
	h_send(h, ACK, 1001, h->iss + 5, W, NULL, 0);
	h_advance(h, t0 + 10000000);
	EXPECT_NONE(h);
	h_free(h);
}

TEST(test_established_karn_no_sample_from_retransmission)
{
	struct h *h = h_new(NULL);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	uint64_t t0;

	h_established_passive(h);
	t0 = h->now;
	utcp_send(h->st, h->conn, "data", 4, h->now);
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 4);
	h_advance(h, t0 + 200000);
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 4);
	h->now = t0 + 250000;
	h_send(h, ACK, 1001, h->iss + 5, W, NULL, 0);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK(ci.srtt_us < 1000);               /* no 250 ms sample was taken */
	CHECK_EQ(ci.rto_us, 400000);            /* backoff kept until a valid sample */
	/* a new segment that is not retransmitted gives a sample and clears backoff */
	utcp_send(h->st, h->conn, "more", 4, h->now);
	EXPECT(h, ACK | PSH, h->iss + 5, 1001, 4);
	h->now += 50000;
	h_send(h, ACK, 1001, h->iss + 9, W, NULL, 0);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK(ci.srtt_us > 5000);
	CHECK_EQ(ci.rto_us, 200000);
	h_free(h);
}

TEST(test_established_data_retries_exhausted_times_out)
{
	struct utcp_config c;
	struct h *h;
	struct utcp_event ev;
	uint64_t t, end;

	h_default_config(&c);
	c.data_retries = 4;
	h = h_new(&c);
	h_established_passive(h);
	utcp_send(h->st, h->conn, "data", 4, h->now);
	for (t = h->now, end = h->now + 600000000ull; t < end; t += 100000)
		h_advance(h, t);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CLOSED);
	CHECK_EQ(ev.error, -ETIMEDOUT);
	CHECK_EQ(utcp_get_stats(h->st)->rto_timeouts, 4);
	h_free(h);
}

TEST(test_established_fast_retransmit_on_three_dupacks)
{
	struct h *h = h_new(NULL);
	static char d[536 * 6];
	struct h_seg s;
	int i;

	h_established_passive(h);
	memset(d, 'q', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	for (i = 0; i < 6; i++)
		CHECK(h_pop(h, &s));
	for (i = 0; i < 2; i++) {
		h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);
		EXPECT_NONE(h);
	}
	h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1, 1001, 536);  /* RFC 5681 3.2 */
	CHECK_EQ(utcp_get_stats(h->st)->fast_retransmits, 1);
	/* partial ACK (RFC 6582): retransmit the next hole at once */
	h_send(h, ACK, 1001, h->iss + 1 + 536 * 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1 + 536 * 2, 1001, 536);
	h_free(h);
}

TEST(test_established_zero_window_probes_then_persist_exit)
{
	struct h *h = h_new(NULL);
	struct h_seg s;
	uint64_t t0;

	h_established_passive(h);
	/* the peer closes its window while acking the first byte */
	utcp_send(h->st, h->conn, "A", 1, h->now);
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 1);
	h_send(h, ACK, 1001, h->iss + 2, 0, NULL, 0);
	utcp_send(h->st, h->conn, "BCD", 3, h->now);
	EXPECT_NONE(h);
	t0 = h->now;
	h_advance(h, t0 + 200000);             /* persist timer at RTO */
	s = EXPECT(h, ACK, h->iss + 1, 1001, 0);   /* probe: SEQ = SND.UNA - 1 */
	(void)s;
	h_advance(h, t0 + 600000);             /* backed off */
	EXPECT(h, ACK, h->iss + 1, 1001, 0);
	/* the window opens: data flows, persist stops */
	h_send(h, ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK | PSH, h->iss + 2, 1001, 3);
	h_send(h, ACK, 1001, h->iss + 5, W, NULL, 0);
	h_advance(h, t0 + 60000000);
	EXPECT_NONE(h);
	h_free(h);
}

TEST(test_established_receive_window_closes_and_reopens)
{
	struct utcp_config c;
	struct h *h;
	static char d[1024];
	char buf[4096];
	struct h_seg s;
	uint32_t seq = 1001;
	int i;

	h_default_config(&c);
	c.rcvbuf = 4096;
	h = h_new(&c);
	h_established_passive(h);
	memset(d, 'r', sizeof(d));
	for (i = 0; i < 4; i++, seq += 1024)
		h_send(h, ACK, seq, h->iss + 1, W, d, 1024);
	/* window is now 0 */
	while (h_pop(h, &s))
		;
	h_send(h, ACK, seq, h->iss + 1, W, d, 1);      /* a probe beyond the window */
	s = EXPECT(h, ACK, h->iss + 1, seq, 0);
	CHECK_EQ(s.th.wnd, 0);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 4096);
	s = EXPECT(h, ACK, h->iss + 1, seq, 0);  /* window update */
	CHECK_EQ(s.th.wnd, 4096);
	h_free(h);
}

TEST(test_established_close_sends_fin)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_free(h);
}

TEST(test_established_fin_after_data)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	utcp_send(h->st, h->conn, "bye", 3, h->now);
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);
	EXPECT(h, ACK | PSH, h->iss + 1, 1001, 3);
	/* Nagle does not hold the FIN back */
	EXPECT(h, FIN | ACK, h->iss + 4, 1001, 0);
	CHECK_EQ(utcp_send(h->st, h->conn, "x", 1, h->now), -EPIPE);
	h_free(h);
}

TEST(test_established_close_with_unread_data_resets)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	h_send(h, ACK, 1001, h->iss + 1, W, "unread", 6);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	EXPECT(h, RST, h->iss + 1, 0, 0);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_free(h);
}

TEST(test_established_abort_sends_rst)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	CHECK_EQ(utcp_abort(h->st, h->conn, h->now), 0);
	EXPECT(h, RST, h->iss + 1, 0, 0);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_free(h);
}

TEST(test_established_fin_moves_to_close_wait)
{
	struct h *h = h_new(NULL);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	struct utcp_event ev;
	char buf[8];

	h_established_passive(h);
	h_send(h, FIN | ACK, 1001, h->iss + 1, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1, 1002, 0);   /* FIN acknowledged at once */
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_READABLE);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 0);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.state, UTCP_CLOSE_WAIT);
	h_free(h);
}

/* ---- half-close: CLOSE-WAIT keeps sending ---- */

TEST(test_close_wait_send_then_close_to_last_ack_then_closed)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	h_send(h, FIN | ACK, 1001, h->iss + 1, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1, 1002, 0);
	CHECK_EQ(utcp_send(h->st, h->conn, "late", 4, h->now), 4);
	EXPECT(h, ACK | PSH, h->iss + 1, 1002, 4);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 5, 1002, 0);      /* Nagle never holds a FIN */
	h_send(h, ACK, 1002, h->iss + 5, W, NULL, 0);
	EXPECT_NONE(h);
	h_send(h, ACK, 1002, h->iss + 6, W, NULL, 0);   /* LAST-ACK -> CLOSED */
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_free(h);
}

/* ---- FIN-WAIT-1 / FIN-WAIT-2 / CLOSING / TIME-WAIT ---- */

static void to_fin_wait_1(struct h *h)
{
	h_established_passive(h);
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
}

TEST(test_fin_wait_1_ack_to_fin_wait_2)
{
	struct h *h = h_new(NULL);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	to_fin_wait_1(h);
	h_send(h, ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT_NONE(h);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.state, UTCP_FIN_WAIT_2);
	h_free(h);
}

TEST(test_fin_wait_1_fin_retransmitted_on_rto)
{
	struct h *h = h_new(NULL);
	uint64_t t0 = h->now;

	to_fin_wait_1(h);
	h_advance(h, t0 + 200000);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_free(h);
}

TEST(test_fin_wait_1_simultaneous_close_to_closing_to_time_wait)
{
	struct h *h = h_new(NULL);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	to_fin_wait_1(h);
	h_send(h, FIN | ACK, 1001, h->iss + 1, W, NULL, 0);   /* FIN crossing ours */
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.state, UTCP_CLOSING);
	h_send(h, ACK, 1002, h->iss + 2, W, NULL, 0);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.state, UTCP_TIME_WAIT);
	h_free(h);
}

TEST(test_fin_wait_1_fin_ack_to_time_wait)
{
	struct h *h = h_new(NULL);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	to_fin_wait_1(h);
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.state, UTCP_TIME_WAIT);
	h_free(h);
}

TEST(test_fin_wait_2_data_still_received)
{
	struct h *h = h_new(NULL);
	char buf[8];

	to_fin_wait_1(h);
	h_send(h, ACK, 1001, h->iss + 2, W, NULL, 0);
	h_send(h, ACK | PSH, 1001, h->iss + 2, W, "tail", 4);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 4);
	h_send(h, FIN | ACK, 1005, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1006, 0);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 0);
	h_free(h);
}

TEST(test_fin_wait_2_orphan_times_out)
{
	struct utcp_config c;
	struct h *h;

	h_default_config(&c);
	c.time_wait_us = 5000000;
	h = h_new(&c);
	h_established_passive(h);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_send(h, ACK, 1001, h->iss + 2, W, NULL, 0);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 1);
	h_advance(h, h->now + 5000000);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_free(h);
}

TEST(test_fin_wait_2_orphan_data_resets)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	utcp_close(h->st, h->conn, h->now);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_send(h, ACK, 1001, h->iss + 2, W, NULL, 0);
	h_send(h, ACK, 1001, h->iss + 2, W, "nobody", 6);
	EXPECT(h, RST, h->iss + 2, 0, 0);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_free(h);
}

static void to_time_wait(struct h *h)
{
	h_established_passive(h);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
}

TEST(test_time_wait_expires_after_configured_duration)
{
	struct utcp_config c;
	struct h *h;
	uint64_t t0;

	h_default_config(&c);
	c.time_wait_us = 2000000;
	h = h_new(&c);
	to_time_wait(h);
	t0 = h->now;
	/* the control block is free at once; the TIME-WAIT entry lasts its 2 MSL */
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_advance(h, t0 + 1999000);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 1);
	h_advance(h, t0 + 2000000);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 0);
	CHECK(utcp_next_deadline(h->st) == UINT64_MAX);
	h_free(h);
}

TEST(test_time_wait_retransmitted_fin_acked_and_timer_restarted)
{
	struct utcp_config c;
	struct h *h;
	uint64_t t0;

	h_default_config(&c);
	c.time_wait_us = 2000000;
	h = h_new(&c);
	to_time_wait(h);
	t0 = h->now;
	h->now = t0 + 1500000;
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	h_advance(h, t0 + 2500000);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 1);
	h_advance(h, t0 + 3500000);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 0);
	h_free(h);
}

TEST(test_time_wait_rst_ignored_rfc1337)
{
	struct h *h = h_new(NULL);

	to_time_wait(h);
	h_send(h, RST, 1002, 0, W, NULL, 0);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 1);
	h_free(h);
}

TEST(test_time_wait_new_syn_higher_seq_reuses_rfc6191)
{
	struct h *h = h_new(NULL);
	struct h_seg s;

	to_time_wait(h);
	h_send(h, SYN, 50000, 0, W, NULL, 0);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.flags, SYN | ACK);
	CHECK_U32(s.th.ack, 50001);
	h_free(h);
}

TEST(test_time_wait_old_syn_not_reused)
{
	struct h *h = h_new(NULL);

	to_time_wait(h);
	h_send(h, SYN, 500, 0, W, NULL, 0);    /* below RCV.NXT: not provably new */
	EXPECT(h, ACK, h->iss + 2, 1002, 0);   /* an ACK, no SYN,ACK */
	h_free(h);
}

/* ---- LAST-ACK ---- */

TEST(test_last_ack_fin_retransmitted_then_closed)
{
	struct h *h = h_new(NULL);
	uint64_t t0;

	h_established_passive(h);
	h_send(h, FIN | ACK, 1001, h->iss + 1, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1, 1002, 0);
	t0 = h->now;
	utcp_close(h->st, h->conn, h->now);
	EXPECT(h, FIN | ACK, h->iss + 1, 1002, 0);
	h_advance(h, t0 + 200000);
	EXPECT(h, FIN | ACK, h->iss + 1, 1002, 0);
	h_send(h, ACK, 1002, h->iss + 2, W, NULL, 0);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	h_free(h);
}

/* ---- input validation at the stack edge ---- */

TEST(test_input_bad_tcp_checksum_dropped_and_counted)
{
	struct h *h = h_new(NULL);
	uint8_t f[128];
	struct utcp_tcp th;
	int tl;

	h_listen(h);
	memset(&th, 0, sizeof(th));
	th.sport = H_PPORT, th.dport = H_LPORT, th.seq = 1000, th.flags = SYN, th.wnd = W;
	utcp_eth_emit(f, sizeof(f), h_local_mac, h_peer_mac, UTCP_ETH_P_IPV4);
	tl = utcp_tcp_emit(f + 34, sizeof(f) - 34, H_PEER_IP, H_LOCAL_IP, &th, NULL, 0);
	utcp_ipv4_emit(f + 14, 20, H_PEER_IP, H_LOCAL_IP, 6, (uint16_t)tl, 64, 1);
	f[34 + 16] ^= 0xff;
	h_send_raw(h, f, 34 + (size_t)tl);
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_TCP_CSUM], 1);
	h_free(h);
}

TEST(test_input_not_our_mac_or_ip_dropped)
{
	struct h *h = h_new(NULL);
	uint8_t f[128];
	struct utcp_tcp th;
	uint8_t other[6] = {2, 9, 9, 9, 9, 9};
	int tl;

	h_listen(h);
	memset(&th, 0, sizeof(th));
	th.sport = H_PPORT, th.dport = H_LPORT, th.seq = 1000, th.flags = SYN, th.wnd = W;
	utcp_eth_emit(f, sizeof(f), other, h_peer_mac, UTCP_ETH_P_IPV4);
	tl = utcp_tcp_emit(f + 34, sizeof(f) - 34, H_PEER_IP, H_LOCAL_IP, &th, NULL, 0);
	utcp_ipv4_emit(f + 14, 20, H_PEER_IP, H_LOCAL_IP, 6, (uint16_t)tl, 64, 1);
	h_send_raw(h, f, 34 + (size_t)tl);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_ETH_NOT_US], 1);
	utcp_eth_emit(f, sizeof(f), h_local_mac, h_peer_mac, UTCP_ETH_P_IPV4);
	tl = utcp_tcp_emit(f + 34, sizeof(f) - 34, H_PEER_IP, H_LOCAL_IP + 1, &th, NULL, 0);
	utcp_ipv4_emit(f + 14, 20, H_PEER_IP, H_LOCAL_IP + 1, 6, (uint16_t)tl, 64, 1);
	h_send_raw(h, f, 34 + (size_t)tl);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_IP_NOT_US], 1);
	EXPECT_NONE(h);
	h_free(h);
}

TEST(test_api_stale_handle_rejected)
{
	struct h *h = h_new(NULL);
	utcp_cid old;

	h_established_passive(h);
	old = h->conn;
	utcp_abort(h->st, old, h->now);
	h_skip(h);
	CHECK_EQ(utcp_send(h->st, old, "x", 1, h->now), -EBADF);
	CHECK_EQ(utcp_close(h->st, old, h->now), -EBADF);
	CHECK_EQ(utcp_close(h->st, UTCP_CID_NONE, h->now), -EBADF);
	h_free(h);
}

TEST(test_established_ack_after_rto_carries_highest_seq)
{
	/* After a timeout SND.NXT is pulled back for go-back-N; a pure ACK must still
	 * carry the highest sequence number sent, or the peer finds it unacceptable and
	 * both ends exchange ACKs for ever. */
	struct h *h = h_new(NULL);
	static char d[536 * 3];
	uint64_t t0;

	h_established_passive(h);
	t0 = h->now;
	memset(d, 'g', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	h_skip(h);
	h_advance(h, t0 + 200000);
	EXPECT(h, ACK, h->iss + 1, 1001, 536);          /* RTO: first segment again */
	h_send(h, ACK | PSH, 1001, h->iss + 1, W, "ping", 4);
	h_send(h, ACK | PSH, 1005, h->iss + 1, W, "pong", 4);
	h_advance(h, h->now + 40000);                   /* delayed ACK */
	EXPECT(h, ACK, h->iss + 1 + 536 * 3, 1009, 0);
	h_free(h);
}

static void sack_ack(struct h *h, uint32_t ack, int nblocks, const uint32_t *edges)
{
	struct utcp_tcp_opts o;
	int i;

	memset(&o, 0, sizeof(o));
	o.nsack = (uint8_t)nblocks;
	for (i = 0; i < nblocks; i++) {
		o.sack[i].left = edges[2 * i];
		o.sack[i].right = edges[2 * i + 1];
	}
	h_send_opts(h, ACK, 1001, ack, W, NULL, 0, &o);
}

TEST(test_established_sack_recovery_repairs_two_holes_in_one_window)
{
	/* 10 segments of 1000 bytes; the peer loses #2 and #5 and SACKs what it gets.
	 * RFC 6675: both holes are retransmitted within the same window, no timeout. */
	struct utcp_config c;
	struct h *h;
	static char d[10000];
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	uint32_t x;
	int i;

	h_default_config(&c);
	c.sack = true;
	h = h_new(&c);
	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.sack_ok = true;
	h->syn_opts.has_mss = true;
	h->syn_opts.mss = 1000;
	h_established_passive(h);
	x = h->iss + 1;
	memset(d, 's', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	for (i = 0; i < 10; i++)
		EXPECT(h, ACK, x + 1000 * (uint32_t)i, 1001, 1000);
	h->now += 10000;
	h_send(h, ACK, 1001, x + 1000, W, NULL, 0);             /* #1 */
	EXPECT_NONE(h);
	{
		uint32_t b3[] = {x + 2000, x + 3000};
		uint32_t b4[] = {x + 2000, x + 4000};
		uint32_t b6[] = {x + 5000, x + 6000, x + 2000, x + 4000};
		uint32_t b7[] = {x + 5000, x + 7000, x + 2000, x + 4000};
		uint32_t b8[] = {x + 5000, x + 8000, x + 2000, x + 4000};
		uint32_t b9[] = {x + 5000, x + 8000};

		sack_ack(h, x + 1000, 1, b3);
		EXPECT_NONE(h);
		sack_ack(h, x + 1000, 1, b4);
		EXPECT_NONE(h);
		sack_ack(h, x + 1000, 2, b6);                    /* 3 dupacks, 3 SMSS SACKed */
		EXPECT(h, ACK, x + 1000, 1001, 1000);           /* hole #2 */
		EXPECT_NONE(h);
		sack_ack(h, x + 1000, 2, b7);
		EXPECT_NONE(h);                                  /* pipe is full */
		sack_ack(h, x + 1000, 2, b8);                    /* #5 is now lost too */
		EXPECT(h, ACK, x + 4000, 1001, 1000);           /* hole #5, same window */
		EXPECT_NONE(h);
		sack_ack(h, x + 4000, 1, b9);                    /* partial ACK */
		EXPECT_NONE(h);                                  /* SACKed data is not resent */
	}
	h_send(h, ACK, 1001, x + 10000, W, NULL, 0);            /* full ACK: recovery ends */
	EXPECT_NONE(h);
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK_EQ(ci.fast_retransmits, 1);
	CHECK_EQ(ci.rto_timeouts, 0);
	CHECK_EQ(ci.retransmits, 2);
	CHECK_EQ(ci.unacked, 0);
	CHECK_EQ(ci.ssthresh, 4500);                             /* FlightSize 9000 / 2 */
	h_free(h);
}

TEST(test_established_keepalive_probes_answered_then_silent_times_out)
{
	struct utcp_config c;
	struct h *h;
	struct utcp_event ev;
	uint64_t t0;
	int i;

	h_default_config(&c);
	c.keepalive_idle_us = 10000000;
	c.keepalive_intvl_us = 1000000;
	c.keepalive_probes = 3;
	h = h_new(&c);
	h_established_passive(h);
	t0 = h->now;
	CHECK_EQ(utcp_set_keepalive(h->st, h->conn, true, h->now), 0);
	h_advance(h, t0 + 9999000);
	EXPECT_NONE(h);
	h_advance(h, t0 + 10000000);
	EXPECT(h, ACK, h->iss, 1001, 0);               /* SEG.SEQ = SND.NXT - 1 */
	h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);   /* the peer is alive */
	h_advance(h, t0 + 11000000);
	EXPECT_NONE(h);                                 /* idle period restarted */
	h_advance(h, t0 + 20000000);
	EXPECT(h, ACK, h->iss, 1001, 0);
	for (i = 1; i < 3; i++) {
		h_advance(h, t0 + 20000000 + (uint64_t)i * 1000000);
		EXPECT(h, ACK, h->iss, 1001, 0);
	}
	h_advance(h, t0 + 23000000);
	EXPECT_NONE(h);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CLOSED);
	CHECK_EQ(ev.error, -ETIMEDOUT);
	CHECK_EQ(utcp_get_stats(h->st)->keepalive_probes, 4);
	h_free(h);
}

TEST(test_established_no_keepalive_by_default)
{
	struct h *h = h_new(NULL);

	h_established_passive(h);
	h_advance(h, h->now + 3ull * 3600 * 1000000);
	EXPECT_NONE(h);
	CHECK(utcp_next_deadline(h->st) == UINT64_MAX);
	h_free(h);
}

TEST(test_established_zero_receive_window_still_takes_acks)
{
	/* RFC 9293 3.10.7.4: with RCV.WND = 0 the ACK of a data segment is still used. */
	struct utcp_config c;
	struct h *h;
	static char d[1024];
	struct h_seg s;
	uint32_t seq = 1001;
	int i;

	h_default_config(&c);
	c.rcvbuf = 4096;
	h = h_new(&c);
	h_established_passive(h);
	memset(d, 'r', sizeof(d));
	for (i = 0; i < 4; i++, seq += 1024)
		h_send(h, ACK, seq, h->iss + 1, W, d, 1024);   /* fills the window */
	utcp_send(h->st, h->conn, "out", 3, h->now);
	h_skip(h);
	/* more data (not taken) carrying the ACK of our 3 bytes */
	h_send(h, ACK, seq, h->iss + 4, W, d, 100);
	s = EXPECT(h, ACK, h->iss + 4, seq, 0);        /* zero window restated */
	CHECK_EQ(s.th.wnd, 0);
	{
		struct utcp_conn_info ci = {.sz = sizeof(ci)};

		utcp_conn_info(h->st, h->conn, &ci);
		CHECK_EQ(ci.unacked, 0);                 /* the ACK was processed */
		CHECK_EQ(ci.rcvbuf_used, 4096);
	}
	h_free(h);
}

TEST(test_established_limited_transmit_on_first_dupacks)
{
	/* RFC 3042: the first two duplicate ACKs each send one new segment beyond cwnd. */
	struct h *h = h_new(NULL);
	static char d[536 * 14];
	int i;

	h_established_passive(h);                     /* MSS 536, IW 10 segments */
	memset(d, 'l', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	for (i = 0; i < 10; i++)
		EXPECT(h, ACK, h->iss + 1 + 536 * (uint32_t)i, 1001, 536);
	EXPECT_NONE(h);
	h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1 + 536 * 10, 1001, 536);
	h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1 + 536 * 11, 1001, 536);
	h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);  /* third: fast retransmit */
	EXPECT(h, ACK, h->iss + 1, 1001, 536);
	h_free(h);
}

TEST(test_established_tail_loss_probe_resends_last_segment)
{
	/* RFC 8985 7: no ACK for 2 SRTT (floor 10 ms) -> probe with the last segment, so
	 * that SACK feedback (not the RTO) repairs a lost tail. */
	struct utcp_config c;
	struct h *h;
	static char d[536 * 3];
	uint64_t t0;

	h_default_config(&c);
	c.sack = true;
	h = h_new(&c);
	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.sack_ok = true;
	h_established_passive(h);
	t0 = h->now;
	memset(d, 't', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	h_skip(h);
	h_advance(h, t0 + 9000);
	EXPECT_NONE(h);
	h_advance(h, t0 + 10000);
	EXPECT(h, ACK, h->iss + 1 + 536 * 2, 1001, 536);
	CHECK_EQ(utcp_get_stats(h->st)->tail_loss_probes, 1);
	h_advance(h, t0 + 150000);
	EXPECT_NONE(h);                                  /* one probe per flight */
	h_advance(h, t0 + 210000);                       /* then the RTO, re-armed by the probe */
	EXPECT(h, ACK, h->iss + 1, 1001, 536);
	h_free(h);
}

TEST(test_api_readiness_follows_the_connection)
{
	struct h *h = h_new(NULL);
	char buf[8];

	h_established_passive(h);
	CHECK_EQ(utcp_conn_ready(h->st, h->conn), UTCP_READY_OUT);
	h_send(h, ACK, 1001, h->iss + 1, W, "ab", 2);
	CHECK_EQ(utcp_conn_ready(h->st, h->conn), UTCP_READY_IN | UTCP_READY_OUT);
	utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now);
	h_send(h, FIN | ACK, 1003, h->iss + 1, W, NULL, 0);
	CHECK_EQ(utcp_conn_ready(h->st, h->conn), UTCP_READY_IN | UTCP_READY_OUT);
	utcp_shutdown(h->st, h->conn, h->now);
	h_skip(h);
	h_send(h, ACK, 1004, h->iss + 2, W, NULL, 0);      /* our FIN acked: CLOSED */
	CHECK_EQ(utcp_conn_ready(h->st, h->conn), UTCP_READY_IN | UTCP_READY_HUP);
	h_free(h);
	h = h_new(NULL);
	h_established_passive(h);
	h_send(h, RST, 1001, 0, W, NULL, 0);
	CHECK_EQ(utcp_conn_ready(h->st, h->conn),
		 UTCP_READY_IN | UTCP_READY_OUT | UTCP_READY_HUP | UTCP_READY_ERR);
	CHECK_EQ(utcp_conn_ready(h->st, UTCP_CID_NONE), -EBADF);
	h_free(h);
}

TEST(test_api_memory_per_connection_reported)
{
	struct h *h = h_new(NULL);
	size_t per = utcp_conn_memory(h->st);

	CHECK(per > 2 * 64 * 1024);                      /* both 64 KB buffers */
	CHECK(per < 2 * 64 * 1024 + 4096);               /* plus a control block */
	CHECK(utcp_stack_memory(h->st) >= 8 * per);
	h_free(h);
}
