/* cc_cubic.c — CUBIC congestion control (RFC 9438): cubic window growth in congestion
 * avoidance with the Reno-friendly region, fast convergence, beta 0.7, C 0.4.
 * Windows are computed in segments (doubles), stored in bytes in the control block. */
#include <math.h>
#include <string.h>

#include "tcp/cc.h"
#include "tcp/tcb.h"

#define CUBIC_C 0.4
#define CUBIC_BETA 0.7

struct cubic {
	double w_max;            /* segments, before the last reduction */
	double w_last_max;       /* for fast convergence */
	double k;                /* seconds */
	double w_est;            /* Reno-friendly estimate, segments */
	double cwnd_epoch;       /* cwnd at the start of the epoch, segments */
	uint64_t epoch_start;    /* µs, 0 = no epoch yet */
};

_Static_assert(sizeof(struct cubic) <= sizeof(((struct utcp_tcb *)0)->cc_priv),
	       "cubic state must fit cc_priv");

static struct cubic *cb(struct utcp_tcb *tcb)
{
	return (struct cubic *)(void *)tcb->cc_priv;
}

static void cubic_init(struct utcp_tcb *tcb, uint32_t iw_segs)
{
	memset(tcb->cc_priv, 0, sizeof(tcb->cc_priv));
	utcp_cc_newreno.init(tcb, iw_segs);         /* same IW and slow start start */
}

static void cubic_on_ack(struct utcp_tcb *tcb, uint32_t acked, uint64_t now)
{
	struct cubic *c = cb(tcb);
	double smss = tcp_smss(tcb), cwnd = tcb->cwnd / smss, t, rtt, target, w_cubic;

	if (tcb->cwnd < tcb->ssthresh) {
		utcp_cc_newreno.on_ack(tcb, acked, now);    /* slow start (RFC 9438 4.10) */
		return;
	}
	if (!c->epoch_start) {
		/* A new congestion-avoidance epoch (4.2). */
		c->epoch_start = now;
		if (c->w_max < cwnd) {
			c->w_max = cwnd;
			c->k = 0;
		} else {
			c->k = cbrt((c->w_max - cwnd) / CUBIC_C);   /* eqn. 2 with cwnd_epoch */
		}
		c->cwnd_epoch = cwnd;
		c->w_est = cwnd;
	}
	rtt = tcb->srtt_us ? tcb->srtt_us / 1e6 : 0.1;
	t = (double)(now - c->epoch_start) / 1e6;
	/* Reno-friendly estimate (4.3): alpha = 3 (1 - beta) / (1 + beta) */
	c->w_est += 3.0 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA) * ((double)acked / smss) / cwnd;
	w_cubic = CUBIC_C * pow(t - c->k, 3) + c->w_max;       /* eqn. 1 */
	if (w_cubic < c->w_est) {
		tcb->cwnd = (uint32_t)(c->w_est * smss);
		return;
	}
	/* concave/convex region (4.4, 4.5): aim at W_cubic(t + RTT), at most 1.5 cwnd */
	target = CUBIC_C * pow(t + rtt - c->k, 3) + c->w_max;
	if (target < cwnd)
		target = cwnd;
	if (target > 1.5 * cwnd)
		target = 1.5 * cwnd;
	cwnd += (target - cwnd) / cwnd * ((double)acked / smss);
	tcb->cwnd = (uint32_t)(cwnd * smss);
}

static void reduce(struct utcp_tcb *tcb)
{
	struct cubic *c = cb(tcb);
	double smss = tcp_smss(tcb), cwnd = tcb->cwnd / smss, ss;

	/* fast convergence (4.7) */
	if (cwnd < c->w_last_max)
		c->w_max = cwnd * (1 + CUBIC_BETA) / 2;
	else
		c->w_max = cwnd;
	c->w_last_max = cwnd;
	c->epoch_start = 0;
	ss = cwnd * CUBIC_BETA;                       /* multiplicative decrease (4.6) */
	if (ss < 2)
		ss = 2;
	tcb->ssthresh = (uint32_t)(ss * smss);
}

static void cubic_on_loss(struct utcp_tcb *tcb, uint64_t now)
{
	(void)now;
	reduce(tcb);
	tcb->cwnd = tcb->ssthresh;
}

static void cubic_on_recovery_end(struct utcp_tcb *tcb)
{
	tcb->cwnd = tcb->ssthresh;
}

static void cubic_on_rto(struct utcp_tcb *tcb)
{
	reduce(tcb);                                  /* 4.8 */
	tcb->cwnd = tcp_smss(tcb);
	tcb->cwnd_acc = 0;
}

const struct utcp_cc_ops utcp_cc_cubic = {
	.name = "cubic",
	.init = cubic_init,
	.on_ack = cubic_on_ack,
	.on_loss = cubic_on_loss,
	.on_recovery_end = cubic_on_recovery_end,
	.on_rto = cubic_on_rto,
};
