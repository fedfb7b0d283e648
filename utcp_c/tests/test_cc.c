/* test_cc.c — congestion control modules on a bare control block: NewReno (RFC 5681,
 * RFC 6928) and CUBIC (RFC 9438) window arithmetic. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "tcp/cc.h"
#include "tcp/tcb.h"
#include "testlib.h"

static struct utcp_tcb *bare(const struct utcp_cc_ops *cc, uint16_t mss)
{
	static struct utcp_tcb t;

	memset(&t, 0, sizeof(t));
	t.mss = mss;
	t.cc = cc;
	t.srtt_us = 100000;
	t.snd_una = seq_of(1);
	t.snd_max = seq_of(1);
	cc->init(&t, 10);
	return &t;
}

TEST(test_cc_find)
{
	CHECK(utcp_cc_find("newreno") == &utcp_cc_newreno);
	CHECK(utcp_cc_find("cubic") == &utcp_cc_cubic);
	CHECK(utcp_cc_find("bbr") == NULL);
}

TEST(test_newreno_initial_window_rfc6928)
{
	CHECK_EQ(bare(&utcp_cc_newreno, 1460)->cwnd, 14600);
	CHECK_EQ(bare(&utcp_cc_newreno, 536)->cwnd, 5360);
	CHECK_EQ(bare(&utcp_cc_newreno, 8960)->cwnd, 17920);  /* max(2*SMSS, 14600) caps it */
	CHECK(bare(&utcp_cc_newreno, 1460)->ssthresh == UINT32_MAX);
}

TEST(test_newreno_slow_start_then_avoidance)
{
	struct utcp_tcb *t = bare(&utcp_cc_newreno, 1000);
	int i;

	t->cc->on_ack(t, 1000, 0);
	CHECK_EQ(t->cwnd, 11000);
	t->cc->on_ack(t, 5000, 0);                   /* ABC: at most 2 SMSS per ACK */
	CHECK_EQ(t->cwnd, 13000);
	t->ssthresh = 13000;
	for (i = 0; i < 13; i++)                      /* one window's worth of ACKs: +1 SMSS */
		t->cc->on_ack(t, 1000, 0);
	CHECK_EQ(t->cwnd, 14000);
}

TEST(test_newreno_loss_and_rto)
{
	struct utcp_tcb *t = bare(&utcp_cc_newreno, 1000);

	t->snd_max = seq_add(t->snd_una, 20000);     /* FlightSize 20000 */
	t->cc->on_loss(t, 0);
	CHECK_EQ(t->ssthresh, 10000);
	CHECK_EQ(t->cwnd, 13000);                     /* ssthresh + 3 SMSS */
	t->snd_max = seq_add(t->snd_una, 4000);
	t->cc->on_recovery_end(t);
	CHECK_EQ(t->cwnd, 5000);                      /* min(ssthresh, FlightSize + SMSS) */
	t->snd_max = seq_add(t->snd_una, 2000);
	t->cc->on_rto(t);
	CHECK_EQ(t->ssthresh, 2000);                  /* max(FlightSize/2, 2 SMSS) */
	CHECK_EQ(t->cwnd, 1000);
}

TEST(test_cubic_reduction_beta_0_7)
{
	struct utcp_tcb *t = bare(&utcp_cc_cubic, 1000);

	t->cwnd = 100000;
	t->cc->on_loss(t, 0);
	CHECK_EQ(t->ssthresh, 70000);
	CHECK_EQ(t->cwnd, 70000);
	/* fast convergence: a second loss below the previous W_max lowers W_max further */
	t->cwnd = 80000;
	t->cc->on_loss(t, 0);
	CHECK_EQ(t->ssthresh, 56000);
}

/* Feeds one RTT's worth of ACKs every RTT; returns cwnd in segments after `secs`. */
static double grow(struct utcp_tcb *t, uint64_t *now, double secs)
{
	uint64_t end = *now + (uint64_t)(secs * 1e6);

	while (*now < end) {
		uint32_t segs = t->cwnd / t->mss, i;

		for (i = 0; i < segs; i++)
			t->cc->on_ack(t, t->mss, *now + i * (100000 / (segs ? segs : 1)));
		*now += 100000;
	}
	return (double)t->cwnd / t->mss;
}

TEST(test_cubic_returns_to_w_max_after_k_seconds)
{
	struct utcp_tcb *t = bare(&utcp_cc_cubic, 1000);
	uint64_t now = 1000000;
	double k = cbrt(100.0 * (1 - 0.7) / 0.4), w;

	t->cwnd = 100000;                              /* W_max = 100 segments */
	t->cc->on_loss(t, now);
	t->cc->on_recovery_end(t);
	CHECK_EQ(t->cwnd, 70000);
	w = grow(t, &now, k * 0.5);
	CHECK(w > 85 && w < 100);                      /* concave: fast, then flattening */
	w = grow(t, &now, k * 0.5);
	CHECK(w > 97 && w < 104);                      /* plateau around W_max at t = K */
	w = grow(t, &now, 3.0);
	CHECK(w > 108 && w < 120);                     /* convex: W_cubic(K+3) = 110.8 */
}

TEST(test_cubic_rto_resets_to_one_segment)
{
	struct utcp_tcb *t = bare(&utcp_cc_cubic, 1000);

	t->cwnd = 50000;
	t->cc->on_rto(t);
	CHECK_EQ(t->cwnd, 1000);
	CHECK_EQ(t->ssthresh, 35000);
}
