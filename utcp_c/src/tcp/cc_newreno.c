/* cc_newreno.c — NewReno congestion control (RFC 5681, RFC 6582, RFC 6928 initial
 * window).  Fast-recovery bookkeeping (dupack counting, recover, partial ACKs) is in
 * tcp_in.c; this module owns the cwnd/ssthresh arithmetic. */
#include <string.h>

#include "stack.h"
#include "tcp/cc.h"
#include "tcp/tcb.h"

static void nr_init(struct utcp_tcb *tcb, uint32_t n)
{
	/* RFC 6928 / RFC 5681 3.1 generalised to the configured segment count:
	 * IW = min(N*SMSS, max(2*SMSS, N*1460)). */
	uint32_t smss = tcp_smss(tcb);
	uint32_t cap = 2 * smss > n * 1460u ? 2 * smss : n * 1460u;

	tcb->cwnd = n * smss < cap ? n * smss : cap;
	tcb->ssthresh = UINT32_MAX;             /* "arbitrarily high" */
	tcb->cwnd_acc = 0;
}

static void nr_on_ack(struct utcp_tcb *tcb, uint32_t acked, uint64_t now)
{
	(void)now;
	if (tcb->cwnd < tcb->ssthresh) {
		/* slow start, appropriate byte counting with L = 2*SMSS (RFC 3465) */
		uint32_t inc = acked < 2 * tcp_smss(tcb) ? acked : 2 * tcp_smss(tcb);

		tcb->cwnd += inc;
	} else {
		/* congestion avoidance by byte counting (RFC 5681 3.1, eqn. 3 alternative) */
		tcb->cwnd_acc += acked;
		if (tcb->cwnd_acc >= tcb->cwnd) {
			tcb->cwnd_acc -= tcb->cwnd;
			tcb->cwnd += tcp_smss(tcb);
		}
	}
}

static uint32_t half_flight(const struct utcp_tcb *tcb)
{
	uint32_t f = tcp_flight(tcb) / 2;

	return f > 2 * tcp_smss(tcb) ? f : 2 * tcp_smss(tcb);   /* RFC 5681 eqn. 4 */
}

static void nr_on_loss(struct utcp_tcb *tcb, uint64_t now)
{
	(void)now;
	tcb->ssthresh = half_flight(tcb);
	tcb->cwnd = tcb->ssthresh + 3 * tcp_smss(tcb);    /* RFC 6582 3.2 (2) */
	tcb->cwnd_acc = 0;
}

static void nr_on_recovery_end(struct utcp_tcb *tcb)
{
	/* RFC 6582 3.2 (3) full ACK, option (1): min(ssthresh, max(FlightSize, SMSS) + SMSS) */
	uint32_t f = tcp_flight(tcb), m = tcp_smss(tcb);
	uint32_t v = (f > m ? f : m) + m;

	tcb->cwnd = v < tcb->ssthresh ? v : tcb->ssthresh;
}

static void nr_on_rto(struct utcp_tcb *tcb)
{
	tcb->ssthresh = half_flight(tcb);
	tcb->cwnd = tcp_smss(tcb);                        /* loss window */
	tcb->cwnd_acc = 0;
}

const struct utcp_cc_ops utcp_cc_newreno = {
	.name = "newreno",
	.init = nr_init,
	.on_ack = nr_on_ack,
	.on_loss = nr_on_loss,
	.on_recovery_end = nr_on_recovery_end,
	.on_rto = nr_on_rto,
};

const struct utcp_cc_ops *utcp_cc_find(const char *name)
{
	static const struct utcp_cc_ops *const all[] = {&utcp_cc_newreno, &utcp_cc_cubic};
	size_t i;

	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(all[i]->name, name) == 0)
			return all[i];
	return NULL;
}
