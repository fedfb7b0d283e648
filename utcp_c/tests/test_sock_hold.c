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

#define PORT H_SW_PORT

/* Two stacks and a connected pair with nothing in flight: *c on A (the sender under test,
 * TCP_NODELAY as nginx sets it), *s accepted on B. */
static void w_connected(struct h_sw *w, int *c, int *s)
{
	h_sw_init(w, 11);
	h_sw_pair(w, c, s);
	CHECK_EQ(utcp_sk_setopt(w->sa, *c, UTCP_TCP_NODELAY, 1), 0);
	h_sw_run(w, 300000);                                  /* every ACK home */
}

/* data segments A has built so far (they reach its TX batch at once) */
static uint64_t a_data(const struct h_sw *w)
{
	return utcp_get_stats(w->a)->data_segs_out;
}

TEST(test_sock_hold_head_and_body_leave_as_one_segment)
{
	struct h_sw w;
	int c, s;
	uint64_t d0;

	w_connected(&w, &c, &s);
	d0 = a_data(&w);
	CHECK_EQ(h_sk_send_n(w.sa, c, 200, UTCP_SK_HOLD, w.now), 200); /* a response head */
	CHECK_EQ(h_sk_send_n(w.sa, c, 1000, UTCP_SK_HOLD, w.now), 1000); /* its body */
	CHECK_EQ(a_data(&w), d0);                                     /* held */
	h_sw_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);                          /* polls do not release it */
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	CHECK_EQ(a_data(&w), d0 + 1);                                 /* one segment */
	h_sw_run(&w, 5000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 1200);
	/* without HOLD (nodelay): a segment per call */
	d0 = a_data(&w);
	CHECK_EQ(h_sk_send_n(w.sa, c, 200, 0, w.now), 200);
	CHECK_EQ(h_sk_send_n(w.sa, c, 1000, 0, w.now), 1000);
	CHECK_EQ(a_data(&w), d0 + 2);
	h_sw_free(&w);
}

TEST(test_sock_hold_fin_rides_on_last_segment)
{
	struct h_sw w;
	struct utcp_conn_info ci = {.sz = sizeof(ci)};
	int c, s;
	uint64_t seg0, d0;

	w_connected(&w, &c, &s);
	seg0 = utcp_get_stats(w.a)->segs_out;
	d0 = a_data(&w);
	CHECK_EQ(h_sk_send_n(w.sa, c, 200, UTCP_SK_HOLD, w.now), 200);
	CHECK_EQ(h_sk_send_n(w.sa, c, 1000, UTCP_SK_HOLD, w.now), 1000);
	CHECK_EQ(utcp_sk_shutdown(w.sa, c, SHUT_WR, w.now), 0);
	/* data and FIN in one segment, nothing else */
	CHECK_EQ(a_data(&w), d0 + 1);
	CHECK_EQ(utcp_get_stats(w.a)->segs_out, seg0 + 1);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);                    /* nothing left to push */
	CHECK_EQ(utcp_get_stats(w.a)->segs_out, seg0 + 1);
	h_sw_run(&w, 5000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 1200);
	CHECK(utcp_sk_info(w.sb, s, &ci) == 0 && ci.state == UTCP_CLOSE_WAIT);
	/* the same through close */
	h_sw_free(&w);
	w_connected(&w, &c, &s);
	seg0 = utcp_get_stats(w.a)->segs_out;
	CHECK_EQ(h_sk_send_n(w.sa, c, 300, UTCP_SK_HOLD, w.now), 300);
	CHECK_EQ(utcp_sk_close(w.sa, c, w.now), 0);
	CHECK_EQ(utcp_get_stats(w.a)->segs_out, seg0 + 1);
	h_sw_run(&w, 5000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 300);
	CHECK(utcp_sk_info(w.sb, s, &ci) == 0 && ci.state == UTCP_CLOSE_WAIT);
	h_sw_free(&w);
}

TEST(test_sock_hold_full_segments_go_as_they_fill)
{
	struct h_sw w;
	int c, s, mss;

	w_connected(&w, &c, &s);
	CHECK_EQ(utcp_sk_getopt(w.sa, c, UTCP_TCP_MAXSEG, &mss), 0);
	CHECK_EQ(h_sk_send_n(w.sa, c, 3000, UTCP_SK_HOLD, w.now), 3000);
	h_sw_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 2 * mss);                    /* the partial tail waits */
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	h_sw_run(&w, 5000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 3000);
	h_sw_free(&w);
}

TEST(test_sock_hold_push_keeps_tcp_cork_and_msg_more)
{
	struct h_sw w;
	int c, s;

	w_connected(&w, &c, &s);
	/* TCP_CORK: the application's cork outlives the push; its uncork sends */
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 1), 0);
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	h_sw_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 0), 0);
	h_sw_run(&w, 5000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 100);
	/* MSG_MORE: held past the push until a send without it (and then its push) */
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, UTCP_SK_MORE | UTCP_SK_HOLD, w.now), 100);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	h_sw_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	h_sw_run(&w, 20000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), 0);
	h_sw_run(&w, 5000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 200);
	h_sw_free(&w);
}

TEST(test_sock_hold_nodelay_and_uncork_push)
{
	struct h_sw w;
	int c, s;

	w_connected(&w, &c, &s);
	/* TCP_NODELAY set (again) pushes what a hold kept, as Linux pushes pending frames */
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_NODELAY, 1), 0);
	h_sw_run(&w, 5000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 100);
	/* so does TCP_CORK off */
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 0), 0);
	h_sw_run(&w, 5000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 100);
	h_sw_free(&w);
}

TEST(test_sock_hold_unpushed_goes_within_cork_bound)
{
	struct h_sw w;
	int c, s;

	w_connected(&w, &c, &s);
	/* a caller that never pushes: the stack's cork bound (UTCP_CORK_MAX_US) still sends it */
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, UTCP_SK_HOLD, w.now), 100);
	h_sw_run(&w, UTCP_CORK_MAX_US / 2);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	h_sw_run(&w, UTCP_CORK_MAX_US / 2 + 20000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 100);
	h_sw_free(&w);
}

TEST(test_sock_push_ids)
{
	struct h_sw w;
	int c, s, l2;

	w_connected(&w, &c, &s);
	l2 = utcp_sk_open(w.sb);
	CHECK_EQ(utcp_sk_listen(w.sb, l2, PORT + 1, 4), 0);
	CHECK_EQ(utcp_sk_push(w.sb, l2, w.now), 0);                   /* a listener: nothing */
	CHECK_EQ(utcp_sk_close(w.sa, c, w.now), 0);
	CHECK_EQ(utcp_sk_push(w.sa, c, w.now), -EBADF);               /* a stale id */
	h_sw_free(&w);
}
