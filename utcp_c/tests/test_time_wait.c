/* test_time_wait.c — TIME-WAIT as compact entries (src/tcp/tcp_tw.c) as packet traces:
 * the control block is free the moment TIME-WAIT begins, the entry answers segments
 * (retransmitted FIN, PAWS, RFC 6191 reuse), active opens avoid its 4-tuple, a full
 * table recycles its oldest entry, and a handle still held behaves as before. */
#include <errno.h>
#include <stdlib.h>

#include "harness.h"

#define W 65535

static struct utcp_tcp_opts ts_opt(uint32_t val, uint32_t ecr)
{
	struct utcp_tcp_opts o;

	memset(&o, 0, sizeof(o));
	o.has_ts = true;
	o.tsval = val;
	o.tsecr = ecr;
	return o;
}

/* A segment from the peer's port sport (the harness's own helpers always use H_PPORT). */
static void peer_send(struct h *h, uint16_t sport, uint8_t flags, uint32_t seq, uint32_t ack,
		      const struct utcp_tcp_opts *o)
{
	uint8_t f[256];
	struct utcp_tcp th;
	int tl;

	memset(&th, 0, sizeof(th));
	th.sport = sport;
	th.dport = H_LPORT;
	th.seq = seq;
	th.ack = ack;
	th.flags = flags;
	th.wnd = W;
	if (o)
		th.opt = *o;
	utcp_eth_emit(f, sizeof(f), h_local_mac, h_peer_mac, UTCP_ETH_P_IPV4);
	tl = utcp_tcp_emit(f + 34, sizeof(f) - 34, H_PEER_IP, H_LOCAL_IP, &th, NULL, 0);
	CHECK(tl > 0);
	utcp_ipv4_emit(f + 14, 20, H_PEER_IP, H_LOCAL_IP, 6, (uint16_t)tl, 64, 1);
	h_send_raw(h, f, 34 + (size_t)tl);
}

/* Passive connection from sport: handshake, the server closes first, the peer's FIN;
 * returns the stack's ISS.  The listener must exist. */
static uint32_t passive_to_time_wait(struct h *h, uint16_t sport)
{
	struct utcp_event ev;
	struct h_seg s;
	uint32_t iss;

	peer_send(h, sport, SYN, 1000, 0, NULL);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.flags, SYN | ACK);
	iss = s.th.seq;
	peer_send(h, sport, ACK, 1001, iss + 1, NULL);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_ACCEPTED);
	CHECK_EQ(utcp_close(h->st, ev.conn, h->now), 0);
	EXPECT(h, FIN | ACK, iss + 1, 1001, 0);
	peer_send(h, sport, FIN | ACK, 1001, iss + 2, NULL);
	EXPECT(h, ACK, iss + 2, 1002, 0);
	return iss;
}

static struct h *h_ts(void)
{
	struct utcp_config c;

	h_default_config(&c);
	c.timestamps = true;
	c.time_wait_us = 2000000;
	return h_new(&c);
}

/* Established with timestamps (peer TSval 101), closed by the stack, the peer's FIN with
 * TSval 300: TIME-WAIT, TS.Recent 300. */
static void ts_to_time_wait(struct h *h)
{
	struct utcp_tcp_opts o;
	struct h_seg s;

	h->syn_opts = ts_opt(100, 0);
	h_syn_received(h);
	o = ts_opt(101, 0);
	h_send_opts(h, ACK, 1001, h->iss + 1, W, NULL, 0, &o);
	h->conn = EVENT(h).conn;
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	o = ts_opt(300, 0);
	h_send_opts(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0, &o);
	s = EXPECT(h, ACK, h->iss + 2, 1002, 0);
	CHECK(s.th.opt.has_ts);
	CHECK_U32(s.th.opt.tsecr, 300);
}

TEST(test_time_wait_frees_control_block_at_once)
{
	struct h *h = h_new(NULL);
	const struct utcp_stats *s = utcp_get_stats(h->st);
	size_t tw = utcp_time_wait_memory(h->st);

	/* default: 4 entries per control block, counted in the stack's memory */
	CHECK_EQ(utcp_stack_config(h->st)->max_time_wait, 4 * 8);
	CHECK(utcp_stack_memory(h->st) > 8 * utcp_conn_memory(h->st) + 32 * tw);
	CHECK(tw <= 96);
	CHECK(tw * 1000 < utcp_conn_memory(h->st));
	h_listen(h);
	passive_to_time_wait(h, H_PPORT);
	CHECK_EQ(s->conns_in_use, 0);
	CHECK_EQ(s->time_wait_in_use, 1);
	CHECK_EQ(s->time_wait_recycled, 0);
	h_free(h);
}

TEST(test_time_wait_fin_retransmit_acked_from_entry)
{
	struct h *h = h_ts();
	const struct utcp_stats *st = utcp_get_stats(h->st);
	struct utcp_tcp_opts o;
	struct h_seg s;
	uint64_t t0;

	ts_to_time_wait(h);
	CHECK_EQ(st->conns_in_use, 0);
	t0 = h->now;
	/* our ACK of its FIN was lost: the peer sends the FIN again 1.5 s later */
	h_advance(h, t0 + 1500000);
	o = ts_opt(1800, 0);
	h_send_opts(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0, &o);
	s = EXPECT(h, ACK, h->iss + 2, 1002, 0);
	CHECK(s.th.opt.has_ts);
	CHECK_U32(s.th.opt.tsecr, 300);
	CHECK(s.th.wnd > 60000);                 /* the window the connection offered last */
	/* the 2 MSL restarted from the retransmission */
	h_advance(h, t0 + 3400000);
	CHECK_EQ(st->time_wait_in_use, 1);
	h_advance(h, t0 + 3500000);
	CHECK_EQ(st->time_wait_in_use, 0);
	CHECK(utcp_next_deadline(h->st) == UINT64_MAX);
	/* and then the 4-tuple is closed: the same FIN meets the listener, which resets it */
	h_send_opts(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0, &o);
	EXPECT(h, RST, h->iss + 2, 0, 0);
	h_free(h);
}

TEST(test_time_wait_paws_rejects_old_segment)
{
	struct h *h = h_ts();
	struct utcp_tcp_opts o = ts_opt(200, 0);    /* older than TS.Recent 300 */

	ts_to_time_wait(h);
	h_send_opts(h, ACK, 1002, h->iss + 2, W, "old", 3, &o);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	CHECK_EQ(utcp_get_stats(h->st)->drops[UTCP_DROP_PAWS], 1);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 1);
	h_free(h);
}

TEST(test_time_wait_rst_in_window_gets_challenge_ack)
{
	struct h *h = h_new(NULL);

	h_listen(h);
	passive_to_time_wait(h, H_PPORT);
	/* RFC 5961 3.2: in window, not exact: challenge ACK; RFC 1337: exact: ignored */
	peer_send(h, H_PPORT, RST, 1010, 0, NULL);
	{
		struct h_seg s;

		CHECK(h_pop(h, &s));
		CHECK_EQ(s.th.flags, ACK);
		CHECK_U32(s.th.ack, 1002);
	}
	peer_send(h, H_PPORT, RST, 1002, 0, NULL);
	EXPECT_NONE(h);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 1);
	CHECK_EQ(utcp_get_stats(h->st)->challenge_acks, 1);
	h_free(h);
}

TEST(test_time_wait_syn_with_newer_timestamp_reuses_rfc6191)
{
	struct h *h = h_ts();
	struct utcp_tcp_opts o;
	struct h_seg s;

	ts_to_time_wait(h);
	/* an older timestamp proves nothing: an ACK, no SYN,ACK */
	o = ts_opt(250, 0);
	h_send_opts(h, SYN, 5000, 0, W, NULL, 0, &o);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 1);
	/* a newer one opens a new incarnation, even with a lower sequence number */
	o = ts_opt(400, 0);
	h_send_opts(h, SYN, 500, 0, W, NULL, 0, &o);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.flags, SYN | ACK);
	CHECK_U32(s.th.ack, 501);
	CHECK_U32(s.th.opt.tsecr, 400);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 0);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 1);
	h_free(h);
}

TEST(test_time_wait_syn_with_equal_timestamp_and_higher_seq_reuses_rfc6191)
{
	struct h *h = h_ts();
	struct utcp_tcp_opts o;
	struct h_seg s;

	ts_to_time_wait(h);
	/* the same timestamp (the peer's clock did not tick) and a sequence number not above
	 * RCV.NXT proves nothing: an ACK */
	o = ts_opt(300, 0);
	h_send_opts(h, SYN, 500, 0, W, NULL, 0, &o);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 1);
	/* the same timestamp with a sequence number above RCV.NXT is new (RFC 6191 section 2) */
	h_send_opts(h, SYN, 90000, 0, W, NULL, 0, &o);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.flags, SYN | ACK);
	CHECK_U32(s.th.ack, 90001);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 0);
	h_free(h);
}

TEST(test_time_wait_active_open_does_not_reuse_tuple)
{
	struct utcp_config c;
	struct h *h;
	struct h_seg s;
	utcp_cid c2, c3;

	h_default_config(&c);
	c.time_wait_us = 2000000;
	c.ephemeral_lo = H_LPORT;       /* two ephemeral ports: 80 and 81 */
	c.ephemeral_hi = H_LPORT + 1;
	h = h_new(&c);
	/* active open from port 80, closed by the stack first: TIME-WAIT on 80 -> 40000 */
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, H_PPORT, 0, NULL, h->now, &h->conn), 0);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.sport, H_LPORT);
	h->iss = s.th.seq;
	h_send(h, SYN | ACK, 1000, h->iss + 1, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 1, 1001, 0);
	CHECK(EVENT(h).events & UTCP_EV_CONNECTED);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 1);
	CHECK_EQ(utcp_get_stats(h->st)->conns_in_use, 0);
	/* that 4-tuple is taken while TIME-WAIT lasts */
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, H_PPORT, H_LPORT, NULL, h->now, &c2), -EADDRINUSE);
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, H_PPORT, 0, NULL, h->now, &c2), 0);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.sport, H_LPORT + 1);
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, H_PPORT, 0, NULL, h->now, &c3), -EADDRNOTAVAIL);
	/* another destination port is another 4-tuple */
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, H_PPORT + 1, 0, NULL, h->now, &c3), 0);
	utcp_abort(h->st, c3, h->now);
	/* once TIME-WAIT is over, port 80 is free again */
	h_advance(h, h->now + 2000000);
	h_skip(h);
	CHECK_EQ(utcp_get_stats(h->st)->time_wait_in_use, 0);
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, H_PPORT, 0, NULL, h->now, &c3), 0);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.sport, H_LPORT);
	h_free(h);
}

TEST(test_time_wait_full_table_recycles_oldest)
{
	struct utcp_config c;
	struct h *h;
	const struct utcp_stats *st;
	uint32_t iss[3];
	int i;

	h_default_config(&c);
	c.max_conns = 2;
	c.max_time_wait = 2;
	h = h_new(&c);
	st = utcp_get_stats(h->st);
	h_listen(h);
	for (i = 0; i < 3; i++) {
		iss[i] = passive_to_time_wait(h, (uint16_t)(H_PPORT + i));
		h->now += 1000;
	}
	CHECK_EQ(st->time_wait_in_use, 2);
	CHECK_EQ(st->time_wait_recycled, 1);
	CHECK_EQ(st->conns_in_use, 0);
	CHECK_EQ(st->drops[UTCP_DROP_TABLE_FULL], 0);
	/* the oldest is gone: its retransmitted FIN meets the listener and a RST */
	peer_send(h, H_PPORT, FIN | ACK, 1001, iss[0] + 2, NULL);
	EXPECT(h, RST, iss[0] + 2, 0, 0);
	/* the others still answer */
	peer_send(h, H_PPORT + 1, FIN | ACK, 1001, iss[1] + 2, NULL);
	EXPECT(h, ACK, iss[1] + 2, 1002, 0);
	peer_send(h, H_PPORT + 2, FIN | ACK, 1001, iss[2] + 2, NULL);
	EXPECT(h, ACK, iss[2] + 2, 1002, 0);
	/* more connections than control blocks and entries together: none refused */
	for (i = 3; i < 20; i++)
		passive_to_time_wait(h, (uint16_t)(H_PPORT + i));
	CHECK_EQ(st->time_wait_in_use, 2);
	CHECK_EQ(st->time_wait_recycled, 18);
	CHECK_EQ(st->drops[UTCP_DROP_TABLE_FULL], 0);
	h_advance(h, h->now + c.time_wait_us);
	CHECK_EQ(st->time_wait_in_use, 0);
	CHECK(utcp_next_deadline(h->st) == UINT64_MAX);
	h_free(h);
}

TEST(test_time_wait_held_handle_until_closed)
{
	struct utcp_config c;
	struct h *h;
	const struct utcp_stats *st;
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	struct utcp_event ev;
	char buf[8];

	h_default_config(&c);
	c.time_wait_us = 2000000;
	h = h_new(&c);
	st = utcp_get_stats(h->st);
	h_established_passive(h);
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);      /* the handle stays held */
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, "bye", 3);
	EXPECT(h, ACK, h->iss + 2, 1005, 0);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CLOSED);
	CHECK_EQ(ev.error, 0);
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK_EQ(ci.state, UTCP_TIME_WAIT);
	CHECK_EQ(st->conns_in_use, 1);                            /* held by the application */
	CHECK_EQ(st->time_wait_in_use, 1);
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 3);   /* data still there */
	CHECK_EQ(utcp_recv(h->st, h->conn, buf, sizeof(buf), h->now), 0);
	CHECK(utcp_conn_ready(h->st, h->conn) & UTCP_READY_HUP);
	CHECK_EQ(utcp_send(h->st, h->conn, "x", 1, h->now), -EPIPE);
	/* the entry answers for the 4-tuple */
	h_send(h, FIN | ACK, 1004, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1005, 0);
	/* TIME-WAIT over: the held handle reports CLOSED, as before */
	h_advance(h, h->now + 2000000);
	CHECK_EQ(st->time_wait_in_use, 0);
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK_EQ(ci.state, UTCP_CLOSED);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CLOSED);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	CHECK_EQ(st->conns_in_use, 0);
	CHECK(utcp_next_deadline(h->st) == UINT64_MAX);
	h_free(h);
}

TEST(test_time_wait_held_handle_closed_early_entry_stays)
{
	struct utcp_config c;
	struct h *h;
	const struct utcp_stats *st;
	utcp_cid old;

	h_default_config(&c);
	c.time_wait_us = 2000000;
	h = h_new(&c);
	st = utcp_get_stats(h->st);
	h_established_passive(h);
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	old = h->conn;
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	CHECK_EQ(st->conns_in_use, 0);
	CHECK_EQ(st->time_wait_in_use, 1);
	CHECK_EQ(utcp_conn_status(h->st, old, &(struct utcp_conn_status){0}), -EBADF);
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	h_advance(h, h->now + 2000000);
	CHECK_EQ(st->time_wait_in_use, 0);
	h_free(h);
}

TEST(test_time_wait_held_handle_abort_sends_no_rst)
{
	struct h *h = h_new(NULL);
	const struct utcp_stats *st = utcp_get_stats(h->st);

	h_established_passive(h);
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);
	EXPECT(h, FIN | ACK, h->iss + 1, 1001, 0);
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	CHECK_EQ(utcp_abort(h->st, h->conn, h->now), 0);
	EXPECT_NONE(h);                                 /* nothing to reset in TIME-WAIT */
	CHECK_EQ(st->conns_in_use, 0);
	CHECK_EQ(st->time_wait_in_use, 1);
	h_send(h, FIN | ACK, 1001, h->iss + 2, W, NULL, 0);
	EXPECT(h, ACK, h->iss + 2, 1002, 0);
	h_free(h);
}
