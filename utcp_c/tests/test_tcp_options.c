/* test_tcp_options.c — negotiated options on the wire: timestamps and PAWS (RFC 7323),
 * window scaling, SACK blocks (RFC 2018), MSS and path MTU (RFC 5927). */
#include <errno.h>
#include <stdlib.h>

#include "harness.h"

#define W 65535

static struct h *h_with(bool ws, bool sack, bool ts)
{
	struct utcp_config c;

	h_default_config(&c);
	c.window_scaling = ws;
	c.sack = sack;
	c.timestamps = ts;
	return h_new(&c);
}

static struct utcp_tcp_opts ts_opt(uint32_t val, uint32_t ecr)
{
	struct utcp_tcp_opts o;

	memset(&o, 0, sizeof(o));
	o.has_ts = true;
	o.tsval = val;
	o.tsecr = ecr;
	return o;
}

TEST(test_listen_syn_with_timestamps_echoed_in_syn_ack)
{
	struct h *h = h_with(false, false, true);
	struct h_seg s;

	h_listen(h);
	h->syn_opts = ts_opt(100, 0);
	h_send_opts(h, SYN, 1000, 0, W, NULL, 0, &h->syn_opts);
	CHECK(h_pop(h, &s));
	CHECK(s.th.opt.has_ts);
	CHECK_U32(s.th.opt.tsecr, 100);
	h_free(h);
}

TEST(test_listen_syn_without_timestamps_not_answered_with_them)
{
	struct h *h = h_with(true, true, true);
	struct h_seg s;

	h_listen(h);
	h_send(h, SYN, 1000, 0, W, NULL, 0);
	CHECK(h_pop(h, &s));
	CHECK(!s.th.opt.has_ts && !s.th.opt.has_ws && !s.th.opt.sack_ok);
	h_free(h);
}

static struct h *established_ts(void)
{
	struct h *h = h_with(false, false, true);
	struct utcp_tcp_opts o;

	h->syn_opts = ts_opt(100, 0);
	h_syn_received(h);
	o = ts_opt(101, 0);
	h_send_opts(h, ACK, 1001, h->iss + 1, W, NULL, 0, &o);
	h->conn = EVENT(h).conn;
	return h;
}

TEST(test_established_timestamp_echoed)
{
	struct h *h = established_ts();
	struct utcp_tcp_opts o = ts_opt(200, 0);
	struct h_seg s;

	h_send_opts(h, ACK, 1001, h->iss + 1, W, "abcd", 4, &o);
	h_advance(h, h->now + 40000);          /* delayed ACK */
	s = EXPECT(h, ACK, h->iss + 1, 1005, 0);
	CHECK(s.th.opt.has_ts);
	CHECK_U32(s.th.opt.tsecr, 200);
	h_free(h);
}

TEST(test_established_paws_drops_old_timestamp)
{
	struct h *h = established_ts();
	struct utcp_tcp_opts o = ts_opt(200, 0);
	struct h_seg s;
	char buf[16];

	h_send_opts(h, ACK, 1001, h->iss + 1, W, "abcd", 4, &o);
	h_advance(h, h->now + 40000);
	EXPECT(h, ACK, h->iss + 1, 1005, 0);
	o = ts_opt(150, 0);                      /* older than TS.Recent */
	h_send_opts(h, ACK, 1005, h->iss + 1, W, "efgh", 4, &o);
	s = EXPECT(h, ACK, h->iss + 1, 1005, 0);   /* dropped, ACK sent */
	CHECK_U32(s.th.opt.tsecr, 200);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_PAWS], 1);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 4);
	/* a RST is exempt from PAWS (RFC 7323 5.3) */
	o = ts_opt(1, 0);
	h_send_opts(h, RST, 1005, 0, W, NULL, 0, &o);
	CHECK(EVENT(h).events & UTCP_EV_CLOSED);
	h_free(h);
}

TEST(test_established_ts_recent_not_updated_by_segment_past_last_ack)
{
	struct h *h = established_ts();
	struct utcp_tcp_opts o = ts_opt(500, 0);
	struct h_seg s;

	/* out of order (SEQ > Last.ACK.sent): TS.Recent must stay 101 */
	h_send_opts(h, ACK, 1101, h->iss + 1, W, "zz", 2, &o);
	s = EXPECT(h, ACK, h->iss + 1, 1001, 0);
	CHECK_U32(s.th.opt.tsecr, 101);
	h_free(h);
}

TEST(test_established_window_scaling_applied_both_ways)
{
	struct h *h = h_with(true, false, false);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	struct h_seg s;

	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.has_ws = true;
	h->syn_opts.ws = 2;
	h_syn_received(h);
	h_send(h, ACK, 1001, h->iss + 1, 1000, NULL, 0);   /* 1000 << 2 */
	h->conn = EVENT(h).conn;
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK(ci.ws_ok);
	CHECK_EQ(ci.snd_wscale, 2);
	CHECK_EQ(ci.rcv_wscale, 1);            /* 64 KB receive buffer */
	CHECK_EQ(ci.snd_wnd, 4000);
	h_send(h, ACK, 1001, h->iss + 1, 1000, "x", 1);
	h_advance(h, h->now + 40000);
	s = EXPECT(h, ACK, h->iss + 1, 1002, 0);
	CHECK_EQ(s.th.wnd, (65536 - 1) >> 1);
	h_free(h);
}

TEST(test_established_wscale_above_14_clamped)
{
	struct h *h = h_with(true, false, false);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.has_ws = true;
	h->syn_opts.ws = 20;
	h_established_passive(h);
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK_EQ(ci.snd_wscale, 14);           /* RFC 7323 2.3 */
	h_free(h);
}

TEST(test_established_sack_blocks_most_recent_first)
{
	struct h *h = h_with(false, true, false);
	struct h_seg s;

	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.sack_ok = true;
	h_established_passive(h);
	h_send(h, ACK, 1101, h->iss + 1, W, "aaaa", 4);
	s = EXPECT(h, ACK, h->iss + 1, 1001, 0);
	CHECK_EQ(s.th.opt.nsack, 1);
	CHECK_U32(s.th.opt.sack[0].left, 1101);
	CHECK_U32(s.th.opt.sack[0].right, 1105);
	h_send(h, ACK, 1201, h->iss + 1, W, "bbbb", 4);
	s = EXPECT(h, ACK, h->iss + 1, 1001, 0);
	CHECK_EQ(s.th.opt.nsack, 2);
	CHECK_U32(s.th.opt.sack[0].left, 1201);   /* most recent first (RFC 2018 4) */
	CHECK_U32(s.th.opt.sack[1].left, 1101);
	/* a segment joining the two ranges merges them */
	h_send(h, ACK, 1105, h->iss + 1, W, NULL, 0);
	h_skip(h);
	{
		static char d[96];

		memset(d, 'm', sizeof(d));
		h_send(h, ACK, 1105, h->iss + 1, W, d, 96);
	}
	s = EXPECT(h, ACK, h->iss + 1, 1001, 0);
	CHECK_EQ(s.th.opt.nsack, 1);
	CHECK_U32(s.th.opt.sack[0].left, 1101);
	CHECK_U32(s.th.opt.sack[0].right, 1205);
	/* the hole filled: cumulative ACK jumps, no more blocks */
	{
		static char d[100];

		memset(d, 'h', sizeof(d));
		h_send(h, ACK, 1001, h->iss + 1, W, d, 100);
	}
	s = EXPECT(h, ACK, h->iss + 1, 1205, 0);
	CHECK_EQ(s.th.opt.nsack, 0);
	h_free(h);
}

TEST(test_established_peer_mss_limits_segments)
{
	struct h *h = h_new(NULL);
	static char d[3000];
	struct h_seg s;

	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.has_mss = true;
	h->syn_opts.mss = 1000;
	h_established_passive(h);
	memset(d, 'k', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	s = EXPECT(h, ACK, h->iss + 1, 1001, 1000);
	s = EXPECT(h, ACK, h->iss + 1001, 1001, 1000);
	(void)s;
	h_free(h);
}

TEST(test_established_tiny_peer_mss_clamped_to_floor)
{
	struct h *h = h_new(NULL);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.has_mss = true;
	h->syn_opts.mss = 1;
	h_established_passive(h);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.snd_mss, 88);
	h_free(h);
}

static void send_frag_needed(struct h *h, uint16_t mtu, uint32_t quoted_seq)
{
	uint8_t f[128], *m = f + 34;

	memset(f, 0, sizeof(f));
	utcp_eth_emit(f, sizeof(f), h_local_mac, h_peer_mac, UTCP_ETH_P_IPV4);
	m[0] = 3, m[1] = 4;
	utcp_put16(m + 6, mtu);
	utcp_ipv4_emit(m + 8, 20, H_LOCAL_IP, H_PEER_IP, 6, 1480, 64, 0);
	utcp_put16(m + 28, H_LPORT);
	utcp_put16(m + 30, H_PPORT);
	utcp_put32(m + 32, quoted_seq);
	utcp_put16(m + 2, utcp_csum_fold(utcp_csum_add(0, m, 36)));
	utcp_ipv4_emit(f + 14, 20, 0x0a0000fe, H_LOCAL_IP, UTCP_IPPROTO_ICMP, 36, 64, 0);
	h_send_raw(h, f, 14 + 20 + 36);
}

TEST(test_established_frag_needed_lowers_mss_and_retransmits)
{
	struct h *h = h_new(NULL);
	static char d[4000];
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.has_mss = true;
	h->syn_opts.mss = 1460;
	h_established_passive(h);
	memset(d, 'p', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	EXPECT(h, ACK, h->iss + 1, 1001, 1460);
	h_skip(h);
	/* stale: quotes a sequence number outside SND.UNA..SND.NXT (RFC 5927) */
	send_frag_needed(h, 1000, h->iss + 100000);
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_ICMP_STALE], 1);
	/* valid: MSS drops to 960 and the first segment goes again at the new size */
	send_frag_needed(h, 1000, h->iss + 1);
	EXPECT(h, ACK, h->iss + 1, 1001, 960);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.snd_mss, 960);
	/* an absurd MTU never takes the MSS below the floor */
	send_frag_needed(h, 120, h->iss + 1);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.snd_mss, 88);
	h_free(h);
}

TEST(test_established_frag_needed_for_unknown_connection_ignored)
{
	struct h *h = h_new(NULL);

	send_frag_needed(h, 1000, 1);
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_ICMP_NO_CONN], 1);
	h_free(h);
}

TEST(test_established_spurious_fast_retransmit_undone_by_timestamps)
{
	/* RFC 3522 detection: the ACK covering the retransmitted segment echoes the
	 * original's timestamp, so the original arrived (reordering): the window is
	 * restored when the recovery ends. */
	struct h *h = h_with(false, true, true);
	static char d[10000];
	struct utcp_tcp_opts o;
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	struct h_seg s;
	uint32_t x, ts_orig, i;

	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.sack_ok = true;
	h->syn_opts.has_ts = true;
	h->syn_opts.tsval = 100;
	h->syn_opts.has_mss = true;
	h->syn_opts.mss = 1012;                 /* 1000 bytes of payload with timestamps */
	h_syn_received(h);
	o = ts_opt(101, 0);
	h_send_opts(h, ACK, 1001, h->iss + 1, W, NULL, 0, &o);
	h->conn = EVENT(h).conn;
	x = h->iss + 1;
	memset(d, 'e', sizeof(d));
	utcp_send(h->st, h->conn, d, sizeof(d), h->now);
	s = EXPECT(h, ACK, x, 1001, 1000);
	ts_orig = s.th.opt.tsval;
	for (i = 1; i < 10; i++)
		EXPECT(h, ACK, x + 1000 * i, 1001, 1000);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.cwnd, 10000);
	h->now += 20000;
	/* segment 1 is "late": three segments SACKed above it */
	memset(&o, 0, sizeof(o));
	o.has_ts = true, o.tsval = 102, o.tsecr = ts_orig;
	o.nsack = 1, o.sack[0].left = x + 1000, o.sack[0].right = x + 4000;
	h_send_opts(h, ACK, 1001, x, W, NULL, 0, &o);
	s = EXPECT(h, ACK, x, 1001, 1000);              /* fast retransmit */
	CHECK(s.th.opt.tsval > ts_orig);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.ssthresh, 5000);                     /* halved (FlightSize 10000) */
	CHECK_EQ(ci.cwnd, 7000);   /* PRR (RFC 6937): pipe 6000 + the retransmission */
	/* the original arrives: everything acknowledged, echoing its old timestamp */
	memset(&o, 0, sizeof(o));
	o.has_ts = true, o.tsval = 103, o.tsecr = ts_orig;
	h_send_opts(h, ACK, 1001, x + 10000, W, NULL, 0, &o);
	utcp_conn_info(h->st, h->conn, &ci);
	CHECK_EQ(ci.spurious_recoveries, 1);
	CHECK_EQ(ci.cwnd, 10000);                        /* restored */
	h_free(h);
}

TEST(test_established_duplicates_reported_as_dsack)
{
	/* RFC 2883: a duplicate segment is reported in the first SACK block. */
	struct h *h = h_with(false, true, false);
	struct h_seg s;

	memset(&h->syn_opts, 0, sizeof(h->syn_opts));
	h->syn_opts.sack_ok = true;
	h_established_passive(h);
	h_send(h, ACK, 1001, h->iss + 1, W, "abcde", 5);
	h_advance(h, h->now + 40000);
	s = EXPECT(h, ACK, h->iss + 1, 1006, 0);
	CHECK_EQ(s.th.opt.nsack, 0);
	h_send(h, ACK, 1001, h->iss + 1, W, "abcde", 5);          /* old duplicate */
	s = EXPECT(h, ACK, h->iss + 1, 1006, 0);
	CHECK_EQ(s.th.opt.nsack, 1);
	CHECK_U32(s.th.opt.sack[0].left, 1001);
	CHECK_U32(s.th.opt.sack[0].right, 1006);
	h_send(h, ACK, 1106, h->iss + 1, W, "wxyz", 4);           /* out of order */
	s = EXPECT(h, ACK, h->iss + 1, 1006, 0);
	CHECK_EQ(s.th.opt.nsack, 1);
	h_send(h, ACK, 1106, h->iss + 1, W, "wxyz", 4);           /* and again */
	s = EXPECT(h, ACK, h->iss + 1, 1006, 0);
	CHECK_EQ(s.th.opt.nsack, 2);
	CHECK_U32(s.th.opt.sack[0].left, 1106);                  /* the D-SACK */
	CHECK_U32(s.th.opt.sack[1].left, 1106);                  /* the range holding it */
	CHECK_U32(s.th.opt.sack[1].right, 1110);
	h_send(h, ACK, 1003, h->iss + 1, W, "cdefg", 5);          /* partly old */
	s = EXPECT(h, ACK, h->iss + 1, 1008, 0);
	CHECK_U32(s.th.opt.sack[0].left, 1003);
	CHECK_U32(s.th.opt.sack[0].right, 1006);
	h_free(h);
}
